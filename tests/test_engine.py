"""The engine's shape: steps from the declaration, order and parallelism from what each reads, frozen results."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import pytest

from release import attest, pipeline
from release.archive import ArtifactDigest
from release.pipeline import Context, Done, Gated, Packaged, StepSpec, result_of, stages, steps
from release.products import load_workspace
from tests.conftest import ROOT, make_repo
from tests.test_fifth_bundle import FIFTH, declare

PACKAGING = ["package-core", "package-agent-linux", "package-agent-windows", "package-dpi"]


def _names(plan: tuple[tuple[StepSpec, ...], ...]) -> list[list[str]]:
    return [[s.name for s in stage] for stage in plan]


def test_order_and_parallelism_come_from_what_each_step_reads() -> None:
    assert _names(stages(steps(load_workspace(ROOT)))) == [
        ["gates"], ["build"], PACKAGING, ["provenance", "sign"], ["checksums"],
    ]  # fmt: skip


def test_a_bundle_declared_in_cargo_toml_adds_its_step(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ransomeye")
    declare(repo, FIFTH)
    plan = _names(stages(steps(load_workspace(repo.root))))
    assert plan[2] == [*PACKAGING, "package-tuner"]
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
    assert list(provenance) == ["gates", "build", *PACKAGING], "in declared order; not sign, which runs beside it"
    assert list(pipeline._earlier(by_name["checksums"], specs, done)) == ["gates", "build", *PACKAGING, "sign"]
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
