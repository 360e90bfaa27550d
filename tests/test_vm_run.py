"""Whole-image twins through `restoredrill run`, as a user runs it (issue 10, done-when).

One site, run once by the `restoredrill run --json` command and shared by the tests of
this module: an emulated PLC; the test VM restored from a ``.vmdk`` at its production
address, with console and service readiness, then http, screenshot-OCR, SSH host,
testinfra-over-SSH, agent and hostile-probe checks; a container twin that reaches the VM
at that address; the same disk as a ``.vhdx`` with its kernel removed on a virtio bus
(``error`` with the console's last lines and the bus hint); and that broken copy again,
stopped by the watchdog while it waits in ``ready``. Then: runs killed with ``kill -9``
or interrupted with Ctrl-C while a VM is up leave nothing behind.

Traffic goes only to this machine's own addresses (listeners the VM must NOT reach), to
a stand-in production network the test creates, and inside the sandbox subnets of the
test's range (10.230.7.0/24; the test image's own configuration names 10.230.7.30).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from hostile import ATTEMPTS, PROD_LISTENER, host_addresses, host_listener
from vmfixtures import PLC_ADDRESS, SUBNET, VM_ADDRESS, qemu_pids, sha256

from restoredrill.twins import firewall, scratch, vm_image

pytestmark = [pytest.mark.vm, pytest.mark.docker]

IMAGE = "restoredrill/base:bookworm"
REPO = Path(__file__).resolve().parents[1]
PROD_SUBNET = "10.233.7.0/24"
PROD = "10.233.7.10"
PASSWORD_ENV = "RD_TEST_VM_ROOT_PASSWORD"
SPOOFED = "10.230.7.99"
"""An address of the sandbox the VM takes as well (no twin holds it)."""
VM_PROBE = (
    "import json, subprocess, sys\n"
    # a hostile guest is root of its own network: it adds every route it can think of
    "subprocess.run(['ip', 'route', 'add', 'default', 'via', sys.argv[2]])\n"
    "subprocess.run(['ip', 'route', 'add', '0.0.0.0/1', 'dev', 'eth0'])\n"
    "subprocess.run(['ip', 'route', 'add', '128.0.0.0/1', 'dev', 'eth0'])\n"
    "out = subprocess.run([sys.executable, '-c', sys.argv[3], sys.argv[1]],\n"
    "                     capture_output=True, text=True).stdout\n"
    "tally = {}\n"
    # and it takes another address of the sandbox: nothing it sends from there gets out
    "import socket\n"
    "subprocess.run(['ip', 'addr', 'add', sys.argv[4] + '/24', 'dev', 'eth0'])\n"
    "s = socket.socket(); s.settimeout(3); s.bind((sys.argv[4], 0))\n"
    "try:\n"
    "    s.connect((sys.argv[5], 502)); tally['spoofed'] = (1, 1)\n"
    "except OSError:\n"
    "    tally['spoofed'] = (1, 0)\n"
    "for category, host, port, outcome in json.loads(out):\n"
    "    tried, got = tally.get(category, (0, 0))\n"
    "    tally[category] = (tried + 1, got + (outcome == 'connected'))\n"
    "print(json.dumps(tally, sort_keys=True))\n"
)
PEER = """\
import json, time, urllib.request
for _ in range(120):
    try:
        body = urllib.request.urlopen("http://{vm}:8080/value", timeout=3).read().decode()
        break
    except OSError:
        time.sleep(1)
else:
    body = "unreachable"
open("/tmp/reached", "w").write(body)
print("peer: reached", body, flush=True)
time.sleep(3600)
"""
TESTINFRA_FILE = """\
def test_address_is_configured(host):
    assert host.file("/etc/restoredrill/network.conf").contains("{vm}/24")


def test_hostname(host):
    assert host.run("hostname").stdout.strip() == "testvm"
