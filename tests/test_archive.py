"""Deterministic archives: the bytes depend on the content only; hostile trees are refused."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.archive import (
    Entry,
    check_windows_names,
    collect_tree,
    copy_private,
    hash_file,
    write_tar_gz,
    write_zip,
)
from release.errors import PackagingError

EPOCH = 1_700_000_000

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
tree_strategy = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map(tuple),
    st.tuples(st.binary(max_size=2048), st.booleans()),
    min_size=1,
    max_size=12,
)


def _consistent(tree: dict[tuple[str, ...], tuple[bytes, bool]]) -> dict[tuple[str, ...], tuple[bytes, bool]]:
    """Drop files whose path is a prefix of another file's (a name cannot be a file and a directory)."""
    paths = sorted(tree)
    return {p: tree[p] for p in paths if not any(q[: len(p)] == p and q != p for q in paths)}


def _materialize(
    root: Path, tree: dict[tuple[str, ...], tuple[bytes, bool]], order: list[int], mtime: int, umask_bits: int
) -> None:
    items = sorted(tree.items())
    for i in order:
        parts, (data, executable) = items[i]
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        mode = (0o777 if executable else 0o666) & ~umask_bits
        os.chmod(path, mode | (0o100 if executable else 0))
        os.utime(path, (mtime, mtime))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tree=tree_strategy.map(_consistent),
    seed=st.randoms(use_true_random=False),
    mtimes=st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    umasks=st.tuples(st.sampled_from([0o022, 0o077, 0o002, 0o000]), st.sampled_from([0o022, 0o077, 0o002, 0o000])),
)
def test_archive_bytes_depend_only_on_content(
    tmp_path_factory: pytest.TempPathFactory,
    tree: dict[tuple[str, ...], tuple[bytes, bool]],
    seed: object,
    mtimes: tuple[int, int],
    umasks: tuple[int, int],
) -> None:
    """Random trees built twice (other order, mtimes, umask, path) give identical archives."""
    import random

    assert isinstance(seed, random.Random)
    digests: dict[str, set[str]] = {"tar.gz": set(), "zip": set()}
    for attempt in range(2):
        base = tmp_path_factory.mktemp("tree")
        order = list(range(len(tree)))
        seed.shuffle(order)
        _materialize(base / "src", tree, order, mtimes[attempt], umasks[attempt])
        entries = collect_tree(base, base / "src", "pkg-1.0/src")
        digests["tar.gz"].add(write_tar_gz(entries, base / "a.tar.gz", EPOCH).digest.sha256)
        digests["zip"].add(write_zip(entries, base / "a.zip", EPOCH).digest.sha256)
    assert len(digests["tar.gz"]) == 1
    assert len(digests["zip"]) == 1


def _tree(tmp_path: Path) -> list[Entry]:
    (tmp_path / "src" / "bin").mkdir(parents=True)
    (tmp_path / "src" / "README").write_text("read me\n")
    tool = tmp_path / "src" / "bin" / "tool"
    tool.write_bytes(b"\x7fELF" + os.urandom(100))
    tool.chmod(0o4777)  # setuid and world-writable: normalised away
    return collect_tree(tmp_path, tmp_path / "src", "pkg-1.0")


def test_tar_gz_is_normalized(tmp_path: Path) -> None:
    digest = write_tar_gz(_tree(tmp_path), tmp_path / "out.tar.gz", EPOCH).digest
    raw = (tmp_path / "out.tar.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[3] & 0x08 == 0, "no file name in the gzip header"
    assert raw[4:8] == b"\0\0\0\0", "no time in the gzip header"
    assert digest.sha256 == hashlib.sha256(raw).hexdigest() == hash_file(tmp_path / "out.tar.gz").sha256
    assert digest.blake2b == hashlib.blake2b(raw, digest_size=64).digest()
    assert digest.size == len(raw)
    with tarfile.open(tmp_path / "out.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert [m.name for m in members] == ["pkg-1.0", "pkg-1.0/README", "pkg-1.0/bin", "pkg-1.0/bin/tool"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", EPOCH)
        assert m.mode == (0o644 if m.name.endswith("README") else 0o755)


def test_zip_is_normalized(tmp_path: Path) -> None:
    write_zip(_tree(tmp_path), tmp_path / "out.zip", EPOCH)
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
    assert [i.filename for i in infos] == ["pkg-1.0/", "pkg-1.0/README", "pkg-1.0/bin/", "pkg-1.0/bin/tool"]
    for info in infos:
        assert info.date_time == (2023, 11, 14, 22, 13, 20)
        assert info.extra == b""
        mode = info.external_attr >> 16
        assert stat.S_IMODE(mode) == (0o644 if info.filename.endswith("README") else 0o755)


def test_zip_clamps_epoch_to_1980(tmp_path: Path) -> None:
    write_zip(_tree(tmp_path), tmp_path / "old.zip", 0)
    with zipfile.ZipFile(tmp_path / "old.zip") as zf:
        assert zf.infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)


