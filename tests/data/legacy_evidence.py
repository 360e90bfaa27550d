"""The runs in the evidence databases written by restoredrill 0.1.0 (before check values
were stored as canonical JSON text), kept here to prove they still verify.

``evidence-0.1.0.sqlite`` and ``evidence-0.1.0.postgresql.sql`` were made with the code of
commit 960d3fa (``python tests/data/legacy_evidence.py URL``; the PostgreSQL one then with
``pg_dump --inserts --no-owner --no-privileges``). Their SQLite store turned every
whole-number float a check observed (141312.0) into an integer, so 0.1.0's own
``evidence verify`` called them altered.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.results import RunRecord, StepTiming, SystemResult, Verdict
from restoredrill.twins.sources.base import BackupRef

T0 = datetime(2026, 11, 20, 2, 0, 0, 250000, tzinfo=UTC)

VALUES: list[tuple[str, object, object]] = [
    ("disk used", 141312.0, 141312.0),  # the float SQLite made an int
    ("status", 200, 200),
    ("setpoint", 63.5, 63.5),
    ("zero", 0, -0.0),
    ("huge", 2**70, -(2**70)),  # beyond 64 bits: SQLite kept them as REAL
    ("nested", {"min": 40.0, "max": 60}, {"first": 1.0, "changed to": [2.0, 3]}),
    ("nothing", None, None),
    ("flag", True, 1),
    ("text", "42", "1e3"),
    ("not a number", None, float("nan")),  # 0.1.0 recorded NaN as null
]


def legacy_runs() -> list[RunRecord]:
    """Three runs: the first holds every kind of value, the others are ordinary."""
    runs = []
    for i in range(3):
        start = T0 + timedelta(days=i)
        values = VALUES if i == 0 else VALUES[:3]
        checks = [
            CheckResult(name=name, kind="http", status=Status.PASS, expected=exp, observed=obs,
                        duration_s=0.125, message="Grüße ✓")
            for name, exp, obs in values
        ]  # fmt: skip
        system = SystemResult(
            system="historian",
            verdict=Verdict.PASS,
            labels={"zone": "ot"},
            started_at=start,
            finished_at=start + timedelta(seconds=42.5),
            recovery_time_s=42.5,
            rto_s=300.0,
            backup=BackupRef(source="restic", backup_id=f"snap{i}", location="/b",
                             size_bytes=2**40, created_at=start - timedelta(hours=1)),
            steps=[StepTiming(name="restore", started_at=start, duration_s=12.0)],
            checks=checks,
            worker="worker1" if i == 1 else None,
        )  # fmt: skip
        runs.append(
            RunRecord(run_id=f"legacy-{i + 1}", site="plant", started_at=start,
                      finished_at=start + timedelta(minutes=1), systems=[system])
        )  # fmt: skip
    return runs


if __name__ == "__main__":
    from restoredrill.flows.evidence import EvidenceStore

    with EvidenceStore(sys.argv[1]) as store:
        for run in legacy_runs():
            store.record(run)
        print(store.verify())
