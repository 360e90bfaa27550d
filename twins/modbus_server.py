"""A Modbus TCP server that answers as the Modbus specification says a device does.

Written here rather than on pymodbus's server, which gives a twin away to the software
that talks to it: its FC 17 and FC 43 answers come from one process-wide identity
("Pymodbus"), an unknown unit id is served by the first device, and a request over the
spec's size gets exception 0x01 (ILLEGAL FUNCTION) instead of 0x03. This one follows the
Modbus Application Protocol V1.1b3 and the Modbus TCP implementation guide:

- checks in the spec's order: function code (0x01), quantity and byte count (0x03),
  address range (0x02), execution;
- per unit id: memory areas (``Memory``), identity objects (FC 43/14, with "more
  follows" when they do not fit one response) and FC 17's report;
- unit ids it does not serve: no reply, the connection closed, answered as the first
  unit, or exception 0x0B (a gateway);
- a response delay with jitter, in request order on each connection;
- a frame it cannot read (length field outside 2..254) closes the connection; a frame
  of another protocol id is dropped. Nothing a client sends can grow its buffer past
  one frame.

The server knows nothing of register maps: ``twins/plc.py`` fills its memory.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSE = object()
"""A handler's answer that closes the connection."""
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 0x01, 0x02, 0x03, 0x04
GATEWAY_TARGET_FAILED = 0x0B
READ_CODES = {1: range(0x00, 0x03), 2: range(0x00, 0x07), 3: range(0x00, 0x100)}
"""FC 43/14 read device id codes: basic, regular, extended (code 4: one object)."""


class Memory:
    """One table's memory area of one unit: values, and per address read/write permission."""

    __slots__ = ("first", "last", "values", "named", "writable", "read_ok", "write_ok")

    def __init__(self, first: int, last: int) -> None:
        size = last - first + 1
        self.first, self.last = first, last
        self.values: list[int] = [0] * size
        self.named = bytearray(size)
        self.writable = bytearray(size)
        self.read_ok = bytearray(size)
        self.write_ok = bytearray(size)

    def seal(self, strict: bool) -> None:
        """Fix permissions once tags are marked: unnamed addresses answer unless ``strict``."""
        open_ = 0 if strict else 1
        self.read_ok = bytearray(1 if n else open_ for n in self.named)
        self.write_ok = bytearray(
            w if n else open_ for n, w in zip(self.named, self.writable, strict=True)
        )

    def offset(self, address: int, count: int) -> int | None:
        """Index of ``address`` if ``count`` values from it lie in the area, else None."""
        if address < self.first or address + count - 1 > self.last:
            return None
        return address - self.first


@dataclass
class Unit:
    """What one unit id serves: four tables (None: no such area), identity, FC 17 report."""

    tables: dict[str, Memory | None]
    objects: dict[int, bytes] = field(default_factory=dict)
    report: bytes = b"\x00\xff"


@dataclass
class Profile:
    """Device-wide behaviour: unknown units, timing, request limits."""

    unknown_units: str = "ignore"
    delay: float = 0.0
    jitter: float = 0.0
    read_bits: int = 2000
    read_registers: int = 125
    write_bits: int = 1968
    write_registers: int = 123
    too_large_reply: bool = True


def _exception(fc: int, code: int) -> bytes:
    return bytes([fc | 0x80, code])


class _TooLarge(Exception):
    """A quantity over the device's limit (answered by the profile's rule)."""


class ModbusServer:
    """Serves ``units`` (unit id -> Unit) on one TCP port."""

    def __init__(self, units: dict[int, Unit], profile: Profile, seed: float | None = None) -> None:
        self.units, self.profile = units, profile
        self.rng = random.Random(seed)
        self.host: str | None = None
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        first = min(units) if units else None
        self._fallback = units.get(first) if first is not None else None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()
        self._server = None

    # ------------------------------------------------------------------ one request

    def answer(self, unit_id: int, pdu: bytes) -> bytes | object | None:
        """The response PDU, None (no reply) or CLOSE."""
        unit = self.units.get(unit_id)
        if unit is None:
            policy = self.profile.unknown_units
            if policy == "exception":
                return _exception(pdu[0], GATEWAY_TARGET_FAILED)
            if policy == "close":
                return CLOSE
            if policy != "answer" or self._fallback is None:
                return None
            unit = self._fallback
        handler = _HANDLERS.get(pdu[0])
        if handler is None:
            return _exception(pdu[0], ILLEGAL_FUNCTION)
        try:
            return handler(self, unit, pdu)
        except _TooLarge:
            return _exception(pdu[0], ILLEGAL_VALUE) if self.profile.too_large_reply else None
        except (struct.error, IndexError):  # a PDU too short for its function
            return _exception(pdu[0], ILLEGAL_VALUE)

    def _limit(self, count: int, limit: int) -> int | None:
        """Exception 0x03 for a quantity of 0; raises _TooLarge past the device's limit."""
        if count < 1:
            return ILLEGAL_VALUE
        if count > limit:
            raise _TooLarge
        return None


