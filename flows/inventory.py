"""The site inventory: what to restore, how it runs, how to check it, in what order.

Loaded from YAML with line numbers kept, so every error names file, line and field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from restoredrill.checks.registry import CheckSpec
from restoredrill.configfile import ConfigFileError, Document, load, problem, shown
from restoredrill.durations import Duration
from restoredrill.errors import InputError
from restoredrill.twins.devices import DeviceSpec
from restoredrill.twins.limits import Limits
from restoredrill.twins.sources import SourceSpec
from restoredrill.twins.spec import Probe, RunSpec

from .alerts import AlertTarget

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


# Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
def _cron(value: str) -> str:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week)."""
    from croniter import croniter

    text = " ".join(str(value).split())
    if text in _CRON_MACROS:
        return text
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(
            f"{value!r} is not a cron expression (5 fields: minute hour day month weekday, "
            "e.g. '0 2 * * *' nightly at 02:00, '30 3 * * sun' weekly, or @daily)"
        )
    return text


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        shown_value = repr(value) if len(value) <= 40 else shown(value)
        raise ValueError(
            f"{shown_value} is not an IANA time zone (e.g. Europe/Berlin, UTC)"
        ) from None
    return value


Cron = Annotated[str, AfterValidator(_cron)]
TimeZone = Annotated[str, AfterValidator(_timezone)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Labels(BaseModel):
    """Reporting labels: ``zone`` and ``role``, plus any of the plant's own."""

    model_config = ConfigDict(extra="allow")

    zone: Literal["ot", "it", "dmz"] | None = Field(None, description="ot, it or dmz")
    role: str | None = Field(None, description="e.g. hmi, scada, historian, mes, erp, plc")

    @model_validator(mode="after")
    def _extras_are_text(self) -> Labels:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str | int | float | bool):
                raise ValueError(f"label {key!r} must be a plain value, not {type(value).__name__}")
        return self

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump(exclude_none=True).items()}


def _subnet(text: str) -> str:
    """A sandbox subnet: a real, private-sized network, not loopback, link-local, ..."""
    from restoredrill.twins.hostnet import unsafe

    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a subnet (use e.g. 10.77.0.0/24): {exc}") from None
    problem = unsafe(net)
    if problem:
        raise ValueError(problem)
    return text


SandboxSubnet = Annotated[str, AfterValidator(_subnet)]


class Sandbox(_Model):
    """Where twins run: the backend and the contained networks of a run."""

    backend: Literal["docker"] = "docker"
    subnets: list[SandboxSubnet] = Field(
        default_factory=lambda: ["10.77.0.0/24"],
        description="contained networks of a run (at most /16 each); production addresses "
        "taken over must lie inside; each keeps two addresses no system claims "
        "(the sandbox's gateway and its anchor)",
    )
    concurrency: int = Field(2, ge=1, le=64, description="systems verified at once within a wave")
    watchdog: float = Field(
        3.0, ge=1.0, description="stop a verification after this many times its RTO"
    )
    limits: Limits = Field(
        default_factory=Limits,
        description="bounds of every twin (memory, cpus, pids, disk, restore, capabilities)",
    )

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        nets = [ipaddress.ip_network(text) for text in value]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"subnets {a} and {b} overlap")
        if not nets:
            raise ValueError("at least one subnet is needed")
        return value


class System(_Model):
    """One system of the plant: its backup, how it runs, how we know it works."""

    name: str = Field(pattern=NAME, description="unique, lower-case: letters, digits, - _ .")
    description: str = ""
    labels: Labels = Field(default_factory=Labels)
    backup: SourceSpec
    run: RunSpec = Field(default_factory=RunSpec)
    ready: Probe | list[Probe] | None = Field(
        None,
        description="how to tell the restored system is up; a list: each in turn (e.g. a "
        "VM's console, then its service)",
    )
    checks: list[CheckSpec] = Field(default_factory=list)
    rto: Duration = Field(description="recovery time objective, e.g. 15m")
    rpo: Duration | None = Field(None, description="maximum age of the backup, e.g. 24h")
    depends_on: list[str] = Field(default_factory=list)
    devices: list[str] = Field(
        default_factory=list, description="emulated field devices this system needs"
    )
    schedule: Cron | None = Field(
        None, description="cron expression overriding the site's, e.g. weekly: 0 2 * * sun"
    )
    alerts: list[AlertTarget] = Field(default_factory=list)


