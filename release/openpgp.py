"""The OpenPGP signature format (RFC 4880 v4), so stock ``gpgv`` and ``sqv`` verify our signatures.

Only one shape is written and read back: a v4 primary key of the legacy EdDSA
algorithm (22) on Ed25519, one user ID with its positive self-certification,
and detached binary-document signatures. Every signature is made through the
signer seam (:meth:`release.signers.RoleKey.sign`): for v4 EdDSA the signed
message is the digest of the hashed data, and the 64-byte Ed25519 signature
is carried as the two MPIs ``r`` and ``s``. A file's signature hashes it with
SHA-256, so the digest pass that hashed the file for its SHA-256 serves (no
second read of an archive); the key's self-certification uses SHA-512. Both
are read back, and a file's signature over SHA-512 (as releases before made)
still verifies; no other hash is accepted.

The output is deterministic: the same key, file, user ID and times give the
same bytes (Ed25519 is deterministic, the armor has no Version or Comment
header). :func:`read_public_key` parses only what this module writes and
refuses anything else as hostile input (:class:`BadInputError`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from release.archive import ArtifactDigest, file_identity, write_bytes_atomic
from release.errors import BadInputError, SigningError, VerificationError
from release.names import OPENPGP_SUFFIX
from release.signers import RoleKey

DEV_KEY_CREATED = 1577836800  # 2020-01-01T00:00:00Z: the development key's fixed creation time
USER_ID = "RansomEye release signing key (development)"
PUBLIC_KEY_BLOCK = "PGP PUBLIC KEY BLOCK"
SIGNATURE_BLOCK = "PGP SIGNATURE"
ARMOR_KINDS = (PUBLIC_KEY_BLOCK, SIGNATURE_BLOCK)
SUFFIX = OPENPGP_SUFFIX

MAX_ARMOR_CHARS = 16 * 1024  # a key or signature of ours is well under 1 KiB
MAX_USER_ID_BYTES = 1024
CHUNK = 1 << 20

_VERSION = 4
_EDDSA = 22
_SHA256 = 8
_SHA512 = 10
_HASHES = {_SHA256: ("SHA-256", hashlib.sha256), _SHA512: ("SHA-512", hashlib.sha512)}
_DOCUMENT_HASH = _SHA256  # what a file's signature is made over (SHA-256 or SHA-512 are read back)
_KEY_HASH = _SHA512  # the self-certification's: the published key's bytes do not change
_ED25519_OID = bytes.fromhex("2b06010401da470f01")  # 1.3.6.1.4.1.11591.15.1
_NATIVE_POINT = 0x40  # the prefix of a native (raw) Ed25519 point
_TAG_SIGNATURE = 2
_TAG_PUBLIC_KEY = 6
_TAG_USER_ID = 13
_BINARY_DOCUMENT = 0x00
_POSITIVE_CERTIFICATION = 0x13
_SUB_CREATION_TIME = 2
_SUB_ISSUER = 16
_SUB_KEY_FLAGS = 27
_SUB_ISSUER_FINGERPRINT = 33
_CERTIFY_AND_SIGN = 0x03
_ARMOR_LINE = 64


@dataclass(frozen=True)
class OpenPGPKey:
    """A public key as read back from a ``.asc`` file this module wrote (its self-signature checked)."""

    public: bytes  # the raw 32-byte Ed25519 public key
    created: int  # the key's creation time (seconds since the epoch), part of its fingerprint
    fingerprint: bytes  # the v4 fingerprint (20 bytes)
    key_id: bytes  # the last 8 bytes of the fingerprint
    user_id: str

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex().upper()


# --- writing ---------------------------------------------------------------------------------------------------------


def raw_public(public: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(public: bytes, created: int) -> bytes:
    """The v4 fingerprint of the raw Ed25519 key ``public`` created at ``created``."""
    return hashlib.sha1(_key_hash_prefix(_public_key_body(public, created)), usedforsecurity=False).digest()


def transferable_public_key(key: RoleKey, user_id: str, created: int) -> bytes:
    """The binary transferable public key of ``key``: key, user ID and its positive self-certification.

    ``created`` is the key's creation time (also the certification's). Deterministic.
    Raises :class:`BadInputError` for a malformed user ID or time, :class:`SigningError` if the key cannot sign.
    """
    uid = _user_id_bytes(user_id)
    _check_time(created, "the key creation time")
    body = _public_key_body(raw_public(key.public), created)
    fpr = fingerprint(raw_public(key.public), created)
    hashed, left16, sig = _sign(
        key,
        _POSITIVE_CERTIFICATION,
        created,
        fpr,
        [_key_hash_prefix(body), b"\xb4" + struct.pack(">I", len(uid)) + uid],
        key_flags=True,
    )
    signature = _signature_body(hashed, fpr, left16, sig)
    return _packet(_TAG_PUBLIC_KEY, body) + _packet(_TAG_USER_ID, uid) + _packet(_TAG_SIGNATURE, signature)


@dataclass(frozen=True)
class DocumentHash:
    """The SHA-256 state after a file's bytes, what a binary-document signature goes on to hash its trailer into."""

    path: Path
    state: Any  # a hashlib SHA-256 object; copied, never updated, by the signature
    sha256: str  # its digest: a signature expecting other bytes refuses

    @classmethod
    def of(cls, path: Path, expect_sha256: str | None = None) -> DocumentHash:
        """Stream ``path`` once; with ``expect_sha256``, refuse bytes that are not those (:class:`BadInputError`).

        Pure hashing (hashlib releases the GIL): files can be hashed on every
        core before one key signs them in turn.
        """
        h = hashlib.sha256()
        for chunk in _file_chunks(path):
            h.update(chunk)
        if expect_sha256 is not None and h.hexdigest() != expect_sha256:
            raise BadInputError(f"{path}: changed since it was hashed; not signed")
        return cls(path, h, h.hexdigest())

    @classmethod
    def known(cls, digest: ArtifactDigest, *, as_read: bool = False) -> DocumentHash | None:
        """The file ``digest`` names, hashed already by the pass that gave its SHA-256, if it is still that file.

        None (the file is to be read) when that pass kept no state, or the
        file's identity (:func:`release.archive.file_identity`: device,
        inode, size, modification and change times) is not the one it had
        then; ``as_read``, whatever became of the file since (the digest is
        the one every other check of the caller uses: an audit's folder). A
        signature continuing from the state covers the bytes the digest
        stands for, as a minisign signature of the same digest does.
        """
        state = digest.sha256_state
        if state is None or state.name != "sha256" or state.hexdigest() != digest.sha256:
            return None
        if as_read:
            return cls(digest.path, state, digest.sha256)
        if digest.identity is None:
            return None
        try:
            now = file_identity(os.stat(digest.path, follow_symlinks=False), digest.size)
        except OSError:
            return None
        return cls(digest.path, state, digest.sha256) if now == digest.identity else None


