"""The customers' TUF clients against an attacker's mirror (release/fetch.py and tuf-js's tuf-fetch.mjs).

Proven here, over HTTP from a server on 127.0.0.1 (tests/tuf_mirror.py) and
on copies of a real release's repository with its real keys:

* Honest mirrors: ``fetch.py`` fetches and verifies every product (over HTTP,
  and from a ``file://`` mirror) into a folder that holds exactly the files the
  signed index lists for it; tuf-js fetches the index and an archive,
  byte-identical to the repository's. A client that trusts root v1 follows a
  timestamp key rotation and two root rotations (the last to two root keys,
  threshold 2): it walks up several root versions and fetches, with both clients.
* The attack table: each case turns a fresh copy of the honest repository into
  an attacker's mirror. The attacker holds old, honestly signed metadata and
  no key, except where the case's name says a key was stolen. Clients whose
  state must have seen newer metadata (rollback, freeze) first fetch from the
  honest repository. Against every case each client exits 1 with its one-line
  refusal naming the attack (fetch.py: its words; tuf-js: the error class),
  leaves no output and no temporary folder (its ``TMPDIR`` and ``HOME`` are
  empty afterwards), and keeps its trusted metadata: no version in its state
  went down. Endless answers are abandoned by the client long before their
  end. Cases: rollback of timestamp, snapshot, targets and root; a frozen
  mirror (a client holding the expired timestamp, and a new client);
  mix-and-match of snapshot and targets (an older file under the current
  name is refused as substituted, its parent pinning the hash; one pinned by
  a stolen key, as mix-and-match); substituted archive and index;
  endless timestamp, archive and root; a wrong key, a key of another role, a
  flipped signature byte; too few root signatures after a rotation to
  threshold 2; and, for fetch.py's own checks behind the TUF client, a stolen
  release key publishing an in-toto layout as a ``.link`` (refused before
  ``in-toto-verify`` would run its inspection, which a control shows it
  would), an index naming files outside the folder or hidden, and a ``.link``
  too large to download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from in_toto.models.layout import Inspection, Layout
from in_toto.models.metadata import Metablock
from securesystemslib.signer import Signature
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from release import repository as tuf
from release.keys import generate_key, load_public_key, public_key_path
from release.repository import RoleSigner
from release.signers import RoleKey, load_role_key, ssl_key
from tests.conftest import ROOT, Repo
from tests.forge import CORE, VERIFY, VERSION
from tests.tuf_mirror import ENDLESS_BYTES, MirrorServer, running

pytestmark = pytest.mark.slow

FETCH = ROOT / "release" / "fetch.py"
TUF_FETCH = ROOT / "release" / "verify-js" / "tuf-fetch.mjs"
MAINTAIN = ROOT / "release" / "builder" / "repository.py"
PRODUCTS = ["core", "agent-linux", "agent-windows", "dpi"]
ARCHIVE = f"{VERSION}/{CORE}"
INDEX = "releases.json"
STATE_FILES = ("root.json", "timestamp.json", "snapshot.json", "targets.json")
PRETTY = JSONSerializer(compact=False)
NOW = tuf.utc_now()
RUN_TIMEOUT = 120
ROOT2 = "root2"  # the second root key's role (generated for the rotation to threshold 2)
HUGE = (16 << 20) + (1 << 20)  # over fetch.py's bound for a .link (16 MiB)


# --- the honest repository and the mirror ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Honest:
    """A copy of the session's release repository and of its keys (never changed)."""

    repository: Path
    keys: Path


@pytest.fixture(scope="module")
def honest(released: Repo, tmp_path_factory: pytest.TempPathFactory) -> Honest:
    """A new repository holding the session's release, at version 1 of every role.

    Made here, not copied: other tests re-release ``released`` and so advance its repository.
    """
    base = tmp_path_factory.mktemp("honest")
    keys = shutil.copytree(released.keys, base / "keys")
    (keys / tuf.TRUSTED_ROOT_NAME).unlink(missing_ok=True)
    now = tuf.utc_now()
    repo, signers = tuf.prepare(base / "repository", keys, load_role_key(keys, "release"), now)
    names = sorted(p.name for p in released.artifacts.iterdir() if not p.name.startswith("."))
    products = tuf.product_files(released.ws, names)
    tuf.add_release(repo, released.artifacts, released.ws.version, products, signers, now).commit()
    tuf.publish_trusted_root(keys, repo)
    return Honest(base / "repository", keys)


@pytest.fixture(scope="module")
def server() -> Iterator[MirrorServer]:
    with running() as s:
        yield s


