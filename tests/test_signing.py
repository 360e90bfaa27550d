"""Signed evidence on real SQLite and PostgreSQL: each run signed with its chain hash,
keys announced in the chain (rotation signed by the old key), a pruned chain standing on
a signed checkpoint; every edit, removed signature or foreign key is named."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from evidence_data import a_run, fill
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from sqlalchemy import create_engine

from restoredrill.flows import chain
from restoredrill.flows.evidence import EvidenceStore, normalize_url
from restoredrill.flows.retention import prune
from restoredrill.flows.signing import SigningError, keygen, load_public, load_signer, public_path

DATA = Path(__file__).parent / "data"
NOW = datetime.now(UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def keys(tmp_path: Path):
    return keygen(tmp_path / "keys" / "site.key"), keygen(tmp_path / "keys" / "next.key")


def raw(url: str, sql: str) -> None:
    """Change the database behind the store's back (statements split at ``;``)."""
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        for statement in sql.split(";"):
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_keygen_writes_an_openssl_readable_pair(tmp_path: Path) -> None:
    signer = keygen(tmp_path / "site.key")
    assert stat.S_IMODE((tmp_path / "site.key").stat().st_mode) == 0o600
    assert public_path(tmp_path / "site.key") == tmp_path / "site.pub"
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "site.pub"), "-outform", "DER"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    import hashlib

    assert hashlib.sha256(der).hexdigest() == signer.keyid
    assert load_public(tmp_path / "site.pub").keyid == signer.keyid
    with pytest.raises(SigningError, match="exists"):
        keygen(tmp_path / "site.key")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "No such file"),
        (b"garbage", "not a PEM private key"),
        ("pub", "that is a public key"),
    ],
)
def test_a_bad_key_file_is_named(tmp_path: Path, content: bytes | str | None, words: str) -> None:
    path = tmp_path / "site.key"
    if content == "pub":
        keygen(tmp_path / "other.key")
        path = tmp_path / "other.pub"
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SigningError) as info:
        load_signer(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_signed_runs_verify_and_the_key_is_announced(store_url: str, keys) -> None:
    site_key, _ = keys
    with EvidenceStore(store_url) as store:
        store.record(a_run(9, NOW, prefix="before"))  # recorded before signing began
        store.signer = site_key
        fill(store, days=3, now=NOW)
        report = store.verify()
        assert report.ok, report
        assert (report.runs, report.signed, report.unsigned) == (4, 3, 1)
        assert report.keyid == site_key.keyid and report.keys == (site_key.keyid,)
        assert store.verify(key=site_key.public).ok
        with store._read() as conn:
            state = chain.key_state(conn)
        assert state is not None and state.keyid == site_key.keyid and state.since == 2


def test_a_signed_chain_takes_only_its_own_key(store_url: str, keys) -> None:
    site_key, other = keys
    with EvidenceStore(store_url, signer=site_key) as store:
        fill(store, days=1, now=NOW)
        store.signer = None
        with pytest.raises(SigningError, match="signed by key .* give that key"):
            store.record(a_run(5, NOW, prefix="unsigned"))
        store.signer = other
        with pytest.raises(SigningError, match="is not the chain's key"):
            store.record(a_run(5, NOW, prefix="foreign"))
        assert store.count() == 1 and store.verify().ok


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("UPDATE signatures SET sig = 'AAAA' || substr(sig, 5) WHERE seq = 3", "signature by key"),
        ("DELETE FROM signatures WHERE seq = 3", "is not signed by the chain's key"),
        ("UPDATE chain_events SET body = replace(body, '\"kind\"', '\"kind\" ') WHERE seq = 1",
         "key announcement #1 was altered"),
    ],
    ids=["signature-edited", "signature-removed", "announcement-edited"],
)  # fmt: skip
def test_signature_tampering_is_named(store_url: str, keys, sql: str, words: str) -> None:
    with EvidenceStore(store_url, signer=keys[0]) as store:
        fill(store, days=3, now=NOW)
        raw(store_url, sql)
        report = store.verify()
        assert not report.ok and words in report.problem, report


