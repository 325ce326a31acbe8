"""CycloneDX SBOMs: one per release archive, and reading them back for an audit.

An SBOM ``<stem>.cdx.json`` (CycloneDX 1.6, JSON) describes one archive:

* ``metadata.component`` is the archive itself: the bundle's name, the release
  version, its SHA-256 and BLAKE2b-512, and properties naming the archive file,
  the bundle and the target;
* one component per file inside the archive, with its SHA-256 and the
  property ``ransomeye:path`` holding its exact member name: binaries (type
  ``application``, named by file, versioned by the crate they are built from)
  and assets (type ``file``, named by member name);
* one ``library`` component per Rust crate linked into a binary (the crate
  and its normal dependencies, from ``cargo metadata``), with its licence,
  and, when the toolchain is known, the Rust standard library;
* dependencies: archive → its files, binary → its crate (and ``rust-std``),
  crate → its dependencies;
* for a binary the build compiled, its source provenance: the binary's
  component holds (CycloneDX ``components``, an assembly: what the binary
  was made of) one ``file`` component per source file the compiler read
  for it (cargo's dep-info), named by its repository-relative path, with
  its SHA-256 (as the build link recorded it among its materials) and the
  property ``ransomeye:source`` holding that path. The same set is the
  build link's ``environment["binary-inputs"]``.

The document is deterministic: the serial number is a UUID5 of the archive's
SHA-256, the timestamp is the release epoch (``SOURCE_DATE_EPOCH``), and the
JSON is written with sorted keys. Documents are written by
:mod:`release.sbom_build` (a packaging step's only) as plain JSON, byte for
byte what the maintained ``cyclonedx-python-lib`` serializes for the same
model (its tests compare the two; licences are classified by the schema's
own SPDX list, see there), and checked against the CycloneDX JSON
schema (:func:`validate_sbom`) by the verify step before anything is
published.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cyclonedx.schema import SchemaVersion

from release.errors import BadInputError, ToolchainError, VerificationError
from release.products import Bundle

SUFFIX = ".cdx.json"
SHA_256_NAME = "SHA-256"  # CycloneDX's name of the algorithm
SPEC_VERSION = SchemaVersion.V1_6
PATH_PROPERTY = "ransomeye:path"
ARCHIVE_PROPERTY = "ransomeye:archive"
BUNDLE_PROPERTY = "ransomeye:bundle"
TARGET_PROPERTY = "ransomeye:target"
CRATE_PROPERTY = "ransomeye:crate"
SOURCE_PROPERTY = "ransomeye:source"
RUST_STD = "rust-std"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
CARGO_TIMEOUT = 120


def sbom_name(bundle: Bundle, version: str) -> str:
    """The SBOM file name of ``bundle``'s archive, e.g. ``ransomeye-core-1.0.0.cdx.json``."""
    return bundle.stem(version) + SUFFIX


# --- cargo metadata -------------------------------------------------------------


@dataclass(frozen=True)
class Crate:
    """One Rust package as ``cargo metadata`` describes it (no machine paths).

    ``deps`` are the keys of its normal (linked) dependencies; ``source`` is
    None for a workspace or path crate.
    """

    name: str
    version: str
    license: str | None
    description: str | None
    source: str | None
    deps: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def purl(self) -> str | None:
        """The package URL of a crates.io crate; None for any other source."""
        return f"pkg:cargo/{self.name}@{self.version}" if self.source == CRATES_IO else None


@dataclass(frozen=True)
class LocalCrate:
    """A crate built from a directory (a workspace member or a path dependency).

    ``directory`` is repository-relative, None when it lies outside the
    repository; ``build_scripts`` are the repository-relative paths of its
    build scripts (``custom-build`` targets; outside ones keep cargo's
    text); ``deps`` are the keys of its normal and build dependencies.
    """

    key: str
    directory: str | None
    build_scripts: tuple[str, ...]
    deps: tuple[str, ...]


SourceInputs = tuple[tuple[str, str], ...]  # (repository-relative path, SHA-256), sorted by path


