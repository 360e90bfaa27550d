"""``restoredrill history`` and ``evidence verify|import``: what the evidence store holds,
whether its chain (or an exported bundle) is intact, and runs spooled while it could not be
written."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from restoredrill.errors import InputError

from .app import app, console, err, evidence_app
from .stores import open_store, signer_for

if TYPE_CHECKING:
    from rich.table import Table

    from ..evidence import ChainReport
    from ..results import RunRecord
    from ..signing import PublicKey


@app.command()
def history(
    system: Annotated[str | None, typer.Argument(help="only runs of this system")] = None,
    site: Annotated[
        Path | None, typer.Option("--site", help="the site whose evidence to read")
    ] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show past runs (newest first), from the evidence store."""
    from ..regress_evidence import regressions

    store = open_store(evidence, site, read_only=True)
    records = store.runs(limit=limit, system=system)
    tested = regressions(store, limit, system)  # pre-change regression tests (regress)
    if as_json:
        rows = [r.model_dump(mode="json") for r in records] + tested
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if tested:
        from .regress import history_table

        console.print(history_table(tested, store.shown, system))
    if not records:
        console.print("no runs recorded yet" + (f" for {system}" if system else ""))
        return
    console.print(_history_table(records, system, store.shown))


def _history_table(records: list[RunRecord], system: str | None, shown: str) -> Table:
    from rich.table import Table

    from restoredrill.durations import format_duration

    from ..report import STYLE

    t = Table(title=f"runs{' of ' + system if system else ''} · {shown}", title_justify="left")
    columns = ("run", "started", "site", "system", "verdict", "recovery / RTO", "checks", "reason")
    for col in columns:
        t.add_column(col, overflow="fold")
    for r in records:
        for s in r.systems:
            if system and s.system != system:
                continue
            passed = sum(c.status.value == "pass" for c in s.checks)
            t.add_row(
                r.run_id,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.site,
                s.system,
                f"[{STYLE[s.verdict]}]{s.verdict.value}[/]",
                f"{format_duration(s.recovery_time_s)} / {format_duration(s.rto_s)}",
                f"{passed}/{len(s.checks)}",
                s.reason,
            )
    return t


@evidence_app.command("verify")
def evidence_verify(
    site: Annotated[Path | None, typer.Option("--site")] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="an exported bundle to check offline, with no database (needs --key)"),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="the public key you trust (PEM): the bundle, or the chain, must be signed by "
            "it or by a key it announced"
        ),
    ] = None,
) -> None:
    """Recompute the hash chain of every recorded run and check its signatures (or check an
    exported bundle); exit 1 if anything was altered."""
    from ..signing import load_public

    trusted = load_public(key) if key else None
    if bundle is not None:
        _verify_bundle(bundle, trusted)
        return
    report = open_store(evidence, site, read_only=True).verify(key=trusted)
    if report.ok:
        console.print(f"evidence intact: {report.runs} runs, chain head {report.head}")
        _print_signing(report)
        return
    err.print(f"[bold red]evidence altered:[/] {report.problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _verify_bundle(bundle: Path, trusted: PublicKey | None) -> None:
    from ..attestation import verify_bundle

    if trusted is None:
        raise InputError("--bundle needs --key PUB: the public key you trust")
    report = verify_bundle(bundle, trusted)
    if report.ok:
        console.print(
            f"bundle intact: {report.attestations} attestations of {report.runs} runs"
            + (f" of site {report.site}" if report.site else "")
            + f", signed by key {str(report.export_key)[:16]}; {report.chained} runs' chain hashes "
            "and record-time signatures rebuilt from the bundle",
            highlight=False,
        )
        return
    err.print(f"[bold red]bundle altered or not trusted:[/] {bundle}", highlight=False)
    for problem in report.problems[:50]:
        err.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
    if len(report.problems) > 50:
        err.print(f"  … and {len(report.problems) - 50} more", highlight=False)
    raise typer.Exit(1)


def _print_signing(report: ChainReport) -> None:
    from ..signing import fingerprint

    if report.keyid:
        console.print(
            f"signed: {report.signed} runs by key {fingerprint(report.keyid)}"
            + (f" ({report.unsigned} recorded before signing began)" if report.unsigned else ""),
            highlight=False,
        )
    else:
        console.print("not signed: make a key with `restoredrill evidence keygen`", highlight=False)
    if report.pruned:
        console.print(
            f"pruned: {report.pruned} runs (a signed checkpoint stands for them)", highlight=False
        )


@evidence_app.command("import")
def evidence_import(
    files: Annotated[
        list[Path] | None, typer.Argument(help="spool files (.json) to import", show_default=False)
    ] = None,
    spooled: Annotated[
        bool,
        typer.Option("--spool", help="import every run spooled for the site (or the store)"),
    ] = False,
    site: Annotated[Path | None, typer.Option("--site")] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
) -> None:
    """Append runs whose evidence could not be recorded (spool files) to the chain, oldest
    first; a run already in it is not added twice. Exit 1 if a file was kept."""
    from .. import spool

    if not files and not spooled:
        raise InputError("give the spool FILEs to import, or --spool (with --site SITE)")
    store = open_store(evidence, site, signer=signer_for(None, site))
    paths = list(files or [])
    if spooled:
        paths += [p for p in spool.pending(site, store.shown) if p not in paths]
    report = spool.import_files(store, paths)
    for run_id in report.imported:
        console.print(f"imported run {run_id}", highlight=False)
    for run_id in report.already:
        console.print(
            f"run {run_id} was already in the chain: its spool file removed", highlight=False
        )
    for path, why in report.kept:
        err.print(f"kept {path}: {why}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"{len(report.imported)} run(s) imported into {store.shown}, {len(report.kept)} file(s) kept",
        highlight=False,
    )
    raise typer.Exit(1 if report.kept else 0)
