"""The life of one system in a run: locate → restore → start → ready → checks → teardown.

Every step is one function ``step(job) -> None`` on a :class:`SystemJob`; timing,
progress, errors and the watchdog are handled once, in :func:`run_step`. The steps use
only the twin contract (``twins/base.py``): whichever backend runs the sandbox, and
whichever kind of twin (container, VM) the restore calls for.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restoredrill.checks.base import CheckResult, SandboxGuard, Status
from restoredrill.checks.registry import run_check
from restoredrill.errors import RestoredrillError
from restoredrill.twins.base import Artifact, Restored, Sandbox, Twin, TwinError
from restoredrill.twins.files import resolve_files
from restoredrill.twins.limits import Limits
from restoredrill.twins.readiness import wait_ready
from restoredrill.twins.sources.base import BackupError, BackupRef, RestoreContext

from .inventory import LoadedSite, System
from .progress import SystemProgress, emit
from .results import StepTiming, SystemResult, Verdict
from .verdicts import judge_system


class StepFailed(RestoredrillError):
    """A step could not complete; ``reason`` says why in one line a person can act on
    (it becomes the system's verdict, never an exit code of its own)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.args = (step, reason)  # pickles as it was made
        self.step = step
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.step}: {self.reason}"


class WatchdogExpired(StepFailed):
    pass


class SystemJob:
    """Everything one system's verification holds while it runs."""

    def __init__(
        self,
        loaded: LoadedSite,
        system: System,
        sandbox: Sandbox,
        run_id: str,
        watchdog_factor: float = 3.0,
    ) -> None:
        self.loaded = loaded
        self.system = system
        self.sandbox = sandbox
        self.run_id = run_id
        self.guard = SandboxGuard(list(sandbox.networks), confined=sandbox.is_inside)
        self.limits: Limits = loaded.site.limits(system.name)
        self.limit_reached: str | None = None
        """Which limit the twin hit (judged before it is removed)."""
        self.ref: BackupRef | None = None
        self.restored: Restored | None = None
        self.twin: Twin | None = None
        self.workdir: Path | None = None
        self.platform: dict[str, Any] | None = None
        """What the twin ran on (a VM: accelerator, firmware, ...), kept for the evidence."""
        self.artifacts: dict[str, Artifact] = {}
        """Files kept as evidence (a VM's console log), by name."""
        self.steps: list[StepTiming] = []
        self.checks: list[CheckResult] = []
        self.started_at = datetime.now(UTC)
        self.t_started = time.perf_counter()
        self.t_restore: float | None = None
        self.t_checks_done: float | None = None
        self.current = "waiting"
        self.expired_in: str | None = None
        self.progress = SystemProgress(system.name, rto_s=system.rto.total_seconds())
        self._limit = system.rto.total_seconds() * watchdog_factor
        self._timer: threading.Timer | None = None
        self.cancel = threading.Event()
        """Set by the watchdog: a restore in progress stops between chunks."""

    # --- watchdog -------------------------------------------------------------------
    def arm_watchdog(self) -> None:
        self.progress.started = time.monotonic()
        self._timer = threading.Timer(self._limit, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def disarm_watchdog(self) -> None:
        if self._timer:
            self._timer.cancel()

    def _expire(self) -> None:
        self.expired_in = self.current
        self.cancel.set()
        if self.twin is not None:  # unblock a step waiting on the twin
            self.note_limits()
            self.keep_artifacts()
            with contextlib.suppress(Exception):  # teardown will try again
                self.sandbox.remove(self.twin)

    def interrupt(self) -> None:
        """The run is interrupted (Ctrl-C): stop where it is, as the watchdog does, so a
        step waiting on the twin returns and the system's teardown runs at once."""
        if self.expired_in is None:
            self.disarm_watchdog()
            self._expire()

    def watchdog_message(self) -> str:
        """What a step or check cut short by the watchdog says (not its own timeout)."""
        rto = self.system.rto.total_seconds()
        return f"stopped by the watchdog after {self._limit:.0f}s ({self._limit / rto:.0f}x RTO)"

    def check_watchdog(self) -> None:
        if self.expired_in:
            raise WatchdogExpired(
                self.expired_in, f"{self.watchdog_message()} in step {self.expired_in}"
            )

    def artifacts_dir(self) -> Path:
        """Where this system's evidence files go: ``.restoredrill/artifacts/<run>/<system>/``
        beside the site file (``$XDG_STATE_HOME/restoredrill/artifacts/…`` if read-only)."""
        for base in (self.loaded.base_dir / ".restoredrill", _state_dir()):
            folder = base / "artifacts" / self.run_id / self.system.name
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
                return folder
        return folder

    def keep_artifacts(self) -> None:
        """Save what shows the twin's life (a VM's console), while it can still be read;
        once: the evidence names the file by its digest."""
        if self.twin is None or self.artifacts:
            return
        with contextlib.suppress(Exception):  # evidence is a bonus, never a new failure
            for artifact in self.twin.keep(self.artifacts_dir()):
                self.artifacts[artifact.name] = artifact

    def note_limits(self) -> None:
        """Remember which limit the twin hit, while it can still be told."""
        if self.twin is not None and self.limit_reached is None:
            with contextlib.suppress(Exception):  # a finding is a bonus, never a new failure
                self.limit_reached = self.twin.limit_reached()


def run_step(job: SystemJob, name: str, fn: Callable[[SystemJob], None]) -> None:
    """Run one step with timing, progress and clear failure reasons.

    Teardown runs whatever the watchdog says; every other step stops once it fired.
    """
    watched = name != "teardown"
    if watched:
        job.check_watchdog()
    job.current = name
    job.progress.step = name
    emit(job.progress)
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        fn(job)
    except Exception as exc:  # every failure becomes a reason with a verdict
        failure = _failure(job, name, exc, watched)
        job.steps.append(_timing(name, started_at, t0, False, failure.reason))
        raise failure from exc
    job.steps.append(_timing(name, started_at, t0, True, ""))
    if watched:
        job.check_watchdog()


def _failure(job: SystemJob, name: str, exc: Exception, watched: bool) -> StepFailed:
    """The failure a step ends with: the watchdog's if it cut the step short (the step's
    own error then is only a symptom), else the step's error in one line."""
    if watched and job.expired_in:
        return WatchdogExpired(
            job.expired_in, f"{job.watchdog_message()} in step {job.expired_in}"
        )
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, BackupError | TwinError):
        return StepFailed(name, str(exc))
    return StepFailed(name, f"{type(exc).__name__}: {exc}")


