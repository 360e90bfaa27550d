"""The comparison of a candidate run with its baseline, on records built by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.compare import compare
from restoredrill.flows.results import RunRecord, SystemResult, Verdict
from restoredrill.twins.snapshot import Entry, Snapshot

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def check(name: str, status: str = "pass", expected=None, observed=None) -> CheckResult:
    return CheckResult(name=name, kind="x", status=Status(status), expected=expected, observed=observed)


def system(name: str, verdict: str = "pass", checks=(), seconds: float | None = 10.0, reason: str = ""):
    return SystemResult(system=name, verdict=Verdict(verdict), checks=list(checks),
                        recovery_time_s=seconds, reason=reason)  # fmt: skip


def run(*systems: SystemResult) -> RunRecord:
    return RunRecord(run_id="r", site="s", started_at=NOW, systems=list(systems))


def deltas(base: RunRecord, cand: RunRecord, **kw):
    found = compare(base, cand, [], [], **kw)
    return found, {(d.system, d.check): d for d in found.checks}


def test_checks_newly_failing_passing_and_observed_changes():
    base = run(system("gw", checks=[
        check("level in range", "pass", {"min": 40, "max": 60}, 45.0),
        check("config file", "pass", "contains x", "found"),
        check("version", "pass", "3.1", "3.1"),
        check("broken before", "fail", 1, 2),
        check("process", "pass", "running", ["app --a"]),
    ]))  # fmt: skip
    cand = run(system("gw", "fail", checks=[
        check("level in range", "pass", {"min": 40, "max": 60}, 58.0),  # moving: not compared
        check("config file", "fail", "contains x", "not found"),
        check("version", "pass", "3.1", "3.1"),
        check("broken before", "pass", 1, 1),
        check("process", "pass", "running", ["app --b"]),
    ]))  # fmt: skip
    found, by = deltas(base, cand)
    assert by["gw", "level in range"].change == "unchanged"
    assert by["gw", "config file"].change == "newly failing" and by["gw", "config file"].regression
    assert by["gw", "config file"].baseline.observed == "found"
    assert by["gw", "config file"].candidate.observed == "not found"
    assert by["gw", "broken before"].change == "newly passing" and not by["gw", "broken before"].regression
    assert by["gw", "process"].change == "observed changed" and by["gw", "process"].regression
    assert found.verdict == "regression"
    assert found.systems[0].regression and "pass → fail" in found.systems[0].reasons[0]


def test_a_candidate_that_never_reaches_its_checks_fails_each_of_them():
    base = run(system("gw", checks=[check("a"), check("b", "fail")]))
    cand = run(system("gw", "error", checks=[], seconds=None, reason="restore: archive truncated"))
    found, by = deltas(base, cand)
    assert by["gw", "a"].change == "newly failing" and by["gw", "a"].regression
    assert by["gw", "a"].candidate.status == "not run"
    assert by["gw", "a"].candidate.message == "restore: archive truncated"
    assert not by["gw", "b"].regression  # it failed before too
    assert found.systems[0].reasons == ["pass → error: restore: archive truncated"]


def test_recovery_time_beyond_the_tolerance_and_the_floor():
    def judged(before: float, after: float, **kw):
        return compare(run(system("a", seconds=before)), run(system("a", seconds=after)), [], [], **kw).systems[0]

    assert judged(10, 20).regression  # +100 %, +10 s
    assert not judged(10, 12).regression  # +20 %: at the tolerance
    assert not judged(2, 4).regression  # +100 %, but 2 s: noise
    assert judged(2, 4, floor_s=1).regression
    assert not judged(20, 10).regression and judged(20, 10).time_change == -0.5
    assert not judged(10, 14, tolerance=0.5).regression


def snap(owner: str, **entries: Entry) -> Snapshot:
    return Snapshot(owner=owner, protocol="opcua", endpoint="opc.tcp://10.251.0.60:4840/", entries=entries)


def test_snapshot_entries_added_removed_retyped_changed():
    b = snap("gw", a=Entry(type="Double", value=1.0), gone=Entry(type="Int32", value=3),
             t=Entry(type="Double", value=1.0), acc=Entry(type="Double", value=1.0, attrs={"access": "read"}),
             v=Entry(type="String", value="demo plant"), same=Entry(type="Boolean", value=True))  # fmt: skip
    c = snap("gw", a=Entry(type="Double", value=1.0), new=Entry(type="Double", value=9.0),
             t=Entry(type="Float", value=1.0), acc=Entry(type="Double", value=1.0, attrs={"access": "read,write"}),
             v=Entry(type="String", value="line 2"), same=Entry(type="Boolean", value=True))  # fmt: skip
    found = compare(run(), run(), [b], [c])
    got = {(e.key, e.change, e.what): (e.baseline, e.candidate) for e in found.entries}
    assert got == {
        ("gone", "removed", "entry"): ("Int32 3", None),
        ("t", "retyped", "type"): ("Double", "Float"),
        ("acc", "changed", "access"): ("read", "read,write"),
        ("v", "changed", "value"): ("demo plant", "line 2"),
        ("new", "added", "entry"): (None, "Double 9.0"),
    }
    assert found.regression


def test_moving_values_are_compared_by_presence_and_range():
    def entry(lo: float, hi: float, rng=(40.0, 60.0)) -> Entry:
        return Entry(type="Double", value=lo, moving=True, low=lo, high=hi, range=rng)

    b = snap("gw", level=entry(45, 47), flow=entry(100, 130, None), bad=entry(70, 80))
    c = snap("gw", level=entry(55, 58), flow=entry(300, 310, None), bad=entry(75, 85))
    assert compare(run(), run(), [b], [c]).entries == []  # inside the range / no range / both outside
    c = snap("gw", level=entry(1e-8, 2e-8), flow=entry(300, 310, None), bad=entry(75, 85))
    [delta] = compare(run(), run(), [b], [c]).entries
    assert (delta.key, delta.what, delta.baseline, delta.candidate) == (
        "level", "value", "moving 45..47", "moving 1e-08..2e-08"
    )
    assert "outside 40..60" in delta.detail


def test_snapshots_missing_or_failed_on_one_side():
    b = snap("gw", a=Entry(value=1))
    found = compare(run(), run(), [b], [])
    assert [(e.key, e.change, e.detail) for e in found.entries] == [
        ("(endpoint)", "removed", "not taken in the candidate")
    ]
    c = Snapshot(owner="gw", protocol="opcua", endpoint="x", error="ConnectionError: refused")
    [e] = compare(run(), run(), [b], [c]).entries
    assert e.change == "changed" and e.candidate == "ConnectionError: refused"


def test_ignore_patterns_leave_out_checks_and_entries():
    base = run(system("gw", checks=[check("clock", "pass", "any", "10:00")]))
    cand = run(system("gw", checks=[check("clock", "pass", "any", "10:01")]))
    b, c = snap("gw", StartTime=Entry(value="10:00")), snap("gw", StartTime=Entry(value="10:01"))
    assert compare(base, cand, [b], [c]).regression
    quiet = compare(base, cand, [b], [c], ignore=["gw: clock", "gw: Start*"])
    assert not quiet.regression and quiet.verdict == "no regression"
