#!/usr/bin/env python3
"""How contained is a twin? (issue 8, "Measure")

Three measurements on the real engine, each printed as a table:

1. **Reach of a hostile twin.** A twin (default limits) tries TCP connections, 3 s
   each, to: every address this host holds (each interface, IPv4 and IPv6, docker0's
   included) at a port where the benchmark listens on 0.0.0.0 and [::]; the sandbox's
   gateway address; a listener on a stand-in "production" network (a plain Docker
   bridge the benchmark creates). Control: another twin of the sandbox, which must
   connect. Printed: attempted and connected per category (want 0 except the
   control), and what the listeners saw.
2. **A fork bomb and a memory hog** in twins with the default limits (pids 512,
   memory 1g; CPUs lowered to 0.5 to spare the shared machine), the bomb for ``--hold``
   seconds, the hog until the kernel kills it: the twins' cgroup peaks against the
   limits, and the host's process count and
   available memory before and at worst (sampled every 0.1 s; other processes of the
   machine count too).
3. **kill -9 at a random moment.** ``--runs`` runs of ``restoredrill run`` of a
   one-system site (restore of an image archive, start, http readiness, checks),
   each killed with SIGKILL after a random delay in [0, the time a normal run takes from
   opening its sandbox to its end], counted from the moment it opens its sandbox; then
   one normal run. Printed: what each run had created when it was killed, what
   was left once its guardian ended, and what is left after the normal run: twins,
   networks, images, volumes, firewall rules, scratch folders (want 0), and the run's
   processes still running (want 0: each run is started in its own process group, as a
   shell starts a command, and the guardian ends what is left of the group).

Subnets 10.159.0.0/16; every connection goes to an address of this machine.

    .venv/bin/python benchmarks/containment.py [--runs 20] [--hold 10] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import docker  # noqa: E402
from docker.types import IPAMConfig, IPAMPool  # noqa: E402
from hostile import PROD_LISTENER, attempt_all, host_addresses, host_listener, tally  # noqa: E402

from restoredrill.sizes import format_size  # noqa: E402
from restoredrill.twins import firewall, scratch  # noqa: E402
from restoredrill.twins.base import Restored  # noqa: E402
from restoredrill.twins.docker import DockerBackend  # noqa: E402
from restoredrill.twins.images import ensure_base_image  # noqa: E402
from restoredrill.twins.limits import Limits, effective  # noqa: E402
from restoredrill.twins.spec import RunSpec  # noqa: E402

IMAGE = "restoredrill/base:bookworm"
BASE = Restored(image=IMAGE)
TAG = uuid.uuid4().hex[:6]


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in [h, *[r[i] for r in rows]]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


# --- 1: reach of a hostile twin --------------------------------------------------------------


def reach(engine: DockerBackend) -> None:
    client = engine.client
    net = client.networks.create(
        f"rdbench-prod-{TAG}",
        driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.159.11.0/24")]),
        labels={"restoredrill.bench": TAG},
    )
    prod = None
    try:
        prod = client.containers.run(
            IMAGE,
            ["python3", "-c", PROD_LISTENER, "8000"],
            detach=True,
            name=f"rdbench-prod-{TAG}",
            network=net.name,
            networking_config={
                net.name: client.api.create_endpoint_config(ipv4_address="10.159.11.10")
            },
            labels={"restoredrill.bench": TAG},
        )
        while b"listening" not in prod.logs():
            time.sleep(0.1)
        subnet = "10.159.10.0/24"
        with (
            host_listener() as listener,
            contextlib.closing(engine.open_sandbox(f"bench-reach-{TAG}", subnet)) as sandbox,
        ):
            peer = sandbox.start(
                RunSpec(command=["python3", "-m", "http.server", "8080"]), BASE, "peer"
            )
            twin = sandbox.start(RunSpec(command=["sleep", "300"]), BASE, "hostile")
            addresses = host_addresses()
            targets = [("host addresses", a, listener.port) for _, a in addresses]
            targets += [("docker0", a, listener.port) for i, a in addresses if i == "docker0"]
            targets += [("sandbox gateway", sandbox.gateway(subnet), listener.port)]
            targets += [("outside (production network)", "10.159.11.10", 8000)]
            targets += [("control: twin in the sandbox", peer.address, 8080)]
            time.sleep(1)  # the peer's server is listening by now
            outcomes = attempt_all(twin, targets)
            rows = [[cat, tried, got] for cat, (tried, got) in tally(outcomes).items()]
            table(
                "1. connections a hostile twin attempted and got",
                ["to", "attempted", "connected"],
                rows,
            )
            print(
                f"  host listener (0.0.0.0 and [::], port {listener.port}) saw: {listener.seen or 'nothing'}"
            )
        seen = [line for line in prod.logs().decode().splitlines() if line.startswith("accepted")]
        print(f"  production listener saw: {seen or 'nothing'}")
        print(f"  addresses tried on the host: {', '.join(a for _, a in addresses)}")
    finally:
        if prod is not None:
            prod.remove(force=True)
        net.remove()


# --- 2: fork bomb and memory hog ----------------------------------------------------------------


class HostSampler:
    """Host-wide process count and available memory, every 0.1 s."""

    def __init__(self) -> None:
        self.peak_pids = 0
        self.min_available = 1 << 62
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def pids() -> int:
        return sum(1 for p in os.listdir("/proc") if p.isdigit())

    @staticmethod
    def available() -> int:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_pids = max(self.peak_pids, self.pids())
            self.min_available = min(self.min_available, self.available())
            time.sleep(0.1)

    def __enter__(self) -> HostSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


FORK_BOMB = "f() { f | f & }; f; sleep 600"
MEMORY_HOG = "import time; x = [time.sleep(0.02) or b'x' * (16 << 20) for _ in range(1000)]"


def bombs(engine: DockerBackend, hold: float) -> None:
    limits = effective(Limits(cpus=0.5))
    rows = []
    with contextlib.closing(engine.open_sandbox(f"bench-bombs-{TAG}", "10.159.12.0/24")) as sandbox:
        for name, command in (
            ("fork bomb", ["sh", "-c", FORK_BOMB]),
            ("memory hog", ["python3", "-c", MEMORY_HOG]),
        ):
            base_pids, base_avail = HostSampler.pids(), HostSampler.available()
            with HostSampler() as host:
                twin = sandbox.start(
                    RunSpec(command=command), BASE, name.replace(" ", "-"), limits=limits
                )
                deadline = time.monotonic() + (hold if name == "fork bomb" else 6 * hold)
                while time.monotonic() < deadline and twin.is_running():
                    time.sleep(0.2)
                found = twin.limit_reached()
                usage = twin.usage()
                sandbox.remove(twin)
            assert usage is not None
            rows.append(
                [
                    name,
                    f"{usage.pids_peak} / {limits.pids}",
                    f"{format_size(usage.memory_peak)} / {format_size(limits.memory)}",
                    f"{base_pids} -> {host.peak_pids} (+{host.peak_pids - base_pids})",
                    f"{format_size(base_avail)} -> {format_size(host.min_available)} "
                    f"(-{format_size(max(0, base_avail - host.min_available))})",
                    found or "-",
                ]
            )
    table(
        f"2. a fork bomb ({hold:g}s) and a memory hog (until killed), default limits, cpus 0.5",
        [
            "twin",
            "cgroup peak pids / limit",
            "cgroup peak memory / limit",
            "host processes",
            "host MemAvailable",
            "verdict reason",
        ],
        rows,
    )


# --- 3: kill -9 at a random moment ---------------------------------------------------------------

SITE = """\
site: bench-{tag}
sandbox: {{subnets: [{subnet}]}}
evidence: sqlite:///{root}/evidence.db
systems:
  - name: {name}
    backup: {{kind: image_archive, path: app.tar}}
    run: {{command: [python3, -m, http.server, "8080"]}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, port: 8080}}
      - {{kind: host, file: /etc/os-release, contains: bookworm}}
    rto: 5m
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "(Z)" not in _stat(pid)


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1][:4]
    except OSError:
        return ""


