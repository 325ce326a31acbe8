"""``SHA256SUMS``: the hash of every artifact and signature of a release.

The file is in ``sha256sum -c`` format: ``<hex>  <name>`` lines, LF, sorted by
name, covering every archive and signature in the release folder: every
regular file except ``SHA256SUMS`` itself, its signature, dot-files and the
in-toto metadata (``*.link``, ``root.layout``, the ``*.intoto.jsonl``
provenance), which carries its own signatures and the run's times. Hashes the pipeline already computed
while writing are reused; any other file is hashed by streaming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from release.archive import ArtifactDigest, hash_file, write_bytes_atomic
from release.errors import BadInputError, VerificationError
from release.names import MINISIGN_SUFFIX, OPENPGP_SUFFIX, PROVENANCE_SUFFIX, SIGNIFY_SUMS_NAME
from release.names import SUMS_NAME as SUMS_NAME  # the module's own name for it, kept

# The checksum list and its signatures (they cover it, it cannot list them).
EXCLUDED = frozenset({SUMS_NAME, SUMS_NAME + MINISIGN_SUFFIX, SUMS_NAME + OPENPGP_SUFFIX, SIGNIFY_SUMS_NAME})
# in-toto metadata is verified by its own signatures, not listed.
EXCLUDED_SUFFIXES = (".link", ".layout", PROVENANCE_SUFFIX)


def covered_files(release_dir: Path) -> list[Path]:
    """The files ``SHA256SUMS`` must cover, sorted by name."""
    files = []
    for p in sorted(release_dir.iterdir(), key=lambda p: p.name):
        if p.name in EXCLUDED or p.name.startswith(".") or p.name.endswith(EXCLUDED_SUFFIXES):
            continue
        if p.is_symlink() or not p.is_file():
            raise BadInputError(f"{p}: the release folder holds something that is not a regular file")
        if {"\n", "\r", "\\"} & set(p.name):
            raise BadInputError(f"{p!r}: a file name with a line break or backslash cannot be listed")
        files.append(p)
    return files


def render(hashes: Mapping[str, str]) -> str:
    """The ``SHA256SUMS`` text for ``{name: sha256}``."""
    return "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))


def parse(text: str, where: str) -> dict[str, str]:
    """Parse ``SHA256SUMS`` text; raise :class:`VerificationError` if malformed."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        digest, sep, name = line.partition("  ")
        bad_name = not name or "\r" in name
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or bad_name:
            raise VerificationError(f"{where}: line {n} is not '<sha256>  <name>'")
        if name in out:
            raise VerificationError(f"{where}: {name} is listed twice")
        out[name] = digest
    return out


def write_hash_list(release_dir: Path, known: Iterable[ArtifactDigest] = ()) -> ArtifactDigest:
    """Write ``release_dir/SHA256SUMS`` atomically; return its digest.

    ``known`` digests (computed while the files were written) are reused for
    files of the same name; every other covered file is hashed by streaming.
    """
    reuse = {d.name: d.sha256 for d in known if d.path.parent == release_dir}
    hashes = {p.name: reuse.get(p.name) or hash_file(p).sha256 for p in covered_files(release_dir)}
    if not hashes:
        raise BadInputError(f"{release_dir}: no artifacts to list")
    return write_bytes_atomic(release_dir / SUMS_NAME, render(hashes).encode(), "the checksum list")
