"""``SHA256SUMS``: its format, what it covers, the stock ``sha256sum -c``, the CLI and the parser."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from release.archive import ArtifactDigest, hash_file
from release.checksums import SUMS_NAME, covered_files, parse, render, write_hash_list
from release.errors import BadInputError, VerificationError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "release" / "manifests" / "generate_hash_list.py"
LINE_LEN = 64 + 2  # "<hex>  "

# A release folder as the pipeline leaves it: archives and their signatures are
# listed; the list itself, its signature, dot-files and in-toto metadata are not.
LISTED = {
    "ransomeye-core-1.0.0.tar.gz": b"core archive\n" * 1000,
    "ransomeye-core-1.0.0.tar.gz.minisig": b"untrusted comment: sig\n",
    "ransomeye-agent-windows-1.0.0.zip": b"PK\x03\x04" + bytes(range(256)),
    "ransomeye-dpi-1.0.0.tar.gz": b"",
    "minisign.pub": b"untrusted comment: key\n",
    "_inspect": b"a file of that name is an artifact like any other",
}
NOT_LISTED = {
    "SHA256SUMS.minisig": b"signature of the list",
    ".gitkeep": b"",
    ".SHA256SUMS.part": b"a crashed run's temp file",
    "package-core.1a2b3c4d.link": b"{}",
    "build.1a2b3c4d.link": b"{}",
    "root.layout": b"{}",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    d = tmp_path / "artifacts"
    d.mkdir()
    for name, data in {**LISTED, **NOT_LISTED}.items():
        (d / name).write_bytes(data)
    (d / SUMS_NAME).write_text("0" * 64 + "  stale-from-an-earlier-run\n")
    return d


def test_format_sorted_lf_two_spaces(release_dir: Path) -> None:
    digest = write_hash_list(release_dir)
    raw = (release_dir / SUMS_NAME).read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode().split("\n")[:-1]
    assert [line[LINE_LEN:] for line in lines] == sorted(LISTED)
    for line in lines:
        hexdigest, name = line[:64], line[LINE_LEN:]
        assert line[64:LINE_LEN] == "  "
        assert hexdigest == _sha(LISTED[name])
    assert raw == "".join(f"{_sha(LISTED[n])}  {n}\n" for n in sorted(LISTED)).encode()
    # The returned digest is the list's own, as written.
    assert digest.path == release_dir / SUMS_NAME
    assert digest.sha256 == _sha(raw) and digest.size == len(raw)
    assert not (release_dir / f".{SUMS_NAME}.part").exists()


def test_excludes_itself_its_signature_dot_files_and_in_toto_metadata(release_dir: Path) -> None:
    assert [p.name for p in covered_files(release_dir)] == sorted(LISTED)
    write_hash_list(release_dir)
    listed = parse((release_dir / SUMS_NAME).read_text(), SUMS_NAME)
    assert not set(listed) & (set(NOT_LISTED) | {SUMS_NAME})


def test_known_digests_are_trusted_not_rehashed(release_dir: Path) -> None:
    """A digest computed while writing is reused as is: the pipeline vouches for it, nothing re-reads the file."""
    archive = release_dir / "ransomeye-core-1.0.0.tar.gz"
    claimed = "f" * 64
    assert claimed != _sha(archive.read_bytes())
    known = [
        ArtifactDigest(archive, archive.stat().st_size, claimed, b""),
        # A digest of a file of the same name elsewhere is not this file's.
        ArtifactDigest(release_dir.parent / "minisign.pub", 1, "e" * 64, b""),
        # A digest of a file that is not in the folder adds nothing.
        ArtifactDigest(release_dir / "gone.tar.gz", 1, "d" * 64, b""),
    ]
    write_hash_list(release_dir, known)
    listed = parse((release_dir / SUMS_NAME).read_text(), SUMS_NAME)
    assert listed["ransomeye-core-1.0.0.tar.gz"] == claimed
    assert listed["minisign.pub"] == _sha(LISTED["minisign.pub"])
    assert "gone.tar.gz" not in listed
    # Every other file was hashed from its bytes.
    for name in set(LISTED) - {"ransomeye-core-1.0.0.tar.gz"}:
        assert listed[name] == _sha(LISTED[name])


def test_a_file_larger_than_one_chunk_is_hashed_whole(tmp_path: Path) -> None:
    data = os.urandom(1 << 16) * 40 + b"tail"  # 2.5 MiB: several read chunks
    (tmp_path / "big.tar.gz").write_bytes(data)
    write_hash_list(tmp_path)
    assert (tmp_path / SUMS_NAME).read_text() == f"{_sha(data)}  big.tar.gz\n"


def test_stock_sha256sum_accepts_the_list(release_dir: Path) -> None:
    write_hash_list(release_dir)
    proc = subprocess.run(
        ["sha256sum", "--strict", "-c", SUMS_NAME], cwd=release_dir, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(f"{n}: OK" for n in LISTED)


def test_stock_sha256sum_catches_a_tampered_file(release_dir: Path) -> None:
    write_hash_list(release_dir)
    with (release_dir / "ransomeye-dpi-1.0.0.tar.gz").open("ab") as f:
        f.write(b"\0")
    proc = subprocess.run(["sha256sum", "-c", SUMS_NAME], cwd=release_dir, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "ransomeye-dpi-1.0.0.tar.gz: FAILED" in proc.stdout


@pytest.mark.parametrize("kind", ["directory", "symlink", "backslash", "newline", "fifo"])
def test_something_that_cannot_be_listed_is_bad_input(tmp_path: Path, kind: str) -> None:
    (tmp_path / "ok.tar.gz").write_bytes(b"ok")
    if kind == "directory":
        (tmp_path / "sub").mkdir()
    elif kind == "symlink":
        (tmp_path / "link.tar.gz").symlink_to(tmp_path / "ok.tar.gz")
    elif kind == "backslash":
        (tmp_path / "a\\b.tar.gz").write_bytes(b"x")
    elif kind == "newline":
        (tmp_path / "a\nb.tar.gz").write_bytes(b"x")
    else:
        os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BadInputError):
        write_hash_list(tmp_path)
    assert not (tmp_path / SUMS_NAME).exists()


def test_an_empty_folder_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / ".gitkeep").write_bytes(b"")
    with pytest.raises(BadInputError, match="no artifacts to list"):
        write_hash_list(tmp_path)
    assert not (tmp_path / SUMS_NAME).exists()


def test_rewriting_replaces_the_list(release_dir: Path) -> None:
    first = write_hash_list(release_dir)
    (release_dir / "ransomeye-dpi-1.0.0.tar.gz").unlink()
    second = write_hash_list(release_dir)
    assert first.sha256 != second.sha256
    assert "ransomeye-dpi-1.0.0.tar.gz" not in (release_dir / SUMS_NAME).read_text()
    assert hash_file(release_dir / SUMS_NAME) == second


# --- the command line, as a user runs it -------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_writes_the_list(release_dir: Path, tmp_path: Path) -> None:
    proc = _cli(str(release_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {release_dir.resolve() / SUMS_NAME} ({len(LISTED)} entries)\n"
    assert proc.stderr == ""
    assert parse((release_dir / SUMS_NAME).read_text(), SUMS_NAME) == {n: _sha(d) for n, d in LISTED.items()}


def test_cli_relative_dir(release_dir: Path) -> None:
    proc = _cli(release_dir.name, cwd=release_dir.parent)
    assert proc.returncode == 0, proc.stderr
    assert (release_dir / SUMS_NAME).is_file()


def test_cli_missing_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    proc = _cli(str(missing), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"generate_hash_list: error: {missing}: not a directory\n"
    assert "Traceback" not in proc.stderr


def test_cli_empty_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no artifacts to list" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_usage_error_is_exit_2(tmp_path: Path) -> None:
    proc = _cli("a", "b", cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: generate_hash_list" in proc.stderr and "Traceback" not in proc.stderr


# --- the parser ----------------------------------------------------------------------

hexdigests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
file_names = st.text(min_size=1, max_size=40).filter(lambda s: not {"\n", "\r", "\\"} & set(s))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(file_names, hexdigests, min_size=1, max_size=8))
def test_parse_round_trips_render(hashes: dict[str, str]) -> None:
    text = render(hashes)
    assert parse(text, SUMS_NAME) == hashes
    assert list(parse(text, SUMS_NAME)) == sorted(hashes)
    assert text.count("\n") == len(hashes)


def test_parse_accepts_a_last_line_without_newline() -> None:
    assert parse(f"{'a' * 64}  x", SUMS_NAME) == {"x": "a" * 64}


GOOD = "a" * 64
MALFORMED = {
    "empty": "",
    "blank-line": f"{GOOD}  x\n\n",
    "blank-first-line": f"\n{GOOD}  x\n",
    "one-space": f"{GOOD} x\n",
    "binary-marker": f"{GOOD} *x\n",
    "tab": f"{GOOD}\tx\n",
    "no-name": f"{GOOD}  \n",
    "no-separator": f"{GOOD}\n",
    "short-digest": f"{'a' * 63}  x\n",
    "long-digest": f"{'a' * 65}  x\n",
    "uppercase-digest": f"{'A' * 64}  x\n",
    "non-hex-digest": f"{'g' * 64}  x\n",
    "leading-space": f" {GOOD}  x\n",
    "listed-twice": f"{GOOD}  x\n{'b' * 64}  x\n",
    "bsd-style": f"SHA256 (x) = {GOOD}\n",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(VerificationError) as e:
        parse(text, "where/SHA256SUMS")
    assert e.value.message.startswith("where/SHA256SUMS: ")


def test_parse_names_the_bad_line() -> None:
    with pytest.raises(VerificationError, match="line 2 is not"):
        parse(f"{GOOD}  x\nnonsense\n{GOOD}  y\n", SUMS_NAME)
