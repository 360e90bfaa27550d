"""SCADA twin: an OPC UA server (asyncua) from NodeSet2 XML and/or a YAML node list.

Variables may be bound to PLC twin tags: they follow the PLC (polled over Modbus) and a
client's write to a bound writable variable is written to the PLC's register.

Run it: ``python -m restoredrill.twins.scada NODESET_OR_YAML... --bind 0.0.0.0:4840``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ValidationError,
    model_validator,
)
from pydantic import (
    Tag as UnionTag,
)
from pymodbus.client import AsyncModbusTcpClient

from restoredrill.configfile import read_text

from .devices import PASSWORD_ENV, Binding, parse_bind
from .opcua_client import coerce, ensure_certificate, resolve_node
from .plc import PlcError, serve_until_signalled
from .registers import (
    BIT_TABLES,
    ConfigFileError,
    RegisterMap,
    Tag,
    decode,
    encode,
    load_register_map,
    pydantic_field,
    read_yaml,
    reader,
)

log = logging.getLogger(__name__)
UA_NS = "http://opcfoundation.org/UA/"
NODESET_NS = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"
Security = Literal["none", "basic256sha256"]

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


class ScadaError(RuntimeError):
    """The SCADA twin could not start or serve."""


# --------------------------------------------------------------------------- YAML node list


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariableNode(_Model):
    variable: str = Field(min_length=1, description="browse name")
    type: str = "Double"
    value: Any = None
    writable: bool = False
    bind: str | Binding | None = Field(None, description="PLC/TAG, or {plc:, tag:}")
    description: str = ""

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


# --------------------------------------------------------------------------- NodeSet2 order


def nodeset_order(paths: Sequence[str | Path]) -> list[Path]:
    """NodeSet2 files sorted so each comes after the models it requires; checks they parse."""
    provides: dict[str, Path] = {}
    requires: dict[Path, set[str]] = {}
    uses: dict[Path, set[str]] = {}
    for p in map(Path, paths):
        try:
            root = ET.parse(p).getroot()
        except ET.ParseError as exc:
            line = exc.position[0] if exc.position else 1
            raise ScadaConfigError(p, line, "", f"malformed NodeSet XML: {exc.msg}") from None
        except OSError as exc:
            raise ScadaConfigError(p, 0, "", f"cannot read: {exc.strerror}") from None
        if not root.tag.endswith("UANodeSet"):
            raise ScadaConfigError(p, 1, "", f"not a NodeSet2 file (root element {root.tag!r})")
        requires[p] = set()
        for model in root.iter(f"{NODESET_NS}Model"):
            provides[model.get("ModelUri", "")] = p
            for req in model.iter(f"{NODESET_NS}RequiredModel"):
                requires[p].add(req.get("ModelUri", ""))
        uses[p] = {(u.text or "").strip() for u in root.iter(f"{NODESET_NS}Uri")}
    for p in requires:  # namespaces a file uses and another file provides: load that first
        requires[p] |= {u for u in uses[p] if provides.get(u) not in (None, p)}
    ordered: list[Path] = []
    pending = list(requires)
    while pending:
        ready = [
            p
            for p in pending
            if all(provides.get(u) in (*ordered, p) for u in requires[p] - {UA_NS})
        ]
        if not ready:
            p = pending[0]
            missing = sorted(u for u in requires[p] - {UA_NS} if u not in provides)
            raise ScadaConfigError(
                p,
                1,
                "",
                f"requires the model(s) {', '.join(missing) or '(a cycle)'}: add their NodeSet",
            )
        ordered += ready
        pending = [p for p in pending if p not in ready]
    return ordered


# --------------------------------------------------------------------------- nodes


@dataclass
class PlcLink:
    """Where a bound PLC twin listens, and its register map (to find and decode tags)."""

    host: str
    port: int
    map: RegisterMap

    @classmethod
    def parse(cls, text: str) -> tuple[str, PlcLink]:
        """``NAME=HOST:PORT@MAP`` as given on the command line."""
        name, _, rest = text.partition("=")
        where, _, map_path = rest.partition("@")
        if not (name and where and map_path):
            raise ValueError(f"--plc {text!r}: write NAME=HOST:PORT@MAP")
        host, port = parse_bind(where, 502)
        return name, cls(host, port, load_register_map(map_path))


@dataclass
class _Bound:
    node: Node
    vtype: ua.VariantType
    plc: str
    tag: Tag
    last: Any = None
    status_ok: bool = True


@dataclass
class _PlcPoller:
    link: PlcLink
    bound: list[_Bound] = field(default_factory=list)
    client: AsyncModbusTcpClient | None = None


class PasswordUserManager(UserManager):
    """Accepts exactly one username/password; everything else is rejected."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or password is None:
            return None
        ok_user = hmac.compare_digest(username.encode(), self.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
        return User(role=UserRole.User, name=username) if ok_user and ok_pass else None


class ScadaTwin:
    """An OPC UA server twin; see the module docstring."""

    def __init__(
        self,
        sources: Sequence[str | Path] = (),
        *,
        name: str = "restoredrill-scada",
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        cert_dir: str | Path | None = None,
        plcs: Mapping[str, PlcLink] | None = None,
        bindings: Sequence[Binding] = (),
        poll: float = 0.2,
        modbus_timeout: float = 2.0,
    ) -> None:
        if security != "none" and not (username and password and cert_dir):
            raise ScadaError("security basic256sha256 needs username, password and cert_dir")
        if bool(username) != bool(password):
            raise ScadaError("give both username and password, or neither")
        self.name, self.security = name, security
        self.username, self.password, self.cert_dir = username, password, cert_dir
        self.plcs = dict(plcs or {})
        self.bindings = list(bindings)
        self.poll, self.modbus_timeout = poll, modbus_timeout
        self.xml = nodeset_order([p for p in sources if Path(p).suffix.lower() == ".xml"])
        self.lists = [
            (Path(p), load_node_list(p)) for p in sources if Path(p).suffix.lower() != ".xml"
        ]
        self._check_binding_targets()
        self.server: Server | None = None
        self.host: str | None = None
        self.port: int | None = None
        self._pollers: dict[str, _PlcPoller] = {}
        self._bound: dict[ua.NodeId, _Bound] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"opc.tcp://{host}:{self.port}/"

    def _check_binding_targets(self) -> None:
        wanted = [(f"--bind-node {b.node}", b.plc, b.tag) for b in self.bindings]
        for path, nl in self.lists:
            for _node_path, var in _variables(nl.nodes):
                if var.bind is not None:
                    b = _binding("", var.bind)
                    wanted.append((f"{path}: {var.variable}", b.plc, b.tag))
        for where, plc, tag in wanted:
            if plc not in self.plcs:
                raise ScadaError(
                    f"{where}: binds to PLC {plc!r}, not given (known: {', '.join(self.plcs) or 'none'})"
                )
            try:
                self.plcs[plc].map.tag(tag)
            except KeyError as exc:
                raise ScadaError(f"{where}: PLC {plc!r}: {exc.args[0]}") from None

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 4840) -> None:
        if port:
            _check_port_free(host, port)
        users = PasswordUserManager(self.username, self.password) if self.username else None
        server = Server(user_manager=users)
        await server.init()
        server.set_server_name(self.name)
        server.set_endpoint(f"opc.tcp://{'[' + host + ']' if ':' in host else host}:{port}/")
        app_uri = f"urn:restoredrill:{self.name}"
        await server.set_application_uri(app_uri)
        if self.security == "basic256sha256":
            cert, key = await ensure_certificate(self.cert_dir, self.name, app_uri, server=True)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.username:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        for path in self.xml:
            try:
                await server.import_xml(str(path), strict_mode=False)
            except Exception as exc:  # noqa: BLE001 - report which file, whatever broke
                raise ScadaConfigError(
                    path, 1, "", f"NodeSet import failed: {type(exc).__name__}: {exc}"
                ) from None
        for _path, nl in self.lists:
            await self._build(server, nl)
        for b in self.bindings:
            try:
                node = await resolve_node(server, b.node)
            except KeyError as exc:
                raise ScadaError(f"binding {b.node} -> {b.plc}/{b.tag}: {exc.args[0]}") from None
            await self._bind(node, b)
        try:
            await server.start()
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == 98 else exc.strerror
            raise ScadaError(f"cannot listen on {host}:{port}: {reason}") from None
        self.server = server
        self.host, self.port = server.bserver.hostname, server.bserver.port
        if port == 0:  # advertise the port actually bound
            for edp in server.iserver.endpoints:
                edp.EndpointUrl = self.endpoint
        server.subscribe_server_callback(CallbackType.PostWrite, self._after_write)
        if self._pollers:
            await self._poll_once()
            self._stopping = False
            self._task = asyncio.create_task(self._poll_loop(), name="scada-twin-poll")
        log.info("SCADA twin %s serving on %s", self.name, self.endpoint)

    async def stop(self) -> None:
        if self._task:
            self._stopping = True
            # a client library may swallow one cancellation mid-request: repeat until done
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._task.result()
            self._task = None
        for poller in self._pollers.values():
            if poller.client:
                poller.client.close()
                poller.client = None
        if self.server:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> ScadaTwin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def node(self, text: str) -> Node:
        assert self.server, "the SCADA twin is not running"
        return await resolve_node(self.server, text)

    async def read(self, text: str) -> Any:
        return await (await self.node(text)).read_value()

    async def write(self, text: str, value: Any) -> None:
        """Set a value as the server itself (not a client write: not forwarded to a PLC)."""
        node = await self.node(text)
        await node.write_value(ua.Variant(value, await node.read_data_type_as_variant_type()))

    # ---------------------------------------------------------------- build

    async def _build(self, server: Server, nl: NodeList) -> None:
        idx = await server.register_namespace(nl.namespace)

        async def add(
            parent: Node, items: Iterable[VariableNode | FolderNode], prefix: str
        ) -> None:
            for item in items:
                if isinstance(item, FolderNode):
                    nid = ua.NodeId(f"{prefix}{item.folder}", idx)
                    folder = await parent.add_folder(nid, f"{idx}:{item.folder}")
                    await add(folder, item.nodes, f"{prefix}{item.folder}.")
                    continue
                vtype = VARIANT_TYPES[item.type]
                nid = ua.NodeId(f"{prefix}{item.variable}", idx)
                value = coerce(item.value if item.value is not None else _zero(vtype), vtype)
                var = await parent.add_variable(
                    nid, f"{idx}:{item.variable}", value, varianttype=vtype
                )
                if item.writable:
                    await var.set_writable()
                if item.bind is not None:
                    await self._bind(var, _binding(f"{prefix}{item.variable}", item.bind), vtype)

        await add(server.nodes.objects, nl.nodes, "")

    async def _bind(self, node: Node, b: Binding, vtype: ua.VariantType | None = None) -> None:
        vtype = vtype or await node.read_data_type_as_variant_type()
        link = self.plcs[b.plc]
        bound = _Bound(node, vtype, b.plc, link.map.tag(b.tag))
        self._pollers.setdefault(b.plc, _PlcPoller(link)).bound.append(bound)
        self._bound[node.nodeid] = bound

    # ---------------------------------------------------------------- PLC data path

    async def _client(self, poller: _PlcPoller) -> AsyncModbusTcpClient:
        if poller.client is None or not poller.client.connected:
            if poller.client:
                poller.client.close()
            client = AsyncModbusTcpClient(
                poller.link.host,
                port=poller.link.port,
                timeout=self.modbus_timeout,
                retries=0,
                reconnect_delay=0,
            )
            if not await client.connect():
                client.close()
                raise ConnectionError(f"PLC {poller.link.host}:{poller.link.port} is unreachable")
            poller.client = client
        return poller.client

    async def _poll_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll)
            await self._poll_once()

    async def _poll_once(self) -> None:
        for name, poller in self._pollers.items():
            try:
                await self._poll_plc(poller)
            except Exception as exc:  # noqa: BLE001 - a PLC outage shows as Bad status, not a crash
                log.warning("polling PLC %s failed: %s", name, exc)
                if poller.client:
                    poller.client.close()
                    poller.client = None
                for b in poller.bound:
                    if b.status_ok:
                        b.status_ok = False
                        await self._publish(b, b.last, ua.StatusCodes.BadNoCommunication)

    async def _poll_plc(self, poller: _PlcPoller) -> None:
        client = await self._client(poller)
        regmap = poller.link.map
        groups: dict[tuple[int, str], list[_Bound]] = {}
        for b in poller.bound:
            groups.setdefault((b.tag.unit, b.tag.table), []).append(b)
        for (unit, table), items in groups.items():
            for start, count in _ranges(
                [b.tag.span for b in items], 2000 if table in BIT_TABLES else 125
            ):
                words = await _read(client, unit, table, start, count)
                for b in items:
                    if start <= b.tag.address < start + count:
                        raw = words[b.tag.address - start : b.tag.address - start + b.tag.size]
                        if b.tag.bit is not None:
                            value = bool(raw[0] >> b.tag.bit & 1)
                        else:
                            value = decode(raw, b.tag.dtype, *regmap.orders(b.tag))
                        if value != b.last or not b.status_ok:
                            b.last, b.status_ok = value, True
                            await self._publish(b, value)

    async def _publish(self, b: _Bound, value: Any, status: int = ua.StatusCodes.Good) -> None:
        assert self.server
        variant = ua.Variant(
            coerce(value if value is not None else _zero(b.vtype), b.vtype), b.vtype
        )
        await self.server.write_attribute_value(
            b.node.nodeid,
            ua.DataValue(
                variant, StatusCode=ua.StatusCode(status), SourceTimestamp=datetime.now(UTC)
            ),
        )

    async def _after_write(self, event: Any, _dispatcher: Any) -> None:
        """A client wrote: forward writes of bound variables to their PLC register."""
        params = event.request_params
        results = event.response_params or []
        for item, status in zip(params.NodesToWrite, results, strict=False):
            b = self._bound.get(item.NodeId)
            if b is None or item.AttributeId != ua.AttributeIds.Value or not status.is_good():
                continue
            value = item.Value.Value.Value
            try:
                await self._write_plc(b, value)
                b.last = value
            except Exception as exc:  # noqa: BLE001 - log and let the next poll show the truth
                log.warning("writing %s to PLC %s tag %s failed: %s", value, b.plc, b.tag.name, exc)

    async def _write_plc(self, b: _Bound, value: Any) -> None:
        poller = self._pollers[b.plc]
        client = await self._client(poller)
        tag, unit = b.tag, b.tag.unit
        if tag.table == "coil":
            _ok(await client.write_coil(tag.address, bool(value), device_id=unit), tag)
            return
        if tag.table != "holding":
            raise PlcError(
                f"tag {tag.name} is in the {tag.table} table, which clients cannot write"
            )
        if tag.bit is not None:
            (word,) = await _read(client, unit, "holding", tag.address, 1)
            regs = [word | (1 << tag.bit) if value else word & ~(1 << tag.bit)]
        else:
            regs = encode(value, tag.dtype, *poller.link.map.orders(tag))
        _ok(await client.write_registers(tag.address, regs, device_id=unit), tag)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == 98 else exc.strerror
            raise ScadaError(f"cannot listen on {host}:{port}: {reason}") from None


