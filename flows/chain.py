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

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, inspect, select, update

from . import chain_rows
from .evidence_rows import check_link, records
from .evidence_tables import GENESIS, chain_events_t, chain_head, signatures_t
from .signing import PublicKey, Signer, SigningError, b64, unb64

LINK_TYPE = "application/vnd.restoredrill.chain-link+json"
"""The DSSE payload type of a link signature."""
EVENTS = ("key", "checkpoint", "regression")
"""The kinds of event a chain holds besides runs (``regression``: flows/regress_evidence.py)."""


def dumps(data: Any) -> str:
    """Canonical JSON of an event body or link: sorted keys, compact, ASCII."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link_payload(kind: str, seq: int, prev_hash: str, digest: str) -> bytes:
    """What a link's signature covers."""
    return dumps({"hash": digest, "kind": kind, "prev_hash": prev_hash, "seq": seq}).encode()


def event_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :func:`verify` (and ``EvidenceStore.verify``)."""

    ok: bool
    runs: int
    head: str
    """Hash of the newest run: publish it elsewhere to anchor the chain."""
    run_id: str | None = None
    """The first run whose record was altered or removed (or the run after a removed one)."""
    seq: int | None = None
    problem: str = ""
    keyid: str | None = None
    """The signing key in effect at the head (None: the chain is not signed)."""
    signed: int = 0
    """Runs whose signature was checked."""
    unsigned: int = 0
    """Runs recorded before a key was announced (covered by the hashes that follow)."""
    pruned: int = 0
    """Runs removed by ``evidence prune``; a signed checkpoint stands for them."""
    keys: tuple[str, ...] = ()
    """Every key announced in the chain, oldest first."""

    def __str__(self) -> str:
        if not self.ok:
            return f"evidence chain broken: {self.problem}"
        text = f"evidence chain intact: {self.runs} runs, head {self.head[:16]}"
        if self.keyid:
            text += f", {self.signed} signed by key {self.keyid[:16]}"
        if self.unsigned:
            text += f", {self.unsigned} recorded before signing began"
        if self.pruned:
            text += f", {self.pruned} pruned (signed checkpoint)"
        return text


@dataclass(frozen=True)
class KeyState:
    """The key that signs the chain's links from ``since`` (a seq) on."""

    keyid: str
    public: PublicKey
    since: int


# --------------------------------------------------------------------------- writing


