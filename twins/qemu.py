"""QEMU for whole-image twins: the command line, accelerator and firmware choice, the
QMP and guest-agent clients, the serial console, and a VM handle over them.

A :class:`QemuVM` runs ``qemu-system-x86_64`` under ``vm_supervisor.py`` (which stops
QEMU when this process goes, even after ``kill -9``), with everything it touches in
one scratch folder: the overlay(s), ``serial.log`` (the console, also a socket),
``qmp.sock``, ``qga.sock`` (the guest agent), the UEFI variable store. Where QEMU
runs is a *launcher*: :class:`LocalLauncher` (a child process here, no network) or
``vm_container.ContainerLauncher`` (a container on a sandbox network).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from restoredrill.sizes import format_size

from .base import ExecOutput, TwinError
from .vm_spec import VMSpec, default_mac

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SUPERVISOR = Path(__file__).with_name("vm_supervisor.py")
NIC_MODELS = {"e1000": "e1000", "virtio": "virtio-net-pci", "rtl8139": "rtl8139"}
RESERVED_MEMORY = 256 << 20
"""Host memory kept for QEMU itself and the host when checking a VM's memory."""
_ANSI = re.compile(r"\x1b(\[[0-9;?=]*[A-Za-z]|[()][0-9A-Za-z]|[=>78cDEHM])")


class VMError(TwinError):
    """A VM could not be configured, started or talked to; the message says why."""


# --- host facts ------------------------------------------------------------------------------


def host_memory() -> int:
    """Total memory of this host in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise VMError("cannot read MemTotal from /proc/meminfo")


def check_memory(spec: VMSpec, name: str) -> None:
    """Refuse a VM that asks for more memory than this host has."""
    total = host_memory()
    if spec.memory + RESERVED_MEMORY > total:
        raise VMError(
            f"{name}: vm.memory {format_size(spec.memory)} is more than this host can give "
            f"(it has {format_size(total)}, {format_size(RESERVED_MEMORY)} kept for QEMU)"
        )


def firmware_files(firmware: str) -> tuple[Path, Path] | None:
    """OVMF's code and variable template for ``uefi`` (``None`` for SeaBIOS)."""
    if firmware != "uefi":
        return None
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            raise VMError(
                f"UEFI firmware not found ({path}): install the Debian package ovmf "
                "(apt-get install ovmf), or boot with vm.firmware: bios"
            )
    return OVMF_CODE, OVMF_VARS


KVM_PROBE_S = 5.0
"""How long the firmware of a probe guest may take to reach its boot stage under KVM."""


def _firmware_boot(accel: str, limit: float) -> tuple[float | None, str]:
    """Seconds SeaBIOS takes to reach its boot stage under ``accel`` (``None``: not
    within ``limit``), and what QEMU said on stderr."""
    with tempfile.TemporaryDirectory(prefix="restoredrill-kvm-") as tmp:
        debug = Path(tmp) / "bios.log"
        command = [QEMU, "-accel", accel, "-machine", "pc", "-nodefaults", "-display", "none",
                   "-m", "64", "-no-user-config", "-debugcon", f"file:{debug}",
                   "-global", "isa-debugcon.iobase=0x402", "-qmp", "stdio"]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        took = None
        try:
            while time.monotonic() - started < limit and proc.poll() is None:
                text = debug.read_text(errors="replace") if debug.exists() else ""
                if "No bootable device" in text or "Booting from" in text:
                    took = time.monotonic() - started
                    break
                time.sleep(0.02)
        finally:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    return took, err


@functools.cache
def kvm_problem() -> str | None:
    """Why KVM cannot run a guest here, or ``None`` if it can.

    ``/dev/kvm`` existing is not enough: nested KVM may create a VM and then fail on
    its first instructions, or crawl (firmware that crawls to its boot stage, then a
    guest that never shows its console). A probe guest's SeaBIOS must reach its boot
    stage under KVM within 5 s, without a KVM error, and not crawl where TCG runs (here
    TCG takes ~0.2 s; a broken nested KVM, seconds).
    """
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist (no KVM module, or not passed to this machine)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    if not shutil.which(QEMU):
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    kvm, err = _firmware_boot("kvm", KVM_PROBE_S)
    if "KVM internal error" in err or ("kvm" in err.lower() and kvm is None):
        line = next((s for s in err.splitlines() if "KVM" in s or "kvm" in s), err.strip())
        return f"/dev/kvm is present but a guest cannot run under it ({line.strip()[:160]})"
    if kvm is None:
        return f"/dev/kvm is present but a test guest did not boot under it within {KVM_PROBE_S:g} s"
    tcg, _ = _firmware_boot("tcg", KVM_PROBE_S * 4)
    if tcg is not None and kvm > 2 * tcg + 0.5:  # a margin for QEMU's own start
        return (
            f"/dev/kvm is present but a guest runs no faster under it than emulated "
            f"({kvm:.2f} s against {tcg:.2f} s under TCG: nested virtualisation?)"
        )
    return None


