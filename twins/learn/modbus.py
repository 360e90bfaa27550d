"""``restoredrill learn modbus``: register maps learned from a traffic capture, or from a
live device read read-only, written as YAML the PLC twin loads.

From a capture (offline, what a switch's mirror port recorded)::

    maps = learn_capture(Path("line1.pcapng"))          # one LearnedMap per device
    write_maps(maps, Path("line1.yaml"))                 # several: line1-10.0.0.5-unit1.yaml …

From a live device (explicit: reads coils and registers with FC 1-4 only, and asks its
identity with FC 43/14 and FC 17; never writes)::

    learn_live("10.0.0.5", 502, units=[1], ranges=[("holding", 0, 99)], duration=30, interval=1)
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registers import RegisterMap, validate_register_map
from . import LearnError
from .capture import Capture, CaptureError, link_name
from .infer import infer_map
from .modbus_traffic import TABLE_OF, Conversations, DeviceLog, UnitLog, interpret

FUNCTION_OF = {table: fc for fc, table in TABLE_OF.items()}
MAX_READ = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}


@dataclass
class LearnedMap:
    """One device's learned map: its data, where it came from, what to tell the user."""

    device: DeviceLog
    data: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def regmap(self) -> RegisterMap:
        return validate_register_map(self.data, f"<learned {self.device.host}>")

    def summary(self) -> str:
        kinds = Counter(t.get("behaviour", "constant") for t in self.data["tags"])
        guesses = sum(1 for t in self.data["tags"] if "guessed" in t.get("description", ""))
        units = ", ".join(str(u) for u in sorted({t["unit"] for t in self.data["tags"]}))
        made = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (
            f"{self.device.host}:{self.device.port} unit(s) {units}: "
            f"{len(self.data['tags'])} tags ({made}); {guesses} data type(s) guessed"
        )


# --------------------------------------------------------------------------- from a capture


def learn_capture(
    path: Path, ports: Iterable[int] = (502,), max_samples: int = 2000
) -> list[LearnedMap]:
    """One map per Modbus device the capture shows answering; CaptureError if none."""
    capture = Capture(Path(path))
    talks = Conversations(ports, max_samples)
    for segment in capture.segments():
        talks.feed(segment)
    if not talks.devices:
        raise CaptureError(path, _nothing_found(capture, talks, ports))
    notes = _notes(capture, talks)
    learned = []
    for (host, port), device in sorted(talks.devices.items()):
        name = f"learned {host}:{port}"
        data = infer_map(device, name)
        learned.append(LearnedMap(device, data, f"capture {Path(path).name}", notes))
    return learned


def _nothing_found(capture: Capture, talks: Conversations, ports: Iterable[int]) -> str:
    if capture.packets == 0:
        return "no packets in the capture" + (f" ({capture.notes[0]})" if capture.notes else "")
    parts = [f"no Modbus TCP request answered in {capture.packets:,} packets"]
    if capture.other_links:
        links = ", ".join(
            f"{link_name(k)} ({n:,} packets)" for k, n in sorted(capture.other_links.items())
        )
        parts.append(f"packets of link types not read: {links}")
    if capture.truncated:
        parts.append(f"{capture.truncated:,} TCP packets cut short by the snap length")
    if talks.not_modbus:
        parts.append(f"{len(talks.not_modbus)} connection(s) were another protocol")
    watched = ", ".join(str(p) for p in sorted(ports))
    parts.append(
        f"looked at TCP port(s) {watched} and connections whose start the capture holds; "
        "if the PLC listens elsewhere, give --port"
    )
    return "; ".join(parts)


def _notes(capture: Capture, talks: Conversations) -> list[str]:
    notes = list(dict.fromkeys(capture.notes))
    if capture.truncated:
        notes.append(
            f"{capture.truncated:,} TCP packet(s) cut short by the capture's snap length "
            "were left out (capture with -s 0 to keep them whole)"
        )
    if capture.other_links:
        skipped = sum(capture.other_links.values())
        kinds = ", ".join(link_name(k) for k in sorted(capture.other_links))
        notes.append(f"{skipped:,} packet(s) of link types not read were skipped ({kinds})")
    if talks.unanswered:
        notes.append(f"{talks.unanswered:,} request(s) had no answer in the capture")
    return notes


# --------------------------------------------------------------------------- live, read-only


def learn_live(
    host: str,
    port: int,
    units: Sequence[int],
    ranges: Sequence[tuple[str, int, int]],
    duration: float,
    interval: float,
    timeout: float = 3.0,
) -> LearnedMap:
    """Poll the ranges of each unit for ``duration`` seconds, read-only, and infer a map."""
    device = asyncio.run(_poll(host, port, units, ranges, duration, interval, timeout))
    if not any(u.registers for u in device.units.values()):
        raise LearnError(f"{host}:{port} answered none of the ranges read")
    data = infer_map(device, f"learned {host}:{port}")
    return LearnedMap(device, data, f"live reads of {host}:{port}")


