"""OpenPGP: stock gpgv and sqv accept our keys and signatures and reject any change; our reader refuses hostile keys."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from release import openpgp
from release.archive import hash_file, hash_stream, renamed
from release.errors import BadInputError, SigningError, VerificationError
from release.signers import RoleKey
from release.signing import sign_openpgp_all

GPGV = shutil.which("gpgv")
SQV = shutil.which("sqv")
needs_gpgv = pytest.mark.skipif(GPGV is None, reason="gpgv is installed by `make setup`")
needs_sqv = pytest.mark.skipif(SQV is None, reason="sqv is installed by `make setup`")
SIGNED_AT = 1_700_000_000
BIG = (b"RansomEye artifact bytes\n" * 110_000)[: 2 * openpgp.CHUNK + 12_345]  # several read chunks


def _key(seed: int = 1) -> RoleKey:
    return RoleKey.from_private("release", Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def _isolated_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME and GNUPGHOME are fresh temporary folders (nothing touches ~/.gnupg)."""
    home, gnupg = tmp_path / "home", tmp_path / "gnupghome"
    for d in (home, gnupg):
        d.mkdir(mode=0o700, exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "GNUPGHOME": str(gnupg), "LC_ALL": "C"}


def _binary_keyring(asc: Path) -> Path:
    """gpgv reads a binary keyring only (it refuses the armored file): the dearmored key, next to the .asc."""
    gpg = asc.with_suffix(".gpg")
    gpg.write_bytes(openpgp.dearmor(asc.read_text()))
    return gpg


