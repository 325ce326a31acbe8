"""Reading a release folder: its files, the signed layout, the links, the archives' contents.

Parsing happens here, at the edge; every reader says what it could not read
instead of guessing. Nothing here writes to the folder, and nothing reads
outside it except the owner's public key.
"""

from __future__ import annotations

import gzip
import hashlib
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from in_toto.models.layout import Layout
from in_toto.models.link import Link
from in_toto.models.metadata import Metablock

from release.archive import CHUNK, ArtifactDigest, hash_file
from release.audit.model import MemberInfo
from release.products import ARCHIVE_FORMATS, SEMVER


@dataclass
class Folder:
    """The top level of a release folder: its regular files (hashed on demand, once) and anything else."""

    path: Path
    files: dict[str, Path]
    others: list[str]
    _digests: dict[str, ArtifactDigest | None] = field(default_factory=dict)

    @classmethod
    def scan(cls, path: Path) -> Folder:
        """List ``path``; raises :class:`OSError` when it cannot be listed."""
        files: dict[str, Path] = {}
        others: list[str] = []
        for p in sorted(path.iterdir(), key=lambda p: p.name):
            if stat.S_ISREG(p.lstat().st_mode):
                files[p.name] = p
            else:
                others.append(p.name)
        return cls(path, files, others)

    def has(self, name: str) -> bool:
        return name in self.files

    def digest(self, name: str) -> ArtifactDigest | None:
        """The digest of the file ``name`` (streamed), or None when it is absent or unreadable."""
        if name not in self._digests:
            try:
                self._digests[name] = hash_file(self.files[name]) if name in self.files else None
            except OSError:
                self._digests[name] = None
        return self._digests[name]

    def text(self, name: str) -> str | None:
        """The file's text (UTF-8), or None when absent or unreadable."""
        try:
            return self.files[name].read_text(encoding="utf-8") if name in self.files else None
        except (OSError, UnicodeDecodeError):
            return None


# --- the layout ------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutStep:
    """A step of the layout: who may sign its link, what it runs, which steps' products it consumes."""

    name: str
    pubkeys: tuple[str, ...]
    expected_command: tuple[str, ...]
    depends_on: tuple[str, ...]
    creates: tuple[str, ...]


@dataclass(frozen=True)
class LayoutView:
    """The parts of a root layout an audit reads."""

    keys: Mapping[str, Mapping[str, Any]]
    steps: tuple[LayoutStep, ...]
    inspections: tuple[str, ...]
    expires: str
    readme: str

    def step(self, name: str) -> LayoutStep | None:
        for s in self.steps:
            if s.name == name:
                return s
        return None

    def key_dicts(self, step: str) -> list[dict[str, Any]]:
        """The key dicts (with ``keyid``) the layout authorises for ``step``; empty when none."""
        s = self.step(step)
        if s is None:
            return []
        return [{**self.keys[k], "keyid": k} for k in s.pubkeys if k in self.keys]


def _rule_sources(rules: Any) -> set[str]:
    """The steps ``MATCH ... WITH PRODUCTS ... FROM <step>`` rules consume."""
    out: set[str] = set()
    for rule in rules or []:
        if isinstance(rule, list) and rule and rule[0] == "MATCH" and "PRODUCTS" in rule and len(rule) >= 2:
            out.add(str(rule[-1]))
    return out


def layout_view(layout: Any) -> LayoutView:
    """Read an in-toto :class:`Layout` object into a :class:`LayoutView`."""
    steps = []
    for s in layout.steps:
        depends = (_rule_sources(s.expected_materials) | _rule_sources(s.expected_products)) - {s.name}
        creates = tuple(str(r[1]) for r in s.expected_products or [] if isinstance(r, list) and r[:1] == ["CREATE"])
        steps.append(
            LayoutStep(
                name=str(s.name),
                pubkeys=tuple(str(k) for k in s.pubkeys),
                expected_command=tuple(str(c) for c in s.expected_command or []),
                depends_on=tuple(sorted(depends)),
                creates=creates,
            )
        )
    keys = {str(k): dict(v) for k, v in (layout.keys or {}).items()}
    return LayoutView(
        keys=keys,
        steps=tuple(steps),
        inspections=tuple(str(i.name) for i in layout.inspect or []),
        expires=str(layout.expires),
        readme=str(layout.readme or ""),
    )


def load_metablock(path: Path) -> tuple[Any | None, str | None]:
    """``(metablock, None)``, or ``(None, why)`` when ``path`` is not a readable in-toto metadata file."""
    try:
        return Metablock.load(str(path)), None
    except Exception as e:  # in-toto raises many types for a malformed file
        return None, f"not readable in-toto metadata ({type(e).__name__})"


def is_layout(metablock: Any) -> bool:
    return isinstance(metablock.signed, Layout)


def is_link(metablock: Any) -> bool:
    return isinstance(metablock.signed, Link)


