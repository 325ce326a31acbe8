"""Authenticode signatures of Windows PE files (``.exe``, ``.dll``), made and checked by ``osslsigncode``.

Keys (in the keys folder):

* ``codesign-ca.pem`` – the code-signing CA certificate; public, what customers
  trust (``osslsigncode verify -CAfile codesign-ca.pem``);
* ``codesign-ca.key`` – the CA's private key (0600); only in a development folder,
  a production CA key lives offline;
* ``codesign.key``    – the code-signing private key (RSA, 0600, unencrypted PEM);
* ``codesign.crt``    – the code-signing (leaf) certificate, issued by the CA.

Signatures are RSA PKCS#1 v1.5 over SHA-256 (deterministic), with the signing
time taken from ``SOURCE_DATE_EPOCH`` and no timestamp server, so signing the
same file twice gives the same bytes. A rebuilder, who has no signing key,
reproduces a signed file by attaching the published signature to the file they
rebuilt (:func:`extract_signature`, :func:`attach_signature`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from release.errors import BadInputError, SigningError, SystemFailure, ToolchainError, VerificationError
from release.keys import DEV_MARKER

CA_CERT = "codesign-ca.pem"
CA_KEY = "codesign-ca.key"
LEAF_KEY = "codesign.key"
LEAF_CERT = "codesign.crt"
DEV_FILES = (CA_KEY, CA_CERT, LEAF_KEY, LEAF_CERT)

CA_NAME = "RansomEye development code signing CA"
LEAF_NAME = "RansomEye development code signing"
DESCRIPTION = "RansomEye"
RSA_BITS = 3072
MIN_RSA_BITS = 2048
NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC)

TOOL = "osslsigncode"
TOOL_HINT = "apt-get install osslsigncode"
TOOL_TIMEOUT = 120  # seconds; osslsigncode hashes the file once, a large installer takes a few seconds
PE_PROBE = 4096  # bytes read by is_pe: the DOS header and, in any file we make, the PE header
MAX_KEY_FILE = 64 * 1024
MAX_CERT_FILE = 256 * 1024
_MAX_REASON = 2000  # characters of osslsigncode's output quoted in an error

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


@dataclass(frozen=True)
class CodeSigner:
    """A checked code-signing identity: key, leaf certificate and CA, ready for :func:`sign_pe`.

    Made only by :func:`load_codesigner`, which checked that the key is an
    unencrypted RSA key (0600) matching ``cert``, that ``cert`` may sign code
    and was issued by ``ca``, and that ``ca`` is a CA.
    """

    key: Path
    cert: Path
    ca: Path
    fingerprint: str  # hex SHA-256 of the leaf certificate (DER)
    not_before: int  # the leaf's validity, Unix time: a signing time must fall inside
    not_after: int


# --- development keys --------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RansomEye"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _ca_certificate(ca_key: rsa.RSAPrivateKey) -> x509.Certificate:
    public = ca_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(CA_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _leaf_certificate(leaf_key: rsa.RSAPublicKey, ca_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(LEAF_NAME))
        .issuer_name(_name(CA_NAME))
        .public_key(leaf_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a new file (never one that exists, never through a link) with ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_dev_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise BadInputError(f"{path}: not an unencrypted PEM private key") from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BadInputError(f"{path}: not an RSA key")
    return key


def ensure_dev_codesign(keys_dir: Path) -> list[str]:
    """Create the development code-signing CA and leaf in ``keys_dir``; return the file names created.

    When none of the four files exists, all are made (RSA-3072 keys, mode 0600;
    certificates valid 2020-01-01 to 2040-01-01). When all exist, nothing is done.
    When only some exist, the folder must carry the ``DEVELOPMENT-KEYS`` marker
    (production keys are never mixed with development ones), and the missing
    files are made consistent with the present ones: a missing CA certificate
    is re-made from the CA key, a missing leaf certificate is issued for the
    leaf key. Never overwrites a file.

    Raises :class:`BadInputError` when some files exist and the marker does
    not, or when the missing ones cannot be made consistently (the CA key is
    gone but certificates it issued remain; a leaf certificate whose key is gone).
    """
    paths = {name: keys_dir / name for name in DEV_FILES}
    present = {name for name, path in paths.items() if path.exists() or path.is_symlink()}
    missing = [name for name in DEV_FILES if name not in present]
    if not missing:
        return []
    if present and not (keys_dir / DEV_MARKER).exists():
        raise BadInputError(
            f"{keys_dir}: holds code-signing files ({', '.join(sorted(present))}) but lacks {', '.join(missing)}",
            hint="install the missing production files; development keys are never mixed with production ones",
        )
    if CA_KEY in missing and (CA_CERT in present or LEAF_CERT in present):
        made_by_ca = ", ".join(sorted({CA_CERT, LEAF_CERT} & present))
        raise BadInputError(
            f"{paths[CA_KEY]}: missing, but {made_by_ca} made with it remain; a new CA key cannot extend them",
            hint=f"delete {made_by_ca} in {keys_dir} to make a new development CA and leaf",
        )
    if LEAF_KEY in missing and LEAF_CERT in present:
        raise BadInputError(
            f"{paths[LEAF_KEY]}: missing, but its certificate {paths[LEAF_CERT]} remains",
            hint=f"delete {paths[LEAF_CERT]} to make a new development code-signing key and certificate",
        )

    keys_dir.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    if CA_KEY in missing:
        ca_key = _new_key()
        _write_new(paths[CA_KEY], _key_pem(ca_key), 0o600)
        created.append(CA_KEY)
    else:
        ca_key = _load_dev_key(paths[CA_KEY])
    if CA_CERT in missing:
        _write_new(paths[CA_CERT], _cert_pem(_ca_certificate(ca_key)), 0o644)
        created.append(CA_CERT)
    if LEAF_KEY in missing:
        leaf_key = _new_key()
        _write_new(paths[LEAF_KEY], _key_pem(leaf_key), 0o600)
        created.append(LEAF_KEY)
    else:
        leaf_key = _load_dev_key(paths[LEAF_KEY])
    if LEAF_CERT in missing:
        _write_new(paths[LEAF_CERT], _cert_pem(_leaf_certificate(leaf_key.public_key(), ca_key)), 0o644)
        created.append(LEAF_CERT)
    marker = keys_dir / DEV_MARKER
    if not marker.exists():
        marker.write_text("These keys were generated for development. Never ship a release signed with them.\n")
    return created


# --- checking a signer ---------------------------------------------------------

_SETUP_HINT = (
    f"for development, delete the code-signing files and run `make keys` (ensure_dev_codesign); "
    f"for a release, install the production {LEAF_KEY}, {LEAF_CERT} and {CA_CERT}"
)


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        st = path.lstat()
    except FileNotFoundError as e:
        raise SigningError(f"{path}: {what} not found", hint=_SETUP_HINT) from e
    if not stat.S_ISREG(st.st_mode):
        raise SigningError(f"{path}: {what} is not a regular file", hint="replace it by the file itself (no link)")
    if st.st_size > limit:
        raise SigningError(f"{path}: {what} is too large ({st.st_size} bytes)", hint=_SETUP_HINT)
    return path.read_bytes()


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        st = path.lstat()
    except FileNotFoundError as e:
        raise SigningError(f"{path}: code-signing key not found", hint=_SETUP_HINT) from e
    if not stat.S_ISREG(st.st_mode):
        raise SigningError(f"{path}: the code-signing key is not a regular file", hint="replace it by the key itself")
    if st.st_mode & 0o077:
        raise SigningError(
            f"{path}: the code-signing key is readable by others (mode {stat.S_IMODE(st.st_mode):04o}, not 0600)",
            hint=f"chmod 600 {path}",
        )
    data = _read_bounded(path, MAX_KEY_FILE, "code-signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise SigningError(
            f"{path}: the code-signing key is encrypted; osslsigncode would need its passphrase on the command line",
            hint="keep the key unencrypted in a 0600 file on the signing machine, or in a PKCS#11 token",
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SigningError(f"{path}: not a PEM private key", hint=_SETUP_HINT) from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError(
            f"{path}: not an RSA key ({type(key).__name__.removeprefix('_')}); Authenticode signing here uses "
            "RSA PKCS#1 v1.5, whose signatures are deterministic",
            hint=f"make an RSA-{RSA_BITS} code-signing key and have the CA certify it",
        )
    if key.key_size < MIN_RSA_BITS:
        raise SigningError(
            f"{path}: an RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})",
            hint=f"make an RSA-{RSA_BITS} code-signing key and have the CA certify it",
        )
    return key


def _load_cert(path: Path, what: str) -> x509.Certificate:
    data = _read_bounded(path, MAX_CERT_FILE, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise SigningError(f"{path}: the {what} is not a PEM certificate", hint=_SETUP_HINT) from e


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey, key_path: Path) -> None:
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise SigningError(
            f"{path}: the certificate does not match the key {key_path}",
            hint=f"install the certificate the CA issued for {key_path.name}",
        )
    basic = _extension(cert, x509.BasicConstraints)
    if basic is not None and basic.ca:
        raise SigningError(f"{path}: a CA certificate, not a code-signing certificate", hint=_SETUP_HINT)
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise SigningError(
            f"{path}: the certificate does not allow digital signatures (KeyUsage digitalSignature)",
            hint="have the CA issue a code-signing certificate",
        )
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise SigningError(
            f"{path}: the certificate is not for code signing (no codeSigning extended key usage)",
            hint="have the CA issue a code-signing certificate",
        )


def _check_ca(path: Path, ca: x509.Certificate) -> None:
    basic = _extension(ca, x509.BasicConstraints)
    usage = _extension(ca, x509.KeyUsage)
    if basic is None or not basic.ca:
        raise SigningError(
            f"{path}: not a CA certificate (BasicConstraints ca=False or absent); it cannot sign code "
            "for verifiers, who would reject the chain",
            hint=f"{CA_CERT} must be the certificate of the CA that issued {LEAF_CERT}",
        )
    if usage is not None and not usage.key_cert_sign:
        raise SigningError(
            f"{path}: the CA certificate may not sign certificates (no keyCertSign); it cannot sign code",
            hint=f"{CA_CERT} must be the certificate of the CA that issued {LEAF_CERT}",
        )


def _check_issued(leaf_path: Path, leaf: x509.Certificate, ca_path: Path, ca: x509.Certificate) -> None:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise SigningError(
            f"{leaf_path}: not issued by the CA {ca_path} ({e or 'bad signature'})",
            hint=f"install the {CA_CERT} of the CA that issued {LEAF_CERT}, or have that CA issue a new one",
        ) from e


def load_codesigner(keys_dir: Path) -> CodeSigner:
    """Check the code-signing key, its certificate and the CA in ``keys_dir``; return a :class:`CodeSigner`.

    Everything is checked before anything is signed: the files exist; the key
    is a regular 0600 file holding an unencrypted RSA key (a passphrase is never
    taken from a command line); the certificate matches the key, allows digital
    signatures and code signing, and was issued by the CA; the CA certificate
    is a CA (BasicConstraints ca=True, keyCertSign). Reads files only.

    Raises :class:`SigningError` naming the file and how to fix it.
    """
    key_path, cert_path, ca_path = keys_dir / LEAF_KEY, keys_dir / LEAF_CERT, keys_dir / CA_CERT
    for path in (key_path, cert_path, ca_path):
        if not path.exists() and not path.is_symlink():
            raise SigningError(f"{path}: not found (code signing needs {LEAF_KEY}, {LEAF_CERT} and {CA_CERT})",
                               hint=_SETUP_HINT)  # fmt: skip
    key = _load_key(key_path)
    leaf = _load_cert(cert_path, "code-signing certificate")
    ca = _load_cert(ca_path, "CA certificate")
    _check_leaf(cert_path, leaf, key, key_path)
    _check_ca(ca_path, ca)
    _check_issued(cert_path, leaf, ca_path, ca)
    return CodeSigner(
        key=key_path,
        cert=cert_path,
        ca=ca_path,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        not_before=int(leaf.not_valid_before_utc.timestamp()),
        not_after=int(leaf.not_valid_after_utc.timestamp()),
    )


# --- running osslsigncode ----------------------------------------------------------


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``osslsigncode`` with ``args``; raise :class:`ToolchainError` if it is missing or hangs."""
    exe = shutil.which(TOOL)
    if exe is None:
        raise ToolchainError(f"{TOOL} not found on PATH", hint=TOOL_HINT)
    try:
        return subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise ToolchainError(f"{TOOL} {args[0]} did not finish in {TOOL_TIMEOUT} s") from e