class Site(_Model):
    """A plant (or one area of it): the systems to verify and how."""

    site: str = Field(pattern=NAME, description="the site's name")
    description: str = ""
    sandbox: Sandbox = Field(default_factory=Sandbox)
    evidence: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite in .restoredrill/ beside the site file"
    )
    signing_key: str | None = Field(
        None,
        description="ed25519 private key that signs the evidence (path, relative to this file; "
        "$RESTOREDRILL_SIGNING_KEY overrides it); made by `restoredrill evidence keygen`",
    )
    rto: Duration | None = Field(None, description="site RTO: the critical path's target")
    schedule: Cron | None = Field(
        None, description="cron expression for `restoredrill serve`, e.g. nightly: 0 2 * * *"
    )
    timezone: TimeZone = Field("UTC", description="IANA time zone of the schedules and digests")
    alerts: list[AlertTarget] = Field(default_factory=list)
    devices: list[DeviceSpec] = Field(default_factory=list)
    systems: list[System] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Site:
        """Names are unique: each repeat is an error at its own place, naming the first."""
        errors: list[InitErrorDetails] = []
        for field, items in (("systems", self.systems), ("devices", self.devices)):
            first: dict[str, int] = {}
            for i, item in enumerate(items):
                j = first.setdefault(item.name, i)
                if j != i:
                    error = PydanticCustomError(
                        "duplicate_name",
                        "names must be unique: {field}[{first}] is already named '{name}'",
                        {"field": field, "first": j, "name": item.name},
                    )
                    errors.append({"type": error, "loc": (field, i, "name"), "input": item.name})
        if errors:
            raise ValidationError.from_exception_data("Site", errors)
        return self

    def limits(self, name: str) -> Limits:
        """The bounds system ``name`` runs with: built-in, then the site's, then its own."""
        from restoredrill.twins.limits import effective

        return effective(self.sandbox.limits, self.system(name).run.limits)

    def system(self, name: str) -> System:
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)


class InventoryError(InputError):
    """Inventory problems, each formatted ``file:line: field: what is expected``."""

    headline = ""  # each problem names its file and line

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[InventoryError], tuple[list[str]]]:
        return type(self), (self.problems,)


class LoadedSite:
    """A validated site with where it came from (paths resolve against ``base_dir``)."""

    def __init__(self, site: Site, path: Path) -> None:
        self.site = site
        self.path = path
        self.base_dir = path.parent

    def resolve(self, relative: str | Path) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def load_site(path: str | Path) -> LoadedSite:
    """Read, validate and cross-check a site file; raise InventoryError listing every problem."""
    path = Path(path)
    where = str(path)
    try:
        doc = load(path, ConfigFileError, "the site file")
    except ConfigFileError as exc:
        raise InventoryError([p.one_line() for p in exc.problems]) from None
    if not isinstance(doc.data, dict):
        raise InventoryError(
            [f"{where}:1: the site file must be a mapping with site: and systems:"]
        )
    try:
        site = Site.model_validate(doc.data)
    except ValidationError as exc:
        raise InventoryError([_describe(where, doc, err) for err in exc.errors()]) from None
    problems = [f"{where}:{line}: {msg}" for line, msg in cross_check(site, doc)]
    if problems:
        raise InventoryError(problems)
    return LoadedSite(site, path)


def claimed(site: Site) -> list[str]:
    """Every address the inventory's systems and devices take over in the sandbox."""
    found = [getattr(d, "address", None) for d in site.devices]
    found += [s.run.address for s in site.systems]
    return [str(a) for a in found if a is not None]


