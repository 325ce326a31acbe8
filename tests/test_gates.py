"""The release gates (governance/gates/): each passes on the real tree and fails on purpose in a copy.

Gates are called in-process through :func:`governance.gates.suite.run_gates`
for the verdicts, and ``check_gates.py`` is run as a user runs it (a plain
``sys.executable``, no venv, no PYTHONPATH) for exit codes, output and reports.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.gates import secret_scan
from governance.gates.limits import LIMITS, LimitSyntaxError, Unbounded, parse_memory
from governance.gates.policy import (
    parse_isolation,
    parse_resources,
    parse_secrets,
    parse_versions,
    read_toml_file,
)
from governance.gates.report import REPORT_SCHEMA, Report
from governance.gates.suite import GATE_NAMES, run_gates
from release.errors import BadInputError
from tests.gates_fixtures import (
    KEY_BODY,
    MEMBERS,
    POLICIES,
    REPO,
    SECRET_SAMPLES,
    append,
    build_repo,
    edit,
    pem_private_key,
    run_cli,
    write_member,
)

CORE_UNIT = "ops/services/core/ransomeye-core.service"


def line_of(path: Path, prefix: str) -> int:
    """The 1-based number of the first line of ``path`` starting with ``prefix``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(prefix))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository that passes every gate."""
    return build_repo(tmp_path / "repo")


def gate(report: Report, name: str) -> Any:
    return next(g for g in report.gates if g.name == name)


def failed_only(report: Report, name: str) -> list[str]:
    """Assert that exactly gate ``name`` failed; return its finding messages."""
    assert [g.name for g in report.gates if not g.passed] == [name], [g.line() for g in report.gates]
    assert not report.passed
    return [f.message for f in gate(report, name).findings]


# --------------------------------------------------------------------------- the real repository


def test_every_gate_passes_on_the_real_repository() -> None:
    report = run_gates(REPO)
    assert [g.name for g in report.gates] == list(GATE_NAMES)
    assert report.passed, "\n".join(g.line() for g in report.gates)


def test_cli_exits_0_on_the_real_repository(tmp_path: Path) -> None:
    out = tmp_path / "gates.json"
    result = run_cli("--report", out)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"PASS {name}" for name in GATE_NAMES]
    assert result.stderr == ""
    assert json.loads(out.read_bytes())["passed"] is True


_GATES_PROCESS = """
import atexit, runpy, sys
http = ("requests", "urllib3", "charset_normalizer", "idna", "certifi", "http.client")
atexit.register(lambda: print(" ".join(m for m in sorted(sys.modules) if m.split(".")[0] in http or m in http),
                              file=sys.stderr))
