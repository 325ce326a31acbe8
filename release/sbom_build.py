"""Building the CycloneDX SBOM of one release archive (:mod:`release.sbom` says what it holds).

Apart from :mod:`release.sbom` (names, cargo metadata, checking and reading
SBOMs) because only a packaging step builds one. The document is built as
plain JSON data, in the shape and order ``cyclonedx-python-lib``'s JSON
serializer gives the same model (``tests/test_sbom.py`` checks the two are
equal, byte for byte, for every bundle of this repository and generated
inputs): importing that library's document model and licence parser cost
every packaging step's process about 70 ms, a quarter of its fixed cost.
The verify step still validates every SBOM against the CycloneDX schema.

Licences are classified by the SPDX list the CycloneDX schema itself allows
for ``license.id`` (which the library also uses for single ids) and the
SPDX expression grammar; the library checks expressions against the list of
its ``license-expression`` dependency instead. The two lists differ on some
ids (newer ones the schema has, aliases and ``+`` forms the other accepts),
so for those a licence is written as an expression here and a name there, or
the reverse; both are valid CycloneDX, and the tests list the differences.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

from release.archive import ArtifactDigest, write_bytes_atomic
from release.errors import BadInputError, ToolchainError
from release.products import SEMVER, Bundle
from release.sbom import (
    ARCHIVE_PROPERTY,
    BUNDLE_PROPERTY,
    CRATE_PROPERTY,
    PATH_PROPERTY,
    RUST_STD,
    SHA_256_NAME,
    SOURCE_PROPERTY,
    SPEC_VERSION,
    TARGET_PROPERTY,
    CargoMetadata,
    Crate,
    SourceInputs,
)

# Serial numbers are UUID5s of the archive's SHA-256 in this namespace.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ransomeye:release:sbom")
RUST_STD_LICENSE = "MIT OR Apache-2.0"
BLAKE2B_512_NAME = "BLAKE2b-512"
TOOL = {"type": "application", "name": "ransomeye-release", "description": "RansomEye release pipeline"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RUSTC_VERSION = re.compile(r"^rustc (\S+)")
# The SPDX licence and exception ids a CycloneDX ``license.id`` may take: the enum that ships with the schema.
_SPDX_SCHEMA = ("schema", "_res", "spdx.SNAPSHOT.schema.json")
_OPERATORS = ("AND", "OR", "WITH")
_MAX_NESTING = 32  # parentheses inside one another in a licence expression
_REF = re.compile(r"(DocumentRef-[A-Za-z0-9.-]+:)?LicenseRef-[A-Za-z0-9.-]+")
_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9.:+-]+)")

Json = dict[str, Any]


@dataclass(frozen=True)
class _Spdx:
    """The SPDX ids a CycloneDX ``license.id`` may take, each by its lowercase form: licences, then exceptions."""

    licenses: Mapping[str, str]
    exceptions: Mapping[str, str]


@cache
def _spdx() -> _Spdx:
    """The enum that ships with the CycloneDX schema (read once from the package's data, not imported).

    It lists the licences, then the exceptions, each in order: the second
    list starts where the order starts again.
    """
    spec = find_spec("cyclonedx")
    for folder in list(spec.submodule_search_locations or ()) if spec is not None else []:
        path = Path(folder).joinpath(*_SPDX_SCHEMA)
        if path.is_file():
            ids = [str(i) for i in json.loads(path.read_text(encoding="utf-8")).get("enum", [])]
            restarts = [n for n in range(1, len(ids)) if ids[n].lower() < ids[n - 1].lower()]
            if len(restarts) != 1:
                raise ToolchainError(
                    f"{path}: not the SPDX licences, then the exceptions, each in order "
                    f"({len(ids)} ids, {len(restarts)} places where the order starts again)",
                    hint="install the cyclonedx-python-lib that requirements.lock pins (`make setup`)",
                )
            return _Spdx({i.lower(): i for i in ids[: restarts[0]]}, {i.lower(): i for i in ids[restarts[0] :]})
    raise ToolchainError(
        "the SPDX licence list of the CycloneDX schema (cyclonedx/" + "/".join(_SPDX_SCHEMA) + ") is missing",
        hint="install the cyclonedx-python-lib that requirements.lock pins (`make setup`)",
    )


def _is_expression(value: str) -> bool:
    """Whether ``value`` is an SPDX licence expression over known ids: ``A OR (B AND C WITH E)``.

    Operators in any case, parentheses at most :data:`_MAX_NESTING` deep;
    every licence id must be in the schema's list of licences (``GPL-2.0+``
    is there, ``MIT+`` is not; ``LicenseRef-x`` and ``DocumentRef-d:LicenseRef-x``
    references are taken), and every id after ``WITH``, which follows a
    licence id, in its list of exceptions.
    """
    words: list[str] = []
    pos = 0
    while pos < len(value.rstrip()):
        m = _TOKEN.match(value, pos)
        if m is None:
            return False
        words.append(m.group(1))
        pos = m.end()
    spdx = _spdx()
    at = depth = 0

    def peek() -> str:
        return words[at] if at < len(words) else ""

    def term() -> bool:
        nonlocal at, depth
        word = peek()
        if word == "(":
            if depth == _MAX_NESTING:
                return False  # a licence nested this deep is no licence: a name (never a RecursionError)
            at, depth = at + 1, depth + 1
            if not expression() or peek() != ")":
                return False
            at, depth = at + 1, depth - 1
            return True
        if word.upper() in _OPERATORS or not (word.lower() in spdx.licenses or _REF.fullmatch(word)):
            return False
        at += 1
        if peek().upper() == "WITH":  # an exception follows a licence id, never a parenthesised expression
            at += 1
            if peek().lower() not in spdx.exceptions:
                return False
            at += 1
        return True

    def expression() -> bool:
        nonlocal at
        if not term():
            return False
        while peek().upper() in ("AND", "OR"):
            at += 1
            if not term():
                return False
        return True

    return bool(words) and expression() and at == len(words)


def _license(expression: str) -> Json:
    """An SPDX id as an id, an expression (``LicenseRef-…`` included) as an expression, else a name."""
    spdx = _spdx()
    spdx_id = spdx.licenses.get(expression.lower()) or spdx.exceptions.get(expression.lower())
    if spdx_id is not None:
        return {"license": {"id": spdx_id}}
    if "LicenseRef-" in expression or _is_expression(expression):
        return {"expression": expression}
    return {"license": {"name": expression}}


def _hash(alg: str, content: str) -> Json:
    return {"alg": alg, "content": content}


def _properties(*pairs: tuple[str, str]) -> list[Json]:
    return [{"name": n, "value": v} for n, v in sorted(pairs)]


def _component(
    kind: str,
    name: str,
    bom_ref: str,
    *,
    version: str | None = None,
    description: str | None = None,
    hashes: Iterable[Json] = (),
    licenses: Iterable[Json] = (),
    properties: Iterable[Json] = (),
    purl: str | None = None,
    components: Iterable[Json] = (),
) -> Json:
    """One component, with the fields the serializer writes only when set; nested components in its order."""
    out: Json = {"type": kind, "name": name, "bom-ref": bom_ref}
    optional = {"version": version, "description": description, "purl": purl}
    out |= {k: v for k, v in optional.items() if v is not None}
    listed = {
        "hashes": sorted(hashes, key=lambda h: (h["alg"], h["content"])),
        "licenses": list(licenses),
        "properties": list(properties),
        "components": _ordered(components),
    }
    out |= {k: v for k, v in listed.items() if v}
    return out


def _ordered(components: Iterable[Json]) -> list[Json]:
    """Components in the serializer's order: by type, name, version (none last) and bom-ref."""
    return sorted(
        components, key=lambda c: (c["type"], c["name"], "version" not in c, c.get("version", ""), c["bom-ref"])
    )


