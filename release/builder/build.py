"""Make a release: ``python3 release/builder/build.py`` (the engine is :mod:`release.pipeline`).

Runs every step of the release (gates, build, one packaging step per declared
bundle, provenance, sign, checksums, then the customer's verification on the
staged release) and publishes ``release/artifacts/`` atomically, or changes
nothing. Exit codes: the table in ``release/errors.py`` (the README lists it).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    gc.disable()  # while the modules load: see release.cli.run
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography", "in_toto")

from release.attest import LAYOUT_NAME
from release.cli import exit_process, run
from release.pipeline import UNSAFE_PREBUILT_DIR, human_size, run_release
from release.products import Workspace, load_workspace, repo_root
from release.sandbox import find_sandbox


def _summary(ws: Workspace, artifacts_dir: Path, keys_dir: Path, customer: bool) -> str:
    """What was published, and how a customer verifies it (and fetches it, from the TUF repository of a customer
    release: a prebuilt run never adds to it, nor imports its code)."""
    from release.keys import DEV_MARKER  # after the run: the keys' code is not imported before the gates start

    lines = [f"Published RansomEye {ws.version} to {artifacts_dir}:"]
    for p in sorted(artifacts_dir.iterdir()):
        if not p.name.startswith(".") and not p.name.endswith(".link"):
            lines.append(f"  {p.name:<48} {human_size(p.stat().st_size):>10}")
    links = sorted(p.name for p in artifacts_dir.glob("*.link"))
    lines.append(f"  {len(links)} in-toto links ({', '.join(n.split('.')[0] for n in links)})")
    lines.append(
        f"Verify: cd {artifacts_dir} && in-toto-verify --layout {LAYOUT_NAME} --verification-keys {keys_dir}/owner.pub"
    )
    if customer:
        from release.repository import REPOSITORY_DIRNAME, TRUSTED_ROOT_NAME

        repository = artifacts_dir.parent / REPOSITORY_DIRNAME
        if (repository / "metadata" / "timestamp.json").exists() and (keys_dir / TRUSTED_ROOT_NAME).exists():
            lines.append(
                f"Fetch:  python3 release/fetch.py --root {keys_dir / TRUSTED_ROOT_NAME} "
                f"--mirror file://{repository} --product core"
            )
    if (keys_dir / DEV_MARKER).exists():
        bar = "!" * 72
        lines += [bar, "!! Signed with DEVELOPMENT keys: for testing only, never for customers.", bar]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        root = repo_root()
        parser = argparse.ArgumentParser(prog="build", description=__doc__.split("\n\n")[0] if __doc__ else None)
        parser.add_argument(
            "--keys-dir", type=Path, default=root / "keys", help="directory of the keys (default: keys/)"
        )
        parser.add_argument(
            "--target-dir",
            type=Path,
            default=Path(os.environ.get("CARGO_TARGET_DIR", root / "target")),
            help="cargo's target directory, kept between builds (default: target/)",
        )
        parser.add_argument(
            "--unsafe-prebuilt-binaries",
            type=Path,
            metavar="DIR",
            help="UNSAFE, for benchmarks: take <target>/<binary> from DIR instead of building the source; "
            f"the result is marked unsafe in its links, layout and provenance and lands in {UNSAFE_PREBUILT_DIR}/, "
            "never in the release folder",
        )
        parser.add_argument(
            "--single-builder",
            action="store_true",
            help="a development release of this builder only (a layout of threshold 1); the default is every "
            "builder whose keys are in keys/builder-*/, each rebuilding the commit from a fresh clone",
        )
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="UNSAFE: build and package without bubblewrap; the links, the provenance and the audit say so",
        )
        ns = parser.parse_args(args)
        started = time.monotonic()
        prebuilt = ns.unsafe_prebuilt_binaries
        if prebuilt is not None:
            prebuilt = prebuilt.resolve()
            print(f"WARNING: --unsafe-prebuilt-binaries: the binaries come from {prebuilt}, not from the source")
        sandbox = find_sandbox(ns.no_sandbox)
        if not sandbox.enabled:
            print("WARNING: --no-sandbox: the build and packaging steps run unsandboxed (recorded in the provenance)")
        artifacts_dir = run_release(
            root,
            ns.keys_dir.resolve(),
            ns.target_dir.resolve(),
            prebuilt,
            single_builder=ns.single_builder,
            sandbox=sandbox,
        )
        print(_summary(load_workspace(root), artifacts_dir, ns.keys_dir, customer=prebuilt is None))
        if prebuilt is not None:
            print("UNSAFE: made from prebuilt binaries, not a customer release (the release folder is untouched).")
        print(f"Done in {time.monotonic() - started:.1f}s.")
        return 0

    return run("build", inner, argv)


if __name__ == "__main__":
    exit_process(main())
