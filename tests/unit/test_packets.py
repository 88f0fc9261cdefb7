"""Frame decoding and building, cross-checked with Scapy's checksums."""

from __future__ import annotations

from ipaddress import IPv4Address

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from alg.events import TcpSegment
from ryu_apps import packets

A = IPv4Address("192.168.1.1")
B = IPv4Address("203.0.113.1")


def test_decode_tcp_frame_with_options_and_payload() -> None:
    frame = bytes(
        Ether(src="0a:00:00:00:00:01", dst="02:00:5e:00:01:fe")
        / IP(src=str(A), dst=str(B), ttl=9, id=77)
        / TCP(sport=40000, dport=1723, seq=5, ack=6, flags="PA", window=999,
              options=[("MSS", 1460), ("NOP", None), ("NOP", None)])
        / b"hello"
    )
    decoded = packets.decode_frame(frame)
    assert decoded is not None and decoded.ip is not None
    assert decoded.ip.ttl == 9 and decoded.ip.ident == 77
    seg = packets.decode_tcp(decoded.ip)
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.window) == (40000, 1723, 5, 6, 999)
    assert seg.payload == b"hello"
    assert len(seg.options) == 8


def test_built_tcp_has_the_checksum_scapy_computes() -> None:
    seg = TcpSegment(A, 40000, B, 1723, 2**32 - 1, 17, 0x18, 512, b"payload!", b"\x01\x01")
    ip = packets.build_ipv4(A, B, packets.PROTO_TCP, packets.build_tcp(seg), ttl=33)
    parsed = IP(ip)
    fresh = IP(ip)
    del fresh.chksum
    del fresh[TCP].chksum
    fresh = IP(bytes(fresh))
    assert parsed.chksum == fresh.chksum
    assert parsed[TCP].chksum == fresh[TCP].chksum
    assert parsed[TCP].seq == 2**32 - 1 and bytes(parsed[TCP].payload) == b"payload!"


def test_translation_fixes_udp_and_icmp_checksums() -> None:
    udp = bytes(IP(bytes(IP(src=str(A), dst=str(B)) / UDP(sport=5000, dport=53) / b"q"))[UDP])
    assert udp[6:8] != b"\0\0"
    moved = packets.translate_l4(packets.PROTO_UDP, udp, 6000, 53, True)
    fixed = packets.fix_l4(IPv4Address("203.0.113.2"), B, packets.PROTO_UDP, moved)
    check = IP(bytes(IP(src="203.0.113.2", dst=str(B), proto=17) / UDP(fixed)))
    recomputed = UDP(bytes(check[UDP]))
    del recomputed.chksum
    expected = IP(bytes(IP(src="203.0.113.2", dst=str(B)) / recomputed))[UDP].chksum
    assert check[UDP].sport == 6000 and check[UDP].chksum == expected
    unchecked = bytes(UDP(sport=1, dport=2, chksum=0) / b"q")
    assert packets.fix_l4(A, B, packets.PROTO_UDP, unchecked) == unchecked

    icmp = bytes(ICMP(type=0, id=9, seq=1) / b"x")
    moved = packets.translate_l4(packets.PROTO_ICMP, icmp, 0, 4242, False)
    fixed = packets.fix_l4(B, A, packets.PROTO_ICMP, moved)
    reparsed = ICMP(fixed)
    assert reparsed.id == 4242
    clean = ICMP(fixed)
    del clean.chksum
    assert ICMP(bytes(clean)).chksum == reparsed.chksum
    assert packets.decode_icmp_echo(packets.Ipv4(B, A, 1, 64, 0, 0, b"", fixed)) == (0, 4242)


def test_arp_round_trip() -> None:
    body = packets.build_arp(packets.ARP_REQUEST, b"\x02" * 6, A, b"\0" * 6, B)
    frame = packets.build_ethernet(packets.BROADCAST, b"\x02" * 6, packets.ETH_TYPE_ARP, body)
    decoded = packets.decode_frame(frame)
    assert decoded is not None and decoded.arp is not None
    assert (decoded.arp.sender_ip, decoded.arp.target_ip) == (A, B)
    assert ARP(body).pdst == str(B)
    assert packets.mac_text(packets.mac_bytes("0a:0b:0c:0d:0e:0f")) == "0a:0b:0c:0d:0e:0f"


def test_short_or_foreign_frames_decode_to_none() -> None:
    assert packets.decode_frame(b"\0" * 10) is None
    assert packets.decode_frame(bytes(Ether(type=0x86DD)) + b"\0" * 40) is None
    ip = bytes(Ether() / IP(src=str(A), dst=str(B)) / TCP())
    assert packets.decode_frame(ip[:20]) is None
    truncated = packets.decode_frame(ip[:-1])
    assert truncated is None
    short_arp = bytes(Ether(type=0x0806)) + b"\0" * 10
    assert packets.decode_frame(short_arp) is None
    decoded = packets.decode_frame(bytes(Ether() / IP(src=str(A), dst=str(B), proto=6) / b"ab"))
    assert decoded is not None and decoded.ip is not None
    assert packets.decode_tcp(decoded.ip) is None
    assert packets.decode_ports(decoded.ip) is None
    assert packets.decode_icmp_echo(decoded.ip) is None


