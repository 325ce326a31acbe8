"""Facts about the source tree being released: its commit and its epoch."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from release.archive import sha256_file
from release.errors import BadInputError, PackagingError
from release.products import Workspace

CACHE_DIRS = frozenset({"__pycache__", "target", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"})
CACHE_SUFFIXES = (".pyc", ".pyo")

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
    if not re.fullmatch(r"[0-9]+", raw):
        raise BadInputError(f"{where} = {raw!r} is not a non-negative integer number of seconds")
    return int(raw)


def source_commit(root: Path) -> str | None:
    """The commit of HEAD, or None outside a git checkout."""
    return _git(root, "rev-parse", "HEAD")


def source_files(ws: Workspace, tops: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Every file of the gated source (or of the repository-relative ``tops``), by repository-relative path, sorted.

    The source is the declaration's ``sources``; caches (``__pycache__``,
    ``*.pyc``, ``target``) are not source and are left out. A symlink to a
    file is listed as that file when it stays inside the repository; symlinks
    to directories are refused (no loops, no walking a tree twice).
    Raises :class:`BadInputError` for a missing source, a symlink leaving the
    repository, or anything that is not a regular file or directory (a FIFO
    is never opened), and :class:`PackagingError` for a file with more than
    one name (a hard link: its bytes could be another file's, anywhere on the
    disk, under an innocent name).
    """
    out: dict[str, Path] = {}

    def visit(path: Path) -> None:
        rel = path.relative_to(ws.root).as_posix()
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BadInputError(f"{rel}: declared source not found", hint="fix `sources` in Cargo.toml") from None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise BadInputError(f"{rel}: symlink dangles or loops") from None
            if not target.is_relative_to(ws.root):
                raise BadInputError(f"{rel}: symlink leaves the repository or dangles")
            st = target.stat()
            if stat.S_ISDIR(st.st_mode):
                raise BadInputError(
                    f"{rel}: symlinks to directories are not followed (a symlinked source directory)",
                    hint="replace it with a copy",
                )
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                if child in CACHE_DIRS or child.endswith(CACHE_SUFFIXES):
                    continue
                visit(path / child)
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                raise PackagingError(
                    f"{rel}: a hard link ({st.st_nlink} names for one file); the source must hold no hard links "
                    "(route: hard link)",
                    hint=f"give it bytes of its own: cp {rel} {rel}.copy && mv {rel}.copy {rel}",
                )
            out[rel] = path
        else:
            raise BadInputError(f"{rel}: is not a regular file or directory; the source must hold only those")

    for src in ws.sources if tops is None else tops:
        visit(ws.root / src)
    return dict(sorted(out.items()))


def hash_sources(ws: Workspace) -> dict[str, str]:
    """The SHA-256 of every file of the gated source (:func:`source_files`), by repository-relative path.

    Raises what :func:`source_files` raises.
    """
    return {rel: sha256_file(path) for rel, path in source_files(ws).items()}
