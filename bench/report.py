"""Figures from the runs: medians, ratios, slopes, the issue's targets, and the printed table.

Everything here is pure: it takes the per-size result dictionaries that
:mod:`bench.run` assembles (the JSON report's ``sizes``) and returns numbers
or text.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

MiB = 1 << 20
RATIO_TARGET = 1.0
PEAK_RSS_TARGET_MIB = 150.0
FLAT_RSS_TOLERANCE_MIB = 10.0
VERIFY_FACTOR_TARGET = 2.0
PIPELINE_FIXED_TARGET_S = 1.5
VERIFY_FIXED_TARGET_S = 0.5
BUSY_CORES = 0.25  # other load (cores, median) above which the report warns that times are noisy

# The series whose cost per MiB the slope table reports: (key in "median", label).
SERIES = (
    ("pipeline_s", "pipeline (whole)"),
    ("pipeline_minus_verify_s", "pipeline minus verify"),
    ("baseline_s", "baseline (stock tools)"),
    ("in_toto_verify_s", "in-toto-verify"),
    ("sha256sum_s", "sha256sum"),
    ("fetch_s", "customer fetch"),
    ("fetch_stock_s", "stock fetch"),
)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares ``y = slope * x + intercept``; None with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def slopes(sizes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seconds against input size for each series: MiB/s (1 / slope) and the fixed cost (intercept)."""
    xs = [s["input_bytes"] / MiB for s in sizes]
    out: dict[str, Any] = {"points": len(xs), "enough_sizes": len(set(xs)) >= 3}
    for key, _ in SERIES:
        line = fit(xs, [s["median"][key] for s in sizes])
        if line is None:
            out[key] = None
        else:
            slope, intercept = line
            out[key] = {
                "mib_per_s": round(1 / slope, 1) if slope > 0 else None,
                "s_per_gib": round(slope * 1024, 2),
                "fixed_s": round(intercept, 2),
            }
    return out


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def _ratio_margin(r: float, target: float) -> str:
    return f"{abs(1 - r / target) * 100:.0f}% {'under' if r <= target else 'over'}"


