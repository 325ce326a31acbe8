"""Gate ``secrets``: no private key material or credential in anything that ships or is built.

Trees scanned (from ``secrets.toml``): every bundle's asset paths, every
workspace member's directory, and any extra paths. Every file is scanned in
the forms credentials really ship in (see :mod:`governance.gates.secret_rules`
for what is looked for, :mod:`governance.gates.secret_layers` for where):

1. line by line, streamed in bounded windows (a binary file or a huge line
   never has to fit in memory; windows overlap, so nothing is lost at a
   boundary): the policy's patterns, the detect-secrets plugins, secret-like
   names assigned high-entropy values;
2. whole, when it is at most ``bounds.max-file-size``: DER and OpenPGP private
   keys, GCP service-account keys, AWS key pairs; then, level after level up
   to ``bounds.max-depth``, whatever it holds: archive members, decompressed
   streams, base64 and hex payloads, each scanned the same way.

Nothing is skipped silently: a path excluded by the policy is counted in the
summary; a declared tree that does not exist, an unreadable file, a special
file, a dangling symlink, a symlink leaving the repository, and whatever
cannot be scanned within the bounds (a file too large to scan whole, a zip
bomb, nesting too deep, an encrypted or corrupt archive) is a finding.
Symlinks inside the repository are followed (that is what the packager
ships), each real file being scanned once.

Findings that are not credentials are listed in the allowlist the policy
names, each with its reason; each entry in effect is reported with the gate's
result, and an entry that matches no finding is itself a finding (stale).

Findings name the file, the line and the rule, and carry a fingerprint (a
hash of the secret and a little context, for the allowlist) — never the
secret.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from governance.gates.crates import Crate
from governance.gates.policy import SecretPattern, SecretsPolicy, path_under
from governance.gates.report import Allowance, Finding, GateResult
from governance.gates.secret_layers import (
    Budget,
    Inner,
    Refusal,
    candidates,
    container,
    decodings,
    size_text,
    unpack,
)
from governance.gates.secret_rules import CHUNK, OVERLAP, Detectors, Hit, line_windows
from release.archive import MAX_FILE_BYTES
from release.products import Workspace

NAME = "secrets"
__all__ = ["CHUNK", "NAME", "OVERLAP", "check", "scan_stream", "trees"]
_FINGERPRINT_DOMAIN = b"ransomeye secrets gate fingerprint v1\x00"


def scan_stream(stream: BinaryIO, patterns: tuple[SecretPattern, ...]) -> list[tuple[int, SecretPattern]]:
    """Every (line number, pattern) that matches in ``stream``, in order, each once.

    Reads at most ``CHUNK`` bytes at a time; a line longer than that is
    scanned in windows that overlap by ``OVERLAP`` bytes.
    """
    hits: dict[tuple[int, str], tuple[int, SecretPattern]] = {}
    for line, window, _ in line_windows(stream):
        for pattern in patterns:
            if (line, pattern.id) not in hits and pattern.regex.search(window) is not None:
                hits[(line, pattern.id)] = (line, pattern)
    return list(hits.values())


class _Head:
    """The first ``limit`` bytes of ``f``, line by line: what the scan of a file too large to scan whole reads."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self.f = f
        self.left = limit

    def readline(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.f.readline(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data


def fingerprint(rule: str, value: bytes) -> str:
    """The 16-hex-digit fingerprint of a finding: a domain-separated SHA-256 of its rule and value."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + rule.encode() + b"\x00" + value).hexdigest()[:16]


@dataclass(frozen=True)
class _Origin:
    """Where a payload sits in its file: the file's line it came from (if any) and the steps down to it."""

    line: int | None = None
    steps: tuple[str, ...] = ()

    def down(self, step: str, line: int | None) -> _Origin:
        return _Origin(self.line if self.steps else line, (*self.steps, step))


# (file, line of the file, steps down into it, line of the innermost payload): one place a secret is at.
_Place = tuple[str, int | None, tuple[str, ...], int | None]


@dataclass(frozen=True)
class _Raw:
    """A finding before the allowlist: ``generic`` ones yield to specific ones at the same place."""

    finding: Finding
    rule: str
    place: _Place
    generic: bool


class _FileScan:
    """One file, scanned in every form within one :class:`Budget`."""

    def __init__(self, rel: str, detectors: Detectors, policy: SecretsPolicy) -> None:
        self.rel = rel
        self.detectors = detectors
        self.bounds = policy.bounds
        self.budget = Budget(policy.bounds)
        self.found: list[_Raw] = []
        self.members = 0
        self.payloads = 0

    def where(self, origin: _Origin, line: int | None) -> tuple[str, int | None]:
        top = origin.line if origin.steps else line
        return (f"{self.rel}:{top}" if top is not None else self.rel), top

    def record(self, rule: str, top: int | None, message: str, fp: str, place: _Place, generic: bool) -> None:
        """Keep one finding; one with no line of its file to name prints its fingerprint, for the allowlist."""
        if top is None:
            message += f" [fingerprint {fp}]"
        self.found.append(_Raw(Finding(self.rel, top, f"{NAME}.{rule}", message, fp), rule, place, generic))

    def hit(self, hit: Hit, origin: _Origin) -> None:
        where, top = self.where(origin, hit.line)
        message = f"{where} contains {hit.description} ({hit.rule})"
        if origin.steps:
            message += f" at line {hit.line} of {' > '.join(origin.steps)}"
        place = (self.rel, top, origin.steps, hit.line if origin.steps else None)
        self.record(hit.rule, top, message, fingerprint(hit.rule, hit.value), place, hit.generic)

    def refusal(self, refusal: Refusal, origin: _Origin, line: int | None) -> None:
        steps = (*origin.steps, refusal.step)
        where, top = self.where(origin, line)
        message = f"{where}: {' > '.join(steps)} {refusal.detail} ({refusal.rule})"
        fp = fingerprint(refusal.rule, "\x00".join(steps).encode())
        self.record(refusal.rule, top, message, fp, (self.rel, top, steps, None), False)

    def too_large(self, size: int) -> None:
        rule = "too-large"
        message = (
            f"{self.rel} is {size_text(size)}, more than the {size_text(self.bounds.max_file_size)} scanned whole "
            f"(bounds.max-file-size): only the lines of its first {size_text(self.bounds.max_file_size)} were scanned, "
            f"not what it may hold encoded or archived ({rule})"
        )
        self.record(rule, None, message, fingerprint(rule, b""), (self.rel, None, (), None), False)

    def run(self, f: BinaryIO, size: int) -> None:
        """Scan the open file ``f`` of ``size`` bytes: streamed when too large, else whole and unwrapped."""
        limit = self.bounds.max_file_size
        data = f.read(limit + 1) if size <= limit else b""
        if size > limit or len(data) > limit:
            f.seek(0)
            for hit in self.detectors.lines(cast(BinaryIO, _Head(f, limit))):
                self.hit(hit, _Origin())
            self.too_large(max(size, len(data)))
            return
        self.layer(data, _Origin(), 0)

    def layer(self, data: bytes, origin: _Origin, depth: int) -> None:
        """Scan one payload: its text and binary forms, then what it holds, one level down."""
        kind = container(data)
        if kind is not None:
            if depth >= self.bounds.max_depth:
                self.refusal(Refusal("too-deep", kind, 0, self._deep()), origin, None)
                return
            whole = False
            for item in unpack(data, kind, self.budget):
                whole |= isinstance(item, Refusal) and item.whole
                self.member(item, data, origin, depth)
            if not whole:
                return  # an archive or a compressed stream: its own bytes are not text to scan
        self.scan(data, origin)
        if depth >= self.bounds.max_depth:
            first = next(candidates(data), None)
            if first is not None:
                encoding, offset, _ = first
                line = data.count(b"\n", 0, offset) + 1
                self.refusal(Refusal("too-deep", encoding, offset, self._deep()), origin, line)
            return
        for item in decodings(data, self.budget):
            self.member(item, data, origin, depth)

    def _deep(self) -> str:
        return f"is nested more than {self.bounds.max_depth} levels deep (bounds.max-depth); not scanned"

    def member(self, item: Inner | Refusal, outer: bytes, origin: _Origin, depth: int) -> None:
        line = None if item.offset is None else outer.count(b"\n", 0, item.offset) + 1
        if isinstance(item, Refusal):
            self.refusal(item, origin, line)
            return
        if item.step.startswith(("zip member", "tar member")):
            self.members += 1
        else:
            self.payloads += 1
        self.layer(item.data, origin.down(item.step, line), depth + 1)

    def scan(self, data: bytes, origin: _Origin) -> None:
        for hit in self.detectors.lines(io.BytesIO(data)):
            self.hit(hit, origin)
        for hit in self.detectors.whole(data):
            self.hit(hit, origin)


@dataclass
class _Scan:
    """The state of one run of the gate: what was seen, found and excluded."""

    root: Path
    policy: SecretsPolicy
    detectors: Detectors
    findings: list[Finding] = field(default_factory=list)
    raw: list[_Raw] = field(default_factory=list)
    seen_files: set[str] = field(default_factory=set)
    seen_dirs: set[str] = field(default_factory=set)
    scanned: int = 0
    excluded: int = 0
    members: int = 0
    payloads: int = 0

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
            self.file(path, rel, st.st_size)
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

    def file(self, path: Path, rel: str, size: int) -> None:
        real = os.path.realpath(path)
        if real in self.seen_files:
            return
        self.seen_files.add(real)
        if size > MAX_FILE_BYTES:  # no packager ships it; scanning it would only cost time
            self.problem(rel, "too-large", f"is {size} bytes, over the {MAX_FILE_BYTES}-byte limit for one packaged "
                                           "file: not scanned, never shipped")  # fmt: skip
            return
        scan = _FileScan(rel, self.detectors, self.policy)
        try:
            with path.open("rb") as f:
                scan.run(f, size)
        except OSError as e:
            self.problem(rel, "unreadable", f"cannot be read: {e.strerror or e}")
            return
        self.scanned += 1
        self.members += scan.members
        self.payloads += scan.payloads
        self.raw.extend(scan.found)

    def settle(self) -> list[Allowance]:
        """Apply the allowlist to the raw findings; report stale entries; return the entries in effect."""
        entries = self.policy.allowlist.entries
        hidden = [0] * len(entries)
        kept: list[_Raw] = []
        for raw in self.raw:
            f = raw.finding
            matched = False
            for i, e in enumerate(entries):
                if (
                    e.path == f.subject
                    and e.rule == raw.rule
                    and (e.line == f.line if e.line is not None else e.fingerprint == f.fingerprint)
                ):
                    hidden[i] += 1
                    matched = True
            if not matched:
                kept.append(raw)
        specific = {raw.place for raw in kept if not raw.generic}
        self.findings.extend(raw.finding for raw in kept if not (raw.generic and raw.place in specific))
        source = self.policy.allowlist.source
        for e, n in zip(entries, hidden, strict=True):
            if n == 0:
                message = f"{source}: {e.describe()} matches no finding: the allowlist is stale, remove the entry"
                self.findings.append(Finding(source, None, f"{NAME}.stale-allowlist", message))
        return [
            Allowance(source, e.where, e.path, e.rule, e.line, e.fingerprint, e.reason, n)
            for e, n in zip(entries, hidden, strict=True)
            if n
        ]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}" if n else ""


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
    scan = _Scan(root.resolve(), policy, Detectors(policy))
    scanned_trees = trees(workspace, policy, members)
    for rel in scanned_trees:
        scan.tree(rel)
    allowed = scan.settle()
    summary = f"{scan.scanned} files in {len(scanned_trees)} trees hold none of {scan.detectors.kinds} kinds of secret"
    inside = [_count(scan.members, "archive member"), _count(scan.payloads, "decoded or decompressed payload")]
    if scan.members or scan.payloads:
        summary += f" (looking inside them too: {', '.join(part for part in inside if part)})"
    if allowed:
        hidden = _count(sum(a.hides for a in allowed), "finding")
        summary += f"; {hidden} allowed by {policy.allowlist.source}, each entry listed with its reason in the report"
    if scan.excluded:
        summary += f" ({scan.excluded} paths excluded by {policy.source})"
    return GateResult.of(NAME, summary, scan.findings, allowed)
