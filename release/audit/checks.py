"""The audit of a release folder: a named pipeline of checks, each listing what it found wrong.

:func:`audit` reads only the folder and the owner's public key. The owner's
key verifies ``root.layout``; the layout names every other key (the release
key: the one it authorises for the ``sign`` step; the build key: the one it
authorises for ``build``, or for ``provenance`` when it has that step). Then:

``layout``      the layout is signed by the owner, unexpired, and has steps;
``in-toto``     the stock ``in-toto-verify`` passes (on a scratch copy);
``links``       every step has a link signed by a key the layout authorises
                for it (as many builders' links as its threshold, all agreeing
                on materials and products), that ran to return value 0, and
                every delivered file a link names is byte-for-byte what that
                step recorded;
``sandbox``     each build and packaging link records the sandbox it ran in
                (or shows it UNSANDBOXED, when the builder opted out);
``files``       nothing in the folder beyond the release's own files;
``checksums``   ``SHA256SUMS`` lists exactly the archives, SBOMs, gates report
                and their signatures, with their true hashes;
``signatures``  every archive, SBOM, the gates report and ``SHA256SUMS`` carry
                a valid minisign signature by the release key, for this version;
``formats``     every archive's OpenPGP signature and Sigstore bundle, and
                ``SHA256SUMS.asc`` and ``SHA256.sig`` (signify), verify with
                the release key, over the files as they are;
``gates``       the gates report is there and every gate passed;
``archives``    each archive is readable, with one top-level directory and
                binaries under ``bin/``, all of one version;
``sboms``       each archive's CycloneDX SBOM is schema-valid, describes the
                archive's SHA-256 and exactly the files inside it;
``provenance``  the SLSA provenance is signed by the build key, its subjects
                are exactly the archives' ``SHA256SUMS`` entries and its
                resolved dependencies what the links recorded.

The SBOMs, the gates report and the provenance are required: a missing one is
a failure. The verdict is "verified" only when every check passed.

Speed: ``in-toto-verify`` runs in a subprocess while the checks run; every
file is hashed once (SHA-256 and BLAKE2b-512 in one streamed pass, on one
thread per core, started as the audit starts) and the checks share those
digests; the OpenPGP signatures and the archives are checked one file per
thread. :func:`prepare` starts the fixed-cost work early (the CycloneDX
validator); a process that will audit calls it while it waits on something
else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from release import attest, inspection, minisign, openpgp, provenance, sbom, signify, sigstore_bundle
from release.archive import ArtifactDigest, workers
from release.audit.evidence import (
    MAX_ENTRIES,
    MAX_SIGNATURE_BYTES,
    MAX_SUMS_BYTES,
    ArchiveContents,
    Folder,
    LayoutStep,
    LayoutView,
    archive_format,
    archive_stem,
    check_depth,
    declared_contents,
    is_layout,
    is_link,
    layout_view,
    load_metablock,
    parse_json,
    read_archive,
    signature_ok,
    version_of,
)
from release.audit.intoto import run_in_toto_verify
from release.audit.model import (
    ArchiveInfo,
    AuditReport,
    BinarySources,
    Check,
    CrateInfo,
    Finding,
    GateInfo,
    InTotoResult,
    KeyInfo,
    ProvenanceInfo,
    SbomInfo,
    StepInfo,
)
from release.checksums import SUMS_NAME, parse
from release.errors import BadInputError, ReleaseError, ToolchainError, VerificationError
from release.keys import load_public_key
from release.signing import minisign_public, verify_digest

SIG = minisign.SUFFIX
BINARY_INPUTS = "binary-inputs"
GATES_REPORT = attest.GATES_REPORT
GATES_SCHEMA = "ransomeye.gates/v1"
PACKAGE_PREFIX = "package-"
ALLOWED_EXTRAS = frozenset({".gitkeep"})
MAX_LISTED = 8
MAX_HASHED_BYTES = inspection.MAX_ARCHIVE_BYTES  # files hashed before a check asks: in-toto-verify hashes them all too

TITLES = {
    "layout": "Root layout signed by the owner",
    "in-toto": "Stock in-toto-verify",
    "links": "A signed link per step (per builder where the layout wants several), matching the delivered files",
    "sandbox": "Build and packaging steps sandboxed",
    "files": "Nothing but the release in the folder",
    "checksums": "SHA256SUMS",
    "signatures": "minisign signatures by the release key",
    "formats": "OpenPGP, signify and Sigstore signatures by the release key",
    "gates": "Release gates",
    "archives": "Archive contents",
    "sboms": "CycloneDX SBOM per archive",
    "sources": "Each binary's sources, from the compiler",
    "provenance": "SLSA provenance signed by the build key",
}


class _Findings:
    """The findings of one check, in the order found."""

    def __init__(self, check: str) -> None:
        self.check = check
        self.items: list[Finding] = []

    def add(self, subject: str, message: str) -> None:
        self.items.append(Finding(self.check, subject, message))

    def done(self, summary_ok: str, summary_failed: str | None = None) -> Check:
        n = len(self.items)
        summary = summary_ok if not n else (summary_failed or f"{n} failure{'s' if n != 1 else ''}")
        return Check(self.check, TITLES[self.check], summary, tuple(self.items))


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


@dataclass
class _Link:
    file: str
    keyid: str
    signature_ok: bool
    signed: dict[str, Any]


@dataclass
class _Audit:
    """The state of one audit while its checks run (internal; the result is the frozen report)."""

    folder: Folder
    owner: Ed25519PublicKey
    owner_keyid: str
    layout: LayoutView | None = None
    layout_trusted: bool = False
    links: dict[str, _Link] = field(default_factory=dict)
    step_links: dict[str, list[_Link]] = field(default_factory=dict)  # every readable link of each step
    archives: dict[str, str] = field(default_factory=dict)  # archive name -> packaging step
    version: str | None = None
    sums: dict[str, str] | None = None
    signature_status: dict[str, bool] = field(default_factory=dict)
    contents: dict[str, ArchiveContents] = field(default_factory=dict)
    sbom_infos: dict[str, SbomInfo] = field(default_factory=dict)
    sbom_views: dict[str, sbom.SbomView] = field(default_factory=dict)
    sources: list[BinarySources] = field(default_factory=list)
    provenance_file: str | None = None
    provenance_info: ProvenanceInfo | None = None
    gates: list[GateInfo] = field(default_factory=list)
    steps: list[StepInfo] = field(default_factory=list)
    # The stock in-toto-verify's verdict on this folder (waits for it), when it runs alongside the checks.
    in_toto: Callable[[], InTotoResult] | None = None

    # --- names of the release's files ---

    def sbom_name(self, archive: str) -> str:
        return archive_stem(archive) + sbom.SUFFIX

    def signed_files(self) -> list[str]:
        """Every file that must carry a release-key signature (when it is present at all)."""
        names = [*self.archives, *(self.sbom_name(a) for a in self.archives), GATES_REPORT, SUMS_NAME]
        return sorted(names)

    def covered_files(self) -> set[str]:
        """What ``SHA256SUMS`` must list: archives, SBOMs, the gates report and their signatures (every format)."""
        base = [*self.archives, *(self.sbom_name(a) for a in self.archives), GATES_REPORT]
        more = [a + suffix for a in self.archives for suffix in attest.ARCHIVE_SIGNATURE_SUFFIXES]
        return {*base, *(n + SIG for n in base), *more}

    def role_of(self, keyid: str | None) -> str:
        """The role the layout gives ``keyid``; a key of another builder than the first says which (``build@2``)."""
        if keyid is None or self.layout is None:
            return "unknown"
        roles = []
        for role, steps in _role_steps(self.layout):
            for s in steps:
                if keyid in s.pubkeys:
                    n = s.pubkeys.index(keyid)
                    roles.append(role if n == 0 else f"{role}@{n + 1}")
                    break
        return "+".join(roles) if roles else "functionary"


# The role whose key the layout authorises for a step (packaging: every package-* step).
_ROLE_STEPS = ((attest.GATES_ROLE, attest.STEP_GATES), (attest.BUILD_ROLE, attest.STEP_BUILD),
               (attest.RELEASE_ROLE, attest.STEP_SIGN))  # fmt: skip


def _role_steps(layout: LayoutView) -> list[tuple[str, list[LayoutStep]]]:
    """Each role and the layout's steps that authorise its keys (a builder's n-th key is its n-th pubkey)."""
    out = [(role, [s]) for role, name in _ROLE_STEPS if (s := layout.step(name)) is not None]
    out.insert(2, (attest.PACKAGE_ROLE, [s for s in layout.steps if s.name.startswith(PACKAGE_PREFIX)]))
    return out


# --- the checks -------------------------------------------------------------------


def _trust(a: _Audit, summary: str) -> str:
    """``summary``, with a warning when the keys it relied on come from a layout the owner did not sign."""
    return summary if a.layout_trusted else f"{summary} (keys from a layout NOT signed by the owner)"


def check_layout(a: _Audit) -> Check:
    f = _Findings("layout")
    name = attest.LAYOUT_NAME
    if not a.folder.has(name):
        f.add(name, "missing: the release has no root layout")
        return f.done("")
    metablock, why = load_metablock(a.folder, name)
    if metablock is None or not is_layout(metablock):
        f.add(name, why or "holds a link, not a layout")
        return f.done("")
    a.layout = layout_view(metablock.signed)
    if signature_ok(metablock, attest.key_dict(a.owner)):
        a.layout_trusted = True
    else:
        signers = ", ".join(s.get("keyid", "?")[:8] for s in metablock.signatures) or "nobody"
        f.add(name, f"not signed by the owner key {a.owner_keyid[:8]} (signed by {signers})")
    try:
        expires = datetime.strptime(a.layout.expires, attest.EXPIRES_FORMAT).replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            f.add(name, f"expired on {a.layout.expires}")
    except ValueError:
        f.add(name, f"its expiry {a.layout.expires!r} is not a time")
    if not a.layout.steps:
        f.add(name, "defines no steps")
    for role, step in _ROLE_STEPS:
        if not a.layout.key_dicts(step):
            f.add(name, f"authorises no {role} key (no key for the {step} step)")
    return f.done(f"signed by the owner key {a.owner_keyid[:8]}, expires {a.layout.expires}")


def check_links(a: _Audit) -> Check:
    f = _Findings("links")
    layout = a.layout
    if layout is None:  # a declared need: the runner skips this check without a layout
        f.add(attest.LAYOUT_NAME, "no readable layout: the steps and their keys are unknown")
        return f.done("")
    for step in layout.steps:
        candidates = [(k, f"{step.name}.{k[:8]}.link") for k in step.pubkeys]
        present = [(k, n) for k, n in candidates if a.folder.has(n)]
        if not present:
            f.add(step.name, f"no link (expected {' or '.join(n for _, n in candidates) or 'a signed link'})")
            continue
        good = [link for k, n in present if (link := _read_link(a, f, step.name, k, n)) is not None]
        if not good:
            continue
        a.links[step.name] = good[0]
        a.step_links[step.name] = good
        valid = [link for link in good if link.signature_ok]
        if len(valid) < step.threshold:
            f.add(step.name, f"needs links from {step.threshold} builders (the layout's threshold), "
                             f"{len(valid)} verify")  # fmt: skip
        evidence = {_evidence(link) for link in good}
        if len(evidence) > 1:
            f.add(step.name, f"its {len(good)} links disagree on what the step read and wrote: "
                             "the builders did not produce the same bytes")  # fmt: skip
    for step_name, link in a.links.items():
        for name, digest in sorted((link.signed.get("products") or {}).items()):
            actual = a.folder.digest(name) if "/" not in name else None
            recorded = digest.get("sha256") if isinstance(digest, dict) else None
            if actual is not None and actual.sha256 != recorded:
                f.add(name, f"differs from what step {step_name} recorded (sha256 {actual.sha256[:12]}…, "
                            f"recorded {str(recorded)[:12]}…)")  # fmt: skip
    return f.done(_trust(a, f"{len(a.links)} links, each signed by its functionary, every step returned 0"))


def _read_link(a: _Audit, f: _Findings, step: str, keyid: str, file: str) -> _Link | None:
    """One link of ``step``, its signature checked with ``keyid``'s key; findings for what is wrong with it."""
    layout = a.layout
    if layout is None:
        return None
    metablock, why = load_metablock(a.folder, file)
    if metablock is None or not is_link(metablock):
        f.add(file, why or "holds a layout, not a link")
        return None
    key = layout.keys.get(keyid)
    ok = key is not None and signature_ok(metablock, {**key, "keyid": keyid})
    signed: dict[str, Any] = json.loads(metablock.signed.signable_bytes, strict=False)
    if not ok:
        f.add(file, f"its signature does not verify with the {a.role_of(keyid)} key {keyid[:8]}")
    if signed.get("name") != step:
        f.add(file, f"is the link of step {signed.get('name')!r}, not of {step!r}")
    rv = (signed.get("byproducts") or {}).get("return-value")
    if rv != 0:
        f.add(step, f"the step's command returned {rv!r}, not 0")
    env = signed.get("environment")
    for when in ("started", "finished"):
        moment = env.get(when) if isinstance(env, dict) else None
        if moment is not None and not _utc_time(moment):
            f.add(file, f"records a {when} time that is not an ISO time with its zone: {moment!r}")
    return _Link(file, keyid, ok, signed)


