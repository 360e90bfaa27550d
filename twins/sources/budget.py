"""How much one restore may unpack, and where: the bound every restore streams under.

A backup is hostile until proven otherwise: a 1.4 MB ``.tar.zst`` can hold 10 GiB of
zeros. A :class:`Budget` counts what a restore unpacks and refuses it, with a reason
that names the backup, the bound and how to raise it, as soon as it is known to be too
big: from what the backup states up front (a zstd frame header, restic's snapshot
size, a tar header) where it states something, else while the bytes stream. The bound
is the smaller of

- the restore limit (``limits.restore``: the site's ``sandbox.limits``, a system's
  ``run.limits``, 16g built in), and
- the ratio guard: a compressed archive may unpack to at most ``MAX_RATIO`` times its
  own size (and ``RATIO_FLOOR`` whatever it is). A system's own ``run.limits.restore``
  vouches for its backup and lifts this guard.

A restore also has to fit: ``space()`` names a filesystem it writes to (the scratch
directory, Docker's data root), and a restore that cannot fit there is refused with
what it needs and what is free. ``check()`` raises :class:`RestoreCancelled` once the
watchdog set the cancel event; every streaming loop calls it between chunks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restoredrill.sizes import format_size

from ..limits import DEFAULTS
from .base import BackupError

MAX_RATIO = 1000
"""Most a compressed archive may expand (gzip cannot pass ~1030x; a real backup is
nowhere near, unless it is mostly zeros: then its system states its size)."""
RATIO_FLOOR = 64 << 20
"""Any archive may unpack this much, whatever its ratio (tiny archives of padding)."""
RESERVE = 256 << 20
"""Kept free on every filesystem a restore writes to (at most 5% of a small one)."""
KNOB = "run.limits.restore"


class RestoreCancelled(BackupError):
    """The watchdog stopped the restore; the step's verdict is the watchdog's."""


@dataclass
class _Space:
    path: Path
    free: int
    reserve: int
    factor: float
    what: str


class Budget:
    """What one restore of ``backup`` may unpack; see the module's docstring."""

    def __init__(
        self,
        backup: str,
        limit: int | None = None,
        *,
        ratio_guard: bool = True,
        cancel: threading.Event | None = None,
    ) -> None:
        self.backup = backup
        self.limit = int(limit if limit is not None else DEFAULTS.restore or 0)
        self.ratio_guard = ratio_guard
        self.cancel = cancel if cancel is not None else threading.Event()
        self.declared = 0
        """Sizes the backup's own headers stated so far."""
        self.unpacked = 0
        """Bytes unpacked (decompressed) so far."""
        self.sent = 0
        """Bytes handed to the engine so far."""
        self._ratio: tuple[int, str] | None = None  # (compressed size, compression)
        self._claim: tuple[int, int, str] | None = None  # (stated size, bound, source)
        self._spaces: list[_Space] = []

    # -- what is known up front --------------------------------------------------------

    @property
    def bound(self) -> int:
        """The most this restore may unpack."""
        bound = self.limit
        if self._ratio is not None:
            bound = min(bound, max(self._ratio[0] * MAX_RATIO, RATIO_FLOOR))
        if self._claim is not None:
            bound = min(bound, self._claim[1])
        return bound

    def compressed(self, size: int, compression: str) -> None:
        """The backup is ``size`` bytes of ``compression`` data (the ratio guard's base)."""
        if compression != "none" and self.ratio_guard:
            self._ratio = (size, compression)

    def space(self, path: str | os.PathLike[str] | None, what: str, factor: float = 1) -> None:
        """The restore writes ``factor`` times what it unpacks under ``path`` (``what``
        names it in a refusal); unknown or absent paths are not checked."""
        if path is None:
            return
        with contextlib.suppress(OSError):
            usage = shutil.disk_usage(path)
            reserve = min(RESERVE, usage.total // 20)
            self._spaces.append(_Space(Path(path), usage.free, reserve, factor, what))

    def stated(self, size: int, detail: str) -> None:
        """The backup states that it unpacks to at least ``size`` (``detail`` says where:
        "its zstd frame header states 12GiB"): refuse it now if that cannot be allowed
        or cannot fit."""
        self.check()
        if size > self.bound:
            raise BackupError(self._over(size, detail))
        self._fits(size)

    def claims(self, size: int, source: str) -> None:
        """The backup states exactly what it unpacks to (``source``: restic's snapshot
        size): refuse it now if that is too much, and hold it to that (with a margin)."""
        self.stated(size, f"{source} is {format_size(size)}")
        self._claim = (size, size + max(size // 10, 64 << 20), source)

    # -- while it streams --------------------------------------------------------------

    def expect(self, size: int, what: str) -> None:
        """``what`` (a tar member) of ``size`` bytes comes next: refuse it before its bytes
        are read if the total would pass the bound or not fit."""
        self.check()
        self.declared += size
        if self.declared > self.bound:
            detail = f"{what} states {format_size(size)}"
            if self.declared > size:
                detail += f", {format_size(self.declared)} with what came before"
            raise BackupError(self._over(self.declared, detail))
        self._fits(self.declared)

    def charge(self, n: int) -> None:
        """``n`` more bytes were unpacked."""
        self.check()
        self.unpacked += n
        if self.unpacked > self.bound:
            raise BackupError(self._over(self.unpacked, "while unpacking"))

    def reached(self, total: int) -> None:
        """The restore has written ``total`` bytes so far (measured, not streamed)."""
        self.check()
        self.unpacked = max(self.unpacked, total)
        if self.unpacked > self.bound:
            raise BackupError(self._over(self.unpacked, f"{format_size(total)} restored so far"))

    def check(self) -> None:
        """Raise RestoreCancelled if the watchdog stopped this restore."""
        if self.cancel.is_set():
            raise RestoreCancelled(f"{self.backup}: restore stopped (cancelled by the watchdog)")

    # -- reasons -----------------------------------------------------------------------

    def _fits(self, total: int) -> None:
        for space in self._spaces:
            need = int(total * space.factor)
            if need + space.reserve > space.free:
                raise BackupError(
                    f"{self.backup}: does not fit: needs {format_size(need)} in {space.path} "
                    f"({space.what}), {format_size(space.free)} is free there "
                    f"and {format_size(space.reserve)} of it is kept spare; free space there"
                )

    def _over(self, size: int, detail: str) -> str:
        knob = f"{KNOB}: {knob_size(max(size, self.bound))}"
        bound = self.bound
        if self._claim is not None and bound == self._claim[1] < self.limit:
            stated, _, source = self._claim
            return (
                f"{self.backup}: unpacks to more than {source} states ({format_size(stated)}, "
                f"{format_size(bound)} with a margin) ({detail}); the backup is not what it "
                "claims to be"
            )
        if bound < self.limit and self._ratio is not None:
            compressed, compression = self._ratio
            return (
                f"{self.backup}: expands more than {MAX_RATIO}x: {format_size(compressed)} of "
                f"{compression} data unpacks to over {format_size(bound)} ({detail}); that is a "
                f"decompression bomb, not a backup; if it is real, state its size for this "
                f"system, e.g. {knob}"
            )
        return (
            f"{self.backup}: unpacks to more than {format_size(bound)}, the restore limit "
            f"(limits.restore) ({detail}); if this backup is that large, raise it for this "
            f"system, e.g. {knob}"
        )


def knob_size(size: int) -> str:
    """A limit to suggest above ``size``: the next power of two, as ``32g`` or ``512m``."""
    value = 1 << max(int(size).bit_length(), 20)
    for suffix, shift in (("t", 40), ("g", 30), ("m", 20)):
        if value >= 1 << shift:
            return f"{value >> shift}{suffix}"
    return str(value)  # pragma: no cover - at least 1m


def docker_root(client: Any) -> str | None:
    """Docker's data root (where images land), if the engine runs on this machine."""
    try:
        if not str(client.api.base_url).startswith("http+docker://"):
            return None  # a remote engine: its disk is not ours to measure
        root = client.info().get("DockerRootDir")
    except Exception:  # noqa: BLE001 - no engine details: the engine will say if it is full
        return None
    return root if root and os.path.isdir(root) else None
