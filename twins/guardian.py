"""The guardian of a run: removes everything of the run once its owner dies unclosed.

A run killed with ``kill -9`` runs no teardown. So every sandbox that opens a run
starts a guardian, a small process in its own session::

    python -m restoredrill.twins.guardian --run ID --pid PID --start TICKS

It waits for the owner process to end. A normal close stops the guardian first; if
the owner dies instead, the guardian removes the run's containers, networks, volumes,
images, firewall rules and scratch folders, then exits. (The next run's reaper is the
second line, for a guardian killed too.) Where the owner led its own process group (a
command started from a shell), the guardian also ends what is left of that group,
e.g. the run's temporary Prefect server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from .owner import Owner, process_start

POLL = 0.5
"""Seconds between looks at the owner where pidfd_open is unavailable."""


def start(run_id: str, owner: Owner | None = None) -> subprocess.Popen[bytes]:
    """Start the guardian of ``run_id`` for ``owner`` (this process by default)."""
    owner = owner or Owner.me()
    command = [sys.executable, "-m", "restoredrill.twins.guardian", "--run", run_id]
    command += ["--pid", str(owner.pid), "--start", owner.start or "-"]
    with contextlib.suppress(OSError):
        if os.getpgid(owner.pid) == owner.pid:
            command.append("--group")
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or kill of the run's process group spares it
        close_fds=True,
    )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a guardian (the run closed normally) and collect it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_for_exit(owner: Owner) -> None:
    """Return once ``owner`` has ended."""
    try:
        fd = os.pidfd_open(owner.pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # an old kernel: look every POLL seconds
        while owner.alive() is not False:
            time.sleep(POLL)
        return
    try:
        if owner.start is not None and process_start(owner.pid) != owner.start:
            return  # the pid already belongs to another process
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(None):
            pass
    finally:
        os.close(fd)


def remove_run(client: Any, run_id: str) -> list[str]:
    """Remove everything of ``run_id``, whoever created it: Docker objects, firewall
    rules, scratch folders. Returns what was removed."""
    import shutil

    from . import firewall, scratch
    from .docker import sweep

    removed = sweep(client, run_id)
    rules = firewall.run_rules(run_id)
    with contextlib.suppress(firewall.FirewallError):
        firewall.release({rule.bridge for rule in rules})
        removed += [f"{rule.tool} rule for {rule.bridge}" for rule in rules]
    for folder in scratch.folders(run_id):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(f"scratch folder {folder}")
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="restoredrill.twins.guardian")
    parser.add_argument("--run", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--start", default="-")
    parser.add_argument(
        "--group", action="store_true", help="the owner leads its process group: end it too"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import docker  # before the wait: the cleanup must not wait for imports

    owner = Owner(args.pid, None if args.start == "-" else args.start, Owner.me().host)
    wait_for_exit(owner)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the owner is gone: finish the job
    client = docker.from_env(timeout=120)
    remove_run(client, args.run)
    if args.group:
        end_group(args.pid)
    return 0


def end_group(pgid: int, grace: float = 3.0) -> None:
    """End what is left of the dead owner's process group: TERM, then KILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
