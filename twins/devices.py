"""Emulated field devices in an inventory (``devices:``), and how each starts in a container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

from restoredrill.errors import InputError

from .opcua_identity import OpcuaIdentity, identity_args

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
PYTHON = "python3"
PASSWORD_ENV = "RESTOREDRILL_OPCUA_PASSWORD"
"""The variable the SCADA twin reads its password from inside a container."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlcDevice(_Model):
    """A PLC emulated from its register map, at its production address."""

    kind: Literal["plc"] = "plc"
    name: str = Field(pattern=NAME)
    address: IPvAnyAddress = Field(description="production address, taken over in the sandbox")
    port: int = Field(502, ge=1, le=65535)
    map: Path = Field(description="register map, YAML or CSV (relative to the site file)")
    tick: float | None = Field(None, ge=0.01, le=10, description="seconds between value updates")


class Binding(_Model):
    """A SCADA variable that follows a PLC tag (and writes back to it, if writable)."""

    node: str = Field(description="NodeId (ns=2;s=...) or browse path (Objects/2:Line1/2:Level)")
    plc: str = Field(pattern=NAME, description="name of a plc device")
    tag: str = Field(description="tag name in that PLC's register map")


class ScadaDevice(_Model):
    """An OPC UA server whose address space comes from NodeSet2 XML and/or a YAML node list."""

    kind: Literal["scada"] = "scada"
    name: str = Field(pattern=NAME)
    address: IPvAnyAddress
    port: int = Field(4840, ge=1, le=65535)
    nodesets: list[Path] = Field(
        default_factory=list, description="NodeSet2 XML, dependencies first"
    )
    nodes: Path | None = Field(None, description="YAML node list (folders, variables)")
    security: Literal["none", "basic256sha256"] = "none"
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    bindings: list[Binding] = Field(default_factory=list)
    plcs: list[str] = Field(default_factory=list, description="plc devices the YAML nodes bind to")
    identity: OpcuaIdentity | None = Field(
        None,
        description="BuildInfo, application name/URI, certificate subject (default: restoredrill's)",
    )

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _consistent(self) -> ScadaDevice:
        if not self.nodesets and self.nodes is None:
            raise ValueError("give nodesets: and/or nodes:")
        if self.security == "basic256sha256" and not (self.username and self.password_env):
            raise ValueError("security basic256sha256 needs username and password_env")
        return self

    def plc_names(self) -> list[str]:
        return sorted({b.plc for b in self.bindings} | set(self.plcs))


DeviceSpec = Annotated[PlcDevice | ScadaDevice, Field(discriminator="kind")]


def parse_bind(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT`` -> (host, port)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    return host or "0.0.0.0", port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise InputError(f"{whole!r}: the port must be a number 0..65535 (use HOST:PORT)")
    return int(text)


def device_files(
    spec: PlcDevice | ScadaDevice, devices: Mapping[str, PlcDevice | ScadaDevice] = {}
) -> dict[str, Path]:
    """Host files the device needs, by their name inside the mount directory."""
    if isinstance(spec, PlcDevice):
        return {f"map{spec.map.suffix}": spec.map}
    files = {f"nodeset{i}.xml": p for i, p in enumerate(spec.nodesets)}
    if spec.nodes is not None:
        files["nodes.yaml"] = spec.nodes
    for name in spec.plc_names():
        plc = _plc(devices, name, spec)
        files[f"plc-{name}{plc.map.suffix}"] = plc.map
    return files


def device_command(
    spec: PlcDevice | ScadaDevice,
    mount_dir: str = "/dev-config",
    devices: Mapping[str, PlcDevice | ScadaDevice] = {},
) -> list[str]:
    """The argv that starts the emulator inside its container (files as in ``device_files``).

    ``devices`` (name -> spec) is needed for a SCADA device bound to PLC devices.
    """
    mount = PurePosixPath(mount_dir)
    if isinstance(spec, PlcDevice):
        argv = [
            PYTHON,
            "-m",
            "restoredrill.twins.plc",
            str(mount / f"map{spec.map.suffix}"),
            "--bind",
            f"{_host(spec.address)}:{spec.port}",
        ]
        if spec.tick:
            argv += ["--tick", str(spec.tick)]
        return argv
    argv = [PYTHON, "-m", "restoredrill.twins.scada"]
    argv += [
        str(mount / name) for name in device_files(spec, devices) if not name.startswith("plc-")
    ]
    argv += [
        "--bind",
        f"{_host(spec.address)}:{spec.port}",
        "--security",
        spec.security,
        "--cert-dir",
        str(mount / "pki"),
        "--name",
        spec.name,
    ]
    if spec.security != "none":
        argv += ["--username", spec.username or "", "--password-env", PASSWORD_ENV]
    for name in spec.plc_names():
        plc = _plc(devices, name, spec)
        argv += [
            "--plc",
            f"{name}={plc.address}:{plc.port}@{mount / f'plc-{name}{plc.map.suffix}'}",
        ]
    for b in spec.bindings:
        argv += ["--bind-node", f"{b.node}={b.plc}/{b.tag}"]
    if spec.identity is not None:
        argv += identity_args(spec.identity)
    return argv


def device_env(
    spec: PlcDevice | ScadaDevice, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Environment for the container (the SCADA password, taken from the host's ``password_env``)."""
    if isinstance(spec, ScadaDevice) and spec.password_env:
        if spec.password_env not in environ:
            raise InputError(
                f"device {spec.name}: environment variable {spec.password_env} is not set"
            )
        return {PASSWORD_ENV: environ[spec.password_env]}
    return {}


def _plc(devices: Mapping[str, PlcDevice | ScadaDevice], name: str, spec: ScadaDevice) -> PlcDevice:
    plc = devices.get(name)
    if not isinstance(plc, PlcDevice):
        raise InputError(f"device {spec.name}: binds to {name!r}, which is not a plc device")
    return plc


def _host(address: object) -> str:
    """The in-container bind address: every interface (the container holds the production IP)."""
    return "[::]" if ":" in str(address) else "0.0.0.0"
