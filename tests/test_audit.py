"""The compliance audit of a release folder: clean on an honest release, and every tampering named.

Two kinds of release folder are audited, both copies of a real release made
by ``build.py`` (the ``released`` fixture):

* the folder as the pipeline ships it: each tampering is named by the checks
  that catch it;
* a *complete* folder: the same release with real SBOMs (from the archives'
  contents and ``cargo metadata``), the gates report, a signed SLSA
  provenance, each step re-linked with what it now produces and a layout that
  knows these files — what the integrated pipeline ships. It audits clean;
  a lying SBOM or provenance is caught even when every link agrees with it.

``test_integrated_release_audits_clean`` audits the pipeline's own output.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from in_toto.models.metadata import Metablock
from securesystemslib.signer import CryptoSigner

from release import attest, inspection, openpgp, provenance, sbom, sbom_build
from release.archive import ArtifactDigest, WrittenArchive, collect_tree, hash_file, hash_stream, write_tar_gz
from release.attest import GATES_REPORT, StepRecord
from release.audit import (
    AuditReport,
    audit,
    evidence,
    intoto,
    render_html,
    render_text,
    run_in_toto_verify,
    write_html,
    write_json,
)
from release.audit import checks as audit_checks
from release.audit.audit import main as audit_main
from release.cargo import HOST_TARGET, find_toolchain
from release.checksums import SUMS_NAME, write_hash_list
from release.errors import BadInputError
from release.keys import load_public_key
from release.pipeline import Attested, functionaries, provenance_predicate
from release.signing import publish_release_keys, sign_digest, sign_openpgp, write_signify_sums, write_sigstore_bundle
from tests.conftest import EPOCH, ROOT, Repo
from tests.forge import Download, declared

pytestmark = pytest.mark.slow

VERSION = "1.0.0"
CORE = "ransomeye-core-1.0.0.tar.gz"
DPI = "ransomeye-dpi-1.0.0.tar.gz"
ARCHIVES = [CORE, "ransomeye-agent-linux-1.0.0.tar.gz", "ransomeye-agent-windows-1.0.0.zip", DPI]
PROVENANCE = provenance.provenance_name(VERSION)
COMMIT = "94a84f4d67e808291f5f01b659d941915765a02e"
BUILDER = "https://build.ransomeye.example/release-server"
AUDIT_SCRIPT = ROOT / "release" / "audit" / "audit.py"
T0 = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
PROVENANCE_COMMAND = "slsa-provenance"


# --- building folders ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case(Download):
    """A release folder under test and the repository (with its keys) it was built from.

    Its ``relink`` replaces what it is given (the toolkit's merges), and may create a link.
    """

    @property
    def owner_pub(self) -> Path:
        return self.repo.keys / "owner.pub"

    def relink(  # type: ignore[override]
        self, step: str, role: str | None = None, **changes: Any
    ) -> None:
        """Rewrite ``step``'s links with ``changes``, signed with the step's real functionary keys (every builder's).

        With ``role``, one link signed by that role's key only.
        """
        old = self.signed(step) if list(self.folder.glob(f"{step}.*.link")) else {}
        record = StepRecord(
            name=step,
            command=changes.get("command", old.get("command", [])),
            materials=changes.get("materials", {k: v["sha256"] for k, v in old.get("materials", {}).items()}),
            products=changes.get("products", {k: v["sha256"] for k, v in old.get("products", {}).items()}),
            byproducts={k: v for k, v in old.get("byproducts", {}).items() if k != "return-value"},
            environment=changes.get("environment", old.get("environment", {})),
        )
        for p in self.folder.glob(f"{step}.*.link"):
            p.unlink()
        for key in [self.key(role)] if role else self.step_keys(step):
            attest.write_link(record, key, self.folder)

    def audit(self) -> AuditReport:
        return audit(self.folder, self.owner_pub)


def _contents(path: Path) -> dict[str, str]:
    """Every regular file in an archive and its SHA-256 (read here independently of the audit)."""
    out = {}
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    out[info.filename] = hashlib.sha256(zf.read(info)).hexdigest()
    else:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    out[m.name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _integrated_layout(case: Case, expires: datetime) -> Metablock:
    """The pipeline's root layout (SBOMs, gates report and provenance included), signed by the owner."""
    keys = case.repo.keys
    layout = attest.build_layout(case.repo.ws, functionaries(keys), expires)
    return attest.sign_layout(layout, case.key("owner"))


def _times(i: int) -> dict[str, str]:
    start = T0 + timedelta(seconds=10 * i)
    return {"started": start.isoformat(), "finished": (start + timedelta(seconds=4 + i)).isoformat()}


def _add_sboms(case: Case, cargo: Path) -> dict[str, ArtifactDigest]:
    ws = case.repo.ws
    build = case.signed("build")
    materials = {n: d["sha256"] for n, d in build["materials"].items()}
    inputs = {b: tuple((p, materials[p]) for p in paths) for b, paths in build["environment"]["binary-inputs"].items()}
    metadata = dataclasses.replace(sbom.cargo_metadata(case.repo.root, cargo), inputs=MappingProxyType(inputs))
    toolchains = build["environment"]["toolchains"]
    out = {}
    for b in ws.bundles:
        archive = hash_file(case.folder / b.archive_name(VERSION))
        contents = _contents(archive.path)
        bom = sbom_build.bundle_sbom(b, VERSION, archive, contents, metadata, EPOCH, toolchains[b.target])
        out[b.step] = sbom_build.write_sbom(bom, case.folder / sbom.sbom_name(b, VERSION))
    return out


def complete_release(case: Case, cargo: Path) -> None:
    """Turn ``case.folder`` (today's release) into what the integrated pipeline ships."""
    ws = case.repo.ws
    subprocess.run(
        [sys.executable, str(case.repo.root / "governance" / "gates" / "check_gates.py"),
         "--root", str(case.repo.root), "--report", str(case.folder / GATES_REPORT)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    report = hash_file(case.folder / GATES_REPORT)
    assert case.signed("gates")["products"][GATES_REPORT]["sha256"] == report.sha256, "the gates report is stable"
    case.relink("gates", environment=_times(0))
    case.relink("build", environment={**case.signed("build")["environment"], **_times(1)})
    sboms = _add_sboms(case, cargo)
    archives = {b.step: hash_file(case.folder / b.archive_name(VERSION)) for b in ws.bundles}
    for i, b in enumerate(ws.bundles):
        products = {archives[b.step].name: archives[b.step].sha256, sboms[b.step].name: sboms[b.step].sha256}
        case.relink(b.step, products=products, environment={**case.signed(b.step)["environment"], **_times(2 + i)})
    write_provenance(case)
    signed = [*archives.values(), *sboms.values(), report]
    sigs = sign_in_every_format(case, signed, list(archives.values()))
    envelope = hash_file(case.folder / PROVENANCE)
    case.relink(
        "sign",
        materials={d.name: d.sha256 for d in [*signed, envelope]},
        products={d.name: d.sha256 for d in sigs},
        environment=_times(6),
    )
    relist(case, {d.name: d.sha256 for d in signed + sigs}, list(archives.values()), environment=_times(7))
    layout = _integrated_layout(case, datetime.now(UTC) + timedelta(days=30))
    attest.write_layout(layout, case.folder / attest.LAYOUT_NAME)


def sign_in_every_format(
    case: Case, signed: list[ArtifactDigest], archives: list[ArtifactDigest]
) -> list[ArtifactDigest]:
    """What the sign step writes, with the release key: minisign for each of ``signed``, OpenPGP and Sigstore for
    each archive (the provenance in the folder is the bundles' predicate)."""
    release = case.key("release")
    created = publish_release_keys(case.repo.keys, release)
    predicate = provenance_predicate(Attested(hash_file(case.folder / PROVENANCE)))
    sigs = [sign_digest(release, d, VERSION, EPOCH) for d in signed]
    for a in archives:
        sigs.append(sign_openpgp(release, a, EPOCH, created))
        sigs.append(write_sigstore_bundle(release, a, provenance.PREDICATE_TYPE, predicate))
    return sigs


def relist(case: Case, materials: dict[str, str], archives: list[ArtifactDigest], **changes: Any) -> None:
    """What the checksums step writes: SHA256SUMS and its signatures, signify's list of the archives; relinked."""
    release = case.key("release")
    sums = write_hash_list(case.folder)
    made = [
        sums,
        sign_digest(release, sums, VERSION, EPOCH),
        sign_openpgp(release, sums, EPOCH, publish_release_keys(case.repo.keys, release)),
        write_signify_sums(release, case.folder / "SHA256.sig", archives),
    ]
    case.relink("checksums", materials=materials, products={d.name: d.sha256 for d in made}, **changes)


def write_provenance(
    case: Case, key_role: str = "build", change: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Write the provenance from the links (as the pipeline's provenance step does) and link it."""
    ws = case.repo.ws
    # What the provenance step reads: the steps before it (the sign step reads the provenance).
    after = (provenance.STEP_PROVENANCE, attest.STEP_SIGN, attest.STEP_CHECKSUMS)
    links = {s: case.signed(s) for s in attest.step_names(ws) if s not in after}
    subjects = {b.archive_name(VERSION): hash_file(case.folder / b.archive_name(VERSION)).sha256 for b in ws.bundles}
    statement = provenance.build_statement(subjects, links, COMMIT, BUILDER, "release-1.0.0-run-1")
    if change is not None:
        change(statement)
    envelope = provenance.sign_envelope(statement, case.key(key_role))
    digest = provenance.write_envelope(envelope, case.folder / PROVENANCE)
    case.relink(
        provenance.STEP_PROVENANCE,
        role="build",
        command=[PROVENANCE_COMMAND],
        materials=subjects,
        products={digest.name: digest.sha256},
        environment=_times(8),
    )
    # The sign step read the provenance (for the Sigstore bundles): the release stage relinks it too, so that only
    # the audit's provenance check stands between this provenance and the auditor.
    sign = case.signed(attest.STEP_SIGN)
    if PROVENANCE in sign["materials"]:
        case.relink(attest.STEP_SIGN, materials={**_hashes(sign["materials"]), PROVENANCE: digest.sha256})


def _hashes(artifacts: dict[str, Any]) -> dict[str, str]:
    return {n: h["sha256"] for n, h in artifacts.items()}


def resign_and_relist(case: Case, *changed: str) -> None:
    """What a compromised release stage does after changing files: re-sign them and re-list everything."""
    signed = case.signed("sign")
    archive_names = {b.archive_name(VERSION) for b in case.repo.ws.bundles}
    changed_archives = [hash_file(case.folder / n) for n in changed if n in archive_names]
    sign_in_every_format(case, [hash_file(case.folder / n) for n in changed], changed_archives)
    materials = {n: hash_file(case.folder / n).sha256 for n in signed["materials"]}
    products = {n: hash_file(case.folder / n).sha256 for n in signed["products"]}
    case.relink("sign", materials=materials, products=products)
    archives = [hash_file(case.folder / n) for n in sorted(archive_names) if (case.folder / n).is_file()]
    payloads = {n: h for n, h in materials.items() if n != PROVENANCE}
    relist(case, {**payloads, **products}, archives)


@pytest.fixture(scope="module")
def cargo(released: Repo) -> Path:
    return find_toolchain(released.ws, HOST_TARGET).cargo


@pytest.fixture(scope="module")
def complete_template(released: Repo, cargo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("complete") / "release"
    shutil.copytree(released.artifacts, folder)
    complete_release(Case(folder, released), cargo)
    return folder


@pytest.fixture
def today(released: Repo, tmp_path: Path) -> Case:
    """A copy of the release folder the pipeline ships today."""
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    return Case(folder, released)


@pytest.fixture
def complete(released: Repo, complete_template: Path, tmp_path: Path) -> Case:
    folder = tmp_path / "complete"
    shutil.copytree(complete_template, folder)
    return Case(folder, released)


@pytest.fixture(scope="module")
def complete_report(released: Repo, complete_template: Path) -> AuditReport:
    return audit(complete_template, released.keys / "owner.pub")


def _state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def failing(report: AuditReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def named(report: AuditReport, check: str, text: str) -> bool:
    """Whether ``check`` has a finding that names ``text`` (in its subject or message)."""
    return any(text in f.subject or text in f.message for f in report.check(check).findings)


# --- the complete release ------------------------------------------------------------


def test_complete_release_audits_clean(complete_report: AuditReport) -> None:
    report = complete_report
    assert report.verified, "\n".join(f.text() for f in report.findings)
    assert report.verdict == "VERIFIED"
    assert [c.name for c in report.checks] == [
        "layout", "in-toto", "links", "sandbox", "files", "checksums", "signatures", "formats", "gates", "archives",
        "sboms", "sources", "provenance",
    ]  # fmt: skip
    assert report.in_toto.ok
    assert report.version == VERSION and report.source_commit == COMMIT


def test_report_accounts_for_the_steps(complete_report: AuditReport, released: Repo) -> None:
    steps = {s.name: s for s in complete_report.steps}
    assert set(steps) == {*attest.step_names(released.ws), provenance.STEP_PROVENANCE}
    build_id = attest.keyid_of(load_public_key(released.keys / "build.pub"))
    release_id = attest.keyid_of(load_public_key(released.keys / "release.pub"))
    assert (steps["build"].role, steps["build"].keyid) == ("build", build_id)
    assert (steps["sign"].role, steps["sign"].keyid) == ("release", release_id)
    assert steps["build"].command == ("cargo", "build", "--release", "--offline", "--locked")
    assert steps["package-core"].products == 2 and steps["package-core"].depends_on == ("build",)
    assert steps["gates"].duration == 4.0 and steps["gates"].started == T0.isoformat()
    assert all(s.return_value == 0 and s.signature_ok for s in steps.values())
    assert steps["gates"].materials == len(json.loads(next(released.artifacts.glob("gates.*.link")).read_text())
                                           ["signed"]["materials"])  # fmt: skip
    keys = {k.role: k for k in complete_report.keys}
    assert keys["owner"].keyid == complete_report.owner_keyid
    assert "sign" in keys["release"].steps and "provenance" in keys["build"].steps


def test_report_accounts_for_gates_archives_sboms_and_provenance(complete_report: AuditReport) -> None:
    report = complete_report
    assert {g.name for g in report.gates} == {"resources", "isolation", "versions", "secrets"}
    assert all(g.passed and g.source == GATES_REPORT for g in report.gates)
    archives = {a.name: a for a in report.archives}
    assert sorted(archives) == sorted(ARCHIVES)
    core = archives[CORE]
    assert core.signature_ok and core.sbom is not None
    assert {b.rsplit("/", 1)[1] for b in core.binaries} == {"ransomeye-core", "ransomeye-ops", "ransomeye-tuner"}
    assert {(c.name, c.licenses) for c in core.sbom.crates} == {
        ("ransomeye-core", "LicenseRef-RansomEye-Proprietary"),
        ("ransomeye-ops", "LicenseRef-RansomEye-Proprietary"),
    }
    assert core.sbom.files == len(core.members) and core.sbom.toolchain
    p = report.provenance
    assert p is not None and p.verified
    assert (p.builder_id, p.build_type, p.source_commit) == (BUILDER, provenance.BUILD_TYPE, COMMIT)
    assert p.started == "2026-05-01T10:00:00Z" and p.finished is not None


def test_provenance_subjects_equal_the_sha256sums_entries(complete_template: Path, released: Repo) -> None:
    envelope = provenance.read_envelope((complete_template / PROVENANCE).read_text(), PROVENANCE)
    statement = provenance.verify_envelope(envelope, attest.key_dict(load_public_key(released.keys / "build.pub")))
    listed = dict(line.split("  ", 1)[::-1] for line in (complete_template / SUMS_NAME).read_text().splitlines())
    assert provenance.statement_subjects(statement) == {a: listed[a] for a in ARCHIVES}


def test_sboms_in_the_release_validate_against_the_schema(complete_template: Path) -> None:
    for archive in ARCHIVES:
        name = archive.removesuffix(".tar.gz").removesuffix(".zip") + sbom.SUFFIX
        assert sbom.validate_sbom((complete_template / name).read_text()) == [], name


def test_the_audit_never_modifies_the_folder(complete: Case) -> None:
    # A customer's in-toto-verify ran here before: its inspection link is in the folder.
    verify = [str(Path(sys.executable).parent / "in-toto-verify"), "--layout", attest.LAYOUT_NAME,
              "--verification-keys", str(complete.owner_pub)]  # fmt: skip
    assert subprocess.run(verify, cwd=complete.folder, capture_output=True, check=False).returncode == 0
    assert (complete.folder / f"{attest.INSPECTION}.link").is_file()
    before = _state(complete.folder)
    report = complete.audit()
    assert report.verified, "\n".join(f.text() for f in report.findings)
    assert _state(complete.folder) == before


def test_run_in_toto_verify_alone(complete: Case, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert run_in_toto_verify(complete.folder, complete.owner_pub, scratch_parent=scratch).ok
    assert list(scratch.iterdir()) == [], "the scratch copy is removed"
    (complete.folder / "README.txt").write_text("hi\n")
    result = run_in_toto_verify(complete.folder, complete.owner_pub)
    assert not result.ok and "README.txt" in result.reason


WARM_CASES = [
    ("verifies", lambda c: None),
    ("extra-file", lambda c: (c.folder / "README.txt").write_text("hi\n")),
    ("link-edited-without-resigning", lambda c: _edit_link(c)),
    ("layout-expired", lambda c: _new_layout(c, "owner", datetime.now(UTC) - timedelta(days=1))),
    ("malicious-packager-honest-links", lambda c: _malicious_packager(c)),
    ("missing-link", lambda c: c.link("sign").unlink()),
]


@pytest.mark.parametrize("tamper", [t for _, t in WARM_CASES], ids=[n for n, _ in WARM_CASES])
def test_the_warm_verifier_gives_what_the_command_gives(today: Case, tmp_path: Path, tamper: Tamper) -> None:
    """The interpreter :func:`intoto.warm` starts runs the stock command's ``main``: same verdict, same reason."""
    assert intoto._interpreter(intoto.in_toto_verify_command()), "the stock command's #! names its interpreter"
    tamper(today)
    before = _state(today.folder)
    cold = run_in_toto_verify(today.folder, today.owner_pub)
    intoto.warm()
    waiting = intoto._warm_proc
    assert waiting is not None and waiting.poll() is None
    warmed = run_in_toto_verify(today.folder, today.owner_pub)
    assert intoto._warm_proc is None and waiting.returncode is not None, "one warm interpreter serves one run"
    assert (warmed.ok, warmed.reason) == (cold.ok, cold.reason)
    assert _state(today.folder) == before, "the folder is left as it was"


def test_a_warm_verifier_started_for_another_environment_is_ended_unused(
    today: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    (today.folder / "README.txt").write_text("hi\n")
    intoto.warm()
    waiting = intoto._warm_proc
    assert waiting is not None
    monkeypatch.setenv("PATH", os.environ.get("PATH", "") + os.pathsep + "/nonexistent")
    result = run_in_toto_verify(today.folder, today.owner_pub)
    assert not result.ok and "README.txt" in result.reason
    assert waiting.returncode == 0, "ended without a request (a run in it would have failed: exit 1)"
    assert intoto._warm_proc is None


def test_no_warm_verifier_when_pythonpath_depends_on_where_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative PYTHONPATH entry is made absolute against the directory Python starts in: only a cold run,
    started in the scratch folder, is the run the customer's command makes."""
    for value in ("lib", "/usr/lib:", f"{os.sep}abs{os.pathsep}rel"):
        monkeypatch.setenv("PYTHONPATH", value)
        intoto.warm()
        assert intoto._warm_proc is None, value
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    intoto.warm()
    waiting = intoto._warm_proc
    assert waiting is not None
    intoto._end_warm()
    assert waiting.returncode == 0 and intoto._warm_proc is None


_UNUSED_WARM = """
import sys
sys.path.insert(0, sys.argv[1])
from release.audit import intoto
intoto.warm()
print(intoto._warm_proc.pid, flush=True)
if sys.argv[2] == "kill":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_an_unused_warm_verifier_ends_with_its_process(ending: str) -> None:
    """A run that stops before its verify step (it fails, or is killed) leaves no interpreter waiting."""
    proc = subprocess.run([sys.executable, "-c", _UNUSED_WARM, str(ROOT), ending],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid), "the warm interpreter still runs"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_a_command_whose_interpreter_is_not_a_plain_path_is_run_cold(tmp_path: Path) -> None:
    shell = b'#!/bin/sh\nexec \'/a path/with space/python3\' "$0" "$@"\n'  # what pip writes for such a path
    for first in (b"#!/usr/bin/env python3\n", b"#!python3\n", b"\x7fELF", b"#!" + str(tmp_path).encode() + b"\n",
                  shell, b"#!" + sys.executable.encode() + b" -E\n"):  # fmt: skip
        script = tmp_path / "in-toto-verify"
        script.write_bytes(first + b"print()\n")
        assert intoto._interpreter(str(script)) is None, first
    assert intoto._interpreter(str(tmp_path / "missing")) is None
    script.write_bytes(b"#!" + sys.executable.encode() + b"\n")
    assert intoto._interpreter(str(script)) == sys.executable


def _counting_hash_stream(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count, per file name, the streamed hashing passes the audit's folder makes."""
    counts: dict[str, int] = {}
    real = hash_stream

    def counting(path: Path, f: Any) -> ArtifactDigest:
        counts[path.name] = counts.get(path.name, 0) + 1
        return real(path, f)

    monkeypatch.setattr(evidence, "hash_stream", counting)
    return counts


def test_each_file_is_hashed_once_whoever_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _counting_hash_stream(monkeypatch)
    data = {f"f{i}": os.urandom(i * 300_000 + 1) for i in range(6)}
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "sub").mkdir()
    folder = evidence.Folder.scan(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as hashing, ThreadPoolExecutor(max_workers=8) as askers:
        folder.prefetch([*data, "absent", "sub"], hashing)
        folder.prefetch(data, hashing)  # asked again: nothing more is read
        results = list(askers.map(folder.digest, [*data, *data, *data, "absent", "sub"]))
    assert counts == dict.fromkeys(data, 1)
    for name, content in data.items():
        digest = folder.digest(name)
        assert digest is not None and digest.size == len(content)
        assert digest.sha256 == hashlib.sha256(content).hexdigest()
        assert digest.blake2b == hashlib.blake2b(content, digest_size=64).digest()
        assert all(r is digest for r in results if r is not None and r.name == name), "one result, shared"
    assert results[-2:] == [None, None]
    assert counts == dict.fromkeys(data, 1)
    late = evidence.Folder.scan(tmp_path)
    with pytest.raises(RuntimeError):
        late.prefetch(["f1"], hashing)  # shut down: hashed in place, never left for a waiter to wait on forever
    assert late.digest("f1") is not None and counts["f1"] == 2


def test_hashing_no_check_asked_for_is_abandoned_not_awaited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of stray files: once the checks are done, the queued hashes are cancelled, not run to the end."""
    counts = _counting_hash_stream(monkeypatch)
    gate = threading.Event()
    counting = evidence.hash_stream  # type: ignore[attr-defined]  # the counting stand-in set above

    def slow(path: Path, f: Any) -> ArtifactDigest:
        gate.wait(10)
        return counting(path, f)

    names = [f"stray{i}" for i in range(6)]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    folder = evidence.Folder.scan(tmp_path)
    hashing = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(evidence, "hash_stream", slow)
    folder.prefetch(names, hashing)
    gate.set()  # the one running hash ends; the five queued are cancelled
    hashing.shutdown(wait=True, cancel_futures=True)
    folder.abandon_prefetch()
    monkeypatch.setattr(evidence, "hash_stream", counting)
    assert sum(counts.values()) == 1, counts
    digest = folder.digest("stray5")  # asked later: hashed then, never a cancelled result
    assert digest is not None and digest.sha256 == hashlib.sha256(b"stray5").hexdigest()


def test_the_audit_reads_each_file_once_to_hash_it(complete: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _counting_hash_stream(monkeypatch)
    report = complete.audit()
    assert report.verified, "\n".join(f.text() for f in report.findings)
    assert set(ARCHIVES) <= set(counts), "the archives were hashed (SHA-256 and BLAKE2b-512 in one pass)"
    assert max(counts.values()) == 1, {n: c for n, c in counts.items() if c > 1}


def test_known_digests_of_the_same_files_are_not_read_again(complete: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's own digests of its archives (from the pass that took them from the packagers): the audit's
    checks use them instead of reading the archives again; in-toto-verify still reads every file."""
    known = {name: hash_file(complete.folder / name) for name in ARCHIVES}
    counts = _counting_hash_stream(monkeypatch)
    read_for_openpgp: list[str] = []
    chunks = openpgp._file_chunks

    def counting_chunks(path: Path) -> Any:
        read_for_openpgp.append(path.name)
        return chunks(path)

    monkeypatch.setattr(openpgp, "_file_chunks", counting_chunks)
    report = audit(complete.folder, complete.owner_pub, known=known)
    assert report.verified, "\n".join(f.text() for f in report.findings)
    assert not set(ARCHIVES) & set(counts), counts
    assert not set(ARCHIVES) & set(read_for_openpgp), "the .asc checks continue the known digests' passes"
    assert report.in_toto.ok


def _rewritten_times_restored(path: Path) -> None:
    st = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _renamed_over(path: Path) -> None:
    other = path.with_name(path.name + ".new")
    shutil.copy2(path, other)
    os.replace(other, path)


def _a_link_to_a_copy(path: Path) -> None:
    copy = path.with_name(path.name + ".copy")
    shutil.copy2(path, copy)
    path.unlink()
    path.symlink_to(copy.name)


# How the folder's file differs from the one a known digest was made of; the digest must not be taken.
NOT_THE_SAME_FILE: dict[str, Callable[[Path], object]] = {
    "rewritten with the same bytes, times restored": _rewritten_times_restored,
    "another file renamed over it": _renamed_over,
    "replaced by a link to a copy": _a_link_to_a_copy,
    "removed": lambda p: p.unlink(),
    "touched": lambda p: os.utime(p),
}


@pytest.mark.parametrize("change", list(NOT_THE_SAME_FILE))
def test_a_known_digest_is_taken_only_while_the_file_is_the_same_file(tmp_path: Path, change: str) -> None:
    """A known digest that lies about the bytes shows which one the folder used: the file is read for any other."""
    path = tmp_path / "a.tar.gz"
    path.write_bytes(os.urandom(70_000))
    lying = dataclasses.replace(hash_file(path), sha256="0" * 64)  # the file's identity, another file's hash
    same = evidence.Folder.scan(tmp_path)
    assert same.adopt({path.name: lying}) == [path.name] and same.digest(path.name) == lying
    NOT_THE_SAME_FILE[change](path)
    folder = evidence.Folder.scan(tmp_path)
    assert folder.adopt({path.name: lying}) == []
    got = folder.digest(path.name)
    if path.is_file() and not path.is_symlink():
        assert got is not None and got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        assert got is None


def test_a_known_digest_without_an_identity_or_of_another_size_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"archive bytes")
    digest = hash_file(path)
    folder = evidence.Folder.scan(tmp_path)
    unknown = {
        path.name: dataclasses.replace(digest, identity=None),
        "absent.zip": digest,
    }
    assert folder.adopt(unknown) == []
    assert folder.adopt({path.name: dataclasses.replace(digest, size=digest.size + 1)}) == []
    assert folder.adopt({path.name: digest}) == [path.name]
    assert folder.adopt({path.name: digest}) == [], "taken once: a digest already there stays"


def _counting_archive_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the archives the audit unpacks itself (each name, once per read)."""
    read: list[str] = []
    real = evidence.read_archive

    def counting(path: Path, archive: str, *args: Any) -> Any:
        read.append(archive)
        return real(path, archive, *args)

    monkeypatch.setattr(audit_checks, "read_archive", counting)
    return read


def _archive_check(report: AuditReport) -> str:
    return next(c.summary for c in report.checks if c.name == "archives")


def test_a_verified_release_s_archives_are_unpacked_once_by_the_inspection(
    complete: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """in-toto-verify ran this project's inspection, which read every archive: the audit does not unpack them again,
    and what it reports of them is what it reports when it reads them itself."""
    read = _counting_archive_reads(monkeypatch)
    report = complete.audit()
    assert report.verified, "\n".join(f.text() for f in report.findings)
    assert read == []
    assert f"({len(ARCHIVES)} by the layout's inspection in in-toto-verify, read once)" in _archive_check(report)
    monkeypatch.setattr(evidence, "_program", lambda: "another inspection program")  # an older release's, say
    again = complete.audit()
    assert sorted(read) == sorted(ARCHIVES), "another program's verdict is not taken: each archive is read here"
    assert again.verified and "by the layout's inspection" not in _archive_check(again)
    assert again.archives == report.archives and again.sources == report.sources


def test_a_release_in_toto_verify_refuses_has_its_archives_read_by_the_audit(
    complete: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = _counting_archive_reads(monkeypatch)
    (complete.folder / "README.txt").write_text("not part of the release\n")
    report = complete.audit()
    assert not report.in_toto.ok and not report.verified
    assert sorted(read) == sorted(ARCHIVES)
    assert "by the layout's inspection" not in _archive_check(report)


def test_declared_contents_only_when_every_link_of_the_step_declares_the_same(complete: Case) -> None:
    """The inspection reads one link of a step; two builders' links that declare different members are never
    taken for the archive's contents (the audit unpacks it instead)."""
    layout = evidence.layout_view(Metablock.load(str(complete.folder / attest.LAYOUT_NAME)).signed)
    assert layout.config is not None and layout.ours
    bundle = next(b for b in layout.config.bundles if b.step == "package-core")
    path = sorted(complete.folder.glob("package-core.*.link"))[0]  # one builder's
    signed = json.loads(path.read_text())["signed"]
    link = inspection.Link(path.name, signed)
    contents = evidence.declared_contents(CORE, bundle, [link, link])
    assert contents is not None and contents.readable and contents.members
    members = signed["environment"]["archive-members"]
    fewer = inspection.Link(path.name, {**signed, "environment": {**signed["environment"],
                                                                  "archive-members": members[:-1]}})  # fmt: skip
    assert evidence.declared_contents(CORE, bundle, [link, fewer]) is None
    assert evidence.declared_contents(CORE, bundle, []) is None


def test_prepare_is_idempotent_and_starts_the_validator_in_the_background() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda _: audit_checks.prepare(), range(8))) == [None] * 8
    warm = sbom.warm_validator()
    assert warm.daemon
    warm.join(timeout=300)
    assert not warm.is_alive() and sbom.SPEC_VERSION in sbom._VALIDATORS


# --- SBOM and provenance tampering: caught even when the links agree ---------------------


def _lying_sbom(case: Case, cargo: Path) -> None:
    """A malicious packager (build key) ships an SBOM that hides a file, and records it honestly."""
    name = "ransomeye-core-1.0.0.cdx.json"
    doc = json.loads((case.folder / name).read_text())
    doc["components"] = [c for c in doc["components"] if not c["name"].endswith("ransomeye-tuner")]
    (case.folder / name).write_text(json.dumps(doc, indent=2))
    case.relink("package-core", products={CORE: hash_file(case.folder / CORE).sha256,
                                          name: hash_file(case.folder / name).sha256})  # fmt: skip
    resign_and_relist(case, name)
    write_provenance(case)


def _sbom_of_another_archive(case: Case, cargo: Path) -> None:
    core, dpi = "ransomeye-core-1.0.0.cdx.json", "ransomeye-dpi-1.0.0.cdx.json"
    shutil.copy(case.folder / dpi, case.folder / core)
    case.relink("package-core", products={CORE: hash_file(case.folder / CORE).sha256,
                                          core: hash_file(case.folder / core).sha256})  # fmt: skip
    resign_and_relist(case, core)
    write_provenance(case)


def _sbom_schema_broken(case: Case, cargo: Path) -> None:
    name = "ransomeye-dpi-1.0.0.cdx.json"
    doc = json.loads((case.folder / name).read_text())
    doc["components"][0]["type"] = "spaceship"
    (case.folder / name).write_text(json.dumps(doc))
    case.relink("package-dpi", products={DPI: hash_file(case.folder / DPI).sha256,
                                         name: hash_file(case.folder / name).sha256})  # fmt: skip
    resign_and_relist(case, name)
    write_provenance(case)


def _wrong_subject(statement: dict[str, Any]) -> None:
    statement["subject"][0]["digest"]["sha256"] = "0" * 64


def _missing_subject(statement: dict[str, Any]) -> None:
    statement["subject"] = [s for s in statement["subject"] if s["name"] != DPI]


def _hidden_dependency(statement: dict[str, Any]) -> None:
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    statement["predicate"]["buildDefinition"]["resolvedDependencies"] = [d for d in deps if d["name"] != "Cargo.lock"]


SBOM_PROVENANCE_CASES: list[tuple[str, Callable[[Case, Path], None], str, str]] = [
    ("sbom-hides-a-binary", _lying_sbom, "sboms", "ransomeye-core-1.0.0/bin/ransomeye-tuner"),
    ("sbom-of-another-archive", _sbom_of_another_archive, "sboms", "ransomeye-core-1.0.0.cdx.json"),
    ("sbom-not-cyclonedx", _sbom_schema_broken, "sboms", "not valid CycloneDX 1.6"),
    ("provenance-wrong-subject-hash", lambda c, _: write_provenance(c, change=_wrong_subject), "provenance", "0000"),
    ("provenance-missing-subject", lambda c, _: write_provenance(c, change=_missing_subject), "provenance", DPI),
    ("provenance-hides-a-source-file", lambda c, _: write_provenance(c, change=_hidden_dependency), "provenance",
     "Cargo.lock"),
    ("provenance-signed-by-release-key", lambda c, _: write_provenance(c, key_role="release"), "provenance",
     "not verified with the build key"),
]  # fmt: skip


@pytest.mark.parametrize(
    "tamper, check, expected",
    [(t, c, e) for _, t, c, e in SBOM_PROVENANCE_CASES],
    ids=[n for n, _, _, _ in SBOM_PROVENANCE_CASES],
)
def test_lying_sbom_or_provenance_is_named(
    complete: Case, cargo: Path, tamper: Callable[[Case, Path], None], check: str, expected: str
) -> None:
    tamper(complete, cargo)
    report = complete.audit()
    assert not report.verified
    # A lying SBOM also lies about its binaries' sources, which the sources check compares with the build link.
    also = {"sources"} if check == "sboms" and "schema" not in expected and "CycloneDX" not in expected else set()
    assert failing(report) - also == {check}, "\n".join(f.text() for f in report.findings)
    assert named(report, check, expected), report.check(check).findings


def test_sbom_missing_and_provenance_missing_are_named(complete: Case) -> None:
    (complete.folder / "ransomeye-dpi-1.0.0.cdx.json").unlink()
    (complete.folder / PROVENANCE).unlink()
    report = complete.audit()
    assert named(report, "sboms", "ransomeye-dpi-1.0.0.cdx.json")
    assert named(report, "provenance", PROVENANCE)
    assert named(report, "checksums", "ransomeye-dpi-1.0.0.cdx.json")  # listed but gone
    assert not report.in_toto.ok


# --- today's release and the tamper matrix ------------------------------------------------


def _flip(case: Case, name: str, offset: int | None = None) -> None:
    path = case.folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def _new_layout(case: Case, signer: str, expires: datetime) -> None:
    layout = attest.build_layout(case.repo.ws, functionaries(case.repo.keys), expires,
    )  # fmt: skip
    attest.write_layout(attest.sign_layout(layout, case.key(signer)), case.folder / attest.LAYOUT_NAME)


def _foreign_key_link(case: Case) -> None:
    path = case.link("package-core")
    mb = Metablock.load(str(path))
    mb.signatures = []
    mb.create_signature(CryptoSigner(Ed25519PrivateKey.generate()))
    mb.dump(str(path))


def _edit_link(case: Case) -> None:
    path = case.link("package-core")
    data = json.loads(path.read_text())
    data["signed"]["products"][CORE]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))


def _edit_layout(case: Case) -> None:
    path = case.folder / attest.LAYOUT_NAME
    data = json.loads(path.read_text())
    for step in data["signed"]["steps"]:
        if step["name"] == "package-core":
            step["expected_materials"] = [["ALLOW", "*"]]
    path.write_text(json.dumps(data))


def _repack_core_with_edge(case: Case) -> WrittenArchive:
    src = case.folder.parent / "unpacked"
    with tarfile.open(case.folder / CORE) as tar:
        tar.extractall(src, filter="data")
    top = src / "ransomeye-core-1.0.0"
    (top / "edge" / "agent").mkdir(parents=True)
    (top / "edge" / "agent" / "implant.rs").write_text("fn main() {}\n")
    return write_tar_gz(collect_tree(src, top, "ransomeye-core-1.0.0"), case.folder / CORE, EPOCH)


def _repacked_core_relisted(case: Case) -> None:
    _repack_core_with_edge(case)
    write_hash_list(case.folder)  # SHA256SUMS regenerated to match


def _malicious_packager(case: Case) -> None:
    """The packager (build key) adds edge/ material, records it as its product; the release stage re-signs."""
    written = _repack_core_with_edge(case)
    link = case.signed("package-core")
    products = {n: d["sha256"] for n, d in link["products"].items()}
    case.relink(
        "package-core",
        products={**products, CORE: written.digest.sha256},
        environment={**link["environment"], **declared(written)},
    )
    if list(case.folder.glob(f"{provenance.STEP_PROVENANCE}.*.link")):
        write_provenance(case)  # the build key signs the provenance too
    resign_and_relist(case, CORE)


def _sums_line_changed(case: Case) -> None:
    path = case.folder / SUMS_NAME
    lines = [("0" * 64 + line[64:]) if line.endswith(ARCHIVES[1]) else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def _sums_extra_existing_file(case: Case) -> None:
    extra = case.folder / "notes.txt"
    extra.write_text("harmless?\n")
    with (case.folder / SUMS_NAME).open("a") as f:
        f.write(f"{hash_file(extra).sha256}  notes.txt\n")


def _mixed_versions(case: Case) -> None:
    """An old core archive (another version, properly signed) dropped into the folder."""
    old = case.folder / "ransomeye-core-0.9.0.tar.gz"
    shutil.copy(case.folder / CORE, old)
    sign_digest(case.key("release"), hash_file(old), "0.9.0", EPOCH)


Tamper = Callable[[Case], object]
# (id, tamper, [(check, text it must name)]); the stock in-toto-verify must fail in every case too.
TAMPER_CASES: list[tuple[str, Tamper, list[tuple[str, str]]]] = [
    ("flipped-byte-archive", partial(_flip, name=CORE),
     [("checksums", CORE), ("signatures", CORE + ".minisig"), ("links", CORE), ("archives", "(not unpacked)")]),
    ("flipped-byte-zip", partial(_flip, name=ARCHIVES[2]),
     [("checksums", ARCHIVES[2]), ("signatures", ARCHIVES[2] + ".minisig")]),
    ("flipped-byte-signature", partial(_flip, name=DPI + ".minisig", offset=60),
     [("signatures", DPI + ".minisig"), ("checksums", DPI + ".minisig")]),
    ("flipped-byte-sums-signature", partial(_flip, name=SUMS_NAME + ".minisig", offset=60),
     [("signatures", SUMS_NAME + ".minisig"), ("links", SUMS_NAME + ".minisig")]),
    ("extra-file", lambda c: (c.folder / "README.txt").write_text("hi\n"), [("files", "README.txt")]),
    ("missing-link", lambda c: c.link("sign").unlink(), [("links", "sign")]),
    ("link-signed-by-unlisted-key", _foreign_key_link, [("links", "package-core.")]),
    ("link-copied-over-another-step", lambda c: shutil.copy(c.link("package-dpi"), c.link("package-core")),
     [("links", "is the link of step 'package-dpi'")]),
    ("link-edited-without-resigning", _edit_link, [("links", "signature does not verify")]),
    ("layout-signed-by-functionary", lambda c: _new_layout(c, "build", datetime.now(UTC) + timedelta(days=30)),
     [("layout", "not signed by the owner key")]),
    ("layout-expired", lambda c: _new_layout(c, "owner", datetime.now(UTC) - timedelta(days=1)),
     [("layout", "expired")]),
    ("layout-edited-after-signing", _edit_layout, [("layout", "not signed by the owner key")]),
    ("core-repacked-with-edge", _repacked_core_relisted,
     [("links", CORE), ("signatures", CORE + ".minisig")]),
    ("malicious-packager-honest-links", _malicious_packager,
     [("in-toto", "ransomeye-core-1.0.0∕edge is edge∕ material"), ("archives", "ransomeye-core-1.0.0/edge is edge/")]),
    ("sums-changed-line", _sums_line_changed, [("checksums", ARCHIVES[1])]),
    ("sums-extra-line-missing-file", lambda c: (c.folder / SUMS_NAME).open("a").write("1" * 64 + "  rootkit.tar.gz\n"),
     [("checksums", "rootkit.tar.gz")]),
    ("sums-extra-line-existing-file", _sums_extra_existing_file, [("checksums", "notes.txt"), ("files", "notes.txt")]),
    ("mixed-versions", _mixed_versions, [("files", "ransomeye-core-0.9.0.tar.gz")]),
]  # fmt: skip


@pytest.mark.parametrize("tamper, expected", [(t, e) for _, t, e in TAMPER_CASES], ids=[n for n, _, _ in TAMPER_CASES])
def test_tampering_fails_the_audit_and_is_named(today: Case, tamper: Tamper, expected: list[tuple[str, str]]) -> None:
    tamper(today)
    report = today.audit()
    assert not report.verified
    assert not report.in_toto.ok and named(report, "in-toto", "")
    for check, text in expected:
        assert named(report, check, text), f"{check} must name {text!r}: {report.check(check).findings}"


# --- the command, as an auditor runs it ------------------------------------------------------

NO_NETWORK = """
import sys
def _deny(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.__new__"):
        raise PermissionError(f"network access during the audit: {event}")
sys.addaudithook(_deny)
"""


def _offline_env(tmp_path: Path) -> dict[str, str]:
    guard = tmp_path / "no-network"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANSOMEYE_", "PYTHON"))}
    env["PYTHONPATH"] = str(guard)
    return env


def _tool_copy(tmp_path: Path) -> Path:
    """The audit tool alone (the ``release`` package): no Cargo.toml, no keys, no governance, no artifacts."""
    tool = tmp_path / "tool"
    shutil.copytree(
        ROOT / "release", tool / "release",
        ignore=shutil.ignore_patterns("artifacts", ".staging", ".previous", "__pycache__", "*.lock"),
    )  # fmt: skip
    return tool / "release" / "audit" / "audit.py"


def _run(script: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_network_guard_works(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
        cwd=tmp_path, env=_offline_env(tmp_path), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "network access during the audit" in proc.stderr


def test_command_offline_outside_the_repository(complete: Case, tmp_path: Path) -> None:
    work = tmp_path / "auditor"
    work.mkdir()
    shutil.copy(complete.owner_pub, work / "ransomeye-owner.pub")
    script = _tool_copy(tmp_path)
    before = _state(complete.folder)
    proc = _run(script, str(complete.folder), "--owner-key", "ransomeye-owner.pub", "--json", "audit.json",
                "--html", "audit.html", cwd=work, env=_offline_env(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verdict: VERIFIED" in proc.stdout
    assert _state(complete.folder) == before
    data = json.loads((work / "audit.json").read_text())
    assert data["schema"] == "ransomeye.audit/v1" and data["verified"] is True and data["failures"] == []
    assert data["source_commit"] == COMMIT
    assert {s["name"] for s in data["steps"]} >= {"gates", "build", "sign", "checksums", "provenance"}
    html = (work / "audit.html").read_text()
    assert "✔ VERIFIED" in html and CORE in html and COMMIT in html
    for external in ("<script", "<link", "src=", "url(", "@import"):
        assert external not in html, f"the HTML report must be self-contained ({external})"


def test_command_exit_codes(today: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = _offline_env(tmp_path)
    owner = str(today.owner_pub)
    _flip(today, DPI)
    failed = _run(AUDIT_SCRIPT, str(today.folder), "--owner-key", owner, cwd=tmp_path, env=env)
    assert failed.returncode == 1, failed.stderr
    assert "Verdict: VERIFICATION FAILED" in failed.stdout and f"[checksums] {DPI}" in failed.stdout
    could_not_run = _run(AUDIT_SCRIPT, str(tmp_path / "nowhere"), "--owner-key", owner, cwd=tmp_path, env=env)
    assert could_not_run.returncode == 2 and "audit: error:" in could_not_run.stderr
    # The same entry point in-process, for the other ways it cannot run.
    assert audit_main([str(today.folder), "--owner-key", owner, "--quiet"]) == 1
    assert capsys.readouterr().out.startswith("Verdict: VERIFICATION FAILED")
    (tmp_path / "garbage.pub").write_text("not a key\n")
    for args in (
        [],
        [str(today.folder)],
        [str(today.folder), "--owner-key", str(tmp_path / "missing.pub")],
        [str(today.folder), "--owner-key", str(tmp_path / "garbage.pub")],
        [str(today.folder), "--owner-key", owner, "--json", str(tmp_path / "no-such-dir" / "a.json")],
    ):
        assert audit_main(args) == 2, args
        assert "audit: error:" in capsys.readouterr().err


def test_data_hidden_after_the_end_of_a_tar_is_found(tmp_path: Path) -> None:
    top = tmp_path / "ransomeye-dpi-1.0.0"
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "ransomeye-dpi").write_bytes(b"\x7fELF")
    plain = tmp_path / "plain.tar.gz"
    write_tar_gz(collect_tree(tmp_path, top, top.name), plain, EPOCH)
    hidden = tmp_path / "hidden.tar"
    with tarfile.open(hidden, "w") as tar:
        tar.add(top / "bin" / "ransomeye-dpi", "ransomeye-dpi-1.0.0/bin/implant")
    smuggled = tmp_path / "ransomeye-dpi-1.0.0.tar.gz"
    smuggled.write_bytes(gzip.compress(gzip.decompress(plain.read_bytes()) + hidden.read_bytes(), mtime=0))

    def members(path: Path) -> list[str]:
        fd = os.open(path, os.O_RDONLY)
        try:
            expect = inspection.Expectation(path.name, None)
            source = inspection.Source(fd, path.stat().st_size)
            return [m.name for m in inspection.read_archive(source, path.name, "tar.gz", expect)]
        finally:
            os.close(fd)

    assert members(plain) == [top.name, f"{top.name}/bin", f"{top.name}/bin/ransomeye-dpi"]
    with pytest.raises(inspection.Refused, match="holds data after its end-of-archive marker"):
        members(smuggled)


def test_bad_input_raises_from_the_library(today: Case, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a directory"):
        audit(tmp_path / "nowhere", today.owner_pub)
    with pytest.raises(BadInputError, match="public key not found"):
        audit(today.folder, tmp_path / "owner.pub")


def test_reports_name_every_failure(today: Case, tmp_path: Path) -> None:
    _flip(today, CORE)
    (today.folder / "<img src=x onerror=alert(1)>").write_text("x")
    report = today.audit()
    write_json(report, tmp_path / "r.json")
    write_html(report, tmp_path / "r.html")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verified"] is False and len(data["failures"]) == len(report.findings) > 0
    html = (tmp_path / "r.html").read_text()
    text = render_text(report)
    assert render_html(report) == html
    for f in report.findings:
        assert f.subject in text
    assert "VERIFICATION FAILED" in html and "<img" not in html, "folder names are escaped"
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_integrated_release_audits_clean(released: Repo) -> None:
    """The pipeline's own output: SBOMs, the gates report and the provenance included."""
    report = audit(released.artifacts, released.keys / "owner.pub")
    assert report.verified, "\n".join(f.text() for f in report.findings)
    core = {b.binary: [p for p, _ in b.sources] for b in report.sources}
    assert core[f"bin/{HOST_TARGET}/ransomeye-core"] == ["core/src/main.rs"]
    assert report.check("sources").passed
    assert "Sources (each binary's inputs" in render_text(report) and "Source provenance" in render_html(report)


def _binary_inputs(change: Callable[[dict[str, Any]], None]) -> Callable[[Case], None]:
    """A build-key holder that re-signs the build link with other ``binary-inputs``."""

    def tamper(case: Case) -> None:
        env = case.signed("build")["environment"]
        inputs = json.loads(json.dumps(env.get("binary-inputs", {})))
        change(inputs)
        case.relink("build", environment={**env, "binary-inputs": inputs})

    return tamper


CORE_BIN = f"bin/{HOST_TARGET}/ransomeye-core"
SOURCE_CASES: list[tuple[str, Callable[[Case], None], str]] = [
    ("core-binary-from-an-edge-file", _binary_inputs(lambda i: i[CORE_BIN].append("edge/agent/src/agent.rs")),
     "a core binary compiled from edge/agent/src/agent.rs, edge/ material"),
    ("core-binary-from-ungated-source", _binary_inputs(lambda i: i[CORE_BIN].append("vendor/x.rs")),
     "was compiled from vendor/x.rs, which is not gated source"),
    ("a-binary-without-sources", _binary_inputs(lambda i: i.pop(CORE_BIN)), "lists no source file for it"),
    ("no-binary-inputs-at-all", lambda c: c.relink("build", environment={}), "records no binary-inputs"),
    ("sbom-disagrees-with-the-link", _binary_inputs(lambda i: i[CORE_BIN].append("core/src/tuner.rs")),
     "lists other sources for bin/ransomeye-core than the build link records"),
]  # fmt: skip


@pytest.mark.parametrize("tamper, text", [(t, x) for _, t, x in SOURCE_CASES], ids=[n for n, _, _ in SOURCE_CASES])
def test_each_binarys_sources_are_checked(today: Case, tamper: Callable[[Case], None], text: str) -> None:
    tamper(today)
    report = today.audit()
    assert not report.verified
    assert named(report, "sources", text), report.check("sources").findings