def _purl(crate: Crate) -> str | None:
    """The crate's package URL as the purl specification writes it (name and version percent-encoded)."""
    if crate.purl is None:
        return None
    return f"pkg:cargo/{quote(crate.name, safe='')}@{quote(crate.version, safe='')}"


def _crate_component(crate: Crate) -> Json:
    return _component(
        "library",
        crate.name,
        f"crate:{crate.key}",
        version=crate.version,
        description=crate.description,
        licenses=[_license(crate.license)] if crate.license else [],
        properties=[] if crate.source is None else _properties(("cargo:source", crate.source)),
        purl=_purl(crate),
    )


def rustc_version(toolchain: str) -> str:
    """``1.95.0`` from ``rustc 1.95.0 (59807616e 2026-04-14)``; the text itself when it does not parse."""
    m = _RUSTC_VERSION.match(toolchain)
    return m.group(1) if m else toolchain


def _check_sha256(value: str, where: str) -> None:
    if not _SHA256.fullmatch(value):
        raise BadInputError(f"{where}: {value!r} is not a lowercase hex SHA-256")


def _source_components(arcname: str, inputs: SourceInputs) -> list[Json]:
    """The source files the compiler read for the binary ``arcname``, as nested ``file`` components."""
    out = []
    for path, sha in inputs:
        _check_sha256(sha, f"{arcname} source {path}")
        out.append(
            _component(
                "file",
                path,
                f"source:{arcname}:{path}",
                hashes=[_hash(SHA_256_NAME, sha)],
                properties=_properties((SOURCE_PROPERTY, path)),
            )
        )
    return out


