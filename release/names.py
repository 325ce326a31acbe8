"""What a release's files are called: the one place for every module that writes, lists or reads them.

The signature formats' modules (:mod:`release.minisign`, :mod:`release.openpgp`,
:mod:`release.sigstore_bundle`, :mod:`release.signify`), the provenance, the
checksum list and the layout (:mod:`release.attest`) take their names from
here. This module imports nothing: a sandboxed step's process, which names
files but signs nothing, does not load the signing code to learn them.
"""

from __future__ import annotations

MINISIGN_SUFFIX = ".minisig"  # minisign's signature of a file
OPENPGP_SUFFIX = ".asc"  # an armored OpenPGP detached signature
SIGSTORE_SUFFIX = ".sigstore.json"  # a Sigstore bundle of an in-toto statement on an archive
SIGNIFY_SUMS_NAME = "SHA256.sig"  # signify's signed checksum list (`signify -C -x SHA256.sig`)
SUMS_NAME = "SHA256SUMS"  # the checksum list (`sha256sum -c`)
PROVENANCE_SUFFIX = ".intoto.jsonl"  # the SLSA provenance (DSSE envelopes, one per line)


def provenance_name(version: str) -> str:
    """The provenance file of a release, e.g. ``ransomeye-1.0.0.intoto.jsonl``."""
    return f"ransomeye-{version}{PROVENANCE_SUFFIX}"
