"""One measured run of each contender: the pipeline, the shell baseline, the customer's verification.

The pipeline is ``release/builder/build.py --unsafe-prebuilt-binaries`` run in
a repository copy under :mod:`bench.probe` (exact peak RSS and bytes read of
the pipeline process) and :func:`bench.measure.run_measured` (stage times
from its step lines, memory and CPU over time, the whole process tree). The
baseline is ``bench/baseline.sh``. The verification is the stock
``in-toto-verify`` in a hard-linked copy of the published folder, next to
``sha256sum`` over the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Measured, Sample, run_measured, wait_for_quiet
from release.audit.intoto import verifier_env

BENCH = Path(__file__).resolve().parent
PROBE = BENCH / "probe.py"
BASELINE = BENCH / "baseline.sh"
VERIFY_PROFILE = BENCH / "verify_profile.py"
EPOCH = 1_700_000_000
LAYOUT = "root.layout"
SUMS = "SHA256SUMS"
VERIFY_STEP = "verify"
_STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+)\s+ok\s+([0-9.]+)s")
_HEADER = re.compile(r"^RansomEye \S+: release build of ")


class BenchError(Exception):
    """A contender failed or could not run; the message says which and why."""


def settle(quiet_wait: float) -> None:
    """Before a timed run: flush dirty pages (no run pays for the previous one's writeback),
    then wait up to ``quiet_wait`` seconds for other processes to leave the CPUs idle."""
    os.sync()
    if quiet_wait > 0:
        wait_for_quiet(quiet_wait)


def pipeline_env() -> dict[str, str]:
    """The environment of a pipeline run: fixed epoch, no injected faults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANSOMEYE_")}
    env["SOURCE_DATE_EPOCH"] = str(EPOCH)
    return env


def in_toto_verify() -> Path:
    """The stock ``in-toto-verify`` of the environment running the benchmark."""
    beside = Path(sys.executable).parent / "in-toto-verify"
    found = beside if beside.is_file() else (Path(w) if (w := shutil.which("in-toto-verify")) else None)
    if found is None:
        raise BenchError("in-toto-verify not found (run `make setup`, then use .venv/bin/python)")
    return found


@dataclass(frozen=True)
class Stage:
    """A stretch of the pipeline run between two of its output lines."""

    name: str
    wall_s: float
    cpu_s: float  # the pipeline process (all its threads)
    children_cpu_s: float  # processes it ran (gates script, in-toto-verify and theirs)
    peak_rss_kib: int  # the pipeline process
    peak_tree_rss_kib: int  # the pipeline process and its descendants together

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "children_cpu_s": round(self.children_cpu_s, 3),
            "cores_busy": round((self.cpu_s + self.children_cpu_s) / self.wall_s, 2) if self.wall_s > 0 else None,
            "peak_rss_mib": round(self.peak_rss_kib / 1024, 1),
            "peak_tree_rss_mib": round(self.peak_tree_rss_kib / 1024, 1),
        }


def _at(samples: tuple[Sample, ...], t: float, final: Sample) -> Sample:
    """The first sample taken at or after ``t`` (the final state if none)."""
    for s in samples:
        if s.t >= t:
            return s
    return final


def stages(m: Measured, probe: dict[str, Any]) -> list[Stage]:
    """Split a pipeline run into stages at its output lines.

    Stages: ``startup`` (interpreter, imports, preflight: up to the header
    line), one per sequential step, one ``package`` for the parallel packaging
    steps (their lines arrive together when all are done), ``verify`` (layout
    written, then the customer's verification), and ``publish+exit``.
    """
    final = Sample(m.wall_s, 0, 0, float(probe["self_cpu_s"]), float(probe["children_cpu_s"]) + m.sandboxed_cpu_s)
    marks: list[tuple[str, float]] = []
    for line in m.lines:
        if _HEADER.match(line.text):
            marks.append(("startup", line.t))
        elif match := _STEP_LINE.match(line.text):
            name = match.group(3)
            group = name.split("-")[0]
            if marks and marks[-1][0] == group and group != name:
                marks[-1] = (group, line.t)  # a parallel stage: ends with its last line
            else:
                marks.append((group if group != name else name, line.t))
    marks.append(("publish+exit", m.wall_s))
    out: list[Stage] = []
    start = 0.0
    for name, end in marks:
        a, b = _at(m.samples, start, final), _at(m.samples, end, final)
        before = [s for s in m.samples if s.t <= end]
        inside = [s for s in m.samples if start <= s.t <= end] or before[-1:] or [b]
        out.append(
            Stage(
                name=name,
                wall_s=end - start,
                cpu_s=b.cpu_s - (a.cpu_s if start > 0 else 0.0),
                children_cpu_s=b.children_cpu_s - (a.children_cpu_s if start > 0 else 0.0),
                peak_rss_kib=max(s.rss_kib for s in inside),
                peak_tree_rss_kib=max(s.tree_rss_kib for s in inside),
            )
        )
        start = end
    return out


