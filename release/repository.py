"""The TUF repository every release lands in: ``release/repository/``.

Customers fetch a release through it (:mod:`release.fetch`, or any TUF
client), which is what protects them from what signatures alone cannot: an
old release replayed by a mirror (rollback), a mirror that stops updating
(freeze), and metadata of different moments served together (mix-and-match).

Layout (TUF specification 1.0, consistent snapshots)::

    metadata/N.root.json      every root version, each signed by its predecessor's
                              root keys and its own
    metadata/N.targets.json   the targets role: every file of every release
    metadata/N.snapshot.json  the version (and hash) of the targets metadata
    metadata/timestamp.json   the version (and hash) of the snapshot; the one
                              file a client fetches unversioned
    targets/releases.json     (as <sha256>.releases.json) the index: per version,
                              each product's files and the shared files
    targets/V/<sha256>.NAME   every file of release V

Roles and their keys (Ed25519, through the signing seam of :mod:`release.signers`):
root — the owner key (``keys/owner``) and any other root keys, threshold
configurable (``release/builder/repository.py rotate-root``); targets — the
release key; snapshot and timestamp — the online keys ``keys/snapshot`` and
``keys/timestamp``, with short expiries, re-signed daily
(``repository.py refresh``).

A release is added in two phases: :func:`stage_release` writes the new
target files and the new versioned metadata beside the old, which no client
can reach yet; :meth:`Staged.commit` then replaces ``timestamp.json`` in one
rename. A crash before the rename leaves the previous repository whole (what
was written is unreachable and overwritten by the next run).

Before extending the repository, :func:`load` checks all of it: the root
chain from ``1.root.json``, the owner key among the current root keys, and
timestamp → snapshot → targets, each signed by its role's keys with the
version and hash its parent names. A repository someone edited on disk is
refused, never re-signed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import Key, Signature, Signer
from tuf.api._payload import MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from release.archive import CHUNK, atomic_file, fsync_dir
from release.errors import BadInputError, SigningError, SystemFailure
from release.faults import failpoint
from release.keys import DEV_MARKER, load_public_key, public_key_path
from release.products import Workspace
from release.signers import RoleKey, has_private_key, load_role_key, ssl_key

REPOSITORY_DIRNAME = "repository"
METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
INDEX_TARGET = "releases.json"
INDEX_FORMAT = "ransomeye-releases/1"
# Roles -> the key role of release.signers that signs them (root: the owner, and any other root keys).
OWNER_ROLE = "owner"
TARGETS_KEY_ROLE = "release"
SNAPSHOT_KEY_ROLE = "snapshot"
TIMESTAMP_KEY_ROLE = "timestamp"
TOP_ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
EXPIRY = {
    Root.type: timedelta(days=365),
    Targets.type: timedelta(days=365),
    Snapshot.type: timedelta(days=7),
    Timestamp.type: timedelta(days=1),
}
# The targets metadata and the root are renewed (refresh, rotate-root) when they expire within this.
RENEW_WITHIN = timedelta(days=30)
ARCHIVE_SUFFIXES = (".tar.gz", ".zip")
MAX_METADATA_BYTES = 5_000_000  # what python-tuf's client accepts for targets metadata
MAX_ROOT_VERSIONS = 10_000
# A target's file name: what a customer's folder may hold (the inspection refuses anything else later).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+-]{0,63}")
_PRETTY = JSONSerializer(compact=False)


def repository_dir(root: Path) -> Path:
    return root / "release" / REPOSITORY_DIRNAME


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class RoleSigner(Signer):
    """A python-tuf signer over a :class:`RoleKey` (a key file or a token, checked against its public half)."""

    def __init__(self, key: RoleKey) -> None:
        self.key = key
        self._public = ssl_key(key.public)

    @property
    def public_key(self) -> Key:
        return self._public

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None) -> RoleSigner:
        raise NotImplementedError("a RoleSigner wraps a loaded RoleKey")

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self.key.sign(payload).hex())


@dataclass
class Repository:
    """The four top-level roles of a repository, as published (or about to be)."""

    path: Path
    roots: list[Metadata[Root]]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    # Roles signed under an earlier root than the current one (an interrupted rotation): re-signed by the next change.
    stale: set[str] = field(default_factory=set)
    # Root versions not yet written (written by the commit, just before the timestamp).
    new_roots: int = 0

    @property
    def root(self) -> Metadata[Root]:
        return self.roots[-1]

    def describe(self) -> str:
        return (
            f"root v{self.root.signed.version}, targets v{self.targets.signed.version}, "
            f"snapshot v{self.snapshot.signed.version}, timestamp v{self.timestamp.signed.version}"
        )

    def index(self) -> dict[str, Any]:
        """The releases index as the current targets list it (empty when no release was added)."""
        info = self.targets.signed.targets.get(INDEX_TARGET)
        if info is None:
            return {"format": INDEX_FORMAT, "latest": None, "releases": {}}
        path = self.path / TARGETS_DIR / f"{info.hashes['sha256']}.{INDEX_TARGET}"
        data = _read_bounded(path, info.length, "the releases index")
        try:
            info.verify_length_and_hashes(data)
        except RepositoryError as e:
            raise _corrupt(self.path, f"{path.name} does not match the targets metadata ({e})") from e
        try:
            index = json.loads(data)
        except ValueError as e:
            raise _corrupt(self.path, f"{path.name} is not JSON ({e})") from e
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise _corrupt(self.path, f"{path.name} is not a {INDEX_FORMAT} index")
        return index


def _corrupt(path: Path, what: str, hint: str | None = None) -> BadInputError:
    return BadInputError(
        f"{path}: not the repository this project published: {what}",
        hint=hint
        or "restore release/repository/ from the last published copy (a mirror holds one); never re-sign it as is",
    )


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _corrupt(path.parent.parent, f"cannot read {what} {path.name}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _corrupt(path.parent.parent, f"{path.name} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _corrupt(path.parent.parent, f"{path.name} is larger than {limit} bytes")
    return data


def _check_signed(delegator: Root, role: str, md: Metadata[Any], where: str, path: Path) -> None:
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise _corrupt(path, f"{where}: {e}") from e


def _check_meta(meta: MetaFile, data: bytes, what: str, path: Path) -> None:
    try:
        meta.verify_length_and_hashes(data)
    except RepositoryError as e:
        raise _corrupt(path, f"{what} does not match what its parent role records ({e})") from e


def exists(path: Path) -> bool:
    return (path / METADATA_DIR / "1.root.json").exists()


def load(path: Path, owner: Ed25519PublicKey | None = None, *, interrupted_rotation: bool = False) -> Repository:
    """Read and check the whole published repository at ``path`` (see the module's doc).

    ``owner``: a key the current root must hold among its root keys (the
    project's ``keys/owner.pub``), so that a repository of someone else's is
    never extended with this project's keys.

    ``interrupted_rotation``: accept what a root rotation interrupted between
    its new root and its timestamp leaves — roles whose key the newest root
    changed, still signed under the root just before it, which the next
    change re-signs (*stale* roles). Only the operator who knows that a
    rotation failed asks for it (``repository.py refresh
    --after-interrupted-rotation``): whoever holds retired keys and can write
    the repository could otherwise have their edit re-signed.
    """
    meta = path / METADATA_DIR
    roots: list[Metadata[Root]] = []
    for n in range(1, MAX_ROOT_VERSIONS):
        file = meta / f"{n}.root.json"
        if not file.exists() and not file.is_symlink():
            break
        md = _parse(_read_bounded(file, MAX_METADATA_BYTES, "the root metadata"), Root.type, file, n)
        trusted = roots[-1].signed if roots else md.signed
        _check_signed(trusted, Root.type, md, f"{file.name} (by root v{trusted.version})", path)
        _check_signed(md.signed, Root.type, md, f"{file.name} (by its own root keys)", path)
        roots.append(md)
    if not roots:
        raise _corrupt(path, "metadata/1.root.json is missing")
    root = roots[-1].signed
    if owner is not None and ssl_key(owner).keyid not in root.roles[Root.type].keyids:
        raise _corrupt(path, f"keys/owner.pub is not one of the root keys of root v{root.version}")
    if not (meta / "timestamp.json").exists() and not (meta / "timestamp.json").is_symlink():
        # The owner created it (``repository.py init``) and no release was added yet.
        repo = initial(path, roots[-1], roots[-1].signed.expires)
        repo.roots, repo.new_roots = roots, 0
        return repo
    ts_data = _read_bounded(meta / "timestamp.json", MAX_METADATA_BYTES, "the timestamp metadata")
    timestamp = _parse(ts_data, Timestamp.type, meta / "timestamp.json")
    stale = _check_by_chain(roots, Timestamp.type, timestamp, "timestamp.json", path, interrupted_rotation)
    snap_meta = timestamp.signed.snapshot_meta
    snap_file = meta / f"{snap_meta.version}.snapshot.json"
    snap_data = _read_bounded(snap_file, MAX_METADATA_BYTES, "the snapshot metadata")
    _check_meta(snap_meta, snap_data, snap_file.name, path)
    snapshot = _parse(snap_data, Snapshot.type, snap_file, snap_meta.version)
    stale |= _check_by_chain(roots, Snapshot.type, snapshot, snap_file.name, path, interrupted_rotation)
    targets_meta = snapshot.signed.meta.get(f"{Targets.type}.json")
    if targets_meta is None:
        raise _corrupt(path, f"{snap_file.name} lists no targets metadata")
    targets_file = meta / f"{targets_meta.version}.targets.json"
    targets_data = _read_bounded(targets_file, MAX_METADATA_BYTES, "the targets metadata")
    _check_meta(targets_meta, targets_data, targets_file.name, path)
    targets = _parse(targets_data, Targets.type, targets_file, targets_meta.version)
    stale |= _check_by_chain(roots, Targets.type, targets, targets_file.name, path, interrupted_rotation)
    _check_leftovers(meta, snapshot.signed.version, targets.signed.version, path)
    _check_target_files(path, targets.signed)
    repo = Repository(path, roots, targets, snapshot, timestamp, stale)
    _check_not_behind(repo)
    return repo


def published_record(path: Path) -> Path:
    """Where the newest versions this machine published are recorded: beside the repository, outside it."""
    return path.parent / f".{path.name}-published.json"


def record_published(repo: Repository) -> None:
    versions = {md.signed.type: md.signed.version for md in (repo.root, repo.targets, repo.snapshot, repo.timestamp)}
    with atomic_file(published_record(repo.path)) as f:
        f.write(json.dumps(versions, sort_keys=True).encode() + b"\n")


def _check_not_behind(repo: Repository) -> None:
    """Refuse a repository older than what this machine published (restored from a copy that lags)."""
    record = published_record(repo.path)
    if not record.exists():
        return
    try:
        published = json.loads(_read_bounded(record, 4096, "the record of what was published"))
        behind = [
            f"{md.signed.type} v{md.signed.version} < v{published[md.signed.type]}"
            for md in (repo.root, repo.targets, repo.snapshot, repo.timestamp)
            if md.signed.version < int(published[md.signed.type])
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise _corrupt(repo.path, f"{record.name} is not a record of published versions ({e})") from e
    if behind:
        raise _corrupt(
            repo.path,
            f"older than what was published from here ({', '.join(behind)})",
            f"copy back the newest published repository (a mirror with timestamp v{published['timestamp']} or "
            f"newer); if this older one must be served, remove {record} knowing that clients refuse it as a rollback",
        )


def _check_leftovers(meta: Path, snapshot: int, targets: int, path: Path) -> None:
    """Refuse versioned files more than one version past the published ones.

    A crashed change leaves at most the next version of each (overwritten by
    the next change); more means that ``timestamp.json`` was put back to an
    older one, and extending the repository from there would overwrite
    metadata clients have already seen.
    """
    for role, published in ((Snapshot.type, snapshot), (Targets.type, targets)):
        for file in meta.glob(f"*.{role}.json"):
            version = file.name.split(".", 1)[0]
            if version.isdigit() and int(version) > published + 1:
                raise _corrupt(
                    path,
                    f"{file.name} is newer than the published {role} v{published}: "
                    "timestamp.json was put back to an older one",
                )


def _check_target_files(path: Path, targets: Targets) -> None:
    """Every target's file is there, with its length (its hash is what clients check)."""
    for info in targets.targets.values():
        dirname, _, name = info.path.rpartition("/")
        file = path / TARGETS_DIR / dirname / f"{info.hashes['sha256']}.{name}"
        try:
            size = os.lstat(file)
        except OSError:
            raise _corrupt(path, f"the target {info.path} has no file {file.relative_to(path)}") from None
        if not stat.S_ISREG(size.st_mode) or size.st_size != info.length:
            raise _corrupt(path, f"{file.relative_to(path)} is not the {info.length}-byte file its target names")


def _check_by_chain(
    roots: Sequence[Metadata[Root]], role: str, md: Metadata[Any], where: str, path: Path, interrupted: bool
) -> set[str]:
    """Check ``md`` against the current root; with ``interrupted``, signed under the root before is *stale*."""
    try:
        _check_signed(roots[-1].signed, role, md, where, path)
        return set()
    except BadInputError as e:
        if len(roots) > 1:
            try:
                _check_signed(roots[-2].signed, role, md, where, path)
            except BadInputError:
                raise e from None
            if interrupted:
                return {role}
            raise _corrupt(
                path,
                f"{where} is signed under root v{roots[-2].signed.version}, not the newest root "
                f"v{roots[-1].signed.version}",
                "if a rotation just failed, finish it: repository.py refresh --after-interrupted-rotation; "
                "otherwise restore release/repository/ from the last published copy",
            ) from e
        raise


def _parse(data: bytes, role: str, file: Path, version: int | None = None) -> Metadata[Any]:
    try:
        md = Metadata.from_bytes(data)
    except DeserializationError as e:
        raise _corrupt(file.parent.parent, f"{file.name} is not {role} metadata ({e})") from e
    if md.signed.type != role:
        raise _corrupt(file.parent.parent, f"{file.name} holds {md.signed.type} metadata, not {role}")
    if version is not None and md.signed.version != version:
        raise _corrupt(file.parent.parent, f"{file.name} holds version {md.signed.version}, not {version}")
    return md


@dataclass
class Keys:
    """The signers of a change: whichever roles it re-signs (root: every root key at hand)."""

    root: list[RoleKey] = field(default_factory=list)
    targets: RoleKey | None = None
    snapshot: RoleKey | None = None
    timestamp: RoleKey | None = None


def new_root(
    root_keys: Sequence[Ed25519PublicKey],
    threshold: int,
    targets: Ed25519PublicKey,
    snapshot: Ed25519PublicKey,
    timestamp: Ed25519PublicKey,
    now: datetime,
    version: int = 1,
) -> Root:
    """A root of ``version`` with these keys (``threshold`` of ``root_keys`` sign the root)."""
    check_threshold(threshold, len(root_keys))
    root = Root(version=version, expires=now + EXPIRY[Root.type], consistent_snapshot=True)
    for key in root_keys:
        root.add_key(ssl_key(key), Root.type)
    root.roles[Root.type].threshold = threshold
    root.add_key(ssl_key(targets), Targets.type)
    root.add_key(ssl_key(snapshot), Snapshot.type)
    root.add_key(ssl_key(timestamp), Timestamp.type)
    return root


def check_threshold(threshold: int, keys: int) -> None:
    if not 1 <= threshold <= keys:
        raise BadInputError(
            f"a root threshold of {threshold} with {keys} root key(s)",
            hint="the threshold is at least 1 and at most the number of root keys",
        )


def _sign(md: Metadata[Any], keys: Sequence[RoleKey]) -> None:
    md.signatures.clear()
    for key in keys:
        md.sign(RoleSigner(key), append=True)


def sign_root(root: Root, previous: Root | None, keys: Sequence[RoleKey]) -> Metadata[Root]:
    """``root`` signed with ``keys``: refused unless they meet both the previous root's threshold and its own."""
    md = Metadata(root)
    ids = {ssl_key(k.public).keyid for k in keys}
    for what, trusted in (("the previous", previous), ("the new", root)):
        if trusted is None:
            continue
        role = trusted.roles[Root.type]
        have = ids & set(role.keyids)
        if len(have) < role.threshold:
            raise SigningError(
                f"root v{root.version} needs {role.threshold} signature(s) of {what} root keys and has {len(have)}",
                hint="give every root key that must sign (--sign-with ROLE, each ROLE's key in keys/ or on its token)",
            )
    _sign(md, [k for k in keys if ssl_key(k.public).keyid in set(root.roles[Root.type].keyids) | _ids(previous)])
    return md


def _ids(root: Root | None) -> set[str]:
    return set(root.roles[Root.type].keyids) if root is not None else set()


def _public_of(root: Root, role: str) -> set[str]:
    return set(root.roles[role].keyids)


def _require(key: RoleKey | None, root: Root, role: str) -> RoleKey:
    if key is None:
        raise SigningError(f"no key was given to sign the {role} role")
    if ssl_key(key.public).keyid not in _public_of(root, role):
        raise SigningError(
            f"the {key.role} key ({key.uri}) is not the {role} key of root v{root.version}",
            hint=f"rotate the {role} key (release/builder/repository.py rotate-key {role}), or use the key root names",
        )
    return key


def initial(path: Path, root: Metadata[Root], now: datetime) -> Repository:
    """An empty repository: ``root`` and targets, snapshot and timestamp at version 0 (none published yet)."""
    targets = Metadata(Targets(expires=now))
    snapshot = Metadata(Snapshot(expires=now))
    timestamp = Metadata(Timestamp(expires=now))
    for md in (targets, snapshot, timestamp):
        md.signed.version = 0  # the first change publishes version 1 of each
    return Repository(path, [root], targets, snapshot, timestamp, new_roots=1)


@dataclass
class Staged:
    """A new state of the repository, written except for its ``timestamp.json`` (see :meth:`commit`)."""

    repository: Repository
    roots: list[tuple[Path, bytes]]
    timestamp_bytes: bytes

    def commit(self) -> None:
        """Publish the new state: any new root version, then ``timestamp.json``, each in one atomic rename.

        Clients find a new root by its version, not through the timestamp, so
        it is written here, last but one: a crash between the two leaves a
        repository whose next change re-signs what the old root's keys signed.
        """
        meta = self.repository.path / METADATA_DIR
        try:
            for path, data in self.roots:
                with atomic_file(path) as f:
                    f.write(data)
            if self.roots:
                failpoint("repository:roots-written")
            if self.timestamp_bytes:
                with atomic_file(meta / "timestamp.json") as f:
                    f.write(self.timestamp_bytes)
            fsync_dir(meta)
            if self.timestamp_bytes:
                record_published(self.repository)
        except OSError as e:
            raise SystemFailure(f"cannot publish {meta / 'timestamp.json'}: {e.strerror}") from e


def _write_metadata(path: Path, md: Metadata[Any]) -> bytes:
    data = md.to_bytes(_PRETTY)
    with atomic_file(path) as f:
        f.write(data)
    return data


def _meta_of(md: Metadata[Any], data: bytes) -> MetaFile:
    return MetaFile(version=md.signed.version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def _bump(md: Metadata[Any], now: datetime) -> None:
    md.signed.version += 1
    md.signed.expires = now + EXPIRY[md.signed.type]


def stage(repo: Repository, keys: Keys, now: datetime, *, targets_changed: bool) -> Staged:
    """Write the new targets (if changed or stale) and snapshot versions; sign the timestamp and any new root.

    Returns what :meth:`Staged.commit` publishes: the new roots and the timestamp, not yet written.
    """
    meta = repo.path / METADATA_DIR
    meta.mkdir(parents=True, exist_ok=True)
    root = repo.root.signed
    unwritten = repo.roots[len(repo.roots) - repo.new_roots :]
    roots = [(meta / f"{md.signed.version}.root.json", md.to_bytes(_PRETTY)) for md in unwritten]
    if not targets_changed and not repo.targets.signed.version:
        return Staged(repo, roots, b"")  # no release yet: the root alone
    if targets_changed or Targets.type in repo.stale:
        _bump(repo.targets, now)
        _sign(repo.targets, [_require(keys.targets, root, Targets.type)])
        targets_data = _write_metadata(meta / f"{repo.targets.signed.version}.targets.json", repo.targets)
    else:
        targets_data = _read_bounded(
            meta / f"{repo.targets.signed.version}.targets.json", MAX_METADATA_BYTES, "the targets metadata"
        )
    _bump(repo.snapshot, now)
    repo.snapshot.signed.meta = {f"{Targets.type}.json": _meta_of(repo.targets, targets_data)}
    _sign(repo.snapshot, [_require(keys.snapshot, root, Snapshot.type)])
    snap_file = meta / f"{repo.snapshot.signed.version}.snapshot.json"
    snap_data = _write_metadata(snap_file, repo.snapshot)
    _bump(repo.timestamp, now)
    repo.timestamp.signed.snapshot_meta = _meta_of(repo.snapshot, snap_data)
    _sign(repo.timestamp, [_require(keys.timestamp, root, Timestamp.type)])
    fsync_dir(meta)
    return Staged(repo, roots, repo.timestamp.to_bytes(_PRETTY))


def check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name) or name.endswith(".part"):
        raise BadInputError(f"{name!r}: {what} is not a plain file name a customer's folder can hold")
    return name


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version) or re.search(r"(^|\.)0\d", version.partition("-")[0].partition("+")[0]):
        raise BadInputError(f"{version!r}: not a release version (digits first, then letters, digits, . + -)")
    return version


def _parts(text: str) -> tuple[tuple[int, int, str], ...]:
    """Numbers as numbers, words as words (numbers first), so that rc10 comes after rc9."""
    pieces = [p for p in re.split(r"[.+-]|(?<=\d)(?=\D)|(?<=\D)(?=\d)", text) if p]
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pieces)


