"""The secrets gate sees credentials in the forms they ship in (governance/gates/secret_*.py).

A table of planted credentials, one or more per form: private keys (PEM,
OpenSSH, OpenPGP armoured and binary, PKCS#8 / PKCS#1 / SEC1 / PKCS#12 DER),
base64-encoded once or more, hex-encoded, inside gzip, bzip2, xz, zip and tar
(nested); cloud and service credentials; high-entropy values under secret-like
names in .env, INI, YAML, TOML and JavaScript (minified too). Each must fail
the gate naming the file and the rule. Negative controls (public keys,
certificates, integrity hashes, UUIDs, commit hashes...) must pass. Then the
allowlist, and the bounds: a zip or gzip bomb is refused in bounded time and
memory, never skipped.

Every key and token is generated at run time (keys with ``cryptography``) in
``tmp_path``; this file holds none, which the last test checks with the gate.
"""

from __future__ import annotations

import base64
import bz2
import datetime
import gzip
import io
import json
import lzma
import os
import random
import secrets
import shutil
import string
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import uuid
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from governance.gates import secret_scan
from governance.gates.crates import load_members, read_workspace_dependencies
from governance.gates.policy import load_policies
from governance.gates.report import GateResult
from release.products import load_workspace
from tests.gates_fixtures import CHECK_GATES, POLICIES, REPO, build_repo, edit, run_cli

ASSETS = "ui/dist/assets"
ALLOWLIST = f"{POLICIES}/secrets-allowlist.toml"
DASHES = "-" * 5
RNG = random.Random(20240611)  # reproducible filler, never a secret


def secrets_gate(root: Path) -> GateResult:
    """Run the secrets gate alone on ``root``, as the suite does."""
    workspace = load_workspace(root)
    policies = load_policies(root)
    members = load_members(root, workspace.members, read_workspace_dependencies(root))
    return secret_scan.check(root, workspace, policies.secrets, members)