def detached_signature(
    key: RoleKey,
    path: Path,
    signed_at: int,
    key_created: int,
    expect_sha256: str | None = None,
    document: DocumentHash | None = None,
) -> str:
    """The armored detached binary-document signature of the file ``path``, made at ``signed_at``.

    The file is streamed in chunks. ``key_created`` is the key's creation time
    (it names the key through its fingerprint). Raises :class:`SigningError` if
    ``signed_at`` is before ``key_created`` or the key cannot sign, and
    :class:`BadInputError` if ``path`` is not a readable regular file, or
    (with ``expect_sha256``) not the bytes of that SHA-256: the signature is
    made only once the bytes it covers are known to be those. ``document``,
    the file already hashed (:meth:`DocumentHash.of`), saves the read.
    """
    if document is not None and document.path != path:
        raise ValueError(f"{document.path} was hashed, not {path}")
    if document is not None and expect_sha256 is not None and document.sha256 != expect_sha256:
        raise BadInputError(f"{path}: changed since it was hashed; not signed")
    _check_time(signed_at, "the signature time")
    _check_time(key_created, "the key creation time")
    if signed_at < key_created:
        raise SigningError(
            f"{path}: cannot sign at {signed_at}, before the key was created ({key_created})",
            hint="verifiers refuse a signature older than its key: use a later SOURCE_DATE_EPOCH or the key's real "
            "creation time",
        )
    fpr = fingerprint(raw_public(key.public), key_created)
    hashed = _hashed_part(_BINARY_DOCUMENT, signed_at, fpr, False, _DOCUMENT_HASH)
    digest = _finish((document or DocumentHash.of(path, expect_sha256)).state.copy(), hashed)
    left16, sig = digest[:2], key.sign(digest)
    return armor(_packet(_TAG_SIGNATURE, _signature_body(hashed, fpr, left16, sig)), SIGNATURE_BLOCK)


