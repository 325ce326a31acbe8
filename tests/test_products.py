"""The product declaration: the real one loads; every malformed one is a BadInputError naming the field."""

from __future__ import annotations

import copy
import datetime
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.errors import BadInputError
from release.products import Bundle, Workspace, load_workspace, parse_workspace

ROOT = Path(__file__).resolve().parent.parent
REAL_TOML = (ROOT / "Cargo.toml").read_text()
BUNDLES = "[workspace.metadata.release]"


def _bundle(**overrides: Any) -> Bundle:
    fields: dict[str, Any] = {
        "id": "core",
        "name": "ransomeye-core",
        "format": "tar.gz",
        "target": "x86_64-unknown-linux-gnu",
        "binaries": ("ransomeye-core",),
        "assets": (),
        "forbidden_paths": ("edge",),
        "forbidden_binaries": ("ransomeye-agent",),
    }
    fields.update(overrides)
    return Bundle(**fields)


# --- the real declaration ----------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Workspace:
    return load_workspace(ROOT)


def test_real_declaration_has_the_four_bundles(real: Workspace) -> None:
    assert [b.id for b in real.bundles] == ["core", "agent-linux", "agent-windows", "dpi"]
    assert real.root == ROOT
    assert real.manifest == ROOT / "Cargo.toml"
    assert real.artifacts_dir == "release/artifacts"
    assert real.sources  # fail closed: an empty source list is refused at parse time


def test_real_archive_names(real: Workspace) -> None:
    assert [b.archive_name("1.0.0") for b in real.bundles] == [
        "ransomeye-core-1.0.0.tar.gz",
        "ransomeye-agent-linux-1.0.0.tar.gz",
        "ransomeye-agent-windows-1.0.0.zip",
        "ransomeye-dpi-1.0.0.tar.gz",
    ]
    assert real.bundle("core").stem("1.0.0") == "ransomeye-core-1.0.0"
    # The declared version is the one the archives are named with.
    assert real.bundle("dpi").archive_name(real.version) == f"ransomeye-dpi-{real.version}.tar.gz"


def test_real_bundles_keep_core_and_edge_apart(real: Workspace) -> None:
    core = real.bundle("core")
    assert core.forbidden_path("edge/agent/src/main.rs") == "edge"
    for b in real.bundles:
        assert not set(b.binaries) & set(b.forbidden_binaries), b.id
        assert all(b.forbidden_path(a) is None for a in b.assets), b.id


def test_windows_bundle_binaries_get_exe(real: Workspace) -> None:
    win = real.bundle("agent-windows")
    assert win.is_windows and not real.bundle("agent-linux").is_windows
    assert win.binary_files() == ("ransomeye-agent.exe", "ransomeye-sentinel.exe")
    assert real.bundle("agent-linux").binary_file("ransomeye-agent") == "ransomeye-agent"
    assert win.step == "package-agent-windows"


def test_targets_and_toolchain_hints(real: Workspace) -> None:
    assert real.targets() == ("x86_64-unknown-linux-gnu", "x86_64-pc-windows-gnu")
    assert real.toolchain_hint("x86_64-pc-windows-gnu").linker == "x86_64-w64-mingw32-gcc"
    unknown = real.toolchain_hint("aarch64-unknown-linux-gnu")
    assert unknown.debian_packages == () and unknown.linker == "cc"


def test_unknown_bundle_id_is_bad_input(real: Workspace) -> None:
    with pytest.raises(BadInputError) as e:
        real.bundle("nope")
    assert "'nope'" in e.value.message and str(real.manifest) in e.value.message
    assert e.value.hint is not None and "core" in e.value.hint


# --- forbidden paths and binaries ----------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    ["edge", "edge/x", "a/edge/b", "a/b/edge", "edge/agent/src/main.rs", "./edge/x", "a//edge/b"],
)
def test_forbidden_path_matches_the_component_anywhere(relpath: str) -> None:
    assert _bundle().forbidden_path(relpath) == "edge"


