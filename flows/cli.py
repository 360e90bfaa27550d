"""The ``restoredrill`` command line (Typer + Rich).

Exit codes: 0 everything passed, 1 a system did not pass, 2 bad input or the run
could not start (inventory, engine, evidence URL), 3 the run finished but its evidence
could not be recorded (database read-only, locked, damaged or unreachable): the table,
``--json`` and the alerts still give every verdict, the record was spooled to a file the
message names, and the next run that can write the store appends it to the chain (or
``restoredrill evidence import --spool``). 3 takes precedence over 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from .inventory import InventoryError, load_site  # noqa: E402
from .learn_cli import learn_app  # noqa: E402

app = typer.Typer(
    help="Prove that backups restore: restore each system into an isolated twin, "
    "check it does its job, time it against its RTO, record the evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
emulate_app = typer.Typer(help="Run field-device emulators on their own (for HMI development).")
app.add_typer(emulate_app, name="emulate")
stack_app = typer.Typer(help="The image of docker-compose.yml's server and workers, built offline.")
app.add_typer(stack_app, name="stack")
evidence_app = typer.Typer(
    help="The evidence store: check its chain, import spooled runs, sign, export, prune."
)
app.add_typer(evidence_app, name="evidence")
app.add_typer(learn_app, name="learn")

_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 150
console = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)
LAST_EVIDENCE = (
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    / "restoredrill"
    / "last-evidence"
)

SiteArg = Annotated[Path, typer.Argument(help="the site inventory (YAML)", show_default=False)]


def bad_input(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(site: Path):  # noqa: ANN202 - LoadedSite
    try:
        return load_site(site)
    except InventoryError as exc:
        for problem in exc.problems:
            err.print(problem, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(2) from None


@app.command()
def validate(site: SiteArg) -> None:
    """Check a site inventory; print every problem with file, line and field."""
    loaded = _load(site)
    from .inventory import waves

    plan = waves({s.name: s.depends_on for s in loaded.site.systems})
    _check_alerts(loaded)
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
    from .schema import site_schema

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
    loaded = _load(site)
    from .prefect_server import PrefectServerError, prefect_api, require_configured

    dispatch = None
    if on_workers:
        try:
            require_configured("to dispatch to")
        except PrefectServerError as exc:
            raise bad_input(str(exc)) from None
        dispatch = f"verify-system/{loaded.site.site}"
    names = [s.name for s in loaded.site.systems]
    for name in system or []:
        if name not in names:
            raise bad_input(f"{site}: no system named {name!r} (known: {', '.join(names)})")
    _check_evidence(loaded)
    _check_alerts(loaded)
    from restoredrill.twins.base import TwinError

    from . import verify
    from .evidence import EvidenceError
    from .report import live_progress, render
    from .spool import EvidenceSpooled

    quiet_console_logs(verbose)
    spooled = None
    try:
        with prefect_api(err):
            if as_json or not console.is_terminal:
                record = verify.run_site(str(site), system, concurrency, trigger, dispatch=dispatch)
            else:
                with live_progress(console, names):
                    record = verify.run_site(
                        str(site), system, concurrency, trigger, dispatch=dispatch
                    )
    except PrefectServerError as exc:
        raise bad_input(str(exc)) from None
    except TwinError as exc:
        raise bad_input(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted: the run's twins and networks were removed")
        raise typer.Exit(130) from None
    except EvidenceSpooled as exc:
        record, spooled = exc.record, exc
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if junit is not None:
        from .junit import for_run

        for_run(record).write(junit)
    deliveries = spooled.deliveries if spooled else _recorded_deliveries(loaded, record.run_id)
    shown = _shown_store(loaded)
    if as_json:
        evidence = {"store": shown, "recorded": spooled is None, "spooled_to": None, "error": None}
        if spooled:
            evidence |= {"spooled_to": spooled.path, "error": spooled.message}
        out = record.model_dump(mode="json") | {"alerts": deliveries, "evidence": evidence}
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    else:
        render(console, record, all_checks)
        for d in deliveries:
            ok = "[green]sent[/]" if d.get("ok") else f"[red]failed[/] ({d.get('reason')})"
            console.print(f"alert to {d.get('target')}: {ok}", highlight=False)
        if spooled is None:
            console.print(f"evidence: {shown}", highlight=False)
    if spooled is not None:
        err.print("[bold red]error: the run's evidence was not recorded:[/]", highlight=False)
        err.print(spooled.message, highlight=False, markup=False, soft_wrap=True)
        if spooled.path:
            err.print(
                f"It is appended to the chain by the next run that can write {shown}, or by "
                f"`restoredrill evidence import --site {site} --spool`.",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(3)
    raise typer.Exit(0 if record.verdict.ok else 1)


from .regress_cli import regress  # noqa: E402

app.command()(regress)


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
    loaded = _load(site)
    _open_store(loaded.site.evidence, site)
    _check_alerts(loaded)
    from . import serve as serving

    plans = serving.plan(loaded)
    if not any(p.cron for p in plans):
        raise bad_input(
            f"{site}: nothing is scheduled: give the site (or a system) a `schedule:` "
            'cron expression, e.g. schedule: "0 2 * * *" (nightly at 02:00)'
        )
    for p in plans:
        what = f"digest at {p.digest}" if p.digest else ", ".join(p.systems or ["all systems"])
        when = f"{p.cron} ({loaded.site.timezone})" if p.cron else "on demand"
        console.print(f"serving [bold]{p.name}[/]: {what} — {when}", highlight=False)
    quiet_console_logs(verbose)
    from .prefect_server import PrefectServerError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            serving.serve(site.resolve(), limit=limit, port=port, console=err)
    except PrefectServerError as exc:
        raise bad_input(str(exc)) from None
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
    loaded = _load(site)
    _check_alerts(loaded)
    from . import serve as serving
    from .prefect_server import PrefectServerError

    try:
        names = serving.deploy(site.resolve(), work_pool=pool)
    except PrefectServerError as exc:
        raise bad_input(str(exc)) from None
    for name in names:
        err.print(f"deployed {name} to work pool {pool}", highlight=False)
    if not run_now:
        return
    from .dispatch import run_on_workers

    quiet_console_logs(False)
    try:
        record = run_on_workers(loaded)
    except RuntimeError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        out = record.model_dump(mode="json")
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    else:
        from .report import render

        render(console, record, False)
    raise typer.Exit(0 if record.verdict.ok else 1)


@stack_app.command("build")
def stack_build(
    base: Annotated[
        str | None,
        typer.Option(help="local base image to build FROM (default: made with mmdebstrap)"),
    ] = None,
) -> None:
    """Build (or reuse) restoredrill/stack:local from this installation: no registry."""
    from restoredrill.twins.base import TwinError
    from restoredrill.twins.stack_image import STACK_BASE, build_on_local_engine

    try:
        tag = build_on_local_engine(base or STACK_BASE)
    except TwinError as exc:
        raise bad_input(str(exc)) from None
    console.print(f"{tag} (also tagged restoredrill/stack:local)", highlight=False)


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
    store = _open_store(evidence, site, read_only=True)
    from rich.table import Table

    from restoredrill.durations import format_duration

    from .evidence import EvidenceError
    from .regress_evidence import regressions
    from .report import STYLE

    try:
        records = store.runs(limit=limit, system=system)
        tested = regressions(store, limit, system)  # pre-change regression tests (regress)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if as_json:
        rows = [r.model_dump(mode="json") for r in records] + tested
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if tested:
        from .regress_cli import history_table

        console.print(history_table(tested, store.shown, system))
    if not records:
        console.print("no runs recorded yet" + (f" for {system}" if system else ""))
        return
    t = Table(
        title=f"runs{' of ' + system if system else ''} · {store.shown}", title_justify="left"
    )
    for col in (
        "run",
        "started",
        "site",
        "system",
        "verdict",
        "recovery / RTO",
        "checks",
        "reason",
    ):
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
    console.print(t)


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
    from .evidence import EvidenceError
    from .signing import load_public

    try:
        trusted = load_public(key) if key else None
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if bundle is not None:
        _verify_bundle(bundle, trusted)
        return
    store = _open_store(evidence, site, read_only=True)
    try:
        report = store.verify(key=trusted)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if report.ok:
        console.print(f"evidence intact: {report.runs} runs, chain head {report.head}")
        _print_signing(report)
        return
    err.print(f"[bold red]evidence altered:[/] {report.problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


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
    from . import spool
    from .evidence import EvidenceError

    if not files and not spooled:
        raise bad_input("give the spool FILEs to import, or --spool (with --site SITE)")
    store = _open_store(evidence, site, signer=_signer(None, site))
    paths = list(files or [])
    if spooled:
        paths += [p for p in spool.pending(site, store.shown) if p not in paths]
    try:
        report = spool.import_files(store, paths)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
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


@emulate_app.command("plc")
def emulate_plc(
    register_map: Annotated[Path, typer.Argument(help="register map (YAML or CSV)")],
    bind: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = "127.0.0.1:5020",
    tick: Annotated[float | None, typer.Option(help="seconds between value updates")] = None,
) -> None:
    """Serve a PLC twin over Modbus TCP until Ctrl-C."""
    from restoredrill.twins import plc

    argv = [str(register_map), "--bind", bind] + (["--tick", str(tick)] if tick else [])
    raise typer.Exit(plc.main(argv))


@emulate_app.command("scada")
def emulate_scada(
    sources: Annotated[
        list[Path],
        typer.Argument(help="NodeSet2 XML files (dependencies first) and/or YAML node lists"),
    ],
    bind: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = "127.0.0.1:4840",
    name: Annotated[str, typer.Option(help="the server's name")] = "restoredrill-scada",
    security: Annotated[str, typer.Option(help="none or basic256sha256")] = "none",
    username: Annotated[str | None, typer.Option(help="the one user accepted")] = None,
    password_env: Annotated[
        str, typer.Option(help="variable holding that user's password")
    ] = "RESTOREDRILL_OPCUA_PASSWORD",
    cert_dir: Annotated[str, typer.Option(help="where certificates are made and kept")] = "pki",
    plc: Annotated[
        list[str] | None, typer.Option(help="a PLC to poll: NAME=HOST:PORT@MAP (repeatable)")
    ] = None,
    bind_node: Annotated[
        list[str] | None, typer.Option(help="NODE=PLC/TAG: a variable follows a PLC tag")
    ] = None,
    identity: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE: BuildInfo, application, certificate (repeatable)"),
    ] = None,
) -> None:
    """Serve a SCADA twin over OPC UA until Ctrl-C."""
    from restoredrill.twins import scada

    argv = [str(p) for p in sources] + ["--bind", bind, "--name", name, "--security", security]
    argv += ["--password-env", password_env, "--cert-dir", cert_dir]
    argv += ["--username", username] if username else []
    for text in plc or []:
        argv += ["--plc", text]
    for text in bind_node or []:
        argv += ["--bind-node", text]
    argv += [f"--identity={text}" for text in identity or []]
    raise typer.Exit(scada.main(argv))


@app.command()
def demo(
    prepare_only: Annotated[bool, typer.Option(help="only make the demo backups")] = False,
) -> None:
    """Make the demo plant's backups (offline, once) and verify the demo site.

    Exits 0 when the run shows what the demo is built to show (good systems pass,
    every broken backup is caught), 1 otherwise.
    """
    from restoredrill.twins.base import TwinError
    from restoredrill.twins.sources.base import BackupError

    from .demo import DEMO_SITE, prepare

    try:
        prepare(console)
    except (RuntimeError, TwinError, BackupError) as exc:
        raise bad_input(str(exc)) from None
    if prepare_only:
        return
    try:
        run(DEMO_SITE, None, None, False, "demo", False, all_checks=True)
    except typer.Exit as done:
        if done.exit_code not in (0, 1):
            raise
    from .demo import EXPECTED
    from .evidence import EvidenceStore, default_url

    last = EvidenceStore(default_url(DEMO_SITE)).runs(limit=1)[0]
    seen = {s.system: s.verdict.value for s in last.systems}
    if seen != EXPECTED:
        err.print(f"[bold red]demo: unexpected verdicts[/] {seen} (expected {EXPECTED})")
        raise typer.Exit(1)
    console.print(
        "[bold green]demo: as designed[/] — the good systems recovered within their RTOs; "
        "the truncated ERP backup, the system blocked behind it, the line-2 gateway's "
        "wrong register and the disk image that cannot boot were all caught. `restoredrill history` shows the run."
    )


# --------------------------------------------------------------------------- signed evidence,
# readiness report, metrics (issue 13)

KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="the site's private signing key (default: $RESTOREDRILL_SIGNING_KEY, else the "
        "site file's signing_key)",
    ),
]


@evidence_app.command("keygen")
def evidence_keygen(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="the private key file (its .pub is written beside)"),
    ] = Path("restoredrill-site.key"),
    force: Annotated[bool, typer.Option(help="replace existing files")] = False,
) -> None:
    """Make the site's signing key pair (ed25519): FILE (private, 0600) and its .pub.

    Point `signing_key:` in the site file (or $RESTOREDRILL_SIGNING_KEY) at the private
    file; keep it where the evidence database's owner cannot read it. The first run
    recorded with it announces the key in the chain."""
    from .signing import SigningError, fingerprint, keygen, public_path

    try:
        signer = keygen(output, force=force)
    except SigningError as exc:
        raise bad_input(str(exc)) from None
    console.print(f"private key: {output} (mode 0600)", highlight=False)
    console.print(f"public key:  {public_path(output)}", highlight=False)
    console.print(f"fingerprint: {fingerprint(signer.keyid)}", highlight=False)


@evidence_app.command("rotate")
def evidence_rotate(
    new_key: Annotated[Path, typer.Argument(help="the new private key (from evidence keygen)")],
    site: Annotated[Path | None, typer.Option("--site")] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    key: KeyOption = None,
) -> None:
    """Announce a new signing key in the chain, signed by the current one (and by itself);
    runs are then signed by the new key only."""
    from . import chain
    from .evidence import EvidenceError
    from .signing import fingerprint, load_signer

    try:
        new = load_signer(new_key, "the new key")
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    old = _signer(key, site)
    store = _open_store(evidence, site)
    try:
        with store._errors("announce the new key"), store._write() as conn:
            seq = chain.rotate(conn, store.shown, old, new)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    console.print(
        f"key {fingerprint(new.keyid)} announced at #{seq}"
        + (f", signed by {fingerprint(old.keyid)}" if old else ""),
        highlight=False,
    )
    console.print(
        f"Now sign with {new_key}: set signing_key: (or $RESTOREDRILL_SIGNING_KEY) to it.",
        highlight=False,
    )


@evidence_app.command("export")
def evidence_export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the bundle to write (.intoto.jsonl)")
    ],
    site: Annotated[
        Path | None, typer.Option("--site", help="the site file (its runs only)")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only runs started this long ago or later, e.g. 30d")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    key: KeyOption = None,
) -> None:
    """Export runs as in-toto Statements in DSSE envelopes (one per system verification),
    signed by the site key, with the chain's public keys: `evidence verify --bundle` checks
    them offline. The chain is verified first; nothing is exported from a broken one."""
    from datetime import UTC, datetime

    from .evidence import EvidenceError
    from .export import ExportRefused, export

    if since and run_id:
        raise bad_input("give --since or --run, not both")
    cutoff = datetime.now(UTC) - _duration(since, "--since") if since else None
    signer = _signer(key, site)
    if signer is None:
        raise bad_input(
            "exporting needs the site's signing key: --key FILE, $RESTOREDRILL_SIGNING_KEY or "
            "signing_key: in the site file (make one with `restoredrill evidence keygen`)"
        )
    store = _open_store(evidence, site, read_only=True)
    name = _load(site).site.site if site is not None and site.exists() else None
    try:
        done = export(store, output, signer, site=name, since=cutoff, run_id=run_id)
    except ExportRefused as exc:
        err.print(f"[bold red]not exported:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if not done.runs:
        err.print("[yellow]no runs in that selection: the bundle holds its manifest only[/]")
    console.print(
        f"exported {done.runs} runs ({done.attestations} attestations) to {done.path}, signed by "
        f"key {done.keyid[:16]}; check with: restoredrill evidence verify --bundle {done.path} "
        "--key SITE.pub",
        highlight=False,
    )


@evidence_app.command("prune")
def evidence_prune(
    keep: Annotated[str, typer.Option(help="keep the runs of this period, e.g. 400d")],
    site: Annotated[Path | None, typer.Option("--site")] = None,
    evidence: Annotated[str | None, typer.Option(help="evidence database URL")] = None,
    key: KeyOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only say what would be removed")
    ] = False,
) -> None:
    """Remove runs older than --keep; a checkpoint signed by the site key stands for them,
    so the chain still verifies. The chain is verified first."""
    from .evidence import EvidenceError
    from .retention import prune

    period = _duration(keep, "--keep")
    signer = _signer(key, site)
    store = _open_store(evidence, site, signer=signer)
    try:
        done = prune(store, signer, period, dry_run=dry_run)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if not done.runs:
        console.print(f"nothing to prune: no run older than {keep}", highlight=False)
        return
    what = f"{done.runs} runs ({done.first_run} … {done.last_run}, up to #{done.cut_seq})"
    if dry_run:
        console.print(f"would prune {what}", highlight=False)
        return
    console.print(f"pruned {what}; signed checkpoint #{done.checkpoint_seq}", highlight=False)


@app.command()
def report(
    site: Annotated[
        str,
        typer.Argument(help="the site file (or, with --evidence, a site name)", show_default=False),
    ],
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
    from .compliance import to_csv
    from .evidence import EvidenceError
    from .readiness import gather
    from .report_html import ReportError, as_json, html, pdf, write

    kind = (fmt or (output.suffix.lstrip(".").lower() if output else "") or "html").lower()
    if kind == "htm":
        kind = "html"
    if kind not in {"html", "json", "csv", "pdf"}:
        raise bad_input(f"--format {kind!r}: use html, json, csv or pdf")
    if kind == "pdf" and output is None:
        raise bad_input("--format pdf needs -o FILE")
    period = _duration(since, "--since")
    name, inventory, store = _report_site(site, evidence)
    try:
        readiness = gather(
            store, name, since=period, inventory=inventory, verify=verify, records=not quick
        )
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    try:
        if kind == "json":
            text = json.dumps(as_json(readiness), indent=2, default=str) + "\n"
        elif kind == "csv":
            text = to_csv(readiness)
        else:
            text = html(readiness)
        if kind == "pdf":
            pdf(text, output)  # type: ignore[arg-type]
        elif output is None:
            sys.stdout.write(text)
        else:
            write(output, text)
    except ReportError as exc:
        raise bad_input(str(exc)) from None
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


@app.command()
def metrics(
    site: Annotated[
        str,
        typer.Argument(help="the site file (or, with --evidence, a site name)", show_default=False),
    ],
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
    from .evidence import EvidenceError
    from .metrics import exposition
    from .report_html import ReportError, write

    name, inventory, store = _report_site(site, evidence)
    try:
        text = exposition(store, name, [s["name"] for s in inventory] if inventory else None)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write(output, text)  # replaced whole: the collector never reads half a file
    except ReportError as exc:
        raise bad_input(str(exc)) from None


def _report_site(site: str, evidence: str | None):  # noqa: ANN202 - (name, inventory, store)
    """A site file (its name, systems and store), or with --evidence a site name the store
    knows (its systems then those recorded)."""
    from sqlalchemy import select

    from .evidence import EvidenceError, runs_t

    path = Path(site)
    if path.exists() or evidence is None:
        if not path.exists():
            raise bad_input(
                f"{site}: no such site file (to report on a site by name, give --evidence URL)"
            )
        loaded = _load(path)
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
        return loaded.site.site, inventory, _open_store(evidence, path, read_only=True)
    store = _open_store(evidence, None, read_only=True)
    try:
        with store._errors("read its sites"), store._read() as conn:
            known = sorted(conn.execute(select(runs_t.c.site).distinct()).scalars())
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if site not in known:
        raise bad_input(
            f"evidence database {store.shown} has no runs of site {site!r} "
            f"(its sites: {', '.join(known) or 'none'})"
        )
    return site, None, store


def _duration(text: str | None, option: str):  # noqa: ANN202 - timedelta
    from restoredrill.durations import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise bad_input(f"{option} {exc}") from None
    if value.total_seconds() <= 0:
        raise bad_input(f"{option} {text!r}: give a period longer than zero, e.g. 30d")
    return value


def _signer(key: Path | None, site: Path | None):  # noqa: ANN202 - Signer | None
    """--key, else $RESTOREDRILL_SIGNING_KEY, else the site file's signing_key."""
    from .evidence import EvidenceError
    from .signing import configured, load_signer

    try:
        if key is not None:
            return load_signer(key, "--key")
        if site is not None and site.exists():
            loaded = _load(site)
            return configured(loaded.site.signing_key, loaded.base_dir)
        return configured()
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None


