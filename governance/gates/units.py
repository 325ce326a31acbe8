"""systemd service units and their drop-ins, read the way systemd 252 reads them.

**Syntax** (:func:`parse_unit_text`) follows systemd's ``config_parse()``: a
line ends at ``\\n``, ``\\r`` or NUL (or a run of distinct ones, like
``\\r\\n``); a line whose first non-blank character is ``#`` or ``;`` is a
comment, also in the middle of a continuation; a line ending in an odd number
of backslashes continues on the next; only systemd's blanks (space, tab, CR,
LF) are stripped, so ``\\v`` or a no-break space stays part of a key or value
as it does for systemd. ``[Section]`` headers, ``Key=Value`` assignments and
comments are accepted; anything else is a :class:`release.errors.BadInputError`
naming file and line (systemd would skip such a line with a warning).

**Drop-ins** (:func:`dropin_search_order`, :func:`collect_dropins`) follow
``unit_file_find_dropin_paths()``: for ``a-b-c.service`` systemd searches
``a-b-c.service.d/``, ``a-b-.service.d/`` and ``a-.service.d/`` (for an
instance ``a-b@i.service``: ``a-b@i.service.d/``, ``a-b@.service.d/``,
``a-.service.d/``, ``a-@i.service.d/``, ``a-@.service.d/``) in every directory
of the unit search path, highest priority first; then the same for each alias
of the unit; then the type-wide ``service.d/`` in every directory. Of the
``*.conf`` entries found there (hidden ones aside), the first with a given
file name wins and masks the others, so an empty file or a link to
``/dev/null`` masks a drop-in; the winners are applied after the unit file in
the order of their file names, wherever they are. Which assignment decides a
directive, and what an empty one means, is the caller's (see
:mod:`governance.gates.limits`).

A drop-in directory that is a symlink is followed here; systemd 252 follows
one only when its link text names a directory from systemd's own working
directory (in practice, an absolute link), so the resources gate refuses such
links outright.

A *search path* here is a list of unit directories, highest priority first,
each given as the tree directories installed into it: a running system has
one tree directory per unit directory; a release installs several shipped
directories into one (``/usr/lib/systemd/system``).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.errors import BadInputError

UNIT_SUFFIX = ".service"
DROPIN_SUFFIX = ".conf"
# systemd's blanks (WHITESPACE in its sources); nothing else is stripped.
BLANKS = " \t\n\r"
COMMENTS = ("#", ";")
# Unit files are small; systemd refuses lines over 1 MiB, the gate refuses files over it.
MAX_UNIT_BYTES = 1 << 20
_SECTION = re.compile(r"\[([^\[\]]+)\]")
_ASSIGNMENT = re.compile(r"([A-Za-z0-9_-]+)[ \t]*=(.*)", re.DOTALL)
_EOL = re.compile(r"[\n\r\0]")
_EOL_KIND = {"\n": 1, "\r": 2, "\0": 4}
_PREFIX = re.compile(r"[A-Za-z0-9:_.\\-]+")
_ALIAS_UNSAFE = re.compile(r"[%\"'\\]")

SearchPath = Sequence[Sequence[Path]]


@dataclass(frozen=True)
class Assignment:
    """One ``Key=Value`` line: where it is, in which section."""

    source: str
    line: int
    section: str
    key: str
    value: str


@dataclass(frozen=True)
class DropIn:
    """One ``*.conf`` entry of a drop-in directory.

    ``name`` (the file name) is what masks and what orders; ``path`` is the
    entry as found (it may be a symlink); ``directory`` is the drop-in
    directory's name (``ransomeye-.service.d``); ``tree`` is the tree
    directory it is installed from.
    """

    name: str
    path: Path
    source: str
    directory: str
    tree: Path


@dataclass(frozen=True)
class Masked:
    """A drop-in systemd does not read because ``by``, found first, has the same file name."""

    dropin: DropIn
    by: DropIn

    @property
    def collides(self) -> bool:
        """True when both install to the same path (two tree directories ship the same file)."""
        return self.dropin.directory == self.by.directory and self.dropin.tree != self.by.tree


@dataclass(frozen=True)
class LinkedDirectory:
    """A drop-in directory that is a symlink, and the text of the link."""

    source: str
    target: str


@dataclass(frozen=True)
class DropIns:
    """The drop-ins systemd reads for a unit: applied in order, and the ones masked."""

    applied: tuple[DropIn, ...]
    masked: tuple[Masked, ...]
    linked: tuple[LinkedDirectory, ...]


@dataclass(frozen=True)
class Refusal:
    """A drop-in the gate does not read: what is shipped is not what systemd would read."""

    dropin: DropIn
    why: str


@dataclass(frozen=True)
class UnitFile:
    """A unit with its drop-ins applied, in the order systemd reads them."""

    name: str
    source: str
    assignments: tuple[Assignment, ...]
    dropins: DropIns = DropIns((), (), ())
    refusals: tuple[Refusal, ...] = ()

    def sections(self) -> frozenset[str]:
        return frozenset(a.section for a in self.assignments)

    def get(self, section: str, key: str) -> Assignment | None:
        """The assignment of ``key`` in ``section`` applied last, or None."""
        found = None
        for a in self.assignments:
            if a.section == section and a.key == key:
                found = a
        return found


# --------------------------------------------------------------------------- syntax


def show_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for a message; quoted and escaped when it holds unprintable text."""
    text = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=True)


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` as systemd's ``read_line()`` cuts them.

    A line ends at ``\\n``, ``\\r`` or NUL, or at a run of them in which no
    kind repeats and nothing follows a NUL (``\\r\\n`` is one line end,
    ``\\n\\n`` two). An empty text has no lines.
    """
    lines: list[str] = []
    i, n = 0, len(text)
    while i < n:
        m = _EOL.search(text, i)
        if m is None:
            lines.append(text[i:])
            break
        lines.append(text[i : m.start()])
        i, seen = m.start(), 0
        while i < n and (kind := _EOL_KIND.get(text[i], 0)) and not seen & 4 and not seen & kind:
            seen |= kind
            i += 1
    return lines


def _continues(text: str) -> bool:
    """True when ``text`` ends in an odd number of backslashes (an escaped backslash does not continue)."""
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def parse_unit_text(text: str, source: str) -> list[Assignment]:
    """Parse the text of one unit or drop-in; ``source`` names it in errors and assignments.

    An assignment continued over several lines is reported at its first line.
    Raises :class:`BadInputError` naming ``source`` and the line for anything
    that is not a header, an assignment, a comment or blank.
    """
    out: list[Assignment] = []
    section: str | None = None
    continuation: str | None = None
    start = 0
    bom_seen = False
    for lineno, raw in enumerate(split_lines(text), 1):
        first = raw.lstrip(BLANKS)[:1]
        if first and first in COMMENTS:
            continue
        line = raw
        if not bom_seen and line.startswith("\ufeff"):
            line, bom_seen = line[1:], True
        if continuation is None:
            start = lineno
        else:
            line = continuation + line
        if _continues(line):
            continuation = line[:-1] + " "
            continue
        continuation = None
        section = _parse_line(line, source, start, section, out)
    if continuation is not None:
        _parse_line(continuation, source, start, section, out)
    return out


def _parse_line(text: str, source: str, lineno: int, section: str | None, out: list[Assignment]) -> str | None:
    """Parse one logical line into ``out``; return the section in force after it."""
    line = text.strip(BLANKS)
    if not line:
        return section
    header = _SECTION.fullmatch(line)
    if header is not None:
        return header.group(1)
    assignment = _ASSIGNMENT.fullmatch(line)
    if assignment is None:
        raise BadInputError(
            f"{source}:{lineno}: expected a [Section] header or a Key=Value assignment",
            hint="fix the unit file's syntax (see systemd.syntax(7))",
        )
    if section is None:
        raise BadInputError(f"{source}:{lineno}: {assignment.group(1)}= comes before any [Section] header")
    out.append(Assignment(source, lineno, section, assignment.group(1), assignment.group(2).strip(BLANKS)))
    return section


def _read_text(path: Path, source: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_UNIT_BYTES + 1)
    except OSError as e:
        raise BadInputError(f"{source}: cannot be read: {e.strerror or e}") from e
    if len(data) > MAX_UNIT_BYTES:
        raise BadInputError(f"{source}: is over {MAX_UNIT_BYTES} bytes; a unit file or drop-in is small text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{source}: is not UTF-8 text (byte {e.start})") from e


def read_unit_file(path: Path, root: Path) -> list[Assignment]:
    """Parse the unit file at ``path`` (following a symlink); names in errors are relative to ``root``."""
    source = show_path(path, root)
    assignments = parse_unit_text(_read_text(path, source), source)
    if "Service" not in {a.section for a in assignments}:
        raise BadInputError(
            f"{source}: has no [Service] section", hint="a .service unit needs a [Service] section with ExecStart="
        )
    return assignments


# --------------------------------------------------------------------------- unit names


def unit_type(name: str) -> str:
    """``service`` for ``a.service``: the text after the last dot."""
    return name.rpartition(".")[2]


def is_instance(name: str) -> bool:
    """True for ``t@i.service`` (an instance name), false for ``t@.service`` and ``t.service``."""
    at, dot = name.find("@"), name.rfind(".")
    return at > 0 and at + 1 < dot


def is_template(name: str) -> bool:
    """True for ``t@.service``."""
    at, dot = name.find("@"), name.rfind(".")
    return at > 0 and at + 1 == dot


def instance_name(template: str, instance: str) -> str:
    """``t@i.service`` from ``t@.service`` and ``i``."""
    at = template.find("@")
    return f"{template[: at + 1]}{instance}{template[at + 1 :]}"


def _template_of(name: str) -> str:
    at, dot = name.find("@"), name.rfind(".")
    return name[: at + 1] + name[dot:]


def dropin_names(name: str) -> list[str]:
    """The unit names whose ``<name>.d/`` systemd searches for ``name`` in one unit directory, in order.

    ``a-b-c.service`` gives ``a-b-c.service``, ``a-b-.service``, ``a-.service``;
    an instance also gives its template's (``t@i.service``, ``t@.service``...).
    Mirrors ``unit_file_find_dirs()`` of systemd 252, recursion included.
    """
    out = [name]
    instance = name[name.find("@") + 1 : name.rfind(".")] if is_instance(name) else None
    if instance is not None:
        out += dropin_names(_template_of(name))
    at = name.find("@")
    prefix = name[:at] if at >= 0 else name[: name.rfind(".")]
    chopped = False
    while True:
        dash = prefix.rfind("-")
        if dash <= 0:
            return out
        if dash + 1 < len(prefix) or chopped:
            prefix = prefix[: dash + 1]
            break
        prefix, chopped = prefix[:dash], True
    if not _PREFIX.fullmatch(prefix):
        return out
    kind = unit_type(name)
    return out + dropin_names(f"{prefix}@{instance}.{kind}" if instance is not None else f"{prefix}.{kind}")


def dropin_search_order(names: Sequence[str], depth: int) -> list[tuple[int, str]]:
    """``(search-path index, drop-in directory)`` in the order systemd 252 searches them.

    ``names`` is the unit's name followed by its aliases; ``depth`` the number
    of directories in the search path. The type-wide ``service.d/`` comes last.
    """
    order = [(i, n + ".d") for name in names for i in range(depth) for n in dropin_names(name)]
    return order + [(i, unit_type(names[0]) + ".d") for i in range(depth)]


def install_search_order(name: str, depth: int) -> list[tuple[int, str]]:
    """Where ``systemctl enable`` reads ``[Install]`` drop-ins: ``<name>.d/``, then the template's."""
    order = [(i, name + ".d") for i in range(depth)]
    if is_instance(name):
        order += [(i, _template_of(name) + ".d") for i in range(depth)]
    return order


# --------------------------------------------------------------------------- drop-ins


def collect_dropins(order: Iterable[tuple[int, str]], search_path: SearchPath, root: Path) -> DropIns:
    """The drop-ins systemd applies, searching ``order`` (see :func:`dropin_search_order`).

    A directory reached twice (through a symlink) is read once, at its first
    place. Reads directory listings only, never a file. Raises
    :class:`BadInputError` for a directory that cannot be listed.
    """
    seen: set[str] = set()
    winners: dict[str, DropIn] = {}
    masked: list[Masked] = []
    linked: list[LinkedDirectory] = []
    for index, directory in order:
        for tree in search_path[index]:
            path = tree / directory
            if not path.is_dir():
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            if path.is_symlink():
                linked.append(LinkedDirectory(show_path(path, root), os.readlink(path)))
            try:
                entries = sorted(os.listdir(path))
            except OSError as e:
                raise BadInputError(f"{show_path(path, root)}: cannot be listed: {e.strerror or e}") from e
            for entry in entries:
                if entry.startswith(".") or not entry.endswith(DROPIN_SUFFIX):
                    continue
                dropin = DropIn(entry, path / entry, show_path(path / entry, root), directory, tree)
                if entry in winners:
                    masked.append(Masked(dropin, winners[entry]))
                else:
                    winners[entry] = dropin
    applied = tuple(sorted(winners.values(), key=lambda d: d.name.encode("utf-8", "surrogateescape")))
    return DropIns(applied, tuple(masked), tuple(linked))


def read_dropin(dropin: DropIn, root: Path, confine: Path | None) -> list[Assignment] | Refusal:
    """The assignments of one drop-in, or why the gate does not read it.

    With ``confine`` None the drop-in is read as systemd reads it: a symlink is
    followed anywhere, and what is not a regular file (``/dev/null``, a
    directory, a dangling link) sets nothing. With ``confine`` set, as a release
    is packaged: a symlink is followed only when it stays inside ``confine``,
    and anything else that is not a regular file is a :class:`Refusal`. Never
    opens anything but a regular file.
    """
    source = dropin.source
    try:
        st = os.lstat(dropin.path)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(dropin.path)
            real = Path(os.path.realpath(dropin.path))
            if confine is not None and not real.is_relative_to(os.path.realpath(confine)):
                where = show_path(confine, root)
                return Refusal(
                    dropin,
                    f"is a symlink to {json.dumps(target, ensure_ascii=True)}, outside {where}: the packager "
                    "refuses it, and systemd would read whatever that path holds on the host",
                )
            st = os.stat(dropin.path)
    except OSError as e:
        if confine is None:
            return []
        return Refusal(dropin, f"is a symlink that cannot be followed ({e.strerror or e})")
    if stat.S_ISREG(st.st_mode):
        return parse_unit_text(_read_text(dropin.path, source), source)
    if confine is None:
        return []
    return Refusal(
        dropin, "is not a regular file: systemd reads nothing from it, yet it masks every drop-in of the same name"
    )


def resolve_unit(
    name: str,
    source: str,
    unit: Sequence[Assignment],
    search_path: SearchPath,
    root: Path,
    *,
    aliases: Sequence[str] = (),
    confine: Mapping[Path, Path] | None = None,
) -> UnitFile:
    """The unit ``name`` (whose file, already parsed, is ``unit``) with every drop-in systemd applies.

    ``aliases`` are the names it is also known by (enabled ``Alias=``);
    ``confine`` maps each tree directory of the search path to the directory
    its drop-ins' symlinks must stay in (see :func:`read_dropin`), or is None
    to read as systemd does.
    """
    dropins = collect_dropins(dropin_search_order([name, *aliases], len(search_path)), search_path, root)
    assignments = list(unit)
    refusals: list[Refusal] = []
    for dropin in dropins.applied:
        read = read_dropin(dropin, root, None if confine is None else confine[dropin.tree])
        if isinstance(read, Refusal):
            refusals.append(read)
        else:
            assignments += read
    return UnitFile(name, source, tuple(assignments), dropins, tuple(refusals))


def install_aliases(
    name: str,
    unit: Sequence[Assignment],
    search_path: SearchPath,
    root: Path,
    confine: Mapping[Path, Path] | None = None,
    *,
    resets: bool = True,
) -> tuple[str, ...]:
    """The names ``systemctl enable`` links to unit ``name``: its ``[Install] Alias=`` values.

    Read from the unit file and the drop-ins ``systemctl enable`` reads
    (``<name>.d/``, the template's); an empty ``Alias=`` resets the list
    (unless ``resets`` is false: then every name ever listed is returned). A
    name of another type, a path, or the unit's own name is not an alias.
    Raises :class:`BadInputError` for quoting or ``%`` specifiers, which the
    gate does not expand.
    """
    dropins = collect_dropins(install_search_order(name, len(search_path)), search_path, root)
    assignments = list(unit)
    for dropin in dropins.applied:
        read = read_dropin(dropin, root, None if confine is None else confine[dropin.tree])
        if not isinstance(read, Refusal):
            assignments += read
    aliases: list[str] = []
    for a in assignments:
        if a.section != "Install" or a.key != "Alias":
            continue
        if a.value == "":
            if resets:
                aliases.clear()
            continue
        for word in re.split(f"[{BLANKS}]+", a.value):
            if _ALIAS_UNSAFE.search(word):
                raise BadInputError(
                    f"{a.source}:{a.line}: Alias= {json.dumps(word, ensure_ascii=True)} uses quoting or specifiers",
                    hint="write the alias names out plainly; the resources gate does not expand them",
                )
            if is_template(word) and is_instance(name):
                word = instance_name(word, name[name.find("@") + 1 : name.rfind(".")])
            if "/" in word or unit_type(word) != unit_type(name) or word == name or word in aliases:
                continue
            aliases.append(word)
    return tuple(aliases)
