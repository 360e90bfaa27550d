"""``opcua``: an OPC UA endpoint answers with the given security, and serves the right data.

One connection per spec: connect (security + credentials), browse paths exist, values
compare (exact, range, changing, written and read back; read in one batched Read request
and judged within their windows, see ``checks.expect``), variable counts under folders,
subscriptions deliver updates.

Example (a ``checks:`` entry of a system in site.yaml)::

    - kind: opcua
      name: gateway serves live PLC data
      port: 4840
      path: gateway/
      security: basic256sha256      # or none
      username: operator
      password_env: SCADA_PASSWORD
      browse: [Objects/2:Line1/2:TankLevel]
      values:
        - {node: Objects/2:Line1/2:TankLevel, min: 40, max: 60, changes: true}
        - {node: Objects/2:Line1/2:LevelSetpoint, write: 63.5, equals: 63.5, settle: 10s}
        - {node: "ns=2;s=Line1.Site", equals: demo plant}
      count: [{folder: Objects/2:Line1, min: 3}]
      subscribe: [{node: Objects/2:Line1/2:OutletFlow, within: 5s, updates: 2}]
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from restoredrill.durations import Duration

from .base import CheckError, CheckResult, SandboxGuard, Target, error_result, result
from .expect import Expectation, Sampling, results, watch
from .modbus import run_sync

CREDENTIAL_ERRORS = ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid")


class OpcuaValue(Expectation):
    """A variable's value: compared, and optionally written first."""

    node: str = Field(description="NodeId (ns=2;s=X) or browse path (Objects/2:Line1/Level)")
    name: str | None = None


class OpcuaCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str = Field(description="NodeId or browse path of a folder/object")
    equals: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    recursive: bool = Field(False, description="count variables in sub-folders/objects too")


class OpcuaSubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    within: Duration = Field(timedelta(seconds=5), description="updates must arrive within this")
    updates: int = Field(1, ge=1, description="data changes needed after the initial value")
    interval: Duration = Field(timedelta(milliseconds=100), description="publishing interval")


class OpcuaCheck(Sampling):
    """Check one OPC UA endpoint over one session."""

    kind: Literal["opcua"] = "opcua"
    host: str | None = Field(None, description="an IP address; default: the target's address")
    port: int = Field(4840, ge=1, le=65535)
    path: str = Field("", description="endpoint path after the port, e.g. freeopcua/server/")
    security: Literal["none", "basic256sha256"] = "none"
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    cert_dir: str | None = Field(None, description="where the client certificate is made and kept")
    browse: list[str] = Field(default_factory=list, description="browse paths that must exist")
    values: list[OpcuaValue] = Field(default_factory=list)
    count: list[OpcuaCount] = Field(default_factory=list)
    subscribe: list[OpcuaSubscribe] = Field(default_factory=list)

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _check(self) -> OpcuaCheck:
        if bool(self.username) != bool(self.password_env):
            raise ValueError("give username and password_env together")
        return self

    def default_name(self) -> str:
        return f"opcua {self.host or '{address}'}:{self.port}"


Spec = OpcuaCheck