def test_a_rewritten_chain_fails_against_the_pinned_key(store_url: str, keys) -> None:
    """Whoever owns the database can rewrite an unsigned chain whole; the key shows it."""
    site_key, forger = keys
    with EvidenceStore(store_url, signer=site_key) as store:
        fill(store, days=2, now=NOW)
    forged_url = store_url + ("-forged" if store_url.startswith("sqlite") else "")
    if store_url.startswith("sqlite"):  # the forger re-records everything with his own key
        forged_url = store_url.replace("evidence.db", "forged.db")
    else:
        raw(store_url, "DELETE FROM signatures; DELETE FROM chain_events; DELETE FROM check_results; "
            "DELETE FROM steps; DELETE FROM system_results; DELETE FROM runs; "
            "UPDATE chain_head SET seq = 0, hash = repeat('0', 64)")  # fmt: skip
    with EvidenceStore(forged_url, signer=forger) as forged:
        fill(forged, days=2, now=NOW)
        assert forged.verify().ok
        report = forged.verify(key=site_key.public)
        assert not report.ok and "not signed by key" in report.problem


def test_rotation_is_announced_and_signed_by_the_old_key(store_url: str, keys) -> None:
    old, new = keys
    with EvidenceStore(store_url, signer=old) as store:
        fill(store, days=2, now=NOW)
        with (
            store._write() as conn,
            pytest.raises(SigningError, match="must be announced by the chain's key"),
        ):
            chain.rotate(conn, store.shown, None, new)
        with store._write() as conn:
            seq = chain.rotate(conn, store.shown, old, new)
        with store._read() as conn:
            sigs = chain.signatures(conn)[seq]
        assert set(sigs) == {old.keyid, new.keyid}  # the old key vouches, the new one proves itself
        store.signer = new
        store.record(a_run(1, NOW + timedelta(days=1), prefix="after"))
        report = store.verify()
        assert report.ok and report.keys == (old.keyid, new.keyid) and report.keyid == new.keyid
        assert store.verify(key=old.public).ok and store.verify(key=new.public).ok
        raw(store_url, f"DELETE FROM signatures WHERE seq = {seq} AND keyid = '{old.keyid}'")
        report = store.verify()
        assert not report.ok and f"key announcement #{seq}" in report.problem


def test_prune_leaves_a_signed_checkpoint(store_url: str, keys) -> None:
    site_key, new = keys
    with EvidenceStore(store_url, signer=site_key) as store:
        fill(store, days=6, now=NOW)
        with store._write() as conn:
            chain.rotate(conn, store.shown, site_key, new)
        store.signer = new
        with pytest.raises(SigningError, match="signed by the site key"):
            prune(store, None, timedelta(days=3))
        assert prune(store, new, timedelta(days=3, hours=1), dry_run=True).runs == 3
        assert store.count() == 6
        done = prune(store, new, timedelta(days=3, hours=1))
        assert (done.runs, done.first_run, done.last_run) == (3, "run-006", "run-004")
        assert store.count() == 3
        report = store.verify()
        assert report.ok and report.pruned == 3 and report.runs == 3, report
        assert store.verify(key=site_key.public).ok  # the pruned rotation is kept by the checkpoint
        store.record(a_run(0, NOW + timedelta(hours=1), prefix="later"))
        assert prune(store, new, timedelta(days=2, hours=1)).runs == 1  # a second cut
        report = store.verify()
        assert report.ok and report.pruned == 4 and report.runs == 3, report
        raw(store_url, "UPDATE chain_events SET body = replace(body, '\"pruned_runs\":1', "
            "'\"pruned_runs\":0') WHERE kind = 'checkpoint'")  # fmt: skip
        report = store.verify()
        assert not report.ok and "checkpoint" in report.problem and "altered" in report.problem


def test_nothing_is_pruned_from_a_broken_chain(store_url: str, keys) -> None:
    with EvidenceStore(store_url, signer=keys[0]) as store:
        fill(store, days=4, now=NOW)
        raw(store_url, "UPDATE system_results SET verdict = 'pass' WHERE verdict = 'fail'")
        with pytest.raises(Exception, match="nothing pruned: the chain does not verify.*run-003"):
            prune(store, keys[0], timedelta(days=1))
        assert store.count() == 4


