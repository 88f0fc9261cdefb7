"""The controller path and the GRE demultiplexer accept exactly the same packets.

One table of server -> client GRE frames (enhanced GRE, RFC 2637 section 4.1, and the
IPv4 around it) runs against both paths of a shared pair: the controller path as the app
takes a packet-in (``ryu_apps.packets`` decodes the frame, the core forwards it or not)
and the demultiplexer's program as the kernel runs it (``BPF_PROG_TEST_RUN``, redirected
or dropped). A frame one path passes and the other drops would behave differently as a
pair moves between them; a random differential run checks the same beyond the table.
IP fragments are out: the switch hands them to the controller path whole
(reassembly), never to the demultiplexer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alg.codec import (
    GRE_FLAG_A,
    GRE_FLAG_C,
    GRE_FLAG_K,
    GRE_FLAG_R,
    GRE_FLAG_S,
    GRE_FLAG_STRICT,
    GRE_PROTOCOL_PPP,
)
from alg.engine import Gateway
from alg.events import Direction, GrePacket, SendGre
from alg.icmp import checksum
from alg.servermap import GrePath
from demux import bpf
from demux.table import Demux
from ryu_apps import packets
from tests.unit.pptp_flows import C1, PUBLIC, SERVER, gateway
from tests.unit.test_engine_demux import A, shared
from tests.unit.test_gre_demux import TC_ACT_REDIRECT, _bpf_works

pytestmark = pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))

MACS = b"\x02\x00\x5e\x00\x01\xfe" + b"\x0a\x00\x00\x00\x00\x01"
PAYLOAD = b"\xff\x03\x00\x21ppp-data"


@dataclass(frozen=True)
class Shape:
    """A server -> client GRE frame to the shared pair's first call (key ``A``)."""

    flags: int = GRE_FLAG_K | GRE_FLAG_S | 1
    protocol: int = GRE_PROTOCOL_PPP
    length_delta: int = 0
    """Added to the payload length field (the payload itself stays)."""
    payload: bytes = PAYLOAD
    cut: int = 0
    """Bytes cut from the end of the GRE packet (the IPv4 lengths follow)."""
    ip_options: bytes = b""
    ihl: int | None = None
    total_delta: int = 0
    """Added to the IPv4 total length (the frame stays)."""
    padding: bytes = b""
    """Bytes after the IPv4 packet, as Ethernet pads a short frame."""

    def frame(self) -> bytes:
        gre = struct.pack("!HHHH", self.flags, self.protocol,
                          (len(self.payload) + self.length_delta) & 0xFFFF, A)
        if self.flags & GRE_FLAG_S:
            gre += struct.pack("!I", 7)
        if self.flags & GRE_FLAG_A:
            gre += struct.pack("!I", 6)
        gre = (gre + self.payload)[:len(gre) + len(self.payload) - self.cut]
        ip = bytearray(packets.build_ipv4(SERVER, PUBLIC, packets.PROTO_GRE, gre,
                                          options=self.ip_options, dont_fragment=True))
        if self.ihl is not None:
            ip[0] = 0x40 | self.ihl
        struct.pack_into("!H", ip, 2, (len(ip) + self.total_delta) & 0xFFFF)
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, checksum(bytes(ip[:(ip[0] & 0x0F) * 4])))
        return MACS + struct.pack("!H", packets.ETH_TYPE_IPV4) + bytes(ip) + self.padding


