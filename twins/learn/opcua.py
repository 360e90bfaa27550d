"""``restoredrill learn opcua``: a live OPC UA server's address space, browsed read-only and
written as NodeSet2 XML (with current values) that the SCADA twin loads.

What is exported: every node of the server's own namespaces (index 1 and up) reachable
from Root by forward references, and the types they use from namespaces other than the
standard one; the standard namespace (0) is the twin's own already. Browsing is batched
(one Browse request per level of the tree, continuation points followed), the export is
asyncua's XmlExporter. Nothing is written to the server: only Browse, Read and the
session services are used. Security and credentials as for the opcua check.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.xmlexporter import XmlExporter

from ..opcua_client import browse_forward, secure_client
from . import LearnError

MAX_NODES = 200_000
"""A server with more nodes than this is not learned (it is not a plant's SCADA server)."""
SKIP = {ua.NodeId(ua.ObjectIds.Server)}
"""The standard Server object: the twin has its own."""
BATCH = 100
"""Nodes per Browse request (small answers: a loaded server answers each in time)."""


@dataclass
class LearnedModel:
    """An exported address space."""

    url: str
    exporter: XmlExporter
    nodes: int
    namespaces: list[str] = field(default_factory=list)
    variables: int = 0

    def summary(self) -> str:
        return (
            f"{self.nodes} nodes ({self.variables} variables) of {self.url}, namespaces "
            f"{', '.join(self.namespaces)}"
        )

    def write(self, path: Path) -> None:
        tree = self.exporter.etree
        tree.write(path, encoding="utf-8", xml_declaration=True)


def learn_server(
    url: str,
    *,
    security: str = "none",
    username: str | None = None,
    password: str | None = None,
    cert_dir: str | Path | None = None,
    timeout: float = 30.0,
) -> LearnedModel:
    """Browse ``url`` read-only and build its NodeSet2 export (see the module docstring)."""
    if not url.startswith("opc.tcp://"):
        raise LearnError(f"{url!r} is not an OPC UA address (write opc.tcp://HOST:PORT)")
    if security not in ("none", "basic256sha256"):
        raise LearnError(f"--security {security!r}: none or basic256sha256")
    return asyncio.run(_learn(url, security, username, password, cert_dir, timeout))


async def _learn(
    url: str,
    security: str,
    username: str | None,
    password: str | None,
    cert_dir: str | Path | None,
    timeout: float,
) -> LearnedModel:
    client = Client(url, timeout=timeout)
    if username:
        client.set_user(username)
        client.set_password(password or "")
    await _connect(client, url, security, cert_dir, timeout)
    try:
        nodes, variables = await browse_all(client)
        if not nodes:
            raise LearnError(f"{url}: the server has no nodes outside the standard namespace")
        exporter = XmlExporter(client, export_values=True)
        await exporter.build_etree([client.get_node(n) for n in nodes])
        uris = await client.get_namespace_array()
        used = sorted({n.NamespaceIndex for n in nodes})
        return LearnedModel(url, exporter, len(nodes), [uris[i] for i in used], variables)
    except (TimeoutError, ConnectionError, ua.UaError) as exc:
        raise LearnError(
            f"{url}: the session ended while browsing ({type(exc).__name__}: {exc}); "
            "a busy server may need a longer --timeout"
        ) from None
    finally:
        with contextlib.suppress(Exception):  # a dead peer may fail the goodbye
            await asyncio.wait_for(client.disconnect(), timeout)


async def _connect(
    client: Client, url: str, security: str, cert_dir: str | Path | None, timeout: float
) -> None:
    try:
        if security == "basic256sha256":
            await secure_client(client, "learn", cert_dir)
        await asyncio.wait_for(client.connect(), timeout)
    except TimeoutError:
        raise LearnError(f"{url}: no OPC UA session within {timeout:g}s ({security})") from None
    except OSError as exc:
        raise LearnError(f"{url} is unreachable ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - the cause, in words
        with contextlib.suppress(Exception):
            await client.disconnect()
        raise LearnError(f"{url}: {_why(exc, security)}") from None


def _why(exc: BaseException, security: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "No matching endpoints" in text:
        return (
            f"the server offers no endpoint with security {security}: it is secured "
            "(give --security basic256sha256, and --username if it wants a user)"
        )
    if any(code in text for code in ("IdentityToken", "UserAccessDenied", "BadUser")):
        return (
            "the server refused the session's identity: it wants a user name and password "
            "(give --username and the password in --password-env's variable)"
        )
    return text


# --------------------------------------------------------------------------- browsing


async def browse_all(client: Client) -> tuple[list[ua.NodeId], int]:
    """Node ids of namespaces 1+ reachable from Root, parents first; and how many variables."""
    seen: set[ua.NodeId] = {ua.NodeId(ua.ObjectIds.RootFolder)}
    found: list[ua.NodeId] = []
    variables = 0
    level = [ua.NodeId(ua.ObjectIds.RootFolder)]
    while level:
        following: list[ua.NodeId] = []
        for start in range(0, len(level), BATCH):
            for _source, ref in await _browse(client, level[start : start + BATCH]):
                target = ref.NodeId
                if target in seen or target in SKIP:
                    continue
                if target.NamespaceIndex == 0 and ref.ReferenceTypeId not in _STANDARD_WALK:
                    continue
                seen.add(target)
                following.append(target)
                if target.NamespaceIndex != 0:
                    found.append(target)
                    variables += ref.NodeClass == ua.NodeClass.Variable
        if len(seen) > MAX_NODES:
            raise LearnError(f"more than {MAX_NODES:,} nodes: not learned")
        level = following
    return found, variables


_STANDARD_WALK = {ua.NodeId(ua.ObjectIds.Organizes), ua.NodeId(ua.ObjectIds.HasSubtype)}
"""Into the standard namespace only along folders and type trees (where other models hang)."""


async def _browse(
    client: Client, nodes: list[ua.NodeId]
) -> list[tuple[ua.NodeId, ua.ReferenceDescription]]:
    """Forward references of ``nodes``, every kind, in one Browse (and BrowseNext) call."""
    return await browse_forward(client, [(n, n) for n in nodes])
