"""How a whole-image (VM) twin boots: firmware, CPUs, memory, disk bus, NIC, accelerator."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restoredrill.sizes import Size

from .access import SshAccess, WinrmAccess

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class VMSpec(BaseModel):
    """The virtual hardware a restored disk image boots on (the ``vm:`` block).

    Defaults suit the image of a physical machine without virtio drivers: SATA disk,
    e1000 NIC, SeaBIOS. ``accel: auto`` uses KVM where it works, else TCG (and the
    evidence says which: a recovery time measured under TCG is not the plant's).
    """

    model_config = ConfigDict(extra="forbid")

    firmware: Literal["bios", "uefi"] = Field("bios", description="bios (SeaBIOS) or uefi (OVMF)")
    machine: Literal["q35", "pc"] = Field("q35", description="q35 (PCIe, AHCI) or pc (i440fx)")
    cpus: int = Field(2, ge=1, le=64)
    memory: Size = Field(1 << 30, description="guest memory, e.g. 1g or 512m")
    disk_bus: Literal["sata", "virtio", "ide", "scsi"] = Field(
        "sata", description="sata for images of physical machines; virtio needs guest drivers"
    )
    nic: Literal["e1000", "virtio", "rtl8139"] = "e1000"
    mac: str | None = Field(
        None, description="the NIC's MAC, kept so the restored OS keeps its interface naming"
    )
    accel: Literal["auto", "kvm", "tcg"] = Field(
        "auto", description="auto: KVM when /dev/kvm works, else TCG; kvm: KVM or error"
    )
    ssh: SshAccess | None = Field(None, description="how host checks log in over SSH")
    winrm: WinrmAccess | None = Field(None, description="how host checks log in over WinRM")

    @model_validator(mode="after")
    def _one_access(self) -> VMSpec:
        if self.ssh is not None and self.winrm is not None:
            raise ValueError("give ssh or winrm (how host checks log in), not both")
        return self

    @property
    def access(self) -> SshAccess | WinrmAccess | None:
        return self.ssh or self.winrm

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        mac = value.strip().lower().replace("-", ":")
        if not _MAC.match(mac):
            raise ValueError(f"{value!r} is not a MAC address (use 52:54:00:12:34:56)")
        if int(mac[:2], 16) & 1:
            raise ValueError(f"{value!r} is a multicast MAC address: a NIC needs a unicast one")
        return mac


def default_mac(name: str) -> str:
    """A stable MAC in QEMU's range for a system without a configured one."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