def _evidence(link: _Link) -> str:
    """What in-toto compares between the links of one step: their materials and products."""
    return json.dumps([link.signed.get("materials"), link.signed.get("products")], sort_keys=True, default=str)


def _utc_time(moment: object) -> bool:
    try:
        return isinstance(moment, str) and datetime.fromisoformat(moment).tzinfo is not None
    except ValueError:
        return False


def find_archives(a: _Audit) -> None:
    """The release's archives: each packaging step's archive product (or, with no link, its file in the folder)."""
    if a.layout is None:
        for name in a.folder.files:
            if archive_format(name):
                a.archives[name] = "?"
        return
    for step in a.layout.steps:
        if not step.name.startswith(PACKAGE_PREFIX):
            continue
        link = a.links.get(step.name)
        names = [n for n in (link.signed.get("products") or {}) if archive_format(n)] if link else []
        if not names:  # no readable link: the file the layout lets this step create, if there is exactly one
            found = [n for n in a.folder.files if archive_format(n) and any(fnmatchcase(n, p) for p in step.creates)]
            names = found if len(found) == 1 else []
        for n in names:
            a.archives[n] = step.name
    versions = sorted({v for n in a.archives if (v := version_of(archive_stem(n)))})
    a.version = versions[0] if len(versions) == 1 else None


