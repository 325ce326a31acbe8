"""The product declaration: what each release bundle contains.

It lives once, in ``[workspace.metadata.release]`` of the root ``Cargo.toml``;
:func:`load_workspace` parses and validates it at the edge, and everything else
(packagers, gates, layout, tests) trusts the frozen objects it returns.

Standard library only: the gates run before the Python environment matters.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from release.errors import BadInputError

ARCHIVE_FORMATS = ("tar.gz", "zip")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_ID = re.compile(r"^[a-z][a-z0-9-]*$")
_BIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
WINDOWS_TARGET_MARKER = "windows"


@dataclass(frozen=True)
class Bundle:
    """One release bundle (one archive)."""

    id: str
    name: str
    format: str
    target: str
    binaries: tuple[str, ...]
    assets: tuple[str, ...]
    forbidden_paths: tuple[str, ...]
    forbidden_binaries: tuple[str, ...]

    @property
    def step(self) -> str:
        """The pipeline (and in-toto) step that packages this bundle."""
        return f"package-{self.id}"

    @property
    def is_windows(self) -> bool:
        return WINDOWS_TARGET_MARKER in self.target

    def stem(self, version: str) -> str:
        """The archive's top-level directory, e.g. ``ransomeye-core-1.0.0``."""
        return f"{self.name}-{version}"

    def archive_name(self, version: str) -> str:
        """The archive's file name, e.g. ``ransomeye-core-1.0.0.tar.gz``."""
        return f"{self.stem(version)}.{self.format}"

    def binary_file(self, binary: str) -> str:
        """The file name of ``binary`` for this bundle's target."""
        return f"{binary}.exe" if self.is_windows else binary

    def binary_files(self) -> tuple[str, ...]:
        return tuple(self.binary_file(b) for b in self.binaries)

    def forbidden_path(self, relpath: str) -> str | None:
        """Return the forbidden prefix ``relpath`` falls under, or None.

        ``relpath`` is a repository- or archive-relative POSIX path; a
        forbidden entry ``edge`` matches any path with a component ``edge``.
        """
        parts = PurePosixPath(relpath).parts
        for forbidden in self.forbidden_paths:
            fparts = PurePosixPath(forbidden).parts
            n = len(fparts)
            for i in range(len(parts) - n + 1):
                if parts[i : i + n] == fparts:
                    return forbidden
        return None

    def forbidden_binary(self, filename: str) -> str | None:
        """Return the forbidden binary ``filename`` is (with or without .exe), or None."""
        base = filename[:-4] if filename.lower().endswith(".exe") else filename
        return base if base in self.forbidden_binaries else None


@dataclass(frozen=True)
class ToolchainHint:
    """What a target needs, for the error message when it is missing."""

    target: str
    debian_packages: tuple[str, ...]
    linker: str


@dataclass(frozen=True)
class Workspace:
    """The Rust workspace and its product declaration."""

    root: Path
    version: str
    members: tuple[str, ...]
    artifacts_dir: str
    sources: tuple[str, ...]
    bundles: tuple[Bundle, ...]
    toolchains: tuple[ToolchainHint, ...]
    # Crate directories allowed a build script (``build-scripts``): a build
    # script runs arbitrary code and can read any file, so no other crate may have one.
    build_scripts: tuple[str, ...] = ()

    @property
    def manifest(self) -> Path:
        return self.root / "Cargo.toml"

    def bundle(self, bundle_id: str) -> Bundle:
        for b in self.bundles:
            if b.id == bundle_id:
                return b
        raise BadInputError(
            f"{self.manifest}: no bundle with id {bundle_id!r} in [workspace.metadata.release]",
            hint="known bundles: " + ", ".join(b.id for b in self.bundles),
        )

    def allows_build_script(self, crate_dir: str) -> bool:
        """Whether the crate in repository-relative ``crate_dir`` may have a build script."""
        return crate_dir in self.build_scripts

    def targets(self) -> tuple[str, ...]:
        """Every target some bundle needs, in declaration order."""
        seen: dict[str, None] = {}
        for b in self.bundles:
            seen.setdefault(b.target, None)
        return tuple(seen)

    def toolchain_hint(self, target: str) -> ToolchainHint:
        for t in self.toolchains:
            if t.target == target:
                return t
        return ToolchainHint(target=target, debian_packages=(), linker="cc")


