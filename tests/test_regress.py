"""``restoredrill regress`` on the demo plant, as a pipeline runs it (the issue's "done when").

The demo plant is copied into a temporary folder (its backups linked, not copied) and
moved to 10.253.0.0/24, so these runs never meet another test's demo on 10.77.0.0/24.
Real Docker, real restic, the real PLC twin and the restored gateway's OPC UA server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from rich.console import Console

from restoredrill.flows.demo import BACKUPS, DEMO_DIR, prepare
from restoredrill.flows.signing import keygen

pytestmark = [pytest.mark.docker, pytest.mark.restic]

XSD = Path(__file__).resolve().parent / "data" / "jenkins-junit.xsd"
SHIFT = ("TankLevel = input:0:float32", "TankLevel = input:2:float32")


@pytest.fixture(scope="module")
def plant(docker_client, restic_bin, tmp_path_factory) -> Path:
    """The demo plant's configuration in a folder of its own, at 10.253.0.x."""
    prepare(Console(quiet=True))
    root = tmp_path_factory.mktemp("plant")
    for name in ("site.yaml", "apps", "plc", "tests"):
        src = DEMO_DIR / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "backups").symlink_to(BACKUPS)
    for path in [root / "site.yaml", *(root / "apps" / "gateway").glob("*.ini")]:
        path.write_text(path.read_text().replace("10.77.0.", "10.253.0."))
    keygen(root / ".restoredrill" / "keys" / "site.key")  # the site signs its evidence
    return root


def regress(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "regress", str(site), *args],
        capture_output=True, text=True, timeout=900, env=env, cwd=cwd,
    )  # fmt: skip


def cli(plant: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "restoredrill.flows.cli", *args, str(plant / "site.yaml")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def cli_json(plant: Path, *args: str) -> list:
    proc = cli(plant, *args[:-1], "--json", args[-1])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def candidate(tmp_path: Path, plant: Path, rel: str, change: tuple[str, str]) -> Path:
    folder = tmp_path / "candidate"
    target = folder / rel
    target.parent.mkdir(parents=True)
    text = (plant / rel).read_text()
    assert change[0] in text
    target.write_text(text.replace(*change))
    return folder


def valid_junit(path: Path) -> etree._Element:
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(path))
    assert schema.validate(doc), schema.error_log
    return doc.getroot()


def test_a_shifted_register_is_a_regression_naming_checks_and_snapshot_entries(plant, tmp_path):
    cand = candidate(tmp_path, plant, "apps/gateway/gateway.ini", SHIFT)
    junit = tmp_path / "regress.xml"
    proc = regress(plant / "site.yaml", "--candidate", str(cand), "--json", "--junit", str(junit))
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "regression"
    assert record["affected"]["systems"] == {
        "line1-gateway": ["apps/gateway/gateway.ini (modified): run.files[0] of system line1-gateway"]
    }
    assert [f["path"] for f in record["changed_files"]] == ["apps/gateway/gateway.ini"]
    assert [s["system"] for s in record["baseline"]["systems"]] == ["line1-gateway"]  # only it ran
    checks = {d["check"]: d for d in record["comparison"]["checks"]}
    follows = checks["gateway serves live PLC data over OPC UA: TankLevel follows the PLC"]
    assert follows["change"] == "newly failing" and follows["regression"]
    assert 40 <= follows["baseline"]["observed"]["first"] <= 60  # both values shown
    assert not 40 <= follows["candidate"]["observed"] <= 60
    [entry] = [e for e in record["comparison"]["entries"] if e["regression"]]
    assert entry["snapshot"] == "system line1-gateway opcua 4840/gateway/"
    assert (entry["key"], entry["change"], entry["what"]) == ("Objects/2:Line1/2:TankLevel", "changed", "value")
    assert entry["baseline"].startswith("moving ") and entry["candidate"]
    assert "outside 40..60" in entry["detail"]
    plc = record["snapshots"]["baseline"][1]
    assert plc["owner"] == "device line1-plc modbus" and "unit 1 input 0" in plc["entries"]
    root = valid_junit(junit)
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert "gateway serves live PLC data over OPC UA: TankLevel follows the PLC" in failed
    assert "Objects/2:Line1/2:TankLevel: value" in failed
    assert "changed: apps/gateway/gateway.ini (modified)" in proc.stderr
    # recorded in the site's evidence chain, shown by history
    tested = [r for r in cli_json(plant, "history", "--site") if r.get("kind") == "regression"]
    mine = next(r for r in tested if r["regression_id"] == record["regression_id"])
    digest = hashlib.sha256((cand / "apps/gateway/gateway.ini").read_bytes()).hexdigest()
    assert mine["changed_files"][0]["candidate_sha256"] == digest
    assert mine["verdict"] == "regression" and mine["baseline"]["systems"][0]["verdict"] == "pass"
    verify = cli(plant, "evidence", "verify", "--site")
    assert verify.returncode == 0 and "intact" in verify.stdout


