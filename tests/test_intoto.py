"""The tamper matrix: the stock in-toto-verify accepts the honest release and rejects every tampering.

Each case copies a real release made by ``build.py``, tampers with it as an
attacker would (with the real functionary keys where the attack needs them),
runs the stock ``in-toto-verify`` in a subprocess in the release folder, and
checks the exit code and the reason it gives.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from in_toto.models.metadata import Metablock
from securesystemslib.signer import CryptoSigner

from release import attest, inspection
from release.archive import WrittenArchive, collect_tree, hash_file, write_tar_gz
from release.bundle import package
from release.checksums import write_hash_list
from release.pipeline import functionaries
from release.signing import sign_digest
from tests.conftest import EPOCH, Repo
from tests.forge import ARCHIVES, CORE, Disallowed, Download, declared, disallowed, marker, reason, verify

pytestmark = pytest.mark.slow
SBOM = "ransomeye-dpi-1.0.0.cdx.json"
Case = Download
Expected = str | Disallowed


@pytest.fixture
def case(released: Repo, tmp_path: Path) -> Case:
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    return Case(folder, released)


def test_honest_release_verifies(case: Case) -> None:
    proc = verify(case.folder, case.repo.keys / "owner.pub")
    assert proc.returncode == 0, reason(proc)
    # A second run in the same folder (with the inspection leftovers) verifies too.
    assert verify(case.folder, case.repo.keys / "owner.pub").returncode == 0


def test_owner_key_delivered_separately(case: Case, tmp_path: Path) -> None:
    delivered = tmp_path / "from-the-website" / "ransomeye-owner.pub"
    delivered.parent.mkdir()
    shutil.copy(case.repo.keys / "owner.pub", delivered)
    assert verify(case.folder, delivered).returncode == 0


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _tamper_flip(case: Case, tmp: Path, name: str, offset: int | None = None) -> None:
    _flip(case.folder / name, offset)


def _tamper_extra_file(case: Case, tmp: Path) -> None:
    (case.folder / "README.txt").write_text("hi\n")


def _repack_core_with_edge(case: Case, tmp: Path) -> WrittenArchive:
    """Unpack the core archive, add an edge/ file, pack it again with the project's own writer."""
    src = tmp / "unpacked"
    with tarfile.open(case.folder / CORE) as tar:
        tar.extractall(src, filter="data")
    top = src / "ransomeye-core-1.0.0"
    (top / "edge" / "agent").mkdir(parents=True)
    (top / "edge" / "agent" / "implant.rs").write_text("fn main() {}\n")
    return write_tar_gz(collect_tree(src, top, "ransomeye-core-1.0.0"), case.folder / CORE, EPOCH)


def _tamper_repacked_core(case: Case, tmp: Path) -> None:
    _repack_core_with_edge(case, tmp)
    write_hash_list(case.folder)  # SHA256SUMS regenerated to match


def _tamper_malicious_packager(case: Case, tmp: Path) -> None:
    """A packager (holding the build key) adds edge/ material but records honest materials."""
    case.adopt_archive(CORE, declared(_repack_core_with_edge(case, tmp)))


def _tamper_broken_archive(case: Case, tmp: Path) -> None:
    """A packager (holding the build key) signs a core archive cut short: its hash matches, unpacking fails."""
    path = case.folder / CORE
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    case.adopt_archive(CORE)


def _tamper_foreign_key_link(case: Case, tmp: Path) -> None:
    path = case.link("package-core")
    mb = Metablock.load(str(path))
    mb.signatures = []
    mb.create_signature(CryptoSigner(Ed25519PrivateKey.generate()))
    mb.dump(str(path))


def _tamper_link_copied(case: Case, tmp: Path) -> None:
    """Each builder's package-dpi link copied over its package-core link (a file copy: no key needed)."""
    for key in case.step_keys("package-core"):
        shutil.copy(case.folder / attest.link_filename("package-dpi", key.public),
                    case.folder / attest.link_filename("package-core", key.public))  # fmt: skip


