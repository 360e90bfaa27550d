"""Containment of twins (issue 8): a twin reaches nothing of the host and nothing outside
its sandbox, checks never use the host's own network cards, twins run bounded, and a
run killed with ``kill -9`` leaves nothing behind.

Real Docker, real iptables, real processes. Subnets from ``free_subnet``; all
traffic goes to addresses of this machine (the host's, a sandbox's, a stand-in
production network's and a bridge the test creates), never anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest
from hostile import PROD_LISTENER, attempt_all, host_addresses, host_listener, tally
from sites import host
from test_flows import plant  # noqa: F401 - the module-scoped backups fixture

from restoredrill.flows.inventory import InventoryError, load_site
from restoredrill.flows.results import SystemResult, Verdict
from restoredrill.twins import firewall, scratch
from restoredrill.twins.base import Restored, TwinError
from restoredrill.twins.docker import DockerBackend
from restoredrill.twins.hostnet import docker_bridges
from restoredrill.twins.limits import Limits, effective
from restoredrill.twins.spec import RunSpec

pytestmark = pytest.mark.docker

IMAGE = "restoredrill/base:bookworm"
BASE = Restored(image=IMAGE)
TEST_LABEL = "restoredrill.test"


def new_run() -> str:
    return f"c{os.getpid()}-{uuid.uuid4().hex[:6]}"


def leftovers(client, run_id: str) -> list[str]:
    """Everything of ``run_id``: labelled Docker objects, firewall rules, scratch folders."""
    api = client.api
    f = {"label": f"restoredrill.run={run_id}"}
    found = [f"container {c['Names'][0]}" for c in api.containers(all=True, filters=f)]
    found += [f"network {n['Name']}" for n in api.networks(filters=f)]
    found += [f"volume {v['Name']}" for v in (api.volumes(filters=f) or {}).get("Volumes") or []]
    found += [f"image {i['Id']}" for i in api.images(filters=f)]
    found += [f"firewall {r.tool} {' '.join(r.args)}" for r in firewall.run_rules(run_id)]
    found += [f"scratch {p}" for p in scratch.folders(run_id)]
    return found


@pytest.fixture(scope="module")
def engine(docker_client, base_image) -> DockerBackend:
    assert base_image == IMAGE
    return DockerBackend(docker_client)


@contextlib.contextmanager
def opened(engine: DockerBackend, subnet: str, **kw) -> Iterator:
    run_id = new_run()
    sandbox = engine.open_sandbox(run_id, subnet, **kw)
    try:
        yield sandbox
    finally:
        sandbox.close()
        assert leftovers(engine.client, run_id) == []


# --- 1: a hostile twin reaches no address of the host, nothing outside the sandbox ----------


@pytest.fixture
def production(engine, free_subnet) -> Iterator[tuple[str, int, object]]:
    """A stand-in production network (a plain Docker bridge) with a listener that logs
    every connection it accepts; yields (its address, port, container)."""
    client = engine.client
    from docker.types import IPAMConfig, IPAMPool

    tag = uuid.uuid4().hex[:6]
    subnet = free_subnet()
    net = client.networks.create(
        f"rdtest-prod-{tag}",
        driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
        labels={TEST_LABEL: tag},
    )
    address, port = host(subnet, 10), 8000
    listener = client.containers.create(
        IMAGE,
        ["python3", "-c", PROD_LISTENER, str(port)],
        name=f"rdtest-prod-{tag}",
        network=net.name,
        networking_config={net.name: client.api.create_endpoint_config(ipv4_address=address)},
        labels={TEST_LABEL: tag},
    )
    try:
        listener.start()
        deadline = time.monotonic() + 20
        while b"listening" not in listener.logs():
            assert time.monotonic() < deadline, "the production stand-in never listened"
            time.sleep(0.1)
        yield address, port, listener
    finally:
        listener.remove(force=True)
        net.remove()


def test_hostile_twin_reaches_no_host_address_and_nothing_outside(
    engine, production, free_subnet
) -> None:
    prod_address, prod_port, prod = production
    subnet = free_subnet()
    with host_listener() as listener, opened(engine, subnet) as sandbox:
        peer = sandbox.start(
            RunSpec(command=["python3", "-m", "http.server", "8080"], address=host(subnet, 20)),
            BASE,
            "peer",
        )
        twin = sandbox.start(
            RunSpec(command=["sleep", "300"], address=host(subnet, 10)), BASE, "hmi"
        )
        targets = [("host", addr, listener.port) for _, addr in host_addresses()]
        targets += [("docker0", a, listener.port) for i, a in host_addresses() if i == "docker0"]
        targets += [("gateway", sandbox.gateway(subnet), listener.port)]
        targets += [("outside", prod_address, prod_port)]
        targets += [("sandbox", peer.address, 8080)]  # the control: this one must connect
        assert any(a.startswith("172.17.") for _, a, _ in targets), "docker0 has no address"
        outcomes = attempt_all(twin, targets)
        counts = tally(outcomes)
        got = [o for o in outcomes if o[3] == "connected" and o[0] != "sandbox"]
        assert got == [], got
        assert counts["sandbox"] == (1, 1), outcomes  # attempts do work where allowed
        assert counts["host"][0] >= 3 and counts["gateway"] == (1, 0)
        assert listener.seen == []  # the host's listener saw nothing
    assert b"accepted" not in prod.logs()  # nor did production's


# --- 2: a production network card on the sandbox subnet is never used ----------------------

NIC_SITE = """\
site: contained-{tag}
sandbox: {{subnets: [{nic}.0/24, {other}.0/24], concurrency: 2}}
evidence: sqlite:///{root}/contained-{tag}.db
systems:
  - name: web
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{address: {nic}.10, env: {{NAME: web}}}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, port: 8080, json: {{status: ok, name: web}}}}
      - {{kind: tcp, port: 8080}}
      - {{kind: tcp, name: the real device is not reached, host: {nic}.5, port: {port}, open: false, timeout: 2}}
    rto: 5m
  - name: router
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{address: {other}.1, env: {{NAME: router}}}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, port: 8080, json: {{name: router}}}}
    rto: 5m
