"""The evidence store's tables and column types (the schema), apart from the store
(flows/evidence.py) so the chain (flows/chain.py, chain_rows.py) reads them without
importing the store."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from .canonical import SURROGATE, dump_value, utc

GENESIS = "0" * 64
"""The ``prev_hash`` of the first run of a store."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes: ``timestamptz`` on PostgreSQL, fixed-width ISO text elsewhere."""

    impl = String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(String(32))

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        value = utc(value)
        if value is None or dialect.name == "postgresql":
            return value
        return value.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return utc(value)


_ESCAPED = "\ufdd0"
"""Marks text stored escaped (a Unicode noncharacter: no real text starts with it)."""


class SafeText(TypeDecorator[str]):
    """Text any database can hold, read back exactly: a string with NUL (PostgreSQL
    refuses it) or a lone surrogate (not UTF-8) is stored as ``\\ufdd0`` + its escapes."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if value.startswith(_ESCAPED) or "\x00" in value or SURROGATE.search(value):
            return _ESCAPED + value.encode("unicode_escape").decode("ascii")
        return value

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and value.startswith(_ESCAPED):
            return value[1:].encode("ascii").decode("unicode_escape")
        return value


class SafeString(SafeText):
    """:class:`SafeText` in a column of bounded length (a step's name, a worker)."""

    impl = String
    cache_ok = True


class JSONText(TypeDecorator[Any]):
    """A JSON value as the text of :func:`dump_value`: exact, whatever the database."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else dump_value(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData()

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

runs_t = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("run_id", String(200), nullable=False, unique=True),
    Column("site", String(200), nullable=False, index=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("trigger", String(100), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("site_recovery_time_s", Float),
    Column("site_rto_s", Float),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
)

results_t = Table(
    "system_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_pk", ForeignKey("runs.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("system", String(200), nullable=False, index=True),
    Column("verdict", String(32), nullable=False),
    Column("reason", SafeText, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("recovery_time_s", Float),
    Column("rto_s", Float),
    Column("rpo_s", Float),
    Column("backup_age_s", Float),
    Column("near_miss", Boolean, nullable=False),
    Column("worker", SafeString(200)),
    Column("limits", JSONText),
    Column("platform", JSONText),
    Column("framework_s", Float),
    Column("backup_source", SafeString(100)),
    Column("backup_id", SafeText),
    Column("backup_location", SafeText),
    Column("backup_size_bytes", BigInteger),
    Column("backup_sha256", String(64)),
    Column("backup_created_at", UTCDateTime),
)

steps_t = Table(
    "steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("result_pk", ForeignKey("system_results.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("name", SafeString(100), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("message", SafeText, nullable=False),
)

checks_t = Table(
    "check_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("result_pk", ForeignKey("system_results.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("name", SafeText, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("expected", JSON),  # 0.1 only: SQLite gave these numeric affinity
    Column("observed", JSON),
    Column("duration_s", Float, nullable=False),
    Column("message", SafeText, nullable=False),
    Column("expected_json", Text),  # dump_value() text; NULL in rows written by 0.1
    Column("observed_json", Text),
)

deliveries_t = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(200), index=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("target", Text, nullable=False),
    Column("systems", JSON, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("reason", SafeText, nullable=False),
)
"""Alert deliveries (target already masked). Outside the hash chain: they follow the run."""

chain_events_t = Table(
    "chain_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
)
"""Links of the chain that are not runs: a signing key announced (``key``), runs pruned
(``checkpoint``). ``hash = sha256(prev_hash + body)``; ``body`` is canonical JSON text
(see flows/chain.py)."""

signatures_t = Table(
    "signatures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False, index=True),
    Column("keyid", String(64), nullable=False),
    Column("sig", Text, nullable=False),
    UniqueConstraint("seq", "keyid"),
)
"""ed25519 signatures of chain links (a run or an event, by ``seq``) over their hash."""
