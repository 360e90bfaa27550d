"""Check kinds by the ``kind:`` an inventory uses: their spec union and one dispatcher.

Each kind is one module exporting ``Spec`` (a ``CheckSpecBase`` with ``kind: Literal[...]``)
and ``run(spec, target, guard) -> list[CheckResult]``. Modules keep heavy imports
(testinfra, pymodbus, asyncua) inside ``run``, so importing the registry stays cheap.
A registered module that is not installed yet is left out (its kind is then unknown).

A module that talks to the target over the network runs inside the target's sandbox
(``target.inside()``, where the twin's address answers); one that only goes through
the twin (``docker exec``, a VM's guest agent or screen) says ``NETWORK = False``, and one
that does either, depending on the twin, decides with ``network(target) -> bool``. Without
either a module is taken to need the network.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from .base import CheckError, CheckResult, CheckSpecBase, SandboxGuard, Target, error_result

MODULES: dict[str, str] = {
    "host": "restoredrill.checks.host",
    "testinfra": "restoredrill.checks.testinfra_file",
    "tcp": "restoredrill.checks.tcp",
    "http": "restoredrill.checks.http",
    "modbus": "restoredrill.checks.modbus",
    "opcua": "restoredrill.checks.opcua",
    "screenshot": "restoredrill.checks.screenshot",
    "agent": "restoredrill.checks.agent",
}


def _load(path: str) -> ModuleType | None:
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name == path:  # the module itself is absent; a broken one still raises
            return None
        raise


_LOADED: dict[str, ModuleType] = {
    kind: loaded for kind, path in MODULES.items() if (loaded := _load(path)) is not None
}

KINDS: tuple[str, ...] = tuple(_LOADED)
"""The check kinds available here."""

if TYPE_CHECKING:  # the union is built at import time, from the modules found
    CheckSpec = CheckSpecBase
else:
    CheckSpec = Annotated[
        Union[tuple(m.Spec for m in _LOADED.values())],  # noqa: UP007 - built at import time
        Field(discriminator="kind"),
    ]
"""Any check spec, told apart by ``kind`` (for pydantic models and the JSON Schema)."""


def module(kind: str) -> ModuleType:
    """The module implementing ``kind``."""
    try:
        return _LOADED[kind]
    except KeyError:
        raise CheckError(f"unknown check kind {kind!r} (known: {', '.join(KINDS)})") from None


def needs_network(kind: str, target: Target | None = None) -> bool:
    """Whether checks of ``kind`` connect to ``target`` (and so run inside its sandbox)."""
    found = module(kind)
    decide = getattr(found, "network", None)
    if decide is not None and target is not None and decide(target):
        return True
    return bool(getattr(found, "NETWORK", True))


def run_check(spec: Any, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Run one check of any kind; never raises (a crash is an ``error`` result)."""
    started = time.perf_counter()
    try:
        inside = getattr(target, "inside", None)
        where = inside() if inside is not None and needs_network(spec.kind, target) else None
        with where or contextlib.nullcontext():
            return list(module(spec.kind).run(spec, target, guard))
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started)]
