"""SBOMs: cargo metadata parsing, a schema-valid, deterministic CycloneDX document per archive, reading it back."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import json
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.spdx import fixup_id, is_expression
from cyclonedx.validation.json import JsonStrictValidator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packageurl import PackageURL

from release import sbom, sbom_build
from release.archive import ArtifactDigest
from release.errors import BadInputError, ToolchainError
from release.products import Bundle, load_workspace
from release.sbom import (
    CRATES_IO,
    SUFFIX,
    CargoMetadata,
    LocalCrate,
    cargo_metadata,
    parse_cargo_metadata,
    read_sbom,
    sbom_name,
    validate_sbom,
)
from release.sbom_build import (
    RUST_STD_LICENSE,
    SERIAL_NAMESPACE,
    _license,
    bundle_sbom,
    rustc_version,
    sbom_json,
    write_sbom,
)

ROOT = Path(__file__).resolve().parent.parent
EPOCH = 1_700_000_000
TOOLCHAIN = "rustc 1.95.0 (59807616e 2026-04-14)"
VERSION = "1.0.0"


def _pkg(name: str, version: str, license: str | None, bins: tuple[str, ...] = (), source: str | None = None) -> Any:
    return {
        "name": name,
        "version": version,
        "id": f"{'registry' if source else 'path'}+file:///somewhere/{name}#{name}@{version}",
        "license": license,
        "description": f"the {name} crate",
        "source": source,
        "targets": [{"kind": ["bin"], "name": b} for b in bins] + [{"kind": ["lib"], "name": name}],
    }


def _dep(pkg: dict[str, Any], kind: str | None) -> dict[str, Any]:
    return {"name": pkg["name"], "pkg": pkg["id"], "dep_kinds": [{"kind": kind, "target": None}]}


APP = _pkg("app", "2.1.0", "LicenseRef-Acme-Proprietary", ("app-server", "app-tool"))
CLI = _pkg("cli", "2.1.0", "MIT", ("app-cli",))
LIBX = _pkg("libx", "0.4.2", "MIT OR Apache-2.0", source=CRATES_IO)
LIBY = _pkg("liby", "1.0.0", "Apache-2.0", source=CRATES_IO)
DEVONLY = _pkg("devonly", "3.0.0", "MIT", source=CRATES_IO)
BUILDONLY = _pkg("buildonly", "1.2.3", None, source=CRATES_IO)
METADATA: dict[str, Any] = {
    "packages": [APP, CLI, LIBX, LIBY, DEVONLY, BUILDONLY],
    "workspace_members": [APP["id"], CLI["id"]],
    "resolve": {
        "nodes": [
            {"id": APP["id"], "deps": [_dep(LIBX, None), _dep(DEVONLY, "dev"), _dep(BUILDONLY, "build")]},
            {"id": CLI["id"], "deps": []},
            {"id": LIBX["id"], "deps": [_dep(LIBY, None)]},
            {"id": LIBY["id"], "deps": []},
            {"id": DEVONLY["id"], "deps": []},
            {"id": BUILDONLY["id"], "deps": []},
        ]
    },
}

BUNDLE = Bundle(
    id="server",
    name="app-server",
    format="tar.gz",
    target="x86_64-unknown-linux-gnu",
    binaries=("app-server", "app-tool"),
    assets=("ui/dist",),
    forbidden_paths=("edge",),
    forbidden_binaries=("app-cli",),
)
WINDOWS = Bundle("win", "app-win", "zip", "x86_64-pc-windows-gnu", ("app-cli",), (), (), ())
TOP = BUNDLE.stem(VERSION)


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


CONTENTS = {
    f"{TOP}/bin/app-server": _sha("server"),
    f"{TOP}/bin/app-tool": _sha("tool"),
    f"{TOP}/ui/dist/index.html": _sha("<html>"),
    f"{TOP}/ui/dist/assets/app.js": _sha("js"),
}


def _archive(bundle: Bundle = BUNDLE, data: bytes = b"the archive bytes") -> ArtifactDigest:
    return ArtifactDigest(
        Path("/nowhere") / bundle.archive_name(VERSION),
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.blake2b(data).digest(),
    )


@pytest.fixture(scope="module")
def metadata() -> CargoMetadata:
    return parse_cargo_metadata(METADATA)


def _document(metadata: CargoMetadata, contents: dict[str, str] = CONTENTS, **kw: Any) -> dict[str, Any]:
    bom = bundle_sbom(BUNDLE, VERSION, _archive(), contents, metadata, EPOCH, **kw)
    result: dict[str, Any] = json.loads(sbom_json(bom))
    return result


# --- cargo metadata ---------------------------------------------------------------


def test_binaries_map_to_their_workspace_crates(metadata: CargoMetadata) -> None:
    assert dict(metadata.binaries) == {"app-cli": "cli@2.1.0", "app-server": "app@2.1.0", "app-tool": "app@2.1.0"}
    crate = metadata.crate_of("app-tool")
    assert (crate.name, crate.version, crate.license) == ("app", "2.1.0", "LicenseRef-Acme-Proprietary")


def test_closure_follows_normal_dependencies_only(metadata: CargoMetadata) -> None:
    """Dev and build dependencies are not linked into the binary."""
    assert [c.key for c in metadata.closure("app-server")] == ["app@2.1.0", "libx@0.4.2", "liby@1.0.0"]
    assert [c.key for c in metadata.closure("app-cli")] == ["cli@2.1.0"]
    assert metadata.crates["libx@0.4.2"].purl == "pkg:cargo/libx@0.4.2"
    assert metadata.crates["app@2.1.0"].purl is None  # a workspace crate is not on crates.io


def test_without_resolve_each_crate_stands_alone() -> None:
    md = parse_cargo_metadata({**METADATA, "resolve": None})
    assert [c.key for c in md.closure("app-server")] == ["app@2.1.0"]


def test_unknown_binary_is_refused(metadata: CargoMetadata) -> None:
    with pytest.raises(BadInputError, match="no workspace crate builds the binary 'nope'"):
        metadata.crate_of("nope")


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "no packages"),
        ({**METADATA, "workspace_members": ["path+file:///elsewhere#x@1.0.0"]}, "not among the packages"),
        ({**METADATA, "packages": [APP, APP]}, "two packages are app@2.1.0"),
        ({**METADATA, "packages": [{**APP, "version": ""}]}, "version is not a non-empty string"),
    ],
)
def test_malformed_metadata_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_cargo_metadata(data)


@pytest.fixture(scope="module")
def this_workspace() -> CargoMetadata:
    """``cargo metadata`` of this repository's workspace."""
    cargo = shutil.which("cargo")
    assert cargo is not None
    return cargo_metadata(ROOT, Path(cargo))


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_cargo_metadata_of_this_workspace(this_workspace: CargoMetadata) -> None:
    md = this_workspace
    ws = load_workspace(ROOT)
    declared = {b for bundle in ws.bundles for b in bundle.binaries}
    assert declared <= set(md.binaries)
    assert md.crate_of("ransomeye-tuner").name == "ransomeye-core"
    assert md.crate_of("ransomeye-loader").name == "ransomeye-agent"
    assert all(c.license for c in md.crates.values()), "every crate declares its licence"


