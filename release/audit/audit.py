"""Audit a downloaded RansomEye release, offline, with the owner's public key.

Usage::

    python3 release/audit/audit.py RELEASE_DIR --owner-key owner.pub [--json out.json] [--html out.html] [--quiet]

Verifies the in-toto layout and links (with the stock ``in-toto-verify``),
every signature, ``SHA256SUMS``, the gates report, the SBOMs and the SLSA
provenance against the archives, prints the account of the release, and
writes it as JSON and/or a self-contained HTML page. Reads only RELEASE_DIR
and the key; writes only the reports; no network.

Exit codes: 0 verified; 1 verification failed (every failure is named);
2 could not run (bad arguments, unreadable folder or key, in-toto-verify missing).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if __name__ == "__main__":
    gc.disable()  # while the modules load: see release.cli.run
if __package__ in (None, ""):
    # Run as a script: the repository root goes first, and this directory (which
    # Python put first) goes, so its module names can never shadow anything.
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p not in ("", _here)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography", "in_toto", "securesystemslib", "cyclonedx")

from release.audit.checks import audit
from release.audit.render import printable, render_text, write_html, write_json
from release.cli import exit_process, run
from release.errors import BadInputError, ReleaseError, VerificationError

EXIT_VERIFIED = 0
EXIT_FAILED = VerificationError.exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInputError(message, hint=f"usage: {self.format_usage().strip().removeprefix('usage: ')}")


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        parser = _Parser(prog="audit", description=(__doc__ or "").split("\n\n")[0])
        parser.add_argument("release_dir", type=Path, help="the release folder (as downloaded)")
        parser.add_argument("--owner-key", type=Path, required=True, help="the owner's public key (PEM)")
        parser.add_argument("--json", type=Path, help="write the report as JSON here")
        parser.add_argument("--html", type=Path, help="write the report as a self-contained HTML page here")
        parser.add_argument("--quiet", action="store_true", help="print only the verdict")
        ns = parser.parse_args(args)
        try:
            report = audit(ns.release_dir, ns.owner_key)
            text = f"Verdict: {report.verdict}\n" if ns.quiet else render_text(report)
            if ns.json:
                write_json(report, ns.json)
            if ns.html:
                write_html(report, ns.html)
        except ReleaseError as e:
            if isinstance(e, BadInputError):
                raise
            raise BadInputError(e.message, hint=e.hint) from e  # anything that stops the audit: could not run
        except Exception as e:  # a fault of the audit itself: one line, never a traceback
            raise BadInputError(
                f"the audit could not run: {type(e).__name__}: {printable(str(e))}",
                hint="this is a bug of the audit; please report it with the folder that caused it",
            ) from e
        print(text, end="")
        return EXIT_VERIFIED if report.verified else EXIT_FAILED

    return run("audit", inner, argv)


if __name__ == "__main__":
    exit_process(main())
