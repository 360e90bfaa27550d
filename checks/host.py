"""``host``: one resource of the restored system and assertions about it, seen through testinfra.

One spec names exactly one resource (``file``, ``package``, ``process``, ``service``,
``socket`` or ``command``) and any of that resource's assertions; each assertion becomes
one result with its expected and observed value. Without assertions the resource is only
required to be there (file exists, package installed, process/service running, socket
listening, command exits 0). testinfra reaches a container twin through the twin's own
``exec`` (the engine's exec API, with its timeout: no ``docker`` process per command), a
VM twin over SSH or WinRM from inside its sandbox (:mod:`.remote`); several facts of one
file come from one command.

Example (a ``checks:`` entry of a system in site.yaml)::

    - {kind: host, file: /etc/mes/mes.conf, contains: "url = http://10.77.0.10:8080", mode: "0640", owner: root}
"""

from __future__ import annotations

import fnmatch
import functools
import re
import shlex
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from restoredrill.modes import parse_mode

from . import remote
from .base import (
    CheckError,
    CheckResult,
    CheckSpecBase,
    SandboxGuard,
    Target,
    error_result,
    result,
)

RESOURCES: dict[str, tuple[str, ...]] = {
    "file": ("exists", "contains", "mode", "owner", "group", "sha256"),
    "package": ("installed", "version"),
    "process": ("running",),
    "service": ("running", "enabled"),
    "socket": ("listening",),
    "command": ("exit_code", "stdout_contains", "stderr_contains"),
}
"""Each resource and the assertions it accepts."""

DEFAULTS: dict[str, dict[str, Any]] = {
    "file": {"exists": True},
    "package": {"installed": True},
    "process": {"running": True},
    "service": {"running": True},
    "socket": {"listening": True},
    "command": {"exit_code": 0},
}
"""What is asserted when a spec names a resource and nothing else."""

INIT_SYSTEMS = {"systemd", "init", "openrc-init", "runit", "runit-init", "s6-svscan", "supervisord"}
SNIPPET = 300


class HostCheck(CheckSpecBase):
    """One resource of the twin (exactly one of the resource keys) and what must hold for it."""

    kind: Literal["host"] = "host"

    file: str | None = Field(None, description="absolute path of a file or directory in the twin")
    package: str | None = Field(None, description="a package name (dpkg, rpm, apk, ...)")
    process: str | None = Field(
        None, description="regular expression searched in each full command line"
    )
    service: str | None = Field(
        None, description="a service name (needs a service manager in the twin)"
    )
    socket: str | None = Field(
        None, description="e.g. tcp://0.0.0.0:8080, udp://:161, unix:///run/x.sock"
    )
    command: str | None = Field(None, description="a shell command run in the twin (sh -c)")

    exists: bool | None = Field(None, description="file: exists (true) or is absent (false)")
    contains: str | list[str] | None = Field(
        None, description="file: literal text (each) found in it"
    )
    mode: str | None = Field(
        None, description='file: permission bits, e.g. "0644" (quote it in YAML)'
    )
    owner: str | None = Field(None, description="file: owning user name")
    group: str | None = Field(None, description="file: owning group name")
    sha256: str | None = Field(None, description="file: hex SHA-256 of its content")
    installed: bool | None = Field(None, description="package: installed or not")
    version: str | None = Field(None, description='package: version, glob allowed, e.g. "3.11*"')
    running: bool | None = Field(None, description="process/service: running or not")
    enabled: bool | None = Field(None, description="service: enabled at boot or not")
    listening: bool | None = Field(None, description="socket: listening or not")
    exit_code: int | None = Field(None, description="command: expected exit status")
    stdout_contains: str | list[str] | None = Field(
        None, description="command: literal text in stdout"
    )
    stderr_contains: str | list[str] | None = Field(
        None, description="command: literal text in stderr"
    )

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return parse_mode(value)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("is not a SHA-256 (64 hex digits)")
        return value.lower() if value else value

    @field_validator("process")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(tcp|udp)://[^/]*:\d+|unix://.+", value):
            raise ValueError(
                f"{value!r} is not a socket (use tcp://0.0.0.0:8080, udp://:161, unix:///path)"
            )
        return value

    @model_validator(mode="after")
    def _one_resource(self) -> HostCheck:
        named = [r for r in RESOURCES if getattr(self, r) is not None]
        if len(named) != 1:
            raise ValueError(
                f"a host check names exactly one of {', '.join(RESOURCES)}"
                + (f" (got {', '.join(named)})" if named else "")
            )
        allowed = RESOURCES[named[0]]
        given = {a for r in RESOURCES.values() for a in r if getattr(self, a) is not None}
        wrong = sorted(given - set(allowed))
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} cannot be asserted of a {named[0]} (use {', '.join(allowed)})"
            )
        return self

    @property
    def resource(self) -> str:
        return next(r for r in RESOURCES if getattr(self, r) is not None)

    def assertions(self) -> dict[str, Any]:
        """The assertions to check, in declaration order (the resource's default if none)."""
        given = {
            a: getattr(self, a) for a in RESOURCES[self.resource] if getattr(self, a) is not None
        }
        return given or dict(DEFAULTS[self.resource])

    def default_name(self) -> str:
        res = self.resource
        value = getattr(self, res)
        if res == "process":
            return f'process "{value}"'
        if res == "command":
            return f'command "{_short(value, 60)}"'
        return f"{res} {value}"


