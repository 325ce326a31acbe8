"""Ed25519 artifact signatures, verifiable with the stock ``minisign -V``.

Each artifact ``X`` gets a detached signature ``X.minisig`` made with the
release key (``keys/release.pem``). The signature is over the artifact's
BLAKE2b-512 digest, computed while the artifact was written, so signing
never re-reads it; the trusted comment binds the file name and the version.
The public key is published as ``keys/release.pub`` (PEM) and
``keys/release.minisign.pub`` (minisign's format). The command line is
``release/builder/signer.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from release import minisign, openpgp, signify, sigstore_bundle
from release.archive import ArtifactDigest, workers, write_bytes_atomic
from release.errors import BadInputError, VerificationError
from release.faults import failpoint
from release.keys import (
    BUILDER_KEY_ROLES,
    DEV_MARKER,
    DEV_SECOND_BUILDER,
    ROLES,
    TUF_ONLINE_ROLES,
    generate_key,
    load_public_key,
)
from release.signers import RoleKey

ROLE = "release"
MINISIGN_PUB = "release.minisign.pub"
SIGNIFY_PUB = "release.signify.pub"
GPG_KEYRING = "release.gpg"
PRODUCTION_USER_ID = "RansomEye release signing key"
PGP_SUFFIX = openpgp.SUFFIX
SIGSTORE_SUFFIX = sigstore_bundle.SUFFIX


def minisign_public(public: Ed25519PublicKey) -> minisign.MinisignPublicKey:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return minisign.MinisignPublicKey.from_key(public, raw)


def write_minisign_pub(keys_dir: Path, public: Ed25519PublicKey) -> Path:
    """Write ``release.minisign.pub`` for ``public`` (derived, so always the same text)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    path = keys_dir / MINISIGN_PUB
    text = minisign_public(public).encode(raw)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def publish_release_keys(keys_dir: Path, key: RoleKey) -> int:
    """Write the release key's public half in every format customers check with; return its OpenPGP creation time.

    ``release.minisign.pub`` (minisign), ``release.signify.pub`` (signify) and
    ``release.asc`` (OpenPGP: sqv; ``release.gpg``, the same key unarmored,
    for gpgv, which reads binary keyrings only). The OpenPGP form carries a creation
    time and a self-signature, so it is made once and kept (a different key
    there is refused); the others are derived from the key, always the same text.
    """
    write_minisign_pub(keys_dir, key.public)
    text = signify.public_key_text(key.public)
    path = keys_dir / SIGNIFY_PUB
    if not path.is_file() or path.read_bytes() != text.encode():
        write_bytes_atomic(path, text.encode(), "the signify public key")
    user_id = openpgp.USER_ID if (keys_dir / DEV_MARKER).exists() else PRODUCTION_USER_ID
    pgp = openpgp.write_public_key(keys_dir, key, openpgp.DEV_KEY_CREATED, user_id)
    created = openpgp.read_public_key_file(pgp).created
    # gpgv reads a binary keyring only: the same key, unarmored.
    keyring = openpgp.dearmor(pgp.read_text(), str(pgp), openpgp.PUBLIC_KEY_BLOCK)
    path = keys_dir / GPG_KEYRING
    if not path.exists() or path.read_bytes() != keyring:
        write_bytes_atomic(path, keyring, "the OpenPGP keyring")
    return created


def sign_openpgp(
    key: RoleKey, digest: ArtifactDigest, epoch: int, created: int, document: openpgp.DocumentHash | None = None
) -> ArtifactDigest:
    """Write ``<file>.asc``, an armored OpenPGP detached signature of ``digest``'s file; return its digest.

    The file is hashed (SHA-256) by the pass that gave ``digest``, when it kept its state: not read again.
    """
    document = document or openpgp.DocumentHash.known(digest)
    text = openpgp.detached_signature(key, digest.path, epoch, created, digest.sha256, document)
    return write_bytes_atomic(digest.path.with_name(digest.name + PGP_SUFFIX), text.encode(), "the OpenPGP signature")


def sign_openpgp_all(key: RoleKey, digests: Sequence[ArtifactDigest], epoch: int, created: int) -> list[ArtifactDigest]:
    """:func:`sign_openpgp` for each of ``digests``, signed one by one in the caller's thread (a key on a token
    signs one thing at a time).

    A file's OpenPGP signature hashes it with SHA-256, continuing from the
    state of the pass that gave its digest (the run hashed each archive once,
    when it took it from its packaging step): no file is read again. A digest
    without that state (made elsewhere) has its file hashed, on every core
    (hashlib releases the GIL), and refused if it is not those bytes.
    """
    documents = {d.path: openpgp.DocumentHash.known(d) for d in digests}
    unknown = [d for d in digests if documents[d.path] is None]
    if unknown:
        with ThreadPoolExecutor(max_workers=workers(len(unknown)), thread_name_prefix="openpgp") as pool:
            hashed = pool.map(lambda d: openpgp.DocumentHash.of(d.path, d.sha256), unknown)
            for d, document in zip(unknown, hashed, strict=True):
                documents[d.path] = document
    return [sign_openpgp(key, d, epoch, created, documents[d.path]) for d in digests]


