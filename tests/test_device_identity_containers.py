"""The PLC and SCADA twins in their emulator containers (as a run starts them, from the
offline-built image and the inventory's device specs) present the configured identity at
their production addresses, on an internal network this test creates (on a free subnet)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
from sites import host

from restoredrill.twins.devices import PlcDevice, ScadaDevice, device_command, device_files
from restoredrill.twins.emulator_image import ensure_emulator_image

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config/demo/plc"


def _wait(host: str, port: int, container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            container.reload()
            logs = container.logs().decode(errors="replace")
            assert container.status != "exited", logs
            assert time.monotonic() < deadline, f"{host}:{port} did not listen: {logs}"
            time.sleep(0.2)


def _exchange(plc_ip: str, pdu: bytes, unit: int = 1, timeout: float = 3) -> bytes | None:
    with socket.create_connection((plc_ip, 502), timeout=timeout) as s:
        s.sendall(struct.pack(">HHHB", 7, 0, len(pdu) + 1, unit) + pdu)
        try:
            head = s.recv(7)
        except TimeoutError:
            return None
        return s.recv(struct.unpack(">H", head[4:6])[0] - 1)


async def _build_info(url: str):
    from asyncua import Client, ua

    async with Client(url, timeout=10) as client:
        return await client.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo).read_value()


@pytest.fixture
def devices(docker_client, base_image, tmp_path, free_subnet):
    """The PLC and SCADA twins in their containers: yields (PLC address, SCADA address)."""
    from docker.types import IPAMConfig, IPAMPool

    subnet = free_subnet()
    plc_ip, scada_ip = host(subnet, 100), host(subnet, 101)

    image = ensure_emulator_image(docker_client, base_image)
    name = f"rd-j-fidelity-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(
        name,
        driver="bridge",
        internal=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
        labels={"restoredrill.test": "j-fidelity"},
    )
    plc = PlcDevice(name="line1-plc", address=plc_ip, map=DEMO / "line1.yaml")
    scada = ScadaDevice.model_validate(
        {
            "name": "line1-scada",
            "address": scada_ip,
            "nodes": DEMO / "line1-opcua.yaml",
            "plcs": ["line1-plc"],
            "identity": {"manufacturer_name": "Vendor AG", "product_name": "ScadaServer"},
        }
    )
    specs = {"line1-plc": plc, "line1-scada": scada}
    containers = []
    try:
        for spec in (plc, scada):
            folder = tmp_path / spec.name
            folder.mkdir()
            for inside, source in device_files(spec, specs).items():
                shutil.copy(source, folder / inside)
            api = docker_client.api
            endpoint = api.create_endpoint_config(ipv4_address=str(spec.address))
            created = api.create_container(
                image,
                command=device_command(spec, "/dev-config", specs),
                name=f"{name}-{spec.name}",
                labels={"restoredrill.test": "j-fidelity"},
                networking_config=api.create_networking_config({name: endpoint}),
                host_config=api.create_host_config(
                    binds={str(folder): {"bind": "/dev-config", "mode": "rw"}}, network_mode=name
                ),
            )
            container = docker_client.containers.get(created["Id"])
            containers.append(container)
            container.start()
            _wait(str(spec.address), spec.port, container)
        yield plc_ip, scada_ip
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()


def test_twins_in_their_containers_present_the_configured_identity(devices):
    plc_ip, scada_ip = devices
    rsp = _exchange(plc_ip, bytes([43, 14, 1, 0]))
    assert rsp is not None and b"Demo Controls GmbH" in rsp and b"DC-410" in rsp
    assert _exchange(plc_ip, bytes([17])) == bytes([17, 15, 1, 0xFF]) + b"DemoLogic 410"
    assert _exchange(plc_ip, struct.pack(">BHH", 3, 0, 11))[:2] == bytes([3, 22])  # 0-10, holes too
    assert _exchange(plc_ip, struct.pack(">BHH", 3, 0, 1), unit=9, timeout=1) is None
    info = asyncio.run(_build_info(f"opc.tcp://{scada_ip}:4840/"))
    assert (info.ManufacturerName, info.ProductName) == ("Vendor AG", "ScadaServer")
