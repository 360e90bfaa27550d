"""PLC twin: a Modbus TCP server (pymodbus simulator) built from a register map.

Run it: ``python -m restoredrill.twins.plc MAP --bind 0.0.0.0:502``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .devices import parse_bind
from .registers import (
    BIT_TABLES,
    FUNCTION_CODES,
    LIMITS,
    RegisterMap,
    RegisterMapError,
    Tag,
    decode,
    encode,
    load_register_map,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_WRITE_CODES = {5: "coil", 15: "coil", 6: "holding", 16: "holding", 22: "holding", 23: "holding"}


class PlcError(RuntimeError):
    """The PLC twin could not start or serve (e.g. its port is in use)."""


class Behaviour:
    """The value a tag takes over time (elapsed seconds since start)."""

    def __init__(self, tag: Tag, rng: random.Random) -> None:
        self.tag, self.rng = tag, rng
        low, high = LIMITS[tag.dtype]
        self.lo = tag.min if tag.min is not None else (low if tag.dtype != "bool" else 0)
        self.hi = tag.max if tag.max is not None else high
        self.period = tag.period or (60.0 if tag.behaviour in ("ramp", "sine") else 1.0)
        start = tag.initial
        if start is None:
            start = (
                (self.lo + self.hi) / 2
                if tag.behaviour == "random_walk"
                else (tag.min if tag.min is not None and tag.behaviour == "counter" else 0)
            )
        self.start = start
        self.walk = float(start)

    @property
    def dynamic(self) -> bool:
        return self.tag.behaviour not in ("constant", "setpoint")

    def value(self, elapsed: float) -> Any:
        kind, t = self.tag.behaviour, self.tag
        if kind == "toggle":
            return bool(self.start) ^ bool(int(elapsed / self.period) % 2)
        if kind == "counter":
            step = t.step if t.step is not None else 1
            value = self.start + step * int(elapsed / self.period)
            if value > self.hi:
                span = self.hi - self.lo + (0 if t.dtype == "float32" else 1)
                value = self.lo + (value - self.lo) % span
            return value
        if kind == "ramp":
            return self.lo + (self.hi - self.lo) * ((elapsed % self.period) / self.period)
        if kind == "sine":
            mid, amp = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
            return mid + amp * math.sin(2 * math.pi * elapsed / self.period)
        if kind == "random_walk":
            step = t.step if t.step is not None else (self.hi - self.lo) / 50
            self.walk = min(self.hi, max(self.lo, self.walk + self.rng.uniform(-step, step)))
            return self.walk
        return self.start


class PlcTwin:
    """A Modbus TCP PLC emulator; values follow each tag's behaviour."""

    def __init__(
        self, regmap: RegisterMap, *, tick: float | None = None, seed: int | None = None
    ) -> None:
        self.map = regmap
        self.tick = tick or regmap.tick
        self.host: str | None = None
        self.port: int | None = None
        self._rng = random.Random(seed)
        self._tags = {t.name: t for t in regmap.tags}
        self._behaviours = [Behaviour(t, self._rng) for t in regmap.tags]
        self._server: ModbusTcpServer | None = None
        self._ticker: asyncio.Task | None = None
        self._internal = False
        self._started = 0.0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> PlcTwin:
        return cls(load_register_map(path), **kwargs)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 502) -> None:
        """Listen on ``host:port`` (port 0 picks a free one: see ``self.port``)."""
        devices = [self._device(unit) for unit in self.map.units]
        server = ModbusTcpServer(devices, address=(host, port))
        server.context.devices = _Units(server.context.devices)  # pymodbus 3.16 SimCore
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise PlcError(f"cannot listen on {host}:{port}: {_bind_problem(host, port)}") from None
        self._server = server
        self.host, self.port = server.transport.sockets[0].getsockname()[:2]
        self._started = time.monotonic()
        await self._update(0.0, initial=True)
        self._ticker = asyncio.create_task(self._tick_loop(), name="plc-twin-tick")
        log.info(
            "PLC twin %s serving %d tags on %s", self.map.name or "", len(self._tags), self.address
        )

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> PlcTwin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- tags

    async def read_tag(self, name: str) -> Any:
        """The tag's current value, decoded by its type."""
        tag = self._tag(name)
        regs = await self._get(tag.unit, tag.table, tag.address, tag.size)
        if tag.bit is not None:
            return bool(regs[0] >> tag.bit & 1)
        byte_order, word_order = self.map.orders(tag)
        return decode(regs, tag.dtype, byte_order, word_order)

    async def write_tag(self, name: str, value: Any) -> None:
        """Set a tag as the PLC program would (any tag, writable or not)."""
        tag = self._tag(name)
        await self._put(tag, value)

    def _tag(self, name: str) -> Tag:
        try:
            return self._tags[name]
        except KeyError:
            raise KeyError(f"no tag {name!r} in the register map") from None

    async def _get(self, unit: int, table: str, address: int, count: int) -> list[int]:
        if not self._server:
            raise PlcError("the PLC twin is not running")
        values = await self._server.async_getValues(unit, FUNCTION_CODES[table], address, count)
        return [int(v) for v in values]

    async def _put(self, tag: Tag, value: Any) -> None:
        assert self._server, "the PLC twin is not running"
        byte_order, word_order = self.map.orders(tag)
        if tag.table in BIT_TABLES:
            regs: list = [bool(value)]
        elif tag.bit is not None:
            (word,) = await self._get(tag.unit, tag.table, tag.address, 1)
            regs = [word | (1 << tag.bit) if value else word & ~(1 << tag.bit)]
        else:
            low, high = LIMITS[tag.dtype]
            regs = encode(min(high, max(low, value)), tag.dtype, byte_order, word_order)
        self._internal = True
        try:
            await self._server.async_setValues(
                tag.unit, FUNCTION_CODES[tag.table], tag.address, regs
            )
        finally:
            self._internal = False

    async def _update(self, elapsed: float, initial: bool = False) -> None:
        for b in self._behaviours:
            if initial or b.dynamic:
                await self._put(b.tag, b.value(elapsed))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self._update(time.monotonic() - self._started)
            except Exception:  # a bad tick must not kill the server (logged)
                log.exception("PLC twin behaviour update failed")

    # ---------------------------------------------------------------- build

    def _device(self, unit: int) -> SimDevice:
        tags = [t for t in self.map.tags if t.unit == unit]
        image: dict[str, dict[int, Any]] = {t: {} for t in ("coil", "discrete", "holding", "input")}
        writable: dict[str, set[int]] = {t: set() for t in image}
        for tag in tags:
            for addr in tag.span:
                image[tag.table].setdefault(addr, False if tag.table in BIT_TABLES else 0)
                if tag.is_writable:
                    writable[tag.table].add(addr)
        blocks = tuple(
            _blocks(image[t], t in BIT_TABLES) for t in ("coil", "discrete", "holding", "input")
        )
        defined = {t: set(image[t]) for t in BIT_TABLES}
        return SimDevice(id=unit, simdata=blocks, action=self._guard(defined, writable))

    def _guard(self, defined: dict[str, set[int]], writable: dict[str, set[int]]):
        """The request hook: only writable tags accept client writes; bits must exist."""

        async def action(
            fc: int, _start: int, address: int, count: int, _regs: list, values
        ) -> ExcCodes | None:
            if self._internal:
                return None
            if fc in (1, 2) and address not in defined["coil" if fc == 1 else "discrete"]:
                return ExcCodes.ILLEGAL_ADDRESS
            table = _WRITE_CODES.get(fc)
            if table and values is not None:
                allowed = writable[table]
                if any(a not in allowed for a in range(address, address + len(values))):
                    return ExcCodes.ILLEGAL_ADDRESS
            return None

        return action


