"""Whole-image twins in the Docker sandbox: a restored disk boots as a VM at its production address.

Why a *kind of twin* in the Docker sandbox rather than a backend of its own: a plant's
sandbox holds container twins, VM twins and emulated field devices on one contained
network, and they must reach each other at their production addresses. QEMU runs in
a container of the sandbox (:mod:`.vm_container`: its ``eth0`` bridged to the VM's
tap, no address left on the container's side), so the VM is one more station on the
sandbox network, started through :meth:`DockerSandbox.run_container` with the run's
labels, owner labels and address book: the host firewall of the sandbox's bridges,
the checks from inside the sandbox (``inside()``), the limits watcher, the guardian
after ``kill -9`` and the reaper all cover it as they cover any twin.

The container gets ``/dev/net/tun`` (and ``/dev/kvm`` under KVM), NET_ADMIN and SETPCAP
only (QEMU itself runs with none), the twin's folder read-write at ``/vm`` (overlays,
sockets, console log), each backup read-only at its own path, memory of the guest +
512 MiB and a pids limit. The folder is short (``<scratch>/t-xxxxxxxx``): unix socket
paths must stay under 108 characters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .access import SshAccess, WinrmAccess
from .base import Artifact, ExecOutput, Restored, Twin, TwinError
from .limits import Limits
from .ownership import ROLE
from .qemu import Disk, QemuVM, VMError
from .vm_container import FOLDER, OVERHEAD, SUPERVISOR_IN_IMAGE, TAP, ensure_runner_image
from .vm_spec import VMSpec

PIDS = 256
"""Processes and threads of a VM's container (QEMU's threads, the supervisor)."""
TCG_NOTE = "TCG: not the plant's RTO"
"""How a recovery time measured under emulation (no KVM) is marked."""


@dataclass
class _Started:
    """The VM's container as QemuVM's launcher sees it (``Running``)."""

    twin: Any

    def is_running(self) -> bool:
        return bool(self.twin.is_running())

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # gone already: the sandbox removes the rest
            self.twin.client.api.kill(self.twin.id)


@dataclass
class SandboxLauncher:
    """Starts the VM's supervisor (and QEMU) in a container of ``sandbox`` at ``address``."""

    sandbox: Any
    name: str
    address: Any
    restored: Restored
    limits: Limits
    labels: Mapping[str, str]
    container: Any = None

    def qemu_folder(self, folder: Path) -> str:
        return FOLDER

    def netdev(self) -> str | None:
        return f"tap,ifname={TAP},script=no,downscript=no"

    def start(self, folder: Path, argv: list[str], name: str) -> _Started:
        binds = {str(folder): {"bind": FOLDER, "mode": "rw"}}
        for path in self.restored.read_only:
            real = str(Path(path).resolve())
            binds[real] = {"bind": real, "mode": "ro"}
        kvm = "kvm" in argv[argv.index("-accel") + 1 : argv.index("-accel") + 2]
        devices = ["/dev/net/tun:/dev/net/tun:rwm"] + (["/dev/kvm:/dev/kvm:rwm"] if kvm else [])
        memory = int(self.limits.memory or 0)
        host_options: dict[str, Any] = {
            "cap_drop": ["ALL"],
            "cap_add": ["NET_ADMIN", "SETPCAP"],
            "devices": devices,
            "security_opt": ["no-new-privileges"],
            "mem_limit": memory,
            "memswap_limit": memory,
            "pids_limit": self.limits.pids,
            "nano_cpus": int((self.limits.cpus or 1) * 1e9),
        }
        command = ["python3", SUPERVISOR_IN_IMAGE, FOLDER, "--tap", TAP, "--drop-caps", "--"]
        self.container = self.sandbox.run_container(
            self.name,
            ensure_runner_image(self.sandbox.client),
            address=self.address,
            binds=binds,
            host_options=host_options,
            limits=self.limits,
            labels={**self.labels, ROLE: "vm"},
            restored=self.restored,
            command=[*command, *argv],
        )
        return _Started(self.container)


def vm_limits(spec: VMSpec, limits: Limits) -> Limits:
    """The bounds of a VM's container: the guest's memory + QEMU's, its CPUs, few pids."""
    return limits.model_copy(
        update={
            "memory": spec.memory + OVERHEAD,
            "cpus": float(spec.cpus),
            "pids": min(limits.pids or PIDS, PIDS),
        }
    )


