"""Demo plant OPC UA gateway: polls its PLC over Modbus TCP, serves the tags over OPC UA,
and writes setpoints that OPC UA clients change back to the PLC.

A client's write is queued and forwarded to the PLC on the next poll, so it reaches the
PLC within a poll cycle and is never overwritten by a poll that was under way. Its
configuration (/etc/gateway/gateway.ini) names the PLC by its production address.
"""

import asyncio
import configparser
import logging

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from pymodbus.client import AsyncModbusTcpClient

logging.basicConfig(level=logging.WARNING)
CONF = configparser.ConfigParser()
CONF.optionxform = str  # tag names keep their case
CONF.read("/etc/gateway/gateway.ini")
PLC = CONF["plc"]
TYPES = {"float32": ("FLOAT32", 2, ua.VariantType.Double), "uint16": ("UINT16", 1, ua.VariantType.UInt16)}


def tags():
    for name, spec in CONF["tags"].items():
        table, address, kind, *mode = spec.split(":")
        yield name, table, int(address), kind, "rw" in mode


async def main():
    server = Server()
    await server.init()
    server.set_endpoint(CONF["opcua"]["endpoint"])
    server.set_server_name("line1 gateway")
    idx = await server.register_namespace(CONF["opcua"]["namespace"])
    folder = await server.nodes.objects.add_folder(idx, "Line1")
    nodes = {}
    for name, table, address, kind, writable in tags():
        node = await folder.add_variable(idx, name, 0.0 if kind == "float32" else 0,
                                         varianttype=TYPES[kind][2])
        if writable:
            await node.set_writable()
        nodes[name] = (node, table, address, kind, writable)
    client = AsyncModbusTcpClient(PLC["host"], port=int(PLC["port"]), timeout=2)
    written = {}  # tag name -> the value a client wrote, to forward on the next poll

    async def on_write(event, _dispatcher):
        if not event.is_external:  # the gateway's own updates
            return
        for item, status in zip(event.request_params.NodesToWrite, event.response_params or []):
            for name, (node, *_rest, writable) in nodes.items():
                if writable and item.NodeId == node.nodeid and status.is_good():
                    written[name] = item.Value.Value.Value

    server.subscribe_server_callback(CallbackType.PostWrite, on_write)
    async with server:
        print(f"gateway: PLC {PLC['host']}:{PLC['port']}, OPC UA {CONF['opcua']['endpoint']}", flush=True)
        while True:
            if not client.connected:
                await client.connect()
            try:
                for name, (node, table, address, kind, writable) in nodes.items():
                    dtype = getattr(client.DATATYPE, TYPES[kind][0])
                    if name in written:  # a newer write, come meanwhile, stays queued
                        regs = client.convert_to_registers(written.pop(name), dtype)
                        await client.write_registers(address, regs, device_id=int(PLC["unit"]))
                    read = (client.read_input_registers if table == "input"
                            else client.read_holding_registers)
                    rsp = await read(address, count=TYPES[kind][1], device_id=int(PLC["unit"]))
                    if rsp.isError():
                        continue
                    value = client.convert_from_registers(rsp.registers, dtype)
                    if name not in written:  # a write come meanwhile is shown on the next poll
                        await node.write_value(ua.Variant(value, TYPES[kind][2]))
            except Exception as exc:  # noqa: BLE001 - keep polling, as a gateway does
                print(f"gateway: poll failed: {exc}", flush=True)
                client.close()
            await asyncio.sleep(float(PLC.get("poll", "0.5")))


if __name__ == "__main__":
    asyncio.run(main())
