"""Benchmark the release pipeline (minus cargo) against the same work done with stock tools.

``python3 bench/run.py [--sizes 4,16,64] [--runs 3] [--json PATH]``

For each size S (MiB), synthetic product binaries are generated so that each
of the four archives' inputs totals S (half compressible, half random), then,
``--runs`` times: the pipeline runs on them in a repository copy
(``build.py --unsafe-prebuilt-binaries``), the shell baseline
(``bench/baseline.sh``: tar | gzip -n -6, zip -6, minisign -S, sha256sum)
does the same packaging, signing and checksumming, and the published release
is verified with the stock ``in-toto-verify`` next to ``sha256sum`` over the
same files. It prints a table of medians, ratios, peak memory, the cost per
MiB across sizes and the issue's targets, and writes everything as JSON.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
    from release.bootstrap import ensure_environment

    ensure_environment("in_toto", "cryptography", "matplotlib")

from bench import report as rep  # noqa: E402 - after the bootstrap above
from bench.audit import audit_reads, strace_available  # noqa: E402 - after the bootstrap above
from bench.pipeline import (  # noqa: E402 - after the bootstrap above
    BenchError,
    PipelineRun,
    make_mirror,
    profile_verify,
    release_files,
    run_baseline,
    run_fetch,
    run_pipeline,
)
from bench.pipeline import run_verify as run_verify_once  # noqa: E402 - after the bootstrap above
from bench.plot import plot  # noqa: E402 - after the bootstrap above
from bench.synth import make_binaries, make_trees  # noqa: E402 - after the bootstrap above
from bench.threshold2 import bench_threshold2  # noqa: E402 - after the bootstrap above
from bench.worktree import copy_worktree  # noqa: E402 - after the bootstrap above
from release.pipeline import UNSAFE_PREBUILT_DIR  # noqa: E402 - after the bootstrap above
from release.products import Workspace, load_workspace  # noqa: E402 - after the bootstrap above

MiB = 1 << 20
DEFAULT_SIZES = (4, 16, 64)
TOOLS = ("tar", "gzip", "zip", "sha256sum", "minisign", "git")


def _git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def export_head(dest: Path) -> Path:
    """Export the committed tree of ``HEAD`` (``git archive``) to ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    (dest / "release" / "artifacts").mkdir(parents=True, exist_ok=True)
    return dest


