"""The demo's backups kept as fresh as a plant's nightly backups keep theirs.

The demo's backups are made once and reused; a system's RPO judges how old its newest
backup is, so without this the demo would report ``rpo_exceeded`` a few days after it was
first prepared. A plant's nightly job backs its systems up again; so does the demo, for
each backup older than half its system's RPO: restic takes a new snapshot of the same tree
(same host and tags), a file archive is written again with the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from restoredrill.durations import format_duration
from restoredrill.twins.sources.base import BackupError, BackupRef

from .inventory import load_site


def refresh(site: Path, console: Console) -> list[str]:
    """Back up again each backup of ``site`` older than half its system's RPO; the names
    of the systems whose backup was renewed."""
    loaded = load_site(site)
    renewed = []
    for system in loaded.site.systems:
        if system.rpo is None:
            continue
        ref = system.backup.locate(loaded.base_dir)
        if ref.created_at is None:
            continue
        age = (datetime.now(UTC) - ref.created_at).total_seconds()
        restic, file = system.backup.kind == "restic", Path(ref.location)
        if age <= system.rpo.total_seconds() / 2 or not (restic or file.is_file()):
            continue
        with console.status(f"demo: backing up {system.name} again"):
            if restic:
                _snapshot_again(system.backup, loaded.base_dir, ref)
            else:
                _write_again(file)
        console.print(
            f"demo: {system.name}'s backup was {format_duration(age)} old "
            f"(RPO {format_duration(system.rpo.total_seconds())}): backed up again"
        )
        renewed.append(system.name)
    return renewed


def _write_again(path: Path) -> None:
    """The archive written anew, as a nightly job writes an unchanged system's backup."""
    fresh = path.with_name(f".{path.name}.new")
    shutil.copyfile(path, fresh)
    fresh.replace(path)


def _snapshot_again(spec: Any, base_dir: Path, ref: BackupRef) -> None:
    """restic: the snapshot's tree restored and backed up again (its host and tags kept)."""
    repo, _, snap_id = ref.location.rpartition("#")
    env = dict(os.environ)
    if spec.password_file:
        env["RESTIC_PASSWORD_FILE"] = str((base_dir / spec.password_file).resolve())
    else:
        env["RESTIC_PASSWORD"] = os.environ.get(spec.password_env, "")

    def restic(*args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["restic", "-r", repo, "--quiet", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=spec.timeout,
        )
        if done.returncode != 0:
            raise BackupError(f"{repo}: restic {args[0]} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    [snap] = json.loads(restic("snapshots", "--json", snap_id))
    with tempfile.TemporaryDirectory(prefix="restoredrill-demo-") as tmp:
        restic("restore", snap_id, "--target", tmp)
        paths = snap.get("paths") or []
        inner = Path(tmp) / paths[0].lstrip("/") if len(paths) == 1 else Path(tmp)
        # restic restores a one-path snapshot under its absolute path, one of ``.`` taken
        # inside the folder as it was: the tree is backed up from where it came back
        where = inner if inner.is_dir() else Path(tmp)
        tags = [arg for tag in snap.get("tags") or [] for arg in ("--tag", tag)]
        restic("backup", ".", "--host", snap["hostname"], *tags, cwd=where)
