"""What every check returns, and what it runs against."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from restoredrill.errors import RestoredrillError


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


class CheckResult(BaseModel):
    """One observation: what was expected, what was seen, how long it took."""

    name: str
    kind: str
    status: Status
    expected: Any = None
    observed: Any = None
    duration_s: float = 0.0
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS


class ExecResult(Protocol):
    exit_code: int
    stdout: str
    stderr: str


class Target(Protocol):
    """The restored system as a check sees it (a twin, or anything with an address)."""

    name: str
    address: str | None

    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecResult: ...

    @property
    def testinfra_url(self) -> str | None: ...


@dataclass
class AddressTarget:
    """A target known only by its address (a device twin, a peer, a test server)."""

    name: str
    address: str | None
    testinfra_url: str | None = None

    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecResult:
        raise CheckError(f"{self.name} has no shell: only network checks can run against it")


class CheckError(RestoredrillError):
    """A check could not be carried out (as opposed to: it ran and failed)."""


class SandboxGuard:
    """Refuses connections to anything outside the sandbox networks and loopback.

    A check must never reach a production device: only the run's own isolated
    networks (and loopback, where a test runs its own servers) are allowed. With
    ``confined``, a connection is allowed only from a thread inside the sandbox's own
    network (the host may hold a production network card on the very same subnet).
    """

    def __init__(
        self, networks: Sequence[str] = (), confined: Callable[[], bool] | None = None
    ) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.confined = confined

    def allow(self, host: str) -> None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host == "localhost":
                ip = None
            else:
                raise CheckError(f"{host!r}: checks connect to IP addresses only") from None
        if ip is not None and not ip.is_loopback and not any(ip in n for n in self.networks):
            raise CheckError(
                f"{host} is outside the sandbox networks "
                f"({', '.join(map(str, self.networks)) or 'none'}): refusing to connect"
            )
        if self.confined is not None and not self.confined():
            raise CheckError(
                f"refusing to connect to {host} from outside the sandbox's network "
                "(the host's own network cards may lead to the production device)"
            )


class CheckSpecBase(BaseModel):
    """Fields every check kind accepts."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="label shown in reports; a default is derived")
    timeout: float = Field(10.0, gt=0, description="seconds before the check gives up")

    def label(self) -> str:
        """The name shown in reports."""
        return self.name or self.default_name()

    def default_name(self) -> str:
        return getattr(self, "kind", "check")


def result(
    spec: CheckSpecBase,
    ok: bool,
    *,
    expected: Any,
    observed: Any,
    started: float,
    message: str = "",
    name: str | None = None,
) -> CheckResult:
    """Build a pass/fail result for ``spec``."""
    return CheckResult(
        name=name or spec.label(),
        kind=getattr(spec, "kind", "check"),
        status=Status.PASS if ok else Status.FAIL,
        expected=expected,
        observed=observed,
        duration_s=round(time.perf_counter() - started, 4),
        message=message,
    )


def error_result(
    spec: CheckSpecBase, problem: BaseException | str, started: float, *, name: str | None = None
) -> CheckResult:
    """An ``error`` result: the check could not be carried out, and why.

    ``problem`` is the reason in words, or the exception that stopped the check (a
    ``CheckError`` speaks for itself; anything else is shown with its type).
    """
    if isinstance(problem, BaseException) and not isinstance(problem, CheckError):
        problem = f"{type(problem).__name__}: {problem}"
    return CheckResult(
        name=name or spec.label(),
        kind=getattr(spec, "kind", "check"),
        status=Status.ERROR,
        duration_s=round(time.perf_counter() - started, 4),
        message=str(problem),
    )
