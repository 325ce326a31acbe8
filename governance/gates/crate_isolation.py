"""Gate ``isolation``: the core side never depends on, nor ships, anything from the edge.

Five rules, from ``isolation.toml`` and the product declaration:

1. No core-side crate reaches an edge crate through its dependencies: any
   table (normal, dev, build, target-specific), by path (a directory under an
   edge path) or by name (the package name of an edge member), directly or
   through intermediate path crates (shared libraries are followed).
   Every workspace member must be classified as core-side, edge or shared.
2. No protected bundle ships edge material: no asset under (or containing) an
   edge path, no symlink in its assets that leads into one, no binary built by
   an edge crate, no binary that no member builds; and its declaration must
   forbid every edge path and every binary an edge crate builds, so the
   packager refuses them too.
3. No build script but where the declaration allows one
   (``build-scripts`` in ``[workspace.metadata.release]``): a build script
   runs arbitrary code while cargo builds and can read any file, edge
   sources included. The build step checks the same on every crate cargo
   builds from a directory.
4. No symlink in a member's directory that leads out of it (a symlinked
   module file or source directory would make the compiler read another
   crate's files, e.g. an edge source, under a core name). The build step
   proves what the compiler really read from its dep-info.
5. Content, not names (:mod:`governance.gates.content_isolation`): no hard
   link in the source or the assets, no executable among any bundle's assets
   (at its start or embedded), no copy of an edge file in a protected
   bundle's assets or in a core-side crate.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from governance.gates.content_isolation import content_findings
from governance.gates.crates import MANIFEST, Crate, Dependency, WorkspaceDependency, load_crate
from governance.gates.policy import IsolationPolicy, path_under, show
from governance.gates.report import Finding, GateResult
from release.errors import BadInputError
from release.products import Bundle, Workspace
from release.source import CACHE_DIRS

NAME = "isolation"


@dataclass(frozen=True)
class _Hop:
    crate: Crate
    dependency: Dependency

    def __str__(self) -> str:
        return f"{self.crate.manifest} {self.dependency.where}"


class _CrateGraph:
    """Members plus the path crates they lead to, loaded on demand."""

    def __init__(self, root: Path, members: tuple[Crate, ...], workspace_deps: dict[str, WorkspaceDependency]) -> None:
        self.root = root
        self.by_path = {c.path: c for c in members}
        self.workspace_deps = workspace_deps

    def crate_at(self, hop: _Hop, path: str) -> Crate:
        if path not in self.by_path:
            if not (self.root / path / MANIFEST).is_file():
                raise BadInputError(
                    f"{hop.crate.manifest}: {hop.dependency.where} is a path dependency on {path!r}, "
                    f"which has no {MANIFEST}"
                )
            self.by_path[path] = load_crate(self.root, path, self.workspace_deps)
        return self.by_path[path]


def _edge_reached(
    dep: Dependency, policy: IsolationPolicy, edge_names: dict[str, str], edge_paths: dict[str, str]
) -> str | None:
    """Describe the edge crate ``dep`` names, or None when it names none."""
    if dep.path is not None and policy.is_edge(dep.path):
        return f"{edge_paths.get(dep.path, dep.package)} ({dep.path})"
    if dep.package in edge_names:
        return f"{dep.package} ({edge_names[dep.package]}, by name)"
    return None


def dependency_findings(
    root: Path,
    policy: IsolationPolicy,
    members: tuple[Crate, ...],
    workspace_deps: dict[str, WorkspaceDependency],
) -> list[Finding]:
    """Rule 1: every path from a core-side member to an edge crate, shortest first."""
    findings: list[Finding] = []
    for crate in members:
        if policy.side(crate.path) is None:
            findings.append(
                Finding(
                    crate.manifest,
                    None,
                    f"{NAME}.unclassified",
                    f"member {crate.path} ({crate.name}) is not under a core-side, edge or shared path "
                    f"of {policy.source}",
                )
            )
    edge_names = {c.name: c.path for c in members if policy.is_edge(c.path)}
    edge_paths = {path: name for name, path in edge_names.items()}
    graph = _CrateGraph(root, members, workspace_deps)
    for start in members:
        if policy.side(start.path) != "core-side":
            continue
        seen = {start.path}
        queue: deque[tuple[Crate, tuple[_Hop, ...]]] = deque([(start, ())])
        while queue:
            crate, chain = queue.popleft()
            for dep in crate.dependencies:
                hop = _Hop(crate, dep)
                edge = _edge_reached(dep, policy, edge_names, edge_paths)
                if edge is not None:
                    via = " -> ".join(str(h) for h in (*chain, hop))
                    findings.append(
                        Finding(
                            start.manifest,
                            None,
                            f"{NAME}.dependency",
                            f"core-side crate {start.name} ({start.path}) depends on edge crate {edge} via {via}",
                        )
                    )
                elif dep.path is not None and dep.path not in seen:
                    seen.add(dep.path)
                    queue.append((graph.crate_at(hop, dep.path), (*chain, hop)))
    return findings


def _symlinks_into_edge(root: Path, asset: str, policy: IsolationPolicy) -> list[str]:
    """Repository-relative paths of symlinks in ``asset`` (or ``asset`` itself) that resolve under an edge path."""
    top = root / asset
    candidates = [top] if top.is_symlink() else []
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            candidates += [Path(dirpath) / n for n in sorted(dirnames + filenames) if (Path(dirpath) / n).is_symlink()]
    out: list[str] = []
    for link in candidates:
        try:
            rel = Path(os.path.realpath(link)).relative_to(root).as_posix()
        except ValueError:
            continue  # leaves the repository: the packager refuses it; it is not edge material
        if policy.is_edge(rel):
            out.append(link.relative_to(root).as_posix())
    return out


def bundle_findings(
    root: Path, workspace: Workspace, policy: IsolationPolicy, members: tuple[Crate, ...]
) -> list[Finding]:
    """Rule 2, for every protected bundle."""
    findings: list[Finding] = []
    builders: dict[str, list[Crate]] = {}
    for crate in members:
        for binary in crate.binaries:
            builders.setdefault(binary, []).append(crate)
    edge_binaries = sorted({b for c in members if policy.is_edge(c.path) for b in c.binaries})
    for i, bundle_id in enumerate(policy.protected_bundles):
        bundle = next((b for b in workspace.bundles if b.id == bundle_id), None)
        if bundle is None:
            raise BadInputError(
                f"{policy.source}: protected-bundles[{i}] = {show(bundle_id)} is not a bundle of Cargo.toml",
                hint="known bundles: " + ", ".join(b.id for b in workspace.bundles),
            )
        findings += _bundle_findings(root, bundle, policy, builders, edge_binaries)
    return findings


def _bundle_findings(
    root: Path, bundle: Bundle, policy: IsolationPolicy, builders: dict[str, list[Crate]], edge_binaries: list[str]
) -> list[Finding]:
    subject = f"bundle {bundle.id}"
    out: list[Finding] = []

    def add(rule: str, message: str) -> None:
        out.append(Finding(subject, None, f"{NAME}.{rule}", f"bundle {bundle.id} {message}"))

    for asset in bundle.assets:
        if policy.is_edge(asset):
            add("asset", f"ships asset {asset} from the edge")
        else:
            inner = [e for e in policy.edge if path_under(e, asset)]
            if inner:
                add("asset", f"ships asset {asset}, which contains the edge path {inner[0]}")
            for link in _symlinks_into_edge(root, asset, policy):
                add("asset", f"ships {link}, a symlink into the edge")
    for binary in bundle.binaries:
        crates = builders.get(binary, [])
        if not crates:
            add("binary", f"ships {binary}, which no workspace member builds")
        for crate in crates:
            if policy.is_edge(crate.path):
                add("binary", f"ships {binary}, built by edge crate {crate.name} ({crate.path})")
    for edge in policy.edge:
        if bundle.forbidden_path(edge) is None:
            add("forbidden-paths", f"does not forbid the edge path {edge} (add it to forbidden-paths)")
    for binary in edge_binaries:
        if binary not in bundle.forbidden_binaries and binary not in bundle.binaries:
            add("forbidden-binaries", f"does not forbid the edge binary {binary} (add it to forbidden-binaries)")
    return out


def build_script_findings(workspace: Workspace, members: tuple[Crate, ...]) -> list[Finding]:
    """Rule 3: a build script in a member the declaration does not allow one."""
    out: list[Finding] = []
    for crate in members:
        if crate.build_scripts and not workspace.allows_build_script(crate.path):
            for script in crate.build_scripts:
                out.append(
                    Finding(
                        script,
                        None,
                        f"{NAME}.build-script",
                        f"member {crate.name} ({crate.path}) has the build script {script}, which "
                        "[workspace.metadata.release].build-scripts does not allow (route: undeclared build script)",
                    )
                )
    return out


def symlink_findings(root: Path, members: tuple[Crate, ...]) -> list[Finding]:
    """Rule 4: every symlink in a member's directory that resolves outside that directory."""
    out: list[Finding] = []
    for crate in members:
        top = root / crate.path
        real_top = Path(os.path.realpath(top))
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in CACHE_DIRS)
            for name in sorted(dirnames + filenames):
                link = Path(dirpath) / name
                if not link.is_symlink():
                    continue
                real = Path(os.path.realpath(link))
                if real.is_relative_to(real_top):
                    continue
                rel = link.relative_to(root).as_posix()
                shown = real.relative_to(root).as_posix() if real.is_relative_to(root) else "outside the repository"
                kind = "source directory" if real.is_dir() else "module file"
                out.append(
                    Finding(
                        rel,
                        None,
                        f"{NAME}.symlink",
                        f"member {crate.name} ({crate.path}) holds {rel}, a symlink to {shown}, outside its "
                        f"directory (route: symlinked {kind})",
                    )
                )
    return out


def check(
    root: Path,
    workspace: Workspace,
    policy: IsolationPolicy,
    members: tuple[Crate, ...],
    workspace_deps: dict[str, WorkspaceDependency],
) -> GateResult:
    """Run the gate over the repository at ``root``. Reads manifests and walks assets; writes nothing."""
    findings = dependency_findings(root, policy, members, workspace_deps)
    findings += bundle_findings(root, workspace, policy, members)
    findings += build_script_findings(workspace, members)
    findings += symlink_findings(root, members)
    by_content, content_summary = content_findings(root, workspace, policy, members)
    findings += by_content
    core = [c for c in members if policy.side(c.path) == "core-side"]
    edge = [c for c in members if policy.is_edge(c.path)]
    bundles = ", ".join(policy.protected_bundles)
    summary = (
        f"{len(core)} core-side crates reach none of {len(edge)} edge crates; "
        f"{'bundle ' + bundles + ' ships' if len(policy.protected_bundles) == 1 else 'bundles ' + bundles + ' ship'} "
        f"nothing from the edge, by name or by content ({content_summary}); "
        "build scripts only where declared; no symlink out of a crate; no hard link"
    )
    return GateResult.of(NAME, summary, findings)
