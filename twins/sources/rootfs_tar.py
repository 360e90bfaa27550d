"""A root-filesystem tarball of a system's disk, imported as the run's own image.

The image has no command of its own: the twin runs it with the inventory's
``run.command``. One read of the tarball validates it (under the restore's budget) and
feeds ``docker import`` at once; a member the budget refuses never reaches the engine,
and the archive's end is held back until the whole of it passed, so a truncated,
corrupt or oversized tarball ends the import without an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..base import Restored
from ._archive import (
    FileSourceSpec,
    TarScan,
    check_digest,
    check_file,
    label_changes,
    scan_tar,
)
from ._engine import Gate, Pipe, import_stream
from .base import BackupError, BackupRef, RestoreContext
from .budget import Budget, docker_root


class Spec(FileSourceSpec):
    """A root-filesystem tarball (.tar, .tar.gz, .tar.zst, …) imported as an image."""

    kind: Literal["rootfs_tar"] = "rootfs_tar"

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        labels = {**ctx.labels, "restoredrill.source": self.kind}
        budget = ctx.budget(ref.location)
        budget.space(docker_root(ctx.docker), "Docker's data root")
        import_rootfs_file(
            ctx.engine(ref.location), Path(ref.location), ctx.image_tag, labels, ref=ref, budget=budget
        )
        return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))


def _save_layout(name: str) -> bool:
    return name.endswith("layer.tar") or name.startswith("blobs/")


def import_rootfs_file(
    client: object,
    path: Path,
    tag: str,
    labels: dict[str, str] | None = None,
    changes: list[str] | tuple[str, ...] = (),
    ref: BackupRef | None = None,
    budget: Budget | None = None,
) -> str:
    """Validate a root-filesystem tarball while ``docker import`` reads it as ``tag``
    (with ``labels``); return the image id. Raises BackupError naming the file."""
    path = Path(path)
    check_file(path)
    budget = budget or Budget(str(path))

    def produce(put: object) -> TarScan:
        gate = Gate(put)  # type: ignore[arg-type]
        scan = scan_tar(
            path,
            keep=lambda name, size: name == "manifest.json" and size < 1 << 20,
            ref=ref,
            budget=budget,
            sink=gate,
            record=_save_layout,
        )
        if ref is not None:
            check_digest(ref, scan)
        if "manifest.json" in scan.files and scan.names:
            raise BackupError(
                f"{path}: this is a docker save archive, not a root filesystem "
                "(use kind: image_archive)"
            )
        gate.finish()
        return scan

    pipe = Pipe(produce, budget)
    return import_stream(
        client, pipe.chunks(), tag, [*label_changes(labels or {}), *changes], str(path), budget
    )
