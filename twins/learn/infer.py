"""A register map from what a device was seen to do: tags, behaviours, guessed data types,
identity, memory areas, response timing.

Per register (or pair of registers, when they decode as one 32-bit value):

- written by a client -> ``setpoint`` (initial: the value read before the first write);
- one value throughout -> ``constant``;
- a bit flipping at a steady pace -> ``toggle``;
- an integer rising by one step at a steady pace (wrapping) -> ``counter``;
- a value rising at a steady rate, falling back to its start -> ``ramp``;
- anything else -> ``replay`` of the observed series, looped.

Data types: two registers always read together whose values decode as plausible float32
numbers (finite, 1e-3..1e7 or 0) are guessed ``float32``; a high word that moves by one as
the low word wraps, ``int32``/``uint32``. Guesses say so in the tag's description.
"""

from __future__ import annotations

import math
import statistics
import struct
from collections.abc import Sequence
from typing import Any

from ..registers import Order, decode
from .modbus_traffic import DeviceLog, RegisterLog, UnitLog

PREFIX = {"coil": "c", "discrete": "d", "holding": "hr", "input": "ir"}
TABLE_ORDER = ("coil", "discrete", "holding", "input")
SERIES_BUDGET = 200_000
"""Replayed samples in one map at most (a map is a config file: 16 MiB, 1,000,000 values)."""
Series = list[tuple[float, Any]]


def infer_map(device: DeviceLog, name: str) -> dict[str, Any]:
    """The register map (plain data, as its YAML holds it) of one device."""
    started = device.started or 0.0
    tags: list[dict[str, Any]] = []
    units: dict[str, Any] = {}
    several = len([u for u in device.units.values() if u.registers]) > 1
    for unit_id in sorted(device.units):
        log = device.units[unit_id]
        if not log.registers:
            continue
        prefix = f"u{unit_id}_" if several else ""
        tags += unit_tags(log, unit_id, prefix, started)
        area = learned_areas(log, tags, unit_id)
        if area:
            units[str(unit_id)] = {"areas": area}
    _fit_budget(tags)
    data: dict[str, Any] = {"name": name, "tick": 0.1}
    identity = learned_identity(device)
    if identity:
        data["identity"] = identity
    if any(code in (0x0A, 0x0B) for u in device.units.values() for (_, code, *_) in u.exceptions):
        data["gateway"] = True
    timing = learned_timing(device)
    if timing:
        data["timing"] = timing
    if units:
        data["units"] = units
    data["tags"] = tags
    return data


def unit_tags(log: UnitLog, unit: int, prefix: str, started: float) -> list[dict[str, Any]]:
    """The unit's tags, table by table, address by address (pairs where guessed)."""
    out: list[dict[str, Any]] = []
    for table in TABLE_ORDER:
        addresses = sorted(a for t, a in log.registers if t == table)
        pairs = guess_pairs(log, table, addresses) if table in ("holding", "input") else {}
        paired = {a + 1 for a in pairs}
        for address in addresses:
            if address in paired:
                continue
            base = {"name": f"{prefix}{PREFIX[table]}{address}", "unit": unit, "table": table}
            base["address"] = address
            if address in pairs:
                dtype, word_order, series, note = pairs[address]
                written = _written(log, table, address) or _written(log, table, address + 1)
                tag = {**base, "type": dtype, **_orders(word_order)}
                tag |= behaviour(series, dtype, started, written, before=series[0][1])
                tag["description"] = f"guessed {dtype}: {note}"
            else:
                register = log.registers[(table, address)]
                dtype = "bool" if table in ("coil", "discrete") else "uint16"
                tag = {**base, **({} if dtype == "bool" else {"type": "uint16"})}
                tag |= behaviour(
                    _series(register), dtype, started, bool(register.writes), register.before_write
                )
            out.append(tag)
    return out


# --------------------------------------------------------------------------- behaviours


def behaviour(
    series: Series, dtype: str, started: float, written: bool, before: Any = None
) -> dict[str, Any]:
    """The behaviour fields that reproduce ``series`` (times absolute)."""
    values = [v for _, v in series]
    if written:
        first = before if before is not None else values[0]
        return {"behaviour": "setpoint", "initial": _shown(first, dtype)}
    if len(set(values)) == 1:
        return {"initial": _shown(values[0], dtype)}
    times = [t - started for t, _ in series]
    if dtype == "bool":
        found = _toggle(times, values)
    elif dtype == "float32":
        found = _ramp(times, values)
    else:
        found = _counter(times, values, dtype) or _ramp(times, values)
    if found:
        return found
    return {"behaviour": "replay", "series": _replayed(times, values, dtype)}


def _replayed(times: list[float], values: list[Any], dtype: str) -> list[list[Any]]:
    """[[seconds, value], ...] with times in milliseconds, strictly rising."""
    out: list[list[Any]] = []
    for t, v in zip(times, values, strict=True):
        when = round(max(0.0, t), 3)
        if out and when <= out[-1][0]:
            out[-1][1] = _shown(v, dtype)  # two changes within a millisecond: keep the later
        else:
            out.append([when, _shown(v, dtype)])
    return out


