"""The release engine: gates, build, package, sign, checksums, verify, publish.

:func:`run_release` turns the workspace into the release folder: one archive
per bundle declared in ``Cargo.toml`` (``[workspace.metadata.release]``), their
minisign signatures, a signed ``SHA256SUMS``, the in-toto root layout and one
signed link per step. Every step works in a private staging directory with
declared inputs and outputs and records them in its link; before publishing,
``SHA256SUMS`` is checked against the links and the staged release is verified
as a customer's auditor would (the stock ``in-toto-verify`` included). The
release folder is replaced atomically only after all of that succeeded, so a
failure anywhere leaves it exactly as it was. A second run started while one
runs fails at once. The command line is ``release/builder/build.py``.

The steps (:func:`steps`, each an in-toto step) are gates, build, one
``package-<bundle>`` per declared bundle, provenance, sign and checksums, then
verify (the customer's verification, run on the staged release). Each step is
a function of the run's frozen :class:`Context` and the frozen results of the
steps it declares it runs after (``Earlier``); it returns an :class:`Outcome`:
its summary, the evidence for its link and its typed result (:class:`Gated`,
:class:`Built`, :class:`Packaged`, :class:`Attested`, :class:`Signed`,
:class:`Summed`). The engine (:func:`run_steps`) derives order and parallelism
from those declarations (:func:`stages`: the packagers run together, and so do
provenance and sign), writes each link and reports progress. Errors are
:mod:`release.errors` classes; their exit codes are its table.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from release import attest
from release.archive import EXEC_MODE, ArtifactDigest, copy_private, hash_file, renamed, sha256_file, workers
from release.attest import GATES_REPORT, LAYOUT_NAME, StepRecord
from release.binary_inputs import BinaryInputs, binary_inputs, check_build_scripts, forbidden_sources
from release.bundle import package
from release.cargo import HOST_TARGET, Toolchain, cargo_build, find_toolchain, release_dir
from release.checksums import SUMS_NAME, parse, write_hash_list
from release.errors import (
    EXIT_CODES,
    BadInputError,
    GateFailure,
    Interrupted,
    ReleaseError,
    SigningError,
    SystemFailure,
    ToolchainError,
    VerificationError,
)
from release.faults import failpoint
from release.names import SIGNIFY_SUMS_NAME, provenance_name
from release.products import Bundle, Workspace, load_workspace
from release.sandbox import (
    UNSANDBOXED,
    Sandbox,
    compile_packages,
    coverage_paths,
    toolchain_env,
    toolchain_paths,
)
from release.sbom import CargoMetadata, parse_cargo_metadata, run_cargo_metadata, sbom_name
from release.source import hash_sources, source_commit, source_date_epoch
from release.staging import build_lock, clean_stale, new_staging, publish

# The keys, the signing formats and the provenance are imported by the functions of the run's own process that
# use them: a sandboxed step's process (release/builder/step.py) signs nothing and does not load them.
if TYPE_CHECKING:
    from concurrent.futures import Future

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from in_toto.models.metadata import Metablock

    from release.authenticode import CodeSigner
    from release.signers import RoleKey

GATES_SCRIPT = Path("governance") / "gates" / "check_gates.py"
GATES_BANNER = "⛔ RELEASE ABORTED: GATES FAILED"
COMMITTED_LAYOUT = Path("layouts") / LAYOUT_NAME
# Where a release of --unsafe-prebuilt-binaries lands (git-ignored; its previous one is kept beside it).
UNSAFE_PREBUILT_DIR = Path("release") / "unsafe-prebuilt" / "artifacts"
LAYOUT_DAYS_DEV = 30


@dataclass(frozen=True)
class Context:
    """What every step of one run reads: the declaration, the keys, the toolchains, where to write."""

    ws: Workspace
    staging: Path
    target_dir: Path
    epoch: int
    keys: Mapping[str, RoleKey]
    toolchains: Mapping[str, Toolchain]
    prebuilt: Path | None = None
    sandbox: Sandbox = UNSANDBOXED
    hidden: tuple[Path, ...] = ()  # the key folders a sandboxed step must not see
    # Inside a sandboxed step: where it writes (its output folder), instead of the work folder.
    out_dir: Path | None = None
    pgp_created: int = 0  # the creation time of the release key's OpenPGP form (keys/release.asc)
    codesigner: CodeSigner | None = None  # the Authenticode key and certificate (the codesign step only)
    # What ``cargo metadata`` printed for the source: run once by the run's first process, handed to the steps'.
    cargo_metadata: Mapping[str, Any] | None = None
    gates: GatesRun | None = None  # the gates, started before the rest of the run was ready (run_release)
    early: EarlyStep | None = None  # the build step's process, started while the gates run (run_release)

    @property
    def out(self) -> Path:
        """The release folder being assembled (published as a whole)."""
        return self.out_dir or self.staging / "out"

    @property
    def bin_root(self) -> Path:
        """The build step's products, ``<target>/<binary>`` (copied there by :func:`_take_binaries`)."""
        return self.staging / "bin"

    @property
    def signed_root(self) -> Path:
        """The codesign step's products: ``<target>/<binary>``, each Windows binary Authenticode-signed."""
        return self.staging / "signed"

    def binaries_of(self, bundle: Bundle) -> Path:
        """Where ``bundle``'s packager reads its binaries: the signed ones for Windows, else the build's."""
        return self.signed_root if attest.binaries_from(bundle) == attest.STEP_CODESIGN else self.bin_root

    @property
    def gates_report(self) -> Path:
        """The gates' evidence, shipped in the release folder."""
        return self.out / GATES_REPORT

    @property
    def log(self) -> Path:
        return (self.out_dir.parent if self.out_dir else self.staging) / "cargo.log"

    def metadata(self) -> CargoMetadata:
        """The source's crates (``cargo metadata``, parsed; run here only when no earlier process handed it on)."""
        raw = self.cargo_metadata
        if raw is None:
            raw = run_cargo_metadata(self.ws.root, self.toolchains[HOST_TARGET].cargo)
        return parse_cargo_metadata(raw, self.ws.root)


# --- what each step hands on: frozen, typed -----------------------------------------------------


@dataclass(frozen=True)
class Gated:
    report: ArtifactDigest


@dataclass(frozen=True)
class Built:
    metadata: CargoMetadata  # with each binary's source files (``inputs``) unless the binaries were prebuilt


@dataclass(frozen=True)
class Codesigned:
    binaries: Mapping[str, str]  # bin/<target>/<file> -> the signed binary's SHA-256 (in Context.signed_root)


@dataclass(frozen=True)
class Packaged:
    archive: ArtifactDigest
    sbom: ArtifactDigest


@dataclass(frozen=True)
class Attested:
    envelope: ArtifactDigest
    # The statement's bytes as the provenance step signed and wrote them (None: a step run apart, read back).
    statement: bytes | None = None


@dataclass(frozen=True)
class Signed:
    payloads: tuple[ArtifactDigest, ...]  # archives, SBOMs and the gates report, by name
    signatures: tuple[ArtifactDigest, ...]


@dataclass(frozen=True)
class Summed:
    sums: ArtifactDigest
    signature: ArtifactDigest


Result = Gated | Built | Codesigned | Packaged | Attested | Signed | Summed
R = TypeVar("R", Gated, Built, Codesigned, Packaged, Attested, Signed, Summed)


@dataclass(frozen=True)
class Located:
    """Where the build step left one declared binary, and which file it was: hostile until :func:`_take_binaries`.

    ``path`` is where cargo produced it (or where the prebuilt folder holds
    it), as the step spelled it; the rest is that file's identity as the
    step saw it after checking it (``lstat``), so that a file replaced or
    rewritten afterwards is not taken for it.
    """

    product: str  # bin/<target>/<file>
    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, product: str, path: Path) -> Located:
        return cls(product, str(path), *_identity(path.lstat()))

    def identity(self) -> tuple[int, ...]:
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a step returns: its summary line, the evidence for its link, and its typed result.

    The build step's ``binaries`` say where it left each declared binary;
    its record then names no product: the caller of its sandbox copies and
    hashes them (:func:`_take_binaries`) and the link records those hashes.
    """

    summary: str
    record: StepRecord
    result: R
    binaries: tuple[Located, ...] = ()


@dataclass(frozen=True)
class Done:
    """A finished step: its summary line, its signed link (as written) and its typed result."""

    summary: str
    link: attest.WrittenLink
    result: Result


# The finished steps a step runs after (its declared dependencies and theirs), in declared order.
Earlier = Mapping[str, Done]


def result_of(earlier: Earlier, step: str, kind: type[R]) -> R:
    """The result of ``step``, which the asking step must have declared it runs after."""
    done = earlier.get(step)
    if done is None or not isinstance(done.result, kind):
        raise TypeError(f"the engine ran a step before {step}, which it declares it runs after")
    return done.result


def results_of(earlier: Earlier, kind: type[R]) -> list[R]:
    return [d.result for d in earlier.values() if isinstance(d.result, kind)]


class GatesRun:
    """The gate script running on the source, hashed just before it started; :meth:`finish` waits for it.

    The gates read only the source and write only their report, so a run
    starts them first, while it loads its keys and checks its repository
    (:func:`run_release`); :meth:`stop` ends them if the run stops first.
    """

    def __init__(self, ws: Workspace, report: Path) -> None:
        self.script = ws.root / GATES_SCRIPT
        self.materials: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.refused: ReleaseError | None = None  # a source that cannot be hashed: the gates step's error
        self.failed: OSError | None = None
        try:
            self.materials = hash_sources(ws)
        except ReleaseError as e:
            self.refused = e
            return
        cmd = [sys.executable, str(self.script), "--root", str(ws.root), "--report", str(report)]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        except OSError as e:
            self.failed = e

    def finish(self) -> subprocess.CompletedProcess[str]:
        """The gates' exit status and output; :class:`GateFailure` if they could not run or took 600 s.

        A source the gates could not be run on (:func:`hash_sources` refused
        it) raises that error here, in the gates step, as if hashed now.
        """
        if self.refused is not None:
            raise self.refused
        if self.proc is None:
            raise GateFailure(GATES_BANNER, hint=f"{self.script} could not run: {self.failed}")
        try:
            out, err = self.proc.communicate(timeout=600)
        except subprocess.TimeoutExpired as e:
            self.stop()
            raise GateFailure(GATES_BANNER, hint=f"{self.script} could not run: {e}") from e
        except BaseException:
            self.stop()  # interrupted: the gates end with the run
            raise
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def stop(self) -> None:
        """End the gates if they still run (a run that stops before its gates step)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def step_gates(r: Context, earlier: Earlier) -> Outcome[Gated]:
    """Run the gate script on the hashed source (or take the run that started it); raise :class:`GateFailure`
    if it fails."""
    run = r.gates or GatesRun(r.ws, r.gates_report)
    materials, script = run.materials, run.script
    proc = run.finish()
    if proc.returncode != 0:
        details = (proc.stdout + proc.stderr).strip() or f"{script} exited {proc.returncode}"
        raise GateFailure(GATES_BANNER, hint=f"{script} exited {proc.returncode}:\n{details}")
    if not r.gates_report.is_file():
        raise GateFailure(GATES_BANNER, hint=f"{script} passed but wrote no report")
    report = hash_file(r.gates_report)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    record = StepRecord(
        name=attest.STEP_GATES,
        command=["python3", str(GATES_SCRIPT), "--report", GATES_REPORT],
        materials=materials,
        products={GATES_REPORT: report.sha256},
        byproducts={"stdout": "\n".join(lines), "stderr": ""},
    )
    return Outcome(f"{sum(1 for x in lines if x.startswith('PASS'))} gates passed", record, Gated(report))