sys.argv = [sys.argv[1], "--root", sys.argv[2], "--report", sys.argv[3]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_gates_process_has_no_http_client_and_writes_the_same_report(tmp_path: Path) -> None:
    """Run as a command, the gates never import an HTTP stack (detect-secrets' requests is an offline stand-in),
    and their report is byte for byte the one the gates write in a process that has the real library."""
    script = REPO / "governance" / "gates" / "check_gates.py"
    out = tmp_path / "gates.json"
    proc = subprocess.run([sys.executable, "-c", _GATES_PROCESS, str(script), str(REPO), str(out)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.split() == ["requests", "requests.exceptions"], "the stand-in, and nothing under it"
    report = run_gates(REPO)
    assert out.read_bytes() == report.to_json()


def test_a_plugin_that_tries_the_network_in_the_gates_process_is_refused() -> None:
    """What the stand-in is for: detect-secrets' verify() sends the candidate secret to its service; here any
    request raises, whatever the plugin catches."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from governance.gates import offline; offline.install(); offline.install()\n"
        "from detect_secrets.plugins.stripe import StripeDetector\n"
        "from detect_secrets.plugins.slack import SlackDetector\n"
        "for plugin, secret in ((StripeDetector(), 'sk_live_' + 'a' * 24), (SlackDetector(), 'xoxb-1-2-abc')):\n"
        "    try:\n"
        "        plugin.verify(secret)\n"
        "    except offline.OfflineError:\n"
        "        print('refused')\n"
        "import requests\n"
        "try:\n"
        "    requests.Session\n"
        "except AttributeError:\n"
        "    print('no session')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert proc.stdout.split("\n")[:3] == ["refused", "refused", "no session"], proc.stdout + proc.stderr


def test_the_stand_in_comes_first_or_the_gates_do_not_run(tmp_path: Path) -> None:
    """A start-up hook that imports the real requests first (a .pth file here): one message, no traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "early.pth").write_text("import requests\n")
    code = "import site, runpy, sys; site.addsitedir(sys.argv[1]); sys.argv = sys.argv[2:]; "
    code += "runpy.run_path(sys.argv[0], run_name='__main__')"
    script = REPO / "governance" / "gates" / "check_gates.py"
    proc = subprocess.run([sys.executable, "-c", code, str(site), str(script), "--root", str(REPO)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "requests was imported before the gates started" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_fixture_repository_passes(repo: Path) -> None:
    report = run_gates(repo)
    assert report.passed, "\n".join(g.line() for g in report.gates)


# --------------------------------------------------------------------------- resources


def test_memory_above_the_cap_fails_resources(repo: Path) -> None:
    edit(repo / CORE_UNIT, "MemoryMax=1536M", "MemoryMax=8G")
    result = run_cli("--root", repo)
    assert result.returncode == 4
    assert "FAIL resources: ransomeye-core.service MemoryMax=8G exceeds the cap 2G" in result.stdout.splitlines()
    assert "PASS isolation" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("TasksMax=512\n", "", "ransomeye-core.service does not declare TasksMax= in [Service]"),
        ("CPUQuota=150%", "CPUQuota=250%", "ransomeye-core.service CPUQuota=250% exceeds the cap 200%"),
        ("LimitNOFILE=65536", "LimitNOFILE=1024:100000", "LimitNOFILE=1024:100000 exceeds the cap 65536"),
        ("MemoryMax=1536M", "MemoryMax=infinity", "MemoryMax=infinity is infinity"),
        ("MemoryMax=1536M", "MemoryMax=50%", "is relative to the host's memory"),
        ("TasksMax=512", "TasksMax=infinity", "TasksMax=infinity is infinity"),
        ("MemoryMax=1536M", "MemoryMax=", "resets MemoryMax= to empty"),
        ("MemoryMax=1536M", "MemoryMax=1G\nMemoryMax=3G", "MemoryMax=3G exceeds the cap 2G"),
        ("MemoryMax=1536M", "MemoryMax=2049M", "MemoryMax=2049M exceeds the cap 2G"),
    ],
)
def test_unit_limit_violations(repo: Path, old: str, new: str, expected: str) -> None:
    edit(repo / CORE_UNIT, old, new)
    messages = failed_only(run_gates(repo), "resources")
    assert any(expected in m for m in messages), messages


def test_a_limit_outside_the_service_section_does_not_count(repo: Path) -> None:
    unit = repo / CORE_UNIT
    edit(unit, "TasksMax=512\n", "")
    edit(unit, "[Unit]\n", "[Unit]\nTasksMax=512\n")
    messages = failed_only(run_gates(repo), "resources")
    assert messages == [
        "ransomeye-core.service sets TasksMax= only in [Unit], where systemd ignores it; move it to [Service]"
    ]


def test_a_dropin_cannot_lift_a_limit_unseen(repo: Path) -> None:
    dropin = repo / (CORE_UNIT + ".d") / "override.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nMemoryMax=16G\n")
    messages = failed_only(run_gates(repo), "resources")
    assert messages == [
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE_UNIT}.d/override.conf:2)"
    ]
    finding = gate(run_gates(repo), "resources").findings[0]
    assert (finding.subject, finding.line) == (f"{CORE_UNIT}.d/override.conf", 2)


def test_a_unit_shipped_outside_the_units_dir_is_checked(repo: Path) -> None:
    (repo / "ui" / "dist" / "extra.service").write_text("[Service]\nExecStart=/bin/true\n")
    messages = failed_only(run_gates(repo), "resources")
    assert "extra.service does not declare MemoryMax= in [Service]" in messages
    assert len(messages) == len(LIMITS)


def test_no_units_at_all_fails(repo: Path) -> None:
    for unit in (repo / "ops" / "services").rglob("*.service"):
        unit.unlink()
    assert failed_only(run_gates(repo), "resources") == ["no .service units under ops/services"]


# --------------------------------------------------------------------------- isolation


@pytest.mark.parametrize(
    ("extra", "via"),
    [
        ('[dependencies]\nagent = { path = "../edge/agent" }\n', "core/Cargo.toml dependencies.agent"),
        ('[dev-dependencies]\nagent = { path = "../edge/agent" }\n', "core/Cargo.toml dev-dependencies.agent"),
        ('[build-dependencies]\ndpi = { path = "../edge/dpi" }\n', "core/Cargo.toml build-dependencies.dpi"),
        (
            "[target.'cfg(unix)'.dependencies]\nagent = { path = \"../edge/agent\" }\n",
            'core/Cargo.toml target."cfg(unix)".dependencies.agent',
        ),
        ('[dependencies]\nransomeye-agent = "1.0.0"\n', "core/Cargo.toml dependencies.ransomeye-agent"),
        ('[dependencies]\nfoo = { package = "ransomeye-dpi", version = "1" }\n', "core/Cargo.toml dependencies.foo"),
        ('[dependencies]\nx = { path = "../core/../edge/agent" }\n', "core/Cargo.toml dependencies.x"),
    ],
    ids=["path", "dev", "build", "target", "by-name", "renamed", "dotdot"],
)
def test_core_crate_depending_on_edge_fails_isolation(repo: Path, extra: str, via: str) -> None:
    name, binaries = MEMBERS["core"]
    write_member(repo, "core", name, binaries, extra=extra)
    messages = failed_only(run_gates(repo), "isolation")
    assert len(messages) == 1, messages
    assert messages[0].startswith("core-side crate ransomeye-core (core) depends on edge crate ransomeye-")
    assert messages[0].endswith(f"via {via}")


