"""Trust no single machine: one key per role, two builders that must agree, sandboxed steps.

The release made by ``build.py`` (the session's) is built twice: by this
checkout and by a second builder from a fresh clone of the commit, with its
own keys (``keys/builder-2/``). Each case below copies that release, does what
the holder of some keys could do, and runs the stock ``in-toto-verify`` as a
customer would: a link signed by another role's key, one builder's links
missing, one builder's archive different (by its own keys, or by a real build
of a changed source), must all be refused. The sandbox cases check what a
sandboxed step can reach, and that the opt-out is recorded and shown.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

from release import attest
from release.attest import StepRecord
from release.audit.checks import audit
from release.cargo import HOST_TARGET, find_toolchain
from release.keys import DEV_SECOND_BUILDER
from release.pipeline import Context, sandbox_command
from release.sandbox import find_sandbox
from release.signers import RoleKey, load_role_key
from tests.conftest import Repo, git, make_repo, release_env
from tests.forge import CORE, Download, reason, verify

pytestmark = pytest.mark.slow
OTHER = DEV_SECOND_BUILDER


@pytest.fixture
def case(released: Repo, tmp_path: Path) -> Download:
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    return Download(folder, released)


def _key(case: Download, role: str, builder: str | None = None) -> RoleKey:
    return load_role_key(case.repo.keys / builder if builder else case.repo.keys, role)


def _link_of(case: Download, step: str, key: RoleKey) -> Path:
    return case.folder / attest.link_filename(step, key.public)


def _record(path: Path) -> StepRecord:
    data = json.loads(path.read_text())["signed"]
    return StepRecord(
        name=data["name"],
        command=data["command"],
        materials={k: v["sha256"] for k, v in data["materials"].items()},
        products={k: v["sha256"] for k, v in data["products"].items()},
        byproducts={k: v for k, v in data["byproducts"].items() if k != "return-value"},
        environment=data["environment"],
    )


def _resign(case: Download, step: str, owner: RoleKey, signer: RoleKey) -> None:
    """``owner``'s link of ``step``, unchanged, signed instead by ``signer`` (a key of another role)."""
    path = _link_of(case, step, owner)
    record = _record(path)
    path.unlink()
    attest.write_link(record, signer, case.folder)


def test_the_release_has_both_builders_links(released: Repo) -> None:
    names = {p.name for p in released.artifacts.glob("*.link")}
    for step in (attest.STEP_BUILD, *(b.step for b in released.ws.bundles)):
        for folder in (released.keys, released.keys / OTHER):
            role = attest.step_role(step)
            assert attest.link_filename(step, load_role_key(folder, role).public) in names
    layout = json.loads((released.artifacts / attest.LAYOUT_NAME).read_text())["signed"]
    thresholds = {s["name"]: s["threshold"] for s in layout["steps"]}
    assert thresholds[attest.STEP_BUILD] == 2 and all(thresholds[b.step] == 2 for b in released.ws.bundles)
    assert {thresholds[s] for s in ("gates", "codesign", "provenance", "sign", "checksums")} == {1}
    keyids = [k for s in layout["steps"] for k in s["pubkeys"]]
    assert len(layout["keys"]) == 6, "gates, two builders' build and package keys, release: six keys"
    # Each key is authorised for its own steps only (the build key also writes the provenance).
    by_key: dict[str, set[str]] = {}
    for s in layout["steps"]:
        for k in s["pubkeys"]:
            by_key.setdefault(k, set()).add("package" if s["name"].startswith("package-") else s["name"])
    assert sorted(map(sorted, by_key.values())) == sorted(
        [["gates"], ["build", "provenance"], ["build"], ["package"], ["package"], ["checksums", "codesign", "sign"]]
    ), by_key
    assert len(set(keyids)) == 6


Forge = Callable[[Download], None]


def _gates_by_build_key(c: Download) -> None:
    _resign(c, "gates", _key(c, "gates"), _key(c, "build"))


def _build_by_package_key(c: Download) -> None:
    _resign(c, "build", _key(c, "build"), _key(c, "package"))