@dataclass(frozen=True)
class CargoMetadata:
    """The crates of the workspace and which crate each binary is built from.

    ``local`` describes the crates built from directories (filled when the
    metadata was parsed with the repository root); ``inputs`` maps a built
    binary, ``bin/<target>/<file>``, to the source files the compiler read
    for it (filled by the build step from cargo's dep-info).
    """

    crates: Mapping[str, Crate]
    binaries: Mapping[str, str]
    local: Mapping[str, LocalCrate] = field(default_factory=lambda: MappingProxyType({}))
    inputs: Mapping[str, SourceInputs] = field(default_factory=lambda: MappingProxyType({}))

    def local_closure(self, binary: str) -> tuple[LocalCrate, ...]:
        """``binary``'s crate and every local crate it reaches by normal or build dependencies, sorted by key."""
        seen: dict[str, LocalCrate] = {}
        todo = [self.crate_of(binary).key]
        while todo:
            key = todo.pop()
            crate = self.local.get(key)
            if crate is None or key in seen:
                continue
            seen[key] = crate
            todo.extend(crate.deps)
        return tuple(seen[k] for k in sorted(seen))

    def crate_of(self, binary: str) -> Crate:
        """The crate whose ``[[bin]]`` target is ``binary`` (name without ``.exe``)."""
        try:
            return self.crates[self.binaries[binary]]
        except KeyError:
            raise BadInputError(
                f"no workspace crate builds the binary {binary!r}",
                hint="known binaries: " + ", ".join(sorted(self.binaries)),
            ) from None

    def closure(self, binary: str) -> tuple[Crate, ...]:
        """``binary``'s crate and every crate it links (normal dependencies), sorted by key."""
        seen: dict[str, Crate] = {}
        todo = [self.crate_of(binary).key]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            crate = self.crates[key]
            seen[key] = crate
            todo.extend(crate.deps)
        return tuple(seen[k] for k in sorted(seen))


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInputError(f"cargo metadata: {where} is not a non-empty string")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _relative(path: Any, root: Path, where: str) -> str | None:
    """``path`` (absolute, from cargo) relative to ``root``, symlinks resolved; None outside ``root``."""
    real = Path(os.path.realpath(_str(path, where)))
    return real.relative_to(root).as_posix() if real.is_relative_to(root) else None


def parse_cargo_metadata(data: Mapping[str, Any], root: Path | None = None) -> CargoMetadata:
    """Parse the JSON of ``cargo metadata --format-version 1``.

    Binaries are the ``bin`` targets of the workspace members. A crate's
    dependencies come from ``resolve`` (normal dependencies only: dev and
    build dependencies are not linked into a binary); without ``resolve``
    (``--no-deps``) each crate stands alone. With the repository ``root``,
    every crate built from a directory is also described (:class:`LocalCrate`):
    its directory relative to ``root``, its build scripts, its normal and build
    dependencies. Raises :class:`BadInputError` for a document that is not cargo's.
    """
    packages = data.get("packages")
    members = data.get("workspace_members")
    if not isinstance(packages, list) or not isinstance(members, list):
        raise BadInputError("cargo metadata: no packages or workspace_members (not cargo's format version 1)")
    key_of: dict[str, str] = {}
    raw: dict[str, Mapping[str, Any]] = {}
    for i, pkg in enumerate(packages):
        if not isinstance(pkg, dict):
            raise BadInputError(f"cargo metadata: packages[{i}] is not an object")
        pkg_id = _str(pkg.get("id"), f"packages[{i}].id")
        key = f"{_str(pkg.get('name'), f'packages[{i}].name')}@{_str(pkg.get('version'), f'packages[{i}].version')}"
        if key in raw:
            raise BadInputError(f"cargo metadata: two packages are {key} (from different sources)")
        key_of[pkg_id] = key
        raw[key] = pkg
    deps, built_with = _resolved(data.get("resolve"), key_of)
    crates = {
        key: Crate(
            name=pkg["name"],
            version=pkg["version"],
            license=_opt_str(pkg.get("license")),
            description=_opt_str(pkg.get("description")),
            source=_opt_str(pkg.get("source")),
            deps=tuple(sorted(set(deps[key]))),
        )
        for key, pkg in sorted(raw.items())
    }
    binaries: dict[str, str] = {}
    for member in members:
        member_key = key_of.get(member)
        if member_key is None:
            raise BadInputError(f"cargo metadata: workspace member {member!r} is not among the packages")
        for target in raw[member_key].get("targets") or []:
            if "bin" in (target.get("kind") or []):
                name = _str(target.get("name"), f"{member_key} target name")
                if name in binaries:
                    raise BadInputError(f"cargo metadata: two crates build a binary {name!r}")
                binaries[name] = member_key
    local = _local_crates(raw, built_with, Path(os.path.realpath(root))) if root is not None else {}
    return CargoMetadata(
        MappingProxyType(crates), MappingProxyType(dict(sorted(binaries.items()))), MappingProxyType(local)
    )


