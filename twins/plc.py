"""PLC twin: a Modbus TCP device built from a register map.

Each unit id the map names gets its memory areas (``device_profile``), its identity and
its tags' values, which follow their behaviours (``behaviours``); the server
(``modbus_server``) answers as the Modbus specification says a device does.

Run it: ``python -m restoredrill.twins.plc MAP --bind 0.0.0.0:502``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from restoredrill.errors import RestoredrillError

from .base import TwinError
from .behaviours import Behaviour
from .device_profile import OBJECT_IDS, TABLES, Identity, server_id_bytes
from .devices import parse_bind
from .modbus_server import Memory, ModbusServer, Profile, Unit
from .registers import (
    BIT_TABLES,
    LIMITS,
    RegisterMap,
    Tag,
    decode,
    encode,
    load_register_map,
)
from .running import InThread, serve_until_signalled

__all__ = ["InThread", "PlcError", "PlcTwin", "main", "run_plc", "serve_until_signalled"]

log = logging.getLogger(__name__)


class PlcError(TwinError):
    """The PLC twin could not start or serve (e.g. its port is in use)."""


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
        self._dynamic = [b for b in self._behaviours if b.dynamic]
        self.units = {unit: build_unit(regmap, unit) for unit in regmap.unit_ids}
        self._server: ModbusServer | None = None
        self._ticker: asyncio.Task | None = None
        self._started = 0.0
        for b in self._behaviours:
            self._put(b.tag, b.value(0.0))

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> PlcTwin:
        return cls(load_register_map(path), **kwargs)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 502) -> None:
        """Listen on ``host:port`` (port 0 picks a free one: see ``self.port``)."""
        server = ModbusServer(self.units, profile(self.map), seed=self._rng.random())
        try:
            await server.start(host, port)
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == 98 else exc.strerror or exc
            raise PlcError(f"cannot listen on {host}:{port}: {reason}") from None
        self._server = server
        self.host, self.port = server.host, server.port
        self._started = time.monotonic()
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
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> PlcTwin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- tags

    async def read_tag(self, name: str) -> Any:
        """The tag's current value, decoded by its type."""
        tag = self._tag(name)
        regs = self._get(tag)
        if tag.bit is not None:
            return bool(regs[0] >> tag.bit & 1)
        if tag.dtype == "bool":
            return bool(regs[0])
        byte_order, word_order = self.map.orders(tag)
        return decode(regs, tag.dtype, byte_order, word_order)

    async def read_raw(self, unit: int, table: str, address: int, count: int) -> list[int]:
        """Raw registers (or bits, 0/1) of a unit's table, named or not."""
        memory = self.units[unit].tables[table]
        at = memory.offset(address, count) if memory else None
        if memory is None or at is None:
            raise KeyError(f"{table} {address}..{address + count - 1} of unit {unit}: no such area")
        return memory.values[at : at + count]

    async def write_tag(self, name: str, value: Any) -> None:
        """Set a tag as the PLC program would (any tag, writable or not)."""
        self._put(self._tag(name), value)

    def _tag(self, name: str) -> Tag:
        try:
            return self._tags[name]
        except KeyError:
            raise KeyError(f"no tag {name!r} in the register map") from None

    def _memory(self, tag: Tag) -> tuple[Memory, int]:
        memory = self.units[tag.unit].tables[tag.table]
        assert memory is not None, f"{tag.table} of unit {tag.unit} has no area"
        return memory, tag.address - memory.first

    def _get(self, tag: Tag) -> list[int]:
        memory, at = self._memory(tag)
        return memory.values[at : at + tag.size]

    def _put(self, tag: Tag, value: Any) -> None:
        memory, at = self._memory(tag)
        if tag.table in BIT_TABLES:
            memory.values[at] = 1 if value else 0
        elif tag.bit is not None:
            word = memory.values[at]
            memory.values[at] = word | (1 << tag.bit) if value else word & ~(1 << tag.bit)
        else:
            low, high = LIMITS[tag.dtype]
            regs = encode(min(high, max(low, value)), tag.dtype, *self.map.orders(tag))
            memory.values[at : at + len(regs)] = regs

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            elapsed = time.monotonic() - self._started
            try:
                for b in self._dynamic:
                    self._put(b.tag, b.value(elapsed))
            except Exception:  # a bad tick must not kill the server (logged)
                log.exception("PLC twin behaviour update failed")


