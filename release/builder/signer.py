"""Ed25519 artifact signatures, verifiable with the stock ``minisign -V``.

Each artifact ``X`` gets a detached signature ``X.minisig`` made with the
release key (``keys/release.pem``). The signature is over the artifact's
BLAKE2b-512 digest, computed while the artifact was written, so signing
never re-reads it; the trusted comment binds the file name and the version.
The public key is published as ``keys/release.pub`` (PEM) and
``keys/release.minisign.pub`` (minisign's format).

Commands::

    signer.py sign FILE... [--keys-dir keys] [--version V]
    signer.py verify FILE... [--pubkey keys/release.minisign.pub]
    signer.py dev-keys [--keys-dir keys]        # generate missing development keys
    signer.py export-minisign [--keys-dir keys] # write release.minisign.pub from release.pub
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography")

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from release import minisign
from release.archive import ArtifactDigest, digest_bytes, hash_file
from release.cli import run
from release.errors import BadInputError, VerificationError
from release.faults import failpoint
from release.keys import DEV_MARKER, ROLES, KeyPair, generate_key, load_private_key, load_public_key, public_key_path
from release.products import load_workspace, repo_root
from release.source import source_date_epoch

ROLE = "release"
MINISIGN_PUB = "release.minisign.pub"


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


def signature_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + minisign.SUFFIX)


def sign_digest(key: KeyPair, digest: ArtifactDigest, version: str, epoch: int) -> ArtifactDigest:
    """Write ``<artifact>.minisig`` for ``digest``; return the signature file's digest.

    Side effect: writes the signature file next to the artifact.
    """
    pub = minisign_public(key.public)
    comment = minisign.trusted_comment(digest.name, version, epoch)
    text = minisign.sign_prehashed(key.private, pub.key_id, digest.blake2b, comment)
    out = signature_path(digest.path)
    failpoint(f"sign:{digest.name}")
    tmp = out.with_name(f".{out.name}.part")
    data = text.encode()
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    _verify_text(pub, text, digest, out.name)  # what was just written; the verify step reads it back
    return digest_bytes(out, data)


def sign_all(key: KeyPair, digests: Iterable[ArtifactDigest], version: str, epoch: int) -> list[ArtifactDigest]:
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
    """Generate every missing role's key pair in ``keys_dir``; return the roles created.

    Refuses to add development keys next to production keys (a directory
    that has some keys but no development marker).
    """
    missing = [r for r in ROLES if not (keys_dir / f"{r}.pem").exists()]
    marker = keys_dir / DEV_MARKER
    if missing and len(missing) < len(ROLES) and not marker.exists():
        raise BadInputError(
            f"{keys_dir}: holds production keys but lacks {', '.join(r + '.pem' for r in missing)}",
            hint="install the missing production keys; development keys are never mixed with them",
        )
    for role in missing:
        generate_key(keys_dir, role)
    if missing:
        marker.write_text("These keys were generated for development. Never ship a release signed with them.\n")
    if (keys_dir / f"{ROLE}.pub").exists():
        write_minisign_pub(keys_dir, load_public_key(keys_dir / f"{ROLE}.pub"))
    return missing


def _cmd_sign(ns: argparse.Namespace) -> int:
    keys_dir = ns.keys_dir
    key = load_private_key(keys_dir, ROLE)
    ws = load_workspace(repo_root())
    version = ns.version or ws.version
    epoch = source_date_epoch(ws.root)
    for f in ns.files:
        if not f.is_file():
            raise BadInputError(f"{f}: no such file to sign")
        sign_digest(key, hash_file(f), version, epoch)
        print(f"signed {f} -> {signature_path(f)}")
    return 0


def _cmd_verify(ns: argparse.Namespace) -> int:
    try:
        text = ns.pubkey.read_text()
    except OSError as e:
        raise BadInputError(f"{ns.pubkey}: cannot read the public key: {e.strerror}") from e
    pub = minisign.MinisignPublicKey.decode(text, str(ns.pubkey))
    for f in ns.files:
        if not f.is_file():
            raise BadInputError(f"{f}: no such file to verify")
        verify_digest(pub, hash_file(f))
        print(f"verified {f}")
    return 0


def _cmd_dev_keys(ns: argparse.Namespace) -> int:
    created = ensure_dev_keys(ns.keys_dir)
    if created:
        bar = "!" * 72
        print(
            f"{bar}\n!! Generated DEVELOPMENT keys in {ns.keys_dir}/: {', '.join(created)}\n"
            f"!! Releases signed with them are for testing only. See keys/README.md\n"
            f"!! for production keys.\n{bar}"
        )
    return 0


def _cmd_export(ns: argparse.Namespace) -> int:
    path = write_minisign_pub(ns.keys_dir, load_public_key(public_key_path(ns.keys_dir, ROLE)))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="signer", description="Ed25519 (minisign) artifact signatures.")
        sub = parser.add_subparsers(dest="command", required=True)
        default_keys = repo_root() / "keys"
        p = sub.add_parser("sign", help="sign files with keys/release.pem")
        p.add_argument("files", nargs="+", type=Path)
        p.add_argument("--keys-dir", type=Path, default=default_keys)
        p.add_argument("--version", help="version for the trusted comment (default: the workspace's)")
        p.set_defaults(fn=_cmd_sign)
        p = sub.add_parser("verify", help="verify FILE.minisig for each FILE")
        p.add_argument("files", nargs="+", type=Path)
        p.add_argument("--pubkey", type=Path, default=default_keys / MINISIGN_PUB)
        p.set_defaults(fn=_cmd_verify)
        p = sub.add_parser("dev-keys", help="generate missing development keys")
        p.add_argument("--keys-dir", type=Path, default=default_keys)
        p.set_defaults(fn=_cmd_dev_keys)
        p = sub.add_parser("export-minisign", help="write release.minisign.pub from release.pub")
        p.add_argument("--keys-dir", type=Path, default=default_keys)
        p.set_defaults(fn=_cmd_export)
        ns = parser.parse_args(args)
        result: int = ns.fn(ns)
        return result

    return run("signer", inner, argv)


if __name__ == "__main__":
    sys.exit(main())
