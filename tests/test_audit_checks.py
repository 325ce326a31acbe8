"""Audit checks declare what they need; the order comes from that; a check that cannot run says so.

The table is ``release.audit.checks.CHECKS``. These tests hold it to its word:
each check reads only the evidence it declares, the runner's order follows
from the declarations, and a check whose needed evidence is missing is
reported skipped with its reason (text, JSON, HTML) and never counts as a pass.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from release.audit import checks
from release.audit.checks import CHECKS, EVIDENCE, CheckSpec, audit, check_order
from release.audit.render import render_html, render_text
from tests.conftest import Repo

# The _Audit fields behind each piece of evidence.
FIELDS = {
    "layout": {"layout", "layout_trusted"},
    "trusted-layout": {"layout", "layout_trusted"},
    "links": {"links"},
    "archives": {"archives"},
    "version": {"version"},
    "provenance-file": {"provenance_file"},
    "sums": {"sums"},
    "signature-status": {"signature_status"},
    "gates": {"gates"},
    "contents": {"contents"},
    "sboms": {"sbom_views", "sbom_infos"},
    "sources": {"sources"},
    "provenance": {"provenance_info"},
}
AUDIT_FIELDS = set().union(*FIELDS.values())


def _functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(Path(checks.__file__).read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _fields_touched(name: str, functions: dict[str, ast.FunctionDef], seen: set[str] | None = None) -> set[str]:
    """The _Audit fields ``name`` and the module's functions it calls read or write (through ``a``)."""
    seen = seen if seen is not None else set()
    if name in seen or name not in functions:
        return set()
    seen.add(name)
    touched = set()
    for node in ast.walk(functions[name]):
        through_a = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "a"
        if through_a and node.attr in AUDIT_FIELDS:  # type: ignore[attr-defined]
            touched.add(node.attr)  # type: ignore[attr-defined]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            touched |= _fields_touched(node.func.id, functions, seen)
    return touched


def test_every_piece_of_evidence_has_its_fields() -> None:
    assert set(FIELDS) == set(EVIDENCE)


@pytest.mark.parametrize("spec", CHECKS, ids=[s.name for s in CHECKS])
def test_a_check_reads_only_what_it_declares(spec: CheckSpec) -> None:
    declared = set().union(*(FIELDS[e] for e in (*spec.needs, *spec.uses, *spec.gives)))
    touched = _fields_touched(spec.run.__name__, _functions())
    assert touched <= declared, f"{spec.name} reads or writes {sorted(touched - declared)} without declaring them"


def test_the_order_follows_the_declarations() -> None:
    order = [s.name for s in check_order(CHECKS)]
    for spec in CHECKS:
        for evidence in (*spec.needs, *spec.uses):
            giver = next(s.name for s in CHECKS if evidence in s.gives)
            assert order.index(giver) < order.index(spec.name)
    # Declared backwards, the order is still derived right.
    assert [s.name for s in check_order(tuple(reversed(CHECKS)))].index("layout") == 0


def _noop(a: object) -> None:
    return None


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ((CheckSpec("x", _noop, needs=("layout",)),), "no check gives ['layout']"),
        ((CheckSpec("x", _noop, gives=("layout",)), CheckSpec("y", _noop, gives=("layout",))), "given twice"),
        (
            (
                CheckSpec("x", _noop, needs=("links",), gives=("layout",)),
                CheckSpec("y", _noop, needs=("layout",), gives=("links",)),
            ),
            "need each other",
        ),
        ((CheckSpec("x", _noop, gives=("no-such-evidence",)),), "unknown"),
    ],
    ids=["nobody-gives-it", "given-twice", "cycle", "unknown-evidence"],
)
def test_a_broken_table_is_refused(specs: tuple[CheckSpec, ...], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_order(specs)


@pytest.fixture
def folder(released: Repo, tmp_path: Path) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(released.artifacts, copy)
    return copy


Edit = Callable[[Path, Path], None]


def _remove_layout(folder: Path, keys: Path) -> None:
    (folder / "root.layout").unlink()


def _layout_signed_by_another_key(folder: Path, keys: Path) -> None:
    layout = json.loads((folder / "root.layout").read_text())
    layout["signatures"] = [{"keyid": "0" * 64, "sig": "00" * 64}]
    (folder / "root.layout").write_text(json.dumps(layout))


@pytest.mark.parametrize(
    ("edit", "skipped", "reason"),
    [
        (_remove_layout, {"links", "sandbox", "signatures", "formats", "archives", "sboms", "sources"}, "needs "),
        (_layout_signed_by_another_key, {"archives", "sboms", "sources"}, "needs a layout signed by the owner key"),
    ],
    ids=["layout-missing", "layout-not-the-owners"],
)
def test_a_check_that_cannot_run_is_skipped_with_its_reason(
    released: Repo, folder: Path, edit: Edit, skipped: set[str], reason: str
) -> None:
    edit(folder, released.keys)
    report = audit(folder, released.keys / "owner.pub")
    assert not report.verified
    assert {c.name for c in report.checks if c.skipped is not None} == skipped
    for name in skipped:
        check = report.check(name)
        assert reason in (check.skipped or "") and not check.passed and check.status == "skipped"
        assert "(see the layout check)" in (check.skipped or "")
    data = report.to_dict()
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert {n for n, s in statuses.items() if s == "skipped"} == skipped
    text = render_text(report)
    assert f"{len(skipped)} checks skipped)" in report.verdict
    for name in skipped:
        assert any(line.split()[:2] == ["SKIP", name] and "skipped: it needs" in line for line in text.splitlines())
    assert render_html(report).count("⊘") == len(skipped)


def test_nothing_is_skipped_on_a_whole_release(released: Repo) -> None:
    report = audit(released.artifacts, released.keys / "owner.pub")
    assert report.verified, report.findings
    assert all(c.status == "passed" for c in report.checks)
    assert {c.name for c in report.checks} == {s.name for s in CHECKS if s.run.__name__.startswith("check_")} | {
        "in-toto"
    }
