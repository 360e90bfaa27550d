"""Spool files and `restoredrill evidence import` on a real SQLite store (no Docker needed):
oldest first, never twice, a bad file reported and kept; last-evidence holds no password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from test_evidence_canonical import a_run

from restoredrill.flows import spool
from restoredrill.flows.evidence import EvidenceError, EvidenceStore, default_url, shown_url


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "plant" / "site.yaml"
    path.parent.mkdir()
    path.write_text(
        "site: plant\nsystems:\n  - name: historian\n"
        "    backup: {kind: image_archive, path: backups/h.tar}\n    rto: 5m\n"
    )
    return path


def restoredrill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env},
    )  # fmt: skip


def spooled(site: Path, run_id: str, hours: int) -> Path:
    run = a_run(run_id, [("", 141312.0, [float("nan"), -0.0, "a\x00\ud800"])])
    run.started_at += timedelta(hours=hours)
    return spool.write(
        run,
        [{"target": "json://127.0.0.1:9/…", "systems": ["historian"], "ok": False, "reason": "x"}],
        site_path=site,
        evidence=shown_url(None, site),
        reason="database is locked",
    )


def test_import_appends_oldest_first_and_never_twice(site: Path, env: dict[str, str]) -> None:
    with EvidenceStore(default_url(site)) as store:
        store.record(a_run("earlier", [("", 1, 1)]))
    newer, older = spooled(site, "r-newer", 5), spooled(site, "r-older", 1)
    assert newer.parent == site.parent / ".restoredrill" / "spool"
    proc = restoredrill("evidence", "import", "--site", str(site), "--spool", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.index("r-older") < proc.stdout.index("r-newer")
    assert not newer.exists() and not older.exists()
    with EvidenceStore.reader(default_url(site)) as store:
        assert [r.run_id for r in store.runs(None)] == ["r-newer", "r-older", "earlier"]
        assert store.verify().ok
        assert store.deliveries("r-older")[0]["reason"] == "x"
        loaded = store.load("r-older").systems[0].checks[0]
        assert loaded.observed == ["NaN", -0.0, "a\x00\ud800"] and loaded.expected == 141312.0
    again = spooled(site, "r-older", 1)  # the same run spooled again (say, a retry)
    proc = restoredrill("evidence", "import", str(again), "--site", str(site), env=env)
    assert proc.returncode == 0 and "already in the chain" in proc.stdout and not again.exists()


def test_bad_files_are_reported_and_kept(site: Path, env: dict[str, str]) -> None:
    folder = spool.site_dir(site)
    folder.mkdir(parents=True)
    broken = folder / "r-broken.json"
    broken.write_text('{"format": "restoredrill-spool/1", "record": {"run_id": ')
    edited = spooled(site, "r-edited", 1)
    edited.write_text(edited.read_text().replace("141312.0", "141313.0"))
    good = spooled(site, "r-good", 2)
    proc = restoredrill("evidence", "import", "--site", str(site), "--spool", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "imported run r-good" in proc.stdout and not good.exists()
    stderr = " ".join(proc.stderr.split())
    assert f"kept {broken}: {broken}: not a spool file (not JSON" in stderr
    assert f"{edited}: the run record was changed after it was spooled" in stderr
    assert broken.exists() and edited.exists() and "Traceback" not in proc.stderr
    other = spooled(site, "r-good", 3)  # a different record under a run id already recorded
    proc = restoredrill("evidence", "import", str(other), "--site", str(site), env=env)
    assert proc.returncode == 1 and "a different record of run r-good" in proc.stderr
    assert other.exists()


def test_spool_falls_back_then_says_when_it_cannot(site: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    spool.site_dir(site).parent.mkdir()
    spool.site_dir(site).write_text("a file where the spool directory should be")
    path = spooled(site, "r1", 0)
    assert path == tmp_path / "state" / "restoredrill" / "spool" / "r1.json"
    assert spool.pending(site) == [path]
    assert spool.pending(tmp_path / "elsewhere" / "site.yaml") == []  # another site's
    monkeypatch.setenv("XDG_STATE_HOME", str(path))  # a file too
    problem = EvidenceError("evidence database sqlite:///x: cannot record run r2: disk I/O error")
    spooled_run = spool.spool_run(a_run("r2", [("", 1, 1)]), [], site_path=site,
                                  evidence="sqlite:///x", problem=problem)  # fmt: skip
    assert spooled_run.path is None
    assert "cannot spool run r2" in str(spooled_run) and "only copy" in str(spooled_run)


def test_last_evidence_holds_no_password(tmp_path: Path, env: dict[str, str]) -> None:
    """An older version kept the URL with its password: it is used once, then rewritten."""
    db = tmp_path / "evidence.db"
    EvidenceStore(f"sqlite:///{db}").close()
    last = Path(env["XDG_CONFIG_HOME"]) / "restoredrill" / "last-evidence"
    last.parent.mkdir(parents=True)
    last.write_text("postgresql://ops:TopSecret99@127.0.0.1:1/evidence\n")
    restoredrill("history", env=env)  # that server is not there: the point is the file
    assert "TopSecret99" not in last.read_text()
    assert json.loads(last.read_text()) == {"url": "postgresql://ops@127.0.0.1:1/evidence"}
    assert oct(last.stat().st_mode & 0o777) == "0o600"
    last.write_text(f"sqlite:///{db}")
    proc = restoredrill("history", env=env)
    assert proc.returncode == 0 and "no runs recorded yet" in proc.stdout, proc.stderr
