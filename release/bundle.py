"""Assembling a bundle: from the declaration and built binaries to archive entries.

An archive holds one top-level directory ``{name}-{version}/`` with the
bundle's binaries under ``bin/`` (mode 755) and each asset directory at its
repository-relative path. :func:`check_forbidden` (names) and
:func:`check_content` (bytes) are the defence in depth that refuses
forbidden material whatever the gates said: by content, no member may equal
or contain a file of a forbidden path or a forbidden binary the build step
made, no member but the declared binaries may be an executable, and no
asset may be a hard link.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from release.archive import ArtifactDigest, Entry, Member, collect_tree, directory_entries, normalize, write_archive
from release.content import ForbiddenContent, Needle, head_executable
from release.errors import PackagingError
from release.products import Bundle, Workspace
from release.source import source_files


def binary_dir(bin_root: Path, bundle: Bundle) -> Path:
    """Where the build step leaves the binaries for ``bundle``'s target."""
    return bin_root / bundle.target


def assemble(ws: Workspace, bundle: Bundle, bin_root: Path) -> list[Entry]:
    """The sorted entries of ``bundle``: its binaries and its asset trees.

    Raises :class:`PackagingError` for a missing binary, a hostile asset tree
    or forbidden content.
    """
    top = bundle.stem(ws.version)
    bdir = binary_dir(bin_root, bundle)
    entries: list[Entry] = []
    for filename in bundle.binary_files():
        src = bdir / filename
        try:
            st = src.lstat()
        except FileNotFoundError:
            raise PackagingError(
                f"{bundle.id}: binary {filename} not found in {bdir}",
                hint="the build step must run first (python3 release/builder/build.py does both)",
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise PackagingError(f"{bundle.id}: binary {src} is not a regular file")
        entries.append(Entry(f"{top}/bin/{filename}", src, executable=True))
    for asset in bundle.assets:
        entries += collect_tree(ws.root, ws.root / asset, f"{top}/{asset}")
    entries = normalize(entries + directory_entries(e.arcname for e in entries))
    check_forbidden(ws, bundle, entries)
    check_content(ws, bundle, bin_root, entries)
    return entries


def check_forbidden(ws: Workspace, bundle: Bundle, entries: Sequence[Entry]) -> None:
    """Refuse any entry that is, or comes from, something ``bundle`` must never contain.

    Checked on the archive names (inside the top-level directory), on the
    resolved source paths (relative to the repository) and on file names
    against the forbidden binaries.
    """
    top = bundle.stem(ws.version)
    for e in entries:
        inner = PurePosixPath(e.arcname)
        if inner.parts[0] != top:
            raise PackagingError(f"{bundle.id}: entry {e.arcname!r} is outside the top-level directory {top}/")
        rel_inner = PurePosixPath(*inner.parts[1:]) if len(inner.parts) > 1 else PurePosixPath(".")
        hit = bundle.forbidden_path(str(rel_inner))
        if hit is None and e.source is not None:
            src = e.source.resolve()
            if src.is_relative_to(ws.root):
                hit = bundle.forbidden_path(src.relative_to(ws.root).as_posix())
        if hit is not None:
            raise PackagingError(
                f"{bundle.id}: {e.arcname} is {hit}/ material, which the {bundle.id} bundle must never contain",
                hint="remove it from the bundle's assets in Cargo.toml",
            )
        if not e.is_dir:
            banned = bundle.forbidden_binary(inner.name)
            if banned is not None:
                raise PackagingError(
                    f"{bundle.id}: {e.arcname} is the {banned} binary, which the {bundle.id} bundle must never contain"
                )


def forbidden_content(ws: Workspace, bundle: Bundle, bin_root: Path) -> ForbiddenContent:
    """What ``bundle`` may hold no copy of: the files under its forbidden paths and the forbidden binaries built.

    The binaries are those the build step left in ``bin_root`` (every target)
    whose name ``bundle`` forbids. Raises :class:`PackagingError` for one that
    cannot be read.
    """
    needles: list[Needle] = []
    tops = tuple(p for p in bundle.forbidden_paths if (ws.root / p).exists())
    for rel, path in source_files(ws, tops).items():
        needles.append(Needle(f"the {bundle.forbidden_path(rel)}/ file {rel}", path, path.stat().st_size))
    if bin_root.is_dir():
        for target_dir in sorted(p for p in bin_root.iterdir() if p.is_dir()):
            for binary in sorted(p for p in target_dir.iterdir() if p.is_file()):
                banned = bundle.forbidden_binary(binary.name)
                if banned is not None:
                    name = f"bin/{target_dir.name}/{binary.name}"
                    label = f"the {banned} binary ({name})"
                    needles.append(Needle(label, binary, binary.stat().st_size, kind="binary"))
    try:
        return ForbiddenContent(needles)
    except OSError as e:
        raise PackagingError(f"{bundle.id}: a forbidden file cannot be read to compare with: {e}") from e


def check_content(ws: Workspace, bundle: Bundle, bin_root: Path, entries: Sequence[Entry]) -> None:
    """Judge every file of ``bundle`` by its bytes; raise :class:`PackagingError` naming the file and the route.

    Refused: an asset with more than one name (a hard link: its bytes are
    another file's); any member, binaries included, equal to or containing
    (:mod:`release.content`) a file under a forbidden path or a forbidden
    binary the build made; an asset that starts like an executable (ELF,
    PE, Mach-O, ``#!``): only the declared binaries may. Streams each file once.
    """
    top = bundle.stem(ws.version)
    binaries = {f"{top}/bin/{f}" for f in bundle.binary_files()}
    index = forbidden_content(ws, bundle, bin_root)
    for e in entries:
        if e.source is None:
            continue
        is_binary = e.arcname in binaries
        name = e.arcname if is_binary else _repo_name(ws, e.source, e.arcname)
        try:
            st = e.source.stat()
            if not is_binary and st.st_nlink > 1:
                raise _refusal(bundle, name, is_binary, f"has {st.st_nlink} names (a hard link)", "hard link")
            found = index.search(e.source) if index else None
            kind = None if is_binary else head_executable(e.source)
        except OSError as err:
            raise PackagingError(f"{bundle.id}: {name} cannot be read: {err.strerror or err}") from err
        if found is not None:
            what = found.needle.kind
            if is_binary:
                route = f"a binary that {'is' if found.whole else 'holds'} a forbidden {what}"
            elif found.whole:
                route = f"a copy of a forbidden {what} under another name"
            else:
                route = f"a forbidden {what} embedded in a bigger file"
            problem = f"{found.describe()}, which the {bundle.id} bundle must never contain"
            raise _refusal(bundle, name, is_binary, problem, route)
        if kind is not None:
            problem = f"is {kind}; only the declared binaries may be executables"
            raise _refusal(bundle, name, is_binary, problem, "an executable asset")


def _refusal(bundle: Bundle, name: str, is_binary: bool, problem: str, route: str) -> PackagingError:
    where = "the binaries the build produced" if is_binary else "its asset directory"
    return PackagingError(
        f"{bundle.id}: {name} {problem} (route: {route})",
        hint=f"remove it from {where}; the {bundle.id} bundle ships only its own files, judged by their bytes",
    )


def _repo_name(ws: Workspace, source: Path, arcname: str) -> str:
    real = source.resolve()
    return real.relative_to(ws.root).as_posix() if real.is_relative_to(ws.root) else arcname


@dataclass(frozen=True)
class Packaged:
    """A bundle's archive and the files the packager read, by their in-toto names.

    Binaries are named ``bin/<target>/<file>`` (the build step's products),
    assets by their repository-relative path (the build step's materials).
    """

    digest: ArtifactDigest
    materials: dict[str, str]
    contents: dict[str, str]
    members: tuple[Member, ...]

    def link_environment(self) -> dict[str, object]:
        """What the packaging link declares about the archive, so a verifier bounds and checks every read of it."""
        return {"archive-size": self.digest.size, "archive-members": [m.declaration() for m in self.members]}


def material_name(ws: Workspace, bin_root: Path, path: Path) -> str:
    """The in-toto artifact name of a packager input."""
    if path.is_relative_to(bin_root):
        return "bin/" + path.relative_to(bin_root).as_posix()
    real = path.resolve()
    if real.is_relative_to(ws.root):
        return real.relative_to(ws.root).as_posix()
    raise PackagingError(f"{path}: an input outside the repository and the build products")


def package(ws: Workspace, bundle: Bundle, bin_root: Path, out_dir: Path, epoch: int) -> Packaged:
    """Write ``bundle``'s archive into ``out_dir``.

    Returns its digest (computed while writing) and the SHA-256 of every input
    as it was read. Raises :class:`PackagingError` for hostile or forbidden input.
    """
    entries = assemble(ws, bundle, bin_root)
    written = write_archive(bundle.format, entries, out_dir / bundle.archive_name(ws.version), epoch)
    materials = {material_name(ws, bin_root, p): h for p, h in written.inputs.items()}
    contents = {e.arcname: written.inputs[e.source] for e in entries if e.source is not None}
    return Packaged(written.digest, dict(sorted(materials.items())), dict(sorted(contents.items())), written.members)
