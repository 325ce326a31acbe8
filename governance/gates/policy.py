"""The gate policies: ``governance/policies/*.toml`` parsed into frozen dataclasses.

Parse at the edge, then trust the object. Every policy file carries
``schema = 1``; unknown keys, missing keys, wrong types and values that do not
read are each a :class:`release.errors.BadInputError` whose message names the
file and the field, e.g.::

    governance/policies/resources.toml: caps.memory-max = "lots" is not a size like 512M or 2G

Fail closed: a missing policy file, an empty rule list, or a policy that would
check nothing is an error, never a pass.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from governance.gates.limits import LIMITS, Limit, LimitSyntaxError, Unbounded, parse_memory
from release.errors import BadInputError

POLICY_DIR = "governance/policies"
SCHEMA = 1
_PATTERN_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_BUNDLE_ID = re.compile(r"[a-z][a-z0-9-]*")


def show(value: object) -> str:
    """A value as it would be written in TOML, shortened for an error message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=True)
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, list):
        text = "[...]"
    elif isinstance(value, dict):
        text = "{...}"
    else:
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


_ARTICLE = {str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "a table"}
_KIND = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array", dict: "table"}


def _kind(value: object) -> str:
    """The TOML name of ``value``'s type, for error messages."""
    return _KIND.get(type(value), type(value).__name__)


def path_under(path: str, prefix: str) -> bool:
    """True when repository-relative ``path`` is ``prefix`` or inside it (``.`` contains everything)."""
    p = PurePosixPath(path).parts
    q = PurePosixPath(prefix).parts
    return p[: len(q)] == q


class Table:
    """Typed, strict access to one TOML table of a policy file.

    Every getter names the field in its error; :meth:`finish` rejects keys no
    getter asked for, so a misspelt key is an error rather than a silently
    ignored rule.
    """

    def __init__(self, data: object, source: str, where: str = "") -> None:
        if not isinstance(data, dict):
            raise BadInputError(f"{source}: {where or 'the document'} must be a table, not {_kind(data)}")
        self._data: dict[str, Any] = data
        self._seen: set[str] = set()
        self.source = source
        self.where = where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, problem: str, hint: str | None = None) -> BadInputError:
        return BadInputError(f"{self.source}: {self.name(key)} {problem}", hint=hint)

    def value_error(self, key: str, value: object, problem: str, hint: str | None = None) -> BadInputError:
        return BadInputError(f"{self.source}: {self.name(key)} = {show(value)} {problem}", hint=hint)

    def get(self, key: str) -> Any:
        self._seen.add(key)
        if key not in self._data:
            raise self.error(key, "is missing", hint=f"add `{key} = ...`")
        return self._data[key]

    def _typed(self, key: str, kind: type) -> Any:
        value = self.get(key)
        if type(value) is not kind:
            raise self.error(key, f"must be {_ARTICLE[kind]}, not {_kind(value)}")
        return value

    def string(self, key: str) -> str:
        value: str = self._typed(key, str)
        return value

    def boolean(self, key: str) -> bool:
        value: bool = self._typed(key, bool)
        return value

    def table(self, key: str) -> Table:
        return Table(self._typed(key, dict), self.source, self.name(key))

    def tables(self, key: str) -> list[Table]:
        values: list[Any] = self._typed(key, list)
        return [Table(v, self.source, f"{self.name(key)}[{i}]") for i, v in enumerate(values)]

    def strings(self, key: str, *, non_empty: bool) -> tuple[str, ...]:
        values: list[Any] = self._typed(key, list)
        out: list[str] = []
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise self.error(f"{key}[{i}]", f"must be a non-empty string, not {show(v)}")
            if v in out:
                raise self.value_error(f"{key}[{i}]", v, "is listed twice")
            out.append(v)
        if non_empty and not out:
            raise self.error(key, "is empty", hint="an empty rule list would check nothing; the gates fail closed")
        return tuple(out)

    def relpaths(self, key: str, *, non_empty: bool) -> tuple[str, ...]:
        values = self.strings(key, non_empty=non_empty)
        for i, v in enumerate(values):
            check_relpath(self, f"{key}[{i}]", v)
        return values

    def relpath(self, key: str) -> str:
        value = self.string(key)
        check_relpath(self, key, value)
        return value

    def names(self) -> list[str]:
        return list(self._data)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen)) or "none"
            raise self.error(unknown[0], "is not a known key", hint=f"known keys here: {known}")


