"""PLC twin: register maps (YAML, CSV, validation errors) and a real Modbus TCP server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from restoredrill.twins.plc import InThread, PlcError, PlcTwin
from restoredrill.twins.registers import (
    RegisterMapError,
    decode,
    decode_many,
    encode,
    load_register_map,
    validate_register_map,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config/demo/plc/line1.yaml"


def wait_until(probe, timeout: float = 5.0, step: float = 0.02):
    """Poll ``probe`` until it returns a truthy value (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- register maps


def test_demo_maps_yaml_and_csv_agree():
    yaml_map = load_register_map(DEMO)
    csv_map = load_register_map(DEMO.with_suffix(".csv"))
    assert yaml_map.names() == csv_map.names()
    for a, b in zip(yaml_map.tags, csv_map.tags, strict=True):
        assert (a.table, a.address, a.dtype, a.bit, a.behaviour) == (
            b.table,
            b.address,
            b.dtype,
            b.bit,
            b.behaviour,
        )


MAP_HEAD = "name: t\ntags:\n"


@pytest.mark.parametrize(
    ("tags", "line", "field", "words"),
    [
        (  # overlapping addresses: float32 at 0 takes 0-1, uint16 at 1 clashes
            "  - {name: a, table: holding, address: 0, type: float32}\n"
            "  - {name: b, table: holding, address: 1, type: uint16}\n",
            4,
            "tags[1].address",
            "overlaps tag 'a'",
        ),
        (
            "  - name: a\n    table: holding\n    address: 0\n    type: float32\n    registers: 1\n",
            7,
            "tags[0].registers",
            "float32 takes 2 register(s), not 1",
        ),
        (
            "  - name: a\n    table: holding\n    address: 0\n    type: int16\n    initial: 40000\n",
            7,
            "tags[0].initial",
            "out of range for int16",
        ),
        (
            "  - name: a\n    table: holding\n    address: 0\n    colour: red\n",
            6,
            "tags[0].colour",
            "unknown key",
        ),
        (
            "  - name: a\n    table: coil\n    address: 0\n    type: uint16\n",
            6,
            "tags[0].type",
            "a coil holds one bit",
        ),
        (
            "  - {name: a, table: holding, address: 3, bit: 2}\n"
            "  - {name: b, table: holding, address: 3, bit: 2}\n",
            4,
            "tags[1].address",
            "bit 2",
        ),
        (
            "  - name: a\n    table: input\n    address: 0\n    behaviour: sine\n",
            3,
            "tags[0].min",
            "needs min and max",
        ),
    ],
)
def test_register_map_errors_name_file_line_and_field(tmp_path, tags, line, field, words):
    path = write(tmp_path, "plc.yaml", MAP_HEAD + tags)
    with pytest.raises(RegisterMapError) as err:
        load_register_map(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)
    assert str(err.value).startswith(f"{path}:{line}: {field}: ")
    assert words in str(err.value)


def test_bit_fields_share_a_register():
    regmap = validate_register_map(
        {
            "tags": [
                {"name": "a", "table": "holding", "address": 3, "bit": 0},
                {"name": "b", "table": "holding", "address": 3, "bit": 5},
            ]
        }
    )
    assert [t.dtype for t in regmap.tags] == ["bool", "bool"]


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "tags:\n  - name: a\n    table: [holding\n")
    with pytest.raises(RegisterMapError, match=rf"^{path}:\d+: malformed YAML"):
        load_register_map(path)


def test_csv_errors_name_the_row_line(tmp_path):
    path = write(
        tmp_path,
        "plc.csv",
        "# comment line\nname,table,address,type,initial\n"
        "a,holding,0,uint16,1\n\nb,holding,1,uint16,70000\n",
    )
    with pytest.raises(RegisterMapError) as err:
        load_register_map(path)
    assert str(err.value).startswith(f"{path}:5: tags[1].initial: ")
    bad_column = write(tmp_path, "col.csv", "name,table,adress\na,holding,0\n")
    with pytest.raises(RegisterMapError, match=r"col.csv:1: adress: unknown column"):
        load_register_map(bad_column)


def test_every_problem_is_reported(tmp_path):
    path = write(
        tmp_path,
        "plc.yaml",
        MAP_HEAD
        + "  - {name: a, table: holding, address: 0, typo: 1}\n"
        + "  - {name: b, table: holding, address: 1, type: int16, initial: -40000}\n",
    )
    with pytest.raises(RegisterMapError) as err:
        load_register_map(path)
    assert [p.line for p in err.value.problems] == [3, 4]


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_codec_round_trip(dtype, byte_order, word_order):
    value = {"int16": -1234, "uint16": 54321, "int32": -7654321, "uint32": 3_000_000_001}.get(
        dtype, 12.5
    )
    regs = encode(value, dtype, byte_order, word_order)
    assert decode(regs, dtype, byte_order, word_order) == value
    assert decode_many(regs * 3, dtype, 3, byte_order, word_order) == [value] * 3


def test_word_and_byte_order_layout():
    assert encode(0x11223344, "uint32", "big", "big") == [0x1122, 0x3344]  # ABCD
    assert encode(0x11223344, "uint32", "big", "little") == [0x3344, 0x1122]  # CDAB
    assert encode(0x11223344, "uint32", "little", "big") == [0x2211, 0x4433]  # BADC
    assert encode(0x11223344, "uint32", "little", "little") == [0x4433, 0x2211]  # DCBA


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def plc():
    twin = InThread(PlcTwin.from_file(DEMO, tick=0.02, seed=1)).start("127.0.0.1", 0)
    yield twin
    twin.stop()


