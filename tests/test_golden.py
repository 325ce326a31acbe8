"""The published documents against their golden files (``tests/golden/``).

Each test takes one document of the session's release, replaces what varies
between correct releases (tests/golden.py says what), and compares the rest
byte for byte. After an intended change: ``make golden``, then review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Repo
from tests.golden import Normalizer, check, dsse_statement, render


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
    link = json.loads(_one(released.artifacts, "package-core.*.link").read_text())
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
