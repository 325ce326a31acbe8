"""The release build end to end, run as a user runs it: the seed's acceptance criteria."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from release.pipeline import functionaries
from release.products import Bundle, Workspace
from tests.conftest import Repo, copy_keys, git, release_env

STEPS = [
    "gates", "build", "codesign", "package-core", "package-agent-linux", "package-agent-windows", "package-dpi",
    "provenance", "sign", "checksums", "verify",
]  # fmt: skip
BANNER = "⛔ RELEASE ABORTED: GATES FAILED"
WINE = shutil.which("wine64") or ("/usr/lib/wine/wine64" if os.path.exists("/usr/lib/wine/wine64") else None)
MINISIGN = shutil.which("minisign")

pytestmark = pytest.mark.slow


def _archives(repo: Repo) -> dict[str, Path]:
    ws = repo.ws
    return {b.id: repo.artifacts / b.archive_name(ws.version) for b in ws.bundles}


def _members(path: Path) -> list[str]:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return [n.rstrip("/") for n in zf.namelist()]
    with tarfile.open(path) as tar:
        return tar.getnames()


def _expected_members(ws: Workspace, bundle: Bundle) -> list[str]:
    top = bundle.stem(ws.version)
    names = {top, f"{top}/bin"} | {f"{top}/bin/{f}" for f in bundle.binary_files()}
    for asset in bundle.assets:
        parts = asset.split("/")
        names |= {f"{top}/{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1)}
        for p in (ws.root / asset).rglob("*"):
            names.add(f"{top}/{p.relative_to(ws.root).as_posix()}")
    return sorted(names)


def _extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest


# --- the published release ---------------------------------------------------


def test_four_distinct_signed_archives(released: Repo) -> None:
    archives = _archives(released)
    assert len(archives) == 4
    contents = {p.read_bytes() for p in archives.values()}
    assert len(contents) == 4, "the four archives are distinct"
    for p in archives.values():
        assert p.stat().st_size > 0
        assert (p.parent / (p.name + ".minisig")).is_file()
    v = released.ws.version
    sboms = {f"{b.stem(v)}.cdx.json" for b in released.ws.bundles}
    payloads = {p.name for p in archives.values()} | sboms | {"gates-report.json"}
    expected = payloads | {n + ".minisig" for n in payloads}
    expected |= {p.name + s for p in archives.values() for s in (".asc", ".sigstore.json")}  # OpenPGP, Sigstore
    expected |= {"SHA256SUMS", "SHA256SUMS.minisig", "SHA256SUMS.asc", "SHA256.sig", ".gitkeep", "root.layout",
                 f"ransomeye-{v}.intoto.jsonl"}  # fmt: skip
    published = {p.name for p in released.artifacts.iterdir()}
    links = {n for n in published if n.endswith(".link")}
    assert {n.split(".")[0] for n in links} == set(STEPS) - {"verify"}, "one link per in-toto step"
    assert published - links == expected, "nothing else is published"


def test_the_steps_processes_found_their_bytecode_compiled(released: Repo) -> None:
    """The sandboxed steps import from a read-only checkout: the pipeline compiled what they import beforehand."""
    assert list((released.root / "release" / "builder" / "__pycache__").glob("step.*.pyc"))
    assert list((released.root / "governance" / "gates" / "__pycache__").glob("*.pyc"))


def test_archive_names_match_the_mission(released: Repo) -> None:
    v = released.ws.version
    assert sorted(p.name for p in _archives(released).values()) == sorted(
        [
            f"ransomeye-core-{v}.tar.gz",
            f"ransomeye-agent-linux-{v}.tar.gz",
            f"ransomeye-agent-windows-{v}.zip",
            f"ransomeye-dpi-{v}.tar.gz",
        ]
    )


def test_core_tarball_holds_no_edge_material(released: Repo, tmp_path: Path) -> None:
    root = _extract(_archives(released)["core"], tmp_path / "core")
    forbidden = {"ransomeye-agent", "ransomeye-loader", "ransomeye-sentinel", "ransomeye-dpi"}
    for p in root.rglob("*"):
        assert p.name != "edge", f"edge directory in the core tarball: {p}"
        assert "edge" not in p.relative_to(root).parts
        assert p.name.removesuffix(".exe") not in forbidden, f"agent or DPI binary in the core tarball: {p}"
    binaries = sorted(p.name for p in (root / f"ransomeye-core-{released.ws.version}" / "bin").iterdir())
    assert binaries == ["ransomeye-core", "ransomeye-ops", "ransomeye-tuner"]


def test_each_archive_holds_exactly_its_declaration(released: Repo) -> None:
    ws = released.ws
    for bundle in ws.bundles:
        members = _members(released.artifacts / bundle.archive_name(ws.version))
        assert members == sorted(members), "entries are sorted"
        assert members == _expected_members(ws, bundle), bundle.id


def test_archive_metadata_is_normalized(released: Repo) -> None:
    for bundle_id, path in _archives(released).items():
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    assert info.date_time == (2023, 11, 14, 22, 13, 20) and info.extra == b"", bundle_id
            continue
        raw = path.read_bytes()[:10]
        assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0", "gzip header: no name, no time"
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 1_700_000_000)
                expected = 0o755 if m.isdir() or "/bin/" in m.name else 0o644
                assert m.mode == expected, m.name


def test_linux_binaries_run(released: Repo, tmp_path: Path) -> None:
    ws = released.ws
    seen = []
    for bundle in ws.bundles:
        if bundle.is_windows:
            continue
        root = _extract(released.artifacts / bundle.archive_name(ws.version), tmp_path / bundle.id)
        for name in bundle.binaries:
            exe = root / bundle.stem(ws.version) / "bin" / name
            out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30, check=False)
            assert out.returncode == 0 and out.stdout.strip() == f"{name} {ws.version}"
            seen.append(name)
    assert len(seen) == 7


def test_core_serves_its_health_endpoint(released: Repo, tmp_path: Path) -> None:
    ws = released.ws
    root = _extract(_archives(released)["core"], tmp_path / "core")
    exe = root / ws.bundle("core").stem(ws.version) / "bin" / "ransomeye-core"
    proc = subprocess.Popen(
        [str(exe), "serve", "--bind", "127.0.0.1", "--port", "0", "--max-requests", "1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        assert f'"version":"{ws.version}"'.encode() in reply.replace(b" ", b"")
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_windows_binaries_are_pe_executables(released: Repo, tmp_path: Path) -> None:
    ws = released.ws
    bundle = ws.bundle("agent-windows")
    root = _extract(released.artifacts / bundle.archive_name(ws.version), tmp_path / "win")
    for name in bundle.binaries:
        exe = root / bundle.stem(ws.version) / "bin" / f"{name}.exe"
        head = exe.read_bytes()[:4096]
        assert head[:2] == b"MZ"
        pe = int.from_bytes(head[0x3C:0x40], "little")
        assert head[pe : pe + 6] == b"PE\0\0\x64\x86", "a PE32+ x86-64 executable"
        assert head[pe + 8 : pe + 12] == b"\0\0\0\0", "no timestamp in the PE header"
        if WINE is None:
            continue
        out = subprocess.run(
            [WINE, str(exe), "--version"], capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "WINEDEBUG": "-all", "WINEPREFIX": str(tmp_path / "wine")},
        )  # fmt: skip
        assert out.stdout.strip() == f"{name} {ws.version}", out.stderr[-500:]


@pytest.mark.skipif(MINISIGN is None, reason="minisign is installed by `make setup`")
def test_signatures_verify_with_stock_minisign(released: Repo, tmp_path: Path) -> None:
    assert MINISIGN is not None
    pub = released.keys / "release.minisign.pub"
    files = [*_archives(released).values(), released.artifacts / "SHA256SUMS"]
    for f in files:
        ok = subprocess.run([MINISIGN, "-V", "-p", str(pub), "-m", str(f)], capture_output=True, text=True)
        assert ok.returncode == 0, f"{f.name}: {ok.stderr}"
        assert f"file:{f.name}\tversion:{released.ws.version}" in ok.stdout
        flipped = tmp_path / f.name
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x80
        flipped.write_bytes(bytes(data))
        shutil.copy(f.parent / (f.name + ".minisig"), tmp_path / (f.name + ".minisig"))
        bad = subprocess.run([MINISIGN, "-V", "-p", str(pub), "-m", str(flipped)], capture_output=True, text=True)
        assert bad.returncode != 0, f"{f.name}: a flipped byte must fail"


def test_sha256sums_covers_every_artifact(released: Repo) -> None:
    sums = (released.artifacts / "SHA256SUMS").read_text()
    names = [line.split("  ", 1)[1] for line in sums.splitlines()]
    assert names == sorted(names)
    expected = sorted(
        p.name
        for p in released.artifacts.iterdir()
        if p.name.endswith((".tar.gz", ".zip", ".cdx.json", "gates-report.json", ".minisig", ".asc", ".sigstore.json"))
        and not p.name.startswith("SHA256SUMS")
    )
    assert names == expected
    assert len(names) == 26, "4 archives, 4 SBOMs, the gates report, their minisign signatures, 4 .asc, 4 bundles"
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=released.artifacts, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --- failures leave the release folder as it was -----------------------------


def _assert_nothing_published(repo: Repo) -> None:
    assert [p.name for p in repo.artifacts.iterdir()] == [".gitkeep"]


def test_gates_forced_to_fail_abort_the_release(repo_copy: Repo) -> None:
    (repo_copy.root / "governance" / "gates" / "check_gates.py").write_text("import sys\nsys.exit(1)\n")
    proc = repo_copy.build()
    assert proc.returncode != 0
    assert BANNER in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[2/8] build" not in proc.stdout, "the build exits at once"
    _assert_nothing_published(repo_copy)


def _step_processes(root: Path, step: str) -> list[int]:
    """The processes running ``step``'s sandboxed half (``step.py <step> --inner``) of the checkout ``root``."""
    script = str(root / "release" / "builder" / "step.py").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if script in argv and step.encode() in argv and b"--inner" in argv and entry.name.isdigit():
            found.append(int(entry.name))
    return found