def _provenance_file(a: _Audit) -> str | None:
    link = a.links.get(provenance.STEP_PROVENANCE)
    if link is not None:
        for name in link.signed.get("products") or {}:
            if name.endswith(provenance.SUFFIX):
                return str(name)
    if a.version is not None and a.folder.has(provenance.provenance_name(a.version)):
        return provenance.provenance_name(a.version)
    found = [n for n in a.folder.files if n.endswith(provenance.SUFFIX)]
    return found[0] if len(found) == 1 else None


def check_files(a: _Audit) -> Check:
    f = _Findings("files")
    expected = {attest.LAYOUT_NAME, *attest.SUMS_FILES, *a.covered_files()}
    if a.layout is not None:
        expected |= {f"{s.name}.{k[:8]}.link" for s in a.layout.steps for k in s.pubkeys}
        expected |= {f"{i}.link" for i in a.layout.inspections}  # left by a customer's in-toto-verify
    a.provenance_file = _provenance_file(a)
    if a.provenance_file is not None:
        expected.add(a.provenance_file)
    for name in a.folder.files:
        if name in ALLOWED_EXTRAS and a.folder.sizes[name] != 0:
            f.add(name, "must be empty")
        elif name not in expected and name not in ALLOWED_EXTRAS:
            f.add(name, "is not part of the release (no step produced it)")
    for name in a.folder.others:
        f.add(name, "is not a regular file; a release folder holds only files")
    if a.folder.overflow:
        f.add(".", f"holds more than {MAX_ENTRIES} entries; the rest were not read")
    return f.done(f"{len(a.folder.files)} files, all part of the release")


def check_checksums(a: _Audit) -> Check:
    f = _Findings("checksums")
    try:
        text = a.folder.text(SUMS_NAME, MAX_SUMS_BYTES)
        if text is None:
            f.add(SUMS_NAME, "missing")
            return f.done("")
        a.sums = parse(text, SUMS_NAME)
    except VerificationError as e:
        f.add(SUMS_NAME, e.message.removeprefix(f"{SUMS_NAME}: "))
        return f.done("")
    covered = a.covered_files()
    for name, listed in sorted(a.sums.items()):
        actual = a.folder.digest(name)
        if name not in covered:
            f.add(name, f"is listed in {SUMS_NAME} but is not an archive, SBOM, gates report or their signature")
        if actual is None:
            f.add(name, f"is listed in {SUMS_NAME} but is not in the folder")
        elif actual.sha256 != listed:
            f.add(name, f"its sha256 {actual.sha256[:12]}… is not the one {SUMS_NAME} lists ({listed[:12]}…)")
    for name in sorted(covered - a.sums.keys()):
        if a.folder.has(name):
            f.add(name, f"is not listed in {SUMS_NAME}")
    return f.done(f"{len(a.sums)} entries, every one matching its file")


def _release_key(a: _Audit) -> minisign.MinisignPublicKey | None:
    if a.layout is None:
        return None
    for key in a.layout.key_dicts(attest.STEP_SIGN):
        try:
            raw = bytes.fromhex(str(key["keyval"]["public"]))
            return minisign_public(Ed25519PublicKey.from_public_bytes(raw))
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _comment_field(comment: str, key: str) -> str | None:
    """A ``key:value`` field of a trusted comment (fields are tab-separated)."""
    for part in comment.split("\t"):
        k, sep, v = part.partition(":")
        if sep and k == key:
            return v
    return None


def check_signatures(a: _Audit) -> Check:
    f = _Findings("signatures")
    pub = _release_key(a)
    if pub is None:
        f.add(attest.LAYOUT_NAME, "names no usable release key (the key of the sign step)")
        return f.done("")
    checked = 0
    for name in a.signed_files():
        digest = a.folder.digest(name)
        if digest is None:
            continue  # a missing file is named by the check that needs it
        a.signature_status[name] = False
        try:
            verify_digest(pub, digest)
            sig = minisign.parse_signature(a.folder.text(name + SIG, MAX_SIGNATURE_BYTES) or "", name + SIG)
        except VerificationError as e:
            f.add(name + SIG, e.message.removeprefix(f"{name + SIG}: "))
            continue
        signed_version = _comment_field(sig.comment, "version")
        if a.version is not None and signed_version != a.version:
            f.add(name + SIG, f"was made for version {signed_version!r}, not {a.version}")
            continue
        a.signature_status[name] = True
        checked += 1
    for name in sorted(a.folder.files):
        if name.endswith(SIG) and not a.folder.has(name.removesuffix(SIG)):
            f.add(name, f"signs {name.removesuffix(SIG)}, which is not in the folder")
    return f.done(_trust(a, f"{checked} signatures by the release key {pub.key_id_hex}"))


def _release_public(a: _Audit) -> Ed25519PublicKey | None:
    pub = _release_key(a)
    return None if pub is None else pub.key