RESERVED = [0x0040, 0x0020, 0x0010, 0x0008]
CASES: list[tuple[str, Shape, bool]] = [
    ("data with a sequence number", Shape(), True),
    ("key only, with data", Shape(flags=GRE_FLAG_K | 1), True),
    ("an acknowledgement only", Shape(flags=GRE_FLAG_K | GRE_FLAG_A | 1, payload=b""), True),
    ("sequence and acknowledgement numbers",
     Shape(flags=GRE_FLAG_K | GRE_FLAG_S | GRE_FLAG_A | 1), True),
    ("bytes after the payload length", Shape(length_delta=-3), True),
    ("IPv4 options", Shape(ip_options=b"\x01\x01\x01\x00"), True),
    ("Ethernet padding after a short packet", Shape(payload=b"", padding=bytes(30)), True),
    ("checksum present (C)", Shape(flags=Shape().flags | GRE_FLAG_C), False),
    ("routing present (R)", Shape(flags=Shape().flags | GRE_FLAG_R), False),
    ("strict source route (s)", Shape(flags=Shape().flags | GRE_FLAG_STRICT), False),
    *((f"recursion count {n}", Shape(flags=Shape().flags | n << 8), False) for n in (1, 4, 7)),
    *((f"reserved flag {bit:#06x}", Shape(flags=Shape().flags | bit), False)
      for bit in RESERVED),
    ("version 0", Shape(flags=GRE_FLAG_K | GRE_FLAG_S), False),
    ("version 2", Shape(flags=GRE_FLAG_K | GRE_FLAG_S | 2), False),
    ("version 7", Shape(flags=GRE_FLAG_K | GRE_FLAG_S | 7), False),
    ("no key", Shape(flags=GRE_FLAG_S | 1), False),
    ("protocol IPv4, not PPP", Shape(protocol=0x0800), False),
    ("payload length one beyond the packet", Shape(length_delta=1), False),
    ("payload length beyond, with an acknowledgement",
     Shape(flags=GRE_FLAG_K | GRE_FLAG_S | GRE_FLAG_A | 1, length_delta=1), False),
    ("payload length counting the Ethernet padding",
     Shape(payload=b"", length_delta=4, padding=bytes(30)), False),
    ("payload length 0xffff", Shape(length_delta=0xFFFF - len(PAYLOAD)), False),
    ("sequence number cut", Shape(payload=b"", cut=2), False),
    ("acknowledgement number cut",
     Shape(flags=GRE_FLAG_K | GRE_FLAG_S | GRE_FLAG_A | 1, payload=b"", cut=1), False),
    ("GRE header cut to 7 bytes", Shape(flags=GRE_FLAG_K | 1, payload=b"", cut=1), False),
    ("IPv4 total length beyond the frame", Shape(total_delta=4), False),
    ("IPv4 total length cutting the GRE header", Shape(total_delta=-len(PAYLOAD) - 6), False),
    ("IPv4 total length below its header", Shape(total_delta=-len(PAYLOAD) - 16), False),
    ("IPv4 header length below 5", Shape(ihl=4), False),
]


class Paths:
    """A shared pair whose first call has key ``A``, on both paths."""

    def __init__(self, demux: Demux) -> None:
        self.demux = demux
        demux.set(SERVER, PUBLIC, A, C1, A)
        self.gw: Gateway = gateway()
        shared(self.gw)
        assert self.gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER

    def controller(self, frame: bytes) -> bool:
        """What the app and the core do with the frame as a packet-in."""
        decoded = packets.decode_frame(frame)
        if decoded is None or decoded.ip is None or decoded.ip.fragment:
            return False
        packet = packets.decode_l4(decoded.ip)
        if not isinstance(packet, GrePacket):
            return False
        out = self.gw.handle(Direction.INBOUND, packet, 1.0)
        return any(isinstance(e, SendGre) and e.dst_ip == C1 for e in out.emits)

    def demultiplexer(self, frame: bytes) -> bool:
        """What the kernel does with the frame on the demultiplexer's port."""
        verdict, _ = bpf.test_run(self.demux.program, frame)
        return verdict == TC_ACT_REDIRECT


@pytest.fixture
def paths() -> Iterator[Paths]:
    loaded = Demux.load(16)
    try:
        yield Paths(loaded)
    finally:
        loaded.close()


@pytest.mark.parametrize(("what", "shape", "accepted"), CASES, ids=[c[0] for c in CASES])
def test_both_paths_accept_exactly_the_same_gre(paths: Paths, what: str, shape: Shape,
                                                accepted: bool) -> None:
    frame = shape.frame()
    assert (paths.controller(frame), paths.demultiplexer(frame)) == (accepted, accepted), what


@settings(max_examples=300, deadline=None)
@given(flags=st.integers(0, 0xFFFF) | st.sampled_from([0x2001, 0x3001, 0x2081, 0x3081]),
       protocol=st.sampled_from([GRE_PROTOCOL_PPP, 0x0800]),
       length_delta=st.integers(-12, 12), payload=st.binary(max_size=24),
       cut=st.integers(0, 16), padding=st.binary(max_size=40),
       total_delta=st.sampled_from([0, 0, 0, -2, 2]),
       ip_options=st.sampled_from([b"", b"\x01\x01\x01\x00"]))
def test_both_paths_agree_on_arbitrary_gre_headers(
        flags: int, protocol: int, length_delta: int, payload: bytes, cut: int,
        padding: bytes, total_delta: int, ip_options: bytes) -> None:
    demux = Demux.load(16)
    try:
        paths = Paths(demux)
        shape = Shape(flags, protocol, length_delta, payload, cut, ip_options, None,
                      total_delta, padding)
        frame = shape.frame()
        assert paths.controller(frame) == paths.demultiplexer(frame), shape
    finally:
        demux.close()
