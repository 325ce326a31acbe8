"""Make an entry-point script runnable as ``python3 path/to/script.py``.

Standard library only. :func:`ensure_repo_on_path` puts the repository root on
``sys.path`` so ``import release...`` works. :func:`ensure_environment`
re-executes the script under the project's ``.venv`` when the running
interpreter lacks the pinned dependencies, or says which command sets it up.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP_COMMAND = "make setup"
# ToolchainError's code in release/errors.py's table (a test keeps them equal); this
# module runs before the environment exists, so it imports nothing of the project.
EXIT_NOT_SET_UP = 3


def ensure_repo_on_path() -> None:
    root = str(ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def ensure_environment(*modules: str) -> None:
    """Guarantee that ``modules`` import, re-executing under ``.venv`` if needed.

    Exits with status 3 and a one-line instruction when the environment has
    not been set up yet.
    """
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.is_file() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])  # noqa: S606 - re-exec the same script
    missing = ", ".join(m for m in modules if importlib.util.find_spec(m) is None)
    print(
        f"{Path(sys.argv[0]).name}: error: the Python environment is not set up (missing: {missing})\n"
        f"  hint: run `{SETUP_COMMAND}` (or `make release`) in {ROOT.name}/ once, then run this again",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_NOT_SET_UP)
