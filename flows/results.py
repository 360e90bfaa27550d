"""The record of a run: verdicts, step timings, check results, backup identity."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from restoredrill.checks.base import CheckResult, Status
from restoredrill.twins.sources.base import BackupRef


def new_run_id() -> str:
    """A run's id: when it started (UTC) and 4 random hex digits, e.g. r20261124-020000-3fa2."""
    return datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    RTO_EXCEEDED = "rto_exceeded"
    RPO_EXCEEDED = "rpo_exceeded"
    ERROR = "error"
    BLOCKED = "blocked"

    @property
    def ok(self) -> bool:
        return self is Verdict.PASS


class StepTiming(BaseModel):
    """One lifecycle step of one system: restore, start, ready, checks, teardown."""

    name: str
    started_at: datetime
    duration_s: float
    ok: bool = True
    message: str = ""


class SystemResult(BaseModel):
    """What happened to one system in one run."""

    system: str
    verdict: Verdict
    reason: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    recovery_time_s: float | None = None
    """The own times of its restore, start, ready and checks steps, summed (None if it
    never got through its checks): judged against the RTO. Time restoredrill and Prefect
    take between the steps is not in it (see ``framework_s``)."""
    framework_s: float | None = None
    """Its time in restoredrill outside its own steps (Prefect's task machinery, progress,
    thread scheduling), from its start to its verdict; recorded, never judged. None in
    records made before it was recorded."""
    rto_s: float | None = None
    rpo_s: float | None = None
    backup_age_s: float | None = None
    near_miss: bool = False
    """Passed, but above 80% of its RTO."""
    backup: BackupRef | None = None
    steps: list[StepTiming] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    worker: str | None = None
    """The Prefect worker that verified it (scale-out); None when run in-process."""
    limits: dict[str, Any] | None = None
    """The twin's effective limits (memory, cpus, pids, ...); None when not recorded."""
    platform: dict[str, Any] | None = None
    """What the twin ran on when it is not a plain container: a VM's backend, accel (kvm
    or tcg), firmware, machine, disk formats, ``rto_note`` under TCG, and its evidence
    files (``console``: path and sha256); None for a container."""

    @property
    def emulated(self) -> bool:
        """Measured under TCG (emulation): the recovery time is not the plant's."""
        return bool(self.platform and self.platform.get("accel") == "tcg")

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status is not Status.PASS]


class RunRecord(BaseModel):
    """One verification of a site (or of some of its systems)."""

    run_id: str
    site: str
    started_at: datetime
    finished_at: datetime | None = None
    trigger: str = "manual"
    verdict: Verdict = Verdict.PASS
    site_recovery_time_s: float | None = None
    """Critical path through the dependency graph of measured recovery times."""
    site_rto_s: float | None = None
    systems: list[SystemResult] = Field(default_factory=list)