def leftovers(client: Any, pids: set[str], system: str) -> dict[str, int]:
    """What processes ``pids`` (owners) left: by kind."""
    api = client.api
    managed = {"label": "restoredrill.managed=1"}
    mine = lambda labels: (labels or {}).get("restoredrill.pid") in pids  # noqa: E731
    out = {
        "containers (twins, anchor)": sum(
            mine(c["Labels"]) for c in api.containers(all=True, filters=managed)
        ),
        "networks": sum(mine(n["Labels"]) for n in api.networks(filters=managed)),
        "volumes": sum(
            mine(v["Labels"]) for v in (api.volumes(filters=managed) or {}).get("Volumes") or []
        ),
        "images": sum(
            any(t.startswith(f"restoredrill-run/{system}:") for t in i.get("RepoTags") or [])
            for i in api.images()
        ),
        "firewall rules": sum(
            r.owner is not None and str(r.owner.pid) in pids for r in firewall.rules()
        ),
        "scratch folders": sum(
            (found := scratch.owner_of(p)) is not None and str(found[1].pid) in pids
            for p in scratch.root().glob("restoredrill-*")
        ),
    }
    return out


def killed_runs(engine: DockerBackend, runs: int, seed: int) -> None:
    client = engine.client
    rng = random.Random(seed)
    system = f"bench-{TAG}"
    with tempfile.TemporaryDirectory(prefix="rdbench-kill-") as tmp:
        root = Path(tmp)
        client.images.get(IMAGE).tag(f"restoredrill-bench/kill:{TAG}")
        try:
            with (root / "app.tar").open("wb") as fh:
                for chunk in client.images.get(f"restoredrill-bench/kill:{TAG}").save(named=True):
                    fh.write(chunk)
        finally:
            client.images.remove(f"restoredrill-bench/kill:{TAG}")
        site = root / "site.yaml"
        site.write_text(SITE.format(tag=TAG, subnet="10.159.20.0/24", root=root, name=system))
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "PREFECT_HOME": str(root / "prefect"),  # its own, set up by the first run
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a loaded machine
        }
        command = [sys.executable, "-m", "restoredrill.flows.cli", "run", str(site), "--json"]

        def opened(pid: int) -> bool:
            """Whether the run of ``pid`` has begun opening its sandbox (scratch folder)."""
            return leftovers(client, {str(pid)}, system)["scratch folders"] > 0

        def normal() -> tuple[float, dict]:
            """A run to its end; how long it ran after opening its sandbox, its record."""
            out: list[tuple[str, str]] = []
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
            )
            reader = threading.Thread(target=lambda: out.append(proc.communicate()), daemon=True)
            reader.start()
            while not opened(proc.pid) and proc.poll() is None:
                time.sleep(0.05)
            started = time.monotonic()
            reader.join(900)
            stdout, stderr = out[0]
            assert proc.returncode == 0, stderr[-2000:]
            return time.monotonic() - started, json.loads(stdout)

        normal()  # the first run of a new PREFECT_HOME sets it up: not timed
        span, record = normal()
        print(
            f"\n3. kill -9 at a random moment: a normal run takes {span:.1f}s from opening its "
            f"sandbox to its end (verdict {record['verdict']}); {runs} runs killed after a "
            f"random delay in [0, {span:.1f}s] from that moment"
        )
        owners: set[str] = set()
        rows = []
        orphans = 0
        for i in range(runs):
            delay = rng.uniform(0, span)
            proc = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group, as a shell starts it
            )
            owners.add(str(proc.pid))
            while not opened(proc.pid) and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(delay)
            children = _children(proc.pid)
            at_kill = leftovers(client, {str(proc.pid)}, system)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            killed_at = time.monotonic()
            guardians = [p for p in children if "restoredrill.twins.guardian" in _cmdline(p)]
            others = [p for p in children if p not in guardians]
            deadline = time.monotonic() + 120
            while any(_alive(g) for g in guardians) and time.monotonic() < deadline:
                time.sleep(0.05)
            cleanup = time.monotonic() - killed_at
            after = leftovers(client, {str(proc.pid)}, system)
            lingering = [p for p in others if _alive(p)]
            orphans += len(lingering)
            for pid in lingering:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            what = ", ".join(f"{v} {k}" for k, v in at_kill.items() if v) or "nothing (closed)"
            rows.append(
                [
                    i + 1,
                    f"{delay:.1f}s",
                    what,
                    "yes" if guardians else "stopped by the close",
                    f"{cleanup:.1f}s" if guardians else "-",
                    sum(after.values()),
                    len(lingering),
                ]
            )
        table(
            "   each killed run",
            [
                "#",
                "killed after",
                "it had created",
                "guardian",
                "guardian done after",
                "left then",
                "processes left",
            ],
            rows,
        )
        _, record = normal()
        final = leftovers(client, owners | {str(os.getpid())}, system)
        table(
            f"   left after the {runs} killed runs and one normal run (verdict {record['verdict']})",
            ["kind", "count"],
            [[k, v] for k, v in final.items()],
        )
        print(
            f"  processes of killed runs still running once their guardian ended (e.g. a "
            f"temporary Prefect server; stopped here): {orphans}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["reach", "bombs", "kills"])
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    ensure_base_image(client, IMAGE)
    engine = DockerBackend(client)
    print(
        f"containment benchmark: Docker {client.version()['Version']}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if "reach" not in args.skip:
        reach(engine)
    if "bombs" not in args.skip:
        bombs(engine, args.hold)
    if "kills" not in args.skip:
        killed_runs(engine, args.runs, args.seed)


if __name__ == "__main__":
    main()
