"""Smoke run of the benchmark (bench/run.py) at a tiny size, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.synth import make_binaries
from release.products import load_workspace

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def test_synthetic_inputs_total_the_size_per_bundle(tmp_path: Path) -> None:
    ws = load_workspace(ROOT)
    inputs = make_binaries(ws, tmp_path / "bins", 2 * MiB)
    assert [i.bundle_id for i in inputs] == [b.id for b in ws.bundles]
    for bundle, i in zip(ws.bundles, inputs, strict=True):
        assert i.total == 2 * MiB
        files = [tmp_path / "bins" / bundle.target / f for f in bundle.binary_files()]
        assert sum(f.stat().st_size for f in files) == i.binaries


def test_fit_recovers_a_line() -> None:
    line = report.fit([1.0, 2.0, 4.0], [3.0, 5.0, 9.0])
    assert line is not None
    assert line[0] == pytest.approx(2.0)
    assert line[1] == pytest.approx(1.0)
    assert report.fit([1.0, 1.0], [2.0, 3.0]) is None


@pytest.mark.slow
def test_smoke_run_writes_every_field_and_the_release_verifies(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--sizes",
            "1",
            "--runs",
            "1",
            "--quiet-wait",
            "0",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "bench.png"),
            "--no-threshold-2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "Targets:" in proc.stdout
    data = json.loads(out.read_text())
    (size,) = data["sizes"]
    assert size["size_mib"] == 1
    assert size["input_bytes"] == 4 * MiB
    assert size["release_verifies"] is True
    for key in ("pipeline_s", "pipeline_minus_verify_s", "baseline_s", "in_toto_verify_s", "sha256sum_s"):
        assert size["median"][key] > 0
    assert set(size["ratios"]) == {"pipeline", "pipeline_minus_verify", "verify", "fetch"}
    assert size["median"]["fetch_s"] > 0 and size["median"]["fetch_stock_s"] > 0
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert data["threshold_2"] is None
    assert size["memory"]["pipeline_peak_mib"] > 0
    assert size["median_run"]["steps"]["verify"] >= 0
    assert {s["name"] for s in size["median_run"]["stages"]} >= {"startup", "package", "verify", "publish+exit"}
    inspections = size["verify_profile"]["inspections"]
    assert inspections, "in-toto-verify ran no inspection"
    assert all(len(i["recordings"]) == 2 for i in inspections)
    if size["io_audit"] is not None:  # strace installed
        assert size["io_audit"]["binary_read_passes"] >= 1.0
    assert set(data["slopes"]) >= {"points", "pipeline_s", "baseline_s"}
    assert any(t["met"] is not None for t in data["targets"])


def test_targets_judge_the_whole_pipeline_verify_and_fixed_costs() -> None:
    size = {
        "size_mib": 16,
        "ratios": {"pipeline": 0.9, "pipeline_minus_verify": 0.7, "verify": 2.5, "fetch": 3.0},
        "memory": {"pipeline_peak_mib": 120.0},
    }
    fitted = {"pipeline_s": {"fixed_s": 1.6}, "in_toto_verify_s": {"fixed_s": 0.4}}
    judged = {t["target"]: t["met"] for t in report.targets([size], fitted, {"ratio": 4.0, "release_s": 4.0,
                                                                               "stock_s": 1.0})}  # fmt: skip
    assert judged["whole pipeline (verify included) / baseline <= 1.0 at 4 x 16 MiB"] is True
    assert judged["in-toto-verify <= 2 x sha256sum at 4 x 16 MiB"] is False
    assert judged["fixed cost (the slope fit's intercept) of the whole pipeline <= 1.5 s"] is False
    assert judged["fixed cost (the slope fit's intercept) of the in-toto-verify <= 0.5 s"] is True
    assert judged["pipeline peak memory (whole process tree) <= 150 MiB at every size"] is True
    shown = [t for t in judged if t.startswith("(shown)")]
    assert len(shown) == 3 and all(judged[t] is None for t in shown), "minus-verify, fetch, threshold-2: shown only"


def test_the_stock_threshold_2_equivalent_builds_twice_compares_signs_and_packs(tmp_path: Path) -> None:
    from bench.threshold2 import stock_script

    ws = load_workspace(ROOT)
    script = stock_script(ROOT, tmp_path, tmp_path / "baseline.key").read_text()
    builds = [line for line in script.splitlines() if " build --release --offline --locked " in line]
    assert len(builds) == 2 * len(ws.targets()), "each builder builds each target, into its own target directory"
    assert {str(tmp_path / "stock-1"), str(tmp_path / "stock-2")} <= {w for line in builds for w in line.split()}
    binaries = [f for b in ws.bundles for f in b.binary_files()]
    assert script.count("\ncmp -- ") == len(binaries)
    windows = [f for b in ws.bundles if "windows" in b.target for f in b.binary_files()]
    assert script.count("osslsigncode sign ") == len(windows)
    assert script.rstrip().splitlines()[-1].endswith(" ".join(f"{b.format}:{b.stem(ws.version)}" for b in ws.bundles))


def test_cpu_spent_inside_a_sandbox_is_counted(tmp_path: Path) -> None:
    """bubblewrap's PID namespace hides its processes' CPU time from wait4; the sampler adds it back."""
    from bench.measure import run_measured

    busy = [
        sys.executable,
        "-I",
        "-c",
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass",
    ]
    box = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
           "--proc", "/proc", "--dev", "/dev", "--", *busy]  # fmt: skip
    m = run_measured(box, cwd=tmp_path)
    assert m.returncode == 0, m.stderr
    assert m.sandboxed_cpu_s >= 0.5, "the sandboxed loop's CPU time was seen"
    assert 0.5 <= m.cpu_s < 1.2, "and counted once"
    plain = run_measured(busy, cwd=tmp_path)
    assert plain.sandboxed_cpu_s == 0.0 and plain.cpu_s >= 0.55, "wait4 counts an unsandboxed child itself"
