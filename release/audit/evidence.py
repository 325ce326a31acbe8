"""Reading a release folder: its files, the signed layout, the links, the archives' contents.

Parsing happens here, at the edge; every reader says what it could not read
instead of guessing. Nothing here writes to the folder, and nothing reads
outside it except the owner's public key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import stat
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from in_toto.models.layout import Layout
from in_toto.models.link import Link
from in_toto.models.metadata import Metablock

from release import inspection
from release.archive import ArtifactDigest, file_identity, hash_stream
from release.audit.model import MemberInfo
from release.errors import VerificationError
from release.products import ARCHIVE_FORMATS, SEMVER

MAX_DOCUMENT_BYTES = 4 << 20  # a layout, link, SBOM, gates report or provenance; a release's are far smaller
MAX_SUMS_BYTES = 1 << 20  # SHA256SUMS lists a few dozen files
MAX_SIGNATURE_BYTES = 64 << 10
MAX_JSON_DEPTH = 64
MAX_JSON_NODES = 200_000
MAX_ENTRIES = inspection.MAX_FOLDER_ENTRIES


def parse_json(data: bytes | str, where: str) -> Any:
    """Parse JSON evidence: UTF-8, at most :data:`MAX_JSON_DEPTH` levels deep; :class:`VerificationError` otherwise.

    The depth is checked on the parsed value without recursion, so nothing
    that walks it later (a schema validator, in-toto) can exhaust the stack.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise VerificationError(f"{where}: JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:  # int digits limit and bad UTF-8 are ValueErrors too
        raise VerificationError(f"{where}: not JSON ({_short(str(e))})") from None
    check_depth(value, where)
    return value


def check_depth(value: Any, where: str) -> None:
    """Refuse parsed JSON deeper than :data:`MAX_JSON_DEPTH` or with more than :data:`MAX_JSON_NODES` values.

    Checked without recursion, before anything (a schema validator, in-toto,
    a report) walks the value.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > MAX_JSON_DEPTH:
            raise VerificationError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if nodes > MAX_JSON_NODES:
            raise VerificationError(f"{where}: JSON of more than {MAX_JSON_NODES} values, more than any release's")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Folder:
    """The top level of a release folder: its regular files (hashed on demand, once) and anything else.

    Entries are judged by ``lstat``; a file is opened only as a regular file,
    never following a symlink, never blocking on a FIFO, and read whole only
    up to a limit. Each file is hashed in one streamed pass (SHA-256 and
    BLAKE2b-512, every digest the checks compare), at most once per folder,
    whichever thread asks first: :meth:`prefetch` starts those passes on an
    executor (hashlib releases the GIL), :meth:`digest` waits for the one it
    needs.
    """

    path: Path
    files: dict[str, Path]
    sizes: dict[str, int]
    others: list[str]
    overflow: bool = False
    _digests: dict[str, Future[ArtifactDigest | None]] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def scan(cls, path: Path) -> Folder:
        """List ``path`` (at most :data:`MAX_ENTRIES` entries); raises :class:`OSError` when it cannot be listed."""
        files: dict[str, Path] = {}
        sizes: dict[str, int] = {}
        others: list[str] = []
        overflow = False
        with os.scandir(path) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_ENTRIES:
                    overflow = True
                    break
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    files[entry.name] = Path(entry.path)
                    sizes[entry.name] = st.st_size
                else:
                    others.append(entry.name)
        return cls(path, dict(sorted(files.items())), sizes, sorted(others), overflow)

    def has(self, name: str) -> bool:
        return name in self.files

    def digest(self, name: str) -> ArtifactDigest | None:
        """The digest of the file ``name`` (streamed), or None when it is absent or unreadable."""
        future, mine = self._claim(name)
        if mine:
            self._hash_into(name, future)
        return future.result()

    def adopt(self, known: Mapping[str, ArtifactDigest]) -> list[str]:
        """Take the digests of files this process wrote or hashed itself, for files that are still those files.

        A digest is taken only with its :func:`~release.archive.file_identity`
        (device, inode, size, modification and change times), and only when
        the folder's file of that name, not followed if a link, has that very
        identity now; every other file is hashed from the folder as usual.
        Call it before anything else reads or links the folder's files (a new
        hard link changes a file's change time). Returns the names taken.
        """
        taken = []
        for name, known_digest in sorted(known.items()):
            path = self.files.get(name)
            if path is None or known_digest.identity is None:
                continue
            try:
                now = file_identity(os.stat(path, follow_symlinks=False), known_digest.size)
            except OSError:
                continue
            if now != known_digest.identity:
                continue
            future, mine = self._claim(name)
            if mine:
                future.set_result(dataclasses.replace(known_digest, path=path))
                taken.append(name)
        return taken

    def prefetch(self, names: Iterable[str], executor: Executor) -> None:
        """Start hashing the files ``names`` (those in the folder, not yet hashed or being hashed) on ``executor``.

        Results are the same as :meth:`digest`'s, whichever thread computes
        them; each file is still read once. The executor must outlive the
        checks that wait on these digests.
        """
        for name in names:
            if name in self.files:
                future, mine = self._claim(name)
                if mine:
                    try:
                        executor.submit(self._hash_into, name, future)
                    except RuntimeError:  # the executor is shut down: hashed here, for whoever waits, then said
                        self._hash_into(name, future)
                        raise

    def abandon_prefetch(self) -> None:
        """Cancel the digests whose hashing never started (their executor was shut down with ``cancel_futures``).

        Whoever asks for one afterwards hashes the file itself.
        """
        with self._lock:
            for name, future in list(self._digests.items()):
                if future.cancel():
                    del self._digests[name]

    def _claim(self, name: str) -> tuple[Future[ArtifactDigest | None], bool]:
        """The future of ``name``'s digest, and whether the caller is the one to compute it."""
        with self._lock:
            future = self._digests.get(name)
            if future is not None:
                return future, False
            future = self._digests[name] = Future()
            return future, True

    def _hash_into(self, name: str, future: Future[ArtifactDigest | None]) -> None:
        result: ArtifactDigest | None = None
        try:
            if name in self.files:
                with contextlib.suppress(OSError, inspection.Refused):
                    fd, _ = inspection.open_regular(str(self.files[name]))
                    with os.fdopen(fd, "rb") as f:
                        result = hash_stream(self.files[name], f)
        except BaseException as e:  # never leave a waiter waiting: it gets the error instead
            future.set_exception(e)
            raise
        future.set_result(result)

    def read(self, name: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """The bytes of the file ``name``, or None when there is none; :class:`VerificationError` when unreadable."""
        if name not in self.files:
            return None
        if self.sizes[name] > limit:
            raise VerificationError(f"{name}: {self.sizes[name]} bytes, over the {limit}-byte limit for such a file")
        try:
            return inspection.read_small(str(self.files[name]), limit)
        except inspection.Refused as e:
            raise VerificationError(str(e).replace(str(self.files[name]), name)) from None

    def text(self, name: str, limit: int = MAX_DOCUMENT_BYTES) -> str | None:
        """The file's UTF-8 text, or None when there is none; :class:`VerificationError` when unreadable."""
        data = self.read(name, limit)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError(f"{name}: not UTF-8 text (byte {e.start})") from None

    def json(self, name: str) -> Any:
        """The file's JSON, checked by :func:`parse_json`; None when there is none."""
        data = self.read(name)
        return None if data is None else parse_json(data, name)


# --- the layout ------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutStep:
    """A step of the layout: who may sign its link, what it runs, which steps' products it consumes."""

    name: str
    pubkeys: tuple[str, ...]
    expected_command: tuple[str, ...]
    depends_on: tuple[str, ...]
    creates: tuple[str, ...]
    threshold: int = 1


@dataclass(frozen=True)
class LayoutView:
    """The parts of a root layout an audit reads."""

    keys: Mapping[str, Mapping[str, Any]]
    steps: tuple[LayoutStep, ...]
    inspections: tuple[str, ...]
    expires: str
    readme: str
    config: inspection.Config | None = None  # the inspection program's configuration, when it runs ours
    ours: bool = False  # the inspection runs this project's inspection program, text for text

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
                threshold=int(s.threshold) if isinstance(s.threshold, int) else 1,
            )
        )
    keys = {str(k): dict(v) for k, v in (layout.keys or {}).items()}
    return LayoutView(
        keys=keys,
        steps=tuple(steps),
        inspections=tuple(str(i.name) for i in layout.inspect or []),
        expires=str(layout.expires),
        readme=str(layout.readme or ""),
        config=_inspection_config(layout),
        ours=_runs_our_program(layout),
    )


