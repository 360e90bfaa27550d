"""Scale-out: each system's verification as its own flow run, on whichever worker takes it.

The orchestrating ``verify-site`` flow run opens the run's sandbox networks and starts
the devices; each system then runs as a ``verify-system`` flow run of a deployment on a
Prefect work pool, joins those networks (workers share the Docker engine and the site
directory, see docker-compose.yml), and reports through a small *lease* file in the
site's ``.restoredrill/runs/<run id>/``: which worker holds it, the step it is in, a
heartbeat every second, and finally its result. A lease that stops beating while its
flow run is still ``Running`` means the worker died: the system is recorded
``error: worker lost``, its flow run is marked crashed, and the run's teardown reaps
its twin.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restoredrill.errors import RestoredrillError

from .inventory import LoadedSite
from .lifecycle import unrun
from .results import RunRecord, SystemResult, Verdict, new_run_id

BEAT_S = 1.0
LOST_AFTER_S = float(os.environ.get("RESTOREDRILL_WORKER_LOST_AFTER", "20"))
"""A lease silent this long, its flow run still running, means the worker is gone."""
STATE_POLL_S = 1.0
"""How often a waiting orchestrator asks the server for a dispatched flow run's state."""
QUEUE_GRACE_S = 600.0
"""How long a dispatched system may wait for a free worker beyond its own watchdog limit."""


class DispatchError(RestoredrillError):
    """A run on the work pool's workers did not finish, or left no evidence (exit 1)."""


def worker_name() -> str:
    """Who runs this process: the compose worker's name, Prefect's worker, or the host."""
    return (
        os.environ.get("RESTOREDRILL_WORKER")
        or os.environ.get("PREFECT__WORKER_NAME")
        or socket.gethostname()
    )


def run_dir(loaded: LoadedSite, run_id: str) -> Path:
    return loaded.base_dir / ".restoredrill" / "runs" / run_id


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


