"""ICMP errors through the NAT (RFC 5508), and the gateway's own Time Exceeded.

An ICMP error quotes the IP header and the first bytes of the packet it is about (RFC 792).
An error about a packet the gateway translated must reach the host that sent it with the
quoted packet translated back, or path-MTU discovery (RFC 1191) and traceroute fail.

* **From outside** (:attr:`~alg.events.Direction.INBOUND`): the quoted packet left from a
  public address. Its NAT session (TCP, UDP, ICMP echo), call (GRE with the ALG on, by the
  server's Call ID in the key) or ALG-off binding gives the inside host; the error goes
  to it with the quoted source address and port (echo identifier) restored.
* **From inside** (:attr:`~alg.events.Direction.OUTBOUND`): an inside host's error about
  a packet it received through the gateway (a UDP port unreachable, say). The quoted
  destination becomes the public address and port again (with the ALG on, a GRE key the
  client's Call ID becomes the public one), and the error leaves from the public address.

The quoted header's checksum and the quoted transport checksum (when the quote holds it;
a UDP checksum of 0 stays 0) are adjusted incrementally (RFC 1624), so a checksum that
was wrong stays wrong; the ICMP checksum is computed afresh. Errors are translated only
for Destination Unreachable, Time Exceeded and Parameter Problem (RFC 5508 section 6);
other ICMP types (redirects, source quench, queries but echo) are dropped and counted
(``icmp_unsupported``), as are errors whose quote is too short to translate
(``icmp_malformed``) and errors that match no state (``icmp_errors_unmatched``). An
error never refreshes a session's idle time.

**Time Exceeded.** A packet the gateway would forward with a TTL of 1 or less is
answered (RFC 1812 section 5.3.1) instead of forwarded, and makes no state. From inside
the answer comes from the gateway's inside address; from outside, only for a packet that
matches state (any other is addressed to the gateway itself), from the public address it
was sent to. No error is sent about an ICMP error or to a source that is not a unicast
host (RFC 1812 section 4.3.2.7), and at most :data:`ERROR_BURST` errors in a burst,
refilled at :data:`ERRORS_PER_SECOND`, to each source (``icmp_rate_limited``): one host's
probes never spend another's budget. The budgets are a table of at most
:data:`MAX_SOURCES` sources; a source's budget untouched until it is full again is
forgotten (a new one is the same), and a new source finding the table full of budgets
in use gets no error (``icmp_sources_refused``). On top of these, all the errors sent
each way share one budget of :data:`GLOBAL_ERROR_BURST` refilled at
:data:`GLOBAL_ERRORS_PER_SECOND` (RFC 1812 section 4.3.2.8 asks a router to limit the
rate of the ICMP errors it sends): many sources, spoofed ones among them, get no more
errors together than that (``icmp_rate_limited``), and no host alone can spend it, as
its own budget is smaller.

**Martians.** An ICMP error from outside whose source no outside router or host can have
(RFC 1812 section 5.3.7) is dropped and counted (``icmp_martians``): an inside address,
the gateway's own (a public address, its inside address), a loopback, multicast,
"this network" (0/8) or reserved address, the limited broadcast or the outside subnet's
broadcast address. Such an error would otherwise reach an inside host as if a router on
the path had sent it.

An inside host's error is translated only when it comes from the host the quoted packet
was for and goes to the host that sent it: the inside is one on-link subnet, with no
routers behind it. An error that quotes a later fragment is not translated (its quote
has no transport header).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from alg.codec import (
    GRE_FLAG_C,
    GRE_FLAG_K,
    GRE_FLAG_R,
    GRE_FLAG_STRICT,
    GRE_FLAGS,
    GRE_PROTOCOL_PPP,
    GRE_RECUR,
    GRE_VERSION,
)
from alg.counters import Counters
from alg.errors import IcmpFormatError
from alg.events import (
    Direction,
    GrePacket,
    IcmpEcho,
    IcmpMessage,
    Output,
    Packet,
    SendIcmp,
    TcpSegment,
    UdpDatagram,
)
from alg.nat import NatTable, Proto
from alg.plaingre import PlainGreTable
from alg.servermap import ServerMap

HEADER = struct.Struct("!BBH4s")
"""Type, code, checksum and the 4 bytes that depend on the type (RFC 792)."""
IPV4 = struct.Struct("!BBHHHBBH4s4s")
PORTS = struct.Struct("!HH")
WORD = struct.Struct("!H")
GRE_KEY = struct.Struct("!HHHH")

ECHO_REPLY = 0
DESTINATION_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
ERROR_TYPES = frozenset({DESTINATION_UNREACHABLE, TIME_EXCEEDED, PARAMETER_PROBLEM})
TTL_EXCEEDED_IN_TRANSIT = 0

MAX_ERROR_LENGTH = 576
"""Longest IPv4 packet of an error the gateway builds (RFC 1812 section 4.3.2.3)."""
QUOTE_LENGTH = MAX_ERROR_LENGTH - IPV4.size - HEADER.size
ERRORS_PER_SECOND = 100.0
"""Time Exceeded errors a second to one source, once its burst is spent."""
ERROR_BURST = 100.0
"""Most Time Exceeded errors to one source at once."""
GLOBAL_ERRORS_PER_SECOND = 1000.0
"""Time Exceeded errors a second each way, to all sources together, once the burst is
spent (RFC 1812 section 4.3.2.8): ten times one source's, so that one host cannot spend
it alone."""
GLOBAL_ERROR_BURST = 1000.0
"""Most Time Exceeded errors each way, to all sources together, at once."""
MAX_SOURCES = 4096
"""Most sources with a Time Exceeded budget of their own at once."""
THIS_NETWORK = IPv4Network("0.0.0.0/8")
LOOPBACK = IPv4Network("127.0.0.0/8")
MULTICAST = IPv4Network("224.0.0.0/4")
RESERVED = IPv4Network("240.0.0.0/4")
LIMITED_BROADCAST = IPv4Address("255.255.255.255")

_CHECKSUM_OFFSET = {Proto.TCP: 16, Proto.UDP: 6, Proto.ICMP: 2}
_GRE_CHECKED = (GRE_FLAG_C | GRE_FLAG_R | GRE_FLAG_K | GRE_FLAG_STRICT | GRE_RECUR | GRE_FLAGS
                | GRE_VERSION)
_GRE_ENHANCED = GRE_FLAG_K | 1
_GRE_CALL_ID = 6
_FRAGMENT_OFFSET = 0x1FFF


def checksum(data: bytes) -> int:
    """The Internet checksum of ``data`` (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def adjust(csum: int, old: bytes, new: bytes) -> int:
    """A checksum after the 16-bit words ``old`` became ``new`` (RFC 1624, eqn. 3).

    Args:
        csum: the checksum as it was.
        old, new: the changed words, as bytes of the same even length.
    """
    total = ~csum & 0xFFFF
    for i in range(0, len(old), 2):
        total += ~WORD.unpack_from(old, i)[0] & 0xFFFF
        total += WORD.unpack_from(new, i)[0]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(frozen=True)
class Quote:
    """The packet an ICMP error quotes: its IPv4 header and what follows (often cut).

    Attributes:
        header: the quoted IPv4 header, options included.
        payload: the quoted bytes after it, at least 8 (RFC 792).
    """

    header: bytes
    payload: bytes

    @property
    def proto(self) -> int:
        """The quoted packet's protocol."""
        return self.header[9]

    @property
    def first_fragment(self) -> bool:
        """Whether the quoted packet starts its datagram (a later fragment has no
        transport header to translate)."""
        offset: int = WORD.unpack_from(self.header, 6)[0]
        return offset & _FRAGMENT_OFFSET == 0

    @property
    def src(self) -> IPv4Address:
        """The quoted packet's source address."""
        return IPv4Address(self.header[12:16])

    @property
    def dst(self) -> IPv4Address:
        """The quoted packet's destination address."""
        return IPv4Address(self.header[16:20])

    def ports(self) -> tuple[int, int]:
        """TCP or UDP source and destination port (ICMP: type and code, then ...)."""
        src_port, dst_port = PORTS.unpack_from(self.payload)
        return src_port, dst_port

    def echo_identifier(self) -> int | None:
        """The identifier of a quoted echo request, None for any other ICMP."""
        if self.payload[0] != ECHO_REQUEST:
            return None
        ident: int = WORD.unpack_from(self.payload, 4)[0]
        return ident

    def gre_call_id(self) -> int | None:
        """The Call ID in the key of quoted enhanced GRE (RFC 2637 section 4.1), None
        for other GRE."""
        return gre_call_id(self.payload)

    def rewritten(
        self,
        *,
        src: IPv4Address | None = None,
        dst: IPv4Address | None = None,
        src_port: int | None = None,
        dst_port: int | None = None,
        gre_call_id: int | None = None,
    ) -> bytes:
        """The quote with addresses, ports (ICMP: ``src_port`` is the echo identifier)
        or GRE Call ID replaced and its checksums adjusted (RFC 1624)."""
        header = bytearray(self.header)
        payload = bytearray(self.payload)
        old_addresses = bytes(header[12:20])
        if src is not None:
            header[12:16] = src.packed
        if dst is not None:
            header[16:20] = dst.packed
        new_addresses = bytes(header[12:20])
        header[10:12] = WORD.pack(adjust(WORD.unpack_from(header, 10)[0], old_addresses,
                                         new_addresses))
        proto = self.proto
        if proto in (Proto.TCP, Proto.UDP):
            old_ports = bytes(payload[0:4])
            old_src, old_dst = PORTS.unpack_from(old_ports)
            payload[0:4] = PORTS.pack(old_src if src_port is None else src_port,
                                      old_dst if dst_port is None else dst_port)
            self._fix(payload, Proto(proto), old_addresses + old_ports,
                      new_addresses + bytes(payload[0:4]))
        elif proto == Proto.ICMP and src_port is not None:
            old_ident = bytes(payload[4:6])
            payload[4:6] = WORD.pack(src_port)
            self._fix(payload, Proto.ICMP, old_ident, bytes(payload[4:6]))
        elif proto == Proto.GRE and gre_call_id is not None:
            payload[_GRE_CALL_ID:_GRE_CALL_ID + 2] = WORD.pack(gre_call_id)
        return bytes(header + payload)

    @staticmethod
    def _fix(payload: bytearray, proto: Proto, old: bytes, new: bytes) -> None:
        offset = _CHECKSUM_OFFSET[proto]
        if len(payload) < offset + 2:
            return
        csum: int = WORD.unpack_from(payload, offset)[0]
        if proto is Proto.UDP and csum == 0:
            return
        csum = adjust(csum, old, new)
        if proto is Proto.UDP and csum == 0:
            csum = 0xFFFF
        payload[offset:offset + 2] = WORD.pack(csum)


def gre_call_id(gre: bytes) -> int | None:
    """The Call ID in the key of enhanced GRE (RFC 2637 section 4.1: version 1, key
    present, PPP, the bits it forbids clear), None for other GRE or fewer than 8 bytes
    (the header's payload length is not checked: a quote is often cut)."""
    if len(gre) < GRE_KEY.size:
        return None
    flags, protocol, _length, call_id = GRE_KEY.unpack_from(gre)
    if flags & _GRE_CHECKED != _GRE_ENHANCED or protocol != GRE_PROTOCOL_PPP:
        return None
    result: int = call_id
    return result


class TokenBucket:
    """At most ``burst`` at once, refilled at ``rate`` a second (time passed in).

    Args:
        rate: tokens a second.
        burst: the most tokens held (full at the start).
    """

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._refilled: float | None = None

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self._refilled is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def full(self, now: float) -> bool:
        """Whether the bucket is full at ``now`` (as a new one would be)."""
        if self._refilled is None:
            return True
        return self._tokens + (now - self._refilled) * self._rate >= self._burst


class SourceBuckets:
    """A :class:`TokenBucket` for each source, at most ``cap`` of them.

    Whenever a new source comes, the buckets full again are forgotten (a new one is the
    same), the longest untouched first.

    Args:
        rate, burst: each bucket's.
        cap: the most buckets held.
    """

    def __init__(self, rate: float, burst: float, cap: int) -> None:
        self._rate = rate
        self._burst = burst
        self._cap = cap
        self._buckets: OrderedDict[object, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: object, now: float) -> bool | None:
        """Take a token from ``source``'s bucket: True, False when it is empty, None when
        the source has none and the table is full of buckets still in use."""
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            while buckets and next(iter(buckets.values())).full(now):
                buckets.popitem(last=False)
            if len(buckets) >= self._cap:
                return None
            bucket = buckets[source] = TokenBucket(self._rate, self._burst)
        else:
            buckets.move_to_end(source)
        return bucket.take(now)


class Martians:
    """Sources an ICMP error from outside cannot have (RFC 1812 section 5.3.7).

    Args:
        own: the gateway's addresses (public and inside).
        inside_subnet: the inside subnet, if known.
        outside_subnet: the on-link outside subnet, if known (its broadcast address).
    """

    def __init__(self, own: Iterable[IPv4Address], inside_subnet: IPv4Network | None = None,
                 outside_subnet: IPv4Network | None = None) -> None:
        self._addresses = set(own) | {LIMITED_BROADCAST}
        if outside_subnet is not None and outside_subnet.prefixlen < 31:
            self._addresses.add(outside_subnet.broadcast_address)
        self._inside = inside_subnet

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address):
            return False
        return (address in self._addresses or address.is_loopback or address.is_multicast
                or address.is_reserved or address in THIS_NETWORK
                or (self._inside is not None and address in self._inside))

    def networks(self) -> list[IPv4Network]:
        """The martian sources as networks, exactly the addresses ``in`` them, for
        entries that match them (the datapath's NAT)."""
        nets = [IPv4Network(address) for address in sorted(self._addresses)]
        nets += [LOOPBACK, MULTICAST, RESERVED, THIS_NETWORK]
        if self._inside is not None:
            nets.append(self._inside)
        return nets


