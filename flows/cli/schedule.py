"""``restoredrill serve`` and ``deploy``: the site's verifications on their schedules."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated

import typer

from restoredrill.errors import InputError

from ..inventory import load_site
from .app import app, console, err, quiet_console_logs
from .run import SiteArg, check_alerts
from .stores import open_store


@app.command()
def serve(
    site: SiteArg,
    limit: Annotated[
        int | None, typer.Option(min=1, help="verifications running at once (default: no limit)")
    ] = None,
    port: Annotated[
        int, typer.Option(help="port of the local Prefect server and UI (without PREFECT_API_URL)")
    ] = 4200,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's logs")] = False,
) -> None:
    """Run the site's verifications on its schedules until Ctrl-C (Prefect deployments
    served by this process; offline with a local Prefect server unless PREFECT_API_URL is set)."""
    loaded = load_site(site)
    open_store(loaded.site.evidence, site)
    check_alerts(loaded)
    from .. import serve as serving

    plans = serving.plan(loaded)
    if not any(p.cron for p in plans):
        raise InputError(
            f"{site}: nothing is scheduled: give the site (or a system) a `schedule:` "
            'cron expression, e.g. schedule: "0 2 * * *" (nightly at 02:00)'
        )
    for p in plans:
        what = f"digest at {p.digest}" if p.digest else ", ".join(p.systems or ["all systems"])
        when = f"{p.cron} ({loaded.site.timezone})" if p.cron else "on demand"
        console.print(f"serving [bold]{p.name}[/]: {what} — {when}", highlight=False)
    quiet_console_logs(verbose)
    with contextlib.suppress(KeyboardInterrupt):
        serving.serve(site.resolve(), limit=limit, port=port, console=err)
    console.print("stopped")


@app.command()
def deploy(
    site: SiteArg,
    pool: Annotated[
        str, typer.Option(help="the work pool whose workers run them")
    ] = "restoredrill",
    run_now: Annotated[
        bool, typer.Option("--run", help="also verify the site now on the workers and wait")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="with --run: print the run record")
    ] = False,
) -> None:
    """Register the site's scheduled verifications on the Prefect server of PREFECT_API_URL
    (workers of the work pool run them, each system as its own flow run)."""
    loaded = load_site(site)
    check_alerts(loaded)
    from .. import serve as serving

    for name in serving.deploy(site.resolve(), work_pool=pool):
        err.print(f"deployed {name} to work pool {pool}", highlight=False)
    if not run_now:
        return
    from ..dispatch import run_on_workers

    quiet_console_logs(False)
    record = run_on_workers(loaded)
    if as_json:
        sys.stdout.write(json.dumps(record.model_dump(mode="json"), indent=2, default=str) + "\n")
    else:
        from ..report import render

        render(console, record, False)
    raise typer.Exit(0 if record.verdict.ok else 1)