@pytest.mark.parametrize(
    "relpath",
    ["ui/knowledge/x.js", "edges/x", "hedge", "a/hedge/b", "edge.txt", "x/edge-agent", "Edge/x", "", "."],
)
def test_forbidden_path_ignores_lookalikes(relpath: str) -> None:
    assert _bundle().forbidden_path(relpath) is None


def test_forbidden_path_with_several_components_matches_the_sequence() -> None:
    b = _bundle(forbidden_paths=("ops/services/agent",))
    assert b.forbidden_path("ops/services/agent/unit.service") == "ops/services/agent"
    assert b.forbidden_path("x/ops/services/agent") == "ops/services/agent"
    assert b.forbidden_path("ops/services/core/unit.service") is None
    assert b.forbidden_path("ops/agent/services") is None
    assert b.forbidden_path("ops/services") is None


def test_no_forbidden_paths_forbids_nothing() -> None:
    assert _bundle(forbidden_paths=()).forbidden_path("edge/x") is None


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("ransomeye-agent", "ransomeye-agent"),
        ("ransomeye-agent.exe", "ransomeye-agent"),
        ("ransomeye-agent.EXE", "ransomeye-agent"),
        ("ransomeye-agent2", None),
        ("ransomeye-agent.exe.txt", None),
        ("ransomeye-agent.sh", None),
        ("ransomeye-core", None),
        ("ransomeye-core.exe", None),
        (".exe", None),
        ("", None),
    ],
)
def test_forbidden_binary(filename: str, expected: str | None) -> None:
    assert _bundle().forbidden_binary(filename) == expected


# --- malformed declarations ----------------------------------------------------


