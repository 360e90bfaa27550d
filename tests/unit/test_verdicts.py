"""The verdict rules (flows/verdicts.py) on plain inputs: a system's verdict, what blocks a
dependent, the critical path and the site's verdict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.results import RunRecord, SystemResult, Verdict
from restoredrill.flows.verdicts import (
    Judged,
    blockers,
    critical_path,
    judge_system,
    site_verdict,
)

PASSED = CheckResult(name="port", kind="tcp", status=Status.PASS, expected="open", observed="open")
FAILED = CheckResult(name="level", kind="modbus", status=Status.FAIL, expected=72.5, observed=0)
BROKEN = CheckResult(name="tags", kind="opcua", status=Status.ERROR, message="unreachable")


def test_a_clean_fast_recent_run_passes() -> None:
    judged = judge_system(rto_s=100, rpo_s=3600, recovery_s=40, backup_age_s=60, checks=[PASSED])
    assert judged == Judged(Verdict.PASS, "", near_miss=False)


def test_a_failed_check_fails_with_expected_and_observed() -> None:
    judged = judge_system(rto_s=100, recovery_s=40, checks=[PASSED, FAILED, BROKEN])
    assert judged.verdict is Verdict.FAIL
    assert judged.reason == (
        "2 of 3 checks failed: level: expected 72.5, observed 0; tags: unreachable"
    )


def test_reason_names_at_most_three_failed_checks() -> None:
    checks = [FAILED.model_copy(update={"name": f"c{i}"}) for i in range(5)]
    reason = judge_system(rto_s=100, recovery_s=1, checks=checks).reason
    assert reason.startswith("5 of 5 checks failed: c0:") and "c2:" in reason
    assert "c3:" not in reason


def test_a_failed_step_is_an_error_naming_the_step() -> None:
    judged = judge_system(rto_s=100, failed_step="restore", failure="archive truncated")
    assert judged == Judged(Verdict.ERROR, "restore: archive truncated")


def test_the_watchdog_makes_rto_exceeded_with_its_own_message() -> None:
    judged = judge_system(
        rto_s=10,
        failed_step="ready",
        failure="stopped by the watchdog after 30s (3x RTO) in step ready",
        watchdog=True,
    )
    assert judged == Judged(
        Verdict.RTO_EXCEEDED, "stopped by the watchdog after 30s (3x RTO) in step ready"
    )


def test_a_reached_limit_outranks_everything_and_keeps_the_cause() -> None:
    judged = judge_system(
        rto_s=10,
        failed_step="checks",
        failure="stopped by the watchdog",
        watchdog=True,
        checks=[FAILED],
        limit_reached="limit: memory 1GiB reached",
    )
    assert judged == Judged(
        Verdict.ERROR, "limit: memory 1GiB reached (checks: stopped by the watchdog)"
    )
    alone = judge_system(rto_s=10, recovery_s=1, limit_reached="limit: pids 512 reached")
    assert alone == Judged(Verdict.ERROR, "limit: pids 512 reached")


def test_recovered_past_the_rto() -> None:
    judged = judge_system(rto_s=60, recovery_s=61.25, checks=[PASSED])
    assert judged == Judged(Verdict.RTO_EXCEEDED, "recovered in 61.2s, RTO is 60s")


def test_a_failed_check_outranks_a_slow_recovery() -> None:
    assert judge_system(rto_s=60, recovery_s=600, checks=[FAILED]).verdict is Verdict.FAIL


def test_a_backup_older_than_its_rpo() -> None:
    judged = judge_system(rto_s=60, rpo_s=86400, recovery_s=10, backup_age_s=90000)
    assert judged == Judged(Verdict.RPO_EXCEEDED, "newest backup is 90000s old, RPO is 86400s")


def test_slow_outranks_old() -> None:
    judged = judge_system(rto_s=60, rpo_s=10, recovery_s=70, backup_age_s=20)
    assert judged.verdict is Verdict.RTO_EXCEEDED


@pytest.mark.parametrize(
    ("rpo_s", "age_s"),
    [(None, 10**9), (3600, None), (3600, 3600)],
)
def test_no_rpo_verdict_without_both_or_at_the_bound(
    rpo_s: float | None, age_s: float | None
) -> None:
    assert (
        judge_system(rto_s=60, rpo_s=rpo_s, recovery_s=1, backup_age_s=age_s).verdict
        is Verdict.PASS
    )


@pytest.mark.parametrize(
    ("recovery_s", "near_miss"),
    [(80.0, False), (80.01, True), (100.0, True), (None, False)],
)
def test_near_miss_is_a_pass_above_80_percent_of_the_rto(
    recovery_s: float | None, near_miss: bool
) -> None:
    judged = judge_system(rto_s=100, recovery_s=recovery_s)
    assert judged.verdict is Verdict.PASS and judged.near_miss is near_miss


def test_only_a_pass_is_a_near_miss() -> None:
    assert not judge_system(rto_s=100, recovery_s=95, checks=[FAILED]).near_miss
    assert not judge_system(rto_s=100, rpo_s=1, recovery_s=95, backup_age_s=2).near_miss


# --------------------------------------------------------------------------- dependencies


def result(name: str, verdict: Verdict, recovery_s: float | None = None) -> SystemResult:
    return SystemResult(system=name, verdict=verdict, recovery_time_s=recovery_s)


@pytest.mark.parametrize(
    ("verdict", "blocks"),
    [
        (Verdict.PASS, False),
        (Verdict.RTO_EXCEEDED, False),
        (Verdict.RPO_EXCEEDED, False),
        (Verdict.FAIL, True),
        (Verdict.ERROR, True),
        (Verdict.BLOCKED, True),
    ],
)
def test_what_blocks_a_dependent(verdict: Verdict, blocks: bool) -> None:
    results = {"db": result("db", verdict), "cache": result("cache", Verdict.PASS)}
    assert blockers(["cache", "db"], results) == (["db"] if blocks else [])


def test_critical_path_adds_along_chains_and_takes_the_longest() -> None:
    graph = {"db": [], "app": ["db"], "hmi": ["app"], "report": ["db"]}
    results = {
        "db": result("db", Verdict.PASS, 10),
        "app": result("app", Verdict.PASS, 20),
        "hmi": result("hmi", Verdict.PASS, 5.5),
        "report": result("report", Verdict.PASS, 30),
    }
    assert critical_path(graph, results) == 40.0  # db → report (10 + 30) beats db → app → hmi
    results["hmi"] = result("hmi", Verdict.RTO_EXCEEDED, 25)
    assert critical_path(graph, results) == 55.0  # db → app → hmi


def test_critical_path_waits_for_the_slowest_dependency() -> None:
    graph = {"a": [], "b": [], "c": ["a", "b"]}
    results = {n: result(n, Verdict.PASS, t) for n, t in {"a": 3, "b": 9, "c": 1}.items()}
    assert critical_path(graph, results) == 10.0


def test_critical_path_of_some_systems_ignores_the_others() -> None:
    graph = {"a": [], "b": ["a"]}
    assert critical_path(graph, {"b": result("b", Verdict.PASS, 4)}) == 4.0


def test_no_critical_path_when_a_system_did_not_recover() -> None:
    graph = {"a": [], "b": ["a"]}
    results = {"a": result("a", Verdict.ERROR), "b": result("b", Verdict.BLOCKED)}
    assert critical_path(graph, results) is None
    assert critical_path({}, {}) is None


# --------------------------------------------------------------------------- the site


def record(
    *verdicts: Verdict, recovery_s: float | None = None, rto_s: float | None = None
) -> RunRecord:
    return RunRecord(
        run_id="r1",
        site="plant",
        started_at=datetime(2026, 11, 24, tzinfo=UTC),
        site_recovery_time_s=recovery_s,
        site_rto_s=rto_s,
        systems=[result(f"s{i}", v) for i, v in enumerate(verdicts)],
    )


@pytest.mark.parametrize(
    ("verdicts", "worst"),
    [
        ((Verdict.PASS, Verdict.PASS), Verdict.PASS),
        ((Verdict.PASS, Verdict.RPO_EXCEEDED), Verdict.RPO_EXCEEDED),
        ((Verdict.RPO_EXCEEDED, Verdict.RTO_EXCEEDED), Verdict.RTO_EXCEEDED),
        ((Verdict.RTO_EXCEEDED, Verdict.BLOCKED), Verdict.BLOCKED),
        ((Verdict.BLOCKED, Verdict.FAIL), Verdict.FAIL),
        ((Verdict.FAIL, Verdict.ERROR, Verdict.PASS), Verdict.ERROR),
        ((), Verdict.PASS),
    ],
)
def test_the_site_takes_its_worst_system_verdict(
    verdicts: tuple[Verdict, ...], worst: Verdict
) -> None:
    assert site_verdict(record(*verdicts)) is worst


def test_a_site_past_its_own_rto_is_rto_exceeded() -> None:
    assert site_verdict(record(Verdict.PASS, recovery_s=601, rto_s=600)) is Verdict.RTO_EXCEEDED
    assert site_verdict(record(Verdict.PASS, recovery_s=600, rto_s=600)) is Verdict.PASS
    assert site_verdict(record(Verdict.PASS, recovery_s=None, rto_s=600)) is Verdict.PASS
    assert site_verdict(record(Verdict.PASS, recovery_s=10**6, rto_s=None)) is Verdict.PASS


def test_a_site_past_its_rto_is_judged_in_the_same_order() -> None:
    slow_site = {"recovery_s": 900.0, "rto_s": 600.0}
    assert site_verdict(record(Verdict.FAIL, **slow_site)) is Verdict.FAIL
    assert site_verdict(record(Verdict.BLOCKED, **slow_site)) is Verdict.BLOCKED
    assert site_verdict(record(Verdict.RPO_EXCEEDED, **slow_site)) is Verdict.RTO_EXCEEDED
