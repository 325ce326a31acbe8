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
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release import attest, inspection
from release.archive import Entry, write_tar_gz, write_zip
from release.pipeline import functionaries
from tests.conftest import EPOCH

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


def _read(data: bytes, fmt: str, tmp: Path) -> list[str]:
    path = tmp / f"fuzzed.{fmt}"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        expect = inspection.Expectation(path.name, None)
        return [m.name for m in inspection.read_archive(fd, path.name, fmt, len(data), expect)]
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
        _read(bytes(mutated), fmt, tmp_path)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tar.gz", "zip"]), st.binary(max_size=4096))
def test_archive_readers_accept_or_refuse_any_bytes(tmp_path: Path, fmt: str, raw: bytes) -> None:
    with contextlib.suppress(inspection.Refused):
        _read(raw, fmt, tmp_path)


def test_readers_return_every_member_of_an_honest_archive(tmp_path: Path) -> None:
    for fmt in ("tar.gz", "zip"):
        names = _read(_archive(fmt, tmp_path), fmt, tmp_path)
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
