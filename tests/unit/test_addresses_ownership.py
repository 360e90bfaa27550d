"""The backend-neutral parts of the twin contract: the address book, and which runs are dead."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

from restoredrill.twins.addresses import AddressBook
from restoredrill.twins.base import TwinError
from restoredrill.twins.ownership import (
    HOST,
    PID,
    RUN,
    Found,
    judge,
    owner_alive,
    owner_labels,
    run_labels,
)

NET = ipaddress.ip_network("10.237.0.0/29")


def test_addresses_taken_picked_and_released() -> None:
    book = AddressBook(reserved=["10.237.0.6"])
    assert book.pick(NET, "the gateway") == ipaddress.ip_address("10.237.0.5")  # .6 is claimed
    index, ip = book.place("hmi", "10.237.0.2", [NET])
    assert (index, str(ip)) == (0, "10.237.0.2")
    with pytest.raises(TwinError, match=r"mes: address 10.237.0.2 is already taken by twin 'hmi'"):
        book.place("mes", "10.237.0.2", [NET])
    with pytest.raises(TwinError, match=r"outside every sandbox subnet \(10.237.0.0/29\)"):
        book.place("erp", "192.0.2.1", [NET])
    with pytest.raises(TwinError, match="not a host address"):
        book.place("erp", "10.237.0.7", [NET])
    _, free = book.place("aux", None, [NET])  # the highest free one no system claims
    assert str(free) == "10.237.0.5"
    book.release("10.237.0.2", "twin 'other'")  # not its holder: kept
    assert book.holder(ipaddress.ip_address("10.237.0.2")) == "twin 'hmi'"
    book.release("10.237.0.2", "twin 'hmi'")
    assert book.place("mes", "10.237.0.2", [NET])[1] == ip
    for n in (1, 3, 4):
        book.place(f"t{n}", f"10.237.0.{n}", [NET])
    with pytest.raises(TwinError, match="no free address left"):
        book.place("late", None, [NET])


def dead_pid() -> int:
    """A pid that runs nothing now (its process was started and reaped)."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def found(run: str, **labels: str) -> Found:
    return Found("container", run, {RUN: run, **labels}, created=1000.0, remove=lambda: None)


def test_dead_runs_go_live_ones_stay_others_only_when_old() -> None:
    me = owner_labels()
    assert me[PID] == str(os.getpid()) and owner_alive(me) is True
    assert run_labels("r1") | me == run_labels("r1")
    here = socket.gethostname()
    items = [
        found("alive", **me),
        found("dead", **{PID: str(dead_pid()), HOST: here}),
        found("elsewhere", **{PID: "1", HOST: "another-host"}),
        found("unowned"),
        found("told-alive", **{PID: str(dead_pid()), HOST: here}),
    ]
    told = lambda run: run == "told-alive"  # noqa: E731
    assert [i.name for i in judge(items, alive=told, now=2000.0)] == ["dead"]
    old = judge(items, max_age=500, alive=told, now=2000.0)  # older than 500 s
    assert [i.name for i in old] == ["dead", "elsewhere", "unowned"]
    assert [i.name for i in judge(items, max_age=500, runs={"unowned"}, now=2000.0)] == ["unowned"]
