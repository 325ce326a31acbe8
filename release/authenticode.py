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

A signed file's hash without its signature (:func:`signed_digests`) is
computed in-process, in the same read as its own hash: the bytes
``osslsigncode remove-signature`` would write, without running it.

The codesign step signs and checks in-process, streamed
(:func:`sign_pe_streamed`, :func:`verify_pe_streamed`), since osslsigncode
maps the whole file: it writes the bytes ``osslsigncode sign`` writes, from
osslsigncode's own, checked signature of a stub PE file
(:func:`signing_template`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
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
# Beside the key: a note that these exact key bytes passed OpenSSL's RSA key check on an earlier run.
CHECKED_SUFFIX = ".checked"
_CHECKED_CONTEXT = b"RansomEye: these code-signing key bytes passed OpenSSL's RSA key check\n"
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
    return _read_file(path, limit, what)[0]


def _read_file(path: Path, limit: int, what: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file ``path`` (a link is not followed, a FIFO not waited on) and its status, both
    of the one file opened: what is judged is what is read."""
    not_regular = SigningError(f"{path}: {what} is not a regular file", hint="replace it by the file itself (no link)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise SigningError(f"{path}: {what} not found", hint=_SETUP_HINT) from e
    except OSError as e:  # ELOOP: a link; anything else this file cannot be opened for
        if path.is_symlink():
            raise not_regular from e
        raise SigningError(f"{path}: cannot read the {what}: {e.strerror or e}", hint=_SETUP_HINT) from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise not_regular
        data = f.read(limit + 1)
    if st.st_size > limit or len(data) > limit:
        raise SigningError(f"{path}: {what} is too large ({max(st.st_size, len(data))} bytes)", hint=_SETUP_HINT)
    return data, st


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    data, st = _read_file(path, MAX_KEY_FILE, "code-signing key")
    if st.st_mode & 0o077:
        raise SigningError(
            f"{path}: the code-signing key is readable by others (mode {stat.S_IMODE(st.st_mode):04o}, not 0600)",
            hint=f"chmod 600 {path}",
        )
    checked = _checked_before(path, data)
    try:
        # OpenSSL's check of the RSA numbers (a tenth of a second), unless these very bytes passed it before.
        key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=checked)
    except TypeError as e:
        raise SigningError(
            f"{path}: the code-signing key is encrypted; osslsigncode would need its passphrase on the command line",
            hint="keep the key unencrypted in a 0600 file on the signing machine, or in a PKCS#11 token",
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise _unreadable_key(path, data) from e
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
    if not checked:
        _note_checked(path, data)
    return key


def _check_note(data: bytes) -> bytes:
    return hashlib.sha256(_CHECKED_CONTEXT + data).hexdigest().encode("ascii") + b"\n"


def _checked_before(path: Path, data: bytes) -> bool:
    """Whether ``data``, the key file's bytes, passed OpenSSL's RSA key check before (:func:`_note_checked`).

    The note is the SHA-256 of those bytes (with a context string): any other
    bytes, a damaged key's too, are checked in full. A note that is missing,
    unreadable, a link, not a regular file, not this user's or open to others
    (not mode 0600) counts as none.
    """
    try:
        fd = os.open(path.with_name(path.name + CHECKED_SUFFIX), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        mine = stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
        return mine and os.read(fd, 128) == _check_note(data)
    except OSError:
        return False
    finally:
        os.close(fd)


def _note_checked(path: Path, data: bytes) -> None:
    """Note beside the key (mode 0600, written whole) that ``data`` passed the check; a folder that cannot be
    written to gets no note, and the next run checks the key again."""
    note = path.with_name(path.name + CHECKED_SUFFIX)
    tmp = note.with_name(f".{note.name}.part")
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_check_note(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, note)
        finally:
            tmp.unlink(missing_ok=True)


def _unreadable_key(path: Path, data: bytes) -> SigningError:
    """Why a key file did not load: an RSA key whose numbers do not agree (it parses unchecked), or no key."""
    try:
        unchecked = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return SigningError(f"{path}: not a PEM private key", hint=_SETUP_HINT)
    if isinstance(unchecked, rsa.RSAPrivateKey):
        return SigningError(
            f"{path}: the code-signing key is damaged: its RSA numbers do not agree",
            hint="restore the key from its backup, or make a new one and have the CA certify it",
        )
    return SigningError(f"{path}: not a PEM private key", hint=_SETUP_HINT)


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
    taken from a command line) whose RSA numbers agree (OpenSSL's key check:
    its primes are primes, its exponents theirs; once per key: the bytes that
    passed are noted beside it, in ``codesign.key.checked``, and the same
    bytes are not checked again); the certificate matches the key, allows
    digital signatures and code signing, and was issued by the CA; the CA
    certificate is a CA (BasicConstraints ca=True, keyCertSign). Reads
    files, and writes only that note.

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

    Byte for byte the SHA-256 of what ``osslsigncode remove-signature`` writes,
    computed in-process by :func:`signed_digests` (its refusals included), so
    this equals the build's hash exactly when the signer added a signature to
    that binary and changed nothing else.
    """
    return signed_digests(signed).unsigned_sha256


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


# --- a signed file's unsigned form, in-process ----------------------------------------------
#
# What ``osslsigncode remove-signature`` writes for a signed PE file (checked against it in
# tests/test_authenticode.py): the file cut where its certificate table starts, the table's
# data directory entry zeroed, and the optional header's CheckSum recomputed over the result.
# The CheckSum is the sum of the file's little-endian 16-bit words (the field itself as 0) with
# every carry folded back into 16 bits, plus the file's length.

READ_CHUNK = 1 << 20  # bytes read, hashed and summed at a time
_SUM_PIECE = 1 << 15  # bytes made into one integer to sum (even): one this size stays in the CPU's cache
MAX_HEADERS = 1 << 16  # the DOS, PE and optional headers and the section table lie in these first bytes
MAX_CERT_TABLE = 1 << 20  # a certificate table holds one signature of a few kilobytes; a larger one is refused
MAX_PE_SIZE = (1 << 32) - 1  # a PE file's offsets and sizes are 32-bit
_PE32, _PE32_PLUS = 0x10B, 0x20B
_WIN_CERT_PKCS_SIGNED_DATA = (0x0200, 0x0002)  # WIN_CERTIFICATE wRevision 2.0, wCertificateType PKCS#7


@dataclass(frozen=True)
class SignedDigests:
    """What one read of a signed PE file gives (see :func:`signed_digests`)."""

    sha256: str  # the file as it is
    unsigned_sha256: str  # the file without its signature, as ``osslsigncode remove-signature`` writes it


@dataclass(frozen=True)
class _Layout:
    """Where the fields that signing sets lie in a signed PE file (file offsets)."""

    checksum_at: int  # the optional header's CheckSum (4 bytes)
    entry_at: int  # the certificate table's data directory entry (8 bytes: its offset and size)
    table_at: int  # the certificate table, which ends the file
    table_size: int
    stored_checksum: int


class _Refused(Exception):
    """Why a file is not a PE file with an Authenticode signature to remove (its text names the fault)."""


def signed_digests(signed: Path) -> SignedDigests:
    """The SHA-256 of the signed PE file ``signed`` and of its unsigned form, from one read of the file.

    The unsigned form is what ``osslsigncode remove-signature`` writes, byte
    for byte: the file cut at its certificate table, with the table's
    directory entry zeroed and the PE CheckSum recomputed. It is hashed as the
    file streams by (``READ_CHUNK`` bytes at a time; no temporary file, no
    tool run). Its CheckSum, which comes early in the file, is first taken
    from the signed file's own (which osslsigncode wrote right) and checked
    once the pass is over; when it was wrong, the file is read a second time
    with the right one, and must not have changed in between.

    Refused before any hashing: anything but a regular file; a file that is
    not PE32 or PE32+ (truncated headers, ``e_lfanew`` outside the first
    ``PE_PROBE`` bytes, headers past the first ``MAX_HEADERS`` bytes, no
    certificate table entry); a file with no signature; a certificate table
    that is empty, misaligned, larger than ``MAX_CERT_TABLE``, overlapping the
    headers or a section's data, not exactly at the end of the file, or not a
    run of WIN_CERTIFICATE entries holding a PKCS#7 signature; a file of
    4 GiB or more. Memory stays within a few ``READ_CHUNK``s whatever the file.
    Reads only.

    Raises :class:`BadInputError` naming the file and the fault, also when
    the file changes while it is read.
    """
    try:
        fd = os.open(signed, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO put there never blocks the read
    except OSError as e:
        raise BadInputError(f"{signed}: cannot be read ({e.strerror})") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInputError(f"{signed}: not a regular file")
    with open(fd, "rb", buffering=0) as f:
        size = st.st_size
        try:
            layout = _layout(os.pread(fd, min(size, MAX_HEADERS), 0), size)
            table = os.pread(fd, layout.table_size, layout.table_at)
            if len(table) != layout.table_size:
                raise _Refused("it changed while being read")
            _check_table(table)
            guess = _predicted_checksum(layout, size, table)
            buffer = bytearray(min(READ_CHUNK, size))
            whole, unsigned, checksum = _one_pass(f, buffer, layout, size, guess)
            if checksum != guess:  # its stored CheckSum was wrong: hash the unsigned form again with the right one
                again, unsigned, check = _one_pass(f, buffer, layout, size, checksum)
                if (again, check) != (whole, checksum):
                    raise _Refused("it changed while being read")
        except _Refused as e:
            raise BadInputError(
                f"{signed}: not an Authenticode-signed PE file: {e}",
                hint="only a PE file as osslsigncode signed it (the codesign step), unchanged, is accepted",
            ) from e
    return SignedDigests(whole, unsigned)


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


@dataclass(frozen=True)
class _Headers:
    """What the headers of a PE file say about where signing writes (file offsets)."""

    checksum_at: int  # the optional header's CheckSum (4 bytes)
    entry_at: int  # the certificate table's data directory entry (8 bytes: its offset and size)
    headers: int  # the headers' end (the section table's, or SizeOfHeaders if larger)
    sections: tuple[tuple[int, int], ...]  # each section's raw data: (offset, size)

    def table(self, head: bytes) -> tuple[int, int]:
        """The certificate table's (offset, size) as its directory entry in ``head`` says."""
        return _u32(head, self.entry_at), _u32(head, self.entry_at + 4)


def _headers(head: bytes, size: int) -> _Headers:
    """Parse the headers of a PE file of ``size`` bytes from ``head``, its first ``MAX_HEADERS`` bytes or all.

    Raises :class:`_Refused` for a file that is not PE32 or PE32+ with a certificate table entry; reads nothing
    outside ``head``.
    """

    def need(end: int, what: str) -> None:
        if end > len(head):
            raise _Refused(f"truncated {what}" if len(head) == size else f"{what} past the first {MAX_HEADERS} bytes")

    if size > MAX_PE_SIZE:
        raise _Refused(f"{size} bytes, more than a PE file can hold")
    need(0x40, "DOS header")
    if head[:2] != b"MZ":
        raise _Refused("no DOS header (MZ)")
    pe = _u32(head, 0x3C)
    if not 0x40 <= pe <= PE_PROBE - 4:
        raise _Refused(f"e_lfanew {pe:#x} is out of range (0x40 to {PE_PROBE - 4:#x})")
    need(pe + 4, "PE header")
    if head[pe : pe + 4] != b"PE\0\0":
        raise _Refused(f"no PE signature at e_lfanew {pe:#x}")
    opt = pe + 24  # the optional header, after the signature and the 20-byte COFF header
    need(opt + 2, "COFF header")
    sections, opt_size, magic = _u16(head, pe + 6), _u16(head, pe + 20), _u16(head, opt)
    if magic not in (_PE32, _PE32_PLUS):
        raise _Refused(f"optional header magic {magic:#06x} is neither PE32 ({_PE32:#x}) nor PE32+ ({_PE32_PLUS:#x})")
    directories = opt + (96 if magic == _PE32 else 112)
    entry_at = directories + 4 * 8  # data directory 4: the certificate table
    if opt + opt_size < entry_at + 8:
        raise _Refused(f"an optional header of {opt_size} bytes holds no certificate table entry")
    headers_end = opt + opt_size + 40 * sections
    need(headers_end, "headers")
    if _u32(head, directories - 4) < 5:  # NumberOfRvaAndSizes
        raise _Refused(f"NumberOfRvaAndSizes is {_u32(head, directories - 4)}: no certificate table entry")
    raw = tuple(
        (_u32(head, opt + opt_size + 40 * i + 20), _u32(head, opt + opt_size + 40 * i + 16)) for i in range(sections)
    )
    return _Headers(opt + 64, entry_at, max(headers_end, _u32(head, opt + 60)), raw)


def _layout(head: bytes, size: int) -> _Layout:
    """Parse the headers of a signed PE file of ``size`` bytes from ``head``, its first ``MAX_HEADERS`` bytes or all.

    Raises :class:`_Refused` (see :func:`signed_digests`); reads nothing outside ``head``.
    """
    h = _headers(head, size)
    table_at, table_size = h.table(head)
    where = f"the certificate table (offset {table_at}, {table_size} bytes)"
    if table_at == 0 and table_size == 0:
        raise _Refused("no signature (its certificate table entry is empty)")
    if table_at == 0 or table_size == 0:
        raise _Refused(f"{where} is empty or nowhere")
    if table_at + table_size > size:
        raise _Refused(f"{where} runs past the end of the file ({size} bytes)")
    if table_at + table_size < size:
        raise _Refused(f"{where} does not end the file: {size - table_at - table_size} bytes follow it")
    if table_at % 8:
        raise _Refused(f"{where} is not 8-byte aligned")
    if table_size > MAX_CERT_TABLE:
        raise _Refused(f"{where} is larger than {MAX_CERT_TABLE} bytes")
    if table_at < h.headers:
        raise _Refused(f"{where} overlaps the headers (the first {h.headers} bytes)")
    for i, (raw_at, raw_size) in enumerate(h.sections):
        if raw_size and raw_at + raw_size > table_at:
            raise _Refused(f"{where} overlaps the data of section {i + 1} (offset {raw_at}, {raw_size} bytes)")
    return _Layout(h.checksum_at, h.entry_at, table_at, table_size, _u32(head, h.checksum_at))


def _check_table(table: bytes) -> None:
    """Refuse a certificate table that is not a run of 8-byte aligned WIN_CERTIFICATE entries with a PKCS#7 one.

    Each entry advances at least 8 bytes: at most ``MAX_CERT_TABLE / 8`` steps.
    """
    at, signature = 0, False
    while at < len(table):
        length = _u32(table, at)
        if length < 8 or length > len(table) - at:
            raise _Refused(f"its certificate table has an entry of {length} bytes at {at}, which does not fit")
        signature = signature or (_u16(table, at + 4), _u16(table, at + 6)) == _WIN_CERT_PKCS_SIGNED_DATA
        at += -(-length // 8) * 8
    if at != len(table):
        raise _Refused("its certificate table's last entry is not padded to 8 bytes")
    if not signature:
        raise _Refused("its certificate table holds no PKCS#7 signature")


def _sum16(data: bytes | bytearray | memoryview, at: int) -> int:
    """The sum, modulo 0xFFFF, of the little-endian 16-bit words that ``data``, at file offset ``at``, adds to a file.

    As 2**16 = 1 (mod 0xFFFF), whole words sum like the number they spell in
    little-endian order, and so do pieces of even length: the numbers of the
    pieces are added (at C speed) and reduced once. A byte at an odd offset
    counts 2**8 times its value, so pieces of a file at any offsets add up to
    the file's sum (a file of even length: the CheckSum ignores a last odd byte).
    """
    with memoryview(data) as view:
        total = sum(int.from_bytes(view[i : i + _SUM_PIECE], "little") for i in range(0, len(view), _SUM_PIECE))
    return total % 0xFFFF * (0x100 if at % 2 else 1) % 0xFFFF


def _checksum(words: int, length: int) -> int:
    """The PE CheckSum of a file of even ``length`` whose words (the field as 0) sum to ``words`` modulo 0xFFFF.

    Folding carries back into 16 bits gives 0xFFFF, never 0, for a nonzero
    multiple of 0xFFFF (a file starting with ``MZ`` never sums to 0).
    """
    return ((words % 0xFFFF or 0xFFFF) + length) & 0xFFFFFFFF


def _predicted_checksum(layout: _Layout, size: int, table: bytes) -> int:
    """The CheckSum the unsigned form has if the signed file's stored CheckSum is right (osslsigncode writes it so).

    The signed file's word sum, less its certificate table's and that table's
    directory entry's. Only a guess, written before the words are summed:
    :func:`signed_digests` checks it against the sum.
    """
    entry = layout.table_at.to_bytes(4, "little") + layout.table_size.to_bytes(4, "little")
    signed = layout.stored_checksum - size  # the folded word sum of the signed file, if the field is right
    words = signed - _sum16(entry, layout.entry_at) - _sum16(table, layout.table_at)
    return _checksum(words, layout.table_at)


def _chunks(f: io.FileIO, buffer: bytearray, size: int) -> Iterator[tuple[memoryview, int]]:
    """The first ``size`` bytes of ``f``, read from its start into ``buffer`` piece by piece, with their offsets.

    Raises :class:`_Refused` when the file ends before ``size`` bytes.
    """
    view, offset = memoryview(buffer), 0
    f.seek(0)
    while offset < size:
        want = min(len(view), size - offset)
        if _read_full(f, view[:want]) != want:
            raise _Refused("it changed while being read")
        yield view[:want], offset
        offset += want


def _read_full(f: io.FileIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _one_pass(f: io.FileIO, buffer: bytearray, layout: _Layout, size: int, checksum: int) -> tuple[str, str, int]:
    """Read the file once: its SHA-256, the SHA-256 of its unsigned form with ``checksum`` as its CheckSum, and the
    CheckSum that form really has.

    Raises :class:`_Refused` when the file is not ``size`` bytes any more.
    """
    whole, unsigned = hashlib.sha256(), hashlib.sha256()
    end, words = layout.table_at, 0
    for chunk, offset in _chunks(f, buffer, size):
        whole.update(chunk)
        part = chunk[: max(0, end - offset)]
        if offset == 0:  # the headers: the CheckSum and the certificate table's entry are in the first chunk
            head = bytearray(part)
            head[layout.checksum_at : layout.checksum_at + 4] = bytes(4)
            head[layout.entry_at : layout.entry_at + 8] = bytes(8)
            words += _sum16(head, 0)
            head[layout.checksum_at : layout.checksum_at + 4] = checksum.to_bytes(4, "little")
            unsigned.update(head)
        elif part:
            words += _sum16(part, offset)
            unsigned.update(part)
    if f.read(1):
        raise _Refused("it changed while being read")
    return whole.hexdigest(), unsigned.hexdigest(), _checksum(words, end)


# --- signing and checking in-process, streamed -----------------------------------------------
#
# ``osslsigncode sign`` and ``verify`` map the whole PE file: their memory grows with it. The
# codesign step signs in-process instead, READ_CHUNK bytes at a time, and writes the bytes
# ``osslsigncode sign`` writes (tests/test_authenticode.py compares them byte for byte). The
# PKCS#7 SignedData is osslsigncode's own: once per run, osslsigncode signs a stub PE file with
# the same key, certificates, description and time, and ``osslsigncode verify`` checks it
# (:func:`signing_template`). A binary's signature is that one with the three values that depend
# on the file put in: its Authenticode digest, the message digest of the SpcIndirectDataContent
# that holds it, and the RSA PKCS#1 v1.5 signature of the signed attributes. The signed file is
# the binary padded with zeros to 8 bytes, then the certificate table (one WIN_CERTIFICATE,
# padded to 8 bytes), with the table's directory entry and the CheckSum set.

STUB_SIZE = 0x400  # the stub PE file osslsigncode signs: the headers and one section
PE_HEADER = 0x200  # the headers of a minimal PE file (see :func:`minimal_pe_header`)


def minimal_pe_header(size: int) -> bytes:
    """The headers of a minimal PE32+ (x86-64) file of ``size`` bytes: one data section holds the rest."""
    raw = max((size - PE_HEADER) // 0x200 * 0x200, 0x200)
    virtual = (raw + 0xFFF) // 0x1000 * 0x1000
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x8664, 1, 0, 0, 0, 240, 0x22)
    optional = struct.pack("<HBBIIIII", 0x20B, 14, 0, raw, 0, 0, 0x1000, 0x1000)
    image = 0x1000 + virtual
    optional += struct.pack("<QIIHHHHHHIIIIHHQQQQII", 0x140000000, 0x1000, 0x200, 6, 0, 0, 0, 6, 0, 0,
                            image, PE_HEADER, 0, 3, 0x8160, 1 << 20, 0x1000, 1 << 20, 0x1000, 0, 16)  # fmt: skip
    optional += bytes(16 * 8)  # no data directories
    section = struct.pack("<8sIIIIIIHHI", b".data", virtual, 0x1000, raw, PE_HEADER, 0, 0, 0, 0, 0xC0000040)
    head = bytes(dos) + coff + optional + section
    return head + bytes(PE_HEADER - len(head))


@dataclass(frozen=True)
class SigningTemplate:
    """osslsigncode's signature of the stub, and where in it the values that depend on the file lie."""

    signer: CodeSigner
    epoch: int
    der: bytes  # the PKCS#7 ContentInfo (DER)
    digest: bytes  # the stub's Authenticode digest (SHA-256), once in ``der``
    content: bytes  # the SpcIndirectDataContent's contents, which the message digest covers; once in ``der``
    message_digest: bytes  # once in ``der``
    attrs: bytes  # the signed attributes as ``der`` holds them ([0] IMPLICIT); once in ``der``
    signature: bytes  # once in ``der``
    public_key: rsa.RSAPublicKey  # the leaf certificate's


class _Pass:
    """One read of an unsigned PE file: its Authenticode digest (SHA-256) and its word sum, the CheckSum as 0."""

    def __init__(self, h: _Headers) -> None:
        self._h = h
        self.digest = hashlib.sha256()
        self.words = 0

    def add(self, chunk: memoryview, offset: int) -> None:
        """Take the file's bytes at ``offset`` (the first call's chunk holds all the headers)."""
        if offset == 0:
            head = bytearray(chunk)
            c, e = self._h.checksum_at, self._h.entry_at
            self.digest.update(head[:c])
            self.digest.update(head[c + 4 : e])
            self.digest.update(head[e + 8 :])
            head[c : c + 4] = bytes(4)
            head[e : e + 8] = bytes(8)
            self.words += _sum16(head, 0)
        else:
            self.digest.update(chunk)
            self.words += _sum16(chunk, offset)


def _pkcs7_parts(der: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """From a PKCS#7 Authenticode signature: the SpcIndirectDataContent's contents, the message digest attribute's
    value, the signed attributes ([0] IMPLICIT, as encoded) and the signature. Raises :class:`_Refused`."""
    from asn1crypto import cms  # type: ignore[import-untyped]  # securesystemslib's dependency; PKCS#7 here only

    try:
        signed = cms.ContentInfo.load(der)["content"]
        content = signed["encap_content_info"]["content"].contents
        (info,) = signed["signer_infos"]
        attrs = info["signed_attrs"]
        digests = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
        signature = info["signature"].native
        if len(digests) != 1 or info["digest_algorithm"]["algorithm"].native != "sha256":
            raise _Refused("its signature has no single SHA-256 message digest")
        return bytes(content), digests[0], attrs.dump(), signature
    except (ValueError, TypeError, KeyError) as e:
        raise _Refused(f"its signature is not a PKCS#7 SignedData ({e})") from e


def _signature_of(data: bytes) -> bytes:
    """The PKCS#7 signature (DER, its padding cut) in a signed PE file's certificate table ``data``."""
    _check_table(data)
    der = data[8 : _u32(data, 0)]
    return der[: _der_length(der)]


def signing_template(signer: CodeSigner, epoch: int) -> SigningTemplate:
    """Have ``osslsigncode sign`` sign a stub PE file with ``signer`` at ``epoch``, check it with ``osslsigncode
    verify``, and take its signature apart (see the section comment).

    The stub's Authenticode digest, computed here, must be the one osslsigncode
    signed, and its message digest the SpcIndirectDataContent's: this run's
    osslsigncode and this code agree on both before anything is signed.
    Raises :class:`SigningError` when they do not, or as :func:`sign_pe` does.
    """
    stub = minimal_pe_header(STUB_SIZE) + bytes(STUB_SIZE - PE_HEADER)
    with tempfile.TemporaryDirectory(prefix="ransomeye-authenticode-") as tmp:
        src, dst = Path(tmp) / "stub.exe", Path(tmp) / "stub-signed.exe"
        src.write_bytes(stub)
        sign_pe(signer, src, dst, epoch)
        verify_pe(dst, signer.ca, at=epoch)
        signed = dst.read_bytes()
    h = _headers(stub, len(stub))
    digest = _Pass(h)
    digest.add(memoryview(stub), 0)
    mismatch = "osslsigncode's signature of a stub PE file is not what this release tool makes of it"
    other_tool = f"install Debian's {TOOL} ({TOOL_HINT}); report the version that differs"
    try:
        layout = _layout(signed[:MAX_HEADERS], len(signed))
        der = _signature_of(signed[layout.table_at :])
        content, message_digest, attrs, signature = _pkcs7_parts(der)
    except _Refused as e:
        raise SigningError(f"{mismatch}: {e}", hint=other_tool) from e
    stub_digest = digest.digest.digest()
    if not content.endswith(stub_digest) or hashlib.sha256(content).digest() != message_digest:
        raise SigningError(f"{mismatch}: the digests differ", hint=other_tool)
    for part in (stub_digest, content, message_digest, attrs, signature):
        if der.count(part) != 1:
            raise SigningError(f"{mismatch}: a value it signs is not where it is expected")
    leaf = _load_cert(signer.cert, "code-signing certificate").public_key()
    if not isinstance(leaf, rsa.RSAPublicKey):
        raise SigningError(f"{signer.cert}: not an RSA certificate")
    return SigningTemplate(signer, epoch, der, stub_digest, content, message_digest, attrs, signature, leaf)


def _der_length(der: bytes) -> int:
    """The length of the DER value that starts ``der`` (tag, length and contents)."""
    if len(der) < 2:
        return len(der)
    first = der[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(der[2 : 2 + n], "big")


def _signing_key(template: SigningTemplate) -> rsa.RSAPrivateKey:
    """The code-signing key, which :func:`load_codesigner` checked; it must still match the leaf certificate."""
    data = _read_bounded(template.signer.key, MAX_KEY_FILE, "code-signing key")
    try:
        # Checked (the slow RSA consistency check included) by load_codesigner; here it must match the certificate.
        key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except (TypeError, ValueError, UnsupportedAlgorithm) as e:
        raise SigningError(f"{template.signer.key}: not the code-signing key that was checked", hint=_SETUP_HINT) from e
    if (
        not isinstance(key, rsa.RSAPrivateKey)
        or key.public_key().public_numbers() != template.public_key.public_numbers()
    ):
        raise SigningError(f"{template.signer.key}: not the key of {template.signer.cert}", hint=_SETUP_HINT)
    return key


def signature_for(template: SigningTemplate, digest: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """The PKCS#7 signature osslsigncode makes for a file whose Authenticode digest is ``digest``."""
    content = template.content[: -len(digest)] + digest
    message_digest = hashlib.sha256(content).digest()
    attrs = template.attrs.replace(template.message_digest, message_digest)
    signature = key.sign(b"\x31" + attrs[1:], padding.PKCS1v15(), hashes.SHA256())  # signed as a SET OF
    return (
        template.der.replace(template.content, content)
        .replace(template.attrs, attrs)
        .replace(template.signature, signature)
    )


def _certificate_table(der: bytes) -> bytes:
    length = -(-(8 + len(der)) // 8) * 8
    return struct.pack("<IHH", length, *_WIN_CERT_PKCS_SIGNED_DATA) + der + bytes(length - 8 - len(der))


def sign_pe_streamed(template: SigningTemplate, src: Path, dst: Path, expected_sha256: str | None = None) -> None:
    """Write ``dst``: ``src`` signed as ``osslsigncode sign`` signs it with the template's signer and time.

    ``src`` is read once, ``READ_CHUNK`` bytes at a time, and written to a
    temporary file beside ``dst`` that replaces ``dst`` only when complete.
    With ``expected_sha256``, the bytes read must have that SHA-256, checked
    before anything is signed (:class:`VerificationError`): what is signed
    is what was checked, read once through one descriptor.
    Refused with :class:`BadInputError`: anything but a regular PE32 or PE32+
    file with a certificate table entry, a file that is already signed, one of
    4 GiB or more, one that changes while it is read.
    """
    key = _signing_key(template)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadInputError(f"{src}: cannot be read ({e.strerror})") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInputError(f"{src}: cannot be Authenticode-signed: not a regular file")
    with open(fd, "rb", buffering=0) as f:
        try:
            size = st.st_size
            head = os.pread(fd, min(size, MAX_HEADERS), 0)
            h = _headers(head, size)
            if h.table(head) != (0, 0):
                raise _Refused("it is signed already")
            if size < h.headers:
                raise _Refused("truncated headers")
        except _Refused as e:
            raise BadInputError(f"{src}: cannot be Authenticode-signed: {e}") from e
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".authenticode-") as tmp:
            part = Path(tmp) / "out"
            with part.open("wb") as out:
                one, whole = _Pass(h), hashlib.sha256()
                try:
                    for chunk, offset in _chunks(f, bytearray(min(READ_CHUNK, size)), size):
                        one.add(chunk, offset)
                        whole.update(chunk)
                        out.write(chunk)
                    if f.read(1):
                        raise _Refused("it changed while being read")
                except _Refused as e:
                    raise BadInputError(f"{src}: changed while being signed") from e
                if expected_sha256 is not None and whole.hexdigest() != expected_sha256:
                    raise VerificationError(
                        f"{src}: is not the file to sign (SHA-256 {whole.hexdigest()}, not {expected_sha256})"
                    )
                pad = bytes(-size % 8)
                one.add(memoryview(pad), size)
                table = _certificate_table(signature_for(template, one.digest.digest(), key))
                table_at = size + len(pad)
                entry = struct.pack("<II", table_at, len(table))
                words = one.words + _sum16(entry, h.entry_at) + _sum16(table, table_at)
                out.write(pad + table)
                out.seek(h.entry_at)
                out.write(entry)
                out.seek(h.checksum_at)
                out.write(_checksum(words, table_at + len(table)).to_bytes(4, "little"))
            part.chmod(0o755 if st.st_mode & 0o111 else 0o644)
            os.replace(part, dst)


def verify_pe_streamed(template: SigningTemplate, path: Path) -> None:
    """Check ``path`` as ``osslsigncode verify`` would, in one streamed read: its Authenticode digest against its
    signature, the signature's message digest, the RSA signature under the leaf certificate that
    :func:`signing_template` had osslsigncode check against the CA, the rest of the signature (certificates,
    description, time) against the template's, and last its CheckSum.

    Raises :class:`VerificationError` naming the fault.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise VerificationError(f"{path}: cannot be read ({e.strerror})") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise VerificationError(f"{path}: Authenticode signature not valid: not a regular file")
    with open(fd, "rb", buffering=0) as f:
        size = st.st_size
        try:
            head = os.pread(fd, min(size, MAX_HEADERS), 0)
            layout = _layout(head, size)
            table = os.pread(fd, layout.table_size, layout.table_at)
            der = _signature_of(table)
            content, message_digest, attrs, signature = _pkcs7_parts(der)
            one = _Pass(_headers(head, size))
            for chunk, offset in _chunks(f, bytearray(min(READ_CHUNK, layout.table_at)), layout.table_at):
                one.add(chunk, offset)
            entry = struct.pack("<II", layout.table_at, layout.table_size)
            words = one.words + _sum16(entry, layout.entry_at) + _sum16(table, layout.table_at)
            if not content.endswith(one.digest.digest()):
                raise _Refused("its Authenticode digest does not match its contents")
            if hashlib.sha256(content).digest() != message_digest:
                raise _Refused("its signature's message digest does not match")
            template.public_key.verify(signature, b"\x31" + attrs[1:], padding.PKCS1v15(), hashes.SHA256())
            if (
                der.replace(content, template.content)
                .replace(attrs, template.attrs)
                .replace(signature, template.signature)
                != template.der
            ):
                raise _Refused("its signature is not the one made with this signer, time and description")
            if _checksum(words, size) != layout.stored_checksum:
                raise _Refused("its CheckSum is wrong")
        except InvalidSignature as e:
            raise VerificationError(f"{path}: Authenticode signature not valid: its RSA signature is wrong") from e
        except _Refused as e:
            raise VerificationError(f"{path}: Authenticode signature not valid: {e}") from e
