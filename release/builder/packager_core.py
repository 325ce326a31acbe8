"""Core Server packager: ``ransomeye-core-{version}.tar.gz``.

Holds ``ransomeye-core``, ``ransomeye-ops``, ``ransomeye-tuner`` and the
declared assets (``ui/dist``, ``governance/policies``, the core service
units). It never holds anything from ``edge/`` nor any agent or DPI binary:
the bundle is checked against the declaration's forbidden list before a byte
is written (defence in depth, besides the isolation gate).

Usage: ``python3 release/builder/packager_core.py --bin-root DIR --out DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from release.bundle import Packaged, package
from release.packaging_cli import packager_main
from release.products import Workspace

BUNDLE_ID = "core"


def package_core(ws: Workspace, bin_root: Path, out_dir: Path, epoch: int) -> Packaged:
    """Write the core archive into ``out_dir``; raises PackagingError on forbidden content."""
    return package(ws, ws.bundle(BUNDLE_ID), bin_root, out_dir, epoch)


def main(argv: list[str] | None = None) -> int:
    return packager_main("packager_core", (BUNDLE_ID,), argv)


if __name__ == "__main__":
    sys.exit(main())
