"""A root-filesystem tarball of a system's disk, imported as the run's own image.

The image has no command of its own: the twin runs it with the inventory's
``run.command``. The tarball is read to its end before anything reaches the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..base import Restored
from ._archive import (
    FileSourceSpec,
    check_digest,
    import_stream,
    label_changes,
    scan_tar,
    stream_tar,
)
from .base import BackupError, BackupRef, RestoreContext


class Spec(FileSourceSpec):
    """A root-filesystem tarball (.tar, .tar.gz, .tar.zst, …) imported as an image."""

    kind: Literal["rootfs_tar"] = "rootfs_tar"

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        labels = {**ctx.labels, "restoredrill.source": self.kind}
        import_rootfs_file(ctx.docker, Path(ref.location), ctx.image_tag, labels, ref=ref)
        return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))


def import_rootfs_file(
    client: object,
    path: Path,
    tag: str,
    labels: dict[str, str] | None = None,
    changes: list[str] | tuple[str, ...] = (),
    ref: BackupRef | None = None,
) -> str:
    """Validate a root-filesystem tarball to its end, then ``docker import`` it as ``tag``
    (with ``labels``); return the image id. Raises BackupError naming the file."""
    scan = scan_tar(
        path, keep=lambda name, size: name == "manifest.json" and size < 1 << 20, ref=ref
    )
    if ref is not None:
        check_digest(ref, scan)
    if "manifest.json" in scan.files and any(
        n.endswith("layer.tar") or n.startswith("blobs/") for n in scan.names
    ):
        raise BackupError(
            f"{path}: this is a docker save archive, not a root filesystem (use kind: image_archive)"
        )
    return import_stream(
        client, stream_tar(scan), tag, [*label_changes(labels or {}), *changes], str(path)
    )