def test_workspace_inherited_edge_dependency_fails(repo: Path) -> None:
    append(repo / "Cargo.toml", '\n[workspace.dependencies]\nagent = { path = "edge/agent" }\n')
    name, binaries = MEMBERS["ops"]
    write_member(repo, "ops", name, binaries, extra="[dev-dependencies]\nagent.workspace = true\n")
    messages = failed_only(run_gates(repo), "isolation")
    assert messages == [
        "core-side crate ransomeye-ops (ops) depends on edge crate ransomeye-agent (edge/agent) "
        "via ops/Cargo.toml dev-dependencies.agent"
    ]


def test_transitive_edge_dependency_through_a_path_crate_fails(repo: Path) -> None:
    write_member(repo, "libs/common", "common", (), extra='[dependencies]\ndpi = { path = "../../edge/dpi" }\n')
    name, binaries = MEMBERS["core"]
    write_member(repo, "core", name, binaries, extra='[dependencies]\ncommon = { path = "../libs/common" }\n')
    messages = failed_only(run_gates(repo), "isolation")
    assert messages == [
        "core-side crate ransomeye-core (core) depends on edge crate ransomeye-dpi (edge/dpi) via "
        "core/Cargo.toml dependencies.common -> libs/common/Cargo.toml dependencies.dpi"
    ]


def test_edge_depending_on_core_is_allowed(repo: Path) -> None:
    name, binaries = MEMBERS["edge/agent"]
    write_member(repo, "edge/agent", name, binaries, extra='[dependencies]\ncore = { path = "../../core" }\n')
    assert run_gates(repo).passed


def test_unclassified_member_fails(repo: Path) -> None:
    edit(repo / "Cargo.toml", 'members = ["core", "ops",', 'members = ["core", "ops", "tools",')
    write_member(repo, "tools", "ransomeye-tools", ())
    messages = failed_only(run_gates(repo), "isolation")
    assert len(messages) == 1 and messages[0].startswith("member tools (ransomeye-tools) is not under")


def test_core_bundle_with_an_edge_asset_fails_isolation(repo: Path) -> None:
    (repo / "edge" / "agent" / "conf").mkdir()
    (repo / "edge" / "agent" / "conf" / "agent.toml").write_text("level = 1\n")
    cargo = repo / "Cargo.toml"
    edit(
        cargo,
        '"ops/services/core"]\nforbidden-paths = ["edge"]',
        '"ops/services/core", "edge/agent/conf"]\nforbidden-paths = []',
    )
    result = run_cli("--root", repo, "-v")
    assert result.returncode == 4, result.stderr
    lines = result.stdout.splitlines()
    assert "FAIL isolation: bundle core ships asset edge/agent/conf from the edge (and 1 more finding)" in lines
    assert "  - bundle core ships asset edge/agent/conf from the edge" in lines
    assert "  - bundle core does not forbid the edge path edge (add it to forbidden-paths)" in lines


def test_edge_asset_the_declaration_itself_forbids_is_bad_input(repo: Path) -> None:
    edit(repo / "Cargo.toml", '"ops/services/core"]', '"ops/services/core", "edge/agent"]')
    result = run_cli("--root", repo)
    assert result.returncode == 2
    assert "assets includes 'edge/agent', under forbidden path 'edge'" in result.stderr
    assert "Traceback" not in result.stderr


def test_asset_containing_the_edge_is_refused(repo: Path) -> None:
    """The whole repository as an asset would contain edge/: the declaration itself is refused."""
    edit(repo / "Cargo.toml", 'assets = ["ui/dist",', 'assets = [".",')
    with pytest.raises(BadInputError, match=r"assets\[0\] = '\.' must be a plain relative path"):
        run_gates(repo)


def test_symlink_from_a_core_asset_into_the_edge_fails(repo: Path) -> None:
    os.symlink("../../edge/agent/src", repo / "ui" / "dist" / "agent-src")
    messages = failed_only(run_gates(repo), "isolation")
    assert messages == ["bundle core ships ui/dist/agent-src, a symlink into the edge"]


def test_core_binary_built_by_an_edge_crate_fails(repo: Path) -> None:
    write_member(repo, "core", "ransomeye-core", ("ransomeye-core",))
    write_member(
        repo,
        "edge/agent",
        "ransomeye-agent",
        ("ransomeye-agent", "ransomeye-sentinel", "ransomeye-loader", "ransomeye-tuner"),
    )
    messages = failed_only(run_gates(repo), "isolation")
    assert "bundle core ships ransomeye-tuner, built by edge crate ransomeye-agent (edge/agent)" in messages


