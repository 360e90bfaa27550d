"""VM inventory promises kept through a real process: the CLI (its exit code, no
traceback) and testinfra's pytest plugin over SSH. Moved out of tests/unit: each starts a
Python process or a pytest session of its own (integration tests by nature)."""

from __future__ import annotations

import subprocess
import sys

from vmsite import FakeVM, closed_port, site

from restoredrill.twins.access import SshAccess


def test_more_memory_than_the_host_has_exits_2_naming_the_line(tmp_path) -> None:
    path = site(tmp_path, "      vm: {memory: 64t}")
    done = subprocess.run(
        [sys.executable, "-m", "restoredrill.flows.cli", "validate", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert ":8: systems[0].run.vm.memory: vm.memory 64TiB is more than this host can give" in said
    assert "Traceback" not in said


def test_testinfra_file_over_ssh_runs_the_plugin_and_never_shows_the_password(
    monkeypatch, tmp_path
) -> None:
    from restoredrill.checks.base import SandboxGuard, Status
    from restoredrill.checks.testinfra_file import TestinfraCheck
    from restoredrill.checks.testinfra_file import run as run_file

    monkeypatch.setenv("RD_TEST_SSH_PW", "S3cret-file")
    (tmp_path / "test_hmi.py").write_text(
        "def test_up(host):\n    assert host.run('true').rc == 0\n"
    )
    port = closed_port()
    target = FakeVM("127.0.0.1", SshAccess(password_env="RD_TEST_SSH_PW", port=port, timeout=5))
    results = run_file(
        TestinfraCheck(file=tmp_path / "test_hmi.py"), target, SandboxGuard(["0.0.0.0/0"])
    )
    assert [r.name for r in results] == ["test_hmi.py::test_up"]
    assert results[0].status is Status.FAIL
    assert f"ssh root@127.0.0.1:{port}: cannot connect: connection refused" in results[0].message
    assert "S3cret-file" not in results[0].model_dump_json()