def _check_version(path: Path, name: str, version: str) -> None:
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"built binary {name} does not run: {e}") from e
    expected = f"{name} {version}"
    if proc.returncode != 0 or proc.stdout.strip() != expected:
        raise ToolchainError(
            f"built binary {name} answers --version with {proc.stdout.strip()!r}, expected {expected!r}"
        )


def step_build(r: Context, earlier: Earlier) -> Outcome[Built]:
    """Build every target; say where each declared binary is; prove what each was compiled from.

    Before cargo runs, a build script in a crate the declaration does not
    allow is refused (it would run arbitrary code). After each target is
    built, every binary's dep-info is judged (:mod:`release.binary_inputs`):
    a core binary compiled from an ``edge/`` file, or any binary from a file
    outside its crates, fails the step with :class:`PackagingError` (exit 6).
    The host's binaries must answer ``--version``. The link's environment
    records each binary's sources under ``binary-inputs`` (each one a
    material of the link), and the SBOMs list them.

    The binaries stay where cargo produced them, checked there: the outcome
    says where each is (:class:`Located`) and records no product. The caller
    of the step's sandbox copies them into ``bin/<target>/`` and hashes the
    copies (:func:`_take_binaries`): each binary is copied once, by the
    kernel, and hashed once, by the process that signs the link.
    """
    # Hashed again, not taken from the gates: the link records what the build read, so a source changed
    # after the gates ran fails the layout's rule (the build's materials must match the gates').
    materials = hash_sources(r.ws)
    materials[GATES_REPORT] = result_of(earlier, attest.STEP_GATES, Gated).report.sha256
    metadata = r.metadata()
    built, inputs = _compile(r, metadata, materials)
    if r.prebuilt is not None:
        record = StepRecord(
            name=attest.STEP_BUILD,
            command=["unsafe-prebuilt-binaries"],
            materials=materials,
            products={},
            environment={"unsafe-prebuilt-binaries": True},
        )
        located = tuple(Located.of(product, src) for _, src, product in built)
        summary = f"UNSAFE: {len(located)} prebuilt binaries, not built from the source"
        return Outcome(summary, record, Built(metadata), located)
    for target, src, _ in built:
        if target == HOST_TARGET:
            _check_version(src, src.name, r.ws.version)
    located = tuple(Located.of(product, src) for _, src, product in built)  # as checked
    metadata = dataclasses.replace(
        metadata,
        inputs=MappingProxyType({i.product: tuple((p, materials[p]) for p in i.sources) for i in inputs}),
    )
    record = StepRecord(
        name=attest.STEP_BUILD,
        command=["cargo", "build", "--release", "--offline", "--locked"],
        materials=materials,
        products={},
        environment=_build_environment(r, inputs),
    )
    sources = len({p for i in inputs for p in i.sources})
    versions = ", ".join(f"{t}: {tc.version}" for t, tc in r.toolchains.items())
    summary = f"{versions}; {len(inputs)} binaries from {sources} source files, none forbidden"
    return Outcome(summary, record, Built(metadata), located)


def _built_dir(r: Context, target: str) -> Path:
    """Where the build step leaves ``target``'s binaries: cargo's release folder, or the prebuilt folder's."""
    return r.prebuilt / target if r.prebuilt is not None else release_dir(r.target_dir, target)


def binary_places(r: Context) -> dict[str, Path]:
    """Where each declared binary is when the build step is done, by its product name ``bin/<target>/<file>``."""
    return {f"bin/{b.target}/{f}": _built_dir(r, b.target) / f for b in r.ws.bundles for f in b.binary_files()}


def _compile(
    r: Context, metadata: CargoMetadata, materials: Mapping[str, str]
) -> tuple[list[tuple[str, Path, str]], list[BinaryInputs]]:
    """Build each target (or take the prebuilt binaries); judge each binary's sources.

    Returns (target, the binary where cargo produced it, its product name
    ``bin/<target>/<file>``) for every declared binary, and what each
    compiled binary was built from.
    """
    forbidden = {}
    if r.prebuilt is None:
        check_build_scripts(r.ws, metadata)
        forbidden = {b.id: forbidden_sources(r.ws, b) for b in r.ws.bundles if b.forbidden_paths}
    built: list[tuple[str, Path, str]] = []
    inputs: list[BinaryInputs] = []
    for target in r.ws.targets():
        needed = sorted({b for bundle in r.ws.bundles if bundle.target == target for b in bundle.binaries})
        if r.prebuilt is not None:
            folder = _built_dir(r, target)
        else:
            tc = r.toolchains[target]
            folder = cargo_build(r.ws, tc, r.target_dir, None if target == HOST_TARGET else needed, r.epoch, r.log)
        exe = ".exe" if "windows" in target else ""
        for name in needed:
            src = folder / f"{name}{exe}"
            if not src.is_file():
                raise ToolchainError(
                    f"cargo did not produce {src.name} for {target}", hint="is it a [[bin]] of a crate?"
                )
            if r.prebuilt is None:
                inputs.append(
                    binary_inputs(r.ws, metadata, target, src.name, folder, r.target_dir, materials, forbidden)
                )
            built.append((target, src, f"bin/{target}/{src.name}"))
    return built, inputs


def _build_environment(r: Context, inputs: Sequence[BinaryInputs]) -> dict[str, object]:
    """The build link's environment: the toolchains, and each binary's source files (and generated ones)."""
    ordered = sorted(inputs, key=lambda i: i.product)
    environment: dict[str, object] = {
        "toolchains": {t: tc.version for t, tc in r.toolchains.items()},
        "binary-inputs": {i.product: list(i.sources) for i in ordered},
    }
    generated = {i.product: list(i.generated) for i in ordered if i.generated}
    if generated:
        environment["binary-generated-inputs"] = generated
    return environment


def step_codesign(r: Context, earlier: Earlier) -> Outcome[Codesigned]:
    """Authenticode-sign every Windows binary the build produced, with the signer's code-signing certificate.

    Each binary is checked against the build's link before it is signed; the
    signature time is ``SOURCE_DATE_EPOCH`` and no timestamp server is asked,
    so the signed binary is the same bytes on every run (and for every
    builder's packager, which packs these, not its own unsigned build). It is
    signed and checked in-process, streamed (memory does not grow with the
    binary), into the bytes ``osslsigncode sign`` writes: the signature is
    osslsigncode's own signature of a stub PE file, checked by ``osslsigncode
    verify``, with the values that depend on the binary put in
    (:func:`authenticode.signing_template`).
    """
    from release import authenticode  # Authenticode: the codesign step and the Windows packager only

    if r.codesigner is None:
        raise SigningError("the codesign step has no code-signing key", hint="run `make keys` (keys/README.md)")
    built = earlier[attest.STEP_BUILD].link.signed["products"]
    template = authenticode.signing_template(r.codesigner, r.epoch)
    materials: dict[str, str] = {}
    products: dict[str, str] = {}
    for name in attest.codesigned_binaries(r.ws):
        recorded = built.get(name, {}).get("sha256")
        rel = Path(name).relative_to("bin")
        src, dst = r.bin_root / rel, r.signed_root / rel
        if recorded is None:
            raise VerificationError(f"{name}: is not a binary the build step recorded")
        authenticode.sign_pe_streamed(template, src, dst, expected_sha256=recorded)  # checked before it is signed
        authenticode.verify_pe_streamed(template, dst)
        digests = authenticode.signed_digests(dst)  # one read: the signed binary's hash and its unsigned form's
        if digests.unsigned_sha256 != recorded:  # what every builder's packager will check
            raise SigningError(
                f"{name}: removing its signature does not give the built binary back, so no builder would pack it",
                hint="a PE file whose checksum field is 0 or whose size is not a multiple of 8 changes when signed: "
                "link it with a checksum and aligned (the Rust toolchains' defaults do)",
            )
        materials[name], products[name] = recorded, digests.sha256
    record = StepRecord(
        name=attest.STEP_CODESIGN,
        command=list(attest.CODESIGN_COMMAND),
        materials=materials,
        products=products,
        environment={"certificate-sha256": r.codesigner.fingerprint, "signing-time": r.epoch},
    )
    return Outcome(f"{len(products)} Windows binaries Authenticode-signed", record, Codesigned(products))


SIGNED_BINARIES = "signed-binaries"  # a packager's link: each signed binary's hash without its signature


def _check_signed_binaries(r: Context, bundle: Bundle, earlier: Earlier) -> dict[str, str]:
    """A packager of code-signed binaries checks each is this builder's own build plus a signature, nothing else.

    Each is read once (:func:`authenticode.signed_digests`, in-process: no
    tool parses it): its SHA-256 must be what the codesign step recorded, and
    without its signature (the bytes ``osslsigncode remove-signature`` gives
    back) it must be the binary this builder's build step recorded: the
    signer can add a signature, never swap a binary. Returns each binary's
    unsigned SHA-256, for the link.
    """
    if attest.binaries_from(bundle) != attest.STEP_CODESIGN:
        return {}
    from release import authenticode  # a packager of signed binaries only: it imports the X.509 code

    built = earlier[attest.STEP_BUILD].link.signed["products"]
    signed = result_of(earlier, attest.STEP_CODESIGN, Codesigned).binaries
    unsigned: dict[str, str] = {}
    for f in bundle.binary_files():
        name = f"bin/{bundle.target}/{f}"
        path = r.signed_root / bundle.target / f  # handed on from the codesign step: checked before any use
        not_recorded = f"{name}: the signed binary is not what the codesign step recorded"
        if path.is_symlink() or not path.is_file():
            raise VerificationError(not_recorded)
        try:
            digests = authenticode.signed_digests(path)
        except BadInputError as e:  # the codesign step's mismatch is named first, as when it was checked first
            if sha256_file(path) != signed.get(name):
                raise VerificationError(not_recorded) from e
            raise VerificationError(f"{name}: not an Authenticode-signed binary ({e.message})") from e
        if digests.sha256 != signed.get(name):
            raise VerificationError(not_recorded)
        unsigned[name] = digests.unsigned_sha256
        if unsigned[name] != built.get(name, {}).get("sha256"):
            raise VerificationError(
                f"{name}: the signed binary, its signature removed, is not the binary this builder built",
                hint="the codesign step must sign the binaries the builders agreed on, and change nothing else",
            )
    return unsigned


def _package_step(bundle_id: str) -> StepFn:
    def step(r: Context, earlier: Earlier) -> Outcome[Packaged]:
        from release.sbom_build import bundle_sbom, write_sbom  # a packager's only

        bundle = r.ws.bundle(bundle_id)
        metadata = result_of(earlier, attest.STEP_BUILD, Built).metadata
        signed = _check_signed_binaries(r, bundle, earlier)
        packaged = package(r.ws, bundle, r.binaries_of(bundle), r.out, r.epoch)
        d = packaged.digest
        tc = r.toolchains.get(bundle.target)
        bom = bundle_sbom(bundle, r.ws.version, d, packaged.contents, metadata, r.epoch, tc.version if tc else None)
        sbom = write_sbom(bom, r.out / sbom_name(bundle, r.ws.version))
        record = StepRecord(
            name=bundle.step,
            command=["package", bundle_id],
            materials=packaged.materials,
            products={d.name: d.sha256, sbom.name: sbom.sha256},
            environment={**packaged.link_environment(), **({SIGNED_BINARIES: signed} if signed else {})},
        )
        return Outcome(f"{d.name} ({human_size(d.size)}) + SBOM", record, Packaged(d, sbom))

    step.__doc__ = f"Package the {bundle_id} bundle into the release folder."
    return step


