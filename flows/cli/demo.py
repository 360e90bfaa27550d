"""``restoredrill demo``: make the demo plant's backups and verify it, as ``run`` does."""

from __future__ import annotations

from typing import Annotated

import typer

from restoredrill.errors import RestoredrillError

from .app import app, console
from .run import verify_and_show


@app.command()
def demo(
    prepare_only: Annotated[bool, typer.Option(help="only make the demo backups")] = False,
) -> None:
    """Make the demo plant's backups (offline, once) and verify the demo site.

    Exits 0 when the run shows what the demo is built to show (good systems pass,
    every broken backup is caught), 1 otherwise.
    """
    from ..demo import DEMO_SITE, EXPECTED, prepare
    from ..prefect_server import start_early

    if not prepare_only:
        start_early()  # the server starts while the demo backups are made
    prepare(console)
    if prepare_only:
        return
    record = verify_and_show(DEMO_SITE, trigger="demo", all_checks=True)
    seen = {s.system: s.verdict.value for s in record.systems}
    if seen != EXPECTED:
        raise RestoredrillError(f"demo: unexpected verdicts {seen} (expected {EXPECTED})")
    console.print(
        "[bold green]demo: as designed[/] — the good systems recovered within their RTOs; "
        "the truncated ERP backup, the system blocked behind it, the line-2 gateway's "
        "wrong register and the disk image that cannot boot were all caught. `restoredrill history` shows the run."
    )