def _runs_our_program(layout: Any) -> bool:
    """Whether the layout's one inspection runs this project's inspection program as it is here, text for text.

    Then a passing ``in-toto-verify`` means the program read every archive
    against its packaging link exactly as :func:`read_archive` does (an
    earlier release's program, or another one, may differ: its verdict is not
    taken for this audit's).
    """
    runs = [list(i.run or []) for i in layout.inspect or []]
    return len(runs) == 1 and len(runs[0]) == 6 and runs[0][4] == _program()


@functools.cache
def _program() -> str:
    return Path(inspection.__file__).read_text(encoding="utf-8")


def _inspection_config(layout: Any) -> inspection.Config | None:
    """The configuration of the layout's inspection when its command is the project's inspection program."""
    for i in layout.inspect or []:
        run = list(i.run or [])
        if len(run) == 6 and run[:4] == ["python3", "-I", "-S", "-c"]:
            try:
                return inspection.Config(str(run[5]))
            except (inspection.Refused, ValueError, KeyError, TypeError):
                return None
    return None


def load_metablock(folder: Folder, name: str) -> tuple[Any | None, str | None]:
    """``(metablock, None)``, or ``(None, why)`` when ``name`` is not readable in-toto metadata (bounded)."""
    try:
        data = folder.json(name)
        if not isinstance(data, dict) or sorted(data) != ["signatures", "signed"]:
            return None, "not in-toto metadata and nothing else (a signed document and its signatures)"
        return Metablock.from_dict(data), None
    except VerificationError as e:
        return None, e.message.removeprefix(f"{name}: ")
    except Exception as e:  # in-toto raises many types for a malformed document
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
    """What is inside an archive (its regular files), or why it was not, or could not be, read."""

    members: tuple[MemberInfo, ...]
    problems: tuple[str, ...]
    readable: bool = True

    @property
    def hashes(self) -> dict[str, str]:
        return {m.path: m.sha256 for m in self.members}