def bundle_sbom(
    bundle: Bundle,
    version: str,
    archive: ArtifactDigest,
    contents: Mapping[str, str],
    metadata: CargoMetadata,
    epoch: int,
    toolchain: str | None = None,
) -> Json:
    """The CycloneDX 1.6 document of ``bundle``'s archive, as JSON data. Pure: reads nothing, writes nothing.

    ``contents`` maps every regular file in the archive (member name, e.g.
    ``ransomeye-core-1.0.0/bin/ransomeye-core``) to its SHA-256; every binary
    the bundle declares must be there, under ``<stem>/bin/``. ``toolchain``
    is the ``rustc --version`` line of the bundle's target (adds ``rust-std``).
    A binary ``metadata.inputs`` knows (``bin/<target>/<file>``) gets its
    source files as nested components. Every top-level component has a
    dependency entry (what it links, if anything); the archive depends on
    its files.
    The same arguments always give the same document. Raises
    :class:`BadInputError` for a declared binary missing from ``contents``,
    a binary no crate builds, or a malformed hash.
    """
    top = _checked_stem(bundle, version, archive, contents, epoch)
    subject = _subject(bundle, version, archive)
    std = _rust_std(toolchain, bundle) if toolchain is not None else None
    binary_paths = {f"{top}/bin/{bundle.binary_file(b)}": b for b in bundle.binaries}
    missing = sorted(set(binary_paths) - set(contents))
    if missing:
        raise BadInputError(f"{archive.name}: declared binaries not in the archive: {', '.join(missing)}")
    crates: dict[str, Json] = {}
    files: list[Json] = []
    depends: dict[str, list[str]] = {}
    for arcname in sorted(contents):
        sha = _hash(SHA_256_NAME, contents[arcname])
        binary = binary_paths.get(arcname)
        if binary is None:
            files.append(
                _component("file", arcname, f"file:{arcname}", hashes=[sha],
                           properties=_properties((PATH_PROPERTY, arcname)))
            )  # fmt: skip
            continue
        for c in metadata.closure(binary):
            if c.key not in crates:
                crates[c.key] = _crate_component(c)
                depends[f"crate:{c.key}"] = [f"crate:{d}" for d in metadata.crates[c.key].deps]
        component = _binary_component(bundle, arcname, sha, metadata, binary)
        files.append(component)
        depends[component["bom-ref"]] = [f"crate:{metadata.crate_of(binary).key}", *([std["bom-ref"]] if std else [])]
    components = [*files, *crates.values(), *([std] if std else [])]
    depends[subject["bom-ref"]] = [f["bom-ref"] for f in files]
    refs = {subject["bom-ref"], *(c["bom-ref"] for c in components)}  # a nested component has no entry
    return {
        "$schema": f"http://cyclonedx.org/schema/bom-{SPEC_VERSION.to_version()}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION.to_version(),
        "serialNumber": f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, archive.sha256)}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(epoch, UTC).isoformat(),
            "tools": {"components": [dict(TOOL)]},
            "component": subject,
        },
        "components": _ordered(components),
        "dependencies": [
            {"ref": ref, **({"dependsOn": sorted(set(depends[ref]))} if depends.get(ref) else {})}
            for ref in sorted(refs)
        ],
    }


