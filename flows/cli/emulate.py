"""``restoredrill emulate plc|scada`` and ``stack build``: tools used on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import console, emulate_app, stack_app


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


@stack_app.command("build")
def stack_build(
    base: Annotated[
        str | None,
        typer.Option(help="local base image to build FROM (default: made with mmdebstrap)"),
    ] = None,
) -> None:
    """Build (or reuse) restoredrill/stack:local from this installation: no registry."""
    from restoredrill.twins.stack_image import STACK_BASE, build_on_local_engine

    tag = build_on_local_engine(base or STACK_BASE)
    console.print(f"{tag} (also tagged restoredrill/stack:local)", highlight=False)
