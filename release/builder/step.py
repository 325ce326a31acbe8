"""Run pipeline steps apart: ``python3 release/builder/step.py STEP --work DIR`` (one CI job each).

Every step reads the source (this checkout) and the earlier steps' products
and links from ``DIR/out``, and writes its products and its signed link
there, signed with its own role's key only (``--keys-dir``). The build and
packaging steps run in the bubblewrap sandbox. A CI engine runs the steps on
separate runners and hands the work folder on (.github/workflows/release.yml,
.gitlab-ci.yml):

    step.py gates     --work W             # the gates key
    step.py build     --work W             # a builder's build key
    step.py codesign  --work W             # Authenticode-sign the Windows binaries (the signer's code-signing key)
    step.py packagers --work W             # every packaging step (a builder's package key), after codesign
    step.py builder   --work W             # build + packagers, when no bundle is for Windows
    step.py provenance --work W            # the first builder's build key
    step.py sign      --work W             # the release key (then checksums)
    step.py layout    --work W             # the signed root layout (committed, or the development owner's)
    step.py verify    --work W             # the customer's verification of W/out, before publishing it

``STEP`` is any step name (gates, build, codesign, package-<bundle>,
provenance, sign, checksums), ``packagers`` (every packaging step),
``builder`` (the steps every builder runs), ``layout`` or ``verify``.
``--inner`` is the sandboxed half of a builder step (internal).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    gc.disable()  # while the modules load: see release.cli.run
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography", "in_toto")

from release import attest
from release.cli import exit_process, run
from release.errors import Interrupted, ReleaseError, SystemFailure
from release.pipeline import (
    builder_steps,
    functionaries,
    resolve_layout,
    run_apart,
    run_inner,
    verify_apart,
    write_inner_error,
)
from release.products import load_workspace, repo_root
from release.sandbox import find_sandbox


def _inner(ns: argparse.Namespace, root: Path) -> int:
    """The sandboxed half: run the step, and leave the error (if any) where the caller reads it."""
    prebuilt = ns.unsafe_prebuilt_binaries.resolve() if ns.unsafe_prebuilt_binaries is not None else None
    output = ns.output.resolve()
    try:
        handed = sys.stdin.read()  # from the caller: toolchains, cargo metadata, the earlier steps' links
        run_inner(root, ns.step, ns.work.resolve(), output, ns.target_dir.resolve(), prebuilt, handed)
    except ReleaseError as e:
        write_inner_error(output, e)
        raise
    except KeyboardInterrupt:
        write_inner_error(output, Interrupted(False))
        raise
    except OSError as e:
        error = SystemFailure(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")
        write_inner_error(output, error)
        raise error from e
    return 0


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        root = repo_root()
        parser = argparse.ArgumentParser(prog="step", description=__doc__.split("\n\n")[0] if __doc__ else None)
        parser.add_argument("step", help="a step name, or packagers, builder, layout, verify")
        parser.add_argument("--work", type=Path, required=True, help="the work folder (DIR/out: products and links)")
        parser.add_argument("--keys-dir", type=Path, default=root / "keys", help="this job's keys (default: keys/)")
        parser.add_argument(
            "--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
        )
        parser.add_argument("--no-sandbox", action="store_true", help="UNSAFE: build and package unsandboxed")
        parser.add_argument("--single-builder", action="store_true", help="layout: for one builder only")
        parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
        parser.add_argument("--unsafe-prebuilt-binaries", type=Path, help=argparse.SUPPRESS)
        ns = parser.parse_args(args)
        if ns.inner:
            return _inner(ns, root)
        work = ns.work.resolve()
        keys_dir = ns.keys_dir.resolve()
        ws = load_workspace(root)
        if ns.step == "layout":
            publics = functionaries(keys_dir, 1 if ns.single_builder else None)
            metablock, origin = resolve_layout(ws, keys_dir, publics)
            (work / "out").mkdir(parents=True, exist_ok=True)
            attest.write_layout(metablock, work / "out" / attest.LAYOUT_NAME)
            print(f"wrote {work / 'out' / attest.LAYOUT_NAME} ({origin})")
            return 0
        if ns.step == "verify":
            print(verify_apart(root, work, keys_dir / "owner.pub"))
            return 0
        if ns.step == "builder":
            names = list(builder_steps(ws))
        elif ns.step == "packagers":
            names = [b.step for b in ws.bundles]
        else:
            names = [ns.step]
        sandbox = find_sandbox(ns.no_sandbox)
        run_apart(root, names, work, keys_dir, ns.target_dir.resolve(), sandbox)
        return 0

    return run("step", inner, argv)


if __name__ == "__main__":
    exit_process(main())
