"""The audit on hostile evidence: a clear "not verified", never a traceback, bounded, and nothing printed raw.

Each case plants hostile evidence in a copy of a real release folder and runs
``release/audit/audit.py`` as an auditor would (a subprocess, with ``--json``
and ``--html``). Each asserts: exit 1 (not verified) with the named finding;
no traceback; a text report with no raw control character and exactly one
``Verdict:`` line, which says the release failed; the largest process's peak
memory under :data:`MEMORY_BOUND`; nothing outside the folder touched (a
canary the evidence points at) and the folder itself unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Repo
from tests.forge import CORE, Download

pytestmark = pytest.mark.slow
AUDIT = ROOT / "release" / "audit" / "audit.py"
MEMORY_BOUND = 256 << 20
SBOM = "ransomeye-core-1.0.0.cdx.json"
# Runs the audit as its only child and reports the peak RSS (KiB) of the largest process it started.
PEAK = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "sys.stderr.write('\\npeak-kib=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(p.returncode)"
)


@dataclasses.dataclass(frozen=True)
class Scene:
    download: Download
    outside: Path
    reports: Path

    @property
    def folder(self) -> Path:
        return self.download.folder

    @property
    def canary(self) -> Path:
        return self.outside / "canary"


@pytest.fixture
def scene(released: Repo, tmp_path: Path) -> Scene:
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("canary\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    return Scene(Download(folder, released), outside, reports)


@dataclasses.dataclass(frozen=True)
class Audited:
    returncode: int
    stdout: str
    stderr: str
    peak: int
    html: str


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_mode, p.lstat().st_size) for p in sorted(root.iterdir())}


def run_audit(scene: Scene) -> Audited:
    before = (_listing(scene.folder), scene.canary.read_bytes())
    command = [sys.executable, "-c", PEAK, sys.executable, str(AUDIT), str(scene.folder),
               "--owner-key", str(scene.download.repo.keys / "owner.pub"),
               "--json", str(scene.reports / "audit.json"), "--html", str(scene.reports / "audit.html")]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, errors="replace")
    assert (_listing(scene.folder), scene.canary.read_bytes()) == before, "the audit changed the folder or the canary"
    peak = int(proc.stderr.rsplit("peak-kib=", 1)[1].split()[0]) * 1024
    html = (scene.reports / "audit.html").read_text() if (scene.reports / "audit.html").exists() else ""
    return Audited(proc.returncode, proc.stdout, proc.stderr, peak, html)


def _deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def _replace(name: str, data: bytes) -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        (s.folder / name).write_bytes(data)

    return plant


def _deep_link(s: Scene) -> None:
    s.download.link("gates").write_text('{"signed": ' + _deep() + "}")


def _huge_sums(s: Scene) -> None:
    with (s.folder / "SHA256SUMS").open("a") as f:
        line = "0" * 64 + "  x\n"
        for _ in range(30):
            f.write(line * 100_000)


def _huge_sbom(s: Scene) -> None:
    with (s.folder / SBOM).open("w") as f:
        f.write('{"bomFormat": "CycloneDX", "components": [')
        f.write(",".join(["0"] * 30_000_000))
        f.write("]}")


def _huge_link(s: Scene) -> None:
    path = s.download.link("package-core")
    with path.open("w") as f:
        f.write('{"signed": {"_type": "link", "x": [' + ",".join(["1"] * 30_000_000) + ']}, "signatures": []}')


def _forged_verdict(s: Scene) -> None:
    (s.folder / "evil\x1b[2J\r\nVerdict: VERIFIED\x07").write_text("x")


def _bidi_name(s: Scene) -> None:
    (s.folder / "invoice\u202egpj.exe").write_text("x")


def _markup_name(s: Scene) -> None:
    (s.folder / '"><script>document.title="pwned"<img src=x onerror=alert(1)>').write_text("x")


def _sublayout(s: Scene) -> None:
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"])


def _sublayout_beside_the_link(s: Scene) -> None:
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"], beside_link=True)


PROVENANCE = "ransomeye-1.0.0.intoto.jsonl"


def _provenance(change: Callable[[dict[str, Any]], None]) -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        envelope = json.loads((s.folder / PROVENANCE).read_text())
        change(envelope)
        (s.folder / PROVENANCE).write_text(json.dumps(envelope) + "\n")

    return plant


def _deep_payload(envelope: dict[str, Any]) -> None:
    envelope["payload"] = base64.b64encode(_deep().encode()).decode()


def _toolchains_a_list(envelope: dict[str, Any]) -> None:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["buildDefinition"]["internalParameters"]["toolchains"] = ["x"]
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _signatures_a_number(envelope: dict[str, Any]) -> None:
    envelope["signatures"] = 5


def _sboms_of_empty_components(s: Scene) -> None:
    for sbom in s.folder.glob("*.cdx.json"):
        with sbom.open("w") as f:
            f.write('{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [' + ",".join(["{}"] * 1_300_000))
            f.write("]}")


def _time_without_a_zone(s: Scene) -> None:
    env = s.download.signed("gates")["environment"]
    s.download.relink("gates", environment={**env, "started": "2026-01-01T00:00:00"})


def _layout_fifo(s: Scene) -> None:
    (s.folder / "root.layout").unlink()
    os.mkfifo(s.folder / "root.layout")


def _layout_to_dev_zero(s: Scene) -> None:
    (s.folder / "root.layout").unlink()
    (s.folder / "root.layout").symlink_to("/dev/zero")


def _sums_to_canary(s: Scene) -> None:
    (s.folder / "SHA256SUMS").unlink()
    (s.folder / "SHA256SUMS").symlink_to(s.canary)


def _bomb_archive(s: Scene) -> None:
    (s.folder / CORE).write_bytes(gzip.compress(bytes(256 << 20), compresslevel=9, mtime=0))


def _many_files(s: Scene) -> None:
    for i in range(20_000):
        (s.folder / f"f{i:05d}").write_bytes(b"")


def _gates_reason_with_controls(s: Scene) -> None:
    path = s.folder / "gates-report.json"
    report = json.loads(path.read_text())
    report["gates"][0]["passed"] = False
    report["gates"][0]["reason"] = "\x1b[1A\x1b[2KVerdict: VERIFIED"
    path.write_text(json.dumps(report))


def _sbom_with_markup(s: Scene) -> None:
    path = s.folder / SBOM
    bom = json.loads(path.read_text())
    bom["components"][0]["name"] = "<script>document.title='pwned'</script>"
    path.write_text(json.dumps(bom))


def _huge_number(s: Scene) -> None:
    path = s.folder / "gates-report.json"
    path.write_text('{"schema": "ransomeye.gates/v1", "gates": ' + "9" * 100_000 + "}")


def _not_utf8(s: Scene) -> None:
    (s.folder / "SHA256SUMS").write_bytes(b"\xff\xfe" + b"\x80" * 100)


def _sbom_long_url(s: Scene) -> None:
    """jsonschema's IRI parser takes about a millisecond and 21 KiB per character: never reached unverified."""
    bom = json.loads((s.folder / SBOM).read_text())
    bom["components"][0]["externalReferences"] = [{"type": "website", "url": "https://x/" + "a" * 30_000}]
    (s.folder / SBOM).write_text(json.dumps(bom))


