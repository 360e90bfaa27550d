"""A run whose evidence cannot be written loses nothing: real `restoredrill run`s of a small
site against a read-only database file, a read-only directory, a locked database, a damaged
file and an unreachable PostgreSQL still print their table or JSON, spool the record, exit 3,
and the next run against the repaired store (or `evidence import`) appends both in order."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from localservers import Hooks
from pg import pg_server, pg_url  # noqa: F401 - fixtures

from restoredrill.flows.evidence import EvidenceStore, default_url

SUBNETS = {"ro-file": 1, "ro-dir": 2, "locked": 3, "damaged": 4, "pg-down": 5}
"""Each mode's sandbox subnet: 10.170.N.0/24 (this branch's range)."""


@pytest.fixture(scope="module")
def web_backup(tmp_path_factory, docker_client) -> Path:
    """A 2 MB busybox root filesystem serving /www/data.json, as a plain tarball."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox-static is needed (apt-get install busybox-static)")
    tmp = tmp_path_factory.mktemp("web")
    root = tmp / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "www").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "www" / "data.json").write_text('{"size": 141312.0, "name": "web"}')
    out = tmp / "web-1.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(root, arcname=".")
    return out


def write_site(
    folder: Path, backup: Path, mode: str, evidence: str | None, extra: str = ""
) -> Path:
    """One system: restore the busybox tarball, serve HTTP, check a whole-number float."""
    n = SUBNETS[mode]
    site = folder / "site.yaml"
    site.write_text(
        f"site: c-evidence-{mode}\n"
        f"sandbox: {{subnets: [10.170.{n}.0/24]}}\n"
        + (f"evidence: {evidence}\n" if evidence else "")
        + extra
        + f"""systems:
  - name: web
    backup: {{kind: rootfs_tar, path: {backup}}}
    run: {{address: 10.170.{n}.10, command: [/bin/busybox, httpd, -f, -p, "8080", -h, /www]}}
    ready: {{kind: tcp, port: 8080, timeout: 30s}}
    checks:
      - {{kind: http, port: 8080, path: /data.json, json: {{size: 141312.0, name: web}}}}
    rto: 5m
"""
    )
    return site


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """The user's config and state directories, for last-evidence and the spool fallback."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    return env


def restoredrill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1", "COLUMNS": "200",
             # a loaded machine can take longer than Prefect's 20 s to start its server
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **env},
    )  # fmt: skip


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make ``path`` read-only even for root (chattr +i), as chmod does for anyone else."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


def default_path(site: Path) -> Path:
    return site.parent / ".restoredrill" / "evidence.db"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain(url: str) -> list[str]:
    """Run ids of the store, oldest first, after checking the chain verifies."""
    with EvidenceStore.reader(url) as store:
        report = store.verify()
        assert report.ok, report
        return [r.run_id for r in reversed(store.runs(None))]


def first_run(
    site: Path, env: dict[str, str], as_json: bool, verdict: str = "pass"
) -> tuple[str, Path]:
    """The run whose evidence cannot be written: its output, exit 3, the spool file."""
    proc = restoredrill("run", str(site), *(["--json"] if as_json else []), env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "the run's evidence was not recorded" in message
    if as_json:
        record = json.loads(proc.stdout)
        assert record["systems"][0]["verdict"] == verdict
        checks = record["systems"][0]["checks"]
        assert [c["observed"] for c in checks if c["expected"] == 141312.0] == [141312.0]
        assert record["evidence"]["recorded"] is False
        run_id, spooled = record["run_id"], Path(record["evidence"]["spooled_to"])
    else:
        assert "web" in proc.stdout and "pass" in proc.stdout  # the table
        spooled = Path(message.split("the run was spooled to ")[1].split()[0])
        run_id = spooled.stem
    assert f"the run was spooled to {spooled}" in message
    assert spooled.is_file() and json.loads(spooled.read_text())["record"]["run_id"] == run_id
    return run_id, spooled


def second_run(site: Path, env: dict[str, str], spooled_id: str, code: int = 0) -> str:
    """The next run, against the repaired store: it appends the spooled run, then itself."""
    proc = restoredrill("run", str(site), "--json", env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "appended 1 run(s) spooled earlier to" in proc.stderr and spooled_id in proc.stderr
    record = json.loads(proc.stdout)
    assert record["evidence"] == {"store": record["evidence"]["store"], "recorded": True,
                                  "spooled_to": None, "error": None}  # fmt: skip
    return record["run_id"]


def test_read_only_database_file(tmp_path: Path, web_backup: Path, home: dict[str, str]) -> None:
    site = write_site(tmp_path, web_backup, "ro-file", None)
    url = default_url(site)
    EvidenceStore(url).close()
    with immutable(default_path(site)):
        run_id, spooled = first_run(site, home, as_json=False)
    assert spooled.parent == tmp_path / ".restoredrill" / "spool"
    second = second_run(site, home, run_id)
    assert chain(url) == [run_id, second] and not spooled.exists()


def test_read_only_directory(tmp_path: Path, web_backup: Path, home: dict[str, str]) -> None:
    """The spool falls back to the user's state directory; `evidence import` takes it."""
    site = write_site(tmp_path, web_backup, "ro-dir", None)
    url = default_url(site)
    EvidenceStore(url).close()
    with immutable(default_path(site).parent):
        run_id, spooled = first_run(site, home, as_json=True)
    assert spooled.parent == Path(home["XDG_STATE_HOME"]) / "restoredrill" / "spool"
    imported = restoredrill("evidence", "import", "--site", str(site), "--spool", env=home)
    assert imported.returncode == 0, imported.stderr
    assert f"imported run {run_id}" in imported.stdout and not spooled.exists()
    again = restoredrill("evidence", "import", "--site", str(site), "--spool", env=home)
    assert again.returncode == 0 and "0 run(s) imported" in again.stdout  # nothing twice
    proc = restoredrill("run", str(site), "--json", env=home)
    assert proc.returncode == 0, proc.stderr
    assert chain(url) == [run_id, json.loads(proc.stdout)["run_id"]]