def write_public_key(keys_dir: Path, key: RoleKey, created: int, user_id: str = USER_ID) -> Path:
    """Write ``keys/<role>.asc``, the armored OpenPGP public key of ``key``; return its path.

    An existing file that holds the same key is kept unchanged (its creation
    time, :func:`read_public_key_file`'s ``created``, is the one to sign with,
    whatever ``created`` says). One holding another key is a
    :class:`SigningError`: a public key is never regenerated silently.
    """
    path = keys_dir / f"{key.role}{SUFFIX}"
    if path.exists() or path.is_symlink():
        existing = read_public_key_file(path)
        if existing.public != raw_public(key.public):
            raise SigningError(
                f"{path}: holds another key (fingerprint {existing.fingerprint_hex}) than the {key.role} key "
                f"({key.uri})",
                hint="restore the matching pair, or remove the file to export this key; a public key is never "
                "regenerated silently",
            )
        return path
    text = armor(transferable_public_key(key, user_id, created), PUBLIC_KEY_BLOCK)
    write_bytes_atomic(path, text.encode(), "the OpenPGP public key")
    return path


def armor(data: bytes, kind: str) -> str:
    """ASCII armor of ``data`` (``kind``: one of :data:`ARMOR_KINDS`), with its CRC24 and no headers."""
    if kind not in ARMOR_KINDS:
        raise ValueError(f"unknown armor kind {kind!r}")
    b64 = base64.b64encode(data).decode()
    lines = [b64[i : i + _ARMOR_LINE] for i in range(0, len(b64), _ARMOR_LINE)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode()
    return "\n".join([f"-----BEGIN {kind}-----", "", *lines, f"={crc}", f"-----END {kind}-----", ""])


# --- reading ---------------------------------------------------------------------------------------------------------


def dearmor(text: str, where: str = "the armored data", kind: str | None = None) -> bytes:
    """The bytes inside the ASCII armor ``text`` (of ``kind`` if given), its CRC24 checked.

    Strict: one block, as :func:`armor` writes it (headers are refused too).
    Anything else is a :class:`BadInputError` naming ``where``.
    """
    if len(text) > MAX_ARMOR_CHARS:
        raise BadInputError(f"{where}: too large for an OpenPGP key or signature ({len(text)} characters)")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 5:
        raise BadInputError(f"{where}: not an ASCII-armored OpenPGP block")
    begin, blank, *body, crc_line, end = lines
    kinds = (kind,) if kind is not None else ARMOR_KINDS
    found = next((k for k in kinds if begin == f"-----BEGIN {k}-----"), None)
    if found is None:
        raise BadInputError(f"{where}: not an armored {' or '.join(kinds)}")
    if end != f"-----END {found}-----":
        raise BadInputError(f"{where}: the armor's END line does not match its BEGIN line")
    if blank != "":
        raise BadInputError(f"{where}: armor headers are not accepted (expected a blank line after BEGIN)")
    if not crc_line.startswith("=") or len(crc_line) != 5:
        raise BadInputError(f"{where}: the armor has no CRC24 line")
    try:
        data = base64.b64decode("".join(body), validate=True)
        crc = base64.b64decode(crc_line[1:], validate=True)
    except binascii.Error as e:
        raise BadInputError(f"{where}: the armor is not valid base64") from e
    if not data:
        raise BadInputError(f"{where}: the armor is empty")
    if int.from_bytes(crc, "big") != _crc24(data):
        raise BadInputError(f"{where}: the armor's CRC24 does not match (damaged)")
    return data


def read_public_key(text: str, where: str) -> OpenPGPKey:
    """Parse an armored public key written by :func:`write_public_key`, and check its self-signature.

    Accepts only a v4 EdDSA (Ed25519) primary key with one user ID and its
    positive self-certification; anything else (other algorithms, subkeys,
    truncated or oversized packets, a bad CRC, a bad self-signature) is a
    :class:`BadInputError` naming ``where``.
    """
    packets = list(_packets(dearmor(text, where, PUBLIC_KEY_BLOCK), where))
    tags = [tag for tag, _ in packets]
    if tags != [_TAG_PUBLIC_KEY, _TAG_USER_ID, _TAG_SIGNATURE]:
        raise BadInputError(
            f"{where}: expected a public key, one user ID and its self-signature; found packet tags {tags}",
            hint="only keys exported by release/openpgp.py are read",
        )
    (_, body), (_, uid), (_, sig_body) = packets
    public, created = _parse_public_key(body, where)
    fpr = fingerprint(public, created)
    try:
        user_id = uid.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{where}: the user ID is not UTF-8") from None
    if len(uid) > MAX_USER_ID_BYTES or not user_id.isprintable():
        raise BadInputError(f"{where}: the user ID is too long or holds control characters")
    sig = _parse_signature(sig_body, where, (_KEY_HASH,))
    if sig.sig_type != _POSITIVE_CERTIFICATION or sig.flags != _CERTIFY_AND_SIGN:
        raise BadInputError(f"{where}: the self-signature is not a positive certification for certify and sign")
    if sig.issuer_fpr != fpr or sig.issuer_id != fpr[-8:]:
        raise BadInputError(f"{where}: the self-signature names another key")
    if sig.created < created:
        raise BadInputError(f"{where}: the self-signature is older than the key")
    digest = _digest([_key_hash_prefix(body), b"\xb4" + struct.pack(">I", len(uid)) + uid], sig.hashed, _KEY_HASH)
    if digest[:2] != sig.left16:
        raise BadInputError(f"{where}: the self-signature does not match the key and user ID")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig.r + sig.s, digest)
    except (InvalidSignature, ValueError):
        raise BadInputError(f"{where}: the self-signature does not match the key and user ID") from None
    return OpenPGPKey(public, created, fpr, fpr[-8:], user_id)


