"""What a twin used: processes and memory (its cgroup), disk (its writable layer and
restored data), and which of its limits it hit.

The kernel bounds memory and processes; it cannot bound what a container writes on
overlay2 over ext4, so :class:`Watcher` measures that every second or so and stops a
twin past its ``disk`` limit. The cgroup's counters vanish with the container, so the
watcher samples them too and keeps the peaks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from restoredrill.sizes import format_size

from .limits import Limits

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")
TICK = 1.0
"""Seconds between samples of the cgroup counters."""
DISK_SHARE = 10.0
"""A disk walk that took t seconds waits at least DISK_SHARE * t before the next one."""


@dataclass
class Usage:
    """Peaks and counters of one twin (they only grow)."""

    pids_peak: int = 0
    pids_refused: int = 0
    """Process creations the kernel refused at the pids limit."""
    memory_peak: int = 0
    oom_kills: int = 0
    oom_killed: bool = False
    """The twin's main process was killed for memory (Docker's State.OOMKilled)."""
    disk: int = 0
    """Bytes the twin wrote: its writable layer, plus growth of its restored data."""
    disk_exceeded: bool = False


def _cgroup_dirs(pid: int, container_id: str) -> dict[str, Path]:
    """The cgroup folders of a process by controller (``""``: the v2 hierarchy)."""
    dirs: dict[str, Path] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(",") if controllers else [""]:
            if ctrl in ("pids", "memory", ""):
                base = CGROUP / ctrl if ctrl else CGROUP
                dirs[ctrl] = base / path.lstrip("/")
    for ctrl in ("pids", "memory"):  # a private cgroup namespace shows "/": Docker's default
        if ctrl in dirs and dirs[ctrl].name != container_id:
            guess = CGROUP / ctrl / "docker" / container_id
            if guess.is_dir():
                dirs[ctrl] = guess
    return dirs


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _keyed(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _number(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


class Counters:
    """Reads one container's cgroup counters (cgroup v1 or v2)."""

    def __init__(self, pid: int, container_id: str) -> None:
        dirs = _cgroup_dirs(pid, container_id)
        v2 = dirs.get("")
        self.pids = dirs.get("pids") or v2
        self.memory = dirs.get("memory") or v2
        self.v1 = "pids" in dirs

    def sample(self, usage: Usage) -> None:
        if self.pids is not None:
            usage.pids_refused = max(
                usage.pids_refused, _keyed(_read(self.pids / "pids.events"), "max")
            )
            peak = _number(_read(self.pids / "pids.peak")) or _number(
                _read(self.pids / "pids.current")
            )
            usage.pids_peak = max(usage.pids_peak, peak)
        if self.memory is not None:
            if self.v1:
                kills = _keyed(_read(self.memory / "memory.oom_control"), "oom_kill")
                peak = _number(_read(self.memory / "memory.max_usage_in_bytes"))
            else:
                kills = _keyed(_read(self.memory / "memory.events"), "oom_kill")
                peak = _number(_read(self.memory / "memory.peak")) or _number(
                    _read(self.memory / "memory.current")
                )
            usage.oom_kills = max(usage.oom_kills, kills)
            usage.memory_peak = max(usage.memory_peak, peak)


def tree_size(path: Path) -> int:
    """Bytes allocated under ``path`` (hard links once, symlinks not followed, one filesystem)."""
    total, seen = 0, set()
    try:
        device = path.lstat().st_dev
    except OSError:
        return 0
    todo = [str(path)]
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != device:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


@dataclass
class Watched:
    """One twin under watch."""

    name: str
    limits: Limits
    counters: Counters | None
    layer: Path | None
    data: Path | None
    stop: Callable[[str], None]
    """Stops the twin, given the reason."""
    usage: Usage = field(default_factory=Usage)
    data_baseline: int | None = None
    """Size of the restored data when the watch began (measured on the first walk)."""
    next_disk: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, disk: bool = True) -> None:
        with self.lock:
            if self.counters is not None:
                self.counters.sample(self.usage)
            if not disk or self.usage.disk_exceeded or time.monotonic() < self.next_disk:
                return
            started = time.monotonic()
            layer = tree_size(self.layer) if self.layer is not None else 0
            data = tree_size(self.data) if self.data is not None else 0
            if self.data_baseline is None:
                self.data_baseline = data
            took = time.monotonic() - started
            self.next_disk = time.monotonic() + max(TICK, DISK_SHARE * took)
            self.usage.disk = max(self.usage.disk, layer + max(0, data - self.data_baseline))
            if self.limits.disk is not None and self.usage.disk > self.limits.disk:
                self.usage.disk_exceeded = True
        if self.usage.disk_exceeded:
            self.stop(reached(self.limits, self.usage) or "disk limit")


class Watcher:
    """A thread sampling every watched twin of a sandbox about once a second."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._twins: dict[str, Watched] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, item: Watched) -> None:
        with self._lock:
            self._twins[item.name] = item
            if self._thread is None:
                self._wake.clear()
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def forget(self, name: str) -> Watched | None:
        with self._lock:
            return self._twins.pop(name, None)

    def stop(self) -> None:
        with self._lock:
            self._twins.clear()
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._lock:
                items = list(self._twins.values())
                if self._thread is not threading.current_thread():
                    return
            for item in items:
                try:
                    item.sample()
                except Exception as exc:  # noqa: BLE001 - a watcher must outlive one odd twin
                    log.warning("watching %s: %s", item.name, exc)
            self._wake.wait(TICK)


def reached(limits: Limits, usage: Usage) -> str | None:
    """Which limits the twin hit, in words a person can act on (``None``: none)."""
    found = []
    if usage.disk_exceeded:
        found.append(
            f"limit: disk {format_size(limits.disk)} exceeded (the twin wrote "
            f"{format_size(usage.disk)}), the twin was stopped"
        )
    if usage.oom_killed or usage.oom_kills:
        what = (
            "the twin"
            if usage.oom_killed
            else f"{usage.oom_kills} process{'es' if usage.oom_kills > 1 else ''} of the twin"
        )
        found.append(
            f"limit: memory {format_size(limits.memory)} reached, the kernel killed {what} (OOM)"
        )
    if usage.pids_refused:
        found.append(
            f"limit: pids {limits.pids} reached, the kernel refused {usage.pids_refused} "
            "new processes"
        )
    return "; ".join(found) or None
