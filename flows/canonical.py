"""The canonical form of a run record: what the evidence keeps, and the exact text it hashes.

A check's expected and observed values are JSON data (:func:`json_value`), stored as
JSON text written here (:func:`dump_value`), never through a driver's JSON type: SQLite's
JSON columns have numeric affinity and turned 141312.0 into 141312, so honest records no
longer matched their hash. Records written that way (restoredrill 0.1) still verify: each
whole number read from such a column is tried as an int and as a float
(:func:`legacy_mismatch`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import product
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from restoredrill.checks.base import CheckResult

from .results import RunRecord

_LEGACY_TRIES = 1 << 16
"""Readings of a 0.1 record's whole numbers tried before giving up (about a second)."""


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC; naive times are taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_all(model: BaseModel) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, datetime):
            setattr(model, name, utc(value))
        elif isinstance(value, BaseModel):
            _utc_all(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    _utc_all(item)


SURROGATE = re.compile("[\ud800-\udfff]")


def json_value(value: Any) -> Any:
    """``value`` as the evidence keeps a check's expected or observed value: JSON data.

    Floats stay floats (141312.0 is not 141312, -0.0 keeps its sign), ints keep every
    digit, bools stay bools. NaN and ±infinity become the strings "NaN", "Infinity" and
    "-Infinity". Tuples and sets become lists; map keys become the strings JSON writes;
    two surrogates that form a pair become the character they encode (as every JSON
    reader sees them); anything else becomes what pydantic makes of it in JSON.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return _paired(str.__str__(value))  # a str enum's value, not its name
    if isinstance(value, Mapping):
        return {_json_key(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    if isinstance(value, BaseModel):
        return json_value(value.model_dump())
    try:
        return json_value(to_jsonable_python(value))
    except PydanticSerializationError:
        return str(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return _paired(key)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)  # None -> null, True -> true, 1.5 -> 1.5, nan -> NaN
    return str(key)


def _paired(text: str) -> str:
    """Join surrogate pairs into the characters they encode; lone surrogates stay."""
    if SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def _pair_all(data: Any) -> Any:
    """Every string in ``data`` with its surrogate pairs joined (as a JSON round trip does)."""
    if isinstance(data, str):
        return _paired(data)
    if isinstance(data, dict):
        return {_pair_all(k): _pair_all(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_pair_all(v) for v in data]
    return data


def dump_value(value: Any) -> str:
    """The stored text of a check value: ASCII JSON of :func:`json_value` (exact round trip)."""
    return json.dumps(
        json_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def normalized(run: RunRecord) -> RunRecord:
    """The record as the store keeps it (what ``load`` returns): check values as
    :func:`json_value`, times in UTC, surrogate pairs joined in every string."""
    data = _pair_all(run.model_dump())
    for system in data["systems"]:
        for key in ("limits", "platform"):
            if system.get(key) is not None:
                system[key] = json_value(system[key])
        for check in system["checks"]:
            check["expected"] = json_value(check["expected"])
            check["observed"] = json_value(check["observed"])
    copy = RunRecord.model_validate(data)
    _utc_all(copy)
    return copy


_JSON_KEYS = frozenset({"checks", "limits", "platform", "labels"})
"""Record parts stored as JSON text, which keeps a -0.0 exactly."""


def _unsigned_zeros(value: Any) -> Any:
    if isinstance(value, float) and value == 0.0:
        return 0.0
    if isinstance(value, dict):
        return {k: v if k in _JSON_KEYS else _unsigned_zeros(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsigned_zeros(v) for v in value]
    return value


def for_storage(run: RunRecord) -> RunRecord:
    """:func:`normalized`, with a -0.0 in a number column written as 0.0: SQLite keeps a
    REAL -0.0 as 0, so a record hashed with -0.0 would then read back as altered. Only new
    records are written this way; a stored record is hashed as it was written."""
    copy = RunRecord.model_validate(_unsigned_zeros(normalized(run).model_dump()))
    _utc_all(copy)
    return copy


_LATER_FIELDS = ("worker", "limits", "platform", "framework_s")
"""SystemResult fields added after the first release: left out of the hash while unset."""


def canonical_json(run: RunRecord) -> str:
    """Sorted keys, no spaces, UTF-8: the exact text that is hashed.

    Fields added after the first release are left out while unset, so the hashes of
    records written before them still verify. A lone surrogate (not UTF-8) is written
    as its JSON escape.
    """
    data = normalized(run).model_dump(mode="json")
    for system in data["systems"]:
        for key in _LATER_FIELDS:
            if system.get(key) is None:
                system.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def chain_hash(prev_hash: str, run: RunRecord) -> str:
    """``sha256(prev_hash + canonical JSON of the run)`` as hex."""
    return hashlib.sha256((prev_hash + canonical_json(run)).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- records of 0.1


class _UnsureInt(int):
    """A number a 0.1 SQLite store returned as an integer: recorded as an int, or as a
    whole-number float (141312.0, -0.0) that the column's numeric affinity converted."""

    def candidates(self) -> list[Any]:
        return [int(self), float(self)] + ([-0.0] if self == 0 else [])


class _UnsureFloat(float):
    """A number a 0.1 SQLite store returned as a REAL: a float, or an int beyond 64 bits."""

    def candidates(self) -> list[Any]:
        return [float(self), int(self)]


def unsure(value: Any) -> Any:
    """Mark a number read back from a 0.1 SQLite JSON column whose type it may have lost."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _UnsureInt(value)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
        return _UnsureFloat(value)
    return value


def _unsure_slots(record: RunRecord) -> list[tuple[CheckResult, str, list[Any]]]:
    return [
        (check, field, value.candidates())
        for system in record.systems
        for check in system.checks
        for field in ("expected", "observed")
        if isinstance(value := getattr(check, field), _UnsureInt | _UnsureFloat)
    ]


def legacy_mismatch(prev: str, record: RunRecord, want: str) -> str | None:
    """Why ``record`` (read with :func:`unsure` numbers) does not give the hash ``want``;
    None if some reading of its unsure numbers, each an int or a float, does."""
    slots = _unsure_slots(record)
    tries = math.prod(len(candidates) for *_, candidates in slots)
    if slots and tries > _LEGACY_TRIES:
        return (
            "cannot be verified: it was recorded by restoredrill 0.1, whose SQLite store kept "
            f"{len(slots)} whole-number check values without their type (int or float), and "
            f"{tries} readings are too many to try"
        )
    if slots and _matches(prev, slots, record, want):
        return None
    return "was altered: its record no longer matches its hash"


def _matches(
    prev: str, slots: list[tuple[CheckResult, str, list[Any]]], record: RunRecord, want: str
) -> bool:
    """Whether some reading of the unsure numbers (each an int or a float) gives ``want``.

    The canonical text is made once with a placeholder per number; each reading then
    only joins the pieces and hashes them.
    """
    token = secrets.token_hex(8)
    saved = [getattr(check, field) for check, field, _ in slots]
    try:
        for i, (check, field, _) in enumerate(slots):
            setattr(check, field, f"{token}-{i}")
        pieces = re.split(f'"{token}-(\\d+)"', canonical_json(record))
    finally:
        for (check, field, _), value in zip(slots, saved, strict=True):
            setattr(check, field, value)
    texts, order = pieces[0::2], [int(i) for i in pieces[1::2]]
    literals = [[json.dumps(c) for c in slots[i][2]] for i in order]
    for reading in product(*literals):
        body = texts[0] + "".join(lit + text for lit, text in zip(reading, texts[1:], strict=True))
        if hashlib.sha256((prev + body).encode("utf-8")).hexdigest() == want:
            return True
    return False
