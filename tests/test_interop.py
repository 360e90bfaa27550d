"""Interoperability with implementations that are not ours: pyModbusTCP, modbus-tk, FreeOpcUa."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from localservers import free_port

from restoredrill.checks import modbus, opcua
from restoredrill.checks.base import AddressTarget, SandboxGuard, Status
from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.scada import PlcLink, ScadaTwin

REPO = Path(__file__).resolve().parents[1]
DEMO_MAP = REPO / "config/demo/plc/line1.yaml"
TARGET = AddressTarget("peer", "127.0.0.1")


@pytest.fixture(scope="module")
def plc():
    twin = InThread(PlcTwin.from_file(DEMO_MAP, tick=0.02)).start("127.0.0.1", 0)
    yield twin
    twin.stop()


@pytest.fixture(scope="module")
def scada(plc, nodesets_dir):
    twin = ScadaTwin(
        [REPO / "config/demo/plc/line1-opcua.yaml", nodesets_dir / "Opc.Ua.Di.NodeSet2.xml"],
        plcs={"line1-plc": PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)},
        poll=0.02,
    )
    server = InThread(twin).start("127.0.0.1", 0)
    yield server
    server.stop()


def test_pymodbustcp_client_reads_and_writes_the_plc_twin(plc):
    from pyModbusTCP.client import ModbusClient

    c = ModbusClient(host="127.0.0.1", port=plc.twin.port, unit_id=1, timeout=3, auto_open=True)
    try:
        regs = c.read_input_registers(0, 2)
        level = struct.unpack(">f", struct.pack(">HH", *regs))[0]
        assert 40 <= level <= 60
        assert c.read_holding_registers(2, 1) == [1450]
        assert c.read_coils(0, 2) == [True, False]  # pump_running, pump_start_cmd
        assert c.write_single_register(2, 1200)
        assert plc.call(plc.twin.read_tag("pump_speed_sp")) == 1200
        assert not c.write_single_register(10, 0)  # read-only status word: refused
        assert c.last_except == 2
    finally:
        c.close()


def test_modbus_tk_client_reads_the_plc_twin(plc):
    import modbus_tk.defines as cst
    from modbus_tk import modbus_tcp

    master = modbus_tcp.TcpMaster(host="127.0.0.1", port=plc.twin.port, timeout_in_sec=3)
    try:
        (word,) = master.execute(1, cst.READ_HOLDING_REGISTERS, 10, 1)
        assert word == 0b0001  # status word: running (bit 0), no alarm (bit 3)
        (flow,) = master.execute(1, cst.READ_INPUT_REGISTERS, 2, 1)
        assert flow <= 500  # outlet_flow ramps 0..500 (a misread word would not)
        heartbeat = set()  # the discrete input toggles each second: both values come by
        deadline = time.monotonic() + 10
        while heartbeat != {0, 1} and time.monotonic() < deadline:
            heartbeat.add(master.execute(1, cst.READ_DISCRETE_INPUTS, 0, 1)[0])
            time.sleep(0.05)
        assert heartbeat == {0, 1}
    finally:
        master.close()


@pytest.fixture
def modbus_tk_server():
    import modbus_tk.defines as cst
    from modbus_tk import modbus_tcp

    port = free_port()
    server = modbus_tcp.TcpServer(port=port, address="127.0.0.1")
    server.start()
    slave = server.add_slave(3)
    slave.add_block("hr", cst.HOLDING_REGISTERS, 100, 10)
    slave.set_values("hr", 100, [0x4148, 0x0000, 7, 65535])  # 12.5 as float32, 7, -1 as int16
    slave.add_block("co", cst.COILS, 0, 8)
    slave.set_values("co", 0, [1, 0, 1])
    deadline = time.monotonic() + 10  # start() binds in its own thread
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "modbus-tk server did not listen"
            time.sleep(0.02)
    yield port
    server.stop()


def test_modbus_check_against_a_modbus_tk_server(modbus_tk_server):
    spec = modbus.Spec.model_validate(
        {
            "kind": "modbus",
            "port": modbus_tk_server,
            "unit": 3,
            "values": [
                {"table": "holding", "address": 100, "type": "float32", "equals": 12.5},
                {"table": "holding", "address": 102, "equals": 7},
                {"table": "holding", "address": 103, "type": "int16", "equals": -1},
                {"table": "coil", "address": 0, "count": 3, "equals": [True, False, True]},
                {"table": "holding", "address": 104, "write": 321},
                {"table": "holding", "address": 102, "equals": 8},
            ],
        }
    )
    results = modbus.run(spec, TARGET, SandboxGuard())
    assert [r.status for r in results] == [Status.PASS] * 5 + [Status.FAIL], results
    assert results[-1].observed == 7


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"the FreeOpcUa {name} tool is missing (pip install opcua)")
    return found


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_freeopcua_uaread_reads_a_bound_variable(scada, plc):
    ns = scada.call(scada.twin.server.get_namespace_index("urn:restoredrill:demo:line1"))
    before = plc.call(plc.twin.read_tag("pump_starts"))
    out = _run(_tool("uaread"), "-u", scada.twin.endpoint, "-n", f"ns={ns};s=Line1.PumpStarts")
    after = plc.call(plc.twin.read_tag("pump_starts"))
    # the PLC's counter as the SCADA twin last polled it (one count behind at most)
    assert before - 1 <= int(out.strip()) <= after
    out = _run(_tool("uaread"), "-u", scada.twin.endpoint, "-n", f"ns={ns};s=Line1.TankLevel")
    assert 40 <= float(out.strip()) <= 60


def test_freeopcua_uals_browses_yaml_and_nodeset_nodes(scada):
    out = _run(_tool("uals"), "-u", scada.twin.endpoint, "-n", "i=85", "-l", "0")
    assert "Line1" in out and "DeviceSet" in out


def test_freeopcua_client_writes_through_to_the_plc(scada, plc):
    from opcua import Client, ua

    client = Client(scada.twin.endpoint, timeout=5)
    client.connect()
    try:
        ns = client.get_namespace_index("urn:restoredrill:demo:line1")
        node = client.get_node(f"ns={ns};s=Line1.LevelSetpoint")
        node.set_value(ua.DataValue(ua.Variant(33.0, ua.VariantType.Double)))
    finally:
        client.disconnect()
    deadline = time.monotonic() + 5
    while plc.call(plc.twin.read_tag("level_setpoint")) != 33.0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert plc.call(plc.twin.read_tag("level_setpoint")) == 33.0


def test_opcua_check_against_a_freeopcua_server():
    from opcua import Server

    server = Server()
    server.set_endpoint("opc.tcp://127.0.0.1:0/peer/")
    idx = server.register_namespace("urn:peer")
    obj = server.get_objects_node().add_object(idx, "Boiler")
    obj.add_variable(idx, "Pressure", 4.2)
    server.start()
    try:
        port = server.bserver._server.sockets[0].getsockname()[1]
        spec = opcua.Spec.model_validate(
            {
                "kind": "opcua",
                "port": port,
                "path": "peer/",
                "values": [{"node": "Objects/Boiler/Pressure", "min": 4, "max": 5}],
                "count": [{"folder": "Objects/Boiler", "equals": 1}],
            }
        )
        results = opcua.run(spec, TARGET, SandboxGuard())
        assert all(r.passed for r in results), results
    finally:
        server.stop()