VersionKey = tuple[tuple[tuple[int, int, str], ...], int, tuple[tuple[int, int, str], ...], str]


def version_key(version: str) -> VersionKey:
    """Order versions as people do: 1.10.0 after 1.9.2; a pre-release (1.0.0-rc1) before its release.

    Build metadata (``+...``) orders after the release it is of.
    """
    main, _, build = version.partition("+")
    core, _, pre = main.partition("-")
    # The text itself last: two spellings that compare equal otherwise still have one order.
    return (_parts(core), 0 if pre else 1, (*_parts(pre), (2, 0, ""), *_parts(build)), version)


def is_prerelease(version: str) -> bool:
    return "-" in version.partition("+")[0]


def _copy_target(src: Path, dest_dir: Path, name: str) -> TargetFile:
    """Copy ``src`` into ``dest_dir`` as ``<sha256>.<name>`` (streamed, hashed while copied); its target entry."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{name}.part"
    sha = hashlib.sha256()
    size = 0
    with src.open("rb") as f, atomic_file(tmp) as out:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
            out.write(chunk)
    digest = sha.hexdigest()
    os.replace(tmp, dest_dir / f"{digest}.{name}")
    return TargetFile(size, {"sha256": digest}, f"{dest_dir.name}/{name}" if dest_dir.name != TARGETS_DIR else name)


def add_release(
    repo: Repository,
    release_dir: Path,
    version: str,
    products: Mapping[str, Sequence[str]],
    keys: Keys,
    now: datetime,
) -> Staged:
    """Stage ``release_dir``'s files as the targets ``<version>/<name>`` (replacing that version's earlier files).

    ``products``: each product's own files; every other file of the folder is
    shared by all of them. Earlier releases stay listed. Nothing is reachable
    by a client until :meth:`Staged.commit`.
    """
    check_version(version)
    names = sorted(p.name for p in release_dir.iterdir() if p.name != ".gitkeep")
    for name in names:
        check_name(name, "a release file")
        if not (release_dir / name).is_file() or (release_dir / name).is_symlink():
            raise BadInputError(f"{release_dir / name}: a release file that is not a regular file")
    _check_products(products, names, version)
    own = {n for files in products.values() for n in files}
    if not own <= set(names):
        raise BadInputError(f"{release_dir}: lacks the product files {', '.join(sorted(own - set(names)))}")
    targets = repo.targets.signed.targets
    for path in [p for p in targets if p.startswith(f"{version}/")]:
        del targets[path]
    vdir = repo.path / TARGETS_DIR / version
    for name in names:
        info = _copy_target(release_dir / name, vdir, name)
        targets[info.path] = info
    index = repo.index()
    releases = dict(index["releases"])
    releases[version] = {
        "products": {p: sorted(files) for p, files in sorted(products.items())},
        "shared": sorted(set(names) - own),
    }
    # The latest is the highest release; a pre-release only when there is nothing else.
    finals = [v for v in releases if not is_prerelease(v)] or list(releases)
    ordered = {v: releases[v] for v in sorted(releases, key=version_key)}  # the index lists them oldest first
    index = {"format": INDEX_FORMAT, "latest": max(finals, key=version_key), "releases": ordered}
    data = json.dumps(index, indent=1).encode() + b"\n"
    digest = hashlib.sha256(data).hexdigest()
    with atomic_file(repo.path / TARGETS_DIR / f"{digest}.{INDEX_TARGET}") as f:
        f.write(data)
    targets[INDEX_TARGET] = TargetFile(len(data), {"sha256": digest}, INDEX_TARGET)
    fsync_dir(vdir)
    return stage(repo, keys, now, targets_changed=True)


def _check_products(products: Mapping[str, Sequence[str]], names: Sequence[str], version: str) -> None:
    """Each product's files are named ``ransomeye-<product>-<version>.*`` and hold its archive; no shared file is."""
    prefixes = {p: f"ransomeye-{p}-{version}." for p in products}
    for product, files in products.items():
        if not any(prefixes[product] + suffix.lstrip(".") in files for suffix in ARCHIVE_SUFFIXES):
            raise BadInputError(f"the release {version} has no archive of the product {product}")
        stray = [f for f in files if not f.startswith(prefixes[product])]
        if stray:
            raise BadInputError(f"{', '.join(stray)}: not files of the product {product} {version}")
    for name in set(names) - {f for files in products.values() for f in files}:
        if name.startswith("ransomeye-") and any(name.startswith(pre) for pre in prefixes.values()):
            raise BadInputError(f"{name}: a product's file listed as shared")


