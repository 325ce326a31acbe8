"""The one table of exit codes: each code, provoked through a real command as a user runs it.

``release/errors.py``'s ``EXIT_CODES`` is the table and the README lists it.
Every case here runs an entry point in a subprocess on a real input that
causes exactly that error, and checks the code, the one message naming the
thing, that no traceback is printed and that nothing was published.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from release import bootstrap, errors
from release.errors import EXIT_CODES, ReleaseError
from release.signing import ensure_dev_keys
from tests.conftest import Repo, release_env
from tests.gates_fixtures import build_repo, edit

ROOT = Path(__file__).resolve().parent.parent
SIGNER = ROOT / "release" / "builder" / "signer.py"
HASH_LIST = ROOT / "release" / "manifests" / "generate_hash_list.py"
GATES = ROOT / "governance" / "gates" / "check_gates.py"
PACKAGER = ROOT / "release" / "builder" / "packager_core.py"
CORE_UNIT = "ops/services/core/ransomeye-core.service"


def _run(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, cmd)], capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
        env=release_env(env),
    )  # fmt: skip


def test_the_table_gives_every_error_one_code_and_every_code_one_meaning() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ReleaseError)]
    leaves = [c for c in classes if c is not ReleaseError]
    assert set(leaves) == set(EXIT_CODES), "every error class is in the table, and only those"
    codes = list(EXIT_CODES.values())
    assert len(codes) == len(set(codes)), "no code has two meanings"
    assert 0 not in codes
    assert all(c.exit_code == EXIT_CODES[c] for c in leaves)
    assert errors.ToolchainError.exit_code == bootstrap.EXIT_NOT_SET_UP


def test_the_readme_lists_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = {int(code) for code in re.findall(r"^\| (\d+) \| ", readme, flags=re.MULTILINE)}
    assert listed == {0, *EXIT_CODES.values()}


@dataclass(frozen=True)
class Keys:
    dir: Path
    signed: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    ensure_dev_keys(tmp_path / "keys")
    signed = tmp_path / "ransomeye-core-1.0.0.tar.gz"
    signed.write_bytes(b"an archive")
    proc = _run(SIGNER, "sign", signed, "--keys-dir", tmp_path / "keys")
    assert proc.returncode == 0, proc.stderr
    return Keys(tmp_path / "keys", signed)


def _expect(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_0_success_and_1_verification_failed(keys: Keys) -> None:
    pub = keys.dir / "release.minisign.pub"
    _expect(_run(SIGNER, "verify", keys.signed, "--pubkey", pub), 0, "")
    keys.signed.write_bytes(b"an archivE")
    _expect(_run(SIGNER, "verify", keys.signed, "--pubkey", pub), errors.VerificationError.exit_code, "signature")


def test_2_bad_input(tmp_path: Path) -> None:
    proc = _run(HASH_LIST, tmp_path / "nowhere")
    _expect(proc, errors.BadInputError.exit_code, f"{tmp_path / 'nowhere'}: not a directory")


def test_3_toolchain_missing(repo_copy: Repo, tmp_path: Path) -> None:
    before = repo_copy.artifact_state()
    proc = repo_copy.build(env={"RANSOMEYE_TOOLCHAIN_PATH": str(tmp_path)})
    _expect(proc, errors.ToolchainError.exit_code, "no Rust toolchain with the standard library")
    assert repo_copy.artifact_state() == before


def test_4_gate_failed(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo")
    edit(repo / CORE_UNIT, "MemoryMax=1536M", "MemoryMax=8G")
    proc = _run(GATES, "--root", repo)
    assert proc.returncode == errors.GateFailure.exit_code, proc.stdout + proc.stderr
    assert "FAIL resources" in proc.stdout and "Traceback" not in proc.stderr


def test_5_another_build_is_running(repo_copy: Repo) -> None:
    lock = repo_copy.root / "release" / ".build.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"4242\n", 0)
        proc = repo_copy.build()
    finally:
        os.close(fd)
    _expect(proc, errors.BuildBusyError.exit_code, "another release build is running (pid 4242)")


def test_6_packaging_refused(tmp_path: Path) -> None:
    proc = _run(PACKAGER, "--bin-root", tmp_path / "empty", "--out", tmp_path / "out")
    _expect(proc, errors.PackagingError.exit_code, "core: ")
    assert not any((tmp_path / "out").glob("*.tar.gz"))


def test_7_signing_failed(keys: Keys) -> None:
    (keys.dir / "release.pem").chmod(0o644)
    proc = _run(SIGNER, "sign", keys.signed, "--keys-dir", keys.dir)
    _expect(proc, errors.SigningError.exit_code, "release.pem: the private key is readable by group or others")


def test_8_system_failure(tmp_path: Path) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "ransomeye-core-1.0.0.tar.gz").write_bytes(b"an archive")
    (folder / "SHA256SUMS").mkdir()  # the checksum list cannot replace a directory
    proc = _run(HASH_LIST, folder)
    _expect(proc, errors.SystemFailure.exit_code, "generate_hash_list: error: ")
    assert (folder / "SHA256SUMS").is_dir(), "what stood there is untouched"
    assert sorted(p.name for p in folder.iterdir()) == ["SHA256SUMS", "ransomeye-core-1.0.0.tar.gz"], "no leftover"


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        ("raise", errors.InjectedFault, "failure injected at staging:created"),
        ("interrupt", errors.Interrupted, "interrupted; nothing was published"),
    ],
    ids=["9-injected", "130-interrupted"],
)
def test_injected_fault_and_interruption(repo_copy: Repo, action: str, error: type[ReleaseError], message: str) -> None:
    before = repo_copy.artifact_state()
    proc = repo_copy.build(env={"RANSOMEYE_FAILPOINT": f"staging:created@{action}"})
    _expect(proc, error.exit_code, message)
    assert repo_copy.artifact_state() == before
    assert list((repo_copy.root / "release" / ".staging").iterdir()) == []