def test_the_build_process_started_while_the_gates_run_does_nothing_when_they_fail(repo_copy: Repo) -> None:
    """The build step's sandbox starts while the gates run and waits for its input: gates that fail after it
    started leave the build undone (no cargo ran, nothing written to the target directory) and the process gone."""
    gates = repo_copy.root / "governance" / "gates" / "check_gates.py"
    gates.write_text("import sys, time\ntime.sleep(3)\nsys.exit(1)\n")
    target = repo_copy.root / "target"
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*")) if target.exists() else []
    repo_copy.commit()
    build = [sys.executable, str(repo_copy.root / "release" / "builder" / "build.py")]
    proc = subprocess.Popen(build, cwd=repo_copy.root, env=release_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(_step_processes(repo_copy.root, "build"))
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode != 0 and BANNER in out + err, out + err
    assert seen, "the build step's process was started while the gates ran"
    assert "] build" not in out, "the build step did not run"
    after = sorted(str(p.relative_to(target)) for p in target.rglob("*")) if target.exists() else []
    assert after == before, "nothing was built"
    assert not _step_processes(repo_copy.root, "build")
    assert list((repo_copy.root / "release" / ".staging").iterdir()) == []
    _assert_nothing_published(repo_copy)


def test_real_policy_violation_aborts_the_release(repo_copy: Repo) -> None:
    unit = repo_copy.root / "ops" / "services" / "core" / "ransomeye-core.service"
    text = unit.read_text()
    lines = [("MemoryMax=64G" if line.startswith("MemoryMax=") else line) for line in text.splitlines()]
    assert lines != text.splitlines(), "the unit declares MemoryMax"
    unit.write_text("\n".join(lines) + "\n")
    proc = repo_copy.build()
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert BANNER in out
    assert "MemoryMax" in out and "ransomeye-core.service" in out, "the reason is shown"
    _assert_nothing_published(repo_copy)


@pytest.mark.parametrize("step", STEPS)
def test_failure_at_each_step_leaves_the_release_unchanged(released: Repo, step: str) -> None:
    before = released.artifact_state()
    proc = released.build(env={"RANSOMEYE_FAILPOINT": step})
    assert proc.returncode == 9, proc.stdout + proc.stderr
    assert f"failure injected at {step}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert released.artifact_state() == before
    assert list((released.root / "release" / ".staging").iterdir()) == [], "staging is cleaned up"


def test_missing_toolchain_is_a_clear_error(released: Repo, tmp_path: Path) -> None:
    before = released.artifact_state()
    proc = released.build(env={"RANSOMEYE_TOOLCHAIN_PATH": str(tmp_path)})
    assert proc.returncode == 3
    assert "no Rust toolchain with the standard library for x86_64-unknown-linux-gnu" in proc.stderr
    assert "apt-get install" in proc.stderr and "Traceback" not in proc.stderr
    assert released.artifact_state() == before


def test_hostile_asset_fails_packaging_and_publishes_nothing(released: Repo) -> None:
    before = released.artifact_state()
    fifo = released.root / "ui" / "dist" / "pipe"
    os.mkfifo(fifo)
    try:
        proc = released.build(timeout=600)
    finally:
        fifo.unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ui/dist/pipe: is not a regular file" in proc.stderr, "the source check names the FIFO"
    assert "Traceback" not in proc.stderr
    assert released.artifact_state() == before


def _bin_root(released: Repo, dest: Path) -> Path:
    """A build step's products, taken from the released repository's cargo target dir."""
    for bundle in released.ws.bundles:
        built = released.root / "target" / bundle.target / "release"
        (dest / bundle.target).mkdir(parents=True, exist_ok=True)
        for f in bundle.binary_files():
            shutil.copy(built / f, dest / bundle.target / f)
    return dest


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda d: os.mkfifo(d / "pipe"), "ui/dist/pipe: is a FIFO"),
        (lambda d: os.symlink("../../edge/agent/Cargo.toml", d / "agent.toml"), "symlink leaves the packaged tree"),
        (lambda d: os.symlink("/etc/hostname", d / "host"), "symlink leaves the packaged tree"),
    ],
    ids=["fifo", "symlink-into-edge", "symlink-out-of-repo"],
)
def test_core_packager_refuses_hostile_assets(released: Repo, tmp_path: Path, plant: object, message: str) -> None:
    """The packager is its own line of defence, whatever the gates said."""
    bin_root = _bin_root(released, tmp_path / "bin")
    dist = released.root / "ui" / "dist"
    before = set(dist.iterdir())
    assert callable(plant)
    plant(dist)
    try:
        proc = subprocess.run(
            [sys.executable, str(released.root / "release" / "builder" / "packager_core.py"),
             "--bin-root", str(bin_root), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )  # fmt: skip
    finally:
        for p in set(dist.iterdir()) - before:
            p.unlink()
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "out").iterdir()) == [], "no partial archive"


