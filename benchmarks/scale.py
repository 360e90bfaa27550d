#!/usr/bin/env python3
"""How does a site scale out over workers, and how fast do alerts go out? ("Measure")

**Scale-out.** A site of ``--systems`` (40) small systems in ``--waves`` (4) dependency
waves, each system restored from one shared root-filesystem tarball (``kind:
rootfs_tar``: busybox-static, ``busybox httpd`` serving one page), with a tcp readiness
probe, an http check and, past the first wave, tcp checks of the two systems it depends
on (kept running for it). A local Prefect server (``prefect server start`` on 127.0.0.1,
SQLite in a temporary PREFECT_HOME) and process workers of a work pool (``prefect worker
start --limit``) run it: ``restoredrill deploy SITE --pool P --run --json`` (each system
its own flow run, see flows/dispatch.py; the orchestrating verify-site run holds one
worker slot), on one worker and on two workers (same machine, same ``--limit`` each,
started before and stopped after each timed run), alternating for ``--rounds``.

Printed per round: the CLI's wall time and the run's own (started → finished), the
ratio 1 worker / 2 workers, how systems spread over the workers; where a dispatched
system's time goes, from its flow run's state history on the server (queued → picked up
→ flow-run process running → restoredrill's steps → completed), the waves' spans and
the gaps between them; CPU seconds by process tree (flow-run processes, workers, Prefect
server, CLI); the Prefect API's latency during the run (one request every 0.5 s), the
requests it served by endpoint (its access log) and the errors in its log (SQLite's
"database is locked").

**Alert latency.** A 1-system site whose http check alternately fails and passes (each
run is a change of state and alerts: ``fail``, then ``recovered``), verified
``--alert-runs`` times in-process as ``restoredrill run`` does (``run_site()`` in a
subprocess; flows on the same Prefect server), with a ``json://`` alert target to a
webhook receiver in this process on 127.0.0.1. Latency = receipt − the system's verdict
(its ``finished_at``), and receipt − the run's ``finished_at``. Alerts go out when the
whole run ends, so in the big site a system's alert would wait for the rest of the run:
that (verdict → run end) is printed from the scale-out runs.

Everything lives in one temporary directory (backups, sites, evidence, PREFECT_HOME,
XDG_CONFIG_HOME, scratch, logs) and the sandbox network 10.96.0.0/24. At the end, also
on error or Ctrl-C, the workers with their flow-run processes and the server are
stopped, the runs' containers, networks, volumes and images (label ``restoredrill.run``)
removed and checked gone, and the directory deleted. Traffic: 127.0.0.1 and the sandbox.

    .venv/bin/python benchmarks/scale.py [--rounds 1] [--systems 40] [--waves 4]
        [--limit 4] [--query-seconds 2] [--alert-runs 6] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
RESTOREDRILL = str(BIN / "restoredrill")
SUBNET = ipaddress.ip_network(os.environ.get("SCALE_SUBNET", "172.30.96.0/24"))
RUN = "restoredrill.run"
MANAGED = "restoredrill.managed"
QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_LOG_PRINTS": "false"}
SITE = "scale"
ALERT_SITE = "alerting"
PAGE = "restoredrill scale bench: ok\n"
HTTPD = '[/bin/busybox, httpd, -f, -p, "8080", -h, /www]'
TICK = os.sysconf("SC_CLK_TCK")
LOCKED = "database is locked"

RUN_SITE = """\
import sys
from restoredrill.flows.verify import run_site
record = run_site(sys.argv[1], trigger="bench")
sys.stdout.write(record.model_dump_json())
sys.exit(0 if record.verdict.ok else 1)
"""
"""``restoredrill run SITE --json`` minus the CLI, whose ``--json`` output fails
(``datetime is not JSON serializable``) whenever an alert was delivered."""


@dataclass
class Bench:
    """What the rounds share."""

    args: Any
    root: Path
    env: dict[str, str]
    api: str = ""
    server: subprocess.Popen[bytes] | None = None
    run_ids: set[str] = field(default_factory=set)


# --- the backups and sites -----------------------------------------------------------


def find_busybox() -> Path:
    """A statically linked busybox (``apt-get install -y busybox-static``)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:65536]:
            return path
    raise SystemExit("no static busybox: apt-get install -y busybox-static")


