"""The TUF repository a release lands in (release/repository.py, release/builder/repository.py).

Proven here: each change advances the metadata versions and keeps earlier
releases listed; nothing a change wrote is reachable until its timestamp is
replaced (a crash leaves the previous repository whole, and the next change
overwrites the leftovers); a repository edited on disk is refused, never
re-signed; root rotations need the old root keys' threshold and the new's; the
maintenance commands work as an operator runs them. The customers' clients
against an attacker's mirror are tests/test_tuf_attacks.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata

from release import repository as tuf
from release.errors import BadInputError, SigningError
from release.keys import DEV_MARKER, generate_key, load_public_key, public_key_path
from release.signers import RoleKey, load_role_key, ssl_key
from release.signing import ensure_dev_keys
from tests.conftest import Repo, release_env

ROOT = Path(__file__).resolve().parent.parent
NOW = tuf.utc_now()
PRODUCTS = {
    "core": ["ransomeye-core-{v}.tar.gz", "ransomeye-core-{v}.tar.gz.minisig"],
    "dpi": ["ransomeye-dpi-{v}.tar.gz"],
}
SHARED = ["SHA256SUMS", "root.layout", "build.1234abcd.link"]


def role_key(role: str) -> RoleKey:
    return RoleKey.from_private(role, Ed25519PrivateKey.generate())


def make_keys() -> tuf.Keys:
    return tuf.Keys(
        root=[role_key("owner")], targets=role_key("release"), snapshot=role_key("snapshot"),
        timestamp=role_key("timestamp"),
    )  # fmt: skip


def fake_release(folder: Path, version: str, salt: str = "") -> dict[str, list[str]]:
    """A release folder of small files named as a release's are; returns its products."""
    folder.mkdir(parents=True)
    products = {p: [n.format(v=version) for n in names] for p, names in PRODUCTS.items()}
    for name in [n for names in products.values() for n in names] + SHARED:
        (folder / name).write_text(f"{name} {version} {salt}\n")
    return products


def new_repository(path: Path, keys: tuf.Keys) -> tuf.Repository:
    owner = keys.root[0]
    assert keys.targets and keys.snapshot and keys.timestamp
    root = tuf.new_root([owner.public], 1, keys.targets.public, keys.snapshot.public, keys.timestamp.public, NOW)
    return tuf.initial(path, tuf.sign_root(root, None, keys.root), NOW)


def released_repository(tmp_path: Path, keys: tuf.Keys, versions: tuple[str, ...] = ("1.0.0",)) -> Path:
    path = tmp_path / "repository"
    repo = new_repository(path, keys)
    for v in versions:
        products = fake_release(tmp_path / f"out-{v}", v)
        tuf.add_release(repo, tmp_path / f"out-{v}", v, products, keys, NOW).commit()
        repo = tuf.load(path, keys.root[0].public)
    return path


def rotate(path: Path, keys: tuf.Keys, role: str, new: RoleKey) -> tuf.Staged:
    """The repository at ``path`` rotated to the ``new`` key of ``role`` (staged; the caller commits, or not)."""
    repo = tuf.load(path)
    rotation = tuf.Keys(root=keys.root, targets=keys.targets, snapshot=keys.snapshot, timestamp=keys.timestamp)
    setattr(rotation, role, new)
    return tuf.rotate_root(repo, tuf.replace_key(repo.root.signed, role, new.public), rotation, NOW)


def versions(path: Path) -> dict[str, int]:
    repo = tuf.load(path)
    return {md.signed.type: md.signed.version for md in (repo.root, repo.targets, repo.snapshot, repo.timestamp)}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- releases land, versions advance ------------------------------------------------


def test_each_release_advances_every_version_and_keeps_the_earlier_ones(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys, ("1.0.0", "1.10.0", "1.9.2"))
    assert versions(path) == {"root": 1, "targets": 3, "snapshot": 3, "timestamp": 3}
    repo = tuf.load(path, keys.root[0].public)
    index = repo.index()
    assert list(index["releases"]) == ["1.0.0", "1.9.2", "1.10.0"], "oldest first, as versions order"
    assert index["latest"] == "1.10.0", "the highest version, not the last released"
    assert index["releases"]["1.9.2"]["products"]["dpi"] == ["ransomeye-dpi-1.9.2.tar.gz"]
    assert index["releases"]["1.9.2"]["shared"] == sorted(SHARED)
    for v in ("1.0.0", "1.9.2", "1.10.0"):
        for name in [f"ransomeye-core-{v}.tar.gz", *SHARED]:
            info = repo.targets.signed.targets[f"{v}/{name}"]
            stored = path / "targets" / v / f"{info.hashes['sha256']}.{name}"
            assert stored.read_text() == f"{name} {v} \n"
    meta = sorted(p.name for p in (path / "metadata").iterdir())
    assert meta == ["1.root.json", "1.snapshot.json", "1.targets.json", "2.snapshot.json", "2.targets.json",
                    "3.snapshot.json", "3.targets.json", "timestamp.json"]  # fmt: skip


