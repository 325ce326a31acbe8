"""SLSA v1 provenance of a release, from what the in-toto links recorded.

One in-toto Statement (``https://in-toto.io/Statement/v1``) with predicate
``https://slsa.dev/provenance/v1``: its subjects are the release archives
with their SHA-256; its build definition and run details are read from the
links of the pipeline's steps, never typed in a second time:

* ``buildDefinition.buildType`` — :data:`BUILD_TYPE`, this pipeline; or
  :data:`UNSAFE_PREBUILT_BUILD_TYPE` when the build link says its binaries
  were not built from the source (``environment.unsafe-prebuilt-binaries``,
  ``--unsafe-prebuilt-binaries``: benchmarks only), which
  ``externalParameters.unsafePrebuiltBinaries`` then also says;
* ``externalParameters.sourceCommit`` — the commit of the released source
  (``null`` for a tree without git);
* ``internalParameters`` — every step's exact command, in pipeline order,
  and the Rust toolchain of each target (the build link's environment);
* ``resolvedDependencies`` — the source commit, then every file a step read
  that no earlier step wrote (the gated source), with its SHA-256;
* ``runDetails`` — the builder's identity, the invocation id, and the first
  ``started`` and last ``finished`` time the links' environments record.

The statement is shipped in a DSSE envelope (payload type
``application/vnd.in-toto+json``) signed by the build functionary's key, one
JSON line in ``<name>.intoto.jsonl``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from release.archive import ArtifactDigest, write_bytes_atomic
from release.errors import BadInputError, VerificationError
from release.names import PROVENANCE_SUFFIX
from release.names import provenance_name as provenance_name  # the module's own name for it, kept
from release.signers import RoleKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# What "a RansomEye release build" means: the steps and rules of the root layout.
BUILD_TYPE = "urn:ransomeye:release-build:v1"
# The same pipeline fed binaries that were not built from the source: never a customer release.
UNSAFE_PREBUILT_BUILD_TYPE = "urn:ransomeye:release-build:unsafe-prebuilt-binaries:v1"
UNSAFE_PREBUILT = "unsafe-prebuilt-binaries"
# The link environment's record of the sandbox a step ran in (release/sandbox.py); {"unsandboxed": true} when opted out.
SANDBOX = "sandbox"
SUFFIX = PROVENANCE_SUFFIX
STEP_PROVENANCE = "provenance"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadInputError(f"{where}: not an ISO-8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise BadInputError(f"{where}: {value!r} is not an ISO-8601 time") from e
    if parsed.tzinfo is None:
        raise BadInputError(f"{where}: {value!r} has no time zone")
    return parsed.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hashes(section: Any, where: str) -> dict[str, str]:
    if not isinstance(section, dict):
        raise BadInputError(f"{where} is not an object")
    out = {}
    for name, digest in section.items():
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise BadInputError(f"{where}[{name!r}] has no SHA-256")
        out[str(name)] = sha
    return out


def external_materials(links: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Every file some step read that no step wrote, with the SHA-256 first recorded for it, sorted.

    Raises :class:`BadInputError` for a link without materials or products.
    """
    produced: set[str] = set()
    read: dict[str, str] = {}
    for step, link in links.items():
        produced |= _hashes(link.get("products"), f"link {step}: products").keys()
        for name, sha in _hashes(link.get("materials"), f"link {step}: materials").items():
            read.setdefault(name, sha)
    return {name: read[name] for name in sorted(read) if name not in produced}


