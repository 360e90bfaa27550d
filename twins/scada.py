"""SCADA twin: an OPC UA server (asyncua) from NodeSet2 XML and/or a YAML node list.

Variables may be bound to PLC twin tags (``plc_bridge``): they follow the PLC (polled
over Modbus) and a client's write to a bound writable variable is written to the PLC's
register. The server presents the identity it is given (``opcua_identity``): BuildInfo,
application name and URI, certificate subject. YAML node lists are added in bulk
(``address_space``), so 1,000 variables cost tens of milliseconds, not seconds.

Modules around it: ``nodelist`` (the YAML node list), ``nodeset_order`` (NodeSet2 load
order), ``opcua_client`` (helpers a client shares), ``plc_bridge`` (the PLC data path).

Run it: ``python -m restoredrill.twins.scada NODESET_OR_YAML... --bind 0.0.0.0:4840``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from asyncua import Node, Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from restoredrill.errors import RestoredrillError

from .address_space import NewNode, add_nodes
from .base import TwinError
from .devices import PASSWORD_ENV, Binding, parse_bind
from .nodelist import (
    VARIANT_TYPES,
    FolderNode,
    NodeList,
    ScadaConfigError,
    VariableNode,
    binding,
    load_node_list,
    variables,
)
from .nodeset_order import nodeset_order
from .opcua_client import coerce, ensure_certificate, resolve_node
from .opcua_identity import OpcuaIdentity, parse_identity
from .plc_bridge import Bound, PlcBridge, PlcLink
from .running import gc_paused, serve_until_signalled

__all__ = [
    "PlcLink",
    "ScadaConfigError",
    "ScadaError",
    "ScadaTwin",
    "coerce",
    "ensure_certificate",
    "load_node_list",
    "main",
    "nodeset_order",
    "resolve_node",
    "run_scada",
]

log = logging.getLogger(__name__)
Security = Literal["none", "basic256sha256"]


class ScadaError(TwinError):
    """The SCADA twin could not start or serve."""


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
        identity: OpcuaIdentity | None = None,
    ) -> None:
        if security != "none" and not (username and password and cert_dir):
            raise ScadaError("security basic256sha256 needs username, password and cert_dir")
        if bool(username) != bool(password):
            raise ScadaError("give both username and password, or neither")
        self.identity = identity or OpcuaIdentity()
        self.name, self.security = self.identity.name(name), security
        self.username, self.password, self.cert_dir = username, password, cert_dir
        self.plcs = dict(plcs or {})
        self.bindings = list(bindings)
        self.xml = nodeset_order([p for p in sources if Path(p).suffix.lower() == ".xml"])
        self.lists = [
            (Path(p), load_node_list(p)) for p in sources if Path(p).suffix.lower() != ".xml"
        ]
        self._check_binding_targets()
        self.bridge = PlcBridge(self.plcs, poll, modbus_timeout)
        self.server: Server | None = None
        self.host: str | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"opc.tcp://{host}:{self.port}/"

    @property
    def _bound(self) -> dict[ua.NodeId, Bound]:
        return self.bridge.bound

    def _check_binding_targets(self) -> None:
        wanted = [(f"--bind-node {b.node}", b.plc, b.tag) for b in self.bindings]
        for path, nl in self.lists:
            for _node_path, var in variables(nl.nodes):
                if var.bind is not None:
                    b = binding("", var.bind)
                    wanted.append((f"{path}: {var.variable}", b.plc, b.tag))
        known = ", ".join(self.plcs) or "none"
        for where, plc, tag in wanted:
            if plc not in self.plcs:
                raise ScadaError(f"{where}: binds to PLC {plc!r}, not given (known: {known})")
            try:
                self.plcs[plc].map.tag(tag)
            except KeyError as exc:
                raise ScadaError(f"{where}: PLC {plc!r}: {exc.args[0]}") from None

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 4840) -> None:
        if port:
            _check_port_free(host, port)
        users = None
        if self.username and self.password is not None:  # both or neither (__init__)
            users = PasswordUserManager(self.username, self.password)
        server = Server(user_manager=users)
        with gc_paused():  # thousands of nodes that live as long as the server
            await server.init()
            await self._present(server, host, port)
            await self._address_space(server)
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
        await self.bridge.start(self._publish)
        log.info("SCADA twin %s serving on %s", self.name, self.endpoint)

    async def _present(self, server: Server, host: str, port: int) -> None:
        """Identity, endpoint, security and users, before the address space is built."""
        who = self.identity
        server.set_server_name(self.name)
        server.product_uri = who.product_uri
        server.set_endpoint(f"opc.tcp://{'[' + host + ']' if ':' in host else host}:{port}/")
        app_uri = who.uri(self.name)
        await server.set_application_uri(app_uri)
        built = who.build_date or datetime.now(UTC)
        await server.set_build_info(
            who.product_uri,
            who.manufacturer_name,
            who.product_name,
            who.software_version,
            who.build_number,
            built,
        )
        if self.security == "basic256sha256":
            subject = who.certificate.attributes(self.name)
            assert self.cert_dir is not None  # security needs a cert_dir (__init__)
            cert, key = await ensure_certificate(self.cert_dir, self.name, app_uri, True, subject)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.username:
            server.set_identity_tokens([ua.UserNameIdentityToken])

    async def _address_space(self, server: Server) -> None:
        for path in self.xml:
            try:
                await server.import_xml(str(path), strict_mode=False)
            except Exception as exc:  # noqa: BLE001 - report which file, whatever broke
                raise ScadaConfigError(
                    path, 1, "", f"NodeSet import failed: {type(exc).__name__}: {exc}"
                ) from None
        for path, nl in self.lists:
            try:
                await self._build(server, nl)
            except ValueError as exc:
                raise ScadaConfigError(path, 1, "", str(exc)) from None
        for b in self.bindings:
            try:
                node = await resolve_node(server, b.node)
            except KeyError as exc:
                raise ScadaError(f"binding {b.node} -> {b.plc}/{b.tag}: {exc.args[0]}") from None
            vtype = await node.read_data_type_as_variant_type()
            self.bridge.bind(node.nodeid, vtype, b.plc, b.tag)

    async def stop(self) -> None:
        await self.bridge.stop()
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
        """The node list's folders and variables, in one bulk add; bindings noted."""
        idx = await server.register_namespace(nl.namespace)
        nodes: list[NewNode] = []
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        for parent, prefix, item in _walk(nl.nodes, objects, "", idx):
            if isinstance(item, FolderNode):
                nid = ua.NodeId(f"{prefix}{item.folder}", idx)
                name = ua.QualifiedName(item.folder, idx)
                nodes.append(NewNode(nid, name, parent, description=item.description))
                continue
            vtype = VARIANT_TYPES[item.type]
            nid = ua.NodeId(f"{prefix}{item.variable}", idx)
            value = coerce(item.value if item.value is not None else _zero(vtype), vtype)
            name = ua.QualifiedName(item.variable, idx)
            variant = ua.Variant(value, vtype)
            nodes.append(NewNode(nid, name, parent, variant, item.writable, item.description))
            if item.bind is not None:
                b = binding(f"{prefix}{item.variable}", item.bind)
                self.bridge.bind(nid, vtype, b.plc, b.tag)
        await add_nodes(server, nodes)

    # ---------------------------------------------------------------- PLC data path

    async def _publish(self, b: Bound, value: Any, status: int) -> None:
        assert self.server
        variant = ua.Variant(
            coerce(value if value is not None else _zero(b.vtype), b.vtype), b.vtype
        )
        await self.server.write_attribute_value(
            b.nodeid,
            ua.DataValue(
                variant, StatusCode=ua.StatusCode(status), SourceTimestamp=datetime.now(UTC)
            ),
        )

    async def _after_write(self, event: Any, _dispatcher: Any) -> None:
        """A client wrote: forward writes of bound variables to their PLC register."""
        params = event.request_params
        results = event.response_params or []
        for item, status in zip(params.NodesToWrite, results, strict=False):
            if item.AttributeId != ua.AttributeIds.Value or not status.is_good():
                continue
            await self.bridge.written(item.NodeId, item.Value.Value.Value)


