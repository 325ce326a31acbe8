"""Synthetic product binaries: half compressible, half random, of a chosen size.

Every binary the declaration lists is written as ``<bins>/<target>/<file>``
(the layout ``build.py --unsafe-prebuilt-binaries`` reads). Each bundle's
inputs (its binaries plus its asset files) total the requested size; each
binary is first half pseudo-text (word salad from a fixed vocabulary,
compressing about 3:1 with deflate, like code and string tables) then half
random bytes (``os.urandom``, incompressible, like packed resources). Files
are written in 1 MiB chunks; nothing larger is ever held in memory. A
Windows binary (``.exe``) starts with a minimal PE32+ header whose one
section holds the rest, with a correct PE checksum, so that the codesign
step can Authenticode-sign it and a packager can remove the signature again.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

from release.authenticode import PE_HEADER, minimal_pe_header
from release.products import Bundle, Workspace

CHUNK = 1 << 20
MiB = 1 << 20
_TEXT_BLOCK = 4 * MiB  # longer than deflate's 32 KiB window, so repeats never help it
_SEED = 20240601


@dataclass(frozen=True)
class BundleInputs:
    """What one bundle's archive is made of, in bytes."""

    bundle_id: str
    archive: str
    binaries: int
    assets: int

    @property
    def total(self) -> int:
        return self.binaries + self.assets


def text_block() -> bytes:
    """A fixed 4 MiB block of pseudo-text (deterministic)."""
    rng = random.Random(_SEED)  # noqa: S311 - filler text, not a secret
    letters = "abcdefghijklmnopqrstuvwxyz_"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 12))) for _ in range(4096)]
    out = bytearray()
    while len(out) < _TEXT_BLOCK:
        words = rng.choices(vocab, k=12)
        out += (" ".join(words) + "\n").encode()
    return bytes(out[:_TEXT_BLOCK])


_PE_CHECKSUM_AT = 64 + 24 + 64  # the DOS header, the PE signature and COFF header, then the checksum field


def set_pe_checksum(path: Path) -> None:
    """Write the PE checksum of ``path`` (an even-sized PE file) into its header, reading it in chunks."""
    total = 0
    with path.open("r+b") as f:
        while chunk := f.read(CHUNK):
            total += sum(array("H", chunk))
        f.seek(_PE_CHECKSUM_AT)
        total -= sum(array("H", f.read(4)))  # the field itself counts as zero
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        f.seek(_PE_CHECKSUM_AT)
        f.write(struct.pack("<I", total + path.stat().st_size))


def _write_binary(path: Path, size: int, block: bytes, offset: int) -> None:
    """Write ``size`` bytes: the first half from ``block`` (cycled from ``offset``), the rest random.

    A ``.exe`` is a PE file: its header first (an even ``size``, at least a page), then the same content.
    """
    pe = path.suffix == ".exe"
    if pe:
        size = max(size, 2 * PE_HEADER) & ~1
    head = minimal_pe_header(size) if pe else b""
    text = (size - len(head)) // 2
    with path.open("wb") as f:
        f.write(head)
        pos = offset % len(block)
        left = text
        while left:
            n = min(left, CHUNK, len(block) - pos)
            f.write(block[pos : pos + n])
            pos = (pos + n) % len(block)
            left -= n
        left = size - len(head) - text
        while left:
            n = min(left, CHUNK)
            f.write(os.urandom(n))
            left -= n
    if pe:
        set_pe_checksum(path)
    os.chmod(path, 0o755)  # noqa: S103 - an executable, as cargo leaves it


def asset_bytes(ws: Workspace, bundle: Bundle) -> int:
    """The bytes of every regular file under ``bundle``'s asset directories."""
    total = 0
    for asset in bundle.assets:
        for dirpath, _, files in os.walk(ws.root / asset):
            total += sum((Path(dirpath) / f).stat().st_size for f in files)
    return total


def make_binaries(ws: Workspace, bins: Path, size: int) -> list[BundleInputs]:
    """Write every declared binary under ``bins`` so that each bundle's inputs total ``size`` bytes.

    A bundle's binary bytes are ``size`` minus its asset files, split evenly
    across its binaries. Side effect: replaces ``bins``.
    """
    if bins.exists():
        shutil.rmtree(bins)
    block = text_block()
    out: list[BundleInputs] = []
    n = 0
    for bundle in ws.bundles:
        assets = asset_bytes(ws, bundle)
        budget = max(size - assets, len(bundle.binaries))
        files = bundle.binary_files()
        dest = bins / bundle.target
        dest.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(files):
            share = budget // len(files) + (budget % len(files) if i == len(files) - 1 else 0)
            _write_binary(dest / name, share, block, n * 1_234_567)
            n += 1
        out.append(BundleInputs(bundle.id, bundle.archive_name(ws.version), budget, assets))
    return out


def make_trees(ws: Workspace, bins: Path, trees: Path) -> list[tuple[str, str]]:
    """Lay out each bundle as the archive will hold it, for the shell baseline.

    ``trees/<stem>/bin/<file>`` are hard links to the synthetic binaries (no
    copy: preparing the tree is not part of the timed work) and asset
    directories are copied. Returns ``(format, stem)`` per bundle.
    """
    if trees.exists():
        shutil.rmtree(trees)
    specs: list[tuple[str, str]] = []
    for bundle in ws.bundles:
        top = trees / bundle.stem(ws.version)
        (top / "bin").mkdir(parents=True)
        for name in bundle.binary_files():
            os.link(bins / bundle.target / name, top / "bin" / name)
        for asset in bundle.assets:
            shutil.copytree(ws.root / asset, top / asset)
        specs.append((bundle.format, bundle.stem(ws.version)))
    return specs
