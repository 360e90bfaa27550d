#!/usr/bin/env python3
"""Boot-to-ready of the demo VM image: restoredrill's VM twin against bare QEMU (issue 10).

The demo disk image (built once by ``twins.vm_image``, cached) boots until its serial
console shows ``login:``, three ways, alternating for ``--rounds`` rounds, all under the
same accelerator (``--accel``: tcg here; kvm where ``/dev/kvm`` works):

- **bare**: ``qemu-system-x86_64`` started by hand with the same overlay, disk (SATA),
  NIC (e1000), memory and CPUs, the serial console to a file polled for ``login:``;
  its NIC has a ``user,restrict=on`` backend (it reaches nothing).
- **sandbox (wired)**: the path of a run: ``DockerSandbox.start`` of a disk restore in
  an open sandbox (its contained network, firewall chain, anchor, guardian; opened once,
  not timed), i.e. a VM twin (``twins/vm_twin.py``): QEMU in a container bridged to the
  sandbox network, supervisor, capabilities dropped, limits watched; timed from ``start``
  until the console shows ``login:``, then removed.
- **runner (local)**: ``QemuVM`` with the ``LocalLauncher`` and the same NIC backend as
  bare: the runner's own cost without Docker.

Each round makes a fresh qcow2 overlay (not timed). It prints per-round seconds, the
medians, the median ratio against bare (target <= 1.2x) and QEMU's peak RSS (VmHWM).
Everything it creates is labelled ``restoredrill.bench=vm`` (network, containers) or
lives in one temporary folder, removed at the end, also on error or Ctrl-C.

    .venv/bin/python benchmarks/vm.py [--rounds 5] [--accel tcg]
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from restoredrill.twins import vm_image
from restoredrill.twins.base import Restored
from restoredrill.twins.qemu import Disk, QemuVM
from restoredrill.twins.sources.disk_image import create_overlay
from restoredrill.twins.spec import RunSpec
from restoredrill.twins.vm_container import ensure_runner_image
from restoredrill.twins.vm_spec import VMSpec

LABEL = {"restoredrill.bench": "vm"}
SUBNET = "10.236.7.0/24"
NIC = "user,restrict=on"
READY = "login:"


def spec(accel: str) -> VMSpec:
    return VMSpec(memory="384m", cpus=1, accel=accel, mac="52:54:00:be:0c:01")


def peak_rss(name: str) -> int:
    """VmHWM (kB) of the QEMU whose command line names ``-name NAME``."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
            if argv[0].endswith(b"qemu-system-x86_64") and f" {name}".encode() in b" ".join(argv):
                status = (cmdline.parent / "status").read_text()
                return int(next(s for s in status.splitlines() if s.startswith("VmHWM")).split()[1])
        except (OSError, StopIteration, IndexError):
            continue
    return 0


def bare(raw: Path, folder: Path, accel: str) -> tuple[float, int]:
    overlay = create_overlay(raw, "raw", folder / "disk0.qcow2")
    argv = [  # what an engineer would type: same overlay, disk bus, NIC, memory, CPUs
        "qemu-system-x86_64",
        "-name",
        "bare",
        "-nodefaults",
        "-machine",
        "q35",
        "-accel",
        accel,
        "-smp",
        "1",
        "-m",
        "384M",
        "-display",
        "none",
        "-vga",
        "std",
        "-drive",
        f"file={overlay},format=qcow2,if=none,id=d0,cache=unsafe",
        "-device",
        "ahci,id=sata",
        "-device",
        "ide-hd,drive=d0,bus=sata.0",
        "-netdev",
        f"{NIC},id=n0",
        "-device",
        "e1000,netdev=n0,romfile=",
        "-serial",
        f"file:{folder}/serial.log",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = folder / "serial.log"
        while not (log.exists() and READY in log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError(f"bare QEMU did not boot (exit {proc.poll()})")
            time.sleep(0.2)
        took = time.monotonic() - started
        return took, peak_rss("bare")
    finally:
        proc.kill()
        proc.wait()


def runner(raw: Path, folder: Path, accel: str, launcher) -> tuple[float, int]:
    overlay = create_overlay(raw, "raw", folder / "disk0.qcow2")
    vm = QemuVM("runner", spec(accel), [Disk(str(overlay))], folder, launcher=launcher)
    started = time.monotonic()
    with vm.start():
        vm.wait_console(READY, 600)
        took = time.monotonic() - started
        return took, peak_rss("runner")


def wired(sandbox, raw: Path, folder: Path, accel: str, n: int) -> tuple[float, int]:
    overlay = create_overlay(raw, "raw", folder / "disk0.qcow2")
    address = str(ipaddress.ip_network(SUBNET).network_address + 30)
    restored = Restored(disks=(overlay,), formats=("raw",), read_only=(raw,))
    name = f"wired{n}"
    started = time.monotonic()
    twin = sandbox.start(RunSpec(address=address, vm=spec(accel)), restored, name, LABEL)
    try:
        twin.wait_console(READY, 600)
        took = time.monotonic() - started
        return took, peak_rss(name)
    finally:
        sandbox.remove(twin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accel", choices=["tcg", "kvm"], default="tcg")
    args = parser.parse_args()
    import docker

    from restoredrill.twins.docker import DockerBackend
    from restoredrill.twins.images import ensure_base_image

    client = docker.from_env(timeout=300)
    ensure_base_image(client)
    raw = vm_image.ensure_image()
    ensure_runner_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="restoredrill-bench-vm-"))
    run = f"benchvm{uuid.uuid4().hex[:6]}"
    sandbox = DockerBackend(client).open_sandbox(run, SUBNET)
    times: dict[str, list[float]] = {"bare": [], "sandbox (wired)": [], "runner (local)": []}
    rss: dict[str, list[int]] = {k: [] for k in times}
    try:
        for n in range(1, args.rounds + 1):
            for kind in times:
                folder = tmp / f"{n}-{kind.split()[0]}"
                folder.mkdir()
                if kind == "bare":
                    took, peak = bare(raw, folder, args.accel)
                elif kind == "runner (local)":
                    took, peak = runner(raw, folder, args.accel, _local())
                else:
                    took, peak = wired(sandbox, raw, folder, args.accel, n)
                times[kind].append(took)
                rss[kind].append(peak)
                shutil.rmtree(folder, ignore_errors=True)
            print(
                f"round {n}: " + "  ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
                flush=True,
            )
    finally:
        sandbox.close()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["bare"])
    print(f"\naccel {args.accel}, {args.rounds} rounds, boot to {READY!r} on the serial console")
    for kind, values in times.items():
        med = statistics.median(values)
        print(
            f"  {kind:20s} median {med:6.1f}s  ratio {med / base:4.2f}x  "
            f"QEMU peak RSS {max(rss[kind]) / 1024:.0f} MiB"
        )
    ratios = [r / b for r, b in zip(times["sandbox (wired)"], times["bare"], strict=True)]
    print(
        f"  median of per-round ratios (wired/bare): {statistics.median(ratios):.2f}x "
        "(target <= 1.2x)"
    )
    return 0


def _local():
    from restoredrill.twins.qemu import LocalLauncher

    return LocalLauncher(nic=NIC)


if __name__ == "__main__":
    sys.exit(main())
