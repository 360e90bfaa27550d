"""A year of nightly runs of a large site, written fast into an evidence store.

Rows are made as tuples and bulk-inserted (SQLite ``executemany``, PostgreSQL ``COPY``);
each run's hash is the real chain hash: sha256(prev_hash + canonical text), the text
written from the very rows inserted by ``flows/canonical_rows.py`` (the code ``evidence
verify`` uses, proven equal to ``canonical_json`` by tests/test_canonical_rows.py), and
the first run is checked against ``canonical_json`` of the record loaded back. Each run
is signed by the site key, announced first, as ``restoredrill run`` does.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from restoredrill.flows import canonical_rows as rt
from restoredrill.flows import chain
from restoredrill.flows.canonical import canonical_json, dump_value
from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.signing import Signer, b64

STEPS = ["restore", "start", "ready", "checks", "teardown"]
KINDS = ["modbus", "opcua", "http", "tcp", "host"]


@dataclass
class Shape:
    systems: int = 500
    days: int = 365
    checks: int = 11
    site: str = "bigplant"
    seed: int = 7


def system_names(shape: Shape) -> list[str]:
    return [f"sys-{i:03d}" for i in range(shape.systems)]


def site_yaml(shape: Shape, evidence_url: str, key: str | None = None) -> str:
    """A site file naming the same systems (for coverage), on the bench store."""
    lines = [f"site: {shape.site}", f"evidence: {json.dumps(evidence_url)}", "rto: 2h"]
    if key:
        lines.append(f"signing_key: {json.dumps(key)}")
    lines.append("systems:")
    for i, name in enumerate(system_names(shape)):
        zone = "ot" if i % 5 < 3 else "it"
        lines.append(
            f"  - {{name: {name}, labels: {{zone: {zone}}}, rto: 15m, rpo: 1d, "
            f"backup: {{kind: image_archive, directory: backups, pattern: '{name}-*.tar'}}}}"
        )
    return "\n".join(lines) + "\n"


class _Rows:
    """Ids and rows of one batch of runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[Any, ...]] = []
        self.results: list[tuple[Any, ...]] = []
        self.steps: list[tuple[Any, ...]] = []
        self.checks: list[tuple[Any, ...]] = []
        self.sigs: list[tuple[Any, ...]] = []


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def generate(
    store: EvidenceStore, shape: Shape, signer: Signer, *, now: datetime | None = None
) -> int:
    """Fill an empty store; return the number of runs."""
    rng = random.Random(shape.seed)
    sqlite = store.engine.dialect.name == "sqlite"
    now = now or datetime.now(UTC)
    first = (now - timedelta(days=shape.days)).replace(hour=2, minute=0, second=0, microsecond=0)
    names = system_names(shape)
    with store._write() as conn:
        head = conn.execute(text("SELECT seq, hash FROM chain_head")).one()
        assert head.seq == 0, "the bench store must be empty"
        seq, prev = chain.before_append(conn, store.shown, 0, head.hash, signer)
    ids = {"result": 0, "step": 0, "check": 0}
    batch = _Rows()
    checked = False
    for day in range(1, shape.days + 1):
        start = first + timedelta(days=day)
        seq += 1
        run = _run(rng, shape, names, seq, start, ids, batch, sqlite)
        systems_text = run.pop()
        digest = hashlib.sha256((prev + systems_text).encode("utf-8")).hexdigest()
        batch.runs.append((*run, prev, digest))
        sig = signer.sign(chain.LINK_TYPE, chain.link_payload("run", seq, prev, digest))
        batch.sigs.append((seq, signer.keyid, b64(sig)))
        prev = digest
        if len(batch.runs) == 10 or day == shape.days:
            _insert(store, batch, seq, prev, sqlite)
            batch = _Rows()
            if not checked:  # the text written from rows is canonical_json's
                run_id = f"{shape.site}-{first + timedelta(days=1):%Y%m%d}"
                record = store.load(run_id)
                with store._read() as c:
                    row = c.execute(
                        text("SELECT hash, prev_hash FROM runs WHERE run_id = :r"), {"r": run_id}
                    ).one()
                assert (
                    hashlib.sha256((row.prev_hash + canonical_json(record)).encode()).hexdigest()
                    == row.hash
                )
                checked = True
    return shape.days


