"""signify: stock ``signify -C`` checks our signed checksum list and rejects any change; our verifier is strict."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from release import signify
from release.errors import BadInputError, VerificationError
from release.signers import RoleKey

SIGNIFY = shutil.which("signify-openbsd") or shutil.which("signify")
needs_signify = pytest.mark.skipif(SIGNIFY is None, reason="signify-openbsd is installed by `make setup`")
FILES = {
    "ransomeye-core-1.0.0-x86_64-linux.tar.gz": b"core bytes\n" * 5000,
    "ransomeye-agent-1.0.0-windows.zip": b"agent bytes\n" * 3000,
    "SBOM.spdx.json": b"{}\n",
}


def _key(seed: int = 1) -> RoleKey:
    return RoleKey.from_private("release", Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def _entries(folder: Path) -> list[tuple[str, str]]:
    return [(name, hashlib.sha256((folder / name).read_bytes()).hexdigest()) for name in FILES]


def _release(tmp_path: Path, key: RoleKey | None = None) -> Path:
    """A folder with the files, ``release.signify.pub`` and ``SHA256.sig``, as a customer downloads them."""
    key = key or _key()
    folder = tmp_path / "dist"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    (folder / "release.signify.pub").write_bytes(signify.public_key_text(key.public).encode())
    (folder / "SHA256.sig").write_bytes(signify.signed_checksums(key, _entries(folder)).encode())
    return folder


def _check(folder: Path, *names: str) -> subprocess.CompletedProcess[str]:
    assert SIGNIFY is not None
    return subprocess.run(
        [SIGNIFY, "-C", "-p", "release.signify.pub", "-x", "SHA256.sig", *names],
        cwd=folder, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _ours(folder: Path) -> list[tuple[str, str]]:
    return signify.verify_signed_checksums(
        (folder / "release.signify.pub").read_text(), (folder / "SHA256.sig").read_text()
    )


def _flip_file(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_signature(sig_text: str, offset: int) -> str:
    comment, blob, message = sig_text.split("\n", 2)
    raw = bytearray(base64.b64decode(blob))
    raw[offset] ^= 0x01
    return f"{comment}\n{base64.b64encode(bytes(raw)).decode()}\n{message}"


@needs_signify
def test_stock_signify_checks_the_whole_list(tmp_path: Path) -> None:
    folder = _release(tmp_path)
    proc = _check(folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Signature Verified" in proc.stdout
    for name in FILES:
        assert f"{name}: OK" in proc.stdout
    assert _ours(folder) == _entries(folder)


@needs_signify
def test_stock_signify_checks_one_listed_file_only(tmp_path: Path) -> None:
    folder = _release(tmp_path)
    one, other = list(FILES)[:2]
    _flip_file(folder / other, 0)
    proc = _check(folder, one)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{one}: OK" in proc.stdout and other not in proc.stdout
    assert _check(folder, other).returncode != 0


@needs_signify
@pytest.mark.parametrize("offset", [0, 30_000, -1])
def test_stock_signify_rejects_a_flipped_byte_in_a_file(tmp_path: Path, offset: int) -> None:
    folder = _release(tmp_path)
    name = next(iter(FILES))
    _flip_file(folder / name, offset)
    proc = _check(folder)
    assert proc.returncode != 0
    assert f"{name}: FAIL" in proc.stdout + proc.stderr


@needs_signify
@pytest.mark.parametrize("offset", [10, 40, -1], ids=["signature-first", "signature-middle", "signature-last"])
def test_stock_signify_and_ours_reject_a_flipped_byte_in_the_signature(tmp_path: Path, offset: int) -> None:
    folder = _release(tmp_path)
    sig = folder / "SHA256.sig"
    sig.write_text(_flip_signature(sig.read_text(), offset))
    assert _check(folder).returncode != 0
    with pytest.raises(VerificationError, match="does not match its signature"):
        _ours(folder)


@needs_signify
def test_stock_signify_and_ours_reject_a_changed_checksum_line(tmp_path: Path) -> None:
    folder = _release(tmp_path)
    sig = folder / "SHA256.sig"
    text = sig.read_text()
    last = text.rstrip("\n")[-1]
    sig.write_text(text.rstrip("\n")[:-1] + ("0" if last != "0" else "1") + "\n")
    assert _check(folder).returncode != 0
    with pytest.raises(VerificationError, match="does not match its signature"):
        _ours(folder)


@needs_signify
@pytest.mark.parametrize("same_keynum", [False, True], ids=["other-keynum", "forged-keynum"])
def test_stock_signify_and_ours_reject_another_key(tmp_path: Path, same_keynum: bool) -> None:
    folder = _release(tmp_path)
    other = _key(2)
    text = signify.signed_checksums(other, _entries(folder))
    if same_keynum:  # the attacker copies our key number into his signature: the signature itself must fail
        comment, blob, message = text.split("\n", 2)
        raw = base64.b64decode(blob)
        raw = raw[:2] + signify.keynum(_key().public) + raw[10:]
        text = f"{comment}\n{base64.b64encode(raw).decode()}\n{message}"
    (folder / "SHA256.sig").write_text(text)
    assert _check(folder).returncode != 0
    with pytest.raises(VerificationError, match="another key" if not same_keynum else "does not match"):
        _ours(folder)


def test_outputs_are_byte_identical_when_made_twice(tmp_path: Path) -> None:
    key = _key()
    entries = [("a.tar.gz", "0" * 64), ("b.zip", "f" * 64)]
    assert signify.signed_checksums(key, entries) == signify.signed_checksums(key, entries)
    assert signify.public_key_text(key.public) == signify.public_key_text(key.public)
    assert signify.keynum(key.public) == signify.keynum(_key().public) != signify.keynum(_key(2).public)


def test_the_list_keeps_the_given_order() -> None:
    entries = [("z.tar.gz", "1" * 64), ("a.zip", "2" * 64)]
    text = signify.signed_checksums(_key(), entries)
    assert text.endswith(f"SHA256 (z.tar.gz) = {'1' * 64}\nSHA256 (a.zip) = {'2' * 64}\n")


_NAME = st.text(
    alphabet=st.characters(categories=["L", "N", "Pd", "Pc"], include_characters="._+~,@", exclude_characters="()/\\="),
    min_size=1,
    max_size=60,
).filter(lambda n: n not in (".", "..") and n.isprintable() and not any(c.isspace() for c in n))


@given(
    st.lists(
        st.tuples(_NAME, st.binary(min_size=32, max_size=32).map(bytes.hex)),
        min_size=1,
        max_size=8,
        unique_by=lambda e: e[0],
    )
)
def test_checksum_entries_round_trip(entries: list[tuple[str, str]]) -> None:
    key = _key()
    text = signify.signed_checksums(key, entries)
    assert signify.verify_signed_checksums(signify.public_key_text(key.public), text) == entries


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "a\\b", "a\nb", "a b", "a\tb", "a(b", "a)b", "(a)", "a=b", "a\x00b", "x" * 300],
)
def test_names_signify_cannot_parse_or_that_are_not_plain_are_refused(name: str) -> None:
    with pytest.raises(BadInputError, match="not a plain file name"):
        signify.signed_checksums(_key(), [(name, "0" * 64)])


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([], "empty checksum list"),
        ([("a", "0" * 63)], "not a lowercase SHA-256"),
        ([("a", "A" * 64)], "not a lowercase SHA-256"),
        ([("a", "0" * 64), ("a", "1" * 64)], "listed twice"),
    ],
    ids=["empty", "short-digest", "uppercase-digest", "duplicate"],
)
def test_malformed_lists_are_refused(entries: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        signify.signed_checksums(_key(), entries)


# --- hostile input to our verifier: each case names the attack -------------------------------------------------------

_PUB = signify.public_key_text(_key().public)
_GOOD = [("a.tar.gz", "0" * 64), ("b.zip", "1" * 64)]
_SIG = signify.signed_checksums(_key(), _GOOD)
_COMMENT, _BLOB, _MESSAGE = _SIG.split("\n", 2)


def _signed_message(message: str) -> str:
    """A correctly signed file whose message is ``message`` (so only our parsing of the message can refuse it)."""
    key = _key()
    blob = base64.b64encode(b"Ed" + signify.keynum(key.public) + key.sign(message.encode())).decode()
    return f"{_COMMENT}\n{blob}\n{message}"


HOSTILE: dict[str, tuple[str, str, str]] = {
    "empty signature file": (_PUB, "", "not a signify file"),
    "no comment line": (_PUB, _SIG.replace("untrusted comment: ", "", 1), "not a signify file"),
    "overlong comment": (_PUB, "untrusted comment: " + "x" * 2000 + _SIG[len(_COMMENT) :], "not a signify file"),
    "invalid base64": (_PUB, _SIG.replace(_BLOB, "!" + _BLOB[1:]), "not valid base64"),
    "short blob": (_PUB, _SIG.replace(_BLOB, base64.b64encode(b"Ed" + b"\0" * 40).decode()), "wrong size"),
    "wrong algorithm": (
        _PUB,
        _SIG.replace(_BLOB, base64.b64encode(b"XX" + base64.b64decode(_BLOB)[2:]).decode()),
        "wrong size",
    ),
    "oversized file": (_PUB, _SIG + "SHA256 (x) = " + "0" * 64 + "\n" * signify.MAX_SIGNED_CHARS, "too large"),
    "public key with trailing text": (_PUB + "more\n", _SIG, "trailing text"),
    "public key blob of a signature": (_SIG.split("\n", 2)[0] + "\n" + _BLOB + "\n", _SIG, "wrong size"),
    "oversized public key": (_PUB + " " * signify.MAX_PUBLIC_CHARS, _SIG, "too large"),
    "appended line": (_PUB, _SIG + f"SHA256 (evil) = {'2' * 64}\n", "does not match its signature"),
    "signed empty message": (_PUB, _signed_message(""), "newline"),
    "signed message without final newline": (_PUB, _signed_message(_MESSAGE.rstrip("\n")), "newline"),
    "signed blank line": (_PUB, _signed_message(_MESSAGE + "\n"), "malformed line"),
    "signed other algorithm": (_PUB, _signed_message(f"SHA512 (a) = {'0' * 64}\n"), "malformed line"),
    "signed short digest": (_PUB, _signed_message(f"SHA256 (a) = {'0' * 63}\n"), "malformed line"),
    "signed CRLF line": (_PUB, _signed_message(f"SHA256 (a) = {'0' * 64}\r\n"), "malformed line"),
    "signed path name": (_PUB, _signed_message(f"SHA256 (../etc/passwd) = {'0' * 64}\n"), "not a plain file name"),
    "signed nested parenthesis": (_PUB, _signed_message(f"SHA256 (a) b) = {'0' * 64}\n"), "not a plain file name"),
    "signed duplicate name": (_PUB, _signed_message(f"SHA256 (a) = {'0' * 64}\n" * 2), "twice"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_verify_signed_checksums_refuses_hostile_input(case: str) -> None:
    public_text, sig_text, match = HOSTILE[case]
    with pytest.raises(VerificationError, match=match):
        signify.verify_signed_checksums(public_text, sig_text)