Spec = HostCheck
"""The spec of this check kind (the registry's convention)."""
NETWORK = False
"""It goes through the twin (``docker exec``), not the network ..."""
network = remote.network
"""... unless the twin is logged in to over SSH/WinRM (a VM): then from inside its sandbox."""


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Observe the spec's resource in ``target`` and judge each assertion; never raises."""
    started = time.perf_counter()
    try:
        if not target.testinfra_url:
            raise CheckError(no_shell(target, "host checks"))
        host = _host(target, spec.timeout)
        return _OBSERVERS[spec.resource](spec, host, started)
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started)]


def _host(target: Target, timeout: float) -> Any:
    """A testinfra host for ``target``: a container twin's commands go through its own
    ``exec`` (each allowed ``timeout`` and a few seconds more: a command check kills its
    command itself after ``timeout``), anything else as :func:`.remote.host_for` reaches
    it. testinfra is imported here: only sites with host checks pay for it."""
    import testinfra.host

    if remote.access_of(target) is None and str(target.testinfra_url).startswith("docker://"):
        return testinfra.host.Host(_exec_backend()(target, timeout + EXEC_MARGIN))
    return remote.host_for(target)


EXEC_MARGIN = 5.0
"""Seconds an exec may take beyond the check's own timeout before it is killed."""


@functools.cache
def _exec_backend() -> type:
    """testinfra's backend over a target's ``exec`` (built once, testinfra imported late)."""
    from testinfra.backend.base import BaseBackend, CommandResult

    class ExecBackend(BaseBackend):
        """Runs each command through ``target.exec`` as ``/bin/sh -c COMMAND``, the way
        testinfra's docker backend runs ``docker exec ID /bin/sh -c COMMAND``."""

        NAME = "docker"

        def __init__(self, target: Target, timeout: float) -> None:
            self.target = target
            self.timeout = timeout
            super().__init__(str(target.testinfra_url))

        def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
            cmd = self.get_command(command, *args)
            out = self.target.exec(cmd, timeout=self.timeout)
            return self.result(out.exit_code, self.encode(cmd), out.stdout, out.stderr)

    return ExecBackend


def no_shell(target: Target, what: str) -> str:
    """Why ``target`` cannot run ``what`` (a VM says how to let checks log in)."""
    if getattr(target, "kind", "") == "vm":
        return (
            f"{target.name} is a VM without a login for checks: {what} need run.vm.ssh "
            "(or run.vm.winrm) with the account and where its password or key is"
        )
    return f"{target.name} has no shell: {what} need a twin that runs commands"


# --- one observer per resource -----------------------------------------------------


