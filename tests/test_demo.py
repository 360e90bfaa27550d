"""The demo plant, as the README's first command runs it: backups made offline, then verified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from rich.console import Console

from restoredrill.flows.demo import DEMO_DIR, prepare


@pytest.fixture(scope="module")
def demo_run(docker_client, restic_bin, tmp_path_factory) -> dict:
    """The demo's backups made (or reused, or renewed) where ``./dev demo`` keeps them,
    then the demo site run from a copy in a temporary folder, so its evidence and spool
    stay out of the working tree. Its subnet stays the demo's (10.77.0.0/24): the restored
    systems' configurations name those addresses."""
    prepare(Console(quiet=True))
    site = tmp_path_factory.mktemp("demo")
    for part in ("site.yaml", "plc", "tests", "apps"):
        src = DEMO_DIR / part
        shutil.copytree(src, site / part) if src.is_dir() else shutil.copy(src, site / part)
    (site / "backups").symlink_to(DEMO_DIR / "backups")
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "run", str(site / "site.yaml"), "--json"],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the broken backups fail the site
    assert (site / ".restoredrill" / "evidence.db").is_file()  # beside the copy
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


def test_nothing_of_the_run_is_left(demo_run: dict, docker_client) -> None:
    label = f"restoredrill.run={demo_run['run_id']}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert docker_client.networks.list(filters={"label": label}) == []
    assert docker_client.images.list(filters={"label": label}) == []
