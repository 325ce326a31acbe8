#!/usr/bin/env python3
"""Run the release gates over a repository.

Usage::

    python3 governance/gates/check_gates.py [--root REPO] [--report PATH] [--verbose]

Prints one line per gate (``PASS resources: ...`` / ``FAIL resources: ...``);
``--verbose`` adds every finding under its gate. ``--report PATH`` also writes
the deterministic JSON report (schema ``ransomeye.gates/v1``) atomically.

Exit status (the table of ``release/errors.py``): 0 when every gate passed,
4 when any gate failed, 2 on bad input
(a malformed or missing policy, unit file, manifest or declaration: one
message naming the file and the field), 130 when interrupted.

Needs the project's virtual environment (``make setup``): the secrets gate
runs detect-secrets' detectors. ``python3 governance/gates/check_gates.py``
with any python3 >= 3.11 re-executes itself under ``.venv/bin/python`` when
that interpreter lacks the library; before ``.venv`` exists it exits 3 with
one line saying which command sets it up. Everything else is the standard
library.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if __name__ == "__main__":
    gc.disable()  # while the modules load: see release.cli.run

_HERE = Path(__file__).resolve().parent
# Run as a script, Python puts this directory first on sys.path, where its
# modules could shadow others; the repository root is what must be importable.
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    del sys.path[0]
if str(_HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(_HERE.parents[1]))

from release.bootstrap import ensure_environment, ensure_repo_on_path

ensure_repo_on_path()
if __name__ == "__main__":
    ensure_environment("detect_secrets")
    from governance.gates import offline
    from release.cli import exit_process, fail
    from release.errors import ReleaseError

    try:
        offline.install()  # before detect-secrets: requests in the gates' process sends nothing
    except ReleaseError as e:
        exit_process(fail("check_gates", e))

from governance.gates.report import write_report
from governance.gates.suite import run_gates
from release.cli import run
from release.errors import BadInputError, GateFailure

PROG = "check_gates"
EXIT_PASSED = 0
EXIT_FAILED = GateFailure.exit_code
DEFAULT_ROOT = _HERE.parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Run the RansomEye release gates.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="repository to check (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="also write the JSON report to this file (atomically)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every finding under its gate")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run every gate over ``--root``; print one line per gate; return the exit status."""
    args = parse_args(argv)
    root: Path = args.root
    if not (root / "Cargo.toml").is_file():
        raise BadInputError(f"{root}: not a repository root (no Cargo.toml)", hint="pass --root REPO")
    report = run_gates(root)
    for gate in report.gates:
        print(gate.line())
        if args.verbose and not gate.passed:
            for finding in gate.findings:
                print(f"  - {finding.message}")
    if args.report is not None:
        write_report(report, args.report)
    return EXIT_PASSED if report.passed else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(run(PROG, main))