@pytest.fixture
def client(plc):
    c = ModbusTcpClient("127.0.0.1", port=plc.twin.port, timeout=3, retries=0)
    assert c.connect()
    yield c
    c.close()


def tag(plc, name):
    return plc.call(plc.twin.read_tag(name))


def test_initial_values_and_constants(plc, client):
    assert tag(plc, "pump_speed_sp") == 1450
    assert tag(plc, "status_running") is True and tag(plc, "status_alarm") is False
    assert tag(plc, "pump_running") is True
    rsp = client.read_holding_registers(10, count=1, device_id=1)
    assert rsp.registers == [0b0001]  # bit 0 set, bit 3 clear
    rsp = client.read_coils(0, count=1, device_id=1)
    assert rsp.bits[0] is True


def test_sine_and_random_walk_move_within_bounds(plc):
    seen_level = {tag(plc, "tank_level")}
    seen_temp = {tag(plc, "tank_temp")}

    def moved():
        seen_level.add(tag(plc, "tank_level"))
        seen_temp.add(tag(plc, "tank_temp"))
        return len(seen_level) > 2 and len(seen_temp) > 2

    assert wait_until(moved)
    assert all(40 <= v <= 60 for v in seen_level)
    assert all(18 <= v <= 24 for v in seen_temp)


def test_ramp_rises_and_counter_counts(plc):
    first_flow, first_count = tag(plc, "outlet_flow"), tag(plc, "pump_starts")
    assert wait_until(lambda: tag(plc, "outlet_flow") > first_flow)
    assert 0 <= tag(plc, "outlet_flow") <= 500
    assert wait_until(lambda: tag(plc, "pump_starts") >= first_count + 1, timeout=6)


def test_toggle_flips(plc):
    first = tag(plc, "heartbeat")
    assert wait_until(lambda: tag(plc, "heartbeat") != first, timeout=3)


def test_setpoint_is_written_remembered_and_read(plc, client):
    regs = encode(73.25, "float32")
    assert not client.write_registers(0, regs, device_id=1).isError()
    assert tag(plc, "level_setpoint") == 73.25
    time.sleep(0.1)  # several ticks pass: a setpoint is not overwritten by the PLC
    rsp = client.read_holding_registers(0, count=2, device_id=1)
    assert decode(rsp.registers, "float32") == 73.25
    assert not client.write_coil(1, True, device_id=1).isError()
    assert tag(plc, "pump_start_cmd") is True


def test_read_only_tags_refuse_writes(plc, client):
    rsp = client.write_register(10, 0, device_id=1)  # status word: not a setpoint
    assert rsp.isError() and rsp.exception_code == 2
    assert client.write_coil(0, False, device_id=1).exception_code == 2
    assert tag(plc, "pump_running") is True


def test_address_outside_the_memory_area(client):
    # the demo names holding 0-2 and 10: its area is 0-15 (device_profile's rule)
    assert client.read_holding_registers(500, count=1, device_id=1).exception_code == 2
    assert client.read_holding_registers(15, count=2, device_id=1).exception_code == 2
    assert client.read_holding_registers(15, count=1, device_id=1).registers == [0]


def test_byte_and_word_order_on_the_wire(tmp_path):
    path = write(
        tmp_path,
        "orders.yaml",
        "word_order: little\ntags:\n"
        "  - {name: cdab, table: holding, address: 0, type: uint32, initial: 0x11223344}\n"
        "  - {name: dcba, table: holding, address: 2, type: uint32, byte_order: little,"
        " initial: 0x11223344}\n"
        "  - {name: abcd, table: holding, address: 4, type: float32, word_order: big,"
        " initial: 1.5}\n",
    )
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        c = ModbusTcpClient("127.0.0.1", port=plc.twin.port, timeout=3, retries=0)
        c.connect()
        regs = c.read_holding_registers(0, count=6, device_id=1).registers
        c.close()
        assert regs[:4] == [0x3344, 0x1122, 0x4433, 0x2211]
        assert decode(regs[4:6], "float32") == 1.5
        assert plc.call(plc.twin.read_tag("dcba")) == 0x11223344


def test_several_units(tmp_path):
    path = write(
        tmp_path,
        "units.yaml",
        "tags:\n  - {name: a, unit: 1, table: holding, address: 0, initial: 11}\n"
        "  - {name: b, unit: 2, table: holding, address: 0, initial: 22}\n",
    )
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        c = ModbusTcpClient("127.0.0.1", port=plc.twin.port, timeout=3, retries=0)
        c.connect()
        assert c.read_holding_registers(0, count=1, device_id=1).registers == [11]
        assert c.read_holding_registers(0, count=1, device_id=2).registers == [22]
        c.close()


def test_port_in_use_is_a_clear_error(plc):
    twin = InThread(PlcTwin.from_file(DEMO))
    with pytest.raises(
        PlcError, match=r"cannot listen on 127.0.0.1:\d+: the port is already in use"
    ):
        twin.start("127.0.0.1", plc.twin.port)
    twin.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_module_entry_point_serves_and_stops_on_sigint():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "restoredrill.twins.plc", str(DEMO), "--bind", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        c = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert wait_until(c.connect, timeout=15)
        assert c.read_holding_registers(2, count=1, device_id=1).registers == [1450]
        c.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "listening on 127.0.0.1" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_entry_point_reports_a_bad_map_without_traceback(tmp_path):
    path = write(tmp_path, "bad.yaml", MAP_HEAD + "  - {name: a, table: holding}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "restoredrill.twins.plc", str(path), "--bind", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert f"{path}:3: tags[0].address: required" in proc.stderr
    assert "Traceback" not in proc.stderr
