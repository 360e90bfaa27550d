"""Docker twin backend: a sandbox is a set of internal bridge networks, a twin a container.

- One ``internal: true`` bridge per sandbox subnet, created with
  ``com.docker.network.bridge.inhibit_ipv4``: the host has no address on it and no
  route to it, so a twin cannot reach any service of the host, and nothing the host
  sends (a check included) can leave through the host's own network cards. The
  bridge's name is ours (``rd`` + a hash), so its firewall rules (:mod:`.firewall`)
  are in place before it exists.
- Probes and checks run inside the sandbox: a per-run *anchor* container sits on every
  sandbox network, and threads enter its network namespace (:meth:`DockerSandbox.inside`).
- A twin takes its production address on the network whose subnet holds it; the
  address Docker reserves as gateway (unused) is one no system of the inventory claims.
- Every twin runs bounded (:mod:`.limits`): memory without swap, CPUs, processes,
  capabilities without NET_RAW, no-new-privileges, disk watched (:mod:`.usage`).
- Everything created carries ``restoredrill.run``, ``restoredrill.managed=1`` and the
  owning process (``restoredrill.pid``/``.pidstart``/``.host``, :mod:`.ownership`), so
  :func:`reap_stale` can remove what a crashed run left without touching a run that is
  still alive; a guardian process (:mod:`.guardian`) does it at once when the owner is
  killed.
- Twin kinds: what a restore gives (:attr:`~.base.Restored.kind`) picks how it runs. An
  image or tree runs as a container here; disks boot as a VM in a container on the
  sandbox network (``TWIN_KINDS``: :mod:`.vm_twin`), started through
  :meth:`DockerSandbox.run_container` like any twin of the sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from . import firewall, scratch
from .addresses import AddressBook
from .anchor import COMMAND as ANCHOR_COMMAND
from .anchor import HOST_CONFIG as ANCHOR_HOST_CONFIG
from .anchor import USER as ANCHOR_USER
from .anchor import ensure_anchor_image
from .base import Backend, ExecOutput, Restored, Sandbox, Twin, TwinError, registered
from .files import lay_in
from .guardian import start as start_guardian
from .guardian import stop as stop_guardian
from .limits import Limits, capabilities, effective
from .netns import NamespaceError, NetNamespace
from .ownership import (
    HOST,
    MANAGED,
    PID,
    PID_START,
    ROLE,
    RUN,
    SUBNET,
    SYSTEM,
    Found,
    judge,
    owner_alive,
    owner_labels,
    owner_of,
)
from .usage import Counters, Usage, Watched, Watcher, reached

log = logging.getLogger(__name__)

__all__ = [
    "HOST",
    "MANAGED",
    "PID",
    "PID_START",
    "ROLE",
    "RUN",
    "SUBNET",
    "SYSTEM",
    "TWIN_KINDS",
    "DockerBackend",
    "DockerSandbox",
    "DockerTwin",
    "ExecTimeout",
    "owner_alive",
    "owner_labels",
    "reap_stale",
    "sweep",
]

TWIN_KINDS = {"vm": "restoredrill.twins.vm_twin:start_vm"}
"""Kinds of twin this backend runs besides containers: ``kind -> module:function``
(``function(sandbox, spec, restored, name, labels, limits) -> Twin``)."""
DEFAULT_URL = "unix:///var/run/docker.sock"
BRIDGE_NAME = "com.docker.network.bridge.name"
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_PLACE_ATTEMPTS = 8
"""Tries to place a twin without an address when other processes place twins too."""


class _AddressTaken(Exception):
    """The engine refused the address: someone else holds it now."""


class ExecTimeout(TwinError):
    """A command run in a twin did not finish in time (it was killed where possible)."""


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


class DockerBackend(Backend):
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
        subnets: str | Sequence[str],
        gateway: str | None = None,
        name_prefix: str = "restoredrill",
        *,
        reserved: Collection[str] = (),
        guardian: bool = True,
    ) -> DockerSandbox:
        """Open the run's contained sandbox on ``subnets`` (more with ``add_network``);
        ``gateway``: the reserved gateway address of the first subnet.

        ``reserved``: addresses the inventory claims (never picked for the gateway, the
        anchor or a twin without an address). ``guardian``: start the process that
        removes the run if this one dies without closing it.
        Raises TwinError where containment cannot be set up.
        """
        sandbox = DockerSandbox(self.client, run_id, name_prefix, reserved=reserved)
        try:
            sandbox.open(guardian=guardian)
            for i, subnet in enumerate([subnets] if isinstance(subnets, str) else subnets):
                sandbox.add_network(subnet, gateway if i == 0 else None)
        except BaseException:
            with contextlib.suppress(TwinError):
                sandbox.close()
            raise
        return sandbox

    def attach_sandbox(
        self, run_id: str, name_prefix: str = "restoredrill", *, reserved: Collection[str] = ()
    ) -> DockerSandbox:
        """Join the networks another process opened for ``run_id`` (a system dispatched
        to a worker). Closing it removes only what it started; the owner keeps the rest."""
        sandbox = DockerSandbox(self.client, run_id, name_prefix, attached=True, reserved=reserved)
        found = self.client.api.networks(filters={"label": [f"{RUN}={run_id}", f"{MANAGED}=1"]})
        if not found:
            raise TwinError(
                f"run {run_id} has no sandbox network on this engine: its orchestrating "
                "flow ended, or this worker uses another Docker engine"
            )
        anchors = self.client.api.containers(
            filters={"label": [f"{RUN}={run_id}", f"{ROLE}=anchor"]}
        )
        anchor_id = anchors[0]["Id"] if anchors else None
        for item in sorted(found, key=lambda n: n["Name"]):
            info = self.client.api.inspect_network(item["Id"])
            pool = ((info.get("IPAM") or {}).get("Config") or [{}])[0]
            net = ipaddress.ip_network(pool.get("Subnet") or info["Labels"][SUBNET])
            gateway = ipaddress.ip_address(str(pool.get("Gateway") or next(net.hosts())))
            endpoint = (info.get("Containers") or {}).get(anchor_id or "", {})
            anchor_ip = (endpoint.get("IPv4Address") or endpoint.get("IPv6Address") or "").split(
                "/"
            )[0]
            bridge = (info.get("Options") or {}).get(BRIDGE_NAME, "")
            sandbox._nets.append(
                _Network(
                    info["Name"],
                    info["Id"],
                    net,
                    gateway,
                    ipaddress.ip_address(anchor_ip) if anchor_ip else gateway,
                    bridge,
                )
            )
            sandbox.book.hold(gateway, f"the gateway of sandbox subnet {net}")
        sandbox._anchor_id = anchor_id
        sandbox._refresh_addresses()
        sandbox.scratch = scratch.create(run_id, attached=True)
        return sandbox

    def reap_stale(
        self,
        max_age: timedelta | float | None = None,
        alive: Callable[[str], bool] | None = None,
        *,
        runs: Collection[str] | None = None,
    ) -> list[str]:
        """What dead runs left: Docker objects (:func:`reap_stale`), firewall rules and
        scratch folders. Returns what was removed."""
        alive = alive or (lambda run_id: False)
        removed = reap_stale(self.client, max_age, alive, runs=runs)
        removed += firewall.reap(runs, alive)
        removed += scratch.reap(alive, runs=runs)
        return removed


@dataclass
class _Network:
    name: str
    id: str
    subnet: IPNetwork
    gateway: IPAddress
    """Reserved by Docker's IPAM, held by nobody (the host has no address on the bridge)."""
    anchor: IPAddress
    """The anchor's address: where checks come from, and the twins' DNS server (nothing
    answers there, so a twin's lookups fail at once and never leave the sandbox)."""
    bridge: str


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
        *,
        sandbox: DockerSandbox | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.client = client
        self.id = container_id
        self.name = name
        self.container_name = container_name
        self.address = address
        self.network = network
        self.restored = restored
        self.remove_directory = remove_directory
        self.sandbox = sandbox
        self.limits = limits
        self.watched: Watched | None = None
        self._finding: str | None = None
        self._judged = False

    def __repr__(self) -> str:
        return f"DockerTwin({self.name!r}, {self.container_name}, {self.address})"

    @property
    def testinfra_url(self) -> str:
        return f"docker://{self.id}"

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """Run a block in the network of the twin's sandbox (where its address answers)."""
        return self.sandbox.inside() if self.sandbox is not None else contextlib.nullcontext()

    def usage(self) -> Usage | None:
        """Peaks and counters seen so far (``None`` if the twin was never watched)."""
        return self.watched.usage if self.watched is not None else None

    def limit_reached(self) -> str | None:
        """Which of its limits the twin hit, e.g. ``limit: memory 1GiB reached, the
        kernel killed the twin (OOM)``; judged for the last time when it is removed."""
        if self._judged:
            return self._finding
        watched = self.watched
        if watched is None:
            return None
        state = self._state() or {}
        watched.usage.oom_killed = watched.usage.oom_killed or bool(state.get("OOMKilled"))
        watched.sample(disk=False)
        return reached(watched.limits, watched.usage)

    def _last_judgement(self) -> None:
        if not self._judged:
            self._finding = self.limit_reached()
            self._judged = True

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
        exec_id = self._exec_create(cmd, user, workdir, environment)
        out, err = self._exec_output(exec_id, cmd, timeout)
        code = self.client.api.exec_inspect(exec_id).get("ExitCode")
        return ExecOutput(
            exit_code=-1 if code is None else int(code),
            stdout=(out or b"").decode("utf-8", "replace"),
            stderr=(err or b"").decode("utf-8", "replace"),
        )

    def _exec_create(
        self,
        cmd: list[str],
        user: str | None,
        workdir: str | None,
        environment: Mapping[str, str] | None,
    ) -> str:
        """Create the exec of ``cmd``; TwinError saying why if the twin cannot run it."""
        try:
            return str(
                self.client.api.exec_create(
                    self.id,
                    cmd,
                    stdout=True,
                    stderr=True,
                    user=user or "",
                    workdir=workdir,
                    environment=dict(environment) if environment else None,
                )["Id"]
            )
        except docker.errors.APIError as exc:
            if self.is_running():
                raise TwinError(f"{self.name}: cannot run {cmd!r}: {_explain(exc)}") from None
            code = self.exit_code()
            how = "is gone" if code is None else f"is not running (exited with code {code})"
            raise TwinError(f"{self.name} {how}: cannot run {cmd!r}") from None

    def _exec_output(
        self, exec_id: str, cmd: list[str], timeout: float | None
    ) -> tuple[bytes | None, bytes | None]:
        """Start the exec and wait for its (stdout, stderr); killed after ``timeout``."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["out"] = self.client.api.exec_start(exec_id, demux=True)
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
        return out, err

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


@dataclass(frozen=True)
class _Container:
    """What one container of a sandbox is made of (see ``DockerSandbox.run_container``)."""

    image: str
    binds: Mapping[str, Mapping[str, str]]
    host_options: Mapping[str, Any]
    limits: Limits
    labels: Mapping[str, str] | None
    restored: Restored | None
    remove_directory: bool
    command: Sequence[str] | str | None
    entrypoint: Sequence[str] | str | None
    env: Mapping[str, str] | None
    workdir: str | None
    user: str | None
    hostname: str | None
    files: Sequence[Any]


@runtime_checkable
class _Wrapper(Protocol):
    """A twin kind that runs in a container of this sandbox (a VM): its own shutdown,
    then its container's removal."""

    container: DockerTwin

    def stop(self) -> None: ...


