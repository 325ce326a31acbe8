"""Compliance audit of a release folder, offline, with the owner's public key only.

``audit(release_dir, owner_pub)`` verifies everything a release ships (the
in-toto layout and links with the stock ``in-toto-verify``, every minisign
signature, ``SHA256SUMS``, the gates report, each archive's CycloneDX SBOM
against the archive's real contents, and the SLSA provenance against
``SHA256SUMS``) and returns an :class:`AuditReport`: what was built, from
which commit, by which steps and keys, with which gate results, containing
which components, and a verdict with every failure named. ``write_json`` and
``write_html`` write it for machines and for people. The command is
``python3 release/audit/audit.py RELEASE_DIR --owner-key owner.pub``.
``prepare()`` starts the audit's fixed-cost work (compiling the SBOM schema
validator) in the background, for a process that will audit later.
"""

from release.audit.checks import audit, prepare
from release.audit.intoto import run_in_toto_verify
from release.audit.model import AuditReport, Check, Finding, InTotoResult
from release.audit.render import render_html, render_text, write_html, write_json

__all__ = [
    "AuditReport",
    "Check",
    "Finding",
    "InTotoResult",
    "audit",
    "prepare",
    "render_html",
    "render_text",
    "run_in_toto_verify",
    "write_html",
    "write_json",
]
