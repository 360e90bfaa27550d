"""A hostile twin's attempts to reach out, and listeners that tell what arrived.

Shared by tests/test_containment.py and benchmarks/containment.py. Every target is on
this machine: the host's own addresses, the sandbox's (unassigned) gateway, and a
stand-in "production" network the caller creates. Nothing else is ever contacted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

ATTEMPTS = """
import json, socket, sys, threading
out = []
def attempt(category, host, port):
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.settimeout(3)
            s.connect(addr)
        out.append([category, host, port, "connected"])
    except OSError as exc:
        out.append([category, host, port, f"{type(exc).__name__}: {exc}"])
threads = [threading.Thread(target=attempt, args=t) for t in json.loads(sys.argv[1])]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""
"""Run in the twin with one argument, a JSON list of ``[category, host, port]``: tries
each connection (3 s each, in parallel) and prints ``[category, host, port, outcome]``."""

PROD_LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("listening", flush=True)
while True:
    c, peer = s.accept(); print("accepted", peer[0], flush=True); c.close()
"""
"""A listener on the stand-in production network: logs every connection it accepts."""


def host_addresses() -> list[tuple[str, str]]:
    """(interface, address) of every address this host holds, loopback left out;
    link-local IPv6 addresses carry ``%eth0`` (the twin's own link)."""
    shown = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True)
    out = []
    for link in json.loads(shown.stdout):
        if link.get("ifname") == "lo":
            continue
        for info in link.get("addr_info", []):
            addr = info.get("local")
            if not addr:
                continue
            if info.get("scope") == "link" and ":" in addr:
                addr = f"{addr}%eth0"
            out.append((link["ifname"], addr))
    return out


class Listener:
    """TCP listeners on 0.0.0.0 and [::] at one free port of the host, recording peers."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._socks: list[socket.socket] = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("0.0.0.0", 0))
        self.port = v4.getsockname()[1]
        self._socks.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::", self.port))
            self._socks.append(v6)
        except OSError:
            pass
        self._threads = []
        for sock in self._socks:
            sock.listen(64)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            self.seen.append(str(peer[0]))
            conn.close()

    def close(self) -> None:
        for sock in self._socks:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def host_listener() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.close()


def attempt_all(twin: Any, targets: list[tuple[str, str, int]]) -> list[list[Any]]:
    """Let ``twin`` try every target; ``[category, host, port, outcome]`` each."""
    out = twin.exec(["python3", "-c", ATTEMPTS, json.dumps(targets)], timeout=120)
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def tally(outcomes: list[list[Any]]) -> dict[str, tuple[int, int]]:
    """Per category: (attempted, connected)."""
    out: dict[str, tuple[int, int]] = {}
    for category, _, _, outcome in outcomes:
        tried, got = out.get(category, (0, 0))
        out[category] = (tried + 1, got + (outcome == "connected"))
    return out
