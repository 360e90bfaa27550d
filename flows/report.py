"""How a run looks to a person: live progress and the final verdict table (Rich)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from restoredrill.checks.base import Status
from restoredrill.durations import format_duration

from .progress import SystemProgress, subscribe
from .results import RunRecord, Verdict

TCG_NOTE = "TCG: not the plant's RTO"
"""Beside a recovery time measured on an emulated CPU (a VM twin without KVM)."""

STYLE = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.ERROR: "bold red",
    Verdict.RTO_EXCEEDED: "bold yellow",
    Verdict.RPO_EXCEEDED: "bold yellow",
    Verdict.BLOCKED: "magenta",
}


@contextmanager
def live_progress(console: Console, systems: list[str]) -> Iterator[None]:
    """Show each system's current step and elapsed time against its RTO while a run goes."""
    state = {name: SystemProgress(name) for name in systems}
    lock = threading.Lock()

    def table() -> Table:
        t = Table(title="restoredrill: verifying", expand=False, title_justify="left")
        t.add_column("system")
        t.add_column("step")
        t.add_column("elapsed / RTO", justify="right")
        with lock:
            rows = list(state.values())
        for p in rows:
            rto = format_duration(p.rto_s) if p.rto_s else "-"
            over = p.rto_s is not None and p.elapsed > p.rto_s
            elapsed = Text(f"{format_duration(p.elapsed)} / {rto}", style="red" if over else "")
            step = (
                Text(p.verdict, style=STYLE.get(Verdict(p.verdict), ""))
                if p.verdict
                else Text(p.step)
            )
            t.add_row(p.system, step, elapsed if p.started else Text("-"))
        return t

    def on_change(p: SystemProgress) -> None:
        with lock:
            state[p.system] = p

    unsubscribe = subscribe(on_change)
    try:
        with Live(get_renderable=table, console=console, refresh_per_second=4, transient=True):
            yield
    finally:
        unsubscribe()


def verdict_table(record: RunRecord) -> Table:
    """One row per system: verdict, recovery time vs RTO, backup age vs RPO, checks, reason."""
    t = Table(title=f"site {record.site} · run {record.run_id}", title_justify="left")
    t.add_column("system")
    t.add_column("zone/role")
    t.add_column("verdict")
    t.add_column("recovery / RTO", justify="right")
    t.add_column("backup age / RPO", justify="right")
    t.add_column("checks", justify="right")
    t.add_column("reason", overflow="fold", max_width=70)
    workers = any(s.worker for s in record.systems)
    if workers:
        t.add_column("worker")
    for s in record.systems:
        passed = sum(c.status is Status.PASS for c in s.checks)
        verdict = Text(s.verdict.value, style=STYLE[s.verdict])
        if s.near_miss:
            verdict.append(" (near miss)", style="yellow")
        recovery = Text(f"{format_duration(s.recovery_time_s)} / {format_duration(s.rto_s)}")
        if s.emulated and s.recovery_time_s is not None:
            recovery.append(f"\n{TCG_NOTE}", style="yellow")
        t.add_row(
            s.system,
            "/".join(v for v in (s.labels.get("zone"), s.labels.get("role")) if v) or "-",
            verdict,
            recovery,
            f"{format_duration(s.backup_age_s)} / {format_duration(s.rpo_s)}",
            f"{passed}/{len(s.checks)}" if s.checks else "-",
            s.reason,
            *([s.worker or "-"] if workers else []),
        )
    return t


def summary(record: RunRecord) -> Text:
    site_rto = format_duration(record.site_rto_s) if record.site_rto_s else "none set"
    line = Text("site verdict: ")
    line.append(record.verdict.value, style=STYLE[record.verdict])
    line.append(
        f"   site recovery time (critical path): {format_duration(record.site_recovery_time_s)}"
        f" / RTO {site_rto}"
    )
    if any(s.emulated for s in record.systems):
        line.append(f" (VM times measured under {TCG_NOTE})", style="yellow")
    framework = sorted(s.framework_s for s in record.systems if s.framework_s is not None)
    if framework:  # recorded apart, never in a recovery time (README: how it is measured)
        line.append(f"   restoredrill between steps: {framework[len(framework) // 2]:.1f}s/system")
    return line


def checks_table(record: RunRecord, everything: bool = False) -> Table | None:
    """Each check (or each one that did not pass) with what was expected and observed."""
    rows = [
        (s, c)
        for s in record.systems
        for c in s.checks
        if everything or c.status is not Status.PASS
    ]
    if not rows:
        return None
    title = "checks: expected and observed" if everything else "checks that did not pass"
    t = Table(title=title, title_justify="left")
    for col in ("system", "check", "status", "expected", "observed", "time"):
        t.add_column(col, overflow="fold")
    for s, c in rows:
        status = Text(c.status.value, style="green" if c.status is Status.PASS else "bold red")
        observed = _short(c.observed) if c.observed is not None else c.message
        t.add_row(
            s.system, c.name, status, _short(c.expected), observed, format_duration(c.duration_s)
        )
    return t


def render(console: Console, record: RunRecord, all_checks: bool = False) -> None:
    parts: list[Table | Text] = [verdict_table(record)]
    if (checks := checks_table(record, all_checks)) is not None:
        parts.append(checks)
    parts.append(summary(record))
    console.print(Group(*parts))


def _short(value: object, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
