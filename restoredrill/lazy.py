"""Names a package exports, imported only when first used (as Prefect's ``__init__`` does).

A package declares ``__all__`` and where each name lives; ``import restoredrill.twins``
then costs nothing, and a PLC twin's container never needs the Docker SDK::

    __getattr__, __dir__ = lazy(__name__, {"PlcTwin": ".plc", "DockerBackend": ".docker"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for the names in ``where``
    (name → module, relative to ``package``)."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # found once; later lookups do not come here
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *where})

    return getattr_, dir_