class DockerSandbox(Sandbox):
    """The contained networks of one run, its anchor, and the twins started on them."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        name_prefix: str = "restoredrill",
        attached: bool = False,
        *,
        reserved: Collection[str] = (),
    ) -> None:
        self.client = client
        self.attached = attached
        """Joined another process's networks: close() removes only what this one started."""
        self.run_id = run_id
        self.prefix = _slug(f"{name_prefix}-{run_id}", 80)
        self.labels: dict[str, str] = {RUN: run_id, MANAGED: "1", **owner_labels()}
        """Labels for anything created for this run (also images a restore creates)."""
        self.scratch: Path | None = None
        self._nets: list[_Network] = []
        self._twins: dict[str, Twin] = {}
        self.book = AddressBook(reserved)
        """Who holds which address on the sandbox's networks."""
        self._volumes: set[str] = set()
        self._lock = threading.RLock()
        self._closed = False
        self._guardian: Any = None
        self._anchor_id: str | None = None
        self._ns: NetNamespace | None = None
        self._watcher = Watcher(f"limits-{run_id}")

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
    def bridges(self) -> list[str]:
        """The host's names of the sandbox bridges (``rd…``)."""
        return [n.bridge for n in self._nets]

    @property
    def twins(self) -> list[Twin]:
        return list(self._twins.values())

    def adopt(self, twin: Twin) -> None:
        """Hold ``twin``, a twin of another kind wrapping a container this sandbox started
        under the same name (``twin.container``): removing it stops it first."""
        with self._lock:
            if getattr(twin, "container", None) is not self._twins.get(twin.name):
                raise TwinError(f"{twin.name}: no container of that name to adopt")
            self._twins[twin.name] = twin

    def open(self, *, guardian: bool = True) -> None:
        """Make the run's scratch folder and start its guardian (before anything else)."""
        self.scratch = scratch.create(self.run_id)
        if guardian:
            self._guardian = start_guardian(self.run_id)

    # --- the sandbox's network, from inside ----------------------------------------------

    def gateway(self, subnet: str) -> str:
        """The address Docker reserved as the gateway of ``subnet`` (nobody holds it)."""
        return str(self._net(subnet).gateway)

    def anchor_address(self, subnet: str) -> str:
        """The anchor's address on ``subnet``: checks connect to twins from there."""
        return str(self._net(subnet).anchor)

    def _net(self, subnet: str) -> _Network:
        wanted = ipaddress.ip_network(subnet, strict=False)
        for net in self._nets:
            if net.subnet == wanted:
                return net
        raise TwinError(f"{subnet} is not a subnet of this sandbox ({', '.join(self.networks)})")

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the block in the sandbox's network (this thread only, and threads it
        starts): its sockets reach the twins and nothing else."""
        namespace = self._namespace()
        try:
            with namespace.entered():
                yield
        except NamespaceError as exc:
            raise TwinError(
                f"cannot enter the network of run {self.run_id}'s sandbox: {exc.strerror} "
                "(restoredrill needs root, or CAP_SYS_ADMIN, to run checks inside the sandbox)"
            ) from None

    def is_inside(self) -> bool:
        """Whether the calling thread is in the sandbox's network."""
        return self._ns is not None and self._ns.holds_thread()

    def _namespace(self) -> NetNamespace:
        with self._lock:
            if self._ns is not None:
                return self._ns
            if self._anchor_id is None:
                raise TwinError(f"run {self.run_id}'s sandbox has no anchor container")
            try:
                pid = int(self.client.api.inspect_container(self._anchor_id)["State"]["Pid"] or 0)
            except docker.errors.APIError as exc:
                raise TwinError(f"the sandbox's anchor is gone: {_explain(exc)}") from None
            if pid <= 0:
                raise TwinError(f"the sandbox's anchor of run {self.run_id} is not running")
            try:
                self._ns = NetNamespace(f"/proc/{pid}/ns/net")
            except OSError as exc:
                raise TwinError(
                    f"cannot open the network namespace of the sandbox's anchor (pid {pid}): "
                    f"{exc.strerror}; the Docker engine must run on this machine, and "
                    "restoredrill needs root (or CAP_SYS_ADMIN) and the host's PID namespace"
                ) from None
            return self._ns

    # --- networks ------------------------------------------------------------------------

    def add_network(self, subnet: str, gateway: str | None = None) -> str:
        """Add a contained network on ``subnet`` (one per plant segment); return its name.

        Firewall rules for its bridge come first, then the network (no host address on
        it), then the anchor joins it. Raises TwinError where that cannot be done.
        """
        try:
            net = ipaddress.ip_network(str(subnet), strict=False)
        except ValueError as exc:
            raise TwinError(f"sandbox subnet {subnet!r} is not a subnet: {exc}") from None
        if net.num_addresses < 4:
            raise TwinError(
                f"sandbox subnet {net} is too small: use at least a /30 (a /24 is usual)"
            )
        with self._lock:
            if self._closed:
                raise TwinError(f"sandbox of run {self.run_id} is closed")
            try:
                gw = (
                    ipaddress.ip_address(gateway) if gateway else self.book.pick(net, "the gateway")
                )
            except ValueError as exc:
                raise TwinError(f"sandbox gateway {gateway!r} is not an address: {exc}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise TwinError(f"sandbox gateway {gw} is not a host address in {net}")
            self.book.hold(
                gw,
                f"the gateway of sandbox subnet {net} (an address Docker reserves; no system "
                "of the inventory claimed it when the sandbox opened)",
            )
            anchor_ip = self.book.pick(net, "the sandbox's anchor")
            self.book.hold(anchor_ip, "the sandbox's anchor (checks run from there)")
            index = len(self._nets)
            name = f"{self.prefix}-net{index}"
            bridge = "rd" + hashlib.sha256(f"{self.run_id}/{index}".encode()).hexdigest()[:10]
            firewall.isolate(bridge, self.run_id)
            try:
                created = self.client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    check_duplicate=True,
                    enable_ipv6=net.version == 6,
                    options={BRIDGE_NAME: bridge, INHIBIT_IPV4: "true"},
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(net), gateway=str(gw))]),
                    labels={**self.labels, SUBNET: str(net)},
                )
            except docker.errors.APIError as exc:
                firewall.release([bridge])
                if "overlap" in _explain(exc).lower():
                    raise TwinError(self._overlap_message(net)) from None
                raise TwinError(
                    f"could not create sandbox network {name} on {net}: {_explain(exc)}"
                ) from None
            network = _Network(name, created.id, net, gw, anchor_ip, bridge)
            self._nets.append(network)
            _check_bridge(bridge, net)
            self._join_anchor(network)
        return name

    def _join_anchor(self, net: _Network) -> None:
        """Start the anchor on the first network, connect it to the others."""
        api = self.client.api
        key = "ipv4_address" if net.anchor.version == 4 else "ipv6_address"
        if self._anchor_id is not None:
            api.connect_container_to_network(self._anchor_id, net.id, **{key: str(net.anchor)})
            return
        image = ensure_anchor_image(self.client)
        created = api.create_container(
            image,
            command=ANCHOR_COMMAND,
            user=ANCHOR_USER,
            name=_slug(f"{self.prefix}-anchor"),
            hostname="anchor",
            labels={**self.labels, ROLE: "anchor"},
            networking_config=api.create_networking_config(
                {net.name: api.create_endpoint_config(**{key: str(net.anchor)})}
            ),
            host_config=api.create_host_config(network_mode=net.name, **ANCHOR_HOST_CONFIG),
        )
        self._anchor_id = created["Id"]
        api.start(self._anchor_id)
        namespace = self._namespace()
        with self.inside():  # prove it: this thread can enter, and it is not the host's
            pass
        if namespace.inode == os.stat("/proc/self/ns/net").st_ino:
            raise TwinError("the sandbox's anchor shares the host's network: refusing to run")

    def _overlap_message(self, net: IPNetwork) -> str:
        """Why ``net`` cannot be had, and what to do: wait for a live run, remove a dead
        run's leftover, or pick other subnets (never: remove someone else's network)."""
        clashes: list[str] = []
        advice = "give this site's sandbox.subnets other subnets in the inventory"
        leftover: str | None = None
        try:
            others = self.client.api.networks()
        except docker.errors.APIError:
            others = []
        for other in others:
            for conf in (other.get("IPAM") or {}).get("Config") or []:
                try:
                    theirs = ipaddress.ip_network(conf.get("Subnet", ""), strict=False)
                except ValueError:
                    continue
                if theirs.version != net.version or not theirs.overlaps(net):
                    continue
                labels = other.get("Labels") or {}
                run = labels.get(RUN)
                what = f"Docker network {other['Name']!r} ({theirs})"
                if not run:
                    clashes.append(f"{what}, which is not restoredrill's")
                    continue
                owner = owner_of(labels)
                state = owner.alive() if owner else None
                if state is True and owner is not None:
                    clashes.append(
                        f"{what} of restoredrill run {run}, which is running "
                        f"(pid {owner.pid} on {owner.host})"
                    )
                    advice = f"wait until run {run} is done, or {advice}"
                elif state is False:
                    clashes.append(
                        f"{what}, a leftover of restoredrill run {run}, whose process is gone"
                    )
                    leftover = other["Name"]
                else:
                    where = f" on host {owner.host}" if owner else ""
                    clashes.append(f"{what} of restoredrill run {run}, started{where}")
                    advice = f"wait until run {run} is done, or {advice}"
        what = "; ".join(clashes) or "an existing Docker network"
        text = f"sandbox subnet {net} overlaps {what}: {advice}"
        if leftover:
            text += f"; the next run removes that leftover (or now: `docker network rm {leftover}`)"
        return text

    def _place(self, name: str, address: Any) -> tuple[_Network, IPAddress]:
        """Pick the network and reserve the address of a twin (:class:`AddressBook`)."""
        if self.attached:
            self._refresh_addresses()
        index, ip = self.book.place(name, address, [n.subnet for n in self._nets])
        return self._nets[index], ip

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
                        if self.book.holder(ip) is None:
                            self.book.hold(ip, f"twin {endpoint.get('Name', '?')!r}")

    # --- twins ---------------------------------------------------------------------------

    def start(
        self,
        spec: Any,
        restored: Restored,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        remove_directory: bool = False,
        limits: Limits | None = None,
    ) -> Twin:
        """Create and start the twin of one system from ``restored`` (see module docs).

        An image (or a restored directory, bind-mounted read-write at ``spec.data_path``
        and run with ``spec.image``) runs as a container; another kind of restore (disks)
        starts as the kind of twin ``TWIN_KINDS`` names. ``remove_directory`` makes the
        sandbox delete a restored directory at teardown. ``limits``: the twin's bounds
        (default: the built-in ones with ``spec.limits``).
        """
        limits = limits or effective(getattr(spec, "limits", None))
        self._check_new(name)
        if restored.kind != "container":
            start_kind = registered(TWIN_KINDS, restored.kind, "kind of twin")
            return start_kind(self, spec, restored, name, labels, limits)
        image = restored.image or spec.image
        if not image:
            raise TwinError(
                f"{name}: the restore gave no image and the system names none: "
                "set run.image to the image that serves the restored data"
            )
        return self.run_container(
            name,
            image,
            address=spec.address,
            binds=self._binds(name, spec, restored),
            host_options=_bounds(limits),
            limits=limits,
            labels=labels,
            restored=restored,
            remove_directory=remove_directory,
            command=spec.command,
            entrypoint=spec.entrypoint,
            env=spec.env,
            workdir=spec.workdir,
            user=spec.user,
            hostname=spec.hostname,
            files=spec.files,
        )

    def _check_new(self, name: str) -> None:
        with self._lock:
            if self._closed:
                raise TwinError(f"sandbox of run {self.run_id} is closed")
            if name in self._twins:
                raise TwinError(f"{name}: a twin of that name already runs in this sandbox")

    def run_container(
        self,
        name: str,
        image: str,
        *,
        address: Any,
        binds: Mapping[str, Mapping[str, str]],
        host_options: Mapping[str, Any],
        limits: Limits,
        labels: Mapping[str, str] | None = None,
        restored: Restored | None = None,
        remove_directory: bool = False,
        command: Sequence[str] | str | None = None,
        entrypoint: Sequence[str] | str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        files: Sequence[Any] = (),
    ) -> DockerTwin:
        """Start container ``name`` from local ``image`` at ``address`` (or a free one) on
        the sandbox network holding it: the run's labels and owner labels, the sandbox's
        address book, a DNS server inside the sandbox, ``binds`` and ``host_options``
        (bounds, capabilities, devices) as given, watched against ``limits``. Removed with
        the sandbox (and by the guardian if this process dies). A twin kind that runs in a
        container (a VM) starts through here."""
        self._check_new(name)
        create = _Container(
            image=image,
            binds=binds,
            host_options=host_options,
            limits=limits,
            labels=labels,
            restored=restored,
            remove_directory=remove_directory,
            command=command,
            entrypoint=entrypoint,
            env=env,
            workdir=workdir,
            user=user,
            hostname=hostname,
            files=files,
        )
        for attempt in range(_PLACE_ATTEMPTS):
            with self._lock:
                net, ip = self._place(name, address)
            try:
                return self._create(name, net, ip, create)
            except _AddressTaken:
                # another process's twin (a worker of the same run) took that free address
                # between our look and our start: never ours to fix for a production address
                self.book.hold(ip, "a twin started by another process")
                if address is not None or attempt == _PLACE_ATTEMPTS - 1:
                    raise TwinError(
                        f"{name}: address {ip} is already in use on sandbox network {net.name} "
                        "(another twin of this run holds it)"
                    ) from None
        raise AssertionError("unreachable")

    def _create(self, name: str, net: _Network, ip: IPAddress, spec: _Container) -> DockerTwin:
        """Create and start one container at ``ip`` (``files``, resolved ``run.files``,
        laid in before it starts); undo everything if that fails."""
        container_name = _slug(f"{self.prefix}-{name}")
        container_id: str | None = None
        try:
            container_id = self._new_container(name, container_name, net, ip, spec)
            twin = DockerTwin(
                self.client,
                container_id,
                name,
                container_name,
                str(ip),
                net.name,
                spec.restored or Restored(image=spec.image),
                spec.remove_directory,
                sandbox=self,
                limits=spec.limits,
            )
            with self._lock:
                self._twins[name] = twin
            lay_in(self.client, container_id, spec.files, name)
            self.client.api.start(container_id)
            self._watch(twin, spec.limits)
        except BaseException as exc:
            self._undo_create(name, ip, container_id)
            if isinstance(exc, docker.errors.ImageNotFound):
                raise TwinError(
                    f"{name}: image {spec.image!r} is not in the local engine "
                    "(nothing is pulled: load or build it first)"
                ) from None
            if isinstance(exc, docker.errors.APIError):
                if "address already in use" in _explain(exc).lower():
                    raise _AddressTaken() from None
                raise TwinError(f"{name}: could not start the container: {_explain(exc)}") from None
            raise
        return twin

    def _new_container(
        self, name: str, container_name: str, net: _Network, ip: IPAddress, spec: _Container
    ) -> str:
        """Create (not start) the container of ``spec`` at ``ip``; its id."""
        hostname = spec.hostname or _hostname(name)
        endpoint = self.client.api.create_endpoint_config(
            aliases=sorted({name, hostname}),
            **({"ipv4_address": str(ip)} if ip.version == 4 else {"ipv6_address": str(ip)}),
        )
        created = self.client.api.create_container(
            spec.image,
            command=spec.command,
            entrypoint=spec.entrypoint,
            environment=dict(spec.env or {}) or None,
            working_dir=spec.workdir,
            user=spec.user,
            hostname=hostname,
            name=container_name,
            labels={**(spec.labels or {}), **self.labels, SYSTEM: name},
            networking_config=self.client.api.create_networking_config({net.name: endpoint}),
            host_config=self.client.api.create_host_config(
                binds={k: dict(v) for k, v in spec.binds.items()},
                network_mode=net.name,
                # a DNS server inside the sandbox where nothing answers: lookups fail at
                # once and never leave it (Docker < 26 forwards them from the host's
                # namespace when the upstream is a host loopback resolver, CVE-2024-29018)
                dns=[str(net.anchor)],
                **spec.host_options,
            ),
        )
        return str(created["Id"])

    def _undo_create(self, name: str, ip: IPAddress, container_id: str | None) -> None:
        """Forget a twin whose start failed and remove its container, if one was made."""
        with self._lock:
            self._twins.pop(name, None)
            self.book.release(ip)
        self._watcher.forget(name)
        if container_id is not None:
            td = _Teardown()
            td(self.client.api.remove_container, container_id, force=True, v=True)
            if td.interrupted is not None:
                raise td.interrupted from None

    def _watch(self, twin: DockerTwin, limits: Limits) -> None:
        """Sample the twin's cgroup and disk from now on; stop it past its disk limit."""
        info = self.client.api.inspect_container(twin.id)
        pid = int((info.get("State") or {}).get("Pid") or 0)
        layer = ((info.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir")
        data = twin.restored.directory

        def stop(why: str) -> None:
            log.warning("%s: %s", twin.name, why)
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.kill(twin.id)

        twin.watched = Watched(
            name=twin.name,
            limits=limits,
            counters=Counters(pid, twin.id) if pid > 0 else None,
            layer=Path(layer) if layer and Path(layer).is_dir() else None,
            data=Path(data) if data is not None else None,
            stop=stop,
        )
        twin.watched.sample(disk=False)
        self._watcher.watch(twin.watched)

    def start_device(
        self,
        name: str,
        command: Sequence[str],
        *,
        address: str,
        mounts: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> DockerTwin:
        """An emulated field device in the emulator image (built offline the first time)."""
        from .emulator_image import ensure_emulator_image

        image = ensure_emulator_image(self.client)
        return self.start_aux(
            name, image, list(command), address, mounts, labels, env=env, limits=limits
        )

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
        limits: Limits | None = None,
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
        twin = self.start(
            spec,
            Restored(image=image),
            name,
            {ROLE: "aux", **(labels or {})},
            limits=limits,
        )
        assert isinstance(twin, DockerTwin)
        return twin

    def restore_context(self, workdir: Path, image_tag: str, **options: Any) -> Any:
        """A restore into this engine: image sources load into it (``ctx.docker``)."""
        from .sources.base import RestoreContext

        labels = {**self.labels, **(options.pop("labels", None) or {})}
        return RestoreContext(
            docker=self.client, workdir=workdir, image_tag=image_tag, labels=labels, **options
        )

    def discard(self, restored: Restored) -> None:
        """Remove the images a restore created (its twin was never started)."""
        td = _Teardown()
        for image in restored.created_images:
            td(self.client.api.remove_image, image, force=True)
        td.finish("discarding a restore")

    def twin_folder(self, name: str) -> Path:
        """A fresh folder for one twin in the run's scratch folder, with a short name:
        unix sockets live in it, and their paths must stay under 108 characters."""
        if self.scratch is None:
            raise TwinError(f"run {self.run_id}'s sandbox has no scratch folder")
        digest = hashlib.sha256(f"{name}/{time.monotonic_ns()}".encode()).hexdigest()[:8]
        folder = self.scratch / f"t-{digest}"
        folder.mkdir(mode=0o700)
        if len(str(folder / "lifeline.sock")) > 107:
            raise TwinError(
                f"{name}: the scratch folder {folder} is too long for the VM's sockets "
                "(at most 107 characters): set TMPDIR to a shorter folder, e.g. /tmp"
            )
        return folder

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
        restored directory. Which limit it hit is judged first (the cgroup goes with it).
        Safe to call twice; gone objects are fine."""
        if not isinstance(twin, DockerTwin):
            if not isinstance(twin, _Wrapper) or not isinstance(twin.container, DockerTwin):
                raise TypeError(f"not a twin of this Docker sandbox: {twin!r}")
            inner = twin.container
            with self._lock:
                if self._twins.get(twin.name) is twin:
                    self._twins[twin.name] = inner
            td = _Teardown()
            td(twin.stop)  # its own shutdown first (a VM: QEMU stops, its folder goes)
            td(self.remove, inner)
            td.finish(f"removing twin {twin.name}")
            return
        with self._lock:
            if self._twins.get(twin.name) is twin:
                del self._twins[twin.name]
            if twin.address:
                self.book.release(twin.address, f"twin {twin.name!r}")
        td = _Teardown()
        td(twin._last_judgement)
        self._watcher.forget(twin.name)
        td(self.client.api.remove_container, twin.id, force=True, v=True)
        for image in twin.restored.created_images:
            td(self.client.api.remove_image, image, force=True)
        if twin.remove_directory and twin.restored.directory is not None:
            td(shutil.rmtree, twin.restored.directory, ignore_errors=True)
        td.finish(f"removing twin {twin.name}")

    def close(self) -> None:
        """Remove every twin, network, volume, image, firewall rule and scratch folder of
        this run (also those created but never registered, found by label), then stop
        its guardian. Idempotent; a Ctrl-C during teardown is re-raised once everything
        was tried."""
        with self._lock:
            self._closed = True
            twins = list(self._twins.values())
        td = _Teardown()
        for twin in twins:
            td(self.remove, twin)
        self._watcher.stop()
        if self.attached:  # the owner of the run removes its networks and leftovers
            for name in self._volumes:
                td(self.client.api.remove_volume, name, force=True)
        else:
            sweep(self.client, self.run_id, td)
            td(firewall.release, {n.bridge for n in self._nets} | _run_bridges(self.run_id))
        with self._lock:
            if self._ns is not None:
                self._ns.close()
                self._ns = None
        if self.scratch is not None:
            td(shutil.rmtree, self.scratch, ignore_errors=True)
        if not self.attached:
            td(stop_guardian, self._guardian)
        td.finish(f"teardown of run {self.run_id}{' (attached)' if self.attached else ''}")

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
            return
        try:
            self.close()
        except TwinError as problem:  # do not hide the error that is already propagating
            log.warning("%s", problem)


def _bounds(limits: Limits) -> dict[str, Any]:
    """Docker host-config options enforcing ``limits`` (disk is watched, not set here)."""
    out: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "cap_add": capabilities(limits) or None,
        "security_opt": ["no-new-privileges"],
    }
    if limits.memory is not None:
        out["mem_limit"] = out["memswap_limit"] = int(limits.memory)  # no swap
    if limits.cpus is not None:
        out["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.pids is not None:
        out["pids_limit"] = limits.pids
    return out


def _ipv4_of(interface: str) -> str | None:
    """The IPv4 address of a local interface (``None``: it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            raw = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", interface[:15].encode()))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return None
            raise
    return socket.inet_ntoa(raw[20:24])


def _check_bridge(bridge: str, net: IPNetwork) -> None:
    """Refuse a sandbox bridge that is not on this machine, or that the host holds an
    IPv4 address on (an engine ignoring inhibit_ipv4): containment would not hold."""
    if not os.path.exists(f"/sys/class/net/{bridge}"):
        raise TwinError(
            f"the sandbox bridge {bridge} of {net} is not on this machine: the Docker engine "
            "must run here, where restoredrill sets up the containment of twins (host firewall, "
            "checks from inside the sandbox)"
        )
    held = _ipv4_of(bridge) if net.version == 4 else None
    if held is not None:
        raise TwinError(
            f"the host holds {held} on the sandbox bridge {bridge} of {net}: this Docker engine "
            f"ignores the bridge option {INHIBIT_IPV4}, so twins could reach the host; refusing "
            "to run (Docker 20.10 or later honours it)"
        )


def _run_bridges(run_id: str) -> set[str]:
    return {rule.bridge for rule in firewall.run_rules(run_id)}


def sweep(client: Any, run_id: str, td: _Teardown | None = None) -> list[str]:
    """Remove every Docker object of ``run_id`` (by label, whoever created it): its
    containers, then networks, volumes and images. Returns what was removed; with ``td``,
    problems are collected there instead of logged."""
    api = client.api
    own = td is None
    td = td or _Teardown()
    mine = {"label": [f"{RUN}={run_id}", f"{MANAGED}=1"]}
    removed: list[str] = []

    def remove(kind: str, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        before = len(td.problems)
        td(fn, *args, **kw)
        if len(td.problems) == before:
            removed.append(f"{kind} {name}")

    def containers() -> None:
        for c in api.containers(all=True, filters=mine):
            name = (c.get("Names") or [c["Id"][:12]])[0].lstrip("/")
            remove("container", name, api.remove_container, c["Id"], force=True, v=True)

    def networks() -> None:
        for n in api.networks(filters=mine):
            remove("network", n["Name"], _remove_network, client, n["Id"])

    def volumes() -> None:
        for v in (api.volumes(filters=mine) or {}).get("Volumes") or []:
            remove("volume", v["Name"], api.remove_volume, v["Name"], force=True)

    def images() -> None:  # what restores of this run created and labelled
        for image in api.images(filters={"label": f"{RUN}={run_id}"}):
            remove("image", image["Id"][:19], _remove_image, client, image)

    for step in (containers, networks, volumes, images):
        td(step)
    if own and td.problems:
        log.warning("removing run %s left: %s", run_id, "; ".join(td.problems))
    if own and td.interrupted is not None:
        raise td.interrupted
    return removed


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
    alive: Callable[[str], bool] | None = None,
    *,
    runs: Collection[str] | None = None,
) -> list[str]:
    """Remove what dead runs left: containers, networks and volumes labelled
    ``restoredrill.managed=1`` and images labelled ``restoredrill.run`` (which runs are
    dead: :func:`.ownership.judge`). Returns what was removed."""
    api = client.api
    managed = {"label": f"{MANAGED}=1"}
    found: list[Found] = []
    for c in api.containers(all=True, filters=managed):
        name = (c.get("Names") or [c["Id"][:12]])[0].lstrip("/")
        remove = partial(api.remove_container, c["Id"], force=True, v=True)
        found.append(
            Found("container", name, c.get("Labels") or {}, _parse_time(c.get("Created")), remove)
        )
    for n in api.networks(filters=managed):
        remove = partial(_remove_network, client, n["Id"])
        found.append(
            Found(
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
            Found(
                "volume", v["Name"], v.get("Labels") or {}, _parse_time(v.get("CreatedAt")), remove
            )
        )
    for i in api.images(filters={"label": RUN}):
        name = next((t for t in i.get("RepoTags") or [] if t != "<none>:<none>"), i["Id"][:19])
        remove = partial(_remove_image, client, i)
        found.append(
            Found("image", name, i.get("Labels") or {}, _parse_time(i.get("Created")), remove)
        )
    removed: list[str] = []
    for item in judge(found, max_age, alive, runs):  # containers before networks
        run = item.labels.get(RUN, "")
        td = _Teardown()
        td(item.remove)
        if td.interrupted is not None:
            raise td.interrupted
        if td.problems:
            log.warning(
                "could not remove %s %s of dead run %s: %s", item.kind, item.name, run, td.problems
            )
        else:
            removed.append(f"{item.kind} {item.name} (run {run or '?'})")
    if removed:
        log.info("removed leftovers of dead runs: %s", ", ".join(removed))
    return removed
