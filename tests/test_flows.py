"""A whole site verified end to end on the real Docker engine, through the CLI and the flows."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from restoredrill.flows.results import Verdict

APP = """\
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "name": os.environ.get("NAME", "?")}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
print("serving", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def plant(tmp_path_factory, docker_client, base_image, unique_tag) -> Path:
    """A small plant's backups: one good image archive, one truncated copy of it."""
    from restoredrill.twins.images import build_image

    root = tmp_path_factory.mktemp("plant")
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "app.py").write_text(APP)
    (ctx / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nCOPY app.py /opt/app.py\nCMD ["python3", "/opt/app.py"]\n'
    )
    tag = unique_tag("app")
    build_image(docker_client, ctx, tag, base=base_image, labels={"restoredrill.test": "1"})
    backups = root / "backups"
    backups.mkdir()
    good = backups / "app-1.tar"
    with good.open("wb") as fh:
        for chunk in docker_client.images.get(tag).save(named=True):
            fh.write(chunk)
    docker_client.images.remove(tag, force=True)
    broken = backups / "broken-1.tar"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return root


def site_file(
    root: Path, name: str, body: str, subnet: str, head: str = "", watchdog: float = 3
) -> Path:
    """``body``'s systems on ``subnet`` (its ``NET.10`` is the subnet's .10), with evidence
    beside the file."""
    net = subnet.rsplit(".", 1)[0] + "."
    path = root / f"{name}.yaml"
    path.write_text(
        f"site: {name}\nsandbox: {{subnets: [{subnet}], concurrency: 2, watchdog: {watchdog}}}\n"
        f"{head}"
        f"evidence: sqlite:///{root}/{name}-evidence.db\n"
        + textwrap.dedent(body).replace("NET.", net)
    )
    return path


SITE = """\
systems:
  - name: db
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.10, env: {NAME: db}}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks:
      - {kind: http, port: 8080, json: {status: ok, name: db}}
      - {kind: host, file: /opt/app.py, contains: ThreadingHTTPServer}
    rto: 5m
  - name: app
    depends_on: [db]
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.20, env: {NAME: app}}
    ready: {kind: log, contains: serving, timeout: 30s}
    checks:
      - {kind: http, name: reaches db, url: "http://NET.10:8080/", json: {name: db}}
      - {kind: http, name: wrong name, port: 8080, json: {name: somebody-else}}
    rto: 5m
  - name: erp
    backup: {kind: image_archive, path: backups/broken-1.tar}
    ready: {kind: tcp, port: 8080, timeout: 10s}
    rto: 5m
  - name: reports
    depends_on: [erp]
    backup: {kind: image_archive, path: backups/app-1.tar}
    rto: 5m
"""


