"""Rebuild a published release from this checkout and compare it bit for bit: ``make rebuild-and-compare``.

``python3 release/builder/rebuild.py --release DIR`` in a clean checkout of
the commit the release names (its provenance): the gates, build and
packaging steps run again here, in the sandbox, and every archive and SBOM
is compared with the published one. Exit 0 only when all are identical; 1
when one differs (``diffoscope`` explains where, next to the summary); 2 when
the checkout is not the release's commit. See :mod:`release.rebuild`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography", "in_toto")

from release.cli import exit_process, run
from release.products import repo_root
from release.rebuild import SUMMARY, rebuild_and_compare
from release.sandbox import find_sandbox


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        root = repo_root()
        parser = argparse.ArgumentParser(prog="rebuild", description=__doc__.split("\n\n")[0] if __doc__ else None)
        parser.add_argument("--release", type=Path, required=True, help="the published release folder")
        parser.add_argument(
            "--report-dir",
            type=Path,
            default=root / "release" / "rebuild-report",
            help=f"where {SUMMARY} and the diffoscope reports go (default: release/rebuild-report)",
        )
        parser.add_argument(
            "--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", root / "target" / "rebuild"))
        )
        parser.add_argument("--no-sandbox", action="store_true", help="rebuild without bubblewrap")
        parser.add_argument(
            "--codesign-ca", type=Path, default=root / "keys" / "codesign-ca.pem",
            help="the code-signing CA the Windows binaries' signatures chain to (default: keys/codesign-ca.pem)",
        )  # fmt: skip
        ns = parser.parse_args(args)  # fmt: skip
        lines = rebuild_and_compare(
            root, ns.release.resolve(), ns.report_dir.resolve(), ns.target_dir.resolve(), find_sandbox(ns.no_sandbox),
            ns.codesign_ca.resolve(),
        )  # fmt: skip
        print(f"all {len(lines)} files are identical to the rebuild (summary: {ns.report_dir / SUMMARY})")
        return 0

    return run("rebuild", inner, argv)


if __name__ == "__main__":
    exit_process(main())