def run(spec: OpcuaCheck, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Run every part of the spec over one session; never raises, never hangs."""
    started = time.perf_counter()
    try:
        host = spec.host or target.address
        if not host:
            raise CheckError(f"{target.name} has no address: give the opcua check a host")
        if not spec.name:
            spec = spec.model_copy(update={"name": f"opcua {_hostport(host)}:{spec.port}"})
        guard.allow(host)
        password = None
        if spec.password_env:
            password = os.environ.get(spec.password_env)
            if password is None:
                raise CheckError(f"the password variable {spec.password_env} is not set")
        limit = (
            spec.timeout * 3
            + spec.longest_window(spec.values)
            + sum(s.within.total_seconds() for s in spec.subscribe)
        )
        return run_sync(lambda: asyncio.wait_for(_check(spec, host, password, started), limit))
    except TimeoutError:
        return [error_result(spec, f"no answer within {spec.timeout:g}s", started)]
    except Exception as exc:  # noqa: BLE001 - a check reports, never raises
        return [error_result(spec, _why(exc), started)]


def _hostport(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _why(exc: BaseException) -> str:
    if isinstance(exc, CheckError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    if any(code in text for code in CREDENTIAL_ERRORS):
        return (
            f"wrong credentials: the server rejected the username/password ({type(exc).__name__})"
        )
    if "No matching endpoints" in text:
        policy = text.rsplit("#", 1)[-1]
        return f"the server offers no endpoint with this security (asked for {policy})"
    return text


async def _check(
    spec: OpcuaCheck, host: str, password: str | None, started: float
) -> list[CheckResult]:
    from asyncua import Client

    from restoredrill.twins.opcua_client import secure_client

    url = f"opc.tcp://{_hostport(host)}:{spec.port}/{spec.path.lstrip('/')}"
    client = Client(url, timeout=spec.timeout)
    client.session_timeout = 60_000
    if spec.username:
        client.set_user(spec.username)
        client.set_password(password or "")
    try:
        if spec.security == "basic256sha256":
            await asyncio.wait_for(secure_client(client, "check", spec.cert_dir), spec.timeout)
        await asyncio.wait_for(client.connect(), spec.timeout)
    except TimeoutError:
        raise CheckError(
            f"{url}: no OPC UA session within {spec.timeout:g}s ({spec.security})"
        ) from None
    except OSError as exc:
        raise CheckError(f"{url} is unreachable ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - names the cause (credentials, security) in words
        with _quiet():
            await client.disconnect()
        raise CheckError(f"{url}: {_why(exc)}") from None
    try:
        out = [
            result(
                spec,
                True,
                expected={"security": spec.security, "user": spec.username or "anonymous"},
                observed="session open",
                started=started,
                name=f"{spec.label()}: connect",
            )
        ]
        out += await _browse(spec, client, started)
        out += await _values(spec, client, started)
        out += await _counts(spec, client, started)
        out += await _subscriptions(spec, client, started)
        return out
    finally:
        with _quiet():
            await asyncio.wait_for(client.disconnect(), spec.timeout)


class _quiet:
    """Suppress any error (used around disconnects, which may fail on a dead peer)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> bool:
        return True


async def _browse(spec: OpcuaCheck, client: Any, started: float) -> list[CheckResult]:
    from restoredrill.twins.opcua_client import resolve_node

    out = []
    cache: dict = {}
    for path in spec.browse:
        try:
            node = await resolve_node(client, path, cache=cache)
            ok, observed, message = True, node.nodeid.to_string(), ""
        except KeyError as exc:
            ok, observed, message = False, None, str(exc.args[0])
        out.append(
            result(
                spec,
                ok,
                expected="exists",
                observed=observed,
                started=started,
                message=message,
                name=f"{spec.label()}: browse {path}",
            )
        )
    return out


async def _values(spec: OpcuaCheck, client: Any, started: float) -> list[CheckResult]:
    """Write what is to be written, then read (batched) and judge every value."""
    from restoredrill.twins.opcua_client import resolve_node

    if not spec.values:
        return []
    problems: dict[int, str] = {}
    nodes: dict[int, Any] = {}
    cache: dict = {}
    for i, item in enumerate(spec.values):
        try:
            nodes[i] = await resolve_node(client, item.node, cache=cache, verify=False)
        except KeyError as exc:
            problems[i] = str(exc.args[0])
    for i, item in enumerate(spec.values):
        if item.write is not None and i in nodes:
            problem = await _write(nodes[i], item.write)
            if problem:
                problems[i] = f"write refused: {problem}"

    async def read(indexes: list[int]) -> tuple[dict[int, Any], dict[int, str]]:
        return await _read(client, spec, [(i, nodes[i]) for i in indexes])

    wanted = [i for i in nodes if i not in problems]
    seen, failures = await watch(spec, spec.values, wanted, read)
    named = [(f"{spec.label()}: {item.name or item.node}", item) for item in spec.values]
    return results(spec, named, seen, problems | failures, started)


async def _write(node: Any, value: Any) -> str | None:
    """Write ``value`` as the variable's own type; the server's refusal, if any."""
    from asyncua import ua

    from restoredrill.twins.opcua_client import coerce

    try:
        vtype = await node.read_data_type_as_variant_type()
        await node.write_value(ua.DataValue(ua.Variant(coerce(value, vtype), vtype)))
    except Exception as exc:  # noqa: BLE001 - the server's refusal is the finding
        return _status(exc)
    return None


async def _read(
    client: Any, spec: OpcuaCheck, nodes: list[tuple[int, Any]]
) -> tuple[dict[int, Any], dict[int, str]]:
    """Values of ``nodes`` in one Read request: (plain value by index, problem by index)."""
    found: dict[int, Any] = {}
    problems: dict[int, str] = {}
    datavalues = await client.read_attributes([node for _, node in nodes])
    for (i, _), dv in zip(nodes, datavalues, strict=True):
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            problems[i] = f"{spec.values[i].node}: {dv.StatusCode.name}" + (
                " (no such node)" if dv.StatusCode.name == "BadNodeIdUnknown" else ""
            )
        else:
            found[i] = _plain(dv.Value.Value if dv.Value is not None else None)
    return found, problems


async def _counts(spec: OpcuaCheck, client: Any, started: float) -> list[CheckResult]:
    from restoredrill.twins.opcua_client import resolve_node

    out = []
    for item in spec.count:
        name = f"{spec.label()}: variables under {item.folder}"
        expected = {
            k: v
            for k, v in item.model_dump().items()
            if k in ("equals", "min", "max") and v is not None
        }
        try:
            folder = await resolve_node(client, item.folder)
        except KeyError as exc:
            out.append(
                result(
                    spec,
                    False,
                    expected=expected,
                    observed=None,
                    started=started,
                    message=str(exc.args[0]),
                    name=name,
                )
            )
            continue
        total = await _variables_under(client, folder, item.recursive)
        ok = (
            (item.equals is None or total == item.equals)
            and (item.min is None or total >= item.min)
            and (item.max is None or total <= item.max)
        )
        out.append(
            result(
                spec,
                ok,
                expected=expected or "any",
                observed=total,
                started=started,
                message="" if ok else f"{total} variables",
                name=name,
            )
        )
    return out


async def _variables_under(client: Any, folder: Any, recursive: bool) -> int:
    """How many variables ``folder`` holds (in sub-folders and objects too, if ``recursive``)."""
    from asyncua import ua

    total, todo, seen = 0, [folder], set()
    while todo:
        refs = await todo.pop().get_references(
            ua.ObjectIds.HierarchicalReferences, ua.BrowseDirection.Forward, includesubtypes=True
        )
        for ref in refs:
            if ref.NodeClass == ua.NodeClass.Variable:
                total += 1
            elif recursive and ref.NodeClass == ua.NodeClass.Object and ref.NodeId not in seen:
                seen.add(ref.NodeId)
                todo.append(client.get_node(ref.NodeId))
    return total


class _Updates:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.event = asyncio.Event()
        self.wanted = 1

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.values.append(value)
        if len(self.values) > self.wanted:
            self.event.set()


async def _subscriptions(spec: OpcuaCheck, client: Any, started: float) -> list[CheckResult]:
    from restoredrill.twins.opcua_client import resolve_node

    out = []
    for item in spec.subscribe:
        name = f"{spec.label()}: subscription {item.node}"
        expected = {"updates": item.updates, "within": f"{item.within.total_seconds():g}s"}
        try:
            node = await resolve_node(client, item.node)
        except KeyError as exc:
            out.append(
                result(
                    spec,
                    False,
                    expected=expected,
                    observed=None,
                    started=started,
                    message=str(exc.args[0]),
                    name=name,
                )
            )
            continue
        handler = _Updates()
        handler.wanted = item.updates
        sub = await client.create_subscription(item.interval.total_seconds() * 1000, handler)
        try:
            await sub.subscribe_data_change(node)
            with _quiet():
                await asyncio.wait_for(handler.event.wait(), item.within.total_seconds())
        finally:
            with _quiet():
                await sub.delete()
        got = max(0, len(handler.values) - 1)  # the first notification is the current value
        ok = got >= item.updates
        observed = {"updates": got, "last": _plain(handler.values[-1]) if handler.values else None}
        out.append(
            result(
                spec,
                ok,
                expected=expected,
                observed=observed,
                started=started,
                message="" if ok else f"{got} update(s) in {item.within.total_seconds():g}s",
                name=name,
            )
        )
    return out


def _plain(value: Any) -> Any:
    """Make an observed value JSON-friendly for evidence."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _status(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in ("BadUserAccessDenied", "BadNotWritable"):
        return f"{name} (the variable is not writable)"
    return name if name.startswith("Bad") else f"{name}: {exc}"
