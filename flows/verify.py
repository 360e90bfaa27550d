"""The Prefect flows: verify one system, verify a site in dependency waves."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from restoredrill.twins.base import Backend, Sandbox, backend

from . import lifecycle
from .inventory import LoadedSite, Site, claimed, load_site, waves
from .lifecycle import StepFailed, SystemJob, run_step
from .progress import emit
from .results import RunRecord, SystemResult, Verdict, new_run_id
from .verdicts import blockers, critical_path, site_verdict

if TYPE_CHECKING:
    from .alerts import Delivery


class RunContext:
    """What the systems of one run share: the site, the sandbox, twins kept for dependents."""

    def __init__(
        self, loaded: LoadedSite, run_id: str, sandbox: Sandbox, engine: Backend
    ) -> None:
        self.loaded = loaded
        self.run_id = run_id
        self.sandbox = sandbox
        self.engine = engine
        self.kept: dict[str, SystemJob] = {}
        self.running: set[SystemJob] = set()
        """Systems being verified now (stopped at once if the run is interrupted)."""
        self.lock = threading.Lock()
        self.devices: tuple[list[Any], list[Any]] = ([], [])
        self.device_error: str | None = None
        self.attached = False
        """Joined the sandbox another flow run opened (a dispatched system)."""


_RUNS: dict[str, RunContext] = {}


def _step_task(name: str, fn: Any) -> Any:
    """One lifecycle step as a named Prefect task (timing is recorded by run_step); its
    task runs are named after the step and the system, e.g. ``restore · db``."""

    def step(job: SystemJob) -> None:
        run_step(job, name, fn)

    step.__name__ = step.__qualname__ = name
    step.__doc__ = fn.__doc__
    return task(
        name=name,
        task_run_name=f"{name} · {{job.system.name}}",
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=0,
    )(step)


PLAIN_STEPS = frozenset({"locate"})
"""Steps run as plain calls, not Prefect tasks (a task run costs ~20 ms of this process;
locating a backup takes ~1 ms and is not one of the steps shown in the UI)."""
STEP_TASKS = {
    name: _step_task(name, fn)
    for name, fn in [*lifecycle.STEPS, ("teardown", lifecycle.teardown)]
    if name not in PLAIN_STEPS
}


@flow(name="verify-system", log_prints=False, persist_result=False)
def verify_system(
    site_path: str,
    system: str,
    run_id: str,
    keep_running: bool = False,
    dispatched: bool = False,
) -> SystemResult:
    """Restore one system into its twin, prove it works, time it, tear it down.

    ``dispatched``: a flow run of its own on a worker, joining the sandbox that the
    run's ``verify-site`` flow opened, reporting through its lease (see dispatch.py).
    """
    ctx = _RUNS.get(run_id)
    own = ctx is None
    if ctx is None and dispatched:
        ctx = attach_run(load_site(site_path), run_id)
    elif ctx is None:  # run on its own: open a sandbox for it alone
        ctx = open_run(load_site(site_path), run_id)
    if not dispatched:
        return _verify(ctx, system, run_id, keep_running, own)
    from .dispatch import Lease, run_dir, worker_name

    box: list[SystemJob] = []
    lease = Lease(
        run_dir(ctx.loaded, run_id) / f"{system}.json",
        lambda: box[0].current if box else "starting",
    )
    with lease:
        result = _verify(ctx, system, run_id, keep_running, own, box)
        result.worker = worker_name()
        lease.finish(result)
    return result


def _verify(
    ctx: RunContext,
    system: str,
    run_id: str,
    keep_running: bool,
    own: bool,
    box: list[SystemJob] | None = None,
) -> SystemResult:
    spec = ctx.loaded.site.system(system)
    job = SystemJob(ctx.loaded, spec, ctx.sandbox, run_id, ctx.loaded.site.sandbox.watchdog)
    if box is not None:
        box.append(job)
    failure: StepFailed | None = None
    job.arm_watchdog()
    with ctx.lock:
        ctx.running.add(job)
    try:
        for name, fn in lifecycle.STEPS:
            if name in PLAIN_STEPS:
                try:
                    run_step(job, name, fn)
                except StepFailed as exc:
                    failure = exc
                    break
                continue
            state = STEP_TASKS[name](job=job, return_state=True)
            if state.is_failed():
                exc = state.result(raise_on_failure=False)
                failure = exc if isinstance(exc, StepFailed) else StepFailed(name, str(exc))
                break
    finally:
        job.disarm_watchdog()
        result = lifecycle.verdict(job, failure)
        if keep_running and failure is None:
            with ctx.lock:
                ctx.kept[system] = job
        else:
            STEP_TASKS["teardown"](job=job, return_state=True)
            result.steps = job.steps
        with ctx.lock:
            ctx.running.discard(job)
        job.progress.step = "done"
        job.progress.verdict = result.verdict.value
        emit(job.progress)
        if own and not (ctx.attached and system in ctx.kept):
            close_run(ctx)  # an attached run's kept twin stays for its dependents
    return result


@flow(name="verify-site", log_prints=False, persist_result=False)
def verify_site(
    site_path: str,
    systems: Sequence[str] | None = None,
    concurrency: int | None = None,
    trigger: str = "manual",
    run_id: str | None = None,
    evidence: bool = True,
    dispatch: str | None = None,
    keep_all: bool = False,
    before_close: Callable[[RunContext, dict[str, SystemResult]], None] | None = None,
) -> RunRecord:
    """Verify every system (or the named ones and what they need) in dependency waves.

    ``dispatch`` names a ``verify-system`` deployment: each system then runs as its own
    flow run on the work pool's workers (scale-out) instead of in this process.
    ``keep_all``: every system stays up until the run closes; ``before_close(ctx,
    results)`` is called then, while they do (a regression's snapshots, flows/regress.py).
    """
    loaded = load_site(site_path)
    site = loaded.site
    run_id = run_id or new_run_id()
    record = RunRecord(run_id=run_id, site=site.site, started_at=datetime.now(UTC), trigger=trigger)
    graph = {s.name: list(s.depends_on) for s in site.systems}
    plan = waves(graph, systems or None)
    has_dependents = {d for wave in plan for n in wave for d in graph[n]}
    results: dict[str, SystemResult] = {}
    ctx = open_run(loaded, run_id)

    def one(name: str) -> SystemResult:
        keep = keep_all or name in has_dependents
        if dispatch:
            return _dispatched(loaded, dispatch, name, run_id, keep)
        # its step tasks run in this flow run: a verify-system subflow per system
        # costs a flow run and a tracking task run on the server, created one at a
        # time (1-2 s per system at 16 at once, more than the system's own steps)
        return _verify(ctx, name, run_id, keep, own=False)

    try:
        start_devices_task(ctx, sorted(n for wave in plan for n in wave))
        for wave in plan:
            runnable = _triage(ctx, wave, graph, results)
            workers = max(1, min(concurrency or site.sandbox.concurrency, len(runnable) or 1))
            if dispatch:
                workers = max(1, len(runnable))  # the work pool's workers set the pace
            _run_wave(ctx, runnable, workers, one, results)
    finally:
        try:
            if before_close is not None:
                before_close(ctx, results)
        finally:
            close_run(ctx, results)
        if dispatch:
            from .dispatch import cleanup

            cleanup(loaded, run_id)
    _conclude(loaded, record, plan, graph, results)
    if evidence:
        record_and_alert(loaded, record)
    return record


def _triage(
    ctx: RunContext, wave: list[str], graph: dict[str, list[str]], results: dict[str, SystemResult]
) -> list[str]:
    """The wave's systems that can run; the others get their verdict now (blocked behind a
    failed dependency, or not started for want of their devices)."""
    site = ctx.loaded.site
    runnable = []
    for name in wave:
        bad = blockers(graph[name], results)
        if bad:
            results[name] = blocked(site, name, bad, results)
            emit_done(name, results[name])
        elif ctx.device_error and site.system(name).devices:
            results[name] = not_started(site, name, ctx.device_error)
            emit_done(name, results[name])
        else:
            runnable.append(name)
    return runnable


def _run_wave(
    ctx: RunContext,
    runnable: list[str],
    workers: int,
    one: Callable[[str], SystemResult],
    results: dict[str, SystemResult],
) -> None:
    """Verify one wave's runnable systems, ``workers`` at a time."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="system") as pool:
        futures = {
            name: pool.submit(contextvars.copy_context().run, one, name) for name in runnable
        }
        try:
            for name, future in futures.items():
                results[name] = future.result()
        except BaseException:  # Ctrl-C: stop what runs, so its threads end now
            interrupt(ctx)
            raise