def _run(
    rng: random.Random, shape: Shape, names: list[str], seq: int, start: datetime,
    ids: dict[str, int], rows: _Rows, sqlite: bool,
) -> list[Any]:  # fmt: skip
    t = _iso if sqlite else (lambda v: v)
    run_pk = seq
    texts = []
    worst = "pass"
    finished = start + timedelta(minutes=90)
    for position, name in enumerate(names):
        ids["result"] += 1
        rid = ids["result"]
        roll = rng.random()
        verdict = (
            "fail"
            if roll < 0.03
            else "rto_exceeded"
            if roll < 0.04
            else "error"
            if roll < 0.045
            else "pass"
        )
        if verdict != "pass":
            worst = (
                "fail" if verdict in ("fail", "error") else (worst if worst == "fail" else verdict)
            )
        index = int(name[4:])
        zone = "ot" if index % 5 < 3 else "it"
        labels = json.dumps({"zone": zone})
        recovery = round(
            rng.uniform(60, 700) if verdict != "rto_exceeded" else rng.uniform(901, 1500), 3
        )
        age = round(rng.uniform(3600, 30 * 3600), 3)
        sys_start = start + timedelta(seconds=position * 7)
        created = sys_start - timedelta(seconds=age)
        digest = hashlib.sha256(f"{name}{start}".encode()).hexdigest()
        reason = "" if verdict == "pass" else f"{verdict}: see checks"
        result = (
            rid, run_pk, position, name, verdict, reason, labels, t(sys_start),
            t(sys_start + timedelta(seconds=recovery + 5)), recovery, 900.0, 86400.0, age,
            verdict == "pass" and recovery > 720, None, None, "image_archive",
            f"sha256:{digest[:12]}", f"/backups/{name}/{name}-{start:%Y%m%d}.tar.gz",
            rng.randrange(10**8, 10**10), digest, t(created), None, None,
        )  # fmt: skip
        steps = []
        at = sys_start
        for i, step in enumerate(STEPS):
            ids["step"] += 1
            duration = round(recovery / 5, 3)
            steps.append((rid, i, step, t(at), duration, True, ""))
            rows.steps.append((ids["step"], *steps[-1]))
            at += timedelta(seconds=duration)
        checks = []
        failing = rng.randrange(shape.checks) if verdict == "fail" else -1
        for i in range(shape.checks):
            ids["check"] += 1
            kind = KINDS[i % len(KINDS)]
            expected, observed = _values(rng, i, i == failing)
            status = "fail" if i == failing else "pass"
            checks.append(
                (rid, i, f"{kind} check {i}", kind, status, expected, observed,
                 round(rng.uniform(0.001, 2.0), 6), "" if status == "pass" else "value out of range")
            )  # fmt: skip
            rows.checks.append((ids["check"], *checks[-1]))
        rows.results.append(result)
        texts.append(
            rt.result_text(
                _as_read(result, sqlite),
                ",".join(rt.step_text(_as_read(s, sqlite)) for s in steps),
                ",".join(rt.check_text(_as_read(c, sqlite)) for c in checks),
            )
        )
    run = [
        run_pk, seq, f"{shape.site}-{start:%Y%m%d}", shape.site, t(start), t(finished), "schedule",
        worst, 5400.0, 7200.0,
    ]  # fmt: skip
    run.append(rt.run_text((*run, None, None), texts))
    return run


def _as_read(row: tuple[Any, ...], sqlite: bool) -> tuple[Any, ...]:
    """A row as the driver returns it (SQLite: 0/1 for booleans)."""
    return tuple(int(v) if sqlite and isinstance(v, bool) else v for v in row)


def _values(rng: random.Random, i: int, failing: bool) -> tuple[str, str]:
    """Expected and observed, as the store keeps them (dump_value text)."""
    kind = i % 4
    if kind == 0:
        seen = 99.5 if failing else round(rng.uniform(40, 60), 2)
        pair: tuple[Any, Any] = ({"max": 60.0, "min": 40.0}, seen)
    elif kind == 1:
        pair = (200, 503 if failing else 200)
    elif kind == 2:
        pair = ("open", "closed" if failing else "open")
    else:
        pair = ({"count": 12}, {"count": 11 if failing else 12, "nodes": ["ns=2;s=Temp"]})
    return dump_value(pair[0]), dump_value(pair[1])


def _insert(store: EvidenceStore, rows: _Rows, head_seq: int, head_hash: str, sqlite: bool) -> None:
    tables = [
        ("runs", ("id",) + rt.RUN_COLS[1:10] + ("recorded_at", "prev_hash", "hash"), [
            (*r[:10], r[4], r[10], r[11]) for r in rows.runs
        ]),
        ("system_results", rt.RESULT_COLS, rows.results),
        ("steps", ("id",) + rt.STEP_COLS, rows.steps),
        ("check_results", ("id",) + rt.CHECK_COLS, rows.checks),
        ("signatures", ("seq", "keyid", "sig"), rows.sigs),
    ]  # fmt: skip
    with store._write() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        for table, cols, data in tables:
            if sqlite:
                cursor.executemany(
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    data,
                )
            else:
                with cursor.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
        cursor.execute(
            "UPDATE chain_head SET seq = "
            + ("?" if sqlite else "%s")
            + ", hash = "
            + ("?" if sqlite else "%s"),
            (head_seq, head_hash),
        )
        if not sqlite:
            for table in ("runs", "system_results", "steps", "check_results", "signatures"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                )
        cursor.close()


def chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