def choose_accel(accel: str, name: str = "vm") -> str:
    """``kvm`` or ``tcg`` for ``accel`` (auto|kvm|tcg); ``kvm`` asked for but unusable is an error."""
    if accel == "tcg":
        return "tcg"
    problem = kvm_problem()
    if problem is None:
        return "kvm"
    if accel == "kvm":
        raise VMError(
            f"{name}: vm.accel is kvm but KVM is unusable: {problem}; "
            "use accel: auto (falls back to TCG, much slower) or fix /dev/kvm"
        )
    return "tcg"


# --- the command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """A disk as QEMU opens it: normally the throw-away overlay over a read-only backup."""

    path: str
    format: str = "qcow2"


def _disk_devices(spec: VMSpec, disks: Sequence[Disk]) -> list[str]:
    args: list[str] = []
    if spec.disk_bus == "sata":
        args += ["-device", "ahci,id=sata"]
    elif spec.disk_bus == "scsi":
        args += ["-device", "virtio-scsi-pci,id=scsi"]
    elif spec.disk_bus == "ide" and spec.machine == "q35":
        args += ["-device", "piix3-ide,id=pata"]
    for i, disk in enumerate(disks):
        args += ["-drive", f"file={disk.path},format={disk.format},if=none,id=disk{i},cache=unsafe"]
        if spec.disk_bus == "sata":
            device = f"ide-hd,drive=disk{i},bus=sata.{i}"
        elif spec.disk_bus == "ide":
            bus = "pata" if spec.machine == "q35" else "ide"
            device = f"ide-hd,drive=disk{i},bus={bus}.{i // 2},unit={i % 2}"
        elif spec.disk_bus == "scsi":
            device = f"scsi-hd,drive=disk{i},bus=scsi.0,lun={i}"
        else:
            device = f"virtio-blk-pci,drive=disk{i}"
        args += ["-device", f"{device},bootindex={i}"]
    return args


def command_line(
    spec: VMSpec,
    disks: Sequence[Disk],
    folder: str,
    *,
    accel: str,
    name: str,
    netdev: str | None = None,
) -> list[str]:
    """The full ``qemu-system-x86_64`` argv; ``folder`` is the scratch folder as QEMU sees it,
    ``netdev`` the NIC's backend (e.g. ``tap,ifname=tap0,script=no,downscript=no``; none:
    the VM has no NIC)."""
    if not disks:
        raise VMError(f"{name}: no disk to boot")
    if spec.disk_bus == "sata" and len(disks) > 6:
        raise VMError(f"{name}: a SATA controller takes at most 6 disks ({len(disks)} given)")
    return [
        QEMU,
        *_machine_args(spec, accel, name),
        *_control_args(folder),
        *_firmware_args(spec, folder),
        *_disk_devices(spec, disks),
        *_nic_args(spec, name, netdev),
    ]


def _machine_args(spec: VMSpec, accel: str, name: str) -> list[str]:
    """The machine, its CPUs and memory, no display, and QEMU's own sandbox."""
    return [
        "-name", f"{name},process=qemu-{name}"[:60],
        "-no-user-config",
        "-nodefaults",
        "-machine", spec.machine,
        "-accel", accel,
        "-smp", str(spec.cpus),
        "-m", f"{max(1, spec.memory >> 20)}M",
        "-display", "none",
        "-vga", "std",
        "-boot", "strict=on",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]  # fmt: skip


def _control_args(folder: str) -> list[str]:
    """The serial console (logged), QMP, the guest agent's channel and the pid file, all
    in ``folder``."""
    return [
        "-chardev",
        f"socket,id=console,path={folder}/console.sock,server=on,wait=off,"
        f"logfile={folder}/serial.log",
        "-serial", "chardev:console",
        "-qmp", f"unix:{folder}/qmp.sock,server=on,wait=off",
        "-chardev", f"socket,id=qga,path={folder}/qga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser",
        "-device", "virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0",
        "-pidfile", f"{folder}/qemu.pid",
    ]  # fmt: skip


