"""The secrets gate's detectors: what counts as a secret in one piece of data.

:class:`Detectors` runs, on the bytes of one file or of one payload found
inside it:

- line by line (streamed: a line of any length is read in overlapping
  windows): the policy's regular expressions, the detect-secrets plugins it
  names, and :func:`assignments`, high-entropy values assigned to secret-like
  names in .env, INI, YAML, TOML, JSON, JavaScript (minified too) and source
  code, quoted or not;
- on the whole payload: private keys in DER and OpenPGP binary form
  (:mod:`governance.gates.secret_keys`), GCP service-account keys and AWS
  access key ids next to their secret access keys.

Each hit carries what its fingerprint is computed from (the secret and a
little context), never to be printed. Library and assignment hits are
*generic*: the gate drops them on a line a specific rule already flagged.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from governance.gates.policy import SECRET_BUILTIN_RULES, AssignmentRule, SecretPattern, SecretsPolicy
from governance.gates.secret_keys import der_private_keys, pgp_secret_keys
from governance.gates.secret_library import LibraryDetector, detectors

CHUNK = 1 << 16
OVERLAP = 1 << 12
BLOCK = 1 << 20
CONTEXT = 64


@dataclass(frozen=True)
class Hit:
    """One secret found: its rule, what it is, its line in the scanned data, and its fingerprint source."""

    rule: str
    description: str
    line: int
    value: bytes
    generic: bool = False


def line_windows(stream: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, window, whether the window ends its line) for every line of ``stream``.

    Reads at most ``CHUNK`` bytes at a time; a line longer than that comes in
    windows that overlap by ``OVERLAP`` bytes, so nothing is lost at a boundary.
    """
    line = 1
    carry = b""
    while piece := stream.readline(CHUNK):
        window = carry + piece
        ends = piece.endswith(b"\n")
        yield line, window, ends
        if ends:
            line += 1
            carry = b""
        else:
            carry = window[-OVERLAP:]


def _blocks(windows: Iterator[tuple[int, bytes, bool]]) -> Iterator[list[tuple[int, bytes, bool]]]:
    """The windows, grouped into lists of about ``BLOCK`` bytes."""
    block: list[tuple[int, bytes, bool]] = []
    size = 0
    for w in windows:
        block.append(w)
        size += len(w[1])
        if size >= BLOCK:
            yield block
            block, size = [], 0
    if block:
        yield block


# --------------------------------------------------------------------------- assignments

# A name and what assigns to it (`=`, `:`, `:=`, `=>`); the value is matched only after a secret-like name.
# Possessive quantifiers: a failed attempt gives nothing back, so a hostile line costs linear time.
_ASSIGNMENT = re.compile(
    rb"(?<![A-Za-z0-9_.$-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,63}+)[\"']?[ \t]*+"
    # an optional type annotation (Rust, TypeScript, Python): `key: &str = "..."`
    rb"(?::[ \t]*+&?(?:'static[ \t]+)?[A-Za-z_][A-Za-z0-9_<>\[\]]*+[ \t]*+(?==))?"
    rb"(?::=|=>|=(?!=)|:)[ \t]*+"
)
_VALUE = re.compile(
    rb"(?P<q>[\"'`])(?P<quoted>[^\"'`\\\r\n]{1,512}+)(?P=q)"
    rb"|(?P<bare>[^\s\"'`,;#&|(){}\[\]<>]{1,512}+)(?=[\s,;#}\])]|$)"
)
# Searched in the lower-cased window: a case-sensitive search skips ahead much faster.
_SECRET_HINT = re.compile(rb"pass|pwd|secret|token|key|credential|auth|bearer")
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SECRET_WORDS = _wordset(
    "password passwords passwd passphrase pass pwd secret secrets token tokens credential credentials "
    "apikey privatekey secretkey accesskey authkey auth bearer"
)
_KEY_QUALIFIERS = _wordset(
    "api private secret access signing encryption master auth account session shared client storage"
)
# A secret-like name ending in one of these words names something about the secret, not the secret.
_HARMLESS_LAST = _wordset(
    "url uri urls endpoint host path paths file filename dir directory name names type types length len size "
    "label field header param parameter env var variable id ids prefix suffix ttl timeout expiry expires "
    "expiration lifetime format mode policy pattern regex count max min enabled enable required version kind "
    "location provider source ref hint placeholder message text title description help error input button "
    "icon style class attempts rotation strength algorithm algo hash store"
)
_SCHEME = re.compile(rb"^(?:Bearer|Basic|Token|token|bearer)[ \t]+(?P<v>\S+)$")
_TEMPLATE = re.compile(rb"\$\{|\{\{|%\(|\$\(|^\$|^<.*>$|^%.*%$|://")
_LETTER, _DIGIT = re.compile(rb"[A-Za-z]"), re.compile(rb"[0-9]")


