"""The evidence store on real SQLite and PostgreSQL: round trip, hash chain, concurrency, errors."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from records import T0, make_run
from sqlalchemy import create_engine, text

from restoredrill.flows.canonical import canonical_json
from restoredrill.flows.evidence import (
    EvidenceError,
    EvidenceStore,
    RunNotFound,
    default_url,
    normalize_url,
)
from restoredrill.flows.results import SystemResult, Verdict


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


def raw(url: str, sql: str) -> None:
    """Change the database behind the store's back (what a tamperer would do)."""
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def test_round_trip(store_url: str) -> None:
    first, second = make_run("r1"), make_run("r2", Verdict.FAIL, offset_h=24)
    with EvidenceStore(store_url) as store:
        h1 = store.record(first)
        h2 = store.record(second)
        assert h1 != h2 and len(h1) == 64
        loaded = store.load("r1")
        assert canonical_json(loaded) == canonical_json(first)
        assert loaded.systems[0].checks[0].observed == {
            "count": 12,
            "nodes": ["ns=2;s=Temp", "ns=2;s=Flow"],
        }
        assert loaded.systems[0].checks[1].message == "Grüße ✓"
        assert loaded.systems[0].backup.size_bytes == 5_000_000_000
        assert loaded.systems[0].started_at == first.systems[0].started_at  # same instant, in UTC
        assert loaded.systems[1].started_at == T0
        assert [s.name for s in loaded.systems[0].steps] == [
            "restore",
            "start",
            "ready",
            "checks",
            "teardown",
        ]
        assert loaded.systems[2].backup is None
        assert [r.run_id for r in store.runs(10)] == ["r2", "r1"]
        assert [r.run_id for r in store.runs(1, system="historian")] == ["r2"]
        assert store.runs(10, system="nobody") == []
        rows = store.history("historian")
        assert [(r.run_id, r.verdict) for r in rows] == [("r2", Verdict.FAIL), ("r1", Verdict.PASS)]
        assert rows[0].backup_id == "4f2a9c1e" and rows[0].rto_s == 900.0
        assert len(store.history()) == 6
        assert store.last_result("historian").verdict is Verdict.FAIL
        assert store.last_result("historian", exclude_run="r2").verdict is Verdict.PASS
        assert store.last_result("nobody") is None
        third = make_run("r3", Verdict.PASS, offset_h=48)
        third.systems.append(SystemResult(system="new", verdict=Verdict.FAIL))
        prev = store.previous_verdicts(third)
        assert prev == {
            "historian": Verdict.FAIL,
            "mes": Verdict.PASS,
            "erp": Verdict.BLOCKED,
            "new": None,
        }
        store.record(third)
        assert store.previous_verdicts(third)["historian"] is Verdict.FAIL  # its own run excluded
        report = store.verify()
        assert report.ok and report.runs == 3, report
        with pytest.raises(RunNotFound):
            store.load("r404")
        with pytest.raises(EvidenceError, match="already recorded"):
            store.record(first)
        assert store.count() == 3
    with EvidenceStore(store_url, create=False) as reader:  # an auditor needs no write rights
        assert reader.verify().ok and reader.count() == 3
    with EvidenceStore(store_url) as again:  # re-opening keeps the chain
        again.record(make_run("r4"))
        assert again.verify().ok


def test_deliveries_are_kept(store_url: str) -> None:
    with EvidenceStore(store_url) as store:
        store.record(make_run("r1"))
        store.record_deliveries("r1", [{"target": "json://127.0.0.1:1/…", "systems": ["mes"], "ok": False,
                                        "reason": "connection refused"}])  # fmt: skip
        [d] = store.deliveries("r1")
        assert (
            d["target"] == "json://127.0.0.1:1/…" and d["ok"] is False and d["systems"] == ["mes"]
        )


def _three(url: str) -> EvidenceStore:
    store = EvidenceStore(url)
    for i, verdict in enumerate([Verdict.PASS, Verdict.FAIL, Verdict.PASS]):
        store.record(make_run(f"r{i + 1}", verdict, offset_h=24 * i))
    assert store.verify().ok
    return store


