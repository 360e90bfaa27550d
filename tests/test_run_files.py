"""``run.files``: configuration laid into a restored system before it starts, on the real engine.

Each test opens its own sandbox on a free /24 of 10.250.0.0/16 and removes it at the end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from restoredrill.twins.base import Restored, TwinError
from restoredrill.twins.docker import DockerBackend, DockerSandbox
from restoredrill.twins.files import FileSpec, archive, resolve_files
from restoredrill.twins.readiness import wait_ready
from restoredrill.twins.spec import LogProbe, RunSpec

pytestmark = pytest.mark.docker

IMAGE = "restoredrill/base:bookworm"
BASE = Restored(image=IMAGE)


def free_subnet(client) -> str:
    """A /24 of 10.250.0.0/16 that no Docker network uses now."""
    used = []
    for net in client.api.networks():
        for conf in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(conf.get("Subnet", ""), strict=False))
    for i in range(1, 255):
        cand = ipaddress.ip_network(f"10.250.{i}.0/24")
        if not any(u.version == 4 and cand.overlaps(u) for u in used):
            return str(cand)
    raise RuntimeError("no free test subnet in 10.250.0.0/16")


@pytest.fixture
def sandbox(docker_client, base_image) -> Iterator[DockerSandbox]:
    engine = DockerBackend(docker_client)
    run_id = f"t{os.getpid()}-files-{uuid.uuid4().hex[:6]}"
    sb = engine.open_sandbox(run_id, free_subnet(docker_client))
    try:
        yield sb
    finally:
        sb.close()
        left = docker_client.api.containers(all=True, filters={"label": f"restoredrill.run={run_id}"})
        assert left == []


def sh(twin, command: str) -> str:
    out = twin.exec(["sh", "-c", command], timeout=20)
    assert out.exit_code == 0, out.stderr
    return out.stdout.strip()


def test_files_and_folders_are_laid_in_before_the_twin_starts(sandbox, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "gateway").mkdir(parents=True)
    (site / "gateway" / "tags.yaml").write_text("TankLevel: input:0:float32\n")
    project = site / "hmi" / "project"
    (project / "screens").mkdir(parents=True)
    (project / "screens" / "overview.json").write_text('{"title": "Line 1"}')
    (project / "start.sh").write_text("#!/bin/sh\n")
    (project / "start.sh").chmod(0o750)
    (project / "passwd").symlink_to("/etc/passwd")  # a link, never followed on this host
    (site / "debian_version").write_text("from version control\n")
    spec = RunSpec(
        # the first command the twin runs sees the files: they are there before it starts
        command=["sh", "-c", "cat /etc/gateway/tags.yaml; exec sleep 300"],
        files=[
            {"source": "gateway/tags.yaml", "target": "/etc/gateway/tags.yaml",
             "mode": "0640", "owner": "1000:1001"},
            {"source": "hmi/project", "target": "/srv/hmi/project"},
            {"source": "debian_version", "target": "/etc/debian_version"},
        ],
    )  # fmt: skip
    twin = sandbox.start(resolve_files(spec, site), BASE, "gw")
    wait_ready(twin, LogProbe(contains="TankLevel: input:0:float32", timeout="20s"))
    assert sh(twin, "stat -c '%a %u %g' /etc/gateway/tags.yaml") == "640 1000 1001"
    assert sh(twin, "stat -c '%a %u' /etc/gateway") == "755 0"  # made for it
    assert sh(twin, "stat -c '%a %u' /etc") == "755 0"  # an existing folder is left as it was
    assert sh(twin, "cat /srv/hmi/project/screens/overview.json") == '{"title": "Line 1"}'
    assert sh(twin, "stat -c '%a' /srv/hmi/project/start.sh") == "750"  # its own mode
    assert sh(twin, "readlink /srv/hmi/project/passwd") == "/etc/passwd"
    assert sh(twin, "cat /etc/debian_version") == "from version control"  # the backup's replaced


def test_a_missing_source_names_the_entry_and_leaves_no_container(sandbox, tmp_path: Path) -> None:
    spec = RunSpec(
        command=["sleep", "300"],
        files=[{"source": "gateway/missing.ini", "target": "/etc/gateway/gateway.ini"}],
    )
    with pytest.raises(TwinError) as err:
        sandbox.start(resolve_files(spec, tmp_path), BASE, "gw")
    text = str(err.value)
    assert "gw: run.files[0] (" in text and "gateway/missing.ini does not exist" in text
    assert sandbox.twins == []
    assert sandbox.client.api.containers(all=True, filters={"name": f"{sandbox.prefix}-gw"}) == []


def test_specs_are_checked_when_the_site_is_read() -> None:
    with pytest.raises(ValueError, match="not an absolute path"):
        FileSpec(source="a", target="etc/a")
    with pytest.raises(ValueError, match="no .. in a target path"):
        FileSpec(source="a", target="/etc/../root/a")
    with pytest.raises(ValueError, match="not a file mode"):
        FileSpec(source="a", target="/a", mode="0999")
    with pytest.raises(ValueError, match="numeric owner"):
        FileSpec(source="a", target="/a", owner="root")
    assert FileSpec(source="a", target="/a", mode=640).mode == "0640"  # YAML 1.2's bare 0640


def test_an_archive_never_follows_a_link_out_of_the_site(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "secret").symlink_to("/etc/shadow")
    data = archive([FileSpec(source=str(tmp_path / "cfg"), target="/etc/app")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.issym(), m.linkname, m.size) for m in members] == [
        ("etc/app/secret", True, "/etc/shadow", 0)
    ]
