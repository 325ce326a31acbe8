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
GITLAB = ROOT / ".gitlab-ci.yml"
BIN = Path(sys.executable).parent
STEP = "release/builder/step.py"

# --- the jobs both files must describe, and the local run follows ------------------------------

# What each job runs, in order: (step.py's STEP, its --keys-dir); every command works in `--work work`.
JOBS: dict[str, tuple[tuple[str, str], ...]] = {
    "gates": (("gates", "keys"),),
    "builder-1": (("builder", "keys"), ("provenance", "keys")),
    "builder-2": (("builder", "keys/builder-2"),),
    "sign": (("sign", "keys"), ("checksums", "keys"), ("layout", "keys"), ("verify", "keys")),
}
# The jobs whose artifacts each job receives into work/out.
RECEIVES: dict[str, tuple[str, ...]] = {
    "gates": (),
    "builder-1": ("gates",),
    "builder-2": ("gates",),
    "sign": ("gates", "builder-1", "builder-2"),
}
# What each job hands on: the files of its work/out matching these patterns ("*": the release folder).
HANDS_ON: dict[str, tuple[str, ...]] = {
    "gates": ("gates-report.json", "gates.*.link"),
    "builder-1": (
        "build.*.link",
        "package-*.link",
        "provenance.*.link",
        "*.tar.gz",
        "*.zip",
        "*.cdx.json",
        "*.intoto.jsonl",
    ),
    "builder-2": ("build.*.link", "package-*.link"),
    "sign": ("*",),
}
# The private keys each job holds: its secret (GitHub secret, GitLab File variable) -> the file it writes.
KEYS: dict[str, dict[str, str]] = {
    "gates": {"RANSOMEYE_GATES_KEY": "keys/gates.pem"},
    "builder-1": {"RANSOMEYE_BUILD_KEY": "keys/build.pem", "RANSOMEYE_PACKAGE_KEY": "keys/package.pem"},
    "builder-2": {
        "RANSOMEYE_BUILDER2_BUILD_KEY": "keys/builder-2/build.pem",
        "RANSOMEYE_BUILDER2_PACKAGE_KEY": "keys/builder-2/package.pem",
    },
    "sign": {"RANSOMEYE_RELEASE_KEY": "keys/release.pem"},
}
BUILDERS = ("builder-1", "builder-2")


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
    ("vendor.gitlab-ci", GITLAB),
]


@pytest.mark.parametrize(("schema", "path"), SCHEMAS, ids=[s for s, _ in SCHEMAS])
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
     lambda d: d["jobs"]["builder-2"].__setitem__("runs_on", d["jobs"]["builder-2"].pop("runs-on"))),
    ("vendor.github-workflows", GITHUB, "a step both runs and uses",
     lambda d: d["jobs"]["gates"]["steps"][0].__setitem__("run", "true")),
    ("custom.github-workflows-require-timeout", GITHUB, "a job without timeout",
     lambda d: d["jobs"]["builder-1"].pop("timeout-minutes")),
    ("vendor.gitlab-ci", GITLAB, "needs is a string",
     lambda d: d["sign"].__setitem__("needs", "builder-1")),
    ("vendor.gitlab-ci", GITLAB, "unknown job key tag",
     lambda d: d["builder-2"].__setitem__("tag", d["builder-2"].pop("tags"))),
    ("vendor.gitlab-ci", GITLAB, "artifacts paths is a string",
     lambda d: d["builder-1"]["artifacts"].__setitem__("paths", "work/out/")),
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
    receives: tuple[str, ...]  # the jobs whose artifacts it downloads
    hands_on: tuple[str, ...]  # patterns under work/out
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


def _key_writes(scripts: list[str]) -> tuple[str, ...]:
    """The scripts (a run block, a script entry) that write a private key file."""
    return tuple(s for s in scripts if re.search(r"keys/(builder-2/)?\w+\.pem", s) and not s.startswith("rm -f"))


def github_jobs(path: Path = GITHUB) -> dict[str, Job]:
    data = _load(path)
    jobs = {}
    for name, job in data["jobs"].items():
        steps = job["steps"]
        runs = [s["run"] for s in steps if "run" in s]
        uses = [(s["uses"].split("@")[0], s.get("with", {})) for s in steps if "uses" in s]
        downloads = [w for action, w in uses if action == "actions/download-artifact"]
        assert all(w["path"] == "work/out" for w in downloads), f"{name}: downloads elsewhere than work/out"
        uploads = [w for action, w in uses if action == "actions/upload-artifact"]
        assert len(uploads) == 1, f"{name}: one artifact per job"
        assert uploads[0]["name"] in (name, "ransomeye-release"), f"{name}: its artifact is named after it"
        text = "\n".join(_strings(job))
        jobs[name] = Job(
            commands=_commands(runs),
            needs=frozenset([job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])),
            receives=tuple(w["name"] for w in downloads),
            hands_on=tuple(p.removeprefix("work/out/") or "*" for p in uploads[0]["path"].split()),
            runner=frozenset(job["runs-on"]),
            environment=job["environment"],
            secrets=frozenset(re.findall(r"secrets\.(\w+)", text)),
            key_writes=_key_writes(runs),
            text=text,
        )
        # A secret goes through a step's env, never into a script's text (where it would be interpolated).
        assert not any("secrets." in r for r in runs), f"{name}: a secret interpolated into a script"
    outside = "\n".join(_strings({k: v for k, v in data.items() if k != "jobs"}))
    assert "secrets." not in outside and ".pem" not in outside, "a key or secret outside the job that holds it"
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
            hands_on=tuple(p.removeprefix("work/out/") or "*" for p in job["artifacts"]["paths"]),
            runner=frozenset(job["tags"]),
            environment=job["environment"]["name"],
            secrets=frozenset(re.findall(r"\$\{?(RANSOMEYE_\w+)", text)),
            key_writes=_key_writes(job["script"]),
            text=text,
        )
    outside = "\n".join(_strings({k: v for k, v in data.items() if k in reserved}))
    assert "RANSOMEYE_" not in outside and ".pem" not in outside.replace(REMOVE_KEYS, ""), (
        "a key or secret outside the job that holds it"
    )
    return jobs


