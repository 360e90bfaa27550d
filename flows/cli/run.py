"""``restoredrill validate``, ``schema`` and ``run``: verify a site now."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from restoredrill.errors import ExitCode, InputError, Interrupted, RestoredrillError

from ..inventory import InventoryError, LoadedSite, load_site, waves
from .app import app, console, err, quiet_console_logs
from .stores import remember

if TYPE_CHECKING:
    from ..results import RunRecord

SiteArg = Annotated[Path, typer.Argument(help="the site inventory (YAML)", show_default=False)]


def check_alerts(loaded: LoadedSite) -> None:
    """Every alert target usable (its secrets found, Apprise knows it), else bad input."""
    from ..alerts import AlertConfig, check_targets

    problems = check_targets(AlertConfig.from_site(loaded.site, loaded.base_dir))
    if problems:
        raise InventoryError([f"{loaded.path}: {p}" for p in problems])


@app.command()
def validate(site: SiteArg) -> None:
    """Check a site inventory; print every problem with file, line and field."""
    loaded = load_site(site)
    plan = waves({s.name: s.depends_on for s in loaded.site.systems})
    check_alerts(loaded)
    console.print(
        f"{site}: valid — site {loaded.site.site}, {len(loaded.site.systems)} systems, "
        f"{len(loaded.site.devices)} devices, {len(plan)} waves: "
        + " → ".join("[" + ", ".join(w) + "]" for w in plan),
        highlight=False,
        markup=False,
    )


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to a file")] = None,
) -> None:
    """Print the JSON Schema of the site inventory."""
    from ..schema import site_schema

    text = json.dumps(site_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def run(
    site: SiteArg,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", "-s", help="verify only this system (and what it depends on)"),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="systems at once per wave")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the run record as JSON")] = False,
    trigger: Annotated[str, typer.Option(help="why this run happened (recorded)")] = "manual",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's logs")] = False,
    all_checks: Annotated[
        bool, typer.Option("--checks", help="list every check with expected and observed values")
    ] = False,
    on_workers: Annotated[
        bool,
        typer.Option(
            "--dispatch",
            help="run each system on the workers of the Prefect server of PREFECT_API_URL "
            "(after `restoredrill deploy`); this process orchestrates",
        ),
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option(help="also write a JUnit XML report (Jenkins, GitLab, GitHub Actions)"),
    ] = None,
) -> None:
    """Verify a site now: restore, start, check, time, record, tear down.

    Exit codes: 0 every system passed, 1 a system did not pass, 2 bad input or the run
    could not start, 3 the run finished but its evidence could not be recorded (also
    when a system did not pass: the verdicts are in the output): the record was spooled
    to the file the message names, and the next run that can write the store appends
    it (or `restoredrill evidence import --site SITE --spool`).
    """
    record = verify_and_show(
        site,
        systems=system,
        concurrency=concurrency,
        as_json=as_json,
        trigger=trigger,
        verbose=verbose,
        all_checks=all_checks,
        on_workers=on_workers,
        junit=junit,
    )
    raise typer.Exit(0 if record.verdict.ok else 1)


def verify_and_show(
    site: Path,
    *,
    systems: list[str] | None = None,
    concurrency: int | None = None,
    as_json: bool = False,
    trigger: str = "manual",
    verbose: bool = False,
    all_checks: bool = False,
    on_workers: bool = False,
    junit: Path | None = None,
) -> RunRecord:
    """Verify ``site`` (what ``run`` does) and show the record, its alerts and its store
    (and write it as JUnit XML to ``junit``); raise a RestoredrillError (exit 3) once shown
    if its evidence was not recorded."""
    loaded = load_site(site)
    if not on_workers:  # its start overlaps the checks below
        from ..prefect_server import start_early

        start_early()
    dispatch = _dispatch_to(loaded) if on_workers else None
    names = [s.name for s in loaded.site.systems]
    for name in systems or []:
        if name not in names:
            raise InputError(f"{site}: no system named {name!r} (known: {', '.join(names)})")
    try:
        check_evidence(loaded)
        check_alerts(loaded)
        quiet_console_logs(verbose)
    except KeyboardInterrupt:  # the early server is stopped at exit
        raise Interrupted("interrupted before the run started") from None
    record, spooled = _verify(loaded, systems, concurrency, trigger, dispatch, live=not as_json)
    if junit is not None:
        from ..junit import for_run

        for_run(record).write(junit)
    deliveries = spooled.deliveries if spooled else _recorded_deliveries(loaded, record.run_id)
    _show(loaded, record, deliveries, spooled, as_json, all_checks)
    if spooled is not None:
        raise _not_recorded(loaded, spooled)
    return record


def _dispatch_to(loaded: LoadedSite) -> str:
    """The ``verify-system`` deployment a dispatched run sends its systems to."""
    from ..prefect_server import require_configured

    require_configured("to dispatch to")
    return f"verify-system/{loaded.site.site}"


def _verify(
    loaded: LoadedSite,
    systems: list[str] | None,
    concurrency: int | None,
    trigger: str,
    dispatch: str | None,
    live: bool,
) -> tuple[RunRecord, Any]:
    """Run the site's flow on a Prefect server (restoredrill's own if none is set):
    the record, and the EvidenceSpooled error if its evidence was spooled."""
    from .. import verify
    from ..prefect_server import prefect_api
    from ..report import live_progress
    from ..spool import EvidenceSpooled

    site = str(loaded.path)
    names = [s.name for s in loaded.site.systems]
    try:
        with prefect_api(err):
            if not live or not console.is_terminal:
                return verify.run_site(site, systems, concurrency, trigger, dispatch=dispatch), None
            with live_progress(console, names):
                return verify.run_site(site, systems, concurrency, trigger, dispatch=dispatch), None
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the run's twins and networks were removed") from None
    except EvidenceSpooled as exc:
        return exc.record, exc


def _show(
    loaded: LoadedSite,
    record: RunRecord,
    deliveries: list[dict],
    spooled: Any,
    as_json: bool,
    all_checks: bool,
) -> None:
    """The record as a table (or JSON), where its alerts went, and which store holds it."""
    from ..evidence import shown_url
    from ..report import render

    shown = shown_url(loaded.site.evidence, loaded.path)
    if as_json:
        evidence = {"store": shown, "recorded": spooled is None, "spooled_to": None, "error": None}
        if spooled:
            evidence |= {"spooled_to": spooled.path, "error": spooled.message}
        out = record.model_dump(mode="json") | {"alerts": deliveries, "evidence": evidence}
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
        return
    render(console, record, all_checks)
    for d in deliveries:
        ok = "[green]sent[/]" if d.get("ok") else f"[red]failed[/] ({d.get('reason')})"
        console.print(f"alert to {d.get('target')}: {ok}", highlight=False)
    if spooled is None:
        console.print(f"evidence: {shown}", highlight=False)


def _not_recorded(loaded: LoadedSite, spooled: Any) -> RestoredrillError:
    """Exit 3: the verdicts are in the output, the record in the spool file named."""
    from ..evidence import shown_url

    message = f"the run's evidence was not recorded:\n{spooled.message}"
    if spooled.path:
        shown = shown_url(loaded.site.evidence, loaded.path)
        message += (
            f"\nIt is appended to the chain by the next run that can write {shown}, or by "
            f"`restoredrill evidence import --site {loaded.path} --spool`."
        )
    return RestoredrillError(message, ExitCode.NOT_RECORDED)


def check_evidence(loaded: LoadedSite) -> None:
    """Before a run: a wrong evidence URL, a missing or unreadable signing key are bad input;
    a store that cannot be written now only warns (if it still cannot at the end, the run's
    record is spooled)."""
    from ..evidence import EvidenceConfigError, EvidenceError, EvidenceStore, default_url
    from ..signing import for_site

    for_site(loaded)  # a SigningError: bad input, before the run
    try:
        EvidenceStore(loaded.site.evidence or default_url(loaded.path)).close()
    except EvidenceConfigError:
        raise
    except EvidenceError as exc:
        err.print(f"[bold yellow]warning:[/] {exc}", highlight=False, soft_wrap=True)
        err.print(
            "The run goes on: if its evidence still cannot be recorded at the end, the record "
            "is spooled to a local file (exit code 3).",
            highlight=False,
        )
    remember(loaded.path, None)


def _recorded_deliveries(loaded: LoadedSite, run_id: str) -> list[dict]:
    from ..evidence import EvidenceError, EvidenceStore, default_url

    try:
        with EvidenceStore(loaded.site.evidence or default_url(loaded.path)) as store:
            return store.deliveries(run_id)
    except EvidenceError:
        return []
