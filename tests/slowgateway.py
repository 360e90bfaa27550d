"""A slow OPC UA gateway in front of a PLC twin, for tests of written-through values.

Its variables show what the PLC holds, like a gateway that reads through:

- ``Gw/Setpoint`` shows the PLC's ``level_setpoint`` (holding 0, float32), polled every
  0.1 s. A client's write is accepted, the variable shows the PLC's value again before
  the write is answered, and the value reaches the PLC only ``delay`` seconds later (a
  gateway with a slow write cycle): read back at once, the old value is seen.
- ``Gw/Lost`` shows the same register, but writes to it are accepted and never forwarded.
- ``Gw/Slow`` changes once every ``step`` seconds; ``Gw/Still`` never changes.

Everything listens on 127.0.0.1 only; run it with ``twins.plc.InThread``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from pymodbus.client import AsyncModbusTcpClient

from restoredrill.twins.registers import decode, encode


class SlowGateway:
    def __init__(self, plc_port: int, delay: float = 1.5, step: float = 2.0) -> None:
        self.plc_port, self.delay, self.step = plc_port, delay, step
        self.server: Server | None = None
        self.port: int | None = None
        self.nodes: dict[str, Any] = {}
        self.plc_value = 0.0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._client: AsyncModbusTcpClient | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{host}:{port}/")
        idx = await server.register_namespace("urn:restoredrill:test:slow-gateway")
        folder = await server.nodes.objects.add_folder(idx, "Gw")
        double, uint = ua.VariantType.Double, ua.VariantType.UInt32
        for name, value, vtype in [
            ("Setpoint", 0.0, double),
            ("Lost", 0.0, double),
            ("Slow", 0, uint),
            ("Still", 7, uint),
        ]:
            self.nodes[name] = await folder.add_variable(idx, name, value, varianttype=vtype)
        for name in ("Setpoint", "Lost"):
            await self.nodes[name].set_writable()
        self._client = AsyncModbusTcpClient("127.0.0.1", port=self.plc_port, timeout=2)
        if not await self._client.connect():
            raise RuntimeError(f"slow gateway: no PLC at 127.0.0.1:{self.plc_port}")
        await server.start()
        self.server, self.port = server, server.bserver.port
        await self._poll_once()
        server.subscribe_server_callback(CallbackType.PostWrite, self._written)
        self._spawn(self._poll())
        self._spawn(self._move())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._client:
            self._client.close()
        if self.server:
            await self.server.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _written(self, event: Any, _dispatcher: Any) -> None:
        """A client wrote: forward Setpoint writes later; show the PLC's value at once."""
        if not event.is_external:
            return
        for item in event.request_params.NodesToWrite:
            if item.NodeId == self.nodes["Setpoint"].nodeid:
                self._spawn(self._forward(float(item.Value.Value.Value)))
        await self._show()

    async def _forward(self, value: float) -> None:
        await asyncio.sleep(self.delay)
        async with self._lock:
            await self._client.write_registers(0, encode(value, "float32"), device_id=1)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            await self._poll_once()

    async def _poll_once(self) -> None:
        async with self._lock:
            rsp = await self._client.read_holding_registers(0, count=2, device_id=1)
        self.plc_value = decode(rsp.registers, "float32")
        await self._show()

    async def _show(self) -> None:
        for name in ("Setpoint", "Lost"):
            await self.server.write_attribute_value(
                self.nodes[name].nodeid,
                ua.DataValue(ua.Variant(self.plc_value, ua.VariantType.Double)),
            )

    async def _move(self) -> None:
        count = 0
        while True:
            await asyncio.sleep(self.step)
            count += 1
            await self.nodes["Slow"].write_value(ua.Variant(count, ua.VariantType.UInt32))
