"""Ed25519 keys of the release: loading, checking and generating them.

Roles (each a PKCS8 PEM private key ``keys/<role>.pem``, mode 0600, and a
SubjectPublicKeyInfo PEM public key ``keys/<role>.pub``):

* ``owner``   – signs the in-toto root layout, nothing else;
* ``gates``   – signs the gates step's link;
* ``build``   – signs this builder's build link and the provenance;
* ``package`` – signs this builder's packaging links;
* ``release`` – signs the artifacts (minisign format) and the sign/checksum steps,
  and the TUF repository's targets;
* ``snapshot``, ``timestamp`` – the TUF repository's online keys (its
  snapshot and timestamp metadata, re-signed daily).

Every other independent builder has its own ``build`` and ``package`` keys in
``keys/builder-<name>/`` (on its own machine; the first builder's machine
holds only their ``.pub`` files).

Signing with a key goes through :mod:`release.signers` (a key file or a
PKCS#11 token, chosen by the role's key URI); this module holds the roles, the
file names, the public keys and the generation of key files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from release.errors import BadInputError

ROLES = ("owner", "gates", "build", "package", "release")
# The online keys of the TUF repository (release/repository.py): they re-sign its snapshot and timestamp daily.
TUF_ONLINE_ROLES = ("snapshot", "timestamp")
BUILDER_KEY_ROLES = ("build", "package")
DEV_MARKER = "DEVELOPMENT-KEYS"
# The keys of the other independent builders: keys/builder-<name>/{build,package}.pub (and .pem on their machines).
BUILDER_PREFIX = "builder-"
DEV_SECOND_BUILDER = "builder-2"


def builder_dirs(keys_dir: Path) -> list[Path]:
    """The other builders' key folders in ``keys_dir`` (``builder-*``), sorted by name."""
    try:
        return sorted(p for p in keys_dir.iterdir() if p.name.startswith(BUILDER_PREFIX) and p.is_dir())
    except FileNotFoundError:
        return []


def passphrase_variable(role: str) -> str:
    return f"RANSOMEYE_{role.upper()}_KEY_PASSPHRASE"


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


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def pending_role(role: str) -> str:
    """The file role of a new key of ``role`` that is not in use yet (``keys/.ROLE.new.pem``, ``.pub``)."""
    return f".{role}.new"


def generate_key(keys_dir: Path, role: str, passphrase: bytes | None = None) -> Ed25519PrivateKey:
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
    return key


def keyid(public: Ed25519PublicKey) -> str:
    """A short, stable fingerprint of a public key (hex SHA-256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
