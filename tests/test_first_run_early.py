"""`restoredrill run` starts its local Prefect server before its own checks of the site
(so the server's start overlaps them): when those checks find bad input, the run still
ends with exit 2 and a clear message, and the server it started is gone."""

from __future__ import annotations

from test_first_run import (
    assert_no_traceback,
    cli_env,
    gone,
    run_cli,
    servers_of,
)

SITE = """\
site: nprefect-early
sandbox: {{subnets: [10.249.191.0/24]}}
evidence: sqlite:///{root}/evidence.db
alerts:
  - url_env: NPREFECT_MISSING_ALERT_URL
systems:
  - name: web
    backup: {{kind: rootfs_tar, path: {root}/rootfs.tar.gz}}
    run: {{command: [/bin/busybox, sleep, "60"]}}
    rto: 5m
"""


def test_bad_input_after_the_early_server_start_leaves_no_server(tmp_path) -> None:
    """The alert target's secret is missing (found after the site loads, when the server
    already starts): exit 2 naming the field, and no server process of the run left."""
    home = tmp_path / "prefect-home"
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(root=tmp_path))
    done = run_cli(["run", str(site)], cli_env(home))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "alerts[0].url_env" in done.stderr, done.stderr[-3000:]
    assert_no_traceback(done.stdout, done.stderr)
    log = (home / "restoredrill-server.log").read_text()
    assert ("\n" + log).count("\n--- ") == 1, log  # one server started, before the checks
    assert gone(list(done.servers)) == [] and servers_of(home) == []

