"""The engine's shape: steps from the declaration, order and parallelism from what each reads, frozen results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType

import pytest

from release import attest, pipeline
from release.archive import ArtifactDigest
from release.cargo import Toolchain
from release.errors import ReleaseError, VerificationError
from release.pipeline import Context, Done, Gated, Packaged, StepSpec, result_of, stages, steps
from release.products import load_workspace
from release.sandbox import compile_packages
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


# --- the engine's schedule: each step as soon as what it reads is done, one per core ---------------


class _Clock:
    """Stands in for each step's work (its sandbox and link): records when steps start and end, and how many overlap."""

    def __init__(self, seconds: dict[str, float], fail: frozenset[str] = frozenset()) -> None:
        self.seconds, self.fail = seconds, fail
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __call__(self, r: Context, spec: StepSpec, earlier: object) -> Done:
        with self.lock:
            self.events.append(("start", spec.name))
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds.get(spec.name, 0.01))
        with self.lock:
            self.running -= 1
            self.events.append(("end", spec.name))
        if spec.name in self.fail:
            raise VerificationError(f"{spec.name} failed")
        return Done(f"{spec.name} done", attest.WrittenLink(Path(spec.name), {}), Gated(_digest(spec.name)))


def _plan() -> list[StepSpec]:
    def never(*_: object) -> pipeline.Outcome[Gated]:
        raise AssertionError("the clock runs the steps")

    return [
        StepSpec("a", never),
        StepSpec("slow", never, after=("a",)),
        StepSpec("quick", never, after=("a",)),
        StepSpec("after-quick", never, after=("quick",)),
        StepSpec("last", never, after=("slow", "after-quick")),
    ]


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: _Clock, workers: int) -> dict[str, Done]:
    monkeypatch.setattr(pipeline, "_run_step", clock)
    monkeypatch.setattr(pipeline, "_step_workers", lambda: workers)
    r = Context(load_workspace(ROOT), tmp_path, tmp_path, 0, MappingProxyType({}), MappingProxyType({}))
    return pipeline.run_steps(r, _plan())


def test_a_step_starts_when_what_it_reads_is_done_not_its_whole_level(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = _Clock({"slow": 0.6})
    done = _run(monkeypatch, tmp_path, clock, workers=2)
    assert list(done) == ["a", "slow", "quick", "after-quick", "last"], "results in declared order"
    ev = clock.events
    assert ev.index(("start", "after-quick")) < ev.index(("end", "slow")), "it did not wait for its level's peer"
    assert ev.index(("start", "last")) > max(ev.index(("end", "slow")), ev.index(("end", "after-quick")))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"[{k}/6]" for k in range(1, 6)], "numbered as they finish"
    assert [line.split()[1] for line in lines] == ["a", "quick", "after-quick", "slow", "last"]
    assert all(" ok " in line for line in lines)


def test_no_more_steps_run_at_once_than_there_are_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = _Clock({"slow": 0.2, "quick": 0.2, "after-quick": 0.2})
    _run(monkeypatch, tmp_path, clock, workers=1)
    assert clock.most == 1
    clock = _Clock({"slow": 0.3, "quick": 0.1})
    _run(monkeypatch, tmp_path, clock, workers=2)
    assert clock.most == 2