async def _poll(
    host: str,
    port: int,
    units: Sequence[int],
    ranges: Sequence[tuple[str, int, int]],
    duration: float,
    interval: float,
    timeout: float,
) -> DeviceLog:
    link = _Link(host, port, timeout)
    await link.open()
    device = DeviceLog(host, port, started=time.time())
    try:
        for unit in units:  # identity: FC 43/14 (every object) and FC 17, both read-only
            for request in (bytes([43, 14, 3, 0]), bytes([17])):
                await link.ask(device.unit(unit), unit, request)
        end = time.monotonic() + duration
        while True:
            for unit in units:
                for table, first, last in ranges:
                    step = MAX_READ[table]
                    for start in range(first, last + 1, step):
                        count = min(step, last + 1 - start)
                        request = struct.pack(">BHH", FUNCTION_OF[table], start, count)
                        await link.ask(device.unit(unit), unit, request)
            if time.monotonic() + interval > end:
                break
            await asyncio.sleep(interval)
    finally:
        link.close()
    return device


class _Link:
    """A Modbus TCP connection that only asks: the read requests above, one at a time.

    Raw frames rather than a client library's calls, so a live device's answers reach the
    same interpreter as a capture's (pymodbus reads FC 17's last byte as the run indicator).
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tid = 0

    async def open(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or exc
            raise LearnError(f"{self.host}:{self.port} is unreachable ({why})") from None

    async def ask(self, log: UnitLog, unit: int, request: bytes) -> None:
        """Send one request; log the answer (silence and closed connections are noted)."""
        assert self.reader and self.writer
        self.tid = (self.tid + 1) & 0xFFFF
        self.writer.write(struct.pack(">HHHB", self.tid, 0, len(request) + 1, unit) + request)
        try:
            head = await asyncio.wait_for(self.reader.readexactly(7), self.timeout)
            tid, _, length, _ = struct.unpack(">HHHB", head)
            if not 2 <= length <= 254:
                raise LearnError(f"{self.host}:{self.port} does not speak Modbus TCP")
            body = await asyncio.wait_for(self.reader.readexactly(length - 1), self.timeout)
        except TimeoutError:  # no answer (an identity request, a unit id it does not have)
            await self._reopen()
            return
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise LearnError(f"{self.host}:{self.port} closed the connection") from exc
        if tid == self.tid and body:
            interpret(log, request, body, time.time(), 2000)

    async def _reopen(self) -> None:
        """After a request went unanswered, a fresh connection (no late answer to misread)."""
        self.close()
        await self.open()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --------------------------------------------------------------------------- writing


def output_paths(maps: Sequence[LearnedMap], output: Path) -> list[Path]:
    """``output`` for one map; for several, one file per device named by address and units."""
    if len(maps) == 1:
        return [output]
    paths = []
    for learned in maps:
        d = learned.device
        where = d.host.replace(":", "_") + ("" if d.port == 502 else f"-{d.port}")
        units = "-".join(str(u) for u in sorted({t["unit"] for t in learned.data["tags"]}))
        paths.append(output.with_name(f"{output.stem}-{where}-unit{units}{output.suffix}"))
    return paths


def write_maps(maps: Sequence[LearnedMap], output: Path) -> list[Path]:
    """Write each map (checked by the loader the twin uses) and return the paths."""
    paths = output_paths(maps, output)
    for learned, path in zip(maps, paths, strict=True):
        learned.regmap  # noqa: B018 - the twin must load what is written
        path.write_text(map_yaml(learned))
    return paths


def map_yaml(learned: LearnedMap) -> str:
    """The map as YAML, with a header saying where it came from and what to check."""
    d = learned.device
    lines = [
        f"# Learned by restoredrill from {learned.source}: device {d.host}:{d.port}"
        + (f", clients {', '.join(sorted(d.clients))}" if d.clients else ""),
        "# Behaviours and data types are inferred from traffic: check them against the PLC",
        "# program's tag list. 'guessed' in a description marks a data type guess.",
    ]
    for unit, log in sorted(d.units.items()):
        for (fc, table, first, count), n in sorted(log.requests.items()):
            lines.append(f"# unit {unit}: FC {fc} {table} {first}-{first + count - 1} ({n}x)")
        for (fc, code, _table, first, count), n in sorted(log.exceptions.items()):
            lines.append(f"# unit {unit}: FC {fc} at {first} ({count}) -> exception {code} ({n}x)")
    lines += [f"# note: {note}" for note in learned.notes]
    return "\n".join(lines) + "\n" + dump_yaml(learned.data)


def dump_yaml(data: dict[str, Any]) -> str:
    """Block-style YAML for mappings, one flow mapping per tag (JSON scalars are YAML)."""
    out: list[str] = []
    for key, value in data.items():
        if key == "tags":
            out.append("tags:")
            out += [f"  - {_flow(tag)}" for tag in value]
        elif isinstance(value, dict):
            out.append(f"{key}:")
            out += _block(value, "  ")
        else:
            out.append(f"{key}: {_flow(value)}")
    return "\n".join(out) + "\n"


def _block(mapping: dict[str, Any], indent: str) -> list[str]:
    out = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.append(f"{indent}{_key(key)}:")
            out += _block(value, indent + "  ")
        else:
            out.append(f"{indent}{_key(key)}: {_flow(value)}")
    return out


def _key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else json.dumps(key)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return json.dumps(value)
