"""One module per kind of check; each returns structured ``CheckResult``s (no Prefect here).

The names below are the package's public API, imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from restoredrill.lazy import lazy

if TYPE_CHECKING:
    from .base import (
        AddressTarget,
        CheckError,
        CheckResult,
        CheckSpecBase,
        SandboxGuard,
        Status,
        Target,
    )
    from .registry import KINDS, CheckSpec, run_check

__all__ = [
    "AddressTarget",
    "CheckError",
    "CheckResult",
    "CheckSpec",
    "CheckSpecBase",
    "KINDS",
    "SandboxGuard",
    "Status",
    "Target",
    "run_check",
]

__getattr__, __dir__ = lazy(
    __name__,
    {
        "CheckSpec": ".registry",
        "KINDS": ".registry",
        "run_check": ".registry",
        "CheckResult": ".base",
        "Status": ".base",
        "CheckError": ".base",
        "CheckSpecBase": ".base",
        "SandboxGuard": ".base",
        "Target": ".base",
        "AddressTarget": ".base",
    },
)
