"""Facts about the source tree being released: its commit and its epoch."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from release.errors import BadInputError

EPOCH_VARIABLE = "SOURCE_DATE_EPOCH"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def source_date_epoch(root: Path) -> int:
    """The timestamp every archive entry gets: ``SOURCE_DATE_EPOCH``, else HEAD's commit time.

    Raises :class:`BadInputError` when neither is available or the value is not
    a non-negative integer.
    """
    raw = os.environ.get(EPOCH_VARIABLE)
    where = EPOCH_VARIABLE
    if raw is None:
        raw = _git(root, "log", "-1", "--format=%ct", "HEAD")
        where = "the commit time of HEAD"
    if raw is None:
        raise BadInputError(
            f"no {EPOCH_VARIABLE} and {root} is not a git checkout with a commit",
            hint=f"set {EPOCH_VARIABLE} to the release's timestamp (seconds since 1970)",
        )
    if not raw.isdigit():
        raise BadInputError(f"{where} = {raw!r} is not a non-negative integer number of seconds")
    return int(raw)


def source_commit(root: Path) -> str | None:
    """The commit of HEAD, or None outside a git checkout."""
    return _git(root, "rev-parse", "HEAD")
