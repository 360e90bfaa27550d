"""The hashes of runs, rebuilt from their rows, batch by batch, for ``chain.verify``.

Each run's canonical text is written straight from its rows (flows/canonical_rows.py)
and hashed with its stored ``prev_hash``; ``chain.verify`` compares that with the stored
hash and checks the link itself. A long chain is rebuilt by helper processes
(``python -m restoredrill.flows.chain_worker``), one per core (at most 4;
``$RESTOREDRILL_VERIFY_WORKERS`` to set), each reading its own batches: reading and
writing the rows is the cost, the same for every run. A helper that fails leaves its
batches to this process. On PostgreSQL the database writes each result's steps and checks
whole (one string per result); on SQLite it writes all of a row but its duration.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, func, inspect, select

from . import canonical_rows as rows_text
from .evidence_tables import checks_t, results_t, runs_t

SEQS_PER_BATCH = 8
PARALLEL_ABOVE = 300_000
"""Check rows to rebuild above which helper processes share the work."""


class Content:
    """Run hashes for seqs from ``content_from`` on (earlier runs are not rebuilt)."""

    def __init__(self, url: str | None, content_from: int) -> None:
        self.url = url
        self.content_from = content_from
        self.workers: list[subprocess.Popen[str]] = []

    def batches(
        self, conn: Connection, start: int, last: int
    ) -> Iterator[tuple[list[Any], dict[int, str]]]:
        """(run rows, {seq: hash rebuilt from rows}) for seqs ``start``..``last``, in order."""
        fast = _fast_possible(conn)
        ranges = [
            (lo, min(lo + SEQS_PER_BATCH - 1, last))
            for lo in range(start, last + 1, SEQS_PER_BATCH)
        ]
        checked = [r for r in ranges if r[1] >= self.content_from] if fast else []
        shared = self._start(conn, checked, len(ranges)) if checked and self.url else {}
        for lo, hi in ranges:
            rows = runs_between(conn, lo, hi)
            if (lo, hi) in shared:
                found = self._result(shared[(lo, hi)], lo)
                if found is not None:
                    yield rows, found
                    continue
            wanted = [r for r in rows if r.seq >= self.content_from] if fast else []
            yield rows, hashes(conn, wanted)

    def _start(
        self, conn: Connection, checked: list[tuple[int, int]], total: int
    ) -> dict[tuple[int, int], subprocess.Popen[str]]:
        """Start helper processes for a long chain; {range: the helper that does it}."""
        wanted = int(os.environ.get("RESTOREDRILL_VERIFY_WORKERS") or min(os.cpu_count() or 1, 4))
        if wanted <= 1:
            return {}
        span = conn.execute(select(func.max(checks_t.c.id) - func.min(checks_t.c.id))).scalar()
        if (span or 0) * len(checked) / max(total, 1) < PARALLEL_ABOVE:
            return {}
        share: dict[tuple[int, int], subprocess.Popen[str]] = {}
        for i in range(wanted):
            mine = checked[i::wanted]
            if not mine:
                continue
            worker = subprocess.Popen(
                [sys.executable, "-m", "restoredrill.flows.chain_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"url": self.url, "ranges": mine}) + "\n")
            worker.stdin.close()  # the URL goes through a pipe, never the command line
            self.workers.append(worker)
            share.update(dict.fromkeys(mine, worker))
        return share

    @staticmethod
    def _result(worker: subprocess.Popen[str], lo: int) -> dict[int, str] | None:
        """The helper's next answer (it answers its ranges in order); None if it failed."""
        assert worker.stdout is not None
        line = worker.stdout.readline()
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        if answer.get("lo") != lo:
            return None
        return {int(seq): digest for seq, digest in answer["hashes"].items()}

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            if worker.stdout:
                worker.stdout.close()
        self.workers.clear()


def runs_between(conn: Connection, lo: int, hi: int) -> list[Any]:
    return list(
        conn.execute(select(runs_t).where(runs_t.c.seq.between(lo, hi)).order_by(runs_t.c.seq))
    )


def hashes(conn: Connection, run_rows: Sequence[Any]) -> dict[int, str]:
    """{seq: sha256(prev_hash + canonical text)} of the runs whose rows it can write."""
    return {
        seq: hashlib.sha256((prev + text).encode("utf-8")).hexdigest()
        for seq, prev, text in texts(conn, run_rows)
    }


