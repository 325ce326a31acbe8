"""Private keys in their binary forms: DER (PKCS#8, PKCS#1, SEC1, DSA, PKCS#12) and OpenPGP packets.

Pure functions on bytes. A candidate is found by a zero-width regular
expression (so overlapping candidates are all tried) and then parsed with a
strict, bounded reader: DER lengths must be definite and minimal and the
children must tile their parent exactly; OpenPGP multiprecision integers must
be consistent with their bit counts and the curve OIDs known. Random bytes,
certificates and public keys do not pass; every private key these formats
can hold does, encrypted or not (an encrypted key shipped is still a key
shipped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_SEQ, _INT, _BITS, _OCTETS, _OID = 0x30, 0x02, 0x03, 0x04, 0x06
_MAX_CHILDREN = 16

# AlgorithmIdentifier OIDs of private keys (DER content bytes).
_KEY_ALGORITHMS = {
    bytes.fromhex("2a864886f70d010101"): "RSA",  # rsaEncryption
    bytes.fromhex("2a864886f70d01010a"): "RSA-PSS",
    bytes.fromhex("2a8648ce3d0201"): "EC",  # id-ecPublicKey
    bytes.fromhex("2a8648ce380401"): "DSA",
    bytes.fromhex("2a864886f70d010301"): "DH",
    bytes.fromhex("2a8648ce3e0201"): "DH",  # dhpublicnumber
    bytes.fromhex("2b656e"): "X25519",
    bytes.fromhex("2b656f"): "X448",
    bytes.fromhex("2b6570"): "Ed25519",
    bytes.fromhex("2b6571"): "Ed448",
    bytes.fromhex("2a811ccf5501822d"): "SM2",
    **{bytes.fromhex("6086480165030403") + bytes([n]): "ML-DSA/SLH-DSA" for n in range(0x11, 0x20)},
    **{bytes.fromhex("6086480165030404") + bytes([n]): "ML-KEM" for n in (1, 2, 3)},
    **{bytes.fromhex("2a85030701010101") + bytes([n]): "GOST" for n in (1, 2)},
}
# Password-based encryption of a PKCS#8 key: PBES1/PBES2 and the PKCS#12 PBE schemes (OID prefixes).
_ENCRYPTION_PREFIXES = (bytes.fromhex("2a864886f70d0105"), bytes.fromhex("2a864886f70d010c01"))
# PKCS#12 bags that hold a private key (keyBag, pkcs8ShroudedKeyBag), as they appear in DER.
_KEY_BAGS = (bytes.fromhex("060b2a864886f70d010c0a0101"), bytes.fromhex("060b2a864886f70d010c0a0102"))

_DER_CANDIDATE = re.compile(
    rb"\x30(?:[\x00-\x7f]|\x81[\x80-\xff]|\x82[\x01-\xff][\x00-\xff]|\x83[\x01-\xff][\x00-\xff]{2})"
    rb"(?:\x02\x01[\x00\x01\x03]|\x30)",
    re.DOTALL,
)


@dataclass(frozen=True)
class KeyBlob:
    """A private key found in binary data: where it starts and ends, and what it is."""

    start: int
    end: int
    kind: str


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """(tag, content start, content end) of the DER element at ``pos``, or None if it is not strict DER."""
    if pos + 2 > end:
        return None
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        return None
    first = data[pos + 1]
    if first < 0x80:
        length, start = first, pos + 2
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or pos + 2 + n > end or data[pos + 2] == 0:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        if length < 0x80:
            return None
        start = pos + 2 + n
    if start + length > end:
        return None
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]] | None:
    """The elements that exactly tile ``data[start:end]``, or None."""
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        if len(out) == _MAX_CHILDREN:
            return None
        element = _tlv(data, pos, end)
        if element is None:
            return None
        out.append(element)
        pos = element[2]
    return out


def _small_int(data: bytes, element: tuple[int, int, int]) -> int | None:
    tag, start, end = element
    if tag != _INT or end - start != 1:
        return None
    return data[start]


def _der_kind(data: bytes, top: tuple[int, int, int]) -> str | None:
    """What private key the SEQUENCE ``top`` is, or None."""
    kids = _children(data, top[1], top[2])
    if not kids:
        return None
    tags = [k[0] for k in kids]
    version = _small_int(data, kids[0])
    if tags[0] == _SEQ and tags[1:] == [_OCTETS] and kids[1][2] - kids[1][1] >= 16:
        algorithm = _children(data, kids[0][1], kids[0][2])
        if algorithm and algorithm[0][0] == _OID:
            oid = data[algorithm[0][1] : algorithm[0][2]]
            if oid.startswith(_ENCRYPTION_PREFIXES):
                return "an encrypted PKCS#8 private key"
        return None
    if version is None:
        return None
    if version == 0 and tags == [_INT] * 9 and kids[1][2] - kids[1][1] >= 64:
        return "a PKCS#1 RSA private key"
    if version == 0 and tags == [_INT] * 6 and kids[1][2] - kids[1][1] >= 64:
        return "a DSA private key"
    if (
        version in (0, 1)
        and len(kids) >= 3
        and tags[1:3] == [_SEQ, _OCTETS]
        and all(t in (0xA0, 0x81, 0xA1) for t in tags[3:])
        and kids[2][2] - kids[2][1] >= 16
    ):
        algorithm = _children(data, kids[1][1], kids[1][2])
        if algorithm and algorithm[0][0] == _OID:
            name = _KEY_ALGORITHMS.get(data[algorithm[0][1] : algorithm[0][2]])
            if name is not None:
                return f"a PKCS#8 {name} private key"
        return None
    if (
        version == 1
        and tags[1] == _OCTETS
        and 16 <= kids[1][2] - kids[1][1] <= 80
        and tags[2:] in ([0xA0], [0xA1], [0xA0, 0xA1])
    ):
        return "a SEC1 EC private key"
    if version == 3 and len(kids) in (2, 3) and tags[1] == _SEQ and any(b in data[top[1] : top[2]] for b in _KEY_BAGS):
        return "a PKCS#12 key store holding a private key"
    return None


def der_private_keys(data: bytes) -> Iterator[KeyBlob]:
    """Every DER private key in ``data``, in order; a key inside another one is not reported again."""
    return _outermost(_DER_CANDIDATE, data, _der_key_at)


def _der_key_at(data: bytes, start: int) -> KeyBlob | None:
    top = _tlv(data, start, len(data))
    if top is None or top[0] != _SEQ:
        return None
    kind = _der_kind(data, top)
    return None if kind is None else KeyBlob(start, top[2], kind)


# --------------------------------------------------------------------------- OpenPGP

_PGP_RSA, _PGP_ELGAMAL, _PGP_DSA, _PGP_ECDH, _PGP_ECDSA, _PGP_EDDSA = (1, 2, 3), 16, 17, 18, 19, 22
_PGP_NATIVE = {25: 32, 26: 56, 27: 32, 28: 57}  # X25519, X448, Ed25519, Ed448: raw key sizes (RFC 9580)
_PGP_CURVES = {
    bytes.fromhex(h)
    for h in (
        "2a8648ce3d030107",  # NIST P-256
        "2b81040022",  # NIST P-384
        "2b81040023",  # NIST P-521
        "2b8104000a",  # secp256k1
        "2b2403030208010107",  # brainpoolP256r1
        "2b240303020801010b",  # brainpoolP384r1
        "2b240303020801010d",  # brainpoolP512r1
        "2b06010401da470f01",  # Ed25519 (legacy EdDSA)
        "2b060104019755010501",  # Curve25519 (legacy ECDH)
        "2b6571",  # Ed448
        "2b656f",  # X448
    )
}
_PGP_CIPHERS = frozenset((1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13))
_PGP_HASHES = frozenset((1, 2, 3, 8, 9, 10, 11, 12, 14))
# A secret-key (tag 5) or secret-subkey (tag 7) packet header, old or new format, then a v4-v6 key
# body's version, creation time and public-key algorithm.
_PGP_CANDIDATE = re.compile(
    rb"[\x94-\x96\x9c-\x9e\xc5\xc7]"  # one character class first: the regex engine skips ahead fast
    rb"(?:(?<=[\x94\x9c]).|(?<=[\x95\x9d])..|(?<=[\x96\x9e])....|(?<=[\xc5\xc7])(?:[\x00-\xbf]|[\xc0-\xdf].|\xff....))"
    rb"[\x04-\x06]....[\x01-\x03\x10-\x13\x16\x19-\x1c]",
    re.DOTALL,
)


def _outermost(
    pattern: re.Pattern[bytes], data: bytes, key_at: Callable[[bytes, int], KeyBlob | None]
) -> Iterator[KeyBlob]:
    """The keys ``key_at`` finds where ``pattern`` matches, in order, none inside one already found."""
    covered = 0
    for start in _candidates(pattern, data):
        if start >= covered and (blob := key_at(data, start)) is not None:
            covered = blob.end
            yield blob


def _candidates(pattern: re.Pattern[bytes], data: bytes) -> Iterator[int]:
    """Every offset where ``pattern`` matches, overlapping ones included."""
    pos = 0
    while (m := pattern.search(data, pos)) is not None:
        yield m.start()
        pos = m.start() + 1


class _Short(Exception):
    """The packet is not what it claims to be."""


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Short
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def mpi(self, min_bits: int = 1, max_bits: int = 16384) -> bytes:
        head = self.take(2)
        bits = int.from_bytes(head, "big")
        if not min_bits <= bits <= max_bits:
            raise _Short
        value = self.take((bits + 7) // 8)
        if value[0].bit_length() != bits - 8 * (len(value) - 1):
            raise _Short
        return head + value

    def oid(self) -> None:
        n = self.byte()
        if n in (0, 0xFF) or self.take(n) not in _PGP_CURVES:
            raise _Short


def _pgp_header(data: bytes, pos: int) -> tuple[int, int] | None:
    """(body start, body end) of the packet whose header is at ``pos``."""
    b = data[pos]
    if b & 0x40 == 0:  # old format: the length's size is in the low two bits
        size = (1, 2, 4)[b & 3]
        start = pos + 1 + size
        length = int.from_bytes(data[pos + 1 : start], "big")
    else:
        o1 = data[pos + 1]
        if o1 < 192:
            start, length = pos + 2, o1
        elif o1 < 224:
            start, length = pos + 3, ((o1 - 192) << 8) + data[pos + 2] + 192
        else:
            start, length = pos + 6, int.from_bytes(data[pos + 2 : pos + 6], "big")
    end = start + length
    return (start, end) if end <= len(data) else None


def _pgp_clear_secret(r: _Reader, version: int, algorithm: int) -> None:
    """Unprotected secret material: it must fill the packet exactly (and match its v4 checksum)."""
    checksum = 2 if version == 4 else 0
    if algorithm in _PGP_NATIVE:
        secret = r.take(_PGP_NATIVE[algorithm])
    else:
        secret = b""
        while r.end - r.pos > checksum:
            secret += r.mpi()
    if checksum and r.take(2) != (sum(secret) & 0xFFFF).to_bytes(2, "big"):
        raise _Short
    if r.pos != r.end:
        raise _Short


def _pgp_protection(r: _Reader, version: int, usage: int) -> None:
    """Password-protected secret material: a known cipher and S2K, then an IV and ciphertext."""
    if version >= 5:
        r.byte()  # the count of the parameters that follow
    if r.byte() not in _PGP_CIPHERS:
        raise _Short
    if usage == 253 and r.byte() not in (1, 2, 3):  # AEAD mode
        raise _Short
    s2k = r.byte()
    if s2k in (0, 1, 3):
        if r.byte() not in _PGP_HASHES:
            raise _Short
        r.take({0: 0, 1: 8, 3: 9}[s2k])  # salt, and the iteration count
    elif s2k == 4:
        r.take(16 + 3)  # Argon2: salt, passes, parallelism, memory
    else:
        raise _Short  # includes GnuPG's stubs (101): a key on a card holds no secret here
    if r.end - r.pos < 16:
        raise _Short


def _pgp_secret_key(data: bytes, start: int, end: int) -> bool:
    r = _Reader(data, start, end)
    try:
        version = r.byte()
        r.take(4)  # creation time
        algorithm = r.byte()
        if version in (5, 6):
            material = int.from_bytes(r.take(4), "big")
            if material > end - r.pos:
                raise _Short
        if algorithm in _PGP_RSA:
            if r.mpi(min_bits=512)[-1] & 1 == 0:  # an RSA modulus is odd
                raise _Short
            r.mpi(max_bits=64)
        elif algorithm in (_PGP_ELGAMAL, _PGP_DSA):
            r.mpi(min_bits=512)
            if algorithm == _PGP_DSA:
                r.mpi(min_bits=160, max_bits=512)
            r.mpi()
            r.mpi()
        elif algorithm in (_PGP_ECDSA, _PGP_EDDSA, _PGP_ECDH):
            r.oid()
            if r.mpi(min_bits=200)[2] not in (0x04, 0x40):  # an uncompressed or native point
                raise _Short
            if algorithm == _PGP_ECDH:
                kdf = r.take(r.byte())
                if len(kdf) != 3 or kdf[0] != 1:
                    raise _Short
        elif algorithm in _PGP_NATIVE:
            r.take(_PGP_NATIVE[algorithm])
        else:
            raise _Short
        usage = r.byte()
        if usage == 0:
            _pgp_clear_secret(r, version, algorithm)
        elif usage in (254, 255) or (usage == 253 and version >= 5):
            _pgp_protection(r, version, usage)
        else:
            raise _Short  # legacy usage octets (a bare cipher id) are obsolete and too weak a signal
    except _Short:
        return False
    return True


def pgp_secret_keys(data: bytes) -> Iterator[KeyBlob]:
    """Every OpenPGP secret-key or secret-subkey packet in ``data`` (binary, not armoured), in order."""
    return _outermost(_PGP_CANDIDATE, data, _pgp_key_at)


def _pgp_key_at(data: bytes, pos: int) -> KeyBlob | None:
    span = _pgp_header(data, pos)
    if span is None or not _pgp_secret_key(data, *span):
        return None
    tag = (data[pos] >> 2) & 0x0F if data[pos] & 0x40 == 0 else data[pos] & 0x3F
    return KeyBlob(pos, span[1], "an OpenPGP secret subkey" if tag == 7 else "an OpenPGP secret key")
