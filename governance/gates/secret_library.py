"""The detect-secrets adapter: the library's regex detectors, run offline on text.

detect-secrets (Yelp, Apache-2.0) ships one plugin per kind of service
credential (AWS, Azure storage, Stripe, Twilio, Slack...). The secrets policy
names the plugins the gate runs (``[library].detect-secrets``); this module is
the only one that imports the library.

Only a plugin's ``analyze_string`` is ever called: pure regular expressions on
one piece of text. Never ``analyze_line`` nor ``verify``: those consult the
library's global settings and may send the candidate secret over the network
to check it. The library works on ``str``; bytes are decoded as Latin-1, which
maps every byte to one character, so binary files are scanned too and offsets
are unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import detect_secrets.plugins
from detect_secrets.__version__ import VERSION
from detect_secrets.plugins.base import RegexBasedDetector

NAME = "detect-secrets"


@dataclass(frozen=True)
class LibraryDetector:
    """One detect-secrets plugin: its class name (the rule id's tail) and what it finds."""

    name: str
    description: str
    plugin: RegexBasedDetector
    quick: tuple[re.Pattern[str], ...]

    @property
    def rule_id(self) -> str:
        return f"{NAME}.{self.name}"

    def maybe(self, text: str) -> bool:
        """False when no line of (many-line) ``text`` can hold what the plugin finds: a cheap first pass."""
        return any(p.search(text) is not None for p in self.quick)

    def find(self, text: str) -> Iterator[str]:
        """Every secret value the plugin's regexes find in ``text`` (never verified, never sent anywhere)."""
        yield from self.plugin.analyze_string(text)


@cache
def available() -> dict[str, type[RegexBasedDetector]]:
    """Every concrete regex plugin the installed library ships, by class name."""
    out: dict[str, type[RegexBasedDetector]] = {}
    for info in pkgutil.iter_modules(detect_secrets.plugins.__path__):
        module = importlib.import_module(f"detect_secrets.plugins.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, RegexBasedDetector)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
            ):
                out[name] = cls
    return out


def detectors(names: tuple[str, ...]) -> tuple[LibraryDetector, ...]:
    """Instantiate the named plugins; ``KeyError`` names the first one the library does not ship."""
    plugins = available()
    out: list[LibraryDetector] = []
    for name in names:
        cls = plugins[name]
        plugin = cls()
        # The plugin's own regexes, with ^ and $ at every line: on many lines at once they match
        # wherever they would match one of the lines alone (and maybe more, which is fine for a first pass).
        quick = tuple(re.compile(p.pattern, p.flags | re.MULTILINE) for p in plugin.denylist)
        out.append(LibraryDetector(name, f'a "{cls.secret_type}"', plugin, quick))
    return tuple(out)


def version() -> str:
    """The installed library's version, for the gate's summary."""
    return str(VERSION)