@pytest.mark.parametrize(
    ("sql", "run_id", "words"),
    [
        ("UPDATE check_results SET observed_json = '200' WHERE name = 'last sample' AND result_pk IN "
         "(SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk WHERE r.run_id = 'r2')",
         "r2", "altered"),
        ("UPDATE check_results SET observed_json = NULL, observed = '200' WHERE name = 'last sample' "
         "AND result_pk IN (SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk "
         "WHERE r.run_id = 'r2')", "r2", "altered"),
        ("UPDATE system_results SET verdict = 'pass' WHERE system = 'historian' AND run_pk = "
         "(SELECT id FROM runs WHERE run_id = 'r2')", "r2", "altered"),
        ("UPDATE runs SET verdict = 'pass' WHERE run_id = 'r2'", "r2", "altered"),
        ("UPDATE steps SET duration_s = 1.0 WHERE name = 'restore' AND result_pk IN "
         "(SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk WHERE r.run_id = 'r1')",
         "r1", "altered"),
        ("DELETE FROM check_results WHERE kind = 'tcp' AND result_pk IN "
         "(SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk WHERE r.run_id = 'r3')",
         "r3", "altered"),
        ("UPDATE runs SET hash = prev_hash WHERE run_id = 'r1'", "r1", "altered"),
        ("UPDATE system_results SET platform = '{\"accel\":\"tcg\"}' WHERE system = 'historian' "
         "AND run_pk = (SELECT id FROM runs WHERE run_id = 'r2')", "r2", "altered"),
    ],
    ids=["check-observed", "check-as-0.1-row", "system-verdict", "run-verdict", "step-time", "check-deleted", "hash",
         "platform-added"],
)  # fmt: skip
def test_verify_names_the_altered_run(store_url: str, sql: str, run_id: str, words: str) -> None:
    with _three(store_url) as store:
        raw(store_url, sql)
        report = store.verify()
        assert not report.ok
        assert report.run_id == run_id, report
        assert words in report.problem and run_id in report.problem


def _delete_run(url: str, run_id: str) -> None:
    sub = f"(SELECT s.id FROM system_results s JOIN runs r ON r.id = s.run_pk WHERE r.run_id = '{run_id}')"
    raw(url, f"DELETE FROM check_results WHERE result_pk IN {sub}")
    raw(url, f"DELETE FROM steps WHERE result_pk IN {sub}")
    raw(
        url,
        f"DELETE FROM system_results WHERE run_pk = (SELECT id FROM runs WHERE run_id = '{run_id}')",
    )
    raw(url, f"DELETE FROM runs WHERE run_id = '{run_id}'")


def test_verify_reports_a_removed_run(store_url: str) -> None:
    with _three(store_url) as store:
        _delete_run(store_url, "r2")
        report = store.verify()
        assert not report.ok and report.seq == 3 and report.run_id == "r3"
        assert "#2 was removed" in report.problem
        # renumbering to hide the gap still breaks the link
        raw(store_url, "UPDATE runs SET seq = 2 WHERE run_id = 'r3'")
        report = store.verify()
        assert not report.ok and report.run_id == "r3" and "does not follow" in report.problem