def targets(
    sizes: Sequence[dict[str, Any]], fitted: dict[str, Any] | None = None, threshold2: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The issue's targets, each with its verdict and the figures it was judged on (``met`` None: shown only)."""
    out: list[dict[str, Any]] = []
    for s in sizes:
        r = s["ratios"]["pipeline"]
        out.append(
            {
                "target": f"whole pipeline (verify included) / baseline <= {RATIO_TARGET} at 4 x {s['size_mib']} MiB",
                "value": r,
                "met": r <= RATIO_TARGET,
                "margin": _ratio_margin(r, RATIO_TARGET),
            }
        )
        r = s["ratios"]["pipeline_minus_verify"]
        out.append(
            {
                "target": f"(shown) pipeline minus its verify step / baseline at 4 x {s['size_mib']} MiB",
                "value": r,
                "met": None,
                "margin": _ratio_margin(r, RATIO_TARGET),
            }
        )
    for key, label, limit in (("pipeline_s", "whole pipeline", PIPELINE_FIXED_TARGET_S),
                              ("in_toto_verify_s", "in-toto-verify", VERIFY_FIXED_TARGET_S)):  # fmt: skip
        line = (fitted or {}).get(key)
        if line is not None:
            fixed = line["fixed_s"]
            out.append(
                {
                    "target": f"fixed cost (the slope fit's intercept) of the {label} <= {limit} s",
                    "value": fixed,
                    "met": fixed <= limit,
                    "margin": f"{abs(limit - fixed):.2f} s {'under' if fixed <= limit else 'over'}",
                }
            )
    largest = max(sizes, key=lambda s: s["size_mib"])
    smallest = min(sizes, key=lambda s: s["size_mib"])
    peak = max(s["memory"]["pipeline_peak_mib"] for s in sizes)
    out.append(
        {
            "target": f"pipeline peak memory (whole process tree) <= {PEAK_RSS_TARGET_MIB:.0f} MiB at every size",
            "value": peak,
            "met": peak <= PEAK_RSS_TARGET_MIB,
            "margin": f"{abs(PEAK_RSS_TARGET_MIB - peak):.0f} MiB {'under' if peak <= PEAK_RSS_TARGET_MIB else 'over'}",
        }
    )
    peak = largest["memory"]["pipeline_peak_mib"]
    if largest is not smallest:
        growth = peak - smallest["memory"]["pipeline_peak_mib"]
        out.append(
            {
                "target": (
                    f"peak memory flat: grows < {FLAT_RSS_TOLERANCE_MIB:.0f} MiB"
                    f" from 4 x {smallest['size_mib']} to 4 x {largest['size_mib']} MiB"
                ),
                "value": round(growth, 1),
                "met": growth < FLAT_RSS_TOLERANCE_MIB,
                "margin": f"{growth:+.1f} MiB",
            }
        )
    for s in sizes:
        audit = s.get("io_audit")
        if audit is None:
            continue
        reread = audit["reread"]
        what = ", ".join(f"{k[len('re-read: ') :]} {v / 1024:.1f} KiB" for k, v in reread.items()) or "nothing"
        out.append(
            {
                "target": (
                    f"every artifact hashed while written, hashes reused, never re-read (at 4 x {s['size_mib']} MiB)"
                ),
                "value": audit["reread_bytes"],
                "met": audit["reread_bytes"] == 0,
                "margin": f"re-read by the producing steps: {what}; each input binary byte read"
                f" {audit['binary_read_passes']:.2f} times; the verify step then read"
                f" {audit['verify_step_bytes'] / MiB:.1f} MiB in-process",
            }
        )
    for s in sizes:
        r = s["ratios"]["verify"]
        out.append(
            {
                "target": f"in-toto-verify <= {VERIFY_FACTOR_TARGET:.0f} x sha256sum at 4 x {s['size_mib']} MiB",
                "value": r,
                "met": r <= VERIFY_FACTOR_TARGET,
                "margin": f"{r / VERIFY_FACTOR_TARGET:.2f} x the allowed time",
            }
        )
    for s in sizes:
        r = s["ratios"].get("fetch")
        if r is not None:
            out.append(
                {
                    "target": f"(shown) customer fetch / its stock equivalent at 4 x {s['size_mib']} MiB",
                    "value": r,
                    "met": None,
                    "margin": "TUF metadata, every file of the product, in-toto-verify; stock: cp, minisign, sha256sum",
                }
            )
    if threshold2 is not None:
        out.append(
            {
                "target": "(shown) threshold-2 release (two builders, warm cargo) / its stock equivalent",
                "value": threshold2["ratio"],
                "met": None,
                "margin": f"{threshold2['release_s']:.2f} s against {threshold2['stock_s']:.2f} s",
            }
        )
    return out


def _mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB" if n >= 10 * MiB else f"{n / MiB:.1f} MiB"


def render(report: dict[str, Any]) -> str:
    """The human-readable report: main table, slopes, targets, the largest size's profile."""
    env = report["environment"]
    sizes: list[dict[str, Any]] = report["sizes"]
    lines = [
        f"RansomEye release benchmark: pipeline minus cargo vs stock tools ({env['cpus']} CPUs, "
        f"{env['runs']} runs per size, median; source {env['source']})",
        "",
        "(a) = whole pipeline, (b) = pipeline minus its verify step; ratios are pipeline / baseline.",
        "RSS: peak of the pipeline's process tree (max of the sampled sum of PSS and exact per-process peaks);",
        "proc = build.py alone (VmHWM), child = largest child (in-toto-verify) (wait4).",
        "",
    ]
    head = (
        f"{'size':<11}{'inputs':>9}{'archives':>10} │{'(a) pipe':>9}{'(b) -ver':>9}{'baseline':>9} │"
        f"{'(a)/base':>9}{'(b)/base':>9} │{'RSS':>8}{'proc':>7}{'child':>7} │"
        f"{'in-toto-v':>10}{'sha256sum':>10}{'ratio':>8}"
    )
    lines += [head, "─" * len(head)]
    for s in sizes:
        m, r, mem = s["median"], s["ratios"], s["memory"]
        lines.append(
            f"{'4 x ' + str(s['size_mib']) + ' MiB':<11}{_mib(s['input_bytes']):>9}{_mib(s['archive_bytes']):>10} │"
            f"{m['pipeline_s']:>8.2f}s{m['pipeline_minus_verify_s']:>8.2f}s{m['baseline_s']:>8.2f}s │"
            f"{r['pipeline']:>9.2f}{r['pipeline_minus_verify']:>9.2f} │"
            f"{mem['pipeline_peak_mib']:>5.0f}MiB{mem['pipeline_process_mib']:>7.0f}{mem['largest_child_mib']:>7.0f} │"
            f"{m['in_toto_verify_s']:>9.2f}s{m['sha256sum_s']:>9.3f}s{r['verify']:>7.1f}x"
        )
    if all("fetch_s" in s["median"] for s in sizes):
        lines += ["", "Customer fetch of one product (core) from a TUF mirror on disk, against the stock equivalent",
                  "(cp of the archive, SHA256SUMS and their minisign signatures; minisign -V twice; sha256sum -c):",
                  f"{'size':<13}{'fetch':>9}{'stock':>9}{'ratio':>8}{'RSS':>9}"]  # fmt: skip
        for s in sizes:
            m = s["median"]
            lines.append(
                f"{'4 x ' + str(s['size_mib']) + ' MiB':<13}{m['fetch_s']:>8.2f}s{m['fetch_stock_s']:>8.2f}s"
                f"{s['ratios']['fetch']:>7.1f}x{s['memory']['fetch_process_mib']:>6.0f}MiB"
            )
    lines += [
        "",
        "CPU seconds (whole process trees, all cores; barely affected by other load): on 2 idle cores the",
        "pipeline's wall time can approach half its CPU time, the sequential baseline's cannot drop below its own.",
        f"{'size':<13}{'pipeline':>10}{'-verify':>10}{'baseline':>10}{'(b)/base':>10}",
    ]
    for s in sizes:
        m = s["median"]
        pipe, minus, base = m["pipeline_cpu_s"], m["pipeline_minus_verify_cpu_s"], m["baseline_cpu_s"]
        label = f"4 x {s['size_mib']} MiB"
        lines.append(f"{label:<13}{pipe:>9.2f}s{minus:>9.2f}s{base:>9.2f}s{minus / base:>10.2f}")
    busy = [s for s in sizes if s["foreign_cores_median"] > BUSY_CORES]
    if busy:
        lines += [
            "",
            "WARNING: other processes kept "
            + ", ".join(f"{s['foreign_cores_median']:.2f} cores busy at 4 x {s['size_mib']} MiB" for s in busy)
            + f" (median over the runs; > {BUSY_CORES} makes the times unreliable: rerun on a quiet machine).",
        ]
    sl = report["slopes"]
    lines += ["", f"Cost against size ({sl['points']} sizes; least squares of median seconds on input MiB):"]
    if not sl["enough_sizes"]:
        lines.append("  (fewer than three sizes: run with e.g. --sizes 16,64,256 for a slope)")
    for key, label in SERIES:
        v = sl.get(key)
        if v is not None:
            rate = f"{v['mib_per_s']:>8.1f} MiB/s" if v["mib_per_s"] is not None else "     n/a     "
            lines.append(f"  {label:<24}{rate}  {v['s_per_gib']:>7.2f} s/GiB  fixed {v['fixed_s']:>6.2f} s")
    t2 = report.get("threshold_2")
    if t2 is not None:
        lines += [
            "",
            "Threshold-2 release of the repository's own products (two builders, real cargo builds, warm target",
            f"directories): {t2['release_s']:.2f} s, against {t2['stock_s']:.2f} s for the stock equivalent",
            "(cargo build per builder and target, cmp, osslsigncode sign, baseline.sh): "
            f"{t2['ratio']:.1f}x; peak tree memory {t2['release_peak_tree_mib']:.0f} MiB. Its steps:",
            *(f"  {line}" for line in t2["steps"]),
        ]
    lines += ["", "Targets:"]
    for t in report["targets"]:
        tag = "  --  " if t["met"] is None else f"[{_verdict(t['met'])}]"
        lines.append(f"  {tag:<10}{t['target']}: {t['value']} ({t['margin']})")
    largest = max(sizes, key=lambda s: s["size_mib"])
    lines += ["", f"Where the pipeline's time and memory go at 4 x {largest['size_mib']} MiB (median run):"]
    lines.append(f"  {'stage':<14}{'wall':>8}{'cpu':>8}{'child cpu':>10}{'cores':>7}{'RSS':>8}{'tree RSS':>10}")
    for st in largest["median_run"]["stages"]:
        cores = f"{st['cores_busy']:.2f}" if st["cores_busy"] is not None else "-"
        lines.append(
            f"  {st['name']:<14}{st['wall_s']:>7.2f}s{st['cpu_s']:>7.2f}s{st['children_cpu_s']:>9.2f}s"
            f"{cores:>7}{st['peak_rss_mib']:>6.0f}MiB{st['peak_tree_rss_mib']:>7.0f}MiB"
        )
    steps = largest["median_run"]["steps"]
    lines.append("  step lines: " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    for s in sizes:
        audit = s.get("io_audit")
        if audit is not None:
            lines += [
                "",
                f"What the pipeline process itself read (strace, 4 x {s['size_mib']} MiB,"
                f" {_mib(s['input_bytes'])} of inputs):",
            ]
            for k, v in audit["by_category"].items():
                lines.append(f"  {k:<44}{v / MiB:>10.2f} MiB")
    vp = largest.get("verify_profile")
    if vp:
        lines += ["", f"in-toto-verify at 4 x {largest['size_mib']} MiB, instrumented run ({vp['total_s']:.2f}s):"]
        lines.append(
            f"  {'inspection':<24}{'total':>8}{'hash before':>13}{'command':>9}{'hash after':>12}{'hashed':>10}"
        )
        for ins in vp["inspections"]:
            rec = ins["recordings"] + [{"seconds": 0.0, "bytes": 0}] * (2 - len(ins["recordings"]))
            hashed = rec[0]["bytes"] + rec[1]["bytes"]
            lines.append(
                f"  {ins['name']:<24}{ins['total_s']:>7.2f}s{rec[0]['seconds']:>12.2f}s{ins['command_s']:>8.2f}s"
                f"{rec[1]['seconds']:>11.2f}s{_mib(hashed):>10}"
            )
        other = vp["total_s"] - vp["phases"].get("run_all_inspections", 0.0)
        lines.append(
            f"  everything else (signatures, links, rules): {other:.2f}s;"
            f" it and its commands read {vp['rchar'] / MiB:.0f} MiB"
            f" ({vp['rchar'] / max(largest['release_bytes'], 1):.1f} x the release's {_mib(largest['release_bytes'])})"
        )
    return "\n".join(lines)
