"""Rebuild and compare, as a customer runs it: a clean clone at the release's commit rebuilds every archive.

The session's release (a threshold-2 release of a committed repository copy)
is the published one; the customer's checkout is a second clone, at another
path. Each case hands the rebuild a copy of the release folder, hostile or
not, and checks the exit code, the verdict lines, diffoscope's report where
a file differs, and that the release folder was only read.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from release import provenance
from release.rebuild import release_commit
from tests.conftest import Repo, git, release_env

pytestmark = pytest.mark.slow
VERSION = "1.0.0"
CORE = f"ransomeye-core-{VERSION}.tar.gz"
SUMMARY = "rebuild-compare.txt"


@pytest.fixture(scope="module")
def checkout(released: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The customer's clean clone of the release's commit, at another path (its cargo target kept between cases).

    As the README says: clone, then check out the commit the release's provenance names (the session's
    repository copy may have moved on since its release was built).
    """
    clone = tmp_path_factory.mktemp("customer") / "ransomeye"
    git(clone.parent, "clone", "-q", str(released.root), str(clone))
    git(clone, "checkout", "-q", release_commit(released.artifacts, VERSION))
    # The code-signing CA comes with the project's public keys, apart from the clone (keys are not committed here).
    (clone.parent / "ransomeye-keys").mkdir()
    shutil.copy2(released.keys / "codesign-ca.pem", clone.parent / "ransomeye-keys" / "codesign-ca.pem")
    yield clone


def _rebuild(checkout: Path, release: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(checkout / "release" / "builder" / "rebuild.py"), "--release", str(release),
         "--report-dir", str(report), "--target-dir", str(checkout.parent / "target"),
         "--codesign-ca", str(checkout.parent / "ransomeye-keys" / "codesign-ca.pem")],
        cwd=checkout, env=release_env(), capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip


def _state(folder: Path) -> dict[str, tuple[bool, bytes]]:
    return {p.name: (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(folder.iterdir())}  # fmt: skip


def _flip_inside_core(folder: Path) -> None:
    """A valid core archive that differs from the release's by one byte of one member."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(folder / CORE) as src, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
            if data is not None and info.name.endswith("index.html"):
                data = data.replace(b"<", b"[", 1)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    (folder / CORE).write_bytes(gzip.compress(raw.getvalue(), mtime=0))


def _other_commit(folder: Path) -> None:
    path = folder / provenance.provenance_name(VERSION)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["buildDefinition"]["externalParameters"]["sourceCommit"] = "ab" * 20
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope) + "\n")


def _replace_by_symlink(name: str, target: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to(target)

    return edit


def _not_json(folder: Path) -> None:
    (folder / provenance.provenance_name(VERSION)).write_text("{not json")


def _missing(folder: Path) -> None:
    (folder / CORE).unlink()


def _honest(folder: Path) -> None:
    return None


Edit = Callable[[Path], None]
CASES: list[tuple[str, Edit, int, tuple[str, ...]]] = [
    ("honest", _honest, 0, ("IDENTICAL " + CORE, "all 8 files are identical")),
    ("archive-differs-inside", _flip_inside_core, 1, (f"DIFFERENT {CORE}: published", "1 of 8 files differ")),
    ("archive-missing", _missing, 1, (f"DIFFERENT {CORE}: missing from the release",)),
    (
        "archive-is-a-symlink",
        _replace_by_symlink(CORE, f"ransomeye-dpi-{VERSION}.tar.gz"),
        1,
        (f"DIFFERENT {CORE}: not a regular file",),
    ),
    ("release-of-another-commit", _other_commit, 2, ("the release was built from " + "ab" * 20, "git checkout")),
    (
        "provenance-not-json",
        _not_json,
        2,
        ("names a source commit",),
    ),
    (
        "provenance-is-a-symlink",
        _replace_by_symlink(provenance.provenance_name(VERSION), "/etc/passwd"),
        2,
        ("cannot be read",),
    ),
]


@pytest.mark.parametrize("edit, code, words", [(e, c, w) for _, e, c, w in CASES], ids=[n for n, _, _, _ in CASES])
def test_rebuild_and_compare(
    released: Repo, checkout: Path, tmp_path: Path, edit: Edit, code: int, words: tuple[str, ...]
) -> None:
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder, symlinks=True)
    edit(folder)
    before = _state(folder)
    report = tmp_path / "report"
    proc = _rebuild(checkout, folder, report)
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out
    for word in words:
        assert word in out, out
    assert _state(folder) == before, "the release folder is only read"
    assert git(checkout, "status", "--porcelain", "--untracked-files=all").stdout == "", "the checkout is untouched"
    if code in (0, 1):
        lines = (report / SUMMARY).read_text().splitlines()
        assert len(lines) == 8 and all(line.split()[0] in ("IDENTICAL", "DIFFERENT") for line in lines)
        assert sum(line.startswith("DIFFERENT") for line in lines) == (0 if code == 0 else 1)
    if words[0].startswith(f"DIFFERENT {CORE}: published"):
        diff = (report / f"{CORE}.diffoscope.txt").read_text()
        assert "index.html" in diff, diff[:2000]


def test_a_dirty_checkout_or_no_release_is_refused(released: Repo, checkout: Path, tmp_path: Path) -> None:
    proc = _rebuild(checkout, tmp_path / "no-such-folder", tmp_path / "report")
    assert proc.returncode == 2 and "not a release folder" in proc.stderr, proc.stderr
    main = checkout / "core" / "src" / "main.rs"
    original = main.read_bytes()
    main.write_bytes(original + b"// a local change\n")
    try:
        proc = _rebuild(checkout, released.artifacts, tmp_path / "report")
        assert proc.returncode == 2 and "core/src/main.rs" in proc.stderr, proc.stderr
    finally:
        main.write_bytes(original)
