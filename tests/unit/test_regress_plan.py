"""What a change is and what it affects: candidate folders, git revisions, bad input.

Plain files and a real git in temporary folders; nothing runs (no Docker, no Prefect).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from restoredrill.flows.candidate import RegressInputError
from restoredrill.flows.regress import plan

REPO = Path(__file__).resolve().parents[2]
SITE = textwrap.dedent(
    """\
    site: unit-plant
    sandbox: {subnets: [10.251.0.0/24]}
    devices:
      - {kind: plc, name: plc1, address: 10.251.0.100, map: plc/line1.yaml}
      - {kind: plc, name: plc2, address: 10.251.0.101, map: plc/line2.yaml}
    systems:
      - name: historian
        backup: {kind: image_archive, directory: backups/historian, pattern: "historian-*.tar.gz"}
        run: {address: 10.251.0.10}
        rto: 5m
      - name: gateway
        description: line 1 gateway
        devices: [plc1]
        depends_on: [historian]
        backup: {kind: image_archive, directory: backups/gateway, pattern: "gw-*.tar.gz"}
        run:
          address: 10.251.0.60
          files: [{source: apps/gateway.ini, target: /etc/gateway/gateway.ini}]
        rto: 3m
      - name: hmi
        depends_on: [gateway]
        backup: {kind: image_archive, path: backups/hmi.tar.gz}
        run: {address: 10.251.0.30}
        rto: 2m
      - name: erp
        backup: {kind: image_archive, path: backups/erp.tar.gz}
        run: {address: 10.251.0.40}
        rto: 2m
    """
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "plc").mkdir(parents=True)
    (root / "apps").mkdir()
    (root / "backups" / "gateway").mkdir(parents=True)
    (root / "backups" / "historian").mkdir()
    shutil.copy(REPO / "config/demo/plc/line1.yaml", root / "plc/line1.yaml")
    shutil.copy(REPO / "config/demo/plc/line1.yaml", root / "plc/line2.yaml")
    (root / "apps/gateway.ini").write_text("[tags]\nTankLevel = input:0:float32\n")
    (root / "backups/gateway/gw-1.tar.gz").write_bytes(b"v1")
    (root / "backups/historian/historian-1.tar.gz").write_bytes(b"h1")
    (root / "backups/hmi.tar.gz").write_bytes(b"hmi")
    (root / "site.yaml").write_text(SITE)
    return root / "site.yaml"


def candidate(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "candidate"
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    folder.mkdir(exist_ok=True)
    return folder


def test_a_changed_tag_mapping_affects_its_system_and_dependents_only(site, tmp_path):
    cand = candidate(tmp_path, {"apps/gateway.ini": "[tags]\nTankLevel = input:4:float32\n"})
    with plan(site, cand) as p:
        assert [(f.path, f.status) for f in p.impact.changed] == [("apps/gateway.ini", "modified")]
        assert p.impact.changed[0].baseline_sha256 != p.impact.changed[0].candidate_sha256
        assert p.impact.systems == {
            "gateway": ["apps/gateway.ini (modified): run.files[0] of system gateway"]
        }
        assert p.impact.dependents == {"hmi": ["depends on gateway"]}
        assert p.impact.to_run(p.candidate.site) == ["gateway", "hmi"]
        # the candidate's tree holds the new file, the baseline is the site as it is
        assert (p.candidate.base_dir / "apps/gateway.ini").read_text().endswith("input:4:float32\n")
        assert (p.baseline.base_dir / "apps/gateway.ini").read_text().endswith("input:0:float32\n")
        # everything else resolves to the real files (backups are never copied)
        located = p.candidate.site.system("gateway").backup.locate(p.candidate.base_dir)
        assert Path(located.location).resolve() == (site.parent / "backups/gateway/gw-1.tar.gz")
        mirror = p.configs.mirror.dest
        assert (mirror.parent / "owner.json").is_file()  # reaped if this process is killed
    assert not mirror.parent.exists()  # removed with the plan


def test_a_register_map_change_reaches_the_systems_using_the_device(site, tmp_path):
    text = (site.parent / "plc/line1.yaml").read_text().replace("address: 2\n", "address: 7\n", 1)
    with plan(site, candidate(tmp_path, {"plc/line1.yaml": text})) as p:
        assert list(p.impact.devices) == ["plc1"]
        assert p.impact.systems == {"gateway": ["uses device plc1"]}
        assert list(p.impact.dependents) == ["hmi"]


def test_a_new_backup_archive_is_a_new_software_version(site, tmp_path):
    with plan(site, candidate(tmp_path, {"backups/gateway/gw-2.tar.gz": b"v2"})) as p:
        assert [(f.path, f.status) for f in p.impact.changed] == [
            ("backups/gateway/gw-2.tar.gz", "added")
        ]
        assert list(p.impact.systems) == ["gateway"]
        found = p.candidate.site.system("gateway").backup.locate(p.candidate.base_dir)
        assert found.backup_id == "gw-2.tar.gz"  # the candidate restores the new one
        base = p.baseline.site.system("gateway").backup.locate(p.baseline.base_dir)
        assert base.backup_id == "gw-1.tar.gz"


def test_harmless_changes_affect_nothing(site, tmp_path):
    text = site.read_text()
    edited = "# reviewed by the OT team\n" + text.replace(
        "description: line 1 gateway", "description: the line 1 gateway (Siemens side)"
    )
    cand = candidate(tmp_path, {"site.yaml": edited, "notes/README.txt": "hello"})
    with plan(site, cand) as p:
        assert p.impact.nothing
        assert [f.path for f in p.impact.unused] == ["notes/README.txt"]


def test_site_file_changes_name_the_fields(site, tmp_path):
    text = site.read_text().replace("rto: 2m\n", "rto: 4m\n", 1)  # the hmi's RTO
    text = text.replace("address: 10.251.0.101", "address: 10.251.0.102")  # plc2, unused
    with plan(site, candidate(tmp_path, {"site.yaml": text})) as p:
        assert p.impact.systems == {"hmi": ["site.yaml: system hmi: rto changed"]}
        assert p.impact.devices == {"plc2": ["site.yaml: device plc2: address changed"]}
        assert p.impact.devices_alone(p.candidate.site) == ["plc2"]
    sandbox = site.read_text().replace("10.251.0.0/24]}", "10.251.0.0/24], concurrency: 3}")
    with plan(site, candidate(tmp_path / "2", {"site.yaml": sandbox})) as p:
        assert set(p.impact.systems) == {"historian", "gateway", "hmi", "erp"}


def test_candidate_entries_outside_it_are_listed_and_ignored(site, tmp_path):
    cand = candidate(tmp_path, {"apps/gateway.ini": "[tags]\n"})
    (tmp_path / "secret").write_text("x")
    (cand / "plc").mkdir()
    (cand / "plc/line1.yaml").symlink_to(tmp_path / "secret")
    with plan(site, cand) as p:
        assert p.configs.ignored == [("plc/line1.yaml", f"a link to {tmp_path / 'secret'}, outside the candidate")]
        assert [f.path for f in p.impact.changed] == ["apps/gateway.ini"]


def test_a_candidate_that_does_not_validate_names_its_file_and_line(site, tmp_path):
    bad = site.read_text().replace("rto: 3m", "rto: 3 mins")
    cand = candidate(tmp_path, {"site.yaml": bad})
    with pytest.raises(RegressInputError) as err:
        plan(site, cand)
    text = str(err.value)
    assert "the candidate does not validate:" in text
    line = bad.splitlines().index("    rto: 3 mins") + 1
    assert f"{cand / 'site.yaml'}:{line}: systems[1].rto:" in text
    assert f"{tempfile.gettempdir()}/restoredrill-" not in text  # never the mirror's path
    tags = "tags:\n  - {name: x, table: holding, address: 0, type: float64}\n"
    with pytest.raises(RegressInputError) as err:
        plan(site, candidate(tmp_path / "2", {"plc/line1.yaml": tags}))
    assert f"{tmp_path / '2/candidate/plc/line1.yaml'}:2: tags[0].type" in str(err.value)
    missing = site.read_text().replace("source: apps/gateway.ini", "source: apps/gone.ini")
    with pytest.raises(RegressInputError) as err:
        plan(site, candidate(tmp_path / "3", {"site.yaml": missing}))
    assert "systems[1].run.files[0].source: apps/gone.ini does not exist" in str(err.value)


def test_bad_options_and_folders_are_refused(site, tmp_path):
    with pytest.raises(RegressInputError, match="not a folder"):
        plan(site, tmp_path / "nowhere")
    with pytest.raises(RegressInputError, match="the site's own folder"):
        plan(site, site.parent)
    with pytest.raises(RegressInputError, match="one of them"):
        plan(site)


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=folder, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def test_git_base_compares_a_revision_with_the_working_tree(site, tmp_path):
    root = site.parent
    (root / ".gitignore").write_text("backups/\n")
    (root / "apps/active.ini").symlink_to("gateway.ini")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline")
    first = git(root, "rev-parse", "HEAD").strip()
    (root / "apps/gateway.ini").write_text("[tags]\nTankLevel = input:4:float32\n")
    git(root, "commit", "-qam", "shift TankLevel")
    (root / "plc/line2.yaml").unlink()  # not committed: the working tree is the candidate
    (root / "new.txt").write_text("untracked")
    (root / "apps/active.ini").unlink()
    (root / "apps/active.ini").symlink_to("gateway-v2.ini")
    with pytest.raises(RegressInputError) as err:
        plan(site, git_base="HEAD~1")
    assert "the candidate does not validate" in str(err.value)  # plc2's map is gone
    (root / "plc/line2.yaml").write_text((root / "plc/line1.yaml").read_text())
    with plan(site, git_base="HEAD~1") as p:
        assert {f.path: f.status for f in p.impact.changed} == {
            "apps/active.ini": "modified",
            "apps/gateway.ini": "modified",
            "new.txt": "added",
        }
        assert os.readlink(p.configs.mirror.path("apps/active.ini")) == "gateway.ini"  # a link
        assert p.configs.revisions["base"] == first and p.configs.revisions["dirty"]
        assert list(p.impact.systems) == ["gateway"]
        assert (p.baseline.base_dir / "apps/gateway.ini").read_text().endswith("input:0:float32\n")
        assert p.candidate.path == site.resolve()  # the working tree itself
        assert [f.path for f in p.impact.unused] == ["apps/active.ini", "new.txt"]


def test_git_base_bad_input(site, tmp_path):
    with pytest.raises(RegressInputError, match="is not in a git work tree"):
        plan(site, git_base="HEAD~1")
    git(site.parent, "init", "-q")
    git(site.parent, "add", "-A")
    git(site.parent, "commit", "-qm", "one")
    with pytest.raises(RegressInputError, match="--git-base no-such-branch: no such revision"):
        plan(site, git_base="no-such-branch")
    with pytest.raises(RegressInputError, match="no such revision"):
        plan(site, git_base="HEAD~1")  # only one commit