async def _read(
    client: AsyncModbusTcpClient, unit: int, table: str, start: int, count: int
) -> list[int]:
    call = reader(client, table)
    rsp = await call(start, count=count, device_id=unit)
    if rsp.isError():
        raise PlcError(
            f"{table} {start}..{start + count - 1} of unit {unit}: Modbus exception {getattr(rsp, 'exception_code', '?')}"
        )
    return [int(v) for v in (rsp.bits if table in BIT_TABLES else rsp.registers)[:count]]


def _ok(rsp: Any, tag: Tag) -> None:
    if rsp.isError():
        raise PlcError(
            f"write to tag {tag.name} refused: Modbus exception {getattr(rsp, 'exception_code', '?')}"
        )


def _ranges(spans: Iterable[range], limit: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) read ranges covering ``spans``, each at most ``limit`` long."""
    out: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda r: r.start):
        if out and span.start <= out[-1][0] + out[-1][1] and span.stop - out[-1][0] <= limit:
            start, count = out[-1]
            out[-1] = (start, max(count, span.stop - start))
        else:
            out.append((span.start, len(span)))
    return out


def _variables(
    items: Iterable[VariableNode | FolderNode], prefix: str = ""
) -> Iterable[tuple[str, VariableNode]]:
    for item in items:
        if isinstance(item, FolderNode):
            yield from _variables(item.nodes, f"{prefix}{item.folder}.")
        else:
            yield f"{prefix}{item.variable}", item


def _binding(node: str, bind: str | Binding) -> Binding:
    if isinstance(bind, Binding):
        return bind
    plc, _, tag = bind.partition("/")
    return Binding(node=node or "?", plc=plc, tag=tag)


def _zero(vtype: ua.VariantType) -> Any:
    return {ua.VariantType.Boolean: False, ua.VariantType.String: ""}.get(vtype, 0)


# --------------------------------------------------------------------------- running


def run_scada(
    sources: Sequence[str | Path],
    bind: str = "127.0.0.1:4840",
    *,
    name: str = "restoredrill-scada",
    security: Security = "none",
    username: str | None = None,
    password: str | None = None,
    cert_dir: str | Path | None = None,
    plcs: Mapping[str, PlcLink] | None = None,
    bindings: Sequence[Binding] = (),
) -> None:
    """Serve the SCADA twin until SIGINT/SIGTERM (blocking). Raises ScadaConfigError / ScadaError."""
    host, port = parse_bind(bind, 4840)
    twin = ScadaTwin(
        sources,
        name=name,
        security=security,
        username=username,
        password=password,
        cert_dir=cert_dir,
        plcs=plcs,
        bindings=bindings,
    )

    async def start() -> None:
        await twin.start(host, port)
        print(
            f"SCADA twin {name}: {len(twin.xml)} NodeSet(s), {len(twin.lists)} node list(s), "
            f"{len(twin._bound)} bound variable(s), security {security}, listening on {twin.endpoint} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(serve_until_signalled(start, twin.stop))
    print("SCADA twin stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m restoredrill.twins.scada",
        description="Serve a SCADA twin (OPC UA) from NodeSet2 XML and/or YAML node lists.",
    )
    p.add_argument("sources", nargs="+", help="NodeSet2 .xml and/or node-list .yaml files")
    p.add_argument("--bind", default="127.0.0.1:4840", help="HOST:PORT (default 127.0.0.1:4840)")
    p.add_argument("--name", default="restoredrill-scada")
    p.add_argument("--security", choices=["none", "basic256sha256"], default="none")
    p.add_argument("--username")
    p.add_argument(
        "--password-env",
        default=PASSWORD_ENV,
        help=f"variable holding the password ({PASSWORD_ENV})",
    )
    p.add_argument(
        "--cert-dir", default="pki", help="where the server certificate is made and kept"
    )
    p.add_argument("--plc", action="append", default=[], metavar="NAME=HOST:PORT@MAP")
    p.add_argument("--bind-node", action="append", default=[], metavar="NODE=PLC/TAG")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        password = None
        if args.username:
            password = os.environ.get(args.password_env)
            if not password:
                raise ScadaError(
                    f"--username given but the password variable {args.password_env} is empty"
                )
        plcs = dict(PlcLink.parse(text) for text in args.plc)
        bindings = []
        for text in args.bind_node:
            node, _, target = text.rpartition("=")
            if not node or "/" not in target:
                raise ScadaError(f"--bind-node {text!r}: write NODE=PLC/TAG")
            bindings.append(_binding(node, target))
        run_scada(
            args.sources,
            args.bind,
            name=args.name,
            security=args.security,
            username=args.username,
            password=password,
            cert_dir=args.cert_dir,
            plcs=plcs,
            bindings=bindings,
        )
    except (ConfigFileError, ScadaError, PlcError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