@dataclass(frozen=True)
class _Run:
    """What the links say about the run: its steps' commands, toolchains, times, and prebuilt binaries."""

    steps: list[dict[str, Any]]
    prebuilt: bool
    toolchains: dict[str, str]
    starts: list[datetime]
    ends: list[datetime]
    sandboxes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _read_links(links: Mapping[str, Mapping[str, Any]]) -> _Run:
    run = _Run([], False, {}, [], [])
    prebuilt = False
    for step, link in links.items():
        command = link.get("command")
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise BadInputError(f"link {step}: command is not a list of strings")
        run.steps.append({"name": step, "command": list(command)})
        env = link.get("environment") or {}
        if not isinstance(env, dict):
            raise BadInputError(f"link {step}: environment is not an object")
        if "started" in env:
            run.starts.append(_timestamp(env["started"], f"link {step}: environment.started"))
        if "finished" in env:
            run.ends.append(_timestamp(env["finished"], f"link {step}: environment.finished"))
        prebuilt = prebuilt or env.get(UNSAFE_PREBUILT, False) is not False
        recorded = env.get("toolchains") or {}
        if not isinstance(recorded, dict):
            raise BadInputError(f"link {step}: environment.toolchains is not an object")
        run.toolchains.update({str(t): str(v) for t, v in recorded.items()})
        sandbox = env.get(SANDBOX)
        if sandbox is not None:
            if not isinstance(sandbox, dict):
                raise BadInputError(f"link {step}: environment.{SANDBOX} is not an object")
            run.sandboxes[step] = dict(sandbox)
    return dataclasses.replace(run, prebuilt=prebuilt)


def build_statement(
    subjects: Mapping[str, str],
    links: Mapping[str, Mapping[str, Any]],
    source_commit: str | None,
    builder_id: str,
    invocation_id: str,
) -> dict[str, Any]:
    """The SLSA v1 provenance statement of a release. Pure.

    ``subjects`` maps each archive's file name to its SHA-256; ``links`` maps
    each step's name, in pipeline order, to its link's ``signed`` JSON. Times
    come from the links' ``environment`` (``started``/``finished``, ISO-8601
    with a zone): the earliest start and the latest finish; when no link
    records them the metadata carries only the invocation id. Raises
    :class:`BadInputError` for no subjects, a malformed hash, a link without
    materials/products or an unparsable time.
    """
    if not subjects:
        raise BadInputError("provenance: no subjects (the archives of the release)")
    for name, sha in subjects.items():
        if not _SHA256.fullmatch(sha):
            raise BadInputError(f"provenance: subject {name}: {sha!r} is not a lowercase hex SHA-256")
    if not links:
        raise BadInputError("provenance: no links to derive the build from")
    if not builder_id or not invocation_id:
        raise BadInputError("provenance: the builder id and the invocation id must not be empty")

    run = _read_links(links)
    steps, prebuilt, toolchains, starts, ends = run.steps, run.prebuilt, run.toolchains, run.starts, run.ends
    dependencies: list[dict[str, Any]] = []
    if source_commit:
        dependencies.append({"name": "source", "digest": {"gitCommit": source_commit}})
    dependencies += [{"name": n, "digest": {"sha256": h}} for n, h in external_materials(links).items()]

    metadata: dict[str, str] = {"invocationId": invocation_id}
    if starts:
        metadata["startedOn"] = rfc3339(min(starts))
    if ends:
        metadata["finishedOn"] = rfc3339(max(ends))
    external: dict[str, Any] = {"sourceCommit": source_commit}
    if prebuilt:
        external["unsafePrebuiltBinaries"] = True
    unsandboxed = sorted(step for step, box in run.sandboxes.items() if box.get("unsandboxed"))
    if unsandboxed:
        external["unsandboxedSteps"] = unsandboxed
    internal: dict[str, Any] = {"steps": steps, "toolchains": dict(sorted(toolchains.items()))}
    if run.sandboxes:
        internal["sandbox"] = dict(sorted(run.sandboxes.items()))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": subjects[n]}} for n in sorted(subjects)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": UNSAFE_PREBUILT_BUILD_TYPE if prebuilt else BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {"builder": {"id": builder_id}, "metadata": metadata},
        },
    }


