"""Hardening: crashes, interrupts, full disks, races, hostile trees and careless keys.

Every case runs the real ``build.py`` (or a real entry point) as a user would
and checks the one promise that matters: ``release/artifacts/`` afterwards
holds either the complete previous release or the complete new one, and it
verifies with the stock ``in-toto-verify``; nothing hangs; nothing leaks.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from release import repository as tuf
from release.keys import load_public_key
from tests.conftest import Repo, release_env

pytestmark = pytest.mark.slow

STEPS = [
    "gates", "build", "package-core", "package-agent-linux", "package-agent-windows", "package-dpi",
    "provenance", "sign", "checksums", "verify",
]  # fmt: skip
ARCHIVES = [
    "ransomeye-core-1.0.0.tar.gz",
    "ransomeye-agent-linux-1.0.0.tar.gz",
    "ransomeye-agent-windows-1.0.0.zip",
    "ransomeye-dpi-1.0.0.tar.gz",
]
VERIFY = str(Path(sys.executable).parent / "in-toto-verify")


def _members(path: Path) -> int:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return len(zf.namelist())
    with tarfile.open(path) as tar:
        return len(tar.getnames())


def _verifies(repo: Repo, tmp: Path) -> bool:
    copy = tmp / f"verify-{time.monotonic_ns()}"
    shutil.copytree(repo.artifacts, copy)
    proc = subprocess.run(
        [VERIFY, "--layout", "root.layout", "--verification-keys", str(repo.keys / "owner.pub")],
        cwd=copy, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    shutil.rmtree(copy)
    return proc.returncode == 0


def _published_timestamp(repo: Repo) -> int:
    """The TUF repository's published timestamp version, after checking all of it (a broken one fails the test)."""
    return tuf.load(tuf.repository_dir(repo.root), load_public_key(repo.keys / "owner.pub")).timestamp.signed.version


def _outcome(repo: Repo, before: dict[str, bytes], tmp: Path) -> str:
    """'previous' or 'new' — and never anything else: a partial or unverifiable release fails the test."""
    _published_timestamp(repo)
    state = repo.artifact_state()
    if state == before:
        return "previous"
    assert set(state) == set(before), f"the release folder is incomplete: {sorted(set(before) ^ set(state))}"
    assert _verifies(repo, tmp), "the published release does not verify"
    return "new"


