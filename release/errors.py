"""The one exception root of the release pipeline, split by meaning.

Every entry point turns a :class:`ReleaseError` into one message and an exit
code in exactly one place (:func:`release.cli.run`). A customer's script can
tell "tampered" (:class:`VerificationError`) from "could not run"
(:class:`BadInputError`, :class:`ToolchainError`).
"""

from __future__ import annotations


class ReleaseError(Exception):
    """Base of every error the pipeline reports to a user.

    ``message`` says what went wrong and names the thing; ``hint`` says how to
    fix it. ``exit_code`` is what the process exits with.
    """

    exit_code = 1

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

    exit_code = 2


class ToolchainError(ReleaseError):
    """A required tool (cargo, a target's standard library, a linker) is missing or failed."""

    exit_code = 3


class GateFailure(ReleaseError):
    """A release gate (policy check) did not pass.

    Rendered as the gates' own output (the hint) followed by the message alone
    on its line, the banner a release engineer looks for.
    """

    exit_code = 4

    def render(self, prog: str) -> str:
        return f"{self.hint}\n{self.message}" if self.hint else self.message


class PackagingError(ReleaseError):
    """A bundle could not be packaged: hostile input or forbidden content."""

    exit_code = 4


class BuildBusyError(ReleaseError):
    """Another release build holds the lock."""

    exit_code = 5


class SigningError(ReleaseError):
    """A signature could not be made (bad key, wrong passphrase)."""

    exit_code = 2


class VerificationError(ReleaseError):
    """Something was checked and found wrong: a bad signature, a hash mismatch."""

    exit_code = 1


class Interrupted(ReleaseError):
    """The user interrupted the run (Ctrl-C); says whether the new release was published."""

    exit_code = 130

    def __init__(self, published: bool) -> None:
        state = "the new release had been published" if published else "nothing was published"
        super().__init__(f"interrupted; {state}")
        self.published = published

    def render(self, prog: str) -> str:
        return f"{prog}: {self.message}"


class InjectedFault(ReleaseError):
    """A failure injected on purpose through ``RANSOMEYE_FAILPOINT`` (testing)."""

    exit_code = 1
