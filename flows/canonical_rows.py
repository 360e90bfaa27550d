"""The canonical text of a run, written straight from its database rows.

:func:`restoredrill.flows.canonical.canonical_json` rebuilds a run through pydantic:
exact, but about 0.4 ms per check, so a year of nightly runs of 500 systems (2 M
checks) would take many minutes to verify. This module writes the same text from the
rows themselves (a few µs per row). It handles the common shapes only and answers
None for anything else (text stored escaped, surrogate escapes, a value of an
unexpected type, a row written by 0.1); the caller then takes the exact path.
A text that does not hash to the stored hash is never taken as proof of tampering:
the caller retries the exact path first (see ``chain.verify``).

``tests/test_canonical_rows.py`` checks both give the same text for generated runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from .canonical import SURROGATE

RUN_COLS = (
    "id", "seq", "run_id", "site", "started_at", "finished_at", "trigger", "verdict",
    "site_recovery_time_s", "site_rto_s", "prev_hash", "hash",
)  # fmt: skip
RESULT_COLS = (
    "id", "run_pk", "position", "system", "verdict", "reason", "labels", "started_at",
    "finished_at", "recovery_time_s", "rto_s", "rpo_s", "backup_age_s", "near_miss", "worker",
    "limits", "backup_source", "backup_id", "backup_location", "backup_size_bytes",
    "backup_sha256", "backup_created_at", "framework_s", "platform",
)  # fmt: skip
STEP_COLS = ("result_pk", "position", "name", "started_at", "duration_s", "ok", "message")
CHECK_COLS = (
    "result_pk", "position", "name", "kind", "status", "expected_json", "observed_json",
    "duration_s", "message",
)  # fmt: skip

_ESCAPED = "\ufdd0"  # evidence.SafeText's mark of escaped text
_PG_IN_RANGE = "{0} >= '1000-01-01 00:00+00' AND {0} < '10000-01-01 00:00+00'"
"""Years Python writes with four digits (AD: ``to_char`` writes 44 BC as ``0044``)."""
_PG_TEXT = {
    "labels": "labels::text",  # as stored (json), not parsed: the few texts are remembered
    **{
        c: f"CASE WHEN {c} IS NULL THEN NULL WHEN {_PG_IN_RANGE.format(c)} THEN to_char({c} AT "
        "TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' ELSE 'out of range' END"
        for c in ("started_at", "finished_at", "backup_created_at")
    },
}
"""PostgreSQL columns read as text in SQLite's form: no datetime or dict made per row."""


def result_columns(dialect: str) -> list[str]:
    """The SELECT list of ``RESULT_COLS`` (times and labels as text on PostgreSQL)."""
    if dialect != "postgresql":
        return list(RESULT_COLS)
    return [_PG_TEXT.get(c, c) for c in RESULT_COLS]


class Unsupported(Exception):  # control flow inside this module, never raised out of it
    """A value this module does not write; the exact path must."""


_SEEN: dict[str, str] = {}
"""Encoded strings: names, kinds, statuses and messages repeat run after run."""


def _text(value: Any) -> str:
    if type(value) is not str:
        raise Unsupported
    found = _SEEN.get(value)
    if found is not None:
        return found
    text = _fresh_text(value)
    if len(value) < 200:
        if len(_SEEN) > 100_000:
            _SEEN.clear()
        _SEEN[value] = text
    return text


def _fresh_text(value: Any) -> str:
    """A string seen once (a backup's id, location, digest): encoded, not remembered."""
    if type(value) is not str or value.startswith(_ESCAPED):
        raise Unsupported
    return encode_basestring(value)


def _float(value: Any) -> str:
    if type(value) is not float:
        raise Unsupported
    if math.isfinite(value):
        return float.__repr__(value)
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _opt_float(value: Any) -> str:
    return "null" if value is None else _float(value)


def _bool(value: Any) -> str:
    if value is True or value == 1 and type(value) is int:
        return "true"
    if value is False or value == 0 and type(value) is int:
        return "false"
    raise Unsupported


def _time(value: Any) -> str:
    """A stored time as pydantic writes it: ``2025-03-01T02:00:00[.123456]Z``."""
    if type(value) is str:
        if len(value) != 32 or not value.endswith("+00:00") or value[19] != "." or value[4] != "-":
            raise Unsupported
        if value[20:26] == "000000":
            return f'"{value[:19]}Z"'
        return f'"{value[:26]}Z"'
    if isinstance(value, datetime) and value.tzinfo is not None:
        if value.utcoffset():
            value = value.astimezone(UTC)
        if not 1000 <= value.year <= 9999:
            raise Unsupported
        text = value.isoformat()  # ...SS[.ffffff]+00:00: the fraction only when not zero
        return f'"{text[:-6]}Z"'
    raise Unsupported


