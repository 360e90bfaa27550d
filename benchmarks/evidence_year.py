"""``benchmarks/evidence.py --year``: a year of nightly runs of a large plant, timed.

For each backend: the data are written (yeardata.py), then each operation is timed
``--repeat`` times (median) in this process, and once more as the command a user types
(a new Python process: its start-up and imports included). Nothing is left behind: the
SQLite file's directory is removed, the PostgreSQL database dropped.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yeardata

from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.export import export
from restoredrill.flows.inventory import load_site
from restoredrill.flows.metrics import exposition
from restoredrill.flows.readiness import gather
from restoredrill.flows.report_html import html
from restoredrill.flows.signing import keygen

CLI = [sys.executable, "-m", "restoredrill.flows.cli"]


def timed(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(*args: str) -> float:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("RESTOREDRILL_SIGNING_KEY", None)
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr[-500:]}")
    return took


def pg_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the test server; returns its URL and how to drop it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = "restoredrill_bench_year"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(plain)
    url = plain.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    assert params.get("dbname")
    return url, drop


def size(store: EvidenceStore, path: Path | None) -> int:
    if path is not None:
        return path.stat().st_size
    with store._read() as conn:
        return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()


def one_backend(backend: str, args: Any, tmp: Path) -> dict[str, Any]:
    drop = None
    if backend == "sqlite":
        db = tmp / "evidence.db"
        url = f"sqlite:///{db}"
    else:
        admin = os.environ.get("RESTOREDRILL_TEST_PG_URL")
        if not admin:
            raise SystemExit("set RESTOREDRILL_TEST_PG_URL for the PostgreSQL figures")
        url, drop = pg_database(admin)
        db = None
    shape = yeardata.Shape(systems=args.systems, days=args.days)
    signer = keygen(tmp / f"{backend}.key")
    out: dict[str, Any] = {"backend": backend}
    try:
        with EvidenceStore(url) as store:
            started = time.perf_counter()
            yeardata.generate(store, shape, signer)
            out["generate"] = time.perf_counter() - started
            with store._read() as conn:
                for table in ("runs", "system_results", "check_results", "steps"):
                    out[table] = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            out["size"] = size(store, db)
        site = tmp / f"{backend}.yaml"
        site.write_text(yeardata.site_yaml(shape, url, str(tmp / f"{backend}.key")))
        loaded = load_site(site)
        inventory = [
            {"name": s.name, "zone": s.labels.zone, "role": "", "rto_s": s.rto.total_seconds(),
             "rpo_s": s.rpo.total_seconds() if s.rpo else None}
            for s in loaded.site.systems
        ]  # fmt: skip
        system = yeardata.system_names(shape)[len(inventory) // 2]
        with EvidenceStore.reader(url) as store:
            report = gather(store, shape.site, since=timedelta(days=90), inventory=inventory)
            assert report.chain is not None and report.chain.ok, report.chain
            out["report"] = timed(
                lambda: html(
                    gather(store, shape.site, since=timedelta(days=90), inventory=inventory)
                ),
                args.repeat,
            )
            out["report_quick"] = timed(
                lambda: html(gather(store, shape.site, since=timedelta(days=90), inventory=inventory,
                                    records=False)),
                args.repeat,
            )  # fmt: skip
            out["report_unverified"] = timed(
                lambda: html(gather(store, shape.site, since=timedelta(days=90), inventory=inventory,
                                    verify=False)),
                args.repeat,
            )  # fmt: skip
            out["history"] = timed(lambda: store.runs(limit=20, system=system), args.repeat)
            verified = store.verify()
            assert verified.ok and verified.runs == shape.days, verified
            out["verify"] = timed(store.verify, args.repeat)
            os.environ["RESTOREDRILL_VERIFY_WORKERS"] = "1"
            out["verify_one_process"] = timed(store.verify, 1)
            os.environ.pop("RESTOREDRILL_VERIFY_WORKERS")
            since = datetime.now(UTC) - timedelta(days=30)
            bundle = tmp / f"{backend}.intoto.jsonl"
            out["export"] = timed(lambda: export(store, bundle, signer, since=since), 1)
            out["bundle_size"] = bundle.stat().st_size
            out["metrics"] = timed(
                lambda: exposition(store, shape.site, [i["name"] for i in inventory]), args.repeat
            )
        html_out = tmp / f"{backend}.html"
        out["cli_report"] = command("report", str(site), "-o", str(html_out))
        out["report_html_size"] = html_out.stat().st_size
        out["cli_report_quick"] = command("report", str(site), "--quick", "-o", str(html_out))
        out["cli_history"] = command("history", system, "--site", str(site))
        out["cli_verify"] = command("evidence", "verify", "--site", str(site))
        out["cli_export"] = command("evidence", "export", "--site", str(site), "--since", "30d",
                                    "-o", str(tmp / "cli.jsonl"), "--key", str(tmp / f"{backend}.key"))  # fmt: skip
        out["cli_metrics"] = command("metrics", str(site), "-o", str(tmp / "m.prom"))
        out["cli_startup"] = command("--help")
    finally:
        if drop is not None:
            drop()
    return out


def year(args: Any) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="restoredrill-bench-year-") as tmp:
        for backend in args.backends.split(","):
            here = Path(tmp) / backend
            here.mkdir()
            results.append(one_backend(backend.strip(), args, here))
            shutil.rmtree(here)
    load = os.getloadavg()
    print(f"a year of nightly runs: {args.systems} systems x {args.days} days; load average "
          f"{load[0]:.1f} on {os.cpu_count()} cores; medians of {args.repeat}")  # fmt: skip
    for r in results:
        print(f"\n{r['backend']}: {r['runs']} runs, {r['system_results']:,} system results, "
              f"{r['check_results']:,} check results, {r['steps']:,} steps; "
              f"database {r['size'] / 2**20:,.0f} MiB; written in {r['generate']:.0f} s")  # fmt: skip
        rows = [
            ("report 90d (verify + figures + HTML)", r["report"], r["cli_report"], 3.0),
            (
                "report 90d --quick (links, signatures)",
                r["report_quick"],
                r["cli_report_quick"],
                3.0,
            ),
            ("  without any chain check", r["report_unverified"], None, None),
            ("history SYSTEM (20 runs)", r["history"], r["cli_history"], 0.5),
            ("evidence verify (whole chain)", r["verify"], r["cli_verify"], 10.0),
            ("  in one process", r["verify_one_process"], None, None),
            ("evidence export --since 30d", r["export"], r["cli_export"], None),
            ("metrics", r["metrics"], r["cli_metrics"], None),
        ]
        print(f"  {'operation':40} {'in-process':>11} {'command':>9} {'target':>7}")
        for name, inner, outer, target in rows:
            shown = f"{outer:8.2f}s" if outer is not None else " " * 9
            goal = f"{target:6.1f}s" if target else ""
            print(f"  {name:40} {inner:10.2f}s {shown} {goal}")
        print(
            f"  (a command's Python start-up alone: {r['cli_startup']:.2f} s; report HTML "
            f"{r['report_html_size'] / 2**20:.1f} MiB, bundle {r['bundle_size'] / 2**20:.0f} MiB)"
        )
    return 0
