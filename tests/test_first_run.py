"""The first run of a fresh install: restoredrill starts and waits for its Prefect server
itself (a progress line, a configurable limit, a clear error), reuses a server that runs,
and never leaves a server process behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

RESTOREDRILL = str(Path(sys.executable).parent / "restoredrill")
PAGE = "first run ok\n"
SITE = """\
site: firstrun
sandbox: {{subnets: [{subnet}]}}
evidence: sqlite:///{root}/evidence.db
{schedule}systems:
  - name: web
    backup: {{kind: rootfs_tar, path: {backup}}}
    run: {{command: [/bin/busybox, httpd, -f, -p, "8080", -h, /www], address: {address}}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, port: 8080, contains: "first run ok"}}
    rto: 5m
"""


# --- helpers -------------------------------------------------------------------------


def static_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:65536]:
            return path
    pytest.fail("no static busybox: apt-get install busybox-static (./dev test does)")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory, docker_client) -> Path:
    """A 1 MB root filesystem backup: a static busybox serving one page."""
    busybox = static_busybox()
    path = tmp_path_factory.mktemp("firstrun") / "rootfs.tar.gz"

    def entry(name: str, kind: bytes, mode: int, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.mtime = kind, mode, link, int(time.time())
        return info

    with tarfile.open(path, "w:gz") as tar:
        for d in ("bin", "www", "tmp"):
            tar.addfile(entry(d, tarfile.DIRTYPE, 0o755))
        info = entry("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = busybox.stat().st_size
        with busybox.open("rb") as fh:
            tar.addfile(info, fh)
        tar.addfile(entry("bin/sh", tarfile.SYMTYPE, 0o777, "busybox"))
        info = entry("www/index.html", tarfile.REGTYPE, 0o644)
        info.size = len(PAGE)
        tar.addfile(info, io.BytesIO(PAGE.encode()))
    return path


def site_file(root: Path, backup: Path, subnet: str, schedule: str = "") -> Path:
    """A one-system site in ``subnet`` (``free_subnet()``, or the paper 10.249.190.0/24 for a
    run that ends before its sandbox is made)."""
    root.mkdir(parents=True, exist_ok=True)
    address = subnet.rsplit(".", 1)[0] + ".10"
    site = root / "site.yaml"
    site.write_text(
        SITE.format(
            subnet=subnet,
            root=root,
            backup=backup,
            address=address,
            schedule=f'schedule: "{schedule}"\n' if schedule else "",
        )
    )
    return site


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "NO_COLOR": "1"}
    for name in (
        "PREFECT_API_URL",
        "RESTOREDRILL_PREFECT_STARTUP_TIMEOUT",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    ):
        env.pop(name, None)
    return env | extra


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_server(pid: int) -> bool:
    """A Prefect API server process: ours (uvicorn) or Prefect's temporary one."""
    line = _cmdline(pid)
    return "uvicorn" in line or "prefect.server" in line or "prefect server" in line


def servers_of(home: Path) -> list[int]:
    """Live Prefect server processes whose PREFECT_HOME is ``home``."""
    found = []
    needle = f"PREFECT_HOME={home}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not is_server(int(entry.name)):
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [child for child, parent in parents.items() if parent == pid]
        out += kids
        todo += kids
    return out