def check_formats(a: _Audit) -> Check:
    """The release key's signatures in the formats customers' stock tools check, verified here the same way."""
    f = _Findings("formats")
    public = _release_public(a)
    if public is None:
        f.add(attest.LAYOUT_NAME, "names no usable release key (the key of the sign step)")
        return f.done("")
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    checked = 0
    issuers: dict[bytes, str] = {}  # gpgv finds a signature's key by the fingerprint it names: one key, one name

    def verify(name: str) -> tuple[bytes | None, int, VerificationError | None]:
        """The OpenPGP issuer, how many signatures verified, the failure: of ``name``'s signatures."""
        digest = a.folder.digest(name)
        if digest is None:
            return None, 0, None  # a missing file is named by the check that needs it
        issuer, done = None, 0
        try:
            asc = name + openpgp.SUFFIX
            _, issuer = openpgp.verify_detached_by(  # over SHA-256: from the folder's one pass over the file
                raw, a.folder.text(asc, MAX_SIGNATURE_BYTES) or "", a.folder.files[name], asc, digest, as_read=True
            )  # the digest every check of this audit uses, even once in-toto-verify's scratch copy linked the file
            done += 1
            if name != SUMS_NAME:
                bundle = name + sigstore_bundle.SUFFIX
                data = a.folder.read(bundle, sigstore_bundle.MAX_BUNDLE_BYTES) or b""
                sigstore_bundle.verify_bundle(public, data, name, digest.sha256)
                done += 1
        except VerificationError as e:
            return issuer, done, e
        return issuer, done, None

    # In threads (a signature over SHA-512, as releases before made, hashes its file again), in the files' order.
    names = [*sorted(a.archives), SUMS_NAME]
    with ThreadPoolExecutor(max_workers=workers(len(names))) as pool:
        for name, (issuer, done, error) in zip(names, pool.map(verify, names), strict=True):
            if issuer is not None:
                issuers.setdefault(issuer, name + openpgp.SUFFIX)
            checked += done
            if error is not None:
                f.add(name, error.message)
    if len(issuers) > 1:
        f.add(", ".join(sorted(issuers.values())), "name different OpenPGP keys: one keyring verifies one only")
    try:
        text = a.folder.text(signify.SUMS_NAME, signify.MAX_SIGNED_CHARS) or ""
        listed = dict(signify.verify_signed_checksums(signify.public_key_text(public), text))
        checked += 1
        if set(listed) != set(a.archives):
            f.add(signify.SUMS_NAME, f"lists {_names(sorted(listed))}, not the archives {_names(sorted(a.archives))}")
        for name, sha in sorted(listed.items()):
            digest = a.folder.digest(name)
            if digest is not None and digest.sha256 != sha:
                f.add(signify.SUMS_NAME, f"lists {name} with another SHA-256 than the file's")
    except VerificationError as e:
        f.add(signify.SUMS_NAME, e.message)
    return f.done(_trust(a, f"{checked} signatures and signed lists by the release key"))


def _gates_from_link(a: _Audit) -> list[GateInfo]:
    link = a.links.get(attest.STEP_GATES)
    stdout = str((link.signed.get("byproducts") or {}).get("stdout", "")) if link else ""
    out = []
    for line in stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        name, _, reason = rest.partition(": ")
        if verdict in ("PASS", "FAIL") and name:
            out.append(GateInfo(name, verdict == "PASS", reason, "gates link (output)"))
    return out


def check_gates(a: _Audit) -> Check:
    f = _Findings("gates")
    if not a.folder.has(GATES_REPORT):
        f.add(GATES_REPORT, "missing: the gates report is part of every release")
        a.gates = _gates_from_link(a)
        return f.done("")
    try:
        data = a.folder.json(GATES_REPORT)
        if not isinstance(data, dict) or data.get("schema") != GATES_SCHEMA:
            raise ValueError(f"not a {GATES_SCHEMA} report")
        gates = data["gates"]
        a.gates = [GateInfo(str(g["name"]), g["passed"] is True, str(g["reason"]), GATES_REPORT) for g in gates]
    except VerificationError as e:
        f.add(GATES_REPORT, e.message.removeprefix(f"{GATES_REPORT}: "))
        a.gates = _gates_from_link(a)
        return f.done("")
    except (ValueError, KeyError, TypeError) as e:
        f.add(GATES_REPORT, f"not a readable gates report ({e})")
        a.gates = _gates_from_link(a)
        return f.done("")
    if not a.gates:
        f.add(GATES_REPORT, "lists no gates")
    for g in a.gates:
        if not g.passed:
            f.add(f"gate {g.name}", f"failed: {g.reason}")
    if data.get("passed") is not True:
        f.add(GATES_REPORT, "does not say the gates passed")
    if a.version is not None and data.get("workspace_version") != a.version:
        f.add(GATES_REPORT, f"was made for version {data.get('workspace_version')!r}, not {a.version}")
    return f.done(f"{len(a.gates)} gates passed")


def check_archives(a: _Audit) -> Check:
    f = _Findings("archives")
    if not a.archives:
        f.add("archives", "the release holds no archive (no packaging step produced one)")
    versions = sorted({version_of(archive_stem(n)) or "?" for n in a.archives})
    if len(versions) > 1:
        f.add("archives", f"are of different versions: {', '.join(versions)}")
    config = a.layout.config if a.layout is not None and a.layout_trusted else None
    if config is None:
        f.add(attest.LAYOUT_NAME, "the owner's layout holds no inspection of this project's: no archive is read")
        return f.done("")
    links = {step: _inspection_link(link) for step, link in a.links.items() if link.signature_ok}
    banned = inspection.forbidden_content(
        config.bundles, links.get(config.gates_step), [links.get(s) for s in config.binary_steps]
    )
    bundles = {b.step: b for b in config.bundles}
    jobs = []
    for name in sorted(a.archives):
        step = a.archives[name]
        if not a.folder.has(name):
            f.add(name, f"missing (the product of {step})")
        elif step not in bundles or step not in links:
            f.add(name, f"not read: no packaging link of {step} verified by the layout's keys to check it against")
        else:
            jobs.append((name, bundles[step], links[step]))

    inspected = _inspected(a)
    read_here = 0

    def read(job: tuple[str, inspection.Bundle, inspection.Link]) -> tuple[str, ArchiveContents]:
        nonlocal read_here
        name, bundle, link = job
        here = a.folder.digest(name) if inspected else None
        if here is not None and here.sha256 == link.products.get(name):
            contents = declared_contents(name, bundle, [_inspection_link(x) for x in a.step_links[bundle.step]])
            if contents is not None:
                return name, contents
        read_here += 1
        return name, read_archive(a.folder.files[name], name, bundle, link, banned[bundle.id])

    with ThreadPoolExecutor(max_workers=workers(len(jobs))) as pool:
        for name, contents in pool.map(read, jobs):
            a.contents[name] = contents
            for problem in contents.problems:
                f.add(name, problem)
    files = sum(len(c.members) for c in a.contents.values())
    how = "each checked against its packaging link"
    if read_here < len(jobs):
        how += f" ({len(jobs) - read_here} by the layout's inspection in in-toto-verify, read once)"
    return f.done(f"{len(a.contents)} archives, {files} files inside, {how}")


