"""Building the CycloneDX SBOM of one release archive (:mod:`release.sbom` says what it holds).

Apart from :mod:`release.sbom` (names, cargo metadata, checking and reading
SBOMs) because only a packaging step builds one: ``cyclonedx-python-lib``'s
document model is most of what every other step's process would import for
nothing.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx import __version__ as cyclonedx_version
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import fixup_id, is_expression
from packageurl import PackageURL

from release.archive import ArtifactDigest, write_bytes_atomic
from release.errors import BadInputError
from release.products import SEMVER, Bundle
from release.sbom import (
    ARCHIVE_PROPERTY,
    BUNDLE_PROPERTY,
    CRATE_PROPERTY,
    PATH_PROPERTY,
    RUST_STD,
    SOURCE_PROPERTY,
    TARGET_PROPERTY,
    CargoMetadata,
    Crate,
    SourceInputs,
)

# Serial numbers are UUID5s of the archive's SHA-256 in this namespace.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ransomeye:release:sbom")
RUST_STD_LICENSE = "MIT OR Apache-2.0"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RUSTC_VERSION = re.compile(r"^rustc (\S+)")


_LICENSING_LOCK = threading.Lock()


def _license(expression: str) -> License:
    """An SPDX id as an id, an expression (``LicenseRef-…`` included) as an expression, else a name.

    The SPDX helpers initialise shared state lazily and are not thread-safe (the
    packagers run in parallel): called concurrently, they classified the same
    expression differently from run to run. Hence the lock.
    """
    with _LICENSING_LOCK:
        spdx_id = fixup_id(expression)
        if spdx_id is not None:
            return DisjunctiveLicense(id=spdx_id)
        if "LicenseRef-" in expression or is_expression(expression):
            return LicenseExpression(expression)
        return DisjunctiveLicense(name=expression)


def _crate_component(crate: Crate) -> Component:
    properties = [] if crate.source is None else [Property(name="cargo:source", value=crate.source)]
    return Component(
        type=ComponentType.LIBRARY,
        name=crate.name,
        version=crate.version,
        bom_ref=f"crate:{crate.key}",
        description=crate.description,
        licenses=[_license(crate.license)] if crate.license else [],
        properties=properties,
        purl=None if crate.purl is None else PackageURL.from_string(crate.purl),
    )


def rustc_version(toolchain: str) -> str:
    """``1.95.0`` from ``rustc 1.95.0 (59807616e 2026-04-14)``; the text itself when it does not parse."""
    m = _RUSTC_VERSION.match(toolchain)
    return m.group(1) if m else toolchain


def _check_sha256(value: str, where: str) -> None:
    if not _SHA256.fullmatch(value):
        raise BadInputError(f"{where}: {value!r} is not a lowercase hex SHA-256")


def _source_components(arcname: str, inputs: SourceInputs) -> list[Component]:
    """The source files the compiler read for the binary ``arcname``, as nested ``file`` components."""
    out = []
    for path, sha in inputs:
        _check_sha256(sha, f"{arcname} source {path}")
        out.append(
            Component(
                type=ComponentType.FILE,
                name=path,
                bom_ref=f"source:{arcname}:{path}",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha)],
                properties=[Property(name=SOURCE_PROPERTY, value=path)],
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
) -> Bom:
    """The CycloneDX BOM of ``bundle``'s archive. Pure: reads nothing, writes nothing.

    ``contents`` maps every regular file in the archive (member name, e.g.
    ``ransomeye-core-1.0.0/bin/ransomeye-core``) to its SHA-256; every binary
    the bundle declares must be there, under ``<stem>/bin/``. ``toolchain``
    is the ``rustc --version`` line of the bundle's target (adds ``rust-std``).
    A binary ``metadata.inputs`` knows (``bin/<target>/<file>``) gets its
    source files as nested components.
    The same arguments always give the same document. Raises
    :class:`BadInputError` for a declared binary missing from ``contents``,
    a binary no crate builds, or a malformed hash.
    """
    top = _checked_stem(bundle, version, archive, contents, epoch)
    subject = _subject(bundle, version, archive)
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, archive.sha256),
        metadata=BomMetaData(component=subject, timestamp=datetime.fromtimestamp(epoch, UTC)),
    )
    bom.metadata.tools.components.update(_tools())
    std = _rust_std(toolchain, bundle) if toolchain is not None else None
    if std is not None:
        bom.components.add(std)
    binary_paths = {f"{top}/bin/{bundle.binary_file(b)}": b for b in bundle.binaries}
    missing = sorted(set(binary_paths) - set(contents))
    if missing:
        raise BadInputError(f"{archive.name}: declared binaries not in the archive: {', '.join(missing)}")
    crates: dict[str, Component] = {}
    files: list[Component] = []
    for arcname in sorted(contents):
        sha = HashType(alg=HashAlgorithm.SHA_256, content=contents[arcname])
        binary = binary_paths.get(arcname)
        if binary is None:
            files.append(
                Component(
                    type=ComponentType.FILE, name=arcname, bom_ref=f"file:{arcname}", hashes=[sha],
                    properties=[Property(name=PATH_PROPERTY, value=arcname)],
                )
            )  # fmt: skip
            continue
        for c in metadata.closure(binary):
            if c.key not in crates:
                crates[c.key] = _crate_component(c)
        component = _binary_component(bundle, arcname, sha, metadata, binary)
        files.append(component)
        crate = metadata.crate_of(binary)
        bom.register_dependency(component, [crates[crate.key], *([std] if std else [])])
    for component in files:
        bom.components.add(component)
    for key in sorted(crates):
        bom.components.add(crates[key])
        bom.register_dependency(crates[key], [crates[d] for d in metadata.crates[key].deps])
    bom.register_dependency(subject, files)
    return bom


def _tools() -> list[Component]:
    """The tools that made the SBOM (new objects for each BOM: the serializer may rewrite their refs)."""
    return [
        Component(type=ComponentType.APPLICATION, name="ransomeye-release", description="RansomEye release pipeline"),
        # Named without its external references: checking their IRI syntax makes validation ten times slower.
        Component(
            type=ComponentType.LIBRARY, group="CycloneDX", name="cyclonedx-python-lib", version=cyclonedx_version
        ),
    ]


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


def _subject(bundle: Bundle, version: str, archive: ArtifactDigest) -> Component:
    """The archive the SBOM describes (its metadata.component)."""
    return Component(
        type=ComponentType.APPLICATION,
        name=bundle.name,
        version=version,
        bom_ref=f"archive:{archive.name}",
        hashes=[
            HashType(alg=HashAlgorithm.SHA_256, content=archive.sha256),
            HashType(alg=HashAlgorithm.BLAKE2B_512, content=archive.blake2b.hex()),
        ],
        properties=[
            Property(name=ARCHIVE_PROPERTY, value=archive.name),
            Property(name=BUNDLE_PROPERTY, value=bundle.id),
            Property(name=TARGET_PROPERTY, value=bundle.target),
        ],
    )


def _rust_std(toolchain: str, bundle: Bundle) -> Component:
    """The Rust standard library of ``toolchain`` (a ``rustc --version`` line), linked into every binary."""
    return Component(
        type=ComponentType.LIBRARY,
        name=RUST_STD,
        version=rustc_version(toolchain),
        bom_ref=f"{RUST_STD}@{rustc_version(toolchain)}",
        description=f"The Rust standard library, linked into every binary ({toolchain})",
        licenses=[_license(RUST_STD_LICENSE)],
        properties=[Property(name=TARGET_PROPERTY, value=bundle.target)],
    )


def _binary_component(bundle: Bundle, arcname: str, sha: HashType, metadata: CargoMetadata, binary: str) -> Component:
    """A declared binary of the archive: its crate, its license and the source files it was compiled from."""
    crate = metadata.crate_of(binary)
    filename = arcname.rsplit("/", 1)[1]
    return Component(
        type=ComponentType.APPLICATION,
        name=filename,
        version=crate.version,
        bom_ref=f"file:{arcname}",
        hashes=[sha],
        licenses=[_license(crate.license)] if crate.license else [],
        properties=[Property(name=PATH_PROPERTY, value=arcname), Property(name=CRATE_PROPERTY, value=crate.key)],
        components=_source_components(arcname, metadata.inputs.get(f"bin/{bundle.target}/{filename}", ())),
    )


def sbom_json(bom: Bom) -> bytes:
    """The canonical bytes of ``bom``: CycloneDX 1.6 JSON, sorted keys, two-space indent, final newline.

    Not validated here: the build's verify step audits every SBOM against the
    CycloneDX schema (:func:`release.sbom.validate_sbom`) before anything is published, and
    loading the schema validator costs about a second, which the packagers
    should not pay a second time.
    """
    data = json.loads(JsonV1Dot6(bom).output_as_string())
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_sbom(bom: Bom, path: Path) -> ArtifactDigest:
    """Write ``bom`` (see :func:`sbom_json`) to ``path`` atomically; return its digest.

    Side effect: creates or replaces ``path`` (mode 644). Raises
    :class:`BadInputError` when the directory is not writable.
    """
    data = sbom_json(bom)
    return write_bytes_atomic(path, data, "the SBOM")
