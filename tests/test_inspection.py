"""The layout's inspection program as a program: what it may be, and its readers under fuzzing.

It must run on any customer's ``python3`` (3.8 or newer, standard library
only), from the layout's command (no brace: in-toto formats a failed
command's text), and its archive readers may only ever accept or raise
:class:`Refused` on any input, promptly.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release import attest, inspection
from release.archive import Entry, write_tar_gz, write_zip
from release.pipeline import functionaries
from tests.conftest import EPOCH, Repo

SOURCE = Path(inspection.__file__).read_text(encoding="utf-8")


def test_the_program_has_no_brace() -> None:
    assert "{" not in SOURCE and "}" not in SOURCE


def test_the_program_is_python_3_8_and_standard_library_only() -> None:
    tree = ast.parse(SOURCE, feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
    for name in ("removeprefix", "removesuffix", "file_digest"):
        assert name not in SOURCE, f"{name} needs a newer Python than 3.8"


def test_the_layout_carries_the_program_verbatim(tmp_path: Path) -> None:
    from tests.conftest import make_repo

    repo = make_repo(tmp_path / "ransomeye")
    keys = repo.keys
    layout = attest.build_layout(repo.ws, functionaries(keys), attest.expiry(1))
    (only,) = layout.inspect
    assert only.run[:5] == ["python3", "-I", "-S", "-c", SOURCE]
    config = inspection.Config(only.run[5])
    assert [b.id for b in config.bundles] == [b.id for b in repo.ws.bundles]
    assert config.allow_prebuilt is False
    assert "{" not in only.run[5], "the configuration holds lists only"


@given(st.text(max_size=300))
def test_marker_names_are_safe_file_names(reason: str) -> None:
    name = inspection.marker_name(reason)
    assert name.startswith(inspection.MARKER)
    assert len(name.encode("utf-8")) <= 255
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert ".link" not in name and "~" not in name and ".pyc" not in name
    assert not set(name) & set(':*?"<>|'), "FAT, exFAT and SMB refuse these in a name"
    assert not name.endswith((".", " ")), "FAT strips a final dot or space"
    assert not inspection.in_toto_excluded(name)
    assert inspection.shown(reason) == inspection.shown(reason).encode("ascii").decode()


@given(st.text(max_size=200))
def test_shown_text_is_printable_ascii(text: str) -> None:
    out = inspection.shown(text)
    assert all(" " <= c <= "~" for c in out)


def _archive(fmt: str, tmp: Path) -> bytes:
    top = tmp / "ransomeye-x-1.0.0"
    (top / "bin").mkdir(parents=True, exist_ok=True)
    (top / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    (top / "bin" / "readme.txt").write_text("hello\n" * 50)
    entries = [
        Entry(top.name, None),
        Entry(f"{top.name}/bin", None),
        Entry(f"{top.name}/bin/readme.txt", top / "bin" / "readme.txt"),
        Entry(f"{top.name}/bin/tool", top / "bin" / "tool", executable=True),
    ]
    out = tmp / f"a.{fmt}"
    (write_tar_gz if fmt == "tar.gz" else write_zip)(entries, out, EPOCH)
    return out.read_bytes()


def _read(data: bytes, fmt: str, tmp: Path, kept: bool = True) -> list[str]:
    """The members ``read_archive`` finds in ``data``: from memory as a kept archive, or read through a descriptor."""
    path = tmp / f"fuzzed.{fmt}"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        source = inspection.Source(fd, len(data), memoryview(data) if kept else None)
        expect = inspection.Expectation(path.name, None)
        return [m.name for m in inspection.read_archive(source, path.name, fmt, expect)]
    finally:
        os.close(fd)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tar.gz", "zip"]), st.data())
def test_archive_readers_accept_or_refuse_any_mutation(tmp_path: Path, fmt: str, data: st.DataObject) -> None:
    """A real archive with bytes flipped, cut or inserted: read as it is, or Refused; never another error."""
    original = _archive(fmt, tmp_path)
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if kind == "flip" and mutated:
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del mutated[at : at + data.draw(st.integers(1, 64))]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    with contextlib.suppress(inspection.Refused):
        _read(bytes(mutated), fmt, tmp_path, kept=data.draw(st.booleans()))


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tar.gz", "zip"]), st.binary(max_size=4096), st.booleans())
def test_archive_readers_accept_or_refuse_any_bytes(tmp_path: Path, fmt: str, raw: bytes, kept: bool) -> None:
    with contextlib.suppress(inspection.Refused):
        _read(raw, fmt, tmp_path, kept)


def test_readers_return_every_member_of_an_honest_archive(tmp_path: Path) -> None:
    for fmt, kept in (("tar.gz", True), ("tar.gz", False), ("zip", True), ("zip", False)):
        names = _read(_archive(fmt, tmp_path), fmt, tmp_path, kept)
        assert names == ["ransomeye-x-1.0.0", "ransomeye-x-1.0.0/bin", "ransomeye-x-1.0.0/bin/readme.txt",
                         "ransomeye-x-1.0.0/bin/tool"]  # fmt: skip


def test_stdlib_readers_agree_with_ours_on_an_honest_archive(tmp_path: Path) -> None:
    """What tarfile and zipfile list is what the inspection reads (and hashes)."""
    tar = _archive("tar.gz", tmp_path)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert [m.name for m in t] == _read(tar, "tar.gz", tmp_path)
    z = _archive("zip", tmp_path)
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        assert [i.filename.rstrip("/") for i in zf.infolist()] == _read(z, "zip", tmp_path)


def _run_main(folder: Path, argv: list[str]) -> list[str]:
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        assert inspection.main(argv) == 0
    finally:
        os.chdir(cwd)
    return sorted(p.name for p in folder.iterdir())


@settings(max_examples=100, deadline=2000)
@given(st.lists(st.lists(st.one_of(st.text(max_size=8), st.integers(), st.booleans()), max_size=4), max_size=12))
def test_a_malformed_configuration_fails_the_verification_with_a_reason(raw: list[list[object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        left = _run_main(Path(tmp), [json.dumps(raw)])
    assert left and all(name.startswith(inspection.MARKER) for name in left)


def test_a_marker_that_cannot_be_written_fails_the_inspection(tmp_path: Path) -> None:
    """On a file system that refuses the name, or with something standing at it, the refusal must not vanish."""
    (tmp_path / inspection.marker_name("the layout's inspection command has no configuration")).mkdir()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert inspection.main([]) == 1
    finally:
        os.chdir(cwd)


def test_main_always_exits_zero_and_names_the_reason(tmp_path: Path) -> None:
    assert _run_main(tmp_path, []) == [inspection.marker_name("the layout's inspection command has no configuration")]
    (tmp_path / ".." / "elsewhere").mkdir()
    for argv in (["not json"], ["[]"], ['[["schema", "other"]]']):
        for p in tmp_path.iterdir():
            p.unlink()
        left = _run_main(tmp_path, argv)
        assert len(left) == 1 and left[0].startswith(inspection.MARKER), left


# --- the archives are checked concurrently: the same findings, whatever the threads do -------------------------


def _folder(released: Repo, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the session's release folder and the configuration its layout passes the inspection."""
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    (folder / ".gitkeep").unlink(missing_ok=True)
    layout = json.loads((folder / "root.layout").read_text())
    return folder, str(layout["signed"]["inspect"][0]["run"][5])


