"""restoredrill: prove that backups restore into working systems within their RTO.

``restoredrill.twins`` (sandboxes, backup sources, PLC and SCADA twins) and
``restoredrill.checks`` (one module per kind of check) are plain libraries;
``restoredrill.flows`` runs them as Prefect flows. The run's entry points are here too,
imported when first used: ``import restoredrill`` loads neither flows nor Prefect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ExitCode, InputError, RestoredrillError
from .lazy import lazy

if TYPE_CHECKING:
    from .flows import RunRecord, Verdict, load_site, run_site, verify_site, verify_system

__version__ = "0.1.0"

__all__ = [
    "ExitCode",
    "InputError",
    "RestoredrillError",
    "RunRecord",
    "Verdict",
    "__version__",
    "load_site",
    "run_site",
    "verify_site",
    "verify_system",
]

__getattr__, __dir__ = lazy(
    __name__,
    {
        name: ".flows"
        for name in (
            "RunRecord",
            "Verdict",
            "load_site",
            "run_site",
            "verify_site",
            "verify_system",
        )
    },
)
