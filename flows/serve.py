"""Unattended verification: the site's schedules as Prefect deployments.

- ``restoredrill serve SITE``: this process serves the deployments (Prefect's runner;
  offline, on a local Prefect server it starts unless ``PREFECT_API_URL`` names one) and
  runs each scheduled verification when it is due.
- ``restoredrill deploy SITE``: registers the same deployments on the Prefect server of
  ``PREFECT_API_URL``, in a work pool whose workers run them (docker-compose.yml);
  each system's verification there is its own flow run (scale-out, see dispatch.py).

A site's ``schedule`` covers every system without a ``schedule`` of its own; each other
schedule gets a deployment of its own for the systems that share it (what they depend
on is verified with them, as in ``restoredrill run --system``). Digest times of alert
targets become digest deployments.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from .alerts import AlertConfig, Delivery, daily_cron, plan_digest, send
from .inventory import LoadedSite, load_site
from .prefect_server import PrefectServerError, prefect_api, require_configured

POOL = "restoredrill"


@dataclass
class Plan:
    """One deployment of the site: a name, a cron schedule (or none) and its systems."""

    name: str
    cron: str | None
    systems: list[str] | None = None
    """None: every system of the site."""
    digest: str | None = None
    """HH:MM of a digest deployment (then systems is unused)."""


def plan(loaded: LoadedSite) -> list[Plan]:
    """The deployments a site needs: the site's schedule, each override, each digest."""
    site = loaded.site
    groups: dict[str | None, list[str]] = {}
    for system in site.systems:
        groups.setdefault(system.schedule or site.schedule, []).append(system.name)
    plans: list[Plan] = []
    default = groups.pop(site.schedule, [])
    if default or not groups:
        everyone = len(default) == len(site.systems)
        plans.append(Plan(site.site, site.schedule, None if everyone else default))
    for cron, names in groups.items():
        tail = names[0] + (f"-and-{len(names) - 1}-more" if len(names) > 1 else "")
        plans.append(Plan(f"{site.site}-{tail}", cron, names))
    config = AlertConfig.from_site(site, loaded.base_dir)
    for at in sorted({t.digest for _, t in config.fields() if t.digest}):
        plans.append(Plan(f"{site.site}-digest-{at.replace(':', '')}", daily_cron(at), digest=at))
    return plans


@flow(name="send-digest", log_prints=False, persist_result=False)
def send_digest(site_path: str, at: str) -> list[Delivery]:
    """The daily digest of the targets whose ``digest:`` is ``at`` (HH:MM)."""
    from .evidence import EvidenceStore, default_url

    loaded = load_site(site_path)
    config = AlertConfig.from_site(loaded.site, loaded.base_dir)
    with EvidenceStore(loaded.site.evidence or default_url(loaded.path)) as store:
        runs = store.runs(site=loaded.site.site, limit=500)
    alerts = [
        a
        for a in plan_digest(runs, config, site=loaded.site.site, now=datetime.now(UTC))
        if a.target.digest == at
    ]
    return send(alerts)


def deployments(
    loaded: LoadedSite,
    *,
    dispatch: bool = False,
    work_pool: str | None = None,
) -> list[Any]:
    """The site's Prefect deployments (``RunnerDeployment``), with their schedules.

    ``dispatch``: verify-site runs send each system to the ``verify-system``
    deployment of the same name (added to the list) instead of running it in-process.
    """
    from prefect.deployments.runner import EntrypointType

    from .verify import verify_system

    site = loaded.site
    path = str(loaded.path)
    common: dict[str, Any] = {
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "tags": ["restoredrill", f"site:{site.site}"],
    }
    if work_pool:
        common["work_pool_name"] = work_pool
    system_deployment = f"verify-system/{site.site}" if dispatch else None
    out = [_deployment(p, loaded, common, system_deployment) for p in plan(loaded)]
    if dispatch:
        out.append(
            verify_system.to_deployment(
                site.site,
                parameters={"site_path": path},
                description=f"one system of site {site.site}, dispatched by its verify-site run",
                **common,
            )
        )
    return out


