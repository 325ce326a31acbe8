"""in-toto adapter: signed links for each step, and the root layout.

A step's link records exactly the materials it read and the products it
wrote, with the SHA-256 computed while the pipeline streamed them (nothing is
re-read, nothing is skipped by exclude patterns). Links are named
``<step>.<first 8 hex of keyid>.link`` and signed by the step's functionary.

The root layout is generated from the product declaration. It is
version-agnostic (archive names are matched with ``*``), so one signed layout
serves every release. Its artifact rules chain the steps (each consumes what
the previous one produced, every list ends in ``DISALLOW *``), keep ``edge/``
material and agent/DPI binaries out of the core bundle, and its inspection —
run by the customer's ``in-toto-verify`` in the flat release folder — checks
every delivered file against the step that produced it and unpacks every
archive to check what is inside.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release import sbom
from release.archive import write_bytes_atomic
from release.errors import BadInputError, VerificationError
from release.names import MINISIGN_SUFFIX as SIG_SUFFIX
from release.names import OPENPGP_SUFFIX as PGP_SUFFIX
from release.names import SIGNIFY_SUMS_NAME as SIGNIFY_SUMS
from release.names import SIGSTORE_SUFFIX, SUMS_NAME, provenance_name
from release.products import Bundle, Workspace

if TYPE_CHECKING:  # in-toto's models are imported where links and layouts are made: a sandboxed step makes neither
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # nor does it load keys
    from in_toto.models.layout import Inspection, Layout, Step
    from in_toto.models.metadata import Metablock

    from release.signers import RoleKey

LAYOUT_NAME = "root.layout"
GATES_REPORT = "gates-report.json"
INSPECTION = "verify-release"
SBOM_SUFFIX = sbom.SUFFIX
PROVENANCE_GLOB = provenance_name("*")
MAX_EXPIRY_DAYS = 365
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# The functionary roles: each key signs its own steps only (step_role).
GATES_ROLE = "gates"
BUILD_ROLE = "build"
PACKAGE_ROLE = "package"
RELEASE_ROLE = "release"
# The roles every independent builder holds its own key of (the layout requires all builders to agree).
BUILDER_ROLES = (BUILD_ROLE, PACKAGE_ROLE)
FUNCTIONARY_ROLES = (GATES_ROLE, BUILD_ROLE, PACKAGE_ROLE, RELEASE_ROLE)
STEP_GATES = "gates"
STEP_BUILD = "build"
STEP_CODESIGN = "codesign"
STEP_PROVENANCE = "provenance"
STEP_SIGN = "sign"
STEP_CHECKSUMS = "checksums"
BUILD_COMMAND = ("cargo", "build", "--release", "--offline", "--locked")
# The release key's signatures in the formats customers check with stock tools (besides minisign's):
# OpenPGP (gpgv, sqv) on every archive and on SHA256SUMS, a Sigstore bundle per archive (cosign,
# @sigstore/verify), and signify's signed checksum list of the archives.
ARCHIVE_SIGNATURE_SUFFIXES = (PGP_SUFFIX, SIGSTORE_SUFFIX)
SIGN_COMMAND = ("sign", "minisign", "openpgp", "sigstore-bundle")
CODESIGN_COMMAND = ("authenticode-sign",)


def codesigned_binaries(ws: Workspace) -> list[str]:
    """The build products the codesign step Authenticode-signs: every binary of a bundle for Windows."""
    return sorted({f"bin/{b.target}/{f}" for b in ws.bundles if is_windows(b.target) for f in b.binary_files()})


def is_windows(target: str) -> bool:
    return "windows" in target


def step_names(ws: Workspace) -> list[str]:
    """Every in-toto step of the pipeline, in order."""
    codesign = [STEP_CODESIGN] if codesigned_binaries(ws) else []
    return [STEP_GATES, STEP_BUILD, *codesign, *(b.step for b in ws.bundles), STEP_PROVENANCE, STEP_SIGN,
            STEP_CHECKSUMS]  # fmt: skip


def step_role(step: str) -> str:
    """The role whose key signs ``step``'s link (the provenance is the first builder's build key's)."""
    if step in (STEP_SIGN, STEP_CHECKSUMS, STEP_CODESIGN):
        return RELEASE_ROLE
    if step == STEP_GATES:
        return GATES_ROLE
    if step in (STEP_BUILD, STEP_PROVENANCE):
        return BUILD_ROLE
    return PACKAGE_ROLE