class _Units(dict):
    """SimCore's device table: an unknown unit id is reported (exception 0x0B), not a KeyError."""

    def __missing__(self, unit: int) -> Any:
        raise NoSuchIdException(f"unit id {unit} is not in the register map")


def _blocks(image: dict[int, Any], bits: bool) -> list[SimData]:
    """Contiguous runs of an address image as SimData blocks (one placeholder if empty)."""
    if not image:
        if bits:
            return [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
        return [SimData(address=0, count=1, datatype=DataType.INVALID)]
    out: list[SimData] = []
    run: list[int] = []
    for addr in sorted(image):
        if run and addr != run[-1] + 1:
            out.append(_block(run, image, bits))
            run = []
        run.append(addr)
    out.append(_block(run, image, bits))
    return out


def _block(run: list[int], image: dict[int, Any], bits: bool) -> SimData:
    values = [image[a] for a in run]
    if bits:
        return SimData(address=run[0], values=[bool(v) for v in values], datatype=DataType.BITS)
    return SimData(address=run[0], values=[int(v) for v in values], datatype=DataType.REGISTERS)


def _bind_problem(host: str, port: int) -> str:
    """Why binding failed, in words (pymodbus only says it could not listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == 98:
                return "the port is already in use"
            return exc.strerror or str(exc)
    return "the server failed to listen"


# ---------------------------------------------------------------- running


class InThread:
    """Runs a twin on its own event loop in a daemon thread, for sync callers."""

    def __init__(self, twin: Any) -> None:
        self.twin = twin
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="twin-loop")

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 30) -> InThread:
        self._thread.start()
        self.call(self.twin.start(host, port), timeout)
        return self

    def call(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self, timeout: float = 10) -> None:
        try:
            self.call(self.twin.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self.loop.close()

    def __enter__(self) -> InThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, wait for SIGINT/SIGTERM, stop cleanly."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await start()
        await done.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await stop()


def run_plc(
    map_path: str | Path, bind: str = "127.0.0.1:5020", *, tick: float | None = None
) -> None:
    """Serve the PLC twin until SIGINT/SIGTERM (blocking). Raises RegisterMapError / PlcError."""
    host, port = parse_bind(bind, 502)
    twin = PlcTwin.from_file(map_path, tick=tick)

    async def start() -> None:
        await twin.start(host, port)
        print(
            f"PLC twin {twin.map.name or Path(map_path).name}: {len(twin.map.tags)} tags, "
            f"units {twin.map.units}, listening on {twin.address} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(serve_until_signalled(start, twin.stop))
    print("PLC twin stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m restoredrill.twins.plc",
        description="Serve a PLC twin (Modbus TCP) from a register map.",
    )
    parser.add_argument("map", help="register map, YAML or CSV")
    parser.add_argument(
        "--bind", default="127.0.0.1:5020", help="HOST:PORT (default 127.0.0.1:5020)"
    )
    parser.add_argument(
        "--tick", type=float, default=None, help="seconds between behaviour updates"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_plc(args.map, args.bind, tick=args.tick)
    except (RegisterMapError, PlcError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
