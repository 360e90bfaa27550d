"""checks.expect: how values are sampled and judged within their windows (no device needed).

A device is stood in for by a reader that answers from a script: the Nth read of a value
gets the Nth scripted answer (the last one repeats), optionally after a delay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from restoredrill.checks.base import Status
from restoredrill.checks.expect import Expectation, Sampling, results, watch

SPEC = Sampling(name="script", window="2s", interval="50ms")


class Script:
    def __init__(self, *answers: Any, delay: float = 0.0) -> None:
        self.answers, self.delay, self.reads = list(answers), delay, 0

    async def __call__(self, indexes: list[int]) -> tuple[dict[int, Any], dict[int, str]]:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if self.reads > 1:
            await asyncio.sleep(self.delay)
        if isinstance(answer, Exception):
            return {}, {i: str(answer) for i in indexes}
        return {i: answer for i in indexes}, {}


def judge(item: dict, script: Script) -> Any:
    items = [Expectation(**item)]
    seen, problems = asyncio.run(watch(SPEC, items, [0], script))
    (r,) = results(SPEC, [("v", items[0])], seen, problems, time.perf_counter())
    return r


def test_plain_values_are_read_once() -> None:
    script = Script(50.0, 63.5)
    r = judge({"equals": 63.5}, script)
    assert r.status is Status.FAIL and r.observed == 50.0 and r.message == "50.0 != 63.5"
    assert script.reads == 1 and r.expected == {"equals": 63.5}


def test_a_written_value_is_reread_until_it_holds_and_no_longer() -> None:
    script = Script(50.0, 50.0, 63.5, 50.0)
    r = judge({"write": 63.5, "settle": "30s"}, script)
    assert r.status is Status.PASS and r.observed == 63.5
    assert r.message.startswith("settled after ")
    assert script.reads == 3  # it stopped at the first read that held
    assert r.expected == {"write": 63.5, "equals": 63.5, "settle": "30s"}


def test_a_value_that_never_holds_fails_with_the_last_read() -> None:
    r = judge({"equals": 63.5, "settle": "0.3s"}, Script(50.0, 51.0))
    assert r.status is Status.FAIL and r.observed == 51.0
    assert r.message == "did not settle within 0.3s: last read 51.0 != 63.5"


def test_a_read_returning_after_the_window_does_not_count() -> None:
    r = judge({"equals": 63.5, "settle": "0.2s"}, Script(50.0, 63.5, delay=0.5))
    assert r.status is Status.FAIL and r.observed == 50.0


def test_a_changing_value_must_meet_its_range_at_every_read() -> None:
    assert judge({"changes": True, "max": 10}, Script(1, 1, 2)).status is Status.PASS
    r = judge({"changes": True, "max": 10}, Script(1, 11, 2))
    assert r.status is Status.FAIL and r.message == "11 outside <= 10"
    r = judge({"changes": True, "settle": "0.3s"}, Script(1))
    assert r.status is Status.FAIL and r.message == "did not change within 0.3s (stayed 1)"


def test_a_changed_value_shows_both_reads_and_when() -> None:
    r = judge({"changes": True}, Script(1, 1, 2))
    assert r.observed == {"first": 1, "changed to": 2}
    assert r.message.startswith("changed after ")
    assert r.expected == {"changes": True, "settle": "2s"}


def test_a_value_unreadable_while_waiting_fails_with_the_reason() -> None:
    r = judge({"equals": 1, "settle": "5s"}, Script(0, RuntimeError("exception 4")))
    assert r.status is Status.FAIL and r.message == "exception 4"