FILES = [("github", github_jobs), ("gitlab", gitlab_jobs)]


@pytest.mark.parametrize(("engine", "read"), FILES, ids=[e for e, _ in FILES])
def test_workflow_runs_the_jobs_the_test_runs(engine: str, read: Callable[[], dict[str, Job]]) -> None:
    jobs = read()
    assert set(jobs) == set(JOBS)
    for name, job in jobs.items():
        assert job.commands == JOBS[name], f"{engine} {name}: runs {job.commands}"
        assert sorted(job.receives) == sorted(RECEIVES[name]), f"{engine} {name}: receives {job.receives}"
        assert job.hands_on == HANDS_ON[name], f"{engine} {name}: hands on {job.hands_on}"
        assert set(RECEIVES[name]) <= job.needs, f"{engine} {name}: receives from a job it does not need"
    # The builders: two jobs after the gates, on runners of their own; signing apart, after both.
    b1, b2, sign = jobs["builder-1"], jobs["builder-2"], jobs["sign"]
    assert b1.needs == b2.needs == {"gates"}
    assert b1.runner - b2.runner and b2.runner - b1.runner, "the builders could share a runner"
    assert sign.runner - b1.runner - b2.runner, "the signing job could run on a builder's runner"
    assert set(BUILDERS) <= sign.needs
    assert len({j.environment for j in jobs.values()}) == len(jobs), "a job shares its environment (and secrets)"


@pytest.mark.parametrize(("engine", "read"), FILES, ids=[e for e, _ in FILES])
def test_each_key_is_referenced_by_its_job_only(engine: str, read: Callable[[], dict[str, Job]]) -> None:
    jobs = read()
    for name, job in jobs.items():
        held = set(KEYS[name])
        # GitHub maps each passphrase secret explicitly; GitLab's are environment-scoped variables.
        allowed = held | {f"{s}_PASSPHRASE" for s in held} if engine == "github" else held
        assert held <= job.secrets <= allowed, f"{engine} {name}: references {sorted(job.secrets)}"
        for secret, path in KEYS[name].items():
            others = [n for n, j in jobs.items() if n != name and (secret in j.secrets or path in j.text)]
            assert not others, f"{engine}: {secret} ({path}) is referenced by {others} too"
            assert any(path in w for w in job.key_writes), f"{engine} {name}: never writes {path}"
        # Written with mode 0600 from the start, never printed.
        for write in job.key_writes:
            assert write.lstrip("(").startswith("umask 077") and "echo" not in write, write
        assert "set -x" not in job.text


REMOVE_KEYS = "rm -f keys/*.pem keys/builder-*/*.pem"


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


