"""Runs whose evidence could not be recorded, kept on local disk until the store takes them.

A spool file ``<run id>.json`` holds the run record (in the form the chain hashes), its
alert deliveries, the site and store it was meant for, and why it was not recorded. It
is written to the site's ``.restoredrill/spool/``, or where that cannot be written (a
read-only site directory) to ``$XDG_STATE_HOME/restoredrill/spool/``
(``~/.local/state/restoredrill/spool/``). The next run of the site that can write its
store, or ``restoredrill evidence import``, appends the spooled runs to the chain in the
order they started and removes their files. A file that cannot be imported is reported
and kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from restoredrill.errors import ExitCode, RestoredrillError

from .canonical import canonical_json, normalized
from .evidence import AlreadyRecorded, EvidenceError, EvidenceStore
from .results import RunRecord

FORMAT = "restoredrill-spool/1"
log = logging.getLogger(__name__)


class SpoolError(RestoredrillError):
    """A spool file cannot be written or read; the message names it and says why."""


class EvidenceSpooled(EvidenceError):
    """The run's evidence could not be recorded; the record was spooled to ``path``
    (None if even that failed: the run's own output is then its only copy)."""

    exit_code = ExitCode.NOT_RECORDED

    def __init__(
        self, message: str, path: str | None, record: RunRecord, deliveries: list[dict[str, Any]]
    ) -> None:
        super().__init__(message)
        self.args = (message, path, record, deliveries)  # all in args: survives pickling
        self.message, self.path, self.record, self.deliveries = message, path, record, deliveries

    def __str__(self) -> str:
        return self.message


@dataclass
class Spooled:
    """One spool file, read."""

    path: Path
    record: RunRecord
    deliveries: list[dict[str, Any]]
    site: str | None
    evidence: str
    reason: str


@dataclass
class ImportReport:
    """What :func:`import_files` did with each file."""

    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    """Runs the chain already held, identical: their files were removed."""
    kept: list[tuple[Path, str]] = field(default_factory=list)
    """Files left where they are, and why."""


# --------------------------------------------------------------------------- where


def site_dir(site_path: str | Path) -> Path:
    return Path(site_path).resolve().parent / ".restoredrill" / "spool"


def user_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "restoredrill" / "spool"


# --------------------------------------------------------------------------- writing


def write(
    record: RunRecord,
    deliveries: Iterable[Any],
    *,
    site_path: str | Path | None,
    evidence: str,
    reason: str,
) -> Path:
    """Spool ``record`` (and its alert deliveries) for the store ``evidence`` (masked URL);
    return the file. Raises SpoolError if no spool directory can be written."""
    record = normalized(record)
    body = {
        "format": FORMAT,
        "site": str(Path(site_path).resolve()) if site_path else None,
        "evidence": evidence,
        "reason": reason,
        "spooled_at": datetime.now(UTC).isoformat(),
        "sha256": hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest(),
        "record": record.model_dump(mode="json"),
        "deliveries": [d.as_dict() if hasattr(d, "as_dict") else dict(d) for d in deliveries],
    }
    data = json.dumps(body, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    folders = ([site_dir(site_path)] if site_path else []) + [user_dir()]
    problems = []
    for folder in folders:
        try:
            return _write_file(folder / f"{record.run_id}.json", data)
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
    raise SpoolError(f"cannot spool run {record.run_id}: " + "; ".join(problems))


def _write_file(path: Path, data: str) -> Path:
    """Write ``path`` whole or not at all (a temporary file, synced, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="ascii") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def spool_run(
    record: RunRecord,
    deliveries: Sequence[Any],
    *,
    site_path: str | Path | None,
    evidence: str,
    problem: EvidenceError,
) -> EvidenceSpooled:
    """Spool a run the store refused; the exception to raise says where it went."""
    payload = [d.as_dict() if hasattr(d, "as_dict") else dict(d) for d in deliveries]
    try:
        path: str | None = str(
            write(record, payload, site_path=site_path, evidence=evidence, reason=str(problem))
        )
        where = f"the run was spooled to {path}"
    except SpoolError as exc:
        path, where = None, f"{exc}: this output is the only copy of the run's record"
    return EvidenceSpooled(f"{problem}\n{where}", path, record, payload)


# --------------------------------------------------------------------------- reading


def read(path: Path) -> Spooled:
    """Read a spool file; raise SpoolError naming it and what is wrong."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpoolError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpoolError(f"{path}: not a spool file (not JSON: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise SpoolError(f'{path}: not a spool file (no "format": "{FORMAT}")')
    try:
        record = RunRecord.model_validate(body["record"])
    except (KeyError, ValidationError) as exc:
        raise SpoolError(f"{path}: its run record is not valid: {exc}") from None
    digest = hashlib.sha256(canonical_json(record).encode("utf-8")).hexdigest()
    if digest != body.get("sha256"):
        raise SpoolError(f"{path}: the run record was changed after it was spooled")
    return Spooled(
        path,
        record,
        list(body.get("deliveries") or []),
        body.get("site"),
        str(body.get("evidence", "")),
        str(body.get("reason", "")),
    )


def pending(site_path: str | Path | None, evidence: str | None = None) -> list[Path]:
    """The spool files of a site (its own spool directory, and the files in the user's
    meant for it), or without a site those in the user's meant for the store ``evidence``.
    Files that cannot be read are included: importing reports them."""
    site = str(Path(site_path).resolve()) if site_path else None
    found = sorted(site_dir(site_path).glob("*.json")) if site_path else []
    for path in sorted(user_dir().glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            ours = body.get("site") == site if site else body.get("evidence") == evidence
        except (OSError, ValueError, AttributeError):
            ours = True  # unreadable: whoever looks should hear of it
        if ours and path not in found:
            found.append(path)
    return found


# --------------------------------------------------------------------------- importing


def import_files(store: EvidenceStore, paths: Iterable[Path]) -> ImportReport:
    """Append the runs of ``paths`` to ``store``'s chain, oldest first; remove each file
    once its run is in the chain. Raises EvidenceError if the store fails midway (the
    files not yet imported stay)."""
    report = ImportReport()
    items = []
    for path in paths:
        try:
            items.append(read(path))
        except SpoolError as exc:
            if path.exists():  # else another run imported it meanwhile
                report.kept.append((path, str(exc)))
    for item in sorted(items, key=lambda s: (s.record.started_at, s.record.run_id)):
        run_id = item.record.run_id
        try:
            store.record(item.record, item.deliveries)
        except AlreadyRecorded:
            if canonical_json(store.load(run_id)) != canonical_json(item.record):
                report.kept.append(
                    (item.path, f"a different record of run {run_id} is already in the chain")
                )
                continue
            report.already.append(run_id)
        else:
            report.imported.append(run_id)
        try:
            item.path.unlink(missing_ok=True)
        except OSError as exc:
            report.kept.append((item.path, f"imported, but cannot remove it: {exc.strerror}"))
    return report


def import_pending(store: EvidenceStore, site_path: str | Path) -> ImportReport:
    """Before a run is recorded: append the site's runs spooled earlier (and say so)."""
    report = import_files(store, pending(site_path))
    if report.imported:
        log.warning(
            "evidence: appended %d run(s) spooled earlier to %s: %s",
            len(report.imported),
            store.shown,
            ", ".join(report.imported),
        )
    for path, why in report.kept:
        log.warning("evidence: spool file kept: %s", why if str(path) in why else f"{path}: {why}")
    return report