def _conclude(
    loaded: LoadedSite,
    record: RunRecord,
    plan: list[list[str]],
    graph: dict[str, list[str]],
    results: dict[str, SystemResult],
) -> None:
    """The run's record: its systems in wave order, the site's recovery time and verdict,
    published as the flow run's table artifact."""
    site = loaded.site
    record.systems = [results[n] for wave in plan for n in wave]
    record.finished_at = datetime.now(UTC)
    record.site_recovery_time_s = critical_path(graph, results)
    record.site_rto_s = site.rto.total_seconds() if site.rto else None
    record.verdict = site_verdict(record)
    from . import artifacts

    artifacts.publish(record)  # the verdict table beside the flow run in the Prefect UI


@task(name="record-evidence-and-alert", cache_policy=NO_CACHE, persist_result=False)
def record_and_alert(loaded: LoadedSite, record: RunRecord) -> list[Delivery]:
    """Append the site's runs spooled earlier, then this run, to the evidence chain, and
    alert on changes of state.

    If the store cannot take the run (read-only, locked, damaged, unreachable), the alerts
    still go out, the record is spooled (flows/spool.py) and EvidenceSpooled says where.
    """
    # here, not at the top: a dispatched system's flow-run process never records evidence
    # and need not import the store, signing and alerting (SQLAlchemy, cryptography)
    from . import signing, spool
    from .alerts import AlertConfig, plan_alerts, send
    from .evidence import EvidenceError, EvidenceStore, default_url, shown_url

    config = AlertConfig.from_site(loaded.site, loaded.base_dir)
    store, previous, problem = None, {}, None
    try:
        store = EvidenceStore(
            loaded.site.evidence or default_url(loaded.path), signer=signing.for_site(loaded)
        )
        spool.import_pending(store, loaded.path)
        previous = store.previous_verdicts(record)
    except EvidenceError as exc:
        problem = exc
    deliveries = send(plan_alerts(record, previous, config))
    try:
        if store is not None and problem is None:
            store.record(record, deliveries)
            return deliveries
    except EvidenceError as exc:
        problem = exc
    finally:
        if store is not None:
            store.close()
    shown = shown_url(loaded.site.evidence, loaded.path)
    raise spool.spool_run(
        record, deliveries, site_path=loaded.path, evidence=shown, problem=problem
    )


