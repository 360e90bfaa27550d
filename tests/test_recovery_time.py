"""Recovery time is the system's own steps' time: restoredrill's time between them is
recorded apart (``framework_s``) and never makes an RTO verdict (issue 14, item 4)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_sources import busybox_tree, tar_tree

from restoredrill.flows.results import Verdict

SUBNET = "172.30.14.0/24"
RTO_S = 8
PAUSE_S = 4.0
"""Paused outside the steps before each of start, ready and checks: 12 s in all, past the
8 s RTO, while the steps themselves take about a second."""

SITE = f"""\
site: nprefect-framework-time
sandbox: {{subnets: [{SUBNET}], concurrency: 1}}
evidence: sqlite:///{{root}}/evidence.db
systems:
  - name: web
    backup: {{kind: rootfs_tar, directory: backups, pattern: "web-*.tar"}}
    run: {{command: [httpd, -f, -p, "8080", -h, /etc], address: 172.30.14.10}}
    ready: {{kind: tcp, port: 8080, timeout: 60s}}
    checks:
      - {{kind: tcp, port: 8080}}
    rto: {RTO_S}s
"""


@pytest.fixture
def site(tmp_path: Path, docker_client) -> Path:
    backups = tmp_path / "backups"
    backups.mkdir()
    tar_tree(busybox_tree(tmp_path / "rootfs"), backups / "web-1.tar")
    shutil.rmtree(tmp_path / "rootfs")
    path = tmp_path / "site.yaml"
    path.write_text(SITE.replace("{root}", str(tmp_path)))
    return path


def test_framework_time_between_steps_is_recorded_apart_and_never_judged(site: Path) -> None:
    """A slow progress listener (the CLI's live display is one) holds the system between
    its steps past its RTO: its own steps fit, so it passes, and the evidence holds both
    figures. Before, recovery time was the wall time from restore to checks done:
    ``rto_exceeded``."""
    from restoredrill.flows.evidence import EvidenceStore
    from restoredrill.flows.progress import SystemProgress, subscribe
    from restoredrill.flows.verify import verify_site

    paused: list[str] = []

    def slow_display(progress: SystemProgress) -> None:
        if progress.system == "web" and progress.step in ("start", "ready", "checks"):
            paused.append(progress.step)
            time.sleep(PAUSE_S)

    unsubscribe = subscribe(slow_display)
    try:
        record = verify_site(str(site))
    finally:
        unsubscribe()
    [web] = record.systems
    assert paused == ["start", "ready", "checks"]
    own = round(
        sum(s.duration_s for s in web.steps if s.name in ("restore", "start", "ready", "checks")), 3
    )
    assert web.verdict is Verdict.PASS, web.reason
    assert web.recovery_time_s == own < RTO_S
    assert web.framework_s is not None and web.framework_s >= 3 * PAUSE_S
    span = (web.finished_at - web.started_at).total_seconds()
    assert web.recovery_time_s + web.framework_s > RTO_S  # the wall time would not have fit
    assert abs(span - own - web.framework_s - web.steps[0].duration_s) < 0.5
    assert record.site_recovery_time_s == web.recovery_time_s
    with EvidenceStore(f"sqlite:///{site.parent}/evidence.db") as store:
        stored = store.load(record.run_id).systems[0]
        assert (stored.recovery_time_s, stored.framework_s) == (own, web.framework_s)
        assert store.verify().ok


def test_each_step_is_a_task_run_named_after_it_and_its_system(site: Path) -> None:
    """The UI shows restore, start, ready, checks and teardown of each system as task runs
    of the site's flow run, named ``step · system`` (no flow run per system)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    from restoredrill.flows.verify import verify_site

    state = verify_site(str(site), return_state=True)
    assert state.result().systems[0].verdict is Verdict.PASS
    flow_run = state.state_details.flow_run_id
    wanted = {f"{step} · web" for step in ("restore", "start", "ready", "checks", "teardown")}
    with get_client(sync_client=True) as client:
        names: set[str] = set()
        deadline = time.monotonic() + 60  # task runs reach the server as events
        while not wanted <= names and time.monotonic() < deadline:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run]))
            )
            names = {t.name for t in found}
            time.sleep(0.5)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run])
            )
        )
    assert wanted <= names, names
    assert not any(n.startswith("locate") for n in names)
    assert children == []
