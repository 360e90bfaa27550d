"""The twin contract: a backend opens sandboxes, a sandbox starts twins (and emulated
field devices) in its contained network, and everything is reaped by ownership.

flows/ speak only this contract; a backend is one module registered by the name the
inventory uses (``sandbox.backend``), imported when a site names it:

- :class:`Backend` opens a run's :class:`Sandbox` (or joins one another process
  opened), and reaps what dead runs left (judged by :mod:`.ownership`);
- :class:`Sandbox` holds the run's contained networks and address book
  (:mod:`.addresses`), its scratch folder and labels, and starts what a backup source
  restored as a :class:`Twin`: an image or tree as a container, disks as a VM
  (:attr:`Restored.kind`; a backend runs the kinds it registers, e.g. Docker runs VMs
  as QEMU in a container on the sandbox network, :mod:`.vm_twin`);
- :class:`Twin` is the restored system as checks see it: an address, a shell (``exec``,
  ``testinfra_url``), its output, the facts of the platform it ran on, the artifacts
  (console log) kept as evidence.

A Proxmox backend fits the same contract: its sandbox an isolated SDN zone, its twins
VMs on the cluster (``kind: vm``), restores as vzdump/PBS archives or disk images.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from restoredrill.errors import ExitCode, RestoredrillError


class TwinError(RestoredrillError):
    """A twin could not be restored, started or made ready; the message says why. Out of a
    run's steps (no engine, no sandbox network) the run could not start: exit 2."""

    exit_code = ExitCode.BAD_INPUT


@dataclass
class ExecOutput:
    exit_code: int
    stdout: str
    stderr: str = ""


@dataclass
class Restored:
    """What a backup source restored: an image to run, a tree to mount, or disks to boot."""

    image: str | None = None
    directory: Path | None = None
    created_images: tuple[str, ...] = ()
    """Images this restore created, removed again at teardown."""
    disks: tuple[Path, ...] = ()
    """Disks to boot, in boot order (throw-away overlays over the read-only backups)."""
    formats: tuple[str, ...] = ()
    """The backups' formats behind ``disks`` (vmdk, vhdx, ...), for the evidence."""
    read_only: tuple[Path, ...] = ()
    """Files the twin reads and must never write (the backups behind ``disks``)."""

    @property
    def kind(self) -> str:
        """The kind of twin that runs it: ``vm`` for disks, else ``container``."""
        return "vm" if self.disks else "container"


@dataclass(frozen=True)
class Artifact:
    """A file kept as evidence of a run (a console log, a screenshot), with its digest."""

    name: str
    path: Path
    sha256: str

    @classmethod
    def of(cls, name: str, path: Path) -> Artifact:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return cls(name, path, digest.hexdigest())

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


class Twin(ABC):
    """A restored system running in a sandbox."""

    name: str
    address: str | None
    kind: str = "container"
    evidence_dir: Path | None = None
    """Where checks keep what they capture (screenshots); set by the run."""

    @property
    @abstractmethod
    def testinfra_url(self) -> str | None:
        """A URL for ``testinfra.get_host`` (e.g. ``docker://ID``), if the twin has a shell."""

    @abstractmethod
    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecOutput:
        """Run a command inside the twin."""

    @abstractmethod
    def logs(self, tail: int = 50) -> str:
        """The twin's recent output (a VM's: its serial console), for error messages."""

    @abstractmethod
    def is_running(self) -> bool: ...

    def exit_code(self) -> int | None:
        """The exit code once the twin has stopped (``None`` while running or unknown)."""
        return None

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """A block in which this thread's sockets reach the twin's address (its sandbox's
        network); probes and network checks of the twin run there."""
        return contextlib.nullcontext()

    def limit_reached(self) -> str | None:
        """Which of its limits (memory, pids, disk, ...) the twin hit, in words; ``None``."""
        return None

    def platform(self) -> dict[str, Any] | None:
        """What the twin ran on, for the evidence (a VM: accelerator, firmware, machine,
        disk formats); ``None`` for a plain container."""
        return None

    def keep(self, folder: Path) -> list[Artifact]:
        """Save what shows the twin's life (a VM's console log) into ``folder``."""
        return []

    def advice(self) -> str:
        """A hint for a twin that never became ready (e.g. another disk bus), or ``""``."""
        return ""