class Lease:
    """The worker side: beat while the system runs, then leave the result."""

    def __init__(self, path: Path, step: Any) -> None:
        self.path = path
        self.step = step  # a callable returning the current step's name
        self.data: dict[str, Any] = {
            "worker": worker_name(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID"),
        }
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="lease", daemon=True)

    def __enter__(self) -> Lease:
        self._beat()
        self._thread.start()
        return self

    def _beat(self, **extra: Any) -> None:
        with self._lock:
            self.data.update(beat=time.time(), step=self.step(), **extra)
            _write(self.path, self.data)

    def _loop(self) -> None:
        while not self._stop.wait(BEAT_S):
            with contextlib.suppress(OSError):
                self._beat()

    def finish(self, result: SystemResult) -> None:
        self._stop.set()
        self._beat(result=json.loads(result.model_dump_json()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def read_lease(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dispatch(
    loaded: LoadedSite,
    deployment: str,
    run_id: str,
    system: str,
    keep_running: bool,
    watchdog_limit_s: float,
) -> SystemResult:
    """Run one system as a flow run of ``deployment`` and wait for its lease's result."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    path = run_dir(loaded, run_id) / f"{system}.json"
    flow_run = run_deployment(
        deployment,
        parameters={
            "site_path": str(loaded.path.resolve()),
            "system": system,
            "run_id": run_id,
            "keep_running": keep_running,
            "dispatched": True,
        },
        timeout=0,
        flow_run_name=f"{system} · {run_id}",
        tags=[f"run:{run_id}", f"system:{system}"],
    )
    watch = _Watch(loaded, system, path, flow_run.id, watchdog_limit_s)
    with get_client(sync_client=True) as client:
        while True:
            lease = read_lease(path)
            if lease and lease.get("result"):
                return SystemResult.model_validate(lease["result"])  # worker included
            ended = watch.ask(client, lease)
            if ended is not None:
                return ended
            time.sleep(0.25)


class _Watch:
    """The orchestrator's view of one dispatched flow run: queued, running, beating, over."""

    def __init__(
        self, loaded: LoadedSite, system: str, lease: Path, flow_run_id: Any, limit_s: float
    ) -> None:
        self.loaded, self.system, self.lease, self.flow_run_id = loaded, system, lease, flow_run_id
        self.limit_s = limit_s
        self.queued_since = time.monotonic()
        self.running_since: float | None = None
        self.asked = 0.0

    def ask(self, client: Any, lease: dict[str, Any] | None) -> SystemResult | None:
        """The system's result if its flow run is over without one, else None. The server is
        asked at most every ``STATE_POLL_S`` (the lease file is cheap; the API is shared)."""
        now = time.monotonic()
        if now - self.asked < STATE_POLL_S:
            return None
        self.asked = now
        state = client.read_flow_run(self.flow_run_id).state
        if state is not None and state.is_final():
            time.sleep(BEAT_S)  # the lease is written before the flow run ends
            lease = read_lease(self.lease)
            if lease and lease.get("result"):
                return SystemResult.model_validate(lease["result"])
            why = f"its flow run ended {state.name}" + (
                f": {state.message}" if state.message else ""
            )
            return _lost(self.loaded, self.system, why, lease)
        if state is not None and state.is_running():
            return self._beating(client, lease, now)
        if now - self.queued_since > self.limit_s + QUEUE_GRACE_S:
            from prefect.states import Cancelled

            self._set(client, Cancelled(message="no worker took it"))
            waited = f"no worker took it within {now - self.queued_since:.0f} s"
            return _lost(self.loaded, self.system, waited, lease)
        return None

    def _beating(
        self, client: Any, lease: dict[str, Any] | None, now: float
    ) -> SystemResult | None:
        """Running: lost once its lease has been silent for ``LOST_AFTER_S``."""
        from prefect.states import Crashed

        self.running_since = self.running_since or now
        beat = lease.get("beat") if lease else None
        silent = time.time() - beat if beat else now - self.running_since
        if silent <= LOST_AFTER_S:
            return None
        self._set(client, Crashed(message="worker lost"))
        return _lost(self.loaded, self.system, f"no heartbeat for {silent:.0f} s", lease, lost=True)

    def _set(self, client: Any, state: Any) -> None:
        with contextlib.suppress(Exception):  # the server may have moved on by itself
            client.set_flow_run_state(self.flow_run_id, state, force=True)


def _lost(
    loaded: LoadedSite, system: str, why: str, lease: dict[str, Any] | None, lost: bool = False
) -> SystemResult:
    who = lease.get("worker") if lease else None
    step = lease.get("step") if lease else None
    if lost:
        reason = f"worker lost: {who or 'its worker'} stopped" + (
            f" in step {step}" if step else ""
        )
        reason += f" ({why}); its twin is removed with the run"
    else:
        reason = f"worker: {why}" + (f" (last in step {step} on {who})" if step else "")
    return unrun(
        loaded.site.system(system), Verdict.ERROR, reason, finished_at=datetime.now(UTC), worker=who
    )


def cleanup(loaded: LoadedSite, run_id: str) -> None:
    """Remove the run's leases and the scratch directories its workers left (kept twins)."""
    shutil.rmtree(run_dir(loaded, run_id), ignore_errors=True)
    for leftover in Path(tempfile.gettempdir()).glob(f"restoredrill-{run_id}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def run_on_workers(loaded: LoadedSite, timeout_s: float | None = None) -> RunRecord:
    """Verify the whole site now through its deployed ``verify-site`` deployment and
    wait; the record is read back from the evidence store the run wrote."""
    from prefect.deployments import run_deployment

    from .evidence import EvidenceError, EvidenceStore, default_url

    run_id = new_run_id()
    if timeout_s is None:  # every system at its watchdog limit, one after another, and some
        site = loaded.site
        timeout_s = sum(s.rto.total_seconds() * site.sandbox.watchdog for s in site.systems)
        timeout_s += QUEUE_GRACE_S
    flow_run = run_deployment(
        f"verify-site/{loaded.site.site}",
        parameters={"run_id": run_id, "trigger": "manual"},
        timeout=timeout_s,
        poll_interval=1,
        flow_run_name=f"{loaded.site.site} · {run_id}",
        tags=[f"run:{run_id}"],
    )
    state = flow_run.state
    if state is None or not state.is_final():
        raise DispatchError(
            f"run {run_id} did not finish within {timeout_s:.0f} s (state "
            f"{state.name if state else '?'}): is a worker of the pool running? "
            "If the worker running it was lost, the next run reaps its twins"
        )
    try:
        with EvidenceStore(loaded.site.evidence or default_url(loaded.path)) as store:
            return store.load(run_id)
    except EvidenceError as exc:
        raise DispatchError(
            f"run {run_id} ended {state.name if state else '?'} without its evidence "
            f"({state.message if state and state.message else exc})"
        ) from None
