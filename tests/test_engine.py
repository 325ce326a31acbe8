"""The engine's shape: steps from the declaration, order and parallelism from what each reads, frozen results."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import MappingProxyType

import pytest

from release import attest, pipeline
from release.archive import ArtifactDigest
from release.errors import VerificationError
from release.pipeline import Context, Done, Gated, Packaged, StepSpec, result_of, stages, steps
from release.products import load_workspace
from tests.conftest import ROOT, make_repo
from tests.test_fifth_bundle import FIFTH, declare

PACKAGING = ["package-core", "package-agent-linux", "package-agent-windows", "package-dpi"]
LINUX_PACKAGING = ["package-core", "package-agent-linux", "package-dpi"]
WINDOWS_PACKAGING = ["package-agent-windows"]


def _names(plan: tuple[tuple[StepSpec, ...], ...]) -> list[list[str]]:
    return [[s.name for s in stage] for stage in plan]


def test_order_and_parallelism_come_from_what_each_step_reads() -> None:
    assert _names(stages(steps(load_workspace(ROOT)))) == [
        ["gates"], ["build"], ["codesign", *LINUX_PACKAGING], WINDOWS_PACKAGING, ["provenance"], ["sign"],
        ["checksums"],
    ]  # fmt: skip


def test_a_bundle_declared_in_cargo_toml_adds_its_step(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ransomeye")
    declare(repo, FIFTH)
    plan = _names(stages(steps(load_workspace(repo.root))))
    assert plan[2] == ["codesign", *LINUX_PACKAGING, "package-tuner"]
    provenance = next(s for s in steps(load_workspace(repo.root)) if s.name == attest.STEP_PROVENANCE)
    assert "package-tuner" in provenance.after


def test_a_step_must_be_declared_after_what_it_reads() -> None:
    def nothing(*_: object) -> pipeline.Outcome[Gated]:
        raise AssertionError("never run")

    with pytest.raises(ValueError, match="runs after build, not declared before it"):
        stages([StepSpec("package-core", nothing, after=("build",)), StepSpec("build", nothing)])


def test_a_step_reads_what_it_runs_after_and_what_those_ran_after_only() -> None:
    specs = steps(load_workspace(ROOT))
    done = {s.name: Done(s.name, attest.WrittenLink(Path(s.name), {}), Gated(_digest(s.name))) for s in specs}
    by_name = {s.name: s for s in specs}
    provenance = pipeline._earlier(by_name["provenance"], specs, done)
    assert list(provenance) == ["gates", "build", "codesign", *PACKAGING], "in declared order; not sign, after it"
    assert list(pipeline._earlier(by_name["checksums"], specs, done)) == [
        "gates", "build", "codesign", *PACKAGING, "provenance", "sign"
    ]  # fmt: skip
    with pytest.raises(TypeError, match="declares it runs after"):
        result_of(MappingProxyType({}), "build", Gated)


def test_what_steps_share_and_hand_on_is_frozen(tmp_path: Path) -> None:
    ws = load_workspace(ROOT)
    context = Context(ws, tmp_path, tmp_path, 0, MappingProxyType({}), MappingProxyType({}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.epoch = 1  # type: ignore[misc]
    result = Packaged(_digest("a.tar.gz"), _digest("a.cdx.json"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.archive = _digest("b.tar.gz")  # type: ignore[misc]
    with pytest.raises(TypeError):
        context.keys["build"] = None  # type: ignore[index]


def _digest(name: str) -> ArtifactDigest:
    return ArtifactDigest(Path(name), 0, "0" * 64, b"\0" * 64)


# --- what a sandboxed step hands back is hostile until checked -------------------------------------

HOSTILE_PRODUCTS = [
    ("package-core", "../../outside"),
    ("package-core", "/etc/passwd"),
    ("package-core", "sub/dir/file"),
    ("package-core", "."),
    ("build", "bin/../../outside"),
    ("build", "bin/x86_64-unknown-linux-gnu/../../../outside"),
    ("build", "other/x86_64-unknown-linux-gnu/f"),
    ("build", "flat-file"),
]


@pytest.mark.parametrize("step, name", HOSTILE_PRODUCTS)
def test_a_sandboxed_step_cannot_name_a_product_outside_its_output(tmp_path: Path, step: str, name: str) -> None:
    """A record rewritten inside the sandbox: nothing outside the output folder is hashed or moved."""
    ws = load_workspace(ROOT)
    work, output = tmp_path / "work", tmp_path / "work" / ".step"
    (output / "out").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_bytes(b"the caller's file")
    digest = hashlib.sha256(b"the caller's file").hexdigest()
    r = Context(ws, work, tmp_path / "target", 1, MappingProxyType({}), MappingProxyType({}))
    record = attest.StepRecord(step, ["package"], {}, {name: digest})
    with pytest.raises(VerificationError, match="recorded a product"):
        pipeline._take_products(r, output, record)
    assert outside.read_bytes() == b"the caller's file"
    assert sorted(p.name for p in work.rglob("*") if p.is_file()) == []


def test_a_product_behind_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    ws = load_workspace(ROOT)
    work, output = tmp_path / "work", tmp_path / "work" / ".step"
    output.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "x86_64-unknown-linux-gnu").mkdir(parents=True)
    (elsewhere / "x86_64-unknown-linux-gnu" / "f").write_bytes(b"data")
    (output / "bin").symlink_to(elsewhere)
    r = Context(ws, work, tmp_path / "target", 1, MappingProxyType({}), MappingProxyType({}))
    name = "bin/x86_64-unknown-linux-gnu/f"
    record = attest.StepRecord("build", ["cargo"], {}, {name: hashlib.sha256(b"data").hexdigest()})
    with pytest.raises(VerificationError, match="not a file in its output folder"):
        pipeline._take_products(r, output, record)
    assert (elsewhere / "x86_64-unknown-linux-gnu" / "f").read_bytes() == b"data"
