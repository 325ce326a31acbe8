"""Staging directories, the build lock and the atomic publish.

All work of a release happens in ``release/.staging/<run>/``; the release
folder ``release/artifacts/`` is replaced in one atomic step
(``renameat2(RENAME_EXCHANGE)``) only when everything succeeded. Readers see
either the complete previous release or the complete new one. Staging
directories left by a crashed run are removed by the next run, under the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from release.archive import fsync_dir
from release.errors import BuildBusyError, SystemFailure
from release.faults import failpoint

STAGING_DIRNAME = ".staging"
PREVIOUS_DIRNAME = ".previous"
LOCK_NAME = ".build.lock"
KEEP_FILES = (".gitkeep",)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextlib.contextmanager
def build_lock(release_dir: Path) -> Iterator[None]:
    """Hold the exclusive build lock of ``release_dir`` for the ``with`` body.

    Fails fast with :class:`BuildBusyError` when another build holds it. The
    lock is released by the kernel if the process dies.
    """
    release_dir.mkdir(parents=True, exist_ok=True)
    path = release_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BuildBusyError(
                f"another release build is running (pid {holder}); it holds {path}",
                hint="wait for it to finish; two builds never share release/artifacts/",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as e:
        raise SystemFailure(f"cannot remove the leftover {path}: {e.strerror}", hint="remove it by hand") from e


def clean_stale(release_dir: Path, keep: Path | None = None) -> list[Path]:
    """Remove what earlier runs left in the staging area, except ``keep`` (call with the lock held).

    A run creates its own staging directory first and cleans the others after
    (``keep`` is its own), so at every moment something shows that a run was
    under way: a kill before the new directory exists leaves the old ones.
    Returns the paths removed; raises :class:`SystemFailure` if one cannot be.
    """
    root = release_dir / STAGING_DIRNAME
    removed = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child == keep:
                continue
            _remove(child)
            removed.append(child)
    return removed


def new_staging(release_dir: Path) -> Path:
    """Create a fresh, private staging directory for one run."""
    root = release_dir / STAGING_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    import secrets  # a run's own process only: a step's never makes a staging directory

    path = root / f"run-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories; False when the system cannot."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def publish(new_dir: Path, artifacts_dir: Path) -> None:
    """Make ``new_dir`` the release folder ``artifacts_dir`` in one atomic step.

    Files listed in ``KEEP_FILES`` (``.gitkeep``) are carried over. The old
    release is kept whole in ``.previous/`` beside ``artifacts_dir`` (replacing
    the one kept before), so a reader still listing it sees it complete.
    Raises :class:`SystemFailure` if the swap cannot be made;
    ``artifacts_dir`` is then unchanged.
    """
    for keep in KEEP_FILES:
        old = artifacts_dir / keep
        if old.is_file() and not (new_dir / keep).exists():
            shutil.copy2(old, new_dir / keep)
    fsync_dir(new_dir)
    failpoint("publish:before-exchange")
    try:
        if not artifacts_dir.exists():
            os.rename(new_dir, artifacts_dir)
        elif not _exchange(new_dir, artifacts_dir):
            # No atomic exchange: fall back to two renames (a crash between
            # them leaves the old release in the staging dir, not published).
            aside = new_dir.with_name(new_dir.name + ".old")
            os.rename(artifacts_dir, aside)
            os.rename(new_dir, artifacts_dir)
            os.rename(aside, new_dir)
    except OSError as e:
        raise SystemFailure(f"cannot publish into {artifacts_dir}: {e.strerror}") from e
    fsync_dir(artifacts_dir.parent)
    failpoint("publish:after-exchange")
    if new_dir.exists():
        previous = artifacts_dir.parent / PREVIOUS_DIRNAME
        if previous.exists():
            _remove(previous)
        os.rename(new_dir, previous)