def step_seconds(m: Measured) -> dict[str, float]:
    """The seconds each step printed (``[i/n] name  ok  X.Xs``)."""
    out: dict[str, float] = {}
    for line in m.lines:
        if match := _STEP_LINE.match(line.text):
            out[match.group(3)] = float(match.group(4))
    return out


@dataclass(frozen=True)
class PipelineRun:
    measured: Measured
    probe: dict[str, Any]
    steps: dict[str, float]
    stages: list[Stage]

    @property
    def wall_s(self) -> float:
        return self.measured.wall_s

    @property
    def verify_s(self) -> float:
        return self.steps.get(VERIFY_STEP, 0.0)

    @property
    def minus_verify_s(self) -> float:
        return self.wall_s - self.verify_s

    def peak_tree_kib(self) -> int:
        """The pipeline's peak memory: the largest of the sampled tree sum and the exact per-process peaks."""
        return max(self.measured.tree_peak_kib, int(self.probe["self_hwm_kib"]), self.measured.maxrss_kib)


def run_pipeline(repo: Path, bins: Path, scratch: Path, quiet_wait: float = 0.0) -> PipelineRun:
    """Run the pipeline once (minus cargo) in ``repo`` on the binaries in ``bins``; raise if it fails."""
    probe_out = scratch / "probe.json"
    probe_out.unlink(missing_ok=True)
    build = repo / "release" / "builder" / "build.py"
    cmd = [sys.executable, str(PROBE), str(probe_out), str(build), "--unsafe-prebuilt-binaries", str(bins)]
    settle(quiet_wait)
    m = run_measured(cmd, cwd=repo, env=pipeline_env())
    if m.returncode != 0 or not probe_out.is_file():
        raise BenchError(f"the pipeline failed (exit {m.returncode}):\n{m.stdout}\n{m.stderr}")
    probe: dict[str, Any] = json.loads(probe_out.read_text())
    return PipelineRun(m, probe, step_seconds(m), stages(m, probe))


def run_baseline(
    trees: Path, out: Path, specs: list[tuple[str, str]], seckey: Path, quiet_wait: float = 0.0
) -> Measured:
    """Run ``baseline.sh`` once into a fresh ``out``; raise if it fails."""
    if out.exists():
        shutil.rmtree(out)
    cmd = ["bash", str(BASELINE), str(trees), str(out), str(EPOCH), str(seckey), *(f"{f}:{s}" for f, s in specs)]
    settle(quiet_wait)
    m = run_measured(cmd, cwd=trees)
    if m.returncode != 0:
        raise BenchError(f"the baseline failed (exit {m.returncode}):\n{m.stderr}")
    return m


def release_files(folder: Path) -> list[str]:
    """The files a customer checks: every file ``SHA256SUMS`` lists, ``SHA256SUMS`` and its signature."""
    listed = [line.split("  ", 1)[1] for line in (folder / SUMS).read_text().splitlines() if line]
    return [*listed, SUMS, SUMS + ".minisig"]


def fresh_copy(published: Path, dest: Path) -> Path:
    """A hard-linked copy of the published folder (what a customer downloaded)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in published.iterdir():
        if p.is_file() and not p.name.startswith("."):
            os.link(p, dest / p.name)
    return dest


def verify_command(owner_pub: Path) -> list[str]:
    """The customer's command, as the README gives it (with a long inspection timeout)."""
    return [
        str(in_toto_verify()),
        *("--layout", LAYOUT, "--verification-keys", str(owner_pub), "--inspection-timeout", "3600"),
    ]


@dataclass(frozen=True)
class VerifyRun:
    in_toto: Measured
    sha256sum: Measured