def restoredrill(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def leftovers(docker_client, run_id: str) -> list[str]:
    """What is left of a run: labelled Docker objects, firewall rules, scratch folders."""
    from restoredrill.twins import firewall, scratch

    label = f"restoredrill.run={run_id}"
    found = [c.name for c in docker_client.containers.list(all=True, filters={"label": label})]
    found += [n.name for n in docker_client.networks.list(filters={"label": label})]
    found += [str(i.tags) for i in docker_client.images.list(filters={"label": label})]
    found += [" ".join(r.args) for r in firewall.run_rules(run_id)]
    found += [str(p) for p in scratch.folders(run_id)]
    return found


def test_site_run_pass_fail_error_blocked_with_evidence(
    plant: Path, docker_client, free_subnet
) -> None:
    site = site_file(plant, "mixed", SITE, free_subnet())
    proc = restoredrill("run", str(site), "--json")
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    by = {s["system"]: s for s in record["systems"]}
    assert by["db"]["verdict"] == "pass", by["db"]
    assert by["db"]["recovery_time_s"] > 0
    assert [st["name"] for st in by["db"]["steps"]] == [
        "locate",
        "restore",
        "start",
        "ready",
        "checks",
        "teardown",
    ]
    assert by["db"]["backup"]["sha256"] and by["db"]["backup"]["backup_id"] == "app-1.tar"
    # app ran while db was still up (a dependency stays running for its dependents)
    assert by["app"]["verdict"] == "fail"
    reach = [c for c in by["app"]["checks"] if c["name"].startswith("reaches db")]
    assert reach and all(c["status"] == "pass" for c in reach)
    wrong = [c for c in by["app"]["checks"] if c["status"] == "fail"]
    assert len(wrong) == 1
    assert (wrong[0]["expected"], wrong[0]["observed"]) == ("somebody-else", "app")
    assert by["erp"]["verdict"] == "error"
    assert "restore" in by["erp"]["reason"] and "truncated" in by["erp"]["reason"]
    assert by["reports"]["verdict"] == "blocked"
    assert "erp (error)" in by["reports"]["reason"]
    assert leftovers(docker_client, record["run_id"]) == []
    hist = restoredrill("history", "--site", str(site), "--json")
    assert hist.returncode == 0, hist.stderr
    runs = json.loads(hist.stdout)
    assert runs[0]["run_id"] == record["run_id"]
    table = restoredrill("history", "db", "--site", str(site))
    assert record["run_id"] in table.stdout and "pass" in table.stdout


def test_only_named_system_and_its_dependencies_run(plant: Path, free_subnet) -> None:
    site = site_file(plant, "subset", SITE, free_subnet())
    proc = restoredrill("run", str(site), "--json", "--system", "db")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert [s["system"] for s in record["systems"]] == ["db"]
    assert record["verdict"] == "pass"


def test_rto_exceeded_and_watchdog(plant: Path, docker_client, free_subnet) -> None:
    from restoredrill.flows.verify import verify_site

    slow = """\
    systems:
      - name: slow
        backup: {kind: image_archive, path: backups/app-1.tar}
        run: {address: NET.30}
        ready: {kind: http, port: 8080, timeout: 30s}
        checks: [{kind: tcp, port: 8080}]
        rto: 10ms
      - name: hung
        backup: {kind: image_archive, path: backups/app-1.tar}
        run: {address: NET.31, command: [sleep, "600"]}
        ready: {kind: tcp, port: 8080, timeout: 5m}
        rto: 3s
    """
    subnet = free_subnet()
    site = site_file(plant, "slow", slow, subnet, watchdog=100_000)  # out of a 10 ms RTO's way
    record = verify_site(str(site), ["slow"])
    [slow_one] = record.systems
    assert slow_one.verdict is Verdict.RTO_EXCEEDED
    assert re.fullmatch(r"recovered in \d+\.\ds, RTO is 0s", slow_one.reason), slow_one.reason
    assert slow_one.recovery_time_s > slow_one.rto_s and not slow_one.near_miss
    # the hung one would wait 5 minutes for its port: the watchdog (1 x RTO) stops it
    site = site_file(plant, "slow", slow, subnet, watchdog=1)
    record = verify_site(str(site), ["hung"])
    [hung] = record.systems
    assert hung.verdict is Verdict.RTO_EXCEEDED
    stopped = re.fullmatch(
        r"stopped by the watchdog after 3s \(1x RTO\) in step (\w+)", hung.reason
    )
    assert stopped, hung.reason
    names = [st.name for st in hung.steps]
    assert names[-1] == "teardown" and hung.steps[-1].ok
    assert names[-2] == stopped.group(1)  # the step it names is the one it stopped
    assert all(st.ok for st in hung.steps[:-2])  # the steps before it had finished
    assert hung.recovery_time_s is None  # it never recovered
    assert not list(Path(tempfile.gettempdir()).glob(f"restoredrill-{record.run_id}-*"))
    assert leftovers(docker_client, record.run_id) == []


VERDICTS = """\
systems:
  - name: fresh
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.10}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: tcp, port: 8080}]
    rto: 5m
    rpo: 1h
  - name: stale
    backup: {kind: image_archive, path: backups/old/app-0.tar}
    run: {address: NET.11}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: tcp, port: 8080}]
    rto: 5m
    rpo: 1h
  - name: slowdb
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.12}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: tcp, port: 8080}]
    rto: 10ms
  - name: dependent
    depends_on: [slowdb]
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.13}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: http, name: reaches slowdb, url: "http://NET.12:8080/", json: {status: ok}}]
    rto: 5m
"""


def test_rpo_exceeded_and_a_slow_dependency_does_not_block(
    plant: Path, docker_client, free_subnet
) -> None:
    """A backup older than its RPO is ``rpo_exceeded``, a fresh one passes; a dependency
    past its RTO came back and works: its dependent runs (against it) and passes."""
    from restoredrill.flows.verify import verify_site

    old = plant / "backups" / "old" / "app-0.tar"
    old.parent.mkdir(exist_ok=True)
    shutil.copy(plant / "backups" / "app-1.tar", old)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    site = site_file(plant, "verdicts", VERDICTS, free_subnet(), watchdog=100_000)
    record = verify_site(str(site))
    by = {s.system: s for s in record.systems}
    assert by["fresh"].verdict is Verdict.PASS, by["fresh"].reason
    stale = by["stale"]
    assert stale.verdict is Verdict.RPO_EXCEEDED and stale.backup_age_s >= 7200
    assert stale.reason == f"newest backup is {stale.backup_age_s:.0f}s old, RPO is 3600s"
    assert by["slowdb"].verdict is Verdict.RTO_EXCEEDED
    assert by["dependent"].verdict is Verdict.PASS, by["dependent"].reason
    assert [c.status.value for c in by["dependent"].checks] == ["pass", "pass"]
    assert record.verdict is Verdict.RTO_EXCEEDED  # the worst: slow outranks old
    assert leftovers(docker_client, record.run_id) == []


CHAIN = """\
systems:
  - name: db
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.10}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: host, name: one second at least, command: sleep 1}]
    rto: 5m
  - name: app
    depends_on: [db]
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.20}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks: [{kind: host, name: one second at least, command: sleep 1}]
    rto: 5m
"""


@pytest.mark.parametrize(("site_rto", "verdict"), [("1s", "rto_exceeded"), ("1h", "pass")])
def test_site_rto_is_judged_on_the_critical_path(
    plant: Path, free_subnet, site_rto: str, verdict: str
) -> None:
    """Every system passes; the site's recovery time is db's then app's (app waits for
    db: 2 s at least), and the site is ``rto_exceeded`` only when that is past the site's
    own RTO."""
    from restoredrill.flows.verify import verify_site

    site = site_file(plant, f"chain-{site_rto}", CHAIN, free_subnet(), head=f"rto: {site_rto}\n")
    record = verify_site(str(site))
    db, app = record.systems
    assert (db.verdict, app.verdict) == (Verdict.PASS, Verdict.PASS)
    assert record.site_recovery_time_s == pytest.approx(db.recovery_time_s + app.recovery_time_s)
    assert record.site_rto_s == {"1s": 1, "1h": 3600}[site_rto]
    assert record.verdict.value == verdict


NEAR = """\
systems:
  - name: near
    backup: {kind: image_archive, path: backups/app-1.tar}
    run: {address: NET.10}
    ready: {kind: http, port: 8080, timeout: 30s}
    checks:
      - {kind: tcp, port: 8080}
      - {kind: host, name: busy, command: "sleep SLEEP", timeout: 600}
    rto: RTOs
"""


def test_near_miss_is_a_pass_close_to_the_rto(plant: Path, free_subnet) -> None:
    """A pass above 80% of the RTO is flagged; a quick one is not. The system's own time
    without the wait (``quick``) sets the wait (10x it, +10 s) and the RTO (the total
    / 0.9): a near miss whatever this machine's speed, unless the restore itself gets
    twice as slow between the two runs."""
    from restoredrill.flows.verify import verify_site

    quick_site = site_file(
        plant, "quick", NEAR.replace("SLEEP", "0").replace("RTO", "300"), free_subnet()
    )
    [quick] = verify_site(str(quick_site)).systems
    assert quick.verdict is Verdict.PASS and not quick.near_miss
    sleep = math.ceil(10 * quick.recovery_time_s + 10)
    rto = math.ceil((sleep + quick.recovery_time_s) / 0.9)
    body = NEAR.replace("SLEEP", str(sleep)).replace("RTO", str(rto))
    [near] = verify_site(str(site_file(plant, "near", body, free_subnet()))).systems
    assert near.verdict is Verdict.PASS, near.reason
    assert near.near_miss, (near.recovery_time_s, rto)


def test_bad_inputs_exit_2_with_clear_messages(tmp_path: Path) -> None:
    site = tmp_path / "bad.yaml"
    site.write_text(
        "site: x\nsystems:\n  - name: a\n    backup: {kind: restic}\n    rto: 15 mins\n"
    )
    proc = restoredrill("validate", str(site))
    assert proc.returncode == 2
    assert f'{site}:5: systems[0].rto: "15 mins" is not a duration' in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = restoredrill("run", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read the site file" in proc.stderr


def test_evidence_database_not_writable(plant: Path, tmp_path: Path, free_subnet) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the evidence directory should be")
    site = site_file(plant, "ro", SITE, free_subnet())
    site.write_text(
        site.read_text().replace(f"sqlite:///{plant}/ro-evidence.db", f"sqlite:///{blocker}/e.db")
    )
    proc = restoredrill("run", str(site), "--system", "db")
    assert proc.returncode == 3  # the run went on; its record was spooled
    assert "e.db" in proc.stderr and "Traceback" not in proc.stderr
    assert "db" in proc.stdout and "pass" in proc.stdout
    spooled = list((plant / ".restoredrill" / "spool").glob("*.json"))
    assert any(f"the run was spooled to {p}" in " ".join(proc.stderr.split()) for p in spooled)


def test_schema_command_prints_the_checked_in_schema() -> None:
    proc = restoredrill("schema")
    assert proc.returncode == 0
    checked = (Path(__file__).resolve().parents[1] / "config" / "site.schema.json").read_text()
    assert json.loads(proc.stdout) == json.loads(checked)
