"""The threshold-2 release (two independent builders, real cargo builds) against its stock equivalent.

Unlike the sized runs, this one builds the repository's own products: the
pipeline as ``make release`` runs it (``build.py``: gates, this builder's
cargo builds, the second builder's from a fresh clone of the commit in its
own sandbox and target directory, codesign, packaging, links from both,
verify, publish). Both contenders run once untimed first, so cargo's target
directories are warm on the timed run, as on a build server.

The stock equivalent (``threshold2_baseline.sh``, sequential): for each of
two builders, ``cargo build --release --offline --locked`` per target into
its own target directory; ``cmp`` of the two builds' binaries; then
``osslsigncode sign`` of each Windows binary and ``baseline.sh`` (tar | gzip,
zip, minisign, sha256sum) over the first builder's binaries.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Measured, run_measured
from bench.pipeline import BASELINE, EPOCH, BenchError, pipeline_env, settle
from release import attest
from release.cargo import HOST_TARGET, build_env, find_toolchain
from release.pipeline import BUILDERS_DIR_VARIABLE
from release.products import load_workspace

STOCK_SCRIPT = "threshold2_baseline.sh"


def commit_copy(repo: Path) -> None:
    """Make the repository copy a git checkout with everything committed (the second builder clones the commit)."""
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    if status.stdout.strip():
        subprocess.run(["git", *ident, "-C", str(repo), "commit", "-q", "-m", "bench"], check=True)


def _release(repo: Path, builders: Path) -> Measured:
    env = {**pipeline_env(), BUILDERS_DIR_VARIABLE: str(builders)}
    m = run_measured([sys.executable, str(repo / "release" / "builder" / "build.py")], cwd=repo, env=env)
    if m.returncode != 0:
        raise BenchError(f"the threshold-2 release failed (exit {m.returncode}):\n{m.stdout}\n{m.stderr}")
    if "2 builder(s)" not in m.stdout:
        raise BenchError(f"the release did not run two builders (keys/builder-2/ missing?):\n{m.stdout}")
    return m


def stock_script(repo: Path, work: Path, seckey: Path) -> Path:
    """Write the stock equivalent's script (it lays out its own archive trees, as a person would); return it."""
    ws = load_workspace(repo)
    q = shlex.quote
    lines = ["#!/usr/bin/env bash", "set -euo pipefail"]
    for n in (1, 2):
        for target in ws.targets():
            tc = find_toolchain(ws, target)
            env = build_env(ws, tc, EPOCH)
            keep = {k: v for k, v in env.items()
                    if k in ("PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "SOURCE_DATE_EPOCH")
                    or k.startswith(("RUSTC", "CARGO_"))}  # fmt: skip
            cmd = [str(tc.cargo), "build", "--release", "--offline", "--locked", "--quiet", "--target", target,
                   "--target-dir", str(work / f"stock-{n}")]  # fmt: skip
            if target != HOST_TARGET:  # as the pipeline builds it: only the bundles' binaries
                cmd += [a for b in sorted({b for x in ws.bundles if x.target == target for b in x.binaries})
                        for a in ("--bin", b)]  # fmt: skip
            else:
                cmd.append("--workspace")
            assigns = " ".join(f"{k}={q(v)}" for k, v in sorted(keep.items()))
            lines.append(f"(cd {q(str(repo))} && env -i {assigns} {shlex.join(cmd)})")
    trees, out, keys = work / "stock-trees", work / "stock-out", repo / "keys"
    signed = set(attest.codesigned_binaries(ws))
    lines.append(f"rm -rf -- {q(str(trees))} {q(str(out))}")
    for bundle in ws.bundles:
        top = trees / bundle.stem(ws.version)
        lines.append(f"mkdir -p -- {q(str(top / 'bin'))}")
        for f in bundle.binary_files():
            one, two = (work / f"stock-{n}" / bundle.target / "release" / f for n in (1, 2))
            lines.append(f"cmp -- {q(str(one))} {q(str(two))}")
            dest = top / "bin" / f
            if f"bin/{bundle.target}/{f}" in signed:
                lines.append(shlex.join(["osslsigncode", "sign", "-h", "sha256", "-time", str(EPOCH),
                                         "-certs", str(keys / "codesign.crt"), "-ac", str(keys / "codesign-ca.pem"),
                                         "-key", str(keys / "codesign.key"), "-n", "RansomEye",
                                         "-in", str(one), "-out", str(dest)]) + " >/dev/null")  # fmt: skip
            else:
                lines.append(f"cp -- {q(str(one))} {q(str(dest))}")
        for asset in bundle.assets:
            lines.append(f"mkdir -p -- {q(str((top / asset).parent))}")
            lines.append(f"cp -r -- {q(str(repo / asset))} {q(str(top / asset))}")
    specs = [f"{b.format}:{b.stem(ws.version)}" for b in ws.bundles]
    lines.append(shlex.join(["bash", str(BASELINE), str(trees), str(out), str(EPOCH), str(seckey), *specs]))
    script = work / STOCK_SCRIPT
    script.write_text("\n".join(lines) + "\n")
    return script


def _stock(script: Path, work: Path) -> Measured:
    m = run_measured(["bash", str(script)], cwd=work)
    if m.returncode != 0:
        raise BenchError(f"the stock threshold-2 equivalent failed (exit {m.returncode}):\n{m.stderr}")
    return m


@dataclass(frozen=True)
class Threshold2:
    release: Measured
    stock: Measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_s": round(self.release.wall_s, 3),
            "stock_s": round(self.stock.wall_s, 3),
            "ratio": round(self.release.wall_s / self.stock.wall_s, 2),
            "release_cpu_s": round(self.release.cpu_s, 2),
            "stock_cpu_s": round(self.stock.cpu_s, 2),
            "release_peak_tree_mib": round(self.release.tree_peak_kib / 1024, 1),
            "stock_largest_process_mib": round(self.stock.maxrss_kib / 1024, 1),
            "steps": [line.text for line in self.release.lines if line.text.startswith("[")],
        }


def bench_threshold2(repo: Path, work: Path, seckey: Path, log: Any, quiet_wait: float) -> Threshold2:
    """Warm both contenders once (untimed), then time each once."""
    work.mkdir(parents=True, exist_ok=True)
    commit_copy(repo)
    builders = work / "builders"
    print("threshold-2 release: warming cargo's target directories (untimed)...", file=log, flush=True)
    _release(repo, builders)
    script = stock_script(repo, work, seckey)
    _stock(script, work)
    settle(quiet_wait)
    release = _release(repo, builders)
    settle(quiet_wait)
    stock = _stock(script, work)
    print(f"  threshold-2 release {release.wall_s:.2f}s, stock equivalent {stock.wall_s:.2f}s", file=log, flush=True)
    return Threshold2(release, stock)
