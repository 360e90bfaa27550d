"""Register maps: a PLC's exported tag table (YAML or CSV), validated with file:line errors.

Also the register codec (types, byte and word order) shared by the PLC twin and the
Modbus check, so both sides decode the same way.
"""

from __future__ import annotations

import csv
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from restoredrill.configfile import ConfigFileError, field_path, parse, read_text

from .device_profile import (
    Area,
    Identity,
    Requests,
    Timing,
    UnitProfile,
    UnknownUnits,
    default_area,
    default_identity,
)
from .running import gc_paused

Table = Literal["coil", "discrete", "holding", "input"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]
Behaviour = Literal[
    "constant", "counter", "ramp", "sine", "random_walk", "setpoint", "toggle", "replay"
]

BIT_TABLES = ("coil", "discrete")
SIZES: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
LIMITS: dict[str, tuple[float, float]] = {
    "bool": (0, 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "float32": (-3.4028234663852886e38, 3.4028234663852886e38),
}
FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
"""The Modbus read function of each table (named in an exception reply's message)."""


# --------------------------------------------------------------------------- codec


def encode(
    value: Any, dtype: str, byte_order: Order = "big", word_order: Order = "big"
) -> list[int]:
    """Encode one value of ``dtype`` into 16-bit registers."""
    if dtype == "bool":
        return [1 if value else 0]
    if dtype != "float32":
        value = int(round(value))
    raw = struct.pack(f">{_STRUCT[dtype]}", value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def decode(
    registers: Sequence[int], dtype: str, byte_order: Order = "big", word_order: Order = "big"
) -> int | float | bool:
    """Decode registers (exactly ``SIZES[dtype]`` of them) into one value."""
    if dtype == "bool":
        return bool(registers[0])
    words = [int(r).to_bytes(2, "big") for r in registers]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    (value,) = struct.unpack(f">{_STRUCT[dtype]}", b"".join(words))
    return value


def fits(value: Any, dtype: str) -> bool:
    """Whether ``value`` can be stored as ``dtype``."""
    if dtype == "bool":
        return value in (0, 1, True, False)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if dtype != "float32" and isinstance(value, float) and not value.is_integer():
        return False
    if dtype == "float32" and not math.isfinite(value):
        return False
    low, high = LIMITS[dtype]
    return low <= value <= high


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tag(_Model):
    """One tag of the map: where it lives, how it is encoded, how it behaves."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    unit: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType | None = Field(None, description="defaults to bool for coils/discrete inputs")
    registers: int | None = Field(
        None, ge=1, le=4, description="register count, if given must fit the type"
    )
    bit: int | None = Field(None, ge=0, le=15, description="a bit field: bit N of a register")
    byte_order: Order | None = None
    word_order: Order | None = None
    initial: float | bool | None = None
    behaviour: Behaviour = "constant"
    min: float | None = None
    max: float | None = None
    step: float | None = Field(None, description="counter increment / random-walk step")
    period: float | None = Field(
        None, gt=0, description="seconds: ramp/sine cycle, counter/toggle interval"
    )
    writable: bool | None = Field(
        None, description="clients may write it (default: setpoints only)"
    )
    series: list[tuple[float, float | bool]] | None = Field(
        None,
        description="replay: [[seconds, value], ...] played back in time, looped every period",
    )
    description: str = ""

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @field_validator("series", mode="before")
    @classmethod
    def _series_text(cls, value: Any) -> Any:
        """A CSV cell writes a series as ``0:12 0.5:13 1:12`` (seconds:value pairs)."""
        if not isinstance(value, str):
            return value
        pairs = []
        for item in value.replace(";", " ").split():
            when, sep, what = item.partition(":")
            if not sep:
                raise ValueError(f"{item!r} is not seconds:value (write 0:12 0.5:13)")
            pairs.append((when, cls._numbers(what)))
        return pairs

    @field_validator("initial", "min", "max", "step", "period", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("true", "false"):
                return text == "true"
            try:
                return float(text) if any(c in text for c in ".e") else int(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        return value

    @property
    def dtype(self) -> str:
        return self.type or (
            "bool" if self.table in BIT_TABLES or self.bit is not None else "uint16"
        )

    @property
    def size(self) -> int:
        """Number of registers (or bits, for coils and discrete inputs) the tag takes."""
        return 1 if self.dtype == "bool" else SIZES[self.dtype]

    @property
    def is_writable(self) -> bool:
        if self.writable is not None:
            return self.writable
        return self.behaviour == "setpoint"

    @property
    def span(self) -> range:
        return range(self.address, self.address + self.size)

    @model_validator(mode="after")
    def _consistent(self) -> Tag:
        dtype = self.dtype
        if self.table in BIT_TABLES:
            if dtype != "bool":
                raise ValueError(f"type: a {self.table} holds one bit, not {dtype}")
            if self.bit is not None:
                raise ValueError("bit: only registers (holding, input) have bit fields")
        elif dtype == "bool" and self.bit is None:
            raise ValueError("bit: a bool tag in a register is a bit field and needs bit: 0..15")
        elif self.bit is not None and dtype != "bool":
            raise ValueError(f"type: a bit field is bool, not {dtype}")
        if self.registers is not None and self.registers != self.size:
            raise ValueError(
                f"registers: {dtype} takes {self.size} register(s), not {self.registers}"
            )
        if self.address + self.size - 1 > 65535:
            raise ValueError(f"address: {dtype} at {self.address} runs past 65535")
        for key in ("initial", "min", "max"):
            value = getattr(self, key)
            if value is not None and not fits(value, dtype):
                low, high = LIMITS[dtype]
                raise ValueError(
                    f"{key}: {value!r} is out of range for {dtype} ({low:g}..{high:g})"
                )
        self._behaviour_fields(dtype)
        return self

    def _behaviour_fields(self, dtype: str) -> None:
        kind = self.behaviour
        if dtype == "bool" and kind not in ("constant", "setpoint", "toggle"):
            raise ValueError(
                f"behaviour: a bool tag can be constant, setpoint or toggle, not {kind}"
            )
        if kind == "toggle" and dtype != "bool":
            raise ValueError("behaviour: toggle is for bool tags")
        if kind in ("ramp", "sine", "random_walk"):
            for key in ("min", "max"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: behaviour {kind} needs min and max")
        if (kind == "replay") != (self.series is not None):
            raise ValueError(
                "series: behaviour replay needs series: [[seconds, value], ...]"
                if kind == "replay"
                else f"series: only behaviour replay plays a series, not {kind}"
            )
        if self.series is not None:
            self._series_fits(dtype)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"max: {self.max:g} is below min {self.min:g}")
        if (
            self.initial is not None
            and kind in ("random_walk", "setpoint", "counter")
            and not (
                (self.min is None or self.initial >= self.min)
                and (self.max is None or self.initial <= self.max)
            )
        ):
            raise ValueError(f"initial: {self.initial:g} is outside min..max")

    def _series_fits(self, dtype: str) -> None:
        assert self.series is not None
        if not self.series:
            raise ValueError("series: give at least one [seconds, value] pair")
        last = -1.0
        for i, (when, value) in enumerate(self.series):
            if when < 0 or when <= last:
                raise ValueError(f"series: [{i}] at {when:g}s: times must rise from 0")
            if not fits(value, dtype):
                raise ValueError(f"series: [{i}] {value!r} is out of range for {dtype}")
            last = when
        if self.period is not None and self.period <= last:
            raise ValueError(f"period: {self.period:g}s ends before the series ({last:g}s)")


class RegisterMap(_Model):
    """A PLC's tag table; units, tables and addresses as the PLC exports them."""

    name: str | None = None
    tick: float = Field(0.2, ge=0.01, le=10, description="seconds between behaviour updates")
    byte_order: Order = "big"
    word_order: Order = "big"
    identity: Identity = Field(
        default_factory=Identity, description="FC 43/14 and FC 17 (default: restoredrill's)"
    )
    gateway: bool = Field(False, description="a gateway: unknown unit ids get exception 0x0B")
    unknown_units: UnknownUnits | None = Field(
        None,
        description="requests for unit ids the map does not name: ignore (no reply, the "
        "default), close the connection, answer (as the first unit), or exception 0x0B "
        "(the default of a gateway)",
    )
    areas: dict[Table, Area] = Field(
        default_factory=dict, description="memory area per table, for every unit"
    )
    strict: bool = Field(False, description="only named addresses answer (no memory areas)")
    units: dict[int, UnitProfile] = Field(
        default_factory=dict, description="per unit id: areas, strict, identity"
    )
    timing: Timing = Field(default_factory=Timing)
    requests: Requests = Field(default_factory=Requests)
    tags: list[Tag] = Field(min_length=1)

    @field_validator("units")
    @classmethod
    def _unit_ids(cls, value: dict[int, UnitProfile]) -> dict[int, UnitProfile]:
        for unit in value:
            if not 0 <= unit <= 255:
                raise ValueError(f"unit id {unit} is not 0-255")
        return value

    @property
    def unit_ids(self) -> list[int]:
        """Unit ids the device answers: those of its tags and of ``units:``."""
        return sorted({t.unit for t in self.tags} | set(self.units))

    @property
    def unknown_unit_policy(self) -> str:
        return self.unknown_units or ("exception" if self.gateway else "ignore")

    def unit_strict(self, unit: int) -> bool:
        own = self.units.get(unit)
        return own.strict if own is not None and own.strict is not None else self.strict

    def unit_identity(self, unit: int) -> Identity:
        """The unit's identity: its own fields, then the map's, then restoredrill's."""
        merged = self.identity.over(default_identity(self.name))
        own = self.units.get(unit)
        if own is not None and own.identity is not None:
            merged = own.identity.over(merged)
        return Identity.model_validate(merged.model_dump())

    def area(self, unit: int, table: str) -> Area | None:
        """The unit's memory area of ``table``: given, or the default rule (module doc)."""
        own = self.units.get(unit)
        if own is not None and table in own.areas:
            return own.areas[table]
        if table in self.areas:
            return self.areas[table]
        spans = [t.span for t in self.tags if t.unit == unit and t.table == table]
        if not spans:
            return None
        return default_area(max(s.stop - 1 for s in spans))

    def tag(self, name: str) -> Tag:
        for t in self.tags:
            if t.name == name:
                return t
        raise KeyError(f"no tag {name!r} in the register map (known: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    def orders(self, tag: Tag) -> tuple[Order, Order]:
        return tag.byte_order or self.byte_order, tag.word_order or self.word_order

    def problems(self) -> list[tuple[tuple, str]]:
        """Cross-field problems as (location, message): duplicate names, overlapping tags,
        tags outside a given memory area, identities too long once merged."""
        return self._tag_problems() + self._area_problems() + self._identity_problems()

    def _tag_problems(self) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        names: dict[str, int] = {}
        owner: dict[tuple[int, str, int], tuple[int, int | None]] = {}
        for i, tag in enumerate(self.tags):
            if tag.name in names:
                message = f"duplicate tag name {tag.name!r} (first at tags[{names[tag.name]}])"
                out.append((("tags", i, "name"), message))
            names.setdefault(tag.name, i)
            for addr in tag.span:
                key = (tag.unit, tag.table, addr)
                prev = owner.get(key)
                if prev is not None:
                    j, bit = prev
                    if tag.bit is None or bit is None or bit == tag.bit:
                        other = self.tags[j]
                        what = f" bit {tag.bit}" if tag.bit is not None and bit == tag.bit else ""
                        message = (
                            f"{tag.table} {addr}{what} of unit {tag.unit} "
                            f"overlaps tag {other.name!r} ({other.table} {other.address})"
                        )
                        out.append((("tags", i, "address"), message))
                        break
                owner[key] = (i, tag.bit)
        return out

    def _area_problems(self) -> list[tuple[tuple, str]]:
        """A given area must hold every tag of its unit and table, whole."""
        out: list[tuple[tuple, str]] = []
        reported: set[tuple] = set()
        for tag in self.tags:
            own = self.units.get(tag.unit)
            if own is not None and tag.table in own.areas:
                loc: tuple = ("units", tag.unit, "areas", tag.table)
                area = own.areas[tag.table]
            elif tag.table in self.areas:
                loc, area = ("areas", tag.table), self.areas[tag.table]
            else:
                continue
            last = tag.address + tag.size - 1
            if area.holds(tag.address, last) or loc in reported:
                continue
            reported.add(loc)
            where = f"{tag.address}-{last}" if last > tag.address else str(tag.address)
            out.append(
                (
                    loc,
                    f"{area} leaves out tag {tag.name!r} ({tag.dtype} at {tag.table} {where}"
                    f" of unit {tag.unit}): the area must hold every tag of its table",
                )
            )
        return out

    def _identity_problems(self) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        for unit in self.unit_ids:
            try:
                self.unit_identity(unit)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                loc = ("units", unit, "identity") if unit in self.units else ("identity",)
                out.append((loc, message))
        return out


# --------------------------------------------------------------------------- loading


class RegisterMapError(ConfigFileError):
    """A register-map problem, named by file, line and field."""


CSV_COLUMNS = list(Tag.model_fields)


def load_register_map(path: str | Path) -> RegisterMap:
    """Load and validate a register map (``.yaml``/``.yml`` or ``.csv``)."""
    path = Path(path)
    text = read_text(path, RegisterMapError, "the register map")
    with gc_paused():  # tens of thousands of values and models that all stay alive
        if path.suffix.lower() == ".csv":
            data, locate = _read_csv(path, text)
        else:
            data, locate = read_yaml(path, text, RegisterMapError)
        return validate_register_map(data, path, locate)


def validate_register_map(data: Any, path: str | Path = "<map>", locate=None) -> RegisterMap:
    """Validate already-parsed data; ``locate(loc) -> line`` maps a field path to a line."""
    locate = locate or (lambda loc: 1)
    if not isinstance(data, dict):
        raise RegisterMapError(path, 1, "", "a register map is a mapping with a tags: list")
    try:
        regmap = RegisterMap.model_validate(data)
    except ValidationError as exc:
        errors = [_from_pydantic(path, locate, err) for err in exc.errors()]
        raise RegisterMapError(
            path, errors[0].line, errors[0].field, errors[0].message, errors
        ) from None
    problems = [
        RegisterMapError(path, locate(loc), pydantic_field(_keys_as_text(loc)), msg)
        for loc, msg in regmap.problems()
    ]
    if problems:
        first = problems[0]
        raise RegisterMapError(path, first.line, first.field, first.message, problems)
    return regmap


pydantic_field = field_path
"""``('tags', 3, 'type')`` -> ``tags[3].type``."""


def _from_pydantic(path: str | Path, locate, err: Mapping[str, Any]) -> RegisterMapError:
    loc = _keys_as_text(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":  # a mapping key pydantic refused: ``areas: {holdings: …}``
        loc, msg = loc[:-1], f"not a valid key: {msg}"
    field = pydantic_field(loc)
    model = _model_at(loc)
    if err["type"] == "extra_forbidden":
        msg = f"unknown key (known: {', '.join(_model_at(loc[:-1]).model_fields)})"
    elif ": " in msg and msg.split(": ", 1)[0] in model.model_fields:
        # a model-level message names its field: "bit: ..." -> point at that key
        key, msg = msg.split(": ", 1)
        loc, field = (*loc, key), f"{field}.{key}" if field else key
    elif err["type"] == "missing":
        msg = "required"
    return RegisterMapError(path, locate(loc), field or "(top)", msg)


def _keys_as_text(loc: Sequence[Any]) -> tuple:
    """Mapping keys (unit ids, object ids) as text, so ``units.1.areas`` is not ``units[1]``."""
    return tuple(
        str(part) if isinstance(part, int) and i and loc[i - 1] in ("units", "extended") else part
        for i, part in enumerate(loc)
    )


def _model_at(loc: Sequence[Any]) -> type[BaseModel]:
    """The model a location ends in (``('tags', 3)`` -> Tag, ``('units', 1, 'identity')``
    -> Identity); list indexes and mapping keys are passed over."""
    model: type[BaseModel] = RegisterMap
    for part in loc:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is not None:
            model = _inner_model(info.annotation) or model
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def read_yaml(path: Path, text: str, error: type[ConfigFileError] = ConfigFileError):
    """Parse YAML keeping lines: returns (plain data, ``locate(loc) -> line``).

    ``locate`` takes pydantic's locations, whose mapping keys may have become ints
    (``units: {1: ...}``): they are matched to the file's text keys.
    """
    doc = parse(text, path, error)
    if doc.data is None:
        raise error(path, 1, "", "the file is empty")

    def locate(loc: Sequence[Any]) -> int:
        node, parts = doc.data, []
        for part in loc:
            if isinstance(node, dict) and part not in node and str(part) in node:
                part = str(part)
            parts.append(part)
            node = (
                node.get(part)
                if isinstance(node, dict)
                else (
                    node[part]
                    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
                    else None
                )
            )
        return doc.line(parts)

    return doc.data, locate


def _read_csv(path: Path, text: str):
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    header: list[str] | None = None
    for lineno, row in _uncommented(text.splitlines()):
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if unknown:
                raise RegisterMapError(
                    path, lineno, unknown[0], f"unknown column (known: {', '.join(CSV_COLUMNS)})"
                )
            continue
        if len(row) > len(header):
            raise RegisterMapError(
                path, lineno, "", f"{len(row)} cells, the header has {len(header)}"
            )
        rows.append({k: v.strip() for k, v in zip(header, row, strict=False) if v.strip() != ""})
        lines.append(lineno)
    if header is None:
        raise RegisterMapError(path, 1, "", "the register map is empty (no header row)")

    def locate(loc: Sequence[Any]) -> int:
        if len(loc) >= 2 and loc[0] == "tags" and isinstance(loc[1], int) and loc[1] < len(lines):
            return lines[loc[1]]
        return 1

    return {"tags": rows}, locate


def _uncommented(lines: Iterable[str]):
    """Yield (line number, csv row) pairs, skipping ``#`` comment lines."""
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("#"):
            continue
        for row in csv.reader([line]):
            yield number, row


def decode_many(
    registers: Sequence[int],
    dtype: str,
    count: int,
    byte_order: Order = "big",
    word_order: Order = "big",
) -> list[int | float | bool]:
    """Decode ``count`` consecutive values of ``dtype`` (fast path for long blocks)."""
    if dtype == "bool":
        return [bool(r) for r in registers[:count]]
    size = SIZES[dtype]
    regs = list(registers[: count * size])
    if byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    if size == 2 and word_order == "little":
        regs[0::2], regs[1::2] = regs[1::2], regs[0::2]
    if dtype == "uint16":
        words: list[int | float | bool] = list(regs)
        return words
    raw = struct.pack(f">{len(regs)}H", *regs)
    return list(struct.unpack(f">{count}{_STRUCT[dtype]}", raw))


def reader(client: Any, table: str) -> Any:
    """The pymodbus client method that reads ``table`` (coil, discrete, holding, input)."""
    return {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }[table]