def signature_ok(metablock: Any, key: Mapping[str, Any]) -> bool:
    """Whether ``metablock`` carries a valid signature by ``key`` (an in-toto key dict with keyid)."""
    try:
        metablock.verify_signature(dict(key))
    except Exception:  # in-toto and securesystemslib raise several types for a bad signature
        return False
    return True


def step_depths(steps: tuple[LayoutStep, ...]) -> dict[str, int]:
    """Each step's column in the supply-chain diagram: the length of its longest dependency path."""
    by_name = {s.name: s for s in steps}
    depth: dict[str, int] = {}

    def visit(name: str, trail: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        step = by_name.get(name)
        if step is None or name in trail:
            return 0
        parents = [visit(d, trail | {name}) + 1 for d in step.depends_on if d in by_name]
        depth[name] = max(parents, default=0)
        return depth[name]

    for s in steps:
        visit(s.name, frozenset())
    return depth


# --- names -----------------------------------------------------------------------


def archive_format(name: str) -> str | None:
    """``tar.gz`` or ``zip`` when ``name`` is an archive's file name, else None."""
    for fmt in ARCHIVE_FORMATS:
        if name.endswith("." + fmt):
            return fmt
    return None


def archive_stem(name: str) -> str:
    fmt = archive_format(name)
    return name[: -len(fmt) - 1] if fmt else name


def version_of(stem: str) -> str | None:
    """The version at the end of ``<name>-<version>`` (``ransomeye-agent-linux-1.0.0`` → ``1.0.0``)."""
    parts = stem.split("-")
    for i in range(1, len(parts)):
        candidate = "-".join(parts[i:])
        if candidate[:1].isdigit() and SEMVER.fullmatch(candidate):
            return candidate
    return None


# --- archives --------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveContents:
    """What is inside an archive: its regular files, and whatever is wrong with it."""

    members: tuple[MemberInfo, ...]
    problems: tuple[str, ...]
    readable: bool = True

    @property
    def hashes(self) -> dict[str, str]:
        return {m.path: m.sha256 for m in self.members}


def _hash_stream(f: IO[bytes]) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        sha.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest()


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or "\\" in name


def _tar_members(path: Path, problems: list[str]) -> Iterator[MemberInfo]:
    # gzip.open checks the CRC and length at the end of the stream, which tarfile's own "r|gz" does not;
    # tarfile also stops silently at a corrupt header, so what follows its end must be zero padding.
    with gzip.open(path, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        yield from _tar_stream(tar, problems)
        while chunk := gz.read(CHUNK):
            if chunk.count(0) != len(chunk):
                problems.append("holds data after its end-of-archive marker (a corrupt or hidden member)")
                while gz.read(CHUNK):
                    pass  # to the end, so the gzip checksum is checked
                break


def _tar_stream(tar: tarfile.TarFile, problems: list[str]) -> Iterator[MemberInfo]:
    for member in tar:
        if _unsafe(member.name):
            problems.append(f"holds an unsafe member name {member.name!r}")
        if member.isdir():
            continue
        if not member.isreg():
            problems.append(f"holds {member.name!r}, which is not a regular file or directory")
            continue
        f = tar.extractfile(member)
        if f is None:
            problems.append(f"{member.name!r} cannot be read")
            continue
        size, sha = _hash_stream(f)
        yield MemberInfo(member.name, size, sha)


def _zip_members(path: Path, problems: list[str]) -> Iterator[MemberInfo]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if _unsafe(info.filename):
                problems.append(f"holds an unsafe member name {info.filename!r}")
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if mode and not stat.S_ISREG(mode):
                problems.append(f"holds {info.filename!r}, which is not a regular file or directory")
                continue
            with zf.open(info) as f:
                size, sha = _hash_stream(f)
            yield MemberInfo(info.filename, size, sha)


def read_archive(path: Path, stem: str) -> ArchiveContents:
    """Stream the archive at ``path`` (never read whole) and hash every regular file in it.

    Problems: unreadable or corrupt archive (then nothing of it is trusted:
    ``readable`` is False and no member is listed), data hidden after the tar
    end-of-archive marker, unsafe or duplicate member names, links or devices,
    members outside the one top-level directory ``stem/``.
    """
    problems: list[str] = []
    members: list[MemberInfo] = []
    fmt = archive_format(path.name)
    try:
        reader = _tar_members if fmt == "tar.gz" else _zip_members
        members = list(reader(path, problems))
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, ValueError) as e:  # BadGzipFile too
        problems.append(f"cannot be read as {fmt} ({type(e).__name__}: {e})")
        return ArchiveContents((), tuple(problems), readable=False)
    seen: set[str] = set()
    for m in members:
        if m.path in seen:
            problems.append(f"holds {m.path!r} twice")
        seen.add(m.path)
        if not m.path.startswith(stem + "/"):
            problems.append(f"holds {m.path!r} outside its top-level directory {stem}/")
    return ArchiveContents(tuple(sorted(members, key=lambda m: m.path)), tuple(problems))
