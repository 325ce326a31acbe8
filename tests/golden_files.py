"""Golden files: the release's documents with what legitimately varies replaced by a label.

A golden file pins the *shape* of a published document — its fields, names, order,
commands, rules and the way values relate — so that a change to any of them shows
up in review as a diff of ``tests/golden/``. What varies from one correct release to
the next is replaced, never dropped:

- the session's keys (in-toto key ids, raw public keys, minisign key ids, and their
  short prefixes in file names and texts) by ``<key:ROLE>`` (``<key:builder-2/ROLE>``
  for the second builder's);
- signatures by ``<signature>``; SHA-256 digests by ``<sha256>``; times by ``<time>``;
- the numbers that follow a build's timing or a compiled file's size
  (``VOLATILE_NUMBERS``) by ``<number>``; the release folder's path by ``<release>``.

``make golden`` rewrites the files after an intended change (see the README).
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from release import minisign
from release.attest import keyid_of
from release.keys import BUILDER_KEY_ROLES, ROLES, builder_dirs, keyid, load_public_key, public_key_path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

# Keys whose numeric values follow the clock or a compiled binary's size.
VOLATILE_NUMBERS = frozenset({"size", "bytes", "duration_seconds"})
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
_SIGNATURE = re.compile(r"\b[0-9a-f]{128}\b")
# A SHA-256 digest, whole or as the short prefix a report shows (a commit id too).
_SHA256 = re.compile(r"\b[0-9a-f]{16,64}\b")
# In a report's text: a duration or a size ("26.2 s", "501.5 KiB"), and the padding that aligns it.
_MEASURE = re.compile(r" *\b\d+(?:\.\d+)? (s|B|KiB|MiB|GiB)\b")


class Normalizer:
    """Replace one session's volatile values in a release document by labels."""

    def __init__(self, keys_dir: Path, release_dir: Path) -> None:
        self.release_dirs = sorted({str(release_dir), str(release_dir.resolve())}, key=len, reverse=True)
        labels: dict[str, str] = {}
        roles = [(keys_dir, role, role) for role in ROLES]
        roles += [(d, r, f"{d.name}/{r}") for d in builder_dirs(keys_dir) for r in BUILDER_KEY_ROLES]
        for folder, role, label in roles:
            public = load_public_key(public_key_path(folder, role))
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            ids = [keyid_of(public), keyid(public), raw.hex()]
            ids.append(minisign.MinisignPublicKey.from_key(public, raw).key_id_hex)
            for full in ids:
                labels[full] = labels[full.lower()] = f"<key:{label}>"
                for n in (16, 8):  # the short forms that name files and fill reports
                    labels[full[:n]] = labels[full[:n].lower()] = f"<key:{label}>"
        # Longest first, so that a full key id is replaced before its prefix.
        self._keys = sorted(labels.items(), key=lambda kv: -len(kv[0]))

    def text(self, value: str) -> str:
        for folder in self.release_dirs:
            value = value.replace(folder, "<release>")
        for ident, label in self._keys:
            if ident in value:
                value = re.sub(rf"(?<![0-9A-Fa-f]){re.escape(ident)}(?![0-9A-Fa-f])", label, value)
        value = _UUID.sub("<uuid>", value)
        value = _SIGNATURE.sub("<signature>", value)
        value = _SHA256.sub("<sha256>", value)
        return _TIME.sub("<time>", value)

    def report(self, text: str) -> str:
        """A report's text, with its durations and sizes too."""
        return _MEASURE.sub(r" <number> \1", self.text(text))

    def value(self, data: Any, key: str = "") -> Any:
        if isinstance(data, dict):
            return {self.text(k): self.value(v, k) for k, v in data.items()}
        if isinstance(data, list) and key == "archive-members":
            # [path, type, mode, size, sha256]: a built file's size follows its source.
            return [[*self.value(m[:3]), "<number>" if m[1] == "file" else m[3], self.value(m[4])] for m in data]
        if isinstance(data, list):
            out = [self.value(v, key) for v in data]
            # The audit's list of files is sorted by names that hold key ids: sorted again once they are labels.
            if key == "files" and all(isinstance(v, str) for v in data):
                return sorted(out)
            if data and all(isinstance(v, dict) and "keyid" in v for v in data):
                return sorted(out, key=lambda v: (str(v.get("role")), str(v["keyid"])))
            return out
        if isinstance(data, str):
            return "<signature>" if key == "sig" else self.text(data)
        if isinstance(data, (int, float)) and not isinstance(data, bool) and key in VOLATILE_NUMBERS:
            return "<number>"
        return data


def render(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def dsse_statement(envelope_line: str) -> Any:
    """The in-toto statement inside one DSSE envelope line of the provenance."""
    envelope = json.loads(envelope_line)
    return json.loads(base64.b64decode(envelope["payload"]))


def check(name: str, text: str, update: bool) -> None:
    """Compare ``text`` with the golden file ``name``, or rewrite it when ``update``."""
    path = GOLDEN_DIR / name
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {path.name}: run `make golden` and review the new file"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True), f"golden/{name}", "this release"
            )
        )
        raise AssertionError(
            f"{name} differs from its golden file; if the change is intended, run `make golden` "
            f"and commit the reviewed diff:\n{diff[:6000]}"
        )
