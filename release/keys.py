"""Ed25519 keys of the release: loading, checking and generating them.

Roles (each a PKCS8 PEM private key ``keys/<role>.pem``, mode 0600, and a
SubjectPublicKeyInfo PEM public key ``keys/<role>.pub``):

* ``owner``   – signs the in-toto root layout, nothing else;
* ``build``   – the functionary that runs the gates, the build and the packagers;
* ``release`` – signs the artifacts (minisign format) and the sign/checksum steps.

A passphrase-protected key is unlocked with the passphrase in the
environment variable ``RANSOMEYE_<ROLE>_KEY_PASSPHRASE``; the library never
prompts. Private keys readable by group or others are refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from release.errors import BadInputError, SigningError

ROLES = ("owner", "build", "release")
DEV_MARKER = "DEVELOPMENT-KEYS"


def passphrase_variable(role: str) -> str:
    return f"RANSOMEYE_{role.upper()}_KEY_PASSPHRASE"


@dataclass(frozen=True)
class KeyPair:
    """A loaded private key and its public half."""

    role: str
    path: Path
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def public_pem(self) -> bytes:
        return public_pem(self.public)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_key_path(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}.pem"


def public_key_path(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}.pub"


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a SubjectPublicKeyInfo PEM Ed25519 public key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise BadInputError(
            f"{path}: public key not found", hint="run `make keys`, or copy the published key there"
        ) from e
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise BadInputError(f"{path}: not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise BadInputError(f"{path}: not an Ed25519 public key")
    return key


def load_private_key(keys_dir: Path, role: str) -> KeyPair:
    """Load the ``role`` key from ``keys_dir``, checking mode, passphrase and public half.

    Raises :class:`SigningError` naming the file and how to fix it.
    """
    path = private_key_path(keys_dir, role)
    var = passphrase_variable(role)
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise SigningError(
            f"{path}: the {role} private key is missing",
            hint="run `make keys` for development keys, or install the production key there (see keys/README.md)",
        ) from e
    if not stat.S_ISREG(st.st_mode):
        raise SigningError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise SigningError(
            f"{path}: the private key is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod 600 {path}",
        )
    data = path.read_bytes()
    secret = os.environ.get(var)
    password = secret.encode() if secret else None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as e:
        if password is None:
            raise SigningError(f"{path}: the key is encrypted and no passphrase was given", hint=f"set {var}") from e
        raise SigningError(f"{path}: the key is not encrypted, but {var} is set", hint=f"unset {var}") from e
    except ValueError:
        if password is not None:
            raise SigningError(f"{path}: wrong passphrase (from {var}) or damaged key") from None
        raise SigningError(f"{path}: not a PKCS8 PEM private key") from None
    except UnsupportedAlgorithm as e:
        raise SigningError(f"{path}: unsupported key algorithm") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key", hint="generate keys with `make keys`")
    pair = KeyPair(role, path, key)
    pub_path = public_key_path(keys_dir, role)
    if pub_path.exists() and load_public_key(pub_path) != pair.public:
        raise SigningError(
            f"{path} does not match its public key {pub_path}",
            hint="restore the matching pair; a public key is never regenerated silently",
        )
    return pair


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_key(keys_dir: Path, role: str, passphrase: bytes | None = None) -> KeyPair:
    """Create ``<role>.pem`` (0600) and ``<role>.pub`` in ``keys_dir``; never overwrites."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = private_key_path(keys_dir, role)
    if path.exists():
        raise BadInputError(f"{path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    public_key_path(keys_dir, role).write_bytes(public_pem(key.public_key()))
    return KeyPair(role, path, key)


def keyid(public: Ed25519PublicKey) -> str:
    """A short, stable fingerprint of a public key (hex SHA-256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
