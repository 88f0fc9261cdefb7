"""The ingress rules: what becomes of a frame the switch sends to the controller.

:func:`classify` decides, for one frame and the port it came in on, one
:data:`Verdict`: drop it (and which counter says so), hand it to the demultiplexer's
link, answer ARP, answer the gateway's own echo, wait for the outside next hop, send a
Time Exceeded, or give the core the packet to translate. It sends nothing; it consults
the neighbour table (which learns inside sources on the way, and refuses spoofed ones)
and the reassembler (which holds fragments until their datagram is whole). The shim
carries out the verdict.

The rules, in order:

1. A port the gateway does not use: the demultiplexer's port gives its heartbeat back
   (:class:`FromDemux`); anything else is ignored.
2. A frame that does not decode (Ethernet, ARP, IPv4 with a valid header) is counted in
   ``undecodable_frames``.
3. ARP goes to the neighbour table (:class:`Arp`).
4. A fragment from inside must pass the inside admission first; then the reassembler
   holds it and the whole datagram, when complete, goes on as if it had come whole.
5. A TCP, UDP or ICMP packet with a bad checksum is counted in ``bad_checksums``.
6. From inside: the source must be admitted; an echo request to the gateway's inside
   address is answered (:class:`EchoReply`); only packets routed outside go on, and
   those wait for the next hop's address when it is not known yet (:class:`Resolve`).
7. A TCP or UDP packet the core cannot read is counted in ``undecodable_frames``.
8. A spent TTL (here, or found by a flow entry's decrement) gets a Time Exceeded
   (:class:`Expire`); everything else goes to the core (:class:`Translate`).

A packet from the route table (``ordinary_nat = conntrack``) was translated by the
connection tracker already and waits only for its next hop (:class:`RouteOut`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Final, Protocol

from alg.events import Direction, Packet
from alg.neighbours import L2, ArpMessage, NeighbourTable, Route, Side
from ryu_apps import packets
from ryu_apps.switch import TABLE_CLASSIFY, TABLE_ROUTE


class Reassembly(Protocol):
    """The reassembler of fragments that reach the controller (``ryu_apps.fragments``)."""

    def ingress(self, data: bytes, ip: packets.Ipv4, side: Side, now: float
                ) -> tuple[bytes, packets.Ipv4] | None:
        """The whole datagram's frame and packet when ``data`` completes it, else None."""


@dataclass(frozen=True, slots=True)
class Ignore:
    """Dropped: nothing to count (the neighbour table or the reassembler counted it,
    or it is not the gateway's)."""


@dataclass(frozen=True, slots=True)
class Count:
    """Dropped and counted in the app's counter ``counter``."""

    counter: str


@dataclass(frozen=True, slots=True)
class FromDemux:
    """A frame from the demultiplexer's port (its heartbeat comes back this way)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Arp:
    """An ARP packet for the neighbour table."""

    port: int
    mac: str
    arp: ArpMessage


@dataclass(frozen=True, slots=True)
class EchoReply:
    """An echo request to the gateway's inside address: the answer goes back to ``to``."""

    reply: bytes
    to: L2


@dataclass(frozen=True, slots=True)
class Resolve:
    """A packet for the outside whose next hop is not resolved yet: the frame is
    handled again when it is."""

    destination: IPv4Address
    port: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Expire:
    """A packet whose TTL is spent: the core answers with Time Exceeded."""

    direction: Direction
    packet: Packet
    raw: bytes


@dataclass(frozen=True, slots=True)
class Translate:
    """A packet for the core to translate (``port`` and ``data``: where it came in and
    the frame, should the core send it back through the switch's tables)."""

    direction: Direction
    packet: Packet
    ip: packets.Ipv4
    port: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RouteOut:
    """A packet the connection tracker translated, for a destination whose next hop
    the switch does not know yet (``ryu_apps.ctflows``): sent on as it is."""

    destination: IPv4Address
    ip: bytes


Verdict = (Ignore | Count | FromDemux | Arp | EchoReply | Resolve | Expire | Translate
           | RouteOut)

IGNORE: Final = Ignore()
UNDECODABLE: Final = Count("undecodable_frames")
BAD_CHECKSUM: Final = Count("bad_checksums")


def classify(in_port: int, data: bytes, expired: bool, neighbours: NeighbourTable[Any],
             fragments: Reassembly, demux_port: int | None, now: float,
             table: int = TABLE_CLASSIFY) -> Verdict:
    """The verdict on one frame from the switch (the module's rules, in order).

    Args:
        in_port: the port it came in on.
        data: the frame.
        expired: a flow entry found its TTL spent (the switch says so).
        neighbours: the neighbour table (sides of ports, admission, next hops).
        fragments: the reassembler.
        demux_port: the demultiplexer's port, None without one.
        now: the time.
        table: the table whose entry sent it (``ryu_apps.switch``).
    """
    side = neighbours.side(in_port)
    if side is None:
        return FromDemux(data) if in_port == demux_port else IGNORE
    frame = packets.decode_frame(data)
    if frame is None:
        return UNDECODABLE
    if frame.arp is not None:
        return Arp(in_port, frame.src_mac, frame.arp)
    ip = frame.ip
    assert ip is not None
    if table == TABLE_ROUTE:
        return RouteOut(ip.dst, packets.ip_bytes(data))
    if ip.fragment:
        if side is Side.INSIDE and neighbours.admit_inside(
                in_port, frame.src_mac, ip.src, ip.dst, now) is not Route.OUTSIDE:
            return IGNORE
        whole = fragments.ingress(data, ip, side, now)
        if whole is None:
            return IGNORE
        data, ip = whole
    if not packets.l4_checksum_ok(ip):
        return BAD_CHECKSUM
    direction = Direction.INBOUND
    if side is Side.INSIDE:
        route = neighbours.admit_inside(in_port, frame.src_mac, ip.src, ip.dst, now)
        if route is Route.GATEWAY and packets.is_echo_request(ip):
            return EchoReply(packets.echo_reply(ip), L2(in_port, frame.src_mac))
        if route is not Route.OUTSIDE:
            return IGNORE
        expired = expired or ip.ttl <= 1
        if not expired and neighbours.lookup(Side.OUTSIDE, ip.dst) is None:
            return Resolve(ip.dst, in_port, data)
        direction = Direction.OUTBOUND
    packet = packets.decode_l4(ip)
    if packet is None:
        return UNDECODABLE if ip.proto in (packets.PROTO_TCP, packets.PROTO_UDP) else IGNORE
    if expired or ip.ttl <= 1:
        return Expire(direction, packet, packets.ip_bytes(data))
    return Translate(direction, packet, ip, in_port, data)
