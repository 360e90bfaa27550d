"""The value a PLC tag takes over time: constant, counter, ramp, sine, random walk, toggle,
setpoint (written by a client, remembered), or replay (an observed series, looped)."""

from __future__ import annotations

import bisect
import math
import random
import statistics
from typing import Any

from .registers import LIMITS, Tag


class Behaviour:
    """A tag's value at ``elapsed`` seconds since the twin started."""

    def __init__(self, tag: Tag, rng: random.Random) -> None:
        self.tag, self.rng = tag, rng
        low, high = LIMITS[tag.dtype]
        self.lo = tag.min if tag.min is not None else (low if tag.dtype != "bool" else 0)
        self.hi = tag.max if tag.max is not None else high
        self.period = tag.period or (60.0 if tag.behaviour in ("ramp", "sine") else 1.0)
        start = tag.initial
        if start is None:
            start = (
                (self.lo + self.hi) / 2
                if tag.behaviour == "random_walk"
                else (tag.min if tag.min is not None and tag.behaviour == "counter" else 0)
            )
        self.start = start
        self.walk = float(start)
        if tag.series is not None:
            self.times = [t for t, _ in tag.series]
            self.values = [v for _, v in tag.series]
            self.period = tag.period or replay_period(self.times)
            self.start = self.values[0] if tag.initial is None else tag.initial

    @property
    def dynamic(self) -> bool:
        return self.tag.behaviour not in ("constant", "setpoint")

    def value(self, elapsed: float) -> Any:
        kind, t = self.tag.behaviour, self.tag
        if kind == "toggle":
            return bool(self.start) ^ bool(int(elapsed / self.period) % 2)
        if kind == "counter":
            step = t.step if t.step is not None else 1
            value = self.start + step * int(elapsed / self.period)
            if value > self.hi:
                span = self.hi - self.lo + (0 if t.dtype == "float32" else 1)
                value = self.lo + (value - self.lo) % span
            return value
        if kind == "ramp":
            return self.lo + (self.hi - self.lo) * ((elapsed % self.period) / self.period)
        if kind == "sine":
            mid, amp = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
            return mid + amp * math.sin(2 * math.pi * elapsed / self.period)
        if kind == "random_walk":
            step = t.step if t.step is not None else (self.hi - self.lo) / 50
            self.walk = min(self.hi, max(self.lo, self.walk + self.rng.uniform(-step, step)))
            return self.walk
        if kind == "replay":
            at = elapsed % self.period
            return self.values[max(0, bisect.bisect_right(self.times, at) - 1)]
        return self.start


def replay_period(times: list[float]) -> float:
    """A series' loop: its last time plus its median step (1 s for a single sample)."""
    if len(times) < 2:
        return max(1.0, times[-1] + 1.0)
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return times[-1] + statistics.median(steps)
