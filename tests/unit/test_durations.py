"""Durations: the forms people write, and clear errors for anything else, however long."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from restoredrill.durations import (
    Duration,
    _serialize,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("15m", 900),
        ("90s", 90),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("1.5h", 5400),
        (" 5m ", 300),
        ("0s", 0),
        (90, 90),
        (1.5, 1.5),
        (timedelta(minutes=2), 120),
        ("36500d", 36500 * 86400),
    ],
)
def test_forms(value: object, seconds: float) -> None:
    assert parse_duration(value).total_seconds() == seconds


@pytest.mark.parametrize(
    "value",
    [
        "15 mins",
        "",
        "m",
        "15",
        "1x",
        "1.h",
        ".5h",
        "1h-",
        "h1",
        "1hh",
        "١٥m",
        True,
        -1,
        float("nan"),
        None,
        [1],
    ],
)
def test_not_durations(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(use 15m, 90s, 1h30m\)$"):
        parse_duration(value)


def test_message_quotes_the_text() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("15 mins")
    assert str(info.value) == '"15 mins" is not a duration (use 15m, 90s, 1h30m)'


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("99999999999999999999999999h", '"99999999999999999999999999h"'),
        ("36501d", '"36501d"'),
        (10**400, "a number of about 401 digits"),
        (1e300, "1e+300"),
        (float("inf"), "inf"),
        (timedelta.max, "datetime.timedelta(days=999999… (70 characters)"),
    ],
)
def test_too_long_durations_are_an_error_not_an_overflow(value: object, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f"{shown} is too long a duration (at most 36500d, 100 years)"


@pytest.mark.parametrize(
    "text",
    [
        "9" * 40_000 + "h",  # the quadratic case of the old pattern (70 s)
        "1h" * 20_000,
        "1" * 40_000,
        "1." + "1" * 40_000,
        "1h" + " " * 40_000 + "x",
    ],
)
def test_pathological_text_is_refused_and_cut_short(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert message.endswith('characters)" is not a duration (use 15m, 90s, 1h30m)')
    assert len(message) < 120


def test_pydantic_field_reports_validation_errors() -> None:
    class M(BaseModel):
        rto: Duration

    assert M(rto="1h30m").rto == timedelta(minutes=90)
    for bad in ("99999999999999999999999999h", 10**30, "9" * 40_000):
        with pytest.raises(ValidationError):
            M(rto=bad)
    assert M(rto="1h30m").model_dump(mode="json") == {"rto": "1h30m"}


def test_formatting_is_unchanged() -> None:
    assert format_duration(252) == "4m12s"
    assert format_duration(0.85) == "850ms"
    assert format_duration(timedelta(hours=1, minutes=2)) == "1h02m"
    assert _serialize(timedelta(days=1, seconds=90)) == "1d1m30s"


def test_a_probe_without_a_timeout_waits_a_duration() -> None:
    """A default is a duration too (the readiness wait calls ``timeout.total_seconds()``;
    a default left as the text "60s" made a probe without ``timeout:`` fail)."""
    from restoredrill.twins.spec import CommandProbe, HttpProbe, LogProbe, TcpProbe

    probes = [TcpProbe(port=80), HttpProbe(port=80), LogProbe(contains="up"), CommandProbe(command="true")]
    assert [p.timeout for p in probes] == [timedelta(seconds=60)] * 4
    assert TcpProbe(port=80).model_dump(mode="json")["timeout"] == "1m"