def step_provenance(r: Context, earlier: Earlier) -> Outcome[Attested]:
    """Write the SLSA v1 provenance of the archives, from what the links recorded (DSSE, build key)."""
    import uuid

    from release.provenance import build_statement, sign_envelope, write_envelope

    key = r.keys[attest.BUILD_ROLE]
    links = {name: done.link.signed for name, done in earlier.items()}
    subjects = {p.archive.name: p.archive.sha256 for p in sorted(results_of(earlier, Packaged), key=_by_archive)}
    statement = build_statement(
        subjects,
        links,
        source_commit(r.ws.root),
        builder_id=f"urn:ransomeye:release-builder:{attest.keyid_of(key.public)[:16]}",
        invocation_id=f"urn:uuid:{uuid.uuid4()}",
    )
    signed = sign_envelope(statement, key)
    envelope = write_envelope(signed, r.out / provenance_name(r.ws.version))
    record = StepRecord(
        name=attest.STEP_PROVENANCE,
        command=["slsa-provenance"],
        materials=subjects,
        products={envelope.name: envelope.sha256},
    )
    payload = base64.b64decode(signed["payload"], validate=True)
    return Outcome(f"{envelope.name} ({len(subjects)} subjects)", record, Attested(envelope, payload))


def step_sign(r: Context, earlier: Earlier) -> Outcome[Signed]:
    """Sign with the release key, in every format a customer's stock tools check.

    Every archive, SBOM and the gates report: ``<file>.minisig`` (minisign).
    Every archive: ``<archive>.asc`` (OpenPGP, for gpgv and sqv) and
    ``<archive>.sigstore.json`` (a Sigstore bundle of an in-toto statement
    whose one subject is the archive and whose predicate is the release's
    SLSA provenance, for cosign and @sigstore/verify).
    """
    from release.provenance import PREDICATE_TYPE
    from release.signing import sign_all, sign_openpgp_all, write_sigstore_bundle

    key = r.keys[attest.RELEASE_ROLE]
    packaged = sorted(results_of(earlier, Packaged), key=_by_archive)
    report = result_of(earlier, attest.STEP_GATES, Gated).report
    attested = result_of(earlier, attest.STEP_PROVENANCE, Attested)
    envelope = attested.envelope
    payloads = sorted([*(p.archive for p in packaged), *(p.sbom for p in packaged), report], key=lambda d: d.name)
    signatures = sign_all(key, payloads, r.ws.version, r.epoch)
    predicate = provenance_predicate(attested)
    signatures += sign_openpgp_all(key, [p.archive for p in packaged], r.epoch, r.pgp_created)
    for p in packaged:
        signatures.append(write_sigstore_bundle(key, p.archive, PREDICATE_TYPE, predicate))
    signatures.sort(key=lambda d: d.name)
    record = StepRecord(
        name=attest.STEP_SIGN,
        command=list(attest.SIGN_COMMAND),
        materials={d.name: d.sha256 for d in [*payloads, envelope]},
        products={d.name: d.sha256 for d in signatures},
    )
    summary = f"{len(signatures)} signatures (minisign, OpenPGP, Sigstore bundles)"
    return Outcome(summary, record, Signed(tuple(payloads), tuple(signatures)))


def provenance_predicate(attested: Attested) -> dict[str, Any]:
    """The part of the provenance's SLSA predicate that is the same on every run of the commit.

    From the statement the provenance step signed and wrote, kept in memory
    (the file is not read back); for a provenance step run apart, from the
    envelope's file, whose bytes must be the recorded bytes. The run's metadata
    (its invocation id and times) is left out, so that each Sigstore bundle,
    like every other signature, is byte-identical when the commit is released
    again; the whole provenance is the ``.intoto.jsonl`` beside it.
    """
    from release import provenance

    envelope = attested.envelope
    if attested.statement is not None:
        try:
            statement = json.loads(attested.statement)
        except (ValueError, RecursionError) as e:
            raise VerificationError(f"{envelope.name}: its statement is not JSON") from e
    else:
        with envelope.path.open("rb") as f:
            data = f.read(MAX_RECORD + 1)
        if len(data) > MAX_RECORD or hashlib.sha256(data).hexdigest() != envelope.sha256:
            raise VerificationError(f"{envelope.name}: is not the provenance the provenance step recorded")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError(f"{envelope.name}: not UTF-8") from e
        statement = provenance.unverified_statement(provenance.read_envelope(text, envelope.name))
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    if not isinstance(predicate, dict) or not isinstance(predicate.get("runDetails"), dict):
        raise VerificationError(f"{envelope.name}: holds no provenance predicate")
    run = {k: v for k, v in predicate["runDetails"].items() if k != "metadata"}
    return {**predicate, "runDetails": run}


def step_checksums(r: Context, earlier: Earlier) -> Outcome[Summed]:
    """Write and sign ``SHA256SUMS`` from the hashes already known (the verify step checks it against the links)."""
    from release.signing import sign_digest, sign_openpgp, write_signify_sums

    signed = result_of(earlier, attest.STEP_SIGN, Signed)
    produced = [*signed.payloads, *signed.signatures]
    sums = write_hash_list(r.out, produced)
    failpoint("checksums:written")
    key = r.keys[attest.RELEASE_ROLE]
    sums_sig = sign_digest(key, sums, r.ws.version, r.epoch)
    sums_pgp = sign_openpgp(key, sums, r.epoch, r.pgp_created)
    listed = [d for d in signed.payloads if any(_is_archive(d.name, b) for b in r.ws.bundles)]
    signify_sums = write_signify_sums(key, r.out / SIGNIFY_SUMS_NAME, listed)
    record = StepRecord(
        name=attest.STEP_CHECKSUMS,
        command=["sha256sums"],
        materials={d.name: d.sha256 for d in produced},
        products={d.name: d.sha256 for d in (sums, sums_sig, sums_pgp, signify_sums)},
    )
    return Outcome(f"{len(produced)} entries", record, Summed(sums, sums_sig))


def _by_archive(p: Packaged) -> str:
    return p.archive.name


def _is_archive(name: str, bundle: Bundle) -> bool:
    return name.startswith(bundle.name + "-") and name.endswith("." + bundle.format)


StepFn = Callable[[Context, Earlier], Outcome[Any]]


@dataclass(frozen=True)
class StepSpec:
    """One in-toto step of the pipeline: its name (its link's), what it runs, and which steps it reads."""

    name: str
    run: StepFn
    after: tuple[str, ...] = ()


def steps(ws: Workspace) -> tuple[StepSpec, ...]:
    """The steps, from the declaration: one packaging step per bundle ``[workspace.metadata.release]`` declares.

    A bundle added there adds its step here (and to the layout, the inspection
    and the audit) with no code change.
    """
    packaging = tuple(b.step for b in ws.bundles)
    codesign = (StepSpec(attest.STEP_CODESIGN, step_codesign, after=(attest.STEP_BUILD,)),)
    return (
        StepSpec(attest.STEP_GATES, step_gates),
        StepSpec(attest.STEP_BUILD, step_build, after=(attest.STEP_GATES,)),
        *(codesign if attest.codesigned_binaries(ws) else ()),
        *(StepSpec(b.step, _package_step(b.id), after=(attest.binaries_from(b),)) for b in ws.bundles),
        StepSpec(attest.STEP_PROVENANCE, step_provenance, after=packaging),
        StepSpec(attest.STEP_SIGN, step_sign, after=(attest.STEP_GATES, *packaging, attest.STEP_PROVENANCE)),
        StepSpec(attest.STEP_CHECKSUMS, step_checksums, after=(attest.STEP_SIGN,)),
    )


def stages(specs: Sequence[StepSpec]) -> tuple[tuple[StepSpec, ...], ...]:
    """Order and parallelism, derived from what each step runs after.

    A step's stage is one past the latest stage of the steps it runs after;
    the steps of a stage are independent and run in parallel, listed in
    declared order. A step must be declared after the steps it reads.
    """
    level: dict[str, int] = {}
    for spec in specs:
        unknown = [a for a in spec.after if a not in level]
        if unknown:
            raise ValueError(f"step {spec.name} runs after {', '.join(unknown)}, not declared before it")
        level[spec.name] = 1 + max((level[a] for a in spec.after), default=-1)
    return tuple(
        tuple(spec for spec in specs if level[spec.name] == n) for n in range(max(level.values(), default=-1) + 1)
    )


def _earlier(spec: StepSpec, specs: Sequence[StepSpec], done: Mapping[str, Done]) -> Earlier:
    """The finished steps ``spec`` reads: what it runs after, and what those ran after, in declared order."""
    return MappingProxyType({name: done[name] for name in _wanted(spec, specs)})


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _run_step(r: Context, spec: StepSpec, earlier: Earlier) -> Done:
    """Run one step (a builder's step in its sandbox) and write its signed link (with its start and finish times)."""
    started = _utc_now()
    outcome = _sandboxed(r, spec, earlier) if spec.name in builder_steps(r.ws) else spec.run(r, earlier)
    record = outcome.record
    record = dataclasses.replace(record, environment={**record.environment, "started": started, "finished": _utc_now()})
    link = attest.write_link(record, r.keys[attest.step_role(spec.name)], r.out)
    failpoint(spec.name)
    return Done(outcome.summary, link, outcome.result)


# --- steps run apart: in a sandbox, in another process, on another machine ------------------------

STEP_SCRIPT = Path("release") / "builder" / "step.py"
# Where the other builders run on this machine keep their checkouts and target directories (default: target/builders).
BUILDERS_DIR_VARIABLE = "RANSOMEYE_BUILDERS_DIR"
RECORD_SUFFIX = ".record.json"
ERROR_FILE = "error.json"
MAX_RECORD = 16 << 20


def builder_steps(ws: Workspace) -> tuple[str, ...]:
    """The steps every independent builder runs (in its sandbox) and signs with its own keys."""
    return (attest.STEP_BUILD, *(b.step for b in ws.bundles))


