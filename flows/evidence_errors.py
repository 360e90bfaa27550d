"""The evidence store's errors (one root: :class:`EvidenceError`), in a module of their own
so the store, the chain and the signing key can all raise them without importing each other."""

from __future__ import annotations

from restoredrill.errors import ExitCode, RestoredrillError

__all__ = ["AlreadyRecorded", "EvidenceConfigError", "EvidenceError", "RunNotFound"]


class EvidenceError(RestoredrillError):
    """The evidence database cannot be used; the message names it (password masked) and says
    what to do. Before or outside a run that is bad input (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class EvidenceConfigError(EvidenceError):
    """The evidence URL itself is wrong (not a URL, unsupported database, driver missing)."""


class RunNotFound(EvidenceError, KeyError):
    """No run with that id in the store."""

    def __str__(self) -> str:
        return str(self.args[0])


class AlreadyRecorded(EvidenceError):
    """A run with that id is already in the chain (records are append-only)."""
