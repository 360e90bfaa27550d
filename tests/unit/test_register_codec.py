"""The Modbus register codec (twins/registers.py) and how the check batches its reads
(checks/modbus.py ``plan``), on plain values."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restoredrill.checks.modbus import plan
from restoredrill.twins.registers import LIMITS, SIZES, decode, decode_many, encode, fits

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


@pytest.mark.parametrize(
    ("value", "dtype", "byte_order", "word_order", "registers"),
    [
        (72.5, "float32", "big", "big", [0x4291, 0x0000]),
        (72.5, "float32", "big", "little", [0x0000, 0x4291]),
        (72.5, "float32", "little", "big", [0x9142, 0x0000]),
        (72.5, "float32", "little", "little", [0x0000, 0x9142]),
        (-2, "int16", "big", "big", [0xFFFE]),
        (65535, "uint16", "big", "big", [0xFFFF]),
        (0x12345678, "uint32", "big", "big", [0x1234, 0x5678]),
        (0x12345678, "uint32", "big", "little", [0x5678, 0x1234]),
        (-1, "int32", "big", "big", [0xFFFF, 0xFFFF]),
        (True, "bool", "big", "big", [1]),
        (False, "bool", "little", "little", [0]),
    ],
)
def test_known_encodings(
    value: float, dtype: str, byte_order: str, word_order: str, registers: list[int]
) -> None:
    assert encode(value, dtype, byte_order, word_order) == registers
    assert decode(registers, dtype, byte_order, word_order) == value


def test_integers_are_rounded_on_the_way_in() -> None:
    assert encode(41.6, "int16") == [42]
    assert encode(-0.4, "int32") == [0, 0]


def _values(dtype: str) -> st.SearchStrategy:
    if dtype == "bool":
        return st.booleans()
    if dtype == "float32":
        return st.floats(width=32, allow_nan=False)
    low, high = LIMITS[dtype]
    return st.integers(int(low), int(high))


@given(data=st.data())
def test_every_value_round_trips_in_every_order(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(sorted(SIZES)))
    byte_order, word_order = data.draw(st.sampled_from(ORDERS))
    value = data.draw(_values(dtype))
    registers = encode(value, dtype, byte_order, word_order)
    assert len(registers) == SIZES[dtype] and all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, dtype, byte_order, word_order) == value


@given(data=st.data())
def test_decode_many_is_decode_of_each(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(sorted(SIZES)))
    byte_order, word_order = data.draw(st.sampled_from(ORDERS))
    values = data.draw(st.lists(_values(dtype), max_size=20))
    size = SIZES[dtype]
    registers = [r for v in values for r in encode(v, dtype, byte_order, word_order)]
    expected = [
        decode(registers[i * size : (i + 1) * size], dtype, byte_order, word_order)
        for i in range(len(values))
    ]
    assert decode_many(registers, dtype, len(values), byte_order, word_order) == expected


def test_float32_keeps_only_single_precision() -> None:
    (back,) = struct.unpack(">f", struct.pack(">f", 0.1))
    assert decode(encode(0.1, "float32"), "float32") == back != 0.1


@pytest.mark.parametrize(
    ("value", "dtype", "ok"),
    [
        (1, "bool", True),
        (2, "bool", False),
        (-32768, "int16", True),
        (32768, "int16", False),
        (-1, "uint16", False),
        (65535.0, "uint16", True),
        (1.5, "uint16", False),
        (2**32 - 1, "uint32", True),
        (2**32, "uint32", False),
        (True, "int16", False),
        ("7", "int16", False),
        (3.4e38, "float32", True),
        (3.5e38, "float32", False),
        (math.inf, "float32", False),
        (math.nan, "float32", False),
    ],
)
def test_what_fits(value: object, dtype: str, ok: bool) -> None:
    assert fits(value, dtype) is ok


# --------------------------------------------------------------------------- batching


def test_adjacent_and_overlapping_values_share_one_request() -> None:
    spans = [(0, range(0, 2)), (1, range(2, 3)), (2, range(1, 3))]
    assert plan(spans, 125) == [(0, 3, [0, 2, 1])]


def test_a_gap_starts_a_new_request() -> None:
    spans = [(0, range(10, 12)), (1, range(13, 14))]
    assert plan(spans, 125) == [(10, 2, [0]), (13, 1, [1])]


def test_requests_come_in_address_order_and_keep_their_values() -> None:
    spans = [(0, range(50, 51)), (1, range(0, 2)), (2, range(2, 4))]
    assert plan(spans, 125) == [(0, 4, [1, 2]), (50, 1, [0])]


def test_a_request_never_grows_past_the_limit() -> None:
    spans = [(i, range(i, i + 1)) for i in range(300)]
    requests = plan(spans, 125)
    assert [(start, count) for start, count, _ in requests] == [(0, 125), (125, 125), (250, 50)]
    assert sorted(i for _, _, members in requests for i in members) == list(range(300))


def test_a_span_longer_than_the_limit_is_one_request_of_its_own() -> None:
    spans = [(0, range(0, 1)), (1, range(1, 301)), (2, range(301, 302))]
    assert plan(spans, 125) == [(0, 1, [0]), (1, 300, [1]), (301, 1, [2])]


def test_no_values_no_requests() -> None:
    assert plan([], 125) == []
