"""A restic repository snapshot, restored with the real ``restic`` binary.

``restore: data`` restores the tree into the run's scratch directory (mounted into a
twin that runs ``run.image``); ``restore: rootfs`` imports the tree as the run's image.
The password reaches restic only through its environment, never its command line,
and restic runs with ``--no-lock --no-cache``: a drill never writes to the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..base import Restored
from ._archive import import_stream, label_changes
from .base import BackupError, BackupRef, RestoreContext, SourceSpecBase

_REMOTE = re.compile(r"^(local|sftp|rest|s3|b2|azure|gs|swift|rclone):")
_FRACTION = re.compile(r"(\.\d{6})\d+")


class Spec(SourceSpecBase):
    """A snapshot in a restic repository (``latest`` matching the filters, or an id)."""

    kind: Literal["restic"] = "restic"
    repository: str = Field(
        description="repository path (relative to the site file) or a restic URL such as rest:http://…"
    )
    snapshot: str = Field(
        "latest", description="`latest` or a snapshot id (a unique prefix will do)"
    )
    path: str | None = Field(None, description="only snapshots that include this absolute path")
    host: str | None = Field(None, description="only snapshots taken on this host")
    tags: list[str] = Field(default_factory=list, description="only snapshots with all these tags")
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: str | None = Field(
        None, description="file holding the password (relative to the site file)"
    )
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    restore_as: Literal["data", "rootfs"] = Field(
        "data",
        alias="restore",
        description="data: mount the restored tree into a twin running run.image; "
        "rootfs: import the tree as the twin's image",
    )
    timeout: float = Field(3600, gt=0, description="seconds a restic command may take")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _one_password(self) -> Spec:
        if bool(self.password_env) == bool(self.password_file):
            raise ValueError("give either `password_env` or `password_file`")
        return self

    # -- the contract -------------------------------------------------------------

    def locate(self, base_dir: Path) -> BackupRef:
        """The snapshot to restore; ``location`` is ``REPOSITORY#FULL_SNAPSHOT_ID``."""
        self._base_dir = Path(base_dir)
        repo = self._repository()
        snap = self._find(repo)
        size = None
        try:
            stats = json.loads(
                self._restic(repo, "stats", "--json", "--mode", "restore-size", snap["id"])
            )
            size = int(stats["total_size"])
        except (BackupError, ValueError, KeyError, TypeError):
            pass  # size is a nicety; locating succeeded
        return BackupRef(
            source=self.kind,
            backup_id=snap.get("short_id") or snap["id"][:8],
            location=f"{repo}#{snap['id']}",
            size_bytes=size,
            created_at=_time(snap["time"]),
        )

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        repo, _, snap_id = ref.location.rpartition("#")
        if not repo or not snap_id:
            raise BackupError(f"{ref.location}: not a restic location (REPOSITORY#SNAPSHOT_ID)")
        snap = self._find(repo, snap_id)
        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f"restic-{ref.backup_id}-", dir=workdir))
        try:
            self._restic(repo, "restore", snap["id"], "--target", str(target))
            tree = _tree(target, snap.get("paths") or [])
            if self.restore_as == "data":
                return Restored(directory=tree)
            labels = {**ctx.labels, "restoredrill.source": self.kind}
            import_stream(
                ctx.docker,
                _tar_tree(tree),
                ctx.image_tag,
                label_changes(labels),
                f"{repo} snapshot {ref.backup_id}",
            )
            shutil.rmtree(target, ignore_errors=True)
            return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    # -- restic -------------------------------------------------------------------

    def _repository(self) -> str:
        if _REMOTE.match(self.repository):
            return self.repository
        repo = (self._base_dir / self.repository).resolve()
        if not repo.is_dir():
            raise BackupError(f"{repo}: restic repository not found")
        if not (repo / "config").is_file():
            raise BackupError(f"{repo}: not a restic repository (no config file)")
        return str(repo)

    def _find(self, repo: str, snapshot: str | None = None) -> dict[str, Any]:
        wanted = (snapshot or self.snapshot).lower()
        args = ["snapshots", "--json"]
        filters = []
        if self.host:
            args += ["--host", self.host]
            filters.append(f"host={self.host}")
        if self.path:
            args += ["--path", self.path]
            filters.append(f"path={self.path}")
        if self.tags:
            args += ["--tag", ",".join(self.tags)]
            filters.append(f"tags={','.join(self.tags)}")
        try:
            snaps = json.loads(self._restic(repo, *args) or "[]") or []
        except ValueError:
            raise BackupError(f"{repo}: restic printed no snapshot list") from None
        where = f" matching {', '.join(filters)}" if filters else ""
        if wanted == "latest":
            if not snaps:
                raise BackupError(f"{repo}: no snapshot{where}")
            return max(snaps, key=lambda s: s["time"])
        found = [s for s in snaps if s["id"].startswith(wanted)]
        if not found:
            raise BackupError(f"{repo}: snapshot {wanted!r} not found{where}")
        if len(found) > 1:
            raise BackupError(f"{repo}: snapshot id {wanted!r} is ambiguous ({len(found)} match)")
        return found[0]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise BackupError(
                    f"restic password: environment variable {self.password_env} is not set"
                )
        else:
            file = (self._base_dir / str(self.password_file)).resolve()
            try:
                password = file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise BackupError(
                    f"{file}: cannot read restic password file ({exc.strerror})"
                ) from None
        env["RESTIC_PASSWORD"] = password
        return env

    def _restic(self, repo: str, *args: str) -> str:
        env = self._env()
        command = ["restic", "--no-lock", "--no-cache", "--quiet", "-r", repo, *args]
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise BackupError("restic is not installed (Debian: apt-get install restic)") from None
        except subprocess.TimeoutExpired:
            raise BackupError(
                f"{repo}: restic {args[0]} took longer than {self.timeout:.0f}s"
            ) from None
        if done.returncode != 0:
            raise BackupError(f"{repo}: {_reason(done.stderr, env['RESTIC_PASSWORD'])}")
        return done.stdout


def _reason(stderr: str, password: str) -> str:
    """restic's complaint, in one line, without the password."""
    if password:
        stderr = stderr.replace(password, "***")
    text = stderr.strip()
    if "wrong password" in text:
        return "wrong restic password (or no key found)"
    if "unable to open config file" in text or "Is there a repository" in text:
        return "no restic repository at this location"
    if "no matching ID found" in text:
        return "snapshot not found (" + text.splitlines()[-1] + ")"
    lines = [line.removeprefix("Fatal: ") for line in text.splitlines() if line.strip()]
    return "restic failed: " + ("; ".join(lines[-3:]) or "no message")


def _tree(target: Path, paths: list[str]) -> Path:
    """The restored tree: for a one-path snapshot (``/var/lib/historian``) that
    path's folder inside ``target`` (restic keeps absolute paths), else ``target``
    (e.g. a backup of ``.`` taken inside the folder, or of several paths)."""
    if len(paths) == 1:
        inner = target / paths[0].lstrip("/")
        if inner.is_dir() and inner != target:
            return inner
    return target


def _time(text: str) -> datetime:
    return datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))


def _tar_tree(tree: Path) -> Iterator[bytes]:
    """The restored tree as a tar stream (GNU tar, numeric owners kept)."""
    tar = shutil.which("tar")
    if not tar:
        raise BackupError("GNU tar is needed to import a restored tree as an image")
    proc = subprocess.Popen(
        [tar, "--numeric-owner", "-C", str(tree), "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while data := proc.stdout.read(1 << 20):
            yield data
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise BackupError(f"{tree}: tar failed: {err.strip()[-300:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
