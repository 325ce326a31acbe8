"""Gate ``secrets``: no private key material or token in anything that ships or is built.

Trees scanned (from ``secrets.toml``): every bundle's asset paths, every
workspace member's directory, and any extra paths. Every file is read as
bytes, line by line in bounded chunks (a binary file or a huge line never
has to fit in memory; consecutive chunks overlap, so a secret is not lost at
a chunk boundary), and matched against every pattern.

Nothing is skipped silently: a path excluded by the policy is counted in the
summary; a declared tree that does not exist, an unreadable file, a special
file, a dangling symlink or a symlink leaving the repository is a finding.
Symlinks inside the repository are followed (that is what the packager
ships), each real file being scanned once.

Findings name the file and line and the kind of secret — never the secret.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from governance.gates.crates import Crate
from governance.gates.policy import SecretPattern, SecretsPolicy, path_under
from governance.gates.report import Finding, GateResult
from release.products import Workspace

NAME = "secrets"
CHUNK = 1 << 16
OVERLAP = 1 << 12


def scan_stream(stream: BinaryIO, patterns: tuple[SecretPattern, ...]) -> list[tuple[int, SecretPattern]]:
    """Every (line number, pattern) that matches in ``stream``, in order, each once.

    Reads at most ``CHUNK`` bytes at a time; a line longer than that is
    scanned in windows that overlap by ``OVERLAP`` bytes.
    """
    hits: dict[tuple[int, str], tuple[int, SecretPattern]] = {}
    line = 1
    carry = b""
    while True:
        piece = stream.readline(CHUNK)
        if not piece:
            break
        window = carry + piece
        for pattern in patterns:
            if (line, pattern.id) not in hits and pattern.regex.search(window) is not None:
                hits[(line, pattern.id)] = (line, pattern)
        if piece.endswith(b"\n"):
            line += 1
            carry = b""
        else:
            carry = window[-OVERLAP:]
    return list(hits.values())


@dataclass
class _Scan:
    """The state of one run of the gate: what was seen, found and excluded."""

    root: Path
    policy: SecretsPolicy
    findings: list[Finding] = field(default_factory=list)
    seen_files: set[str] = field(default_factory=set)
    seen_dirs: set[str] = field(default_factory=set)
    scanned: int = 0
    excluded: int = 0

    def problem(self, rel: str, rule: str, message: str) -> None:
        self.findings.append(Finding(rel, None, f"{NAME}.{rule}", f"{rel} {message}"))

    def excluded_path(self, rel: str) -> bool:
        if any(path_under(rel, e) for e in self.policy.exclude):
            self.excluded += 1
            return True
        return False

    def _inside(self, real: str) -> bool:
        try:
            Path(real).relative_to(self.root)
        except ValueError:
            return False
        return True

    def tree(self, rel: str) -> None:
        path = self.root / rel
        if not os.path.lexists(path):
            self.problem(rel, "missing", "does not exist, so it cannot be scanned")
            return
        self.entry(path, rel)

    def entry(self, path: Path, rel: str) -> None:
        if self.excluded_path(rel):
            return
        if path.is_symlink():
            real = os.path.realpath(path)
            if not os.path.exists(real):
                self.problem(rel, "unreadable", "is a dangling symlink")
                return
            if not self._inside(real):
                self.problem(rel, "outside", "is a symlink leaving the repository; it was not scanned")
                return
        try:
            st = path.stat()
        except OSError as e:
            self.problem(rel, "unreadable", f"cannot be read: {e.strerror or e}")
            return
        if stat.S_ISDIR(st.st_mode):
            self.directory(path, rel)
        elif stat.S_ISREG(st.st_mode):
            self.file(path, rel)
        else:
            self.problem(rel, "unreadable", "is not a regular file or directory; it was not scanned")

    def directory(self, path: Path, rel: str) -> None:
        real = os.path.realpath(path)
        if real in self.seen_dirs:
            return
        self.seen_dirs.add(real)
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            self.problem(rel, "unreadable", f"cannot be listed: {e.strerror or e}")
            return
        for name in names:
            self.entry(path / name, f"{rel}/{name}" if rel != "." else name)

    def file(self, path: Path, rel: str) -> None:
        real = os.path.realpath(path)
        if real in self.seen_files:
            return
        self.seen_files.add(real)
        try:
            with path.open("rb") as f:
                hits = scan_stream(f, self.policy.patterns)
        except OSError as e:
            self.problem(rel, "unreadable", f"cannot be read: {e.strerror or e}")
            return
        self.scanned += 1
        for line, pattern in hits:
            message = f"{rel}:{line} contains {pattern.description} ({pattern.id})"
            self.findings.append(Finding(rel, line, f"{NAME}.{pattern.id}", message))


def trees(workspace: Workspace, policy: SecretsPolicy, members: tuple[Crate, ...]) -> list[str]:
    """The repository-relative trees the policy says to scan, sorted, each once."""
    out: set[str] = set(policy.extra_paths)
    if policy.bundle_assets:
        out.update(a for b in workspace.bundles for a in b.assets)
    if policy.workspace_members:
        out.update(c.path for c in members)
    return sorted(out)


def check(root: Path, workspace: Workspace, policy: SecretsPolicy, members: tuple[Crate, ...]) -> GateResult:
    """Scan the trees. Reads files; writes nothing; never puts matched text in a finding."""
    scan = _Scan(root.resolve(), policy)
    scanned_trees = trees(workspace, policy, members)
    for rel in scanned_trees:
        scan.tree(rel)
    summary = f"{scan.scanned} files in {len(scanned_trees)} trees hold none of {len(policy.patterns)} kinds of secret"
    if scan.excluded:
        summary += f" ({scan.excluded} paths excluded by {policy.source})"
    return GateResult.of(NAME, summary, scan.findings)
