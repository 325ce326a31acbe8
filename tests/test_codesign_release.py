"""Bad code-signing and signature keys stop a release before any work, naming the file; nothing is published.

Each case breaks one key file of a repository copy as a careless operator
(or an attacker who can write the keys folder) would, runs ``build.py`` as a
user does, and checks the exit code, that the message names the file and
what is wrong, and that the release folder is exactly as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release import authenticode, openpgp
from release.errors import EXIT_CODES, BadInputError, ReleaseError, SigningError, ToolchainError
from release.signers import RoleKey
from tests.conftest import Repo
from tests.test_authenticode import damage_key

Break = Callable[[Path], None]


def _missing_key(keys: Path) -> None:
    (keys / authenticode.LEAF_KEY).unlink()


def _ed25519_key(keys: Path) -> None:
    shutil.copy2(keys / "release.pem", keys / authenticode.LEAF_KEY)


def _ca_not_a_ca(keys: Path) -> None:
    shutil.copy2(keys / authenticode.LEAF_CERT, keys / authenticode.CA_CERT)


def _key_readable_by_others(keys: Path) -> None:
    (keys / authenticode.LEAF_KEY).chmod(0o644)


def _openpgp_key_of_another(keys: Path) -> None:
    other = RoleKey.from_private("release", Ed25519PrivateKey.generate())
    armored = openpgp.armor(
        openpgp.transferable_public_key(other, openpgp.USER_ID, openpgp.DEV_KEY_CREATED), openpgp.PUBLIC_KEY_BLOCK
    )
    (keys / "release.asc").write_text(armored)


def _openpgp_key_not_a_key(keys: Path) -> None:
    (keys / "release.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n")


CASES: list[tuple[str, Break, type[ReleaseError], str]] = [
    ("code-signing key missing", _missing_key, SigningError, "codesign.key: not found"),
    ("code-signing key is Ed25519", _ed25519_key, SigningError, "not an RSA key"),
    ("code-signing key damaged", damage_key, SigningError, "codesign.key: the code-signing key is damaged"),
    ("the CA cannot sign code", _ca_not_a_ca, SigningError, "codesign-ca.pem"),
    ("code-signing key mode 0644", _key_readable_by_others, SigningError, "codesign.key"),
    ("release.asc holds another key", _openpgp_key_of_another, SigningError, "release.asc"),
    ("release.asc is not a key", _openpgp_key_not_a_key, BadInputError, "release.asc"),
]


@pytest.mark.parametrize(("breaks", "error", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_signing_key_stops_the_release_before_any_work(
    repo_copy: Repo, breaks: Break, error: type[ReleaseError], named: str
) -> None:
    breaks(repo_copy.keys)
    before = repo_copy.artifact_state()
    proc = repo_copy.build()
    assert proc.returncode == EXIT_CODES[error], proc.stdout + proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[1/" not in proc.stdout  # refused in the preflight: no step ran
    assert repo_copy.artifact_state() == before


def test_a_signing_time_outside_the_certificate_is_refused_first(repo_copy: Repo) -> None:
    proc = repo_copy.build(env={"SOURCE_DATE_EPOCH": "1500000000"})
    assert proc.returncode == EXIT_CODES[BadInputError], proc.stdout + proc.stderr
    assert "outside the validity" in proc.stderr and "[1/" not in proc.stdout


def test_osslsigncode_missing_names_the_package(repo_copy: Repo, tmp_path: Path) -> None:
    """A PATH with every tool the release needs but osslsigncode: the preflight names the Debian package."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for exe in Path(d).iterdir():
            if exe.name != authenticode.TOOL and not (tools / exe.name).is_symlink():
                (tools / exe.name).symlink_to(exe)
    cargo = Path.home() / ".cargo" / "bin"
    proc = repo_copy.build(env={"PATH": f"{cargo}:{tools}"})
    assert proc.returncode == EXIT_CODES[ToolchainError], proc.stdout + proc.stderr
    assert "apt-get install osslsigncode" in proc.stderr and "[1/" not in proc.stdout
