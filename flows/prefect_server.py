"""The Prefect server a run talks to: a configured one, ``serve``'s, or one started here.

Prefect's own temporary server gives up after 20 s, and the first start of a fresh
``PREFECT_HOME`` sets up its SQLite database (116 migrations, CPU-bound): ~10 s on an
idle 2-core machine, 35-40 s on a loaded one. So restoredrill starts and waits for the
server itself, in this order:

1. ``PREFECT_API_URL`` set (environment or Prefect profile): that server, checked to answer.
2. a ``restoredrill serve`` of this ``PREFECT_HOME`` runs: its server (it leaves its
   address in ``PREFECT_HOME/restoredrill-server.json`` while it runs).
3. otherwise a local server on 127.0.0.1 and a free port (SQLite in ``PREFECT_HOME``,
   the same uvicorn app Prefect's temporary server runs), waited for with a progress line
   up to ``RESTOREDRILL_PREFECT_STARTUP_TIMEOUT`` seconds (default 180), and stopped when
   the run ends: also on Ctrl-C, and (Linux) when this process dies, by a parent-death
   signal. Its output goes to ``PREFECT_HOME/restoredrill-server.log``.

Example::

    with prefect_api(Console(stderr=True)) as url:
        record = run_site("site.yaml")
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from restoredrill.errors import ExitCode, RestoredrillError

if TYPE_CHECKING:
    from rich.console import Console

TIMEOUT_ENV = "RESTOREDRILL_PREFECT_STARTUP_TIMEOUT"
DEFAULT_TIMEOUT_S = 180.0
REGISTRY = "restoredrill-server.json"
LOG = "restoredrill-server.log"
APP = "prefect.server.api.server:create_app"

# Run by the server's own interpreter before it becomes uvicorn: die with the parent
# (PR_SET_PDEATHSIG survives exec), and not start at all if the parent is already gone.
_LAUNCH = """\
import ctypes, os, signal, sys
if sys.platform == "linux":
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
"""A log line naming an exception and its message, e.g. ``sqlite3.DatabaseError: …``."""


class PrefectServerError(RestoredrillError):
    """No Prefect server to run on; the message says what and what to do (the run could not
    start: exit 2)."""

    exit_code = ExitCode.BAD_INPUT


@dataclass
class LocalServer:
    """A Prefect server process this process started."""

    url: str
    """Its API URL, ``http://127.0.0.1:PORT/api``."""
    process: subprocess.Popen[bytes]
    log: Path
    first: bool = False
    """Started on a fresh ``PREFECT_HOME``: it sets up its database first."""


def startup_timeout() -> float:
    """Seconds to wait for a local server (``RESTOREDRILL_PREFECT_STARTUP_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PrefectServerError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0 (e.g. 300)"
        )
    return value


def healthy(url: str, timeout: float = 5.0) -> str | None:
    """None when the server at ``url`` answers its health check, else why not."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None


def configured_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect reads it (environment, then profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def require_configured(purpose: str) -> str:
    """The configured server, checked to answer (for ``deploy`` and ``run --dispatch``,
    whose workers must reach it too)."""
    url = configured_url()
    if not url:
        raise PrefectServerError(
            f"PREFECT_API_URL is not set: name the Prefect server {purpose}, e.g. "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (docker-compose up -d starts one)"
        )
    _check_configured(url, "start it (docker-compose up -d) or correct PREFECT_API_URL")
    return url


def _check_configured(url: str, advice: str) -> None:
    problem = healthy(url)
    if problem:
        raise PrefectServerError(
            f"Prefect server at {url} (PREFECT_API_URL) is not reachable: {problem}; {advice}"
        )


def prefect_home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value())


