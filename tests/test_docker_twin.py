"""The Docker twin backend on the real engine: isolation, addresses, readiness, exec, teardown.

Traffic goes only to containers on networks these tests create (the sandbox, from
inside it, and a stand-in "production" network); every object is labelled and removed
at the end. (Containment against a hostile twin: test_containment.py.)
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from restoredrill.twins import firewall, scratch
from restoredrill.twins.base import Restored, TwinError
from restoredrill.twins.docker import DockerBackend, DockerSandbox, ExecTimeout, reap_stale
from restoredrill.twins.readiness import wait_ready
from restoredrill.twins.spec import CommandProbe, HttpProbe, LogProbe, RunSpec, TcpProbe

pytestmark = pytest.mark.docker

IMAGE = "restoredrill/base:bookworm"
TEST_LABEL = "restoredrill.test"


def new_run() -> str:
    return f"t{os.getpid()}-{uuid.uuid4().hex[:6]}"


def host(subnet: str, n: int) -> str:
    return str(ipaddress.ip_network(subnet).network_address + n)


def leftovers(client, run_id: str) -> list[str]:
    """Everything of ``run_id``: labelled on the engine, firewall rules, scratch folders."""
    api = client.api
    f = {"label": f"restoredrill.run={run_id}"}
    found = [f"container {c['Names'][0]}" for c in api.containers(all=True, filters=f)]
    found += [f"network {n['Name']}" for n in api.networks(filters=f)]
    found += [f"volume {v['Name']}" for v in (api.volumes(filters=f) or {}).get("Volumes") or []]
    found += [f"image {i['Id']}" for i in api.images(filters=f)]
    found += [f"firewall rule {r.tool} {' '.join(r.args)}" for r in firewall.run_rules(run_id)]
    found += [f"scratch folder {p}" for p in scratch.folders(run_id)]
    return found


def kinds_of(items: list[str]) -> dict[str, int]:
    """How many of each kind (the first word) a list of objects holds."""
    out: dict[str, int] = {}
    for item in items:
        out[item.split()[0]] = out.get(item.split()[0], 0) + 1
    return out


def run_spec(*command: str, **kw) -> RunSpec:
    return RunSpec(command=list(command), **kw)


BASE = Restored(image=IMAGE)
SLEEP = ("sleep", "300")


@pytest.fixture(scope="module")
def engine(docker_client, base_image) -> DockerBackend:
    assert base_image == IMAGE
    return DockerBackend(docker_client)


@pytest.fixture
def sandbox(engine, free_subnet) -> Iterator[DockerSandbox]:
    run_id = new_run()
    sb = engine.open_sandbox(run_id, free_subnet())
    try:
        yield sb
    finally:
        sb.close()
        assert leftovers(engine.client, run_id) == []


@pytest.fixture(scope="module")
def web(engine, free_subnet):
    """One sandbox with an HTTP server twin that logs a marker line when it starts."""
    run_id = new_run()
    sb = engine.open_sandbox(run_id, free_subnet())
    try:
        script = "echo booting; echo 'listening now'; exec python3 -m http.server 8080"
        twin = sb.start(run_spec("sh", "-c", script), BASE, "web")
        yield sb, twin
    finally:
        sb.close()
        assert leftovers(engine.client, run_id) == []


# --- engine ----------------------------------------------------------------------------------


def test_engine_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'no-such-docker.sock'}"
    with pytest.raises(TwinError) as err:
        DockerBackend(base_url=url)
    text = str(err.value)
    assert f"Docker engine not reachable at {url}" in text
    assert "dockerd &" in text and "apt-get install docker.io" in text


def test_subnet_overlap_names_the_live_run_and_says_wait(engine, free_subnet) -> None:
    subnet = free_subnet()
    first, second = new_run(), new_run()
    with engine.open_sandbox(first, subnet) as sb:
        with pytest.raises(TwinError) as err:
            engine.open_sandbox(second, subnet)
        text = str(err.value)
        assert (
            f"sandbox subnet {subnet} overlaps Docker network {sb.network_names[0]!r} ({subnet}) "
            f"of restoredrill run {first}, which is running (pid {os.getpid()} on "
            f"{socket.gethostname()})"
        ) in text
        assert f"wait until run {first} is done" in text and "sandbox.subnets" in text
        assert "docker network rm" not in text  # never advise removing a live run's network
        assert leftovers(engine.client, second) == []
    assert leftovers(engine.client, first) == []


# --- isolation and addresses -----------------------------------------------------------------


def test_sandbox_is_internal_and_cannot_reach_production(engine, sandbox, free_subnet) -> None:
    """A twin cannot reach a listener on another (stand-in production) network; a peer there can."""
    client = engine.client
    net = client.api.inspect_network(sandbox.network_names[0])
    assert net["Internal"] is True
    assert net["Labels"]["restoredrill.run"] == sandbox.run_id
    assert net["Labels"]["restoredrill.managed"] == "1"

    prod_subnet = free_subnet()
    prod_ip = host(prod_subnet, 10)
    from docker.types import IPAMConfig, IPAMPool

    prod = client.networks.create(
        f"rdtest-prod-{sandbox.run_id}",
        driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=prod_subnet)]),
        labels={TEST_LABEL: sandbox.run_id},
    )
    containers = []
    try:
        listener = client.containers.create(
            IMAGE,
            ["python3", "-m", "http.server", "8000"],
            network=prod.name,
            networking_config={prod.name: client.api.create_endpoint_config(ipv4_address=prod_ip)},
            labels={TEST_LABEL: sandbox.run_id},
        )
        containers.append(listener)
        listener.start()
        deadline = time.monotonic() + 10
        while True:  # the listener really listens (the host reaches it)
            try:
                socket.create_connection((prod_ip, 8000), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "stand-in production listener never came up"
                time.sleep(0.1)

        probe = (
            "import socket,sys; s=socket.socket(); s.settimeout(2); "
            f"sys.exit(s.connect_ex(({prod_ip!r}, 8000)))"
        )
        peer = client.containers.create(
            IMAGE, ["python3", "-c", probe], network=prod.name, labels={TEST_LABEL: sandbox.run_id}
        )
        containers.append(peer)
        peer.start()
        assert peer.wait(timeout=20)["StatusCode"] == 0  # the probe works where allowed

        twin = sandbox.start(run_spec(*SLEEP), BASE, "hmi")
        out = twin.exec(["python3", "-c", probe], timeout=20)
        assert out.exit_code != 0, "a sandboxed twin reached the production network"
    finally:
        for c in containers:
            c.remove(force=True)
        prod.remove()


def test_takes_over_production_address_and_checks_reach_it_from_inside(engine, sandbox) -> None:
    address = host(sandbox.networks[0], 10)
    spec = run_spec("python3", "-m", "http.server", "8080", address=address, hostname="hist01")
    twin = sandbox.start(spec, BASE, "historian", {"zone": "ot"})
    assert twin.address == address
    assert twin.testinfra_url == f"docker://{twin.id}"
    wait_ready(twin, HttpProbe(port=8080, timeout="15s"))  # from inside the sandbox
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with sandbox.inside(), opener.open(f"http://{address}:8080/", timeout=5) as resp:
        assert resp.status == 200
        assert sandbox.is_inside()
    assert not sandbox.is_inside()  # the thread is back in the host's network
    # the host holds no IPv4 address on the sandbox's bridge (so no route into it)
    bridge = sandbox.bridges[0]
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True)
    assert shown.returncode == 0 and shown.stdout == b""
    seen = twin.exec("hostname; ip -4 -o addr show eth0").stdout
    assert seen.splitlines()[0] == "hist01"
    assert f"inet {address}/24" in seen
    labels = engine.client.api.inspect_container(twin.id)["Config"]["Labels"]
    assert labels["restoredrill.run"] == sandbox.run_id
    assert labels["restoredrill.system"] == "historian"
    assert labels["restoredrill.managed"] == "1"
    assert labels["restoredrill.pid"] == str(os.getpid())
    assert labels["zone"] == "ot"


def test_aux_twin_for_a_field_device(engine, sandbox, tmp_path: Path) -> None:
    (tmp_path / "registers.csv").write_text("40001,1234\n")
    address = host(sandbox.networks[0], 50)
    plc = sandbox.start_aux(
        "plc1",
        IMAGE,
        ["python3", "-m", "http.server", "502"],
        address=address,
        mounts={"/etc/plc": f"{tmp_path}:ro"},
        labels={"restoredrill.device": "modbus"},
    )
    wait_ready(plc, TcpProbe(port=502, timeout="15s"))  # raises if it never listens
    assert plc.exec(["cat", "/etc/plc/registers.csv"]).stdout == "40001,1234\n"
    labels = engine.client.api.inspect_container(plc.id)["Config"]["Labels"]
    assert labels["restoredrill.role"] == "aux" and labels["restoredrill.device"] == "modbus"
    assert labels["restoredrill.run"] == sandbox.run_id


def test_address_rules(engine, sandbox, free_subnet) -> None:
    subnet = sandbox.networks[0]
    first = sandbox.start(run_spec(*SLEEP, address=host(subnet, 20)), BASE, "scada")
    with pytest.raises(
        TwinError, match=rf"mes: address {host(subnet, 20)} is already taken by twin 'scada'"
    ):
        sandbox.start(run_spec(*SLEEP, address=host(subnet, 20)), BASE, "mes")
    with pytest.raises(TwinError, match=r"outside every sandbox subnet .*sandbox\.subnets"):
        sandbox.start(run_spec(*SLEEP, address="192.0.2.200"), BASE, "erp")
    gateway, anchor = sandbox.gateway(subnet), sandbox.anchor_address(subnet)
    assert (gateway, anchor) == (host(subnet, 254), host(subnet, 253))  # the highest free
    with pytest.raises(TwinError, match=rf"address {gateway} is already taken by the gateway"):
        sandbox.start(run_spec(*SLEEP, address=gateway), BASE, "router")
    with pytest.raises(TwinError, match=rf"address {anchor} is already taken by the sandbox's"):
        sandbox.start(run_spec(*SLEEP, address=anchor), BASE, "router")
    router = sandbox.start(run_spec(*SLEEP, address=host(subnet, 1)), BASE, "router")  # .1 is free
    dynamic = sandbox.start(run_spec(*SLEEP), BASE, "spare")
    assert dynamic.address == host(subnet, 252)  # from the top, away from production addresses
    assert dynamic.exec("getent hosts scada").stdout.split()[0] == host(subnet, 20)

    second = sandbox.add_network(free_subnet())
    address = host(sandbox.networks[1], 7)
    cell = sandbox.start(run_spec(*SLEEP, address=address), BASE, "cell")
    assert cell.network == second
    nets = engine.client.api.inspect_container(cell.id)["NetworkSettings"]["Networks"]
    assert list(nets) == [second] and nets[second]["IPAddress"] == address

    with pytest.raises(TwinError, match="is not in the local engine"):
        sandbox.start(run_spec(*SLEEP), Restored(image="restoredrill-test/absent:none"), "ghost")
    with pytest.raises(TwinError, match="executable file not found|no such file"):
        sandbox.start(run_spec("/no/such/binary"), BASE, "broken")
    with pytest.raises(TwinError, match="run.data_path"):
        sandbox.start(RunSpec(image=IMAGE), Restored(directory=Path("/tmp")), "data")
    with pytest.raises(TwinError, match="host path /no/such/dir does not exist"):
        sandbox.start(run_spec(*SLEEP, volumes={"/x": "/no/such/dir"}), BASE, "vol")
    # failed starts leave nothing behind and free their address
    running = engine.client.api.containers(
        all=True, filters={"label": f"restoredrill.run={sandbox.run_id}"}
    )
    twins = {c["Id"] for c in running if c["Labels"].get("restoredrill.role") != "anchor"}
    assert twins == {first.id, router.id, dynamic.id, cell.id}
    sandbox.start(run_spec(*SLEEP), BASE, "broken2")


# --- readiness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "probe",
    [
        TcpProbe(port=8080, timeout="15s"),
        HttpProbe(port=8080, path="/", status=200, timeout="15s"),
        LogProbe(contains="listening now", timeout="15s"),
        CommandProbe(command="test -d /proc && python3 -c 'import http'", timeout="15s"),
    ],
    ids=lambda p: p.kind,
)
def test_probe_passes(web, probe) -> None:
    _, twin = web
    wait_ready(twin, probe, poll=0.05)  # raises TwinError if not ready within 15 s


@pytest.mark.parametrize(
    ("probe", "expect"),
    [
        (TcpProbe(port=9, timeout="0.5s"), "tcp {addr}:9 refused"),
        (
            HttpProbe(port=8080, path="/missing", timeout="0.5s"),
            "http GET http://{addr}:8080/missing status 404 (expected 200)",
        ),
        (
            LogProbe(contains="never printed", timeout="0.5s"),
            "log line containing 'never printed' not seen",
        ),
        (
            CommandProbe(command="echo not yet >&2; exit 3", timeout="0.5s"),
            "command `echo not yet >&2; exit 3` exit 3: not yet",
        ),
    ],
    ids=["tcp", "http", "log", "command"],
)
def test_probe_times_out_clearly(web, probe, expect) -> None:
    _, twin = web
    wait_ready(twin, TcpProbe(port=8080, timeout="15s"))
    with pytest.raises(TwinError) as err:
        wait_ready(twin, probe, poll=0.05)
    text = str(err.value)
    assert text.startswith(f"web not ready after 0.5s: {expect.format(addr=twin.address)}; ")
    assert "; last output:\n" in text and "GET /" in text  # the twin's own log lines


def test_twin_that_exits_at_once_fails_fast(sandbox) -> None:
    script = "echo 'fatal: /etc/app.conf missing' >&2; exit 3"
    twin = sandbox.start(run_spec("sh", "-c", script), BASE, "app")
    with pytest.raises(TwinError) as err:
        wait_ready(twin, TcpProbe(port=8080, timeout="30s"))
    text = str(err.value)
    assert "app exited with code 3 before it was ready" in text  # not "not ready after 30s"
    assert "fatal: /etc/app.conf missing" in text
    assert not twin.is_running() and twin.exit_code() == 3


# --- exec ------------------------------------------------------------------------------------


def test_exec_separates_streams_and_exit_code(sandbox) -> None:
    twin = sandbox.start(run_spec(*SLEEP), BASE, "box")
    out = twin.exec(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert (out.exit_code, out.stdout, out.stderr) == (4, "out\n", "err\n")
    assert twin.exec("echo $((40 + 2))").stdout == "42\n"  # a string goes through the shell
    assert twin.exec(["true"], timeout=10).exit_code == 0

    with pytest.raises(ExecTimeout, match="did not finish within 0.5s"):
        twin.exec("sleep 37", timeout=0.5)
    assert "sleep 37" not in twin.exec(["ps", "-eo", "args"]).stdout  # it was killed

    engine_api = sandbox.client.api
    engine_api.stop(twin.id, timeout=0)
    with pytest.raises(TwinError, match=r"box is not running \(exited with code"):
        twin.exec(["true"])


# --- teardown --------------------------------------------------------------------------------


def test_teardown_removes_everything(engine, tmp_path: Path, free_subnet) -> None:
    client = engine.client
    run_id = new_run()
    restored_tag = f"restoredrill-test/restored:{run_id}"
    client.images.get(IMAGE).tag(restored_tag)
    data = tmp_path / "restored"
    data.mkdir()
    (data / "tags.csv").write_text("TT101,21.5\n")
    config = tmp_path / "config"
    config.mkdir()
    (config / "app.conf").write_text("mode=replica\n")

    sb = engine.open_sandbox(run_id, free_subnet())
    try:
        app = sb.start(
            run_spec(*SLEEP, volumes={"/etc/app": f"{config}:ro", "/var/lib/app": "appdata"}),
            Restored(image=restored_tag, created_images=(restored_tag,)),
            "app",
        )
        historian = sb.start(
            RunSpec(command=list(SLEEP), image=IMAGE, data_path="/srv/data"),
            Restored(directory=data),
            "historian",
            remove_directory=True,
        )
        assert historian.exec("cat /srv/data/tags.csv").stdout == "TT101,21.5\n"
        assert historian.exec("echo new > /srv/data/written").exit_code == 0  # read-write
        assert (data / "written").read_text() == "new\n"
        assert app.exec("cat /etc/app/app.conf").stdout == "mode=replica\n"
        assert app.exec("touch /etc/app/x").exit_code != 0  # read-only
        assert app.exec("touch /var/lib/app/x").exit_code == 0
        volumes = client.api.volumes(filters={"label": f"restoredrill.run={run_id}"})["Volumes"]
        assert [v["Name"] for v in volumes] == [f"restoredrill-{run_id}-appdata"]

        sb.remove(historian)
        sb.remove(historian)  # twice is fine
        assert not data.exists()
        sb.remove(app)
        assert not any(restored_tag in (i.tags or []) for i in client.images.list())
        client.images.get(IMAGE)  # the image it was tagged from stays

        gone = sb.start(run_spec(*SLEEP), BASE, "gone")
        client.api.remove_container(gone.id, force=True)  # removed behind our back
        sb.start(run_spec(*SLEEP), BASE, "left")
    finally:
        sb.close()
    sb.close()  # idempotent
    assert leftovers(client, run_id) == []


def test_ctrl_c_still_tears_down(engine, free_subnet) -> None:
    run_id = new_run()
    with (
        pytest.raises(KeyboardInterrupt),
        engine.open_sandbox(run_id, free_subnet()) as sb,
    ):
        sb.start(run_spec(*SLEEP), BASE, "plc1")
        raise KeyboardInterrupt
    assert leftovers(engine.client, run_id) == []


CRASHING_RUN = textwrap.dedent(
    """
    import sys, time
    from restoredrill.twins.base import Restored
    from restoredrill.twins.docker import DockerBackend
    from restoredrill.twins.spec import RunSpec

    run_id, subnet, image = sys.argv[1:4]
    engine = DockerBackend()
    sandbox = engine.open_sandbox(run_id, subnet, guardian=False)  # as if it was killed too
    twin = sandbox.start(RunSpec(command=["sleep", "300"]), Restored(image=image), "scada")
    # an image a restore created: labelled with the run only (no owner labels)
    engine.client.api.commit(
        twin.id, repository="restoredrill-test/crashed", tag=run_id,
        changes=[f"LABEL restoredrill.run={run_id}"],
    )
    print("READY", flush=True)
    time.sleep(300)
    """
)


def test_reap_stale_removes_dead_runs_only(engine, sandbox, free_subnet) -> None:
    client = engine.client
    live = sandbox.run_id
    sandbox.start(run_spec(*SLEEP), BASE, "live-twin")
    dead = new_run()
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, dead, free_subnet(), IMAGE],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        proc.send_signal(signal.SIGKILL)  # a crash: no teardown ran
        proc.wait(10)
        left = leftovers(client, dead)
        everything = {"container": 2, "network": 1, "image": 1, "scratch": 1}  # twin + anchor
        rules = {"firewall": 2 * len(firewall.tools())}  # two per bridge, iptables and ip6tables
        assert kinds_of(left) == {**everything, **rules}, left

        assert engine.reap_stale(alive=lambda run_id: run_id == dead, runs={dead, live}) == []
        removed = engine.reap_stale(runs={dead, live})
        tools = {tool: 1 for tool in firewall.tools()}  # one line per tool and bridge
        assert kinds_of(removed) == {**everything, **tools}, removed
        assert all(f"(run {dead})" in r or f"restoredrill-{dead}" in r for r in removed)
        assert leftovers(client, dead) == []
        alive = {"container": 2, "network": 1, "scratch": 1, **rules}
        assert kinds_of(leftovers(client, live)) == alive  # the live run keeps it all

        # an owner on another host cannot be judged: reaped only past max_age
        other = new_run()
        client.api.create_volume(
            f"rdtest-{other}",
            labels={
                "restoredrill.run": other,
                "restoredrill.managed": "1",
                "restoredrill.host": "some-other-host",
                "restoredrill.pid": "1",
            },
        )
        assert reap_stale(client, runs={other}) == []
        time.sleep(1.1)
        assert reap_stale(client, max_age=0.5, runs={other}) == [
            f"volume rdtest-{other} (run {other})"
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        engine.reap_stale(runs={dead})


def test_two_workers_never_fight_over_a_free_address(engine, sandbox) -> None:
    """Two processes of one run (workers) place twins without addresses at the same time: the
    one that looked first but started second moves on to the next free address."""
    worker = engine.attach_sandbox(sandbox.run_id)
    look = worker._refresh_addresses

    def racing_look() -> None:  # the other worker starts a twin right after this one looked
        look()
        worker._refresh_addresses = look
        sandbox.start(run_spec(*SLEEP), BASE, "cache")

    worker._refresh_addresses = racing_look
    try:
        queue = worker.start(run_spec(*SLEEP), BASE, "queue")
        cache = sandbox.twins[0]
        assert cache.name == "cache" and queue.address != cache.address
        assert queue.is_running() and cache.is_running()
        with pytest.raises(TwinError, match=rf"address {cache.address} is already taken"):
            worker.start(run_spec(*SLEEP, address=cache.address), BASE, "pinned")
    finally:
        worker.close()
