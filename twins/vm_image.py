"""A small bootable Linux disk image, built offline from Debian's packages (the demo's VM).

What it is: an MBR disk with two partitions, bootable under SeaBIOS *and* OVMF:

- ``BOOT`` (FAT16, type 0xEF, active): ``syslinux`` for BIOS (installed by its mtools
  variant, no mount) and ``systemd-boot`` as ``EFI/BOOT/BOOTX64.EFI`` for UEFI, both
  booting ``/vmlinuz`` (Debian's ``linux-image-amd64``) with a tiny initramfs
  (busybox + the disk drivers of every bus: sata, ide, virtio, scsi);
- ``vmroot`` (ext4, made by ``mkfs.ext4 -d``): Debian minbase with python3,
  dropbear, qemu-guest-agent and iproute2, run by busybox ``init`` (no systemd: it
  reaches ``login:`` in seconds under TCG). ``/etc/restoredrill/network.conf`` holds
  its static production address; a 60-line service reads a PLC register over
  Modbus TCP and serves it over HTTP; ``login:`` shows on the serial console and on
  the VGA console (so a screenshot has text to read).

Nothing is mounted: the partitions are built as files and placed into the disk with
their MBR by this module. The kernel package is unpacked with ``dpkg-deb -x`` (its
maintainer scripts would build Debian's large initramfs). :func:`ensure_image` builds
once per fingerprint (this module + the guest's configuration) into a cache folder;
:func:`break_boot` makes the "broken boot" copy (kernel removed).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .images import MIRROR_ENV, ImageError

PACKAGES = (
    "python3",
    "dropbear-bin",
    "qemu-guest-agent",
    "iproute2",
    "kmod",
    "busybox-static",
    "login",
    "passwd",
    "systemd-boot-efi",
)
"""Debian packages of the root filesystem (the kernel is unpacked separately)."""
BOOT_MODULES = (
    "ahci",
    "ata_piix",
    "sd_mod",
    "virtio_blk",
    "virtio_scsi",
    "virtio_pci",
    "crc32c_generic",
    "ext4",
)
"""Loaded by the initramfs: one disk driver per bus QEMU offers, and the root's filesystem."""
KEEP_MODULES = (
    *BOOT_MODULES,
    "e1000",
    "e1000e",
    "8139cp",
    "8139too",
    "virtio_net",
    "virtio_console",
)
"""Kernel modules kept on the root filesystem (with their dependencies); the rest go."""
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
CACHE_ENV = "RESTOREDRILL_CACHE"
BOOT_MIB = 40
ROOT_LABEL = "vmroot"
CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200 quiet mitigations=off"
SECTOR = 512
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "dpkg-deb": "dpkg",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "mkfs.ext4": "e2fsprogs",
}


@dataclass(frozen=True)
class GuestConfig:
    """What the image's own configuration says (its production identity)."""

    hostname: str = "hmi-vm"
    address: str = "10.77.0.30/24"
    gateway: str = ""
    plc_host: str = "10.77.0.100"
    plc_port: int = 502
    plc_unit: int = 1
    plc_register: int = 0
    plc_table: str = "holding"
    http_port: int = 8080
    root_password: str = "restoredrill"
    banner: str = "RESTOREDRILL DEMO HMI"


INITRAMFS_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules); do insmod "/lib/modules/$m" 2>/dev/null; done
root=$(sed -n 's/.*root=\([^ ]*\).*/\1/p' /proc/cmdline)
i=0
while ! dev=$(findfs "$root" 2>/dev/null); do
  i=$((i + 1))
  if [ $i -gt 150 ]; then
    echo "initramfs: gave up waiting for the root device $root: no disk driver found it"
    echo "initramfs: block devices: $(ls /sys/class/block | tr '\n' ' ')"
    while :; do sleep 3600; done
  fi
  sleep 0.1
done
mkdir -p /newroot
mount -o ro "$dev" /newroot || { echo "initramfs: cannot mount $dev"; while :; do sleep 3600; done; }
umount /proc /sys
exec switch_root /newroot /bin/busybox init
"""

RCS = r"""#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
hostname -F /etc/hostname
. /etc/restoredrill/network.conf
# load the drivers of the devices present (what udev would do), no polling
modprobe -qab $(cat /sys/bus/pci/devices/*/modalias /sys/bus/virtio/devices/*/modalias 2>/dev/null)
IF=
for d in /sys/class/net/*; do
  [ "${d##*/}" = lo ] || { IF=${d##*/}; break; }
done
ip link set lo up
if [ -n "$IF" ]; then
  ip addr add "$ADDRESS" dev "$IF" && ip link set "$IF" up
  [ -n "$GATEWAY" ] && ip route add default via "$GATEWAY"
  echo "guest: $IF $ADDRESS"
