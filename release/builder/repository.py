"""The TUF repository's maintenance (see :mod:`release.repository`); releases land in it by themselves.

Commands (each holds the build lock, checks the whole repository first, and
publishes its change with one rename of ``timestamp.json``)::

    repository.py status
    repository.py add RELEASE_DIR
        # a release assembled elsewhere (the CI files' last job), audited first
    repository.py init [--root-key ROLE]... [--threshold N]
        # the owner, offline, once: root v1 (default root key: owner)
    repository.py refresh
        # the daily job: new snapshot and timestamp versions (keys/snapshot, keys/timestamp)
    repository.py rotate-key {targets,snapshot,timestamp} [--public FILE] [--sign-with ROLE]...
        # a new key for a role: a new root version names it (FILE, or a development
        # snapshot or timestamp key generated here; the old key files are kept as
        # ROLE.retired-N.*); targets is the release key, replaced by hand first
    repository.py rotate-root [--root-key ROLE]... [--threshold N] [--sign-with ROLE]...
        # a new root version: new root keys or threshold, or the same ones with a new expiry;
        # signed by enough of the old root keys and of the new

A ROLE names a key as everywhere in this project: ``keys/ROLE.pub`` is its
public half, and its private key is ``keys/ROLE.pem`` or the token named by
``RANSOMEYE_<ROLE>_KEY_URI``. ``--sign-with`` defaults to every root key of
the old and the new root whose private key is at hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from release.bootstrap import ensure_environment

    ensure_environment("tuf", "cryptography")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tuf.api.metadata import Root

from release import repository as tuf
from release.archive import write_bytes_atomic
from release.audit.checks import audit
from release.cli import run
from release.errors import BadInputError, SigningError, VerificationError
from release.faults import failpoint
from release.keys import (
    DEV_MARKER,
    generate_key,
    load_public_key,
    pending_role,
    private_key_path,
    public_key_path,
    public_pem,
)
from release.products import load_workspace, repo_root
from release.signers import RoleKey, has_private_key, key_file_public, load_role_key, ssl_key
from release.staging import build_lock

PROG = "repository"
ROOT, TARGETS = "root", "targets"
# The TUF roles a key can be rotated for, and the project's key role that signs each.
KEY_ROLE = {TARGETS: tuf.TARGETS_KEY_ROLE, "snapshot": tuf.SNAPSHOT_KEY_ROLE, "timestamp": tuf.TIMESTAMP_KEY_ROLE}


def _public(keys_dir: Path, role: str) -> Ed25519PublicKey:
    return load_public_key(public_key_path(keys_dir, role))


def _roles_of(keys_dir: Path, keyids: set[str]) -> list[str]:
    """The roles in ``keys_dir`` whose public key has one of ``keyids``."""
    found = []
    for pub in sorted(keys_dir.glob("*.pub")):
        try:
            key = load_public_key(pub)
        except BadInputError:
            continue
        if ssl_key(key).keyid in keyids:
            found.append(pub.stem)
    return found


def _signers(keys_dir: Path, roles: list[str]) -> list[RoleKey]:
    return [load_role_key(keys_dir, role) for role in dict.fromkeys(roles)]


def _root_signers(ns: argparse.Namespace, old: set[str], new: set[str]) -> list[RoleKey]:
    if ns.sign_with:
        return _signers(ns.keys_dir, ns.sign_with)
    roles = _roles_of(ns.keys_dir, old | new)
    return _signers(ns.keys_dir, [r for r in roles if has_private_key(ns.keys_dir, r)])


def _load(ns: argparse.Namespace, *, interrupted_rotation: bool = False) -> tuf.Repository:
    path = ns.repository
    if not tuf.exists(path):
        raise BadInputError(f"{path}: no TUF repository", hint="the owner creates it: repository.py init")
    return tuf.load(path, _public(ns.keys_dir, tuf.OWNER_ROLE), interrupted_rotation=interrupted_rotation)


def _online_keys(ns: argparse.Namespace, repo: tuf.Repository, skip: frozenset[str] = frozenset()) -> tuf.Keys:
    """The snapshot and timestamp keys (and the release key if the targets are stale), but those of ``skip``.

    A stale role (an interrupted rotation) signs with the key the newest root names (:func:`_named_key`).
    """
    keys = tuf.Keys()
    for role in ("snapshot", "timestamp") + ((TARGETS,) if TARGETS in repo.stale else ()):
        if role in skip:
            continue
        if role in repo.stale:
            setattr(keys, role, _named_key(ns, repo.root.signed, role))
        else:
            setattr(keys, role, load_role_key(ns.keys_dir, KEY_ROLE[role]))
    return keys


def _named_key(ns: argparse.Namespace, root: Root, role: str) -> RoleKey:
    """The key ``root`` names for ``role``: the pending development key, or the role's URI checked against it."""
    public = tuf.role_public(root, role)
    pending = pending_role(KEY_ROLE[role])
    if public_key_path(ns.keys_dir, pending).exists() and _public(ns.keys_dir, pending) == public:
        return load_role_key(ns.keys_dir, pending)
    return load_role_key(ns.keys_dir, KEY_ROLE[role], expect=public)