# ---------------------------------------------------------------- build


def build_unit(regmap: RegisterMap, unit: int) -> Unit:
    """One unit's memory areas (tags marked in them), identity objects and FC 17 report."""
    strict = regmap.unit_strict(unit)
    tags = [t for t in regmap.tags if t.unit == unit]
    tables = {
        table: _table(regmap, unit, table, [t for t in tags if t.table == table], strict)
        for table in TABLES
    }
    identity = regmap.unit_identity(unit)
    return Unit(tables, identity_objects(identity), report(identity, unit))


def _table(
    regmap: RegisterMap, unit: int, table: str, tags: list[Tag], strict: bool
) -> Memory | None:
    """A table's memory: its area (strict: just the named span), tags marked in it."""
    if strict:
        if not tags:
            return None
        memory = Memory(min(t.address for t in tags), max(t.address + t.size - 1 for t in tags))
    else:
        area = regmap.area(unit, table)
        if area is None:
            return None
        memory = Memory(area.first, area.last)
    for tag in tags:
        at = tag.address - memory.first
        memory.named[at : at + tag.size] = b"\x01" * tag.size
        if tag.is_writable:
            memory.writable[at : at + tag.size] = b"\x01" * tag.size
    memory.seal(strict)
    return memory


def identity_objects(identity: Identity) -> dict[int, bytes]:
    """FC 43/14 objects by id: basic ones always, others when not empty."""
    objects = {}
    for name, oid in OBJECT_IDS.items():
        text = getattr(identity, name) or ""
        if text or oid <= 0x02:
            objects[oid] = text.encode()
    for oid in sorted(identity.extended):
        objects[oid] = identity.extended[oid].encode()
    return objects


def report(identity: Identity, unit: int) -> bytes:
    """FC 17's data: server id, run indicator, additional data (the product name)."""
    server_id = server_id_bytes(identity.server_id if identity.server_id is not None else unit)
    run = b"\xff" if identity.run_indicator is not False else b"\x00"
    extra = identity.additional_data
    if extra is None:
        extra = identity.product_name or ""
    return server_id + run + extra.encode()


def profile(regmap: RegisterMap) -> Profile:
    r = regmap.requests
    return Profile(
        unknown_units=regmap.unknown_unit_policy,
        delay=regmap.timing.delay.total_seconds(),
        jitter=regmap.timing.jitter.total_seconds(),
        read_bits=r.read_bits,
        read_registers=r.read_registers,
        write_bits=r.write_bits,
        write_registers=r.write_registers,
        too_large_reply=r.too_large == "exception",
    )


# ---------------------------------------------------------------- running


def run_plc(
    map_path: str | Path, bind: str = "127.0.0.1:5020", *, tick: float | None = None
) -> None:
    """Serve the PLC twin until SIGINT/SIGTERM (blocking). Raises RegisterMapError / PlcError."""
    host, port = parse_bind(bind, 502)
    twin = PlcTwin.from_file(map_path, tick=tick)

    async def start() -> None:
        await twin.start(host, port)
        gc.freeze()  # the map and memory live as long as the process: never walk them again
        print(
            f"PLC twin {twin.map.name or Path(map_path).name}: {len(twin.map.tags)} tags, "
            f"units {twin.map.unit_ids}, listening on {twin.address} (Ctrl-C stops)",
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
    except RestoredrillError as exc:  # a bad map or bind address, a taken port, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
