"""flows/ speak the twin contract only: no Docker client anywhere in them (issue 10, item 1).

Read with ``ast`` (what the code does, not what its comments say): no import of the
``docker`` SDK or of the Docker backend module, no Docker client object reached (``.client``
of a backend or sandbox, ``.api``, ``.docker``), no SDK call on its collections
(``….images.remove(…)``, ``….containers.create(…)``). The same for the backup source that
restores no container image.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_MODULES = ("docker", "restoredrill.twins.docker")
CLIENTS = {"docker", "client", "api"}
COLLECTIONS = {"containers", "images", "networks", "volumes"}
SDK_METHODS = {"get", "list", "create", "remove", "run", "prune", "load", "build", "pull"}


def docker_uses(path: Path) -> list[str]:
    """Where ``path`` reaches Docker: ``line: what``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            if node.level:  # a relative import inside flows/ is flows' own
                names = [f"restoredrill.flows.{base}"]
        elif isinstance(node, ast.Attribute) and node.attr in CLIENTS:
            found.append(f"{node.lineno}: .{node.attr}")
            continue
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SDK_METHODS
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in COLLECTIONS
        ):
            found.append(f"{node.lineno}: .{node.func.value.attr}.{node.func.attr}()")
            continue
        else:
            continue
        for name in names:
            if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES):
                found.append(f"{node.lineno}: import {name}")
    return found


FLOWS = sorted((REPO / "flows").glob("*.py"))


@pytest.mark.parametrize("path", FLOWS, ids=[p.name for p in FLOWS])
def test_flows_hold_no_docker_client_calls(path: Path) -> None:
    assert docker_uses(path) == [], f"{path.name} reaches past twins/base.py into Docker"


def test_a_disk_image_restore_takes_no_docker_client() -> None:
    assert docker_uses(REPO / "twins" / "sources" / "disk_image.py") == []


def test_the_checker_sees_what_it_forbids(tmp_path: Path) -> None:
    """The test above can fail: each kind of Docker use is found."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import docker\n"
        "from restoredrill.twins.docker import DockerBackend\n"
        "def f(job):\n"
        "    job.docker.images.remove('x')\n"
        "    job.sandbox.client.api.kill('y')\n"
        "    engine.containers.create('z')\n"
        "    return job.sandbox.networks, spec.volumes.items()\n"
    )
    uses = docker_uses(sample)
    assert "1: import docker" in uses
    assert "2: import restoredrill.twins.docker" in uses
    assert {"4: .docker", "4: .images.remove()", "5: .client", "5: .api"} <= set(uses)
    assert "6: .containers.create()" in uses
    assert not [u for u in uses if u.startswith("7:")]  # the contract's own names are fine


def test_the_backends_sandboxes_and_twins_keep_the_contract() -> None:
    """The Docker backend implements every abstract method of the contract."""
    from restoredrill.twins import base, docker, vm_twin

    assert issubclass(docker.DockerBackend, base.Backend)
    assert issubclass(docker.DockerSandbox, base.Sandbox)
    assert not docker.DockerBackend.__abstractmethods__
    assert not docker.DockerSandbox.__abstractmethods__
    assert not docker.DockerTwin.__abstractmethods__
    assert not vm_twin.VMTwin.__abstractmethods__
    assert base.registered(docker.TWIN_KINDS, "vm", "kind of twin") is vm_twin.start_vm
    assert base.Restored(disks=(Path("d.qcow2"),)).kind == "vm"
    assert base.Restored(image="x").kind == "container"
