"""Plot a benchmark report: seconds against input size, the pipeline next to the stock tools.

``python3 bench/plot.py REPORT.json OUT.png`` (``bench/run.py --plot OUT.png`` does the same at its end).
One panel for the release (whole pipeline, its part minus verify, the
stock baseline), one for the customer (``in-toto-verify`` against
``sha256sum``, the fetch against its stock equivalent); medians, log-free
axes so a fixed cost shows as the intercept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
    from release.bootstrap import ensure_environment

    ensure_environment("matplotlib")

MiB = 1 << 20
RELEASE = (
    ("pipeline_s", "whole pipeline (verify included)", "C0", "-"),
    ("pipeline_minus_verify_s", "pipeline minus its verify step", "C0", ":"),
    ("baseline_s", "stock baseline (tar | gzip, zip, minisign, sha256sum)", "C3", "-"),
)
CUSTOMER = (
    ("in_toto_verify_s", "in-toto-verify (whole release)", "C0", "-"),
    ("sha256sum_s", "sha256sum (same files)", "C3", "-"),
    ("fetch_s", "fetch.py --product core (TUF + in-toto-verify)", "C2", "--"),
    ("fetch_stock_s", "stock fetch (cp, minisign -V, sha256sum -c)", "C1", "--"),
)


def plot(report: dict[str, Any], out: Path) -> Path:
    """Write the PNG of ``report`` (the JSON ``bench/run.py`` writes) to ``out``; return ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    sizes = sorted(report["sizes"], key=lambda s: s["input_bytes"])
    xs = [s["input_bytes"] / MiB for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, series, title in ((left, RELEASE, "Release (minus cargo)"), (right, CUSTOMER, "Customer")):
        for key, label, color, style in series:
            if all(key in s["median"] for s in sizes):
                ax.plot(xs, [s["median"][key] for s in sizes], marker="o", color=color, linestyle=style, label=label)
        ax.set_title(title)
        ax.set_xlabel("input size (MiB, 4 archives together)")
        ax.set_ylabel("seconds (median)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    env = report["environment"]
    fig.suptitle(f"RansomEye release benchmark: {env['cpus']} CPUs, {env['runs']} run(s) per size; {env['source']}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 bench/plot.py REPORT.json OUT.png", file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(args[0]).read_text())
        plot(report, Path(args[1]))
    except (OSError, ValueError, KeyError) as e:
        print(f"plot: {args[0]}: not a benchmark report ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    print(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
