"""What each binary was compiled from, as the compiler recorded it, judged against the declaration.

For every binary the build step takes, cargo writes a dep-info file beside
it (``<target-dir>/<triple>/release/<name>.d``) gathering rustc's own
dep-info of the binary's crate and of every path crate it is built with,
the sources of their build scripts and the paths those build scripts named
with ``cargo:rerun-if-changed``. Whatever spelling brought a file in —
``mod``, a ``#[path]`` module, ``include!``/``include_str!``/``include_bytes!``
with a relative path or a ``concat!(env!(...))`` one, a symlinked module —
the compiler lists the file it read. Each listed path is resolved (symlinks
followed) and judged:

1. it may not lie under a path that a bundle shipping the binary forbids
   (``edge/`` for the core), neither as written nor once resolved;
2. it must lie in the directory of a crate the binary is built from (its
   own crate and the path crates it reaches by normal or build
   dependencies) and be a file of the gated source, so that it is a
   material of the build link with its SHA-256 — or, for a crate allowed a
   build script, a file that build script generated in its ``OUT_DIR``;
3. it may have no second name (a hard link);
4. for a bundle with forbidden paths, it may neither equal nor contain a
   file of those paths (an edge source copied under another name, or
   written out by a build script); files shorter than
   :data:`release.content.MIN_CONTAINED` bytes are not compared, since any
   two may coincide.

Build scripts run arbitrary code and can read anything, so before cargo runs,
:func:`check_build_scripts` refuses a build script in any crate the
declaration (``build-scripts``) does not list.

A violation is a :class:`PackagingError` (exit 6) naming the binary, the file
and the route that brought it in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.cargo import dep_info_file, parse_dep_info
from release.content import MIN_CONTAINED, ForbiddenContent, Needle
from release.errors import PackagingError, ToolchainError
from release.products import Bundle, Workspace
from release.sbom import CargoMetadata, LocalCrate
from release.source import source_files

MAX_ROUTE_SOURCE_BYTES = 1 << 20
_ROUTE_TOKENS = (
    ("include_bytes!", "include_bytes!"),
    ("include_str!", "include_str!"),
    ("include!", "include!"),
    ("#[path", "a #[path] module attribute"),
    ("rerun-if-changed", "a build script's cargo:rerun-if-changed"),
    ("rustc-env", "a build script's cargo:rustc-env"),
)
_OUT_DIR = re.compile(r"^(?P<package>.+)-[0-9a-f]{16}$")


@dataclass(frozen=True)
class BinaryInputs:
    """The files one binary was compiled from.

    ``product`` is the build step's name for it, ``bin/<target>/<file>``;
    ``sources`` are repository-relative files of the gated source, sorted;
    ``generated`` are files a permitted build script wrote, as
    ``<package>:OUT_DIR/<path>``, sorted.
    """

    product: str
    sources: tuple[str, ...]
    generated: tuple[str, ...]


def check_build_scripts(ws: Workspace, metadata: CargoMetadata) -> None:
    """Refuse a build script in any crate built from a directory that ``build-scripts`` does not list.

    Raises :class:`PackagingError` naming the script. Reads nothing.
    """
    for crate in metadata.local.values():
        for script in crate.build_scripts:
            if crate.directory is None or not ws.allows_build_script(crate.directory):
                where = crate.directory or "a crate outside the repository"
                raise PackagingError(
                    f"{script}: the build script of {crate.key} ({where}), which [workspace.metadata.release]"
                    ".build-scripts does not allow (route: undeclared build script)",
                    hint="a build script runs arbitrary code and can read any file: remove it, or have the owner "
                    f'declare build-scripts = ["{where}"] in Cargo.toml',
                )


def forbidden_sources(ws: Workspace, bundle: Bundle) -> ForbiddenContent:
    """The files under ``bundle``'s forbidden paths, to compare compiler inputs with (tiny files left out)."""
    tops = tuple(p for p in bundle.forbidden_paths if (ws.root / p).exists())
    needles = [
        Needle(f"the {bundle.forbidden_path(rel)}/ file {rel}", path, path.stat().st_size)
        for rel, path in source_files(ws, tops).items()
    ]
    return ForbiddenContent(needles, min_equal=MIN_CONTAINED)


