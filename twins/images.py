"""Images from local files only: no registry, no pulls.

- ``ensure_base_image``: a Debian base image, built once per machine with
  mmdebstrap (or debootstrap) from Debian's mirror, or imported from a tarball an
  air-gapped plant brings (``RESTOREDRILL_BASE_TARBALL``); reused by tag after.
- ``import_rootfs``: ``docker import`` of a root-filesystem tarball (validated first).
- ``build_image``: ``docker build`` of a Dockerfile whose ``FROM`` is the build
  argument ``BASE`` naming a local image; never pulls, ``RUN`` steps get no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import TwinError
from .sources._archive import label_changes
from .sources._engine import import_stream
from .sources.base import BackupError
from .sources.rootfs_tar import import_rootfs_file

DEFAULT_BASE = "restoredrill/base:bookworm"
DEFAULT_PACKAGES = ("python3", "procps", "iproute2")
BASE_TARBALL_ENV = "RESTOREDRILL_BASE_TARBALL"
MIRROR_ENV = "RESTOREDRILL_DEBIAN_MIRROR"
LABEL = "restoredrill.image"

_OFFLINE_HINT = (
    f"on a machine without Debian's mirror, set {BASE_TARBALL_ENV}=/path/to/rootfs.tar[.gz|.zst] "
    "or `docker load` a base image tagged {tag}"
)


class ImageError(TwinError):
    """An image could not be built or imported; the message says why and what to do."""


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(
    client: Any,
    tag: str = DEFAULT_BASE,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    timeout: float = 1800,
) -> str:
    """Return ``tag``, building it first if the engine does not have it.

    Order: an existing image; else the tarball named by ``RESTOREDRILL_BASE_TARBALL``;
    else ``mmdebstrap --variant=minbase`` (``debootstrap`` if mmdebstrap is missing)
    of ``suite`` with ``packages``, streamed into ``docker import``.
    """
    if image_exists(client, tag):
        return tag
    labels = {
        LABEL: "base",
        "restoredrill.suite": suite,
        "restoredrill.packages": ",".join(packages),
    }
    tarball = os.environ.get(BASE_TARBALL_ENV)
    if tarball:
        labels["restoredrill.suite"] = "from-tarball"
        return import_rootfs(client, tarball, tag, labels=labels)
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if shutil.which("mmdebstrap"):
        command = ["mmdebstrap", "--variant=minbase", "--format=tar", "--quiet"]
        if packages:
            command.append("--include=" + ",".join(packages))
        command += [suite, "-"]
        if mirror:
            command.append(mirror)
        chunks = _command_stream(command, timeout, tag)
        _import(client, chunks, tag, labels)
        return tag
    if shutil.which("debootstrap"):
        with tempfile.TemporaryDirectory(prefix="restoredrill-rootfs-") as tmp:
            command = ["debootstrap", "--variant=minbase"]
            if packages:
                command.append("--include=" + ",".join(packages))
            command += [suite, tmp] + ([mirror] if mirror else [])
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
            if done.returncode != 0:
                raise ImageError(_failed("debootstrap", done.stdout + done.stderr, tag))
            chunks = _command_stream(
                ["tar", "--numeric-owner", "-C", tmp, "-cf", "-", "."], timeout, tag
            )
            _import(client, chunks, tag, labels)
        return tag
    raise ImageError(
        f"cannot build {tag}: neither mmdebstrap nor debootstrap is installed "
        f"(apt-get install mmdebstrap); " + _OFFLINE_HINT.format(tag=tag)
    )


def import_rootfs(
    client: Any,
    tarball: str | os.PathLike[str],
    tag: str,
    *,
    labels: Mapping[str, str] | None = None,
    changes: Sequence[str] = (),
) -> str:
    """``docker import`` a root-filesystem tarball (.tar/.gz/.zst/.xz, checked to its
    end first) as ``tag`` with ``labels``; return ``tag``."""
    try:
        import_rootfs_file(
            client, Path(tarball), tag, {LABEL: "rootfs", **(labels or {})}, list(changes)
        )
    except BackupError as exc:
        raise ImageError(str(exc)) from None
    return tag


def build_image(
    client: Any,
    context_dir: str | os.PathLike[str],
    tag: str,
    *,
    base: str = DEFAULT_BASE,
    buildargs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    dockerfile: str = "Dockerfile",
    network: bool = False,
) -> str:
    """Build ``context_dir``'s Dockerfile as ``tag`` without pulling anything.

    The Dockerfile starts ``ARG BASE`` / ``FROM $BASE``; ``base`` must be a local
    image. ``RUN`` steps have no network unless ``network=True``. Returns ``tag``.
    """
    import docker.errors

    context = Path(context_dir)
    if not (context / dockerfile).is_file():
        raise ImageError(f"{context / dockerfile}: Dockerfile not found")
    if not image_exists(client, base):
        raise ImageError(
            f"base image {base} is not on this engine (no registry is used): "
            "build it with ensure_base_image() or `docker load` it"
        )
    try:
        client.images.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs={"BASE": base, **(buildargs or {})},
            labels={LABEL: "built", **(labels or {})},
            pull=False,
            rm=True,
            forcerm=True,
            network_mode=None if network else "none",
        )
    except docker.errors.BuildError as exc:
        log = "".join(
            str(line.get("stream", "")) for line in exc.build_log if isinstance(line, dict)
        )
        tail = " | ".join(s for s in log.strip().splitlines()[-5:] if s.strip())
        raise ImageError(f"{context}: build of {tag} failed: {exc.msg} ({tail})") from None
    except docker.errors.APIError as exc:
        raise ImageError(f"{context}: build of {tag} failed: {exc.explanation or exc}") from None
    return tag


def _import(client: Any, chunks: Iterator[bytes], tag: str, labels: Mapping[str, str]) -> None:
    try:
        import_stream(client, chunks, tag, label_changes(dict(labels)), tag)
    except BackupError as exc:
        raise ImageError(str(exc)) from None


def _command_stream(command: list[str], timeout: float, tag: str) -> Iterator[bytes]:
    """A command's stdout in chunks; ImageError (with its stderr) if it fails."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[bytes] = []

    import threading

    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        while data := proc.stdout.read(1 << 20):
            yield data
        code = proc.wait(timeout=timeout)
        reader.join(5)
        if code != 0:
            raise ImageError(_failed(command[0], b"".join(errors).decode(errors="replace"), tag))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _failed(tool: str, output: str, tag: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return (
        f"{tool} failed to build {tag}: {' | '.join(lines[-4:]) or 'no output'}; "
        + _OFFLINE_HINT.format(tag=tag)
    )
