"""``restoredrill learn``: twins learned from the plant, written as files the twins load.

    restoredrill learn modbus CAPTURE.pcap[ng] -o map.yaml          # offline, from traffic
    restoredrill learn modbus --live HOST:PORT --ranges holding:0-99 -o map.yaml   # read-only
    restoredrill learn opcua opc.tcp://HOST:PORT -o model.xml       # browse, read-only

Nothing here runs by itself: learning from a live device is always this explicit command,
and it only reads. Exit codes: 0 written, 2 nothing learned (the message says why: a file
that is not a capture, no Modbus traffic, an unreachable or secured server, bad options).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from restoredrill.durations import parse_duration
from restoredrill.errors import InputError

from .app import console, learn_app

TABLES = ("coil", "discrete", "holding", "input")


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise InputError(f"{', '.join(existing)} exists: give --force to overwrite")


def parse_ranges(text: str) -> list[tuple[str, int, int]]:
    """``holding:0-99,input:0-9`` -> [("holding", 0, 99), ("input", 0, 9)]."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        table, _, span = item.partition(":")
        first, _, last = span.partition("-")
        last = last or first
        if table not in TABLES or not (first.isdigit() and last.isdigit()):
            raise InputError(f"--ranges {item!r}: write TABLE:FIRST-LAST, TABLE one of {TABLES}")
        if not int(first) <= int(last) <= 65535:
            raise InputError(f"--ranges {item!r}: FIRST-LAST must rise and end by 65535")
        out.append((table, int(first), int(last)))
    if not out:
        raise InputError("--ranges: give at least one TABLE:FIRST-LAST")
    return out


@learn_app.command("modbus")
def learn_modbus(
    capture: Annotated[
        Path | None, typer.Argument(help="a traffic capture (.pcap or .pcapng)", show_default=False)
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the register map to write")
    ] = Path("map.yaml"),
    port: Annotated[
        list[int] | None, typer.Option(help="TCP port of the PLCs in the capture (default 502)")
    ] = None,
    live: Annotated[
        str | None, typer.Option(help="HOST:PORT of a live PLC to read (read-only)")
    ] = None,
    ranges: Annotated[
        str, typer.Option(help="with --live: TABLE:FIRST-LAST,… to read, e.g. holding:0-99")
    ] = "",
    unit: Annotated[
        list[int] | None, typer.Option(help="with --live: unit id(s), default 1")
    ] = None,
    duration: Annotated[str, typer.Option(help="with --live: how long to watch")] = "10s",
    interval: Annotated[str, typer.Option(help="with --live: time between reads")] = "1s",
    max_samples: Annotated[
        int, typer.Option(min=10, help="changes kept per register (replayed series)")
    ] = 2000,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
) -> None:
    """Learn a register map per device from a capture, or from a live PLC (read-only)."""
    from restoredrill.twins.devices import parse_bind
    from restoredrill.twins.learn import modbus

    if (capture is None) == (live is None):
        raise InputError("give a capture file or --live HOST:PORT (one of them)")
    if live is not None:
        host, live_port = parse_bind(live, 502)
        learned = [
            modbus.learn_live(
                host,
                live_port,
                unit or [1],
                parse_ranges(ranges),
                parse_duration(duration).total_seconds(),
                parse_duration(interval).total_seconds(),
            )
        ]
    else:
        assert capture is not None
        learned = modbus.learn_capture(capture, port or [502], max_samples)
    paths = modbus.output_paths(learned, output)
    _refuse_overwrite(paths, force)
    modbus.write_maps(learned, output)
    for item, path in zip(learned, paths, strict=True):
        console.print(f"wrote {path}: {item.summary()}", highlight=False, soft_wrap=True)
    for note in learned[0].notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


@learn_app.command("opcua")
def learn_opcua(
    url: Annotated[str, typer.Argument(help="opc.tcp://HOST:PORT\\[/path] of the server")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the NodeSet2 XML to write")
    ] = Path("model.xml"),
    security: Annotated[str, typer.Option(help="none or basic256sha256")] = "none",
    username: Annotated[str | None, typer.Option(help="user to log in as")] = None,
    password_env: Annotated[
        str, typer.Option(help="variable holding that user's password")
    ] = "RESTOREDRILL_OPCUA_PASSWORD",
    cert_dir: Annotated[
        Path, typer.Option(help="where this client's certificate is made and kept")
    ] = Path("pki"),
    timeout: Annotated[str, typer.Option(help="connect and per-request timeout")] = "30s",
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Browse a live OPC UA server read-only and write its address space as NodeSet2 XML."""
    from restoredrill.twins.learn import opcua

    password = None
    if username:
        password = os.environ.get(password_env)
        if not password:
            raise InputError(f"--username given but the password variable {password_env} is empty")
    _refuse_overwrite([output], force)
    learned = opcua.learn_server(
        url,
        security=security,
        username=username,
        password=password,
        cert_dir=cert_dir,
        timeout=parse_duration(timeout).total_seconds(),
    )
    learned.write(output)
    console.print(f"wrote {output}: {learned.summary()}", highlight=False, soft_wrap=True)
