"""Decoding and building of the frames the gateway handles: Ethernet, ARP, IPv4, TCP,
UDP, ICMP and GRE. Pure functions over bytes; checksums per RFC 791/793/768/792.

Every unpack is preceded by a length check; a frame too short or not IPv4/ARP decodes to
None (the app drops it and counts it).

IP fragments: ``decode_frame`` marks them (:attr:`Ipv4.fragment`). Those of GRE and of
control segments (TCP/1723) are reassembled (``ryu_apps.fragments`` over
``alg.defrag``): the ALG needs the GRE key and the TCP header and PPTP fields, which
only a datagram's first fragment holds; the app drops the others and counts them
(``fragments_dropped``): the NAT's own entries pass later fragments of a session only
where the switch matches them, and the datapath's reassembly is the place for them.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, assert_never

from alg.defrag import IP_DF, IP_MF, IP_OFFSET_MASK
from alg.events import (
    Direction,
    Emit,
    Forward,
    GrePacket,
    IcmpEcho,
    IcmpMessage,
    Packet,
    SendGre,
    SendIcmp,
    SendTcp,
    TcpSegment,
    UdpDatagram,
)
from alg.icmp import ECHO_REPLY as ICMP_ECHO_REPLY
from alg.icmp import ECHO_REQUEST as ICMP_ECHO_REQUEST
from alg.icmp import checksum
from alg.neighbours import ArpMessage, ArpReply, ArpRequest

ETH = struct.Struct("!6s6sH")
ARP = struct.Struct("!HHBBH6s4s6s4s")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
ICMP_ECHO = struct.Struct("!BBHHH")
WORD = struct.Struct("!H")


ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
BROADCAST = b"\xff" * 6


@functools.lru_cache(maxsize=4096)
def mac_bytes(mac: str) -> bytes:
    """``"02:00:00:00:00:01"`` -> 6 bytes."""
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(mac: bytes) -> str:
    """6 bytes -> ``"02:00:00:00:00:01"``."""
    return mac.hex(":")


def _pseudo_header(src: IPv4Address, dst: IPv4Address, proto: int, length: int) -> bytes:
    return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)


@dataclass(frozen=True)
class Ipv4:
    """An IPv4 packet, header fields plus the L4 bytes (options kept raw).

    Attributes:
        dont_fragment: the DF flag.
        fragment: part of a fragmented datagram (MF set or a non-zero offset).
    """

    src: IPv4Address
    dst: IPv4Address
    proto: int
    ttl: int
    ident: int
    tos: int
    options: bytes
    payload: bytes
    dont_fragment: bool = False
    fragment: bool = False


@dataclass(frozen=True)
class Frame:
    """A decoded Ethernet frame: exactly one of ``arp`` or ``ip`` is set.

    Attributes:
        src_mac: the frame's source MAC, as ``aa:bb:..`` text.
    """

    src_mac: str
    arp: ArpMessage | None = None
    ip: Ipv4 | None = None


def decode_frame(data: bytes) -> Frame | None:
    """Decode an Ethernet frame; None when it is neither ARP nor valid IPv4."""
    if len(data) < ETH.size:
        return None
    _dst, src, eth_type = ETH.unpack_from(data)
    body = data[ETH.size :]
    if eth_type == ETH_TYPE_ARP:
        if len(body) < ARP.size:
            return None
        htype, ptype, hlen, plen, op, smac, sip, _tmac, tip = ARP.unpack_from(body)
        if (htype, ptype, hlen, plen) != (1, ETH_TYPE_IPV4, 6, 4):
            return None
        arp = ArpMessage(op, mac_text(smac), IPv4Address(sip), IPv4Address(tip))
        return Frame(mac_text(src), arp=arp)
    if eth_type != ETH_TYPE_IPV4 or len(body) < IPV4.size:
        return None
    ver_ihl, tos, total, ident, frag, ttl, proto, _csum, sip, dip = IPV4.unpack_from(body)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < IPV4.size or total < ihl or len(body) < total:
        return None
    ip = Ipv4(
        IPv4Address(sip), IPv4Address(dip), proto, ttl, ident, tos,
        bytes(body[IPV4.size : ihl]), bytes(body[ihl:total]),
        dont_fragment=bool(frag & IP_DF),
        fragment=bool(frag & IP_MF) or bool(frag & IP_OFFSET_MASK),
    )
    return Frame(mac_text(src), ip=ip)


def decode_tcp(ip: Ipv4) -> TcpSegment | None:
    """The TCP segment of an IPv4 packet; None when too short."""
    data = ip.payload
    if len(data) < TCP.size:
        return None
    sport, dport, seq, ack, offset, flags, window, _csum, _urg = TCP.unpack_from(data)
    header_len = (offset >> 4) * 4
    if header_len < TCP.size or len(data) < header_len:
        return None
    return TcpSegment(
        ip.src, sport, ip.dst, dport, seq, ack, flags, window,
        payload=bytes(data[header_len:]), options=bytes(data[TCP.size : header_len]),
    )


def decode_ports(ip: Ipv4) -> tuple[int, int] | None:
    """Source and destination port of a TCP or UDP packet; None when too short."""
    if len(ip.payload) < 4:
        return None
    sport, dport = struct.unpack_from("!HH", ip.payload)
    return sport, dport


def decode_icmp_echo(ip: Ipv4) -> tuple[int, int] | None:
    """(type, identifier) of an ICMP echo request or reply; None for anything else."""
    if len(ip.payload) < ICMP_ECHO.size:
        return None
    icmp_type, code, _csum, ident, _seq = ICMP_ECHO.unpack_from(ip.payload)
    if icmp_type not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY) or code != 0:
        return None
    return icmp_type, ident


def decode_l4(ip: Ipv4) -> Packet | None:
    """What the core needs of a TCP, UDP, ICMP or GRE packet; None for anything else
    (another protocol, a truncated TCP or UDP header, ICMP shorter than its header)."""
    if ip.proto == PROTO_TCP:
        return decode_tcp(ip)
    if ip.proto == PROTO_UDP:
        ports = decode_ports(ip)
        return None if ports is None else UdpDatagram(ip.src, ports[0], ip.dst, ports[1])
    if ip.proto == PROTO_ICMP:
        echo = decode_icmp_echo(ip)
        if echo is not None:
            return IcmpEcho(ip.src, ip.dst, echo[1], echo[0] == ICMP_ECHO_REQUEST)
        if len(ip.payload) < ICMP_ECHO.size:
            return None
        return IcmpMessage(ip.src, ip.dst, ip.payload)
    if ip.proto == PROTO_GRE:
        return GrePacket(ip.src, ip.dst, ip.payload)
    return None


def build_ipv4(
    src: IPv4Address, dst: IPv4Address, proto: int, payload: bytes, *, ttl: int = 64,
    ident: int = 0, tos: int = 0, options: bytes = b"", dont_fragment: bool = False,
) -> bytes:
    """An IPv4 packet with a correct header checksum, not a fragment (DF as asked)."""
    ihl = (IPV4.size + len(options)) // 4
    header = IPV4.pack(
        0x40 | ihl, tos, IPV4.size + len(options) + len(payload), ident,
        IP_DF if dont_fragment else 0, ttl, proto, 0, src.packed, dst.packed,
    ) + options
    csum = checksum(header)
    return header[:10] + WORD.pack(csum) + header[12:] + payload


def build_tcp(seg: TcpSegment) -> bytes:
    """The TCP header, options and payload of ``seg`` with a correct checksum."""
    options = seg.options + b"\0" * (-len(seg.options) % 4)
    offset = ((TCP.size + len(options)) // 4) << 4
    header = TCP.pack(
        seg.src_port, seg.dst_port, seg.seq % (1 << 32), seg.ack % (1 << 32), offset,
        seg.flags, seg.window, 0, 0,
    ) + options
    segment = header + seg.payload
    csum = checksum(_pseudo_header(seg.src_ip, seg.dst_ip, PROTO_TCP, len(segment)) + segment)
    return segment[:16] + WORD.pack(csum) + segment[18:]


def fix_l4(src: IPv4Address, dst: IPv4Address, proto: int, l4: bytes) -> bytes:
    """``l4`` with its checksum recomputed (TCP, UDP, ICMP); other protocols unchanged."""
    if proto == PROTO_TCP and len(l4) >= TCP.size:
        zeroed = l4[:16] + b"\0\0" + l4[18:]
        csum = checksum(_pseudo_header(src, dst, proto, len(l4)) + zeroed)
        return l4[:16] + WORD.pack(csum) + l4[18:]
    if proto == PROTO_UDP and len(l4) >= UDP.size:
        if l4[6:8] == b"\0\0":
            return l4
        zeroed = l4[:6] + b"\0\0" + l4[8:]
        csum = checksum(_pseudo_header(src, dst, proto, len(l4)) + zeroed) or 0xFFFF
        return l4[:6] + WORD.pack(csum) + l4[8:]
    if proto == PROTO_ICMP and len(l4) >= ICMP_ECHO.size:
        zeroed = l4[:2] + b"\0\0" + l4[4:]
        return l4[:2] + WORD.pack(checksum(zeroed)) + l4[4:]
    return l4


def l4_checksum_ok(ip: Ipv4) -> bool:
    """True when the L4 checksum of ``ip`` verifies.

    Checked: TCP always, UDP unless its checksum field is 0 (no checksum), ICMP. Other
    protocols pass. A TCP, UDP or ICMP payload too short to hold its checksum fails.
    """
    l4 = ip.payload
    if ip.proto == PROTO_TCP:
        if len(l4) < TCP.size:
            return False
        return checksum(_pseudo_header(ip.src, ip.dst, PROTO_TCP, len(l4)) + l4) == 0
    if ip.proto == PROTO_UDP:
        if len(l4) < UDP.size:
            return False
        if l4[6:8] == b"\0\0":
            return True
        return checksum(_pseudo_header(ip.src, ip.dst, PROTO_UDP, len(l4)) + l4) == 0
    if ip.proto == PROTO_ICMP:
        return len(l4) >= 4 and checksum(l4) == 0
    return True


def translate_l4(proto: int, l4: bytes, src_port: int, dst_port: int, icmp_out: bool) -> bytes:
    """Set the ports (TCP, UDP) or the echo identifier (ICMP) of ``l4``.

    For ICMP the identifier is ``src_port`` going out (``icmp_out``), else ``dst_port``.
    """
    if proto in (PROTO_TCP, PROTO_UDP) and len(l4) >= 4:
        return struct.pack("!HH", src_port, dst_port) + l4[4:]
    if proto == PROTO_ICMP and len(l4) >= ICMP_ECHO.size:
        ident = src_port if icmp_out else dst_port
        return l4[:4] + WORD.pack(ident) + l4[6:]
    return l4


def build_ethernet(dst_mac: bytes, src_mac: bytes, eth_type: int, payload: bytes) -> bytes:
    """An Ethernet II frame."""
    return ETH.pack(dst_mac, src_mac, eth_type) + payload


def build_arp(
    opcode: int, sender_mac: bytes, sender_ip: IPv4Address, target_mac: bytes,
    target_ip: IPv4Address,
) -> bytes:
    """An ARP packet body (no Ethernet header)."""
    return ARP.pack(
        1, ETH_TYPE_IPV4, 6, 4, opcode, sender_mac, sender_ip.packed, target_mac,
        target_ip.packed,
    )


def arp_reply_frame(reply: ArpReply, gateway_mac: str) -> bytes:
    """The frame of an :class:`~alg.neighbours.ArpReply`: the gateway's MAC as the answer."""
    gw_mac = mac_bytes(gateway_mac)
    body = build_arp(
        ARP_REPLY, gw_mac, reply.sender_ip, mac_bytes(reply.target_mac), reply.target_ip
    )
    return build_ethernet(mac_bytes(reply.dst_mac), gw_mac, ETH_TYPE_ARP, body)


