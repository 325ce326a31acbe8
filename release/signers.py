"""The one signing seam: a role's key, named by a URI, behind securesystemslib's ``Signer``.

Every signature of a release — in-toto links, the root layout, the DSSE
provenance envelope, the minisign signatures — is made by a :class:`RoleKey`,
whose ``signer`` is a securesystemslib :class:`~securesystemslib.signer.Signer`
chosen by the role's *key URI*:

``keyfile:PATH``
    A PKCS8 PEM Ed25519 private key file, mode 0600 (a relative ``PATH`` is read
    from the keys folder). An encrypted key is unlocked with a passphrase from
    the secrets callback: by default ``RANSOMEYE_<ROLE>_KEY_PASSPHRASE``, else
    the terminal when there is one; never from the command line.
``hsm:KEYID?label=TOKEN``
    A key on a PKCS#11 token (securesystemslib's HSM signer, which this module
    extends to Ed25519 keys; the PKCS#11 module comes from ``PYKCS11LIB``). The
    PIN comes from ``RANSOMEYE_<ROLE>_KEY_PIN``, else the terminal.

A role's URI is ``RANSOMEYE_<ROLE>_KEY_URI`` when set, ``keyfile:<role>.pem``
otherwise. The public half is always ``keys/<role>.pub`` (what the layout
authorises); a signer whose key is not that key is refused before it signs.
"""

from __future__ import annotations

import functools
import getpass
import importlib.util
import os
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib import parse

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from release.errors import BadInputError, SigningError
from release.keys import load_public_key, passphrase_variable, private_key_path, public_key_path

if TYPE_CHECKING:
    # securesystemslib.signer loads every backend (PKCS#11, cloud KMS) on import, about 0.1 s: imported where a key
    # is made, never by a sandboxed step's process, which signs nothing.
    from securesystemslib.signer import Signer, SSlibKey

KEYFILE = "keyfile"
HSM = "hsm"
PKCS11_MODULE_VARIABLE = "PYKCS11LIB"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM Ed25519 key is a few hundred bytes

# What a secret is asked for ("passphrase", "pin") -> the secret.
SecretsHandler = Callable[[str], str]
# One token session at a time: the packaging steps sign from parallel threads, and a
# PKCS#11 module need not take concurrent logins (SoftHSM2's file store does not).
_TOKEN_LOCK = threading.Lock()


def uri_variable(role: str) -> str:
    return f"RANSOMEYE_{role.upper()}_KEY_URI"


def pin_variable(role: str) -> str:
    return f"RANSOMEYE_{role.upper()}_KEY_PIN"


def secrets_from_environment(role: str, env: Mapping[str, str] | None = None) -> SecretsHandler:
    """The default secrets callback: the role's variable, else the terminal, else a clear refusal."""
    environ = os.environ if env is None else env

    def handler(what: str) -> str:
        var = pin_variable(role) if what == "pin" else passphrase_variable(role)
        value = environ.get(var)
        if value:
            return value
        if _has_terminal():
            return getpass.getpass(f"{what} of the {role} key: ")
        missing = (
            "the key is encrypted and no passphrase" if what == "passphrase" else f"the token needs a {what} and none"
        )
        raise SigningError(f"{missing} was given", hint=f"set {var}, or run from a terminal to be asked")

    return handler


def _has_terminal() -> bool:
    try:
        with open("/dev/tty", "rb"):
            return sys.stdin.isatty()
    except OSError:
        return False


@dataclass(frozen=True)
class RoleKey:
    """A role's signing key: its URI, its public half and the signer that uses it."""

    role: str
    uri: str
    public: Ed25519PublicKey
    signer: Signer

    def sign(self, payload: bytes) -> bytes:
        """A raw Ed25519 signature of ``payload`` (what minisign and DSSE carry)."""
        try:
            signature = self.signer.sign(payload)
        except SigningError:
            raise
        except Exception as e:  # a token or library failure, named with the key
            raise SigningError(f"the {self.role} key ({self.uri}) could not sign: {e}") from e
        raw = bytes.fromhex(signature.signature)
        try:
            self.public.verify(raw, payload)
        except Exception as e:
            raise SigningError(
                f"the {self.role} key ({self.uri}) made a signature its public key rejects",
                hint=f"{self.uri} is not the key of keys/{self.role}.pub: fix the URI, or import its public half",
            ) from e
        return raw

    @classmethod
    def ephemeral(cls, role: str) -> RoleKey:
        """A new key that lives in memory only, for this run: a rebuild's links, which nobody verifies later."""
        return cls.from_private(role, Ed25519PrivateKey.generate(), "ephemeral:")

    @classmethod
    def from_private(cls, role: str, private: Ed25519PrivateKey, uri: str = "memory:") -> RoleKey:
        """A key held in memory (development tooling and tests)."""
        from securesystemslib.signer import CryptoSigner

        public = private.public_key()
        return cls(role, uri, public, CryptoSigner(private, ssl_key(public)))


