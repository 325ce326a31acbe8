"""The systemd resource limits the resources gate knows, and how their values read.

Each :class:`Limit` pairs a policy key (``memory-max``) with a ``[Service]``
directive (``MemoryMax``) and a parser that turns a value into one integer in
the limit's base unit (bytes, hundredths of a percent, a count), so a unit's
value and the policy's cap compare directly.

The parsers read a value exactly as systemd 252 does (``parse_size()``,
``parse_permyriad_unbounded()``, ``safe_atou64()``, ``rlimit_parse()``), or
refuse it: a value systemd would read differently from its face is refused
rather than guessed. So a count or a percentage with a leading zero is refused
(systemd reads ``010`` as octal 8, and ``09`` not at all), and so is a value
systemd rejects and then *ignores*, keeping whatever was set before
(``MemoryMax=0``, ``TasksMax=0``, a fraction with more digits than it can
hold).

A value systemd accepts but that puts no absolute bound on the service
(``infinity``, a percentage of host memory) parses to :class:`Unbounded`;
text systemd would not accept raises :class:`LimitSyntaxError`, which the
callers turn into a :class:`release.errors.BadInputError` naming file and field.
What an *empty* assignment does differs per directive and is in
:attr:`Limit.empty`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# systemd's blanks (WHITESPACE in its sources): nothing else is stripped from a value.
BLANKS = " \t\n\r"
_MEMORY = re.compile(r"([0-9]+)(?:\.([0-9]+))? *([KMGT]?)")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]{1,2})?)%")
_QUOTA = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?%")
_COUNT = re.compile(r"[0-9]+")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_U64_MAX = (1 << 64) - 1
_INT_MAX = (1 << 31) - 1
INFINITY = "infinity"
# Far beyond any real limit: keeps every parsed amount a modest integer.
_MAX_AMOUNT = 1 << 62


class LimitSyntaxError(ValueError):
    """A value that is not valid for its limit; the message says what was expected."""


@dataclass(frozen=True)
class Unbounded:
    """A valid value that sets no absolute bound; ``why`` explains it to the user."""

    why: str


Amount = int | Unbounded


@dataclass(frozen=True)
class Limit:
    """One resource limit: its policy key, its systemd directive and its value grammar.

    ``is_count`` limits take a plain number, so a policy may write their cap
    as a TOML integer; the others take text with a unit (``2G``, ``150%``).
    ``empty`` is what an empty assignment (``MemoryMax=``) means to systemd:
    it resets the directive to a default that is no bound (the text says
    which), or, when None, systemd refuses the empty value and ignores the
    line (``LimitNOFILE=``), keeping the value set before it.
    """

    key: str
    directive: str
    expected: str
    parse: Callable[[str], Amount]
    is_count: bool
    empty: Unbounded | None


def _bounded(amount: int) -> int:
    if amount > _MAX_AMOUNT:
        raise LimitSyntaxError("is out of range")
    return amount


def _count(text: str, expected: str) -> int:
    """A decimal count as ``safe_atou64()`` reads it, refusing what it would read as octal or hex."""
    if not _COUNT.fullmatch(text) or len(text) > 20:
        raise LimitSyntaxError(expected)
    if len(text) > 1 and text.startswith("0"):
        raise LimitSyntaxError("has a leading zero, which systemd reads as an octal number")
    return _bounded(int(text))


def parse_memory(text: str) -> Amount:
    """Bytes with an optional K/M/G/T suffix (base 1024), computed as systemd's ``parse_size()`` does.

    A fraction is applied the way systemd applies it (in double precision,
    then truncated), so ``1.1G`` is the same number of bytes here and there.
    """
    value = text.strip(BLANKS)
    if value == INFINITY:
        return Unbounded("is infinity (no memory limit)")
    if _PERCENT.fullmatch(value):
        return Unbounded("is relative to the host's memory, not an absolute size")
    m = _MEMORY.fullmatch(value)
    if m is None:
        raise LimitSyntaxError("is not a size like 512M or 2G")
    whole, fraction, suffix = m.groups()
    if len(whole) > 30 or len(fraction or "") > 30 or int(whole) > _U64_MAX or int(fraction or "0") > _U64_MAX:
        raise LimitSyntaxError("is out of range")
    factor = _SUFFIX[suffix]
    part = 0.0
    if fraction is not None:
        part = float(int(fraction))
        for _ in fraction:
            part /= 10
    if int(whole) + (part > 0) > _U64_MAX // factor:
        raise LimitSyntaxError("is out of range")
    return _bounded(int(whole) * factor + int(part * factor))


def parse_memory_max(text: str) -> Amount:
    """A ``MemoryMax=`` value: a size (:func:`parse_memory`) of at least one byte, as systemd requires."""
    amount = parse_memory(text)
    if amount == 0:
        raise LimitSyntaxError("must be more than 0 bytes (systemd ignores MemoryMax=0)")
    return amount


def parse_cpu_quota(text: str) -> Amount:
    """A percentage of one CPU (``150%`` is one and a half CPUs), in hundredths of a percent."""
    value = text.strip(BLANKS)
    m = _QUOTA.fullmatch(value)
    if m is None or len(m.group(1)) > 20:
        raise LimitSyntaxError("is not a percentage like 50% or 150%")
    whole, hundredths = m.group(1), (m.group(2) or "").ljust(2, "0")
    if len(whole) > 1 and whole.startswith("0"):
        raise LimitSyntaxError("has a leading zero, which systemd reads as an octal number")
    amount = int(whole) * 100 + int(hundredths)
    if int(whole) > (_INT_MAX - int(hundredths)) // 100:
        raise LimitSyntaxError("is out of range")
    if amount == 0:
        raise LimitSyntaxError("must be more than 0%")
    return _bounded(amount)


def parse_tasks(text: str) -> Amount:
    """A number of tasks (threads and processes), at least 1."""
    value = text.strip(BLANKS)
    if value == INFINITY:
        return Unbounded("is infinity (no task limit)")
    if _PERCENT.fullmatch(value):
        return Unbounded("is relative to the kernel's task limit, not an absolute number")
    amount = _count(value, "is not a whole number like 512")
    if amount == 0:
        raise LimitSyntaxError("must be at least 1 (systemd ignores TasksMax=0)")
    return amount


def parse_nofile(text: str) -> Amount:
    """Open files: ``N`` or ``soft:hard``; the hard (larger) value is the bound."""
    value = text.strip(BLANKS)
    parts = value.split(":")
    if len(parts) > 2:
        raise LimitSyntaxError("is not a whole number like 65536 or a soft:hard pair")
    # infinity is the largest value there is: "infinity:1024" is a soft limit above the hard one.
    amounts = [
        _U64_MAX if part == INFINITY else _count(part, "is not a whole number like 65536 or a soft:hard pair")
        for part in parts
    ]
    if len(amounts) == 2 and amounts[0] > amounts[1]:
        raise LimitSyntaxError("has a soft limit above its hard limit")
    if amounts[-1] == _U64_MAX:
        return Unbounded("is infinity (no open-file limit)")
    return max(amounts)


LIMITS: dict[str, Limit] = {
    limit.key: limit
    for limit in (
        Limit(
            "memory-max",
            "MemoryMax",
            "a size like 512M or 2G",
            parse_memory_max,
            is_count=False,
            empty=Unbounded("no memory limit"),
        ),
        Limit(
            "cpu-quota",
            "CPUQuota",
            "a percentage like 50% or 150%",
            parse_cpu_quota,
            is_count=False,
            empty=Unbounded("no CPU quota"),
        ),
        Limit(
            "tasks-max",
            "TasksMax",
            "a whole number like 512",
            parse_tasks,
            is_count=True,
            empty=Unbounded("systemd's DefaultTasksMax=, a share of the kernel's limit"),
        ),
        Limit(
            "limit-nofile",
            "LimitNOFILE",
            "a whole number like 65536",
            parse_nofile,
            is_count=True,
            empty=None,
        ),
    )
}
