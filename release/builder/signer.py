"""The command line of Ed25519 artifact signatures (see :mod:`release.signing`).

Commands::

    signer.py sign FILE... [--keys-dir keys] [--version V]
    signer.py verify FILE... [--pubkey keys/release.minisign.pub]
    signer.py dev-keys [--keys-dir keys]        # generate missing development keys
    signer.py export-minisign [--keys-dir keys] # write release.minisign.pub from release.pub
    signer.py import-public --role ROLE [--keys-dir keys]
        # write keys/ROLE.pub from the role's key URI (RANSOMEYE_<ROLE>_KEY_URI,
        # e.g. hsm:1?label=ransomeye for a key on a PKCS#11 token; see release/signers.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("cryptography")

from release import minisign
from release.archive import hash_file, write_bytes_atomic
from release.cli import run
from release.errors import BadInputError
from release.keys import ROLES, TUF_ONLINE_ROLES, load_public_key, public_key_path, public_pem
from release.products import load_workspace, repo_root
from release.signers import (
    HSM,
    RoleKey,
    hsm_signer,
    load_role_key,
    role_uri,
    secrets_from_environment,
    token_public_key,
    uri_variable,
)
from release.signing import (
    MINISIGN_PUB,
    ROLE,
    ensure_dev_keys,
    sign_digest,
    signature_path,
    verify_digest,
    write_minisign_pub,
)
from release.source import source_date_epoch


def _cmd_sign(ns: argparse.Namespace) -> int:
    keys_dir = ns.keys_dir
    key = load_role_key(keys_dir, ROLE)
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


def _cmd_import_public(ns: argparse.Namespace) -> int:
    uri = role_uri(ns.keys_dir, ns.role)
    if not uri.startswith(f"{HSM}:"):
        raise BadInputError(
            f"{uri_variable(ns.role)} is {uri!r}: a key file carries its public half already",
            hint=f"set {uri_variable(ns.role)}=hsm:KEYID?label=TOKEN to import a token's key",
        )
    secrets = secrets_from_environment(ns.role)
    public = token_public_key(uri, secrets)
    # The token must sign with that key before its public half is written anywhere.
    RoleKey(ns.role, uri, public, hsm_signer(uri, public, secrets)).sign(b"ransomeye import-public self-test")
    path = public_key_path(ns.keys_dir, ns.role)
    if path.exists() and load_public_key(path) != public:
        raise BadInputError(f"{path}: holds another key; refusing to replace it", hint="move it away first")
    ns.keys_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, public_pem(public), f"the {ns.role} public key")
    print(f"wrote {path} ({ns.role} key {uri})")
    if ns.role == ROLE:
        print(f"wrote {write_minisign_pub(ns.keys_dir, public)}")
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
        p = sub.add_parser("import-public", help="write keys/ROLE.pub from the role's key URI (a PKCS#11 token)")
        p.add_argument("--role", choices=ROLES + TUF_ONLINE_ROLES, required=True)
        p.add_argument("--keys-dir", type=Path, default=default_keys)
        p.set_defaults(fn=_cmd_import_public)
        ns = parser.parse_args(args)
        result: int = ns.fn(ns)
        return result

    return run("signer", inner, argv)


if __name__ == "__main__":
    sys.exit(main())
