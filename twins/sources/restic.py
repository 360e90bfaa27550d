"""A restic repository snapshot, restored with the real ``restic`` binary.

``restore: data`` restores the tree into the run's scratch directory (mounted into a
twin that runs ``run.image``); ``restore: rootfs`` imports the tree as the run's image.
The password reaches restic only through its environment, never its command line,
and restic runs with ``--no-lock --no-cache``: a drill never writes to the repository.

Each snapshot is read once: restic verifies every blob it restores (its MAC and
hash), so no second walk checks the tree. The restore is bounded: the snapshot's size
(``restic stats``) is known before it starts, so a snapshot over the restore limit, or one that cannot fit in the scratch
directory, is refused up front; while restic runs, the restored tree is measured and
restic is stopped (its whole process group) when it outgrows that size, when the
watchdog cancels the restore, or when it retries reading a file of a local repository
(a missing or unreadable pack does not come back).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..base import Restored
from ._archive import label_changes
from ._engine import import_stream
from .base import BackupError, BackupRef, RestoreContext, SourceSpecBase
from .budget import Budget, docker_root

_REMOTE = re.compile(r"^(local|sftp|rest|s3|b2|azure|gs|swift|rclone):")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_RETRY = re.compile(r"Load\(<(\w+)/(\w+)>.*?returned error, retrying after [^:]*: (.*)")
_POLL = 0.1


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

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
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
        return BackupRef(
            source=self.kind,
            backup_id=snap.get("short_id") or snap["id"][:8],
            location=f"{repo}#{snap['id']}",
            size_bytes=self._size(repo, snap["id"]),
            created_at=_time(snap["time"]),
        )

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        repo, _, snap_id = ref.location.rpartition("#")
        if not repo or not snap_id:
            raise BackupError(f"{ref.location}: not a restic location (REPOSITORY#SNAPSHOT_ID)")
        what = f"{repo} snapshot {ref.backup_id}"
        budget = ctx.budget(what)
        snap = self._find(repo, snap_id)
        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        budget.space(workdir, "the restored files")
        if self.restore_as == "rootfs":
            budget.space(docker_root(ctx.docker), "Docker's data root")
        size = ref.size_bytes if ref.size_bytes is not None else self._size(repo, snap["id"])
        if size is not None:
            budget.claims(size, "restic's snapshot size")
        target = Path(tempfile.mkdtemp(prefix=f"restic-{ref.backup_id}-", dir=workdir))
        try:
            self._restore(repo, snap["id"], target, budget, what, measured=size is None)
            tree = _tree(target, snap.get("paths") or [])
            if self.restore_as == "data":
                return Restored(directory=tree)
            labels = {**ctx.labels, "restoredrill.source": self.kind}
            import_stream(
                ctx.engine(what), _tar_tree(tree), ctx.image_tag, label_changes(labels), what, budget
            )
            shutil.rmtree(target, ignore_errors=True)
            return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def _size(self, repo: str, snap_id: str) -> int | None:
        """The snapshot's restore size (``restic stats``), if restic tells it."""
        try:
            stats = json.loads(
                self._restic(repo, "stats", "--json", "--mode", "restore-size", snap_id)
            )
            return int(stats["total_size"])
        except (BackupError, ValueError, KeyError, TypeError):
            return None  # size is a nicety; locating succeeded

    def _restore(
        self, repo: str, snap_id: str, target: Path, budget: Budget, what: str, measured: bool
    ) -> None:
        """``restic restore`` into ``target``, watched: see the module's docstring. The
        tree is walked once more at the end only if restic did not state its size
        (``measured``): restic itself verifies every blob it restores against the
        snapshot, so a finished restore is the size ``restic stats`` stated."""
        env = self._env()
        command = ["restic", "--no-lock", "--no-cache", "--quiet", "-r", repo]
        command += ["restore", snap_id, "--target", str(target)]
        fd, log = tempfile.mkstemp(prefix="restic-stderr-", dir=target.parent)
        os.close(fd)
        try:  # restic appends to its own open file; this side reads it (two offsets)
            with open(log, "ab") as out, open(log, "rb") as err:
                try:
                    proc = subprocess.Popen(
                        command,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=out,
                        start_new_session=True,  # its own process group: killed whole
                    )
                except FileNotFoundError:
                    raise BackupError(
                        "restic is not installed (Debian: apt-get install restic)"
                    ) from None
                try:
                    code = self._watch(
                        proc, repo, target, budget, err, env["RESTIC_PASSWORD"], what
                    )
                finally:
                    if proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                if code != 0:
                    raise BackupError(f"{what}: {_reason(_text(err), env['RESTIC_PASSWORD'])}")
        finally:
            os.unlink(log)
        if measured:
            budget.reached(_tree_size(target, budget.bound))

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        repo: str,
        target: Path,
        budget: Budget,
        err: IO[bytes],
        password: str,
        what: str,
    ) -> int:
        """Wait for restic, stopping it (by raising) on cancel, timeout, a tree over the
        budget, or a retried read of a local repository; return its exit code."""
        deadline = time.monotonic() + self.timeout
        measure_at = 0.0
        local = not _REMOTE.match(repo) or repo.startswith("local:")
        while True:
            try:
                return proc.wait(timeout=_POLL)
            except subprocess.TimeoutExpired:
                pass
            budget.check()
            now = time.monotonic()
            if now > deadline:
                raise BackupError(f"{what}: restic restore took longer than {self.timeout:.0f}s")
            if local and (retry := _RETRY.search(_text(err))):
                kind, name, error = retry.groups()
                raise BackupError(
                    f"{what}: restic cannot read {kind} file {name} of the repository "
                    f"({_reason(error, password).removeprefix('restic failed: ')}); "
                    "the repository is damaged: run `restic check` on it"
                )
            if now >= measure_at:
                budget.reached(_tree_size(target, budget.bound))
                measure_at = time.monotonic() + max(0.5, 10 * (time.monotonic() - now))

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


def _text(err: IO[bytes], tail: int = 64 << 10) -> str:
    """The last ``tail`` bytes restic wrote to the file ``err`` reads."""
    size = err.seek(0, os.SEEK_END)
    err.seek(max(0, size - tail))
    return err.read().decode(errors="replace")


def _tree_size(root: Path, stop: int) -> int:
    """Bytes of the regular files under ``root`` (counting stops past ``stop``)."""
    total = 0
    todo = [root]
    while todo and total <= stop:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue  # removed or not readable yet
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


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