def test_core_binary_nobody_builds_fails(repo: Path) -> None:
    write_member(repo, "core", "ransomeye-core", ("ransomeye-core",))
    messages = failed_only(run_gates(repo), "isolation")
    assert messages == ["bundle core ships ransomeye-tuner, which no workspace member builds"]


def test_automatic_binaries_are_mapped_to_their_crate(repo: Path) -> None:
    # edge/dpi builds ransomeye-tuner through cargo's src/bin/ discovery, not a [[bin]] table.
    write_member(repo, "core", "ransomeye-core", ("ransomeye-core",))
    manifest = repo / "edge" / "dpi" / "Cargo.toml"
    edit(manifest, "autobins = false\n", "")
    (repo / "edge" / "dpi" / "src" / "bin").mkdir()
    (repo / "edge" / "dpi" / "src" / "bin" / "ransomeye-tuner.rs").write_text("fn main() {}\n")
    messages = failed_only(run_gates(repo), "isolation")
    assert "bundle core ships ransomeye-tuner, built by edge crate ransomeye-dpi (edge/dpi)" in messages


def test_protected_bundle_must_forbid_every_edge_binary(repo: Path) -> None:
    edit(
        repo / "Cargo.toml",
        'forbidden-binaries = ["ransomeye-agent", "ransomeye-loader", ',
        'forbidden-binaries = ["ransomeye-agent", ',
    )
    messages = failed_only(run_gates(repo), "isolation")
    assert messages == ["bundle core does not forbid the edge binary ransomeye-loader (add it to forbidden-binaries)"]


# --------------------------------------------------------------------------- versions


def test_member_with_its_own_differing_version_fails(repo: Path) -> None:
    name, binaries = MEMBERS["edge/dpi"]
    write_member(repo, "edge/dpi", name, binaries, version='version = "1.0.1"')
    result = run_cli("--root", repo)
    assert result.returncode == 4
    assert (
        "FAIL versions: ransomeye-dpi (edge/dpi) has version 1.0.1, not the workspace version 1.0.0; "
        "set version.workspace = true"
    ) in result.stdout.splitlines()


def test_member_stating_the_workspace_version_passes(repo: Path) -> None:
    name, binaries = MEMBERS["edge/dpi"]
    write_member(repo, "edge/dpi", name, binaries, version='version = "1.0.0"')
    report = run_gates(repo)
    assert report.passed
    assert "3 inherit it, 1 state it" in gate(report, "versions").reason


def test_member_without_a_version_fails(repo: Path) -> None:
    name, binaries = MEMBERS["ops"]
    write_member(repo, "ops", name, binaries, version="")
    messages = failed_only(run_gates(repo), "versions")
    assert messages == ["ransomeye-ops (ops) declares no version (cargo would use 0.0.0); set version.workspace = true"]


@pytest.mark.parametrize("allow", [False, True])
def test_prerelease_workspace_version(repo: Path, allow: bool) -> None:
    edit(repo / "Cargo.toml", 'version = "1.0.0"', 'version = "1.1.0-rc.1"')
    if allow:
        edit(repo / POLICIES / "versions.toml", "allow-prerelease = false", "allow-prerelease = true")
        assert run_gates(repo).passed
    else:
        messages = failed_only(run_gates(repo), "versions")
        assert messages[0].startswith("workspace version 1.1.0-rc.1 is a pre-release")


def test_workspace_version_that_is_not_semver_is_bad_input(repo: Path) -> None:
    edit(repo / "Cargo.toml", 'version = "1.0.0"', 'version = "1.0"')
    result = run_cli("--root", repo)
    assert result.returncode == 2
    assert "[workspace.package].version = '1.0' is not a valid semver version" in result.stderr


# --------------------------------------------------------------------------- secrets


def test_private_key_planted_in_ui_dist_fails_and_is_never_shown(repo: Path, tmp_path: Path) -> None:
    leak = repo / "ui" / "dist" / "assets" / "debug.txt"
    leak.write_text("build notes\n\n" + pem_private_key())
    report_path = tmp_path / "gates.json"
    result = run_cli("--root", repo, "--report", report_path, "-v")
    assert result.returncode == 4
    assert (
        "FAIL secrets: ui/dist/assets/debug.txt:3 contains a PEM private key (pem-private-key)"
        in result.stdout.splitlines()
    )
    report_bytes = report_path.read_bytes()
    for text in (result.stdout, result.stderr, report_bytes.decode()):
        assert KEY_BODY not in text and "BEGIN PRIVATE" not in text
    secrets = json.loads(report_bytes)["gates"][3]
    [finding] = secrets["findings"]
    # The fingerprint (for the allowlist) is a hash: 16 hex digits, never the key.
    assert re.fullmatch(r"[0-9a-f]{16}", finding.pop("fingerprint"))
    assert finding == {
        "subject": "ui/dist/assets/debug.txt",
        "line": 3,
        "rule": "secrets.pem-private-key",
        "message": "ui/dist/assets/debug.txt:3 contains a PEM private key (pem-private-key)",
    }