@contextlib.contextmanager
def prefect_api(
    console: Console | None = None, *, serve: bool = False, port: int = 0
) -> Iterator[str]:
    """Make Prefect in this process (and its children) use a running server; yield its URL.

    ``serve``: the server ``restoredrill serve`` needs: its scheduler and UI run, on
    ``port`` if free (else a free one), and other runs of this ``PREFECT_HOME`` reuse it.
    A one-shot run (the default) reuses such a server, else starts its own, UI-less one.
    """
    url = configured_url()
    if url:
        _check_configured(
            url, "start it, or unset PREFECT_API_URL to let restoredrill start a local one"
        )
        yield url
        return
    if not serve:
        url = registered()
        if url:
            if console is not None:
                console.print(f"using the Prefect server of `restoredrill serve` at {url}")
            with using(url):
                yield url
            return
    if serve and port and not port_free(port):
        if console is not None:
            console.print(f"port {port} is taken: the local Prefect server takes a free one")
        port = 0
    with local_server(console, port=port or None, full=serve) as server, using(server.url):
        if serve:
            if console is not None:
                console.print(f"Prefect UI: {server.url.removesuffix('/api')}", highlight=False)
            with _registered(server):
                yield server.url
        else:
            yield server.url


@contextlib.contextmanager
def using(url: str) -> Iterator[None]:
    """Point Prefect at ``url``, here and in the processes started meanwhile."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@contextlib.contextmanager
def local_server(
    console: Console | None = None,
    *,
    port: int | None = None,
    full: bool = False,
    timeout: float | None = None,
) -> Iterator[LocalServer]:
    """A Prefect server on 127.0.0.1 (``port`` or a free one) for the ``with`` block.

    ``full``: all of Prefect's services (the scheduler ``serve`` needs) and the UI;
    otherwise the services of Prefect's temporary server and no UI. Waits up to
    ``timeout`` (default: :func:`startup_timeout`) for ``/api/health``; PrefectServerError
    if it cannot start. Started from the main thread (the parent-death signal follows the
    thread that started it).
    """
    limit = timeout if timeout is not None else startup_timeout()
    database = _sqlite_path()
    server = _take_early(full, port) or _launch(port, full, database)
    try:
        what = "starting the local Prefect server" + (
            " (first run: setting up its database, this can take a minute)" if server.first else ""
        )
        _wait(server, what, limit, console, database)
        yield server
    finally:
        flush_to_server()
        stop(server.process)


def _launch(port: int | None, full: bool, database: Path | None) -> LocalServer:
    """Start a local server process (not waited for)."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    first = database is not None and not database.exists()
    if port and not port_free(port):
        raise PrefectServerError(_port_taken(port))
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / LOG
    env = _server_env(full)
    argv = [sys.executable, "-c", _LAUNCH, str(os.getpid()), "-m", "uvicorn", "--factory", APP]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    argv += ["--lifespan", "on"]
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {url}\n".encode())
        out.flush()
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return LocalServer(url, process, log, first)


_early: LocalServer | None = None
"""A one-shot run's server, started by :func:`start_early` and not yet taken."""


def start_early() -> None:
    """Start the local server a one-shot run will need now, in the background, so that
    its start (loading its code; on a fresh ``PREFECT_HOME``, setting up its database)
    overlaps the run's own preparation (checks of the site, demo backups, imports);
    :func:`prefect_api` then waits for it with its progress line. Nothing is started when
    a configured or ``serve``'s server will be used; the server is stopped at exit if no
    run took it (bad input)."""
    global _early
    if _early is not None or configured_url() or registered():
        return
    with contextlib.suppress(PrefectServerError, OSError):
        _early = _launch(None, False, _sqlite_path())
        atexit.register(_stop_early)


def _take_early(full: bool, port: int | None) -> LocalServer | None:
    global _early
    server, _early = _early, None
    if server is None:
        return None
    if full or port or server.process.poll() is not None:  # not what is asked for
        stop(server.process)
        return None
    return server


def _stop_early() -> None:
    """At exit: stop the early server if no run took it."""
    global _early
    server, _early = _early, None
    if server is not None:
        stop(server.process)


def _server_env(full: bool) -> dict[str, str]:
    """The server process's environment: this process's Prefect settings, no telemetry;
    ``full``: the UI and every service, else as Prefect's temporary server."""
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "true" if full else "false",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    if not full:
        env["PREFECT__SERVER_EPHEMERAL"] = "1"  # as Prefect's temporary server: no scheduler
        # a run uses no blocks; registering their types costs a fresh home seconds (a
        # full server, serve's, registers them for the UI)
        env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
    return env


