"""``http``: an HTTP endpoint of the twin answers with the expected status, text and JSON fields.

Example (a ``checks:`` entry of a system in site.yaml)::

    - {kind: http, name: tank level, port: 8080, path: /api/tags/LT-101/latest, json: {tag: LT-101, value: 72.5}}
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, model_validator

from .base import CheckError, CheckResult, CheckSpecBase, SandboxGuard, Target, error_result, result

MAX_BODY = 1 << 20
SNIPPET = 200
MISSING = "(missing)"


class HttpCheck(CheckSpecBase):
    """One GET request (no redirects followed, no proxies) and assertions on its answer.

    Either ``port`` (+ ``path``, ``scheme``, ``host``) or ``url``, where ``{address}``
    stands for the twin's sandbox address: ``url: "http://{address}:8080/health"``.
    ``json`` maps dotted paths into the body (``db.rows``, ``items.0.name``) to values.
    """

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    kind: Literal["http"] = "http"
    port: int | None = Field(None, ge=1, le=65535)
    path: str = Field("/", pattern=r"^/", description="path and query, e.g. /health?deep=1")
    scheme: Literal["http", "https"] = "http"
    host: str | None = Field(None, description="an IP address; default: the twin's address")
    url: str | None = Field(
        None, description='instead of port/path: e.g. "http://{address}:8080/health"'
    )
    headers: dict[str, str] = Field(default_factory=dict, description="request headers")
    verify_tls: bool = Field(
        False,
        description="verify the certificate (twins answer on addresses their certificates rarely name)",
    )
    status: int | None = Field(200, ge=100, le=599, description="expected status; null: any")
    contains: str | list[str] | None = Field(None, description="literal text (each) in the body")
    json_fields: dict[str, Any] | None = Field(
        None, alias="json", description='dotted path → expected value, e.g. {"db.rows": 42}'
    )

    # Validators raise ValueError, pydantic's contract: it becomes that field's error (file, line).
    @model_validator(mode="after")
    def _where(self) -> HttpCheck:
        if (self.url is None) == (self.port is None):
            raise ValueError("an http check needs either port (with path, scheme, host) or url")
        if self.url is not None:
            clash = {"path", "scheme", "host"} & self.model_fields_set
            if clash:
                raise ValueError(
                    f"url already says {', '.join(sorted(clash))}: give one or the other"
                )
            if urlsplit(self.url).scheme not in ("http", "https"):
                raise ValueError(f"{self.url!r} is not an http:// or https:// URL")
        return self

    def target_url(self, address: str | None) -> str:
        """The URL to request, the twin's address filled in."""
        shown = f"[{address}]" if address and ":" in address else address
        if self.url is not None:
            if "{address}" in self.url and not address:
                raise CheckError("the target has no address to put into {address}")
            return self.url.replace("{address}", shown or "")
        host = self.host or address
        if not host:
            raise CheckError("the target has no address: give the http check a host")
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def default_name(self) -> str:
        return f"http {self.url or self.target_url('{address}')}"


Spec = HttpCheck
"""The spec of this check kind (the registry's convention)."""


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Request the URL within ``spec.timeout`` and judge status, text and JSON fields; never raises."""
    started = time.perf_counter()
    label = spec.label()
    try:
        url = spec.target_url(target.address)
        label = spec.name or f"http {url}"
        parts = urlsplit(url)
        if not parts.hostname:
            raise CheckError(f"{url!r} names no host")
        guard.allow(parts.hostname)
        try:
            status, body = fetch(url, spec.headers, spec.timeout, spec.verify_tls)
        except (OSError, http.client.HTTPException) as exc:
            return [
                result(
                    spec,
                    False,
                    expected="a response",
                    observed=_failure(exc),
                    started=started,
                    name=label,
                    message=f"{type(exc).__name__}: {exc}",
                )
            ]
        return judge(spec, label, status, body, started)
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started, name=label)]


def fetch(url: str, headers: dict[str, str], timeout: float, verify: bool) -> tuple[int, bytes]:
    """GET ``url`` directly (no proxy, no redirects); the status and up to 1 MiB of body."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise CheckError(f"{url!r} names no host")
    deadline = time.monotonic() + timeout
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        chunks, size = [], 0
        while size < MAX_BODY:
            if time.monotonic() > deadline:
                raise TimeoutError(f"body not read within {timeout:g}s")
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return response.status, b"".join(chunks)[:MAX_BODY]
    finally:
        conn.close()


def judge(spec: Spec, label: str, status: int, body: bytes, started: float) -> list[CheckResult]:
    """One result per assertion: status, each ``contains``, each JSON field."""
    text = body.decode("utf-8", "replace")
    snippet = _short(text.strip(), SNIPPET) or "(empty body)"
    results = []
    if spec.status is not None:
        results.append(
            result(
                spec,
                status == spec.status,
                expected=spec.status,
                observed=status,
                started=started,
                name=f"{label} status {spec.status}",
                message="" if status == spec.status else f"body: {snippet}",
            )
        )
    contains = [spec.contains] if isinstance(spec.contains, str) else spec.contains or []
    for needle in contains:
        ok = needle in text
        results.append(
            result(
                spec,
                ok,
                expected=needle,
                observed="found" if ok else snippet,
                started=started,
                name=f'{label} contains "{needle}"',
            )
        )
    if spec.json_fields:
        try:
            doc: Any = json.loads(text)
        except ValueError:
            doc = None
            problem = f"body is not JSON: {snippet}"
        for path, expected in spec.json_fields.items():
            observed = lookup(doc, path) if doc is not None else problem
            results.append(
                result(
                    spec,
                    same(expected, observed),
                    expected=expected,
                    observed=observed,
                    started=started,
                    name=f"{label} json {path} == {json.dumps(expected)}",
                )
            )
    if not results:  # nothing asserted but an answer
        results.append(
            result(spec, True, expected="a response", observed=status, started=started, name=label)
        )
    return results


def lookup(doc: Any, path: str) -> Any:
    """``db.rows`` → ``doc["db"]["rows"]``; digits index lists; ``MISSING`` if absent."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return MISSING
    return node


def same(expected: Any, observed: Any) -> bool:
    """Equality that keeps ``true`` and ``1`` apart."""
    if isinstance(expected, bool) or isinstance(observed, bool):
        return type(expected) is type(observed) and expected == observed
    return expected == observed


def _failure(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"no answer ({type(exc).__name__})"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
