"""The HTML audit report in a real browser (Debian's Chromium, headless).

What an auditor opens must show the verdict and the per-check table; evidence
crafted to inject markup must change nothing on the page but text; and the
page's Content-Security-Policy must stop a script or an inline style even if
one slipped through escaping.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from release.audit.checks import TITLES, audit
from release.audit.model import AuditReport
from release.audit.render import CSP, write_html
from tests.conftest import Repo

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--window-size=1280,1600", "--force-device-scale-factor=1",
]  # fmt: skip
INJECTION = '"><script>document.title="pwned"<img src=x onerror=alert(1)><b style="color:red">x'
HARMLESS = "a" * len(INJECTION)


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{page.stem}-{len(args)}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def dom(page: Path, tmp: Path) -> str:
    """The page's DOM after the browser loaded it (and ran whatever it was allowed to run)."""
    return chromium(page, tmp, "--dump-dom").stdout


def screenshot(page: Path, tmp: Path) -> bytes:
    shot = tmp / f"{page.stem}.png"
    chromium(page, tmp, f"--screenshot={shot}")
    return shot.read_bytes()


def pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and raw rows of an 8-bit, non-interlaced PNG (what headless Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    data, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = data[y * (stride + 1)], bytearray(data[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def changed_pixels(one: bytes, other: bytes) -> int:
    """How many pixels differ between two screenshots of the same size."""
    w1, h1, rows1 = pixels(one)
    w2, h2, rows2 = pixels(other)
    assert (w1, h1) == (w2, h2)
    bpp = len(rows1[0]) // w1
    return sum(
        1
        for r1, r2 in zip(rows1, rows2, strict=True)
        if r1 != r2
        for x in range(w1)
        if r1[x * bpp : (x + 1) * bpp] != r2[x * bpp : (x + 1) * bpp]
    )


class _Skeleton(HTMLParser):
    """The element structure of a page: each tag with its attribute names and classes, no text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, tuple[str, ...], str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = tuple(sorted(name for name, _ in attrs if name not in ("title",)))
        self.tags.append((tag, names, dict(attrs).get("class") or ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def skeleton(html: str) -> _Skeleton:
    parser = _Skeleton()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def reports(released: Repo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The honest report, and two failing ones that differ only in one planted name: harmless or markup."""
    tmp = tmp_path_factory.mktemp("browser")
    out = {}
    for kind, name in (("honest", None), ("harmless", HARMLESS), ("injected", INJECTION)):
        folder = tmp / kind
        shutil.copytree(released.artifacts, folder)
        if name is not None:
            (folder / name).write_text("x")
        report: AuditReport = audit(folder, released.keys / "owner.pub")
        out[kind] = tmp / f"{kind}.html"
        write_html(report, out[kind])
    return out


def test_the_report_renders_the_verdict_and_every_check(reports: dict[str, Path], tmp_path: Path) -> None:
    honest = skeleton(dom(reports["honest"], tmp_path))
    text = " ".join(honest.text)
    assert "✔ VERIFIED" in text
    checks = [t for t in honest.tags if t[0] == "div" and t[2].split()[:1] == ["check"]]
    assert len(checks) == len(TITLES), "one box per check"
    failed = " ".join(skeleton(dom(reports["injected"], tmp_path)).text)
    assert "✘ VERIFICATION FAILED" in failed and "is not part of the release" in failed


def test_injected_markup_changes_nothing_but_text(reports: dict[str, Path], tmp_path: Path) -> None:
    harmless = dom(reports["harmless"], tmp_path)
    injected = dom(reports["injected"], tmp_path)
    assert skeleton(injected).tags == skeleton(harmless).tags, "the planted name added or changed elements"
    assert INJECTION in "".join(skeleton(injected).text), "the name is shown, as text"
    assert "pwned" not in injected.split("<title>", 1)[1].split("</title>", 1)[0]


def test_the_policy_stops_scripts_and_inline_styles_that_slip_through(reports: dict[str, Path], tmp_path: Path) -> None:
    page = reports["honest"].read_text()
    slipped = tmp_path / "slipped.html"
    slipped.write_text(
        page.replace(
            "<body>",
            '<body><script>document.title="pwned";document.body.innerHTML=""</script>'
            "<img src=x onerror=\"document.title='pwned'\">",
            1,
        ).replace('<div class="badge">', '<div class="badge" style="visibility:hidden">', 1)
    )
    restyled = tmp_path / "restyled.html"
    restyled.write_text(page.replace('<div class="badge">', '<div class="badge" style="visibility:hidden">', 1))
    after = dom(slipped, tmp_path)
    assert "pwned" not in after.split("</title>", 1)[0], "a script ran"
    assert "✔ VERIFIED" in after
    # Without the policy the same inline style hides the verdict badge: thousands of pixels change. With it,
    # the page must look like the honest one; a few pixels of rasterisation noise (headless Chromium under
    # load) are tolerated, never the badge.
    unprotected = tmp_path / "unprotected.html"
    policy = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    assert policy in restyled.read_text()
    unprotected.write_text(restyled.read_text().replace(policy, "", 1))
    honest = screenshot(reports["honest"], tmp_path)
    hidden = changed_pixels(screenshot(unprotected, tmp_path), honest)
    assert hidden > 1000, f"the control did not hide the badge ({hidden} pixels changed)"
    assert changed_pixels(screenshot(restyled, tmp_path), honest) < hidden // 20, "an inline style applied"
