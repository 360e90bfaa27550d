#!/usr/bin/env python3
"""What do restoredrill's Modbus and OPC UA checks cost over a bare client? (issue 2, "Measure")

Two device twins of this project, started in this process on 127.0.0.1 at free ports
(nothing else is ever contacted):

- **PLC twin** (``twins/plc.py``, a pymodbus server) from a generated register map of
  10,000 uint16 holding registers (one constant tag each; YAML, or CSV with ``--map
  csv``). Its start-up time (load the map + start, until it listens) is the median of
  ``--starts`` starts; the other map format's load time is shown for contrast.
- **SCADA twin** (``twins/scada.py``, an asyncua server, security None) from a generated
  YAML node list: one folder with 1,000 variables (Double, Int32, Boolean, String in
  turn). Start-up as above.

Then, for ``--rounds`` rounds, each case ``--repeat`` times per round, alternating (every
run has its own event loop and connects, reads, compares, closes):

- Modbus: (a) ``checks.modbus.run`` with a spec as a user would write it in site.yaml:
  80 values of ``count: 125`` with ``equals:`` lists (every register decoded and
  compared); (b) a bare ``AsyncModbusTcpClient``: the same 80 reads of 125 registers,
  compared; (c) on the first ``--naive-rounds`` rounds, once each, 10,000 one-register
  reads, for contrast. Two other spec layouts are timed too: one value of ``count:
  10000``, and 10,000 one-register values (a tag-per-line spec, with the slow cases).
- OPC UA: (a) ``checks.opcua.run`` reading the 1,000 variables, compared with
  ``equals:``, named by browse path (``Objects/2:Bench/2:V0000``, the style of
  config/demo/site.yaml) and by NodeId (``ns=2;s=Bench.V0000``); (b) a bare asyncua
  ``Client``: connect, one batched ``read_values`` of the 1,000 nodes (by NodeId, or
  after browsing the folder once for the browse-path case), compare, disconnect; (c)
  1,000 ``read_value()`` calls, with the slow cases.

Start-up targets (issue 11), each the median of ``--starts`` runs, wall clock and this
process's CPU time (all threads; CPU time is less disturbed by the other processes of a
shared machine): a 10,000-tag register map loads in <= 0.5 s (YAML, the demo's block
style, and CSV); a PLC twin with 10,000 registers listens <= 1 s after the call (map
load included); a SCADA twin with 1,000 variables listens <= 2 s after the call (node
list, asyncua's ``Server.init``, the address space); a site file with 10,000 check
values parses <= 0.5 s (``load_site``'s validation shown beside it). For contrast, the
PLC twin as a user starts it: ``python -m restoredrill.twins.plc`` spawned until its
port accepts (interpreter start and imports included). ``--startup-only`` stops there.

Between timed runs (not timed) it collects garbage and sleeps 20 ms, so that one run's
garbage or a twin still closing the last session does not land in the next run. Every
check's results are asserted to pass. The check specs are written as site.yaml text,
parsed as the project parses its config files (``restoredrill.configfile``) and validated; that
happens once per run and is timed apart, not in the check times.

It prints per-round medians, then overall medians and best (minimum) times and the
check/bare ratios of both (target <= 1.2x; best times are less disturbed by other
processes on the machine), the load average, and with ``--profile`` cProfile's view of
one run of each kind (this thread only, i.e. the client side: the twins run on their
own threads). Both twins are stopped and the temporary directory (maps, node list,
check files) removed at the end, also on error or Ctrl-C.

    .venv/bin/python benchmarks/protocols.py [--rounds 7] [--repeat 5] [--naive-rounds 2]
        [--starts 3] [--map yaml|csv] [--profile] [--startup-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import logging
import math
import os
import pstats
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from restoredrill.checks import modbus, opcua
from restoredrill.checks.base import AddressTarget, CheckResult, SandboxGuard
from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.registers import load_register_map, read_yaml
from restoredrill.twins.scada import ScadaTwin

HOST = "127.0.0.1"
REGISTERS, BLOCK = 10_000, 125
VARIABLES = 1_000
FOLDER = "Bench"
NAMESPACE = "urn:restoredrill:bench"
TYPES = ("Double", "Int32", "Boolean", "String")
TARGET = AddressTarget("bench", HOST)
GUARD = SandboxGuard()  # loopback only
SETTLE_S = 0.02


# --- the data both sides must see -----------------------------------------------------


def register_value(address: int) -> int:
    """The constant a holding register holds (spread over the uint16 range)."""
    return (address * 7919 + 13) % 65536


def variable(i: int) -> tuple[str, str, Any]:
    """(browse name, OPC UA type, value) of variable ``i``."""
    vtype = TYPES[i % len(TYPES)]
    value: Any = {
        "Double": i + 0.25,
        "Int32": i * 3 - 1000,
        "Boolean": i % 8 == 2,
        "String": f"text {i}",
    }[vtype]
    return f"V{i:04d}", vtype, value


def write_register_map(root: Path) -> Path:
    path = root / "plc-10k.yaml"
    lines = ["name: bench-10k", "tags:"] + [
        f"  - {{name: r{a:05d}, table: holding, address: {a}, initial: {register_value(a)}}}"
        for a in range(REGISTERS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_register_map_csv(root: Path) -> Path:
    path = root / "plc-10k.csv"
    rows = [f"r{a:05d},holding,{a},{register_value(a)}" for a in range(REGISTERS)]
    path.write_text("name,table,address,initial\n" + "\n".join(rows) + "\n")
    return path


def write_node_list(root: Path) -> Path:
    path = root / "scada-1k.yaml"
    lines = [f"namespace: {NAMESPACE}", "nodes:", f"  - folder: {FOLDER}", "    nodes:"]
    for i in range(VARIABLES):
        name, vtype, value = variable(i)
        shown = f'"{value}"' if vtype == "String" else str(value).lower()
        lines.append(f"      - {{variable: {name}, type: {vtype}, value: {shown}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- Modbus ---------------------------------------------------------------------------


def _flow(value: Any) -> str:
    """A YAML flow scalar or list, as a person would type it."""
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str):
        return str(value)
    plain = (
        value[:1].isalpha()
        and not set(value) & set(":{}[],#&*!|>'\"%@`")
        and value.lower() not in ("true", "false", "yes", "no", "on", "off", "null")
    )
    return value if plain else f'"{value}"'


def check_yaml(head: dict[str, Any], values: list[dict[str, Any]]) -> str:
    """One check as it sits under ``checks:`` in site.yaml (a value per line, flow style)."""
    lines = [
        f"- {key}: {_flow(value)}" if i == 0 else f"  {key}: {_flow(value)}"
        for i, (key, value) in enumerate(head.items())
    ]
    lines.append("  values:")
    for v in values:
        lines.append("    - {" + ", ".join(f"{k}: {_flow(x)}" for k, x in v.items()) + "}")
    return "\n".join(lines) + "\n"


def load_specs(
    root: Path, model: Any, texts: dict[str, str]
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """Write each check to a file, parse it as the project parses its config
    (``restoredrill.configfile``) and validate it: (specs, (parse s, validate s) by layout)."""
    specs: dict[str, Any] = {}
    secs: dict[str, tuple[float, float]] = {}
    for layout, text in texts.items():
        path = root / f"check-{layout}.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        data, _ = read_yaml(path, path.read_text())
        t1 = time.perf_counter()
        specs[layout] = model.model_validate(data[0])
        secs[layout] = (t1 - t0, time.perf_counter() - t1)
    return specs, secs


def modbus_texts(port: int) -> dict[str, str]:
    """The 10,000 registers in three site.yaml layouts (80 x 125, 1 x 10,000, 10,000 x 1)."""
    values = [register_value(a) for a in range(REGISTERS)]
    head = {"kind": "modbus", "name": f"{REGISTERS} holding registers", "port": port, "timeout": 30}
    blocks = [
        {"table": "holding", "address": a, "count": BLOCK, "equals": values[a : a + BLOCK]}
        for a in range(0, REGISTERS, BLOCK)
    ]
    one = [{"table": "holding", "address": 0, "count": REGISTERS, "equals": values}]
    singles = [{"table": "holding", "address": a, "equals": v} for a, v in enumerate(values)]
    return {
        "blocks": check_yaml(head, blocks),
        "one": check_yaml(head, one),
        "singles": check_yaml(head, singles),
    }


def run_check(runner: Callable[..., list[CheckResult]], spec: Any, expect: int) -> float:
    """Run a check, assert every result passed; the wall time."""
    t0 = time.perf_counter()
    results = runner(spec, TARGET, GUARD)
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.passed]
    if bad or len(results) != expect:
        first = f"{bad[0].name}: {bad[0].status} {bad[0].message}" if bad else ""
        raise RuntimeError(f"{len(results)} results (wanted {expect}), {len(bad)} failed {first}")
    return elapsed


async def _bare_modbus(port: int, block: int) -> list[int]:
    client = AsyncModbusTcpClient(HOST, port=port, timeout=30, retries=0, reconnect_delay=0)
    try:
        if not await client.connect():
            raise RuntimeError(f"bare: cannot connect to {HOST}:{port}")
        words: list[int] = []
        for start in range(0, REGISTERS, block):
            rsp = await client.read_holding_registers(start, count=block, device_id=1)
            if rsp.isError():
                raise RuntimeError(f"bare: holding {start}: {rsp}")
            words += rsp.registers
        return words
    finally:
        client.close()


def bare_modbus(port: int, block: int, expected: list[int]) -> float:
    """connect + reads of ``block`` registers + close (own event loop, like the check)."""
    t0 = time.perf_counter()
    words = asyncio.run(_bare_modbus(port, block))
    if words != expected:
        raise RuntimeError("bare: registers differ from the map")
    return time.perf_counter() - t0


# --- OPC UA ---------------------------------------------------------------------------


def opcua_texts(port: int, ns: int) -> dict[str, str]:
    """The 1,000 variables named by browse path and by NodeId, as site.yaml checks."""
    by_path, by_id = [], []
    for i in range(VARIABLES):
        name, _, value = variable(i)
        by_path.append({"node": f"Objects/{ns}:{FOLDER}/{ns}:{name}", "equals": value})
        by_id.append({"node": f"ns={ns};s={FOLDER}.{name}", "equals": value})
    head = {"kind": "opcua", "name": f"{VARIABLES} variables", "port": port, "timeout": 30}
    return {"path": check_yaml(head, by_path), "nodeid": check_yaml(head, by_id)}


async def _bare_opcua(url: str, ns: int, mode: str) -> list[Any]:
    client = Client(url, timeout=30)
    await client.connect()
    try:
        if mode == "browse":  # find the folder, then its children, by browsing (once each)
            refs = await client.nodes.objects.get_references(
                ua.ObjectIds.HierarchicalReferences, ua.BrowseDirection.Forward
            )
            folder = next(r.NodeId for r in refs if r.BrowseName.Name == FOLDER)
            refs = await client.get_node(folder).get_references(
                ua.ObjectIds.HierarchicalReferences, ua.BrowseDirection.Forward
            )
            ids = {r.BrowseName.Name: r.NodeId for r in refs}
            nodes = [client.get_node(ids[variable(i)[0]]) for i in range(VARIABLES)]
        else:
            nodes = [
                client.get_node(f"ns={ns};s={FOLDER}.{variable(i)[0]}") for i in range(VARIABLES)
            ]
        if mode == "naive":
            return [await node.read_value() for node in nodes]
        return await client.read_values(nodes)
    finally:
        await client.disconnect()


def bare_opcua(url: str, ns: int, mode: str) -> float:
    """connect + (browse) + read + disconnect, values compared (own event loop)."""
    t0 = time.perf_counter()
    values = asyncio.run(_bare_opcua(url, ns, mode))
    wanted = [variable(i)[2] for i in range(VARIABLES)]
    if values != wanted:
        raise RuntimeError(f"bare opcua ({mode}): values differ from the node list")
    return time.perf_counter() - t0


def settle() -> None:
    """Between timed runs: collect garbage, let the twins' threads finish the last session."""
    gc.collect()
    time.sleep(SETTLE_S)