def cross_check(site: Site, data: Any) -> list[tuple[int, str]]:
    """Checks across systems and against this host: unknown dependencies and devices,
    cycles, address clashes, room for the sandbox's own addresses, Docker bridges, what
    a VM twin needs (and what only a VM can do)."""
    out: list[tuple[int, str]] = _sandbox_problems(site, data)
    for i, s in enumerate(site.systems):
        out += [(_line(data, loc), f"{_path(loc)}: {msg}") for loc, msg in _vm_problems(i, s)]
    names = {s.name for s in site.systems}
    devices = {d.name for d in site.devices}
    addresses = _Addresses(site, data)
    for i, d in enumerate(site.devices):
        out += addresses.claim(getattr(d, "address", None), f"device {d.name}", ("devices", i))
    for i, s in enumerate(site.systems):
        out += addresses.claim(s.run.address, f"system {s.name}", ("systems", i, "run"))
        out += _unknown(data, i, "depends_on", "system", s.depends_on, names, "")
        out += _unknown(data, i, "devices", "device", s.devices, devices, "none declared")
    if not out:
        cycle = find_cycle({s.name: s.depends_on for s in site.systems})
        if cycle:
            i = [s.name for s in site.systems].index(cycle[0])
            loc = ("systems", i, "depends_on")
            out.append((_line(data, loc), f"{_path(loc)}: dependency cycle: {' -> '.join(cycle)}"))
    return out


class _Addresses:
    """The production addresses taken over in the sandbox, and who took each."""

    def __init__(self, site: Site, data: Any) -> None:
        self.site, self.data = site, data
        self.nets = [ipaddress.ip_network(n) for n in site.sandbox.subnets]
        self.taken: dict[str, str] = {}

    def claim(self, addr: Any, owner: str, where: tuple[Any, ...]) -> list[tuple[int, str]]:
        """``owner`` takes ``addr`` (its ``where`` + ``address`` in the file): the problem,
        if it lies outside the sandbox or is taken already."""
        if addr is None:
            return []
        loc = (*where, "address")
        ip = ipaddress.ip_address(str(addr))
        if not any(ip in n for n in self.nets):
            subnets = ", ".join(self.site.sandbox.subnets)
            why = f"is outside the sandbox subnets ({subnets}); add its subnet to sandbox.subnets"
        elif str(ip) in self.taken:
            why = f"is already the address of {self.taken[str(ip)]}"
        else:
            self.taken[str(ip)] = owner
            return []
        return [(_line(self.data, loc), f"{_path(loc)}: {ip} {why}")]


def _unknown(
    data: Any, i: int, field: str, what: str, given: list[str], known: Iterable[str], none: str
) -> list[tuple[int, str]]:
    """Names in ``systems[i].<field>`` that are not a known ``what``."""
    shown = ", ".join(sorted(known)) or none
    return [
        (
            _line(data, ("systems", i, field, j)),
            f"systems[{i}].{field}[{j}]: unknown {what} {name!r} (known: {shown})",
        )
        for j, name in enumerate(given)
        if name not in known
    ]


VM_CHECKS = {"screenshot", "agent"}
"""Check kinds only a VM twin can take."""
SHELL_CHECKS = {"host", "testinfra"}
"""Check kinds that need a login on a VM twin (run.vm.ssh or run.vm.winrm)."""


