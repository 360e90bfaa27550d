"""Alerts through Apprise, sent when a system's verdict changes (and an optional daily digest).

A target is any Apprise URL (mailto://, slack://, msteams://, mmost://, syslog://, json://
...). Secrets stay out of the inventory: ``${ENV:NAME}`` and ``${FILE:/path}`` inside
``url`` are replaced when sending, or the whole URL comes from ``url_env`` / ``url_file``.
Every URL shown (delivery reports, errors, Apprise's own log lines) has its secrets masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import apprise
from apprise.manager_plugins import NotificationManager
from jinja2 import Environment, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restoredrill.durations import format_duration
from restoredrill.errors import InputError

from .results import RunRecord, SystemResult, Verdict

Event = Literal["fail", "error", "rto_exceeded", "rpo_exceeded", "blocked", "recovered"]
DEFAULT_ON: frozenset[str] = frozenset(
    {"fail", "error", "rto_exceeded", "rpo_exceeded", "recovered"}
)
_REF = re.compile(r"\$\{(ENV|FILE):([^}]+)\}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_EXAMPLES = "mailto://, mailtos://, slack://, msteams://, mmost://, syslog://, json://, jsons://"


class AlertConfigError(InputError):
    """An alert target cannot be used; the message names the field, never a secret."""


# --------------------------------------------------------------------------- config


class AlertTarget(BaseModel):
    """Where to send alerts, and on which events."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="label shown in delivery reports")
    url: str | None = Field(
        None, description="Apprise URL; ${ENV:NAME} and ${FILE:/path} are replaced by secrets"
    )
    url_env: str | None = Field(None, description="environment variable holding the whole URL")
    url_file: str | None = Field(None, description="file holding the whole URL")
    on: set[Event] = Field(
        default_factory=lambda: set(DEFAULT_ON),
        description="events that alert: fail, error, rto_exceeded, rpo_exceeded, blocked, recovered",
    )
    digest: str | None = Field(
        None,
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="also send a daily digest at this time of day (HH:MM)",
    )

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        m = _SCHEME.match(value)
        if not m:
            if value.startswith("${"):
                return value  # the scheme itself comes from a secret: checked when resolved
            raise ValueError(f"not an Apprise URL (scheme://...; e.g. {_EXAMPLES})")
        scheme = m.group(1)
        if "${" not in scheme and scheme.lower() not in NotificationManager():
            raise ValueError(
                f"unknown alert URL scheme {scheme!r} (Apprise knows e.g. {_EXAMPLES})"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> AlertTarget:
        given = [k for k in ("url", "url_env", "url_file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of url, url_env, url_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def digest_cron(self) -> str | None:
        """The cron expression of the daily digest (for the scheduler)."""
        return daily_cron(self.digest) if self.digest else None

    def label(self) -> str:
        """A name safe to show without resolving any secret."""
        if self.name:
            return self.name
        if self.url_env:
            return f"${self.url_env}"
        if self.url_file:
            return f"file {self.url_file}"
        return _mask_plain(self.url or "")

    def resolve(self, base_dir: Path | None = None) -> Resolved:
        """Substitute secrets; raise AlertConfigError naming the field (never the value)."""
        secrets: list[str] = []
        if self.url_env:
            url = _env(self.url_env, "url_env")
            secrets += [url, *_url_parts(url)]
        elif self.url_file:
            url = _file(self.url_file, "url_file", base_dir)
            secrets += [url, *_url_parts(url)]
        else:

            def sub(m: re.Match[str]) -> str:
                kind, ref = m.group(1), m.group(2).strip()
                value = _env(ref, "url") if kind == "ENV" else _file(ref, "url", base_dir)
                secrets.append(value)
                return value

            url = _REF.sub(sub, self.url or "")
        scrubber.add(secrets)
        resolved = Resolved(self, url, tuple(s for s in secrets if s))
        if not _SCHEME.match(url):
            raise AlertConfigError(
                f"{self._field()}: the resolved value is not an Apprise URL (scheme://...)"
            )
        return resolved

    def _field(self) -> str:
        return "url_env" if self.url_env else "url_file" if self.url_file else "url"


@dataclass(frozen=True)
class Resolved:
    """A target with its secrets substituted: never print ``url``, print ``shown``."""

    target: AlertTarget
    url: str = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def shown(self) -> str:
        scheme = self.url.split("://", 1)[0]
        if self.target.url_env:
            return f"{scheme}://… (from ${self.target.url_env})"
        if self.target.url_file:
            return f"{scheme}://… (from file {self.target.url_file})"
        plugin = _quiet_instantiate(self.url)
        text = _strip_query(plugin.url(privacy=True)) if plugin else _mask_plain(self.url)
        return scrubber.scrub(text, self.secrets)


@dataclass
class AlertConfig:
    """The site's targets and each system's own (a system's alerts go to both)."""

    site: list[AlertTarget] = field(default_factory=list)
    systems: dict[str, list[AlertTarget]] = field(default_factory=dict)
    base_dir: Path | None = None
    """Where relative ``${FILE:...}`` / ``url_file`` paths start (the site file's directory)."""

    @classmethod
    def from_site(cls, site: Any, base_dir: Path | None = None) -> AlertConfig:
        """From an inventory ``Site`` (its ``alerts`` and each system's ``alerts``)."""
        return cls(
            site=list(site.alerts),
            systems={s.name: list(s.alerts) for s in site.systems if s.alerts},
            base_dir=base_dir,
        )

    def fields(self) -> list[tuple[str, AlertTarget]]:
        """Each target with its place in the inventory, e.g. ``systems[mes].alerts[0]``."""
        out = [(f"alerts[{i}]", t) for i, t in enumerate(self.site)]
        for name, targets in self.systems.items():
            out += [(f"systems[{name}].alerts[{i}]", t) for i, t in enumerate(targets)]
        return out

    def targets_for(self, system: str) -> list[AlertTarget]:
        return [*self.systems.get(system, []), *self.site]


def daily_cron(at: str) -> str:
    """``HH:MM`` as the cron expression of every day at that time (``07:30`` → ``30 7 * * *``)."""
    hour, minute = at.split(":")
    return f"{int(minute)} {int(hour)} * * *"


def check_targets(config: AlertConfig) -> list[str]:
    """Resolve every target and let Apprise parse it: one problem per unusable target."""
    problems = []
    for where, target in config.fields():
        try:
            resolved = target.resolve(config.base_dir)
        except AlertConfigError as exc:
            problems.append(f"{where}.{exc}")
            continue
        if _quiet_instantiate(resolved.url) is None:
            problems.append(
                f"{where}.{target._field()}: Apprise cannot use {resolved.shown}: unknown scheme, "
                f"or a required part (token, host, address) is missing or malformed (e.g. {_EXAMPLES})"
            )
    return problems


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Change:
    """A system whose state changed in this run."""

    system: str
    event: str
    previous: Verdict | None
    result: SystemResult


@dataclass
class Alert:
    """One message to one target about one run (or one digest)."""

    target: AlertTarget
    title: str
    body: str
    site: str
    run_id: str | None
    systems: list[str]
    failure: bool
    base_dir: Path | None = None


def change(previous: Verdict | None, result: SystemResult) -> str | None:
    """The event of a state change: the new verdict, ``recovered``, or None (no change)."""
    now = result.verdict
    if now is Verdict.PASS:
        return "recovered" if previous is not None and previous is not Verdict.PASS else None
    return None if previous is now else now.value


def plan_alerts(
    run: RunRecord, previous: Mapping[str, Verdict | None], config: AlertConfig
) -> list[Alert]:
    """One alert per target that wants any of this run's state changes."""
    changes = []
    for result in run.systems:
        event = change(previous.get(result.system), result)
        if event:
            changes.append(Change(result.system, event, previous.get(result.system), result))
    grouped: dict[str, tuple[AlertTarget, list[Change]]] = {}
    for c in changes:
        for target in config.targets_for(c.system):
            if c.event in target.on:
                picked = grouped.setdefault(target.model_dump_json(), (target, []))[1]
                if c not in picked:  # a target listed for the site and the system
                    picked.append(c)
    return [_alert(run, target, picked, config.base_dir) for target, picked in grouped.values()]


def plan_digest(
    runs: Sequence[RunRecord],
    config: AlertConfig,
    *,
    site: str,
    now: datetime | None = None,
    period: timedelta = timedelta(days=1),
) -> list[Alert]:
    """The daily digest for targets with ``digest:``: every system's runs in the period."""
    now = now or datetime.now(UTC)
    since = now - period
    recent = [r for r in runs if _aware(r.started_at) >= since and r.site == site]
    alerts = []
    for where, target in config.fields():
        if not target.digest:
            continue
        only = (
            where.split("]")[0].removeprefix("systems[") if where.startswith("systems[") else None
        )
        rows: dict[str, list[SystemResult]] = {}
        for run in sorted(recent, key=lambda r: _aware(r.started_at)):
            for result in run.systems:
                if only is None or result.system == only:
                    rows.setdefault(result.system, []).append(result)
        failing = sorted(s for s, rs in rows.items() if not rs[-1].verdict.ok)
        body = _DIGEST.render(
            site=site, since=since, now=now, rows=rows, runs=len(recent), fmt=format_duration
        )
        title = f"restoredrill {site}: daily digest, " + (
            f"{len(failing)} of {len(rows)} systems not passing"
            if failing
            else f"all {len(rows)} systems pass"
        )
        alerts.append(
            Alert(target, title, body, site, None, sorted(rows), bool(failing), config.base_dir)
        )
    return alerts


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Delivery:
    """What became of one alert: the target (masked), ok or failed, and why."""

    target: str
    ok: bool
    reason: str = ""
    systems: list[str] = field(default_factory=list)
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.target}: " + ("sent" if self.ok else f"FAILED ({self.reason})")


def send(alerts: Iterable[Alert]) -> list[Delivery]:
    """Deliver each alert; never raises: failures are reported in the deliveries."""
    return [_send_one(alert) for alert in alerts]


def _send_one(alert: Alert) -> Delivery:
    shown = alert.target.label()
    secrets: tuple[str, ...] = ()
    try:
        resolved = alert.target.resolve(alert.base_dir)
        secrets = resolved.secrets
        shown = resolved.shown
        if alert.target.name:
            shown = f"{alert.target.name} ({shown})"
        hub = apprise.Apprise()
        with apprise.LogCapture(level=logging.DEBUG) as log:
            if not hub.add(resolved.url):
                reason = "Apprise cannot use this URL (unknown scheme or missing parts)"
                return Delivery(shown, False, reason, alert.systems, alert.run_id)
            ok = hub.notify(
                body=alert.body,
                title=alert.title,
                notify_type=apprise.NotifyType.FAILURE
                if alert.failure
                else apprise.NotifyType.SUCCESS,
            )
            captured = log.getvalue()
        if ok:
            return Delivery(shown, True, "", alert.systems, alert.run_id)
        return Delivery(shown, False, _reason(captured, secrets), alert.systems, alert.run_id)
    except AlertConfigError as exc:
        return Delivery(shown, False, str(exc), alert.systems, alert.run_id)
    except Exception as exc:  # noqa: BLE001 - a delivery failure must never stop the run
        reason = scrubber.scrub(f"{type(exc).__name__}: {exc}", secrets)
        return Delivery(shown, False, reason, alert.systems, alert.run_id)


def _reason(log: str, secrets: Sequence[str]) -> str:
    """Apprise's warnings and errors, plus the socket error behind them."""
    lines = log.strip().splitlines()
    problems = [
        ln.split(" - ", 2)[-1] for ln in lines if " - WARNING - " in ln or " - ERROR - " in ln
    ]
    reason = "; ".join(dict.fromkeys(problems[-2:])) or "the target did not accept the notification"
    cause = re.search(r"\[Errno -?\d+\] [^\"')\n]+", log)
    if cause and cause.group(0) not in reason:
        reason += f" ({cause.group(0).strip()})"
    return scrubber.scrub(reason, secrets)[:500]


# --------------------------------------------------------------------------- masking


class _Scrubber(logging.Filter):
    """Masks every secret seen so far; also installed on Apprise's logger."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for s in secrets:
                if s and len(s) >= 3:
                    self._secrets.update({s, quote(s, safe=""), quote(s), unquote(s)})

    def scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        with self._lock:
            known = sorted(
                self._secrets | {s for s in extra if s and len(s) >= 3}, key=len, reverse=True
            )
        for secret in known:
            text = text.replace(secret, "****")
        return _mask_userinfo(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


scrubber = _Scrubber()
logging.getLogger("apprise").addFilter(scrubber)


def mask(text: str) -> str:
    """Mask every known secret and every URL password in ``text`` (for logs and reports)."""
    return scrubber.scrub(text)


def _mask_userinfo(text: str) -> str:
    return re.sub(r"(://[^/\s:@]*:)[^@/\s]+@", r"\1****@", text)


def _mask_plain(url: str) -> str:
    """A URL without Apprise's help: scheme, user and host only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}:****@" if parts.password else ""
        return f"{parts.scheme}://{user}{host}{port}/…" if parts.scheme else "…"
    except ValueError:
        return _mask_userinfo(url.split("?", 1)[0])


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/")


def _url_parts(url: str) -> list[str]:
    """Pieces of a secret URL that could show up on their own (path segments, password, query values)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = [parts.password or "", parts.username or "", *parts.path.split("/")]
    out += [kv.split("=", 1)[-1] for kv in parts.query.split("&") if "=" in kv]
    return [p for p in out if len(p) >= 4]


def _quiet_instantiate(url: str) -> Any:
    """Apprise's plugin for ``url`` or None (its log lines pass through the scrubber)."""
    with apprise.LogCapture(level=logging.CRITICAL):
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def _env(name: str, where: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise AlertConfigError(
            f"{where}: environment variable {name} is not set (it holds the secret)"
        )
    return value.strip()


def _file(path: str, where: str, base_dir: Path | None) -> str:
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    try:
        value = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AlertConfigError(f"{where}: cannot read secret file {p}: {exc.strerror}") from None
    if not value:
        raise AlertConfigError(f"{where}: secret file {p} is empty")
    return value


# --------------------------------------------------------------------------- messages


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


_ENV = Environment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)
_ENV.filters["value"] = _value

_BODY = _ENV.from_string(
    """\
restoredrill · site {{ site }} · run {{ run_id }}
{% for c in changes %}

{{ c.system }}: {{ headline(c) }}
{% if c.result.recovery_time_s is not none or c.result.rto_s is not none %}
  recovery time: {{ fmt(c.result.recovery_time_s) }} (RTO {{ fmt(c.result.rto_s) }})
{% endif %}
{% if c.result.backup_age_s is not none or c.result.rpo_s is not none %}
  backup age: {{ fmt(c.result.backup_age_s) }} (RPO {{ fmt(c.result.rpo_s) }})
{% endif %}
{% if c.result.backup %}
  backup: {{ c.result.backup.source }} {{ c.result.backup.backup_id }}
{% endif %}
{% if c.result.reason %}
  reason: {{ c.result.reason }}
{% endif %}
{% if c.result.failed_checks %}
  failing checks:
{% for k in c.result.failed_checks %}
  - {{ k.name }} ({{ k.kind }}, {{ k.status.value }}): expected {{ k.expected | value }}, observed {{ k.observed | value }}{% if k.message %} ({{ k.message }}){% endif %}

{% endfor %}
{% endif %}
{% endfor %}
"""
)

_DIGEST = _ENV.from_string(
    """\
restoredrill · site {{ site }} · daily digest {{ since.strftime("%Y-%m-%d %H:%M") }} to {{ now.strftime("%Y-%m-%d %H:%M") }} UTC
{{ runs }} run(s)
{% for system, results in rows.items() %}
{% set last = results[-1] %}
- {{ system }}: {{ last.verdict.value }} (recovery {{ fmt(last.recovery_time_s) }}, RTO {{ fmt(last.rto_s) }}); {{ results | selectattr("verdict.ok") | list | length }} of {{ results | length }} run(s) passed
{% endfor %}
"""
)


def _headline(c: Change) -> str:
    was = f"was {c.previous.value}" if c.previous else "first recorded run"
    if c.event == "recovered":
        return f"RECOVERED, now pass ({was})"
    return f"{c.event.replace('_', ' ').upper()} ({was})"


def _alert(
    run: RunRecord, target: AlertTarget, changes: list[Change], base_dir: Path | None
) -> Alert:
    failing = [c for c in changes if c.event != "recovered"]
    if len(changes) == 1:
        c = changes[0]
        summary = f"{c.system} {c.event.replace('_', ' ').upper()}"
    else:
        parts = []
        if failing:
            parts.append(f"{len(failing)} failing")
        if len(changes) > len(failing):
            parts.append(f"{len(changes) - len(failing)} recovered")
        summary = ", ".join(parts)
    body = _BODY.render(
        site=run.site, run_id=run.run_id, changes=changes, fmt=format_duration, headline=_headline
    )
    return Alert(
        target=target,
        title=f"restoredrill {run.site}: {summary}",
        body=body,
        site=run.site,
        run_id=run.run_id,
        systems=[c.system for c in changes],
        failure=bool(failing),
        base_dir=base_dir,
    )
