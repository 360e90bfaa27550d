#!/usr/bin/env python3
"""How many bytes of a backup does one restore read, and how long does it take? (issue 14, item 1)

``docker save`` of the project's base image (``restoredrill/base:bookworm``, built
offline if missing) is written as a plain ``.tar`` and as a ``.tar.zst``; the image's
root filesystem (``docker export`` of a container that never starts) as a rootfs
``.tar.zst``. For each, ``--rounds`` times: ``locate()`` then ``restore()`` into the
real Docker engine, with the bytes this process read (``rchar`` of /proc/self/io, every
read(2) of every thread) and the wall time of each; the image is removed after each
round. Then one more ``locate()`` of the unchanged file (the digest cache). Prints the
medians and the bytes read as a multiple of the file's size (one read: about 1.0x).

Everything it makes carries the label ``restoredrill.bench=oneread<pid>`` and lives in
one temporary directory; both are removed at the end, also on error.

    .venv/bin/python benchmarks/one_read.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import docker
import zstandard

from restoredrill.twins.images import ensure_base_image
from restoredrill.twins.sources import ImageArchiveSpec, RestoreContext, RootfsTarSpec

LABEL = f"oneread{os.getpid()}"


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise SystemExit("no rchar in /proc/self/io")


def zst(src: Path) -> Path:
    out = src.with_name(src.name + ".zst")
    with src.open("rb") as fin, out.open("wb") as fout:
        zstandard.ZstdCompressor(level=3).copy_stream(fin, fout)
    return out


def make_backups(client: docker.DockerClient, folder: Path) -> dict[str, tuple[type, Path]]:
    image = ensure_base_image(client, "restoredrill/base:bookworm")
    saved = folder / "base.tar"
    with saved.open("wb") as fh:
        for chunk in client.api.get_image(image):
            fh.write(chunk)
    container = client.api.create_container(image, ["true"], labels={"restoredrill.bench": LABEL})
    try:
        rootfs = folder / "rootfs.tar"
        with rootfs.open("wb") as fh:
            for chunk in client.api.export(container["Id"]):
                fh.write(chunk)
    finally:
        client.api.remove_container(container["Id"], force=True)
    backups = {
        "image_archive .tar": (ImageArchiveSpec, saved),
        "image_archive .tar.zst": (ImageArchiveSpec, zst(saved)),
        "rootfs_tar .tar.zst": (RootfsTarSpec, zst(rootfs)),
    }
    rootfs.unlink()
    return backups


def one(client: docker.DockerClient, spec_cls: type, file: Path, workdir: Path) -> dict[str, float]:
    spec = spec_cls(path=file.name)
    tag = f"restoredrill-bench/oneread:{uuid.uuid4().hex[:10]}"
    ctx = RestoreContext(
        docker=client,
        workdir=workdir,
        image_tag=tag,
        labels={"restoredrill.bench": LABEL},
    )
    r0, t0 = rchar(), time.perf_counter()
    ref = spec.locate(file.parent)
    r1, t1 = rchar(), time.perf_counter()
    try:
        spec.restore(ref, ctx)
        r2, t2 = rchar(), time.perf_counter()
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.api.remove_image(tag, force=True)
    r3 = rchar()
    spec.locate(file.parent)
    return {
        "locate_read": r1 - r0,
        "restore_read": r2 - r1,
        "locate_s": t1 - t0,
        "restore_s": t2 - t1,
        "relocate_read": rchar() - r3,
        "digest": 1.0 if ref.sha256 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    folder = Path(tempfile.mkdtemp(prefix="restoredrill-oneread-"))
    try:
        backups = make_backups(client, folder)
        print(f"load average: {os.getloadavg()[0]:.2f}")
        head = "backup                     size MB  locate read  restore read   total  locate s  restore s  relocate read"
        print(head)
        for name, (spec_cls, file) in backups.items():
            size = file.stat().st_size
            rounds = [one(client, spec_cls, file, folder / "work") for _ in range(args.rounds)]

            def med(key: str, rounds: list[dict[str, float]] = rounds) -> float:
                return statistics.median(r[key] for r in rounds)

            total = med("locate_read") + med("restore_read")
            print(
                f"{name:25} {size / 1e6:8.0f}  {med('locate_read') / size:10.2f}x "
                f"{med('restore_read') / size:12.2f}x {total / size:6.2f}x "
                f"{med('locate_s'):9.3f} {med('restore_s'):10.3f} "
                f"{med('relocate_read') / 1e6:10.1f} MB"
                + ("" if med("digest") else "  (no digest recorded!)")
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for image in client.images.list(all=True, filters={"label": f"restoredrill.bench={LABEL}"}):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image.id, force=True)


if __name__ == "__main__":
    main()
