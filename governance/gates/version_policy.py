"""Gate ``versions``: one version for the whole release.

The workspace version (``[workspace.package].version``) must be valid semver
and, unless ``allow-prerelease = true``, not a pre-release. Every workspace
member must inherit it (``version.workspace = true``) or state it exactly;
a member with no version at all would be 0.0.0 to cargo, so it fails too.
"""

from __future__ import annotations

from governance.gates.crates import Crate
from governance.gates.policy import VersionsPolicy
from governance.gates.report import Finding, GateResult
from release.products import SEMVER, Workspace

NAME = "versions"
ROOT_MANIFEST = "Cargo.toml"


def is_prerelease(version: str) -> bool:
    m = SEMVER.match(version)
    return m is not None and m.group(4) is not None


def check(workspace: Workspace, policy: VersionsPolicy, members: tuple[Crate, ...]) -> GateResult:
    """Check the workspace version and every member's version declaration. Pure."""
    version = workspace.version
    findings: list[Finding] = []
    if not SEMVER.match(version):
        findings.append(
            Finding(ROOT_MANIFEST, None, f"{NAME}.semver", f"workspace version {version!r} is not valid semver")
        )
    elif is_prerelease(version) and not policy.allow_prerelease:
        findings.append(
            Finding(
                ROOT_MANIFEST,
                None,
                f"{NAME}.prerelease",
                f"workspace version {version} is a pre-release, and {policy.source} has allow-prerelease = false",
            )
        )
    inherited = 0
    for crate in members:
        if crate.inherits_version:
            inherited += 1
            continue
        if crate.version is None:
            message = (
                f"{crate.name} ({crate.path}) declares no version (cargo would use 0.0.0); set version.workspace = true"
            )
        elif crate.version != version:
            message = (
                f"{crate.name} ({crate.path}) has version {crate.version}, not the workspace version {version}; "
                "set version.workspace = true"
            )
        else:
            continue
        findings.append(Finding(crate.manifest, None, f"{NAME}.member", message))
    summary = (
        f"workspace version {version}; {len(members)} members match it "
        f"({inherited} inherit it, {len(members) - inherited} state it)"
    )
    return GateResult.of(NAME, summary, findings)
