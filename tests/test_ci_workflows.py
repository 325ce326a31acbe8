"""The CI workflows (.github/workflows/release.yml, .gitlab-ci.yml): valid, the same jobs, and run here.

Both files are validated offline against their published schemas (the ones
check-jsonschema vendors), run in a network namespace with nothing in it and
a read-only file system, and a broken copy of each must fail, so the
validator is known to bite. Both must describe the jobs of :data:`JOBS`: the
same step commands, hand-offs, runners and secrets. Then those jobs run
here, each in its own fresh clone of a committed repository copy, holding
only its own private keys and receiving only the files its CI job
downloads; the assembled release must pass the pipeline's verify step and
the stock ``in-toto-verify``, and the hostile hand-offs must not.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from release import attest
from release.attest import StepRecord
from release.keys import load_public_key
from release.products import load_workspace
from release.signers import load_role_key
from tests.conftest import ROOT, make_repo, release_env

GITHUB = ROOT / ".github" / "workflows" / "release.yml"
GITHUB_REPOSITORY = ROOT / ".github" / "workflows" / "repository.yml"  # the TUF repository's jobs
GITLAB = ROOT / ".gitlab-ci.yml"
BIN = Path(sys.executable).parent
STEP = "release/builder/step.py"

# --- the jobs both files must describe, and the local run follows ------------------------------

# What each job runs, in order: (step.py's STEP, its --keys-dir); every command works in `--work work`.
JOBS: dict[str, tuple[tuple[str, str], ...]] = {
    "gates": (("gates", "keys"),),
    "build-1": (("build", "keys"),),
    "build-2": (("build", "keys/builder-2"),),
    "codesign": (("codesign", "keys"),),
    "package-1": (("packagers", "keys"), ("provenance", "keys")),
    "package-2": (("packagers", "keys/builder-2"),),
    "sign": (("sign", "keys"), ("checksums", "keys"), ("layout", "keys"), ("verify", "keys")),
}
# The artifacts: name -> (the job that uploads it, its paths under work/). A path ending in "/" is a
# whole folder; any other is the files of its folder that match it.
ARTIFACTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gates": ("gates", ("out/gates-report.json", "out/gates.*.link")),
    "build-1": ("build-1", ("out/build.*.link",)),
    "build-1-binaries": ("build-1", ("bin/",)),
    "build-2": ("build-2", ("out/build.*.link",)),
    "build-2-binaries": ("build-2", ("bin/",)),
    "codesign": ("codesign", ("out/codesign.*.link",)),
    "codesign-binaries": ("codesign", ("signed/",)),
    "package-1": ("package-1", ("out/package-*.link", "out/provenance.*.link", "out/*.tar.gz", "out/*.zip",
                                "out/*.cdx.json", "out/*.intoto.jsonl")),
    "package-2": ("package-2", ("out/package-*.link",)),
    "ransomeye-release": ("sign", ("out/",)),
}  # fmt: skip
# The artifacts each job downloads, in order (GitHub). A GitLab job receives the whole artifact of each job these
# come from (one per job): more files, the same bytes (codesign refuses builders whose binaries differ).
RECEIVES: dict[str, tuple[str, ...]] = {
    "gates": (),
    "build-1": ("gates",),
    "build-2": ("gates",),
    "codesign": ("gates", "build-1", "build-2", "build-1-binaries"),
    "package-1": ("gates", "build-1", "build-1-binaries", "codesign", "codesign-binaries"),
    "package-2": ("gates", "build-2", "build-2-binaries", "codesign", "codesign-binaries"),
    "sign": ("gates", "build-1", "build-2", "codesign", "package-1", "package-2"),
}
# The private keys each job holds: its secret (GitHub secret, GitLab File variable) -> the file it writes.
KEYS: dict[str, dict[str, str]] = {
    "gates": {"RANSOMEYE_GATES_KEY": "keys/gates.pem"},
    "build-1": {"RANSOMEYE_BUILD_KEY": "keys/build.pem"},
    "build-2": {"RANSOMEYE_BUILDER2_BUILD_KEY": "keys/builder-2/build.pem"},
    "codesign": {
        "RANSOMEYE_CODESIGN_KEY": "keys/codesign.key",
        "RANSOMEYE_CODESIGN_CERT": "keys/codesign.crt",
        "RANSOMEYE_CODESIGN_CA": "keys/codesign-ca.pem",
        "RANSOMEYE_RELEASE_KEY": "keys/release.pem",
    },
    # The provenance is signed by builder 1's build key.
    "package-1": {"RANSOMEYE_PACKAGE_KEY": "keys/package.pem", "RANSOMEYE_BUILD_KEY": "keys/build.pem"},
    "package-2": {"RANSOMEYE_BUILDER2_PACKAGE_KEY": "keys/builder-2/package.pem"},
    "sign": {"RANSOMEYE_RELEASE_KEY": "keys/release.pem"},
}
# Each job's environment (the secrets it may read): a builder's two jobs share theirs; codesign has its own.
ENVIRONMENTS: dict[str, str] = {
    "gates": "release-gates",
    "build-1": "release-builder-1",
    "build-2": "release-builder-2",
    "codesign": "release-codesign",
    "package-1": "release-builder-1",
    "package-2": "release-builder-2",
    "sign": "release-signing",
}
BUILDERS = (("build-1", "package-1"), ("build-2", "package-2"))
SIGNER = ("codesign", "sign")


def hands_on(job: str) -> tuple[str, ...]:
    """Every path ``job`` uploads, in :data:`ARTIFACTS` order (a GitLab job's one artifact)."""
    return tuple(path for owner, paths in ARTIFACTS.values() if owner == job for path in paths)


def senders(job: str) -> frozenset[str]:
    """The jobs whose artifacts ``job`` downloads."""
    return frozenset(ARTIFACTS[a][0] for a in RECEIVES[job])


def artifact_root(paths: tuple[str, ...]) -> str:
    """The folder upload-artifact makes an artifact of ``paths`` relative to (download-artifact's ``path``).

    Each path's search path is its components up to the first with a
    wildcard; the root is the search paths' least common ancestor, or for a
    lone file, its folder.
    """
    searches = []
    for path in paths:
        parts = path.rstrip("/").split("/")
        searches.append("/".join(parts[: next((i for i, s in enumerate(parts) if re.search(r"[*?[]", s)), len(parts))]))
    if len(paths) == 1 and searches[0] == paths[0]:
        return os.path.dirname(paths[0])
    return os.path.commonpath(searches)


# --- schema validation, offline -----------------------------------------------------------------


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Validate ``path`` with check-jsonschema's vendored ``schema``, with no network and nothing writable.

    The vendored schemas are files of the installed package; ``bwrap
    --unshare-net`` gives the validator an empty network namespace, so a
    schema or ``$ref`` fetched from the network would fail the test instead
    of passing silently (check-jsonschema's ``--no-cache`` means the
    opposite: always download remote schemas, so it is not used).
    """
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is missing: run `make setup`"
    transform = ["--data-transform", "gitlab-ci"] if schema == "vendor.gitlab-ci" else []
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--",
           str(BIN / "check-jsonschema"), "--builtin-schema", schema, *transform, str(path)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


SCHEMAS = [
    ("vendor.github-workflows", GITHUB),
    ("custom.github-workflows-require-timeout", GITHUB),
    ("vendor.github-workflows", GITHUB_REPOSITORY),
    ("custom.github-workflows-require-timeout", GITHUB_REPOSITORY),
    ("vendor.gitlab-ci", GITLAB),
]


@pytest.mark.parametrize(("schema", "path"), SCHEMAS, ids=[f"{s}-{p.stem}" for s, p in SCHEMAS])
def test_workflow_files_validate_offline(schema: str, path: Path) -> None:
    proc = check_jsonschema(schema, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


def _load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


# A broken copy per case: (schema, file, what is broken, how).
BROKEN: list[tuple[str, Path, str, Callable[[Any], None]]] = [
    ("vendor.github-workflows", GITHUB, "needs is a number",
     lambda d: d["jobs"]["sign"].__setitem__("needs", 42)),
    ("vendor.github-workflows", GITHUB, "unknown job key runs_on",
     lambda d: d["jobs"]["build-2"].__setitem__("runs_on", d["jobs"]["build-2"].pop("runs-on"))),
    ("vendor.github-workflows", GITHUB, "a step both runs and uses",
     lambda d: d["jobs"]["gates"]["steps"][0].__setitem__("run", "true")),
    ("custom.github-workflows-require-timeout", GITHUB, "a job without timeout",
     lambda d: d["jobs"]["codesign"].pop("timeout-minutes")),
    ("vendor.gitlab-ci", GITLAB, "needs is a string",
     lambda d: d["sign"].__setitem__("needs", "package-1")),
    ("vendor.gitlab-ci", GITLAB, "unknown job key tag",
     lambda d: d["package-2"].__setitem__("tag", d["package-2"].pop("tags"))),
    ("vendor.gitlab-ci", GITLAB, "artifacts paths is a string",
     lambda d: d["codesign"]["artifacts"].__setitem__("paths", "work/signed/")),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "path", "case", "breaks"), BROKEN, ids=[c for _, _, c, _ in BROKEN])
def test_broken_copy_fails_validation(
    schema: str, path: Path, case: str, breaks: Callable[[Any], None], tmp_path: Path
) -> None:
    data = _load(path)
    breaks(data)
    broken = tmp_path / path.name
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with broken.open("w") as f:
        yaml.dump(data, f)
    proc = check_jsonschema(schema, broken)
    assert proc.returncode == 1, f"{case}: the validator accepted a broken file\n{proc.stdout}{proc.stderr}"
    assert "Schema validation errors were encountered" in proc.stdout


# --- what each file describes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One CI job as a file describes it."""

    commands: tuple[tuple[str, str], ...]  # (STEP, --keys-dir) of each step.py command, in order
    needs: frozenset[str]
    receives: tuple[str, ...]  # GitHub: the artifacts it downloads, in order; GitLab: the jobs whose artifacts it takes
    hands_on: dict[str, tuple[str, ...]]  # artifact name -> its paths under work/ (GitLab: one, named after the job)
    runner: frozenset[str]  # runs-on labels, or GitLab runner tags
    environment: str
    secrets: frozenset[str]  # the RANSOMEYE_* secrets or variables it references
    key_writes: tuple[str, ...]  # the commands that write a key file
    text: str  # everything the job says, for the searches below


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _commands(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Each step.py command in ``lines``, which must be exactly ``python3 STEP X --work work --keys-dir K``."""
    found = []
    for line in (x for text in lines for x in text.splitlines()):
        if STEP not in line:
            continue
        argv = shlex.split(line)
        assert argv[:2] == ["python3", STEP] and argv[3:6] == ["--work", "work", "--keys-dir"] and len(argv) == 7, (
            f"not the step command form: {line!r}"
        )
        found.append((argv[2], argv[6]))
    return tuple(found)


KEY_FILE = re.compile(r"keys/(builder-2/)?[\w-]+\.(pem|key|crt)\b")


def _key_writes(scripts: list[str]) -> tuple[str, ...]:
    """The scripts (a run block, a script entry) that write a private key file (or its certificates)."""
    return tuple(s for s in scripts if KEY_FILE.search(s) and not s.startswith("rm -f"))


def _under_work(paths: list[str], job: str) -> tuple[str, ...]:
    assert all(p.startswith("work/") for p in paths), f"{job}: hands on files outside work/: {paths}"
    return tuple(p.removeprefix("work/") for p in paths)


def github_jobs(path: Path = GITHUB) -> dict[str, Job]:
    data = _load(path)
    jobs = {}
    roots = {}  # artifact -> where its upload roots it (under work/)
    for name, job in data["jobs"].items():
        steps = job["steps"]
        runs = [s["run"] for s in steps if "run" in s]
        uses = [(s["uses"].split("@")[0], s.get("with", {})) for s in steps if "uses" in s]
        downloads = [w for action, w in uses if action == "actions/download-artifact"]
        uploads = {w["name"]: _under_work(w["path"].split(), name) for action, w in uses
                   if action == "actions/upload-artifact"}  # fmt: skip
        assert uploads, f"{name}: hands nothing on"
        assert all(a == name or a.startswith(f"{name}-") or a == "ransomeye-release" for a in uploads), (
            f"{name}: its artifacts are named after it: {sorted(uploads)}"
        )
        roots.update({a: artifact_root(paths) for a, paths in uploads.items()})
        text = "\n".join(_strings(job))
        jobs[name] = Job(
            commands=_commands(runs),
            needs=frozenset([job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])),
            receives=tuple(w["name"] for w in downloads),
            hands_on=uploads,
            runner=frozenset(job["runs-on"]),
            environment=job["environment"],
            secrets=frozenset(re.findall(r"secrets\.(\w+)", text)),
            key_writes=_key_writes(runs),
            text=text,
        )
        # A secret goes through a step's env, never into a script's text (where it would be interpolated).
        assert not any("secrets." in r for r in runs), f"{name}: a secret interpolated into a script"
    # Each download lands where its files were under work/ in the job that uploaded them.
    for name, job in data["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/download-artifact@"):
                artifact, where = step["with"]["name"], step["with"]["path"]
                assert where == f"work/{roots[artifact]}", f"{name}: {artifact} downloaded to {where}"
    outside = "\n".join(_strings({k: v for k, v in data.items() if k != "jobs"}))
    assert "secrets." not in outside and not KEY_FILE.search(outside), "a key or secret outside the job that holds it"
    return jobs


def gitlab_jobs(path: Path = GITLAB) -> dict[str, Job]:
    data = _load(path)
    reserved = {"workflow", "stages", "variables", "default", "include"}
    jobs = {}
    for name, job in data.items():
        if name in reserved or name.startswith("."):
            continue
        needs = [n if isinstance(n, str) else n["job"] for n in job.get("needs", [])]
        receives = [n["job"] for n in job.get("needs", []) if isinstance(n, Mapping) and n.get("artifacts")]
        text = "\n".join(_strings(job))
        jobs[name] = Job(
            commands=_commands(job["script"]),
            needs=frozenset(needs),
            receives=tuple(receives),
            hands_on={name: _under_work(job["artifacts"]["paths"], name)},
            runner=frozenset(job["tags"]),
            environment=job["environment"]["name"],
            secrets=frozenset(re.findall(r"\$\{?(RANSOMEYE_\w+)", text)),
            key_writes=_key_writes(job["script"]),
            text=text,
        )
    outside = "\n".join(_strings({k: v for k, v in data.items() if k in reserved}))
    assert "RANSOMEYE_" not in outside and not KEY_FILE.search(outside.replace(REMOVE_KEYS, "")), (
        "a key or secret outside the job that holds it"
    )
    return jobs


FILES = [("github", github_jobs), ("gitlab", gitlab_jobs)]


def test_artifact_root_is_upload_artifacts() -> None:
    assert artifact_root(("out/gates-report.json", "out/gates.*.link")) == "out"
    assert artifact_root(("out/build.*.link",)) == "out"
    assert artifact_root(("out/gates-report.json",)) == "out"
    assert artifact_root(("bin/",)) == "bin"
    assert artifact_root(("out/build.*.link", "bin/")) == ""


@pytest.mark.parametrize(("engine", "read"), FILES, ids=[e for e, _ in FILES])
def test_workflow_runs_the_jobs_the_test_runs(engine: str, read: Callable[[], dict[str, Job]]) -> None:
    jobs = read()
    assert list(jobs) == list(JOBS)
    for name, job in jobs.items():
        assert job.commands == JOBS[name], f"{engine} {name}: runs {job.commands}"
        if engine == "github":
            assert job.receives == RECEIVES[name], f"{engine} {name}: receives {job.receives}"
            mine = {a: paths for a, (owner, paths) in ARTIFACTS.items() if owner == name}
            assert job.hands_on == mine, f"{engine} {name}: hands on {job.hands_on}"
        else:
            assert set(job.receives) == senders(name) and len(set(job.receives)) == len(job.receives), (
                f"{engine} {name}: receives from {job.receives}"
            )
            assert job.hands_on == {name: hands_on(name)}, f"{engine} {name}: hands on {job.hands_on}"
        # It waits for the jobs it receives from, and for no other.
        assert job.needs == senders(name), f"{engine} {name}: needs {sorted(job.needs)}"
        assert job.environment == ENVIRONMENTS[name], f"{engine} {name}: environment {job.environment}"
    # A builder's jobs on its runners; the builders apart; the signer's jobs on neither builder's runners.
    (b1, p1), (b2, p2) = ((jobs[b], jobs[p]) for b, p in BUILDERS)
    assert b1.runner == p1.runner and b2.runner == p2.runner
    assert b1.runner - b2.runner and b2.runner - b1.runner, "the builders could share a runner"
    for name in SIGNER:
        assert jobs[name].runner - b1.runner - b2.runner, f"{name} could run on a builder's runner"
    # Two jobs share an environment (and so its secrets) only when they are one builder's.
    sharing = {frozenset(n for n, j in jobs.items() if j.environment == e) for e in ENVIRONMENTS.values()}
    assert sharing == {frozenset(b) for b in BUILDERS} | {frozenset([n]) for n in ("gates", *SIGNER)}


@pytest.mark.parametrize(("engine", "read"), FILES, ids=[e for e, _ in FILES])
def test_each_key_is_referenced_by_its_jobs_only(engine: str, read: Callable[[], dict[str, Job]]) -> None:
    jobs = read()
    for name, job in jobs.items():
        held = set(KEYS[name])
        # GitHub maps each passphrase secret explicitly; GitLab's are environment-scoped variables.
        allowed = held | {f"{s}_PASSPHRASE" for s in held} if engine == "github" else held
        assert held <= job.secrets <= allowed, f"{engine} {name}: references {sorted(job.secrets)}"
        for secret, path in KEYS[name].items():
            holders = {n for n, keys in KEYS.items() if keys.get(secret) == path}
            others = [n for n, j in jobs.items() if n not in holders and (secret in j.secrets or path in j.text)]
            assert not others, f"{engine}: {secret} ({path}) is referenced by {others} too"
            assert any(path in w for w in job.key_writes), f"{engine} {name}: never writes {path}"
        # Written with mode 0600 from the start, never printed.
        for write in job.key_writes:
            assert write.lstrip("(").startswith("umask 077") and "echo" not in write, write
        assert "set -x" not in job.text


REMOVE_KEYS = "rm -f keys/*.pem keys/*.key keys/*.crt keys/builder-*/*.pem"


def test_every_job_removes_the_keys_whatever_the_outcome() -> None:
    for name, job in _load(GITHUB)["jobs"].items():
        assert {"name": "Remove the keys", "if": "always()", "run": REMOVE_KEYS} in job["steps"], name
    gitlab = _load(GITLAB)
    assert gitlab["default"]["after_script"] == [REMOVE_KEYS]  # runs after the script, failed or not
    assert not any("after_script" in job for name, job in gitlab.items() if name in JOBS)


def test_github_actions_are_pinned_by_commit() -> None:
    uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", GITHUB.read_text(), re.MULTILINE)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"actions/[\w-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r" # v\d+(\.\d+)*", comment), f"{action}: no version comment"


# --- the same jobs, run here ------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``root``: its mode and its content's SHA-256 (a symlink's target, a folder's nothing)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        what = os.readlink(p) if p.is_symlink() else _sha(p) if p.is_file() else ""
        out[str(p.relative_to(root))] = (st.st_mode, what)
    return out


def git(*args: str, cwd: Path) -> str:
    env = {**release_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def step(checkout: Path, name: str, keys_dir: str, work: str = "work") -> subprocess.CompletedProcess[str]:
    """``python3 release/builder/step.py NAME --work WORK --keys-dir KEYS`` in ``checkout``, as a CI job runs it."""
    return subprocess.run(
        [sys.executable, STEP, name, "--work", work, "--keys-dir", keys_dir],
        cwd=checkout, env=release_env({"PYTHONDONTWRITEBYTECODE": "1"}), capture_output=True, text=True,
        timeout=1200, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def in_toto_verify(folder: Path, owner_pub: Path) -> subprocess.CompletedProcess[str]:
    """The customer's stock verification, in ``folder``."""
    return subprocess.run(
        [str(BIN / "in-toto-verify"), "--layout", "root.layout", "--verification-keys", str(owner_pub)],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def matching(work: Path, paths: tuple[str, ...]) -> list[str]:
    """The files under ``work`` an artifact of ``paths`` takes, relative to ``work``."""
    found: set[str] = set()
    for path in paths:
        if path.endswith("/"):
            found |= {p.relative_to(work).as_posix() for p in (work / path).rglob("*") if p.is_file()}
            continue
        folder, pattern = os.path.split(path)
        found |= {
            f"{folder}/{p.name}" for p in (work / folder).iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern)
        }
    return sorted(found)


def hand_over(source: Path, dest: Path, paths: tuple[str, ...]) -> list[str]:
    """Copy the files of the work folder ``source`` an artifact of ``paths`` takes to the same place under ``dest``,
    as an artifact upload and download do (contents only: no mode, and an empty artifact is an error)."""
    names = matching(source, paths)
    assert names, f"no files for the artifact {paths} in {source}"
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, dest / name)
    return names


def receive(run_checkouts: Mapping[str, Path], job: str, dest: Path, replace: Mapping[str, Path] | None = None) -> None:
    """Download ``job``'s artifacts into the work folder ``dest``, each from the work folder of the job that made it
    (or from ``replace[artifact]``)."""
    for artifact in RECEIVES[job]:
        sender, paths = ARTIFACTS[artifact]
        hand_over((replace or {}).get(artifact) or run_checkouts[sender] / "work", dest, paths)


@dataclass(frozen=True)
class CiRun:
    """The jobs of :data:`JOBS`, run each in its own clone: ``checkouts[job]/work`` is its work folder."""

    base: Path
    origin: Path  # the repository (a committed copy of this one) every job clones
    vault: Path  # every private key, as the CI secrets hold them
    checkouts: Mapping[str, Path]
    procs: Mapping[str, tuple[subprocess.CompletedProcess[str], ...]]
    before: Mapping[str, dict[str, tuple[int, str]]]

    @property
    def owner_pub(self) -> Path:
        return self.origin / "keys" / "owner.pub"

    def job_checkout(self, name: str, modify: Callable[[Path], None] | None = None) -> Path:
        """A fresh clone for a job (with ``modify`` committed first), holding only that job's private keys."""
        checkout = self.base / name
        git("clone", "--quiet", "--no-hardlinks", str(self.origin), str(checkout), cwd=self.base)
        if modify is not None:
            modify(checkout)
            git("commit", "--quiet", "-am", "changed", cwd=checkout)
        assert not _key_files(checkout), "the repository holds a private key"
        for path in KEYS.get(name.split("--")[0], {}).values():
            (checkout / path).write_bytes((self.vault / path.removeprefix("keys/")).read_bytes())
            (checkout / path).chmod(0o600)
        return checkout


def _key_files(checkout: Path) -> list[Path]:
    """What ``rm -f keys/*.pem keys/*.key keys/*.crt keys/builder-*/*.pem`` removes (and the same anywhere else)."""
    return [p for p in checkout.rglob("*") if p.suffix in (".pem", ".key", ".crt") and "target" not in p.parts]


def _remove_keys(checkout: Path) -> None:
    """What each job does when it ends: ``rm -f keys/*.pem keys/*.key keys/*.crt keys/builder-*/*.pem``."""
    for pattern in ("keys/*.pem", "keys/*.key", "keys/*.crt", "keys/builder-*/*.pem"):
        for p in checkout.glob(pattern):
            p.unlink()


def run_job(checkout: Path, name: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    """Run job ``name``'s step commands in ``checkout`` (stopping at the first that fails), then remove its keys."""
    done = []
    try:
        for command, keys_dir in JOBS[name]:
            done.append(step(checkout, command, keys_dir))
            if done[-1].returncode != 0:
                break
    finally:
        _remove_keys(checkout)
    return tuple(done)


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> CiRun:
    """The repository as CI sees it, then the jobs of :data:`JOBS`, each in its own clone.

    The repository copy commits what production commits: the public keys
    and the owner's root layout (signed here, as offline). The private keys
    stay in the vault; each job's clone receives only its own, and its work
    folder only the artifacts it downloads.
    """
    base = tmp_path_factory.mktemp("ci")
    origin = make_repo(base / "origin").root
    vault = base / "vault"
    shutil.copytree(origin / "keys", vault)
    for p in sorted(origin.joinpath("keys").rglob("*"), reverse=True):
        if p.is_file() and p.suffix != ".pub" and p.name not in (".gitignore", "README.md"):
            p.unlink()
    layout = subprocess.run([sys.executable, "layouts/create_layout.py", "--keys-dir", str(vault)], cwd=origin,
                            env=release_env(), capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert layout.returncode == 0, layout.stderr
    git("init", "--quiet", cwd=origin)
    git("add", "-A", cwd=origin)
    git("add", "-f", *(str(p.relative_to(origin)) for p in origin.joinpath("keys").rglob("*.pub")), cwd=origin)
    git("commit", "--quiet", "-m", "release", cwd=origin)
    run = CiRun(base, origin, vault, {}, {}, {"origin": snapshot(origin), "vault": snapshot(vault)})
    checkouts: dict[str, Path] = {}
    procs: dict[str, tuple[subprocess.CompletedProcess[str], ...]] = {}
    for name in JOBS:
        checkout = checkouts[name] = run.job_checkout(name)
        receive(checkouts, name, checkout / "work")
        procs[name] = run_job(checkout, name)
        last = procs[name][-1]
        assert len(procs[name]) == len(JOBS[name]) and last.returncode == 0, (
            f"{name}: {last.args[2:4]} exited {last.returncode}\n{last.stdout}{last.stderr}"
        )
    return CiRun(base, origin, vault, checkouts, procs, run.before)


def _link(out: Path, step_name: str, public_dir: Path) -> dict[str, Any]:
    """The ``signed`` part of ``step_name``'s link in ``out`` by the key whose public half is in ``public_dir``."""
    public = load_public_key(public_dir / f"{attest.step_role(step_name)}.pub")
    signed: dict[str, Any] = json.loads((out / attest.link_filename(step_name, public)).read_text())["signed"]
    return signed


def test_jobs_apart_make_a_release_that_verifies(ci: CiRun) -> None:
    sign = ci.checkouts["sign"]
    verify = ci.procs["sign"][-1]
    assert "audit passed: in-toto-verify" in verify.stdout
    assert "layout layouts/root.layout" in ci.procs["sign"][-2].stdout  # the owner's, committed: no owner key here
    # The customer: the release folder's regular files, the owner's public key, the stock verifier.
    customer = ci.base / "customer"
    hand_over(sign / "work", customer, ARTIFACTS["ransomeye-release"][1])
    proc = in_toto_verify(customer / "out", ci.owner_pub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every builder step's link from each builder, the build and packaging ones made in the sandbox.
    out = sign / "work" / "out"
    bundles = [b.step for b in load_workspace(ci.origin).bundles]
    for folder in (ci.vault, ci.vault / "builder-2"):
        for s in ("build", *bundles):
            assert _link(out, s, folder)["environment"]["sandbox"]["tool"].startswith("bubblewrap"), s
    # The Windows binaries were signed once, by the release key's codesign link, and both builders packed those.
    signed = {k: v["sha256"] for k, v in _link(out, attest.STEP_CODESIGN, ci.vault)["products"].items()}
    assert signed and all(k.endswith(".exe") for k in signed), signed
    for folder in (ci.vault, ci.vault / "builder-2"):
        packed = {}
        for s in bundles:
            materials = _link(out, s, folder)["materials"]
            packed.update({k: v["sha256"] for k, v in materials.items() if k in signed})
        assert packed == signed, f"{folder.name}: packed {packed}"


def test_each_job_wrote_only_in_its_own_folder(ci: CiRun) -> None:
    assert snapshot(ci.origin) == ci.before["origin"]
    assert snapshot(ci.vault) == ci.before["vault"]
    jobs = {"origin", "vault", "customer", *JOBS}
    assert all(p.name.split("--")[0] in jobs for p in ci.base.iterdir()), sorted(p.name for p in ci.base.iterdir())
    for name, checkout in ci.checkouts.items():
        changed = git("status", "--porcelain", "--untracked-files=all", cwd=checkout).splitlines()
        assert all(line.startswith("?? work/") for line in changed), f"{name}: {changed[:5]}"
        assert not _key_files(checkout), f"{name}: a key outlived the job"


# A hostile case changes the release folder the signing job assembled (``out``); it may ask for fixtures.
Tamper = Callable[[CiRun, Path, pytest.FixtureRequest], None]


def _resign_with(key_role: str, step_name: str) -> Tamper:
    """Builder 1's link of ``step_name`` re-signed with builder 1's ``key_role`` key (its original removed)."""

    def tamper(ci: CiRun, out: Path, request: pytest.FixtureRequest) -> None:
        key = load_role_key(ci.vault, attest.step_role(step_name))
        (link,) = out.glob(attest.link_filename(step_name, key.public))
        signed = json.loads(link.read_text())["signed"]
        record = StepRecord(
            name=signed["name"],
            command=signed["command"],
            materials={k: v["sha256"] for k, v in signed["materials"].items()},
            products={k: v["sha256"] for k, v in signed["products"].items()},
            byproducts=signed["byproducts"],
            environment=signed["environment"],
        )
        link.unlink()
        attest.write_link(record, load_role_key(ci.vault, key_role), out)

    return tamper


def _handed_on(work: Path, artifact: str) -> list[Path]:
    """The files of the work folder ``work`` that ``artifact`` takes, relative to its ``out/``."""
    return [Path(n).relative_to("out") for n in matching(work, ARTIFACTS[artifact][1])]


def _without_builder_2(ci: CiRun, out: Path, request: pytest.FixtureRequest | None = None) -> None:
    for artifact in ("build-2", "package-2"):
        for name in _handed_on(ci.checkouts[ARTIFACTS[artifact][0]] / "work", artifact):
            (out / name).unlink()


def _builder_2_from_other_source(ci: CiRun, out: Path, request: pytest.FixtureRequest) -> None:
    for name in _handed_on(ci.checkouts["build-2"] / "work", "build-2"):
        (out / name).unlink()
    hand_over(request.getfixturevalue("other_source"), out.parent, ARTIFACTS["build-2"][1])


@pytest.fixture(scope="module")
def other_source(ci: CiRun) -> Path:
    """Builder 2's build job run on a commit with one byte of core/src/main.rs changed: its work folder."""

    def change(checkout: Path) -> None:
        main = checkout / "core" / "src" / "main.rs"
        main.write_text(main.read_text().replace("GET /health answers 200", "GET /health answers 202", 1))

    checkout = ci.job_checkout("build-2--other-source", change)
    receive(ci.checkouts, "build-2", checkout / "work")
    (proc,) = run_job(checkout, "build-2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return checkout / "work"


THRESHOLD = "Step 'build' requires '2' link metadata file(s), found '1'"
# Each case: what it does to the release folder, and the reason verify and the stock in-toto-verify give.
HOSTILE: list[tuple[str, Tamper, str, str]] = [
    ("builder 2's links missing", _without_builder_2, THRESHOLD, THRESHOLD),
    ("builder 2 built another source", _builder_2_from_other_source,
     "the links of the build step disagree: the builders did not produce the same bytes", "have different artifacts"),
    ("build link signed with the package key", _resign_with(attest.PACKAGE_ROLE, attest.STEP_BUILD),
     THRESHOLD, THRESHOLD),
]  # fmt: skip


@pytest.mark.parametrize(("case", "tamper", "reason", "stock_reason"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_hand_off_fails_verification(
    ci: CiRun, case: str, tamper: Tamper, reason: str, stock_reason: str, request: pytest.FixtureRequest
) -> None:
    folder = ci.base / f"sign--{case.replace(' ', '-')}"
    out = folder / "work" / "out"
    hand_over(ci.checkouts["sign"] / "work", folder / "work", ARTIFACTS["ransomeye-release"][1])
    tamper(ci, out, request)
    before = snapshot(ci.checkouts["sign"])
    proc = step(ci.checkouts["sign"], "verify", "keys", work=str(folder / "work"))
    assert proc.returncode == 1, f"{case}: verify exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert reason in proc.stderr
    assert snapshot(ci.checkouts["sign"]) == before
    stock = in_toto_verify(out, ci.owner_pub)
    assert stock.returncode == 1, f"{case}: in-toto-verify exited {stock.returncode}\n{stock.stdout}{stock.stderr}"
    assert stock_reason in stock.stdout + stock.stderr


@pytest.mark.parametrize("job", ["codesign", "sign"])
def test_job_refuses_builders_that_disagree(ci: CiRun, other_source: Path, job: str) -> None:
    """Handed builder 2's build link from another source, codesign and sign stop before they sign anything."""
    checkout = ci.job_checkout(f"{job}--builders-disagree")
    work = checkout / "work"
    receive(ci.checkouts, job, work, replace={"build-2": other_source})
    before = snapshot(work)
    (proc,) = run_job(checkout, job)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the links of the build step disagree" in proc.stderr
    assert snapshot(work) == before


SEES_NO_KEY = [("step.py", "keys/builder-2"), ("step.py", "outside"), ("build.py", "outside")]


@pytest.mark.parametrize(("command", "keys_dir"), SEES_NO_KEY, ids=[f"{c} --keys-dir {k}" for c, k in SEES_NO_KEY])
def test_a_sandboxed_step_sees_no_private_key_of_the_checkout(tmp_path: Path, command: str, keys_dir: str) -> None:
    """A build step run with ``--keys-dir`` elsewhere than the checkout's keys/: its sandbox sees no key there.

    The copy's sandboxed half (``step.py --inner``) is replaced by one that
    lists the private keys it can see under ``keys/`` and stops.
    """
    repo = make_repo(tmp_path / "ransomeye").root
    script = repo / STEP
    inner = "    output = ns.output.resolve()\n    try:\n"
    spy = ('        from release.errors import BadInputError\n'
           '        seen = sorted(str(p.relative_to(root)) for p in (root / "keys").rglob("*.pem"))\n'
           '        raise BadInputError("private keys seen: " + (", ".join(seen) or "none"))\n')  # fmt: skip
    assert script.read_text().count(inner) == 1
    script.write_text(script.read_text().replace(inner, inner + spy))
    keys = keys_dir
    if keys_dir == "outside":
        keys = str(shutil.copytree(repo / "keys" / ("builder-2" if command == "step.py" else ""), tmp_path / "k"))
    if command == "step.py":
        assert step(repo, "gates", "keys", work=str(tmp_path / "work")).returncode == 0
        proc = step(repo, "build", keys, work=str(tmp_path / "work"))
    else:
        build = [sys.executable, "release/builder/build.py", "--keys-dir", keys, "--single-builder"]
        proc = subprocess.run(
            build, cwd=repo, env=release_env(), capture_output=True, text=True, timeout=600, check=False
        )
    assert "private keys seen: none" in proc.stderr, proc.stdout + proc.stderr
