"""The PLC twin passes as the device for clients it does not control: nmap's modbus-discover,
mbpoll (libmodbus), pyModbusTCP, modbus-tk, pymodbus and raw Modbus TCP frames.

Identity (FC 43/14, FC 17), unit ids, memory areas, request limits, response timing.
Everything listens on 127.0.0.1; nmap needs port 502 there (root may bind it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import missing
from pymodbus.client import ModbusTcpClient

from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.registers import RegisterMapError, load_register_map

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config/demo/plc/line1.yaml"
CLI = Path(sys.executable).parent / "restoredrill"


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"the {name} command (apt-get install {name})")
    return path  # type: ignore[return-value]


def exchange(port: int, unit: int, pdu: bytes, timeout: float = 2.0) -> bytes | None:
    """One raw Modbus TCP request; the response PDU, or None if the device stays silent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">HHHB", 0x1234, 0, len(pdu) + 1, unit) + pdu)
        try:
            head = s.recv(7)
        except TimeoutError:
            return None
        if not head:
            return b""  # the device closed the connection
        tid, pid, length, echoed = struct.unpack(">HHHB", head)
        assert (tid, pid, echoed) == (0x1234, 0, unit)
        body = b""
        while len(body) < length - 1:
            body += s.recv(length - 1 - len(body))
        return body