def write_sigstore_bundle(
    key: RoleKey, digest: ArtifactDigest, predicate_type: str, predicate: Mapping[str, Any]
) -> ArtifactDigest:
    """Write ``<archive>.sigstore.json``, a Sigstore bundle of a statement on the archive alone; return its digest."""
    statement = sigstore_bundle.statement(digest.name, digest.sha256, predicate_type, predicate)
    data = sigstore_bundle.make_bundle(key, statement)
    return write_bytes_atomic(digest.path.with_name(digest.name + SIGSTORE_SUFFIX), data, "the Sigstore bundle")


def write_signify_sums(key: RoleKey, path: Path, digests: Iterable[ArtifactDigest]) -> ArtifactDigest:
    """Write signify's signed checksum list of ``digests`` (``signify -C`` checks it and every file it lists)."""
    text = signify.signed_checksums(key, [(d.name, d.sha256) for d in sorted(digests, key=lambda d: d.name)])
    return write_bytes_atomic(path, text.encode(), "the signify checksum list")


def signature_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + minisign.SUFFIX)


def sign_digest(key: RoleKey, digest: ArtifactDigest, version: str, epoch: int) -> ArtifactDigest:
    """Write ``<artifact>.minisig`` for ``digest``; return the signature file's digest.

    Side effect: writes the signature file next to the artifact.
    """
    pub = minisign_public(key.public)
    comment = minisign.trusted_comment(digest.name, version, epoch)
    text = minisign.sign_prehashed(key.sign, pub.key_id, digest.blake2b, comment)
    out = signature_path(digest.path)
    failpoint(f"sign:{digest.name}")
    _verify_text(pub, text, digest, out.name)  # what is written; the verify step reads it back
    return write_bytes_atomic(out, text.encode(), "the signature")


def sign_all(key: RoleKey, digests: Iterable[ArtifactDigest], version: str, epoch: int) -> list[ArtifactDigest]:
    """Sign every artifact in ``digests``; return the digests of the signatures."""
    return [sign_digest(key, d, version, epoch) for d in digests]


def verify_digest(pub: minisign.MinisignPublicKey, digest: ArtifactDigest) -> None:
    """Verify ``<artifact>.minisig`` against the artifact's digest; raises VerificationError."""
    sig_path = signature_path(digest.path)
    try:
        text = sig_path.read_text()
    except FileNotFoundError:
        raise VerificationError(f"{sig_path.name}: signature missing") from None
    except UnicodeDecodeError:
        raise VerificationError(f"{sig_path.name}: not a minisign signature file") from None
    _verify_text(pub, text, digest, sig_path.name)


def _verify_text(pub: minisign.MinisignPublicKey, text: str, digest: ArtifactDigest, where: str) -> None:
    sig = minisign.parse_signature(text, where)
    minisign.verify(pub, sig, digest.blake2b, None, where)
    if f"\tfile:{digest.name}\t" not in f"\t{sig.comment}\t":
        raise VerificationError(f"{where}: the trusted comment names another file ({sig.comment!r})")


def ensure_dev_keys(keys_dir: Path) -> list[str]:
    """Generate every missing role's key pair in ``keys_dir``, and the second builder's; return what was created.

    The second builder's keys (``builder-2/build.pem``, ``builder-2/package.pem``)
    go to a folder of their own, as they would live on its own machine.
    Refuses to add development keys next to production keys (a directory
    that has some keys but no development marker).
    """
    second = keys_dir / DEV_SECOND_BUILDER
    wanted = [(keys_dir, r, r) for r in ROLES + TUF_ONLINE_ROLES]
    wanted += [(second, r, f"{DEV_SECOND_BUILDER}/{r}") for r in BUILDER_KEY_ROLES]
    missing = [(d, role, label) for d, role, label in wanted if not (d / f"{role}.pem").exists()]
    marker = keys_dir / DEV_MARKER
    if missing and len(missing) < len(wanted) and not marker.exists():
        raise BadInputError(
            f"{keys_dir}: holds production keys but lacks {', '.join(label + '.pem' for _, _, label in missing)}",
            hint="install the missing production keys (keys/README.md); development keys are never mixed with them",
        )
    for d, role, _ in missing:
        generate_key(d, role)
    if missing:
        text = "These keys were generated for development. Never ship a release signed with them.\n"
        marker.write_text(text)
        (second / DEV_MARKER).write_text(text)
    if (keys_dir / f"{ROLE}.pub").exists():
        write_minisign_pub(keys_dir, load_public_key(keys_dir / f"{ROLE}.pub"))
    created = [label for _, _, label in missing]
    if marker.exists():  # the Authenticode CA and certificate of a development folder (never next to production keys)
        from release import authenticode  # X.509: key making only, not every process that signs

        created += authenticode.ensure_dev_codesign(keys_dir)
    return created