def _sandboxed(r: Context, spec: StepSpec, earlier: Earlier) -> Outcome[Any]:
    """Run ``spec`` in the sandbox (``step.py <step> --inner``); take its products and record, checked.

    The step reads the work folder and the source read-only and writes only
    its own output folder; nothing it writes is trusted until hashed here:
    every file must be a product it recorded, with the hash it recorded. Its
    products then move into the work folder, and the link (signed by the
    caller) adds the sandbox the step ran in. The build step records no
    product but where it left each binary: they are checked, copied into
    the work folder and hashed here (:func:`_take_binaries`), once the
    sandbox is gone (bubblewrap's PID namespace has ended every process in
    it). A step killed by a signal kills this process the same way; its
    error is raised here as its class.
    """
    early = r.early.take(spec.name) if r.early is not None else None
    if early is not None:
        output, proc = early.output, early.finish(handed_on(r, earlier))
    else:
        output = _step_output(r, spec.name)
        command = sandbox_command(r, spec.name, output)
        try:
            proc = subprocess.run(command, input=handed_on(r, earlier), capture_output=True, text=True, check=False)
        except OSError as e:
            raise ToolchainError(f"the {spec.name} step could not start: {e}") from e
    killed = _killed_by(proc.returncode, output)
    if killed:
        os.kill(os.getpid(), killed)  # killed inside: the pipeline dies the same way
    if proc.returncode != 0:
        raise _inner_error(spec.name, output, proc)
    record, summary, located = _read_record(output / f"{spec.name}{RECORD_SUFFIX}", spec.name)
    hashed = _take_products(r, output, record)
    if spec.name == attest.STEP_BUILD:
        record = dataclasses.replace(record, products=_take_binaries(r, located))
    shutil.rmtree(output, ignore_errors=True)
    record = dataclasses.replace(record, environment={**record.environment, "sandbox": r.sandbox.describe()})
    result = result_from(r, spec.name, record.products, record.materials, record.environment, hashed)
    return Outcome(summary, record, result)


def _step_output(r: Context, step: str) -> Path:
    """The sandboxed ``step``'s output folder, new and empty (and cargo's target directory for the build)."""
    output = r.staging / f".step-{step}"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    if step == attest.STEP_BUILD:
        r.target_dir.mkdir(parents=True, exist_ok=True)
    return output


class EarlyStep:
    """A sandboxed step's process started before its turn: its interpreter starts and imports its code, then waits.

    The run starts the build step's process while the gates run (their process
    leaves a core free): the step then does not wait for its interpreter. Its
    first act is to read its standard input (:func:`handed_on`, given when the
    step runs), so nothing of the step is done before the gates pass; a run
    that ends first kills it (:meth:`stop`), and bubblewrap's
    ``--die-with-parent`` ends it with this process (so only a sandboxed step
    is started early). A process that could not start is started again at its
    turn, which raises the error.
    """

    def __init__(self, r: Context, step: str) -> None:
        self.step = step
        self.output = _step_output(r, step)
        self.command = sandbox_command(r, step, self.output)
        self.proc: subprocess.Popen[str] | None = None
        with contextlib.suppress(OSError):
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )

    def take(self, step: str) -> EarlyStep | None:
        """This, for the step it was started for, while its process waits (:meth:`finish` hands it its input)."""
        if step != self.step or self.proc is None:
            return None
        return self

    def finish(self, handed: str) -> subprocess.CompletedProcess[str]:
        """Hand the step its input; wait for it to end (killed if this thread is interrupted)."""
        proc, self.proc = self.proc, None
        if proc is None:
            raise SystemFailure(f"the {self.step} step's process was handed its input twice")
        try:
            out, err = proc.communicate(handed)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(self.command, proc.returncode, out, err)

    def stop(self) -> None:
        """End the process if its step never ran (the run stopped before it)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()


def handed_on(r: Context, earlier: Earlier) -> str:
    """What a sandboxed step reads on its standard input: the toolchains and cargo metadata this run found, and
    the links of the steps it runs after.

    Found once, by the process that runs the steps, instead of again by
    each step's (``rustc`` and ``cargo metadata`` in every sandbox); the
    links as this process wrote or read them (the links of several builders
    already found to agree, :func:`load_done`), so the step reads no link
    back; read by :func:`run_inner`. The step trusts its caller, as it
    trusts its command line; every file a link names it still hashes
    (:func:`result_from`).
    """
    toolchains = {t: tc.to_dict() for t, tc in r.toolchains.items()}
    links = {name: [done.link.path.name, done.link.signed] for name, done in earlier.items()}
    return json.dumps({"toolchains": toolchains, "cargo-metadata": r.cargo_metadata, "links": links})


def _killed_by(code: int, output: Path) -> int:
    """The signal that killed a step's process (0: none): negative from a plain child; from bubblewrap, 128 + it.

    A step that fails on its own leaves its error file, so 128 + N with no error file is a signal.
    """
    if code < 0:
        return -code
    if code > 128 and code - 128 in {s.value for s in signal.Signals} and not (output / ERROR_FILE).exists():
        return code - 128
    return 0


def sandbox_command(r: Context, step: str, output: Path) -> list[str]:
    """The command of ``step``'s sandboxed half: ``step.py <step> --inner``, wrapped by :attr:`Context.sandbox`.

    Read-only: the source, the work folder, the toolchains (and prebuilt
    binaries); writable: ``output`` (and cargo's target directory for the
    build); hidden: every key folder; the environment cleared.
    """
    argv = [sys.executable, "-I", str(r.ws.root / STEP_SCRIPT), step, "--inner", "--work", str(r.staging),
            "--output", str(output), "--target-dir", str(r.target_dir)]  # fmt: skip
    read_only = [r.ws.root, r.staging, *toolchain_paths()]
    if r.prebuilt is not None:
        argv += ["--unsafe-prebuilt-binaries", str(r.prebuilt)]
        read_only.append(r.prebuilt)
    writable = [output, *coverage_paths()]
    if step == attest.STEP_BUILD:
        writable.append(r.target_dir)
    host_first = sorted(r.toolchains.values(), key=lambda tc: tc.target != HOST_TARGET)
    return r.sandbox.command(
        argv,
        cwd=r.ws.root,
        read_only=read_only,
        writable=writable,
        hidden=r.hidden,
        env=toolchain_env([tc.cargo for tc in host_first]),
    )


def _inner_error(step: str, output: Path, proc: subprocess.CompletedProcess[str]) -> ReleaseError:
    """The error a sandboxed step reported, as its own class (by its exit code), or a system failure."""
    by_code = {code: cls for cls, code in EXIT_CODES.items()}
    try:
        data = json.loads((output / ERROR_FILE).read_text())
        message, hint = str(data["message"]), data.get("hint")
    except (OSError, ValueError, KeyError, TypeError):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        return SystemFailure(f"the {step} step exited {proc.returncode} in its sandbox", hint=tail or None)
    cls = by_code.get(proc.returncode, SystemFailure)
    if cls is Interrupted:
        return Interrupted(False)
    return cls(message, hint=str(hint) if hint else None)


def write_inner_error(output: Path, error: ReleaseError) -> None:
    """Inside the sandbox: tell the caller what failed (its class is the exit code)."""
    (output / ERROR_FILE).write_text(json.dumps({"message": error.message, "hint": error.hint}))


def write_record(path: Path, outcome: Outcome[Any]) -> None:
    """Inside the sandbox: the step's evidence (the build's: where its binaries are), for the caller to check."""
    rec = outcome.record
    data: dict[str, object] = {
        "name": rec.name,
        "command": list(rec.command),
        "materials": dict(rec.materials),
        "products": dict(rec.products),
        "byproducts": dict(rec.byproducts),
        "environment": dict(rec.environment),
        "summary": outcome.summary,
    }
    if rec.name == attest.STEP_BUILD:
        data["binaries"] = [dataclasses.asdict(b) for b in outcome.binaries]
    path.write_text(json.dumps(data, sort_keys=True))


_LOCATED_FIELDS = {f.name: f.type for f in dataclasses.fields(Located)}


def _read_located(value: object, step: str) -> tuple[Located, ...]:
    """The build record's ``binaries``: a list of :class:`Located`, every field present and of its type."""

    def one(entry: object) -> Located | None:
        if not isinstance(entry, dict) or set(entry) != set(_LOCATED_FIELDS):
            return None
        for name, kind in _LOCATED_FIELDS.items():
            ok = isinstance(entry[name], str) if kind == "str" else type(entry[name]) is int
            if not ok:
                return None
        return Located(**entry)

    located = [one(e) for e in value] if isinstance(value, list) else [None]
    if any(loc is None for loc in located):
        raise VerificationError(
            f"the {step} step's record: its binaries must be a list of {{{', '.join(_LOCATED_FIELDS)}}}"
        )
    return tuple(loc for loc in located if loc is not None)


