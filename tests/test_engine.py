"""The engine's shape: steps from the declaration, order and parallelism from what each reads, frozen results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@pytest.mark.parametrize("epoch", [None, "1700000000"], ids=["no-epoch", "SOURCE_DATE_EPOCH"])
def test_the_steps_python_is_compiled_once_before_they_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epoch: str | None
) -> None:
    """Every module of the project's packages gets its bytecode, even under PYTHONDONTWRITEBYTECODE; nothing else.
    Bytecode that is current is kept, also under SOURCE_DATE_EPOCH (whose default, hash-checked bytecode
    compileall would write again on every run)."""
    root = _project(tmp_path)
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    if epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
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


def test_a_cache_folder_that_is_a_symlink_is_never_written_through(tmp_path: Path) -> None:
    """A checkout whose ``__pycache__`` points elsewhere (a key folder, say): nothing is written there."""
    root = _project(tmp_path)
    outside = tmp_path / "keys"
    outside.mkdir()
    (outside / "release.pem").write_text("secret\n")
    (root / "governance" / "gates" / "__pycache__").symlink_to(outside)
    compile_packages(root)
    assert sorted(p.name for p in outside.iterdir()) == ["release.pem"]
    assert (outside / "release.pem").read_text() == "secret\n"
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


_HANDED = '{"toolchains": {}, "cargo-metadata": null%s}'


@pytest.mark.parametrize(
    "links, reason",
    [
        ("", "KeyError: 'links'"),
        (', "links": []', "TypeError"),
        (', "links": {}', "KeyError"),  # package-core runs after the build and the gates
        (', "links": {"gates": null, "build": ["build.1.link", {}]}', "TypeError"),
        (', "links": {"gates": ["gates.1.link"], "build": ["build.1.link", {}]}', "ValueError"),
        (', "links": {"gates": ["../gates.1.link", {}], "build": ["build.1.link", {}]}', "not the file name of a link"),
        (', "links": {"gates": ["/tmp/gates.1.link", {}], "build": ["build.1.link", {}]}', "not the file name"),
        (', "links": {"gates": ["gates.1.json", {}], "build": ["build.1.link", {}]}', "not the file name of a link"),
        (', "links": {"gates": [7, {}], "build": ["build.1.link", {}]}', "not the file name of a link"),
    ],
)
def test_a_step_not_handed_the_links_it_runs_after_stops_and_says_so(tmp_path: Path, links: str, reason: str) -> None:
    """A sandboxed step reads no link back: the links of the steps it runs after come with its input, or it stops."""
    output = tmp_path / "output"
    output.mkdir()
    with pytest.raises(ReleaseError, match="was not handed the links of the steps it runs after") as caught:
        pipeline.run_inner(ROOT, "package-core", tmp_path, output, tmp_path / "target", None, _HANDED % links)
    assert reason in caught.value.message
    assert list(output.iterdir()) == []


@pytest.mark.parametrize(
    "gates",
    [
        '["gates.1.link", []]',  # not a link's signed part
        '["gates.1.link", {"materials": {}, "products": []}]',
        '["gates.1.link", {"materials": {}, "products": {"gates-report.json": {}}}]',
    ],
)
def test_a_handed_link_that_is_not_a_link_is_refused(tmp_path: Path, gates: str) -> None:
    output = tmp_path / "output"
    output.mkdir()
    handed = _HANDED % f', "links": {{"gates": {gates}, "build": ["build.1.link", {{}}]}}'
    with pytest.raises(ReleaseError, match=r"^gates\.1\.link: not a readable in-toto link"):
        pipeline.run_inner(ROOT, "package-core", tmp_path, output, tmp_path / "target", None, handed)
    assert list(output.iterdir()) == []


def test_a_handed_link_names_files_the_step_still_checks(tmp_path: Path) -> None:
    """A link as handed is what the step trusts; every product of it that the step reads is hashed again first."""
    output = tmp_path / "output"
    output.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "gates-report.json").write_text("{}")  # not what the gates' link recorded
    gates = {"materials": {}, "products": {"gates-report.json": {"sha256": "0" * 64}}}
    handed = _HANDED % f', "links": {{"gates": ["gates.1.link", {json.dumps(gates)}], "build": ["build.1.link", {{}}]}}'
    with pytest.raises(ReleaseError, match=r"gates-report\.json: differs from what the gates step recorded"):
        pipeline.run_inner(ROOT, "package-core", tmp_path, output, tmp_path / "target", None, handed)
    assert list(output.iterdir()) == []


def test_a_sandboxed_step_s_process_imports_only_what_a_step_uses() -> None:
    """Each build and packaging step is a new process: it never imports the verifier, the repository, in-toto's
    models, the keys, the signing formats and backends or cryptography (it signs nothing: about 15 ms of each
    step process's start), or the SBOM writer (a packager imports that one when it writes its SBOM; it does not
    import cyclonedx-python-lib's document model, see tests/test_sbom.py)."""
    probe = "import sys; import release.builder.step; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {probe}"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    loaded = set(proc.stdout.split())
    for heavy in ("in_toto.models.layout", "cyclonedx.model", "tuf.api.metadata", "release.audit.checks",
                  "release.repository", "release.authenticode", "release.sbom_build", "jsonschema",
                  "securesystemslib", "release.hsm", "pkcs11", "cryptography", "release.keys", "release.signers",
                  "release.signing", "release.provenance", "release.openpgp", "release.minisign",
                  "release.signify", "release.sigstore_bundle"):  # fmt: skip
        assert heavy not in loaded, heavy
    # Nor what only the run's own process uses: its pools, the staging folder's names and directory swap, other
    # builders' death signal, the bytecode compiler (8 ms of each step's start). (Nor the provenance's uuid; not
    # asserted: coverage's own start imports it when the suite measures the probe.)
    for own in ("concurrent.futures", "ctypes", "secrets", "compileall", "py_compile"):
        assert own not in loaded, own
    assert {"release.pipeline", "release.sbom", "release.attest"} <= loaded


def test_the_command_runner_turns_a_collector_kept_off_while_loading_back_on_and_leaves_one_on_as_it_is() -> None:
    """:func:`release.cli.run`: a collector a script kept off while its modules loaded is on when the command
    runs, with what was loaded frozen (never walked again); one that was on (a test calling ``main``) is left
    as it is, nothing frozen."""
    check = (
        "import gc\n"
        "from release import cli\n"
        "state = lambda args: print(gc.isenabled(), gc.get_freeze_count() > 0) or 0\n"
        "cli.run('x', state, [])\n"
        "gc.disable()\n"
        "cli.run('x', state, [])\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{check}"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert proc.stdout.split() == ["True", "False", "True", "True"]


COMMAND_SCRIPTS = [
    "release/builder/step.py",
    "release/builder/build.py",
    "governance/gates/check_gates.py",
    "release/audit/audit.py",
    "release/fetch.py",
]


@pytest.mark.parametrize("script", COMMAND_SCRIPTS)
def test_a_command_run_as_a_script_loads_its_modules_with_the_collector_off(script: str) -> None:
    """Run as a script, each command's modules load with the garbage collector off (about a twentieth of a
    step process's start): it is still off when the script hands its command to :func:`release.cli.run`."""
    probe = (
        "import gc, runpy, sys\n"
        "from release import cli\n"
        "cli.run = lambda prog, main, argv=None: print('collector on:', gc.isenabled()) or 0\n"
        f"sys.argv = [{script!r}, '--help']\n"
        f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{probe}"],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert "collector on: False" in proc.stdout, proc.stdout + proc.stderr


def test_the_build_command_starts_without_the_verifier_tuf_or_the_authenticode_code() -> None:
    """``build.py`` imports the run's engine only: the keys and signing code, the verifier, TUF's repository code
    and the Authenticode checks are imported by the run once its gates have started (TUF by a customer release
    only), so the gates' process starts about 0.1 s sooner, on the release's critical path."""
    probe = "import sys; import release.builder.build; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {probe}"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    loaded = set(proc.stdout.split())
    assert "release.pipeline" in loaded
    for later in ("release.audit.checks", "release.audit.intoto", "release.repository", "tuf.api.metadata",
                  "release.authenticode", "cryptography", "release.keys", "release.signers", "release.signing",
                  "jsonschema"):  # fmt: skip
        assert later not in loaded, later


def test_only_a_packager_of_code_signed_binaries_imports_the_authenticode_checks() -> None:
    """The Authenticode module brings the X.509 code (about 30 ms of a step process's start): a packager of
    binaries the codesign step did not sign checks no signature and never imports it; the packager of signed
    binaries imports it before it reads anything."""
    ws = load_workspace(ROOT)
    unsigned = [b.id for b in ws.bundles if attest.binaries_from(b) != attest.STEP_CODESIGN]
    signed = [b.id for b in ws.bundles if attest.binaries_from(b) == attest.STEP_CODESIGN]
    assert unsigned and signed
    probe = (
        "import sys; from pathlib import Path; from release import pipeline; "
        f"from release.products import load_workspace; ws = load_workspace(Path({str(ROOT)!r})); "
        f"checked = [pipeline._check_signed_binaries(None, ws.bundle(b), {{}}) for b in {unsigned!r}]; "
        "print(checked, 'release.authenticode' in sys.modules, 'cryptography.x509' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {probe}"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == f"{[{}] * len(unsigned)} False False"  # nothing to check, nothing imported
    probe = probe.replace(repr(unsigned), repr(signed[:1]))
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {probe}"],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and "KeyError" in proc.stderr  # no codesign result handed: after the import
    assert "release/authenticode.py" not in proc.stderr


# --- the build's binaries: the caller takes them from where cargo left them, trusting no record ------------

LINUX, WINDOWS = "x86_64-unknown-linux-gnu", "x86_64-pc-windows-gnu"
CORE, OPS = f"bin/{LINUX}/ransomeye-core", f"bin/{LINUX}/ransomeye-ops"


@dataclass
class _Tree:
    """A finished build as the caller finds it: cargo's target directory (each binary also under ``deps/``, as
    cargo hard-links it), a key folder, this run's staging folder, a file elsewhere, and the honest record."""

    top: Path
    r: Context
    keys: Path
    outside: Path
    binaries: list[dict[str, object]]

    def place(self, product: str) -> Path:
        _, target, file = product.split("/")
        return self.r.target_dir / target / "release" / file

    def entry(self, product: str) -> dict[str, object]:
        return next(e for e in self.binaries if e["product"] == product)

    def point(self, product: str, path: object) -> None:
        """Record ``product`` at ``path``, with that file's identity when there is one (a consistent lie)."""
        self.entry(product)["path"] = path
        if isinstance(path, str | Path) and os.path.lexists(path):
            self.entry(product).update(_identity(Path(path)))

    def replace(self, product: str, make: Callable[[Path], object]) -> None:
        """Put something else where cargo left ``product`` (after the build step recorded it)."""
        place = self.place(product)
        place.unlink()
        make(place)


def _identity(path: Path) -> dict[str, object]:
    st = path.lstat()
    return {"device": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}  # fmt: skip


def _content(product: str) -> bytes:
    return f"the binary {product}\n".encode() * 1000


@pytest.fixture
def tree(tmp_path: Path) -> _Tree:
    ws = load_workspace(ROOT)
    target_dir, staging, keys = tmp_path / "target", tmp_path / "staging", tmp_path / "keys"
    (staging / "out").mkdir(parents=True)
    (staging / "out" / "gates-report.json").write_bytes(b"{}")
    keys.mkdir()
    (keys / "release.pem").write_bytes(b"PRIVATE KEY")
    outside = tmp_path / "outside"
    outside.write_bytes(b"the caller's file")
    binaries: list[dict[str, object]] = []
    for b in ws.bundles:
        for f in b.binary_files():
            product = f"bin/{b.target}/{f}"
            release = target_dir / b.target / "release"
            (release / "deps").mkdir(parents=True, exist_ok=True)
            deps = release / "deps" / f"{f.replace('-', '_')}-0123456789abcdef"
            if not deps.exists():
                deps.write_bytes(_content(product))
                deps.chmod(0o755)
                os.link(deps, release / f)  # as cargo "uplifts" a binary: two names, one file
            binaries.append({"product": product, "path": str(release / f), **_identity(release / f)})
    r = Context(ws, staging, target_dir, 1, MappingProxyType({}), MappingProxyType({}), hidden=(keys,))
    return _Tree(tmp_path, r, keys, outside, binaries)


def _take(tree: _Tree, **fields: object) -> dict[str, str]:
    """The caller's half: read the build step's record (as written inside the sandbox), then place its binaries."""
    output = tree.r.staging / ".step-build"
    output.mkdir(exist_ok=True)
    record = {"name": "build", "command": ["cargo"], "materials": {}, "products": {}, "byproducts": {},
              "environment": {}, "summary": "", "binaries": tree.binaries, **fields}  # fmt: skip
    path = output / f"build{pipeline.RECORD_SUFFIX}"
    path.write_text(json.dumps(record))
    _, _, located = pipeline._read_record(path, "build")
    return pipeline._take_binaries(tree.r, located)


def _state(top: Path) -> dict[str, object]:
    """Every entry under ``top`` but the staging folder's step output: kind, link target or bytes."""
    state: dict[str, object] = {}
    for p in sorted(top.rglob("*")):
        if ".step-build" in p.parts:
            continue
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            state[str(p)] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            state[str(p)] = ("file", p.read_bytes(), st.st_ino, st.st_mtime_ns)
        else:
            state[str(p)] = ("other", stat.S_IFMT(st.st_mode))
    return state


def _in_target_dir_at_top(tree: _Tree) -> None:
    """A --target-dir above the key folder and the staging (a mistake): the binaries are where cargo left them."""
    for folder in list((tree.r.target_dir).iterdir()):
        folder.rename(tree.top / folder.name)
    tree.r = dataclasses.replace(tree.r, target_dir=tree.top)
    for e in tree.binaries:
        e["path"] = str(tree.place(str(e["product"])))


def _prebuilt_run(tree: _Tree) -> None:
    """A run of --unsafe-prebuilt-binaries: the binaries are in that folder, never in the target directory."""
    prebuilt = tree.top / "prebuilt"
    prebuilt.mkdir()
    tree.r = dataclasses.replace(tree.r, prebuilt=prebuilt)


def _socket(place: Path) -> None:
    here = os.getcwd()
    os.chdir(place.parent)  # a socket's path is short: bound by its name, from its folder
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(place.name)
    finally:
        os.chdir(here)


def _device(place: Path) -> None:
    try:
        os.mknod(place, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("making a device file needs CAP_MKNOD")


def _symlinked_folder(tree: _Tree, folder: Path) -> None:
    """``folder`` (inside the target directory) becomes a symlink to a copy of it elsewhere."""
    elsewhere = tree.top / "elsewhere"
    shutil.copytree(folder, elsewhere, symlinks=True)
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere)


def _rewrite_in_place(place: Path) -> None:
    """The same file (inode) rewritten after the build step recorded it: same size, other bytes, another time."""
    with place.open("r+b") as f:
        f.write(b"X")
    os.utime(place, ns=(1, 1))


def _rewrite_keeping_its_time(place: Path) -> None:
    """As above, its modification time put back (its change time cannot be: it moves on with the clock's tick)."""
    recorded = place.lstat()
    time.sleep(0.05)
    with place.open("r+b") as f:
        f.write(b"X")
    os.utime(place, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))


def _replace_file(place: Path, data: bytes) -> None:
    """Another file put at ``place`` (written beside it and renamed over it, as tools replace files)."""
    new = place.with_name(place.name + ".new")
    new.write_bytes(data)
    os.replace(new, place)


def _same_file_twice(tree: _Tree) -> None:
    """Two declared binaries are one file: ransomeye-ops is made another name of ransomeye-core (recorded so)."""
    tree.place(OPS).unlink()
    os.link(tree.place(CORE), tree.place(OPS))
    for product in (CORE, OPS):
        tree.point(product, str(tree.place(product)))


def _cargos_other_name(tree: _Tree) -> None:
    """The very file, by the name cargo gives it in ``deps/``."""
    tree.point(CORE, str(next(tree.place(CORE).parent.glob("deps/ransomeye_core-*"))))


def _the_other_targets_place(tree: _Tree) -> None:
    tree.point(f"bin/{WINDOWS}/ransomeye-agent.exe", str(tree.place(f"bin/{LINUX}/ransomeye-agent")))


def _a_key_below_the_target_dir(tree: _Tree) -> None:
    _in_target_dir_at_top(tree)
    tree.point(CORE, str(tree.keys / "release.pem"))


def _staged_below_the_target_dir(tree: _Tree) -> None:
    _in_target_dir_at_top(tree)
    tree.point(CORE, str(tree.r.out / "gates-report.json"))


def _entry(**changes: object) -> dict[str, object]:
    """One well-formed entry of a build record's ``binaries``, changed."""
    entry: dict[str, object] = {"product": CORE, "path": "/x", "device": 1, "inode": 1, "size": 1, "mtime_ns": 1,
                                "ctime_ns": 1}  # fmt: skip
    return {**entry, **changes}


def _undeclared(tree: _Tree, product: str) -> None:
    tree.binaries.append({**tree.entry(CORE), "product": product})


# Each refusal names the binary, then what the record said, as Python text (attacker's text is never printed raw).
AGENT_EXE, AGENT = f"bin/{WINDOWS}/ransomeye-agent.exe", f"bin/{LINUX}/ransomeye-agent"  # the first of each target


def at(problem: str, product: str = CORE) -> str:
    return rf"^{re.escape(product)}: the build step recorded it at '.*', {problem}"


def found(problem: str, product: str = CORE) -> str:
    return rf"^{re.escape(product)}: '.*' is {problem}"


def recorded(what: str) -> str:
    return rf"^the build step {what}$"


DOTS = r"a path with a '\.', '\.\.' or empty component$"
ELSEWHERE = "not where cargo leaves it \\(.*/target/x86_64-unknown-linux-gnu/release/ransomeye-core\\)$"
NOT_REGULAR = ", not the regular file cargo writes$"
CHECKED = r"not the file the build step checked \(replaced or rewritten since\)$"
HOSTILE_BINARIES: list[tuple[str, Callable[[_Tree], object], str]] = [
    # Where the record says a binary is: only where cargo leaves it, spelled as cargo spells it.
    ("outside the target directory", lambda t: t.point(CORE, str(t.outside)), at("not in cargo's target directory")),
    ("a key file", lambda t: t.point(CORE, str(t.keys / "release.pem")), at("not in cargo's target directory")),
    ("a staged file", lambda t: t.point(CORE, str(t.r.out / "gates-report.json")), at("not in cargo's target")),
    ("'..' out of it", lambda t: t.point(CORE, f"{t.place(CORE).parent}/../../../outside"), at(DOTS)),
    ("'..' back into it", lambda t: t.point(CORE, f"{t.place(CORE).parent}/../release/ransomeye-core"), at(DOTS)),
    ("'.' in it", lambda t: t.point(CORE, f"{t.place(CORE).parent}/./ransomeye-core"), at(DOTS)),
    ("a doubled slash", lambda t: t.point(CORE, f"{t.place(CORE).parent}//ransomeye-core"), at(DOTS)),
    ("a relative path", lambda t: t.point(CORE, f"{LINUX}/release/ransomeye-core"), at("not an absolute path$")),
    ("a NUL", lambda t: t.point(CORE, f"{t.place(CORE)}\0"), at("a path with a NUL in it$")),
    ("cargo's other name for it", _cargos_other_name, at(ELSEWHERE)),
    ("another binary's place", lambda t: t.point(CORE, str(t.place(OPS))), at(ELSEWHERE)),
    ("the other target's place", _the_other_targets_place, at("not where cargo leaves it", AGENT_EXE)),
    ("a key, the target directory above it", _a_key_below_the_target_dir, at("inside the key folder .*/keys$")),
    ("a staged file, the target directory above it", _staged_below_the_target_dir, at("inside this run's staging")),
    ("the target directory in a prebuilt run", _prebuilt_run, at("not in the prebuilt folder .*/prebuilt$", AGENT_EXE)),
    # What is there: a regular file, reached through real folders, the very file the build step checked.
    ("a symlink to a file outside", lambda t: t.replace(CORE, lambda p: p.symlink_to(t.outside)),
     found("a symlink" + NOT_REGULAR)),
    ("a symlink to a key", lambda t: t.replace(CORE, lambda p: p.symlink_to(t.keys / "release.pem")),
     found("a symlink" + NOT_REGULAR)),
    ("a symlink inside", lambda t: t.replace(CORE, lambda p: p.symlink_to(t.place(OPS))),
     found("a symlink" + NOT_REGULAR)),
    ("a symlinked target folder", lambda t: _symlinked_folder(t, t.r.target_dir / LINUX),
     found(rf"reached through a symlink or a file \({LINUX}: ", AGENT)),
    ("a symlinked release folder", lambda t: _symlinked_folder(t, t.place(CORE).parent),
     found(rf"reached through a symlink or a file \({LINUX}/release: ", AGENT)),
    ("a folder", lambda t: t.replace(CORE, lambda p: p.mkdir()), found("a folder" + NOT_REGULAR)),
    ("a FIFO", lambda t: t.replace(CORE, os.mkfifo), found("a FIFO" + NOT_REGULAR)),
    ("a socket", lambda t: t.replace(CORE, _socket), found("a socket" + NOT_REGULAR)),
    ("a device file", lambda t: t.replace(CORE, _device), found("a device file" + NOT_REGULAR)),
    ("no file", lambda t: t.place(CORE).unlink(), found("not there$")),
    ("replaced since, same bytes", lambda t: _replace_file(t.place(CORE), _content(CORE)), found(CHECKED)),
    ("rewritten in place since", lambda t: _rewrite_in_place(t.place(CORE)), found(CHECKED)),
    ("rewritten, its time put back", lambda t: _rewrite_keeping_its_time(t.place(CORE)), found(CHECKED)),
    ("two binaries, one file", _same_file_twice, rf"^{re.escape(OPS)}: '.*' is the same file as {re.escape(CORE)}$"),
    # Which binaries: every declared one, once, and no other.
    ("an undeclared binary", lambda t: _undeclared(t, f"bin/{LINUX}/evil"),
     recorded(f"recorded 'bin/{LINUX}/evil', which is not a declared binary")),
    ("a name out of bin/", lambda t: _undeclared(t, "bin/../keys/release.pem"),
     recorded(r"recorded 'bin/\.\./keys/release\.pem', which is not a declared binary")),
    ("a binary of another target", lambda t: _undeclared(t, f"bin/{WINDOWS}/ransomeye-core.exe"),
     recorded(rf"recorded 'bin/{WINDOWS}/ransomeye-core\.exe', which is not a declared binary")),
    ("one recorded twice", lambda t: t.binaries.append(dict(t.entry(CORE))), recorded(f"recorded '{CORE}' twice")),
    ("one not recorded", lambda t: t.binaries.remove(t.entry(CORE)), recorded(f"did not record where {CORE} is")),
]  # fmt: skip


@pytest.mark.parametrize("mutate, message", [c[1:] for c in HOSTILE_BINARIES], ids=[c[0] for c in HOSTILE_BINARIES])
def test_a_build_record_cannot_make_the_caller_take_another_file(
    tree: _Tree, mutate: Callable[[_Tree], object], message: str
) -> None:
    """A record rewritten (or a target directory changed) inside the sandbox: refused, nothing placed or touched."""
    mutate(tree)
    before = _state(tree.top)
    with pytest.raises(VerificationError, match=message):
        _take(tree)
    assert not tree.r.bin_root.exists() or not any(tree.r.bin_root.rglob("*")), "nothing placed in staging"
    assert _state(tree.top) == before, "nothing outside staging was touched"


MALFORMED_RECORDS: list[tuple[str, dict[str, object], str]] = [
    ("no binaries", {"binaries": None}, "binaries must be a list"),
    ("a mapping", {"binaries": {CORE: "/x"}}, "binaries must be a list"),
    ("a path that is no string", {"binaries": [_entry(path=5)]}, "binaries must be a list"),
    ("an identity that is no number", {"binaries": [_entry(inode="1")]}, "binaries must be a list"),
    ("a flag for a number", {"binaries": [_entry(size=True)]}, "binaries must be a list"),
    ("a field more", {"binaries": [_entry(mode=0o755)]}, "binaries must be a list"),
    ("a field missing", {"binaries": [{"product": CORE, "path": "/x"}]}, "binaries must be a list"),
    ("products, hashed inside", {"products": {CORE: "0" * 64}}, "records products"),
]


@pytest.mark.parametrize("fields, message", [c[1:] for c in MALFORMED_RECORDS], ids=[c[0] for c in MALFORMED_RECORDS])
def test_a_malformed_build_record_is_refused(tree: _Tree, fields: dict[str, object], message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        _take(tree, **fields)
    assert not tree.r.bin_root.exists()


def test_the_binaries_are_copied_once_into_staging_and_hashed_there(tree: _Tree) -> None:
    """The honest record: each binary lands in bin/<target>/<file>, a file of its own (nothing cargo or another run
    does to the target directory afterwards reaches it), executable, recorded with the hash of its bytes there."""
    before = _state(tree.r.target_dir)
    products = _take(tree)
    declared = {e["product"] for e in tree.binaries}
    assert set(products) == declared and len(declared) == 9
    for product, sha in products.items():
        placed = tree.r.staging / product
        st = placed.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert st.st_nlink == 1 and st.st_ino != tree.place(product).stat().st_ino, "a copy, not another name"
        assert placed.read_bytes() == _content(product) and sha == hashlib.sha256(_content(product)).hexdigest()
    assert _state(tree.r.target_dir) == before, "cargo's files are untouched (still two names each)"


def test_prebuilt_binaries_are_taken_from_their_folder(tree: _Tree) -> None:
    prebuilt = tree.top / "prebuilt"
    for e in tree.binaries:
        _, target, file = str(e["product"]).split("/")
        (prebuilt / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tree.place(str(e["product"])), prebuilt / target / file)
        e.update({"path": str(prebuilt / target / file), **_identity(prebuilt / target / file)})
    tree.r = dataclasses.replace(tree.r, prebuilt=prebuilt)
    products = _take(tree)
    assert products[CORE] == hashlib.sha256(_content(CORE)).hexdigest()
    assert (tree.r.staging / CORE).read_bytes() == _content(CORE)


def test_a_binary_changed_while_it_is_copied_is_refused_and_nothing_stays(
    tree: _Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process writing the file during the copy: the copy is refused, and every binary placed is removed."""
    real = os.copy_file_range
    core = tree.place(CORE).stat().st_ino

    def copy_and_write(src: int, dst: int, count: int, *args: int) -> int:
        copied = real(src, dst, count, *args)
        if os.fstat(src).st_ino == core:
            _rewrite_in_place(tree.place(CORE))
        return copied

    monkeypatch.setattr(os, "copy_file_range", copy_and_write)
    monkeypatch.setattr(pipeline, "workers", lambda jobs=None: 1)  # one after another: some are placed before
    with pytest.raises(VerificationError, match="changed while it was copied"):
        _take(tree)
    assert not any(p.is_file() for p in tree.r.bin_root.rglob("*")), "nothing placed in staging"


def test_a_target_directory_given_through_a_symlink_is_the_folder_the_step_saw(tree: _Tree) -> None:
    """The caller's --target-dir may be spelled through a symlink: the step saw (and recorded) the folder it names."""
    alias = tree.top / "alias"
    alias.symlink_to(tree.r.target_dir)
    tree.r = dataclasses.replace(tree.r, target_dir=alias)
    assert _take(tree)[CORE] == hashlib.sha256(_content(CORE)).hexdigest()