@dataclass(frozen=True)
class _Context:
    ws: Workspace
    product: str
    binary: str
    bundles: tuple[Bundle, ...]
    crates: tuple[LocalCrate, ...]
    target_dir: Path
    target: str


def binary_inputs(
    ws: Workspace,
    metadata: CargoMetadata,
    target: str,
    filename: str,
    built: Path,
    target_dir: Path,
    materials: Mapping[str, str],
    forbidden: Mapping[str, ForbiddenContent],
) -> BinaryInputs:
    """Read and judge the dep-info of the binary ``filename`` that cargo built for ``target`` into ``built``.

    ``materials`` are the gated source's hashes (the build link's materials);
    ``forbidden`` maps a bundle id to :func:`forbidden_sources` of it.
    Returns the binary's inputs. Raises :class:`PackagingError` for any input
    the module doc refuses, :class:`ToolchainError` when cargo left no
    dep-info.
    """
    binary = filename[: -len(".exe")] if filename.endswith(".exe") else filename
    bundles = tuple(b for b in ws.bundles if b.target == target and binary in b.binaries)
    ctx = _Context(
        ws=ws,
        product=f"bin/{target}/{filename}",
        binary=binary,
        bundles=bundles,
        crates=metadata.local_closure(binary),
        target_dir=Path(os.path.realpath(target_dir)),
        target=target,
    )
    dep_info = dep_info_file(built, filename)
    try:
        text = dep_info.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ToolchainError(
            f"{dep_info}: cargo's dep-info of {filename} cannot be read ({e})",
            hint="the build step proves each binary's sources from it; run the build again",
        ) from e
    listed = parse_dep_info(text, str(dep_info))
    if not listed:
        raise ToolchainError(f"{dep_info}: lists no source file for {filename}")
    root = Path(os.path.realpath(ws.root))
    written = [Path(os.path.normpath(root / p)) for p in listed]  # as the compiler named them
    sources: set[str] = set()
    generated: set[str] = set()
    for path in written:
        real = Path(os.path.realpath(path))
        found = _judge(ctx, root, path, real, written, materials)
        if found is None:
            continue
        kind, name = found
        (sources if kind == "source" else generated).add(name)
        for bundle in bundles:
            index = forbidden.get(bundle.id)
            hit = index.search(real) if index else None
            if hit is not None:
                raise _refuse(
                    ctx,
                    name,
                    f"it {hit.describe()}, which the {bundle.id} bundle must never contain",
                    _route(ctx, root, path, real, written),
                )
    return BinaryInputs(ctx.product, tuple(sorted(sources)), tuple(sorted(generated)))


def _judge(
    ctx: _Context, root: Path, path: Path, real: Path, written: Sequence[Path], materials: Mapping[str, str]
) -> tuple[str, str] | None:
    """``("source", rel)`` or ``("generated", name)`` for an input that may be read; None for one not on disk."""
    for shown in (path, real):
        if shown.is_relative_to(root):
            rel = shown.relative_to(root).as_posix()
            for bundle in ctx.bundles:
                hit = bundle.forbidden_path(rel)
                if hit is not None:
                    raise _refuse(
                        ctx,
                        real.relative_to(root).as_posix() if real.is_relative_to(root) else str(real),
                        f"it is {hit}/ material, which the {bundle.id} bundle must never contain",
                        _route(ctx, root, path, real, written),
                    )
    if real.is_relative_to(ctx.target_dir):
        return _generated(ctx, root, path, real, written)
    if not real.is_relative_to(root):
        raise _refuse(ctx, str(real), "it lies outside the repository", _route(ctx, root, path, real, written))
    rel = real.relative_to(root).as_posix()
    dirs = [c.directory for c in ctx.crates if c.directory is not None]
    if not any(d == "." or rel == d or rel.startswith(d + "/") for d in dirs):
        raise _refuse(
            ctx,
            rel,
            f"it lies outside the crates the binary is built from ({', '.join(sorted(dirs)) or 'none'})",
            _route(ctx, root, path, real, written),
        )
    try:
        st = real.stat()
    except FileNotFoundError:
        return None  # a rerun-if-changed path that does not exist: nothing was read
    if not real.is_file():
        return None  # a directory named by rerun-if-changed: its files are judged where they are read
    if st.st_nlink > 1:
        raise _refuse(ctx, rel, f"it has {st.st_nlink} names (a hard link)", "hard link")
    if rel not in materials:
        route = _route(ctx, root, path, real, written)
        raise _refuse(ctx, rel, "it is not a file of the gated source (not hashed as a material)", route)
    return "source", rel


