"""Values read from a device, judged: exact, range, changing, written-through, within a window.

The one place where the modbus and opcua checks sample and judge values. Every value is
read once; depending on what it must show, it is then re-read (after 50 ms, the pause
doubling up to the check's ``interval``) until it holds or its window ends:

- ``equals`` / ``min`` / ``max``: judged on the first read, unless ``settle:`` gives the
  value a window (a value just written through another system: re-read until it holds);
- ``write`` (``equals`` defaults to the written value): written first, then re-read until
  it reads back, within ``settle`` (default 10s: a gateway or PLC may take a poll cycle);
- ``changes: true``: re-read until it differs from the first read, within ``settle``
  (default: the check's ``window``); every value read must meet equals/min/max.

Judging stays strict: a read that returns after the window does not count, so a value
that arrives late fails like one that never arrives. A result shows the window in
``expected`` (``settle: 10s``) and says how long the value took (``settled after 1.3s``)
or what was read last (``did not settle within 10s: last read 50.0 != 63.5``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from restoredrill.durations import Duration

from .base import CheckResult, CheckSpecBase, result

WRITE_SETTLE = timedelta(seconds=10)
"""How long a written value may take to read back, unless ``settle:`` says otherwise."""
FIRST_PAUSE = 0.05
"""Seconds before the first re-read; the pause doubles up to the check's ``interval``."""

Reader = Callable[[list[int]], Awaitable[tuple[dict[int, Any], dict[int, str]]]]
"""Reads the values at these indexes: (value by index, problem by index)."""


class Expectation(BaseModel):
    """What a value must be: exact (with tolerance), in a range, changing; written first."""

    model_config = ConfigDict(extra="forbid")

    equals: Any = Field(None, description="exact value (a list for count > 1)")
    tolerance: float = Field(0.0, ge=0, description="allowed difference for equals on numbers")
    min: float | None = None
    max: float | None = None
    changes: bool = Field(False, description="must change within its settle window")
    write: Any = Field(None, description="write this first, then read it back")
    settle: Duration | None = Field(
        None,
        description="how long the value may take to hold (default: 10s after a write, "
        "the check's window for changes, else 0s: read once)",
    )

    def wanted(self) -> Any:
        """The exact value expected: ``equals``, or else the value written."""
        return self.write if self.equals is None else self.equals

    def window(self, changes_window: timedelta) -> float:
        """Seconds this value may take to hold (or to change)."""
        if self.settle is not None:
            return self.settle.total_seconds()
        if self.changes:
            return changes_window.total_seconds()
        return WRITE_SETTLE.total_seconds() if self.write is not None else 0.0

    def expected(self, changes_window: timedelta) -> Any:
        """What the evidence shows as expected, the allowed window included."""
        parts: dict[str, Any] = {} if self.write is None else {"write": self.write}
        if self.wanted() is not None:
            parts["equals"] = self.wanted()
            if self.tolerance:
                parts["tolerance"] = self.tolerance
        if self.min is not None:
            parts["min"] = self.min
        if self.max is not None:
            parts["max"] = self.max
        if self.changes:
            parts["changes"] = True
        window = self.window(changes_window)
        if window or self.settle is not None:
            parts["settle"] = _secs(window)
        return parts or "readable"

    def judge(self, value: Any) -> tuple[bool, str]:
        """(ok, reason) for one value or a list of values (change is judged by ``watch``)."""
        values = value if isinstance(value, list) else [value]
        wanted = self.wanted()
        if wanted is not None:
            wanted = wanted if isinstance(wanted, list) else [wanted] * len(values)
            if len(wanted) != len(values):
                return False, f"expected {len(wanted)} values, read {len(values)}"
            exact = (
                self.tolerance == 0
                and wanted == values
                and bool not in set(map(type, wanted))
                and bool not in set(map(type, values))
            )  # the common case in one comparison; bools must match bools (True == 1)
            for i, (w, v) in enumerate([] if exact else zip(wanted, values, strict=True)):
                if not _same(w, v, self.tolerance):
                    return False, f"{_at(i, values)}{v!r} != {w!r}"
        if self.min is not None or self.max is not None:
            lo = -math.inf if self.min is None else self.min
            hi = math.inf if self.max is None else self.max
            for i, v in enumerate(values):
                if isinstance(v, str) or v is None or not lo <= v <= hi:
                    return False, f"{_at(i, values)}{v!r} outside {self._range()}"
        return True, ""

    def _range(self) -> str:
        if self.min is None:
            return f"<= {self.max:g}"
        return f">= {self.min:g}" if self.max is None else f"{self.min:g}..{self.max:g}"


