"""One scratch folder per run and process: ``<tmp>/restoredrill-<run id>[-w<pid>]/``.

Restores unpack there, device configurations are copied there. An ``owner.json``
names the process (pid, start time, host) and the run, so a folder left by a killed
run is found and judged without Docker.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from .owner import Owner

PREFIX = "restoredrill-"
OWNER_FILE = "owner.json"
LEGACY = re.compile(r"restoredrill-r\d{8}-\d{6}-[0-9a-f]{4}-")
"""Scratch folders of older versions (``restoredrill-<run>-<system>-xxxx``), no owner file."""


def root() -> Path:
    return Path(tempfile.gettempdir())


def create(run_id: str, owner: Owner | None = None, *, attached: bool = False) -> Path:
    """Make the run's scratch folder (private to root) and write its owner file."""
    owner = owner or Owner.me()
    folder = root() / f"{PREFIX}{run_id}{f'-w{owner.pid}' if attached else ''}"
    folder.mkdir(mode=0o700, exist_ok=True)
    record = {"run": run_id, "pid": owner.pid, "start": owner.start, "host": owner.host}
    (folder / OWNER_FILE).write_text(json.dumps(record))
    return folder


def owner_of(folder: Path) -> tuple[str, Owner] | None:
    """The run and owner a scratch folder names (``None`` without a readable owner file)."""
    try:
        data = json.loads((folder / OWNER_FILE).read_text())
        return str(data["run"]), Owner(int(data["pid"]), data.get("start"), str(data["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def folders(run_id: str) -> list[Path]:
    """Every scratch folder of ``run_id`` (the owner's and attached workers')."""
    return sorted(
        p
        for p in root().glob(f"{PREFIX}{run_id}*")
        if p.is_dir() and (p.name == f"{PREFIX}{run_id}" or p.name.startswith(f"{PREFIX}{run_id}-"))
    )


def reap(
    alive: Callable[[str], bool] = lambda run_id: False,
    max_age: float | None = 86400,
    runs: Collection[str] | None = None,
) -> list[str]:
    """Remove scratch folders whose owner is dead (runs ``alive`` says are kept), and
    folders of older versions, which name no owner, once older than ``max_age`` seconds.
    ``runs`` limits the sweep to those run ids."""
    removed = []
    now = time.time()
    for folder in root().glob(f"{PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        found = owner_of(folder)
        if runs is not None and (found is None or found[0] not in runs):
            continue
        if found is not None:
            run, owner = found
            if owner.alive() is not False or alive(run):
                continue
        elif not LEGACY.match(folder.name) or max_age is None:
            continue
        else:
            try:
                if now - folder.stat().st_mtime <= max_age:
                    continue
            except OSError:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(f"scratch folder {folder}")
    return removed
