"""Facts about the source: ``SOURCE_DATE_EPOCH`` and the hashes of the gated source tree."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from release.errors import BadInputError
from release.products import Workspace, load_workspace
from release.source import EPOCH_VARIABLE, hash_sources, source_commit, source_date_epoch

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = 1_600_000_000
AUTHORED = 1_500_000_000


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No epoch from the caller, and git sees neither the caller's repository nor their config."""
    monkeypatch.delenv(EPOCH_VARIABLE, raising=False)
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env={**os.environ, **(env or {})})


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README").write_text("hello\n")
    _git(repo, "add", "README")
    _git(
        repo,
        "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
        "commit", "-q", "-m", "first",
        env={"GIT_COMMITTER_DATE": f"@{COMMITTED} +0000", "GIT_AUTHOR_DATE": f"@{AUTHORED} +0000"},
    )  # fmt: skip
    return repo


# --- SOURCE_DATE_EPOCH --------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1700000000", 1_700_000_000), ("0", 0), ("0042", 42)])
def test_epoch_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str, expected: int) -> None:
    monkeypatch.setenv(EPOCH_VARIABLE, raw)
    assert source_date_epoch(tmp_path) == expected


def test_the_environment_wins_over_git(monkeypatch: pytest.MonkeyPatch, git_repo: Path) -> None:
    monkeypatch.setenv(EPOCH_VARIABLE, "1234")
    assert source_date_epoch(git_repo) == 1234


def test_epoch_from_the_head_commit_time(git_repo: Path) -> None:
    assert source_date_epoch(git_repo) == COMMITTED  # the committer's time, not the author's


def test_source_commit_is_head(git_repo: Path) -> None:
    head = subprocess.run(
        ["git", "-C", str(git_repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert source_commit(git_repo) == head and len(head) == 40
    assert source_commit(git_repo.parent) is None


@pytest.mark.parametrize("raw", ["", "abc", "-1", "1.5", "1e9", " 1700000000", "1700000000\n", "0x10", "1_000"])
def test_a_non_integer_epoch_is_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str) -> None:
    monkeypatch.setenv(EPOCH_VARIABLE, raw)
    with pytest.raises(BadInputError) as e:
        source_date_epoch(tmp_path)
    assert e.value.message == f"{EPOCH_VARIABLE} = {raw!r} is not a non-negative integer number of seconds"


def test_a_superscript_epoch_is_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(EPOCH_VARIABLE, "17²")
    with pytest.raises(BadInputError):
        source_date_epoch(tmp_path)


def test_no_epoch_outside_git_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as e:
        source_date_epoch(tmp_path)
    assert EPOCH_VARIABLE in e.value.message and str(tmp_path) in e.value.message
    assert e.value.hint is not None and EPOCH_VARIABLE in e.value.hint


def test_no_epoch_in_a_repository_without_commits_is_bad_input(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    with pytest.raises(BadInputError, match="not a git checkout with a commit"):
        source_date_epoch(tmp_path)


def test_no_epoch_without_git_installed_is_bad_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, git_repo: Path
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BadInputError, match="not a git checkout with a commit"):
        source_date_epoch(git_repo)
    assert source_commit(git_repo) is None


# --- hash_sources -------------------------------------------------------------------------

SOURCE_FILES = {
    "Cargo.lock": b"# lock\n",
    "core/Cargo.toml": b"[package]\n",
    "core/src/main.rs": b"fn main() {}\n",
    "ops/services/core/ransomeye-core.service": b"[Unit]\n",
    "edge/agent/src/main.rs": b"fn main() { agent() }\n",
    "edge/dpi/empty.rs": b"",
    "ui/dist/index.html": b"<html></html>\n",
    "ui/dist/big.js": bytes(range(256)) * 5000,  # more than one read chunk
    "governance/policies/limits.toml": b"[limits]\n",
    "governance/gates/check.py": b"print('gate')\n",
}
CACHE_FILES = [
    "governance/gates/__pycache__/check.cpython-311.pyc",
    "governance/gates/check.pyc",
    "governance/gates/check.pyo",
    "core/target/release/ransomeye-core",
    "ui/.mypy_cache/x.json",
    "ui/.pytest_cache/v",
]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A small workspace: the real declaration over a few small source trees."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy2(ROOT / "Cargo.toml", root / "Cargo.toml")
    for rel, data in SOURCE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for rel in CACHE_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"cache")
    (root / "ops" / "empty-dir").mkdir()
    (tmp_path / "outside.txt").write_bytes(b"outside the repository")
    workspace = load_workspace(root)
    assert set(workspace.sources) == {"Cargo.toml", "Cargo.lock", "core", "ops", "edge", "ui", "governance"}
    return workspace


def _expected(ws: Workspace, extra: dict[str, bytes] | None = None) -> dict[str, str]:
    files = {**SOURCE_FILES, "Cargo.toml": (ws.root / "Cargo.toml").read_bytes(), **(extra or {})}
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())}