def _archives(folder: Path, config: str) -> list[tuple[str, str]]:
    """Each bundle's packaging step and archive in the folder, in the configuration's order."""
    out = []
    for bundle in inspection.Config(config).bundles:
        (archive,) = folder.glob(f"{bundle.name}-*.{bundle.format}")
        out.append((bundle.step, archive.name))
    return out


def _failures(folder: Path, config: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The inspection's reasons, run in-process in ``folder`` (bounded: a hang fails the test)."""
    monkeypatch.chdir(folder)
    found: list[list[str]] = []
    runner = threading.Thread(target=lambda: found.append(inspection.Inspection(inspection.Config(config)).run()))
    runner.start()
    runner.join(120)
    assert not runner.is_alive(), "the inspection hangs"
    assert len(found) == 1, "the inspection raised"
    return found[0]


def _spoil(path: Path) -> None:
    """Flip one byte in the middle of ``path``: same size, another hash."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_an_honest_release_passes_kept_or_read_again_on_any_number_of_workers(
    released: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, config = _folder(released, tmp_path)
    for keep, workers in ((inspection.KEEP_BYTES, 2), (0, 2), (1 << 40, 1), (0, 1), (1 << 40, 8)):
        monkeypatch.setattr(inspection, "KEEP_BYTES", keep)
        monkeypatch.setattr(inspection, "cores", lambda workers=workers: workers)
        assert _failures(folder, config, monkeypatch) == []
    assert inspection.main([config]) == 0
    assert not [p for p in folder.iterdir() if p.name.startswith(inspection.MARKER)]


@pytest.mark.slow
def test_two_bad_archives_give_both_reasons_in_order_whatever_the_threads(
    released: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, config = _folder(released, tmp_path)
    archives = _archives(folder, config)
    bad = [archives[0], archives[-1]]
    for _, name in bad:
        _spoil(folder / name)
    want = [f"{name}: is not the archive the {step} step wrote (not unpacked)" for step, name in bad]
    for keep in (inspection.KEEP_BYTES, 0):
        monkeypatch.setattr(inspection, "KEEP_BYTES", keep)
        for workers in (1, 2, 3, 8, 2, 2):
            monkeypatch.setattr(inspection, "cores", lambda workers=workers: workers)
            assert _failures(folder, config, monkeypatch) == want
    assert inspection.main([config]) == 0
    markers = sorted(p.name for p in folder.iterdir() if p.name.startswith(inspection.MARKER))
    assert markers == sorted(inspection.marker_name(r) for r in want)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker killed on purpose
def test_a_fault_in_a_worker_is_a_refusal_never_an_acceptance_nor_a_hang(
    released: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in one archive's check names that archive; a worker that dies leaves its archive refused."""
    folder, config = _folder(released, tmp_path)
    archives = _archives(folder, config)
    real = inspection.check_archive

    def faulty(path: str, *args: object, **kwargs: object) -> object:
        if path == archives[1][1]:
            raise RuntimeError("a fault")
        if path == archives[2][1]:
            raise SystemExit(0)  # ends the worker's thread silently
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inspection, "check_archive", faulty)
    for workers in (1, 2, 4):
        monkeypatch.setattr(inspection, "cores", lambda workers=workers: workers)
        failures = _failures(folder, config, monkeypatch)
        assert f"{archives[1][0]}: not checked (RuntimeError: a fault)" in failures, failures
        assert f"{archives[2][0]}: not checked" in failures, failures
        if workers > 1:  # the other workers go on with the other archives, which pass
            assert len(failures) == 2, failures
        else:  # the only worker died: nothing after it is checked, so all of that is refused too
            assert len(failures) >= 2 and all(": not checked" in f for f in failures), failures
    monkeypatch.setattr(inspection, "cores", lambda: 2)
    assert inspection.main([config]) == 0
    assert [p for p in folder.iterdir() if p.name.startswith(inspection.MARKER)]
