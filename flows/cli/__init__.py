"""The ``restoredrill`` command line (Typer + Rich), one module per group of commands.

Commands parse their options and call; an error is a
:class:`~restoredrill.errors.RestoredrillError` that ``app.py`` turns into its exit code in
one place: 0 everything passed, 1 a system did not pass (or a command failed), 2 bad input
or the run could not start (inventory, engine, evidence URL), 3 the run finished but its
evidence could not be recorded (database read-only, locked, damaged or unreachable): the
table, ``--json`` and the alerts still give every verdict, the record was spooled to a file
the message names, and the next run that can write the store appends it to the chain (or
``restoredrill evidence import --spool``). 3 takes precedence over 1. 130: interrupted.

    app.py       the Typer apps, the consoles, the error → exit code mapping
    run.py       validate, schema, run
    regress.py   regress
    schedule.py  serve, deploy
    evidence.py  history, evidence verify|import
    demo.py      demo
    report.py    report, metrics
    signed.py    evidence keygen|rotate|export|prune
    emulate.py   emulate plc|scada, stack build
    learn.py     learn modbus|opcua
    stores.py    which evidence store and signing key a command means (the store used last)
"""

from __future__ import annotations

from .app import app

# isort: off
from . import run, regress, schedule, evidence, demo, report, signed, emulate, learn  # --help order
# isort: on

__all__ = ["app", "main"]
_COMMANDS = (run, regress, schedule, evidence, demo, report, signed, emulate, learn)
"""Importing a module registers its commands on ``app`` (in this order in ``--help``)."""


def main() -> None:
    app()