def _ip(packet: IP) -> packets.Ipv4:
    decoded = packets.decode_frame(bytes(Ether() / packet))
    assert decoded is not None and decoded.ip is not None
    return decoded.ip


def test_fragment_and_dont_fragment_flags_are_decoded() -> None:
    whole = _ip(IP(src=str(A), dst=str(B)) / UDP() / b"x")
    assert not whole.dont_fragment and not whole.fragment
    df = _ip(IP(src=str(A), dst=str(B), flags="DF") / UDP() / b"x")
    assert df.dont_fragment and not df.fragment
    first = _ip(IP(src=str(A), dst=str(B), flags="MF", proto=17) / (b"\0" * 16))
    assert first.fragment and not first.dont_fragment
    later = _ip(IP(src=str(A), dst=str(B), frag=185, proto=17) / (b"\0" * 16))
    assert later.fragment
    last_df = _ip(IP(src=str(A), dst=str(B), flags="DF", frag=1, proto=17) / (b"\0" * 8))
    assert last_df.fragment and last_df.dont_fragment


def test_build_ipv4_sets_dont_fragment_only_when_asked() -> None:
    plain = IP(packets.build_ipv4(A, B, packets.PROTO_GRE, b"\0" * 8, ident=9))
    assert plain.flags == 0 and plain.frag == 0 and plain.id == 9
    df = IP(packets.build_ipv4(A, B, packets.PROTO_GRE, b"\0" * 8, dont_fragment=True, tos=4))
    assert df.flags == "DF" and df.frag == 0 and df.tos == 4
    fresh = IP(bytes(df))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == df.chksum
    assert _ip(df).dont_fragment


def _corrupt(packet: bytes, offset: int) -> bytes:
    """``packet`` with one byte at ``offset`` from the end of the IP header flipped."""
    ihl = (packet[0] & 0x0F) * 4
    data = bytearray(packet)
    data[ihl + offset] ^= 0x40
    return bytes(data)


def test_l4_checksum_ok_accepts_scapy_checksums_and_refuses_corrupted_ones() -> None:
    built = [
        IP(src=str(A), dst=str(B)) / TCP(sport=40000, dport=1723, flags="PA") / b"hello",
        IP(src=str(A), dst=str(B), options=b"\x01\x01\x01\x01")
        / TCP(sport=1, dport=2, options=[("MSS", 1460)]) / b"odd",
        IP(src=str(A), dst=str(B)) / UDP(sport=5000, dport=53) / b"query",
        IP(src=str(A), dst=str(B)) / ICMP(type=8, id=7, seq=1) / b"ping!",
    ]
    for packet in built:
        raw = bytes(packet)
        assert packets.l4_checksum_ok(_ip(IP(raw))), packet.summary()
        # A flipped payload byte (the last) and a wrong checksum field both fail.
        ihl = (raw[0] & 0x0F) * 4
        assert not packets.l4_checksum_ok(_ip(IP(_corrupt(raw, len(raw) - ihl - 1))))
        wrong = packet.copy()
        wrong.payload.chksum = (IP(raw).payload.chksum + 1) & 0xFFFF
        assert not packets.l4_checksum_ok(_ip(IP(bytes(wrong))))


def test_l4_checksum_ok_edge_cases() -> None:
    no_checksum = IP(src=str(A), dst=str(B)) / UDP(sport=1, dport=2, chksum=0) / b"x"
    assert packets.l4_checksum_ok(_ip(no_checksum))
    # A UDP checksum that computes to 0 is sent as 0xFFFF (RFC 768): choose the payload
    # word that makes the sum come out so.
    zero_word = bytes(IP(src=str(A), dst=str(B)) / UDP(sport=1, dport=2) / b"\0\0")
    word = IP(zero_word)[UDP].chksum
    ones = IP(bytes(IP(src=str(A), dst=str(B)) / UDP(sport=1, dport=2)
                    / word.to_bytes(2, "big")))
    assert ones[UDP].chksum == 0xFFFF
    assert packets.l4_checksum_ok(_ip(ones))
    gre = IP(src=str(A), dst=str(B), proto=47) / b"\x30\x01\x88\x0b\0\0\0\0"
    assert packets.l4_checksum_ok(_ip(gre))
    for proto in (packets.PROTO_TCP, packets.PROTO_UDP, packets.PROTO_ICMP):
        assert not packets.l4_checksum_ok(_ip(IP(src=str(A), dst=str(B), proto=proto) / b"ab"))