def check_relpath(table: Table, key: str, value: str) -> None:
    """Reject anything but a plain repository-relative POSIX path (``.`` is the repository)."""
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value or "\x00" in value or str(p) != value.rstrip("/"):
        raise table.value_error(key, value, "must be a plain relative path inside the repository, like ops/services")


def _schema(doc: Table) -> None:
    schema = doc.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise doc.value_error("schema", schema, f"is not supported; this gate reads schema = {SCHEMA}")


# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Cap:
    """The largest value a limit may take; ``text`` is as the policy wrote it."""

    limit: Limit
    text: str
    amount: int


@dataclass(frozen=True)
class ResourcesPolicy:
    """Which limits every service unit must declare, and their caps."""

    source: str
    units_dir: str
    required: tuple[Limit, ...]
    caps: tuple[Cap, ...]

    def cap(self, limit: Limit) -> Cap | None:
        for c in self.caps:
            if c.limit == limit:
                return c
        return None


def parse_resources(data: object, source: str) -> ResourcesPolicy:
    """Parse ``resources.toml``; raise :class:`BadInputError` naming file and field."""
    doc = Table(data, source)
    _schema(doc)
    units_dir = doc.relpath("units-dir")
    required_keys = doc.strings("required", non_empty=True)
    required: list[Limit] = []
    for i, key in enumerate(required_keys):
        if key not in LIMITS:
            raise doc.value_error(f"required[{i}]", key, "is not a known limit", hint="known: " + ", ".join(LIMITS))
        required.append(LIMITS[key])
    caps_table = doc.table("caps")
    caps: list[Cap] = []
    for key in caps_table.names():
        limit = LIMITS.get(key)
        if limit is None:
            raise caps_table.error(key, "is not a known limit", hint="known: " + ", ".join(LIMITS))
        raw = caps_table.get(key)
        if type(raw) is int and limit.is_count:
            if raw < 0:
                raise caps_table.value_error(key, raw, "must not be negative")
            text = str(raw)
        elif type(raw) is str:
            text = raw
        else:
            raise caps_table.value_error(key, raw, f"is not {limit.expected}")
        try:
            amount = limit.parse(text)
        except LimitSyntaxError as e:
            raise caps_table.value_error(key, raw, str(e)) from e
        if isinstance(amount, Unbounded):
            raise caps_table.value_error(key, raw, f"{amount.why}; a cap must be a bound")
        caps.append(Cap(limit, text, amount))
    caps_table.finish()
    capped = {c.limit.key for c in caps}
    for i, limit in enumerate(required):
        if limit.key not in capped:
            raise doc.value_error(f"required[{i}]", limit.key, "has no cap", hint=f"add {limit.key} = ... under [caps]")
    doc.finish()
    return ResourcesPolicy(source, units_dir, tuple(required), tuple(caps))


# --------------------------------------------------------------------------- isolation


@dataclass(frozen=True)
class IsolationPolicy:
    """Which crate paths are core side, edge, or shared; which bundles must stay free of edge."""

    source: str
    core_side: tuple[str, ...]
    edge: tuple[str, ...]
    shared: tuple[str, ...]
    protected_bundles: tuple[str, ...]

    def is_edge(self, relpath: str) -> bool:
        return any(path_under(relpath, e) for e in self.edge)

    def side(self, relpath: str) -> str | None:
        """``"core-side"``, ``"edge"``, ``"shared"``, or None for a path the policy does not classify."""
        for name, prefixes in (("edge", self.edge), ("core-side", self.core_side), ("shared", self.shared)):
            if any(path_under(relpath, p) for p in prefixes):
                return name
        return None