def test_harmless_candidates_report_no_regression(plant, tmp_path):
    site = (plant / "site.yaml").read_text()
    comment = tmp_path / "comment"
    comment.mkdir()
    (comment / "site.yaml").write_text("# reviewed: no change to the plant\n" + site)
    (comment / "NOTES.md").write_text("why we did it")
    proc = regress(plant / "site.yaml", "--candidate", str(comment))
    assert proc.returncode == 0, proc.stderr
    assert "the change affects no system or device" in proc.stdout
    assert "ignored: NOTES.md: the site does not use it" in proc.stderr
    hmi = tmp_path / "hmi"  # nothing depends on the HMI; it runs (with the historian it needs)
    hmi.mkdir()
    (hmi / "site.yaml").write_text(site.replace("    rto: 2m\n", "    rto: 3m\n", 1))
    proc = regress(plant / "site.yaml", "--candidate", str(hmi), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["verdict"] == "no regression"
    assert record["affected"]["systems"] == {"hmi": ["site.yaml: system hmi: rto changed"]}
    assert [s["system"] for s in record["candidate"]["systems"]] == ["historian", "hmi"]
    assert all(d["change"] == "unchanged" for d in record["comparison"]["checks"])


def git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=ot", "-c", "user.email=ot@plant.invalid", *args],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip


def test_git_base_head_1_in_a_temporary_repository(plant, tmp_path):
    repo = tmp_path / "ot-config"
    shutil.copytree(plant, repo / "line1", symlinks=True)
    (repo / ".gitignore").write_text("backups\n.restoredrill\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "line 1 as installed")
    ini = repo / "line1/apps/gateway/gateway.ini"
    ini.write_text(ini.read_text().replace(*SHIFT))
    git(repo, "commit", "-qam", "gateway: TankLevel from input 4")
    junit = tmp_path / "junit.xml"
    proc = regress(repo / "line1/site.yaml", "--git-base", "HEAD~1", "--junit", str(junit), cwd=repo)
    assert proc.returncode == 1, proc.stderr
    assert "baseline: HEAD~1 (" in proc.stderr
    assert "regression verdict: regression" in proc.stdout
    assert "TankLevel follows the PLC" in proc.stdout and "newly failing" in proc.stdout
    assert "Objects/2:Line1/2:TankLevel" in proc.stdout
    root = valid_junit(junit)
    assert int(root.get("failures")) >= 2
    head_1 = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=repo, capture_output=True, text=True)
    tested = [r for r in cli_json(repo / "line1", "history", "--site") if r.get("kind") == "regression"]
    assert tested[0]["revisions"]["base"] == head_1.stdout.strip()
    assert tested[0]["source"] == {"git_base": "HEAD~1"}


def test_bad_input_exits_2_with_the_reason(plant, tmp_path):
    site = plant / "site.yaml"
    proc = regress(site, "--git-base", "HEAD~1")
    assert proc.returncode == 2 and "is not in a git work tree" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    text = site.read_text().replace("    rto: 3m\n", "    rto: 3 minutes\n", 1)
    (bad / "site.yaml").write_text(text)
    junit = tmp_path / "bad.xml"
    proc = regress(site, "--candidate", str(bad), "--json", "--junit", str(junit))
    assert proc.returncode == 2, proc.stderr
    line = text.splitlines().index("    rto: 3 minutes") + 1
    assert f"{bad / 'site.yaml'}:{line}: systems[" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "bad input" and "does not validate" in out["problems"][0]
    error = valid_junit(junit).find(".//testcase/error")
    assert error is not None and "rto" in error.text
    proc = regress(site, "--candidate", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    proc = regress(site, "--candidate", str(bad), "--tolerance", "lots")
    assert proc.returncode == 2 and "--tolerance 'lots'" in proc.stderr


def test_a_device_no_system_uses_is_snapshotted_on_its_own(docker_client, tmp_path):
    """A changed register map of a PLC no system uses: only that PLC runs, in both."""
    (tmp_path / "plc").mkdir()
    for name in ("a", "b"):
        (tmp_path / "plc" / f"{name}.yaml").write_text(
            "tags:\n  - {name: speed, table: holding, address: 2, initial: 1450}\n"
            "  - {name: level, table: input, address: 0, type: float32, behaviour: sine, min: 40, max: 60, period: 30}\n"
        )
    (tmp_path / "site.yaml").write_text(
        "site: devices-only\nsandbox: {subnets: [10.253.1.0/24]}\ndevices:\n"
        "  - {kind: plc, name: plc-a, address: 10.253.1.100, map: plc/a.yaml}\n"
        "  - {kind: plc, name: plc-b, address: 10.253.1.101, map: plc/b.yaml}\n"
        "systems:\n  - name: s1\n    devices: [plc-a]\n"
        "    backup: {kind: image_archive, path: s1.tar}\n    rto: 1m\n"
    )
    cand = tmp_path / "candidate" / "plc"
    cand.mkdir(parents=True)
    (cand / "b.yaml").write_text((tmp_path / "plc/b.yaml").read_text().replace("address: 2,", "address: 3,"))
    proc = regress(tmp_path / "site.yaml", "--candidate", str(tmp_path / "candidate"), "--json")
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["baseline"]["systems"] == [] and record["candidate"]["systems"] == []
    got = {(e["key"], e["change"]) for e in record["comparison"]["entries"]}
    assert got == {("unit 1 holding 2", "removed"), ("unit 1 holding 3", "added")}
    assert {e["snapshot"] for e in record["comparison"]["entries"]} == {"device plc-b modbus"}
    assert "devices plc-b; running in both configurations: (devices only)" in proc.stderr


def test_run_writes_junit_too(plant, tmp_path):
    junit = tmp_path / "run.xml"
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "run", str(plant / "site.yaml"),
         "--system", "hmi", "--json", "--junit", str(junit)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    root = valid_junit(junit)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"demo-plant.historian", "demo-plant.hmi"}
    hmi = next(s for s in record["systems"] if s["system"] == "hmi")
    names = [c.get("name") for c in suites["demo-plant.hmi"].findall("testcase")]
    assert names == [c["name"] for c in hmi["checks"]] + ["recovery within RTO"]
    assert root.get("failures") == "0" and root.get("errors") == "0"


def test_a_device_started_for_a_snapshot_leaves_running_ones_alone(docker_client, tmp_path):
    """A changed SCADA device bound to a PLC that runs for a system: only the SCADA twin starts."""
    from restoredrill.flows.devices import start_devices
    from restoredrill.flows.inventory import load_site
    from restoredrill.flows.verify import close_run, open_run

    (tmp_path / "plc").mkdir()
    (tmp_path / "plc/a.yaml").write_text("tags:\n  - {name: level, table: holding, address: 0, initial: 5}\n")
    (tmp_path / "plc/nodes.yaml").write_text(
        "nodes:\n  - folder: Line\n    nodes:\n      - {variable: Level, type: Int32, bind: plc-a/level}\n"
    )
    (tmp_path / "site.yaml").write_text(
        "site: running\nsandbox: {subnets: [10.253.2.0/24]}\ndevices:\n"
        "  - {kind: plc, name: plc-a, address: 10.253.2.100, map: plc/a.yaml}\n"
        "  - {kind: scada, name: scada-b, address: 10.253.2.101, nodes: plc/nodes.yaml, plcs: [plc-a]}\n"
        "systems:\n  - {name: s1, devices: [plc-a], backup: {kind: image_archive, path: s1.tar}, rto: 1m}\n"
    )
    loaded = load_site(tmp_path / "site.yaml")
    ctx = open_run(loaded, f"t{os.getpid()}-regress-running")
    try:
        ctx.devices = start_devices(loaded, ctx.sandbox, ctx.run_id, ["s1"])
        assert [t.name for t in ctx.devices[0]] == ["device-plc-a"]
        twins, dirs = start_devices(loaded, ctx.sandbox, ctx.run_id, [], ["scada-b"], ["plc-a"])
        ctx.devices[0].extend(twins)
        ctx.devices[1].extend(dirs)
        assert [t.name for t in twins] == ["device-scada-b"]  # plc-a was not started again
    finally:
        close_run(ctx)
