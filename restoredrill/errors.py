"""One root for every error restoredrill raises on purpose, carrying the exit code it ends with.

Every project exception derives from :class:`RestoredrillError`; the command line catches
that one type in one place and ends with ``exit_code``. A message says what is wrong and
what to do, in words a plant's engineer can act on (never a traceback).

Exit codes: 0 every system passed; 1 a failure (a system did not pass, a command could not
do its work); 2 bad input, or the run could not start; 3 the run finished but its evidence
was not recorded (spooled); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "InputError", "Interrupted", "RestoredrillError"]


class ExitCode(IntEnum):
    """How ``restoredrill`` ends."""

    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    NOT_RECORDED = 3
    INTERRUPTED = 130


class RestoredrillError(Exception):
    """Root of restoredrill's errors: a message a person can act on, and the exit code.

    ``exit_code`` defaults to the class's (``FAILURE`` here; subclasses set theirs).
    ``headline`` is how the command line introduces the message (``""``: the message is
    its own headline, e.g. ``file:line: field: problem`` lines).
    """

    exit_code: int = ExitCode.FAILURE
    headline: str = "error"

    def __init__(self, message: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(RestoredrillError, ValueError):
    """Bad input: a file, option or argument is not what is expected (the message names it).

    Also a ValueError: raised inside a pydantic validator (a helper shared by a validator
    and the command line), it becomes that field's error.
    """

    exit_code = ExitCode.BAD_INPUT


class Interrupted(RestoredrillError):
    """The user stopped the command (Ctrl-C); the message says what was cleaned up."""

    exit_code = ExitCode.INTERRUPTED
    headline = ""
