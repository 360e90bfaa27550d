"""``agent``: a command run in a VM through the QEMU guest agent (no SSH or WinRM needed).

Example (a ``checks:`` entry of a VM system in site.yaml)::

    - {kind: agent, command: [systemctl, is-active, historian], exit_code: 0, stdout: active}

A string command runs through ``/bin/sh -c``; ``contains:`` looks for text in stdout.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from .base import CheckResult, CheckSpecBase, SandboxGuard, Target, error_result, result
from .vm_target import vm_target


class AgentCheck(CheckSpecBase):
    """Run ``command`` in the guest; compare its exit code and output."""

    kind: Literal["agent"] = "agent"
    command: list[str] | str = Field(description="argv, or a string run by /bin/sh -c")
    exit_code: int | None = Field(0, description="expected exit code (null: any)")
    stdout: str | None = Field(None, description="expected stdout, whitespace at the ends ignored")
    contains: str | None = Field(None, description="text stdout must contain")
    timeout: float = Field(30.0, gt=0, description="seconds the command may take")

    def default_name(self) -> str:
        cmd = self.command if isinstance(self.command, str) else " ".join(self.command)
        return f"agent `{cmd[:60]}`"


Spec = AgentCheck
NETWORK = False
"""It goes through QEMU's guest-agent channel, not the network."""


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """One guest-exec; pass when every given expectation holds; never raises."""
    started = time.perf_counter()
    try:
        out = vm_target(target, "agent").agent_exec(spec.command, spec.timeout)
        expected: dict[str, object] = {}
        observed: dict[str, object] = {"exit_code": out.exit_code}
        ok = True
        if spec.exit_code is not None:
            expected["exit_code"] = spec.exit_code
            ok &= out.exit_code == spec.exit_code
        if spec.stdout is not None:
            expected["stdout"] = spec.stdout
            ok &= out.stdout.strip() == spec.stdout.strip()
        if spec.contains is not None:
            expected["stdout contains"] = spec.contains
            ok &= spec.contains in out.stdout
        observed["stdout"] = out.stdout.strip()[-500:]
        if out.stderr.strip():
            observed["stderr"] = out.stderr.strip()[-300:]
        return [result(spec, ok, expected=expected, observed=observed, started=started)]
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started)]
