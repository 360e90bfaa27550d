"""What a twin backend provides: an isolated sandbox, and twins started in it."""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TwinError(Exception):
    """A twin could not be restored, started or made ready; the message says why."""


@dataclass
class ExecOutput:
    exit_code: int
    stdout: str
    stderr: str = ""


@dataclass
class Restored:
    """What a backup source restored: an image to run, or a tree to mount (or both)."""

    image: str | None = None
    directory: Path | None = None
    created_images: tuple[str, ...] = ()
    """Images this restore created, removed again at teardown."""


class Twin(ABC):
    """A restored system running in a sandbox."""

    name: str
    address: str | None

    @property
    @abstractmethod
    def testinfra_url(self) -> str | None:
        """A URL for ``testinfra.get_host`` (e.g. ``docker://ID``), if the twin has a shell."""

    @abstractmethod
    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecOutput:
        """Run a command inside the twin."""

    @abstractmethod
    def logs(self, tail: int = 50) -> str:
        """The twin's recent output, for error messages."""

    @abstractmethod
    def is_running(self) -> bool: ...

    def exit_code(self) -> int | None:
        """The exit code once the twin has stopped (``None`` while running or unknown)."""
        return None

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """A block in which this thread's sockets reach the twin's address (its sandbox's
        network); probes and network checks of the twin run there."""
        return contextlib.nullcontext()

    def limit_reached(self) -> str | None:
        """Which of its limits (memory, pids, disk, ...) the twin hit, in words; ``None``."""
        return None


class Sandbox(ABC):
    """The contained network of one run and everything started in it.

    A twin in it can reach other twins of the sandbox and nothing else: no address of
    the host, nothing outside the sandbox subnets. The host itself has no route into
    it either: whatever must talk to twins (probes, network checks) runs in a block of
    :meth:`inside`.
    """

    run_id: str
    networks: Sequence[str]
    """The sandbox subnets (CIDR): checks may connect only inside them."""
    scratch: Path | None
    """The run's scratch folder (restores, device configurations); removed at close."""

    @abstractmethod
    def start(
        self,
        spec: Any,
        restored: Restored,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        limits: Any = None,
    ) -> Twin:
        """Start one restored system as ``name`` (``spec`` is the system's run spec),
        bounded by ``limits`` (a :class:`~.limits.Limits`; default: the built-in ones)."""

    @abstractmethod
    def inside(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the calling thread (and threads it starts) is in the
        sandbox's network: its sockets reach the twins, never the host's networks."""

    @abstractmethod
    def is_inside(self) -> bool:
        """Whether the calling thread is in the sandbox's network now."""

    @abstractmethod
    def remove(self, twin: Twin) -> None:
        """Stop and remove one twin and what its restore created."""

    @abstractmethod
    def close(self) -> None:
        """Tear down everything of this run; safe to call twice."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BACKENDS = {"docker": "restoredrill.twins.docker:DockerBackend"}


def backend(kind: str, **options: Any) -> Any:
    """The twin backend registered as ``kind`` (imported only when named)."""
    try:
        module, _, cls = _BACKENDS[kind].partition(":")
    except KeyError:
        raise TwinError(f"unknown twin backend {kind!r} (known: {', '.join(_BACKENDS)})") from None
    return getattr(importlib.import_module(module), cls)(**options)
