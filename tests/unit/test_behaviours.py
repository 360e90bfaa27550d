"""Tag behaviours as pure functions of elapsed time (no server, no clock)."""

from __future__ import annotations

import random

import pytest

from restoredrill.twins.behaviours import Behaviour, replay_period
from restoredrill.twins.registers import RegisterMapError, Tag, validate_register_map


def tag(**fields) -> Tag:
    return Tag.model_validate({"name": "t", "table": "holding", "address": 0, **fields})


def test_replay_plays_the_series_in_time_and_loops():
    b = Behaviour(tag(behaviour="replay", series=[[0, 10], [1.5, 11], [2.5, 9]]), random.Random(0))
    assert b.period == 3.75  # the last time plus the median step (1.5 and 1.0: 1.25)
    assert [b.value(t) for t in (0, 1.49, 1.5, 2.4, 2.5, 3.7)] == [10, 10, 11, 11, 9, 9]
    assert [b.value(t + b.period) for t in (0, 1.5, 2.5)] == [10, 11, 9]
    assert b.start == 10 and b.dynamic


def test_replay_period_and_single_samples():
    assert replay_period([0.0]) == 1.0
    assert replay_period([0.0, 1.0, 2.0, 3.0]) == 4.0
    b = Behaviour(tag(behaviour="replay", series=[[0, 5]], period=2), random.Random(0))
    assert b.value(7.3) == 5


def test_replay_from_a_csv_cell():
    regmap = validate_register_map(
        {
            "tags": [
                {
                    "name": "t",
                    "table": "holding",
                    "address": 0,
                    "behaviour": "replay",
                    "series": "0:1 0.5:2 1:3",
                }
            ]
        }
    )
    assert regmap.tags[0].series == [(0.0, 1), (0.5, 2), (1.0, 3)]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"behaviour": "replay"}, "series: behaviour replay needs series"),
        ({"series": [[0, 1]]}, "only behaviour replay plays a series"),
        ({"behaviour": "replay", "series": [[1, 1], [0.5, 2]]}, "times must rise"),
        ({"behaviour": "replay", "series": [[0, 70000]]}, "out of range for uint16"),
        ({"behaviour": "replay", "series": [[0, 1], [2, 1]], "period": 2}, "ends before"),
        ({"behaviour": "replay", "series": "0-1"}, "is not seconds:value"),
    ],
)
def test_bad_series(fields, words):
    with pytest.raises(RegisterMapError, match=words):
        validate_register_map({"tags": [{"name": "t", "table": "holding", "address": 0, **fields}]})