def parse_isolation(data: object, source: str) -> IsolationPolicy:
    """Parse ``isolation.toml``; raise :class:`BadInputError` naming file and field."""
    doc = Table(data, source)
    _schema(doc)
    core_side = doc.relpaths("core-side", non_empty=True)
    edge = doc.relpaths("edge", non_empty=True)
    shared = doc.relpaths("shared", non_empty=False)
    lists = {"core-side": core_side, "edge": edge, "shared": shared}
    names = list(lists)
    for ai, a_name in enumerate(names):
        for b_name in names[ai + 1 :]:
            for i, a in enumerate(lists[a_name]):
                for b in lists[b_name]:
                    if path_under(a, b) or path_under(b, a):
                        raise doc.value_error(
                            f"{a_name}[{i}]",
                            a,
                            f"overlaps {b_name} path {show(b)}",
                            hint="each crate path must be exactly one of core-side, edge, shared",
                        )
    protected = doc.strings("protected-bundles", non_empty=True)
    for i, b in enumerate(protected):
        if not _BUNDLE_ID.fullmatch(b):
            raise doc.value_error(f"protected-bundles[{i}]", b, "is not a bundle id")
    doc.finish()
    return IsolationPolicy(source, core_side, edge, shared, protected)


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class VersionsPolicy:
    """How member versions relate to the workspace version."""

    source: str
    allow_prerelease: bool


def parse_versions(data: object, source: str) -> VersionsPolicy:
    """Parse ``versions.toml``; raise :class:`BadInputError` naming file and field."""
    doc = Table(data, source)
    _schema(doc)
    allow_prerelease = doc.boolean("allow-prerelease")
    doc.finish()
    return VersionsPolicy(source, allow_prerelease)


# --------------------------------------------------------------------------- secrets

# The gate's own detectors (governance/gates/secret_rules.py): rule id -> what it finds.
SECRET_BUILTIN_RULES: dict[str, str] = {
    "der-private-key": "a DER private key (PKCS#8, PKCS#1, SEC1 or DSA)",
    "pgp-private-key": "an OpenPGP secret key packet",
    "gcp-service-account": "a GCP service-account key",
    "aws-key-pair": "an AWS secret access key next to its access key id",
    "secret-assignment": "a high-entropy value assigned to a secret-like name",
}
# What the gate reports when it cannot scan something within its bounds (governance/gates/secret_layers.py).
SECRET_BOUND_RULES: dict[str, str] = {
    "too-large": "a file larger than the bound for a whole scan",
    "expansion-bound": "content that expands beyond the bound",
    "too-deep": "content nested deeper than the bound",
    "too-many-members": "an archive with more members than the bound",
    "unscannable": "content that cannot be decoded or unpacked",
}
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_PLUGIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True)
class SecretPattern:
    """One kind of secret: an id for findings, a description, and a bytes regex."""

    id: str
    description: str
    regex: re.Pattern[bytes]


@dataclass(frozen=True)
class ScanBounds:
    """How much work one file may cost: every read, expansion and nesting is capped.

    ``max_file_size``: larger files (and archive members, decoded payloads) are
    scanned line by line only, and that is a finding; ``max_expanded``: bytes
    decoded or decompressed from one file, all levels together;
    ``max_depth``: encodings and archives inside one another;
    ``max_members``: archive members in one file, all levels together.
    """

    max_file_size: int
    max_expanded: int
    max_depth: int
    max_members: int


@dataclass(frozen=True)
class AssignmentRule:
    """When a value assigned to a secret-like name is flagged: long and random enough."""

    min_length: int
    min_entropy: float


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a finding (file, rule, and line or fingerprint) that is not a credential, and why."""

    where: str
    path: str
    rule: str
    line: int | None
    fingerprint: str | None
    reason: str

    def describe(self) -> str:
        at = f"line {self.line}" if self.line is not None else f"fingerprint {self.fingerprint}"
        return f"{self.where} ({self.path}, {self.rule}, {at})"


@dataclass(frozen=True)
class Allowlist:
    """The allowlist file's entries (none until :func:`load_policies` has read the file)."""

    source: str
    entries: tuple[AllowEntry, ...]


@dataclass(frozen=True)
class SecretsPolicy:
    """What secret material looks like, which trees to scan for it, the bounds, and the allowlist."""

    source: str
    patterns: tuple[SecretPattern, ...]
    bundle_assets: bool
    workspace_members: bool
    extra_paths: tuple[str, ...]
    exclude: tuple[str, ...]
    bounds: ScanBounds
    library: tuple[str, ...]
    assignments: AssignmentRule
    allowlist: Allowlist

    def rule_ids(self) -> frozenset[str]:
        """Every rule id a finding of the gate can carry (without the ``secrets.`` prefix)."""
        from governance.gates.secret_library import NAME as LIBRARY

        library = (f"{LIBRARY}.{name}" for name in self.library)
        return frozenset((*(p.id for p in self.patterns), *SECRET_BUILTIN_RULES, *SECRET_BOUND_RULES, *library))