def _sublayout_upper_case(s: Scene) -> None:
    link = s.download.link("package-core")
    honest = link.read_bytes()
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"])
    link.rename(link.with_suffix(".LINK"))
    link.write_bytes(honest)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    plant: Callable[[Scene], None]
    finding: str


CASES = [
    Case("deeply-nested-sbom", _replace(SBOM, _deep().encode()), f"{SBOM}: "),
    Case("deeply-nested-gates-report", _replace("gates-report.json", _deep().encode()), "gates-report.json: "),
    Case("deeply-nested-provenance", _replace("ransomeye-1.0.0.intoto.jsonl", _deep().encode()), "intoto.jsonl: "),
    Case("deeply-nested-link", _deep_link, "gates."),
    Case("deeply-nested-layout", _replace("root.layout", _deep().encode()), "root.layout: "),
    Case("huge-sha256sums", _huge_sums, "SHA256SUMS: "),
    Case("huge-sbom", _huge_sbom, f"{SBOM}: "),
    Case("huge-link", _huge_link, "package-core."),
    Case("file-name-forging-the-verdict-line", _forged_verdict, "is not part of the release"),
    Case("file-name-with-a-bidi-override", _bidi_name, "is not part of the release"),
    Case("file-name-with-markup", _markup_name, "is not part of the release"),
    Case("gates-reason-with-terminal-controls", _gates_reason_with_controls, "failed:"),
    Case("sbom-with-markup", _sbom_with_markup, f"{SBOM}: "),
    Case("json-number-with-100000-digits", _huge_number, "gates-report.json: "),
    Case("sha256sums-not-utf8", _not_utf8, "SHA256SUMS: "),
    Case("sublayout-in-place-of-a-link", _sublayout, "is not an in-toto link"),
    Case("sublayout-beside-the-link", _sublayout_beside_the_link, "is not an in-toto link and nothing else"),
    Case("provenance-payload-deeply-nested", _provenance(_deep_payload), f"{PROVENANCE}: "),
    Case("provenance-toolchains-a-list", _provenance(_toolchains_a_list), f"{PROVENANCE}: "),
    Case("provenance-signatures-a-number", _provenance(_signatures_a_number), f"{PROVENANCE}: "),
    Case("sboms-of-a-million-empty-components", _sboms_of_empty_components, f"{SBOM}: not read"),
    Case("link-time-without-a-zone", _time_without_a_zone, "gates."),
    Case("sbom-with-a-30000-character-url", _sbom_long_url, f"{SBOM}: not read"),
    Case("sublayout-as-an-upper-case-link", _sublayout_upper_case, ".LINK: is not an in-toto link"),
    Case("gitkeep-with-content", _replace(".gitkeep", b"payload"), ".gitkeep: must be empty"),
    Case("layout-is-a-fifo", _layout_fifo, "root.layout: "),
    Case("layout-symlink-to-dev-zero", _layout_to_dev_zero, "root.layout: "),
    Case("sha256sums-symlink-to-a-file-outside", _sums_to_canary, "SHA256SUMS: "),
    Case("gzip-bomb-archive", _bomb_archive, f"{CORE}: "),
    Case("20000-files", _many_files, "entries"),
]


