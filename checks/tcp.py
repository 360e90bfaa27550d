"""``tcp``: a port of the twin accepts (or refuses) connections.

Example (a ``checks:`` entry of a system in site.yaml)::

    - {kind: tcp, port: 8080}
"""

from __future__ import annotations

import socket
import time
from typing import Literal

from pydantic import Field

from .base import CheckError, CheckResult, CheckSpecBase, SandboxGuard, Target, error_result, result


class TcpCheck(CheckSpecBase):
    """Connect to ``host:port`` (host defaults to the twin's sandbox address)."""

    kind: Literal["tcp"] = "tcp"
    port: int = Field(ge=1, le=65535)
    host: str | None = Field(None, description="an IP address; default: the twin's address")
    open: bool = Field(True, description="the port accepts connections (false: it must not)")

    def default_name(self) -> str:
        return f"tcp {self.host or '{address}'}:{self.port} {'open' if self.open else 'closed'}"


Spec = TcpCheck
"""The spec of this check kind (the registry's convention)."""


def probe(host: str, port: int, timeout: float) -> str:
    """``open``, ``refused``, ``timeout`` or ``unreachable (…)``: what a connect attempt saw."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"unreachable ({exc.strerror or exc})"


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Try one connection within ``spec.timeout``; never raises."""
    started = time.perf_counter()
    name = spec.label()
    try:
        host = spec.host or target.address
        if not host:
            raise CheckError(f"{target.name} has no address: give the tcp check a host")
        name = spec.name or f"tcp {_hostport(host, spec.port)} {'open' if spec.open else 'closed'}"
        guard.allow(host)
        observed = probe(host, spec.port, spec.timeout)
        return [
            result(
                spec,
                (observed == "open") == spec.open,
                expected="open" if spec.open else "closed",
                observed=observed,
                started=started,
                name=name,
            )
        ]
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started, name=name)]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