def _firmware_args(spec: VMSpec, folder: str) -> list[str]:
    """UEFI's code (read-only) and the VM's own copy of its variables; BIOS: none."""
    if spec.firmware != "uefi":
        return []
    code, _ = firmware_files("uefi") or (OVMF_CODE, OVMF_VARS)
    return [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={folder}/uefi-vars.fd",
    ]  # fmt: skip


def _nic_args(spec: VMSpec, name: str, netdev: str | None) -> list[str]:
    """One NIC on ``netdev`` (its model and MAC from the spec), or none."""
    if not netdev:
        return ["-nic", "none"]
    mac = spec.mac or default_mac(name)
    return [
        "-netdev", f"{netdev},id=net0",
        "-device", f"{NIC_MODELS[spec.nic]},netdev=net0,mac={mac},romfile=",
    ]  # fmt: skip


# --- clients ---------------------------------------------------------------------------------


class _JsonLines:
    """A JSON-per-line conversation over a unix socket, with a deadline per call."""

    def __init__(self, path: Path, timeout: float, what: str) -> None:
        self.what = what
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.buf = b""
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise VMError(f"{what}: cannot connect to {path} ({exc.strerror or exc})") from None

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise VMError(f"{self.what}: connection lost ({exc.strerror or exc})") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                raise VMError(f"{self.what}: connection lost ({exc.strerror or exc})") from None
            if not chunk:
                raise VMError(f"{self.what}: connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        line = line.strip(b"\xff \r\t")
        if not line:
            return {}
        try:
            return json.loads(line)
        except ValueError:
            return {}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class QMP:
    """QEMU's machine protocol: ``execute`` a command, get its ``return`` (events skipped)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.conn = _JsonLines(path, timeout, "QMP")
        self.timeout = timeout
        try:
            deadline = time.monotonic() + timeout
            while "QMP" not in self.conn.receive(deadline):
                pass
            self.execute("qmp_capabilities")
        except BaseException:
            self.conn.close()
            raise

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.conn.send(msg)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                reply = self.conn.receive(deadline)
                if "error" in reply:
                    raise VMError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
                if "return" in reply:
                    return reply["return"]
        except TimeoutError:
            raise VMError(f"QMP {command}: no answer within {self.timeout:g}s") from None

    def close(self) -> None:
        self.conn.close()


class GuestAgent:
    """The QEMU guest agent inside the VM: run commands without SSH or WinRM."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _session(self, timeout: float) -> _JsonLines:
        conn = _JsonLines(self.path, timeout, "guest agent")
        token = uuid.uuid4().int & 0x7FFFFFFF
        deadline = time.monotonic() + timeout
        try:
            conn.send(b"\xff")
            conn.send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
            while conn.receive(deadline).get("return") != token:
                pass
        except TimeoutError:
            conn.close()
            raise VMError(
                f"guest agent did not answer within {timeout:g}s (is qemu-guest-agent "
                "installed and running in the image?)"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _call(self, conn: _JsonLines, command: str, args: dict[str, Any], deadline: float) -> Any:
        conn.send({"execute": command, "arguments": args})
        while True:
            reply = conn.receive(deadline)
            if "error" in reply:
                raise VMError(
                    f"guest agent {command}: {reply['error'].get('desc', reply['error'])}"
                )
            if "return" in reply:
                return reply["return"]

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            self._session(timeout).close()
        except VMError:
            return False
        return True

    def exec(
        self, command: Sequence[str] | str, timeout: float = 30.0, poll: float = 0.2
    ) -> ExecOutput:
        """Run ``command`` (a string goes through ``/bin/sh -c``) via guest-exec and
        guest-exec-status; VMError if the agent is silent or the command outlives ``timeout``."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        deadline = time.monotonic() + timeout
        conn = self._session(timeout)
        try:
            pid = self._call(
                conn,
                "guest-exec",
                {"path": argv[0], "arg": argv[1:], "capture-output": True},
                deadline,
            )["pid"]
            while True:
                status = self._call(conn, "guest-exec-status", {"pid": pid}, deadline)
                if status.get("exited"):
                    break
                if time.monotonic() + poll > deadline:
                    raise TimeoutError
                time.sleep(poll)
        except TimeoutError:
            raise VMError(f"guest agent: {argv!r} did not finish within {timeout:g}s") from None
        finally:
            conn.close()
        code = status.get("exitcode")
        if code is None and status.get("signal") is not None:
            code = 128 + int(status["signal"])
        return ExecOutput(
            exit_code=-1 if code is None else int(code),
            stdout=base64.b64decode(status.get("out-data", "")).decode("utf-8", "replace"),
            stderr=base64.b64decode(status.get("err-data", "")).decode("utf-8", "replace"),
        )


def console_text(raw: bytes | str) -> str:
    """Serial console output as plain text (escape sequences and carriage returns gone)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _ANSI.sub("", text).replace("\r", "")


# --- launchers and the VM --------------------------------------------------------------------


class Running(Protocol):
    """A started supervisor (with its QEMU): a local process or a container."""

    def is_running(self) -> bool: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Where QEMU runs: gives the folder as QEMU sees it, and starts the supervisor."""

    def qemu_folder(self, folder: Path) -> str: ...

    def netdev(self) -> str | None: ...

    def start(self, folder: Path, argv: list[str], name: str) -> Running: ...


@dataclass
class _Process:
    proc: subprocess.Popen

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@dataclass
class LocalLauncher:
    """QEMU as a child of this process (tests, benchmarks): no NIC, or ``netdev`` (e.g.
    ``user,restrict=on``: a NIC that reaches nothing). Sandboxed VMs use the container."""

    nic: str | None = None

    def qemu_folder(self, folder: Path) -> str:
        return str(folder)

    def netdev(self) -> str | None:
        return self.nic

    def start(self, folder: Path, argv: list[str], name: str) -> Running:
        command = [sys.executable, str(SUPERVISOR), str(folder), "--", *argv]
        log = (folder / "supervisor.log").open("ab")
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        return _Process(proc)


@dataclass
class QemuVM:
    """One VM: start it, watch its console, take screenshots, use its agent, stop it.

    ``folder`` is the scratch folder (created if missing, removed by :meth:`stop` when
    ``owns_folder``); ``disks`` are paths as QEMU sees them (normally overlays inside it).
    """

    name: str
    spec: VMSpec
    disks: Sequence[Disk]
    folder: Path
    launcher: Any = field(default_factory=LocalLauncher)
    owns_folder: bool = True
    address: str | None = None
    """The production address the guest configures (checks connect to it)."""
    evidence_dir: Path | None = None
    extra_args: Sequence[str] = ()
    """More QEMU arguments, appended as given (e.g. ``-S`` to hold the CPUs at reset)."""
    """Where checks keep screenshots (default: ``folder/evidence``)."""
    accel: str = ""
    argv: list[str] = field(default_factory=list)
    started_at: float = 0.0
    _running: Running | None = None
    _lifeline: socket.socket | None = None

    def start(self, connect_within: float = 30.0) -> QemuVM:
        """Check the request (memory, firmware, accelerator), then boot."""
        check_memory(self.spec, self.name)
        firmware = firmware_files(self.spec.firmware)
        self.accel = choose_accel(self.spec.accel, self.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        if firmware:
            shutil.copyfile(firmware[1], self.folder / "uefi-vars.fd")
        qfolder = self.launcher.qemu_folder(self.folder)
        disks = [Disk(self._as_qemu_sees(d.path, qfolder), d.format) for d in self.disks]
        self.argv = command_line(
            self.spec,
            disks,
            qfolder,
            accel=self.accel,
            name=self.name,
            netdev=self.launcher.netdev(),
        ) + list(self.extra_args)
        self.started_at = time.monotonic()
        self._running = self.launcher.start(self.folder, self.argv, self.name)
        try:
            self._claim(connect_within)
            self._await_qmp(connect_within)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_qmp(self, within: float) -> None:
        """Return once QEMU answers on QMP (it started); VMError with its messages if not."""
        deadline = time.monotonic() + within
        while True:
            if (self.folder / "qmp.sock").exists():
                try:
                    self.qmp("query-status")
                    return
                except VMError:
                    pass
            if not self.is_running() or time.monotonic() > deadline:
                raise VMError(f"{self.name}: QEMU did not start: {self.log_tail()}")
            time.sleep(0.05)

    def _as_qemu_sees(self, path: str, qfolder: str) -> str:
        try:
            return f"{qfolder}/{Path(path).resolve().relative_to(self.folder.resolve())}"
        except ValueError:
            return path

    def _claim(self, within: float) -> None:
        """Hold the supervisor's lifeline (QEMU ends when this process does)."""
        deadline = time.monotonic() + within
        path = self.folder / "lifeline.sock"
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
            except OSError:
                sock.close()
                if not self.is_running() or time.monotonic() > deadline:
                    raise VMError(f"{self.name}: QEMU did not start: {self.log_tail()}") from None
                time.sleep(0.05)
                continue
            fcntl.fcntl(sock, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            self._lifeline = sock
            return

    # --- state ---------------------------------------------------------------------------

    def is_running(self) -> bool:
        return (
            self._running is not None
            and self._running.is_running()
            and not (self.folder / "exit-code").exists()
        )

    def log_tail(self, lines: int = 8) -> str:
        """QEMU's own recent messages (its errors), or the supervisor's."""
        for name in ("qemu.log", "supervisor.log"):
            path = self.folder / name
            if path.is_file() and (text := path.read_text(errors="replace").strip()):
                return " | ".join(text.splitlines()[-lines:])
        return "no output"

    def console(self) -> str:
        """Everything the serial console printed so far, as plain text."""
        path = self.folder / "serial.log"
        return console_text(path.read_bytes()) if path.is_file() else ""

    def save_console(self, dest: Path) -> Path:
        """Copy the serial console's log to ``dest`` (evidence kept with the run), as text."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(self.console())
        return dest

    def console_tail(self, lines: int = 20) -> str:
        text = [s for s in self.console().splitlines() if s.strip()]
        return "\n".join(text[-lines:]) or "(the console printed nothing)"

    def wait_console(self, pattern: str, timeout: float, poll: float = 0.2) -> float:
        """Wait until the console shows ``pattern`` (a regular expression); return the
        seconds since start. VMError with the console's last lines when QEMU stops or
        ``timeout`` passes."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if regex.search(self.console()):
                return time.monotonic() - self.started_at
            if not self.is_running():
                raise VMError(
                    f"{self.name}: QEMU stopped before the console showed {pattern!r} "
                    f"({self.log_tail()}); console's last lines:\n{self.console_tail()}"
                )
            if time.monotonic() >= deadline:
                raise VMError(
                    f"{self.name}: the console did not show {pattern!r} within {timeout:g}s"
                    f"{self._bus_hint()}; console's last lines:\n{self.console_tail()}"
                )
            time.sleep(poll)

    def _bus_hint(self) -> str:
        if self.spec.disk_bus in ("virtio", "scsi"):
            return (
                f" (hint: an image of a physical machine may lack {self.spec.disk_bus} "
                "drivers: try vm.disk_bus: sata or ide)"
            )
        return ""

    # --- QMP and agent -------------------------------------------------------------------

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        client = QMP(self.folder / "qmp.sock")
        try:
            return client.execute(command, arguments)
        finally:
            client.close()

    def screendump(self, out: Path) -> Path:
        """Save the VGA screen as PNG at ``out`` (QMP ``screendump``, format png)."""
        name = f"screen-{uuid.uuid4().hex[:8]}.png"
        qpath = f"{self.launcher.qemu_folder(self.folder)}/{name}"
        self.qmp("screendump", {"filename": qpath, "format": "png"})
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.folder / name, out)
        return out

    @property
    def agent(self) -> GuestAgent:
        return GuestAgent(self.folder / "qga.sock")

    def agent_exec(self, command: Sequence[str] | str, timeout: float = 30.0) -> ExecOutput:
        return self.agent.exec(command, timeout)

    def exec(self, command: Sequence[str] | str, timeout: float | None = None) -> ExecOutput:
        """A command in the guest, through its agent (a check's ``Target.exec``)."""
        return self.agent.exec(command, 30.0 if timeout is None else timeout)

    @property
    def testinfra_url(self) -> str | None:
        return None  # host checks reach a VM over ssh:// or winrm:// at its address (phase 2)

    def screens_dir(self) -> Path:
        return self.evidence_dir or self.folder / "evidence"

    # --- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop QEMU (closing the lifeline ends it), then remove the scratch folder."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        if self._running is not None:
            deadline = time.monotonic() + 10
            while self._running.is_running() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._running.kill()
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> QemuVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
