"""The customer's fetch: one product of one release, through the TUF repository, verified by in-toto.

Usage::

    python3 -m release.fetch --root ROOT_JSON --mirror URL --product PRODUCT
                             [--version VERSION] [--out DIR] [--layout-key OWNER_PUB] [--state DIR]
    python3 -m release.fetch --root ROOT_JSON --mirror URL --list

``ROOT_JSON`` is a root of the repository obtained out of band, with the
project's keys (any version: the client walks the root chain from it).
``URL`` is the mirror: ``file:///path/to/repository`` or
``http(s)://host/path`` (its ``metadata/`` and ``targets/``).

What it does, in order, and refuses with one message each:

1. python-tuf's client updates the trusted metadata (root chain, timestamp,
   snapshot, targets) from the mirror, keeping it in ``--state`` (by default
   ``~/.local/state/ransomeye-fetch/<the root's hash>``), which is what
   refuses a rollback of any role: the client remembers the newest version
   it has seen. A frozen mirror (expired timestamp), metadata of different
   moments (mix-and-match), a wrong or missing signature, endless data and a
   substituted file are refused by the same client.
2. It reads the signed releases index, picks the product's files and the
   shared ones of ``VERSION`` (default: the latest), and downloads each
   through the client (length and SHA-256 checked against the targets
   metadata) into a new private folder beside ``DIR``.
3. It refuses what the stock ``in-toto-verify`` would mishandle before the
   layout's own checks (a ``.link`` file that is not an in-toto link), then
   runs ``in-toto-verify`` there with the owner's key (``--layout-key``, or
   the root key of the trusted root when it has exactly one).
4. Only then the folder becomes ``DIR`` (which must not exist). On any
   refusal it is removed: nothing unverified is left behind.

Exit codes are the project's (``release/errors.py``): 0 verified, 1 refused
(an attack or a verification failure), 2 bad input (a missing root file, an
unknown product, a folder that exists), 3 a missing ``in-toto-verify``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib import parse

if __name__ == "__main__":
    gc.disable()  # while the modules load: see release.cli.run
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from release.bootstrap import ensure_environment

    ensure_environment("tuf", "in_toto")

import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig, Urllib3Fetcher

from release.cli import run
from release.errors import BadInputError, ToolchainError, VerificationError

PROG = "fetch"
INDEX_TARGET = "releases.json"
INDEX_FORMAT = "ransomeye-releases/1"
MAX_INDEX_BYTES = 16 << 20
MAX_ROOT_BYTES = 512000  # what python-tuf's client accepts for a root
MAX_META_FILE_BYTES = 16 << 20  # the layout and the links: in-toto reads them whole
MAX_FILE_BYTES = 4 << 30
# The slowest mirror the fetch waits for: 64 KiB/s after the first 30 s of each file.
MIN_RATE = 64 << 10
GRACE_SECONDS = 30.0
CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+-]{0,63}")
_PRODUCT = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class FileFetcher(FetcherInterface):
    """``file://`` mirrors: regular files only, streamed (the client bounds how much it reads)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = parse.unquote(parse.urlparse(url).path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path}: no such file on the mirror", 404) from None
        except OSError as e:
            raise exceptions.DownloadError(f"{path}: {e.strerror}") from e
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise exceptions.DownloadError(f"{path}: not a regular file on the mirror")
        return self._chunks(f)

    @staticmethod
    def _chunks(f: Any) -> Iterator[bytes]:
        with f:
            while chunk := f.read(CHUNK):
                yield chunk


class Paced(FetcherInterface):
    """Any fetcher, held to a minimum pace: a mirror that trickles is refused, not waited for for days.

    ``inner``'s own timeout bounds the wait for each chunk; this bounds the
    whole download: ``GRACE_SECONDS`` plus one second per ``MIN_RATE`` bytes.
    """

    def __init__(self, inner: FetcherInterface) -> None:
        self.inner = inner

    def _fetch(self, url: str) -> Iterator[bytes]:
        start = time.monotonic()
        received = 0
        try:
            for chunk in self.inner.fetch(url):
                received += len(chunk)
                if time.monotonic() - start > GRACE_SECONDS + received / MIN_RATE:
                    raise exceptions.SlowRetrievalError(f"{url}: {received} bytes in {time.monotonic() - start:.0f} s")
                yield chunk
        except exceptions.SlowRetrievalError as e:
            # urllib3 files a refused or unreachable connection under timeouts: that is no slow mirror.
            reason = getattr(e.__cause__, "reason", None)
            if received == 0 and isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
                raise exceptions.DownloadError(f"{url}: cannot connect ({reason})") from e
            raise


def default_state(root_bytes: bytes) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ransomeye-fetch" / hashlib.sha256(root_bytes).hexdigest()[:16]


