"""What hides inside a file: archives, compressed streams and encoded payloads, unpacked within bounds.

Pure functions on bytes, reading members in memory (nothing is extracted to
disk). Each finds the payloads one level down in a piece of data and yields
them one at a time, so that the caller scans each before the next is made:

- :func:`container` names the archive or compression format ``data`` is in
  (by its magic bytes) and :func:`unpack` yields its members or its
  decompressed stream: gzip, bzip2, xz, zip and tar. zstd, 7z, rar and lz4
  cannot be unpacked with the standard library: such data is refused;
- :func:`decodings` yields the payloads encoded in text: base64 (standard and
  URL-safe, on one line or wrapped over several), hex, ``0x..`` byte lists, and
  UTF-16 text.

Every byte decompressed or decoded is charged to one :class:`Budget` per
scanned file, and every payload is capped: what would exceed a bound is not
read further but yielded as a :class:`Refusal`, which the gate reports. A
corrupt or encrypted archive is a refusal too: nothing is skipped silently.
"""

from __future__ import annotations

import binascii
import bisect
import bz2
import functools
import io
import lzma
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from governance.gates.policy import ScanBounds

_READ = 1 << 16


@dataclass(frozen=True)
class Inner:
    """A payload one level down: how it was found (``step``), where in the outer data, and its bytes.

    ``offset`` is set for a payload written at one place of text (an encoded
    one), None for a member or a decompressed stream.
    """

    step: str
    offset: int | None
    data: bytes


@dataclass(frozen=True)
class Refusal:
    """Something that could not be scanned within the bounds; ``rule`` is a bound rule id.

    ``whole`` is set when the container itself could not be read: its bytes
    are then to be scanned as they are, for whatever is readable in them.
    """

    rule: str
    step: str
    offset: int | None
    detail: str
    whole: bool = False


class Budget:
    """What is left of one file's bounds: bytes that may still be expanded, members that may still be read."""

    def __init__(self, bounds: ScanBounds) -> None:
        self.bounds = bounds
        self.expanded = bounds.max_expanded
        self.members = bounds.max_members

    def limit(self) -> int:
        """The most bytes the next payload may have."""
        return max(0, min(self.bounds.max_file_size, self.expanded))

    def too_big(self) -> str:
        """Why a payload over :meth:`limit` is refused, naming the bound that applies."""
        size = size_text(self.bounds.max_file_size)
        if self.expanded >= self.bounds.max_file_size:
            return f"expands beyond {size} (bounds.max-file-size); refused, not scanned"
        total = size_text(self.bounds.max_expanded)
        return f"expands beyond the {total} this file may expand to in all (bounds.max-expanded); refused, not scanned"

    def charge(self, n: int) -> None:
        self.expanded -= n


def size_text(n: int) -> str:
    """``n`` bytes for a message: in GiB, MiB or KiB when a whole number of them."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _why(error: BaseException) -> str:
    """An exception's text for a message: printable, short (it may quote attacker text)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(error) or type(error).__name__)
    return text if len(text) <= 160 else text[:157] + "..."


def shown(name: str) -> str:
    """An archive member's name for a message: quoted, escaped, shortened (it is attacker text)."""
    text = repr(name)
    return text if len(text) <= 100 else text[:97] + "..."


class _TooBig(Exception):
    pass


# --------------------------------------------------------------------------- containers

_GZIP = b"\x1f\x8b\x08"
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY", re.DOTALL)
_XZ = b"\xfd7zXZ\x00"
_UNSUPPORTED = {
    b"\x28\xb5\x2f\xfd": "a zstd stream",
    b"7z\xbc\xaf\x27\x1c": "a 7z archive",
    b"Rar!\x1a\x07": "a RAR archive",
    b"\x04\x22\x4d\x18": "an LZ4 stream",
}
_ZIP_END = b"PK\x05\x06"
_ZIP_START = b"PK\x03\x04"
_ZIP_CENTRAL = b"PK\x01\x02"


def container(data: bytes) -> str | None:
    """The archive or compression format ``data`` is in, by its magic bytes, or None."""
    if data.startswith(_GZIP):
        return "gzip"
    if _BZIP2.match(data):
        return "bzip2"
    if data.startswith(_XZ):
        return "xz"
    for magic, what in _UNSUPPORTED.items():
        if data.startswith(magic):
            return what
    if len(data) >= 512 and data[257:262] == b"ustar":
        return "tar"  # before zip: a tar holding a zip ends with the zip's end record
    if data.rfind(_ZIP_END, max(0, len(data) - (1 << 16) - 22)) != -1 or data.startswith(_ZIP_START):
        return "zip"
    return None


def unpack(data: bytes, kind: str, budget: Budget) -> Iterator[Inner | Refusal]:
    """The members (or the decompressed stream) of ``data``, which is in format ``kind``, one at a time."""
    if kind in ("gzip", "bzip2", "xz"):
        yield from _decompress(data, kind, budget)
    elif kind == "zip":
        yield from _zip(data, budget)
    elif kind == "tar":
        yield from _tar(data, budget)
    else:
        yield Refusal("unscannable", kind, None, "cannot be unpacked with the Python standard library", whole=True)


