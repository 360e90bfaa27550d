"""``run.files``: configuration laid into a restored system before it starts.

The configuration a plant keeps under version control (a gateway's tag mapping, an
HMI's project settings) is kept apart from the backup: a system names files or folders
of the site that are copied into its twin after the twin is created and before it
starts. What the backup holds at a target path is replaced; the rest of the restored
system is left as it was.

Example (a system's ``run:`` in site.yaml)::

    run:
      files:
        - {source: gateway/tags.yaml, target: /etc/gateway/tags.yaml, mode: "0640"}
        - {source: hmi/project, target: /srv/hmi/project}   # a folder, recursively
        - {source: mes/mes.conf, target: /etc/mes/mes.conf, owner: "1000:1000"}

A file keeps its own permission bits unless ``mode`` is given (for a folder, ``mode``
applies to every file in it; its sub-folders are 0755). Files are owned by root unless
``owner`` (numeric ``UID`` or ``UID:GID``) says otherwise. A source that is a link is
read through; links inside a folder are laid in as links, never followed on this host
(a candidate configuration cannot copy a host file into a twin). Container twins only: a whole-disk (VM)
twin does not take files.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from restoredrill.modes import parse_mode

from .base import TwinError

MAX_BYTES = 256 * 1024 * 1024
"""What ``run.files`` of one system may add up to (configuration, not data)."""
MAX_FILES = 20_000


class FileSpec(BaseModel):
    """One file or folder of the site, laid into the twin at ``target``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a file or folder, relative to the site file")
    target: str = Field(description="absolute path inside the twin")
    mode: str | None = Field(
        None, description='permission bits of the file(s), e.g. "0640" (quote it in YAML)'
    )
    owner: str | None = Field(None, description='numeric owner, "UID" or "UID:GID" (default 0:0)')

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a file or folder of the site")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not path.is_absolute():
            raise ValueError(f"{value!r} is not an absolute path in the twin (e.g. /etc/app.conf)")
        if ".." in path.parts:
            raise ValueError(f"{value!r}: no .. in a target path")
        if str(path) == "/":
            raise ValueError("the target cannot be / itself")
        return str(path)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return parse_mode(value)

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if not re.fullmatch(r"\d{1,10}(:\d{1,10})?", text):
            raise ValueError(f'{value!r} is not a numeric owner (use "UID" or "UID:GID")')
        return text

    def ids(self) -> tuple[int, int]:
        if self.owner is None:
            return 0, 0
        uid, _, gid = self.owner.partition(":")
        return int(uid), int(gid or uid)


def resolve_files(spec: Any, base_dir: Path) -> Any:
    """``spec`` (a RunSpec) with each ``files`` source made absolute against ``base_dir``."""
    files: Sequence[FileSpec] = getattr(spec, "files", None) or ()
    if not files:
        return spec
    resolved = [
        f.model_copy(update={"source": str((base_dir / f.source).absolute())}) for f in files
    ]
    return spec.model_copy(update={"files": resolved})


def archive(files: Sequence[FileSpec], name: str = "twin") -> bytes:
    """A tar of ``files`` with paths relative to ``/`` (for ``put_archive``); TwinError
    names the entry whose source is missing or too large."""
    buffer = io.BytesIO()
    total = count = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, spec in enumerate(files):
            where = f"{name}: run.files[{i}] ({spec.source} -> {spec.target})"
            source = Path(spec.source)
            if not source.exists():
                raise TwinError(f"{where}: {source} does not exist")
            source = source.resolve()  # the named file itself; links inside a folder stay links
            for path, member in _members(source, spec):
                count += 1
                total += member.size
                if total > MAX_BYTES or count > MAX_FILES:
                    raise TwinError(
                        f"{where}: more than {MAX_BYTES >> 20} MiB or {MAX_FILES} files: "
                        "run.files is for configuration, not data (use a backup or a volume)"
                    )
                if member.isfile():
                    with path.open("rb") as fh:
                        tar.addfile(member, fh)
                else:
                    tar.addfile(member)
    return buffer.getvalue()


def _members(source: Path, spec: FileSpec) -> Iterator[tuple[Path, tarfile.TarInfo]]:
    """(host path, tar entry) pairs of one spec, the target's own folder left out."""
    target = spec.target.lstrip("/")
    if not source.is_dir():
        yield source, _entry(source, target, spec)
        return
    for folder, dirs, names in os.walk(source):
        dirs.sort()
        here = Path(folder)
        relative = here.relative_to(source)
        for d in dirs:
            path = here / d
            yield path, _entry(path, str(PurePosixPath(target, relative, d)), spec)
        for n in sorted(names):
            path = here / n
            yield path, _entry(path, str(PurePosixPath(target, relative, n)), spec)


def _entry(path: Path, name: str, spec: FileSpec) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    st = path.lstat()
    info.uid, info.gid = spec.ids()
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        info.mode = int(spec.mode, 8) if spec.mode else stat.S_IMODE(st.st_mode)
    else:
        raise TwinError(f"{path} is neither a file, a folder nor a link: not laid in")
    return info


def lay_in(client: Any, container_id: str, files: Sequence[FileSpec], name: str) -> None:
    """Copy ``files`` into the created, not yet started container ``container_id``."""
    if not files:
        return
    data = archive(files, name)
    try:
        client.api.put_archive(container_id, "/", data)
    except Exception as exc:  # noqa: BLE001 - the engine's refusal, in one line
        why = getattr(exc, "explanation", None) or str(exc)
        raise TwinError(f"{name}: run.files could not be laid in: {why}") from None
