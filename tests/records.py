"""A run record with every kind of value the evidence store keeps (for the evidence,
alert and serve tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.results import RunRecord, StepTiming, SystemResult, Verdict
from restoredrill.twins.sources.base import BackupRef

T0 = datetime(2025, 3, 1, 2, 0, 0, 123456, tzinfo=UTC)


def make_run(run_id: str, historian: Verdict = Verdict.PASS, offset_h: int = 0) -> RunRecord:
    start = T0 + timedelta(hours=offset_h)
    local = timezone(timedelta(hours=2))
    historian_checks = [
        CheckResult(name="tags served", kind="opcua", status=Status.PASS, expected={"count": 12},
                    observed={"count": 12, "nodes": ["ns=2;s=Temp", "ns=2;s=Flow"]}, duration_s=0.25),
        CheckResult(name="last sample", kind="http", status=Status(historian.value) if historian in
                    (Verdict.FAIL, Verdict.ERROR) else Status.PASS, expected=200, observed=503
                    if historian is Verdict.FAIL else 200, duration_s=0.1, message="Grüße ✓"),
    ]  # fmt: skip
    return RunRecord(
        run_id=run_id,
        site="demo-plant",
        started_at=start,
        finished_at=start + timedelta(minutes=5),
        trigger="schedule",
        verdict=Verdict.PASS if historian is Verdict.PASS else Verdict.FAIL,
        site_recovery_time_s=301.5,
        site_rto_s=1800.0,
        systems=[
            SystemResult(
                system="historian",
                verdict=historian,
                reason="" if historian is Verdict.PASS else "1 check failed",
                labels={"zone": "ot", "role": "historian"},
                started_at=start.astimezone(local),
                finished_at=start + timedelta(seconds=252.25),
                recovery_time_s=252.25,
                rto_s=900.0,
                rpo_s=86400.0,
                backup_age_s=10920.0,
                backup=BackupRef(source="restic", backup_id="4f2a9c1e", location="/backups/restic",
                                 size_bytes=5_000_000_000, sha256=None,
                                 created_at=start - timedelta(hours=3)),
                steps=[
                    StepTiming(name=n, started_at=start + timedelta(seconds=i * 10), duration_s=9.5 + i)
                    for i, n in enumerate(["restore", "start", "ready", "checks", "teardown"])
                ],
                checks=historian_checks,
            ),
            SystemResult(
                system="mes",
                verdict=Verdict.PASS,
                labels={"zone": "it"},
                started_at=start.replace(tzinfo=None),  # naive: taken as UTC
                recovery_time_s=40.0,
                rto_s=600.0,
                near_miss=False,
                backup=BackupRef(source="image", backup_id="sha256:ab12", location="/backups/mes.tar.zst",
                                 size_bytes=123456, sha256="ab" * 32),
                checks=[CheckResult(name="port 8080", kind="tcp", status=Status.PASS, expected=[8080, "open"],
                                    observed=[8080, "open"], duration_s=0.001)],
            ),
            SystemResult(system="erp", verdict=Verdict.BLOCKED, reason="depends on mes"),
        ],
    )  # fmt: skip
