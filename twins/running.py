"""Running a twin: on its own event loop in a thread (for sync callers and tests), or in
the foreground until SIGINT/SIGTERM (the emulators' command lines)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class InThread:
    """Runs a twin on its own event loop in a daemon thread, for sync callers."""

    def __init__(self, twin: Any) -> None:
        self.twin = twin
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="twin-loop")

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 30) -> InThread:
        self._thread.start()
        self.call(self.twin.start(host, port), timeout)
        return self

    def call(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self, timeout: float = 10) -> None:
        try:
            self.call(self.twin.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self.loop.close()

    def __enter__(self) -> InThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, wait for SIGINT/SIGTERM, stop cleanly."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await start()
        await done.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await stop()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a large, long-lived structure is built.

    Building asyncua's standard address space (about 6,000 nodes, each a dozen objects)
    or validating a 10,000-tag map allocates hundreds of thousands of container objects
    that all stay alive; CPython's collector walks the growing heap again at every
    threshold and finds nothing to free. Paused, ``Server.init`` takes 0.6 s of CPU
    instead of 1.2-1.6 s. Reference counting still frees everything that is not cyclic.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
