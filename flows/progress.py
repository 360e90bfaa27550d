"""Live progress of a run: which step each system is in, for the CLI's display."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class SystemProgress:
    system: str
    step: str = "waiting"
    started: float | None = None
    rto_s: float | None = None
    verdict: str | None = None
    detail: str = ""

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


Listener = Callable[[SystemProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` on every progress change; returns the unsubscribe function."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(progress: SystemProgress) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(progress)