def _verify_bundle(bundle: Path, trusted) -> None:  # noqa: ANN001
    from .attestation import BundleError, verify_bundle

    if trusted is None:
        raise bad_input("--bundle needs --key PUB: the public key you trust")
    try:
        report = verify_bundle(bundle, trusted)
    except BundleError as exc:
        raise bad_input(str(exc)) from None
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


def _print_signing(report) -> None:  # noqa: ANN001 - ChainReport
    from .signing import fingerprint

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


class _OnlyOurs(logging.Filter):
    """On the console, keep restoredrill's own warnings and anything critical.

    Prefect reports each failed task with a traceback (a failed restore is a
    verdict here, shown in the table) and its temporary server logs its own
    housekeeping; both still reach the Prefect API and the UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("restoredrill") or record.levelno >= logging.CRITICAL


def quiet_console_logs(verbose: bool) -> None:
    import prefect  # noqa: F401 - sets up Prefect's logging first

    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OnlyOurs) for f in handler.filters):
            handler.addFilter(_OnlyOurs())


def _check_alerts(loaded) -> None:  # noqa: ANN001
    from .alerts import AlertConfig, check_targets

    problems = check_targets(AlertConfig.from_site(loaded.site, loaded.base_dir))
    if problems:
        for p in problems:
            err.print(f"{loaded.path}: {p}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)


def _open_store(url: str | None, site: Path | None, read_only: bool = False, signer=None):  # noqa: ANN001, ANN202
    """The store of ``--evidence``, else of ``--site``, else $RESTOREDRILL_EVIDENCE, else the
    one last used here (``read_only``: nothing is written to it; ``signer`` signs what is
    appended)."""
    from .evidence import EvidenceError, EvidenceStore, default_url

    try:
        if url is None and site is not None:
            url = _load(site).site.evidence if site.exists() else None
            url = url or default_url(site)
        url = url or os.environ.get("RESTOREDRILL_EVIDENCE") or _recall()
        if url is None:
            raise bad_input("which evidence? give --site SITE or --evidence URL")
        store = EvidenceStore.reader(url) if read_only else EvidenceStore(url, signer=signer)
    except EvidenceError as exc:
        raise bad_input(str(exc)) from None
    if not read_only:
        _remember(site, url)
    return store


def _check_evidence(loaded) -> None:  # noqa: ANN001
    """Before a run: a wrong evidence URL is bad input; a store that cannot be written now
    only warns (if it still cannot at the end, the run's record is spooled)."""
    from .evidence import EvidenceConfigError, EvidenceError, EvidenceStore, default_url
    from .signing import SigningError, for_site

    try:
        for_site(loaded)  # a missing or unreadable signing key is bad input, before the run
    except SigningError as exc:
        raise bad_input(str(exc)) from None
    try:
        EvidenceStore(loaded.site.evidence or default_url(loaded.path)).close()
    except EvidenceConfigError as exc:
        raise bad_input(str(exc)) from None
    except EvidenceError as exc:
        err.print(f"[bold yellow]warning:[/] {exc}", highlight=False, soft_wrap=True)
        err.print(
            "The run goes on: if its evidence still cannot be recorded at the end, the record "
            "is spooled to a local file (exit code 3).",
            highlight=False,
        )
    _remember(loaded.path, None)


def _shown_store(loaded) -> str:  # noqa: ANN001
    from .evidence import shown_url

    return shown_url(loaded.site.evidence, loaded.path)


def _recorded_deliveries(loaded, run_id: str) -> list[dict]:  # noqa: ANN001
    from .evidence import EvidenceError, EvidenceStore, default_url

    try:
        with EvidenceStore(loaded.site.evidence or default_url(loaded.path)) as store:
            return store.deliveries(run_id)
    except EvidenceError:
        return []


def _remember(site: Path | None, url: str | None) -> None:
    """Keep which store was used last, without its password: the site file if there is
    one (its ``evidence:`` names the store), else the URL without the password."""
    from .evidence import without_password

    if site is not None:
        data = {"site": str(Path(site).resolve())}
    elif url is not None and (plain := without_password(url)) is not None:
        data = {"url": plain}
    else:
        return
    with contextlib.suppress(OSError):
        LAST_EVIDENCE.parent.mkdir(parents=True, exist_ok=True)
        LAST_EVIDENCE.unlink(missing_ok=True)
        fd = os.open(LAST_EVIDENCE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)


def _recall() -> str | None:
    """The URL of the store used last (see _remember); a URL an older version kept with
    its password is used once and rewritten without it."""
    from .evidence import default_url

    try:
        text = LAST_EVIDENCE.read_text().strip()
    except OSError:
        return None
    if not text.startswith("{"):
        _remember(None, text)
        return text or None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if data.get("site"):
        site = Path(data["site"])
        if not site.is_file():
            raise bad_input(
                f"the site used last, {site}, is gone: give --site SITE or --evidence URL"
            )
        return _load(site).site.evidence or default_url(site)
    return data.get("url")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
