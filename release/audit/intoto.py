"""The customer's verification: the stock ``in-toto-verify``, run on a scratch copy of a release folder.

``in-toto-verify`` runs the layout's inspection in its working directory and
writes ``<inspection>.link`` there. To leave the audited folder exactly as it
was, the verification runs in a scratch directory holding a copy of the
folder's regular files: hard links where the file system allows (no archive
is copied), real copies for the ``.link`` files (in-toto writes its
inspection link in place, which would write through a hard link) and
wherever hard links are refused.

A process about to verify can call :func:`warm` first: the stock command's
interpreter starts then and imports its command module (a tenth of a
second), and the next verification runs that module's ``main``, as the
console script does, with the same arguments, environment and working
directory, only sooner. The release pipeline does so while its last
packaging step runs.

Before anything runs, the folder gets the checks the README's customer
procedure makes: only regular files are staged (nothing is followed), none
over :data:`MAX_FILE_BYTES` (in-toto hashes every file before any check of
ours), and every ``.link`` must be an in-toto link: in-toto runs the
inspections of a layout it finds in place of a link, so a functionary's key
could otherwise run commands on the auditor's machine.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from release.attest import LAYOUT_NAME
from release.audit.evidence import MAX_DOCUMENT_BYTES, Folder
from release.audit.model import InTotoResult
from release.errors import BadInputError, ToolchainError, VerificationError
from release.inspection import MARKER, MAX_ARCHIVE_BYTES

VERIFY_TIMEOUT = 600
MAX_FILE_BYTES = MAX_ARCHIVE_BYTES
_LOG_TAIL = 40
# What the console script ``in-toto-verify`` runs, split where it waits: its module imported at once, then,
# given the working directory and the arguments on one line, its ``main``. ``-P``: no working directory
# on the import path, as a script's own directory is there instead of it.
_WARM_SHIM = """\
import json, os, sys
from in_toto.in_toto_verify import main
line = sys.stdin.readline()
if not line:
    raise SystemExit(0)
given = json.loads(line)
os.chdir(given["cwd"])
sys.argv = ["in-toto-verify", *given["args"]]
raise SystemExit(main())
"""
_warm_lock = threading.Lock()
_warm_proc: subprocess.Popen[str] | None = None
_warm_for: tuple[str, dict[str, str]] | None = None  # the command and environment it stands for


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


def _interpreter(script: str) -> str | None:
    """The Python a console script's ``#!`` line names, when that is one absolute path to an executable ``python*``.

    Anything else (``/usr/bin/env python3``, the ``/bin/sh`` trampoline pip
    writes for a long or spaced path, a binary) is None: the command runs itself.
    """
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    if len(words) != 1 or not os.path.isabs(words[0]) or not os.path.basename(words[0]).startswith("python"):
        return None
    if not os.path.isfile(words[0]) or not os.access(words[0], os.X_OK):
        return None
    return words[0]


def _same_start(env: dict[str, str]) -> bool:
    """Whether an interpreter started now, elsewhere, sees what one started in the scratch folder would.

    Python makes each empty or relative ``PYTHONPATH`` entry absolute against
    the directory it starts in: with one, only a cold run is the same run.
    """
    entries = env.get("PYTHONPATH")
    return entries is None or all(os.path.isabs(entry) for entry in entries.split(os.pathsep))


def warm() -> None:
    """Start the stock ``in-toto-verify``'s interpreter, importing its command, for the next verification.

    Does nothing when one is waiting, when the command is missing or its
    ``#!`` line is not a plain Python path, or when ``PYTHONPATH`` holds a
    relative entry (the verification then starts the command itself, in the
    scratch folder). Unused, the process ends when this one does.
    """
    global _warm_proc, _warm_for
    with _warm_lock:
        if _warm_proc is not None and _warm_proc.poll() is None:
            return
        try:
            command = in_toto_verify_command()
        except ToolchainError:
            return
        python = _interpreter(command)
        env = verifier_env()
        if python is None or not _same_start(env):
            return
        try:
            _warm_proc = subprocess.Popen(
                [python, "-P", "-c", _WARM_SHIM],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            _warm_for = (command, env)
        except OSError:
            _warm_proc = None


def _take_warm(command: str | None = None) -> subprocess.Popen[str] | None:
    """The waiting interpreter :func:`warm` started, if it is alive and stands for ``command`` run now; else None.

    Taken either way (it serves one verification): one started for another
    command or environment (changed since) is ended here.
    """
    global _warm_proc, _warm_for
    with _warm_lock:
        proc, started_for, _warm_proc, _warm_for = _warm_proc, _warm_for, None, None
    if proc is None:
        return None
    if proc.poll() is None and command is not None and started_for == (command, verifier_env()):
        return proc
    _end(proc)
    return None


def _end(proc: subprocess.Popen[str]) -> None:
    try:
        proc.communicate("", timeout=5)  # no request: it exits
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@atexit.register
def _end_warm() -> None:
    _take_warm()


def _verify(command: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (the stock ``in-toto-verify`` and its arguments) in ``cwd``: in the warm interpreter if any.

    Raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds, the process killed.
    """
    proc = _take_warm(command[0])
    if proc is None:
        return subprocess.run(
            command, cwd=cwd, env=verifier_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
    try:  # its standard input ends after the request: what the inspection reads there, as from /dev/null
        out, err = proc.communicate(json.dumps({"cwd": str(cwd), "args": command[1:]}) + "\n", timeout=timeout)
    except BaseException:  # a timeout, or this process interrupted: the verification ends with it
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


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
            proc = _verify(command, scratch, timeout)
        except subprocess.TimeoutExpired:
            return InTotoResult(False, f"in-toto-verify timed out after {timeout} s")
        except OSError as e:
            raise ToolchainError(f"cannot run {command[0]}: {e.strerror or e}") from e
    output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL:])
    if proc.returncode == 0:
        return InTotoResult(True, "the release passed in-toto-verify", output)
    return InTotoResult(False, failure_reason(proc.stderr), output)