def _opt_time(value: Any) -> str:
    return "null" if value is None else _time(value)


_LABELS: dict[str, str] = {}


def _labels(value: Any) -> str:
    """The labels column, canonical (the same few texts recur: remembered)."""
    if type(value) is str:
        found = _LABELS.get(value)
        if found is None:
            found = _json(value, labels=True)
            if len(_LABELS) > 10_000:
                _LABELS.clear()
            _LABELS[value] = found
        return found
    return _json(value, labels=True)


def _json(value: Any, *, labels: bool = False) -> str:
    """A JSON column's value (text on SQLite, parsed on PostgreSQL), canonical."""
    if type(value) is str:
        value = json.loads(value)
    if labels and (type(value) is not dict or any(type(v) is not str for v in value.values())):
        raise Unsupported
    if type(value) is not dict:
        raise Unsupported
    return _dump(value)


def _dump(value: Any) -> str:
    """As canonical_json writes a value: lone surrogates (JSON's escapes of pairs are
    joined by json.loads) as their escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if SURROGATE.search(text) is None:
        return text
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _value(text: Any) -> str:
    """A check value's stored JSON text, as canonical_json embeds it."""
    if type(text) is not str:
        raise Unsupported  # NULL: a 0.1 row
    if "\\u" not in text:
        return text  # ASCII, sorted, compact: already what the canonical text holds
    return _dump(json.loads(text))


def step_text(row: Sequence[Any]) -> str:
    _, _, name, started_at, duration_s, ok, message = row
    return (
        f'{{"duration_s":{_float(duration_s)},"message":{_text(message)},"name":{_text(name)},'
        f'"ok":{_bool(ok)},"started_at":{_time(started_at)}}}'
    )


def check_text(row: Sequence[Any]) -> str:
    _, _, name, kind, status, expected, observed, duration_s, message = row
    return (
        f'{{"duration_s":{_float(duration_s)},"expected":{_value(expected)},"kind":{_text(kind)},'
        f'"message":{_text(message)},"name":{_text(name)},"observed":{_value(observed)},'
        f'"status":{_text(status)}}}'
    )


def _backup(r: Sequence[Any]) -> str:
    source, backup_id, location, size, sha256, created_at = r[16:22]
    if source is None:
        return "null"
    if size is not None and type(size) is not int:
        raise Unsupported
    return (
        f'{{"backup_id":{_fresh_text(backup_id)},"created_at":{_opt_time(created_at)},'
        f'"location":{_fresh_text(location)},'
        f'"sha256":{"null" if sha256 is None else _fresh_text(sha256)},'
        f'"size_bytes":{"null" if size is None else str(size)},"source":{_text(source)}}}'
    )


def result_text(r: Sequence[Any], steps: str, checks: str) -> str:
    """One system result (a ``RESULT_COLS`` row) around its steps' and checks' texts
    (each list's items joined by commas)."""
    limits = "" if r[15] is None else f'"limits":{_json(r[15])},'
    platform = "" if r[23] is None else f'"platform":{_json(r[23])},'
    worker = "" if r[14] is None else f',"worker":{_text(r[14])}'
    framework = "" if r[22] is None else f'"framework_s":{_float(r[22])},'
    return (
        f'{{"backup":{_backup(r)},"backup_age_s":{_opt_float(r[12])},'
        f'"checks":[{checks}],'
        f'"finished_at":{_opt_time(r[8])},{framework}"labels":{_labels(r[6])},{limits}'
        f'"near_miss":{_bool(r[13])},{platform}"reason":{_text(r[5])},'
        f'"recovery_time_s":{_opt_float(r[9])},"rpo_s":{_opt_float(r[11])},'
        f'"rto_s":{_opt_float(r[10])},"started_at":{_opt_time(r[7])},'
        f'"steps":[{steps}],"system":{_text(r[3])},'
        f'"verdict":{_text(r[4])}{worker}}}'
    )