def _cmd_status(ns: argparse.Namespace) -> int:
    repo = _load(ns, interrupted_rotation=True)  # it only reads: show an interrupted rotation rather than refuse
    print(f"{ns.repository}: {repo.describe()}")
    root = repo.root.signed
    for role in tuf.TOP_ROLES:
        r = root.roles[role]
        names = ", ".join(_roles_of(ns.keys_dir, set(r.keyids))) or "keys not in keys/"
        print(f"  {role}: threshold {r.threshold} of {len(r.keyids)} ({names})")
    for md in (repo.root, repo.targets, repo.snapshot, repo.timestamp):
        if md.signed.version:
            print(f"  {md.signed.type} v{md.signed.version} expires {md.signed.expires:%Y-%m-%dT%H:%M:%SZ}")
    index = repo.index()
    print(f"  releases: {', '.join(index['releases']) or 'none'} (latest: {index['latest']})")
    if repo.stale:
        print(f"  re-signed by the next change (an interrupted rotation): {', '.join(sorted(repo.stale))}")
    return 0


def _cmd_init(ns: argparse.Namespace) -> int:
    path = ns.repository
    if tuf.exists(path) or (path / tuf.METADATA_DIR).exists():
        raise BadInputError(f"{path}: a repository exists already", hint="rotate its root instead: rotate-root")
    roles = ns.root_key or [tuf.OWNER_ROLE]
    now = tuf.utc_now()
    root = tuf.new_root(
        [_public(ns.keys_dir, r) for r in roles],
        1 if ns.threshold is None else ns.threshold,
        _public(ns.keys_dir, tuf.TARGETS_KEY_ROLE),
        _public(ns.keys_dir, tuf.SNAPSHOT_KEY_ROLE),
        _public(ns.keys_dir, tuf.TIMESTAMP_KEY_ROLE),
        now,
    )
    signed = tuf.sign_root(root, None, _signers(ns.keys_dir, ns.sign_with or roles))
    (path / tuf.METADATA_DIR).mkdir(parents=True)
    repo = tuf.initial(path, signed, now)
    tuf.stage(repo, tuf.Keys(), now, targets_changed=False).commit()
    tuf.publish_trusted_root(ns.keys_dir, repo)
    print(f"{path}: root v1 ({len(roles)} root key(s), threshold {root.roles['root'].threshold}); no release yet")
    print(f"give customers {ns.keys_dir / tuf.TRUSTED_ROOT_NAME} (metadata/1.root.json) with the project's keys")
    return 0


def _cmd_add(ns: argparse.Namespace) -> int:
    """A release assembled elsewhere (the CI files' last job): audited, then added as ``make release`` adds one."""
    folder = ns.release.absolute()
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a release folder", hint="give the verified release folder (work/out)")
    ws = load_workspace(repo_root())
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    missing = [b.archive_name(ws.version) for b in ws.bundles if b.archive_name(ws.version) not in names]
    if missing:
        raise BadInputError(f"{folder}: not a whole release of {ws.version}: {', '.join(missing)} missing")
    report = audit(folder, public_key_path(ns.keys_dir, tuf.OWNER_ROLE))
    if not report.verified:
        raise VerificationError(f"{folder} does not verify: {'; '.join(f.text() for f in report.findings[:3])}")
    now = tuf.utc_now()
    repo, keys = tuf.prepare(ns.repository, ns.keys_dir, load_role_key(ns.keys_dir, tuf.TARGETS_KEY_ROLE), now)
    staged = tuf.add_release(repo, folder, ws.version, tuf.product_files(ws, names), keys, now)
    staged.commit()
    tuf.publish_trusted_root(ns.keys_dir, repo)
    print(f"{ns.repository}: added {ws.version} ({len(names)} files); {repo.describe()}")
    return 0


