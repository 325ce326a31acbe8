"""The archives' compressor: a valid deflate stream whatever the input, the same bytes however it is fed,
stored where nothing compresses, and read back by the stock gzip, tar and unzip."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.archive import Entry, write_tar_gz, write_zip
from release.deflate import BLOCK, AdaptiveDeflate, GzipWriter, incompressible, stored_blocks

EPOCH = 1_700_000_000
TEXT = b"".join(b"let x%d = table[%d] + offset; // entry\n" % (i % 97, i % 13) for i in range(20000))


def _noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# A stream as a list of (kind, length): text compresses, noise does not, zeros compress to nothing.
segments = st.lists(
    st.tuples(st.sampled_from(["text", "noise", "zeros"]), st.integers(0, 3 * BLOCK)),
    max_size=6,
)


def _build(spec: list[tuple[str, int]], seed: int) -> bytes:
    out = bytearray()
    for n, (kind, length) in enumerate(spec):
        if kind == "text":
            start = (seed * 7919 + n) % len(TEXT)
            out += (TEXT[start:] + TEXT)[:length]
        elif kind == "noise":
            out += _noise(length, seed + n)
        else:
            out += bytes(length)
    return bytes(out)


def _deflate(data: bytes, cuts: list[int]) -> bytes:
    z = AdaptiveDeflate(6)
    out, at = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out.append(z.compress(data[at:cut]))
        at = max(at, cut)
    out.append(z.compress(data[at:]))
    out.append(z.flush())
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(spec=segments, seed=st.integers(0, 1000), cuts=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_the_stream_inflates_to_its_input_and_does_not_depend_on_the_writes(
    spec: list[tuple[str, int]], seed: int, cuts: list[int]
) -> None:
    data = _build(spec, seed)
    whole = _deflate(data, [])
    assert zlib.decompress(whole, -15) == data
    assert _deflate(data, cuts) == whole, "the bytes depend on how the input was split into writes"
    blocks = len(data) // BLOCK + 1
    assert len(whole) <= len(data) + 10 * blocks + 8, "never much larger than the input stored"
    if all(kind != "noise" or length == 0 for kind, length in spec):
        plain = zlib.compressobj(6, zlib.DEFLATED, -15)
        assert whole == plain.compress(data) + plain.flush(), "what compresses is zlib's own stream"


def test_noise_is_stored_and_text_is_compressed() -> None:
    noise, text = _noise(4 * BLOCK, 1), TEXT[: 4 * BLOCK]
    assert incompressible(noise) and not incompressible(text)
    for at in range(0, BLOCK, BLOCK // 8):  # packed data that begins or ends inside a block: compressed
        mixed = (noise[:at] + text[: BLOCK // 8] + noise)[:BLOCK]
        assert not incompressible(mixed), at
    assert not incompressible(_noise(100, 2)), "a short tail is compressed, as zlib would"
    z = AdaptiveDeflate(6)
    stream = z.compress(noise) + z.flush()
    assert stream == b"".join(stored_blocks(noise[at : at + BLOCK]) for at in range(0, len(noise), BLOCK)) + b"\x03\x00"
    z = AdaptiveDeflate(6)
    assert len(z.compress(text) + z.flush()) < len(text) // 3


def test_matches_reach_back_across_a_stored_run() -> None:
    """A compressed run after stored data is primed with the last 32 KiB, so a repeat across the switch still
    compresses."""
    text = TEXT[: 2 * BLOCK]
    data = text + _noise(BLOCK, 3) + text[-(32 << 10) :] * 2
    z = AdaptiveDeflate(6)
    stream = z.compress(data) + z.flush()
    assert zlib.decompress(stream, -15) == data
    assert len(stream) < len(text) // 3 + BLOCK + 2000


def test_misuse_is_refused() -> None:
    z = AdaptiveDeflate(6)
    with pytest.raises(ValueError, match="Z_FINISH"):
        z.flush(zlib.Z_SYNC_FLUSH)
    z.flush()
    assert z.flush() == b""
    with pytest.raises(ValueError, match="after flush"):
        z.compress(b"x")
    g = GzipWriter(io.BytesIO(), 6)
    g.close()
    with pytest.raises(ValueError, match="closed"):
        g.write(b"x")


def test_the_gzip_member_is_what_gzip_reads() -> None:
    data = TEXT[:BLOCK] + _noise(BLOCK + 17, 4)
    buf = io.BytesIO()
    with GzipWriter(buf, 6) as g:
        g.write(data)
        assert g.tell() == len(data)
    raw = buf.getvalue()
    assert raw[:10] == GzipWriter.HEADER
    assert gzip.decompress(raw) == data


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory: pytest.TempPathFactory) -> list[Entry]:
    root = tmp_path_factory.mktemp("mixed") / "pkg-1.0"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(TEXT[: 3 * BLOCK] + _noise(5 * BLOCK + 3, 5) + TEXT[: BLOCK // 2])
    (root / "README").write_bytes(b"read me\n")
    (root / "empty").write_bytes(b"")
    return [
        Entry("pkg-1.0", None, True),
        Entry("pkg-1.0/README", root / "README", False),
        Entry("pkg-1.0/bin", None, True),
        Entry("pkg-1.0/bin/tool", root / "bin" / "tool", True),
        Entry("pkg-1.0/empty", root / "empty", False),
    ]


def _run(*argv: str, cwd: Path | None = None) -> bytes:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    assert done.returncode == 0, f"{argv[0]} refused the archive: {done.stderr.decode(errors='replace')}"
    return done.stdout


def test_stock_gzip_and_tar_read_the_tar_gz(tmp_path: Path, mixed_tree: list[Entry]) -> None:
    out = tmp_path / "out.tar.gz"
    write_tar_gz(mixed_tree, out, EPOCH)
    _run("gzip", "-t", str(out))
    _run("tar", "-xzf", str(out), "-C", str(tmp_path))
    for e in mixed_tree:
        if e.source is not None:
            assert (tmp_path / e.arcname).read_bytes() == e.source.read_bytes()


def test_stock_unzip_reads_the_zip(tmp_path: Path, mixed_tree: list[Entry]) -> None:
    out = tmp_path / "out.zip"
    write_zip(mixed_tree, out, EPOCH)
    _run("unzip", "-tq", str(out))
    _run("unzip", "-q", str(out), "-d", str(tmp_path / "x"))
    for e in mixed_tree:
        if e.source is not None:
            assert (tmp_path / "x" / e.arcname).read_bytes() == e.source.read_bytes()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100))
def test_archives_of_mixed_content_are_the_same_bytes_twice(
    tmp_path_factory: pytest.TempPathFactory, mixed_tree: list[Entry], seed: int
) -> None:
    d = tmp_path_factory.mktemp("twice")
    for fmt, write in (("tar.gz", write_tar_gz), ("zip", write_zip)):
        first = write(mixed_tree, d / f"a.{fmt}", EPOCH + seed).digest
        second = write(mixed_tree, d / f"b.{fmt}", EPOCH + seed).digest
        assert (first.size, first.sha256, first.blake2b) == (second.size, second.sha256, second.blake2b)


def test_a_python_whose_zipfile_hides_its_compressor_is_refused(
    tmp_path: Path, mixed_tree: list[Entry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zip writer swaps zipfile's compressor through a private attribute; if a new Python moves it, the
    release stops with a clear message rather than writing other bytes than the rebuild expects."""
    import zipfile

    from release.errors import ToolchainError

    monkeypatch.setattr(zipfile, "_get_compressor", lambda *a: None)
    with pytest.raises(ToolchainError, match="zipfile"):
        write_zip(mixed_tree, tmp_path / "out.zip", EPOCH)
    assert not (tmp_path / "out.zip").exists()
