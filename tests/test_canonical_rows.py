"""The canonical text written straight from rows (flows/canonical_rows.py) is the text
canonical_json() makes of the loaded record, on real SQLite and PostgreSQL; runs it does
not write (escaped text, surrogates) are left to the exact path, never written wrong."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from sqlalchemy import select

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows import canonical_rows as rows_text
from restoredrill.flows import chain_rows
from restoredrill.flows.canonical import canonical_json, for_storage
from restoredrill.flows.evidence import EvidenceStore, runs_t
from restoredrill.flows.results import RunRecord, StepTiming, SystemResult, Verdict
from restoredrill.twins.sources.base import BackupRef

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=40, deadline=None, database=None, derandomize=True)

chars = st.characters(exclude_categories=())  # NUL, controls, lone surrogates included
plain = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.sampled_from([141312.0, -0.0, 1e16, 1e-7, 63.5])
    | st.text(chars, max_size=6)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
floats = st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.just(1.0)
"""Record-level floats, -0.0 included (the store writes it as 0.0 in a number column)."""


@st.composite
def runs(draw: Any, text: Any) -> RunRecord:
    def system(i: int) -> SystemResult:
        backup = draw(st.none() | st.builds(
            BackupRef, source=text, backup_id=text, location=text,
            size_bytes=st.none() | st.integers(0, 2**62), sha256=st.none() | st.just("ab" * 32),
            created_at=st.none() | times,
        ))  # fmt: skip
        return SystemResult(
            system=f"s{i}",
            verdict=draw(st.sampled_from(list(Verdict))),
            reason=draw(text),
            labels=draw(st.dictionaries(st.sampled_from(["zone", "role", "x"]), text, max_size=2)),
            started_at=draw(st.none() | times),
            finished_at=draw(st.none() | times),
            recovery_time_s=draw(floats),
            framework_s=draw(st.none() | floats),
            rto_s=draw(floats),
            rpo_s=draw(floats),
            backup_age_s=draw(floats),
            near_miss=draw(st.booleans()),
            worker=draw(st.none() | text),
            limits=draw(st.none() | st.dictionaries(st.text(max_size=5), scalars, max_size=2)),
            platform=draw(st.none() | st.dictionaries(st.text(max_size=5), scalars, max_size=2)),
            backup=backup,
            steps=[
                StepTiming(name=draw(text), started_at=draw(times), duration_s=draw(st.floats(0, 1e6)),
                           ok=draw(st.booleans()), message=draw(text))
                for _ in range(draw(st.integers(0, 3)))
            ],
            checks=[
                CheckResult(name=draw(text), kind="http", status=draw(st.sampled_from(list(Status))),
                            expected=draw(values), observed=draw(values),
                            duration_s=draw(st.floats(0, 100)), message=draw(text))
                for _ in range(draw(st.integers(0, 3)))
            ],
        )  # fmt: skip

    start = draw(times)
    return RunRecord(
        run_id=f"r-{draw(st.integers(0, 10**12))}",
        site="plant",
        started_at=start,
        finished_at=draw(st.none() | st.just(start + timedelta(seconds=5))),
        trigger=draw(st.sampled_from(["manual", "schedule"])),
        verdict=draw(st.sampled_from(list(Verdict))),
        site_recovery_time_s=draw(floats),
        site_rto_s=draw(floats),
        systems=[system(i) for i in range(draw(st.integers(0, 3)))],
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> EvidenceStore:
    url = (
        f"sqlite:///{tmp_path / 'evidence.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with EvidenceStore(url) as opened:
        yield opened


def fast_texts(store: EvidenceStore) -> dict[str, str | None]:
    with store._read() as conn:
        rows = list(conn.execute(select(runs_t).order_by(runs_t.c.seq)))
        texts = {seq: text for seq, _, text in chain_rows.texts(conn, rows)}
    return {r.run_id: texts.get(r.seq) for r in rows}


def _same(store: EvidenceStore, record: RunRecord) -> str | None:
    store.record(record)
    text = fast_texts(store)[record.run_id]
    if text is not None:
        assert text == canonical_json(store.load(record.run_id))
    return text


def test_plain_runs_are_written_from_their_rows(store: EvidenceStore) -> None:
    """Text without escapes (any Unicode but surrogates and NUL) always takes the fast path."""
    seen = 0

    @SETTINGS
    @given(runs(st.text(plain, max_size=8)))
    def check(record: RunRecord) -> None:
        nonlocal seen
        for system in record.systems:  # values with surrogates are left to the exact path
            for c in system.checks:
                c.expected, c.observed = _no_surrogates(c.expected), _no_surrogates(c.observed)
        record.run_id = f"{record.run_id}-{seen}"
        seen += 1
        assert _same(store, record) is not None

    check()
    assert store.verify().ok


def test_any_run_is_written_right_or_not_at_all(store: EvidenceStore) -> None:
    n = 0

    @SETTINGS
    @given(runs(st.text(chars, max_size=6)))
    def check(record: RunRecord) -> None:
        nonlocal n
        record.run_id = f"{record.run_id}-{n}"
        n += 1
        _same(store, record)

    check()
    assert store.verify().ok


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return "".join(ch for ch in value if not 0xD800 <= ord(ch) <= 0xDFFF)
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return value  # recorded as the strings "NaN", "Infinity"
    return value


def test_a_lone_surrogate_in_a_step_name_worker_or_backup_source_is_kept(
    store: EvidenceStore,
) -> None:
    """Hypothesis found these: the three text columns of bounded length were not stored
    escaped, so a lone surrogate (not UTF-8) failed the write."""
    at = datetime(2000, 1, 1, tzinfo=UTC)
    record = RunRecord(
        run_id="r-surrogates", site="plant", started_at=at, verdict=Verdict.PASS,
        systems=[SystemResult(
            system="s0", verdict=Verdict.PASS, worker="w\ud800",
            backup=BackupRef(source="s\ud800", backup_id="b", location="l"),
            steps=[StepTiming(name="\ud800", started_at=at, duration_s=0.0, ok=True)],
        )],
    )  # fmt: skip
    _same(store, record)
    loaded = store.load("r-surrogates").systems[0]
    assert (loaded.worker, loaded.steps[0].name) == ("w\ud800", "\ud800")
    assert loaded.backup is not None and loaded.backup.source == "s\ud800"
    assert store.verify().ok


def test_postgresql_writes_each_results_rows_whole(request: pytest.FixtureRequest) -> None:
    """PostgreSQL writes a result's steps and checks joined in one answer (its shortest
    float text, ``.0`` added, as Python's repr); a row it cannot write (a float Python
    writes with an exponent, a text stored escaped) makes its result's answer NULL, and
    the text then comes row by row, the same as canonical_json's."""
    at = datetime(2026, 3, 1, 2, 0, 0, 120000, tzinfo=UTC)
    plain = [0.5, 100.0, 0.0001, -0.0, 0.30000000000000004, 123456789012345.0]

    def result(name: str, durations: list[float], message: str = "") -> SystemResult:
        return SystemResult(
            system=name, verdict=Verdict.PASS,
            steps=[StepTiming(name=f"s{i}", started_at=at + timedelta(seconds=i), duration_s=d,
                              ok=bool(i % 2), message=message) for i, d in enumerate(durations)],
            checks=[CheckResult(name=f"c{i}", kind="tcp", status=Status.PASS, expected={"a": [1, 2.5]},
                                observed="o\n", duration_s=d, message=message)
                    for i, d in enumerate(durations)],
        )  # fmt: skip

    record = RunRecord(
        run_id="r-joined", site="plant", started_at=at, verdict=Verdict.PASS,
        systems=[result("plain", plain), result("tiny", [0.5, 1e-05])],
    )  # fmt: skip
    escaped = RunRecord(
        run_id="r-escaped", site="plant", started_at=at, verdict=Verdict.PASS,
        systems=[result("escaped", [0.5], message="nul\x00")],
    )  # fmt: skip
    with EvidenceStore(request.getfixturevalue("pg_url")) as store:
        store.record(record)
        store.record(escaped)
        with store._read() as conn:
            ids = dict(conn.exec_driver_sql("SELECT system, id FROM system_results").all())
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute(rows_text.PG_FLOAT_DIGITS)
            answers = []
            for sql in (rows_text.pg_steps_sql(), rows_text.pg_checks_sql()):
                cursor.execute(sql, (min(ids.values()), max(ids.values())))
                answers.append(dict(cursor.fetchall()))
            # with 15 digits, 0.30000000000000004 would print as 0.3: not taken
            cursor.execute("SET LOCAL extra_float_digits = 0")
            cursor.execute(rows_text.pg_checks_sql(), (ids["plain"], ids["plain"]))
            assert cursor.fetchall() == [(ids["plain"], None)]
        assert fast_texts(store)["r-joined"] == canonical_json(store.load("r-joined"))
        assert store.verify().ok
    canonical = json.loads(canonical_json(for_storage(record)))  # its -0.0 is stored as 0.0
    plain_result = canonical["systems"][0]
    for answer, key in zip(answers, ("steps", "checks"), strict=True):
        assert answer[ids["plain"]] == dumps_list(plain_result[key])
        assert answer[ids["tiny"]] is None and answer[ids["escaped"]] is None