def make_rootfs(path: Path, busybox: Path) -> None:
    """A gzipped root filesystem: /bin/busybox, a few applet links, /www/index.html."""

    def entry(name: str, kind: bytes, mode: int, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.mtime = kind, mode, link, int(time.time())
        return info

    with tarfile.open(path, "w:gz") as tar:
        for d in ("bin", "etc", "www"):
            tar.addfile(entry(d, tarfile.DIRTYPE, 0o755))
        tar.addfile(entry("tmp", tarfile.DIRTYPE, 0o1777))
        info = entry("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = busybox.stat().st_size
        with busybox.open("rb") as fh:
            tar.addfile(info, fh)
        for applet in ("sh", "httpd", "nc", "cat", "ls"):
            tar.addfile(entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, "busybox"))
        for name, text in (("www/index.html", PAGE), ("etc/hostname", "twin\n")):
            data = text.encode()
            info = entry(name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def system_names(count: int, waves: int) -> list[list[str]]:
    """Names by wave: ``w1-s01`` … (as even as ``count`` allows)."""
    per = math.ceil(count / waves)
    out: list[list[str]] = []
    for idx in range(count):
        wave, i = divmod(idx, per)
        if wave == len(out):
            out.append([])
        out[wave].append(f"w{wave + 1}-s{i + 1:02d}")
    return out


def write_scale_site(
    root: Path, count: int, waves: int, concurrency: int = 16
) -> tuple[Path, list[list[str]]]:
    """The site file: each system past wave 1 depends on two of the wave before."""
    plan = system_names(count, waves)
    hosts = list(SUBNET.hosts())
    address: dict[str, str] = {}
    lines = [
        f"site: {SITE}",
        f"sandbox: {{subnets: [{SUBNET}], concurrency: {concurrency}}}",
        f"evidence: sqlite:///{root}/scale-evidence.db",
        "systems:",
    ]
    for w, wave in enumerate(plan):
        for i, name in enumerate(wave):
            address[name] = str(hosts[9 + len(address)])
            deps = []
            if w:
                before = plan[w - 1]
                deps = sorted({before[i % len(before)], before[(i + 1) % len(before)]})
            lines += [
                f"  - name: {name}",
                "    backup: {kind: rootfs_tar, path: backups/busybox-rootfs.tar.gz}",
                f"    run: {{command: {HTTPD}, address: {address[name]}}}",
                "    ready: {kind: tcp, port: 8080, timeout: 60s}",
                "    rto: 5m",
                "    checks:",
                '      - {kind: http, port: 8080, contains: "bench: ok"}',
                *[f"      - {{kind: tcp, host: {address[d]}, port: 8080}}" for d in deps],
            ]
            if deps:
                lines.append(f"    depends_on: [{', '.join(deps)}]")
    site = root / "scale.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site, plan


def write_alert_site(root: Path, hook_port: int, failing: bool) -> Path:
    """A 1-system site alerting a local webhook; ``failing``: its http check fails."""
    expect = "this text is not on the page" if failing else "bench: ok"
    site = root / "alert.yaml"
    site.write_text(
        "\n".join(
            [
                f"site: {ALERT_SITE}",
                f"sandbox: {{subnets: [{SUBNET}], concurrency: 1}}",
                f"evidence: sqlite:///{root}/alert-evidence.db",
                "alerts:",
                f'  - {{name: bench-hook, url: "json://127.0.0.1:{hook_port}/hook"}}',
                "systems:",
                "  - name: hmi",
                "    backup: {kind: rootfs_tar, path: backups/busybox-rootfs.tar.gz}",
                f"    run: {{command: {HTTPD}}}",
                "    ready: {kind: tcp, port: 8080, timeout: 60s}",
                "    rto: 5m",
                "    checks:",
                f'      - {{kind: http, port: 8080, contains: "{expect}"}}',
            ]
        )
        + "\n"
    )
    return site


# --- processes: the Prefect server, workers, CLI runs ---------------------------------

PROCS: list[subprocess.Popen[bytes]] = []
"""Every process this benchmark started (each in its own session), for clean-up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(
    argv: list[str], env: dict[str, str], log: Path | None, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own (output to ``log``, else piped)."""
    out: Any = log.open("ab") if log else subprocess.PIPE
    try:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()
    PROCS.append(proc)
    return proc


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (index 0 is field 3, the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def descendants(root: int) -> list[int]:
    """Pids of ``root``'s descendants (from /proc), children first."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(ValueError, IndexError):
            parents[int(stat.parent.name)] = int(_stat(int(stat.parent.name))[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        kids = [child for child, parent in parents.items() if parent == pid]
        out += kids
        todo += kids
    return out


def cpu_of(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself and of its children it has waited for."""
    f = _stat(pid)
    if len(f) < 15:
        return 0.0, 0.0
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and every child they have waited for."""
    return sum(sum(cpu_of(p)) for p in [pid, *descendants(pid)])


def stop(*procs: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process groups of ``procs``, SIGKILL them after ``grace`` s, then any
    of their descendants that live on in sessions of their own (flow-run processes)."""
    live = [p for p in procs if p.poll() is None]
    tree = [pid for p in live for pid in descendants(p.pid)]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    deadline = time.monotonic() + 5
    for pid in tree:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for p in procs:
        if p in PROCS:
            PROCS.remove(p)


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def start_server(bench: Bench) -> None:
    """``prefect server start`` on a free port of 127.0.0.1; returns once healthy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = bench.root / "logs" / "server.log"
    env = {k: v for k, v in bench.env.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_LOGGING_LEVEL"] = "INFO"  # uvicorn's access log: requests counted
    argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    bench.server = proc = spawn(argv, env, log, bench.root)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server stopped at once: {tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                bench.api = bench.env["PREFECT_API_URL"] = url
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server did not answer within 120 s: {tail(log)}")
        time.sleep(0.3)


def start_workers(
    bench: Bench, names: list[str], pool: str, cwd: Path
) -> list[subprocess.Popen[bytes]]:
    """Process workers of ``pool``, each ``--limit`` flow runs; returns once all are ONLINE."""
    logs = bench.root / "logs"
    procs = [
        spawn(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process"]
            + ["--name", name, "--limit", str(bench.args.limit)],
            {**bench.env, "RESTOREDRILL_WORKER": name},
            logs / f"worker-{name}.log",
            cwd,
        )
        for name in names
    ]
    deadline = time.monotonic() + 120
    while online(bench.api, pool) < set(names):
        for name, proc in zip(names, procs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker {name} exited {proc.returncode}: {tail(logs / f'worker-{name}.log')}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {names} not online within 120 s")
        time.sleep(0.3)
    return procs


def online(api: str, pool: str) -> set[str]:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        r = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=5)
        if r.status_code == 200:
            return {w["name"] for w in r.json() if w.get("status") == "ONLINE"}
    return set()


def run_json(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int, dict[str, Any], float, float]:
    """Run ``argv``, which prints a run record as JSON: exit code, record, wall s, exit time."""
    t0 = time.perf_counter()
    proc = spawn(argv, env, None, cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"{' '.join(argv[:3])} still running after {timeout:.0f} s") from None
    exited = time.time()
    wall = time.perf_counter() - t0
    PROCS.remove(proc)
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}:\n" + err.decode(errors="replace")[-3000:]
        )
    return proc.returncode, json.loads(out), wall, exited


def when(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


class ApiProbe:
    """Times one cheap API call (``POST /flow_runs/count``) every 0.5 s while it runs."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.times: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.wait(0.5):
                t0 = time.perf_counter()
                try:
                    client.post(f"{self.api}/flow_runs/count", json={}).raise_for_status()
                    self.times.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    self.failed += 1

    def __enter__(self) -> ApiProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the flow runs' history on the server ----------------------------------------------


def flow_runs(api: str, run_id: str) -> list[dict[str, Any]]:
    """The run's flow runs (tag ``run:<id>``), each with its state history."""
    r = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"tags": {"all_": [f"run:{run_id}"]}}, "limit": 200},
        timeout=30,
    )
    r.raise_for_status()
    runs = r.json()
    for fr in runs:
        s = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": fr["id"]}, timeout=30)
        s.raise_for_status()
        fr["history"] = sorted(
            ((st["type"], when(st["timestamp"])) for st in s.json()), key=lambda x: x[1] or 0
        )
    return runs


