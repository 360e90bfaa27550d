"""Whole disk images (``kind: disk_image``): raw, qcow2, vmdk, vhd, vhdx, vdi — one or
several disks per system, each the newest match of a pattern like the other sources.

The format is what ``qemu-img info`` detects, never the file's extension; a file it
takes for raw data must look like a disk (a partition table or boot sector), so a
random file is refused. ``qemu-img check`` runs (bounded in time) on formats that
support it; a corrupt or truncated image is a BackupError quoting what qemu-img said.

The backup is never written: :meth:`Spec.restore` makes a throw-away qcow2 overlay per
disk in the run's scratch folder (``qemu-img create -f qcow2 -b BACKUP -F FORMAT``);
QEMU opens the backup read-only as its backing file, writes go to the overlay, and the
overlay goes with the scratch folder at teardown.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from restoredrill.durations import Duration

from ..base import Restored
from .base import BackupError, BackupRef, RestoreContext, SourceSpecBase, newest_match, sha256_file

FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vpc": "vhd",
    "vhdx": "vhdx",
    "vdi": "vdi",
}
"""qemu-img's format names -> the names users know (``vpc`` is Microsoft's VHD)."""
CHECKABLE = {"qcow2", "vmdk", "vhdx", "vdi"}
"""Formats ``qemu-img check`` can verify."""
QEMU_IMG = "qemu-img"


class DiskLocation(BaseModel):
    """One disk: ``path:``, or the newest ``pattern:`` match in ``directory:``."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="the disk image file (relative to the site file)")
    directory: str | None = Field(
        None, description="a folder of images; the newest file matching `pattern` is taken"
    )
    pattern: str = Field("*", description="glob for `directory`, e.g. hmi-*.vhdx")

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _one_location(self) -> DiskLocation:
        if bool(self.path) == bool(self.directory):
            raise ValueError(
                "give either `path` or `directory` (with `pattern`), not both or neither"
            )
        return self


@dataclass(frozen=True)
class DiskImage:
    """One located disk image: where, what format, how big, its digest and age."""

    path: Path
    format: str
    virtual_size: int
    size_bytes: int
    sha256: str
    modified: datetime


@dataclass
class RestoredDisks(Restored):
    """A disk-image restore: the overlays QEMU boots from (``disks``), in boot order."""

    backing: tuple[DiskImage, ...] = ()


class Spec(SourceSpecBase):
    """Whole disk images booted as a VM (Disk2vhd, Windows Server Backup, Hyper-V, VMware,
    Macrium VHDX exports, dd): one disk (``path``/``directory``) or several (``disks:``)."""

    kind: Literal["disk_image"] = "disk_image"
    path: str | None = Field(None, description="the disk image file (relative to the site file)")
    directory: str | None = Field(
        None, description="a folder of images; the newest file matching `pattern` is taken"
    )
    pattern: str = Field("*", description="glob for `directory`, e.g. hmi-*.vhdx")
    disks: list[DiskLocation] | None = Field(
        None, description="several disks of one system, the boot disk first"
    )
    format: Literal["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi"] | None = Field(
        None, description="the expected format; detected by qemu-img and checked against this"
    )
    check_timeout: Duration = Field(
        "10m", validate_default=True, description="longest `qemu-img check` per disk"
    )

    @model_validator(mode="after")
    def _locations(self) -> Spec:
        single = bool(self.path) or bool(self.directory)
        if self.disks is not None:
            if single:
                raise ValueError("give `disks:` or `path`/`directory`, not both")
            if not self.disks:
                raise ValueError("`disks:` lists no disk")
        elif bool(self.path) == bool(self.directory):
            raise ValueError(
                "give either `path` or `directory` (with `pattern`), not both or neither"
            )
        return self

    def locations(self) -> list[DiskLocation]:
        if self.disks is not None:
            return list(self.disks)
        return [DiskLocation(path=self.path, directory=self.directory, pattern=self.pattern)]

    def inspect_all(self, base_dir: Path) -> list[DiskImage]:
        """Find, identify and check every disk (BackupError naming the file and why)."""
        found = [
            newest_match(Path(base_dir), loc.path, loc.directory, loc.pattern)
            for loc in self.locations()
        ]
        limit = self.check_timeout.total_seconds()
        images = [inspect(path, limit) for path in found]
        for image in images:
            if self.format and FORMATS[image.format] != self.format:
                raise BackupError(
                    f"{image.path}: is a {FORMATS[image.format]} image, "
                    f"but the inventory says format: {self.format}"
                )
        return images

    def locate(self, base_dir: Path) -> BackupRef:
        images = self.inspect_all(base_dir)
        if len(images) == 1:
            digest = images[0].sha256
        else:  # a manifest digest: one line per disk, in boot order
            manifest = "".join(f"{i.sha256}  {i.path.name}\n" for i in images)
            digest = hashlib.sha256(manifest.encode()).hexdigest()
        return BackupRef(
            source=self.kind,
            backup_id=" + ".join(i.path.name for i in images),
            location=";".join(str(i.path) for i in images),
            size_bytes=sum(i.size_bytes for i in images),
            sha256=digest,
            created_at=min(i.modified for i in images),  # the oldest disk dates the backup
        )

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> RestoredDisks:
        """One qcow2 overlay per disk in ``ctx.workdir``; the backups are only read."""
        paths = [Path(p) for p in ref.location.split(";")]
        images = []
        for path in paths:
            fmt = detect(path, 60.0)
            images.append(
                DiskImage(
                    path, fmt, 0, path.stat().st_size, "", ref.created_at or datetime.now(UTC)
                )
            )
        overlays = tuple(
            create_overlay(image.path, image.format, Path(ctx.workdir) / f"disk{i}.qcow2")
            for i, image in enumerate(images)
        )
        return RestoredDisks(
            directory=Path(ctx.workdir),
            disks=overlays,
            formats=tuple(FORMATS[i.format] for i in images),
            read_only=tuple(i.path.resolve() for i in images),
            backing=tuple(images),
        )


