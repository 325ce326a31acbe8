"""The layout's inspection: the program a customer's ``in-toto-verify`` runs in the download folder.

The root layout carries this file's text verbatim, signed by the owner, as
the command of its one inspection (``python3 -I -S -c <this file> <config>``),
so it must stand alone: the standard library only, Python 3.8 or newer, no
file of the folder ever imported (``-I`` keeps the folder off ``sys.path``),
and no brace anywhere in its text (in-toto passes a failed command's text
through ``str.format``, which a brace would crash).

in-toto runs it after it has checked the layout's signature, every link's
signature and every step's rules, and before it compares the folder with the
links. So the program trusts the links (the files in-toto just verified) and
nothing else, and it touches nothing before checking it against them:

1. It removes what an earlier run left (``verify-release.link``, failure
   markers), never following what stands at those names, so in-toto's own
   write of ``verify-release.link`` cannot be steered out of the folder.
2. It judges every entry of the folder by ``lstat``, whatever its name
   (in-toto's recording skips ``*.link*``, ``*~``, ``*.pyc`` and ``.git``):
   only the files the layout names for each step (for the release's one
   version), the layout and the links; no symlink, directory, FIFO, socket
   or device is ever opened. A link must be a signed link and nothing else.
3. Each archive is hashed and compared with its packaging step's link before
   one byte of it is parsed (its gzip wrapper included: only the packagers'
   plain header is accepted). Then its members are read in-process, never
   extracted: each must be, in order, the member the packaging link declares
   (name, type, mode, size, SHA-256), and each file must equal what the step
   read (a build product or a gated source file). Every read is bounded by
   those declarations and by hard caps; links, special files, set-uid bits,
   sparse or hidden members, unsafe or colliding names are refused. The
   archives are checked at once, a worker thread per core: the reasons come
   in the configuration's order whatever the threads do, and an archive whose
   worker fails or dies stays refused.
4. Content, not names: no member of a bundle may equal a file of a path the
   bundle must never contain (e.g. ``edge/``) or a binary it must never
   contain, and executables (ELF, PE, Mach-O, ``#!`` scripts) are allowed only
   at the bundle's declared binary paths.
5. ``SHA256SUMS`` (once its hash matches the checksums link) must list only
   files the steps produced, with their recorded hashes.

It writes nothing on success. On failure it creates one empty file per
reason, named ``verify-release FAILED <reason>`` in characters any file
system accepts, which the inspection's ``DISALLOW *`` rule then names on
in-toto's last line (in-toto discards an inspection's output), and exits 0;
if a marker cannot be written it exits 1, so a refusal never becomes an
acceptance. It starts no process, so in-toto's timeout, which kills only its
direct child, stops everything.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import stat
import struct
import sys
import threading
import unicodedata
import zlib

TYPE_CHECKING = False  # typing is not imported at run time: the program is started for each verification
if TYPE_CHECKING:
    from typing import Any

SCHEMA = "ransomeye.inspection/v1"
VERSION_PLACEHOLDER = "@V@"  # in the configuration's product names: the release's version
MARKER = "verify-release FAILED "
# How a marker's name shows what some file system cannot hold in a name (FAT, exFAT and SMB refuse
# \ / : * ? " < > |) or what in-toto would skip (.link, .pyc, ~): look-alike symbols that shown() never yields.
MARKER_SYMBOLS = (
    ("/", "\u2215"),
    ("\\", "\u29f5"),
    (":", "\u2236"),
    ("*", "\u2217"),
    ("?", "\uff1f"),
    ('"', "\u201d"),
    ("<", "\u2039"),
    (">", "\u203a"),
    ("|", "\u2223"),
    (".link", "\u2024link"),
    (".pyc", "\u2024pyc"),
    ("~", "\u223c"),
)
CHUNK = 1 << 20  # the most bytes one step of a reader inflates, copies or holds apart from a kept archive
READ_BYTES = 256 << 10  # compressed bytes handed to zlib at a time: they inflate to at most CHUNK bytes per call
KEEP_BYTES = 4 << 20  # an archive up to this size is parsed from the very bytes hashed (see read_checked)
MAX_FOLDER_ENTRIES = 10000
MAX_LINK_BYTES = 16 << 20
MAX_SUMS_BYTES = 4 << 20
MAX_MEMBERS = 100000
MAX_MEMBER_BYTES = 1 << 30  # the packagers refuse larger input files too
MAX_ARCHIVE_BYTES = 4 << 30  # an archive, and the sum of its members
MAX_CENTRAL_DIRECTORY_BYTES = 64 << 20
MAX_NAME_BYTES = 4096
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # deflate, no flags, no time (then XFL and the OS byte)
TAR_TAIL_BYTES = 512 + 10240  # the second end-of-archive block, then padding to a 10240-byte record
MAX_FAILURES = 20
MARKER_TEXT_BYTES = 200
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Content that runs: allowed only at a bundle's declared binary paths.
EXECUTABLE_MAGIC = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a PE (Windows) executable"),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal binary"),
    (b"#!", "a script with a #! line"),
)
HEAD_BYTES = 8


class Refused(Exception):
    """A reason the release does not verify (its text names the file and the problem)."""


def executable_kind(head: bytes) -> str | None:
    """What kind of executable ``head`` (a file's first bytes) starts, or None."""
    for magic, kind in EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return kind
    return None


def shown(text: str) -> str:
    """``text`` as printable ASCII: control, format, non-ASCII characters and backslashes escaped.

    Every attacker-chosen string (a file or member name) is shown this way, so
    it can never move a terminal's cursor or forge a line of a report.
    """
    return "".join(c if " " <= c <= "~" and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in text)


def in_toto_excluded(name: str) -> bool:
    """Whether in-toto's default exclude patterns (``*.link*``, ``.git``, ``*~``, ``*.pyc``) hide ``name``."""
    for part in name.split("/"):
        if ".link" in part or part == ".git" or part.endswith("~") or part.endswith(".pyc"):
            return True
    return False


def name_problem(name: str) -> str | None:
    """Why ``name`` (a POSIX relative path from an archive or a link) is unsafe, or None."""
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return "an empty or over-long name"
    if name.startswith("/"):
        return "an absolute name"
    for c in name:
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or c == "\\":
            return "a name with a control, invisible or backslash character"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "a name with an empty, '.' or '..' component"
    if in_toto_excluded(name):
        return "a name in-toto would not record (*.link*, .git, *~, *.pyc)"
    return None


def collision_key(name: str) -> str:
    """Names that are the same file on a case-insensitive, normalising file system share this key."""
    return unicodedata.normalize("NFC", name).casefold()


# --- reading files of the folder: never following, never blocking, bounded -------------------


def open_regular(name: str) -> tuple[int, os.stat_result]:
    """Open ``name`` in the current directory for reading, refusing anything but a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as e:
        raise Refused("%s: cannot be opened as a regular file (%s)" % (shown(name), e.strerror)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused("%s: is not a regular file" % shown(name))
    return fd, st


def read_small(name: str, limit: int) -> bytes:
    """The whole of the regular file ``name``, which must be at most ``limit`` bytes."""
    fd, st = open_regular(name)
    try:
        if st.st_size > limit:
            raise Refused(
                "%s: %d bytes, over the %d-byte limit for this kind of file" % (shown(name), st.st_size, limit)
            )
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise Refused("%s: grew past %d bytes while being read" % (shown(name), limit))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_fd(fd: int, limit: int) -> str:
    """The SHA-256 of what ``fd`` holds from its start; refuses more than ``limit`` bytes."""
    os.lseek(fd, 0, os.SEEK_SET)
    h = hashlib.sha256()
    total = 0
    while True:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return h.hexdigest()
        total += len(chunk)
        if total > limit:
            raise Refused("grew past its %d declared bytes while being read" % limit)
        h.update(chunk)


class Scratch:
    """One worker's buffer, reused from archive to archive (touching fresh memory is what costs)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def view(self, n: int) -> memoryview:
        """``n`` bytes of the buffer, whatever they hold; a larger buffer replaces it if needed (never resized)."""
        if len(self.buffer) < n:
            self.buffer = bytearray(n)
        return memoryview(self.buffer)[:n]


class Source:
    """The bytes of an archive whose SHA-256 was checked: kept in memory, or read again through its descriptor.

    Nothing is ever read past ``size``, the bytes that were hashed.
    """

    def __init__(self, fd: int, size: int, kept: memoryview | None = None) -> None:
        self.fd = fd
        self.size = size
        self.kept = kept

    def at(self, offset: int, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes from ``offset`` (fewer only at the end); a view of the kept bytes, not a copy."""
        if offset < 0 or n < 0:
            raise ValueError("a read before the start of the archive")
        n = max(0, min(n, self.size - offset))
        if self.kept is not None:
            return self.kept[offset : offset + n]
        return pread(self.fd, n, offset)


def read_checked(fd: int, size: int, digest: str, scratch: Scratch) -> Source | None:
    """Hash what ``fd`` holds from its start, ``size`` bytes; if their SHA-256 is ``digest``, the source to parse.

    Returns None when the hash differs; refuses a file that holds more than
    ``size`` bytes. An archive of up to ``KEEP_BYTES`` is read once, into
    ``scratch``, and parsed from there: the bytes parsed are the bytes hashed.
    A larger one is hashed through a window and read again, through the same
    descriptor and never past ``size``, for parsing (from the page cache).
    """
    keep = size <= KEEP_BYTES
    view = scratch.view(size if keep else min(size, CHUNK))
    h = hashlib.sha256()
    got = 0
    with open(fd, "rb", buffering=0, closefd=False) as f:
        f.seek(0)
        while got < size:
            window = view[got : got + CHUNK] if keep else view[: min(CHUNK, size - got)]
            n = f.readinto(window)
            if not n:
                break  # shorter than it was: the hash tells
            h.update(window[:n])
            got += n
        if f.read(1):
            raise Refused("grew past its %d declared bytes while being read" % size)
    if h.hexdigest() != digest:
        return None
    return Source(fd, got, view[:got] if keep else None)


# --- links ---------------------------------------------------------------------------------------


class Link:
    """A step's link, as in-toto verified it just before this program ran."""

    def __init__(self, file: str, signed: Any) -> None:
        self.file = file
        self.signed = signed
        self.materials = _artifacts(signed.get("materials"), file, "materials")
        self.products = _artifacts(signed.get("products"), file, "products")
        env = signed.get("environment")
        self.environment = env if isinstance(env, dict) else dict()
        byproducts = signed.get("byproducts")
        self.return_value = byproducts.get("return-value") if isinstance(byproducts, dict) else None
        command = signed.get("command")
        self.command = command if isinstance(command, list) else []


def _artifacts(raw: Any, file: str, what: str) -> Any:
    if not isinstance(raw, dict):
        raise Refused("%s: its %s are not a mapping" % (shown(file), what))
    out = dict()
    for name, digest in raw.items():
        value = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(value, str) or len(value) != 64:
            raise Refused("%s: %s %s has no SHA-256" % (shown(file), what, shown(str(name))))
        out[name] = value.lower()
    return out


def load_link(file: str, step: str) -> Link:
    data = read_small(file, MAX_LINK_BYTES)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise Refused("%s: not a readable link (%s)" % (shown(file), type(e).__name__)) from None
    # Exactly a signed link and its signatures: in-toto reads a DSSE envelope first when a "payload" is there,
    # so a file holding both would be verified as one document and read here as the other.
    signed = doc.get("signed") if isinstance(doc, dict) and sorted(doc) == ["signatures", "signed"] else None
    if not isinstance(signed, dict) or signed.get("_type") != "link":
        raise Refused("%s: is not an in-toto link and nothing else (a sublayout or another document)" % shown(file))
    if signed.get("name") != step:
        raise Refused("%s: is the link of step %s, not %s" % (shown(file), shown(str(signed.get("name"))), step))
    return Link(file, signed)


# --- archives: read in-process, strictly, bounded by what the packaging link declares -----------


class Member:
    """An archive member as declared (by the packaging link) or as read (from the archive)."""

    __slots__ = ("head", "kind", "mode", "name", "sha256", "size")

    def __init__(self, name: str, kind: str, mode: int, size: int, sha256: str = "", head: bytes = b"") -> None:
        self.name = name
        self.kind = kind
        self.mode = mode
        self.size = size
        self.sha256 = sha256
        self.head = head

    def describe(self) -> str:
        return "%s %s mode %o, %d bytes" % (self.kind, shown(self.name), self.mode, self.size)


class Expectation:
    """Checks each member header against the declared list, in order, before its data is read."""

    def __init__(self, archive: str, declared: list[Member] | None) -> None:
        self.archive = archive
        self.declared = declared
        self.index = 0
        self.seen = set()  # type: set[str]

    def header(self, got: Member) -> Member | None:
        """Refuse ``got`` unless it is the next declared member; return the declaration (None: no list)."""
        where = "%s: member %s" % (self.archive, shown(got.name))
        problem = name_problem(got.name)
        if problem is not None:
            raise Refused("%s is %s" % (where, problem))
        key = collision_key(got.name)
        if key in self.seen:
            raise Refused("%s appears twice (or collides by case or Unicode form with another)" % where)
        self.seen.add(key)
        if got.mode & ~0o777:
            raise Refused("%s has mode %o (set-uid, set-gid or sticky bits)" % (where, got.mode))
        if self.index >= MAX_MEMBERS:
            raise Refused("%s: more than %d members" % (self.archive, MAX_MEMBERS))
        if got.size > MAX_MEMBER_BYTES:
            raise Refused("%s claims %d bytes, over the %d-byte cap" % (where, got.size, MAX_MEMBER_BYTES))
        if self.declared is None:
            self.index += 1
            return None
        if self.index >= len(self.declared):
            raise Refused("%s is more than the %d members the packaging link declares" % (where, len(self.declared)))
        want = self.declared[self.index]
        self.index += 1
        if (got.name, got.kind, got.mode, got.size) != (want.name, want.kind, want.mode, want.size):
            raise Refused(
                "%s: found %s where the packaging link declares %s" % (self.archive, got.describe(), want.describe())
            )
        return want

    def finish(self) -> None:
        if self.declared is not None and self.index != len(self.declared):
            missing = self.declared[self.index]
            raise Refused("%s: ends before %s, which the packaging link declares" % (self.archive, shown(missing.name)))


def _read_member_data(read: Any, size: int, where: str) -> tuple[str, bytes]:
    """Hash exactly ``size`` bytes from ``read(n)``; return the SHA-256 and the first bytes (a copy)."""
    h = hashlib.sha256()
    head = b""
    left = size
    while left:
        chunk = read(min(left, CHUNK))
        if not chunk:
            raise Refused("%s: cut short" % where)
        if len(head) < HEAD_BYTES:
            head = (head + chunk[:HEAD_BYTES])[:HEAD_BYTES]
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest(), head


class Inflater:
    """The decompressed bytes of the one gzip member ``source`` holds, produced a bounded chunk at a time.

    The gzip wrapper is read here, not by zlib: only the fixed header the
    packagers write is accepted (no name, comment, extra field or time, which
    zlib would skip unseen), and the trailer's CRC-32 and length must match
    what was inflated.
    """

    def __init__(self, source: Source, archive: str) -> None:
        self.source = source
        self.archive = archive
        header = bytes(source.at(0, 10))
        self.offset = len(header)
        if len(header) != 10 or header[:8] != GZIP_HEADER or header[8] not in (0, 2, 4):
            raise Refused(
                "%s: not the plain gzip header the packagers write (a name, comment, extra or time)" % archive
            )
        self.z = zlib.decompressobj(-15)
        self.crc = 0
        self.size = 0
        self.pending = b""  # type: bytes | memoryview
        self.buffer = memoryview(b"")  # what was inflated last, handed out as views (no copy)
        self.pos = 0
        self.eof = False

    def _fill(self) -> bool:
        while not self.eof:
            if not self.pending:
                self.pending = self.source.at(self.offset, READ_BYTES)
                self.offset += len(self.pending)
                if not self.pending:
                    raise Refused("%s: the gzip stream is cut short" % self.archive)
            data = self.z.decompress(self.pending, CHUNK)
            self.pending = self.z.unconsumed_tail
            self.crc = zlib.crc32(data, self.crc)
            self.size += len(data)
            if self.z.eof:
                self.eof = True
                self._trailer(self.z.unused_data)
            if data:
                self.buffer, self.pos = memoryview(data), 0
                return True
        return False

    def _trailer(self, rest: bytes) -> None:
        """The 8-byte trailer, then the end of the file."""
        if len(rest) < 9:
            rest += self.source.at(self.offset, 9 - len(rest))
        if len(rest) != 8:
            raise Refused("%s: holds data after its gzip stream, or its trailer is cut short" % self.archive)
        if struct.unpack("<II", rest) != (self.crc, self.size & 0xFFFFFFFF):
            raise Refused("%s: its gzip trailer does not match what it inflates to" % self.archive)

    def read(self, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes, a view valid until the next call; empty only at the end of the stream."""
        if self.pos >= len(self.buffer) and not self._fill():
            return b""
        data = self.buffer[self.pos : self.pos + n]
        self.pos += len(data)
        return data

    def exactly(self, n: int) -> bytes:
        parts = []
        got = 0
        while got < n:
            data = self.read(n - got)
            if not data:
                raise Refused("%s: the tar stream is cut short" % self.archive)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def padding(self, size: int) -> None:
        """The zero bytes that pad a tar member of ``size`` bytes to a whole block."""
        pad = self.exactly(-size % 512)
        if pad.count(0) != len(pad):
            raise Refused("%s: hides data in the padding of a member" % self.archive)


def pread(fd: int, n: int, at: int) -> bytes:
    """Up to ``n`` bytes of ``fd`` from offset ``at`` (fewer only at its end)."""
    os.lseek(fd, at, os.SEEK_SET)
    parts = []
    got = 0
    while got < n:
        data = os.read(fd, min(n - got, CHUNK))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _octal(field: bytes, what: str, archive: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise Refused("%s: a tar header's %s field is not octal" % (archive, what))
    return int(text, 8)


def _nul_padded(field: bytes) -> bytes:
    """A tar name field's text: what comes before its first NUL (the rest must be NUL, or the header is refused)."""
    return field.split(b"\0", 1)[0]


def _ustar_split(name: bytes) -> tuple[bytes, bytes] | None:
    """How tarfile stores a member name in ustar's name and prefix fields (the shortest prefix that fits)."""
    if len(name) <= 100:
        return name, b""
    parts = name.split(b"/")
    for i in range(1, len(parts)):
        prefix, rest = b"/".join(parts[:i]), b"/".join(parts[i:])
        if len(prefix) <= 155 and len(rest) <= 100:
            return rest, prefix
    return None


def _ustar_header(name: bytes, prefix: bytes, mode: int, size: int, mtime: int, typeflag: bytes) -> bytes:
    """The ustar header the packagers write (Python's tarfile, owner 0/0, no names) for these fields."""
    head = (
        name.ljust(100, b"\0")
        + b"%07o\0" % mode
        + b"0000000\0" * 2
        + b"%011o\0" % size
        + b"%011o\0" % mtime
        + b" " * 8
        + typeflag
        + b"\0" * 100
        + b"ustar\x0000"
        + b"\0" * 64
        + b"\0" * 16  # no device numbers: tarfile writes NUL there for files and directories (Python 3.9 and on)
        + prefix.ljust(155, b"\0")
        + b"\0" * 12
    )
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


TAR_KINDS = (
    (b"1", "a hard link"),
    (b"2", "a symlink"),
    (b"3", "a character device"),
    (b"4", "a block device"),
    (b"5", "a directory with data"),
    (b"6", "a FIFO"),
    (b"S", "a sparse file"),
)


def _tar_kind(typeflag: bytes) -> str:
    for flag, kind in TAR_KINDS:
        if typeflag == flag:
            return kind
    return "of tar type %s" % shown(typeflag.decode("latin-1"))


def read_tar_gz(source: Source, archive: str, expect: Expectation) -> list[Member]:
    """Read the tar.gz ``source`` holds: plain ustar headers exactly as the packagers write them.

    Each header must be byte for byte the canonical one of its name, mode,
    size and time (owners 0, no link target, owner names or device numbers,
    one spelling per number), so no field can carry hidden data; no pax,
    GNU or old-format header; regular files and directories only.
    """
    z = Inflater(source, archive)
    members = []
    mtimes = set()  # type: set[int]
    while True:
        block = z.exactly(512)
        if block == b"\0" * 512:
            break
        checksum = _octal(block[148:156], "checksum", archive)
        if checksum != sum(block[:148]) + 256 + sum(block[156:]):
            raise Refused("%s: a tar header fails its checksum" % archive)
        if block[257:265] != b"ustar\x0000":
            raise Refused("%s: a tar header is not POSIX ustar (GNU and old formats are refused)" % archive)
        name_field, prefix_field, typeflag = _nul_padded(block[0:100]), _nul_padded(block[345:500]), block[156:157]
        try:
            text = (prefix_field + b"/" + name_field if prefix_field else name_field).decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("%s: a member name is not UTF-8" % archive) from None
        if typeflag == b"x":
            raise Refused("%s: member %s comes with a pax extended header (the packagers write plain ustar)"
                          % (archive, shown(text)))  # fmt: skip
        size = _octal(block[124:136], "size", archive)
        if typeflag == b"0":
            kind = "file"
        elif typeflag == b"5" and size == 0 and text.endswith("/"):
            kind, text = "dir", text[:-1]
        else:
            raise Refused("%s: member %s is %s" % (archive, shown(text), _tar_kind(typeflag)))
        mode = _octal(block[100:108], "mode", archive)
        mtime = _octal(block[136:148], "mtime", archive)
        mtimes.add(mtime)
        if len(mtimes) > 1:
            raise Refused(
                "%s: member %s has a time of its own (the packagers give all one time)" % (archive, shown(text))
            )
        split = _ustar_split(prefix_field + b"/" + name_field if prefix_field else name_field)
        canonical = _ustar_header(*split, mode, size, mtime, typeflag) if split == (name_field, prefix_field) else b""
        if block != canonical:
            raise Refused(
                "%s: the tar header of %s holds what the packagers never write (an owner, a link target, device "
                "numbers, other spellings or hidden data)" % (archive, shown(text))
            )
        got = Member(text, kind, mode, size)
        want = expect.header(got)
        if kind == "file":
            got.sha256, got.head = _read_member_data(z.read, size, "%s: member %s" % (archive, shown(text)))
            z.padding(size)
            if want is not None and got.sha256 != want.sha256:
                raise Refused("%s: member %s is not the file the packaging step read" % (archive, shown(text)))
        members.append(got)
    expect.finish()
    rest = 0
    while True:
        data = z.read(CHUNK)
        if not data:
            break
        rest += len(data)
        if rest > TAR_TAIL_BYTES or bytes(data).count(0) != len(data):
            raise Refused("%s: holds data after its end-of-archive marker" % archive)
    return members


_EOCD = struct.Struct("<4sHHHHIIH")
_CDIR = struct.Struct("<4sBBHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


def read_zip(source: Source, archive: str, expect: Expectation) -> list[Member]:
    """Read the zip ``source`` holds: its entries back to back from offset 0, then the central directory, nothing else.

    Every local header must repeat its central directory entry; stored or
    deflated data only, no encryption, no zip64, no comment, no extra field.
    Entries cannot overlap or hide bytes between them.
    """
    cdir, n_total, cd_offset = _zip_directory(source, archive, expect)
    stamps = dict()  # type: dict[str, tuple[int, int]]
    pos = 0
    offset = 0
    members = []
    for _ in range(n_total):
        entry = _zip_entry(cdir, pos, archive, stamps)
        pos = entry.next_pos
        name = shown(entry.member.name)
        if entry.local != offset:
            raise Refused(
                "%s: entry %s does not start where the previous one ends (overlapping or hidden data)" % (archive, name)
            )
        got = entry.member
        want = expect.header(got)
        data_at = _zip_local_header(source, offset, entry, archive)
        end = data_at + entry.csize
        if end > cd_offset:
            raise Refused("%s: entry %s runs into the central directory" % (archive, name))
        got.sha256, got.head, crc_read = _zip_data(
            source, data_at, entry.csize, got.size, entry.method, "%s: entry %s" % (archive, name)
        )
        if crc_read != entry.crc:
            raise Refused("%s: entry %s fails its CRC" % (archive, name))
        if entry.flags & 0x08:
            descriptor = bytes(source.at(end, 16))
            if descriptor != struct.pack("<4sIII", b"PK\x07\x08", entry.crc, entry.csize, got.size):
                raise Refused(
                    "%s: the data descriptor of %s differs from its central directory entry" % (archive, name)
                )
            end += 16
        if want is not None and got.kind == "file" and got.sha256 != want.sha256:
            raise Refused("%s: entry %s is not the file the packaging step read" % (archive, name))
        members.append(got)
        offset = end
    if offset != cd_offset or pos != len(cdir):
        raise Refused("%s: holds data between its last entry and its central directory" % archive)
    expect.finish()
    return members


def _zip_directory(source: Source, archive: str, expect: Expectation) -> tuple[bytes, int, int]:
    """The central directory (its bytes, its entry count, its offset), once the end record says it is plain."""
    size = source.size
    if size < _EOCD.size:
        raise Refused("%s: too short to be a zip" % archive)
    eocd = bytes(source.at(size - _EOCD.size, _EOCD.size))
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack(eocd)
    if sig != b"PK\x05\x06" or disk or cd_disk or n_disk != n_total or comment:
        raise Refused(
            "%s: no plain end-of-central-directory record at its end (a comment, zip64 or several disks)" % archive
        )
    if n_total > MAX_MEMBERS or cd_offset + cd_size != size - _EOCD.size:
        raise Refused("%s: its central directory is not where its end record says" % archive)
    if expect.declared is not None and n_total != len(expect.declared):
        raise Refused("%s: holds %d entries, the packaging link declares %d" % (archive, n_total, len(expect.declared)))
    if cd_size > min(n_total * (_CDIR.size + MAX_NAME_BYTES), MAX_CENTRAL_DIRECTORY_BYTES):
        raise Refused("%s: an oversized central directory" % archive)
    return bytes(source.at(cd_offset, cd_size)), n_total, cd_offset


class _ZipEntry:
    """One central directory entry, checked: the member it declares and what its local header must repeat."""

    __slots__ = ("crc", "csize", "date", "flags", "local", "member", "method", "next_pos", "raw_name", "time")

    def __init__(self, member: Member, raw_name: bytes, fields: tuple[int, ...], local: int, next_pos: int) -> None:
        self.member = member
        self.raw_name = raw_name
        self.flags, self.method, self.time, self.date, self.crc, self.csize = fields
        self.local = local
        self.next_pos = next_pos


def _zip_entry(cdir: bytes, pos: int, archive: str, stamps: Any) -> _ZipEntry:
    """Read and check the central directory entry at ``pos``: one version, one time, Unix, no extras."""
    if pos + _CDIR.size > len(cdir):
        raise Refused("%s: its central directory is cut short" % archive)
    fields = _CDIR.unpack_from(cdir, pos)
    (sig, made_ver, made_os, need, flags, method, time, date, crc, csize, usize, n_name, n_extra, n_comment,
     disk, internal, external, local) = fields  # fmt: skip
    raw_name = cdir[pos + _CDIR.size : pos + _CDIR.size + n_name]
    next_pos = pos + _CDIR.size + n_name + n_extra + n_comment
    if (made_ver, need) != (20, 20) or stamps.setdefault("time", (time, date)) != (time, date):
        raise Refused("%s: an entry with its own version or time (the packagers write one of each)" % archive)
    if sig != b"PK\x01\x02" or n_extra or n_comment or disk or made_os != 3 or internal:
        raise Refused(
            "%s: an unexpected central directory entry (extra fields, comments or a non-Unix origin)" % archive
        )
    if flags & ~0x0808 or method not in (0, 8):
        raise Refused("%s: an encrypted entry or an unknown compression method" % archive)
    try:
        name = raw_name.decode("utf-8" if flags & 0x800 else "ascii")
    except UnicodeDecodeError:
        raise Refused("%s: an entry name is not valid text" % archive) from None
    mode = external >> 16
    if stat.S_ISDIR(mode) and name.endswith("/") and usize == 0:
        kind, name, dos = "dir", name[:-1], 0x10
    elif stat.S_ISREG(mode) and not name.endswith("/"):
        kind, dos = "file", 0
    else:
        raise Refused("%s: entry %s is not a regular file or directory (mode %o)" % (archive, shown(name), mode))
    if external & 0xFFFF != dos:
        raise Refused("%s: entry %s has MS-DOS attributes (read-only, hidden, system...)" % (archive, shown(name)))
    member = Member(name, kind, stat.S_IMODE(mode) | (mode & 0o7000), usize)
    return _ZipEntry(member, raw_name, (flags, method, time, date, crc, csize), local, next_pos)


def _zip_local_header(source: Source, offset: int, entry: _ZipEntry, archive: str) -> int:
    """Check that the local header at ``offset`` repeats ``entry``; return where its data starts."""
    name = shown(entry.member.name)
    n_name = len(entry.raw_name)
    header = bytes(source.at(offset, _LOCAL.size + n_name))
    if len(header) != _LOCAL.size + n_name:
        raise Refused("%s: entry %s is cut short" % (archive, name))
    lsig, lver, lflags, lmethod, ltime, ldate, lcrc, lcsize, lusize, ln_name, ln_extra = _LOCAL.unpack_from(header)
    expected = (b"PK\x03\x04", 20, entry.flags, entry.method, entry.time, entry.date, n_name, 0)
    if (lsig, lver, lflags, lmethod, ltime, ldate, ln_name, ln_extra) != expected:
        raise Refused("%s: the local header of %s differs from its central directory entry" % (archive, name))
    if header[_LOCAL.size :] != entry.raw_name:
        raise Refused("%s: the local name of %s differs from its central directory name" % (archive, name))
    if not entry.flags & 0x08 and (lcrc, lcsize, lusize) != (entry.crc, entry.csize, entry.member.size):
        raise Refused("%s: the local sizes of %s differ from its central directory entry" % (archive, name))
    return offset + _LOCAL.size + n_name


def _zip_data(source: Source, at: int, csize: int, usize: int, method: int, where: str) -> tuple[str, bytes, int]:
    """Hash the ``usize`` bytes an entry's ``csize`` stored bytes inflate to (never more); return sha, head, crc."""
    if method == 0 and csize != usize:
        raise Refused("%s: stored with different sizes" % where)
    z = zlib.decompressobj(-15) if method == 8 else None
    h = hashlib.sha256()
    head = b""
    crc = 0
    out_total = 0
    left = csize
    pending = b""  # type: bytes | memoryview
    while True:
        if not pending and left:
            pending = source.at(at, min(left, READ_BYTES))
            if not pending:
                raise Refused("%s: cut short" % where)
            at += len(pending)
            left -= len(pending)
        if z is None:
            data, pending = pending, b""
        else:
            data = z.decompress(pending, min(CHUNK, usize - out_total + 1))
            pending = z.unconsumed_tail
        out_total += len(data)
        if out_total > usize:
            raise Refused("%s: inflates to more than its declared %d bytes" % (where, usize))
        if len(head) < HEAD_BYTES:
            head = (head + data[:HEAD_BYTES])[:HEAD_BYTES]
        h.update(data)
        crc = zlib.crc32(data, crc)
        if not data and not pending and not left:
            break
    if z is not None and (not z.eof or z.unused_data):
        raise Refused("%s: its deflate stream does not end where its compressed size says" % where)
    if out_total != usize:
        raise Refused("%s: inflates to %d bytes, not its declared %d" % (where, out_total, usize))
    return h.hexdigest(), head, crc


def read_archive(source: Source, archive: str, fmt: str, expect: Expectation) -> list[Member]:
    """The members of archive ``archive`` (format ``fmt``) that ``source`` holds."""
    try:
        if fmt == "tar.gz":
            return read_tar_gz(source, archive, expect)
        if fmt == "zip":
            return read_zip(source, archive, expect)
    except (zlib.error, struct.error, ValueError, OverflowError) as e:  # malformed data the readers did not name
        raise Refused("%s: cannot be read as %s (%s)" % (archive, fmt, shown(str(e)))) from None
    raise Refused("%s: unknown archive format %s" % (archive, shown(fmt)))


# --- the configuration the layout passes -----------------------------------------------------------


class Bundle:
    def __init__(self, pairs: Any) -> None:
        d = dict(pairs)
        self.id = str(d["id"])
        self.name = str(d["name"])
        self.format = str(d["format"])
        self.target = str(d["target"])
        self.step = str(d["step"])
        self.binary_files = [str(b) for b in d["binary-files"]]
        self.assets = [str(a) for a in d["assets"]]
        self.forbidden_paths = [str(p) for p in d["forbidden-paths"]]
        self.forbidden_binaries = [str(b) for b in d["forbidden-binaries"]]
        # Packed from the codesign step's products (Authenticode-signed), not the build's.
        self.codesigned = d.get("binaries-from") == "codesign"

    def forbidden_path(self, rel: str) -> str | None:
        """The forbidden path ``rel`` (relative to the archive's top directory, or the repository) falls under."""
        parts = rel.split("/")
        for forbidden in self.forbidden_paths:
            f = forbidden.split("/")
            for i in range(len(parts) - len(f) + 1):
                if parts[i : i + len(f)] == f:
                    return forbidden
        return None

    def forbidden_binary(self, filename: str) -> str | None:
        base = filename[:-4] if filename.lower().endswith(".exe") else filename
        for banned in self.forbidden_binaries:
            if base.lower() == banned.lower():
                return banned
        return None


class Config:
    def __init__(self, raw: str) -> None:
        d = dict(json.loads(raw))
        if d.get("schema") != SCHEMA:
            raise Refused("the layout's inspection configuration is not %s" % SCHEMA)
        self.layout = str(d["layout"])
        self.inspection = str(d["inspection"])
        self.steps = [(str(s), [str(k) for k in keys]) for s, keys in d["steps"]]
        self.gates_step = str(d["gates-step"])
        self.build_step = str(d["build-step"])
        # The steps whose products are binaries (``bin/<target>/<file>``), not files of the folder.
        self.binary_steps = [str(x) for x in d.get("binary-steps", [self.build_step])]
        self.build_command = [str(c) for c in d["build-command"]]
        self.sums_file, self.sums_step = (str(x) for x in d["sums"])
        self.sums_lists = [str(step) for step in d["sums-lists"]]
        self.products = [(str(step), [str(n) for n in names]) for step, names in d["products"]]
        self.bundles = [Bundle(b) for b in d["bundles"]]
        self.allowed_extra = [str(x) for x in d["allowed-empty-files"]]
        self.allow_prebuilt = d.get("allow-prebuilt") is True
        # Files that vouch for the archives in other formats: each must name exactly the archives the links record.
        self.signify_sums = [str(x) for x in d.get("signify-sums", [])]  # [file, the step that writes it]
        self.bundle_suffix = [str(x) for x in d.get("sigstore-bundles", [])]  # [suffix, the step that writes them]


# --- the inspection -------------------------------------------------------------------------------


def cores() -> int:
    """The cores this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Inspection:
    """One run over the current directory; ``failures`` collects every reason it does not verify."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.failures = []  # type: list[str]
        self.regular = dict()  # type: dict[str, os.stat_result]
        self.links = dict()  # type: dict[str, Link]
        self.absent = set()  # type: set[str]  # the packaging steps of the products not downloaded

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    def run(self) -> list[str]:
        self.scan_folder()
        self.load_links()
        if self.failures:
            return self.failures
        self.check_files()
        self.check_steps()
        self.check_sums()
        self.check_signify_sums()
        self.check_sigstore_bundles()
        config = self.config
        forbidden = forbidden_content(
            config.bundles, self.links.get(config.gates_step), [self.links.get(s) for s in config.binary_steps]
        )
        self.failures.extend(r for r in self.check_bundles(forbidden) if r is not None)
        return self.failures

    def check_bundles(self, forbidden: Any) -> list[str | None]:
        """Each bundle's reason to fail (None: it passes), in the configuration's order, whatever thread checked it.

        A worker per core (at most one per bundle) takes the largest archive
        left: hashing and inflating release the GIL, so the archives are read
        on every core. A bundle starts out refused ("not checked"), so one
        that a dying worker leaves, or that no worker reaches, stays refused:
        fail closed.
        """
        bundles = self.config.bundles
        results = ["%s: not checked" % b.step for b in bundles]  # type: list[str | None]
        todo = sorted(range(len(bundles)), key=lambda i: (self.archive_size(bundles[i]), -i))
        lock = threading.Lock()

        def work() -> None:
            scratch = Scratch()  # one buffer per worker, reused for each archive it reads
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                try:
                    results[i] = self.check_bundle(bundles[i], forbidden, scratch)
                except Exception as e:  # a fault of the inspection itself
                    results[i] = "%s: not checked (%s: %s)" % (bundles[i].step, type(e).__name__, shown(str(e)))

        threads = [threading.Thread(target=work) for _ in range(max(1, min(cores(), len(bundles))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def archive_size(self, bundle: Bundle) -> int:
        """The size of ``bundle``'s archive in the folder (0 if it has none): what it costs to check."""
        link = self.links.get(bundle.step)
        if link is None:
            return 0
        try:
            st = self.regular.get(archive_of(link, bundle))
        except Refused:
            return 0
        return st.st_size if st is not None else 0

    def scan_folder(self) -> None:
        """Remove what an earlier run left; list every other entry by lstat (nothing is followed or opened)."""
        names = []  # type: list[str]
        with os.scandir(".") as entries:
            for entry in entries:
                if len(names) == MAX_FOLDER_ENTRIES:
                    self.fail("the folder holds more than %d entries, more than any release" % MAX_FOLDER_ENTRIES)
                    return
                names.append(entry.name)
        own_link = (self.config.inspection + ".link").casefold()
        for name in sorted(names):
            st = os.lstat(name)
            folded = name.casefold()
            if folded == own_link or folded.startswith(MARKER.casefold()):
                self.remove_own(name, st)
                if name != self.config.inspection + ".link" and not name.startswith(MARKER):
                    # On a case-insensitive file system, in-toto's write would go through it.
                    self.fail("%s: looks like a name verification writes (removed)" % shown(name))
                continue
            if stat.S_ISREG(st.st_mode):
                self.regular[name] = st
            else:
                self.fail("%s: is %s; a release folder holds only regular files" % (shown(name), _kind(st.st_mode)))

    def remove_own(self, name: str, st: os.stat_result) -> None:
        """Remove what an earlier run left at a name verification writes; refuse anything else found there.

        ``unlink`` removes the entry itself, never what a symlink points to or
        the other names of a hard-linked file, so in-toto's write of its link
        afterwards creates a new file in the folder.
        """
        if stat.S_ISDIR(st.st_mode):
            self.fail("%s: a directory stands where verification writes its own file" % shown(name))
            return
        os.unlink(name)
        if not stat.S_ISREG(st.st_mode):
            self.fail("%s: was %s (removed: verification writes its own file there)" % (shown(name), _kind(st.st_mode)))
        elif st.st_nlink != 1:
            self.fail("%s: was a regular file with %d links (removed: verification writes its own file there)"
                      % (shown(name), st.st_nlink))  # fmt: skip

    def load_links(self) -> None:
        for step, keyids in self.config.steps:
            files = ["%s.%s.link" % (step, k) for k in keyids if "%s.%s.link" % (step, k) in self.regular]
            if not files:
                self.fail("%s: no link in the folder" % step)
                continue
            try:
                links = [load_link(f, step) for f in files]
            except Refused as e:
                self.fail(str(e))
                continue
            for other in links[1:]:
                if (other.materials, other.products) != (links[0].materials, links[0].products):
                    self.fail("%s: its links disagree on what the step read and wrote" % step)
            self.links[step] = links[0]

    def check_files(self) -> None:
        """Each step wrote exactly the files the layout names; the folder holds those, the layout and the links only.

        A customer may download one product: the folder then holds, of each
        product, every file named after it (its archive, its SBOM, their
        signatures) or none, and at least one product whole. The shared files
        (the layout, the links, the checksum lists and their signatures, the
        gates' report, the provenance) are always required.
        """
        expected = set([self.config.layout])
        for step, keyids in self.config.steps:
            expected.update("%s.%s.link" % (step, k) for k in keyids)
        version = self.version()
        if version is None:
            return  # without it no name can be judged: the version's failure says why
        optional = self.choose_products(version)
        for step, names in self.config.products:
            link = self.links.get(step)
            if link is None:
                continue  # named by load_links
            if step not in self.config.binary_steps:
                for name in sorted(n for n in link.products if "/" in n):
                    self.fail("%s: the %s step may not write it (not a file of the folder)" % (shown(name), step))
            wrote = set(n for n in link.products if "/" not in n)
            want = set(n.replace(VERSION_PLACEHOLDER, version) for n in names)
            for name in sorted(wrote - want):
                self.fail(
                    "%s: the %s step may not write it (the layout names what each step writes)" % (shown(name), step)
                )
            for name in sorted(want):
                expected.add(name)
                if name not in wrote:
                    self.fail("%s: the %s step did not write it" % (shown(name), step))
                elif name not in self.regular and name not in optional:
                    self.fail("%s: missing (the product of %s)" % (shown(name), step))
        for name in sorted(self.regular):
            if name in self.config.allowed_extra:
                if self.regular[name].st_size != 0:
                    self.fail("%s: must be empty" % shown(name))
            elif name not in expected:
                self.fail("%s: is not part of the release (no step produced it)" % shown(name))
        if self.config.layout not in self.regular:
            self.fail("%s: missing" % self.config.layout)

    def product_files(self, bundle: Bundle, version: str) -> list[str]:
        """The files named after ``bundle``'s archive and SBOM: those, and every file named ``<one of them>.<more>``."""
        own = []  # type: list[str]
        for step, names in self.config.products:
            if step == bundle.step:
                own = [n.replace(VERSION_PLACEHOLDER, version) for n in names]
        files = set(own)
        for _, names in self.config.products:
            for n in names:
                name = n.replace(VERSION_PLACEHOLDER, version)
                if any(name.startswith(o + ".") for o in own):
                    files.add(name)
        return sorted(files)

    def choose_products(self, version: str) -> set[str]:
        """The files of the products the folder holds none of: not required. A product partly there is named missing."""
        absent = set()  # type: set[str]
        for b in self.config.bundles:
            files = self.product_files(b, version)
            if not any(n in self.regular for n in files):
                self.absent.add(b.step)
                absent.update(files)
        if len(self.absent) == len(self.config.bundles):
            self.fail("the folder holds no product: download an archive and every file named after it")
        return absent

    def version(self) -> str | None:
        """The release's version: the one every packaging link's archive is named with."""
        found = set()
        for b in self.config.bundles:
            link = self.links.get(b.step)
            if link is not None:
                for n in link.products:
                    if n.startswith(b.name + "-") and n.endswith("." + b.format):
                        found.add(n[len(b.name) + 1 : -len(b.format) - 1])
        if len(found) != 1:
            self.fail("the archives are of %d versions, not one" % len(found))
            return None
        version = found.pop()
        if not version[:1].isdigit() or not all(c.isalnum() or c in ".-+" for c in version) or not version.isascii():
            self.fail("%s: not a version" % shown(version))
            return None
        return str(version)

    def check_steps(self) -> None:
        for _, link in sorted(self.links.items()):
            if link.return_value != 0:
                self.fail("%s: the step's command returned %s, not 0" % (link.file, shown(repr(link.return_value))))
        build = self.links.get(self.config.build_step)
        prebuilt = build is not None and (
            build.environment.get("unsafe-prebuilt-binaries") or build.command != self.config.build_command
        )
        if build is not None and prebuilt and not self.config.allow_prebuilt:
            self.fail("%s: the binaries were not built from the source (unsafe prebuilt binaries)" % build.file)

    def check_sums(self) -> None:
        """``SHA256SUMS``, once it is the checksums step's product, lists only products with their recorded hashes."""
        name = self.config.sums_file
        link = self.links.get(self.config.sums_step)
        if link is None or name not in link.products or name not in self.regular:
            self.fail("%s: missing, or not a product of %s" % (name, self.config.sums_step))
            return
        fd, st = open_regular(name)
        try:
            if st.st_size > MAX_SUMS_BYTES:
                raise Refused("%s: %d bytes, more than a release lists" % (name, st.st_size))
            if sha256_fd(fd, MAX_SUMS_BYTES) != link.products[name]:
                raise Refused("%s: is not the file the %s step wrote" % (name, self.config.sums_step))
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, MAX_SUMS_BYTES + 1).decode("utf-8")
        except (Refused, UnicodeDecodeError) as e:
            self.fail(str(e) if isinstance(e, Refused) else "%s: not UTF-8 text" % name)
            return
        finally:
            os.close(fd)
        # What it must list: every file the listed steps wrote, with the hash each step recorded, once.
        recorded = dict()  # type: dict[str, str]
        for step in self.config.sums_lists:
            step_link = self.links.get(step)
            if step_link is not None:
                recorded.update((n, h) for n, h in step_link.products.items() if "/" not in n)
        lines = text.split("\n")
        if lines[-1] != "":
            self.fail("%s: does not end with a line break" % name)
        listed = set()
        for number, line in enumerate(lines[:-1], 1):
            digest, sep, file = line.partition("  ")
            if not sep or recorded.get(file) != digest or file in listed:
                self.fail("%s line %d: is not a product of the steps it lists, with its recorded hash" % (name, number))
                return
            listed.add(file)
        for file in sorted(set(recorded) - listed):
            self.fail("%s: does not list %s" % (name, shown(file)))

    def recorded_archives(self) -> dict[str, str]:
        """Every archive the packaging links record: name -> SHA-256."""
        out = dict()  # type: dict[str, str]
        for b in self.config.bundles:
            link = self.links.get(b.step)
            if link is not None:
                try:
                    name = archive_of(link, b)
                except Refused:
                    continue
                out[name] = link.products[name]
        return out

    def read_product(self, name: str, step: str, limit: int) -> bytes | None:
        """The bytes of ``name``, once its hash is the one ``step`` recorded (None: refused, reason added)."""
        link = self.links.get(step)
        if link is None or name not in link.products:
            self.fail("%s: not a product of %s" % (shown(name), step))
            return None
        try:
            data = read_small(name, limit)
        except Refused as e:
            self.fail(str(e))
            return None
        if hashlib.sha256(data).hexdigest() != link.products[name]:
            self.fail("%s: is not the file the %s step wrote" % (shown(name), step))
            return None
        return data

    def check_signify_sums(self) -> None:
        """signify's signed list (``signify -C`` trusts it) lists exactly the archives, with their recorded hashes."""
        if len(self.config.signify_sums) != 2 or self.config.signify_sums[0] not in self.regular:
            return  # a missing one is named by check_files
        name, step = self.config.signify_sums
        data = self.read_product(name, step, MAX_SUMS_BYTES)
        if data is None:
            return
        try:
            lines = data.decode("ascii").split("\n")
        except UnicodeDecodeError:
            self.fail("%s: not ASCII text" % name)
            return
        if len(lines) < 3 or not lines[0].startswith("untrusted comment: ") or lines[-1] != "":
            self.fail("%s: not a signify signed list" % name)
            return
        listed = dict()  # type: dict[str, str]
        for line in lines[2:-1]:
            head, sep, digest = line.partition(") = ")
            file = head[len("SHA256 (") :]
            if not head.startswith("SHA256 (") or not sep or file in listed:
                self.fail("%s: a line is not SHA256 (file) = hash, once per file" % name)
                return
            listed[file] = digest
        if listed != self.recorded_archives():
            self.fail("%s: does not list exactly the archives with their recorded hashes" % name)

    def check_sigstore_bundles(self) -> None:
        """Each archive's Sigstore bundle (cosign trusts it) is about that archive alone, with its recorded hash."""
        if len(self.config.bundle_suffix) != 2:
            return
        suffix, step = self.config.bundle_suffix
        for archive, digest in sorted(self.recorded_archives().items()):
            name = archive + suffix
            if name not in self.regular:
                continue  # named by check_files, unless the product was not downloaded
            data = self.read_product(name, step, MAX_SUMS_BYTES)
            if data is None:
                continue
            try:
                envelope = json.loads(data.decode("utf-8"), object_pairs_hook=unique_keys).get("dsseEnvelope")
                payload = base64.b64decode(envelope.get("payload"), validate=True).decode("utf-8")
                statement = json.loads(payload, object_pairs_hook=unique_keys)
                subjects = statement.get("subject")
            except (ValueError, AttributeError, TypeError, RecursionError, binascii.Error):
                self.fail("%s: not a Sigstore bundle of an in-toto statement" % name)
                continue
            want = [dict(name=archive, digest=dict(sha256=digest))]
            if subjects != want:
                self.fail("%s: its statement is not about %s with its recorded hash" % (name, archive))

    def check_bundle(self, bundle: Bundle, forbidden: Any, scratch: Scratch | None = None) -> str | None:
        """Check one bundle's archive; return the reason it fails, or None."""
        link = self.links.get(bundle.step)
        if link is None or bundle.step in self.absent:
            return None  # named by load_links; or a product not downloaded (check_files requires one)
        try:
            if bundle.codesigned:
                check_signed_binaries(link, bundle, self.links.get(self.config.build_step))
            archive = archive_of(link, bundle)
            if archive not in self.regular:
                raise Refused("%s: missing (the product of %s)" % (archive, bundle.step))
            check_archive(archive, archive, bundle, link, forbidden[bundle.id], scratch)
        except Refused as e:
            return str(e)
        except (OSError, ValueError, zlib.error, struct.error, RecursionError, MemoryError) as e:
            return "%s: could not be checked (%s: %s)" % (bundle.step, type(e).__name__, shown(str(e)))
        return None


def forbidden_content(bundles: list[Bundle], gates: Link | None, builds: list[Link | None]) -> Any:
    """For each bundle id, the SHA-256 of every file it must never hold, with what that file is.

    A bundle must never hold a file of its forbidden paths (the gated source
    the gates step read, e.g. every ``edge/`` file; empty files aside) nor any
    of its forbidden binaries (the build step's products of those names, and
    their code-signed forms).
    """
    out = dict()
    sources = gates.materials if gates is not None else dict()
    products = []  # type: list[tuple[str, str]]
    for build in builds:
        if build is not None:
            products.extend(build.products.items())
    for b in bundles:
        banned = dict()
        for path, digest in sources.items():
            hit = b.forbidden_path(path)
            if hit is not None and digest != EMPTY_SHA256:
                banned[digest] = "the %s/ file %s" % (hit, shown(path))
        for path, digest in products:
            hit = b.forbidden_binary(path.rsplit("/", 1)[-1])
            if hit is not None:
                banned[digest] = "the %s binary" % hit
        out[b.id] = banned
    return out


def unique_keys(pairs: Any) -> Any:
    """A JSON object whose every key is named once (another parser could take another duplicate's value)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a JSON object names a key twice")
    return out


def check_signed_binaries(link: Link, bundle: Bundle, build: Link | None) -> None:
    """Each signed binary, its signature removed, is the build's: what the packager found and recorded."""
    recorded = link.environment.get("signed-binaries")
    if not isinstance(recorded, dict) or build is None:
        raise Refused("%s: records no unsigned hash of its signed binaries" % link.file)
    for f in bundle.binary_files:
        name = "bin/%s/%s" % (bundle.target, f)
        built = build.products.get(name)
        if not isinstance(built, str) or len(built) != 64 or recorded.get(name) != built:
            raise Refused("%s: the signed %s, its signature removed, is not the binary the build step wrote"
                          % (link.file, shown(name)))  # fmt: skip


def archive_of(link: Link, bundle: Bundle) -> str:
    """The one archive ``bundle``'s packaging ``link`` names among its products."""
    names = [n for n in link.products if n.startswith(bundle.name + "-") and n.endswith("." + bundle.format)]
    if len(names) != 1:
        raise Refused("%s: names %d %s archives, not one" % (link.file, len(names), bundle.format))
    return str(names[0])


def check_archive(
    path: str, archive: str, bundle: Bundle, link: Link, banned: Any, scratch: Scratch | None = None
) -> list[Member]:
    """Check the archive at ``path`` against its packaging ``link``; return its members, or raise :class:`Refused`.

    Check before touch: the file is opened once (a regular file, not
    followed), its size and SHA-256 must be what the link recorded before one
    byte is parsed, then its members are read from the bytes kept in
    ``scratch`` (or, for a large one, through the same descriptor, never past
    the bytes hashed; see :func:`read_checked`), each against the link's
    declaration, and judged by :func:`judge_content`.
    """
    stem = archive[: -len(bundle.format) - 1]
    declared = declared_members(link, bundle, stem)
    fd, st = open_regular(path)
    try:
        size = link.environment.get("archive-size")
        if not isinstance(size, int) or st.st_size != size or size > MAX_ARCHIVE_BYTES:
            raise Refused("%s: %d bytes, not the %s the %s step wrote" % (archive, st.st_size, size, bundle.step))
        source = read_checked(fd, size, link.products[archive], scratch or Scratch())
        if source is None:
            raise Refused("%s: is not the archive the %s step wrote (not unpacked)" % (archive, bundle.step))
        members = read_archive(source, archive, bundle.format, Expectation(archive, declared))
    finally:
        os.close(fd)
    judge_content(bundle, stem, members, banned, archive)
    return members


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def declared_members(link: Link, bundle: Bundle, stem: str) -> list[Member]:
    """The members the packaging link declares, checked against what the step read (its materials).

    Each file must be the material it was packaged from, byte for byte
    (``<stem>/bin/<file>`` is ``bin/<target>/<file>``, ``<stem>/<path>`` is
    ``<path>`` under one of the bundle's assets), and every material must be
    packaged exactly once.
    """
    raw = link.environment.get("archive-members")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_MEMBERS:
        raise Refused("%s: declares no archive members" % link.file)
    members = []
    packaged = dict()
    total = 0
    binaries = set(stem + "/bin/" + f for f in bundle.binary_files)
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 5):
            raise Refused("%s: a malformed archive member declaration" % link.file)
        name, kind, mode, size, digest = entry
        if not (isinstance(name, str) and kind in ("file", "dir") and isinstance(mode, int) and isinstance(size, int)):
            raise Refused("%s: a malformed archive member declaration" % link.file)
        where = "%s: declared member %s" % (link.file, shown(name))
        problem = name_problem(name)
        if problem is not None:
            raise Refused("%s is %s" % (where, problem))
        if name != stem and not name.startswith(stem + "/"):
            raise Refused("%s is outside the top-level directory %s/" % (where, stem))
        inner = name[len(stem) + 1 :]
        judge_name(bundle, inner, kind, where)
        if kind == "dir":
            if (mode, size, digest) != (0o755, 0, ""):
                raise Refused("%s: a directory must be mode 755 and empty" % where)
            members.append(Member(name, kind, mode, size))
            continue
        if mode not in (0o644, 0o755) or not 0 <= size <= MAX_MEMBER_BYTES or not isinstance(digest, str):
            raise Refused("%s: mode %o or size %s is not allowed" % (where, mode, size))
        if name in binaries:
            if mode != 0o755:
                raise Refused("%s: a binary must be mode 755" % where)
            material = "bin/%s/%s" % (bundle.target, inner[len("bin/") :])
        elif any(inner == a or inner.startswith(a + "/") for a in bundle.assets):
            material = inner
        else:
            raise Refused("%s is neither a declared binary nor under a declared asset" % where)
        if link.materials.get(material) != digest:
            raise Refused("%s is not the file %s the step read" % (where, shown(material)))
        if material in packaged:
            raise Refused("%s: %s is packaged twice" % (where, shown(material)))
        packaged[material] = name
        total += size
        members.append(Member(name, kind, mode, size, digest))
    absent = sorted(binaries - set(m.name for m in members))
    if absent:
        raise Refused("%s: declares no member %s, a binary of the %s bundle" % (link.file, shown(absent[0]), bundle.id))
    unpacked = sorted(set(link.materials) - set(packaged))
    if unpacked:
        raise Refused("%s: read %s but does not declare it in the archive" % (link.file, shown(unpacked[0])))
    if [m.name for m in members] != sorted(m.name for m in members):
        raise Refused("%s: the declared members are not in sorted order" % link.file)
    if total > MAX_ARCHIVE_BYTES:
        raise Refused("%s: declares %d bytes, over the %d-byte cap" % (link.file, total, MAX_ARCHIVE_BYTES))
    return members


def judge_name(bundle: Bundle, inner: str, kind: str, where: str) -> None:
    """Refuse a member whose path (inside the top directory) is forbidden, or named like a forbidden binary."""
    hit = bundle.forbidden_path(inner)
    if hit is not None:
        raise Refused("%s is %s/ material, which the %s bundle must never hold" % (where, hit, bundle.id))
    binary = bundle.forbidden_binary(inner.rsplit("/", 1)[-1])
    if binary is not None and kind == "file":
        raise Refused(
            "%s is named like the %s binary, which the %s bundle must never hold" % (where, binary, bundle.id)
        )


def judge_content(bundle: Bundle, stem: str, members: list[Member], banned: Any, archive: str) -> None:
    """Refuse forbidden material by name and by content, and executables outside the declared binary paths."""
    binaries = set(stem + "/bin/" + f for f in bundle.binary_files)
    for m in members:
        where = "%s: member %s" % (archive, shown(m.name))
        judge_name(bundle, m.name[len(stem) + 1 :], m.kind, where)
        if m.kind != "file":
            continue
        if m.sha256 in banned:
            raise Refused(
                "%s is byte for byte %s, which the %s bundle must never hold" % (where, banned[m.sha256], bundle.id)
            )
        kind = executable_kind(m.head)
        if kind is not None and m.name not in binaries:
            raise Refused("%s is %s; only the declared binaries may be" % (where, kind))


def marker_name(reason: str) -> str:
    """A file name that carries ``reason``: printable, portable, nothing in-toto would not record.

    ``shown`` makes the reason ASCII; then the characters a file name cannot
    hold, or that in-toto would rewrite or skip (``/``, ``\\``, the dot of
    ``.link`` and ``.pyc``, ``~``), become look-alike symbols that ``shown``
    text never holds otherwise.
    """
    text = shown(reason)
    for plain, symbol in MARKER_SYMBOLS:
        text = text.replace(plain, symbol)
    text = text.encode("utf-8")[:MARKER_TEXT_BYTES].decode("utf-8", "ignore")
    return MARKER + (text.rstrip(". ") or "(no reason given)")  # FAT would strip a final dot or space


def report(failures: list[str]) -> bool:
    """Leave one empty marker file per failure (the first ``MAX_FAILURES``), never following or replacing anything.

    Returns whether every marker now stands as a regular file: if one could
    not be created (a file system that refuses the name, a folder that is not
    writable), the caller must fail the inspection outright, since in-toto
    would see nothing to refuse.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    shown_failures = failures[:MAX_FAILURES]
    if len(failures) > MAX_FAILURES:
        shown_failures.append("and %d more reasons" % (len(failures) - MAX_FAILURES))
    ok = True
    for reason in shown_failures:
        name = marker_name(reason)
        with contextlib.suppress(OSError):  # the same reason twice: it stands already
            os.close(os.open(name, flags, 0o644))
        try:
            ok = ok and stat.S_ISREG(os.lstat(name).st_mode)
        except OSError:
            ok = False
    return ok


def main(argv: list[str]) -> int:
    """Inspect the current directory with the configuration ``argv[0]`` (see the module doc).

    Returns 0, the failures (if any) left as marker files for in-toto's
    rules to name; 1 only when a marker could not be written, so that a
    refusal can never turn into an acceptance.
    """
    try:
        if len(argv) != 1:
            raise Refused("the layout's inspection command has no configuration")
        failures = Inspection(Config(argv[0])).run()
    except Refused as e:
        failures = [str(e)]
    except Exception as e:  # any fault of the inspection fails the verification, never a traceback
        failures = ["the inspection could not run (%s: %s)" % (type(e).__name__, shown(str(e)))]
    if failures and not report(failures):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
