"""Ownership of what a run creates, and the decision to reap it (backend-neutral).

Everything a run creates carries labels naming the run and the owning process (pid,
its start time, host). A run whose owners on this host are all gone is dead, and what
it left may be removed; a run that cannot be judged here (its owner on another host,
or none recorded) is reaped only past a maximum age. Backends list their objects as
:class:`Found` and remove what :func:`judge` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from .owner import Owner

RUN = "restoredrill.run"
SYSTEM = "restoredrill.system"
MANAGED = "restoredrill.managed"
ROLE = "restoredrill.role"
PID = "restoredrill.pid"
PID_START = "restoredrill.pidstart"
HOST = "restoredrill.host"
SUBNET = "restoredrill.subnet"


def owner_labels() -> dict[str, str]:
    """Labels naming this process as the owner of what it creates."""
    me = Owner.me()
    labels = {PID: str(me.pid), HOST: me.host}
    if me.start:
        labels[PID_START] = me.start
    return labels


def run_labels(run_id: str) -> dict[str, str]:
    """The labels of anything created for ``run_id`` by this process."""
    return {RUN: run_id, MANAGED: "1", **owner_labels()}


def owner_of(labels: Mapping[str, str]) -> Owner | None:
    """The owner process ``labels`` name (``None`` if they name none)."""
    host, pid_text = labels.get(HOST), labels.get(PID)
    if not host or not pid_text or not pid_text.isdigit():
        return None
    return Owner(int(pid_text), labels.get(PID_START) or None, host)


def owner_alive(labels: Mapping[str, str]) -> bool | None:
    """Whether the process named by ``labels`` still runs: ``None`` if it cannot be told
    (no owner recorded, or an owner on another host)."""
    owner = owner_of(labels)
    return None if owner is None else owner.alive()


@dataclass
class Found:
    """One object of some run, as a backend lists it."""

    kind: str
    name: str
    labels: Mapping[str, str]
    created: float | None
    """Epoch seconds (``None``: unknown)."""
    remove: Callable[[], None]


def judge(
    found: Iterable[Found],
    max_age: timedelta | float | None = None,
    alive: Callable[[str], bool] | None = None,
    runs: Collection[str] | None = None,
    now: float | None = None,
) -> list[Found]:
    """What of ``found`` belongs to dead runs and may go, in the order given.

    A run is alive when ``alive(run_id)`` says so or any of its objects names an owner
    that still runs; dead when every owner it names is gone on this host; otherwise it
    cannot be judged here, and its objects go only when older than ``max_age``.
    ``runs`` limits the decision to those run ids.
    """
    found = list(found)
    limit = max_age.total_seconds() if isinstance(max_age, timedelta) else max_age
    owners: dict[str, list[bool | None]] = {}
    for item in found:
        states = owners.setdefault(item.labels.get(RUN, ""), [])
        if item.labels.get(PID) or item.labels.get(HOST):
            states.append(owner_alive(item.labels))

    def run_alive(run: str) -> bool | None:
        if run and alive is not None and alive(run):
            return True
        states = owners.get(run, [])
        if True in states:
            return True
        if states and all(s is False for s in states):
            return False
        return None

    verdicts = {run: run_alive(run) for run in owners if runs is None or run in runs}
    now = time.time() if now is None else now
    doomed = []
    for item in found:
        run = item.labels.get(RUN, "")
        if run not in verdicts:
            continue
        state = verdicts[run]
        old = limit is not None and item.created is not None and now - item.created > limit
        if state is True or (state is None and not old):
            continue
        doomed.append(item)
    return doomed
