"""The readiness report: rendered in a real headless Chromium with no network (screenshot,
SVG charts counted, every request recorded), as JSON, CSV and PDF; empty periods, unknown
sites, damaged, locked or altered databases give clear answers, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from browser import render
from evidence_data import SITE, fill, site_yaml

from restoredrill.flows.evidence import EvidenceStore
from restoredrill.flows.signing import fingerprint, keygen

NOW = datetime.now(UTC)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("RESTOREDRILL_SIGNING_KEY", None)
    return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip


@pytest.fixture
def plant(tmp_path: Path) -> tuple[Path, str]:
    """Ten nightly runs of three systems, signed; the inventory also names erp."""
    signer = keygen(tmp_path / "site.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url, signer=signer) as store:
        fill(store, days=10, now=NOW)
    return site_yaml(tmp_path, url, tmp_path / "site.key"), signer.keyid


def test_report_renders_offline_in_chromium(plant, tmp_path: Path) -> None:
    site, keyid = plant
    out = tmp_path / "report.html"
    done = cli("report", str(site), "--since", "30d", "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"(https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}/|url\()", html, re.I), (
        "external URL"
    )
    page = render(
        out.as_uri(),
        {
            "paths": "document.querySelectorAll('svg path').length",
            "drawn": "[...document.querySelectorAll('svg path')].filter(p => p instanceof "
            "SVGPathElement && p.getTotalLength() > 0).length",
            "charts": "document.querySelectorAll('svg.chart').length",
            "text": "document.body.innerText",
        },
    )
    assert page.requests == [out.as_uri()], page.requests  # the page itself, nothing else
    # 1 site chart + 2 per verified system; each: axis, target line, series
    assert page.values["charts"] == 1 + 2 * 3
    assert page.values["paths"] == page.values["drawn"] == 3 * 7
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 20_000
    (tmp_path / "report.png").write_bytes(page.screenshot)
    text = page.values["text"]
    for words in ("Readiness summary", "Compliance mapping", "IEC 62443-3-3", "SR 7.4",
                  "NIST CSF 2.0", "RC.RP-03", "A.8.13", "Art. 21(2)(c)", "intact",
                  fingerprint(keyid), "Last failure of each system"):  # fmt: skip
        assert words in text, words
    assert "3 / 4" in text  # proven in the last 7 days: erp never was
    assert re.search(r"1:\s*erp", text)  # lacking evidence, for every control
    assert (
        "99.5" in text and '"max": 60.0' in text
    )  # historian's last failure, expected vs observed


def test_report_figures_as_json_and_compliance_as_csv(plant, tmp_path: Path) -> None:
    site, keyid = plant
    done = cli("report", str(site), "--since", "30d", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    summary = data["summary"]
    assert summary["inventory"] == 4 and summary["runs"] == 10 and summary["verifications"] == 30
    # the newest run started a day (and the seconds since) ago: none in the last 24 h
    assert summary["proven_within_days"] == {"1": 0, "7": 3, "30": 3}
    assert (summary["covered"], summary["coverage"]) == (3, 0.75)
    assert summary["pass_rate"] == pytest.approx(28 / 30)
    assert summary["rto_compliance"] == pytest.approx(29 / 30)
    assert {z["zone"]: z["systems"] for z in summary["zones"]} == {"it": 2, "ot": 2}
    assert data["chain"]["ok"] and data["chain"]["keyid"] == keyid and data["chain"]["signed"] == 10
    systems = {s["system"]: s for s in data["systems"]}
    assert systems["historian"]["last_failure"]["run_id"] == "run-003"
    assert systems["historian"]["last_failure"]["checks"][0]["observed"] == 99.5
    assert systems["mes"]["rto_met"] == 9 and systems["mes"]["interval_days"] == pytest.approx(1.0)
    assert systems["erp"]["verifications"] == 0
    sr74 = next(c for c in data["compliance"] if c["control"] == "SR 7.4")
    assert sr74["lacking"] == ["erp"] and len(sr74["evidenced"]["historian"]) == 9
    assert "run-003" not in sr74["evidenced"]["historian"]
    done = cli("report", str(site), "--since", "30d", "-o", str(tmp_path / "controls.csv"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "controls.csv").read_text())))
    assert len(rows) == 5 * 4
    erp = [r for r in rows if r["system"] == "erp"]
    assert {r["status"] for r in erp} == {"lacking"}
    a813 = next(r for r in rows if r["control"] == "A.8.13" and r["system"] == "mes")
    assert a813["status"] == "evidenced" and a813["verifications"] == "10"
    assert a813["runs"].split(";")[0] == "run-010"


def test_report_as_pdf(plant, tmp_path: Path) -> None:
    from restoredrill.flows.report_html import chromium

    if chromium() is None:
        from conftest import missing

        missing("Chromium (apt-get install chromium)")
    site, _ = plant
    done = cli("report", str(site), "-o", str(tmp_path / "report.pdf"))
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "report.pdf").read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 20_000


def test_an_empty_period_gives_an_empty_state_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    with EvidenceStore(url) as store:
        fill(store, days=3, now=NOW - timedelta(days=60))
    site = site_yaml(tmp_path, url)
    done = cli("report", str(site), "--since", "7d", "-o", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "r.html").read_text()
    assert f"No runs of site {SITE} in this period" in html and "not signed" in html
    data = json.loads(cli("report", str(site), "--since", "7d", "-f", "json").stdout)
    assert data["summary"]["runs"] == 0 and data["summary"]["proven_within_days"]["30"] == 0
    assert all(len(c["lacking"]) == 4 for c in data["compliance"])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    nothing = cli("report", str(site_yaml(fresh, f"sqlite:///{fresh / 'e.db'}")), "-f", "json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["summary"]["runs"] == 0


def test_unknown_site_and_bad_options(plant, tmp_path: Path) -> None:
    site, _ = plant
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    gone = cli("report", str(tmp_path / "nosuch.yaml"))
    assert gone.returncode == 2 and "nosuch.yaml: no such site file" in gone.stderr
    named = cli("report", "nosuch", "--evidence", url)
    assert named.returncode == 2 and "no runs of site 'nosuch'" in named.stderr
    assert "its sites: plant" in named.stderr
    by_name = cli("report", SITE, "--evidence", url, "-f", "json")
    assert by_name.returncode == 0, by_name.stderr
    assert json.loads(by_name.stdout)["summary"]["inventory"] == 3  # the systems it has seen
    for args, words in [
        (["--since", "soon"], "not a duration"),
        (["-f", "docx"], "use html, json"),
    ]:
        bad = cli("report", str(site), *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr


def test_a_damaged_database(tmp_path: Path) -> None:
    (tmp_path / "evidence.db").write_bytes(b"this is not an SQLite database, " * 100)
    site = site_yaml(tmp_path, f"sqlite:///{tmp_path / 'evidence.db'}")
    for command in (["report", str(site)], ["metrics", str(site)],
                    ["evidence", "export", "--site", str(site), "-o", str(tmp_path / "b.jsonl"),
                     "--key", str(keygen(tmp_path / "k.key").path)]):  # fmt: skip
        done = cli(*command)
        assert done.returncode == 2, (command, done.stderr)
        assert (
            "damaged or is not an SQLite database" in done.stderr and "Traceback" not in done.stderr
        )


def test_a_locked_database(plant, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evidence.db'}?timeout=1"
    holder = sqlite3.connect(tmp_path / "evidence.db", check_same_thread=False)
    holder.isolation_level = None
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for command in (["report", SITE, "--evidence", url], ["metrics", SITE, "--evidence", url]):
            done = cli(*command)
            assert done.returncode == 2, done.stderr
            assert "locked" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_an_altered_record_shows_in_the_report(plant, tmp_path: Path) -> None:
    site, _ = plant
    with sqlite3.connect(tmp_path / "evidence.db") as db:
        db.execute(
            "UPDATE system_results SET recovery_time_s = 1.0 WHERE id = (SELECT id FROM "
            "system_results WHERE run_pk = (SELECT id FROM runs WHERE run_id = 'run-004') LIMIT 1)"
        )
    done = cli("report", str(site), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 1 and "run-004" in done.stderr and "altered" in done.stderr
    html = (tmp_path / "r.html").read_text()
    assert "BROKEN" in html and "run run-004" in html


def test_report_is_read_while_the_store_is_written(plant, tmp_path: Path) -> None:
    """A report reads a consistent chain while a run is being recorded."""
    from evidence_data import a_run

    from restoredrill.flows.signing import load_signer

    site, _ = plant
    signer = load_signer(tmp_path / "site.key")
    url = f"sqlite:///{tmp_path / 'evidence.db'}"
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with EvidenceStore(url, signer=signer) as store:
                for i in range(5):
                    store.record(a_run(0, NOW + timedelta(minutes=i), prefix=f"live{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    done = cli("report", str(site), "-f", "json")
    thread.join()
    assert not errors and done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chain"]["ok"]


def test_a_quick_report_checks_links_and_signatures_only(plant, tmp_path: Path) -> None:
    site, _ = plant
    with sqlite3.connect(tmp_path / "evidence.db") as db:  # a record edited: only a rebuild sees it
        db.execute("UPDATE steps SET duration_s = 1.0 WHERE id = 1")
    quick = cli("report", str(site), "--quick", "-o", str(tmp_path / "q.html"))
    assert quick.returncode == 0, quick.stderr
    assert "the records themselves were not rebuilt" in (tmp_path / "q.html").read_text()
    full = cli("report", str(site), "-f", "json")
    assert full.returncode == 1 and "run-010" in full.stderr
    with sqlite3.connect(tmp_path / "evidence.db") as db:  # a signature edited: both see it
        db.execute("UPDATE signatures SET sig = 'AAAA' || substr(sig, 5) WHERE seq = 5")
    quick = cli("report", str(site), "--quick", "-f", "json")
    assert quick.returncode == 1 and "signature" in quick.stderr