def _deployment(p: Plan, loaded: LoadedSite, common: dict[str, Any], dispatch: str | None) -> Any:
    """The deployment of one plan: its daily digest, or a verify-site run of its systems
    (``dispatch``: each system sent to that deployment)."""
    from prefect.schedules import Cron

    from .verify import verify_site

    site, path = loaded.site, str(loaded.path)
    schedules = [Cron(p.cron, timezone=site.timezone)] if p.cron else None
    if p.digest:
        return send_digest.to_deployment(
            p.name,
            schedules=schedules,
            parameters={"site_path": path, "at": p.digest},
            description=f"daily digest of site {site.site} at {p.digest} {site.timezone}",
            **common,
        )
    parameters: dict[str, Any] = {"site_path": path, "trigger": "schedule"}
    if p.systems is not None:
        parameters["systems"] = p.systems
    if dispatch:
        parameters["dispatch"] = dispatch
    what = ", ".join(p.systems) if p.systems else "all systems"
    return verify_site.to_deployment(
        p.name,
        schedules=schedules,
        parameters=parameters,
        description=f"verify {what} of site {site.site}"
        + (f" on {p.cron} ({site.timezone})" if p.cron else " (on demand)"),
        **common,
    )


def serve(
    site_path: Path, *, limit: int | None = None, port: int = 4200, console: Any = None
) -> None:
    """Serve the site's deployments from this process until Ctrl-C.

    Prefect's temporary in-process server runs no scheduler; without a
    ``PREFECT_API_URL``, a local Prefect server (SQLite in ``PREFECT_HOME``, UI on
    127.0.0.1:``port``) runs for as long as this does, and ``restoredrill run`` of the
    same ``PREFECT_HOME`` uses it meanwhile (see prefect_server.py).
    """
    from prefect import serve as prefect_serve

    loaded = load_site(site_path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(metrics_endpoint(loaded))
        stack.enter_context(prefect_api(console, serve=True, port=port))
        prefect_serve(*deployments(loaded), limit=limit, print_starting_message=False)


def deploy(site_path: Path, *, work_pool: str = POOL) -> list[str]:
    """Register the site's deployments (with dispatch) on the server; returns their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    require_configured("to deploy to")
    loaded = load_site(site_path)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
    names = []
    for d in deployments(loaded, dispatch=True, work_pool=work_pool):
        d.apply(work_pool_name=work_pool)
        names.append(f"{d.flow_name}/{d.name}")
    return names


METRICS_ENV = "RESTOREDRILL_METRICS_LISTEN"
METRICS_DEFAULT = "127.0.0.1:9847"


@contextlib.contextmanager
def metrics_endpoint(loaded: LoadedSite) -> Iterator[str | None]:
    """``/metrics`` (Prometheus text format, read from the evidence store at each scrape)
    on ``$RESTOREDRILL_METRICS_LISTEN`` (HOST:PORT, default 127.0.0.1:9847; ``off``)."""
    import sys

    from prometheus_client import start_http_server

    from .evidence import default_url
    from .metrics import registry

    listen = os.environ.get(METRICS_ENV, METRICS_DEFAULT).strip()
    if listen.lower() in {"", "off", "no", "0"}:
        yield None
        return
    host, _, port = listen.rpartition(":")
    try:
        server, thread = start_http_server(
            int(port),
            addr=host.strip("[]") or "127.0.0.1",
            registry=registry(
                loaded.site.evidence or default_url(loaded.path),
                loaded.site.site,
                [s.name for s in loaded.site.systems],
            ),
        )
    except ValueError:
        raise PrefectServerError(
            f"${METRICS_ENV}={listen!r} is not HOST:PORT (e.g. 127.0.0.1:9847), nor off"
        ) from None
    except OSError as exc:  # the verifications matter more than their metrics: go on
        print(
            f"warning: metrics not served: cannot listen on {listen} ({exc.strerror or exc}); "
            f"set ${METRICS_ENV} to a free HOST:PORT",
            file=sys.stderr,
        )
        yield None
        return
    url = f"http://{listen}/metrics"
    print(f"metrics: {url}", file=sys.stderr)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
