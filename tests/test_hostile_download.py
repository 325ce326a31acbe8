"""The hostile-download table: a customer's verification can never be turned against the customer.

Each case prepares a download folder as a hostile mirror would (a folder
entry, a replaced archive) or as a compromised packager would (an archive it
repacks and signs with the build and release keys, so that everything in-toto
checks before the inspection still holds), then runs the verification exactly
as the README's customer section says (the code block marked
``customer-verification``, run by ``sh``), and, unless the case needs the
README's first command, the stock ``in-toto-verify`` alone as well. Every run
must:

* refuse (or, for the negative controls, accept), for the stated reason;
* leave everything outside the folder as it was (canary files, a canary
  directory, the verifier's ``HOME`` and ``TMPDIR``);
* leave no process behind (every process the run started carries a tag in its
  environment; none may outlive it);
* leave no special file (FIFO, device, socket, symlink) and no set-uid,
  set-gid or sticky file that the case did not put there itself;
* write less than :data:`DISK_BOUND` bytes in all.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from release import inspection
from release.archive import hash_file
from release.signing import sign_digest
from tests.conftest import EPOCH, Repo, readme_block
from tests.forge import (
    AGENT_WINDOWS,
    CORE,
    VERIFY,
    VERSION,
    Download,
    TarEntry,
    file_entry,
    marker,
    reason,
)

pytestmark = pytest.mark.slow
DISK_BOUND = 1 << 20
RUN_TIMEOUT = 120
TAG = "RANSOMEYE_HOSTILE_TAG"
STEM = "ransomeye-core-1.0.0"
OWNER_PLACEHOLDER = "/path/to/ransomeye-owner.pub"


def readme_procedure() -> str:
    """The customer's verification, exactly as the README prints it."""
    block = readme_block("customer-verification:")
    assert OWNER_PLACEHOLDER in block
    return block


@dataclasses.dataclass(frozen=True)
class Scene:
    """A download folder, canaries outside it, and the verifier's own HOME and TMPDIR."""

    download: Download
    outside: Path
    home: Path
    tmp: Path

    @property
    def folder(self) -> Path:
        return self.download.folder

    @property
    def watched(self) -> tuple[Path, ...]:
        return (self.folder, self.outside, self.home, self.tmp)

    @property
    def canary(self) -> Path:
        return self.outside / "canary.sh"


@pytest.fixture
def scene(released: Repo, tmp_path: Path) -> Scene:
    return make_scene(released, tmp_path)


def make_scene(released: Repo, tmp_path: Path) -> Scene:
    """A copy of the session's release folder, canaries outside it, and the verifier's own HOME and TMPDIR."""
    folder = tmp_path / "download"
    shutil.copytree(released.artifacts, folder)
    (folder / ".gitkeep").unlink(missing_ok=True)
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "canary.sh").write_text("#!/bin/sh\necho canary\n")
    (outside / "dir" / "keep.txt").write_text("outside the folder\n")
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return Scene(Download(folder, released), outside, home, tmp)


# --- what a run may touch -------------------------------------------------------------------------


def _walk(root: Path) -> Iterator[Path]:
    """Every entry under ``root`` (``root`` included), never following a symlink."""
    yield root
    if stat.S_ISDIR(root.lstat().st_mode):
        for child in sorted(root.iterdir()):
            yield from _walk(child)


def _state(root: Path, content: bool = True) -> dict[str, tuple[int, int, int, str]]:
    """Each entry under ``root``: mode, size, blocks, and the SHA-256 of a regular file (the link of a symlink).

    ``content=False`` skips the hashing (for the download folder, which may hold a 64 GiB sparse file).
    """
    out = {}
    for p in _walk(root):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode) and content:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            what = h.hexdigest()
        else:
            what = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
        out[str(p)] = (st.st_mode, st.st_size, st.st_blocks, what)
    return out


def _special(mode: int) -> bool:
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or bool(mode & 0o7000)