def _generated(ctx: _Context, root: Path, path: Path, real: Path, written: Sequence[Path]) -> tuple[str, str]:
    """An input under cargo's target directory: only a permitted build script's ``OUT_DIR`` output may be read."""
    parts = real.relative_to(ctx.target_dir).parts
    # <target-dir>/<triple>/release/build/<package>-<hash>/out/<file>
    if len(parts) >= 6 and parts[0] == ctx.target and parts[1:3] == ("release", "build") and parts[4] == "out":
        m = _OUT_DIR.match(parts[3])
        package = m.group("package") if m else None
        for crate in ctx.crates:
            named = crate.key.rsplit("@", 1)[0] == package
            allowed = crate.directory is not None and ctx.ws.allows_build_script(crate.directory)
            if named and crate.build_scripts and allowed:
                return "generated", f"{package}:OUT_DIR/{'/'.join(parts[5:])}"
    raise _refuse(
        ctx,
        str(real),
        "it is a build product that no permitted build script wrote",
        _route(ctx, root, path, real, written),
    )


def _refuse(ctx: _Context, name: str, problem: str, route: str) -> PackagingError:
    shipped = ", ".join(b.id for b in ctx.bundles) or "no bundle"
    return PackagingError(
        f"{ctx.binary} ({ctx.target}, bundle {shipped}): compiled from {name}; {problem} (route: {route})",
        hint="a binary may read only the files of its own crates; remove what brings this file in",
    )


def _route(ctx: _Context, root: Path, path: Path, real: Path, written: Sequence[Path]) -> str:
    """How ``path`` came into the compilation, as far as the other inputs' text tells."""

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

    parts: list[str] = []
    linked = _symlink_on(path, root)
    if linked is not None:
        parts.append(f"symlink {rel(linked)} -> {rel(Path(os.path.realpath(linked)))}")
    if real.is_relative_to(ctx.target_dir):
        parts.append("a file a build script wrote into its OUT_DIR")
    reference = _reference(root, path, real, written)
    if reference is not None:
        parts.append(reference)
    if not parts:
        parts.append("read by the compiler")
    return "; ".join(parts)


def _symlink_on(path: Path, root: Path) -> Path | None:
    """The first symlink on ``path`` inside ``root`` (the file or a directory leading to it), or None."""
    if not path.is_relative_to(root):
        return None
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def _reference(root: Path, path: Path, real: Path, written: Sequence[Path]) -> str | None:
    """Where another input names ``path`` (``include_bytes! at core/src/main.rs:12``...), or None."""
    texts: list[tuple[str, list[str]]] = []
    for other in written:
        if other == path or os.path.realpath(other) == str(real) or not other.is_file():
            continue
        try:
            if other.stat().st_size > MAX_ROUTE_SOURCE_BYTES:
                continue
            lines = other.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        texts.append((other.relative_to(root).as_posix() if other.is_relative_to(root) else str(other), lines))
    names: list[str] = []
    for p in (path, real):
        tail = p.parts[-3:]
        names += ["/".join(tail[i:]) for i in range(len(tail))]
    for name in sorted(set(names), key=lambda n: (-n.count("/"), n)):
        hits = [(where, lines, i) for where, lines in texts for i, line in enumerate(lines) if name in line]
        # The construct that names the file: on the same line first, else on one of the three lines above.
        for back in range(4):
            for where, lines, i in hits:
                j = i - back
                for token, route in _ROUTE_TOKENS:
                    if j >= 0 and token in lines[j]:
                        return f"{route} at {where}:{j + 1}"
        if hits:
            where, _, i = hits[0]
            return f"named at {where}:{i + 1}"
    mod_line = re.compile(r"\bmod\s+(" + "|".join(re.escape(s) for s in {path.stem, real.stem}) + r")\s*;")
    for where, lines in texts:
        for i, line in enumerate(lines):
            if mod_line.search(line):
                return f"a module declaration at {where}:{i + 1}"
    return None