def _file(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    """One exec: existence, stat, sha256 and every ``contains`` of the file."""
    want = spec.assertions()
    contains = _as_list(want.get("contains"))
    out = host.run(_file_script(str(spec.file), "sha256" in want, contains))
    facts = dict(line.partition("=")[::2] for line in out.stdout.splitlines() if "=" in line)
    if "exists" not in facts:
        raise CheckError(
            f"cannot inspect {spec.file}: {(out.stderr or out.stdout).strip()[:SNIPPET]}"
        )
    return [
        _judged(spec, what, ok, expected, observed, started, message)
        for key, expected in want.items()
        for what, ok, expected, observed, message in _file_findings(key, expected, facts, contains)
    ]


def _file_script(file: str, sha256: bool, contains: list[str]) -> str:
    """The shell lines that print the file's facts as ``name=value``."""
    lines = [
        f"f={shlex.quote(file)}",
        'if [ -e "$f" ]; then echo exists=1',
        "stat -c 'stat=%a %U %G %F' -- \"$f\"",
    ]
    if sha256:
        lines.append(
            'if s=$(sha256sum -- "$f" 2>&1); then echo "sha256=${s%% *}"; '
            'else echo "sha256err=$(echo "$s" | head -n1)"; fi'
        )
    for i, text in enumerate(contains):
        near = _key_of(text)
        nearest = (
            f'echo "n{i}=$(grep -m1 -F -e {shlex.quote(near)} -- "$f" | head -c {SNIPPET})"; '
            if near
            else ""
        )
        lines.append(
            f'if grep -qF -e {shlex.quote(text)} -- "$f"; then echo c{i}=1; else echo c{i}=0; '
            + nearest
            + "fi"
        )
    lines.append("else echo exists=0; fi")
    return "\n".join(lines)


Finding = tuple[str, bool, Any, Any, str]
"""What a file check found: (what, ok, expected, observed, message)."""


def _file_findings(
    key: str, expected: Any, facts: dict[str, str], contains: list[str]
) -> list[Finding]:
    """The findings of one assertion (``exists``, ``contains``, ``mode``, ...) from the facts."""
    absent = "absent"
    exists = facts["exists"] == "1"
    stat: list[str | None] = [None] * 4
    if exists and facts.get("stat"):
        stat = [*facts["stat"].split(" ", 3), None, None, None][:4]
    bits, owner, group, ftype = stat
    if key == "exists":
        present = "present" if expected else absent
        shown = f"present ({ftype})" if exists else absent
        return [("exists" if expected else "is absent", exists == expected, present, shown, "")]
    if key == "contains":
        return [_contains(i, text, facts, exists) for i, text in enumerate(contains)]
    if key in ("mode", "owner", "group"):
        seen = {"mode": bits.zfill(4) if bits else None, "owner": owner, "group": group}[key]
        return [(f"{key} {expected}", seen == expected, expected, seen if exists else absent, "")]
    if key == "sha256":
        digest = facts.get("sha256") if exists else absent
        observed = digest or f"unreadable ({ftype})"
        failure = facts.get("sha256err", "")
        return [(f"sha256 {expected[:12]}…", digest == expected, expected, observed, failure)]
    return []


def _contains(i: int, text: str, facts: dict[str, str], exists: bool) -> Finding:
    found = facts.get(f"c{i}") == "1"
    near = facts.get(f"n{i}") or None
    if found:
        observed = "found"
    elif not exists:
        observed = "absent"
    else:
        observed = f"not found; nearest line: {near}" if near else "not found"
    return (f'contains "{text}"', found, text, observed, "")


def _package(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    pkg = host.package(spec.package)
    installed = pkg.is_installed
    version = pkg.version if installed else None
    results = []
    for key, expected in spec.assertions().items():
        if key == "installed":
            results.append(
                _judged(
                    spec,
                    "installed" if expected else "not installed",
                    installed == expected,
                    _yes(expected, "installed"),
                    _yes(installed, "installed") + (f" {version}" if version else ""),
                    started,
                )
            )
        elif key == "version":
            ok = version is not None and fnmatch.fnmatchcase(version, expected)
            results.append(
                _judged(
                    spec, f"version {expected}", ok, expected, version or "not installed", started
                )
            )
    return results


def _process(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    pattern = re.compile(str(spec.process))
    # one exec (testinfra's process module first probes the system with five more);
    # the ps itself (and its sh -c) is not a process of the twin
    out = host.run("ps -Aww -o args=")
    if out.rc == 0:
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    else:  # no procps (e.g. busybox): let testinfra find its way
        lines = [p.args for p in host.process.filter()]
    cmdlines = [c for c in lines if not re.match(r"(/bin/sh -c )?ps -A", c)]
    matching = [c for c in cmdlines if pattern.search(c)]
    expected = spec.assertions()["running"]
    observed = [_short(c, 120) for c in matching[:3]] if matching else "not running"
    return [
        _judged(
            spec,
            _yes(expected, "running"),
            bool(matching) == expected,
            _yes(expected, "running"),
            observed,
            started,
            ""
            if matching or not expected
            else f"{len(cmdlines)} process(es), none matches /{pattern.pattern}/",
        )
    ]


def _service(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    svc = host.service(spec.service)
    pid1 = host.run("tr '\\0' ' ' </proc/1/cmdline").stdout.strip() or "?"
    init = (
        pid1.split(" ")[0].rsplit("/", 1)[-1] in INIT_SYSTEMS
        or type(svc).__name__ == "SystemdService"
    )
    results = []
    for key, expected in spec.assertions().items():
        what = _yes(expected, key)
        try:
            observed = bool(svc.is_running if key == "running" else svc.is_enabled)
        except Exception as exc:  # noqa: BLE001 - reported as this assertion's error
            results.append(
                error_result(
                    spec,
                    f"cannot tell whether service {spec.service} is {key}: "
                    f"{_short(str(exc), SNIPPET)}" + _no_init_hint(init, pid1),
                    started,
                    name=f"{spec.label()} {what}",
                )
            )
            continue
        if key == "running" and observed != expected and not init:
            results.append(
                error_result(
                    spec,
                    f"service {spec.service} does not report running" + _no_init_hint(init, pid1),
                    started,
                    name=f"{spec.label()} {what}",
                )
            )
            continue
        results.append(
            _judged(
                spec, what, observed == expected, _yes(expected, key), _yes(observed, key), started
            )
        )
    return results


def _listening(host: Any, url: str) -> bool | None:
    """Whether ``tcp://ADDR:PORT`` / ``udp://…`` listens, from one ``ss`` (None: ask testinfra)."""
    proto, _, rest = url.partition("://")
    if proto not in ("tcp", "udp"):
        return None
    addr, _, port = rest.rpartition(":")
    out = host.run(f"ss -Hln{'t' if proto == 'tcp' else 'u'}")
    if out.rc != 0:
        return None
    local = {f[3] for f in (line.split() for line in out.stdout.splitlines()) if len(f) >= 4}
    if not addr:
        return any(item.rsplit(":", 1)[-1] == port for item in local)
    wanted = {f"[{addr.strip('[]')}]:{port}" if ":" in addr else f"{addr}:{port}"}
    if addr in ("0.0.0.0", "[::]", "::"):
        wanted.add(f"*:{port}")
    return bool(wanted & local)


def _socket(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    listening = _listening(host, str(spec.socket))
    if listening is None:
        listening = host.socket(spec.socket).is_listening
    expected = spec.assertions()["listening"]
    return [
        _judged(
            spec,
            _yes(expected, "listening"),
            listening == expected,
            _yes(expected, "listening"),
            _yes(listening, "listening"),
            started,
        )
    ]


def _command(spec: Spec, host: Any, started: float) -> list[CheckResult]:
    cmd = shlex.quote(str(spec.command))
    secs = f"{spec.timeout:g}"
    out = host.run(
        f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 2 {secs} sh -c {cmd}; "
        f"else exec sh -c {cmd}; fi"
    )
    rc, stdout, stderr = out.rc, out.stdout, out.stderr
    note = f"timed out after {secs}s" if rc in (124, 137) else ""
    results = []
    for key, expected in spec.assertions().items():
        if key == "exit_code":
            msg = note or (
                f"stderr: {_short(stderr.strip(), SNIPPET)}"
                if rc != expected and stderr.strip()
                else ""
            )
            results.append(
                _judged(spec, f"exit code {expected}", rc == expected, expected, rc, started, msg)
            )
        else:
            stream = stdout if key == "stdout_contains" else stderr
            label = key.split("_")[0]
            for text in _as_list(expected):
                ok = text in stream
                results.append(
                    _judged(
                        spec,
                        f'{label} contains "{text}"',
                        ok,
                        text,
                        "found" if ok else _short(stream.strip(), SNIPPET) or "(empty)",
                        started,
                        note,
                    )
                )
    return results


_OBSERVERS = {
    "file": _file,
    "package": _package,
    "process": _process,
    "service": _service,
    "socket": _socket,
    "command": _command,
}


# --- helpers --------------------------------------------------------------------------


def _judged(
    spec: Spec, what: str, ok: bool, expected: Any, observed: Any, started: float, message: str = ""
) -> CheckResult:
    return result(
        spec,
        ok,
        expected=expected,
        observed=observed,
        started=started,
        message=message,
        name=f"{spec.label()} {what}",
    )


def _no_init_hint(init: bool, pid1: str) -> str:
    if init:
        return ""
    return (
        f"; the twin has no service manager (PID 1 is `{_short(pid1, 80)}`, as usual in a container): "
        "check the process instead, e.g. {process: ..., running: true}"
    )


def _yes(value: bool, word: str) -> str:
    return word if value else f"not {word}"


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _key_of(text: str) -> str:
    """``historian=10.77.0.10`` → ``historian=``: to show the line that holds the key instead."""
    m = re.match(r"\s*([^=:\s]+\s*[=:])", text)
    return m.group(1) if m and m.group(1) != text else ""


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
