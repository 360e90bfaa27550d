"""Modbus TCP conversations from TCP segments: what each client asked each device, and what
the device answered, as a log per device, unit id, table and address.

Streams are reassembled per direction (in-order bytes, retransmissions dropped, a lost
segment resynchronised at the next frame boundary), cut into MBAP frames, and each
request is paired with its response by transaction id. Which side is the device: the
destination of a connection's SYN when the capture holds it, else a known Modbus port
(502 unless told). Memory stays bounded whatever the capture's size: per register only
the changes are kept (at most ``max_samples``), pending requests and out-of-order
segments are capped.
"""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from .capture import Segment

TABLE_OF = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
MAX_PENDING = 256
MAX_STASH = 64
MAX_BUFFER = 4096


@dataclass
class RegisterLog:
    """What one address was seen to hold, and what clients wrote to it."""

    changes: list[tuple[float, int]] = field(default_factory=list)
    reads: int = 0
    writes: list[tuple[float, int]] = field(default_factory=list)
    before_write: int | None = None
    last: int | None = None

    def read(self, ts: float, value: int, max_samples: int) -> None:
        self.reads += 1
        if value != self.last and len(self.changes) < max_samples:
            self.changes.append((ts, value))
        if self.last is None and not self.writes:
            self.before_write = value
        self.last = value

    def write(self, ts: float, value: int, max_samples: int) -> None:
        if len(self.writes) < max_samples:
            self.writes.append((ts, value))
        self.last = value


@dataclass
class UnitLog:
    """One unit id of one device."""

    registers: dict[tuple[str, int], RegisterLog] = field(default_factory=dict)
    requests: Counter[tuple[int, str, int, int]] = field(default_factory=Counter)
    exceptions: Counter[tuple[int, int, str, int, int]] = field(default_factory=Counter)
    objects: dict[int, bytes] = field(default_factory=dict)
    report: bytes | None = None
    response_times: list[float] = field(default_factory=list)

    def register(self, table: str, address: int) -> RegisterLog:
        key = (table, address)
        log = self.registers.get(key)
        if log is None:
            log = self.registers[key] = RegisterLog()
        return log


@dataclass
class DeviceLog:
    """A Modbus device (its address and port) and its units, as the capture saw them."""

    host: str
    port: int
    units: dict[int, UnitLog] = field(default_factory=dict)
    started: float | None = None
    clients: set[str] = field(default_factory=set)

    def unit(self, unit: int) -> UnitLog:
        if unit not in self.units:
            self.units[unit] = UnitLog()
        return self.units[unit]


@dataclass
class _Stream:
    """One direction of one TCP connection, reassembled."""

    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    stash: dict[int, bytes] = field(default_factory=dict)
    frames: int = 0
    modbus: bool = True
    resync: bool = False


class Conversations:
    """Feeds segments; ``devices`` holds what was learned, by (host, port)."""

    def __init__(self, ports: Iterable[int] = (502,), max_samples: int = 2000) -> None:
        self.ports = set(ports)
        self.max_samples = max_samples
        self.servers: set[tuple[str, int]] = set()
        self.devices: dict[tuple[str, int], DeviceLog] = {}
        self.streams: dict[tuple[str, int, str, int], _Stream] = {}
        self.pending: dict[tuple, dict[int, tuple[float, int, bytes]]] = {}
        self.not_modbus: set[tuple[str, int]] = set()
        self.unanswered = 0

    def feed(self, seg: Segment) -> None:
        if seg.syn:
            self.servers.add((seg.dst, seg.dport))
        to_server = self._direction(seg)
        if to_server is None:
            return
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = _Stream()
        if seg.syn:
            stream.next_seq = (seg.seq + 1) & 0xFFFFFFFF
            return
        if not stream.modbus or not seg.payload:
            return
        server = (seg.dst, seg.dport) if to_server else (seg.src, seg.sport)
        for frame in self._reassemble(stream, seg, server):
            self._frame(seg, to_server, frame)

    def _direction(self, seg: Segment) -> bool | None:
        """True: client to device; False: device to client; None: not Modbus here."""
        if (seg.dst, seg.dport) in self.servers:
            return True
        if (seg.src, seg.sport) in self.servers:
            return False
        if seg.dport in self.ports:
            self.servers.add((seg.dst, seg.dport))
            return True
        if seg.sport in self.ports:
            self.servers.add((seg.src, seg.sport))
            return False
        return None

    # ------------------------------------------------------------------ bytes to frames

    def _reassemble(self, stream: _Stream, seg: Segment, server: tuple[str, int]) -> list[bytes]:
        if stream.next_seq is None:  # joined mid-connection: start at this segment
            stream.next_seq = seg.seq
        ahead = (seg.seq - stream.next_seq) & 0xFFFFFFFF
        if ahead and ahead < 1 << 31:  # a gap: hold until it is filled, or give up on it
            stream.stash[seg.seq] = seg.payload
            if len(stream.stash) <= MAX_STASH:
                return []
            stream.buffer.clear()
            expected = stream.next_seq
            stream.next_seq = min(stream.stash, key=lambda s: (s - expected) & 0xFFFFFFFF)
            stream.resync = True
        else:
            behind = (stream.next_seq - seg.seq) & 0xFFFFFFFF
            fresh = seg.payload[behind:] if ahead else seg.payload
            stream.buffer += fresh
            stream.next_seq = (stream.next_seq + len(fresh)) & 0xFFFFFFFF
        while stream.next_seq in stream.stash:
            payload = stream.stash.pop(stream.next_seq)
            stream.buffer += payload
            stream.next_seq = (stream.next_seq + len(payload)) & 0xFFFFFFFF
        return self._frames(stream, server)

    def _frames(self, stream: _Stream, server: tuple[str, int]) -> list[bytes]:
        out: list[bytes] = []
        buffer = stream.buffer
        while len(buffer) >= 8:
            _, pid, length = struct.unpack_from(">HHH", buffer)
            if pid != 0 or not 2 <= length <= 254:
                if stream.frames == 0 and not stream.resync:
                    stream.modbus = False  # some other protocol on this connection
                    self.not_modbus.add(server)
                buffer.clear()  # lost sync: wait for the next segment's start
                break
            if len(buffer) < 6 + length:
                break
            out.append(bytes(buffer[: 6 + length]))
            del buffer[: 6 + length]
            stream.frames += 1
            stream.resync = False
        if len(buffer) > MAX_BUFFER:
            buffer.clear()
        return out

    # ------------------------------------------------------------------ frames to logs

    def _frame(self, seg: Segment, to_server: bool, frame: bytes) -> None:
        tid, unit, pdu = struct.unpack_from(">H", frame)[0], frame[6], frame[7:]
        client = (seg.src, seg.sport) if to_server else (seg.dst, seg.dport)
        server = (seg.dst, seg.dport) if to_server else (seg.src, seg.sport)
        pending = self.pending.setdefault((client, server), {})
        if to_server:
            if len(pending) >= MAX_PENDING:
                pending.pop(next(iter(pending)))
                self.unanswered += 1
            pending[tid] = (seg.ts, unit, pdu)
            return
        request = pending.pop(tid, None)
        if request is None or request[1] != unit or not pdu or (pdu[0] & 0x7F) != request[2][0]:
            return
        device = self.devices.get(server)
        if device is None:
            device = self.devices[server] = DeviceLog(*server)
        device.clients.add(client[0])
        if device.started is None or request[0] < device.started:
            device.started = request[0]
        log = device.unit(unit)
        if len(log.response_times) < self.max_samples:
            log.response_times.append(seg.ts - request[0])
        with contextlib.suppress(struct.error, IndexError):  # a malformed pair teaches nothing
            interpret(log, request[2], pdu, seg.ts, self.max_samples)


