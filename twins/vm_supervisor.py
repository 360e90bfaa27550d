"""Runs one QEMU and ends it when its owner goes: the VM twin's PID 1 (standard library only).

Usage: ``vm_supervisor.py FOLDER [--tap TAP] [--drop-caps] -- qemu-system-x86_64 ...``

1. With ``--tap``: bridge this network namespace's ``eth0`` (the sandbox address Docker
   gave the container) to a new tap device for the VM, and take the address off
   ``eth0``: the VM answers at it, the container itself holds no address. What the VM
   sends passes only as IPv4 from that address, or ARP naming it (an nftables ingress
   chain on the tap): a guest cannot take another twin's address inside the sandbox.
2. Listen on ``FOLDER/lifeline.sock``; the owner (restoredrill) connects and holds the
   connection. When it closes (also when the owner is killed with -9, as the kernel
   closes its sockets) QEMU is stopped. Nobody connecting within 60 s counts as closed.
3. Start QEMU (``--drop-caps``: through ``setpriv`` with every capability dropped and
   ``no_new_privs``); its output goes to ``FOLDER/qemu.log``, its exit code to
   ``FOLDER/exit-code``.
4. If the owner went away (rather than QEMU ending), empty ``FOLDER``: the overlays,
   sockets and logs of a run that died are not left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

ACCEPT_WITHIN = 60.0


def sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"vm-supervisor: {' '.join(argv)} failed: {done.stderr.strip()}")


def address_of(dev: str) -> str | None:
    """The IPv4 address of ``dev`` (``None`` without one)."""
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", dev], capture_output=True, text=True, check=False
    )
    fields = done.stdout.split()
    return fields[fields.index("inet") + 1].split("/")[0] if "inet" in fields else None


GUARD = """table netdev restoredrill {{
  chain from_guest {{
    type filter hook ingress device "{tap}" priority 0; policy drop;
    ip saddr {address} accept
    arp saddr ip {address} accept
  }}
}}
"""
"""What the VM may send: IPv4 from its own address, ARP naming it; nothing else."""


def only_from(tap: str, address: str) -> None:
    """Frames the VM sends through ``tap`` pass only as IPv4 from ``address`` or as ARP
    whose sender is ``address`` (an nftables ingress chain on the tap); anything else
    (another source, IPv6, other protocols) is dropped before the bridge."""
    done = subprocess.run(
        ["nft", "-f", "-"],
        input=GUARD.format(tap=tap, address=address),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"vm-supervisor: nft refused the tap's guard: {done.stderr.strip()}")


def bridge(tap: str) -> None:
    """eth0 and ``tap`` in one bridge; no address left on this side."""
    address = address_of("eth0")
    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "flush", "dev", "eth0")
    sh("ip", "link", "set", "eth0", "master", "br0")
    sh("ip", "tuntap", "add", "dev", tap, "mode", "tap", "user", str(os.getuid()))
    sh("ip", "link", "set", tap, "master", "br0")
    if address:
        only_from(tap, address)
    for dev in (tap, "eth0", "br0"):
        sh("ip", "link", "set", dev, "up")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def main(argv: list[str]) -> int:
    folder, rest = argv[0], argv[1:]
    split = rest.index("--")
    options, command = rest[:split], rest[split + 1 :]
    if "--tap" in options:
        bridge(options[options.index("--tap") + 1])
    if "--drop-caps" in options:
        command = [
            "setpriv",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            *command,
        ]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(folder, "lifeline.sock")
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(1)
    with open(os.path.join(folder, "qemu.log"), "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    signal.signal(signal.SIGTERM, lambda *_: (stop(proc), sys.exit(143)))
    owner, orphaned = None, False
    deadline = time.monotonic() + ACCEPT_WITHIN
    while proc.poll() is None:
        watch = [owner or listener]
        ready, _, _ = select.select(watch, [], [], 0.2)
        if owner is None and ready:
            owner, _ = listener.accept()
        elif owner is None and time.monotonic() > deadline:
            orphaned = True  # nobody claimed this VM
            break
        elif owner is not None and ready and not owner.recv(64):
            orphaned = True  # the owner went away
            break
    code = stop(proc)
    if orphaned:
        wipe(folder)
    else:
        with open(os.path.join(folder, "exit-code"), "w") as fh:
            fh.write(f"{code}\n")
    return 0


def wipe(folder: str) -> None:
    """Remove everything in ``folder`` (it may be a bind mount: the folder itself stays)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    with contextlib.suppress(OSError):  # a bind mount (in a container) stays
        os.rmdir(folder)


def run(argv: list[str]) -> int:
    """``main``, with a failure also written to ``FOLDER/supervisor.log`` (for the owner)."""
    try:
        return main(argv)
    except (SystemExit, Exception) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        with open(os.path.join(argv[0], "supervisor.log"), "a") as log:
            log.write(f"{exc.code if isinstance(exc, SystemExit) else repr(exc)}\n")
        raise


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
