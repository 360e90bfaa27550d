"""Every value a check can observe survives the evidence store unchanged, on real SQLite and
PostgreSQL: recorded, loaded and verified, an honest record is never "altered"; an edited one
always is. Records written by restoredrill 0.1 (tests/data) still verify."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from sqlalchemy import create_engine, text

from restoredrill.checks.base import CheckResult, Status
from restoredrill.flows.canonical import canonical_json, dump_value, json_value
from restoredrill.flows.evidence import EvidenceStore, normalize_url
from restoredrill.flows.results import RunRecord, StepTiming, SystemResult, Verdict

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from legacy_evidence import legacy_runs  # noqa: E402

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True)

chars = st.characters(exclude_categories=())  # every code point: NUL, controls, lone surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()  # NaN, ±inf, -0.0, subnormals
    | st.sampled_from([141312.0, -0.0, 0.0, 5e-324, 1e16, 2.0**70, 1.5, math.nan, math.inf])
    | st.text(chars, max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.text(chars, max_size=4) | st.integers() | st.booleans(), inner, max_size=3
        )
    ),
    max_leaves=8,
)
checks = st.lists(st.tuples(st.text(chars, max_size=6), values, values), min_size=1, max_size=4)
limits = st.none() | st.dictionaries(st.text(max_size=6), scalars, max_size=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


def a_run(run_id: str, found: list[tuple[str, Any, Any]], limits: Any = None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        site="plant",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=90),
        systems=[
            SystemResult(
                system="historian",
                verdict=Verdict.PASS,
                reason=found[0][0],
                started_at=T0,
                recovery_time_s=80.0,
                limits=limits,
                steps=[StepTiming(name="restore", started_at=T0, duration_s=3.0, message=found[0][0])],
                checks=[
                    CheckResult(name=f"check {i} {msg}", kind="modbus", status=Status.PASS,
                                expected=exp, observed=obs, duration_s=0.5, message=msg)
                    for i, (msg, exp, obs) in enumerate(found)
                ],
            )
        ],
    )  # fmt: skip


def typed(value: Any) -> Any:
    """A value with its JSON type made explicit (1, 1.0 and True are equal in Python)."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, dict):
        return ("map", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def raw(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def test_json_value_defines_what_json_lacks() -> None:
    assert typed(json_value(141312.0)) == ("float", "141312.0")
    assert typed(json_value(-0.0)) == ("float", "-0.0")
    assert [json_value(x) for x in (math.nan, math.inf, -math.inf)] == [
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    assert json_value({1: (1, 2), False: None, None: {3}}) == {
        "1": [1, 2],
        "false": None,
        "null": [3],
    }
    assert json_value("\ud83d\ude00") == "😀" and json_value("\ud800") == "\ud800"
    assert json_value([Status.PASS, Verdict.FAIL]) == ["pass", "fail"]  # enum values
    assert dump_value(2**70 + 1) == "1180591620717411303425"
    assert dump_value("a\x00\ud800") == '"a\\u0000\\ud800"'


def test_every_value_survives_the_round_trip(store_url: str) -> None:
    numbers = itertools.count()
    with EvidenceStore(store_url) as store:

        @SETTINGS
        @given(found=checks, limits=limits)
        @example(found=[("", 141312.0, 141312.0)], limits={"cpus": 1.0, "memory": 2**29})
        @example(found=[("a\x00b\ud800", -0.0, [2**64 + 1, 5e-324, math.nan])], limits=None)
        def check(found: list[tuple[str, Any, Any]], limits: Any) -> None:
            run = a_run(f"r{next(numbers)}", found, limits)
            store.record(run)
            loaded = store.load(run.run_id)
            assert canonical_json(loaded) == canonical_json(run)
            for check_result, (_, exp, obs) in zip(loaded.systems[0].checks, found, strict=True):
                assert typed(check_result.expected) == typed(json_value(exp))
                assert typed(check_result.observed) == typed(json_value(obs))
            assert loaded.systems[0].checks[-1].message == found[-1][0]  # NUL, lone surrogates
            assert loaded.systems[0].reason == found[0][0]
            assert typed(loaded.systems[0].limits) == typed(json_value(limits))
            report = store.verify()
            assert report.ok, report

        check()


def test_an_edited_value_is_always_detected(store_url: str) -> None:
    numbers = itertools.count()
    with EvidenceStore(store_url) as store:

        @settings(SETTINGS, max_examples=25)
        @given(
            found=checks,
            which=st.integers(min_value=0),
            field=st.sampled_from(["expected", "observed"]),
        )
        @example(found=[("", 141312.0, 141312.0)], which=0, field="observed")
        def check(found: list[tuple[str, Any, Any]], which: int, field: str) -> None:
            run = a_run(f"r{next(numbers)}", found)
            store.record(run)
            position = which % len(found)
            honest = dump_value(getattr(run.systems[0].checks[position], field))
            where = (
                "WHERE position = :position AND result_pk = (SELECT s.id FROM system_results s "
                "JOIN runs r ON r.id = s.run_pk WHERE r.run_id = :run_id)"
            )
            column = f"{field}_json"
            raw(store_url, f"UPDATE check_results SET {column} = :v {where}",
                v=f"[{honest}]", position=position, run_id=run.run_id)  # fmt: skip
            report = store.verify()
            assert not report.ok and report.run_id == run.run_id, report
            assert "altered" in report.problem
            raw(store_url, f"UPDATE check_results SET {column} = :v {where}",
                v=honest, position=position, run_id=run.run_id)  # fmt: skip
            assert store.verify().ok

        check()


# --------------------------------------------------------------------------- 0.1 stores


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store written by restoredrill 0.1.0 (see tests/data/legacy_evidence.py)."""
    if request.param == "sqlite":
        path = tmp_path / "evidence.db"
        shutil.copy(DATA / "evidence-0.1.0.sqlite", path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_url")
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((DATA / "evidence-0.1.0.postgresql.sql").read_text())
    return url


def test_a_0_1_store_still_verifies(legacy_url: str) -> None:
    with EvidenceStore.reader(legacy_url) as auditor:  # read-only: nothing migrated
        report = auditor.verify()
        assert report.ok and report.runs == 3, report
        first = auditor.load("legacy-1")
        assert [c.name for c in first.systems[0].checks][:2] == ["disk used", "status"]
        assert auditor.history()[0].run_id == "legacy-3"
    with EvidenceStore(legacy_url) as store:  # a writer adds the new columns
        new = a_run("new-1", [("", 141312.0, [141312.0, -0.0])], limits={"cpus": 2.0})
        store.record(new)
        report = store.verify()
        assert report.ok and report.runs == 4, report
        assert typed(store.load("new-1").systems[0].checks[0].expected) == ("float", "141312.0")
        assert store.load("legacy-2").systems[0].worker == "worker1"


def test_an_edited_0_1_record_is_detected(legacy_url: str) -> None:
    where = (
        "WHERE name = 'disk used' AND result_pk = (SELECT s.id FROM system_results s "
        "JOIN runs r ON r.id = s.run_pk WHERE r.run_id = 'legacy-2')"
    )
    raw(legacy_url, f"UPDATE check_results SET observed = '141313' {where}")
    with EvidenceStore.reader(legacy_url) as auditor:
        report = auditor.verify()
        assert not report.ok and report.run_id == "legacy-2", report
        assert "altered" in report.problem


def test_too_many_unsure_numbers_are_reported_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "evidence.db"
    shutil.copy(DATA / "evidence-0.1.0.sqlite", path)
    with sqlite3.connect(path) as db:  # 34 more whole numbers in run legacy-3: 2^38 readings
        result = db.execute("SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk "
                            "WHERE r.run_id = 'legacy-3'").fetchone()[0]  # fmt: skip
        for i in range(17):
            db.execute("INSERT INTO check_results (result_pk, position, name, kind, status, "
                       "expected, observed, duration_s, message) VALUES (?, ?, 'n', 'k', 'pass', "
                       "?, ?, 0.1, '')", (result, 10 + i, i, i))  # fmt: skip
    with EvidenceStore.reader(f"sqlite:///{path}") as auditor:
        report = auditor.verify()
    assert not report.ok and report.run_id == "legacy-3"
    assert "cannot be verified" in report.problem and "38 whole-number" in report.problem  # 4 + 34


def test_legacy_runs_fixture_matches_the_data() -> None:
    """The records in tests/data are the ones legacy_evidence.py describes."""
    with EvidenceStore.reader(f"sqlite:///{DATA / 'evidence-0.1.0.sqlite'}") as auditor:
        stored = auditor.runs(None)
    assert [r.run_id for r in reversed(stored)] == [r.run_id for r in legacy_runs()]
    assert not (DATA / "evidence-0.1.0.sqlite-journal").exists()


# --------------------------------------------------------------------------- the CLI


def restoredrill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


def test_evidence_verify_command(store_url: str) -> None:
    with EvidenceStore(store_url) as store:
        for i in range(3):
            store.record(a_run(f"run-{i}", [("", 141312.0, {"level": 63.0, "raw": 141312.0})]))
    honest = restoredrill("evidence", "verify", "--evidence", store_url)
    assert honest.returncode == 0, honest.stderr
    assert "evidence intact: 3 runs" in honest.stdout
    where = (
        "WHERE result_pk = (SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk "
        "WHERE r.run_id = 'run-1')"
    )
    raw(store_url, f"UPDATE check_results SET expected_json = '141313.0' {where}")
    tampered = restoredrill("evidence", "verify", "--evidence", store_url)
    assert tampered.returncode == 1
    assert "run run-1 (#2) was altered" in tampered.stderr and "Traceback" not in tampered.stderr


def test_history_on_a_damaged_database(tmp_path: Path) -> None:
    damaged = tmp_path / "evidence.db"
    damaged.write_bytes(b"these are not the runs you are looking for\n" * 200)
    for command in (["history"], ["evidence", "verify"]):
        proc = restoredrill(*command, "--evidence", f"sqlite:///{damaged}")
        assert proc.returncode == 2, proc.stderr
        message = " ".join(proc.stderr.split())
        assert f"{damaged} is damaged or is not an SQLite database" in message
        assert "move it aside" in message
        assert "create its tables" not in message and "Traceback" not in message
    assert damaged.read_bytes().startswith(b"these are not")  # nothing written to it