def parse_quote(icmp: bytes) -> Quote:
    """The packet an ICMP error message quotes.

    Raises:
        IcmpFormatError: the message is too short for its header, or the quote is not
            IPv4 with its full header and 8 bytes after it.
    """
    if len(icmp) < HEADER.size + IPV4.size:
        raise IcmpFormatError(f"ICMP error of {len(icmp)} bytes quotes no IPv4 header")
    body = icmp[HEADER.size:]
    version_ihl = body[0]
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < IPV4.size:
        raise IcmpFormatError(f"quoted packet is not IPv4 (first byte {version_ihl:#04x})")
    if len(body) < ihl + 8:
        raise IcmpFormatError(f"quote of {len(body)} bytes: needs the {ihl}-byte header "
                              "and 8 bytes more")
    return Quote(bytes(body[:ihl]), bytes(body[ihl:]))


def build(icmp_type: int, code: int, rest: bytes, body: bytes) -> bytes:
    """An ICMP message with its checksum."""
    message = HEADER.pack(icmp_type, code, 0, rest) + body
    return message[:2] + WORD.pack(checksum(message)) + message[4:]


def time_exceeded(packet: bytes) -> bytes:
    """The Time Exceeded (TTL exceeded in transit) message about the IPv4 ``packet``,
    quoting as much of it as fits in :data:`MAX_ERROR_LENGTH`."""
    return build(TIME_EXCEEDED, TTL_EXCEEDED_IN_TRANSIT, bytes(4), packet[:QUOTE_LENGTH])


