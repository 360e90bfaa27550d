"""``restoredrill evidence prune --keep 400d``: remove old runs, keep the chain verifiable.

The chain is verified first (nothing is pruned from a broken chain: pruning would hide
what was altered). The oldest links up to the last run older than the retention are
removed (their rows, alert deliveries, events and signatures), and a checkpoint is
appended, signed by the site key: the seq and hash the chain now starts after, how many
runs were removed, their first and last, and the key in effect at the cut.
``evidence verify`` then starts from the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select

from . import chain
from .evidence import (
    EvidenceError,
    EvidenceStore,
    chain_events_t,
    chain_head,
    checks_t,
    deliveries_t,
    results_t,
    runs_t,
    signatures_t,
    steps_t,
)
from .signing import Signer, SigningError


@dataclass
class Pruned:
    runs: int
    cut_seq: int | None
    first_run: str | None = None
    last_run: str | None = None
    checkpoint_seq: int | None = None


def prune(
    store: EvidenceStore,
    signer: Signer | None,
    keep: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Remove the runs that started more than ``keep`` ago (and every link before them)."""
    if signer is None:
        raise SigningError(
            "pruning leaves a checkpoint signed by the site key: give it (signing_key: in "
            "the site file, $RESTOREDRILL_SIGNING_KEY, or --key); make one with "
            "`restoredrill evidence keygen -o site.key`"
        )
    cutoff = (now or datetime.now(UTC)) - keep
    report = store.verify()
    if not report.ok:
        raise EvidenceError(
            f"evidence database {store.shown}: nothing pruned: the chain does not verify: "
            f"{report.problem}"
        )
    with store._errors("prune runs"), store._write() as conn:
        plan = _plan(conn, cutoff)
        if plan.runs == 0 or dry_run:
            return plan
        state = chain.key_state(conn)
        if state is not None and state.keyid != signer.keyid:
            raise SigningError(
                f"evidence database {store.shown}: {signer.path} ({signer.keyid[:16]}) is not the "
                f"chain's key {state.keyid[:16]}"
            )
        assert plan.cut_seq is not None
        body = _checkpoint_body(conn, plan, cutoff, keep)
        _delete(conn, plan.cut_seq)
        head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
        seq, prev = chain.before_append(conn, store.shown, head.seq, head.hash, signer)
        plan.checkpoint_seq, _ = chain.append_event(conn, seq, prev, body, [signer])
    return plan


def _plan(conn: Connection, cutoff: datetime) -> Pruned:
    """Where to cut: after the last run older than ``cutoff`` that no younger run precedes."""
    start = _start(conn)
    young = conn.execute(
        select(func.min(runs_t.c.seq)).where(runs_t.c.started_at >= cutoff, runs_t.c.seq > start)
    ).scalar()
    query = select(runs_t.c.seq, runs_t.c.run_id).where(runs_t.c.seq > start)
    if young is not None:
        query = query.where(runs_t.c.seq < young)
    old = list(conn.execute(query.order_by(runs_t.c.seq)))
    if not old:
        return Pruned(0, None)
    return Pruned(len(old), old[-1].seq, old[0].run_id, old[-1].run_id)


def _start(conn: Connection) -> int:
    """The seq the chain now starts after (0, or the newest checkpoint's cut)."""
    cut = chain.checkpoint(chain.events(conn))
    return int(cut["cut_seq"]) if cut else 0


def _checkpoint_body(
    conn: Connection, plan: Pruned, cutoff: datetime, keep: timedelta
) -> dict[str, Any]:
    assert plan.cut_seq is not None
    cut_hash = conn.execute(select(runs_t.c.hash).where(runs_t.c.seq == plan.cut_seq)).scalar_one()
    event_rows = chain.events(conn)
    previous = chain.checkpoint(event_rows)
    at_cut = previous.get("key_at_cut") if previous else None
    announced = list(previous.get("announcements", [])) if previous else []
    sigs = chain.signatures(conn)
    for row in event_rows:
        if row.kind == "key" and row.seq <= plan.cut_seq:
            body = json.loads(row.body)
            at_cut = {"keyid": body["keyid"], "public_key": body["public_key"]}
            announced.append(
                {"seq": row.seq, "prev_hash": row.prev_hash, "hash": row.hash, "body": row.body,
                 "signatures": sigs.get(row.seq, {})}
            )  # fmt: skip
    return {
        "kind": "checkpoint",
        "cut_seq": plan.cut_seq,
        "cut_hash": cut_hash,
        "pruned_runs": plan.runs,
        "pruned_total": plan.runs + (int(previous.get("pruned_total", 0)) if previous else 0),
        "first_run": plan.first_run,
        "last_run": plan.last_run,
        "before": cutoff.isoformat(timespec="seconds"),
        "keep_days": round(keep.total_seconds() / 86400, 3),
        "key_at_cut": at_cut,
        "announcements": announced,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _delete(conn: Connection, cut_seq: int) -> None:
    """Remove every link up to ``cut_seq`` with all its rows."""
    old_runs = select(runs_t.c.id).where(runs_t.c.seq <= cut_seq)
    old_results = select(results_t.c.id).where(results_t.c.run_pk.in_(old_runs))
    conn.execute(delete(checks_t).where(checks_t.c.result_pk.in_(old_results)))
    conn.execute(delete(steps_t).where(steps_t.c.result_pk.in_(old_results)))
    conn.execute(delete(results_t).where(results_t.c.run_pk.in_(old_runs)))
    old_ids = select(runs_t.c.run_id).where(runs_t.c.seq <= cut_seq)
    conn.execute(delete(deliveries_t).where(deliveries_t.c.run_id.in_(old_ids)))
    conn.execute(delete(runs_t).where(runs_t.c.seq <= cut_seq))
    conn.execute(delete(chain_events_t).where(chain_events_t.c.seq <= cut_seq))
    conn.execute(delete(signatures_t).where(signatures_t.c.seq <= cut_seq))
