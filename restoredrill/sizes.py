"""Sizes as people write them in an inventory: ``512m``, ``1g``, ``10GiB``, ``4096``.

Text is read only up to 32 characters by an anchored pattern without nested repeats, and
every size is bounded by ``MAX_BYTES``, so no input is slow to parse or overflows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from restoredrill.configfile import shown
from restoredrill.errors import InputError

_SIZE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?)\s?([kmgtp]?)(i?b?)", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
HINT = "use 512m, 1g, 10GiB"
MAX_BYTES = 1 << 60
"""An exabyte: anything larger is a typo, not a limit."""


def parse_size(value: Any) -> int:
    """Bytes from ``512m``-style text or a number; k/m/g are binary (as Docker reads them)."""
    if isinstance(value, bool):
        raise InputError(f"{value!r} is not a size ({HINT})")
    if isinstance(value, int | float):
        number = value  # an int is compared exactly: float() of a huge one overflows
    else:
        text = str(value).strip()
        m = _SIZE.fullmatch(text) if len(text) <= 32 else None
        if not m:
            raise InputError(f"{shown(value)} is not a size ({HINT})")
        number = float(m.group(1)) * 1024 ** _POWER[m.group(2).lower()]
    if not 0 < number <= MAX_BYTES:  # also false for NaN
        raise InputError(f"{shown(value)} is not a size between 1 byte and 1 EiB ({HINT})")
    return int(number)


def format_size(value: float | None) -> str:
    """Short human form: ``512MiB``, ``1.5GiB``, ``900B``."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" or size == int(size) else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}PiB"


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": r"^\d+(\.\d+)? ?[kKmMgGtTpP]?[iI]?[bB]?$"},
            ],
            "description": "a size such as 512m, 1g or 10GiB (k, m, g are powers of 1024)",
        }
    ),
]
"""A pydantic field type for sizes written as ``512m``, ``1g``, ``10GiB``."""