@pytest.mark.parametrize("pattern_id", sorted(SECRET_SAMPLES))
def test_every_kind_of_secret_is_found(repo: Path, pattern_id: str) -> None:
    (repo / "ops" / "src").mkdir(exist_ok=True)
    (repo / "ops" / "src" / "config.rs").write_text("// config\n" + SECRET_SAMPLES[pattern_id])
    report = run_gates(repo)
    failed_only(report, "secrets")
    rules = {(f.subject, f.line, f.rule) for f in gate(report, "secrets").findings}
    assert ("ops/src/config.rs", 2, f"secrets.{pattern_id}") in rules


def test_secret_inside_a_binary_file_is_found(repo: Path) -> None:
    blob = os.urandom(4096).replace(b"\n", b"\x00") + b"\x00\xff" + pem_private_key("EC ").encode() + b"\x00" * 64
    (repo / "edge" / "dpi" / "src" / "model.bin").write_bytes(blob)
    report = run_gates(repo)
    failed_only(report, "secrets")
    assert [(f.subject, f.line) for f in gate(report, "secrets").findings] == [("edge/dpi/src/model.bin", 1)]


def test_secret_straddling_a_chunk_boundary_of_a_huge_line_is_found() -> None:
    policy = parse_secrets(tomllib.loads((REPO / POLICIES / "secrets.toml").read_text()), "secrets.toml")
    secret = SECRET_SAMPLES["aws-access-key-id"].strip().encode()
    data = b"x" * (3 * secret_scan.CHUNK - 7) + b" " + secret + b" " + b"y" * 100 + b"\nclean\n"
    hits = secret_scan.scan_stream(io.BytesIO(data), policy.patterns)
    assert [(line, p.id) for line, p in hits] == [(1, "aws-access-key-id")]


def test_secret_symlinked_into_a_tree_is_found_once(repo: Path) -> None:
    hidden = repo / "edge" / "dpi" / "keys"
    hidden.mkdir()
    (hidden / "signing.key").write_text(pem_private_key())
    os.symlink("../../../edge/dpi/keys/signing.key", repo / "ui" / "dist" / "assets" / "k")
    report = run_gates(repo)
    # Found under its first path in sorted traversal (edge/dpi comes before ui/dist), scanned once.
    assert [(f.subject, f.line) for f in gate(report, "secrets").findings] == [("edge/dpi/keys/signing.key", 1)]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda r: shutil.rmtree(r / "ui" / "dist"), "ui/dist does not exist, so it cannot be scanned"),
        (lambda r: os.symlink("nowhere", r / "ui" / "dist" / "gone"), "ui/dist/gone is a dangling symlink"),
        (
            lambda r: os.symlink("/etc", r / "ui" / "dist" / "etc"),
            "ui/dist/etc is a symlink leaving the repository; it was not scanned",
        ),
        (
            lambda r: os.mkfifo(r / "ui" / "dist" / "pipe"),
            "ui/dist/pipe is not a regular file or directory; it was not scanned",
        ),
    ],
    ids=["missing-tree", "dangling-symlink", "outside-symlink", "fifo"],
)
def test_nothing_is_skipped_silently(repo: Path, make: Any, expected: str) -> None:
    make(repo)
    assert expected in failed_only(run_gates(repo), "secrets")


def test_excluded_paths_are_counted_not_hidden(repo: Path) -> None:
    (repo / "ui" / "dist" / "fixtures").mkdir()
    (repo / "ui" / "dist" / "fixtures" / "test.pem").write_text(pem_private_key())
    edit(repo / POLICIES / "secrets.toml", "exclude = []", 'exclude = ["ui/dist/fixtures"]')
    report = run_gates(repo)
    assert report.passed
    assert gate(report, "secrets").reason.endswith("(1 paths excluded by governance/policies/secrets.toml)")


# --------------------------------------------------------------------------- the report and the CLI


def test_report_of_a_passing_tree(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "report.json"
    result = run_cli("--root", repo, "--report", out)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_bytes())
    assert data["schema"] == REPORT_SCHEMA == "ransomeye.gates/v1"
    assert data["workspace_version"] == "1.0.0"
    assert data["passed"] is True
    assert [g["name"] for g in data["gates"]] == list(GATE_NAMES)
    for g in data["gates"]:
        assert g == {"name": g["name"], "passed": True, "reason": g["reason"], "findings": []}
        assert f"PASS {g['name']}: {g['reason']}" in result.stdout.splitlines()
    assert len(result.stdout.splitlines()) == len(GATE_NAMES)
    assert list(out.parent.iterdir()) == [out], "no temporary file is left behind"


