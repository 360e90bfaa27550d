"""``modbus``: read (and write) a device's coils and registers, decoded by type, and compare.

Reads are batched: one request per run of up to 125 registers (2000 bits), many values
per request. A value may be compared with an exact value or a range, be required to
change (proof that something polls or writes it), or be written and read back; moving
and written-through values are judged within a stated window (see ``checks.expect``).

Example (a ``checks:`` entry of a system in site.yaml)::

    - kind: modbus
      name: line 1 PLC
      host: 10.77.0.100            # default: the system's own address
      values:
        - {name: tank_level, table: input, address: 0, type: float32, min: 40, max: 60}
        - {name: pump_starts, table: input, address: 5, type: uint32, changes: true}
        - {name: level_setpoint, table: holding, address: 0, type: float32, write: 55.5}
        - {name: setpoint from SCADA, table: holding, address: 2, type: int16, equals: 1450,
           settle: 10s}
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar

from pydantic import Field, model_validator

from restoredrill.twins.registers import (
    BIT_TABLES,
    SIZES,
    DataType,
    Order,
    Table,
    decode_many,
    encode,
    fits,
    reader,
)

from .base import CheckError, CheckResult, SandboxGuard, Target, error_result
from .expect import Expectation, Sampling, results, watch

T = TypeVar("T")
MAX_REGISTERS, MAX_BITS = 125, 2000
EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond (unknown unit id?)",
}


class ModbusValue(Expectation):
    """One value (or ``count`` consecutive values) to read, optionally after writing it."""

    name: str | None = None
    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType | None = Field(
        None, description="default: bool for coils/discrete, uint16 otherwise"
    )
    count: int = Field(1, ge=1, le=65536, description="consecutive values of this type")
    bit: int | None = Field(None, ge=0, le=15, description="read bit N of the register")
    byte_order: Order | None = None
    word_order: Order | None = None
    write: Any = Field(None, description="write this first (coil or holding), then read it back")

    @property
    def dtype(self) -> str:
        return self.type or (
            "bool" if self.table in BIT_TABLES or self.bit is not None else "uint16"
        )

    @property
    def span(self) -> range:
        size = 1 if self.table in BIT_TABLES or self.bit is not None else SIZES[self.dtype]
        return range(self.address, self.address + size * self.count)

    def label(self) -> str:
        kind = (
            ""
            if self.table in BIT_TABLES
            else f" {self.dtype}" + (f" bit {self.bit}" if self.bit is not None else "")
        )
        many = f" x{self.count}" if self.count > 1 else ""
        return self.name or f"{self.table} {self.address}{kind}{many}"

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _check(self) -> ModbusValue:
        if self.table in BIT_TABLES and self.dtype != "bool":
            raise ValueError(f"a {self.table} is one bit: type must be bool, not {self.dtype}")
        if self.table not in BIT_TABLES and self.dtype == "bool" and self.bit is None:
            raise ValueError("a bool in a register needs bit: 0..15")
        if self.span.stop - 1 > 65535:
            raise ValueError("address + size runs past 65535")
        if self.write is not None:
            if self.table not in ("coil", "holding"):
                raise ValueError(f"write: a {self.table} cannot be written by a client")
            if not all(fits(v, self.dtype) for v in _listify(self.write)):
                raise ValueError(f"write: {self.write!r} does not fit {self.dtype}")
        return self


class ModbusCheck(Sampling):
    """Read (and optionally write) values of one Modbus TCP device over one connection."""

    kind: Literal["modbus"] = "modbus"
    host: str | None = Field(None, description="an IP address; default: the target's address")
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    byte_order: Order = "big"
    word_order: Order = "big"
    values: list[ModbusValue] = Field(min_length=1)

    def default_name(self) -> str:
        return f"modbus {self.host or '{address}'}:{self.port} unit {self.unit}"


Spec = ModbusCheck


def run(spec: ModbusCheck, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Connect once, write, read in batches, sample changing values; never hangs."""
    started = time.perf_counter()
    try:
        host = spec.host or target.address
        if not host:
            raise CheckError(f"{target.name} has no address: give the modbus check a host")
        if not spec.name:
            spec = spec.model_copy(update={"name": f"modbus {host}:{spec.port} unit {spec.unit}"})
        guard.allow(host)
        limit = spec.timeout * 2 + spec.longest_window(spec.values)  # connect, last read
        return run_sync(lambda: asyncio.wait_for(_check(spec, host, started), limit))
    except TimeoutError:
        return [error_result(spec, f"no answer within {spec.timeout:g}s", started)]
    except Exception as exc:  # noqa: BLE001 - a check reports, never raises
        return [error_result(spec, exc, started)]


async def _check(spec: ModbusCheck, host: str, started: float) -> list[CheckResult]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(
        host, port=spec.port, timeout=spec.timeout, retries=0, reconnect_delay=0
    )
    try:
        if not await asyncio.wait_for(client.connect(), spec.timeout):
            from .tcp import probe

            why = probe(host, spec.port, min(spec.timeout, 2.0))
            raise CheckError(
                f"modbus {host}:{spec.port} is unreachable ({why if why != 'open' else 'connection failed'})"
            )
        return await _evaluate(spec, client, started)
    finally:
        client.close()


