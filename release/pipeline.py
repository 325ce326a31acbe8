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

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from in_toto.models.metadata import Metablock

from release import attest
from release.archive import ArtifactDigest, hash_file, link_hashed
from release.attest import GATES_REPORT, LAYOUT_NAME, StepRecord
from release.audit.checks import audit
from release.binary_inputs import BinaryInputs, binary_inputs, check_build_scripts, forbidden_sources
from release.bundle import package
from release.cargo import HOST_TARGET, Toolchain, cargo_build, find_toolchain
from release.checksums import SUMS_NAME, parse, write_hash_list
from release.errors import BadInputError, GateFailure, Interrupted, ToolchainError, VerificationError
from release.faults import failpoint
from release.keys import DEV_MARKER, load_public_key, public_key_path
from release.products import Workspace, load_workspace
from release.provenance import build_statement, provenance_name, sign_envelope, write_envelope
from release.sbom import CargoMetadata, bundle_sbom, cargo_metadata, sbom_name, write_sbom
from release.signers import RoleKey, has_private_key, load_role_key
from release.signing import sign_all, sign_digest, write_minisign_pub
from release.source import hash_sources, source_commit, source_date_epoch
from release.staging import build_lock, clean_stale, new_staging, publish

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

    @property
    def out(self) -> Path:
        """The release folder being assembled (published as a whole)."""
        return self.staging / "out"

    @property
    def bin_root(self) -> Path:
        """The build step's products: ``<target>/<binary>``."""
        return self.staging / "bin"

    @property
    def gates_report(self) -> Path:
        """The gates' evidence, shipped in the release folder."""
        return self.out / GATES_REPORT

    @property
    def log(self) -> Path:
        return self.staging / "cargo.log"


# --- what each step hands on: frozen, typed -----------------------------------------------------


@dataclass(frozen=True)
class Gated:
    report: ArtifactDigest


@dataclass(frozen=True)
class Built:
    metadata: CargoMetadata  # with each binary's source files (``inputs``) unless the binaries were prebuilt


@dataclass(frozen=True)
class Packaged:
    archive: ArtifactDigest
    sbom: ArtifactDigest


@dataclass(frozen=True)
class Attested:
    envelope: ArtifactDigest


@dataclass(frozen=True)
class Signed:
    payloads: tuple[ArtifactDigest, ...]  # archives, SBOMs and the gates report, by name
    signatures: tuple[ArtifactDigest, ...]


@dataclass(frozen=True)
class Summed:
    sums: ArtifactDigest
    signature: ArtifactDigest