def first(history: list[tuple[str, float | None]], kind: str) -> float | None:
    return next((t for k, t in history if k == kind), None)


def breakdown(
    record: dict[str, Any], runs: list[dict[str, Any]], plan: list[list[str]], exited: float
) -> dict[str, Any]:
    """Per dispatched system: queued, start-up, in-process before/after its steps; per
    wave: its span, how long creating its flow runs took, the gap after the wave before;
    the orchestrating flow run's own times."""
    systems = {s["system"]: s for s in record["systems"]}
    by_system: dict[str, dict[str, Any]] = {}
    orchestrator = None
    for fr in runs:
        tag = next((t for t in fr.get("tags", []) if t.startswith("system:")), None)
        if tag:
            by_system[tag.removeprefix("system:")] = fr
        else:
            orchestrator = fr
    keys = ("queued", "startup", "before", "steps", "after", "total")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    spans: list[tuple[float, float]] = []
    created: list[float] = []
    for wave in plan:
        starts, ends = [], []
        for name in wave:
            fr, res = by_system.get(name), systems.get(name)
            if not fr or not res:
                continue
            h = fr["history"]
            sched, pend = first(h, "SCHEDULED"), first(h, "PENDING")
            run, done = first(h, "RUNNING"), first(h, "COMPLETED")
            began, verdict = when(res.get("started_at")), when(res.get("finished_at"))
            if not (sched and pend and run and done and began and verdict):
                continue
            steps = sum(s["duration_s"] for s in res.get("steps", []))
            rows["queued"].append(pend - sched)
            rows["startup"].append(run - pend)
            rows["before"].append(began - run)
            rows["steps"].append(steps)
            rows["after"].append(done - began - steps)
            rows["total"].append(done - sched)
            starts.append(sched)
            ends.append(verdict)
        if starts:
            spans.append((min(starts), max(ends)))
            created.append(max(starts) - min(starts))
    orch: dict[str, float] = {}
    if orchestrator:
        h = orchestrator["history"]
        sched, pend, run = first(h, "SCHEDULED"), first(h, "PENDING"), first(h, "RUNNING")
        done = first(h, "COMPLETED") or first(h, "FAILED")
        if sched and pend and run and done:
            orch = {"queued": pend - sched, "startup": run - pend, "cli_lag": exited - done}
            if spans:
                orch["before_first"] = spans[0][0] - run
                orch["after_last"] = done - spans[-1][1]
    finished = when(record.get("finished_at")) or 0.0
    waits = [finished - (when(s.get("finished_at")) or finished) for s in record["systems"]]
    return {
        "rows": rows,
        "waves": [b - a for a, b in spans],
        "created": created,
        "gaps": [b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False)],
        "orchestrator": orch,
        "alert_wait": waits,
    }