def _toggle(times: list[float], values: list[Any]) -> dict[str, Any] | None:
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if len(steps) < 3 or not _steady(steps):
        return None
    return {
        "behaviour": "toggle",
        "initial": bool(values[0]),
        "period": round(statistics.median(steps), 3),
    }


def _counter(times: list[float], values: list[int], dtype: str) -> dict[str, Any] | None:
    rises = [b - a for a, b in zip(values, values[1:], strict=False) if b > a]
    drops = sum(1 for a, b in zip(values, values[1:], strict=False) if b < a)
    if len(rises) < 3 or drops > len(rises) // 4:
        return None
    step = statistics.mode(rises)
    if sum(1 for r in rises if r == step) < 0.8 * len(rises):
        return None
    period = step / _rate(times, values)
    found: dict[str, Any] = {"behaviour": "counter", "initial": values[0], "step": step}
    found["period"] = round(period, 3)
    if drops:
        found |= {"min": min(values), "max": max(values)}
    return found


def _ramp(times: list[float], values: list[float]) -> dict[str, Any] | None:
    rates, falls = [], 0
    for i in range(1, len(values)):
        rise, span = values[i] - values[i - 1], times[i] - times[i - 1]
        if rise > 0 and span > 0:
            rates.append(rise / span)
        elif rise < 0:
            falls += 1
    if len(rates) < 3 or falls > max(1, len(rates) // 10) or not _steady(rates, 0.35):
        return None
    low, high = min(values), max(values)
    period = (high - low) / _rate(times, values)
    return {
        "behaviour": "ramp",
        "min": _round(low),
        "max": _round(high),
        "period": round(period, 3),
    }


def _rate(times: Sequence[float], values: Sequence[float]) -> float:
    """How fast the value rises: every rise over the time those rises took (falls left out)."""
    rise = span = 0.0
    for i in range(1, len(values)):
        if values[i] > values[i - 1]:
            rise += values[i] - values[i - 1]
            span += times[i] - times[i - 1]
    return rise / span if span > 0 else 1.0


def _steady(numbers: Sequence[float], spread: float = 0.25) -> bool:
    """Whether the numbers keep to their median (coefficient of variation below ``spread``)."""
    middle = statistics.median(numbers)
    return middle > 0 and statistics.pstdev(numbers) / middle < spread


# --------------------------------------------------------------------------- data types


def guess_pairs(log: UnitLog, table: str, addresses: list[int]) -> dict[int, tuple]:
    """Registers read as pairs, by first address: (type, word order, series, note).

    Each candidate pair is scored (big word order, values with few digits, both words
    moving when the value moves); the best set of pairs that do not overlap wins.
    """
    candidates = {}
    for address in addresses:
        found = guess_pair(log, table, address)
        if found is not None:
            candidates[address] = found
    best: dict[int, tuple[float, list[int]]] = {}  # address -> best score from here on
    for address in sorted(set(addresses) | {a + 1 for a in addresses}, reverse=True):
        skip = best.get(address + 1, (0.0, []))
        take: tuple[float, list[int]] = (0.0, [])
        if address in candidates:
            rest = best.get(address + 2, (0.0, []))
            take = (candidates[address][0] + rest[0], [address, *rest[1]])
        best[address] = max(skip, take, key=lambda option: option[0])
    chosen = best.get(min(addresses), (0.0, []))[1] if addresses else []
    return {address: candidates[address][1:] for address in chosen}


def guess_pair(log: UnitLog, table: str, address: int) -> tuple | None:
    """(score, type, word order, series, note) if ``address`` and the next decode as one value."""
    first, second = log.registers.get((table, address)), log.registers.get((table, address + 1))
    if first is None or second is None or not _together(log, table, address):
        return None
    words = _merged(first, second)
    if not any(hi or lo for _, hi, lo in words):
        return None
    both_move = len({hi for _, hi, _ in words}) > 1 and len({lo for _, _, lo in words}) > 1
    orders: tuple[tuple[Order, float], ...] = (("big", 2.0), ("little", 1.0))
    for order, bonus in orders:
        floats = [decode([hi, lo], "float32", "big", order) for _, hi, lo in words]
        moving = len(set(floats)) > 1
        if not all(_plausible(v) for v in floats) or (moving and not both_move):
            continue
        short = all(len(repr(_round(v)).rstrip("0").rstrip(".")) <= 7 for v in floats)
        score = bonus + (2.0 if short else 0.0) + (1.0 if moving else 0.0)
        series = [(t, v) for (t, _, _), v in zip(words, floats, strict=True)]
        note = f"{_round(min(floats))}..{_round(max(floats))}, word order {order}"
        return score, "float32", order, series, note
    ints = [(hi << 16 | lo) for _, hi, lo in words]
    if both_move and all(abs(b - a) < 0x10000 for a, b in zip(ints, ints[1:], strict=False)):
        highs = {hi for _, hi, _ in words}
        dtype = "int32" if 0xFFFF in highs and highs <= {0, 0xFFFF} else "uint32"
        values = [decode([hi, lo], dtype) for _, hi, lo in words]
        series = [(t, v) for (t, _, _), v in zip(words, values, strict=True)]
        return 3.0, dtype, "big", series, "the high word carries as the low word wraps"
    return None


def _together(log: UnitLog, table: str, address: int) -> bool:
    """Every request touching one of the two registers touches both."""
    seen = False
    for _, t, start, count in log.requests:
        if t != table:
            continue
        has = [start <= a < start + count for a in (address, address + 1)]
        if has[0] != has[1]:
            return False
        seen = seen or has[0]
    return seen


def _merged(first: RegisterLog, second: RegisterLog) -> list[tuple[float, int, int]]:
    """The pair's values over time (changes of either word)."""
    events = sorted(
        [(t, 0, v) for t, v in first.changes + first.writes]
        + [(t, 1, v) for t, v in second.changes + second.writes]
    )
    out: list[tuple[float, int, int]] = []
    current = [
        first.changes[0][1] if first.changes else 0,
        second.changes[0][1] if second.changes else 0,
    ]
    for t, which, value in events:
        current[which] = value
        if out and out[-1][0] == t:
            out[-1] = (t, current[0], current[1])
        else:
            out.append((t, current[0], current[1]))
    return out


def _plausible(value: float) -> bool:
    return math.isfinite(value) and (value == 0 or 1e-3 <= abs(value) <= 1e7)


# --------------------------------------------------------------------------- device level


def learned_identity(device: DeviceLog) -> dict[str, Any]:
    """Identity seen in FC 43/14 and FC 17 answers (the first unit that gave one)."""
    names = ["vendor", "product_code", "revision", "vendor_url", "product_name", "model_name"]
    names.append("user_application_name")
    out: dict[str, Any] = {}
    for log in device.units.values():
        for oid, raw in sorted(log.objects.items()):
            text = _text(raw, 244)
            if oid < len(names):
                out.setdefault(names[oid], text)
            elif oid >= 0x80:
                out.setdefault("extended", {})[str(oid)] = text
        if log.report and len(log.report) >= 2 and "server_id" not in out:
            out["server_id"] = log.report[0]
            out["run_indicator"] = log.report[1] == 0xFF
            out["additional_data"] = _text(log.report[2:], 248)
    return out


def learned_areas(log: UnitLog, tags: list[dict[str, Any]], unit: int) -> dict[str, str]:
    """An area ending below an address the device refused (exception 0x02) past its tags."""
    out: dict[str, str] = {}
    for (_, code, table, address, _count), _n in log.exceptions.items():
        if code != 2 or table not in PREFIX:
            continue
        named = [
            t["address"] + (1 if t.get("type") in ("float32", "int32", "uint32") else 0)
            for t in tags
            if t["unit"] == unit and t["table"] == table
        ]
        if named and address > max(named):
            last = min(int(out.get(table, "0-65535").split("-")[1]), address - 1)
            out[table] = f"0-{last}"
    return out


def learned_timing(device: DeviceLog) -> dict[str, str]:
    times = sorted(t for u in device.units.values() for t in u.response_times if t >= 0)
    if len(times) < 10:
        return {}
    low, high = times[len(times) // 10], times[len(times) * 9 // 10]
    if high < 0.001:
        return {}
    return {"delay": f"{low * 1000:.0f}ms", "jitter": f"{(high - low) * 1000:.0f}ms"}


# --------------------------------------------------------------------------- helpers


def _text(raw: bytes, limit: int) -> str:
    """Bytes a device sent, as text that fits ``limit`` bytes of UTF-8 again."""
    text = raw.decode("utf-8", "replace")
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def _series(register: RegisterLog) -> Series:
    return list(register.changes) or [(t, v) for t, v in register.writes[:1]]


def _written(log: UnitLog, table: str, address: int) -> bool:
    register = log.registers.get((table, address))
    return bool(register and register.writes)


def _orders(word_order: str) -> dict[str, str]:
    return {} if word_order == "big" else {"word_order": word_order}


def _shown(value: Any, dtype: str) -> Any:
    if dtype == "bool":
        return bool(value)
    return _round(value) if dtype == "float32" else int(value)


def _round(value: float) -> float:
    """A float32 as the shortest decimal that reads back as the same float32."""
    if not isinstance(value, float):
        return value
    for digits in range(6, 10):
        text = float(f"{value:.{digits}g}")
        if struct.pack(">f", text) == struct.pack(">f", value):
            return text
    return value


def _fit_budget(tags: list[dict[str, Any]]) -> None:
    """Thin replayed series evenly so the whole map stays within ``SERIES_BUDGET``."""
    replays = [t for t in tags if t.get("behaviour") == "replay"]
    total = sum(len(t["series"]) for t in replays)
    if total <= SERIES_BUDGET:
        return
    each = max(50, SERIES_BUDGET // len(replays))
    for tag in replays:
        series = tag["series"]
        if len(series) > each:
            stride = len(series) / each
            tag["series"] = [series[int(i * stride)] for i in range(each)]