else
  echo "guest: no network interface"
fi
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] || continue
  mkdir -p /dev/virtio-ports && ln -sf "../${p##*/}" /dev/virtio-ports/org.qemu.guest_agent.0
done
printf '%s\naddress %s\n\n' "$BANNER" "$ADDRESS" >/etc/issue
"""

INITTAB = """\
::sysinit:/etc/restoredrill/rcS
::respawn:/usr/sbin/dropbear -F -r /etc/dropbear/dropbear_ed25519_host_key -p 22
::respawn:/bin/sh -c 'test -e /dev/virtio-ports/org.qemu.guest_agent.0 && exec /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 || exec sleep 3600'
::respawn:/usr/bin/python3 /opt/plc-reader/service.py
ttyS0::respawn:/sbin/agetty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/agetty --noclear tty1 linux
"""

SERVICE = r'''"""Reads one PLC register over Modbus TCP and serves it over HTTP (GET /value, /health)."""
import json, socket, struct
from http.server import BaseHTTPRequestHandler, HTTPServer

CONF = dict(line.strip().split("=", 1) for line in open("/etc/restoredrill/plc-reader.conf") if "=" in line)
FC = {"holding": 3, "input": 4}[CONF["PLC_TABLE"]]


def read_register():
    with socket.create_connection((CONF["PLC_HOST"], int(CONF["PLC_PORT"])), timeout=3) as s:
        s.sendall(struct.pack(">HHHBBHH", 1, 0, 6, int(CONF["PLC_UNIT"]), FC, int(CONF["PLC_REGISTER"]), 1))
        head = s.recv(9)
        if len(head) < 9 or head[7] != FC:
            raise OSError("modbus exception %r" % head[7:9])
        return struct.unpack(">H", s.recv(2))[0]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body, status = {"status": "ok"}, 200
        if self.path == "/value":
            try:
                body = {"plc": CONF["PLC_HOST"], "register": int(CONF["PLC_REGISTER"]), "value": read_register()}
            except OSError as exc:
                body, status = {"plc": CONF["PLC_HOST"], "error": str(exc)}, 502
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", int(CONF["HTTP_PORT"])), Handler).serve_forever()
'''


def cache_dir() -> Path:
    """Where built images are kept (``$RESTOREDRILL_CACHE`` or ``~/.cache/restoredrill``)."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "restoredrill"
    return Path(base) / "vm-images"


def fingerprint(config: GuestConfig, packages: tuple[str, ...] = PACKAGES) -> str:
    """Changes when this builder, the guest's configuration or the package list changes."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(repr((sorted(asdict(config).items()), packages)).encode())
    return h.hexdigest()[:12]


def ensure_image(
    config: GuestConfig = GuestConfig(),  # frozen: an immutable default
    folder: Path | None = None,
    *,
    mirror: str | None = None,
) -> Path:
    """The raw disk image for ``config``, built the first time (a few minutes), reused after."""
    folder = folder or cache_dir()
    out = folder / f"demo-vm-{fingerprint(config)}.raw"
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f".{out.stem}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same image
        if not out.is_file():
            part = out.with_suffix(".part")
            build(part, config, mirror=mirror)
            part.replace(out)
    return out


def build(
    out: Path, config: GuestConfig, *, mirror: str | None = None, timeout: float = 1800
) -> Path:
    """Build the disk image ``out`` (raw) from Debian's packages; see the module docs."""
    _need_tools()
    with tempfile.TemporaryDirectory(prefix="restoredrill-vmimage-") as tmp:
        work = Path(tmp)
        root, kernel = work / "root", work / "kernel"
        _debootstrap(root, work, mirror or os.environ.get(MIRROR_ENV), timeout)
        version = _unpack_kernel(work, root, kernel)
        _configure(root, config)
        initrd = _initramfs(root, version)
        boot = _boot_partition(work, kernel / "boot" / f"vmlinuz-{version}", initrd, root)
        _clean(root)
        rootfs = _root_partition(work, root)
        _assemble(out, boot, rootfs)
    return out


def break_boot(image: Path, out: Path) -> Path:
    """A copy of raw ``image`` whose boot partition lost its kernel (it cannot boot)."""
    part = out.with_suffix(out.suffix + ".part")
    shutil.copyfile(image, part)
    offset = _partition_offset(part, 0)
    _run(["mdel", "-i", f"{part}@@{offset}", "::/vmlinuz"], "removing the kernel")
    part.replace(out)
    return out


# --- steps ---------------------------------------------------------------------------------