def _compile(table: Table, key: str, text: str) -> re.Pattern[bytes]:
    try:
        regex = re.compile(text.encode("utf-8"))
    except Exception as e:  # re raises re.error, OverflowError, RecursionError...: all mean "bad regex"
        raise table.value_error(key, text, f"is not a valid regular expression: {e}") from e
    if regex.search(b"") is not None:
        raise table.value_error(key, text, "matches the empty string, so it would flag every line")
    return regex


def _integer(table: Table, key: str, low: int, high: int) -> int:
    value = table.get(key)
    if type(value) is not int or not low <= value <= high:
        raise table.value_error(key, value, f"must be a whole number from {low} to {high}")
    return value


def _size(table: Table, key: str) -> int:
    value = table.get(key)
    if type(value) is not str:
        raise table.value_error(key, value, "must be a size like 64M or 1G")
    try:
        amount = parse_memory(value)
    except LimitSyntaxError as e:
        raise table.value_error(key, value, str(e)) from e
    if isinstance(amount, Unbounded) or not 1 << 10 <= amount <= 1 << 40:
        raise table.value_error(key, value, "must be a size from 1K to 1T")
    return amount


def _library(table: Table, key: str) -> tuple[str, ...]:
    from governance.gates.secret_library import available

    names = table.strings(key, non_empty=True)
    shipped = available()
    for i, name in enumerate(names):
        if not _PLUGIN_NAME.fullmatch(name) or name not in shipped:
            raise table.value_error(
                f"{key}[{i}]", name, "is not a detect-secrets plugin", hint="known: " + ", ".join(sorted(shipped))
            )
    return names


def parse_secrets(data: object, source: str) -> SecretsPolicy:
    """Parse ``secrets.toml``; raise :class:`BadInputError` naming file and field.

    The allowlist it names is not read here: :func:`load_policies` reads it
    (:func:`parse_allowlist`); until then the policy's allowlist has no entry.
    """
    doc = Table(data, source)
    _schema(doc)
    patterns = _secret_patterns(doc)
    scan = doc.table("scan")
    bundle_assets = scan.boolean("bundle-assets")
    workspace_members = scan.boolean("workspace-members")
    extra_paths = scan.relpaths("extra-paths", non_empty=False)
    exclude = scan.relpaths("exclude", non_empty=False)
    if not (bundle_assets or workspace_members or extra_paths):
        raise scan.error(
            "bundle-assets", "is false, as is workspace-members, and extra-paths is empty: nothing to scan"
        )
    allowlist_file = scan.relpath("allowlist")
    scan.finish()
    b = doc.table("bounds")
    bounds = ScanBounds(
        max_file_size=_size(b, "max-file-size"),
        max_expanded=_size(b, "max-expanded"),
        max_depth=_integer(b, "max-depth", 1, 32),
        max_members=_integer(b, "max-members", 1, 1_000_000),
    )
    b.finish()
    lib = doc.table("library")
    library = _library(lib, "detect-secrets")
    lib.finish()
    a = doc.table("assignments")
    min_length = _integer(a, "min-length", 8, 1024)
    entropy = a.get("min-entropy")
    if type(entropy) not in (int, float) or not 1.0 <= entropy <= 6.0:
        raise a.value_error("min-entropy", entropy, "must be a number of bits per character from 1.0 to 6.0")
    a.finish()
    doc.finish()
    return SecretsPolicy(
        source=source,
        patterns=tuple(patterns),
        bundle_assets=bundle_assets,
        workspace_members=workspace_members,
        extra_paths=extra_paths,
        exclude=exclude,
        bounds=bounds,
        library=library,
        assignments=AssignmentRule(min_length, float(entropy)),
        allowlist=Allowlist(allowlist_file, ()),
    )