class _Stream(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _Gunzip:
    """zlib's gzip decompressor behind the interface of bz2's and lzma's (``needs_input``).

    zlib hands back what ``max_length`` left unread as ``unconsumed_tail``;
    this keeps it and feeds it first, so one loop reads all three formats.
    """

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._d.decompress(self._tail + data, max_length)
        self._tail = self._d.unconsumed_tail
        return out


_STREAMS: dict[str, tuple[bytes | re.Pattern[bytes], Callable[[], _Stream]]] = {
    "gzip": (_GZIP, _Gunzip),
    "bzip2": (_BZIP2, bz2.BZ2Decompressor),
    "xz": (_XZ, lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
}


def _unstream(data: bytes, kind: str, limit: int) -> tuple[bytes, bytes]:
    """Decompress every gzip member, bzip2 or xz stream at the start of ``data`` into at most ``limit`` bytes.

    Returns the decompressed bytes and the bytes after the last stream.
    """
    magic, make = _STREAMS[kind]

    def starts(b: bytes) -> bool:
        return b.startswith(magic) if isinstance(magic, bytes) else magic.match(b) is not None

    out: list[bytes] = []
    total = 0
    rest = data
    while starts(rest):
        d = make()
        pos = 0
        while not d.eof:
            if d.needs_input:
                if pos >= len(rest):
                    raise EOFError("the stream is truncated")
                piece = rest[pos : pos + _READ]
                pos += len(piece)
            else:
                piece = b""
            chunk = d.decompress(piece, _READ)
            total += len(chunk)
            if total > limit:
                raise _TooBig
            out.append(chunk)
        rest = d.unused_data + rest[pos:]
    return b"".join(out), rest


def _decompress(data: bytes, kind: str, budget: Budget) -> Iterator[Inner | Refusal]:
    limit = budget.limit()
    try:
        plain, rest = _unstream(data, kind, limit)
    except _TooBig:
        budget.charge(limit)
        yield Refusal("expansion-bound", kind, None, budget.too_big())
        return
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        yield Refusal("unscannable", kind, None, f"cannot be decompressed ({_why(e)})", whole=True)
        return
    budget.charge(len(plain))
    yield Inner(kind, None, plain)
    if rest.strip(b"\x00"):
        yield Inner(f"bytes after the {kind} stream", None, rest)


def _zip(data: bytes, budget: Budget) -> Iterator[Inner | Refusal]:
    entries = data.count(_ZIP_CENTRAL)
    if entries > budget.members:
        yield Refusal(
            "too-many-members", "zip", None, f"lists about {entries} members, more than the bound (bounds.max-members)"
        )
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        yield Refusal("unscannable", "zip", None, f"is not a readable zip archive ({_why(e)})", whole=True)
        return
    with archive:
        first = min((i.header_offset for i in infos), default=len(data) - len(archive.comment) - 22)
        if first > 0 and data[:first].strip(b"\x00"):
            yield Inner("bytes before the zip archive", None, data[:first])
        if archive.comment:
            yield Inner("zip comment", None, archive.comment)
        for info in infos:
            if info.is_dir():
                continue
            step = f"zip member {shown(info.filename)}"
            if budget.members <= 0:
                yield Refusal("too-many-members", step, None, "is past the bound on members (bounds.max-members)")
                return
            budget.members -= 1
            if info.flag_bits & 0x1:
                yield Refusal("unscannable", step, None, "is encrypted; it cannot be scanned")
                continue
            yield _read_member(functools.partial(archive.open, info), step, budget)


def _read_member(open_member: Callable[[], IO[bytes]], step: str, budget: Budget) -> Inner | Refusal:
    """Read one member through ``open_member`` within the budget: its bytes, or why not."""
    limit = budget.limit()
    chunks: list[bytes] = []
    total = 0
    try:
        with open_member() as f:
            while piece := f.read(_READ):
                total += len(piece)
                if total > limit:
                    budget.charge(limit)
                    return Refusal("expansion-bound", step, None, budget.too_big())
                chunks.append(piece)
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
        zlib.error,
        lzma.LZMAError,
    ) as e:
        return Refusal("unscannable", step, None, f"cannot be read ({_why(e)}); not scanned")
    budget.charge(total)
    return Inner(step, None, b"".join(chunks))


def _tar(data: bytes, budget: Budget) -> Iterator[Inner | Refusal]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        yield Refusal("unscannable", "tar", None, f"is not a readable tar archive ({_why(e)})", whole=True)
        return
    with archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                yield Refusal("unscannable", "tar", None, f"is damaged ({_why(e)})", whole=True)
                return
            if member is None:
                return
            step = f"tar member {shown(member.name)}"
            if budget.members <= 0:  # every member counts: tarfile keeps each one's header in memory
                yield Refusal("too-many-members", step, None, "is past the bound on members (bounds.max-members)")
                return
            budget.members -= 1
            if not member.isreg():
                continue  # directories, links, devices: no content of their own

            def open_member(member: tarfile.TarInfo = member) -> IO[bytes]:
                f = archive.extractfile(member)
                if f is None:
                    raise OSError("no content")
                return f

            yield _read_member(open_member, step, budget)


# --------------------------------------------------------------------------- encodings

_B64_CHARS = rb"A-Za-z0-9+/_\-"
# Lines holding nothing but base64 (as `base64` and PEM wrap it): one payload over several lines.
_B64_BLOCK = re.compile(
    rb"(?m)^[ \t]*[A-Za-z0-9+/]{16,}={0,2}[ \t]*\r?\n(?:[ \t]*[A-Za-z0-9+/]{4,}={0,2}[ \t]*(?:\r?\n|\Z))+"
)
# Scanned left to right, a greedy run is always maximal: no look-behind needed (and none slowing the search).
_B64_RUN = re.compile(rb"[" + _B64_CHARS + rb"]{24,}={0,2}")
_HEX_RUN = re.compile(rb"[0-9A-Fa-f]{64,}")
_BYTE_LIST = re.compile(rb"(?:0[xX][0-9A-Fa-f]{2}\s*,\s*){31,}0[xX][0-9A-Fa-f]{2}(?![0-9A-Fa-f])")
# The body of a private key's PEM armour is the key itself, already reported by its header.
_PRIVATE_ARMOUR = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_ARMOUR_END = b"-----END "
_UPPER, _LOWER, _DIGIT = re.compile(rb"[A-Z]"), re.compile(rb"[a-z]"), re.compile(rb"[0-9]")
_SPACE = re.compile(rb"\s+")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _looks_encoded(run: bytes) -> bool:
    """Random bytes in base64 show upper and lower case letters and digits; words and names rarely do."""
    return bool(_UPPER.search(run) and _LOWER.search(run) and _DIGIT.search(run))


def b64decode(text: bytes) -> bytes | None:
    """Decode standard or URL-safe base64 (whitespace ignored, padding optional), or None."""
    s = _SPACE.sub(b"", text).rstrip(b"=")
    if b"-" in s or b"_" in s:
        if b"+" in s or b"/" in s:
            return None
        s = s.translate(_URLSAFE)
    if len(s) % 4 == 1:
        s = s[:-1]
    s += b"=" * (-len(s) % 4)
    try:
        return binascii.a2b_base64(s)
    except binascii.Error:
        return None


class _Spans:
    """Sorted, disjoint ranges of offsets; :meth:`holds` is a binary search."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]

    def holds(self, pos: int) -> bool:
        i = bisect.bisect_right(self.starts, pos) - 1
        return i >= 0 and pos < self.ends[i]


def _armour(data: bytes) -> _Spans:
    """The bodies of private keys' PEM armour in ``data``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (m := _PRIVATE_ARMOUR.search(data, pos)) is not None:
        end = data.find(_ARMOUR_END, m.end())
        end = len(data) if end == -1 else end
        spans.append((m.start(), end))
        pos = end
    return _Spans(spans)


def candidates(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(encoding, offset, encoded text) of every payload that looks encoded in ``data``, in order."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        yield "UTF-16 text", 0, data
        return
    armour = _armour(data)
    blocks: list[tuple[int, int]] = []
    for m in _B64_BLOCK.finditer(data):
        blocks.append(m.span())
        if not armour.holds(m.start()) and _looks_encoded(m.group()):
            yield "base64", m.start(), m.group()
    in_block = _Spans(blocks)
    for m in _B64_RUN.finditer(data):
        if not (armour.holds(m.start()) or in_block.holds(m.start())) and _looks_encoded(m.group()):
            yield "base64", m.start(), m.group()
    for m in _HEX_RUN.finditer(data):
        if len(m.group()) % 2 == 0 and not (armour.holds(m.start()) or in_block.holds(m.start())):
            yield "hex", m.start(), m.group()
    for m in _BYTE_LIST.finditer(data):
        yield "byte list", m.start(), m.group()


def _decode(encoding: str, text: bytes) -> bytes | None:
    if encoding == "base64":
        return b64decode(text)
    if encoding == "hex":
        return bytes.fromhex(text.decode("ascii"))
    if encoding == "byte list":
        return bytes(int(x, 16) for x in re.findall(rb"0[xX]([0-9A-Fa-f]{2})", text))
    return text.decode("utf-16", errors="replace").encode("utf-8")


def decodings(data: bytes, budget: Budget) -> Iterator[Inner | Refusal]:
    """The payloads encoded in ``data``, decoded, one at a time (each charged to ``budget``)."""
    for encoding, offset, text in candidates(data):
        plain = _decode(encoding, text)  # never longer than the text: decoding does not expand
        if plain is None or len(plain) < 16:
            continue
        if len(plain) > budget.limit():
            budget.charge(budget.limit())
            yield Refusal("expansion-bound", encoding, offset, budget.too_big())
            continue
        budget.charge(len(plain))
        yield Inner(encoding, offset, plain)