def _inspected(a: _Audit) -> bool:
    """Whether the stock ``in-toto-verify`` passed on this folder running this project's own inspection program.

    That program reads every archive exactly as :func:`read_archive` would
    (against its packaging link, before and after in-toto's rules tie the
    archive's bytes to that link): an archive whose bytes here are the ones
    the link recorded need not be unpacked a second time. A failed or
    missing verification, another program, or links of one step that
    declare different members leave every archive read here.
    """
    if a.in_toto is None or a.layout is None or not a.layout.ours:
        return False
    try:
        return a.in_toto().ok
    except ReleaseError:
        return False


def _inspection_link(link: _Link) -> inspection.Link:
    return inspection.Link(link.file, link.signed)


def _compare_files(f: _Findings, where: str, described: Mapping[str, str], actual: Mapping[str, str]) -> None:
    missing = sorted(actual.keys() - described.keys())
    extra = sorted(described.keys() - actual.keys())
    wrong = sorted(p for p in actual.keys() & described.keys() if actual[p] != described[p])
    if missing:
        f.add(where, f"does not describe {len(missing)} file(s) in the archive: {_names(missing)}")
    if extra:
        f.add(where, f"describes {len(extra)} file(s) the archive does not hold: {_names(extra)}")
    if wrong:
        f.add(where, f"gives the wrong sha256 for {len(wrong)} file(s): {_names(wrong)}")


def check_sboms(a: _Audit) -> Check:
    f = _Findings("sboms")
    for archive in sorted(a.archives):
        name = a.sbom_name(archive)
        if not a.folder.has(name):
            f.add(name, f"missing: every archive ships with its SBOM ({archive})")
            continue
        # Check before touch: a document is parsed and validated only once it is what its step recorded.
        link = a.links.get(a.archives[archive])
        recorded = (link.signed.get("products") or {}).get(name) if link and link.signature_ok else None
        digest = a.folder.digest(name)
        if (
            not a.layout_trusted
            or not isinstance(recorded, dict)
            or digest is None
            or digest.sha256 != recorded.get("sha256")
        ):
            f.add(name, f"not read: it is not the SBOM a verified link of {a.archives[archive]} recorded")
            continue
        try:
            text = a.folder.text(name)
            if text is None:
                raise VerificationError(f"{name}: missing")
            data = parse_json(text, name)
            if not isinstance(data, dict):
                raise VerificationError(f"{name}: not a JSON object")
        except VerificationError as e:
            f.add(name, e.message.removeprefix(f"{name}: "))
            continue
        errors = sbom.validate_sbom(text, str(data.get("specVersion")))
        if errors:
            f.add(name, f"not valid CycloneDX {data.get('specVersion')}: {errors[0]}")
        try:
            view = sbom.read_sbom(data, name)
        except VerificationError as e:
            f.add(name, e.message.removeprefix(f"{name}: "))
            continue
        a.sbom_views[archive] = view
        a.sbom_infos[archive] = SbomInfo(
            file=name,
            spec_version=view.spec_version,
            serial_number=view.serial_number,
            timestamp=view.timestamp,
            components=view.components,
            files=len(view.files),
            crates=tuple(CrateInfo(c.name, c.version, c.licenses) for c in view.crates),
            toolchain=view.toolchain,
        )
        digest = a.folder.digest(archive)
        if digest is not None and view.subject_sha256 != digest.sha256:
            f.add(name, f"describes an archive with sha256 {str(view.subject_sha256)[:12]}…, "
                        f"not {archive} ({digest.sha256[:12]}…)")  # fmt: skip
        if view.subject_archive is not None and view.subject_archive != archive:
            f.add(name, f"names the archive {view.subject_archive}, not {archive}")
        if a.version is not None and view.subject_version != a.version:
            f.add(name, f"describes version {view.subject_version}, not {a.version}")
        if archive in a.contents and a.contents[archive].readable:  # an unreadable archive is named by "archives"
            _compare_files(f, name, view.files, a.contents[archive].hashes)
    return f.done(f"{len(a.sbom_infos)} SBOMs, each describing its archive exactly")


def check_sources(a: _Audit) -> Check:
    """Each binary's sources (the compiler's dep-info, in the build link): recorded, gated, allowed, in its SBOM.

    Every product of the build step must list its inputs; each input must be
    a material of the build link (a gated source file, with that hash); no
    input of a binary of a bundle may lie under the bundle's forbidden paths
    (the core's binaries compiled from nothing under ``edge/``); and each
    archive's SBOM must list, for each of its binaries, exactly those inputs
    with those hashes.
    """
    f = _Findings("sources")
    link = a.links.get(attest.STEP_BUILD)
    if link is None or not link.signature_ok:
        f.add(attest.STEP_BUILD, "no verified build link: the binaries' sources are unknown")
        return f.done("")
    signed = link.signed
    env: dict[str, Any] = signed["environment"] if isinstance(signed.get("environment"), dict) else {}
    config = a.layout.config if a.layout is not None and a.layout_trusted else None
    if env.get("unsafe-prebuilt-binaries"):
        if config is not None and config.allow_prebuilt:  # a benchmark's layout, which says so in its readme
            return f.done("UNSAFE: prebuilt binaries, no source provenance (the layout accepts them)")
        f.add(link.file, "the binaries were not built from the source (unsafe prebuilt binaries)")
        return f.done("")
    inputs = env.get(BINARY_INPUTS)
    materials = {n: d.get("sha256") for n, d in (signed.get("materials") or {}).items() if isinstance(d, dict)}
    if not isinstance(inputs, dict):
        f.add(link.file, f"records no {BINARY_INPUTS} (each binary's sources from the compiler)")
        return f.done("")
    for binary in sorted(n for n in signed.get("products") or {} if n.startswith("bin/")):
        paths = inputs.get(binary)
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            f.add(binary, "the build link lists no source file for it")
            continue
        for path in (p for p in paths if p not in materials):
            f.add(binary, f"was compiled from {path}, which is not gated source (not a material of the build)")
        for bundle in config.bundles if config is not None else []:
            if binary.removeprefix(f"bin/{bundle.target}/") in bundle.binary_files:
                for path in paths:
                    if (hit := bundle.forbidden_path(path)) is not None:
                        f.add(binary, f"a {bundle.id} binary compiled from {path}, {hit}/ material")
        a.sources.append(BinarySources(binary, tuple((p, str(materials.get(p))) for p in sorted(paths))))
    recorded = {b.binary: b.sources for b in a.sources}
    for archive, view in sorted(a.sbom_views.items()):
        owner = next((b for b in config.bundles if b.step == a.archives.get(archive)), None) if config else None
        if owner is None:
            continue
        stem = archive_stem(archive)
        for file in owner.binary_files:
            listed = tuple(sorted(view.binary_inputs.get(f"{stem}/bin/{file}", ())))
            if listed != recorded.get(f"bin/{owner.target}/{file}"):
                f.add(a.sbom_name(archive), f"lists other sources for bin/{file} than the build link records")
    files = len({p for b in a.sources for p, _ in b.sources})
    return f.done(_trust(a, f"{len(a.sources)} binaries from {files} gated source files, none from a forbidden path"))


