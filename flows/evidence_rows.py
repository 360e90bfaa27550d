"""Run records rebuilt from the evidence store's rows (``load``, ``runs``, and the exact
path of ``evidence verify``), and one run's link checked against its record."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Column, Connection, Table, inspect, select

from restoredrill.checks.base import CheckResult
from restoredrill.twins.sources.base import BackupRef

from .canonical import chain_hash, legacy_mismatch, unsure
from .evidence_tables import checks_t, results_t, steps_t
from .results import RunRecord, StepTiming, SystemResult, Verdict

M = TypeVar("M", bound=BaseModel)


def present_columns(conn: Connection, table: Table) -> list[Column[Any]]:
    """The columns of ``table`` this database has (a store opened read-only may predate some)."""
    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    return [c for c in table.c if c.name in have]


def check_link(row: Any, record: RunRecord, prev: str, expected_seq: int) -> str:
    name = f"run {row.run_id} (#{row.seq})"
    if row.seq != expected_seq:
        gone = f"#{expected_seq}" + (f"..#{row.seq - 1}" if row.seq - 1 > expected_seq else "")
        return f"run {gone} was removed: the chain goes on at {name}"
    if row.prev_hash != prev:
        return f"{name} does not follow the run before it: a run was removed, replaced or its hash altered"
    if chain_hash(prev, record) == row.hash:
        return ""
    why = legacy_mismatch(prev, record, row.hash)
    return "" if why is None else f"{name} {why}"


def records(
    conn: Connection, run_rows: Sequence[Any], unsure: bool = False, only: str | None = None
) -> list[RunRecord]:
    """Rebuild RunRecords from run rows and their child rows (``unsure``: mark the numbers
    of 0.1 SQLite rows whose type may be lost, for :meth:`EvidenceStore.verify`; ``only``:
    the result of that system alone)."""
    if not run_rows:
        return []
    query = (
        select(*present_columns(conn, results_t))
        .where(results_t.c.run_pk.in_([r.id for r in run_rows]))
        .order_by(results_t.c.run_pk, results_t.c.position)
    )
    if only is not None:
        query = query.where(results_t.c.system == only)
    result_rows = list(conn.execute(query))
    results = system_results(conn, result_rows, unsure)
    by_run: dict[int, list[SystemResult]] = {}
    for row in result_rows:
        by_run.setdefault(row.run_pk, []).append(results[row.id])
    return [
        RunRecord(
            run_id=r.run_id,
            site=r.site,
            started_at=r.started_at,
            finished_at=r.finished_at,
            trigger=r.trigger,
            verdict=Verdict(r.verdict),
            site_recovery_time_s=r.site_recovery_time_s,
            site_rto_s=r.site_rto_s,
            systems=by_run.get(r.id, []),
        )
        for r in run_rows
    ]


def system_results(
    conn: Connection, rows: Sequence[Any], unsure: bool = False
) -> dict[int, SystemResult]:
    """SystemResults (with steps and checks) keyed by row id."""
    ids = [r.id for r in rows]
    steps = _children(conn, steps_t, ids, _step)
    legacy = unsure and conn.dialect.name == "sqlite"
    checks = _children(conn, checks_t, ids, lambda row: _check(row, legacy))
    return {
        r.id: SystemResult(
            system=r.system,
            verdict=Verdict(r.verdict),
            reason=r.reason,
            labels=r.labels,
            started_at=r.started_at,
            finished_at=r.finished_at,
            recovery_time_s=r.recovery_time_s,
            rto_s=r.rto_s,
            rpo_s=r.rpo_s,
            backup_age_s=r.backup_age_s,
            near_miss=r.near_miss,
            worker=r.worker,
            limits=r._mapping.get("limits"),
            platform=r._mapping.get("platform"),
            framework_s=r._mapping.get("framework_s"),
            backup=_backup(r),
            steps=steps.get(r.id, []),
            checks=checks.get(r.id, []),
        )
        for r in rows
    }


def _children(
    conn: Connection, table: Table, ids: list[int], build: Callable[[Mapping[str, Any]], M]
) -> dict[int, list[M]]:
    """A child table's rows (steps, checks) as models, in order, keyed by result row id."""
    found: dict[int, list[M]] = {}
    if not ids:
        return found
    query = (
        select(*present_columns(conn, table))
        .where(table.c.result_pk.in_(ids))
        .order_by(table.c.result_pk, table.c.position)
    )
    for row in conn.execute(query).mappings():
        found.setdefault(row["result_pk"], []).append(build(row))
    return found


def _step(row: Mapping[str, Any]) -> StepTiming:
    return StepTiming.model_validate({k: row[k] for k in StepTiming.model_fields})


def _check(row: Mapping[str, Any], legacy_sqlite: bool) -> CheckResult:
    """A check row: values from their JSON text, or from the JSON columns of a 0.1 row."""
    data = {k: row[k] for k in ("name", "kind", "status", "duration_s", "message")}
    for field in ("expected", "observed"):
        text = row.get(f"{field}_json")
        if text is not None:
            data[field] = json.loads(text)
        else:
            data[field] = unsure(row[field]) if legacy_sqlite else row[field]
    return CheckResult.model_validate(data)


def _backup(r: Any) -> BackupRef | None:
    if r.backup_source is None:
        return None
    return BackupRef(
        source=r.backup_source,
        backup_id=r.backup_id,
        location=r.backup_location,
        size_bytes=r.backup_size_bytes,
        sha256=r.backup_sha256,
        created_at=r.backup_created_at,
    )
