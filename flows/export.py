"""``restoredrill evidence export``: runs of the store, as a signed bundle (attestation.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from restoredrill.errors import ExitCode

from . import chain
from .attestation import Link, write_bundle
from .evidence import ChainReport, EvidenceError, EvidenceStore, runs_t
from .results import RunRecord
from .signing import Signer, SigningError


class ExportRefused(EvidenceError):
    """The chain does not verify: nothing is exported from it (the message says why); a
    failure (exit 1), not bad input."""

    exit_code = ExitCode.FAILURE
    headline = "not exported"


@dataclass
class Exported:
    path: Path
    runs: int
    attestations: int
    keyid: str


def _manifest(
    store: EvidenceStore,
    signer: Signer,
    report: ChainReport,
    keys: list[dict[str, Any]],
    checkpoint: dict[str, Any] | None,
    site: str | None,
    since: datetime | None,
    run_id: str | None,
) -> dict[str, Any]:
    """The bundle's manifest: what was selected, the chain's head, its keys."""
    return {
        "site": site,
        "store": store.shown,
        "selection": {"since": since.isoformat() if since else None, "run": run_id},
        "chain": {"head": report.head, "runs": report.runs, "pruned": report.pruned},
        "keys": keys
        or [{"keyid": signer.keyid, "public_key": signer.public.pem, "announcement": None}],
        "checkpoint": checkpoint,
        "unsigned_chain": not keys,  # then the bundle's key stands on its own
    }


def export(
    store: EvidenceStore,
    path: Path,
    signer: Signer,
    *,
    site: str | None = None,
    since: datetime | None = None,
    run_id: str | None = None,
) -> Exported:
    """Check the chain (every link and signature; the records of the runs exported),
    then write the selected runs, signed by ``signer`` (the chain's key)."""
    with store._errors("export runs"), store._read() as conn:
        state = chain.key_state(conn)
        query = select(runs_t.c.seq, runs_t.c.run_id, runs_t.c.prev_hash, runs_t.c.hash)
        if site is not None:
            query = query.where(runs_t.c.site == site)
        if since is not None:
            query = query.where(runs_t.c.started_at >= since)
        if run_id is not None:
            query = query.where(runs_t.c.run_id == run_id)
        rows = list(conn.execute(query.order_by(runs_t.c.seq)))
        event_rows = chain.events(conn)
        sigs = chain.signatures(conn)
    if state is not None and state.keyid != signer.keyid:
        raise SigningError(
            f"signing key {signer.path} ({signer.keyid[:16]}) is not the chain's key "
            f"{state.keyid[:16]} (since #{state.since}): export with the chain's key"
        )
    if run_id is not None and not rows:
        raise EvidenceError(f"no run {run_id!r} in evidence database {store.shown}")
    report = store.verify(content_from=rows[0].seq if rows else 1 << 62)
    if not report.ok:
        raise ExportRefused(f"evidence database {store.shown}: {report.problem}")
    manifest = _manifest(store, signer, report, *_keys(event_rows, sigs), site, since, run_id)

    def items() -> Iterator[tuple[RunRecord, Link]]:  # one run loaded at a time
        for row in rows:
            signed = next(iter(sigs.get(row.seq, {}).items()), None)
            sig = {"keyid": signed[0], "sig": signed[1]} if signed else None
            yield store.load(row.run_id), Link(row.seq, row.prev_hash, row.hash, sig)

    try:
        runs, count = write_bundle(path, items(), signer, manifest=manifest)
    except OSError as exc:
        raise EvidenceError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Exported(path, runs, count, signer.keyid)


def _keys(
    event_rows: list[Any], sigs: dict[int, dict[str, str]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The chain's keys with their announcements; the newest checkpoint."""
    keys: list[dict[str, Any]] = []
    checkpoint = None
    cut = chain.checkpoint(event_rows)
    for row in event_rows:
        event = {
            "seq": row.seq,
            "prev_hash": row.prev_hash,
            "hash": row.hash,
            "body": row.body,
            "signatures": sigs.get(row.seq, {}),
        }
        if row.kind == "checkpoint" and cut is not None and json.loads(row.body) == cut:
            checkpoint = event
    if cut and cut.get("key_at_cut"):
        at = cut["key_at_cut"]
        keys.append({"keyid": at["keyid"], "public_key": at["public_key"], "announcement": None})
    for row in event_rows:
        if row.kind != "key":
            continue
        body = json.loads(row.body)
        keys.append(
            {
                "keyid": body["keyid"],
                "public_key": body["public_key"],
                "announcement": {
                    "seq": row.seq,
                    "prev_hash": row.prev_hash,
                    "hash": row.hash,
                    "body": row.body,
                    "signatures": sigs.get(row.seq, {}),
                },
            }
        )
    return keys, checkpoint