def ssl_key(public: Ed25519PublicKey) -> SSlibKey:
    """The securesystemslib key (and so the in-toto key id) of ``public``."""
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public)


def role_uri(keys_dir: Path, role: str, env: Mapping[str, str] | None = None) -> str:
    environ = os.environ if env is None else env
    return environ.get(uri_variable(role)) or f"{KEYFILE}:{private_key_path(keys_dir, role).name}"


def has_private_key(keys_dir: Path, role: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``role`` has a private key here: its key file exists, or its URI names a token."""
    uri = role_uri(keys_dir, role, env)
    return parse.urlparse(uri).scheme != KEYFILE or _keyfile_path(keys_dir, uri).exists()


def load_role_key(
    keys_dir: Path,
    role: str,
    secrets: SecretsHandler | None = None,
    env: Mapping[str, str] | None = None,
    expect: Ed25519PublicKey | None = None,
) -> RoleKey:
    """The ``role``'s signing key, from its URI, checked against ``keys/<role>.pub`` (or ``expect``: a new key).

    Raises :class:`SigningError` (or :class:`BadInputError` for a malformed URI)
    naming the key and how to fix it.
    """
    uri = role_uri(keys_dir, role, env)
    scheme = parse.urlparse(uri).scheme
    if scheme not in (KEYFILE, HSM):
        raise BadInputError(
            f"{uri_variable(role)}={uri!r}: unknown key URI scheme",
            hint="use keyfile:PATH (a PEM key file) or hsm:KEYID?label=TOKEN (a PKCS#11 token)",
        )
    secrets = secrets or secrets_from_environment(role, env)
    if scheme == KEYFILE:
        private = _load_key_file(_keyfile_path(keys_dir, uri), role, secrets, os.environ if env is None else env)
        key = RoleKey.from_private(role, private, uri)
        if expect is None:
            _check_public(keys_dir, key)
        elif key.public != expect:
            raise SigningError(
                f"the {role} key at {uri} is not the new key",
                hint=f"point {uri_variable(role)} at the new private key (keyfile:PATH or hsm:KEYID?label=TOKEN)",
            )
        return key
    public = expect or _role_public(keys_dir, role, uri)
    signer = hsm_signer(uri, public, secrets)
    key = RoleKey(role, uri, public, signer)
    key.sign(b"ransomeye: does the token hold the published key?")  # before any work, not at the end
    return key


def key_file_public(path: Path) -> Ed25519PublicKey | None:
    """The public half of the unencrypted Ed25519 key file ``path``; None when it is missing, encrypted or other."""
    try:
        private = serialization.load_pem_private_key(_read_key_file(path, "that"), password=None)
    except (SigningError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return private.public_key() if isinstance(private, Ed25519PrivateKey) else None


def _keyfile_path(keys_dir: Path, uri: str) -> Path:
    path = Path(parse.unquote(parse.urlparse(uri).path))
    return path if path.is_absolute() else keys_dir / path


def _role_public(keys_dir: Path, role: str, uri: str) -> Ed25519PublicKey:
    path = public_key_path(keys_dir, role)
    if not path.exists():
        raise SigningError(
            f"{path}: the {role} key's public half is missing (its private key is {uri})",
            hint=f"run `release/builder/signer.py import-public --role {role}` with {uri_variable(role)} set",
        )
    return load_public_key(path)


def _check_public(keys_dir: Path, key: RoleKey) -> None:
    pub_path = public_key_path(keys_dir, key.role)
    if pub_path.exists() and load_public_key(pub_path) != key.public:
        raise SigningError(
            f"{key.uri} does not match its public key {pub_path}",
            hint="restore the matching pair; a public key is never regenerated silently",
        )


def _load_key_file(path: Path, role: str, secrets: SecretsHandler, env: Mapping[str, str]) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key: a regular file, mode 0600, unlocked through ``secrets``."""
    var = passphrase_variable(role)
    data = _read_key_file(path, role)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: only now is a passphrase asked for
        try:
            passphrase = secrets("passphrase")
        except SigningError as e:
            raise SigningError(f"{path}: {e.message}", hint=e.hint) from None
        key = _unlock(path, data, passphrase.encode(), var)
    except ValueError:
        raise SigningError(f"{path}: not a PKCS8 PEM private key") from None
    except UnsupportedAlgorithm as e:
        raise SigningError(f"{path}: unsupported key algorithm") from e
    else:
        if env.get(var):
            raise SigningError(f"{path}: the key is not encrypted, but {var} is set", hint=f"unset {var}")
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key", hint="generate keys with `make keys`")
    return key


def _read_key_file(path: Path, role: str) -> bytes:
    """The bytes of the key file, judged on the descriptor that reads them (no window to swap the file)."""
    try:
        # Non-blocking: a FIFO planted at the key's name cannot hang the release.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise SigningError(
            f"{path}: the {role} private key is missing",
            hint="run `make keys` for development keys, or install the production key there (see keys/README.md)",
        ) from e
    except OSError as e:
        raise SigningError(f"{path}: the {role} private key cannot be read ({e.strerror})") from e
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise SigningError(f"{path}: not a regular file")
        if mode & 0o077:
            hint = f"chmod 600 {path}"
            raise SigningError(f"{path}: the private key is readable by group or others (mode {mode:04o})", hint=hint)
        return os.read(fd, MAX_KEY_FILE_BYTES)
    finally:
        os.close(fd)


