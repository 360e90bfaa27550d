"""A ``docker save`` archive (.tar, .tar.gz, .tar.zst, …), loaded as the run's own image.

The archive is read to its end first (a truncated or corrupt backup fails before
anything reaches the engine). It is then streamed, decompressed, to ``docker load``
with its ``manifest.json`` replaced so that the engine tags the image only as the
run's ``image_tag``: the archive's own tags (``plant/hmi:2.3``) never move an
existing local tag, and teardown removes everything the restore created. The
image config gets the run's labels, so leftovers of a crashed run are found by label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field

from ..base import Restored
from ._archive import (
    END_OF_ARCHIVE,
    FileSourceSpec,
    TarScan,
    _explain,
    check_digest,
    scan_tar,
    stream_tar,
    tar_member,
)
from .base import BackupError, BackupRef, RestoreContext

_SMALL = 4 << 20


class Spec(FileSourceSpec):
    """A ``docker save`` archive, plain or compressed (gzip, zstd, xz, bzip2)."""

    kind: Literal["image_archive"] = "image_archive"
    image: str | None = Field(
        None, description="which repo:tag in the archive to run, if it holds several images"
    )

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        scan = scan_tar(Path(ref.location), keep=_keep, ref=ref)
        check_digest(ref, scan)
        manifest = _manifest(scan)
        entry = _select(scan, manifest, self.image)
        config_name = _norm_path(entry["Config"])
        try:
            config = json.loads(scan.files[config_name])
        except (KeyError, ValueError) as exc:
            raise BackupError(
                f"{scan.path}: unreadable image config {config_name!r} ({exc})"
            ) from None
        run_config = config.get("config") or {}
        labels = {**(run_config.get("Labels") or {}), **ctx.labels}
        config["config"] = {**run_config, "Labels": labels}
        new_config = json.dumps(config, separators=(",", ":")).encode()
        new_config_name = hashlib.sha256(new_config).hexdigest() + ".json"
        new_manifest = json.dumps(
            [{**entry, "Config": new_config_name, "RepoTags": [ctx.image_tag]}]
        ).encode()
        try:
            loaded = ctx.docker.images.load(
                _load_stream(scan, new_config_name, new_config, new_manifest)
            )
        except BackupError:
            raise
        except Exception as exc:  # docker.errors.ImageLoadError / APIError
            raise BackupError(f"{scan.path}: docker load failed: {_explain(exc)}") from None
        if not any(ctx.image_tag in (image.tags or ()) for image in loaded):
            raise BackupError(f"{scan.path}: docker load did not produce {ctx.image_tag}")
        return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))


def _keep(name: str, size: int) -> bool:
    """Members read during validation: the manifest and the (small) JSON configs."""
    return size <= _SMALL and (
        name == "manifest.json" or name.endswith(".json") or name.startswith("blobs/")
    )


def _norm_path(name: str) -> str:
    return str(PurePosixPath(name)).lstrip("/").removeprefix("./")


def _manifest(scan: TarScan) -> list[dict]:
    raw = scan.files.get("manifest.json")
    if raw is None:
        raise BackupError(f"{scan.path}: not a docker save archive: no manifest.json")
    try:
        manifest = json.loads(raw)
        assert isinstance(manifest, list) and manifest
        assert all(isinstance(e, dict) and "Config" in e and "Layers" in e for e in manifest)
    except (ValueError, AssertionError):
        raise BackupError(
            f"{scan.path}: not a docker save archive: unreadable manifest.json"
        ) from None
    present = set(scan.names)
    for entry in manifest:
        for member in [entry["Config"], *entry["Layers"]]:
            if _norm_path(member) not in present:
                raise BackupError(f"{scan.path}: incomplete archive: {member!r} is missing")
    return manifest


def _normal_tag(tag: str) -> str:
    return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"


def _select(scan: TarScan, manifest: list[dict], image: str | None) -> dict:
    tags = [t for e in manifest for t in e.get("RepoTags") or ()]
    if image:
        wanted = _normal_tag(image)
        for entry in manifest:
            if wanted in {_normal_tag(t) for t in entry.get("RepoTags") or ()}:
                return entry
        raise BackupError(
            f"{scan.path}: image {image!r} not in archive (has: {', '.join(tags) or 'untagged'})"
        )
    if len(manifest) > 1:
        raise BackupError(
            f"{scan.path}: archive holds {len(manifest)} images ({', '.join(tags) or 'untagged'}); "
            "name one with `image:`"
        )
    return manifest[0]


def _load_stream(
    scan: TarScan, config_name: str, config: bytes, manifest: bytes
) -> Iterator[bytes]:
    """The archive up to its end marker, then the new config and manifest.json (the
    engine unpacks the whole tar before reading the manifest; a later member wins)."""
    yield from stream_tar(scan, limit=scan.tar_end)
    yield tar_member(config_name, config)
    yield tar_member("manifest.json", manifest)
    yield END_OF_ARCHIVE