def _need_tools() -> None:
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)]
    if not MBR_CODE.is_file():
        missing.append("syslinux-common")
    if missing:
        raise ImageError(
            "cannot build the VM image: install "
            + " ".join(sorted(set(missing)))
            + " (apt-get install …)"
        )


def _run(command: list[str], what: str, timeout: float = 600, **kw: Any) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=env, **kw
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"VM image: {what}: {command[0]} did not finish in {timeout:g}s") from None
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
        raise ImageError(f"VM image: {what} failed ({command[0]}): {tail or 'no output'}")
    return done.stdout


def _debootstrap(root: Path, work: Path, mirror: str | None, timeout: float) -> None:
    """Debian minbase with PACKAGES, and the kernel's .deb downloaded beside it."""
    hook = (
        f"cd {work} && k=$(apt-cache depends linux-image-amd64 "
        '| sed -n "s/.*Depends: \\(linux-image-[0-9].*\\)/\\1/p" | head -1) '
        '&& apt-get download "$k"'
    )
    command = [
        "mmdebstrap",
        "--variant=minbase",
        "--quiet",
        "--include=" + ",".join(PACKAGES),
        f"--customize-hook={hook}",
        "bookworm",
        str(root),
    ]
    _run(command + ([mirror] if mirror else []), "mmdebstrap of the root filesystem", timeout)


def _unpack_kernel(work: Path, root: Path, kernel: Path) -> str:
    """Unpack the kernel (no maintainer scripts), keep only the modules needed; its version."""
    debs = sorted(work.glob("linux-image-*.deb"))
    if not debs:
        raise ImageError("VM image: the kernel package was not downloaded")
    _run(["dpkg-deb", "-x", str(debs[0]), str(kernel)], "unpacking the kernel")
    version = next((kernel / "lib" / "modules").iterdir()).name
    modules = root / "usr" / "lib" / "modules"
    modules.mkdir(parents=True, exist_ok=True)
    shutil.move(kernel / "lib" / "modules" / version, modules / version)
    _run(["chroot", str(root), "depmod", version], "depmod")
    keep = set(module_closure(modules / version, KEEP_MODULES))
    for ko in (modules / version / "kernel").rglob("*.ko*"):
        if str(ko.relative_to(modules / version)) not in keep:
            ko.unlink()
    _run(["chroot", str(root), "depmod", version], "depmod")
    return version


