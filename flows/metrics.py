"""Prometheus metrics of a site's latest verifications, read from the evidence store.

``restoredrill metrics SITE`` writes them in node_exporter's textfile format (a file
replaced whole); ``restoredrill serve`` answers ``/metrics`` with them, read at each
scrape. Per system (labels ``site``, ``system``, ``zone``): when it was last verified
and last passed, its last recovery time, RTO, RPO, backup age, verdict (one series per
verdict, 1 for the current one) and failed checks; per site: the last run's time,
critical-path recovery time, site RTO and verdict, and how many systems pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from .evidence import EvidenceError, EvidenceStore, checks_t, results_t, runs_t
from .results import Verdict

PREFIX = "restoredrill"
RECENT_RUNS = 60
"""Runs looked back for each system's latest result before asking per system."""


@dataclass
class Latest:
    """A system's latest verification."""

    system: str
    zone: str
    at: datetime
    verdict: str
    recovery_s: float | None
    rto_s: float | None
    rpo_s: float | None
    backup_age_s: float | None
    checks: int = 0
    failed: int = 0
    last_pass: datetime | None = None


@dataclass
class SiteState:
    site: str
    systems: list[Latest]
    run: Any  # the latest run row of the site, or None
    inventory: int


def latest(store: EvidenceStore, site: str, systems: list[str] | None) -> SiteState:
    """Each system's latest result (the inventory's ``systems``, else those recently seen)."""
    with store._errors("read the latest results"), store._read() as conn:
        runs = list(
            conn.execute(
                select(runs_t.c.id, runs_t.c.started_at, runs_t.c.verdict,
                       runs_t.c.site_recovery_time_s, runs_t.c.site_rto_s)
                .where(runs_t.c.site == site)
                .order_by(runs_t.c.seq.desc())
                .limit(RECENT_RUNS)
            )
        )  # fmt: skip
        found: dict[str, Any] = {}
        when = {r.id: r.started_at for r in runs}
        for run in runs:
            for row in conn.execute(_result_columns().where(results_t.c.run_pk == run.id)):
                found.setdefault(row.system, row)
            if systems is not None and all(s in found for s in systems):
                break
        for name in [s for s in systems or [] if s not in found]:  # not run lately
            row = conn.execute(
                _result_columns()
                .join(runs_t, results_t.c.run_pk == runs_t.c.id)
                .where(results_t.c.system == name, runs_t.c.site == site)
                .order_by(results_t.c.run_pk.desc())
                .limit(1)
            ).first()
            if row is not None:
                found[name] = row
        missing_runs = {r.run_pk for r in found.values()} - set(when)
        if missing_runs:
            for r in conn.execute(
                select(runs_t.c.id, runs_t.c.started_at).where(runs_t.c.id.in_(missing_runs))
            ):
                when[r.id] = r.started_at
        failed = _failed_checks(conn, [r.id for r in found.values()])
        out = []
        for name, row in sorted(found.items()):
            latest_row = Latest(
                name, (row.labels or {}).get("zone", ""), when[row.run_pk], row.verdict,
                row.recovery_time_s, row.rto_s, row.rpo_s, row.backup_age_s,
                *failed.get(row.id, (0, 0)),
            )  # fmt: skip
            latest_row.last_pass = (
                latest_row.at if row.verdict == "pass" else _last_pass(conn, site, name)
            )
            out.append(latest_row)
    return SiteState(site, out, runs[0] if runs else None, len(systems) if systems else len(out))


def _result_columns() -> Any:
    return select(
        results_t.c.id, results_t.c.run_pk, results_t.c.system, results_t.c.verdict,
        results_t.c.labels, results_t.c.recovery_time_s, results_t.c.rto_s, results_t.c.rpo_s,
        results_t.c.backup_age_s,
    )  # fmt: skip


def _failed_checks(conn: Any, ids: list[int]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for i in range(0, len(ids), 500):
        query = (
            select(checks_t.c.result_pk, checks_t.c.status, func.count())
            .where(checks_t.c.result_pk.in_(ids[i : i + 500]))
            .group_by(checks_t.c.result_pk, checks_t.c.status)
        )
        for pk, status, n in conn.execute(query):
            total, bad = out.get(pk, (0, 0))
            out[pk] = (total + n, bad + (n if status != "pass" else 0))
    return out


def _last_pass(conn: Any, site: str, system: str) -> datetime | None:
    return conn.execute(
        select(runs_t.c.started_at)
        .join(results_t, results_t.c.run_pk == runs_t.c.id)
        .where(results_t.c.system == system, results_t.c.verdict == "pass", runs_t.c.site == site)
        .order_by(runs_t.c.seq.desc())
        .limit(1)
    ).scalar()


# --------------------------------------------------------------------------- exposition


LABELS = ["site", "system", "zone"]


def _gauge(name: str, doc: str, names: list[str] = LABELS) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=names)