def _package_by_build_key(c: Download) -> None:
    _resign(c, "package-core", _key(c, "package"), _key(c, "build"))


def _package_by_gates_key(c: Download) -> None:
    _resign(c, "package-core", _key(c, "package", OTHER), _key(c, "gates"))


def _sign_by_package_key(c: Download) -> None:
    _resign(c, "sign", _key(c, "release"), _key(c, "package"))


def _provenance_by_second_builder(c: Download) -> None:
    _resign(c, "provenance", _key(c, "build"), _key(c, "build", OTHER))


def _second_builder_missing(c: Download) -> None:
    for step in ("build", *(b.step for b in c.repo.ws.bundles)):
        _link_of(c, step, _key(c, attest.step_role(step), OTHER)).unlink()


def _one_packaging_link_missing(c: Download) -> None:
    _link_of(c, "package-dpi", _key(c, "package", OTHER)).unlink()


def _both_links_by_one_builder(c: Download) -> None:
    """Builder 1 signs the second link too: two links of one key are one builder."""
    mine = _link_of(c, "package-core", _key(c, "package"))
    _link_of(c, "package-core", _key(c, "package", OTHER)).unlink()
    shutil.copy(mine, c.folder / f"package-core.{'0' * 8}.link")


def _first_builder_swaps_the_archive(c: Download) -> None:
    """Builder 1's keys and the release key: a different core archive, every signature it can make redone."""
    path = c.folder / CORE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    new = attest.link_filename("package-core", _key(c, "package").public)
    record = _record(c.folder / new)
    products = {**record.products, CORE: _sha(path)}
    (c.folder / new).unlink()
    attest.write_link(StepRecord(record.name, record.command, record.materials, products, record.byproducts,
                                 record.environment), _key(c, "package"), c.folder)  # fmt: skip
    c.resign_release()


def _second_builder_claims_another_archive(c: Download) -> None:
    """Builder 2's own keys: its packaging link records another core archive (what it built differs)."""
    path = _link_of(c, "package-core", _key(c, "package", OTHER))
    record = _record(path)
    path.unlink()
    products = {**record.products, CORE: "ab" * 32}
    attest.write_link(StepRecord(record.name, record.command, record.materials, products, record.byproducts,
                                 record.environment), _key(c, "package", OTHER), c.folder)  # fmt: skip


def _sha(path: Path) -> str:
    from release.archive import sha256_file

    return sha256_file(path)


CASES: list[tuple[str, Forge, str]] = [
    ("gates-link-signed-by-the-build-key", _gates_by_build_key, "gates"),
    ("build-link-signed-by-the-package-key", _build_by_package_key, "build"),
    ("packaging-link-signed-by-the-build-key", _package_by_build_key, "package-core"),
    ("packaging-link-signed-by-the-gates-key", _package_by_gates_key, "package-core"),
    ("sign-link-signed-by-the-package-key", _sign_by_package_key, "sign"),
    ("provenance-signed-by-the-second-builder", _provenance_by_second_builder, "provenance"),
    ("second-builder-links-missing", _second_builder_missing, "build"),
    ("one-packaging-link-of-the-second-builder-missing", _one_packaging_link_missing, "package-dpi"),
    ("both-links-by-one-builder", _both_links_by_one_builder, "package-core"),
    ("first-builder-and-release-key-swap-the-archive", _first_builder_swaps_the_archive, "package-core"),
    ("second-builder-claims-another-archive", _second_builder_claims_another_archive, "package-core"),
]


@pytest.mark.parametrize("forge, step", [(f, s) for _, f, s in CASES], ids=[n for n, _, _ in CASES])
def test_one_role_or_one_builder_cannot_publish(case: Download, forge: Forge, step: str) -> None:
    """The stock in-toto-verify refuses what one key of the wrong role, or one builder, signs alone."""
    assert verify(case.folder, case.repo.keys / "owner.pub").returncode == 0, "the honest copy verifies"
    forge(case)
    proc = verify(case.folder, case.repo.keys / "owner.pub")
    assert proc.returncode == 1, "in-toto-verify must refuse it"
    assert step in reason(proc), reason(proc)
    report = audit(case.folder, case.repo.keys / "owner.pub")
    assert not report.verified