# --- start-ups ------------------------------------------------------------------------


def listen(twin: Any) -> InThread:
    """Start ``twin`` on its own thread at a free port of 127.0.0.1; undone if interrupted."""
    server = InThread(twin)
    try:
        return server.start(HOST, 0)
    except BaseException:
        with contextlib.suppress(Exception):
            server.stop(timeout=5)
        raise


def start_plc(path: Path) -> tuple[InThread, float, float]:
    """The PLC twin listening: (server, seconds to load the map, seconds to start)."""
    t0 = time.perf_counter()
    twin = PlcTwin.from_file(path)
    t1 = time.perf_counter()
    server = listen(twin)
    return server, t1 - t0, time.perf_counter() - t1


def start_scada(path: Path) -> tuple[InThread, float, float]:
    """The SCADA twin listening: (server, seconds to load the node list, seconds to start)."""
    t0 = time.perf_counter()
    twin = ScadaTwin([path], name="bench-scada")
    t1 = time.perf_counter()
    server = listen(twin)
    return server, t1 - t0, time.perf_counter() - t1


def startup(
    name: str,
    start: Callable[[Path], tuple[InThread, float, float]],
    path: Path,
    n: int,
    servers: list[InThread],
) -> dict[str, float]:
    """Start ``n`` times (all but the last stopped again; the last one stays in ``servers``)."""
    loads, starts, cpus = [], [], []
    for i in range(n):
        settle()
        c0 = time.process_time()
        server, load_s, start_s = start(path)
        cpus.append(time.process_time() - c0)
        servers.append(server)
        loads.append(load_s)
        starts.append(start_s)
        if i < n - 1:
            servers.remove(server)
            server.stop()
    totals = [a + b for a, b in zip(loads, starts, strict=True)]
    fig = {
        "load": statistics.median(loads),
        "start": statistics.median(starts),
        "total": statistics.median(totals),
        "best": min(totals),
        "cpu": statistics.median(cpus),
    }
    print(
        f"{name}: start-up (call -> listening), median of {n}: {fig['total']:.3f}s "
        f"(load {fig['load']:.3f}s + start {fig['start']:.3f}s), cpu {fig['cpu']:.3f}s; "
        f"each: {', '.join(f'{t:.3f}' for t in totals)}",
        flush=True,
    )
    return fig


