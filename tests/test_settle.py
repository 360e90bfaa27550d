"""Written-through and moving values are judged within their stated window (issue 8 item 9).

A real PLC twin (pymodbus) behind a real, slow OPC UA gateway (asyncua, ``slowgateway``)
that forwards a written setpoint to the PLC 1.5 s later, all on 127.0.0.1.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from slowgateway import SlowGateway

from restoredrill.checks import modbus, opcua
from restoredrill.checks.base import AddressTarget, SandboxGuard, Status
from restoredrill.twins.plc import InThread, PlcTwin

MAP = Path(__file__).resolve().parents[1] / "config/demo/plc/line1.yaml"
TARGET = AddressTarget("gateway", "127.0.0.1")
GUARD = SandboxGuard()
DELAY = 1.5
SETPOINT = {"table": "holding", "address": 0, "type": "float32"}


@pytest.fixture(scope="module")
def plant():
    plc = InThread(PlcTwin.from_file(MAP, tick=0.05)).start("127.0.0.1", 0)
    gateway = InThread(SlowGateway(plc.twin.port, delay=DELAY, step=2.0))
    try:
        gateway.start("127.0.0.1", 0)
        yield plc, gateway
    finally:
        gateway.stop()
        plc.stop()


def ua_check(gateway, *values, **fields):
    spec = opcua.Spec.model_validate(
        {"kind": "opcua", "port": gateway.twin.port, "values": list(values), **fields}
    )
    return opcua.run(spec, TARGET, GUARD)[1:]  # the first result is the session


def plc_check(plc, *values, **fields):
    spec = modbus.Spec.model_validate(
        {"kind": "modbus", "port": plc.twin.port, "values": list(values), **fields}
    )
    return modbus.run(spec, TARGET, GUARD)


def settled_after(message: str) -> float:
    found = re.fullmatch(r"settled after (\d+\.\d)s", message)
    assert found, message
    return float(found[1])


def test_a_written_through_value_passes_within_its_settle_window(plant):
    plc, gateway = plant
    (r,) = ua_check(gateway, {"node": "Objects/Gw/Setpoint", "write": 61.5, "settle": "10s"})
    assert r.status is Status.PASS, r
    assert r.observed == 61.5
    assert r.expected == {"write": 61.5, "equals": 61.5, "settle": "10s"}
    assert settled_after(r.message) >= DELAY - 0.1  # the first reads showed the old value
    (r,) = plc_check(plc, {**SETPOINT, "equals": 61.5})
    assert r.status is Status.PASS, r


def test_written_values_settle_within_10s_by_default(plant):
    plc, gateway = plant
    (r,) = ua_check(gateway, {"node": "Objects/Gw/Setpoint", "write": 60.5, "equals": 60.5})
    assert r.status is Status.PASS, r
    assert r.expected["settle"] == "10s" and r.message.startswith("settled after")


def test_without_a_window_the_same_write_through_fails(plant):
    plc, gateway = plant
    (before,) = plc_check(plc, {**SETPOINT, "min": 0})
    (r,) = ua_check(
        gateway, {"node": "Objects/Gw/Setpoint", "write": 62.5, "equals": 62.5, "settle": "0s"}
    )
    assert r.status is Status.FAIL, r
    assert r.observed == before.observed != 62.5
    assert r.expected == {"write": 62.5, "equals": 62.5, "settle": "0s"}
    # it does reach the PLC, later: a check of the register with a window sees it arrive
    (r,) = plc_check(plc, {**SETPOINT, "equals": 62.5, "settle": "10s"})
    assert r.status is Status.PASS, r
    assert r.message.startswith("settled after") and r.expected["settle"] == "10s"


def test_a_value_arriving_after_its_window_fails(plant):
    plc, gateway = plant
    (r,) = ua_check(gateway, {"node": "Objects/Gw/Setpoint", "write": 64.5, "settle": "0.5s"})
    assert r.status is Status.FAIL, r
    assert r.message.startswith("did not settle within 0.5s: last read ")
    assert r.observed != 64.5
    (r,) = plc_check(plc, {**SETPOINT, "equals": 64.5, "settle": "10s"})
    assert r.status is Status.PASS, r  # it came, but too late


def test_a_value_that_never_arrives_fails_with_what_was_read(plant):
    plc, gateway = plant
    (now,) = plc_check(plc, {**SETPOINT, "min": 0})
    (r,) = ua_check(gateway, {"node": "Objects/Gw/Lost", "write": 70.0, "settle": "2s"})
    assert r.status is Status.FAIL, r
    assert r.observed == now.observed != 70.0
    assert r.message == f"did not settle within 2s: last read {now.observed!r} != 70.0"
    (r,) = plc_check(plc, {**SETPOINT, "equals": 70.0, "settle": "1s"})
    assert r.status is Status.FAIL and r.message.startswith("did not settle within 1s")


def test_a_slowly_moving_value_passes_within_its_window_and_a_constant_fails(plant):
    plc, gateway = plant
    slow, still = ua_check(
        gateway,
        {"node": "Objects/Gw/Slow", "changes": True, "settle": "6s"},
        {"node": "Objects/Gw/Still", "changes": True, "settle": "3s"},
    )
    assert slow.status is Status.PASS, slow
    assert slow.observed["changed to"] != slow.observed["first"]
    assert slow.message.startswith("changed after") and slow.expected["settle"] == "6s"
    assert still.status is Status.FAIL and still.observed == 7
    assert still.message == "did not change within 3s (stayed 7)"
    starts, speed = plc_check(  # pump_starts counts once every 2 s; the speed setpoint stays
        plc,
        {"table": "input", "address": 5, "type": "uint32", "changes": True, "settle": "6s"},
        {"table": "holding", "address": 2, "type": "int16", "changes": True, "settle": "3s"},
    )
    assert starts.status is Status.PASS, starts
    assert speed.status is Status.FAIL and "did not change within 3s" in speed.message


def test_a_moving_value_must_stay_in_range_at_every_read(plant):
    _, gateway = plant
    (first,) = ua_check(gateway, {"node": "Objects/Gw/Slow", "min": 0})
    (r,) = ua_check(
        gateway,
        {"node": "Objects/Gw/Slow", "changes": True, "max": first.observed, "settle": "6s"},
    )
    assert r.status is Status.FAIL, r
    assert "outside" in r.message