def _resolved(resolve: Any, key_of: Mapping[str, str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """From cargo's ``resolve``: each crate's normal dependencies, and its normal and build dependencies."""
    deps: dict[str, list[str]] = {k: [] for k in key_of.values()}
    built_with: dict[str, list[str]] = {k: [] for k in key_of.values()}
    if not isinstance(resolve, dict):
        return deps, built_with
    for node in resolve.get("nodes") or []:
        node_key = key_of.get(node.get("id", ""))
        if node_key is None:
            raise BadInputError(f"cargo metadata: resolve names an unknown package {node.get('id')!r}")
        for dep in node.get("deps") or []:
            kinds = dep.get("dep_kinds")
            normal = kinds is None or any(k.get("kind") is None for k in kinds)
            dep_key = key_of.get(dep.get("pkg", ""))
            if dep_key is None:
                raise BadInputError(f"cargo metadata: resolve names an unknown package {dep.get('pkg')!r}")
            if normal:
                deps[node_key].append(dep_key)
            if normal or any(k.get("kind") == "build" for k in kinds or []):
                built_with[node_key].append(dep_key)
    return deps, built_with


def _local_crates(
    raw: Mapping[str, Mapping[str, Any]], built_with: Mapping[str, list[str]], root: Path
) -> dict[str, LocalCrate]:
    """Every crate built from a directory of ``root``: its directory, its build scripts, what it is built with."""
    local: dict[str, LocalCrate] = {}
    for key, pkg in sorted(raw.items()):
        if pkg.get("source") is not None:
            continue
        manifest = _str(pkg.get("manifest_path"), f"{key} manifest_path")
        directory = _relative(str(Path(manifest).parent), root, f"{key} manifest_path")
        scripts = []
        for target in pkg.get("targets") or []:
            if "custom-build" in (target.get("kind") or []):
                src = _str(target.get("src_path"), f"{key} build script src_path")
                scripts.append(_relative(src, root, f"{key} build script src_path") or src)
        local[key] = LocalCrate(key, directory, tuple(sorted(scripts)), tuple(sorted(set(built_with[key]))))
    return local


def cargo_metadata(root: Path, cargo: Path) -> CargoMetadata:
    """Run ``cargo metadata --offline --locked --format-version 1`` in ``root`` and parse it.

    Side effect: runs cargo (offline; ``--locked`` so it never rewrites
    ``Cargo.lock``). Raises :class:`ToolchainError` when cargo cannot run or
    fails, :class:`BadInputError` when its output is not what cargo writes.
    """
    return parse_cargo_metadata(run_cargo_metadata(root, cargo), root)


def run_cargo_metadata(root: Path, cargo: Path) -> dict[str, Any]:
    """What ``cargo metadata`` prints for ``root`` (a JSON object), unparsed: see :func:`cargo_metadata`."""
    cmd = [str(cargo), "metadata", "--offline", "--locked", "--format-version", "1"]
    cmd += ["--manifest-path", str(root / "Cargo.toml")]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=CARGO_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"cannot run {cargo} metadata: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise ToolchainError(f"cargo metadata failed (exit {proc.returncode})", hint=tail or None)
    try:
        data = json.loads(proc.stdout)
    except ValueError as e:
        raise BadInputError(f"cargo metadata did not print JSON: {e}") from e
    if not isinstance(data, dict):
        raise BadInputError("cargo metadata did not print a JSON object")
    return data


# --- writing and reading -----------------------------------------------------------


def validate_sbom(text: str, spec_version: str = SPEC_VERSION.to_version(), limit: int = 20) -> list[str]:
    """The errors of ``text`` against the CycloneDX JSON schema ``spec_version`` (the first ``limit``); empty if valid.

    Offline: the schemas ship with ``cyclonedx-python-lib``. An unknown spec
    version is an error. Errors are collected lazily and only the first
    ``limit`` are kept: a hostile document can hold millions.
    """
    try:
        schema = SchemaVersion.from_version(spec_version)
    except (ValueError, TypeError):
        return [f"unknown CycloneDX spec version {spec_version!r}"]
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        return [f"not JSON ({type(e).__name__})"]
    return [_schema_error(e) for e in itertools.islice(_validator(schema).iter_errors(document), limit)]


_VALIDATORS: dict[SchemaVersion, Any] = {}
_VALIDATORS_LOCK = threading.Lock()
_WARMING: threading.Thread | None = None
_WARMING_LOCK = threading.Lock()


def warm_validator(schema: SchemaVersion = SPEC_VERSION) -> threading.Thread:
    """Start compiling the validator of ``schema`` in a daemon thread, once per process; return that thread.

    Idempotent and thread-safe: the first call starts the thread, every later
    call returns the same one (whatever its ``schema``; the release's own
    version is the one worth warming). Compiling is pure Python, so it runs
    best while the caller waits on subprocesses or I/O: the pipeline calls it
    early and the audit's SBOM check then finds the validator ready
    (:func:`validate_sbom` waits on the same lock, never compiles twice). A
    failure in the thread is not raised there: the first validation compiles
    again and raises it. The project starts processes with ``subprocess``
    only; a bare ``fork`` while the thread holds the lock would leave the
    child waiting on it.
    """
    global _WARMING
    with _WARMING_LOCK:
        if _WARMING is None:

            def compile_quietly() -> None:
                with contextlib.suppress(Exception):  # raised again by the validation that needs it
                    _validator(schema)

            _WARMING = threading.Thread(target=compile_quietly, name="sbom-validator-warm-up", daemon=True)
            _WARMING.start()
        return _WARMING


def _validator(schema: SchemaVersion) -> Any:
    """One compiled validator per schema version, shared by every thread (compiling takes about 0.1 s).

    CycloneDX's own Draft 7 validator (its schema and the schemas it refers
    to), with one change: IRIs are checked by a bounded, linear test instead
    of jsonschema's general-purpose IRI parser, which takes about a
    millisecond and 21 KiB per character (a 30000-character URL: 26 s and
    675 MiB).
    """
    with _VALIDATORS_LOCK:
        if schema not in _VALIDATORS:
            with _lazy_iri_grammar():
                # Imported here: loading the validator builds format checkers, which only validation needs.
                from cyclonedx.validation.json import JsonStrictValidator
                from jsonschema import FormatChecker  # type: ignore[import-untyped]  # cyclonedx's dependency

            base = JsonStrictValidator(schema)._validator  # the compiled Draft 7 validator
            checker = FormatChecker(formats=())
            checker.checkers.update((f, c) for f, c in base.format_checker.checkers.items() if f not in _IRI_FORMATS)
            checker.checks("iri")(lambda value: _iri_text(value, absolute=True))
            checker.checks("iri-reference")(lambda value: _iri_text(value, absolute=False))
            _VALIDATORS[schema] = base.evolve(format_checker=checker)
        return _VALIDATORS[schema]


_IRI_GRAMMAR = "rfc3987_syntax"


@contextlib.contextmanager
def _lazy_iri_grammar() -> Iterator[None]:
    """While jsonschema is first imported, let it find a stand-in for its IRI grammar, loaded on first use.

    Importing ``rfc3987_syntax`` compiles 38 grammars (about 1 s, 90 % of the
    validator's cost) for jsonschema's ``iri`` and ``iri-reference`` format
    checkers, which :func:`_validator` replaces with its own anyway. The
    stand-in's ``is_valid_syntax`` imports the real module and calls it, so
    anyone else in the process who validates IRIs with jsonschema's own
    checkers gets exactly its answers; the stand-in leaves ``sys.modules``
    once the import is done, and nothing changes when jsonschema was already
    imported or the grammar is not installed.
    """
    if "jsonschema" in sys.modules or _IRI_GRAMMAR in sys.modules or importlib.util.find_spec(_IRI_GRAMMAR) is None:
        yield
        return
    stand_in = types.ModuleType(_IRI_GRAMMAR)

    def is_valid_syntax(term: str, value: str) -> bool:
        real = importlib.import_module(_IRI_GRAMMAR)
        return bool(real.is_valid_syntax(term, value))

    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    sys.modules[_IRI_GRAMMAR] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(_IRI_GRAMMAR) is stand_in:
            del sys.modules[_IRI_GRAMMAR]


_IRI_FORMATS = frozenset({"iri", "iri-reference"})
_IRI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
MAX_IRI_CHARS = 8192


def _iri_text(value: object, *, absolute: bool) -> bool:
    """A bounded IRI test: at most :data:`MAX_IRI_CHARS` printable characters, no space, a scheme if absolute."""
    if not isinstance(value, str):
        return True
    if len(value) > MAX_IRI_CHARS or any(c.isspace() or not c.isprintable() for c in value):
        return False
    return not absolute or _IRI_SCHEME.match(value) is not None


def _schema_error(data: Any, limit: int = 300) -> str:
    """``<json path>: <message>`` for a jsonschema error, at most ``limit`` characters (it quotes the value)."""
    message = getattr(data, "message", None)
    text = str(data) if message is None else f"{getattr(data, 'json_path', '$')}: {message}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SbomCrate:
    name: str
    version: str
    licenses: str


@dataclass(frozen=True)
class SbomView:
    """What an audit needs from an SBOM: its subject, its files and its crates."""

    spec_version: str
    serial_number: str
    timestamp: str
    subject_name: str
    subject_version: str
    subject_sha256: str | None
    subject_archive: str | None
    files: Mapping[str, str]
    crates: tuple[SbomCrate, ...]
    toolchain: str | None
    components: int
    # The source files each binary was compiled from: member name -> ((repository path, SHA-256), ...).
    binary_inputs: Mapping[str, SourceInputs] = field(default_factory=lambda: MappingProxyType({}))


def _licenses_text(component: Mapping[str, Any]) -> str:
    out = []
    for entry in component.get("licenses") or []:
        if "expression" in entry:
            out.append(str(entry["expression"]))
        elif isinstance(entry.get("license"), dict):
            lic = entry["license"]
            out.append(str(lic.get("id") or lic.get("name") or "?"))
    return " AND ".join(out) if out else "(none declared)"


def _sha256_of(component: Mapping[str, Any]) -> str | None:
    for h in component.get("hashes") or []:
        if isinstance(h, dict) and h.get("alg") == SHA_256_NAME:
            return str(h.get("content"))
    return None


def _property(component: Mapping[str, Any], name: str) -> str | None:
    for p in component.get("properties") or []:
        if isinstance(p, dict) and p.get("name") == name:
            return str(p.get("value"))
    return None


def _nested_sources(component: Mapping[str, Any], path: str, where: str) -> SourceInputs:
    """The source files nested in a binary's component (see the module doc), sorted by path."""
    nested = component.get("components") or []
    if not isinstance(nested, list):
        raise VerificationError(f"{where}: the components nested in {path} are not a list")
    out: dict[str, str] = {}
    for n in nested:
        source = _property(n, SOURCE_PROPERTY) if isinstance(n, dict) else None
        if source is not None:
            _describe_once(out, source, n, f"{where}: the source {source} of {path}")
    return tuple(sorted(out.items()))


def _describe_once(described: dict[str, str], path: str, component: Mapping[str, Any], what: str) -> None:
    """Record ``component``'s SHA-256 for ``path``; refuse a component with none, or a path seen before."""
    sha = _sha256_of(component)
    if sha is None:
        raise VerificationError(f"{what} has no SHA-256")
    if path in described:
        raise VerificationError(f"{what} is described twice")
    described[path] = sha


def read_sbom(data: Mapping[str, Any], where: str) -> SbomView:
    """Read an SBOM written by :func:`write_sbom` (already parsed from JSON).

    Raises :class:`VerificationError` naming ``where`` when it is not a
    CycloneDX document with a subject, or a file component lacks its path or
    SHA-256, or a path is described twice.
    """
    if data.get("bomFormat") != "CycloneDX":
        raise VerificationError(f"{where}: not a CycloneDX document")
    meta = data.get("metadata")
    subject = meta.get("component") if isinstance(meta, dict) else None
    if not isinstance(subject, dict):
        raise VerificationError(f"{where}: no metadata.component (the archive it describes)")
    files: dict[str, str] = {}
    inputs: dict[str, SourceInputs] = {}
    crates: list[SbomCrate] = []
    toolchain = None
    components = data.get("components") or []
    if not isinstance(components, list):
        raise VerificationError(f"{where}: components is not a list")
    for c in components:
        if not isinstance(c, dict):
            raise VerificationError(f"{where}: a component is not an object")
        path = _property(c, PATH_PROPERTY)
        if path is not None:
            _describe_once(files, path, c, f"{where}: {path}")
            nested = _nested_sources(c, path, where)
            if nested:
                inputs[path] = nested
        elif c.get("type") == "library" and c.get("name") == RUST_STD:
            toolchain = str(c.get("version"))
        elif c.get("type") == "library":
            crates.append(SbomCrate(str(c.get("name")), str(c.get("version")), _licenses_text(c)))
    return SbomView(
        spec_version=str(data.get("specVersion")),
        serial_number=str(data.get("serialNumber")),
        timestamp=str(meta.get("timestamp")) if isinstance(meta, dict) else "",
        subject_name=str(subject.get("name")),
        subject_version=str(subject.get("version")),
        subject_sha256=_sha256_of(subject),
        subject_archive=_property(subject, ARCHIVE_PROPERTY),
        files=MappingProxyType(dict(sorted(files.items()))),
        crates=tuple(sorted(crates, key=lambda c: (c.name, c.version))),
        toolchain=toolchain,
        components=len(components),
        binary_inputs=MappingProxyType(dict(sorted(inputs.items()))),
    )