def _timing(name: str, started_at: datetime, t0: float, ok: bool, message: str) -> StepTiming:
    return StepTiming(
        name=name,
        started_at=started_at,
        duration_s=round(time.perf_counter() - t0, 4),
        ok=ok,
        message=message,
    )


# --- the steps ------------------------------------------------------------------------


def locate(job: SystemJob) -> None:
    """Find the backup to restore and record its identity."""
    job.ref = job.system.backup.locate(job.loaded.base_dir)


def restore(job: SystemJob) -> None:
    """Restore the backup into something the twin backend can run."""
    assert job.ref is not None
    job.t_restore = time.perf_counter()
    job.workdir = Path(tempfile.mkdtemp(prefix=f"{job.system.name}-", dir=job.sandbox.scratch))
    own = job.system.run.limits
    ctx: RestoreContext = job.sandbox.restore_context(
        job.workdir,
        f"restoredrill-run/{job.system.name}:{job.run_id}",
        labels=labels(job),
        limit=job.loaded.site.limits(job.system.name).restore,
        ratio_guard=own is None or own.restore is None,  # its own limit vouches for its size
        cancel=job.cancel,
    )
    job.restored = job.system.backup.restore(job.ref, ctx)


def start(job: SystemJob) -> None:
    """Start the restored system on the run's isolated network."""
    assert job.restored is not None
    spec = job.system.run
    if spec.volumes:
        spec = spec.model_copy(
            update={"volumes": {k: _host_path(job, v) for k, v in spec.volumes.items()}}
        )
    if spec.vm is not None and spec.vm.access is not None:  # a key or password file
        access = spec.vm.access.resolved(job.loaded.base_dir)
        vm = spec.vm.model_copy(update={access.protocol: access})
        spec = spec.model_copy(update={"vm": vm})
    spec = resolve_files(spec, job.loaded.base_dir)
    job.twin = job.sandbox.start(
        spec, job.restored, name=job.system.name, labels=labels(job), limits=job.limits
    )
    job.twin.evidence_dir = job.artifacts_dir()  # screenshots are kept there
    job.platform = job.twin.platform()
    job.limits = getattr(job.twin, "limits", None) or job.limits  # what it really runs with


def ready(job: SystemJob) -> None:
    """Wait until the readiness probe passes (each in turn, if several), or the twin dies,
    or a probe times out; tcp and http probes connect from inside the sandbox
    (``twin.inside()``)."""
    assert job.twin is not None
    probes = job.system.ready
    if probes is not None:
        for probe in probes if isinstance(probes, list) else [probes]:
            wait_ready(job.twin, probe)
    elif not job.twin.is_running():
        raise TwinError(f"{job.system.name} exited at once; last output:\n{job.twin.logs(20)}")


def checks(job: SystemJob) -> None:
    """Run every check; a failed check is a result, not an exception. Network checks
    run inside the sandbox; a check the watchdog cut short says so."""
    assert job.twin is not None
    for spec in job.system.checks:
        job.check_watchdog()
        found = run_check(_resolved(job, spec), job.twin, job.guard)
        if job.expired_in:
            why = job.watchdog_message()
            found = [
                c if c.passed else c.model_copy(update={"status": Status.ERROR, "message": why})
                for c in found
            ]
        job.checks.extend(found)
    job.t_checks_done = time.perf_counter()