def _reason(proc: subprocess.CompletedProcess[str]) -> str:
    """The lines of osslsigncode's output that say why it failed (it writes them to both streams), bounded."""
    lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines()]
    words = ("fail", "error", "mismatch", "no signature", "unable", "invalid", "cannot", "expired")
    keep = list(dict.fromkeys(line for line in lines if line and any(w in line.lower() for w in words)))
    text = "; ".join(keep) or "; ".join(line for line in lines if line)[-_MAX_REASON:]
    return (text[:_MAX_REASON] + " ...") if len(text) > _MAX_REASON else (text or f"exit status {proc.returncode}")


def _at(at: int | None) -> list[str]:
    return [] if at is None else ["-time", str(at)]


def _check_input(path: Path, error: type[BadInputError | VerificationError]) -> None:
    if not path.is_file():
        raise error(f"{path}: not found or not a regular file")
    if not is_pe(path):
        raise error(f"{path}: not a Windows PE file (no MZ/PE header)")


def _mode_of(src: Path) -> int:
    """0755 for an executable ``src``, else 0644: the normalised mode of a file made from it."""
    return 0o755 if src.stat().st_mode & 0o111 else 0o644


def _produce(out: Path, args: list[str], error: type[BadInputError | SigningError | VerificationError],
             what: str, mode: int) -> None:  # fmt: skip
    """Run ``osslsigncode`` with ``args`` + ``-out <temp>``, then rename the result, mode ``mode``, to ``out``.

    The temporary file is in a fresh folder next to ``out``: osslsigncode never
    writes through a link someone left at ``out``, and ``out`` is either the
    whole new file or untouched.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".authenticode-") as tmp:
        part = Path(tmp) / "out"
        proc = _run([*args, "-out", str(part)])
        if proc.returncode != 0 or not part.is_file():
            _check_room(out.parent, args)
            raise error(f"{what}: {_reason(proc)}")
        part.chmod(mode)
        os.replace(part, out)


def _check_room(folder: Path, args: list[str]) -> None:
    """osslsigncode names no errno: when its output could not fit, say that, as the system's failure."""
    source = Path(args[args.index("-in") + 1]) if "-in" in args else None
    need = source.stat().st_size if source is not None and source.is_file() else 0
    st = os.statvfs(folder)
    if st.f_bavail * st.f_frsize < need + (1 << 16):
        raise SystemFailure(
            f"{folder}: No space left on device for the output of osslsigncode ({need} bytes)",
            hint="free space on that file system (or move the release's staging elsewhere)",
        )