def refresh(repo: Repository, keys: Keys, now: datetime, *, renew_targets: bool = False) -> Staged:
    """The daily job: new snapshot and timestamp versions with fresh expiries; the targets' too when asked."""
    return stage(repo, keys, now, targets_changed=renew_targets)


def expires_soon(md: Metadata[Any], now: datetime, within: timedelta = RENEW_WITHIN) -> bool:
    return bool(md.signed.expires - now < within)


def rotate_root(repo: Repository, root: Root, keys: Keys, now: datetime) -> Staged:
    """Publish ``root`` as the next root version (signed by the old root keys and the new), then snapshot and timestamp.

    A changed targets key re-signs the targets metadata (``keys.targets`` must be the new key).
    """
    previous = repo.root.signed
    root.version = previous.version + 1
    root.expires = now + EXPIRY[Root.type]
    repo.roots.append(sign_root(root, previous, keys.root))
    repo.new_roots += 1
    targets_changed = _public_of(root, Targets.type) != _public_of(previous, Targets.type)
    return stage(repo, keys, now, targets_changed=targets_changed)


def role_public(root: Root, role: str) -> Ed25519PublicKey:
    """The one Ed25519 key ``root`` names for ``role`` (targets, snapshot, timestamp)."""
    (keyid,) = root.roles[role].keyids
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(root.keys[keyid].keyval["public"]))