"""


def vm_system(name: str, backup: dict, address: str, **more) -> dict:
    return {
        "name": name,
        "backup": {"kind": "disk_image", **backup},
        "run": {"address": address, "vm": {"memory": "320m", "cpus": 1, **more.pop("vm", {})}},
        **more,
    }


def make_backups(folder: Path, raw: Path, restic_bin: str) -> None:
    """The good disk as .vmdk, the kernel-less copy as .vhdx, a restic tree for the peer."""
    (folder / "good").mkdir(parents=True)
    (folder / "broken").mkdir()
    subprocess.run(
        ["qemu-img", "convert", "-O", "vmdk", str(raw), str(folder / "good" / "hmi-20261124.vmdk")],
        check=True,
        timeout=300,
    )
    cut = vm_image.break_boot(raw, folder / "cut.raw")
    subprocess.run(
        ["qemu-img", "convert", "-O", "vhdx", str(cut), str(folder / "broken" / "hmi.vhdx")],
        check=True,
        timeout=300,
    )
    cut.unlink()
    tree = folder / "peer-tree"
    tree.mkdir()
    (tree / "peer.py").write_text(PEER.format(vm=VM_ADDRESS))
    password = folder / "restic.pass"
    password.write_text("g2-vmwire\n")
    env = {**os.environ, "RESTIC_PASSWORD_FILE": str(password)}
    repo = folder / "peer-restic"
    subprocess.run([restic_bin, "init", "--repo", str(repo)], env=env, check=True, capture_output=True)
    subprocess.run(
        [restic_bin, "--repo", str(repo), "backup", "."],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
    )


def run_cli(site: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", PASSWORD_ENV: "restoredrill"}
    return subprocess.Popen(
        [sys.executable, "-m", "restoredrill.flows.cli", "run", str(site), "--json"],
        env=env,
        start_new_session=True,  # its own process group, as a shell starts a command
        preexec_fn=_ctrl_c_default,
        **popen,
    )


def _ctrl_c_default() -> None:
    """Ctrl-C as in a terminal, even when these tests run in a background job (which
    starts every command with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def production(docker_client, base_image):
    """A stand-in production network the VM must not reach, with a listener on it."""
    from docker.types import IPAMConfig, IPAMPool

    tag = uuid.uuid4().hex[:6]
    labels = {"restoredrill.test": f"g2-vmwire-{tag}"}
    net = docker_client.networks.create(
        f"g2-vmwire-prod-{tag}",
        driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=PROD_SUBNET)]),
        labels=labels,
    )
    box = docker_client.containers.create(
        IMAGE,
        ["python3", "-c", PROD_LISTENER, "8000"],
        name=f"g2-vmwire-prod-{tag}",
        network=net.name,
        networking_config={net.name: docker_client.api.create_endpoint_config(ipv4_address=PROD)},
        labels=labels,
    )
    try:
        box.start()
        deadline = time.monotonic() + 30
        while b"listening" not in box.logs():
            assert time.monotonic() < deadline, "the production stand-in never listened"
            time.sleep(0.2)
        yield box
    finally:
        box.remove(force=True)
        net.remove()


