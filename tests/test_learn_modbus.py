"""``restoredrill learn modbus``: maps learned from captures the tests record themselves
(tcpdump on the loopback while a peer client polls a peer server), and from live reads.

The learned map, loaded into the PLC twin, must answer the same client with the values it
saw (constants) or the same shape (moving values). Bad captures are refused clearly.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing
from localservers import free_port

from restoredrill.twins.plc import InThread, PlcTwin
from restoredrill.twins.registers import load_register_map

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config/demo/plc/line1.yaml"
CLI = Path(sys.executable).parent / "restoredrill"


@contextlib.contextmanager
def recording(path: Path, ports: list[int], snaplen: int = 0) -> Iterator[Path]:
    """tcpdump on the loopback, only the given TCP ports, for the body of the block."""
    tcpdump = shutil.which("tcpdump")
    if not tcpdump:
        missing("tcpdump (apt-get install tcpdump)")
    expression = " or ".join(f"tcp port {p}" for p in ports)
    argv = [tcpdump, "-i", "lo", "-n", "-U", "--immediate-mode", "-s", str(snaplen)]
    argv += ["-w", str(path), expression]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "listening on lo" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield path
        time.sleep(0.3)  # the last packets reach the file (-U writes each packet)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def learn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "learn", "modbus", *args], capture_output=True, text=True, timeout=120
    )


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.02)


class PeerPlant:
    """A modbus-tk server (not ours) whose values move as a plant's do."""

    def __init__(self, unit: int = 1) -> None:
        import modbus_tk.defines as cst
        from modbus_tk import modbus_tcp

        self.port = free_port()
        self.server = modbus_tcp.TcpServer(port=self.port, address="127.0.0.1")
        self.server.start()
        slave = self.server.add_slave(unit)
        slave.add_block("hr", cst.HOLDING_REGISTERS, 0, 20)
        slave.add_block("ir", cst.ANALOG_INPUTS, 0, 10)
        slave.add_block("co", cst.COILS, 0, 8)
        slave.set_values("hr", 0, [1450, 7, 0x4148, 0x0000])  # 1450, 7, 12.5 (float32)
        self.slave, self.stop = slave, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_listening(self.port)

    def _run(self) -> None:
        started, n = time.monotonic(), 0
        while not self.stop.is_set():
            t = time.monotonic() - started
            n += 1
            level = struct.unpack(">HH", struct.pack(">f", 50 + 10 * math.sin(t)))
            self.slave.set_values("ir", 0, [n % 65536, 0, *level, int(t * 20) % 200])
            self.slave.set_values("co", 0, [int(t / 0.5) % 2])
            time.sleep(0.25)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.stop()


def poll(port: int, rounds: int, unit: int = 1, write_at: int | None = None) -> list[dict]:
    """A modbus-tk master polling as a SCADA driver does; what it read, round by round."""
    import modbus_tk.defines as cst
    from modbus_tk import modbus_tcp

    master = modbus_tcp.TcpMaster(host="127.0.0.1", port=port, timeout_in_sec=3)
    seen = []
    try:
        for i in range(rounds):
            seen.append(
                {
                    "hr": master.execute(unit, cst.READ_HOLDING_REGISTERS, 0, 10),
                    "ir": master.execute(unit, cst.READ_INPUT_REGISTERS, 0, 6),
                    "co": master.execute(unit, cst.READ_COILS, 0, 4),
                }
            )
            if i == write_at:
                master.execute(unit, cst.WRITE_MULTIPLE_REGISTERS, 10, output_value=[1200])
            time.sleep(0.1)
    finally:
        master.close()
    return seen