ACCESS = re.compile(r'uvicorn\.access - \S+ - "(\w+) ([^ ?"]+)')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def server_requests(text: str) -> Counter[str]:
    """API requests in the server's access log by method and path (ids as ``{id}``),
    without the probe's own."""
    found: Counter[str] = Counter()
    for method, path in ACCESS.findall(text):
        path = re.sub(r"/work_pools/[^/]+/", "/work_pools/{pool}/", UUID.sub("{id}", path))
        found[f"{method} {path}"] += 1
    found.pop("POST /api/flow_runs/count", None)
    return found


def server_errors(text: str) -> dict[str, int]:
    """ERROR lines of the server's log by message; how many tracebacks say the database
    was locked, and how many of those were the late-runs service marking a run Late."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if "| ERROR" in line:
            found[line.split(" - ", 1)[-1].split(":")[0].strip()[:60]] += 1
    found[LOCKED] = text.count(f"OperationalError) {LOCKED}")
    found["marking a run Late"] = sum(
        LOCKED in chunk and "'name': 'Late'" in chunk for chunk in text.split("Traceback")
    )
    return dict(found)


# --- the webhook receiver ------------------------------------------------------------


class Receiver:
    """A JSON webhook on 127.0.0.1: each POST with its receipt time (time.time())."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                with receiver.cond:
                    receiver.posts.append((at, self.path, json.loads(body or b"{}")))
                    receiver.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.posts) >= count, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the rounds ----------------------------------------------------------------------


