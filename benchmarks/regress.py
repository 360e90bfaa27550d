#!/usr/bin/env python3
"""What does a pre-change regression cost? (issue 12, "Measure")

**Only the affected systems run.** A site of 10 systems and 3 emulated PLCs (plc-a used
by s01-s04, plc-b by s05-s07, plc-c by s08-s10); each system is restored from one shared
root-filesystem tarball (``rootfs_tar``: busybox-static, ``busybox httpd``), waits for
its port, and runs an http check and a modbus check of its PLC. The candidate moves one
tag of plc-b's register map (a one-device change): ``restoredrill regress SITE
--candidate DIR`` runs s05-s07 with the baseline, then with the candidate, snapshots
their PLC and compares. It is timed against two full ``restoredrill run SITE`` (what an
engineer does without regress: run the site before and after the change); target <= 0.5x.
All three commands use one Prefect server started here first (so none of them pays for
starting one), and alternate over ``--rounds``.

**Snapshot time.** In this process on 127.0.0.1: the PLC twin with a 10,000-register map
(10,000 uint16 holding registers) read by ``twins.snapshot.modbus``; an asyncua server
with 1,000 variables under one folder browsed and read by ``twins.snapshot.opcua``, once
with a single read of the values (``window=0``) and once with the default 3 s window
(values read every 0.5 s to see which move). Medians of ``--repeat`` runs.

Everything lives in a temporary directory and the sandbox 10.254.0.0/24; at the end, also
on error or Ctrl-C, the server is stopped, the runs' Docker objects are checked gone and
the directory is removed. Traffic: 127.0.0.1 and the sandbox.

    .venv/bin/python benchmarks/regress.py [--rounds 1] [--repeat 5] [--skip-site]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import find_busybox, make_rootfs

SUBNET = "10.254.0"
CLI = [sys.executable, "-m", "restoredrill.flows.cli"]
PLCS = {"plc-a": range(1, 5), "plc-b": range(5, 8), "plc-c": range(8, 11)}


def plc_map(name: str) -> str:
    tags = [f"  - {{name: t{i:02d}, table: holding, address: {i}, initial: {i * 10}}}" for i in range(20)]
    tags += ["  - {name: level, table: input, address: 0, type: float32, behaviour: sine, min: 40, max: 60, period: 30}"]
    return f"name: {name}\ntags:\n" + "\n".join(tags) + "\n"


def write_site(root: Path) -> Path:
    lines = [
        "site: regress-bench",
        f"sandbox: {{subnets: [{SUBNET}.0/24], concurrency: 2}}",
        "devices:",
    ]
    for i, name in enumerate(PLCS):
        lines.append(f"  - {{kind: plc, name: {name}, address: {SUBNET}.{100 + i}, map: plc/{name}.yaml}}")
        (root / "plc").mkdir(exist_ok=True)
        (root / "plc" / f"{name}.yaml").write_text(plc_map(name))
    lines.append("systems:")
    for i, (plc, numbers) in enumerate(PLCS.items()):
        for n in numbers:
            lines += [
                f"  - name: s{n:02d}",
                f"    devices: [{plc}]",
                "    backup: {kind: rootfs_tar, path: backups/busybox-rootfs.tar.gz}",
                f"    run: {{address: {SUBNET}.{10 + n}, command: [/bin/busybox, httpd, -f, -p, \"8080\", -h, /www]}}",
                "    ready: {kind: tcp, port: 8080, timeout: 60s}",
                "    checks:",
                "      - {kind: http, port: 8080, path: /index.html, contains: ok}",
                f"      - {{kind: modbus, host: {SUBNET}.{100 + i}, values: [{{table: holding, address: 5, equals: 50}}]}}",
                "    rto: 5m",
            ]
    site = root / "site.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - t0
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(argv[3:5])}: no JSON (exit {proc.returncode})") from None
    return seconds, proc.returncode, out


def site_rounds(args: argparse.Namespace, root: Path) -> None:
    from rich.console import Console

    from restoredrill.flows.prefect_server import prefect_api

    (root / "backups").mkdir()
    make_rootfs(root / "backups" / "busybox-rootfs.tar.gz", find_busybox())
    site = write_site(root)
    cand = root / "candidate" / "plc"
    cand.mkdir(parents=True)
    moved = plc_map("plc-b").replace("address: 5, initial: 50", "address: 25, initial: 50")
    (cand / "plc-b.yaml").write_text(moved)
    env = {**os.environ, "NO_COLOR": "1", "XDG_CONFIG_HOME": str(root / "config"),
           "PREFECT_HOME": str(root / "prefect")}  # fmt: skip
    os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "PREFECT_HOME")})
    full, regress, run_ids = [], [], []
    with prefect_api(Console(stderr=True)) as url:
        env["PREFECT_API_URL"] = url
        for rnd in range(args.rounds):
            runs = 0.0
            for _ in range(2):
                seconds, code, out = timed([*CLI, "run", str(site), "--json"], env)
                assert code == 0, out.get("systems")
                runs += seconds
                run_ids.append(out["run_id"])
            full.append(runs)
            seconds, code, out = timed(
                [*CLI, "regress", str(site), "--candidate", str(root / "candidate"), "--json"], env
            )
            regress.append(seconds)
            run_ids += [out["baseline"]["run_id"], out["candidate"]["run_id"]]
            ran = [s["system"] for s in out["candidate"]["systems"]]
            print(
                f"round {rnd + 1}: two full runs {runs:6.1f}s | regress {seconds:6.1f}s "
                f"(exit {code}, {out['verdict']}, ran {', '.join(ran)}) | ratio {seconds / runs:.2f}",
                flush=True,
            )
            assert ran == ["s05", "s06", "s07"], ran
    left = leftovers(run_ids)
    assert not left, f"left behind: {left}"
    f, r = statistics.median(full), statistics.median(regress)
    print(f"\nsite of 10 systems, 3 PLCs, one-device change: regress {r:.1f}s vs two full runs "
          f"{f:.1f}s = {r / f:.2f}x (target <= 0.5x)")  # fmt: skip


def snapshot_times(args: argparse.Namespace) -> None:
    from restoredrill.twins import snapshot
    from restoredrill.twins.plc import InThread, PlcTwin
    from restoredrill.twins.registers import validate_register_map

    regmap = validate_register_map(
        {"tags": [{"name": f"r{i}", "table": "holding", "address": i, "initial": i % 65536}
                  for i in range(10_000)]}
    )  # fmt: skip
    times = []
    with InThread(PlcTwin(regmap)).start() as twin:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            entries = asyncio.run(snapshot.modbus("127.0.0.1", twin.twin.port, regmap))
            times.append(time.perf_counter() - t0)
            assert len(entries) == 10_000 and entries["unit 1 holding 9999"].value == 9999
    print(f"Modbus snapshot, 10,000-register map: median {statistics.median(times) * 1000:.0f} ms "
          f"(best {min(times) * 1000:.0f} ms, {args.repeat} runs)")  # fmt: skip
    port, stop = opcua_server(1000)
    try:
        url = f"opc.tcp://127.0.0.1:{port}/bench/"
        for window in (0.0, 3.0):
            times = []
            for _ in range(args.repeat if window == 0 else 2):
                t0 = time.perf_counter()
                entries = asyncio.run(snapshot.opcua(url, window=window))
                times.append(time.perf_counter() - t0)
                assert sum(k.startswith("Objects/2:Bench/") for k in entries) == 1000
            print(f"OPC UA snapshot, 1,000-node address space, window {window:g}s: median "
                  f"{statistics.median(times):.2f}s (best {min(times):.2f}s)")  # fmt: skip
    finally:
        stop()


def opcua_server(count: int) -> tuple[int, object]:
    from asyncua import Server, ua

    loop = asyncio.new_event_loop()
    box: dict = {}

    async def start() -> None:
        server = Server()
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0/bench/")
        idx = await server.register_namespace("urn:bench:regress")
        folder = await server.nodes.objects.add_folder(idx, "Bench")
        for i in range(count):
            await folder.add_variable(idx, f"V{i:04d}", float(i), varianttype=ua.VariantType.Double)
        await server.start()
        box["server"] = server
        box["port"] = server.bserver._server.sockets[0].getsockname()[1]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(120)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(box["server"].stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return box["port"], stop


def leftovers(run_ids: list[str]) -> list[str]:
    """Containers and networks any of these runs left (there must be none)."""
    import docker

    client = docker.from_env()
    found = []
    for run_id in run_ids:
        label = {"label": f"restoredrill.run={run_id}"}
        found += [c.name for c in client.containers.list(all=True, filters=label)]
        found += [n.name for n in client.networks.list(filters=label)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-site", action="store_true", help="only the snapshot times")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="restoredrill-bench-regress-"))
    try:
        snapshot_times(args)
        if not args.skip_site:
            site_rounds(args, root)
        print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