def key_state(conn: Connection) -> KeyState | None:
    """The key in effect at the head: the newest announced, else the one the newest
    checkpoint says was in effect where the chain was cut, else None (unsigned)."""
    if not _exists(conn, chain_events_t):
        return None  # a store written before signing, opened read-only
    columns = (chain_events_t.c.seq, chain_events_t.c.body)
    for kind in ("key", "checkpoint"):
        row = conn.execute(
            select(*columns)
            .where(chain_events_t.c.kind == kind)
            .order_by(chain_events_t.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            continue
        try:
            body = json.loads(row.body)
            found = body if kind == "key" else body.get("key_at_cut")
            if found:
                return KeyState(found["keyid"], PublicKey.from_pem(found["public_key"]), row.seq)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SigningError(
                f"the chain's {kind} event #{row.seq} cannot be read: it was altered; "
                "`restoredrill evidence verify` says more"
            ) from None
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


class _Broken(Exception):  # control flow inside verify(), never raised out of it
    def __init__(self, problem: str, run_id: str | None, seq: int | None) -> None:
        super().__init__(problem)
        self.problem, self.run_id, self.seq = problem, run_id, seq


def verify(
    conn: Connection,
    *,
    content_from: int = 0,
    pinned: PublicKey | None = None,
    url: str | None = None,
) -> ChainReport:
    """Walk the chain from its start (or its newest checkpoint) to the head.

    ``url``: the store's URL, for helper processes that rebuild the records of a long
    chain in parallel (flows/chain_rows.py)."""
    head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
    event_rows = events(conn, head.seq)
    walk, pruned = _start(checkpoint(event_rows), pinned)
    pending = [e for e in event_rows if e.seq >= walk.expected]
    walk.sigs = signatures(conn, [walk.expected, head.seq]) if head.seq >= walk.expected else {}
    content = chain_rows.Content(url, content_from)
    try:
        for kind, item, digest in _links(conn, walk.expected, head.seq, pending, content):
            if kind == "run":
                _run(conn, walk, item, digest, content_from)
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
    finally:
        content.close()
    return ChainReport(
        True, walk.runs, head.hash, keyid=walk.key.keyid if walk.key else None,
        signed=walk.signed, unsigned=walk.unsigned, pruned=pruned, keys=tuple(walk.keys),
    )  # fmt: skip


def _start(cut: dict[str, Any] | None, pinned: PublicKey | None) -> tuple[_Walk, int]:
    """Where the walk starts: the genesis, or the newest checkpoint (its hash, the key in
    effect there and the keys announced before it); and how many runs were pruned."""
    walk = _Walk(GENESIS, 1, None, pinned)
    if cut is None:
        return walk, 0
    walk.prev, walk.expected = cut["cut_hash"], cut["cut_seq"] + 1
    if cut.get("key_at_cut"):
        at = cut["key_at_cut"]
        walk.key = KeyState(at["keyid"], PublicKey.from_pem(at["public_key"]), cut["cut_seq"])
        walk.keys = succession(cut.get("announcements") or [])
        if walk.keys[-1:] != [at["keyid"]]:
            walk.keys.append(at["keyid"])
        walk.trusted = pinned is not None and pinned.keyid in walk.keys
    return walk, int(cut.get("pruned_total", 0))


def succession(announcements: Sequence[dict[str, Any]]) -> list[str]:
    """The key ids of announcements kept by a checkpoint, each checked: intact, signed by
    the key it announces and by the key before it (else the succession ends there)."""
    keys: list[str] = []
    previous: PublicKey | None = None
    for event in announcements:
        try:
            body = json.loads(event["body"])
            key = PublicKey.from_pem(body["public_key"])
            payload = link_payload("key", event["seq"], event["prev_hash"], event["hash"])
            signers = [key] + ([previous] if previous else [])
            good = event_hash(event["prev_hash"], event["body"]) == event["hash"] and all(
                _signed(s, payload, event["signatures"].get(s.keyid)) for s in signers
            )
        except (KeyError, TypeError, ValueError, AttributeError, SigningError):
            good = False
        if not good or key.keyid != body.get("keyid") or body.get("kind") != "key":
            break
        keys.append(key.keyid)
        previous = key
    return keys


def _signed(key: PublicKey, payload: bytes, sig: str | None) -> bool:
    try:
        return isinstance(sig, str) and key.verify(LINK_TYPE, payload, unb64(sig))
    except ValueError:
        return False


def _links(
    conn: Connection, start: int, last: int, pending: list[Any], content: Any
) -> Iterator[tuple[str, Any, str | None]]:
    """Runs and events in seq order; each run with the hash of its canonical text written
    from its rows (None: to be rebuilt the exact way, or not to be checked)."""
    queue = list(pending)
    for run_rows, hashes in content.batches(conn, start, last):
        for row in run_rows:
            while queue and queue[0].seq < row.seq:
                yield "event", queue.pop(0), None
            yield "run", row, hashes.get(row.seq)
    for event in queue:
        yield "event", event, None


def _missing(walk: _Walk, seq: int, what: str, run_id: str | None = None) -> None:
    if seq != walk.expected:
        gone = f"#{walk.expected}" + (f"..#{seq - 1}" if seq - 1 > walk.expected else "")
        raise _Broken(f"run {gone} was removed: the chain goes on at {what}", run_id, seq)


def _run(conn: Connection, walk: _Walk, row: Any, digest: str | None, content_from: int) -> None:
    name = f"run {row.run_id} (#{row.seq})"
    _missing(walk, row.seq, name, row.run_id)
    if row.prev_hash != walk.prev:
        raise _Broken(
            f"{name} does not follow the run before it: a run was removed, replaced or its hash altered",
            row.run_id,
            row.seq,
        )
    if row.seq >= content_from and digest != row.hash:
        problem = _exact(conn, row, walk.prev)
        if problem:
            raise _Broken(problem, row.run_id, row.seq)
    _signature(walk, "run", row.seq, row.prev_hash, row.hash, name, row.run_id)
    walk.prev, walk.expected = row.hash, row.seq + 1
    walk.runs += 1


def _exact(conn: Connection, row: Any, prev: str) -> str:
    """Rebuild the run through its models (and the 0.1 readings): '' if it matches."""
    name = f"run {row.run_id} (#{row.seq})"
    try:
        record = records(conn, [row], unsure=True)[0]
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()[0]
        return f"{name} was altered: its rows no longer make a valid record ({first})"
    return check_link(row, record, prev, row.seq)


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
    if not isinstance(body, dict) or body.get("kind") != row.kind or row.kind not in EVENTS:
        raise _Broken(f"{name} was altered: its kind is not the one its body holds", None, row.seq)
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
