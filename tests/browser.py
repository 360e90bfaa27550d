"""A real headless Chromium (Debian's package) driven over the DevTools protocol: open a
page, record every request it makes, evaluate script, take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import missing

from restoredrill.flows.report_html import chromium, offline_flags


@dataclass
class Page:
    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for (Network.requestWillBeSent)."""
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


def render(
    url: str, expressions: dict[str, str], *, width: int = 1280, timeout: float = 120
) -> Page:
    """Load ``url`` in headless Chromium with no network, evaluate ``expressions`` (name:
    JavaScript), take a full-page screenshot."""
    from websockets.sync.client import connect

    binary = chromium()
    if binary is None:
        missing("Chromium (apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="restoredrill-cdp-"))
    proc = subprocess.Popen(
        [binary, *offline_flags(str(profile)), "--remote-debugging-port=0",
         f"--window-size={width},1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) == 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout) as ws:
            return _drive(ws, url, expressions, deadline)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(ws: Any, url: str, expressions: dict[str, str], deadline: float) -> Page:
    ids = itertools.count(1)
    page = Page()
    events: list[dict[str, Any]] = []

    def call(method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        n = next(ids)
        message: dict[str, Any] = {"id": n, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        ws.send(json.dumps(message))
        while True:
            reply = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 1)))
            if reply.get("id") == n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            events.append(reply)

    target = call("Target.createTarget", url="about:blank")["targetId"]
    session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    call("Network.enable", session)
    call("Page.enable", session)
    call("Page.navigate", session, url=url)
    while not any(e.get("method") == "Page.loadEventFired" for e in events):
        events.append(json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 1))))
    time.sleep(0.5)  # anything the page would fetch after load
    call("Runtime.evaluate", session, expression="1")  # drains the events sent meanwhile
    for name, expression in expressions.items():
        result = call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        page.values[name] = result["result"].get("value")
    shot = call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
    page.screenshot = base64.b64decode(shot["data"])
    page.requests = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    return page