def canonical_json(data: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes that are signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_envelope(statement: Mapping[str, Any], key: RoleKey) -> dict[str, Any]:
    """A DSSE envelope of ``statement`` signed by ``key``; its keyid is the key's in-toto keyid."""
    from securesystemslib.dsse import Envelope  # it loads every signing backend: not in a sandboxed step's process

    envelope = Envelope(canonical_json(statement), PAYLOAD_TYPE, {})
    envelope.sign(key.signer)
    data: dict[str, Any] = envelope.to_dict()
    return data


def write_envelope(envelope: Mapping[str, Any], path: Path) -> ArtifactDigest:
    """Write ``envelope`` as one JSON line (and a newline) to ``path``, atomically; return its digest."""
    data = canonical_json(envelope) + b"\n"
    return write_bytes_atomic(path, data, "the provenance")


def read_envelope(text: str, where: str) -> dict[str, Any]:
    """The one DSSE envelope of a ``.intoto.jsonl`` text; :class:`VerificationError` otherwise."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) != 1:
        raise VerificationError(f"{where}: holds {len(lines)} JSON lines, expected exactly one envelope")
    try:
        data = json.loads(lines[0])
    except ValueError as e:
        raise VerificationError(f"{where}: not JSON ({e})") from e
    if not isinstance(data, dict):
        raise VerificationError(f"{where}: not a DSSE envelope")
    return data


def verify_envelope(envelope: Mapping[str, Any], public_key: Mapping[str, Any]) -> dict[str, Any]:
    """Verify ``envelope`` with ``public_key`` (an in-toto key dict with ``keyid``); return the statement.

    The signature must be by that key over the DSSE pre-authentication
    encoding, the payload type in-toto's, and the payload an in-toto v1
    Statement with the SLSA v1 predicate. Raises :class:`VerificationError`
    naming what is wrong; :class:`BadInputError` for an unusable key.
    """
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import FormatError, UnverifiedSignatureError
    from securesystemslib.exceptions import VerificationError as SslibVerificationError
    from securesystemslib.signer import SSlibKey

    key_data = dict(public_key)
    keyid = key_data.pop("keyid", None)
    if not isinstance(keyid, str):
        raise BadInputError("the provenance key has no keyid")
    try:
        key = SSlibKey.from_dict(keyid, key_data)
    except (KeyError, TypeError, ValueError, FormatError) as e:
        raise BadInputError(f"the provenance key {keyid[:8]} is not a key") from e
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise VerificationError(f"the envelope's payload type is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    try:
        parsed = Envelope.from_dict(copy.deepcopy(dict(envelope)))
    except (KeyError, TypeError, ValueError, FormatError, binascii.Error) as e:
        raise VerificationError(f"not a DSSE envelope ({type(e).__name__})") from e
    if keyid not in parsed.signatures:
        signers = ", ".join(k[:8] for k in parsed.signatures) or "nobody"
        raise VerificationError(f"the envelope is not signed by the key {keyid[:8]} (signed by {signers})")
    try:
        parsed.verify([key], 1)
    except (SslibVerificationError, UnverifiedSignatureError, ValueError) as e:
        raise VerificationError(f"the envelope's signature by {keyid[:8]} does not verify") from e
    try:
        statement = json.loads(parsed.payload)
    except (ValueError, RecursionError) as e:
        raise VerificationError("the envelope's payload is not JSON (or nested too deeply)") from e
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"the payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"the predicate type is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}")
    return statement


def unverified_statement(envelope: Mapping[str, Any]) -> dict[str, Any] | None:
    """The envelope's payload as JSON WITHOUT checking any signature (for reports); None if unreadable."""
    try:
        payload = base64.b64decode(str(envelope.get("payload")), validate=True)
        data = json.loads(payload)
    except (ValueError, binascii.Error, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def statement_subjects(statement: Mapping[str, Any]) -> dict[str, str]:
    """The statement's subjects, ``{name: sha256}``; :class:`VerificationError` when malformed."""
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("the statement has no subjects")
    out: dict[str, str] = {}
    for s in subjects:
        name = s.get("name") if isinstance(s, dict) else None
        digest = s.get("digest") if isinstance(s, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str):
            raise VerificationError("a subject of the statement has no name or no SHA-256")
        if name in out:
            raise VerificationError(f"the statement lists the subject {name} twice")
        out[name] = sha
    return out