def _edit(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace ``old`` by ``new``; the edit must apply, or the case tests nothing."""
    assert text.count(old) >= count, f"the real Cargo.toml no longer contains {old!r}"
    return text.replace(old, new, count)


def _without_bundle_tables(text: str, replacement: str) -> str:
    """Rename every bundle table so that ``bundles`` is absent, then put ``replacement`` in the release table."""
    text = _edit(text, "[[workspace.metadata.release.bundles]]", "[[workspace.metadata.release.not-bundles]]", 4)
    return _edit(text, 'artifacts-dir = "release/artifacts"\n', f'artifacts-dir = "release/artifacts"\n{replacement}')


CORE_ASSETS = 'assets = ["ui/dist", "governance/policies", "ops/services/core"]'
CORE_BINARIES = 'binaries = ["ransomeye-core", "ransomeye-ops", "ransomeye-tuner"]'
B0 = f"{BUNDLES}.bundles[0]"
B3 = f"{BUNDLES}.bundles[3]"
MALFORMED: list[tuple[str, str, str, str]] = [
    # (case, old text, new text, what the message must name)
    ("no-workspace-package", "[workspace.package]", "[workspace.pkg]", "[workspace.package]"),
    ("version-missing", 'version = "1.0.0"\n', "", "[workspace.package].version"),
    ("version-int", 'version = "1.0.0"', "version = 1", "[workspace.package].version"),
    ("version-two-parts", 'version = "1.0.0"', 'version = "1.0"', "[workspace.package].version"),
    ("version-leading-zero", 'version = "1.0.0"', 'version = "01.0.0"', "[workspace.package].version"),
    ("version-v-prefix", 'version = "1.0.0"', 'version = "v1.0.0"', "[workspace.package].version"),
    ("version-empty-pre", 'version = "1.0.0"', 'version = "1.0.0-"', "[workspace.package].version"),
    ("version-pre-zero", 'version = "1.0.0"', 'version = "1.0.0-01"', "[workspace.package].version"),
    ("version-empty-build", 'version = "1.0.0"', 'version = "1.0.0+"', "[workspace.package].version"),
    ("version-newline", 'version = "1.0.0"', 'version = "1.0.0\\n"', "[workspace.package].version"),
    ("version-space", 'version = "1.0.0"', 'version = " 1.0.0"', "[workspace.package].version"),
    ("members-absolute", 'members = ["core"', 'members = ["/core"', "[workspace].members[0]"),
    ("no-release-table", BUNDLES, "[workspace.metadata.other]", BUNDLES),
    ("artifacts-dir-int", 'artifacts-dir = "release/artifacts"', "artifacts-dir = 1", f"{BUNDLES}.artifacts-dir"),
    ("sources-missing", "sources = [", "not-sources = [", f"{BUNDLES}.sources"),
    ("sources-empty", 'sources = ["Cargo.toml"', 'sources = [] #["Cargo.toml"', f"{BUNDLES}.sources"),
    ("sources-string", 'sources = ["Cargo.toml", "Cargo.lock"', 'sources = "Cargo.toml" #', f"{BUNDLES}.sources"),
    ("sources-dotdot", 'sources = ["Cargo.toml"', 'sources = ["../Cargo.toml"', f"{BUNDLES}.sources[0]"),
    ("bundles-missing", "", "", f"{BUNDLES}.bundles is missing"),
    ("bundles-empty", "", "bundles = []\n", f"{BUNDLES}.bundles is empty"),
    ("bundles-string", "", 'bundles = "core"\n', f"{BUNDLES}.bundles must be a list"),
    ("bundle-not-table", "", 'bundles = ["core"]\n', f"{BUNDLES}.bundles[0] must be a table"),
    ("id-missing", 'id = "core"\n', "", f"{B0}.id is missing"),
    ("id-int", 'id = "core"', "id = 1", f"{B0}.id must be a str"),
    ("id-bool", 'id = "core"', "id = true", f"{B0}.id must be a str"),
    ("id-uppercase", 'id = "core"', 'id = "Core"', f"{B0}.id"),
    ("name-slash", 'name = "ransomeye-core"', 'name = "ransomeye/core"', f"{B0}.name"),
    ("format-unknown", 'format = "tar.gz"', 'format = "tar.xz"', f"{B0}.format"),
    ("format-list", 'format = "tar.gz"', 'format = ["tar.gz"]', f"{B0}.format"),
    ("target-not-triple", 'target = "x86_64-unknown-linux-gnu"', 'target = "x86_64"', f"{B0}.target"),
    ("binaries-string", CORE_BINARIES, 'binaries = "ransomeye-core"', f"{B0}.binaries"),
    ("binaries-empty", CORE_BINARIES, "binaries = []", f"{B0}.binaries is empty"),
    ("binaries-int", CORE_BINARIES, "binaries = [1]", f"{B0}.binaries[0]"),
    ("binaries-path", CORE_BINARIES, 'binaries = ["../ransomeye-core"]', f"{B0}.binaries[0]"),
    ("binaries-twice", CORE_BINARIES, 'binaries = ["ransomeye-core", "ransomeye-core"]', f"{B0}.binaries"),
    ("assets-missing", CORE_ASSETS + "\n", "", f"{B0}.assets is missing"),
    ("asset-absolute", CORE_ASSETS, 'assets = ["/etc/passwd"]', f"{B0}.assets[0]"),
    ("asset-dotdot", CORE_ASSETS, 'assets = ["ui/../../etc"]', f"{B0}.assets[0]"),
    ("asset-dotdot-only", CORE_ASSETS, 'assets = [".."]', f"{B0}.assets[0]"),
    ("asset-dot", CORE_ASSETS, 'assets = ["."]', f"{B0}.assets[0]"),
    ("asset-dot-slash", CORE_ASSETS, 'assets = ["./"]', f"{B0}.assets[0]"),
    ("asset-dot-prefix", CORE_ASSETS, 'assets = ["./ui/dist"]', f"{B0}.assets[0]"),
    ("asset-inner-dot", CORE_ASSETS, 'assets = ["ui/./dist"]', f"{B0}.assets[0]"),
    ("asset-double-slash", CORE_ASSETS, 'assets = ["ui//dist"]', f"{B0}.assets[0]"),
    ("asset-backslash", CORE_ASSETS, "assets = ['ui\\dist']", f"{B0}.assets[0]"),
    ("asset-empty", CORE_ASSETS, 'assets = [""]', f"{B0}.assets[0]"),
    ("asset-second", CORE_ASSETS, 'assets = ["ui/dist", "/ui"]', f"{B0}.assets[1]"),
    ("asset-forbidden", CORE_ASSETS, 'assets = ["ui/dist", "edge/agent"]', f"{B0}.assets includes 'edge/agent'"),
    ("asset-forbidden-deep", CORE_ASSETS, 'assets = ["ops/edge/x"]', f"{B0}.assets includes 'ops/edge/x'"),
    ("forbidden-paths-int", 'forbidden-paths = ["edge"]', "forbidden-paths = [1]", f"{B0}.forbidden-paths[0]"),
    ("forbidden-paths-abs", 'forbidden-paths = ["edge"]', 'forbidden-paths = ["/edge"]', f"{B0}.forbidden-paths[0]"),
    ("forbidden-binaries-missing", 'forbidden-binaries = ["ransomeye-agent", ', "x = [", f"{B0}.forbidden-binaries"),
    (
        "ships-and-forbids",
        'forbidden-binaries = ["ransomeye-agent", ',
        'forbidden-binaries = ["ransomeye-core", "ransomeye-agent", ',
        f"{B0} (bundle 'core') both ships and forbids ransomeye-core",
    ),
    ("duplicate-id", 'id = "dpi"', 'id = "core"', "two bundles share the same id"),
    ("duplicate-name", 'name = "ransomeye-dpi"', 'name = "ransomeye-core"', "two bundles share the same name"),
    ("dpi-bad-format", 'format = "tar.gz"\ntarget = "x86_64-unknown-linux-gnu"\nbinaries = ["ransomeye-dpi"]',
     'format = "rar"\ntarget = "x86_64-unknown-linux-gnu"\nbinaries = ["ransomeye-dpi"]', f"{B3}.format"),
    ("toolchain-linker-int", 'linker = "cc"', "linker = 1", ".toolchains.x86_64-unknown-linux-gnu.linker"),
    ("toolchain-linker-missing", 'linker = "cc"\n', "", ".toolchains.x86_64-unknown-linux-gnu.linker"),
    ("toolchain-packages-str", 'debian-packages = ["rustc", "cargo"]\n', 'debian-packages = "rustc"\n',
     ".toolchains.x86_64-unknown-linux-gnu.debian-packages"),
    ("bad-toml-unclosed", 'version = "1.0.0"', 'version = "1.0.0', "not valid TOML"),
    ("bad-toml-duplicate-key", 'version = "1.0.0"', 'version = "1.0.0"\nversion = "1.0.1"', "not valid TOML"),
    ("bad-toml-header", "[workspace.package]", "[[[workspace.package]", "not valid TOML"),
]  # fmt: skip


def _malformed_toml(case: str, old: str, new: str) -> str:
    if case.startswith("bundles-") or case == "bundle-not-table":
        return _without_bundle_tables(REAL_TOML, new)
    return _edit(REAL_TOML, old, new)


@pytest.mark.parametrize(("case", "old", "new", "names"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_declaration_is_bad_input(tmp_path: Path, case: str, old: str, new: str, names: str) -> None:
    (tmp_path / "Cargo.toml").write_text(_malformed_toml(case, old, new))
    with pytest.raises(BadInputError) as e:
        load_workspace(tmp_path)
    message = e.value.message
    assert message.startswith(f"{tmp_path.resolve() / 'Cargo.toml'}: "), message
    assert names in message, message
    assert e.value.exit_code == 2
    assert "\n" not in message  # one line; how to fix it goes in the hint


def test_an_unedited_copy_loads(tmp_path: Path) -> None:
    """The harness itself: the real file loads from tmp_path, so every failure above is its edit's."""
    (tmp_path / "Cargo.toml").write_text(REAL_TOML)
    assert [b.id for b in load_workspace(tmp_path).bundles] == ["core", "agent-linux", "agent-windows", "dpi"]


def test_missing_cargo_toml_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="file not found") as e:
        load_workspace(tmp_path)
    assert str(tmp_path.resolve() / "Cargo.toml") in e.value.message


