"""The README's "Verify a download", run exactly as printed, on a folder per product.

Each product's folder is built from the README's table (its files and the
shared files, nothing else) out of a real release. Every command block of
the section runs by ``sh`` in that folder, with only the placeholders
replaced: the keys folder and the source clone. Each stock tool must accept
the honest download and refuse a flipped byte; ``in-toto-verify`` must
refuse a folder that holds part of a product, another product's file in its
place, or a file of another version. cosign cannot be installed here: its
command is checked to name exactly the files the ``@sigstore/verify`` command
(which does run) checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, Repo
from tests.forge import VERIFY, VERSION

pytestmark = pytest.mark.slow
KEYS_PLACEHOLDER = "/path/to/ransomeye-keys"
SOURCE_PLACEHOLDER = "/path/to/ransomeye-source"
EXAMPLE = "ransomeye-agent-windows-1.0.0.zip"
PUBLIC_KEYS = ("owner.pub", "release.pub", "release.minisign.pub", "release.asc", "release.gpg",
               "release.signify.pub", "codesign-ca.pem")  # fmt: skip
TOOLS = ("in-toto", "minisign", "sha256sum", "gpgv", "sqv", "signify", "osslsigncode", "sigstore", "sigstore-js")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Verify a download")
    return text[start : text.index("\n## ", start + 1)]


def readme_blocks() -> dict[str, str]:
    """Every ``verify-download`` block of the README, by tool."""
    found = re.findall(r"<!-- verify-download ([\w-]+)[^>]*-->\n```sh\n(.*?)```", _section(), re.DOTALL)
    return dict(found)


def readme_products() -> dict[str, list[str]]:
    """The README's table: each product's files, for this version."""
    section = _section()
    table = section[section.index("<!-- product-files") :].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return {row.split("|")[1].strip(): re.findall(r"`([^`]+)`", row.split("|")[2]) for row in rows}


def shared_files(folder: Path) -> list[str]:
    """The shared files the README names ("every `*.link` file": those of the release)."""
    head = _section().split("**Then, per product")[0]
    named = [n.replace("{ver}", VERSION) for n in re.findall(r"`([^`]+)`", head) if "*" not in n and "-verify" not in n]
    return [*named, *sorted(p.name for p in folder.glob("*.link"))]


def product_folder(released: Repo, dest: Path, product: str) -> Path:
    dest.mkdir()
    files = [f.replace("{ver}", VERSION) for f in readme_products()[product]]
    for name in [*shared_files(released.artifacts), *files]:
        shutil.copy2(released.artifacts / name, dest / name)
    return dest


def run_block(tool: str, folder: Path, keys: Path, archive: str) -> subprocess.CompletedProcess[str]:
    script = readme_blocks()[tool]
    script = script.replace(KEYS_PLACEHOLDER, str(keys)).replace(SOURCE_PLACEHOLDER, str(ROOT))
    script = script.replace(f"F={EXAMPLE}", f"F={archive}")
    env = {**os.environ, "PATH": f"{Path(VERIFY).parent}:{os.environ['PATH']}", "HOME": str(folder.parent / "home")}
    (folder.parent / "home").mkdir(exist_ok=True)
    return subprocess.run(["sh", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def keys(released: Repo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The public keys a customer gets separately, in a folder of their own."""
    folder = tmp_path_factory.mktemp("ransomeye-keys")
    for name in PUBLIC_KEYS:
        shutil.copy2(released.keys / name, folder / name)
    return folder


def test_the_section_has_a_block_per_tool_and_a_row_per_product(released: Repo) -> None:
    assert sorted(readme_blocks()) == sorted(TOOLS)
    products = readme_products()
    archives = sorted(b.archive_name(VERSION) for b in released.ws.bundles)
    assert sorted(files[0].replace("{ver}", VERSION) for files in products.values()) == archives
    # A product's files are exactly what the release names after its archive and SBOM.
    for files in products.values():
        stem = files[0].replace("{ver}", VERSION).rsplit("-", 1)[0] + f"-{VERSION}."
        named = sorted(p.name for p in released.artifacts.iterdir() if p.name.startswith(stem))
        assert sorted(f.replace("{ver}", VERSION) for f in files) == named