def _build_keys(a: _Audit) -> list[dict[str, Any]]:
    if a.layout is None:
        return []
    return a.layout.key_dicts(provenance.STEP_PROVENANCE) or a.layout.key_dicts(attest.STEP_BUILD)


def _get(data: Any, *path: str) -> Any:
    for p in path:
        data = data.get(p) if isinstance(data, dict) else None
    return data


def check_provenance(a: _Audit) -> Check:
    f = _Findings("provenance")
    name = a.provenance_file
    if name is None:
        expected = provenance.provenance_name(a.version) if a.version else f"ransomeye-<version>{provenance.SUFFIX}"
        f.add(expected, "missing: the release ships its SLSA provenance")
        return f.done("")
    envelope = _read_envelope(a, f, name)
    if envelope is None:
        return f.done("")
    keys = _build_keys(a)
    statement: dict[str, Any] | None = None
    reasons = []
    for key in keys:
        try:
            statement = provenance.verify_envelope(envelope, key)
            break
        except ReleaseError as e:
            reasons.append(e.message)
    verified = statement is not None
    if not keys:
        f.add(name, "the layout names no build key to verify it with")
    elif statement is None:
        f.add(name, f"not verified with the build key: {reasons[0]}")
    shown = statement if statement is not None else provenance.unverified_statement(envelope)
    try:
        check_depth(shown, name)  # a build-key holder's payload is walked below: bounded first
    except VerificationError as e:
        f.add(name, e.message.removeprefix(f"{name}: "))
        shown = statement = None
    subjects: dict[str, str] = {}
    if shown is not None:
        try:
            subjects = provenance.statement_subjects(shown)
        except VerificationError as e:
            f.add(name, e.message)
    a.provenance_info = _provenance_info(name, envelope, shown, verified, subjects)
    if statement is None:
        return f.done("")
    _check_subjects(a, f, name, subjects)
    if not _get(statement, "predicate", "runDetails", "builder", "id"):
        f.add(name, "names no builder (runDetails.builder.id)")
    if not _get(statement, "predicate", "buildDefinition", "buildType"):
        f.add(name, "has no build type (buildDefinition.buildType)")
    _check_resolved(a, f, name, statement)
    return f.done(_trust(a, f"signed by the build key, {len(subjects)} subjects equal to their {SUMS_NAME} entries"))


def _read_envelope(a: _Audit, f: _Findings, name: str) -> dict[str, Any] | None:
    """The provenance file's one DSSE envelope, parsed (not verified); None, with the finding, if it is not one."""
    try:
        lines = [line for line in (a.folder.text(name) or "").split("\n") if line.strip()]
        if len(lines) != 1:  # read_envelope names the problem without parsing anything
            provenance.read_envelope("\n".join(lines), name)
        envelope = parse_json(lines[0], name)
        if not isinstance(envelope, dict):
            raise VerificationError(f"{name}: not a DSSE envelope")
    except VerificationError as e:
        f.add(name, e.message.removeprefix(f"{name}: "))
        return None
    return envelope


def _provenance_info(
    name: str, envelope: dict[str, Any], shown: Any, verified: bool, subjects: dict[str, str]
) -> ProvenanceInfo:
    """What the report shows of the provenance (of an unverified one too, marked so)."""
    signatures = envelope.get("signatures")
    signers = tuple(
        str(s.get("keyid", "?")) for s in (signatures if isinstance(signatures, list) else []) if isinstance(s, dict)
    )
    tool = _get(shown, "predicate", "buildDefinition", "internalParameters", "toolchains")
    toolchains: dict[Any, Any] = tool if isinstance(tool, dict) else {}
    return ProvenanceInfo(
        file=name,
        verified=verified,
        signed_by=signers,
        build_type=_text(shown, "predicate", "buildDefinition", "buildType"),
        builder_id=_text(shown, "predicate", "runDetails", "builder", "id"),
        invocation_id=_text(shown, "predicate", "runDetails", "metadata", "invocationId"),
        started=_text(shown, "predicate", "runDetails", "metadata", "startedOn"),
        finished=_text(shown, "predicate", "runDetails", "metadata", "finishedOn"),
        source_commit=_text(shown, "predicate", "buildDefinition", "externalParameters", "sourceCommit"),
        subjects=tuple(sorted(subjects.items())),
        toolchains=tuple(sorted((str(k), str(v)) for k, v in toolchains.items())),
    )


def _check_subjects(a: _Audit, f: _Findings, name: str, subjects: dict[str, str]) -> None:
    """The provenance's subjects are exactly the release's archives, with their SHA256SUMS hashes."""
    expected_subjects = {n: _listed_sha256(a, n) for n in a.archives}
    for n in sorted(expected_subjects.keys() - subjects.keys()):
        f.add(name, f"does not list the archive {n} as a subject")
    for n in sorted(subjects.keys() - expected_subjects.keys()):
        f.add(name, f"lists {n} as a subject, which is not an archive of the release")
    for n in sorted(subjects.keys() & expected_subjects.keys()):
        if subjects[n] != expected_subjects[n]:
            listed = expected_subjects[n][:12]
            f.add(name, f"gives {n} the sha256 {subjects[n][:12]}…, not its {SUMS_NAME} entry {listed}…")


def _text(data: Any, *path: str) -> str | None:
    """The string at ``path`` in a document the folder supplied, or None when it is anything else."""
    value = _get(data, *path)
    return value if isinstance(value, str) else None


def _listed_sha256(a: _Audit, name: str) -> str:
    """The SHA-256 ``SHA256SUMS`` lists for ``name`` (the file's own when it is unlisted or unreadable)."""
    listed = (a.sums or {}).get(name)
    if listed is not None:
        return listed
    digest = a.folder.digest(name)
    return digest.sha256 if digest else ""


