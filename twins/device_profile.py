"""How a Modbus device presents itself, beyond its tags: identity, unit ids, memory areas,
response timing and request limits (the ``identity:``, ``units:``, ``areas:``, ``timing:``
and ``requests:`` keys of a register map).

A real PLC reports its vendor and model (FC 43/14 Read Device Identification, FC 17
Report Server ID), answers only its own unit ids, and has contiguous memory areas: a
holding-register area of N words where every address reads (0 if the program never set
it) and accepts writes, and an address outside it is exception 0x02. The defaults name
restoredrill's twin honestly; a plant overrides them with its device's own strings.

Default memory area of a table (``default_area``): from 0 to the highest address the map
names in that table, rounded up to the next power of two minus one, at least 0-15, at
most 0-65535 (memory in PLCs comes in binary sizes: a map naming holding 0-2 and 10 gets
holding 0-15; one naming 0-9999 gets 0-16383). A table the map names no address of has
no area (every address is exception 0x02) unless ``areas:`` gives one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restoredrill import __version__
from restoredrill.durations import Duration
from restoredrill.errors import InputError

TABLES = ("coil", "discrete", "holding", "input")
MAX_PDU = 253
"""The largest Modbus PDU (function code and data)."""
MAX_OBJECT = MAX_PDU - 7 - 2
"""The longest device-identification object: it must fit one FC 43/14 response alone."""
MAX_REPORT = MAX_PDU - 2
"""FC 17's byte count: server id, run indicator and additional data together."""
SPEC_LIMITS = {"read_bits": 2000, "read_registers": 125, "write_bits": 1968, "write_registers": 123}
"""The most values one request may carry (Modbus Application Protocol V1.1b3)."""
OBJECT_IDS = {
    "vendor": 0x00,
    "product_code": 0x01,
    "revision": 0x02,
    "vendor_url": 0x03,
    "product_name": 0x04,
    "model_name": 0x05,
    "user_application_name": 0x06,
}
"""FC 43/14 object ids: 0-2 basic (mandatory), 3-6 regular, 0x80-0xFF extended."""
UnknownUnits = Literal["ignore", "close", "answer", "exception"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _object_bytes(text: str, field: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_OBJECT:
        raise InputError(
            f"{field}: {len(raw)} bytes; a device identification object holds at most "
            f"{MAX_OBJECT} (one FC 43/14 response)"
        )
    return raw


class Identity(_Model):
    """FC 43/14 objects and FC 17's report; unset fields fall back (unit -> map -> default)."""

    vendor: str | None = Field(None, description="VendorName (object 0x00)")
    product_code: str | None = Field(None, description="ProductCode (0x01)")
    revision: str | None = Field(None, description="MajorMinorRevision (0x02)")
    vendor_url: str | None = Field(None, description="VendorUrl (0x03)")
    product_name: str | None = Field(None, description="ProductName (0x04)")
    model_name: str | None = Field(None, description="ModelName (0x05)")
    user_application_name: str | None = Field(None, description="UserApplicationName (0x06)")
    extended: dict[int, str] = Field(
        default_factory=dict, description="private objects 0x80-0xFF: {128: text}"
    )
    server_id: int | str | None = Field(
        None,
        description="FC 17 server id: a byte (0xFA) or hex bytes ('FA 01'); default the unit id",
    )
    run_indicator: bool | None = Field(None, description="FC 17 run indicator: on (0xFF) or off")
    additional_data: str | None = Field(
        None, description="FC 17 additional data (default: the product name)"
    )

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _fits(self) -> Identity:
        for name in OBJECT_IDS:
            value = getattr(self, name)
            if value is not None:
                _object_bytes(value, name)
        for oid, value in self.extended.items():
            if not 0x80 <= oid <= 0xFF:
                raise ValueError(f"extended: object id {oid} is not a private id (128-255)")
            _object_bytes(value, f"extended.{oid}")
        if self.server_id is not None:
            server_id_bytes(self.server_id)
        room = MAX_REPORT - 1 - len(server_id_bytes(self.server_id or 0))
        if self.additional_data is not None and len(self.additional_data.encode()) > room:
            raise ValueError(
                f"additional_data: {len(self.additional_data.encode())} bytes; with the server "
                f"id and run indicator, an FC 17 response holds at most {room}"
            )
        return self

    def over(self, base: Identity) -> Identity:
        """This identity's fields, falling back to ``base``'s where unset."""
        mine = self.model_dump(exclude_unset=True, exclude_defaults=True)
        return base.model_copy(update={**mine, "extended": {**base.extended, **self.extended}})


def server_id_bytes(value: int | str) -> bytes:
    """FC 17's server id: one byte from an int, or bytes from hex text (``"FA 01"``)."""
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise InputError(f"server_id: {value} is not a byte (0-255); give hex text for more")
        return bytes([value])
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InputError(f"server_id: {value!r} is not hex bytes (e.g. 'FA 01')") from None
    if not 1 <= len(raw) <= MAX_REPORT - 1:
        raise InputError(f"server_id: {len(raw)} bytes (1 to {MAX_REPORT - 1})")
    return raw


def default_identity(map_name: str | None) -> Identity:
    """restoredrill's honest identity, naming the map it emulates."""
    return Identity(
        vendor="restoredrill",
        product_code="PLC-TWIN",
        revision=__version__,
        vendor_url="",
        product_name="restoredrill PLC twin",
        model_name="emulated from a register map",
        user_application_name=map_name or "",
        run_indicator=True,
    )


class Area(_Model):
    """A table's memory area: addresses ``first``..``last``."""

    first: int = Field(ge=0, le=65535)
    last: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            first, sep, last = value.replace(" ", "").partition("-")
            if not (sep and first.isdigit() and last.isdigit()):
                raise ValueError(f"{value!r} is not an address range (write 0-9999)")
            return {"first": int(first), "last": int(last)}
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"first": value[0], "last": value[1]}
        if isinstance(value, int | float):
            raise ValueError(f"{value!r} is not an address range (write 0-{value})")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Area:
        if self.last < self.first:
            raise ValueError(f"{self.first}-{self.last}: the last address is below the first")
        return self

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def holds(self, first: int, last: int) -> bool:
        return self.first <= first and last <= self.last


def default_area(highest: int) -> Area:
    """0 to the next power of two above ``highest``, minus one (at least 0-15)."""
    size = max(16, 1 << highest.bit_length())
    return Area(first=0, last=min(65535, size - 1))


class UnitProfile(_Model):
    """One unit id's own settings (a gateway's devices differ)."""

    areas: dict[Literal["coil", "discrete", "holding", "input"], Area] = Field(
        default_factory=dict, description="memory area per table, e.g. {holding: 0-9999}"
    )
    strict: bool | None = Field(
        None, description="only named addresses answer (reads elsewhere: exception 0x02)"
    )
    identity: Identity | None = None


class Timing(_Model):
    """How long the device takes to answer: ``delay`` plus a uniform ``jitter`` (0..jitter)."""

    delay: Duration = timedelta(0)
    jitter: Duration = timedelta(0)

    @field_validator("delay", "jitter")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if value > timedelta(seconds=10):
            raise ValueError("at most 10s (a device that slow is not answering)")
        return value


class Requests(_Model):
    """The most values one request may carry; larger ones get exception 0x03 (or nothing)."""

    read_bits: int = Field(SPEC_LIMITS["read_bits"], ge=1, le=SPEC_LIMITS["read_bits"])
    read_registers: int = Field(
        SPEC_LIMITS["read_registers"], ge=1, le=SPEC_LIMITS["read_registers"]
    )
    write_bits: int = Field(SPEC_LIMITS["write_bits"], ge=1, le=SPEC_LIMITS["write_bits"])
    write_registers: int = Field(
        SPEC_LIMITS["write_registers"], ge=1, le=SPEC_LIMITS["write_registers"]
    )
    too_large: Literal["exception", "ignore"] = Field(
        "exception", description="exception 0x03 (ILLEGAL DATA VALUE, the spec) or no reply"
    )
