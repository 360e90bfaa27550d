"""What the VM check kinds (screenshot, agent) need from their target: a small protocol.

A VM twin offers, besides a check ``Target``'s name, address and ``exec``: a screen
dump, commands through its guest agent, its serial console, and a folder where
screenshots are kept as evidence. ``twins.qemu.QemuVM`` is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .base import CheckError, ExecResult, Target


@runtime_checkable
class VMTarget(Protocol):
    name: str
    address: str | None

    def screendump(self, out: Path) -> Path:
        """Save the screen as PNG at ``out``."""

    def agent_exec(self, command: Sequence[str] | str, timeout: float = 30.0) -> ExecResult:
        """Run a command through the guest agent."""

    def console(self) -> str:
        """The serial console's output so far, as text."""

    def screens_dir(self) -> Path:
        """Where screenshots are kept (evidence of the run)."""


def vm_target(target: Target | VMTarget, kind: str) -> VMTarget:
    """``target`` as a VM target, or CheckError saying the check needs a VM."""
    if not isinstance(target, VMTarget):
        raise CheckError(f"{target.name} is not a VM: {kind} checks need a whole-image (vm) twin")
    return target
