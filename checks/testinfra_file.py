"""``testinfra``: the plant's own pytest file of testinfra tests, run against the twin.

The file is an ordinary testinfra test module (tests take the usual ``host`` fixture). It
runs in a separate ``python -m pytest`` process with ``--hosts=<twin's testinfra URL>``
and only the testinfra plugin loaded (and, for a twin logged in to over SSH/WinRM, the
plugin of :mod:`.remote`, run from inside the twin's sandbox); each test becomes one result (a skipped or xfailed
test passes, its reason in the message). ``file`` should be absolute: the inventory loader
(flows) resolves a relative path against the site file's directory before the check runs;
a path still relative here is taken relative to the working directory.

Example (a ``checks:`` entry of a system in site.yaml)::

    - {kind: testinfra, file: tests/test_mes.py, select: "not slow"}
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from pydantic import Field

from . import remote
from .base import CheckError, CheckResult, CheckSpecBase, SandboxGuard, Status, Target, error_result
from .host import no_shell

SNIPPET = 200
MESSAGE = 4000


class TestinfraCheck(CheckSpecBase):
    """A pytest file of testinfra tests (relative paths: to the site file's directory)."""

    __test__ = False  # not a pytest test class, despite its name

    kind: Literal["testinfra"] = "testinfra"
    file: Path = Field(description="the test file, e.g. tests/mes_test.py")
    select: str | None = Field(None, description="pytest -k expression choosing tests")
    timeout: float = Field(120.0, gt=0, description="seconds for the whole file")

    def default_name(self) -> str:
        return f"testinfra {self.file.name}"


Spec = TestinfraCheck
"""The spec of this check kind (the registry's convention)."""
NETWORK = False
"""It goes through the twin (``docker exec``), not the network ..."""
network = remote.network
"""... unless the twin is logged in to over SSH/WinRM (a VM): then from inside its sandbox."""


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Run the file's tests against ``target``; one result per test; never raises."""
    started = time.perf_counter()
    try:
        path = Path(spec.file).absolute()
        if not path.is_file():
            raise CheckError(f"testinfra file {path} does not exist")
        url = target.testinfra_url
        if not url:
            raise CheckError(no_shell(target, "testinfra tests"))
        hosts, env = remote.subprocess_host(target)
        with tempfile.TemporaryDirectory(prefix="restoredrill-testinfra-") as tmp:
            junit = Path(tmp) / "report.xml"
            rc, output = _pytest(path, hosts, spec, Path(tmp), junit, env)
            if not junit.is_file() or rc in (3, 4):
                raise CheckError(f"pytest could not run {path} (exit {rc}): {_tail(output, 15)}")
            results = parse_junit(junit, spec, path, url)
        if rc == 5 or not results:
            raise CheckError(
                f"no tests in {path}" + (f" match -k {spec.select!r}" if spec.select else "")
            )
        return results
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started)]


def _pytest(
    path: Path, url: str, spec: Spec, tmp: Path, junit: Path, extra_env: dict[str, str]
) -> tuple[int, str]:
    """``python -m pytest FILE --hosts=URL`` isolated from any surrounding pytest config."""
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\njunit_family = xunit2\n")
    cmd = [
        sys.executable, "-m", "pytest", str(path), f"--hosts={url}",
        "-p", "testinfra.plugin", "-p", "no:cacheprovider",
        "-c", str(ini), "--rootdir", str(path.parent), "--confcutdir", str(path.parent),
        f"--junitxml={junit}", "-q", "--no-header", "-rN",
    ]  # fmt: skip
    if spec.select:
        cmd += ["-k", spec.select]
    if extra_env:  # a login over the network: the plugin registering its backends
        cmd[4:4] = ["-p", remote.PLUGIN]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra_env)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(
        cmd, cwd=path.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CheckError(f"{path.name} did not finish within {spec.timeout:g}s") from None
    return proc.returncode, output


def parse_junit(report: Path, spec: Spec, path: Path, url: str) -> list[CheckResult]:
    """One result per ``<testcase>`` of a junit XML report."""
    prefix = spec.name or path.name
    results = []
    for case in ET.parse(report).getroot().iter("testcase"):
        test = case.get("name", "?")
        for noise in (f"[{url}]", f"{url}-", f"-{url}"):
            test = test.replace(noise, "")
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{prefix}::{cls}::{test}" if cls and cls != path.stem else f"{prefix}::{test}"
        status, observed, message = Status.PASS, "passed", ""
        for child in case:
            text = (child.get("message") or "").strip()
            if child.tag == "failure":
                status, observed, message = Status.FAIL, _first_line(text) or "failed", text
            elif child.tag == "error":
                status, observed = Status.ERROR, "error"
                message = f"{text}\n{_explanation(child.text or '')}".strip()
            elif child.tag == "skipped":
                observed, message = "skipped", f"skipped: {text}"
            else:
                continue
            break
        results.append(
            CheckResult(
                name=name,
                kind=spec.kind,
                status=status,
                expected="passed",
                observed=observed,
                duration_s=round(float(case.get("time") or 0), 4),
                message=message[:MESSAGE],
            )
        )
    return results


def _explanation(text: str) -> str:
    """pytest's ``E   ...`` lines of a traceback (its last lines if there are none)."""
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    return "\n".join(lines[-15:]) if lines else _tail(text, 15)


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= SNIPPET else line[: SNIPPET - 1] + "…"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