def _mirror_urls(mirror: str) -> tuple[str, str, FetcherInterface]:
    try:
        url = parse.urlparse(mirror)
        url.port  # noqa: B018 - parsing the port is what refuses a malformed host
    except ValueError as e:
        raise BadInputError(f"--mirror {mirror!r}: not a mirror URL ({e})") from e
    if url.scheme not in ("file", "http", "https") or (url.scheme != "file" and not url.netloc):
        raise BadInputError(
            f"--mirror {mirror!r}: not a mirror URL", hint="give file:///path/to/repository or https://host/path"
        )
    base = mirror.rstrip("/")
    if url.scheme == "file" and not (url.path and (Path(parse.unquote(url.path)) / "metadata").is_dir()):
        raise BadInputError(
            f"--mirror {mirror}: no such folder", hint="give the folder that holds metadata/ and targets/"
        )
    inner = FileFetcher() if url.scheme == "file" else Urllib3Fetcher()
    return f"{base}/metadata/", f"{base}/targets/", Paced(inner)


def refused(what: str, error: Exception) -> VerificationError:
    return VerificationError(f"refused: {what} ({type(error).__name__}: {error})")


# What each refusal of the TUF client means, most specific first (the first class that matches).
REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (exceptions.ExpiredMetadataError, "the repository's metadata has expired: a frozen mirror, or one nobody re-signs"),
    (exceptions.UnsignedMetadataError, "metadata lacks the signatures its role requires (a wrong key, or too few)"),
    (exceptions.LengthOrHashMismatchError, "a file does not match its signed length and hash: substituted"),
    (exceptions.DownloadLengthMismatchError, "the mirror sent more data than the signed metadata allows: endless data"),
    (exceptions.SlowRetrievalError, "the mirror sends too slowly (a slow-retrieval attack, or a bad network)"),
    (exceptions.RepositoryError, "the repository's metadata is invalid"),
    (exceptions.DownloadHTTPError, "the mirror lacks a file the signed metadata names"),
)
# python-tuf says "Expected ..." for these two only; every other bad version is one older than trusted.
MIX_AND_MATCH = ("Expected snapshot version", "Expected targets v")


def _explain(e: Exception) -> VerificationError | BadInputError:
    """One message per attack the TUF client caught."""
    if isinstance(e, exceptions.BadVersionNumberError):
        if str(e).startswith(MIX_AND_MATCH):
            return refused("a metadata version is not the one its parent role names: mix-and-match", e)
        return refused("a metadata version is older than one already trusted: rollback", e)
    for kind, meaning in REFUSALS:
        if isinstance(e, kind):
            return refused(meaning, e)
    if isinstance(e, exceptions.DownloadError | urllib3.exceptions.HTTPError):
        return BadInputError(f"cannot download from the mirror: {e}", hint="check --mirror and the network")
    raise e


@contextlib.contextmanager
def _tuf_errors() -> Iterator[None]:
    try:
        yield
    except (exceptions.RepositoryError, exceptions.DownloadError, urllib3.exceptions.HTTPError) as e:
        raise _explain(e) from e


