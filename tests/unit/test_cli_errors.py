"""The command line's one place where an error becomes an exit code (flows/cli/app.py),
and the error root every project error derives from (restoredrill/errors.py)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from restoredrill.errors import ExitCode, InputError, Interrupted, RestoredrillError
from restoredrill.flows.cli.app import _Commands
from restoredrill.flows.inventory import InventoryError

commands = typer.Typer(cls=_Commands)
sub = typer.Typer()
commands.add_typer(sub, name="sub")


@commands.command()
def fails(kind: str) -> None:
    errors: dict[str, RestoredrillError] = {
        "plain": RestoredrillError("the stack image could not be built"),
        "input": InputError("--ranges 'x': write TABLE:FIRST-LAST"),
        "inventory": InventoryError(["site.yaml:3: rto: is required", "site.yaml:9: x: y"]),
        "spooled": RestoredrillError("the run's evidence was not recorded", ExitCode.NOT_RECORDED),
        "interrupted": Interrupted("interrupted: the run's twins and networks were removed"),
        "markup": InputError("[bold]not markup[/bold] stays text"),
    }
    raise errors[kind]


@sub.command("deep")
def deep() -> None:
    raise InputError("from a command group")


@commands.command()
def verdict() -> None:
    raise typer.Exit(1)  # a verdict is an exit code of its own, not an error


@pytest.mark.parametrize(
    ("kind", "code", "shown"),
    [
        ("plain", 1, "error: the stack image could not be built\n"),
        ("input", 2, "error: --ranges 'x': write TABLE:FIRST-LAST\n"),
        ("inventory", 2, "site.yaml:3: rto: is required\nsite.yaml:9: x: y\n"),
        ("spooled", 3, "error: the run's evidence was not recorded\n"),
        ("interrupted", 130, "interrupted: the run's twins and networks were removed\n"),
        ("markup", 2, "error: [bold]not markup[/bold] stays text\n"),
    ],
)
def test_each_error_ends_with_its_exit_code_and_message(kind: str, code: int, shown: str) -> None:
    done = CliRunner().invoke(commands, ["fails", kind])
    assert (done.exit_code, done.stderr, done.stdout) == (code, shown, "")
    assert done.exception is None or isinstance(done.exception, SystemExit)  # no traceback


def test_errors_of_command_groups_and_verdicts() -> None:
    deep_done = CliRunner().invoke(commands, ["sub", "deep"])
    assert (deep_done.exit_code, deep_done.stderr) == (2, "error: from a command group\n")
    assert CliRunner().invoke(commands, ["verdict"]).exit_code == 1


def test_the_real_command_line_uses_the_mapping() -> None:
    from restoredrill.flows.cli import app

    assert isinstance(typer.main.get_command(app), _Commands)


def test_project_errors_derive_from_the_root_with_their_exit_codes() -> None:
    from restoredrill.checks.base import CheckError
    from restoredrill.configfile import ConfigFileError
    from restoredrill.flows.alerts import AlertConfigError
    from restoredrill.flows.dispatch import DispatchError
    from restoredrill.flows.evidence import EvidenceError
    from restoredrill.flows.lifecycle import StepFailed, WatchdogExpired
    from restoredrill.flows.prefect_server import PrefectServerError
    from restoredrill.flows.spool import EvidenceSpooled, SpoolError
    from restoredrill.twins.base import TwinError
    from restoredrill.twins.learn import LearnError
    from restoredrill.twins.plc import PlcError
    from restoredrill.twins.scada import ScadaError
    from restoredrill.twins.sources.base import BackupError

    codes = {
        ConfigFileError: 2, InventoryError: 2, AlertConfigError: 2, EvidenceError: 2,
        PrefectServerError: 2, TwinError: 2, PlcError: 2, ScadaError: 2, BackupError: 2,
        LearnError: 2, EvidenceSpooled: 3, DispatchError: 1, SpoolError: 1, CheckError: 1,
        StepFailed: 1, WatchdogExpired: 1,
    }  # fmt: skip
    assert {cls: cls.exit_code for cls in codes} == codes
    assert all(issubclass(cls, RestoredrillError) for cls in codes)
    assert issubclass(InputError, ValueError)  # usable inside a pydantic validator


def test_errors_made_with_their_own_arguments_survive_pickling() -> None:
    from restoredrill.flows.lifecycle import StepFailed
    from restoredrill.twins.netns import NamespaceError

    for exc in (
        StepFailed("restore", "archive truncated"),
        InventoryError(["a:1: b", "a:2: c"]),
        NamespaceError(1, "setns: Operation not permitted"),
        RestoredrillError("x", 7),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), str(back), back.exit_code) == (type(exc), str(exc), exc.exit_code)


def test_errors_of_signed_evidence_reports_regress_and_vm_logins() -> None:
    from restoredrill.flows.attestation import BundleError
    from restoredrill.flows.candidate import RegressInputError
    from restoredrill.flows.export import ExportRefused
    from restoredrill.flows.report_html import ReportError
    from restoredrill.flows.signing import SigningError
    from restoredrill.twins.access import AccessError

    codes = {
        BundleError: 2, RegressInputError: 2, ReportError: 2, SigningError: 2, AccessError: 2,
        ExportRefused: 1,
    }  # fmt: skip
    assert {cls: cls.exit_code for cls in codes} == codes
    assert all(issubclass(cls, RestoredrillError) for cls in codes)
    refused = CliRunner().invoke(commands, ["raises", "refused"])
    assert (refused.exit_code, refused.stderr) == (1, "not exported: the chain does not verify\n")
    bad = CliRunner().invoke(commands, ["raises", "regress"])
    assert (bad.exit_code, bad.stderr) == (2, "site.yaml:3: x\nmap.yaml:1: y\n")


@commands.command()
def raises(kind: str) -> None:
    from restoredrill.flows.candidate import RegressInputError
    from restoredrill.flows.export import ExportRefused

    if kind == "refused":
        raise ExportRefused("the chain does not verify")
    raise RegressInputError(["site.yaml:3: x", "map.yaml:1: y"])


def _every_command(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group
            found += _every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_shows_its_help() -> None:
    """Help text is Rich markup: a bracket such as ``[/path]`` must not break it."""
    from restoredrill.flows.cli import app

    root = typer.main.get_command(app)
    paths = _every_command(root)
    assert ("learn", "opcua") in paths and ("evidence", "export") in paths and ("regress",) in paths
    failed = {}
    for path in paths:
        done = CliRunner().invoke(app, [*path, "--help"])
        if done.exit_code != 0:
            failed[" ".join(path)] = repr(done.exception)
    assert failed == {}