"""


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _destination(line: str) -> IPv4Address | IPv6Address | None:
    """Where a packet tcpdump decoded (``-n -e``) went: an IPv4 destination, or the
    address an ARP request asks for. (The card's own IGMP reports, the host joining a
    group at a moment of its own, go to 224.0.0.22.)"""
    found = re.search(r" > (\d+\.\d+\.\d+\.\d+)[.:]", line) or re.search(r"who-has (\S+)", line)
    return ip_address(found.group(1).rstrip(",")) if found else None


def _toward(line: str, nets: list[IPv4Network | IPv6Network]) -> bool:
    dest = _destination(line)
    return dest is not None and any(dest in net for net in nets)


@contextlib.contextmanager
def _capture(iface: str, out: Path) -> Iterator[Path]:
    """tcpdump on ``iface`` for the body of the block, decoded into ``out`` (what left
    through the card is named when the test fails)."""
    proc = subprocess.Popen(
        ["tcpdump", "-i", iface, "-n", "-e", "-l", "-U", "-Q", "out"],
        stdout=out.open("w"),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    while "listening on" not in seen:  # once it captures
        line = proc.stderr.readline()
        assert line, f"tcpdump ended: {seen}"
        seen += line
    try:
        yield out
    finally:
        time.sleep(0.5)
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def production_nic(free_subnet) -> Iterator[tuple[str, str, str]]:
    """A Linux bridge standing in for the drill host's production network card on a free
    subnet (host address .5), with a port so it has carrier: (bridge, address, subnet)."""
    subnet = free_subnet()
    tag = uuid.uuid4().hex[:6]
    bridge, veth, peer = f"rdtnic{tag}", f"rdtv0{tag}", f"rdtv1{tag}"
    try:
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        for iface in (bridge, veth, peer):
            _sh("sysctl", "-q", "-w", f"net.ipv6.conf.{iface}.disable_ipv6=1")
            # no IGMP reports of its own (sent at a random moment after the link comes up):
            # the only packet it could send is traffic toward the sandbox subnet
            _sh("ip", "link", "set", iface, "multicast", "off")
        _sh("ip", "link", "set", veth, "master", bridge)
        _sh("ip", "addr", "add", f"{host(subnet, 5)}/24", "dev", bridge)
        for iface in (bridge, veth, peer):
            _sh("ip", "link", "set", iface, "up")
        yield bridge, host(subnet, 5), subnet
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_checks_never_use_a_production_nic_and_a_system_at_dot_1_runs(
    plant: Path,  # noqa: F811
    production_nic,
    docker_client,
    free_subnet,
) -> None:
    from restoredrill.flows.verify import verify_site

    bridge, nic_address, nic_subnet = production_nic
    device = socket.socket()  # "the real device" behind the production card
    device.bind((nic_address, 0))
    device.listen(8)
    device.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = device.accept()
            except OSError:
                continue
            seen.append(peer[0])
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    tag = uuid.uuid4().hex[:6]
    site = plant / f"contained-{tag}.yaml"
    other_subnet = free_subnet()
    prefixes = {k: s.rsplit(".", 1)[0] for k, s in (("nic", nic_subnet), ("other", other_subnet))}
    # an address on the card's own network no one holds: the test's packet to it (an ARP
    # request on the card) shows that the capture sees what the card sends
    marker = host(nic_subnet, 250)
    site.write_text(NIC_SITE.format(tag=tag, root=plant, port=device.getsockname()[1], **prefixes))
    try:
        with _capture(bridge, plant / f"capture-{tag}.txt") as capture:
            record = verify_site(str(site))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.sendto(b"marker", (marker, 9))
    finally:
        stop.set()
        server.join(5)
        device.close()
    by = {s.system: s for s in record.systems}
    assert by["web"].verdict is Verdict.PASS, by["web"]
    real = [c for c in by["web"].checks if c.name == "the real device is not reached"]
    assert real and real[0].passed and real[0].observed != "open", real
    assert by["router"].verdict is Verdict.PASS, by["router"]  # production address .1
    assert seen == []  # the real device saw no connection
    sent = capture.read_text().splitlines()
    assert any(f"who-has {marker} " in line for line in sent), sent
    nets = [ip_network(nic_subnet), ip_network(other_subnet)]
    toward_sandbox = [line for line in sent if _toward(line, nets) and marker not in line]
    assert toward_sandbox == [], "the production card carried traffic of the run:\n" + "\n".join(
        sent
    )
    from test_flows import leftovers as flow_leftovers

    assert flow_leftovers(docker_client, record.run_id) == []


# --- 3: validation ---------------------------------------------------------------------------


def _site(tmp_path: Path, subnet: str, address: str | None = None) -> Path:
    path = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    run = f"\n    run: {{address: {address}}}" if address else ""
    path.write_text(
        "site: v\n"
        "sandbox:\n"
        f"  subnets: [{subnet}]\n"
        "systems:\n"
        "  - name: a\n"
        f"    backup: {{kind: image_archive, path: a.tar}}{run}\n"
        "    rto: 5m\n"
    )
    return path


@pytest.mark.parametrize(
    ("subnet", "why"),
    [
        ("0.0.0.0/0", "0.0.0.0/0 is too large for a sandbox (at most a /16"),
        ("127.0.0.0/24", "127.0.0.0/24 overlaps loopback (127.0.0.0/8)"),
        ("169.254.0.0/24", "169.254.0.0/24 overlaps link-local (169.254.0.0/16)"),
        ("224.1.0.0/24", "224.1.0.0/24 overlaps multicast (224.0.0.0/4)"),
        ("0.1.2.0/24", "0.1.2.0/24 overlaps 'this network' (0.0.0.0/8, unspecified)"),
        ("fe80::/64", "fe80::/64 overlaps link-local (fe80::/10)"),
    ],
)
def test_unsafe_subnets_are_rejected_with_file_and_line(tmp_path: Path, subnet, why) -> None:
    path = _site(tmp_path, subnet)
    with pytest.raises(InventoryError) as err:
        load_site(path)
    assert str(err.value).startswith(f"{path}:3: sandbox.subnets[0]: {why}")


def test_subnet_of_a_docker_bridge_is_rejected_naming_it(tmp_path: Path) -> None:
    docker0 = [net for iface, net in docker_bridges() if iface == "docker0" and net.version == 4]
    assert docker0, "this host's docker0 has no IPv4 subnet"
    path = _site(tmp_path, str(docker0[0]))
    proc = subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        f"{path}:3: sandbox.subnets[0]: {docker0[0]} overlaps the Docker bridge docker0 "
        f"({docker0[0]}) of this host"
    ) in proc.stderr
    assert "docker network rm" not in proc.stderr and "Traceback" not in proc.stderr


def test_subnet_needs_room_for_gateway_and_anchor(tmp_path: Path) -> None:
    path = _site(tmp_path, "10.249.153.0/30", "10.249.153.1")  # two host addresses, one claimed
    with pytest.raises(
        InventoryError, match=r":3: sandbox.subnets\[0\]: 10.249.153.0/30 needs two"
    ):
        load_site(path)
    load_site(_site(tmp_path, "10.249.153.0/29", "10.249.153.1"))  # six: fine


def test_overlap_messages_never_advise_removing_what_is_not_a_dead_runs(
    engine, free_subnet
) -> None:
    docker0 = [net for iface, net in docker_bridges() if iface == "docker0" and net.version == 4]
    assert docker0
    inside, run_id = next(docker0[0].subnets(new_prefix=24)), new_run()
    with pytest.raises(TwinError) as err:
        engine.open_sandbox(run_id, str(inside))
    assert leftovers(engine.client, run_id) == []
    text = str(err.value)
    assert "'bridge'" in text and "which is not restoredrill's" in text
    assert "docker network rm" not in text and "sandbox.subnets" in text

    # a dead run's leftover network: offered for removal (the next run's reaper does it)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = dead.stdout.strip()
    from docker.types import IPAMConfig, IPAMPool

    labels = {
        "restoredrill.run": "rdead",
        "restoredrill.managed": "1",
        "restoredrill.pid": pid,
        "restoredrill.host": socket.gethostname(),
    }
    left = engine.client.networks.create(
        f"rdtest-left-{uuid.uuid4().hex[:6]}",
        driver="bridge",
        internal=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=(subnet := free_subnet()))]),
        labels=labels,
    )
    try:
        run_id = new_run()
        with pytest.raises(TwinError) as err:
            engine.open_sandbox(run_id, subnet)
        assert leftovers(engine.client, run_id) == []
        text = str(err.value)
        assert "a leftover of restoredrill run rdead, whose process is gone" in text
        assert f"`docker network rm {left.name}`" in text
    finally:
        left.remove()


# --- 4: limits -------------------------------------------------------------------------------


def _wait_for(what: str, condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.2)


FORK_BOMB = "f() { f | f & }; f; exec sleep 600"
"""The shell becomes the sleep (no fork): the twin lives on at its pids limit. With a plain
``sleep`` the shell itself could be refused its fork and end the twin before the watcher's
first sample (on a loaded machine); the verdict is then still ``error`` but names the exit,
not the limit (cgroup v1 removes the counters with the container)."""
MEMORY_HOG = "import time; x = [time.sleep(0.05) or b'x' * (4 << 20) for _ in range(1000)]"
DISK_FILLER = "dd if=/dev/zero of=/filler bs=1M count=256 2>/dev/null; sleep 600"
RAW_SOCKET = "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'"


def test_limits_bound_fork_bomb_memory_hog_and_disk_filler(engine, free_subnet) -> None:
    small = effective(Limits(memory="128m", pids=64, cpus=0.5, disk="64m"))
    with opened(engine, free_subnet()) as sandbox:
        plain = sandbox.start(RunSpec(command=["sleep", "300"]), BASE, "plain")
        host = engine.client.api.inspect_container(plain.id)["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and "NET_RAW" not in host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Memory"] == host["MemorySwap"] == 1 << 30  # default 1g, no swap
        assert (host["PidsLimit"], host["NanoCpus"]) == (512, 1_000_000_000)
        assert plain.exec(RAW_SOCKET).exit_code != 0  # NET_RAW is absent
        status = plain.exec("grep NoNewPrivs /proc/self/status").stdout
        assert status.split() == ["NoNewPrivs:", "1"]

        bomb = sandbox.start(RunSpec(command=["sh", "-c", FORK_BOMB]), BASE, "bomb", limits=small)
        hog = sandbox.start(
            RunSpec(command=["python3", "-c", MEMORY_HOG]), BASE, "hog", limits=small
        )
        filler = sandbox.start(
            RunSpec(command=["sh", "-c", DISK_FILLER]), BASE, "disk", limits=small
        )
        _wait_for("the fork bomb reaching its pids limit", lambda: bomb.usage().pids_refused > 0)
        _wait_for("the memory hog's end", lambda: not hog.is_running())
        _wait_for("the disk filler's end", lambda: not filler.is_running())

        assert bomb.usage().pids_peak <= 64, bomb.usage()  # the host saw at most 64 of them
        assert bomb.limit_reached().startswith("limit: pids 64 reached, the kernel refused")
        assert hog.usage().memory_peak <= 128 << 20, hog.usage()
        assert hog.limit_reached() == (
            "limit: memory 128MiB reached, the kernel killed the twin (OOM)"
        )
        assert filler.limit_reached().startswith("limit: disk 64MiB exceeded (the twin wrote")
        assert plain.limit_reached() is None
        sandbox.remove(bomb)
        assert bomb.limit_reached().startswith("limit: pids 64")  # judged before removal


LIMITS_SITE = """\
site: limits-{tag}
sandbox:
  subnets: [{subnet}]
  concurrency: 5
  limits: {{memory: 256m, cpus: 0.5, pids: 128}}
