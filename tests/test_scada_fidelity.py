"""The SCADA twin presents the configured identity to a client that is not asyncua (the
FreeOpcUa ``opcua`` package): BuildInfo, application description, certificate subject.
Also: the bulk-built address space equals what asyncua's per-node calls build."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from asyncua import Client, Server, ua
from cryptography import x509
from cryptography.x509.oid import NameOID

from restoredrill.twins.address_space import NewNode, add_nodes
from restoredrill.twins.devices import ScadaDevice, device_command
from restoredrill.twins.opcua_identity import OpcuaIdentity, parse_identity
from restoredrill.twins.plc import InThread
from restoredrill.twins.scada import ScadaTwin, ensure_certificate

IDENTITY = OpcuaIdentity.model_validate(
    {
        "application_name": "SCADA01",
        "application_uri": "urn:scada01:Vendor:ScadaServer",
        "product_uri": "http://vendor.example/ScadaServer",
        "manufacturer_name": "Vendor AG",
        "product_name": "ScadaServer",
        "software_version": "7.1.2",
        "build_number": "7120",
        "build_date": "2024-03-01T12:00:00Z",
        "certificate": {"common_name": "SCADA01", "organization": "Plant Ltd", "country": "DE"},
    }
)
BUILD_INFO = {
    "ProductUri": "http://vendor.example/ScadaServer",
    "ManufacturerName": "Vendor AG",
    "ProductName": "ScadaServer",
    "SoftwareVersion": "7.1.2",
    "BuildNumber": "7120",
}


@pytest.fixture(scope="module")
def branded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("branded")
    nodes = folder / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: Answer, type: Int32, value: 42}\n")
    twin = ScadaTwin(
        [nodes],
        security="basic256sha256",
        username="operator",
        password="s3cret",
        cert_dir=folder / "pki",
        identity=IDENTITY,
    )
    server = InThread(twin).start("127.0.0.1", 0)
    yield server, folder
    server.stop()


def _freeopcua_session(endpoint: str, folder: Path):
    from opcua import Client as OldClient

    cert, key = asyncio.run(
        ensure_certificate(folder / "client", "peer", "urn:peer:client", server=False)
    )
    client = OldClient(endpoint, timeout=10)
    client.application_uri = "urn:peer:client"
    client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
    client.set_user("operator")
    client.set_password("s3cret")
    return client


def test_a_freeopcua_client_reads_the_configured_build_info(branded):
    from opcua import ua as old_ua

    server, folder = branded
    client = _freeopcua_session(server.twin.endpoint, folder)
    client.connect()
    try:
        build = client.get_node(old_ua.ObjectIds.Server_ServerStatus_BuildInfo).get_value()
        parts = {
            name: client.get_node(
                getattr(old_ua.ObjectIds, f"Server_ServerStatus_BuildInfo_{name}")
            ).get_value()
            for name in BUILD_INFO
        }
        namespaces = client.get_namespace_array()
        answer = client.get_objects_node().get_child(["2:Answer"]).get_value()
    finally:
        client.disconnect()
    assert parts == BUILD_INFO
    assert build.ProductName == "ScadaServer" and build.BuildDate.year == 2024
    assert namespaces[1] == "urn:scada01:Vendor:ScadaServer" and answer == 42


def test_endpoints_and_certificate_carry_the_identity(branded):
    from opcua import Client as OldClient

    server, _ = branded
    endpoints = OldClient(server.twin.endpoint, timeout=10).connect_and_get_server_endpoints()
    (edp,) = [e for e in endpoints if e.SecurityPolicyUri.endswith("Basic256Sha256")]
    assert edp.Server.ApplicationName.Text == "SCADA01"
    assert edp.Server.ApplicationUri == "urn:scada01:Vendor:ScadaServer"
    assert edp.Server.ProductUri == "http://vendor.example/ScadaServer"
    cert = x509.load_der_x509_certificate(edp.ServerCertificate)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COMMON_NAME: "SCADA01",
        NameOID.ORGANIZATION_NAME: "Plant Ltd",
        NameOID.COUNTRY_NAME: "DE",
    }
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:scada01:Vendor:ScadaServer" in san.get_values_for_type(
        x509.UniformResourceIdentifier
    )


def test_a_changed_subject_makes_a_new_certificate(tmp_path):
    first, key = asyncio.run(
        ensure_certificate(tmp_path, "s", "urn:s", True, {"commonName": "A", "countryName": "DE"})
    )
    before = first.read_bytes()
    again, _ = asyncio.run(
        ensure_certificate(tmp_path, "s", "urn:s", True, {"commonName": "A", "countryName": "DE"})
    )
    assert again.read_bytes() == before  # kept
    asyncio.run(ensure_certificate(tmp_path, "s", "urn:s", True, {"commonName": "B"}))
    cert = x509.load_der_x509_certificate(first.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "B"


def test_the_default_identity_is_restoredrills(tmp_path):
    nodes = tmp_path / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: X, type: Int32}\n")

    async def read(endpoint: str) -> tuple:
        async with Client(endpoint, timeout=5) as client:
            info = await client.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo).read_value()
            (edp,) = await client.get_endpoints()
            return info, edp.Server

    with InThread(ScadaTwin([nodes], name="line9")).start("127.0.0.1", 0) as server:
        info, app = server.call(read(server.twin.endpoint))
    assert (info.ManufacturerName, info.ProductName) == ("restoredrill", "restoredrill SCADA twin")
    assert app.ApplicationUri == "urn:restoredrill:line9" and app.ApplicationName.Text == "line9"
    assert "FreeOpcUa" not in f"{info} {app}" and "freeopcua" not in f"{info} {app}"


def test_identity_reaches_the_emulator_container_command():
    device = ScadaDevice.model_validate(
        {
            "name": "scada01",
            "address": "10.220.0.5",
            "nodes": "n.yaml",
            "identity": IDENTITY.model_dump(),
        }
    )
    argv = device_command(device)
    given = [a.removeprefix("--identity=") for a in argv if a.startswith("--identity=")]
    assert parse_identity(given) == IDENTITY
    assert "--identity=certificate.country=DE" in argv


def test_bad_identity_on_the_command_line_exits_2(tmp_path):
    nodes = tmp_path / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: X, type: Int32}\n")
    cli = Path(sys.executable).parent / "restoredrill"
    proc = subprocess.run(
        [str(cli), "emulate", "scada", str(nodes), "--bind", "127.0.0.1:0"]
        + ["--identity", "certificate.country=Germany"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--identity certificate.country: String should match pattern" in proc.stderr
    with pytest.raises(ValueError, match="write KEY=VALUE"):
        parse_identity(["product_name"])
    with pytest.raises(ValueError, match="--identity colour: Extra inputs"):
        parse_identity(["colour=red"])


# ---------------------------------------------------------------- the bulk build


async def _tree(server: Server, root: ua.NodeId) -> list:
    """Every reference and attribute a client sees under ``root``, as comparable data."""
    out = []
    todo = [server.get_node(root)]
    while todo:
        node = todo.pop()
        refs = await node.get_references(ua.ObjectIds.References, ua.BrowseDirection.Both)
        out.append(
            (
                node.nodeid.to_string(),
                sorted(
                    (
                        r.ReferenceTypeId.to_string(),
                        r.NodeId.to_string(),
                        r.IsForward,
                        r.NodeClass,
                        r.BrowseName.to_string(),
                        r.DisplayName.Text,
                        r.TypeDefinition.to_string(),
                    )
                    for r in refs
                ),
            )
        )
        attrs = [
            ua.AttributeIds.DisplayName,
            ua.AttributeIds.Description,
            ua.AttributeIds.NodeClass,
        ]
        if await node.read_node_class() == ua.NodeClass.Variable:
            attrs += [
                ua.AttributeIds.DataType,
                ua.AttributeIds.AccessLevel,
                ua.AttributeIds.UserAccessLevel,
                ua.AttributeIds.ValueRank,
                ua.AttributeIds.Value,
            ]
        values = await node.read_attributes(attrs)
        out.append([str(v.Value.Value) for v in values])
        todo += await node.get_children()
    return out


def test_the_bulk_build_is_what_asyncuas_per_node_calls_build():
    async def build(bulk: bool) -> list:
        server = Server()
        await server.init()
        idx = await server.register_namespace("urn:test:bulk")
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        folder, sub = ua.NodeId("F", idx), ua.NodeId("F.G", idx)
        values = [
            ua.Variant(1.5, ua.VariantType.Double),
            ua.Variant("x", ua.VariantType.String),
            ua.Variant(True, ua.VariantType.Boolean),
            ua.Variant(7, ua.VariantType.UInt16),
        ]
        if bulk:
            nodes = [
                NewNode(folder, ua.QualifiedName("F", idx), objects),
                NewNode(sub, ua.QualifiedName("G", idx), folder),
            ]
            nodes += [
                NewNode(
                    ua.NodeId(f"F.V{i}", idx),
                    ua.QualifiedName(f"V{i}", idx),
                    sub if i % 2 else folder,
                    v,
                    writable=i < 2,
                )
                for i, v in enumerate(values)
            ]
            await add_nodes(server, nodes)
        else:
            f = await server.nodes.objects.add_folder(folder, ua.QualifiedName("F", idx))
            g = await f.add_folder(sub, ua.QualifiedName("G", idx))
            for i, v in enumerate(values):
                parent = g if i % 2 else f
                var = await parent.add_variable(
                    ua.NodeId(f"F.V{i}", idx), ua.QualifiedName(f"V{i}", idx), v
                )
                if i < 2:
                    await var.set_writable()
        return await _tree(server, folder)

    assert asyncio.run(build(True)) == asyncio.run(build(False))


def test_node_ids_are_not_used_twice():
    async def build() -> None:
        server = Server()
        await server.init()
        idx = await server.register_namespace("urn:test:twice")
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        same = ua.NodeId("A", idx)
        await add_nodes(
            server,
            [
                NewNode(same, ua.QualifiedName("A", idx), objects),
                NewNode(same, ua.QualifiedName("B", idx), objects),
            ],
        )

    with pytest.raises(ValueError, match="is used twice"):
        asyncio.run(build())


def test_a_timestamp_like_asyncuas(tmp_path):
    nodes = tmp_path / "n.yaml"
    nodes.write_text("nodes:\n  - {variable: X, type: Int32, value: 3}\n")

    async def read(endpoint: str):
        async with Client(endpoint, timeout=5) as client:
            node = await client.nodes.objects.get_child("2:X")
            return await node.read_data_value()

    with InThread(ScadaTwin([nodes])).start("127.0.0.1", 0) as server:
        value = server.call(read(server.twin.endpoint))
    assert value.Value.Value == 3 and value.SourceTimestamp is not None
