"""A ``docker save`` archive (.tar, .tar.gz, .tar.zst, …), loaded as the run's own image.

One read of the file does it all: the archive is hashed, decompressed, checked under
the restore's budget (every header before its data goes on) and streamed to ``docker
load`` as it is read. Its ``manifest.json`` (often the last member) and image configs
are kept as they pass; the archive's end is held back until the whole of it was read
and the manifest checked (no absolute or ``../`` paths, every layer present), then a
new config and ``manifest.json`` follow (a later member wins) so that the engine tags
the image only as the run's ``image_tag``: the archive's own tags (``plant/hmi:2.3``)
never move an existing local tag, and teardown removes everything the restore created.
A truncated, corrupt or oversized archive, or a bad manifest, cuts the upload before
its end: the engine stores nothing of it. The image config gets the run's labels, so
leftovers of a crashed run are found by label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from ..base import Restored
from ._archive import (
    END_OF_ARCHIVE,
    FileSourceSpec,
    TarScan,
    check_digest,
    check_stated,
    scan_tar,
    tar_member,
)
from ._engine import Gate, Pipe, load_stream
from .base import BackupError, BackupRef, RestoreContext
from .budget import docker_root

_SMALL = 4 << 20


class Spec(FileSourceSpec):
    """A ``docker save`` archive, plain or compressed (gzip, zstd, xz, bzip2)."""

    kind: Literal["image_archive"] = "image_archive"
    image: str | None = Field(
        None, description="which repo:tag in the archive to run, if it holds several images"
    )

    def restore(self, ref: BackupRef, ctx: RestoreContext) -> Restored:
        path = Path(ref.location)
        budget = ctx.budget(str(path))
        budget.space(docker_root(ctx.docker), "Docker's data root: docker load unpacks it twice", 2)
        check_stated(path, budget)

        def produce(put: Callable[[bytes], None]) -> None:
            gate = Gate(put)
            scan = scan_tar(path, _keep, ref, budget, sink=gate)
            check_digest(ref, scan)
            config_name, config, manifest = _retagged(scan, self.image, ctx)
            gate.end(scan.tar_end)  # the archive's own end marker: the new members follow
            gate.finish()
            put(tar_member(config_name, config))
            put(tar_member("manifest.json", manifest))
            put(END_OF_ARCHIVE)

        if ctx.docker is None:  # nothing to load into: the backup's own faults first
            produce(lambda data: None)
        engine = ctx.engine(str(path))
        load_stream(engine, Pipe(produce, budget).chunks(), ctx.image_tag, str(path), budget)
        return Restored(image=ctx.image_tag, created_images=(ctx.image_tag,))


def _retagged(scan: TarScan, image: str | None, ctx: RestoreContext) -> tuple[str, bytes, bytes]:
    """The name and content of the chosen image's config with the run's labels, and a
    manifest that loads only that image, as the run's ``image_tag``."""
    manifest = _manifest(scan)
    entry = _select(scan, manifest, image)
    present = set(scan.names)
    config_name = _member(scan, entry["Config"], present)
    try:
        config = json.loads(scan.files[config_name])
        assert isinstance(config, dict)
    except (KeyError, ValueError, AssertionError) as exc:
        raise BackupError(
            f"{scan.path}: unreadable image config {config_name!r} ({exc or 'not an object'})"
        ) from None
    run_config = config.get("config") or {}
    labels = {**(run_config.get("Labels") or {}), **ctx.labels}
    config["config"] = {**run_config, "Labels": labels}
    new_config = json.dumps(config, separators=(",", ":")).encode()
    new_config_name = hashlib.sha256(new_config).hexdigest() + ".json"
    new_manifest = json.dumps(
        [
            {
                "Config": new_config_name,
                "RepoTags": [ctx.image_tag],
                "Layers": [_member(scan, layer, present) for layer in entry["Layers"]],
            }
        ]
    ).encode()
    return new_config_name, new_config, new_manifest


def _keep(name: str, size: int) -> bool:
    """Members read during validation: the manifest and the (small) JSON configs."""
    return size <= _SMALL and (
        name == "manifest.json" or name.endswith(".json") or name.startswith("blobs/")
    )


def _member(scan: TarScan, name: Any, present: set[str] | None = None) -> str:
    """The archive member a manifest entry names; BackupError naming the entry if it
    points outside the archive (absolute, ``..``) or is missing from it."""
    if not isinstance(name, str) or not name.strip():
        raise BackupError(f"{scan.path}: manifest.json names {name!r}, which is not a path")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BackupError(
            f"{scan.path}: manifest.json names {name!r}, a path outside the archive "
            "(absolute or with ..); a docker save archive only names its own members"
        )
    member = str(path).removeprefix("./")
    if member not in (present if present is not None else set(scan.names)):
        raise BackupError(f"{scan.path}: incomplete archive: {name!r} is missing")
    return member


def _manifest(scan: TarScan) -> list[dict]:
    raw = scan.files.get("manifest.json")
    if raw is None:
        raise BackupError(f"{scan.path}: not a docker save archive: no manifest.json")
    if not scan.names_complete:
        raise BackupError(
            f"{scan.path}: not a docker save archive: more than {len(scan.names)} members"
        )
    try:
        manifest = json.loads(raw)
        assert isinstance(manifest, list) and manifest
        assert all(
            isinstance(e, dict)
            and "Config" in e
            and isinstance(e.get("Layers"), list)
            and all(isinstance(t, str) for t in e.get("RepoTags") or ())
            for e in manifest
        )
    except (ValueError, AssertionError):
        raise BackupError(
            f"{scan.path}: not a docker save archive: unreadable manifest.json"
        ) from None
    present = set(scan.names)
    for entry in manifest:
        for member in [entry["Config"], *entry["Layers"]]:
            _member(scan, member, present)
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
