"""Create and sign the in-toto root layout of the RansomEye release.

The layout is generated from the product declaration in ``Cargo.toml`` and
authorises each functionary key for its own steps: ``keys/gates.pub`` (gates),
``keys/build.pub`` (build, provenance), ``keys/package.pub`` (packaging),
``keys/release.pub`` (sign, checksums), and every other builder's
``keys/builder-*/build.pub`` and ``package.pub``; the build and packaging steps
need a link from every builder, all agreeing. It is version-agnostic: one signed
layout serves every release until it expires. The owner runs this on the
machine that holds ``keys/owner.pem`` (offline in production) and commits
the result; the build server then never needs the owner key.

Usage: ``python3 layouts/create_layout.py [--keys-dir keys] [--expires-days N] [--out layouts/root.layout]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography", "in_toto")

from release import attest
from release.cli import run
from release.pipeline import functionaries
from release.products import load_workspace, repo_root
from release.signers import load_role_key

DEFAULT_DAYS = 365


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        root = repo_root()
        parser = argparse.ArgumentParser(prog="create_layout", description="Create and sign the root layout.")
        parser.add_argument("--keys-dir", type=Path, default=root / "keys")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=DEFAULT_DAYS,
            help=f"days until the layout expires (1 to {attest.MAX_EXPIRY_DAYS}, default {DEFAULT_DAYS})",
        )
        parser.add_argument("--out", type=Path, default=root / "layouts" / attest.LAYOUT_NAME)
        ns = parser.parse_args(args)
        ws = load_workspace(root)
        expires = attest.expiry(ns.expires_days)
        owner = load_role_key(ns.keys_dir, "owner")
        layout = attest.build_layout(ws, functionaries(ns.keys_dir), expires)
        attest.write_layout(attest.sign_layout(layout, owner), ns.out)
        builders = len(layout.steps[1].pubkeys)
        print(f"wrote {ns.out}: {len(layout.steps)} steps ({builders} builders must agree), "
              f"{len(layout.inspect)} inspections, expires {layout.expires}")  # fmt: skip
        return 0

    return run("create_layout", inner, argv)


if __name__ == "__main__":
    sys.exit(main())
