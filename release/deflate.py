"""Deflate that stores what does not compress: the archives' compressor.

A plain ``zlib`` stream at level 6 spends as long searching random bytes
(packed resources, compressed assets) for matches as it spends on text, and
then writes them as stored blocks anyway. :class:`AdaptiveDeflate` writes one
raw deflate stream (RFC 1951) the same way, but decides per
:data:`BLOCK`-sized block of input whether to search at all: a block whose
probe (a short level-1 trial of :data:`PROBE` bytes taken from
across the block) does not shrink
by :data:`STORE_ABOVE` is written as stored blocks without a search. Runs of
compressible blocks go through one ``zlib`` compressor at the chosen level;
a run that follows stored data starts a fresh compressor primed with the
last 32 KiB of input, so matches may still reach back across the switch.

The output depends only on the input bytes and the level, never on how the
input was split into ``compress`` calls: blocks are cut at fixed offsets of
the stream. Every switch costs 5 bytes (the empty stored block of a sync
flush); for incompressible input the stream is the size zlib itself would
write, for compressible input it is zlib's stream to within those bytes.

:class:`GzipWriter` wraps the stream in a gzip member (RFC 1952) with the
header Python's ``gzip`` writes for no name and mtime 0.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Protocol

BLOCK = 64 << 10  # the unit of the store-or-search decision
PROBE = 4 << 10  # bytes of a block tried at level 1
PROBE_PIECES = 8  # taken as this many pieces spread over the block
STORE_ABOVE = 0.97  # a probe that keeps more than this share of its size means "store"
_WINDOW = 32 << 10  # deflate's history: how far back a match may reach
_STORED_MAX = 0xFFFF  # the largest stored block
_SHORT = 256  # a tail this short is always compressed: a stored block's header would outweigh the search
_FINAL_EMPTY = b"\x03\x00"  # a final, empty block with fixed codes


def incompressible(block: bytes | memoryview) -> bool:
    """Whether a level-1 trial of the block's probe saves under 3 % (never for a short tail).

    The probe is :data:`PROBE_PIECES` pieces spread evenly over the block, so a block that is
    only partly incompressible (where packed data begins or ends) is compressed.
    """
    if len(block) < _SHORT:
        return False
    if len(block) <= PROBE:
        sample = bytes(block)
    else:
        piece, step = PROBE // PROBE_PIECES, len(block) // PROBE_PIECES
        sample = b"".join(block[at : at + piece] for at in range(0, PROBE_PIECES * step, step))
    trial = zlib.compressobj(1, zlib.DEFLATED, -15)
    size = len(trial.compress(sample)) + len(trial.flush())
    return size > len(sample) * STORE_ABOVE


def stored_blocks(data: bytes | memoryview) -> bytes:
    """``data`` as non-final stored blocks; the stream must be at a byte boundary."""
    out = bytearray()
    view = memoryview(data)
    for at in range(0, len(view), _STORED_MAX):
        piece = view[at : at + _STORED_MAX]
        out += struct.pack("<BHH", 0, len(piece), len(piece) ^ 0xFFFF)
        out += piece
    return bytes(out)


class AdaptiveDeflate:
    """A raw deflate compressor with zlib's ``compress``/``flush`` interface (see the module docstring)."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._pending = bytearray()
        self._z: zlib._Compress | None = None
        self._history = b""  # the last 32 KiB of the latest stored block
        self._finished = False

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take ``data``; return the stream bytes completed so far."""
        if self._finished:
            raise ValueError("compress() after flush()")
        self._pending += data
        if len(self._pending) < BLOCK:
            return b""
        out = bytearray()
        view = memoryview(self._pending)
        whole = len(view) - len(view) % BLOCK
        for at in range(0, whole, BLOCK):
            out += self._block(view[at : at + BLOCK])
        view.release()
        del self._pending[:whole]
        return bytes(out)

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        """End the stream (only ``Z_FINISH`` is supported) and return its last bytes."""
        if mode != zlib.Z_FINISH:
            raise ValueError("AdaptiveDeflate supports only Z_FINISH")
        if self._finished:
            return b""
        self._finished = True
        out = bytearray(self._block(memoryview(bytes(self._pending)))) if self._pending else bytearray()
        self._pending.clear()
        if self._z is not None:
            out += self._z.flush(zlib.Z_FINISH)
            self._z = None
        else:
            out += _FINAL_EMPTY
        return bytes(out)

    def _block(self, block: memoryview) -> bytes:
        out = b""
        if incompressible(block):
            if self._z is not None:
                out = self._z.flush(zlib.Z_SYNC_FLUSH)
                self._z = None
            out += stored_blocks(block)
            # What a compressor started after this block is primed with: every block but the last is longer.
            self._history = bytes(block[-_WINDOW:])
        else:
            if self._z is None:
                if self._history:
                    self._z = zlib.compressobj(self._level, zlib.DEFLATED, -15, zdict=self._history)
                else:
                    self._z = zlib.compressobj(self._level, zlib.DEFLATED, -15)
            out = self._z.compress(block)
        return out


class Sink(Protocol):
    """Where a :class:`GzipWriter` writes: anything with ``write``."""

    def write(self, b: bytes, /) -> object: ...


class GzipWriter(io.RawIOBase):
    """A write-only gzip member over :class:`AdaptiveDeflate`, into ``raw`` (left open on close)."""

    # magic, deflate, no flags, mtime 0, no extra flags, OS unknown: what gzip.GzipFile writes for filename="", mtime=0
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, raw: Sink, level: int) -> None:
        super().__init__()
        self._raw = raw
        self._deflate = AdaptiveDeflate(level)
        self._crc = 0
        self._size = 0
        raw.write(self.HEADER)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes written so far (uncompressed), as ``tarfile`` asks of its output."""
        return self._size

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed GzipWriter")
        self._crc = zlib.crc32(b, self._crc)
        n = memoryview(b).nbytes
        self._size += n
        out = self._deflate.compress(b)
        if out:
            self._raw.write(out)
        return n

    def close(self) -> None:
        """Write the end of the stream and the trailer (CRC-32 and size); idempotent."""
        if self.closed:
            return
        try:
            self._raw.write(self._deflate.flush())
            self._raw.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            super().close()