def run_site(
    site_path: str,
    systems: Sequence[str] | None = None,
    concurrency: int | None = None,
    trigger: str = "manual",
    run_id: str | None = None,
    dispatch: str | None = None,
) -> RunRecord:
    """Verify a site in this process (the one-shot ``restoredrill run``).

    Flow-run heartbeats exist to detect a crashed worker; in-process there is no
    worker to lose (our own reaper removes a dead run's twins), and each heartbeat
    thread costs up to a second at the end of every flow run, so they are off here.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return verify_site(site_path, systems, concurrency, trigger, run_id, dispatch=dispatch)


def _dispatched(
    loaded: LoadedSite, deployment: str, system: str, run_id: str, keep_running: bool
) -> SystemResult:
    from .dispatch import dispatch

    limit = loaded.site.system(system).rto.total_seconds() * loaded.site.sandbox.watchdog
    result = dispatch(loaded, deployment, run_id, system, keep_running, limit)
    emit_done(system, result)
    return result


def attach_run(loaded: LoadedSite, run_id: str) -> RunContext:
    """Join the sandbox of a run another flow run opened (on this Docker engine)."""
    engine = backend(loaded.site.sandbox.backend)
    sandbox = engine.attach_sandbox(run_id, reserved=claimed(loaded.site))
    ctx = RunContext(loaded, run_id, sandbox, engine)
    ctx.attached = True
    _RUNS[run_id] = ctx
    return ctx


def open_run(loaded: LoadedSite, run_id: str) -> RunContext:
    """Reap what dead runs left, then open this run's contained networks (with their
    firewall rules, anchor and guardian; a TwinError says why if that cannot be done)."""
    engine = backend(loaded.site.sandbox.backend)
    # dead runs of this host at once (Docker objects, firewall rules, scratch folders);
    # runs of other hosts sharing the engine after a day
    engine.reap_stale(max_age=timedelta(hours=24))
    sandbox = engine.open_sandbox(
        run_id, loaded.site.sandbox.subnets, reserved=claimed(loaded.site)
    )
    ctx = RunContext(loaded, run_id, sandbox, engine)
    _RUNS[run_id] = ctx
    return ctx


@task(name="start-devices", cache_policy=NO_CACHE, persist_result=False)
def start_devices_task(ctx: RunContext, systems: list[str]) -> None:
    """Start the emulated PLCs and SCADA servers the planned systems need."""
    from restoredrill.twins.base import TwinError

    from .devices import start_devices

    try:
        ctx.devices = start_devices(ctx.loaded, ctx.sandbox, ctx.run_id, systems)
    except (TwinError, ValueError, OSError) as exc:
        ctx.device_error = str(exc)


def interrupt(ctx: RunContext) -> None:
    """Stop every system of the run where it is (twins removed, restores cancelled)."""
    with ctx.lock:
        running = list(ctx.running)
    for job in running:
        job.interrupt()


def not_started(site: Site, name: str, why: str) -> SystemResult:
    return lifecycle.unrun(site.system(name), Verdict.ERROR, f"devices: {why}")


def close_run(ctx: RunContext, results: dict[str, SystemResult] | None = None) -> None:
    """Tear down twins kept for dependents, the devices, then everything else of the run."""
    try:
        for name, job in list(ctx.kept.items()):
            # one after another: 16 removals at once on Docker 20.10 left some hanging
            # past the client's 120 s timeout (200-system site, benchmarks/scale.py)
            STEP_TASKS["teardown"](job=job, return_state=True)  # failed: the close removes it
            if results is not None and name in results:
                results[name].steps = job.steps
        ctx.kept.clear()
        from .devices import stop_devices

        stop_devices(ctx.sandbox, *ctx.devices)
    finally:
        ctx.sandbox.close()
        _RUNS.pop(ctx.run_id, None)


def blocked(
    site: Site, name: str, bad: list[str], results: dict[str, SystemResult]
) -> SystemResult:
    why = ", ".join(f"{d} ({results[d].verdict.value})" for d in bad)
    return lifecycle.unrun(site.system(name), Verdict.BLOCKED, f"not run: depends on {why}")


def emit_done(name: str, result: SystemResult) -> None:
    from .progress import SystemProgress

    emit(SystemProgress(name, step="done", verdict=result.verdict.value, rto_s=result.rto_s))