def replace_key(root: Root, role: str, public: Ed25519PublicKey) -> Root:
    """A copy of ``root`` whose ``role`` (targets, snapshot or timestamp) has only the key ``public``."""
    new = Root.from_dict(copy.deepcopy(root.to_dict()))  # from_dict reuses the key id lists: never share them
    for keyid in list(new.roles[role].keyids):
        new.revoke_key(keyid, role)
    new.add_key(ssl_key(public), role)
    return new


def new_root_keys(root: Root, publics: Sequence[Ed25519PublicKey], threshold: int) -> Root:
    """A copy of ``root`` whose root role has exactly the keys ``publics`` and ``threshold``."""
    check_threshold(threshold, len(publics))
    new = Root.from_dict(copy.deepcopy(root.to_dict()))
    for keyid in list(new.roles[Root.type].keyids):
        new.revoke_key(keyid, Root.type)
    for key in publics:
        new.add_key(ssl_key(key), Root.type)
    new.roles[Root.type].threshold = threshold
    return new


def prepare(path: Path, keys_dir: Path, release_key: RoleKey, now: datetime) -> tuple[Repository, Keys]:
    """The repository a release lands in, checked, and the keys that extend it: before any work starts.

    A development key folder creates the repository on first use (its root
    signed by the development owner key); a production one never does: the
    owner creates it offline (``repository.py init``).
    """
    owner = load_public_key(public_key_path(keys_dir, OWNER_ROLE))
    snapshot = load_role_key(keys_dir, SNAPSHOT_KEY_ROLE)
    timestamp = load_role_key(keys_dir, TIMESTAMP_KEY_ROLE)
    keys = Keys(targets=release_key, snapshot=snapshot, timestamp=timestamp)
    if (path / METADATA_DIR).exists() or path.is_symlink():
        repo = load(path, owner)
    elif (keys_dir / DEV_MARKER).exists() and has_private_key(keys_dir, OWNER_ROLE):
        owner_key = load_role_key(keys_dir, OWNER_ROLE)
        root = new_root([owner], 1, release_key.public, snapshot.public, timestamp.public, now)
        repo = initial(path, sign_root(root, None, [owner_key]), now)
    else:
        raise BadInputError(
            f"{path}: no TUF repository to publish into",
            hint="the owner creates it once, offline: python3 release/builder/repository.py init (see keys/README.md)",
        )
    check_usable(repo, keys, now)
    return repo, keys


