"""Shared by the VM tests: the test disk image (built once, cached), its formats, helpers."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from restoredrill.twins import vm_image

SUBNET = "10.230.7.0/24"
"""The VM network tests' sandbox subnet (the image's own configuration names it)."""
PROD_SUBNET = "10.231.7.0/24"
VM_ADDRESS = "10.230.7.30"
PLC_ADDRESS = "10.230.7.100"
CONFIG = vm_image.GuestConfig(
    hostname="testvm",
    address=f"{VM_ADDRESS}/24",
    plc_host=PLC_ADDRESS,
    banner="RESTOREDRILL TEST VM",
)
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "mkfs.fat": "dosfstools",
    "tesseract": "tesseract-ocr",
}
QEMU_FORMATS = ("qcow2", "vmdk", "vhdx", "vdi", "vpc")


def need_vm_tools() -> None:
    from conftest import missing

    absent = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file():
        absent.append("ovmf")
    if absent:
        missing(f"the VM tools (apt-get install {' '.join(absent)})")


@pytest.fixture(scope="session")
def vm_raw() -> Path:
    """The test VM's raw disk image (built from Debian's packages once per machine)."""
    need_vm_tools()
    return vm_image.ensure_image(CONFIG)


@pytest.fixture(scope="session")
def vm_formats(vm_raw: Path) -> dict[str, Path]:
    """The same disk in every format, made with ``qemu-img convert`` (a session folder)."""
    folder = Path(tempfile.mkdtemp(prefix="restoredrill-g-vm-formats-"))
    out = {"raw": vm_raw}
    for fmt in QEMU_FORMATS:
        path = folder / f"disk.{fmt}"
        subprocess.run(
            ["qemu-img", "convert", "-O", fmt, str(vm_raw), str(path)], check=True, timeout=300
        )
        out[fmt] = path
    yield out
    shutil.rmtree(folder, ignore_errors=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def qemu_pids() -> dict[int, str]:
    """Every qemu-system process on this machine (pid -> command line)."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")).startswith("qemu-system"):
            found[int(cmdline.parent.name)] = b" ".join(argv).decode(errors="replace")
    return found


def qemu_using(folder: Path) -> list[int]:
    """QEMU processes whose command line names ``folder`` (this test's VM only)."""
    return [pid for pid, cmd in qemu_pids().items() if str(folder) in cmd]