def _kill_points(released: Repo) -> list[str]:
    """The run's start, every step boundary, members of every archive, every signature, and the publish."""
    points = ["staging:created", *STEPS]
    for archive in ARCHIVES:
        n = _members(released.artifacts / archive)
        points += [f"write:{archive}:{i}" for i in sorted({1, n // 2, n - 1})]
    points += [f"sign:{a}" for a in ARCHIVES] + ["sign:SHA256SUMS", "checksums:written"]
    points += ["repository:staged", "publish:before-exchange", "publish:after-exchange"]
    return points


# --- crash safety ----------------------------------------------------------------


def test_kill_9_anywhere_loses_nothing(released: Repo, tmp_path: Path) -> None:
    """SIGKILL at >= 30 fixed points and at random moments; the folder is always whole and verifies."""
    before = released.artifact_state()
    assert _verifies(released, tmp_path)
    outcomes: dict[str, str] = {}
    published = _published_timestamp(released)
    for point in _kill_points(released):
        proc = released.build(env={"RANSOMEYE_FAILPOINT": f"{point}@kill"})
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.returncode} {proc.stderr[-500:]}"
        outcomes[point] = _outcome(released, before, tmp_path)
        # Every fixed point comes before the TUF timestamp is replaced: the repository is the previous one.
        assert _published_timestamp(released) == published, point
        before = released.artifact_state()
    # Every fixed point kills after the run's staging exists (staging:created comes after new_staging), so
    # the last killed run's staging is there now, whatever the random kills below do (one may even finish).
    assert any((released.root / "release" / ".staging").iterdir()), "killed runs leave staging behind"
    rng = random.Random(20261124)
    for i in range(6):
        delay = rng.uniform(0.3, 3.0)
        child = subprocess.Popen(
            [sys.executable, str(released.root / "release" / "builder" / "build.py")],
            cwd=released.root, env=release_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(delay)
        child.kill()
        child.wait(timeout=60)
        outcomes[f"random-{i}-after-{delay:.2f}s"] = _outcome(released, before, tmp_path)
        before = released.artifact_state()
    assert len(outcomes) >= 30
    print(f"\n{len(outcomes)} crash points: " + ", ".join(f"{k}={v}" for k, v in outcomes.items()))
    assert outcomes["publish:before-exchange"] == "previous"
    assert outcomes["publish:after-exchange"] == "new"
    # The next run cleans what the killed ones left and publishes; the TUF repository advances past every crash.
    published = _published_timestamp(released)  # (a random kill may have come after a whole run)
    proc = released.build()
    assert proc.returncode == 0, proc.stderr
    assert _published_timestamp(released) == published + 1
    assert list((released.root / "release" / ".staging").iterdir()) == []
    assert _verifies(released, tmp_path)


@pytest.mark.parametrize(
    "point, published",
    [
        ("gates", False),
        ("build", False),
        ("write:ransomeye-core-1.0.0.tar.gz:3", False),
        ("sign:ransomeye-dpi-1.0.0.tar.gz", False),
        ("verify", False),
        ("publish:before-exchange", True),  # the signal waits for the swap to complete
        ("publish:after-exchange", True),
    ],
)
def test_ctrl_c_exits_130_with_one_line(released: Repo, tmp_path: Path, point: str, published: bool) -> None:
    before = released.artifact_state()
    proc = released.build(env={"RANSOMEYE_FAILPOINT": f"{point}@interrupt"})
    assert proc.returncode == 130, proc.stderr
    lines = proc.stderr.strip().splitlines()
    state = "the new release had been published" if published else "nothing was published"
    assert lines == [f"build: interrupted; {state}"]
    outcome = _outcome(released, before, tmp_path)
    assert outcome == ("new" if published else "previous")
    assert list((released.root / "release" / ".staging").iterdir()) == []


def test_real_sigint_during_cargo(released: Repo) -> None:
    before = released.artifact_state()
    child = subprocess.Popen(
        [sys.executable, str(released.root / "release" / "builder" / "build.py")],
        cwd=released.root, env=release_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    seen = ""
    while "[2/12] build" not in seen:
        char = child.stdout.read(1)
        assert char, f"the build ended before its build step started:\n{seen}"
        seen += char
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130
    assert err.strip().splitlines()[-1] == "build: interrupted; nothing was published"
    assert "Traceback" not in err
    assert released.artifact_state() == before


# --- concurrency and full disks ----------------------------------------------------


def test_two_builds_started_together(released: Repo, tmp_path: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, str(released.root / "release" / "builder" / "build.py")],
        cwd=released.root, env=release_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert first.stdout is not None
    seen = ""
    while "[1/12]" not in seen:
        char = first.stdout.read(1)
        assert char, f"the first build ended before its first step:\n{seen}"
        seen += char
    started = time.monotonic()
    second = released.build()
    assert time.monotonic() - started < 15, "the second build fails fast"
    assert second.returncode == 5
    assert "another release build is running" in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "Published RansomEye" in seen + out
    assert _verifies(released, tmp_path)


def test_injected_enospc_during_packaging(released: Repo) -> None:
    before = released.artifact_state()
    proc = released.build(env={"RANSOMEYE_FAILPOINT": "write:ransomeye-core-1.0.0.tar.gz:5@enospc"})
    assert proc.returncode == 6, proc.stderr
    assert "ransomeye-core-1.0.0.tar.gz: cannot be written: No space left on device" in proc.stderr
    assert "free space" in proc.stderr and "Traceback" not in proc.stderr
    assert released.artifact_state() == before


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="mounting a small tmpfs needs root")
def test_real_full_disk_during_packaging(released: Repo) -> None:
    """The staging area on a filesystem with room for the binaries but not the archives."""
    before = released.artifact_state()
    staging = released.root / "release" / ".staging"
    bins = sum(
        (released.root / "target" / b.target / "release" / f).stat().st_size
        for b in released.ws.bundles
        for f in b.binary_files()
    )
    signed = sum(  # the codesign step's signed copies of the Windows binaries, also in the staging area
        (released.root / "target" / b.target / "release" / f).stat().st_size
        for b in released.ws.bundles
        if "windows" in b.target
        for f in b.binary_files()
    )
    size_kib = (bins + signed) // 1024 + 400
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(staging)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        proc = released.build()
    finally:
        subprocess.run(["umount", str(staging)], check=True)
    assert proc.returncode in (6, 8), proc.stdout + proc.stderr  # refused while packaging, or by the system
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert released.artifact_state() == before


# --- hostile source trees -------------------------------------------------------------

Plant = Callable[[Path], None]


def _touch(path: Path) -> None:
    path.write_text("x")


def _hardlink(d: Path) -> None:
    os.link(d / "index.html", d / "hardlinked.html")


def _setuid(d: Path) -> None:
    (d / "suid").write_text("not a script: the bytes of an asset decide, its mode bits do not\n")
    os.chmod(d / "suid", 0o4777)


def _world_writable(d: Path) -> None:
    (d / "ww.txt").write_text("x\n")
    os.chmod(d / "ww.txt", 0o666)


def _sparse(d: Path) -> None:
    with (d / "sparse.bin").open("wb") as f:
        f.truncate(3 << 30)


def _device(d: Path) -> None:
    os.mknod(d / "null", 0o600 | 0o020000, os.makedev(1, 3))


HOSTILE: list[tuple[str, Plant, str]] = [
    ("symlink-out-of-repo", lambda d: os.symlink("/etc/hostname", d / "host"), "symlink leaves the packaged tree"),
    (
        "symlink-into-edge",
        lambda d: os.symlink("../../edge/agent/Cargo.toml", d / "a.toml"),
        "leaves the packaged tree",
    ),
    ("fifo", lambda d: os.mkfifo(d / "pipe"), "is a FIFO"),
    ("device", _device, "is a device file"),
    ("newline-name", lambda d: _touch(d / "evil\nname"), "control or invisible character"),
    ("backslash-name", lambda d: _touch(d / "evil\\name"), "is not allowed in an archive"),
    ("huge-sparse-file", _sparse, "over the 1073741824-byte limit"),
    ("hardlink", _hardlink, "has 2 names (a hard link)"),
]
NORMALIZED: list[tuple[str, Plant, str, int]] = [
    ("setuid", _setuid, "suid", 0o755),
    ("world-writable", _world_writable, "ww.txt", 0o644),
]


def _packager(released: Repo, out: Path) -> subprocess.CompletedProcess[str]:
    bin_root = out / "bin"
    for bundle in released.ws.bundles:
        (bin_root / bundle.target).mkdir(parents=True, exist_ok=True)
        for f in bundle.binary_files():
            shutil.copy(released.root / "target" / bundle.target / "release" / f, bin_root / bundle.target / f)
    return subprocess.run(
        [sys.executable, str(released.root / "release" / "builder" / "packager_core.py"),
         "--bin-root", str(bin_root), "--out", str(out / "out")],
        capture_output=True, text=True, timeout=120, check=False, env=release_env(),
    )  # fmt: skip


@pytest.fixture
def dist(released: Repo) -> Iterator[Path]:
    """ui/dist of the released repository; whatever a test plants there is removed afterwards."""
    d = released.root / "ui" / "dist"
    before = set(d.iterdir())
    yield d
    for p in set(d.iterdir()) - before:
        p.unlink()


@pytest.mark.parametrize("plant, message", [(p, m) for _, p, m in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_tree_is_refused(released: Repo, dist: Path, tmp_path: Path, plant: Plant, message: str) -> None:
    if plant is _device and os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    plant(dist)
    started = time.monotonic()
    proc = _packager(released, tmp_path)
    assert time.monotonic() - started < 60, "nothing hangs"
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    # The whole pipeline refuses it too, before packaging, and publishes nothing.
    before = released.artifact_state()
    build = released.build()
    assert build.returncode != 0 and "Traceback" not in build.stderr
    assert released.artifact_state() == before


@pytest.mark.parametrize(
    "plant, name, mode", [(p, n, m) for _, p, n, m in NORMALIZED], ids=[i for i, _, _, _ in NORMALIZED]
)
def test_odd_files_are_normalized(
    released: Repo, dist: Path, tmp_path: Path, plant: Plant, name: str, mode: int
) -> None:
    plant(dist)
    proc = _packager(released, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "out" / ARCHIVES[0]) as tar:
        member = tar.getmember(f"ransomeye-core-1.0.0/ui/dist/{name}")
        assert member.isfile() and member.mode == mode and (member.uid, member.gid) == (0, 0)
        f = tar.extractfile(member)
        assert f is not None and f.read() == (dist / name).read_bytes()


# --- keys and secrets ---------------------------------------------------------------------


def _encrypt_release_key(repo: Repo, passphrase: bytes) -> bytes:
    path = repo.keys / "release.pem"
    original = path.read_bytes()
    key = serialization.load_pem_private_key(original, password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    )
    return original


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "the key is encrypted and no passphrase was given"),
        ({"RANSOMEYE_RELEASE_KEY_PASSPHRASE": "not-the-passphrase"}, "wrong passphrase"),
    ],
    ids=["no-passphrase", "wrong-passphrase"],
)
def test_encrypted_key_without_the_right_passphrase(released: Repo, env: dict[str, str], message: str) -> None:
    before = released.artifact_state()
    original = _encrypt_release_key(released, b"the right one")
    try:
        proc = released.build(env=env)
    finally:
        (released.keys / "release.pem").write_bytes(original)
    assert proc.returncode == 7
    assert message in proc.stderr and "RANSOMEYE_RELEASE_KEY_PASSPHRASE" in proc.stderr
    assert "not-the-passphrase" not in proc.stderr + proc.stdout
    assert "[1/12]" not in proc.stdout, "no step ran, so no link was written"
    assert released.artifact_state() == before


def _secret_lines(pem: bytes) -> list[bytes]:
    return [line for line in pem.splitlines() if line and not line.startswith(b"-----")]


def test_no_secret_ever_reaches_an_output(released: Repo, tmp_path: Path) -> None:
    """Decoys in the environment and the tree; every artifact, archive member, link and log is scanned."""
    passphrase = "decoy-passphrase-7f3a9c"
    decoy_env = "decoy-aws-secret-4b1e2d8c9a"
    original = _encrypt_release_key(released, passphrase.encode())
    decoy_pem = released.root / "operator-notes.pem"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    decoy_pem.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    try:
        proc = released.build(env={"RANSOMEYE_RELEASE_KEY_PASSPHRASE": passphrase, "AWS_SECRET_ACCESS_KEY": decoy_env})
        assert proc.returncode == 0, proc.stderr
        needles = [passphrase.encode(), decoy_env.encode()]
        for pem in [*(released.keys / f"{r}.pem" for r in ("owner", "build")), decoy_pem]:
            needles += _secret_lines(pem.read_bytes())
        needles += _secret_lines(original) + _secret_lines((released.keys / "release.pem").read_bytes())
        haystacks: dict[str, bytes] = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
        for p in released.artifacts.iterdir():
            haystacks[p.name] = p.read_bytes()
        for archive in ARCHIVES:
            path = released.artifacts / archive
            if archive.endswith(".zip"):
                with zipfile.ZipFile(path) as zf:
                    haystacks.update({f"{archive}:{n}": zf.read(n) for n in zf.namelist()})
            else:
                with tarfile.open(path) as tar:
                    for m in tar.getmembers():
                        f = tar.extractfile(m)
                        if f is not None:
                            haystacks[f"{archive}:{m.name}"] = f.read()
        leaks = [(where, n[:12]) for where, data in haystacks.items() for n in needles if n in data]
        assert leaks == [], f"secret material leaked: {leaks}"
        assert len(needles) >= 6 and len(haystacks) > 30
    finally:
        (released.keys / "release.pem").write_bytes(original)
        decoy_pem.unlink()


def test_error_messages_never_echo_a_passphrase(released: Repo) -> None:
    original = _encrypt_release_key(released, b"right")
    try:
        proc = released.build(env={"RANSOMEYE_RELEASE_KEY_PASSPHRASE": "s3cr3t-wrong-guess"})
    finally:
        (released.keys / "release.pem").write_bytes(original)
    assert proc.returncode == 7
    assert not re.search("s3cr3t", proc.stdout + proc.stderr)
