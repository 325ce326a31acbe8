"""The published documents against their golden files (``tests/golden/``).

Each test takes one document of the session's release, replaces what varies
between correct releases (tests/golden_files.py says what), and compares the rest
byte for byte. After an intended change: ``make golden``, then review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from release import attest
from release.signers import load_role_key
from tests.conftest import Repo
from tests.golden_files import Normalizer, check, dsse_statement, render


@pytest.fixture(scope="module")
def normalizer(released: Repo) -> Normalizer:
    return Normalizer(released.keys, released.artifacts)


def _one(folder: Path, pattern: str) -> Path:
    (path,) = sorted(folder.glob(pattern))
    return path


def test_the_layout(released: Repo, normalizer: Normalizer, update_golden: bool) -> None:
    layout = json.loads((released.artifacts / "root.layout").read_text())
    check("root.layout.json", render(normalizer.value(layout)), update_golden)


def test_a_link(released: Repo, normalizer: Normalizer, update_golden: bool) -> None:
    package = load_role_key(released.keys, "package").public  # the first builder's link (the second's agrees)
    link = json.loads((released.artifacts / attest.link_filename("package-core", package)).read_text())
    check("package-core.link.json", render(normalizer.value(link)), update_golden)


def test_an_sbom(released: Repo, normalizer: Normalizer, update_golden: bool) -> None:
    sbom = json.loads((released.artifacts / "ransomeye-core-1.0.0.cdx.json").read_text())
    check("ransomeye-core-1.0.0.cdx.json", render(normalizer.value(sbom)), update_golden)


def test_the_provenance(released: Repo, normalizer: Normalizer, update_golden: bool) -> None:
    (line,) = _one(released.artifacts, "*.intoto.jsonl").read_text().splitlines()
    envelope = json.loads(line)
    document = {
        "envelope": {k: v for k, v in envelope.items() if k != "payload"},
        "statement": dsse_statement(line),
    }
    check("provenance.intoto.json", render(normalizer.value(document)), update_golden)


def test_the_audit_report(released: Repo, normalizer: Normalizer, update_golden: bool, tmp_path: Path) -> None:
    report = tmp_path / "audit.json"
    proc = released.audit(report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check("audit.json", render(normalizer.value(json.loads(report.read_text()))), update_golden)
    check("audit.txt", normalizer.report(proc.stdout), update_golden)


def test_the_normalizer_keeps_the_shape_and_drops_what_varies(tmp_path: Path) -> None:
    """Durations with their alignment, key ids in any case, times and digests become labels; the rest stays."""
    from release.signing import ensure_dev_keys

    ensure_dev_keys(tmp_path / "keys")
    n = Normalizer(tmp_path / "keys", tmp_path / "out")
    fast = "  build   rc 0   45 materials   9.8 s  cargo build\n"
    slow = "  build   rc 0   45 materials  26.2 s  cargo build\n"
    assert n.report(fast) == n.report(slow) == "  build   rc 0   45 materials <number> s  cargo build\n"
    text = f"{tmp_path / 'out'} at 2026-12-03T23:19:54.294000Z sha256 7eaec437613a00a9 {'ab' * 32}"
    assert n.text(text) == "<release> at <time> sha256 <sha256> <sha256>"
    assert n.value({"sig": "00", "size": 12, "mode": 493}) == {"sig": "<signature>", "size": "<number>", "mode": 493}
