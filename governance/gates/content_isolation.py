"""The ``isolation`` gate's content rules: what ships is judged by its bytes, not its names.

The gates run before the build, so the edge *binaries* do not exist yet (the
packagers compare with them after the build). What the gate can judge:

1. No hard links: no file of the gated source (the declaration's
   ``sources``) or of a bundle's assets has a second name; its bytes could
   be another file's (an edge binary, anywhere on the disk) under an
   innocent name, and change with it.
2. Executables only as declared binaries: no asset of any bundle starts like
   an executable (ELF, PE, Mach-O, ``#!`` script: the customer inspection's
   own table), and none holds an ELF, PE or Mach-O image further in (an
   executable, such as an edge binary, hidden inside a bigger asset).
3. No edge file under another name: in the bundles ``isolation.toml``
   protects, no asset equals or contains a file of an edge path (or of the
   bundle's forbidden paths); and no file of a core-side crate does either
   (an edge source copied into a crate the core binaries are compiled from;
   files under :data:`release.content.MIN_CONTAINED` bytes are not compared
   there, as any two tiny sources may coincide).

Files are streamed, never read whole. FIFOs, devices and symlinks leaving the
repository are never opened (the packagers and the secrets gate name them).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from governance.gates.crates import Crate
from governance.gates.policy import IsolationPolicy, path_under
from governance.gates.report import Finding
from release.archive import MAX_FILE_BYTES
from release.content import MIN_CONTAINED, ForbiddenContent, Needle, embedded_executable, head_executable
from release.products import Workspace
from release.source import CACHE_DIRS, CACHE_SUFFIXES

NAME = "isolation"


def _files(root: Path, top: str, *, follow: bool = True) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every regular file under ``top`` (repository-relative), caches aside: ``(rel, real path, stat)``.

    A symlink to a regular file inside the repository yields that file (with
    the link's name) when ``follow``, else nothing; anything else that is not
    a regular file is skipped.
    """
    start = root / top
    if not os.path.lexists(start):
        return
    stack = [(start, top)]
    while stack:
        path, rel = stack.pop()
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                if not follow:
                    continue
                real = Path(os.path.realpath(path))
                if not real.is_relative_to(root):
                    continue
                st = real.stat()
                if not stat.S_ISREG(st.st_mode):
                    continue  # a symlinked directory: never walked twice (the source hashing refuses it)
                path = real
            if stat.S_ISDIR(st.st_mode):
                names = sorted(os.listdir(path), reverse=True)
                stack += [
                    (path / n, f"{rel}/{n}") for n in names if n not in CACHE_DIRS and not n.endswith(CACHE_SUFFIXES)
                ]
            elif stat.S_ISREG(st.st_mode):
                yield rel, path, st
        except OSError:
            continue  # vanished or unreadable: the source hashing and the secrets gate name it


def _edge_content(root: Path, tops: tuple[str, ...], min_equal: int) -> ForbiddenContent:
    needles = [Needle(f"the edge file {rel}", path, st.st_size) for top in tops for rel, path, st in _files(root, top)]
    return ForbiddenContent(needles, min_equal=min_equal)


def content_findings(
    root: Path, workspace: Workspace, policy: IsolationPolicy, members: tuple[Crate, ...]
) -> tuple[list[Finding], str]:
    """The findings of the content rules over the repository at ``root``, and a summary of what was judged.

    Reads files; writes nothing. The rules: 1. no hard links; 2. no executable
    in any bundle's assets, and 3. no edge file's content in a protected
    bundle's assets nor in a core-side crate.
    """
    root = root.resolve()
    assets, judged = _asset_findings(root, workspace, policy)
    copies, edge_files = _crate_copies(root, policy, members)
    return [*_hard_links(root, workspace), *assets, *copies], f"{judged} asset files, {edge_files} edge files"


def _finding(subject: str, rule: str, message: str) -> Finding:
    return Finding(subject, None, f"{NAME}.{rule}", message)


def _hard_links(root: Path, workspace: Workspace) -> list[Finding]:
    """Rule 1: a file with more names than one, among the sources and every bundle's assets."""
    findings: list[Finding] = []
    linked: set[str] = set()
    for top in sorted({*workspace.sources, *(a for b in workspace.bundles for a in b.assets)}):
        for rel, _, st in _files(root, top):
            if st.st_nlink > 1 and rel not in linked:
                linked.add(rel)
                message = f"{rel} has {st.st_nlink} names (route: hard link); give it bytes of its own"
                findings.append(_finding(rel, "hard-link", message))
    return findings


def _asset_findings(root: Path, workspace: Workspace, policy: IsolationPolicy) -> tuple[list[Finding], int]:
    """Rules 2 and 3 over the bundles' assets; and how many asset files were judged."""
    findings: list[Finding] = []
    protected = set(policy.protected_bundles)
    judged = 0
    for bundle in workspace.bundles:
        edge_tops = tuple(sorted({*policy.edge, *bundle.forbidden_paths})) if bundle.id in protected else ()
        edge = _edge_content(root, edge_tops, 1)
        for asset in bundle.assets:
            for rel, path, st in _files(root, asset):
                judged += 1
                ships = f"bundle {bundle.id} ships {rel}"
                if st.st_size > MAX_FILE_BYTES:  # the packagers refuse it too: not read at all
                    limit = f"over the {MAX_FILE_BYTES}-byte limit for one packaged file (not judged)"
                    findings.append(_finding(rel, "too-large", f"{ships}, {st.st_size} bytes, {limit}"))
                    continue
                from_edge = any(path_under(rel, e) for e in edge_tops)  # named by the rules on names
                try:
                    found = edge.search(path) if edge and not from_edge else None
                    kind = head_executable(path)
                    embedded = embedded_executable(path) if kind is None else None
                except OSError as e:
                    findings.append(_finding(rel, "unreadable", f"{ships}, which cannot be read: {e.strerror or e}"))
                    continue
                if found is not None:
                    why = f"{ships}, which {found.describe()} (route: copy of an edge file)"
                    findings.append(_finding(rel, "edge-copy", why))
                if kind is not None:
                    why = f"{ships}, which is {kind}; only declared binaries may be (route: executable asset)"
                    findings.append(_finding(rel, "executable", why))
                if embedded is not None:
                    offset, inner = embedded
                    why = f"{ships}, which holds {inner} at byte {offset} (route: executable embedded in an asset)"
                    findings.append(_finding(rel, "embedded-executable", why))
    return findings, judged


def _crate_copies(root: Path, policy: IsolationPolicy, members: tuple[Crate, ...]) -> tuple[list[Finding], int]:
    """Rule 3 over the core-side crates: no edge file's content; and how many edge files were compared."""
    findings: list[Finding] = []
    edge_sources = _edge_content(root, policy.edge, MIN_CONTAINED)
    for crate in (c for c in members if policy.side(c.path) == "core-side"):
        for rel, path, _ in _files(root, crate.path, follow=False):  # a symlink out of a crate: rule 4
            if any(path_under(rel, e) for e in policy.edge):
                continue
            try:
                found = edge_sources.search(path) if edge_sources else None
            except OSError:
                continue  # the source hashing names an unreadable source
            if found is not None:
                why = (
                    f"core-side crate {crate.name} ({crate.path}) holds {rel}, which {found.describe()} "
                    "(route: edge source copied into a core crate)"
                )
                findings.append(_finding(rel, "edge-copy", why))
    return findings, edge_sources.count
