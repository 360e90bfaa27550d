"""Demo plant OPC UA gateway: polls its PLC over Modbus TCP, serves the tags over OPC UA,
and writes setpoints that OPC UA clients change back to the PLC.

Its configuration (/etc/gateway/gateway.ini) names the PLC by its production address.
"""

import asyncio
import configparser
import logging

from asyncua import Server, ua
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
    pushed = {}
    async with server:
        print(f"gateway: PLC {PLC['host']}:{PLC['port']}, OPC UA {CONF['opcua']['endpoint']}", flush=True)
        while True:
            if not client.connected:
                await client.connect()
            try:
                for name, (node, table, address, kind, writable) in nodes.items():
                    dtype = getattr(client.DATATYPE, TYPES[kind][0])
                    current = await node.read_value()
                    if writable and name in pushed and current != pushed[name]:
                        regs = client.convert_to_registers(current, dtype)
                        await client.write_registers(address, regs, device_id=int(PLC["unit"]))
                    read = (client.read_input_registers if table == "input"
                            else client.read_holding_registers)
                    rsp = await read(address, count=TYPES[kind][1], device_id=int(PLC["unit"]))
                    if rsp.isError():
                        continue
                    value = client.convert_from_registers(rsp.registers, dtype)
                    await node.write_value(ua.Variant(value, TYPES[kind][2]))
                    pushed[name] = value
            except Exception as exc:  # noqa: BLE001 - keep polling, as a gateway does
                print(f"gateway: poll failed: {exc}", flush=True)
                client.close()
            await asyncio.sleep(float(PLC.get("poll", "0.5")))


if __name__ == "__main__":
    asyncio.run(main())
