"""Enter a network namespace from one thread, and come back.

Linux network namespaces are per thread: ``setns(fd, CLONE_NEWNET)`` moves only the
calling thread, and every socket it creates afterwards (whatever library creates it:
urllib, pymodbus, asyncua) lives in that namespace; threads it starts inherit it.
Python 3.11 has no ``os.setns``, so libc's is called through ctypes. Needs
CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .base import TwinError

CLONE_NEWNET = 0x40000000
_SELF = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(TwinError):
    """The thread could not enter (or leave) a network namespace (``errno``, ``strerror``)."""

    def __init__(self, errno: int, strerror: str) -> None:
        super().__init__(strerror)
        self.args = (errno, strerror)  # pickles as it was made
        self.errno, self.strerror = errno, strerror

    def __str__(self) -> str:
        return self.strerror


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"setns: {os.strerror(err)}")


def current() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat(_SELF).st_ino


class NetNamespace:
    """An open handle on a network namespace: it stays valid while the handle is open,
    even if the process it was taken from is gone."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino

    def __repr__(self) -> str:
        return f"NetNamespace({self.path!r}, inode={self.inode})"

    def holds_thread(self) -> bool:
        """Whether the calling thread is inside this namespace."""
        return self.fd >= 0 and current() == self.inode

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block in this namespace (this thread only), then return to the
        thread's own namespace, also on errors."""
        if self.fd < 0:
            raise NamespaceError(0, f"{self.path}: namespace handle is closed")
        own = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            try:
                yield
            finally:
                _setns(own)  # a failure here must not pass silently (the thread is elsewhere)
        finally:
            os.close(own)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