def _gpgv(tmp_path: Path, asc: Path, sig: Path, data: Path) -> subprocess.CompletedProcess[str]:
    assert GPGV is not None
    return subprocess.run(
        [GPGV, "--keyring", str(_binary_keyring(asc).resolve()), str(sig), str(data)],
        env=_isolated_env(tmp_path), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _sqv(tmp_path: Path, asc: Path, sig: Path, data: Path) -> subprocess.CompletedProcess[str]:
    assert SQV is not None
    return subprocess.run(
        [SQV, "--keyring", str(asc), str(sig), str(data)],
        env=_isolated_env(tmp_path), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


Verifier = Callable[[Path, Path, Path, Path], subprocess.CompletedProcess[str]]
TOOLS = [pytest.param(_gpgv, marks=needs_gpgv, id="gpgv"), pytest.param(_sqv, marks=needs_sqv, id="sqv")]


def _signed(tmp_path: Path, key: RoleKey | None = None) -> tuple[Path, Path, Path]:
    """keys/release.asc, an artifact and its .asc signature, made in ``tmp_path``."""
    key = key or _key()
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    asc = openpgp.write_public_key(keys, key, openpgp.DEV_KEY_CREATED)
    art = tmp_path / "ransomeye-core-1.0.0.tar.gz"
    art.write_bytes(BIG)
    sig = tmp_path / "ransomeye-core-1.0.0.tar.gz.asc"
    sig.write_bytes(openpgp.detached_signature(key, art, SIGNED_AT, openpgp.DEV_KEY_CREATED).encode())
    return asc, art, sig


def _rearmored(asc_text: str, change: Callable[[bytearray], bytes | bytearray], kind: str) -> str:
    """The armored block with its binary changed by ``change`` and a correct CRC (so the change itself is judged)."""
    data = bytearray(openpgp.dearmor(asc_text))
    return openpgp.armor(bytes(change(data)), kind)


def _flip(offset: int) -> Callable[[bytearray], bytearray]:
    def change(data: bytearray) -> bytearray:
        data[offset] ^= 0x01
        return data

    return change


@pytest.mark.parametrize("verify", TOOLS)
def test_stock_tools_accept_the_signature_and_name_our_fingerprint(tmp_path: Path, verify: Verifier) -> None:
    asc, art, sig = _signed(tmp_path)
    proc = verify(tmp_path, asc, sig, art)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fpr = openpgp.read_public_key(asc.read_text(), str(asc)).fingerprint_hex
    assert fpr in proc.stdout + proc.stderr


@pytest.mark.parametrize("verify", TOOLS)
@pytest.mark.parametrize("offset", [0, openpgp.CHUNK, len(BIG) - 1])
def test_stock_tools_reject_a_flipped_byte_in_the_file(tmp_path: Path, verify: Verifier, offset: int) -> None:
    asc, art, sig = _signed(tmp_path)
    data = bytearray(art.read_bytes())
    data[offset] ^= 0x01
    art.write_bytes(bytes(data))
    assert verify(tmp_path, asc, sig, art).returncode != 0


# Offsets in the binary signature packet (2-byte header): 10..13 the hashed creation time, -1 the last byte of s,
# -40 a byte of r.
@pytest.mark.parametrize("verify", TOOLS)
@pytest.mark.parametrize("offset", [12, -1, -40], ids=["hashed-time", "s", "r"])
def test_stock_tools_reject_a_flipped_byte_in_the_signature(tmp_path: Path, verify: Verifier, offset: int) -> None:
    asc, art, sig = _signed(tmp_path)
    sig.write_text(_rearmored(sig.read_text(), _flip(offset), openpgp.SIGNATURE_BLOCK))
    assert verify(tmp_path, asc, sig, art).returncode != 0


@pytest.mark.parametrize("verify", TOOLS)
def test_stock_tools_reject_a_signature_by_another_key(tmp_path: Path, verify: Verifier) -> None:
    asc, art, sig = _signed(tmp_path)
    other = _key(2)
    sig.write_text(openpgp.detached_signature(other, art, SIGNED_AT, openpgp.DEV_KEY_CREATED))
    assert verify(tmp_path, asc, sig, art).returncode != 0
    # ...and the other key's own export accepts it (the refusal is about the key, not the signature).
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_asc = openpgp.write_public_key(other_dir, other, openpgp.DEV_KEY_CREATED)
    assert verify(tmp_path, other_asc, sig, art).returncode == 0


@needs_gpgv
def test_gpgv_refuses_the_armored_key_as_a_keyring(tmp_path: Path) -> None:
    """Documents why the tests dearmor: gpgv's --keyring takes a binary keyring only."""
    assert GPGV is not None
    asc, art, sig = _signed(tmp_path)
    proc = subprocess.run(
        [GPGV, "--keyring", str(asc.resolve()), str(sig), str(art)],
        env=_isolated_env(tmp_path), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0


def test_keys_and_signatures_are_byte_identical_when_made_twice(tmp_path: Path) -> None:
    key = _key()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pa = openpgp.write_public_key(a, key, openpgp.DEV_KEY_CREATED)
    pb = openpgp.write_public_key(b, key, openpgp.DEV_KEY_CREATED)
    assert pa.read_bytes() == pb.read_bytes()
    art = tmp_path / "art"
    art.write_bytes(BIG)
    first = openpgp.detached_signature(key, art, SIGNED_AT, openpgp.DEV_KEY_CREATED)
    assert first == openpgp.detached_signature(key, art, SIGNED_AT, openpgp.DEV_KEY_CREATED)
    assert "Version:" not in first and "Comment:" not in first


def test_read_public_key_round_trips_what_we_write() -> None:
    key = _key()
    text = openpgp.armor(openpgp.transferable_public_key(key, openpgp.USER_ID, 1_600_000_000), "PGP PUBLIC KEY BLOCK")
    read = openpgp.read_public_key(text, "release.asc")
    assert read.public == openpgp.raw_public(key.public)
    assert read.created == 1_600_000_000
    assert read.user_id == openpgp.USER_ID
    assert read.fingerprint == openpgp.fingerprint(read.public, read.created)
    assert read.key_id == read.fingerprint[-8:]


def test_an_existing_export_of_the_same_key_is_kept(tmp_path: Path) -> None:
    key = _key()
    path = openpgp.write_public_key(tmp_path, key, 1_600_000_000)
    before = path.read_bytes()
    assert openpgp.write_public_key(tmp_path, key, openpgp.DEV_KEY_CREATED) == path  # another time: kept as is
    assert path.read_bytes() == before
    assert openpgp.read_public_key_file(path).created == 1_600_000_000


def test_an_export_of_another_key_is_refused_not_regenerated(tmp_path: Path) -> None:
    path = openpgp.write_public_key(tmp_path, _key(1), openpgp.DEV_KEY_CREATED)
    before = path.read_bytes()
    with pytest.raises(SigningError, match="holds another key") as e:
        openpgp.write_public_key(tmp_path, _key(2), openpgp.DEV_KEY_CREATED)
    assert e.value.hint and "never regenerated" in e.value.hint
    assert path.read_bytes() == before


def test_a_symlinked_export_is_refused(tmp_path: Path) -> None:
    target = openpgp.write_public_key(tmp_path, _key(), openpgp.DEV_KEY_CREATED)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "release.asc").symlink_to(target)
    with pytest.raises(BadInputError, match="cannot read"):
        openpgp.write_public_key(keys, _key(), openpgp.DEV_KEY_CREATED)


def test_signing_before_the_key_was_created_is_refused(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.write_bytes(b"x")
    with pytest.raises(SigningError, match="before the key was created"):
        openpgp.detached_signature(_key(), art, openpgp.DEV_KEY_CREATED - 1, openpgp.DEV_KEY_CREATED)


def test_signing_a_missing_or_special_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        openpgp.detached_signature(_key(), tmp_path / "missing", SIGNED_AT, openpgp.DEV_KEY_CREATED)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInputError, match="not a regular file"):
        openpgp.detached_signature(_key(), fifo, SIGNED_AT, openpgp.DEV_KEY_CREATED)


@pytest.mark.parametrize("user_id", ["", "line\nbreak", "x" * 2000])
def test_a_malformed_user_id_is_refused(user_id: str) -> None:
    with pytest.raises(BadInputError, match="user ID"):
        openpgp.transferable_public_key(_key(), user_id, openpgp.DEV_KEY_CREATED)


@given(data=st.binary(min_size=1, max_size=2000), kind=st.sampled_from(openpgp.ARMOR_KINDS))
def test_armor_round_trips(data: bytes, kind: str) -> None:
    text = openpgp.armor(data, kind)
    assert openpgp.dearmor(text, "x", kind) == data
    assert openpgp.dearmor(text) == data
    assert all(len(line) <= 64 for line in text.splitlines())


# --- hostile keys: each case names the attack; read_public_key refuses it, naming the file ---------------------------

_BLOCK = openpgp.PUBLIC_KEY_BLOCK
_KEY = openpgp.armor(openpgp.transferable_public_key(_key(), openpgp.USER_ID, openpgp.DEV_KEY_CREATED), _BLOCK)
# The binary layout: key packet header (2) and body (51: version 2, time 3..6, algo 7, OID length 8, OID 9..17,
# MPI 18..52), user ID packet at 53 (header 2), signature packet after it.
_UID_AT = 53
_SIG_AT = _UID_AT + 2 + len(openpgp.USER_ID) + 2  # the signature packet's body: version, type, algorithm, hash
_CRC = next(line for line in _KEY.split("\n") if line.startswith("="))


def _with(change: Callable[[bytearray], bytes | bytearray]) -> str:
    return _rearmored(_KEY, change, _BLOCK)


def _other_uid(data: bytearray) -> bytes:
    uid = openpgp.USER_ID.replace("development", "production!").encode()  # same length
    return bytes(data[: _UID_AT + 2]) + uid + bytes(data[_UID_AT + 2 + len(uid) :])


HOSTILE_KEYS: dict[str, tuple[str, str]] = {
    "empty": ("", "not an ASCII-armored"),
    "not armor": ("hello\nworld\n", "not an ASCII-armored"),
    "a signature block": (_KEY.replace(_BLOCK, "PGP SIGNATURE"), "not an armored PGP PUBLIC KEY BLOCK"),
    "mismatched END": (_KEY.replace("END PGP PUBLIC KEY", "END PGP PRIVATE KEY"), "END line"),
    "armor header": (_KEY.replace("-----\n\n", "-----\nVersion: evil\n\n", 1), "not an ASCII-armored|headers"),
    "bad CRC": (_KEY.replace(_CRC, "=AAAA" if _CRC != "=AAAA" else "=AAAB"), "CRC24 does not match"),
    "no CRC": ("\n".join(line for line in _KEY.split("\n") if not line.startswith("=")), "CRC|not an ASCII"),
    "invalid base64": (_KEY.replace(_KEY.split("\n")[2][:4], "!!!!", 1), "base64"),
    "oversized text": (_KEY + " " * openpgp.MAX_ARMOR_CHARS, "too large"),
    "truncated packet": (_with(lambda d: d[:-1]), "truncated"),
    "huge length claim": (_with(lambda d: b"\xc6\xff\xff\xff\xff\xff" + d[2:]), "truncated"),
    "partial length": (_with(lambda d: b"\xc6\xe1" + d[2:]), "partial-length"),
    "old-format indeterminate length": (_with(lambda d: b"\x9b" + d[2:]), "indeterminate"),
    "not a packet": (_with(lambda d: b"\x00" + d[1:]), "not an OpenPGP packet"),
    "trailing packet": (_with(lambda d: d + d[_UID_AT:]), "packet tags"),
    "subkey added": (_with(lambda d: d + b"\xce" + d[1:_UID_AT]), "packet tags"),
    "no self-signature": (_with(lambda d: d[: _UID_AT + 2 + len(openpgp.USER_ID)]), "packet tags"),
    "v3 key": (_with(lambda d: d[:2] + b"\x03" + d[3:]), "version 3"),
    "RSA algorithm": (_with(lambda d: d[:7] + b"\x01" + d[8:]), "algorithm 1"),
    "ECDSA algorithm": (_with(lambda d: d[:7] + b"\x13" + d[8:]), "algorithm 19"),
    "another curve": (_with(_flip(17)), "not on Ed25519"),
    "compressed point prefix": (_with(_flip(20)), "native form|malformed number"),
    "oversized MPI": (_with(lambda d: d[:18] + b"\x01\x10" + d[20:]), "oversized"),
    "key time changed": (_with(_flip(6)), "self-signature"),
    "public key changed": (_with(_flip(30)), "self-signature"),
    "user ID changed": (_with(_other_uid), "self-signature"),
    "user ID not UTF-8": (_with(lambda d: d[: _UID_AT + 2] + b"\xff" + d[_UID_AT + 3 :]), "UTF-8"),
    "signature s flipped": (_with(_flip(-1)), "self-signature"),
    "signature hash algorithm": (
        _with(lambda d: d[: _SIG_AT + 3] + b"\x08" + d[_SIG_AT + 4 :]),
        "only v4 EdDSA signatures over SHA-512 are accepted",
    ),
}


def test_the_hostile_cases_change_the_bytes_they_name() -> None:
    data = openpgp.dearmor(_KEY)
    assert data[0] == 0xC6 and data[2] == 4 and data[7] == 22 and data[8] == 9 and data[20] == 0x40
    assert data[_UID_AT] == 0xCD and data[_SIG_AT : _SIG_AT + 4] == bytes([4, 0x13, 22, 10])


@pytest.mark.parametrize("case", HOSTILE_KEYS)
def test_read_public_key_refuses_hostile_keys(case: str) -> None:
    text, match = HOSTILE_KEYS[case]
    with pytest.raises(BadInputError, match=match) as e:
        openpgp.read_public_key(text, "keys/release.asc")
    assert "keys/release.asc" in e.value.message


# --- hashed on every core, signed one by one -----------------------------------------------------


def test_a_signature_over_a_prehashed_document_is_the_streamed_one(tmp_path: Path) -> None:
    _, art, sig = _signed(tmp_path)
    document = openpgp.DocumentHash.of(art, hashlib.sha256(BIG).hexdigest())
    again = openpgp.detached_signature(_key(), art, SIGNED_AT, openpgp.DEV_KEY_CREATED, document=document)
    assert again == sig.read_text(), "the same bytes: Ed25519 is deterministic and the digest is the same"
    twice = openpgp.detached_signature(_key(), art, SIGNED_AT, openpgp.DEV_KEY_CREATED, document=document)
    assert twice == again, "the kept state is copied, never advanced"


def test_a_prehashed_document_is_refused_for_other_bytes_or_another_file(tmp_path: Path) -> None:
    art = tmp_path / "a.tar.gz"
    art.write_bytes(BIG)
    with pytest.raises(BadInputError, match="changed since it was hashed; not signed"):
        openpgp.DocumentHash.of(art, hashlib.sha256(b"other bytes").hexdigest())
    other = tmp_path / "b.tar.gz"
    other.write_bytes(BIG)
    document = openpgp.DocumentHash.of(art)
    with pytest.raises(ValueError, match="was hashed, not"):
        openpgp.detached_signature(_key(), other, SIGNED_AT, openpgp.DEV_KEY_CREATED, document=document)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(BadInputError, match="changed since it was hashed; not signed"):
        openpgp.detached_signature(_key(), art, SIGNED_AT, openpgp.DEV_KEY_CREATED, wrong, document=document)


@pytest.mark.parametrize("verify", TOOLS)
def test_files_signed_together_each_verify_with_the_stock_tools(tmp_path: Path, verify: Verifier) -> None:
    key = _key()
    asc = openpgp.write_public_key(tmp_path, key, openpgp.DEV_KEY_CREATED)
    digests = []
    for n in range(5):
        art = tmp_path / f"ransomeye-{n}-1.0.0.tar.gz"
        art.write_bytes(BIG + bytes([n]) * n)
        digests.append(hash_file(art))
    signed = sign_openpgp_all(key, digests, SIGNED_AT, openpgp.DEV_KEY_CREATED)
    assert [s.name for s in signed] == [d.name + ".asc" for d in digests], "one each, in order"
    for d, s in zip(digests, signed, strict=True):
        assert s.path.read_text() == openpgp.detached_signature(key, d.path, SIGNED_AT, openpgp.DEV_KEY_CREATED)
        proc = verify(tmp_path, asc, s.path, d.path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # A file changed after it was hashed for the link is signed by nobody.
    digests[2].path.write_bytes(b"swapped")
    with pytest.raises(BadInputError, match="changed since it was hashed"):
        sign_openpgp_all(key, digests, SIGNED_AT, openpgp.DEV_KEY_CREATED)


# --- a file's signature is over SHA-256, continued from the pass that hashed the file -----------------------------


def _hash_byte(sig_text: str) -> int:
    """The hash algorithm a detached signature names (its packet body's fourth byte; the packet header is 2 bytes)."""
    return openpgp.dearmor(sig_text)[2 + 3]


def _signature_over(art: Path, hash_algorithm: int, key: RoleKey | None = None) -> str:
    """A detached signature of ``art`` over ``hash_algorithm``, built as :func:`openpgp.detached_signature` builds
    one: the shape releases made before their signatures went over SHA-256 (10), or a hostile one."""
    key = key or _key()
    fpr = openpgp.fingerprint(openpgp.raw_public(key.public), openpgp.DEV_KEY_CREATED)
    hashed = openpgp._hashed_part(openpgp._BINARY_DOCUMENT, SIGNED_AT, fpr, False, hash_algorithm)
    maker = openpgp._HASHES.get(hash_algorithm, ("", hashlib.sha256))[1]
    digest = openpgp._finish(maker(art.read_bytes()), hashed)
    body = openpgp._signature_body(hashed, fpr, digest[:2], key.sign(digest))
    return openpgp.armor(openpgp._packet(openpgp._TAG_SIGNATURE, body), openpgp.SIGNATURE_BLOCK)


def test_a_file_s_signature_is_over_sha_256_and_the_key_s_certification_over_sha_512(tmp_path: Path) -> None:
    asc, _, sig = _signed(tmp_path)
    assert _hash_byte(sig.read_text()) == 8, "SHA-256: the digest pass of the file serves"
    key_bytes = openpgp.dearmor(asc.read_text())
    assert key_bytes[_SIG_AT : _SIG_AT + 4] == bytes([4, 0x13, 22, 10]), "the published key's bytes do not change"


@pytest.mark.parametrize("verify", TOOLS)
def test_a_signature_over_sha_512_as_releases_made_before_still_verifies(tmp_path: Path, verify: Verifier) -> None:
    asc, art, sig = _signed(tmp_path)
    sig.write_text(_signature_over(art, 10))
    assert _hash_byte(sig.read_text()) == 10
    key = openpgp.read_public_key(asc.read_text(), "keys/release.asc")
    assert openpgp.verify_detached(key, sig.read_text(), art, sig.name) == SIGNED_AT
    assert openpgp.verify_detached(key, sig.read_text(), art, sig.name, hash_file(art)) == SIGNED_AT
    proc = verify(tmp_path, asc, sig, art)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    art.write_bytes(BIG + b"!")
    with pytest.raises(VerificationError, match="does not match"):
        openpgp.verify_detached(key, sig.read_text(), art, sig.name)


@pytest.mark.parametrize("algorithm", [1, 2, 3, 9, 11, 0, 255], ids=["MD5", "SHA-1", "RIPEMD-160", "SHA-384",
                                                                     "SHA-224", "zero", "255"])  # fmt: skip
def test_a_file_s_signature_over_any_other_hash_is_refused(tmp_path: Path, algorithm: int) -> None:
    asc, art, sig = _signed(tmp_path)
    key = openpgp.read_public_key(asc.read_text(), "keys/release.asc")
    with pytest.raises(VerificationError, match="only v4 EdDSA signatures over SHA-256 or SHA-512 are accepted"):
        openpgp.verify_detached(key, _signature_over(art, algorithm), art, sig.name)


def test_a_signature_relabelled_to_the_other_accepted_hash_does_not_match(tmp_path: Path) -> None:
    asc, art, sig = _signed(tmp_path)
    key = openpgp.read_public_key(asc.read_text(), "keys/release.asc")
    relabelled = _rearmored(sig.read_text(), lambda d: d[:5] + b"\x0a" + d[6:], openpgp.SIGNATURE_BLOCK)
    assert _hash_byte(relabelled) == 10
    for known in (None, hash_file(art)):
        with pytest.raises(VerificationError, match="does not match"):
            openpgp.verify_detached(key, relabelled, art, sig.name, known)


def test_signing_from_the_digest_s_pass_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run hashed each archive once, when it took it from its packaging step: its OpenPGP signature continues
    from that pass. The signature is byte for byte the one made by reading the file, which is not opened."""
    key = _key()
    arts = [tmp_path / f"ransomeye-{n}-1.0.0.tar.gz" for n in range(3)]
    for n, art in enumerate(arts):
        art.write_bytes(BIG + bytes([n]) * n)
    digests = [hash_file(a) for a in arts]
    read = [openpgp.detached_signature(key, a, SIGNED_AT, openpgp.DEV_KEY_CREATED) for a in arts]

    def no_read(path: Path) -> None:
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(openpgp, "_file_chunks", no_read)
    signed = sign_openpgp_all(key, digests, SIGNED_AT, openpgp.DEV_KEY_CREATED)
    assert [s.path.read_text() for s in signed] == read
    key_file = openpgp.read_public_key(
        openpgp.armor(openpgp.transferable_public_key(key, openpgp.USER_ID, openpgp.DEV_KEY_CREATED), _BLOCK), "k"
    )
    for d, s in zip(digests, signed, strict=True):  # the audit's check continues from its own pass too
        for _ in range(2):  # the kept state is copied, never advanced: the same digest serves again
            assert openpgp.verify_detached(key_file, s.path.read_text(), d.path, s.name, d) == SIGNED_AT


def _rewrite_same_size(path: Path, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("change", ["swapped", "same size", "same size, modification time restored", "renamed over",
                                    "removed"])  # fmt: skip
def test_a_file_changed_after_its_digest_is_read_again_and_refused(tmp_path: Path, change: str) -> None:
    key = _key()
    art = tmp_path / "ransomeye-core-1.0.0.tar.gz"
    art.write_bytes(BIG)
    digest = hash_file(art)
    if change == "swapped":
        art.write_bytes(b"swapped")
    elif change == "same size":
        _rewrite_same_size(art, keep_mtime=False)
    elif change == "same size, modification time restored":
        _rewrite_same_size(art, keep_mtime=True)
    elif change == "renamed over":
        other = tmp_path / "other"
        other.write_bytes(BIG[:-1] + b"!")
        os.replace(other, art)
    else:
        art.unlink()
    assert openpgp.DocumentHash.known(digest) is None, "its identity changed: it is read again"
    with pytest.raises(BadInputError, match=r"changed since it was hashed|cannot read the file"):
        sign_openpgp_all(key, [digest], SIGNED_AT, openpgp.DEV_KEY_CREATED)
    assert not (tmp_path / (art.name + ".asc")).exists(), "nothing signed"


def test_verification_reads_again_a_file_changed_after_its_digest(tmp_path: Path) -> None:
    """The audit checks a signature from its own pass over the file; a digest of the file as it was is not
    trusted once the file changed, even at the same size with its modification time set back."""
    asc, art, sig = _signed(tmp_path)
    key = openpgp.read_public_key(asc.read_text(), "keys/release.asc")
    stale = hash_file(art)
    assert openpgp.verify_detached(key, sig.read_text(), art, sig.name, stale) == SIGNED_AT
    _rewrite_same_size(art, keep_mtime=True)
    assert openpgp.DocumentHash.known(stale) is None
    with pytest.raises(VerificationError, match="does not match"):
        openpgp.verify_detached(key, sig.read_text(), art, sig.name, stale)


def test_a_file_renamed_by_the_run_keeps_its_pass_and_any_other_loses_it(tmp_path: Path) -> None:
    """The run hashes a step's product in its output folder, then renames it into the work folder: the same
    file keeps the state (with the change time the rename gave it); a file put there instead does not."""
    art, moved = tmp_path / "out.tar.gz", tmp_path / "work.tar.gz"
    art.write_bytes(BIG)
    d = hash_file(art)
    os.replace(art, moved)
    assert openpgp.DocumentHash.known(dataclasses.replace(d, path=moved)) is None, "the rename set its change time"
    kept = renamed(d, moved)
    assert kept.identity is not None and openpgp.DocumentHash.known(kept) is not None
    art.write_bytes(BIG)
    d = hash_file(art)
    other = tmp_path / "other"
    other.write_bytes(BIG)
    os.replace(other, moved)  # another file (inode) with the same bytes at the name
    assert renamed(d, moved).identity is None
    # The limit: a same-size rewrite that sets the modification time back between the hash and the rename is
    # not seen (the rename sets the change time anyway). The run renames right after hashing, once the step's
    # processes are gone; the signature such a file would get matches no file, and verification says so.
    art.write_bytes(BIG)
    d = hash_file(art)
    _rewrite_same_size(art, keep_mtime=True)
    os.replace(art, moved)
    kept = renamed(d, moved)
    assert kept.identity is not None
    key = _key()
    (signed,) = sign_openpgp_all(key, [kept], SIGNED_AT, openpgp.DEV_KEY_CREATED)
    public = openpgp.read_public_key(
        openpgp.armor(openpgp.transferable_public_key(key, openpgp.USER_ID, openpgp.DEV_KEY_CREATED), _BLOCK), "k"
    )
    with pytest.raises(VerificationError, match="does not match"):
        openpgp.verify_detached(public, signed.path.read_text(), moved, signed.name, hash_file(moved))


def test_a_file_written_while_it_is_hashed_keeps_no_pass(tmp_path: Path) -> None:
    art = tmp_path / "a.tar.gz"
    art.write_bytes(BIG)

    class Writing(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size) or b""
            if self.tell() == len(data):  # after the first read: another writer changes what is still to come
                with open(art, "r+b") as w:
                    w.seek(len(BIG) - 1)
                    w.write(b"!")
            return data

    with Writing(art) as f:
        d = hash_stream(art, f)
    assert d.sha256_state is not None and d.identity is None, "the hashed bytes are no version of the file"
    assert openpgp.DocumentHash.known(d) is None


def test_a_digest_of_another_file_or_without_its_pass_is_not_used(tmp_path: Path) -> None:
    asc, art, sig = _signed(tmp_path)
    key = openpgp.read_public_key(asc.read_text(), "keys/release.asc")
    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"other bytes")
    for known in (hash_file(other), dataclasses.replace(hash_file(art), sha256_state=None),
                  dataclasses.replace(hash_file(art), identity=None)):  # fmt: skip
        assert openpgp.verify_detached(key, sig.read_text(), art, sig.name, known) == SIGNED_AT
    assert openpgp.DocumentHash.known(dataclasses.replace(hash_file(art), sha256="0" * 64)) is None, "not its pass"
    assert openpgp.DocumentHash.known(hash_file(art)) is not None
