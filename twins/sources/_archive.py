"""Shared by the file sources: find the file, detect compression by magic bytes, and
read it as a tar archive under a :class:`~.budget.Budget`.

- ``scan_tar`` streams the archive to its end (hashing the file, decompressing it,
  checking every header against the budget before its data is read, demanding the
  end-of-archive marker and the compressed stream's own end), and can hand on the
  bytes it read as it goes (``sink``): one read both validates a backup and feeds it
  to the engine.
- The digest a pass computed is filled into the backup's ``BackupRef`` (when locate()
  did not know it) and remembered for the file as it is (device, inode, size, times):
  the next locate() of the unchanged file states it without reading a byte.

Memory stays flat whatever the archive holds: decompression is bounded per read,
``tarfile`` forgets each header once it is checked, only small JSON members are kept
(at most ``KEEP_TOTAL`` in all) and extended headers larger than ``MAX_EXTENDED`` are
refused.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, cast

from pydantic import Field, model_validator

from restoredrill.sizes import format_size

from .base import BackupError, BackupRef, SourceSpecBase, newest_match
from .budget import Budget, RestoreCancelled

CHUNK = 1 << 20
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_TAR_BUFFER = 64 << 10
"""tarfile's stream buffer: it copies the whole buffer per header, so not too large."""
MAX_EXTENDED = 1 << 20
"""Largest pax or GNU long-name header accepted (``tarfile`` reads one whole)."""
MAX_NAMES = 100_000
"""Most member names a scan remembers (an image archive has a few per layer)."""
KEEP_TOTAL = 64 << 20
"""Most bytes of small JSON members a scan keeps in memory."""
_EXTENDED = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}


class FileSourceSpec(SourceSpecBase):
    """A backup that is one file: ``path:``, or the newest ``pattern:`` match in ``directory:``."""

    path: str | None = Field(None, description="the backup file (relative to the site file)")
    directory: str | None = Field(
        None, description="a folder of backups; the newest file matching `pattern` is taken"
    )
    pattern: str = Field("*.tar*", description="glob for `directory`, e.g. hmi-*.tar.zst")

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
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
            source=str(getattr(self, "kind", "file")),
            backup_id=found.name,
            location=str(found),
            size_bytes=stat.st_size,
            sha256=known_digest(found, stat),  # else the restore's own pass hashes it
            created_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        )


# -- the digest cache ------------------------------------------------------------------

_DIGESTS: OrderedDict[tuple[str, int, int, int, int, int], str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()
_DIGESTS_MAX = 4096


def _identity(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
    """The file as it is: a rewrite (even one that restores the mtime) changes its ctime."""
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def known_digest(path: Path, st: os.stat_result) -> str | None:
    """The sha256 a restore of this very file computed in this process, if any."""
    with _DIGESTS_LOCK:
        return _DIGESTS.get(_identity(path, st))


def remember_digest(path: Path, st: os.stat_result, digest: str) -> None:
    """Remember ``digest`` for ``path`` as ``st`` saw it (the oldest entries go first)."""
    with _DIGESTS_LOCK:
        _DIGESTS[_identity(path, st)] = digest
        _DIGESTS.move_to_end(_identity(path, st))
        while len(_DIGESTS) > _DIGESTS_MAX:
            _DIGESTS.popitem(last=False)


def detect_compression(path: Path) -> str:
    """``gzip``, ``zstd``, ``xz``, ``bzip2`` (by magic bytes), else ``none``."""
    with path.open("rb") as fh:
        head = fh.read(8)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), "none")