def test_report_of_a_failing_tree(repo: Path, tmp_path: Path) -> None:
    edit(repo / CORE_UNIT, "MemoryMax=1536M", "MemoryMax=8G")
    edit(repo / CORE_UNIT, "TasksMax=512\n", "")
    out = tmp_path / "report.json"
    assert run_cli("--root", repo, "--report", out).returncode == 4
    memory_line = line_of(repo / CORE_UNIT, "MemoryMax=")
    data = json.loads(out.read_bytes())
    assert data["passed"] is False
    resources = data["gates"][0]
    assert resources == {
        "name": "resources",
        "passed": False,
        "reason": "ransomeye-core.service does not declare TasksMax= in [Service] (and 1 more finding)",
        "findings": [
            {
                "subject": CORE_UNIT,
                "line": None,
                "rule": "resources.missing",
                "message": "ransomeye-core.service does not declare TasksMax= in [Service]",
            },
            {
                "subject": CORE_UNIT,
                "line": memory_line,
                "rule": "resources.memory-max",
                "message": "ransomeye-core.service MemoryMax=8G exceeds the cap 2G",
            },
        ],
    }
    assert [g["passed"] for g in data["gates"][1:]] == [True, True, True]


def test_same_tree_gives_byte_identical_reports(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "bb"):
        root = build_repo(tmp_path / name)
        edit(root / CORE_UNIT, "MemoryMax=1536M", "MemoryMax=8G")
        (root / "ui" / "dist" / "k.pem").write_text(pem_private_key())
        out = tmp_path / f"{name}.json"
        assert run_cli("--root", root, "--report", out).returncode == 4
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert b'"passed": false' in outputs[0]