@dataclasses.dataclass(frozen=True)
class Scene:
    """One test's repository (honest, then the attacker's mirror), its keys and what the attacker kept."""

    repository: Path
    keys: Path
    old: Path  # the metadata folder as the release published it (old, honestly signed)
    url: str
    server: MirrorServer
    tmp: Path

    @property
    def root(self) -> Path:
        """The customer's trusted root (the repository's first, as the keys folder publishes it)."""
        return self.keys / tuf.TRUSTED_ROOT_NAME

    def key(self, role: str) -> RoleKey:
        return load_role_key(self.keys, role)

    def meta(self, name: str) -> Path:
        return self.repository / "metadata" / name

    def old_bytes(self, name: str) -> bytes:
        return (self.old / name).read_bytes()

    def target_url(self, path: str) -> str:
        return f"{self.url}/targets/{target_file(self, path).relative_to(self.repository / 'targets')}"


def make_scene(honest: Honest, server: MirrorServer, tmp: Path) -> Scene:
    repository = tmp / "mirror" / "repository"
    shutil.copytree(honest.repository, repository)
    shutil.copytree(honest.keys, tmp / "keys")
    shutil.copytree(repository / "metadata", tmp / "old-metadata")
    return Scene(repository, tmp / "keys", tmp / "old-metadata", server.serve(repository), server, tmp)


