"""A candidate run compared with its baseline: systems, checks, snapshots, recovery times.

- A system that passed and does not, or ends worse (pass → rto_exceeded → fail →
  blocked → error), is a regression; so is a recovery time longer by more than the
  tolerance (default 20 %) and by more than a floor (default 5 s, below which a busy
  machine's noise lies).
- A check is matched by system and name. Newly failing is a regression, newly passing
  is not. A check that kept its status but observed something else is a regression when
  its expectation is exact; a check judged by a range, a change or a count (``min``,
  ``max``, ``changes``, ``tolerance``, ``updates``) is compared by its status only.
- Snapshot entries are matched by snapshot and key. Added, removed, retyped (another
  data type) and changed (an attribute, readability or the value) are regressions.
  Values that move are compared by presence and, where a range is stated (the register
  map's min/max, a check's min/max), by range (:class:`checks.expect.Expectation`
  judges it); the rest exactly.

``ignore`` patterns (shell globs) leave out checks (``SYSTEM: CHECK``) and entries
(``SNAPSHOT: KEY``) whose values differ between runs for reasons of their own.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from restoredrill.checks.base import CheckResult, Status
from restoredrill.checks.expect import Expectation
from restoredrill.twins.snapshot import Entry, Snapshot

from .results import RunRecord, SystemResult, Verdict

WORSE = [
    Verdict.PASS,
    Verdict.RPO_EXCEEDED,
    Verdict.RTO_EXCEEDED,
    Verdict.FAIL,
    Verdict.BLOCKED,
    Verdict.ERROR,
]
RANGED = {"min", "max", "changes", "tolerance", "updates", "within"}
"""Keys of an expectation that judge a value by range, change or count, not equality."""


class Side(BaseModel):
    """A check's result in one run."""

    status: str
    expected: Any = None
    observed: Any = None
    message: str = ""


class CheckDelta(BaseModel):
    system: str
    check: str
    change: Literal[
        "unchanged", "newly failing", "newly passing", "observed changed", "still failing",
        "added", "removed",
    ]  # fmt: skip
    baseline: Side | None = None
    candidate: Side | None = None
    regression: bool = False


class EntryDelta(BaseModel):
    snapshot: str
    endpoint: str
    key: str
    change: Literal["added", "removed", "retyped", "changed"]
    what: str = Field(description="value, type, an attribute, readable, or the snapshot itself")
    baseline: Any = None
    candidate: Any = None
    detail: str = ""
    regression: bool = True


class SystemDelta(BaseModel):
    system: str
    baseline: str | None
    candidate: str | None
    baseline_s: float | None = None
    candidate_s: float | None = None
    time_change: float | None = None
    """(candidate - baseline) / baseline."""
    reasons: list[str] = Field(default_factory=list)
    regression: bool = False


class Comparison(BaseModel):
    systems: list[SystemDelta] = Field(default_factory=list)
    checks: list[CheckDelta] = Field(default_factory=list)
    entries: list[EntryDelta] = Field(default_factory=list)
    snapshots: list[str] = Field(default_factory=list)
    """The snapshots compared (by name)."""
    tolerance: float = 0.2
    floor_s: float = 5.0

    @property
    def regression(self) -> bool:
        return (
            any(s.regression for s in self.systems)
            or any(c.regression for c in self.checks)
            or any(e.regression for e in self.entries)
        )

    @property
    def verdict(self) -> str:
        return "regression" if self.regression else "no regression"


def compare(
    baseline: RunRecord,
    candidate: RunRecord,
    base_snaps: Sequence[Snapshot],
    cand_snaps: Sequence[Snapshot],
    *,
    tolerance: float = 0.2,
    floor_s: float = 5.0,
    ignore: Iterable[str] = (),
) -> Comparison:
    """Compare the candidate's run with the baseline's (see the module docs)."""
    ignore = list(ignore)
    out = Comparison(tolerance=tolerance, floor_s=floor_s)
    before = {s.system: s for s in baseline.systems}
    after = {s.system: s for s in candidate.systems}
    for name in [*before, *(n for n in after if n not in before)]:
        b, c = before.get(name), after.get(name)
        out.systems.append(_system(name, b, c, tolerance, floor_s))
        out.checks += [
            d for d in _checks(name, b, c) if not _ignored(f"{d.system}: {d.check}", ignore)
        ]
    base = {s.owner: s for s in base_snaps}
    cand = {s.owner: s for s in cand_snaps}
    out.snapshots = [*base, *(n for n in cand if n not in base)]
    for name in out.snapshots:
        deltas = _snapshot(name, base.get(name), cand.get(name))
        out.entries += [d for d in deltas if not _ignored(f"{d.snapshot}: {d.key}", ignore)]
    return out


