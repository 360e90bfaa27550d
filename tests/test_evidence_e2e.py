"""A real site on the real Docker engine, with a signing key: its runs are signed as they
are recorded, the Prefect API holds the run's table and summary artifacts, and the
evidence exports, verifies, reports and scrapes. A missing or unreadable key stops a run
before it starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_sources import busybox_tree, tar_tree

from restoredrill.flows.signing import keygen

SUBNET = "10.210.1.0/24"
SITE = f"""\
site: e2e-k-report
sandbox: {{subnets: [{SUBNET}], concurrency: 2}}
evidence: sqlite:///{{root}}/evidence.db
signing_key: keys/site.key
rto: 5m
systems:
  - name: web
    labels: {{zone: ot, role: hmi}}
    backup: {{kind: rootfs_tar, directory: backups, pattern: "web-*.tar"}}
    run: {{command: [httpd, -f, -p, "8080", -h, /etc], address: 10.210.1.10}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: http, name: marker served, port: 8080, path: /marker, contains: restored rootfs}}
    rto: 2m
    rpo: 30d
  - name: broken
    labels: {{zone: it}}
    backup: {{kind: rootfs_tar, directory: backups, pattern: "broken-*.tar"}}
    run: {{command: [sleep, "60"]}}
    rto: 1m
"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("RESTOREDRILL_SIGNING_KEY", None)
    return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                          capture_output=True, text=True, env=env, timeout=900, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory, docker_client) -> Path:
    root = tmp_path_factory.mktemp("e2e-k")
    backups = root / "backups"
    backups.mkdir()
    good = tar_tree(busybox_tree(root / "rootfs"), backups / "web-1.tar")
    (backups / "broken-1.tar").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    shutil.rmtree(root / "rootfs")
    keygen(root / "keys" / "site.key")
    path = root / "site.yaml"
    path.write_text(SITE.replace("{root}", str(root)))
    return path


def test_a_site_run_publishes_prefect_artifacts_and_signs_its_evidence(site: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from restoredrill.flows.verify import run_site, verify_site

    state = verify_site(str(site), return_state=True)
    record = state.result()
    assert {s.system: s.verdict.value for s in record.systems} == {"web": "pass", "broken": "error"}
    flow_run = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run]))
        )
    by_type = {a.type: a for a in found}
    assert set(by_type) == {"table", "markdown"}, found
    table = by_type["table"]
    assert table.key == "restoredrill-e2e-k-report-systems" and table.flow_run_id == flow_run
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    web = next(r for r in rows if r["system"] == "web")
    assert web["verdict"] == "pass" and web["recovery s"] > 0 and web["RTO"] == "2m00s"
    assert web["backup age"] != "-"
    assert "broken" in by_type["markdown"].data and "error" in by_type["markdown"].data
    assert run_site(str(site)).verdict.value == "error"  # a second run, the CLI's path
    verified = cli(
        "evidence", "verify", "--site", str(site), "--key", str(site.parent / "keys" / "site.pub")
    )
    assert verified.returncode == 0 and "signed: 2 runs" in verified.stdout, (
        verified.stdout + verified.stderr
    )


def test_the_runs_export_report_and_scrape(site: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "e2e.intoto.jsonl"
    exported = cli("evidence", "export", "--site", str(site), "-o", str(bundle))
    assert exported.returncode == 0 and "attestations" in exported.stdout, exported.stderr
    checked = cli(
        "evidence",
        "verify",
        "--bundle",
        str(bundle),
        "--key",
        str(site.parent / "keys" / "site.pub"),
    )
    assert checked.returncode == 0 and "bundle intact" in checked.stdout, checked.stderr
    report = cli("report", str(site), "-f", "json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    systems = {s["system"]: s for s in data["systems"]}
    assert systems["web"]["passes"] >= 2 and systems["broken"]["passes"] == 0
    assert "truncated" in systems["broken"]["last_failure"]["reason"]
    assert data["chain"]["ok"] and data["chain"]["signed"] >= 2
    sr73 = next(c for c in data["compliance"] if c["control"] == "SR 7.3")
    assert sr73["lacking"] == ["broken"] and "web" in sr73["evidenced"]
    scraped = cli("metrics", str(site))
    assert scraped.returncode == 0, scraped.stderr
    names = {f.name for f in text_string_to_metric_families(scraped.stdout)}
    assert {
        "restoredrill_recovery_seconds",
        "restoredrill_verdict",
        "restoredrill_site_verdict",
    } <= names


@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_a_bad_signing_key_stops_the_run_before_it_starts(
    site: Path, tmp_path: Path, problem: str
) -> None:
    copy = tmp_path / "site.yaml"
    key = tmp_path / "bad.key"
    if problem == "garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    copy.write_text(site.read_text().replace("signing_key: keys/site.key", f"signing_key: {key}"))
    done = cli("run", str(copy))
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(key) in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
