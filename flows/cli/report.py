"""``restoredrill report`` and ``metrics``: the site's readiness, for people (HTML, PDF),
auditors (CSV compliance mapping, JSON) and monitoring (Prometheus text format)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from restoredrill.errors import InputError

from ..inventory import load_site
from .app import app, err
from .stores import open_store, period

if TYPE_CHECKING:
    from ..evidence import EvidenceStore

SiteOrName = Annotated[
    str,
    typer.Argument(help="the site file (or, with --evidence, a site name)", show_default=False),
]


@app.command()
def report(
    site: SiteOrName,
    since: Annotated[str, typer.Option(help="the period, back from now, e.g. 90d, 4w")] = "90d",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="html, json, csv (compliance) or pdf; default from -o's suffix, else html",
        ),
    ] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    verify: Annotated[
        bool, typer.Option(help="check the chain (links, signatures, the period's records)")
    ] = True,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="check every link and signature but do not rebuild the period's records "
            "from their rows (evidence verify does)",
        ),
    ] = False,
) -> None:
    """The readiness report: what was proven restorable, how fast against RTO, how often,
    coverage, OT vs IT, charts per system, last failures, compliance mapping, and the
    chain's integrity. Self-contained HTML (no script, no fetch), JSON, CSV or PDF.
    Exit 1 if the chain does not verify (the report says where)."""
    from ..readiness import gather

    kind = _kind(fmt, output)
    days = period(since, "--since")
    name, inventory, store = _report_site(site, evidence)
    readiness = gather(
        store, name, since=days, inventory=inventory, verify=verify, records=not quick
    )
    _write_report(readiness, kind, output)
    chain = readiness.chain
    where = f"{output}" if output else "stdout"
    state = "not checked" if chain is None else ("intact" if chain.ok else "BROKEN")
    err.print(
        f"report of {name}: {len(readiness.runs)} runs, {readiness.verifications} verifications "
        f"in {since}; chain {state} → {where}",
        highlight=False,
    )
    if chain is not None and not chain.ok:
        err.print(
            f"[bold red]evidence altered:[/] {chain.problem}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)


def _kind(fmt: str | None, output: Path | None) -> str:
    """The report's format: --format, else -o's suffix, else html."""
    kind = (fmt or (output.suffix.lstrip(".").lower() if output else "") or "html").lower()
    if kind == "htm":
        kind = "html"
    if kind not in {"html", "json", "csv", "pdf"}:
        raise InputError(f"--format {kind!r}: use html, json, csv or pdf")
    if kind == "pdf" and output is None:
        raise InputError("--format pdf needs -o FILE")
    return kind


def _write_report(readiness: Any, kind: str, output: Path | None) -> None:
    """The report in ``kind`` to ``output`` (stdout if none; a PDF always to a file)."""
    from ..compliance import to_csv
    from ..report_html import as_json, html, pdf, write

    if kind == "json":
        text = json.dumps(as_json(readiness), indent=2, default=str) + "\n"
    elif kind == "csv":
        text = to_csv(readiness)
    else:
        text = html(readiness)
    if kind == "pdf":
        assert output is not None  # _kind: a PDF needs -o
        pdf(text, output)
    elif output is None:
        sys.stdout.write(text)
    else:
        write(output, text)


@app.command()
def metrics(
    site: SiteOrName,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="the .prom file (node_exporter textfile collector); default stdout",
        ),
    ] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
) -> None:
    """Prometheus metrics of the site's latest verifications (text format): per system its
    last verification and success times, recovery time, RTO, RPO, backup age, verdict and
    failed checks; per site its last run. `serve` answers /metrics with the same."""
    from ..metrics import exposition
    from ..report_html import write

    name, inventory, store = _report_site(site, evidence)
    text = exposition(store, name, [s["name"] for s in inventory] if inventory else None)
    if output is None:
        sys.stdout.write(text)
        return
    write(output, text)  # replaced whole: the collector never reads half a file


def _report_site(
    site: str, evidence: str | None
) -> tuple[str, list[dict[str, Any]] | None, EvidenceStore]:
    """A site file (its name, systems and store), or with --evidence a site name the store
    knows (its systems then those recorded)."""
    path = Path(site)
    if path.exists() or evidence is None:
        if not path.exists():
            raise InputError(
                f"{site}: no such site file (to report on a site by name, give --evidence URL)"
            )
        loaded = load_site(path)
        inventory = [
            {
                "name": s.name,
                "zone": s.labels.zone or "",
                "role": s.labels.role or "",
                "rto_s": s.rto.total_seconds(),
                "rpo_s": s.rpo.total_seconds() if s.rpo else None,
            }
            for s in loaded.site.systems
        ]
        return loaded.site.site, inventory, open_store(evidence, path, read_only=True)
    store = open_store(evidence, None, read_only=True)
    known = _sites(store)
    if site not in known:
        raise InputError(
            f"evidence database {store.shown} has no runs of site {site!r} "
            f"(its sites: {', '.join(known) or 'none'})"
        )
    return site, None, store


def _sites(store: EvidenceStore) -> list[str]:
    """The sites whose runs the store holds."""
    from sqlalchemy import select

    from ..evidence import runs_t

    with store._errors("read its sites"), store._read() as conn:
        return sorted(conn.execute(select(runs_t.c.site).distinct()).scalars())