def timed(call: Callable[[], Any], n: int) -> dict[str, float]:
    """Median and best wall time and median CPU time of ``n`` calls."""
    walls, cpus = [], []
    for _ in range(n):
        settle()
        w, c = time.perf_counter(), time.process_time()
        call()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return {"total": statistics.median(walls), "best": min(walls), "cpu": statistics.median(cpus)}


def config_loads(root: Path, n: int) -> dict[str, dict[str, float]]:
    """The 10,000-tag maps (YAML block style, CSV) and the 10,000-value site file."""
    from configfile import register_map_csv, register_map_yaml, site_yaml  # benchmarks/

    from restoredrill.configfile import parse
    from restoredrill.flows.inventory import load_site

    (root / "map-block.yaml").write_text(register_map_yaml())
    (root / "map-block.csv").write_text(register_map_csv())
    (root / "site.yaml").write_text(site_yaml())
    site_text = (root / "site.yaml").read_text()
    return {
        "map YAML (10,000 tags, block style)": timed(
            lambda: load_register_map(root / "map-block.yaml"), n
        ),
        "map CSV (10,000 tags)": timed(lambda: load_register_map(root / "map-block.csv"), n),
        "site, 10,000 check values: parse": timed(lambda: parse(site_text, "site.yaml"), n),
        "site, 10,000 check values: load_site": timed(lambda: load_site(root / "site.yaml"), n),
    }