@dataclass(frozen=True)
class Builder:
    """One independent builder's keys: it builds and packages, and signs those links with its own keys."""

    build: Ed25519PublicKey
    package: Ed25519PublicKey


@dataclass(frozen=True)
class Functionaries:
    """The public keys a layout authorises, by role.

    ``builders[0]`` also writes the provenance. The build and every packaging
    step need a link from each builder (threshold = the number of builders),
    and in-toto requires those links to agree on every material and product.
    """

    gates: Ed25519PublicKey
    builders: tuple[Builder, ...]
    release: Ed25519PublicKey

    @property
    def threshold(self) -> int:
        return len(self.builders)


@dataclass(frozen=True)
class StepRecord:
    """What one step did: the evidence its link carries."""

    name: str
    command: Sequence[str]
    materials: Mapping[str, str]
    products: Mapping[str, str]
    byproducts: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)


def _artifacts(hashes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"sha256": hashes[name]} for name in sorted(hashes)}


def key_dict(public: Ed25519PublicKey) -> dict[str, Any]:
    """The in-toto/securesystemslib key dict (with ``keyid``) of ``public``."""
    from securesystemslib.signer import SSlibKey  # its import loads every signing backend: not in a step's process

    key = SSlibKey.from_crypto(public)
    d: dict[str, Any] = key.to_dict()
    d["keyid"] = key.keyid
    return d


def keyid_of(public: Ed25519PublicKey) -> str:
    from securesystemslib.signer import SSlibKey

    return str(SSlibKey.from_crypto(public).keyid)


def link_filename(step: str, public: Ed25519PublicKey) -> str:
    from in_toto.models.link import FILENAME_FORMAT

    return str(FILENAME_FORMAT.format(step_name=step, keyid=keyid_of(public)))


def _dump(metablock: Metablock, path: Path) -> None:
    """Write ``metablock`` atomically, byte for byte as in-toto's ``Metablock.dump`` writes it."""
    write_bytes_atomic(path, f"{metablock}".encode(), f"the in-toto metadata {path.name}")


@dataclass(frozen=True)
class WrittenLink:
    """A link file just written, and its ``signed`` part as written (to use without reading it back)."""

    path: Path
    signed: dict[str, Any]


def write_link(record: StepRecord, key: RoleKey, out_dir: Path) -> WrittenLink:
    """Sign ``record`` with ``key`` and write its link into ``out_dir``."""
    from in_toto.models.link import Link
    from in_toto.models.metadata import Metablock

    link = Link(
        name=record.name,
        materials=_artifacts(record.materials),
        products=_artifacts(record.products),
        byproducts={"return-value": 0, **record.byproducts},
        command=list(record.command),
        environment=dict(record.environment),
    )
    metablock = Metablock(signed=link)
    metablock.create_signature(key.signer)
    path = out_dir / link_filename(record.name, key.public)
    _dump(metablock, path)
    return WrittenLink(path, metablock.to_dict()["signed"])