def verify_detached(key: OpenPGPKey, text: str, path: Path, where: str, known: ArtifactDigest | None = None) -> int:
    """Check the armored detached signature ``text`` (:func:`detached_signature`'s) of the file ``path`` by ``key``.

    Streams the file, unless ``known`` is its digest with the SHA-256 state
    that gave it and the signature is over SHA-256 (it then checks the bytes
    that digest stands for). Returns the signature's creation time; raises
    :class:`VerificationError` naming ``where`` when it is not a binary-document
    signature by ``key`` over exactly these bytes.
    """
    created, issuer = verify_detached_by(key.public, text, path, where, known)
    if issuer != key.fingerprint:
        raise VerificationError(f"{where}: made by the key {issuer.hex().upper()}, not {key.fingerprint_hex}")
    if created < key.created:
        raise VerificationError(f"{where}: made before the key was created")
    return created


def verify_detached_by(
    public: bytes, text: str, path: Path, where: str, known: ArtifactDigest | None = None, *, as_read: bool = False
) -> tuple[int, bytes]:
    """:func:`verify_detached` by the raw Ed25519 key ``public``, whatever OpenPGP creation time it was given.

    The issuer fingerprint is hashed into what is signed, so the signature
    binds it; returns (the signature's creation time, that fingerprint).
    ``known``: the file's digest with the state of the pass that gave it,
    continued as :meth:`DocumentHash.known` allows (``as_read`` passed on).
    """
    try:
        packets = list(_packets(dearmor(text, where, SIGNATURE_BLOCK), where))
        if [tag for tag, _ in packets] != [_TAG_SIGNATURE]:
            raise BadInputError(f"{where}: not one signature packet")
        sig = _parse_signature(packets[0][1], where, (_SHA256, _SHA512))
    except BadInputError as e:
        raise VerificationError(e.message) from None
    if sig.sig_type != _BINARY_DOCUMENT or sig.flags is not None:
        raise VerificationError(f"{where}: not a signature of a file")
    if sig.issuer_id != sig.issuer_fpr[-8:]:
        raise VerificationError(f"{where}: its issuer key id and fingerprint disagree")
    usable = known is not None and known.path == path and sig.hash_algorithm == _SHA256
    document = DocumentHash.known(known, as_read=as_read) if usable and known is not None else None
    try:
        if document is not None:
            digest = _finish(document.state.copy(), sig.hashed)
        else:
            digest = _digest(_file_chunks(path), sig.hashed, sig.hash_algorithm)
    except BadInputError as e:
        raise VerificationError(e.message) from None
    try:
        if digest[:2] != sig.left16:
            raise InvalidSignature
        Ed25519PublicKey.from_public_bytes(public).verify(sig.r + sig.s, digest)
    except (InvalidSignature, ValueError):
        raise VerificationError(f"{where}: the signature does not match {path.name}") from None
    return sig.created, sig.issuer_fpr