def _read_root(root: str) -> bytes:
    """The trusted root file: a regular file of at most ``MAX_ROOT_BYTES`` (never a device or a FIFO)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(
            f"--root {root}: {e.strerror}", hint="the repository's root.json comes with the project's keys"
        ) from e
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_ROOT_BYTES + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    if data is None or len(data) > MAX_ROOT_BYTES:
        raise BadInputError(f"--root {root}: not a root.json (a regular file of at most {MAX_ROOT_BYTES} bytes)")
    return data


def _updater(ns: argparse.Namespace) -> tuple[Updater, Path]:
    root_bytes = _read_root(ns.root)
    state = Path(ns.state) if ns.state else default_state(root_bytes)
    metadata_url, targets_url, fetcher = _mirror_urls(ns.mirror)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = (state / "root.json").exists()
    if cached:
        _check_state(ns.root, root_bytes, state, walked=False)
    try:
        updater = Updater(
            str(state),
            metadata_url,
            None,
            targets_url,
            fetcher,
            UpdaterConfig(),
            bootstrap=None if cached else root_bytes,
        )
    except exceptions.RepositoryError as e:
        raise BadInputError(f"--root {ns.root}: not a TUF root ({e})", hint="give the root.json of the keys") from e
    with _tuf_errors():
        updater.refresh()
    if cached:
        _check_state(ns.root, root_bytes, state, walked=True)
    return updater, state


def _check_state(root: str, root_bytes: bytes, state: Path, *, walked: bool) -> None:
    """The state folder must hold this root, byte for byte, in ``root_history/``.

    Before the update (``walked`` false) a root newer than any the state has
    seen is let through: the client walks to it, and then it must be there.
    """
    try:
        version = int(json.loads(root_bytes)["signed"]["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"--root {root}: not a TUF root ({e})", hint="give the root.json of the keys") from e
    try:
        seen: bytes | None = (state / "root_history" / f"{version}.root.json").read_bytes()
    except OSError:
        if not walked:
            return
        seen = None
    if seen != root_bytes:
        raise BadInputError(
            f"--state {state}: its trusted metadata comes from another root than {root}",
            hint="give the state folder of this repository, or a new one (a new one forgets the versions seen)",
        )


def _download(updater: Updater, target: str, dest: Path, limit: int) -> None:
    with _tuf_errors():
        info = updater.get_targetinfo(target)
        if info is None:
            raise VerificationError(f"refused: {target} is not a target of the repository")
        if info.length > limit:
            raise VerificationError(f"refused: {target} is {info.length} bytes by the signed metadata, over {limit}")
        updater.download_target(info, str(dest))


def read_index(updater: Updater, work: Path) -> dict[str, Any]:
    """The signed releases index, checked to be what this command can act on."""
    path = work / "index.json"
    _download(updater, INDEX_TARGET, path, MAX_INDEX_BYTES)
    try:
        index = json.loads(path.read_bytes())
    except ValueError as e:
        raise VerificationError(f"refused: the releases index is not JSON ({e})") from e
    problem = _index_problem(index)
    if problem:
        raise VerificationError(f"refused: the releases index {problem}")
    return index  # type: ignore[no-any-return]


def _index_problem(index: Any) -> str | None:
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        return f"is not a {INDEX_FORMAT} index"
    releases = index.get("releases")
    if not isinstance(releases, dict) or not releases or index.get("latest") not in releases:
        return "lists no release, or its latest is not listed"
    for version, entry in releases.items():
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            return f"names {version!a}, not a version"
        if not isinstance(entry, dict) or not isinstance(entry.get("products"), dict):
            return f"has no products for {version}"
        lists = [entry.get("shared"), *entry["products"].values()]
        if not all(isinstance(x, list) for x in lists) or not all(
            _PRODUCT.fullmatch(str(p)) for p in entry["products"]
        ):
            return f"has a malformed entry for {version}"
        names = [n for x in lists for n in x]
        if not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
            return f"names a file of {version} that is not a plain, unique file name"
        problem = _products_problem(entry, version)
        if problem:
            return problem
    return None


def _products_problem(entry: dict[str, Any], version: str) -> str | None:
    """Each product's files are its own (``ransomeye-PRODUCT-VERSION.*``, its archive among them); none is shared."""
    prefixes = {p: f"ransomeye-{p}-{version}." for p in entry["products"]}
    for product, files in entry["products"].items():
        if not {prefixes[product] + "tar.gz", prefixes[product] + "zip"} & set(files):
            return f"lists no archive of {product} {version}"
        stray = [f for f in files if not f.startswith(prefixes[product])]
        if stray:
            return f"lists {stray[0]!a} as a file of {product} {version}"
    for name in entry["shared"]:
        if any(name.startswith(pre) for pre in prefixes.values()):
            return f"lists the product file {name!a} as shared"
    return None


def _check_links(folder: Path) -> None:
    """What the README's first command refuses: a .link file that is not an in-toto link (in-toto would run it)."""
    for path in sorted(folder.iterdir()):
        if path.name.lower().endswith(".link"):
            try:
                d = json.loads(path.read_bytes())
                ok = sorted(d) == ["signatures", "signed"] and d["signed"]["_type"] == "link"
            except (ValueError, TypeError, KeyError):
                ok = False
            if not ok:
                raise VerificationError(f"refused: {path.name} is not an in-toto link")


def _layout_key(ns: argparse.Namespace, state: Path, work: Path) -> Path:
    """The owner's key that signed the layout.

    ``--layout-key``; else ``owner.pub`` beside the ``--root`` file (the
    project's keys come together); else the trusted root's key when it has one
    root key (the owner's). A root of several keys never stands for the owner:
    any one of them could have signed a layout.
    """
    if ns.layout_key:
        path = Path(ns.layout_key).resolve()
        if not path.is_file():
            raise BadInputError(f"--layout-key {ns.layout_key}: no such file", hint="give the owner's owner.pub")
        return path
    beside = Path(ns.root).resolve().parent / "owner.pub"
    if beside.is_file():
        return beside
    root = json.loads((state / "root.json").read_bytes())["signed"]
    keyids = root["roles"]["root"]["keyids"]
    if len(keyids) != 1:
        raise BadInputError(
            f"the repository's root has {len(keyids)} root keys, and no owner.pub is beside {ns.root}",
            hint="give the owner's key: --layout-key /path/to/ransomeye-keys/owner.pub",
        )
    key = root["keys"][keyids[0]]
    if key.get("keytype") != "ed25519":
        raise BadInputError("the root key is not Ed25519", hint="give --layout-key")
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["keyval"]["public"]))
    path = work / "owner.pub"
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _in_toto_verify() -> str:
    beside = Path(sys.executable).parent / "in-toto-verify"
    found = str(beside) if beside.is_file() else shutil.which("in-toto-verify")
    if not found:
        raise ToolchainError("in-toto-verify is missing", hint="pip install in-toto (or run make setup)")
    return found


