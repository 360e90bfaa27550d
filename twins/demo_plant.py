"""The demo plant's backups, made locally and offline the first time, reused after.

Everything is built FROM a local base image (no registry): a restic repository for the
historian's data, a ``docker save`` archive of the MES, a root-filesystem tarball of the
HMI, an ERP archive cut short (the broken backup), the OPC UA gateways' archives, and
the HMI VM's disk images (:mod:`.vm_demo`: a ``.vmdk`` that boots, a ``.vhdx`` that does
not). The Docker engine is this module's business: flows/demo.py only names what to make.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from restoredrill.errors import ExitCode, RestoredrillError

from .base import TwinError
from .vm_image import GuestConfig

BASE = "restoredrill/base:bookworm"
GUEST = "guest.conf"
"""The demo VM's own configuration in its app folder (``apps/hmi-vm/guest.conf``)."""


@dataclass
class _Build:
    """Where the demo's backups are made from and go, and the tag prefix of their images."""

    client: object
    backups: Path
    apps: Path
    tag: str


def _digest(folder: Path) -> str:
    """A digest of the files an archive is built from (to rebuild it when they change)."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes())
    return sha.hexdigest()


def _read(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _historian(b: _Build) -> None:
    """The historian's application and data, backed up with restic."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        shutil.copy(b.apps / "historian" / "historian.py", tree / "historian.py")
        (tree / "data").mkdir()
        con = sqlite3.connect(tree / "data" / "history.db")
        con.execute("create table samples (tag text, ts text, value real)")
        start = datetime(2026, 11, 24, tzinfo=UTC)
        for i in range(480):
            ts = (start + timedelta(minutes=3 * i)).isoformat()
            con.executemany(
                "insert into samples values (?, ?, ?)",
                [
                    ("LT-101", ts, 72.5 if i == 479 else round(60 + 12 * math.sin(i / 30), 2)),
                    ("FIC-102", ts, round(14.0 + (i % 10) / 10, 2)),
                    ("TIC-103", ts, round(85 + 2 * math.cos(i / 40), 2)),
                ],
            )
        con.commit()
        con.close()
        repo = b.backups / "historian-restic"
        password = b.backups / "restic.pass"
        if not password.exists():
            password.write_text(os.urandom(12).hex() + "\n")
            password.chmod(0o600)
        env = {**os.environ, "RESTIC_PASSWORD_FILE": str(password.resolve())}
        restic = shutil.which("restic")
        if restic is None:
            raise RestoredrillError(
                "restic is not installed: apt-get install restic", ExitCode.BAD_INPUT
            )
        subprocess.run(
            [restic, "init", "--repo", str(repo.resolve())],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                restic,
                "--repo",
                str(repo.resolve()),
                "backup",
                ".",
                "--host",
                "plant-historian",
                "--tag",
                "nightly",
            ],
            cwd=tree,
            env=env,
            check=True,
            capture_output=True,
        )


def _build(b: _Build, name: str) -> str:
    from .images import build_image

    tag = f"{b.tag}/{name}:build"
    build_image(b.client, b.apps / name, tag, base=BASE)
    return tag


def _mes(b: _Build) -> None:
    """The MES image as its nightly `docker save`, gzipped."""
    _save(b.client, _build(b, "mes"), b.backups / "mes" / "mes-20261124.tar.gz")


def _hmi(b: _Build) -> None:
    """The HMI server's disk as a root-filesystem tarball (zstd)."""
    import zstandard

    client = b.client
    tag = _build(b, "hmi")
    container = client.containers.create(tag, command=["true"])  # type: ignore[attr-defined]
    out = b.backups / "hmi" / "hmi-20261124.tar.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".part")
    try:
        with partial.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as fh:
            for chunk in container.export():
                fh.write(chunk)
    finally:
        container.remove(force=True)
        client.images.remove(tag, force=True)  # type: ignore[attr-defined]
    partial.rename(out)


def _gateway(b: _Build, line: str, config: str) -> None:
    """An OPC UA gateway image (pymodbus + asyncua) as its nightly `docker save`."""
    from .emulator_image import ensure_emulator_image
    from .images import build_image

    base = ensure_emulator_image(b.client)
    tag = f"{b.tag}/{line}-gateway:build"
    build_image(b.client, b.apps / "gateway", tag, base=base, buildargs={"CONFIG": config})
    _save(b.client, tag, b.backups / "gateway" / f"{line}-gateway-20261124.tar.gz")