def check_usable(repo: Repository, keys: Keys, now: datetime) -> None:
    """Refuse, before any work, a repository whose root expired or does not name these keys."""
    root = repo.root.signed
    if root.is_expired(now):
        raise BadInputError(
            f"{repo.path}: its root (v{root.version}) expired on {root.expires:%Y-%m-%d}",
            hint="the root keys renew it: python3 release/builder/repository.py rotate-root (same keys, new expiry)",
        )
    for key, role in ((keys.targets, Targets.type), (keys.snapshot, Snapshot.type), (keys.timestamp, Timestamp.type)):
        _require(key, root, role)


def product_files(ws: Workspace, names: Sequence[str]) -> dict[str, list[str]]:
    """Each product's own files among ``names``: its archive, its SBOM and every file named after either."""
    products = {}
    for bundle in ws.bundles:
        prefix = f"{bundle.stem(ws.version)}."
        products[bundle.id] = sorted(n for n in names if n.startswith(prefix))
    return products


TRUSTED_ROOT_NAME = "root.json"


def publish_trusted_root(keys_dir: Path, repo: Repository) -> Path | None:
    """Write ``keys/root.json`` (the repository's first root, what customers trust) when it is not there yet."""
    path = keys_dir / TRUSTED_ROOT_NAME
    if path.exists() or path.is_symlink():
        return None
    with atomic_file(path) as f:
        f.write(repo.roots[0].to_bytes(_PRETTY))
    return path
