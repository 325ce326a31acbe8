"""SLSA v1 provenance: the statement is derived from the links, signed as DSSE, and any change is rejected."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from release.attest import key_dict, keyid_of
from release.errors import BadInputError, VerificationError
from release.provenance import (
    BUILD_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    UNSAFE_PREBUILT_BUILD_TYPE,
    build_statement,
    external_materials,
    provenance_name,
    read_envelope,
    sign_envelope,
    statement_subjects,
    unverified_statement,
    verify_envelope,
    write_envelope,
)
from release.signers import RoleKey

COMMIT = "94a84f4d67e808291f5f01b659d941915765a02e"
H = {c: c * 64 for c in "0123456789abcdef"}


def _link(materials: dict[str, str], products: dict[str, str], command: list[str], **env: Any) -> dict[str, Any]:
    return {
        "_type": "link",
        "name": "?",
        "command": command,
        "materials": {n: {"sha256": h} for n, h in materials.items()},
        "products": {n: {"sha256": h} for n, h in products.items()},
        "byproducts": {"return-value": 0},
        "environment": env,
    }


LINKS = {
    "gates": _link(
        {"Cargo.toml": H["1"], "core/src/main.rs": H["2"], "ui/dist/index.html": H["3"]},
        {"gates-report.json": H["4"]},
        ["python3", "governance/gates/check_gates.py", "--report", "gates-report.json"],
        started="2026-05-01T10:00:00+00:00",
        finished="2026-05-01T10:00:01+00:00",
    ),
    "build": _link(
        {"Cargo.toml": H["1"], "core/src/main.rs": H["2"], "gates-report.json": H["4"]},
        {"bin/x86_64-unknown-linux-gnu/ransomeye-core": H["5"]},
        ["cargo", "build", "--release", "--offline", "--locked"],
        started="2026-05-01T10:00:01+00:00",
        finished="2026-05-01T10:00:40+00:00",
        toolchains={"x86_64-unknown-linux-gnu": "rustc 1.95.0 (59807616e 2026-04-14)"},
    ),
    "package-core": _link(
        {"bin/x86_64-unknown-linux-gnu/ransomeye-core": H["5"], "ui/dist/index.html": H["3"]},
        {"ransomeye-core-1.0.0.tar.gz": H["6"], "ransomeye-core-1.0.0.cdx.json": H["7"]},
        ["package", "core"],
        started="2026-05-01T12:00:40+02:00",  # another zone: compared as instants
        finished="2026-05-01T10:00:41Z",
    ),
}
SUBJECTS = {"ransomeye-core-1.0.0.tar.gz": H["6"], "ransomeye-dpi-1.0.0.tar.gz": H["8"]}


@pytest.fixture(scope="module")
def build_key() -> RoleKey:
    return RoleKey.from_private("build", Ed25519PrivateKey.generate())


def _statement() -> dict[str, Any]:
    return build_statement(SUBJECTS, LINKS, COMMIT, "https://builder.example/ransomeye", "run-42")


def test_statement_is_slsa_v1_with_the_archives_as_subjects() -> None:
    s = _statement()
    assert s["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert s["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert s["subject"] == [{"name": n, "digest": {"sha256": h}} for n, h in sorted(SUBJECTS.items())]
    assert statement_subjects(s) == SUBJECTS


def test_build_definition_comes_from_the_links() -> None:
    definition = _statement()["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {"sourceCommit": COMMIT}
    internal = definition["internalParameters"]
    assert [(s["name"], s["command"]) for s in internal["steps"]] == [(n, link["command"]) for n, link in LINKS.items()]
    assert internal["toolchains"] == {"x86_64-unknown-linux-gnu": "rustc 1.95.0 (59807616e 2026-04-14)"}
    deps = definition["resolvedDependencies"]
    assert deps[0] == {"name": "source", "digest": {"gitCommit": COMMIT}}
    # What steps read and no step wrote: the source, not the gates report, binaries or archives.
    assert deps[1:] == [
        {"name": "Cargo.toml", "digest": {"sha256": H["1"]}},
        {"name": "core/src/main.rs", "digest": {"sha256": H["2"]}},
        {"name": "ui/dist/index.html", "digest": {"sha256": H["3"]}},
    ]
    assert external_materials(LINKS) == {"Cargo.toml": H["1"], "core/src/main.rs": H["2"], "ui/dist/index.html": H["3"]}


def test_run_details_span_the_links_times() -> None:
    run = _statement()["predicate"]["runDetails"]
    assert run["builder"] == {"id": "https://builder.example/ransomeye"}
    assert run["metadata"] == {
        "invocationId": "run-42",
        "startedOn": "2026-05-01T10:00:00Z",
        "finishedOn": "2026-05-01T10:00:41Z",
    }


def test_a_build_of_prebuilt_binaries_says_so() -> None:
    """``--unsafe-prebuilt-binaries``: the build link says it, and so must the provenance."""
    assert _statement()["predicate"]["buildDefinition"]["buildType"] == BUILD_TYPE
    assert "unsafePrebuiltBinaries" not in _statement()["predicate"]["buildDefinition"]["externalParameters"]
    links = copy.deepcopy(LINKS)
    links["build"]["command"] = ["unsafe-prebuilt-binaries"]
    links["build"]["environment"] = {"unsafe-prebuilt-binaries": True}
    definition = build_statement(SUBJECTS, links, COMMIT, "b", "i")["predicate"]["buildDefinition"]
    assert definition["buildType"] == UNSAFE_PREBUILT_BUILD_TYPE != BUILD_TYPE
    assert definition["externalParameters"] == {"sourceCommit": COMMIT, "unsafePrebuiltBinaries": True}
    links["build"]["environment"] = {"unsafe-prebuilt-binaries": "yes"}  # any value but false marks it
    assert build_statement(SUBJECTS, links, COMMIT, "b", "i")["predicate"]["buildDefinition"]["buildType"] == (
        UNSAFE_PREBUILT_BUILD_TYPE
    )


def test_no_times_and_no_commit() -> None:
    links = {n: {**link, "environment": {}} for n, link in LINKS.items()}
    s = build_statement(SUBJECTS, links, None, "b", "i")
    assert s["predicate"]["runDetails"]["metadata"] == {"invocationId": "i"}
    assert s["predicate"]["buildDefinition"]["externalParameters"] == {"sourceCommit": None}
    assert s["predicate"]["buildDefinition"]["resolvedDependencies"][0]["name"] == "Cargo.toml"


@pytest.mark.parametrize(
    "subjects, links, message",
    [
        ({}, LINKS, "no subjects"),
        ({"a.tar.gz": "ABC"}, LINKS, "not a lowercase hex SHA-256"),
        (SUBJECTS, {}, "no links"),
        (SUBJECTS, {"gates": {**LINKS["gates"], "environment": {"started": "yesterday"}}}, "not an ISO-8601 time"),
        (SUBJECTS, {"gates": {**LINKS["gates"], "environment": {"started": "2026-05-01T10:00:00"}}}, "no time zone"),
        (SUBJECTS, {"gates": {**LINKS["gates"], "products": {"x": {}}}}, "has no SHA-256"),
        (SUBJECTS, {"gates": {**LINKS["gates"], "command": "make"}}, "command is not a list"),
    ],
    ids=["no-subjects", "bad-hash", "no-links", "bad-time", "naive-time", "bad-product", "bad-command"],
)
def test_bad_inputs_are_refused(subjects: dict[str, str], links: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        build_statement(subjects, links, COMMIT, "b", "i")


# --- DSSE ------------------------------------------------------------------------


def test_envelope_round_trip(build_key: RoleKey, tmp_path: Path) -> None:
    envelope = sign_envelope(_statement(), build_key)
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [keyid_of(build_key.public)]
    digest = write_envelope(envelope, tmp_path / provenance_name("1.0.0"))
    raw = (tmp_path / "ransomeye-1.0.0.intoto.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, "one JSON line"
    assert digest.size == len(raw)
    read = read_envelope(raw.decode(), "x")
    assert verify_envelope(read, key_dict(build_key.public)) == _statement()


def _payload(envelope: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return data


def _with_payload(envelope: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(envelope)
    out["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return out


def _tamper_subject(e: dict[str, Any]) -> dict[str, Any]:
    s = _payload(e)
    s["subject"][0]["digest"]["sha256"] = H["9"]
    return _with_payload(e, s)


def _tamper_signature(e: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(e)
    sig = bytearray(base64.b64decode(out["signatures"][0]["sig"]))
    sig[5] ^= 1
    out["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return out


def _resign_with_other_key(e: dict[str, Any]) -> dict[str, Any]:
    return sign_envelope(_payload(e), RoleKey.from_private("build", Ed25519PrivateKey.generate()))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (_tamper_subject, "does not verify"),
        (_tamper_signature, "does not verify"),
        (_resign_with_other_key, "is not signed by the key"),
        (lambda e: {**e, "payloadType": "text/plain"}, "payload type"),
        (lambda e: {**e, "signatures": []}, "is not signed by the key"),
        (lambda e: {**e, "payload": "not base64!"}, "not a DSSE envelope"),
        (lambda e: {k: v for k, v in e.items() if k != "signatures"}, "not a DSSE envelope"),
    ],
    ids=["payload-changed", "signature-flipped", "other-key", "payload-type", "unsigned", "bad-base64", "no-sigs"],
)
def test_tampered_envelope_is_rejected(build_key: RoleKey, tamper: Any, message: str) -> None:
    envelope = tamper(sign_envelope(_statement(), build_key))
    with pytest.raises(VerificationError, match=message):
        verify_envelope(envelope, key_dict(build_key.public))


def test_a_signed_statement_of_another_kind_is_rejected(build_key: RoleKey) -> None:
    s = _statement()
    s["predicateType"] = "https://slsa.dev/provenance/v0.2"
    with pytest.raises(VerificationError, match="predicate type"):
        verify_envelope(sign_envelope(s, build_key), key_dict(build_key.public))


def test_unverified_statement_is_for_reports_only(build_key: RoleKey) -> None:
    envelope = _tamper_subject(sign_envelope(_statement(), build_key))
    shown = unverified_statement(envelope)
    assert shown is not None and shown["subject"][0]["digest"]["sha256"] == H["9"]
    assert unverified_statement({"payload": "%%%"}) is None


def test_read_envelope_wants_exactly_one_line() -> None:
    with pytest.raises(VerificationError, match="2 JSON lines"):
        read_envelope('{"a": 1}\n{"b": 2}\n', "x.intoto.jsonl")
    with pytest.raises(VerificationError, match="not JSON"):
        read_envelope("{not json\n", "x.intoto.jsonl")
    with pytest.raises(VerificationError, match="0 JSON lines"):
        read_envelope("", "x.intoto.jsonl")


@settings(max_examples=25, deadline=None)
@given(
    subjects=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9.-]{0,20}\.(tar\.gz|zip)", fullmatch=True),
        st.binary(min_size=32, max_size=32).map(bytes.hex),
        min_size=1,
        max_size=6,
    )
)
def test_round_trip_keeps_every_subject(build_key: RoleKey, subjects: dict[str, str]) -> None:
    statement = build_statement(subjects, LINKS, COMMIT, "b", "i")
    verified = verify_envelope(sign_envelope(statement, build_key), key_dict(build_key.public))
    assert statement_subjects(verified) == subjects


def test_the_sign_step_takes_the_predicate_from_memory_as_it_would_read_it_back(
    build_key: RoleKey, tmp_path: Path
) -> None:
    """The Sigstore bundles' predicate: from the statement the provenance step kept, the same as from the file.

    Without the run's metadata (its invocation id and times), in both cases; the file is not read when the
    statement is kept (it is gone here), and read back, checked against its recorded hash, when it is not.
    """
    from release.archive import hash_file
    from release.pipeline import Attested, provenance_predicate

    envelope = sign_envelope(_statement(), build_key)
    path = tmp_path / provenance_name("1.0.0")
    digest = write_envelope(envelope, path)
    read_back = provenance_predicate(Attested(digest))
    assert hash_file(path) == digest
    path.unlink()
    kept = provenance_predicate(Attested(digest, base64.b64decode(envelope["payload"])))
    assert kept == read_back
    assert kept["buildDefinition"] == _statement()["predicate"]["buildDefinition"]
    assert "metadata" not in kept["runDetails"] and "metadata" in _statement()["predicate"]["runDetails"]
    with pytest.raises(FileNotFoundError):
        provenance_predicate(Attested(digest))
    for bad in (b"not json", b"[]", b'{"predicate": []}', b'{"predicate": {"runDetails": 1}}'):
        with pytest.raises(
            VerificationError,
            match=r"^ransomeye-1\.0\.0\.intoto\.jsonl: (its statement is not JSON|holds no provenance predicate)$",
        ):
            provenance_predicate(Attested(digest, bad))