def _check_resolved(a: _Audit, f: _Findings, name: str, statement: Mapping[str, Any]) -> None:
    """The statement's file dependencies must be what the links recorded as read and not produced."""
    # The provenance's own link too: the sign step reads the provenance file, which that step produced.
    links = {s: link.signed for s, link in a.links.items()}
    if a.layout is None or len(links) != len(a.layout.steps):
        return  # a missing link is named by the links check; the comparison needs them all
    try:
        recorded = provenance.external_materials(links)
    except BadInputError:
        return
    deps = _get(statement, "predicate", "buildDefinition", "resolvedDependencies") or []
    listed = {str(d.get("name")): str(_get(d, "digest", "sha256")) for d in deps if _get(d, "digest", "sha256")}
    differ = sorted(set(listed.items()) ^ set(recorded.items()))
    if differ:
        f.add(name, f"its resolved dependencies disagree with the links on {_names(sorted({n for n, _ in differ}))}")


def _steps(a: _Audit) -> list[StepInfo]:
    if a.layout is None:
        return []
    out = []
    for step in a.layout.steps:
        link = a.links.get(step.name)
        signed = link.signed if link else {}
        env = signed.get("environment") or {}
        rv = (signed.get("byproducts") or {}).get("return-value")
        out.append(
            StepInfo(
                name=step.name,
                role=a.role_of(link.keyid if link else (step.pubkeys[0] if step.pubkeys else None)),
                keyid=link.keyid if link else None,
                link=link.file if link else None,
                signature_ok=bool(link and link.signature_ok),
                command=tuple(str(c) for c in signed.get("command") or []),
                expected_command=step.expected_command,
                started=str(env["started"]) if isinstance(env, dict) and "started" in env else None,
                finished=str(env["finished"]) if isinstance(env, dict) and "finished" in env else None,
                return_value=rv if isinstance(rv, int) else None,
                materials=len(signed.get("materials") or {}),
                products=len(signed.get("products") or {}),
                depends_on=step.depends_on,
            )
        )
    return out


def _keys(a: _Audit) -> list[KeyInfo]:
    out = [KeyInfo(a.owner_keyid, "owner", ("root.layout",))]
    if a.layout is not None:
        by_key = {k: tuple(s.name for s in a.layout.steps if k in s.pubkeys) for k in a.layout.keys}
        first = {s.name: i for i, s in enumerate(a.layout.steps)}
        # In the order of the layout's steps (the first each key may sign), not of the random key ids.
        for keyid in sorted(by_key, key=lambda k: (first[by_key[k][0]] if by_key[k] else len(first), k)):
            out.append(KeyInfo(keyid, a.role_of(keyid), by_key[keyid]))
    return out


def _archive_infos(a: _Audit) -> list[ArchiveInfo]:
    out = []
    for name in sorted(a.archives):
        digest = a.folder.digest(name)
        contents = a.contents.get(name)
        out.append(
            ArchiveInfo(
                name=name,
                step=a.archives[name],
                size=digest.size if digest else None,
                sha256=digest.sha256 if digest else None,
                members=contents.members if contents else (),
                signature_ok=a.signature_status.get(name, False),
                sbom=a.sbom_infos.get(name),
            )
        )
    return out


# --- what each check needs, and the order derived from it ---------------------------

# Evidence a check can need, and whether this audit has it. Each is recorded by
# exactly one entry of CHECKS (its ``gives``).
EVIDENCE: Mapping[str, Callable[[_Audit], bool]] = {
    "layout": lambda a: a.layout is not None,
    "trusted-layout": lambda a: a.layout is not None and a.layout_trusted,
    "links": lambda a: bool(a.links),
    "archives": lambda a: bool(a.archives),
    "version": lambda a: a.version is not None,
    "provenance-file": lambda a: a.provenance_file is not None,
    "sums": lambda a: a.sums is not None,
    "signature-status": lambda a: bool(a.signature_status),
    "gates": lambda a: bool(a.gates),
    "contents": lambda a: bool(a.contents),
    "sboms": lambda a: bool(a.sbom_views),
    "sources": lambda a: bool(a.sources),
    "provenance": lambda a: a.provenance_info is not None,
}
# Why a piece of evidence is missing, said in a skipped check's reason.
MISSING = {
    "layout": "it needs the root layout, which could not be read (see the layout check)",
    "trusted-layout": "it needs a layout signed by the owner key, and there is none (see the layout check)",
}


@dataclass(frozen=True)
class CheckSpec:
    """A check and the evidence it works on.

    ``needs``: without it the check cannot run and is reported skipped, with
    the reason; ``uses``: read when present; ``gives``: what it records for
    the checks that need or use it. A spec that gives evidence but is no check
    of its own (``run`` returns None) only collects it.
    """

    name: str
    run: Callable[[_Audit], Check | None]
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    gives: tuple[str, ...] = ()


def check_sandbox(a: _Audit) -> Check:
    """Where the builders' steps ran: each build and packaging link records its sandbox, or that it had none.

    A step run with ``--no-sandbox`` is shown as UNSANDBOXED (the builder
    opted out; the provenance says so too); a link that records neither is
    a finding, since nothing says where it ran.
    """
    f = _Findings("sandbox")
    builder_steps = [s for s in a.links if s == attest.STEP_BUILD or s.startswith(PACKAGE_PREFIX)]
    if not builder_steps:
        f.add(attest.STEP_BUILD, "no readable build or packaging link: nothing says where they ran")
        return f.done("")
    tools: set[str] = set()
    unsandboxed: list[str] = []
    for step in builder_steps:
        link = a.links[step]
        env = link.signed.get("environment")
        box = env.get(provenance.SANDBOX) if isinstance(env, dict) else None
        if isinstance(box, dict) and box.get("unsandboxed") is True:
            unsandboxed.append(step)
        elif isinstance(box, dict) and isinstance(box.get("tool"), str):
            tools.add(box["tool"])
        else:
            f.add(link.file, "records no sandbox: nothing says where the step ran")
    if unsandboxed:
        return f.done(f"UNSANDBOXED: {', '.join(unsandboxed)} ran without a sandbox (the builder opted out)")
    return f.done(f"{len(builder_steps)} build and packaging steps ran sandboxed ({', '.join(sorted(tools))})")


def _collect_archives(a: _Audit) -> None:
    find_archives(a)


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("layout", check_layout, gives=("layout", "trusted-layout")),
    CheckSpec("links", check_links, needs=("layout",), gives=("links",)),
    CheckSpec("sandbox", check_sandbox, needs=("layout",), uses=("links",)),
    CheckSpec("release-archives", _collect_archives, uses=("layout", "links"), gives=("archives", "version")),
    CheckSpec("files", check_files, uses=("layout", "links", "version"), gives=("provenance-file",)),
    CheckSpec("checksums", check_checksums, uses=("archives",), gives=("sums",)),
    CheckSpec(
        "signatures", check_signatures, needs=("layout",), uses=("archives", "version"), gives=("signature-status",)
    ),
    CheckSpec("formats", check_formats, needs=("layout",), uses=("archives",)),
    CheckSpec("gates", check_gates, uses=("links", "version"), gives=("gates",)),
    CheckSpec("archives", check_archives, needs=("trusted-layout",), uses=("archives", "links"), gives=("contents",)),
    CheckSpec(
        "sboms",
        check_sboms,
        needs=("trusted-layout",),
        uses=("archives", "contents", "links", "version"),
        gives=("sboms",),
    ),
    CheckSpec(
        "sources",
        check_sources,
        needs=("trusted-layout",),
        uses=("archives", "layout", "links", "sboms"),
        gives=("sources",),
    ),
    CheckSpec(
        "provenance",
        check_provenance,
        uses=("archives", "layout", "links", "provenance-file", "sums", "version"),
        gives=("provenance",),
    ),
)


