"""The minisign signature format, so stock ``minisign -V`` verifies our signatures.

We write prehashed signatures (algorithm ``ED``): the Ed25519 signature is over
the BLAKE2b-512 digest of the file, which is computed while the file is
written, so signing never re-reads an artifact. A global signature binds the
trusted comment (file name and version) to the file signature.

Formats (base64 lines, see minisign's documentation):

* public key:  ``"Ed" || key_id(8) || public_key(32)``
* signature:   ``"ED" || key_id(8) || ed25519(blake2b512(file))(64)``,
  then ``trusted comment: ...``, then ``ed25519(signature || comment)(64)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from release.errors import BadInputError, VerificationError
from release.names import MINISIGN_SUFFIX

PUBKEY_ALG = b"Ed"
PREHASHED_ALG = b"ED"
LEGACY_ALG = b"Ed"
SUFFIX = MINISIGN_SUFFIX


@dataclass(frozen=True)
class MinisignPublicKey:
    key_id: bytes
    key: Ed25519PublicKey

    @classmethod
    def from_key(cls, key: Ed25519PublicKey, raw: bytes) -> MinisignPublicKey:
        """Wrap ``key`` (raw bytes ``raw``); the key id is derived from the key itself."""
        return cls(hashlib.blake2b(raw, digest_size=8).digest(), key)

    def encode(self, raw: bytes) -> str:
        """The ``.minisign.pub`` file text."""
        blob = base64.b64encode(PUBKEY_ALG + self.key_id + raw).decode()
        return f"untrusted comment: minisign public key {self.key_id_hex}\n{blob}\n"

    @property
    def key_id_hex(self) -> str:
        return self.key_id[::-1].hex().upper()

    @classmethod
    def decode(cls, text: str, where: str) -> MinisignPublicKey:
        lines = text.splitlines()
        if len(lines) < 2 or not lines[0].startswith("untrusted comment:"):
            raise BadInputError(f"{where}: not a minisign public key")
        try:
            blob = base64.b64decode(lines[1], validate=True)
        except binascii.Error as e:
            raise BadInputError(f"{where}: the key is not valid base64") from e
        if len(blob) != 42 or blob[:2] != PUBKEY_ALG:
            raise BadInputError(f"{where}: not an Ed25519 minisign public key")
        return cls(blob[2:10], Ed25519PublicKey.from_public_bytes(blob[10:]))


def trusted_comment(filename: str, version: str, epoch: int) -> str:
    """The trusted comment that binds a signature to a file name and version."""
    return f"timestamp:{epoch}\tfile:{filename}\tversion:{version}\tproduct:ransomeye"


def sign_prehashed(sign: Callable[[bytes], bytes], key_id: bytes, blake2b512: bytes, comment: str) -> str:
    """Return the ``.minisig`` text for a file whose BLAKE2b-512 digest is ``blake2b512``.

    ``sign`` makes a raw Ed25519 signature (a :class:`release.signers.RoleKey`'s ``sign``).
    """
    if len(blake2b512) != 64:
        raise ValueError("blake2b512 must be a 64-byte digest")
    if "\n" in comment or "\r" in comment:
        raise ValueError("a trusted comment is one line")
    sig = sign(blake2b512)
    global_sig = sign(sig + comment.encode())
    return (
        "untrusted comment: signature from RansomEye release key\n"
        f"{base64.b64encode(PREHASHED_ALG + key_id + sig).decode()}\n"
        f"trusted comment: {comment}\n"
        f"{base64.b64encode(global_sig).decode()}\n"
    )


@dataclass(frozen=True)
class Signature:
    algorithm: bytes
    key_id: bytes
    signature: bytes
    comment: str
    global_signature: bytes


def parse_signature(text: str, where: str) -> Signature:
    """Parse a ``.minisig`` file; any malformation is a :class:`VerificationError`."""
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:") or not lines[2].startswith("trusted comment: "):
        raise VerificationError(f"{where}: not a minisign signature file")
    try:
        blob = base64.b64decode(lines[1], validate=True)
        global_sig = base64.b64decode(lines[3], validate=True)
    except binascii.Error as e:
        raise VerificationError(f"{where}: the signature is not valid base64") from e
    if len(blob) != 74 or blob[:2] not in (PREHASHED_ALG, LEGACY_ALG) or len(global_sig) != 64:
        raise VerificationError(f"{where}: the signature has the wrong size or algorithm")
    return Signature(blob[:2], blob[2:10], blob[10:], lines[2][len("trusted comment: ") :], global_sig)


def verify(pub: MinisignPublicKey, sig: Signature, blake2b512: bytes, message: bytes | None, where: str) -> None:
    """Verify ``sig`` for a file (by its BLAKE2b-512 digest, or its bytes for legacy ``Ed``).

    Raises :class:`VerificationError` naming ``where`` if anything does not match.
    """
    if sig.key_id != pub.key_id:
        raise VerificationError(f"{where}: signed by another key (key id {sig.key_id[::-1].hex().upper()})")
    signed = blake2b512 if sig.algorithm == PREHASHED_ALG else message
    if signed is None:
        raise VerificationError(f"{where}: legacy signatures need the whole message")
    try:
        pub.key.verify(sig.signature, signed)
    except InvalidSignature:
        raise VerificationError(f"{where}: the signature does not match the file") from None
    try:
        pub.key.verify(sig.global_signature, sig.signature + sig.comment.encode())
    except InvalidSignature:
        raise VerificationError(f"{where}: the trusted comment was altered") from None