def _save(client: object, tag: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    image = client.images.get(tag)  # type: ignore[attr-defined]
    partial_file = out.with_suffix(".part")
    with gzip.open(partial_file, "wb", compresslevel=1) as fh:
        for chunk in image.save(named=True):
            fh.write(chunk)
    partial_file.rename(out)
    client.images.remove(tag, force=True)  # type: ignore[attr-defined]


def _erp(b: _Build) -> None:
    """The ERP's archive, cut short the way a full backup disk cuts it."""
    mes = b.backups / "mes" / "mes-20261124.tar.gz"
    if not mes.exists():
        _mes(b)
    out = b.backups / "erp" / "erp-20261124.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with mes.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(mes.stat().st_size * 6 // 10))


def make_backups(
    backups: Path,
    apps: Path,
    tag: str,
    status: Callable[[str], AbstractContextManager[Any]],
    made: Callable[[str, float], None],
) -> None:
    """Make whatever demo backups are missing, or older than the app they hold.

    ``apps`` holds the demo applications (a copy may carry other addresses); the images
    built on the way are tagged ``<tag>/<name>:build`` and removed again. ``status(label)``
    wraps each step, ``made(label, seconds)`` reports it.
    """
    import docker

    from .images import ensure_base_image

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        raise TwinError(
            f"Docker engine not reachable ({exc}): start it with `dockerd &` "
            "(or `systemctl start docker`), or install it with `apt-get install docker.io`"
        ) from None
    backups.mkdir(parents=True, exist_ok=True)
    build = _Build(client, backups, apps, tag)
    with status("base image (built offline from Debian packages the first time)"):
        ensure_base_image(client, BASE)
    for label, made_files, make, source in _steps(backups, apps):
        files = made_files if isinstance(made_files, tuple) else (made_files,)
        stamp = files[0].with_name(f".{files[0].name}.source") if source else None
        if all(f.exists() for f in files) and (
            stamp is None or source is None or _read(stamp) == _digest(source)
        ):
            continue
        with status(f"making the {label}"):
            t0 = time.perf_counter()
            make(build)
        if stamp and source:
            stamp.write_text(_digest(source) + "\n")
        made(label, time.perf_counter() - t0)


Step = tuple[str, Path | tuple[Path, ...], Callable[[_Build], None], Path | None]
"""A demo backup: its label, the file(s) it makes, how, and the folder it is built from
(made again when that changes)."""


def _steps(backups: Path, apps: Path) -> list[Step]:
    """The demo's backups, in the order they are made."""
    return [
        ("historian restic snapshot", backups / "historian-restic" / "config", _historian, None),
        ("MES image archive", backups / "mes" / "mes-20261124.tar.gz", _mes, None),
        ("HMI root filesystem", backups / "hmi" / "hmi-20261124.tar.zst", _hmi, None),
        ("ERP archive (broken)", backups / "erp" / "erp-20261124.tar.gz", _erp, None),
        (
            "line 1 gateway archive",
            backups / "gateway" / "line1-gateway-20261124.tar.gz",
            partial(_gateway, line="line1", config="gateway.ini"),
            apps / "gateway",
        ),
        (
            "line 2 gateway archive (wrong register)",
            backups / "gateway" / "line2-gateway-20261124.tar.gz",
            partial(_gateway, line="line2", config="gateway-line2.ini"),
            apps / "gateway",
        ),
        (
            "HMI VM disk images (.vmdk, and a .vhdx that cannot boot; the first time, "
            "the image is built from Debian's packages: about 3 minutes)",
            (
                backups / "hmi-vm" / "hmi-vm-20261124.vmdk",
                backups / "hmi-vm-broken" / "hmi-vm-broken-20261124.vhdx",
                backups / "hmi-vm" / "root.pass",
            ),
            _vm_disks,
            apps / "hmi-vm",
        ),
    ]


def guest_config(folder: Path) -> GuestConfig:
    """The demo VM's configuration from ``folder/guest.conf`` (``key=value`` lines)."""
    fields = {f for f in GuestConfig.__dataclass_fields__}
    values: dict[str, Any] = {}
    for line in (folder / GUEST).read_text().splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key.startswith("#") or key not in fields:
            continue
        default = getattr(GuestConfig, key)
        values[key] = type(default)(value.strip())
    return GuestConfig(**values)


def _vm_disks(b: _Build) -> None:
    """The HMI VM as a VMware-style .vmdk, and a Disk2vhd-style .vhdx without a kernel."""
    from .vm_demo import demo_disk_images

    good = b.backups / "hmi-vm" / "hmi-vm-20261124.vmdk"
    broken = b.backups / "hmi-vm-broken" / "hmi-vm-broken-20261124.vhdx"
    for old in (good, broken):  # made again from the current configuration
        old.unlink(missing_ok=True)
    config = guest_config(b.apps / "hmi-vm")
    demo_disk_images(b.backups, config)
    secret = b.backups / "hmi-vm" / "root.pass"  # the host checks' SSH login (password_file)
    secret.write_text(config.root_password + "\n")
    secret.chmod(0o600)