def _read_record(path: Path, step: str) -> tuple[StepRecord, str, tuple[Located, ...]]:
    """A sandboxed step's record, read as hostile input: bounded, every field of its type.

    Returns the record, its summary and, for the build step, where it says
    its binaries are (checked by :func:`_take_binaries`, not here). The
    build's record names no product: its binaries are hashed by the caller.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_RECORD + 1)
        data = json.loads(raw) if len(raw) <= MAX_RECORD else None
    except (OSError, ValueError) as e:
        raise VerificationError(f"the {step} step left no readable record ({e})") from e

    def hashes(value: object) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in value.items()
        ):
            raise VerificationError(f"the {step} step's record: materials and products must map names to SHA-256")
        return dict(value)

    if not isinstance(data, dict) or data.get("name") != step:
        raise VerificationError(f"the {step} step's record is not the record of that step")
    command, env, by = data.get("command"), data.get("environment"), data.get("byproducts")
    if not isinstance(command, list) or not isinstance(env, dict) or not isinstance(by, dict):
        raise VerificationError(f"the {step} step's record is malformed")
    record = StepRecord(step, [str(c) for c in command], hashes(data.get("materials")), hashes(data.get("products")),
                        by, env)  # fmt: skip
    located: tuple[Located, ...] = ()
    if step == attest.STEP_BUILD:
        if record.products:
            raise VerificationError(
                f"the {step} step's record: it records products ({', '.join(map(repr, sorted(record.products)[:3]))}),"
                " but its binaries are hashed by its caller, from where it left them"
            )
        located = _read_located(data.get("binaries"), step)
    elif "binaries" in data:
        raise VerificationError(f"the {step} step's record: it names binaries, as only the build step's may")
    return record, str(data.get("summary", "")), located


def product_name_problem(name: str, step: str) -> str | None:
    """Why ``name`` cannot be a product of ``step``'s sandboxed half, or None.

    The record comes from inside the sandbox: a product is a plain file name
    (a packager's, into ``out/``) or, for the build, ``bin/<target>/<file>``;
    nothing absolute, no ``.`` or ``..``, no other folder, so checking and
    moving it never leaves the output and work folders.
    """
    parts = name.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        return "an empty, '.', '..', backslash or NUL path component"
    if len(parts) == 1 and step != attest.STEP_BUILD:
        return None
    if len(parts) == 3 and parts[0] == "bin" and step == attest.STEP_BUILD:
        return None
    return f"not a product the {step} step writes (a file name, or bin/<target>/<file> for the build)"


def _take_products(r: Context, output: Path, record: StepRecord) -> dict[str, ArtifactDigest]:
    """Check every file the step wrote against its record, move them into the work folder; return the release
    files' digests (each file is hashed once).

    Product names are checked first (:func:`product_name_problem`), and every
    path is checked to lie, symlinks resolved, inside the output folder.
    """
    for name in record.products:
        problem = product_name_problem(name, record.name)
        if problem is not None:
            raise VerificationError(f"the {record.name} step recorded a product {name!r}: {problem}")
    wanted = {(output / n if "/" in n else output / "out" / n): n for n in record.products}
    inside = output.resolve()
    for path, name in wanted.items():
        if not path.resolve().is_relative_to(inside) or path.resolve() != path.absolute():
            raise VerificationError(f"{name}: recorded by the {record.name} step, but not a file in its output folder")
    found = [p for p in output.rglob("*") if not p.is_dir() and p.name != f"{record.name}{RECORD_SUFFIX}"]
    extra = sorted(str(p.relative_to(output)) for p in found if p not in wanted and p.name != "cargo.log")
    if extra:
        raise VerificationError(f"the {record.name} step wrote files it did not record: {', '.join(extra[:5])}")
    hashed: dict[str, ArtifactDigest] = {}
    for path, name in wanted.items():
        if path.is_symlink() or not path.is_file():
            raise VerificationError(f"{name}: recorded by the {record.name} step, but not a file it wrote")
        # Release files get both digests here (the signatures need BLAKE2b); binaries are recorded, never signed.
        sha = sha256_file(path) if "/" in name else (d := hash_file(path)).sha256
        if sha != record.products[name]:
            raise VerificationError(f"{name}: differs from what the {record.name} step recorded")
        if "/" not in name:
            hashed[name] = d
    for path, name in wanted.items():
        dest = r.staging / name if "/" in name else r.out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    # Each keeps the hash state of the pass that read it (its signatures continue it) while it is the same file.
    return {name: renamed(d, r.out / name) for name, d in hashed.items()}


def _take_binaries(r: Context, located: Sequence[Located]) -> dict[str, str]:
    """Copy each declared binary from where the build step left it into ``bin/<target>/``; return their SHA-256s.

    Runs in the caller of the build step's sandbox, after the sandbox is
    gone, and trusts nothing the step recorded (``located``). Every declared
    binary must be recorded once, and nothing else. Each must be recorded at
    the one place cargo leaves it (:func:`binary_places`): an absolute path
    spelled without ``.``, ``..`` or empty components, inside cargo's target
    directory (the prebuilt folder, for ``--unsafe-prebuilt-binaries``), and
    never inside a key folder or this run's staging folder. That file is
    then reached from the target directory one folder at a time, never
    through a symlink (``O_NOFOLLOW``), and must be a regular file (a FIFO
    or device file is never opened), the very file the step recorded (its
    device, inode, size, modification and change times: not one replaced or
    rewritten since the step checked it), and no other declared binary's.
    Any refusal is a :class:`VerificationError` naming the binary, and
    nothing is placed.

    Each binary is copied, not hard-linked: the copy is a file of its own,
    so that nothing that later writes cargo's target directory can change
    what the packagers read — a cargo build in another checkout that shares
    ``CARGO_TARGET_DIR`` (the build lock is per checkout), a build script,
    a later run — nor a chmod here change cargo's file. The kernel copies
    (:func:`release.archive.copy_private`: a clone of the extents where the
    file system can, else a copy inside the kernel), then the copy is read
    once for its SHA-256, the hash of exactly the bytes the packagers read.
    A binary that changes while it is copied is refused. The copies are mode
    755, written beside their place and renamed into it only when every
    binary has been copied. A binary with other names is taken (cargo
    gives each a second one, ``deps/<crate>-<hash>``): what is hashed and
    packed is the copy, whose one name is ours, so other names of the
    source cannot change it; and no name a sandboxed step can make reaches
    a file from outside cargo's target directory (a hard link cannot cross
    the bind mount, and key folders are not even there to name).
    """
    # The step saw these folders resolved (step.py resolves them; the sandbox binds resolved paths).
    r = dataclasses.replace(r, target_dir=r.target_dir.resolve(), prebuilt=r.prebuilt and r.prebuilt.resolve())
    places = binary_places(r)
    recorded: dict[str, Located] = {}
    for loc in located:
        if loc.product not in places:
            raise VerificationError(f"the build step recorded {loc.product!r}, which is not a declared binary")
        if loc.product in recorded:
            raise VerificationError(f"the build step recorded {loc.product!r} twice")
        recorded[loc.product] = loc
    missing = sorted(set(places) - set(recorded))
    if missing:
        raise VerificationError(f"the build step did not record where {', '.join(missing)} is")
    root = r.prebuilt if r.prebuilt is not None else r.target_dir
    opened: dict[str, tuple[int, os.stat_result]] = {}
    try:
        files: dict[tuple[int, int], str] = {}
        for product in sorted(recorded):
            loc = recorded[product]
            problem = _place_problem(r, root, loc.path, places[product])
            if problem is not None:
                raise VerificationError(f"{product}: the build step recorded it at {loc.path!r}, {problem}")
            opened[product] = _open_beneath(root, Path(loc.path).relative_to(root).parts, product, loc.path)
            st = opened[product][1]
            if _identity(st) != loc.identity():
                raise VerificationError(
                    f"{product}: {loc.path!r} is not the file the build step checked (replaced or rewritten since)"
                )
            other = files.setdefault((st.st_dev, st.st_ino), product)
            if other != product:
                raise VerificationError(f"{product}: {loc.path!r} is the same file as {other}")
        return _copy_binaries(r, {p: (recorded[p].path, *opened[p]) for p in sorted(opened)})
    finally:
        for fd, _ in opened.values():
            os.close(fd)


def _place_problem(r: Context, root: Path, path: str, expected: Path) -> str | None:
    """Why ``path`` (a build record's, for a binary whose place is ``expected``) is not that place, or None."""
    if "\0" in path:
        return "a path with a NUL in it"
    if not path.startswith("/"):
        return "not an absolute path"
    if any(part in ("", ".", "..") for part in path.split("/")[1:]):
        return "a path with a '.', '..' or empty component"
    where = "the prebuilt folder" if r.prebuilt is not None else "cargo's target directory"
    p = Path(path)
    if p == root or not p.is_relative_to(root):
        return f"not in {where} {root}"
    for folder in r.hidden:
        if p.is_relative_to(folder) or p.is_relative_to(folder.resolve()):
            return f"inside the key folder {folder}"
    if p.is_relative_to(r.staging) or p.is_relative_to(r.staging.resolve()):
        return "inside this run's staging folder"
    if p != expected:
        return f"not where {'the prebuilt folder holds' if r.prebuilt is not None else 'cargo leaves'} it ({expected})"
    return None


_KINDS = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device file"), (stat.S_ISBLK, "a device file"))  # fmt: skip


def _open_beneath(root: Path, parts: Sequence[str], product: str, path: str) -> tuple[int, os.stat_result]:
    """Open the regular file ``root/<parts>`` for reading, through real folders only; return it and its status.

    Nothing but a regular file is opened (a FIFO or device file is only
    ``lstat``-ed); a symlink anywhere below ``root`` is refused.
    """
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise VerificationError(f"{product}: {path!r} is not there ({root}: {e.strerror})") from e
    try:
        for n, part in enumerate(parts[:-1], 1):
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            except FileNotFoundError:
                raise VerificationError(f"{product}: {path!r} is not there") from None
            except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
                raise VerificationError(
                    f"{product}: {path!r} is reached through a symlink or a file ({'/'.join(parts[:n])}: {e.strerror})"
                ) from e
            os.close(folder)
            folder = inner
        try:
            st = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            raise VerificationError(f"{product}: {path!r} is not there") from None
        kind = next((k for test, k in _KINDS if test(st.st_mode)), None if stat.S_ISREG(st.st_mode) else "not a file")
        if kind is not None:
            raise VerificationError(f"{product}: {path!r} is {kind}, not the regular file cargo writes")
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            raise VerificationError(f"{product}: {path!r} changed while it was opened")
        return fd, opened
    finally:
        os.close(folder)


def _copy_binaries(r: Context, sources: Mapping[str, tuple[str, int, os.stat_result]]) -> dict[str, str]:
    """Copy each opened binary to ``<product>``'s place in the work folder; return each copy's SHA-256.

    All or nothing: each is copied beside its place, and renamed into it
    only when every copy succeeded; on any failure the copies are removed.
    """
    parts = {product: (r.staging / product).with_name(f".{Path(product).name}.part") for product in sources}
    for part in parts.values():
        part.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)  # a crashed run's

    def copy(product: str) -> str:
        path, fd, before = sources[product]
        copied, sha256 = copy_private(fd, before.st_size, parts[product], EXEC_MODE)
        after = os.fstat(fd)
        if copied != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise VerificationError(f"{product}: {path!r} changed while it was copied")
        return sha256

    from concurrent.futures import ThreadPoolExecutor  # the run's own process only, as every pool here

    placed: list[Path] = []
    try:
        # The kernel copies and hashlib hashes without the GIL: one thread per core.
        with ThreadPoolExecutor(max_workers=workers(len(sources)), thread_name_prefix="copy") as pool:
            hashes = dict(zip(sources, pool.map(copy, sources), strict=True))
        for product, part in parts.items():
            os.replace(part, r.staging / product)
            placed.append(r.staging / product)
    except BaseException:
        for path in (*parts.values(), *placed):
            path.unlink(missing_ok=True)
        raise
    return hashes


def result_from(
    r: Context,
    step: str,
    products: Mapping[str, str],
    materials: Mapping[str, str],
    environment: Mapping[str, Any],
    hashed: Mapping[str, ArtifactDigest] | None = None,
) -> Result:
    """A finished step's typed result, from what its link (or record) says and the files in the work folder.

    Every file the result names is hashed here (unless ``hashed`` holds its
    digest, just checked against the record) and must be what the step
    recorded: a product swapped between machines is refused before it is used.
    """

    def digest(name: str, recorded: Mapping[str, str]) -> ArtifactDigest:
        if hashed and name in hashed and hashed[name].sha256 == recorded[name]:
            return hashed[name]
        path = r.out / name
        if path.is_symlink() or not path.is_file():
            raise VerificationError(f"{name}: the {step} step's product is not in {r.out}")
        d = hash_file(path)
        if d.sha256 != recorded[name]:
            raise VerificationError(f"{name}: differs from what the {step} step recorded")
        return d

    def flat(names: Mapping[str, str]) -> list[ArtifactDigest]:
        return sorted((digest(n, names) for n in names if "/" not in n), key=lambda d: d.name)

    if step == attest.STEP_GATES:
        return Gated(digest(GATES_REPORT, products))
    if step == attest.STEP_BUILD:
        metadata = r.metadata()
        recorded = environment.get("binary-inputs") or {}
        inputs = {str(b): tuple((str(src), materials[src]) for src in srcs) for b, srcs in recorded.items()}
        return Built(dataclasses.replace(metadata, inputs=MappingProxyType(inputs)))
    if step == attest.STEP_CODESIGN:
        return Codesigned(MappingProxyType(dict(products)))  # the binaries: checked by the packager that reads them
    if step == attest.STEP_PROVENANCE:
        (envelope,) = flat(products)
        return Attested(envelope)
    if step == attest.STEP_SIGN:
        # What it signed: everything it read but the provenance (read for the Sigstore bundles' predicate).
        payloads = {n: h for n, h in materials.items() if not fnmatchcase(n, attest.PROVENANCE_GLOB)}
        return Signed(tuple(flat(payloads)), tuple(flat(products)))
    if step == attest.STEP_CHECKSUMS:
        return Summed(digest(SUMS_NAME, products), digest(SUMS_NAME + ".minisig", products))
    bundle = next(b for b in r.ws.bundles if b.step == step)
    archive = next(n for n in products if n.endswith("." + bundle.format))
    sbom = next(n for n in products if n != archive)
    return Packaged(digest(archive, products), digest(sbom, products))


