"""Runs of a small plant over days, recorded through the real store (for the report,
metrics, signing and export tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.results import RunRecord, StepTiming, SystemResult, Verdict
from restoredrill.twins.sources.base import BackupRef

SITE = "plant"
SYSTEMS = {"historian": ("ot", 300.0), "mes": ("it", 600.0), "hmi": ("ot", 120.0)}
"""name: (zone, RTO seconds); the inventory adds ``erp``, never verified."""


def site_yaml(root: Path, url: str, key: Path | None = None) -> Path:
    """A site file naming the plant's systems (and erp) on the store at ``url``."""
    lines = [f"site: {SITE}", f"evidence: {url}", "rto: 20m"]
    if key is not None:
        lines.append(f"signing_key: {key}")
    lines.append("systems:")
    for name, (zone, rto) in {**SYSTEMS, "erp": ("it", 900.0)}.items():
        lines.append(
            f"  - {{name: {name}, labels: {{zone: {zone}}}, rto: {int(rto)}s, rpo: 1d, "
            f"backup: {{kind: image_archive, directory: backups, pattern: '{name}-*.tar'}}}}"
        )
    path = root / "site.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def a_run(day: int, now: datetime, *, prefix: str = "run") -> RunRecord:
    """The run of ``day`` days before ``now``: historian fails on day 3, mes is slow on day 5."""
    start = (now - timedelta(days=day)).replace(microsecond=0)
    systems = []
    for i, (name, (zone, rto)) in enumerate(SYSTEMS.items()):
        recovery = 40.0 + 10 * i + day
        verdict = Verdict.PASS
        checks = [
            CheckResult(name="port open", kind="tcp", status=Status.PASS, expected=8080,
                        observed=8080, duration_s=0.01),
            CheckResult(name="tank level", kind="modbus", status=Status.PASS,
                        expected={"min": 40.0, "max": 60.0}, observed=52.5, duration_s=0.2),
        ]  # fmt: skip
        if name == "historian" and day == 3:
            verdict = Verdict.FAIL
            checks[1] = checks[1].model_copy(update={"status": Status.FAIL, "observed": 99.5})
        if name == "mes" and day == 5:
            verdict, recovery = Verdict.RTO_EXCEEDED, rto + 42.0
        systems.append(
            SystemResult(
                system=name,
                verdict=verdict,
                reason="" if verdict is Verdict.PASS else f"{verdict.value}: see checks",
                labels={"zone": zone},
                started_at=start,
                finished_at=start + timedelta(seconds=recovery),
                recovery_time_s=recovery,
                rto_s=rto,
                rpo_s=86400.0,
                backup_age_s=3600.0 * (2 + i),
                backup=BackupRef(
                    source="image_archive",
                    backup_id=f"{name}-{day}.tar",
                    location=f"/backups/{name}-{day}.tar",
                    size_bytes=1000 + day,
                    sha256=f"{day:02d}" * 32,
                    created_at=start - timedelta(hours=2),
                ),
                steps=[
                    StepTiming(name="restore", started_at=start, duration_s=recovery / 2),
                    StepTiming(name="checks", started_at=start, duration_s=recovery / 2),
                ],
                checks=checks,
            )  # fmt: skip
        )
    worst = next((s.verdict for s in systems if s.verdict is not Verdict.PASS), Verdict.PASS)
    return RunRecord(
        run_id=f"{prefix}-{day:03d}",
        site=SITE,
        started_at=start,
        finished_at=start + timedelta(minutes=5),
        trigger="schedule",
        verdict=worst,
        site_recovery_time_s=200.0 + day,
        site_rto_s=1200.0,
        systems=systems,
    )


def fill(store: EvidenceStore, days: int = 10, now: datetime | None = None) -> list[RunRecord]:
    """Record a run for each of the last ``days`` days, oldest first."""
    now = now or datetime.now(UTC)
    runs = [a_run(day, now) for day in range(days, 0, -1)]
    for run in runs:
        store.record(run)
    return runs
