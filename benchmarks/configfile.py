#!/usr/bin/env python3
"""How fast do config files load, and how fast is a hostile one refused? (issues 8, 9, 11)

Files are generated in a temporary directory (removed at the end); nothing is contacted.

- a register map of 10,000 tags (YAML, the demo's block style, ~1.3 MB; and the same as
  CSV): parsed by ``restoredrill.configfile`` (libyaml events, plain values + a line
  table), and loaded whole (parse + validation) by ``load_register_map``; for contrast
  PyYAML's ``CSafeLoader`` without lines, and ruamel.yaml's round-trip loader (the loader
  before configfile) if it is installed;
- a site file with 10,000 check values (10 systems, one Modbus check of 1,000 values
  each): parsed, and loaded whole by ``load_site`` (parse, validation, cross-checks);
- hostile input: the alias bomb of issue 8 (9 levels of 9, ~387 million values expanded),
  through ``configfile.parse`` and ``load_site``; a 40,000-digit duration through
  ``parse_duration``, and the old duration pattern on 2,500 and 5,000 digits (it is
  quadratic: 40,000 digits took 70 s).

Each figure is the median and best of ``--repeat`` runs, wall clock and this process's
CPU time (CPU time is less disturbed by other processes on a shared machine); the load
average is printed. Targets (issue 11): a 10,000-tag map loads in <= 0.5 s, a site with
10,000 check values parses in <= 0.5 s.

    .venv/bin/python benchmarks/configfile.py [--repeat 5] [--no-ruamel]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from restoredrill import configfile
from restoredrill.durations import parse_duration
from restoredrill.flows.inventory import InventoryError, load_site
from restoredrill.twins.registers import load_register_map

TAGS = 10_000
SYSTEMS, VALUES = 10, 1_000


def register_map_yaml() -> str:
    lines = ["name: big-plc", "tick: 0.2", "tags:"]
    for i in range(TAGS):
        lines += [
            f"  - name: tag_{i}          # a comment, as exported maps have",
            "    table: holding",
            f"    address: {i}",
            "    type: uint16",
            "    behaviour: ramp",
            "    min: 0",
            "    max: 500",
            "    period: 60",
        ]
    return "\n".join(lines) + "\n"


def register_map_csv() -> str:
    rows = ["name,table,address,type,behaviour,min,max,period"]
    rows += [f"tag_{i},holding,{i},uint16,ramp,0,500,60" for i in range(TAGS)]
    return "\n".join(rows) + "\n"


def site_yaml() -> str:
    lines = ["site: bench", "sandbox: {subnets: [10.77.0.0/24]}", "systems:"]
    for s in range(SYSTEMS):
        lines += [
            f"  - name: sys{s}",
            f"    backup: {{kind: image_archive, path: backups/s{s}.tar}}",
            "    rto: 15m",
            "    checks:",
            "      - kind: modbus",
            f"        host: 10.77.0.{100 + s}",
            "        values:",
        ]
        lines += [
            f"          - {{table: holding, address: {v}, type: uint16, min: 0, max: 500}}"
            for v in range(VALUES)
        ]
    return "\n".join(lines) + "\n"


def bomb_yaml() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    return text + "site: x\nsystems: []\n"


def measure(fn: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return walls, cpus


def show(label: str, fn: Callable[[], Any], repeat: int, target: float | None = None) -> float:
    walls, cpus = measure(fn, repeat)
    med = statistics.median(walls)
    line = (
        f"  {label:<52} wall median {med * 1000:8.1f} ms  best {min(walls) * 1000:8.1f} ms"
        f"   cpu median {statistics.median(cpus) * 1000:8.1f} ms"
    )
    if target is not None:
        line += f"   (target <= {target * 1000:.0f} ms: {'ok' if med <= target else 'OVER'})"
    print(line, flush=True)
    return med


def refused(fn: Callable[[], Any]) -> Callable[[], str]:
    def run() -> str:
        try:
            fn()
        except (configfile.ConfigFileError, InventoryError, ValueError) as exc:
            return str(exc).splitlines()[0]
        raise AssertionError("accepted")

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-ruamel", action="store_true", help="skip the slow ruamel figure")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, PyYAML {yaml.__version__}, "
        f"libyaml {yaml.__with_libyaml__}, parser {configfile.PARSER.__name__}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores shared)")
    with tempfile.TemporaryDirectory(prefix="restoredrill-bench-configfile-") as tmp:
        d = Path(tmp)
        (d / "map.yaml").write_text(register_map_yaml())
        (d / "map.csv").write_text(register_map_csv())
        (d / "site.yaml").write_text(site_yaml())
        (d / "bomb.yaml").write_text(bomb_yaml())
        text = (d / "map.yaml").read_text()
        n = args.repeat

        print(f"\nregister map, {TAGS:,} tags ({len(text) / 1e6:.1f} MB YAML)")
        show("configfile.parse (values + lines)", lambda: configfile.parse(text), n)
        show(
            "yaml.load CSafeLoader (values, no lines)",
            lambda: yaml.load(text, Loader=yaml.CSafeLoader),
            n,
        )
        show(
            "load_register_map YAML (parse + validate)",
            lambda: load_register_map(d / "map.yaml"),
            n,
            0.5,
        )
        show(
            "load_register_map CSV (parse + validate)",
            lambda: load_register_map(d / "map.csv"),
            n,
            0.5,
        )
        if not args.no_ruamel:
            try:
                from ruamel.yaml import YAML
            except ImportError:
                print("  ruamel.yaml round-trip (before): not installed")
            else:
                show("ruamel.yaml round-trip parse (before)", lambda: YAML(typ="rt").load(text), 1)

        site = (d / "site.yaml").read_text()
        print(f"\nsite file, {SYSTEMS * VALUES:,} check values ({len(site) / 1e6:.1f} MB)")
        show("configfile.parse (values + lines)", lambda: configfile.parse(site), n, 0.5)
        show("load_site (parse + validate + cross-check)", lambda: load_site(d / "site.yaml"), n)
        if not args.no_ruamel:
            try:
                from ruamel.yaml import YAML
            except ImportError:
                pass
            else:
                show("ruamel.yaml round-trip parse (before)", lambda: YAML(typ="rt").load(site), 1)

        print("\nhostile input (each refused with file:line)")
        bomb = (d / "bomb.yaml").read_text()
        print(f"    {refused(lambda: configfile.parse(bomb, 'bomb.yaml'))()}")
        show(
            "alias bomb, 9 levels of 9: configfile.parse",
            refused(lambda: configfile.parse(bomb, "bomb.yaml")),
            n,
        )
        show("alias bomb: load_site", refused(lambda: load_site(d / "bomb.yaml")), n)
        digits = "9" * 40_000 + "h"
        show("parse_duration, 40,000 digits", refused(lambda: parse_duration(digits)), n)
        old = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")  # the pattern before (quadratic)
        for size in (2_500, 5_000):
            text_n = "9" * size + "x"
            show(
                f"old duration pattern, {size:,} digits (before)",
                lambda t=text_n: old.sub("", t),
                1,
            )
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