def _checked_stem(
    bundle: Bundle, version: str, archive: ArtifactDigest, contents: Mapping[str, str], epoch: int
) -> str:
    """The archive's top-level directory, once every input of :func:`bundle_sbom` is checked."""
    if not SEMVER.fullmatch(version):
        raise BadInputError(f"{version!r} is not a semver version")
    if epoch < 0:
        raise BadInputError(f"epoch {epoch} is negative")
    _check_sha256(archive.sha256, archive.name)
    expected_name = bundle.archive_name(version)
    if archive.name != expected_name:
        raise BadInputError(f"{archive.name}: the archive of {bundle.id} {version} is named {expected_name}")
    top = bundle.stem(version)
    for arcname, member_sha in contents.items():
        _check_sha256(member_sha, arcname)
        if not arcname.startswith(top + "/"):
            raise BadInputError(f"{arcname}: outside the archive's top-level directory {top}/")
    return top


def _subject(bundle: Bundle, version: str, archive: ArtifactDigest) -> Json:
    """The archive the SBOM describes (its metadata.component)."""
    return _component(
        "application",
        bundle.name,
        f"archive:{archive.name}",
        version=version,
        hashes=[_hash(SHA_256_NAME, archive.sha256), _hash(BLAKE2B_512_NAME, archive.blake2b.hex())],
        properties=_properties(
            (ARCHIVE_PROPERTY, archive.name), (BUNDLE_PROPERTY, bundle.id), (TARGET_PROPERTY, bundle.target)
        ),
    )


def _rust_std(toolchain: str, bundle: Bundle) -> Json:
    """The Rust standard library of ``toolchain`` (a ``rustc --version`` line), linked into every binary."""
    return _component(
        "library",
        RUST_STD,
        f"{RUST_STD}@{rustc_version(toolchain)}",
        version=rustc_version(toolchain),
        description=f"The Rust standard library, linked into every binary ({toolchain})",
        licenses=[_license(RUST_STD_LICENSE)],
        properties=_properties((TARGET_PROPERTY, bundle.target)),
    )


def _binary_component(bundle: Bundle, arcname: str, sha: Json, metadata: CargoMetadata, binary: str) -> Json:
    """A declared binary of the archive: its crate, its license and the source files it was compiled from."""
    crate = metadata.crate_of(binary)
    filename = arcname.rsplit("/", 1)[1]
    return _component(
        "application",
        filename,
        f"file:{arcname}",
        version=crate.version,
        hashes=[sha],
        licenses=[_license(crate.license)] if crate.license else [],
        properties=_properties((PATH_PROPERTY, arcname), (CRATE_PROPERTY, crate.key)),
        components=_source_components(arcname, metadata.inputs.get(f"bin/{bundle.target}/{filename}", ())),
    )


def sbom_json(document: Json) -> bytes:
    """The canonical bytes of ``document``: sorted keys, two-space indent, final newline.

    Not validated here: the build's verify step audits every SBOM against the
    CycloneDX schema (:func:`release.sbom.validate_sbom`) before anything is
    published, and loading the schema validator costs about a second, which
    the packagers should not pay a second time.
    """
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_sbom(document: Json, path: Path) -> ArtifactDigest:
    """Write ``document`` (see :func:`sbom_json`) to ``path`` atomically; return its digest.

    Side effect: creates or replaces ``path`` (mode 644). Raises
    :class:`BadInputError` when the directory is not writable.
    """
    return write_bytes_atomic(path, sbom_json(document), "the SBOM")