def _unlock(path: Path, data: bytes, password: bytes, var: str) -> Any:
    try:
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        raise SigningError(f"{path}: wrong passphrase (from {var} or the terminal) or damaged key") from None


def hsm_signer(uri: str, public: Ed25519PublicKey, secrets: SecretsHandler) -> Signer:
    """The signer of the key on a token at ``hsm:KEYID?label=TOKEN`` whose public half is ``public``.

    Raises :class:`BadInputError` for a malformed URI, :class:`SigningError`
    when no token can be reached (no PKCS#11 module or library).
    """
    return _ed25519_hsm_signer().from_priv_key_uri(uri, ssl_key(public), secrets)


@functools.cache
def _ed25519_hsm_signer() -> type[Signer]:
    """securesystemslib's HSM signer extended to Ed25519, registered under ``hsm:``; defined on first use.

    ``securesystemslib.signer`` loads every signing backend on import (about
    0.1 s): this module imports it only where a key is made, so that a sandboxed
    step's process, which signs nothing, never pays for it.
    """
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME, HSMSigner, Key, Signature

    class Ed25519HSMSigner(HSMSigner):
        """securesystemslib's HSM signer (its URI form, token lookup and PIN handling), for Ed25519 keys.

        Upstream signs ECDSA keys only; every release signature (minisign included)
        is Ed25519, so this signs with the token's ``EC_EDWARDS`` private key of the
        URI's id through ``CKM_EDDSA``.
        """

        def __init__(self, hsm_keyid: int, public_key: SSlibKey, pin_handler: Any, token_label: str | None = None):
            if public_key.scheme != "ed25519":
                raise SigningError(f"hsm:{hsm_keyid}: the public key is {public_key.scheme}, not Ed25519")
            self.hsm_keyid = hsm_keyid
            self.token_label = token_label
            self._public_key = public_key
            self.pin_handler = pin_handler

        @classmethod
        def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None) -> Ed25519HSMSigner:
            _token_address(priv_key_uri)
            try:
                signer = super().from_priv_key_uri(priv_key_uri, public_key, secrets_handler)
            except ValueError as e:
                raise BadInputError(f"{priv_key_uri}: {e}", hint="the form is hsm:KEYID?label=TOKEN") from e
            if not isinstance(signer, Ed25519HSMSigner):
                raise TypeError(signer)
            return signer

        def sign(self, payload: bytes) -> Signature:
            import pkcs11

            try:
                with _TOKEN_LOCK:  # the token is looked up before its PIN is asked for
                    token = self._find_token(self.token_label)
                    with token.open(user_pin=self.pin_handler(self.SECRETS_HANDLER_MSG)) as session:
                        key_id = pkcs11.util.biginteger(self.hsm_keyid)
                        key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.KeyType.EC_EDWARDS, id=key_id)
                        if not isinstance(key, pkcs11.SignMixin):
                            raise SigningError(f"hsm:{self.hsm_keyid}: the token's key cannot sign")
                        raw = key.sign(payload, mechanism=pkcs11.Mechanism.EDDSA)
            except ValueError as e:  # upstream's token lookup: none, or several, with that label
                hint = "check the URI's label= and SOFTHSM2_CONF"
                raise SigningError(f"hsm:{self.hsm_keyid}: {e}", hint=hint) from None
            except pkcs11.exceptions.PinIncorrect:
                raise SigningError(f"hsm:{self.hsm_keyid}: the token refused the PIN") from None
            except (pkcs11.exceptions.NoSuchKey, pkcs11.exceptions.MultipleObjectsReturned) as e:
                what = "no single Ed25519 private key with that id on the token"
                raise SigningError(f"hsm:{self.hsm_keyid}: {what}") from e
            except pkcs11.exceptions.PKCS11Error as e:
                raise SigningError(f"hsm:{self.hsm_keyid}: the token failed to sign ({type(e).__name__})") from e
            return Signature(self.public_key.keyid, bytes(raw).hex())

    SIGNER_FOR_URI_SCHEME[HSM] = Ed25519HSMSigner
    return Ed25519HSMSigner