@functools.lru_cache(maxsize=4096)
def secret_like(name: str) -> bool:
    """True when an identifier names a secret: ``db_password``, ``apiKey``, ``client-secret``, ``AUTH_TOKEN``."""
    words = [w.lower() for w in _NAME_WORDS.findall(name)]
    if not words or words[-1] in _HARMLESS_LAST:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in itertools.pairwise(words))


def entropy(value: bytes) -> float:
    """Shannon entropy of ``value`` in bits per byte."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def random_enough(value: bytes, rule: AssignmentRule) -> bool:
    """True when ``value`` could be a generated secret rather than a word, a reference or a template."""
    return (
        len(value) >= rule.min_length
        and _TEMPLATE.search(value) is None
        and _LETTER.search(value) is not None
        and _DIGIT.search(value) is not None
        and entropy(value) >= rule.min_entropy
    )


def assignments(window: bytes, rule: AssignmentRule) -> Iterator[bytes]:
    """The high-entropy values assigned to secret-like names in ``window``."""
    if _SECRET_HINT.search(window.lower()) is None:
        return
    for m in _ASSIGNMENT.finditer(window):
        if not secret_like(m.group("name").decode("ascii")):
            continue
        v = _VALUE.match(window, m.end())
        if v is None:
            continue
        value = v.group("quoted") or v.group("bare")
        scheme = _SCHEME.match(value)
        if scheme is not None:
            value = scheme.group("v")
        if b" " in value or b"\t" in value:
            continue
        if random_enough(value, rule):
            yield value


# --------------------------------------------------------------------------- whole-payload rules

_GCP_TYPE = re.compile(rb'\\?"type\\?"\s*:\s*\\?"service_account\\?"')
_GCP_KEY = re.compile(rb'\\?"private_key\\?"\s*:\s*\\?"(?P<v>-----BEGIN[^"]{0,200})')
_AWS_ID = re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])")
_AWS_SECRET = re.compile(rb"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_NEAR_LINES = 5
_AWS_NEAR_BYTES = 2048


class LineIndex:
    """Line numbers of offsets in one payload (1-based), counted incrementally."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._offset = 0
        self._line = 1

    def __call__(self, offset: int) -> int:
        if offset < self._offset:
            self._offset, self._line = 0, 1
        self._line += self.data.count(b"\n", self._offset, offset)
        self._offset = offset
        return self._line


def _gcp(data: bytes, lines: LineIndex) -> Iterator[Hit]:
    key = _GCP_KEY.search(data)
    if key is not None and _GCP_TYPE.search(data) is not None:
        rule = "gcp-service-account"
        yield Hit(rule, SECRET_BUILTIN_RULES[rule], lines(key.start()), key.group("v"))


def _near(sorted_values: list[int], x: int, distance: int) -> bool:
    """True when some value of ``sorted_values`` is within ``distance`` of ``x`` (a binary search)."""
    i = bisect.bisect_left(sorted_values, x - distance)
    return i < len(sorted_values) and sorted_values[i] <= x + distance