def _vm_problems(i: int, system: System) -> list[tuple[tuple[Any, ...], str]]:
    """A disk image boots as a VM: no container fields, its own address, a login for
    host checks, hardware this host has; console, screenshot and agent need a VM."""
    from restoredrill.twins.vm_spec import VMSpec

    at = ("systems", i)
    run = system.run
    if system.backup.kind != "disk_image":
        return _vm_only(at, system)
    out: list[tuple[tuple[Any, ...], str]] = [
        (
            (*at, "run", field),
            "a disk image boots as a VM: this field applies to container twins only",
        )
        for field in run.container_fields()
    ]
    if run.address is None:
        out.append(
            (
                (*at, "run", "address"),
                "is required for a VM: the address its restored OS configures (its "
                "production address)",
            )
        )
    vm = run.vm or VMSpec()
    if vm.access is None:
        for j, check in enumerate(system.checks):
            if check.kind in SHELL_CHECKS:
                out.append(
                    (
                        (*at, "checks", j, "kind"),
                        f"{check.kind} checks on a VM log in over the network: give "
                        "run.vm.ssh (or run.vm.winrm) with the account and where its "
                        "password or key is",
                    )
                )
    out += [((*at, "run", "vm", key), msg) for key, msg in vm_host_problems(vm)]
    return out


