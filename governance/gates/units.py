"""systemd unit files as the resources gate reads them.

Only the syntax systemd itself accepts is accepted: ``[Section]`` headers,
``Key=Value`` assignments, ``#``/``;`` comments and backslash continuations.
Anything else is a :class:`release.errors.BadInputError` naming the file and
line. Drop-ins shipped next to a unit (``<unit>.d/*.conf``) are applied after
it in file-name order, as systemd does, so a drop-in cannot lift a limit
unseen. For each directive the last assignment wins; an empty assignment
resets it to systemd's default (which, for every limit, is no limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from release.errors import BadInputError

UNIT_SUFFIX = ".service"
DROPIN_SUFFIX = ".conf"
_SECTION = re.compile(r"\[([^\[\]]+)\]")
_ASSIGNMENT = re.compile(r"([A-Za-z0-9_-]+)[ \t]*=(.*)", re.DOTALL)


@dataclass(frozen=True)
class Assignment:
    """One ``Key=Value`` line: where it is, in which section."""

    source: str
    line: int
    section: str
    key: str
    value: str


@dataclass(frozen=True)
class UnitFile:
    """A parsed unit with its drop-ins applied, in the order systemd reads them."""

    name: str
    source: str
    assignments: tuple[Assignment, ...]

    def sections(self) -> frozenset[str]:
        return frozenset(a.section for a in self.assignments)

    def get(self, section: str, key: str) -> Assignment | None:
        """The assignment of ``key`` in ``section`` that systemd uses (the last), or None."""
        found = None
        for a in self.assignments:
            if a.section == section and a.key == key:
                found = a
        return found


def parse_unit_text(text: str, source: str) -> list[Assignment]:
    """Parse the text of one unit or drop-in; ``source`` names it in errors and assignments."""
    out: list[Assignment] = []
    section: str | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        # A trailing backslash continues the assignment on the next line.
        while line.endswith("\\") and not line.startswith(("#", ";")):
            line = line[:-1].rstrip() + " "
            while i < len(lines) and lines[i].strip().startswith(("#", ";")):
                i += 1
            if i >= len(lines):
                break
            line += lines[i].strip()
            i += 1
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = _SECTION.fullmatch(line)
        if header is not None:
            section = header.group(1)
            continue
        assignment = _ASSIGNMENT.fullmatch(line)
        if assignment is None:
            raise BadInputError(
                f"{source}:{lineno}: expected a [Section] header or a Key=Value assignment",
                hint="fix the unit file's syntax (see systemd.syntax(7))",
            )
        if section is None:
            raise BadInputError(f"{source}:{lineno}: {assignment.group(1)}= comes before any [Section] header")
        out.append(Assignment(source, lineno, section, assignment.group(1), assignment.group(2).strip()))
    return out


def _read_text(path: Path, source: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{source}: cannot be read: {e.strerror or e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{source}: is not UTF-8 text (byte {e.start})") from e


def load_unit(path: Path, root: Path) -> UnitFile:
    """Read the unit at ``path`` and its drop-ins; names in errors are relative to ``root``."""
    source = path.relative_to(root).as_posix()
    assignments = parse_unit_text(_read_text(path, source), source)
    dropin_dir = path.with_name(path.name + ".d")
    if dropin_dir.is_dir():
        for dropin in sorted(dropin_dir.iterdir()):
            if dropin.name.endswith(DROPIN_SUFFIX):
                rel = dropin.relative_to(root).as_posix()
                assignments += parse_unit_text(_read_text(dropin, rel), rel)
    if "Service" not in {a.section for a in assignments}:
        raise BadInputError(
            f"{source}: has no [Service] section", hint="a .service unit needs a [Service] section with ExecStart="
        )
    return UnitFile(name=path.name, source=source, assignments=tuple(assignments))