@pytest.fixture(scope="module")
def site_dir(vm_raw, restic_bin, base_image) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="restoredrill-g2-vmwire-"))
    try:
        make_backups(folder / "backups", vm_raw, restic_bin)
        shutil.copy(REPO / "config" / "demo" / "plc" / "line1.yaml", folder / "plc.yaml")
        (folder / "test_vm_host.py").write_text(TESTINFRA_FILE.format(vm=VM_ADDRESS))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def vm_run(site_dir: Path, production, docker_client) -> dict:
    """The site, run once through the CLI; the record, and where things were."""
    gateway = SUBNET.replace(".0/24", ".1")
    with host_listener() as listener:
        targets = [["host", addr, listener.port] for _, addr in host_addresses()]
        targets += [["gateway", gateway, listener.port], ["outside", PROD, 8000]]
        targets += [["sandbox", PLC_ADDRESS, 502]]  # the control: this one must connect
        ssh = {"user": "root", "password_env": PASSWORD_ENV}
        site = {
            "site": "g2-vmwire",
            "sandbox": {"subnets": [SUBNET], "concurrency": 2},
            "devices": [
                {"kind": "plc", "name": "plc", "address": PLC_ADDRESS, "map": "plc.yaml"}
            ],
            "systems": [
                vm_system(
                    "hmi-vmdk",
                    {"directory": "backups/good", "pattern": "hmi-*.vmdk", "format": "vmdk"},
                    VM_ADDRESS,
                    vm={"mac": "52:54:00:20:07:30", "ssh": ssh},
                    devices=["plc"],
                    ready=[
                        {"kind": "console", "pattern": "testvm login:", "timeout": "7m"},
                        {"kind": "http", "port": 8080, "path": "/health", "timeout": "90s"},
                    ],
                    checks=[
                        {"kind": "http", "port": 8080, "path": "/value",
                         "json": {"plc": PLC_ADDRESS, "register": 0}},
                        {"kind": "screenshot", "text": ["RESTOREDRILL TEST VM"]},
                        {"kind": "host", "command": "cat /etc/hostname", "stdout_contains": "testvm"},
                        {"kind": "testinfra", "file": "test_vm_host.py"},
                        {"kind": "agent", "command": "ip -4 addr show", "contains": f"{VM_ADDRESS}/24"},
                        {"kind": "agent", "name": "hostile probes", "timeout": 120,
                         "command": ["python3", "-c", VM_PROBE, json.dumps(targets), gateway,
                                     ATTEMPTS, SPOOFED, PLC_ADDRESS]},
                        {"kind": "tcp", "port": 22},
                    ],  # fmt: skip
                    rto="10m",
                ),
                vm_system(
                    "hmi-vhdx",
                    {"path": "backups/broken/hmi.vhdx"},
                    SUBNET.replace(".0/24", ".31"),
                    vm={"disk_bus": "virtio", "memory": "256m"},
                    ready={"kind": "console", "pattern": "login:", "timeout": "20s"},
                    rto="5m",
                ),
                vm_system(
                    "hmi-hung",
                    {"path": "backups/broken/hmi.vhdx"},
                    SUBNET.replace(".0/24", ".32"),
                    vm={"memory": "256m"},
                    ready={"kind": "console", "pattern": "login:", "timeout": "10m"},
                    rto="15s",  # the watchdog stops it at 3 x RTO, in step ready
                ),
                {
                    "name": "peer",
                    "depends_on": ["hmi-vmdk"],
                    "backup": {"kind": "restic", "repository": "backups/peer-restic",
                               "password_file": "backups/restic.pass", "restore": "data"},
                    "run": {"image": IMAGE, "data_path": "/opt/peer",
                            "command": ["python3", "/opt/peer/peer.py"],
                            "address": SUBNET.replace(".0/24", ".40")},
                    "ready": {"kind": "log", "contains": "peer: reached", "timeout": "3m"},
                    "checks": [{"kind": "host", "command": "cat /tmp/reached",
                                "stdout_contains": PLC_ADDRESS}],
                    "rto": "5m",
                },  # fmt: skip
            ],
        }
        path = site_dir / "site.yaml"
        path.write_text(yaml.safe_dump(site, sort_keys=False))
        before = set(qemu_pids())
        proc = run_cli(path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 1, err[-4000:]  # the broken copies fail the site
        record = json.loads(out)
        record["_seen_by_host"] = list(listener.seen)
    record["_prod_log"] = production.logs().decode()
    mine = [f"-name {s['name']}," for s in site["systems"]]  # other VMs may run meanwhile
    record["_new_qemus"] = {
        p: c for p, c in qemu_pids().items() if p not in before and any(m in c for m in mine)
    }
    return record


def systems(record: dict) -> dict[str, dict]:
    return {s["system"]: s for s in record["systems"]}


def checks(system: dict) -> dict[str, dict]:
    return {c["name"]: c for c in system["checks"]}


def test_vmdk_boots_at_its_production_address_and_passes_every_kind_of_check(vm_run) -> None:
    vm = systems(vm_run)["hmi-vmdk"]
    assert vm["verdict"] == "pass", (vm["reason"], [c for c in vm["checks"] if c["status"] != "pass"])
    assert 0 < vm["recovery_time_s"] < vm["rto_s"]
    kinds = {c["kind"] for c in vm["checks"]}
    assert kinds == {"http", "screenshot", "host", "testinfra", "agent", "tcp"}
    reads = [c for c in vm["checks"] if c["kind"] == "http" and "json plc" in c["name"]]
    assert reads and reads[0]["observed"] == PLC_ADDRESS  # the VM read the PLC twin
    shot = next(c for c in vm["checks"] if c["kind"] == "screenshot")
    assert shot["observed"]["missing"] == [] and shot["observed"]["screen"] == "shows content"
    testinfra = [c for c in vm["checks"] if c["kind"] == "testinfra"]
    assert len(testinfra) == 2 and all(c["status"] == "pass" for c in testinfra)
    assert vm["backup"]["source"] == "disk_image" and vm["backup"]["backup_id"] == "hmi-20261124.vmdk"


def test_vm_is_reached_by_a_container_twin_and_reaches_nothing_outside(vm_run) -> None:
    """The VM's root adds routes and takes another address: it reaches the PLC twin of
    its sandbox from its own address and nothing else (host, gateway, production)."""
    peer = systems(vm_run)["peer"]
    assert peer["verdict"] == "pass", peer["reason"]
    probe = checks(systems(vm_run)["hmi-vmdk"])["hostile probes"]
    tally = json.loads(probe["observed"]["stdout"])
    assert tally.pop("sandbox") == [1, 1]  # the PLC twin answers: the probe works
    assert tally["host"][0] > 0 and tally["gateway"][0] == 1 and tally["outside"][0] == 1
    assert tally["spoofed"] == [1, 0]  # from an address not its own: dropped at its tap
    assert all(got == 0 for _, got in tally.values()), tally
    assert vm_run["_seen_by_host"] == []
    assert "accepted" not in vm_run["_prod_log"]


def test_evidence_names_the_accelerator_disk_formats_and_keeps_console_and_screenshot(
    vm_run, site_dir
) -> None:
    vm = systems(vm_run)["hmi-vmdk"]
    platform = vm["platform"]
    assert platform["accel"] in ("tcg", "kvm") and platform["emulator"] == "qemu"
    assert (platform["firmware"], platform["machine"], platform["disk_bus"]) == ("bios", "q35", "sata")
    assert platform["disks"] == [{"file": "hmi-20261124.vmdk", "format": "vmdk"}]
    if platform["accel"] == "tcg":
        assert platform["rto_note"] == "TCG: not the plant's RTO"
    console = Path(platform["console"]["path"])
    assert console.is_relative_to(site_dir / ".restoredrill" / "artifacts" / vm_run["run_id"])
    assert sha256(console) == platform["console"]["sha256"]
    assert "testvm login:" in console.read_text()
    shot = next(c for c in vm["checks"] if c["kind"] == "screenshot")["observed"]
    assert Path(shot["screenshot"]).parent == console.parent
    assert sha256(Path(shot["screenshot"])) == shot["sha256"]
    assert systems(vm_run)["peer"]["platform"] is None  # a container twin


def test_broken_vhdx_is_an_error_with_the_console_tail_and_a_bus_hint(vm_run) -> None:
    broken = systems(vm_run)["hmi-vhdx"]
    assert broken["verdict"] == "error"
    assert broken["reason"].startswith("ready: hmi-vhdx not ready after 20s")
    assert "Loading /vmlinuz failed" in broken["reason"]  # the console's last lines
    assert "try vm.disk_bus: sata or ide" in broken["reason"]
    assert broken["platform"]["disks"] == [{"file": "hmi.vhdx", "format": "vhdx"}]


def test_watchdog_stops_a_vm_that_never_becomes_ready(vm_run) -> None:
    hung = systems(vm_run)["hmi-hung"]
    assert hung["verdict"] == "rto_exceeded"
    assert "stopped by the watchdog" in hung["reason"] and hung["reason"].endswith("in step ready")
    assert [s["name"] for s in hung["steps"]][-2:] == ["ready", "teardown"]
    assert "Loading /vmlinuz failed" in Path(hung["platform"]["console"]["path"]).read_text()


def test_nothing_of_the_run_is_left(vm_run, docker_client) -> None:
    run_id = vm_run["run_id"]
    assert leftovers(docker_client, run_id) == []
    assert vm_run["_new_qemus"] == {}  # every QEMU of the run ended with it


# --- the run dies while a VM is up --------------------------------------------------------


def leftovers(client, run_id: str) -> list[str]:
    """Everything of ``run_id``: labelled Docker objects, firewall rules, scratch folders,
    QEMU processes (whose command line names the run's scratch folder)."""
    api = client.api
    f = {"label": f"restoredrill.run={run_id}"}
    found = [f"container {c['Names'][0]}" for c in api.containers(all=True, filters=f)]
    found += [f"network {n['Name']}" for n in api.networks(filters=f)]
    found += [f"firewall {r.tool} {' '.join(r.args)}" for r in firewall.run_rules(run_id)]
    found += [f"scratch {p}" for p in scratch.folders(run_id)]
    found += [f"qemu {pid}" for pid, cmd in qemu_pids().items() if run_id in cmd]
    return found


def qemu_of(client, name: str) -> list[int]:
    """QEMU processes running in the container of VM twin ``name``."""
    found = client.api.containers(filters={"label": f"restoredrill.system={name}"})
    if not found:
        return []
    top = client.api.top(found[0]["Id"], ps_args="-eo pid,args")
    return [int(p[0]) for p in top.get("Processes") or [] if "qemu-system" in p[1]]


@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_nothing_left_when_the_run_dies_or_is_interrupted_with_a_vm_up(
    how, site_dir, docker_client
) -> None:
    name = f"victim-{uuid.uuid4().hex[:6]}"
    site = {
        "site": "g2-vmwire-victim",
        "sandbox": {"subnets": [SUBNET.replace("10.230.", "10.232.")]},
        "systems": [
            vm_system(
                name,
                {"path": "backups/good/hmi-20261124.vmdk"},
                "10.232.7.30",
                ready={"kind": "console", "pattern": "never shown", "timeout": "20m"},
                rto="30m",
            )
        ],
    }
    path = site_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    proc = run_cli(path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_id = None
    try:
        deadline = time.monotonic() + 300
        while not (qemus := qemu_of(docker_client, name)):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the VM never started"
            time.sleep(0.5)
        found = docker_client.api.containers(filters={"label": f"restoredrill.system={name}"})
        run_id = found[0]["Labels"]["restoredrill.run"]
        assert qemus and scratch.folders(run_id)
        if how == "kill -9":
            proc.send_signal(signal.SIGKILL)  # the run's guardian cleans up
            proc.wait(30)
        else:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the shell: the whole group
            assert proc.wait(120) == 130, proc.stderr.read()[-3000:]
        deadline = time.monotonic() + 90
        while left := leftovers(docker_client, run_id):
            assert time.monotonic() < deadline, f"left after {how}: {left}"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if run_id is None:
            for c in docker_client.api.containers(
                all=True, filters={"label": f"restoredrill.system={name}"}
            ):
                docker_client.api.remove_container(c["Id"], force=True)