def _ignored(text: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(text, p) for p in patterns)


# --------------------------------------------------------------------------- systems


def _system(
    name: str, b: SystemResult | None, c: SystemResult | None, tolerance: float, floor_s: float
) -> SystemDelta:
    delta = SystemDelta(
        system=name,
        baseline=b.verdict.value if b else None,
        candidate=c.verdict.value if c else None,
        baseline_s=b.recovery_time_s if b else None,
        candidate_s=c.recovery_time_s if c else None,
    )
    if b is None or c is None:
        delta.reasons.append("only in the candidate" if b is None else "only in the baseline")
        if b is None and c is not None and not c.verdict.ok:
            delta.regression = True
            delta.reasons.append(f"ends {c.verdict.value}: {c.reason}")
        return delta
    if WORSE.index(c.verdict) > WORSE.index(b.verdict):
        delta.regression = True
        delta.reasons.append(f"{b.verdict.value} → {c.verdict.value}: {c.reason}")
    elif c.verdict != b.verdict:
        delta.reasons.append(f"{b.verdict.value} → {c.verdict.value}")
    if b.recovery_time_s and c.recovery_time_s is not None:
        change = (c.recovery_time_s - b.recovery_time_s) / b.recovery_time_s
        delta.time_change = round(change, 4)
        slower = c.recovery_time_s - b.recovery_time_s
        if change > tolerance and slower > floor_s:
            delta.regression = True
            delta.reasons.append(
                f"recovery {b.recovery_time_s:.1f}s → {c.recovery_time_s:.1f}s "
                f"(+{change:.0%}, tolerance {tolerance:.0%})"
            )
    return delta


# --------------------------------------------------------------------------- checks


def _side(c: CheckResult) -> Side:
    return Side(status=c.status.value, expected=c.expected, observed=c.observed, message=c.message)


def _keyed(result: SystemResult | None) -> dict[str, CheckResult]:
    """Checks by name (a repeated name gets ``#2``, ``#3`` …)."""
    out: dict[str, CheckResult] = {}
    for c in result.checks if result else []:
        name, n = c.name, 1
        while name in out:
            n += 1
            name = f"{c.name} #{n}"
        out[name] = c
    return out


def _checks(system: str, b: SystemResult | None, c: SystemResult | None) -> list[CheckDelta]:
    before, after = _keyed(b), _keyed(c)
    out = []
    for name in [*before, *(n for n in after if n not in before)]:
        x, y = before.get(name), after.get(name)
        delta = CheckDelta(
            system=system,
            check=name,
            change="unchanged",
            baseline=_side(x) if x else None,
            candidate=_side(y) if y else None,
        )
        if x is None and y is not None:
            delta.change, delta.regression = "added", not y.passed
        elif y is None and x is not None:
            ran = c is not None and c.checks
            delta.change = "removed" if ran or c is None else "newly failing"
            if delta.change == "newly failing":  # the candidate never got to its checks
                delta.candidate = Side(status="not run", message=c.reason if c else "")
                delta.regression = x.passed
        elif x is not None and y is not None:
            delta.change, delta.regression = _judge(x, y)
        out.append(delta)
    return out


def _judge(x: CheckResult, y: CheckResult) -> tuple[Any, bool]:
    if x.passed and not y.passed:
        return "newly failing", True
    if not x.passed and y.passed:
        return "newly passing", False
    if x.status is Status.ERROR and y.status is Status.ERROR:
        return "still failing", False
    if _ranged(x.expected) or _ranged(y.expected) or _same(x.observed, y.observed):
        return ("unchanged" if x.passed else "still failing"), False
    return "observed changed", True


