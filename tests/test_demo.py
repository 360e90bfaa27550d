"""The demo plant, as the README's first command runs it: backups made offline, then verified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from restoredrill.flows.demo import DEMO_DIR, EXPECTED, prepare


@pytest.fixture(scope="module")
def demo_site(docker_client, restic_bin, tmp_path_factory) -> Path:
    """The demo's backups (and signing key) made, reused or renewed where ``./dev demo``
    keeps them; the demo site copied to a temporary folder with its key, so the run's
    evidence and spool stay out of the working tree. Its subnet stays the demo's
    (10.77.0.0/24): the restored systems' configurations name those addresses."""
    prepare(Console(quiet=True))
    site = tmp_path_factory.mktemp("demo")
    for part in ("site.yaml", "plc", "tests", "apps", ".restoredrill/keys"):
        src = DEMO_DIR / part
        shutil.copytree(src, site / part) if src.is_dir() else shutil.copy(src, site / part)
    (site / "backups").symlink_to(DEMO_DIR / "backups")
    return site / "site.yaml"


@pytest.fixture(scope="module")
def demo_run(demo_site: Path) -> dict:
    """The demo site's run (from the copy)."""
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "run", str(demo_site), "--json"],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the broken backups fail the site
    assert (demo_site.parent / ".restoredrill" / "evidence.db").is_file()  # beside the copy
    return json.loads(proc.stdout)


def by_name(record: dict) -> dict[str, dict]:
    return {s["system"]: s for s in record["systems"]}


def test_good_systems_pass_with_measured_recovery_times(demo_run: dict) -> None:
    systems = by_name(demo_run)
    for name in ("historian", "mes", "hmi", "line1-gateway"):
        assert systems[name]["verdict"] == "pass", systems[name]
        assert 0 < systems[name]["recovery_time_s"] < systems[name]["rto_s"]
        assert all(c["status"] == "pass" for c in systems[name]["checks"])
    assert systems["historian"]["backup"]["source"] == "restic"
    assert systems["hmi"]["backup"]["source"] == "rootfs_tar"


def test_broken_backup_errors_with_its_reason_and_blocks_dependents(demo_run: dict) -> None:
    systems = by_name(demo_run)
    assert systems["erp"]["verdict"] == "error"
    assert "truncated" in systems["erp"]["reason"]
    assert systems["reporting"]["verdict"] == "blocked"


def test_ot_data_path_through_the_restored_gateway(demo_run: dict) -> None:
    checks = {c["name"]: c for c in by_name(demo_run)["line1-gateway"]["checks"]}
    follows = [c for n, c in checks.items() if "TankLevel follows the PLC" in n]
    assert follows and follows[0]["status"] == "pass"
    seen = follows[0]["observed"]
    assert 40 <= seen["first"] <= 60 and seen["changed to"] != seen["first"]
    reached = [c for n, c in checks.items() if n.startswith("setpoint reached the PLC register")]
    assert reached and reached[0]["observed"] == pytest.approx(63.5)


def test_wrong_register_fails_with_the_mismatched_value(demo_run: dict) -> None:
    line2 = by_name(demo_run)["line2-gateway"]
    assert line2["verdict"] == "fail"
    bad = [c for c in line2["checks"] if c["status"] == "fail"]
    assert bad and not 40 <= bad[0]["observed"] <= 60
    assert bad[0]["expected"] == {"min": 40.0, "max": 60.0}


def test_vm_system_passes_at_its_production_address_beside_the_others(demo_run: dict) -> None:
    systems = by_name(demo_run)
    vm = systems["hmi-vm"]
    assert vm["verdict"] == "pass", vm["reason"]
    assert 0 < vm["recovery_time_s"] < vm["rto_s"]
    assert vm["backup"]["source"] == "disk_image" and vm["backup"]["backup_id"].endswith(".vmdk")
    assert {c["kind"] for c in vm["checks"]} >= {"http", "screenshot", "host", "agent", "tcp"}
    assert all(c["status"] == "pass" for c in vm["checks"])
    reads = [c for c in vm["checks"] if c["name"].startswith("HMI reads the PLC twin json value")]
    assert reads and reads[0]["observed"] == 1450  # its service read the PLC twin over Modbus
    platform = vm["platform"]
    assert platform["disks"] == [{"file": vm["backup"]["backup_id"], "format": "vmdk"}]
    assert Path(platform["console"]["path"]).is_file()
    if platform["accel"] == "tcg":
        assert platform["rto_note"] == "TCG: not the plant's RTO"


def test_broken_disk_image_errors_with_its_console_tail(demo_run: dict) -> None:
    broken = by_name(demo_run)["hmi-vm-broken"]
    assert broken["verdict"] == "error"
    assert "not ready after 30s: console showing 'login:' not shown" in broken["reason"]
    assert "Loading /vmlinuz failed" in broken["reason"]  # the console's last lines


def test_verdicts_are_what_the_demo_is_built_to_show(demo_run: dict) -> None:
    assert {s["system"]: s["verdict"] for s in demo_run["systems"]} == EXPECTED


def test_nothing_of_the_run_is_left(demo_run: dict, docker_client) -> None:
    label = f"restoredrill.run={demo_run['run_id']}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert docker_client.networks.list(filters={"label": label}) == []
    assert docker_client.images.list(filters={"label": label}) == []


def test_the_demo_evidence_is_signed_and_reported(demo_run: dict, demo_site: Path, tmp_path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("RESTOREDRILL_SIGNING_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "restoredrill.flows.cli", *args],
                              capture_output=True, text=True, timeout=600, env=env)  # fmt: skip

    report = cli("report", str(demo_site), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert "Compliance mapping" in html and "SR 7.4" in html and html.count("<svg") > 7
    data = json.loads(cli("report", str(demo_site), "-f", "json").stdout)
    assert data["chain"]["ok"] and data["chain"]["signed"] >= 1
    systems = {s["system"]: s for s in data["systems"]}
    assert demo_run["run_id"] in [p["run_id"] for p in systems["historian"]["points"]]
    assert "truncated" in systems["erp"]["last_failure"]["reason"]
