"""The verdict rules, in one place: a system's verdict from what its run measured, what
blocks a dependent, the site's recovery time (the critical path) and the site's verdict.

Plain functions of plain values (no Prefect, no Docker): ``lifecycle.verdict`` and
``verify.verify_site`` gather the measurements and call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from restoredrill.checks.base import CheckResult, Status

from .results import RunRecord, SystemResult, Verdict

BLOCKING = frozenset({Verdict.ERROR, Verdict.FAIL, Verdict.BLOCKED})
"""A dependency ending in one of these blocks its dependents (a slow or old one does not:
it came back and works)."""
NEAR_MISS = 0.8
"""A pass above this share of the RTO is flagged a near miss."""
WORST_FIRST = (
    Verdict.ERROR,
    Verdict.FAIL,
    Verdict.BLOCKED,
    Verdict.RTO_EXCEEDED,
    Verdict.RPO_EXCEEDED,
    Verdict.PASS,
)
"""The order in which a site takes its verdict from its systems'."""


@dataclass(frozen=True)
class Judged:
    """One system's verdict, why, and whether it passed close to its RTO."""

    verdict: Verdict
    reason: str = ""
    near_miss: bool = False


def judge_system(
    *,
    rto_s: float,
    rpo_s: float | None = None,
    recovery_s: float | None = None,
    backup_age_s: float | None = None,
    checks: Sequence[CheckResult] = (),
    failed_step: str | None = None,
    failure: str = "",
    watchdog: bool = False,
    limit_reached: str | None = None,
) -> Judged:
    """A system's verdict, first rule that applies:

    1. the twin hit a limit → ``error`` (it did not show what it does within its bounds);
    2. the watchdog stopped it → ``rto_exceeded``;
    3. a step failed (``failed_step``: ``failure``) → ``error``;
    4. a check did not pass → ``fail``;
    5. recovered past the RTO → ``rto_exceeded``;
    6. the backup is older than the RPO → ``rpo_exceeded``;
    7. else ``pass`` (a near miss above 80 % of the RTO).
    """
    failed = [c for c in checks if c.status is not Status.PASS]
    if limit_reached:
        cause = f" ({failed_step}: {failure})" if failed_step else ""
        return Judged(Verdict.ERROR, f"{limit_reached}{cause}")
    if failed_step and watchdog:
        return Judged(Verdict.RTO_EXCEEDED, failure)
    if failed_step:
        return Judged(Verdict.ERROR, f"{failed_step}: {failure}")
    if failed:
        described = "; ".join(_describe_check(c) for c in failed[:3])
        return Judged(Verdict.FAIL, f"{len(failed)} of {len(checks)} checks failed: {described}")
    if recovery_s is not None and recovery_s > rto_s:
        return Judged(Verdict.RTO_EXCEEDED, f"recovered in {recovery_s:.1f}s, RTO is {rto_s:.0f}s")
    if rpo_s is not None and backup_age_s is not None and backup_age_s > rpo_s:
        return Judged(
            Verdict.RPO_EXCEEDED, f"newest backup is {backup_age_s:.0f}s old, RPO is {rpo_s:.0f}s"
        )
    return Judged(Verdict.PASS, near_miss=recovery_s is not None and recovery_s > NEAR_MISS * rto_s)


def _describe_check(c: CheckResult) -> str:
    if c.status is Status.ERROR:
        return f"{c.name}: {c.message}"
    return f"{c.name}: expected {c.expected!r}, observed {c.observed!r}"


def blockers(depends_on: Sequence[str], results: Mapping[str, SystemResult]) -> list[str]:
    """The dependencies whose verdict blocks a dependent (see ``BLOCKING``)."""
    return [d for d in depends_on if results[d].verdict in BLOCKING]


def critical_path(
    graph: Mapping[str, Sequence[str]], results: Mapping[str, SystemResult]
) -> float | None:
    """The site's recovery time: each system starts once all it depends on have recovered
    (None if a system of the run has no recovery time)."""
    finish: dict[str, float] = {}

    def done_at(name: str) -> float | None:
        if name in finish:
            return finish[name]
        own = results[name].recovery_time_s
        if own is None:
            return None
        before = [done_at(d) for d in graph[name] if d in results]
        if any(b is None for b in before):
            return None
        finish[name] = max([b for b in before if b is not None], default=0.0) + own
        return finish[name]

    times = [done_at(n) for n in results]
    if not times or any(t is None for t in times):
        return None
    return round(max(t for t in times if t is not None), 3)


def site_verdict(record: RunRecord) -> Verdict:
    """The worst system verdict, and ``rto_exceeded`` at least when the site's critical
    path is past the site's own RTO."""
    verdicts = [s.verdict for s in record.systems]
    if (
        record.site_rto_s is not None
        and record.site_recovery_time_s is not None
        and record.site_recovery_time_s > record.site_rto_s
    ):
        verdicts.append(Verdict.RTO_EXCEEDED)
    return min(verdicts, key=WORST_FIRST.index, default=Verdict.PASS)