def flush_to_server() -> None:
    """Send what Prefect's log and event workers in this process still hold (else they
    report "Error logging to API" at exit, once the server is gone)."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


def _wait(
    server: LocalServer,
    what: str,
    limit: float,
    console: Console | None,
    database: Path | None,
) -> None:
    t0 = time.monotonic()
    status = None
    if console is not None and console.is_terminal:
        status = console.status(f"{what} …")
        status.start()
    elif console is not None:
        console.print(f"{what} …", highlight=False)
    try:
        while True:
            if server.process.poll() is not None:
                raise PrefectServerError(_why_stopped(server, database))
            if healthy(server.url, timeout=2) is None:
                break
            elapsed = time.monotonic() - t0
            if elapsed > limit:
                raise PrefectServerError(
                    f"the local Prefect server did not answer within {limit:g} s "
                    f"({TIMEOUT_ENV}); its first start sets up its database, which takes "
                    f"longer on a busy machine: raise the limit (e.g. {TIMEOUT_ENV}=600), "
                    f"or run a Prefect server and set PREFECT_API_URL; its log: {server.log}"
                )
            if status is not None:
                status.update(f"{what} … {elapsed:.0f} s")
            time.sleep(min(0.25, max(limit - elapsed, 0.01)))
    finally:
        if status is not None:
            status.stop()
    if status is not None and console is not None:
        console.print(
            f"local Prefect server ready in {time.monotonic() - t0:.0f} s", highlight=False
        )


def _why_stopped(server: LocalServer, database: Path | None) -> str:
    tail = _log_tail(server.log)
    errors = [ln for ln in tail if _EXCEPTION.match(ln)]
    last = (errors or [ln for ln in tail if ln.strip()] or ["no output"])[-1]
    text = "\n".join(tail).lower()
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    if "address already in use" in text:
        return _port_taken(int(port))
    damaged = ("not a database", "malformed", "database disk image", "no such table")
    if database is not None and any(d in text for d in damaged):
        return (
            f"the local Prefect server cannot use its database {database}: {last.strip()}; "
            f"move it away (mv {database} {database}.broken) and run again: Prefect sets up "
            "a new one (restoredrill's evidence is stored apart and is kept)"
        )
    return (
        f"the local Prefect server stopped during start-up (exit code "
        f"{server.process.returncode}): {last.strip()}; see {server.log}"
    )


def _port_taken(port: int) -> str:
    return (
        f"the local Prefect server cannot listen on 127.0.0.1:{port}: the port is taken; "
        "stop what listens there or choose another port"
    )


def _log_tail(log: Path, lines: int = 40) -> list[str]:
    """The last lines of this start's output (after our last marker line)."""
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace")
        return text[text.rfind("\n--- ") + 1 :].splitlines()[1:][-lines:]
    return []


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group; SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _sqlite_path() -> Path | None:
    """The file of the server's SQLite database, or None if it is not SQLite."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    from sqlalchemy.engine import make_url

    url = make_url(PREFECT_API_DATABASE_CONNECTION_URL.value())
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def registered() -> str | None:
    """The URL of the server a ``restoredrill serve`` of this ``PREFECT_HOME`` runs, if it
    answers."""
    path = prefect_home() / REGISTRY
    try:
        entry = json.loads(path.read_text())
        url, pid = str(entry["url"]), int(entry["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid) or healthy(url) is not None:
        return None
    return url


@contextlib.contextmanager
def _registered(server: LocalServer) -> Iterator[None]:
    """Leave the server's address in ``PREFECT_HOME`` for other runs, unless another
    live ``serve`` did already."""
    path = prefect_home() / REGISTRY
    if registered():
        yield
        return
    entry = {"url": server.url, "pid": server.process.pid, "serve_pid": os.getpid()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == server.process.pid:
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
