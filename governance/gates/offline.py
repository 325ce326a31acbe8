"""In the gates' process, ``requests`` is an offline stand-in whose every call refuses.

detect-secrets imports ``requests`` for its plugins' ``verify``, which sends a
candidate secret to the service it belongs to; the gates never call it
(:mod:`governance.gates.secret_library` runs the regexes only). In the gates'
own process (``check_gates.py``), :func:`install` puts this stand-in in its
place before the library is imported: no code path of the library (which
uses ``requests`` alone to reach a service) can send a candidate secret,
even by mistake, and the process does not import an HTTP stack it never uses
(``requests``, ``urllib3``, ``charset_normalizer``: 80 ms of the gates'
260). Imported as a library (the tests), nothing is replaced.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

from release.errors import ToolchainError

NAME = "requests"
VERBS = ("request", "get", "head", "post", "put", "patch", "delete", "options")


class OfflineError(RuntimeError):
    """Something in the gates' process tried to send a request."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise OfflineError(f"the release gates are offline: something in their process called {NAME} to send a request")


class RequestException(OSError):
    """What the library catches around a request (never raised here: a request is refused outright)."""


class Response:
    """Named in the library's annotations; never made."""


def _missing(name: str) -> NoReturn:
    raise AttributeError(f"the gates' offline stand-in for {NAME} has no {name!r}")


def stand_in() -> tuple[types.ModuleType, types.ModuleType]:
    """The ``requests`` and ``requests.exceptions`` modules of the gates' process."""
    exceptions = types.ModuleType(f"{NAME}.exceptions", "Offline: no request is ever made.")
    exceptions.RequestException = RequestException  # type: ignore[attr-defined]
    module = types.ModuleType(NAME, __doc__)
    module.exceptions = exceptions  # type: ignore[attr-defined]
    module.Response = Response  # type: ignore[attr-defined]
    module.RequestException = RequestException  # type: ignore[attr-defined]
    for verb in VERBS:
        setattr(module, verb, _refuse)
    module.__getattr__ = _missing  # type: ignore[method-assign]
    return module, exceptions


def install() -> None:
    """Put the stand-in in place of ``requests`` in this process (again: nothing).

    Raises :class:`ToolchainError` when the real one is already imported.
    """
    current = sys.modules.get(NAME)
    if current is not None:
        if getattr(current, "Response", None) is Response:
            return
        raise ToolchainError(
            f"{NAME} was imported before the gates started (by a sitecustomize or .pth file?): "
            "they run only with their offline stand-in for it",
            hint="run the gates with `python3 -I governance/gates/check_gates.py`, or remove what imports it",
        )
    module, exceptions = stand_in()
    sys.modules[NAME] = module
    sys.modules[exceptions.__name__] = exceptions