def matching(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """The files of ``folder`` an artifact of ``patterns`` takes."""
    return sorted(p.name for p in folder.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def hand_over(source: Path, dest: Path, patterns: tuple[str, ...]) -> list[str]:
    """Copy the files of ``source`` matching ``patterns`` into ``dest``, as an artifact upload and download do."""
    dest.mkdir(parents=True, exist_ok=True)
    names = matching(source, patterns)
    for name in names:
        shutil.copyfile(source / name, dest / name)
    return names


@dataclass(frozen=True)
class CiRun:
    """The four jobs, run each in its own clone: ``checkouts[job]/work/out`` is what it wrote."""

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
        assert not list(checkout.rglob("*.pem")), "the repository holds a private key"
        for path in KEYS.get(name.split("--")[0], {}).values():
            (checkout / path).write_bytes((self.vault / path.removeprefix("keys/")).read_bytes())
            (checkout / path).chmod(0o600)
        return checkout


def _remove_keys(checkout: Path) -> None:
    """What each job does when it ends: ``rm -f keys/*.pem keys/builder-*/*.pem``."""
    for p in [*checkout.glob("keys/*.pem"), *checkout.glob("keys/builder-*/*.pem")]:
        p.unlink()


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> CiRun:
    """The repository as CI sees it, then the four jobs of :data:`JOBS`, each in its own clone.

    The repository copy commits what production commits: the public keys
    and the owner's root layout (signed here, as offline). The private keys
    stay in the vault; each job's clone receives only its own, and its work
    folder only the files the jobs it needs handed on.
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
    for name, commands in JOBS.items():
        checkout = checkouts[name] = run.job_checkout(name)
        for sender in RECEIVES[name]:
            hand_over(checkouts[sender] / "work" / "out", checkout / "work" / "out", HANDS_ON[sender])
        done = []
        for command, keys_dir in commands:
            proc = step(checkout, command, keys_dir)
            done.append(proc)
            assert proc.returncode == 0, (
                f"{name}: step.py {command} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        _remove_keys(checkout)
        procs[name] = tuple(done)
    return CiRun(base, origin, vault, checkouts, procs, run.before)


def test_jobs_apart_make_a_release_that_verifies(ci: CiRun) -> None:
    sign = ci.checkouts["sign"]
    verify = ci.procs["sign"][-1]
    assert "audit passed: in-toto-verify" in verify.stdout
    assert "layout layouts/root.layout" in ci.procs["sign"][-2].stdout  # the owner's, committed: no owner key here
    # The customer: the release folder's regular files, the owner's public key, the stock verifier.
    customer = ci.base / "customer"
    hand_over(sign / "work" / "out", customer, HANDS_ON["sign"])
    proc = in_toto_verify(customer, ci.owner_pub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every builder step's link from each builder, the build and packaging ones made in the sandbox.
    out = sign / "work" / "out"
    for folder in (ci.vault, ci.vault / "builder-2"):
        for s in ("build", *(b.step for b in load_workspace(ci.origin).bundles)):
            public = load_public_key(folder / f"{attest.step_role(s)}.pub")
            link = json.loads((out / attest.link_filename(s, public)).read_text())
            assert link["signed"]["environment"]["sandbox"]["tool"].startswith("bubblewrap"), s


def test_each_job_wrote_only_in_its_own_folder(ci: CiRun) -> None:
    assert snapshot(ci.origin) == ci.before["origin"]
    assert snapshot(ci.vault) == ci.before["vault"]
    jobs = {"origin", "vault", "customer", *JOBS}
    assert all(p.name.split("--")[0] in jobs for p in ci.base.iterdir()), sorted(p.name for p in ci.base.iterdir())
    for name, checkout in ci.checkouts.items():
        changed = git("status", "--porcelain", "--untracked-files=all", cwd=checkout).splitlines()
        assert all(line.startswith("?? work/") for line in changed), f"{name}: {changed[:5]}"
        assert not list(checkout.rglob("*.pem")), f"{name}: a key outlived the job"


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


def _without_builder_2(ci: CiRun, out: Path, request: pytest.FixtureRequest | None = None) -> None:
    for name in matching(ci.checkouts["builder-2"] / "work" / "out", HANDS_ON["builder-2"]):
        (out / name).unlink()


def _builder_2_from_other_source(ci: CiRun, out: Path, request: pytest.FixtureRequest) -> None:
    _without_builder_2(ci, out)
    hand_over(request.getfixturevalue("other_source"), out, HANDS_ON["builder-2"])


@pytest.fixture(scope="module")
def other_source(ci: CiRun) -> Path:
    """Builder 2's job run on a commit with one byte of core/src/main.rs changed: its ``work/out``."""

    def change(checkout: Path) -> None:
        main = checkout / "core" / "src" / "main.rs"
        main.write_text(main.read_text().replace("GET /health answers 200", "GET /health answers 202", 1))

    checkout = ci.job_checkout("builder-2--other-source", change)
    hand_over(ci.checkouts["gates"] / "work" / "out", checkout / "work" / "out", HANDS_ON["gates"])
    proc = step(checkout, "builder", "keys/builder-2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _remove_keys(checkout)
    return checkout / "work" / "out"


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
    hand_over(ci.checkouts["sign"] / "work" / "out", out, HANDS_ON["sign"])
    tamper(ci, out, request)
    before = snapshot(ci.checkouts["sign"])
    proc = step(ci.checkouts["sign"], "verify", "keys", work=str(folder / "work"))
    assert proc.returncode == 1, f"{case}: verify exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert reason in proc.stderr
    assert snapshot(ci.checkouts["sign"]) == before
    stock = in_toto_verify(out, ci.owner_pub)
    assert stock.returncode == 1, f"{case}: in-toto-verify exited {stock.returncode}\n{stock.stdout}{stock.stderr}"
    assert stock_reason in stock.stdout + stock.stderr


def test_signing_job_refuses_builders_that_disagree(ci: CiRun, other_source: Path) -> None:
    """Handed builder 2's links from another source, the signing job stops before it signs anything."""
    checkout = ci.job_checkout("sign--builders-disagree")
    out = checkout / "work" / "out"
    for sender, folder in (("gates", None), ("builder-1", None), ("builder-2", other_source)):
        hand_over(folder or ci.checkouts[sender] / "work" / "out", out, HANDS_ON[sender])
    before = snapshot(out)
    proc = step(checkout, "sign", "keys")
    _remove_keys(checkout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the links of the build step disagree" in proc.stderr
    assert snapshot(out) == before


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
