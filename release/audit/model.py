"""The audit report: frozen records of what was checked, what was found, and the verdict.

Nothing here does I/O. :meth:`AuditReport.to_dict` is the JSON document a
machine reads (schema :data:`REPORT_SCHEMA`); the writers in
:mod:`release.audit.render` turn the same report into text and HTML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

REPORT_SCHEMA = "ransomeye.audit/v1"


class Record:
    """A report record's JSON: its fields by name (records and tuples within converted), less ``omit``,
    plus the properties ``extra`` names, as ``(key, property)``."""

    omit: ClassVar[frozenset[str]] = frozenset()
    extra: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]  # every Record is a dataclass
        out = {f.name: _plain(getattr(self, f.name)) for f in fields if f.name not in self.omit}
        out.update((key, _plain(getattr(self, prop))) for key, prop in self.extra)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Finding(Record):
    """One failure: which check found it, what it is about (a file, a step, a key), and a sentence."""

    check: str
    subject: str
    message: str

    def text(self) -> str:
        return f"[{self.check}] {self.subject}: {self.message}"


@dataclass(frozen=True)
class Check(Record):
    """One named verification, passed exactly when it ran and found nothing.

    ``skipped`` is why it could not run (evidence it needs is missing); a
    skipped check is never a pass.
    """

    name: str
    title: str
    summary: str
    findings: tuple[Finding, ...]
    skipped: str | None = None
    extra: ClassVar[tuple[tuple[str, str], ...]] = (("passed", "passed"), ("status", "status"))

    @property
    def passed(self) -> bool:
        return not self.findings and self.skipped is None

    @property
    def status(self) -> str:
        return "skipped" if self.skipped is not None else "passed" if self.passed else "failed"


@dataclass(frozen=True)
class InTotoResult(Record):
    """The outcome of the stock ``in-toto-verify``: ``reason`` is its last reason line when it failed."""

    ok: bool
    reason: str
    output: str = ""
    omit: ClassVar[frozenset[str]] = frozenset({"output"})


@dataclass(frozen=True)
class KeyInfo(Record):
    """A key of the release: its in-toto keyid, its role and the steps the layout lets it sign."""

    keyid: str
    role: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StepInfo(Record):
    """One step of the supply chain, from the layout and its link."""

    name: str
    role: str
    keyid: str | None
    link: str | None
    signature_ok: bool
    command: tuple[str, ...]
    expected_command: tuple[str, ...]
    started: str | None
    finished: str | None
    return_value: int | None
    materials: int
    products: int
    depends_on: tuple[str, ...]
    extra: ClassVar[tuple[tuple[str, str], ...]] = (("duration_seconds", "duration"),)

    @property
    def duration(self) -> float | None:
        """Seconds between ``started`` and ``finished``, when both are known and parse."""
        if self.started is None or self.finished is None:
            return None
        try:
            return (datetime.fromisoformat(self.finished) - datetime.fromisoformat(self.started)).total_seconds()
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class GateInfo(Record):
    """One release gate's result; ``source`` says where it was read (the report, or the gates link)."""

    name: str
    passed: bool
    reason: str
    source: str


@dataclass(frozen=True)
class CrateInfo(Record):
    name: str
    version: str
    licenses: str


@dataclass(frozen=True)
class SbomInfo(Record):
    """The summary of one archive's SBOM."""

    file: str
    spec_version: str
    serial_number: str
    timestamp: str
    components: int
    files: int
    crates: tuple[CrateInfo, ...]
    toolchain: str | None


@dataclass(frozen=True)
class MemberInfo(Record):
    """A regular file inside an archive."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchiveInfo(Record):
    """A release archive: its digest, what is inside, its signature and its SBOM."""

    name: str
    step: str
    size: int | None
    sha256: str | None
    members: tuple[MemberInfo, ...]
    signature_ok: bool
    sbom: SbomInfo | None
    extra: ClassVar[tuple[tuple[str, str], ...]] = (("binaries", "binaries"),)

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(m.path for m in self.members if "/bin/" in m.path)


@dataclass(frozen=True)
class BinarySources:
    """The source files one built binary was compiled from, as the build link records them (the compiler's dep-info)."""

    binary: str  # the build link's product, bin/<target>/<file>
    sources: tuple[tuple[str, str], ...]  # (repository path, sha256), sorted

    def to_dict(self) -> dict[str, Any]:
        return {"binary": self.binary, "sources": [{"path": p, "sha256": h} for p, h in self.sources]}


@dataclass(frozen=True)
class ProvenanceInfo:
    """The SLSA provenance as read from its envelope (``verified``: its signature checked)."""

    file: str
    verified: bool
    signed_by: tuple[str, ...]
    build_type: str | None
    builder_id: str | None
    invocation_id: str | None
    started: str | None
    finished: str | None
    source_commit: str | None
    subjects: tuple[tuple[str, str], ...]
    toolchains: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "verified": self.verified,
            "signed_by": list(self.signed_by),
            "build_type": self.build_type,
            "builder_id": self.builder_id,
            "invocation_id": self.invocation_id,
            "started": self.started,
            "finished": self.finished,
            "source_commit": self.source_commit,
            "subjects": [{"name": n, "sha256": h} for n, h in self.subjects],
            "toolchains": dict(self.toolchains),
        }


@dataclass(frozen=True)
class AuditReport:
    """The complete account of one release folder and the verdict on it.

    ``verified`` is True only when at least one check ran and every check
    passed (fail closed).
    """

    release_dir: str
    audited_at: str
    version: str | None
    source_commit: str | None
    owner_keyid: str
    layout_expires: str | None
    layout_readme: str | None
    keys: tuple[KeyInfo, ...]
    steps: tuple[StepInfo, ...]
    gates: tuple[GateInfo, ...]
    archives: tuple[ArchiveInfo, ...]
    provenance: ProvenanceInfo | None
    in_toto: InTotoResult
    checks: tuple[Check, ...]
    files: tuple[str, ...] = field(default=())
    sources: tuple[BinarySources, ...] = field(default=())

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for c in self.checks for f in c.findings)

    @property
    def verdict(self) -> str:
        if self.verified:
            return "VERIFIED"
        n = len(self.findings)
        skipped = sum(1 for c in self.checks if c.skipped is not None)
        also = f", {skipped} check{'s' if skipped != 1 else ''} skipped" if skipped else ""
        return f"VERIFICATION FAILED ({n} failure{'s' if n != 1 else ''}{also})"

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "verified": self.verified,
            "verdict": self.verdict,
            "release_dir": self.release_dir,
            "audited_at": self.audited_at,
            "version": self.version,
            "source_commit": self.source_commit,
            "owner_keyid": self.owner_keyid,
            "layout": {"expires": self.layout_expires, "readme": self.layout_readme},
            "keys": [k.to_dict() for k in self.keys],
            "steps": [s.to_dict() for s in self.steps],
            "gates": [g.to_dict() for g in self.gates],
            "archives": [a.to_dict() for a in self.archives],
            "sources": [b.to_dict() for b in self.sources],
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
            "in_toto": self.in_toto.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "failures": [f.to_dict() for f in self.findings],
            "files": list(self.files),
        }
