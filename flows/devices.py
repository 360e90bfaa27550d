"""Emulated field devices of a run: started before the systems that need them, at their
production addresses inside the sandbox, and removed with the sandbox."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from restoredrill.twins.base import Sandbox, Twin, TwinError
from restoredrill.twins.devices import (
    PlcDevice,
    ScadaDevice,
    device_command,
    device_env,
    device_files,
)
from restoredrill.twins.limits import DEFAULT_CAPABILITIES, Limits, effective
from restoredrill.twins.readiness import wait_ready
from restoredrill.twins.spec import TcpProbe

from .inventory import LoadedSite

READY_TIMEOUT = timedelta(seconds=60)
LIMITS = Limits(
    memory="1g",
    cpus=1.0,
    pids=256,
    disk="1g",
    cap_drop=[c for c in DEFAULT_CAPABILITIES if c != "NET_BIND_SERVICE"],
)
"""Bounds of an emulator container: it faces hostile twins, so it is bounded like one,
and keeps only the capability to listen on ports below 1024 (502)."""


def needed(
    loaded: LoadedSite, systems: Iterable[str], devices: Iterable[str] = ()
) -> list[PlcDevice | ScadaDevice]:
    """The devices the given systems name (and ``devices``), plus the PLCs those SCADA
    devices bind to."""
    by_name = {d.name: d for d in loaded.site.devices}
    wanted: set[str] = set(devices)
    for name in systems:
        wanted.update(loaded.site.system(name).devices)
    for name in list(wanted):
        spec = by_name[name]
        if isinstance(spec, ScadaDevice):
            wanted.update(spec.plc_names())
    # PLCs first: a SCADA twin bound to a PLC polls it from its first second
    return sorted((by_name[n] for n in wanted), key=lambda d: (d.kind != "plc", d.name))


def start_devices(
    loaded: LoadedSite,
    sandbox: Sandbox,
    run_id: str,
    systems: Iterable[str],
    devices: Iterable[str] = (),
    running: Iterable[str] = (),
) -> tuple[list[Twin], list[Path]]:
    """Start each needed device (but those ``running`` already) and wait until it listens;
    returns twins and scratch dirs."""
    skip = set(running)
    specs = [d for d in needed(loaded, systems, devices) if d.name not in skip]
    if not specs:
        return [], []
    by_name = {d.name: d for d in loaded.site.devices}
    resolved = {
        name: spec.model_copy(update=_resolved_paths(loaded, spec))
        for name, spec in by_name.items()
    }
    twins: list[Twin] = []
    dirs: list[Path] = []
    try:
        for spec in specs:
            spec = resolved[spec.name]
            folder = Path(tempfile.mkdtemp(prefix=f"device-{spec.name}-", dir=sandbox.scratch))
            dirs.append(folder)
            for inside, host in device_files(spec, resolved).items():
                if not Path(host).is_file():
                    raise TwinError(f"device {spec.name}: {host} not found")
                shutil.copy(host, folder / inside)
            folder.chmod(0o755)
            twin = sandbox.start_device(
                f"device-{spec.name}",
                device_command(spec, "/dev-config", resolved),
                address=str(spec.address),
                mounts={"/dev-config": str(folder)},
                labels={"restoredrill.run": run_id, "restoredrill.device": spec.name},
                env=device_env(spec),
                limits=effective(LIMITS),
            )
            twins.append(twin)
            try:
                wait_ready(twin, TcpProbe(port=spec.port, timeout=READY_TIMEOUT))
            except TwinError as exc:
                raise TwinError(
                    f"device {spec.name} ({spec.kind} at {spec.address}:{spec.port}): {exc}"
                ) from None
    except BaseException:
        stop_devices(sandbox, twins, dirs)
        raise
    return twins, dirs


def stop_devices(sandbox: Sandbox, twins: list[Twin], dirs: list[Path]) -> None:
    for twin in reversed(twins):
        with contextlib.suppress(Exception):  # the sandbox close removes what is left
            sandbox.remove(twin)
    for folder in dirs:
        shutil.rmtree(folder, ignore_errors=True)


def _resolved_paths(loaded: LoadedSite, spec: PlcDevice | ScadaDevice) -> dict[str, Any]:
    if isinstance(spec, PlcDevice):
        return {"map": loaded.resolve(spec.map)}
    return {
        "nodesets": [loaded.resolve(p) for p in spec.nodesets],
        "nodes": loaded.resolve(spec.nodes) if spec.nodes is not None else None,
    }