def check_ready(signer: CodeSigner, epoch: int) -> None:
    """Before any work: osslsigncode is installed, and ``epoch`` is inside the certificate's validity.

    Raises :class:`ToolchainError` (naming the package) or :class:`BadInputError`.
    """
    if shutil.which(TOOL) is None:
        raise ToolchainError(f"{TOOL} not found on PATH: it Authenticode-signs the Windows binaries", hint=TOOL_HINT)
    _check_validity(signer, epoch)


def _check_validity(signer: CodeSigner, epoch: int) -> None:
    if not signer.not_before <= epoch <= signer.not_after:
        raise BadInputError(
            f"signing time {epoch} is outside the validity of {signer.cert} ({signer.not_before}..{signer.not_after})",
            hint="set SOURCE_DATE_EPOCH to the release commit's time",
        )


def sign_pe(signer: CodeSigner, src: Path, dst: Path, epoch: int) -> None:
    """Write ``dst``: the PE file ``src`` with an Authenticode signature made at time ``epoch``.

    The signature is SHA-256 with RSA PKCS#1 v1.5, carries the leaf and CA
    certificates, the description "RansomEye", the signing time ``epoch``
    (``SOURCE_DATE_EPOCH``) and no countersignature from a timestamp server:
    the same ``src``, key and ``epoch`` give the same ``dst``, byte for byte.
    Replaces ``dst``; runs ``osslsigncode sign``.

    Raises :class:`BadInputError` if ``src`` is not a PE file or ``epoch`` is
    outside the certificate's validity, :class:`SigningError` if osslsigncode
    fails (its message included), :class:`ToolchainError` if it is missing.
    """
    _check_input(src, BadInputError)
    _check_validity(signer, epoch)
    args = [
        "sign",
        "-h", "sha256",
        "-time", str(epoch),
        "-certs", str(signer.cert),
        "-ac", str(signer.ca),
        "-key", str(signer.key),
        "-n", DESCRIPTION,
        "-in", str(src),
    ]  # fmt: skip
    _produce(dst, args, SigningError, f"{src}: osslsigncode sign failed", _mode_of(src))