def read_public_key_file(path: Path) -> OpenPGPKey:
    """:func:`read_public_key` of the file ``path`` (a regular file; at most :data:`MAX_ARMOR_CHARS` read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the OpenPGP public key ({e.strerror or e})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadInputError(f"{path}: not a regular file")
        data = f.read(MAX_ARMOR_CHARS + 1)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not an ASCII-armored OpenPGP key") from None
    return read_public_key(text, str(path))


# --- internals -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    sig_type: int
    created: int
    flags: int | None
    issuer_fpr: bytes
    issuer_id: bytes
    hashed: bytes  # version .. hashed subpackets: the part hashed with the trailer
    hash_algorithm: int
    left16: bytes
    r: bytes
    s: bytes


def _check_time(value: int, what: str) -> None:
    if not 0 <= value < 1 << 32:
        raise BadInputError(f"{what} ({value}) is not a 32-bit OpenPGP time")


def _user_id_bytes(user_id: str) -> bytes:
    uid = user_id.encode("utf-8")
    if not uid or len(uid) > MAX_USER_ID_BYTES or not user_id.isprintable():
        raise BadInputError(f"the user ID {user_id!r} is empty, too long or holds control characters")
    return uid


def _mpi(value: bytes) -> bytes:
    stripped = value.lstrip(b"\x00")
    bits = len(stripped) * 8 - (8 - stripped[0].bit_length()) if stripped else 0
    return struct.pack(">H", bits) + stripped


def _public_key_body(public: bytes, created: int) -> bytes:
    oid = bytes([len(_ED25519_OID)]) + _ED25519_OID
    return struct.pack(">BIB", _VERSION, created, _EDDSA) + oid + _mpi(bytes([_NATIVE_POINT]) + public)


def _key_hash_prefix(body: bytes) -> bytes:
    return b"\x99" + struct.pack(">H", len(body)) + body


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data  # every subpacket of ours is under 192 bytes


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet header and ``body``."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + struct.pack(">I", n)
    return bytes([0xC0 | tag]) + length + body


def _hashed_part(sig_type: int, created: int, fpr: bytes, key_flags: bool, hash_algorithm: int) -> bytes:
    subpackets = _subpacket(_SUB_CREATION_TIME, struct.pack(">I", created))
    if key_flags:
        subpackets += _subpacket(_SUB_KEY_FLAGS, bytes([_CERTIFY_AND_SIGN]))
    subpackets += _subpacket(_SUB_ISSUER_FINGERPRINT, bytes([_VERSION]) + fpr)
    return struct.pack(">BBBBH", _VERSION, sig_type, _EDDSA, hash_algorithm, len(subpackets)) + subpackets


def _digest(data: Iterator[bytes] | list[bytes], hashed: bytes, hash_algorithm: int) -> bytes:
    h = _HASHES[hash_algorithm][1]()
    for chunk in data:
        h.update(chunk)
    return _finish(h, hashed)


def _finish(h: Any, hashed: bytes) -> bytes:
    """The signed digest: the hash ``h`` of the data, continued with the signature's hashed part and v4 trailer."""
    h.update(hashed)
    h.update(b"\x04\xff" + struct.pack(">I", len(hashed)))
    digest: bytes = h.digest()
    return digest