# --------------------------------------------------------------------------- handlers


def _read(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    fc = pdu[0]
    address, count = struct.unpack_from(">HH", pdu, 1)
    bits = fc in (1, 2)
    p = server.profile
    bad = server._limit(count, p.read_bits if bits else p.read_registers)
    if bad:
        return _exception(fc, bad)
    memory = unit.tables[{1: "coil", 2: "discrete", 3: "holding", 4: "input"}[fc]]
    at = memory.offset(address, count) if memory else None
    if memory is None or at is None or 0 in memory.read_ok[at : at + count]:
        return _exception(fc, ILLEGAL_ADDRESS)
    values = memory.values[at : at + count]
    if bits:
        packed = _pack_bits(values)
        return bytes([fc, len(packed)]) + packed
    return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *values)


def _writable(unit: Unit, table: str, address: int, count: int) -> tuple[Memory, int] | None:
    memory = unit.tables[table]
    at = memory.offset(address, count) if memory else None
    if memory is None or at is None or 0 in memory.write_ok[at : at + count]:
        return None
    return memory, at


def _write_single(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    fc = pdu[0]
    address, value = struct.unpack_from(">HH", pdu, 1)
    if fc == 5 and value not in (0x0000, 0xFF00):
        return _exception(fc, ILLEGAL_VALUE)
    target = _writable(unit, "coil" if fc == 5 else "holding", address, 1)
    if target is None:
        return _exception(fc, ILLEGAL_ADDRESS)
    memory, at = target
    memory.values[at] = (1 if value else 0) if fc == 5 else value
    return pdu[:5]


def _write_multiple(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    fc = pdu[0]
    address, count, size = struct.unpack_from(">HHB", pdu, 1)
    bits = fc == 15
    p = server.profile
    bad = server._limit(count, p.write_bits if bits else p.write_registers)
    want = (count + 7) // 8 if bits else 2 * count
    if bad or size != want or len(pdu) != 6 + size:
        return _exception(fc, bad or ILLEGAL_VALUE)
    target = _writable(unit, "coil" if bits else "holding", address, count)
    if target is None:
        return _exception(fc, ILLEGAL_ADDRESS)
    memory, at = target
    data = pdu[6:]
    if bits:
        memory.values[at : at + count] = [data[i >> 3] >> (i & 7) & 1 for i in range(count)]
    else:
        memory.values[at : at + count] = list(struct.unpack(f">{count}H", data))
    return pdu[:5]


def _mask_write(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    address, and_mask, or_mask = struct.unpack_from(">HHH", pdu, 1)
    target = _writable(unit, "holding", address, 1)
    if target is None:
        return _exception(22, ILLEGAL_ADDRESS)
    memory, at = target
    memory.values[at] = (memory.values[at] & and_mask) | (or_mask & ~and_mask & 0xFFFF)
    return pdu[:7]


def _read_write(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    read_at, read_count, write_at, write_count, size = struct.unpack_from(">HHHHB", pdu, 1)
    p = server.profile
    bad = server._limit(read_count, p.read_registers) or server._limit(
        write_count, min(p.write_registers, 121)
    )
    if bad or size != 2 * write_count or len(pdu) != 10 + size:
        return _exception(23, bad or ILLEGAL_VALUE)
    memory = unit.tables["holding"]
    at = memory.offset(read_at, read_count) if memory else None
    target = _writable(unit, "holding", write_at, write_count)
    if memory is None or at is None or target is None or 0 in memory.read_ok[at : at + read_count]:
        return _exception(23, ILLEGAL_ADDRESS)
    _, wat = target
    memory.values[wat : wat + write_count] = list(struct.unpack(f">{write_count}H", pdu[10:]))
    values = memory.values[at : at + read_count]
    return bytes([23, 2 * read_count]) + struct.pack(f">{read_count}H", *values)


def _report_server_id(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    return bytes([17, len(unit.report)]) + unit.report


def _device_identification(server: ModbusServer, unit: Unit, pdu: bytes) -> bytes:
    if len(pdu) != 4:
        return _exception(43, ILLEGAL_VALUE)
    if pdu[1] != 0x0E:  # only the Read Device Identification MEI type
        return _exception(43, ILLEGAL_FUNCTION)
    code, object_id = pdu[2], pdu[3]
    objects = unit.objects
    if code == 4:
        if object_id not in objects:
            return _exception(43, ILLEGAL_ADDRESS)
        wanted = [object_id]
    elif code in READ_CODES:
        ids = [i for i in objects if i in READ_CODES[code]]
        if object_id not in ids:
            object_id = 0  # the spec: an unknown start restarts at object 0
        wanted = [i for i in ids if i >= object_id]
    else:
        return _exception(43, ILLEGAL_VALUE)
    return _identification_response(code, objects, wanted)


def _identification_response(code: int, objects: dict[int, bytes], wanted: list[int]) -> bytes:
    extended = any(i >= 0x80 for i in objects)
    regular = any(0x03 <= i <= 0x06 for i in objects)
    conformity = 0x80 | (3 if extended else 2 if regular else 1)
    body, count, next_id, room = b"", 0, 0, 253 - 7
    for oid in wanted:
        item = bytes([oid, len(objects[oid])]) + objects[oid]
        if len(item) > room:
            next_id = oid
            break
        body, count, room = body + item, count + 1, room - len(item)
    more = 0xFF if next_id else 0x00
    return bytes([43, 0x0E, code, conformity, more, next_id, count]) + body


def _pack_bits(values: list[int]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


_HANDLERS: dict[int, Callable[[ModbusServer, Unit, bytes], bytes]] = {
    1: _read,
    2: _read,
    3: _read,
    4: _read,
    5: _write_single,
    6: _write_single,
    15: _write_multiple,
    16: _write_multiple,
    17: _report_server_id,
    22: _mask_write,
    23: _read_write,
    43: _device_identification,
}


# --------------------------------------------------------------------------- the wire


class _Connection(asyncio.Protocol):
    """One client: MBAP frames in, responses out in request order after the delay."""

    def __init__(self, server: ModbusServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.last_send = 0.0
        self.pending: deque[tuple[float, bytes]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 7:
            tid, pid, length = struct.unpack_from(">HHH", buffer)
            if not 2 <= length <= 254:
                self.close()  # not Modbus TCP framing: nothing after it can be trusted
                return
            if len(buffer) < 6 + length:
                return
            unit, pdu = buffer[6], bytes(buffer[7 : 6 + length])
            del buffer[: 6 + length]
            if pid != 0:
                continue
            response = self.server.answer(unit, pdu)
            if response is CLOSE:
                self.close()
                return
            if response is not None:
                assert isinstance(response, bytes)
                header = struct.pack(">HHHB", tid, 0, len(response) + 1, unit)
                self._send(header + response)

    def _send(self, frame: bytes) -> None:
        profile = self.server.profile
        if not (profile.delay or profile.jitter):
            if self.transport is not None:
                self.transport.write(frame)
            return
        loop = asyncio.get_running_loop()
        wait = profile.delay + self.server.rng.uniform(0, profile.jitter)
        self.last_send = max(loop.time() + wait, self.last_send)
        self.pending.append((self.last_send, frame))
        if len(self.pending) == 1:
            loop.call_at(self.last_send, self._write_due)

    def _write_due(self) -> None:
        """Write the responses that are due, in request order; wait for the next one."""
        loop = asyncio.get_running_loop()
        pending = self.pending
        due = True  # the head is what this timer was set for (timers may fire a hair early)
        while pending and (due or pending[0][0] <= loop.time()):
            due = False
            _, frame = pending.popleft()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame)
        if pending:
            loop.call_at(pending[0][0], self._write_due)
