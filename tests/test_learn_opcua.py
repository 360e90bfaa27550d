"""``restoredrill learn opcua``: a live server's address space, browsed read-only, written as
NodeSet2 XML that the SCADA twin loads and serves with the same values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.scada import PlcLink, ScadaTwin

REPO = Path(__file__).resolve().parents[1]
DEMO_MAP = REPO / "config/demo/plc/line1.yaml"
DEMO_NODES = REPO / "config/demo/plc/line1-opcua.yaml"
CLI = Path(sys.executable).parent / "restoredrill"
PATHS = [
    "Objects/Line1/LevelSetpoint",
    "Objects/Line1/OutletFlow",
    "Objects/Line1/PumpRunning",
    "Objects/Line1/Info/Site",
]


def learn(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "learn", "opcua", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def source(nodesets_dir):
    """The plant's SCADA server: DI types and devices, line 1's variables fed by a PLC."""
    plc = InThread(PlcTwin.from_file(DEMO_MAP, tick=0.05)).start("127.0.0.1", 0)
    twin = ScadaTwin(
        [DEMO_NODES, nodesets_dir / "Opc.Ua.Di.NodeSet2.xml"],
        plcs={"line1-plc": PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)},
        poll=0.05,
    )
    server = InThread(twin).start("127.0.0.1", 0)
    yield server
    server.stop()
    plc.stop()


@pytest.fixture(scope="module")
def learned(source, tmp_path_factory):
    model = tmp_path_factory.mktemp("learned") / "model.xml"
    out = learn(source.twin.endpoint, "-o", str(model))
    assert out.returncode == 0, out.stderr
    return model, out.stdout


def test_learned_model_names_what_it_holds(learned):
    model, stdout = learned
    assert f"wrote {model}:" in stdout
    assert "http://opcfoundation.org/UA/DI/" in stdout and "urn:restoredrill:demo:line1" in stdout
    text = model.read_text()
    assert "<UANodeSet" in text and "Line1.TankLevel" in text and "DeviceType" in text


def test_the_twin_serves_the_learned_model_with_the_values_seen(source, learned):
    model, _ = learned
    seen = {p: source.call(source.twin.read(p)) for p in PATHS}
    with InThread(ScadaTwin([model])).start("127.0.0.1", 0) as twin:
        served = {p: twin.call(twin.twin.read(p)) for p in PATHS}
        level = twin.call(twin.twin.node("Objects/Line1/LevelSetpoint"))
        access = twin.call(level.get_access_level())
        uris = twin.call(twin.twin.server.get_namespace_array())
        device_type = twin.call(
            twin.twin.node("Types/ObjectTypes/BaseObjectType/TopologyElementType")
        )
    assert served["Objects/Line1/LevelSetpoint"] == seen["Objects/Line1/LevelSetpoint"] == 50.0
    assert served["Objects/Line1/Info/Site"] == "demo plant"
    assert served["Objects/Line1/PumpRunning"] is True
    assert 0 <= served["Objects/Line1/OutletFlow"] <= 500
    assert {"http://opcfoundation.org/UA/DI/", "urn:restoredrill:demo:line1"} <= set(uris)
    assert len(access) == 2  # CurrentRead and CurrentWrite: still writable
    assert device_type is not None


def test_a_freeopcua_server_is_learned(tmp_path):
    from opcua import Server, ua

    server = Server()
    server.set_endpoint("opc.tcp://127.0.0.1:0/peer/")
    idx = server.register_namespace("urn:peer:boiler")
    boiler = server.get_objects_node().add_object(idx, "Boiler")
    boiler.add_variable(idx, "Pressure", 4.25)
    boiler.add_variable(idx, "Burners", ua.Variant(3, ua.VariantType.Int32))
    boiler.add_variable(idx, "Mode", "auto").set_writable()
    server.start()
    try:
        port = server.bserver._server.sockets[0].getsockname()[1]
        out = learn(f"opc.tcp://127.0.0.1:{port}/peer/", "-o", str(tmp_path / "boiler.xml"))
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    with InThread(ScadaTwin([tmp_path / "boiler.xml"])).start("127.0.0.1", 0) as twin:
        values = [
            twin.call(twin.twin.read(f"Objects/Boiler/{n}"))
            for n in ("Pressure", "Burners", "Mode")
        ]
    assert values == [4.25, 3, "auto"]


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    out = learn("opc.tcp://127.0.0.1:1/", "-o", str(tmp_path / "m.xml"), "--timeout", "5s")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "opc.tcp://127.0.0.1:1/ is unreachable" in out.stderr
    assert not (tmp_path / "m.xml").exists()
    out = learn("http://127.0.0.1:1/", "-o", str(tmp_path / "m.xml"))
    assert out.returncode == 2 and "is not an OPC UA address" in out.stderr


def test_a_secured_server_without_credentials_is_a_clear_error(tmp_path):
    nodes = tmp_path / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: Answer, type: Int32, value: 42}\n")
    twin = ScadaTwin(
        [nodes],
        security="basic256sha256",
        username="operator",
        password="s3cret",
        cert_dir=tmp_path / "pki",
    )
    with InThread(twin).start("127.0.0.1", 0) as server:
        url = server.twin.endpoint
        plain = learn(url, "-o", str(tmp_path / "a.xml"))
        secure = learn(
            url,
            "-o",
            str(tmp_path / "b.xml"),
            "--security",
            "basic256sha256",
            "--cert-dir",
            str(tmp_path / "client"),
        )
        env = {"LEARN_PW": "s3cret", "PATH": "/usr/bin:/bin"}
        ok = learn(
            url,
            "-o",
            str(tmp_path / "c.xml"),
            "--security",
            "basic256sha256",
            "--cert-dir",
            str(tmp_path / "client"),
            "--username",
            "operator",
            "--password-env",
            "LEARN_PW",
            env=env,
        )
    assert plain.returncode == 2 and "it is secured (give --security basic256sha256" in plain.stderr
    assert secure.returncode == 2 and "wants a user name and password" in secure.stderr
    assert ok.returncode == 0, ok.stderr
    assert "Answer" in (tmp_path / "c.xml").read_text()
    assert "s3cret" not in (tmp_path / "c.xml").read_text() + ok.stdout + ok.stderr