@dataclass
class Watched:
    """A CLI run and every Prefect server process it started meanwhile."""

    returncode: int
    stdout: str
    stderr: str
    servers: dict[int, str] = field(default_factory=dict)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> Watched:
    """Run ``restoredrill ARGS``, sampling its process tree for server processes."""
    proc = subprocess.Popen(
        [RESTOREDRILL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: dict[int, str] = {}

    def sample() -> None:
        while proc.poll() is None:
            for pid in descendants(proc.pid):
                if pid not in seen and is_server(pid):
                    seen[pid] = _cmdline(pid)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sampler.join()
    return Watched(proc.returncode, out, err, seen)


def gone(pids: list[int], within: float = 30) -> list[int]:
    """Those of ``pids`` still alive after ``within`` seconds (zombies count as gone)."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in pids if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextmanager
def cpu_hogs(count: int = 2) -> Iterator[None]:
    """Load the machine for real: ``count`` busy processes for the block's duration."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def completed_runs_of(url: str, site: Path) -> list[dict]:
    """The completed flow runs of ``site`` the Prefect server at ``url`` recorded."""
    response = httpx.post(f"{url}/flow_runs/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return [
        r
        for r in response.json()
        if r["state_type"] == "COMPLETED" and r["parameters"].get("site_path") == str(site)
    ]


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text[-3000:]


# --- a fresh install on a loaded machine ----------------------------------------------


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_first_run_on_a_loaded_machine_waits_for_its_server(
    tmp_path: Path, rootfs: Path, free_subnet
) -> None:
    """A fresh PREFECT_HOME sets up its database while two CPU hogs run. Prefect's own
    temporary server gives up after PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (20 s
    by default, 3 s here: below what a fresh home takes on this loaded machine, so the old
    code failed here with "Timed out while attempting to connect to ephemeral Prefect API
    server" and a traceback); restoredrill waits for its own server instead."""
    home = tmp_path / "prefect-home"
    site = site_file(tmp_path, rootfs, free_subnet())
    env = cli_env(home, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="3")
    with cpu_hogs(2):
        done = run_cli(["run", str(site), "--json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_no_traceback(done.stdout, done.stderr)
    assert json.loads(done.stdout)["verdict"] == "pass"
    assert (
        "starting the local Prefect server (first run: setting up its database, "
        "this can take a minute)" in done.stderr
    )
    assert "Error flushing" not in done.stderr
    assert len(done.servers) == 1, done.servers  # one server, started by the run
    assert gone(list(done.servers)) == [] and servers_of(home) == []
    assert (home / "prefect.db").is_file()  # set up once: the next run is a warm one
    # a warm start, and a run whose failure Prefect logs to the server: every log reaches
    # it before it stops (no "Error logging to API" at exit)
    broken = site_file(tmp_path / "broken", tmp_path / "missing.tar.gz", free_subnet())
    again = run_cli(["run", str(broken), "--json"], env)
    assert again.returncode == 1, again.stderr[-3000:]
    assert json.loads(again.stdout)["verdict"] == "error"
    assert "starting the local Prefect server …" in again.stderr
    assert "first run" not in again.stderr
    assert "Error logging to API" not in again.stderr, again.stderr
    assert_no_traceback(again.stdout, again.stderr)
    assert gone(list(again.servers)) == [] and servers_of(home) == []


# --- cannot start: a clear error, exit 2, nothing left running --------------------------


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0.5", "the local Prefect server did not answer within 0.5 s"),
        ("abc", "RESTOREDRILL_PREFECT_STARTUP_TIMEOUT='abc' is not a number of seconds"),
    ],
)
def test_a_start_up_limit_too_small_is_a_clear_error(
    tmp_path: Path, limit: str, message: str
) -> None:
    home = tmp_path / "prefect-home"
    site = site_file(tmp_path, tmp_path / "rootfs.tar.gz", "10.249.190.0/24")
    done = run_cli(["run", str(site)], cli_env(home, RESTOREDRILL_PREFECT_STARTUP_TIMEOUT=limit))
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr
    assert "RESTOREDRILL_PREFECT_STARTUP_TIMEOUT" in done.stderr
    assert_no_traceback(done.stdout, done.stderr)
    assert gone(list(done.servers)) == [] and servers_of(home) == []


@pytest.mark.timeout(300)
def test_a_damaged_prefect_database_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"this is no SQLite database\n" * 400)
    site = site_file(tmp_path, tmp_path / "rootfs.tar.gz", "10.249.190.0/24")
    done = run_cli(["run", str(site)], cli_env(home))
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot use its database {home / 'prefect.db'}" in done.stderr
    assert "file is not a database" in done.stderr and "mv " in done.stderr
    assert_no_traceback(done.stdout, done.stderr)
    assert gone(list(done.servers)) == [] and servers_of(home) == []


def test_a_taken_port_is_a_clear_error() -> None:
    import socket

    from restoredrill.flows.prefect_server import PrefectServerError, local_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(PrefectServerError, match=f"127.0.0.1:{port}: the port is taken"),
            local_server(port=port),
        ):
            pass


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
@pytest.mark.timeout(300)
def test_a_run_stopped_during_start_up_leaves_no_server(tmp_path: Path, how: int) -> None:
    """Ctrl-C stops the server on the way out; a killed run's server dies with it."""
    home = tmp_path / "prefect-home"
    site = site_file(tmp_path, tmp_path / "rootfs.tar.gz", "10.249.190.0/24")
    proc = subprocess.Popen(
        [RESTOREDRILL, "run", str(site)],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        server: list[int] = []
        while not server:  # the server process exists: stop the run now
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no server process started"
            server = [p for p in descendants(proc.pid) if is_server(p)]
            time.sleep(0.05)
        proc.send_signal(how)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if how == signal.SIGINT:
        assert proc.returncode == 130, err
        assert_no_traceback(err)
    # a server busy setting up its database finishes that step before it exits
    assert gone(server, within=180) == [] and servers_of(home) == []


# --- reuse: a configured server, or the one `restoredrill serve` runs --------------------


@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[str]:
    """A Prefect server (restoredrill's local one) of its own PREFECT_HOME; stopped after."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    from restoredrill.flows.prefect_server import local_server

    with (
        temporary_settings(updates={PREFECT_HOME: str(tmp_path / "server-home")}),
        local_server() as server,
    ):
        yield server.url
    assert gone([server.process.pid]) == []


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_a_run_reuses_the_server_of_prefect_api_url(
    tmp_path: Path, rootfs: Path, running_server: str, free_subnet
) -> None:
    home = tmp_path / "client-home"
    site = site_file(tmp_path, rootfs, free_subnet())
    done = run_cli(["run", str(site), "--json"], cli_env(home, PREFECT_API_URL=running_server))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.servers == {}  # no second server
    assert "starting the local Prefect server" not in done.stderr
    assert completed_runs_of(running_server, site)  # the run was orchestrated there


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_a_run_reuses_the_server_of_a_running_serve(
    tmp_path: Path, rootfs: Path, free_subnet
) -> None:
    home = tmp_path / "prefect-home"
    site = site_file(tmp_path, rootfs, free_subnet(), schedule="0 0 1 1 *")
    serve = subprocess.Popen(
        [RESTOREDRILL, "serve", str(site), "--port", "0"],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        registry = home / "restoredrill-server.json"
        deadline = time.monotonic() + 300
        while not registry.is_file():
            assert serve.poll() is None, serve.communicate()[0]
            assert time.monotonic() < deadline, "serve never registered its server"
            time.sleep(0.2)
        url = json.loads(registry.read_text())["url"]
        [serve_server] = servers_of(home)
        done = run_cli(["run", str(site), "--json"], cli_env(home))
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"using the Prefect server of `restoredrill serve` at {url}" in done.stderr
        assert done.servers == {}  # no second server
        assert servers_of(home) == [serve_server]
        assert completed_runs_of(url, site)  # the run was orchestrated there
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            out, _ = serve.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            out, _ = serve.communicate()
    assert serve.returncode == 0, out
    assert gone([serve_server]) == [] and servers_of(home) == []
    assert not registry.exists()
