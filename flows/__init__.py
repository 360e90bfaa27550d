"""Prefect flows and everything about a run: plan, verdicts, evidence, alerts, CLI.

The entry points below are imported when first used (Prefect loads with the flows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from restoredrill.lazy import lazy

if TYPE_CHECKING:
    from .cli import main
    from .evidence import EvidenceError, EvidenceStore
    from .inventory import InventoryError, LoadedSite, Site, System, load_site
    from .results import RunRecord, SystemResult, Verdict
    from .verify import run_site, verify_site, verify_system

__all__ = [
    "EvidenceError",
    "EvidenceStore",
    "InventoryError",
    "LoadedSite",
    "RunRecord",
    "Site",
    "System",
    "SystemResult",
    "Verdict",
    "load_site",
    "main",
    "run_site",
    "verify_site",
    "verify_system",
]

__getattr__, __dir__ = lazy(
    __name__,
    {
        "run_site": ".verify",
        "verify_site": ".verify",
        "verify_system": ".verify",
        "load_site": ".inventory",
        "LoadedSite": ".inventory",
        "Site": ".inventory",
        "System": ".inventory",
        "InventoryError": ".inventory",
        "RunRecord": ".results",
        "SystemResult": ".results",
        "Verdict": ".results",
        "EvidenceStore": ".evidence",
        "EvidenceError": ".evidence",
        "main": ".cli",
    },
)
