"""OPC UA helpers a client and a server share: find a node, coerce a value, a certificate,
browse many nodes at once.

The opcua check (a client) and the SCADA twin (a server) both use these; neither module
imports the other; ``learn opcua`` and the regression snapshots browse through them.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Node, ua


async def resolve_node(
    session: Any, text: str, *, cache: dict | None = None, verify: bool = True
) -> Node:
    """A node by NodeId (``ns=2;s=X``, ``i=85``) or browse path (``Objects/2:Line1/Level``).

    Path segments may carry a namespace index (``2:Level``) or match a name in any
    namespace. ``session`` is an asyncua Server or Client; ``cache`` (a dict kept by the
    caller) saves browsing a folder again. Raises KeyError if the node does not exist
    (a NodeId is checked only with ``verify``).
    """
    text = text.strip()
    if text[:3] in ("ns=", "nsu") or text[:2] in ("i=", "s=", "g=", "b="):
        try:
            node = session.get_node(ua.NodeId.from_string(text))
        except Exception:  # noqa: BLE001 - a malformed NodeId is a missing node
            raise KeyError(f"{text!r} is not a NodeId") from None
        if verify:
            try:
                await node.read_browse_name()
            except ua.UaStatusCodeError:
                raise KeyError(f"node {text} does not exist") from None
        return node
    cache = {} if cache is None else cache
    parts = [p for p in text.split("/") if p]
    if parts and parts[0] in ("Root", "0:Root"):
        parts = parts[1:]
    nodeid = ua.NodeId(ua.ObjectIds.RootFolder)
    walked = ["Root"]
    for part in parts:
        index, _, name = part.rpartition(":")
        by_name = cache.get(nodeid)
        if by_name is None:  # a folder's children, browsed once and indexed by name
            refs = await session.get_node(nodeid).get_references(
                ua.ObjectIds.HierarchicalReferences,
                ua.BrowseDirection.Forward,
                includesubtypes=True,
            )
            by_name = {}
            for r in refs:
                by_name.setdefault(r.BrowseName.Name, []).append(r)
            cache[nodeid] = by_name
        match = [
            r
            for r in by_name.get(name, ())
            if not index or str(r.BrowseName.NamespaceIndex) == index
        ]
        if not match:
            raise KeyError(f"{'/'.join(walked)} has no child {part!r}")
        nodeid = match[0].NodeId
        walked.append(part)
    return session.get_node(nodeid)


async def secure_client(client: Any, role: str, cert_dir: str | Path | None = None) -> None:
    """Sign and encrypt ``client``'s session (Basic256Sha256) with restoredrill's own
    certificate for ``role`` (check, learn, snapshot), made once in ``cert_dir`` (default:
    a folder in the temporary directory) and kept there."""
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    folder = cert_dir or os.path.join(tempfile.gettempdir(), "restoredrill-opcua-client")
    app_uri = f"urn:restoredrill:{role}"
    cert, key = await ensure_certificate(folder, f"restoredrill-{role}", app_uri, server=False)
    client.application_uri = app_uri
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(cert),
        private_key=str(key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )


K = TypeVar("K")


async def browse_forward(
    client: Any,
    nodes: Sequence[tuple[K, ua.NodeId]],
    reference_type: int = ua.ObjectIds.References,
) -> list[tuple[K, ua.ReferenceDescription]]:
    """Forward references (of ``reference_type`` and its subtypes) of each (key, node id)
    in ``nodes``, as (key, reference), in one Browse call and the BrowseNext calls its
    continuation points ask for."""
    params = ua.BrowseParameters()
    params.NodesToBrowse = [_forward(node_id, reference_type) for _, node_id in nodes]
    params.RequestedMaxReferencesPerNode = 0
    results = await client.uaclient.browse(params)
    out: list[tuple[K, ua.ReferenceDescription]] = []
    pending: list[tuple[K, bytes]] = []
    for (key, _), res in zip(nodes, results, strict=True):
        out += [(key, ref) for ref in res.References or []]
        if res.ContinuationPoint:
            pending.append((key, res.ContinuationPoint))
    while pending:
        following = await client.uaclient.browse_next(
            ua.BrowseNextParameters(ContinuationPoints=[cp for _, cp in pending])
        )
        more = []
        for (key, _), res in zip(pending, following, strict=True):
            out += [(key, ref) for ref in res.References or []]
            if res.ContinuationPoint:
                more.append((key, res.ContinuationPoint))
        pending = more
    return out


def _forward(node_id: ua.NodeId, reference_type: int) -> ua.BrowseDescription:
    desc = ua.BrowseDescription()
    desc.NodeId = node_id
    desc.BrowseDirection = ua.BrowseDirection.Forward
    desc.ReferenceTypeId = ua.NodeId(reference_type)
    desc.IncludeSubtypes = True
    desc.NodeClassMask = 0
    desc.ResultMask = ua.BrowseResultMask.All
    return desc


def coerce(value: Any, vtype: ua.VariantType) -> Any:
    """``value`` as the Python type a variable of ``vtype`` holds (numbers rounded to ints)."""
    if vtype == ua.VariantType.Boolean:
        return bool(value)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return float(value)
    if vtype == ua.VariantType.String:
        return str(value)
    if vtype.name.startswith(("Int", "UInt", "SByte", "Byte")) and vtype.name != "ByteString":
        return int(round(value))
    return value


async def ensure_certificate(
    cert_dir: str | Path,
    name: str,
    app_uri: str,
    server: bool,
    subject: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """A self-signed certificate and key in ``cert_dir``, generated once and reused.

    ``subject`` holds X.509 attribute names (``commonName``, ``organizationName``, …;
    default CN=name, O=restoredrill). A kept certificate whose subject, application URI or
    host no longer match is made again (with the same key).
    """
    from asyncua.crypto import cert_gen, uacrypto
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(cert_dir)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}-cert.der", folder / f"{name}-key.pem"
    attrs = dict(subject or {"commonName": name, "organizationName": "restoredrill"})
    common_name = attrs.pop("commonName", name)
    wanted = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        + [x509.NameAttribute(cert_gen.OID_NAME_MAP[k], v) for k, v in attrs.items()]
    )
    if not key.is_file():
        key.write_bytes(cert_gen.dump_private_key_as_pem(cert_gen.generate_private_key()))
        cert.unlink(missing_ok=True)
    private = await uacrypto.load_private_key(key)
    host = socket.gethostname()
    if cert.is_file():
        kept = await uacrypto.load_certificate(cert)
        if kept.subject == wanted and not uacrypto.check_certificate(kept, app_uri, host):
            return cert, key
    uses = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    made = cert_gen.generate_self_signed_app_certificate(
        private,
        common_name,
        attrs,
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)],
        extended=uses,
        days=365,
    )
    cert.write_bytes(made.public_bytes(encoding=Encoding.DER))
    return cert, key
