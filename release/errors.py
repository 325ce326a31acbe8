"""The one exception root of the release pipeline, split by meaning.

Every entry point turns a :class:`ReleaseError` into one message and an exit
code in exactly one place (:func:`release.cli.run`). :data:`EXIT_CODES` is the
one table of exit codes: each code has one meaning, the same in every
command, so a customer's script can tell "tampered" (:class:`VerificationError`)
from "could not run" (:class:`BadInputError`, :class:`ToolchainError`).
"""

from __future__ import annotations

from typing import ClassVar


class ReleaseError(Exception):
    """Base of every error the pipeline reports to a user.

    ``message`` says what went wrong and names the thing; ``hint`` says how to
    fix it. ``exit_code`` is what the process exits with: the class's entry in
    :data:`EXIT_CODES` (a subclass without one has its nearest base's).
    """

    exit_code: ClassVar[int]

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The text shown to the user: the problem, then how to fix it."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def render(self, prog: str) -> str:
        """The whole message for the terminal, prefixed with the program's name."""
        return f"{prog}: error: {self.diagnostics()}"


class BadInputError(ReleaseError):
    """A user-supplied input is malformed or missing (config, policy, key, tree)."""


class ToolchainError(ReleaseError):
    """A required tool (cargo, a target's standard library, a linker) is missing or failed."""


class GateFailure(ReleaseError):
    """A release gate (policy check) did not pass.

    Rendered as the gates' own output (the hint) followed by the message alone
    on its line, the banner a release engineer looks for.
    """

    def render(self, prog: str) -> str:
        return f"{self.hint}\n{self.message}" if self.hint else self.message


class PackagingError(ReleaseError):
    """A bundle could not be packaged: hostile input or forbidden content."""


class BuildBusyError(ReleaseError):
    """Another release build holds the lock."""


class SigningError(ReleaseError):
    """A signature could not be made (bad key, wrong passphrase)."""


class VerificationError(ReleaseError):
    """Something was checked and found wrong: a bad signature, a hash mismatch."""


class Interrupted(ReleaseError):
    """The user interrupted the run (Ctrl-C); says whether the new release was published."""

    def __init__(self, published: bool) -> None:
        state = "the new release had been published" if published else "nothing was published"
        super().__init__(f"interrupted; {state}")
        self.published = published

    def render(self, prog: str) -> str:
        return f"{prog}: {self.message}"


class SystemFailure(ReleaseError):
    """The system failed under the pipeline: a full disk, a permission, a path that cannot be removed or replaced."""


class InjectedFault(ReleaseError):
    """A failure injected on purpose through ``RANSOMEYE_FAILPOINT`` (testing)."""


# The one table of exit codes (0 is success). The README lists it; a test runs each.
EXIT_CODES: dict[type[ReleaseError], int] = {
    VerificationError: 1,  # something was checked and found wrong
    BadInputError: 2,  # a user-supplied input is malformed or missing
    ToolchainError: 3,  # a required tool or the environment is missing or failed
    GateFailure: 4,  # a release gate did not pass
    BuildBusyError: 5,  # another release build holds the lock
    PackagingError: 6,  # a bundle was refused: hostile input or forbidden content
    SigningError: 7,  # a signature could not be made: bad key, wrong passphrase
    SystemFailure: 8,  # the system failed: disk full, permission, a path that cannot be replaced
    InjectedFault: 9,  # a failure injected on purpose (RANSOMEYE_FAILPOINT, testing)
    Interrupted: 130,  # interrupted (Ctrl-C, SIGTERM); says whether the release was published
}


for _error, _code in EXIT_CODES.items():
    _error.exit_code = _code
