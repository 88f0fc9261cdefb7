"""IP fragments on the controller path: the app's side of ``alg.defrag``.

A fragment that reaches the controller is part of GRE (a call's data on the controller
path, or a shared pair's on the demux path, which the switch steers here: the
demultiplexer handles only whole packets, ``ryu_apps.flowmods``) or of a control segment
(TCP/1723, ALG on). :meth:`FragmentPath.ingress` holds it in the core's reassembler and
gives the app the whole datagram, as a frame, when its last fragment comes; the app then
handles the datagram as if it had come whole. Fragments of anything else are dropped and
counted (``fragments_dropped``), as before, and so are TCP fragments that are not of a
control segment, before any is held: the datapath's own reassembly is the place
for ordinary NATed traffic. On the way out, :meth:`FragmentPath.egress` splits a packet
bigger than the links' MTU (``[nat] mtu``), and :meth:`FragmentPath.too_big` answers one
with DF set with ICMP fragmentation needed, from the address the sender sent to (the
public address) or from the gateway's inside address, as a router does (RFC 1191
section 4, RFC 1812 section 4.3.2.7: never about an ICMP error, never to a non-unicast
address, at most 100 in a burst refilled at 100 a second each way).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Protocol

from alg.codec import PPTP_PORT
from alg.config import GatewayConfig
from alg.counters import Counters
from alg.defrag import Reassembler, fragment, fragmentation_needed, parse_header
from alg.events import Direction, Emit, Output, SendIcmp
from alg.icmp import ERROR_BURST, ERROR_TYPES, ERRORS_PER_SECOND, TokenBucket, is_unicast_host
from alg.neighbours import Side
from ryu_apps import packets


class DropCounter(Protocol):
    """Where the app counts the fragments it does not reassemble."""

    fragments_dropped: int


class FragmentPath:
    """Reassembly of the fragments that reach the controller, fragmentation of what it
    sends.

    Args:
        config: the MTU, the reassembly bounds, the ALG switch, the inside address.
        counters: the core's counters (the ``fragments_*`` ones are counted there).
        app_counters: the app's, for fragments it does not reassemble.
    """

    def __init__(self, config: GatewayConfig, counters: Counters, app_counters: DropCounter
                 ) -> None:
        self.reassembler = Reassembler(config.alg, counters)
        self.mtu = config.alg.mtu
        self._alg = config.alg.alg_enabled
        self._inside_address = config.inside_gateway
        self._counters = counters
        self._app_counters = app_counters
        self._buckets = {d: TokenBucket(ERRORS_PER_SECOND, ERROR_BURST) for d in Direction}

    def ingress(self, data: bytes, ip: packets.Ipv4, side: Side, now: float
                ) -> tuple[bytes, packets.Ipv4] | None:
        """A fragment from the switch (``data`` its frame, ``ip`` as decoded) from the
        ``side`` it came from: fragments from inside ports and from the outside make
        separate datagrams. One from an inside port must have passed the inside
        admission first (``alg.neighbours.NeighbourTable.admit_inside``), as a whole
        packet does.

        Returns:
            The frame of the whole datagram (this fragment's Ethernet header) and its
            decoded IPv4 packet, when this fragment completes a GRE datagram or a control
            segment; None while the datagram is incomplete or when it was refused
            (counted).
        """
        raw = packets.ip_bytes(data)
        direction = Direction.OUTBOUND if side is Side.INSIDE else Direction.INBOUND
        if not (ip.proto == packets.PROTO_GRE or self._control_segment(ip, raw, direction)):
            self._app_counters.fragments_dropped += 1
            return None
        whole = self.reassembler.add(raw, now, direction)
        if whole is None:
            return None
        frame = data[:packets.ETH.size] + whole
        decoded = packets.decode_frame(frame)
        assert decoded is not None and decoded.ip is not None
        return frame, decoded.ip

    def _control_segment(self, ip: packets.Ipv4, raw: bytes, direction: Direction) -> bool:
        """Whether a TCP fragment belongs to a control segment (ALG on): the first
        fragment names port 1723; a later one joins a first fragment held. A later
        fragment that comes first is dropped (TCP sends the segment again), and so are
        the later fragments of other TCP, whose first fragments the NAT's entries
        forward: none is held for nothing."""
        if not self._alg or ip.proto != packets.PROTO_TCP:
            return False
        header = parse_header(raw)
        if header is None:
            return False
        if header.offset == 0:
            return PPTP_PORT in (packets.decode_ports(ip) or ())
        return self.reassembler.holds(header, direction)

    def too_big(self, ip: bytes) -> bool:
        """Whether the packet ``ip`` exceeds the MTU with DF set (it may not be sent)."""
        if len(ip) <= self.mtu:
            return False
        header = parse_header(ip)
        return header is not None and header.total > self.mtu and header.dont_fragment

    def egress(self, ip: bytes) -> list[bytes]:
        """The packet ``ip`` as it leaves: whole, or in pieces of at most the MTU (counted
        in ``fragments_sent``); none when it may not be split (see :meth:`too_big`)."""
        if len(ip) <= self.mtu:
            return [ip]
        pieces = fragment(ip, self.mtu) or []
        if len(pieces) > 1:
            self._counters.fragments_sent += len(pieces)
        return pieces

    def refuse(self, emit: Emit, original: packets.Ipv4 | None, now: float) -> Output:
        """The ICMP fragmentation needed about ``original``, whose translation ``emit``
        is too big for the MTU with DF set; nothing where a router sends none."""
        if original is None or not is_unicast_host(original.src) or (
                original.proto == packets.PROTO_ICMP and len(original.payload) > 0
                and original.payload[0] in ERROR_TYPES):
            return Output(drop_reason="too big, DF set (no error about it)")
        source: IPv4Address = self._inside_address
        back = Direction.INBOUND
        if emit.direction is Direction.INBOUND:
            source, back = original.dst, Direction.OUTBOUND
        if not self._buckets[back].take(now):
            self._counters.icmp_rate_limited += 1
            return Output(drop_reason="too big, DF set; ICMP error rate limit")
        self._counters.fragmentation_needed_sent += 1
        raw = packets.build_ipv4(
            original.src, original.dst, original.proto, original.payload, ttl=original.ttl,
            ident=original.ident, tos=original.tos, options=original.options,
            dont_fragment=original.dont_fragment)
        out = Output()
        out.emits.append(SendIcmp(back, source, original.src,
                                  fragmentation_needed(raw, self.mtu)))
        return out