def is_unicast_host(address: IPv4Address) -> bool:
    """Whether an error may be sent to ``address`` (RFC 1812 section 4.3.2.7)."""
    return not (address.is_multicast or address.is_unspecified or address.is_loopback
                or address.is_reserved or address == IPv4Address("255.255.255.255"))


class IcmpErrors:
    """ICMP errors about the gateway's flows, and the gateway's own Time Exceeded.

    Args:
        counters: the core's counters.
        nat: the NAT sessions.
        server_map: the calls' GRE (ALG on).
        plain: the ALG-off GRE bindings.
        alg_enabled: whether GRE is the calls' (on) or the plain bindings' (off).
        inside_address: the gateway's inside address, the source of its errors to inside
            hosts (None: it sends them none).
        martians: sources an error from outside cannot have (default: those of any
            network, and the inside address).
    """

    def __init__(self, counters: Counters, nat: NatTable, server_map: ServerMap,
                 plain: PlainGreTable, alg_enabled: bool,
                 inside_address: IPv4Address | None = None,
                 martians: Martians | None = None) -> None:
        self._counters = counters
        self._nat = nat
        self._server_map = server_map
        self._plain = plain
        self._alg = alg_enabled
        self._inside_address = inside_address
        self._martians = martians if martians is not None else Martians(
            () if inside_address is None else (inside_address,))
        self._budgets = SourceBuckets(ERRORS_PER_SECOND, ERROR_BURST, MAX_SOURCES)
        self._global = {way: TokenBucket(GLOBAL_ERRORS_PER_SECOND, GLOBAL_ERROR_BURST)
                        for way in Direction}

    def error(self, direction: Direction, packet: IcmpMessage) -> Output:
        """An ICMP message other than echo that reached the controller: translated and
        sent on if it is an error about one of the gateway's flows, else dropped."""
        if direction is Direction.INBOUND and packet.src_ip in self._martians:
            self._counters.icmp_martians += 1
            return Output(drop_reason=f"ICMP from outside from martian {packet.src_ip}")
        icmp = packet.icmp
        if icmp[0] not in ERROR_TYPES:
            self._counters.icmp_unsupported += 1
            return Output(drop_reason=f"ICMP type {icmp[0]} is not translated")
        try:
            quote = parse_quote(icmp)
        except IcmpFormatError as exc:
            self._counters.icmp_malformed += 1
            return Output(drop_reason=str(exc))
        if not quote.first_fragment:
            sent = None
        elif direction is Direction.INBOUND:
            sent = self._from_outside(packet, quote)
        else:
            sent = self._from_inside(packet, quote)
        if sent is None:
            self._counters.icmp_errors_unmatched += 1
            return Output(drop_reason="ICMP error quotes no flow of the gateway")
        self._counters.icmp_errors_translated += 1
        src_ip, dst_ip, body = sent
        out = Output()
        out.emits.append(SendIcmp(direction, src_ip, dst_ip, build(
            icmp[0], icmp[1], icmp[HEADER.size - 4:HEADER.size], body)))
        return out

    def _from_outside(self, packet: IcmpMessage, quote: Quote
                      ) -> tuple[IPv4Address, IPv4Address, bytes] | None:
        public_ip, remote_ip = quote.src, quote.dst
        if public_ip != packet.dst_ip:
            return None
        proto = quote.proto
        if proto == Proto.GRE:
            client_ip = self._gre_client(public_ip, remote_ip, quote)
            if client_ip is None:
                return None
            return packet.src_ip, client_ip, quote.rewritten(src=client_ip)
        if proto in (Proto.TCP, Proto.UDP):
            public_port, remote_port = quote.ports()
        elif proto == Proto.ICMP and (ident := quote.echo_identifier()) is not None:
            public_port, remote_port = ident, 0
        else:
            return None
        session = self._nat.inbound(Proto(proto), public_ip, public_port, remote_ip,
                                    remote_port)
        if session is None:
            return None
        body = quote.rewritten(src=session.inside_ip, src_port=session.inside_port)
        return packet.src_ip, session.inside_ip, body

    def _gre_client(self, public_ip: IPv4Address, server_ip: IPv4Address, quote: Quote
                    ) -> IPv4Address | None:
        if not self._alg:
            binding = self._plain.inbound(server_ip, public_ip)
            return None if binding is None else binding.client_ip
        key = quote.gre_call_id()
        call = None if key is None else self._server_map.call_sent(public_ip, server_ip, key)
        return None if call is None else call.conn.client_ip

    def _from_inside(self, packet: IcmpMessage, quote: Quote
                     ) -> tuple[IPv4Address, IPv4Address, bytes] | None:
        remote_ip, inside_ip = quote.src, quote.dst
        if inside_ip != packet.src_ip or remote_ip != packet.dst_ip:
            return None
        proto = quote.proto
        if proto in (Proto.TCP, Proto.UDP):
            remote_port, inside_port = quote.ports()
            session = self._nat.find(Proto(proto), inside_ip, inside_port, remote_ip,
                                     remote_port)
            if session is None:
                return None
            body = quote.rewritten(dst=session.public_ip, dst_port=session.public_port)
            return session.public_ip, packet.dst_ip, body
        if proto != Proto.GRE:
            return None
        if not self._alg:
            binding = self._plain.outbound(inside_ip, remote_ip)
            if binding is None:
                return None
            return binding.public_ip, packet.dst_ip, quote.rewritten(dst=binding.public_ip)
        key = quote.gre_call_id()
        call = None if key is None else self._server_map.call_received(inside_ip, remote_ip,
                                                                       key)
        if call is None or call.public_call_id is None:
            return None
        public_ip = call.conn.public_ip
        body = quote.rewritten(dst=public_ip, gre_call_id=call.public_call_id)
        return public_ip, packet.dst_ip, body

    def expired(self, direction: Direction, packet: Packet, raw: bytes, now: float
                ) -> Output:
        """A packet to forward whose TTL is spent: answered with Time Exceeded.

        Args:
            direction: the way the packet was going.
            packet: what the app decoded of it.
            raw: the packet as it came, from its IPv4 header on (the error quotes it).
            now: the time.
        """
        src_ip, dst_ip = packet.src_ip, packet.dst_ip
        if isinstance(packet, IcmpMessage) or not is_unicast_host(src_ip):
            return Output(drop_reason="TTL expired (no error about it)")
        if direction is Direction.OUTBOUND:
            source = self._inside_address
        else:
            source = dst_ip if self._matches_inbound(packet) else None
        if source is None:
            return Output(drop_reason="TTL expired")
        back = Direction.INBOUND if direction is Direction.OUTBOUND else Direction.OUTBOUND
        allowed = self._budgets.take((back, src_ip), now)
        if allowed is None:
            self._counters.icmp_sources_refused += 1
            return Output(drop_reason="TTL expired; no room for another ICMP error budget")
        if not (allowed and self._global[back].take(now)):
            self._counters.icmp_rate_limited += 1
            return Output(drop_reason="TTL expired; ICMP error rate limit")
        self._counters.time_exceeded_sent += 1
        out = Output()
        out.emits.append(SendIcmp(back, source, src_ip, time_exceeded(raw)))
        return out

    def _matches_inbound(self, packet: Packet) -> bool:
        match packet:
            case TcpSegment(src_ip=src, src_port=sport, dst_ip=dst, dst_port=dport):
                return self._nat.inbound(Proto.TCP, dst, dport, src, sport) is not None
            case UdpDatagram(src_ip=src, src_port=sport, dst_ip=dst, dst_port=dport):
                return self._nat.inbound(Proto.UDP, dst, dport, src, sport) is not None
            case IcmpEcho(src_ip=src, dst_ip=dst, identifier=ident, request=False):
                return self._nat.inbound(Proto.ICMP, dst, ident, src, 0) is not None
            case GrePacket(src_ip=src, dst_ip=dst, gre=gre):
                if not self._alg:
                    return self._plain.inbound(src, dst) is not None
                key = gre_call_id(gre)
                return key is not None and self._server_map.has_inbound(src, dst, key)
            case _:
                return False
