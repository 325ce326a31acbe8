"""Gate ``resources``: every shipped systemd service is limited, within the caps, as systemd sees it.

Units checked: every ``*.service`` under the policy's ``units-dir`` and under
every bundle's asset paths (so a unit shipped from elsewhere is not missed).

What systemd sees is the unit file plus every drop-in it reads for the unit
(:mod:`governance.gates.units`): ``<unit>.d/``, the dash prefixes
(``ransomeye-.service.d/``), the type-wide ``service.d/`` and, once the unit is
enabled, its ``Alias=`` names' directories. A release installs each directory
of units (one holding a checked unit, or a bundle's asset directory under
``units-dir``) into the same system unit directory, and a host may run any
set of the products. So each unit is judged in every installation it can be
part of: its own directory alone or with any of the other directories that
ship a drop-in it reads, enabled or not. In each, every required limit must
be decided (the last ``[Service]`` assignment systemd applies; systemd ignores
the directive in other sections) by a bounded value no larger than its cap; a
capped limit that is not required is still checked when present. A finding
names the file and line that decided the value.

Refused whatever the values, since the packager or the installation would not
ship what the gate read: a drop-in that is a symlink leaving its packaged
tree or that is not a regular file, a symlinked drop-in directory, and two
directories installing different files to the same path.
"""

from __future__ import annotations

import filecmp
import itertools
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from governance.gates.limits import Limit, LimitSyntaxError, Unbounded
from governance.gates.policy import ResourcesPolicy, path_under, show
from governance.gates.report import Finding, GateResult
from governance.gates.units import (
    UNIT_SUFFIX,
    Assignment,
    DropIn,
    Masked,
    Refusal,
    SearchPath,
    UnitFile,
    dropin_names,
    install_aliases,
    instance_name,
    is_instance,
    is_template,
    read_dropin,
    read_unit_file,
    resolve_unit,
    show_path,
)
from release.errors import BadInputError
from release.products import Workspace

NAME = "resources"
SECTION = "Service"
TYPE_DIR = "service.d"
# The installations judged per unit: 2 ** (other directories with drop-ins for it, +1 when it has aliases).
MAX_INSTALLS = 256
# Aliases of one unit: each order of them is judged (systemd reads them in hash order).
MAX_ALIASES = 4
# The instance a template is judged as when no drop-in names one (systemd-analyze verify uses the same).
PLACEHOLDER_INSTANCE = "i"


@dataclass(frozen=True)
class Layout:
    """How the checked tree installs: its directories of units and, for each, the tree its symlinks must stay in."""

    root: Path
    dirs: tuple[Path, ...]
    confine: Mapping[Path, Path]


def _units_in(root: Path, rel: str) -> list[Path]:
    top = root / rel
    if top.is_file():
        return [top] if top.name.endswith(UNIT_SUFFIX) else []
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(UNIT_SUFFIX)]
    return found


def find_units(root: Path, workspace: Workspace, policy: ResourcesPolicy) -> list[Path]:
    """Every ``.service`` file the gate checks, sorted; raises if ``units-dir`` is not a directory."""
    if not (root / policy.units_dir).is_dir():
        raise BadInputError(
            f"{policy.source}: units-dir = {show(policy.units_dir)} is not a directory in {root}",
            hint="point units-dir at the directory holding the systemd units",
        )
    units = set(_units_in(root, policy.units_dir))
    for bundle in workspace.bundles:
        for asset in bundle.assets:
            units.update(_units_in(root, asset))
    return sorted(units, key=lambda p: p.relative_to(root).as_posix())


def find_layout(root: Path, workspace: Workspace, policy: ResourcesPolicy, units: Sequence[Path]) -> Layout:
    """The directories installed into the system unit directory, and what confines each one's symlinks.

    A directory is installed when it holds a checked unit or is a bundle's
    asset directory under ``units-dir``; its symlinks must stay inside the
    innermost asset directory holding it (the tree the packager walks), or
    inside itself when no asset holds it.
    """
    assets = sorted({a for b in workspace.bundles for a in b.assets if (root / a).is_dir()})
    dirs = {p.parent for p in units} | {root / a for a in assets if path_under(a, policy.units_dir)}
    confine: dict[Path, Path] = {}
    for d in dirs:
        rel = d.relative_to(root).as_posix()
        holders = [a for a in assets if path_under(rel, a)]
        confine[d] = root / max(holders, key=len) if holders else d
    return Layout(root, tuple(sorted(dirs, key=lambda d: d.relative_to(root).as_posix())), confine)


