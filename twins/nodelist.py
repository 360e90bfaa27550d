"""The SCADA twin's short address space: folders and variables under Objects, in YAML.

    namespace: urn:restoredrill:demo:line1
    nodes:
      - folder: Line1
        nodes:
          - {variable: TankLevel, type: Double, bind: line1-plc/tank_level}
          - {variable: LevelSetpoint, type: Double, writable: true, bind: line1-plc/level_setpoint}

Read through the one config-file loader; problems name file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

from asyncua import ua
from pydantic import BaseModel, ConfigDict, Discriminator, Field, ValidationError, model_validator
from pydantic import Tag as UnionTag

from restoredrill.configfile import ConfigFileError, read_text

from .devices import Binding
from .registers import pydantic_field, read_yaml

VARIANT_TYPES: dict[str, ua.VariantType] = {
    name: getattr(ua.VariantType, name)
    for name in [
        "Boolean",
        "SByte",
        "Byte",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float",
        "Double",
        "String",
        "DateTime",
    ]
}


class ScadaConfigError(ConfigFileError):
    """A NodeSet or node list problem, named by file and line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariableNode(_Model):
    variable: str = Field(min_length=1, description="browse name")
    type: str = "Double"
    value: Any = None
    writable: bool = False
    bind: str | Binding | None = Field(None, description="PLC/TAG, or {plc:, tag:}")
    description: str = ""

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _check(self) -> VariableNode:
        if self.type not in VARIANT_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of {', '.join(VARIANT_TYPES)}")
        if isinstance(self.bind, str) and "/" not in self.bind:
            raise ValueError("bind: write PLC/TAG, e.g. line1-plc/tank_level")
        return self


def _node_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "folder" if "folder" in value else "variable"
    return "folder" if isinstance(value, FolderNode) else "variable"


AnyNode = Annotated[
    Annotated[VariableNode, UnionTag("variable")] | Annotated["FolderNode", UnionTag("folder")],
    Discriminator(_node_kind),
]


class FolderNode(_Model):
    folder: str = Field(min_length=1)
    nodes: list[AnyNode] = Field(default_factory=list)
    description: str = ""


class NodeList(_Model):
    """A short YAML address space: folders and variables under Objects."""

    namespace: str = "urn:restoredrill:scada"
    nodes: list[AnyNode] = Field(min_length=1)


def _clean_loc(loc: Sequence[Any]) -> tuple:
    """Drop pydantic's union labels (after a list index, or validator names) from a location."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        after_index = i > 0 and isinstance(loc[i - 1], int)
        if isinstance(part, str) and (
            "[" in part
            or part in ("str", "Binding")
            or (after_index and part in ("variable", "folder"))
        ):
            continue
        out.append(part)
    return tuple(out)


def load_node_list(path: str | Path) -> NodeList:
    path = Path(path)
    text = read_text(path, ScadaConfigError, "the node list")
    data, locate = read_yaml(path, text, ScadaConfigError)
    try:
        return NodeList.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            # drop pydantic's union-member labels from the location
            loc = _clean_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            errors.append(ScadaConfigError(path, locate(loc), pydantic_field(loc), msg))
        errors.sort(key=lambda e: e.line)
        first = errors[0]
        raise ScadaConfigError(path, first.line, first.field, first.message, errors) from None


def variables(
    items: Iterable[VariableNode | FolderNode], prefix: str = ""
) -> Iterable[tuple[str, VariableNode]]:
    for item in items:
        if isinstance(item, FolderNode):
            yield from variables(item.nodes, f"{prefix}{item.folder}.")
        else:
            yield f"{prefix}{item.variable}", item


def binding(node: str, bind: str | Binding) -> Binding:
    """A variable's ``bind:`` (``PLC/TAG`` or a mapping) as a Binding."""
    if isinstance(bind, Binding):
        return bind
    plc, _, tag = bind.partition("/")
    return Binding(node=node or "?", plc=plc, tag=tag)
