"""The demo plant's whole-image backups (flows/demo.py calls :func:`demo_disk_images`).

The demo VM ("hmi-vm") is restored from a VMware-style ``.vmdk``; its broken twin
("hmi-vm-broken", the kernel removed from its boot partition) from a Disk2vhd-style
``.vhdx``. Both are converted from the image :mod:`vm_image` builds once and caches.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .images import ImageError
from .vm_image import GuestConfig, break_boot, ensure_image

DEMO = GuestConfig()
"""hmi-vm at 10.77.0.30/24, reading holding register 0 of the PLC twin at 10.77.0.100."""
STAMP = "20261124"


def demo_disk_images(backups: Path, config: GuestConfig = DEMO) -> tuple[Path, Path]:
    """``(good, broken)`` disk images under ``backups`` (made the first time, minutes)."""
    good = backups / "hmi-vm" / f"hmi-vm-{STAMP}.vmdk"
    broken = backups / "hmi-vm-broken" / f"hmi-vm-broken-{STAMP}.vhdx"
    if good.is_file() and broken.is_file():
        return good, broken
    raw = ensure_image(config)
    if not good.is_file():
        _convert(raw, "vmdk", good)
    if not broken.is_file():
        broken.parent.mkdir(parents=True, exist_ok=True)
        cut = broken.with_name(broken.stem + "-raw.tmp")
        try:
            _convert(break_boot(raw, cut), "vhdx", broken)
        finally:
            cut.unlink(missing_ok=True)
    return good, broken


def _convert(raw: Path, fmt: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    done = subprocess.run(
        ["qemu-img", "convert", "-O", fmt, str(raw), str(part)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        part.unlink(missing_ok=True)
        raise ImageError(f"qemu-img convert to {out} failed: {done.stderr.strip()}")
    os.replace(part, out)
