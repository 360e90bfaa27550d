#!/usr/bin/env python3
"""What does the evidence store cost? Record, verify, and the 0.1 reading (issue 8); a
year of a large plant: report, history, verify, export, metrics (issue 13).

Default: on a throwaway SQLite file, ``--runs`` runs of one system with ``--checks`` checks
each (whole-number floats, ints, nested values) are recorded one by one, then the chain is
verified. Then the worst case of reading a store written by restoredrill 0.1, whose SQLite
columns lost the int/float type of top-level whole numbers: one run with 16 such numbers
(2^16 readings, the most ``evidence verify`` tries) whose hash matches only the last
reading tried. Prints medians of ``--repeat`` repetitions.

``--year``: a year of nightly runs of ``--systems`` systems (500: 182,500 system results,
~2 M check results, signed) written by benchmarks/yeardata.py into SQLite and into the
PostgreSQL of ``$RESTOREDRILL_TEST_PG_URL`` (a database of its own, dropped after); then
``report`` (90 days), ``history SYSTEM``, ``evidence verify`` (whole chain), ``evidence
export --since 30d`` and ``metrics``, each timed in this process (the work) and as the
command a user runs (with Python's start-up), and the database size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.canonical import chain_hash, legacy_mismatch, unsure
from restoredrill.flows.evidence import GENESIS, EvidenceStore
from restoredrill.flows.results import RunRecord, SystemResult, Verdict

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def a_run(i: int, checks: int) -> RunRecord:
    values = [141312.0, 200, {"min": 40.0, "max": 60}, [1.0, 2, "x"], -0.0, 63.5]
    return RunRecord(
        run_id=f"bench-{i}",
        site="bench",
        started_at=T0 + timedelta(hours=i),
        systems=[
            SystemResult(
                system="historian",
                verdict=Verdict.PASS,
                checks=[
                    CheckResult(name=f"c{j}", kind="modbus", status=Status.PASS,
                                expected=values[j % 6], observed=values[(j + 1) % 6])
                    for j in range(checks)
                ],
            )
        ],
    )  # fmt: skip


def store_figures(url: str, runs: int, checks: int) -> tuple[float, float]:
    with EvidenceStore(url) as store:
        started = time.perf_counter()
        for i in range(runs):
            store.record(a_run(i, checks))
        record_s = (time.perf_counter() - started) / runs
        started = time.perf_counter()
        assert store.verify().ok
        verify_s = time.perf_counter() - started
    return record_s, verify_s


def legacy_worst_case(checks: int) -> float:
    run = a_run(0, checks)
    for c in run.systems[0].checks[:8]:
        c.expected, c.observed = 141312.0, 7.0  # 16 whole-number floats, as 0.1 stored them
    want = chain_hash(GENESIS, run)
    for c in run.systems[0].checks[:8]:
        c.expected, c.observed = unsure(141312), unsure(7)
    started = time.perf_counter()
    assert legacy_mismatch(GENESIS, run, want) is None
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--year", action="store_true", help="the year of a large plant")
    parser.add_argument("--systems", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    if args.year:
        from evidence_year import year

        return year(args)
    with tempfile.TemporaryDirectory(prefix="restoredrill-bench-") as tmp:
        figures = [
            store_figures(f"sqlite:///{Path(tmp) / f'evidence-{r}.db'}", args.runs, args.checks)
            for r in range(args.repeat)
        ]
    record_s = statistics.median(f[0] for f in figures)
    verify_s = statistics.median(f[1] for f in figures)
    print(
        f"sqlite: record {record_s * 1000:.1f} ms/run ({args.checks} checks), verify "
        f"{args.runs} runs {verify_s:.2f} s ({verify_s / args.runs * 1000:.2f} ms/run)"
    )
    legacy = statistics.median(legacy_worst_case(args.checks) for _ in range(args.repeat))
    print(f"0.1 record, 16 unsure whole numbers (65,536 readings, match last): {legacy:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
