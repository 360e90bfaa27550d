"""Modbus TCP conversations rebuilt from TCP segments: split, joined, repeated, reordered
and lost segments (synthetic segments: the byte streams a capture holds)."""

from __future__ import annotations

import struct

from restoredrill.twins.learn.capture import Segment
from restoredrill.twins.learn.modbus_traffic import Conversations

CLIENT, SERVER = ("10.0.0.20", 40000), ("10.0.0.5", 502)


def request(tid: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, address, count)


def response(tid: int, values: list[int]) -> bytes:
    body = bytes([3, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, 1) + body


class Wire:
    """Both directions of one connection, with sequence numbers."""

    def __init__(self, talks: Conversations, syn: bool = True) -> None:
        self.talks, self.seq = talks, {True: 1000, False: 5000}
        self.ts = 0.0
        if syn:
            self.send(True, b"", syn=True)

    def segment(self, to_server: bool, payload: bytes, seq: int, syn: bool = False) -> Segment:
        src, dst = (CLIENT, SERVER) if to_server else (SERVER, CLIENT)
        self.ts += 0.01
        return Segment(self.ts, *src, *dst, seq, syn, False, payload)

    def send(self, to_server: bool, payload: bytes, syn: bool = False) -> None:
        self.talks.feed(self.segment(to_server, payload, self.seq[to_server], syn))
        self.seq[to_server] += len(payload) + (1 if syn else 0)


def holding(talks: Conversations, address: int) -> list[int]:
    device = talks.devices[SERVER]
    return [v for _, v in device.units[1].registers[("holding", address)].changes]


def test_frames_split_and_joined_across_segments():
    talks = Conversations()
    wire = Wire(talks)
    req = request(1, 0, 2) + request(2, 0, 2)  # two requests in one segment
    wire.send(True, req)
    rsp = response(1, [7, 8]) + response(2, [9, 8])
    wire.send(False, rsp[:5])  # a response split in the middle of its header
    wire.send(False, rsp[5:])
    assert holding(talks, 0) == [7, 9] and holding(talks, 1) == [8]


def test_retransmitted_and_reordered_segments_count_once():
    talks = Conversations()
    wire = Wire(talks)
    wire.send(True, request(1, 0, 1))
    first, second = response(1, [5]), request(2, 0, 1)
    start = wire.seq[False]
    talks.feed(wire.segment(False, first, start))
    talks.feed(wire.segment(False, first, start))  # a retransmission
    wire.seq[False] += len(first)
    wire.send(True, second)
    late = response(2, [6])
    talks.feed(wire.segment(False, late[4:], wire.seq[False] + 4))  # arrives first
    talks.feed(wire.segment(False, late[:4], wire.seq[False]))
    device = talks.devices[SERVER]
    assert holding(talks, 0) == [5, 6] and device.units[1].registers[("holding", 0)].reads == 2


def test_a_lost_segment_resynchronises_at_the_next_frame():
    talks = Conversations()
    wire = Wire(talks)
    for tid in range(1, 80):
        wire.send(True, request(tid, 0, 1))
        if tid == 3:
            wire.seq[False] += 11  # the capture missed this response
        else:
            wire.send(False, response(tid, [tid]))
    values = holding(talks, 0)
    assert values[:2] == [1, 2] and values[-1] == 79 and 3 not in values


def test_joined_mid_connection_on_port_502():
    talks = Conversations()
    wire = Wire(talks, syn=False)
    wire.send(True, request(9, 4, 1))
    wire.send(False, response(9, [44]))
    assert holding(talks, 4) == [44]


def test_another_protocol_is_not_modbus():
    talks = Conversations()
    wire = Wire(talks)
    wire.send(True, b"GET / HTTP/1.0\r\n\r\n")
    assert not talks.devices and talks.not_modbus == {SERVER}