def _judged_names(path: Path, layout: Layout) -> list[tuple[str, str]]:
    """``(name systemd loads, name shown)`` for the unit file at ``path``.

    A template is judged as each instance some shipped drop-in directory
    names, and as one instance no drop-in directory names.
    """
    if not is_template(path.name):
        return [(path.name, path.name)]
    instances: set[str] = set()
    for d in layout.dirs:
        for entry in os.listdir(d):
            unit = entry.removesuffix(".d")
            if entry.endswith(UNIT_SUFFIX + ".d") and is_instance(unit):
                instances.add(unit[unit.find("@") + 1 : unit.rfind(".")])
    placeholder = PLACEHOLDER_INSTANCE
    while placeholder in instances:
        placeholder += "0"
    named = [(instance_name(path.name, i), instance_name(path.name, i)) for i in sorted(instances)]
    return [(instance_name(path.name, placeholder), path.name), *named]


def _alias_candidates(name: str, unit: Sequence[Assignment], layout: Layout) -> tuple[str, ...]:
    """Every name the unit could be enabled under in some installation (a superset, to choose installations).

    A drop-in applied in an installation is applied when its directory is
    installed alone, so the names read from each directory alone, resets
    ignored, hold every name any installation has.
    """
    found: list[str] = []
    for d in layout.dirs:
        for alias in install_aliases(name, unit, [[d]], layout.root, layout.confine, resets=False):
            if alias not in found:
                found.append(alias)
    return tuple(found)


def _installations(
    name: str, path: Path, unit: Sequence[Assignment], layout: Layout
) -> list[tuple[tuple[Path, ...], bool]]:
    """The installations unit ``name`` is judged in: (tree directories installed, enabled under aliases)."""
    own = path.parent
    candidates = _alias_candidates(name, unit, layout)
    read = {n + ".d" for a in (name, *candidates) for n in dropin_names(a)} | {TYPE_DIR}
    others = [d for d in layout.dirs if d != own and any((d / r).is_dir() for r in read)]
    switches = (False, True) if candidates else (False,)
    if 2 ** len(others) * len(switches) > MAX_INSTALLS:
        shown = ", ".join(show_path(d, layout.root) for d in others)
        raise BadInputError(
            f"{show_path(path, layout.root)}: drop-ins for {name} ship from {len(others)} other directories "
            f"({shown}); the resources gate judges at most {MAX_INSTALLS} installations of a unit",
            hint="ship a unit's drop-ins next to it",
        )
    subsets = itertools.chain.from_iterable(itertools.combinations(others, k) for k in range(len(others) + 1))
    return [((own, *subset), enabled) for subset in subsets for enabled in switches]


def _alias_orders(
    name: str, path: Path, unit: Sequence[Assignment], search: SearchPath, layout: Layout
) -> list[tuple[str, ...]]:
    """Every order of the unit's aliases: systemd keeps them in a hash set, so any order can happen.

    The order decides which of two same-named drop-ins under two aliases masks
    the other. Raises :class:`BadInputError` past :data:`MAX_ALIASES` aliases.
    """
    aliases = install_aliases(name, unit, search, layout.root, layout.confine)
    if len(aliases) > MAX_ALIASES:
        raise BadInputError(
            f"{show_path(path, layout.root)}: {name} has {len(aliases)} Alias= names; "
            f"the resources gate judges units with at most {MAX_ALIASES}",
        )
    return list(itertools.permutations(aliases))


def _differ(a: DropIn, b: DropIn) -> bool:
    """True unless ``a`` and ``b`` are regular files with the same bytes."""
    try:
        if not (stat.S_ISREG(os.lstat(a.path).st_mode) and stat.S_ISREG(os.lstat(b.path).st_mode)):
            return True
        return not filecmp.cmp(a.path, b.path, shallow=False)
    except OSError:
        return True


def shipping_findings(unit: UnitFile) -> list[Finding]:
    """What the packager or the installation would not ship as the gate read it."""
    findings = [Finding(r.dropin.source, None, f"{NAME}.dropin", f"{r.dropin.source} {r.why}") for r in unit.refusals]
    for link in unit.dropins.linked:
        why = (
            f"{link.source} is a symlink to {show(link.target)}: the packager refuses symlinked directories, "
            "and whether systemd reads the drop-ins there depends on its working directory"
        )
        findings.append(Finding(link.source, None, f"{NAME}.dropin", why))
    for m in unit.dropins.masked:
        if m.collides and _differ(m.dropin, m.by):
            why = (
                f"{m.by.source} and {m.dropin.source} install to the same file {m.by.directory}/{m.by.name} "
                f"with different contents: which one a host has depends on the order the products are installed"
            )
            findings.append(Finding(m.by.source, None, f"{NAME}.conflict", why))
    return findings


def _setter(masked: Masked, directive: str, layout: Layout) -> Assignment | None:
    """The ``[Service]`` assignment of ``directive`` a masked drop-in would have applied last, if any."""
    read = read_dropin(masked.dropin, layout.root, layout.confine[masked.dropin.tree])
    if isinstance(read, Refusal):
        return None
    found = [a for a in read if a.section == SECTION and a.key == directive]
    return found[-1] if found else None