def test_gzip_level_matches_stock_gzip(tmp_path: Path) -> None:
    """The archive decompresses with the stock tools (gzip -t, tar)."""
    write_tar_gz(_tree(tmp_path), tmp_path / "out.tar.gz", EPOCH)
    with gzip.open(tmp_path / "out.tar.gz") as f:
        assert len(f.read()) % 512 == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: os.symlink("/etc/passwd", d / "escape"), "symlink leaves the packaged tree"),
        (lambda d: os.symlink("../outside.txt", d / "escape"), "symlink leaves the packaged tree"),
        (lambda d: os.mkfifo(d / "pipe"), "FIFO"),
        (lambda d: (d / "bad\nname").write_text("x"), "control or invisible character"),
        (lambda d: (d / "back\\slash").write_text("x"), "not allowed"),
    ],
    ids=["absolute-symlink", "relative-symlink-out", "fifo", "newline-name", "backslash-name"],
)
def test_hostile_inputs_are_refused(tmp_path: Path, make: object, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    assert callable(make)
    make(src)
    with pytest.raises(PackagingError, match=message):
        collect_tree(tmp_path, src, "pkg")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_device_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(PackagingError, match="device file"):
        collect_tree(tmp_path, src, "pkg")


def test_symlink_inside_tree_is_stored_as_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("content")
    os.symlink("real.txt", src / "alias.txt")
    entries = collect_tree(tmp_path, src, "pkg")
    write_tar_gz(entries, tmp_path / "out.tar.gz", EPOCH)
    with tarfile.open(tmp_path / "out.tar.gz") as tar:
        alias = tar.getmember("pkg/alias.txt")
        assert alias.isfile()
        f = tar.extractfile(alias)
        assert f is not None and f.read() == b"content"


def test_windows_name_collisions_are_refused(tmp_path: Path) -> None:
    entries = [Entry("pkg/Readme.txt", tmp_path), Entry("pkg/README.TXT", tmp_path)]
    with pytest.raises(PackagingError, match="same name on Windows"):
        check_windows_names(entries)
    nfc_nfd = [Entry("pkg/caf\u00e9", tmp_path), Entry("pkg/cafe\u0301", tmp_path)]
    with pytest.raises(PackagingError, match="same name on Windows"):
        check_windows_names(nfc_nfd)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    entries = [Entry("pkg", None), Entry("pkg/gone", src / "missing")]
    with pytest.raises(PackagingError):
        write_tar_gz(entries, tmp_path / "out.tar.gz", EPOCH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_workers_are_the_cores_this_process_may_use_and_no_more_than_the_jobs() -> None:
    from release.archive import workers

    cores = len(os.sched_getaffinity(0))
    assert workers() == cores
    assert workers(10_000) == cores, "the affinity, not the host's CPU count, bounds the threads"
    assert workers(1) == 1 and workers(0) == 1, "at least one thread, even for no job"


# --- a private copy, by the kernel, hashed once ---------------------------------------------------------------


def _copy(src: Path, dst: Path, size: int | None = None) -> tuple[int, str]:
    fd = os.open(src, os.O_RDONLY)
    try:
        return copy_private(fd, src.stat().st_size if size is None else size, dst, 0o755)
    finally:
        os.close(fd)


@given(data=st.binary(max_size=1 << 16))
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_private_copy_is_the_source_hashed(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("copy")
    (folder / "src").write_bytes(data)
    assert _copy(folder / "src", folder / "dst") == (len(data), hashlib.sha256(data).hexdigest())
    st_dst = (folder / "dst").stat()
    assert (folder / "dst").read_bytes() == data and stat.S_IMODE(st_dst.st_mode) == 0o755
    assert st_dst.st_ino != (folder / "src").stat().st_ino and st_dst.st_nlink == 1


def test_without_copy_file_range_it_copies_by_sendfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across file systems (EXDEV on kernels since 5.19) or where the file system has no copy_file_range."""
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)
    calls = []

    def across(src: int, dst: int, count: int, *args: int) -> int:
        calls.append(count)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", across)
    assert _copy(tmp_path / "src", tmp_path / "dst") == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data and len(calls) == 1


def test_a_source_shorter_than_said_is_copied_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"short")
    assert _copy(tmp_path / "src", tmp_path / "dst", size=100) == (5, hashlib.sha256(b"short").hexdigest())


def test_a_private_copy_never_writes_through_what_is_at_its_place(tmp_path: Path) -> None:
    """A file or a symlink already at ``dst`` is an error; neither it nor what it points to is written."""
    (tmp_path / "src").write_bytes(b"binary")
    (tmp_path / "victim").write_bytes(b"victim")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    for dst in (tmp_path / "victim", tmp_path / "link"):
        with pytest.raises(FileExistsError):
            _copy(tmp_path / "src", dst)
    assert (tmp_path / "victim").read_bytes() == b"victim" and (tmp_path / "link").is_symlink()


def test_a_failed_copy_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").write_bytes(b"binary")

    def failing(*args: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "copy_file_range", failing)
    with pytest.raises(OSError, match="Input/output error"):
        _copy(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
