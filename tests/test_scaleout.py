"""Scale-out for real: docker-compose runs a Prefect server on PostgreSQL and two
restoredrill workers, from images built offline; a site's systems are spread across
both workers in dependency order, and a worker killed mid-run is recorded as lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, missing
from localservers import free_port
from test_flows import plant  # noqa: F401 - the module-scoped backups fixture

RESTOREDRILL = str(Path(sys.executable).parent / "restoredrill")
POOL = "rd-test"
WORKERS = {"worker1", "worker2"}

SITE = """\
site: {name}
sandbox: {{subnets: [{subnet}], concurrency: 8}}
systems:
  - name: db
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{address: {net}.10, env: {{NAME: db}}}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, port: 8080, json: {{status: ok, name: db}}}}
      - {{kind: host, file: /opt/app.py, contains: ThreadingHTTPServer}}
    rto: 5m
{more}
"""

SPREAD = """\
  - name: cache
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    rto: 5m
  - name: queue
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    rto: 5m
  - name: app
    depends_on: [db, cache]
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    run: {{env: {{NAME: app}}}}
    ready: {{kind: http, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, name: reaches db, url: "http://{net}.10:8080/", json: {{name: db}}}}
    rto: 5m
"""

STUCK = """\
  - name: stuck
    backup: {{kind: image_archive, path: backups/app-1.tar}}
    ready: {{kind: tcp, port: 9999, timeout: 10m}}
    rto: 5m
"""


def site_text(name: str, more: str, subnet: str) -> str:
    """The site ``name`` with the ``more`` systems, on ``subnet`` (db at its .10)."""
    net = subnet.rsplit(".", 1)[0]
    return SITE.format(name=name, subnet=subnet, net=net, more=more.format(net=net))


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    missing("docker-compose (apt-get install docker-compose)")
    raise AssertionError("unreachable")


def online_workers(api: str) -> set[str]:
    try:
        r = httpx.post(f"{api}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
    except httpx.HTTPError:
        return set()
    if r.status_code != 200:
        return set()
    return {w["name"] for w in r.json() if w.get("status") == "ONLINE"}


@pytest.fixture(scope="module")
def stack(docker_client, plant: Path, tmp_path_factory) -> Iterator[tuple[Path, dict, list[str]]]:  # noqa: F811
    from restoredrill.twins.stack_image import ensure_stack_image

    ensure_stack_image(docker_client)
    site_dir = tmp_path_factory.mktemp("scaleout").resolve()
    (site_dir / "backups").mkdir()
    shutil.copy(plant / "backups" / "app-1.tar", site_dir / "backups" / "app-1.tar")
    (site_dir / "scratch").mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "RESTOREDRILL_SITE_DIR": str(site_dir),
        "RESTOREDRILL_SCRATCH": str(site_dir / "scratch"),
        "RESTOREDRILL_PREFECT_PORT": str(port),
        "RESTOREDRILL_POOL": POOL,
        "RESTOREDRILL_WORKER_LIMIT": "2",
        "PREFECT_HOME": str(site_dir / "prefect-client"),
    }
    compose = [
        *compose_command(),
        "-p",
        f"rdscale{os.getpid()}",
        "-f",
        str(REPO / "docker-compose.yml"),
    ]
    up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 240
        while online_workers(api) != WORKERS:
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    [*compose, "logs", "--tail", "40"], env=env, capture_output=True, text=True
                )
                raise AssertionError(f"workers not online: {online_workers(api)}\n{logs.stdout}")
            time.sleep(1)
        yield site_dir, {**env, "PREFECT_API_URL": api}, compose
    finally:
        subprocess.run(
            [*compose, "down", "-v", "--remove-orphans", "-t", "5"], env=env, capture_output=True
        )


def cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RESTOREDRILL, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_site_spreads_across_two_workers(stack, docker_client, free_subnet) -> None:
    site_dir, env, _ = stack
    site = site_dir / "spread.yaml"
    site.write_text(site_text("spread", SPREAD, free_subnet()))
    done = cli("deploy", str(site), "--pool", POOL, "--run", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deployed verify-site/spread" in done.stderr
    record = json.loads(done.stdout)
    verdicts = {s["system"]: s["verdict"] for s in record["systems"]}
    assert verdicts == {"db": "pass", "cache": "pass", "queue": "pass", "app": "pass"}
    assert [s["system"] for s in record["systems"]][-1] == "app"  # after what it depends on
    assert {s["worker"] for s in record["systems"]} == WORKERS
    app = next(s for s in record["systems"] if s["system"] == "app")
    db = next(s for s in record["systems"] if s["system"] == "db")
    assert app["started_at"] >= db["finished_at"] or app["started_at"] >= db["started_at"]
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"restoredrill.run={record['run_id']}"}
        )
        == []
    )
    history = cli("history", "--site", str(site), env=env)
    assert record["run_id"] in history.stdout


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_worker_killed_mid_run_is_recorded_lost(stack, docker_client, free_subnet) -> None:
    site_dir, env, compose = stack
    site = site_dir / "lost.yaml"
    site.write_text(site_text("lost", STUCK, free_subnet()))
    deployed = cli("deploy", str(site), "--pool", POOL, env=env)
    assert deployed.returncode == 0, deployed.stderr
    env = {**env, "RESTOREDRILL_WORKER_LOST_AFTER": "10"}
    run = subprocess.Popen(
        [RESTOREDRILL, "run", str(site), "--dispatch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        lease: dict = {}
        db: dict = {}
        while lease.get("step") != "ready" or "result" not in db:  # db done, stuck waiting
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the stuck system never reached its ready step"
            for path in (site_dir / ".restoredrill" / "runs").glob("*/*.json"):
                try:
                    data = json.loads(path.read_text())
                except ValueError:
                    continue
                if path.stem == "stuck":
                    lease = data
                elif path.stem == "db":
                    db = data
            time.sleep(0.5)
        victim = lease["worker"]
        project = compose[compose.index("-p") + 1]
        (container,) = docker_client.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={project}",
                    f"com.docker.compose.service={victim}",
                ]
            }
        )
        container.kill()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    record = json.loads(out)
    result = {s["system"]: s for s in record["systems"]}
    assert result["db"]["verdict"] == "pass"
    assert result["stuck"]["verdict"] == "error"
    assert result["stuck"]["reason"].startswith(f"worker lost: {victim} stopped in step ready")
    assert result["stuck"]["worker"] == victim
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"restoredrill.run={record['run_id']}"}
        )
        == []
    )
    subprocess.run(
        [*compose, "up", "-d", victim], env=env, capture_output=True
    )  # back for other tests