def _verify(folder: Path, layout_key: Path) -> str:
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p))
    env = {**os.environ, "PATH": path}
    proc = subprocess.run(
        [_in_toto_verify(), "--layout", "root.layout", "--verification-keys", str(layout_key)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
        raise VerificationError(f"refused: in-toto-verify did not verify the download: {lines[-1][-2000:]}")
    return (proc.stderr + proc.stdout).strip()


def _check_out(out: Path) -> Path:
    if out.exists() or out.is_symlink():
        raise BadInputError(f"{out} exists", hint="give --out a folder that does not exist yet")
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent} is not a folder", hint="create it, or give another --out")
    return out


def fetch(ns: argparse.Namespace) -> int:
    # The folder is made beside --out (or the current folder), so the last step is one rename.
    parent = _check_out(Path(ns.out).absolute()).parent if ns.out else Path.cwd()
    work = Path(tempfile.mkdtemp(prefix=".ransomeye-fetch.", dir=parent))
    try:
        updater, state = _updater(ns)
        index = read_index(updater, work)
        version = ns.version or index["latest"]
        if version not in index["releases"]:
            raise BadInputError(
                f"version {version} is not in the repository", hint="versions: " + ", ".join(index["releases"])
            )
        entry = index["releases"][version]
        if ns.product not in entry["products"]:
            raise BadInputError(
                f"{version} has no product {ns.product!r}", hint="products: " + ", ".join(entry["products"])
            )
        out = _check_out(Path(ns.out or parent / f"ransomeye-{ns.product}-{version}").absolute())
        folder = work / "release"
        folder.mkdir()
        names = [*entry["products"][ns.product], *entry["shared"]]
        for name in names:
            meta = name.lower().endswith((".link", ".layout"))
            _download(updater, f"{version}/{name}", folder / name, MAX_META_FILE_BYTES if meta else MAX_FILE_BYTES)
        _check_links(folder)
        _verify(folder, _layout_key(ns, state, work))
        os.rename(folder, _check_out(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timestamp = json.loads((state / "timestamp.json").read_bytes())["signed"]["version"]
    print(
        f"fetch: ransomeye {ns.product} {version}: {len(names)} files verified by TUF (timestamp v{timestamp}) "
        f"and in-toto-verify, in {out}"
    )
    return 0


def list_releases(ns: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ransomeye-fetch-") as tmp:
        updater, _ = _updater(ns)
        index = read_index(updater, Path(tmp))
    for version, entry in index["releases"].items():
        latest = " (latest)" if version == index["latest"] else ""
        print(f"{version}{latest}: {', '.join(entry['products'])}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="a trusted root.json of the repository (from the project's keys)")
    p.add_argument("--mirror", required=True, help="file:///path/to/repository or https://host/path")
    p.add_argument("--product", help="the product to fetch (e.g. core, agent-linux, agent-windows, dpi)")
    p.add_argument("--version", help="the release version (default: the latest)")
    p.add_argument("--out", help="the folder to create, which must not exist (default: ./ransomeye-PRODUCT-VERSION)")
    p.add_argument("--layout-key", help="the owner's public key (default: the root's key, when it has one)")
    p.add_argument("--state", help="the client's trusted metadata (default: ~/.local/state/ransomeye-fetch/...)")
    p.add_argument("--list", action="store_true", help="list the versions and products, fetch nothing")
    return p


def _terminated(signum: int, frame: object) -> None:
    print(f"{PROG}: terminated ({signal.Signals(signum).name}); nothing was kept", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through the clean-up: no unverified file is left behind


def main(argv: Sequence[str]) -> int:
    p = parser()
    ns = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminated)
    if ns.list:
        return list_releases(ns)
    if not ns.product:
        raise BadInputError("say which product: --product (or --list to see them)")
    if ns.version is not None and not _VERSION.fullmatch(ns.version):
        raise BadInputError(f"--version {ns.version!r}: not a version")
    _in_toto_verify()  # before any download
    return fetch(ns)


if __name__ == "__main__":
    sys.exit(run(PROG, main))