def _field(table: dict[str, Any], key: str, kind: type, where: str, path: Path) -> Any:
    if key not in table:
        raise BadInputError(f"{path}: {where}.{key} is missing", hint=f"add `{key} = ...` to {where}")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadInputError(f"{path}: {where}.{key} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _str_list(
    table: dict[str, Any], key: str, where: str, path: Path, pattern: re.Pattern[str] | None = None
) -> tuple[str, ...]:
    values = _field(table, key, list, where, path)
    out: list[str] = []
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise BadInputError(f"{path}: {where}.{key}[{i}] must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(v):
            raise BadInputError(f"{path}: {where}.{key}[{i}] = {v!r} is not a valid name")
        out.append(v)
    if len(set(out)) != len(out):
        raise BadInputError(f"{path}: {where}.{key} lists a name twice")
    return tuple(out)


def _relpath_list(table: dict[str, Any], key: str, where: str, path: Path) -> tuple[str, ...]:
    values = _str_list(table, key, where, path)
    for i, v in enumerate(values):
        p = PurePosixPath(v)
        if p.is_absolute() or ".." in p.parts or "\\" in v or str(p) != v.rstrip("/") or str(p) == ".":
            raise BadInputError(
                f"{path}: {where}.{key}[{i}] = {v!r} must be a plain relative path inside the repository"
            )
    stripped = tuple(v.rstrip("/") for v in values)
    if len(set(stripped)) != len(stripped):
        raise BadInputError(f"{path}: {where}.{key} lists a name twice")
    return stripped


def parse_bundle(table: Any, where: str, path: Path) -> Bundle:
    """Parse one ``[[workspace.metadata.release.bundles]]`` table."""
    if not isinstance(table, dict):
        raise BadInputError(f"{path}: {where} must be a table")
    bundle_id = _field(table, "id", str, where, path)
    if not _ID.fullmatch(bundle_id):
        raise BadInputError(f"{path}: {where}.id = {bundle_id!r} must be lowercase letters, digits and '-'")
    name = _field(table, "name", str, where, path)
    if not _ID.fullmatch(name):
        raise BadInputError(f"{path}: {where}.name = {name!r} must be lowercase letters, digits and '-'")
    fmt = _field(table, "format", str, where, path)
    if fmt not in ARCHIVE_FORMATS:
        raise BadInputError(
            f"{path}: {where}.format = {fmt!r} is not supported", hint="use one of: " + ", ".join(ARCHIVE_FORMATS)
        )
    target = _field(table, "target", str, where, path)
    if not re.fullmatch(r"[a-z0-9_]+(-[a-z0-9_]+){2,3}", target):
        raise BadInputError(f"{path}: {where}.target = {target!r} is not a target triple")
    binaries = _str_list(table, "binaries", where, path, _BIN)
    if not binaries:
        raise BadInputError(f"{path}: {where}.binaries is empty", hint="a bundle ships at least one binary")
    bundle = Bundle(
        id=bundle_id,
        name=name,
        format=fmt,
        target=target,
        binaries=binaries,
        assets=_relpath_list(table, "assets", where, path),
        forbidden_paths=_relpath_list(table, "forbidden-paths", where, path),
        forbidden_binaries=_str_list(table, "forbidden-binaries", where, path, _BIN),
    )
    clash = set(bundle.binaries) & set(bundle.forbidden_binaries)
    if clash:
        raise BadInputError(f"{path}: {where} (bundle {bundle.id!r}) both ships and forbids {', '.join(sorted(clash))}")
    for asset in bundle.assets:
        hit = bundle.forbidden_path(asset)
        if hit is not None:
            raise BadInputError(f"{path}: {where}.assets includes {asset!r}, under forbidden path {hit!r}")
    return bundle


def parse_workspace(data: dict[str, Any], root: Path) -> Workspace:
    """Validate a parsed root ``Cargo.toml``; raise :class:`BadInputError` naming the field."""
    path = root / "Cargo.toml"
    ws = data.get("workspace")
    if not isinstance(ws, dict):
        raise BadInputError(f"{path}: [workspace] is missing", hint="the root Cargo.toml must declare the workspace")
    pkg = ws.get("package")
    if not isinstance(pkg, dict):
        raise BadInputError(f"{path}: [workspace.package] is missing", hint='declare version = "X.Y.Z" there')
    version = _field(pkg, "version", str, "[workspace.package]", path)
    if not SEMVER.fullmatch(version):
        raise BadInputError(f"{path}: [workspace.package].version = {version!r} is not a valid semver version")
    members = _relpath_list(ws, "members", "[workspace]", path)
    meta = ws.get("metadata", {}).get("release") if isinstance(ws.get("metadata"), dict) else None
    where = "[workspace.metadata.release]"
    if not isinstance(meta, dict):
        raise BadInputError(f"{path}: {where} is missing", hint="declare the release bundles there")
    artifacts_dir = _field(meta, "artifacts-dir", str, where, path)
    sources = _relpath_list(meta, "sources", where, path)
    if not sources:
        raise BadInputError(f"{path}: {where}.sources is empty", hint="list the source files and directories")
    raw_bundles = _field(meta, "bundles", list, where, path)
    if not raw_bundles:
        raise BadInputError(f"{path}: {where}.bundles is empty", hint="declare at least one bundle")
    bundles = tuple(parse_bundle(t, f"{where}.bundles[{i}]", path) for i, t in enumerate(raw_bundles))
    for attr in ("id", "name"):
        values = [getattr(b, attr) for b in bundles]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise BadInputError(f"{path}: two bundles share the same {attr}: {', '.join(twice)}")
    build_scripts = _relpath_list(meta, "build-scripts", where, path) if "build-scripts" in meta else ()
    raw_tc = meta.get("toolchains", {})
    if not isinstance(raw_tc, dict):
        raise BadInputError(f"{path}: {where}.toolchains must be a table")
    toolchains = []
    for target, t in sorted(raw_tc.items()):
        w = f"{where}.toolchains.{target}"
        if not isinstance(t, dict):
            raise BadInputError(f"{path}: {w} must be a table")
        toolchains.append(
            ToolchainHint(
                target=target,
                debian_packages=_str_list(t, "debian-packages", w, path),
                linker=_field(t, "linker", str, w, path),
            )
        )
    return Workspace(
        root=root,
        version=version,
        members=members,
        artifacts_dir=artifacts_dir,
        sources=sources,
        bundles=bundles,
        toolchains=tuple(toolchains),
        build_scripts=build_scripts,
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`BadInputError`."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: file not found") from e
    except tomllib.TOMLDecodeError as e:
        raise BadInputError(f"{path}: not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot be read: {e}") from e


def load_workspace(root: Path) -> Workspace:
    """Load and validate the workspace declaration from ``root/Cargo.toml``."""
    root = root.resolve()
    return parse_workspace(read_toml(root / "Cargo.toml"), root)


def repo_root() -> Path:
    """The repository this code lives in (two levels above this file)."""
    return Path(__file__).resolve().parent.parent