def site_round(bench: Bench, n: int, site: Path, plan: list[list[str]]) -> dict[str, Any]:
    """One run of the site on ``n`` fresh workers (started before, stopped after the clock)."""
    assert bench.server is not None
    pool = f"bench-{os.getpid()}"
    names = [f"w{i}" for i in range(1, n + 1)]
    log = bench.root / "logs" / "server.log"
    workers = start_workers(bench, names, pool, site.parent)
    try:
        log_at = log.stat().st_size
        server0 = tree_cpu(bench.server.pid)
        cli0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        argv = [RESTOREDRILL, "deploy", str(site), "--pool", pool, "--run", "--json"]
        with ApiProbe(bench.api) as probe:
            code, record, wall, exited = run_json(argv, bench.env, bench.root, bench.args.timeout)
        cli1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server1 = tree_cpu(bench.server.pid)
        bench.run_ids.add(record["run_id"])
        runs = flow_runs(bench.api, record["run_id"])
        deadline = time.monotonic() + 15  # let the workers reap their flow-run processes
        while any(descendants(w.pid) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        own = [cpu_of(w.pid) for w in workers]
        flows = sum(c for _, c in own) + sum(
            tree_cpu(p) for w in workers for p in descendants(w.pid)
        )
        with log.open("rb") as fh:
            fh.seek(log_at)
            text = fh.read().decode(errors="replace")
        errors, requests = server_errors(text), server_requests(text)
    finally:
        stop(*workers)
    systems = record["systems"]
    lat = sorted(probe.times) or [float("nan")]
    return {
        "wall": wall,
        "run": (when(record["finished_at"]) or 0) - (when(record["started_at"]) or 0),
        "verdict": record["verdict"],
        "systems": len(systems),
        "passed": sum(s["verdict"] == "pass" for s in systems),
        "failures": [
            f"{s['system']}: {s['verdict']}: {s['reason']}"
            for s in systems
            if s["verdict"] != "pass"
        ],
        "spread": Counter(s.get("worker") or "?" for s in systems),
        "cpu": {
            "flow runs": flows,
            "per flow run": flows / max(len(runs), 1),
            "workers": sum(o for o, _ in own),
            "server": server1 - server0,
            "CLI": (cli1.ru_utime + cli1.ru_stime) - (cli0.ru_utime + cli0.ru_stime),
        },
        "api": {
            "median": statistics.median(lat),
            "p95": lat[int(0.95 * (len(lat) - 1))],
            "max": lat[-1],
            "failed": probe.failed,
        },
        "errors": errors,
        "requests": requests,
        "breakdown": breakdown(record, runs, plan, exited),
        "code": code,
    }


def local_round(bench: Bench, site: Path) -> dict[str, Any]:
    """``restoredrill run SITE --json`` on the bench's server (PREFECT_API_URL): wall,
    the run's own time, the CLI's CPU seconds and peak RSS (VmHWM of the CLI process,
    sampled from /proc while it runs: ru_maxrss of a child would carry the launcher's
    over fork/exec), and per system its steps' own time vs its time outside them."""
    argv = [RESTOREDRILL, "run", str(site), "--json"]
    t0 = time.perf_counter()
    server0 = tree_cpu(bench.server.pid) if bench.server else 0.0
    cli0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = spawn(argv, {**bench.env, **QUIET}, None, bench.root)
    hwm = [0]

    def sample() -> None:
        while proc.poll() is None:
            hwm[0] = max(hwm[0], _status_kb(proc.pid, "VmHWM"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=bench.args.timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(
            f"restoredrill run still running after {bench.args.timeout:.0f} s"
        ) from None
    wall = time.perf_counter() - t0
    sampler.join()
    PROCS.remove(proc)
    cli1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}:\n" + err.decode(errors="replace")[-3000:]
        )
    server1 = tree_cpu(bench.server.pid) if bench.server else 0.0
    record = json.loads(out)
    bench.run_ids.add(record["run_id"])
    if bench.args.save_record:
        bench.args.save_record.write_text(out.decode())
    systems = record["systems"]
    spans = []
    for wave in plan_of(record):
        starts = [when(s.get("started_at")) for s in wave]
        ends = [when(s.get("finished_at")) for s in wave]
        if all(starts) and all(ends):
            spans.append(max(e or 0 for e in ends) - min(t or 0 for t in starts))
    per_step: dict[str, list[float]] = {}
    own, outside, recovery, framework = [], [], [], []
    for s in systems:
        steps = s.get("steps", [])
        for st in steps:
            per_step.setdefault(st["name"], []).append(st["duration_s"])
        mine = sum(st["duration_s"] for st in steps)
        span = (when(s.get("finished_at")) or 0) - (when(s.get("started_at")) or 0)
        mine -= sum(st["duration_s"] for st in steps if st["name"] == "teardown")  # after it
        own.append(mine)
        outside.append(span - mine)
        if s.get("recovery_time_s") is not None:
            recovery.append(s["recovery_time_s"])
        if s.get("framework_s") is not None:
            framework.append(s["framework_s"])
    return {
        "wall": wall,
        "run": (when(record["finished_at"]) or 0) - (when(record["started_at"]) or 0),
        "verdict": record["verdict"],
        "systems": len(systems),
        "passed": sum(s["verdict"] == "pass" for s in systems),
        "failures": [
            f"{s['system']}: {s['verdict']}: {s['reason']}"
            for s in systems
            if s["verdict"] != "pass"
        ],
        "spread": Counter({"in-process": len(systems)}),
        "cli_cpu": (cli1.ru_utime + cli1.ru_stime) - (cli0.ru_utime + cli0.ru_stime),
        "server_cpu": server1 - server0,
        "waves": spans,
        "hwm_kb": hwm[0],
        "per_step": per_step,
        "own": own,
        "outside": outside,
        "recovery": recovery,
        "framework": framework,
    }


def plan_of(record: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The record's systems by wave (their names: ``w<wave>-s<i>``)."""
    waves: dict[str, list[dict[str, Any]]] = {}
    for s in record["systems"]:
        waves.setdefault(s["system"].split("-")[0], []).append(s)
    return [waves[k] for k in sorted(waves, key=lambda k: int(k[1:]))]


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def local_report(rows: list[dict[str, Any]], args: Any) -> None:
    print()
    print(
        f"local (`restoredrill run`, in-process): {args.systems} systems in {args.waves} waves, "
        f"concurrency {args.concurrency}; {os.cpu_count()} CPUs; {len(rows)} round(s), medians"
    )
    print(f"  CLI wall (s)                         {med([r['wall'] for r in rows]):9.2f}")
    print(f"  run: started -> finished (s)         {med([r['run'] for r in rows]):9.2f}")
    print(
        f"  per system (s)                       {med([r['wall'] for r in rows]) / args.systems:9.3f}"
    )
    print(f"  CLI CPU seconds                      {med([r['cli_cpu'] for r in rows]):9.1f}")
    print(f"  Prefect server CPU seconds           {med([r['server_cpu'] for r in rows]):9.1f}")
    spans = [" ".join(f"{v:.1f}" for v in r["waves"]) for r in rows]
    print(f"  waves' spans, first start -> last verdict (s): {' | '.join(spans)}")
    print(f"  CLI peak RSS, VmHWM (MB)             {med([r['hwm_kb'] for r in rows]) / 1024:9.0f}")
    print("  per system, medians over systems and rounds (s):")
    steps = sorted(
        {k for r in rows for k in r["per_step"]},
        key=lambda k: (
            ["locate", "restore", "start", "ready", "checks", "teardown"].index(k)
            if k in ("locate", "restore", "start", "ready", "checks", "teardown")
            else 99
        ),
    )
    for name in steps:
        print(f"    step {name:<31} {med([v for r in rows for v in r['per_step'][name]]):9.3f}")
    print(
        f"    steps' own time, all steps          {med([v for r in rows for v in r['own']]):9.3f}"
    )
    print(
        f"    outside its steps (started->verdict) {med([v for r in rows for v in r['outside']]):8.3f}"
    )
    print(
        f"    recovery_time_s (judged vs RTO)     {med([v for r in rows for v in r['recovery']]):9.3f}"
    )
    fw = [v for r in rows for v in r["framework"]]
    if fw:
        print(f"    framework_s (recorded)              {med(fw):9.3f}")
    print()


def alert_round(bench: Bench, i: int, hook: Receiver) -> dict[str, Any]:
    """One in-process run of the alert site (a subprocess); odd runs fail, even runs pass."""
    failing = i % 2 == 1
    site = write_alert_site(bench.root, hook.port, failing)
    seen = len(hook.posts)
    argv = [sys.executable, "-c", RUN_SITE, str(site)]
    env = {**bench.env, **QUIET}
    code, record, wall, exited = run_json(argv, env, bench.root, bench.args.timeout)
    bench.run_ids.add(record["run_id"])
    system = record["systems"][0]
    if system["verdict"] != ("fail" if failing else "pass"):
        raise RuntimeError(f"alert run {i}: {system['verdict']} ({system['reason']})")
    if not hook.wait(seen + 1, 15):
        raise RuntimeError(f"alert run {i}: no webhook POST within 15 s")
    received = hook.posts[seen][0]
    return {
        "event": "fail" if failing else "recovered",
        "from_verdict": received - (when(system["finished_at"]) or 0),
        "from_run_end": received - (when(record["finished_at"]) or 0),
        "to_exit": exited - received,
        "wall": wall,
        "code": code,
    }


# --- clean-up --------------------------------------------------------------------------


def ours(client: Any, run_ids: set[str]) -> set[str]:
    """``run_ids`` plus the runs whose managed networks lie in the benchmark's subnet."""
    found = set(run_ids)
    for n in client.api.networks(filters={"label": f"{MANAGED}=1"}):
        for conf in (n.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(conf.get("Subnet", ""), strict=False).overlaps(SUBNET):
                    found.add((n.get("Labels") or {}).get(RUN, ""))
    found.discard("")
    return found


def server_run_ids(api: str) -> set[str]:
    """Run ids in the tags of every flow run on the server (it is the benchmark's own)."""
    ids: set[str] = set()
    offset = 0
    with contextlib.suppress(httpx.HTTPError, ValueError):
        while True:
            r = httpx.post(
                f"{api}/flow_runs/filter", json={"limit": 200, "offset": offset}, timeout=10
            )
            r.raise_for_status()
            page = r.json()
            ids |= {t[4:] for fr in page for t in fr.get("tags", []) if t.startswith("run:")}
            if len(page) < 200:
                break
            offset += 200
    return ids


def leftovers(client: Any, run_ids: set[str]) -> list[tuple[str, str, Any]]:
    """(kind, name, id) of every container, network, volume and image of ``run_ids``."""
    api = client.api
    out: list[tuple[str, str, Any]] = []
    for run in sorted(run_ids):
        f = {"label": f"{RUN}={run}"}
        for c in api.containers(all=True, filters=f):
            out.append(("container", c["Names"][0].lstrip("/"), c["Id"]))
        out += [("network", n["Name"], n["Id"]) for n in api.networks(filters=f)]
        for v in (api.volumes(filters=f) or {}).get("Volumes") or []:
            out.append(("volume", v["Name"], v["Name"]))
        for i in api.images(filters=f):
            out.append(("image", (i.get("RepoTags") or [i["Id"]])[0], i["Id"]))
    return out


def remove(client: Any, items: list[tuple[str, str, Any]]) -> None:
    api = client.api
    for kind, _, ident in items:  # containers before networks, volumes and images
        with contextlib.suppress(docker.errors.APIError):
            if kind == "container":
                api.remove_container(ident, force=True, v=True)
            elif kind == "network":
                api.remove_network(ident)
            elif kind == "volume":
                api.remove_volume(ident, force=True)
            else:
                api.remove_image(ident, force=True)


# --- report ----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def plural(n: int) -> str:
    return f"{n} worker{'s' if n > 1 else ''}" if n else "local"


def show_round(rnd: int, n: int, r: dict[str, Any]) -> None:
    spread = ", ".join(f"{w} {k}" for w, k in sorted(r["spread"].items()))
    print(
        f"  round {rnd}, {plural(n)}: wall {r['wall']:.1f}s, run {r['run']:.1f}s, verdict "
        f"{r['verdict']}, {r['passed']}/{r['systems']} passed; systems per worker: {spread}",
        flush=True,
    )
    for failure in r["failures"]:
        print(f"      NOT PASSED {failure}")


def report(
    results: dict[int, list[dict[str, Any]]], alerts: list[dict[str, Any]], args: Any
) -> None:
    counts = sorted(n for n in results if results[n])
    print()
    print(
        f"scale-out: {args.systems} systems in {args.waves} waves; --limit {args.limit} per worker "
        f"(one slot holds the orchestrating verify-site run); workers poll every "
        f"{args.query_seconds:g}s; {os.cpu_count()} CPUs"
    )
    print(f"  {'workers':>7}  {'wall (s)':>9}  {'run (s)':>8}  {'wall/system':>11}  rounds")
    for n in counts:
        rows = results[n]
        wall = med([r["wall"] for r in rows])
        print(
            f"  {n:>7}  {wall:9.1f}  {med([r['run'] for r in rows]):8.1f}"
            f"  {wall / args.systems:11.2f}  {len(rows)}"
        )
    if counts == [1, 2]:
        w1, w2 = (med([r["wall"] for r in results[n]]) for n in (1, 2))
        r1, r2 = (med([r["run"] for r in results[n]]) for n in (1, 2))
        print(f"  ratio 1 worker / 2 workers: wall {w1 / w2:.2f}x, run {r1 / r2:.2f}x (ideal 2x)")

    def cells(get: Any, fmt: str = "{:9.2f}") -> str:
        return "  ".join(fmt.format(med([v for r in results[n] for v in get(r)])) for n in counts)

    print()
    print("where a dispatched system's time goes (medians over systems and rounds, seconds)")
    print(f"  {'':<68} " + "  ".join(f"{plural(n):>9}" for n in counts))
    labels = [
        ("queued", "queued: flow run created -> a worker takes it (free slot + poll)"),
        ("startup", "start-up: taken -> Running (flow-run process spawn, imports)"),
        ("before", "Running -> its first step (load site, join sandbox, lease)"),
        ("steps", "restoredrill's steps (restore, start, ready, checks, teardown)"),
        ("after", "after the steps -> Completed (lease result, flow-run end)"),
        ("total", "total: created -> Completed"),
    ]
    for key, label in labels:
        print(f"  {label:<68} " + cells(lambda r, k=key: r["breakdown"]["rows"][k]))
    print(
        f"  {'per wave: its span (first created -> last verdict)':<68} "
        + cells(lambda r: r["breakdown"]["waves"])
    )
    print(
        f"  {'per wave: creating its flow runs (first -> last created)':<68} "
        + cells(lambda r: r["breakdown"]["created"])
    )
    print(
        f"  {'between waves: last verdict -> next wave first created':<68} "
        + cells(lambda r: r["breakdown"]["gaps"])
    )
    orch = [
        ("queued", "verify-site run: queued"),
        ("startup", "verify-site run: start-up"),
        ("before_first", "verify-site run: Running -> first system created"),
        ("after_last", "verify-site run: last verdict -> Completed (evidence)"),
        ("cli_lag", "verify-site Completed -> CLI exit (run_deployment polls)"),
    ]
    for key, label in orch:
        print(
            f"  {label:<68} " + cells(lambda r, k=key: [r["breakdown"]["orchestrator"].get(k, 0)])
        )

    print()
    print("CPU seconds per round (medians)")
    for key in ("flow runs", "per flow run", "workers", "server", "CLI"):
        label = {
            "flow runs": "flow-run processes (all)",
            "per flow run": "flow-run processes, per flow run",
            "workers": "worker processes themselves",
            "server": "Prefect server",
            "CLI": "restoredrill deploy --run (CLI)",
        }[key]
        print(f"  {label:<68} " + cells(lambda r, k=key: [r["cpu"][k]], "{:9.1f}"))
    budget = cells(lambda r: [r["run"] * (os.cpu_count() or 1)], "{:9.1f}")
    print(f"  {'(the machine has, over the run: CPUs x run time)':<68} " + budget)
    print()
    print(
        "the Prefect server (SQLite) during the run: latency of POST /flow_runs/count every 0.5 s"
    )
    for key, label in (("median", "median"), ("p95", "95th percentile"), ("max", "max")):
        print(f"  {label + ' latency (s)':<68} " + cells(lambda r, k=key: [r["api"][k]], "{:9.3f}"))
    print(f"  {'requests failed':<68} " + cells(lambda r: [r["api"]["failed"]], "{:9.0f}"))
    print(
        f"  {'requests (access log, without the probe)':<68} "
        + cells(lambda r: [sum(r["requests"].values())], "{:9.0f}")
    )
    print(
        f"  {'requests per second of run time':<68} "
        + cells(lambda r: [sum(r["requests"].values()) / r["run"]], "{:9.1f}")
    )
    every: Counter[str] = Counter()
    for n in counts:
        for r in results[n]:
            every.update(r["requests"])
    for endpoint, _ in every.most_common(8):
        print(
            f"    {endpoint[:66]:<66} "
            + cells(lambda r, e=endpoint: [r["requests"].get(e, 0)], "{:9.0f}")
        )
    kinds = sorted({k for n in counts for r in results[n] for k in r["errors"]})
    for kind in [k for k in kinds if k not in (LOCKED, "marking a run Late")]:
        label = f"server log ERROR: {kind}"
        print(f"  {label[:68]:<68} " + cells(lambda r, k=kind: [r["errors"].get(k, 0)], "{:9.0f}"))
    for kind in (LOCKED, "marking a run Late"):
        label = "  of them: " + kind if kind != LOCKED else "tracebacks: " + kind
        print(f"  {label:<68} " + cells(lambda r, k=kind: [r["errors"].get(k, 0)], "{:9.0f}"))
    waits = [v for n in counts for r in results[n] for v in r["breakdown"]["alert_wait"]]
    if waits or alerts:
        print()
        print("alert latency")
    if waits:
        print(
            f"  alerts go out when the run ends: in the {args.systems}-system site, a system's "
            f"verdict -> run end median {med(waits):.1f}s, max {max(waits):.1f}s (plus the below)"
        )
    if alerts:
        print("  1-system site, json:// webhook on 127.0.0.1 (every run changes state and alerts):")
        print(
            f"  {'run':>3}  {'event':<10} {'verdict->receipt':>16}  {'run end->receipt':>16}  "
            f"{'receipt->exit':>13}  {'wall':>6}"
        )
        for i, a in enumerate(alerts, 1):
            print(
                f"  {i:>3}  {a['event']:<10} {a['from_verdict']:16.3f}  {a['from_run_end']:16.3f}  "
                f"{a['to_exit']:13.3f}  {a['wall']:6.2f}"
            )
        print(
            f"  median: verdict -> receipt {med([a['from_verdict'] for a in alerts]):.3f}s, "
            f"run end -> receipt {med([a['from_run_end'] for a in alerts]):.3f}s "
            "(between them: the twin's teardown and the sandbox close)"
        )
    print()


# --- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    parser.add_argument("--systems", type=int, default=40, help="systems in the site (default 40)")
    parser.add_argument("--waves", type=int, default=4, help="dependency waves (default 4)")
    parser.add_argument("--limit", type=int, default=4, help="flow runs per worker (default 4)")
    parser.add_argument(
        "--query-seconds", type=float, default=2.0, help="worker poll interval (default 2)"
    )
    parser.add_argument("--alert-runs", type=int, default=6, help="alert latency runs (default 6)")
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    parser.add_argument("--keep-logs", type=Path, help="copy the server and worker logs here")
    parser.add_argument(
        "--mode",
        choices=("deploy", "run"),
        default="deploy",
        help="deploy: each system a flow run on workers (default); run: `restoredrill run`",
    )
    parser.add_argument(
        "--workers", default="1,2", help="deploy mode: worker counts to run (default 1,2)"
    )
    parser.add_argument("--save-record", type=Path, help="run mode: write the last record here")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="the site's sandbox concurrency (default 16)"
    )
    args = parser.parse_args()
    if not 1 <= args.waves <= args.systems <= 200:
        parser.error("need 1 <= --waves <= --systems <= 200")
    if args.mode == "run":
        args.alert_runs = 0

    client = docker.from_env(timeout=300)
    client.ping()
    for net in client.api.networks():
        for conf in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(conf.get("Subnet", ""), strict=False).overlaps(SUBNET):
                    raise SystemExit(f"Docker network {net['Name']} already uses {SUBNET}")
    busybox = find_busybox()
    root = Path(tempfile.mkdtemp(prefix="restoredrill-scale-")).resolve()
    for d in ("logs", "backups", "prefect", "config", "scratch"):
        (root / d).mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": f"{args.query_seconds:g}",
        "XDG_CONFIG_HOME": str(root / "config"),  # the CLI remembers its last evidence here
        "TMPDIR": str(root / "scratch"),
        "NO_COLOR": "1",
        "COLUMNS": "150",
    }
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE", "RESTOREDRILL_WORKER"):
        env.pop(key, None)
    bench = Bench(args, root, env)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    hook: Receiver | None = None
    try:
        make_rootfs(root / "backups" / "busybox-rootfs.tar.gz", busybox)
        site, plan = write_scale_site(root, args.systems, args.waves, args.concurrency)
        print(
            f"set-up in {root}: {args.systems} systems in waves of "
            f"{'/'.join(str(len(w)) for w in plan)}, sandbox {SUBNET}; starting the Prefect "
            "server …",
            flush=True,
        )
        t0 = time.perf_counter()
        start_server(bench)
        print(f"Prefect server {bench.api} healthy after {time.perf_counter() - t0:.1f}s")

        if args.mode == "run":
            local: list[dict[str, Any]] = []
            for rnd in range(1, args.rounds + 1):
                print(f"round {rnd}: restoredrill run …", flush=True)
                local.append(local_round(bench, site))
                show_round(rnd, 0, local[-1])
            local_report(local, args)
            return 0 if all(r["passed"] == r["systems"] for r in local) else 1
        counts = sorted(int(n) for n in args.workers.split(","))
        results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for rnd in range(1, args.rounds + 1):
            for n in counts if rnd % 2 else counts[::-1]:
                print(f"round {rnd}: {plural(n)} …", flush=True)
                results[n].append(site_round(bench, n, site, plan))
                show_round(rnd, n, results[n][-1])

        alerts: list[dict[str, Any]] = []
        if args.alert_runs:
            hook = Receiver()
            print(f"alert latency: {args.alert_runs} runs, webhook on 127.0.0.1:{hook.port} …")
            for i in range(1, args.alert_runs + 1):
                alerts.append(alert_round(bench, i, hook))
        report(results, alerts, args)
        return 0 if all(r["passed"] == r["systems"] for v in results.values() for r in v) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # clean up without a second Ctrl-C
        if hook is not None:
            hook.close()
        if bench.api:
            bench.run_ids |= server_run_ids(bench.api)
        server = [p for p in PROCS if p is bench.server]
        stop(*[p for p in PROCS if p is not bench.server])  # workers and runs first
        stop(*server)
        run_ids = ours(client, bench.run_ids)
        found = leftovers(client, run_ids)
        remove(client, found)
        left = leftovers(client, ours(client, run_ids))
        if args.keep_logs:
            shutil.copytree(root / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        print(
            f"clean-up: {len(run_ids)} runs; removed {len(found)} leftover object(s)"
            + (f" ({', '.join(f'{k} {n}' for k, n, _ in found)})" if found else "")
            + f"; processes stopped; {root} deleted; "
            + (
                f"STILL THERE: {', '.join(f'{k} {n}' for k, n, _ in left)}"
                if left
                else "nothing left"
            )
        )


if __name__ == "__main__":
    sys.exit(main())