def check_order(specs: Sequence[CheckSpec]) -> list[CheckSpec]:
    """The specs in an order where each comes after every spec giving what it needs or uses.

    Ties keep the declared order. Raises ValueError for evidence nobody gives,
    evidence given twice, or a cycle.
    """
    givers: dict[str, str] = {}
    for spec in specs:
        for evidence in spec.gives:
            if evidence in givers or evidence not in EVIDENCE:
                raise ValueError(f"check {spec.name}: evidence {evidence!r} is unknown or given twice")
            givers[evidence] = spec.name
    after = {s.name: {givers.get(e, "") for e in (*s.needs, *s.uses)} - {s.name} for s in specs}
    unknown = {e for s in specs for e in (*s.needs, *s.uses) if e not in givers}
    if unknown:
        raise ValueError(f"no check gives {sorted(unknown)}")
    done: list[CheckSpec] = []
    pending = list(specs)
    while pending:
        ready = next((s for s in pending if after[s.name] <= {d.name for d in done}), None)
        if ready is None:
            raise ValueError(f"the checks {[s.name for s in pending]} need each other")
        done.append(ready)
        pending.remove(ready)
    return done


def run_checks(a: _Audit, specs: Sequence[CheckSpec] = CHECKS) -> list[Check]:
    """Run every check in the derived order; one whose needed evidence is missing is skipped, with the reason."""
    results: list[Check] = []
    for spec in check_order(specs):
        missing = [e for e in spec.needs if not EVIDENCE[e](a)]
        if missing:
            reason = "; ".join(MISSING.get(e, f"it needs {e}, which no earlier check recorded") for e in missing)
            results.append(Check(spec.name, TITLES[spec.name], "", (), skipped=reason))
            continue
        result = spec.run(a)
        if result is not None:
            results.append(result)
    return results


def prepare() -> None:
    """Start, in the background, the audit's fixed-cost work that needs no release: for a process about to audit.

    Today that is compiling the CycloneDX schema validator the ``sboms``
    check uses (:func:`release.sbom.warm_validator`, a daemon thread; the
    most expensive fixed cost of an audit). Returns at once; idempotent and
    thread-safe, cheap to call again; :func:`audit` calls it first thing, so
    calling it earlier (while the process waits on subprocesses) only moves
    the work off the audit's wall time. Nothing is read or written.
    """
    sbom.warm_validator()


def _in_toto_check(result: InTotoResult) -> Check:
    f = _Findings("in-toto")
    if not result.ok:
        f.add("in-toto-verify", result.reason)
    return f.done("in-toto-verify passed with the owner key: layout, links, artifact rules and the inspection")


def audit(
    release_dir: Path,
    owner_pub: Path,
    *,
    scratch_parent: Path | None = None,
    known: Mapping[str, ArtifactDigest] | None = None,
) -> AuditReport:
    """Audit the release in ``release_dir`` with the owner's public key ``owner_pub``.

    Reads only the folder and the key, never writes to the folder (the stock
    ``in-toto-verify`` runs on a scratch copy in ``scratch_parent``, default
    the temporary directory: hard links when it is on the folder's file
    system, else copies), no network. Every failure becomes a named :class:`Finding` of the check that
    found it; the report is verified only when no check found anything.
    Raises :class:`BadInputError` ("could not run") when the folder cannot be
    listed, the key is not an Ed25519 PEM public key, or ``in-toto-verify`` is
    missing.

    ``known``: digests the calling process computed itself of files it put in
    the folder (the release pipeline's own, from the pass that checked each
    step's products), by name. A file that is still the file that pass read
    (:meth:`Folder.adopt`) is not read again by these checks; ``in-toto-verify``
    reads every file whatever is known.
    """
    if not release_dir.is_dir():
        raise BadInputError(f"{release_dir}: not a directory", hint="give the folder of a downloaded release")
    owner = load_public_key(owner_pub)
    try:
        folder = Folder.scan(release_dir)
    except OSError as e:
        raise BadInputError(f"{release_dir}: cannot list the release folder: {e.strerror or e}") from e
    if known:
        folder.adopt(known)  # before in-toto-verify's scratch copy links the files (a link changes their identity)
    prepare()
    a = _Audit(folder=folder, owner=owner, owner_keyid=attest.keyid_of(owner))
    # Every file the checks may hash (none larger than a release file), largest first, hashed while they start.
    wanted = sorted((n for n in folder.files if folder.sizes[n] <= MAX_HASHED_BYTES), key=lambda n: -folder.sizes[n])
    hashing = ThreadPoolExecutor(max_workers=workers(len(wanted)))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            verifying = pool.submit(run_in_toto_verify, release_dir, owner_pub, scratch_parent=scratch_parent)
            a.in_toto = verifying.result
            folder.prefetch(wanted, hashing)
            checks = run_checks(a)
            try:
                in_toto = verifying.result()
            except ToolchainError as e:
                raise BadInputError(e.message, hint=e.hint) from e
    finally:
        # The checks are done: a file no check asked for (a stray large one) is not hashed to the end for nothing.
        hashing.shutdown(wait=True, cancel_futures=True)
        folder.abandon_prefetch()
    checks.insert(1, _in_toto_check(in_toto))
    verified_provenance = a.provenance_info is not None and a.provenance_info.verified
    return AuditReport(
        release_dir=str(release_dir.resolve()),
        audited_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        version=a.version,
        source_commit=a.provenance_info.source_commit if verified_provenance and a.provenance_info else None,
        owner_keyid=a.owner_keyid,
        layout_expires=a.layout.expires if a.layout else None,
        layout_readme=a.layout.readme if a.layout else None,
        keys=tuple(_keys(a)),
        steps=tuple(_steps(a)),
        gates=tuple(a.gates),
        archives=tuple(_archive_infos(a)),
        provenance=a.provenance_info,
        in_toto=in_toto,
        checks=tuple(checks),
        files=tuple(sorted(folder.files)),
        sources=tuple(a.sources),
    )