def texts(conn: Connection, run_rows: Sequence[Any]) -> list[tuple[int, str, str]]:
    """(seq, prev_hash, canonical text) of the runs whose rows it can write."""
    if not run_rows:
        return []
    dialect = conn.dialect.name
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        ids = [r.id for r in run_rows]
        cursor.execute(
            f"SELECT {', '.join(rows_text.result_columns(dialect))} FROM system_results "
            f"WHERE run_pk IN ({', '.join([_PH[dialect]] * len(ids))}) ORDER BY run_pk, position",
            ids,
        )
        results = cursor.fetchall()
        broken: set[int] = set()
        steps, checks = _child_texts(cursor, dialect, results, broken)
    finally:
        cursor.close()
    by_run: dict[int, list[str] | None] = {r.id: [] for r in run_rows}
    for r in results:
        systems = by_run.get(r[1])
        if systems is None:
            continue
        if r[0] in broken:
            by_run[r[1]] = None
            continue
        try:
            systems.append(rows_text.result_text(r, steps.get(r[0], ""), checks.get(r[0], "")))
        except (rows_text.Unsupported, ValueError, TypeError):
            by_run[r[1]] = None
    out = []
    for r in run_rows:
        systems = by_run[r.id]
        if systems is None:
            continue
        try:
            out.append((r.seq, r.prev_hash, rows_text.run_text(_run_tuple(r), systems)))
        except (rows_text.Unsupported, ValueError, TypeError):
            continue
    return out


_PH = {"postgresql": "%s", "sqlite": "?"}


def _child_texts(
    cursor: Any, dialect: str, results: Sequence[Any], broken: set[int]
) -> tuple[dict[int, str], dict[int, str]]:
    """{result id: its steps' texts joined}, the same for checks. PostgreSQL writes them
    whole; where it cannot (or on SQLite) they are written row by row."""
    if not results:
        return {}, {}
    lo, hi = min(r[0] for r in results), max(r[0] for r in results)
    ph = _PH[dialect]
    out = []
    for joined_sql, sql, from_sql, table, cols, from_row in (
        (rows_text.pg_steps_sql(), rows_text.step_sql(dialect), rows_text.step_from_sql,
         "steps", rows_text.STEP_COLS, rows_text.step_text),
        (rows_text.pg_checks_sql(), rows_text.check_sql(dialect), rows_text.check_from_sql,
         "check_results", rows_text.CHECK_COLS, rows_text.check_text),
    ):  # fmt: skip
        if dialect == "postgresql":
            cursor.execute(rows_text.PG_FLOAT_DIGITS)
            cursor.execute(joined_sql, (lo, hi))
            joined = dict(cursor.fetchall())
            if None not in joined.values():
                out.append(joined)
                continue
        found = _children(cursor, sql, from_sql, table, cols, from_row, lo, hi, ph, broken)
        out.append({key: ",".join(texts) for key, texts in found.items()})
    return out[0], out[1]


def _run_tuple(row: Any) -> tuple[Any, ...]:
    """A run row's values in RUN_COLS order (times already aware datetimes)."""
    return tuple(row._mapping[c] for c in rows_text.RUN_COLS)


def _children(
    cursor: Any,
    sql: str,
    from_sql: Any,
    table: str,
    cols: Sequence[str],
    from_row: Any,
    lo: int,
    hi: int,
    ph: str,
    broken: set[int],
) -> dict[int, list[str]]:
    """{result id: its children's texts in order}: written by the database where it can,
    the other rows (``#id``) read whole and written here; ``broken`` gets the results
    whose rows neither can write (their runs take the exact path)."""
    cursor.execute(sql, (lo, hi))
    rows = cursor.fetchall()
    texts = list(map(from_sql, rows))
    found: defaultdict[int, list[str]] = defaultdict(list)
    for key, text in zip(map(_RESULT, rows), texts, strict=True):
        found[key].append(text)
    if min(texts, default="{")[0] == "#":  # a text starts with "{" or, unwritten, "#"
        _reread(cursor, table, cols, from_row, ph, found, broken)
    return found


_RESULT = itemgetter(0)  # a row's result_pk


def _reread(
    cursor: Any,
    table: str,
    cols: Sequence[str],
    from_row: Any,
    ph: str,
    found: dict[int, list[str]],
    broken: set[int],
) -> None:
    """Write the rows the database could not (``#id`` in ``found``) from their columns."""
    slots = {
        text[1:]: (result, i)
        for result, texts in found.items()
        for i, text in enumerate(texts)
        if text[0] == "#"
    }
    unknown = [result for key, (result, _) in slots.items() if not key.isdigit()]
    broken.update(unknown)
    ids = [int(key) for key in slots if key.isdigit()]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        cursor.execute(
            f"SELECT id, {', '.join(cols)} FROM {table} WHERE id IN ({', '.join([ph] * len(chunk))})",
            chunk,
        )
        for row in cursor.fetchall():
            result, index = slots[str(row[0])]
            try:
                found[result][index] = from_row(row[1:])
            except (rows_text.Unsupported, ValueError, TypeError):
                broken.add(result)


def _fast_possible(conn: Connection) -> bool:
    """Rows can be written only where every column of the current schema is there."""
    have = {c["name"] for c in inspect(conn).get_columns(checks_t.name)}
    have_results = {c["name"] for c in inspect(conn).get_columns(results_t.name)}
    return (
        "expected_json" in have and {"worker", "limits", "framework_s", "platform"} <= have_results
    )