# --- the SBOM -------------------------------------------------------------------


def test_sbom_validates_against_the_cyclonedx_schema(metadata: CargoMetadata) -> None:
    text = sbom_json(bundle_sbom(BUNDLE, VERSION, _archive(), CONTENTS, metadata, EPOCH, toolchain=TOOLCHAIN))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text.decode()) is None
    assert validate_sbom(text.decode()) == []


def test_sbom_describes_the_archive_its_files_and_crates(metadata: CargoMetadata) -> None:
    doc = _document(metadata, toolchain=TOOLCHAIN)
    archive = _archive()
    subject = doc["metadata"]["component"]
    assert (subject["name"], subject["version"], subject["type"]) == ("app-server", VERSION, "application")
    assert {"alg": "SHA-256", "content": archive.sha256} in subject["hashes"]
    assert {"alg": "BLAKE2b-512", "content": archive.blake2b.hex()} in subject["hashes"]
    assert doc["serialNumber"] == f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, archive.sha256)}"
    assert doc["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    server = by_ref[f"file:{TOP}/bin/app-server"]
    assert (server["type"], server["name"], server["version"]) == ("application", "app-server", "2.1.0")
    assert server["licenses"] == [{"expression": "LicenseRef-Acme-Proprietary"}]
    assert by_ref[f"file:{TOP}/ui/dist/index.html"]["type"] == "file"
    assert by_ref["crate:libx@0.4.2"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert by_ref["crate:liby@1.0.0"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert by_ref["crate:libx@0.4.2"]["purl"] == "pkg:cargo/libx@0.4.2"
    assert "crate:devonly@3.0.0" not in by_ref and "crate:buildonly@1.2.3" not in by_ref
    assert "crate:cli@2.1.0" not in by_ref, "only the crates of this bundle's binaries"
    std = by_ref["rust-std@1.95.0"]
    assert std["licenses"] == [{"expression": "MIT OR Apache-2.0"}] and TOOLCHAIN in std["description"]
    deps = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert deps[f"archive:{BUNDLE.archive_name(VERSION)}"] == {f"file:{p}" for p in CONTENTS}
    assert deps[f"file:{TOP}/bin/app-tool"] == {"crate:app@2.1.0", "rust-std@1.95.0"}
    assert deps["crate:app@2.1.0"] == {"crate:libx@0.4.2"}
    assert deps["crate:libx@0.4.2"] == {"crate:liby@1.0.0"}
    assert "/somewhere" not in json.dumps(doc), "no machine paths from cargo metadata"


def test_read_sbom_round_trip(metadata: CargoMetadata) -> None:
    view = read_sbom(_document(metadata, toolchain=TOOLCHAIN), "x")
    assert dict(view.files) == CONTENTS
    assert view.subject_sha256 == _archive().sha256
    assert view.subject_archive == BUNDLE.archive_name(VERSION)
    assert [(c.name, c.version, c.licenses) for c in view.crates] == [
        ("app", "2.1.0", "LicenseRef-Acme-Proprietary"),
        ("libx", "0.4.2", "MIT OR Apache-2.0"),
        ("liby", "1.0.0", "Apache-2.0"),
    ]
    assert view.toolchain == "1.95.0"
    assert view.spec_version == "1.6"


def test_each_binary_lists_the_sources_it_was_compiled_from(metadata: CargoMetadata) -> None:
    """The build step's binary-inputs, as nested file components of the binary: path, SHA-256."""
    sources = (("app/src/main.rs", _sha("main")), ("app/src/net.rs", _sha("net")))
    md = dataclasses.replace(metadata, inputs={"bin/x86_64-unknown-linux-gnu/app-server": sources})
    doc = _document(md, toolchain=TOOLCHAIN)
    assert validate_sbom(json.dumps(doc)) == []
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    nested = by_ref[f"file:{TOP}/bin/app-server"]["components"]
    assert [(c["type"], c["name"], c["hashes"]) for c in nested] == [
        ("file", path, [{"alg": "SHA-256", "content": sha}]) for path, sha in sources
    ]
    assert all({"name": "ransomeye:source", "value": c["name"]} in c["properties"] for c in nested)
    assert "components" not in by_ref[f"file:{TOP}/bin/app-tool"], "no inputs known, none claimed"
    view = read_sbom(doc, "x")
    assert dict(view.binary_inputs) == {f"{TOP}/bin/app-server": sources}
    assert dict(view.files) == CONTENTS, "the sources are not files of the archive"
    with pytest.raises(BadInputError, match="is not a lowercase hex SHA-256"):
        bad = dataclasses.replace(metadata, inputs={"bin/x86_64-unknown-linux-gnu/app-server": (("a.rs", "x"),)})
        _document(bad)


def test_local_crates_are_described_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    app = {**APP, "manifest_path": str(tmp_path / "app" / "Cargo.toml")}
    app["targets"] = [*APP["targets"], {"kind": ["custom-build"], "name": "build-script-build",
                                        "src_path": str(tmp_path / "app" / "build.rs")}]  # fmt: skip
    cli = {**CLI, "manifest_path": "/elsewhere/cli/Cargo.toml"}
    data = {**METADATA, "packages": [app, cli, LIBX, LIBY, DEVONLY, BUILDONLY]}
    md = parse_cargo_metadata(data, tmp_path)
    assert md.local["app@2.1.0"] == LocalCrate("app@2.1.0", "app", ("app/build.rs",), ("buildonly@1.2.3", "libx@0.4.2"))
    assert md.local["cli@2.1.0"].directory is None, "outside the repository"
    assert "libx@0.4.2" not in md.local, "a registry crate is not local"
    assert [c.key for c in md.local_closure("app-server")] == ["app@2.1.0"]
    assert parse_cargo_metadata(data).local == {}, "without the root, nothing is described"


def test_windows_binaries_keep_their_exe_name(metadata: CargoMetadata) -> None:
    top = WINDOWS.stem(VERSION)
    bom = bundle_sbom(WINDOWS, VERSION, _archive(WINDOWS), {f"{top}/bin/app-cli.exe": _sha("exe")}, metadata, EPOCH)
    doc = json.loads(sbom_json(bom))
    (exe,) = [c for c in doc["components"] if c["type"] == "application"]
    assert exe["name"] == "app-cli.exe" and exe["version"] == "2.1.0"


def test_same_inputs_same_bytes(metadata: CargoMetadata, tmp_path: Path) -> None:
    a = write_sbom(bundle_sbom(BUNDLE, VERSION, _archive(), CONTENTS, metadata, EPOCH), tmp_path / "a.cdx.json")
    b = write_sbom(bundle_sbom(BUNDLE, VERSION, _archive(), dict(reversed(CONTENTS.items())), metadata, EPOCH),
                   tmp_path / "b.cdx.json")  # fmt: skip
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.cdx.json").read_bytes() == (tmp_path / "b.cdx.json").read_bytes()
    assert a.size == len((tmp_path / "a.cdx.json").read_bytes())
    assert a.sha256 == hashlib.sha256((tmp_path / "a.cdx.json").read_bytes()).hexdigest()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


_asset = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    assets=st.dictionaries(_asset, st.binary(max_size=16), max_size=5),
    archive_bytes=st.binary(min_size=1, max_size=64),
    epoch=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_determinism_and_validity_hold_for_any_contents(
    metadata: CargoMetadata, assets: dict[str, bytes], archive_bytes: bytes, epoch: int
) -> None:
    contents = {f"{TOP}/bin/app-server": _sha("s"), f"{TOP}/bin/app-tool": _sha("t")}
    contents |= {f"{TOP}/ui/dist/{n}": hashlib.sha256(d).hexdigest() for n, d in assets.items()}
    archive = _archive(data=archive_bytes)
    first = sbom_json(bundle_sbom(BUNDLE, VERSION, archive, contents, metadata, epoch))
    second = sbom_json(bundle_sbom(BUNDLE, VERSION, archive, dict(sorted(contents.items())), metadata, epoch))
    assert first == second
    assert validate_sbom(first.decode()) == []
    view = read_sbom(json.loads(first), "x")
    assert dict(view.files) == contents and view.subject_sha256 == archive.sha256


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: {k: v for k, v in c.items() if not k.endswith("app-tool")}, "declared binaries not in the archive"),
        (lambda c: {**c, "elsewhere/x": _sha("x")}, "outside the archive's top-level directory"),
        (lambda c: {**c, f"{TOP}/ui/dist/x": "ABC"}, "not a lowercase hex SHA-256"),
    ],
    ids=["missing-binary", "outside-top-dir", "bad-hash"],
)
def test_inconsistent_inputs_are_refused(metadata: CargoMetadata, change: Any, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        bundle_sbom(BUNDLE, VERSION, _archive(), change(CONTENTS), metadata, EPOCH)


def test_archive_of_another_bundle_or_version_is_refused(metadata: CargoMetadata) -> None:
    with pytest.raises(BadInputError, match=r"is named app-server-1\.0\.0\.tar\.gz"):
        bundle_sbom(BUNDLE, VERSION, _archive(WINDOWS), CONTENTS, metadata, EPOCH)


def test_a_binary_no_crate_builds_is_refused() -> None:
    md = parse_cargo_metadata({**METADATA, "workspace_members": [CLI["id"]]})
    with pytest.raises(BadInputError, match="no workspace crate builds the binary 'app-server'"):
        bundle_sbom(BUNDLE, VERSION, _archive(), CONTENTS, md, EPOCH)


def test_schema_violations_are_reported(metadata: CargoMetadata) -> None:
    doc = _document(metadata)
    doc["components"][0]["type"] = "spaceship"
    del doc["metadata"]["component"]["name"]
    errors = validate_sbom(json.dumps(doc))
    assert errors, "an invalid document must not validate"
    assert validate_sbom("{}", "9.9") == ["unknown CycloneDX spec version '9.9'"]


def test_names() -> None:
    assert sbom_name(BUNDLE, VERSION) == "app-server-1.0.0" + SUFFIX == "app-server-1.0.0.cdx.json"
    assert rustc_version(TOOLCHAIN) == "1.95.0"
    assert rustc_version("rustc 1.63.0") == "1.63.0"


# --- the validator, compiled once, early -------------------------------------------


def test_warm_validator_starts_one_compile_whatever_the_callers() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        threads = list(pool.map(lambda _: sbom.warm_validator(), range(16)))
        assert all(t is threads[0] for t in threads), "every call returns the one warm-up thread"
        assert threads[0].daemon, "a warm-up never keeps a process alive"
        validators = list(pool.map(lambda _: sbom._validator(SchemaVersion.V1_6), range(16)))
    threads[0].join(timeout=300)
    assert not threads[0].is_alive()
    assert all(v is validators[0] for v in validators), "compiled once, shared by every thread"
    assert sbom.warm_validator() is threads[0], "called again, it starts nothing"
    assert validate_sbom("{}") != []


# Run in a fresh interpreter: jsonschema must not have been imported yet (this module imports it).
_FRESH_VALIDATOR = """
import sys, threading
from release import sbom
from release.sbom import SPEC_VERSION, validate_sbom
threads = [threading.Thread(target=sbom.warm_validator) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
sbom.warm_validator().join()
assert "rfc3987_syntax" not in sys.modules, "the IRI grammar is not compiled to build the validator"
doc = '{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,"metadata":{"component":' \
      '{"type":"library","name":"x","externalReferences":[{"type":"website","url":"%s"}]}}}'
assert validate_sbom(doc % "https://example.org/ok") == []
assert validate_sbom(doc % "not an iri") != [], "the validator's own bounded IRI test still runs"
import jsonschema
checker = jsonschema.FormatChecker()
answers = {v: (checker.conforms(v, "iri"), checker.conforms(v, "iri-reference"))
           for v in ("https://example.org/\u00e9t\u00e9", "http://a b", "//x/y", "no scheme", "a:b")}
real = sys.modules["rfc3987_syntax"]
assert getattr(real, "__file__", None), "jsonschema's own IRI checker loaded the real grammar when it was used"
expected = {v: (real.is_valid_syntax("iri", v), real.is_valid_syntax("iri_reference", v)) for v in answers}
assert answers == expected, (answers, expected)
print("ok")
"""


def test_the_validator_is_built_without_the_iri_grammar_which_stays_whole_for_others() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_VALIDATOR], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --- the same document from cyclonedx-python-lib's model (the oracle) ------------------------
#
# release/sbom_build.py writes the JSON itself (the library's import cost every packager 70 ms);
# these build the same SBOM with the library's document model and serializer, and compare bytes.


