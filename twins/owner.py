"""Which process owns a run's objects, and whether it still runs.

Everything a run creates (containers, networks, firewall rules, scratch folders) names
its owner: pid, the pid's start time (tells a reused pid apart) and host. A run whose
owner is gone is dead, and what it left may be removed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (``None`` if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Owner:
    """A process on a host."""

    pid: int
    start: str | None
    host: str

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, process_start(pid), socket.gethostname())

    def alive(self) -> bool | None:
        """Whether it still runs: ``None`` if that cannot be told here (another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by another user
        if self.start is not None:
            current = process_start(self.pid)
            if current is not None and current != self.start:
                return False  # the pid was reused by another process
        return True

    def token(self) -> str:
        """``pid/start@host``, e.g. for a firewall rule's comment."""
        return f"{self.pid}/{self.start or '-'}@{self.host}"

    @classmethod
    def from_token(cls, text: str) -> Owner | None:
        ident, _, host = text.partition("@")
        pid, _, start = ident.partition("/")
        if not host or not pid.isdigit():
            return None
        return cls(int(pid), None if start in ("", "-") else start, host)