def arp_request_frame(request: ArpRequest, gateway_mac: str) -> bytes:
    """The broadcast frame of an :class:`~alg.neighbours.ArpRequest`."""
    gw_mac = mac_bytes(gateway_mac)
    body = build_arp(ARP_REQUEST, gw_mac, request.sender_ip, b"\0" * 6, request.target_ip)
    return build_ethernet(BROADCAST, gw_mac, ETH_TYPE_ARP, body)


def is_echo_request(ip: Ipv4) -> bool:
    """True for an ICMP echo request."""
    echo = decode_icmp_echo(ip) if ip.proto == PROTO_ICMP else None
    return echo is not None and echo[0] == ICMP_ECHO_REQUEST


def echo_reply(ip: Ipv4) -> bytes:
    """The IPv4 echo reply to an echo request ``ip`` (same identifier, sequence, data)."""
    reply = fix_l4(ip.dst, ip.src, PROTO_ICMP, bytes([ICMP_ECHO_REPLY]) + ip.payload[1:])
    return build_ipv4(ip.dst, ip.src, PROTO_ICMP, reply)


def ip_bytes(frame: bytes) -> bytes:
    """The IPv4 packet of an Ethernet frame that :func:`decode_frame` decoded: from its
    header to its total length (no Ethernet padding)."""
    body = frame[ETH.size:]
    (total,) = WORD.unpack_from(body, 2)
    return bytes(body[:total])