def test_after_a_failure_nothing_starts_and_the_running_steps_finish(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = _Clock({"slow": 0.5, "quick": 0.05}, fail=frozenset({"quick"}))
    with pytest.raises(VerificationError, match="quick failed"):
        _run(monkeypatch, tmp_path, clock, workers=2)
    started = [name for kind, name in clock.events if kind == "start"]
    assert started == ["a", "slow", "quick"], "nothing starts after the failure"
    assert ("end", "slow") in clock.events, "the running step finished before the failure was raised"
    out = capsys.readouterr().out
    assert "quick                 FAILED" in out and "slow                  ok" in out


def test_of_two_failures_the_first_declared_is_raised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = _Clock({"slow": 0.3, "quick": 0.05}, fail=frozenset({"slow", "quick"}))
    with pytest.raises(VerificationError, match="slow failed"):
        _run(monkeypatch, tmp_path, clock, workers=2)


def test_an_interrupt_stops_a_lone_step_and_its_process_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during a step that runs alone (the build) ends it and the process it waits for, not after it."""
    pidfile = tmp_path / "pid"

    def step(r: Context, spec: StepSpec, earlier: object) -> Done:
        if spec.name == "slow":
            subprocess.run(["sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 30'], check=True)
        return Done(spec.name, attest.WrittenLink(Path(spec.name), {}), Gated(_digest(spec.name)))

    def plan() -> list[StepSpec]:
        def never(*_: object) -> pipeline.Outcome[Gated]:
            raise AssertionError("the stand-in runs the steps")

        return [StepSpec("a", never), StepSpec("slow", never, after=("a",)), StepSpec("c", never, after=("slow",))]

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline, "_run_step", step)
    r = Context(load_workspace(ROOT), tmp_path, tmp_path, 0, MappingProxyType({}), MappingProxyType({}))
    threading.Thread(target=interrupt_once_started, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_steps(r, plan())
    assert time.monotonic() - started < 8, "the step did not run to its end"
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")
    deadline = time.monotonic() + 5
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", "its process was killed"
    out = capsys.readouterr().out
    assert "[2/4] slow" in out and "FAILED after" in out and "[3/4]" not in out


def _project(tmp_path: Path) -> Path:
    """A small project tree: a package with a sub-package, a folder of scripts that is no package, a bad module."""
    root = tmp_path / "project"
    for folder in ("release/builder", "release/verify-js/node_modules/x", "governance/gates"):
        (root / folder).mkdir(parents=True)
    for init in ("release", "release/builder", "governance", "governance/gates"):
        (root / init / "__init__.py").write_text("")
    (root / "release" / "a.py").write_text("A = 1\n")
    (root / "release" / "builder" / "step.py").write_text("B = 2\n")
    (root / "release" / "verify-js" / "node_modules" / "x" / "gyp.py").write_text("C = 3\n")
    (root / "governance" / "gates" / "broken.py").write_text("def (:\n")
    (root / "governance" / "gates" / "check.py").write_text("D = 4\n")
    return root


def _compiled(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix().split(".cpython")[0] for p in root.rglob("*.pyc")}


def test_the_steps_python_is_compiled_once_before_they_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module of the project's packages gets its bytecode, even under PYTHONDONTWRITEBYTECODE; nothing else."""
    root = _project(tmp_path)
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    compile_packages(root)  # the module that does not compile is left to its import to report
    assert _compiled(root) == {
        "release/__pycache__/__init__",
        "release/__pycache__/a",
        "release/builder/__pycache__/__init__",
        "release/builder/__pycache__/step",
        "governance/__pycache__/__init__",
        "governance/gates/__pycache__/__init__",
        "governance/gates/__pycache__/check",
    }
    pyc = next((root / "release" / "__pycache__").glob("a.*.pyc"))
    before = pyc.stat().st_mtime_ns
    compile_packages(root)
    assert pyc.stat().st_mtime_ns == before  # current bytecode is kept


def test_a_cache_folder_that_cannot_be_written_is_left_as_it_is(tmp_path: Path) -> None:
    """A ``__pycache__`` that is not a folder (or cannot be written) is no error: the import compiles as before."""
    root = _project(tmp_path)
    (root / "release" / "__pycache__").write_text("not a folder")
    compile_packages(root)
    assert (root / "release" / "__pycache__").read_text() == "not a folder"
    assert "release/builder/__pycache__/step" in _compiled(root)


def test_a_toolchain_is_handed_to_a_step_as_it_was_found() -> None:
    tc = Toolchain("x86_64-pc-windows-gnu", Path("/usr/bin/cargo"), Path("/usr/bin/rustc"), "rustc 1.63.0", "gcc")
    assert Toolchain.from_dict(json.loads(json.dumps(tc.to_dict()))) == tc
    host = dataclasses.replace(tc, target="x86_64-unknown-linux-gnu", linker=None)
    assert Toolchain.from_dict(host.to_dict()) == host


@pytest.mark.parametrize(
    "handed",
    [
        "",
        "[]",
        '{"toolchains": {}}',
        '{"cargo-metadata": null}',
        '{"toolchains": {"x": {"target": "x"}}, "cargo-metadata": null}',
        '{"toolchains": {"x": {"target": "x", "cargo": "c", "rustc": "r", "version": 1}}, "cargo-metadata": null}',
        '{"toolchains": {"x": {"target": "x", "cargo": "c", "rustc": "r", "version": "v", "linker": 7}}, '
        '"cargo-metadata": null}',
        '{"toolchains": {}, "cargo-metadata": []}',
        '{"toolchains": [], "cargo-metadata": null}',
    ],
)
def test_a_step_not_handed_its_toolchains_and_metadata_stops_and_says_so(tmp_path: Path, handed: str) -> None:
    output = tmp_path / "output"
    output.mkdir()
    with pytest.raises(ReleaseError, match="was not handed its toolchains and cargo metadata") as caught:
        pipeline.run_inner(ROOT, "package-core", tmp_path, output, tmp_path / "target", None, handed)
    assert caught.value.message.startswith("the package-core step was not handed")
    assert list(output.iterdir()) == []


def test_a_sandboxed_step_s_process_imports_only_what_a_step_uses() -> None:
    """Each build and packaging step is a new process: it never imports the verifier, the repository, in-toto's
    models or the SBOM document model (a packager imports that one when it writes its SBOM)."""
    probe = "import sys; import release.builder.step; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {probe}"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    loaded = set(proc.stdout.split())
    for heavy in ("in_toto.models.layout", "cyclonedx.model", "tuf.api.metadata", "release.audit.checks",
                  "release.repository", "release.authenticode", "release.sbom_build", "jsonschema"):  # fmt: skip
        assert heavy not in loaded, heavy
    assert {"release.pipeline", "release.sbom", "release.attest"} <= loaded
