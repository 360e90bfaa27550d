"""How a restored system runs in its twin, and how we know it is ready."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

from restoredrill.durations import Duration

from .files import FileSpec
from .limits import Limits
from .vm_readiness import ConsoleProbe
from .vm_spec import VMSpec


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TcpProbe(_Spec):
    kind: Literal["tcp"] = "tcp"
    port: int = Field(ge=1, le=65535)
    timeout: Duration = Field("60s", validate_default=True, description="give up after this long")


class HttpProbe(_Spec):
    kind: Literal["http"] = "http"
    port: int = Field(ge=1, le=65535)
    path: str = "/"
    status: int = Field(200, ge=100, le=599)
    timeout: Duration = Field("60s", validate_default=True)


class LogProbe(_Spec):
    kind: Literal["log"] = "log"
    contains: str = Field(description="text that appears in the container's output when ready")
    timeout: Duration = Field("60s", validate_default=True)


class CommandProbe(_Spec):
    kind: Literal["command"] = "command"
    command: list[str] | str = Field(description="run inside the twin; ready when it exits 0")
    timeout: Duration = Field("60s", validate_default=True)


Probe = Annotated[
    TcpProbe | HttpProbe | LogProbe | CommandProbe | ConsoleProbe, Field(discriminator="kind")
]

CONTAINER_FIELDS = (
    "command",
    "entrypoint",
    "env",
    "workdir",
    "user",
    "volumes",
    "hostname",
    "image",
    "data_path",
    "files",
)
"""Run fields of container twins only: a VM boots its restored disk as it is."""


class RunSpec(_Spec):
    """How the restored system runs: what the production host ran."""

    command: list[str] | str | None = Field(
        None, description="command to run (required for a root-filesystem restore)"
    )
    entrypoint: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    ports: list[int] = Field(
        default_factory=list, description="ports the system serves (documentation and tcp checks)"
    )
    volumes: dict[str, str] = Field(
        default_factory=dict,
        description="container path -> host path (relative to the site file) or named volume",
    )
    address: IPvAnyAddress | None = Field(
        None, description="the system's production address, taken over inside the sandbox"
    )
    hostname: str | None = None
    image: str | None = Field(
        None,
        description="image to run when the backup restores only data (e.g. a restic snapshot)",
    )
    data_path: str | None = Field(
        None, description="where a restored data tree is mounted inside the twin"
    )
    limits: Limits | None = Field(
        None, description="this system's bounds; what it leaves out keeps sandbox.limits"
    )
    files: list[FileSpec] = Field(
        default_factory=list,
        description="files or folders of the site laid into the twin before it starts "
        "(configuration kept apart from the backup)",
    )
    vm: VMSpec | None = Field(
        None,
        description="the virtual hardware a restored disk image (backup.kind: disk_image) "
        "boots on; defaults suit the image of a physical machine",
    )

    def container_fields(self) -> list[str]:
        """The container-only fields this spec sets (none may be set for a VM)."""
        return [f for f in CONTAINER_FIELDS if f in self.model_fields_set and getattr(self, f)]