class Sandbox(ABC):
    """The contained network of one run and everything started in it.

    A twin in it can reach other twins of the sandbox and nothing else: no address of
    the host, nothing outside the sandbox subnets. The host itself has no route into
    it either: whatever must talk to twins (probes, network checks) runs in a block of
    :meth:`inside`. Everything it creates carries :attr:`labels` (run, owner process),
    so a dead run's leftovers are found and reaped (:mod:`.ownership`).
    """

    run_id: str
    scratch: Path | None
    """The run's scratch folder (restores, device configurations); removed at close."""
    labels: Mapping[str, str]
    """The run's ownership labels, for anything created for it."""

    @property
    @abstractmethod
    def networks(self) -> Sequence[str]:
        """The sandbox subnets (CIDR): checks may connect only inside them."""

    @abstractmethod
    def start(
        self,
        spec: Any,
        restored: Restored,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        limits: Any = None,
    ) -> Twin:
        """Start one restored system as ``name`` (``spec`` is the system's run spec), as
        the kind of twin its restore calls for (:attr:`Restored.kind`), bounded by
        ``limits`` (a :class:`~.limits.Limits`; default: the built-in ones)."""

    @abstractmethod
    def start_device(
        self,
        name: str,
        command: Sequence[str],
        *,
        address: str,
        mounts: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        limits: Any = None,
    ) -> Twin:
        """Start an emulated field device (PLC, SCADA server) at ``address``, running
        ``command`` in the backend's emulator runtime; ``mounts`` maps a path inside to a
        folder of this host (its configuration)."""

    @abstractmethod
    def restore_context(self, workdir: Path, image_tag: str, **options: Any) -> Any:
        """A :class:`~.sources.base.RestoreContext` for restoring into this sandbox's
        backend (``options``: labels, limit, ratio_guard, cancel)."""

    @abstractmethod
    def discard(self, restored: Restored) -> None:
        """Remove what a restore created (images) when no twin was started from it."""

    @abstractmethod
    def inside(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the calling thread (and threads it starts) is in the
        sandbox's network: its sockets reach the twins, never the host's networks."""

    @abstractmethod
    def is_inside(self) -> bool:
        """Whether the calling thread is in the sandbox's network now."""

    @abstractmethod
    def remove(self, twin: Twin) -> None:
        """Stop and remove one twin and what its restore created."""

    @abstractmethod
    def close(self) -> None:
        """Tear down everything of this run; safe to call twice."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """Where twins run (``sandbox.backend`` in the inventory)."""

    kind: str

    @abstractmethod
    def open_sandbox(
        self,
        run_id: str,
        subnets: str | Sequence[str],
        *,
        reserved: Collection[str] = (),
        guardian: bool = True,
    ) -> Sandbox:
        """Open the run's contained sandbox on ``subnets``; ``reserved``: addresses the
        inventory claims; ``guardian``: a process that removes the run if this one dies."""

    @abstractmethod
    def attach_sandbox(self, run_id: str, *, reserved: Collection[str] = ()) -> Sandbox:
        """Join the sandbox another process opened for ``run_id`` (a dispatched system)."""

    @abstractmethod
    def reap_stale(
        self,
        max_age: timedelta | float | None = None,
        alive: Any = None,
        *,
        runs: Collection[str] | None = None,
    ) -> list[str]:
        """Remove what dead runs left (:func:`.ownership.judge`); returns what went."""


_BACKENDS = {"docker": "restoredrill.twins.docker:DockerBackend"}
"""Backends by the name the inventory uses (a Proxmox backend registers here)."""


def backend(kind: str, **options: Any) -> Backend:
    """The twin backend registered as ``kind`` (imported only when named)."""
    try:
        module, _, cls = _BACKENDS[kind].partition(":")
    except KeyError:
        raise TwinError(f"unknown twin backend {kind!r} (known: {', '.join(_BACKENDS)})") from None
    return getattr(importlib.import_module(module), cls)(**options)


def registered(table: Mapping[str, str], kind: str, what: str) -> Any:
    """The object a ``module:attribute`` entry of ``table`` names (imported when asked)."""
    try:
        module, _, attribute = table[kind].partition(":")
    except KeyError:
        raise TwinError(f"unknown {what} {kind!r} (known: {', '.join(table)})") from None
    return getattr(importlib.import_module(module), attribute)


__all__ = [
    "Artifact",
    "Backend",
    "ExecOutput",
    "Restored",
    "Sandbox",
    "Twin",
    "TwinError",
    "backend",
    "registered",
]
