"""Docker twin backend: a sandbox is a set of internal bridge networks, a twin a container.

- One ``internal: true`` bridge per sandbox subnet (no route out; Docker ignores
  published ports there, so the host reaches a twin at its address on the bridge).
- A twin takes its production address on the network whose subnet holds it.
- Everything created carries ``restoredrill.run``, ``restoredrill.managed=1`` and the
  owning process (``restoredrill.pid``/``.pidstart``/``.host``), so :func:`reap_stale`
  can remove what a crashed run left without touching a run that is still alive.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from .base import ExecOutput, Restored, Sandbox, Twin, TwinError

log = logging.getLogger(__name__)

RUN = "restoredrill.run"
SYSTEM = "restoredrill.system"
MANAGED = "restoredrill.managed"
PID = "restoredrill.pid"
PID_START = "restoredrill.pidstart"
HOST = "restoredrill.host"
SUBNET = "restoredrill.subnet"
DEFAULT_URL = "unix:///var/run/docker.sock"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ExecTimeout(TwinError):
    """A command run in a twin did not finish in time (it was killed where possible)."""


# --- owner of a run: which process, on which host ------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def owner_labels() -> dict[str, str]:
    """Labels naming this process as the owner of what it creates."""
    pid = os.getpid()
    labels = {PID: str(pid), HOST: socket.gethostname()}
    if start := _process_start(pid):
        labels[PID_START] = start
    return labels


def owner_alive(labels: Mapping[str, str]) -> bool | None:
    """Whether the process named by ``labels`` still runs: ``None`` if it cannot be told
    (no owner recorded, or an owner on another host)."""
    host, pid_text = labels.get(HOST), labels.get(PID)
    if not host or not pid_text or host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    recorded = labels.get(PID_START)
    if recorded:
        current = _process_start(pid)
        if current is not None and current != recorded:
            return False  # the pid was reused by another process
    return True


# --- helpers -------------------------------------------------------------------------------


def _slug(text: str, limit: int = 120) -> str:
    """A Docker object name: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``."""
    out = re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-._") or "x"
    return out[:limit]


def _hostname(text: str) -> str:
    out = re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-").lower() or "twin"
    return out[:63].rstrip("-")


def _explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc) or type(exc).__name__


def _gone(exc: BaseException) -> bool:
    """An error meaning the object is already gone (or going)."""
    if isinstance(exc, docker.errors.NotFound):
        return True
    text = _explain(exc).lower()
    return isinstance(exc, docker.errors.APIError) and (
        "no such" in text or "not found" in text or "already in progress" in text
    )


def _parse_time(value: Any) -> float | None:
    """Epoch seconds from Docker's ``Created`` (an int, or RFC 3339 with nanoseconds)."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", value)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    zone = m.group(3) or "Z"
    text = f"{m.group(1)}{frac}{'+00:00' if zone == 'Z' else zone}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class _Teardown:
    """Runs every removal even if one fails or is interrupted; gone objects are fine."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.interrupted: BaseException | None = None

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            self.interrupted = exc
        except Exception as exc:  # noqa: BLE001 - teardown goes on, the problem is reported
            if not _gone(exc):
                self.problems.append(_explain(exc))

    def finish(self, what: str) -> None:
        """Re-raise a deferred Ctrl-C, else report what could not be removed."""
        if self.interrupted is not None:
            raise self.interrupted
        if self.problems:
            raise TwinError(f"{what} left objects behind: {'; '.join(self.problems)}")


def _engine_url(client: Any) -> str:
    url = str(getattr(getattr(client, "api", None), "base_url", "") or "")
    if url.startswith("http+docker://"):  # the SDK's name for its unix socket transport
        return os.environ.get("DOCKER_HOST") or DEFAULT_URL
    return url or DEFAULT_URL


# --- the backend ---------------------------------------------------------------------------


class DockerBackend:
    """Twins as containers on a real Docker engine (``kind: docker``)."""

    kind = "docker"

    def __init__(self, client: Any = None, *, base_url: str | None = None, timeout: int = 120):
        url = base_url or (_engine_url(client) if client is not None else None)
        url = url or os.environ.get("DOCKER_HOST") or DEFAULT_URL
        try:
            if client is None:
                client = (
                    docker.DockerClient(base_url=base_url, timeout=timeout)
                    if base_url
                    else docker.from_env(timeout=timeout)
                )
            client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means: no engine there
            raise TwinError(
                f"Docker engine not reachable at {url}: start it with `dockerd &` "
                "(or `systemctl start docker`), or install it with `apt-get install docker.io` "
                f"({_explain(exc)})"
            ) from None
        self.client = client

    def open_sandbox(
        self,
        run_id: str,
        subnet: str,
        gateway: str | None = None,
        name_prefix: str = "restoredrill",
    ) -> DockerSandbox:
        """Create the run's isolated network on ``subnet`` (more with ``add_network``)."""
        sandbox = DockerSandbox(self.client, run_id, name_prefix)
        try:
            sandbox.add_network(subnet, gateway)
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def attach_sandbox(self, run_id: str, name_prefix: str = "restoredrill") -> DockerSandbox:
        """Join the networks another process opened for ``run_id`` (a system dispatched
        to a worker). Closing it removes only what it started; the owner keeps the rest."""
        sandbox = DockerSandbox(self.client, run_id, name_prefix, attached=True)
        found = self.client.api.networks(filters={"label": [f"{RUN}={run_id}", f"{MANAGED}=1"]})
        if not found:
            raise TwinError(
                f"run {run_id} has no sandbox network on this engine: its orchestrating "
                "flow ended, or this worker uses another Docker engine"
            )
        for item in sorted(found, key=lambda n: n["Name"]):
            info = self.client.api.inspect_network(item["Id"])
            pool = ((info.get("IPAM") or {}).get("Config") or [{}])[0]
            net = ipaddress.ip_network(pool.get("Subnet") or info["Labels"][SUBNET])
            gateway = ipaddress.ip_address(pool.get("Gateway") or next(net.hosts()))
            sandbox._nets.append(_Network(info["Name"], info["Id"], net, gateway))
            sandbox._addresses[gateway] = f"the gateway of sandbox subnet {net}"
        sandbox._refresh_addresses()
        return sandbox

    def reap_stale(
        self,
        max_age: timedelta | float | None = None,
        alive: Callable[[str], bool] = lambda run_id: False,
        *,
        runs: Collection[str] | None = None,
    ) -> list[str]:
        """See :func:`reap_stale`."""
        return reap_stale(self.client, max_age, alive, runs=runs)


