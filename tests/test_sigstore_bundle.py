"""Offline Sigstore bundles: made by release/sigstore_bundle.py, judged by two verifiers.

Every case runs the real independent verifier (``release/verify-js``, npm's
``@sigstore/verify`` under node) and our own :func:`verify_bundle`, and
asserts they agree: the genuine bundle is accepted, each tampering refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from release.errors import BadInputError, VerificationError
from release.provenance import PREDICATE_TYPE
from release.signers import RoleKey
from release.sigstore_bundle import (
    MAX_BUNDLE_BYTES,
    MEDIA_TYPE,
    PAYLOAD_TYPE,
    canonical_json,
    make_bundle,
    pae,
    public_key_hint,
    statement,
    verify_bundle,
)

ROOT = Path(__file__).resolve().parent.parent
VERIFY_JS = ROOT / "release" / "verify-js"
CLI = VERIFY_JS / "verify-bundle.mjs"
NAME = "ransomeye-1.2.3-x86_64-linux.tar.gz"
PREDICATE = {"buildDefinition": {"buildType": "urn:ransomeye:release-build:v1"}, "runDetails": {}}


@dataclass(frozen=True)
class Signed:
    """An archive, its bundle and the public key that should verify it, as files a customer has."""

    key: RoleKey
    archive: Path
    bundle: Path
    public_pem: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive.read_bytes()).hexdigest()


def _pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def signed(tmp_path: Path) -> Signed:
    key = RoleKey.from_private("release", Ed25519PrivateKey.generate())
    archive = tmp_path / NAME
    archive.write_bytes(b"\x1f\x8b a release archive " * 64)
    public_pem = tmp_path / "release.pub"
    public_pem.write_bytes(_pem(key.public))
    bundle = tmp_path / f"{NAME}.sigstore.json"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    bundle.write_bytes(make_bundle(key, statement(NAME, digest, PREDICATE_TYPE, PREDICATE)))
    return Signed(key, archive, bundle, public_pem)


def node_verify(key: Path, bundle: Path, artifact: Path) -> subprocess.CompletedProcess[str]:
    """Run the independent verifier as a customer would; fails (never skips) when it is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make setup` (Debian: apt-get install nodejs npm)")
    if not (VERIFY_JS / "node_modules" / ".package-lock.json").exists():
        pytest.fail(f"{VERIFY_JS}/node_modules is missing: run `make setup`")
    argv = [node, str(CLI), "--key", str(key), "--bundle", str(bundle), str(artifact)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def _write(path: Path, bundle: dict[str, Any]) -> None:
    path.write_bytes(canonical_json(bundle) + b"\n")


def _resign(key: RoleKey, bundle: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """``bundle`` with ``payload`` and a genuine signature of it by ``key`` (a signed but unwanted statement)."""
    envelope = bundle["dsseEnvelope"]
    envelope["payload"] = base64.b64encode(payload).decode()
    envelope["signatures"][0]["sig"] = base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode()
    return bundle


def test_genuine_bundle_is_accepted_by_both(signed: Signed) -> None:
    proc = node_verify(signed.public_pem, signed.bundle, signed.archive)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("verified: ") and proc.stdout.count("\n") == 1
    assert signed.sha256 in proc.stdout
    stmt = verify_bundle(signed.key.public, signed.bundle.read_bytes(), NAME, signed.sha256)
    assert stmt["subject"] == [{"name": NAME, "digest": {"sha256": signed.sha256}}]
    assert stmt["predicateType"] == PREDICATE_TYPE and stmt["predicate"] == PREDICATE


def test_bundle_bytes_are_deterministic(signed: Signed, tmp_path: Path) -> None:
    stmt = statement(NAME, signed.sha256, PREDICATE_TYPE, PREDICATE)
    again = make_bundle(signed.key, stmt)
    assert again == make_bundle(signed.key, dict(stmt)) == signed.bundle.read_bytes()
    assert again.endswith(b"}\n") and again.count(b"\n") == 1
    bundle = json.loads(again)
    assert bundle["mediaType"] == MEDIA_TYPE
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": public_key_hint(signed.key.public)},
        "tlogEntries": [],
    }


def _flip_archive(s: Signed, other: RoleKey) -> None:
    data = bytearray(s.archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    s.archive.write_bytes(bytes(data))


def _flip_signature(s: Signed, other: RoleKey) -> None:
    bundle = _load(s.bundle)
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _write(s.bundle, bundle)


def _change_payload(s: Signed, other: RoleKey) -> None:
    bundle = _load(s.bundle)
    stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    stmt["predicate"]["buildDefinition"]["buildType"] = "urn:attacker:build"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(canonical_json(stmt)).decode()
    _write(s.bundle, bundle)


def _other_public_key(s: Signed, other: RoleKey) -> None:
    s.public_pem.write_bytes(_pem(other.public))


def _signed_by_other_key_with_its_hint(s: Signed, other: RoleKey) -> None:
    s.bundle.write_bytes(make_bundle(other, statement(NAME, s.sha256, PREDICATE_TYPE, PREDICATE)))


def _hint_of_given_key_signature_of_other(s: Signed, other: RoleKey) -> None:
    bundle = _load(s.bundle)
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    _write(s.bundle, _resign(other, bundle, payload))


def _subject_names_another_digest(s: Signed, other: RoleKey) -> None:
    digest = hashlib.sha256(b"another archive").hexdigest()
    s.bundle.write_bytes(make_bundle(s.key, statement(NAME, digest, PREDICATE_TYPE, PREDICATE)))


# attack -> (the tampering, what the node verifier must name as the reason)
TAMPERING: dict[str, tuple[Callable[[Signed, RoleKey], None], str]] = {
    "a flipped byte in the archive": (_flip_archive, "no subject of the statement has the artifact's sha256"),
    "a flipped byte in the signature": (_flip_signature, "SIGNATURE_ERROR"),
    "a changed payload": (_change_payload, "SIGNATURE_ERROR"),
    "a different public key": (_other_public_key, "PUBLIC_KEY_ERROR"),
    "signed by another key, naming it": (_signed_by_other_key_with_its_hint, "PUBLIC_KEY_ERROR"),
    "signed by another key, naming the given one": (_hint_of_given_key_signature_of_other, "SIGNATURE_ERROR"),
    "a subject naming another digest": (_subject_names_another_digest, "no subject of the statement has the artifact"),
}


@pytest.mark.parametrize("attack", TAMPERING)
def test_tampering_is_refused_by_both(signed: Signed, attack: str) -> None:
    other = RoleKey.from_private("release", Ed25519PrivateKey.generate())
    tamper, reason = TAMPERING[attack]
    tamper(signed, other)
    proc = node_verify(signed.public_pem, signed.bundle, signed.archive)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and proc.stderr.startswith("verify-bundle: error: ")
    assert reason in proc.stderr
    public = serialization.load_pem_public_key(signed.public_pem.read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    # Ours is given, like the node CLI, the digest of the archive the customer holds.
    with pytest.raises(VerificationError):
        verify_bundle(public, signed.bundle.read_bytes(), NAME, signed.sha256)


def test_node_cli_usage_error_is_not_a_verification_failure(signed: Signed) -> None:
    proc = node_verify(signed.public_pem, signed.bundle, signed.archive.with_name("missing.tar.gz"))
    assert proc.returncode == 2, proc.stderr
    assert "cannot read the artifact" in proc.stderr


def _genuine(s: Signed) -> dict[str, Any]:
    return _load(s.bundle)


def _edit(edit: Callable[[dict[str, Any]], object]) -> Callable[[Signed], bytes]:
    def make(s: Signed) -> bytes:
        bundle = _genuine(s)
        edit(bundle)
        return canonical_json(bundle)

    return make


def _signed_payload(payload: bytes) -> Callable[[Signed], bytes]:
    return lambda s: canonical_json(_resign(s.key, _genuine(s), payload))


def _signed_statement(change: Callable[[dict[str, Any]], object]) -> Callable[[Signed], bytes]:
    def make(s: Signed) -> bytes:
        stmt = statement(NAME, s.sha256, PREDICATE_TYPE, PREDICATE)
        change(stmt)
        return canonical_json(_resign(s.key, _genuine(s), canonical_json(stmt)))

    return make


def _sig(b: dict[str, Any]) -> dict[str, Any]:
    sig: dict[str, Any] = b["dsseEnvelope"]["signatures"][0]
    return sig


HOSTILE: dict[str, Callable[[Signed], bytes]] = {
    "empty": lambda s: b"",
    "not JSON": lambda s: b"-----BEGIN PGP SIGNATURE-----",
    "not UTF-8": lambda s: b'{"mediaType": "\xff"}',
    "huge": lambda s: b" " * (MAX_BUNDLE_BYTES + 1),
    "nested deeply": lambda s: b"[" * 100_000 + b"]" * 100_000,
    "a JSON array": lambda s: b"[]",
    "NaN": lambda s: s.bundle.read_bytes().replace(b'"tlogEntries":[]', b'"tlogEntries":NaN'),
    "a duplicate key": lambda s: s.bundle.read_bytes().replace(
        b'{"dsseEnvelope":', b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":'
    ),
    "wrong media type": _edit(lambda b: b.update(mediaType="application/vnd.dev.sigstore.bundle.v0.1+json")),
    "media type not a string": _edit(lambda b: b.update(mediaType=3)),
    "no envelope": _edit(lambda b: b.pop("dsseEnvelope")),
    "a message signature instead": _edit(lambda b: b.update(messageSignature=b.pop("dsseEnvelope"))),
    "an extra top-level field": _edit(lambda b: b.update(extra=1)),
    "no verification material": _edit(lambda b: b.pop("verificationMaterial")),
    "a certificate instead of a key": _edit(
        lambda b: b["verificationMaterial"].update(certificate={"rawBytes": "AAAA"}, publicKey=None)
    ),
    "claims a tlog entry": _edit(lambda b: b["verificationMaterial"].update(tlogEntries=[{"logIndex": "1"}])),
    "claims a timestamp": _edit(lambda b: b["verificationMaterial"].update(timestampVerificationData={})),
    "no hint": _edit(lambda b: b["verificationMaterial"]["publicKey"].pop("hint")),
    "the hint of another key": _edit(
        lambda b: b["verificationMaterial"]["publicKey"].update(hint=base64.b64encode(b"\0" * 32).decode())
    ),
    "wrong payload type": _edit(lambda b: b["dsseEnvelope"].update(payloadType="text/plain")),
    "no signatures": _edit(lambda b: b["dsseEnvelope"].update(signatures=[])),
    "two signatures": _edit(lambda b: b["dsseEnvelope"]["signatures"].append(_sig(b))),
    "signatures not a list": _edit(lambda b: b["dsseEnvelope"].update(signatures={})),
    "signature not base64": _edit(lambda b: _sig(b).update(sig="not base64!")),
    "signature not a string": _edit(lambda b: _sig(b).update(sig=7)),
    "signature truncated": _edit(lambda b: _sig(b).update(sig=base64.b64encode(b"\0" * 63).decode())),
    "payload not base64": _edit(lambda b: b["dsseEnvelope"].update(payload="%%%")),
    "signed payload not JSON": _signed_payload(b"\x00not json"),
    "signed payload a JSON list": _signed_payload(b"[]"),
    "signed payload nested deeply": _signed_payload(b"[" * 1000 + b"]" * 1000),
    "signed statement of another type": _signed_statement(
        lambda st: st.update(_type="https://in-toto.io/Statement/v0.1")
    ),
    "signed statement with a second subject": _signed_statement(
        lambda st: st["subject"].append({"name": "other.tar.gz", "digest": {"sha256": "0" * 64}})
    ),
    "signed statement about another name": _signed_statement(lambda st: st["subject"][0].update(name="other.tar.gz")),
    "signed statement with an extra digest": _signed_statement(lambda st: st["subject"][0]["digest"].update(md5="0")),
    "signed statement without a predicate": _signed_statement(lambda st: st.pop("predicate")),
    "signed statement with a list predicate": _signed_statement(lambda st: st.update(predicate=[])),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_bundle_is_refused(signed: Signed, case: str) -> None:
    data = HOSTILE[case](signed)
    with pytest.raises(VerificationError) as info:
        verify_bundle(signed.key.public, data, NAME, signed.sha256)
    assert "\n" not in info.value.message and len(info.value.message) < 600


@pytest.mark.parametrize(
    ("name", "sha256", "predicate_type"),
    [
        ("", "0" * 64, PREDICATE_TYPE),
        ("dir/x.tar.gz", "0" * 64, PREDICATE_TYPE),
        (NAME, "0" * 63, PREDICATE_TYPE),
        (NAME, "A" * 64, PREDICATE_TYPE),
        (NAME, "0" * 64, ""),
    ],
)
def test_statement_refuses_bad_input(name: str, sha256: str, predicate_type: str) -> None:
    with pytest.raises(BadInputError):
        statement(name, sha256, predicate_type, PREDICATE)