def _sign(
    key: RoleKey,
    sig_type: int,
    created: int,
    fpr: bytes,
    data: Iterator[bytes] | list[bytes],
    *,
    key_flags: bool = False,
) -> tuple[bytes, bytes, bytes]:
    """The hashed part, the digest's left 16 bits and the Ed25519 signature of the digest."""
    hashed = _hashed_part(sig_type, created, fpr, key_flags, _KEY_HASH)
    digest = _digest(data, hashed, _KEY_HASH)
    return hashed, digest[:2], key.sign(digest)


def _signature_body(hashed: bytes, fpr: bytes, left16: bytes, sig: bytes) -> bytes:
    unhashed = _subpacket(_SUB_ISSUER, fpr[-8:])
    return hashed + struct.pack(">H", len(unhashed)) + unhashed + left16 + _mpi(sig[:32]) + _mpi(sig[32:])


def _file_chunks(path: Path) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the file ({e.strerror or e})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadInputError(f"{path}: not a regular file, not read")
        while chunk := f.read(CHUNK):
            yield chunk


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


class _Reader:
    """A bounded cursor over untrusted bytes: every read past the end is a :class:`BadInputError`."""

    def __init__(self, data: bytes, where: str, what: str) -> None:
        self.data, self.pos, self.where, self.what = data, 0, where, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BadInputError(f"{self.where}: {self.what} is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def mpi(self, max_bytes: int) -> bytes:
        bits = self.u16()
        n = (bits + 7) // 8
        if n > max_bytes:
            raise BadInputError(f"{self.where}: {self.what} holds an oversized number")
        value = self.take(n)
        if n and value[0].bit_length() != bits - (n - 1) * 8:
            raise BadInputError(f"{self.where}: {self.what} holds a malformed number")
        return value

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)

    def end(self) -> None:
        if not self.done:
            raise BadInputError(f"{self.where}: {self.what} has trailing bytes")


def _packets(data: bytes, where: str) -> Iterator[tuple[int, bytes]]:
    """The (tag, body) of each packet (old or new format, no partial lengths)."""
    r = _Reader(data, where, "a packet")
    while not r.done:
        head = r.byte()
        if not head & 0x80:
            raise BadInputError(f"{where}: not an OpenPGP packet (header byte {head:#04x})")
        if head & 0x40:
            tag = head & 0x3F
            first = r.byte()
            if first < 192:
                n = first
            elif first < 224:
                n = ((first - 192) << 8) + r.byte() + 192
            elif first == 255:
                n = r.u32()
            else:
                raise BadInputError(f"{where}: partial-length packets are not accepted")
        else:
            tag, kind = (head >> 2) & 0x0F, head & 0x03
            if kind == 3:
                raise BadInputError(f"{where}: indeterminate-length packets are not accepted")
            n = int.from_bytes(r.take(1 << kind), "big")
        yield tag, r.take(n)


