"""A regression test in the evidence chain, on real SQLite and PostgreSQL: one link of kind
``regression`` between the runs, signed with the site's key, verified with the chain,
shown by ``history``; kept in a file when the store cannot take it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from evidence_data import a_run, site_yaml
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from sqlalchemy import create_engine

from restoredrill.flows.compare import compare
from restoredrill.flows.evidence import EvidenceStore, normalize_url
from restoredrill.flows.inventory import load_site
from restoredrill.flows.regress import RegressionRecord
from restoredrill.flows.regress_evidence import record_regression, regressions
from restoredrill.flows.signing import keygen
from restoredrill.twins.snapshot import Entry, Snapshot

NOW = datetime.now(UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


def a_regression(regression_id: str = "g20261201-020000-abcd") -> RegressionRecord:
    base, cand = a_run(1, NOW, prefix="base"), a_run(1, NOW, prefix="cand")
    cand.systems[0].checks[0].status = cand.systems[0].checks[0].status.__class__("fail")
    shots = [Snapshot(owner="device plc modbus", protocol="modbus", endpoint="modbus://10.77.0.100:502",
                      entries={"unit 1 holding 0": Entry(type="float32", value=50.0)})]  # fmt: skip
    return RegressionRecord(
        regression_id=regression_id, site="plant", started_at=NOW, finished_at=NOW,
        verdict="regression", summary="1 check(s) newly failing or changed",
        source={"git_base": "origin/main"},
        revisions={"base": "a" * 40, "head": "b" * 40, "dirty": False},
        changed_files=[{"path": "plc/line1.yaml", "status": "modified",
                        "baseline_sha256": "1" * 64, "candidate_sha256": "2" * 64}],
        affected={"systems": {"historian": ["plc/line1.yaml (modified): …"]},
                  "baseline": ["historian"], "candidate": ["historian"]},
        baseline=base, candidate=cand, snapshots={"baseline": shots, "candidate": shots},
        comparison=compare(base, cand, shots, shots),
    )  # fmt: skip


def raw(url: str, sql: str) -> None:
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


def test_a_regression_is_a_signed_link_of_the_chain(store_url: str, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "site.key"
    signer = keygen(key)
    loaded = load_site(site_yaml(tmp_path, store_url, key))
    store = EvidenceStore(store_url, signer=signer)
    store.record(a_run(0, NOW))
    assert record_regression(loaded, a_regression()) is None
    store.record(a_run(2, NOW))
    report = store.verify()
    assert report.ok and report.runs == 2 and report.signed == 2, report.problem
    [found] = regressions(store)
    assert found["kind"] == "regression" and found["seq"] == 3  # key #1, run #2, regression #3
    assert found["changed_files"][0]["candidate_sha256"] == "2" * 64
    assert found["revisions"]["base"] == "a" * 40
    assert found["baseline"]["run_id"].startswith("base") and found["candidate"]["systems"]
    assert found["differences"]["checks"][0]["change"] == "newly failing"
    assert found["snapshots"]["baseline"][0]["entries"] == 1
    assert regressions(store, system="historian") and not regressions(store, system="mes")
    raw(store_url, "UPDATE chain_events SET body = replace(body, '\"verdict\":\"regression\"', "
                   "'\"verdict\":\"no regression\"') WHERE kind = 'regression'")  # fmt: skip
    broken = store.verify()
    assert not broken.ok and broken.problem == "regression #3 was altered: its body no longer matches its hash"
    store.close()


def test_history_shows_regressions(store_url: str, tmp_path: Path) -> None:
    loaded = load_site(site_yaml(tmp_path, store_url))
    assert record_regression(loaded, a_regression()) is None
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    cli = [sys.executable, "-m", "restoredrill.flows.cli", "history", "--evidence", store_url]
    proc = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "regression tests" in proc.stdout and "g20261201-020000-abcd" in proc.stdout
    assert "git origin/main (aaaaaaaaaa): plc/line1.yaml" in proc.stdout
    out = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, env=env,
                                    timeout=120).stdout)  # fmt: skip
    assert [r["regression_id"] for r in out if r.get("kind") == "regression"] == ["g20261201-020000-abcd"]


def test_a_store_that_cannot_take_it_keeps_it_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    url = f"sqlite:///{tmp_path / 'ro' / 'evidence.db'}"
    loaded = load_site(site_yaml(tmp_path, url))
    EvidenceStore(url).close()
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "ro" / "evidence.db").chmod(0o400)
    try:
        if os.geteuid() == 0:  # root writes anyway: make the database unreadable as SQLite
            (tmp_path / "ro").chmod(0o700)
            (tmp_path / "ro" / "evidence.db").chmod(0o600)
            (tmp_path / "ro" / "evidence.db").write_bytes(b"not a database" * 100)
        said = record_regression(loaded, a_regression())
    finally:
        (tmp_path / "ro").chmod(0o700)
    kept = tmp_path / ".restoredrill" / "spool" / "regressions" / "g20261201-020000-abcd.json"
    assert said is not None and said.endswith(f"kept in {kept}")
    assert json.loads(kept.read_text())["kind"] == "regression"