def test_a_rerelease_of_a_version_replaces_its_files(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    repo = tuf.load(path, keys.root[0].public)
    fake_release(tmp_path / "again", "1.0.0", salt="rebuilt")
    (tmp_path / "again" / "SHA256SUMS").unlink()
    products = {p: [n.format(v="1.0.0") for n in names] for p, names in PRODUCTS.items()}
    tuf.add_release(repo, tmp_path / "again", "1.0.0", products, keys, NOW).commit()
    repo = tuf.load(path, keys.root[0].public)
    assert "1.0.0/SHA256SUMS" not in repo.targets.signed.targets, "a file the new release lacks is no target"
    assert repo.index()["releases"]["1.0.0"]["shared"] == sorted(set(SHARED) - {"SHA256SUMS"})
    assert versions(path)["targets"] == 2


def test_the_first_release_of_a_development_checkout_creates_the_repository(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    release = load_role_key(keys_dir, "release")
    repo, keys = tuf.prepare(tmp_path / "repository", keys_dir, release, NOW)
    assert not (tmp_path / "repository").exists(), "nothing is written before the release verified"
    products = fake_release(tmp_path / "out", "1.0.0")
    tuf.add_release(repo, tmp_path / "out", "1.0.0", products, keys, NOW).commit()
    assert versions(tmp_path / "repository") == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    root = tuf.load(tmp_path / "repository").root.signed
    assert root.consistent_snapshot
    assert root.roles["timestamp"].keyids == [ssl_key(keys.timestamp.public).keyid]  # type: ignore[union-attr]
    published = tuf.load(tmp_path / "repository")
    expiry = {md.signed.type: md.signed.expires - NOW for md in (published.root, published.timestamp)}
    assert expiry == {"root": timedelta(days=365), "timestamp": timedelta(days=1)}


def test_a_production_checkout_never_creates_one(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    (keys_dir / DEV_MARKER).unlink()
    with pytest.raises(BadInputError, match=r"no TUF repository to publish into") as e:
        tuf.prepare(tmp_path / "repository", keys_dir, load_role_key(keys_dir, "release"), NOW)
    assert "repository.py init" in (e.value.hint or "")
    assert not (tmp_path / "repository").exists()


def test_keys_the_root_does_not_name_are_refused_before_any_work(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    release = load_role_key(keys_dir, "release")
    repo, keys = tuf.prepare(tmp_path / "repository", keys_dir, release, NOW)
    tuf.add_release(repo, tmp_path / "o", "1.0.0", fake_release(tmp_path / "o", "1.0.0"), keys, NOW).commit()
    for p in keys_dir.glob("timestamp.*"):
        p.unlink()
    generate_key(keys_dir, "timestamp")
    with pytest.raises(SigningError, match=r"the timestamp key \(keyfile:timestamp.pem\) is not the timestamp key"):
        tuf.prepare(tmp_path / "repository", keys_dir, release, NOW)
    with pytest.raises(BadInputError, match=r"expired on"):
        tuf.prepare(tmp_path / "repository", keys_dir, release, NOW + timedelta(days=366))


# --- crash safety ---------------------------------------------------------------------


def test_nothing_is_reachable_before_the_commit_and_the_next_change_overwrites_it(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    before = tree(path)
    repo = tuf.load(path, keys.root[0].public)
    tuf.add_release(repo, tmp_path / "o2", "2.0.0", fake_release(tmp_path / "o2", "2.0.0"), keys, NOW)
    staged_files = {"metadata/2.targets.json", "metadata/2.snapshot.json"}
    assert staged_files <= set(tree(path)), "the new versions are on disk"
    assert (path / "metadata" / "timestamp.json").read_bytes() == before["metadata/timestamp.json"]
    # A crash here: the repository is the previous one, whole, as a client sees it.
    assert versions(path) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert all(tree(path)[name] == data for name, data in before.items())
    assert list(tuf.load(path).index()["releases"]) == ["1.0.0"]
    # The next run stages the same versions again, over the leftovers, and commits.
    repo = tuf.load(path, keys.root[0].public)
    tuf.add_release(repo, tmp_path / "o3", "2.1.0", fake_release(tmp_path / "o3", "2.1.0"), keys, NOW).commit()
    assert versions(path) == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}
    assert list(tuf.load(path).index()["releases"]) == ["1.0.0", "2.1.0"]


def test_an_interrupted_root_rotation_is_repaired_by_the_next_refresh(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    new_timestamp = role_key("timestamp")
    staged = rotate(path, keys, "timestamp", new_timestamp)
    for file, data in staged.roots:  # the crash lands between the new root and the timestamp
        file.write_bytes(data)
    with pytest.raises(BadInputError, match=r"timestamp.json is signed under root v1, not the newest root v2") as e:
        tuf.load(path)
    assert "refresh --after-interrupted-rotation" in (e.value.hint or ""), "only the operator says it was a crash"
    repo = tuf.load(path, interrupted_rotation=True)
    assert repo.stale == {"timestamp"}, "the timestamp was signed under root v1's key"
    tuf.refresh(repo, tuf.Keys(snapshot=keys.snapshot, timestamp=new_timestamp), NOW).commit()
    repo = tuf.load(path)
    assert repo.stale == set()
    assert versions(path) == {"root": 2, "targets": 1, "snapshot": 2, "timestamp": 2}, "the lost versions, re-made"


# --- a repository edited on disk is refused ----------------------------------------------


def _resign(file: Path, key: RoleKey) -> None:
    md = Metadata.from_file(str(file))
    md.signatures.clear()
    md.sign(tuf.RoleSigner(key))
    file.write_bytes(md.to_bytes())


TAMPERED = [
    ("targets-edited", lambda p, k: _edit_json(p / "metadata" / "1.targets.json", ["signed", "version"], 1),
     r"1.targets.json does not match what its parent role records"),
    ("timestamp-signed-by-another-key", lambda p, k: _resign(p / "metadata" / "timestamp.json", role_key("timestamp")),
     r"timestamp.json: .*signed by 0/1"),
    ("timestamp-signed-by-the-snapshot-key", lambda p, k: _resign(p / "metadata" / "timestamp.json", k.snapshot),
     r"timestamp.json: .*signed by 0/1"),
    ("timestamp-symlink", lambda p, k: _symlink(p / "metadata" / "timestamp.json", Path("/dev/zero")),
     r"timestamp.json: (Too many levels|.*symbolic)"),
    ("timestamp-huge", lambda p, k: (p / "metadata" / "timestamp.json").write_bytes(b" " * (5 << 20)),
     r"timestamp.json is larger than"),
    ("timestamp-not-json", lambda p, k: (p / "metadata" / "timestamp.json").write_bytes(b"{"),
     r"timestamp.json is not timestamp metadata"),
    ("root-missing", lambda p, k: (p / "metadata" / "1.root.json").unlink(), r"1.root.json is missing"),
    ("root-of-another-owner", lambda p, k: _replace_root(p), r"keys/owner.pub is not one of the root keys"),
    ("root-version-lies", lambda p, k: shutil.copy(p / "metadata" / "1.root.json", p / "metadata" / "2.root.json"),
     r"2.root.json holds version 1, not 2"),
    ("snapshot-swapped", lambda p, k: (p / "metadata" / "1.snapshot.json").write_bytes(
        (p / "metadata" / "1.targets.json").read_bytes()), r"1.snapshot.json does not match"),
    ("index-edited", lambda p, k: _edit_index(p), r"releases.json does not match the targets metadata"),
]  # fmt: skip


def _edit_json(file: Path, keys: list[str], value: object) -> None:
    d = json.loads(file.read_bytes())
    node = d
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    file.write_text(json.dumps(d))


def _symlink(file: Path, to: Path) -> None:
    file.unlink()
    file.symlink_to(to)


def _replace_root(path: Path) -> None:
    other = make_keys()
    new_repository(path.parent / "other", other)
    staged = tuf.stage(new_repository(path.parent / "other", other), other, NOW, targets_changed=False)
    (path / "metadata" / "1.root.json").write_bytes(staged.roots[0][1])


def _edit_index(path: Path) -> None:
    index = next((path / "targets").glob("*.releases.json"))
    index.write_bytes(index.read_bytes().replace(b"1.0.0", b"6.6.6"))


@pytest.mark.parametrize("name, tamper, message", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_repository_edited_on_disk_is_refused(tmp_path: Path, name: str, tamper: object, message: str) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    tamper(path, keys)  # type: ignore[operator]
    before = tree(path) if not (path / "metadata" / "timestamp.json").is_symlink() else None
    with pytest.raises(BadInputError, match=r"not the repository this project published") as e:
        repo = tuf.load(path, keys.root[0].public)
        repo.index()
    assert e.match(message)
    if before is not None:
        assert tree(path) == before, "a refused repository is left as it was"


# --- rotations ---------------------------------------------------------------------------


def test_a_new_root_needs_the_old_threshold_and_the_new(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    repo = tuf.load(path)
    second = role_key("root-2")
    two = tuf.new_root_keys(repo.root.signed, [keys.root[0].public, second.public], 2)
    with pytest.raises(SigningError, match=r"root v2 needs 2 signature\(s\) of the new root keys and has 1"):
        tuf.rotate_root(repo, two, tuf.Keys(root=keys.root, snapshot=keys.snapshot, timestamp=keys.timestamp), NOW)
    repo = tuf.load(path)
    signers = [keys.root[0], second]
    rotation = tuf.Keys(root=signers, snapshot=keys.snapshot, timestamp=keys.timestamp)
    tuf.rotate_root(
        repo, tuf.new_root_keys(repo.root.signed, [keys.root[0].public, second.public], 2), rotation, NOW
    ).commit()
    repo = tuf.load(path)
    assert repo.root.signed.roles["root"].threshold == 2
    only_second = tuf.new_root_keys(repo.root.signed, [second.public], 1)
    with pytest.raises(SigningError, match=r"root v3 needs 2 signature\(s\) of the previous root keys and has 1"):
        tuf.rotate_root(
            repo, only_second, tuf.Keys(root=[second], snapshot=keys.snapshot, timestamp=keys.timestamp), NOW
        )
    with pytest.raises(BadInputError, match=r"a root threshold of 3 with 2 root key"):
        tuf.new_root_keys(repo.root.signed, [keys.root[0].public, second.public], 3)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=8))
def test_versions_order_as_numbers(parts: list[tuple[int, int, int]]) -> None:
    names = [".".join(map(str, p)) for p in parts]
    assert sorted(names, key=tuf.version_key) == [".".join(map(str, p)) for p in sorted(parts)]
    for name in names:
        assert tuf.version_key(f"{name}-rc1") < tuf.version_key(name) < tuf.version_key(f"{name}+5")


def test_versions_of_every_kind_compare() -> None:
    ordered = ["1.0.0-rc1", "1.0.0-rc9", "1.0.0-rc10", "1.0.0", "1.0.0+5", "1.0.0+build.5-x", "1.9.2", "1.10.0",
               "2.0-rc1", "2.0.1"]  # fmt: skip
    assert sorted(reversed(ordered), key=tuf.version_key) == ordered
    assert not tuf.is_prerelease("1.0.0+build.5-x")
    assert sorted(["1.0.0-rc.1", "1.0.0-rc1"], key=tuf.version_key) == sorted(["1.0.0-rc1", "1.0.0-rc.1"],
                                                                             key=tuf.version_key)  # fmt: skip
    for bad in ("01.2", "1.02.0", "../1", ""):
        with pytest.raises(BadInputError, match="not a release version"):
            tuf.check_version(bad)


def test_the_latest_is_the_highest_release_not_a_pre_release(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys, ("1.0.0", "1.1.0-rc1"))
    assert tuf.load(path).index()["latest"] == "1.0.0"
    only_rc = released_repository(tmp_path / "rc", keys, ("2.0.0-rc1",))
    assert tuf.load(only_rc).index()["latest"] == "2.0.0-rc1", "a pre-release when there is nothing else"


# --- the maintenance commands, as an operator runs them -------------------------------------


def run_cli(
    keys_dir: Path, repository: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "release" / "builder" / "repository.py"), "--keys-dir", str(keys_dir),
         "--repository", str(repository), *args],
        env=release_env(env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def dev_repository(tmp_path: Path) -> tuple[Path, Path]:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    repo, keys = tuf.prepare(tmp_path / "release" / "repository", keys_dir, load_role_key(keys_dir, "release"), NOW)
    tuf.add_release(repo, tmp_path / "o", "1.0.0", fake_release(tmp_path / "o", "1.0.0"), keys, NOW).commit()
    return keys_dir, tmp_path / "release" / "repository"


def test_the_daily_refresh_and_the_rotations_from_the_command_line(dev_repository: tuple[Path, Path]) -> None:
    keys_dir, path = dev_repository
    proc = run_cli(keys_dir, path, "refresh")
    assert proc.returncode == 0, proc.stderr
    assert "snapshot v2, timestamp v2" in proc.stdout
    old = public_key_path(keys_dir, "timestamp").read_bytes()
    proc = run_cli(keys_dir, path, "rotate-key", "timestamp")
    assert proc.returncode == 0, proc.stderr
    assert public_key_path(keys_dir, "timestamp").read_bytes() != old
    assert (keys_dir / "timestamp.retired-1.pub").read_bytes() == old, "the old key is kept, renamed"
    generate_key(keys_dir, "root-2")
    proc = run_cli(keys_dir, path, "rotate-root", "--root-key", "owner", "--root-key", "root-2", "--threshold", "2")
    assert proc.returncode == 0, proc.stderr
    assert "root v3: 2 root key(s), threshold 2" in proc.stdout
    proc = run_cli(keys_dir, path, "status")
    assert proc.returncode == 0, proc.stderr
    assert "root: threshold 2 of 2 (owner, root-2)" in proc.stdout
    assert "releases: 1.0.0 (latest: 1.0.0)" in proc.stdout
    assert versions(path) == {"root": 3, "targets": 1, "snapshot": 4, "timestamp": 4}


@pytest.mark.parametrize(
    "args, message",
    [
        (["rotate-root", "--root-key", "release"], r"keys/owner.pub is not among the new root keys"),
        (["rotate-root", "--threshold", "2"], r"a root threshold of 2 with 1 root key"),
        (["rotate-root", "--root-key", "nobody"], r"nobody.pub"),
        (["init"], r"a repository exists already"),
        (["rotate-key", "timestamp", "--public", "/nonexistent.pub"], r"/nonexistent.pub"),
    ],
)
def test_maintenance_mistakes_get_one_message_and_change_nothing(
    dev_repository: tuple[Path, Path], args: list[str], message: str
) -> None:
    keys_dir, path = dev_repository
    before, keys_before = tree(path), tree(keys_dir)
    proc = run_cli(keys_dir, path, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("repository: error:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert re.search(message, proc.stderr), proc.stderr
    assert tree(path) == before
    assert tree(keys_dir) == keys_before


def test_refresh_without_a_repository_names_the_fix(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    proc = run_cli(keys_dir, tmp_path / "release" / "repository", "refresh")
    assert proc.returncode == 2
    assert "no TUF repository" in proc.stderr and "repository.py init" in proc.stderr


def test_the_owner_creates_a_production_repository_offline(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    generate_key(keys_dir, "root-2")
    path = tmp_path / "release" / "repository"
    proc = run_cli(keys_dir, path, "init", "--root-key", "owner", "--root-key", "root-2", "--threshold", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (path / "metadata").iterdir()) == ["1.root.json"]
    repo, keys = tuf.prepare(path, keys_dir, load_role_key(keys_dir, "release"), NOW)
    tuf.add_release(repo, tmp_path / "o", "1.0.0", fake_release(tmp_path / "o", "1.0.0"), keys, NOW).commit()
    assert versions(path) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert tuf.load(path).root.signed.roles["root"].threshold == 2


# --- the pipeline -------------------------------------------------------------------------


def test_two_consecutive_releases_advance_the_repository(released: Repo, tmp_path: Path) -> None:
    """``make release`` twice: the second run's repository has every version advanced, the same archives."""
    copy = Repo(tmp_path / "ransomeye")
    shutil.copytree(released.root, copy.root, symlinks=True)
    path = copy.root / "release" / "repository"
    first = tuf.load(path, load_public_key(copy.keys / "owner.pub"))
    v = versions(path)  # (other tests release the session's release again: its versions are what they are)
    proc = copy.build()
    assert proc.returncode == 0, proc.stderr
    after = {role: n + (role != "root") for role, n in v.items()}
    advanced = ", ".join(f"{role} v{n}" for role, n in after.items())
    assert f"TUF repository release/repository/: {advanced}" in proc.stdout
    assert versions(path) == after
    second = tuf.load(path, load_public_key(copy.keys / "owner.pub"))
    archives = [t for t in second.targets.signed.targets if t.endswith((".tar.gz", ".zip"))]
    assert len(archives) == 4
    for t in archives:
        assert second.targets.signed.targets[t] == first.targets.signed.targets[t], f"{t}: rebuilt bit for bit"
    artifacts = sorted(p.name for p in copy.artifacts.iterdir() if p.name != ".gitkeep")
    assert (
        sorted(t.removeprefix("1.0.0/") for t in second.targets.signed.targets if t.startswith("1.0.0/")) == artifacts
    )
    index = second.index()
    assert index["releases"]["1.0.0"]["products"]["core"] == sorted(
        n for n in artifacts if n.startswith("ransomeye-core-1.0.0.")
    )
    assert set(index["releases"]["1.0.0"]["products"]) == {"core", "agent-linux", "agent-windows", "dpi"}


def test_a_refused_repository_stops_the_release_before_any_work(released: Repo, tmp_path: Path) -> None:
    copy = Repo(tmp_path / "ransomeye")
    shutil.copytree(released.root, copy.root, symlinks=True)
    ts = copy.root / "release" / "repository" / "metadata" / "timestamp.json"
    edited = json.loads(ts.read_bytes())
    edited["signed"]["version"] += 5
    ts.write_text(json.dumps(edited))
    before = copy.artifact_state()
    proc = copy.build()
    assert proc.returncode == 2, proc.stderr
    assert "not the repository this project published" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert copy.artifact_state() == before
    assert not any((copy.root / "release" / ".staging").glob("*/out/*.tar.gz")), "refused before any build"


def test_a_release_assembled_elsewhere_is_audited_then_added(released: Repo, tmp_path: Path) -> None:
    """``repository.py add``: what the CI files' last job assembled lands as ``make release`` lands one."""
    keys_dir = tmp_path / "keys"
    shutil.copytree(released.keys, keys_dir)
    (keys_dir / "root.json").unlink()
    folder = tmp_path / "out"
    shutil.copytree(released.artifacts, folder)
    tampered = tmp_path / "tampered"
    shutil.copytree(released.artifacts, tampered)
    sums = tampered / "SHA256SUMS"
    sums.write_bytes(sums.read_bytes().replace(b"  ransomeye-core", b"  ransomeye-dpi", 1))
    path = tmp_path / "release" / "repository"
    proc = run_cli(keys_dir, path, "add", str(tampered))
    assert proc.returncode == 1, proc.stderr
    assert "does not verify" in proc.stderr
    assert not path.exists(), "a refused release creates nothing"
    proc = run_cli(keys_dir, path, "add", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert versions(path) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert (keys_dir / "root.json").read_bytes() == (path / "metadata" / "1.root.json").read_bytes()
    index = tuf.load(path).index()
    assert set(index["releases"]["1.0.0"]["products"]) == {"core", "agent-linux", "agent-windows", "dpi"}


# --- what the adversarial review found ----------------------------------------------------


def test_replacing_one_root_key_under_threshold_two_keeps_the_chain_valid(tmp_path: Path) -> None:
    """The old root's keys are not changed by building the new one (python-tuf's from_dict shares lists)."""
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    owner, second, third = keys.root[0], role_key("root-2"), role_key("root-3")
    online = {"snapshot": keys.snapshot, "timestamp": keys.timestamp}
    repo = tuf.load(path)
    before = list(repo.root.signed.roles["root"].keyids)
    two = tuf.new_root_keys(repo.root.signed, [owner.public, second.public], 2)
    assert repo.root.signed.roles["root"].keyids == before, "the old root is left as it was"
    tuf.rotate_root(repo, two, tuf.Keys(root=[owner, second], **online), NOW).commit()
    repo = tuf.load(path)
    swapped = tuf.new_root_keys(repo.root.signed, [owner.public, third.public], 2)
    with pytest.raises(SigningError, match=r"root v3 needs 2 signature\(s\) of the previous root keys and has 1"):
        tuf.rotate_root(repo, swapped, tuf.Keys(root=[owner, third], **online), NOW)
    repo = tuf.load(path)
    swapped = tuf.new_root_keys(repo.root.signed, [owner.public, third.public], 2)
    tuf.rotate_root(repo, swapped, tuf.Keys(root=[owner, second, third], **online), NOW).commit()
    assert versions(path)["root"] == 3, "the chain verifies: v3 signed by two of v2's keys and two of its own"


def test_a_new_targets_key_re_signs_the_targets_at_once(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    rotate(path, keys, "targets", role_key("release")).commit()
    assert versions(path) == {"root": 2, "targets": 2, "snapshot": 2, "timestamp": 2}
    assert tuf.load(path).stale == set()


def test_an_edit_signed_with_retired_keys_is_never_re_signed(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    rotate(path, keys, "timestamp", role_key("timestamp")).commit()
    # Whoever kept the retired timestamp key signs a timestamp with it, over the published one.
    forged = tuf.load(path).timestamp
    forged.signed.version += 5
    forged.signatures.clear()
    forged.sign(tuf.RoleSigner(keys.timestamp))  # type: ignore[arg-type]
    (path / "metadata" / "timestamp.json").write_bytes(forged.to_bytes())
    with pytest.raises(BadInputError, match=r"timestamp.json is signed under root v1, not the newest root v2"):
        tuf.load(path, keys.root[0].public)


def test_a_timestamp_put_back_to_an_older_one_is_refused(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    old = (path / "metadata" / "timestamp.json").read_bytes()
    for _ in range(2):
        tuf.refresh(tuf.load(path), keys, NOW).commit()
    (path / "metadata" / "timestamp.json").write_bytes(old)
    with pytest.raises(BadInputError, match=r"3.snapshot.json is newer than the published snapshot v1"):
        tuf.load(path)


def test_a_target_file_missing_or_cut_short_is_refused(tmp_path: Path) -> None:
    keys = make_keys()
    path = released_repository(tmp_path, keys)
    archive = next((path / "targets" / "1.0.0").glob("*.ransomeye-core-1.0.0.tar.gz"))
    archive.write_bytes(archive.read_bytes()[:-1])
    with pytest.raises(BadInputError, match=r"is not the \d+-byte file its target names"):
        tuf.load(path)
    archive.unlink()
    with pytest.raises(BadInputError, match=r"the target 1.0.0/ransomeye-core-1.0.0.tar.gz has no file"):
        tuf.load(path)


@pytest.mark.parametrize(
    "products, message",
    [
        ({"core": ["ransomeye-dpi-1.0.0.tar.gz"]}, r"no archive of the product core"),
        ({"core": ["ransomeye-core-1.0.0.tar.gz", "ransomeye-dpi-1.0.0.tar.gz"]}, r"not files of the product core"),
        ({"core": ["ransomeye-core-1.0.0.tar.gz"]}, r"ransomeye-core-1.0.0.tar.gz.minisig: a product's file listed"),
    ],
)
def test_a_release_whose_products_are_not_their_own_is_refused(
    tmp_path: Path, products: dict[str, list[str]], message: str
) -> None:
    keys = make_keys()
    repo = new_repository(tmp_path / "repository", keys)
    fake_release(tmp_path / "out", "1.0.0")
    with pytest.raises(BadInputError, match=message):
        tuf.add_release(repo, tmp_path / "out", "1.0.0", products, keys, NOW)
    assert not (tmp_path / "repository" / "metadata").exists()


def test_the_refresh_renews_targets_that_expire_within_a_month(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ensure_dev_keys(keys_dir)
    path = tmp_path / "release" / "repository"
    then = NOW - timedelta(days=340)
    repo, keys = tuf.prepare(path, keys_dir, load_role_key(keys_dir, "release"), then)
    tuf.add_release(repo, tmp_path / "o", "1.0.0", fake_release(tmp_path / "o", "1.0.0"), keys, then).commit()
    proc = run_cli(keys_dir, path, "refresh")
    assert proc.returncode == 0, proc.stderr
    assert "warning: root v1 expires on" in proc.stderr
    repo = tuf.load(path)
    assert repo.targets.signed.version == 2 and repo.targets.signed.expires - NOW > timedelta(days=364)
    for p in keys_dir.glob("release.pem"):
        p.unlink()
    tuf.refresh(repo, tuf.Keys(targets=keys.targets, snapshot=keys.snapshot, timestamp=keys.timestamp), then,
                renew_targets=True).commit()  # fmt: skip
    proc = run_cli(keys_dir, path, "refresh")
    assert proc.returncode == 7, proc.stderr
    assert "the release key that renews it is not here" in proc.stderr


def test_a_failed_rotation_leaves_the_keys_as_they_were(dev_repository: tuple[Path, Path]) -> None:
    keys_dir, path = dev_repository
    before, keys_before = tree(path), tree(keys_dir)
    proc = run_cli(keys_dir, path, "rotate-key", "timestamp", "--sign-with", "release")
    assert proc.returncode == 7, proc.stderr
    assert "needs 1 signature(s) of the previous root keys and has 0" in proc.stderr
    assert tree(path) == before
    after = tree(keys_dir)
    pending = {k: v for k, v in after.items() if k.startswith(".timestamp.new.")}
    assert sorted(pending) == [".timestamp.new.pem", ".timestamp.new.pub"], "the new key waits, unused"
    assert {k: v for k, v in after.items() if k not in pending} == keys_before, "the role's files are untouched"
    for _ in range(2):
        proc = run_cli(keys_dir, path, "rotate-key", "timestamp")
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in keys_dir.glob("timestamp.retired-*")) == [
        "timestamp.retired-1.pem", "timestamp.retired-1.pub", "timestamp.retired-2.pem", "timestamp.retired-2.pub"
    ]  # fmt: skip
    assert run_cli(keys_dir, path, "refresh").returncode == 0


# --- the second review: recovering from every interrupted step --------------------------------

FAIL = "RANSOMEYE_FAILPOINT"


@pytest.mark.parametrize("role", ["snapshot", "timestamp"])
def test_a_rotation_interrupted_before_its_timestamp_is_finished_by_the_flagged_refresh(
    dev_repository: tuple[Path, Path], role: str
) -> None:
    keys_dir, path = dev_repository
    proc = run_cli(keys_dir, path, "rotate-key", role, env={FAIL: "repository:roots-written"})
    assert proc.returncode == 9, proc.stderr
    assert (path / "metadata" / "2.root.json").exists() and (keys_dir / f".{role}.new.pem").exists()
    proc = run_cli(keys_dir, path, "refresh")
    assert proc.returncode == 2 and "refresh --after-interrupted-rotation" in proc.stderr, proc.stderr
    proc = run_cli(keys_dir, path, "status")
    assert proc.returncode == 0 and f"(an interrupted rotation): {role}" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli(keys_dir, path, "refresh", "--after-interrupted-rotation")
    assert proc.returncode == 0, proc.stderr
    assert f"keys: the old {role} key is now {role}.retired-1" in proc.stdout
    assert not list(keys_dir.glob(f".{role}.new.*")), "the new key took its place in keys/"
    repo = tuf.load(path)
    assert repo.stale == set()
    assert load_role_key(keys_dir, role).public == tuf.role_public(repo.root.signed, role)
    assert run_cli(keys_dir, path, "refresh").returncode == 0


def test_a_rotation_interrupted_after_its_commit_is_finished_by_running_it_again(
    dev_repository: tuple[Path, Path],
) -> None:
    keys_dir, path = dev_repository
    proc = run_cli(keys_dir, path, "rotate-key", "timestamp", env={FAIL: "repository:rotated"})
    assert proc.returncode == 9, proc.stderr
    assert tuf.load(path).root.signed.version == 2
    assert run_cli(keys_dir, path, "refresh").returncode == 7, "keys/ still holds the old key"
    proc = run_cli(keys_dir, path, "rotate-key", "timestamp")
    assert proc.returncode == 0, proc.stderr
    assert tuf.load(path).root.signed.version == 2, "no second rotation: the published one is finished"
    assert run_cli(keys_dir, path, "refresh").returncode == 0


def test_a_new_key_put_in_place_by_hand_is_kept(dev_repository: tuple[Path, Path], tmp_path: Path) -> None:
    keys_dir, path = dev_repository
    generate_key(tmp_path / "new", "timestamp")
    (keys_dir / "timestamp.pem").unlink()
    shutil.copy(tmp_path / "new" / "timestamp.pem", keys_dir / "timestamp.pem")
    proc = run_cli(keys_dir, path, "rotate-key", "timestamp", "--public", str(tmp_path / "new" / "timestamp.pub"))
    assert proc.returncode == 0, proc.stderr
    assert (keys_dir / "timestamp.pem").read_bytes() == (tmp_path / "new" / "timestamp.pem").read_bytes()
    assert (keys_dir / "timestamp.pub").read_bytes() == (tmp_path / "new" / "timestamp.pub").read_bytes()
    assert not (keys_dir / "timestamp.retired-1.pem").exists(), "only the old public half is retired"
    assert run_cli(keys_dir, path, "refresh").returncode == 0


def test_a_new_key_on_its_own_uri(dev_repository: tuple[Path, Path], tmp_path: Path) -> None:
    keys_dir, path = dev_repository
    generate_key(tmp_path / "token", "snapshot")
    env = {"RANSOMEYE_SNAPSHOT_KEY_URI": f"keyfile:{tmp_path / 'token' / 'snapshot.pem'}"}
    proc = run_cli(keys_dir, path, "rotate-key", "snapshot", "--public", str(tmp_path / "token" / "snapshot.pub"),
                   env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (keys_dir / "snapshot.pub").read_bytes() == (tmp_path / "token" / "snapshot.pub").read_bytes()
    assert run_cli(keys_dir, path, "refresh", env=env).returncode == 0
    assert run_cli(keys_dir, path, "refresh").returncode == 7, "the old key file no longer matches"


def test_a_repository_restored_from_a_lagging_copy_is_refused(
    dev_repository: tuple[Path, Path], tmp_path: Path
) -> None:
    keys_dir, path = dev_repository
    lagging = tmp_path / "lagging"
    shutil.copytree(path, lagging)
    assert run_cli(keys_dir, path, "refresh").returncode == 0
    shutil.rmtree(path)
    shutil.copytree(lagging, path)
    proc = run_cli(keys_dir, path, "refresh")
    assert proc.returncode == 2, proc.stderr
    assert "older than what was published from here (snapshot v1 < v2, timestamp v1 < v2)" in proc.stderr
    assert "a mirror with timestamp v2 or newer" in proc.stderr


@pytest.mark.parametrize(
    "mirror, message",
    [
        ("http://[::1", r"--mirror 'http://\[::1': not a mirror URL"),
        ("file:///nonexistent/repository", r"--mirror file:///nonexistent/repository: no such folder"),
        ("file://", r"--mirror file://: no such folder"),
    ],
)
def test_a_mirror_that_is_no_mirror_is_bad_input(tmp_path: Path, mirror: str, message: str) -> None:
    (tmp_path / "root.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "release" / "fetch.py"), "--root", str(tmp_path / "root.json"), "--mirror",
         mirror, "--product", "core", "--state", str(tmp_path / "state")],
        cwd=tmp_path, env=release_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.json"], "nothing was written"


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_a_root_file_that_is_no_root_is_bad_input_and_never_hangs(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root.json"
    if kind == "device":
        root = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(root)
    else:
        root.write_bytes(b" " * 600_000)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "release" / "fetch.py"), "--root", str(root), "--mirror",
         "http://127.0.0.1:9/repository", "--product", "core", "--state", str(tmp_path / "state")],
        cwd=tmp_path, env=release_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "not a root.json (a regular file of at most 512000 bytes)" in proc.stderr
    assert not (tmp_path / "state").exists(), "nothing was written"
