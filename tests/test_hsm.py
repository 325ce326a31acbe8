"""The signing seam with keys on a PKCS#11 token (SoftHSM2), and its key-file and secrets paths.

A SoftHSM2 token in a temporary folder holds Ed25519 keys for the five roles;
``signer.py import-public`` writes their public halves; the whole pipeline then
signs every link, the layout, the provenance and the minisign signatures on the
token, and the stock ``in-toto-verify`` and ``minisign`` accept the release. No
private key file of this builder exists in that run. Each way the token can be wrong — PIN, key
id, module, a key that is not the published one — stops the release with one
message and exit 7 (2 for a malformed URI), and publishes nothing.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pkcs11.util.ec import encode_named_curve_parameters

from release import repository as tuf
from release.errors import BadInputError, SigningError
from release.keys import DEV_MARKER, ROLES, TUF_ONLINE_ROLES, generate_key, load_public_key
from release.signers import SOFTHSM_MODULE, load_role_key, pin_variable, uri_variable
from tests.conftest import Repo, make_repo, release_env
from tests.forge import verify

PIN = "2468-test-pin"
LABEL = "ransomeye-test"
ED25519_OID = "1.3.101.112"
SIGNER = ["release", "builder", "signer.py"]
# Every role's key on the token, the TUF repository's online keys (snapshot, timestamp) included.
KEY_IDS = {"owner": 1, "build": 2, "release": 3, "gates": 4, "package": 5, "snapshot": 6, "timestamp": 7}


@dataclass(frozen=True)
class Token:
    conf: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {"SOFTHSM2_CONF": str(self.conf), "PYKCS11LIB": SOFTHSM_MODULE}
        for role, key_id in KEY_IDS.items():
            env[uri_variable(role)] = f"hsm:{key_id}?label={LABEL}"
            env[pin_variable(role)] = PIN
        env.update(extra)
        return env


def _init_token(folder: Path) -> Token:
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", "1357-so"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read by the library when it loads, in this process
    try:
        token = pkcs11.lib(SOFTHSM_MODULE).get_token(token_label=LABEL)
        with token.open(rw=True, user_pin=PIN) as session:
            params = session.create_domain_parameters(
                pkcs11.KeyType.EC_EDWARDS,
                {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                local=True,
            )
            for role, key_id in KEY_IDS.items():
                params.generate_keypair(
                    mechanism=pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    store=True,
                    label=role,
                    id=pkcs11.util.biginteger(key_id),
                )
    finally:
        del os.environ["SOFTHSM2_CONF"]
    return Token(conf)


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Token:
    return _init_token(tmp_path_factory.mktemp("softhsm"))


def _signer(repo: Repo, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo.root.joinpath(*SIGNER)), *args, "--keys-dir", str(repo.keys)],
        cwd=repo.root, env=release_env(env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _token_repo(root: Path, token: Token) -> Repo:
    """A repository copy whose keys folder holds only the token's public keys (no private key file).

    The second builder keeps its own key files, in its own folder, as on its own machine; the
    code-signing key and certificates stay files (the codesign step does not use a token yet).
    """
    repo = make_repo(root)
    for p in repo.keys.iterdir():
        if p.name not in (".gitignore", "README.md") and not p.is_dir() and not p.name.startswith("codesign"):
            p.unlink()
    (repo.keys / DEV_MARKER).write_text("development keys on a test token\n")
    for role in ROLES + TUF_ONLINE_ROLES:
        proc = _signer(repo, "import-public", "--role", role, env=token.env())
        assert proc.returncode == 0, proc.stderr
    return repo


@pytest.fixture(scope="module")
def token_release(tmp_path_factory: pytest.TempPathFactory, token: Token) -> Repo:
    repo = _token_repo(tmp_path_factory.mktemp("hsm") / "ransomeye", token)
    proc = repo.build(env=token.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def test_import_public_writes_the_token_keys(token_release: Repo) -> None:
    names = sorted(p.name for p in token_release.keys.iterdir())
    # No role's private key file anywhere (the code-signing key and its certificates are files still: codesign*).
    assert not [n for n in names if n.endswith(".pem") and not n.startswith("codesign")], "no private key file"
    assert "release.asc" in names and "release.gpg" in names  # the OpenPGP forms, self-signed on the token
    for role in ROLES + TUF_ONLINE_ROLES:
        assert (token_release.keys / f"{role}.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "release.minisign.pub" in names


def test_a_release_signed_on_the_token_verifies_with_stock_tools(token_release: Repo, tmp_path: Path) -> None:
    download = shutil.copytree(token_release.artifacts, tmp_path / "download")
    proc = verify(download, token_release.keys / "owner.pub")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The TUF repository's root (the owner), targets (release), snapshot and timestamp: signed on the token too.
    published = tuf.load(tuf.repository_dir(token_release.root), load_public_key(token_release.keys / "owner.pub"))
    assert published.timestamp.signed.version == 1
    for role in ("snapshot", "timestamp"):
        assert tuf.role_public(published.root.signed, role) == load_public_key(token_release.keys / f"{role}.pub")
    for archive in sorted(download.glob("*.tar.gz")) + sorted(download.glob("*.zip")):
        mini = subprocess.run(
            ["minisign", "-V", "-p", str(token_release.keys / "release.minisign.pub"), "-m", str(archive)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert mini.returncode == 0, mini.stderr


@pytest.mark.parametrize(
    ("case", "change", "code", "message"),
    [
        ("wrong PIN", {pin_variable("build"): "0000"}, 7, "the token refused the PIN"),
        ("no PIN", {pin_variable("build"): ""}, 7, "the token needs a pin and none was given"),
        ("no key with that id", {uri_variable("build"): f"hsm:9?label={LABEL}"}, 7, "no single Ed25519 private key"),
        ("no such token", {uri_variable("build"): "hsm:2?label=elsewhere"}, 7, "No PKCS#11 token found"),
        ("no PKCS#11 module", {"PYKCS11LIB": ""}, 7, "set PYKCS11LIB"),
        ("another role's key", {uri_variable("build"): f"hsm:3?label={LABEL}"}, 7, "its public key rejects"),
        ("unknown scheme", {uri_variable("release"): "gpg:ABCDEF"}, 2, "unknown key URI scheme"),
        ("malformed hsm URI", {uri_variable("release"): "hsm:two"}, 2, "hsm:two"),
    ],
)
def test_a_wrong_token_setting_publishes_nothing(
    tmp_path: Path, token: Token, case: str, change: dict[str, str], code: int, message: str
) -> None:
    repo = _token_repo(tmp_path / "ransomeye", token)
    proc = repo.build(env=token.env(**change))
    assert proc.returncode == code, f"{case}: {proc.stdout}{proc.stderr}"
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert PIN not in proc.stdout + proc.stderr, "a PIN is never echoed"
    assert [p.name for p in repo.artifacts.iterdir()] == [".gitkeep"]


def test_import_public_refuses_to_replace_another_key(tmp_path: Path, token: Token) -> None:
    repo = _token_repo(tmp_path / "ransomeye", token)
    before = (repo.keys / "build.pub").read_bytes()
    proc = _signer(
        repo, "import-public", "--role", "build", env=token.env(**{uri_variable("build"): f"hsm:1?label={LABEL}"})
    )
    assert proc.returncode == 2 and "holds another key" in proc.stderr, proc.stderr
    assert (repo.keys / "build.pub").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({pin_variable("release"): "0000"}, 7, "PIN"),
        ({uri_variable("release"): f"hsm:99?label={LABEL}"}, 7, "with that id"),
        ({uri_variable("release"): "hsm:two"}, 2, "not a key on a token"),
        ({"PYKCS11LIB": ""}, 7, "set PYKCS11LIB"),
    ],
)
def test_import_public_writes_nothing_unless_the_token_signs(
    tmp_path: Path, token: Token, change: dict[str, str], code: int, message: str
) -> None:
    repo = make_repo(tmp_path / "ransomeye")
    for p in repo.keys.iterdir():
        if p.name not in (".gitignore", "README.md"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    proc = _signer(repo, "import-public", "--role", "release", env=token.env(**change))
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in repo.keys.iterdir()) == [".gitignore", "README.md"]


# --- key files: the passphrase from a callback, the environment or the terminal ---------------------


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    generate_key(keys, "release", passphrase=b"correct horse")
    return keys


def test_the_passphrase_from_a_callback(encrypted: Path) -> None:
    asked: list[str] = []

    def callback(what: str) -> str:
        asked.append(what)
        return "correct horse"

    key = load_role_key(encrypted, "release", secrets=callback, env={})
    assert asked == ["passphrase"]
    key.public.verify(key.sign(b"payload"), b"payload")
    with pytest.raises(SigningError, match="wrong passphrase"):
        load_role_key(encrypted, "release", secrets=lambda _: "battery staple", env={})


def test_an_unencrypted_key_never_asks(tmp_path: Path) -> None:
    generate_key(tmp_path, "build")

    def callback(what: str) -> str:
        raise AssertionError(f"asked for a {what}")

    assert load_role_key(tmp_path, "build", secrets=callback, env={}).role == "build"


def test_a_key_file_uri_elsewhere(tmp_path: Path) -> None:
    elsewhere = tmp_path / "vault"
    generate_key(elsewhere, "build")
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(elsewhere / "build.pub", keys / "build.pub")
    key = load_role_key(keys, "build", env={uri_variable("build"): f"keyfile:{elsewhere / 'build.pem'}"})
    assert key.uri.endswith("vault/build.pem")
    other = Ed25519PrivateKey.generate()
    with pytest.raises(BadInputError, match="unknown key URI scheme"):
        load_role_key(keys, "build", env={uri_variable("build"): "file2:/x"})
    del other


def test_the_passphrase_from_the_terminal(encrypted: Path, tmp_path: Path) -> None:
    """With no variable set, ``signer.py sign`` asks on the terminal (never argv) and signs."""
    repo = make_repo(tmp_path / "ransomeye")
    for p in encrypted.iterdir():
        shutil.copy2(p, repo.keys / p.name)
    (repo.keys / "release.pem").chmod(0o600)
    target = tmp_path / "file.bin"
    target.write_bytes(b"payload\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose terminal is the pty
        env = release_env()
        env.pop("RANSOMEYE_RELEASE_KEY_PASSPHRASE", None)
        os.execve(  # noqa: S606 - the signer, run as a user runs it
            sys.executable, [sys.executable, str(repo.root.joinpath(*SIGNER)), "sign", str(target),
                                   "--keys-dir", str(repo.keys)], env)  # fmt: skip
    output = b""
    sent = False
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not sent and b"passphrase of the release key" in output:
            os.write(fd, b"correct horse\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    assert sent, output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert b"correct horse" not in output, "the terminal does not echo the passphrase"
    assert (tmp_path / "file.bin.minisig").exists()


def test_no_terminal_and_no_variable_is_a_clear_error(encrypted: Path) -> None:
    with pytest.raises(SigningError, match="encrypted and no passphrase was given") as err:
        load_role_key(encrypted, "release", env={})
    assert "RANSOMEYE_RELEASE_KEY_PASSPHRASE" in err.value.diagnostics()


@pytest.mark.parametrize("planted", ["fifo", "directory", "symlink to a group-readable key"])
def test_what_stands_at_the_key_name_is_judged_on_what_is_read(tmp_path: Path, planted: str) -> None:
    """A FIFO cannot hang the release, a directory is no key, and a link is judged by the file it reaches."""
    keys = tmp_path / "keys"
    keys.mkdir()
    target = keys / "build.pem"
    if planted == "fifo":
        os.mkfifo(target)
    elif planted == "directory":
        target.mkdir()
    else:
        generate_key(tmp_path / "elsewhere", "build")
        (tmp_path / "elsewhere" / "build.pem").chmod(0o640)
        target.symlink_to(tmp_path / "elsewhere" / "build.pem")
    message = "readable by group or others" if planted.startswith("symlink") else "not a regular file"
    with pytest.raises(SigningError, match=message):
        load_role_key(keys, "build", env={})
