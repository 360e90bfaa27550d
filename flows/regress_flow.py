"""The ``regress`` Prefect flow: the affected systems run with the baseline, then with the
candidate, their OT endpoints snapshotted before each run closes (flows/regress.py plans
and compares; this module is loaded only when something runs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from restoredrill.twins.snapshot import Snapshot

from .inventory import load_site
from .results import RunRecord


@flow(name="regress", log_prints=False, persist_result=False)
def regress_flow(
    baseline_site: str,
    candidate_site: str,
    baseline_systems: list[str],
    candidate_systems: list[str],
    baseline_devices: list[str],
    candidate_devices: list[str],
    regression_id: str,
    window: float = 3.0,
    concurrency: int | None = None,
) -> tuple[tuple[RunRecord, list[Snapshot]], tuple[RunRecord, list[Snapshot]]]:
    """Run the affected systems with the baseline, then with the candidate; snapshot both."""
    base = run_configuration(
        baseline_site, baseline_systems, baseline_devices, f"{regression_id}-base", window,
        concurrency,
    )  # fmt: skip
    cand = run_configuration(
        candidate_site, candidate_systems, candidate_devices, f"{regression_id}-cand", window,
        concurrency,
    )  # fmt: skip
    return base, cand


def run_configuration(
    site_path: str,
    systems: list[str],
    devices: list[str],
    run_id: str,
    window: float,
    concurrency: int | None,
) -> tuple[RunRecord, list[Snapshot]]:
    """Verify ``systems`` (with what they depend on) of one configuration, snapshot its
    endpoints and ``devices`` before the run closes."""
    from . import snapshots as snap
    from .devices import start_devices
    from .verify import close_run, open_run, verify_site

    shots: list[Snapshot] = []

    def before_close(ctx: Any, results: dict[str, Any]) -> None:
        if devices:
            running = [t.name.removeprefix("device-") for t in ctx.devices[0]]
            twins, dirs = start_devices(
                ctx.loaded, ctx.sandbox, run_id, [], devices, running
            )
            ctx.devices[0].extend(twins)
            ctx.devices[1].extend(dirs)
        shots.extend(snap.take(ctx, list(ctx.kept), window))

    if systems:
        record = verify_site(
            site_path, systems, concurrency, "regress", run_id,
            evidence=False, keep_all=True, before_close=before_close,
        )  # fmt: skip
        return record, shots
    loaded = load_site(site_path)
    record = RunRecord(run_id=run_id, site=loaded.site.site, started_at=datetime.now(UTC))
    if not devices:  # nothing of this configuration is affected (e.g. all of it was added)
        record.finished_at = record.started_at
        return record, shots
    ctx = open_run(loaded, run_id)
    try:
        ctx.devices = ([], [])
        before_close(ctx, {})
    finally:
        close_run(ctx)
    record.finished_at = datetime.now(UTC)
    return record, shots
