"""The demo's backups are backed up again once older than half their RPO (a plant's
nightly job would), so the demo shows the same verdicts next week. Real restic; no Docker."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from restoredrill.flows.demo_refresh import refresh
from restoredrill.flows.inventory import load_site

DAY = 86400
SITE = """\
site: refresh
sandbox: {subnets: [10.249.99.0/24]}
systems:
  - name: historian
    backup: {kind: restic, repository: repo, password_file: restic.pass, host: plant-historian}
    rto: 5m
    rpo: 2d
  - name: mes
    backup: {kind: image_archive, directory: archives, pattern: "mes-*.tar"}
    rto: 5m
    rpo: 7d
  - name: hmi
    backup: {kind: rootfs_tar, path: archives/hmi.tar}
    run: {command: [sh]}
    rto: 5m
    rpo: 7d
  - name: erp
    backup: {kind: image_archive, path: archives/erp.tar}
    rto: 5m
"""


def restic(plant: Path, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "RESTIC_PASSWORD_FILE": str(plant / "restic.pass")}
    done = subprocess.run(
        ["restic", "-r", str(plant / "repo"), "--quiet", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def aged(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


@pytest.fixture
def plant(tmp_path: Path, restic_bin: str) -> Path:
    """A historian snapshot 3 days old (RPO 2d); MES archive 3 days old (RPO 7d, fresh
    enough); HMI tarball 4 days old (RPO 7d: past half); ERP 30 days old, with no RPO."""
    (tmp_path / "site.yaml").write_text(SITE)
    (tmp_path / "restic.pass").write_text("demo-password\n")
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    (tree / "data" / "history.db").write_bytes(b"samples " * 1000)
    (tree / "historian.py").write_text("print('historian')\n")
    restic(tmp_path, "init")
    then = datetime.fromtimestamp(time.time() - 3 * DAY).strftime("%Y-%m-%d %H:%M:%S")
    restic(tmp_path, "backup", ".", "--host", "plant-historian", "--tag", "nightly",
           "--time", then, cwd=tree)  # fmt: skip
    archives = tmp_path / "archives"
    archives.mkdir()
    for name, days in (("mes-20261124.tar", 3), ("hmi.tar", 4), ("erp.tar", 30)):
        (archives / name).write_bytes(name.encode() * 100)
        aged(archives / name, days)
    return tmp_path


def test_old_backups_are_made_again_fresh_ones_and_those_without_rpo_are_kept(
    plant: Path,
) -> None:
    archives = plant / "archives"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime) for p in archives.iterdir()}
    [old] = json.loads(restic(plant, "snapshots", "--json"))
    assert refresh(plant / "site.yaml", Console(quiet=True)) == ["historian", "hmi"]

    snapshots = json.loads(restic(plant, "snapshots", "--json"))
    assert len(snapshots) == 2
    new = snapshots[-1]
    assert (new["hostname"], new["tags"]) == ("plant-historian", ["nightly"])
    assert new["time"] > old["time"]
    restic(plant, "restore", new["short_id"], "--target", str(plant / "restored"))
    inner = plant / "restored" / new["paths"][0].lstrip("/")
    root = inner if inner.is_dir() else plant / "restored"
    assert files(root) == files(plant / "tree")  # the same tree, backed up again
    hmi = archives / "hmi.tar"
    assert hmi.read_bytes() == before["hmi.tar"][0]
    assert hmi.stat().st_mtime > before["hmi.tar"][1] + 3 * DAY  # written again since
    for kept in ("mes-20261124.tar", "erp.tar"):
        assert ((archives / kept).read_bytes(), (archives / kept).stat().st_mtime) == before[kept]

    loaded = load_site(plant / "site.yaml")
    ages = {
        s.name: (datetime.now(UTC) - s.backup.locate(plant).created_at).total_seconds()
        for s in loaded.site.systems
    }
    assert ages["historian"] < DAY and ages["hmi"] < DAY  # as fresh as a nightly backup
    assert refresh(plant / "site.yaml", Console(quiet=True)) == []  # nothing old any more