def _tamper_link_edited(case: Case, tmp: Path) -> None:
    path = case.link("package-core")
    data = json.loads(path.read_text())
    data["signed"]["products"][CORE]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))


def _new_layout(case: Case, signer: str, expires: datetime) -> None:
    ws = case.repo.ws
    layout = attest.build_layout(ws, functionaries(case.repo.keys), expires)
    attest.write_layout(attest.sign_layout(layout, case.key(signer)), case.folder / "root.layout")


def _tamper_layout_edited(case: Case, tmp: Path) -> None:
    path = case.folder / "root.layout"
    data = json.loads(path.read_text())
    for step in data["signed"]["steps"]:
        if step["name"] == "package-core":
            step["expected_materials"] = [["ALLOW", "*"]]
    path.write_text(json.dumps(data))


def _tamper_sums_changed_line(case: Case, tmp: Path) -> None:
    path = case.folder / "SHA256SUMS"
    lines = path.read_text().splitlines()
    lines[0] = "0" * 64 + lines[0][64:]
    path.write_text("\n".join(lines) + "\n")


def _tamper_sums_extra_line_missing_file(case: Case, tmp: Path) -> None:
    with (case.folder / "SHA256SUMS").open("a") as f:
        f.write("1" * 64 + "  ransomeye-rootkit-1.0.0.tar.gz\n")


def _tamper_sums_extra_line_existing_file(case: Case, tmp: Path) -> None:
    extra = case.folder / "notes.txt"
    extra.write_text("harmless?\n")
    with (case.folder / "SHA256SUMS").open("a") as f:
        f.write(f"{hash_file(extra).sha256}  notes.txt\n")


def _tamper_mixed_versions(case: Case, tmp: Path) -> None:
    """The core archive of another version (packaged from the same binaries) dropped into the folder."""
    repo = case.repo
    ws = dataclasses.replace(repo.ws, version="0.9.0")
    bin_root = tmp / "bin"
    target = ws.bundle("core").target
    (bin_root / target).mkdir(parents=True)
    for f in ws.bundle("core").binary_files():
        shutil.copy(repo.root / "target" / target / "release" / f, bin_root / target / f)
    old = package(ws, ws.bundle("core"), bin_root, case.folder, EPOCH)
    sign_digest(case.key("release"), old.digest, "0.9.0", EPOCH)


Tamper = Callable[[Case, Path], None]
CASES: list[tuple[str, Tamper, Expected]] = [
    *((f"flipped-byte-{a}", partial(_tamper_flip, name=a), disallowed(a)) for a in ARCHIVES),
    *(
        (f"flipped-byte-{a}.minisig", partial(_tamper_flip, name=f"{a}.minisig", offset=60), disallowed(f"{a}.minisig"))
        for a in ARCHIVES
    ),
    (
        "flipped-byte-SHA256SUMS.minisig",
        partial(_tamper_flip, name="SHA256SUMS.minisig", offset=60),
        "SHA256SUMS.minisig",
    ),
    ("core-repacked-with-edge", _tamper_repacked_core, disallowed("SHA256SUMS", CORE)),
    (
        "malicious-packager-honest-materials",
        _tamper_malicious_packager,
        marker("member ransomeye-core-1.0.0/edge is edge/"),
    ),
    ("packager-signs-a-broken-archive", _tamper_broken_archive, marker(f"{CORE}: the gzip stream is cut short")),
    ("signature-deleted", lambda c, t: (c.folder / f"{CORE}.minisig").unlink(), marker(f"{CORE}.minisig: missing")),
    ("sbom-deleted", lambda c, t: (c.folder / SBOM).unlink(), marker(f"{SBOM}: missing")),
    ("missing-link", lambda c, t: c.link("sign").unlink(), "LinkNotFoundError"),
    ("link-signed-by-unlisted-key", _tamper_foreign_key_link, "package-core"),
    ("link-copied-over-another-step", _tamper_link_copied, "REQUIRE bin/x86_64-unknown-linux-gnu/ransomeye-core"),
    ("link-edited-without-resigning", _tamper_link_edited, "package-core"),
    (
        "expired-layout",
        lambda c, t: _new_layout(c, "owner", datetime.now(UTC) - timedelta(days=1)),
        "LayoutExpiredError",
    ),
    (
        "layout-signed-by-functionary",
        lambda c, t: _new_layout(c, "build", datetime.now(UTC) + timedelta(days=30)),
        "SignatureVerificationError",
    ),
    ("layout-edited-after-signing", _tamper_layout_edited, "SignatureVerificationError"),
    ("extra-file", _tamper_extra_file, disallowed("README.txt")),
    ("sums-changed-line", _tamper_sums_changed_line, disallowed("SHA256SUMS")),
    ("sums-extra-line-missing-file", _tamper_sums_extra_line_missing_file, disallowed("SHA256SUMS")),
    ("sums-extra-line-existing-file", _tamper_sums_extra_line_existing_file, "notes.txt"),
    (
        "mixed-versions",
        _tamper_mixed_versions,
        disallowed("ransomeye-core-0.9.0.tar.gz", "ransomeye-core-0.9.0.tar.gz.minisig"),
    ),
]