def test_report_overwrites_atomically(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("old")
    assert run_cli("--root", repo, "--report", out).returncode == 0
    assert json.loads(out.read_text())["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "report.json"]


def test_report_into_a_missing_directory_is_bad_input(repo: Path, tmp_path: Path) -> None:
    result = run_cli("--root", repo, "--report", tmp_path / "no" / "such" / "report.json")
    assert result.returncode == 2
    assert "cannot write the report" in result.stderr and "Traceback" not in result.stderr


def test_root_that_is_not_a_repository_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("--root", tmp_path)
    assert result.returncode == 2
    assert "not a repository root" in result.stderr


def test_cli_runs_from_any_directory_with_the_default_root(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- malformed input: exit 2


MALFORMED: list[tuple[str, str, str, str]] = [
    # (file, old, new, expected message, which names the file and the field)
    (
        "resources.toml",
        'memory-max = "2G"',
        'memory-max = "lots"',
        'governance/policies/resources.toml: caps.memory-max = "lots" is not a size like 512M or 2G',
    ),
    (
        "resources.toml",
        'memory-max = "2G"',
        'memory-max = "2X"',
        'governance/policies/resources.toml: caps.memory-max = "2X" is not a size like 512M or 2G',
    ),
    (
        "resources.toml",
        'memory-max = "2G"',
        'memory-max = "infinity"',
        'governance/policies/resources.toml: caps.memory-max = "infinity" is infinity (no memory limit); '
        "a cap must be a bound",
    ),
    (
        "resources.toml",
        "tasks-max = 1024",
        'tasks-max = "many"',
        'governance/policies/resources.toml: caps.tasks-max = "many" is not a whole number like 512',
    ),
    (
        "resources.toml",
        'cpu-quota = "200%"',
        "cpu-quota = 2.0",
        "governance/policies/resources.toml: caps.cpu-quota = 2.0 is not a percentage like 50% or 150%",
    ),
    ("resources.toml", "[caps]", "colour = 1\n[caps]", "governance/policies/resources.toml: colour is not a known key"),
    (
        "resources.toml",
        "[caps]",
        '[caps]\nmemory-high = "1G"',
        "governance/policies/resources.toml: caps.memory-high is not a known limit",
    ),
    (
        "resources.toml",
        'required = ["memory-max", "cpu-quota", "tasks-max", "limit-nofile"]',
        "required = []",
        "governance/policies/resources.toml: required is empty",
    ),
    ("resources.toml", 'units-dir = "ops/services"', "", "governance/policies/resources.toml: units-dir is missing"),
    (
        "resources.toml",
        'units-dir = "ops/services"',
        'units-dir = "../etc"',
        'governance/policies/resources.toml: units-dir = "../etc" must be a plain relative path',
    ),
    (
        "resources.toml",
        "limit-nofile = 65536",
        "",
        'governance/policies/resources.toml: required[3] = "limit-nofile" has no cap',
    ),
    ("resources.toml", "schema = 1", "schema = 2", "governance/policies/resources.toml: schema = 2 is not supported"),
    ("resources.toml", "[caps]", "[caps", "governance/policies/resources.toml: not valid TOML"),
    (
        "isolation.toml",
        'core-side = ["core", "ops"]',
        'core-side = "core"',
        "governance/policies/isolation.toml: core-side must be an array, not string",
    ),
    (
        "isolation.toml",
        'core-side = ["core", "ops"]',
        'core-side = ["core", "edge/agent"]',
        'governance/policies/isolation.toml: core-side[1] = "edge/agent" overlaps edge path "edge"',
    ),
    (
        "isolation.toml",
        'protected-bundles = ["core"]',
        'protected-bundles = ["nope"]',
        'governance/policies/isolation.toml: protected-bundles[0] = "nope" is not a bundle of Cargo.toml',
    ),
    ("isolation.toml", 'edge = ["edge"]', "edge = []", "governance/policies/isolation.toml: edge is empty"),
    (
        "versions.toml",
        "allow-prerelease = false",
        'allow-prerelease = "no"',
        "governance/policies/versions.toml: allow-prerelease must be a boolean, not string",
    ),
    ("versions.toml", "allow-prerelease = false", "", "governance/policies/versions.toml: allow-prerelease is missing"),
    (
        "secrets.toml",
        "regex = '-----BEGIN OPENSSH PRIVATE KEY-{5}'",
        "regex = '(unclosed'",
        'governance/policies/secrets.toml: patterns[1].regex = "(unclosed" is not a valid regular expression',
    ),
    (
        "secrets.toml",
        "regex = '-----BEGIN OPENSSH PRIVATE KEY-{5}'",
        "regex = 'x*'",
        'governance/policies/secrets.toml: patterns[1].regex = "x*" matches the empty string',
    ),
    (
        "secrets.toml",
        'id = "github-token"',
        'id = "aws-access-key-id"',
        'governance/policies/secrets.toml: patterns[5].id = "aws-access-key-id" is used by another pattern',
    ),
    (
        "secrets.toml",
        "workspace-members = true\n",
        "",
        "governance/policies/secrets.toml: scan.workspace-members is missing",
    ),
    (
        "secrets.toml",
        "bundle-assets = true\nworkspace-members = true",
        "bundle-assets = false\nworkspace-members = false",
        "governance/policies/secrets.toml: scan.bundle-assets is false, as is workspace-members, and extra-paths is "
        "empty: nothing to scan",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), MALFORMED, ids=[m[3][20:70] for m in MALFORMED])
def test_malformed_policy_exits_2_naming_file_and_field(
    repo: Path, name: str, old: str, new: str, expected: str
) -> None:
    edit(repo / POLICIES / name, old, new)
    result = run_cli("--root", repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"check_gates: error: {expected}"), result.stderr
    assert result.stderr.count("error:") == 1


@pytest.mark.parametrize("name", ["resources", "isolation", "versions", "secrets"])
def test_missing_policy_file_exits_2(repo: Path, name: str) -> None:
    (repo / POLICIES / f"{name}.toml").unlink()
    result = run_cli("--root", repo)
    assert result.returncode == 2
    assert result.stderr.startswith(f"check_gates: error: governance/policies/{name}.toml: file not found")


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        (
            CORE_UNIT,
            "MemoryMax=1536M",
            "MemoryMax=8X",
            f'{CORE_UNIT}:{{line}}: MemoryMax = "8X" is not a size like 512M or 2G',
        ),
        (
            CORE_UNIT,
            "LimitNOFILE=65536",
            "LimitNOFILE=70000:1024",
            f'{CORE_UNIT}:{{line}}: LimitNOFILE = "70000:1024" has a soft limit above its hard limit',
        ),
        (
            CORE_UNIT,
            "[Install]",
            "this is not a unit line\n[Install]",
            f"{CORE_UNIT}:{{line}}: expected a [Section] header or a Key=Value assignment",
        ),
        (CORE_UNIT, "[Service]", "[Servis]", f"{CORE_UNIT}: has no [Service] section"),
        (
            "edge/dpi/Cargo.toml",
            "version.workspace = true",
            "version = 3",
            "edge/dpi/Cargo.toml: package.version = 3 must be a string",
        ),
        (
            "core/Cargo.toml",
            "autobins = false",
            'autobins = false\n[dependencies]\nx = ["not", "a", "table"]',
            "core/Cargo.toml: dependencies.x must be a table",
        ),
        (
            "core/Cargo.toml",
            "autobins = false",
            "autobins = false\n[dependencies]\nx = { workspace = true }",
            "core/Cargo.toml: dependencies.x has workspace = true but [workspace.dependencies] has no 'x'",
        ),
    ],
    ids=[
        "unit-suffix",
        "unit-soft-hard",
        "unit-syntax",
        "unit-no-service",
        "member-version",
        "member-dep",
        "member-workspace-dep",
    ],
)
def test_malformed_unit_or_manifest_exits_2(repo: Path, path: str, old: str, new: str, expected: str) -> None:
    edit(repo / path, old, new)
    expected = expected.format(line=line_of(repo / path, new.split("=")[0].split("\n")[0]))
    result = run_cli("--root", repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"check_gates: error: {expected}"), result.stderr


# --------------------------------------------------------------------------- properties


def _real_policy(name: str) -> dict[str, Any]:
    return read_toml_file(REPO / POLICIES / f"{name}.toml", name)


PARSERS = {"resources": parse_resources, "isolation": parse_isolation, "versions": parse_versions,
           "secrets": parse_secrets}  # fmt: skip

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "2G",
            "512M",
            "8X",
            "infinity",
            "50%",
            "200%",
            "0%",
            "1.5G",
            "-1",
            "1:2",
            "",
            ".",
            "..",
            "ops/services",
            "edge",
            "core",
            "(",
            "a*",
            "[a-z]+",
            "\\b",
            "x{99999999999}",
        ]
    ),
    st.dates(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside a parsed TOML document (dict keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(PARSERS)))
