"""Shared by the file sources: find the file, detect compression by magic bytes,
read a tar archive to its end (so a truncated or corrupt backup fails before it is
restored), and stream its decompressed bytes to the engine."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from pydantic import Field, model_validator

from ..base import TwinError
from .base import BackupError, BackupRef, SourceSpecBase, newest_match, sha256_file

CHUNK = 1 << 20
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)


class FileSourceSpec(SourceSpecBase):
    """A backup that is one file: ``path:``, or the newest ``pattern:`` match in ``directory:``."""

    path: str | None = Field(None, description="the backup file (relative to the site file)")
    directory: str | None = Field(
        None, description="a folder of backups; the newest file matching `pattern` is taken"
    )
    pattern: str = Field("*.tar*", description="glob for `directory`, e.g. hmi-*.tar.zst")

    @model_validator(mode="after")
    def _one_location(self) -> FileSourceSpec:
        if bool(self.path) == bool(self.directory):
            raise ValueError(
                "give either `path` or `directory` (with `pattern`), not both or neither"
            )
        return self

    def locate(self, base_dir: Path) -> BackupRef:
        found = newest_match(Path(base_dir), self.path, self.directory, self.pattern)
        if not found.is_file():
            raise BackupError(f"{found}: not a regular file")
        stat = found.stat()
        return BackupRef(
            source=self.kind,  # type: ignore[attr-defined]
            backup_id=found.name,
            location=str(found),
            size_bytes=stat.st_size,
            sha256=sha256_file(found),
            created_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        )


def detect_compression(path: Path) -> str:
    """``gzip``, ``zstd``, ``xz``, ``bzip2`` (by magic bytes), else ``none``."""
    with path.open("rb") as fh:
        head = fh.read(8)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "none")


class _Hashing(io.RawIOBase):
    """Reads a file while hashing and counting what was read."""

    def __init__(self, fh: BinaryIO, digest: bool = True) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()
        self._hashing = digest
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = self._fh.readinto(buf)
        if n and self._hashing:
            self.digest.update(memoryview(buf)[:n])
            self.count += n
        return n or 0


class _Zstd(io.RawIOBase):
    """zstd decompression over all frames; raises EOFError if a frame is cut off
    (``zstandard``'s own stream reader returns short data silently)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._d = self._new()
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self._in_frame = False
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            data = self._raw.read(CHUNK)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd stream ended before the end of its frame")
                self._done = True
                return 0
            parts = []
            while data:
                self._in_frame = True
                parts.append(self._d.decompress(data))
                if self._d.eof:
                    data, self._d, self._in_frame = self._d.unused_data, self._new(), False
                else:
                    data = b""
            self._buf, self._pos = b"".join(parts), 0
        n = min(len(out), len(self._buf) - self._pos)
        out[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [zlib.error, gzip.BadGzipFile, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errors)


@contextmanager
def _opened(path: Path, digest: bool = True) -> Iterator[tuple[IO[bytes], _Hashing, str]]:
    """The decompressed stream of ``path``, its hashing raw reader, and the compression."""
    compression = detect_compression(path)
    with path.open("rb") as fh:
        raw = _Hashing(fh, digest)
        buffered = io.BufferedReader(raw, CHUNK)
        stream: IO[bytes]
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif compression == "zstd":
            stream = io.BufferedReader(_Zstd(buffered), CHUNK)
        elif compression == "xz":
            stream = lzma.LZMAFile(buffered)  # noqa: SIM115 - closed with fh
        elif compression == "bzip2":
            stream = bz2.BZ2File(buffered)
        else:
            stream = buffered
        yield stream, raw, compression


@contextmanager
def _reasons(path: Path, compression: str) -> Iterator[None]:
    """Turn decompression errors into BackupError naming the file and the reason."""
    try:
        yield
    except BackupError:
        raise
    except EOFError:
        raise BackupError(f"{path}: truncated: {compression} stream ended early") from None
    except _corrupt_errors() as exc:
        raise BackupError(f"{path}: corrupt {compression} data: {exc}") from None
    except OSError as exc:  # bz2 reports bad data as OSError
        raise BackupError(f"{path}: unreadable: {exc}") from None


class _Tail(io.RawIOBase):
    """Counts the decompressed bytes and keeps the most recent ones (to check the
    tar end-of-archive marker, which ``tarfile`` does not verify)."""

    KEEP = 256 * 1024

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0
        self.tail = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._stream.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.count += n
        self.tail += data
        if len(self.tail) > 2 * self.KEEP:
            del self.tail[: -self.KEEP]
        return n


def _decompression_error(exc: tarfile.ReadError) -> None:
    """tarfile reports a zlib error as ReadError: raise the real cause (see _reasons)."""
    cause = exc.__context__
    if isinstance(cause, (EOFError, *_corrupt_errors())):
        raise cause


@dataclass
class TarScan:
    """What reading an archive to its end found."""

    path: Path
    compression: str
    sha256: str
    raw_size: int
    tar_end: int
    """Offset in the decompressed tar just past the last member (where the end marker starts)."""
    names: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    """Contents of the small members ``keep`` asked for."""


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def scan_tar(
    path: Path,
    keep: Callable[[str, int], bool] = lambda name, size: False,
    ref: BackupRef | None = None,
) -> TarScan:
    """Read ``path`` (a tar, maybe compressed) to its end; raise BackupError if it is
    missing, empty, not a tar, corrupt or truncated. Keeps members ``keep(name, size)`` wants.

    With the ``ref`` that locate() hashed, the file must be unchanged since (size and
    modification time; sha256 again only if those moved), so it is not hashed twice.
    """
    path = Path(path)
    if not path.exists():
        raise BackupError(f"{path}: backup file not found")
    if not path.is_file():
        raise BackupError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise BackupError(f"{path}: empty file")
    names: list[str] = []
    files: dict[str, bytes] = {}
    digest = not _unchanged(ref, path)
    with _opened(path, digest) as (stream, raw, compression), _reasons(path, compression):
        counted = _Tail(stream)
        reader = io.BufferedReader(counted, tarfile.RECORDSIZE)
        what = (
            "tar archive" if compression == "none" else f"{compression} data holding a tar archive"
        )
        try:
            tar = tarfile.open(fileobj=reader, mode="r|")  # noqa: SIM115 - nothing to close
        except tarfile.ReadError as exc:
            _decompression_error(exc)
            if counted.count == 0:
                raise BackupError(f"{path}: empty {compression} stream") from None
            raise BackupError(f"{path}: not a {what} ({exc})") from None
        last = None
        try:
            for member in tar:
                last = member.name
                name = _norm(member.name)
                names.append(name)
                if member.isfile() and keep(name, member.size):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[name] = extracted.read()
        except tarfile.ReadError as exc:
            _decompression_error(exc)
            raise BackupError(f"{path}: truncated: tar data ends inside {last!r} ({exc})") from None
        if not names:
            raise BackupError(f"{path}: not a {what} (no members)")
        tar_end = tar.offset
        # tarfile stops quietly at a cut-off or garbled header: demand the two zero
        # blocks that end every tar (Go's archive/tar, GNU tar and tarfile write them).
        while counted.count < tar_end + 2 * tarfile.BLOCKSIZE and reader.read(tarfile.BLOCKSIZE):
            pass
        start = len(counted.tail) - (counted.count - tar_end)
        marker = bytes(counted.tail[start : start + 2 * tarfile.BLOCKSIZE]) if start >= 0 else b""
        if len(marker) < 2 * tarfile.BLOCKSIZE:
            raise BackupError(
                f"{path}: truncated: tar archive ends after {last!r} without its end-of-archive marker"
            )
        if marker.strip(b"\0"):
            raise BackupError(f"{path}: corrupt tar: unreadable header after {last!r}")
        while reader.read(CHUNK):  # the rest: checks the compressed stream's end and checksum
            pass
        return TarScan(
            path,
            compression,
            raw.digest.hexdigest() if digest else "",
            raw.count,
            tar_end,
            names,
            files,
        )


def stream_tar(scan: TarScan, limit: int | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of a scanned archive, up to ``limit`` if given."""
    with _opened(scan.path) as (stream, _raw, compression), _reasons(scan.path, compression):
        left = limit
        while left is None or left > 0:
            data = stream.read(chunk if left is None else min(chunk, left))
            if not data:
                break
            if left is not None:
                left -= len(data)
            yield data


def tar_member(name: str, data: bytes, mtime: float | None = None) -> bytes:
    """One regular-file tar member (header and padded data)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(mtime if mtime is not None else datetime.now(UTC).timestamp())
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    padding = -len(data) % tarfile.BLOCKSIZE
    return header + data + b"\0" * padding


END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def _unchanged(ref: BackupRef | None, path: Path) -> bool:
    """The file is as locate() saw it: same size and modification time, with a digest."""
    if ref is None or not ref.sha256 or ref.created_at is None:
        return False
    stat = path.stat()
    return stat.st_size == ref.size_bytes and abs(stat.st_mtime - ref.created_at.timestamp()) < 1e-3


def check_digest(ref: BackupRef, scan: TarScan) -> None:
    """Fail if the file changed between locate() and restore()."""
    if not scan.sha256:
        return  # scanned without hashing: size and mtime matched locate()'s
    if ref.sha256 and ref.sha256 != scan.sha256:
        raise BackupError(
            f"{scan.path}: changed since it was located (sha256 {ref.sha256[:12]}… is now {scan.sha256[:12]}…)"
        )


def import_stream(
    client: Any, chunks: Iterator[bytes], tag: str, changes: list[str], what: str
) -> str:
    """``docker import`` a tar stream as ``tag``; return the image id."""
    import json

    repository, _, version = (
        tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    )
    try:
        out = client.api.import_image(
            src=chunks, repository=repository, tag=version, changes=changes, stream_src=True
        )
    except (BackupError, TwinError):  # raised by ``chunks`` itself
        raise
    except Exception as exc:  # docker.errors.APIError and friends: the engine refused it
        raise BackupError(f"{what}: docker import failed: {_explain(exc)}") from None
    image_id = None
    for line in str(out).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("error") or msg.get("errorDetail"):
            raise BackupError(
                f"{what}: docker import failed: {msg.get('error') or msg['errorDetail']}"
            )
        if str(msg.get("status", "")).startswith("sha256:"):
            image_id = msg["status"]
    if not image_id:
        raise BackupError(f"{what}: docker import returned no image ({str(out)[:200]})")
    return image_id


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def label_changes(labels: dict[str, str]) -> list[str]:
    """``docker import`` changes that set ``labels`` (Dockerfile-quoted)."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return [f"LABEL {quote(k)}={quote(v)}" for k, v in labels.items()]
