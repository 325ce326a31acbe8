"""A copy of a working tree's sources, for the benchmark and the test suite to build in."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = {".git", ".venv", "target", ".staging", ".previous", ".pytest_cache", ".mypy_cache", ".ruff_cache",
           ".hypothesis", "__pycache__", ".build.lock", "unsafe-prebuilt"}  # fmt: skip


def copy_worktree(dest: Path, root: Path = ROOT) -> Path:
    """Copy ``root``'s sources (no build outputs, keys, caches, releases or TUF repository) to ``dest``."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in IGNORED or n.startswith(".coverage")}
        d = Path(directory)
        if d == root / "keys":
            skip |= {n for n in names if n not in (".gitignore", "README.md")}
        if d == root / "release" / "artifacts":
            skip |= {n for n in names if n != ".gitkeep"}
        if d == root / "release":
            outputs = {"repository", ".repository-published.json", "audit.json", "audit.html", "rebuild-report"}
            skip |= outputs & set(names)  # a release's outputs
        return skip

    shutil.copytree(root, dest, ignore=ignore, symlinks=True)
    return dest
