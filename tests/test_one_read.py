"""One read of each backup per run (issue 14, item 1): locate() does not hash the file,
the restore's own pass hashes, validates and streams it to the real Docker engine, and
the digest it computed reaches the ``BackupRef`` (the evidence's ``backup_sha256``) and
the digest cache, so the next locate() of the same file states it without reading.

Bytes read are counted by the kernel (``rchar`` of /proc/self/io: every read(2) of this
process, whatever thread), around locate() + restore() of a ~48 MB archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest
import zstandard

from restoredrill.twins.sources import (
    BackupError,
    ImageArchiveSpec,
    RestoreContext,
    RootfsTarSpec,
)

pytestmark = pytest.mark.docker

PAYLOAD = 48 << 20
LABEL = "restoredrill.test"


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(marker: str) -> bytes:
    """A root filesystem with an incompressible ~48 MB file and a marker."""
    return _tar([("etc/marker", marker.encode()), ("var/blob.bin", os.urandom(PAYLOAD))])


def _save(layer: bytes, label: str, layers: list[str] | None = None) -> bytes:
    """A ``docker save`` archive of one image whose only layer is ``layer`` (its
    manifest.json last, as a compressed archive's check has to wait for it)."""
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {LABEL: label}},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        }
    ).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": name, "RepoTags": ["plant/m2io:1"], "Layers": layers or ["l/layer.tar"]}]
    return _tar(
        [("l/layer.tar", layer), (name, config), ("manifest.json", json.dumps(manifest).encode())]
    )


def _write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=1).compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def made(docker_client):
    """Image tags for one test (each contains m2io); removed at the end with anything
    carrying the test's label."""
    label = f"m2io-{uuid.uuid4().hex[:10]}"
    tags: list[str] = []

    def tag() -> str:
        tags.append(f"restoredrill-test/m2io-one-read:{uuid.uuid4().hex[:10]}")
        return tags[-1]

    yield label, tag
    for name in tags:
        with contextlib.suppress(Exception):  # not created by this test
            docker_client.images.remove(name, force=True)
    for image in docker_client.images.list(all=True, filters={"label": f"{LABEL}={label}"}):
        with contextlib.suppress(Exception):
            docker_client.images.remove(image.id, force=True)


def _ctx(docker_client, tmp_path: Path, tag: str, label: str) -> RestoreContext:
    return RestoreContext(
        docker=docker_client, workdir=tmp_path / "work", image_tag=tag, labels={LABEL: label}
    )


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("image_archive", "app.tar.zst"),
        ("image_archive", "app.tar"),
        ("rootfs_tar", "rootfs.tar.zst"),
    ],
)
def test_locate_and_restore_read_the_backup_once(docker_client, tmp_path, made, kind, name):
    label, tag = made
    layer = _layer(uuid.uuid4().hex)
    file = _write(tmp_path / name, _save(layer, label) if kind == "image_archive" else layer)
    size = file.stat().st_size
    spec = (ImageArchiveSpec if kind == "image_archive" else RootfsTarSpec)(path=name)
    image = tag()

    before = _rchar()
    ref = spec.locate(tmp_path)
    spec.restore(ref, _ctx(docker_client, tmp_path, image, label))
    read = _rchar() - before

    assert read < 1.2 * size, f"read {read} bytes of a {size}-byte backup ({read / size:.2f}x)"
    # the digest the evidence records came from that one read
    assert ref.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert docker_client.images.get(image).labels[LABEL] == label
    # the next run's locate() of the unchanged file knows the digest without reading it
    before = _rchar()
    again = spec.locate(tmp_path)
    assert _rchar() - before < 1 << 20
    assert again.sha256 == ref.sha256


def test_a_file_rewritten_after_its_restore_is_hashed_again(docker_client, tmp_path, made):
    label, tag = made
    file = _write(tmp_path / "app.tar.zst", _save(_layer("one"), label))
    spec = ImageArchiveSpec(path=file.name)
    first = spec.locate(tmp_path)
    spec.restore(first, _ctx(docker_client, tmp_path, tag(), label))
    stat = file.stat()
    _write(file, _save(_layer("two"), label))
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, new content
    second = spec.locate(tmp_path)
    assert second.sha256 is None  # not the cached digest of the old content
    spec.restore(second, _ctx(docker_client, tmp_path, tag(), label))
    assert second.sha256 == hashlib.sha256(file.read_bytes()).hexdigest() != first.sha256


def test_a_bad_manifest_found_at_the_end_leaves_nothing_in_the_engine(
    docker_client, tmp_path, made
):
    """The layer streams to the engine before the manifest (the last member) is read;
    the check fails there and the upload is cut before the archive's end: Docker
    registers no image of it (its config carries the test's label)."""
    label, tag = made
    file = _write(
        tmp_path / "bad.tar.zst",
        _save(_layer("bad"), label, layers=["l/layer.tar", "nope/layer.tar"]),
    )
    spec = ImageArchiveSpec(path=file.name)
    ref = spec.locate(tmp_path)
    with pytest.raises(BackupError, match="incomplete archive: 'nope/layer.tar' is missing"):
        spec.restore(ref, _ctx(docker_client, tmp_path, tag(), label))
    assert docker_client.images.list(all=True, filters={"label": f"{LABEL}={label}"}) == []
    # the evidence still names the backup that failed
    assert ref.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()


def test_a_truncated_archive_is_an_error_that_still_names_its_digest(
    docker_client, tmp_path, made
):
    label, tag = made
    whole = _write(tmp_path / "whole.tar.zst", _save(_layer("cut"), label))
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    spec = ImageArchiveSpec(path=cut.name)
    ref = spec.locate(tmp_path)
    with pytest.raises(BackupError, match="truncated: zstd stream ended early"):
        spec.restore(ref, _ctx(docker_client, tmp_path, tag(), label))
    assert docker_client.images.list(all=True, filters={"label": f"{LABEL}={label}"}) == []
    assert ref.sha256 == hashlib.sha256(cut.read_bytes()).hexdigest()
