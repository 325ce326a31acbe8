"""What the gates found: findings, one result per gate, and the JSON report.

The report is deterministic: no timestamps, no absolute paths (subjects are
repository-relative), findings sorted, keys sorted. The same tree gives
byte-identical reports wherever it is checked out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.archive import write_bytes_atomic

REPORT_SCHEMA = "ransomeye.gates/v1"


@dataclass(frozen=True)
class Finding:
    """One policy violation.

    ``subject`` is what is wrong: a repository-relative file, a crate or a
    bundle; ``line`` is set when the finding points into a file. ``message``
    is a complete sentence for a human and never quotes secret material.
    ``fingerprint`` (secrets findings) identifies the finding for the
    secrets allowlist: a hash, never the secret.
    """

    subject: str
    line: int | None
    rule: str
    message: str
    fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subject": self.subject, "line": self.line, "rule": self.rule, "message": self.message}
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        return out

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.subject, -1 if self.line is None else self.line, self.rule, self.message)


@dataclass(frozen=True)
class Allowance:
    """An allowlist entry in effect (secrets gate): the findings it hides and why they are no credential.

    ``source`` is the allowlist file, ``entry`` the entry's place in it
    (``allow[0]``); ``path``, ``rule`` and ``line`` or ``fingerprint`` are what
    it matches; ``hides`` is how many findings it matched in this run.
    """

    source: str
    entry: str
    path: str
    rule: str
    line: int | None
    fingerprint: str | None
    reason: str
    hides: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "entry": self.entry,
            "path": self.path,
            "rule": self.rule,
            "line": self.line,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "hides": self.hides,
        }


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: passed exactly when there are no findings.

    ``allowed`` lists the allowlist entries in effect (only the secrets gate
    has an allowlist); the report shows each, with its reason.
    """

    name: str
    summary: str
    findings: tuple[Finding, ...]
    allowed: tuple[Allowance, ...] = ()

    @staticmethod
    def of(name: str, summary: str, findings: list[Finding], allowed: list[Allowance] | None = None) -> GateResult:
        """Build a result with its findings deduplicated and sorted."""
        return GateResult(name, summary, tuple(sorted(set(findings), key=Finding.sort_key)), tuple(allowed or ()))

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def reason(self) -> str:
        """One line: the summary when passed, else the first finding (and how many more)."""
        if self.passed:
            return self.summary
        first = self.findings[0].message
        more = len(self.findings) - 1
        if more:
            return f"{first} (and {more} more finding{'s' if more > 1 else ''})"
        return first

    def line(self) -> str:
        """The gate's line in the command's output, e.g. ``PASS versions: ...``."""
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.allowed:
            out["allowlist"] = [a.to_dict() for a in self.allowed]
        return out


@dataclass(frozen=True)
class Report:
    """The results of every gate, in the order they ran."""

    workspace_version: str
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        """True only when there is at least one gate and every gate passed."""
        return bool(self.gates) and all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "workspace_version": self.workspace_version,
            "passed": self.passed,
            "gates": [g.to_dict() for g in self.gates],
        }

    def to_json(self) -> bytes:
        """The report as canonical JSON bytes (sorted keys, two-space indent, final newline)."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` to ``path`` atomically: a temporary file in the same directory, then a rename.

    Either the old file or the complete new one is at ``path``, never a partial
    one. Raises :class:`BadInputError` when the directory does not exist or
    is not writable.
    """
    write_bytes_atomic(path, report.to_json(), "the report")