def test_locked_database(tmp_path: Path, web_backup: Path, home: dict[str, str]) -> None:
    path = tmp_path / "evidence.db"
    url = f"sqlite:///{path}?timeout=1"
    site = write_site(tmp_path, web_backup, "locked", url)
    EvidenceStore(url).close()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another program, in the middle of a long write
        run_id, spooled = first_run(site, home, as_json=False)
    finally:
        holder.close()
    assert spooled.parent == tmp_path / ".restoredrill" / "spool"
    second = second_run(site, home, run_id)
    assert chain(url) == [run_id, second]


def test_damaged_database(
    tmp_path: Path, web_backup: Path, home: dict[str, str], webhook: tuple[Hooks, int]
) -> None:
    """Also: a system fails, so the alert goes out, and 3 wins over 1; the next run knows
    the spooled run's verdict (fail → fail: no second alert)."""
    hooks, port = webhook
    wrong = "      - {kind: http, port: 8080, path: /data.json, json: {name: somebody-else}}\n"
    site = write_site(
        tmp_path,
        web_backup,
        "damaged",
        None,
        f"alerts: [{{url: 'json://127.0.0.1:{port}/hook'}}]\n",
    )
    site.write_text(site.read_text().replace("    rto: 5m\n", wrong + "    rto: 5m\n"))
    damaged = default_path(site)
    damaged.parent.mkdir()
    damaged.write_bytes(b"\x00garbage, not SQLite\n" * 500)
    run_id, spooled = first_run(site, home, as_json=True, verdict="fail")
    assert spooled.parent == tmp_path / ".restoredrill" / "spool"
    assert len(hooks.posts) == 1 and "web FAIL" in hooks.posts[0][1]["title"]
    assert json.loads(spooled.read_text())["deliveries"][0]["ok"] is True
    damaged.rename(damaged.with_name("evidence.db.damaged"))  # as the error message says
    second = second_run(site, home, run_id, code=1)
    assert chain(f"sqlite:///{damaged}") == [run_id, second]
    assert len(hooks.posts) == 1
    with EvidenceStore.reader(f"sqlite:///{damaged}") as store:
        assert store.deliveries(run_id)[0]["ok"] is True  # imported with its run


def test_unreachable_postgresql(
    tmp_path: Path, web_backup: Path, home: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """Also: the password never reaches the output, the spool file or last-evidence."""
    live = request.getfixturevalue("pg_url")
    password = live.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    down = f"postgresql://restoredrill:{password or 'TopSecret'}@127.0.0.1:{closed_port()}/gone"
    site = write_site(tmp_path, web_backup, "pg-down", down)
    proc = restoredrill("run", str(site), "--json", env=home)
    assert proc.returncode == 3, proc.stderr
    secret = f":{password or 'TopSecret'}@"
    assert secret not in proc.stdout + proc.stderr
    spooled = Path(json.loads(proc.stdout)["evidence"]["spooled_to"])
    run_id = spooled.stem
    assert spooled.parent == tmp_path / ".restoredrill" / "spool"
    assert secret not in spooled.read_text()
    last = Path(home["XDG_CONFIG_HOME"]) / "restoredrill" / "last-evidence"
    assert json.loads(last.read_text()) == {"site": str(site.resolve())}
    site.write_text(site.read_text().replace(down, live))  # the store is back (moved)
    second = second_run(site, home, run_id)
    assert chain(live) == [run_id, second]
    assert secret not in last.read_text()
    history = restoredrill("history", "--json", env=home)  # finds the store through last-evidence
    assert history.returncode == 0, history.stderr
    assert [r["run_id"] for r in json.loads(history.stdout)] == [second, run_id]