async def _evaluate(spec: ModbusCheck, client: Any, started: float) -> list[CheckResult]:
    """Write what is to be written, then read and judge every value (see ``checks.expect``)."""
    problems: dict[int, str] = {}
    for i, item in enumerate(spec.values):
        if item.write is not None and (problem := await _write(spec, client, item)):
            problems[i] = f"write refused: {problem}"
    wanted = [i for i in range(len(spec.values)) if i not in problems]
    seen, failures = await watch(
        spec, spec.values, wanted, lambda indexes: read_values(client, spec, indexes)
    )
    named = [(f"{spec.label()}: {item.label()}", item) for item in spec.values]
    return results(spec, named, seen, problems | failures, started)


async def _write(spec: ModbusCheck, client: Any, item: ModbusValue) -> str | None:
    values = _listify(item.write)
    if item.table == "coil":
        rsp = await client.write_coils(item.address, [bool(v) for v in values], device_id=spec.unit)
    elif item.bit is not None:
        words, problem = await _read_block(client, spec.unit, "holding", item.address, 1)
        if problem:
            return problem
        word = words[0] | (1 << item.bit) if values[0] else words[0] & ~(1 << item.bit)
        rsp = await client.write_registers(item.address, [word], device_id=spec.unit)
    else:
        orders = (item.byte_order or spec.byte_order, item.word_order or spec.word_order)
        regs = [r for v in values for r in encode(v, item.dtype, *orders)]
        rsp = await client.write_registers(item.address, regs, device_id=spec.unit)
    return _exception(rsp)


async def read_values(
    client: Any, spec: ModbusCheck, indexes: Sequence[int]
) -> tuple[dict[int, Any], dict[int, str]]:
    """Read the given values in as few requests as possible: (values, problems) by index."""
    values: dict[int, Any] = {}
    problems: dict[int, str] = {}
    by_table: dict[str, list[int]] = {}
    for i in indexes:
        by_table.setdefault(spec.values[i].table, []).append(i)
    for table, items in by_table.items():
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        for start, count, members in plan(((i, spec.values[i].span) for i in items), limit):
            words, problem = await _read_block(client, spec.unit, table, start, count)
            if problem and len(members) > 1:  # find which value the device refuses
                for i in members:
                    single = spec.values[i].span
                    words_i, problem_i = await _read_block(
                        client, spec.unit, table, single.start, len(single)
                    )
                    _store(spec, i, single.start, words_i, problem_i, values, problems)
                continue
            for i in members:
                _store(spec, i, start, words, problem, values, problems)
    return values, problems


def _store(
    spec: ModbusCheck,
    i: int,
    start: int,
    words: list[int],
    problem: str | None,
    values: dict[int, Any],
    problems: dict[int, str],
) -> None:
    item = spec.values[i]
    if problem:
        problems[i] = (
            f"{item.table} {item.span.start}..{item.span.stop - 1} of unit {spec.unit}: {problem}"
        )
        return
    raw = words[item.span.start - start : item.span.stop - start]
    if item.bit is not None:
        decoded: list[Any] = [bool(w >> item.bit & 1) for w in raw]
    else:
        orders = (item.byte_order or spec.byte_order, item.word_order or spec.word_order)
        decoded = decode_many(raw, item.dtype, item.count, *orders)
    values[i] = decoded[0] if item.count == 1 else decoded


def plan(spans: Sequence[tuple[int, range]] | Any, limit: int) -> list[tuple[int, int, list[int]]]:
    """Group (index, span) into read requests: (start, count, indexes), count <= limit.

    Adjacent or overlapping spans share a request; a span longer than ``limit`` is split
    over several requests (its value is decoded once all are read).
    """
    out: list[tuple[int, int, list[int]]] = []
    for i, span in sorted(spans, key=lambda s: s[1].start):
        if (
            out
            and span.start <= out[-1][0] + out[-1][1]
            and span.stop - out[-1][0] <= max(limit, len(span))
        ):
            start, count, members = out[-1]
            out[-1] = (start, max(count, span.stop - start), [*members, i])
        else:
            out.append((span.start, len(span), [i]))
    return out


async def _read_block(
    client: Any, unit: int, table: str, start: int, count: int
) -> tuple[list[int], str | None]:
    """Read ``count`` registers/bits from ``start``, in requests of at most 125 / 2000."""
    from pymodbus.exceptions import ModbusIOException

    call = reader(client, table)
    limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
    words: list[int] = []
    for offset in range(0, count, limit):
        n = min(limit, count - offset)
        try:
            rsp = await call(start + offset, count=n, device_id=unit)
        except ModbusIOException:  # a device stays silent for a unit id it does not have
            return [], f"no answer from unit {unit} (a device answers only its own unit ids)"
        problem = _exception(rsp)
        if problem:
            return [], problem
        words += rsp.bits[:n] if table in BIT_TABLES else rsp.registers
    return words, None


def _exception(rsp: Any) -> str | None:
    if not rsp.isError():
        return None
    code: int | None = getattr(rsp, "exception_code", None)
    meaning = EXCEPTIONS.get(code, "unknown") if code is not None else "unknown"
    return f"the device answered exception {code} ({meaning})"


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, also when this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=worker, name="check-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
