"""TCP segments from a traffic capture (pcap or pcapng), read offline and streamed.

The capture is what a plant exports from a switch's mirror port: libpcap's ``.pcap``
(micro- or nanosecond, either byte order) or ``.pcapng`` (several sections and
interfaces, each with its own link type and timestamp resolution). Link layers read:
Ethernet (with VLAN tags), Linux cooked (SLL, SLL2), BSD loopback, raw IPv4/IPv6.

dpkt (BSD licence, pure Python: installs on an air-gapped machine from a wheel, nothing
to compile) decodes the packets and parses the pcap and pcapng headers and blocks; the
loop over blocks is here, because dpkt's own readers keep only a pcapng file's first
interface and stop with an exception at a file cut mid-record. A capture is evidence
from a plant, not trusted input: a damaged or truncated file is read up to the damage
and says so (``Capture.notes``); packets cut short by the snap length are counted and
left out, never decoded as if whole.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt
from dpkt import pcap as dpcap
from dpkt import pcapng as dpcapng

from restoredrill.configfile import ConfigFileError

LINK_TYPES = {
    0: "BSD loopback",
    1: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "OpenBSD loopback",
    113: "Linux cooked",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2",
}
"""Link types read (pcap's LINKTYPE_ numbers) and their names."""
MAX_BLOCK = 16 * 1024 * 1024
"""A pcapng block larger than this is damage, not a packet."""


class CaptureError(ConfigFileError):
    """The capture cannot be read at all (not a capture, no packet of a known link)."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(path, 0, "", message)


@dataclass
class Segment:
    """One TCP segment: when, who to whom, sequence number, flags, payload."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    syn: bool
    fin_or_rst: bool
    payload: bytes


@dataclass
class Capture:
    """A capture being read: counts and notes for the summary."""

    path: Path
    packets: int = 0
    truncated: int = 0
    other_links: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def segments(self) -> Iterator[Segment]:
        """Every TCP segment of the capture, in file order."""
        try:
            with self.path.open("rb") as f:
                magic = f.read(4)
                f.seek(0)
                frames = self._pcapng(f) if magic == b"\x0a\x0d\x0d\x0a" else self._pcap(f, magic)
                for ts, link, data, whole in frames:
                    segment = self._decode(ts, link, data, whole)
                    if segment is not None:
                        yield segment
        except OSError as exc:
            raise CaptureError(self.path, f"cannot read: {exc.strerror or exc}") from None

    # ---------------------------------------------------------------- file formats

    def _pcap(self, f: BinaryIO, magic: bytes) -> Iterator[tuple[float, int, bytes, bool]]:
        header = f.read(24)
        if len(magic) < 4 or len(header) < 24:
            raise CaptureError(self.path, "not a pcap or pcapng capture (too short)")
        (number,) = struct.unpack("<I", magic)
        little = number in (dpcap.TCPDUMP_MAGIC, dpcap.TCPDUMP_MAGIC_NANO)
        big = number in (dpcap.PMUDPCT_MAGIC, dpcap.PMUDPCT_MAGIC_NANO)
        if not (little or big):
            raise CaptureError(
                self.path, f"not a pcap or pcapng capture (it starts with {magic.hex()})"
            )
        nano = number in (dpcap.TCPDUMP_MAGIC_NANO, dpcap.PMUDPCT_MAGIC_NANO)
        file_header = (dpcap.LEFileHdr if little else dpcap.FileHdr)(header)
        link = file_header.linktype & 0xFFFF
        record = dpcap.LEPktHdr if little else dpcap.PktHdr
        divisor = 1e9 if nano else 1e6
        while True:
            raw = f.read(16)
            if not raw:
                return
            if len(raw) < 16:
                self.notes.append("the capture ends inside a record header (cut short?)")
                return
            hdr = record(raw)
            data = f.read(hdr.caplen)
            if len(data) < hdr.caplen:
                self.notes.append("the capture ends inside a packet (cut short?)")
                return
            yield hdr.tv_sec + hdr.tv_usec / divisor, link, data, hdr.caplen >= hdr.len

    def _pcapng(self, f: BinaryIO) -> Iterator[tuple[float, int, bytes, bool]]:
        little = True
        interfaces: list[tuple[int, float, float]] = []  # link, divisor, offset
        while True:
            head = f.read(8)
            if not head:
                return
            if len(head) < 8:
                self.notes.append("the capture ends inside a block header (cut short?)")
                return
            kind = struct.unpack("<I", head[:4])[0]
            if kind == dpcapng.PCAPNG_BT_SHB:
                little = f.read(4) == b"\x4d\x3c\x2b\x1a"
                f.seek(-4, 1)
                interfaces = []
            size = struct.unpack("<I" if little else ">I", head[4:])[0]
            if not 12 <= size <= MAX_BLOCK or size % 4:
                self.notes.append(f"a damaged pcapng block at byte {f.tell() - 8}: read up to it")
                return
            body = f.read(size - 8)
            if len(body) < size - 8:
                self.notes.append("the capture ends inside a block (cut short?)")
                return
            yield from self._block(kind, head + body, little, interfaces)

    def _block(
        self, kind: int, raw: bytes, little: bool, interfaces: list[tuple[int, float, float]]
    ) -> Iterator[tuple[float, int, bytes, bool]]:
        le = "LE" if little else ""
        try:
            if kind == dpcapng.PCAPNG_BT_IDB:
                idb = getattr(dpcapng, f"InterfaceDescriptionBlock{le}")(raw)
                interfaces.append(_interface(idb, little))
            elif kind in (dpcapng.PCAPNG_BT_EPB, dpcapng.PCAPNG_BT_PB):
                name = "EnhancedPacketBlock" if kind == dpcapng.PCAPNG_BT_EPB else "PacketBlock"
                block = getattr(dpcapng, f"{name}{le}")(raw)
                if block.iface_id >= len(interfaces):
                    self.notes.append("a packet names an interface the capture never described")
                    return
                link, divisor, offset = interfaces[block.iface_id]
                ts = offset + ((block.ts_high << 32) | block.ts_low) / divisor
                yield ts, link, block.pkt_data, block.caplen >= block.pkt_len
            elif kind == dpcapng.PCAPNG_BT_SPB and interfaces:
                (whole,) = struct.unpack_from("<I" if little else ">I", raw, 8)
                data = raw[12 : 12 + whole]
                yield 0.0, interfaces[0][0], data, len(data) >= whole
        except (dpkt.UnpackError, struct.error, ValueError):
            self.notes.append("a damaged pcapng block was skipped")

    # ---------------------------------------------------------------- packets

    def _decode(self, ts: float, link: int, data: bytes, whole: bool) -> Segment | None:
        self.packets += 1
        if link not in LINK_TYPES:
            self.other_links[link] = self.other_links.get(link, 0) + 1
            return None
        try:
            ip = _network(link, data)
        except (dpkt.UnpackError, struct.error, ValueError, IndexError):
            ip = None
        if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or _protocol(ip) != 6:
            return None
        tcp = ip.data
        if not whole or _cut(ip) or not isinstance(tcp, dpkt.tcp.TCP):
            self.truncated += 1  # cut short by the snap length: its payload is not whole
            return None
        family = 10 if isinstance(ip, dpkt.ip6.IP6) else 2
        return Segment(
            ts,
            _address(family, ip.src),
            tcp.sport,
            _address(family, ip.dst),
            tcp.dport,
            tcp.seq,
            bool(tcp.flags & dpkt.tcp.TH_SYN) and not tcp.flags & dpkt.tcp.TH_ACK,
            bool(tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST)),
            bytes(tcp.data),
        )