def interpret(log: UnitLog, req: bytes, rsp: bytes, ts: float, max_samples: int) -> None:
    """Record one request and its response in the unit's log."""
    fc = req[0]
    if rsp[0] & 0x80:
        address, count = struct.unpack_from(">HH", req, 1) if len(req) >= 5 else (0, 0)
        log.exceptions[(fc, rsp[1], TABLE_OF.get(fc, "-"), address, count)] += 1
        return
    if fc in TABLE_OF:
        _read(log, req, rsp, ts, max_samples)
    elif fc in (5, 6, 15, 16, 22, 23):
        _write(log, req, ts, max_samples)
        if fc == 23:
            address, count = struct.unpack_from(">HH", req, 1)
            _samples(log, "holding", address, _words(rsp[2:], count), ts, max_samples)
            log.requests[(23, "holding", address, count)] += 1
    elif fc == 17:
        log.report = bytes(rsp[2 : 2 + rsp[1]])
    elif fc == 43 and len(rsp) >= 7 and rsp[1] == 0x0E:
        at = 7
        for _ in range(rsp[6]):
            oid, size = rsp[at], rsp[at + 1]
            log.objects[oid] = bytes(rsp[at + 2 : at + 2 + size])
            at += 2 + size


def _read(log: UnitLog, req: bytes, rsp: bytes, ts: float, max_samples: int) -> None:
    fc = req[0]
    address, count = struct.unpack_from(">HH", req, 1)
    table = TABLE_OF[fc]
    log.requests[(fc, table, address, count)] += 1
    data = rsp[2 : 2 + rsp[1]]
    if fc in (1, 2):
        values = [data[i >> 3] >> (i & 7) & 1 for i in range(min(count, 8 * len(data)))]
    else:
        values = _words(data, count)
    _samples(log, table, address, values, ts, max_samples)


def _write(log: UnitLog, req: bytes, ts: float, max_samples: int) -> None:
    fc = req[0]
    if fc in (5, 6):
        address, value = struct.unpack_from(">HH", req, 1)
        table, values = ("coil", [1 if value else 0]) if fc == 5 else ("holding", [value])
    elif fc == 15:
        address, count = struct.unpack_from(">HH", req, 1)
        table, values = "coil", [req[6 + (i >> 3)] >> (i & 7) & 1 for i in range(count)]
    elif fc == 16:
        address, count = struct.unpack_from(">HH", req, 1)
        table, values = "holding", _words(req[6:], count)
    elif fc == 22:
        address, and_mask, or_mask = struct.unpack_from(">HHH", req, 1)
        current = log.register("holding", address).last or 0
        table, values = "holding", [(current & and_mask) | (or_mask & ~and_mask & 0xFFFF)]
    else:  # 23: the write part
        address, count = struct.unpack_from(">HH", req, 5)
        table, values = "holding", _words(req[10:], count)
    log.requests[(fc, table, address, len(values))] += 1
    for offset, value in enumerate(values):
        log.register(table, address + offset).write(ts, value, max_samples)


def _samples(
    log: UnitLog, table: str, address: int, values: list[int], ts: float, max_samples: int
) -> None:
    for offset, value in enumerate(values):
        log.register(table, address + offset).read(ts, value, max_samples)


def _words(data: bytes, count: int) -> list[int]:
    count = min(count, len(data) // 2)
    return list(struct.unpack_from(f">{count}H", data))
