"""The build lock, staging directories and the atomic publish of the release folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.errors import BuildBusyError
from release.staging import (
    LOCK_NAME,
    PREVIOUS_DIRNAME,
    STAGING_DIRNAME,
    build_lock,
    clean_stale,
    new_staging,
    publish,
)

ROOT = Path(__file__).resolve().parent.parent

# --- the build lock ------------------------------------------------------------

# Tries the lock once and reports, through the one error path every entry point uses.
TRY_LOCK = """
import sys, time
from pathlib import Path
from release.cli import run
from release.staging import build_lock

def main(argv):
    started = time.monotonic()
    try:
        with build_lock(Path(argv[0])):
            print("acquired", flush=True)
    finally:
        print(f"after {time.monotonic() - started:.3f}s", file=sys.stderr, flush=True)
    return 0

sys.exit(run("build", main))
"""

# Takes the lock, says so, and holds it until killed.
HOLD_LOCK = """
import sys, time
from pathlib import Path
from release.staging import build_lock

with build_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the build lock of ``tmp_path / "release"``."""
    proc = subprocess.Popen(
        _python(HOLD_LOCK, str(tmp_path / "release")), env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_lock_is_taken_and_released(tmp_path: Path) -> None:
    release_dir = tmp_path / "release"
    with build_lock(release_dir):
        assert (release_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with build_lock(release_dir):  # released at the end of the block
        pass


def test_lock_is_released_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), build_lock(tmp_path):
        raise RuntimeError("step failed")
    with build_lock(tmp_path):
        pass


def test_lock_is_exclusive_within_one_process(tmp_path: Path) -> None:
    with build_lock(tmp_path), pytest.raises(BuildBusyError), build_lock(tmp_path):
        pass


def test_second_build_in_another_process_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    release_dir = tmp_path / "release"
    with build_lock(release_dir):
        proc = subprocess.run(
            _python(TRY_LOCK, str(release_dir)), env=_env(), capture_output=True, text=True, timeout=30, check=False
        )
    assert proc.returncode == BuildBusyError.exit_code == 5
    assert proc.stdout == ""
    after, error, hint = proc.stderr.splitlines()  # the timing (printed first), then the error and its hint
    assert error == (
        f"build: error: another release build is running (pid {os.getpid()}); it holds {release_dir / LOCK_NAME}"
    )
    assert hint.startswith("  hint: ")
    assert "Traceback" not in proc.stderr
    # Fails fast: no waiting for the holder.
    assert float(after.removeprefix("after ").removesuffix("s")) < 1.0
    # The refused build did not take over the lock file.
    assert (release_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_held_lock_refuses_us_and_names_the_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(BuildBusyError) as e, build_lock(tmp_path / "release"):
        pass
    assert f"(pid {holder.pid})" in e.value.message
    assert e.value.hint is not None


def test_the_lock_dies_with_its_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    release_dir = tmp_path / "release"
    with pytest.raises(BuildBusyError), build_lock(release_dir):
        pass
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    # No stale-lock cleanup needed: the kernel released it with the process.
    with build_lock(release_dir):
        assert (release_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"


# --- staging directories -------------------------------------------------------------


def test_new_staging_directories_are_fresh_and_private(tmp_path: Path) -> None:
    a, b = new_staging(tmp_path), new_staging(tmp_path)
    assert a != b
    assert a.parent == b.parent == tmp_path / STAGING_DIRNAME
    assert a.is_dir() and not any(a.iterdir())
    assert a.name.startswith(f"run-{os.getpid()}-")


def test_clean_stale_removes_leftovers(tmp_path: Path) -> None:
    crashed = new_staging(tmp_path)
    (crashed / "out").mkdir()
    (crashed / "out" / "ransomeye-core-1.0.0.tar.gz").write_bytes(b"half written")
    (crashed / "out" / "ro").write_bytes(b"read-only")
    (crashed / "out" / "ro").chmod(0o444)
    aside = tmp_path / STAGING_DIRNAME / "run-1-deadbeef.old"  # the two-rename fallback's leftover
    aside.mkdir()
    (aside / "SHA256SUMS").write_text("x")
    removed = clean_stale(tmp_path)
    assert sorted(removed) == sorted([crashed, aside])
    assert list((tmp_path / STAGING_DIRNAME).iterdir()) == []
    assert clean_stale(tmp_path) == []


def test_clean_stale_keeps_the_running_builds_own_directory(tmp_path: Path) -> None:
    """A run creates its staging first and cleans the others after: never a moment with no trace of a run."""
    crashed = new_staging(tmp_path)
    (crashed / "half").write_bytes(b"x")
    own = new_staging(tmp_path)
    assert clean_stale(tmp_path, keep=own) == [crashed]
    assert list((tmp_path / STAGING_DIRNAME).iterdir()) == [own]


def test_clean_stale_without_staging_is_a_no_op(tmp_path: Path) -> None:
    assert clean_stale(tmp_path) == []
    assert not (tmp_path / STAGING_DIRNAME).exists()


def test_clean_stale_reports_only_what_it_removed(tmp_path: Path) -> None:
    (tmp_path / STAGING_DIRNAME).mkdir()
    stray = tmp_path / STAGING_DIRNAME / "run-1-deadbeef.part"
    stray.write_bytes(b"x")
    removed = clean_stale(tmp_path)
    assert all(not p.exists() for p in removed), "a path reported as removed is still there"


# --- publish ------------------------------------------------------------------------------


def _release(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _state(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


OLD = {"ransomeye-core-0.9.0.tar.gz": b"old core", "SHA256SUMS": b"old sums", ".gitkeep": b"keep me\n"}
NEW = {"ransomeye-core-1.0.0.tar.gz": b"new core", "SHA256SUMS": b"new sums"}


def test_publish_replaces_the_release(tmp_path: Path) -> None:
    artifacts = _release(tmp_path / "release" / "artifacts", OLD)
    staging = new_staging(tmp_path / "release")
    out = _release(staging / "out", NEW)
    publish(out, artifacts)
    assert _state(artifacts) == {**NEW, ".gitkeep": b"keep me\n"}
    assert not out.exists()
    # The previous release is kept whole in .previous/ (a reader inside it sees it complete), nothing else.
    assert _state(tmp_path / "release" / PREVIOUS_DIRNAME) == OLD
    leftovers = [p for p in (tmp_path / "release").rglob("*") if p.is_file()]
    assert len(leftovers) == (len(NEW) + 1) + len(OLD)


def test_publish_keeps_a_gitkeep_the_new_release_has(tmp_path: Path) -> None:
    artifacts = _release(tmp_path / "artifacts", OLD)
    out = _release(tmp_path / "out", {**NEW, ".gitkeep": b"new keep\n"})
    publish(out, artifacts)
    assert _state(artifacts)[".gitkeep"] == b"new keep\n"


def test_publish_into_a_missing_artifacts_dir(tmp_path: Path) -> None:
    artifacts = tmp_path / "release" / "artifacts"
    artifacts.parent.mkdir()
    out = _release(tmp_path / "release" / STAGING_DIRNAME / "run" / "out", NEW)
    publish(out, artifacts)
    assert _state(artifacts) == NEW
    assert not out.exists()


def test_publish_twice_in_a_row(tmp_path: Path) -> None:
    artifacts = _release(tmp_path / "artifacts", OLD)
    for version in ("1.0.0", "1.0.1"):
        out = _release(tmp_path / f"out-{version}", {f"ransomeye-core-{version}.tar.gz": version.encode()})
        publish(out, artifacts)
        assert set(_state(artifacts)) == {f"ransomeye-core-{version}.tar.gz", ".gitkeep"}


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=10).filter(
    lambda s: not s.startswith(".")
)
file_sets = st.dictionaries(names, st.binary(max_size=16), max_size=6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=file_sets, new=file_sets, gitkeep=st.booleans())
def test_publish_leaves_exactly_the_new_set(
    tmp_path: Path, old: dict[str, bytes], new: dict[str, bytes], gitkeep: bool
) -> None:
    base = tmp_path / f"case-{time.monotonic_ns()}"
    artifacts = _release(base / "artifacts", {**old, **({".gitkeep": b"k"} if gitkeep else {})})
    out = _release(base / "out", new)
    publish(out, artifacts)
    assert _state(artifacts) == {**new, **({".gitkeep": b"k"} if gitkeep else {})}
    assert sorted(p.name for p in base.iterdir()) == [PREVIOUS_DIRNAME, "artifacts"]
    assert _state(base / PREVIOUS_DIRNAME) == {**old, **({".gitkeep": b"k"} if gitkeep else {})}
    shutil.rmtree(base)


# --- readers during publish ------------------------------------------------------------------

FILES_PER_RELEASE = 4
PUBLISHES = 150


def _generation_files(g: int) -> dict[str, bytes]:
    return {f"gen{g:04d}-file{i}": b"x" * i for i in range(FILES_PER_RELEASE)}


def test_readers_only_ever_see_a_complete_release(tmp_path: Path) -> None:
    """A reader listing ``artifacts/`` while releases are published sees one complete release, never a mix.

    The reader holds the directory it lists open, so its inode number cannot
    be reused meanwhile, and each directory is published once: the reader can
    tell "``artifacts/`` was this directory for the whole listing" (it must be
    complete) from "this directory was swapped out while I read it" (the
    xfail test below).
    """
    release_dir = tmp_path / "release"
    artifacts = _release(release_dir / "artifacts", {**_generation_files(0), ".gitkeep": b""})
    complete = {frozenset({*_generation_files(g), ".gitkeep"}) for g in range(PUBLISHES + 1)}
    stop = threading.Event()
    seen: list[frozenset[str]] = []
    torn: list[list[str]] = []
    swapped_out = 0
    errors: list[BaseException] = []

    def reader() -> None:
        nonlocal swapped_out
        try:
            while not stop.is_set():
                fd = os.open(artifacts, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    listed = os.listdir(fd)
                    still_published = os.fstat(fd).st_ino == os.stat(artifacts).st_ino
                finally:
                    os.close(fd)
                if not still_published:
                    swapped_out += 1
                elif frozenset(listed) in complete:
                    seen.append(frozenset(listed))
                else:
                    torn.append(sorted(listed))
        except BaseException as e:
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads as much as the GIL allows
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for g in range(1, PUBLISHES + 1):
            staging = new_staging(release_dir)
            out = _release(staging / "out", _generation_files(g))
            publish(out, artifacts)
            shutil.rmtree(staging)
    finally:
        stop.set()
        thread.join(timeout=30)
        sys.setswitchinterval(interval)
    assert not errors, errors  # e.g. FileNotFoundError: artifacts/ was missing for a moment
    assert not torn, f"a reader saw an incomplete or mixed release: {torn[:3]}"
    assert len(set(seen)) > 2, "the reader did not overlap the publishes; the test proved nothing"
    assert frozenset(_state(artifacts)) == frozenset({*_generation_files(PUBLISHES), ".gitkeep"})
    print(f"{len(seen)} complete listings, {swapped_out} of a release swapped out while being listed")


def test_a_reader_inside_the_previous_release_sees_it_complete(tmp_path: Path) -> None:
    old = {"ransomeye-core-0.9.0.tar.gz": b"old", "SHA256SUMS": b"old"}
    artifacts = _release(tmp_path / "artifacts", old)
    out = _release(tmp_path / "out", NEW)
    fd = os.open(artifacts, os.O_RDONLY | os.O_DIRECTORY)  # a reader started listing
    try:
        publish(out, artifacts)
        listed = set(os.listdir(fd))  # ... and reads the entries
    finally:
        os.close(fd)
    assert listed in (set(old), set(NEW)), f"the reader saw {sorted(listed)}"
