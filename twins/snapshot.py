"""Protocol snapshots: what an OT endpoint serves, read over its own protocol.

- Modbus: every coil, discrete input and register named in a register map, read in
  batched requests (up to 125 registers or 2000 bits each; a block the device refuses
  is read tag by tag) and decoded as the map says. A tag whose behaviour moves (ramp,
  sine, random walk, counter, toggle) is marked moving, with its declared range.
- OPC UA: the address space under Objects (the standard Server object aside: it holds
  the server's clock and statistics), browsed in batched requests: each node's id,
  browse name, class; for variables their data type, access level and value, read
  several times over a short window so that values that move are seen moving.

An entry is keyed by what a client names it by: ``unit 1 input 0`` (unit, table,
address and bit) or the browse path ``Objects/2:Line1/2:TankLevel``. The functions are
plain asyncio and connect to the address they are given: callers run them inside the
sandbox's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from .registers import BIT_TABLES, FUNCTION_CODES, SIZES, RegisterMap, Tag, decode, reader

MOVING = {"counter", "ramp", "sine", "random_walk", "toggle"}
"""Register-map behaviours whose value changes on its own."""
MAX_REGISTERS, MAX_BITS = 125, 2000
MAX_NODES = 100_000
BATCH = 1000


class Entry(BaseModel):
    """One register or node: its type, attributes and value (range and samples if it moves)."""

    type: str | None = None
    attrs: dict[str, Any] = Field(default_factory=dict)
    value: Any = None
    """The first value read."""
    moving: bool = False
    """It changed while it was read (or its register map says it moves)."""
    low: float | None = None
    high: float | None = None
    """The smallest and largest number read (for a moving number)."""
    range: tuple[float, float] | None = None
    """Where the value must stay, when something states it (a map's min/max, a check)."""
    problem: str | None = None
    """Why it could not be read."""


class Snapshot(BaseModel):
    """What one endpoint served, entry by entry."""

    owner: str
    """``device line1-plc`` or ``system line1-gateway``."""
    protocol: Literal["modbus", "opcua"]
    endpoint: str
    entries: dict[str, Entry] = Field(default_factory=dict)
    error: str | None = None
    """Why it could not be taken at all (no connection, ...)."""
    seconds: float = 0.0


# --------------------------------------------------------------------------- Modbus


def tag_key(tag: Tag) -> str:
    bit = f" bit {tag.bit}" if tag.bit is not None else ""
    return f"unit {tag.unit} {tag.table} {tag.address}{bit}"


async def modbus(
    host: str, port: int, regmap: RegisterMap, *, unit: int | None = None, timeout: float = 5.0
) -> dict[str, Entry]:
    """Read every tag of ``regmap`` from ``host:port`` (``unit``: ask that unit id for all)."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0)
    if not await client.connect():
        raise ConnectionError(f"modbus://{_hostport(host)}:{port}: no connection")
    try:
        out: dict[str, Entry] = {}
        groups: dict[tuple[int, str], list[Tag]] = {}
        for tag in regmap.tags:
            groups.setdefault((tag.unit if unit is None else unit, tag.table), []).append(tag)
        for (device, table), tags in sorted(groups.items()):
            words = await _read_table(client, device, table, tags)
            for tag in tags:
                out[tag_key(tag)] = _entry(regmap, tag, words)
        return out
    finally:
        client.close()


async def _read_table(
    client: Any, unit: int, table: str, tags: Sequence[Tag]
) -> dict[int, int | str]:
    """Address -> word (or bit), or the device's refusal, for every address ``tags`` span."""
    bits = table in BIT_TABLES
    wanted = sorted({a for t in tags for a in t.span})
    out: dict[int, int | str] = {}
    for start, count in _blocks(wanted, MAX_BITS if bits else MAX_REGISTERS):
        found = await _read_words(client, unit, table, start, count)
        if isinstance(found, str):  # refused as a block: tag by tag, to name what fails
            for tag in tags:
                if any(start <= a < start + count for a in tag.span):
                    one = await _read_words(client, unit, table, tag.address, tag.size)
                    for i, a in enumerate(tag.span):
                        out[a] = one if isinstance(one, str) else one[i]
            continue
        for i in range(count):
            out.setdefault(start + i, found[i])
    return out


def _blocks(addresses: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Runs of addresses (gaps up to 8 filled) of at most ``limit`` each: (start, count)."""
    out: list[tuple[int, int]] = []
    for a in addresses:
        if out and a - (out[-1][0] + out[-1][1]) <= 8 and a - out[-1][0] < limit:
            out[-1] = (out[-1][0], a - out[-1][0] + 1)
        else:
            out.append((a, 1))
    return out


async def _read_words(
    client: Any, unit: int, table: str, start: int, count: int
) -> list[int] | str:
    try:
        rsp = await reader(client, table)(start, count=count, device_id=unit)
    except Exception as exc:  # noqa: BLE001 - a refusal or a timeout is the finding
        return f"{type(exc).__name__}: {exc}"
    if rsp.isError():
        code = getattr(rsp, "exception_code", None)
        named = _EXCEPTIONS.get(code, "error") if isinstance(code, int) else "error"
        return f"exception {code} ({named}) for function {FUNCTION_CODES[table]}"
    values = rsp.bits if table in BIT_TABLES else rsp.registers
    return [int(v) for v in values[:count]]


_EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure", 11: "no answer from the unit"}  # fmt: skip


def _entry(regmap: RegisterMap, tag: Tag, words: Mapping[int, int | str]) -> Entry:
    moving = tag.behaviour in MOVING
    entry = Entry(
        type=tag.dtype,
        attrs={"tag": tag.name, "behaviour": tag.behaviour, "writable": tag.is_writable},
        moving=moving,
        range=(tag.min, tag.max) if moving and tag.min is not None and tag.max is not None else None,
    )  # fmt: skip
    raw = [words.get(a, "not read") for a in tag.span]
    problem = next((w for w in raw if isinstance(w, str)), None)
    if problem is not None:
        entry.problem = problem
        return entry
    if tag.table in BIT_TABLES:
        entry.value = bool(raw[0])
    elif tag.bit is not None:
        entry.value = bool((int(raw[0]) >> tag.bit) & 1)
    else:
        entry.value = decode(
            [int(w) for w in raw][: SIZES[tag.dtype]], tag.dtype, *regmap.orders(tag)
        )
    return entry


# --------------------------------------------------------------------------- OPC UA


async def opcua(
    url: str,
    *,
    security: str = "none",
    username: str | None = None,
    password: str | None = None,
    cert_dir: str | None = None,
    timeout: float = 10.0,
    window: float = 3.0,
    interval: float = 0.5,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Entry]:
    """Browse ``url``'s address space and read its variables over ``window`` seconds.

    ``ranges``: nodes (by browse path, NodeId, or browse path without namespace indexes)
    said to move, with where their values must stay (``(None, None)``: anywhere).
    """
    from asyncua import Client

    client = Client(url, timeout=timeout)
    client.session_timeout = 120_000
    if username:
        client.set_user(username)
        client.set_password(password or "")
    if security == "basic256sha256":
        from .opcua_client import secure_client

        await secure_client(client, "snapshot", cert_dir)
    await asyncio.wait_for(client.connect(), timeout)
    try:
        nodes = await _browse_all(client)
        entries = await _describe(client, nodes)
        await _sample(client, nodes, entries, window, interval)
    finally:
        with contextlib.suppress(Exception):  # a dead peer may fail the goodbye
            await asyncio.wait_for(client.disconnect(), timeout)
    ranges = ranges or {}
    for key, entry in entries.items():
        node_id = entry.attrs.get("node_id", "")
        for name in (key, node_id, bare(key)):
            if name in ranges:
                low, high = ranges[name]
                entry.moving = True  # said to move: compared by presence (and range)
                if low is not None or high is not None:
                    entry.range = (
                        -math.inf if low is None else low,
                        math.inf if high is None else high,
                    )
                break
    return entries


class _Node:
    __slots__ = ("id", "path", "cls")

    def __init__(self, nodeid: Any, path: str, cls: Any) -> None:
        self.id, self.path, self.cls = nodeid, path, cls


async def _browse_all(client: Any) -> list[_Node]:
    """Nodes under Objects (hierarchical references, forward), parents first."""
    from asyncua import ua

    objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    seen = {objects, ua.NodeId(ua.ObjectIds.Server)}
    found: list[_Node] = []
    level = [_Node(objects, "Objects", ua.NodeClass.Object)]
    while level:
        following: list[_Node] = []
        for start in range(0, len(level), BATCH):
            part = level[start : start + BATCH]
            for parent, ref in await _browse(client, part):
                if ref.NodeId in seen:
                    continue
                seen.add(ref.NodeId)
                name = ref.BrowseName
                step = (
                    name.Name if name.NamespaceIndex == 0 else f"{name.NamespaceIndex}:{name.Name}"
                )
                node = _Node(ref.NodeId, f"{parent.path}/{step}", ref.NodeClass)
                found.append(node)
                following.append(node)
        if len(found) > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES:,} nodes under Objects: not snapshotted")
        level = following
    return found


async def _browse(client: Any, nodes: Sequence[_Node]) -> list[tuple[_Node, Any]]:
    """Hierarchical forward references of ``nodes`` in one Browse (and BrowseNext) call."""
    from asyncua import ua

    from .opcua_client import browse_forward

    pairs = [(n, n.id) for n in nodes]
    return await browse_forward(client, pairs, ua.ObjectIds.HierarchicalReferences)


async def _read(client: Any, pairs: Sequence[tuple[Any, Any]]) -> list[Any]:
    """DataValues of (NodeId, AttributeId) pairs, in batched Read requests."""
    from asyncua import ua

    out: list[Any] = []
    for start in range(0, len(pairs), BATCH):
        params = ua.ReadParameters()
        for nodeid, attr in pairs[start : start + BATCH]:
            rv = ua.ReadValueId()
            rv.NodeId = nodeid
            rv.AttributeId = attr
            params.NodesToRead.append(rv)
        out += await client.uaclient.read(params)
    return out


async def _describe(client: Any, nodes: Sequence[_Node]) -> dict[str, Entry]:
    """An entry per node: id and class; data type and access level for variables."""
    from asyncua import ua

    entries = {
        n.path: Entry(attrs={"node_id": n.id.to_string(), "class": n.cls.name}) for n in nodes
    }
    variables = [n for n in nodes if n.cls == ua.NodeClass.Variable]
    attrs = (ua.AttributeIds.DataType, ua.AttributeIds.AccessLevel)
    values = await _read(client, [(n.id, a) for n in variables for a in attrs])
    types = {}
    for i, n in enumerate(variables):
        dtype, access = values[2 * i].Value.Value, values[2 * i + 1].Value.Value
        types[n.path] = dtype
        entries[n.path].attrs["access"] = _access(access)
    names = await _type_names(client, {t for t in types.values() if t is not None})
    for path, dtype in types.items():
        entries[path].type = names.get(dtype, str(dtype))
    return entries


async def _type_names(client: Any, ids: Iterable[Any]) -> dict[Any, str]:
    from asyncua import ua

    ids = list(ids)
    out = {}
    unknown = []
    for t in ids:
        if (
            t.NamespaceIndex == 0
            and isinstance(t.Identifier, int)
            and t.Identifier in ua.ObjectIdNames
        ):
            out[t] = ua.ObjectIdNames[t.Identifier]
        else:
            unknown.append(t)
    for t, dv in zip(
        unknown,
        await _read(client, [(t, ua.AttributeIds.BrowseName) for t in unknown]),
        strict=True,
    ):
        name = dv.Value.Value if dv.Value is not None else None
        out[t] = name.Name if name is not None else t.to_string()
    return out


def _access(level: Any) -> str:
    if level is None:
        return "none"
    level = int(level)
    words = [w for bit, w in ((1, "read"), (2, "write"), (4, "history read")) if level & bit]
    return ",".join(words) or "none"


async def _sample(
    client: Any, nodes: Sequence[_Node], entries: dict[str, Entry], window: float, interval: float
) -> None:
    """Read every variable's value now and again every ``interval`` for ``window`` seconds."""
    from asyncua import ua

    variables = [n for n in nodes if n.cls == ua.NodeClass.Variable]
    if not variables:
        return
    pairs = [(n.id, ua.AttributeIds.Value) for n in variables]
    end = time.monotonic() + window
    first = True
    while True:
        values = await _read(client, pairs)
        for n, dv in zip(variables, values, strict=True):
            entry = entries[n.path]
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                if first:
                    entry.problem = dv.StatusCode.name
                continue
            value = plain(dv.Value.Value if dv.Value is not None else None)
            if first:
                entry.value = value
            elif value != entry.value:
                entry.moving = True
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                entry.low = value if entry.low is None else min(entry.low, value)
                entry.high = value if entry.high is None else max(entry.high, value)
        first = False
        if time.monotonic() + interval > end:
            break
        await asyncio.sleep(interval)
    for entry in entries.values():
        if not entry.moving:
            entry.low = entry.high = None


def plain(value: Any) -> Any:
    """A value as JSON holds it (text for what JSON has no type for)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    text = getattr(value, "Text", None)
    if text is not None:
        return text
    return str(value)


def bare(path: str) -> str:
    """A browse path without namespace indexes: ``Objects/2:Line1/2:X`` -> ``Objects/Line1/X``."""
    return "/".join(re.sub(r"^\d+:", "", part) for part in path.split("/"))


def _hostport(host: str) -> str:
    return f"[{host}]" if ":" in host else host
