"""Authenticode signing of a real PE file, checked with the stock ``osslsigncode verify`` and run under wine.

The PE file is a hello-world compiled with mingw-w64 for the session; the keys
are development keys made by :func:`ensure_dev_codesign` in a temporary folder.
Each refusal of :func:`load_codesigner` is a case of a table that breaks one
file of a copy of those keys.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import re
import shutil
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from release import authenticode
from release.authenticode import (
    CA_CERT,
    CA_KEY,
    CA_NAME,
    DEV_FILES,
    LEAF_CERT,
    LEAF_KEY,
    LEAF_NAME,
    MAX_CERT_TABLE,
    READ_CHUNK,
    RSA_BITS,
    CodeSigner,
    SigningTemplate,
    attach_signature,
    ensure_dev_codesign,
    extract_signature,
    is_pe,
    load_codesigner,
    sign_pe,
    sign_pe_streamed,
    signed_digests,
    signing_template,
    strip_signature,
    unsigned_sha256,
    verify_pe,
    verify_pe_streamed,
)
from release.cargo import find_toolchain
from release.errors import BadInputError, SigningError, ToolchainError, VerificationError
from release.keys import DEV_MARKER
from release.products import load_workspace

EPOCH = 1_700_000_000  # Tue Nov 14 22:13:20 2023 UTC
MINGW = shutil.which("x86_64-w64-mingw32-gcc")
WINE = shutil.which("wine64") or ("/usr/lib/wine/wine64" if os.path.exists("/usr/lib/wine/wine64") else None)
HELLO_C = '#include <stdio.h>\nint main(void) { puts("%s"); return 0; }\n'


def _compile(folder: Path, text: str) -> Path:
    if MINGW is None:
        pytest.skip("needs x86_64-w64-mingw32-gcc (Debian gcc-mingw-w64-x86-64)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hello.c").write_text(HELLO_C % text)
    exe = folder / "hello.exe"
    subprocess.run(
        [MINGW, "-O2", "-s", "-Wl,--no-insert-timestamp", "-o", str(exe), str(folder / "hello.c")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return exe


@pytest.fixture(scope="session")
def pe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsigned PE32+ hello-world."""
    return _compile(tmp_path_factory.mktemp("pe"), "hello")


@pytest.fixture(scope="session")
def devkeys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    assert ensure_dev_codesign(keys) == list(DEV_FILES)
    return keys


@pytest.fixture(scope="session")
def signer(devkeys: Path) -> CodeSigner:
    return load_codesigner(devkeys)


