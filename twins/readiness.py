"""Wait until a twin is ready: a TCP port opens, an HTTP status, a log line, a command,
a pattern on a VM's serial console.

Backend-neutral: tcp and http connect to ``twin.address`` from inside the twin's
sandbox (``twin.inside()``: the host itself has no route there); log and command go
through the twin (``twin.logs``, ``twin.exec``), console through a VM twin's
``console()``. Fails fast when the twin exits; a failure quotes the twin's last output
(a VM's: its console) and the twin's advice (e.g. another disk bus).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from typing import Any

from restoredrill.durations import format_duration

from .base import Twin, TwinError
from .spec import CommandProbe, ConsoleProbe, HttpProbe, LogProbe, TcpProbe

LOG_LINES = 5000
"""How much of the twin's output a log probe searches."""
TAIL = 20
"""Lines of output quoted in an error."""
ATTEMPT = 2.0
"""Longest single tcp/http attempt, so a dead twin is noticed soon."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A probe never follows a redirect (it could point outside the sandbox)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 60 else format_duration(value)


def _host(twin: Twin, kind: str) -> str:
    if not twin.address:
        raise TwinError(
            f"{twin.name} has no address for a {kind} probe: use a log or command probe"
        )
    return str(twin.address)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _tcp(twin: Twin, probe: TcpProbe, budget: float) -> tuple[bool, str]:
    host = _host(twin, "tcp")
    try:
        with twin.inside(), socket.create_connection((host, probe.port), timeout=budget):
            return True, "open"
    except OSError as exc:
        return False, _reason(exc)


def _url(twin: Twin, probe: HttpProbe) -> str:
    host = _host(twin, "http")
    if ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    path = probe.path if probe.path.startswith("/") else f"/{probe.path}"
    return f"http://{host}:{probe.port}{path}"


def _http(twin: Twin, probe: HttpProbe, budget: float) -> tuple[bool, str]:
    try:
        with twin.inside(), _OPENER.open(_url(twin, probe), timeout=budget) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, HTTPException) as exc:
        return False, _reason(exc)
    return status == probe.status, f"status {status} (expected {probe.status})"


def _log(twin: Twin, probe: LogProbe, budget: float) -> tuple[bool, str]:
    return probe.contains in twin.logs(LOG_LINES), "not seen"


def _command(twin: Twin, probe: CommandProbe, budget: float) -> tuple[bool, str]:
    try:
        out = twin.exec(probe.command, timeout=max(budget, 1.0))
    except TwinError as exc:
        return False, str(exc)
    if out.exit_code == 0:
        return True, "exit 0"
    said = (out.stderr.strip() or out.stdout.strip()).splitlines()
    return False, f"exit {out.exit_code}" + (f": {said[-1]}" if said else "")


def _console(twin: Twin, probe: ConsoleProbe, budget: float) -> tuple[bool, str]:
    console = getattr(twin, "console", None)
    if console is None:
        raise TwinError(
            f"{twin.name} has no serial console: a console probe needs a VM twin "
            "(backup.kind: disk_image)"
        )
    return re.search(probe.pattern, console()) is not None, "not shown"


def describe(twin: Twin, probe: Any) -> str:
    """The probe in words, e.g. ``tcp 10.77.0.5:8080``."""
    if isinstance(probe, TcpProbe):
        return f"tcp {twin.address}:{probe.port}"
    if isinstance(probe, HttpProbe):
        return f"http GET {_url(twin, probe)}"
    if isinstance(probe, LogProbe):
        return f"log line containing {probe.contains!r}"
    if isinstance(probe, ConsoleProbe):
        return f"console showing {probe.pattern!r}"
    command = probe.command if isinstance(probe.command, str) else " ".join(probe.command)
    return f"command `{command}`"


_PROBES: dict[type, Callable[[Twin, Any, float], tuple[bool, str]]] = {
    TcpProbe: _tcp,
    HttpProbe: _http,
    LogProbe: _log,
    CommandProbe: _command,
    ConsoleProbe: _console,
}


def last_output(twin: Twin, lines: int = TAIL) -> str:
    try:
        text = twin.logs(lines).strip()
    except Exception as exc:  # noqa: BLE001 - the error message matters more
        return f"(output unavailable: {exc})"
    return text or "(no output)"


def _advice(twin: Twin) -> str:
    with_hint = getattr(twin, "advice", None)
    hint = with_hint() if with_hint is not None else ""
    return f" (hint: {hint})" if hint else ""


def exited(twin: Twin) -> TwinError:
    code = twin.exit_code()
    how = "stopped" if code is None else f"exited with code {code}"
    return TwinError(
        f"{twin.name} {how} before it was ready{_advice(twin)}; "
        f"last output:\n{last_output(twin)}"
    )


def wait_ready(twin: Twin, probe: Any, *, poll: float = 0.05) -> float:
    """Poll ``probe`` until it passes; return the seconds waited.

    Raises TwinError when the twin exits first (with its exit code and output) or when
    ``probe.timeout`` passes (naming the probe, the last failure and the output).
    """
    check = _PROBES.get(type(probe))
    if check is None:
        raise TwinError(f"{twin.name}: unknown readiness probe {probe!r}")
    limit = probe.timeout.total_seconds()
    started = time.monotonic()
    deadline = started + limit
    while True:
        if not twin.is_running():
            raise exited(twin)
        budget = max(0.05, min(ATTEMPT, deadline - time.monotonic()))
        if isinstance(probe, CommandProbe):
            budget = max(0.05, deadline - time.monotonic())
        ok, last = check(twin, probe, budget)
        if ok:
            return time.monotonic() - started
        now = time.monotonic()
        if now >= deadline:
            if not twin.is_running():
                raise exited(twin)
            raise TwinError(
                f"{twin.name} not ready after {_seconds(limit)}: {describe(twin, probe)} "
                f"{last}{_advice(twin)}; last output:\n{last_output(twin)}"
            )
        time.sleep(min(poll, deadline - now))