def check_limit(
    unit: UnitFile, limit: Limit, policy: ResourcesPolicy, required: bool, layout: Layout, via_alias: frozenset[str]
) -> list[Finding]:
    """Check one limit of one resolved unit; a value systemd would not accept is a :class:`BadInputError`.

    ``via_alias`` holds the sources of the drop-ins read only because the unit
    is enabled under an alias (named as such in a finding).
    """
    assignment = unit.get(SECTION, limit.directive)
    if assignment is None or (assignment.value == "" and limit.empty is not None):
        if not required:
            return []
        elsewhere = sorted({a.section for a in unit.assignments if a.key == limit.directive and a.section != SECTION})
        if assignment is not None and limit.empty is not None:
            why = f"resets {limit.directive}= to empty ({limit.empty.why}) at {assignment.source}:{assignment.line}"
            return [Finding(assignment.source, assignment.line, f"{NAME}.missing", f"{unit.name} {why}")]
        if elsewhere:
            why = f"sets {limit.directive}= only in [{elsewhere[0]}], where systemd ignores it; move it to [{SECTION}]"
        else:
            why = f"does not declare {limit.directive}= in [{SECTION}]"
        for m in unit.dropins.masked:
            setter = None if m.collides else _setter(m, limit.directive, layout)
            if setter is not None:
                why += f" ({setter.source}:{setter.line} sets it, but {m.by.source} masks that file)"
                break
        return [Finding(unit.source, None, f"{NAME}.missing", f"{unit.name} {why}")]
    if assignment.value == "":
        raise BadInputError(
            f'{assignment.source}:{assignment.line}: {limit.directive} = "" is empty, which systemd ignores '
            f"(an empty {limit.directive}= does not reset it)",
            hint=f"give {limit.directive}= {limit.expected}, or remove the line",
        )
    try:
        amount = limit.parse(assignment.value)
    except LimitSyntaxError as e:
        raise BadInputError(
            f"{assignment.source}:{assignment.line}: {limit.directive} = {show(assignment.value)} {e}",
            hint=f"{limit.directive}= takes {limit.expected}",
        ) from e
    where = (assignment.source, assignment.line, f"{NAME}.{limit.key}")
    by = ""
    if assignment.source != unit.source:
        by = f" (set by {assignment.source}:{assignment.line}"
        by += ", read once the unit is enabled under its Alias=)" if assignment.source in via_alias else ")"
    cap = policy.cap(limit)
    if isinstance(amount, Unbounded):
        return [Finding(*where, f"{unit.name} {limit.directive}={assignment.value} {amount.why}{by}")]
    if cap is not None and amount > cap.amount:
        return [Finding(*where, f"{unit.name} {limit.directive}={assignment.value} exceeds the cap {cap.text}{by}")]
    return []


def check(root: Path, workspace: Workspace, policy: ResourcesPolicy) -> GateResult:
    """Run the gate over the repository at ``root``. Reads unit files and drop-ins; writes nothing."""
    paths = find_units(root, workspace, policy)
    layout = find_layout(root, workspace, policy, paths)
    findings: list[Finding] = []
    if not paths:
        message = f"no {UNIT_SUFFIX} units under {policy.units_dir}"
        findings.append(Finding(policy.units_dir, None, f"{NAME}.no-units", message))
    limits = list(policy.required) + [c.limit for c in policy.caps if c.limit not in policy.required]
    dropins: set[str] = set()
    for path in paths:
        unit = read_unit_file(path, root)
        source = show_path(path, root)
        for name, shown in _judged_names(path, layout):
            base = {n + ".d" for n in dropin_names(name)} | {TYPE_DIR}
            for trees, enabled in _installations(name, path, unit, layout):
                search = [trees]
                for aliases in _alias_orders(name, path, unit, search, layout) if enabled else [()]:
                    resolved = resolve_unit(name, source, unit, search, root, aliases=aliases, confine=layout.confine)
                    resolved = UnitFile(shown, source, resolved.assignments, resolved.dropins, resolved.refusals)
                    via_alias = frozenset(d.source for d in resolved.dropins.applied if d.directory not in base)
                    dropins.update(d.source for d in resolved.dropins.applied)
                    findings += shipping_findings(resolved)
                    for limit in limits:
                        findings += check_limit(resolved, limit, policy, limit in policy.required, layout, via_alias)
    caps = ", ".join(f"{c.limit.directive}<={c.text}" for c in policy.caps)
    summary = (
        f"{len(paths)} service units declare every required limit within its cap ({caps}), "
        f"as systemd reads them with their {len(dropins)} drop-ins"
    )
    return GateResult.of(NAME, summary, findings)