evidence: sqlite:///{root}/limits-{tag}.db
systems:
  - name: bomb
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{command: [sh, -c, "{bomb}"], limits: {{pids: 64}}}}
    ready: {{kind: log, contains: never printed, timeout: 15s}}
    rto: 5m
  - name: hog
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{command: [python3, -c, "{hog}"], limits: {{memory: 128m}}}}
    ready: {{kind: log, contains: never printed, timeout: 60s}}
    rto: 5m
  - name: plain
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: host, name: raw sockets refused, command: "{raw}", exit_code: 1}}
    rto: 5m
  - name: pinger
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{limits: {{cap_add: [NET_RAW], memory: 512m}}}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: host, name: raw sockets allowed, command: "{raw}", exit_code: 0}}
    rto: 5m
  - name: stuck
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: host, name: hangs, command: sleep 300, timeout: 300}}
    rto: 15s
"""


def test_limits_in_a_run_verdicts_overrides_and_evidence(
    plant: Path,  # noqa: F811
    docker_client,
    free_subnet,
) -> None:
    from restoredrill.flows.verify import verify_site

    tag = uuid.uuid4().hex[:6]
    site = plant / f"limits-{tag}.yaml"
    raw = RAW_SOCKET.replace('"', '\\"')
    site.write_text(
        LIMITS_SITE.format(
            tag=tag, root=plant, bomb=FORK_BOMB, hog=MEMORY_HOG, raw=raw, subnet=free_subnet()
        )
    )
    record = verify_site(str(site))
    by = {s.system: s for s in record.systems}
    assert by["bomb"].verdict is Verdict.ERROR
    assert by["bomb"].reason.startswith("limit: pids 64 reached, the kernel refused"), by["bomb"]
    assert by["hog"].verdict is Verdict.ERROR
    assert by["hog"].reason.startswith(
        "limit: memory 128MiB reached, the kernel killed the twin (OOM) (ready:"
    ), by["hog"]
    assert by["plain"].verdict is Verdict.PASS, by["plain"]  # NET_RAW refused by default
    assert by["pinger"].verdict is Verdict.PASS, by["pinger"]  # ... allowed where overridden
    # the effective limits go with each result, where the result model has the field
    # (SystemResult.limits comes with the evidence store's change, branch c-evidence)
    if "limits" in SystemResult.model_fields:
        assert by["plain"].limits == {
            "memory": "256MiB",
            "cpus": 0.5,
            "pids": 128,
            "disk": "10GiB",
            "restore": "16GiB",
            "cap_add": [],
            "cap_drop": [],
        }
        assert by["bomb"].limits["pids"] == 64 and by["bomb"].limits["memory"] == "256MiB"
        assert by["pinger"].limits["cap_add"] == ["NET_RAW"]
        assert by["pinger"].limits["memory"] == "512MiB"
    # a check the watchdog cut short says so, not "timed out after 300s"
    stuck = by["stuck"]
    assert stuck.verdict is Verdict.RTO_EXCEEDED, stuck
    hung = [c for c in stuck.checks if c.name.startswith("hangs")]
    assert hung and hung[0].message == "stopped by the watchdog after 45s (3x RTO)", hung
    assert stuck.reason == "stopped by the watchdog after 45s (3x RTO) in step checks"
    from test_flows import leftovers as flow_leftovers

    assert flow_leftovers(docker_client, record.run_id) == []


# --- 5: kill -9 ------------------------------------------------------------------------------

VICTIM_SITE = """\
site: victim-{tag}
sandbox: {{subnets: [{subnet}]}}
evidence: sqlite:///{root}/victim-{tag}.db
systems:
  - name: {name}
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{command: [sleep, "600"]}}
    ready: {{kind: tcp, port: 9999, timeout: 10m}}
    rto: 10m
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_and_kill(
    plant: Path,  # noqa: F811
    subnet: str,
    docker_client,
    guardian_too: bool = False,
) -> tuple[str, list[int]]:
    """Run a site whose system waits forever in ``ready``; kill -9 the run once it does
    (``guardian_too``: its guardian first). Returns the run id and the run's other
    children (its guardian among them)."""
    tag = uuid.uuid4().hex[:6]
    name = f"victim-{tag}"
    site = plant / f"victim-{tag}.yaml"
    site.write_text(VICTIM_SITE.format(tag=tag, subnet=subnet, root=plant, name=name))
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "restoredrill.flows.cli", "run", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group, as a shell starts a command
    )
    try:
        found: list[dict] = []

        def waiting() -> bool:
            assert proc.poll() is None, "the run ended by itself"
            label = f"restoredrill.system={name}"
            found[:] = docker_client.api.containers(filters={"label": label})
            return bool(found)

        _wait_for("the victim's twin", waiting, timeout=300)
        time.sleep(1)  # well inside `ready` now
        children = _children(proc.pid)
        if guardian_too:
            _stop([p for p in children if "restoredrill.twins.guardian" in _cmdline(p)])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return found[0]["Labels"]["restoredrill.run"], children


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_guardian_removes_everything_of_the_run(
    plant: Path,  # noqa: F811
    docker_client,
    free_subnet,
) -> None:
    run_id, children = _start_and_kill(plant, free_subnet(), docker_client)
    guardians = [p for p in children if "restoredrill.twins.guardian" in _cmdline(p)]
    others = [p for p in children if p not in guardians]
    try:
        assert len(guardians) == 1, [_cmdline(p) for p in children]
        assert others, "the run started no other process (its temporary Prefect server)"
        # without any other run: the guardian removes it all, then ends
        _wait_for("the guardian's cleanup", lambda: leftovers(docker_client, run_id) == [], 60)
        _wait_for("the guardian's end", lambda: not _running(guardians[0]), 30)
        # and the rest of the run's process group (e.g. its temporary Prefect server)
        assert [_cmdline(p) for p in others if _running(p)] == []
    finally:
        _stop(others)


def test_kill_9_with_guardian_killed_the_next_run_reaps_it(
    plant: Path,  # noqa: F811
    docker_client,
    free_subnet,
) -> None:
    from restoredrill.flows.verify import verify_site

    run_id, children = _start_and_kill(plant, free_subnet(), docker_client, guardian_too=True)
    _stop(children)  # e.g. the run's temporary Prefect server
    left = leftovers(docker_client, run_id)
    kinds = {item.split()[0] for item in left}
    assert {"container", "network", "firewall", "scratch"} <= kinds, left
    tag = uuid.uuid4().hex[:6]
    site = plant / f"next-{tag}.yaml"
    site.write_text(
        VICTIM_SITE.format(tag=tag, subnet=free_subnet(), root=plant, name="next").replace(
            'run: {command: [sleep, "600"]}\n    ready: {kind: tcp, port: 9999, timeout: 10m}',
            "ready: {kind: tcp, port: 8080, timeout: 60s}",
        )
    )
    record = verify_site(str(site), evidence=False)
    assert record.systems[0].verdict is Verdict.PASS, record.systems[0]
    assert leftovers(docker_client, run_id) == []
    assert leftovers(docker_client, record.run_id) == []
