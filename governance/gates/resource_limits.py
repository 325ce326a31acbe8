"""Gate ``resources``: every shipped systemd service declares its resource limits, within the caps.

Units checked: every ``*.service`` under the policy's ``units-dir`` and under
every bundle's asset paths (so a unit shipped from elsewhere is not missed).
For each, each required limit must be assigned in ``[Service]`` (systemd
ignores it in any other section) to a bounded value no larger than its cap;
a capped limit that is not required is still checked when present.
"""

from __future__ import annotations

import os
from pathlib import Path

from governance.gates.limits import Limit, LimitSyntaxError, Unbounded
from governance.gates.policy import ResourcesPolicy, show
from governance.gates.report import Finding, GateResult
from governance.gates.units import UNIT_SUFFIX, UnitFile, load_unit
from release.errors import BadInputError
from release.products import Workspace

NAME = "resources"
SECTION = "Service"


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


def check_limit(unit: UnitFile, limit: Limit, policy: ResourcesPolicy, required: bool) -> list[Finding]:
    """Check one limit of one unit; a value systemd would not accept is a :class:`BadInputError`."""
    assignment = unit.get(SECTION, limit.directive)
    if assignment is None or assignment.value == "":
        if not required:
            return []
        elsewhere = sorted({a.section for a in unit.assignments if a.key == limit.directive and a.section != SECTION})
        if elsewhere:
            why = f"sets {limit.directive}= only in [{elsewhere[0]}], where systemd ignores it; move it to [{SECTION}]"
        elif assignment is not None:
            why = f"resets {limit.directive}= to empty (no limit) at {assignment.source}:{assignment.line}"
        else:
            why = f"does not declare {limit.directive}= in [{SECTION}]"
        return [Finding(unit.source, None, f"{NAME}.missing", f"{unit.name} {why}")]
    try:
        amount = limit.parse(assignment.value)
    except LimitSyntaxError as e:
        raise BadInputError(
            f"{assignment.source}:{assignment.line}: {limit.directive} = {show(assignment.value)} {e}",
            hint=f"{limit.directive}= takes {limit.expected}",
        ) from e
    where = (assignment.source, assignment.line, f"{NAME}.{limit.key}")
    cap = policy.cap(limit)
    if isinstance(amount, Unbounded):
        return [Finding(*where, f"{unit.name} {limit.directive}={assignment.value} {amount.why}")]
    if cap is not None and amount > cap.amount:
        return [Finding(*where, f"{unit.name} {limit.directive}={assignment.value} exceeds the cap {cap.text}")]
    return []


def check(root: Path, workspace: Workspace, policy: ResourcesPolicy) -> GateResult:
    """Run the gate over the repository at ``root``. Reads unit files; writes nothing."""
    units = [load_unit(path, root) for path in find_units(root, workspace, policy)]
    findings: list[Finding] = []
    if not units:
        message = f"no {UNIT_SUFFIX} units under {policy.units_dir}"
        findings.append(Finding(policy.units_dir, None, f"{NAME}.no-units", message))
    limits = list(policy.required) + [c.limit for c in policy.caps if c.limit not in policy.required]
    for unit in units:
        for limit in limits:
            findings += check_limit(unit, limit, policy, required=limit in policy.required)
    caps = ", ".join(f"{c.limit.directive}<={c.text}" for c in policy.caps)
    summary = f"{len(units)} service units declare every required limit within its cap ({caps})"
    return GateResult.of(NAME, summary, findings)