def _lib_license(expression: str) -> License:
    spdx_id = fixup_id(expression)
    if spdx_id is not None:
        return DisjunctiveLicense(id=spdx_id)
    if "LicenseRef-" in expression or is_expression(expression):
        return LicenseExpression(expression)
    return DisjunctiveLicense(name=expression)


def _lib_component(kind: ComponentType, name: str, ref: str, **kw: Any) -> Component:
    return Component(type=kind, name=name, bom_ref=ref, **kw)


def _lib_sha(value: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=value)


def _library_sbom(
    bundle: Bundle,
    archive: ArtifactDigest,
    contents: dict[str, str],
    md: CargoMetadata,
    epoch: int,
    toolchain: str | None = None,
) -> bytes:
    """What release/sbom_build.py wrote when it used cyclonedx-python-lib: the same model, the library's JSON."""
    top = bundle.stem(VERSION)
    subject = _lib_component(
        ComponentType.APPLICATION, bundle.name, f"archive:{archive.name}", version=VERSION,
        hashes=[_lib_sha(archive.sha256), HashType(alg=HashAlgorithm.BLAKE2B_512, content=archive.blake2b.hex())],
        properties=[Property(name=sbom.ARCHIVE_PROPERTY, value=archive.name),
                    Property(name=sbom.BUNDLE_PROPERTY, value=bundle.id),
                    Property(name=sbom.TARGET_PROPERTY, value=bundle.target)],
    )  # fmt: skip
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, archive.sha256),
        metadata=BomMetaData(component=subject, timestamp=datetime.fromtimestamp(epoch, UTC)),
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="ransomeye-release", description="RansomEye release pipeline")
    )
    std = None
    if toolchain is not None:
        v = rustc_version(toolchain)
        std = _lib_component(
            ComponentType.LIBRARY, sbom.RUST_STD, f"{sbom.RUST_STD}@{v}", version=v,
            description=f"The Rust standard library, linked into every binary ({toolchain})",
            licenses=[_lib_license(RUST_STD_LICENSE)],
            properties=[Property(name=sbom.TARGET_PROPERTY, value=bundle.target)],
        )  # fmt: skip
        bom.components.add(std)
    binaries = {f"{top}/bin/{bundle.binary_file(b)}": b for b in bundle.binaries}
    crates: dict[str, Component] = {}
    files: list[Component] = []
    for arcname in sorted(contents):
        binary = binaries.get(arcname)
        if binary is None:
            files.append(_lib_component(ComponentType.FILE, arcname, f"file:{arcname}",
                                        hashes=[_lib_sha(contents[arcname])],
                                        properties=[Property(name=sbom.PATH_PROPERTY, value=arcname)]))  # fmt: skip
            continue
        for c in md.closure(binary):
            crates.setdefault(c.key, _lib_component(
                ComponentType.LIBRARY, c.name, f"crate:{c.key}", version=c.version, description=c.description,
                licenses=[_lib_license(c.license)] if c.license else [],
                properties=[] if c.source is None else [Property(name="cargo:source", value=c.source)],
                purl=None if c.purl is None else PackageURL.from_string(c.purl),
            ))  # fmt: skip
        crate = md.crate_of(binary)
        filename = arcname.rsplit("/", 1)[1]
        sources = [
            _lib_component(ComponentType.FILE, path, f"source:{arcname}:{path}", hashes=[_lib_sha(sha)],
                           properties=[Property(name=sbom.SOURCE_PROPERTY, value=path)])
            for path, sha in md.inputs.get(f"bin/{bundle.target}/{filename}", ())
        ]  # fmt: skip
        component = _lib_component(
            ComponentType.APPLICATION, filename, f"file:{arcname}", version=crate.version,
            hashes=[_lib_sha(contents[arcname])], licenses=[_lib_license(crate.license)] if crate.license else [],
            properties=[Property(name=sbom.PATH_PROPERTY, value=arcname),
                        Property(name=sbom.CRATE_PROPERTY, value=crate.key)],
            components=sources,
        )  # fmt: skip
        files.append(component)
        bom.register_dependency(component, [crates[crate.key], *([std] if std else [])])
    for component in files:
        bom.components.add(component)
    for key in sorted(crates):
        bom.components.add(crates[key])
        bom.register_dependency(crates[key], [crates[d] for d in md.crates[key].deps])
    bom.register_dependency(subject, files)
    data = json.loads(JsonV1Dot6(bom).output_as_string())
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _both(
    bundle: Bundle, contents: dict[str, str], md: CargoMetadata, epoch: int = EPOCH, **kw: Any
) -> tuple[bytes, bytes]:
    archive = _archive(bundle)
    ours = sbom_json(bundle_sbom(bundle, VERSION, archive, contents, md, epoch, **kw))
    return ours, _library_sbom(bundle, archive, contents, md, epoch, **kw)


