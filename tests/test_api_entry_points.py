"""The entry points' declared API: every name in ``__all__`` of ``restoredrill`` and
``restoredrill.flows`` resolves. Moved out of tests/unit (which checks the libraries the
same way): resolving them loads flows and Prefect, seconds of imports (an integration test
by nature)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["restoredrill", "restoredrill.flows"])
def test_every_declared_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []
    assert set(module.__all__) <= set(dir(module))
