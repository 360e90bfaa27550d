"""The evidence chain's links, their signatures, and its verification.

The chain is one sequence (``seq`` 1, 2, …) of links: runs (table ``runs``) and events
(table ``chain_events``: a signing key announced, runs pruned). Each link stores
``prev_hash`` and ``hash``; a run's hash covers its whole record (flows/canonical.py),
an event's covers its body. With a site key, each link is signed: the signature covers
``{"hash", "kind", "prev_hash", "seq"}`` (DSSE PAE, flows/signing.py), so it signs the
record together with its place in the chain.

- The first signed append announces the key (an event signed by the key itself). From
  then on only runs signed by that key are appended; ``rotate`` announces a new key,
  signed by the old one and by the new one.
- ``prune`` (flows/retention.py) removes the oldest links and appends a checkpoint:
  the seq and hash the chain now starts after, the runs removed, and the key in effect
  there, signed by the current key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, inspect, select, update

from . import canonical_rows as rows_text
from .evidence import (
    GENESIS,
    ChainReport,
    _check_link,
    _records,
    chain_events_t,
    chain_head,
    checks_t,
    results_t,
    runs_t,
    signatures_t,
)
from .signing import PublicKey, Signer, SigningError, b64, unb64

LINK_TYPE = "application/vnd.restoredrill.chain-link+json"
"""The DSSE payload type of a link signature."""

_RUNS_PER_BATCH = 8


def dumps(data: Any) -> str:
    """Canonical JSON of an event body or link: sorted keys, compact, ASCII."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link_payload(kind: str, seq: int, prev_hash: str, digest: str) -> bytes:
    """What a link's signature covers."""
    return dumps({"hash": digest, "kind": kind, "prev_hash": prev_hash, "seq": seq}).encode()


def event_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyState:
    """The key that signs the chain's links from ``since`` (a seq) on."""

    keyid: str
    public: PublicKey
    since: int


# --------------------------------------------------------------------------- writing


def key_state(conn: Connection) -> KeyState | None:
    """The key in effect at the head: the newest announced, else the one a checkpoint
    says was in effect where the chain was cut, else None (an unsigned chain)."""
    row = conn.execute(
        select(chain_events_t.c.seq, chain_events_t.c.kind, chain_events_t.c.body)
        .where(chain_events_t.c.kind.in_(["key", "checkpoint"]))
        .order_by(chain_events_t.c.seq.desc())
    ).first()
    while row is not None:
        body = json.loads(row.body)
        if row.kind == "key":
            return KeyState(body["keyid"], PublicKey.from_pem(body["public_key"]), row.seq)
        at_cut = body.get("key_at_cut")
        if at_cut:
            return KeyState(at_cut["keyid"], PublicKey.from_pem(at_cut["public_key"]), row.seq)
        row = conn.execute(
            select(chain_events_t.c.seq, chain_events_t.c.kind, chain_events_t.c.body)
            .where(chain_events_t.c.kind == "key", chain_events_t.c.seq < row.seq)
            .order_by(chain_events_t.c.seq.desc())
        ).first()
    return None


def sign_link(
    conn: Connection, signer: Signer, kind: str, seq: int, prev: str, digest: str
) -> None:
    sig = signer.sign(LINK_TYPE, link_payload(kind, seq, prev, digest))
    conn.execute(insert(signatures_t).values(seq=seq, keyid=signer.keyid, sig=b64(sig)))


def append_event(
    conn: Connection, head_seq: int, head_hash: str, body: dict[str, Any], signers: Sequence[Signer]
) -> tuple[int, str]:
    """Append an event after the head (the caller holds the chain lock); return the new head."""
    text = dumps(body)
    seq, digest = head_seq + 1, event_hash(head_hash, text)
    conn.execute(
        insert(chain_events_t).values(
            seq=seq, kind=body["kind"], body=text, recorded_at=datetime.now(UTC),
            prev_hash=head_hash, hash=digest,
        )
    )  # fmt: skip
    for signer in signers:
        sign_link(conn, signer, body["kind"], seq, head_hash, digest)
    conn.execute(update(chain_head).where(chain_head.c.id == 1).values(seq=seq, hash=digest))
    return seq, digest


