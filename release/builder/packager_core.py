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

from release.packaging_cli import packager_main

BUNDLE_ID = "core"


def main(argv: list[str] | None = None) -> int:
    return packager_main("packager_core", (BUNDLE_ID,), argv)


if __name__ == "__main__":
    sys.exit(main())