def spawned_plc(path: Path, n: int) -> dict[str, float]:
    """``python -m restoredrill.twins.plc MAP``: spawn -> its port accepts, median of ``n``."""
    import socket
    import subprocess

    walls = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        t0 = time.perf_counter()
        argv = [
            sys.executable,
            "-m",
            "restoredrill.twins.plc",
            str(path),
            "--bind",
            f"{HOST}:{port}",
        ]
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > 60:
                        raise RuntimeError("the PLC twin did not start") from None
                    time.sleep(0.005)
            walls.append(time.perf_counter() - t0)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"total": statistics.median(walls), "best": min(walls), "cpu": float("nan")}


def targets_report(rows: list[tuple[str, dict[str, float], float | None]]) -> None:
    """The start-up figures against the issue's targets (wall median, best; CPU median)."""
    print()
    print("  start-up targets (issue 11)        wall median    best     cpu   target")
    for label, fig, target in rows:
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g}s " + (
                "ok" if fig["total"] <= target else ("ok (cpu)" if fig["cpu"] <= target else "OVER")
            )
        cpu = "      -" if math.isnan(fig["cpu"]) else f"{fig['cpu']:7.3f}s"
        print(f"    {label:<40} {fig['total']:7.3f}s {fig['best']:7.3f}s {cpu}  {verdict}")


