"""SCADA variables that follow PLC tags: polled over Modbus, written back when a client
writes them. The SCADA twin owns one bridge; the bridge knows nothing of OPC UA servers
beyond the ``publish`` callback it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from pymodbus.client import AsyncModbusTcpClient

from restoredrill.errors import InputError

from .devices import parse_bind
from .plc import PlcError
from .registers import BIT_TABLES, RegisterMap, Tag, decode, encode, load_register_map, reader

log = logging.getLogger(__name__)


@dataclass
class PlcLink:
    """Where a bound PLC twin listens, and its register map (to find and decode tags)."""

    host: str
    port: int
    map: RegisterMap

    @classmethod
    def parse(cls, text: str) -> tuple[str, PlcLink]:
        """``NAME=HOST:PORT@MAP`` as given on the command line."""
        name, _, rest = text.partition("=")
        where, _, map_path = rest.partition("@")
        if not (name and where and map_path):
            raise InputError(f"--plc {text!r}: write NAME=HOST:PORT@MAP")
        host, port = parse_bind(where, 502)
        return name, cls(host, port, load_register_map(map_path))


@dataclass
class Bound:
    """One variable bound to one tag, with the last value published."""

    nodeid: ua.NodeId
    vtype: ua.VariantType
    plc: str
    tag: Tag
    last: Any = None
    status_ok: bool = True


@dataclass
class _Poller:
    link: PlcLink
    bound: list[Bound] = field(default_factory=list)
    client: AsyncModbusTcpClient | None = None


Publish = Callable[[Bound, Any, int], Awaitable[None]]


class PlcBridge:
    """Polls each PLC every ``poll`` seconds and publishes changed values; forwards writes."""

    def __init__(
        self, plcs: Mapping[str, PlcLink], poll: float = 0.2, modbus_timeout: float = 2.0
    ) -> None:
        self.plcs = dict(plcs)
        self.poll, self.modbus_timeout = poll, modbus_timeout
        self.bound: dict[ua.NodeId, Bound] = {}
        self._pollers: dict[str, _Poller] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._publish: Publish | None = None

    def bind(self, nodeid: ua.NodeId, vtype: ua.VariantType, plc: str, tag: str) -> None:
        bound = Bound(nodeid, vtype, plc, self.plcs[plc].map.tag(tag))
        self._pollers.setdefault(plc, _Poller(self.plcs[plc])).bound.append(bound)
        self.bound[nodeid] = bound

    async def start(self, publish: Publish) -> None:
        """Poll once (values are there before the first client), then every ``poll`` s."""
        self._publish = publish
        if self._pollers:
            await self._poll_once()
            self._stopping = False
            self._task = asyncio.create_task(self._poll_loop(), name="scada-twin-poll")

    async def stop(self) -> None:
        if self._task:
            self._stopping = True
            # a client library may swallow one cancellation mid-request: repeat until done
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._task.result()
            self._task = None
        for poller in self._pollers.values():
            if poller.client:
                poller.client.close()
                poller.client = None

    # ---------------------------------------------------------------- reading

    async def _client(self, poller: _Poller) -> AsyncModbusTcpClient:
        if poller.client is None or not poller.client.connected:
            if poller.client:
                poller.client.close()
            client = AsyncModbusTcpClient(
                poller.link.host,
                port=poller.link.port,
                timeout=self.modbus_timeout,
                retries=0,
                reconnect_delay=0,
            )
            if not await client.connect():
                client.close()
                raise ConnectionError(f"PLC {poller.link.host}:{poller.link.port} is unreachable")
            poller.client = client
        return poller.client

    async def _poll_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll)
            await self._poll_once()

    async def _poll_once(self) -> None:
        assert self._publish is not None
        for name, poller in self._pollers.items():
            try:
                await self._poll_plc(poller)
            except Exception as exc:  # noqa: BLE001 - a PLC outage shows as Bad status, not a crash
                log.warning("polling PLC %s failed: %s", name, exc)
                if poller.client:
                    poller.client.close()
                    poller.client = None
                for b in poller.bound:
                    if b.status_ok:
                        b.status_ok = False
                        await self._publish(b, b.last, ua.StatusCodes.BadNoCommunication)

    async def _poll_plc(self, poller: _Poller) -> None:
        assert self._publish is not None
        client = await self._client(poller)
        regmap = poller.link.map
        groups: dict[tuple[int, str], list[Bound]] = {}
        for b in poller.bound:
            groups.setdefault((b.tag.unit, b.tag.table), []).append(b)
        for (unit, table), items in groups.items():
            limit = 2000 if table in BIT_TABLES else 125
            for start, count in ranges([b.tag.span for b in items], limit):
                words = await read(client, unit, table, start, count)
                for b in items:
                    if start <= b.tag.address < start + count:
                        raw = words[b.tag.address - start : b.tag.address - start + b.tag.size]
                        value = _value(b.tag, raw, regmap)
                        if value != b.last or not b.status_ok:
                            b.last, b.status_ok = value, True
                            await self._publish(b, value, ua.StatusCodes.Good)

    # ---------------------------------------------------------------- writing

    async def written(self, nodeid: ua.NodeId, value: Any) -> None:
        """A client wrote a bound variable: write its PLC register (logged if refused)."""
        b = self.bound.get(nodeid)
        if b is None:
            return
        try:
            await self._write_plc(b, value)
            b.last = value
        except Exception as exc:  # noqa: BLE001 - log and let the next poll show the truth
            log.warning("writing %s to PLC %s tag %s failed: %s", value, b.plc, b.tag.name, exc)

    async def _write_plc(self, b: Bound, value: Any) -> None:
        poller = self._pollers[b.plc]
        client = await self._client(poller)
        tag, unit = b.tag, b.tag.unit
        if tag.table == "coil":
            _ok(await client.write_coil(tag.address, bool(value), device_id=unit), tag)
            return
        if tag.table != "holding":
            raise PlcError(
                f"tag {tag.name} is in the {tag.table} table, which clients cannot write"
            )
        if tag.bit is not None:
            (word,) = await read(client, unit, "holding", tag.address, 1)
            regs = [word | (1 << tag.bit) if value else word & ~(1 << tag.bit)]
        else:
            regs = encode(value, tag.dtype, *poller.link.map.orders(tag))
        _ok(await client.write_registers(tag.address, regs, device_id=unit), tag)


def _value(tag: Tag, raw: list[int], regmap: RegisterMap) -> Any:
    if tag.bit is not None:
        return bool(raw[0] >> tag.bit & 1)
    return decode(raw, tag.dtype, *regmap.orders(tag))


async def read(
    client: AsyncModbusTcpClient, unit: int, table: str, start: int, count: int
) -> list[int]:
    rsp = await reader(client, table)(start, count=count, device_id=unit)
    if rsp.isError():
        code = getattr(rsp, "exception_code", "?")
        raise PlcError(
            f"{table} {start}..{start + count - 1} of unit {unit}: Modbus exception {code}"
        )
    return [int(v) for v in (rsp.bits if table in BIT_TABLES else rsp.registers)[:count]]


def _ok(rsp: Any, tag: Tag) -> None:
    if rsp.isError():
        code = getattr(rsp, "exception_code", "?")
        raise PlcError(f"write to tag {tag.name} refused: Modbus exception {code}")


def ranges(spans: Iterable[range], limit: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) read ranges covering ``spans``, each at most ``limit`` long."""
    out: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda r: r.start):
        if out and span.start <= out[-1][0] + out[-1][1] and span.stop - out[-1][0] <= limit:
            start, count = out[-1]
            out[-1] = (start, max(count, span.stop - start))
        else:
            out.append((span.start, len(span)))
    return out