def families(state: SiteState) -> list[Metric]:
    """The metric families of one site's state: per system, then for the site."""
    return _system_families(state) + _site_families(state)


def _system_families(state: SiteState) -> list[Metric]:
    verified = _gauge(
        "last_verification_timestamp_seconds",
        "When the system was last verified (run start, Unix time).",
    )
    passed = _gauge("last_success_timestamp_seconds", "When the system last passed (Unix time).")
    recovery = _gauge(
        "recovery_seconds", "Recovery time measured in the system's last verification."
    )
    rto = _gauge("rto_seconds", "The system's recovery time objective.")
    rpo = _gauge("rpo_seconds", "The system's recovery point objective (maximum backup age).")
    age = _gauge("backup_age_seconds", "Age of the backup restored in the last verification.")
    verdict = _gauge(
        "verdict",
        "1 for the verdict of the system's last verification, 0 for the others.",
        [*LABELS, "verdict"],
    )
    ok = _gauge("up", "1 if the system's last verification passed, else 0.")
    failed = _gauge("checks_failed", "Checks that did not pass in the last verification.")
    checks = _gauge("checks", "Checks run in the last verification.")
    for s in state.systems:
        key = [state.site, s.system, s.zone]
        verified.add_metric(key, s.at.timestamp())
        if s.last_pass is not None:
            passed.add_metric(key, _ts(s.last_pass))
        for family, value in (
            (recovery, s.recovery_s),
            (rto, s.rto_s),
            (rpo, s.rpo_s),
            (age, s.backup_age_s),
        ):
            if value is not None:
                family.add_metric(key, value)
        for v in Verdict:
            verdict.add_metric([*key, v.value], 1.0 if s.verdict == v.value else 0.0)
        ok.add_metric(key, 1.0 if s.verdict == "pass" else 0.0)
        failed.add_metric(key, s.failed)
        checks.add_metric(key, s.checks)
    return [verified, passed, recovery, rto, rpo, age, verdict, ok, failed, checks]


def _site_families(state: SiteState) -> list[Metric]:
    site = ["site"]
    run_at = _gauge(
        "site_last_run_timestamp_seconds", "When the site's last run started (Unix time).", site
    )
    site_recovery = _gauge(
        "site_recovery_seconds", "The last run's critical-path recovery time.", site
    )
    site_rto = _gauge("site_rto_seconds", "The site's recovery time objective.", site)
    site_verdict = _gauge(
        "site_verdict",
        "1 for the verdict of the site's last run, 0 for the others.",
        ["site", "verdict"],
    )
    systems = _gauge("site_systems", "Systems of the site (its inventory).", site)
    passing = _gauge("site_systems_passing", "Systems whose last verification passed.", site)
    if state.run is not None:
        run_at.add_metric([state.site], _ts(state.run.started_at))
        if state.run.site_recovery_time_s is not None:
            site_recovery.add_metric([state.site], state.run.site_recovery_time_s)
        if state.run.site_rto_s is not None:
            site_rto.add_metric([state.site], state.run.site_rto_s)
        for v in Verdict:
            site_verdict.add_metric(
                [state.site, v.value], 1.0 if state.run.verdict == v.value else 0.0
            )
    systems.add_metric([state.site], state.inventory)
    passing.add_metric([state.site], sum(s.verdict == "pass" for s in state.systems))
    return [run_at, site_recovery, site_rto, site_verdict, systems, passing]


def _ts(value: datetime) -> float:
    return value.timestamp()


class EvidenceCollector:
    """A prometheus_client collector that reads the store at each scrape."""

    def __init__(self, url: str, site: str, systems: list[str] | None) -> None:
        self.url, self.site, self.systems = url, site, systems

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_evidence_up", "1 if the evidence store could be read.", labels=["site"]
        )
        try:
            with EvidenceStore.reader(self.url) as store:
                state = latest(store, self.site, self.systems)
        except EvidenceError:
            up.add_metric([self.site], 0.0)
            yield up
            return
        up.add_metric([self.site], 1.0)
        yield up
        yield from families(state)


def registry(url: str, site: str, systems: list[str] | None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EvidenceCollector(url, site, systems))  # type: ignore[arg-type]
    return reg


def exposition(store: EvidenceStore, site: str, systems: list[str] | None) -> str:
    """The text exposition format (what node_exporter's textfile collector reads)."""
    state = latest(store, site, systems)
    reg = CollectorRegistry(auto_describe=False)

    class _Once:
        def collect(self) -> list[Metric]:
            return families(state)

    reg.register(_Once())  # type: ignore[arg-type]
    return generate_latest(reg).decode("utf-8")
