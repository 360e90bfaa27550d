"""This host's networks as a sandbox subnet must avoid them: unsafe ranges, Docker bridges.

Read from ``/proc`` (no engine needed), so ``restoredrill validate`` can tell. A subnet
on one of the host's own production network cards is fine: sandbox traffic never uses
the host's routing (see ``twins/docker.py``). A subnet of a Docker bridge is not:
Docker refuses overlapping networks, and that bridge is somebody else's.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LARGEST = {4: 16, 6: 48}
"""The shortest prefix a sandbox subnet may have, per IP version."""
UNSAFE: list[tuple[IPNetwork, str]] = [
    (ipaddress.ip_network("0.0.0.0/8"), "'this network' (0.0.0.0/8, unspecified)"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (ipaddress.ip_network("240.0.0.0/4"), "reserved (240.0.0.0/4, broadcast included)"),
    (ipaddress.ip_network("::/128"), "unspecified (::)"),
    (ipaddress.ip_network("::1/128"), "loopback (::1)"),
    (ipaddress.ip_network("::ffff:0:0/96"), "IPv4-mapped (::ffff:0:0/96)"),
    (ipaddress.ip_network("fe80::/10"), "link-local (fe80::/10)"),
    (ipaddress.ip_network("ff00::/8"), "multicast (ff00::/8)"),
]
DOCKER_BRIDGE = re.compile(r"^(docker\d+|br-[0-9a-f]{12})$")
"""Interface names Docker gives its bridges (restoredrill names its own ``rd…``)."""


def unsafe(net: IPNetwork) -> str | None:
    """Why ``net`` cannot be a sandbox subnet (``None``: it can)."""
    largest = LARGEST[net.version]
    if net.prefixlen < largest:
        return (
            f"{net} is too large for a sandbox (at most a /{largest}: it holds the plant "
            "segments whose addresses twins take over, not a whole address range)"
        )
    for special, what in UNSAFE:
        if special.version == net.version and special.overlaps(net):
            return f"{net} overlaps {what}: use a private range such as 10.77.0.0/24"
    return None


def _v4_routes() -> list[tuple[str, IPNetwork]]:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(f[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(f[7], 16)))
        out.append((f[0], ipaddress.ip_network(f"{dest}/{mask}", strict=False)))
    return out


def _v6_routes() -> list[tuple[str, IPNetwork]]:
    try:
        lines = Path("/proc/net/ipv6_route").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 10:
            continue
        dest = ipaddress.IPv6Address(bytes.fromhex(f[0]))
        out.append((f[9], ipaddress.ip_network(f"{dest}/{int(f[1], 16)}", strict=False)))
    return out


def docker_bridges() -> list[tuple[str, IPNetwork]]:
    """(interface, subnet) of every Docker bridge route of this host (docker0, br-…)."""
    return [
        (iface, net)
        for iface, net in _v4_routes() + _v6_routes()
        if DOCKER_BRIDGE.match(iface)
        and net.prefixlen > 0
        and not (net.is_link_local or net.is_multicast)
    ]


def bridge_clash(net: IPNetwork) -> str | None:
    """The Docker bridge of this host that ``net`` overlaps, in words (``None``: none)."""
    for iface, theirs in docker_bridges():
        if theirs.version == net.version and theirs.overlaps(net):
            return f"{iface} ({theirs})"
    return None