def verify_pe(path: Path, ca: Path, at: int | None = None) -> None:
    """Check the Authenticode signature of the PE file ``path`` against the CA certificate ``ca`` only.

    The file's hash must match its signature and the signing certificate must
    chain to ``ca`` (not to the system's CAs). Our signatures carry no
    timestamp: osslsigncode then checks the chain's validity at the time ``at``
    (Unix time) if given, else now -- not at the signature's signing time --
    so a signature verifies while the certificates are valid (2020-2040 for
    the development ones) or with ``at`` inside their validity (a rebuilder
    may pass ``SOURCE_DATE_EPOCH``). No CRL distribution point is fetched
    (``-ignore-cdp``). Runs ``osslsigncode verify``; reads only.

    Raises :class:`VerificationError` with osslsigncode's reason when the file
    is unsigned, altered, or signed under another CA; :class:`BadInputError`
    when ``ca`` is missing; :class:`ToolchainError` if osslsigncode is missing.
    """
    if not ca.is_file():
        raise BadInputError(f"{ca}: CA certificate not found", hint=f"use the published {CA_CERT}")
    _check_input(path, VerificationError)
    proc = _run(["verify", "-CAfile", str(ca), "-ignore-cdp", *_at(at), "-in", str(path)])
    if proc.returncode != 0 or "Signature verification: ok" not in proc.stdout:
        raise VerificationError(f"{path}: Authenticode signature not valid: {_reason(proc)}")


