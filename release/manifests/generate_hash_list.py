"""Write ``SHA256SUMS`` for a release folder (see :mod:`release.checksums`).

Usage: ``python3 release/manifests/generate_hash_list.py [DIR]`` (default:
``release/artifacts``) writes ``DIR/SHA256SUMS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from release.checksums import write_hash_list
from release.cli import run
from release.errors import BadInputError
from release.products import repo_root


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        parser = argparse.ArgumentParser(
            prog="generate_hash_list", description="Write SHA256SUMS for a release folder."
        )
        parser.add_argument("dir", nargs="?", type=Path, default=repo_root() / "release" / "artifacts")
        ns = parser.parse_args(args)
        if not ns.dir.is_dir():
            raise BadInputError(f"{ns.dir}: not a directory")
        digest = write_hash_list(ns.dir.resolve())
        print(f"wrote {digest.path} ({len(digest.path.read_text().splitlines())} entries)")
        return 0

    return run("generate_hash_list", inner, argv)


if __name__ == "__main__":
    sys.exit(main())
