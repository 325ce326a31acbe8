"""An attacker's toolkit for the tamper and hostile-download tables.

A :class:`Download` is a copy of a real release folder made by ``build.py``,
plus the keys an attacker may hold: the functionary keys (gates, build,
packaging, provenance — of every builder, since the layout wants them all to
agree: a compromised build farm) and the release key (a compromised release
stage); what one builder's keys alone can do is in ``tests/test_trust.py``.
With them the attacker rewrites links, repacks archives member by member
and re-signs what it changed, so that everything in-toto checks before the
inspection still holds and only the inspection stands between the attacker
and the customer.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from in_toto.models.layout import Inspection, Layout
from in_toto.models.metadata import Envelope, Metablock

from release import attest, inspection, provenance
from release.archive import WrittenArchive, hash_file
from release.attest import StepRecord
from release.checksums import write_hash_list
from release.keys import builder_dirs
from release.pipeline import Attested, provenance_predicate
from release.signers import RoleKey, load_role_key
from release.signing import publish_release_keys, sign_digest, sign_openpgp, write_signify_sums, write_sigstore_bundle
from tests.conftest import EPOCH, Repo

VERIFY = str(Path(sys.executable).parent / "in-toto-verify")
VERSION = "1.0.0"
CORE = f"ransomeye-core-{VERSION}.tar.gz"
AGENT_LINUX = f"ransomeye-agent-linux-{VERSION}.tar.gz"
AGENT_WINDOWS = f"ransomeye-agent-windows-{VERSION}.zip"
DPI = f"ransomeye-dpi-{VERSION}.tar.gz"
ARCHIVES = [CORE, AGENT_LINUX, AGENT_WINDOWS, DPI]
PACKAGER = {CORE: "package-core", AGENT_LINUX: "package-agent-linux", AGENT_WINDOWS: "package-agent-windows",
            DPI: "package-dpi"}  # fmt: skip

# A tar member as an attacker writes it: its header and its data (None for what has none).
TarEntry = tuple[tarfile.TarInfo, bytes | None]


@dataclasses.dataclass(frozen=True)
class Download:
    """A copy of the release folder and the keys an attacker may hold."""

    folder: Path
    repo: Repo

    def key(self, role: str) -> RoleKey:
        return load_role_key(self.repo.keys, role)

    def step_keys(self, step: str) -> list[RoleKey]:
        """The keys that sign ``step``'s links: each builder's for a builder's step, else its role's one key."""
        role = attest.step_role(step)
        builder_step = step == attest.STEP_BUILD or step.startswith("package-")
        folders = [self.repo.keys, *(builder_dirs(self.repo.keys) if builder_step else [])]
        return [load_role_key(folder, role) for folder in folders]

    def link(self, step: str) -> Path:
        """``step``'s link by the first builder (or its only one)."""
        return self.folder / attest.link_filename(step, self.key(attest.step_role(step)).public)

    def signed(self, step: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.link(step).read_text())["signed"]
        return data

    def relink(self, step: str, **changes: Mapping[str, Any]) -> None:
        """Rewrite ``step``'s link with changed materials/products/environment, signed with its real key."""
        data = self.signed(step)
        materials = {k: v["sha256"] for k, v in data["materials"].items()}
        products = {k: v["sha256"] for k, v in data["products"].items()}
        record = StepRecord(
            name=step,
            command=data["command"],
            materials={**materials, **changes.get("materials", {})},
            products={**products, **changes.get("products", {})},
            environment={**data["environment"], **changes.get("environment", {})},
        )
        for path in self.folder.glob(f"{step}.*.link"):
            path.unlink()
        for key in self.step_keys(step):
            attest.write_link(record, key, self.folder)

    def resign_release(self) -> None:
        """What a compromised release stage does after changing an archive: re-sign and re-list everything.

        In every format the sign and checksums steps write: minisign for each
        payload; OpenPGP and a Sigstore bundle for each archive; SHA256SUMS with
        its minisign and OpenPGP signatures, and signify's list of the archives.
        """
        release = self.key("release")
        signed = sorted(p.name.removesuffix(".minisig") for p in self.folder.glob("*.minisig"))
        payloads = [hash_file(self.folder / a) for a in signed if a != "SHA256SUMS"]
        archives = [d for d in payloads if d.name in ARCHIVES]
        created = publish_release_keys(self.repo.keys, release)
        envelope = hash_file(self.folder / provenance.provenance_name(VERSION))
        predicate = provenance_predicate(Attested(envelope))
        sigs = [sign_digest(release, d, VERSION, EPOCH) for d in payloads]
        for a in archives:
            sigs.append(sign_openpgp(release, a, EPOCH, created))
            sigs.append(write_sigstore_bundle(release, a, provenance.PREDICATE_TYPE, predicate))
        self.relink("sign", materials={d.name: d.sha256 for d in [*payloads, envelope]},
                    products={d.name: d.sha256 for d in sigs})  # fmt: skip
        sums = write_hash_list(self.folder, payloads + sigs)
        made = [
            sums,
            sign_digest(release, sums, VERSION, EPOCH),
            sign_openpgp(release, sums, EPOCH, created),
            write_signify_sums(release, self.folder / "SHA256.sig", archives),
        ]
        self.relink(
            "checksums",
            materials={d.name: d.sha256 for d in payloads + sigs},
            products={d.name: d.sha256 for d in made},
        )

    def adopt_archive(self, archive: str, declaration: Mapping[str, Any] | None = None) -> None:
        """A packager that signs the archive now in the folder: its packaging link, the provenance, the release.

        ``declaration`` replaces what the packaging link declares of the archive
        (size and members); by default only the size follows the new archive.
        """
        path = self.folder / archive
        new = {archive: hash_file(path).sha256}
        environment = {"archive-size": path.stat().st_size, **(declaration or {})}
        self.relink(PACKAGER[archive], products=new, environment=environment)
        self.relink("provenance", materials=new)
        self.resign_release()

    def forge_sources(self, files: Mapping[str, str]) -> None:
        """A build-key holder that claims the gated source held ``files`` (path -> sha256)."""
        self.relink("gates", materials=files)
        self.relink("build", materials=files)

    def plant_sublayout(self, step: str, command: list[str], *, beside_link: bool = False) -> None:
        """A functionary's layout, whose inspection runs ``command``, in place of ``step``'s (first builder's) link.

        in-toto runs the inspections of a layout a functionary signs in place
        of its link. ``beside_link``: the layout rides as a DSSE envelope in
        the same JSON object as the real link; in-toto reads the envelope, a
        reader that looks only at ``signed`` sees the link.
        """
        layout = Layout()
        layout.set_relative_expiration(days=1)
        layout.inspect = [Inspection(name="x", run=command)]
        signer = self.key(attest.step_role(step)).signer  # the first builder's key of the step's role
        path = self.link(step)
        if not beside_link:
            metablock = Metablock(signed=layout)
            metablock.create_signature(signer)
            metablock.dump(str(path))
            return
        envelope = Envelope.from_signable(layout)
        envelope.create_signature(signer)
        path.write_text(json.dumps({**json.loads(path.read_text()), **envelope.to_dict()}))

    def tar_entries(self, archive: str) -> list[TarEntry]:
        """The members of a tar.gz of the release, headers and data, in order."""
        out: list[TarEntry] = []
        with tarfile.open(self.folder / archive) as tar:
            for info in tar:
                f = tar.extractfile(info) if info.isreg() else None
                out.append((info, f.read() if f else None))
        return out

    def write_tar(self, archive: str, entries: Sequence[TarEntry], tail: bytes = b"") -> None:
        """Write ``entries`` as ``archive`` (a gzip stream; ``tail`` appended to the tar stream inside it)."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in entries:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        (self.folder / archive).write_bytes(gzip.compress(raw.getvalue() + tail, mtime=0))

    def repack_tar(self, archive: str, change: Callable[[list[TarEntry]], list[TarEntry]], tail: bytes = b"") -> None:
        """Repack a tar.gz with ``change`` applied to its members and sign it as its packager would."""
        self.write_tar(archive, change(self.tar_entries(archive)), tail)
        self.adopt_archive(archive)


def declared(written: WrittenArchive) -> dict[str, Any]:
    """What a packager declares of an archive it wrote (its size and members), as the packaging link records it."""
    return {"archive-size": written.digest.size, "archive-members": [m.declaration() for m in written.members]}


def file_entry(name: str, data: bytes, mode: int = 0o644, **header: Any) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, EPOCH
    for key, value in header.items():
        setattr(info, key, value)
    return info, data


def verify(folder: Path, owner_pub: Path, **run: Any) -> subprocess.CompletedProcess[str]:
    """The stock ``in-toto-verify`` in ``folder``, exactly as the README tells a customer to run it."""
    return subprocess.run(
        [VERIFY, "--layout", "root.layout", "--verification-keys", str(owner_pub)],
        cwd=folder, capture_output=True, text=True, timeout=run.pop("timeout", 300), check=False, **run,
    )  # fmt: skip


def reason(proc: subprocess.CompletedProcess[str]) -> str:
    """in-toto-verify's last ``(in-toto-verify)`` line: the reason it gives."""
    lines = [line for line in proc.stderr.splitlines() if "(in-toto-verify)" in line]
    return lines[-1] if lines else proc.stderr[-2000:]


def marker(reason_text: str) -> str:
    """How the inspection's failure markers (file names in-toto's last line lists) show ``reason_text``."""
    return inspection.marker_name(reason_text).removeprefix(inspection.MARKER)


@dataclasses.dataclass(frozen=True)
class Disallowed:
    """in-toto-verify's reason for delivered files that match no step's product: exactly these files."""

    names: frozenset[str]

    def found_in(self, reason: str) -> bool:
        prefix = "'DISALLOW *' matched the following artifacts: "
        if prefix not in reason:
            return False
        return set(ast.literal_eval(reason.split(prefix, 1)[1].strip())) == self.names


def disallowed(*names: str) -> Disallowed:
    return Disallowed(frozenset(names))