def _parse_public_key(body: bytes, where: str) -> tuple[bytes, int]:
    r = _Reader(body, where, "the public key packet")
    version, created, algorithm = r.byte(), r.u32(), r.byte()
    if version != _VERSION:
        raise BadInputError(f"{where}: a version {version} key; only v4 keys are accepted")
    if algorithm != _EDDSA:
        raise BadInputError(f"{where}: public key algorithm {algorithm}; only EdDSA (22) on Ed25519 is accepted")
    if r.take(r.byte()) != _ED25519_OID:
        raise BadInputError(f"{where}: the EdDSA key is not on Ed25519")
    point = r.mpi(33)
    r.end()
    if len(point) != 33 or point[0] != _NATIVE_POINT:
        raise BadInputError(f"{where}: the Ed25519 public point is not in native form")
    return point[1:], created


def _parse_signature(body: bytes, where: str, hashes: tuple[int, ...]) -> _Signature:
    """A signature packet of ours, made over one of ``hashes`` (else :class:`BadInputError`)."""
    r = _Reader(body, where, "the signature packet")
    version, sig_type, algorithm, hash_algorithm = r.byte(), r.byte(), r.byte(), r.byte()
    if (version, algorithm) != (_VERSION, _EDDSA) or hash_algorithm not in hashes:
        over = " or ".join(_HASHES[h][0] for h in hashes)
        raise BadInputError(f"{where}: only v4 EdDSA signatures over {over} are accepted")
    hashed_subpackets = _subpackets(r.take(r.u16()), where)
    hashed = body[: r.pos]
    unhashed_subpackets = _subpackets(r.take(r.u16()), where)
    left16 = r.take(2)
    sig_r, sig_s = r.mpi(32), r.mpi(32)
    r.end()
    allowed_hashed = {_SUB_CREATION_TIME, _SUB_KEY_FLAGS, _SUB_ISSUER_FINGERPRINT}
    if not set(hashed_subpackets) <= allowed_hashed or set(unhashed_subpackets) != {_SUB_ISSUER}:
        raise BadInputError(f"{where}: the signature carries subpackets this module does not write")
    created = hashed_subpackets.get(_SUB_CREATION_TIME)
    issuer_fpr = hashed_subpackets.get(_SUB_ISSUER_FINGERPRINT, b"")
    flags = hashed_subpackets.get(_SUB_KEY_FLAGS)
    if created is None or len(created) != 4 or len(issuer_fpr) != 21 or issuer_fpr[0] != _VERSION:
        raise BadInputError(f"{where}: the signature lacks its creation time or issuer fingerprint")
    if flags is not None and len(flags) != 1:
        raise BadInputError(f"{where}: malformed key flags")
    return _Signature(
        sig_type,
        int.from_bytes(created, "big"),
        flags[0] if flags is not None else None,
        issuer_fpr[1:],
        unhashed_subpackets[_SUB_ISSUER],
        hashed,
        hash_algorithm,
        left16,
        sig_r.rjust(32, b"\x00"),
        sig_s.rjust(32, b"\x00"),
    )


def _subpackets(data: bytes, where: str) -> dict[int, bytes]:
    """Subpackets by type; a repeated type or a critical unknown one is refused."""
    r = _Reader(data, where, "a signature subpacket")
    found: dict[int, bytes] = {}
    while not r.done:
        first = r.byte()
        if first < 192:
            n = first
        elif first < 255:
            n = ((first - 192) << 8) + r.byte() + 192
        else:
            n = r.u32()
        if n == 0:
            raise BadInputError(f"{where}: an empty signature subpacket")
        content = r.take(n)
        kind = content[0] & 0x7F
        if kind in found:
            raise BadInputError(f"{where}: subpacket {kind} appears twice")
        found[kind] = content[1:]
    return found