def _tagged_processes(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{TAG}={tag}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
    return found


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    reason: str


def run_checked(scene: Scene, command: list[str]) -> Run:
    """Run ``command`` in the folder as a customer; assert it touched nothing it must not."""
    before = {root: _state(root, root != scene.folder) for root in scene.watched}
    tag = uuid.uuid4().hex
    env = {
        "PATH": f"{Path(VERIFY).parent}:/usr/bin:/bin",
        "HOME": str(scene.home),
        "TMPDIR": str(scene.tmp),
        "LANG": "C.UTF-8",
        TAG: tag,
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=scene.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail(f"verification did not end within {RUN_TIMEOUT} s")
    elapsed = time.monotonic() - started
    assert _tagged_processes(tag) == [], "a process of the verification outlived it"
    for root in (scene.outside, scene.home, scene.tmp):
        assert _state(root) == before[root], f"verification changed {root}"
    grown = 0
    for root in scene.watched:
        after = _state(root, root != scene.folder)
        for path, (mode, _, blocks, _) in after.items():
            if path not in before[root]:
                assert not _special(mode), f"verification left a special or set-uid file: {path}"
                grown += blocks * 512
            else:
                assert not _special(mode) or before[root][path][0] == mode, f"{path} became special"
                grown += max(0, blocks - before[root][path][2]) * 512
    assert grown <= DISK_BOUND, f"verification wrote {grown} bytes"
    assert elapsed < RUN_TIMEOUT
    proc_result = subprocess.CompletedProcess(command, proc.returncode, out, err)
    return Run(proc.returncode, out + err, reason(proc_result))


def verify_as_readme(scene: Scene) -> Run:
    script = readme_procedure().replace(OWNER_PLACEHOLDER, str(scene.download.repo.keys / "owner.pub"))
    return run_checked(scene, ["sh", "-c", script])


def verify_alone(scene: Scene) -> Run:
    owner = str(scene.download.repo.keys / "owner.pub")
    return run_checked(scene, [VERIFY, "--layout", "root.layout", "--verification-keys", owner])


# --- writes outside the folder ----------------------------------------------------------------------


def _own_link_symlink(s: Scene) -> None:
    (s.folder / "verify-release.link").symlink_to(s.canary)


def _own_link_dangling_symlink(s: Scene) -> None:
    (s.folder / "verify-release.link").symlink_to(s.outside / "created-by-the-verifier")


def _own_link_hard_link(s: Scene) -> None:
    os.link(s.canary, s.folder / "verify-release.link")


def _own_link_directory(s: Scene) -> None:
    (s.folder / "verify-release.link").mkdir()
    (s.folder / "verify-release.link" / "x").write_text("x")


def _marker_symlink(s: Scene) -> None:
    (s.folder / (inspection.MARKER + "planted")).symlink_to(s.canary)


def _work_dir_symlink(s: Scene) -> None:
    (s.folder / "_inspect").symlink_to(s.outside / "dir", target_is_directory=True)


def _symlink_to(target: str) -> Callable[[Scene], None]:
    return lambda s: (s.folder / "all").symlink_to(target, target_is_directory=True)


def _work_dir_with_links(s: Scene) -> None:
    (s.folder / "_inspect").mkdir()
    (s.folder / "_inspect" / "core").symlink_to(s.outside / "dir", target_is_directory=True)


# --- entries that are not regular files --------------------------------------------------------------


def _archive_as_symlink(s: Scene) -> None:
    real = s.outside / "dir" / CORE
    shutil.copy(s.folder / CORE, real)
    (s.folder / CORE).unlink()
    (s.folder / CORE).symlink_to(real)


def _archive_as_fifo(s: Scene) -> None:
    (s.folder / CORE).unlink()
    os.mkfifo(s.folder / CORE)


def _sbom_to_dev_zero(s: Scene) -> None:
    sbom = s.folder / "ransomeye-core-1.0.0.cdx.json"
    sbom.unlink()
    sbom.symlink_to("/dev/zero")


def _symlink_loop(s: Scene) -> None:
    (s.folder / "loop").symlink_to("loop")


def _device_node(s: Scene) -> None:
    os.mknod(s.folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _unix_socket(s: Scene) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(s.folder / "sock"))


def _extra_directory(s: Scene) -> None:
    (s.folder / "docs").mkdir()
    (s.folder / "docs" / "README").write_text("hi\n")


def _layout_as_fifo(s: Scene) -> None:
    (s.folder / "root.layout").unlink()
    os.mkfifo(s.folder / "root.layout")


def _link_as_fifo(s: Scene) -> None:
    link = s.download.link("gates")
    link.unlink()
    os.mkfifo(link)


def _huge_sparse_file(s: Scene) -> None:
    with (s.folder / "big.bin").open("wb") as f:
        f.truncate(64 << 30)


# --- names in-toto does not record ---------------------------------------------------------------------


def _write(name: str, data: bytes = b"hidden\n") -> Callable[[Scene], None]:
    def plant(s: Scene) -> None:
        (s.folder / name).write_bytes(data)

    return plant


def _dot_git(s: Scene) -> None:
    (s.folder / ".git").mkdir()
    (s.folder / ".git" / "config").write_text("[core]\n")


# --- an archive replaced by a mirror (no key): never unpacked --------------------------------------------


def _tar_gz(entries: list[TarEntry], tail: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue() + tail, mtime=0)


def _special_entries() -> list[TarEntry]:
    link = tarfile.TarInfo(f"{STEM}/bin/ransomeye-core")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    dev = tarfile.TarInfo(f"{STEM}/dev-null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    return [(link, None), (dev, None), file_entry(f"{STEM}/suid", b"#!/bin/sh\n", mode=0o4755)]


def _mirror_replaces_core_with_specials(s: Scene) -> None:
    (s.folder / CORE).write_bytes(_tar_gz(_special_entries()))


def _mirror_replaces_core_with_bomb(s: Scene) -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    with (s.folder / CORE).open("wb") as f:
        for _ in range(1024):
            f.write(z.compress(bytes(1 << 20)))
        f.write(z.flush())


def _mirror_replaces_zip_with_escape(s: Scene) -> None:
    raw = io.BytesIO()
    with __import__("zipfile").ZipFile(raw, "w") as zf:
        zf.writestr("../../escaped.exe", b"MZ evil")
    (s.folder / AGENT_WINDOWS).write_bytes(raw.getvalue())


# --- a compromised packager (build + release keys): hash-valid archives the inspection reads ---------------


def _replace(
    name: str, new: Callable[[tarfile.TarInfo, bytes | None], TarEntry]
) -> Callable[[list[TarEntry]], list[TarEntry]]:
    def change(entries: list[TarEntry]) -> list[TarEntry]:
        hits = [i for i, (info, _) in enumerate(entries) if info.name.rstrip("/") == name]
        assert hits, name
        out = list(entries)
        out[hits[0]] = new(*entries[hits[0]])
        return out

    return change


def _add(*extra: TarEntry) -> Callable[[list[TarEntry]], list[TarEntry]]:
    return lambda entries: [*entries, *extra]


def _as(kind: bytes, **fields: object) -> Callable[[tarfile.TarInfo, bytes | None], TarEntry]:
    def new(info: tarfile.TarInfo, data: bytes | None) -> TarEntry:
        info.type, info.size = kind, 0
        for key, value in fields.items():
            setattr(info, key, value)
        return info, None

    return new


def _setuid(info: tarfile.TarInfo, data: bytes | None) -> TarEntry:
    info.mode = 0o4755
    return info, data


def _pax(**records: str) -> Callable[[tarfile.TarInfo, bytes | None], TarEntry]:
    def new(info: tarfile.TarInfo, data: bytes | None) -> TarEntry:
        info.pax_headers = dict(records)
        return info, data

    return new


def _packager(change: Callable[[list[TarEntry]], list[TarEntry]], tail: bytes = b"") -> Callable[[Scene], None]:
    return lambda s: s.download.repack_tar(CORE, change, tail)


def _tar_bytes(entries: list[TarEntry]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _packager_raw(edit: Callable[[bytes], bytes]) -> Callable[[Scene], None]:
    """A packager that edits the raw (uncompressed) tar stream of the core archive, then signs it."""

    def attack(s: Scene) -> None:
        tar = gzip.decompress((s.folder / CORE).read_bytes())
        (s.folder / CORE).write_bytes(gzip.compress(edit(tar), mtime=0))
        s.download.adopt_archive(CORE)

    return attack


def _data_in_padding(tar: bytes) -> bytes:
    """Hide bytes in the padding after the first member whose size is not a whole number of blocks."""
    pos = 0
    while pos < len(tar):
        size = int(tar[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8)
        end = pos + 512 + size
        if size % 512 and tar[pos + 156 : pos + 157] in (b"0", b"\0"):
            return tar[:end] + b"X" * (-size % 512) + tar[end + (-size % 512) :]
        pos = end + (-size % 512)
    raise AssertionError("no padded member")


def _bad_header_checksum(tar: bytes) -> bytes:
    return tar[:136] + b"77777777777\0" + tar[148:]


def _huge_size_field(tar: bytes) -> bytes:
    """The first file member's header claims 8 GiB (its checksum fixed): a bomb, refused before any data is read."""
    pos = 0
    while tar[pos + 156 : pos + 157] not in (b"0", b"\0"):
        size = int(tar[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8)
        pos += 512 + size + (-size % 512)
    header = bytearray(tar[pos : pos + 512])
    header[124:136] = b"77777777777\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return tar[:pos] + bytes(header) + tar[pos + 512 :]


def _two_gzip_members(s: Scene) -> None:
    path = s.folder / CORE
    path.write_bytes(path.read_bytes() + gzip.compress(_tar_bytes([file_entry(f"{STEM}/extra", b"x")]), mtime=0))
    s.download.adopt_archive(CORE)


def _gnu_long_name(s: Scene) -> None:
    entries = s.download.tar_entries(CORE)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    (s.folder / CORE).write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    s.download.adopt_archive(CORE)


def _many_members(s: Scene) -> None:
    extra = [file_entry(f"{STEM}/ui/dist/f{i:05d}", b"") for i in range(20000)]
    s.download.repack_tar(CORE, _add(*extra))


def _forged_source(path: str, data: bytes) -> Callable[[Scene], None]:
    """A build-key holder that claims ``path`` was gated source with ``data``, and packs it into the core."""

    def attack(s: Scene) -> None:
        digest = hashlib.sha256(data).hexdigest()
        s.download.forge_sources({path: digest})
        entries = s.download.tar_entries(CORE)
        entries.append(file_entry(f"{STEM}/{path}", data))
        entries.sort(key=lambda e: e[0].name)
        s.download.write_tar(CORE, entries)
        declared = s.download.signed("package-core")["environment"]["archive-members"]
        declared = sorted([*declared, [f"{STEM}/{path}", "file", 0o644, len(data), digest]])
        s.download.relink("package-core", materials={path: digest})
        s.download.adopt_archive(CORE, {"archive-members": declared})

    return attack


def _agent_source(s: Scene) -> bytes:
    return (s.download.repo.root / "edge" / "agent" / "src" / "agent.rs").read_bytes()


def _edge_source_as_asset(s: Scene) -> None:
    _forged_source("ui/dist/assets/vendor.js", _agent_source(s))(s)


def _agent_binary_as_core(s: Scene) -> None:
    """The build-key holder signs a build whose ransomeye-core is the agent binary: caught by content."""
    target = "x86_64-unknown-linux-gnu"
    agent = s.download.signed("build")["products"][f"bin/{target}/ransomeye-agent"]["sha256"]
    binary = (s.download.repo.root / "target" / target / "release" / "ransomeye-agent").read_bytes()
    assert hashlib.sha256(binary).hexdigest() == agent
    s.download.relink("build", products={f"bin/{target}/ransomeye-core": agent})
    s.download.relink("package-core", materials={f"bin/{target}/ransomeye-core": agent})
    entries = s.download.tar_entries(CORE)
    declared = s.download.signed("package-core")["environment"]["archive-members"]
    for i, (info, _) in enumerate(entries):
        if info.name == f"{STEM}/bin/ransomeye-core":
            info.size = len(binary)
            entries[i] = (info, binary)
    for d in declared:
        if d[0] == f"{STEM}/bin/ransomeye-core":
            d[3], d[4] = len(binary), agent
    s.download.write_tar(CORE, entries)
    s.download.adopt_archive(CORE, {"archive-members": declared})


# --- zip archives crafted byte by byte -------------------------------------------------------------------


@dataclasses.dataclass
class ZipSpec:
    """One zip entry as an attacker writes it (no data descriptor, so sizes sit in both headers)."""

    name: str
    data: bytes
    mode: int
    deflated: bytes | None = None  # the compressed bytes, when not the honest deflate of ``data``
    local_name: str | None = None  # the local header's name, when it differs from the central one
    dos_bits: int | None = None  # MS-DOS attributes, when not what the packagers write

    @property
    def dos(self) -> int:
        if self.dos_bits is not None:
            return self.dos_bits
        return 0x10 if self.name.endswith("/") else 0

    @property
    def method(self) -> int:
        return 0 if self.name.endswith("/") else 8

    def compressed(self) -> bytes:
        if self.deflated is not None:
            return self.deflated
        return self.data if self.method == 0 else zlib.compress(self.data, 6)[2:-4]


def _zip(specs: list[ZipSpec], *, offsets: dict[int, int] | None = None, gap: bytes = b"",
         comment: bytes = b"") -> bytes:  # fmt: skip
    """A zip of ``specs``; ``offsets`` overrides where the central directory says entry i starts."""
    body, central = b"", b""
    for i, spec in enumerate(specs):
        at, comp = len(body), spec.compressed()
        crc, name, local_name = zlib.crc32(spec.data), spec.name.encode(), (spec.local_name or spec.name).encode()
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, spec.method, 0, 0x21, crc, len(comp),
                            len(spec.data), len(local_name), 0) + local_name + comp  # fmt: skip
        body += gap if i == 0 else b""
        central += struct.pack("<4sBBHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 3, 20, 0, spec.method, 0, 0x21, crc,
                               len(comp), len(spec.data), len(name), 0, 0, 0, 0, spec.mode << 16 | spec.dos,
                               (offsets or {}).get(i, at)) + name  # fmt: skip
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(specs), len(specs), len(central), len(body),
                      len(comment))  # fmt: skip
    return body + central + end + comment


def _windows_specs(s: Scene) -> list[ZipSpec]:
    """The honest Windows archive's entries, in order."""
    import zipfile

    with zipfile.ZipFile(s.folder / AGENT_WINDOWS) as zf:
        return [ZipSpec(i.filename, zf.read(i), i.external_attr >> 16) for i in zf.infolist()]


def _zip_attack(build: Callable[[list[ZipSpec]], bytes]) -> Callable[[Scene], None]:
    def attack(s: Scene) -> None:
        (s.folder / AGENT_WINDOWS).write_bytes(build(_windows_specs(s)))
        s.download.adopt_archive(AGENT_WINDOWS)

    return attack


def _zip_control(specs: list[ZipSpec]) -> bytes:
    return _zip(specs)


def _zip_overlap(specs: list[ZipSpec]) -> bytes:
    specs[3].data = specs[2].data
    return _zip(specs, offsets={3: 0})


def _zip_gap(specs: list[ZipSpec]) -> bytes:
    return _zip(specs, gap=b"hidden data between entries")


def _zip_local_name(specs: list[ZipSpec]) -> bytes:
    specs[2].local_name = "../../x/evil.exe".ljust(len(specs[2].name), "_")
    return _zip(specs)


def _zip_bomb(specs: list[ZipSpec]) -> bytes:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    specs[2].deflated = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(1024)) + bomb.flush()
    return _zip(specs)


def _zip_symlink(specs: list[ZipSpec]) -> bytes:
    specs[2].mode = 0o120777
    return _zip(specs)


def _zip_case_collision(specs: list[ZipSpec]) -> bytes:
    specs[3].name = specs[2].name.replace("ransomeye-agent.exe", "RANSOMEYE-AGENT.EXE")
    return _zip(specs)


def _zip_comment(specs: list[ZipSpec]) -> bytes:
    return _zip(specs, comment=b"PK\x05\x06 a second end record")


# --- a stolen build key: a sublayout in place of a link ------------------------------------------------


def _sublayout(s: Scene) -> None:
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"])


def _sublayout_beside_the_link(s: Scene) -> None:
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"], beside_link=True)


# --- found by the red team: channels the readers skipped, names the layout did not fix, markers that cannot be written


def _gzip_header(flags: int, extra: bytes, mtime: int = 0) -> Callable[[Scene], None]:
    """A packager that rewrites the core archive's gzip header (a comment, a name, a time) around the same stream."""

    def attack(s: Scene) -> None:
        data = (s.folder / CORE).read_bytes()
        header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", mtime) + data[8:10]
        (s.folder / CORE).write_bytes(header + extra + data[10:])
        s.download.adopt_archive(CORE)

    return attack


def _agent_source_as_gzip_comment(s: Scene) -> None:
    _gzip_header(0x10, _agent_source(s).replace(b"\0", b" ") + b"\0")(s)


def _tar_header_tail(tar: bytes) -> bytes:
    """Bytes hidden at the end of the first tar header (its checksum fixed)."""
    header = bytearray(tar[:512])
    header[500:512] = b"hidden bytes"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + tar[512:]


def _one_member_time(info: tarfile.TarInfo, data: bytes | None) -> TarEntry:
    info.mtime += 7
    return info, data


def _zip_own_time(specs: list[ZipSpec]) -> bytes:
    data = _zip(specs)
    # the time field of the third entry's central record (after the local entries), then its local header's
    central = data.index(b"PK\x01\x02")
    for _ in range(2):
        central = data.index(b"PK\x01\x02", central + 4)
    return data[: central + 12] + b"\x22\x00" + data[central + 14 :]


def _extra_provenance_file(s: Scene) -> None:
    """The build key adds a product to the provenance step: a script beside the release, matching its glob."""
    name = "ransomeye-1.0.0-hotfix (run me first).intoto.jsonl"
    (s.folder / name).write_text("#!/bin/sh\necho pwned\n")
    s.download.relink("provenance", products={name: hashlib.sha256((s.folder / name).read_bytes()).hexdigest()})


def _second_core_archive(s: Scene) -> None:
    """The build key adds a second product matching the packager's glob."""
    name = "ransomeye-core-1.0.0 (1).tar.gz"
    shutil.copy(s.folder / CORE, s.folder / name)
    s.download.relink("package-core", products={name: hashlib.sha256((s.folder / name).read_bytes()).hexdigest()})


def _sublayout_upper_case(s: Scene) -> None:
    """A sublayout beside the real link as ``<link>.LINK``: a case-insensitive file system gives it to in-toto."""
    link = s.download.link("package-core")
    honest = link.read_bytes()
    s.download.plant_sublayout("package-core", ["sh", "-c", f"echo pwned >> {s.canary}"])
    link.rename(link.with_suffix(".LINK"))
    link.write_bytes(honest)


def _uid_spelled_with_spaces(tar: bytes) -> bytes:
    """The first header's uid spelled with leading spaces (the same number, another spelling), checksum fixed."""
    header = bytearray(tar[:512])
    header[108:116] = b"      0\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + tar[512:]


def _zip_dos_attributes(specs: list[ZipSpec]) -> bytes:
    specs[2].dos_bits = 0x07  # read-only, hidden, system
    return _zip(specs)


def _sums_listing_less(s: Scene) -> None:
    """The release key signs a SHA256SUMS that leaves the core archive out."""
    sums = s.folder / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if not line.endswith(f"  {CORE}")))
    release = s.download.key("release")
    signature = sign_digest(release, hash_file(sums), VERSION, EPOCH)
    s.download.relink("checksums", products={sums.name: hash_file(sums).sha256, signature.name: signature.sha256})


def _product_in_a_subfolder(s: Scene) -> None:
    s.download.relink("provenance", products={"ransomeye-x/y.intoto.jsonl": "0" * 64})  # the layout's glob admits it


# --- the table -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """An attack, what the README's procedure must say when it refuses it, and what in-toto-verify alone says.

    ``readme`` is empty for the negative controls (which must verify); ``alone``
    is None when only the README's procedure is safe (the stock tool reads the
    entry before any check of ours can run), "" when it says what ``readme`` says.
    """

    name: str
    attack: Callable[[Scene], None]
    readme: str
    alone: str | None = ""


def _m(text: str) -> str:
    return marker(text)


def _not_release(name: str) -> str:
    return f"not a release file: {name!r}"


def _disallowed(name: str) -> str:
    return f"'DISALLOW *' matched the following artifacts: [{name!r}]"


def _packager_case(name: str, change: Callable[[list[TarEntry]], list[TarEntry]], reason_text: str) -> Case:
    return Case(name, _packager(change), _m(reason_text))


INDEX = f"{STEM}/ui/dist/index.html"
CASES = [
    # Writes outside the folder: entries named like what verification writes, or used to write.
    Case(
        "own-link-symlink-to-a-file-outside",
        _own_link_symlink,
        _not_release("verify-release.link"),
        _m("verify-release.link: was a symlink"),
    ),
    Case(
        "own-link-dangling-symlink-outside",
        _own_link_dangling_symlink,
        _not_release("verify-release.link"),
        _m("verify-release.link: was a symlink"),
    ),
    Case(
        "own-link-hard-link-to-a-file-outside",
        _own_link_hard_link,
        _not_release("verify-release.link"),
        _m("verify-release.link: was a regular file with 2 links"),
    ),
    Case("own-link-is-a-directory", _own_link_directory, _not_release("verify-release.link"), "IsADirectoryError"),
    Case(
        "failure-marker-symlink-to-a-file-outside",
        _marker_symlink,
        _not_release(inspection.MARKER + "planted"),
        _m(f"{inspection.MARKER}planted: was a symlink"),
    ),
    # in-toto walks a symlinked directory itself (its inspections record with follow_symlink_dirs=True), before
    # the inspection runs: a symlink to / would have it hash the whole machine. Only the README's procedure is safe.
    Case("old-work-dir-symlink-outside", _work_dir_symlink, _not_release("_inspect"), None),
    Case("old-work-dir-with-symlinks-outside", _work_dir_with_links, _not_release("_inspect"), None),
    Case("symlink-to-the-root-directory", _symlink_to("/"), _not_release("all"), None),
    Case("symlink-directory-loop", _symlink_to("."), _not_release("all"), None),
    # Entries that are not regular files, whatever their name.
    Case(
        "archive-is-a-symlink-to-the-right-bytes", _archive_as_symlink, _not_release(CORE), _m(f"{CORE}: is a symlink")
    ),
    Case("archive-is-a-fifo", _archive_as_fifo, _not_release(CORE), _m(f"{CORE}: is a FIFO")),
    Case(
        "sbom-is-a-symlink-to-dev-zero",
        _sbom_to_dev_zero,
        _not_release("ransomeye-core-1.0.0.cdx.json"),
        _m("ransomeye-core-1.0.0.cdx.json: is a symlink"),
    ),
    Case("symlink-loop", _symlink_loop, _not_release("loop"), _m("loop: is a symlink")),
    Case("character-device", _device_node, _not_release("null"), _m("null: is a character device")),
    Case("unix-socket", _unix_socket, _not_release("sock"), _m("sock: is a socket")),
    Case("extra-directory", _extra_directory, _not_release("docs"), _disallowed("docs/README")),
    Case("layout-is-a-fifo", _layout_as_fifo, _not_release("root.layout"), None),
    Case("link-is-a-fifo", _link_as_fifo, "not a release file: 'gates.", None),
    Case("huge-sparse-file", _huge_sparse_file, _not_release("big.bin"), None),
    # Names in-toto does not record.
    Case(
        "hidden-dot-link-file",
        _write("notes.link"),
        _not_release("notes.link"),
        _m("notes.link: is not part of the release"),
    ),
    Case("hidden-backup-file", _write("SHA256SUMS~"), _m("SHA256SUMS~: is not part of the release")),
    Case("hidden-pyc-file", _write("x.pyc"), _m("x.pyc: is not part of the release")),
    Case("hidden-dot-git-directory", _dot_git, _not_release(".git"), _m(".git: is a directory")),
    Case("dotfile", _write(".env", b"TOKEN=x\n"), _disallowed(".env")),
    Case("gitkeep-with-content", _write(".gitkeep", b"payload"), _m(".gitkeep: must be empty")),
    Case(
        "link-named-for-another-key",
        _write("package-core.00000000.link", b"{}"),
        _not_release("package-core.00000000.link"),
        _m("package-core.00000000.link: is not part of the release"),
    ),
    # A mirror's replacement archive is never unpacked: in-toto refuses its hash, and the inspection never reads it.
    Case("mirror-core-with-links-devices-setuid", _mirror_replaces_core_with_specials, _disallowed(CORE)),
    Case("mirror-core-is-a-gzip-bomb", _mirror_replaces_core_with_bomb, _disallowed(CORE)),
    Case("mirror-zip-with-dotdot-member", _mirror_replaces_zip_with_escape, _disallowed(AGENT_WINDOWS)),
    # A compromised packager: the archive's hash matches its signed link; its members are what it must not hold.
    _packager_case(
        "packager-symlink-member",
        _replace(INDEX, _as(tarfile.SYMTYPE, linkname="/etc/passwd")),
        f"{CORE}: member {INDEX} is a symlink",
    ),
    _packager_case(
        "packager-hard-link-member",
        _replace(INDEX, _as(tarfile.LNKTYPE, linkname=f"{STEM}/bin/x")),
        f"{CORE}: member {INDEX} is a hard link",
    ),
    _packager_case(
        "packager-device-member",
        _replace(INDEX, _as(tarfile.CHRTYPE, devmajor=1, devminor=3)),
        f"{CORE}: member {INDEX} is a character device",
    ),
    _packager_case("packager-fifo-member", _replace(INDEX, _as(tarfile.FIFOTYPE)), f"member {INDEX} is a FIFO"),
    _packager_case(
        "packager-sparse-member", _replace(INDEX, _as(tarfile.GNUTYPE_SPARSE)), f"member {INDEX} is a sparse file"
    ),
    _packager_case(
        "packager-setuid-member",
        _replace(f"{STEM}/bin/ransomeye-core", _setuid),
        "bin/ransomeye-core has mode 4755 (set-uid",
    ),
    _packager_case("packager-absolute-member", _add(file_entry("/tmp/evil", b"x")), "member /tmp/evil is an absolute"),
    _packager_case("packager-dotdot-member", _add(file_entry(f"{STEM}/../../evil", b"x")), "'..' component"),
    _packager_case("packager-duplicate-member", _add(file_entry(INDEX, b"x")), f"member {INDEX} appears twice"),
    _packager_case(
        "packager-case-colliding-member",
        _add(file_entry(f"{STEM}/UI/dist/index.html", b"x")),
        "appears twice (or collides by case",
    ),
    _packager_case(
        "packager-control-characters",
        _add(file_entry(f"{STEM}/ui/dist/\x1b[2Jok", b"x")),
        "is a name with a control, invisible or backslash character",
    ),
    _packager_case(
        "packager-member-in-in-toto-excludes",
        _add(file_entry(f"{STEM}/ui/dist/agent.link", b"\x7fELF")),
        "is a name in-toto would not record",
    ),
    _packager_case(
        "packager-pax-linkpath", _replace(INDEX, _pax(linkpath="/etc/passwd")), "comes with a pax extended header"
    ),
    Case(
        "packager-data-after-end-of-archive",
        _packager(lambda e: e, tail=_tar_bytes([file_entry(f"{STEM}/hidden", b"x")])),
        _m(f"{CORE}: holds data after its end-of-archive marker"),
    ),
    Case("packager-data-in-padding", _packager_raw(_data_in_padding), _m(f"{CORE}: hides data in the padding")),
    Case("packager-bad-header-checksum", _packager_raw(_bad_header_checksum), _m(f"{CORE}: a tar header fails its")),
    Case("packager-8-gib-size-field", _packager_raw(_huge_size_field), _m("claims 8589934591 bytes, over the")),
    Case("packager-two-gzip-members", _two_gzip_members, _m(f"{CORE}: holds data after its gzip stream")),
    Case("packager-gnu-format", _gnu_long_name, _m(f"{CORE}: a tar header is not POSIX ustar")),
    Case("packager-20000-extra-members", _many_members, _m("is more than the")),
    Case(
        "build-key-edge-source-as-asset",
        _edge_source_as_asset,
        _m("is byte for byte the edge/ file edge/agent/src/agent.rs, which the core bundle must never hold"),
    ),
    Case(
        "build-key-agent-binary-as-core",
        _agent_binary_as_core,
        _m(f"member {STEM}/bin/ransomeye-core is byte for byte the ransomeye-agent binary"),
    ),
    Case("packager-zip-overlapping-entries", _zip_attack(_zip_overlap), _m("does not start where the previous one")),
    Case("packager-zip-data-between-entries", _zip_attack(_zip_gap), _m("does not start where the previous one")),
    Case(
        "packager-zip-local-name-differs", _zip_attack(_zip_local_name), _m("differs from its central directory name")
    ),
    Case("packager-zip-inflate-bomb", _zip_attack(_zip_bomb), _m("inflates to more than its declared")),
    Case(
        "packager-zip-symlink-entry", _zip_attack(_zip_symlink), _m("is not a regular file or directory (mode 120777)")
    ),
    Case("packager-zip-case-collision", _zip_attack(_zip_case_collision), _m("appears twice (or collides by case")),
    Case("packager-zip-comment", _zip_attack(_zip_comment), _m("no plain end-of-central-directory record")),
    # A stolen build key: in-toto runs a sublayout's commands before any check of ours; the README's first command
    # refuses the sublayout (see test_a_sublayout_runs_its_commands_under_the_stock_verifier_alone).
    Case("build-key-sublayout-in-place-of-a-link", _sublayout, "not a release file: 'package-core.", None),
    Case("build-key-sublayout-beside-the-link", _sublayout_beside_the_link, "not a release file: 'package-core.", None),
    # Found by the red team.
    Case(
        "packager-edge-source-in-the-gzip-comment",
        _agent_source_as_gzip_comment,
        _m(f"{CORE}: not the plain gzip header the packagers write"),
    ),
    Case("packager-gzip-header-time", _gzip_header(0, b"", mtime=1700000000), _m("not the plain gzip header")),
    Case("packager-data-in-a-tar-header", _packager_raw(_tar_header_tail), _m("holds what the packagers never write")),
    # Found by the second red-team pass.
    Case(
        "build-key-sublayout-as-an-upper-case-link",
        _sublayout_upper_case,
        "not a release file: 'package-core.",
        "'DISALLOW *' matched the following artifacts: ['package-core.",  # in-toto's excludes are case-sensitive
    ),
    Case(
        "packager-pax-path-beside-the-honest-name",
        _packager(_replace(INDEX, _pax(path=INDEX))),
        _m("comes with a pax extended header"),
    ),
    Case(
        "packager-other-spelling-of-a-header-number",
        _packager_raw(_uid_spelled_with_spaces),
        _m("holds what the packagers never write"),
    ),
    Case(
        "own-link-in-capitals",
        _write("VERIFY-RELEASE.LINK", b"x"),
        _not_release("VERIFY-RELEASE.LINK"),
        _disallowed("VERIFY-RELEASE.LINK"),  # in-toto records it: its excludes are case-sensitive
    ),
    Case("packager-zip-dos-attributes", _zip_attack(_zip_dos_attributes), _m("has MS-DOS attributes")),
    Case("release-key-sha256sums-listing-less", _sums_listing_less, _m(f"SHA256SUMS: does not list {CORE}")),
    Case(
        "build-key-product-in-a-subfolder",
        _product_in_a_subfolder,
        _m("ransomeye-x/y.intoto.jsonl: the provenance step may not write it"),
    ),
    Case(
        "packager-member-with-its-own-time",
        _packager(_replace(INDEX, _one_member_time)),
        _m(f"member {INDEX} has a time of its own"),
    ),
    Case("packager-zip-entry-with-its-own-time", _zip_attack(_zip_own_time), _m("an entry with its own version or")),
    Case(
        "build-key-extra-provenance-product",
        _extra_provenance_file,
        _m("ransomeye-1.0.0-hotfix (run me first).intoto.jsonl: the provenance step may not write it"),
    ),
    Case("build-key-second-core-archive", _second_core_archive, _m("names 2 tar.gz archives, not one")),
]
EARLIER_LINK = b'{"signatures": [], "signed": {"_type": "link"}}'
CONTROLS = [
    Case("honest-release", lambda s: None, ""),
    Case("earlier-runs-link-left-behind", _write("verify-release.link", EARLIER_LINK), ""),
    Case("earlier-runs-failure-marker-left-behind", _write(inspection.MARKER + "old reason", b""), ""),
    Case("zip-rewritten-honestly-by-the-attackers-crafter", _zip_attack(_zip_control), ""),
]


@pytest.mark.parametrize("case", CASES + CONTROLS, ids=[c.name for c in CASES + CONTROLS])
def test_hostile_download(scene: Scene, case: Case) -> None:
    case.attack(scene)
    run = verify_as_readme(scene)
    if not case.readme:
        assert run.returncode == 0, run.output
    else:
        assert run.returncode != 0, "the README's verification must refuse this download"
        assert case.readme in run.output, run.output[-3000:]
    if case.alone is None:
        return
    alone = verify_alone(scene)
    if not case.readme:
        assert alone.returncode == 0, alone.output
    else:
        assert alone.returncode == 1, "the stock in-toto-verify alone must refuse this download"
        assert (case.alone or case.readme) in alone.reason, alone.reason


def test_the_table_covers_every_class() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES + CONTROLS}) == len(CASES + CONTROLS)


def test_a_sublayout_runs_its_commands_under_the_stock_verifier_alone(scene: Scene) -> None:
    """Why the README's first command exists: in-toto runs what a functionary's sublayout says (documented risk)."""
    _sublayout(scene)
    owner = str(scene.download.repo.keys / "owner.pub")
    proc = subprocess.run(
        [VERIFY, "--layout", "root.layout", "--verification-keys", owner],
        cwd=scene.folder, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "pwned" in scene.canary.read_text(), "in-toto no longer runs sublayouts: simplify the README"