def test_policy_parsers_only_ever_raise_bad_input(data: st.DataObject, name: str) -> None:
    """Mutate a real policy anywhere (replace, delete or add a value): a policy or a BadInputError, nothing else."""
    doc: Any = _real_policy(name)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            doc = data.draw(toml_values) if action == "replace" else doc
            continue
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        if action == "replace":
            parent[path[-1]] = data.draw(toml_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=12))] = data.draw(toml_values)
        else:
            parent.append(data.draw(toml_values))
    source = f"governance/policies/{name}.toml"
    try:
        PARSERS[name](doc, source)
    except BadInputError as e:
        assert e.message.startswith(f"{source}: "), e.message


toml_lines = st.one_of(
    st.sampled_from(
        [
            "schema = 1",
            "schema = 2",
            "[caps]",
            "[scan]",
            "[[patterns]]",
            'units-dir = "ops/services"',
            'required = ["memory-max"]',
            'memory-max = "2G"',
            'memory-max = "lots"',
            "tasks-max = 10",
            'core-side = ["core"]',
            'edge = ["edge"]',
            "shared = []",
            'protected-bundles = ["core"]',
            "allow-prerelease = false",
            'id = "x"',
            'description = "d"',
            "regex = 'a+'",
            "regex = '('",
            "bundle-assets = true",
            "workspace-members = false",
            "extra-paths = []",
            "exclude = []",
            "= broken",
            'key = """',
            "[caps.nested]",
            "x = {a = 1}",
        ]
    ),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(PARSERS)), lines=st.lists(toml_lines, max_size=12))
def test_policy_files_of_random_text_only_ever_raise_bad_input(
    tmp_path_factory: pytest.TempPathFactory, name: str, lines: list[str]
) -> None:
    path = tmp_path_factory.mktemp("policy") / f"{name}.toml"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    source = f"governance/policies/{name}.toml"
    try:
        PARSERS[name](read_toml_file(path, source), source)
    except BadInputError as e:
        assert e.message.startswith(f"{source}: "), e.message


@given(amount=st.integers(0, 2**40), suffix=st.sampled_from(["", "K", "M", "G", "T"]))
def test_memory_sizes_read_as_systemd_reads_them(amount: int, suffix: str) -> None:
    factor = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[suffix]
    try:
        assert parse_memory(f"{amount}{suffix}") == amount * factor
    except LimitSyntaxError:
        assert amount * factor > 2**62  # out of range, never silently wrapped


@given(text=st.text(max_size=25))
def test_limit_parsers_accept_or_refuse_but_never_crash(text: str) -> None:
    for limit in LIMITS.values():
        try:
            value = limit.parse(text)
        except LimitSyntaxError:
            continue
        assert isinstance(value, Unbounded) or (isinstance(value, int) and 0 <= value <= 2**62)


@settings(max_examples=60, deadline=None)
@given(
    before=st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    filler=st.integers(0, 2 * secret_scan.CHUNK),
    lines_before=st.integers(0, 5),
    pattern_id=st.sampled_from(sorted(SECRET_SAMPLES)),
)
def test_a_planted_secret_is_found_at_any_offset(
    before: bytes, filler: int, lines_before: int, pattern_id: str
) -> None:
    policy = parse_secrets(_real_policy("secrets"), "secrets.toml")
    secret = SECRET_SAMPLES[pattern_id].encode()
    data = b"ok\n" * lines_before + before + b"\x00" * filler + b" " + secret
    hits = secret_scan.scan_stream(io.BytesIO(data), policy.patterns)
    assert (lines_before + 1, pattern_id) in [(line, p.id) for line, p in hits]


def test_this_test_module_plants_no_secret_literally() -> None:
    """The samples are assembled at run time: the test sources themselves would pass the scan."""
    policy = parse_secrets(_real_policy("secrets"), "secrets.toml")
    for source in (Path(__file__), Path(__file__).with_name("gates_fixtures.py")):
        with source.open("rb") as f:
            assert secret_scan.scan_stream(f, policy.patterns) == [], source


def test_report_reason_counts_the_other_findings(repo: Path) -> None:
    for unit in sorted((repo / "ops" / "services").rglob("*.service")):
        text = re.sub(r"(?m)^TasksMax=.*\n", "", unit.read_text())
        unit.write_text(text)
    result = gate(run_gates(repo), "resources")
    assert result.reason.endswith("(and 3 more findings)")
