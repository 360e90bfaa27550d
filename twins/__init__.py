"""Sandboxes: twin backends, backup sources and field-device emulators (no Prefect here).

The names below are the package's public API; each is imported when first used, so
``import restoredrill.twins`` is cheap and a PLC twin's container needs no Docker SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from restoredrill.lazy import lazy

if TYPE_CHECKING:
    from .base import ExecOutput, Restored, Sandbox, Twin, TwinError, backend
    from .devices import DeviceSpec, PlcDevice, ScadaDevice
    from .docker import DockerBackend
    from .images import ImageError, build_image, ensure_base_image, import_rootfs
    from .limits import Limits
    from .nodelist import NodeList, ScadaConfigError, load_node_list
    from .plc import PlcError, PlcTwin
    from .readiness import wait_ready
    from .registers import RegisterMap, RegisterMapError, load_register_map
    from .running import InThread
    from .scada import ScadaError, ScadaTwin
    from .sources import BackupError, BackupRef, RestoreContext, SourceSpec
    from .spec import CommandProbe, HttpProbe, LogProbe, RunSpec, TcpProbe

__all__ = [
    "BackupError",
    "BackupRef",
    "CommandProbe",
    "DeviceSpec",
    "DockerBackend",
    "ExecOutput",
    "HttpProbe",
    "ImageError",
    "InThread",
    "Limits",
    "LogProbe",
    "NodeList",
    "PlcDevice",
    "PlcError",
    "PlcTwin",
    "RegisterMap",
    "RegisterMapError",
    "RestoreContext",
    "Restored",
    "RunSpec",
    "Sandbox",
    "ScadaConfigError",
    "ScadaDevice",
    "ScadaError",
    "ScadaTwin",
    "SourceSpec",
    "TcpProbe",
    "Twin",
    "TwinError",
    "backend",
    "build_image",
    "ensure_base_image",
    "import_rootfs",
    "load_node_list",
    "load_register_map",
    "wait_ready",
]

__getattr__, __dir__ = lazy(
    __name__,
    {
        "backend": ".base",
        "Sandbox": ".base",
        "Twin": ".base",
        "TwinError": ".base",
        "Restored": ".base",
        "ExecOutput": ".base",
        "DockerBackend": ".docker",
        "RunSpec": ".spec",
        "TcpProbe": ".spec",
        "HttpProbe": ".spec",
        "LogProbe": ".spec",
        "CommandProbe": ".spec",
        "Limits": ".limits",
        "wait_ready": ".readiness",
        "ensure_base_image": ".images",
        "build_image": ".images",
        "import_rootfs": ".images",
        "ImageError": ".images",
        "SourceSpec": ".sources",
        "BackupError": ".sources",
        "BackupRef": ".sources",
        "RestoreContext": ".sources",
        "DeviceSpec": ".devices",
        "PlcDevice": ".devices",
        "ScadaDevice": ".devices",
        "PlcTwin": ".plc",
        "PlcError": ".plc",
        "ScadaTwin": ".scada",
        "ScadaError": ".scada",
        "RegisterMap": ".registers",
        "RegisterMapError": ".registers",
        "load_register_map": ".registers",
        "NodeList": ".nodelist",
        "ScadaConfigError": ".nodelist",
        "load_node_list": ".nodelist",
        "InThread": ".running",
    },
)
