"""``learn modbus --live`` against a peer that is not a PLC: a clear LearnError (bad input,
exit 2) that says what it met. Local sockets only (127.0.0.1)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from restoredrill.errors import ExitCode
from restoredrill.twins.learn import LearnError
from restoredrill.twins.learn.modbus import learn_live


@pytest.fixture
def not_modbus() -> Iterator[int]:
    """A TCP server that answers every request with a header no Modbus device sends
    (a length of 0); its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    while conn.recv(260):
                        conn.sendall(b"\x00\x01\x00\x00\x00\x00\x01")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_peer_that_is_not_modbus_is_named_as_such(not_modbus: int) -> None:
    with pytest.raises(LearnError) as info:
        learn_live("127.0.0.1", not_modbus, [1], [("holding", 0, 9)], 1.0, 0.2)
    assert str(info.value) == f"127.0.0.1:{not_modbus} does not speak Modbus TCP"
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_an_unreachable_plc_is_a_learn_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(LearnError, match=rf"^127\.0\.0\.1:{port} is unreachable \("):
            learn_live("127.0.0.1", port, [1], [("holding", 0, 9)], 1.0, 0.2)