def _zstd() -> Any:
    """``compression.zstd`` (Python 3.14+) or its backport: bounded reads, and an
    EOFError for a cut-off frame (``zstandard``'s reader returns short data silently)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd
    return zstd


class _Hashing(io.RawIOBase):
    """Reads a file while counting (and, if asked, hashing) what was read."""

    def __init__(self, fh: io.BufferedIOBase, digest: bool = True) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()
        self._hashing = digest
        self.count = 0
        self.stat = os.fstat(fh.fileno())
        """The file as it was opened (the digest cache's key)."""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = self._fh.readinto(buf) or 0
        if n:
            self.count += n
            if self._hashing:
                self.digest.update(memoryview(buf)[:n])
        elif len(buf):
            self._eof = True
        return n

    def finish(self, budget: Budget | None = None) -> None:
        """Read (and hash) the rest of the file; stops if the restore is cancelled."""
        buf = bytearray(CHUNK)
        while not (budget is not None and budget.cancel.is_set()) and self.readinto(buf):
            pass

    @property
    def whole(self) -> bool:
        """Hashed from the first byte to the end of the file, which did not change."""
        if not (self._hashing and self._eof and self.count == self.stat.st_size):
            return False
        return _identity(Path(), os.fstat(self._fh.fileno())) == _identity(Path(), self.stat)

    def hexdigest(self) -> str:
        return self.digest.hexdigest() if self._hashing else ""


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    return (zlib.error, gzip.BadGzipFile, lzma.LZMAError, _zstd().ZstdError)


def _stated(fh: BinaryIO, compression: str, size: int, budget: Budget) -> None:
    """What the file states before it is read: its size (the ratio guard's base; all of
    it for a plain tar) and the first zstd frame's content size (at least that much)."""
    budget.compressed(size, compression)
    if compression == "none":
        budget.stated(size, f"it is an uncompressed tar of {format_size(size)}")
    elif compression == "zstd":
        head = fh.read(18)  # the largest frame header
        fh.seek(0)
        try:
            content = _zstd().get_frame_info(head).decompressed_size
        except Exception:  # noqa: BLE001 - a bad header is reported when it is read
            content = None
        if content:
            budget.stated(content, f"its zstd frame header states {format_size(content)}")


def check_stated(path: Path, budget: Budget) -> None:
    """Refuse ``path`` now if what it states up front (its size, a zstd frame header)
    is over ``budget``: before an engine is even asked for."""
    check_file(path)
    with path.open("rb") as fh:
        _stated(fh, detect_compression(path), os.fstat(fh.fileno()).st_size, budget)


@contextmanager
def _opened(
    path: Path, budget: Budget | None, digest: bool = True
) -> Iterator[tuple[io.BufferedIOBase, _Hashing, str]]:
    """The decompressed stream of ``path``, its raw reader, and the compression; what
    the file states up front is checked against ``budget`` first."""
    compression = detect_compression(path)
    with path.open("rb") as fh:
        if budget is not None:
            _stated(fh, compression, os.fstat(fh.fileno()).st_size, budget)
        raw = _Hashing(fh, digest)
        buffered = io.BufferedReader(raw, CHUNK)
        stream: io.BufferedIOBase
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif compression == "zstd":
            stream = _zstd().ZstdFile(buffered)
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


class Sink(Protocol):
    """Where ``scan_tar`` hands on the decompressed bytes it read."""

    def feed(self, data: bytes) -> None: ...

    def release(self, offset: int) -> None:
        """Bytes before ``offset`` (the end of a checked member) may go on."""

    def end(self, offset: int) -> None:
        """The archive ends at ``offset`` (its end marker included)."""


class _Counted(io.RawIOBase):
    """The decompressed stream, charged to the budget and handed to the sink; keeps the
    most recent chunks (to check the tar end-of-archive marker, which ``tarfile`` does
    not verify; it reads at most ``CHUNK`` ahead)."""

    KEEP = 2 * CHUNK

    def __init__(self, stream: io.BufferedIOBase, budget: Budget, sink: Sink | None) -> None:
        self._stream = stream
        self._budget = budget
        self._sink = sink
        self.count = 0
        self._recent: deque[bytes] = deque()
        self._recent_size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size is not None and size >= 0 else CHUNK)
        if data:
            self._budget.charge(len(data))
            self.count += len(data)
            self._recent.append(data)
            self._recent_size += len(data)
            while self._recent_size - len(self._recent[0]) >= self.KEEP:
                self._recent_size -= len(self._recent.popleft())
            if self._sink is not None:
                self._sink.feed(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def since(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from stream ``offset`` on, if still kept."""
        tail = b"".join(self._recent)
        start = len(tail) - (self.count - offset)
        return tail[start : start + size] if start >= 0 else b""


class _Header(tarfile.TarInfo):
    """A tar header that refuses an extended header too large to be real (``tarfile``
    would read it into memory whole). Given to ``tarfile.open(tarinfo=...)``, the
    documented way to read headers with another ``TarInfo``."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED and info.size > MAX_EXTENDED:
            raise _Oversized(
                f"an extended header of {info.size} bytes ({info.name!r}); real ones are small"
            )
        return info


class _Oversized(Exception):
    pass


def _decompression_error(exc: tarfile.ReadError) -> None:
    """tarfile reports a zlib error as ReadError: raise the real cause (see _reasons)."""
    cause = exc.__context__
    causes: tuple[type[BaseException], ...] = (EOFError, *_corrupt_errors())
    if isinstance(cause, causes):
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
    """Member names ``record`` asked for (at most ``MAX_NAMES``; see ``names_complete``)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Contents of the small members ``keep`` asked for."""
    members: int = 0
    names_complete: bool = True


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _everything(name: str) -> bool:
    return True


class _Members:
    """Goes through a tar's members once: checks each header against the budget,
    remembers names and keeps small JSON members."""

    def __init__(
        self,
        path: Path,
        keep: Callable[[str, int], bool],
        record: Callable[[str], bool],
        budget: Budget,
    ) -> None:
        self.path = path
        self._keep = keep
        self._record = record
        self._budget = budget
        self.names: list[str] = []
        self.files: dict[str, bytes] = {}
        self.count = 0
        self.names_complete = True
        self.last: str | None = None
        self._kept = 0

    def read(self, tar: tarfile.TarFile, sink: Sink | None = None) -> None:
        while (member := tar.next()) is not None:
            _forget(tar)
            self.count += 1
            self.last = member.name
            name = _norm(member.name)
            self._budget.expect(member.size, f"member {name!r}")
            if self._record(name):
                if len(self.names) < MAX_NAMES:
                    self.names.append(name)
                else:
                    self.names_complete = False
            if member.isfile() and self._keep(name, member.size):
                self._take(tar, member, name)
            if sink is not None:
                sink.release(tar.offset)

    def _take(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
        extracted = tar.extractfile(member)
        assert extracted is not None
        head = extracted.read(1)
        if head not in (b"{", b"["):
            return  # not JSON (a small layer, say): skipped, not kept
        self._kept += member.size
        if self._kept > KEEP_TOTAL:
            raise BackupError(
                f"{self.path}: more than {KEEP_TOTAL >> 20} MiB of JSON members; "
                "not a backup this tool reads"
            )
        self.files[name] = head + extracted.read()

    def scan(self, compression: str, sha256: str, raw_size: int, tar_end: int) -> TarScan:
        return TarScan(
            self.path,
            compression,
            sha256,
            raw_size,
            tar_end,
            self.names,
            self.files,
            self.count,
            self.names_complete,
        )


class _Remembering(Protocol):
    members: list[tarfile.TarInfo]


def _forget(tar: tarfile.TarFile) -> None:
    """Drop the headers ``tar`` read so far: a ``TarFile`` keeps each one in its
    ``members`` list (not in its type stubs), which a stream of 100,000 members would
    fill for nothing; a streaming read never goes back to them."""
    cast(_Remembering, tar).members.clear()


def check_file(path: Path) -> None:
    """Raise BackupError unless ``path`` is a non-empty regular file."""
    if not path.exists():
        raise BackupError(f"{path}: backup file not found")
    if not path.is_file():
        raise BackupError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise BackupError(f"{path}: empty file")


def _what(compression: str) -> str:
    return "tar archive" if compression == "none" else f"{compression} data holding a tar archive"


def scan_tar(
    path: Path,
    keep: Callable[[str, int], bool] = lambda name, size: False,
    ref: BackupRef | None = None,
    budget: Budget | None = None,
    sink: Sink | None = None,
    record: Callable[[str], bool] = _everything,
) -> TarScan:
    """Read ``path`` (a tar, maybe compressed) to its end; raise BackupError if it is
    missing, empty, not a tar, corrupt, truncated, or over the ``budget``. Keeps members
    ``keep(name, size)`` wants (if they are JSON), remembers names ``record`` wants, and
    hands every decompressed byte to ``sink`` as it goes.

    The same read hashes the file, unless ``ref`` has a digest (locate() knew it) and the
    file is unchanged since (size and modification time). A digest ``ref`` lacked is
    filled in (also when the archive turned out bad: the rest of the file is hashed
    then, so the evidence names the backup that failed); ``check_digest`` compares it.
    """
    path = Path(path)
    check_file(path)
    budget = budget or Budget(str(path))
    members = _Members(path, keep, record, budget)
    digest = not _unchanged(ref, path)
    with _opened(path, budget, digest) as (stream, raw, compression), _reasons(path, compression):
        if ref is not None and not ref.sha256:
            _same_as_located(ref, path, raw.stat)
        fill = digest and ref is not None and not ref.sha256
        try:
            with _reasons(path, compression):  # a decompression error is a BackupError here
                tar_end = _pass(path, stream, compression, members, budget, sink)
        except BackupError as exc:
            if fill and not isinstance(exc, RestoreCancelled):
                raw.finish(budget)
                _filled(ref, path, raw)
            raise
        if digest:
            raw.finish(budget)  # nothing left, unless the decompressor stopped short of the end
            if ref is not None and not raw.whole:
                raise BackupError(f"{path}: changed while it was restored")
        if fill:
            _filled(ref, path, raw)
        return members.scan(compression, raw.hexdigest(), raw.count, tar_end)


def _pass(
    path: Path,
    stream: io.BufferedIOBase,
    compression: str,
    members: _Members,
    budget: Budget,
    sink: Sink | None,
) -> int:
    """Read the tar in ``stream`` to its end through ``members``; return ``tar_end``."""
    counted = _Counted(stream, budget, sink)
    try:
        tar = tarfile.open(fileobj=counted, mode="r|", tarinfo=_Header, bufsize=_TAR_BUFFER)  # noqa: SIM115
    except tarfile.ReadError as exc:
        _decompression_error(exc)
        if counted.count == 0:
            raise BackupError(f"{path}: empty {compression} stream") from None
        raise BackupError(f"{path}: not a {_what(compression)} ({exc})") from None
    except _Oversized as exc:
        raise BackupError(f"{path}: corrupt tar: {exc}") from None
    _read_members(members, tar, sink)
    if not members.count:
        raise BackupError(f"{path}: not a {_what(compression)} (no members)")
    tar_end = tar.offset
    if sink is not None:
        sink.end(tar_end + 2 * tarfile.BLOCKSIZE)
    # tarfile stops quietly at a cut-off or garbled header: demand the two zero
    # blocks that end every tar (Go's archive/tar, GNU tar and tarfile write them).
    while counted.count < tar_end + 2 * tarfile.BLOCKSIZE and counted.read(tarfile.BLOCKSIZE):
        pass
    _check_marker(path, counted.since(tar_end, 2 * tarfile.BLOCKSIZE), members.last)
    while counted.read(CHUNK):  # the rest: checks the compressed stream's end and checksum
        pass
    return tar_end


def _same_as_located(ref: BackupRef, path: Path, st: os.stat_result) -> None:
    """Without a digest from locate(), the file must still have the size and
    modification time locate() saw."""
    moved = []
    if ref.size_bytes is not None and st.st_size != ref.size_bytes:
        moved.append(f"{ref.size_bytes} bytes are now {st.st_size}")
    if ref.created_at is not None and abs(st.st_mtime - ref.created_at.timestamp()) >= 1e-3:
        moved.append("it was modified since")
    if moved:
        raise BackupError(f"{path}: changed since it was located ({'; '.join(moved)})")


def _filled(ref: BackupRef | None, path: Path, raw: _Hashing) -> None:
    """Give ``ref`` the digest of the whole file ``raw`` read (and remember it), if it
    read the whole file as it still is."""
    if ref is None or not raw.whole:
        return
    ref.sha256 = raw.hexdigest()
    remember_digest(path, raw.stat, ref.sha256)


def _read_members(members: _Members, tar: tarfile.TarFile, sink: Sink | None) -> None:
    try:
        members.read(tar, sink)
    except tarfile.ReadError as exc:
        _decompression_error(exc)
        raise BackupError(
            f"{members.path}: truncated: tar data ends inside {members.last!r} ({exc})"
        ) from None
    except _Oversized as exc:
        raise BackupError(f"{members.path}: corrupt tar: {exc}") from None


def _check_marker(path: Path, marker: bytes, last: str | None) -> None:
    if len(marker) < 2 * tarfile.BLOCKSIZE:
        raise BackupError(
            f"{path}: truncated: tar archive ends after {last!r} without its end-of-archive marker"
        )
    if marker.strip(b"\0"):
        raise BackupError(f"{path}: corrupt tar: unreadable header after {last!r}")


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


def label_changes(labels: dict[str, str]) -> list[str]:
    """``docker import`` changes that set ``labels`` (Dockerfile-quoted)."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return [f"LABEL {quote(k)}={quote(v)}" for k, v in labels.items()]
