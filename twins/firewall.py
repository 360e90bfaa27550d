"""Host firewall rules that keep a sandbox's bridge off the host and off other networks.

The second layer of containment (the first: the host has no address on a sandbox
bridge). One chain of our own, ``RESTOREDRILL``, is jumped from INPUT, FORWARD and
OUTPUT (iptables and ip6tables). Per sandbox bridge it holds two rules, each with a
comment naming the run and its owner process:

- ``-i BR ! -o BR -j DROP``: nothing from the bridge enters the host (INPUT) or is
  forwarded to another interface (FORWARD);
- ``! -i BR -o BR -j DROP``: nothing from the host (OUTPUT) or another interface
  (FORWARD) goes into the bridge.

Traffic between twins of one bridge stays allowed. Rules are added before the bridge
exists (its name is chosen by us) and removed when the sandbox closes; rules of a dead
owner are removed by :func:`reap`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import TwinError
from .owner import Owner

CHAIN = "RESTOREDRILL"
HOOKS = ("INPUT", "FORWARD", "OUTPUT")
TAG = "restoredrill"
_COMMENT = re.compile(r"restoredrill run=(\S+) owner=(\S+)")
_LOCK = threading.Lock()


class FirewallError(TwinError):
    """Containment could not be set up (or removed) in the host firewall."""


@dataclass(frozen=True)
class Rule:
    tool: str
    bridge: str
    run: str
    owner: Owner | None
    args: tuple[str, ...]
    """The rule as ``iptables -S`` prints it, without ``-A CHAIN``."""


def comment(run_id: str, owner: Owner) -> str:
    return f"{TAG} run={run_id} owner={owner.token()}"


def tools() -> list[str]:
    """iptables, and ip6tables where the kernel has IPv6."""
    return ["iptables", "ip6tables"] if Path("/proc/net/if_inet6").exists() else ["iptables"]


def _run(tool: str, *args: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FirewallError(
            f"containment cannot be set up: {tool} is not installed (apt-get install iptables); "
            "restoredrill adds host firewall rules that keep twins off the host, and refuses "
            "to start twins without them"
        )
    done = subprocess.run(
        [path, "-w", "10", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise FirewallError(
            f"containment cannot be set up: `{tool} {' '.join(args)}` failed: "
            f"{said[-1] if said else f'exit {done.returncode}'} (the host firewall rules that "
            "keep twins off the host need root, or CAP_NET_ADMIN)"
        )
    return done.stdout


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One process at a time changes our chain (threads of this one included)."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with _LOCK, open(folder / ".restoredrill-firewall.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _ensure_chain(tool: str) -> None:
    if f"-N {CHAIN}" not in _run(tool, "-S").splitlines():
        with contextlib.suppress(FirewallError):  # created meanwhile by another process
            _run(tool, "-N", CHAIN)
    for hook in HOOKS:
        if f"-A {hook} -j {CHAIN}" not in _run(tool, "-S", hook).splitlines():
            _run(tool, "-I", hook, "1", "-j", CHAIN)


def _specs(bridge: str, text: str) -> list[list[str]]:
    mark = ["-m", "comment", "--comment", text, "-j", "DROP"]
    return [["-i", bridge, "!", "-o", bridge, *mark], ["!", "-i", bridge, "-o", bridge, *mark]]


def isolate(bridge: str, run_id: str, owner: Owner | None = None) -> None:
    """Add the rules of ``bridge`` (before it exists) for run ``run_id``."""
    text = comment(run_id, owner or Owner.me())
    with _locked():
        for tool in tools():
            _ensure_chain(tool)
            for spec in _specs(bridge, text):
                try:
                    _run(tool, "-C", CHAIN, *spec)
                except FirewallError:
                    _run(tool, "-A", CHAIN, *spec)


def rules() -> list[Rule]:
    """Our rules in the host firewall (none if the chain does not exist)."""
    found = []
    for tool in tools():
        try:
            listing = _run(tool, "-S", CHAIN)
        except FirewallError:
            continue
        for line in listing.splitlines():
            args = shlex.split(line)
            if args[:2] != ["-A", CHAIN]:
                continue
            args = args[2:]
            bridge = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-i", "-o")), "")
            text = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--comment"), "")
            m = _COMMENT.search(text)
            if m:
                found.append(
                    Rule(tool, bridge, m.group(1), Owner.from_token(m.group(2)), tuple(args))
                )
    return found


def _delete(rule: Rule) -> None:
    with contextlib.suppress(FirewallError):  # already gone
        _run(rule.tool, "-D", CHAIN, *rule.args)


def release(bridges: Collection[str]) -> None:
    """Remove the rules of ``bridges``."""
    with _locked():
        for rule in rules():
            if rule.bridge in bridges:
                _delete(rule)


def reap(
    runs: Collection[str] | None = None, alive: Callable[[str], bool] = lambda run_id: False
) -> list[str]:
    """Remove rules of dead runs: their owner is gone, or cannot be judged here and
    their bridge no longer exists. Runs ``alive`` says are kept; ``runs`` limits the sweep."""
    removed = []
    with _locked():
        for rule in rules():
            if (runs is not None and rule.run not in runs) or alive(rule.run):
                continue
            state = rule.owner.alive() if rule.owner else None
            gone = not os.path.exists(f"/sys/class/net/{rule.bridge}")
            if state is False or (state is None and gone):
                _delete(rule)
                removed.append(f"{rule.tool} rule for {rule.bridge} (run {rule.run})")
    return sorted(set(removed))


def run_rules(run_id: str) -> list[Rule]:
    """The rules of one run (e.g. to prove none is left)."""
    return [r for r in rules() if r.run == run_id]
