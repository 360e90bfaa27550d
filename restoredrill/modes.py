"""File modes as people write them in an inventory: ``"0640"``, a bare ``0640`` (which
the config loader reads as the integer 640) or ``0o640`` (an :class:`OctalInt`)."""

from __future__ import annotations

import re
from typing import Any

from restoredrill.configfile import OctalInt
from restoredrill.errors import InputError

__all__ = ["parse_mode"]


def parse_mode(value: Any) -> str | None:
    """The mode as four octal digits (``"0640"``); None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = format(value, "o") if isinstance(value, OctalInt) else str(value)
    text = str(value).strip().removeprefix("0o")
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise InputError(f'{value!r} is not a file mode (use e.g. "0640")')
    return text.zfill(4)
