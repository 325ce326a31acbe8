"""Edge packagers: the Linux agent, the Windows agent and the DPI probe.

* ``ransomeye-agent-linux-{version}.tar.gz``: agent, loader, sentinel;
* ``ransomeye-agent-windows-{version}.zip``: agent.exe, sentinel.exe;
* ``ransomeye-dpi-{version}.tar.gz``: the DPI probe.

Each archive holds exactly what the product declaration lists, and is
checked against the bundle's forbidden list before it is written.

Usage: ``python3 release/builder/packager_agent.py [--bundle ID ...] --bin-root DIR --out DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from release.packaging_cli import packager_main

BUNDLE_IDS = ("agent-linux", "agent-windows", "dpi")


def main(argv: list[str] | None = None) -> int:
    return packager_main("packager_agent", BUNDLE_IDS, argv)


if __name__ == "__main__":
    sys.exit(main())
