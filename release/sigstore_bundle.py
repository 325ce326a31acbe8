"""Offline Sigstore bundles: an in-toto Statement in a DSSE envelope, signed by a role's key.

A bundle (media type :data:`MEDIA_TYPE`, ``<archive>.sigstore.json``) carries
one in-toto v1 Statement whose single subject is the archive (its name and
SHA-256), in a DSSE envelope (payload type ``application/vnd.in-toto+json``)
signed with a role's Ed25519 key over the DSSE pre-authentication encoding.
The verification material is a *public-key hint* only: no certificate, no
transparency-log entry, no timestamp. A verifier is given the public key out
of band (``keys/<role>.pub``); the hint is what cosign writes for a key, the
base64 of the SHA-256 of the key's DER SubjectPublicKeyInfo.

Verified independently by ``release/verify-js/verify-bundle.mjs``
(``@sigstore/verify``) and, for customers, by cosign 3.0.4 or newer (older
versions fetch Sigstore's trusted root over the network even with a key)::

    cosign verify-blob-attestation --key keys/release.pub --bundle X.sigstore.json \\
        --new-bundle-format --insecure-ignore-tlog=true --check-claims=true --type slsaprovenance1 X

The bytes are deterministic: the same key and statement give the same bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from release.errors import BadInputError, VerificationError
from release.names import SIGSTORE_SUFFIX
from release.signers import RoleKey

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The in-toto and DSSE names (the same values as release.provenance's: an adapter does not import a sibling adapter).
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SUFFIX = SIGSTORE_SUFFIX
# A bundle is a statement and a signature: a few KiB, a provenance's dependency list at most a few MiB.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
# The deepest JSON a bundle of ours holds is well under this; deeper is an attack on the parser.
MAX_JSON_DEPTH = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ED25519_SIGNATURE_BYTES = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def statement(name: str, sha256: str, predicate_type: str, predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto v1 Statement whose single subject is the archive ``name`` with digest ``sha256``.

    Raises :class:`BadInputError` for an empty name or predicate type, or a
    digest that is not 64 lowercase hex digits.
    """
    if not name or "/" in name or "\x00" in name:
        raise BadInputError(f"{name!r}: not an archive's file name", hint="the subject is the archive's base name")
    if not _SHA256.match(sha256):
        raise BadInputError(f"{name}: {sha256!r} is not a SHA-256 (64 lowercase hex digits)")
    if not predicate_type:
        raise BadInputError(f"{name}: the statement needs a predicate type (a URI)")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def canonical_json(data: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON (as release.provenance signs): the payload and the bundle's bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_key_hint(public: Ed25519PublicKey) -> str:
    """The bundle's hint for ``public``: base64 of the SHA-256 of its DER SubjectPublicKeyInfo (as cosign's)."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of ``payload``: the bytes that are signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def make_bundle(key: RoleKey, stmt: Mapping[str, Any]) -> bytes:
    """The bytes of a v0.3 bundle of ``stmt`` signed by ``key`` (key-sorted compact JSON and a newline).

    The payload is the statement's canonical JSON; the signature is
    ``key.sign`` over its DSSE pre-authentication encoding. Deterministic
    (Ed25519 signatures are). Raises :class:`~release.errors.SigningError`
    when the key cannot sign.
    """
    payload = canonical_json(stmt)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": public_key_hint(key.public)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            # Empty: go-securesystemslib and sigstore-js then try the key they are given.
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        },
    }
    return canonical_json(bundle) + b"\n"


def verify_bundle(public: Ed25519PublicKey, data: bytes, name: str, sha256: str) -> dict[str, Any]:
    """Verify the bundle ``data`` with ``public`` for the archive ``name`` of digest ``sha256``; return the statement.

    ``data`` is hostile until verified: its size is bounded, its JSON must
    have exactly the shape :func:`make_bundle` writes (no transparency-log
    entry or timestamp claimed, which nothing here would check), the hint
    must name ``public``, the one signature must verify over the DSSE
    pre-authentication encoding, and only then is the payload parsed: an
    in-toto v1 Statement whose single subject is ``name`` with ``sha256``.
    Raises :class:`VerificationError` naming what is wrong.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise VerificationError(f"{name}{SUFFIX}: {len(data)} bytes, more than a bundle's {MAX_BUNDLE_BYTES}")
    where = f"{name}{SUFFIX}"
    bundle = _object(_json(data, where), where, {"mediaType", "verificationMaterial", "dsseEnvelope"})
    if bundle["mediaType"] != MEDIA_TYPE:
        raise VerificationError(f"{where}: media type {bundle['mediaType']!r}, not {MEDIA_TYPE}")
    material = _object(bundle["verificationMaterial"], f"{where}: verificationMaterial", {"publicKey", "tlogEntries"})
    if material["tlogEntries"] != []:
        raise VerificationError(f"{where}: claims transparency-log entries; an offline bundle has none")
    hint = _object(material["publicKey"], f"{where}: publicKey", {"hint"})["hint"]
    if hint != public_key_hint(public):
        raise VerificationError(f"{where}: signed by the key {hint!r}, not the given key {public_key_hint(public)}")
    envelope = _object(bundle["dsseEnvelope"], f"{where}: dsseEnvelope", {"payload", "payloadType", "signatures"})
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(f"{where}: payload type {envelope['payloadType']!r}, not {PAYLOAD_TYPE}")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise VerificationError(f"{where}: the envelope must hold exactly one signature")
    signature = _base64(_object(signatures[0], f"{where}: signature", {"keyid", "sig"})["sig"], f"{where}: sig")
    if len(signature) != _ED25519_SIGNATURE_BYTES:
        raise VerificationError(f"{where}: the signature is {len(signature)} bytes, not an Ed25519 signature")
    payload = _base64(envelope["payload"], f"{where}: payload")
    try:
        public.verify(signature, pae(PAYLOAD_TYPE, payload))
    except InvalidSignature:
        raise VerificationError(f"{where}: the signature does not verify with the given key") from None
    return _check_statement(_json(payload, f"{where}: payload"), where, name, sha256)


def _check_statement(data: Any, where: str, name: str, sha256: str) -> dict[str, Any]:
    """The signed payload as a Statement about ``name`` and ``sha256`` only."""
    stmt = _object(data, f"{where}: statement", {"_type", "subject", "predicateType", "predicate"})
    if stmt["_type"] != STATEMENT_TYPE:
        raise VerificationError(f"{where}: the payload is not an in-toto v1 Statement ({stmt['_type']!r})")
    if not isinstance(stmt["predicateType"], str) or not isinstance(stmt["predicate"], dict):
        raise VerificationError(f"{where}: the statement's predicate is malformed")
    expected = [{"name": name, "digest": {"sha256": sha256}}]
    if stmt["subject"] != expected:
        raise VerificationError(
            f"{where}: the statement is about {_subjects(stmt['subject'])}, not {name} (sha256 {sha256})"
        )
    return stmt


def _subjects(subjects: Any) -> str:
    """The subjects of an unexpected statement, for the message (attacker text, so repr'd and cut short)."""
    return repr(subjects)[:200]


def _json(data: bytes, where: str) -> Any:
    """Parse ``data`` as UTF-8 JSON without duplicate keys, nested at most :data:`MAX_JSON_DEPTH`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"{where}: not UTF-8") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise VerificationError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"{where}: not JSON ({e})") from None


def _depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside its strings (a bound checked before parsing)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


def _object(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    """``value`` as an object with exactly ``keys``."""
    if not isinstance(value, dict):
        raise VerificationError(f"{where}: not a JSON object")
    if set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        raise VerificationError(f"{where}: missing {missing}, unexpected {[repr(k)[:40] for k in extra]}")
    return value


def _base64(value: Any, where: str) -> bytes:
    """Strict standard base64 (padding, no other characters)."""
    if not isinstance(value, str):
        raise VerificationError(f"{where}: not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{where}: not base64") from None
