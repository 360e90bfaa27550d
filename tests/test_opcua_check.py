"""The opcua check against real SCADA twins (open and Basic256Sha256) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from restoredrill.checks import opcua
from restoredrill.checks.base import AddressTarget, SandboxGuard, Status
from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.scada import PlcLink, ScadaTwin

REPO = Path(__file__).resolve().parents[1]
TARGET = AddressTarget("scada", "127.0.0.1")
GUARD = SandboxGuard()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, nodesets_dir):
    plc = InThread(PlcTwin.from_file(REPO / "config/demo/plc/line1.yaml", tick=0.02)).start(
        "127.0.0.1", 0
    )
    link = {"line1-plc": PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)}
    sources = [REPO / "config/demo/plc/line1-opcua.yaml", nodesets_dir / "Opc.Ua.Di.NodeSet2.xml"]
    open_ = InThread(ScadaTwin(sources, plcs=link, poll=0.02)).start("127.0.0.1", 0)
    secure = InThread(
        ScadaTwin(
            [REPO / "config/demo/plc/line1-opcua.yaml"],
            plcs=link,
            security="basic256sha256",
            username="operator",
            password="s3cret",
            cert_dir=tmp_path_factory.mktemp("pki"),
        )
    ).start("127.0.0.1", 0)
    yield plc, open_, secure
    for s in (secure, open_, plc):
        s.stop()


def check(server, **fields):
    spec = opcua.Spec.model_validate(
        {"kind": "opcua", "port": server.twin.port, "window": "3s", **fields}
    )
    return opcua.run(spec, TARGET, GUARD)


def by_suffix(results, suffix):
    (r,) = [r for r in results if r.name.endswith(suffix)]
    return r


def test_values_browse_count_subscription_pass(servers):
    _, server, _ = servers
    results = check(
        server,
        browse=["Objects/DeviceSet", "Objects/Line1/TankLevel"],
        values=[
            {"node": "Objects/Line1/TankLevel", "min": 40, "max": 60, "changes": True},
            {"node": "ns=3;s=Line1.Info.Site", "equals": "demo plant"},
            {"node": "Objects/Line1/PumpRunning", "equals": True},
        ],
        count=[
            {"folder": "Objects/Line1", "equals": 6},
            {"folder": "Objects/Line1", "recursive": True, "min": 7},
        ],
        subscribe=[{"node": "Objects/Line1/OutletFlow", "within": "3s", "updates": 2}],
    )
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert results[0].name.endswith(": connect")
    level = by_suffix(results, ": Objects/Line1/TankLevel")
    assert level.observed["first"] != level.observed["changed to"]


def test_mismatch_missing_node_and_missing_path_fail_with_the_reason(servers):
    _, server, _ = servers
    results = check(
        server,
        browse=["Objects/Line1/Nope"],
        values=[
            {"node": "Objects/Line1/Info/Site", "equals": "other plant"},
            {"node": "ns=3;s=Line1.Ghost", "equals": 1},
            {"node": "Objects/Line9/X", "equals": 1},
            {"node": "Objects/Line1/Info/Site", "changes": True},
        ],
        count=[{"folder": "Objects/Line1", "equals": 3}],
        window="0.3s",
    )
    failed = [r for r in results if r.status is Status.FAIL]
    assert len(failed) == 6
    site = failed[1]
    assert site.expected == {"equals": "other plant"} and site.observed == "demo plant"
    assert "no such node" in failed[2].message
    assert "has no child 'Line9'" in failed[3].message
    assert "did not change" in failed[4].message
    assert failed[5].observed == 6


def test_write_goes_through_to_the_plc(servers):
    plc, server, _ = servers
    (_, r) = check(server, values=[{"node": "Objects/Line1/LevelSetpoint", "write": 55.5}])
    assert r.status is Status.PASS and r.observed == 55.5
    assert plc.call(plc.twin.read_tag("level_setpoint")) == 55.5
    (_, r) = check(server, values=[{"node": "Objects/Line1/TankLevel", "write": 1.0}])
    assert r.status is Status.FAIL and "write refused" in r.message


def test_secure_endpoint_right_and_wrong_password(servers, monkeypatch, tmp_path):
    _, _, secure = servers
    monkeypatch.setenv("OPC_PW", "s3cret")
    common = {
        "security": "basic256sha256",
        "username": "operator",
        "password_env": "OPC_PW",
        "cert_dir": str(tmp_path),
        "values": [{"node": "Objects/Line1/PumpRunning", "equals": True}],
    }
    results = check(secure, **common)
    assert [r.status for r in results] == [Status.PASS, Status.PASS], results
    monkeypatch.setenv("OPC_PW", "guess")
    (r,) = check(secure, **common)
    assert r.status is Status.ERROR and "wrong credentials" in r.message
    (r,) = check(secure, values=common["values"])
    assert r.status is Status.ERROR and "no endpoint with this security" in r.message


def test_unreachable_endpoint_is_an_error_within_the_timeout():
    spec = opcua.Spec(port=1, timeout=2)
    (r,) = opcua.run(spec, TARGET, GUARD)
    assert r.status is Status.ERROR and "unreachable" in r.message


def test_the_guard_refuses_addresses_outside_the_sandbox():
    (r,) = opcua.run(opcua.Spec(), AddressTarget("scada", "198.51.100.7"), GUARD)
    assert r.status is Status.ERROR and "outside the sandbox" in r.message