SOURCES = (("app/src/main.rs", _sha("main")), ("app/src/net.rs", _sha("net")), ("app/build.rs", _sha("b")))


@pytest.mark.parametrize("toolchain", [None, TOOLCHAIN], ids=["no-toolchain", "toolchain"])
@pytest.mark.parametrize("inputs", [False, True], ids=["no-sources", "sources"])
def test_the_document_is_byte_for_byte_what_cyclonedx_python_lib_writes(
    metadata: CargoMetadata, toolchain: str | None, inputs: bool
) -> None:
    md = (
        dataclasses.replace(metadata, inputs={"bin/x86_64-unknown-linux-gnu/app-server": SOURCES})
        if inputs
        else metadata
    )
    ours, library = _both(BUNDLE, CONTENTS, md, toolchain=toolchain)
    assert ours == library
    top = WINDOWS.stem(VERSION)
    ours, library = _both(WINDOWS, {f"{top}/bin/app-cli.exe": _sha("exe")}, md, toolchain=toolchain)
    assert ours == library


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_every_bundle_of_this_repository_gets_the_library_s_document(this_workspace: CargoMetadata) -> None:
    """This workspace's own crates and bundles, each binary with sources and every asset as a file."""
    for bundle in load_workspace(ROOT).bundles:
        top = bundle.stem(VERSION)
        contents = {f"{top}/bin/{bundle.binary_file(b)}": _sha(b) for b in bundle.binaries}
        contents |= {f"{top}/{a}/index.html": _sha(a) for a in bundle.assets}
        inputs = {f"bin/{bundle.target}/{bundle.binary_file(b)}": SOURCES for b in bundle.binaries}
        md = dataclasses.replace(this_workspace, inputs=inputs)
        ours, library = _both(bundle, contents, md, toolchain=TOOLCHAIN)
        assert ours == library, bundle.id


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    assets=st.dictionaries(_asset_name := st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1,
                                                  max_size=12).filter(lambda s: s not in (".", "..")),
                           st.binary(max_size=16), max_size=5),
    sources=st.lists(st.tuples(_asset_name, st.binary(max_size=8)), max_size=4, unique_by=lambda t: t[0]),
    licenses=st.tuples(*(st.sampled_from(["MIT", "mit", "MIT OR Apache-2.0", "Apache-2.0 WITH LLVM-exception",
                                          "LicenseRef-X", "Proprietary", "GPL-2.0+", "(MIT", ""]),) * 3),
    epoch=st.integers(min_value=0, max_value=4_000_000_000),
)  # fmt: skip
def test_generated_inputs_give_the_library_s_document(
    assets: dict[str, bytes], sources: list[tuple[str, bytes]], licenses: tuple[str, str, str], epoch: int
) -> None:
    app = {**APP, "license": licenses[0] or None}
    libx, liby = {**LIBX, "license": licenses[1] or None}, {**LIBY, "license": licenses[2] or None}
    md = parse_cargo_metadata({**METADATA, "packages": [app, CLI, libx, liby, DEVONLY, BUILDONLY]})
    md = dataclasses.replace(
        md,
        inputs={"bin/x86_64-unknown-linux-gnu/app-tool": tuple(sorted((f"src/{n}", _sha(str(d))) for n, d in sources))},
    )
    contents = {f"{TOP}/bin/app-server": _sha("s"), f"{TOP}/bin/app-tool": _sha("t")}
    contents |= {f"{TOP}/ui/dist/{n}": hashlib.sha256(d).hexdigest() for n, d in assets.items()}
    ours, library = _both(BUNDLE, contents, md, epoch, toolchain=TOOLCHAIN)
    assert ours == library


