"""The release orchestrator: gates, build, package, sign, checksums, publish.

``python3 release/builder/build.py`` turns the workspace into the release in
``release/artifacts/``: four archives, their minisign signatures, and a signed
``SHA256SUMS``. Every step works in a private staging directory with declared
inputs and outputs; the release folder is replaced atomically only after all
steps succeeded, so a failure anywhere leaves it exactly as it was. A second
build started while one runs fails at once.

Steps, in order: gates, build, package-core, package-agent-linux,
package-agent-windows, package-dpi, sign, checksums.

Exit codes: 0 published; 1 a step failed; 2 bad input (config, key,
passphrase); 3 toolchain missing; 4 gates failed or forbidden content;
5 another build is running; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography")

from release.archive import ArtifactDigest
from release.builder.packager_agent import package_edge
from release.builder.packager_core import BUNDLE_ID as CORE_ID
from release.builder.packager_core import package_core
from release.builder.signer import ROLE as SIGNING_ROLE
from release.builder.signer import sign_all, sign_digest, write_minisign_pub
from release.cargo import HOST_TARGET, Toolchain, cargo_build, find_toolchain
from release.cli import run
from release.errors import GateFailure, InjectedFault, ToolchainError, VerificationError
from release.keys import DEV_MARKER, KeyPair, load_private_key
from release.manifests.generate_hash_list import SUMS_NAME, parse, write_hash_list
from release.products import Workspace, load_workspace, repo_root
from release.source import source_date_epoch
from release.staging import build_lock, clean_stale, new_staging, publish

GATES_SCRIPT = Path("governance") / "gates" / "check_gates.py"
GATES_BANNER = "⛔ RELEASE ABORTED: GATES FAILED"
FAILPOINT_VARIABLE = "RANSOMEYE_FAILPOINT"


@dataclass
class Release:
    """The state of one release run, shared by its steps."""

    ws: Workspace
    staging: Path
    keys_dir: Path
    target_dir: Path
    epoch: int
    signing_key: KeyPair
    toolchains: dict[str, Toolchain]
    artifacts: list[ArtifactDigest] = field(default_factory=list)
    signatures: list[ArtifactDigest] = field(default_factory=list)

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
        return self.staging / "gates-report.json"

    @property
    def log(self) -> Path:
        return self.staging / "cargo.log"


def step_gates(r: Release) -> str:
    """Run the gate script; raise :class:`GateFailure` (with its output) if it fails."""
    script = r.ws.root / GATES_SCRIPT
    cmd = [sys.executable, str(script), "--root", str(r.ws.root), "--report", str(r.gates_report)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise GateFailure(GATES_BANNER, hint=f"{script} could not run: {e}") from e
    if proc.returncode != 0:
        details = (proc.stdout + proc.stderr).strip() or f"{script} exited {proc.returncode}"
        raise GateFailure(GATES_BANNER, hint=f"{script} exited {proc.returncode}:\n{details}")
    passed = sum(1 for line in proc.stdout.splitlines() if line.startswith("PASS"))
    return f"{passed} gates passed"


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


def step_build(r: Release) -> str:
    """Build every target; copy the declared binaries into ``bin/<target>/``."""
    for target, tc in r.toolchains.items():
        needed = sorted({b for bundle in r.ws.bundles if bundle.target == target for b in bundle.binaries})
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
            shutil.copyfile(src, dest / src.name)
            os.chmod(dest / src.name, 0o755)  # noqa: S103 - an executable
            if target == HOST_TARGET:
                _check_version(dest / src.name, name, r.ws.version)
    return ", ".join(f"{t}: {tc.version}" for t, tc in r.toolchains.items())


def _package_step(bundle_id: str) -> Callable[[Release], str]:
    def step(r: Release) -> str:
        if bundle_id == CORE_ID:
            digest = package_core(r.ws, r.bin_root, r.out, r.epoch)
        else:
            digest = package_edge(r.ws, bundle_id, r.bin_root, r.out, r.epoch)
        r.artifacts.append(digest)
        return f"{digest.name} ({_size(digest.size)})"

    step.__doc__ = f"Package the {bundle_id} bundle into the release folder."
    return step


def step_sign(r: Release) -> str:
    """Sign every archive (``<archive>.minisig``)."""
    r.signatures = sign_all(r.signing_key, r.artifacts, r.ws.version, r.epoch)
    return f"{len(r.signatures)} signatures"


def step_checksums(r: Release) -> str:
    """Write and sign ``SHA256SUMS``; check it lists exactly what the steps produced."""
    produced = r.artifacts + r.signatures
    sums = write_hash_list(r.out, produced)
    listed = parse(sums.path.read_text(), SUMS_NAME)
    expected = {d.name: d.sha256 for d in produced}
    if listed != expected:
        raise VerificationError(f"{SUMS_NAME} does not match what the steps produced")
    sign_digest(r.signing_key, sums, r.ws.version, r.epoch)
    return f"{len(listed)} entries"


STEPS: tuple[tuple[str, Callable[[Release], str]], ...] = (
    ("gates", step_gates),
    ("build", step_build),
    ("package-core", _package_step("core")),
    ("package-agent-linux", _package_step("agent-linux")),
    ("package-agent-windows", _package_step("agent-windows")),
    ("package-dpi", _package_step("dpi")),
    ("sign", step_sign),
    ("checksums", step_checksums),
)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_VARIABLE) == name:
        raise InjectedFault(f"failure injected after step {name} ({FAILPOINT_VARIABLE}={name})")


def run_release(root: Path, keys_dir: Path, target_dir: Path) -> Path:
    """Run every step and publish; return the release folder.

    Side effects: runs the gates and cargo, writes a staging directory under
    ``release/.staging/`` and, on success only, replaces ``release/artifacts/``.
    """
    ws = load_workspace(root)
    release_dir = ws.root / "release"
    artifacts_dir = ws.root / ws.artifacts_dir
    with build_lock(release_dir):
        clean_stale(release_dir)
        # Preflight: everything that can be checked before work starts.
        epoch = source_date_epoch(ws.root)
        signing_key = load_private_key(keys_dir, SIGNING_ROLE)
        write_minisign_pub(keys_dir, signing_key.public)
        toolchains = {t: find_toolchain(ws, t) for t in ws.targets()}
        staging = new_staging(release_dir)
        try:
            r = Release(ws, staging, keys_dir, target_dir, epoch, signing_key, toolchains)
            r.out.mkdir()
            print(f"RansomEye {ws.version}: release build (SOURCE_DATE_EPOCH={epoch})", flush=True)
            for i, (name, fn) in enumerate(STEPS, 1):
                started = time.monotonic()
                print(f"[{i}/{len(STEPS)}] {name:<22}", end="", flush=True)
                try:
                    summary = fn(r)
                    _failpoint(name)
                except BaseException:
                    print(f"FAILED after {time.monotonic() - started:.1f}s", flush=True)
                    raise
                print(f"ok {time.monotonic() - started:6.1f}s  {summary}", flush=True)
            publish(r.out, artifacts_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return artifacts_dir


def _summary(ws: Workspace, artifacts_dir: Path, keys_dir: Path) -> str:
    lines = [f"Published RansomEye {ws.version} to {artifacts_dir}:"]
    for p in sorted(artifacts_dir.iterdir()):
        if not p.name.startswith("."):
            lines.append(f"  {p.name:<48} {_size(p.stat().st_size):>10}")
    pub = keys_dir / "release.minisign.pub"
    lines.append(f"Verify: cd {artifacts_dir} && sha256sum -c {SUMS_NAME} && minisign -V -p {pub} -m <file>")
    if (keys_dir / DEV_MARKER).exists():
        bar = "!" * 72
        lines += [bar, "!! Signed with DEVELOPMENT keys: for testing only, never for customers.", bar]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        root = repo_root()
        parser = argparse.ArgumentParser(prog="build", description=__doc__.split("\n\n")[0] if __doc__ else None)
        parser.add_argument(
            "--keys-dir", type=Path, default=root / "keys", help="directory of the keys (default: keys/)"
        )
        parser.add_argument(
            "--target-dir",
            type=Path,
            default=Path(os.environ.get("CARGO_TARGET_DIR", root / "target")),
            help="cargo's target directory, kept between builds (default: target/)",
        )
        ns = parser.parse_args(args)
        started = time.monotonic()
        artifacts_dir = run_release(root, ns.keys_dir.resolve(), ns.target_dir.resolve())
        print(_summary(load_workspace(root), artifacts_dir, ns.keys_dir))
        print(f"Done in {time.monotonic() - started:.1f}s.")
        return 0

    return run("build", inner, argv)


if __name__ == "__main__":
    sys.exit(main())
