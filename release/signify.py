"""The OpenBSD signify format, so stock ``signify -C`` checks our signed checksum list.

Formats (each file is ``untrusted comment: <text>\\n`` then one base64 line and ``\\n``):

* public key: ``"Ed" || keynum(8) || ed25519_public(32)``
* signature:  ``"Ed" || keynum(8) || ed25519(message)(64)``; in the embedded
  form (``SHA256.sig``, ``signify -e``) the message follows the base64 line.

The message of ``SHA256.sig`` is BSD-style checksum lines,
``SHA256 (name) = hex\\n``. The key number is derived from the public key
(signify picks it at random), so every output here is deterministic. Signing
goes only through :meth:`release.signers.RoleKey.sign`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from release.errors import BadInputError, VerificationError
from release.names import SIGNIFY_SUMS_NAME
from release.signers import RoleKey

SUMS_NAME = SIGNIFY_SUMS_NAME  # the signed checksum list of a release, checked by `signify -C -x SHA256.sig`
PKALG = b"Ed"
PUBLIC_COMMENT = "RansomEye release signify public key"
SIGNATURE_COMMENT = "verify with release.signify.pub"
COMMENT_PREFIX = "untrusted comment: "
MAX_COMMENT_CHARS = 1000  # signify's own limit is 1024 bytes for the whole line
MAX_NAME_CHARS = 255
MAX_SIGNED_CHARS = 1 << 20  # a checksum list of ours is a few KiB
MAX_PUBLIC_CHARS = 4096

_KEYNUM_BYTES = 8
_PUBLIC_BYTES = len(PKALG) + _KEYNUM_BYTES + 32
_SIGNATURE_BYTES = len(PKALG) + _KEYNUM_BYTES + 64
_HEX = re.compile(r"[0-9a-f]{64}")
_LINE = re.compile(r"SHA256 \((?P<name>[^\n]*)\) = (?P<hex>[0-9a-f]{64})")
_FORBIDDEN_IN_NAME = set("()/\\=")


@dataclass(frozen=True)
class _Blob:
    keynum: bytes
    payload: bytes


def keynum(public: Ed25519PublicKey) -> bytes:
    """The 8-byte key number of ``public``: the first 8 bytes of SHA-256 of the raw key (deterministic)."""
    return hashlib.sha256(_raw(public)).digest()[:_KEYNUM_BYTES]


def public_key_text(public: Ed25519PublicKey, comment: str = PUBLIC_COMMENT) -> str:
    """The text of a signify public key file (``keys/release.signify.pub``)."""
    return _file(comment, PKALG + keynum(public) + _raw(public))


def signed_checksums(key: RoleKey, entries: Iterable[tuple[str, str]], comment: str = SIGNATURE_COMMENT) -> str:
    """The embedded-message signed checksum list (``SHA256.sig``) of ``entries`` (name, SHA-256 hex), in order.

    Raises :class:`BadInputError` for an empty list, a repeated name, a name
    that signify cannot parse or that is not a plain file name (path
    separators, parentheses, whitespace, control characters), or a malformed
    digest; :class:`SigningError` if the key cannot sign.
    """
    lines = []
    seen: set[str] = set()
    for name, digest in entries:
        _check_name(name, BadInputError)
        if not _HEX.fullmatch(digest):
            raise BadInputError(f"{name!r}: {digest!r} is not a lowercase SHA-256 hex digest")
        if name in seen:
            raise BadInputError(f"{name!r} is listed twice in the checksum list")
        seen.add(name)
        lines.append(f"SHA256 ({name}) = {digest}\n")
    if not lines:
        raise BadInputError("an empty checksum list cannot be signed", hint="nothing to release: check the artifacts")
    message = "".join(lines)
    signature = key.sign(message.encode("utf-8"))
    return _file(comment, PKALG + keynum(key.public) + signature) + message


def verify_signed_checksums(public_text: str, sig_text: str) -> list[tuple[str, str]]:
    """Check ``sig_text`` (a ``SHA256.sig``) with the signify public key ``public_text``; return its entries.

    Strict: any malformation, another key, a bad signature, a malformed or
    repeated line, or an empty list is a :class:`VerificationError`.
    """
    if len(public_text) > MAX_PUBLIC_CHARS:
        raise VerificationError("the signify public key is too large")
    if len(sig_text) > MAX_SIGNED_CHARS:
        raise VerificationError("the signed checksum list is too large")
    pub = _parse(public_text, _PUBLIC_BYTES, "the signify public key", embedded=False)[0]
    sig, message = _parse(sig_text, _SIGNATURE_BYTES, "the signed checksum list", embedded=True)
    if sig.keynum != pub.keynum:
        raise VerificationError(
            f"the checksum list is signed by another key (key number {sig.keynum.hex()}, expected {pub.keynum.hex()})"
        )
    try:
        Ed25519PublicKey.from_public_bytes(pub.payload).verify(sig.payload, message.encode("utf-8"))
    except (InvalidSignature, ValueError):
        raise VerificationError("the checksum list does not match its signature (tampered)") from None
    return _entries(message)


# --- internals -------------------------------------------------------------------------------------------------------


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _file(comment: str, blob: bytes) -> str:
    if len(comment) > MAX_COMMENT_CHARS or not comment.isprintable():
        raise BadInputError(f"the untrusted comment {comment!r} is too long or holds control characters")
    return f"{COMMENT_PREFIX}{comment}\n{base64.b64encode(blob).decode()}\n"


def _check_name(name: str, error: type[BadInputError] | type[VerificationError]) -> None:
    if (
        not name
        or len(name) > MAX_NAME_CHARS
        or name in (".", "..")
        or not name.isprintable()
        or any(c.isspace() for c in name)
        or _FORBIDDEN_IN_NAME & set(name)
    ):
        raise error(
            f"{name!r} is not a plain file name for a checksum list",
            hint="names are printable, without whitespace, path separators, '(', ')' or '='",
        )


def _parse(text: str, size: int, what: str, *, embedded: bool) -> tuple[_Blob, str]:
    """The blob of a signify file and, if ``embedded``, the message after it."""
    parts = text.split("\n", 2)
    if len(parts) != 3 or not parts[0].startswith(COMMENT_PREFIX) or len(parts[0]) > 1024:
        raise VerificationError(f"{what} is not a signify file (an untrusted comment line, then a base64 line)")
    if not embedded and parts[2] != "":
        raise VerificationError(f"{what} has trailing text")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise VerificationError(f"{what} is not valid base64") from None
    if len(blob) != size or blob[:2] != PKALG:
        raise VerificationError(f"{what} has the wrong size or is not an Ed25519 signify blob")
    return _Blob(blob[2:10], blob[10:]), parts[2]


def _entries(message: str) -> list[tuple[str, str]]:
    if not message.endswith("\n"):
        raise VerificationError("the checksum list does not end with a newline")
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in message[:-1].split("\n"):
        match = _LINE.fullmatch(line)
        if match is None:
            raise VerificationError(f"the checksum list holds a malformed line {line[:100]!r}")
        name = match["name"]
        _check_name(name, VerificationError)
        if name in seen:
            raise VerificationError(f"the checksum list names {name!r} twice")
        seen.add(name)
        entries.append((name, match["hex"]))
    return entries