def rules_of(result: GateResult, subject: str) -> set[str]:
    return {f.rule for f in result.findings if f.subject == subject}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository that passes every gate."""
    return build_repo(tmp_path / "repo")


# --------------------------------------------------------------------------- generated material


def rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: PrivateKeyTypes, fmt: ser.PrivateFormat) -> bytes:
    return key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption())


def der(key: PrivateKeyTypes, fmt: ser.PrivateFormat, password: bytes | None = None) -> bytes:
    encryption: ser.KeySerializationEncryption = (
        ser.BestAvailableEncryption(password) if password else ser.NoEncryption()
    )
    return key.private_bytes(ser.Encoding.DER, fmt, encryption)


def certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ransomeye test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def mpi(value: bytes) -> bytes:
    value = value.lstrip(b"\x00")
    return struct.pack(">H", len(value) * 8 - (8 - value[0].bit_length())) + value


def int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def pgp_packet(tag: int, body: bytes) -> bytes:
    """An OpenPGP packet, new format (RFC 9580 4.2)."""
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    n = len(body) - 192
    return bytes([0xC0 | tag, (n >> 8) + 192, n & 0xFF]) + body


def pgp_rsa_key(tag: int = 5) -> tuple[bytes, bytes]:
    """(secret key packet, public key packet) of a fresh unprotected v4 RSA key."""
    numbers = rsa_key().private_numbers()
    public = bytes([4]) + struct.pack(">I", int(time.time())) + bytes([1])
    public += mpi(int_bytes(numbers.public_numbers.n)) + mpi(int_bytes(numbers.public_numbers.e))
    p, q = sorted((numbers.p, numbers.q))
    secret = mpi(int_bytes(numbers.d)) + mpi(int_bytes(p)) + mpi(int_bytes(q)) + mpi(int_bytes(pow(p, -1, q)))
    body = public + b"\x00" + secret + struct.pack(">H", sum(secret) & 0xFFFF)
    return pgp_packet(tag, body), pgp_packet(6, public)


def pgp_ed25519_key(tag: int = 5) -> bytes:
    """The secret key packet of a fresh unprotected v4 EdDSA (Ed25519) key."""
    key = ed25519.Ed25519PrivateKey.generate()
    raw_public = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    raw_secret = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    oid = bytes.fromhex("2b06010401da470f01")
    public = bytes([4]) + struct.pack(">I", int(time.time())) + bytes([22, len(oid)]) + oid + mpi(b"\x40" + raw_public)
    secret = mpi(raw_secret)
    return pgp_packet(tag, public + b"\x00" + secret + struct.pack(">H", sum(secret) & 0xFFFF))


def pgp_armour(kind: str, packets: bytes) -> bytes:
    crc = 0xB704CE
    for byte in packets:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    body = base64.encodebytes(packets).decode()
    checksum = base64.b64encode((crc & 0xFFFFFF).to_bytes(3, "big")).decode()
    label = f"PGP {kind} KEY BLOCK"
    return f"{DASHES}BEGIN {label}{DASHES}\n\n{body}={checksum}\n{DASHES}END {label}{DASHES}\n".encode()


def user_id() -> bytes:
    return pgp_packet(13, b"RansomEye Test <test@example.org>")


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def tarred(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def minified(statement: str, size: int = 300_000) -> bytes:
    """One line of minified JavaScript, ``size`` bytes long, with ``statement`` in its middle."""
    names = ["a", "b", "c", "d", "e", "n", "r", "t"]
    filler: list[str] = []
    total = 0
    while total < size:
        n = RNG.choice(names)
        part = f"function {n}{total}({n}){{return {n}.map(function(x){{return x*{total % 97}}})}};"
        filler.append(part)
        total += len(part)
    half = len(filler) // 2
    return ("!function(){" + "".join(filler[:half]) + statement + "".join(filler[half:]) + "}();").encode()


def openssh_private_key() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())


def openssh_body() -> bytes:
    """The binary body of an OpenSSH private key, its armour removed (as a tool that decodes it would leave it)."""
    text = openssh_private_key().decode().splitlines()
    return base64.b64decode("".join(text[1:-1]))


def aws_credentials() -> bytes:
    key_id = "AKIA" + rand(UPPER_DIGITS, 16)
    # The gate takes a 40-character value for a secret key only with a digit and both cases in it (so that a
    # path or a word of that length beside a key id is not one): about 1 random value in 900 has no digit.
    secret = ""
    while not (any(c.isdigit() for c in secret) and secret.lower() != secret != secret.upper()):
        secret = rand(ALNUM + "/+", 40)
    return f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n".encode()


def gcp_service_account() -> bytes:
    key = pem(rsa_key(), ser.PrivateFormat.PKCS8).decode()
    document = {
        "type": "service" + "_account",
        "project_id": "ransomeye-test",
        "private_key_id": secrets.token_hex(20),
        "private_key": key,
        "client_email": "gate@ransomeye-test.iam.gserviceaccount.com",
        "client_id": str(RNG.randrange(10**20, 10**21)),
    }
    return json.dumps(document, indent=2).encode()


def azure_storage() -> bytes:
    key = b64(secrets.token_bytes(64)).decode()
    return f'conn = "DefaultEndpointsProtocol=https;AccountName=acct;Account{"Key"}={key};EndpointSuffix=x"\n'.encode()


def azure_service_bus() -> bytes:
    key = b64(secrets.token_bytes(32)).decode()
    name = "RootManageSharedAccessKey"
    return f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName={name};SharedAccess{'Key'}={key}\n".encode()


def jwt() -> bytes:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    token = part({"alg": "HS256", "typ": "JWT"}) + "." + part({"sub": rand(ALNUM, 12), "iat": 1}) + "."
    token += base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"const session = load('{token}');\n".encode()


Form = tuple[str, Callable[[], bytes], str]

FORMS: list[Form] = [
    # --- private keys as text
    ("pem-pkcs8-rsa.pem", lambda: pem(rsa_key(), ser.PrivateFormat.PKCS8), "pem-private-key"),
    ("pem-sec1-ec.pem", lambda: pem(ec.generate_private_key(ec.SECP256R1()), ser.PrivateFormat.TraditionalOpenSSL),
     "pem-private-key"),
    ("id_ed25519", openssh_private_key, "openssh-private-key"),
    ("id_ed25519.bin", openssh_body, "openssh-private-key-data"),
    ("key.asc", lambda: pgp_armour("PRIVATE", pgp_rsa_key()[0] + user_id()), "pem-private-key"),
    # --- private keys as binary
    ("pkcs8.der", lambda: der(rsa_key(), ser.PrivateFormat.PKCS8), "der-private-key"),
    ("pkcs1.der", lambda: der(rsa_key(), ser.PrivateFormat.TraditionalOpenSSL), "der-private-key"),
    ("sec1.der", lambda: der(ec.generate_private_key(ec.SECP384R1()), ser.PrivateFormat.TraditionalOpenSSL),
     "der-private-key"),
    ("pkcs8-encrypted.der", lambda: der(rsa_key(), ser.PrivateFormat.PKCS8, b"pw"), "der-private-key"),
    ("store.p12", lambda: pkcs12.serialize_key_and_certificates(b"k", (k := rsa_key()), certificate(k), None,
                                                                 ser.BestAvailableEncryption(b"pw")),
     "der-private-key"),
    ("model.bin", lambda: os.urandom(3000) + der(ec.generate_private_key(ec.SECP256R1()), ser.PrivateFormat.PKCS8)
     + os.urandom(3000), "der-private-key"),
    ("secring.gpg", lambda: pgp_rsa_key()[0] + user_id(), "pgp-private-key"),
    ("subkey.gpg", lambda: pgp_ed25519_key(tag=7), "pgp-private-key"),
    # --- encoded, once or more
    ("key.js", lambda: b"const k = '" + b64(pem(rsa_key(), ser.PrivateFormat.PKCS8)) + b"';\n", "pem-private-key"),
    ("key.b64", lambda: base64.encodebytes(pem(rsa_key(), ser.PrivateFormat.PKCS8)), "pem-private-key"),
    ("twice.txt", lambda: b64(b64(pem(rsa_key(), ser.PrivateFormat.PKCS8))) + b"\n", "pem-private-key"),
    ("urlsafe.txt", lambda: base64.urlsafe_b64encode(der(rsa_key(), ser.PrivateFormat.PKCS8)).rstrip(b"=") + b"\n",
     "der-private-key"),
    ("values.yaml", lambda: b"tls:\n  key: " + b64(der(ec.generate_private_key(ec.SECP256R1()),
                                                        ser.PrivateFormat.PKCS8)) + b"\n", "der-private-key"),
    ("embedded.rs", lambda: b'const K: &str = "' + der(ed25519.Ed25519PrivateKey.generate(),
                                                        ser.PrivateFormat.PKCS8).hex().encode() + b'";\n',
     "der-private-key"),
    ("bytes.rs", lambda: b"const K: [u8; 48] = [\n    " + b", ".join(
        b"0x%02x" % x for x in der(ed25519.Ed25519PrivateKey.generate(), ser.PrivateFormat.PKCS8)
    ) + b"\n];\n", "der-private-key"),
    ("utf16.txt", lambda: ("\ufeff" + pem(rsa_key(), ser.PrivateFormat.PKCS8).decode()).encode("utf-16-le"),
     "pem-private-key"),
    # --- archived and compressed, nested
    ("key.pem.gz", lambda: gz(pem(rsa_key(), ser.PrivateFormat.PKCS8)), "pem-private-key"),
    ("key.pem.bz2", lambda: bz2.compress(pem(rsa_key(), ser.PrivateFormat.PKCS8)), "pem-private-key"),
    ("key.pem.xz", lambda: lzma.compress(pem(rsa_key(), ser.PrivateFormat.PKCS8)), "pem-private-key"),
    ("keys.zip", lambda: zipped({"a/readme.txt": b"hello\n", "a/key.pem": pem(rsa_key(), ser.PrivateFormat.PKCS8)}),
     "pem-private-key"),
    ("keys.tar.gz", lambda: gz(tarred({"etc/tls/key.der": der(rsa_key(), ser.PrivateFormat.PKCS8)})),
     "der-private-key"),
    ("nested.txt", lambda: b64(gz(tarred({"inner.zip": zipped({"deep/.env": aws_credentials()})}))) + b"\n",
     "aws-key-pair"),
    ("app.jar", lambda: zipped({"META-INF/x.zip": zipped({"k.pem.gz": gz(pem(rsa_key(), ser.PrivateFormat.PKCS8))})}),
     "pem-private-key"),
    # --- cloud and service credentials
    ("credentials", aws_credentials, "aws-key-pair"),
    ("sa.json", gcp_service_account, "gcp-service-account"),
    ("azure.env", azure_storage, "azure-storage-key"),
    ("bus.txt", azure_service_bus, "azure-shared-access-key"),
    ("gh.yml", lambda: f"auth: {'ghp'}_{rand(ALNUM, 36)}\n".encode(), "github-token"),
    ("gh-fine.txt", lambda: f"{'github'}_pat_{rand(ALNUM, 22)}_{rand(ALNUM, 59)}\n".encode(), "github-token"),
    ("gl.txt", lambda: f"GITLAB={'glpat'}-{rand(ALNUM, 20)}\n".encode(), "gitlab-token"),
    ("slack.js", lambda: f"post('{'xoxb'}-{rand(string.digits, 12)}-{rand(ALNUM, 24)}')\n".encode(), "slack-token"),
    ("hook.js", lambda: f"post('https://{'hooks'}.slack.com/services/T{rand(UPPER_DIGITS, 10)}/"
     f"B{rand(UPPER_DIGITS, 10)}/{rand(ALNUM, 24)}')\n".encode(), "slack-webhook"),
    ("pay.js", lambda: f"charge('{'sk'}_live_{rand(ALNUM, 24)}')\n".encode(), "detect-secrets.StripeDetector"),
    ("sms.js", lambda: f"send('{'SK'}{rand(string.hexdigits.lower()[:16], 32)}')\n".encode(),
     "detect-secrets.TwilioKeyDetector"),
    ("session.js", jwt, "jwt"),
    ("npmrc", lambda: f"//registry.npmjs.org/:_{'auth'}Token={'npm'}_{rand(ALNUM, 36)}\n".encode(), "npm-token"),
    ("age.txt", lambda: f"{'AGE-SECRET'}-KEY-1{rand(UPPER_DIGITS, 58)}\n".encode(), "age-secret-key"),
    # --- high-entropy values under secret-like names
    (".env", lambda: f"APP_NAME=console\nDB_PASS{'WORD'}={secrets.token_urlsafe(24)}\n".encode(), "secret-assignment"),
    ("db.ini", lambda: f"[db]\nhost = localhost\npass{'word'} = {secrets.token_urlsafe(18)}\n".encode(),
     "secret-assignment"),
    ("config.yaml", lambda: f"oauth:\n  client_{'secret'}: \"{secrets.token_hex(20)}\"\n".encode(),
     "secret-assignment"),
    ("unquoted.yaml", lambda: f"service:\n  api_{'key'}: {secrets.token_urlsafe(30)}\n".encode(), "secret-assignment"),
    ("app.toml", lambda: f'[upstream]\n{"token"} = "{secrets.token_urlsafe(32)}"\n'.encode(), "secret-assignment"),
    ("settings.js", lambda: f"export const config = {{ api{'Key'}: '{secrets.token_urlsafe(24)}' }};\n".encode(),
     "secret-assignment"),
    ("bundle.min.js", lambda: minified(f'var s={{private{"Key"}:"{secrets.token_urlsafe(32)}",n:1}};'),
     "secret-assignment"),
    ("main.rs", lambda: f'const SIGNING_{"KEY"}: &str = "{secrets.token_hex(32)}";\n'.encode(), "secret-assignment"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "rule"), FORMS, ids=[f[0] for f in FORMS])
def test_a_credential_in_the_form_it_ships_in_fails_the_gate(
    repo: Path, name: str, make: Callable[[], bytes], rule: str
) -> None:
    rel = f"{ASSETS}/{name}"
    (repo / rel).write_bytes(make())
    result = secrets_gate(repo)
    assert not result.passed
    assert f"secrets.{rule}" in rules_of(result, rel), [f.message for f in result.findings]
    for f in result.findings:
        assert f.message.startswith(rel), f.message
        assert f.fingerprint is not None and len(f.fingerprint) == 16


def test_nested_findings_name_the_way_in(repo: Path) -> None:
    rel = f"{ASSETS}/nested.txt"
    (repo / rel).write_bytes(b"x\n" + b64(gz(tarred({"inner.zip": zipped({"deep/.env": aws_credentials()})}))))
    result = secrets_gate(repo)
    pair = next(f for f in result.findings if f.rule == "secrets.aws-key-pair")
    assert pair.line == 2
    assert pair.message == (
        f"{rel}:2 contains an AWS secret access key next to its access key id (aws-key-pair)"
        " at line 3 of base64 > gzip > tar member 'inner.zip' > zip member 'deep/.env'"
    )


def test_findings_never_show_the_secret(repo: Path, tmp_path: Path) -> None:
    token = rand(ALNUM, 36)
    password = secrets.token_urlsafe(24)
    credentials = aws_credentials()
    (repo / ASSETS / "a.js").write_text(f"x('{'ghp'}_{token}');\nconst pass{'word'} = '{password}';\n")
    (repo / ASSETS / "credentials").write_bytes(credentials)
    (repo / ASSETS / "k.pem.gz").write_bytes(gz(pem(rsa_key(), ser.PrivateFormat.PKCS8)))
    report = tmp_path / "gates.json"
    result = run_cli("--root", repo, "--report", report, "-v")
    assert result.returncode == 4
    shown = result.stdout + result.stderr + report.read_text()
    for secret in (token, password, *credentials.decode().split()[3::3], "BEGIN PRIVATE", "MII"):
        assert secret not in shown
    assert f"{ASSETS}/a.js:1 contains a GitHub token (github-token)" in shown
    assert f"{ASSETS}/a.js:2 contains a high-entropy value assigned to a secret-like name (secret-assignment)" in shown


def test_a_generic_hit_yields_to_a_specific_rule_on_the_same_line(repo: Path) -> None:
    (repo / ASSETS / "t.yml").write_text(f"token: {'ghp'}_{rand(ALNUM, 36)}\n")
    result = secrets_gate(repo)
    assert [f.rule for f in result.findings] == ["secrets.github-token"]


# --------------------------------------------------------------------------- negative controls


def public_material() -> dict[str, bytes]:
    key = rsa_key()
    cert = certificate(key)
    ed = ed25519.Ed25519PrivateKey.generate()
    public_packet = pgp_rsa_key()[1] + user_id()
    return {
        "public.pem": key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo),
        "public.der": key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo),
        "rsa-public.der": key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1),
        "id_ed25519.pub": ed.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH),
        "cert.pem": cert.public_bytes(ser.Encoding.PEM),
        "cert.der": cert.public_bytes(ser.Encoding.DER),
        "chain.p12": pkcs12.serialize_key_and_certificates(b"ca", None, cert, None, ser.NoEncryption()),
        "pubring.gpg": public_packet,
        "pubkey.asc": pgp_armour("PUBLIC", public_packet),
    }


def harmless_text() -> dict[str, bytes]:
    sri = "sha384-" + b64(secrets.token_bytes(48)).decode()
    commit = secrets.token_hex(20)
    request = str(uuid.uuid4())
    return {
        "index.html": f'<script src="app.js" integrity="{sri}" crossorigin="anonymous"></script>\n'.encode(),
        "loader.js": minified(f'var m={{src:"/x.js",integrity:"{sri}",requestId:"{request}"}};'),
        "build.json": json.dumps({"commit": commit, "sha256": secrets.token_hex(32), "build_id": request}).encode(),
        "build.yaml": f"commit: {commit}\nrelease_id: {request}\n".encode(),
        "version.rs": f'pub const GIT_COMMIT: &str = "{commit}";\npub const BUILD: &str = "{request}";\n'.encode(),
        "ui.js": (
            f"const passwordMinLength = 12;\nconst token_url = 'https://auth.example.org/oauth2/v1/{commit}';\n"
            "const secretName = 'ransomeye-db-2024';\nconst apiKeyHeader = 'X-Api-Key-2';\n"
            "const password = process.env.DB_PASSWORD;\nconst token = '${TOKEN}';\n"
            "label({ password: 'Enter your password (8 characters or more)' });\n"
        ).encode(),
        ".env.example": b"DB_PASSWORD=changeme\nAPI_KEY=<your-api-key>\nSECRET_KEY=${SECRET_KEY}\n",
        "fonts.css": b"@font-face{src:url(data:font/woff2;base64," + b64(os.urandom(4096)) + b")}\n",
        "noise.bin": RNG.randbytes(1 << 20),
        "assets.zip": zipped({"a.txt": b"plain text\n", "b.bin": RNG.randbytes(4096)}),
        "logs.tar.gz": gz(tarred({"log.txt": b"started\n" * 100})),
    }


@pytest.mark.parametrize("group", ["public", "harmless"])
def test_what_is_not_a_credential_passes(repo: Path, group: str) -> None:
    files = public_material() if group == "public" else harmless_text()
    for name, data in files.items():
        (repo / ASSETS / name).write_bytes(data)
    result = secrets_gate(repo)
    assert result.passed, [f.message for f in result.findings]


# --------------------------------------------------------------------------- the allowlist


def write_allowlist(repo: Path, *entries: str) -> None:
    (repo / ALLOWLIST).write_text("schema = 1\n" + "".join(f"\n[[allow]]\n{e}\n" for e in entries))


def test_an_allowlisted_finding_passes_and_is_shown_in_the_report(repo: Path, tmp_path: Path) -> None:
    (repo / ASSETS / "demo.js").write_text(f"// demo\nmap.load('{'AIza'}{rand(ALNUM, 35)}');\n")
    (repo / ASSETS / "fixtures.zip").write_bytes(zipped({"t/k.pem": pem(rsa_key(), ser.PrivateFormat.PKCS8)}))
    before = secrets_gate(repo)
    assert {f.rule for f in before.findings} == {"secrets.gcp-api-key", "secrets.pem-private-key"}
    zipped_key = next(f for f in before.findings if f.subject.endswith("fixtures.zip"))
    assert zipped_key.line is None and zipped_key.fingerprint is not None
    write_allowlist(
        repo,
        f'path = "{ASSETS}/demo.js"\nrule = "gcp-api-key"\nline = 2\n'
        'reason = "the public demo map key, browser-restricted"',
        f'path = "{ASSETS}/fixtures.zip"\nrule = "pem-private-key"\nfingerprint = "{zipped_key.fingerprint}"\n'
        'reason = "a throwaway key of the TLS fixture, never trusted anywhere"',
    )
    out = tmp_path / "gates.json"
    result = run_cli("--root", repo, "--report", out)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("PASS secrets:"))
    assert f"2 findings allowed by {ALLOWLIST}, each entry listed with its reason in the report" in line
    gate = json.loads(out.read_text())["gates"][3]
    assert gate["name"] == "secrets" and gate["findings"] == []
    assert gate["allowlist"] == [
        {
            "source": ALLOWLIST,
            "entry": "allow[0]",
            "path": f"{ASSETS}/demo.js",
            "rule": "gcp-api-key",
            "line": 2,
            "fingerprint": None,
            "reason": "the public demo map key, browser-restricted",
            "hides": 1,
        },
        {
            "source": ALLOWLIST,
            "entry": "allow[1]",
            "path": f"{ASSETS}/fixtures.zip",
            "rule": "pem-private-key",
            "line": None,
            "fingerprint": zipped_key.fingerprint,
            "reason": "a throwaway key of the TLS fixture, never trusted anywhere",
            "hides": 1,
        },
    ]


def test_an_allowlist_entry_hides_only_its_rule(repo: Path) -> None:
    (repo / ASSETS / "demo.js").write_text(f"x('{'AIza'}{rand(ALNUM, 35)}', '{'ghp'}_{rand(ALNUM, 36)}');\n")
    write_allowlist(repo, f'path = "{ASSETS}/demo.js"\nrule = "gcp-api-key"\nline = 1\nreason = "public demo key"')
    result = secrets_gate(repo)
    assert [f.rule for f in result.findings] == ["secrets.github-token"]


def test_a_stale_allowlist_entry_fails_the_gate(repo: Path) -> None:
    write_allowlist(repo, f'path = "{ASSETS}/gone.js"\nrule = "jwt"\nline = 3\nreason = "a test token, since removed"')
    result = secrets_gate(repo)
    assert [(f.subject, f.rule, f.message) for f in result.findings] == [
        (
            ALLOWLIST,
            "secrets.stale-allowlist",
            f"{ALLOWLIST}: allow[0] ({ASSETS}/gone.js, jwt, line 3) matches no finding: the allowlist is stale, "
            "remove the entry",
        )
    ]


A_JS = f'path = "{ASSETS}/a.js"\n'
MALFORMED_ENTRIES = [
    ("no-reason", A_JS + 'rule = "jwt"\nline = 1', "allow[0].reason is missing"),
    ("blank-reason", A_JS + 'rule = "jwt"\nline = 1\nreason = "  "', 'allow[0].reason = "  " is empty'),
    ("neither", A_JS + 'rule = "jwt"\nreason = "x"', "allow[0].line and fingerprint: give exactly one"),
    (
        "both",
        A_JS + 'rule = "jwt"\nline = 1\nfingerprint = "0123456789abcdef"\nreason = "x"',
        "allow[0].line and fingerprint: give exactly one",
    ),
    (
        "bad-fingerprint",
        A_JS + 'rule = "jwt"\nfingerprint = "secret"\nreason = "x"',
        'allow[0].fingerprint = "secret" is not a fingerprint',
    ),
    (
        "unknown-rule",
        A_JS + 'rule = "pem-privat-key"\nline = 1\nreason = "x"',
        'allow[0].rule = "pem-privat-key" is not a rule of the secrets gate',
    ),
    ("bad-path", 'path = "../a.js"\nrule = "jwt"\nline = 1\nreason = "x"', 'allow[0].path = "../a.js" must be a plain'),
    (
        "unknown-key",
        A_JS + 'rule = "jwt"\nline = 1\nreason = "x"\nexpires = 2030',
        "allow[0].expires is not a known key",
    ),
]


@pytest.mark.parametrize(
    ("entry", "expected"), [m[1:] for m in MALFORMED_ENTRIES], ids=[m[0] for m in MALFORMED_ENTRIES]
)
def test_a_malformed_allowlist_entry_is_bad_input(repo: Path, entry: str, expected: str) -> None:
    write_allowlist(repo, entry)
    result = run_cli("--root", repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"check_gates: error: {ALLOWLIST}: {expected}"), result.stderr


def test_a_missing_allowlist_is_bad_input(repo: Path) -> None:
    (repo / ALLOWLIST).unlink()
    result = run_cli("--root", repo)
    assert result.returncode == 2
    assert result.stderr.startswith(f"check_gates: error: {ALLOWLIST}: file not found")


def test_the_real_allowlist_hides_nothing() -> None:
    assert load_policies(REPO).secrets.allowlist.entries == ()


# --------------------------------------------------------------------------- the bounds


def deflated_zeros(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``mib`` MiB of zeros, and their CRC-32, made without compressing them all.

    After a full flush the compressor starts afresh, so every MiB of zeros
    compresses to the same bytes: one block, repeated, is the whole stream.
    """
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return block * mib + c.flush(zlib.Z_FINISH), crc