def _within(seconds: float, fn: Callable[[], object], fifo: Path | None = None) -> object:
    """Run ``fn`` in a thread; fail (and unblock a reader stuck on ``fifo``) if it takes longer than ``seconds``."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # EOF for the blocked reader
        thread.join(5)
        pytest.fail(f"hash_sources did not return within {seconds}s (it opened {fifo}?)")
    return result[0]


def test_hashes_match_hashlib(ws: Workspace) -> None:
    hashes = hash_sources(ws)
    assert hashes == _expected(ws)
    assert list(hashes) == sorted(hashes)


def test_caches_are_not_source(ws: Workspace) -> None:
    hashes = hash_sources(ws)
    for rel in CACHE_FILES:
        assert rel not in hashes
    assert not any("__pycache__" in rel or rel.endswith(".pyc") or "/target/" in rel for rel in hashes)


def test_a_change_anywhere_changes_the_hashes(ws: Workspace) -> None:
    before = hash_sources(ws)
    (ws.root / "edge" / "dpi" / "empty.rs").write_bytes(b"\n")
    after = hash_sources(ws)
    assert {k for k in before if before[k] != after[k]} == {"edge/dpi/empty.rs"}


def test_a_missing_source_is_bad_input(ws: Workspace) -> None:
    (ws.root / "Cargo.lock").unlink()
    with pytest.raises(BadInputError, match=r"^Cargo\.lock: declared source not found$"):
        hash_sources(ws)


@pytest.mark.parametrize("where", ["core/pipe", "Cargo.lock"])
def test_a_fifo_is_bad_input_and_never_opened(ws: Workspace, where: str) -> None:
    fifo = ws.root / where
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    outcome = _within(10, lambda: hash_sources(ws), fifo)
    assert isinstance(outcome, BadInputError), outcome
    assert outcome.message.startswith(f"{where}: is not a regular file or directory")


def test_a_symlink_to_a_fifo_is_bad_input_and_never_opened(ws: Workspace) -> None:
    fifo = ws.root / "ops" / "pipe"
    os.mkfifo(fifo)
    (ws.root / "core" / "link").symlink_to("../ops/pipe")
    outcome = _within(10, lambda: hash_sources(ws), fifo)
    assert isinstance(outcome, BadInputError), outcome


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("core/leak", "../../outside.txt"),  # relative, out of the repository
        ("core/leak-abs", "/etc/hostname"),  # absolute (or dangling: refused either way)
    ],
)
def test_a_symlink_leaving_the_repository_is_bad_input(ws: Workspace, link: str, target: str) -> None:
    (ws.root / link).symlink_to(target)
    with pytest.raises(BadInputError, match=f"^{link}: symlink leaves the repository or dangles$"):
        hash_sources(ws)


def test_a_directory_symlink_leaving_the_repository_is_bad_input(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_bytes(b"s")
    (ws.root / "ui" / "dist" / "vendor").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BadInputError, match=r"^ui/dist/vendor: symlink leaves"):
        hash_sources(ws)


def test_a_dangling_symlink_is_bad_input(ws: Workspace) -> None:
    (ws.root / "core" / "dangling").symlink_to("no-such-file")
    with pytest.raises(BadInputError, match=r"^core/dangling: symlink"):
        hash_sources(ws)


def test_a_symlink_inside_is_hashed_as_its_target(ws: Workspace) -> None:
    (ws.root / "core" / "index.html").symlink_to("../ui/dist/index.html")
    (ws.root / "edge" / "limits.toml").symlink_to(ws.root / "governance" / "policies" / "limits.toml")  # absolute
    hashes = hash_sources(ws)
    assert hashes == _expected(
        ws,
        {
            "core/index.html": SOURCE_FILES["ui/dist/index.html"],
            "edge/limits.toml": SOURCE_FILES["governance/policies/limits.toml"],
        },
    )


def test_a_symlink_to_a_directory_is_bad_input(ws: Workspace) -> None:
    (ws.root / "edge" / "policies").symlink_to(ws.root / "governance" / "policies")
    with pytest.raises(BadInputError, match="symlinks to directories are not followed"):
        hash_sources(ws)


@pytest.mark.parametrize(("link", "target"), [("core/self", "self"), ("core/up", "..")])
def test_a_symlink_loop_is_bad_input(ws: Workspace, link: str, target: str) -> None:
    (ws.root / link).symlink_to(target)
    outcome = _within(10, lambda: hash_sources(ws))
    if isinstance(outcome, BaseException) and not isinstance(outcome, BadInputError):
        raise outcome
    assert isinstance(outcome, BadInputError), outcome