def key_body(new: PublicKey, previous: str | None) -> dict[str, Any]:
    return {
        "kind": "key",
        "keyid": new.keyid,
        "public_key": new.pem,
        "previous_keyid": previous,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def before_append(
    conn: Connection, store: str, head_seq: int, head_hash: str, signer: Signer | None
) -> tuple[int, str]:
    """Check the run about to be appended can be signed as the chain requires; announce
    ``signer``'s key first if the chain has none yet. Returns the head to append after."""
    state = key_state(conn)
    if signer is None:
        if state is not None:
            raise SigningError(
                f"evidence database {store}: its chain is signed by key {state.keyid[:16]} "
                f"(since #{state.since}): give that key's private file (signing_key: in the "
                f"site file, or ${'RESTOREDRILL_SIGNING_KEY'})"
            )
        return head_seq, head_hash
    if state is None:
        return append_event(conn, head_seq, head_hash, key_body(signer.public, None), [signer])
    if state.keyid != signer.keyid:
        raise SigningError(
            f"evidence database {store}: signing key {signer.path} ({signer.keyid[:16]}) is not "
            f"the chain's key {state.keyid[:16]} (since #{state.since}); to change keys, "
            "announce the new one signed by the old: restoredrill evidence rotate NEW.key"
        )
    return head_seq, head_hash


def rotate(conn: Connection, store: str, old: Signer | None, new: Signer) -> int:
    """Announce ``new`` in the chain, signed by ``old`` (the key in effect) and by itself."""
    head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
    state = key_state(conn)
    signers = [new]
    if state is not None:
        if old is None:
            raise SigningError(
                f"evidence database {store}: a new key must be announced by the chain's key "
                f"{state.keyid[:16]}: give its private file (--key, signing_key: or "
                "$RESTOREDRILL_SIGNING_KEY)"
            )
        if old.keyid != state.keyid:
            raise SigningError(
                f"evidence database {store}: {old.path} ({old.keyid[:16]}) is not the chain's "
                f"key {state.keyid[:16]}"
            )
        if new.keyid == state.keyid:
            raise SigningError(f"{new.path} is already the chain's key")
        signers = [old, new]
    body = key_body(new.public, state.keyid if state else None)
    seq, _ = append_event(conn, head.seq, head.hash, body, signers)
    return seq


# --------------------------------------------------------------------------- reading


def _exists(conn: Connection, table: Any) -> bool:
    """Whether ``table`` is there (a store written by 0.1, opened read-only, lacks it)."""
    return inspect(conn).has_table(table.name)


def events(conn: Connection, up_to: int | None = None) -> list[Any]:
    if not _exists(conn, chain_events_t):
        return []
    query = select(chain_events_t).order_by(chain_events_t.c.seq)
    if up_to is not None:
        query = query.where(chain_events_t.c.seq <= up_to)
    return list(conn.execute(query))


def signatures(conn: Connection, seqs: Sequence[int] | None = None) -> dict[int, dict[str, str]]:
    if not _exists(conn, signatures_t):
        return {}
    query = select(signatures_t.c.seq, signatures_t.c.keyid, signatures_t.c.sig)
    if seqs is not None:
        if not seqs:
            return {}
        query = query.where(signatures_t.c.seq.between(min(seqs), max(seqs)))
    found: dict[int, dict[str, str]] = {}
    for row in conn.execute(query):
        found.setdefault(row.seq, {})[row.keyid] = row.sig
    return found


def checkpoint(event_rows: Sequence[Any]) -> dict[str, Any] | None:
    """The body of the newest checkpoint: where the chain now starts."""
    for row in reversed(event_rows):
        if row.kind == "checkpoint":
            return json.loads(row.body)
    return None


# --------------------------------------------------------------------------- verifying


@dataclass
class _Walk:
    """The verifier's state as it walks the chain."""

    prev: str
    expected: int
    key: KeyState | None
    pinned: PublicKey | None
    runs: int = 0
    signed: int = 0
    unsigned: int = 0
    keys: list[str] = field(default_factory=list)
    trusted: bool = False
    """The pinned key (if any) was met: the keys after it are vouched for."""
    sigs: dict[int, dict[str, str]] = field(default_factory=dict)


class _Broken(Exception):
    def __init__(self, problem: str, run_id: str | None, seq: int | None) -> None:
        super().__init__(problem)
        self.problem, self.run_id, self.seq = problem, run_id, seq


def verify(
    conn: Connection, *, content_from: int = 0, pinned: PublicKey | None = None
) -> ChainReport:
    """Walk the chain from its start (or its newest checkpoint) to the head."""
    head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
    event_rows = events(conn, head.seq)
    cut = checkpoint(event_rows)
    walk = _Walk(GENESIS, 1, None, pinned)
    pruned = 0
    if cut is not None:
        walk.prev, walk.expected = cut["cut_hash"], cut["cut_seq"] + 1
        pruned = int(cut.get("pruned_total", 0))
        if cut.get("key_at_cut"):
            at = cut["key_at_cut"]
            walk.key = KeyState(at["keyid"], PublicKey.from_pem(at["public_key"]), cut["cut_seq"])
            walk.keys.append(at["keyid"])
            walk.trusted = pinned is not None and pinned.keyid == at["keyid"]
    pending = [e for e in event_rows if e.seq >= walk.expected]
    walk.sigs = signatures(conn, [walk.expected, head.seq]) if head.seq >= walk.expected else {}
    fast = _fast_possible(conn)
    try:
        for kind, item, text in _links(conn, walk.expected, head.seq, pending, content_from, fast):
            if kind == "run":
                _run(conn, walk, item, text, content_from)
            else:
                _event(walk, item)
        last = walk.expected - 1
        if last != head.seq or walk.prev != head.hash:
            gone = f"#{last + 1}" + (f"..#{head.seq}" if head.seq > last + 1 else "")
            raise _Broken(
                f"the newest run(s) {gone} were removed: the chain head is run #{head.seq} "
                f"but the last run in the database is #{last}",
                None,
                last + 1,
            )
        if pinned is not None and not walk.trusted:
            have = walk.keys[-1][:16] if walk.keys else "none"
            raise _Broken(
                f"the chain is not signed by key {pinned.keyid[:16]} (its keys: "
                f"{', '.join(k[:16] for k in walk.keys) or have})",
                None,
                None,
            )
    except _Broken as broken:
        return ChainReport(
            False, walk.runs, head.hash, broken.run_id, broken.seq, broken.problem,
            walk.key.keyid if walk.key else None, walk.signed, walk.unsigned, pruned,
            tuple(walk.keys),
        )  # fmt: skip
    return ChainReport(
        True, walk.runs, head.hash, keyid=walk.key.keyid if walk.key else None,
        signed=walk.signed, unsigned=walk.unsigned, pruned=pruned, keys=tuple(walk.keys),
    )  # fmt: skip


def _links(
    conn: Connection, start: int, last: int, pending: list[Any], content_from: int, fast: bool
) -> Iterator[tuple[str, Any, str | None]]:
    """Runs and events in seq order; each run with its canonical text written from its
    rows (None: to be rebuilt the exact way, or not checked before ``content_from``)."""
    after = start - 1
    queue = list(pending)
    while True:
        run_rows = list(
            conn.execute(
                select(runs_t)
                .where(runs_t.c.seq > after, runs_t.c.seq <= last)
                .order_by(runs_t.c.seq)
                .limit(_RUNS_PER_BATCH)
            )
        )
        texts = _texts(conn, [r for r in run_rows if r.seq >= content_from]) if fast else {}
        for row in run_rows:
            while queue and queue[0].seq < row.seq:
                yield "event", queue.pop(0), None
            yield "run", row, texts.get(row.id)
        if not run_rows:
            break
        after = run_rows[-1].seq
    for event in queue:
        yield "event", event, None


def _missing(walk: _Walk, seq: int, what: str, run_id: str | None = None) -> None:
    if seq != walk.expected:
        gone = f"#{walk.expected}" + (f"..#{seq - 1}" if seq - 1 > walk.expected else "")
        raise _Broken(f"run {gone} was removed: the chain goes on at {what}", run_id, seq)


def _run(conn: Connection, walk: _Walk, row: Any, text: str | None, content_from: int) -> None:
    name = f"run {row.run_id} (#{row.seq})"
    _missing(walk, row.seq, name, row.run_id)
    if row.prev_hash != walk.prev:
        raise _Broken(
            f"{name} does not follow the run before it: a run was removed, replaced or its hash altered",
            row.run_id,
            row.seq,
        )
    if row.seq >= content_from:
        fast = text is not None and chain_hash_text(walk.prev, text) == row.hash
        if not fast:
            problem = _exact(conn, row, walk.prev)
            if problem:
                raise _Broken(problem, row.run_id, row.seq)
    _signature(walk, "run", row.seq, row.prev_hash, row.hash, name, row.run_id)
    walk.prev, walk.expected = row.hash, row.seq + 1
    walk.runs += 1


def chain_hash_text(prev: str, text: str) -> str:
    return hashlib.sha256((prev + text).encode("utf-8")).hexdigest()


def _exact(conn: Connection, row: Any, prev: str) -> str:
    """Rebuild the run through its models (and the 0.1 readings): '' if it matches."""
    name = f"run {row.run_id} (#{row.seq})"
    try:
        record = _records(conn, [row], unsure=True)[0]
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()[0]
        return f"{name} was altered: its rows no longer make a valid record ({first})"
    return _check_link(row, record, prev, row.seq)


def _signature(
    walk: _Walk, kind: str, seq: int, prev: str, digest: str, name: str, run_id: str | None
) -> None:
    if walk.key is None:
        walk.unsigned += kind == "run"
        return
    sig = walk.sigs.get(seq, {}).get(walk.key.keyid)
    if sig is None:
        raise _Broken(
            f"{name} is not signed by the chain's key {walk.key.keyid[:16]} (in effect since "
            f"#{walk.key.since}): its signature was removed, or it was added without the key",
            run_id,
            seq,
        )
    if not _valid(walk.key.public, kind, seq, prev, digest, sig):
        raise _Broken(
            f"{name}: its signature by key {walk.key.keyid[:16]} does not match: the run, its "
            "place in the chain or the signature was altered",
            run_id,
            seq,
        )
    walk.signed += kind == "run"


def _valid(key: PublicKey, kind: str, seq: int, prev: str, digest: str, sig: str) -> bool:
    try:
        raw = unb64(sig)
    except ValueError:
        return False
    return key.verify(LINK_TYPE, link_payload(kind, seq, prev, digest), raw)


def _event(walk: _Walk, row: Any) -> None:
    name = f"{'key announcement' if row.kind == 'key' else row.kind} #{row.seq}"
    _missing(walk, row.seq, name)
    if row.prev_hash != walk.prev:
        raise _Broken(
            f"{name} does not follow the link before it: the chain was rewritten", None, row.seq
        )
    if event_hash(walk.prev, row.body) != row.hash:
        raise _Broken(f"{name} was altered: its body no longer matches its hash", None, row.seq)
    try:
        body = json.loads(row.body)
    except ValueError:
        raise _Broken(f"{name} was altered: its body is not JSON", None, row.seq) from None
    if row.kind == "key":
        try:
            new = PublicKey.from_pem(body["public_key"])
        except (SigningError, KeyError, TypeError):
            raise _Broken(f"{name}: its public key cannot be read", None, row.seq) from None
        if new.keyid != body.get("keyid"):
            raise _Broken(f"{name}: its key id does not match its public key", None, row.seq)
        if walk.key is not None:  # the old key vouches for the new one
            _signature(walk, "key", row.seq, row.prev_hash, row.hash, name, None)
        sig = walk.sigs.get(row.seq, {}).get(new.keyid)
        if sig is None or not _valid(new, "key", row.seq, row.prev_hash, row.hash, sig):
            raise _Broken(
                f"{name}: not signed by the key it announces ({new.keyid[:16]})", None, row.seq
            )
        if walk.pinned is not None and new.keyid == walk.pinned.keyid:
            walk.trusted = True
        walk.key = KeyState(new.keyid, new, row.seq)
        walk.keys.append(new.keyid)
    else:
        _signature(walk, row.kind, row.seq, row.prev_hash, row.hash, name, None)
    walk.prev, walk.expected = row.hash, row.seq + 1


def _texts(conn: Connection, run_rows: Sequence[Any]) -> dict[int, str]:
    """Canonical texts of runs, written from their rows (runs it cannot write are left out)."""
    if not run_rows:
        return {}
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        ids = [r.id for r in run_rows]
        cursor.execute(
            f"SELECT {', '.join(rows_text.RESULT_COLS)} FROM system_results "
            f"WHERE run_pk IN ({', '.join([ph] * len(ids))}) ORDER BY run_pk, position",
            ids,
        )
        results = cursor.fetchall()
        if not results:
            return {r.id: rows_text.run_text(_run_tuple(r), []) for r in run_rows}
        lo, hi = min(r[0] for r in results), max(r[0] for r in results)
        steps = _children(cursor, "steps", rows_text.STEP_COLS, lo, hi, ph)
        checks = _children(cursor, "check_results", rows_text.CHECK_COLS, lo, hi, ph)
    finally:
        cursor.close()
    by_run: dict[int, list[str] | None] = {r.id: [] for r in run_rows}
    for r in results:
        texts = by_run.get(r[1])
        if texts is None:
            continue
        try:
            texts.append(
                rows_text.result_text(
                    r,
                    rows_text.ordered(steps.get(r[0], [])),
                    rows_text.ordered(checks.get(r[0], [])),
                )
            )
        except (rows_text.Unsupported, ValueError, TypeError):
            by_run[r[1]] = None
    out = {}
    for r in run_rows:
        systems = by_run[r.id]
        if systems is None:
            continue
        with contextlib.suppress(rows_text.Unsupported, ValueError, TypeError):
            out[r.id] = rows_text.run_text(_run_tuple(r), systems)
    return out


def _run_tuple(row: Any) -> tuple[Any, ...]:
    """A run row's values in RUN_COLS order (times already aware datetimes)."""
    return tuple(row._mapping[c] for c in rows_text.RUN_COLS)


def _children(
    cursor: Any, table: str, cols: Sequence[str], lo: int, hi: int, ph: str
) -> dict[int, list[Sequence[Any]]]:
    cursor.execute(
        f"SELECT {', '.join(cols)} FROM {table} WHERE result_pk BETWEEN {ph} AND {ph} "
        "ORDER BY result_pk",
        (lo, hi),
    )
    found: dict[int, list[Sequence[Any]]] = {}
    for row in cursor.fetchall():
        found.setdefault(row[0], []).append(row)
    return found


def _fast_possible(conn: Connection) -> bool:
    have = {c["name"] for c in inspect(conn).get_columns(checks_t.name)}
    have_results = {c["name"] for c in inspect(conn).get_columns(results_t.name)}
    return "expected_json" in have and {"worker", "limits"} <= have_results