def test_verify_reports_removed_newest_run(store_url: str) -> None:
    with _three(store_url) as store:
        _delete_run(store_url, "r3")
        report = store.verify()
        assert (
            not report.ok and report.seq == 3 and "newest run(s) #3 were removed" in report.problem
        )


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from records import make_run
    from restoredrill.flows.evidence import EvidenceStore
    url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = EvidenceStore(url)
    while not go.exists():
        time.sleep(0.01)
    for i in range({n}):
        store.record(make_run(f"{{name}}-{{i}}", offset_h=i))
    print("done")
    """
)


def test_concurrent_writers_keep_one_chain(store_url: str, tmp_path: Path) -> None:
    n = 25
    EvidenceStore(store_url).close()  # schema exists; the writers race only on appends
    go = tmp_path / "go"
    code = WRITER.format(tests=str(Path(__file__).parent), n=n)
    writers = [
        subprocess.Popen([sys.executable, "-c", code, store_url, name, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]  # fmt: skip
    go.touch()
    outputs = [w.communicate(timeout=300) for w in writers]
    for w, (out, err) in zip(writers, outputs, strict=True):
        assert w.returncode == 0 and "done" in out, err
    with EvidenceStore(store_url) as store:
        report = store.verify()
        assert report.ok and report.runs == 2 * n, report
        ids = [r.run_id for r in store.runs(None)]
        assert sorted(ids) == sorted(f"{w}-{i}" for w in "ab" for i in range(n))


def test_fresh_schema_race(store_url: str, tmp_path: Path) -> None:
    """Two processes opening a new store at once both succeed (one creates the tables)."""
    go = tmp_path / "go"
    code = WRITER.format(tests=str(Path(__file__).parent), n=3)
    writers = [
        subprocess.Popen([sys.executable, "-c", code, store_url, name, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]  # fmt: skip
    go.touch()
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    with EvidenceStore(store_url) as store:
        assert store.verify().ok and store.count() == 6


# --------------------------------------------------------------------------- errors


def _open_as_nobody(url: str) -> str:
    """Open the store in a child process without root's power to ignore permissions."""

    def child(conn) -> None:  # type: ignore[no-untyped-def]
        os.setgid(65534)
        os.setuid(65534)
        try:
            EvidenceStore(url).record(make_run("r1"))
            conn.send("no error")
        except EvidenceError as exc:
            conn.send(f"EvidenceError: {exc}")
        except BaseException as exc:  # noqa: BLE001 - report what escaped
            conn.send(f"{type(exc).__name__}: {exc}")

    ctx = multiprocessing.get_context("fork")
    parent, kid = ctx.Pipe()
    proc = ctx.Process(target=child, args=(kid,))
    proc.start()
    message = parent.recv()
    proc.join()
    return message


def test_read_only_directory(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="restoredrill-ro-"))
    try:
        os.chmod(root, 0o755)
        site = root / "site"
        site.mkdir(mode=0o555)
        os.chmod(site, 0o555)
        url = f"sqlite:///{site / 'evidence.db'}"
        if os.geteuid() == 0:
            message = _open_as_nobody(url)
        else:
            try:
                EvidenceStore(url)
                message = "no error"
            except EvidenceError as exc:
                message = f"EvidenceError: {exc}"
        assert message.startswith("EvidenceError: "), message
        assert url in message and str(site) in message and "writ" in message
        assert "Traceback" not in message
    finally:
        os.chmod(root / "site", 0o755)
        for p in (root / "site").iterdir():
            p.unlink()
        (root / "site").rmdir()
        root.rmdir()


def test_path_under_a_file_is_clear(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EvidenceError, match=r"cannot create the evidence directory .*afile"):
        default_url(tmp_path / "afile" / "site.yaml")
    with pytest.raises(EvidenceError, match="cannot create its tables.*writ"):
        EvidenceStore(f"sqlite:///{tmp_path / 'afile' / 'evidence.db'}")


def test_default_url_creates_directory(tmp_path: Path) -> None:
    site = tmp_path / "plant" / "site.yaml"
    site.parent.mkdir()
    url = default_url(site)
    assert url == f"sqlite:///{site.parent / '.restoredrill' / 'evidence.db'}"
    assert (site.parent / ".restoredrill").is_dir()
    with EvidenceStore(url) as store:
        store.record(make_run("r1"))
        assert store.verify().ok


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://root@127.0.0.1/evidence", "'mysql' is not supported"),
        ("nosuch+driver://x@127.0.0.1/db", "not supported"),
    ],
)
def test_bad_urls(url: str, words: str) -> None:
    with pytest.raises(EvidenceError, match=words):
        EvidenceStore(url)


def test_unreachable_server_masks_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://restoredrill:TopSecret99@127.0.0.1:{port}/evidence"
    with pytest.raises(EvidenceError) as info:
        EvidenceStore(url)
    message = str(info.value)
    assert "TopSecret99" not in message
    assert f"postgresql+psycopg://restoredrill:***@127.0.0.1:{port}/evidence" in message
    assert "running and reachable" in message
