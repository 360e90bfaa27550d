"""QEMU inside a container on a sandbox network: how a VM twin gets its production address.

The container joins the sandbox's internal network at the VM's production address
(so Docker's address bookkeeping, labels and reaping apply to it as to any twin).
Its PID 1, ``vm_supervisor.py``, bridges the container's ``eth0`` to a tap device and
takes the address off ``eth0``: the VM's NIC is then one more station on the sandbox
network, answering at that address, reachable by checks, PLC/SCADA twins and
container twins, and reaching nothing the sandbox cannot reach (it has no route of
the host's). QEMU itself runs with every capability dropped (``setpriv``); the
container holds only NET_ADMIN (to build the bridge) and SETPCAP (to drop the rest),
``/dev/net/tun`` and, with KVM, ``/dev/kvm``. The scratch folder (overlays, sockets,
console log) is bind-mounted at ``/vm``; each backing image is bind-mounted read-only
at its own path, so the kernel refuses any write to a backup.

The runner image is assembled offline from this host's QEMU (the binary, the
libraries ``ldd`` names, its accelerator modules, SeaBIOS, OVMF and option ROMs)
FROM the local base image: it needs no Debian mirror, only the ``qemu-system-x86``
package installed here, and it is the very QEMU the benchmarks compare against.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import TwinError
from .docker import MANAGED, RUN, SYSTEM, owner_labels
from .images import DEFAULT_BASE, build_image, ensure_base_image, image_exists
from .qemu import OVMF_CODE, OVMF_VARS, QEMU, SUPERVISOR, Running

RUNNER = "restoredrill/vm-runner"
FOLDER = "/vm"
TAP = "tap0"
SUPERVISOR_IN_IMAGE = "/usr/local/lib/restoredrill/vm_supervisor.py"
DATA = (Path("/usr/share/qemu"), Path("/usr/share/seabios"))
MODULES = Path("/usr/lib/x86_64-linux-gnu/qemu")
OVERHEAD = 512 << 20
"""Memory the container may use beyond the guest's (QEMU, its TCG cache, the supervisor)."""
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY rootfs/ /
"""


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    return [Path(p) for p in re.findall(r"(/\S+) \(0x", out)]


def runner_files() -> list[Path]:
    """What the runner image copies from this host (files; symlinks followed)."""
    binary = shutil.which(QEMU)
    if not binary:
        raise TwinError(f"{QEMU} is not installed: apt-get install qemu-system-x86")
    nft = shutil.which("nft")
    if not nft:
        raise TwinError("nft is not installed (it guards a VM's tap): apt-get install nftables")
    modules = sorted(MODULES.glob("accel-*.so")) if MODULES.is_dir() else []
    files = {Path(binary), *(_libraries(Path(binary))), *modules}
    files.update([Path(nft), *_libraries(Path(nft))])
    for module in modules:
        files.update(_libraries(module))
    for folder in DATA:
        files.update(p for p in folder.rglob("*") if p.is_file())
    files.update(p for p in (OVMF_CODE, OVMF_VARS) if p.is_file())
    return sorted(files)


def fingerprint(files: Sequence[Path]) -> str:
    h = hashlib.sha256(SUPERVISOR.read_bytes())
    for path in files:
        stat = path.stat()
        h.update(f"{path}:{stat.st_size}:{int(stat.st_mtime)};".encode())
    return h.hexdigest()[:12]


def ensure_runner_image(client: Any, base: str = DEFAULT_BASE) -> str:
    """The tag of the VM runner image for this host's QEMU, built if missing (seconds)."""
    files = runner_files()
    tag = f"{RUNNER}:{fingerprint(files)}"
    if image_exists(client, tag):
        return tag
    ensure_base_image(client, base)
    with tempfile.TemporaryDirectory(prefix="restoredrill-vmrunner-") as tmp:
        root = Path(tmp) / "rootfs"
        for path in files:
            target = root / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)  # follows symlinks: the image holds real files
        target = root / SUPERVISOR_IN_IMAGE.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SUPERVISOR, target)
        (Path(tmp) / "Dockerfile").write_text(DOCKERFILE)
        build_image(client, tmp, tag, base=base, labels={"restoredrill.image": "vm-runner"})
    return tag


@dataclass
class _Container:
    client: Any
    id: str

    def is_running(self) -> bool:
        import docker.errors

        try:
            return bool(self.client.api.inspect_container(self.id)["State"]["Running"])
        except docker.errors.NotFound:
            return False

    def kill(self) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(self.id, force=True, v=True)
        except docker.errors.APIError as exc:
            text = str(getattr(exc, "explanation", "") or exc).lower()
            if "no such" not in text and "in progress" not in text and "not found" not in text:
                raise TwinError(f"cannot remove VM container {self.id[:12]}: {text}") from None


@dataclass
class ContainerLauncher:
    """Start QEMU in a container at ``address`` on Docker network ``network``.

    Phase 1 creates the container with the Docker SDK here; a sandbox will hand over
    its network, run id and labels (see the module docs).
    """

    client: Any
    network: str
    address: str
    run_id: str
    image: str
    read_only: Sequence[Path] = ()
    memory: int = 1 << 30
    kvm: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    container_id: str | None = None

    def qemu_folder(self, folder: Path) -> str:
        return FOLDER

    def netdev(self) -> str | None:
        return f"tap,ifname={TAP},script=no,downscript=no"

    def start(self, folder: Path, argv: list[str], name: str) -> Running:
        api = self.client.api
        binds = {str(folder): {"bind": FOLDER, "mode": "rw"}}
        for path in self.read_only:
            real = str(Path(path).resolve())
            binds[real] = {"bind": real, "mode": "ro"}
        devices = ["/dev/net/tun:/dev/net/tun:rwm"] + (
            ["/dev/kvm:/dev/kvm:rwm"] if self.kvm else []
        )
        command = ["python3", SUPERVISOR_IN_IMAGE, FOLDER, "--tap", TAP, "--drop-caps", "--", *argv]
        endpoint = api.create_endpoint_config(ipv4_address=self.address, aliases=[name])
        labels = {
            **self.labels,
            **owner_labels(),
            RUN: self.run_id,
            MANAGED: "1",
            SYSTEM: name,
            "restoredrill.role": "vm",
        }
        created = api.create_container(
            self.image,
            command=command,
            name=f"restoredrill-vm-{re.sub(r'[^a-zA-Z0-9_.-]+', '-', name)}-{secrets.token_hex(3)}",
            hostname=name[:63],
            labels=labels,
            networking_config=api.create_networking_config({self.network: endpoint}),
            host_config=api.create_host_config(
                binds=binds,
                network_mode=self.network,
                cap_drop=["ALL"],
                cap_add=["NET_ADMIN", "SETPCAP"],
                devices=devices,
                mem_limit=self.memory + OVERHEAD,
                memswap_limit=self.memory + OVERHEAD,
                pids_limit=256,
                security_opt=["no-new-privileges"],
                dns=[],
            ),
        )
        self.container_id = created["Id"]
        running = _Container(self.client, created["Id"])
        try:
            api.start(created["Id"])
        except BaseException:
            running.kill()
            raise
        return running

    def logs(self) -> str:
        if not self.container_id:
            return ""
        import docker.errors

        try:
            return self.client.api.logs(self.container_id, tail=20).decode("utf-8", "replace")
        except docker.errors.NotFound:
            return ""