def maintain(scene: Scene, *args: str) -> None:
    """Run the repository's maintenance command on the scene's repository, as its operator does."""
    proc = subprocess.run(
        [sys.executable, str(MAINTAIN), "--keys-dir", str(scene.keys), "--repository", str(scene.repository), *args],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"repository.py {' '.join(args)}: {proc.stderr}"


# --- the clients -------------------------------------------------------------------------------------


class Client:
    """A customer's client with its own state (trusted metadata), HOME, TMPDIR and download folder."""

    name = ""

    def __init__(self, folder: Path, root: Path) -> None:
        self.root = root
        self.state = folder / "state"
        self.downloads = folder / "downloads"
        self.home = folder / "home"
        self.tmpdir = folder / "tmp"
        for path in (self.downloads, self.home, self.tmpdir):
            path.mkdir(parents=True)

    @property
    def out(self) -> Path:
        return self.downloads / "out"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RANSOMEYE_", "XDG_"))}
        return {**env, "HOME": str(self.home), "TMPDIR": str(self.tmpdir), "LANG": "C.UTF-8"}

    def run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.home, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip

    def prime(self, url: str) -> None:
        """Fetch from the honest repository once: the state then holds its current metadata."""
        raise NotImplementedError

    def fetch(self, url: str, attack: Attack) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def refusal(self, proc: subprocess.CompletedProcess[str]) -> str:
        """The client's one-line refusal (asserted to be one line, with the client's refusal prefix)."""
        raise NotImplementedError

    def versions(self) -> dict[str, int]:
        """The version of each trusted metadata file in the state."""
        return {
            name: int(json.loads((self.state / name).read_bytes())["signed"]["version"])
            for name in STATE_FILES
            if (self.state / name).exists()
        }


class FetchPy(Client):
    name = "fetch.py"

    def command(self, url: str, *args: str) -> list[str]:
        return [sys.executable, str(FETCH), "--root", str(self.root), "--mirror", url, "--state", str(self.state),
                *args]  # fmt: skip

    def prime(self, url: str) -> None:
        proc = self.run(self.command(url, "--list"))
        assert proc.returncode == 0, proc.stderr

    def fetch(self, url: str, attack: Attack) -> subprocess.CompletedProcess[str]:
        return self.run(self.command(url, "--product", attack.product, "--out", str(self.out)))

    def refusal(self, proc: subprocess.CompletedProcess[str]) -> str:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fetch: error: refused: "), proc.stderr
        return lines[0]


class TufJs(Client):
    name = "tuf-js"

    def command(self, url: str, target: str, out: Path) -> list[str]:
        return ["node", str(TUF_FETCH), "--root", str(self.root), "--metadata-url", f"{url}/metadata/",
                "--targets-url", f"{url}/targets/", "--cache", str(self.state), "--target", target,
                "--out", str(out)]  # fmt: skip

    def prime(self, url: str) -> None:
        out = self.home / "primed-index.json"
        proc = self.run(self.command(url, INDEX, out))
        assert proc.returncode == 0, proc.stderr
        out.unlink()

    def fetch(self, url: str, attack: Attack) -> subprocess.CompletedProcess[str]:
        return self.run(self.command(url, attack.target, self.out))

    def refusal(self, proc: subprocess.CompletedProcess[str]) -> str:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tuf-fetch: refused: "), proc.stderr
        return lines[0]


CLIENTS: dict[str, type[Client]] = {"fetch.py": FetchPy, "tuf-js": TufJs}


# --- reading and crafting metadata (python-tuf's Metadata API) -------------------------------------------


def read_md(path: Path) -> Metadata[Any]:
    return Metadata.from_bytes(path.read_bytes())


def put(path: Path, data: bytes) -> None:
    """Replace ``path`` (a new file: never writes through to a file another copy shares)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def signed_bytes(md: Metadata[Any], *keys: RoleKey) -> bytes:
    md.signatures.clear()
    for key in keys:
        md.sign(RoleSigner(key), append=True)
    return md.to_bytes(PRETTY)


def meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def current_timestamp(scene: Scene) -> Metadata[Timestamp]:
    return cast(Metadata[Timestamp], read_md(scene.meta("timestamp.json")))


def current_snapshot(scene: Scene) -> Metadata[Snapshot]:
    version = current_timestamp(scene).signed.snapshot_meta.version
    return cast(Metadata[Snapshot], read_md(scene.meta(f"{version}.snapshot.json")))


def current_targets(scene: Scene) -> Metadata[Targets]:
    version = current_snapshot(scene).signed.meta["targets.json"].version
    return cast(Metadata[Targets], read_md(scene.meta(f"{version}.targets.json")))


def snapshot_now(scene: Scene) -> tuple[int, bytes]:
    version = current_timestamp(scene).signed.snapshot_meta.version
    return version, scene.meta(f"{version}.snapshot.json").read_bytes()


def write_targets(scene: Scene, md: Metadata[Targets], *keys: RoleKey) -> tuple[int, bytes]:
    """``md`` published as the next targets version, signed by ``keys``: its version and bytes."""
    md.signed.version = current_targets(scene).signed.version + 1
    md.signed.expires = NOW + timedelta(days=365)
    data = signed_bytes(md, *keys)
    put(scene.meta(f"{md.signed.version}.targets.json"), data)
    return md.signed.version, data


def write_snapshot(scene: Scene, targets: tuple[int, bytes], *keys: RoleKey) -> tuple[int, bytes]:
    """The next snapshot version, naming ``targets`` (version, bytes), signed by ``keys``."""
    md = current_snapshot(scene)
    md.signed.version += 1
    md.signed.expires = NOW + timedelta(days=7)
    md.signed.meta = {"targets.json": meta_file(*targets)}
    data = signed_bytes(md, *keys)
    put(scene.meta(f"{md.signed.version}.snapshot.json"), data)
    return md.signed.version, data


def write_timestamp(
    scene: Scene, snapshot: tuple[int, bytes], *keys: RoleKey, expires: timedelta = timedelta(days=1)
) -> None:
    """The next timestamp version, naming ``snapshot`` (version, bytes), signed by ``keys``."""
    md = current_timestamp(scene)
    md.signed.version += 1
    md.signed.expires = NOW + expires
    md.signed.snapshot_meta = meta_file(*snapshot)
    put(scene.meta("timestamp.json"), signed_bytes(md, *keys))


def republish(scene: Scene, targets: Metadata[Targets], targets_key: str = tuf.TARGETS_KEY_ROLE) -> None:
    """``targets`` as the next version (signed by the key of the role ``targets_key``), then snapshot and timestamp.

    What an attacker holding the release key (or another, by ``targets_key``) and the online keys publishes.
    """
    version_data = write_targets(scene, targets, scene.key(targets_key))
    snapshot = write_snapshot(scene, version_data, scene.key(tuf.SNAPSHOT_KEY_ROLE))
    write_timestamp(scene, snapshot, scene.key(tuf.TIMESTAMP_KEY_ROLE))


def target_file(scene: Scene, path: str) -> Path:
    """Where the mirror stores the target ``path`` (``<dir>/<sha256>.<name>``)."""
    info = current_targets(scene).signed.targets[path]
    folder, _, name = path.rpartition("/")
    return scene.repository / "targets" / folder / f"{info.hashes['sha256']}.{name}"


def put_target(scene: Scene, targets: Metadata[Targets], path: str, data: bytes) -> None:
    """Store ``data`` as the target ``path`` and list it in ``targets``."""
    info = TargetFile.from_data(path, data, ["sha256"])
    folder, _, name = path.rpartition("/")
    put(scene.repository / "targets" / folder / f"{info.hashes['sha256']}.{name}", data)
    targets.signed.targets[path] = info


def index_of(scene: Scene) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(target_file(scene, INDEX).read_bytes()))


def index_bytes(index: dict[str, Any]) -> bytes:
    return json.dumps(index, indent=1, sort_keys=True).encode() + b"\n"


def release_keyid8(scene: Scene) -> str:
    return ssl_key(scene.key(tuf.TARGETS_KEY_ROLE).public).keyid[:8]


# --- the honest repository's evolution (what the clients saw before the attack) -----------------------


def refreshed(scene: Scene) -> None:
    """The daily job ran: snapshot v2, timestamp v2."""
    maintain(scene, "refresh")


def targets_resigned(scene: Scene) -> None:
    """The release key re-signed the targets: targets v2, snapshot v2, timestamp v2."""
    keys = tuf.Keys(
        targets=scene.key(tuf.TARGETS_KEY_ROLE),
        snapshot=scene.key(tuf.SNAPSHOT_KEY_ROLE),
        timestamp=scene.key(tuf.TIMESTAMP_KEY_ROLE),
    )
    tuf.stage(tuf.load(scene.repository), keys, NOW, targets_changed=True).commit()


def root_renewed(scene: Scene) -> None:
    """The owner renewed the root: root v2 (same keys)."""
    maintain(scene, "rotate-root")


def root_threshold_two(scene: Scene) -> None:
    """Root v2 has two root keys, the owner's and a second, threshold 2."""
    generate_key(scene.keys, ROOT2)
    maintain(scene, "rotate-root", "--root-key", tuf.OWNER_ROLE, "--root-key", ROOT2, "--threshold", "2")


def published(scene: Scene) -> dict[str, int]:
    """The versions of the scene's (honest) repository, as a client's state names them."""
    repo = tuf.load(scene.repository)
    roles = (repo.root, repo.timestamp, repo.snapshot, repo.targets)
    return {f"{md.signed.type}.json": md.signed.version for md in roles}


# --- the attacks --------------------------------------------------------------------------------------


def old_timestamp_replayed(scene: Scene) -> None:
    put(scene.meta("timestamp.json"), scene.old_bytes("timestamp.json"))


def timestamp_names_old_snapshot(scene: Scene) -> None:
    write_timestamp(scene, (1, scene.old_bytes("1.snapshot.json")), scene.key(tuf.TIMESTAMP_KEY_ROLE))


def snapshot_names_old_targets(scene: Scene) -> None:
    snapshot = write_snapshot(scene, (1, scene.old_bytes("1.targets.json")), scene.key(tuf.SNAPSHOT_KEY_ROLE))
    write_timestamp(scene, snapshot, scene.key(tuf.TIMESTAMP_KEY_ROLE))


def old_root_as_next(scene: Scene) -> None:
    put(scene.meta("3.root.json"), scene.old_bytes("1.root.json"))


def expired_timestamp(scene: Scene) -> None:
    """The repository's own timestamp key signs a timestamp that has expired (a day later, frozen)."""
    write_timestamp(scene, snapshot_now(scene), scene.key(tuf.TIMESTAMP_KEY_ROLE), expires=timedelta(hours=-1))


def old_snapshot_as_current(scene: Scene) -> None:
    put(scene.meta("2.snapshot.json"), scene.old_bytes("1.snapshot.json"))


def old_targets_as_current(scene: Scene) -> None:
    put(scene.meta("2.targets.json"), scene.old_bytes("1.targets.json"))


def timestamp_pins_old_snapshot_as_current(scene: Scene) -> None:
    old = scene.old_bytes("1.snapshot.json")
    put(scene.meta("2.snapshot.json"), old)
    write_timestamp(scene, (2, old), scene.key(tuf.TIMESTAMP_KEY_ROLE))


def snapshot_pins_old_targets_as_current(scene: Scene) -> None:
    old = scene.old_bytes("1.targets.json")
    put(scene.meta("2.targets.json"), old)
    snapshot = write_snapshot(scene, (2, old), scene.key(tuf.SNAPSHOT_KEY_ROLE))
    write_timestamp(scene, snapshot, scene.key(tuf.TIMESTAMP_KEY_ROLE))


def archive_same_length(scene: Scene) -> None:
    path = target_file(scene, ARCHIVE)
    data = path.read_bytes()
    put(path, data[:-1] + bytes([data[-1] ^ 0x01]))


def archive_shorter(scene: Scene) -> None:
    path = target_file(scene, ARCHIVE)
    put(path, path.read_bytes()[:-1024])


def index_replaced(scene: Scene) -> None:
    index = index_of(scene)
    index["releases"][VERSION]["products"]["core"] = [CORE]  # no signatures, no SBOM to check it against
    put(target_file(scene, INDEX), index_bytes(index))


def endless_timestamp(scene: Scene) -> None:
    scene.server.endless(f"{scene.url}/metadata/timestamp.json")


def endless_archive(scene: Scene) -> None:
    scene.server.endless(scene.target_url(ARCHIVE))


def endless_next_root(scene: Scene) -> None:
    scene.server.endless(f"{scene.url}/metadata/2.root.json")


def timestamp_by_unknown_key(scene: Scene) -> None:
    stranger = RoleKey.from_private(tuf.TIMESTAMP_KEY_ROLE, Ed25519PrivateKey.generate())
    write_timestamp(scene, snapshot_now(scene), stranger)


def targets_by_snapshot_key(scene: Scene) -> None:
    republish(scene, current_targets(scene), targets_key=tuf.SNAPSHOT_KEY_ROLE)


def signature_byte_flipped(scene: Scene) -> None:
    md = current_timestamp(scene)
    ((keyid, sig),) = md.signatures.items()
    raw = bytearray(bytes.fromhex(sig.signature))
    raw[10] ^= 0x01
    md.signatures[keyid] = Signature(keyid, raw.hex())
    put(scene.meta("timestamp.json"), md.to_bytes(PRETTY))


def root_by_one_of_two_keys(scene: Scene) -> None:
    """Root v3 drops the second root key (threshold 1), signed by the owner key alone."""
    md = cast(Metadata[Root], read_md(scene.meta("2.root.json")))
    second = ssl_key(load_public_key(public_key_path(scene.keys, ROOT2))).keyid
    md.signed.version = 3
    md.signed.revoke_key(second, Root.type)
    md.signed.roles[Root.type].threshold = 1
    put(scene.meta("3.root.json"), signed_bytes(md, scene.key(tuf.OWNER_ROLE)))


def marker(scene: Scene) -> Path:
    """What the planted layout's inspection would create, were it run."""
    return scene.tmp / "the-inspection-ran"


def sublayout(release_key: RoleKey, ran: Path) -> bytes:
    """An in-toto layout signed by the release key: in-toto-verify runs its inspection as a sublayout's."""
    layout = Layout()
    layout.set_relative_expiration(days=30)
    layout.inspect = [Inspection(name="planted", run=["touch", str(ran)])]
    block = Metablock(signed=layout)
    block.create_signature(RoleSigner(release_key))
    return str(block).encode()


def layout_as_link(scene: Scene) -> None:
    targets = current_targets(scene)
    name = f"sign.{release_keyid8(scene)}.link"
    assert name in index_of(scene)["releases"][VERSION]["shared"]
    put_target(scene, targets, f"{VERSION}/{name}", sublayout(scene.key(tuf.TARGETS_KEY_ROLE), marker(scene)))
    republish(scene, targets)


def index_names(name: str) -> Callable[[Scene], None]:
    def craft(scene: Scene) -> None:
        targets = current_targets(scene)
        index = index_of(scene)
        index["releases"][VERSION]["products"]["core"].append(name)
        put_target(scene, targets, INDEX, index_bytes(index))
        republish(scene, targets)

    return craft


def huge_link_name(scene: Scene) -> str:
    return f"huge.{release_keyid8(scene)}.link"


def huge_link(scene: Scene) -> None:
    """The index lists a .link the targets say is 17 MiB (served endlessly, were it asked for)."""
    targets = current_targets(scene)
    path = f"{VERSION}/{huge_link_name(scene)}"
    info = TargetFile(HUGE, {"sha256": hashlib.sha256(b"huge").hexdigest()}, path)
    targets.signed.targets[path] = info
    index = index_of(scene)
    index["releases"][VERSION]["shared"].append(huge_link_name(scene))
    put_target(scene, targets, INDEX, index_bytes(index))
    republish(scene, targets)
    scene.server.endless(f"{scene.url}/targets/{VERSION}/{info.hashes['sha256']}.{huge_link_name(scene)}")


# --- checks after a refusal ----------------------------------------------------------------------------


def endless_abandoned(scene: Scene, client: Client) -> None:
    assert scene.server.wait_idle(), "an endless answer is still streaming: the client never hung up"
    streamed = scene.server.streamed(scene.url)
    assert streamed and all(streamed.values()), f"an endless path was never asked for: {streamed}"
    assert all(n < ENDLESS_BYTES for sent in streamed.values() for n in sent), f"read to the end: {streamed}"


def inspection_not_run(scene: Scene, client: Client) -> None:
    assert not marker(scene).exists(), "in-toto-verify ran the planted layout's inspection"


def huge_link_not_requested(scene: Scene, client: Client) -> None:
    asked = [p for p in scene.server.requested(scene.url) if p.endswith(huge_link_name(scene))]
    assert asked == [], "the client asked for the oversized .link"


# --- the table ----------------------------------------------------------------------------------------


def _py(words: str, detail: str) -> str:
    return rf"fetch: error: refused: {re.escape(words)} \({detail}"


ROLLBACK = "a metadata version is older than one already trusted: rollback"
MIX = "a metadata version is not the one its parent role names: mix-and-match"
EXPIRED = "the repository's metadata has expired: a frozen mirror, or one nobody re-signs"
UNSIGNED = "metadata lacks the signatures its role requires (a wrong key, or too few)"
SUBSTITUTED = "a file does not match its signed length and hash: substituted"
ENDLESS = "the mirror sent more data than the signed metadata allows: endless data"
OBSERVED_HASH = r"Observed hash [0-9a-f]{64} does not match expected hash [0-9a-f]{64}"
OBSERVED_LENGTH = r"Observed length \d+ does not match expected length \d+"
DOWNLOADED = r"Downloaded \d+ bytes exceeding the maximum allowed length of "


def _js(detail: str) -> str:
    return rf"tuf-fetch: refused: {detail}"


# tuf-js wraps what goes wrong with the snapshot and the targets metadata
SNAPSHOT_JS = "RuntimeError: Unable to load snapshot metadata error "
TARGETS_JS = "RuntimeError: Unable to load targets error "
EXPECTED_HASH = r"Expected hash [0-9a-f]{64} but got [0-9a-f]{64}"
EXPECTED_LENGTH = r"Expected length \d+ but got \d+"


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack: the honest history before it, the mirror's change, and each client's refusal (a regex).

    ``fetch_py`` / ``tuf_js`` None: not a case for that client. ``prime``: the
    client fetches from the honest repository first. ``plant``: metadata files
    copied from the attacker's mirror into the client's state after priming
    (what the client had fetched while they were valid: time passing).
    """

    id: str
    craft: Callable[[Scene], None]
    fetch_py: str | None
    tuf_js: str | None
    before: Callable[[Scene], None] | None = None
    prime: bool = False
    plant: tuple[str, ...] = ()
    target: str = ARCHIVE
    product: str = "core"
    check: Callable[[Scene, Client], None] | None = None


ATTACKS = [
    # rollback: only a client that saw newer metadata can tell
    Attack("rollback-timestamp", old_timestamp_replayed,
           _py(ROLLBACK, r"BadVersionNumberError: New timestamp version 1 must be >= 2\)$"),
           _js(r"BadVersionError: New timestamp version 1 is less than current version 2$"),
           before=refreshed, prime=True),
    Attack("rollback-snapshot-by-a-stolen-timestamp-key", timestamp_names_old_snapshot,
           _py(ROLLBACK, r"BadVersionNumberError: New snapshot version must be >= 2, got version 1\)$"),
           _js(r"BadVersionError: New snapshot version 1 is less than current version 2$"),
           before=refreshed, prime=True),
    Attack("rollback-targets-by-stolen-snapshot-and-timestamp-keys", snapshot_names_old_targets,
           _py(ROLLBACK, r"BadVersionNumberError: Expected targets\.json version 1, got 2\.\)$"),
           _js(rf"{SNAPSHOT_JS}BadVersionError: New version 1 of targets\.json is less than current version 2$"),
           before=targets_resigned, prime=True),
    Attack("rollback-root", old_root_as_next,
           _py(ROLLBACK, r"BadVersionNumberError: Expected root version 3 instead got version 1\)$"),
           _js(r"BadVersionError: Expected version 3, got 1$"),
           before=root_renewed, prime=True),
    # freeze
    Attack("frozen-the-clients-timestamp-served-after-it-expired", expired_timestamp,
           _py(EXPIRED, r"ExpiredMetadataError: timestamp\.json is expired\)$"),
           _js(rf"{SNAPSHOT_JS}ExpiredMetadataError: Final timestamp\.json is expired$"),
           prime=True, plant=("timestamp.json",)),
    Attack("frozen-an-expired-timestamp-to-a-new-client", expired_timestamp,
           _py(EXPIRED, r"ExpiredMetadataError: timestamp\.json is expired\)$"),
           _js(r"ExpiredMetadataError: Final timestamp\.json is expired$")),
    # mix-and-match: the parent role pins the hash (so: substituted), or, with a stolen key, the version
    Attack("mix-old-snapshot-as-the-current-one", old_snapshot_as_current,
           _py(SUBSTITUTED, rf"LengthOrHashMismatchError: {OBSERVED_HASH}\)$"),
           _js(rf"{SNAPSHOT_JS}LengthOrHashMismatchError: {EXPECTED_HASH}$"),
           before=refreshed),
    Attack("mix-old-targets-as-the-current-one", old_targets_as_current,
           _py(SUBSTITUTED, rf"LengthOrHashMismatchError: {OBSERVED_HASH}\)$"),
           _js(rf"{TARGETS_JS}LengthOrHashMismatchError: {EXPECTED_HASH}$"),
           before=targets_resigned),
    Attack("mix-old-snapshot-pinned-by-a-stolen-timestamp-key", timestamp_pins_old_snapshot_as_current,
           _py(MIX, r"BadVersionNumberError: Expected snapshot version 2, got 1\)$"),
           _js(rf"{SNAPSHOT_JS}BadVersionError: Snapshot version doesn't match timestamp$"),
           before=refreshed),
    Attack("mix-old-targets-pinned-by-stolen-snapshot-and-timestamp-keys", snapshot_pins_old_targets_as_current,
           _py(MIX, r"BadVersionNumberError: Expected targets v2, got v1\.\)$"),
           _js(rf"{TARGETS_JS}BadVersionError: Version 1 of targets does not match snapshot version 2$"),
           before=targets_resigned),
    # substituted files
    Attack("substituted-archive-same-length", archive_same_length,
           _py(SUBSTITUTED, rf"LengthOrHashMismatchError: {OBSERVED_HASH}\)$"),
           _js(rf"LengthOrHashMismatchError: {EXPECTED_HASH}$")),
    Attack("substituted-archive-shorter", archive_shorter,
           _py(SUBSTITUTED, rf"LengthOrHashMismatchError: {OBSERVED_LENGTH}\)$"),
           _js(rf"LengthOrHashMismatchError: {EXPECTED_LENGTH}$")),
    Attack("substituted-index", index_replaced,
           _py(SUBSTITUTED, rf"LengthOrHashMismatchError: {OBSERVED_LENGTH}\)$"),
           _js(rf"LengthOrHashMismatchError: {EXPECTED_LENGTH}$"),
           target=INDEX),
    # endless data
    Attack("endless-timestamp", endless_timestamp,
           _py(ENDLESS, rf"DownloadLengthMismatchError: {DOWNLOADED}16384\)$"),
           _js(r"DownloadLengthMismatchError: Max length reached$"),
           check=endless_abandoned),
    Attack("endless-archive", endless_archive,
           _py(ENDLESS, rf"DownloadLengthMismatchError: {DOWNLOADED}\d+\)$"),
           _js(r"DownloadLengthMismatchError: Max length reached$"),
           check=endless_abandoned),
    Attack("endless-next-root", endless_next_root,
           _py(ENDLESS, rf"DownloadLengthMismatchError: {DOWNLOADED}512000\)$"),
           _js(r"DownloadLengthMismatchError: Max length reached$"),
           check=endless_abandoned),
    # wrong signatures
    Attack("timestamp-by-an-unknown-key", timestamp_by_unknown_key,
           _py(UNSIGNED, r"UnsignedMetadataError: timestamp was signed by 0/1 keys\)$"),
           _js(r"UnsignedMetadataError: timestamp was signed by 0/1 keys$")),
    Attack("targets-by-the-stolen-snapshot-key-with-the-stolen-timestamp-key", targets_by_snapshot_key,
           _py(UNSIGNED, r"UnsignedMetadataError: targets was signed by 0/1 keys\)$"),
           _js(rf"{TARGETS_JS}UnsignedMetadataError: targets was signed by 0/1 keys$")),
    Attack("timestamp-signature-byte-flipped", signature_byte_flipped,
           _py(UNSIGNED, r"UnsignedMetadataError: timestamp was signed by 0/1 keys\)$"),
           _js(r"UnsignedMetadataError: timestamp was signed by 0/1 keys$")),
    Attack("root-by-one-of-two-root-keys-a-stolen-owner-key", root_by_one_of_two_keys,
           _py(UNSIGNED, r"UnsignedMetadataError: root was signed by 1/2 keys\)$"),
           _js(r"UnsignedMetadataError: root was signed by 1/2 keys$"),
           before=root_threshold_two, prime=True),
    # fetch.py's own checks, behind the TUF client (a stolen release key, and the online keys to publish)
    Attack("layout-as-a-link-by-stolen-release-and-online-keys", layout_as_link,
           r"fetch: error: refused: sign\.[0-9a-f]{8}\.link is not an in-toto link$", None,
           check=inspection_not_run),
    *(
        Attack(f"index-names-{label}-by-stolen-release-and-online-keys", index_names(name),
               rf"fetch: error: refused: the releases index names a file of {re.escape(VERSION)} that is not "
               r"a plain, unique file name$", None)
        for label, name in (("dotdot-escape", "../escape"), ("a-hidden-file", ".hidden"),
                            ("a-path", "sub/ransomeye-core-1.0.0.tar.gz"))
    ),
    Attack("index-lists-a-17MiB-link-by-stolen-release-and-online-keys", huge_link,
           rf"fetch: error: refused: {re.escape(VERSION)}/huge\.[0-9a-f]{{8}}\.link is {HUGE} bytes by the signed "
           rf"metadata, over {16 << 20}$", None,
           check=huge_link_not_requested),
]  # fmt: skip


def _cases() -> Iterator[Any]:
    for client in CLIENTS:
        for attack in ATTACKS:
            if (attack.fetch_py if client == "fetch.py" else attack.tuf_js) is not None:
                yield pytest.param(client, attack, id=f"{client}-{attack.id}")


def _left(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("client_name", "attack"), list(_cases()))
def test_the_attackers_mirror_is_refused(
    honest: Honest, server: MirrorServer, tmp_path: Path, client_name: str, attack: Attack
) -> None:
    scene = make_scene(honest, server, tmp_path)
    client = CLIENTS[client_name](tmp_path / "client", scene.root)
    if attack.before:
        attack.before(scene)
    if attack.prime:
        client.prime(scene.url)
        assert client.versions() == published(scene), "the client has not seen the newest metadata"
    attack.craft(scene)
    for name in attack.plant:
        put(client.state / name, scene.meta(name).read_bytes())
    trusted = client.versions()

    proc = client.fetch(scene.url, attack)

    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    expected = attack.fetch_py if isinstance(client, FetchPy) else attack.tuf_js
    assert expected is not None
    line = client.refusal(proc)
    assert re.match(expected, line), f"not the refusal of {attack.id}: {line}"
    assert proc.stdout == ""
    assert _left(client.downloads) == [], "something was left where the download goes"
    assert _left(client.tmpdir) == [] and _left(client.home) == [], "the client left files behind"
    assert not list(tmp_path.rglob(".ransomeye-fetch.*"))
    after = client.versions()
    assert set(trusted) <= set(after), "the client dropped trusted metadata"
    went_down = {name: (v, after[name]) for name, v in trusted.items() if after[name] < v}
    assert went_down == {}, "a downgrade was persisted"
    if attack.check:
        attack.check(scene, client)


def test_the_planted_layout_is_what_stock_in_toto_verify_would_run(released: Repo, tmp_path: Path) -> None:
    """The control of the layout-as-a-link case: in-toto-verify alone runs the inspection of such a file."""
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    release_key = load_role_key(released.keys, tuf.TARGETS_KEY_ROLE)
    ran = tmp_path / "the-inspection-ran"
    (folder / f"sign.{ssl_key(release_key.public).keyid[:8]}.link").write_bytes(sublayout(release_key, ran))
    subprocess.run(
        [VERIFY, "--layout", "root.layout", "--verification-keys", str(released.keys / "owner.pub")],
        cwd=folder, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    assert ran.exists(), "in-toto-verify did not run the planted layout's inspection: the case proves nothing"


# --- honest mirrors -------------------------------------------------------------------------------------


def expected_files(honest: Honest, product: str) -> dict[str, bytes]:
    """The files of ``product`` (its own and the shared ones) as the index lists them, with their bytes."""
    repo = tuf.load(honest.repository)
    index = repo.index()
    assert sorted(index["releases"][VERSION]["products"]) == sorted(PRODUCTS)
    files = {}
    entry = index["releases"][VERSION]
    for name in [*entry["products"][product], *entry["shared"]]:
        info = repo.targets.signed.targets[f"{VERSION}/{name}"]
        files[name] = (honest.repository / "targets" / VERSION / f"{info.hashes['sha256']}.{name}").read_bytes()
    return files


def check_fetched(client: FetchPy, proc: subprocess.CompletedProcess[str], honest: Honest, product: str) -> None:
    assert proc.returncode == 0, proc.stderr
    assert f"fetch: ransomeye {product} {VERSION}: " in proc.stdout
    files = expected_files(honest, product)
    # in-toto-verify's inspection records itself beside the files it verified
    assert sorted(p.name for p in client.out.iterdir()) == sorted([*files, "verify-release.link"])
    assert {name: (client.out / name).read_bytes() for name in files} == files
    assert [p.name for p in client.downloads.iterdir()] == ["out"], "only the folder, no temporary one"


@pytest.mark.parametrize("product", PRODUCTS)
def test_fetch_py_gets_each_product_from_an_honest_mirror(
    honest: Honest, server: MirrorServer, tmp_path: Path, product: str
) -> None:
    client = FetchPy(tmp_path, honest.keys / tuf.TRUSTED_ROOT_NAME)
    url = server.serve(honest.repository)
    proc = client.run(client.command(url, "--product", product, "--out", str(client.out)))
    check_fetched(client, proc, honest, product)


def test_fetch_py_gets_a_product_from_a_file_mirror(honest: Honest, tmp_path: Path) -> None:
    client = FetchPy(tmp_path, honest.keys / tuf.TRUSTED_ROOT_NAME)
    proc = client.run(client.command(honest.repository.as_uri(), "--product", "dpi", "--out", str(client.out)))
    check_fetched(client, proc, honest, "dpi")


def test_tuf_js_gets_the_index_and_an_archive_from_an_honest_mirror(
    honest: Honest, server: MirrorServer, tmp_path: Path
) -> None:
    client = TufJs(tmp_path, honest.keys / tuf.TRUSTED_ROOT_NAME)
    url = server.serve(honest.repository)
    targets = tuf.load(honest.repository).targets.signed.targets
    for target in (INDEX, ARCHIVE):
        out = client.downloads / target.replace("/", "_")
        proc = client.run(client.command(url, target, out))
        assert proc.returncode == 0, proc.stderr
        folder, _, name = target.rpartition("/")
        stored = honest.repository / "targets" / folder / f"{targets[target].hashes['sha256']}.{name}"
        assert out.read_bytes() == stored.read_bytes()
    assert sorted(p.name for p in client.downloads.iterdir()) == sorted([INDEX, ARCHIVE.replace("/", "_")])


def test_both_clients_walk_from_root_v1_through_key_and_root_rotations(
    honest: Honest, server: MirrorServer, tmp_path: Path
) -> None:
    scene = make_scene(honest, server, tmp_path)
    py = FetchPy(tmp_path / "fetch.py", scene.root)
    js = TufJs(tmp_path / "tuf-js", scene.root)
    for client in (py, js):
        client.prime(scene.url)
        assert client.versions()["root.json"] == 1
    maintain(scene, "rotate-key", "timestamp")
    maintain(scene, "rotate-root")
    root_threshold_two(scene)
    assert tuf.load(scene.repository).root.signed.version == 4

    # Two root keys: the layout key is the one of them that signed the layout (the owner's).
    proc = py.run(py.command(scene.url, "--product", "dpi", "--out", str(py.out)))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in py.out.iterdir()} >= set(expected_files(honest, "dpi"))
    proc = js.run(js.command(scene.url, ARCHIVE, js.out))
    assert proc.returncode == 0, proc.stderr
    assert js.out.read_bytes() == target_file(scene, ARCHIVE).read_bytes()
    for client in (py, js):
        assert client.versions()["root.json"] == 4, f"{client.name} did not walk up to root v4"
        assert client.versions()["timestamp.json"] == 4
