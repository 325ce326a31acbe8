"""The import layers of release/ and governance/: the contracts hold, every module is placed, no cycle.

The contracts are in ``pyproject.toml`` (``[tool.importlinter]``) and are
checked here with the stock ``lint-imports``, as a developer runs it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("release", "governance")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )  # fmt: skip


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _layered_modules() -> set[str]:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    names: set[str] = set()
    for layer in layers["layers"]:  # type: ignore[attr-defined]
        names |= {name.strip() for name in re.split(r"[|:]", layer)}
    return names


def test_the_contracts_hold() -> None:
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken\.", proc.stdout), proc.stdout


def test_every_module_is_in_a_layer() -> None:
    """A new module must be placed in a layer; a package's own ``__init__`` is covered by its modules."""
    graph = grimp.build_graph(*PACKAGES)
    layered = _layered_modules()
    unplaced = []
    for module in sorted(graph.modules):
        if module in PACKAGES or module in {"governance.gates"}:
            continue
        placed = any(module == name or module.startswith(name + ".") for name in layered)
        holds_placed = any(name.startswith(module + ".") for name in layered)  # a package whose modules are placed
        if not placed and not holds_placed:
            unplaced.append(module)
    assert unplaced == [], f"place these modules in a layer of pyproject.toml: {unplaced}"


def test_no_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert cycles == []


def test_a_library_module_importing_an_entry_point_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts are not vacuous: the engine importing the build command is refused."""
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "release" / "pipeline.py").open("a") as f:
        f.write("\nimport release.builder.build  # noqa: E402\n")
    with (copy / "release" / "archive.py").open("a") as f:
        f.write("\nimport release.pipeline  # noqa: E402\n")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=copy, capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert "release.pipeline -> release.builder.build" in proc.stdout
    assert "release.archive -> release.pipeline" in proc.stdout


# What makes a signature, or reads a private key, outside the signing seam (release/signers.py).
SIGNING_NAMES = {"CryptoSigner", "HSMSigner", "load_pem_private_key", "Ed25519PrivateKey", "pkcs11"}
# Where one of them may stand, and why: key generation writes new key files; nothing there signs.
SIGNING_ALLOWED = {"release/signers.py": SIGNING_NAMES, "release/keys.py": {"Ed25519PrivateKey"}}


def test_every_signature_goes_through_the_signing_seam() -> None:
    """No module but release/signers.py names a signer, a private-key loader or a token library."""
    found: list[str] = []
    for package in (*PACKAGES, "layouts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
            names |= {
                a.name.split(".")[-1]
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names
            }
            for name in sorted(names & SIGNING_NAMES - SIGNING_ALLOWED.get(rel, set())):
                found.append(f"{rel}: {name}")
    assert not found, "signing outside release/signers.py:\n" + "\n".join(found)