def inherited_header(original: Ipv4 | None) -> dict[str, Any] | None:
    """IPv4 header fields of a packet the gateway sends on behalf of ``original``.

    The original's TTL less one, identification, TOS and DF; the defaults without an
    original; None when the original's TTL is spent (the packet must not be sent).
    """
    if original is None:
        return {}
    if original.ttl <= 1:
        return None
    return {
        "ttl": original.ttl - 1, "ident": original.ident, "tos": original.tos,
        "dont_fragment": original.dont_fragment,
    }


def emit_packet(emit: Emit, original: Ipv4 | None, header: dict[str, Any]) -> bytes | None:
    """The IPv4 packet of one of the core's emits; None for a Forward without original."""
    match emit:
        case Forward(direction=direction, translation=t):
            if original is None:
                return None
            outbound = direction is Direction.OUTBOUND
            l4 = translate_l4(original.proto, original.payload, t.src_port, t.dst_port, outbound)
            l4 = fix_l4(t.src_ip, t.dst_ip, original.proto, l4)
            return build_ipv4(
                t.src_ip, t.dst_ip, original.proto, l4, options=original.options, **header
            )
        case SendTcp(segment=seg):
            return build_ipv4(seg.src_ip, seg.dst_ip, PROTO_TCP, build_tcp(seg), **header)
        case SendGre(src_ip=src, dst_ip=dst, gre=gre):
            return build_ipv4(src, dst, PROTO_GRE, gre, **header)
        case SendIcmp(src_ip=src, dst_ip=dst, icmp=icmp):
            return build_ipv4(src, dst, PROTO_ICMP, icmp, **header)
        case _:
            assert_never(emit)


def emit_destination(emit: Emit) -> IPv4Address:
    """Where one of the core's emits goes (its IPv4 destination)."""
    match emit:
        case Forward(translation=t):
            return t.dst_ip
        case SendTcp(segment=seg):
            return seg.dst_ip
        case SendGre(dst_ip=dst) | SendIcmp(dst_ip=dst):
            return dst
        case _:
            assert_never(emit)
