"""A VM twin in the inventory: what only a VM can do, what a VM cannot take, what this host
cannot give it; each an error naming file, line and field (no VM is booted here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vmsite import FakeVM, closed_port, site

from restoredrill.flows.inventory import InventoryError, load_site
from restoredrill.twins import qemu
from restoredrill.twins.access import AccessError, SshAccess, WinrmAccess


def problems(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_site(path)
    return caught.value.problems


def test_a_vm_with_the_defaults_and_every_vm_check_is_valid(tmp_path) -> None:
    checks = (
        "      - {kind: screenshot, text: [Login]}\n"
        "      - {kind: agent, command: [hostname], stdout: hmi}\n"
        "      - {kind: host, file: /etc/hostname}\n"
        "      - {kind: testinfra, file: tests/test_hmi.py}"
    )
    run = "      vm: {memory: 256m, ssh: {password_env: HMI_PW}}"
    loaded = load_site(site(tmp_path, run, checks))
    hmi = loaded.site.system("hmi")
    assert hmi.run.vm.ssh.user == "root" and hmi.run.vm.disk_bus == "sata"
    assert [c.kind for c in hmi.checks] == ["screenshot", "agent", "host", "testinfra"]


def test_container_fields_on_a_vm_and_vm_things_on_a_container_name_their_line(tmp_path) -> None:
    run = "      command: [/sbin/init]\n      image: base:bookworm"
    mes = (
        "    run: {vm: {memory: 1g}}\n"
        "    ready: {kind: console, pattern: x}\n"
        "    checks: [{kind: screenshot, text: [x]}]"
    )
    found = problems(site(tmp_path, run, mes=mes))
    where = str(tmp_path / "site.yaml")
    assert (
        f"{where}:8: systems[0].run.command: a disk image boots as a VM: this field applies "
        "to container twins only"
    ) in found
    assert any(p.startswith(f"{where}:9: systems[0].run.image: a disk image boots") for p in found)
    assert any(p.startswith(f"{where}:16: systems[1].run.vm: boots a disk image") for p in found)
    assert (
        f"{where}:17: systems[1].ready.kind: a console probe needs a VM twin (disk_image)" in found
    )
    assert any(
        p.startswith(f"{where}:18: systems[1].checks[0].kind: screenshot checks need a VM")
        for p in found
    )


def test_host_checks_on_a_vm_need_a_login(tmp_path) -> None:
    found = problems(site(tmp_path, checks="      - {kind: host, file: /etc/hostname}"))
    assert (
        len(found) == 1 and ":11: systems[0].checks[0].kind: host checks on a VM log in" in found[0]
    )
    assert "run.vm.ssh" in found[0]


def test_a_vm_needs_its_address(tmp_path) -> None:
    path = site(tmp_path)
    path.write_text(
        path.read_text().replace("      address: 10.235.0.30\n", "      vm: {cpus: 1}\n")
    )
    assert any("systems[0].run.address: is required for a VM" in p for p in problems(path))


def test_bad_virtual_hardware_is_refused_with_its_line(tmp_path) -> None:
    run = '      vm: {disk_bus: floppy, nic: ne2000, mac: "01:00:5e:00:00:01", cpus: 0}'
    found = problems(site(tmp_path, run))
    assert any(":8: systems[0].run.vm.disk_bus:" in p and "sata" in p for p in found), found
    assert any(":8: systems[0].run.vm.nic:" in p for p in found)
    assert any(":8: systems[0].run.vm.mac:" in p and "multicast" in p for p in found)
    assert any(":8: systems[0].run.vm.cpus:" in p for p in found)


def test_unknown_image_format_is_an_inventory_error(tmp_path) -> None:
    path = site(tmp_path)
    path.write_text(path.read_text().replace("path: hmi.vhdx}", "path: hmi.vhdx, format: vhdz}"))
    found = problems(path)
    assert any(":5: systems[0].backup.format:" in p and "'vhdx'" in p for p in found), found


def test_missing_ovmf_names_the_package_and_kvm_asked_for_names_dev_kvm(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(qemu, "OVMF_CODE", tmp_path / "absent" / "OVMF_CODE_4M.fd")
    monkeypatch.setattr(qemu, "kvm_problem", lambda: "/dev/kvm does not exist (test)")
    found = problems(site(tmp_path, "      vm: {firmware: uefi, accel: kvm}"))
    firmware = [p for p in found if "systems[0].run.vm.firmware:" in p]
    assert firmware and "install the Debian package ovmf" in firmware[0], found
    accel = [p for p in found if "systems[0].run.vm.accel:" in p]
    assert accel and "/dev/kvm" in accel[0] and "accel: auto" in accel[0], found
    # accel: auto falls back to TCG: no error
    assert not any("accel" in p for p in problems(site(tmp_path, "      vm: {firmware: uefi}")))


# --- credentials: named, read when needed, never shown ------------------------------------


def test_credentials_are_named_never_given(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="name a secret"):
        SshAccess(user="root")
    with pytest.raises(ValueError, match="not both"):
        SshAccess(password_env="A", password_file="b")
    monkeypatch.delenv("RD_TEST_ABSENT", raising=False)
    with pytest.raises(AccessError, match="environment variable RD_TEST_ABSENT is not set"):
        SshAccess(password_env="RD_TEST_ABSENT").password()
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    access = SshAccess(password_file="pw").resolved(tmp_path)
    assert access.password() == "s3cr3t-value"
    assert access.url("10.235.0.30") == "ssh://root@10.235.0.30:22"
    assert "s3cr3t" not in access.model_dump_json()  # what a subprocess is handed
    with pytest.raises(AccessError, match=r"cannot read .*absent \(No such file"):
        SshAccess(password_file=str(tmp_path / "absent")).password()


def test_winrm_host_check_fails_clearly_and_never_shows_the_password(monkeypatch) -> None:
    from restoredrill.checks.base import SandboxGuard, Status
    from restoredrill.checks.host import HostCheck
    from restoredrill.checks.host import run as run_host

    monkeypatch.setenv("RD_TEST_WINRM_PW", "Wr0ng-but-secret")
    port = closed_port()
    target = FakeVM("127.0.0.1", WinrmAccess(password_env="RD_TEST_WINRM_PW", port=port, timeout=5))
    [result] = run_host(HostCheck(command="hostname"), target, SandboxGuard(["0.0.0.0/0"]))
    assert result.status is Status.ERROR
    assert f"winrm Administrator@127.0.0.1:{port}: connection refused" in result.message
    assert "password from RD_TEST_WINRM_PW" in result.message
    assert "Wr0ng-but-secret" not in result.model_dump_json()
    assert target.testinfra_url == f"winrm://Administrator@127.0.0.1:{port}"


def test_ssh_host_check_fails_clearly_and_never_shows_the_password(monkeypatch) -> None:
    from restoredrill.checks.base import SandboxGuard, Status
    from restoredrill.checks.host import HostCheck
    from restoredrill.checks.host import run as run_host

    monkeypatch.setenv("RD_TEST_SSH_PW", "S3cret-ssh")
    port = closed_port()
    target = FakeVM("127.0.0.1", SshAccess(password_env="RD_TEST_SSH_PW", port=port, timeout=5))
    [result] = run_host(HostCheck(file="/etc/hostname"), target, SandboxGuard(["0.0.0.0/0"]))
    assert result.status is Status.ERROR
    assert result.message == f"ssh root@127.0.0.1:{port}: cannot connect: connection refused"
    assert "S3cret-ssh" not in result.model_dump_json()


def test_a_vm_without_a_login_says_how_to_give_one() -> None:
    from restoredrill.checks.base import SandboxGuard
    from restoredrill.checks.host import HostCheck
    from restoredrill.checks.host import run as run_host

    class Bare(FakeVM):
        testinfra_url = None

    [result] = run_host(
        HostCheck(file="/x"), Bare("10.235.0.30", None), SandboxGuard(["0.0.0.0/0"])
    )
    assert "is a VM without a login for checks" in result.message and "run.vm.ssh" in result.message


def test_kvm_that_crawls_is_not_used(monkeypatch) -> None:
    """A nested KVM whose firmware reaches its boot stage only after seconds (TCG: 0.2 s)
    hung every guest: it counts as unusable, and accel: auto runs TCG."""
    import os

    exists, access = os.path.exists, os.access
    monkeypatch.setattr(qemu.os.path, "exists", lambda p: p == "/dev/kvm" or exists(p))
    monkeypatch.setattr(qemu.os, "access", lambda p, m: p == "/dev/kvm" or access(p, m))
    monkeypatch.setattr(qemu.shutil, "which", lambda name: f"/usr/bin/{name}")
    times = {"kvm": 3.1, "tcg": 0.2}
    monkeypatch.setattr(qemu, "_firmware_boot", lambda accel, limit: (times[accel], ""))
    problem = qemu.kvm_problem.__wrapped__()
    assert problem and "no faster under it than emulated (3.10 s against 0.20 s" in problem
    times["kvm"] = 0.15  # a KVM that works: as fast as TCG's start, or faster
    assert qemu.kvm_problem.__wrapped__() is None
    times["kvm"] = None
    assert "did not boot under it within 5 s" in qemu.kvm_problem.__wrapped__()