def _walk(
    items: Iterable[VariableNode | FolderNode], parent: ua.NodeId, prefix: str, idx: int
) -> Iterable[tuple[ua.NodeId, str, VariableNode | FolderNode]]:
    """(parent node id, node id prefix, item) for every folder and variable, parents first."""
    for item in items:
        yield parent, prefix, item
        if isinstance(item, FolderNode):
            folder = ua.NodeId(f"{prefix}{item.folder}", idx)
            yield from _walk(item.nodes, folder, f"{prefix}{item.folder}.", idx)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == 98 else exc.strerror
            raise ScadaError(f"cannot listen on {host}:{port}: {reason}") from None


def _zero(vtype: ua.VariantType) -> Any:
    return {ua.VariantType.Boolean: False, ua.VariantType.String: ""}.get(vtype, 0)


# --------------------------------------------------------------------------- running


def run_scada(sources: Sequence[str | Path], bind: str = "127.0.0.1:4840", **options: Any) -> None:
    """Serve the SCADA twin until SIGINT/SIGTERM (blocking); ``options`` as for ScadaTwin.

    Raises ScadaConfigError / ScadaError.
    """
    host, port = parse_bind(bind, 4840)
    twin = ScadaTwin(sources, **options)

    async def start() -> None:
        await twin.start(host, port)
        gc.freeze()  # the address space lives as long as the process: never walk it again
        print(
            f"SCADA twin {twin.name}: {len(twin.xml)} NodeSet(s), {len(twin.lists)} node "
            f"list(s), {len(twin._bound)} bound variable(s), security {twin.security}, "
            f"listening on {twin.endpoint} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(serve_until_signalled(start, twin.stop))
    print("SCADA twin stopped", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="BuildInfo, application and certificate fields, e.g. product_name=ScadaServer",
    )
    return p


def _options(args: argparse.Namespace) -> dict[str, Any]:
    password = None
    if args.username:
        password = os.environ.get(args.password_env)
        if not password:
            raise ScadaError(
                f"--username given but the password variable {args.password_env} is empty"
            )
    bindings = []
    for text in args.bind_node:
        node, _, target = text.rpartition("=")
        if not node or "/" not in target:
            raise ScadaError(f"--bind-node {text!r}: write NODE=PLC/TAG")
        bindings.append(binding(node, target))
    return {
        "name": args.name,
        "security": args.security,
        "username": args.username,
        "password": password,
        "cert_dir": args.cert_dir,
        "plcs": dict(PlcLink.parse(text) for text in args.plc),
        "bindings": bindings,
        "identity": parse_identity(args.identity),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        run_scada(args.sources, args.bind, **_options(args))
    except RestoredrillError as exc:  # a bad node list or option, a taken port, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
