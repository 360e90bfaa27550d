"""Backup sources, one module each, registered by the ``kind:`` the inventory uses.

Each module exports ``Spec`` (a ``SourceSpecBase`` with ``kind: Literal[...]``);
``SourceSpec`` is their discriminated union for the inventory model. The modules
import only pydantic and the standard library at import time (zstd and the docker
client are used lazily), so importing this package is cheap. Every restore runs under
a ``Budget`` (``budget.py``): bounded, streaming, and stopped by ``RestoreContext.cancel``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import BackupError, BackupRef, RestoreContext, SourceSpecBase
from .budget import Budget, RestoreCancelled
from .disk_image import Spec as DiskImageSpec
from .image_archive import Spec as ImageArchiveSpec
from .restic import Spec as ResticSpec
from .rootfs_tar import Spec as RootfsTarSpec

SourceSpec = Annotated[
    ImageArchiveSpec | RootfsTarSpec | ResticSpec | DiskImageSpec,
    Field(discriminator="kind"),
]
"""Any backup source, chosen by its ``kind:``."""

KINDS: dict[str, type[SourceSpecBase]] = {
    "image_archive": ImageArchiveSpec,
    "rootfs_tar": RootfsTarSpec,
    "restic": ResticSpec,
    "disk_image": DiskImageSpec,
}

__all__ = [
    "KINDS",
    "BackupError",
    "BackupRef",
    "Budget",
    "DiskImageSpec",
    "ImageArchiveSpec",
    "RestoreCancelled",
    "ResticSpec",
    "RestoreContext",
    "RootfsTarSpec",
    "SourceSpec",
    "SourceSpecBase",
]
