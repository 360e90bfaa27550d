"""The disk_image source and the VM's bad-input errors, with real qemu-img (no boot)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from vmfixtures import sha256

from restoredrill.twins import qemu
from restoredrill.twins.qemu import Disk, QemuVM, VMError, command_line
from restoredrill.twins.sources.base import BackupError, RestoreContext
from restoredrill.twins.sources.disk_image import Spec, create_overlay, detect, inspect
from restoredrill.twins.vm_spec import VMSpec

pytestmark = pytest.mark.vm

USER_NAMES = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhdx": "vhdx",
    "vdi": "vdi",
    "vpc": "vhd",
}


def test_every_format_is_detected_by_content_not_extension(vm_formats, tmp_path):
    for fmt, path in vm_formats.items():
        disguised = tmp_path / f"backup-{fmt}.img"  # the extension says nothing
        os.link(path, disguised) if path.stat().st_dev == tmp_path.stat().st_dev else shutil.copy(
            path, disguised
        )
        image = inspect(disguised)
        assert (image.format, image.sha256, image.size_bytes) == (
            fmt,
            sha256(path),
            path.stat().st_size,
        )
        raw_size = vm_formats["raw"].stat().st_size
        if fmt == "vpc":  # VHD rounds the disk up to a whole CHS geometry
            assert raw_size <= image.virtual_size < raw_size + (16 << 20)
        else:
            assert image.virtual_size == raw_size
        spec = Spec(path=str(disguised), format=USER_NAMES[fmt])
        ref = spec.locate(tmp_path)
        assert (ref.source, ref.backup_id, ref.sha256) == (
            "disk_image",
            disguised.name,
            image.sha256,
        )


def test_newest_match_and_several_disks(vm_formats, tmp_path):
    (tmp_path / "hmi").mkdir()
    old, new = tmp_path / "hmi" / "hmi-1.vmdk", tmp_path / "hmi" / "hmi-2.vmdk"
    shutil.copy(vm_formats["vmdk"], old)
    shutil.copy(vm_formats["vmdk"], new)
    os.utime(old, (1_700_000_000, 1_700_000_000))
    ref = Spec(directory="hmi", pattern="hmi-*.vmdk").locate(tmp_path)
    assert ref.backup_id == "hmi-2.vmdk"
    two = Spec(disks=[{"path": "hmi/hmi-2.vmdk"}, {"directory": "hmi", "pattern": "hmi-1*"}])
    ref = two.locate(tmp_path)
    assert ref.backup_id == "hmi-2.vmdk + hmi-1.vmdk"
    assert ref.size_bytes == 2 * new.stat().st_size
    assert ref.created_at.timestamp() == 1_700_000_000  # the oldest disk dates the backup
    restored = two.restore(
        ref, RestoreContext(docker=None, workdir=tmp_path / "work", image_tag="")
    )
    assert [p.name for p in restored.disks] == ["disk0.qcow2", "disk1.qcow2"]
    assert [b.path for b in restored.backing] == [new, old]


def test_not_a_disk_image_is_refused(tmp_path):
    noise = tmp_path / "hmi.vhdx"
    noise.write_bytes(os.urandom(1 << 20))
    with pytest.raises(BackupError, match=r"hmi.vhdx: not a disk image: qemu-img sees raw data"):
        detect(noise)
    text = tmp_path / "notes.vmdk"
    text.write_text("not an image\n" * 100)
    with pytest.raises(BackupError, match="not a disk image"):
        Spec(path="notes.vmdk").locate(tmp_path)


def test_truncated_or_corrupt_images_are_errors_with_qemu_img_reason(vm_formats, tmp_path):
    for fmt in ("qcow2", "vhdx", "vpc", "raw"):
        cut = tmp_path / f"cut.{fmt}"
        with vm_formats[fmt].open("rb") as src, cut.open("wb") as dst:
            dst.write(src.read(vm_formats[fmt].stat().st_size // 3))
        with pytest.raises(BackupError) as err:
            inspect(cut)
        message = str(err.value)
        assert message.startswith(str(cut)), message
        assert any(w in message for w in ("corrupt", "truncated", "not a readable")), message


def test_wrong_declared_format(vm_formats, tmp_path):
    shutil.copy(vm_formats["vdi"], tmp_path / "a.vhdx")
    with pytest.raises(BackupError, match="is a vdi image, but the inventory says format: vhdx"):
        Spec(path="a.vhdx", format="vhdx").locate(tmp_path)


def test_spec_validation():
    with pytest.raises(ValidationError, match="not both"):
        Spec(path="a", directory="b")
    with pytest.raises(ValidationError, match="not both"):
        Spec(path="a", disks=[{"path": "b"}])
    with pytest.raises(ValidationError):
        Spec(path="a", format="iso")
    with pytest.raises(ValidationError, match="not a MAC"):
        VMSpec(mac="52:54:00:zz:00:01")
    with pytest.raises(ValidationError, match="multicast"):
        VMSpec(mac="01:00:5e:00:00:01")
    assert VMSpec(memory="512m", mac="52-54-00-AA-BB-CC").mac == "52:54:00:aa:bb:cc"


def test_overlay_over_read_only_backing(vm_formats, tmp_path):
    backing = tmp_path / "disk.vmdk"
    shutil.copy(vm_formats["vmdk"], backing)
    overlay = create_overlay(backing, "vmdk", tmp_path / "scratch" / "disk0.qcow2")
    info = qemu_img_info(overlay)
    assert (info["format"], info["backing-filename"], info["backing-filename-format"]) == (
        "qcow2",
        str(backing),
        "vmdk",
    )


def qemu_img_info(path: Path) -> dict:
    import json
    import subprocess

    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    )
    return json.loads(out.stdout)


def test_command_line_buses_nics_mac_firmware(tmp_path):
    disks = [Disk("/vm/disk0.qcow2"), Disk("/vm/disk1.qcow2")]
    argv = command_line(
        VMSpec(),
        disks,
        "/vm",
        accel="tcg",
        name="hmi",
        netdev="tap,ifname=tap0,script=no,downscript=no",
    )
    text = " ".join(argv)
    assert "-device ahci,id=sata" in text
    assert "ide-hd,drive=disk0,bus=sata.0,bootindex=0" in text
    assert "ide-hd,drive=disk1,bus=sata.1,bootindex=1" in text
    assert "-device e1000,netdev=net0,mac=52:54:00:" in text
    assert "ifname=tap0,script=no,downscript=no" in text
    assert "if=pflash" not in text and "-accel tcg" in text
    spec = VMSpec(disk_bus="virtio", nic="virtio", mac="52:54:00:12:34:56", firmware="uefi")
    text = " ".join(
        command_line(
            spec,
            disks[:1],
            "/vm",
            accel="kvm",
            name="hmi",
            netdev="tap,ifname=tap0,script=no,downscript=no",
        )
    )
    assert "virtio-blk-pci,drive=disk0,bootindex=0" in text
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56" in text
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" in text
    text = " ".join(
        command_line(
            VMSpec(disk_bus="scsi", nic="rtl8139"), disks[:1], "/vm", accel="tcg", name="x"
        )
    )
    assert "scsi-hd,drive=disk0,bus=scsi.0" in text and "-nic none" in text
    text = " ".join(
        command_line(VMSpec(disk_bus="ide", machine="pc"), disks, "/vm", accel="tcg", name="x")
    )
    assert "bus=ide.0,unit=0" in text and "bus=ide.0,unit=1" in text


def test_bad_requests_name_the_fix(monkeypatch, tmp_path, vm_raw):
    disk = [Disk(str(vm_raw), "raw")]
    huge = VMSpec(memory=qemu.host_memory() * 2, accel="tcg")
    with pytest.raises(VMError, match=r"vm.memory .* is more than this host can give"):
        QemuVM("big", huge, disk, tmp_path / "a").start()
    monkeypatch.setattr(qemu, "OVMF_CODE", tmp_path / "absent" / "OVMF_CODE_4M.fd")
    with pytest.raises(VMError, match="install the Debian package ovmf"):
        QemuVM(
            "efi", VMSpec(firmware="uefi", memory="256m", accel="tcg"), disk, tmp_path / "b"
        ).start()
    monkeypatch.undo()
    problem = qemu.kvm_problem()
    if problem is None:  # a machine where KVM works: kvm is chosen
        assert qemu.choose_accel("kvm") == "kvm"
    else:  # here: /dev/kvm exists but nested KVM fails, which the probe must notice
        with pytest.raises(VMError, match="vm.accel is kvm but KVM is unusable: /dev/kvm"):
            qemu.choose_accel("kvm", "hmi")
        assert qemu.choose_accel("auto") == "tcg"
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_demo_disk_images_vmdk_and_broken_vhdx(vm_raw, tmp_path):
    from vmfixtures import CONFIG

    from restoredrill.twins.vm_demo import demo_disk_images

    good, broken = demo_disk_images(tmp_path, CONFIG)
    assert (good.parent.name, detect(good)) == ("hmi-vm", "vmdk")
    assert (broken.parent.name, detect(broken)) == ("hmi-vm-broken", "vhdx")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [good.name, broken.name]
    )
    stamps = good.stat().st_mtime_ns, broken.stat().st_mtime_ns
    assert demo_disk_images(tmp_path, CONFIG) == (good, broken)  # made once, reused
    assert (good.stat().st_mtime_ns, broken.stat().st_mtime_ns) == stamps


def test_qemu_refusing_its_command_line_is_an_error_with_its_message(vm_raw, tmp_path):
    folder = tmp_path / "scratch"
    overlay = create_overlay(vm_raw, "raw", folder / "disk0.qcow2")
    vm = QemuVM(
        "odd",
        VMSpec(memory="256m", accel="tcg"),
        [Disk(str(overlay))],
        folder,
        extra_args=["-device", "no-such-device"],
    )
    with pytest.raises(VMError, match="odd: QEMU did not start: .*'no-such-device' is not a valid"):
        vm.start()
    assert not folder.exists()
