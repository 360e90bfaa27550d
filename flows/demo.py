"""The demo plant's backups, made locally and offline the first time, reused after.

Everything is built FROM a local base image (no registry): a restic repository
for the historian's data, a ``docker save`` archive of the MES, a root-filesystem
tarball of the HMI, and an ERP archive cut short (the broken backup).
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "config" / "demo"
DEMO_SITE = DEMO_DIR / "site.yaml"
APPS = DEMO_DIR / "apps"
BACKUPS = DEMO_DIR / "backups"
BASE = "restoredrill/base:bookworm"
EXPECTED = {
    "historian": "pass",
    "mes": "pass",
    "hmi": "pass",
    "line1-gateway": "pass",
    "erp": "error",  # its newest backup is truncated
    "reporting": "blocked",  # it depends on the ERP
    "line2-gateway": "fail",  # its restored config reads the wrong register
}
"""What the demo plant must show: the good systems pass, each broken one is caught."""


SIGNING_KEY = Path(".restoredrill") / "keys" / "site.key"
"""The demo's signing key, beside its site file (site.yaml's signing_key). A plant keeps
its key where the evidence database's owner cannot read it; the demo keeps it beside its
evidence."""


@dataclass
class _Build:
    """Where the demo's backups are made from and go, and the tag prefix of their images."""

    client: object
    backups: Path
    apps: Path
    tag: str


def prepare(
    console: Console, backups: Path = BACKUPS, apps: Path = APPS, tag: str = "restoredrill-demo"
) -> None:
    """Make whatever demo backups (and the demo's signing key) are missing, or older than
    the app they hold.

    ``apps`` holds the demo applications (a copy may carry other addresses); the images
    built on the way are tagged ``<tag>/<name>:build`` and removed again.
    """
    import docker

    from restoredrill.twins.images import ensure_base_image

    from .signing import fingerprint, keygen

    key = backups.parent / SIGNING_KEY
    if not key.exists():
        signer = keygen(key)
        console.print(f"demo: made the site's signing key {fingerprint(signer.keyid)}")

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(
            f"Docker engine not reachable ({exc}): start it with `dockerd &` "
            "(or `systemctl start docker`), or install it with `apt-get install docker.io`"
        ) from None
    backups.mkdir(parents=True, exist_ok=True)
    build = _Build(client, backups, apps, tag)
    with console.status("demo: base image (built offline from Debian packages the first time)"):
        ensure_base_image(client, BASE)
    steps = [
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
    ]
    for label, marker, make, source in steps:
        stamp = marker.with_name(f".{marker.name}.source") if source else None
        if marker.exists() and (stamp is None or _read(stamp) == _digest(source)):
            continue
        with console.status(f"demo: making the {label}"):
            t0 = time.perf_counter()
            make(build)
        if stamp:
            stamp.write_text(_digest(source) + "\n")
        console.print(f"demo: made the {label} in {time.perf_counter() - t0:.1f}s")


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
            raise RuntimeError("restic is not installed: apt-get install restic")
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
    from restoredrill.twins.images import build_image

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
    from restoredrill.twins.emulator_image import ensure_emulator_image
    from restoredrill.twins.images import build_image

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