def load_done(r: Context, step: str) -> Done:
    """A step another process finished: its link in the work folder (links of several builders must agree)."""
    paths = sorted(r.out.glob(f"{step}.*.link"))
    if not paths:
        raise BadInputError(
            f"no link of the {step} step in {r.out}", hint="run that step first, or copy its link there"
        )
    links = []
    for path in paths:
        try:
            links.append((path, json.loads(path.read_text())["signed"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VerificationError(f"{path.name}: not a readable in-toto link") from e
    return _done_from_links(r, step, links)


def _handed_link(r: Context, handed: Any) -> tuple[Path, Any]:
    """A link as :func:`handed_on` hands it, ``[file name, signed]``: its path in the work folder and its data."""
    name, data = handed
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".link"):
        raise ValueError(f"{name!r} is not the file name of a link")
    return r.out / name, data


def _done_from_links(r: Context, step: str, links: Sequence[tuple[Path, Any]]) -> Done:
    """A finished step from the ``signed`` part of its links (several builders' links must agree)."""
    signed = []
    for path, data in links:
        try:
            signed.append((path, data, {k: v["sha256"] for k, v in data["materials"].items()},
                           {k: v["sha256"] for k, v in data["products"].items()}))  # fmt: skip
        except (KeyError, TypeError, AttributeError) as e:
            raise VerificationError(f"{path.name}: not a readable in-toto link") from e
    path, data, materials, products = signed[0]
    if any((m, p) != (materials, products) for _, _, m, p in signed[1:]):
        raise VerificationError(f"the links of the {step} step disagree: the builders did not produce the same bytes")
    result = result_from(r, step, products, materials, data.get("environment") or {})
    return Done("", attest.WrittenLink(path, data), result)


def _step_workers() -> int:
    """How many steps run at once: one per core this process may use (a step is one busy process)."""
    return workers()


def run_steps(
    r: Context, specs: Sequence[StepSpec], total: int | None = None, finished: Callable[[str], None] | None = None
) -> dict[str, Done]:
    """Run ``specs``, each as soon as every step it runs after is done; return every finished step, in declared order.

    At most one step per core runs at a time; of the steps ready to run, the
    one declared first starts first. Each prints its line ``[k/total] name ok
    <seconds> <summary>`` (the k-th to finish). A step that is the only one
    to run runs in this thread and prints its name as it starts, so an
    interrupt (Ctrl-C) stops it and its process at once; steps that run
    together run in worker threads and print their whole line as they
    finish. ``total`` is the number of steps the progress lines count
    (default: ``specs`` and the verify step); ``finished`` is told the name
    of each step as it finishes (its link written), in the order they
    finish, until a step fails. When a step fails, no other starts; the
    running ones finish, and the failure of the first failed step in
    declared order is raised. :func:`stages` is the same order, level by
    level.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    stages(specs)  # refuses a step declared before what it reads
    total = total or len(specs) + 1
    workers = _step_workers()
    done: dict[str, Done] = {}
    failed: dict[str, BaseException] = {}
    pending = list(specs)
    running: dict[Future[tuple[Done, float]], StepSpec] = {}
    printed = 0

    def timed(spec: StepSpec, earlier: Earlier) -> tuple[Done, float]:
        started = time.monotonic()
        return _run_step(r, spec, earlier), time.monotonic() - started

    def finish(spec: StepSpec, outcome: Done) -> None:
        done[spec.name] = outcome
        if finished is not None and not failed:
            try:
                finished(spec.name)
            except Exception as e:  # the step's own failure, raised in its turn
                failed[spec.name] = e

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step") as pool:
        while pending or running:
            ready = [s for s in pending if all(a in done for a in s.after)] if not failed else []
            if not running and len(ready) == 1:  # alone: here, as a plain call
                (spec,) = ready
                pending.remove(spec)
                with _progress(printed + 1, total, spec.name) as report:
                    outcome = _run_step(r, spec, _earlier(spec, specs, done))
                    report(outcome.summary)
                printed += 1
                finish(spec, outcome)
                continue
            for spec in ready[: workers - len(running)]:
                pending.remove(spec)
                running[pool.submit(timed, spec, _earlier(spec, specs, done))] = spec
            if not running:
                break  # a step failed: nothing more starts
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished_now, key=lambda f: specs.index(running[f])):
                spec = running.pop(future)
                printed += 1
                label = f"[{printed}/{total}] {spec.name:<22}"
                try:
                    outcome, seconds = future.result()
                except Exception as e:  # raised below, once the running steps have finished
                    failed[spec.name] = e
                    print(f"{label}FAILED", flush=True)
                    continue
                print(f"{label}ok {seconds:6.1f}s  {outcome.summary}", flush=True)
                finish(spec, outcome)
    if failed:
        raise next(failed[s.name] for s in specs if s.name in failed)
    return {spec.name: done[spec.name] for spec in specs}


def _wanted(spec: StepSpec, specs: Sequence[StepSpec]) -> list[str]:
    """The steps ``spec`` reads (what it runs after, transitively), in declared order."""
    after = {s.name: s.after for s in specs}
    wanted: set[str] = set()
    todo = list(spec.after)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(after[name])
    return [s.name for s in specs if s.name in wanted]


def step_spec(ws: Workspace, name: str) -> tuple[StepSpec, tuple[StepSpec, ...]]:
    specs = steps(ws)
    for spec in specs:
        if spec.name == name:
            return spec, specs
    raise BadInputError(f"no step {name!r}", hint=f"the steps are {', '.join(s.name for s in specs)}")


def _find_toolchains(ws: Workspace, targets: Sequence[str]) -> tuple[dict[str, Toolchain], dict[str, Any]]:
    """A toolchain for each of ``targets`` (the host's first), and what ``cargo metadata`` says of the source."""
    toolchains = {t: find_toolchain(ws, t) for t in dict.fromkeys((HOST_TARGET, *targets))}
    return toolchains, run_cargo_metadata(ws.root, toolchains[HOST_TARGET].cargo)


def _toolchains(ws: Workspace, names: Sequence[str]) -> dict[str, Toolchain]:
    """The toolchains steps ``names`` use: the build's every target; a packager's its bundle's (for its SBOM)."""
    wanted = {HOST_TARGET} | {b.target for b in ws.bundles if b.step in names or attest.STEP_BUILD in names}
    return {t: find_toolchain(ws, t) for t in dict.fromkeys((HOST_TARGET, *ws.targets())) if t in wanted}


def run_apart(
    root: Path, names: Sequence[str], work: Path, keys_dir: Path, target_dir: Path, sandbox: Sandbox
) -> dict[str, Done]:
    """Run the steps ``names`` in the work folder ``work``, as one job of a CI engine would.

    ``work/out`` holds the earlier steps' products and links (copied there
    from the jobs that made them); each step reads them (checked against
    their links), writes its products and its signed link there, and signs
    with its own role's key from ``keys_dir`` only. The build and packaging
    steps run in ``sandbox``.
    """
    from release import authenticode
    from release.signers import load_role_key
    from release.signing import publish_release_keys

    ws = load_workspace(root)
    chosen = [step_spec(ws, n)[0] for n in names]
    specs = steps(ws)
    keys = {role: load_role_key(keys_dir, role) for role in sorted({attest.step_role(s.name) for s in chosen})}
    toolchains = _toolchains(ws, names)
    # The builder steps' crates, read once for all of them (handed to each sandboxed step).
    sandboxed = set(names) & set(builder_steps(ws))
    metadata = run_cargo_metadata(ws.root, toolchains[HOST_TARGET].cargo) if sandboxed else None
    epoch = source_date_epoch(ws.root)
    # Hidden from a sandboxed step: this job's keys, and the checkout's keys/ (it may hold other roles' keys).
    release_key = keys.get(attest.RELEASE_ROLE)
    pgp_created = publish_release_keys(keys_dir, release_key) if release_key else 0
    codesigner = authenticode.load_codesigner(keys_dir) if attest.STEP_CODESIGN in names else None
    r = Context(ws, work, target_dir, epoch, MappingProxyType(keys), MappingProxyType(toolchains), None, sandbox,
                (keys_dir, ws.root / "keys"), pgp_created=pgp_created, codesigner=codesigner,
                cargo_metadata=metadata)  # fmt: skip
    compile_packages(root)  # for every sandboxed step's process
    r.out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Done] = {}
    for i, spec in enumerate(chosen, 1):
        earlier = MappingProxyType({n: done.get(n) or load_done(r, n) for n in _wanted(spec, specs)})
        with _progress(i, len(chosen), spec.name) as report:
            done[spec.name] = _run_step(r, spec, earlier)
            report(done[spec.name].summary)
    return done


def run_inner(
    root: Path, name: str, work: Path, output: Path, target_dir: Path, prebuilt: Path | None, handed: str
) -> None:
    """Inside the sandbox: run one builder step, reading ``work``, writing only ``output`` (and its record).

    ``handed`` is what the caller found for the run (:func:`handed_on`).
    """
    ws = load_workspace(root)
    spec, specs = step_spec(ws, name)
    try:
        given = json.loads(handed)
        toolchains = {str(t): Toolchain.from_dict(d) for t, d in given["toolchains"].items()}
        metadata = given["cargo-metadata"]
    except (ValueError, KeyError, TypeError, AttributeError, ToolchainError) as e:
        why = e.message if isinstance(e, ToolchainError) else f"{type(e).__name__}: {e}"
        raise SystemFailure(f"the {name} step was not handed its toolchains and cargo metadata ({why})") from e
    if metadata is not None and not isinstance(metadata, dict):
        raise SystemFailure(f"the {name} step was not handed its toolchains and cargo metadata "
                            f"(its cargo metadata is a {type(metadata).__name__}, not a JSON object)")  # fmt: skip
    base = Context(ws, work, target_dir, source_date_epoch(ws.root), MappingProxyType({}),
                   MappingProxyType(toolchains), prebuilt, cargo_metadata=metadata)  # fmt: skip
    try:
        links = {n: _handed_link(base, given["links"][n]) for n in _wanted(spec, specs)}
    except (KeyError, TypeError, ValueError) as e:
        raise SystemFailure(
            f"the {name} step was not handed the links of the steps it runs after ({type(e).__name__}: {e})"
        ) from e
    earlier = MappingProxyType({n: _done_from_links(base, n, [link]) for n, link in links.items()})
    r = dataclasses.replace(base, out_dir=output / "out")
    r.out.mkdir(parents=True, exist_ok=True)
    write_record(output / f"{name}{RECORD_SUFFIX}", spec.run(r, earlier))


def verify_apart(root: Path, work: Path, owner_pub: Path) -> str:
    """The last job: verify the assembled release in ``work/out`` as the pipeline verifies before publishing."""
    ws = load_workspace(root)
    toolchains = _toolchains(ws, [])
    r = Context(ws, work, work / "target", source_date_epoch(ws.root), MappingProxyType({}),
                MappingProxyType(toolchains))  # fmt: skip
    done = {spec.name: load_done(r, spec.name) for spec in steps(ws)}
    return verify_staged(r, done, owner_pub, "layout in the work folder")


def check_sums_against_links(r: Context, done: Mapping[str, Done]) -> None:
    """Every line of ``SHA256SUMS`` must equal the hash the producing step's link recorded."""
    recorded: dict[str, str] = {}
    for step in (attest.STEP_GATES, *(b.step for b in r.ws.bundles), attest.STEP_SIGN):
        recorded.update(attest.read_link_products(done[step].link.path))  # as published, read back on purpose
    listed = parse((r.out / SUMS_NAME).read_text(), SUMS_NAME)
    if listed != recorded:
        diff = sorted(set(listed.items()) ^ set(recorded.items()))
        raise VerificationError(f"{SUMS_NAME} disagrees with the links on {', '.join(n for n, _ in diff)}")


def verify_staged(r: Context, done: Mapping[str, Done], owner_pub: Path, layout_origin: str) -> str:
    """Audit the staged release exactly as a customer's auditor would; refuse it unless it verifies.

    Checks ``SHA256SUMS`` against the links first, then runs the full audit
    (the stock ``in-toto-verify`` with its inspection, every signature, the
    SBOMs against the archives' contents, the provenance against
    ``SHA256SUMS``) on the staged folder, which it does not modify. The
    audit's own checks take this run's digest of each archive and SBOM while
    the file is the one that was hashed (:meth:`Folder.adopt`).
    """
    from release.audit.checks import audit  # the verifier: the run's last step (and the CI's verify job) only

    check_sums_against_links(r, done)
    # The archives and SBOMs this process hashed when it took them from their packagers: not read again by the
    # audit while they are the same files (in-toto-verify reads every file itself).
    known = {d.name: d for p in results_of(done, Packaged) for d in (p.archive, p.sbom)}
    report = audit(r.out, owner_pub, scratch_parent=r.staging, known=known)  # on the folder's file system
    if not report.verified:
        failures = "; ".join(f.text() for f in report.findings[:3])
        more = f" (and {len(report.findings) - 3} more)" if len(report.findings) > 3 else ""
        raise VerificationError(f"the staged release does not verify: {failures}{more}")
    return f"audit passed: in-toto-verify, {len(done)} links, signatures, SBOMs, provenance ({layout_origin})"


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def functionaries(keys_dir: Path, builders: int | None = None) -> attest.Functionaries:
    """The public keys of every role, and of every builder: this one's, then each ``keys/builder-*/`` folder's.

    ``builders`` limits how many builders (1: this one only, for ``--single-builder``).
    """
    from release.keys import builder_dirs, load_public_key, public_key_path

    def pub(folder: Path, role: str) -> Ed25519PublicKey:
        return load_public_key(public_key_path(folder, role))

    folders = [keys_dir, *builder_dirs(keys_dir)][: builders or None]
    return attest.Functionaries(
        gates=pub(keys_dir, attest.GATES_ROLE),
        builders=tuple(attest.Builder(pub(d, attest.BUILD_ROLE), pub(d, attest.PACKAGE_ROLE)) for d in folders),
        release=pub(keys_dir, attest.RELEASE_ROLE),
    )


def resolve_layout(
    ws: Workspace, keys_dir: Path, keys: attest.Functionaries, *, prebuilt: bool = False
) -> tuple[Metablock, str]:
    """The signed root layout this build ships.

    The committed ``layouts/root.layout`` when there is one (its owner
    signature checked against ``keys/owner.pub``, expiry checked; it must
    authorise each of this build's keys for its steps, and require no more
    builders than this build has); otherwise, with development keys, a layout
    signed now with the development owner key.
    """
    from release.keys import DEV_MARKER, load_public_key
    from release.signers import has_private_key, load_role_key

    committed = ws.root / COMMITTED_LAYOUT
    if committed.exists() and prebuilt:
        raise BadInputError(
            "--unsafe-prebuilt-binaries cannot make a release under the owner's layout (it refuses prebuilt binaries)",
            hint="benchmarks run with development keys and no committed layouts/root.layout",
        )
    if committed.exists():
        metablock = attest.load_layout(committed, load_public_key(keys_dir / "owner.pub"))
        _check_authority(committed, metablock, keys_dir, keys)
        return metablock, f"layout {COMMITTED_LAYOUT}"
    if not has_private_key(keys_dir, "owner"):
        raise BadInputError(
            f"no {COMMITTED_LAYOUT} and no owner key to sign one",
            hint="the owner creates it offline: python3 layouts/create_layout.py (see layouts/README.md)",
        )
    if not (keys_dir / DEV_MARKER).exists():
        raise BadInputError(
            f"no {COMMITTED_LAYOUT}: production builds use the layout the owner signed offline",
            hint="commit layouts/root.layout (python3 layouts/create_layout.py on the owner's machine)",
        )
    owner = load_role_key(keys_dir, "owner")
    layout = attest.build_layout(ws, keys, attest.expiry(LAYOUT_DAYS_DEV), allow_prebuilt=prebuilt)
    origin = f"layout signed now with the development owner key, {keys.threshold} builder(s)"
    return attest.sign_layout(layout, owner), origin + (", UNSAFE: it accepts prebuilt binaries" if prebuilt else "")


def _check_authority(path: Path, metablock: Metablock, keys_dir: Path, keys: attest.Functionaries) -> None:
    """Each of this build's keys must be authorised for its steps, and the layout must want no more builders."""
    from release.keys import public_key_path

    first = keys.builders[0]
    mine = [
        (attest.STEP_GATES, attest.GATES_ROLE, keys.gates),
        (attest.STEP_BUILD, attest.BUILD_ROLE, first.build),
        (attest.STEP_PROVENANCE, attest.BUILD_ROLE, first.build),
        (attest.STEP_SIGN, attest.RELEASE_ROLE, keys.release),
    ]
    for step, role, public in mine:
        authorised, _ = attest.step_authority(metablock, step)
        if attest.keyid_of(public) not in authorised:
            raise BadInputError(
                f"{path}: the layout does not authorise {public_key_path(keys_dir, role)} for the {step} step",
                hint="the owner signs a new layout for the current functionary keys (layouts/README.md)",
            )
    _, threshold = attest.step_authority(metablock, attest.STEP_BUILD)
    if threshold > keys.threshold:
        raise BadInputError(
            f"{path}: the layout requires {threshold} builders and this build has {keys.threshold}",
            hint="run every builder (keys/builder-*/ with their keys), not --single-builder",
        )


def run_release(
    root: Path,
    keys_dir: Path,
    target_dir: Path,
    prebuilt: Path | None = None,
    *,
    single_builder: bool = False,
    sandbox: Sandbox | None = None,
) -> Path:
    """Run every step, verify, and publish; return the release folder.

    The build and packaging steps run in ``sandbox`` (bubblewrap) and, unless
    ``single_builder``, a second time by every other builder whose keys are in
    ``keys/builder-*/``: each from a fresh clone of the source commit, with its
    own keys, target directory and sandbox (:func:`run_other_builder`). Their
    links join this builder's, and the layout requires all of them to agree.

    Side effects: runs the gates and cargo, writes a staging directory under
    ``release/.staging/`` and, on success only, replaces ``release/artifacts/``
    — or, with ``prebuilt`` binaries, :data:`UNSAFE_PREBUILT_DIR` (never the
    customer release folder, whatever the binaries are).
    """
    ws = load_workspace(root)
    release_dir = ws.root / "release"
    # A release of prebuilt binaries is never a customer release: it lands apart, under a layout saying so.
    artifacts_dir = ws.root / (ws.artifacts_dir if prebuilt is None else UNSAFE_PREBUILT_DIR)
    with build_lock(release_dir):
        staging = new_staging(release_dir)
        published = False
        builders: list[OtherBuilder] = []
        gates: GatesRun | None = None
        early: EarlyStep | None = None
        try:
            failpoint("staging:created")
            clean_stale(release_dir, keep=staging)
            compile_packages(ws.root)  # for the gates and every sandboxed step's process
            (staging / "out").mkdir()
            gates = GatesRun(ws, staging / "out" / GATES_REPORT)  # they read the source only: started first
            # Then the modules only this run's own process uses (a sandboxed step's never imports them), while the
            # gates run: the Authenticode checks (in the thread that reads the key), the TUF repository (a customer
            # release only), the verifier (once the run has started).
            # Preflight: everything that can be checked before work starts.
            targets = (HOST_TARGET,) if prebuilt is not None else ws.targets()  # prebuilt: cargo metadata only
            # The toolchains are looked for (rustc, cargo metadata: subprocesses) and the code-signing key is
            # checked (an RSA key's check takes a tenth of a second) while the other keys load and the repository
            # is checked; a failure is still raised in the same order as if each ran in turn.
            from concurrent.futures import ThreadPoolExecutor

            preflight = ThreadPoolExecutor(max_workers=2, thread_name_prefix="preflight")
            found = preflight.submit(_find_toolchains, ws, targets)
            codesigns = attest.codesigned_binaries(ws)
            signer = preflight.submit(_load_codesigner, keys_dir) if codesigns else None
            preflight.shutdown(wait=False)
            from release.keys import builder_dirs
            from release.signers import load_role_key
            from release.signing import publish_release_keys

            epoch = source_date_epoch(ws.root)
            publics = functionaries(keys_dir, 1 if single_builder or prebuilt is not None else None)
            keys = {role: load_role_key(keys_dir, role) for role in attest.FUNCTIONARY_ROLES}
            others = builder_dirs(keys_dir)[: publics.threshold - 1]
            commit = source_commit(ws.root)
            if others:
                check_committed(ws.root, commit)
                for folder in others:
                    check_local_builder(folder)
            pgp_created = publish_release_keys(keys_dir, keys[attest.RELEASE_ROLE])
            # A customer release lands in the TUF repository too (checked, and its keys loaded, before any work).
            tuf = None
            if prebuilt is None:
                from release import repository

                tuf = repository.prepare(
                    repository.repository_dir(ws.root), keys_dir, keys[attest.RELEASE_ROLE], repository.utc_now()
                )
            codesigner = signer.result() if signer is not None else None
            if codesigner is not None:
                from release import authenticode

                authenticode.check_ready(codesigner, epoch)
            layout, layout_origin = resolve_layout(ws, keys_dir, publics, prebuilt=prebuilt is not None)
            toolchains, metadata = found.result()
            box = sandbox or UNSANDBOXED
            r = Context(ws, staging, target_dir, epoch, MappingProxyType(keys), MappingProxyType(toolchains), prebuilt,
                        box, (keys_dir, *others, ws.root / "keys"), pgp_created=pgp_created,
                        codesigner=codesigner, cargo_metadata=metadata, gates=gates)  # fmt: skip
            if box.enabled:
                # The build step's sandbox starts now, from this thread (the one its --die-with-parent watches),
                # while the gates still run; it waits for its input, handed to it once they passed.
                early = EarlyStep(r, attest.STEP_BUILD)
                r = dataclasses.replace(r, early=early)
            print(
                f"RansomEye {ws.version}: release build of {commit or 'a tree without git'} "
                f"(SOURCE_DATE_EPOCH={epoch}); {publics.threshold} builder(s), "
                f"{'sandboxed by bubblewrap' if box.enabled else 'UNSANDBOXED'}"
            )
            from release.audit.checks import prepare as prepare_audit
            from release.audit.intoto import warm as warm_verifier

            specs = steps(ws)
            total = len(specs) + len(others) + 1
            prepare_audit()  # the verify step's fixed cost, compiled while the steps run in their sandboxes
            builders += [OtherBuilder(r, folder, commit or "") for folder in others]

            packaging = {b.step for b in ws.bundles}
            packed: set[str] = set()

            def gated(step: str) -> None:
                if step in packaging:
                    packed.add(step)
                    if len(packaging - packed) <= 1:  # one is left: it runs alone, or next, with a core free
                        warm_verifier()  # in-toto-verify's interpreter starts and imports its command now
                for builder in builders:
                    if step == attest.STEP_GATES:
                        builder.start()  # they build while this builder does
                    elif step == attest.STEP_CODESIGN:
                        builder.hand_signed()  # and pack the binaries this builder signed

            done = run_steps(r, specs, total, gated)
            for n, builder in enumerate(builders, len(specs) + 1):
                with _progress(n, total, builder.keys.name) as report:
                    report(builder.finish())
            attest.write_layout(layout, r.out / LAYOUT_NAME)
            with _progress(total, total, "verify") as report:
                report(verify_staged(r, done, keys_dir / "owner.pub", layout_origin))
                failpoint("verify")
            staged = None
            if tuf is not None:
                from release import repository

                repo, tuf_keys = tuf
                names = sorted(p.name for p in r.out.iterdir())
                products = repository.product_files(ws, names)
                staged = repository.add_release(repo, r.out, ws.version, products, tuf_keys, repository.utc_now())
                failpoint("repository:staged")
            with signals_deferred():
                artifacts_dir.parent.mkdir(parents=True, exist_ok=True)
                publish(r.out, artifacts_dir)
                published = True
                if staged is not None:
                    staged.commit()
                    repository.publish_trusted_root(keys_dir, staged.repository)
                    print(f"TUF repository release/{repository.REPOSITORY_DIRNAME}/: {staged.repository.describe()}")
        except KeyboardInterrupt:
            raise Interrupted(published) from None
        finally:
            if early is not None:
                early.stop()
            if gates is not None:
                gates.stop()
            for builder in builders:
                builder.stop()
            shutil.rmtree(staging, ignore_errors=True)
    return artifacts_dir


def _load_codesigner(keys_dir: Path) -> CodeSigner:
    """:func:`authenticode.load_codesigner`, its module imported by the thread that calls it (not the run's own)."""
    from release import authenticode

    return authenticode.load_codesigner(keys_dir)


def check_committed(root: Path, commit: str | None) -> None:
    """The other builders build the commit: refuse a tree without git, or with changes not committed."""
    if commit is None:
        raise BadInputError(
            f"{root} is not a git checkout: the second builder rebuilds the source commit",
            hint="release from a git clone, or pass --single-builder for a development release of one builder",
        )
    proc = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    changed = [line[3:] for line in proc.stdout.splitlines()]
    if proc.returncode != 0 or changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise BadInputError(
            f"the working tree differs from commit {commit[:12]} ({listed or 'git status failed'}): "
            "the second builder rebuilds the commit, so both would not build the same source",
            hint="commit (or stash) the changes, or pass --single-builder for a development release of one builder",
        )


def check_local_builder(folder: Path) -> None:
    """A builder run on this machine needs its private keys here (``make release`` with development keys)."""
    from release.signers import has_private_key

    missing = [r for r in attest.BUILDER_ROLES if not has_private_key(folder, r)]
    if missing:
        raise BadInputError(
            f"{folder}: the private keys of that builder ({', '.join(m + '.pem' for m in missing)}) are not here",
            hint="run that builder on its own machine and bring its links (README: a second builder on another "
            "machine), or pass --single-builder for a development release of one builder",
        )


def _git_all(commands: Sequence[Sequence[str]]) -> bool:
    return all(subprocess.run(cmd, capture_output=True, check=False).returncode == 0 for cmd in commands)


def _die_with_parent() -> Callable[[], object]:
    """What a child runs before it starts: be killed when this process dies (a crashed run leaves no builder
    behind). ``prctl`` is resolved here, in this process: the child only calls it."""
    import ctypes  # only a run with other builders starts such a child

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _git_clean_at(src: Path, commit: str) -> bool:
    """``src`` is a checkout of exactly ``commit`` with nothing else in it (not even ignored files)."""
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    extra = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=all", "--ignored"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return head.stdout.strip() == commit and extra.returncode == 0 and not extra.stdout.strip()


class OtherBuilder:
    """Another, independent builder run on this machine: it rebuilds and repackages; its links join the release.

    It works in its own checkout of ``commit`` at another path (cloned once,
    then reset and cleaned to the commit each run: :meth:`checkout`), runs
    that checkout's own ``step.py builder`` (its code, not this process's)
    with its own keys, cargo target directory and sandbox, and receives
    nothing from this builder but the gates' report and link. It runs while this builder
    builds (:meth:`start` after the gates, :meth:`finish` before the verify
    step). Only its links are kept: the layout makes in-toto refuse the
    release unless they record the same materials and products as this
    builder's.
    """

    def __init__(self, r: Context, keys: Path, commit: str) -> None:
        self.r, self.keys, self.commit = r, keys, commit
        self.home = r.staging / keys.name  # this run's: the hand-off and the log
        # Its checkout and cargo target directory stay, at a path of their own, so cargo reuses what it built.
        builders = os.environ.get(BUILDERS_DIR_VARIABLE)
        self.place = (Path(builders) if builders else r.target_dir / "builders") / keys.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock: int | None = None
        self.started = 0.0
        self.src = self.place / "src"
        # With Windows binaries, it builds, then packs the binaries this builder's codesign step signed.
        self.signs = bool(attest.codesigned_binaries(r.ws))
        self.handed = threading.Event()
        self.lock_proc = threading.Lock()  # stop() and a phase's start never cross
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.code = 1
        self.error: BaseException | None = None
        self.log = self.home / "output-build.log"

    def checkout(self) -> Path:
        """The builder's own checkout of exactly ``commit``, at another path: cloned once, then reset and cleaned.

        Nothing of an earlier run survives in it (``git clean -ffdx``); a
        checkout that is not exactly the commit is cloned afresh.
        """
        src = self.place / "src"
        root = str(self.r.ws.root)
        self.place.mkdir(parents=True, exist_ok=True)
        self.lock = os.open(self.place / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)  # one run at a time in this checkout (another may be waiting)
        reuse = [["git", "-C", str(src), "fetch", "--quiet", "--no-tags", root, "HEAD"],
                 ["git", "-C", str(src), "checkout", "--quiet", "--force", "--detach", self.commit],
                 ["git", "-C", str(src), "clean", "-ffdxq"]]  # fmt: skip
        fresh = [["git", "clone", "--quiet", "--no-hardlinks", "--no-checkout", root, str(src)],
                 ["git", "-C", str(src), "checkout", "--quiet", "--detach", self.commit]]  # fmt: skip
        if (src / ".git").is_dir() and _git_all(reuse) and _git_clean_at(src, self.commit):
            return src
        shutil.rmtree(src, ignore_errors=True)
        src.parent.mkdir(parents=True, exist_ok=True)
        if not _git_all(fresh) or not _git_clean_at(src, self.commit):
            raise ToolchainError(f"{self.keys.name}: cannot check out the source commit {self.commit[:12]} in {src}")
        return src

    def start(self) -> None:
        """Start the builder's build (and, with no Windows binary to sign, its packagers) after the gates."""
        r, work = self.r, self.home / "work"
        self.started = time.monotonic()
        self.src = self.checkout()
        (work / "out").mkdir(parents=True)
        gates = load_done(r, attest.STEP_GATES)
        for path in (r.out / GATES_REPORT, gates.link.path):
            shutil.copy2(path, work / "out" / path.name)
        phases = [[attest.STEP_BUILD], ["packagers"]] if self.signs else [["builder"]]
        self.thread = threading.Thread(target=self._run, args=(phases,), name=f"builder-{self.keys.name}", daemon=True)
        self.thread.start()

    def hand_signed(self) -> None:
        """This builder's codesign step is done: hand its link and signed binaries on; the packagers may start."""
        work = self.home / "work"
        link = load_done(self.r, attest.STEP_CODESIGN).link.path
        shutil.copy2(link, work / "out" / link.name)
        shutil.copytree(self.r.signed_root, work / "signed")
        self.handed.set()

    def _run(self, phases: list[list[str]]) -> None:
        """The builder's processes, one per phase; the packagers wait for the signed binaries."""
        try:
            for n, phase in enumerate(phases):
                if n:
                    self.handed.wait()
                    if self.stopping:
                        return
                self.code = self._phase(phase)
                if self.code != 0:
                    return
        except BaseException as e:  # raised by finish(), in the pipeline's thread
            self.error = e

    def _phase(self, steps: list[str]) -> int:
        r, work = self.r, self.home / "work"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RANSOMEYE_") or k == "RANSOMEYE_FAILPOINT"}
        env["SOURCE_DATE_EPOCH"] = str(r.epoch)
        unsandboxed = [] if r.sandbox.enabled else ["--no-sandbox"]
        cmd = [sys.executable, str(self.src / STEP_SCRIPT), *steps, "--work", str(work), "--keys-dir", str(self.keys),
               "--target-dir", str(self.place / "target"), *unsandboxed]  # fmt: skip
        self.log = self.home / f"output-{steps[0]}.log"  # the failing phase's log is the one quoted
        with self.lock_proc, self.log.open("wb") as log:
            if self.stopping:
                return 1
            self.proc = subprocess.Popen(
                cmd, cwd=self.src, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=_die_with_parent(),
            )  # fmt: skip
        return self.proc.wait()

    def finish(self) -> str:
        """Wait for the builder; raise its error as its class; copy its links into the staged release."""
        if self.thread is None:
            self.start()
            if self.signs:
                self.hand_signed()  # finish() runs after every step of this builder, codesign included
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        code = self.code
        if code < 0:
            os.kill(os.getpid(), -code)  # killed: the pipeline dies the same way
        if code != 0:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith("[")]  # fmt: skip
            cls = {c: k for k, c in EXIT_CODES.items()}.get(code, SystemFailure)
            raise cls(f"the builder {self.keys.name} failed: {lines[0] if lines else f'exit {code}'}",
                      hint="\n".join(lines[1:]) or None)  # fmt: skip
        from release.keys import load_public_key, public_key_path

        out = self.home / "work" / "out"
        names = {attest.link_filename(step, load_public_key(public_key_path(self.keys, attest.step_role(step))))
                 for step in builder_steps(self.r.ws)}  # fmt: skip
        for name in sorted(names):
            if not (out / name).is_file():
                raise VerificationError(f"the builder {self.keys.name} wrote no {name}")
            shutil.copy2(out / name, self.r.out / name)
        took = time.monotonic() - self.started
        return f"{len(names)} links from its own checkout of {self.commit[:12]}, keys and sandbox ({took:.1f}s)"

    def stop(self) -> None:
        """Stop a builder still running (this run failed); release its checkout."""
        with self.lock_proc:
            self.stopping = True
            self.handed.set()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        if self.thread is not None:
            self.thread.join()
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done (the publish is never cut in half)."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


class _progress:
    """Print ``[i/n] name`` then ``ok <seconds> <summary>`` or ``FAILED after <seconds>``."""

    def __init__(self, i: int, total: int, name: str) -> None:
        self.label = f"[{i}/{total}] {name:<22}"
        self.summary = ""

    def __enter__(self) -> Callable[[str], None]:
        print(self.label, end="", flush=True)
        self.started = time.monotonic()

        def done(summary: str) -> None:
            self.summary = summary

        return done

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        elapsed = time.monotonic() - self.started
        if exc_type is None:
            print(f"ok {elapsed:6.1f}s  {self.summary}", flush=True)
        else:
            print(f"FAILED after {elapsed:.1f}s", flush=True)
