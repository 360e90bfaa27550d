"""Prefect artifacts of a site run: the verdict table and a markdown summary, so the
Prefect UI shows the evidence next to the flow run.

Called at the end of the ``verify-site`` flow; a failure to publish is logged, never
fails the run (the evidence store holds the record either way).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from restoredrill.durations import format_duration

from .results import RunRecord

log = logging.getLogger(__name__)


def artifact_key(site: str, kind: str) -> str:
    """Prefect keys are lower-case letters, digits and dashes: one per site and kind, so
    the UI keeps each site's table as a versioned series."""
    slug = re.sub(r"[^a-z0-9-]+", "-", site.lower()).strip("-") or "site"
    return f"restoredrill-{slug}-{kind}"[:100]


def table(record: RunRecord) -> list[dict[str, Any]]:
    """One row per system: verdict, recovery time, RTO, backup age (and its RPO)."""
    return [
        {
            "system": s.system,
            "verdict": s.verdict.value + (" (near miss)" if s.near_miss else ""),
            "recovery time": format_duration(s.recovery_time_s),
            "recovery s": s.recovery_time_s,
            "RTO": format_duration(s.rto_s),
            "backup age": format_duration(s.backup_age_s),
            "RPO": format_duration(s.rpo_s),
            "checks": f"{len(s.checks) - len(s.failed_checks)}/{len(s.checks)}",
            "reason": s.reason,
        }
        for s in record.systems
    ]


def summary(record: RunRecord) -> str:
    """A short markdown account of the run: the verdict, the site's recovery time, what failed."""
    bad = [s for s in record.systems if not s.verdict.ok]
    lines = [
        f"# restoredrill: {record.site} · {record.verdict.value}",
        "",
        f"Run `{record.run_id}` ({record.trigger}), started {record.started_at:%Y-%m-%d %H:%M:%S %Z}.",
        "",
        f"- systems: {len(record.systems)}, passed: {len(record.systems) - len(bad)}",
        f"- site recovery time (critical path): {format_duration(record.site_recovery_time_s)}"
        f" / RTO {format_duration(record.site_rto_s)}",
    ]
    if bad:
        lines += ["", "## Not passed", ""]
        for s in bad:
            lines.append(
                f"- **{_md(s.system)}**: {s.verdict.value}"
                + (f" — {_md(s.reason)}" if s.reason else "")
            )
            for c in s.failed_checks[:5]:
                lines.append(
                    f"    - {_md(c.name)}: expected `{_code(c.expected)}`, observed `{_code(c.observed)}`"
                )
    lines += ["", "The signed record is in the evidence store: `restoredrill history`, "
              "`restoredrill report`."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>|#])", r"\\\1", str(text))[:300]


def _code(value: Any) -> str:
    return str(value).replace("`", "'")[:120]


def publish(record: RunRecord) -> None:
    """Create the run's table and markdown artifacts (inside the site's flow run)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        create_table_artifact(
            table(record),
            key=artifact_key(record.site, "systems"),
            description=f"restoredrill run {record.run_id}: verdict per system",
        )
        create_markdown_artifact(
            summary(record),
            key=artifact_key(record.site, "summary"),
            description=f"restoredrill run {record.run_id}: summary",
        )
    except Exception as exc:  # noqa: BLE001 - the UI's copy is a convenience, the evidence is not
        log.warning("could not publish the run's Prefect artifacts: %s", exc)
