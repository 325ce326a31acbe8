"""The customer's verification: the stock ``in-toto-verify``, run on a scratch copy of a release folder.

``in-toto-verify`` runs the layout's inspection in its working directory and
writes ``<inspection>.link`` there. To leave the audited folder exactly as it
was, the verification runs in a scratch directory holding a copy of the
folder's regular files: hard links where the file system allows (no archive
is copied), real copies for the ``.link`` files (in-toto writes its
inspection link in place, which would write through a hard link) and
wherever hard links are refused.

Before anything runs, the folder gets the checks the README's customer
procedure makes: only regular files are staged (nothing is followed), none
over :data:`MAX_FILE_BYTES` (in-toto hashes every file before any check of
ours), and every ``.link`` must be an in-toto link: in-toto runs the
inspections of a layout it finds in place of a link, so a functionary's key
could otherwise run commands on the auditor's machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from release.attest import LAYOUT_NAME
from release.audit.evidence import MAX_DOCUMENT_BYTES, Folder
from release.audit.model import InTotoResult
from release.errors import BadInputError, ToolchainError, VerificationError
from release.inspection import MARKER, MAX_ARCHIVE_BYTES

VERIFY_TIMEOUT = 600
MAX_FILE_BYTES = MAX_ARCHIVE_BYTES
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


def verifier_env() -> dict[str, str]:
    """The environment ``in-toto-verify`` runs in: ours, with this interpreter's directory first on ``PATH``.

    The layout's inspection runs ``python3``; found there, it is a real
    interpreter, as on a customer's machine, not a version manager's shim
    (which costs tens of milliseconds per start).
    """
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), *path.split(os.pathsep)])}


def failure_reason(stderr: str) -> str:
    """The reason line of a failed ``in-toto-verify`` run (its last ``(in-toto-verify)`` line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "(in-toto-verify)" in line:
            return line.split("(in-toto-verify)", 1)[1].strip()
    return lines[-1] if lines else "(no output)"


def refusal(folder: Folder) -> str | None:
    """Why the stock tool must not run on ``folder`` at all, or None."""
    for name in sorted(folder.files):
        if folder.sizes[name] > MAX_FILE_BYTES:
            return f"{name}: {folder.sizes[name]} bytes, more than any release file (in-toto would hash it all)"
        # Case-insensitively: on such a file system in-toto opens "x.LINK" when it asks for "x.link".
        if name.lower().endswith(".layout") and folder.sizes[name] > MAX_DOCUMENT_BYTES:
            return f"{name}: {folder.sizes[name]} bytes, more than a layout (in-toto would read it whole)"
        if name.lower().endswith(".link"):
            try:
                data = folder.json(name)
            except VerificationError as e:
                return e.message
            signed = data.get("signed") if isinstance(data, dict) and sorted(data) == ["signatures", "signed"] else None
            if not isinstance(signed, dict) or signed.get("_type") != "link":
                return (
                    f"{name}: is not an in-toto link and nothing else "
                    "(in-toto would run the commands of a layout found in its place)"
                )
    return None


def _stage(folder: Folder, scratch: Path) -> None:
    """Put a copy of ``folder``'s regular files into ``scratch`` (hard links when possible)."""
    for name, p in sorted(folder.files.items()):
        dest = scratch / name
        # Copied, not linked: what the inspection removes or in-toto writes in place, and what it removes
        # only when it has one name (an earlier run's link and failure markers).
        if not name.endswith(".link") and not name.startswith(MARKER):
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
    try:
        listed = Folder.scan(folder)
    except OSError as e:
        raise BadInputError(f"{folder}: cannot read the release folder: {e.strerror or e}") from e
    why = refusal(listed)
    if why is not None:
        return InTotoResult(False, f"not run: {why}")
    command = [in_toto_verify_command(), "--layout", LAYOUT_NAME, "--verification-keys", str(owner_pub.resolve())]
    command += ["--inspection-timeout", str(timeout)]
    with tempfile.TemporaryDirectory(prefix="ransomeye-audit-", dir=scratch_parent) as tmp:
        scratch = Path(tmp) / "release"
        scratch.mkdir()
        try:
            _stage(listed, scratch)
        except OSError as e:
            raise BadInputError(f"{folder}: cannot read the release folder: {e.strerror or e}") from e
        if not (scratch / LAYOUT_NAME).is_file():
            return InTotoResult(False, f"no {LAYOUT_NAME} in the folder")
        try:
            proc = subprocess.run(
                command, cwd=scratch, env=verifier_env(), capture_output=True, text=True, timeout=timeout, check=False
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return InTotoResult(False, f"in-toto-verify timed out after {timeout} s")
        except OSError as e:
            raise ToolchainError(f"cannot run {command[0]}: {e.strerror or e}") from e
    output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL:])
    if proc.returncode == 0:
        return InTotoResult(True, "the release passed in-toto-verify", output)
    return InTotoResult(False, failure_reason(proc.stderr), output)