def _vm_only(at: tuple[Any, ...], system: System) -> list[tuple[tuple[Any, ...], str]]:
    """What a container twin asks for that only a VM twin has: run.vm, a console probe,
    screenshot and agent checks."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if system.run.vm is not None:
        out.append(
            (
                (*at, "run", "vm"),
                "boots a disk image: it needs backup.kind: disk_image "
                f"(this backup is {system.backup.kind}, run as a container)",
            )
        )
    probes = system.ready if isinstance(system.ready, list) else [system.ready]
    for k, probe in enumerate(probes):
        if probe is not None and probe.kind == "console":
            where = (*at, "ready", k) if isinstance(system.ready, list) else (*at, "ready")
            out.append(((*where, "kind"), "a console probe needs a VM twin (disk_image)"))
    for j, check in enumerate(system.checks):
        if check.kind in VM_CHECKS:
            out.append(
                (
                    (*at, "checks", j, "kind"),
                    f"{check.kind} checks need a VM twin (backup.kind: disk_image)",
                )
            )
    return out


def vm_host_problems(vm: Any) -> list[tuple[str, str]]:
    """What this host cannot give the VM: memory, UEFI firmware, KVM (when demanded)."""
    from restoredrill.twins.qemu import VMError, check_memory, choose_accel, firmware_files

    out = []
    for key, probe in (
        ("memory", lambda: check_memory(vm, "vm")),
        ("firmware", lambda: firmware_files(vm.firmware)),
        ("accel", lambda: vm.accel == "kvm" and choose_accel("kvm", "vm")),
    ):
        try:
            probe()
        except VMError as exc:
            out.append((key, str(exc).removeprefix("vm: ")))
    return out


def _sandbox_problems(site: Site, data: Any) -> list[tuple[int, str]]:
    """Sandbox subnets against this host's Docker bridges, and room in each for the
    two addresses the sandbox itself needs (its gateway and its anchor)."""
    from restoredrill.twins.hostnet import bridge_clash

    out: list[tuple[int, str]] = []
    addresses = [ipaddress.ip_address(a) for a in claimed(site)]
    for i, text in enumerate(site.sandbox.subnets):
        net = ipaddress.ip_network(text)
        loc = ("sandbox", "subnets", i)
        clash = bridge_clash(net)
        if clash:
            out.append(
                (
                    _line(data, loc),
                    f"sandbox.subnets[{i}]: {net} overlaps the Docker bridge {clash} of this "
                    "host: give the sandbox a subnet no Docker network uses "
                    "(`ip route`, `docker network ls` show them)",
                )
            )
        hosts = net.num_addresses - (2 if net.version == 4 else 1)
        taken = len({a for a in addresses if a in net})
        if hosts - taken < 2:
            out.append(
                (
                    _line(data, loc),
                    f"sandbox.subnets[{i}]: {net} needs two addresses no system or device "
                    f"claims (the sandbox's gateway and its anchor), and {taken} of its "
                    f"{hosts} are claimed: use a larger subnet",
                )
            )
    return out


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, c, a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def waves(graph: dict[str, list[str]], only: Iterable[str] | None = None) -> list[list[str]]:
    """Dependency waves: each system comes after everything it depends on.

    With ``only``, the named systems plus everything they depend on are planned.
    """
    wanted = set(graph)
    if only is not None:
        wanted = set()
        todo = list(only)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(graph[name])
    done: set[str] = set()
    plan: list[list[str]] = []
    order = [n for n in graph if n in wanted]
    while len(done) < len(wanted):
        wave = [n for n in order if n not in done and all(d in done for d in graph[n])]
        if not wave:
            raise InputError(f"dependency cycle: {find_cycle(graph)}")
        plan.append(wave)
        done.update(wave)
    return plan


# --- error formatting -------------------------------------------------------------------


def _line(doc: Document, loc: Sequence[Any]) -> int:
    """The 1-based line of the deepest node of ``loc`` found in the site file."""
    return doc.line(loc)


def _walk(doc: Document | None, loc: Sequence[Any]) -> list[tuple[Any, bool]]:
    """Pair each part of a pydantic location with whether it is a place in the file.

    Discriminated unions put the member's tag (e.g. ``restic``) in the location; it is
    not a key of the file, so it is left out of the field path and line lookup.
    """
    out: list[tuple[Any, bool]] = []
    node = doc.data if doc is not None else None
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                out.append((part, True))
            else:
                out.append((part, last))
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            out.append((part, True))
        else:
            out.append((part, not isinstance(part, str) or not part.startswith("function-")))
            node = None
    return out


def _path(loc: Sequence[Any], doc: Document | None = None) -> str:
    out = ""
    for part, real in _walk(doc, loc):
        if not real:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(shown_path: str, doc: Document, err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(doc, loc)
        msg = f"unknown key {loc[-1]!r}" + (f" (expected one of: {allowed})" if allowed else "")
    elif kind == "missing":
        msg = "is required"
    elif kind == "union_tag_invalid":
        msg = f"unknown kind {err['input'].get('kind')!r}; expected one of: " + ", ".join(
            re.findall(r"'([^']+)'", err["ctx"]["expected_tags"])
        )
    elif kind == "union_tag_not_found":
        msg = "needs a kind: " + ", ".join(re.findall(r"'([^']+)'", err["ctx"]["discriminator"]))
    elif kind == "duplicate_name":
        first = (loc[0], err["ctx"]["first"], "name")
        msg = (
            f"{shown(err['input'])} is already the name of {_path(first[:2], doc)} "
            f"(line {_line(doc, first)}); names must be unique"
        )
    else:
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = err.get("input")
        if kind not in {"value_error", "assertion_error"} and not isinstance(value, dict | list):
            msg = f"{shown(value)}: {msg}"
    return problem(shown_path, _line(doc, loc), _path(loc, doc), msg)


def _allowed_keys(doc: Document, loc: Sequence[Any]) -> str:
    """The keys the model holding ``loc[-1]`` accepts (for the error message)."""
    from typing import get_args

    def members(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in get_args(annotation) for m in members(arg)]

    candidates: list[type[BaseModel]] = [Site]
    node = doc.data
    for part, real in _walk(doc, loc)[:-1]:
        if isinstance(part, int):
            node = node[part] if real and isinstance(node, list) else None
            if isinstance(node, dict) and "kind" in node:
                candidates = [m for m in candidates if _kind_of(m) == node["kind"]] or candidates
            continue
        if not real:  # a union tag: narrow to the member whose kind it names
            candidates = [m for m in candidates if _kind_of(m) == part] or candidates
            continue
        fields = [m.model_fields[part] for m in candidates if part in m.model_fields]
        if not fields:
            return ""
        candidates = members(fields[0].annotation)
        node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "kind" in node:
            candidates = [m for m in candidates if _kind_of(m) == node["kind"]] or candidates
    if len(candidates) != 1:
        return ""
    return ", ".join(candidates[0].model_fields)


def _kind_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return field.default if field is not None else None