@pytest.mark.parametrize("name", ["evidence-0.1.0.sqlite"])
def test_a_0_1_store_is_signed_from_now_on(tmp_path: Path, keys, name: str) -> None:
    path = tmp_path / "evidence.db"
    path.write_bytes((DATA / name).read_bytes())
    url = f"sqlite:///{path}"
    with EvidenceStore.reader(url) as auditor:
        assert auditor.verify().ok
    with EvidenceStore(url, signer=keys[0]) as store:
        store.record(a_run(1, NOW))
        report = store.verify()
        assert report.ok and (report.unsigned, report.signed) == (3, 1), report


def test_a_long_chain_is_checked_by_helper_processes(tmp_path: Path, keys, monkeypatch) -> None:
    """The helpers (python -m restoredrill.flows.chain_worker) give the same answers."""
    from restoredrill.flows import chain_rows

    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=keys[0]) as store:
        fill(store, days=12, now=NOW)
    monkeypatch.setattr(chain_rows, "PARALLEL_ABOVE", 0)
    monkeypatch.setenv("RESTOREDRILL_VERIFY_WORKERS", "2")
    with EvidenceStore.reader(url) as store:
        assert store.verify().ok
    raw(url, "UPDATE steps SET duration_s = 1.5 WHERE id = (SELECT max(id) FROM steps)")
    with EvidenceStore.reader(url) as store:
        report = store.verify()
        assert not report.ok and report.run_id == "run-001" and "altered" in report.problem
    assert not [p for p in _children() if "chain_worker" in p]


def _children() -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True
    )
    return out.stdout.splitlines()


def test_cli_keygen_rotate_and_verify(tmp_path: Path) -> None:
    from evidence_data import site_yaml

    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("RESTOREDRILL_SIGNING_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip

    made = cli("evidence", "keygen", "-o", str(tmp_path / "site.key"))
    assert made.returncode == 0 and "SHA256:" in made.stdout, made.stderr
    again = cli("evidence", "keygen", "-o", str(tmp_path / "site.key"))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    site = site_yaml(tmp_path, url, tmp_path / "site.key")
    with EvidenceStore(url, signer=load_signer(tmp_path / "site.key")) as store:
        fill(store, days=2, now=NOW)
    assert cli("evidence", "keygen", "-o", str(tmp_path / "next.key")).returncode == 0
    rotated = cli("evidence", "rotate", str(tmp_path / "next.key"), "--site", str(site))
    assert rotated.returncode == 0 and "announced at #4" in rotated.stdout, rotated.stderr
    ok = cli("evidence", "verify", "--site", str(site), "--key", str(tmp_path / "site.pub"))
    assert ok.returncode == 0 and "signed: 2 runs" in ok.stdout, ok.stdout + ok.stderr
    stranger = keygen(tmp_path / "stranger.key")
    bad = cli(
        "evidence", "verify", "--site", str(site), "--key", str(public_path(Path(stranger.path)))
    )
    assert bad.returncode == 1 and "not signed by key" in bad.stderr
    missing = cli("evidence", "verify", "--site", str(site), "--key", str(tmp_path / "nope.pub"))
    assert (
        missing.returncode == 2
        and "nope.pub" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_a_key_this_user_cannot_read_is_named(tmp_path: Path) -> None:
    """As a user without the right to read the key file (root would ignore the mode)."""
    import multiprocessing

    keygen(tmp_path / "site.key")  # mode 0600, owned by this user
    os.chmod(tmp_path, 0o755)

    def child(conn) -> None:  # type: ignore[no-untyped-def]
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        else:
            os.chmod(tmp_path / "site.key", 0)
        try:
            load_signer(tmp_path / "site.key", "signing_key in the site file")
            conn.send("no error")
        except SigningError as exc:
            conn.send(f"SigningError: {exc}")
        except BaseException as exc:  # noqa: BLE001 - report what escaped
            conn.send(f"{type(exc).__name__}: {exc}")

    ctx = multiprocessing.get_context("fork")
    parent, kid = ctx.Pipe()
    proc = ctx.Process(target=child, args=(kid,))
    proc.start()
    message = parent.recv()
    proc.join()
    assert message.startswith("SigningError: ") and "Permission denied" in message, message
    assert str(tmp_path / "site.key") in message and "signing_key in the site file" in message