def _aws_pairs(data: bytes, lines: LineIndex) -> Iterator[Hit]:
    offsets = [m.start() for m in _AWS_ID.finditer(data)]
    if not offsets:
        return
    id_lines = [lines(o) for o in offsets]
    rule = "aws-key-pair"
    for m in _AWS_SECRET.finditer(data):
        value = m.group()
        if not (_LETTER.search(value) and _DIGIT.search(value) and value.lower() != value and value.upper() != value):
            continue
        line = lines(m.start())
        if _near(id_lines, line, _AWS_NEAR_LINES) or _near(offsets, m.start(), _AWS_NEAR_BYTES):
            yield Hit(rule, SECRET_BUILTIN_RULES[rule], line, value)


def _binary_keys(data: bytes, lines: LineIndex) -> Iterator[Hit]:
    for blob in der_private_keys(data):
        yield Hit("der-private-key", blob.kind, lines(blob.start), data[blob.start : blob.end])
    for blob in pgp_secret_keys(data):
        yield Hit("pgp-private-key", blob.kind, lines(blob.start), data[blob.start : blob.end])


# --------------------------------------------------------------------------- all together


class Detectors:
    """Every detector of one policy, ready to run on any number of payloads."""

    def __init__(self, policy: SecretsPolicy) -> None:
        self.patterns: tuple[SecretPattern, ...] = policy.patterns
        # Each pattern with ^ and $ at every line, for the first pass over a block of lines.
        self._quick = tuple(re.compile(p.regex.pattern, p.regex.flags | re.MULTILINE) for p in policy.patterns)
        self.library: tuple[LibraryDetector, ...] = detectors(policy.library)
        self.assignment = policy.assignments

    @property
    def kinds(self) -> int:
        """How many kinds of secret are looked for."""
        return len(self.patterns) + len(SECRET_BUILTIN_RULES) + len(self.library)

    def lines(self, stream: BinaryIO) -> Iterator[Hit]:
        """The line-oriented hits in ``stream``, read in bounded windows, each (line, rule, value) once.

        Windows are taken a block (about ``BLOCK`` bytes) at a time: a detector
        that matches nowhere in the block is not run on its lines.
        """
        seen: set[tuple[int, str, bytes]] = set()
        first: set[tuple[int, str]] = set()
        pending: list[Hit] = []  # hits at the end of a line, whose fingerprint takes in the next line
        for block in _blocks(line_windows(stream)):
            joined = b"".join(window for _, window, _ in block)
            patterns = [p for p, quick in zip(self.patterns, self._quick, strict=True) if quick.search(joined)]
            text = joined.decode("latin-1")
            library = [d for d in self.library if d.maybe(text)]
            assign = _SECRET_HINT.search(joined.lower()) is not None
            for line, window, ends in block:
                if pending:
                    yield from (Hit(h.rule, h.description, h.line, h.value + window[:CONTEXT]) for h in pending)
                    pending = []
                for pattern in patterns:
                    if (line, pattern.id) in first:
                        continue
                    m = pattern.regex.search(window)
                    if m is None:
                        continue
                    first.add((line, pattern.id))
                    after = window[m.end() : m.end() + CONTEXT]
                    hit = Hit(pattern.id, pattern.description, line, m.group() + after)
                    if ends and not after.strip():
                        pending.append(hit)
                    else:
                        yield hit
                found: list[Hit] = []
                if library:
                    piece = window.decode("latin-1")
                    for detector in library:
                        for text_value in detector.find(piece):
                            value = text_value.encode("latin-1")
                            found.append(Hit(detector.rule_id, detector.description, line, value, generic=True))
                if assign:
                    rule = "secret-assignment"
                    for value in assignments(window, self.assignment):
                        found.append(Hit(rule, SECRET_BUILTIN_RULES[rule], line, value, generic=True))
                for hit in found:
                    key = (line, hit.rule, hit.value)
                    if key not in seen:
                        seen.add(key)
                        yield hit
        yield from pending

    def whole(self, data: bytes) -> Iterator[Hit]:
        """The hits that need the whole payload: binary keys, GCP service-account keys, AWS key pairs."""
        lines = LineIndex(data)
        yield from _binary_keys(data, lines)
        yield from _gcp(data, LineIndex(data))
        yield from _aws_pairs(data, LineIndex(data))