def test_cargo_toml_not_utf8_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_bytes(REAL_TOML.encode() + b"\n# \xff\xfe\n")
    with pytest.raises(BadInputError) as e:
        load_workspace(tmp_path)
    assert str(tmp_path.resolve() / "Cargo.toml") in e.value.message


def test_trailing_slash_on_a_path_is_normalized(tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_text(_edit(REAL_TOML, '"ui/dist"', '"ui/dist/"'))
    assert load_workspace(tmp_path).bundle("core").assets[0] == "ui/dist"


def test_the_same_asset_twice_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_text(_edit(REAL_TOML, '"ui/dist"', '"ui/dist", "ui/dist/"'))
    with pytest.raises(BadInputError, match=r"assets lists a name twice"):
        load_workspace(tmp_path)


# --- fuzzing the parsed declaration -----------------------------------------------

REAL_DATA = tomllib.loads(REAL_TOML)

_interesting_strings = st.sampled_from(
    ["", ".", "..", "/", "/etc", "a/../b", "a\\b", "edge", "edge/x", "ui/dist/", "core", "zip", "tar.gz",
     "ransomeye-core", "x86_64-unknown-linux-gnu", "1.0.0", "1.0", "Core", "a b", "\n", "\x00", "é"]
)  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    _interesting_strings,
    st.datetimes(max_value=datetime.datetime(9999, 1, 1)),
    st.dates(),
    st.binary(max_size=4),
)
values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), _interesting_strings), inner, max_size=4),
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path into ``node`` (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    children: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    for key, child in children:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _mutate(data: dict[str, Any], draw: st.DataObject) -> None:
    # Below the top-level tables: losing [workspace] whole is one case (tested below), not a quarter of the runs.
    path = draw.draw(st.sampled_from([p for p in _paths(data) if len(p) > 1] or _paths(data)), label="path")
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = draw.draw(st.sampled_from(["delete", "replace", "append"]), label="action")
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = draw.draw(values, label="value")
    elif isinstance(parent[key], list):
        parent[key].append(draw.draw(values, label="item"))
    elif isinstance(parent[key], dict):
        parent[key][draw.draw(st.one_of(st.text(max_size=8), _interesting_strings), label="new key")] = draw.draw(
            values, label="new value"
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parse_workspace_only_ever_raises_bad_input(data: st.DataObject) -> None:
    mutated = copy.deepcopy(REAL_DATA)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        if _paths(mutated):
            _mutate(mutated, data)
    try:
        ws = parse_workspace(mutated, ROOT)
    except BadInputError as e:
        assert e.message.startswith(f"{ROOT / 'Cargo.toml'}: ")
        return
    # Whatever was accepted satisfies the invariants the packagers rely on.
    assert ws.bundles and ws.sources
    for b in ws.bundles:
        assert b.binaries and not set(b.binaries) & set(b.forbidden_binaries)
        assert all(b.forbidden_path(a) is None for a in b.assets)
    assert len({b.id for b in ws.bundles}) == len(ws.bundles)


@pytest.mark.parametrize("data", [{}, {"workspace": []}, {"workspace": {"package": "1.0.0"}}])
def test_parse_workspace_without_the_tables_is_bad_input(data: dict[str, Any]) -> None:
    with pytest.raises(BadInputError, match=r"\[workspace(\.package)?\] is missing"):
        parse_workspace(data, ROOT)


def test_parse_workspace_of_the_real_data_is_the_loaded_workspace(real: Workspace) -> None:
    assert parse_workspace(copy.deepcopy(REAL_DATA), ROOT) == real
