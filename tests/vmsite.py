"""A site with a VM twin, and a check target like one, for the VM inventory tests
(tests/unit/test_vm_inventory.py and tests/test_vm_inventory_remote.py)."""

from __future__ import annotations

from pathlib import Path

SITE = """\
site: vm-inventory
sandbox: {{subnets: [10.235.0.0/24]}}
systems:
  - name: hmi
    backup: {{kind: disk_image, path: hmi.vhdx}}
    run:
      address: 10.235.0.30
{run}
    ready: {{kind: console, pattern: "login:"}}
    checks:
{checks}
    rto: 10m
  - name: mes
    backup: {{kind: image_archive, path: mes.tar}}
{mes}
    rto: 5m
"""


def site(
    tmp_path: Path, run: str = "", checks: str = "      - {kind: tcp, port: 22}", mes: str = ""
) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(run=run, checks=checks, mes=mes))
    return path


class FakeVM:
    """A check target like a VM twin: an address and a WinRM login (nothing listens)."""

    kind = "vm"
    name = "hmi"

    def __init__(self, address: str, remote) -> None:
        self.address = address
        self.remote = remote

    @property
    def testinfra_url(self) -> str:
        return self.remote.url(self.address)

    def exec(self, command, timeout=None):  # pragma: no cover - never used by host checks
        raise AssertionError("a VM's host checks log in; they never exec")


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