def start_vm(
    sandbox: Any,
    spec: Any,
    restored: Restored,
    name: str,
    labels: Mapping[str, str] | None,
    limits: Limits,
) -> VMTwin:
    """Boot ``restored.disks`` as VM twin ``name`` at ``spec.address`` (see module docs)."""
    wrong = spec.container_fields()
    if wrong:
        raise TwinError(
            f"{name}: a disk image boots as a VM: run.{wrong[0]} applies to container twins only"
        )
    vm_spec: VMSpec = spec.vm or VMSpec()
    folder = sandbox.twin_folder(name)
    disks = []
    for i, overlay in enumerate(restored.disks):
        target = folder / f"disk{i}.qcow2"
        shutil.move(str(overlay), target)  # the overlay names its backup by absolute path
        disks.append(Disk(str(target)))
    restored = Restored(
        directory=folder,
        disks=tuple(Path(d.path) for d in disks),
        formats=restored.formats,
        read_only=restored.read_only,
    )
    bounded = vm_limits(vm_spec, limits)
    launcher = SandboxLauncher(sandbox, name, spec.address, restored, bounded, labels or {})
    vm = QemuVM(
        name,
        vm_spec,
        disks,
        folder,
        launcher=launcher,
        address=str(spec.address) if spec.address else None,
    )
    try:
        vm.start()
    except BaseException:
        if launcher.container is not None:
            with contextlib.suppress(Exception):
                sandbox.remove(launcher.container)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    twin = VMTwin(sandbox, vm, launcher.container, vm_spec, restored)
    sandbox.adopt(twin)
    return twin


class VMTwin(Twin):
    """A restored disk image running as a VM in the sandbox (QEMU in ``container``)."""

    kind = "vm"

    def __init__(
        self, sandbox: Any, vm: QemuVM, container: Any, spec: VMSpec, restored: Restored
    ) -> None:
        self.sandbox = sandbox
        self.vm = vm
        self.container = container
        self.spec = spec
        self.restored = restored
        self.name = vm.name
        self.address = container.address
        self.limits = container.limits
        """The bounds of its container (the guest's memory + QEMU's, its CPUs)."""
        self.evidence_dir: Path | None = None

    def __repr__(self) -> str:
        return f"VMTwin({self.name!r}, {self.address}, accel={self.vm.accel})"

    # --- what checks use -----------------------------------------------------------------

    @property
    def remote(self) -> SshAccess | WinrmAccess | None:
        """How host checks log in (``run.vm.ssh``/``winrm``), or ``None``."""
        return self.spec.access

    @property
    def testinfra_url(self) -> str | None:
        """``ssh://user@address:port`` or ``winrm://…``: shown, never holding a secret."""
        access = self.remote
        return access.url(str(self.address)) if access and self.address else None

    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecOutput:
        """A command in the guest through its agent (qemu-guest-agent)."""
        return self.vm.exec(command, timeout)

    def agent_exec(self, command: Sequence[str] | str, timeout: float = 30.0) -> ExecOutput:
        return self.vm.agent_exec(command, timeout)

    def screendump(self, out: Path) -> Path:
        return self.vm.screendump(out)

    def console(self) -> str:
        return self.vm.console()

    def screens_dir(self) -> Path:
        return self.evidence_dir or self.vm.folder / "evidence"

    def inside(self) -> contextlib.AbstractContextManager[None]:
        return self.sandbox.inside()

    # --- state ---------------------------------------------------------------------------

    def logs(self, tail: int | None = 50) -> str:
        """The serial console's last lines (what a person at the console would see)."""
        return self.vm.console_tail(tail or 10_000)

    def is_running(self) -> bool:
        return self.vm.is_running()

    def exit_code(self) -> int | None:
        path = self.vm.folder / "exit-code"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    def limit_reached(self) -> str | None:
        return self.container.limit_reached()

    def advice(self) -> str:
        """For a guest that never came up on a bus it may lack drivers for."""
        if self.spec.disk_bus in ("virtio", "scsi"):
            return (
                f"an image of a physical machine may lack {self.spec.disk_bus} drivers: "
                "try vm.disk_bus: sata or ide"
            )
        return ""

    def wait_console(self, pattern: str, timeout: float, poll: float = 0.2) -> float:
        return self.vm.wait_console(pattern, timeout, poll)

    # --- evidence ------------------------------------------------------------------------

    def platform(self) -> dict[str, Any]:
        """Backend, accelerator, firmware, machine, virtual hardware and disk formats."""
        accel = self.vm.accel or "?"
        facts: dict[str, Any] = {
            "backend": "docker",
            "twin": "vm",
            "emulator": "qemu",
            "accel": accel,
            "firmware": self.spec.firmware,
            "machine": self.spec.machine,
            "cpus": self.spec.cpus,
            "memory": int(self.spec.memory),
            "disk_bus": self.spec.disk_bus,
            "nic": self.spec.nic,
            "disks": [
                {"file": Path(path).name, "format": fmt}
                for path, fmt in zip(self.restored.read_only, self.restored.formats, strict=False)
            ],
        }
        if accel == "tcg":
            facts["rto_note"] = TCG_NOTE
        return facts

    def keep(self, folder: Path) -> list[Artifact]:
        """The serial console's log, as text (``console.log``)."""
        if not (self.vm.folder / "serial.log").is_file():
            return []
        folder.mkdir(parents=True, exist_ok=True)
        return [Artifact.of("console", self.vm.save_console(folder / "console.log"))]

    # --- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop QEMU (its lifeline closes) and remove the twin's folder (overlays included)."""
        with contextlib.suppress(VMError):
            self.vm.stop()
        if self.vm.folder.exists():
            shutil.rmtree(self.vm.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.vm.folder)