@pytest.fixture(scope="session")
def signed(pe: Path, signer: CodeSigner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "signed.exe"
    sign_pe(signer, pe, out, EPOCH)
    return out


def _stock_verify(path: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["osslsigncode", "verify", "-CAfile", str(ca), "-in", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _text_section(data: bytes) -> tuple[int, int]:
    """(file offset, size) of the ``.text`` section's raw data."""
    pe = int.from_bytes(data[0x3C:0x40], "little")
    count = int.from_bytes(data[pe + 6 : pe + 8], "little")
    table = pe + 24 + int.from_bytes(data[pe + 20 : pe + 22], "little")
    for i in range(count):
        entry = data[table + 40 * i : table + 40 * (i + 1)]
        if entry[:8].rstrip(b"\0") == b".text":
            return int.from_bytes(entry[20:24], "little"), int.from_bytes(entry[16:20], "little")
    raise AssertionError("no .text section")


# --- development keys ----------------------------------------------------------


def test_dev_keys_are_four_files_with_private_keys_0600(devkeys: Path) -> None:
    for name in (CA_KEY, LEAF_KEY):
        assert (devkeys / name).stat().st_mode & 0o777 == 0o600, name
    assert (devkeys / DEV_MARKER).exists()
    assert ensure_dev_codesign(devkeys) == [], "a complete folder is left alone"


def test_dev_certificates_are_a_code_signing_chain(devkeys: Path) -> None:
    ca = x509.load_pem_x509_certificate((devkeys / CA_CERT).read_bytes())
    leaf = x509.load_pem_x509_certificate((devkeys / LEAF_CERT).read_bytes())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert ExtendedKeyUsageOID.CODE_SIGNING in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_NAME
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == LEAF_NAME
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    for cert in (ca, leaf):
        assert cert.not_valid_before_utc.year == 2020 and cert.not_valid_after_utc.year == 2040
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072


def test_partial_folder_without_marker_is_refused(devkeys: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy2(devkeys / CA_CERT, keys / CA_CERT)
    with pytest.raises(BadInputError, match=r"lacks codesign-ca\.key, codesign\.key, codesign\.crt"):
        ensure_dev_codesign(keys)
    assert sorted(p.name for p in keys.iterdir()) == [CA_CERT], "nothing was added"


def test_dev_folder_gets_its_missing_files_consistently(devkeys: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(devkeys, keys)
    (keys / LEAF_CERT).unlink()
    (keys / CA_CERT).unlink()
    assert ensure_dev_codesign(keys) == [CA_CERT, LEAF_CERT]
    assert (keys / LEAF_KEY).read_bytes() == (devkeys / LEAF_KEY).read_bytes()
    load_codesigner(keys)


@pytest.mark.parametrize(
    ("remove", "refusal"),
    [
        ([CA_KEY], "codesign-ca.key: missing, but codesign-ca.pem, codesign.crt made with it remain"),
        ([CA_KEY, CA_CERT], "codesign-ca.key: missing, but codesign.crt made with it remain"),
        ([LEAF_KEY], "codesign.key: missing, but its certificate .*codesign.crt remains"),
    ],
)
def test_dev_folder_that_cannot_be_completed_is_refused(
    devkeys: Path, tmp_path: Path, remove: list[str], refusal: str
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(devkeys, keys)
    for name in remove:
        (keys / name).unlink()
    with pytest.raises(BadInputError, match=refusal):
        ensure_dev_codesign(keys)
    assert not any((keys / name).exists() for name in remove), "nothing was made"


# --- signing and verifying ---------------------------------------------------------


def test_stock_osslsigncode_accepts_the_signature(signed: Path, devkeys: Path) -> None:
    proc = _stock_verify(signed, devkeys / CA_CERT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Signature verification: ok" in proc.stdout
    assert "Signing time: Nov 14 22:13:20 2023 GMT" in proc.stdout, "the signing time is the epoch"
    assert "Text description: RansomEye" in proc.stdout
    assert "Timestamp is not available" in proc.stdout, "no timestamp server was asked"
    verify_pe(signed, devkeys / CA_CERT)
    verify_pe(signed, devkeys / CA_CERT, at=EPOCH)


def test_signing_twice_gives_the_same_bytes(pe: Path, signer: CodeSigner, signed: Path, tmp_path: Path) -> None:
    again = tmp_path / "elsewhere" / "again.exe"
    sign_pe(signer, pe, again, EPOCH)
    assert again.read_bytes() == signed.read_bytes()
    assert signed.stat().st_mode & 0o777 == 0o755, "an executable stays executable"
    later = tmp_path / "later.exe"
    sign_pe(signer, pe, later, EPOCH + 1)
    assert later.read_bytes() != signed.read_bytes(), "the epoch is the signing time"


def _flip_code_byte(signed: Path, dst: Path) -> Path:
    data = bytearray(signed.read_bytes())
    offset, size = _text_section(bytes(data))
    data[offset + size // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def _other_ca(tmp_path: Path) -> Path:
    other = tmp_path / "other-keys"
    ensure_dev_codesign(other)
    return other / CA_CERT


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("flipped byte in .text", "MISMATCH"),
        ("another CA", "certificate"),
        ("unsigned", "No signature found"),
    ],
)
def test_tampered_or_foreign_signature_is_rejected(
    case: str, reason: str, signed: Path, pe: Path, devkeys: Path, tmp_path: Path
) -> None:
    ca = devkeys / CA_CERT
    target = signed
    if case == "flipped byte in .text":
        target = _flip_code_byte(signed, tmp_path / "flipped.exe")
    elif case == "another CA":
        ca = _other_ca(tmp_path)
    else:
        target = pe
    proc = _stock_verify(target, ca)
    assert proc.returncode != 0, f"{case}: stock osslsigncode must reject\n{proc.stdout}"
    with pytest.raises(VerificationError, match=reason) as err:
        verify_pe(target, ca)
    assert str(target) in err.value.message


def test_signing_refuses_a_time_outside_the_certificate(pe: Path, signer: CodeSigner, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="outside the validity"):
        sign_pe(signer, pe, tmp_path / "out.exe", 1_500_000_000)
    assert not (tmp_path / "out.exe").exists()


def test_signing_refuses_a_file_that_is_not_pe(signer: CodeSigner, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("MZ but not a program\n")
    with pytest.raises(BadInputError, match="not a Windows PE file"):
        sign_pe(signer, text, tmp_path / "out.exe", EPOCH)


def test_missing_osslsigncode_names_the_package(
    pe: Path, signer: CodeSigner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolchainError) as err:
        sign_pe(signer, pe, tmp_path / "out.exe", EPOCH)
    assert err.value.hint == "apt-get install osslsigncode"


def test_signed_program_still_runs_under_wine(signed: Path, tmp_path: Path) -> None:
    if WINE is None:
        pytest.skip("needs wine64 (Debian wine64)")
    env = {**os.environ, "WINEDEBUG": "-all", "WINEPREFIX": str(tmp_path / "wine")}
    try:
        proc = subprocess.run([WINE, str(signed)], capture_output=True, text=True, timeout=300, env=env, check=False)
    finally:
        server = Path(WINE).with_name("wineserver")
        if server.exists():  # this prefix's server only
            subprocess.run([str(server), "-k"], env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "hello"


# --- transplanting a signature -----------------------------------------------------


def test_signature_transplant_reproduces_the_signed_file(signed: Path, pe: Path, devkeys: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped.exe"
    strip_signature(signed, stripped)
    assert stripped.read_bytes() == pe.read_bytes(), "stripping gives back the unsigned file"
    sig = tmp_path / "hello.exe.p7"
    extract_signature(signed, sig)
    rebuilt = tmp_path / "rebuilt.exe"
    attach_signature(pe, sig, rebuilt, devkeys / CA_CERT, at=EPOCH)
    assert rebuilt.read_bytes() == signed.read_bytes()
    verify_pe(rebuilt, devkeys / CA_CERT)


def test_signature_of_other_bytes_or_ca_is_not_attached(signed: Path, pe: Path, devkeys: Path, tmp_path: Path) -> None:
    sig = tmp_path / "hello.exe.p7"
    extract_signature(signed, sig)
    other = _compile(tmp_path / "other", "hellO")
    with pytest.raises(VerificationError, match="MISMATCH"):
        attach_signature(other, sig, tmp_path / "out.exe", devkeys / CA_CERT)
    with pytest.raises(VerificationError, match="certificate"):
        attach_signature(pe, sig, tmp_path / "out.exe", _other_ca(tmp_path))
    assert not (tmp_path / "out.exe").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file left"


def test_an_unsigned_file_has_no_signature_to_extract(pe: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no signature"):
        extract_signature(pe, tmp_path / "sig.p7")
    assert not (tmp_path / "sig.p7").exists()


# --- the unsigned form, in-process (signed_digests) ------------------------------------


def _slow_checksum(data: bytes, field: int) -> int:
    """The PE CheckSum as osslsigncode computes it (the oracle): the file's words, its CheckSum ``field`` read as
    zeros, summed one by one with each carry folded back in, plus the length (a last odd byte left out)."""
    data = data[:field] + bytes(4) + data[field + 4 :] if field >= 0 else data
    total = 0
    for i in range(0, len(data) - 1, 2):
        total += data[i] | data[i + 1] << 8
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(data) - len(data) % 2


def _pe_image(plus: bool, body: bytes, *, tail: bytes = b"", e_lfanew: int = 0x80, checksum: bool = True) -> bytes:
    """A PE32+ (``plus``) or PE32 file, unsigned: one ``.text`` section holding ``body``, then ``tail`` (an overlay).

    Not a program to run; a file laid out as a linker lays one out, which
    ``osslsigncode`` signs, verifies and strips. Its CheckSum is right unless
    ``checksum`` is false (then 0, as some linkers leave it).
    """
    opt_size, align, headers_size = (240 if plus else 224), 0x200, 0x400
    raw = body + b"\0" * (-len(body) % align)
    image = 0x1000 + -(-len(raw) // 0x1000) * 0x1000
    coff = struct.pack("<HHIIIHH", 0x8664 if plus else 0x14C, 1, 0, 0, 0, opt_size, 0x22 if plus else 0x102)
    common = (0x1000, align, 6, 0, 0, 0, 6, 0, 0, image, headers_size, 0, 3, 0x8160)
    if plus:
        opt = struct.pack("<HBBIIIIIQ", 0x20B, 14, 0, len(raw), 0, 0, 0x1000, 0x1000, 0x140000000)
        opt += struct.pack("<IIHHHHHHIIIIHH", *common) + struct.pack("<QQQQII", 1 << 20, 4096, 1 << 20, 4096, 0, 16)
    else:
        opt = struct.pack("<HBBIIIIIII", 0x10B, 14, 0, len(raw), 0, 0, 0x1000, 0x1000, 0, 0x400000)
        opt += struct.pack("<IIHHHHHHIIIIHH", *common) + struct.pack("<IIIIII", 1 << 20, 4096, 1 << 20, 4096, 0, 16)
    opt += bytes(16 * 8)  # the data directories, all empty
    assert len(opt) == opt_size
    section = struct.pack("<8sIIIIIIHHI", b".text", len(body), 0x1000, len(raw), headers_size, 0, 0, 0, 0, 0x60000020)
    dos = bytearray(e_lfanew)
    dos[:2], dos[0x3C:0x40] = b"MZ", e_lfanew.to_bytes(4, "little")
    head = bytes(dos) + b"PE\0\0" + coff + opt + section
    data = bytearray(head + bytes(headers_size - len(head)) + raw + tail)
    if checksum:
        data[e_lfanew + 88 : e_lfanew + 92] = _slow_checksum(bytes(data), e_lfanew + 88).to_bytes(4, "little")
    return bytes(data)


def _summing_to_ffff(plus: bool) -> bytes:
    """A PE file whose words (its CheckSum as 0) sum to a multiple of 0xFFFF: folded, 0xFFFF and not 0."""
    body = bytearray(bytes(range(256)) * 8 + b"\0\0")  # the last word, at an even offset, is set below
    draft = _pe_image(plus, bytes(body), checksum=False)
    words = sum(int.from_bytes(draft[i : i + 2], "little") for i in range(0, len(draft), 2))
    body[-2:] = (-words % 0xFFFF).to_bytes(2, "little")
    data = _pe_image(plus, bytes(body))
    assert _slow_checksum(data, 0x80 + 88) - len(data) == 0xFFFF
    return data


def _rust_pe(folder: Path) -> Path:
    """A hello-world built by the Rust toolchain the release uses for Windows (stripped, as the release profile)."""
    try:
        tc = find_toolchain(load_workspace(Path(__file__).resolve().parents[1]), WINDOWS_TARGET)
    except ToolchainError as e:
        pytest.skip(f"needs a Rust toolchain for {WINDOWS_TARGET}: {e.message}")
    (folder / "hello.rs").write_text('fn main() { println!("hello"); }\n')
    exe = folder / "hello-rust.exe"
    subprocess.run(
        [str(tc.rustc), "--edition", "2021", "-O", "-C", "strip=symbols", "--target", WINDOWS_TARGET,
         "-C", f"linker={tc.linker}", "-C", "link-arg=-Wl,--no-insert-timestamp",
         "-o", str(exe), str(folder / "hello.rs")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return exe


WINDOWS_TARGET = "x86_64-pc-windows-gnu"
UNSIGNED: dict[str, Callable[[pytest.FixtureRequest, Path], bytes]] = {
    # case: the unsigned file (given the test's fixtures and a folder to build in)
    "mingw-w64 PE32+": lambda request, _: request.getfixturevalue("pe").read_bytes(),
    "Rust PE32+": lambda _, tmp: _rust_pe(tmp).read_bytes(),
    "PE32": lambda _, __: _pe_image(False, b"\xc3" * 3000),
    "PE32+": lambda _, __: _pe_image(True, b"\xc3" * 3000),
    "e_lfanew odd": lambda _, __: _pe_image(True, b"\xc3" * 3000, e_lfanew=0x81),
    "longer than a read": lambda _, __: _pe_image(True, random.Random(1).randbytes(READ_CHUNK + 12345)),
    "size not a multiple of 8": lambda _, __: _pe_image(False, b"\xc3" * 3000, tail=b"odd"),
    "CheckSum 0": lambda _, __: _pe_image(True, b"\xc3" * 3000, checksum=False),
    "words sum to 0xFFFF": lambda _, __: _summing_to_ffff(True),
    "PE32 words sum to 0xFFFF": lambda _, __: _summing_to_ffff(False),
}


@pytest.mark.parametrize("wrong_checksum", [False, True], ids=["as signed", "stored CheckSum wrong"])
@pytest.mark.parametrize("case", list(UNSIGNED))
def test_unsigned_hash_is_osslsigncode_remove_signature(
    case: str,
    wrong_checksum: bool,
    request: pytest.FixtureRequest,
    signer: CodeSigner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The property that matters: the in-process hash is the SHA-256 of what the stock tool writes, in one read."""
    unsigned = tmp_path / "unsigned.exe"
    unsigned.write_bytes(UNSIGNED[case](request, tmp_path))
    signed = tmp_path / "signed.exe"
    sign_pe(signer, unsigned, signed, EPOCH)
    if wrong_checksum:  # osslsigncode strips it all the same, writing the right CheckSum
        data = bytearray(signed.read_bytes())
        e = int.from_bytes(data[0x3C:0x40], "little")
        data[e + 88 : e + 92] = bytes(a ^ b for a, b in zip(data[e + 88 : e + 92], b"\x01\x02\0\0", strict=True))
        signed.write_bytes(bytes(data))
    stripped = tmp_path / "stripped.exe"
    strip_signature(signed, stripped)
    passes: list[int] = []
    one_pass = authenticode._one_pass

    def counted(*args: Any) -> tuple[str, str, int]:
        passes.append(1)
        return one_pass(*args)

    monkeypatch.setattr(authenticode, "_one_pass", counted)
    digests = signed_digests(signed)
    assert digests.unsigned_sha256 == hashlib.sha256(stripped.read_bytes()).hexdigest()
    assert digests.sha256 == hashlib.sha256(signed.read_bytes()).hexdigest()
    assert len(passes) == (2 if wrong_checksum else 1), "one read, a second only when the CheckSum was wrong"
    assert unsigned_sha256(signed) == digests.unsigned_sha256
    if len(unsigned.read_bytes()) % 8 == 0 and case != "CheckSum 0":
        assert stripped.read_bytes() == unsigned.read_bytes(), "signing then stripping gives the file back"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000).map(lambda b: b"MZ" + b[: len(b) // 2 * 2]), st.data())
def test_checksum_summed_in_pieces_is_the_word_by_word_one(data: bytes, draw: st.DataObject) -> None:
    """``_sum16`` over pieces cut anywhere, then folded, equals osslsigncode's word-by-word sum with carries folded."""
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
    with mock.patch.object(authenticode, "_SUM_PIECE", draw.draw(st.integers(1, 600)) * 2):
        words = sum(authenticode._sum16(data[a:b], a) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True))
    assert authenticode._checksum(words, len(data)) == _slow_checksum(data, -8)


def test_checksum_folds_a_multiple_of_ffff_to_ffff() -> None:
    data = b"\xff\xff" * 1000 + b"MZ" + (0xFFFF - 0x5A4D).to_bytes(2, "little")
    assert _slow_checksum(data, -8) == 0xFFFF + len(data)
    assert authenticode._checksum(authenticode._sum16(data, 0), len(data)) == 0xFFFF + len(data)


E_LFANEW = 0x80  # in _pe_image's files
ENTRY = E_LFANEW + 24 + 112 + 4 * 8  # PE32+: the certificate table's data directory entry


def _set(data: bytes, at: int, value: int, width: int = 4) -> bytes:
    out = bytearray(data)
    out[at : at + width] = value.to_bytes(width, "little")
    return bytes(out)


def _table(data: bytes) -> tuple[int, int]:
    offset, size = struct.unpack_from("<II", data, ENTRY)
    return offset, size


def _misaligned(s: bytes) -> bytes:
    at, _ = _table(s)
    return _set(s[:at] + b"JUNK" + s[at:], ENTRY, at + 4)


def _table_at(at: int) -> Callable[[bytes, bytes], bytes]:
    def move(s: bytes, _: bytes) -> bytes:
        return _set(_set(s, ENTRY, at), ENTRY + 4, len(s) - at)

    return move


def _huge_table(_: bytes, u: bytes) -> bytes:
    length = MAX_CERT_TABLE + 8
    return _set(_set(u + struct.pack("<IHH", length, 0x200, 2) + bytes(length - 8), ENTRY, len(u)), ENTRY + 4, length)


def _unpadded(s: bytes, _: bytes) -> bytes:
    at, size = _table(s)
    return _set(_set(s[:-4], ENTRY + 4, size - 4), at, size - 4 - 3)


HOSTILE: dict[str, tuple[str, Callable[[bytes, bytes], bytes]]] = {
    # case: (what the refusal says, how the signed file s, or its unsigned original u, becomes the hostile file)
    "empty file": ("truncated DOS header", lambda s, u: b""),
    "a text file": ("truncated DOS header", lambda s, u: b"hello\n"),
    "no MZ": ("no DOS header (MZ)", lambda s, u: b"ZM" + s[2:]),
    "truncated headers": ("truncated headers", lambda s, u: s[:0x100]),
    "e_lfanew past the end": ("truncated PE header", lambda s, u: _set(s[:0x200], 0x3C, 0x400)),
    "e_lfanew far away": ("e_lfanew 0x40000000 is out of range", lambda s, u: _set(s, 0x3C, 1 << 30)),
    "e_lfanew into the DOS header": ("e_lfanew 0x20 is out of range", lambda s, u: _set(s, 0x3C, 0x20)),
    "no PE signature": ("no PE signature at e_lfanew 0x80", lambda s, u: _set(s, E_LFANEW, 0x45504F4E)),
    "a ROM image": ("neither PE32", lambda s, u: _set(s, E_LFANEW + 24, 0x107, 2)),
    "optional header too small": ("holds no certificate table entry", lambda s, u: _set(s, E_LFANEW + 20, 96, 2)),
    "four data directories": ("NumberOfRvaAndSizes is 4", lambda s, u: _set(s, E_LFANEW + 24 + 108, 4)),
    "no signature": ("no signature", lambda s, u: u),
    "table of size 0": ("is empty or nowhere", lambda s, u: _set(s, ENTRY + 4, 0)),
    "table at offset 0": ("is empty or nowhere", lambda s, u: _set(s, ENTRY, 0)),
    "table past the end": ("runs past the end of the file", lambda s, u: _set(s, ENTRY + 4, _table(s)[1] + 8)),
    "table of 4 GiB": ("runs past the end of the file", lambda s, u: _set(s, ENTRY + 4, 0xFFFFFFF8)),
    "data after the table": ("does not end the file: 8 bytes follow it", lambda s, u: s + bytes(8)),
    "table in the middle": ("does not end the file", lambda s, u: _set(s, ENTRY, 0x400)),
    "table over the headers": ("overlaps the headers (the first 1024 bytes)", _table_at(0x200)),
    "table over a section": ("overlaps the data of section 1", _table_at(0x600)),
    "table misaligned": ("is not 8-byte aligned", lambda s, u: _misaligned(s)),
    "table over 1 MiB": (f"is larger than {MAX_CERT_TABLE} bytes", _huge_table),
    "entry of 7 bytes": ("an entry of 7 bytes at 0", lambda s, u: _set(s, _table(s)[0], 7)),
    "entry longer than the table": ("which does not fit", lambda s, u: _set(s, _table(s)[0], _table(s)[1] + 8)),
    "entry not PKCS#7": ("holds no PKCS#7 signature", lambda s, u: _set(s, _table(s)[0] + 6, 1, 2)),
    "last entry unpadded": ("not padded to 8 bytes", _unpadded),
}


@pytest.fixture(scope="session")
def signed_image(signer: CodeSigner, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A signed PE32+ file made by _pe_image, and the unsigned file it was made from."""
    folder = tmp_path_factory.mktemp("image")
    unsigned = _pe_image(True, b"\xc3" * 3000)
    (folder / "unsigned.exe").write_bytes(unsigned)
    sign_pe(signer, folder / "unsigned.exe", folder / "signed.exe", EPOCH)
    return (folder / "signed.exe").read_bytes(), unsigned


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pe_files_are_refused(case: str, signed_image: tuple[bytes, bytes], tmp_path: Path) -> None:
    phrase, make = HOSTILE[case]
    hostile = tmp_path / "hostile.exe"
    hostile.write_bytes(make(*signed_image))
    with pytest.raises(BadInputError) as err:
        signed_digests(hostile)
    assert f"{hostile}: not an Authenticode-signed PE file: " in err.value.message
    assert phrase in err.value.message, err.value.message
    assert err.value.hint
    assert [p.name for p in tmp_path.iterdir()] == ["hostile.exe"], "nothing written"


def test_what_is_no_readable_regular_file_is_refused_unread(signed_image: tuple[bytes, bytes], tmp_path: Path) -> None:
    huge = tmp_path / "huge.exe"  # sparse: refused before a byte past the headers is read
    huge.write_bytes(signed_image[0])
    os.truncate(huge, 5 << 30)
    fifo = tmp_path / "fifo.exe"  # opening it must not wait for a writer
    os.mkfifo(fifo)
    cases = {huge: "more than a PE file can hold", fifo: "not a regular file", tmp_path: "not a regular file"}
    cases[tmp_path / "missing.exe"] = "cannot be read (No such file or directory)"
    for path, phrase in cases.items():
        with pytest.raises(BadInputError, match=re.escape(phrase)):
            signed_digests(path)


# --- is_pe ---------------------------------------------------------------------------


def test_is_pe(pe: Path, signed: Path, tmp_path: Path) -> None:
    assert is_pe(pe) and is_pe(signed)
    head = pe.read_bytes()[:0x40]
    cases = {"empty": b"", "text": b"hello\n", "mz only": b"MZ" + b"\0" * 100, "truncated": head}
    cases["far pointer"] = b"MZ" + b"\0" * 58 + (1 << 30).to_bytes(4, "little") + b"PE\0\0"
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert not is_pe(tmp_path / name), name
    assert not is_pe(tmp_path / "missing") and not is_pe(tmp_path)


# --- load_codesigner's refusals --------------------------------------------------


def _cert(
    key: PrivateKeyTypes,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    subject: str = LEAF_NAME,
    issuer: str = CA_NAME,
    ca: bool = False,
    usage: tuple[bool, bool] = (True, False),  # digitalSignature, keyCertSign
    eku: list[x509.ObjectIdentifier] | None = None,
) -> bytes:
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RansomEye"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip

    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(usage[0], False, False, False, False, usage[1], usage[1], False, False), critical=True
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _private(keys: Path, name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((keys / name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _put_key(path: Path, key: PrivateKeyTypes, password: bytes | None = None) -> None:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    path.unlink()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    path.chmod(0o600)


def _leaf(keys: Path, **kw: object) -> bytes:
    return _cert(_private(keys, LEAF_KEY), _private(keys, CA_KEY), **kw)  # type: ignore[arg-type]


def _symlink_key(keys: Path) -> None:
    (keys / "real.key").write_bytes((keys / LEAF_KEY).read_bytes())
    (keys / LEAF_KEY).unlink()
    (keys / LEAF_KEY).symlink_to(keys / "real.key")


def damage_key(keys: Path) -> None:
    """The code-signing key with one CRT exponent changed: it parses and matches its certificate, its numbers
    disagree (a bit flipped on disk, or a broken generator)."""
    n = _private(keys, LEAF_KEY).private_numbers()
    bad = rsa.RSAPrivateNumbers(n.p, n.q, n.d, n.dmp1 ^ 2, n.dmq1, n.iqmp, n.public_numbers)
    _put_key(keys / LEAF_KEY, bad.private_key(unsafe_skip_rsa_key_validation=True))


def _fifo_key(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)  # read, it would wait for a writer forever


CODE_SIGNING = [ExtendedKeyUsageOID.CODE_SIGNING]
REFUSALS: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    # case: (file named, phrase, how the folder is broken)
    "Ed25519 key": (LEAF_KEY, "not an RSA key", lambda k: _put_key(k / LEAF_KEY, ed25519.Ed25519PrivateKey.generate())),
    "EC key": (LEAF_KEY, "not an RSA key", lambda k: _put_key(k / LEAF_KEY, ec.generate_private_key(ec.SECP256R1()))),
    "encrypted key": (LEAF_KEY, "encrypted", lambda k: _put_key(k / LEAF_KEY, _private(k, LEAF_KEY), b"secret")),
    "key mode 0644": (LEAF_KEY, "not 0600", lambda k: (k / LEAF_KEY).chmod(0o644)),
    "key is a link": (LEAF_KEY, "not a regular file", _symlink_key),
    "garbage key": (LEAF_KEY, "not a PEM private key", lambda k: (k / LEAF_KEY).write_text("nope\n")),
    "key whose numbers disagree": (LEAF_KEY, "damaged: its RSA numbers do not agree", damage_key),
    "missing key": (LEAF_KEY, "not found", lambda k: (k / LEAF_KEY).unlink()),
    "key is a FIFO": (
        LEAF_KEY,
        "not a regular file",
        lambda k: _fifo_key(k / LEAF_KEY),
    ),
    "key too large": (
        LEAF_KEY,
        "too large",
        lambda k: (k / LEAF_KEY).write_bytes(b"\n" * (authenticode.MAX_KEY_FILE + 1)),
    ),
    "missing certificate": (LEAF_CERT, "not found", lambda k: (k / LEAF_CERT).unlink()),
    "missing CA": (CA_CERT, "not found", lambda k: (k / CA_CERT).unlink()),
    "certificate of another key": (
        LEAF_CERT,
        "does not match the key",
        lambda k: (k / LEAF_CERT).write_bytes(
            _cert(rsa.generate_private_key(65537, 2048), _private(k, CA_KEY), eku=CODE_SIGNING)
        ),
    ),
    "leaf without codeSigning": (
        LEAF_CERT,
        "not for code signing",
        lambda k: (k / LEAF_CERT).write_bytes(_leaf(k, eku=[ExtendedKeyUsageOID.SERVER_AUTH])),
    ),
    "leaf without digitalSignature": (
        LEAF_CERT,
        "digitalSignature",
        lambda k: (k / LEAF_CERT).write_bytes(_leaf(k, usage=(False, False), eku=CODE_SIGNING)),
    ),
    "CA with ca=False": (
        CA_CERT,
        "cannot sign code",
        lambda k: (k / CA_CERT).write_bytes(
            _cert(_private(k, CA_KEY), _private(k, CA_KEY), subject=CA_NAME, usage=(False, True))
        ),
    ),
    "CA without keyCertSign": (
        CA_CERT,
        "cannot sign code",
        lambda k: (k / CA_CERT).write_bytes(
            _cert(_private(k, CA_KEY), _private(k, CA_KEY), subject=CA_NAME, ca=True, usage=(True, False))
        ),
    ),
    "leaf not issued by the CA": (
        LEAF_CERT,
        "not issued by the CA",
        lambda k: shutil.copy(_other_ca(k.parent), k / CA_CERT),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_load_codesigner_refuses(case: str, devkeys: Path, tmp_path: Path) -> None:
    named, phrase, breaks = REFUSALS[case]
    keys = tmp_path / "keys"
    shutil.copytree(devkeys, keys)
    breaks(keys)
    with pytest.raises(SigningError) as err:
        load_codesigner(keys)
    assert f"{keys / named}:" in err.value.message, err.value.message
    assert phrase in err.value.message, err.value.message
    assert err.value.hint, f"{case}: the refusal says how to fix it"


def _fresh_keys(devkeys: Path, tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    shutil.copytree(devkeys, keys)
    (keys / (LEAF_KEY + authenticode.CHECKED_SUFFIX)).unlink(missing_ok=True)
    return keys


def _checks_made(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each load of the code-signing key ran OpenSSL's RSA check (True) or was spared it (False)."""
    made: list[bool] = []
    real = serialization.load_pem_private_key

    def loading(data: bytes, password: bytes | None, **kw: Any) -> PrivateKeyTypes:
        made.append(not kw.get("unsafe_skip_rsa_key_validation", False))
        return real(data, password, **kw)

    monkeypatch.setattr(serialization, "load_pem_private_key", loading)
    return made


def test_the_rsa_check_runs_once_per_key(devkeys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _fresh_keys(devkeys, tmp_path)
    made = _checks_made(monkeypatch)
    first = load_codesigner(keys)
    note = keys / (LEAF_KEY + authenticode.CHECKED_SUFFIX)
    assert made == [True] and note.is_file() and not note.is_symlink()
    assert note.stat().st_mode & 0o777 == 0o600
    assert (keys / LEAF_KEY).read_bytes() not in note.read_bytes()
    assert load_codesigner(keys) == first and made == [True, False], "the same bytes are not checked again"
    damage_key(keys)  # another key at the same name: the note is of other bytes
    made.clear()
    with pytest.raises(SigningError, match="damaged: its RSA numbers do not agree"):
        load_codesigner(keys)
    assert made[0] is True, "checked in full"


def _note_linked(keys: Path, note: Path) -> None:
    elsewhere = keys.parent / "elsewhere"
    elsewhere.write_bytes(authenticode._check_note((keys / LEAF_KEY).read_bytes()))
    note.symlink_to(elsewhere)


def _right_note(keys: Path, note: Path, mode: int, owner: int | None = None) -> None:
    """The note of these key bytes, but with ``mode``, or another ``owner``'s: anyone could have written it."""
    note.write_bytes(authenticode._check_note((keys / LEAF_KEY).read_bytes()))
    note.chmod(mode)
    if owner is not None:
        os.chown(note, owner, -1)


def _note_fifo(keys: Path, note: Path) -> None:
    os.mkfifo(note)


# A note beside the key that is not one this process wrote: counts as none (the key is checked in full), is never
# followed, never blocks, and leaves everything outside the keys folder as it was.
HOSTILE_NOTES: dict[str, Callable[[Path, Path], object]] = {
    "a link to a right note": _note_linked,
    "a FIFO": _note_fifo,
    "a directory": lambda keys, note: note.mkdir(),
    "empty": lambda keys, note: note.write_bytes(b""),
    "garbage": lambda keys, note: note.write_bytes(os.urandom(4096)),
    "the note of other bytes": lambda keys, note: note.write_bytes(authenticode._check_note(b"another key")),
    "the right note, then more": lambda keys, note: note.write_bytes(
        authenticode._check_note((keys / LEAF_KEY).read_bytes()) + b"more"
    ),
    "the right note, open to others": lambda keys, note: _right_note(keys, note, 0o644),
    "the right note, another user's": lambda keys, note: _right_note(keys, note, 0o600, os.geteuid() + 4242),
    "the key's plain SHA-256": lambda keys, note: note.write_text(
        hashlib.sha256((keys / LEAF_KEY).read_bytes()).hexdigest() + "\n"
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_NOTES))
def test_a_note_not_written_for_these_key_bytes_spares_no_check(
    case: str, devkeys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _fresh_keys(devkeys, tmp_path)
    note = keys / (LEAF_KEY + authenticode.CHECKED_SUFFIX)
    HOSTILE_NOTES[case](keys, note)
    outside = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    made = _checks_made(monkeypatch)  # set after the case is made: only the loads of the code-signing key count
    load_codesigner(keys)
    assert made == [True]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == outside
    if not note.is_dir():  # replaced by the note of these bytes (a directory there is left: no note then)
        assert note.is_file() and not note.is_symlink()
        assert load_codesigner(keys) and made == [True, False]
    assert not list(keys.glob(".*.part"))


# --- signing and checking in-process, streamed --------------------------------------------


@pytest.fixture(scope="session")
def template(signer: CodeSigner) -> SigningTemplate:
    return signing_template(signer, EPOCH)


@pytest.mark.parametrize("case", list(UNSIGNED))
def test_streamed_signing_writes_what_osslsigncode_sign_writes(
    case: str, request: pytest.FixtureRequest, signer: CodeSigner, template: SigningTemplate, tmp_path: Path
) -> None:
    """The property that matters: byte for byte the stock tool's output, for every kind of PE file; and the
    in-process check accepts it, as the stock ``osslsigncode verify`` does."""
    unsigned = tmp_path / "unsigned.exe"
    unsigned.write_bytes(UNSIGNED[case](request, tmp_path))
    unsigned.chmod(0o755)
    stock, ours = tmp_path / "stock.exe", tmp_path / "out" / "ours.exe"
    sign_pe(signer, unsigned, stock, EPOCH)
    sign_pe_streamed(template, unsigned, ours)
    assert ours.read_bytes() == stock.read_bytes()
    assert ours.stat().st_mode & 0o777 == 0o755, "an executable stays executable"
    assert sorted(p.name for p in ours.parent.iterdir()) == ["ours.exe"], "no temporary file is left"
    verify_pe_streamed(template, ours)
    verify_pe_streamed(template, stock)


def test_the_template_is_osslsigncodes_checked_signature_of_a_stub(
    signer: CodeSigner, template: SigningTemplate
) -> None:
    assert (template.signer, template.epoch) == (signer, EPOCH)
    later = signing_template(signer, EPOCH + 1)
    assert later.der != template.der, "the signing time is in the signature"
    assert len(template.signature) == RSA_BITS // 8


def _digest_in_content(s: bytes, t: SigningTemplate) -> bytes:
    at, _ = _table(s)
    out = bytearray(s)
    out[at + 8 + t.der.index(t.content) + len(t.content) - 1] ^= 0x01  # the content's last byte: the file's digest
    return bytes(out)


def _message_digest(s: bytes, t: SigningTemplate) -> bytes:
    at, _ = _table(s)
    out = bytearray(s)
    out[at + 8 + t.der.index(t.message_digest) + 5] ^= 0x01
    return bytes(out)


def _rsa_signature(s: bytes, t: SigningTemplate) -> bytes:
    at, _ = _table(s)
    out = bytearray(s)
    out[at + 8 + t.der.index(t.signature) + 7] ^= 0x01
    return bytes(out)


def _certificate_byte(s: bytes, t: SigningTemplate) -> bytes:
    at, _ = _table(s)
    leaf = x509.load_pem_x509_certificate(t.signer.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    out = bytearray(s)
    out[at + 8 + t.der.index(leaf) + len(leaf) - 40] ^= 0x01  # inside the CA's signature of the leaf
    return bytes(out)


def _header_byte(s: bytes, _: SigningTemplate) -> bytes:
    return _set(s, E_LFANEW + 8, 0x12345678)  # the COFF TimeDateStamp: hashed, not a field signing sets


def _code_byte(s: bytes, _: SigningTemplate) -> bytes:
    out = bytearray(s)
    out[0x400 + 100] ^= 0x01
    return bytes(out)


def _checksum_field(s: bytes, _: SigningTemplate) -> bytes:
    return _set(s, E_LFANEW + 88, int.from_bytes(s[E_LFANEW + 88 : E_LFANEW + 92], "little") ^ 0x0100)


TAMPERED: dict[str, tuple[str, Callable[[bytes, SigningTemplate], bytes], bool]] = {
    # case: (what the refusal says, how the signed file becomes the tampered one, whether osslsigncode refuses it too)
    "a code byte": ("its Authenticode digest does not match", _code_byte, True),
    "a header byte": ("its Authenticode digest does not match", _header_byte, True),
    "the CheckSum": ("its CheckSum is wrong", _checksum_field, False),
    "the file's digest in the signature": ("its Authenticode digest does not match", _digest_in_content, True),
    "the message digest": ("its signature's message digest does not match", _message_digest, True),
    "the RSA signature": ("its RSA signature is wrong", _rsa_signature, True),
    "a certificate": ("not the one made with this signer", _certificate_byte, True),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_the_streamed_check_refuses_what_was_changed_after_signing(
    case: str, signed_image: tuple[bytes, bytes], template: SigningTemplate, devkeys: Path, tmp_path: Path
) -> None:
    phrase, tamper, stock_refuses = TAMPERED[case]
    path = tmp_path / "tampered.exe"
    path.write_bytes(tamper(signed_image[0], template))
    with pytest.raises(VerificationError) as err:
        verify_pe_streamed(template, path)
    assert phrase in err.value.message and str(path) in err.value.message, err.value.message
    if stock_refuses:
        assert _stock_verify(path, devkeys / CA_CERT).returncode != 0, f"{case}: osslsigncode accepts it"


def test_a_code_change_with_its_checksum_fixed_is_still_refused(
    signed_image: tuple[bytes, bytes], template: SigningTemplate, tmp_path: Path
) -> None:
    """The CheckSum, which anyone can recompute, is no protection: the digest catches the change."""
    data = bytearray(_code_byte(signed_image[0], template))
    field = E_LFANEW + 88
    data[field : field + 4] = _slow_checksum(bytes(data), field).to_bytes(4, "little")
    path = tmp_path / "tampered.exe"
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="its Authenticode digest does not match"):
        verify_pe_streamed(template, path)


def test_another_signers_file_is_refused(
    signed_image: tuple[bytes, bytes], template: SigningTemplate, tmp_path: Path
) -> None:
    other = tmp_path / "other-keys"
    ensure_dev_codesign(other)
    theirs = signing_template(load_codesigner(other), EPOCH)
    (tmp_path / "unsigned.exe").write_bytes(signed_image[1])
    sign_pe_streamed(theirs, tmp_path / "unsigned.exe", tmp_path / "theirs.exe")
    verify_pe_streamed(theirs, tmp_path / "theirs.exe")
    with pytest.raises(VerificationError, match="its RSA signature is wrong"):
        verify_pe_streamed(template, tmp_path / "theirs.exe")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_the_streamed_check_refuses_hostile_pe_files(
    case: str, signed_image: tuple[bytes, bytes], template: SigningTemplate, tmp_path: Path
) -> None:
    phrase, make = HOSTILE[case]
    hostile = tmp_path / "hostile.exe"
    hostile.write_bytes(make(*signed_image))
    with pytest.raises(VerificationError) as err:
        verify_pe_streamed(template, hostile)
    assert phrase in err.value.message, err.value.message
    assert [p.name for p in tmp_path.iterdir()] == ["hostile.exe"], "nothing written"


def test_streamed_signing_refuses_what_it_cannot_sign_and_leaves_the_output_as_it_was(
    signed_image: tuple[bytes, bytes], template: SigningTemplate, tmp_path: Path
) -> None:
    signed = tmp_path / "signed.exe"
    signed.write_bytes(signed_image[0])
    fifo = tmp_path / "fifo.exe"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.exe"
    huge.write_bytes(signed_image[1])
    os.truncate(huge, 5 << 30)
    text = tmp_path / "text.exe"
    text.write_text("hello\n")
    out = tmp_path / "out" / "dst.exe"
    out.parent.mkdir()
    out.write_bytes(b"what was there")
    cases = {
        signed: "it is signed already",
        fifo: "not a regular file",
        tmp_path / "out": "not a regular file",
        huge: "more than a PE file can hold",
        text: "truncated DOS header",
        tmp_path / "missing.exe": "cannot be read (No such file or directory)",
    }
    for path, phrase in cases.items():
        with pytest.raises(BadInputError, match=re.escape(phrase)):
            sign_pe_streamed(template, path, out)
        assert out.read_bytes() == b"what was there", path
        assert sorted(p.name for p in out.parent.iterdir()) == ["dst.exe"], path


def test_a_key_swapped_after_the_check_is_not_used(
    signed_image: tuple[bytes, bytes], devkeys: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(devkeys, keys)
    t = signing_template(load_codesigner(keys), EPOCH)
    _put_key(keys / LEAF_KEY, rsa.generate_private_key(65537, 2048))
    (tmp_path / "unsigned.exe").write_bytes(signed_image[1])
    with pytest.raises(SigningError, match="not the key of"):
        sign_pe_streamed(t, tmp_path / "unsigned.exe", tmp_path / "out.exe")
    assert not (tmp_path / "out.exe").exists()


def test_streamed_signing_and_checking_hold_a_few_chunks_whatever_the_size(
    template: SigningTemplate, tmp_path: Path
) -> None:
    """What flat memory rests on: a 40 MiB binary is signed and checked holding a few READ_CHUNKs at most."""
    unsigned = tmp_path / "big.exe"
    with unsigned.open("wb") as f:
        image = _pe_image(True, b"\xc3" * 3000)
        f.write(image)
        for _ in range(40):
            f.write(random.Random(len(image)).randbytes(READ_CHUNK))
    tracemalloc.start()
    try:
        sign_pe_streamed(template, unsigned, tmp_path / "signed.exe")
        verify_pe_streamed(template, tmp_path / "signed.exe")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * READ_CHUNK, f"{peak} bytes held"


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=4), cut=st.booleans()
)
def test_any_change_to_the_certificate_table_is_refused_with_a_message(
    edits: list[tuple[int, int]],
    cut: bool,
    signed_image: tuple[bytes, bytes],
    template: SigningTemplate,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Bytes of the signature changed anywhere (DER lengths and tags included): a VerificationError, never
    another exception, never an acceptance."""
    data = bytearray(signed_image[0])
    at, size = _table(bytes(data))
    for offset, xor in edits:
        data[at + offset % size] ^= xor
    if cut:
        data = data[: at + edits[0][0] % size]
    assume(bytes(data) != signed_image[0])  # edits at one place may cancel out
    path = tmp_path_factory.mktemp("fuzz") / "tampered.exe"
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError):
        verify_pe_streamed(template, path)


def test_a_file_other_than_the_one_to_sign_is_refused_before_it_is_signed(
    signed_image: tuple[bytes, bytes], template: SigningTemplate, tmp_path: Path
) -> None:
    """The codesign step hands the build's recorded hash: the bytes read for signing must be those, checked in the
    same read, before any signature is made; the output is left as it was."""
    unsigned = tmp_path / "unsigned.exe"
    unsigned.write_bytes(signed_image[1])
    out = tmp_path / "out" / "dst.exe"
    out.parent.mkdir()
    out.write_bytes(b"what was there")
    recorded = hashlib.sha256(signed_image[1]).hexdigest()
    unsigned.write_bytes(_set(signed_image[1], 0x400 + 8, 0xC3C3C3C4))  # swapped after the build recorded it
    with pytest.raises(VerificationError, match=f"is not the file to sign .*not {recorded}"):
        sign_pe_streamed(template, unsigned, out, expected_sha256=recorded)
    assert out.read_bytes() == b"what was there"
    assert sorted(p.name for p in out.parent.iterdir()) == ["dst.exe"]
    unsigned.write_bytes(signed_image[1])
    sign_pe_streamed(template, unsigned, out, expected_sha256=recorded)
    verify_pe_streamed(template, out)


def test_the_streamed_check_refuses_what_is_no_regular_file(template: SigningTemplate, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.exe"  # opening it must not wait for a writer
    os.mkfifo(fifo)
    cases = {fifo: "not a regular file", tmp_path: "not a regular file", tmp_path / "missing.exe": "cannot be read"}
    for path, phrase in cases.items():
        with pytest.raises(VerificationError, match=re.escape(phrase)):
            verify_pe_streamed(template, path)
