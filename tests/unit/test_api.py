"""The declared public API: every name in ``__all__`` resolves, imported when first used;
importing the libraries loads neither flows nor Prefect (nor the Docker SDK)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["restoredrill.twins", "restoredrill.checks"]
"""The libraries; the entry points (``restoredrill``, ``restoredrill.flows``: they load
Prefect) are checked the same way in tests/test_api_entry_points.py."""


@pytest.mark.parametrize("package", PACKAGES)
def test_every_declared_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []
    assert set(module.__all__) <= set(dir(module))


def test_an_unknown_name_is_an_attribute_error() -> None:
    import restoredrill.twins

    with pytest.raises(AttributeError, match="'restoredrill.twins' has no attribute 'Nope'"):
        restoredrill.twins.Nope  # noqa: B018
    from restoredrill.twins import plc  # a submodule still imports as one

    assert plc.PlcTwin is restoredrill.twins.PlcTwin


def test_importing_the_libraries_loads_no_flows_prefect_or_docker() -> None:
    code = (
        "import sys, restoredrill, restoredrill.twins, restoredrill.checks\n"
        "from restoredrill import ExitCode, RestoredrillError\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'docker')"
        " or m.startswith('restoredrill.flows')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