# --- profile --------------------------------------------------------------------------


def profile(label: str, call: Callable[[], Any], top: int = 18) -> None:
    """cProfile one call (this thread only: the client side), top functions by own time."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(call)
    wall = time.perf_counter() - t0
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    print(f"\n--- cProfile: {label} (wall {wall:.3f}s under the profiler) ---")
    lines = out.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if "function calls" in ln), 0)
    print("\n".join(ln for ln in lines[start:] if ln.strip()))


# --- report ---------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    times: dict[str, list[float]],
    pairs: list[tuple[str, str, str]],
    rows: list[tuple[str, str]],
    ups: dict[str, dict[str, float]],
    spec_s: dict[str, tuple[float, float]],
    command: str,
    load: tuple[float, float],
) -> None:
    print()
    print("=" * 100)
    print("summary: seconds per run (connect + read + compare + close, this process, 127.0.0.1)")
    print("=" * 100)
    print(f"  {'what':<70} {'median':>8} {'best':>8} {'runs':>5}")
    for key, label in rows:
        if key.startswith("#"):
            print(f"  {label}")
        elif times.get(key):
            print(
                f"  {label:<70} {med(times[key]):8.4f} {min(times[key]):8.4f} {len(times[key]):>5}"
            )
        else:
            print(f"  {label:<70} {'-':>8} {'-':>8} {0:>5}")
    print()
    print(f"  {'ratios':<70} {'median':>8} {'best':>8}  target 1.2x")
    for check, bare, label in pairs:
        if not (times.get(check) and times.get(bare)):
            continue
        ratio = med(times[check]) / med(times[bare])
        best = min(times[check]) / min(times[bare])
        flag = "" if "naive" in check else ("ok" if ratio <= 1.2 else "ABOVE")
        print(f"  {label:<70} {ratio:7.2f}x {best:7.2f}x  {flag}")
    print()
    print("  twin start-up (call -> listening), median")
    for name, fig in ups.items():
        print(
            f"    {name:<36} {fig['total']:7.3f}s  "
            f"(load {fig['load']:.3f}s + start {fig['start']:.3f}s)"
        )
    print("  check specs as site.yaml text: parse (configfile) + validate, once per run")
    for name, (parse_s, valid_s) in spec_s.items():
        total = parse_s + valid_s
        print(f"    {name:<36} {total:7.3f}s  (parse {parse_s:.3f}s + validate {valid_s:.3f}s)")
    print(
        f"\n  load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f} "
        f"({os.cpu_count()} CPUs): other processes' work shows in the medians; 'best' less so"
    )
    print(f"  command: {command}")


# --- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each fast case per round (default 5)"
    )
    parser.add_argument(
        "--naive-rounds", type=int, default=2, help="rounds with the slow contrasts (default 2)"
    )
    parser.add_argument("--starts", type=int, default=3, help="twin starts to time (default 3)")
    parser.add_argument(
        "--map", choices=["yaml", "csv"], default="yaml", help="register map format (default yaml)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one check of each kind")
    parser.add_argument(
        "--startup-only", action="store_true", help="only the start-up figures and targets"
    )
    args = parser.parse_args()
    command = shlex.join([sys.executable, *sys.argv])
    load_start = os.getloadavg()[0]
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    root = Path(tempfile.mkdtemp(prefix="restoredrill-bench-proto-"))
    servers: list[InThread] = []
    times: dict[str, list[float]] = defaultdict(list)
    try:
        maps = {"yaml": write_register_map(root), "csv": write_register_map_csv(root)}
        nodes_path = write_node_list(root)
        other = "csv" if args.map == "yaml" else "yaml"
        t0 = time.perf_counter()
        load_register_map(maps[other])
        other_load = time.perf_counter() - t0
        plc_up = startup(
            f"PLC twin ({REGISTERS:,} registers, {args.map} map)",
            start_plc,
            maps[args.map],
            args.starts,
            servers,
        )
        print(f"  (the same map as {other} loads in {other_load:.3f}s)")
        scada_up = startup(
            f"SCADA twin ({VARIABLES:,} variables)", start_scada, nodes_path, args.starts, servers
        )
        loads = config_loads(root, args.starts)
        spawned = spawned_plc(maps[args.map], args.starts)
        target_rows = [
            *[
                (label, fig, 0.5 if "load_site" not in label else None)
                for label, fig in loads.items()
            ],
            (f"PLC twin, {REGISTERS:,} registers, listening", plc_up, 1.0),
            (f"SCADA twin, {VARIABLES:,} variables, listening", scada_up, 2.0),
            ("PLC twin process spawned, port accepting", spawned, None),
        ]
        targets_report(target_rows)
        if args.startup_only:
            print(
                f"\n  load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}"
            )
            print(f"  command: {command}")
            return 0
        plc, scada = servers
        port, url = plc.twin.port, scada.twin.endpoint
        ns = scada.call(scada.twin.server.get_namespace_index(NAMESPACE))
        print(f"PLC twin at {HOST}:{port}, SCADA twin at {url} (namespace {ns})", flush=True)

        n_blocks = REGISTERS // BLOCK
        mb_texts, ua_texts = modbus_texts(port), opcua_texts(scada.twin.port, ns)
        mb, mb_s = load_specs(root, modbus.ModbusCheck, mb_texts)
        ua_specs, ua_s = load_specs(root, opcua.OpcuaCheck, ua_texts)
        spec_s = {
            f"modbus {n_blocks} values x count {BLOCK}": mb_s["blocks"],
            f"modbus 1 value x count {REGISTERS:,}": mb_s["one"],
            f"modbus {REGISTERS:,} values": mb_s["singles"],
            f"opcua {VARIABLES:,} values by path": ua_s["path"],
            f"opcua {VARIABLES:,} values by NodeId": ua_s["nodeid"],
        }
        print("the checks, as written in site.yaml (first lines):")
        for text in (mb_texts["blocks"], ua_texts["path"]):
            for line in text.splitlines()[:7]:
                print(f"    {line if len(line) <= 96 else line[:92] + ' …}'}")
            print("      …")
        expected = [register_value(a) for a in range(REGISTERS)]

        fast: list[tuple[str, Callable[[], float]]] = [
            ("mb.check", lambda: run_check(modbus.run, mb["blocks"], n_blocks)),
            ("mb.bare", lambda: bare_modbus(port, BLOCK, expected)),
            ("mb.one", lambda: run_check(modbus.run, mb["one"], 1)),
            ("ua.path", lambda: run_check(opcua.run, ua_specs["path"], VARIABLES + 1)),
            ("ua.bare.browse", lambda: bare_opcua(url, ns, "browse")),
            ("ua.nodeid", lambda: run_check(opcua.run, ua_specs["nodeid"], VARIABLES + 1)),
            ("ua.bare", lambda: bare_opcua(url, ns, "nodeid")),
        ]
        slow: list[tuple[str, Callable[[], float]]] = [
            ("mb.singles", lambda: run_check(modbus.run, mb["singles"], REGISTERS)),
            ("mb.naive", lambda: bare_modbus(port, 1, expected)),
            ("ua.naive", lambda: bare_opcua(url, ns, "naive")),
        ]
        for _, call in [*fast, slow[0]]:  # warm-up, not timed: imports, first connections
            call()

        print(
            f"{args.rounds} rounds x {args.repeat} runs of each case, alternating "
            f"(round medians, ms); slow contrasts on the first {args.naive_rounds} round(s)"
        )
        for i in range(1, args.rounds + 1):
            this: dict[str, list[float]] = defaultdict(list)
            for _ in range(args.repeat):
                for key, call in fast:
                    settle()
                    this[key].append(call())
            if i <= args.naive_rounds:
                for key, call in slow:
                    settle()
                    this[key].append(call())
            for key, values in this.items():
                times[key] += values
            print(
                f"  round {i}: "
                + ", ".join(f"{key} {med(values) * 1000:.1f}" for key, values in this.items()),
                flush=True,
            )

        rows = [
            ("#", f"Modbus: {REGISTERS:,} holding registers, PLC twin"),
            ("mb.check", f"(a) check: {n_blocks} values x count {BLOCK}, equals lists"),
            ("mb.bare", f"(b) bare AsyncModbusTcpClient: {n_blocks} reads of {BLOCK}"),
            ("mb.naive", f"(c) bare, naive: {REGISTERS:,} reads of 1 register"),
            ("mb.one", f"    check, other layout: 1 value x count {REGISTERS:,}"),
            ("mb.singles", f"    check, other layout: {REGISTERS:,} values of 1 register"),
            ("#", f"OPC UA: {VARIABLES:,} variables, SCADA twin, security None"),
            ("ua.path", f"(a) check: values by browse path (Objects/{ns}:{FOLDER}/{ns}:V0000)"),
            ("ua.nodeid", f"(a) check: values by NodeId (ns={ns};s={FOLDER}.V0000)"),
            ("ua.bare", f"(b) bare asyncua Client: read_values of {VARIABLES:,} NodeIds"),
            ("ua.bare.browse", "(b) bare, browse the folder once, then read_values"),
            ("ua.naive", f"(c) bare, naive: {VARIABLES:,} x read_value()"),
        ]
        pairs = [
            ("mb.check", "mb.bare", f"Modbus check ({n_blocks}x{BLOCK}) / bare batched"),
            ("mb.one", "mb.bare", f"Modbus check (1x{REGISTERS}) / bare batched"),
            ("mb.singles", "mb.bare", f"Modbus check ({REGISTERS}x1) / bare batched"),
            ("mb.naive", "mb.bare", "Modbus bare naive (1 register per request) / bare batched"),
            ("ua.nodeid", "ua.bare", "OPC UA check by NodeId / bare read_values"),
            ("ua.path", "ua.bare.browse", "OPC UA check by browse path / bare browse + read"),
            ("ua.path", "ua.bare", "OPC UA check by browse path / bare read_values (NodeIds)"),
            ("ua.naive", "ua.bare", "OPC UA bare naive (1 node per request) / bare read_values"),
        ]
        report(
            times,
            pairs,
            rows,
            {
                f"PLC ({REGISTERS:,} registers)": plc_up,
                f"SCADA ({VARIABLES:,} variables)": scada_up,
            },
            spec_s,
            command,
            (load_start, os.getloadavg()[0]),
        )
        targets_report(target_rows)
        if args.profile:
            profile(
                f"modbus check, {n_blocks} x {BLOCK}",
                lambda: run_check(modbus.run, mb["blocks"], n_blocks),
            )
            profile(
                f"bare AsyncModbusTcpClient, {n_blocks} x {BLOCK}",
                lambda: bare_modbus(port, BLOCK, expected),
            )
            profile(
                f"modbus check, {REGISTERS:,} values of 1 register",
                lambda: run_check(modbus.run, mb["singles"], REGISTERS),
            )
            profile(
                f"opcua check, {VARIABLES:,} values by browse path",
                lambda: run_check(opcua.run, ua_specs["path"], VARIABLES + 1),
            )
            profile(
                f"opcua check, {VARIABLES:,} values by NodeId",
                lambda: run_check(opcua.run, ua_specs["nodeid"], VARIABLES + 1),
            )
            profile(
                f"bare asyncua read_values, {VARIABLES:,} NodeIds",
                lambda: bare_opcua(url, ns, "nodeid"),
            )
        return 0
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others, remove the files
                print(f"clean-up: stopping a twin failed: {exc!r}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        print(f"clean-up: stopped {len(servers)} twin(s), removed {root}")


if __name__ == "__main__":
    sys.exit(main())