_PACKAGER_SBOM = """
import sys
from release import sbom_build
assert sbom_build._license("MIT OR Apache-2.0") == {"expression": "MIT OR Apache-2.0"}
print("\\n".join(sorted(sys.modules)))
"""


def test_a_packager_writes_its_sbom_without_the_library_s_document_model() -> None:
    """The reason the document is written by hand: a packaging step's process never imports the library's model,
    its serializer or licence parser (70 ms of each packager's fixed cost); it reads the schema's SPDX list."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})" + _PACKAGER_SBOM],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    for heavy in ("cyclonedx.model", "cyclonedx.output", "cyclonedx.spdx", "license_expression", "packageurl",
                  "serializable", "sortedcontainers"):  # fmt: skip
        assert heavy not in loaded, heavy


# Where the schema's SPDX list and license-expression's differ (see release/sbom_build.py): ours, and why.
SCHEMA_LIST = "an id the schema's SPDX list has and license-expression's does not"
NOT_SPDX = "not an SPDX expression over the schema's ids (the library's parser is laxer)"
DIFFERS: dict[str, tuple[dict[str, Any], str]] = {
    "MIT OR Apache-2.0 OR": ({"license": {"name": "MIT OR Apache-2.0 OR"}}, "a trailing operator"),
    "MIT OR OpenMDW-1.0": ({"expression": "MIT OR OpenMDW-1.0"}, SCHEMA_LIST),
    "Apache-2.0 WITH Classpath-exception-2.0-short": (
        {"expression": "Apache-2.0 WITH Classpath-exception-2.0-short"}, SCHEMA_LIST),
    "MIT WITH rsync-linking-exception": ({"expression": "MIT WITH rsync-linking-exception"}, SCHEMA_LIST),
    "MIT OR AGPL-3.0+": ({"license": {"name": "MIT OR AGPL-3.0+"}}, "a + form the schema's list does not have"),
    "GFDL-1.3+": ({"license": {"name": "GFDL-1.3+"}}, "a + form the schema's list does not have"),
    "MIT OR GPL 2.0": ({"license": {"name": "MIT OR GPL 2.0"}}, NOT_SPDX + ": an alias with a space"),
    "MIT OR BSD-2": ({"license": {"name": "MIT OR BSD-2"}}, NOT_SPDX + ": an alias"),
    "Apache-2.0 WITH eCos-2.0": (
        {"license": {"name": "Apache-2.0 WITH eCos-2.0"}}, NOT_SPDX + ": a licence after WITH"),
    "Apache-2.0 WITH GPL-2.0-with-autoconf-exception": (
        {"license": {"name": "Apache-2.0 WITH GPL-2.0-with-autoconf-exception"}}, NOT_SPDX + ": a licence after WITH"),
    " ": ({"license": {"name": " "}}, "blank"),
    "(" * 33 + "MIT" + ")" * 33: ({"license": {"name": "(" * 33 + "MIT" + ")" * 33}}, "nested deeper than 32"),
    "(" * 5000 + "MIT" + ")" * 5000: (
        {"license": {"name": "(" * 5000 + "MIT" + ")" * 5000}}, "hostile: nested past Python's recursion limit"),
}  # fmt: skip
LICENSES = [
    "MIT", "mit", "Apache-2.0", "GPL-2.0", "GPL-2.0+", "gpl-3.0-only", "Classpath-exception-2.0", "NOASSERTION",
    "MIT OR Apache-2.0", "mit or apache-2.0", "MIT or Apache-2.0", "MIT  OR\tApache-2.0", "  MIT  ", "((MIT))",
    "(MIT OR Apache-2.0) AND BSD-3-Clause", "BSD-3-Clause OR (Apache-2.0 AND MIT)", "MPL-2.0 OR (MIT AND X11)",
    "Apache-2.0 WITH LLVM-exception", "Apache-2.0 with LLVM-exception", "GPL-2.0-only WITH Linux-syscall-note",
    "GPL-2.0+ WITH Classpath-exception-2.0", "MIT AND (Apache-2.0 WITH LLVM-exception)",
    "LicenseRef-Acme", "LicenseRef-a OR MIT", "DocumentRef-x:LicenseRef-y", "MIT WITH LicenseRef-x",
    "Acme Proprietary", "MIT/Apache-2.0", "MIT AND", "MIT OR", "(MIT", "MIT OR ()", "()", "AND", "MIT WITH",
    "WITH LLVM-exception", "MIT OR FooBar", "MIT WITH MIT", "MIT AND Classpath-exception-2.0", "MIT+", "Apache-2.0+",
    "(MIT OR Apache-2.0) WITH LLVM-exception", "DocumentRef-x", "DocumentRef-x:LicenseRef-y OR MIT",
    "ESA-PL-permissive-2.4", "GPL-2.0-with-GCC-exception", "(" * 32 + "MIT OR Apache-2.0" + ")" * 32,
    "MIT OR " * 5000 + "Apache-2.0", *DIFFERS,
]  # fmt: skip


@pytest.mark.parametrize(
    "ids, message",
    [
        (["MIT", "Zlib"], "0 places where the order starts again"),
        (["MIT", "Zlib", "LLVM-exception", "Apache-2.0", "Swift-exception", "A-exception"], "3 places"),
        (None, "is missing"),
    ],
    ids=["no-exceptions", "three-runs", "missing"],
)
def test_a_spdx_list_not_as_the_schema_ships_it_stops_the_sbom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[str] | None, message: str
) -> None:
    """The licences/exceptions split relies on the list's layout: another layout is refused, never guessed."""
    package = tmp_path / "cyclonedx"
    data = package.joinpath("schema", "_res")
    data.mkdir(parents=True)
    if ids is not None:
        (data / "spdx.SNAPSHOT.schema.json").write_text(json.dumps({"enum": ids}))
    spec = importlib.machinery.ModuleSpec("cyclonedx", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(sbom_build, "find_spec", lambda name: spec)
    sbom_build._spdx.cache_clear()
    try:
        with pytest.raises(ToolchainError, match=message) as err:
            _license("MIT OR Apache-2.0")
        assert err.value.hint and "make setup" in err.value.hint
    finally:
        sbom_build._spdx.cache_clear()


@pytest.mark.parametrize("value", LICENSES)
def test_licences_are_classified_as_the_library_does(value: str) -> None:
    """As the library does, except where its licence list and the schema's differ (each difference listed)."""
    lib = _lib_license(value)
    if isinstance(lib, LicenseExpression):
        expected: dict[str, Any] = {"expression": lib.value}
    else:
        assert isinstance(lib, DisjunctiveLicense)
        expected = {"license": {"id": lib.id} if lib.id else {"name": lib.name}}
    if value in DIFFERS:
        ours, _ = DIFFERS[value]
        assert _license(value) == ours and expected != ours, "listed as a difference: still one"
    else:
        assert _license(value) == expected


def test_the_reader_names_sha_256_as_cyclonedx_does() -> None:
    assert HashAlgorithm.SHA_256.value == sbom.SHA_256_NAME
