"""The evidence store: every run, append-only and hash-chained, in SQLite or PostgreSQL.

Each run row stores ``prev_hash`` and ``hash = sha256(prev_hash + canonical JSON of the
whole RunRecord)``. :meth:`EvidenceStore.verify` rebuilds every record from the rows
(runs, system_results, steps, check_results) and recomputes the chain, so an edited,
deleted or re-ordered row shows as the first run whose record no longer matches.
A one-row ``chain_head`` table, locked by every writer, keeps concurrent writers from
forking the chain and shows when the newest runs were removed.

The canonical form and its hash are in flows/canonical.py. A check's values are stored
as its JSON text (``expected_json``, ``observed_json``); rows written by 0.1 keep theirs in
JSON columns, read for verification with :func:`canonical.unsure`. Text columns that hold
what a system or check reported (:class:`SafeText`) take any string, NUL included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from . import chain
from .canonical import chain_hash, dump_value, for_storage
from .chain import ChainReport
from .evidence_errors import AlreadyRecorded, EvidenceConfigError, EvidenceError, RunNotFound
from .evidence_rows import present_columns, records, system_results
from .evidence_tables import (
    GENESIS,
    chain_events_t,
    chain_head,
    checks_t,
    deliveries_t,
    metadata,
    results_t,
    runs_t,
    signatures_t,
    steps_t,
)
from .results import RunRecord, SystemResult, Verdict

__all__ = [
    "GENESIS",
    "AlreadyRecorded",
    "ChainReport",
    "EvidenceConfigError",
    "EvidenceError",
    "EvidenceStore",
    "HistoryRow",
    "RunNotFound",
    "chain_events_t",
    "chain_head",
    "checks_t",
    "default_url",
    "deliveries_t",
    "mask_url",
    "normalize_url",
    "results_t",
    "runs_t",
    "shown_url",
    "signatures_t",
    "steps_t",
    "without_password",
]


# --------------------------------------------------------------------------- URLs


def default_path(site_path: str | Path) -> Path:
    """``<site dir>/.restoredrill/evidence.db`` (nothing is created)."""
    return Path(site_path).resolve().parent / ".restoredrill" / "evidence.db"


def default_url(site_path: str | Path) -> str:
    """``sqlite:///<site dir>/.restoredrill/evidence.db``; creates the directory."""
    folder = default_path(site_path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(
            f"cannot create the evidence directory {folder}: {exc.strerror}; make its parent "
            "writable, or set `evidence:` in the site file to another database URL"
        ) from None
    return f"sqlite:///{folder / 'evidence.db'}"


def normalize_url(url: str) -> str:
    """PostgreSQL URLs use the psycopg 3 driver (``postgresql+psycopg://``)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is masked by pattern
        return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def shown_url(url: str | None, site_path: str | Path) -> str:
    """The masked URL of a site's store: ``url`` (its ``evidence:``) or the default."""
    return mask_url(normalize_url(url or f"sqlite:///{default_path(site_path)}"))


def without_password(url: str) -> str | None:
    """The URL with no password in it (libpq then finds it in PGPASSWORD or ~/.pgpass);
    None if it cannot be parsed."""
    try:
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except Exception:  # noqa: BLE001 - not a URL: nothing safe to keep
        return None


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class HistoryRow:
    """One system in one run, for ``restoredrill history``."""

    run_id: str
    site: str
    started_at: datetime
    trigger: str
    system: str
    verdict: Verdict
    reason: str
    recovery_time_s: float | None
    rto_s: float | None
    backup_age_s: float | None
    rpo_s: float | None
    backup_id: str | None


# --------------------------------------------------------------------------- store


_ADDED = {
    "system_results": {
        "worker": "VARCHAR(200)",
        "limits": "TEXT",
        "platform": "TEXT",
        "framework_s": "FLOAT",
    },
    "check_results": {"expected_json": "TEXT", "observed_json": "TEXT"},
}
"""Columns added since the first release (nullable, so old rows stay valid)."""


def _add_missing_columns(conn: Connection) -> None:
    for table, columns in _ADDED.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        for name, ddl in columns.items():
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")


class EvidenceStore:
    """Append-only, hash-chained run records in the database at ``url``."""

    def __init__(
        self, url: str, *, create: bool = True, connect_timeout: int = 10, signer: Any = None
    ) -> None:
        """Open (and unless ``create=False``, e.g. for a read-only auditor, set up) the store.

        ``signer`` (a :class:`restoredrill.flows.signing.Signer`) signs each run appended;
        a chain with a key announced takes runs signed by that key only (flows/chain.py).
        """
        self.url = normalize_url(url)
        self.shown = mask_url(self.url)
        self.lock_timeout = 60.0
        self.signer = signer
        self.engine = self._engine(connect_timeout)
        if not create:
            return
        with self._errors("create its tables"), self._write() as conn:
            metadata.create_all(conn)
            _add_missing_columns(conn)
            if conn.execute(select(chain_head.c.id)).first() is None:
                conn.execute(insert(chain_head).values(id=1, seq=0, hash=GENESIS))

    @classmethod
    def reader(cls, url: str) -> EvidenceStore:
        """Open a store only to read it: nothing is written to a store that exists (it may
        be read-only, or predate columns added since); an empty one is set up as usual."""
        store = cls(url, create=False)
        with store._errors("open it"), store._read() as conn:
            exists = inspect(conn).has_table("chain_head")
        if exists:
            return store
        store.close()
        return cls(url)

    # ----------------------------------------------------------------- plumbing

    def _engine(self, connect_timeout: int) -> Engine:
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise EvidenceConfigError(
                f"evidence database {self.shown!r} is not a database URL "
                "(use sqlite:///path/to/evidence.db or postgresql://user@host/database)"
            ) from None
        backend = parsed.get_backend_name()
        if backend not in {"sqlite", "postgresql"}:
            raise EvidenceConfigError(
                f"evidence database {self.shown}: {backend!r} is not supported "
                "(use sqlite:///path/to/evidence.db or postgresql://user@host/database)"
            )
        try:
            if backend == "sqlite":
                # ?timeout=SECONDS in the URL: how long a write waits for another's lock
                if "timeout" in parsed.query:
                    self.lock_timeout = float(parsed.query["timeout"])
                engine = create_engine(parsed, connect_args={"timeout": self.lock_timeout})
                event.listen(engine, "connect", _sqlite_connect)
                event.listen(engine, "begin", _sqlite_begin)
            else:
                engine = create_engine(
                    parsed, pool_pre_ping=True, connect_args={"connect_timeout": connect_timeout}
                )
        except (NoSuchModuleError, ImportError) as exc:
            raise EvidenceConfigError(
                f"evidence database {self.shown}: its driver is not installed ({exc}); "
                "for PostgreSQL install restoredrill[postgres] (psycopg 3)"
            ) from None
        except ValueError:
            raise EvidenceConfigError(
                f"evidence database {self.shown}: timeout={parsed.query['timeout']!r} is not "
                "a number of seconds"
            ) from None
        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that holds the chain lock until commit."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # serialises schema creation and every append across processes
                    conn.execute(text("SELECT pg_advisory_xact_lock(7346201755)"))
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except EvidenceError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise EvidenceError(self._explain(action, exc)) from None

    def _explain(self, action: str, exc: BaseException) -> str:
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if self.engine.dialect.name == "sqlite":
            path = Path(make_url(self.url).database or "")
            if "not a database" in reason or "malformed" in reason:
                return (
                    f"evidence database {self.shown}: {path} is damaged or is not an SQLite "
                    f"database ({reason}); move it aside (a new chain then starts there) and "
                    "restore the last good copy, or point `evidence:` in the site file (or "
                    "--evidence) at another database"
                )
            if "locked" in reason:
                hint = (
                    f"another program held a lock on {path} for more than "
                    f"{self.lock_timeout:g} s; find it (e.g. `fuser {path}`) and end it, "
                    "or add ?timeout=SECONDS to the URL to wait longer"
                )
            else:
                hint = (
                    f"check that {path.parent} exists and this user can write there "
                    "and to the database file, or set `evidence:` in the site file to another URL"
                )
        elif (isinstance(exc, DBAPIError) and exc.connection_invalidated) or "connect" in reason:
            hint = (
                "check that the PostgreSQL server is running and reachable, and that the URL's "
                "host, port, user, password and database are right"
            )
        else:
            hint = "check that the database user may create tables and insert rows"
        return f"evidence database {self.shown}: cannot {action}: {reason}; {hint}"

    # ----------------------------------------------------------------- writing

    def record(self, run: RunRecord, deliveries: Iterable[Any] = ()) -> str:
        """Append ``run`` atomically to the chain, with its alert ``deliveries`` (targets
        already masked); return its hash."""
        run = for_storage(run)
        rows = _delivery_rows(run.run_id, deliveries)
        with self._errors(f"record run {run.run_id}"), self._write() as conn:
            if conn.dialect.name == "postgresql":
                head = conn.execute(
                    select(chain_head.c.seq, chain_head.c.hash)
                    .where(chain_head.c.id == 1)
                    .with_for_update()
                ).one()
            else:
                head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
            taken = conn.execute(select(runs_t.c.id).where(runs_t.c.run_id == run.run_id)).first()
            if taken is not None:
                raise AlreadyRecorded(
                    f"evidence database {self.shown}: run {run.run_id} is already recorded "
                    "(records are append-only; use a new run id)"
                )
            prev_seq, prev = chain.before_append(conn, self.shown, head.seq, head.hash, self.signer)
            digest = chain_hash(prev, run)
            seq = prev_seq + 1
            run_pk = conn.execute(
                insert(runs_t).values(
                    seq=seq,
                    run_id=run.run_id,
                    site=run.site,
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    trigger=run.trigger,
                    verdict=run.verdict.value,
                    site_recovery_time_s=run.site_recovery_time_s,
                    site_rto_s=run.site_rto_s,
                    recorded_at=datetime.now(UTC),
                    prev_hash=prev,
                    hash=digest,
                )
            ).inserted_primary_key[0]
            for position, result in enumerate(run.systems):
                _insert_result(conn, run_pk, position, result)
            if self.signer is not None:
                chain.sign_link(conn, self.signer, "run", seq, prev, digest)
            conn.execute(
                update(chain_head).where(chain_head.c.id == 1).values(seq=seq, hash=digest)
            )
            if rows:
                conn.execute(insert(deliveries_t), rows)
        return digest

    def record_deliveries(self, run_id: str | None, deliveries: Iterable[Any]) -> None:
        """Keep the alert delivery report of a run (targets must already be masked)."""
        rows = _delivery_rows(run_id, deliveries)
        if rows:
            with self._errors("record alert deliveries"), self._write() as conn:
                conn.execute(insert(deliveries_t), rows)

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        """The delivery report recorded for ``run_id``."""
        with self._errors("read alert deliveries"), self._read() as conn:
            rows = conn.execute(
                select(deliveries_t)
                .where(deliveries_t.c.run_id == run_id)
                .order_by(deliveries_t.c.id)
            ).mappings()
            return [{k: v for k, v in row.items() if k != "id"} for row in rows]

    # ----------------------------------------------------------------- reading

    def load(self, run_id: str) -> RunRecord:
        """The run ``run_id`` as recorded; raise RunNotFound."""
        with self._errors(f"read run {run_id}"), self._read() as conn:
            row = conn.execute(select(runs_t).where(runs_t.c.run_id == run_id)).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in evidence database {self.shown}")
            return records(conn, [row])[0]

    def runs(
        self, limit: int | None = 20, system: str | None = None, site: str | None = None
    ) -> list[RunRecord]:
        """Run records, newest first; with ``system``: the runs that include it, each with
        that system's result only (a run of 500 systems is not read whole for one)."""
        query = select(runs_t).order_by(runs_t.c.seq.desc()).limit(limit)
        if system is not None:
            query = query.where(
                runs_t.c.id.in_(select(results_t.c.run_pk).where(results_t.c.system == system))
            )
        if site is not None:
            query = query.where(runs_t.c.site == site)
        with self._errors("read runs"), self._read() as conn:
            return records(conn, list(conn.execute(query)), only=system)

    def history(
        self, system: str | None = None, limit: int | None = 50, site: str | None = None
    ) -> list[HistoryRow]:
        """One row per system per run, newest first."""
        query = (
            select(
                runs_t.c.run_id,
                runs_t.c.site,
                runs_t.c.started_at,
                runs_t.c.trigger,
                *(results_t.c[n] for n in ("system", "verdict", "reason", "recovery_time_s")),
                *(results_t.c[n] for n in ("rto_s", "backup_age_s", "rpo_s", "backup_id")),
            )
            .join(results_t, results_t.c.run_pk == runs_t.c.id)
            .order_by(runs_t.c.seq.desc(), results_t.c.position)
            .limit(limit)
        )
        if system is not None:
            query = query.where(results_t.c.system == system)
        if site is not None:
            query = query.where(runs_t.c.site == site)
        with self._errors("read history"), self._read() as conn:
            return [
                HistoryRow(
                    run_id=r.run_id,
                    site=r.site,
                    started_at=r.started_at,
                    trigger=r.trigger,
                    system=r.system,
                    verdict=Verdict(r.verdict),
                    reason=r.reason,
                    recovery_time_s=r.recovery_time_s,
                    rto_s=r.rto_s,
                    backup_age_s=r.backup_age_s,
                    rpo_s=r.rpo_s,
                    backup_id=r.backup_id,
                )
                for r in conn.execute(query)
            ]

    def last_result(
        self, system: str, site: str | None = None, exclude_run: str | None = None
    ) -> SystemResult | None:
        """The newest recorded result of ``system`` (optionally not from run ``exclude_run``)."""
        query = (
            select(results_t.c.id)
            .join(runs_t, results_t.c.run_pk == runs_t.c.id)
            .where(results_t.c.system == system)
            .order_by(runs_t.c.seq.desc(), results_t.c.position.desc())
            .limit(1)
        )
        if site is not None:
            query = query.where(runs_t.c.site == site)
        if exclude_run is not None:
            query = query.where(runs_t.c.run_id != exclude_run)
        with self._errors(f"read the last result of {system}"), self._read() as conn:
            found = conn.execute(query).scalar()
            if found is None:
                return None
            row = conn.execute(
                select(*present_columns(conn, results_t)).where(results_t.c.id == found)
            ).one()
            return system_results(conn, [row])[row.id]

    def previous_verdicts(self, run: RunRecord) -> dict[str, Verdict | None]:
        """Each system's verdict before ``run`` (works before or after ``run`` is recorded)."""
        out: dict[str, Verdict | None] = {}
        for result in run.systems:
            last = self.last_result(result.system, site=run.site, exclude_run=run.run_id)
            out[result.system] = last.verdict if last else None
        return out

    # ----------------------------------------------------------------- auditing

    def verify(self, *, content_from: int = 0, key: Any = None) -> ChainReport:
        """Recompute the chain; report the first link altered, removed or wrongly signed.

        Every link's hash and signature is checked; the records themselves are rebuilt
        from their rows for runs from ``content_from`` (a seq) on: all of them by
        default. ``key`` (a ``signing.PublicKey``): the chain must be signed by it, or by
        keys it announced, from its first key on.
        """
        with self._errors("verify the chain"), self._read() as conn:
            return chain.verify(conn, content_from=content_from, pinned=key, url=self.url)

    def count(self) -> int:
        with self._errors("count runs"), self._read() as conn:
            return conn.execute(select(func.count()).select_from(runs_t)).scalar_one()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> EvidenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    dbapi_conn.execute("PRAGMA foreign_keys=ON")


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _delivery_rows(run_id: str | None, deliveries: Iterable[Any]) -> list[dict[str, Any]]:
    rows = []
    for d in deliveries:
        data = d.as_dict() if hasattr(d, "as_dict") else dict(d)
        rows.append(
            {
                "run_id": run_id,
                "recorded_at": datetime.now(UTC),
                "target": data["target"],
                "systems": list(data.get("systems", [])),
                "ok": bool(data["ok"]),
                "reason": data.get("reason", ""),
            }
        )
    return rows


def _insert_result(conn: Connection, run_pk: int, position: int, r: SystemResult) -> None:
    b = r.backup
    result_pk = conn.execute(
        insert(results_t).values(
            run_pk=run_pk,
            position=position,
            system=r.system,
            verdict=r.verdict.value,
            reason=r.reason,
            labels=r.labels,
            started_at=r.started_at,
            finished_at=r.finished_at,
            recovery_time_s=r.recovery_time_s,
            rto_s=r.rto_s,
            rpo_s=r.rpo_s,
            backup_age_s=r.backup_age_s,
            near_miss=r.near_miss,
            worker=r.worker,
            limits=r.limits,
            platform=r.platform,
            framework_s=r.framework_s,
            backup_source=b.source if b else None,
            backup_id=b.backup_id if b else None,
            backup_location=b.location if b else None,
            backup_size_bytes=b.size_bytes if b else None,
            backup_sha256=b.sha256 if b else None,
            backup_created_at=b.created_at if b else None,
        )
    ).inserted_primary_key[0]
    if r.steps:
        conn.execute(
            insert(steps_t),
            [
                {"result_pk": result_pk, "position": i, **s.model_dump()}
                for i, s in enumerate(r.steps)
            ],
        )
    if r.checks:
        conn.execute(
            insert(checks_t),
            [
                {
                    "result_pk": result_pk,
                    "position": i,
                    "name": c.name,
                    "kind": c.kind,
                    "status": c.status.value,
                    "expected_json": dump_value(c.expected),
                    "observed_json": dump_value(c.observed),
                    "duration_s": c.duration_s,
                    "message": c.message,
                }
                for i, c in enumerate(r.checks)
            ],
        )
