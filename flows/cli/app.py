"""The ``restoredrill`` command's Typer apps, its consoles, and the one place where an
error becomes an exit code.

Every command raises :class:`~restoredrill.errors.RestoredrillError` (or a subclass) for
anything that goes wrong; :class:`_Commands` prints its message and ends with its
``exit_code``: 1 a failure, 2 bad input or the run could not start, 3 the run finished but
its evidence was not recorded, 130 interrupted. A verdict is not an error: ``run`` ends
0 or 1 by the site's verdict itself.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from restoredrill.errors import RestoredrillError

_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 150
console = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


def report(exc: RestoredrillError) -> None:
    """Print an error as the command line shows it: ``error: message`` (or the message alone
    when it is its own headline, e.g. ``file:line: field: problem`` lines)."""
    text = Text(str(exc))
    if exc.headline:
        text = Text.assemble((f"{exc.headline}:", "bold red"), " ", text)
    err.print(text, highlight=False, soft_wrap=True)


class _Commands(TyperGroup):
    """The root command: a RestoredrillError from any command ends with its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RestoredrillError as exc:
            report(exc)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Commands,
    help="Prove that backups restore: restore each system into an isolated twin, "
    "check it does its job, time it against its RTO, record the evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
emulate_app = typer.Typer(help="Run field-device emulators on their own (for HMI development).")
stack_app = typer.Typer(help="The image of docker-compose.yml's server and workers, built offline.")
evidence_app = typer.Typer(
    help="The evidence store: check its chain, import spooled runs, sign, export, prune."
)
learn_app = typer.Typer(
    help="Learn twins from the plant: register maps from traffic captures or live PLCs "
    "(read-only), OPC UA address spaces from live servers (read-only).",
    no_args_is_help=True,
)
app.add_typer(emulate_app, name="emulate")
app.add_typer(stack_app, name="stack")
app.add_typer(evidence_app, name="evidence")
app.add_typer(learn_app, name="learn")


class _OnlyOurs(logging.Filter):
    """On the console, keep restoredrill's own warnings and anything critical.

    Prefect reports each failed task with a traceback (a failed restore is a
    verdict here, shown in the table) and its temporary server logs its own
    housekeeping; both still reach the Prefect API and the UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("restoredrill") or record.levelno >= logging.CRITICAL


def quiet_console_logs(verbose: bool) -> None:
    import prefect.main  # noqa: F401 - sets up Prefect's logging first (prefect loads lazily)

    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OnlyOurs) for f in handler.filters):
            handler.addFilter(_OnlyOurs())
