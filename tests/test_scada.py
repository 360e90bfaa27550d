"""SCADA twin: address space from YAML and real NodeSets, PLC bindings, security."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from restoredrill.twins.devices import Binding
from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.registers import encode
from restoredrill.twins.scada import (
    PlcLink,
    ScadaConfigError,
    ScadaError,
    ScadaTwin,
    ensure_certificate,
    load_node_list,
    nodeset_order,
    resolve_node,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_MAP = REPO / "config/demo/plc/line1.yaml"
DEMO_NODES = REPO / "config/demo/plc/line1-opcua.yaml"


def wait_until(probe, timeout: float = 5.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.fixture(scope="module")
def plc():
    twin = InThread(PlcTwin.from_file(DEMO_MAP, tick=0.02)).start("127.0.0.1", 0)
    yield twin
    twin.stop()


@pytest.fixture(scope="module")
def scada(plc, nodesets_dir):
    """One server for the module: YAML nodes bound to the PLC, plus DI, Machinery, PackML."""
    sources = [
        DEMO_NODES,
        nodesets_dir / "Opc.Ua.Machinery.NodeSet2.xml",  # given before DI on purpose
        nodesets_dir / "Opc.Ua.PackML.NodeSet2.xml",
        nodesets_dir / "Opc.Ua.Di.NodeSet2.xml",
    ]
    link = PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)
    twin = ScadaTwin(
        sources,
        plcs={"line1-plc": link},
        poll=0.02,
    )
    server = InThread(twin).start("127.0.0.1", 0)
    yield server
    server.stop()


async def _read(endpoint: str, path: str):
    async with Client(endpoint, timeout=5) as c:
        return await (await resolve_node(c, path)).read_value()


def read(scada, path):
    return scada.call(_read(scada.twin.endpoint, path))


async def _write(endpoint: str, path: str, value, vtype):
    async with Client(endpoint, timeout=5) as c:
        node = await resolve_node(c, path)
        await node.write_value(ua.DataValue(ua.Variant(value, vtype)))


def test_nodeset_order_puts_dependencies_first(nodesets_dir):
    files = [
        nodesets_dir / "Opc.Ua.PackML.NodeSet2.xml",
        nodesets_dir / "Opc.Ua.Machinery.NodeSet2.xml",
        nodesets_dir / "Opc.Ua.Di.NodeSet2.xml",
    ]
    names = [p.name for p in nodeset_order(files)]
    assert names.index("Opc.Ua.Di.NodeSet2.xml") < names.index("Opc.Ua.Machinery.NodeSet2.xml")
    with pytest.raises(ScadaConfigError, match="requires the model.*DI.*add their NodeSet"):
        nodeset_order(files[1:2])


@pytest.mark.parametrize(
    "path",
    [
        "Objects/DeviceSet",  # DI
        "Objects/Machines",  # Machinery
        "Objects/Line1/TankLevel",  # our YAML
        "Objects/Line1/Info/Site",
    ],
)
def test_browse_paths_from_yaml_and_real_nodesets(scada, path):
    node = scada.call(scada.twin.node(path))
    assert node.nodeid.NamespaceIndex > 0


def test_packml_types_are_loaded(scada):
    ns = scada.call(scada.twin.server.get_namespace_index("http://opcfoundation.org/UA/PackML/"))
    types = scada.call(scada.twin.node("Types/ObjectTypes/BaseObjectType"))
    children = scada.call(types.get_children())
    names = [scada.call(c.read_browse_name()) for c in children]
    assert any(n.NamespaceIndex == ns for n in names)


def test_yaml_values_and_types(scada):
    assert read(scada, "Objects/Line1/Info/Site") == "demo plant"


def test_bound_variable_follows_the_plc(plc, scada):
    def same():
        plc_value = plc.call(plc.twin.read_tag("outlet_flow"))
        return plc_value > 0 and read(scada, "Objects/Line1/OutletFlow") in (
            plc_value,
            plc_value - 1,
        )

    assert wait_until(same)
    level = read(scada, "Objects/Line1/TankLevel")
    assert 40 <= level <= 60
    assert wait_until(lambda: read(scada, "Objects/Line1/TankLevel") != level)


def test_plc_change_reaches_scada(plc, scada):
    plc.call(plc.twin.write_tag("pump_running", False))
    assert wait_until(lambda: read(scada, "Objects/Line1/PumpRunning") is False)
    plc.call(plc.twin.write_tag("pump_running", True))
    assert wait_until(lambda: read(scada, "Objects/Line1/PumpRunning") is True)


def test_client_write_to_bound_variable_reaches_the_plc_register(plc, scada):
    scada.call(
        _write(scada.twin.endpoint, "Objects/Line1/LevelSetpoint", 64.25, ua.VariantType.Double)
    )
    assert plc.call(plc.twin.read_tag("level_setpoint")) == 64.25
    regs = plc.call(plc.twin.read_raw(1, "holding", 0, 2))
    assert regs == encode(64.25, "float32")
    scada.call(
        _write(scada.twin.endpoint, "Objects/Line1/PumpStartCmd", True, ua.VariantType.Boolean)
    )
    assert plc.call(plc.twin.read_tag("pump_start_cmd")) is True
    assert wait_until(lambda: read(scada, "Objects/Line1/LevelSetpoint") == 64.25)


def test_read_only_variable_refuses_client_writes(scada):
    with pytest.raises(ua.UaStatusCodeError):
        scada.call(
            _write(scada.twin.endpoint, "Objects/Line1/TankLevel", 1.0, ua.VariantType.Double)
        )


def test_binding_by_browse_path_for_any_node(plc, tmp_path):
    nodes = tmp_path / "n.yaml"
    nodes.write_text("nodes:\n  - folder: F\n    nodes:\n      - {variable: Speed, type: Int32}\n")
    twin = ScadaTwin(
        [nodes],
        plcs={"p": PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)},
        bindings=[Binding(node="Objects/F/Speed", plc="p", tag="pump_speed_sp")],
        poll=0.02,
    )
    with InThread(twin).start("127.0.0.1", 0) as server:
        assert wait_until(lambda: read(server, "Objects/F/Speed") == 1450)


def test_unknown_binding_targets_are_refused(plc, tmp_path):
    link = PlcLink("127.0.0.1", plc.twin.port, plc.twin.map)
    with pytest.raises(ScadaError, match="not given"):
        ScadaTwin([DEMO_NODES])
    with pytest.raises(ScadaError, match="no tag 'nope'"):
        ScadaTwin(
            [DEMO_NODES],
            plcs={"line1-plc": link},
            bindings=[Binding(node="i=85", plc="line1-plc", tag="nope")],
        )


def test_malformed_nodeset_xml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.NodeSet2.xml"
    bad.write_text(
        '<?xml version="1.0"?>\n<UANodeSet>\n  <UAObject NodeId="ns=1;i=1">\n</UANodeSet>\n'
    )
    with pytest.raises(ScadaConfigError, match=rf"^{bad}:4: malformed NodeSet XML"):
        ScadaTwin([bad])


def test_malformed_node_list_names_file_and_line(tmp_path):
    bad = tmp_path / "nodes.yaml"
    bad.write_text("nodes:\n  - folder: A\n    nodes:\n      - {variable: X, type: Complex}\n")
    with pytest.raises(ScadaConfigError, match=rf"^{bad}:4: nodes\[0\]\.nodes\[0\].*Complex"):
        load_node_list(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes:\n  - folder: [A\n")
    with pytest.raises(ScadaConfigError, match=rf"^{broken}:\d+: malformed YAML"):
        load_node_list(broken)


def test_port_in_use_is_a_clear_error(scada):
    twin = ScadaTwin(
        [DEMO_NODES.parent / "line1-opcua.yaml"],
        plcs={"line1-plc": PlcLink("127.0.0.1", 1, load_map())},
    )
    with pytest.raises(ScadaError, match="already in use"):
        InThread(twin).start("127.0.0.1", scada.twin.port)


def load_map():
    from restoredrill.twins.registers import load_register_map

    return load_register_map(DEMO_MAP)


# ---------------------------------------------------------------- security


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    nodes = tmp_path_factory.mktemp("sec") / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: Answer, type: Int32, value: 42}\n")
    pki = tmp_path_factory.mktemp("pki")
    twin = ScadaTwin(
        [nodes], security="basic256sha256", username="operator", password="s3cret", cert_dir=pki
    )
    server = InThread(twin).start("127.0.0.1", 0)
    yield server, pki
    server.stop()


async def _secure_read(endpoint: str, pki: Path, user: str, password: str):
    cert, key = await ensure_certificate(pki, "client", "urn:test:client", server=False)
    client = Client(endpoint, timeout=5)
    client.application_uri = "urn:test:client"
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key))
    client.set_user(user)
    client.set_password(password)
    async with client:
        return await (await resolve_node(client, "Objects/Answer")).read_value()


def test_basic256sha256_with_the_right_password(secure):
    server, pki = secure
    assert server.call(_secure_read(server.twin.endpoint, pki, "operator", "s3cret")) == 42
    assert (pki / "restoredrill-scada-cert.der").is_file()  # generated once, reused


def test_wrong_password_is_rejected(secure):
    server, pki = secure
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        server.call(_secure_read(server.twin.endpoint, pki, "operator", "guess"))
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        server.call(_secure_read(server.twin.endpoint, pki, "admin", "s3cret"))


def test_unsecured_client_finds_no_endpoint(secure):
    server, _ = secure
    with pytest.raises(Exception, match="No matching endpoints|Bad"):
        server.call(_read(server.twin.endpoint, "Objects/Answer"))
