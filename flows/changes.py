"""What a change to a site is, and which systems and devices it affects.

A site uses files: the site file, each device's register map, node list and NodeSets,
each system's backup (an archive in a folder of backups, a restic repository), its
``run.files``, volumes and testinfra files. A changed file affects whoever uses it; a
change in the site file affects the systems and devices whose entries changed (their
description, labels, schedule and alerts aside: they do not change a run), and the
sandbox affects every system. A changed device affects the systems that use it (and
the SCADA devices bound to it); every system that depends on an affected one runs too.

Paths are POSIX paths relative to a tree's root (the site's folder, or its git work
tree), so the baseline's and the candidate's can be compared. Paths outside the root
cannot be changed by a candidate and are not listed.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .inventory import LoadedSite, Site

QUIET = {"description", "labels", "schedule", "alerts"}
"""Fields of a system that do not change what a run does."""


@dataclass(frozen=True)
class Use:
    """One file (or folder) a site uses, and who uses it."""

    path: str
    what: str
    systems: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    folder: bool = False
    """Every file under ``path`` is used (``pattern``: only those matching it)."""
    pattern: str | None = None

    def covers(self, path: str) -> bool:
        if path == self.path:
            return True
        if not self.folder or not path.startswith(self.path.rstrip("/") + "/"):
            return False
        return self.pattern is None or fnmatch.fnmatchcase(PurePosixPath(path).name, self.pattern)


@dataclass(frozen=True)
class ChangedFile:
    """A file that differs between the baseline and the candidate."""

    path: str
    status: str
    """``modified``, ``added`` (only in the candidate) or ``deleted`` (only in the baseline)."""
    baseline_sha256: str | None = None
    candidate_sha256: str | None = None


@dataclass
class Impact:
    """What a change affects: systems and devices with the reasons, and what it does not."""

    changed: list[ChangedFile]
    systems: dict[str, list[str]] = field(default_factory=dict)
    devices: dict[str, list[str]] = field(default_factory=dict)
    dependents: dict[str, list[str]] = field(default_factory=dict)
    """Systems run because they depend on an affected one."""
    unused: list[ChangedFile] = field(default_factory=list)
    """Changed files neither configuration uses: listed, ignored."""

    def add(self, where: dict[str, list[str]], name: str, why: str) -> None:
        reasons = where.setdefault(name, [])
        if why not in reasons:
            reasons.append(why)

    @property
    def nothing(self) -> bool:
        return not self.systems and not self.devices

    def to_run(self, site: Site) -> list[str]:
        """The affected systems and their dependents that ``site`` has, in its order."""
        wanted = set(self.systems) | set(self.dependents)
        return [s.name for s in site.systems if s.name in wanted]

    def devices_alone(self, site: Site) -> list[str]:
        """Affected devices of ``site`` that no system to run uses (snapshotted on their own)."""
        used = {d for s in site.systems if s.name in self.to_run(site) for d in s.devices}
        return [d.name for d in site.devices if d.name in self.devices and d.name not in used]

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed_files": [f.__dict__ for f in self.changed],
            "unused_files": [f.path for f in self.unused],
            "systems": self.systems,
            "devices": self.devices,
            "dependents": self.dependents,
        }


def relative(root: Path, base_dir: Path, value: str | Path) -> str | None:
    """``value`` (as the site names it) relative to ``root``, lexically; None if outside."""
    text = os.path.normpath(os.path.join(base_dir, str(value)))
    rel = os.path.relpath(text, root)
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        return None
    return PurePosixPath(rel).as_posix()


@dataclass(frozen=True)
class Named:
    """A path as the site names it, and who uses it."""

    value: str
    what: str
    folder: bool | None = None
    """None: a folder if it is one on disk."""
    pattern: str | None = None
    systems: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()


def named(loaded: LoadedSite) -> list[Named]:
    """Every path the site names (URLs left out), with its users."""
    out: list[Named] = []

    def use(value: Any, what: str, **kw: Any) -> None:
        if value is not None and not (isinstance(value, str) and ":" in value.split("/")[0]):
            out.append(Named(str(value), what, **kw))

    for d in loaded.site.devices:
        who: dict[str, Any] = {"devices": frozenset({d.name})}
        if d.kind == "plc":
            use(d.map, f"the register map of device {d.name}", folder=False, **who)
        else:
            for i, path in enumerate(d.nodesets):
                use(path, f"nodesets[{i}] of device {d.name}", folder=False, **who)
            use(d.nodes, f"the node list of device {d.name}", folder=False, **who)
    for s in loaded.site.systems:
        who = {"systems": frozenset({s.name})}
        b = s.backup
        for key in ("path", "password_file"):
            use(
                getattr(b, key, None), f"the backup of system {s.name} ({key})", folder=False, **who
            )
        if getattr(b, "directory", None):
            use(
                b.directory,
                f"the backups of system {s.name}",
                folder=True,
                pattern=b.pattern,
                **who,
            )
        if getattr(b, "repository", None):
            use(b.repository, f"the restic repository of system {s.name}", folder=True, **who)
        for loc in getattr(b, "disks", None) or []:
            use(loc.path or loc.directory, f"a disk of system {s.name}",
                folder=bool(loc.directory), pattern=loc.pattern if loc.directory else None, **who)  # fmt: skip
        for i, f in enumerate(s.run.files):
            use(f.source, f"run.files[{i}] of system {s.name}", **who)
        for target, host in s.run.volumes.items():
            if host.startswith((".", "/", "~")) or "/" in host:
                use(host.removesuffix(":ro").removesuffix(":rw"), f"volume {target} of system {s.name}", **who)  # fmt: skip
        for i, check in enumerate(s.checks):
            if check.kind == "testinfra":
                use(check.file, f"checks[{i}] (testinfra) of system {s.name}", folder=False, **who)
    return out


def reach(loaded: LoadedSite) -> list[str]:
    """The paths the site names relative to its folder (``../shared/map.yaml`` too)."""
    return [n.value for n in named(loaded) if not Path(n.value).is_absolute()]


def uses(loaded: LoadedSite, root: Path) -> list[Use]:
    """Every file under ``root`` that ``loaded`` uses, with its users."""
    base = loaded.base_dir.absolute()
    out: list[Use] = []
    site_rel = relative(root, base, loaded.path.name)
    if site_rel is not None:
        out.append(Use(site_rel, "the site file"))
    for n in named(loaded):
        rel = relative(root, base, n.value)
        if rel is not None:
            folder = (base / n.value).is_dir() if n.folder is None else n.folder
            out.append(Use(rel, n.what, n.systems, n.devices, folder, n.pattern))
    return out


def impact(
    baseline: LoadedSite,
    candidate: LoadedSite,
    changed: Iterable[ChangedFile],
    base_root: Path,
    cand_root: Path,
) -> Impact:
    """What the change from ``baseline`` to ``candidate`` affects."""
    changed = list(changed)
    found = Impact(changed)
    used = uses(baseline, base_root) + uses(candidate, cand_root)
    site_files = {u.path for u in used if u.what == "the site file"}
    for f in changed:
        users = [u for u in used if u.covers(f.path) and u.what != "the site file"]
        if not users and f.path not in site_files:
            found.unused.append(f)
        for u in users:
            for name in u.systems:
                found.add(found.systems, name, f"{f.path} ({f.status}): {u.what}")
            for name in u.devices:
                found.add(found.devices, name, f"{f.path} ({f.status}): {u.what}")
    shown = next(iter(sorted(site_files)), "the site file")
    _site_file(found, baseline.site, candidate.site, shown)
    _through_devices(found, baseline.site, candidate.site)
    _dependents(found, baseline.site, candidate.site)
    return found


def _dump(model: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude=exclude)


def _site_file(found: Impact, base: Site, cand: Site, shown: str) -> None:
    if _dump(base.sandbox) != _dump(cand.sandbox):
        for s in {*(x.name for x in base.systems), *(x.name for x in cand.systems)}:
            found.add(found.systems, s, f"{shown}: sandbox changed")
    before = {s.name: s for s in base.systems}
    after = {s.name: s for s in cand.systems}
    for name in before.keys() | after.keys():
        if name not in after:
            found.add(found.systems, name, f"{shown}: system {name} removed")
        elif name not in before:
            found.add(found.systems, name, f"{shown}: system {name} added")
        else:
            fields = _differing(before[name], after[name], QUIET)
            if fields:
                found.add(
                    found.systems, name, f"{shown}: system {name}: {', '.join(fields)} changed"
                )
    devices_before = {d.name: d for d in base.devices}
    devices_after = {d.name: d for d in cand.devices}
    for name in devices_before.keys() | devices_after.keys():
        if name not in devices_after:
            found.add(found.devices, name, f"{shown}: device {name} removed")
        elif name not in devices_before:
            found.add(found.devices, name, f"{shown}: device {name} added")
        else:
            fields = _differing(devices_before[name], devices_after[name], set())
            if fields:
                found.add(
                    found.devices, name, f"{shown}: device {name}: {', '.join(fields)} changed"
                )


def _differing(a: Any, b: Any, quiet: set[str]) -> list[str]:
    """The top-level fields (one level deeper for ``run``) that differ between two models."""
    x, y = _dump(a, quiet), _dump(b, quiet)
    out = []
    for key in x.keys() | y.keys():
        if x.get(key) == y.get(key):
            continue
        if isinstance(x.get(key), dict) and isinstance(y.get(key), dict) and key == "run":
            out += [
                f"run.{k}"
                for k in sorted(x[key].keys() | y[key].keys())
                if x[key].get(k) != y[key].get(k)
            ]
        else:
            out.append(key)
    return sorted(out)


def _through_devices(found: Impact, *sites: Site) -> None:
    """SCADA devices bound to an affected PLC, then every system using an affected device."""
    for site in sites:
        for d in site.devices:
            if d.kind == "scada":
                for plc in d.plc_names():
                    if plc in found.devices:
                        found.add(found.devices, d.name, f"bound to device {plc}")
    for site in sites:
        for s in site.systems:
            for name in s.devices:
                if name in found.devices:
                    found.add(found.systems, s.name, f"uses device {name}")


def _dependents(found: Impact, *sites: Site) -> None:
    """Every system that depends (directly or not) on an affected one, in either site."""
    todo = list(found.systems)
    while todo:
        name = todo.pop()
        for site in sites:
            for s in site.systems:
                if name in s.depends_on and s.name not in found.systems:
                    if s.name not in found.dependents:
                        todo.append(s.name)
                    found.add(found.dependents, s.name, f"depends on {name}")