@pytest.mark.parametrize("product", ["core", "agent (Linux)", "agent (Windows)", "DPI probe"])
def test_a_folder_of_one_product_verifies_with_every_tool(
    released: Repo, keys: Path, tmp_path: Path, product: str
) -> None:
    folder = product_folder(released, tmp_path / "download", product)
    archive = readme_products()[product][0].replace("{ver}", VERSION)
    before = sorted(p.name for p in folder.iterdir())
    for tool in TOOLS:
        if tool in ("sigstore", "osslsigncode") and (tool == "sigstore" or not archive.endswith(".zip")):
            continue  # cosign: not installable (checked below); Authenticode: the Windows agent only
        proc = run_block(tool, folder, keys, archive)
        assert proc.returncode == 0, f"{tool} refused the honest {product} download:\n{proc.stdout}\n{proc.stderr}"
    # Verification leaves nothing but in-toto's own record of its inspection.
    assert sorted(p.name for p in folder.iterdir() if p.name != "verify-release.link") == before


@pytest.mark.parametrize("tool", [t for t in TOOLS if t != "sigstore"])
def test_every_tool_refuses_a_flipped_byte(released: Repo, keys: Path, tmp_path: Path, tool: str) -> None:
    folder = product_folder(released, tmp_path / "download", "agent (Windows)")
    target = folder / EXAMPLE
    data = bytearray(target.read_bytes())
    # In the first .exe's code: the zip's CRC refuses it too, and so does its signature.
    data[len(data) // 3] ^= 0x01
    target.write_bytes(bytes(data))
    proc = run_block(tool, folder, keys, EXAMPLE)
    assert proc.returncode != 0, f"{tool} accepted a flipped byte:\n{proc.stdout}\n{proc.stderr}"


def test_the_cosign_command_names_the_files_the_sigstore_check_reads() -> None:
    blocks = readme_blocks()
    cosign, js = blocks["sigstore"], blocks["sigstore-js"]
    assert "cosign verify-blob-attestation" in cosign and "--insecure-ignore-tlog=true" in cosign
    for needed in (f"--key {KEYS_PLACEHOLDER}/release.pub", '--bundle "$F.sigstore.json"', f"F={EXAMPLE}"):
        assert needed in cosign and needed in js
    assert cosign.rstrip().endswith('"$F"') and js.rstrip().endswith('"$F"')


def _in_toto(folder: Path, keys: Path) -> subprocess.CompletedProcess[str]:
    return run_block("in-toto", folder, keys, EXAMPLE)


def _swap_in_other_product(folder: Path, released: Repo) -> None:
    sbom = folder / f"ransomeye-agent-windows-{VERSION}.cdx.json"
    sbom.unlink()
    shutil.copy2(released.artifacts / f"ransomeye-core-{VERSION}.cdx.json", folder)


def _part_of_a_product(folder: Path, released: Repo) -> None:
    (folder / f"{EXAMPLE}.asc").unlink()


def _another_version(folder: Path, released: Repo) -> None:
    shutil.copy2(folder / EXAMPLE, folder / EXAMPLE.replace(VERSION, "1.0.1"))


def _no_product(folder: Path, released: Repo) -> None:
    for p in folder.glob(f"ransomeye-agent-windows-{VERSION}.*"):
        p.unlink()


def _two_products_one_partial(folder: Path, released: Repo) -> None:
    shutil.copy2(released.artifacts / f"ransomeye-core-{VERSION}.tar.gz", folder)


@pytest.mark.parametrize(
    ("mix", "reason"),
    [
        (_swap_in_other_product, f"ransomeye-agent-windows-{VERSION}.cdx.json"),
        (_part_of_a_product, f"{EXAMPLE}.asc"),
        (_another_version, EXAMPLE.replace(VERSION, "1.0.1")),
        (_no_product, "holds no product"),
        (_two_products_one_partial, f"ransomeye-core-{VERSION}.tar.gz.minisig"),
    ],
    ids=["another-products-sbom", "part-of-a-product", "another-version", "no-product", "one-whole-one-partial"],
)
def test_in_toto_verify_refuses_a_mixed_folder(
    released: Repo, keys: Path, tmp_path: Path, mix: object, reason: str
) -> None:
    folder = product_folder(released, tmp_path / "download", "agent (Windows)")
    assert callable(mix)
    mix(folder, released)
    proc = _in_toto(folder, keys)
    assert proc.returncode != 0
    assert reason in proc.stdout + proc.stderr
