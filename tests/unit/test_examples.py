"""Every check module's docstring carries a YAML example of its inventory form, and it is valid."""

from __future__ import annotations

import inspect
import textwrap

import pytest
from pydantic import TypeAdapter
from ruamel.yaml import YAML

from restoredrill.checks import registry

SPECS = TypeAdapter(registry.CheckSpec)


def example(doc: str) -> str:
    """The indented block after the docstring's ``Example ...::`` line."""
    lines = doc.splitlines()
    heads = [
        i for i, line in enumerate(lines) if line.startswith("Example") and line.endswith("::")
    ]
    assert len(heads) == 1, "one 'Example (...)::' paragraph expected"
    block = []
    for line in lines[heads[0] + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip()


@pytest.mark.parametrize("kind", registry.KINDS)
def test_the_module_example_is_a_valid_check_of_its_kind(kind: str) -> None:
    doc = inspect.getdoc(registry.module(kind)) or ""
    entries = YAML(typ="safe").load(example(doc))
    assert isinstance(entries, list) and len(entries) == 1, entries
    spec = SPECS.validate_python(entries[0])
    assert spec.kind == kind


def test_every_registered_kind_is_loaded() -> None:
    assert set(registry.KINDS) == set(registry.MODULES)
