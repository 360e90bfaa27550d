"""Checks against a real container on an internal network this test creates."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from restoredrill.checks import host, http, tcp, testinfra_file
from restoredrill.checks.base import AddressTarget, CheckResult, SandboxGuard, Status
from restoredrill.checks.registry import KINDS, CheckSpec, run_check
from restoredrill.twins.base import ExecOutput

pytestmark = pytest.mark.docker

DATA = Path(__file__).parent / "data"
CONF = "historian=10.77.0.10\nline_rate=42\n"
HEALTH = '{"status": "ok", "db": {"rows": 42}, "ready": true, "items": [{"name": "a"}]}'
SPECS: TypeAdapter[Any] = TypeAdapter(CheckSpec)


@dataclass
class ContainerTarget:
    """A minimal Target around a container (independent of twins/docker.py)."""

    name: str
    address: str | None
    container: Any

    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecOutput:
        cmd = ["sh", "-c", command] if isinstance(command, str) else list(command)
        rc, (out, err) = self.container.exec_run(cmd, demux=True)
        return ExecOutput(rc, (out or b"").decode(), (err or b"").decode())

    @property
    def testinfra_url(self) -> str:
        return f"docker://{self.container.id}"


@pytest.fixture(scope="module")
def sandbox(docker_client, base_image, free_subnet):
    """(target, guard): a container serving /srv on :8080, with /etc/mes/mes.conf, alone on
    an internal network; the guard allows only that network."""
    tag = uuid.uuid4().hex[:8]
    subnet = free_subnet()
    network = docker_client.networks.create(
        f"rd-test-checks-{tag}",
        driver="bridge",
        internal=True,
        ipam={"Config": [{"Subnet": subnet}]},
        labels={"restoredrill.test": "checks"},
    )
    container = None
    try:
        container = docker_client.containers.run(
            base_image,
            ["python3", "-m", "http.server", "8080", "--directory", "/srv"],
            name=f"rd-test-checks-{tag}",
            detach=True,
            network=network.name,
            labels={"restoredrill.test": "checks"},
        )
        target = ContainerTarget(f"checks-{tag}", None, container)
        setup = target.exec(
            f"mkdir -p /etc/mes /srv && printf %s '{CONF}' > /etc/mes/mes.conf"
            f" && chmod 0644 /etc/mes/mes.conf && printf %s '{HEALTH}' > /srv/health.json"
        )
        assert setup.exit_code == 0, setup.stderr
        container.reload()
        target.address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        deadline = time.monotonic() + 15
        while tcp.probe(target.address, 8080, 1) != "open":
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.1)
        yield target, SandboxGuard([subnet])
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()


def check(spec: dict[str, Any], sandbox: tuple[Any, SandboxGuard]) -> list[CheckResult]:
    target, guard = sandbox
    return run_check(SPECS.validate_python(spec), target, guard)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def statuses(results: list[CheckResult]) -> list[Status]:
    return [r.status for r in results]


# --- registry -------------------------------------------------------------------------


def test_registry_knows_kinds_and_rejects_bad_specs():
    assert {"host", "testinfra", "tcp", "http"} <= set(KINDS)
    assert isinstance(SPECS.validate_python({"kind": "tcp", "port": 22}), tcp.Spec)
    schema = SPECS.json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(KINDS)
    bad = [
        ({"kind": "host", "file": "/x", "package": "y"}, "exactly one of"),
        ({"kind": "host"}, "exactly one of"),
        ({"kind": "host", "file": "/x", "running": True}, "running cannot be asserted of a file"),
        ({"kind": "host", "file": "/x", "mode": "999"}, "not a file mode"),
        ({"kind": "host", "process": "(", "running": True}, "not a regular expression"),
        ({"kind": "http", "port": 80, "url": "http://{address}/"}, "either port"),
        ({"kind": "tcp", "port": 22, "bogus": 1}, "Extra inputs"),
        ({"kind": "teleport"}, "does not match any of the expected tags"),
    ]
    for spec, message in bad:
        with pytest.raises(ValidationError, match=message):
            SPECS.validate_python(spec)
    # YAML reads mode 0644 as 644 and 0o644 as 420: both mean rw-r--r--
    assert host.Spec(file="/x", mode=644).mode == "0644"
    assert SPECS.validate_python({"kind": "http", "port": 1, "json": {"a": 1}}).json_fields == {
        "a": 1
    }


def test_run_check_turns_a_crash_into_an_error_result():
    class Broken:
        name = "broken"

        @property
        def address(self) -> str:
            raise RuntimeError("boom")

    [res] = run_check(tcp.Spec(port=1), Broken(), SandboxGuard())
    assert res.status is Status.ERROR and "boom" in res.message


# --- host -----------------------------------------------------------------------------


def test_host_file_passes(sandbox):
    digest = hashlib.sha256(CONF.encode()).hexdigest()
    spec = {"kind": "host", "file": "/etc/mes/mes.conf", "exists": True, "contains": "historian=10.77.0.10",
            "mode": "0644", "owner": "root", "group": "root", "sha256": digest}  # fmt: skip
    results = check(spec, sandbox)
    assert statuses(results) == [Status.PASS] * 6, results
    named = by_name(results)
    assert named['file /etc/mes/mes.conf contains "historian=10.77.0.10"'].observed == "found"
    assert named["file /etc/mes/mes.conf mode 0644"].observed == "0644"


def test_host_file_fails_with_expected_and_observed(sandbox):
    spec = {"kind": "host", "file": "/etc/mes/mes.conf", "contains": ["historian=10.77.0.99", "line_rate=42"],
            "mode": "0600", "owner": "mes", "sha256": "0" * 64}  # fmt: skip
    named = by_name(check(spec, sandbox))
    wrong = named['file /etc/mes/mes.conf contains "historian=10.77.0.99"']
    assert wrong.status is Status.FAIL and wrong.expected == "historian=10.77.0.99"
    assert "historian=10.77.0.10" in wrong.observed  # the line that holds the key
    assert named['file /etc/mes/mes.conf contains "line_rate=42"'].passed
    mode = named["file /etc/mes/mes.conf mode 0600"]
    assert (mode.status, mode.expected, mode.observed) == (Status.FAIL, "0600", "0644")
    assert named["file /etc/mes/mes.conf owner mes"].observed == "root"
    sha = next(r for r in named.values() if "sha256" in r.name)
    assert (sha.status, sha.observed) == (Status.FAIL, hashlib.sha256(CONF.encode()).hexdigest())

    [absent] = check({"kind": "host", "file": "/etc/mes/nope.conf"}, sandbox)
    assert (absent.status, absent.expected, absent.observed) == (Status.FAIL, "present", "absent")
    [gone] = check({"kind": "host", "file": "/etc/mes/nope.conf", "exists": False}, sandbox)
    assert gone.passed


def test_host_package(sandbox):
    ok = check(
        {"kind": "host", "package": "python3", "version": "3.11*", "installed": True}, sandbox
    )
    assert statuses(ok) == [Status.PASS, Status.PASS], ok
    [missing] = check({"kind": "host", "package": "nginx"}, sandbox)
    assert (missing.status, missing.expected, missing.observed) == (
        Status.FAIL,
        "installed",
        "not installed",
    )
    [old] = check({"kind": "host", "package": "python3", "version": "2.7*"}, sandbox)
    assert old.status is Status.FAIL and old.observed.startswith("3.11")


def test_host_process_matches_full_command_line(sandbox):
    [ok] = check({"kind": "host", "process": r"python3 -m http\.server 8080"}, sandbox)
    assert ok.passed and "http.server" in ok.observed[0]
    [bad] = check({"kind": "host", "process": "postgres: .*checkpointer", "running": True}, sandbox)
    assert (bad.status, bad.expected, bad.observed) == (Status.FAIL, "running", "not running")
    [ps] = check({"kind": "host", "process": "^ps ", "running": False}, sandbox)
    assert ps.passed  # testinfra's own ps is not counted


def test_host_service_without_init_is_an_error_that_says_why(sandbox):
    [res] = check({"kind": "host", "service": "nginx", "running": True}, sandbox)
    assert res.status is Status.ERROR
    assert "no service manager" in res.message and "process" in res.message


def test_host_socket(sandbox):
    [ok] = check({"kind": "host", "socket": "tcp://0.0.0.0:8080"}, sandbox)
    assert ok.passed and ok.observed == "listening"
    [bad] = check({"kind": "host", "socket": "tcp://0.0.0.0:5432", "listening": True}, sandbox)
    assert (bad.status, bad.observed) == (Status.FAIL, "not listening")


def test_host_command(sandbox):
    ok = check({"kind": "host", "command": "cat /etc/mes/mes.conf", "exit_code": 0,
                "stdout_contains": "line_rate=42"}, sandbox)  # fmt: skip
    assert statuses(ok) == [Status.PASS, Status.PASS], ok
    [err] = check(
        {"kind": "host", "command": "echo oops >&2; exit 3", "stderr_contains": "fine"}, sandbox
    )
    assert (err.status, err.expected, err.observed) == (
        Status.FAIL,
        "fine",
        "oops",
    )  # only what was asserted
    [res] = check({"kind": "host", "command": "echo oops >&2; exit 3"}, sandbox)
    assert (res.status, res.expected, res.observed) == (Status.FAIL, 0, 3)
    assert "oops" in res.message
    [slow] = check({"kind": "host", "command": "sleep 30", "timeout": 1}, sandbox)
    assert slow.status is Status.FAIL and "timed out" in slow.message
    ps = sandbox[0].exec("ps -eo args")
    assert ps.exit_code == 0 and "sleep 30" not in ps.stdout.splitlines()  # stopped, not left


def test_host_needs_a_shell():
    [res] = host.run(
        host.Spec(file="/etc/hosts"), AddressTarget("plc", "127.0.0.1"), SandboxGuard()
    )
    assert res.status is Status.ERROR and "no shell" in res.message


# --- testinfra ------------------------------------------------------------------------


def test_testinfra_file_each_test_is_a_result(sandbox):
    results = check({"kind": "testinfra", "file": str(DATA / "testinfra_mes.py")}, sandbox)
    named = by_name(results)
    assert set(named) == {
        "testinfra_mes.py::test_mes_config_points_at_historian",
        "testinfra_mes.py::test_web_server_runs",
        "testinfra_mes.py::test_mes_config_is_private",
    }, named
    assert named["testinfra_mes.py::test_web_server_runs"].passed
    assert named["testinfra_mes.py::test_mes_config_points_at_historian"].passed
    failed = named["testinfra_mes.py::test_mes_config_is_private"]
    assert (failed.status, failed.observed) == (Status.FAIL, "AssertionError: assert 420 == 384")
    assert failed.message.startswith("AssertionError: assert 420 == 384\n")  # 0o644 is not 0o600


def test_testinfra_missing_file_names_it(sandbox, tmp_path):
    target, guard = sandbox
    missing_file = tmp_path / "nope_test.py"
    [res] = testinfra_file.run(testinfra_file.Spec(file=missing_file), target, guard)
    assert res.status is Status.ERROR and str(missing_file) in res.message
    broken = tmp_path / "broken_test.py"
    broken.write_text("def test_x(host):\n    assert (\n")
    [res] = testinfra_file.run(testinfra_file.Spec(file=broken), target, guard)
    assert res.status is Status.ERROR and "SyntaxError" in res.message


# --- tcp ------------------------------------------------------------------------------


def test_tcp_open_and_closed(sandbox):
    [ok] = check({"kind": "tcp", "port": 8080}, sandbox)
    assert (ok.status, ok.expected, ok.observed) == (Status.PASS, "open", "open")
    [bad] = check({"kind": "tcp", "port": 5432, "timeout": 5}, sandbox)
    # "refused" is the answer of a closed port (a wait would end "timeout")
    assert (bad.status, bad.expected, bad.observed) == (Status.FAIL, "open", "refused")
    [closed] = check({"kind": "tcp", "port": 5432, "open": False}, sandbox)
    assert closed.passed and closed.expected == "closed"


def test_guard_refuses_outside_addresses_before_any_traffic(sandbox, monkeypatch):
    def no_traffic(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", no_traffic)
    _, guard = sandbox
    outside = AddressTarget("production-plc", "192.0.2.1")  # TEST-NET-1, never contacted
    for spec in (
        tcp.Spec(port=502),
        http.Spec(port=80),
        http.Spec(url="http://192.0.2.1:8080/health"),
    ):
        [res] = run_check(spec, outside, guard)
        assert res.status is Status.ERROR and "outside the sandbox" in res.message, res
        assert "192.0.2.1" in res.name
    [res] = run_check(tcp.Spec(port=502, host="plc.example"), outside, guard)
    assert res.status is Status.ERROR and "IP addresses only" in res.message


# --- http -----------------------------------------------------------------------------


def test_http_passes(sandbox):
    spec = {"kind": "http", "port": 8080, "path": "/health.json", "status": 200, "contains": '"status": "ok"',
            "json": {"status": "ok", "db.rows": 42, "ready": True, "items.0.name": "a"}}  # fmt: skip
    results = check(spec, sandbox)
    assert statuses(results) == [Status.PASS] * 6, results
    named = by_name(results)
    address = sandbox[0].address
    assert named[f"http http://{address}:8080/health.json json db.rows == 42"].observed == 42
    [via_url] = check({"kind": "http", "url": "http://{address}:8080/health.json"}, sandbox)
    assert via_url.passed and via_url.observed == 200


def test_http_fails_with_expected_and_observed(sandbox):
    spec = {"kind": "http", "port": 8080, "path": "/health.json", "contains": "degraded",
            "json": {"db.rows": 41, "db.missing": 1, "ready": 1}}  # fmt: skip
    results = check(spec, sandbox)

    def one(part: str) -> CheckResult:
        [res] = [r for r in results if part in r.name]
        return res

    assert one("status 200").passed
    assert one("contains").status is Status.FAIL and '"rows": 42' in one("contains").observed
    rows = one("json db.rows ==")
    assert (rows.status, rows.expected, rows.observed) == (Status.FAIL, 41, 42)
    assert one("db.missing").observed == http.MISSING
    assert one("json ready").status is Status.FAIL  # true is not 1
    [not_found] = check({"kind": "http", "port": 8080, "path": "/nope"}, sandbox)
    assert (not_found.status, not_found.expected, not_found.observed) == (Status.FAIL, 200, 404)
    [refused] = check({"kind": "http", "port": 5432, "path": "/"}, sandbox)
    assert (refused.status, refused.observed) == (Status.FAIL, "refused")