def module_closure(moddir: Path, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to ``moddir``) of ``names`` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        stem = Path(path).name.split(".ko")[0]
        by_name[stem] = by_name[stem.replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in names:
        if name not in by_name:
            raise ImageError(f"VM image: kernel module {name} not found in {moddir}")
        visit(by_name[name])
    return order


def _configure(root: Path, config: GuestConfig) -> None:
    """The guest's own configuration: init, network, services, accounts, host key."""
    files = {
        "etc/inittab": INITTAB,
        "etc/restoredrill/rcS": RCS,
        "etc/restoredrill/network.conf": (
            f"ADDRESS={config.address}\nGATEWAY={config.gateway}\nBANNER='{config.banner}'\n"
        ),
        "etc/restoredrill/plc-reader.conf": (
            f"PLC_HOST={config.plc_host}\nPLC_PORT={config.plc_port}\nPLC_UNIT={config.plc_unit}\n"
            f"PLC_REGISTER={config.plc_register}\nPLC_TABLE={config.plc_table}\n"
            f"HTTP_PORT={config.http_port}\n"
        ),
        "opt/plc-reader/service.py": SERVICE,
        "etc/hostname": config.hostname + "\n",
        "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {config.hostname}\n",
        "etc/fstab": f"LABEL={ROOT_LABEL} / ext4 defaults 0 1\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "etc/restoredrill/rcS").chmod(0o755)
    (root / "etc/dropbear").mkdir(exist_ok=True)
    _run(
        [
            "chroot",
            str(root),
            "dropbearkey",
            "-t",
            "ed25519",
            "-f",
            "/etc/dropbear/dropbear_ed25519_host_key",
        ],
        "dropbear host key",
    )
    _run(["chroot", str(root), "chpasswd"], "root password", input=f"root:{config.root_password}\n")


def _initramfs(root: Path, version: str) -> bytes:
    """A gzip'd newc cpio: busybox, the boot modules in load order, and /init."""
    moddir = root / "usr" / "lib" / "modules" / version
    order = module_closure(moddir, BOOT_MODULES)
    archive = _Cpio()
    for folder in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        archive.add(folder, 0o40755)
    archive.add("init", 0o100755, INITRAMFS_INIT.encode())
    archive.add("bin/busybox", 0o100755, (root / "bin" / "busybox").read_bytes())
    names = []
    for rel in order:
        name = Path(rel).name
        archive.add(f"lib/modules/{name}", 0o100644, (moddir / rel).read_bytes())
        names.append(name)
    archive.add("modules", 0o100644, ("\n".join(names) + "\n").encode())
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


class _Cpio:
    """A newc cpio archive in memory (what the kernel unpacks as its initramfs)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        self._pad()
        self.buf.write(data)
        self._pad()
        self.ino += 1

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def _boot_partition(work: Path, vmlinuz: Path, initrd: bytes, root: Path) -> Path:
    """FAT16 with the kernel, initramfs, syslinux (BIOS) and systemd-boot (UEFI)."""
    image = work / "boot.img"
    (work / "initrd.img").write_bytes(initrd)
    _run(
        [
            "mkfs.fat",
            "-C",
            "-F",
            "16",
            "-n",
            "BOOT",
            "-h",
            "2048",
            str(image),
            str(BOOT_MIB * 1024),
        ],
        "mkfs.fat",
    )
    (work / "syslinux.cfg").write_text(
        "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT linux\nLABEL linux\n"
        f"  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND {CMDLINE}\n"
    )
    (work / "loader.conf").write_text("timeout 0\ndefault linux.conf\n")
    (work / "linux.conf").write_text(
        f"title restoredrill demo\nlinux /vmlinuz\ninitrd /initrd.img\noptions {CMDLINE}\n"
    )
    fat = f"{image}"
    _run(["mmd", "-i", fat, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"], "mmd")
    copies = [
        (vmlinuz, "::/vmlinuz"),
        (work / "initrd.img", "::/initrd.img"),
        (work / "syslinux.cfg", "::/syslinux.cfg"),
        (root / SYSTEMD_BOOT, "::/EFI/BOOT/BOOTX64.EFI"),
        (work / "loader.conf", "::/loader/loader.conf"),
        (work / "linux.conf", "::/loader/entries/linux.conf"),
    ]
    for src, dest in copies:
        _run(["mcopy", "-i", fat, str(src), dest], f"copying {dest}")
    _run(["syslinux", "--install", fat], "syslinux --install")
    return image


def _clean(root: Path) -> None:
    """Drop what a booted appliance does not need (documentation, locales, apt's cache)."""
    for rel in (
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/cache/apt",
        "var/lib/apt/lists",
    ):
        shutil.rmtree(root / rel, ignore_errors=True)
        (root / rel).mkdir(parents=True, exist_ok=True)


def _root_partition(work: Path, root: Path) -> Path:
    image = work / "root.img"
    used = sum(f.lstat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    mib = int(used * 1.25) // (1 << 20) + 64
    _run(
        ["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-d", str(root), str(image), f"{mib}M"],
        "mkfs.ext4 -d",
    )
    return image


def _assemble(out: Path, boot: Path, rootfs: Path) -> None:
    """MBR (syslinux's boot code, two primary partitions) + the partitions, sparse."""
    start1 = 2048
    size1 = boot.stat().st_size // SECTOR
    start2 = start1 + size1
    size2 = rootfs.stat().st_size // SECTOR
    mbr = bytearray(SECTOR)
    mbr[:440] = MBR_CODE.read_bytes()[:440].ljust(440, b"\0")
    mbr[440:444] = bytes.fromhex("5244524c")  # disk signature
    for i, (active, kind, start, size) in enumerate(
        ((0x80, 0xEF, start1, size1), (0x00, 0x83, start2, size2))
    ):
        mbr[446 + 16 * i : 462 + 16 * i] = struct.pack(
            "<B3sB3sII", active, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", start, size
        )
    mbr[510:512] = b"\x55\xaa"
    with out.open("wb") as fh:
        fh.write(mbr)
        for start, part in ((start1, boot), (start2, rootfs)):
            _sparse_copy(part, fh, start * SECTOR)
        fh.truncate((start2 + size2) * SECTOR)


def _sparse_copy(src: Path, fh: io.BufferedWriter, offset: int, chunk: int = 1 << 20) -> None:
    zero = bytes(chunk)
    with src.open("rb") as inp:
        pos = offset
        while block := inp.read(chunk):
            if block != zero[: len(block)]:
                fh.seek(pos)
                fh.write(block)
            pos += len(block)


def _partition_offset(image: Path, index: int) -> int:
    """Byte offset of MBR partition ``index`` of a raw ``image``."""
    with image.open("rb") as fh:
        mbr = fh.read(SECTOR)
    start = struct.unpack_from("<I", mbr, 446 + 16 * index + 8)[0]
    return start * SECTOR