def prepare_repo(dest: Path, source: str) -> tuple[Path, dict[str, Any]]:
    """A repository copy with development keys; return it and a description of its source."""
    commit = _git("rev-parse", "--short", "HEAD")
    if source == "head":
        repo = export_head(dest)
        described = {"kind": "HEAD", "commit": commit, "dirty": False}
    elif source != "worktree":
        repo = copy_worktree(dest, Path(source).resolve())
        described = {"kind": f"tree {source}", "commit": "", "dirty": False}
    else:
        repo = copy_worktree(dest)
        dirty = bool(_git("status", "--porcelain", "--", "release", "Cargo.toml", "governance", "layouts"))
        described = {"kind": "working tree", "commit": commit, "dirty": dirty}
    signer = repo / "release" / "builder" / "signer.py"
    subprocess.run(
        [sys.executable, str(signer), "dev-keys", "--keys-dir", str(repo / "keys")],
        cwd=repo, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return repo, described


def minisign_key(folder: Path) -> Path:
    """An unencrypted minisign key pair for the baseline (``minisign -G -W``); return the secret key."""
    folder.mkdir(parents=True, exist_ok=True)
    sec, pub = folder / "baseline.key", folder / "baseline.pub"
    cmd = ["minisign", "-G", "-W", "-f", "-p", str(pub), "-s", str(sec)]
    subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return sec


def _pipeline_dict(run: PipelineRun) -> dict[str, Any]:
    m = run.measured
    verify = [s for s in run.stages if s.name == "verify"]
    verify_cpu = sum(s.cpu_s + s.children_cpu_s for s in verify)
    return {
        "wall_s": round(run.wall_s, 3),
        "cpu_s": round(m.cpu_s, 3),
        "cpu_minus_verify_s": round(m.cpu_s - verify_cpu, 3),
        "minus_verify_s": round(run.minus_verify_s, 3),
        "steps": run.steps,
        "stages": [s.to_dict() for s in run.stages],
        "peak_tree_rss_mib": round(run.peak_tree_kib() / 1024, 1),
        "sampled_tree_rss_mib": round(m.tree_peak_kib / 1024, 1),
        "process_hwm_mib": round(run.probe["self_hwm_kib"] / 1024, 1),
        "largest_child_mib": round(run.probe["children_maxrss_kib"] / 1024, 1),
        "probe": run.probe,
    }


def bench_size(
    size_mib: int,
    runs: int,
    repo: Path,
    ws: Workspace,
    seckey: Path,
    work: Path,
    log: Any,
    do_audit: bool,
    quiet_wait: float,
) -> dict[str, Any]:
    """Generate the inputs for one size and measure every contender ``runs`` times."""
    d = work / f"{size_mib}MiB"
    d.mkdir(parents=True, exist_ok=True)
    print(f"4 x {size_mib} MiB: generating synthetic binaries...", file=log, flush=True)
    inputs = make_binaries(ws, d / "bins", size_mib * MiB)
    specs = make_trees(ws, d / "bins", d / "trees")
    input_bytes = sum(i.total for i in inputs)
    published = repo / UNSAFE_PREBUILT_DIR  # a prebuilt run never publishes into the release folder
    owner_pub = repo / "keys" / "owner.pub"
    per_run: list[dict[str, Any]] = []
    mirror = None
    for n in range(1, runs + 1):
        pipe = run_pipeline(repo, d / "bins", d, quiet_wait)
        base = run_baseline(d / "trees", d / "baseline-out", specs, seckey, quiet_wait)
        ver = run_verify_once(published, owner_pub, d, quiet_wait)
        mirror = mirror or make_mirror(repo, published, d / "mirror")  # the same bytes every run: made once
        fetched = run_fetch(repo, mirror, d, quiet_wait)
        per_run.append(
            {
                "pipeline": _pipeline_dict(pipe),
                "baseline_s": round(base.wall_s, 3),
                "baseline_cpu_s": round(base.cpu_s, 3),
                "baseline_maxrss_mib": round(base.maxrss_kib / 1024, 1),
                "in_toto_verify_s": round(ver.in_toto.wall_s, 3),
                "in_toto_verify_exit": ver.in_toto.returncode,
                "in_toto_verify_maxrss_mib": round(ver.in_toto.maxrss_kib / 1024, 1),
                "sha256sum_s": round(ver.sha256sum.wall_s, 4),
                "fetch_s": round(fetched.fetch.wall_s, 3),
                "fetch_stock_s": round(fetched.stock.wall_s, 3),
                "fetch_maxrss_mib": round(fetched.fetch.maxrss_kib / 1024, 1),
                "foreign_cores": {
                    "pipeline": round(pipe.measured.foreign_cores, 2),
                    "baseline": round(base.foreign_cores, 2),
                    "in_toto_verify": round(ver.in_toto.foreign_cores, 2),
                },
                "steal_s": round(pipe.measured.steal_s + base.steal_s + ver.in_toto.steal_s, 2),
            }
        )
        print(
            f"  run {n}/{runs}: pipeline {pipe.wall_s:.2f}s (minus verify {pipe.minus_verify_s:.2f}s),"
            f" baseline {base.wall_s:.2f}s, in-toto-verify {ver.in_toto.wall_s:.2f}s"
            f" (exit {ver.in_toto.returncode}), sha256sum {ver.sha256sum.wall_s:.3f}s,"
            f" fetch {fetched.fetch.wall_s:.2f}s (stock {fetched.stock.wall_s:.2f}s);"
            f" other load {pipe.measured.foreign_cores:.2f}/{base.foreign_cores:.2f}"
            f"/{ver.in_toto.foreign_cores:.2f} cores",
            file=log,
            flush=True,
        )
    print("  instrumented in-toto-verify (per inspection)...", file=log, flush=True)
    profile = profile_verify(published, owner_pub, d)
    archives = [published / i.archive for i in inputs]
    archive_bytes = sum(p.stat().st_size for p in archives)
    release_bytes = sum((published / f).stat().st_size for f in release_files(published))
    med = {
        "pipeline_s": rep.median([r["pipeline"]["wall_s"] for r in per_run]),
        "pipeline_minus_verify_s": rep.median([r["pipeline"]["minus_verify_s"] for r in per_run]),
        "verify_step_s": rep.median([r["pipeline"]["steps"].get("verify", 0.0) for r in per_run]),
        "baseline_s": rep.median([r["baseline_s"] for r in per_run]),
        "in_toto_verify_s": rep.median([r["in_toto_verify_s"] for r in per_run]),
        "sha256sum_s": rep.median([r["sha256sum_s"] for r in per_run]),
        "fetch_s": rep.median([r["fetch_s"] for r in per_run]),
        "fetch_stock_s": rep.median([r["fetch_stock_s"] for r in per_run]),
        "pipeline_cpu_s": rep.median([r["pipeline"]["cpu_s"] for r in per_run]),
        "pipeline_minus_verify_cpu_s": rep.median([r["pipeline"]["cpu_minus_verify_s"] for r in per_run]),
        "baseline_cpu_s": rep.median([r["baseline_cpu_s"] for r in per_run]),
    }
    fastest = {
        "pipeline_s": min(r["pipeline"]["wall_s"] for r in per_run),
        "pipeline_minus_verify_s": min(r["pipeline"]["minus_verify_s"] for r in per_run),
        "baseline_s": min(r["baseline_s"] for r in per_run),
        "in_toto_verify_s": min(r["in_toto_verify_s"] for r in per_run),
        "sha256sum_s": min(r["sha256sum_s"] for r in per_run),
    }
    foreign = [v for r in per_run for v in r["foreign_cores"].values()]
    median_index = sorted(range(runs), key=lambda i: per_run[i]["pipeline"]["wall_s"])[(runs - 1) // 2]
    audit = None
    if do_audit:
        print("  I/O audit: the pipeline once more, under strace (untimed)...", file=log, flush=True)
        audit = audit_reads(repo, d / "bins", sum(i.binaries for i in inputs))
    return {
        "size_mib": size_mib,
        "input_bytes": input_bytes,
        "archive_bytes": archive_bytes,
        "release_bytes": release_bytes,
        "median": {k: round(v, 4) for k, v in med.items()},
        "min": fastest,
        "foreign_cores_median": round(rep.median(foreign), 2),
        "foreign_cores_max": max(foreign),
        "ratios": {
            "pipeline": round(med["pipeline_s"] / med["baseline_s"], 3),
            "pipeline_minus_verify": round(med["pipeline_minus_verify_s"] / med["baseline_s"], 3),
            "verify": round(med["in_toto_verify_s"] / med["sha256sum_s"], 2),
            "fetch": round(med["fetch_s"] / med["fetch_stock_s"], 2),
        },
        "memory": {
            "pipeline_peak_mib": max(r["pipeline"]["peak_tree_rss_mib"] for r in per_run),
            "pipeline_process_mib": max(r["pipeline"]["process_hwm_mib"] for r in per_run),
            "largest_child_mib": max(r["pipeline"]["largest_child_mib"] for r in per_run),
            "baseline_largest_process_mib": max(r["baseline_maxrss_mib"] for r in per_run),
            "fetch_process_mib": max(r["fetch_maxrss_mib"] for r in per_run),
        },
        "io_audit": audit,
        "release_verifies": all(r["in_toto_verify_exit"] == 0 for r in per_run),
        "median_run": per_run[median_index]["pipeline"],
        "runs": per_run,
        "verify_profile": profile,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def workdir(given: Path | None, keep: bool) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="ransomeye-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are whole MiB, comma-separated (e.g. 16,256)") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("sizes are whole MiB >= 1")
    return sorted(set(sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES),
        help="MiB per archive's inputs, comma-separated (default: 4,16,64; three or more give a slope)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs per size; the median is reported (default: 3)")
    parser.add_argument("--json", type=Path, help="where to write the JSON report (default: a temporary file)")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also plot seconds against size into this PNG file")
    parser.add_argument(
        "--source", default="worktree", metavar="worktree|head|DIR",
        help="benchmark this working tree as it is (default), its committed HEAD, or another checkout DIR",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="keep the repository copy and inputs here (default: a temp dir)")
    parser.add_argument(
        "--no-audit", dest="audit", action="store_false",
        help="skip the I/O audit (one extra pipeline run under strace at the smallest size)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, metavar="SECONDS",
        help="before each timed run, wait up to this long for other processes to leave the CPUs idle (default: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--no-threshold-2", dest="threshold2", action="store_false",
        help="skip the threshold-2 release (two builders, real cargo builds) and its stock equivalent",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="do not delete the temporary work directory")
    ns = parser.parse_args(argv)
    if ns.runs < 1:
        parser.error("--runs must be at least 1")
    if ns.source not in ("worktree", "head") and not (Path(ns.source) / "release" / "builder" / "build.py").is_file():
        parser.error(f"--source {ns.source}: not worktree, head, or a checkout holding release/builder/build.py")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench: missing tools: {', '.join(missing)} (Debian: apt-get install {' '.join(missing)})")
        return 3
    json_path: Path = ns.json or Path(tempfile.mkstemp(prefix="ransomeye-bench-", suffix=".json")[1])
    log = sys.stderr
    try:
        with workdir(ns.workdir, ns.keep) as work:
            print(f"bench: work directory {work}", file=log, flush=True)
            repo, source = prepare_repo(work / "repo", ns.source)
            ws = load_workspace(repo)
            seckey = minisign_key(work / "minisign")
            audit = ns.audit and strace_available()
            sizes = [
                bench_size(s, ns.runs, repo, ws, seckey, work, log, audit and s == ns.sizes[0], ns.quiet_wait)
                for s in ns.sizes
            ]
            # Last: it commits the repository copy (the second builder clones the commit).
            threshold2 = (
                bench_threshold2(repo, work / "threshold-2", seckey, log, ns.quiet_wait) if ns.threshold2 else None
            )
    except (BenchError, subprocess.CalledProcessError, OSError) as e:
        detail = e.stderr if isinstance(e, subprocess.CalledProcessError) else ""
        print(f"bench: error: {e}\n{detail or ''}".rstrip(), file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "environment": {
            "cpus": os.cpu_count(),
            "runs": ns.runs,
            "python": sys.version.split()[0],
            "quiet_wait_s": ns.quiet_wait,
            "source": f"{source['kind']} {source['commit']}" + (" (modified)" if source["dirty"] else ""),
            "source_detail": source,
        },
        "sizes": sizes,
        "threshold_2": threshold2.to_dict() if threshold2 is not None else None,
    }
    report["slopes"] = rep.slopes(sizes)
    report["targets"] = rep.targets(sizes, report["slopes"], report["threshold_2"])
    write_json(json_path, report)
    print(rep.render(report))
    print(f"\nJSON report: {json_path}")
    if ns.plot is not None:
        print(f"Plot: {plot(report, ns.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
