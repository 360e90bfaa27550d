"""Local alert receivers for tests: an SMTP server (aiosmtpd) and an HTTP webhook, on 127.0.0.1."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_PASSWORD = "Pl4ntSmtpS3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- local servers


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[str, str]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        self.received.set()
        return "250 OK"

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:  # type: ignore[no-untyped-def]
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            self.logins.append((login, password))
            return AuthResult(success=password == SMTP_PASSWORD)
        return AuthResult(success=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=box,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


class Hooks:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.received = threading.Event()


@pytest.fixture
def webhook() -> Iterator[tuple[Hooks, int]]:
    hooks = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hooks.posts.append((self.path, json.loads(body)))
            hooks.received.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
