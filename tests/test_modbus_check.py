"""The modbus check against a real PLC twin on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from restoredrill.checks import modbus
from restoredrill.checks.base import AddressTarget, SandboxGuard, Status
from restoredrill.twins.plc import InThread, PlcTwin

DEMO = Path(__file__).resolve().parents[1] / "config/demo/plc/line1.yaml"

TARGET = AddressTarget("plc", "127.0.0.1")
GUARD = SandboxGuard()


@pytest.fixture(scope="module")
def plc():
    twin = InThread(PlcTwin.from_file(DEMO, tick=0.02)).start("127.0.0.1", 0)
    yield twin
    twin.stop()


def check(plc, *values, **fields):
    spec = modbus.Spec.model_validate(
        {"kind": "modbus", "port": plc.twin.port, "window": "3s", "values": list(values), **fields}
    )
    return modbus.run(spec, TARGET, GUARD)


def test_exact_range_bits_and_coils_pass(plc):
    results = check(
        plc,
        {"table": "holding", "address": 2, "type": "int16", "equals": 1450},
        {"table": "input", "address": 0, "type": "float32", "min": 40, "max": 60},
        {"table": "holding", "address": 10, "bit": 0, "equals": True},
        {"table": "coil", "address": 0, "equals": True},
        {"name": "status word", "table": "holding", "address": 10, "equals": 1},
    )
    assert [r.status for r in results] == [Status.PASS] * 5, results
    assert results[-1].name.endswith(": status word")


def test_mismatch_shows_expected_and_observed(plc):
    (r,) = check(plc, {"table": "holding", "address": 2, "type": "int16", "equals": 1500})
    assert r.status is Status.FAIL
    assert r.expected == {"equals": 1500} and r.observed == 1450
    assert "1450 != 1500" in r.message
    (r,) = check(plc, {"table": "input", "address": 0, "type": "float32", "max": 10})
    assert r.status is Status.FAIL and "outside" in r.message


def test_changing_values_pass_and_constants_fail(plc):
    flow, status = check(
        plc,
        {"table": "input", "address": 2, "type": "uint16", "changes": True},
        {"table": "holding", "address": 10, "changes": True},
        window="0.5s",
    )
    assert flow.status is Status.PASS and flow.observed["first"] != flow.observed["changed to"]
    assert status.status is Status.FAIL and "did not change within 0.5s" in status.message


def test_write_a_setpoint_and_read_it_back(plc):
    (r,) = check(plc, {"table": "holding", "address": 0, "type": "float32", "write": 42.5})
    assert r.status is Status.PASS and r.observed == 42.5
    assert plc.call(plc.twin.read_tag("level_setpoint")) == 42.5
    (r,) = check(plc, {"table": "holding", "address": 10, "write": 0})
    assert r.status is Status.FAIL and "write refused" in r.message and "exception 2" in r.message


def test_missing_register_fails_by_name_and_others_still_pass(plc):
    ok, missing = check(
        plc,
        {"table": "holding", "address": 2, "type": "int16", "equals": 1450},
        {"name": "ghost", "table": "holding", "address": 16, "equals": 0},  # past 0-15
    )
    assert ok.status is Status.PASS
    assert missing.status is Status.FAIL and missing.name.endswith("ghost")
    assert "illegal data address" in missing.message


def test_many_values_per_request_and_long_blocks(tmp_path):
    lines = ["tags:"] + [
        f"  - {{name: r{i}, table: holding, address: {i}, initial: {i % 1000}}}" for i in range(600)
    ]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    with InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc:
        (block,) = check(
            plc, {"table": "holding", "address": 0, "count": 600, "min": 0, "max": 999}
        )
        assert block.status is Status.PASS and block.observed[599] == 599
        results = check(plc, *[{"table": "holding", "address": i, "equals": i} for i in range(300)])
        assert all(r.passed for r in results)
    plans = modbus.plan([(i, range(i, i + 1)) for i in range(300)], 125)
    assert [count for _, count, _ in plans] == [125, 125, 50]


def test_unreachable_device_is_an_error_with_the_reason():
    spec = modbus.Spec(port=1, timeout=2, values=[{"address": 0}])
    (r,) = modbus.run(spec, TARGET, GUARD)
    assert r.status is Status.ERROR and "unreachable" in r.message and "refused" in r.message


def test_unknown_unit_fails_clearly(plc):
    (r,) = check(plc, {"address": 2}, unit=7, timeout=1)  # a device ignores other unit ids
    assert r.status is Status.FAIL and "no answer from unit 7" in r.message


def test_the_guard_refuses_addresses_outside_the_sandbox():
    spec = modbus.Spec(values=[{"address": 0}])
    (r,) = modbus.run(spec, AddressTarget("plc", "192.0.2.10"), GUARD)
    assert r.status is Status.ERROR and "outside the sandbox" in r.message


def test_spec_validation():
    with pytest.raises(ValueError, match="cannot be written"):
        modbus.Spec(values=[{"table": "input", "address": 0, "write": 1}])
    with pytest.raises(ValueError, match="needs bit"):
        modbus.Spec(values=[{"table": "holding", "address": 0, "type": "bool"}])
    with pytest.raises(ValueError, match="does not fit"):
        modbus.Spec(values=[{"address": 0, "type": "int16", "write": 70000}])
