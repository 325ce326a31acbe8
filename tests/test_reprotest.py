"""Reproducibility under variation: the archives and SBOMs stay identical whatever the build machine varies.

An equivalent of ``reprotest``'s check, with the same real mechanisms it
uses (reprotest itself needs ``sudo`` for its user variation, which this
machine has not): the same commit is released twice, a control build and a
build that varies, all at once,

* the time zone (``TZ``) and the locale (``LANG``, ``LC_ALL``),
* the umask (0077 against 0022),
* the build path (another clone, at another depth),
* the user (an unprivileged user namespace: uid and gid 4242 instead of 0),
* the file order (``disorderfs`` with reversed directory entries over the
  clone, as reprotest mounts it).

A probe run under the same variations shows each took effect. Links and
signatures legitimately differ (links record when each step ran); the
archives and the SBOMs must not. The wall clock is not varied here:
``faketime`` makes ``rustc`` stall on this machine (``faketime <date> rustc
--print sysroot`` never returns), so the clock's part is the control release
itself, built minutes earlier, and ``test_build.py``'s two releases at
different times; every time in an archive comes from ``SOURCE_DATE_EPOCH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Repo, git, release_env

pytestmark = pytest.mark.slow
PROBE = (
    "import os; print(os.environ['TZ'], "
    "os.environ['LC_ALL'], oct(os.umask(0)), os.getuid(), os.getgid(), '|'.join(os.listdir('probe-order')))"
)


def _varied(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in ``cwd`` with every variation on: TZ, locale, umask 0077, uid/gid 4242."""
    wrapped = ["bwrap", "--unshare-user", "--uid", "4242", "--gid", "4242", "--bind", "/", "/", "--dev", "/dev",
               "--proc", "/proc", "--", *command]  # fmt: skip
    env = release_env({"TZ": "Pacific/Kiritimati", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"})
    return subprocess.run(wrapped, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False,
                          preexec_fn=lambda: os.umask(0o077))  # fmt: skip


@pytest.fixture
def disordered(released: Repo, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A clone of a committed repository copy, seen through disorderfs (directory entries reversed).

    With the control release's keys: the code-signing key is part of the Windows binaries' bytes.
    """
    from tests.conftest import make_repo

    repo = make_repo(tmp_path / "source" / "ransomeye", keys_from=released.keys)
    clone = tmp_path / "a" / "much" / "deeper" / "build" / "path"
    clone.mkdir(parents=True)
    git(clone, "clone", "-q", str(repo.root), str(clone / "ransomeye"))
    shutil.copytree(repo.keys, clone / "ransomeye" / "keys", dirs_exist_ok=True)
    mount = tmp_path / "disordered"
    mount.mkdir()
    proc = subprocess.run(["disorderfs", "--reverse-dirents=yes", "--multi-user=yes", str(clone / "ransomeye"),
                           str(mount)], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    try:
        yield mount, clone / "ransomeye"
    finally:
        subprocess.run(["fusermount", "-u", str(mount)], capture_output=True, check=False)


def test_archives_stay_identical_under_variation(released: Repo, disordered: tuple[Path, Path]) -> None:
    mount, underneath = disordered
    # The probe: each variation is in effect where the varied build runs.
    (underneath / "probe-order").mkdir()
    for name in ("a", "b", "c", "d"):
        (underneath / "probe-order" / name).touch()
    plain_order = os.listdir(underneath / "probe-order")
    proc = _varied([sys.executable, "-c", PROBE], mount)
    assert proc.returncode == 0, proc.stderr
    tz, lc, umask, uid, gid, order = proc.stdout.split()
    assert (tz, lc, umask, uid, gid) == ("Pacific/Kiritimati", "de_DE.UTF-8", "0o77", "4242", "4242")
    assert order.split("|") == plain_order[::-1], "disorderfs reverses the directory entries"
    shutil.rmtree(underneath / "probe-order")
    # The varied build (one builder: the variations are this machine's), then its archives against the control's.
    build = _varied([sys.executable, "release/builder/build.py", "--single-builder", "--no-sandbox"], mount)
    assert build.returncode == 0, build.stdout + build.stderr
    control = released.artifacts
    varied = mount / "release" / "artifacts"
    names = sorted(p.name for p in control.iterdir() if p.name.endswith((".tar.gz", ".zip", ".cdx.json")))
    assert len(names) == 8
    for name in names:
        assert (varied / name).read_bytes() == (control / name).read_bytes(), f"{name} differs under variation"