def write_map(tmp_path: Path, text: str, name: str = "plc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def demo_variant(tmp_path: Path, extra: str) -> Path:
    """The demo map with device-level keys added (a copy in tmp_path)."""
    text = DEMO.read_text().replace("\ntags:\n", f"\n{extra}\ntags:\n", 1)
    return write_map(tmp_path, text, "line1.yaml")


@pytest.fixture(scope="module")
def demo():
    twin = InThread(PlcTwin.from_file(DEMO, tick=0.05, seed=3)).start("127.0.0.1", 0)
    yield twin
    twin.stop()


# ---------------------------------------------------------------- port 502, as a user runs it


def serve_on_502(map_path: Path):
    """``restoredrill emulate plc MAP --bind 127.0.0.1:502``, waited for until it listens."""
    deadline = time.monotonic() + 60
    while True:  # another test may hold 127.0.0.1:502 for a moment
        proc = subprocess.Popen(
            [str(CLI), "emulate", "plc", str(map_path), "--bind", "127.0.0.1:502"],
            stderr=subprocess.PIPE,
            text=True,
        )
        line = proc.stderr.readline() if proc.stderr else ""
        if "listening on 127.0.0.1:502" in line:
            return proc
        proc.wait(timeout=10)
        assert "already in use" in line and time.monotonic() < deadline, line
        time.sleep(1)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def nmap_discover(aggressive: bool) -> str:
    argv = [tool("nmap"), "-Pn", "-n", "-p", "502", "--script", "modbus-discover"]
    if aggressive:
        argv += ["--script-args", "modbus-discover.aggressive=true"]
    proc = subprocess.run(argv + ["127.0.0.1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_nmap_modbus_discover_shows_the_configured_identity():
    tool("nmap")
    proc = serve_on_502(DEMO)
    try:
        out = nmap_discover(aggressive=False)
    finally:
        stop(proc)
    assert "sid 0x1:" in out, out
    assert "Slave ID data: \\x01\\xFFDemoLogic 410" in out, out
    assert "Device identification: Demo Controls GmbH DC-410 2.4.1" in out, out
    assert "Pymodbus" not in out and "restoredrill" not in out


def test_nmap_aggressive_finds_only_the_named_unit(tmp_path):
    # the demo map, closing connections to unknown unit ids so nmap's 245 other probes
    # end at once (with the default, no reply, each waits out nmap's 2 s timeout)
    tool("nmap")
    proc = serve_on_502(demo_variant(tmp_path, "unknown_units: close"))
    try:
        out = nmap_discover(aggressive=True)
    finally:
        stop(proc)
    assert "sid 0x1:" in out and "Demo Controls GmbH DC-410 2.4.1" in out, out
    assert out.count("sid 0x") == 1, out


def test_nmap_aggressive_against_a_gateway_sees_exception_0x0b(tmp_path):
    tool("nmap")
    proc = serve_on_502(demo_variant(tmp_path, "gateway: true\nunits: {2: {}}"))
    try:
        out = nmap_discover(aggressive=True)
    finally:
        stop(proc)
    assert "sid 0x1:" in out and "sid 0x2:" in out, out
    assert "sid 0x3:" in out and "GATEWAY TARGET DEVICE FAILED TO RESPOND" in out, out


# ---------------------------------------------------------------- block reads: mbpoll, peers


def test_mbpoll_reads_holding_0_to_10_across_unnamed_addresses(demo):
    proc = subprocess.run(
        [tool("mbpoll"), "-m", "tcp", "-p", str(demo.twin.port), "-a", "1", "-t", "4"]
        + ["-0", "-r", "0", "-c", "11", "-1", "-o", "3", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    values = {
        int(line.split("]")[0][1:]): int(line.split(":")[1])
        for line in proc.stdout.splitlines()
        if line.startswith("[")
    }
    assert sorted(values) == list(range(11))
    assert values[2] == 1450 and values[10] & 1 == 1  # named: setpoint, status word
    assert [values[a] for a in range(3, 10)] == [0] * 7  # unnamed, inside the area


def test_mbpoll_outside_the_area_is_illegal_data_address(demo):
    proc = subprocess.run(
        [tool("mbpoll"), "-m", "tcp", "-p", str(demo.twin.port), "-a", "1", "-t", "4"]
        + ["-0", "-r", "10", "-c", "10", "-1", "-o", "3", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "Illegal data address" in proc.stdout + proc.stderr


def test_pymodbustcp_writes_and_reads_unnamed_addresses(demo):
    from pyModbusTCP.client import ModbusClient

    c = ModbusClient(host="127.0.0.1", port=demo.twin.port, unit_id=1, timeout=3)
    try:
        assert c.write_multiple_registers(11, [11, 12, 13])
        assert c.read_holding_registers(0, 16)[11:14] == [11, 12, 13]
        assert c.read_holding_registers(16, 1) is None and c.last_except == 2
        assert c.write_single_coil(9, True) and c.read_coils(8, 3) == [False, True, False]
        assert c.read_input_registers(6, 10) == [0] * 10  # input 0-15: 6..15 unnamed
        assert not c.write_single_register(10, 0) and c.last_except == 2  # read-only tag
    finally:
        c.close()


def test_modbus_tk_sees_spec_exceptions(demo):
    import modbus_tk.defines as cst
    from modbus_tk import modbus_tcp
    from modbus_tk.exceptions import ModbusError

    master = modbus_tcp.TcpMaster(host="127.0.0.1", port=demo.twin.port, timeout_in_sec=3)
    try:
        assert master.execute(1, cst.READ_HOLDING_REGISTERS, 3, 7) == (0,) * 7
        with pytest.raises(ModbusError) as err:
            master.execute(1, cst.READ_DISCRETE_INPUTS, 8, 9)  # discrete 0-15: 8..16
        assert err.value.get_exception_code() == 2
    finally:
        master.close()


# ---------------------------------------------------------------- the spec, frame by frame


def test_requests_over_the_spec_get_illegal_data_value(demo):
    port = demo.twin.port
    assert exchange(port, 1, struct.pack(">BHH", 3, 0, 126)) == bytes([0x83, 3])
    assert exchange(port, 1, struct.pack(">BHH", 3, 0, 0)) == bytes([0x83, 3])
    assert exchange(port, 1, struct.pack(">BHH", 1, 0, 2001)) == bytes([0x81, 3])
    assert exchange(port, 1, struct.pack(">BHH", 5, 1, 0x1234)) == bytes([0x85, 3])
    too_many = struct.pack(">BHHB", 16, 0, 124, 246) + bytes(246)  # 124 > 123
    assert exchange(port, 1, too_many) == bytes([0x90, 3])
    bad_count = struct.pack(">BHHB", 16, 5, 2, 2) + bytes(2)  # byte count says 1 register
    assert exchange(port, 1, bad_count) == bytes([0x90, 3])
    assert exchange(port, 1, bytes([0x07])) == bytes([0x87, 1])  # serial-line only
    assert exchange(port, 1, bytes([0x41, 0, 0])) == bytes([0xC1, 1])


def test_mask_write_and_read_write_multiple(demo):
    port = demo.twin.port
    assert exchange(port, 1, struct.pack(">BHH", 6, 14, 0x12)) == struct.pack(">BHH", 6, 14, 0x12)
    mask = struct.pack(">BHHH", 22, 14, 0xF2, 0x25)  # the spec's example: 0x12 -> 0x17
    assert exchange(port, 1, mask) == mask
    rsp = exchange(port, 1, struct.pack(">BHHHHBH", 23, 14, 2, 15, 1, 2, 99))
    assert rsp == bytes([23, 4]) + struct.pack(">HH", 0x17, 99)


def test_read_device_identification_basic_regular_and_one_object(demo):
    port = demo.twin.port
    rsp = exchange(port, 1, bytes([43, 14, 2, 0]))
    assert rsp is not None and rsp[:7] == bytes([43, 14, 2, 0x82, 0, 0, 7])
    objects, at = {}, 7
    while at < len(rsp):
        oid, size = rsp[at], rsp[at + 1]
        objects[oid] = rsp[at + 2 : at + 2 + size].decode()
        at += 2 + size
    assert objects == {
        0: "Demo Controls GmbH",
        1: "DC-410",
        2: "2.4.1",
        3: "http://demo-controls.example",
        4: "DemoLogic 410",
        5: "DL410-ETH",
        6: "LINE1_TANK",
    }
    assert exchange(port, 1, bytes([43, 14, 4, 5])) == bytes([43, 14, 4, 0x82, 0, 0, 1, 5, 9]) + (
        b"DL410-ETH"
    )
    assert exchange(port, 1, bytes([43, 14, 4, 0x90])) == bytes([0xAB, 2])  # no such object
    assert exchange(port, 1, bytes([43, 14, 9, 0])) == bytes([0xAB, 3])  # no such read code
    assert exchange(port, 1, bytes([17])) == bytes([17, 15, 1, 0xFF]) + b"DemoLogic 410"


def test_identity_objects_that_do_not_fit_one_response_follow(tmp_path):
    names = {k: k[0].upper() * 120 for k in ("vendor", "product_code", "revision")}
    body = "".join(f"  {k}: {v}\n" for k, v in names.items())
    path = write_map(
        tmp_path,
        f"identity:\n{body}  extended: {{128: private}}\n"
        "tags:\n  - {name: a, table: holding, address: 0}\n",
    )
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        first = exchange(plc.twin.port, 1, bytes([43, 14, 3, 0]))
        assert first is not None and first[3:7] == bytes([0x83, 0xFF, 2, 2])  # more follow
        rest = exchange(plc.twin.port, 1, bytes([43, 14, 3, 2]))
        assert rest is not None and rest[4:7] == bytes([0, 0, 4])  # objects 2, 4, 5, 128
        assert rest[7:9] == bytes([2, 120]) and rest.endswith(bytes([128, 7]) + b"private")
        client = ModbusTcpClient("127.0.0.1", port=plc.twin.port, timeout=3, retries=0)
        client.connect()
        info = client.read_device_information(read_code=3, object_id=0, device_id=1)
        client.close()
        assert info.information[0] == b"V" * 120 and info.more_follows == 0xFF


def test_defaults_name_restoredrills_twin_honestly(tmp_path):
    path = write_map(tmp_path, "name: mixer\ntags:\n  - {name: a, table: holding, address: 0}\n")
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        rsp = exchange(plc.twin.port, 1, bytes([43, 14, 2, 0]))
        report = exchange(plc.twin.port, 1, bytes([17]))
    assert rsp is not None and b"restoredrill" in rsp and b"mixer" in rsp
    assert report == bytes([17, 23, 1, 0xFF]) + b"restoredrill PLC twin"


# ---------------------------------------------------------------- unit ids


UNITS_MAP = (
    "tags:\n  - {name: a, unit: 1, table: holding, address: 0, initial: 11}\n"
    "  - {name: b, unit: 2, table: holding, address: 0, initial: 22}\n"
)


REPORT = bytes([17, 23, 1, 0xFF]) + b"restoredrill PLC twin"


@pytest.mark.parametrize(
    ("settings", "read", "report"),
    [
        ("", None, None),  # a device: no reply
        ("gateway: true\n", bytes([0x83, 0x0B]), bytes([0x91, 0x0B])),
        ("unknown_units: close\n", b"", b""),
        ("unknown_units: answer\n", bytes([3, 2, 0, 11]), REPORT),  # as unit 1
    ],
)
def test_only_named_units_answer(tmp_path, settings, read, report):
    path = write_map(tmp_path, settings + UNITS_MAP)
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        port = plc.twin.port
        assert exchange(port, 1, struct.pack(">BHH", 3, 0, 1)) == bytes([3, 2, 0, 11])
        assert exchange(port, 2, struct.pack(">BHH", 3, 0, 1)) == bytes([3, 2, 0, 22])
        assert exchange(port, 9, struct.pack(">BHH", 3, 0, 1), timeout=1) == read
        assert exchange(port, 0, bytes([17]), timeout=1) == report


def test_a_silent_unit_leaves_the_connection_usable(demo):
    client = ModbusTcpClient("127.0.0.1", port=demo.twin.port, timeout=1, retries=0)
    assert client.connect()
    try:
        with pytest.raises(Exception, match="No response"):
            client.read_holding_registers(2, count=1, device_id=7)
        assert client.read_holding_registers(2, count=1, device_id=1).registers == [1450]
    finally:
        client.close()


# ---------------------------------------------------------------- areas, strict, limits, timing


def test_areas_given_per_table_and_unit(tmp_path):
    path = write_map(
        tmp_path,
        "areas: {holding: 0-99, coil: 0-7}\nunits: {2: {areas: {holding: 100-199}}}\n"
        "tags:\n  - {name: a, table: holding, address: 0}\n"
        "  - {name: b, unit: 2, table: holding, address: 150, initial: 5}\n",
    )
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        port = plc.twin.port
        assert exchange(port, 1, struct.pack(">BHH", 3, 0, 100)) == bytes([3, 200]) + bytes(200)
        assert exchange(port, 1, struct.pack(">BHH", 3, 99, 2)) == bytes([0x83, 2])
        assert exchange(port, 1, struct.pack(">BHH", 1, 0, 8)) == bytes([1, 1, 0])
        assert exchange(port, 1, struct.pack(">BHH", 1, 0, 9)) == bytes([0x81, 2])
        assert exchange(port, 1, struct.pack(">BHH", 4, 0, 1)) == bytes([0x84, 2])  # no area
        assert exchange(port, 2, struct.pack(">BHH", 3, 99, 1)) == bytes([0x83, 2])
        assert exchange(port, 2, struct.pack(">BHH", 3, 150, 1)) == bytes([3, 2, 0, 5])


def test_strict_keeps_only_named_addresses(tmp_path):
    path = write_map(
        tmp_path,
        "strict: true\ntags:\n  - {name: a, table: holding, address: 0, initial: 1}\n"
        "  - {name: b, table: holding, address: 2, initial: 3, behaviour: setpoint}\n",
    )
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        port = plc.twin.port
        assert exchange(port, 1, struct.pack(">BHH", 3, 0, 1)) == bytes([3, 2, 0, 1])
        assert exchange(port, 1, struct.pack(">BHH", 3, 0, 3)) == bytes([0x83, 2])  # 1 unnamed
        assert exchange(port, 1, struct.pack(">BHH", 6, 1, 7)) == bytes([0x86, 2])
        assert exchange(port, 1, struct.pack(">BHH", 6, 2, 7)) == struct.pack(">BHH", 6, 2, 7)


def test_a_device_with_smaller_request_limits(tmp_path):
    text = (
        "areas: {holding: 0-99}\nrequests: {read_registers: 64}\n"
        "tags:\n  - {name: a, table: holding, address: 0}\n"
    )
    path = write_map(tmp_path, text)
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        assert exchange(plc.twin.port, 1, struct.pack(">BHH", 3, 0, 64))[:2] == bytes([3, 128])
        assert exchange(plc.twin.port, 1, struct.pack(">BHH", 3, 0, 65)) == bytes([0x83, 3])
    path.write_text(text.replace("64}", "64, too_large: ignore}"))
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        assert exchange(plc.twin.port, 1, struct.pack(">BHH", 3, 0, 65), timeout=1) is None


def test_response_delay_keeps_request_order(tmp_path):
    path = write_map(
        tmp_path,
        "timing: {delay: 200ms, jitter: 100ms}\n"
        "tags:\n  - {name: a, table: holding, address: 0, initial: 7}\n",
    )
    with (
        InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc,
        socket.create_connection(("127.0.0.1", plc.twin.port), timeout=10) as s,
    ):
        started = time.monotonic()
        for tid in range(1, 6):  # pipelined: five requests before any answer
            s.sendall(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, 0, 1))
        data = b""
        while len(data) < 5 * 11:
            data += s.recv(1024)
        elapsed = time.monotonic() - started
    tids = [struct.unpack_from(">H", data, i * 11)[0] for i in range(5)]
    assert tids == [1, 2, 3, 4, 5]
    assert elapsed >= 0.2  # never sooner than the configured delay (a lower bound only)


def test_garbage_framing_closes_the_connection_and_the_twin_serves_on(demo):
    with socket.create_connection(("127.0.0.1", demo.twin.port), timeout=3) as s:
        s.sendall(b"\x00\x01\x00\x00\xff\xff" + os.urandom(64))
        assert s.recv(16) == b""
    assert exchange(demo.twin.port, 1, struct.pack(">BHH", 3, 2, 1)) == bytes([3, 2, 5, 170])


# ---------------------------------------------------------------- bad maps


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            "identity:\n  vendor: " + "V" * 245 + "\n",
            2,
            "identity.vendor",
            "245 bytes; a device identification object holds at most 244",
        ),
        (
            "identity:\n  extended: {7: x}\n",
            2,
            "identity.extended",
            "object id 7 is not a private id",
        ),
        (
            "identity:\n  additional_data: " + "x" * 250 + "\n",
            2,
            "identity.additional_data",
            "FC 17 response holds at most 249",
        ),
        (
            "areas:\n  holding: 0-10\n",
            2,
            "areas.holding",
            "0-10 leaves out tag 'f' (float32 at holding 10-11 of unit 1)",
        ),
        (
            "units:\n  1:\n    areas: {holding: 20-30}\n",
            3,
            "units.1.areas.holding",
            "20-30 leaves out tag 'f'",
        ),
        ("areas:\n  holding: 9999\n", 2, "areas.holding", "write 0-9999"),
        ("areas:\n  holding: 10-2\n", 2, "areas.holding", "below the first"),
        ("areas:\n  holdings: 0-9\n", 2, "areas.holdings", ""),
        ("timing: {delay: 1m}\n", 1, "timing.delay", "at most 10s"),
        ("requests: {read_registers: 200}\n", 1, "requests.read_registers", "125"),
        ("unknown_units: drop\n", 1, "unknown_units", "ignore"),
        ("identity: {server_id: zz}\n", 1, "identity.server_id", "not hex bytes"),
    ],
)
def test_bad_device_settings_name_file_line_and_field(tmp_path, text, line, field, words):
    path = write_map(
        tmp_path, text + "tags:\n  - {name: f, table: holding, address: 10, type: float32}\n"
    )
    with pytest.raises(RegisterMapError) as err:
        load_register_map(path)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert words in err.value.message
    assert str(err.value).startswith(f"{path}:{line}: {field}: ")