Result = Gated | Built | Packaged | Attested | Signed | Summed
R = TypeVar("R", Gated, Built, Packaged, Attested, Signed, Summed)


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a step returns: its summary line, the evidence for its link, and its typed result."""

    summary: str
    record: StepRecord
    result: R


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


def step_gates(r: Context, earlier: Earlier) -> Outcome[Gated]:
    """Run the gate script on the hashed source; raise :class:`GateFailure` if it fails."""
    materials = hash_sources(r.ws)
    script = r.ws.root / GATES_SCRIPT
    cmd = [sys.executable, str(script), "--root", str(r.ws.root), "--report", str(r.gates_report)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        raise GateFailure(GATES_BANNER, hint=f"{script} could not run: {e}") from e
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
    """Build every target; copy the declared binaries into ``bin/<target>/``; prove what each was compiled from.

    Before cargo runs, a build script in a crate the declaration does not
    allow is refused (it would run arbitrary code). After each target is
    built, every binary's dep-info is judged (:mod:`release.binary_inputs`):
    a core binary compiled from an ``edge/`` file, or any binary from a file
    outside its crates, fails the step with :class:`PackagingError` (exit 6).
    The link's environment records each binary's sources under
    ``binary-inputs`` (each one a material of the link), and the SBOMs list them.
    """
    # Hashed again, not taken from the gates: the link records what the build read, so a source changed
    # after the gates ran fails the layout's rule (the build's materials must match the gates').
    materials = hash_sources(r.ws)
    materials[GATES_REPORT] = result_of(earlier, attest.STEP_GATES, Gated).report.sha256
    metadata = cargo_metadata(r.ws.root, r.toolchains[HOST_TARGET].cargo)
    placed, inputs = _compile(r, metadata, materials)
    # Hashing the binaries is most of this step when cargo has nothing to do: one thread per core
    # (hashlib releases the GIL), SHA-256 only (binaries are recorded, never signed).
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="hash") as pool:
        hashes = list(pool.map(lambda job: link_hashed(job[1], job[2]), placed))
    products = {f"bin/{target}/{dst.name}": h for (target, _, dst), h in zip(placed, hashes, strict=True)}
    if r.prebuilt is not None:
        record = StepRecord(
            name=attest.STEP_BUILD,
            command=["unsafe-prebuilt-binaries"],
            materials=materials,
            products=products,
            environment={"unsafe-prebuilt-binaries": True},
        )
        return Outcome(f"UNSAFE: {len(products)} prebuilt binaries, not built from the source", record, Built(metadata))
    for target, _, dst in placed:
        if target == HOST_TARGET:
            _check_version(dst, dst.name, r.ws.version)
    metadata = dataclasses.replace(
        metadata,
        inputs=MappingProxyType({i.product: tuple((p, materials[p]) for p in i.sources) for i in inputs}),
    )
    record = StepRecord(
        name=attest.STEP_BUILD,
        command=["cargo", "build", "--release", "--offline", "--locked"],
        materials=materials,
        products=products,
        environment=_build_environment(r, inputs),
    )
    sources = len({p for i in inputs for p in i.sources})
    versions = ", ".join(f"{t}: {tc.version}" for t, tc in r.toolchains.items())
    summary = f"{versions}; {len(inputs)} binaries from {sources} source files, none forbidden"
    return Outcome(summary, record, Built(metadata))


def _compile(
    r: Context, metadata: CargoMetadata, materials: Mapping[str, str]
) -> tuple[list[tuple[str, Path, Path]], list[BinaryInputs]]:
    """Build each target (or take the prebuilt binaries); judge each binary's sources.

    Returns (target, built binary, its place in ``bin/<target>/``) for every
    declared binary, and what each compiled binary was built from.
    """
    forbidden = {}
    if r.prebuilt is None:
        check_build_scripts(r.ws, metadata)
        forbidden = {b.id: forbidden_sources(r.ws, b) for b in r.ws.bundles if b.forbidden_paths}
    placed: list[tuple[str, Path, Path]] = []
    inputs: list[BinaryInputs] = []
    for target in r.ws.targets():
        needed = sorted({b for bundle in r.ws.bundles if bundle.target == target for b in bundle.binaries})
        if r.prebuilt is not None:
            built = r.prebuilt / target
        else:
            tc = r.toolchains[target]
            built = cargo_build(r.ws, tc, r.target_dir, None if target == HOST_TARGET else needed, r.epoch, r.log)
        dest = r.bin_root / target
        dest.mkdir(parents=True, exist_ok=True)
        exe = ".exe" if "windows" in target else ""
        for name in needed:
            src = built / f"{name}{exe}"
            if not src.is_file():
                raise ToolchainError(
                    f"cargo did not produce {src.name} for {target}", hint="is it a [[bin]] of a crate?"
                )
            if r.prebuilt is None:
                inputs.append(
                    binary_inputs(r.ws, metadata, target, src.name, built, r.target_dir, materials, forbidden)
                )
            placed.append((target, src, dest / src.name))
    return placed, inputs


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


def _package_step(bundle_id: str) -> StepFn:
    def step(r: Context, earlier: Earlier) -> Outcome[Packaged]:
        bundle = r.ws.bundle(bundle_id)
        metadata = result_of(earlier, attest.STEP_BUILD, Built).metadata
        packaged = package(r.ws, bundle, r.bin_root, r.out, r.epoch)
        d = packaged.digest
        tc = r.toolchains.get(bundle.target)
        bom = bundle_sbom(bundle, r.ws.version, d, packaged.contents, metadata, r.epoch, tc.version if tc else None)
        sbom = write_sbom(bom, r.out / sbom_name(bundle, r.ws.version))
        record = StepRecord(
            name=bundle.step,
            command=["package", bundle_id],
            materials=packaged.materials,
            products={d.name: d.sha256, sbom.name: sbom.sha256},
            environment=packaged.link_environment(),
        )
        return Outcome(f"{d.name} ({human_size(d.size)}) + SBOM", record, Packaged(d, sbom))

    step.__doc__ = f"Package the {bundle_id} bundle into the release folder."
    return step


def step_provenance(r: Context, earlier: Earlier) -> Outcome[Attested]:
    """Write the SLSA v1 provenance of the archives, from what the links recorded (DSSE, build key)."""
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
    envelope = write_envelope(sign_envelope(statement, key), r.out / provenance_name(r.ws.version))
    record = StepRecord(
        name=attest.STEP_PROVENANCE,
        command=["slsa-provenance"],
        materials=subjects,
        products={envelope.name: envelope.sha256},
    )
    return Outcome(f"{envelope.name} ({len(subjects)} subjects)", record, Attested(envelope))


def step_sign(r: Context, earlier: Earlier) -> Outcome[Signed]:
    """Sign every archive, SBOM and the gates report (``<file>.minisig``)."""
    packaged = results_of(earlier, Packaged)
    report = result_of(earlier, attest.STEP_GATES, Gated).report
    payloads = sorted([*(p.archive for p in packaged), *(p.sbom for p in packaged), report], key=lambda d: d.name)
    signatures = sign_all(r.keys[attest.RELEASE_ROLE], payloads, r.ws.version, r.epoch)
    record = StepRecord(
        name=attest.STEP_SIGN,
        command=["minisign-sign"],
        materials={d.name: d.sha256 for d in payloads},
        products={d.name: d.sha256 for d in signatures},
    )
    return Outcome(f"{len(signatures)} signatures", record, Signed(tuple(payloads), tuple(signatures)))


def step_checksums(r: Context, earlier: Earlier) -> Outcome[Summed]:
    """Write and sign ``SHA256SUMS`` from the hashes already known (the verify step checks it against the links)."""
    signed = result_of(earlier, attest.STEP_SIGN, Signed)
    produced = [*signed.payloads, *signed.signatures]
    sums = write_hash_list(r.out, produced)
    failpoint("checksums:written")
    sums_sig = sign_digest(r.keys[attest.RELEASE_ROLE], sums, r.ws.version, r.epoch)
    record = StepRecord(
        name=attest.STEP_CHECKSUMS,
        command=["sha256sums"],
        materials={d.name: d.sha256 for d in produced},
        products={sums.name: sums.sha256, sums_sig.name: sums_sig.sha256},
    )
    return Outcome(f"{len(produced)} entries", record, Summed(sums, sums_sig))


def _by_archive(p: Packaged) -> str:
    return p.archive.name


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
    return (
        StepSpec(attest.STEP_GATES, step_gates),
        StepSpec(attest.STEP_BUILD, step_build, after=(attest.STEP_GATES,)),
        *(StepSpec(b.step, _package_step(b.id), after=(attest.STEP_BUILD,)) for b in ws.bundles),
        StepSpec(attest.STEP_PROVENANCE, step_provenance, after=packaging),
        StepSpec(attest.STEP_SIGN, step_sign, after=(attest.STEP_GATES, *packaging)),
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
    after = {s.name: s.after for s in specs}
    wanted: set[str] = set()
    todo = list(spec.after)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(after[name])
    return MappingProxyType({s.name: done[s.name] for s in specs if s.name in wanted})


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _run_step(r: Context, spec: StepSpec, earlier: Earlier) -> Done:
    """Run one step and write its signed link (with its start and finish times)."""
    started = _utc_now()
    outcome = spec.run(r, earlier)
    record = outcome.record
    record = dataclasses.replace(record, environment={**record.environment, "started": started, "finished": _utc_now()})
    link = attest.write_link(record, r.keys[attest.step_role(spec.name)], r.out)
    failpoint(spec.name)
    return Done(outcome.summary, link, outcome.result)


def _run_parallel(
    r: Context, first: int, total: int, stage: Sequence[StepSpec], reads: Mapping[str, Earlier]
) -> dict[str, Done]:
    """Run independent steps on every core; print their lines in order when all are done."""
    workers = min(len(stage), os.cpu_count() or 1)
    outcomes: list[tuple[Done, float] | BaseException] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step") as pool:

        def timed(spec: StepSpec) -> tuple[Done, float]:
            started = time.monotonic()
            return _run_step(r, spec, reads[spec.name]), time.monotonic() - started

        futures = [pool.submit(timed, spec) for spec in stage]
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as e:  # reported below, in step order
                outcomes.append(e)
    for i, (spec, outcome) in enumerate(zip(stage, outcomes, strict=True), first):
        if isinstance(outcome, BaseException):
            print(f"[{i}/{total}] {spec.name:<22}FAILED", flush=True)
        else:
            print(f"[{i}/{total}] {spec.name:<22}ok {outcome[1]:6.1f}s  {outcome[0].summary}", flush=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return {
        spec.name: outcome[0]
        for spec, outcome in zip(stage, outcomes, strict=True)
        if not isinstance(outcome, BaseException)
    }


def run_steps(r: Context, specs: Sequence[StepSpec]) -> dict[str, Done]:
    """Run ``specs`` stage by stage (see :func:`stages`); return every finished step, in declared order."""
    done: dict[str, Done] = {}
    total = len(specs) + 1  # and the verify step
    i = 1
    for stage in stages(specs):
        reads = {spec.name: _earlier(spec, specs, done) for spec in stage}
        if len(stage) > 1:
            done.update(_run_parallel(r, i, total, stage, reads))
        else:
            (spec,) = stage
            with _progress(i, total, spec.name) as report:
                finished = _run_step(r, spec, reads[spec.name])
                report(finished.summary)
            done[spec.name] = finished
        i += len(stage)
    return {spec.name: done[spec.name] for spec in specs}


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
    ``SHA256SUMS``) on the staged folder, which it does not modify.
    """
    check_sums_against_links(r, done)
    report = audit(r.out, owner_pub)
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


