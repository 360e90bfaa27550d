"""Durations as people write them in an inventory: ``15m``, ``90s``, ``1h30m``, ``2d``.

Parsed by a tokeniser in one pass over at most ``MAX_TEXT`` characters (no backtracking
regular expression over unbounded input), and bounded by ``MAX_DURATION``, so no text a
hostile or mistyped file holds can make parsing slow or overflow ``timedelta``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from restoredrill.configfile import shown
from restoredrill.errors import InputError

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HINT = "use 15m, 90s, 1h30m"
MAX_TEXT = 64
"""The longest duration text read: ``1w2d3h4m5s678ms`` needs 15."""
MAX_DURATION = timedelta(days=36500)
"""100 years: anything longer is a typo, not a recovery objective."""
_MAX_SECONDS = MAX_DURATION.total_seconds()


def parse_duration(value: Any) -> timedelta:
    """Parse ``1h30m``-style text (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return _bounded(value.total_seconds(), value)
    if isinstance(value, bool):
        raise InputError(f"{shown(value)} is not a duration ({HINT})")
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value) or value < 0:
            raise InputError(f"{shown(value)} is not a duration ({HINT})")
        return _bounded(value, value)
    seconds = _tokenise(value) if isinstance(value, str) else None
    if seconds is None:
        raise InputError(f"{shown(value)} is not a duration ({HINT})")
    return _bounded(seconds, value)


def _tokenise(value: str) -> float | None:
    """Seconds in ``1h30m``-style text, or None if it is not one (linear in its length)."""
    text = value.strip().replace(" ", "")
    if not text or len(text) > MAX_TEXT:
        return None
    seconds, i, end = 0.0, 0, len(text)
    while i < end:
        start = i
        while i < end and text[i].isascii() and text[i].isdigit():
            i += 1
        if i == start:
            return None
        if i < end and text[i] == ".":
            i += 1
            fraction = i
            while i < end and text[i].isascii() and text[i].isdigit():
                i += 1
            if i == fraction:
                return None
        number = text[start:i]
        unit = "ms" if text.startswith("ms", i) else text[i : i + 1]
        if unit not in _UNIT_SECONDS:
            return None
        i += len(unit)
        seconds += float(number) * _UNIT_SECONDS[unit]
    return seconds


def _bounded(seconds: float, value: Any) -> timedelta:
    if seconds > _MAX_SECONDS:
        raise InputError(
            f"{shown(value)} is too long a duration (at most {MAX_DURATION.days}d, 100 years)"
        )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | float | None) -> str:
    """Short human form: ``4m12s``, ``1h02m``, ``850ms``."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if hours else f"{days}d"


def _serialize(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds == int(seconds):
        out, rest = "", int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if rest >= size:
                out += f"{rest // size}{unit}"
                rest %= size
        return out
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(_serialize, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_TEXT,
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$",
            "description": "a duration such as 90s, 15m, 1h30m (at most 100 years)",
        }
    ),
]
"""A pydantic field type for durations written as ``15m``, ``90s``, ``1h30m``."""