def _token_address(uri: str) -> tuple[int, str | None]:
    """The key id and token label of ``hsm:KEYID?label=TOKEN``, once a token can be reached at all.

    Refuses a malformed URI (:class:`BadInputError`), and a missing PKCS#11
    module or library (:class:`SigningError`, saying how to get it).
    """
    parsed = parse.urlparse(uri)
    if parsed.scheme != HSM or not (parsed.path == "" or parsed.path.isdigit()):
        raise BadInputError(f"{uri}: not a key on a token", hint="the form is hsm:KEYID?label=TOKEN, KEYID a number")
    if not os.environ.get(PKCS11_MODULE_VARIABLE):
        raise SigningError(
            f"{uri}: no PKCS#11 module to reach the token",
            hint=f"set {PKCS11_MODULE_VARIABLE} to the token's module, e.g. {SOFTHSM_MODULE} (Debian softhsm2)",
        )
    if importlib.util.find_spec("pkcs11") is None:
        raise SigningError(f"{uri}: python-pkcs11 is not installed", hint="run `make setup` (it is pinned)")
    from securesystemslib.signer import HSMSigner

    keyid = int(parsed.path) if parsed.path else HSMSigner.SCHEME_KEYID
    return keyid, dict(parse.parse_qsl(parsed.query)).get("label")


def token_public_key(uri: str, secrets: SecretsHandler) -> Ed25519PublicKey:
    """The Ed25519 public key behind ``hsm:KEYID?label=TOKEN`` (to write ``keys/<role>.pub``)."""
    import pkcs11
    from securesystemslib.signer import HSMSigner

    keyid, label = _token_address(uri)
    try:
        token = HSMSigner._find_token(label)
        with token.open(user_pin=secrets("pin")) as session:
            obj = session.get_key(
                pkcs11.ObjectClass.PUBLIC_KEY, pkcs11.KeyType.EC_EDWARDS, id=pkcs11.util.biginteger(keyid)
            )
            point = bytes(obj[pkcs11.Attribute.EC_POINT])
    except ValueError as e:
        raise SigningError(f"{uri}: {e}") from e
    except pkcs11.exceptions.PinIncorrect:
        raise SigningError(f"{uri}: the token refused the PIN") from None
    except pkcs11.exceptions.PKCS11Error as e:
        raise SigningError(f"{uri}: no single Ed25519 public key with that id on the token ({type(e).__name__})") from e
    raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point  # a DER OCTET STRING, or raw
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise SigningError(f"{uri}: the token's key is not an Ed25519 key") from e