def resolve_layout(
    ws: Workspace, keys_dir: Path, keys: dict[str, RoleKey], *, prebuilt: bool = False
) -> tuple[Metablock, str]:
    """The signed root layout this build ships.

    The committed ``layouts/root.layout`` when there is one (its owner
    signature checked against ``keys/owner.pub``, expiry checked, and it must
    authorise the keys this build signs with); otherwise, with development
    keys, a layout signed now with the development owner key.
    """
    committed = ws.root / COMMITTED_LAYOUT
    if committed.exists() and prebuilt:
        raise BadInputError(
            "--unsafe-prebuilt-binaries cannot make a release under the owner's layout (it refuses prebuilt binaries)",
            hint="benchmarks run with development keys and no committed layouts/root.layout",
        )
    if committed.exists():
        metablock = attest.load_layout(committed, load_public_key(keys_dir / "owner.pub"))
        authorised = attest.layout_functionaries(metablock)
        for role in (attest.BUILD_ROLE, attest.RELEASE_ROLE):
            if attest.keyid_of(keys[role].public) not in authorised:
                raise BadInputError(
                    f"{committed}: the layout does not authorise {public_key_path(keys_dir, role)}",
                    hint="the owner signs a new layout for the current functionary keys (layouts/README.md)",
                )
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
    layout = attest.build_layout(
        ws,
        keys[attest.BUILD_ROLE].public,
        keys[attest.RELEASE_ROLE].public,
        attest.expiry(LAYOUT_DAYS_DEV),
        allow_prebuilt=prebuilt,
    )
    origin = "layout signed now with the development owner key"
    return attest.sign_layout(layout, owner), origin + (", UNSAFE: it accepts prebuilt binaries" if prebuilt else "")


