"""What a twin may use: memory, CPU, processes, disk, capabilities, restore size.

A restored system is hostile until proven otherwise (backups carry ransomware), so
every twin runs bounded. The site sets defaults (``sandbox.limits``); a system may
override any of them (``run.limits``); the limits a twin ran with are recorded with
its result.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from restoredrill.sizes import Size

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
)
"""Docker's default set without NET_RAW (raw packets, ARP spoofing), MKNOD, AUDIT_WRITE
and SETFCAP: what ordinary services need to start as root and drop privileges."""


class Limits(BaseModel):
    """Bounds of one twin; every field left out keeps the site's (or the built-in) default."""

    model_config = ConfigDict(extra="forbid")

    memory: Size | None = Field(None, description="memory (no swap), e.g. 1g; default 1g")
    cpus: float | None = Field(None, gt=0, le=256, description="CPUs, e.g. 1.5; default 1")
    pids: int | None = Field(None, ge=16, le=4_194_304, description="processes; default 512")
    disk: Size | None = Field(
        None, description="what the twin may write (its layer and restored data); default 10g"
    )
    restore: Size | None = Field(
        None,
        description="most bytes a restore may unpack; default: the backup's stated size "
        "(with a margin), at most 16g",
    )
    cap_add: list[str] | None = Field(
        None, description="capabilities added to the default set, e.g. [NET_RAW]"
    )
    cap_drop: list[str] | None = Field(
        None, description="capabilities removed from the default set"
    )


DEFAULTS = Limits(
    memory="1g", cpus=1.0, pids=512, disk="10g", restore="16g", cap_add=[], cap_drop=[]
)
"""The built-in defaults (the site's ``sandbox.limits`` override them)."""


def effective(*layers: Limits | None) -> Limits:
    """Built-in defaults overlaid with each layer's explicitly set fields, in order."""
    values: dict[str, Any] = DEFAULTS.model_dump()
    for layer in layers:
        if layer is not None:
            values.update(layer.model_dump(exclude_unset=True, exclude_none=True))
    return Limits.model_validate(values)


def capabilities(limits: Limits) -> list[str]:
    """The capabilities a twin gets: the default set, plus ``cap_add``, minus ``cap_drop``."""
    add, drop = _names(limits.cap_add), _names(limits.cap_drop)
    return sorted((set(DEFAULT_CAPABILITIES) | add) - drop)


def _names(names: list[str] | None) -> set[str]:
    return {n.upper().removeprefix("CAP_") for n in names or []}
