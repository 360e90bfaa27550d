"""Durations as people write them in an inventory: ``15m``, ``90s``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HINT = "use 15m, 90s, 1h30m"


def parse_duration(value: Any) -> timedelta:
    """Parse ``1h30m``-style text (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({HINT})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is not a duration ({HINT})")
        return timedelta(seconds=value)
    text = str(value).strip().replace(" ", "") if isinstance(value, str) else None
    if not text or _PART.sub("", text) != "" or not _PART.search(text):
        raise ValueError(f"{value!r} is not a duration ({HINT})".replace("'", '"'))
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
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
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$",
            "description": "a duration such as 90s, 15m, 1h30m",
        }
    ),
]
"""A pydantic field type for durations written as ``15m``, ``90s``, ``1h30m``."""