def test_packagers_run_standalone(released: Repo, tmp_path: Path) -> None:
    bin_root = _bin_root(released, tmp_path / "bin")
    # The Windows packager packs the codesign step's signed binaries: the ones in the published zip.
    for bundle in released.ws.bundles:
        if "windows" in bundle.target:
            with zipfile.ZipFile(released.artifacts / bundle.archive_name(released.ws.version)) as z:
                for f in bundle.binary_files():
                    member = f"{bundle.stem(released.ws.version)}/bin/{f}"
                    (bin_root / bundle.target / f).write_bytes(z.read(member))
    out = tmp_path / "out"
    for script in ("packager_core.py", "packager_agent.py"):
        proc = subprocess.run(
            [sys.executable, str(released.root / "release" / "builder" / script),
             "--bin-root", str(bin_root), "--out", str(out)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    for name, archive in ((p.name, p) for p in out.iterdir()):
        assert archive.read_bytes() == (released.artifacts / name).read_bytes(), f"{name} is reproducible"


def test_bad_key_fails_before_anything_runs(released: Repo) -> None:
    before = released.artifact_state()
    key = released.keys / "release.pem"
    os.chmod(key, 0o644)
    try:
        proc = released.build()
    finally:
        os.chmod(key, 0o600)
    assert proc.returncode == 7
    assert "release.pem: the private key is readable by group or others" in proc.stderr
    assert "chmod 600" in proc.stderr
    assert released.artifact_state() == before
    # The gates had started (they read the source only, while the keys load): they end with the run.
    assert "[1/" not in proc.stdout, "no step is reported"
    assert _processes_running(released.root / "governance" / "gates" / "check_gates.py") == []
    assert list((released.root / "release" / ".staging").glob("run-*")) == [], "the staging folder is removed"


def _processes_running(script: Path) -> list[int]:
    """The processes whose command line names ``script``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or gone
        if proc.name.isdigit() and str(script).encode() in argv:
            found.append(int(proc.name))
    return found


def test_second_build_fails_fast_while_one_runs(released: Repo) -> None:
    before = released.artifact_state()
    lock = released.root / "release" / ".build.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"4242\n", 0)
        started = time.monotonic()
        proc = released.build()
        elapsed = time.monotonic() - started
    finally:
        os.close(fd)
    assert proc.returncode == 5
    assert "another release build is running (pid 4242)" in proc.stderr
    assert elapsed < 30, "fails fast"
    assert released.artifact_state() == before


def test_build_before_setup_says_which_command_to_run(repo_copy: Repo, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = subprocess.run(
        [str(bare / "bin" / "python"), str(repo_copy.root / "release" / "builder" / "build.py")],
        capture_output=True, text=True, check=False, cwd=repo_copy.root,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "make setup" in proc.stderr and "Traceback" not in proc.stderr
    _assert_nothing_published(repo_copy)


# --- reproducibility ---------------------------------------------------------


def test_two_clones_build_identical_releases(released: Repo, tmp_path: Path) -> None:
    """Another clone of the released commit, at another path, later, with another umask, gives the same bytes.

    The commit is the one the release's provenance names: the session's repository copy may have moved on
    since its release was built (other tests commit changes to it and build again), whatever order they run in.
    """
    from release.rebuild import release_commit

    other = Repo(tmp_path / "elsewhere" / "deeper" / "checkout")
    git(tmp_path, "clone", "-q", str(released.root), str(other.root))
    git(other.root, "checkout", "-q", release_commit(released.artifacts, released.ws.version))
    copy_keys(released.keys, other.keys)  # the same keys (not committed), so that every signature can be the same
    assert git(other.root, "status", "--porcelain").stdout == "", "the keys are not part of the commit"
    old = os.umask(0o077)
    try:
        proc = other.build(commit=False)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (other.artifacts / "SHA256SUMS").read_bytes() == (released.artifacts / "SHA256SUMS").read_bytes()
    # Every file SHA256SUMS lists is identical: archives, SBOMs, the gates report and all signatures.
    # The in-toto metadata is not: links and the provenance carry the run's times, and a development
    # root.layout is signed at build time with its own expiry (a committed layout is the same file).
    ours, theirs = other.artifact_state(), released.artifact_state()
    assert ours.keys() == theirs.keys()
    listed = [line.split("  ", 1)[1] for line in ours["SHA256SUMS"].decode().splitlines()]
    assert len(listed) == 26  # with every archive's OpenPGP signature and Sigstore bundle
    # And the signatures of the list: minisign, OpenPGP, signify's (its time is SOURCE_DATE_EPOCH, too).
    signed = [*listed, "SHA256SUMS.minisig", "SHA256SUMS.asc", "SHA256.sig"]
    assert {k: ours[k] for k in signed} == {k: theirs[k] for k in signed}


# --- the root layout -----------------------------------------------------------


def _create_layout(repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo.root / "layouts" / "create_layout.py"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_committed_layout_is_used_and_checked(released: Repo) -> None:
    layout = released.root / "layouts" / "root.layout"
    try:
        made = _create_layout(released, "--expires-days", "30")
        assert made.returncode == 0, made.stderr
        proc = released.build()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "layout layouts/root.layout" in proc.stdout
        assert (released.artifacts / "root.layout").read_bytes() == layout.read_bytes()
    finally:
        layout.unlink(missing_ok=True)


def test_expired_or_foreign_layout_is_refused(released: Repo, tmp_path: Path) -> None:
    from release import attest
    from release.keys import generate_key
    from release.signers import load_role_key

    before = released.artifact_state()
    layout = released.root / "layouts" / "root.layout"
    keys = released.keys
    ws = released.ws
    try:
        expired = attest.build_layout(ws, functionaries(keys), datetime_ago())
        attest.write_layout(attest.sign_layout(expired, load_role_key(keys, "owner")), layout)
        proc = released.build()
        assert proc.returncode == 1 and "the layout expired" in proc.stderr, proc.stderr
        other = generate_key(tmp_path / "other", "build")
        mine = functionaries(keys)
        builders = (attest.Builder(other.public_key(), mine.builders[0].package), *mine.builders[1:])
        foreign = attest.build_layout(ws, dataclasses.replace(mine, builders=builders), attest.expiry(30))
        attest.write_layout(attest.sign_layout(foreign, load_role_key(keys, "owner")), layout)
        proc = released.build()
        assert proc.returncode == 2 and "does not authorise" in proc.stderr, proc.stderr
        attest.write_layout(attest.sign_layout(foreign, load_role_key(keys, "build")), layout)
        proc = released.build()
        assert proc.returncode == 1 and "not signed by the owner key" in proc.stderr, proc.stderr
    finally:
        layout.unlink(missing_ok=True)
    assert released.artifact_state() == before


def datetime_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


def test_layout_expiry_is_capped(repo_copy: Repo) -> None:
    proc = _create_layout(repo_copy, "--expires-days", "400")
    assert proc.returncode == 2 and "between 1 and 365" in proc.stderr


def test_pipeline_never_publishes_a_release_that_does_not_verify(released: Repo) -> None:
    """A compromised packager slips edge/ material into the core archive: caught before publishing."""
    before = released.artifact_state()
    bundle_py = released.root / "release" / "bundle.py"
    honest = bundle_py.read_text()
    implant = honest.replace(
        "    written = write_archive(",
        "    if bundle.id == 'core':\n"
        "        implant = ws.root / 'edge' / 'agent' / 'Cargo.toml'\n"
        "        entries = [*entries, Entry(f'{bundle.stem(ws.version)}/edge/agent/Cargo.toml', implant)]\n"
        "    written = write_archive(",
    )
    implant = implant.replace(
        "    materials = {material_name(ws, bin_root, p): h for p, h in written.inputs.items()}",
        "    materials = {material_name(ws, bin_root, p): h for p, h in written.inputs.items()"
        " if 'edge' not in p.parts}",
    )
    assert implant != honest
    bundle_py.write_text(implant)
    try:
        proc = released.build()
    finally:
        bundle_py.write_text(honest)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the staged release does not verify" in proc.stderr
    implanted = "ransomeye-core-1.0.0/edge/agent/Cargo.toml is edge/ material, which the core bundle must never"
    assert implanted in proc.stderr
    assert released.artifact_state() == before
