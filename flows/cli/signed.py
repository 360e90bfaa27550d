"""``restoredrill evidence keygen|rotate|export|prune``: the signed chain — the site's
signing key, its rotation, bundles verified offline, and retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restoredrill.errors import InputError

from .app import console, err, evidence_app
from .stores import open_store, period, signer_for

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
    from ..signing import fingerprint, keygen, public_path

    signer = keygen(output, force=force)
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
    from .. import chain
    from ..signing import fingerprint, load_signer

    new = load_signer(new_key, "the new key")
    old = signer_for(key, site)
    store = open_store(evidence, site)
    with store._errors("announce the new key"), store._write() as conn:
        seq = chain.rotate(conn, store.shown, old, new)
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

    from ..export import export
    from ..inventory import load_site

    if since and run_id:
        raise InputError("give --since or --run, not both")
    cutoff = datetime.now(UTC) - period(since, "--since") if since else None
    signer = signer_for(key, site)
    if signer is None:
        raise InputError(
            "exporting needs the site's signing key: --key FILE, $RESTOREDRILL_SIGNING_KEY or "
            "signing_key: in the site file (make one with `restoredrill evidence keygen`)"
        )
    store = open_store(evidence, site, read_only=True)
    name = load_site(site).site.site if site is not None and site.exists() else None
    # a chain that does not verify: ExportRefused, exit 1 ("not exported: …")
    done = export(store, output, signer, site=name, since=cutoff, run_id=run_id)
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
    from ..retention import prune

    kept = period(keep, "--keep")
    signer = signer_for(key, site)
    store = open_store(evidence, site, signer=signer)
    done = prune(store, signer, kept, dry_run=dry_run)
    if not done.runs:
        console.print(f"nothing to prune: no run older than {keep}", highlight=False)
        return
    what = f"{done.runs} runs ({done.first_run} … {done.last_run}, up to #{done.cut_seq})"
    if dry_run:
        console.print(f"would prune {what}", highlight=False)
        return
    console.print(f"pruned {what}; signed checkpoint #{done.checkpoint_seq}", highlight=False)