def run_text(run: Sequence[Any], systems: Sequence[str]) -> str:
    """A run (a ``RUN_COLS`` row) around its system results' texts, in order."""
    return (
        f'{{"finished_at":{_opt_time(run[5])},"run_id":{_text(run[2])},"site":{_text(run[3])},'
        f'"site_recovery_time_s":{_opt_float(run[8])},"site_rto_s":{_opt_float(run[9])},'
        f'"started_at":{_time(run[4])},"systems":[{",".join(systems)}],'
        f'"trigger":{_text(run[6])},"verdict":{_text(run[7])}}}'
    )


# --------------------------------------------------------------------------- in SQL
#
# Most of a check's or step's text is written by the database itself (JSON string
# quoting is the same in SQLite's json_quote, PostgreSQL's to_json and Python's json):
# only the float (and a step's time) is written here. A row the SQL cannot write (escaped
# text, ``\\u`` escapes in a value, a value of another type, a 0.1 row) comes as ``#id``
# and is read whole and written by the functions above.

_MARK = {"sqlite": "char(64976)", "postgresql": "chr(64976)"}


def _quote(column: str, dialect: str) -> str:
    return f"json_quote({column})" if dialect == "sqlite" else f"to_json({column})::text"


def _no_mark(column: str, dialect: str) -> str:
    return f"substr({column}, 1, 1) <> {_MARK[dialect]}"


def _members(dialect: str, *members: tuple[str, str]) -> str:
    """``,"name":value...}`` from SQL values that are never NULL (the caller's condition):
    one ``printf`` on SQLite (a third faster than ``||`` there), ``||`` elsewhere."""
    if dialect == "sqlite":
        template = "".join(f',"{name}":%s' for name, _ in members) + "}"
        return f"printf('{template}', {', '.join(value for _, value in members)})"
    return " || ".join(f"',\"{name}\":' || {value}" for name, value in members) + " || '}'"


def check_sql(dialect: str) -> str:
    """(result_pk, duration_s, the rest of the text, or ``#id``) per check, in order."""
    q = lambda c: _quote(c, dialect)  # noqa: E731
    has = "instr" if dialect == "sqlite" else "strpos"
    types = (
        "typeof(expected_json) = 'text' AND typeof(observed_json) = 'text' AND typeof(name) = "
        "'text' AND typeof(kind) = 'text' AND typeof(status) = 'text' AND typeof(message) = 'text' AND "
        # ASCII and no NUL (printf's %s would end there; length() stops at a NUL)
        "length(expected_json) = length(CAST(expected_json AS BLOB)) AND "
        "length(observed_json) = length(CAST(observed_json AS BLOB)) AND "
        if dialect == "sqlite"
        else ""
    )
    ph = "?" if dialect == "sqlite" else "%s"
    return (
        "SELECT result_pk, duration_s, COALESCE(CASE WHEN "
        f"{types}{has}(expected_json, '\\u') = 0 AND {has}(observed_json, '\\u') = 0 AND "
        f"{_no_mark('name', dialect)} AND {_no_mark('message', dialect)} THEN "
        f"{_members(dialect, ('expected', 'expected_json'), ('kind', q('kind')), ('message', q('message')), ('name', q('name')), ('observed', 'observed_json'), ('status', q('status')))} END, "
        f"'#' || id) FROM check_results WHERE result_pk BETWEEN {ph} AND {ph} "
        "ORDER BY result_pk, position"
    )


def step_sql(dialect: str) -> str:
    """(result_pk, duration_s, started_at, the middle of the text, or ``#id``) per step."""
    q = lambda c: _quote(c, dialect)  # noqa: E731
    if dialect == "sqlite":
        types = "typeof(name) = 'text' AND typeof(message) = 'text' AND ok IN (0, 1) AND "
        ok = "CASE ok WHEN 1 THEN 'true' ELSE 'false' END"
        ph = "?"
    else:
        types, ok, ph = "", "CASE WHEN ok THEN 'true' ELSE 'false' END", "%s"
    return (
        "SELECT result_pk, duration_s, started_at, COALESCE(CASE WHEN "
        f"{types}{_no_mark('name', dialect)} AND {_no_mark('message', dialect)} THEN "
        f"',\"message\":' || {q('message')} || ',\"name\":' || {q('name')} || ',\"ok\":' || {ok} "
        f"END, '#' || id) FROM steps WHERE result_pk BETWEEN {ph} AND {ph} "
        "ORDER BY result_pk, position"
    )


_INF = (math.inf, -math.inf)


