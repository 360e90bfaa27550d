"""The ``restoredrill`` command as a user runs it: exit codes and messages, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sites import BAD_INPUTS, GOOD


def restoredrill(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``restoredrill`` command, as a user runs it."""
    exe = Path(sys.executable).with_name("restoredrill")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_exits_2_on_each_bad_input_without_a_traceback(tmp_path: Path, command: str) -> None:
    for name, content, expected in BAD_INPUTS:
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        proc = restoredrill(command, str(path))
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr, name
        assert expected.format(path=path) in proc.stderr, (name, proc.stderr[-2000:])
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)
    proc = restoredrill(command, str(big))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{big}: the site file is larger than 16 MiB, the limit for a config file" in proc.stderr


def test_validate_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    proc = restoredrill("validate", str(path))
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr
