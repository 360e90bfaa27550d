"""Host checks over the network: testinfra's paramiko (SSH) and winrm backends, logging in
with the credentials a twin names (``run.vm.ssh`` / ``run.vm.winrm``, see
``twins/access.py``).

A secret is read when the connection opens and handed to paramiko or pywinrm only: the
host spec testinfra sees holds no password (``paramiko://root@10.77.0.70:22``), and a
failure names the account, address and where the secret came from, never its value.
No SSH agent, no ``~/.ssh`` key or config of the drill host is used: only what the
inventory names. The restored system's host key is its own (the production host's),
so it is accepted without a known_hosts file (the twin is in the sandbox).

The team's own testinfra files run in a ``pytest`` subprocess: it gets the host spec
``restoredrill-ssh://ADDRESS`` (or ``restoredrill-winrm://``), this module as a plugin
(``-p restoredrill.checks.remote``, registering those backends) and the access, without
its secret, in ``RESTOREDRILL_REMOTE``; the secret is read there as here, from the same
environment variable or file.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from typing import Any, TypeVar

from restoredrill.twins.access import AccessError, SshAccess, WinrmAccess

from .base import CheckError

A = TypeVar("A", SshAccess, WinrmAccess)

ENV = "RESTOREDRILL_REMOTE"
SCHEMES = {"ssh": "restoredrill-ssh", "winrm": "restoredrill-winrm"}
PLUGIN = "restoredrill.checks.remote"


def access_of(target: Any) -> SshAccess | WinrmAccess | None:
    """The network login of ``target`` (a VM twin's ssh/winrm), or ``None``."""
    access = getattr(target, "remote", None)
    return access if isinstance(access, SshAccess | WinrmAccess) else None


def network(target: Any) -> bool:
    """Whether host checks of ``target`` go over the network (then from inside its sandbox)."""
    return access_of(target) is not None


def host_for(target: Any) -> Any:
    """A testinfra host for ``target``: logged in over SSH/WinRM, or its testinfra URL."""
    import testinfra
    import testinfra.host

    access = access_of(target)
    if access is None:
        return testinfra.get_host(target.testinfra_url)
    if not target.address:
        raise CheckError(f"{target.name} has no address to log in to")
    cls = _classes()["SshBackend" if access.protocol == "ssh" else "WinrmBackend"]
    return testinfra.host.Host(cls(str(target.address), access=access))


def subprocess_host(target: Any) -> tuple[str, dict[str, str]]:
    """``--hosts`` and the extra environment for a testinfra file run against ``target``."""
    access = access_of(target)
    if access is None:
        return str(target.testinfra_url), {}
    return f"{SCHEMES[access.protocol]}://{target.address}", {ENV: access.model_dump_json()}


def pytest_configure(config: Any) -> None:
    """As a pytest plugin: testinfra knows the ``restoredrill-ssh``/``-winrm`` backends."""
    from testinfra.backend import BACKENDS

    BACKENDS[SCHEMES["ssh"]] = f"{PLUGIN}.SshBackend"
    BACKENDS[SCHEMES["winrm"]] = f"{PLUGIN}.WinrmBackend"


def __getattr__(name: str) -> Any:  # the backend classes, built when first asked for
    if name in ("SshBackend", "WinrmBackend"):
        return _classes()[name]
    raise AttributeError(name)


def _from_env(model: type[A], protocol: str) -> A:
    data = json.loads(os.environ.get(ENV) or "{}")
    if data.get("protocol") != protocol:
        raise CheckError(f"{ENV} does not describe a {protocol} login")
    return model.model_validate(data)


def _secret(access: SshAccess | WinrmAccess) -> str | None:
    try:
        return access.password()
    except AccessError as exc:
        raise CheckError(str(exc)) from None


def _where(access: SshAccess | WinrmAccess, host: str) -> str:
    return f"{access.protocol} {access.user}@{host}:{access.port}"


def _source(access: SshAccess | WinrmAccess) -> str:
    named = [
        f"{what} {value}"
        for what, value in (
            ("password from", access.password_env),
            ("password file", access.password_file),
            ("key file", getattr(access, "key_file", None)),
        )
        if value
    ]
    return ", ".join(named)


@functools.cache
def _classes() -> dict[str, type]:
    return {"SshBackend": _ssh_backend(), "WinrmBackend": _winrm_backend()}


def _ssh_backend() -> type:
    import paramiko
    from testinfra.backend.paramiko import ParamikoBackend

    class SshBackend(ParamikoBackend):
        """testinfra over SSH with exactly the inventory's credentials."""

        NAME = "paramiko"

        def __init__(self, hostspec: str, access: SshAccess | None = None, **kwargs: Any):
            self.access = access or _from_env(SshAccess, "ssh")
            kwargs.pop("connection", None)
            super().__init__(hostspec, timeout=int(self.access.timeout), **kwargs)

        @functools.cached_property
        def client(self) -> paramiko.SSHClient:
            access, host = self.access, self.host.name
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the twin's own key
            try:
                client.connect(
                    hostname=host,
                    port=access.port,
                    username=access.user,
                    password=_secret(access),
                    key_filename=access.key_file,
                    timeout=access.timeout,
                    banner_timeout=access.timeout,
                    auth_timeout=access.timeout,
                    allow_agent=False,
                    look_for_keys=False,
                )
            except paramiko.AuthenticationException:
                client.close()
                raise CheckError(
                    f"{_where(access, host)}: authentication failed ({_source(access)})"
                ) from None
            except (OSError, paramiko.SSHException) as exc:
                client.close()
                raise CheckError(f"{_where(access, host)}: cannot connect: {_why(exc)}") from None
            return client

        def get_pytest_id(self) -> str:
            return self.access.url(self.host.name)

    return SshBackend


def _winrm_backend() -> type:
    from testinfra.backend.winrm import WinRMBackend

    class WinrmBackend(WinRMBackend):
        """testinfra over WinRM (NTLM) with exactly the inventory's credentials."""

        NAME = "winrm"

        def __init__(self, hostspec: str, access: WinrmAccess | None = None, **kwargs: Any):
            self.access = access or _from_env(WinrmAccess, "winrm")
            kwargs.pop("connection", None)
            timeout = int(self.access.timeout)
            super().__init__(
                f"{self.access.user}@{hostspec}:{self.access.port}",
                no_ssl=not self.access.https,
                no_verify_ssl=not self.access.verify_tls,
                operation_timeout_sec=timeout,
                read_timeout_sec=timeout + 10,
                **kwargs,
            )

        def run_winrm(self, command: str) -> Any:
            self.conn_args["password"] = _secret(self.access)
            try:
                return super().run_winrm(command)
            except Exception as exc:  # noqa: BLE001 - requests, winrm and NTLM errors alike
                raise CheckError(
                    f"{_where(self.access, self.host.name)}: {_why(exc)} ({_source(self.access)})"
                ) from None
            finally:
                self.conn_args["password"] = None

        def get_pytest_id(self) -> str:
            return self.access.url(self.host.name)

    return WinrmBackend


def _why(exc: BaseException) -> str:
    """A connection failure in a few words (never the request, which may carry a secret)."""
    inner = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: per address
    if isinstance(inner, dict) and inner:
        return _why(next(iter(inner.values())))
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, ConnectionRefusedError) or "refused" in lowered:
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in lowered:
        return "no answer (timed out)"
    if "unauthorized" in lowered or "401" in lowered:
        return "authentication failed"
    if "unreachable" in lowered:
        return "network unreachable"
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
