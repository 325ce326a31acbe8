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
    assert set(size["ratios"]) == {"pipeline", "pipeline_minus_verify", "verify"}
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