def zip_of_one(name: bytes, stream: bytes, crc: int, size: int) -> bytes:
    """A zip archive of one deflated member, written field by field (APPNOTE 4.3.7, 4.3.12, 4.3.16)."""
    fields = struct.pack("<HHHHIII", 0, 8, 0, 0x21, crc, len(stream), size)  # flags, method, time, date, sizes
    local = b"PK\x03\x04" + struct.pack("<H", 20) + fields + struct.pack("<HH", len(name), 0) + name
    central = b"PK\x01\x02" + struct.pack("<HH", 20, 20) + fields
    central += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    return local + stream + central + end


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """A zip and a gzip of 1 GiB of zeros each, about 1 MiB on disk."""
    size = 1 << 30
    stream, crc = deflated_zeros(size >> 20)
    gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack("<II", crc, size & 0xFFFFFFFF)
    return {"bomb.zip": zip_of_one(b"payload.bin", stream, crc, size), "bomb.gz": gzipped}


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.gz"])
def test_a_bomb_is_refused_in_bounded_time_and_memory(repo: Path, bombs: dict[str, bytes], name: str) -> None:
    (repo / ASSETS / name).write_bytes(bombs[name])
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = secrets_gate(repo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    rel = f"{ASSETS}/{name}"
    assert [(f.subject, f.rule) for f in result.findings] == [(rel, "secrets.expansion-bound")]
    step = "zip member 'payload.bin'" if name.endswith(".zip") else "gzip"
    fp = result.findings[0].fingerprint
    assert result.findings[0].message == (
        f"{rel}: {step} expands beyond 64 MiB (bounds.max-file-size); refused, not scanned (expansion-bound)"
        f" [fingerprint {fp}]"
    )
    # 1 GiB inside; the gate stops at the 64 MiB bound: time and memory stay small.
    assert elapsed < 30, elapsed
    assert peak < 160 << 20, peak


def test_nesting_deeper_than_the_bound_is_refused(repo: Path) -> None:
    data = pem(rsa_key(), ser.PrivateFormat.PKCS8)
    for level in range(12):
        data = zipped({f"level{level}.zip": data})
    (repo / ASSETS / "deep.zip").write_bytes(data)
    result = secrets_gate(repo)
    assert [f.rule for f in result.findings] == ["secrets.too-deep"]
    assert "is nested more than 8 levels deep (bounds.max-depth); not scanned (too-deep)" in result.findings[0].message


def test_the_expansion_of_one_file_is_bounded_in_all(repo: Path) -> None:
    edit(repo / POLICIES / "secrets.toml", 'max-expanded = "256M"', 'max-expanded = "3M"')
    (repo / ASSETS / "parts.zip").write_bytes(zipped({f"part{i}.bin": bytes(1 << 20) for i in range(5)}))
    result = secrets_gate(repo)
    # parts 0 to 2 are read (3 MiB in all); the rest is refused, each part named.
    assert [f.message for f in result.findings] == [
        f"{ASSETS}/parts.zip: zip member 'part{i}.bin' expands beyond the 3 MiB this file may expand to in all "
        f"(bounds.max-expanded); refused, not scanned (expansion-bound) [fingerprint {f.fingerprint}]"
        for i, f in zip((3, 4), result.findings, strict=True)
    ]


def test_too_many_members_is_refused(repo: Path) -> None:
    edit(repo / POLICIES / "secrets.toml", "max-members = 10000", "max-members = 10")
    (repo / ASSETS / "many.zip").write_bytes(zipped({f"f{i}.txt": b"x" for i in range(50)}))
    result = secrets_gate(repo)
    assert [f.rule for f in result.findings] == ["secrets.too-many-members"]


def test_a_file_larger_than_the_bound_is_still_scanned_line_by_line_and_reported(repo: Path) -> None:
    """Its first max-file-size bytes are scanned line by line (bounded time), and it is refused as too large."""
    edit(repo / POLICIES / "secrets.toml", 'max-file-size = "64M"', 'max-file-size = "1M"')
    big = pem(rsa_key(), ser.PrivateFormat.PKCS8) + b"\n" + RNG.randbytes(2 << 20).replace(b"\n", b" ")
    (repo / ASSETS / "big.bin").write_bytes(big)
    result = secrets_gate(repo)
    assert rules_of(result, f"{ASSETS}/big.bin") == {"secrets.pem-private-key", "secrets.too-large"}


MIB = 1 << 20
HOSTILE_LINES = {
    "assignments": b"token:" * (MIB // 6),
    "names": b"key=" * (MIB // 4),
    "jwt-prefixes": b"eyJ" * (MIB // 3),
    "der-headers": b"\x30\x82\x01\x00\x02\x01\x00" * (MIB // 7),
    "pgp-headers": b"\xc5\x40\x04aaaa\x01" * (MIB // 9),
    "aws-pairs": (f"{'AKIA'}ABCDEFGHIJKLMNOP\n".encode() + b"aB3/" * 10 + b"\n") * 10_000,
    "empty-lines": b"\n" * MIB,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LINES))
def test_a_hostile_file_costs_linear_time(repo: Path, name: str) -> None:
    """About 1 MiB each, built to make backtracking regexes or pairwise checks explode: seconds, not hours."""
    (repo / ASSETS / "hostile.txt").write_bytes(HOSTILE_LINES[name])
    started = time.monotonic()
    secrets_gate(repo)
    assert time.monotonic() - started < 8


def encrypted_zip() -> bytes:
    data = bytearray(zipped({"k.pem": b"cipher text"}))
    data[6] |= 1  # the local header's "encrypted" flag
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 1  # and the central directory's
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "detail"),
    [
        ("locked.zip", encrypted_zip(), "zip member 'k.pem' is encrypted; it cannot be scanned"),
        ("cut.gz", gz(os.urandom(100_000))[:200], "gzip cannot be decompressed"),
        ("data.zst", b"\x28\xb5\x2f\xfd" + os.urandom(64), "a zstd stream cannot be unpacked with the Python standard"),
        ("broken.zip", b"PK\x03\x04" + os.urandom(64), "zip is not a readable zip archive"),
    ],
    ids=["encrypted-zip", "truncated-gzip", "zstd", "broken-zip"],
)
def test_what_cannot_be_unpacked_is_a_finding(repo: Path, name: str, data: bytes, detail: str) -> None:
    (repo / ASSETS / name).write_bytes(data)
    result = secrets_gate(repo)
    assert [f.rule for f in result.findings] == ["secrets.unscannable"]
    assert detail in result.findings[0].message, result.findings[0].message


# --------------------------------------------------------------------------- the command and this file


def test_the_gates_run_with_a_plain_python3_through_the_venv(repo: Path) -> None:
    """``python3 governance/gates/check_gates.py`` outside the venv re-executes itself in it and works."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.is_file() or Path(sys.prefix) == Path(sys.base_prefix):
        pytest.skip("no interpreter outside the virtual environment")
    result = subprocess.run(
        [str(base), str(CHECK_GATES), "--root", str(repo)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS secrets:" in result.stdout


def test_without_the_venv_the_gates_say_how_to_set_it_up(tmp_path: Path) -> None:
    base = Path(sys.base_prefix) / "bin" / "python3"
    probe = subprocess.run([str(base), "-c", "import detect_secrets"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the base interpreter has detect-secrets itself")
    for rel in ("governance/gates/check_gates.py", "release/__init__.py", "release/bootstrap.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    result = subprocess.run(
        [str(base), str(tmp_path / "governance/gates/check_gates.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert "the Python environment is not set up (missing: detect_secrets)" in result.stderr
    assert "run `make setup`" in result.stderr


def test_this_test_module_plants_no_secret_literally(repo: Path) -> None:
    """The gate itself finds nothing in this file: every credential above is made at run time."""
    shutil.copy2(Path(__file__), repo / ASSETS / "test_secret_forms.py")
    result = secrets_gate(repo)
    assert result.passed, [f.message for f in result.findings]


def test_a_file_no_packager_would_ship_is_refused_unread(repo: Path) -> None:
    """A 3 GiB sparse file: both the secrets and the isolation gate refuse it from its size, without reading it."""
    from governance.gates.suite import run_gates

    with (repo / ASSETS / "sparse.bin").open("wb") as f:
        f.truncate(3 << 30)
    started = time.monotonic()
    report = run_gates(repo)
    elapsed = time.monotonic() - started
    failed = {g.name: [x.rule for x in g.findings] for g in report.gates if not g.passed}
    assert failed == {"isolation": ["isolation.too-large"], "secrets": ["secrets.too-large"]}, failed
    assert elapsed < 30, f"{elapsed:.1f} s: the file was read"
