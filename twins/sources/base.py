"""What every backup source provides: find the backup, then restore it."""

from __future__ import annotations

import hashlib
import threading
from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from restoredrill.errors import ExitCode, RestoredrillError

if TYPE_CHECKING:
    from .budget import Budget


class BackupError(RestoredrillError):
    """The backup is missing, unreadable or corrupt; the message names it and says why
    (in a run, the system's verdict; out of one, bad input: exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class BackupRef(BaseModel):
    """The identity of the backup a run restored (recorded as evidence)."""

    source: str
    backup_id: str
    location: str
    size_bytes: int | None = None
    sha256: str | None = None
    created_at: datetime | None = None


@dataclass
class RestoreContext:
    """What a restore may use: the backend's engine (made by the sandbox,
    ``Sandbox.restore_context``), a scratch directory, names and labels, how much it may
    unpack, and the event that stops it (set by the watchdog)."""

    docker: Any
    """The Docker client, for sources that load images (None on other backends)."""
    workdir: Path
    image_tag: str
    labels: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    """Most bytes the restore may unpack (``limits.restore``); None: the built-in 16g."""
    ratio_guard: bool = True
    """Refuse archives that expand like a decompression bomb (off when the system's own
    ``run.limits.restore`` vouches for its backup's size)."""
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set by the watchdog: the restore stops between chunks and removes what it made."""

    def engine(self, backup: str) -> Any:
        """The Docker client an image restore loads into (BackupError if none)."""
        if self.docker is None:
            raise BackupError(
                f"{backup}: this restore loads a container image, which needs the docker "
                "twin backend (sandbox.backend: docker)"
            )
        return self.docker

    def budget(self, backup: str) -> Budget:
        """The bound of restoring ``backup`` (named in every refusal)."""
        from .budget import Budget

        return Budget(backup, self.limit, ratio_guard=self.ratio_guard, cancel=self.cancel)


class SourceSpecBase(BaseModel):
    """Fields and contract shared by every backup source."""

    model_config = ConfigDict(extra="forbid")

    @abstractmethod
    def locate(self, base_dir: Path) -> BackupRef:
        """Find the backup to restore (the newest match); raise BackupError if none."""

    @abstractmethod
    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Any:
        """Restore ``ref``; return a ``twins.base.Restored``."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def newest_match(base_dir: Path, path: str | None, directory: str | None, pattern: str) -> Path:
    """The file named by ``path``, or the newest file in ``directory`` matching ``pattern``."""
    if path:
        found = (base_dir / path).resolve()
        if not found.exists():
            raise BackupError(f"{found}: backup file not found")
        return found
    folder = (base_dir / (directory or ".")).resolve()
    if not folder.is_dir():
        raise BackupError(f"{folder}: backup directory not found")
    matches = [p for p in folder.glob(pattern) if p.is_file()]
    if not matches:
        raise BackupError(f"{folder}: no backup matches {pattern!r}")
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name))