@dataclass
class _Network:
    name: str
    id: str
    subnet: IPNetwork
    gateway: IPAddress


class DockerTwin(Twin):
    """A restored system running as a container in a sandbox."""

    def __init__(
        self,
        client: Any,
        container_id: str,
        name: str,
        container_name: str,
        address: str | None,
        network: str,
        restored: Restored,
        remove_directory: bool = False,
    ) -> None:
        self.client = client
        self.id = container_id
        self.name = name
        self.container_name = container_name
        self.address = address
        self.network = network
        self.restored = restored
        self.remove_directory = remove_directory

    def __repr__(self) -> str:
        return f"DockerTwin({self.name!r}, {self.container_name}, {self.address})"

    @property
    def testinfra_url(self) -> str:
        return f"docker://{self.id}"

    def _state(self) -> dict[str, Any] | None:
        try:
            return self.client.api.inspect_container(self.id)["State"]
        except docker.errors.NotFound:
            return None

    def is_running(self) -> bool:
        state = self._state()
        return bool(state and state.get("Running"))

    def exit_code(self) -> int | None:
        state = self._state()
        if state is None or state.get("Running") or state.get("Status") == "created":
            return None
        return int(state.get("ExitCode", -1))

    def logs(self, tail: int | None = 50) -> str:
        """The container's recent stdout and stderr (``tail=None``: all of it)."""
        try:
            raw = self.client.api.logs(
                self.id, stdout=True, stderr=True, tail="all" if tail is None else tail
            )
        except docker.errors.NotFound:
            return "(the container is gone)"
        return raw.decode("utf-8", "replace")

    def exec(
        self,
        command: Sequence[str] | str,
        timeout: float | None = None,
        *,
        user: str | None = None,
        workdir: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> ExecOutput:
        """Run ``command`` in the twin (a string through ``/bin/sh -c``, a list as is).

        Raises :class:`ExecTimeout` after ``timeout`` seconds (the command is killed),
        :class:`TwinError` if the twin is not running.
        """
        cmd = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        api = self.client.api
        try:
            exec_id = api.exec_create(
                self.id,
                cmd,
                stdout=True,
                stderr=True,
                user=user or "",
                workdir=workdir,
                environment=dict(environment) if environment else None,
            )["Id"]
        except docker.errors.APIError as exc:
            if self.is_running():
                raise TwinError(f"{self.name}: cannot run {cmd!r}: {_explain(exc)}") from None
            code = self.exit_code()
            how = "is gone" if code is None else f"is not running (exited with code {code})"
            raise TwinError(f"{self.name} {how}: cannot run {cmd!r}") from None

        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["out"] = api.exec_start(exec_id, demux=True)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                result["error"] = exc

        if timeout is None:
            run()
        else:
            worker = threading.Thread(target=run, name=f"exec-{self.name}", daemon=True)
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                self._kill_exec(exec_id)
                worker.join(2)
                raise ExecTimeout(f"{self.name}: {cmd!r} did not finish within {timeout:g}s")
        if "error" in result:
            err = result["error"]
            if isinstance(err, docker.errors.APIError):
                raise TwinError(f"{self.name}: {cmd!r} failed: {_explain(err)}") from err
            raise err
        out, err = result.get("out") or (None, None)
        code = api.exec_inspect(exec_id).get("ExitCode")
        return ExecOutput(
            exit_code=-1 if code is None else int(code),
            stdout=(out or b"").decode("utf-8", "replace"),
            stderr=(err or b"").decode("utf-8", "replace"),
        )

    def _kill_exec(self, exec_id: str) -> None:
        """Kill a timed-out exec and its children, but only processes that provably belong
        to this container (their cgroup names its id); anything else dies with the twin."""
        try:
            root = int(self.client.api.exec_inspect(exec_id).get("Pid") or 0)
        except (ValueError, docker.errors.APIError):
            return
        if root <= 0:
            return
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        for pid in tree:
            try:
                if self.id in Path(f"/proc/{pid}/cgroup").read_text():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class DockerSandbox(Sandbox):
    """The isolated networks of one run and the twins started on them."""

    def __init__(
        self, client: Any, run_id: str, name_prefix: str = "restoredrill", attached: bool = False
    ) -> None:
        self.client = client
        self.attached = attached
        """Joined another process's networks: close() removes only what this one started."""
        self.run_id = run_id
        self.prefix = _slug(f"{name_prefix}-{run_id}", 80)
        self.labels: dict[str, str] = {RUN: run_id, MANAGED: "1", **owner_labels()}
        """Labels for anything created for this run (also images a restore creates)."""
        self._nets: list[_Network] = []
        self._twins: dict[str, DockerTwin] = {}
        self._addresses: dict[IPAddress, str] = {}
        self._volumes: set[str] = set()
        self._lock = threading.RLock()
        self._closed = False

    def __repr__(self) -> str:
        return f"DockerSandbox({self.run_id!r}, {self.networks})"

    @property
    def networks(self) -> list[str]:
        """The sandbox subnets (CIDR), e.g. for a guard that keeps checks inside them."""
        return [str(n.subnet) for n in self._nets]

    @property
    def network_names(self) -> list[str]:
        return [n.name for n in self._nets]

    @property
    def twins(self) -> list[DockerTwin]:
        return list(self._twins.values())

    # --- networks ------------------------------------------------------------------------

    def add_network(self, subnet: str, gateway: str | None = None) -> str:
        """Add an internal network on ``subnet`` (one per plant segment); return its name."""
        try:
            net = ipaddress.ip_network(str(subnet), strict=False)
        except ValueError as exc:
            raise TwinError(f"sandbox subnet {subnet!r} is not a subnet: {exc}") from None
        if net.num_addresses < 4:
            raise TwinError(
                f"sandbox subnet {net} is too small: use at least a /30 (a /24 is usual)"
            )
        try:
            gw = ipaddress.ip_address(gateway) if gateway else next(net.hosts())
        except ValueError as exc:
            raise TwinError(f"sandbox gateway {gateway!r} is not an address: {exc}") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise TwinError(f"sandbox gateway {gw} is not a host address in {net}")
        with self._lock:
            if self._closed:
                raise TwinError(f"sandbox of run {self.run_id} is closed")
            name = f"{self.prefix}-net{len(self._nets)}"
            try:
                created = self.client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    check_duplicate=True,
                    enable_ipv6=net.version == 6,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(net), gateway=str(gw))]),
                    labels={**self.labels, SUBNET: str(net)},
                )
            except docker.errors.APIError as exc:
                if "overlap" in _explain(exc).lower():
                    raise TwinError(self._overlap_message(net)) from None
                raise TwinError(
                    f"could not create sandbox network {name} on {net}: {_explain(exc)}"
                ) from None
            self._nets.append(_Network(name, created.id, net, gw))
            self._addresses[gw] = (
                f"the gateway of sandbox subnet {net} (the host's side of the bridge; "
                "give the sandbox another gateway address)"
            )
        return name

    def _overlap_message(self, net: IPNetwork) -> str:
        clashes: list[tuple[str, str]] = []  # (network name, description)
        try:
            for other in self.client.api.networks():
                for conf in (other.get("IPAM") or {}).get("Config") or []:
                    try:
                        theirs = ipaddress.ip_network(conf.get("Subnet", ""), strict=False)
                    except ValueError:
                        continue
                    if theirs.version == net.version and theirs.overlaps(net):
                        run = (other.get("Labels") or {}).get(RUN)
                        owner = f", of restoredrill run {run}" if run else ""
                        clashes.append((other["Name"], f"{other['Name']!r} ({theirs}{owner})"))
        except docker.errors.APIError:
            pass
        what = " and ".join(d for _, d in clashes) or "an existing network"
        text = (
            f"sandbox subnet {net} overlaps Docker network {what}: pick another subnet for "
            "this site's sandbox.subnets in the inventory (one no Docker network uses; see "
            "`docker network ls` and `docker network inspect`)"
        )
        if clashes:
            text += f", or remove that network if it is a leftover (`docker network rm {clashes[0][0]}`)"
        return text

    def _place(self, name: str, address: Any) -> tuple[_Network, IPAddress]:
        """Pick the network and reserve the address of a twin (under the lock)."""
        if not self._nets:
            raise TwinError(f"{name}: the sandbox has no network")
        if self.attached:
            self._refresh_addresses()
        if address is None:
            net = self._nets[0]
            ip = self._free_address(net, name)
        else:
            try:
                ip = ipaddress.ip_address(str(address))
            except ValueError as exc:
                raise TwinError(f"{name}: {address!r} is not an IP address: {exc}") from None
            found = [n for n in self._nets if ip in n.subnet]
            if not found:
                raise TwinError(
                    f"{name}: address {ip} is outside every sandbox subnet "
                    f"({', '.join(self.networks)}): add its subnet to sandbox.subnets, "
                    "or change the system's address"
                )
            net = found[0]
            if ip in (net.subnet.network_address, net.subnet.broadcast_address):
                raise TwinError(f"{name}: address {ip} is not a host address in {net.subnet}")
            holder = self._addresses.get(ip)
            if holder is not None:
                raise TwinError(
                    f"{name}: address {ip} is already taken by {holder}; "
                    "two systems cannot share an address in one sandbox"
                )
        self._addresses[ip] = f"twin {name!r}"
        return net, ip

    def _refresh_addresses(self) -> None:
        """Addresses other processes' twins hold on the shared networks (attached mode)."""
        for net in self._nets:
            try:
                info = self.client.api.inspect_network(net.id)
            except docker.errors.APIError:
                continue
            for endpoint in (info.get("Containers") or {}).values():
                for key in ("IPv4Address", "IPv6Address"):
                    text = (endpoint.get(key) or "").split("/")[0]
                    if text:
                        ip = ipaddress.ip_address(text)
                        self._addresses.setdefault(ip, f"twin {endpoint.get('Name', '?')!r}")

    def _free_address(self, net: _Network, name: str) -> IPAddress:
        """The highest free host address (production addresses tend to sit low)."""
        first = int(net.subnet.network_address) + 1
        last = int(net.subnet.broadcast_address) - (1 if net.subnet.version == 4 else 0)
        for value in range(last, first - 1, -1):
            ip = ipaddress.ip_address(value)
            if ip not in self._addresses:
                return ip
        raise TwinError(f"{name}: no free address left in sandbox subnet {net.subnet}")

    # --- twins ---------------------------------------------------------------------------

    def start(
        self,
        spec: Any,
        restored: Restored,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        remove_directory: bool = False,
    ) -> DockerTwin:
        """Create and start the twin of one system from ``restored`` (see module docs).

        A restored directory is bind-mounted read-write at ``spec.data_path`` and run with
        ``spec.image``; ``remove_directory`` makes the sandbox delete it at teardown.
        """
        image = restored.image or spec.image
        if not image:
            raise TwinError(
                f"{name}: the restore gave no image and the system names none: "
                "set run.image to the image that serves the restored data"
            )
        with self._lock:
            if self._closed:
                raise TwinError(f"sandbox of run {self.run_id} is closed")
            if name in self._twins:
                raise TwinError(f"{name}: a twin of that name already runs in this sandbox")
        binds = self._binds(name, spec, restored)
        with self._lock:
            net, ip = self._place(name, spec.address)
        hostname = spec.hostname or _hostname(name)
        container_name = _slug(f"{self.prefix}-{name}")
        endpoint = self.client.api.create_endpoint_config(
            aliases=sorted({name, hostname}),
            **({"ipv4_address": str(ip)} if ip.version == 4 else {"ipv6_address": str(ip)}),
        )
        container_id: str | None = None
        try:
            created = self.client.api.create_container(
                image,
                command=spec.command,
                entrypoint=spec.entrypoint,
                environment=dict(spec.env) or None,
                working_dir=spec.workdir,
                user=spec.user,
                hostname=hostname,
                name=container_name,
                labels={**(labels or {}), **self.labels, SYSTEM: name},
                networking_config=self.client.api.create_networking_config({net.name: endpoint}),
                host_config=self.client.api.create_host_config(
                    binds=binds,
                    network_mode=net.name,
                    # an upstream DNS server inside the sandbox: Docker < 23.0.11 otherwise
                    # forwards a twin's lookups from the host (CVE-2024-29018)
                    dns=[str(net.gateway)],
                ),
            )
            container_id = created["Id"]
            twin = DockerTwin(
                self.client,
                container_id,
                name,
                container_name,
                str(ip),
                net.name,
                restored,
                remove_directory,
            )
            with self._lock:
                self._twins[name] = twin
            self.client.api.start(container_id)
        except BaseException as exc:
            with self._lock:
                self._twins.pop(name, None)
                self._addresses.pop(ip, None)
            if container_id is not None:
                td = _Teardown()
                td(self.client.api.remove_container, container_id, force=True, v=True)
                if td.interrupted is not None:
                    raise td.interrupted from None
            if isinstance(exc, docker.errors.ImageNotFound):
                raise TwinError(
                    f"{name}: image {image!r} is not in the local engine "
                    "(nothing is pulled: load or build it first)"
                ) from None
            if isinstance(exc, docker.errors.APIError):
                raise TwinError(f"{name}: could not start the container: {_explain(exc)}") from None
            raise
        return twin

    def start_aux(
        self,
        name: str,
        image: str,
        command: Sequence[str] | str | None = None,
        address: str | None = None,
        mounts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> DockerTwin:
        """Start a helper twin (an emulated field device) from a local ``image``;
        ``mounts`` maps container path -> absolute host path (``:ro`` suffix allowed)."""
        from .spec import RunSpec

        spec = RunSpec(
            command=list(command) if isinstance(command, list | tuple) else command,
            env=dict(env or {}),
            volumes=dict(mounts or {}),
            address=address,
            image=image,
        )
        return self.start(
            spec, Restored(image=image), name, {"restoredrill.role": "aux", **(labels or {})}
        )

    def _binds(self, name: str, spec: Any, restored: Restored) -> dict[str, dict[str, str]]:
        """Bind mounts: the restored tree, host paths, and run-scoped named volumes."""
        binds: dict[str, dict[str, str]] = {}
        if restored.directory is not None:
            if not spec.data_path:
                raise TwinError(
                    f"{name}: the restore gave a directory ({restored.directory}) but "
                    "run.data_path does not say where to mount it in the twin"
                )
            folder = Path(restored.directory).resolve()
            if not folder.is_dir():
                raise TwinError(f"{name}: restored directory {folder} does not exist")
            binds[str(folder)] = {"bind": spec.data_path, "mode": "rw"}
        for target, value in (spec.volumes or {}).items():
            source, mode = str(value), "rw"
            if source.endswith((":ro", ":rw")):
                source, mode = source[:-3], source[-2:]
            if source.startswith("/"):
                if not os.path.exists(source):
                    raise TwinError(f"{name}: volume {target}: host path {source} does not exist")
            else:  # a named volume: a fresh one for this run, never one outside the sandbox
                volume = _slug(f"{self.prefix}-{source}")
                with self._lock:
                    if volume not in self._volumes:
                        try:
                            self.client.api.create_volume(volume, labels=dict(self.labels))
                        except docker.errors.APIError as exc:
                            raise TwinError(
                                f"{name}: could not create volume {volume}: {_explain(exc)}"
                            ) from None
                        self._volumes.add(volume)
                source = volume
            binds[source] = {"bind": target, "mode": mode}
        return binds

    # --- teardown ------------------------------------------------------------------------

    def remove(self, twin: Twin) -> None:
        """Remove one twin: its container (force), its restore's images and, if owned, its
        restored directory. Safe to call twice; gone objects are fine."""
        if not isinstance(twin, DockerTwin):
            raise TypeError(f"not a Docker twin: {twin!r}")
        with self._lock:
            if self._twins.get(twin.name) is twin:
                del self._twins[twin.name]
            if twin.address:
                ip = ipaddress.ip_address(twin.address)
                if self._addresses.get(ip) == f"twin {twin.name!r}":
                    del self._addresses[ip]
        td = _Teardown()
        td(self.client.api.remove_container, twin.id, force=True, v=True)
        for image in twin.restored.created_images:
            td(self.client.api.remove_image, image, force=True)
        if twin.remove_directory and twin.restored.directory is not None:
            td(shutil.rmtree, twin.restored.directory, ignore_errors=True)
        td.finish(f"removing twin {twin.name}")

    def close(self) -> None:
        """Remove every twin, network, volume and image of this run (also those created
        but never registered, found by label). Idempotent; a Ctrl-C during teardown is
        re-raised once everything was tried."""
        with self._lock:
            self._closed = True
            twins = list(self._twins.values())
        api = self.client.api
        mine = {"label": [f"{RUN}={self.run_id}", f"{MANAGED}=1"]}
        td = _Teardown()
        for twin in twins:
            td(self.remove, twin)
        if self.attached:  # the owner of the run removes its networks and leftovers
            for name in self._volumes:
                td(api.remove_volume, name, force=True)
            td.finish(f"teardown of run {self.run_id} (attached)")
            return

        def containers() -> None:
            for c in api.containers(all=True, filters=mine):
                td(api.remove_container, c["Id"], force=True, v=True)

        def networks() -> None:
            ids = {n.id for n in self._nets} | {n["Id"] for n in api.networks(filters=mine)}
            for net_id in ids:
                td(_remove_network, self.client, net_id)

        def volumes() -> None:
            listed = (api.volumes(filters=mine) or {}).get("Volumes") or []
            for name in self._volumes | {v["Name"] for v in listed}:
                td(api.remove_volume, name, force=True)

        def images() -> None:  # what restores of this run created and labelled
            for image in api.images(filters={"label": f"{RUN}={self.run_id}"}):
                td(_remove_image, self.client, image)

        for sweep in (containers, networks, volumes, images):
            td(sweep)
        td.finish(f"teardown of run {self.run_id}")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except TwinError as problem:  # do not hide the error that is already propagating
            log.warning("%s", problem)


def _remove_network(client: Any, net_id: str) -> None:
    api = client.api
    try:
        info = api.inspect_network(net_id)
    except docker.errors.NotFound:
        return
    for container_id in info.get("Containers") or {}:
        with contextlib.suppress(docker.errors.APIError):
            api.disconnect_container_from_network(container_id, net_id, force=True)
    api.remove_network(net_id)


def _remove_image(client: Any, image: Mapping[str, Any]) -> None:
    """Remove an image by its tags (so a shared image id keeps its other names), else by id."""
    tags = [t for t in image.get("RepoTags") or [] if t and t != "<none>:<none>"]
    for tag in tags:
        client.api.remove_image(tag, force=True)
    if not tags:
        client.api.remove_image(image["Id"], force=True)


# --- crash recovery ------------------------------------------------------------------------


def reap_stale(
    client: Any,
    max_age: timedelta | float | None = None,
    alive: Callable[[str], bool] = lambda run_id: False,
    *,
    runs: Collection[str] | None = None,
) -> list[str]:
    """Remove what dead runs left: containers, networks and volumes labelled
    ``restoredrill.managed=1`` and images labelled ``restoredrill.run``.

    A run is alive (and left alone) when ``alive(run_id)`` says so, or when any of its
    objects names an owner process that still runs on this host. A run whose owners on
    this host are all gone is dead. A run that cannot be judged (owner on another host,
    or no owner recorded) is reaped only when ``max_age`` is given and the object is
    older. ``runs`` limits reaping to those run ids. Returns what was removed.
    """
    api = client.api
    limit = max_age.total_seconds() if isinstance(max_age, timedelta) else max_age
    managed = {"label": f"{MANAGED}=1"}
    found: list[tuple[str, str, dict[str, str], float | None, Callable[[], None]]] = []
    for c in api.containers(all=True, filters=managed):
        name = (c.get("Names") or [c["Id"][:12]])[0].lstrip("/")
        remove = partial(api.remove_container, c["Id"], force=True, v=True)
        found.append(
            ("container", name, c.get("Labels") or {}, _parse_time(c.get("Created")), remove)
        )
    for n in api.networks(filters=managed):
        remove = partial(_remove_network, client, n["Id"])
        found.append(
            (
                "network",
                n.get("Name", ""),
                n.get("Labels") or {},
                _parse_time(n.get("Created")),
                remove,
            )
        )
    for v in (api.volumes(filters=managed) or {}).get("Volumes") or []:
        remove = partial(api.remove_volume, v["Name"], force=True)
        found.append(
            ("volume", v["Name"], v.get("Labels") or {}, _parse_time(v.get("CreatedAt")), remove)
        )
    for i in api.images(filters={"label": RUN}):
        name = next((t for t in i.get("RepoTags") or [] if t != "<none>:<none>"), i["Id"][:19])
        found.append(
            (
                "image",
                name,
                i.get("Labels") or {},
                _parse_time(i.get("Created")),
                partial(_remove_image, client, i),
            )
        )

    owners: dict[str, list[bool | None]] = {}
    for _, _, labels, _, _ in found:
        states = owners.setdefault(labels.get(RUN, ""), [])
        if labels.get(PID) or labels.get(HOST):
            states.append(owner_alive(labels))

    def run_alive(run: str) -> bool | None:
        if run and alive(run):
            return True
        states = owners.get(run, [])
        if True in states:
            return True
        if states and all(s is False for s in states):
            return False
        return None  # cannot be judged here

    verdicts = {run: run_alive(run) for run in owners if runs is None or run in runs}
    now = time.time()
    removed: list[str] = []
    for kind, name, labels, created, remove in found:  # containers before networks
        run = labels.get(RUN, "")
        if run not in verdicts:
            continue
        state = verdicts[run]
        old = limit is not None and created is not None and now - created > limit
        if state is True or (state is None and not old):
            continue
        td = _Teardown()
        td(remove)
        if td.interrupted is not None:
            raise td.interrupted
        if td.problems:
            log.warning("could not remove %s %s of dead run %s: %s", kind, name, run, td.problems)
        else:
            removed.append(f"{kind} {name} (run {run or '?'})")
    if removed:
        log.info("removed leftovers of dead runs: %s", ", ".join(removed))
    return removed
