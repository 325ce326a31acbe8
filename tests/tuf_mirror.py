"""A mirror for the TUF clients' tests: an HTTP server on 127.0.0.1 serving folders, and endless files.

:meth:`MirrorServer.serve` publishes a folder under a fresh URL prefix (one
per test's mirror, so a test never sees another's files);
:meth:`MirrorServer.endless` makes one path of it answer with a body that
never ends (spaces, up to :data:`ENDLESS_BYTES`), streamed until the client
hangs up. Every request is logged, and how much each endless answer sent
before the client hung up.
"""

from __future__ import annotations

import http.server
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from urllib import parse

ENDLESS_BYTES = 100 << 20
_CHUNK = b" " * (64 << 10)


class MirrorServer:
    """Folders served over HTTP, each under its own prefix; see the module's doc."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: dict[str, Path] = {}
        self._endless: set[str] = set()
        self._streaming = 0
        self._idle = threading.Condition(self._lock)
        self.requests: list[str] = []
        self.endless_sent: dict[str, list[int]] = {}
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.mirror = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tuf-mirror", daemon=True)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(self, folder: Path) -> str:
        """Serve ``folder``; its URL (no trailing slash)."""
        token = secrets.token_hex(8)
        with self._lock:
            self._folders[token] = folder
        return f"{self.base}/{token}"

    def endless(self, url: str) -> None:
        """Make ``url`` (a file under a served folder) answer with an endless body."""
        with self._lock:
            self._endless.add(parse.urlsplit(url).path)

    def streamed(self, url_prefix: str) -> dict[str, list[int]]:
        """Each endless path under ``url_prefix``: how many bytes each of its answers sent (none: never asked)."""
        prefix = parse.urlsplit(url_prefix).path.rstrip("/") + "/"
        with self._lock:
            return {p: list(self.endless_sent.get(p, [])) for p in self._endless if p.startswith(prefix)}

    def requested(self, url_prefix: str) -> list[str]:
        """The paths requested so far under ``url_prefix``."""
        prefix = parse.urlsplit(url_prefix).path.rstrip("/") + "/"
        with self._lock:
            return [p for p in self.requests if p.startswith(prefix)]

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no endless answer is being streamed (the client hung up); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._streaming == 0, timeout)

    def _folder(self, token: str) -> Path | None:
        with self._lock:
            return self._folders.get(token)

    def _is_endless(self, path: str) -> bool:
        with self._lock:
            self.requests.append(path)
            return path in self._endless

    def _streamed(self, path: str, delta: int, sent: int | None = None) -> None:
        with self._idle:
            self._streaming += delta
            if sent is not None:
                self.endless_sent.setdefault(path, []).append(sent)
            self._idle.notify_all()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Server(http.server.ThreadingHTTPServer):
    mirror: MirrorServer
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    @property
    def mirror(self) -> MirrorServer:
        return cast(_Server, self.server).mirror

    def do_GET(self) -> None:
        path = parse.urlsplit(self.path).path
        if self.mirror._is_endless(path):
            self._stream_endless(path)
        else:
            super().do_GET()

    def translate_path(self, path: str) -> str:
        token, _, rest = parse.urlsplit(path).path.lstrip("/").partition("/")
        folder = self.mirror._folder(token)
        if folder is None:
            return str(Path(self.directory) / "no-such-mirror" / secrets.token_hex(8))
        self.directory = str(folder)
        return super().translate_path("/" + rest)

    def _stream_endless(self, path: str) -> None:
        self.mirror._streamed(path, +1)
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            while sent < ENDLESS_BYTES:
                self.wfile.write(_CHUNK)
                sent += len(_CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.close_connection = True
            self.mirror._streamed(path, -1, sent)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def running() -> Iterator[MirrorServer]:
    """A started :class:`MirrorServer`, stopped (and its thread joined) on exit."""
    server = MirrorServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
