"""Deterministic, streaming archive writers (tar.gz and zip).

The bytes of an archive depend only on the entries' names, contents and
executable bits, and on the epoch: entries are sorted, mtimes are the epoch,
owners are 0/0 with no names, modes are 755 (directories, executables) or 644,
the gzip header carries no name and no time, zip entries carry a fixed DOS
time and no extra fields. Files are streamed in chunks, never read whole; the
archive is hashed (SHA-256 and BLAKE2b-512) while it is written, to a temporary
file that is renamed into place only when complete.

Rules for input trees (:func:`collect_tree`): regular files and directories
are taken; a symlink is followed only when it resolves inside the tree being
packaged, and is then stored as the regular file it points to; symlinks
leaving the tree, FIFOs, sockets and device files are refused. Hard links are
stored as independent regular files. Names must be printable and free of
backslashes, and no member name may be absolute or contain ``..``.
setuid/setgid/sticky bits and group/world write bits are dropped by the mode
normalisation. A file over :data:`MAX_FILE_BYTES` (1 GiB, e.g. a huge sparse
file) is refused rather than streamed for minutes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import stat
import tarfile
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from release.deflate import AdaptiveDeflate, GzipWriter
from release.errors import BadInputError, PackagingError, SystemFailure, ToolchainError
from release.faults import failpoint

CHUNK = 1 << 20
MAX_FILE_BYTES = 1 << 30  # one input file; larger (or huge sparse) files are refused
GZIP_LEVEL = 6
ZIP_LEVEL = 6
EXEC_MODE = 0o755
FILE_MODE = 0o644
_ZLIB_COMPRESSOR = type(zlib.compressobj())
_ZIP_MIN_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest DOS date


def workers(jobs: int | None = None) -> int:
    """Threads for ``jobs`` pieces of work that keep a core busy (hashing, compressing, a step's process): one per
    core this process may use (its CPU affinity, not the host's count), and no more than there are jobs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, jobs if jobs is not None else cores))


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory (``source`` is None) or a file."""

    arcname: str
    source: Path | None
    executable: bool = False

    @property
    def is_dir(self) -> bool:
        return self.source is None

    @property
    def mode(self) -> int:
        if self.is_dir or self.executable:
            return EXEC_MODE
        return FILE_MODE


@dataclass(frozen=True)
class ArtifactDigest:
    """A written file: its path, size and digests, computed while writing.

    ``sha256_state`` is the SHA-256 object that hashed exactly those bytes (it
    gave ``sha256``), kept so that a signature hashing the file and then its
    own trailer (OpenPGP) continues from it instead of reading the file
    again: never updated, only copied. ``identity`` is the file's
    :func:`file_identity` once those bytes were in it: a file whose identity
    changed since is read again. Both are None where the digest was not
    computed from the file as it stands.
    """

    path: Path
    size: int
    sha256: str
    blake2b: bytes
    sha256_state: Any = field(default=None, compare=False, repr=False)
    identity: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name


class HashingWriter(io.RawIOBase):
    """A write-only, non-seekable stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self._blake2b = hashlib.blake2b(digest_size=64)
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b)
        self._raw.write(view)
        self._sha256.update(view)
        self._blake2b.update(view)
        self._size += len(view)
        return len(view)

    def tell(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("HashingWriter is not seekable")

    def flush(self) -> None:
        self._raw.flush()

    def digest(self, path: Path) -> ArtifactDigest:
        return ArtifactDigest(path, self._size, self._sha256.hexdigest(), self._blake2b.digest())


@dataclass(frozen=True)
class Member:
    """One member as written: what the packaging link declares so a verifier can bound and check every read."""

    name: str
    kind: str  # "file" or "dir"
    mode: int
    size: int
    sha256: str  # "" for a directory

    def declaration(self) -> list[str | int]:
        """The member as the packaging link records it: ``[name, kind, mode, size, sha256]``."""
        return [self.name, self.kind, self.mode, self.size, self.sha256]


@dataclass(frozen=True)
class WrittenArchive:
    """An archive just written, the SHA-256 of every input file as it was read, and its members in order."""

    digest: ArtifactDigest
    inputs: dict[Path, str]
    members: tuple[Member, ...]


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes (SHA-256) what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.sha256.update(memoryview(b)[:n])
        return int(n or 0)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file that appears at ``path`` whole, and only if the block succeeds: the one atomic write.

    The block writes ``.<name>.part`` in the same directory (what a crashed
    run left there is replaced; a link there is removed, never followed); it is
    then fsynced, made mode 0644 and renamed into place. On any failure the
    temporary file is removed, ``path`` is untouched and the error propagates.
    """
    tmp = path.with_name(f".{path.name}.part")
    tmp.unlink(missing_ok=True)
    f = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE), "wb")
    try:
        yield f
        f.flush()
        os.fchmod(f.fileno(), FILE_MODE)
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write already failed; the partial file goes below
            f.close()
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make the entries of the directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, what: str) -> ArtifactDigest:
    """Write small ``data`` (a document, not an archive) to ``path`` with :func:`atomic_file`; return its digest.

    A directory that does not exist is a :class:`BadInputError` (the caller
    named it); any other OSError is a :class:`SystemFailure`; both name
    ``what`` ("the SBOM", "the report").
    """
    if not path.parent.is_dir():
        raise BadInputError(f"{path}: cannot write {what}: {path.parent} is not a directory")
    try:
        with atomic_file(path) as f:
            f.write(data)
    except OSError as e:
        raise SystemFailure(f"{path}: cannot write {what}: {e.strerror or e}") from e
    return digest_bytes(path, data)


def digest_bytes(path: Path, data: bytes) -> ArtifactDigest:
    """The digest of ``data``, just written to ``path`` (hashed from memory, not read back)."""
    sha = hashlib.sha256(data)
    try:
        identity = file_identity(os.stat(path, follow_symlinks=False), len(data))
    except OSError:
        identity = None
    return ArtifactDigest(path, len(data), sha.hexdigest(), hashlib.blake2b(data).digest(), sha, identity)


def file_identity(st: os.stat_result, size: int) -> tuple[int, ...] | None:
    """What tells a regular file of ``size`` bytes from the same file rewritten: device, inode, size, modification
    and change times (a write, ``utime`` or rename sets the change time, and nothing sets it back); None for
    anything else, or another size. Two writes within one tick of a file system's clock can leave both times
    as they were: the verify step, which hashes what is on disk, is the check that does not depend on them."""
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def renamed(digest: ArtifactDigest, path: Path) -> ArtifactDigest:
    """``digest``, of a file this process has just renamed to ``path``: the same file (device, inode, size,
    modification time) keeps its hash state, with the change time the rename gave it; any other loses it."""
    try:
        now = file_identity(os.stat(path, follow_symlinks=False), digest.size)
    except OSError:
        now = None
    same = now is not None and digest.identity is not None and now[:4] == digest.identity[:4]
    return dataclasses.replace(digest, path=path, identity=now if same else None)


def hash_file(path: Path) -> ArtifactDigest:
    """Hash an existing file by streaming it (SHA-256 and BLAKE2b-512)."""
    with path.open("rb") as f:
        return hash_stream(path, f)


def hash_stream(path: Path, f: IO[bytes]) -> ArtifactDigest:
    """Hash the open file ``f`` (named ``path``) by streaming it to its end (SHA-256 and BLAKE2b-512)."""
    sha = hashlib.sha256()
    b2 = hashlib.blake2b(digest_size=64)
    size = 0
    before = os.fstat(f.fileno())
    while chunk := f.read(CHUNK):
        sha.update(chunk)
        b2.update(chunk)
        size += len(chunk)
    identity = file_identity(os.fstat(f.fileno()), size)
    if identity != file_identity(before, size):  # written while it was read: these bytes are no file's
        identity = None
    return ArtifactDigest(path, size, sha.hexdigest(), b2.digest(), sha, identity)


def sha256_file(path: Path) -> str:
    """The SHA-256 of an existing file, streamed: for files that are recorded but never signed."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def copy_private(src: int, size: int, dst: Path, mode: int) -> tuple[int, str]:
    """Copy the first ``size`` bytes of the open file ``src`` into the new file ``dst``, then hash the copy.

    The kernel copies (``copy_file_range``: file systems that share extents,
    such as btrfs or XFS, clone them, others copy inside the kernel;
    ``sendfile`` where the file systems differ): no byte passes through this
    process but once, when the copy is read back for its SHA-256. The hash
    is of the bytes at ``dst``, a file of its own (one name, its own inode)
    that whatever writes ``src`` later cannot change. ``dst`` is created with
    ``mode`` (``O_EXCL``, never followed); on any failure it is removed.
    Returns the bytes copied (fewer than ``size`` when ``src`` ended early)
    and the copy's SHA-256. Raises OSError.
    """
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        copied = _kernel_copy(src, fd, size)
        os.fchmod(fd, mode)  # the umask may have taken bits away
        os.lseek(fd, 0, os.SEEK_SET)
        with io.FileIO(fd, "r", closefd=False) as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    except BaseException:
        os.close(fd)
        dst.unlink(missing_ok=True)
        raise
    os.close(fd)
    return copied, sha256


_NO_KERNEL_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _kernel_copy(src: int, dst: int, size: int) -> int:
    """Copy bytes ``[0, size)`` of ``src`` to ``dst`` in the kernel; return how many there were."""
    done = 0
    sendfile = False
    while done < size:
        count = min(size - done, 1 << 30)
        if not sendfile:
            try:
                n = os.copy_file_range(src, dst, count, done, done)
            except OSError as e:
                if e.errno not in _NO_KERNEL_COPY:
                    raise
                sendfile = True
                os.lseek(dst, done, os.SEEK_SET)  # sendfile writes at the file's offset
                continue
        else:
            n = os.sendfile(dst, src, done, count)
        if n == 0:
            break
        done += n
    return done


def check_name(name: str, where: str) -> None:
    """Refuse a path component that cannot be archived safely."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise PackagingError(f"{where}: the name {name!r} is not allowed in an archive")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in name):
        raise PackagingError(
            f"{where}: the name {name!r} contains a control or invisible character",
            hint="rename the file; archive member names must be printable",
        )


def check_arcname(arcname: str) -> None:
    """Refuse an archive member name that could escape the extraction directory."""
    if arcname.startswith("/") or not arcname:
        raise PackagingError(f"archive member {arcname!r}: absolute or empty names are not allowed")
    for part in arcname.split("/"):
        check_name(part, f"archive member {arcname!r}")


def _file_kind(path: Path, st: os.stat_result) -> str | None:
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device file"
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return "not a regular file"
    return None


def collect_tree(root: Path, tree: Path, arc_prefix: str) -> list[Entry]:
    """List the entries for directory ``tree`` (inside ``root``) under ``arc_prefix``.

    ``arc_prefix`` is the archive-relative directory (POSIX). Raises
    :class:`PackagingError` for anything the module docstring says is refused.
    Never opens FIFOs or devices (only ``lstat`` is used on them).
    """
    rel = tree.relative_to(root) if tree.is_relative_to(root) else tree
    try:
        st = tree.lstat()
    except FileNotFoundError as e:
        raise PackagingError(f"{rel}: asset directory not found", hint="check the bundle's assets in Cargo.toml") from e
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise PackagingError(f"{rel}: an asset must be a real directory, not a symlink or file")
    real_tree = tree.resolve()
    entries: list[Entry] = [Entry(arc_prefix, None)]
    _walk(tree, real_tree, arc_prefix, root, entries)
    return entries


def _walk(directory: Path, real_tree: Path, arc_dir: str, root: Path, out: list[Entry]) -> None:
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise PackagingError(f"{directory.relative_to(root)}: cannot be listed: {e.strerror}") from e
    for name in names:
        path = directory / name
        rel = path.relative_to(root)
        check_name(name, str(rel))
        arcname = f"{arc_dir}/{name}"
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve()
            if not target.is_relative_to(real_tree):
                raise PackagingError(
                    f"{rel}: symlink leaves the packaged tree (-> {os.readlink(path)})",
                    hint="replace it with the file itself, or remove it",
                )
            st = target.stat()
            if stat.S_ISDIR(st.st_mode):
                raise PackagingError(f"{rel}: symlinks to directories are not packaged", hint="replace it with a copy")
            path = target
        kind = _file_kind(path, st)
        if kind is not None:
            raise PackagingError(f"{rel}: is {kind}; only regular files and directories are packaged")
        if stat.S_ISDIR(st.st_mode):
            out.append(Entry(arcname, None))
            _walk(path, real_tree, arcname, root, out)
        elif st.st_size > MAX_FILE_BYTES:
            raise PackagingError(
                f"{rel}: {st.st_size} bytes is over the {MAX_FILE_BYTES}-byte limit for one packaged file",
                hint="large or sparse files do not belong in a release asset",
            )
        else:
            out.append(Entry(arcname, path, executable=bool(st.st_mode & 0o111)))


def directory_entries(arcnames: Iterable[str]) -> list[Entry]:
    """Directory entries for every parent of ``arcnames`` (sorted, unique)."""
    dirs: set[str] = set()
    for name in arcnames:
        parent = PurePosixPath(name).parent
        while str(parent) not in (".", "/"):
            dirs.add(str(parent))
            parent = parent.parent
    return [Entry(d, None) for d in sorted(dirs)]


def normalize(entries: Iterable[Entry]) -> list[Entry]:
    """Sort entries by name, merge duplicate directories, refuse duplicate files."""
    by_name: dict[str, Entry] = {}
    for e in entries:
        check_arcname(e.arcname)
        prev = by_name.get(e.arcname)
        if prev is not None and not (prev.is_dir and e.is_dir):
            raise PackagingError(f"two inputs map to the same archive member {e.arcname!r}")
        by_name[e.arcname] = e
    return [by_name[k] for k in sorted(by_name)]


def check_windows_names(entries: Sequence[Entry]) -> None:
    """Refuse names that collide on Windows (case-insensitive, NFC-normalised)."""
    seen: dict[str, str] = {}
    for e in entries:
        key = unicodedata.normalize("NFC", e.arcname).casefold()
        if key in seen and seen[key] != e.arcname:
            raise PackagingError(
                f"{e.arcname!r} and {seen[key]!r} are the same name on Windows (case or Unicode normalisation)",
                hint="rename one of them",
            )
        seen[key] = e.arcname


def _open_source(entry: Entry) -> IO[bytes]:
    if entry.source is None:
        raise PackagingError(f"{entry.arcname}: a directory entry has no content to read")
    try:
        fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise PackagingError(f"{entry.source}: cannot be read: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PackagingError(f"{entry.source}: is no longer a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _write_error(out_path: Path, err: OSError) -> PackagingError:
    hint = f"free space on the disk holding {out_path.parent}" if err.errno == errno.ENOSPC else None
    return PackagingError(f"{out_path.name}: cannot be written: {err.strerror or err}", hint=hint)


def write_tar_gz(entries: Sequence[Entry], out_path: Path, epoch: int) -> WrittenArchive:
    """Write ``entries`` as a deterministic tar.gz at ``out_path``; return its digest and inputs.

    Side effects: creates ``out_path`` atomically. Raises :class:`PackagingError`
    when an input cannot be read or changes while being read.
    """
    entries = normalize(entries)
    inputs: dict[Path, str] = {}
    members: list[Member] = []
    with (
        _atomic_archive(out_path) as hw,
        GzipWriter(hw, GZIP_LEVEL) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for n, e in enumerate(entries):
            failpoint(f"write:{out_path.name}:{n}")
            info = tarfile.TarInfo(e.arcname)
            info.mtime = epoch
            info.mode = e.mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if e.source is None:
                info.type = tarfile.DIRTYPE
                try:
                    tar.addfile(info)
                except ValueError as err:  # plain ustar: a name over 100 bytes that no directory split fits
                    raise PackagingError(f"archive member {e.arcname!r}: {err} for a tar archive") from err
                members.append(Member(e.arcname, "dir", e.mode, 0, ""))
                continue
            with _open_source(e) as src:
                info.size = os.fstat(src.fileno()).st_size
                reader = HashingReader(src)
                try:
                    tar.addfile(info, reader)
                except OSError as err:
                    raise PackagingError(f"{e.source}: changed while being packaged ({err})") from err
                except ValueError as err:  # plain ustar: a name over 100 bytes that no directory split fits
                    raise PackagingError(f"archive member {e.arcname!r}: {err} for a tar archive") from err
                inputs[e.source] = reader.sha256.hexdigest()
                members.append(Member(e.arcname, "file", e.mode, info.size, inputs[e.source]))
    return WrittenArchive(hw.digest(out_path), inputs, tuple(members))


@contextlib.contextmanager
def _atomic_archive(out_path: Path) -> Iterator[HashingWriter]:
    """A hashing stream into :func:`atomic_file`: ``out_path`` appears only if the block succeeds.

    An OSError (a full disk) becomes a :class:`PackagingError` naming the archive.
    """
    try:
        with atomic_file(out_path) as f:
            yield HashingWriter(f)
    except OSError as err:
        raise _write_error(out_path, err) from err


def _dos_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(epoch, _ZIP_MIN_EPOCH))
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _store_what_does_not_compress(member: IO[bytes]) -> None:
    """Give a zip member being written the archives' :class:`AdaptiveDeflate` in place of zipfile's own.

    ``zipfile`` has no public hook for its compressor; a new Python whose member
    writer no longer holds a zlib compressor in ``_compressor`` is refused here
    rather than silently writing other bytes.
    """
    if not isinstance(getattr(member, "_compressor", None), _ZLIB_COMPRESSOR):
        raise ToolchainError(
            "this Python's zipfile no longer keeps its compressor where the zip writer replaces it",
            hint="run the release with Python 3.11 to 3.13, whose zipfile the zip writer knows",
        )
    member._compressor = AdaptiveDeflate(ZIP_LEVEL)  # type: ignore[attr-defined]


def write_zip(entries: Sequence[Entry], out_path: Path, epoch: int) -> WrittenArchive:
    """Write ``entries`` as a deterministic zip at ``out_path``; return its digest and inputs.

    Entries are stored deflated with a fixed DOS time (the epoch, or
    1980-01-01 if earlier), Unix modes and no extra fields. Names that collide
    on Windows are refused.
    """
    entries = normalize(entries)
    check_windows_names(entries)
    date_time = _dos_time(epoch)
    inputs: dict[Path, str] = {}
    members: list[Member] = []
    with (
        _atomic_archive(out_path) as hw,
        zipfile.ZipFile(hw, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as zf,
    ):
        for n, e in enumerate(entries):
            failpoint(f"write:{out_path.name}:{n}")
            name = e.arcname + "/" if e.is_dir else e.arcname
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.create_system = 3
            if e.source is None:
                info.external_attr = ((stat.S_IFDIR | e.mode) << 16) | 0x10
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
                members.append(Member(e.arcname, "dir", e.mode, 0, ""))
                continue
            info.external_attr = (stat.S_IFREG | e.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with _open_source(e) as src:
                info.file_size = os.fstat(src.fileno()).st_size
                reader = HashingReader(src)
                with zf.open(info, "w") as dst:
                    _store_what_does_not_compress(dst)
                    copied = 0
                    while chunk := reader.read(CHUNK):
                        dst.write(chunk)
                        copied += len(chunk)
                if copied != info.file_size:
                    raise PackagingError(f"{e.source}: changed while being packaged")
                inputs[e.source] = reader.sha256.hexdigest()
                members.append(Member(e.arcname, "file", e.mode, copied, inputs[e.source]))
    return WrittenArchive(hw.digest(out_path), inputs, tuple(members))


def write_archive(fmt: str, entries: Sequence[Entry], out_path: Path, epoch: int) -> WrittenArchive:
    """Write ``entries`` in format ``fmt`` ("tar.gz" or "zip")."""
    if fmt == "tar.gz":
        return write_tar_gz(entries, out_path, epoch)
    if fmt == "zip":
        return write_zip(entries, out_path, epoch)
    raise PackagingError(f"unknown archive format {fmt!r}")
