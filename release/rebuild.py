"""Rebuild and compare: a customer rebuilds a published release from its commit and compares it bit for bit.

:func:`rebuild_and_compare` runs the pipeline's own gates, build and
packaging steps (in the sandbox) on this checkout, which must be the
release's commit with nothing changed, signing their links with keys that
live in memory for the run (a customer holds no project key), and compares
every archive and SBOM the declaration names with the published one. It
writes one line per file to ``<report-dir>/rebuild-compare.txt`` (and
stdout); for a file that differs, ``diffoscope`` explains where, in
``<report-dir>/<file>.diffoscope.txt``. The release folder is only read:
each published file is opened without following a symlink, must be a
regular file under a size bound, and is hashed as a stream.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from release import attest, authenticode
from release.archive import sha256_file, write_bytes_atomic
from release.attest import StepRecord
from release.cargo import find_toolchain
from release.errors import BadInputError, ToolchainError, VerificationError
from release.pipeline import Codesigned, Context, Earlier, Outcome, StepSpec, check_committed, steps
from release.pipeline import run_steps as run_pipeline_steps
from release.products import Bundle, load_workspace
from release.provenance import provenance_name, read_envelope
from release.sandbox import Sandbox
from release.sbom import sbom_name
from release.signers import RoleKey
from release.source import source_commit, source_date_epoch

SUMMARY = "rebuild-compare.txt"
MAX_PUBLISHED = 4 << 30
MAX_PROVENANCE = 16 << 20
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Compared:
    """One file of the release: its verdict line, and whether it is identical."""

    name: str
    identical: bool
    line: str


def release_commit(release: Path, version: str) -> str:
    """The source commit the release's provenance names (read as hostile input: bounded, checked)."""
    path = release / provenance_name(version)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise BadInputError(f"{path}: cannot be read ({e.strerror}): the release names no source commit") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadInputError(f"{path}: not a regular file")
        raw = f.read(MAX_PROVENANCE + 1)
    if len(raw) > MAX_PROVENANCE:
        raise BadInputError(f"{path}: over {MAX_PROVENANCE} bytes, not a provenance file")
    try:
        envelope = read_envelope(raw.decode("utf-8"), path.name)
        statement = json.loads(base64.b64decode(str(envelope.get("payload")), validate=True))
        commit = statement["predicate"]["buildDefinition"]["externalParameters"]["sourceCommit"]
    except (VerificationError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{path}: not a provenance statement that names a source commit") from e
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise BadInputError(f"{path}: names no source commit (sourceCommit = {str(commit)[:60]!r})")
    return commit


def _published_sha256(path: Path) -> tuple[str | None, str]:
    """The SHA-256 of a published file, or None and why it is not comparable (never following a symlink)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None, "missing from the release"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file (a symlink, a folder or a device is never followed)"
    if st.st_size > MAX_PUBLISHED:
        return None, f"over {MAX_PUBLISHED} bytes"
    return sha256_file(path), ""


def compare(name: str, published: Path, rebuilt: Path, report_dir: Path) -> Compared:
    sha, why = _published_sha256(published)
    ours = sha256_file(rebuilt)
    if sha is None:
        return Compared(name, False, f"DIFFERENT {name}: {why}; rebuilt {ours}")
    if sha == ours:
        return Compared(name, True, f"IDENTICAL {name} {sha}")
    report = report_dir / f"{name}.diffoscope.txt"
    _diffoscope(published, rebuilt, report)
    return Compared(name, False, f"DIFFERENT {name}: published {sha} rebuilt {ours} (see {report.name})")


def _diffoscope(published: Path, rebuilt: Path, report: Path) -> None:
    tool = shutil.which("diffoscope")
    if tool is None:
        raise ToolchainError("diffoscope is not installed: it explains a difference", hint="run `make setup`")
    cmd = [tool, "--no-progress", "--text", str(report), str(published), str(rebuilt)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode not in (0, 1) or not report.is_file():
        raise ToolchainError(f"diffoscope failed (exit {proc.returncode})", hint=proc.stderr.strip()[-500:] or None)


def transplant_step(release: Path, spec: StepSpec, ca: Path) -> StepSpec:
    """The codesign step of a rebuilder, who holds no code-signing key: the published signatures, on its own binaries.

    Each published signature is taken from the signed binary in the published
    Windows archive and attached to the binary this rebuild built. The result
    is the published signed binary byte for byte only if the rebuilt binary
    is the one that was signed (osslsigncode checks it against the
    code-signing CA ``ca`` as it attaches); the archives compared afterwards
    say so.
    """

    def step(r: Context, earlier: Earlier) -> Outcome[Codesigned]:
        built = earlier[attest.STEP_BUILD].link.signed["products"]
        materials: dict[str, str] = {}
        products: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="transplant-") as tmp:
            for name in attest.codesigned_binaries(r.ws):
                bundle = next(b for b in r.ws.bundles if name.startswith(f"bin/{b.target}/") and
                              name.rsplit("/", 1)[1] in b.binary_files())  # fmt: skip
                rel = Path(name).relative_to("bin")
                published = Path(tmp) / rel.name
                _published_member(release / bundle.archive_name(r.ws.version), bundle, rel.name, published)
                signature = published.with_suffix(".sig")
                authenticode.extract_signature(published, signature)
                dst = r.signed_root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                authenticode.attach_signature(r.bin_root / rel, signature, dst, ca, at=r.epoch)
                materials[name] = built[name]["sha256"]
                products[name] = sha256_file(dst)
        record = StepRecord(
            name=attest.STEP_CODESIGN, command=["authenticode-transplant"], materials=materials, products=products
        )
        return Outcome(f"{len(products)} published signatures on the rebuilt binaries", record, Codesigned(products))

    return StepSpec(spec.name, step, spec.after)


def _published_member(archive: Path, bundle: Bundle, file: str, out: Path) -> None:
    """Copy the binary ``file`` out of the published zip ``archive`` (hostile: bounded, never followed)."""
    member = f"{archive.name[: -len(bundle.format) - 1]}/bin/{file}"
    try:
        fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(f"{archive}: cannot be read ({e.strerror}): its signed binaries are needed") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadInputError(f"{archive}: not a regular file")
        try:
            with zipfile.ZipFile(f) as z:
                info = z.getinfo(member)
                if info.file_size > MAX_PUBLISHED:
                    raise BadInputError(f"{archive}: {member} is over {MAX_PUBLISHED} bytes")
                with z.open(info) as src, out.open("wb") as dst:
                    copied = 0
                    while chunk := src.read(1 << 20):  # bounded whatever the header declares
                        copied += len(chunk)
                        if copied > MAX_PUBLISHED:
                            raise BadInputError(f"{archive}: {member} inflates past {MAX_PUBLISHED} bytes")
                        dst.write(chunk)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, zlib.error, NotImplementedError, RuntimeError,
                EOFError) as e:  # fmt: skip
            raise BadInputError(f"{archive}: holds no readable {member} ({e})") from e


def rebuild_and_compare(
    root: Path, release: Path, report_dir: Path, target_dir: Path, sandbox: Sandbox, codesign_ca: Path | None = None
) -> list[str]:
    """Rebuild this checkout's archives and compare them with ``release``'s; return the verdict lines.

    The Windows binaries carry the published Authenticode signatures, checked
    against ``codesign_ca`` (default: ``keys/codesign-ca.pem``).

    Raises :class:`BadInputError` when the checkout is not the release's
    commit (or has changes), :class:`VerificationError` when a file differs.
    """
    ws = load_workspace(root)
    if not release.is_dir():
        raise BadInputError(f"{release}: not a release folder", hint="RELEASE=<the folder holding the archives>")
    commit = source_commit(ws.root)
    check_committed(ws.root, commit)
    wanted = release_commit(release, ws.version)
    if commit != wanted:
        raise BadInputError(
            f"this checkout is at {str(commit)[:12]}, the release was built from {wanted}",
            hint=f"git checkout {wanted} (in a clean clone), then run again",
        )
    names = [n for b in ws.bundles for n in (b.archive_name(ws.version), sbom_name(b, ws.version))]
    rebuilt = (attest.STEP_GATES, attest.STEP_BUILD, attest.STEP_CODESIGN, *(b.step for b in ws.bundles))
    ca = codesign_ca or ws.root / "keys" / authenticode.CA_CERT
    if attest.codesigned_binaries(ws) and not ca.is_file():
        raise BadInputError(
            f"{ca}: the code-signing CA is needed to check the published Authenticode signatures",
            hint="get codesign-ca.pem with the project's public keys and pass --codesign-ca (make: CODESIGN_CA=)",
        )
    specs = [transplant_step(release, s, ca) if s.name == attest.STEP_CODESIGN else s
             for s in steps(ws) if s.name in rebuilt]  # fmt: skip
    keys = {role: RoleKey.ephemeral(role) for role in {attest.step_role(s.name) for s in specs}}
    toolchains = {t: find_toolchain(ws, t) for t in ws.targets()}
    report_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rebuild-", dir=report_dir) as tmp:
        staging = Path(tmp)
        r = Context(ws, staging, target_dir, source_date_epoch(ws.root), MappingProxyType(keys),
                    MappingProxyType(toolchains), None, sandbox, (ws.root / "keys",))  # fmt: skip
        r.out.mkdir()
        run_pipeline_steps(r, specs, len(specs))
        for stale in report_dir.glob("*.diffoscope.txt"):
            stale.unlink()
        results = [compare(n, release / n, r.out / n, report_dir) for n in names]
    lines = [c.line for c in results]
    write_bytes_atomic(report_dir / SUMMARY, ("\n".join(lines) + "\n").encode(), "the comparison")
    for line in lines:
        print(line)
    different = [c.name for c in results if not c.identical]
    if different:
        raise VerificationError(
            f"{len(different)} of {len(results)} files differ from the rebuild: {', '.join(different)}",
            hint=f"see {report_dir / SUMMARY} and the diffoscope reports beside it",
        )
    return lines
