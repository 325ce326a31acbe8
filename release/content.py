"""Judging files by their bytes, not their names: forbidden content and executables.

Used by the gates (before the build: against the edge *sources*), by the
build step (each binary's compiler inputs against the edge sources) and by
the packagers (every member against the edge sources *and* the edge
binaries the build just made). The customer's inspection
(:mod:`release.inspection`) applies the same rules to the archive it reads.

* :class:`ForbiddenContent` finds, in a file, a copy of any of a set of
  forbidden files ("needles"): the file equal to one, or containing one.
  Files are streamed in 1 MiB chunks (never read whole); a needle of up to
  :data:`ANCHOR` bytes is searched as a whole, a larger one by a 4 KiB
  anchor window, each hit then compared byte for byte with the needle.
  Needles shorter than :data:`MIN_CONTAINED` bytes (a line or two, which
  any file may hold by chance) count only when a file equals them.
* :func:`head_executable` says whether a file starts like an executable
  (ELF, PE, Mach-O, ``#!`` script), by the inspection's own magic table.
* :func:`embedded_executable` finds an ELF, PE or Mach-O image further in
  (an executable hidden inside a bigger asset), by its header's structure.

Standard library only: the gates import it before any environment exists.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from release.inspection import HEAD_BYTES, executable_kind

CHUNK = 1 << 20
ANCHOR = 4096
MIN_CONTAINED = 64
_ELF_IDENT = b"\x7fELF"
_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
# CPU types a Mach-O header names: x86, x86_64, arm, arm64, ppc, ppc64.
_MACHO_CPUS = frozenset({7, 0x01000007, 12, 0x0100000C, 18, 0x01000012})
_PE_MAX_OFFSET = 1 << 16


@dataclass(frozen=True)
class Needle:
    """A file no judged file may equal or contain.

    ``label`` says what it is (``the edge/ file edge/x.rs``); ``kind`` what
    sort of file (``source file``, ``binary``), for the route of a message.
    """

    label: str
    path: Path
    size: int
    kind: str = "source file"


@dataclass(frozen=True)
class Found:
    """Where a needle was found: the whole judged file (``whole``), or inside it at ``offset``."""

    needle: Needle
    offset: int
    whole: bool

    def describe(self) -> str:
        if self.whole:
            return f"is byte for byte {self.needle.label}"
        return f"contains {self.needle.label} ({self.needle.size} bytes at byte {self.offset})"


@dataclass
class _Searched:
    needle: Needle
    anchor: bytes
    anchor_offset: int
    whole_anchor: bool = field(init=False)

    def __post_init__(self) -> None:
        self.whole_anchor = len(self.anchor) == self.needle.size


def _read_at(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = os.pread(fd, n - len(out), offset + len(out))
        if not got:
            break
        out += got
    return bytes(out)


def _best_anchor(fd: int, size: int) -> tuple[bytes, int]:
    """A window of ``ANCHOR`` bytes of a large needle, the most varied of a few (so it rarely matches by chance)."""
    best = (b"", 0)
    best_score = -1
    for offset in sorted({0, size // 4, size // 2, (3 * size) // 4, size - ANCHOR}):
        offset = max(0, min(offset, size - ANCHOR))
        window = _read_at(fd, ANCHOR, offset)
        score = len(set(window))
        if score > best_score:
            best, best_score = (window, offset), score
    return best


class ForbiddenContent:
    """A set of forbidden files, searched in other files by content.

    ``min_equal`` is the smallest needle that counts when a file equals it
    (1: any non-empty file; :data:`MIN_CONTAINED` to ignore tiny files that
    coincide by chance). Empty needles never count. Reading a needle that
    vanished or cannot be read raises :class:`OSError`.
    """

    def __init__(self, needles: Iterable[Needle], *, min_equal: int = 1) -> None:
        self._small: dict[int, list[Needle]] = {}
        self._searched: list[_Searched] = []
        self.count = 0
        for needle in needles:
            if needle.size < max(1, min_equal):
                continue
            self.count += 1
            if needle.size < MIN_CONTAINED:
                self._small.setdefault(needle.size, []).append(needle)
                continue
            with needle.path.open("rb") as f:
                if needle.size <= ANCHOR:
                    anchor, offset = f.read(needle.size + 1), 0
                    if len(anchor) != needle.size:
                        raise OSError(f"{needle.path}: changed size while being read")
                else:
                    anchor, offset = _best_anchor(f.fileno(), needle.size)
            self._searched.append(_Searched(needle, anchor, offset))

    def __bool__(self) -> bool:
        return self.count > 0

    def search(self, path: Path) -> Found | None:
        """The first needle ``path`` equals or contains, or None. Streams the file; raises :class:`OSError`."""
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            small = self._small.get(size)
            if small:
                data = f.read(size + 1)
                for needle in small:
                    if needle.path.read_bytes() == data:
                        return Found(needle, 0, True)
                f.seek(0)
            candidates = [s for s in self._searched if s.needle.size <= size]
            if not candidates:
                return None
            return self._stream(f.fileno(), size, candidates)

    def _stream(self, fd: int, size: int, candidates: list[_Searched]) -> Found | None:
        os.lseek(fd, 0, os.SEEK_SET)
        keep = max(len(c.anchor) for c in candidates) - 1
        tail = b""
        pos = 0  # the file offset just past ``tail``
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return None
            window = tail + chunk
            base = pos - len(tail)
            for c in candidates:
                i = window.find(c.anchor, max(0, len(tail) - len(c.anchor) + 1))
                while i != -1:
                    start = base + i - c.anchor_offset
                    if c.whole_anchor:
                        return Found(c.needle, start, size == c.needle.size)
                    if start >= 0 and start + c.needle.size <= size and _same(fd, start, c.needle):
                        return Found(c.needle, start, size == c.needle.size)
                    i = window.find(c.anchor, i + 1)
            pos += len(chunk)
            tail = window[-keep:] if keep else b""


def _same(fd: int, start: int, needle: Needle) -> bool:
    """Whether the file ``fd`` holds exactly ``needle`` from ``start``: its last block first, then all of it."""
    with needle.path.open("rb") as n:
        nfd = n.fileno()
        last = max(0, needle.size - ANCHOR)
        if _read_at(fd, needle.size - last, start + last) != _read_at(nfd, needle.size - last, last):
            return False
        done = 0
        while done < needle.size:
            step = min(CHUNK, needle.size - done)
            if _read_at(fd, step, start + done) != _read_at(nfd, step, done):
                return False
            done += step
    return True


def head_executable(path: Path) -> str | None:
    """What kind of executable ``path`` starts as (``an ELF executable``...), or None. Raises :class:`OSError`."""
    with path.open("rb") as f:
        return executable_kind(f.read(HEAD_BYTES))


def _elf_at(window: bytes, i: int) -> bool:
    ident = window[i : i + 7]
    return len(ident) == 7 and ident[4] in (1, 2) and ident[5] in (1, 2) and ident[6] == 1


def _macho_at(window: bytes, i: int) -> bool:
    head = window[i : i + 16]
    if len(head) < 16:
        return False
    little = head[:4] in (b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
    cpu, _, filetype = struct.unpack("<III" if little else ">III", head[4:16])
    return cpu in _MACHO_CPUS and 1 <= filetype <= 12


def _pe_at(fd: int, offset: int) -> bool:
    header = _read_at(fd, 0x40, offset)
    if len(header) < 0x40:
        return False
    (lfanew,) = struct.unpack("<I", header[0x3C:0x40])
    return 0x40 <= lfanew < _PE_MAX_OFFSET and _read_at(fd, 4, offset + lfanew) == b"PE\0\0"


_EMBEDDED_KINDS = (
    (_ELF_IDENT, "an ELF executable"),
    (b"MZ", "a PE (Windows) executable"),
    *((m, "a Mach-O executable") for m in _MACHO_MAGICS),
)
_HEADER_BYTES = 16  # the most any of the structure checks below needs from the window


def _header_at(fd: int, window: bytes, i: int, offset: int, magic: bytes) -> bool:
    if magic == _ELF_IDENT:
        return _elf_at(window, i)
    if magic == b"MZ":
        return _pe_at(fd, offset)
    return _macho_at(window, i)


def embedded_executable(path: Path) -> tuple[int, str] | None:
    """The first ELF, PE or Mach-O image inside ``path`` after its first byte: ``(offset, kind)``, or None.

    Judged by header structure (ELF identification bytes; a DOS stub whose
    ``e_lfanew`` leads to a ``PE`` signature; a Mach-O magic with a known CPU
    and file type), so random data rarely matches. Streams; raises :class:`OSError`.
    """
    with path.open("rb") as f:
        fd = f.fileno()
        tail = b""
        judged = 1  # every offset below this one has been judged (offset 0 is the head's business)
        pos = 0  # the file offset just past ``tail``
        while True:
            chunk = os.read(fd, CHUNK)
            window = tail + chunk
            base = pos - len(tail)
            # At the end of the file every remaining offset is judged on what is left.
            limit = len(window) if not chunk else len(window) - _HEADER_BYTES + 1
            found: list[tuple[int, str]] = []
            for magic, kind in _EMBEDDED_KINDS:
                i = window.find(magic, judged - base)
                while 0 <= i < limit:
                    if _header_at(fd, window, i, base + i, magic):
                        found.append((base + i, kind))
                        break
                    i = window.find(magic, i + 1)
            if found:
                return min(found)
            if not chunk:
                return None
            judged = max(judged, base + limit)
            pos += len(chunk)
            tail = window[judged - base :]