def read_link_products(path: Path) -> dict[str, str]:
    """The products (name → sha256) a link file records."""
    try:
        data = json.loads(path.read_text())
        return {name: h["sha256"] for name, h in data["signed"]["products"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{path.name}: not a readable in-toto link") from e


# --- the layout ----------------------------------------------------------------


def _archive_glob(ws: Workspace, bundle: Bundle) -> str:
    return f"{bundle.name}-*.{bundle.format}"


def _forbidden_rules(bundle: Bundle, prefix: str) -> list[list[str]]:
    """DISALLOW rules for ``bundle``'s forbidden paths and binaries under ``prefix``."""
    rules: list[list[str]] = []
    for fp in bundle.forbidden_paths:
        rules += [["DISALLOW", f"{prefix}{fp}/*"], ["DISALLOW", f"{prefix}*/{fp}/*"]]
    for fb in bundle.forbidden_binaries:
        for name in (fb, f"{fb}.exe"):
            rules += [["DISALLOW", f"{prefix}{name}"], ["DISALLOW", f"{prefix}*/{name}"]]
    return rules


def _sbom_glob(bundle: Bundle) -> str:
    return f"{bundle.name}-*{SBOM_SUFFIX}"


def _payloads(ws: Workspace) -> list[tuple[str, str]]:
    """Every file the release key signs, as (pattern, producing step)."""
    out = [(GATES_REPORT, STEP_GATES)]
    for b in ws.bundles:
        out += [(_archive_glob(ws, b), b.step), (_sbom_glob(b), b.step)]
    return out


def _payload_rules(ws: Workspace) -> list[list[str]]:
    return [["MATCH", pattern, "WITH", "PRODUCTS", "FROM", step] for pattern, step in _payloads(ws)]


def _signatures(ws: Workspace) -> list[str]:
    """Every file the sign step writes, as patterns: a minisign signature of each payload, more of each archive."""
    archives = [_archive_glob(ws, b) for b in ws.bundles]
    return [
        *(pattern + SIG_SUFFIX for pattern, _ in _payloads(ws)),
        *(a + suffix for a in archives for suffix in ARCHIVE_SIGNATURE_SUFFIXES),
    ]


def _signature_rules(ws: Workspace) -> list[list[str]]:
    return [["MATCH", pattern, "WITH", "PRODUCTS", "FROM", STEP_SIGN] for pattern in _signatures(ws)]


SUMS_FILES = (SUMS_NAME, SUMS_NAME + SIG_SUFFIX, SUMS_NAME + PGP_SUFFIX, SIGNIFY_SUMS)


def _release_files(ws: Workspace) -> list[list[str]]:
    """MATCH rules tying every delivered file to the step that produced it."""
    return [
        *(["MATCH", name, "WITH", "PRODUCTS", "FROM", STEP_CHECKSUMS] for name in SUMS_FILES),
        ["MATCH", PROVENANCE_GLOB, "WITH", "PRODUCTS", "FROM", STEP_PROVENANCE],
        *_payload_rules(ws),
        *_signature_rules(ws),
    ]


def inspection_config(
    ws: Workspace, keyids: Mapping[str, Sequence[str]], *, allow_prebuilt: bool = False
) -> list[list[Any]]:
    """The configuration the layout passes to the inspection program (lists only: no brace in the command).

    ``keyids`` maps every step to the keyids authorised for it.
    """
    bundles = [
        [
            ["id", b.id],
            ["name", b.name],
            ["format", b.format],
            ["target", b.target],
            ["step", b.step],
            ["binary-files", list(b.binary_files())],
            ["assets", list(b.assets)],
            ["forbidden-paths", list(b.forbidden_paths)],
            ["forbidden-binaries", list(b.forbidden_binaries)],
            ["binaries-from", binaries_from(b)],
        ]
        for b in ws.bundles
    ]
    from release import inspection  # the layout's: never imported by a step's process

    return [
        ["schema", inspection.SCHEMA],
        ["layout", LAYOUT_NAME],
        ["inspection", INSPECTION],
        ["steps", [[step, [k[:8] for k in keyids[step]]] for step in step_names(ws)]],
        ["gates-step", STEP_GATES],
        ["build-step", STEP_BUILD],
        ["binary-steps", [STEP_BUILD, *([STEP_CODESIGN] if codesigned_binaries(ws) else [])]],
        ["build-command", list(BUILD_COMMAND)],
        ["sums", [SUMS_NAME, STEP_CHECKSUMS]],
        ["sums-lists", [STEP_GATES, *(b.step for b in ws.bundles), STEP_SIGN]],
        ["products", product_names(ws)],
        ["bundles", bundles],
        ["allowed-empty-files", [".gitkeep"]],
        ["allow-prebuilt", allow_prebuilt],
        ["signify-sums", [SIGNIFY_SUMS, STEP_CHECKSUMS]],
        ["sigstore-bundles", [SIGSTORE_SUFFIX, STEP_SIGN]],
    ]


def product_names(ws: Workspace) -> list[list[Any]]:
    """Every file each step may write into the release folder, for version ``@V@`` (the archives' version)."""
    from release import inspection

    v = inspection.VERSION_PLACEHOLDER
    archives = [(b, f"{b.name}-{v}.{b.format}", f"{b.name}-{v}{SBOM_SUFFIX}") for b in ws.bundles]
    payloads = [GATES_REPORT, *(n for _, archive, sbom_file in archives for n in (archive, sbom_file))]
    extra = [archive + suffix for _, archive, _ in archives for suffix in ARCHIVE_SIGNATURE_SUFFIXES]
    return [
        [STEP_GATES, [GATES_REPORT]],
        [STEP_BUILD, []],
        *([[STEP_CODESIGN, []]] if codesigned_binaries(ws) else []),
        *([b.step, [archive, sbom_file]] for b, archive, sbom_file in archives),
        [STEP_PROVENANCE, [provenance_name(v)]],
        [STEP_SIGN, [*(p + SIG_SUFFIX for p in payloads), *extra]],
        [STEP_CHECKSUMS, list(SUMS_FILES)],
    ]


def inspect_command(config: list[list[Any]]) -> list[str]:
    """The inspection's command: ``release/inspection.py`` run by the customer's ``python3``, isolated.

    ``-I`` keeps the release folder (the working directory) off ``sys.path``
    and ignores ``PYTHON*`` variables; ``-S`` skips site packages.
    """
    from release import inspection

    source = Path(inspection.__file__).read_text(encoding="utf-8")
    return ["python3", "-I", "-S", "-c", source, json.dumps(config, separators=(",", ":"))]


def build_layout(
    ws: Workspace,
    keys: Functionaries,
    expires: datetime,
    *,
    allow_prebuilt: bool = False,
) -> Layout:
    """The root layout for ``ws``'s pipeline, expiring at ``expires`` (UTC).

    Each key is authorised for its own steps only: the gates key for the
    gates, each builder's build key for the build (and the first builder's for
    the provenance), each builder's package key for every packaging step, the
    release key for sign and checksums. The build and packaging steps need
    one link per builder (``threshold``), and in-toto refuses links of one
    step that disagree on a material or product, so the release verifies only
    when every builder produced the same bytes.

    ``allow_prebuilt`` makes a layout that accepts a build step that did not
    compile the source (``--unsafe-prebuilt-binaries``, for benchmarks); its
    readme says so. A customer layout never does.
    """
    from in_toto.models.layout import Layout

    if not keys.builders:
        raise ValueError("a layout needs at least one builder")
    build_ids = [keyid_of(b.build) for b in keys.builders]
    package_ids = [keyid_of(b.package) for b in keys.builders]
    layout = Layout()
    layout.readme = (
        "RansomEye release supply chain: gates -> build -> codesign (Windows) -> "
        f"package ({', '.join(b.id for b in ws.bundles)}) "
        f"-> provenance -> sign -> checksums; the build and packaging steps by {keys.threshold} independent "
        f"builder{'s that must agree' if keys.threshold > 1 else ''}. "
        "Verify in the release folder: in-toto-verify --layout root.layout --verification-keys owner.pub"
    )
    if allow_prebuilt:
        layout.readme = "UNSAFE: accepts binaries that were not built from the source (benchmarks only). " + (
            layout.readme
        )
    layout.expires = expires.astimezone(UTC).strftime(EXPIRES_FORMAT)
    publics = [keys.gates, *(k for b in keys.builders for k in (b.build, b.package)), keys.release]
    for public in publics:
        layout.add_functionary_key(key_dict(public))
    if len(layout.keys) != len(publics):
        raise BadInputError("one key is given for two roles: every role and every builder needs its own key")
    release_id = keyid_of(keys.release)
    layout.steps = [
        _gates_step(ws, keyid_of(keys.gates)),
        _build_step(ws, build_ids),
        *([_codesign_step(ws, release_id)] if codesigned_binaries(ws) else []),
        *(_packaging_step(ws, b, package_ids) for b in ws.bundles),
        _provenance_step(ws, build_ids[0]),
        _sign_step(ws, release_id),
        _checksums_step(ws, release_id),
    ]
    layout.inspect = [_release_inspection(ws, layout.steps, allow_prebuilt)]
    layout.validate()
    return layout


def _gates_step(ws: Workspace, gates_id: str) -> Step:
    """The gates read exactly the declared sources and write their report."""
    source_allow = [["ALLOW", s if (ws.root / s).is_file() else f"{s}/*"] for s in ws.sources]
    return _new_step(
        name=STEP_GATES,
        pubkeys=[gates_id],
        expected_command=["python3", "governance/gates/check_gates.py", "--report", GATES_REPORT],
        expected_materials=[["REQUIRE", "Cargo.toml"], ["REQUIRE", "Cargo.lock"], *source_allow, ["DISALLOW", "*"]],
        expected_products=[["REQUIRE", GATES_REPORT], ["CREATE", GATES_REPORT], ["DISALLOW", "*"]],
    )


def _build_step(ws: Workspace, build_ids: list[str]) -> Step:
    """The build reads what the gates passed and writes every declared binary, nothing else."""
    binaries = sorted({f"bin/{b.target}/{f}" for b in ws.bundles for f in b.binary_files()})
    return _new_step(
        name=STEP_BUILD,
        pubkeys=build_ids,
        threshold=len(build_ids),
        expected_command=list(BUILD_COMMAND),
        expected_materials=[
            ["REQUIRE", GATES_REPORT],
            ["REQUIRE", "Cargo.lock"],
            ["MATCH", GATES_REPORT, "WITH", "PRODUCTS", "FROM", STEP_GATES],
            ["MATCH", "*", "WITH", "MATERIALS", "FROM", STEP_GATES],
            ["DISALLOW", "*"],
        ],
        expected_products=[*(["REQUIRE", b] for b in binaries), *(["CREATE", b] for b in binaries), ["DISALLOW", "*"]],
    )


def _codesign_step(ws: Workspace, release_id: str) -> Step:
    """The signer Authenticode-signs each Windows binary the builders agreed on: each one read, each one changed."""
    binaries = codesigned_binaries(ws)
    return _new_step(
        name=STEP_CODESIGN,
        pubkeys=[release_id],
        expected_command=list(CODESIGN_COMMAND),
        expected_materials=[
            *(["REQUIRE", b] for b in binaries),
            *(["MATCH", b, "WITH", "PRODUCTS", "FROM", STEP_BUILD] for b in binaries),
            ["DISALLOW", "*"],
        ],
        expected_products=[*(["REQUIRE", b] for b in binaries), *(["MODIFY", b] for b in binaries), ["DISALLOW", "*"]],
    )


def binaries_from(b: Bundle) -> str:
    """The step whose products ``b``'s packager packs: the codesign step's signed binaries for Windows."""
    return STEP_CODESIGN if is_windows(b.target) else STEP_BUILD


def _packaging_step(ws: Workspace, b: Bundle, package_ids: list[str]) -> Step:
    """A bundle's packager reads its binaries and assets (never what it forbids) and writes its archive and SBOM."""
    bins = [f"bin/{b.target}/{f}" for f in b.binary_files()]
    return _new_step(
        name=b.step,
        pubkeys=package_ids,
        threshold=len(package_ids),
        expected_command=["package", b.id],
        expected_materials=[
            *(["REQUIRE", x] for x in bins),
            *_forbidden_rules(b, ""),
            *(["MATCH", x, "WITH", "PRODUCTS", "FROM", binaries_from(b)] for x in bins),
            *(["MATCH", f"{a}/*", "WITH", "MATERIALS", "FROM", STEP_BUILD] for a in b.assets),
            ["DISALLOW", "*"],
        ],
        expected_products=[["CREATE", _archive_glob(ws, b)], ["CREATE", _sbom_glob(b)], ["DISALLOW", "*"]],
    )


def _provenance_step(ws: Workspace, build_id: str) -> Step:
    return _new_step(
        name=STEP_PROVENANCE,
        pubkeys=[build_id],
        expected_command=["slsa-provenance"],
        expected_materials=[
            *(["MATCH", _archive_glob(ws, b), "WITH", "PRODUCTS", "FROM", b.step] for b in ws.bundles),
            ["DISALLOW", "*"],
        ],
        expected_products=[["CREATE", PROVENANCE_GLOB], ["DISALLOW", "*"]],
    )


def _sign_step(ws: Workspace, release_id: str) -> Step:
    return _new_step(
        name=STEP_SIGN,
        pubkeys=[release_id],
        expected_command=list(SIGN_COMMAND),
        expected_materials=[
            *_payload_rules(ws),
            ["MATCH", PROVENANCE_GLOB, "WITH", "PRODUCTS", "FROM", STEP_PROVENANCE],
            ["DISALLOW", "*"],
        ],
        expected_products=[*(["CREATE", pattern] for pattern in _signatures(ws)), ["DISALLOW", "*"]],
    )


def _checksums_step(ws: Workspace, release_id: str) -> Step:
    return _new_step(
        name=STEP_CHECKSUMS,
        pubkeys=[release_id],
        expected_command=["sha256sums"],
        expected_materials=[*_payload_rules(ws), *_signature_rules(ws), ["DISALLOW", "*"]],
        expected_products=[
            *(["REQUIRE", name] for name in SUMS_FILES),
            *(["CREATE", name] for name in SUMS_FILES),
            ["DISALLOW", "*"],
        ],
    )


def _new_step(**fields: Any) -> Step:
    from in_toto.models.layout import Step

    return Step(**fields)


def _release_inspection(ws: Workspace, steps: list[Step], allow_prebuilt: bool) -> Inspection:
    """The layout's one inspection.

    in-toto runs its command before it compares the folder with the links, so
    the command is the self-contained program of release/inspection.py, which
    checks every file against the verified links before it reads it. The rules
    then tie every delivered file, byte for byte, to the step that produced it
    (what `sha256sum --check` would do, against the signed links), before and
    after the command; the program writes nothing unless it refuses the
    release, and then one marker file per reason, which DISALLOW * names.
    """
    from in_toto.models.layout import Inspection

    from release import inspection

    delivered = [
        ["REQUIRE", SUMS_NAME],
        ["REQUIRE", SUMS_NAME + SIG_SUFFIX],
        ["REQUIRE", GATES_REPORT],
        ["REQUIRE", GATES_REPORT + SIG_SUFFIX],
        *_release_files(ws),
        ["ALLOW", LAYOUT_NAME],
        ["ALLOW", ".gitkeep"],
    ]
    keyids = {s.name: list(s.pubkeys) for s in steps}
    return Inspection(
        name=INSPECTION,
        run=inspect_command(inspection_config(ws, keyids, allow_prebuilt=allow_prebuilt)),
        # An earlier run's markers are there before the command (which removes them), never after.
        expected_materials=[*delivered, ["ALLOW", inspection.MARKER + "*"], ["DISALLOW", "*"]],
        expected_products=[*delivered, ["DISALLOW", "*"]],
    )


def sign_layout(layout: Layout, owner: RoleKey) -> Metablock:
    """Wrap ``layout`` and sign it with the owner key."""
    from in_toto.models.metadata import Metablock

    metablock = Metablock(signed=layout)
    metablock.create_signature(owner.signer)
    return metablock


def write_layout(metablock: Metablock, path: Path) -> None:
    _dump(metablock, path)


def expiry(days: int) -> datetime:
    """The expiry ``days`` from now; refuses more than :data:`MAX_EXPIRY_DAYS`."""
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise BadInputError(f"layout expiry of {days} days: must be between 1 and {MAX_EXPIRY_DAYS}")
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def load_layout(path: Path, owner_public: Ed25519PublicKey) -> Metablock:
    """Load a signed layout; check its owner signature and expiry.

    Raises :class:`VerificationError` for a bad signature or an expired
    layout, :class:`BadInputError` when it cannot be read.
    """
    from in_toto.models.layout import Layout
    from in_toto.models.metadata import Metablock

    try:
        metablock = Metablock.load(str(path))
    except Exception as e:  # in-toto raises many types for a malformed file
        raise BadInputError(f"{path}: not a readable in-toto layout ({type(e).__name__})") from e
    if not isinstance(metablock.signed, Layout):
        raise BadInputError(f"{path}: holds a link, not a layout")
    owner = key_dict(owner_public)
    try:
        metablock.verify_signature(owner)
    except Exception as e:
        raise VerificationError(f"{path}: not signed by the owner key {owner['keyid'][:8]}") from e
    try:
        expires = datetime.strptime(str(metablock.signed.expires), EXPIRES_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise BadInputError(f"{path}: signed.expires = {metablock.signed.expires!r} is not a UTC timestamp") from e
    if expires <= datetime.now(UTC):
        raise VerificationError(
            f"{path}: the layout expired on {metablock.signed.expires}",
            hint="the owner signs a new one: python3 layouts/create_layout.py",
        )
    return metablock


def layout_functionaries(metablock: Metablock) -> set[str]:
    """The keyids a layout authorises."""
    return set(metablock.signed.keys)


def step_authority(metablock: Metablock, step: str) -> tuple[set[str], int]:
    """The keyids a layout authorises for ``step``, and how many of them must sign a link (0: no such step)."""
    for s in metablock.signed.steps:
        if s.name == step:
            return set(s.pubkeys), int(s.threshold)
    return set(), 0


def command_text(command: Sequence[str]) -> str:
    return shlex.join(command)