def _same(wanted: Any, seen: Any, tolerance: float) -> bool:
    if isinstance(wanted, bool) or isinstance(seen, bool):
        return bool(wanted) == bool(seen) and isinstance(seen, bool | int)
    if isinstance(wanted, int | float) and isinstance(seen, int | float):
        return abs(wanted - seen) <= tolerance or (
            tolerance == 0 and math.isclose(wanted, seen, rel_tol=1e-6)
        )
    return wanted == seen


def _at(i: int, values: list[Any]) -> str:
    return f"[{i}] " if len(values) > 1 else ""


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


class Sampling(CheckSpecBase):
    """A check that samples values (modbus, opcua): its window and re-read pacing."""

    window: Duration = Field(
        timedelta(seconds=5), description="default settle window of changes: values"
    )
    interval: Duration = Field(
        timedelta(milliseconds=250),
        description="longest pause between re-reads (they start at 50ms and double)",
    )

    def longest_window(self, items: Sequence[Expectation]) -> float:
        """Seconds the slowest value may be watched (to bound the whole check)."""
        return max((item.window(self.window) for item in items), default=0.0)


@dataclass
class Seen:
    """What was read of one value, and the judgement."""

    first: Any
    last: Any
    ok: bool
    reason: str = ""
    done: bool = True
    after: float | None = None
    """Seconds from the first read until the value held (or changed)."""


def _first(item: Expectation, value: Any, window: float) -> Seen:
    """The judgement after the first read: final, or to be watched."""
    ok, reason = item.judge(value)
    if item.changes:
        return Seen(value, value, False, reason, done=not ok)
    if window and not ok:
        return Seen(value, value, False, reason, done=False)
    return Seen(value, value, ok, reason, after=0.0 if window else None)


def _again(item: Expectation, seen: Seen, value: Any, elapsed: float) -> None:
    """Judge a re-read (taken within the window)."""
    ok, reason = item.judge(value)
    seen.last, seen.reason = value, reason
    if not ok and item.changes:
        seen.done = True  # a moving value must meet equals/min/max at every read
    elif ok and (not item.changes or value != seen.first):
        seen.ok, seen.done, seen.after = True, True, elapsed


def _timed_out(item: Expectation, seen: Seen, window: float) -> None:
    seen.done = True
    if item.changes:
        seen.reason = f"did not change within {_secs(window)} (stayed {seen.first!r})"
    else:
        seen.reason = f"did not settle within {_secs(window)}: last read {seen.reason}"


async def watch(
    spec: Sampling, items: Sequence[Expectation], indexes: Sequence[int], read: Reader
) -> tuple[dict[int, Seen], dict[int, str]]:
    """Read ``items`` at ``indexes`` and re-read each until it holds or its window ends.

    Returns what was seen by index, and the problems (unreadable values) by index.
    """
    start = time.monotonic()
    values, problems = await read(list(indexes)) if indexes else ({}, {})
    windows = {i: items[i].window(spec.window) for i in values}
    seen = {i: _first(items[i], v, windows[i]) for i, v in values.items()}
    pending = {i: start + windows[i] for i, s in seen.items() if not s.done}
    pause, longest = FIRST_PAUSE, spec.interval.total_seconds()
    while pending:
        await asyncio.sleep(max(0.0, min(pause, min(pending.values()) - time.monotonic())))
        pause = min(pause * 2, longest)
        sample, failures = await read(list(pending))
        now = time.monotonic()
        problems.update(failures)
        for i, value in sample.items():
            if now <= pending[i]:  # a read returning after the window does not count
                _again(items[i], seen[i], value, now - start)
        for i, deadline in list(pending.items()):
            if i in failures or seen[i].done:
                del pending[i]
            elif now >= deadline:
                _timed_out(items[i], seen[i], windows[i])
                del pending[i]
    for i, s in seen.items():
        if s.ok and s.after is not None:
            s.reason = f"{'changed' if items[i].changes else 'settled'} after {s.after:.1f}s"
    return seen, problems


def results(
    spec: Sampling,
    items: Sequence[tuple[str, Expectation]],
    seen: dict[int, Seen],
    problems: dict[int, str],
    started: float,
) -> list[CheckResult]:
    """One result per (name, item): expected (with its window) and observed values."""
    out = []
    for i, (name, item) in enumerate(items):
        expected = item.expected(spec.window)
        if i in problems or i not in seen:
            why = problems.get(i, "not read")
            out.append(result(spec, False, expected=expected, observed=None, started=started,
                              message=why, name=name))  # fmt: skip
            continue
        s = seen[i]
        changed = item.changes and s.ok
        observed = {"first": s.first, "changed to": s.last} if changed else s.last
        out.append(result(spec, s.ok, expected=expected, observed=observed, started=started,
                          message=s.reason, name=name))  # fmt: skip
    return out
