"""The systemd resource limits the resources gate knows, and how their values read.

Each :class:`Limit` pairs a policy key (``memory-max``) with a ``[Service]``
directive (``MemoryMax``) and a parser that turns a value into one integer in
the limit's base unit (bytes, hundredths of a percent, a count), so a unit's
value and the policy's cap compare directly.

A value systemd accepts but that puts no absolute bound on the service
(``infinity``, a percentage of host memory) parses to :class:`Unbounded`;
text systemd would not accept raises :class:`LimitSyntaxError`, which the
callers turn into a :class:`release.errors.BadInputError` naming file and field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) *([KMGT]?)")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]{1,2})?)%")
_COUNT = re.compile(r"[0-9]+")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
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
    """

    key: str
    directive: str
    expected: str
    parse: Callable[[str], Amount]
    is_count: bool


def _bounded(amount: int) -> int:
    if amount > _MAX_AMOUNT:
        raise LimitSyntaxError("is out of range")
    return amount


def parse_memory(text: str) -> Amount:
    """Bytes with an optional K/M/G/T suffix (base 1024), as ``MemoryMax=`` takes them."""
    value = text.strip()
    if value == INFINITY:
        return Unbounded("is infinity (no memory limit)")
    if _PERCENT.fullmatch(value):
        return Unbounded("is relative to the host's memory, not an absolute size")
    m = _MEMORY.fullmatch(value)
    if m is None:
        raise LimitSyntaxError("is not a size like 512M or 2G")
    number, suffix = m.groups()
    if len(number) > 30:
        raise LimitSyntaxError("is out of range")
    return _bounded(int(Decimal(number) * _SUFFIX[suffix]))


def parse_cpu_quota(text: str) -> Amount:
    """A percentage of one CPU (``150%`` is one and a half CPUs), in hundredths of a percent."""
    value = text.strip()
    m = _PERCENT.fullmatch(value)
    if m is None or len(m.group(1)) > 20:
        raise LimitSyntaxError("is not a percentage like 50% or 150%")
    amount = int(Decimal(m.group(1)) * 100)
    if amount == 0:
        raise LimitSyntaxError("must be more than 0%")
    return _bounded(amount)


def parse_tasks(text: str) -> Amount:
    """A number of tasks (threads and processes)."""
    value = text.strip()
    if value == INFINITY:
        return Unbounded("is infinity (no task limit)")
    if _PERCENT.fullmatch(value):
        return Unbounded("is relative to the kernel's task limit, not an absolute number")
    if not _COUNT.fullmatch(value) or len(value) > 20:
        raise LimitSyntaxError("is not a whole number like 512")
    return _bounded(int(value))


def parse_nofile(text: str) -> Amount:
    """Open files: ``N`` or ``soft:hard``; the hard (larger) value is the bound."""
    value = text.strip()
    parts = value.split(":")
    if len(parts) > 2:
        raise LimitSyntaxError("is not a whole number like 65536 or a soft:hard pair")
    amounts: list[int] = []
    for part in parts:
        if part == INFINITY:
            return Unbounded("is infinity (no open-file limit)")
        if not _COUNT.fullmatch(part) or len(part) > 20:
            raise LimitSyntaxError("is not a whole number like 65536 or a soft:hard pair")
        amounts.append(_bounded(int(part)))
    if len(amounts) == 2 and amounts[0] > amounts[1]:
        raise LimitSyntaxError("has a soft limit above its hard limit")
    return max(amounts)


LIMITS: dict[str, Limit] = {
    limit.key: limit
    for limit in (
        Limit("memory-max", "MemoryMax", "a size like 512M or 2G", parse_memory, is_count=False),
        Limit("cpu-quota", "CPUQuota", "a percentage like 50% or 150%", parse_cpu_quota, is_count=False),
        Limit("tasks-max", "TasksMax", "a whole number like 512", parse_tasks, is_count=True),
        Limit("limit-nofile", "LimitNOFILE", "a whole number like 65536", parse_nofile, is_count=True),
    )
}