def check_from_sql(row: Sequence[Any]) -> str:
    """A check's text from (result_pk, duration_s, rest); ``#id`` if the SQL could not."""
    rest, d = row[2], row[1]
    if rest[0] == "#" or type(d) is not float or d != d or d in _INF:
        return rest if rest[0] == "#" else "#?"
    return '{"duration_s":' + float.__repr__(d) + rest


def step_from_sql(row: Sequence[Any]) -> str:
    """A step's text from (result_pk, duration_s, started_at, middle); ``#id`` if not."""
    middle, d = row[3], row[1]
    if middle[0] == "#" or type(d) is not float or d != d or d in _INF:
        return middle if middle[0] == "#" else "#?"
    try:
        return (
            '{"duration_s":' + float.__repr__(d) + middle + ',"started_at":' + _time(row[2]) + "}"
        )
    except Unsupported:
        return "#?"


# PostgreSQL writes the whole text of a result's steps and checks, joined (string_agg):
# its float8 output is the shortest text that reads back exactly (extra_float_digits 1,
# set for the query), the digits Python's repr writes; only plain decimals are taken
# ("100" gets Python's ".0"), an exponent, NaN or Infinity leaves the result to Python.
# A result with any row the SQL cannot write gets NULL: its rows are then written one by
# one as above.

PG_FLOAT_DIGITS = "SET LOCAL extra_float_digits = 1"


_PG_FLOAT = (
    "CASE WHEN strpos(d, 'e') = 0 AND strpos(d, 'N') = 0 AND strpos(d, 'I') = 0 AND "
    "d::float8 = duration_s THEN CASE WHEN strpos(d, '.') > 0 THEN d ELSE d || '.0' END END"
)
"""The text ``d`` of a float8 as Python writes it; NULL for an exponent, NaN, Infinity,
or a text that does not read back as the very value (then two values could share it)."""


def _pg_time(column: str) -> str:
    """A timestamptz as pydantic writes it, without the quotes and ``Z``; NULL if not."""
    return (
        f"CASE WHEN {_PG_IN_RANGE.format(column)} THEN replace(to_char({column} AT TIME ZONE "
        "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') END"
    )


def _pg_joined(table: str, columns: tuple[str, ...], ok: str, parts: list[str]) -> str:
    """Each row's text (``parts`` concatenated; ``f``: its duration's text) where
    ``columns`` hold no NULL and ``ok``, joined per result in order."""
    return (
        "SELECT result_pk, CASE WHEN bool_and(ok) THEN string_agg(t, ',' ORDER BY position) END "
        f"FROM (SELECT result_pk, position, COALESCE(num_nulls(f, {', '.join(columns)}) = 0 AND "
        f"{ok}, false) AS ok, concat({', '.join(parts)}) AS t FROM {table}, LATERAL "
        f"(SELECT {_PG_FLOAT} AS f FROM (SELECT duration_s::text AS d) AS d) AS f "
        "WHERE result_pk BETWEEN %s AND %s) AS r GROUP BY result_pk"
    )


def pg_checks_sql() -> str:
    """(result_pk, its checks' texts joined, or NULL) per result with checks."""
    return _pg_joined(
        "check_results",
        ("expected_json", "observed_json", "name", "kind", "status", "message"),
        "strpos(expected_json, '\\u') = 0 AND strpos(observed_json, '\\u') = 0 AND "
        f"{_no_mark('name', 'postgresql')} AND {_no_mark('message', 'postgresql')}",
        ["'{\"duration_s\":'", "f", "',\"expected\":'", "expected_json", "',\"kind\":'",
         "to_json(kind)", "',\"message\":'", "to_json(message)", "',\"name\":'", "to_json(name)",
         "',\"observed\":'", "observed_json", "',\"status\":'", "to_json(status)", "'}'"],
    )  # fmt: skip


def pg_steps_sql() -> str:
    """(result_pk, its steps' texts joined, or NULL) per result with steps."""
    return _pg_joined(
        "steps",
        ("name", "message", "ok", _pg_time("started_at")),
        f"{_no_mark('name', 'postgresql')} AND {_no_mark('message', 'postgresql')}",
        ["'{\"duration_s\":'", "f", "',\"message\":'", "to_json(message)", "',\"name\":'",
         "to_json(name)", "',\"ok\":'", "CASE WHEN ok THEN 'true' ELSE 'false' END",
         "',\"started_at\":\"'", _pg_time("started_at"), "'Z\"}'"],
    )  # fmt: skip