def level(row: dict) -> float:
    return struct.unpack(">f", struct.pack(">HH", *row["ir"][2:4]))[0]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A capture of modbus-tk polling modbus-tk, and the map learned from it."""
    folder = tmp_path_factory.mktemp("learn")
    peer = PeerPlant()
    try:
        with recording(folder / "line.pcap", [peer.port]):
            seen = poll(peer.port, rounds=60, write_at=20)
    finally:
        peer.close()
    out = learn(str(folder / "line.pcap"), "-o", str(folder / "line.yaml"))
    assert out.returncode == 0, out.stderr
    return folder, seen, out.stdout


def test_learned_map_loads_and_says_what_it_found(learned):
    folder, _, stdout = learned
    regmap = load_register_map(folder / "line.yaml")
    by_name = {t.name: t for t in regmap.tags}
    assert "wrote" in stdout and "2 data type(s) guessed" in stdout, stdout
    assert by_name["hr0"].initial == 1450 and by_name["hr1"].initial == 7
    assert by_name["hr2"].dtype == "float32" and by_name["hr2"].initial == 12.5
    assert "guessed float32" in by_name["hr2"].description
    assert by_name["hr10"].behaviour == "setpoint" and by_name["hr10"].is_writable
    assert by_name["ir0"].behaviour == "counter" and by_name["ir0"].step == 1
    assert by_name["ir2"].dtype == "float32" and by_name["ir2"].behaviour == "replay"
    assert by_name["ir4"].behaviour == "counter" and by_name["ir4"].step == 5
    assert by_name["c0"].behaviour == "toggle" and 0.4 <= by_name["c0"].period <= 0.6
    header = (folder / "line.yaml").read_text().splitlines()[:8]
    assert any("FC 3 holding 0-9 (60x)" in line for line in header), header
    assert any("FC 16 holding 10-10 (1x)" in line for line in header), header


def test_the_twin_answers_the_same_client_with_what_it_saw(learned):
    folder, seen, _ = learned
    with InThread(PlcTwin.from_file(folder / "line.yaml", tick=0.05)).start("127.0.0.1", 0) as t:
        again = poll(t.twin.port, rounds=30)
    constants = [row["hr"][:4] for row in seen]
    assert all(row["hr"][:4] == constants[0] for row in again)  # 1450, 7, 12.5
    assert all(row["hr"][4:] == (0,) * 6 for row in again)
    counts = [row["ir"][0] for row in again]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # the counter counts
    observed = {round(level(row), 3) for row in seen}
    replayed = {round(level(row), 3) for row in again}
    assert len(replayed) > 3 and replayed <= observed  # the level: the values it saw
    assert len({row["co"][0] for row in again}) == 2  # the heartbeat toggles


def test_a_written_setpoint_is_learned_and_served(learned):
    folder, _, _ = learned
    with InThread(PlcTwin.from_file(folder / "line.yaml")).start("127.0.0.1", 0) as t:
        import modbus_tk.defines as cst
        from modbus_tk import modbus_tcp

        master = modbus_tcp.TcpMaster(host="127.0.0.1", port=t.twin.port, timeout_in_sec=3)
        try:
            assert master.execute(1, cst.READ_HOLDING_REGISTERS, 10, 1) == (1200,)
            master.execute(1, cst.WRITE_MULTIPLE_REGISTERS, 10, output_value=[900])
            assert master.execute(1, cst.READ_HOLDING_REGISTERS, 10, 1) == (900,)
        finally:
            master.close()


def test_identity_and_gateway_are_learned_from_a_capture(tmp_path):
    from pymodbus.client import ModbusTcpClient

    path = tmp_path / "gw.yaml"
    path.write_text(DEMO.read_text().replace("\ntags:\n", "\ngateway: true\ntags:\n", 1))
    with (
        InThread(PlcTwin.from_file(path)).start("127.0.0.1", 0) as plc,
        recording(tmp_path / "id.pcap", [plc.twin.port]),
    ):
        c = ModbusTcpClient("127.0.0.1", port=plc.twin.port, timeout=3, retries=0)
        c.connect()
        c.read_device_information(read_code=2, object_id=0, device_id=1)
        c.report_device_id(device_id=1)
        c.read_holding_registers(0, count=11, device_id=1)
        assert c.read_holding_registers(0, count=1, device_id=5).exception_code == 0x0B
        c.close()
    out = learn(str(tmp_path / "id.pcap"), "-o", str(tmp_path / "learned.yaml"))
    assert out.returncode == 0, out.stderr
    regmap = load_register_map(tmp_path / "learned.yaml")
    identity = regmap.unit_identity(1)
    assert (identity.vendor, identity.product_code, identity.product_name) == (
        "Demo Controls GmbH",
        "DC-410",
        "DemoLogic 410",
    )
    assert identity.additional_data == "DemoLogic 410" and identity.server_id == 1
    assert regmap.gateway and regmap.unit_ids == [1]


def test_several_devices_make_one_map_each(tmp_path):
    peers = [PeerPlant(unit=1), PeerPlant(unit=3)]
    try:
        with recording(tmp_path / "two.pcap", [p.port for p in peers]):
            poll(peers[0].port, rounds=5)
            poll(peers[1].port, rounds=5, unit=3)
    finally:
        for peer in peers:
            peer.close()
    out = learn(str(tmp_path / "two.pcap"), "-o", str(tmp_path / "plant.yaml"))
    assert out.returncode == 0, out.stderr
    first = tmp_path / f"plant-127.0.0.1-{peers[0].port}-unit1.yaml"
    second = tmp_path / f"plant-127.0.0.1-{peers[1].port}-unit3.yaml"
    assert load_register_map(first).unit_ids == [1]
    assert load_register_map(second).unit_ids == [3]
    assert f"wrote {first}" in out.stdout and f"wrote {second}" in out.stdout


def test_pcapng_is_read_and_foreign_link_types_are_named(learned, tmp_path):
    import dpkt

    folder, _, _ = learned
    with (folder / "line.pcap").open("rb") as f:
        packets = list(dpkt.pcap.Reader(f))
    with (tmp_path / "line.pcapng").open("wb") as f:
        writer = dpkt.pcapng.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, data in packets:
            writer.writepkt(data, ts=ts)
    out = learn(str(tmp_path / "line.pcapng"), "-o", str(tmp_path / "line.yaml"))
    assert out.returncode == 0, out.stderr
    assert (
        load_register_map(tmp_path / "line.yaml").names()
        == load_register_map(folder / "line.yaml").names()
    )
    with (tmp_path / "usb.pcapng").open("wb") as f:
        writer = dpkt.pcapng.Writer(f, linktype=189)  # USB, Linux: not a network capture
        for ts, data in packets[:20]:
            writer.writepkt(data, ts=ts)
    out = learn(str(tmp_path / "usb.pcapng"), "-o", str(tmp_path / "usb.yaml"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "link types not read: link type 189 (20 packets)" in out.stderr
    assert not (tmp_path / "usb.yaml").exists()


def test_no_modbus_traffic_is_a_clear_error(tmp_path):
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    server = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    port = server.server_address[1]
    with (
        recording(tmp_path / "http.pcap", [port]),
        socket.create_connection(("127.0.0.1", port)) as s,
    ):
        s.sendall(b"GET /nothing HTTP/1.0\r\n\r\n")
        s.recv(1024)
    server.server_close()
    out = learn(str(tmp_path / "http.pcap"), "-o", str(tmp_path / "x.yaml"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'http.pcap'}: no Modbus TCP request answered in" in out.stderr
    assert "1 connection(s) were another protocol" in out.stderr
    assert "give --port" in out.stderr


def test_truncated_packets_and_files(tmp_path):
    peer = PeerPlant()
    try:
        with recording(tmp_path / "short.pcap", [peer.port], snaplen=64):
            poll(peer.port, rounds=3)
    finally:
        peer.close()
    out = learn(str(tmp_path / "short.pcap"), "-o", str(tmp_path / "x.yaml"))
    assert out.returncode == 2, out.stdout
    assert "TCP packets cut short by the snap length" in out.stderr
    whole = (tmp_path / "short.pcap").read_bytes()
    (tmp_path / "cut.pcap").write_bytes(whole[:23])
    out = learn(str(tmp_path / "cut.pcap"), "-o", str(tmp_path / "x.yaml"))
    assert out.returncode == 2 and "not a pcap or pcapng capture (too short)" in out.stderr
    (tmp_path / "text.pcap").write_text("this is a list of tags, not a capture\n")
    out = learn(str(tmp_path / "text.pcap"), "-o", str(tmp_path / "x.yaml"))
    assert out.returncode == 2 and "not a pcap or pcapng capture (it starts with" in out.stderr


def test_a_capture_cut_mid_packet_is_read_up_to_the_cut(learned, tmp_path):
    folder, _, _ = learned
    whole = (folder / "line.pcap").read_bytes()
    (tmp_path / "cut.pcap").write_bytes(whole[: len(whole) * 2 // 3 + 5])
    out = learn(str(tmp_path / "cut.pcap"), "-o", str(tmp_path / "cut.yaml"))
    assert out.returncode == 0, out.stderr
    assert "note: the capture ends inside" in out.stdout
    assert "hr0" in load_register_map(tmp_path / "cut.yaml").names()


def test_an_existing_map_is_not_overwritten(learned):
    folder, _, _ = learned
    out = learn(str(folder / "line.pcap"), "-o", str(folder / "line.yaml"))
    assert out.returncode == 2 and "exists: give --force" in out.stderr


def test_live_learning_reads_the_device_read_only(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO.read_text())
    with InThread(PlcTwin.from_file(path, tick=0.02)).start("127.0.0.1", 0) as plc:
        before = plc.call(plc.twin.read_tag("level_setpoint"))
        out = learn(
            "--live",
            f"127.0.0.1:{plc.twin.port}",
            "--ranges",
            "holding:0-15,input:0-7,coil:0-1",
            "--duration",
            "2s",
            "--interval",
            "100ms",
            "-o",
            str(tmp_path / "live.yaml"),
        )
        assert out.returncode == 0, out.stderr
        assert plc.call(plc.twin.read_tag("level_setpoint")) == before  # nothing written
    regmap = load_register_map(tmp_path / "live.yaml")
    assert regmap.unit_identity(1).vendor == "Demo Controls GmbH"
    by_name = {t.name: t for t in regmap.tags}
    assert by_name["hr2"].initial == 1450 and by_name["hr0"].dtype == "float32"
    assert by_name["hr0"].initial == 50.0  # the level setpoint, as the twin holds it
    assert by_name["ir0"].dtype == "float32"  # the tank level: a sine, 2 s of it
    assert by_name["ir0"].behaviour in ("ramp", "replay")
    out = learn("--live", "127.0.0.1:1", "--ranges", "holding:0-9", "-o", str(tmp_path / "n.yaml"))
    assert out.returncode == 2 and "127.0.0.1:1 is unreachable" in out.stderr
    out = learn("--live", "127.0.0.1:1", "--ranges", "holdings:0-9", "-o", str(tmp_path / "n.yaml"))
    assert out.returncode == 2 and "write TABLE:FIRST-LAST" in out.stderr
