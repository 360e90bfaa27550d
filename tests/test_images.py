"""Offline images on the real engine: reuse by tag, import a rootfs, build without pulls."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import zstandard

from restoredrill.twins import images
from restoredrill.twins.images import ImageError

TEST_LABEL = {"restoredrill.test": "1"}


@pytest.fixture(scope="module")
def busybox_tarball(tmp_path_factory) -> Path:
    """A 2 MB busybox root filesystem as .tar.zst."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox-static is needed (apt-get install busybox-static)")
    tmp = tmp_path_factory.mktemp("bb")
    root = tmp / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    plain = tmp / "rootfs.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(root, arcname=".")
    out = tmp / "rootfs.tar.zst"
    out.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    return out


@pytest.fixture
def tags(docker_client):
    made: list[str] = []

    def new(prefix: str = "img") -> str:
        made.append(f"restoredrill-test/{prefix}:{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield new
    for tag in reversed(made):
        with contextlib.suppress(Exception):  # not created by this test
            docker_client.images.remove(tag, force=True)


def run(docker_client, image: str, command) -> str:
    return (
        docker_client.containers.run(image, command, remove=True, labels=TEST_LABEL)
        .decode()
        .strip()
    )


def test_ensure_base_image_reuses_an_existing_tag(
    docker_client, busybox_tarball, tags, monkeypatch
):
    tag = images.import_rootfs(docker_client, busybox_tarball, tags("base"), labels=TEST_LABEL)
    before = docker_client.images.get(tag).id
    monkeypatch.delenv(images.BASE_TARBALL_ENV, raising=False)
    # nothing to build from (a closed port on loopback as the mirror): only reuse can succeed
    assert images.ensure_base_image(docker_client, tag, mirror="http://127.0.0.1:9/debian") == tag
    assert docker_client.images.get(tag).id == before


def test_import_rootfs_runs_and_is_labelled(docker_client, busybox_tarball, tags):
    tag = images.import_rootfs(docker_client, busybox_tarball, tags(), labels=TEST_LABEL)
    assert run(docker_client, tag, ["echo", "imported"]) == "imported"
    labels = docker_client.images.get(tag).labels
    assert labels["restoredrill.test"] == "1" and labels["restoredrill.image"] == "rootfs"


def test_import_rootfs_rejects_a_truncated_tarball(docker_client, busybox_tarball, tmp_path, tags):
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(busybox_tarball.read_bytes()[:100_000])
    tag = tags()
    with pytest.raises(ImageError, match="truncated: zstd stream ended early"):
        images.import_rootfs(docker_client, cut, tag)
    assert not docker_client.images.list(name=tag)


def test_ensure_base_image_from_a_plant_tarball(docker_client, busybox_tarball, tags, monkeypatch):
    monkeypatch.setenv(images.BASE_TARBALL_ENV, str(busybox_tarball))
    tag = tags("base")
    assert images.ensure_base_image(docker_client, tag) == tag
    assert docker_client.images.get(tag).labels["restoredrill.image"] == "base"
    assert run(docker_client, tag, ["echo", "air-gapped"]) == "air-gapped"


def test_ensure_base_image_without_a_mirror_says_what_to_do(docker_client, tags, monkeypatch):
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    monkeypatch.delenv(images.BASE_TARBALL_ENV, raising=False)
    tag = tags("base")
    # a closed port on loopback stands in for a mirror that cannot be reached
    with pytest.raises(ImageError, match=f"mmdebstrap failed.*{images.BASE_TARBALL_ENV}"):
        images.ensure_base_image(
            docker_client, tag, packages=(), mirror="http://127.0.0.1:9/debian"
        )
    assert not docker_client.images.list(name=tag)


def test_build_image_from_a_local_base_without_pulling(
    docker_client, busybox_tarball, tmp_path, tags
):
    base = images.import_rootfs(docker_client, busybox_tarball, tags("base"), labels=TEST_LABEL)
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE\nFROM $BASE\nARG GREETING=none\nRUN echo "$GREETING" > /greeting\nCMD ["cat", "/greeting"]\n'
    )
    tag = tags("app")
    built = images.build_image(
        docker_client,
        tmp_path,
        tag,
        base=base,
        buildargs={"GREETING": "built offline"},
        labels=TEST_LABEL,
    )
    assert built == tag and run(docker_client, tag, None) == "built offline"
    assert docker_client.images.get(tag).labels["restoredrill.image"] == "built"
    with pytest.raises(ImageError, match="is not on this engine"):
        images.build_image(docker_client, tmp_path, tags("app"), base="restoredrill-test/absent:1")
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nRUN exit 3\n")
    with pytest.raises(ImageError, match="build of .* failed"):
        images.build_image(docker_client, tmp_path, tags("app"), base=base)
