"""Prometheus metrics: the textfile written by ``restoredrill metrics`` and ``/metrics`` of
``serve``, parsed with prometheus_client's own parser; the Grafana dashboard asks only for
metrics that exist."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from evidence_data import SITE, fill, site_yaml
from pg import pg_server, pg_url  # noqa: F401 - fixtures
from prometheus_client.parser import text_string_to_metric_families

from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.inventory import load_site
from restoredrill.flows.metrics import exposition

NOW = datetime.now(UTC)
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg_url")


def test_metrics_of_the_latest_runs(store_url: str) -> None:
    with EvidenceStore(store_url) as store:
        runs = fill(store, days=4, now=NOW)  # historian failed on day 3, passed since
        text = exposition(store, SITE, ["historian", "mes", "hmi", "erp"])
    found = samples(text)
    last = runs[-1]
    key = {"site": SITE, "system": "historian", "zone": "ot"}
    assert value(found, "restoredrill_last_verification_timestamp_seconds", **key) == pytest.approx(
        last.started_at.timestamp()
    )
    assert value(found, "restoredrill_recovery_seconds", **key) == 41.0
    assert value(found, "restoredrill_rto_seconds", **key) == 300.0
    assert value(found, "restoredrill_rpo_seconds", **key) == 86400.0
    assert value(found, "restoredrill_backup_age_seconds", **key) == 7200.0
    assert value(found, "restoredrill_verdict", verdict="pass", **key) == 1.0
    assert value(found, "restoredrill_verdict", verdict="fail", **key) == 0.0
    assert value(found, "restoredrill_up", **key) == 1.0
    assert value(found, "restoredrill_checks", **key) == 2.0
    assert value(found, "restoredrill_checks_failed", **key) == 0.0
    assert value(found, "restoredrill_site_systems", site=SITE) == 4.0  # erp never verified
    assert value(found, "restoredrill_site_systems_passing", site=SITE) == 3.0
    assert value(found, "restoredrill_site_recovery_seconds", site=SITE) == 201.0
    assert value(found, "restoredrill_site_rto_seconds", site=SITE) == 1200.0
    assert value(found, "restoredrill_site_verdict", site=SITE, verdict="pass") == 1.0
    assert not any(labels and dict(labels).get("system") == "erp" for _, labels in found)


def test_a_failing_system_keeps_its_last_success(tmp_path: Path) -> None:
    from evidence_data import a_run

    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        fill(store, days=4, now=NOW)
        run = a_run(3, NOW, prefix="late")  # historian fails again, now
        run.started_at = NOW
        store.record(run)
        found = samples(exposition(store, SITE, None))
    key = {"site": SITE, "system": "historian", "zone": "ot"}
    assert value(found, "restoredrill_verdict", verdict="fail", **key) == 1.0
    assert value(found, "restoredrill_up", **key) == 0.0
    assert value(found, "restoredrill_checks_failed", **key) == 1.0
    assert value(found, "restoredrill_last_success_timestamp_seconds", **key) < NOW.timestamp()
    assert value(found, "restoredrill_last_verification_timestamp_seconds", **key) == pytest.approx(
        NOW.timestamp()
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_cli_writes_a_textfile(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        fill(store, days=2, now=NOW)
    site = site_yaml(tmp_path, url)
    out = tmp_path / "textfile" / "restoredrill.prom"
    out.parent.mkdir()
    done = cli("metrics", str(site), "-o", str(out))
    assert done.returncode == 0, done.stderr
    found = samples(out.read_text())
    assert value(found, "restoredrill_site_systems", site=SITE) == 4.0
    assert list(out.parent.iterdir()) == [out]  # written whole, no temporary left
    gone = cli("metrics", str(tmp_path / "nosuch.yaml"))
    assert gone.returncode == 2 and "no such site file" in gone.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_exposes_metrics(tmp_path: Path, monkeypatch) -> None:
    from restoredrill.flows.serve import METRICS_ENV, metrics_endpoint

    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        fill(store, days=2, now=NOW)
    loaded = load_site(site_yaml(tmp_path, url))
    port = _free_port()
    monkeypatch.setenv(METRICS_ENV, f"127.0.0.1:{port}")
    with metrics_endpoint(loaded) as where:
        assert where == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(where, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            first = samples(response.read().decode())
        with EvidenceStore(url) as store:  # read at each scrape: a new run shows at once
            from evidence_data import a_run

            later = a_run(0, NOW)
            store.record(later)
        with urllib.request.urlopen(where, timeout=30) as response:
            second = samples(response.read().decode())
    key = {"site": SITE, "system": "mes", "zone": "it"}
    assert value(first, "restoredrill_evidence_up", site=SITE) == 1.0
    assert value(second, "restoredrill_last_verification_timestamp_seconds", **key) > value(
        first, "restoredrill_last_verification_timestamp_seconds", **key
    )
    with socket.socket() as s:  # the listener is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0
    monkeypatch.setenv(METRICS_ENV, "off")
    with metrics_endpoint(loaded) as where:
        assert where is None
    with socket.socket() as taken:  # a port in use: serve goes on without metrics, and says so
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv(METRICS_ENV, f"127.0.0.1:{taken.getsockname()[1]}")
        with metrics_endpoint(loaded) as where:
            assert where is None


def test_an_unreadable_store_shows_as_evidence_down(tmp_path: Path) -> None:
    from restoredrill.flows.metrics import registry

    (tmp_path / "evidence.db").write_bytes(b"damaged" * 100)
    from prometheus_client import generate_latest

    text = generate_latest(registry(f"sqlite:///{tmp_path / 'evidence.db'}", SITE, None)).decode()
    assert value(samples(text), "restoredrill_evidence_up", site=SITE) == 0.0


def test_the_grafana_dashboard_asks_for_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        fill(store, days=2, now=NOW)
        names = {f.name for f in text_string_to_metric_families(exposition(store, SITE, None))}
    names |= {"restoredrill_evidence_up"}
    asked = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            asked |= set(re.findall(r"restoredrill_[a-z_]+", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        asked |= set(re.findall(r"restoredrill_[a-z_]+", variable["definition"]))
    assert asked and asked <= names, asked - names
    assert {p["type"] for p in dashboard["panels"]} >= {"stat", "table", "timeseries"}