def teardown(job: SystemJob) -> None:
    """Keep the twin's evidence files, then remove the twin, what its restore created and
    its scratch directory."""
    job.note_limits()
    job.keep_artifacts()
    twin, job.twin = job.twin, None
    if twin is not None:
        job.sandbox.remove(twin)
    if job.restored is not None and twin is None:
        with contextlib.suppress(Exception):  # already gone
            job.sandbox.discard(job.restored)
    if job.workdir is not None:
        shutil.rmtree(job.workdir, ignore_errors=True)
        job.workdir = None


STEPS: list[tuple[str, Callable[[SystemJob], None]]] = [
    ("locate", locate),
    ("restore", restore),
    ("start", start),
    ("ready", ready),
    ("checks", checks),
]


# --- verdict --------------------------------------------------------------------------


RECOVERY_STEPS = ("restore", "start", "ready", "checks")
"""The steps whose own times add up to a system's recovery time."""


def recovery_time(steps: list[StepTiming]) -> float:
    """A system's recovery time: the sum of its recovery steps' own times (each timed around
    the step's own work only, see :func:`run_step`), never the time restoredrill, Prefect
    or other systems took between them."""
    return round(sum(s.duration_s for s in steps if s.name in RECOVERY_STEPS), 3)


def framework_time(job: SystemJob) -> float:
    """The system's time so far outside its own steps: Prefect's task machinery, progress
    display, waiting for this process's threads (recorded apart, never judged)."""
    spent = time.perf_counter() - job.t_started
    return round(max(spent - sum(s.duration_s for s in job.steps), 0.0), 3)


def verdict(job: SystemJob, failure: StepFailed | None) -> SystemResult:
    """Judge the run of one system against its checks, RTO and RPO: its recovery time is
    its own steps' time (:func:`recovery_time`); the framework's is recorded apart."""
    system = job.system
    rto = system.rto.total_seconds()
    recovery = recovery_time(job.steps) if job.t_checks_done is not None else None
    age = None
    if job.ref is not None and job.ref.created_at is not None:
        created = job.ref.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        age = round((job.started_at - created).total_seconds(), 1)
    job.note_limits()
    job.keep_artifacts()
    judged = judge_system(
        rto_s=rto,
        rpo_s=system.rpo.total_seconds() if system.rpo else None,
        recovery_s=recovery,
        backup_age_s=age,
        checks=job.checks,
        failed_step=failure.step if failure else None,
        failure=_relative(failure.reason) if failure else "",
        watchdog=isinstance(failure, WatchdogExpired),
        limit_reached=job.limit_reached,
    )
    return SystemResult(
        system=system.name,
        verdict=judged.verdict,
        reason=judged.reason,
        labels=system.labels.as_dict(),
        started_at=job.started_at,
        finished_at=datetime.now(UTC),
        recovery_time_s=recovery,
        framework_s=framework_time(job),
        rto_s=rto,
        rpo_s=system.rpo.total_seconds() if system.rpo else None,
        backup_age_s=age,
        near_miss=judged.near_miss,
        backup=job.ref,
        steps=job.steps,
        checks=job.checks,
        limits=job.limits.model_dump(mode="json"),
        platform=platform(job),
    )


def platform(job: SystemJob) -> dict[str, Any] | None:
    """What the twin ran on, with the evidence files it left (``None``: a plain container)."""
    if job.platform is None and not job.artifacts:
        return None
    facts = dict(job.platform or {})
    for name, artifact in job.artifacts.items():
        facts[name] = artifact.as_dict()
    return facts


def _state_dir() -> Path:
    import os

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "restoredrill"


def unrun(system: System, verdict: Verdict, reason: str, **extra: Any) -> SystemResult:
    """The result of a system that never got through its steps (blocked, lost, …)."""
    return SystemResult(
        system=system.name,
        verdict=verdict,
        reason=reason,
        labels=system.labels.as_dict(),
        rto_s=system.rto.total_seconds(),
        rpo_s=system.rpo.total_seconds() if system.rpo else None,
        **extra,
    )


def _relative(text: str) -> str:
    """Shorten absolute paths under the working directory in a reason."""
    cwd = str(Path.cwd())
    return text.replace(cwd + "/", "") if cwd != "/" else text


def labels(job: SystemJob) -> dict[str, str]:
    """The run's owner labels (so a crashed run's leftovers are found) and the system's."""
    owner = dict(getattr(job.sandbox, "labels", {}) or {})
    return {**owner, "restoredrill.run": job.run_id, "restoredrill.system": job.system.name}


def _host_path(job: SystemJob, value: str) -> str:
    if value.startswith(("/", ".", "~")) or "/" in value:
        return str(job.loaded.resolve(value))
    return value  # a named volume


def _resolved(job: SystemJob, spec: Any) -> Any:
    """Resolve a check's relative file path against the site file's directory."""
    file = getattr(spec, "file", None)
    if isinstance(file, str | Path) and getattr(spec, "kind", "") == "testinfra":
        return spec.model_copy(update={"file": job.loaded.resolve(file)})
    return spec
