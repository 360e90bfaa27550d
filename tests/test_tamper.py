"""Editing any one stored value of a signed store, in any table of the chain, fails
``evidence verify`` and names the run (or the link) it belongs to.

Left out, by design: row ids and ``position`` numbers (only the order they give is
evidence, and an order change is covered), ``recorded_at`` (when the store wrote the row,
not what happened) and alert deliveries (they follow the run, outside the chain).
"""

from __future__ import annotations

import sqlite3
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from evidence_data import fill

from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.signing import keygen

NOT_EVIDENCE = {"id", "position", "recorded_at", "run_pk", "result_pk"}
TABLES = ["runs", "system_results", "steps", "check_results", "signatures", "chain_events"]


def one_byte(value: object) -> object:
    """The value with one character (or digit, or the number) changed."""
    if isinstance(value, bool) or value in (0, 1) and isinstance(value, int):
        return 1 - int(value)
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0
    text = str(value)
    for i, ch in enumerate(text):
        for alphabet in (string.digits, "abcdef", string.ascii_lowercase, string.ascii_uppercase):
            if ch in alphabet:
                other = alphabet[(alphabet.index(ch) + 1) % len(alphabet)]
                return text[:i] + other + text[i + 1 :]
    return text + "x" if text == "" else text[:-1] + chr(ord(text[-1]) ^ 1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    root = tmp_path_factory.mktemp("tamper")
    signer = keygen(root / "site.key")
    with EvidenceStore(f"sqlite:///{root / 'evidence.db'}", signer=signer) as store:
        fill(store, days=2, now=datetime(2026, 11, 30, 2, tzinfo=UTC))
    with sqlite3.connect(root / "evidence.db") as db:
        names = dict(db.execute("SELECT seq, run_id FROM runs"))
    return root / "evidence.db", names


def cells(db: Path) -> list[tuple[str, int, str]]:
    out = []
    with sqlite3.connect(db) as conn:
        for table in TABLES:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for (rowid,) in conn.execute(f"SELECT id FROM {table}"):
                for column in columns:
                    if column in NOT_EVIDENCE:
                        continue
                    value = conn.execute(
                        f"SELECT {column} FROM {table} WHERE id = ?", (rowid,)
                    ).fetchone()[0]
                    if value is not None and value != "":
                        out.append((table, rowid, column))
    return out


def owner(conn: sqlite3.Connection, table: str, rowid: int) -> int:
    """The seq of the link a row belongs to."""
    if table in ("runs", "signatures", "chain_events"):
        return conn.execute(f"SELECT seq FROM {table} WHERE id = ?", (rowid,)).fetchone()[0]
    result = rowid
    if table in ("steps", "check_results"):
        result = conn.execute(f"SELECT result_pk FROM {table} WHERE id = ?", (rowid,)).fetchone()[0]
    return conn.execute(
        "SELECT r.seq FROM runs r JOIN system_results s ON s.run_pk = r.id WHERE s.id = ?",
        (result,),
    ).fetchone()[0]


def test_every_stored_value_is_covered(pristine, tmp_path: Path) -> None:
    source, names = pristine
    targets = cells(source)
    assert len(targets) > 150
    db = tmp_path / "evidence.db"
    missed = []
    for table, rowid, column in targets:
        db.write_bytes(source.read_bytes())
        with sqlite3.connect(db) as conn:
            value = conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (rowid,)).fetchone()[
                0
            ]
            seq = owner(conn, table, rowid)
            try:
                conn.execute(
                    f"UPDATE {table} SET {column} = ? WHERE id = ?", (one_byte(value), rowid)
                )
            except sqlite3.IntegrityError:
                continue  # the database itself refuses that edit (a unique seq or hash)
        with EvidenceStore.reader(f"sqlite:///{db}") as store:
            report = store.verify()
        named = names.get(seq, "")
        if report.ok or not (f"#{seq}" in report.problem or (named and named in report.problem)):
            missed.append((table, column, rowid, value, report.problem))
    assert not missed, missed[:10]