def run_release(root: Path, keys_dir: Path, target_dir: Path, prebuilt: Path | None = None) -> Path:
    """Run every step, verify, and publish; return the release folder.

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
        try:
            failpoint("staging:created")
            clean_stale(release_dir, keep=staging)
            # Preflight: everything that can be checked before work starts.
            epoch = source_date_epoch(ws.root)
            keys = {role: load_role_key(keys_dir, role) for role in (attest.BUILD_ROLE, attest.RELEASE_ROLE)}
            write_minisign_pub(keys_dir, keys[attest.RELEASE_ROLE].public)
            layout, layout_origin = resolve_layout(ws, keys_dir, keys, prebuilt=prebuilt is not None)
            targets = (HOST_TARGET,) if prebuilt is not None else ws.targets()  # prebuilt: cargo metadata only
            toolchains = {t: find_toolchain(ws, t) for t in targets}
            r = Context(ws, staging, target_dir, epoch, MappingProxyType(keys), MappingProxyType(toolchains), prebuilt)
            r.out.mkdir()
            commit = source_commit(ws.root)
            print(
                f"RansomEye {ws.version}: release build of {commit or 'a tree without git'} (SOURCE_DATE_EPOCH={epoch})"
            )
            specs = steps(ws)
            done = run_steps(r, specs)
            attest.write_layout(layout, r.out / LAYOUT_NAME)
            total = len(specs) + 1
            with _progress(total, total, "verify") as report:
                report(verify_staged(r, done, keys_dir / "owner.pub", layout_origin))
                failpoint("verify")
            with signals_deferred():
                artifacts_dir.parent.mkdir(parents=True, exist_ok=True)
                publish(r.out, artifacts_dir)
                published = True
        except KeyboardInterrupt:
            raise Interrupted(published) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return artifacts_dir


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