def _secret_patterns(doc: Table) -> list[SecretPattern]:
    """The policy's own patterns: each a unique id that is none of the gate's rules, a description and a regex."""
    patterns: list[SecretPattern] = []
    tables = doc.tables("patterns")
    if not tables:
        raise doc.error("patterns", "is empty", hint="an empty rule list would find nothing; the gates fail closed")
    reserved = {*SECRET_BUILTIN_RULES, *SECRET_BOUND_RULES}
    for t in tables:
        pattern_id = t.string("id")
        if not _PATTERN_ID.fullmatch(pattern_id):
            raise t.value_error("id", pattern_id, "must be lowercase letters, digits and '-'")
        if any(p.id == pattern_id for p in patterns):
            raise t.value_error("id", pattern_id, "is used by another pattern")
        if pattern_id in reserved:
            raise t.value_error("id", pattern_id, "is the id of one of the gate's own rules")
        description = t.string("description")
        regex = _compile(t, "regex", t.string("regex"))
        t.finish()
        patterns.append(SecretPattern(pattern_id, description, regex))
    return patterns


def parse_allowlist(data: object, source: str, policy: SecretsPolicy) -> Allowlist:
    """Parse the secrets allowlist; raise :class:`BadInputError` naming file and field.

    Every entry names a file (``path``), a rule of the gate (``rule``), exactly
    one of ``line`` or ``fingerprint`` (as the finding printed them), and a
    ``reason`` saying why the finding is not a credential: an entry without one
    is an error. An allowlist with no entry (no ``[[allow]]`` table) is fine;
    an entry that matches no finding is the gate's business (a stale entry
    fails it).
    """
    doc = Table(data, source)
    _schema(doc)
    rules = policy.rule_ids()
    entries: list[AllowEntry] = []
    tables = doc.tables("allow") if "allow" in doc.names() else []
    for i, t in enumerate(tables):
        path = t.relpath("path")
        rule = t.string("rule")
        if rule not in rules:
            raise t.value_error(
                "rule", rule, "is not a rule of the secrets gate", hint="known: " + ", ".join(sorted(rules))
            )
        present = set(t.names())
        if ("line" in present) == ("fingerprint" in present):
            raise t.error("line", "and fingerprint: give exactly one of them", hint="copy it from the finding")
        line = _integer(t, "line", 1, 1 << 40) if "line" in present else None
        fingerprint = t.string("fingerprint") if "fingerprint" in present else None
        if fingerprint is not None and not _FINGERPRINT.fullmatch(fingerprint):
            raise t.value_error("fingerprint", fingerprint, "is not a fingerprint (16 lowercase hex digits)")
        reason = t.string("reason")
        if not reason.strip():
            raise t.value_error("reason", reason, "is empty", hint="say why this finding is not a credential")
        t.finish()
        entry = AllowEntry(f"allow[{i}]", path, rule, line, fingerprint, reason.strip())
        for other in entries:
            if (other.path, other.rule, other.line, other.fingerprint) == (path, rule, line, fingerprint):
                raise t.error("path", f"repeats {other.where}")
        entries.append(entry)
    doc.finish()
    return Allowlist(source, tuple(entries))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Policies:
    """All four policies, parsed."""

    resources: ResourcesPolicy
    isolation: IsolationPolicy
    versions: VersionsPolicy
    secrets: SecretsPolicy


def read_toml_file(path: Path, source: str, *, missing_hint: str | None = None) -> dict[str, Any]:
    """Read a TOML file; ``source`` names it in errors. Missing or malformed is a :class:`BadInputError`."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise BadInputError(f"{source}: file not found", hint=missing_hint) from e
    except tomllib.TOMLDecodeError as e:
        raise BadInputError(f"{source}: not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError, RecursionError) as e:
        raise BadInputError(f"{source}: cannot be read: {e}") from e


def load_policies(root: Path) -> Policies:
    """Read and parse every policy under ``root/governance/policies``."""

    def load(name: str) -> tuple[dict[str, Any], str]:
        source = f"{POLICY_DIR}/{name}.toml"
        hint = f"every gate needs its policy; restore {source}"
        return read_toml_file(root / source, source, missing_hint=hint), source

    return Policies(
        resources=parse_resources(*load("resources")),
        isolation=parse_isolation(*load("isolation")),
        versions=parse_versions(*load("versions")),
        secrets=load_secrets(root, parse_secrets(*load("secrets"))),
    )


def load_secrets(root: Path, policy: SecretsPolicy) -> SecretsPolicy:
    """``policy`` with the entries of the allowlist file it names (which must exist, even if empty)."""
    source = policy.allowlist.source
    hint = f"create it (it may list no entry) or fix scan.allowlist in {policy.source}"
    data = read_toml_file(root / source, source, missing_hint=hint)
    return replace(policy, allowlist=parse_allowlist(data, source, policy))
