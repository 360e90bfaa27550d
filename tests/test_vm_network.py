"""A VM twin on a sandbox network: QEMU in a container bridged to the network at the VM's
production address. The VM reads a PLC twin over Modbus and serves the value; a container
on the sandbox reaches it at its address; it cannot reach the host or another network.

Traffic goes only to containers on the networks this test creates, and to this machine's
own addresses (the host listener the VM must NOT reach). Networks are created like the
new sandbox: internal, and the host holds no address on them (inhibit_ipv4).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from vmfixtures import PLC_ADDRESS, PROD_SUBNET, SUBNET, VM_ADDRESS

from restoredrill.twins.qemu import Disk, QemuVM
from restoredrill.twins.sources.disk_image import create_overlay
from restoredrill.twins.vm_container import ContainerLauncher, ensure_runner_image
from restoredrill.twins.vm_spec import VMSpec

pytestmark = [pytest.mark.vm, pytest.mark.docker]

IMAGE = "restoredrill/base:bookworm"
TEST = {"restoredrill.test": "g-vm"}
PLC = r"""
import socket, struct
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 502)); s.listen(8)
while True:
    c, _ = s.accept()
    with c:
        while (q := c.recv(12)) and len(q) == 12:
            tid, _, _, unit, fc, addr, n = struct.unpack(">HHHBBHH", q)
            c.sendall(struct.pack(">HHHBBBH", tid, 0, 5, unit, fc, 2, 4242 + addr))
"""
SSH_BANNER = r"""
import socket, sys
with socket.create_connection((sys.argv[1], 22), timeout=10) as s:
    print(s.recv(256).split(b"\r\n")[0].decode())
"""
PROBE = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close(); out[target] = "open"
    except OSError as exc:
        out[target] = type(exc).__name__
print(json.dumps(out))
"""


def network(client, name: str, subnet: str, run: str):
    from docker.types import IPAMConfig, IPAMPool

    return client.networks.create(
        name,
        driver="bridge",
        internal=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
        labels={**TEST, "restoredrill.run": run},
    )


def container(client, net, address: str, command: list[str], run: str, name: str):
    c = client.containers.create(
        IMAGE,
        command,
        name=f"g-vm-{name}-{run}",
        labels={**TEST, "restoredrill.run": run},
        network=net.name,
    )
    net.disconnect(c)
    net.connect(c, ipv4_address=address)
    c.start()
    return c


def docker0_address() -> str:
    """This host's own address on Docker's default bridge (a host address a twin might try)."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "docker0"], capture_output=True)
    return json.loads(out.stdout or "[]")[0]["addr_info"][0]["local"]


class HostListener:
    """A listener on every address of this host; counts who connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[str] = []
        self.done = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(peer[0])
            conn.close()

    def close(self) -> None:
        self.done = True
        self.thread.join(2)
        self.sock.close()


