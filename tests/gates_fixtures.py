"""Fixture repositories for the gate tests: real trees in ``tmp_path``, no mocks.

:func:`build_repo` makes a small repository that passes every gate: the real
root ``Cargo.toml`` (the product declaration), the real policies and service
units, and synthetic member crates and UI assets shaped like the real ones
(so the tests do not depend on the crates' sources, which other people own).
Each test then breaks one thing in its copy.

Secret-looking test strings are assembled at run time from pieces, so this
file itself holds nothing a secret scanner would flag.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECK_GATES = REPO / "governance" / "gates" / "check_gates.py"
POLICIES = "governance/policies"
UNITS = "ops/services"

# path -> (package name, binaries), mirroring the real workspace's members.
MEMBERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "core": ("ransomeye-core", ("ransomeye-core", "ransomeye-tuner")),
    "ops": ("ransomeye-ops", ("ransomeye-ops",)),
    "edge/agent": ("ransomeye-agent", ("ransomeye-agent", "ransomeye-sentinel", "ransomeye-loader")),
    "edge/dpi": ("ransomeye-dpi", ("ransomeye-dpi",)),
}


def member_manifest(
    name: str, binaries: tuple[str, ...], *, version: str = "version.workspace = true", extra: str = ""
) -> str:
    """The text of a member's Cargo.toml with explicit ``[[bin]]`` tables and ``extra`` appended."""
    bins = "".join(f'\n[[bin]]\nname = "{b}"\npath = "src/{b}.rs"\n' for b in binaries)
    return f'[package]\nname = "{name}"\n{version}\nedition.workspace = true\nautobins = false\n{bins}\n{extra}'


def write_member(root: Path, path: str, name: str, binaries: tuple[str, ...], **kwargs: str) -> Path:
    """Write a member crate (manifest and one ``fn main`` per binary); return its manifest path."""
    crate = root / path
    (crate / "src").mkdir(parents=True, exist_ok=True)
    for b in binaries:
        (crate / "src" / f"{b}.rs").write_text("fn main() {}\n")
    manifest = crate / "Cargo.toml"
    manifest.write_text(member_manifest(name, binaries, **kwargs))
    return manifest


def build_repo(root: Path) -> Path:
    """Build a repository at ``root`` that passes every gate; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Cargo.toml", root / "Cargo.toml")
    shutil.copytree(REPO / POLICIES, root / POLICIES)
    shutil.copytree(REPO / UNITS, root / UNITS)
    for path, (name, binaries) in MEMBERS.items():
        write_member(root, path, name, binaries)
    dist = root / "ui" / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html>\n<title>RansomEye</title>\n<script src=assets/app.js></script>\n")
    (dist / "assets" / "app.js").write_text("console.log('RansomEye console');\n")
    return root


def edit(path: Path, old: str, new: str) -> None:
    """Replace exactly one occurrence of ``old`` in ``path`` (fails loudly when the fixture drifted)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected exactly one {old!r}"
    path.write_text(text.replace(old, new))


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``check_gates.py`` as a user does: plain interpreter, no PYTHONPATH, no venv."""
    return subprocess.run(
        [sys.executable, str(CHECK_GATES), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=120,
        check=False,
    )


# --- secret-looking material, assembled so that this file contains none --------------------------

_DASHES = "-" * 5
KEY_BODY = "MC4CAQAwBQYDK2VwBCIEIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake"


def pem_private_key(kind: str = "") -> str:
    """A PEM private key block (``kind`` like ``"EC "``), with a recognisable fake body."""
    label = f"{kind}PRIVATE KEY"
    return f"{_DASHES}BEGIN {label}{_DASHES}\n{KEY_BODY}\n{_DASHES}END {label}{_DASHES}\n"


SECRET_SAMPLES: dict[str, str] = {
    "pem-private-key": pem_private_key(),
    "openssh-private-key": f"{_DASHES}BEGIN OPENSSH PRIVATE KEY{_DASHES}\n{KEY_BODY}\n",
    "minisign-secret-key": "untrusted comment: " + "minisign encrypted secret key\n",
    "minisign-secret-key-data": "RWRTY0" + "Iy" + "A" * 150 + "\n",
    "aws-access-key-id": "aws_id = " + "AKIA" + "IOSFODNN7EXAMPLE\n",
    "github-token": "token: " + "ghp" + "_" + "a1B2" * 10 + "\n",
    "generic-api-key": "api" + '_key = "' + "s3cr3tv4lu3-xyz" + '"\n',
}