# --- qemu-img ----------------------------------------------------------------------------------


def _qemu_img(
    args: list[str], path: Path, timeout: float, what: str
) -> subprocess.CompletedProcess:
    if not shutil.which(QEMU_IMG):
        raise BackupError(f"{path}: cannot read disk images: install qemu-utils (qemu-img)")
    try:
        return subprocess.run(
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BackupError(f"{path}: qemu-img {what} did not finish within {timeout:g}s") from None


def _said(done: subprocess.CompletedProcess, lines: int = 3) -> str:
    text = [s.strip() for s in (done.stderr + done.stdout).splitlines() if s.strip()]
    return " | ".join(text[-lines:]) or f"exit code {done.returncode}"


def _info(path: Path, timeout: float) -> dict:
    done = _qemu_img(["info", "--output=json", str(path)], path, timeout, "info")
    if done.returncode != 0:
        raise BackupError(f"{path}: not a readable disk image: {_said(done)}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise BackupError(f"{path}: qemu-img info gave no JSON: {_said(done)}") from None


def detect(path: Path, timeout: float = 60.0) -> str:
    """qemu-img's name of the format of ``path`` (refusing files that are not disk images)."""
    if not path.is_file():
        raise BackupError(f"{path}: disk image not found")
    info = _info(path, timeout)
    fmt = str(info.get("format", ""))
    if fmt not in FORMATS:
        raise BackupError(
            f"{path}: qemu-img reads it as {fmt or 'nothing'}, not one of the disk image "
            f"formats {', '.join(sorted(set(FORMATS.values())))}"
        )
    if info.get("backing-filename"):
        raise BackupError(
            f"{path}: is an overlay of {info['backing-filename']}: restore the full image "
            "(qemu-img convert), not one link of a snapshot chain"
        )
    if fmt == "raw":
        _check_raw(path)
    return fmt


def _check_raw(path: Path) -> None:
    """Raw data must look like a disk, and its partitions must fit in the file."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(2048)
    ext_magic = len(head) >= 1082 and head[1080:1082] == b"\x53\xef"
    if len(head) < 512 or (head[510:512] != b"\x55\xaa" and not ext_magic):
        raise BackupError(
            f"{path}: not a disk image: qemu-img sees raw data without a partition table "
            "or boot sector (is it the right file?)"
        )
    if head[510:512] != b"\x55\xaa":
        return
    for i in range(4):
        kind = head[446 + 16 * i + 4]
        start, sectors = struct.unpack_from("<II", head, 446 + 16 * i + 8)
        if kind and sectors and kind != 0xEE and (start + sectors) * 512 > size:
            raise BackupError(
                f"{path}: truncated: partition {i + 1} ends at byte {(start + sectors) * 512} "
                f"but the file has {size} bytes"
            )


def check(path: Path, fmt: str, timeout: float) -> None:
    """``qemu-img check`` for formats that have it; BackupError on corruption."""
    if fmt not in CHECKABLE:
        return
    done = _qemu_img(["check", "--output=json", "-f", fmt, str(path)], path, timeout, "check")
    if done.returncode in (0, 3):  # 3: leaked clusters only (harmless for reading)
        return
    try:
        report = json.loads(done.stdout)
        summary = ", ".join(
            f"{report[key]} {key.replace('-', ' ')}"
            for key in ("corruptions", "check-errors")
            if report.get(key)
        )
    except ValueError:
        summary = ""
    raise BackupError(
        f"{path}: corrupt {FORMATS[fmt]} image: qemu-img check found {summary or _said(done)}"
    )


def inspect(path: Path, timeout: float = 600.0) -> DiskImage:
    """Format, sizes, sha256 and age of one disk image, after detection and check."""
    fmt = detect(path, min(timeout, 60.0))
    check(path, fmt, timeout)
    info = _info(path, min(timeout, 60.0))
    stat = path.stat()
    return DiskImage(
        path=path,
        format=fmt,
        virtual_size=int(info.get("virtual-size") or 0),
        size_bytes=stat.st_size,
        sha256=sha256_file(path),
        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
    )


def create_overlay(backing: Path, fmt: str, overlay: Path, timeout: float = 60.0) -> Path:
    """A qcow2 ``overlay`` over ``backing`` (read-only from then on: writes go to the overlay)."""
    overlay.parent.mkdir(parents=True, exist_ok=True)
    done = _qemu_img(
        ["create", "-q", "-f", "qcow2", "-b", str(backing.resolve()), "-F", fmt, str(overlay)],
        backing,
        timeout,
        "create",
    )
    if done.returncode != 0:
        raise BackupError(f"{backing}: cannot create an overlay over it: {_said(done)}")
    return overlay