@pytest.mark.parametrize("tamper, expected", [(t, e) for _, t, e in CASES], ids=[n for n, _, _ in CASES])
def test_tampering_is_rejected(case: Case, tmp_path: Path, tamper: Tamper, expected: Expected) -> None:
    tamper(case, tmp_path)
    proc = verify(case.folder, case.repo.keys / "owner.pub")
    assert proc.returncode == 1, "in-toto-verify must reject the tampered release"
    found = expected.found_in(reason(proc)) if isinstance(expected, Disallowed) else expected in reason(proc)
    assert found, reason(proc)


def test_the_inspection_names_the_forbidden_member(case: Case, tmp_path: Path) -> None:
    """The malicious packager is caught by the inspection reading the core archive, by the member's name."""
    _tamper_malicious_packager(case, tmp_path)
    proc = verify(case.folder, case.repo.keys / "owner.pub")
    assert proc.returncode == 1
    assert inspection.MARKER + "package-core." in reason(proc)
    assert marker("declared member ransomeye-core-1.0.0/edge is edge/ material, which the core bundle") in reason(proc)


def test_files_listed_but_missing_are_named(case: Case) -> None:
    """Deleted files match no rule to fail; the inspection names every product missing from the folder."""
    (case.folder / SBOM).unlink()
    (case.folder / f"{SBOM}.minisig").unlink()
    proc = verify(case.folder, case.repo.keys / "owner.pub")
    assert proc.returncode == 1
    assert marker(f"{SBOM}: missing (the product of package-dpi)") in reason(proc)
    assert marker(f"{SBOM}.minisig: missing (the product of sign)") in reason(proc)


def test_links_record_exactly_what_each_step_read_and_wrote(released: Repo) -> None:
    folder = released.artifacts
    links = {p.name.split(".")[0]: json.loads(p.read_text())["signed"] for p in folder.glob("*.link")}
    assert sorted(links) == sorted(attest.step_names(released.ws))
    ws = released.ws
    # gates and build read exactly the gated source (no caches, nothing skipped)
    assert links["build"]["materials"].keys() - {"gates-report.json"} == links["gates"]["materials"].keys()
    assert not [m for m in links["gates"]["materials"] if "__pycache__" in m or m.endswith(".pyc")]
    assert "core/src/main.rs" in links["gates"]["materials"]
    # the core packager read its binaries and assets only
    core = links["package-core"]
    assert sorted(m for m in core["materials"] if m.startswith("bin/")) == [
        f"bin/x86_64-unknown-linux-gnu/{b}" for b in sorted(ws.bundle("core").binaries)
    ]
    assert not [m for m in core["materials"] if m.startswith("edge/") or "/edge/" in m]
    assert sorted(core["products"]) == ["ransomeye-core-1.0.0.cdx.json", CORE]
    assert core["products"][CORE]["sha256"] == hash_file(folder / CORE).sha256
    for name, link in links.items():
        assert link["byproducts"]["return-value"] == 0, name
        assert str(released.root) not in json.dumps(link), f"{name}: no machine paths in links"
