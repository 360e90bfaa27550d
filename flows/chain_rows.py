"""The hashes of runs, rebuilt from their rows, batch by batch, for ``chain.verify``.

Each run's canonical text is written straight from its rows (flows/canonical_rows.py)
and hashed with its stored ``prev_hash``; ``chain.verify`` compares that with the stored
hash and checks the link itself. A long chain is rebuilt by helper processes, one per
core (at most 4; ``$RESTOREDRILL_VERIFY_WORKERS`` to set), each reading its own batches:
reading and writing the rows is the cost, and it is the same for every run.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from sqlalchemy import Connection, func, inspect, select

from . import canonical_rows as rows_text
from .evidence import checks_t, results_t, runs_t

SEQS_PER_BATCH = 8
PARALLEL_ABOVE = 300_000
"""Check rows to rebuild above which helper processes share the work."""


class Content:
    """Run hashes for seqs from ``content_from`` on (earlier runs are not rebuilt)."""

    def __init__(self, url: str | None, content_from: int) -> None:
        self.url = url
        self.content_from = content_from
        self.pool: Executor | None = None

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
        if checked and self.url and self._workers(conn, len(checked), len(ranges)) > 1:
            results = self.pool.map(_hashes_in, checked)  # type: ignore[union-attr]
            wanted = set(checked)
            for lo, hi in ranges:
                rows = _run_rows(conn, lo, hi)
                yield rows, (next(results) if (lo, hi) in wanted else {})
            return
        for lo, hi in ranges:
            rows = _run_rows(conn, lo, hi)
            wanted = [r for r in rows if r.seq >= self.content_from] if fast else []
            yield rows, hashes(conn, wanted)

    def _workers(self, conn: Connection, checked: int, total: int) -> int:
        wanted = int(os.environ.get("RESTOREDRILL_VERIFY_WORKERS") or min(os.cpu_count() or 1, 4))
        if wanted <= 1:
            return 1
        span = conn.execute(select(func.max(checks_t.c.id) - func.min(checks_t.c.id))).scalar()
        if (span or 0) * checked / max(total, 1) < PARALLEL_ABOVE:
            return 1
        self.pool = ProcessPoolExecutor(
            wanted,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open,
            initargs=(self.url,),
        )
        return wanted

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _run_rows(conn: Connection, lo: int, hi: int) -> list[Any]:
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
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        ids = [r.id for r in run_rows]
        cursor.execute(
            f"SELECT {', '.join(rows_text.RESULT_COLS)} FROM system_results "
            f"WHERE run_pk IN ({', '.join([ph] * len(ids))}) ORDER BY run_pk, position",
            ids,
        )
        results = cursor.fetchall()
        steps: dict[int, list[Sequence[Any]]] = {}
        checks: dict[int, list[Sequence[Any]]] = {}
        if results:
            lo, hi = min(r[0] for r in results), max(r[0] for r in results)
            steps = _children(cursor, "steps", rows_text.STEP_COLS, lo, hi, ph)
            checks = _children(cursor, "check_results", rows_text.CHECK_COLS, lo, hi, ph)
    finally:
        cursor.close()
    by_run: dict[int, list[str] | None] = {r.id: [] for r in run_rows}
    for r in results:
        systems = by_run.get(r[1])
        if systems is None:
            continue
        try:
            systems.append(
                rows_text.result_text(
                    r,
                    rows_text.ordered(steps.get(r[0], [])),
                    rows_text.ordered(checks.get(r[0], [])),
                )
            )
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


def _run_tuple(row: Any) -> tuple[Any, ...]:
    """A run row's values in RUN_COLS order (times already aware datetimes)."""
    return tuple(row._mapping[c] for c in rows_text.RUN_COLS)


def _children(
    cursor: Any, table: str, cols: Sequence[str], lo: int, hi: int, ph: str
) -> dict[int, list[Sequence[Any]]]:
    cursor.execute(
        f"SELECT {', '.join(cols)} FROM {table} WHERE result_pk BETWEEN {ph} AND {ph} "
        "ORDER BY result_pk",
        (lo, hi),
    )
    found: dict[int, list[Sequence[Any]]] = {}
    for row in cursor.fetchall():
        found.setdefault(row[0], []).append(row)
    return found


def _fast_possible(conn: Connection) -> bool:
    """Rows can be written only where every column of the current schema is there."""
    have = {c["name"] for c in inspect(conn).get_columns(checks_t.name)}
    have_results = {c["name"] for c in inspect(conn).get_columns(results_t.name)}
    return "expected_json" in have and {"worker", "limits"} <= have_results


# --------------------------------------------------------------------------- helpers

_STORE: Any = None


def _open(url: str) -> None:
    """A helper process's own read-only connection to the store."""
    global _STORE
    from .evidence import EvidenceStore

    _STORE = EvidenceStore(url, create=False)


def _hashes_in(seqs: tuple[int, int]) -> dict[int, str]:
    with _STORE._read() as conn:
        return hashes(conn, _run_rows(conn, *seqs))
