"""The workspace's crates as the gates read them from their ``Cargo.toml`` files.

Only what the gates need is parsed, and strictly: the package name and
version, every dependency in every dependency table (normal, dev, build, and
their ``[target.'cfg(...)'.*]`` forms, including the legacy ``dev_dependencies``
spelling), the binaries the crate builds (``[[bin]]`` tables plus cargo's
automatic discovery of ``src/main.rs`` and ``src/bin/``), and its build scripts
(``package.build``, or cargo's automatic ``build.rs``). A field of the wrong
type is a :class:`release.errors.BadInputError` naming the manifest and field.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.gates.policy import read_toml_file, show
from release.errors import BadInputError

MANIFEST = "Cargo.toml"
DEPENDENCY_TABLES = ("dependencies", "dev-dependencies", "dev_dependencies", "build-dependencies", "build_dependencies")


@dataclass(frozen=True)
class Dependency:
    """One entry of a dependency table.

    ``where`` names the table and key (``dev-dependencies.agent``); ``package``
    is the crate it names (its ``package =`` or its key); ``path`` is the
    repository-relative directory of a path dependency, None for other
    dependencies and for paths that leave the repository (``outside``).
    """

    where: str
    package: str
    path: str | None
    outside: bool = False


@dataclass(frozen=True)
class WorkspaceDependency:
    """An entry of the root ``[workspace.dependencies]`` (what ``foo.workspace = true`` refers to)."""

    package: str | None
    path: str | None
    outside: bool


@dataclass(frozen=True)
class Crate:
    """One crate: where it is, what it is called, its version declaration, dependencies and binaries.

    ``version`` is the explicit ``package.version`` (None when absent or
    inherited); ``inherits_version`` is ``version.workspace = true``.
    """

    path: str
    name: str
    version: str | None
    inherits_version: bool
    dependencies: tuple[Dependency, ...]
    binaries: tuple[str, ...]
    build_scripts: tuple[str, ...] = ()  # repository-relative paths of the scripts cargo would run

    @property
    def manifest(self) -> str:
        return f"{self.path}/{MANIFEST}" if self.path != "." else MANIFEST


def _resolve(root: Path, base: Path, path: str) -> tuple[str | None, bool]:
    """Repository-relative form of ``path`` (relative to ``base``), following symlinks; or (None, True) outside."""
    full = Path(os.path.normpath(base / path))
    with contextlib.suppress(OSError, RuntimeError):  # unresolvable: judge the path as written
        full = full.resolve()
    try:
        rel = full.relative_to(root)
    except ValueError:
        return None, True
    return rel.as_posix() or ".", False


def _table(value: object, manifest: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInputError(f"{manifest}: {where} must be a table, not {show(value)}")
    return value


def _string(table: dict[str, Any], key: str, manifest: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise BadInputError(f"{manifest}: {where}.{key} = {show(value)} must be a string")
    return value


def read_workspace_dependencies(root: Path) -> dict[str, WorkspaceDependency]:
    """Parse ``[workspace.dependencies]`` of ``root/Cargo.toml`` (empty when there is none)."""
    data = read_toml_file(root / MANIFEST, MANIFEST)
    ws = data.get("workspace", {})
    deps = _table(ws, MANIFEST, "[workspace]").get("dependencies", {})
    out: dict[str, WorkspaceDependency] = {}
    for key, spec in _table(deps, MANIFEST, "workspace.dependencies").items():
        where = f"workspace.dependencies.{key}"
        if isinstance(spec, str):
            out[key] = WorkspaceDependency(None, None, False)
            continue
        spec = _table(spec, MANIFEST, where)
        raw_path = _string(spec, "path", MANIFEST, where)
        path, outside = _resolve(root, root, raw_path) if raw_path is not None else (None, False)
        out[key] = WorkspaceDependency(_string(spec, "package", MANIFEST, where), path, outside)
    return out


def _dependency(
    root: Path,
    crate_dir: Path,
    manifest: str,
    where: str,
    key: str,
    spec: object,
    workspace_deps: dict[str, WorkspaceDependency],
) -> Dependency:
    if isinstance(spec, str):
        return Dependency(where, key, None)
    table = _table(spec, manifest, where)
    inherited = table.get("workspace", False)
    if not isinstance(inherited, bool):
        raise BadInputError(f"{manifest}: {where}.workspace = {show(inherited)} must be true")
    if inherited:
        ws_dep = workspace_deps.get(key)
        if ws_dep is None:
            raise BadInputError(
                f"{manifest}: {where} has workspace = true but [workspace.dependencies] has no {key!r}",
                hint=f"declare {key} in the root Cargo.toml's [workspace.dependencies]",
            )
        return Dependency(where, ws_dep.package or key, ws_dep.path, ws_dep.outside)
    package = _string(table, "package", manifest, where) or key
    raw_path = _string(table, "path", manifest, where)
    if raw_path is None:
        return Dependency(where, package, None)
    path, outside = _resolve(root, crate_dir, raw_path)
    return Dependency(where, package, path, outside)


def _dependencies(
    root: Path, crate_dir: Path, manifest: str, data: dict[str, Any], workspace_deps: dict[str, WorkspaceDependency]
) -> list[Dependency]:
    scopes: list[tuple[str, dict[str, Any]]] = [("", data)]
    for cfg, target_table in _table(data.get("target", {}), manifest, "target").items():
        scopes.append((f"target.{show(cfg)}.", _table(target_table, manifest, f"target.{show(cfg)}")))
    out: list[Dependency] = []
    for prefix, scope in scopes:
        for name in DEPENDENCY_TABLES:
            if name not in scope:
                continue
            table = _table(scope[name], manifest, f"{prefix}{name}")
            for key, spec in table.items():
                out.append(_dependency(root, crate_dir, manifest, f"{prefix}{name}.{key}", key, spec, workspace_deps))
    return out


def _binaries(crate_dir: Path, manifest: str, package: dict[str, Any], data: dict[str, Any], name: str) -> list[str]:
    explicit = data.get("bin", [])
    if not isinstance(explicit, list):
        raise BadInputError(f"{manifest}: [[bin]] must be an array of tables")
    names: list[str] = []
    for i, entry in enumerate(explicit):
        where = f"bin[{i}]"
        bin_name = _string(_table(entry, manifest, where), "name", manifest, where)
        if not bin_name:
            raise BadInputError(f"{manifest}: {where}.name is missing")
        names.append(bin_name)
    autobins = package.get("autobins", True)
    if not isinstance(autobins, bool):
        raise BadInputError(f"{manifest}: package.autobins = {show(autobins)} must be a boolean")
    if autobins:
        src = crate_dir / "src"
        if (src / "main.rs").is_file():
            names.append(name)
        bin_dir = src / "bin"
        if bin_dir.is_dir():
            for entry in sorted(bin_dir.iterdir()):
                if entry.is_file() and entry.suffix == ".rs":
                    names.append(entry.stem)
                elif entry.is_dir() and (entry / "main.rs").is_file():
                    names.append(entry.name)
    return sorted(set(names))


def _build_scripts(root: Path, crate_dir: Path, manifest: str, package: dict[str, Any]) -> list[str]:
    """The build scripts cargo would run for this package: ``package.build`` or an automatic ``build.rs``."""
    build = package.get("build")
    if build is None or build is True:
        scripts = ["build.rs"] if (crate_dir / "build.rs").exists() or build is True else []
    elif build is False:
        scripts = []
    elif isinstance(build, str):
        scripts = [build]
    elif isinstance(build, list) and all(isinstance(b, str) for b in build):
        scripts = list(build)
    else:
        raise BadInputError(f"{manifest}: package.build = {show(build)} must be a path, a list of paths or a boolean")
    out = []
    for script in scripts:
        rel, outside = _resolve(root, crate_dir, script)
        out.append(rel if rel is not None and not outside else os.path.normpath(crate_dir / script))
    return sorted(out)


def load_crate(root: Path, path: str, workspace_deps: dict[str, WorkspaceDependency]) -> Crate:
    """Read the crate in repository-relative directory ``path`` of the repository at ``root``."""
    crate_dir = root / path
    manifest = f"{path}/{MANIFEST}" if path != "." else MANIFEST
    data = read_toml_file(crate_dir / MANIFEST, manifest)
    if "package" not in data:
        raise BadInputError(f"{manifest}: [package] is missing", hint="every workspace member is a package")
    package = _table(data["package"], manifest, "[package]")
    name = _string(package, "name", manifest, "package")
    if not name:
        raise BadInputError(f"{manifest}: package.name is missing")
    raw_version = package.get("version")
    version: str | None = None
    inherits = False
    if isinstance(raw_version, str):
        version = raw_version
    elif isinstance(raw_version, dict):
        if raw_version != {"workspace": True}:
            raise BadInputError(
                f"{manifest}: package.version = {show(raw_version)} must be a version string or {{ workspace = true }}"
            )
        inherits = True
    elif raw_version is not None:
        raise BadInputError(f"{manifest}: package.version = {show(raw_version)} must be a string")
    return Crate(
        path=path,
        name=name,
        version=version,
        inherits_version=inherits,
        dependencies=tuple(_dependencies(root, crate_dir, manifest, data, workspace_deps)),
        binaries=tuple(_binaries(crate_dir, manifest, package, data, name)),
        build_scripts=tuple(_build_scripts(root, crate_dir, manifest, package)),
    )


def load_members(
    root: Path, members: tuple[str, ...], workspace_deps: dict[str, WorkspaceDependency]
) -> tuple[Crate, ...]:
    """Read every workspace member listed in ``members`` (glob entries expanded), in that order."""
    paths: list[str] = []
    for member in members:
        if any(c in member for c in "*?["):
            paths += sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"{member}/{MANIFEST}"))
        else:
            paths.append(member)
    return tuple(load_crate(root, p, workspace_deps) for p in dict.fromkeys(paths))