def test_the_audit_names_the_missing_builder(case: Download) -> None:
    _second_builder_missing(case)
    report = audit(case.folder, case.repo.keys / "owner.pub")
    texts = [f.text() for f in report.findings]
    assert any("needs links from 2 builders" in t and "1 verify" in t for t in texts), texts


def test_a_second_builder_on_a_changed_source_is_refused(case: Download, tmp_path: Path) -> None:
    """A real second build from a source one byte different (a compromised builder's machine): refused."""
    clone = tmp_path / "builder-2-machine"
    git(tmp_path, "clone", "-q", str(case.repo.root), str(clone))
    main = clone / "core" / "src" / "main.rs"
    main.write_text(main.read_text().replace("fn main()", "// changed on builder 2\nfn main()", 1))
    git(clone, "commit", "-qam", "a change only builder 2 has")
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    for p in [case.folder / attest.GATES_REPORT, *case.folder.glob("gates.*.link")]:
        shutil.copy(p, work / "out" / p.name)
    proc = subprocess.run(
        [sys.executable, str(clone / "release" / "builder" / "step.py"), "build", "--work", str(work),
         "--keys-dir", str(case.repo.keys / OTHER), "--target-dir", str(tmp_path / "target")],
        cwd=clone, env=release_env(), capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Its build link (its packagers would wait for the codesign step's signed Windows binaries).
    theirs = [attest.link_filename("build", _key(case, attest.step_role("build"), OTHER).public)]
    for name in theirs:
        shutil.copy(work / "out" / name, case.folder / name)
    refused = verify(case.folder, case.repo.keys / "owner.pub")
    assert refused.returncode == 1 and "build" in reason(refused), reason(refused)


def test_a_sandboxed_step_reaches_no_key_no_network_and_cannot_write_the_source(
    repo_copy: Repo, tmp_path: Path
) -> None:
    """What the pipeline's sandbox command lets a step do, probed from inside by a hostile program."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: listener.accept(), daemon=True).start()
    outside_keys = tmp_path / "keys-elsewhere"
    shutil.copytree(repo_copy.keys, outside_keys)
    staging = repo_copy.root / "release" / ".staging" / "run-probe"
    output = staging / ".step-build"
    output.mkdir(parents=True)
    (tmp_path / "target").mkdir()
    toolchains = {HOST_TARGET: find_toolchain(repo_copy.ws, HOST_TARGET)}
    r = Context(repo_copy.ws, staging, tmp_path / "target", 1, MappingProxyType({}), MappingProxyType(toolchains),
                sandbox=find_sandbox(), hidden=(repo_copy.keys, outside_keys))  # fmt: skip
    command = sandbox_command(r, "build", output)
    probe = f"""
import os, socket, sys
root, out, keys, outside = sys.argv[1:5]
seen = {{}}
seen["keys"] = sorted(os.listdir(keys))
seen["outside-keys"] = os.path.exists(outside) and sorted(os.listdir(outside))
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3); seen["network"] = "connected"
except OSError as e:
    seen["network"] = type(e).__name__
for where in (root + "/Cargo.toml", root + "/planted"):
    try:
        open(where, "a").close(); seen[where] = "written"
    except OSError as e:
        seen[where] = e.errno
open(out + "/product", "w").write("ok")
seen["env"] = sorted(k for k in os.environ if "KEY" in k or "PASS" in k or k.startswith("SSH"))
seen["home"] = os.environ["HOME"]
print(repr(seen))
"""
    argv = [*command[: command.index("--") + 1], sys.executable, "-I", "-c", probe, str(repo_copy.root),
            str(output), str(repo_copy.keys), str(outside_keys)]  # fmt: skip
    env = {**os.environ, "RANSOMEYE_RELEASE_KEY_PASSPHRASE": "secret", "SSH_AUTH_SOCK": "/tmp/agent"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    listener.close()
    assert proc.returncode == 0, proc.stderr
    seen = eval(proc.stdout.strip(), {})  # noqa: S307 - the probe's own repr of plain values
    assert seen["keys"] == [], "the key folder inside the source is an empty tmpfs"
    assert seen["outside-keys"] is False, "a key folder elsewhere is not there at all"
    assert seen["network"] in ("OSError", "ConnectionRefusedError", "TimeoutError"), seen
    assert seen[f"{repo_copy.root}/Cargo.toml"] == 30 and seen[f"{repo_copy.root}/planted"] == 30  # EROFS
    assert seen["env"] == [] and seen["home"] == "/tmp/home"
    assert (output / "product").read_text() == "ok", "the output folder is writable"
    assert not (repo_copy.root / "planted").exists()


def test_the_release_records_its_sandbox(released: Repo) -> None:
    for step in ("build", *(b.step for b in released.ws.bundles)):
        for path in released.artifacts.glob(f"{step}.*.link"):
            box = json.loads(path.read_text())["signed"]["environment"]["sandbox"]
            assert box["tool"].startswith("bubblewrap") and box["network"].startswith("none"), box
    (prov,) = released.artifacts.glob("*.intoto.jsonl")
    statement = json.loads(__import__("base64").b64decode(json.loads(prov.read_text())["payload"]))
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["sandbox"]["build"]["tool"].startswith("bubblewrap")
    assert "unsandboxedSteps" not in statement["predicate"]["buildDefinition"]["externalParameters"]
    report = audit(released.artifacts, released.keys / "owner.pub")
    (check,) = [c for c in report.checks if c.name == "sandbox"]
    assert check.passed and "ran sandboxed (bubblewrap" in check.summary, check.summary


def test_an_unsandboxed_single_builder_release_says_so(tmp_path: Path) -> None:
    """--no-sandbox and --single-builder: a threshold-1 layout, UNSANDBOXED in the links, provenance and audit."""
    repo = make_repo(tmp_path / "ransomeye")
    proc = repo.build("--single-builder", "--no-sandbox")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "UNSANDBOXED" in proc.stdout and "1 builder(s)" in proc.stdout
    layout = json.loads((repo.artifacts / attest.LAYOUT_NAME).read_text())["signed"]
    assert {s["threshold"] for s in layout["steps"]} == {1}
    assert verify(repo.artifacts, repo.keys / "owner.pub").returncode == 0
    (prov,) = repo.artifacts.glob("*.intoto.jsonl")
    statement = json.loads(__import__("base64").b64decode(json.loads(prov.read_text())["payload"]))
    unsandboxed = statement["predicate"]["buildDefinition"]["externalParameters"]["unsandboxedSteps"]
    assert unsandboxed == sorted(["build", *(b.step for b in repo.ws.bundles)])
    report = audit(repo.artifacts, repo.keys / "owner.pub")
    (check,) = [c for c in report.checks if c.name == "sandbox"]
    assert report.verified and check.summary.startswith("UNSANDBOXED: build, package-"), check.summary


def _refused(repo: Repo, proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert repo.artifact_state() == {".gitkeep": b""}, "nothing was published"


def test_without_bubblewrap_the_release_says_how_to_install_it(repo_copy: Repo, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = repo_copy.build(env={"PATH": str(bare)})
    _refused(repo_copy, proc, 3, "bubblewrap", "make setup", "--no-sandbox")


def test_a_dirty_tree_or_no_git_is_refused_before_any_work(repo_copy: Repo) -> None:
    (repo_copy.root / "core" / "src" / "main.rs").write_text("// uncommitted\n", encoding="utf-8")
    _refused(repo_copy, repo_copy.build(commit=False), 2, "core/src/main.rs", "commit", "--single-builder")
    shutil.rmtree(repo_copy.root / ".git")
    _refused(repo_copy, repo_copy.build(commit=False), 2, "not a git checkout", "--single-builder")


def test_a_second_builder_without_its_private_keys_is_refused(repo_copy: Repo) -> None:
    for pem in (repo_copy.keys / OTHER).glob("*.pem"):
        pem.unlink()
    _refused(repo_copy, repo_copy.build(), 2, f"{OTHER}", "build.pem", "its own machine", "--single-builder")
