"""A bundle added *only* in the declaration is released, verified and audited like the four.

The fixture appends a fifth ``[[workspace.metadata.release.bundles]]`` table to a
repository copy's ``Cargo.toml`` and changes nothing else: the engine derives
its packaging step, the layout its step and rules, the inspection its archive,
the gates their checks, the audit its archive. The customer's stock
``in-toto-verify`` accepts the release and refuses it without the new archive
or with another archive under its name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Repo, make_repo
from tests.forge import verify
from tests.gates_fixtures import edit

MARK = "# How to get a toolchain"
FIFTH = """[[workspace.metadata.release.bundles]]
id = "tuner"
name = "ransomeye-tuner"
format = "tar.gz"
target = "x86_64-unknown-linux-gnu"
binaries = ["ransomeye-tuner"]
assets = ["ops/services/core"]
forbidden-paths = ["edge"]
forbidden-binaries = ["ransomeye-agent", "ransomeye-loader", "ransomeye-sentinel", "ransomeye-dpi"]

"""
ARCHIVE = "ransomeye-tuner-1.0.0.tar.gz"


def declare(repo: Repo, table: str) -> None:
    edit(repo.root / "Cargo.toml", MARK, table + MARK)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory, released: Repo) -> Repo:
    repo = make_repo(tmp_path_factory.mktemp("five") / "ransomeye", keys_from=released.keys)
    declare(repo, FIFTH)
    proc = repo.build()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def test_the_fifth_bundle_is_published_like_the_others(five: Repo) -> None:
    names = {p.name for p in five.artifacts.iterdir()}
    for name in (
        ARCHIVE,
        f"{ARCHIVE}.minisig",
        "ransomeye-tuner-1.0.0.cdx.json",
        "ransomeye-tuner-1.0.0.cdx.json.minisig",
    ):
        assert name in names
    assert any(n.startswith("package-tuner.") and n.endswith(".link") for n in names)
    sums = (five.artifacts / "SHA256SUMS").read_text()
    assert f"  {ARCHIVE}\n" in sums
    layout = json.loads((five.artifacts / "root.layout").read_text())["signed"]
    assert [s["name"] for s in layout["steps"] if s["name"].startswith("package-")] == [
        "package-core", "package-agent-linux", "package-agent-windows", "package-dpi", "package-tuner"
    ]  # fmt: skip


def test_the_customer_verifies_it_with_the_stock_tool(five: Repo, tmp_path: Path) -> None:
    download = shutil.copytree(five.artifacts, tmp_path / "download")
    proc = verify(download, five.keys / "owner.pub")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(
    "attack",
    ["the fifth archive removed", "the core archive under the fifth's name"],
)
def test_the_stock_tool_refuses_the_fifth_archive_missing_or_swapped(five: Repo, tmp_path: Path, attack: str) -> None:
    download = shutil.copytree(five.artifacts, tmp_path / "download")
    target = download / ARCHIVE
    if attack == "the fifth archive removed":
        target.unlink()
    else:
        shutil.copyfile(download / "ransomeye-core-1.0.0.tar.gz", target)
    before = {p.name: p.read_bytes() for p in five.artifacts.iterdir() if p.is_file()}
    proc = verify(download, five.keys / "owner.pub")
    assert proc.returncode != 0
    assert ARCHIVE in proc.stderr
    assert {p.name: p.read_bytes() for p in five.artifacts.iterdir() if p.is_file()} == before


def test_the_audit_reads_five_archives(five: Repo, tmp_path: Path) -> None:
    report = tmp_path / "audit.json"
    proc = five.audit(report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["verified"] is True
    assert sorted(a["name"] for a in data["archives"])[-1] == ARCHIVE
    assert len(data["archives"]) == 5
    assert "package-tuner" in {s["name"] for s in data["steps"]}


def test_a_fifth_bundle_that_ships_what_it_forbids_is_refused_before_anything_runs(repo_copy: Repo) -> None:
    """The declaration is input too: a bundle that forbids the edge but ships an edge binary publishes nothing."""
    declare(
        repo_copy, FIFTH.replace('binaries = ["ransomeye-tuner"]', 'binaries = ["ransomeye-tuner", "ransomeye-dpi"]')
    )
    proc = repo_copy.build()
    assert proc.returncode != 0
    assert "(bundle 'tuner') both ships and forbids ransomeye-dpi" in proc.stderr, proc.stderr
    assert [p.name for p in repo_copy.artifacts.iterdir()] == [".gitkeep"]
