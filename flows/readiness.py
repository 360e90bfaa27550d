"""What the readiness report says, computed from the evidence store.

One pass over the period's system results (a few columns each, no whole records), the
checks of each system's last failure, and the chain's verification: every link and
signature, and the records of the runs the report shows rebuilt from their rows.
"""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, func, select

from .compliance import ControlEvidence, assess
from .evidence import ChainReport, EvidenceStore, checks_t, results_t, runs_t
from .signing import fingerprint

WINDOWS = (1, 7, 30)
"""Days: systems proven (passed) within each, counted back from the report's end."""


@dataclass
class Point:
    """One verification of one system, as charted."""

    at: datetime
    run_id: str
    verdict: str
    recovery_s: float | None
    rto_s: float | None
    backup_age_s: float | None
    rpo_s: float | None
    backup: bool
    """The backup's identity was recorded (it was located)."""


@dataclass
class Failure:
    """A system's last verification that did not pass, with its checks that did not."""

    run_id: str
    at: datetime
    verdict: str
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SystemReadiness:
    name: str
    zone: str
    role: str
    in_inventory: bool
    rto_s: float | None = None
    rpo_s: float | None = None
    points: list[Point] = field(default_factory=list)
    last_pass: datetime | None = None
    """The last pass ever recorded (also before the period)."""
    last_failure: Failure | None = None

    @property
    def verifications(self) -> int:
        return len(self.points)

    @property
    def passes(self) -> int:
        return sum(p.verdict == "pass" for p in self.points)

    @property
    def last(self) -> Point | None:
        return self.points[-1] if self.points else None

    @property
    def measured(self) -> list[Point]:
        return [p for p in self.points if p.recovery_s is not None and p.rto_s]

    @property
    def rto_met(self) -> int:
        return sum(p.recovery_s <= p.rto_s for p in self.measured)  # type: ignore[operator]

    @property
    def interval_days(self) -> float | None:
        """Median days between verifications (None with fewer than two)."""
        times = [p.at for p in self.points]
        if len(times) < 2:
            return None
        return statistics.median((b - a).total_seconds() / 86400 for a, b in pairwise(times))


@dataclass
class SiteRun:
    run_id: str
    at: datetime
    verdict: str
    recovery_s: float | None
    rto_s: float | None
    systems: int


@dataclass
class Readiness:
    site: str
    start: datetime
    end: datetime
    store: str
    systems: list[SystemReadiness]
    runs: list[SiteRun]
    chain: ChainReport | None
    chain_error: str | None = None
    content_from_run: str | None = None
    compliance: list[ControlEvidence] = field(default_factory=list)

    @property
    def period_days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400

    @property
    def inventory(self) -> list[SystemReadiness]:
        return [s for s in self.systems if s.in_inventory]

    @property
    def empty(self) -> bool:
        return not self.runs

    def proven_within(self, days: int) -> int:
        since = self.end - timedelta(days=days)
        return sum(1 for s in self.inventory if s.last_pass and s.last_pass >= since)

    @property
    def covered(self) -> int:
        """Inventory systems with a pass in the period."""
        return sum(1 for s in self.inventory if any(p.verdict == "pass" for p in s.points))

    @property
    def tested(self) -> int:
        return sum(1 for s in self.inventory if s.points)

    @property
    def verifications(self) -> int:
        return sum(s.verifications for s in self.systems)

    @property
    def pass_rate(self) -> float | None:
        n = self.verifications
        return sum(s.passes for s in self.systems) / n if n else None

    @property
    def rto_compliance(self) -> float | None:
        measured = sum(len(s.measured) for s in self.systems)
        return sum(s.rto_met for s in self.systems) / measured if measured else None

    def zones(self) -> list[dict[str, Any]]:
        """Coverage and pass rate per zone (ot, it, dmz, none)."""
        out = []
        for zone in sorted({s.zone for s in self.inventory}):
            members = [s for s in self.inventory if s.zone == zone]
            runs = sum(s.verifications for s in members)
            out.append(
                {
                    "zone": zone,
                    "systems": len(members),
                    "covered": sum(1 for s in members if s.passes),
                    "verifications": runs,
                    "pass_rate": sum(s.passes for s in members) / runs if runs else None,
                }
            )
        return out

    @property
    def last_run(self) -> SiteRun | None:
        return self.runs[-1] if self.runs else None

    @property
    def keyid(self) -> str | None:
        return self.chain.keyid if self.chain else None

    @property
    def key_fingerprint(self) -> str | None:
        return fingerprint(self.keyid) if self.keyid else None


