"""The anchor: a tiny container per run whose network namespace checks run in.

The host has no address on a sandbox network, so every probe and check of a twin
runs from inside the sandbox: the anchor sits on every sandbox network of the run
(its own address on each), sleeps, and lends its network namespace to the threads
of restoredrill that connect to twins (:mod:`restoredrill.twins.netns`). Its image
holds only this host's ``sleep`` and the libraries it loads, imported offline with
``docker import`` and reused by a fingerprint of those files.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from .base import TwinError

REPOSITORY = "restoredrill/anchor"
COMMAND = ["/sleep", "infinity"]
USER = "65534:65534"
HOST_CONFIG: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "mem_limit": 16 * 1024 * 1024,
    "memswap_limit": 16 * 1024 * 1024,
    "pids_limit": 8,
    "nano_cpus": 100_000_000,
}
"""The anchor runs nothing but ``sleep``: no capability, no writes, tiny bounds."""


def _files() -> dict[str, Path]:
    """Path in the image -> file on this host: ``sleep`` and what ``ldd`` says it loads."""
    binary = shutil.which("sleep")
    if binary is None:
        raise TwinError("cannot build the sandbox's anchor image: no `sleep` binary on this host")
    files = {"sleep": Path(binary).resolve()}
    try:
        listing = subprocess.run(
            ["ldd", str(files["sleep"])], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            files[m.group(1).lstrip("/")] = Path(m.group(1)).resolve()
    return files


def _tarball(files: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for inside, source in sorted(files.items()):
            info = tar.gettarinfo(str(source), arcname=inside)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            with source.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def ensure_anchor_image(client: Any) -> str:
    """The tag of the anchor image for this host's ``sleep``, imported if missing."""
    import docker.errors

    files = _files()
    digest = hashlib.sha256()
    for inside, source in sorted(files.items()):
        digest.update(inside.encode() + b"\0" + source.read_bytes())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repository, _, version = tag.partition(":")
    try:
        client.api.import_image_from_data(
            _tarball(files),
            repository=repository,
            tag=version,
            changes=["LABEL restoredrill.image=anchor", f"CMD {COMMAND!r}".replace("'", '"')],
        )
    except docker.errors.APIError as exc:
        raise TwinError(f"cannot import the sandbox's anchor image {tag}: {exc}") from None
    return tag
