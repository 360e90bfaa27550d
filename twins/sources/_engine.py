"""Feeding a tar stream to the engine (``docker import``, ``docker load``) so that a
refusal or the watchdog stops it, and nothing it made stays behind.

The chunks reach the engine through a generator that checks the restore's cancel event
between chunks: when it raises, the HTTP upload stops mid-body and the engine drops the
request. Whatever a failed or cancelled request still made under the tag is removed.

:class:`Pipe` runs a validating reader (``scan_tar`` with a sink) in a thread and yields
what it read, a few chunks ahead at most; its :class:`Gate` lets bytes go on only up to
the end of the last member the reader checked, and keeps the archive's end back until
the whole archive passed, so the engine never sees a complete archive that failed.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

from ..base import TwinError
from .base import BackupError
from .budget import Budget

CHUNK = 1 << 20
T = TypeVar("T")


# -- the engine ------------------------------------------------------------------------


def import_stream(
    client: Any,
    chunks: Iterator[bytes],
    tag: str,
    changes: list[str],
    what: str,
    budget: Budget | None = None,
) -> str:
    """``docker import`` a tar stream as ``tag``; return the image id."""
    repository, _, version = (
        tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    )
    before = _image_id(client, tag)
    try:
        with contextlib.closing(_guarded(chunks, budget)) as src:
            out = client.api.import_image(
                src=src, repository=repository, tag=version, changes=changes, stream_src=True
            )
        image_id = _imported(str(out), what)
        if budget is not None:
            budget.check()
        return image_id
    except (BackupError, TwinError):  # ours, or raised by ``chunks`` itself
        _remove_new(client, tag, before)
        raise
    except Exception as exc:  # noqa: BLE001 - APIError, a lost connection, …: the engine refused it
        _remove_new(client, tag, before)
        raise BackupError(f"{what}: docker import failed: {_explain(exc)}") from None
    except BaseException:
        _remove_new(client, tag, before)
        raise


def _imported(out: str, what: str) -> str:
    image_id = None
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("error") or msg.get("errorDetail"):
            raise BackupError(
                f"{what}: docker import failed: {msg.get('error') or msg['errorDetail']}"
            )
        if str(msg.get("status", "")).startswith("sha256:"):
            image_id = msg["status"]
    if not image_id:
        raise BackupError(f"{what}: docker import returned no image ({out[:200]})")
    return image_id


def load_stream(
    client: Any, chunks: Iterator[bytes], tag: str, what: str, budget: Budget | None = None
) -> None:
    """``docker load`` a tar stream whose manifest tags its image ``tag``.

    Once the upload is done the engine registers the layers; a cancel then waits for it
    (reading its progress) so that the image it makes is removed, not left behind."""
    before = _image_id(client, tag)
    try:
        with contextlib.closing(_guarded(chunks, budget)) as src:
            for event in client.api.load_image(src):
                detail = event.get("errorDetail") or {}
                if detail or event.get("error"):
                    raise BackupError(
                        f"{what}: docker load failed: {detail.get('message') or event['error']}"
                    )
        if budget is not None:
            budget.check()
        if _image_id(client, tag) is None:
            raise BackupError(f"{what}: docker load did not produce {tag}")
    except (BackupError, TwinError):
        _remove_new(client, tag, before)
        raise
    except Exception as exc:  # noqa: BLE001 - APIError, a lost connection, …: the engine refused it
        _remove_new(client, tag, before)
        raise BackupError(f"{what}: docker load failed: {_explain(exc)}") from None
    except BaseException:
        _remove_new(client, tag, before)
        raise


def _guarded(chunks: Iterator[bytes], budget: Budget | None) -> Generator[bytes, None, None]:
    """``chunks``, stopping between them once the restore is cancelled; closes them."""
    try:
        for data in chunks:
            if budget is not None:
                budget.check()
                budget.sent += len(data)
            yield data
        if budget is not None:
            budget.check()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _image_id(client: Any, tag: str) -> str | None:
    import docker.errors

    try:
        return client.api.inspect_image(tag)["Id"]
    except docker.errors.NotFound:
        return None


def _remove_new(client: Any, tag: str, before: str | None) -> None:
    """Remove what a failed request made under ``tag`` (the image it pointed to before
    gets the tag back)."""
    with contextlib.suppress(Exception):  # the engine is gone or nothing was made
        now = _image_id(client, tag)
        if now is None or now == before:
            return
        client.api.remove_image(now, force=True)
        if before is not None:
            repository, _, version = tag.rpartition(":")
            client.api.tag(before, repository, version)


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


# -- validating while streaming --------------------------------------------------------


class Gate:
    """Hands bytes on in order, but only up to the offset released so far; holds the
    rest (a header not yet checked, the archive's end) and drops what lies past the
    archive's end. Pieces are passed on as they came (small ones joined), not copied."""

    def __init__(self, put: Callable[[bytes], None], chunk: int = CHUNK) -> None:
        self._put = put
        self._chunk = chunk
        self._held: deque[bytes] = deque()
        self._start = 0  # stream offset of the first held byte
        self._size = 0  # bytes held
        self._open = 0
        self._end: int | None = None
        self._out: list[bytes] = []
        self._out_size = 0

    def feed(self, data: bytes) -> None:
        if self._end is not None:
            data = data[: max(0, self._end - (self._start + self._size))]
        if data:
            self._held.append(data)
            self._size += len(data)
            self._flush()

    def release(self, offset: int) -> None:
        self._open = max(self._open, offset)
        self._flush()

    def end(self, offset: int) -> None:
        """The archive ends at ``offset``: nothing past it is kept or sent."""
        self._end = offset
        while self._held and self._start + self._size > offset:
            last = self._held.pop()
            self._size -= len(last)
            keep = offset - (self._start + self._size)
            if keep > 0:
                self._held.append(last[:keep])
                self._size += keep

    def finish(self) -> None:
        """Everything held goes on now (the whole archive passed)."""
        self._open = max(self._open, self._start + self._size)
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        while self._held and self._open > self._start:
            piece = self._held[0]
            n = min(len(piece), self._open - self._start)
            if n == len(piece):
                self._held.popleft()
            else:
                self._held[0] = piece[n:]
                piece = piece[:n]
            self._start += n
            self._size -= n
            self._out.append(piece)
            self._out_size += n
        if self._out and (self._out_size >= self._chunk // 8 or force):
            self._put(self._out[0] if len(self._out) == 1 else b"".join(self._out))
            self._out, self._out_size = [], 0


class _Stopped(Exception):
    """The consumer went away: the producer stops."""


_DONE = object()


class Pipe(Generic[T]):
    """Runs ``produce(put)`` in a thread; ``chunks()`` yields what it put, in order, at
    most ``depth`` chunks ahead, and raises what it raised. ``result`` is what it
    returned. Closing ``chunks()`` stops the thread and waits for it."""

    def __init__(
        self,
        produce: Callable[[Callable[[bytes], None]], T],
        budget: Budget | None = None,
        depth: int = 4,
    ) -> None:
        self._produce = produce
        self._budget = budget
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._stop = threading.Event()
        self.result: T | None = None

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self) -> None:
        try:
            self.result = self._produce(self._put)
            self._put(_DONE)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            with contextlib.suppress(_Stopped):
                self._put(exc)

    def chunks(self) -> Iterator[bytes]:
        thread = threading.Thread(target=self._run, name="restore-reader", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._budget is not None:
                        self._budget.check()
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
            thread.join()
