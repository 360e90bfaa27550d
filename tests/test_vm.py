"""Whole-image twins booted for real under QEMU (TCG): console, screenshots with OCR, the
guest agent, firmware and buses, the read-only backup, teardown after normal end, failure,
Ctrl-C and kill -9. The network tests (production address, isolation) are in
test_vm_network.py. The test image is built once per machine (vmfixtures)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from vmfixtures import qemu_using, sha256

from restoredrill.checks import agent, screenshot
from restoredrill.checks.base import SandboxGuard, Status
from restoredrill.twins import vm_image
from restoredrill.twins.qemu import Disk, LocalLauncher, QemuVM, VMError
from restoredrill.twins.sources.disk_image import create_overlay, detect
from restoredrill.twins.vm_readiness import ConsoleProbe, wait_console
from restoredrill.twins.vm_spec import VMSpec

pytestmark = pytest.mark.vm

BOOT = 420.0
"""Seconds a TCG boot may take on a loaded 2-core machine (it takes 10-60 s)."""

GUARD = SandboxGuard()
"""Agent and screenshot checks go through QMP and the guest agent, never the network."""


def boot(name: str, backing: Path, folder: Path, nic: str | None = None, **spec) -> QemuVM:
    """A VM over a fresh overlay; with ``nic`` (a model) its backend reaches nothing."""
    overlay = create_overlay(backing, detect(backing), folder / "disk0.qcow2")
    vm_spec = VMSpec(memory="384m", cpus=1, accel="tcg", nic=nic or "e1000", **spec)
    launcher = LocalLauncher("user,restrict=on" if nic else None)
    return QemuVM(
        name, vm_spec, [Disk(str(overlay))], folder, launcher, evidence_dir=folder.parent / "ev"
    )


NIC_FACTS = (
    "basename $(readlink /sys/class/net/eth0/device/driver); cat /sys/class/net/eth0/address"
)


def test_bios_sata_vmdk_console_screenshot_agent_and_read_only_backup(vm_formats, tmp_path):
    backup = tmp_path / "hmi.vmdk"
    shutil.copy(vm_formats["vmdk"], backup)
    before = sha256(backup)
    folder = tmp_path / "scratch"
    vm = boot("hmi", backup, folder, nic="rtl8139", mac="52:54:00:00:81:39")
    with vm.start():
        assert vm.accel == "tcg"
        waited = wait_console(vm, ConsoleProbe(pattern=r"testvm login:", timeout=f"{BOOT:g}s"))
        assert waited > 0
        assert "RESTOREDRILL TEST VM" in vm.console()

        seen = screenshot.run(
            screenshot.Spec(text=["RESTOREDRILL TEST VM", "testvm login"], timeout=120),
            vm,
            GUARD,
        )[0]
        assert seen.status is Status.PASS, seen
        shot = Path(seen.observed["screenshot"])
        assert shot.parent == tmp_path / "ev" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert seen.observed["sha256"] == sha256(shot)

        absent = screenshot.run(
            screenshot.Spec(
                text=["Press Ctrl+Alt+Delete"], timeout=60, unchanged_for=4, interval=1
            ),
            vm,
            GUARD,
        )[0]
        assert absent.status is Status.FAIL
        assert absent.observed["missing"] == ["Press Ctrl+Alt+Delete"]
        assert "expected text 'Press Ctrl+Alt+Delete' not on the screen" in absent.message
        assert "login:" in absent.observed["text"].lower()

        ran = agent.run(agent.Spec(command=["cat", "/etc/hostname"], stdout="testvm"), vm, GUARD)
        assert ran[0].status is Status.PASS, ran[0]
        ran = agent.run(agent.Spec(command="echo oops >&2; exit 3", exit_code=0), vm, GUARD)
        assert ran[0].status is Status.FAIL
        assert ran[0].observed == {"exit_code": 3, "stdout": "", "stderr": "oops"}
        ran = agent.run(
            agent.Spec(command="cat /etc/restoredrill/network.conf", contains="10.239.9.9"),
            vm,
            GUARD,
        )
        assert (
            ran[0].status is Status.FAIL and "ADDRESS=10.230.7.30/24" in ran[0].observed["stdout"]
        )
        # the guest writes to its disk: the overlay takes it, the backup does not change
        wrote = vm.agent_exec("echo restored > /root/marker && sync && cat /root/marker")
        assert wrote.stdout.strip() == "restored"

        # a blank screen (cleared, cursor hidden) is no proof of life, whatever it shows
        vm.agent_exec(r"printf '\033[2J\033[?25l' > /dev/tty1")
        blank = screenshot.run(screenshot.Spec(timeout=6, interval=1), vm, GUARD)[0]
        assert blank.status is Status.FAIL, blank
        assert blank.observed["screen"] == "all one colour (#000000)"

        with pytest.raises(VMError, match=r"did not show 'never shown' within 2s; console's last"):
            vm.wait_console("never shown", 2)
        assert qemu_using(folder)
        kept = vm.save_console(tmp_path / "ev" / "hmi-console.log")
    assert not qemu_using(folder)
    assert not folder.exists()  # overlay, sockets and console log went with the VM
    assert sha256(backup) == before
    assert "testvm login:" in kept.read_text() and "\x1b" not in kept.read_text()


def test_uefi_virtio_vhdx_boots(vm_formats, tmp_path):
    folder = tmp_path / "scratch"
    vm = boot(
        "efi",
        vm_formats["vhdx"],
        folder,
        nic="virtio",
        firmware="uefi",
        disk_bus="virtio",
        mac="52:54:00:00:10:af",
    )
    with vm.start():
        assert "if=pflash" in " ".join(vm.argv)
        vm.wait_console(r"testvm login:", BOOT)
        out = vm.agent_exec("ls /sys/firmware/efi >/dev/null && echo uefi; ls /sys/block")
        assert out.stdout.split()[0] == "uefi" and "vda" in out.stdout.split()
        assert vm.agent_exec(NIC_FACTS).stdout.split() == ["virtio_net", "52:54:00:00:10:af"]
        with pytest.raises(VMError, match=r"lack virtio drivers: try vm.disk_bus: sata or ide"):
            vm.wait_console("never shown", 1)
    assert not qemu_using(folder) and not folder.exists()


def test_broken_boot_and_hung_screen_end_as_errors_with_the_console_tail(vm_raw, tmp_path):
    broken = vm_image.break_boot(vm_raw, tmp_path / "broken.raw")
    folder = tmp_path / "scratch"
    vm = boot("broken", broken, folder)
    with vm.start(), pytest.raises(VMError) as err:
        wait_console(vm, ConsoleProbe(pattern="login:", timeout="25s"))
    message = str(err.value)
    assert "did not show 'login:' within 25s; console's last lines:" in message
    assert "Loading /vmlinuz failed" in message, message
    assert not qemu_using(folder) and not folder.exists()

    # CPUs held at reset: the screen never changes, the screenshot check calls it hung
    frozen = boot("frozen", broken, tmp_path / "frozen")
    frozen.extra_args = ["-S"]
    with frozen.start():
        hung = screenshot.run(
            screenshot.Spec(text=["login:"], timeout=60, unchanged_for=3, interval=1),
            frozen,
            GUARD,
        )[0]
    assert hung.status is Status.FAIL
    assert hung.observed["missing"] == ["login:"]
    assert "the screen did not change for" in hung.message


OWNER = """
import sys, time
from pathlib import Path
from restoredrill.twins.qemu import Disk, QemuVM
from restoredrill.twins.vm_spec import VMSpec
folder = Path(sys.argv[1])
vm = QemuVM("owned", VMSpec(memory="256m", cpus=1, accel="tcg"),
            [Disk(str(folder / "disk0.qcow2"))], folder)
with vm.start():
    print("started", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["kill -9", "ctrl-c", "failure"])
def test_nothing_left_when_the_owner_dies_or_is_interrupted(vm_raw, tmp_path, how):
    folder = tmp_path / "scratch"
    create_overlay(vm_raw, "raw", folder / "disk0.qcow2")
    script = textwrap.dedent(OWNER)
    if how == "failure":
        script = script.replace("time.sleep(600)", "raise RuntimeError('a check crashed')")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        if how != "failure":
            assert qemu_using(folder)
        if how == "kill -9":
            os.kill(proc.pid, signal.SIGKILL)
        elif how == "ctrl-c":
            os.kill(proc.pid, signal.SIGINT)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while (qemu_using(folder) or folder.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not qemu_using(folder)
        assert not folder.exists(), sorted(p.name for p in folder.iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
