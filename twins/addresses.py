"""The address book of a sandbox: who holds which address on its subnets (backend-neutral).

A twin takes its production address; the sandbox's own addresses (a gateway a backend
reserves, the anchor checks run from) and twins without one take the highest free
address no system of the inventory claims (production addresses sit low).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Collection, Sequence
from typing import Any

from .base import TwinError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressBook:
    """Addresses held in a sandbox, and those the inventory claims (never handed out)."""

    def __init__(self, reserved: Collection[str] = ()) -> None:
        self.held: dict[IPAddress, str] = {}
        self.reserved = {ipaddress.ip_address(str(a)) for a in reserved}
        self.lock = threading.RLock()

    def hold(self, ip: IPAddress, holder: str) -> None:
        with self.lock:
            self.held[ip] = holder

    def holder(self, ip: IPAddress) -> str | None:
        return self.held.get(ip)

    def release(self, ip: IPAddress | str, holder: str | None = None) -> None:
        """Free ``ip`` (only if ``holder`` still holds it, when given)."""
        ip = ipaddress.ip_address(str(ip))
        with self.lock:
            if holder is None or self.held.get(ip) == holder:
                self.held.pop(ip, None)

    def pick(self, net: IPNetwork, what: str) -> IPAddress:
        """The highest host address of ``net`` nobody holds or claims."""
        first = int(net.network_address) + 1
        last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
        with self.lock:
            for value in range(last, first - 1, -1):
                ip = ipaddress.ip_address(value)
                if ip not in self.held and ip not in self.reserved:
                    return ip
        raise TwinError(
            f"sandbox subnet {net} has no free address left for {what}: every address is "
            "claimed by a system or device of the inventory; use a larger subnet"
        )

    def place(self, name: str, address: Any, subnets: Sequence[IPNetwork]) -> tuple[int, IPAddress]:
        """Reserve the address of twin ``name`` (its own, or a free one on the first
        subnet); return the index of its subnet and the address. TwinError if taken,
        outside every subnet, or not a host address."""
        if not subnets:
            raise TwinError(f"{name}: the sandbox has no network")
        with self.lock:
            if address is None:
                try:
                    ip = self.pick(subnets[0], name)
                except TwinError:
                    raise TwinError(
                        f"{name}: no free address left in sandbox subnet {subnets[0]}"
                    ) from None
                index = 0
            else:
                try:
                    ip = ipaddress.ip_address(str(address))
                except ValueError as exc:
                    raise TwinError(f"{name}: {address!r} is not an IP address: {exc}") from None
                found = [i for i, net in enumerate(subnets) if ip in net]
                if not found:
                    shown = ", ".join(str(n) for n in subnets)
                    raise TwinError(
                        f"{name}: address {ip} is outside every sandbox subnet ({shown}): "
                        "add its subnet to sandbox.subnets, or change the system's address"
                    )
                index = found[0]
                net = subnets[index]
                if ip in (net.network_address, net.broadcast_address):
                    raise TwinError(f"{name}: address {ip} is not a host address in {net}")
                holder = self.held.get(ip)
                if holder is not None:
                    raise TwinError(
                        f"{name}: address {ip} is already taken by {holder}; "
                        "two systems cannot share an address in one sandbox"
                    )
            self.held[ip] = f"twin {name!r}"
        return index, ip
