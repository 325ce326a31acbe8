"""Signatures: stock minisign verifies them; any change, bad key or bad passphrase fails clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release import minisign
from release.archive import hash_file
from release.errors import BadInputError, SigningError, VerificationError
from release.keys import generate_key, passphrase_variable
from release.signers import load_role_key
from release.signing import (
    ensure_dev_keys,
    minisign_public,
    sign_digest,
    signature_path,
    verify_digest,
    write_minisign_pub,
)

ROOT = Path(__file__).resolve().parent.parent
MINISIGN = shutil.which("minisign")
needs_minisign = pytest.mark.skipif(MINISIGN is None, reason="minisign is installed by `make setup`")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    ensure_dev_keys(d)
    return d


def _artifact(tmp_path: Path, data: bytes = b"artifact bytes\n" * 1000) -> Path:
    p = tmp_path / "ransomeye-core-1.0.0.tar.gz"
    p.write_bytes(data)
    return p


def _minisign_verify(path: Path, keys: Path) -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run(
        [MINISIGN, "-V", "-m", str(path), "-p", str(keys / "release.minisign.pub")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@needs_minisign
def test_stock_minisign_verifies_and_shows_the_trusted_comment(tmp_path: Path, keys: Path) -> None:
    art = _artifact(tmp_path)
    sign_digest(load_role_key(keys, "release"), hash_file(art), "1.0.0", 1_700_000_000)
    proc = _minisign_verify(art, keys)
    assert proc.returncode == 0, proc.stderr
    assert "file:ransomeye-core-1.0.0.tar.gz\tversion:1.0.0" in proc.stdout


@needs_minisign
@pytest.mark.parametrize("offset", [0, 1, 7_000, -1])
def test_one_flipped_byte_fails_stock_minisign_and_ours(tmp_path: Path, keys: Path, offset: int) -> None:
    art = _artifact(tmp_path)
    key = load_role_key(keys, "release")
    sign_digest(key, hash_file(art), "1.0.0", 0)
    data = bytearray(art.read_bytes())
    data[offset] ^= 0x01
    art.write_bytes(bytes(data))
    assert _minisign_verify(art, keys).returncode != 0
    with pytest.raises(VerificationError, match="does not match"):
        verify_digest(minisign_public(key.public), hash_file(art))


@needs_minisign
def test_flipped_byte_in_signature_fails(tmp_path: Path, keys: Path) -> None:
    art = _artifact(tmp_path)
    sign_digest(load_role_key(keys, "release"), hash_file(art), "1.0.0", 0)
    sig = signature_path(art)
    lines = sig.read_text().split("\n")
    lines[3] = ("A" if lines[3][0] != "A" else "B") + lines[3][1:]  # the global signature
    sig.write_text("\n".join(lines))
    assert _minisign_verify(art, keys).returncode != 0


def test_trusted_comment_binds_the_file_name(tmp_path: Path, keys: Path) -> None:
    key = load_role_key(keys, "release")
    art = _artifact(tmp_path)
    sign_digest(key, hash_file(art), "1.0.0", 0)
    other = tmp_path / "ransomeye-dpi-1.0.0.tar.gz"
    other.write_bytes(art.read_bytes())
    shutil.copy(signature_path(art), signature_path(other))
    with pytest.raises(VerificationError, match="names another file"):
        verify_digest(minisign_public(key.public), hash_file(other))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: t[: len(t) // 2],
        lambda t: t.replace(t.split("\n")[1], "A" * 100),
        lambda t: t.replace(t.split("\n")[1], "RUQ" + "A" * 97),
    ],
    ids=["empty", "truncated", "all-zero", "all-zero-with-prehash-alg"],
)
def test_malformed_signatures_are_rejected(tmp_path: Path, keys: Path, mangle: object) -> None:
    key = load_role_key(keys, "release")
    art = _artifact(tmp_path)
    sign_digest(key, hash_file(art), "1.0.0", 0)
    sig = signature_path(art)
    assert callable(mangle)
    sig.write_text(mangle(sig.read_text()))
    with pytest.raises(VerificationError):
        verify_digest(minisign_public(key.public), hash_file(art))


def test_wrong_key_is_rejected(tmp_path: Path, keys: Path) -> None:
    art = _artifact(tmp_path)
    sign_digest(load_role_key(keys, "release"), hash_file(art), "1.0.0", 0)
    other = minisign_public(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError, match="another key"):
        verify_digest(other, hash_file(art))


def test_minisign_public_key_round_trips(keys: Path) -> None:
    key = load_role_key(keys, "release")
    text = (keys / "release.minisign.pub").read_text()
    decoded = minisign.MinisignPublicKey.decode(text, "release.minisign.pub")
    assert decoded.key_id == minisign_public(key.public).key_id
    assert decoded.key == key.public
    # Derived from the key alone: writing it again changes nothing.
    write_minisign_pub(keys, key.public)
    assert (keys / "release.minisign.pub").read_text() == text


def test_dev_keys_are_private_and_marked(keys: Path) -> None:
    for role in ("owner", "build", "release"):
        assert (keys / f"{role}.pem").stat().st_mode & 0o777 == 0o600
        assert (keys / f"{role}.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert (keys / "DEVELOPMENT-KEYS").exists()
    assert ensure_dev_keys(keys) == [], "idempotent: a second call creates nothing"


def test_dev_keys_never_mix_with_production_keys(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    generate_key(d, "owner")
    with pytest.raises(BadInputError, match="production keys"):
        ensure_dev_keys(d)


def test_group_readable_key_is_refused(keys: Path) -> None:
    os.chmod(keys / "release.pem", 0o640)
    with pytest.raises(SigningError, match="readable by group or others"):
        load_role_key(keys, "release")


def test_missing_key_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="release private key is missing") as err:
        load_role_key(tmp_path, "release")
    assert "make keys" in err.value.diagnostics()


def test_mismatched_public_key_is_refused(keys: Path) -> None:
    shutil.copy(keys / "build.pub", keys / "release.pub")
    with pytest.raises(SigningError, match="does not match"):
        load_role_key(keys, "release")


def test_encrypted_key_needs_the_right_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "keys"
    generate_key(d, "release", passphrase=b"correct horse")
    var = passphrase_variable("release")
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(SigningError, match="encrypted and no passphrase") as missing:
        load_role_key(d, "release")
    assert f"set {var}" in missing.value.diagnostics()
    monkeypatch.setenv(var, "wrong")
    with pytest.raises(SigningError, match="wrong passphrase") as err:
        load_role_key(d, "release")
    assert "wrong" not in str(err.value).replace("wrong passphrase", ""), "the passphrase is never echoed"
    monkeypatch.setenv(var, "correct horse")
    assert load_role_key(d, "release").role == "release"


def test_not_a_key_is_a_clear_error(keys: Path) -> None:
    (keys / "release.pem").write_text("not a key")
    with pytest.raises(SigningError, match="not a PKCS8 PEM private key"):
        load_role_key(keys, "release")
    rsa_like = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    (keys / "release.pem").write_bytes(rsa_like)
    with pytest.raises(SigningError):
        load_role_key(keys, "release")


def test_signer_cli_sign_and_verify(tmp_path: Path, keys: Path) -> None:
    art = _artifact(tmp_path)
    cli = [sys.executable, str(ROOT / "release" / "builder" / "signer.py")]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    ok = subprocess.run([*cli, "sign", str(art), "--keys-dir", str(keys)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    ok = subprocess.run(
        [*cli, "verify", str(art), "--pubkey", str(keys / "release.minisign.pub")], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    art.write_bytes(art.read_bytes() + b"x")
    bad = subprocess.run(
        [*cli, "verify", str(art), "--pubkey", str(keys / "release.minisign.pub")], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "does not match" in bad.stderr and "Traceback" not in bad.stderr
