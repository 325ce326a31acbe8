"""The one place where errors become messages and exit codes.

Every entry point's ``main`` is wrapped by :func:`run`: a :class:`ReleaseError`
prints its diagnostics on stderr (no traceback) and exits with its code from
:data:`release.errors.EXIT_CODES`; an unnamed system failure (:class:`OSError`)
is a :class:`SystemFailure`; Ctrl-C exits 130 with a one-line message.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import NoReturn

from release.errors import Interrupted, ReleaseError, SystemFailure

EXIT_INTERRUPTED = Interrupted.exit_code


def fail(prog: str, error: ReleaseError) -> int:
    """Print ``error`` for the user and return its exit code."""
    print(error.render(prog), file=sys.stderr)
    return error.exit_code


def run(prog: str, main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)`` and turn any :class:`ReleaseError` into a message and exit code.

    A command's script turns the garbage collector off before it imports its
    modules (``if __name__ == "__main__": gc.disable()``): what they allocate
    lives as long as the process, and collecting while they load only walks
    it again and again (about a twentieth of a step process's start). Here,
    before the command runs, what was loaded is frozen (never walked again)
    and the collector is turned back on. A collector that is on (a test
    calling ``main``) is left as it is.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except ReleaseError as e:
        return fail(prog, e)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        # An environment failure no layer could name better (a full disk, a
        # vanished directory): one line, never a traceback.
        where = f": {e.filename}" if e.filename else ""
        return fail(prog, SystemFailure(f"{e.strerror or e}{where}"))


def exit_process(code: int) -> NoReturn:
    """End a command's process with ``code``, without the interpreter's final garbage collection.

    By then every output is written and closed and the operating system takes
    the memory back; the final collection would only walk every object the
    libraries loaded (a third of a second once the CycloneDX schema validator
    is loaded). Only for ``__main__``: a process that goes on must not freeze.
    """
    gc.freeze()
    sys.exit(code)
