"""`restoredrill serve`: a schedule fires, alerts reach a local webhook and SMTP server on
failure and on recovery, and the served verifications leave nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from localservers import SMTP_PASSWORD, Hooks, Mailbox
from test_flows import plant  # noqa: F401 - the module-scoped backups fixture

from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.inventory import load_site
from restoredrill.flows.results import Verdict
from restoredrill.flows.serve import plan

RESTOREDRILL = str(Path(sys.executable).parent / "restoredrill")

SITE = """\
site: served
schedule: "* * * * *"
sandbox: {{subnets: [{subnet}]}}
alerts:
  - name: ops mail
    url: "mailto://drill:${{ENV:SMTP_PASSWORD}}@127.0.0.1:{smtp}?smtp=127.0.0.1&mode=insecure&from=restoredrill@plant.example&to=ops@plant.example"
    on: [error, fail, rto_exceeded, recovered]
  - name: ops hook
    url: "json://127.0.0.1:{hook}/hooks"
systems:
  - name: app
    labels: {{zone: it, role: mes}}
    backup: {{kind: image_archive, directory: backups, pattern: "app-*.tar"}}
    ready: {{kind: http, port: 8080, timeout: 30s}}
    checks:
      - {{kind: http, port: 8080, json: {{status: ok}}}}
    rto: 5m
"""


def wait_for(hooks: Hooks, count: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while len(hooks.posts) < count:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"only {len(hooks.posts)} alerts in {timeout:.0f} s"
        time.sleep(0.5)


def test_plan_groups_schedules_and_digests(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: plant\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\n"
        "alerts: [{url: 'json://127.0.0.1:9/x', digest: '07:30'}]\n"
        "systems:\n"
        "  - {name: mes, backup: {kind: image_archive, path: a.tar}, rto: 5m}\n"
        "  - {name: historian, backup: {kind: image_archive, path: a.tar}, rto: 1h,"
        " schedule: '0 3 * * sun'}\n"
    )
    plans = plan(load_site(site))
    assert [(p.name, p.cron, p.systems, p.digest) for p in plans] == [
        ("plant", "0 2 * * *", ["mes"], None),
        ("plant-historian", "0 3 * * sun", ["historian"], None),
        ("plant-digest-0730", "30 7 * * *", None, "07:30"),
    ]


@pytest.mark.docker
@pytest.mark.timeout(600)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_serve_alerts_on_failure_and_recovery(
    plant: Path,  # noqa: F811
    tmp_path: Path,
    smtp: tuple[Mailbox, int],
    webhook: tuple[Hooks, int],
    docker_client,
    free_subnet,
) -> None:
    """One verification at a time (``--limit 1``): a run that started before the good
    backup came can neither overlap the next nor be recorded after it, so the alerts are
    exactly one failure, then one recovery."""
    box, smtp_port = smtp
    hooks, hook_port = webhook
    backups = tmp_path / "backups"
    backups.mkdir()
    shutil.copy(plant / "backups" / "broken-1.tar", backups / "app-1.tar")  # truncated
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(smtp=smtp_port, hook=hook_port, subnet=free_subnet()))
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "SMTP_PASSWORD": SMTP_PASSWORD,
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [RESTOREDRILL, "serve", str(site), "--port", "0", "--limit", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(hooks, 1, 200, proc)  # the next minute's run, broken backup
        path, failed = hooks.posts[0]
        assert path == "/hooks" and failed["type"] == "failure"
        assert "app ERROR" in failed["title"], failed
        assert "not a complete" in failed["message"] or "truncated" in failed["message"]
        # the next backup is good: the next scheduled run passes and says so
        shutil.copy(plant / "backups" / "app-1.tar", backups / "app-2.tar")
        wait_for(hooks, 2, 200, proc)
        recovered = hooks.posts[1][1]
        assert recovered["type"] == "success"
        assert "app: RECOVERED, now pass (was error)" in recovered["message"]
        deadline = time.monotonic() + 30
        while len(box.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        subjects = [m["subject"] for m in box.messages]
        assert len(subjects) == 2 and "ERROR" in subjects[0] and "RECOVERED" in subjects[1].upper()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "serving served: all systems" in out
    with EvidenceStore(f"sqlite:///{tmp_path / '.restoredrill' / 'evidence.db'}") as store:
        runs = store.runs(site="served")
    assert {r.trigger for r in runs} == {"schedule"}
    assert [r.systems[0].verdict.value for r in reversed(runs)][:2] == ["error", "pass"]
    for r in runs:
        leftovers = docker_client.containers.list(
            all=True, filters={"label": f"restoredrill.run={r.run_id}"}
        )
        assert leftovers == []
    assert SMTP_PASSWORD not in out


@pytest.mark.parametrize("api", [None, "http://127.0.0.1:{port}/api"])
def test_deploy_and_dispatch_need_a_reachable_server(tmp_path: Path, api: str | None) -> None:
    from localservers import free_port

    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\nsystems:\n  - {name: a, backup: {kind: image_archive, path: a.tar}, rto: 1m}\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api.format(port=free_port())  # nothing listens there
    for args in (["deploy", str(site)], ["run", str(site), "--dispatch"]):
        done = subprocess.run([RESTOREDRILL, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        if api:
            assert "is not reachable" in done.stderr and "PREFECT_API_URL" in done.stderr
        else:
            assert "PREFECT_API_URL is not set" in done.stderr


def test_serve_without_a_schedule_is_bad_input(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\nsystems:\n  - {name: a, backup: {kind: image_archive, path: a.tar}, rto: 1m}\n"
    )
    done = subprocess.run([RESTOREDRILL, "serve", str(site)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "nothing is scheduled" in done.stderr


def test_digest_flow_sends_the_days_runs_to_its_targets(tmp_path: Path, webhook) -> None:
    from datetime import UTC, datetime, timedelta

    from records import make_run

    from restoredrill.flows.serve import send_digest

    hooks, port = webhook
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: demo-plant\n"
        f"alerts:\n  - {{url: 'json://127.0.0.1:{port}/morning', digest: '07:30'}}\n"
        f"  - {{url: 'json://127.0.0.1:{port}/evening', digest: '19:00'}}\n"
        "systems:\n  - {name: historian, backup: {kind: image_archive, path: a.tar}, rto: 5m}\n"
    )
    now = datetime.now(UTC)
    (tmp_path / ".restoredrill").mkdir()
    with EvidenceStore(f"sqlite:///{tmp_path / '.restoredrill' / 'evidence.db'}") as store:
        for i, verdict in enumerate(["pass", "fail"]):
            run = make_run(f"r{i}", Verdict(verdict))
            run.started_at = now - timedelta(hours=3 - i)
            run.finished_at = run.started_at + timedelta(minutes=5)
            store.record(run)
    deliveries = send_digest(str(site), "07:30")
    assert [d.ok for d in deliveries] == [True]
    [(path, payload)] = hooks.posts  # only the 07:30 target
    assert path == "/morning"
    assert "daily digest" in payload["title"] and "2 of 3 systems not passing" in payload["title"]
    assert "historian: fail" in payload["message"]