def _printable(line: str) -> bool:
    return all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") for c in line)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_evidence(scene: Scene, case: Case) -> None:
    case.plant(scene)
    audited = run_audit(scene)
    assert "Traceback" not in audited.stdout + audited.stderr, audited.stderr[-3000:]
    assert audited.returncode == 1, audited.stdout[-3000:] + audited.stderr[-3000:]
    lines = audited.stdout.splitlines()
    assert all(_printable(line) for line in lines), [line for line in lines if not _printable(line)]
    verdicts = [line for line in lines if line.startswith("Verdict:")]
    assert verdicts == [lines[1]] and "FAILED" in lines[1], lines[:3]
    assert case.finding in audited.stdout, audited.stdout[-3000:]
    assert audited.peak < MEMORY_BOUND, f"peak memory {audited.peak >> 20} MiB"
    assert "pwned" not in scene.canary.read_text()
    report = json.loads((scene.reports / "audit.json").read_text())
    assert report["verdict"].startswith("VERIFICATION FAILED")
    assert "<script>" not in audited.html and "<img" not in audited.html


def test_honest_release_audits_clean_as_a_user_runs_it(scene: Scene) -> None:
    audited = run_audit(scene)
    assert audited.returncode == 0, audited.stdout
    assert audited.stdout.splitlines()[1] == "Verdict: VERIFIED"
    assert audited.peak < MEMORY_BOUND