def gather(
    store: EvidenceStore,
    site: str,
    *,
    since: timedelta,
    inventory: list[dict[str, Any]] | None,
    now: datetime | None = None,
    verify: bool = True,
    records: bool = True,
) -> Readiness:
    """The readiness of ``site`` over the ``since`` before ``now``.

    ``inventory``: the site file's systems (name, zone, role, rto_s, rpo_s); None to take
    the systems the store has seen for the site. ``verify``: check the chain's links and
    signatures; ``records``: also rebuild the period's records from their rows.
    """
    end = now or datetime.now(UTC)
    start = end - since
    with store._errors("read the evidence for the report"):
        with store._read() as conn:
            run_rows = list(
                conn.execute(
                    select(runs_t.c.id, runs_t.c.seq, runs_t.c.run_id, runs_t.c.started_at,
                           runs_t.c.verdict, runs_t.c.site_recovery_time_s, runs_t.c.site_rto_s)
                    .where(runs_t.c.site == site, runs_t.c.started_at >= start,
                           runs_t.c.started_at <= end)
                    .order_by(runs_t.c.seq)
                )
            )  # fmt: skip
        with ThreadPoolExecutor(1, thread_name_prefix="verify") as pool:
            # the chain is checked (mostly in helper processes) while the figures are read
            first = run_rows[0].seq if run_rows and records else 1 << 62
            checked = pool.submit(store.verify, content_from=first) if verify else None
            with store._read() as conn:
                rows = _results(conn, [r.id for r in run_rows])
                if inventory is None:
                    inventory = _seen(conn, site)
                by_id = {r.id: r for r in run_rows}
                systems = _systems(conn, inventory, rows, by_id)
                for name, at in _last_passes(conn, site, end).items():
                    if name in systems:
                        systems[name].last_pass = at
                _failures(conn, systems, rows, by_id)
            chain = checked.result() if checked else None
    counts: dict[int, int] = {}
    for row in rows:
        counts[row.run_pk] = counts.get(row.run_pk, 0) + 1
    runs = [
        SiteRun(r.run_id, r.started_at, r.verdict, r.site_recovery_time_s, r.site_rto_s,
                counts.get(r.id, 0))
        for r in run_rows
    ]  # fmt: skip
    report = Readiness(
        site, start, end, store.shown, sorted(systems.values(), key=lambda s: s.name), runs, chain,
        content_from_run=run_rows[0].run_id if run_rows and verify and records else None,
    )  # fmt: skip
    report.compliance = assess(report)
    return report


def _results(conn: Any, run_pks: list[int]) -> list[Any]:
    if not run_pks:
        return []
    cols = ("id", "run_pk", "system", "verdict", "reason", "recovery_time_s", "rto_s",
            "backup_age_s", "rpo_s", "backup_id", "position")  # fmt: skip
    query = (
        select(*(results_t.c[c] for c in cols))
        .where(results_t.c.run_pk.between(min(run_pks), max(run_pks)))
        .order_by(results_t.c.run_pk, results_t.c.position)
    )
    wanted = set(run_pks)
    return [r for r in conn.execute(query) if r.run_pk in wanted]


