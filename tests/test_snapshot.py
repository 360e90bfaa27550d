"""Protocol snapshots against real servers on 127.0.0.1: the demo PLC twin (pymodbus) and
an asyncua server, read as a client reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from restoredrill.twins import snapshot
from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.registers import load_register_map, validate_register_map

REPO = Path(__file__).resolve().parents[1]
DEMO_MAP = REPO / "config/demo/plc/line1.yaml"


def test_modbus_snapshot_reads_every_tag_of_the_map_decoded():
    regmap = load_register_map(DEMO_MAP)
    with InThread(PlcTwin(regmap, seed=1)).start() as twin:
        entries = asyncio.run(snapshot.modbus("127.0.0.1", twin.twin.port, regmap))
    assert set(entries) == {snapshot.tag_key(t) for t in regmap.tags}
    level = entries["unit 1 input 0"]
    assert level.type == "float32" and level.attrs["tag"] == "tank_level"
    assert level.moving and level.range == (40, 60) and 40 <= level.value <= 60
    assert entries["unit 1 holding 0"].value == pytest.approx(50.0)  # setpoint, initial 50
    assert entries["unit 1 holding 0"].moving is False
    assert entries["unit 1 holding 2"].value == 1450 and entries["unit 1 holding 2"].type == "int16"
    assert entries["unit 1 holding 10 bit 0"].value is True  # a bit field of a status word
    assert entries["unit 1 holding 10 bit 3"].value is False
    assert entries["unit 1 coil 0"].value is True and entries["unit 1 discrete 0"].moving


def test_modbus_snapshot_names_what_the_device_refuses():
    served = validate_register_map({"tags": [{"name": "a", "table": "holding", "address": 0, "initial": 7}]})
    asked = validate_register_map(
        {"tags": [
            {"name": "a", "table": "holding", "address": 0},
            {"name": "far", "table": "holding", "address": 4000},
        ]}
    )  # fmt: skip
    with InThread(PlcTwin(served)).start() as twin:
        entries = asyncio.run(snapshot.modbus("127.0.0.1", twin.twin.port, asked))
    assert entries["unit 1 holding 0"].value == 7 and entries["unit 1 holding 0"].problem is None
    assert "exception 2 (illegal data address)" in entries["unit 1 holding 4000"].problem


@pytest.fixture
def opcua_server():
    """An asyncua server with a folder, a constant, a writable and a moving variable."""
    from asyncua import Server, ua

    loop = asyncio.new_event_loop()
    state: dict = {}

    async def start():
        server = Server()
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0/snap/")
        idx = await server.register_namespace("urn:test:snapshot")
        line = await server.nodes.objects.add_folder(idx, "Line1")
        await line.add_variable(idx, "Site", "demo plant")
        sp = await line.add_variable(idx, "Setpoint", 50.0, varianttype=ua.VariantType.Double)
        await sp.set_writable()
        level = await line.add_variable(idx, "Level", 40.0, varianttype=ua.VariantType.Double)
        await server.start()
        port = server.bserver._server.sockets[0].getsockname()[1]

        async def move():
            v = 40.0
            while True:
                v = 40.0 if v >= 60 else v + 0.5
                await level.write_value(v)
                await asyncio.sleep(0.1)

        state.update(server=server, port=port, mover=loop.create_task(move()))

    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield state["port"]

    async def stop():
        state["mover"].cancel()
        await state["server"].stop()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_opcua_snapshot_browses_types_access_and_sees_what_moves(opcua_server):
    url = f"opc.tcp://127.0.0.1:{opcua_server}/snap/"
    said = {"Objects/2:Line1/2:Level": (40, 60), "Objects/Line1/Site": (None, None)}
    entries = asyncio.run(snapshot.opcua(url, window=1.0, interval=0.2, ranges=said))
    assert "Objects/Server" not in entries  # the server's own object is left out
    folder = entries["Objects/2:Line1"]
    assert folder.attrs["class"] == "Object"
    site = entries["Objects/2:Line1/2:Site"]
    assert (site.type, site.value, site.attrs["access"]) == ("String", "demo plant", "read")
    assert site.moving and site.range is None  # said to move (by its bare path), no range
    sp = entries["Objects/2:Line1/2:Setpoint"]
    assert sp.type == "Double" and sp.attrs["access"] == "read,write" and not sp.moving
    level = entries["Objects/2:Line1/2:Level"]
    assert level.moving and 40 <= level.low < level.high <= 60 and level.range == (40, 60)
    assert level.attrs["node_id"].startswith("ns=2;i=")