def test_vm_takes_its_production_address_reads_the_plc_and_is_isolated(
    docker_client, base_image, vm_raw, tmp_path
):
    client = docker_client
    run = f"gvm{uuid.uuid4().hex[:6]}"
    made: list = []
    listener = HostListener()
    folder = tmp_path / "scratch"
    try:
        sandbox = network(client, f"g-vm-sandbox-{run}", SUBNET, run)
        made.append(sandbox)
        prod = network(client, f"g-vm-prod-{run}", PROD_SUBNET, run)
        made.append(prod)
        made.append(container(client, sandbox, PLC_ADDRESS, ["python3", "-c", PLC], run, "plc"))
        prod_ip = PROD_SUBNET.replace(".0/24", ".10")
        prod_cmd = ["python3", "-m", "http.server", "8000"]
        made.append(container(client, prod, prod_ip, prod_cmd, run, "prod"))

        overlay = create_overlay(vm_raw, "raw", folder / "disk0.qcow2")
        launcher = ContainerLauncher(
            client,
            sandbox.name,
            VM_ADDRESS,
            run,
            ensure_runner_image(client),
            read_only=[vm_raw],
            memory=384 << 20,
            labels=TEST,
        )
        vm = QemuVM(
            "netvm",
            VMSpec(memory="384m", cpus=1, accel="tcg", mac="52:54:00:20:07:30"),
            [Disk(str(overlay))],
            folder,
            launcher=launcher,
            address=VM_ADDRESS,
        )
        with vm.start():
            vm.wait_console("testvm login:", 420)
            info = client.api.inspect_container(launcher.container_id)
            assert info["HostConfig"]["CapAdd"] == ["NET_ADMIN", "SETPCAP"]
            mounts = {m["Destination"]: m["RW"] for m in info["Mounts"]}
            assert mounts == {"/vm": True, str(vm_raw): False}  # the backup: read-only
            nets = info["NetworkSettings"]["Networks"]
            assert nets[sandbox.name]["IPAddress"] == VM_ADDRESS
            link = vm.agent_exec("cat /sys/class/net/eth0/address").stdout.strip()
            assert link == "52:54:00:20:07:30"
            qemu_caps = client.api.exec_start(
                client.api.exec_create(
                    launcher.container_id,
                    ["sh", "-c", "grep CapEff /proc/$(cat /vm/qemu.pid)/status"],
                )
            )
            assert qemu_caps.decode().split() == ["CapEff:", "0000000000000000"]

            # a peer container on the sandbox reaches the VM's service at its production
            # address; the service read the PLC twin over Modbus
            fetch = (
                "import urllib.request, time\n"
                "for _ in range(60):\n"
                "    try:\n"
                f"        print(urllib.request.urlopen('http://{VM_ADDRESS}:8080/value', timeout=3).read().decode()); break\n"
                "    except OSError: time.sleep(1)\n"
            )
            out = client.containers.run(
                IMAGE,
                ["python3", "-c", fetch],
                network=sandbox.name,
                labels={**TEST, "restoredrill.run": run},
                remove=True,
            )
            assert json.loads(out) == {"plc": PLC_ADDRESS, "register": 0, "value": 4242}
            banner = client.containers.run(
                IMAGE,
                ["python3", "-c", SSH_BANNER, VM_ADDRESS],
                network=sandbox.name,
                labels={**TEST, "restoredrill.run": run},
                remove=True,
            )
            assert banner.decode().startswith("SSH-2.0-dropbear"), banner

            # the VM's own root tries every way out: the sandbox gateway, the host's docker0
            # address, the stand-in production network; only the PLC twin answers
            bridge = docker0_address()
            gateway = SUBNET.replace(".0/24", ".1")
            vm.agent_exec(f"ip route add default via {gateway}")
            targets = [
                f"{PLC_ADDRESS}:502",
                f"{gateway}:{listener.port}",
                f"{bridge}:{listener.port}",
                f"{prod_ip}:8000",
            ]
            seen = json.loads(vm.agent_exec(["python3", "-c", PROBE, *targets], 60).stdout)
            assert seen.pop(f"{PLC_ADDRESS}:502") == "open"
            assert "open" not in seen.values(), seen
            # even with a route straight onto the bridge (a guest is root of its own L2)
            vm.agent_exec("ip route del default; ip route add default dev eth0")
            seen = json.loads(vm.agent_exec(["python3", "-c", PROBE, *targets[1:]], 60).stdout)
            assert "open" not in seen.values(), seen
            assert listener.accepted == []
        assert not client.api.containers(all=True, filters={"id": launcher.container_id})
        assert not folder.exists()
    finally:
        listener.close()
        for obj in reversed(made):
            if hasattr(obj, "remove") and not hasattr(obj, "connect"):
                obj.remove(force=True)
        for c in client.api.containers(all=True, filters={"label": f"restoredrill.run={run}"}):
            client.api.remove_container(c["Id"], force=True)
        for obj in made:
            if hasattr(obj, "connect"):
                obj.remove()


OWNER = """
import sys, time, docker
from pathlib import Path
from restoredrill.twins.qemu import Disk, QemuVM
from restoredrill.twins.vm_container import ContainerLauncher
from restoredrill.twins.vm_spec import VMSpec
folder, raw, net, run, image = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
launcher = ContainerLauncher(docker.from_env(), net, "10.234.7.30", run, image,
                             read_only=[raw], memory=256 << 20, labels={"restoredrill.test": "g-vm"})
vm = QemuVM("ownedvm", VMSpec(memory="256m", cpus=1, accel="tcg"),
            [Disk(str(folder / "disk0.qcow2"))], folder, launcher=launcher)
vm.start()
print(launcher.container_id, flush=True)
time.sleep(600)
"""


def test_vm_container_stops_when_its_owner_is_killed_and_is_reaped(
    docker_client, base_image, vm_raw, tmp_path
):
    from restoredrill.twins.docker import reap_stale

    client = docker_client
    run = f"gvm{uuid.uuid4().hex[:6]}"
    sandbox = network(client, f"g-vm-owner-{run}", "10.234.7.0/24", run)
    folder = tmp_path / "scratch"
    create_overlay(vm_raw, "raw", folder / "disk0.qcow2")
    args = [str(folder), str(vm_raw), sandbox.name, run, ensure_runner_image(client)]
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        container_id = proc.stdout.readline().strip()
        assert container_id, proc.stderr.read()
        assert client.api.inspect_container(container_id)["State"]["Running"]
        assert any(b"ownedvm," in c for c in qemu_cmdlines())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 30
        while client.api.inspect_container(container_id)["State"]["Running"]:
            assert time.monotonic() < deadline, "the VM container outlived its owner"
            time.sleep(0.2)
        assert not any(b"ownedvm," in c for c in qemu_cmdlines())
        assert list(folder.iterdir()) == []  # overlay, sockets and console log removed
        removed = reap_stale(client, runs=[run])
        assert any(r.startswith("container restoredrill-vm-ownedvm-") for r in removed), removed
        assert not client.api.containers(all=True, filters={"id": container_id})
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in client.api.containers(all=True, filters={"label": f"restoredrill.run={run}"}):
            client.api.remove_container(c["Id"], force=True)
        with contextlib.suppress(Exception):
            sandbox.remove()


def qemu_cmdlines() -> list[bytes]:
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            out.append(cmdline.read_bytes().replace(b"\0", b" "))
    return [c for c in out if c.startswith(b"qemu-system")]
