"""Shared fixtures: real engines and servers, required in CI, skipped only on a dev box."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from localservers import smtp, webhook  # noqa: F401 - fixtures shared by the alert tests
from vmfixtures import vm_formats, vm_raw  # noqa: F401 - the VM tests' disk images

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Flows called in-process here run on Prefect's temporary server, whose first start on a
# fresh PREFECT_HOME sets up its database: past Prefect's 20 s limit on a loaded machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _prefect_server_stopped():
    """Stop Prefect's temporary server if the tests started one in this process, once
    what it was sent is flushed (else it lives until exit, or on if pytest is killed)."""
    yield
    module = sys.modules.get("prefect.server.api.server")
    if module is not None:
        from restoredrill.flows.prefect_server import flush_to_server

        flush_to_server()
        module.SubprocessASGIServer().stop()


def missing(what: str) -> None:
    """Fail in CI (a missing install step must show), skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is missing", pytrace=False)
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="session")
def docker_client():
    """A client of the real Docker engine."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine
        missing(f"a Docker engine ({exc})")
    return client


@pytest.fixture(scope="session")
def restic_bin() -> str:
    path = shutil.which("restic")
    if not path:
        missing("the restic binary")
    return path


@pytest.fixture(scope="session")
def nodesets_dir() -> Path:
    """The real published OPC UA NodeSets (../shared/nodesets or $RESTOREDRILL_NODESETS)."""
    folder = Path(os.environ.get("RESTOREDRILL_NODESETS", SHARED / "nodesets"))
    if not (folder / "Opc.Ua.Di.NodeSet2.xml").is_file():
        missing(f"the OPC UA NodeSets in {folder}")
    return folder


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The offline-built Debian base image (python3, procps, iproute2), built once per machine."""
    from restoredrill.twins.images import ensure_base_image

    return ensure_base_image(docker_client, "restoredrill/base:bookworm")