def dumps_list(items: list[Any]) -> str:
    return ",".join(json.dumps(i, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                    for i in items)  # fmt: skip


def test_a_nul_hidden_in_a_stored_value_is_not_cut_off(tmp_path: Path) -> None:
    """SQLite's printf ends a %s at a NUL: a value edited to ``200<NUL>...`` must not read
    as the ``200`` it was (the row is written by Python, whose text keeps the rest)."""
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    at = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    with EvidenceStore(url) as store:
        store.record(RunRecord(
            run_id="r-nul", site="plant", started_at=at, verdict=Verdict.PASS,
            systems=[SystemResult(system="s", verdict=Verdict.PASS, checks=[
                CheckResult(name="c", kind="http", status=Status.PASS, expected=200, observed=200)
            ])],
        ))  # fmt: skip
        assert store.verify().ok
        with store._write() as conn:
            conn.exec_driver_sql("UPDATE check_results SET observed_json = '200' || char(0) || 'x'")
        report = store.verify()
    assert not report.ok and report.run_id == "r-nul" and "altered" in report.problem, report


def test_a_negative_zero_in_a_number_column_verifies_on_sqlite(tmp_path: Path) -> None:
    """SQLite keeps a REAL -0.0 as 0: the store writes it as 0.0, so the run is not
    reported altered (it was, before: a false "tampered")."""
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        store.record(RunRecord(run_id="r-zero", site="plant", started_at=T0, verdict=Verdict.PASS,
                               site_rto_s=-0.0))  # fmt: skip
        assert store.verify().ok
