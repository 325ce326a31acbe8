"""Published Ed25519 test vectors (RFC 8032 §7.1) and malformed signatures, through our verification path."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release import attest, minisign
from release.errors import BadInputError, VerificationError
from release.keys import ROLES, generate_key
from release.pipeline import functionaries

# RFC 8032, section 7.1, TEST 1-3: secret key, public key, message, signature (hex).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]
# The order of the Ed25519 base point: a signature with S >= L is not canonical and must be rejected.
L = 2**252 + 27742317777372353535851937790883648493
COMMENT = "timestamp:0\tfile:vector\tversion:1.0.0\tproduct:ransomeye"


def _legacy(secret_hex: str, message: bytes, sig: bytes) -> tuple[minisign.MinisignPublicKey, minisign.Signature]:
    """A minisign legacy ("Ed") signature over ``message`` carrying the vector's signature bytes."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = minisign.MinisignPublicKey.from_key(key.public_key(), raw)
    global_sig = key.sign(sig + COMMENT.encode())
    return pub, minisign.Signature(minisign.LEGACY_ALG, pub.key_id, sig, COMMENT, global_sig)


@pytest.mark.parametrize("secret, public, message, signature", RFC8032, ids=["test1", "test2", "test3"])
def test_rfc8032_vectors_verify(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature, "Ed25519 signatures are deterministic"
    pub, sig = _legacy(secret, bytes.fromhex(message), bytes.fromhex(signature))
    minisign.verify(pub, sig, b"", bytes.fromhex(message), "vector")


def _non_canonical(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:], "little") + L
    return sig[:32] + s.to_bytes(32, "little")


BAD_SIGNATURES = {
    "all-zero": lambda sig: bytes(64),
    "flipped-bit-in-R": lambda sig: bytes([sig[0] ^ 1]) + sig[1:],
    "flipped-bit-in-S": lambda sig: sig[:40] + bytes([sig[40] ^ 1]) + sig[41:],
    "S-plus-L-non-canonical": _non_canonical,
    "S-all-ones": lambda sig: sig[:32] + b"\xff" * 32,
    "R-zero-point": lambda sig: bytes(32) + sig[32:],
}


@pytest.mark.parametrize("mangle", list(BAD_SIGNATURES.values()), ids=list(BAD_SIGNATURES))
@pytest.mark.parametrize("secret, public, message, signature", RFC8032, ids=["test1", "test2", "test3"])
def test_malformed_vector_signatures_are_rejected(
    secret: str, public: str, message: str, signature: str, mangle: object
) -> None:
    assert callable(mangle)
    bad = mangle(bytes.fromhex(signature))
    pub, sig = _legacy(secret, bytes.fromhex(message), bad)
    with pytest.raises(VerificationError):
        minisign.verify(pub, sig, b"", bytes.fromhex(message), "vector")


@pytest.mark.parametrize("blob_len", [0, 1, 10, 73, 75, 200])
def test_signature_files_of_the_wrong_size_are_rejected(blob_len: int) -> None:
    import base64

    text = (
        "untrusted comment: x\n"
        f"{base64.b64encode(b'ED' + bytes(blob_len)).decode()}\n"
        f"trusted comment: {COMMENT}\n"
        f"{base64.b64encode(bytes(64)).decode()}\n"
    )
    with pytest.raises(VerificationError):
        minisign.parse_signature(text, "sig")


def test_prehashed_signature_binds_the_digest() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = minisign.MinisignPublicKey.from_key(key.public_key(), raw)
    digest = hashlib.blake2b(b"payload", digest_size=64).digest()
    text = minisign.sign_prehashed(key.sign, pub.key_id, digest, COMMENT)
    sig = minisign.parse_signature(text, "sig")
    minisign.verify(pub, sig, digest, None, "sig")
    other = hashlib.blake2b(b"payload!", digest_size=64).digest()
    with pytest.raises(VerificationError, match="does not match"):
        minisign.verify(pub, sig, other, None, "sig")


# --- layouts: a malformed or hostile root.layout is a clear error, never a traceback ------------


@pytest.fixture(scope="module")
def layout_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    for role in ROLES:
        generate_key(d, role)
    return d


def _signed_layout_json(keys: Path) -> dict[str, object]:
    from release.products import load_workspace, repo_root
    from release.signers import load_role_key

    ws = load_workspace(repo_root())
    layout = attest.build_layout(ws, functionaries(keys), attest.expiry(30))
    metablock = attest.sign_layout(layout, load_role_key(keys, "owner"))
    data: dict[str, object] = json.loads(json.dumps(metablock.to_dict()))
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.lists(
        st.sampled_from(["signed", "expires", "steps", "keys", "inspect", "_type", "signatures", "readme"]),
        min_size=1,
        max_size=2,
    ),
    value=json_values,
    resign=st.booleans(),
)
def test_fuzzed_layouts_fail_cleanly(
    layout_keys: Path, tmp_path_factory: pytest.TempPathFactory, path: list[str], value: object, resign: bool
) -> None:
    from in_toto.models.layout import Layout
    from in_toto.models.metadata import Metablock

    from release.keys import load_public_key
    from release.signers import load_role_key

    data = _signed_layout_json(layout_keys)
    target: object = data if path[0] in ("signed", "signatures") else data["signed"]
    for key in path[:-1]:
        if isinstance(target, dict) and isinstance(target.get(key), dict):
            target = target[key]
    if isinstance(target, dict):
        target[path[-1]] = value
    out = tmp_path_factory.mktemp("layout") / "root.layout"
    out.write_text(json.dumps(data))
    if resign:
        # Re-signed by the owner, the mutation reaches the checks after the signature; when in-toto
        # refuses to build such a layout at all, the raw mutation is what gets tested.
        with contextlib.suppress(Exception):
            mb = Metablock(signed=Layout.read(data["signed"]))
            mb.create_signature(load_role_key(layout_keys, "owner").signer)
            mb.dump(str(out))
    with contextlib.suppress(BadInputError, VerificationError):
        attest.load_layout(out, load_public_key(layout_keys / "owner.pub"))


# --- service units: the gates' unit parser refuses or reads, never crashes ---------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_fuzzed_service_units_fail_cleanly(text: str) -> None:
    from governance.gates.units import parse_unit_text

    try:
        parse_unit_text(text, "ops/services/core/fuzz.service")
    except BadInputError as e:
        assert "ops/services/core/fuzz.service" in str(e), "the error names the file"
