"""The command line shared by the packager entry points."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from release.bundle import package
from release.cli import run
from release.products import load_workspace, repo_root
from release.source import source_date_epoch


def packager_main(prog: str, bundle_ids: Sequence[str], argv: list[str] | None) -> int:
    """Parse ``--bundle/--bin-root/--out`` and package the chosen bundles."""

    def main(args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog=prog, description=f"Package {', '.join(bundle_ids)}.")
        parser.add_argument("--bundle", action="append", choices=bundle_ids, help="bundle id (default: all)")
        parser.add_argument("--bin-root", type=Path, required=True, help="directory with <target>/<binary>")
        parser.add_argument("--out", type=Path, required=True, help="directory to write the archive into")
        ns = parser.parse_args(args)
        ws = load_workspace(repo_root())
        epoch = source_date_epoch(ws.root)
        ns.out.mkdir(parents=True, exist_ok=True)
        for bundle_id in ns.bundle or bundle_ids:
            packaged = package(ws, ws.bundle(bundle_id), ns.bin_root.resolve(), ns.out.resolve(), epoch)
            print(f"{packaged.digest.sha256}  {packaged.digest.path}")
        return 0

    return run(prog, main, argv)
