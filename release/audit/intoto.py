"""The customer's verification: the stock ``in-toto-verify``, run on a scratch copy of a release folder.

``in-toto-verify`` runs the layout's inspections in its working directory:
they unpack archives into ``_inspect/`` and write one ``<inspection>.link``
each. To leave the audited folder exactly as it was, the verification runs
in a scratch directory holding a copy of the folder's files: hard links where
the file system allows (no archive is copied), real copies for the ``.link``
files (in-toto overwrites inspection links in place, which would write
through a hard link) and wherever hard links are refused.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from release.attest import LAYOUT_NAME
from release.audit.model import InTotoResult
from release.errors import BadInputError, ToolchainError

VERIFY_TIMEOUT = 600
_LOG_TAIL = 40


def in_toto_verify_command() -> str:
    """The stock ``in-toto-verify``: the one beside the running interpreter, else the one on PATH.

    Raises :class:`ToolchainError` when there is none.
    """
    beside = Path(sys.executable).parent / "in-toto-verify"
    found = str(beside) if beside.is_file() else shutil.which("in-toto-verify")
    if found is None:
        raise ToolchainError(
            "in-toto-verify not found", hint="install in-toto (`pip install in-toto`, or `make setup`)"
        )
    return found


def failure_reason(stderr: str) -> str:
    """The reason line of a failed ``in-toto-verify`` run (its last ``(in-toto-verify)`` line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "(in-toto-verify)" in line:
            return line.split("(in-toto-verify)", 1)[1].strip()
    return lines[-1] if lines else "(no output)"


def _stage(folder: Path, scratch: Path) -> None:
    """Put a copy of ``folder``'s top-level regular files into ``scratch`` (hard links when possible)."""
    for p in sorted(folder.iterdir()):
        st = p.lstat()
        if not stat.S_ISREG(st.st_mode):
            continue  # directories (a previous run's _inspect/), symlinks, devices: never staged
        dest = scratch / p.name
        if not p.name.endswith(".link"):
            try:
                os.link(p, dest, follow_symlinks=False)
                continue
            except OSError:
                pass  # another file system, or hard links refused: copy instead
        shutil.copyfile(p, dest, follow_symlinks=False)


def run_in_toto_verify(
    folder: Path, owner_pub: Path, *, scratch_parent: Path | None = None, timeout: int = VERIFY_TIMEOUT
) -> InTotoResult:
    """Run the stock ``in-toto-verify`` on the release in ``folder``, as a customer does, without touching it.

    The verification runs in a scratch directory (created in ``scratch_parent``,
    default the system's temporary directory, and removed afterwards) that
    holds the folder's regular files; see the module docstring. Returns
    ``ok=True`` on exit 0, otherwise ``ok=False`` and the reason line.
    Raises :class:`ToolchainError` when ``in-toto-verify`` is missing and
    :class:`BadInputError` when the folder or the key cannot be read.
    """
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a directory")
    if not owner_pub.is_file():
        raise BadInputError(f"{owner_pub}: the owner's public key is not a readable file")
    command = [in_toto_verify_command(), "--layout", LAYOUT_NAME, "--verification-keys", str(owner_pub.resolve())]
    command += ["--inspection-timeout", str(timeout)]
    with tempfile.TemporaryDirectory(prefix="ransomeye-audit-", dir=scratch_parent) as tmp:
        scratch = Path(tmp) / "release"
        scratch.mkdir()
        try:
            _stage(folder, scratch)
        except OSError as e:
            raise BadInputError(f"{folder}: cannot read the release folder: {e.strerror or e}") from e
        if not (scratch / LAYOUT_NAME).is_file():
            return InTotoResult(False, f"no {LAYOUT_NAME} in the folder")
        try:
            proc = subprocess.run(
                command, cwd=scratch, capture_output=True, text=True, timeout=timeout, check=False
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return InTotoResult(False, f"in-toto-verify timed out after {timeout} s")
        except OSError as e:
            raise ToolchainError(f"cannot run {command[0]}: {e.strerror or e}") from e
    output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL:])
    if proc.returncode == 0:
        return InTotoResult(True, "the release passed in-toto-verify", output)
    return InTotoResult(False, failure_reason(proc.stderr), output)
