"""Snapshots of a run's OT endpoints, taken inside its sandbox before it closes.

Which endpoints: every emulated device of the run (a PLC's register map over Modbus, a
SCADA device's address space over OPC UA), and every endpoint a system serves itself,
as its checks name it (an ``opcua`` or ``modbus`` check without a host, or with the
system's own address): its OPC UA address space, and the registers of its PLC devices'
maps read through it. The ranges its checks state for values (``min``/``max``) and the
ranges of PLC tags that SCADA nodes follow are handed to the comparison.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from restoredrill.checks.modbus import run_sync
from restoredrill.twins import snapshot
from restoredrill.twins.devices import PlcDevice, ScadaDevice
from restoredrill.twins.registers import RegisterMap, load_register_map, validate_register_map
from restoredrill.twins.snapshot import Snapshot

from .inventory import LoadedSite, System

LIMIT = 120.0
"""Seconds one snapshot may take."""


def take(ctx: Any, systems: Iterable[str], window: float = 3.0) -> list[Snapshot]:
    """Snapshots of the running ``systems`` of run ``ctx`` and of its devices."""
    loaded: LoadedSite = ctx.loaded
    plans: list[tuple[str, str, Any]] = []
    for name in systems:
        job = ctx.kept.get(name)
        twin = getattr(job, "twin", None)
        if twin is None or not twin.address:
            continue
        plans += _system_plans(loaded, loaded.site.system(name), twin.address, window)
    devices = {d.name: d for d in loaded.site.devices}
    for twin in ctx.devices[0]:
        spec = devices.get(twin.name.removeprefix("device-"))
        if spec is not None:
            plans += _device_plans(loaded, spec, window)
    if not plans:
        return []
    # threads started inside the sandbox's network stay in it
    with ctx.sandbox.inside(), ThreadPoolExecutor(min(8, len(plans)), "snapshot") as pool:
        return list(pool.map(lambda plan: _take(*plan), plans))


def _take(owner: str, endpoint: str, factory: Any) -> Snapshot:
    protocol = "opcua" if endpoint.startswith("opc.tcp") else "modbus"
    started = time.perf_counter()
    shot = Snapshot(owner=owner, protocol=protocol, endpoint=endpoint)
    try:
        shot.entries = run_sync(lambda: asyncio.wait_for(factory(), LIMIT))
    except TimeoutError:
        shot.error = f"not done within {LIMIT:g}s"
    except Exception as exc:  # noqa: BLE001 - a snapshot that cannot be taken is a finding
        shot.error = f"{type(exc).__name__}: {exc}".strip()
    shot.seconds = round(time.perf_counter() - started, 3)
    return shot


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _own(check: Any, address: str) -> bool:
    return check.host in (None, "", address, "{address}")


def _system_plans(loaded: LoadedSite, system: System, address: str, window: float) -> list:
    plans = []
    for check in system.checks:
        if check.kind == "opcua" and _own(check, address):
            url = f"opc.tcp://{_host(address)}:{check.port}/{check.path.lstrip('/')}"
            ranges = {  # the values its checks judge by range or change
                v.node: (v.min, v.max)
                for c in system.checks
                if c.kind == "opcua" and c.port == check.port and c.path == check.path
                for v in c.values
                if v.min is not None or v.max is not None or v.changes
            }
            plans.append((f"system {system.name} opcua {check.port}/{check.path.lstrip('/')}", url,
                          _opcua(url, check, ranges, window)))  # fmt: skip
        elif check.kind == "modbus" and _own(check, address):
            for name, regmap in _maps_of(loaded, system, check):
                url = f"modbus://{_host(address)}:{check.port}"
                plans.append((f"system {system.name} modbus {check.port} unit {check.unit} ({name})",
                              url, _modbus(address, check.port, regmap, check.unit)))  # fmt: skip
    unique: dict[str, Any] = {}
    for owner, url, factory in plans:
        unique.setdefault(owner, (owner, url, factory))
    return list(unique.values())


def _maps_of(loaded: LoadedSite, system: System, check: Any) -> list[tuple[str, RegisterMap]]:
    """The register maps of the system's PLC devices (else the check's own values)."""
    devices = {d.name: d for d in loaded.site.devices}
    maps = [
        (f"map of {n}", load_register_map(loaded.resolve(devices[n].map)))
        for n in system.devices
        if isinstance(devices.get(n), PlcDevice)
    ]
    if maps:
        return maps
    tags = [
        {"name": v.name or f"{v.table}_{v.address}", "table": v.table, "address": v.address,
         "type": v.dtype, "bit": v.bit, "unit": check.unit,
         "byte_order": v.byte_order or check.byte_order, "word_order": v.word_order or check.word_order}
        for v in check.values
        if v.count == 1
    ]  # fmt: skip
    return (
        [(f"values of check {check.label()}", validate_register_map({"tags": tags}))]
        if tags
        else []
    )


def _device_plans(loaded: LoadedSite, spec: PlcDevice | ScadaDevice, window: float) -> list:
    address = str(spec.address)
    if isinstance(spec, PlcDevice):
        regmap = load_register_map(loaded.resolve(spec.map))
        url = f"modbus://{_host(address)}:{spec.port}"
        return [(f"device {spec.name} modbus", url, _modbus(address, spec.port, regmap, None))]
    url = f"opc.tcp://{_host(address)}:{spec.port}/"
    password = os.environ.get(spec.password_env) if spec.password_env else None

    def factory():
        return snapshot.opcua(
            url, security=spec.security, username=spec.username, password=password,
            window=window, ranges=_bound_ranges(loaded, spec),
        )  # fmt: skip

    return [(f"device {spec.name} opcua", url, factory)]


def _bound_ranges(loaded: LoadedSite, spec: ScadaDevice) -> dict[str, tuple[Any, Any]]:
    """SCADA variables that follow a moving PLC tag, with its range (by NodeId or bare path)."""
    devices = {d.name: d for d in loaded.site.devices}
    maps: dict[str, RegisterMap] = {}

    def tag_range(plc: str, tag: str) -> tuple[Any, Any] | None:
        device = devices.get(plc)
        if not isinstance(device, PlcDevice):
            return None
        if plc not in maps:
            maps[plc] = load_register_map(loaded.resolve(device.map))
        try:
            t = maps[plc].tag(tag)
        except KeyError:
            return None
        return (t.min, t.max) if t.behaviour in snapshot.MOVING else None

    out: dict[str, tuple[Any, Any]] = {}
    for b in spec.bindings:
        found = tag_range(b.plc, b.tag)
        if found:
            out[snapshot.bare(b.node)] = found
    if spec.nodes is not None:
        from restoredrill.twins.scada import load_node_list

        def walk(nodes: list, path: str) -> None:
            for node in nodes:
                if hasattr(node, "folder"):
                    walk(node.nodes, f"{path}/{node.folder}")
                elif node.bind is not None:
                    plc, tag = (node.bind.split("/", 1) if isinstance(node.bind, str)
                                else (node.bind.plc, node.bind.tag))  # fmt: skip
                    found = tag_range(plc, tag)
                    if found:
                        out[f"{path}/{node.variable}"] = found

        walk(load_node_list(loaded.resolve(spec.nodes)).nodes, "Objects")
    return out


def _opcua(url: str, check: Any, ranges: dict[str, Any], window: float) -> Any:
    password = os.environ.get(check.password_env) if check.password_env else None

    def factory():
        return snapshot.opcua(
            url, security=check.security, username=check.username, password=password,
            cert_dir=check.cert_dir, timeout=check.timeout, window=window, ranges=ranges,
        )  # fmt: skip

    return factory


def _modbus(address: str, port: int, regmap: RegisterMap, unit: int | None) -> Any:
    return lambda: snapshot.modbus(address, port, regmap, unit=unit)
