"""Host checks of a container twin go through the engine's exec API (issue 14, item 2):
no ``docker`` process per check. A ``docker`` shim first on PATH records every call
(and hands it to the real CLI, so a check that still used it would work, and be seen).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from pydantic import TypeAdapter

from restoredrill.checks.base import SandboxGuard, Status
from restoredrill.checks.registry import CheckSpec, run_check
from restoredrill.twins.base import Restored
from restoredrill.twins.docker import DockerTwin

pytestmark = pytest.mark.docker

SPECS: TypeAdapter[Any] = TypeAdapter(CheckSpec)


@pytest.fixture
def twin(docker_client, base_image):
    """A real DockerTwin around a container with no network at all."""
    container = docker_client.containers.run(
        base_image,
        ["sh", "-c", "echo historian=1 > /etc/m2io.conf && exec python3 -m http.server 8080"],
        name=f"rd-test-m2io-host-{uuid.uuid4().hex[:8]}",
        detach=True,
        network_mode="none",
        labels={"restoredrill.test": "m2io-host-exec"},
    )
    try:
        twin = DockerTwin(
            docker_client,
            container.id,
            "m2io-host",
            container.name,
            None,
            "none",
            Restored(image=base_image),
        )
        assert twin.exec("for i in $(seq 50); do ss -Hlnt | grep -q 8080 && exit 0; sleep 0.1; done; exit 1").exit_code == 0
        yield twin
    finally:
        container.remove(force=True)


@pytest.fixture
def docker_calls(tmp_path, monkeypatch) -> Path:
    """The file a ``docker`` shim first on PATH appends each call to."""
    real = shutil.which("docker")
    if real is None:
        missing("the docker CLI")
    log = tmp_path / "docker-calls.log"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{Path(real).parent}:/usr/bin:/bin")
    return log


def test_host_checks_of_a_container_spawn_no_docker_process(twin, docker_calls):
    specs = [
        {"kind": "host", "file": "/etc/m2io.conf", "contains": "historian=1", "mode": "0644"},
        {"kind": "host", "package": "python3"},
        {"kind": "host", "process": "http\\.server 8080"},
        {"kind": "host", "socket": "tcp://0.0.0.0:8080"},
        {"kind": "host", "command": "echo hello; exit 3", "exit_code": 3, "stdout_contains": "hello"},
        {"kind": "host", "file": "/etc/absent", "exists": False},
    ]
    results = [r for spec in specs for r in run_check(SPECS.validate_python(spec), twin, SandboxGuard())]
    assert [r.status for r in results] == [Status.PASS] * len(results), [
        (r.name, r.observed, r.message) for r in results
    ]
    assert not docker_calls.exists(), docker_calls.read_text()


def test_a_failing_host_check_says_what_it_saw_through_exec(twin, docker_calls):
    spec = {"kind": "host", "file": "/etc/m2io.conf", "contains": "historian=2"}
    (result,) = run_check(SPECS.validate_python(spec), twin, SandboxGuard())
    assert (result.status, result.expected) == (Status.FAIL, "historian=2")
    assert result.observed == "not found; nearest line: historian=1"
    assert not docker_calls.exists()