# --- transplanting a signature (rebuilders) --------------------------------------


def extract_signature(signed: Path, out: Path) -> None:
    """Write the Authenticode signature (a DER PKCS#7 blob) of the signed PE file ``signed`` to ``out``.

    Replaces ``out``; runs ``osslsigncode extract-signature``. Raises
    :class:`BadInputError` if ``signed`` is not a signed PE file.
    """
    _check_input(signed, BadInputError)
    _produce(out, ["extract-signature", "-in", str(signed)], BadInputError, f"{signed}: no signature to extract", 0o644)


def strip_signature(signed: Path, out: Path) -> None:
    """Write to ``out`` the PE file ``signed`` without its Authenticode signature.

    Replaces ``out``; runs ``osslsigncode remove-signature``. Raises
    :class:`BadInputError` if ``signed`` is not a signed PE file.
    """
    _check_input(signed, BadInputError)
    _produce(
        out,
        ["remove-signature", "-in", str(signed)],
        BadInputError,
        f"{signed}: no signature to remove",
        _mode_of(signed),
    )


def unsigned_sha256(signed: Path) -> str:
    """The SHA-256 of the PE file ``signed`` without its Authenticode signature: the binary that was signed.

    ``osslsigncode remove-signature`` gives back the unsigned file byte for
    byte, so this equals the build's hash exactly when the signer added a
    signature to that binary and changed nothing else.
    """
    with tempfile.TemporaryDirectory(prefix="unsigned-") as tmp:
        out = Path(tmp) / signed.name
        strip_signature(signed, out)
        with out.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()


def attach_signature(unsigned: Path, signature: Path, out: Path, ca: Path, at: int | None = None) -> None:
    """Write to ``out`` the PE file ``unsigned`` with the signature ``signature`` (from :func:`extract_signature`).

    Attaching the signature extracted from a signed file to the same unsigned
    file reproduces the signed file byte for byte. osslsigncode checks the
    result as :func:`verify_pe` does, against the CA certificate ``ca`` (at
    time ``at`` if given, else now): a signature made for other bytes or
    under another CA is refused and ``out`` is not written. Replaces ``out``;
    runs ``osslsigncode attach-signature``.

    Raises :class:`VerificationError` if the signature does not fit the file,
    :class:`BadInputError` if an input is missing or not a PE file.
    """
    _check_input(unsigned, BadInputError)
    for path, what in ((signature, "signature file"), (ca, "CA certificate")):
        if not path.is_file():
            raise BadInputError(f"{path}: {what} not found")
    args = ["attach-signature", "-sigin", str(signature), "-CAfile", str(ca), *_at(at), "-in", str(unsigned)]
    _produce(out, args, VerificationError, f"{unsigned}: the signature {signature} does not fit", _mode_of(unsigned))


# --- recognising a PE file ------------------------------------------------------


def is_pe(path: Path) -> bool:
    """Whether ``path`` starts like a Windows PE file: ``MZ``, then ``PE\\0\\0`` where ``e_lfanew`` points.

    Reads at most the first few kilobytes; a missing or unreadable file is not a PE file.
    """
    try:
        with path.open("rb") as f:
            head = f.read(PE_PROBE)
    except OSError:
        return False
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    e_lfanew = int.from_bytes(head[0x3C:0x40], "little")
    return e_lfanew + 4 <= len(head) and head[e_lfanew : e_lfanew + 4] == b"PE\0\0"
