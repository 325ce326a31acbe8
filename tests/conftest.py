"""Shared fixtures: real repository copies, real keys, a real release.

Nothing here mocks the pipeline: a release is made by running
``release/builder/build.py`` as a user would, in a temporary copy of this
repository, with keys generated for the test session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.worktree import copy_worktree
from release.products import Workspace, load_workspace
from release.signing import ensure_dev_keys

ROOT = Path(__file__).resolve().parent.parent
EPOCH = 1_700_000_000
# The second builder's checkout and cargo target directory, one for the session (each release resets it to its
# commit), so that its cargo reuses what it built for the previous repository copy.
BUILDERS_DIR = Path(tempfile.gettempdir()) / f"ransomeye-test-builders-{os.getpid()}"


def readme_block(marker: str) -> str:
    """The one ``sh`` block the README prints under ``<!-- MARKER ...-->``, exactly as printed."""
    found = re.findall(
        rf"<!-- {re.escape(marker)}[^>]*-->\n```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL
    )
    assert len(found) == 1, f"README.md has not one block marked {marker!r}"
    return str(found[0])


def release_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a test runs the pipeline with: fixed epoch, no injected faults, the session's builders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANSOMEYE_")}
    env["SOURCE_DATE_EPOCH"] = str(EPOCH)
    env["RANSOMEYE_BUILDERS_DIR"] = str(BUILDERS_DIR)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Repo:
    """A temporary copy of the repository with its own keys."""

    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "release" / "artifacts"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def ws(self) -> Workspace:
        return load_workspace(self.root)

    def commit(self, message: str = "test change") -> None:
        """Commit every change of this copy (the second builder rebuilds the commit, as in a real checkout)."""
        git(self.root, "add", "-A")
        if git(self.root, "status", "--porcelain").stdout.strip():
            git(self.root, "commit", "-q", "-m", message)

    def build(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: int = 1200, commit: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``build.py`` in this copy as a user would, after committing its changes (unless ``commit`` is False)."""
        if commit:
            self.commit()
        return subprocess.run(
            [sys.executable, str(self.root / "release" / "builder" / "build.py"), *args],
            cwd=self.root,
            env=release_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def audit(self, report: Path) -> subprocess.CompletedProcess[str]:
        """Run ``audit.py`` on this copy's release with its owner key, writing the JSON report to ``report``."""
        return subprocess.run(
            [sys.executable, str(self.root / "release" / "audit" / "audit.py"), str(self.artifacts),
             "--owner-key", str(self.keys / "owner.pub"), "--json", str(report)],
            cwd=report.parent, env=release_env(), capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def artifact_state(self) -> dict[str, bytes]:
        """Every file in the release folder with its bytes (to compare before/after)."""
        return {p.name: p.read_bytes() for p in sorted(self.artifacts.iterdir()) if p.is_file()}


GIT_ENV = {"GIT_AUTHOR_NAME": "RansomEye test", "GIT_AUTHOR_EMAIL": "test@ransomeye.invalid",
           "GIT_COMMITTER_NAME": "RansomEye test", "GIT_COMMITTER_EMAIL": "test@ransomeye.invalid",
           "GIT_AUTHOR_DATE": f"@{EPOCH} +0000", "GIT_COMMITTER_DATE": f"@{EPOCH} +0000"}  # fmt: skip


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in ``root`` with a fixed identity and date; fail the test if git fails."""
    proc = subprocess.run(["git", "-C", str(root), *args], env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc


def make_repo(dest: Path, keys_from: Path | None = None) -> Repo:
    """A copy of this checkout's sources with keys, as a git checkout of one commit (as a user's clone is)."""
    repo = Repo(copy_worktree(dest))
    git(repo.root, "init", "-q", "-b", "main")
    if keys_from is None:
        ensure_dev_keys(repo.keys)
    else:
        copy_keys(keys_from, repo.keys)
    repo.commit("the sources")
    return repo


def copy_keys(src: Path, dest: Path) -> None:
    """Copy a checkout's keys (git ignores them) into another checkout's ``keys/``, over what it holds."""
    for p in src.iterdir():
        if p.name not in (".gitignore", "README.md"):
            if p.is_dir():
                shutil.copytree(p, dest / p.name, dirs_exist_ok=True)
            else:
                shutil.copy2(p, dest / p.name)


@pytest.fixture(scope="session", autouse=True)
def _builders_dir() -> Iterator[None]:
    yield
    shutil.rmtree(BUILDERS_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """A repository copy on which the whole pipeline ran once, successfully."""
    repo = make_repo(tmp_path_factory.mktemp("released") / "ransomeye")
    proc = repo.build()
    assert proc.returncode == 0, f"the release build failed:\n{proc.stdout}\n{proc.stderr}"
    yield repo


@pytest.fixture
def repo_copy(tmp_path: Path) -> Repo:
    """A fresh repository copy with its own development keys (nothing built)."""
    return make_repo(tmp_path / "ransomeye")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from this session's release (`make golden`); review the diff",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
