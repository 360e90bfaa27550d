"""Readiness of a VM twin on its serial console: ``ready: {kind: console, pattern: "login:"}``.

Phase 2 adds :class:`ConsoleProbe` to ``twins.spec.Probe`` and :func:`wait_console` to
the probes of ``twins.readiness``. The console is saved with the run (``serial.log``);
a VM that stops, or never shows the pattern, is an error quoting its last lines.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from restoredrill.durations import Duration


class ConsoleProbe(BaseModel):
    """Ready when the serial console shows ``pattern`` (a regular expression)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["console"] = "console"
    pattern: str = Field(description='a regular expression, e.g. "login:"')
    timeout: Duration = Field("5m", validate_default=True, description="give up after this long")


class ConsoleTwin(Protocol):
    def wait_console(self, pattern: str, timeout: float, poll: float = 0.2) -> float: ...


def wait_console(twin: ConsoleTwin, probe: ConsoleProbe) -> float:
    """Seconds from boot until the console showed ``probe.pattern``; TwinError (with the
    console's last lines) when the VM stops first or ``probe.timeout`` passes."""
    return twin.wait_console(probe.pattern, probe.timeout.total_seconds())