def _cmd_refresh(ns: argparse.Namespace) -> int:
    repo = _load(ns, interrupted_rotation=ns.after_interrupted_rotation)
    if not repo.timestamp.signed.version:
        raise BadInputError(f"{ns.repository}: no release yet, nothing to re-sign", hint="make release")
    now = tuf.utc_now()
    keys = _online_keys(ns, repo)
    renew = tuf.expires_soon(repo.targets, now)
    if renew and keys.targets is None:
        if not has_private_key(ns.keys_dir, tuf.TARGETS_KEY_ROLE):
            raise SigningError(
                f"the targets metadata expires on {repo.targets.signed.expires:%Y-%m-%d}, and the release key that "
                "renews it is not here",
                hint="run this refresh once with the release key (keys/release.pem or its token), or release",
            )
        keys.targets = load_role_key(ns.keys_dir, tuf.TARGETS_KEY_ROLE)
    staged = tuf.refresh(repo, keys, now, renew_targets=renew)
    staged.commit()
    for role in sorted(repo.stale):  # the interrupted rotation is finished: keys/ follows its root
        note = _install(ns, role, tuf.role_public(repo.root.signed, role))
        if note:
            print(f"keys: {note}")
    if tuf.expires_soon(repo.root, now):
        print(
            f"{PROG}: warning: root v{repo.root.signed.version} expires on {repo.root.signed.expires:%Y-%m-%d}: "
            "renew it with rotate-root",
            file=sys.stderr,
        )
    print(f"{ns.repository}: {repo.describe()}; timestamp expires {repo.timestamp.signed.expires:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _retire(keys_dir: Path, role: str, keep_private: bool = False) -> str:
    """Rename the role's key files to the first unused ``ROLE.retired-N``: a retired key is never overwritten."""
    n = 1
    while any(keys_dir.glob(f"{role}.retired-{n}.*")):
        n += 1
    files = [public_key_path(keys_dir, role)] + ([] if keep_private else [private_key_path(keys_dir, role)])
    for path in files:
        if path.exists():
            os.link(path, path.with_name(f"{role}.retired-{n}{path.suffix}"))  # fails rather than overwrite
            path.unlink()
    return f"{role}.retired-{n}"


def _new_key(ns: argparse.Namespace) -> tuple[Ed25519PublicKey, RoleKey]:
    """The new key of the role ``ns.role`` and a signer with it (never the role's current key files)."""
    key_role = KEY_ROLE[ns.role]
    if ns.public:
        public = load_public_key(ns.public)
        # Its private key: keys/ROLE.pem already replaced, or RANSOMEYE_<ROLE>_KEY_URI (a token, another file).
        return public, load_role_key(ns.keys_dir, key_role, expect=public)
    if (ns.keys_dir / DEV_MARKER).exists() and ns.role != TARGETS:
        pending = pending_role(key_role)
        if not private_key_path(ns.keys_dir, pending).exists():  # else a failed run's, not yet published
            generate_key(ns.keys_dir, pending)
        return _public(ns.keys_dir, pending), load_role_key(ns.keys_dir, pending)
    raise BadInputError(
        f"rotate-key {ns.role}: say which new key: --public FILE",
        hint="production keys are made where they live (a token, an offline machine); development snapshot and "
        "timestamp keys are generated here",
    )


def _install(ns: argparse.Namespace, role: str, public: Ed25519PublicKey) -> str | None:
    """Make ``keys/`` follow the published root: ``ROLE.pub`` is ``public``, the old key retired (never lost)."""
    key_role = KEY_ROLE[role]
    pending = pending_role(key_role)
    note = None
    if not public_key_path(ns.keys_dir, key_role).exists() or _public(ns.keys_dir, key_role) != public:
        replaced = key_file_public(private_key_path(ns.keys_dir, key_role)) == public  # by hand, already
        retired = _retire(ns.keys_dir, key_role, keep_private=replaced)
        write_bytes_atomic(public_key_path(ns.keys_dir, key_role), public_pem(public), f"the {key_role} public key")
        note = f"the old {key_role} key is now {retired}"
    if private_key_path(ns.keys_dir, pending).exists() and _public(ns.keys_dir, pending) == public:
        if not private_key_path(ns.keys_dir, key_role).exists():
            os.replace(private_key_path(ns.keys_dir, pending), private_key_path(ns.keys_dir, key_role))
        public_key_path(ns.keys_dir, pending).unlink()
        private_key_path(ns.keys_dir, pending).unlink(missing_ok=True)
    return note


def _cmd_rotate_key(ns: argparse.Namespace) -> int:
    """A new key for a role: signed and published first; ``keys/`` changes only once the new root is out.

    Run again after a failure, it goes on from where it stopped: a key the
    published root names already is only installed in ``keys/``.
    """
    repo = _load(ns)
    root = repo.root.signed
    public, new_key = _new_key(ns)
    if ssl_key(public).keyid not in root.roles[ns.role].keyids:
        old_ids = set(root.roles[ROOT].keyids)
        keys = tuf.Keys(root=_root_signers(ns, old_ids, old_ids), **_rest(_online_keys(ns, repo, frozenset({ns.role}))))
        setattr(keys, ns.role, new_key)
        tuf.rotate_root(repo, tuf.replace_key(root, ns.role, public), keys, tuf.utc_now()).commit()
        failpoint("repository:rotated")
    note = _install(ns, ns.role, public)
    if note:
        print(f"keys: {note}")
    print(f"{ns.repository}: the {ns.role} key is {ssl_key(public).keyid[:16]}; {repo.describe()}")
    return 0


def _rest(keys: tuf.Keys) -> dict[str, RoleKey | None]:
    return {"targets": keys.targets, "snapshot": keys.snapshot, "timestamp": keys.timestamp}


def _cmd_rotate_root(ns: argparse.Namespace) -> int:
    repo = _load(ns)
    root = repo.root.signed
    role = root.roles[ROOT]
    old_ids = set(role.keyids)
    if ns.root_key:
        publics = [_public(ns.keys_dir, r) for r in dict.fromkeys(ns.root_key)]
    else:
        publics = [_public(ns.keys_dir, r) for r in _roles_of(ns.keys_dir, old_ids)]
        if len(publics) != len(old_ids):
            raise BadInputError(
                "rotate-root: not every current root key has its public half in keys/",
                hint="name the new root keys: --root-key ROLE (each keys/ROLE.pub)",
            )
    threshold = min(role.threshold, len(publics)) if ns.threshold is None else ns.threshold
    new = tuf.new_root_keys(root, publics, threshold)
    new_ids = {ssl_key(p).keyid for p in publics}
    signers = _root_signers(ns, old_ids, new_ids)
    if tuf.OWNER_ROLE not in _roles_of(ns.keys_dir, new_ids):
        raise BadInputError(
            "rotate-root: keys/owner.pub is not among the new root keys",
            hint="the owner key signs the layout and is a root key; rotate keys/owner.pub first, or keep it",
        )
    staged = tuf.rotate_root(repo, new, tuf.Keys(root=signers, **_rest(_online_keys(ns, repo))), tuf.utc_now())
    staged.commit()
    r = new.roles[ROOT]
    print(
        f"{ns.repository}: root v{new.version}: {len(r.keyids)} root key(s), threshold {r.threshold}; {repo.describe()}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    def inner(args: list[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="Maintain the TUF repository of the releases.")
        root = repo_root()
        parser.add_argument("--keys-dir", type=Path, default=root / "keys")
        parser.add_argument("--repository", type=Path, default=tuf.repository_dir(root))
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("status", help="versions, keys and expiries").set_defaults(fn=_cmd_status)
        p = sub.add_parser("init", help="create the repository (root v1)")
        p.add_argument("--root-key", action="append", metavar="ROLE")
        p.add_argument("--threshold", type=int)
        p.add_argument("--sign-with", action="append", metavar="ROLE")
        p.set_defaults(fn=_cmd_init)
        p = sub.add_parser("add", help="add a verified release folder assembled elsewhere (a CI job's)")
        p.add_argument("release", type=Path)
        p.set_defaults(fn=_cmd_add)
        p = sub.add_parser(
            "refresh", help="re-sign snapshot and timestamp (daily); targets too within 30 days of expiry"
        )
        p.add_argument(
            "--after-interrupted-rotation",
            action="store_true",
            help="re-sign what a failed rotate-key or rotate-root left signed under the previous root",
        )
        p.set_defaults(fn=_cmd_refresh)
        p = sub.add_parser("rotate-key", help="a new key for the targets, snapshot or timestamp role")
        p.add_argument("role", choices=tuple(KEY_ROLE))
        p.add_argument("--public", type=Path, help="the new public key (default: a new development key)")
        p.add_argument("--sign-with", action="append", metavar="ROLE")
        p.set_defaults(fn=_cmd_rotate_key)
        p = sub.add_parser("rotate-root", help="a new root version (keys, threshold, or expiry)")
        p.add_argument("--root-key", action="append", metavar="ROLE")
        p.add_argument("--threshold", type=int)
        p.add_argument("--sign-with", action="append", metavar="ROLE")
        p.set_defaults(fn=_cmd_rotate_root)
        ns = parser.parse_args(args)
        ns.keys_dir = ns.keys_dir.absolute()
        release_dir = ns.repository.resolve().parent  # the lock the pipeline takes for this repository
        with build_lock(release_dir):
            result: int = ns.fn(ns)
        return result

    return run(PROG, inner, argv)


if __name__ == "__main__":
    sys.exit(main())