def _interface(idb: dpcapng.InterfaceDescriptionBlock, little: bool) -> tuple[int, float, float]:
    divisor, offset = 1e6, 0.0
    for opt in idb.opts:
        if opt.code == dpcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
            value = opt.data[0]
            divisor = float((2 if value & 0x80 else 10) ** (value & 0x7F))
        elif opt.code == dpcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) == 8:
            offset = float(struct.unpack("<q" if little else ">q", opt.data)[0])
    return idb.linktype, divisor, offset


def _network(link: int, data: bytes) -> Any:
    """A dpkt IP or IP6 packet, or None."""
    if link == 1:
        frame = dpkt.ethernet.Ethernet(data)
        return frame.data
    if link in (0, 108):
        return dpkt.loopback.Loopback(data).data
    if link == 113:
        return dpkt.sll.SLL(data).data
    if link == 276:
        return dpkt.sll2.SLL2(data).data
    version = data[0] >> 4 if data else 0
    return dpkt.ip.IP(data) if version == 4 else dpkt.ip6.IP6(data) if version == 6 else None


def _cut(ip: Any) -> bool:
    """Whether the IP packet holds fewer bytes than its header says (a short capture)."""
    if isinstance(ip, dpkt.ip.IP):
        return len(ip) < ip.len
    return len(ip.data) < ip.plen if isinstance(ip, dpkt.ip6.IP6) else True


def _protocol(ip: Any) -> int:
    return ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if family == 10 else socket.AF_INET, raw)


def link_name(link: int) -> str:
    return LINK_TYPES.get(link, f"link type {link}")