def _seen(conn: Any, site: str) -> list[dict[str, Any]]:
    """The systems the store has recorded for ``site`` (when no site file is given)."""
    query = (
        select(results_t.c.system, func.max(results_t.c.id).label("last"))
        .join(runs_t, results_t.c.run_pk == runs_t.c.id)
        .where(runs_t.c.site == site)
        .group_by(results_t.c.system)
    )
    last = {r.system: r.last for r in conn.execute(query)}
    labels = {}
    if last:
        for row in conn.execute(
            select(
                results_t.c.system, results_t.c.labels, results_t.c.rto_s, results_t.c.rpo_s
            ).where(results_t.c.id.in_(list(last.values())))
        ):
            labels[row.system] = row
    return [
        {"name": name, "zone": (labels[name].labels or {}).get("zone", ""),
         "role": (labels[name].labels or {}).get("role", ""),
         "rto_s": labels[name].rto_s, "rpo_s": labels[name].rpo_s}
        for name in sorted(last)
    ]  # fmt: skip


def _systems(
    conn: Any, inventory: list[dict[str, Any]], rows: list[Any], runs: dict[int, Any]
) -> dict[str, SystemReadiness]:
    systems = {
        s["name"]: SystemReadiness(s["name"], s.get("zone") or "none", s.get("role") or "",
                                   True, s.get("rto_s"), s.get("rpo_s"))
        for s in inventory
    }  # fmt: skip
    gone: dict[str, Any] = {}
    for row in rows:
        system = systems.get(row.system)
        if system is None:  # in the evidence, no longer in the inventory
            system = systems[row.system] = SystemReadiness(
                row.system, "none", "", False, row.rto_s, row.rpo_s
            )
        if not system.in_inventory:
            gone[row.system] = row.id
        run = runs[row.run_pk]
        system.points.append(
            Point(run.started_at, run.run_id, row.verdict, row.recovery_time_s, row.rto_s,
                  row.backup_age_s, row.rpo_s, row.backup_id is not None)
        )  # fmt: skip
    if gone:  # their zone and role from their last result's labels
        query = select(results_t.c.system, results_t.c.labels).where(
            results_t.c.id.in_(list(gone.values()))
        )
        for row in conn.execute(query):
            labels = row.labels or {}
            systems[row.system].zone = labels.get("zone") or "none"
            systems[row.system].role = labels.get("role") or ""
    return systems


def _last_passes(conn: Any, site: str, end: datetime) -> dict[str, datetime]:
    query = (
        select(results_t.c.system, func.max(runs_t.c.started_at).label("at"))
        .join(runs_t, results_t.c.run_pk == runs_t.c.id)
        .where(
            and_(runs_t.c.site == site, results_t.c.verdict == "pass", runs_t.c.started_at <= end)
        )
        .group_by(results_t.c.system)
    )
    out = {}
    for row in conn.execute(query):
        at = row.at
        if isinstance(at, str):  # an aggregate over the text column on SQLite
            at = datetime.fromisoformat(at)
        out[row.system] = at if at.tzinfo else at.replace(tzinfo=UTC)
    return out


def _failures(
    conn: Any, systems: dict[str, SystemReadiness], rows: list[Any], runs: dict[int, Any]
) -> None:
    last: dict[str, Any] = {}
    for row in rows:
        if row.verdict != "pass":
            last[row.system] = row
    if not last:
        return
    checks: dict[int, list[dict[str, Any]]] = {}
    ids = [r.id for r in last.values()]
    for i in range(0, len(ids), 500):
        query = (
            select(checks_t)
            .where(checks_t.c.result_pk.in_(ids[i : i + 500]), checks_t.c.status != "pass")
            .order_by(checks_t.c.result_pk, checks_t.c.position)
        )
        for c in conn.execute(query).mappings():
            checks.setdefault(c["result_pk"], []).append(
                {
                    "name": c["name"],
                    "kind": c["kind"],
                    "status": c["status"],
                    "expected": _value(c, "expected"),
                    "observed": _value(c, "observed"),
                    "message": c["message"],
                }
            )
    for name, row in last.items():
        run = runs[row.run_pk]
        systems[name].last_failure = Failure(
            run.run_id, run.started_at, row.verdict, row.reason, checks.get(row.id, [])
        )


def _value(row: Any, field: str) -> Any:
    text = row.get(f"{field}_json")
    return json.loads(text) if text is not None else row.get(field)
