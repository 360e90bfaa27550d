"""Shared fixtures: real engines and servers, required in CI, skipped only on a dev box.

Every test session runs in a home of its own: ``PREFECT_HOME``, ``XDG_CONFIG_HOME`` and
``XDG_STATE_HOME`` point into a temporary directory (set before any test module imports
Prefect), an exported ``PREFECT_API_URL`` is ignored, and ``free_subnet`` / ``unique_tag``
hand out sandbox subnets and image tags no other test process on this engine uses.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from localservers import smtp, webhook  # noqa: F401 - fixtures shared by the alert tests
from vmfixtures import vm_formats, vm_raw  # noqa: F401 - the VM tests' disk images

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Flows called in-process here run on Prefect's temporary server, whose first start on a
# fresh PREFECT_HOME sets up its database: past Prefect's 20 s limit on a loaded machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

HOME = Path(tempfile.mkdtemp(prefix="restoredrill-tests-"))
"""This session's own Prefect home and config and state directories (removed at its end)."""
atexit.register(shutil.rmtree, HOME, True)  # also when no test ran (--collect-only, -k none)
os.environ.pop("PREFECT_API_URL", None)  # tests that want a server start their own
for _name, _sub in (
    ("PREFECT_HOME", "prefect"),
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_STATE_HOME", "state"),
):
    os.environ[_name] = str(HOME / _sub)
set_hypothesis_home_dir(HOME / "hypothesis")  # not .hypothesis/ in the working tree

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _own_home():
    """At the end: stop Prefect's temporary server if the tests started one in this process,
    once what it was sent is flushed (else it lives until exit, or on if pytest is killed),
    then remove the session's home."""
    yield
    module = sys.modules.get("prefect.server.api.server")
    if module is not None:
        from restoredrill.flows.prefect_server import flush_to_server

        flush_to_server()
        module.SubprocessASGIServer().stop()
    shutil.rmtree(HOME, ignore_errors=True)


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


# --------------------------------------------------------------------------- shared engine

SUBNETS = ipaddress.ip_network("10.240.0.0/13")
"""Where tests take their sandbox subnets (10.240.0.0 - 10.247.255.255); 10.249.0.0/16
holds paper sites that are validated but never run (see sites.py)."""
_CLAIMS = Path(tempfile.gettempdir()) / "restoredrill-test-subnets"
_held: list[int] = []
"""Locks on the subnets this process took: released when it exits, however it exits."""


def _engine_subnets(client) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    used = []
    for net in client.api.networks():
        for conf in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(conf.get("Subnet", ""), strict=False))
    return used


@pytest.fixture(scope="session")
def free_subnet(docker_client) -> Callable[[], str]:
    """``free_subnet()``: a /24 no Docker network uses now and no other test process took
    (a lock file each, in $TMPDIR/restoredrill-test-subnets), for every test that makes a
    sandbox; a run on it fits the production addresses ``subnet[10]``, ``subnet[20]``, …"""
    _CLAIMS.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        _CLAIMS.chmod(0o1777)

    def take() -> str:
        used = _engine_subnets(docker_client)
        for candidate in SUBNETS.subnets(new_prefix=24):
            if any(candidate.overlaps(u) for u in used if u.version == 4):
                continue
            fd = os.open(_CLAIMS / str(candidate.network_address), os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held.append(fd)
            return str(candidate)
        raise RuntimeError(f"no free /24 left in {SUBNETS} for this test session")

    return take


@pytest.fixture(scope="session")
def unique_tag() -> Callable[[str], str]:
    """``unique_tag("app")``: an image tag no other test, process or checkout uses."""

    def tag(name: str) -> str:
        return f"restoredrill-test/{name}:{os.getpid()}-{uuid.uuid4().hex[:8]}"

    return tag
