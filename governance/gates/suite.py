"""Run every gate over one repository and collect the verdicts into a report.

The product declaration, the four policies and the members' manifests are
parsed before any gate runs; unit files and path crates are parsed as the
gates reach them. Either way a malformed input stops the run with one
:class:`release.errors.BadInputError` and no partial verdict.
"""

from __future__ import annotations

from pathlib import Path

from governance.gates import crate_isolation, resource_limits, secret_scan, version_policy
from governance.gates.crates import load_members, read_workspace_dependencies
from governance.gates.policy import load_policies
from governance.gates.report import Report
from release.products import load_workspace

GATE_NAMES = (resource_limits.NAME, crate_isolation.NAME, version_policy.NAME, secret_scan.NAME)


def run_gates(root: Path) -> Report:
    """Check the repository at ``root`` against its policies.

    Reads files only. Raises :class:`release.errors.BadInputError` when the
    declaration, a policy, a manifest or a unit file is malformed; a policy
    violation is not an exception but a failed gate in the returned report.
    """
    root = root.resolve()
    workspace = load_workspace(root)
    policies = load_policies(root)
    workspace_deps = read_workspace_dependencies(root)
    members = load_members(root, workspace.members, workspace_deps)
    results = (
        resource_limits.check(root, workspace, policies.resources),
        crate_isolation.check(root, workspace, policies.isolation, members, workspace_deps),
        version_policy.check(workspace, policies.versions, members),
        secret_scan.check(root, workspace, policies.secrets, members),
    )
    return Report(workspace_version=workspace.version, gates=results)
