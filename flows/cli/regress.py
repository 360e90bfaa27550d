"""``restoredrill regress``: test a proposed OT configuration change on the twins.

Exit codes: 0 no regression (also when the change affects no system), 1 regression,
2 bad input (a REF that does not exist, a candidate that does not validate, …),
3 the comparison was made but could not be recorded as evidence (spooled).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from restoredrill.durations import format_duration, parse_duration
from restoredrill.errors import ExitCode, InputError, Interrupted, RestoredrillError

from .app import app, console, err, quiet_console_logs
from .run import SiteArg, check_evidence


@app.command()
def regress(
    site: SiteArg,
    candidate: Annotated[
        Path | None,
        typer.Option(help="a folder mirroring the site's files; what it holds replaces them"),
    ] = None,
    git_base: Annotated[
        str | None,
        typer.Option(
            help="the site's files at this git revision are the baseline, the working tree the candidate"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the regression record as JSON")
    ] = False,
    junit: Annotated[
        Path | None, typer.Option(help="write a JUnit XML report (Jenkins, GitLab, GitHub Actions)")
    ] = None,
    tolerance: Annotated[
        str, typer.Option(help="a recovery time longer by more than this is a regression")
    ] = "20%",
    time_floor: Annotated[
        str, typer.Option(help="... and longer by more than this (noise below it)")
    ] = "5s",
    window: Annotated[
        str, typer.Option(help="how long OPC UA values are read to see which ones move")
    ] = "3s",
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            help="leave out checks 'SYSTEM: CHECK' or entries 'SNAPSHOT: KEY' (glob, repeatable)"
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="systems at once per wave")
    ] = None,
    all_checks: Annotated[
        bool, typer.Option("--checks", help="list every check, not only the differences")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's logs")] = False,
) -> None:
    """Run the systems a configuration change affects with the baseline and with the
    candidate, snapshot their OT endpoints, compare; exit 1 on a regression."""
    from ..candidate import RegressInputError
    from ..regress import plan

    options = _options(tolerance, time_floor, window)
    try:
        the_plan = plan(site, candidate, git_base)
    except RegressInputError as exc:
        _refused(exc, as_json, junit, site)
    with the_plan:
        _announce(the_plan)
        record = _compare(the_plan, ignore or [], concurrency, verbose, options)
    _record(the_plan, record, junit, as_json, all_checks)
    raise typer.Exit(1 if record.verdict == "regression" else 0)


def _compare(
    the_plan: Any, ignore: list[str], concurrency: int | None, verbose: bool, options: dict
) -> Any:
    """Both configurations run (on a Prefect server, when anything is affected) and compared."""
    from ..prefect_server import prefect_api
    from ..regress import run

    check_evidence(the_plan.original)
    if not the_plan.impact.nothing:
        quiet_console_logs(verbose)
    server = prefect_api(err) if not the_plan.impact.nothing else contextlib.nullcontext()
    try:
        with server:
            return run(the_plan, ignore=ignore, concurrency=concurrency, **options)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the runs' twins and networks were removed") from None


def _record(the_plan: Any, record: Any, junit: Path | None, as_json: bool, checks: bool) -> None:
    """The comparison recorded as evidence, written as JUnit XML, shown; exit 3 (raised) if
    it could not be recorded."""
    from ..evidence import EvidenceError, shown_url
    from ..regress_evidence import record_regression

    try:
        spooled = record_regression(the_plan.original, record)
    except EvidenceError as exc:  # not recorded, and no spool folder could be written
        spooled = str(exc)
    if junit is not None:
        from ..junit import for_regression

        for_regression(record).write(junit)
    if as_json:
        sys.stdout.write(record.model_dump_json(indent=2) + "\n")
    else:
        render(record, checks)
        if spooled is None:
            loaded = the_plan.original
            shown = shown_url(loaded.site.evidence, loaded.path)
            console.print(f"evidence: {shown}", highlight=False)
    if spooled is not None:
        raise RestoredrillError(
            f"the regression was not recorded as evidence: {spooled}", ExitCode.NOT_RECORDED
        )


def _options(tolerance: str, floor: str, window: str) -> dict[str, float]:
    text = tolerance.strip()
    try:
        if not text.endswith("%"):
            raise ValueError
        value = float(text[:-1]) / 100
    except ValueError:  # deliberate: not a percentage, told as bad input just below
        raise InputError(f"--tolerance {tolerance!r}: give a percentage, e.g. 20%") from None
    if not 0 <= value <= 100:
        raise InputError(f"--tolerance {tolerance!r}: between 0% and 10000%")
    out = {"tolerance": value}
    for name, given in (("floor_s", floor), ("window", window)):
        try:
            out[name] = parse_duration(given).total_seconds()
        except ValueError as exc:
            flag = "--time-floor" if name == "floor_s" else "--window"
            raise InputError(f"{flag} {given!r}: {exc}") from None
    if out["window"] > 600:
        raise InputError(f"--window {window!r}: at most 10m")
    return out


def _refused(exc: Any, as_json: bool, junit: Path | None, site: Path) -> NoReturn:
    """Bad input (a RegressInputError): every problem on stderr (raised: the command line
    prints them, exit 2), and in --json / --junit, for a pipeline."""
    problems = exc.problems
    if as_json:
        sys.stdout.write(
            json.dumps({"verdict": "bad input", "problems": problems}, indent=2) + "\n"
        )
    if junit is not None:
        from ..junit import Suites

        doc = Suites(f"restoredrill regress {site}")
        suite = doc.suite(str(site))
        doc.case(suite, str(site), "the candidate can be tested", None, "error",
                 problems[0], "bad input", "\n".join(problems))  # fmt: skip
        doc.write(junit)
    raise exc


def _announce(p: Any) -> None:
    c = p.configs
    if c.revisions.get("base"):
        r = c.revisions
        head = r["head"][:12] + (" + working tree changes" if r.get("dirty") else "")
        err.print(
            f"baseline: {r['base_ref']} ({r['base'][:12]}); candidate: the working tree ({head})",
            highlight=False,
        )
    for f in p.impact.changed:
        users = [
            why.split(": ", 1)[1]
            for reasons in (*p.impact.systems.values(), *p.impact.devices.values())
            for why in reasons
            if why.startswith(f"{f.path} (")
        ]
        used = f" — {'; '.join(users)}" if users else ""
        err.print(f"changed: {f.path} ({f.status}){used}", highlight=False)
    for path, why in c.ignored:
        err.print(f"ignored: {path}: {why}", highlight=False)
    for f in p.impact.unused:
        err.print(f"ignored: {f.path}: the site does not use it", highlight=False)
    if p.impact.nothing:
        return
    runs = p.impact.to_run(p.candidate.site) or p.impact.to_run(p.baseline.site)
    devices = ", ".join(p.impact.devices) or "none"
    err.print(
        f"affected: systems {', '.join(p.impact.systems) or 'none'}; devices {devices}; "
        f"running in both configurations: {', '.join(runs) or '(devices only)'}",
        highlight=False,
    )


# --------------------------------------------------------------------------- the report


def render(record: Any, all_checks: bool = False) -> None:
    c = record.comparison
    parts: list[Any] = []
    if record.baseline is not None:
        parts.append(_systems(record))
        if (checks := _checks(record, all_checks)) is not None:
            parts.append(checks)
        if (entries := _entries(record)) is not None:
            parts.append(entries)
    line = Text("regression verdict: ")
    line.append(
        record.verdict, style="bold red" if record.verdict == "regression" else "bold green"
    )
    line.append(f" — {record.summary}")
    if c.snapshots:
        line.append(f" ({len(c.snapshots)} snapshot(s) compared)")
    parts.append(line)
    console.print(Group(*parts))


def _systems(record: Any) -> Table:
    t = Table(title=f"site {record.site} · regression {record.regression_id}", title_justify="left")
    for col in ("system", "baseline", "candidate", "recovery baseline → candidate", "why"):
        t.add_column(col, overflow="fold")
    for s in record.comparison.systems:
        change = f" ({s.time_change:+.0%})" if s.time_change is not None else ""
        times = f"{format_duration(s.baseline_s)} → {format_duration(s.candidate_s)}{change}"
        t.add_row(
            s.system, s.baseline or "-", s.candidate or "-", times,
            Text("; ".join(s.reasons), style="red" if s.regression else ""),
        )  # fmt: skip
    return t


def _checks(record: Any, everything: bool) -> Table | None:
    rows = [d for d in record.comparison.checks if everything or d.change != "unchanged"]
    if not rows:
        return None
    t = Table(title="checks: baseline → candidate", title_justify="left")
    for col in ("system", "check", "change", "baseline", "candidate"):
        t.add_column(col, overflow="fold")
    for d in rows:
        style = "bold red" if d.regression else ("green" if d.change == "newly passing" else "")
        t.add_row(
            d.system, d.check, Text(d.change, style=style), _side(d.baseline), _side(d.candidate)
        )
    return t


def _side(side: Any) -> str:
    if side is None:
        return "-"
    seen = side.observed if side.observed is not None else side.message
    return f"{side.status}: {_short(seen)}"


def _entries(record: Any) -> Table | None:
    rows = record.comparison.entries
    if not rows:
        return None
    t = Table(title="snapshot differences", title_justify="left")
    for col in ("snapshot", "entry", "change", "baseline", "candidate", "detail"):
        t.add_column(col, overflow="fold")
    for e in rows[:200]:
        t.add_row(e.snapshot, f"{e.key} ({e.what})", Text(e.change, style="bold red"),
                  _short(e.baseline), _short(e.candidate), e.detail)  # fmt: skip
    if len(rows) > 200:
        t.add_row("…", f"{len(rows) - 200} more (see --json)", "", "", "", "")
    return t


def history_table(rows: list[dict[str, Any]], shown: str, system: str | None) -> Table:
    """Recorded regression tests (``restoredrill history``), newest first."""
    t = Table(
        title=f"regression tests{' of ' + system if system else ''} · {shown}", title_justify="left"
    )
    for col in ("regression", "started", "site", "change", "ran", "verdict", "summary"):
        t.add_column(col, overflow="fold")
    for r in rows:
        source = r.get("source") or {}
        rev = r.get("revisions") or {}
        what = (
            f"git {source['git_base']} ({str(rev.get('base', ''))[:10]})"
            if "git_base" in source
            else f"candidate {source.get('candidate', '?')}"
        )
        files = [f["path"] for f in r.get("changed_files", [])]
        what += f": {', '.join(files[:3])}{' …' if len(files) > 3 else ''}" if files else ""
        affected = r.get("affected") or {}
        ran = sorted(set(affected.get("baseline", [])) | set(affected.get("candidate", [])))
        style = "bold red" if r["verdict"] == "regression" else "bold green"
        t.add_row(
            r["regression_id"], str(r["started_at"])[:19].replace("T", " "), r["site"], what,
            ", ".join(ran) or "-", Text(r["verdict"], style=style), r.get("summary", ""),
        )  # fmt: skip
    return t


def _short(value: Any, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