def declared_contents(
    archive: str, bundle: inspection.Bundle, links: Sequence[inspection.Link]
) -> ArchiveContents | None:
    """What the packaging ``links`` declare the archive holds, when they all declare the same; else None.

    Only for an archive the stock ``in-toto-verify`` already had this
    project's inspection program read (:func:`read_archive`'s check, in the
    verifier, on these bytes): its members are then exactly the declared ones.
    The inspection reads one link of each step; taken only when every link
    of the step declares the same members and size, whichever it read.
    """
    declared = [(link.environment.get("archive-size"), link.environment.get("archive-members")) for link in links]
    if not declared or any(d != declared[0] for d in declared[1:]):
        return None
    stem = archive[: -len(bundle.format) - 1]
    try:
        members = inspection.declared_members(links[0], bundle, stem)
    except (inspection.Refused, ValueError, TypeError) as e:
        return ArchiveContents((), (str(e),), readable=False)
    files = tuple(MemberInfo(m.name, m.size, m.sha256) for m in members if m.kind == "file")
    return ArchiveContents(tuple(sorted(files, key=lambda m: m.path)), ())


def read_archive(
    path: Path, archive: str, bundle: inspection.Bundle, link: inspection.Link, banned: Mapping[str, str]
) -> ArchiveContents:
    """Check the archive at ``path`` against its verified packaging ``link`` before reading it, then read it.

    The customer's inspection does exactly this (:func:`release.inspection.check_archive`):
    nothing is parsed unless the archive's size and SHA-256 are what the link
    recorded, every member is read in memory against the link's declaration,
    and forbidden content is refused. A refusal makes the archive unreadable.
    """
    try:
        members = inspection.check_archive(str(path), archive, bundle, link, banned)
    except inspection.Refused as e:
        return ArchiveContents((), (str(e).removeprefix(f"{archive}: "),), readable=False)
    except (OSError, ValueError, zlib.error) as e:
        return ArchiveContents((), (f"cannot be read ({type(e).__name__}: {e})",), readable=False)
    files = tuple(MemberInfo(m.name, m.size, m.sha256) for m in members if m.kind == "file")
    return ArchiveContents(tuple(sorted(files, key=lambda m: m.path)), ())