def _ranged(expected: Any) -> bool:
    return isinstance(expected, dict) and bool(RANGED & expected.keys())


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


# --------------------------------------------------------------------------- snapshots


def _snapshot(name: str, b: Snapshot | None, c: Snapshot | None) -> list[EntryDelta]:
    endpoint = (c or b).endpoint if (c or b) else ""
    whole = {"snapshot": name, "endpoint": endpoint, "key": "(endpoint)", "what": "snapshot"}
    if b is None or c is None:
        return [
            EntryDelta(
                **whole,
                change="added" if b is None else "removed",
                baseline=None if b is None else f"{len(b.entries)} entries",
                candidate=None if c is None else f"{len(c.entries)} entries",
                detail="not taken in the " + ("baseline" if b is None else "candidate"),
            )
        ]
    if b.error or c.error:
        if b.error and c.error:
            return []
        return [
            EntryDelta(
                **whole,
                change="changed",
                baseline=b.error or f"{len(b.entries)} entries",
                candidate=c.error or f"{len(c.entries)} entries",
                detail="could not be taken in the " + ("candidate" if c.error else "baseline"),
            )
        ]
    out = []
    for key in [*b.entries, *(k for k in c.entries if k not in b.entries)]:
        out += _entry(name, endpoint, key, b.entries.get(key), c.entries.get(key))
    return out


def shown(e: Entry) -> Any:
    """An entry's value as the report shows it (a moving number as its range seen)."""
    if e.problem:
        return f"unreadable: {e.problem}"
    if e.moving and e.low is not None and e.high is not None and e.low != e.high:
        return f"moving {e.low:g}..{e.high:g}"
    if e.moving:
        return f"moving (first read {e.value!r})"
    return e.value


def _entry(
    name: str, endpoint: str, key: str, b: Entry | None, c: Entry | None
) -> list[EntryDelta]:
    base = {"snapshot": name, "endpoint": endpoint, "key": key}
    if b is None or c is None:
        e = b or c
        assert e is not None
        what = f"{e.type} " if e.type else ""
        return [
            EntryDelta(
                **base,
                change="added" if b is None else "removed",
                what="entry",
                baseline=None if b is None else f"{what}{shown(b)!r}".strip(),
                candidate=None if c is None else f"{what}{shown(c)!r}".strip(),
            )
        ]
    out = []
    if b.type != c.type:
        out.append(
            EntryDelta(**base, change="retyped", what="type", baseline=b.type, candidate=c.type)
        )
    for attr in [*b.attrs, *(a for a in c.attrs if a not in b.attrs)]:
        if b.attrs.get(attr) != c.attrs.get(attr):
            out.append(
                EntryDelta(
                    **base, change="changed", what=attr,
                    baseline=b.attrs.get(attr), candidate=c.attrs.get(attr),
                )
            )  # fmt: skip
    if bool(b.problem) != bool(c.problem):
        out.append(
            EntryDelta(
                **base, change="changed", what="readable", baseline=shown(b), candidate=shown(c)
            )
        )
    elif not b.problem and b.type == c.type:
        why = _value_change(b, c)
        if why is not None:
            out.append(
                EntryDelta(**base, change="changed", what="value", baseline=shown(b),
                           candidate=shown(c), detail=why)
            )  # fmt: skip
    return out


def _value_change(b: Entry, c: Entry) -> str | None:
    """Why the candidate's value differs (None: it does not, as far as can be judged)."""
    if b.moving or c.moving:
        bounds = c.range or b.range
        if bounds is None:
            return None  # a moving value without a stated range: present is all it can show
        judge = Expectation(min=bounds[0], max=bounds[1])
        for value in (c.value, c.low, c.high):
            if value is not None:
                ok, reason = judge.judge(value)
                if not ok:
                    before = all(
                        judge.judge(v)[0] for v in (b.value, b.low, b.high) if v is not None
                    )
                    return f"{reason} (the baseline's stayed inside)" if before else None
        return None
    if not _same(b.value, c.value):
        return "differs"
    return None