def run_verify(published: Path, owner_pub: Path, scratch: Path, quiet_wait: float = 0.0) -> VerifyRun:
    """Time ``in-toto-verify`` on a copy of the release, and ``sha256sum`` over the same files."""
    folder = fresh_copy(published, scratch / "verify")
    files = release_files(folder)
    settle(quiet_wait)
    sums = run_measured(["sha256sum", *files], cwd=folder)
    if sums.returncode != 0:
        raise BenchError(f"sha256sum failed: {sums.stderr}")
    settle(quiet_wait)
    verify = run_measured(verify_command(owner_pub), cwd=folder, env=verifier_env())
    return VerifyRun(verify, sums)


def profile_verify(published: Path, owner_pub: Path, scratch: Path) -> dict[str, Any]:
    """Run ``in-toto-verify`` once under :mod:`bench.verify_profile`; return its report."""
    folder = fresh_copy(published, scratch / "verify-profile")
    out = scratch / "verify-profile.json"
    cmd = [sys.executable, str(VERIFY_PROFILE), str(out), "--", *verify_command(owner_pub)]
    m = run_measured(cmd, cwd=folder, env=verifier_env())
    if not out.is_file():
        raise BenchError(f"the verification profile failed (exit {m.returncode}):\n{m.stderr}")
    report: dict[str, Any] = json.loads(out.read_text())
    report["wall_s"] = m.wall_s
    shutil.rmtree(folder)
    return report


# --- the customer's fetch ---------------------------------------------------------------------------

FETCH = Path("release") / "fetch.py"
FETCH_BASELINE = BENCH / "fetch_baseline.sh"
FETCH_PRODUCT = "core"


@dataclass(frozen=True)
class Mirror:
    """A TUF repository holding the benchmark's release, and the keys folder whose ``root.json`` customers trust."""

    repository: Path
    keys: Path
    version: str
    archive: str  # the fetched product's archive

    @property
    def targets(self) -> Path:
        return self.repository / "targets" / self.version


def make_mirror(repo: Path, published: Path, dest: Path) -> Mirror:
    """Publish the release in ``published`` into a new TUF repository at ``dest`` (untimed), as a release does."""
    from release import repository as tuf
    from release.products import load_workspace
    from release.signers import load_role_key

    if dest.exists():
        shutil.rmtree(dest)
    keys = shutil.copytree(repo / "keys", dest / "keys")
    (keys / tuf.TRUSTED_ROOT_NAME).unlink(missing_ok=True)
    now = tuf.utc_now()
    repository, signers = tuf.prepare(dest / "repository", keys, load_role_key(keys, "release"), now)
    ws = load_workspace(repo)
    names = sorted(p.name for p in published.iterdir() if p.is_file() and not p.name.startswith("."))
    tuf.add_release(repository, published, ws.version, tuf.product_files(ws, names), signers, now).commit()
    tuf.publish_trusted_root(keys, repository)
    bundle = next(b for b in ws.bundles if b.id == FETCH_PRODUCT)
    return Mirror(dest / "repository", keys, ws.version, bundle.archive_name(ws.version))


@dataclass(frozen=True)
class FetchRun:
    fetch: Measured
    stock: Measured


def run_fetch(repo: Path, mirror: Mirror, scratch: Path, quiet_wait: float = 0.0) -> FetchRun:
    """Time the customer's fetch of one product (a new client each time), and its stock-tool equivalent."""
    for d in ("fetched", "fetch-state", "fetched-stock"):
        shutil.rmtree(scratch / d, ignore_errors=True)
    cmd = [sys.executable, str(repo / FETCH), "--root", str(mirror.keys / "root.json"),
           "--mirror", mirror.repository.as_uri(), "--product", FETCH_PRODUCT,
           "--out", str(scratch / "fetched"), "--state", str(scratch / "fetch-state")]  # fmt: skip
    settle(quiet_wait)
    fetch = run_measured(cmd, cwd=scratch, env=verifier_env())
    if fetch.returncode != 0:
        raise BenchError(f"the fetch failed (exit {fetch.returncode}):\n{fetch.stderr}")
    stock_cmd = ["bash", str(FETCH_BASELINE), str(mirror.targets), str(scratch / "fetched-stock"),
                 str(mirror.keys / "release.minisign.pub"), mirror.archive]  # fmt: skip
    settle(quiet_wait)
    stock = run_measured(stock_cmd, cwd=scratch)
    if stock.returncode != 0:
        raise BenchError(f"the stock fetch failed (exit {stock.returncode}):\n{stock.stderr}")
    return FetchRun(fetch, stock)
