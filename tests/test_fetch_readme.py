"""The README's "Fetch a release", run exactly as printed, against a mirror on 127.0.0.1.

The block runs by ``sh`` in an empty folder, with only its placeholders
replaced: the source, the keys folder (a customer's copy: the public keys
and ``root.json``, nothing else) and the mirror's address, an HTTP server
serving a copy of a real release's TUF repository. Every product is fetched
and verified; the folder then holds exactly the files the index lists.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from release import repository as tuf
from tests.conftest import ROOT, Repo, readme_block
from tests.forge import VERIFY

SOURCE_PLACEHOLDER = "/path/to/ransomeye-source"
KEYS_PLACEHOLDER = "/path/to/ransomeye-keys"
MIRROR_PLACEHOLDER = "https://downloads.example/ransomeye"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(released: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A copy of the release's repository served on 127.0.0.1, and a customer's keys folder."""
    base = tmp_path_factory.mktemp("mirror")
    shutil.copytree(tuf.repository_dir(released.root), base / "ransomeye")
    keys = base / "customer-keys"
    keys.mkdir()
    for name in ("owner.pub", "root.json"):
        shutil.copy(released.keys / name, keys / name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(base)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ransomeye", keys
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_block(folder: Path, url: str, keys: Path, product: str) -> subprocess.CompletedProcess[str]:
    script = readme_block("fetch:").replace(SOURCE_PLACEHOLDER, str(ROOT)).replace(KEYS_PLACEHOLDER, str(keys))
    script = script.replace(MIRROR_PLACEHOLDER, url).replace("--product core", f"--product {product}")
    env = {**os.environ, "PATH": f"{Path(VERIFY).parent}:{os.environ['PATH']}", "XDG_STATE_HOME": str(folder / "st")}
    return subprocess.run(["sh", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


@pytest.mark.parametrize("product", ["core", "agent-linux", "agent-windows", "dpi"])
def test_the_readme_fetch_gets_and_verifies_each_product(
    mirror: tuple[str, Path], released: Repo, tmp_path: Path, product: str
) -> None:
    url, keys = mirror
    proc = run_block(tmp_path, url, keys, product)
    assert proc.returncode == 0, proc.stderr
    version = released.ws.version
    out = tmp_path / f"ransomeye-{product}-{version}"
    assert f"fetch: ransomeye {product} {version}: " in proc.stdout
    index = tuf.load(tuf.repository_dir(released.root)).index()
    entry = index["releases"][version]
    expected = {*entry["products"][product], *entry["shared"], "verify-release.link"}
    assert {p.name for p in out.iterdir()} == expected
    for name in entry["products"][product]:
        assert (out / name).read_bytes() == (released.artifacts / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["st", out.name]), "nothing else was left"
    state = json.loads((tmp_path / "st" / "ransomeye-fetch").glob("*/timestamp.json").__next__().read_bytes())
    assert state["signed"]["version"] >= 1


def test_a_second_fetch_into_the_same_folder_is_refused_and_changes_nothing(
    mirror: tuple[str, Path], tmp_path: Path
) -> None:
    url, keys = mirror
    assert run_block(tmp_path, url, keys, "dpi").returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "st" not in p.parts}
    proc = run_block(tmp_path, url, keys, "dpi")
    assert proc.returncode == 2
    assert re.search(r"fetch: error: .*ransomeye-dpi-[^ ]+ exists", proc.stderr), proc.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "st" not in p.parts}
    assert after == before
    assert not list(tmp_path.glob(".ransomeye-fetch.*"))


def fetch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(VERIFY).parent / "python3"), str(ROOT / "release" / "fetch.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_list_and_the_user_mistakes(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, keys = mirror
    common = ["--root", str(keys / "root.json"), "--mirror", url, "--state", str(tmp_path / "st")]
    proc = fetch(*common, "--list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1.0.0 (latest): agent-linux, agent-windows, core, dpi"]
    mistakes = [
        (
            ["--product", "edge"],
            r"has no product 'edge'\n  hint: products: agent-linux, agent-windows, core, dpi",
        ),
        (
            ["--product", "core", "--version", "0.9.0"],
            r"0.9.0 is not in the repository\n  hint: versions: 1.0.0",
        ),
        (["--product", "core", "--version", "../1"], r"--version '../1': not a version"),
        (["--product", "core", "--out", str(tmp_path / "no" / "such")], r"no is not a folder"),
        ([], r"say which product"),
    ]
    for args, message in mistakes:
        proc = fetch(*common, *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert re.search(message, proc.stderr), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = fetch("--root", str(tmp_path / "none.json"), "--mirror", url, "--product", "core", cwd=tmp_path)
    assert proc.returncode == 2 and "none.json: No such file" in proc.stderr, proc.stderr
    proc = fetch("--root", str(keys / "owner.pub"), "--mirror", url, "--product", "core", "--state",
                 str(tmp_path / "s2"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "not a TUF root" in proc.stderr, proc.stderr
    proc = fetch(*common[:2], "--mirror", "ftp://x/y", "--product", "core", cwd=tmp_path)
    assert proc.returncode == 2 and "not a mirror URL" in proc.stderr, proc.stderr
    proc = fetch(*common[:2], "--mirror", "http://127.0.0.1:9/x", "--product", "core", "--state",
                 str(tmp_path / "s3"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "cannot download from the mirror" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s")) == []
