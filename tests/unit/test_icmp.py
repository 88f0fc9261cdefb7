"""ICMP errors through the NAT (RFC 5508) and the gateway's Time Exceeded, in the core.

Errors are built and checked with Scapy, an independent ICMP and checksum implementation.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.packet import Raw

from alg import icmp
from alg.codec import GreHeader, parse_gre
from alg.engine import Gateway
from alg.errors import IcmpFormatError
from alg.events import (
    Direction,
    GrePacket,
    IcmpEcho,
    IcmpMessage,
    Output,
    SendIcmp,
    TcpSegment,
    UdpDatagram,
)
from alg.nat import NatSession, Proto
from tests.unit.pptp_flows import (
    C1,
    C2,
    PUBLIC,
    SERVER,
    ControlLink,
    gateway,
)

ROUTER = IPv4Address("198.51.100.9")
INSIDE_GW = IPv4Address("192.168.1.254")
OUT, IN = Direction.OUTBOUND, Direction.INBOUND


def udp_session(gw: Gateway, inside_port: int = 5000, remote_port: int = 53
                ) -> NatSession:
    gw.handle(OUT, UdpDatagram(C1, inside_port, SERVER, remote_port), 0.0)
    session = gw.nat.find(Proto.UDP, C1, inside_port, SERVER, remote_port)
    assert session is not None
    return session


def tcp_session(gw: Gateway) -> NatSession:
    gw.handle(OUT, TcpSegment(C1, 40000, SERVER, 80, 1000, 0, 0x02, 65535), 0.0)
    session = gw.nat.find(Proto.TCP, C1, 40000, SERVER, 80)
    assert session is not None
    return session


def error_from_outside(quoted: IP, icmp_type: int = 3, code: int = 3, **fields: int
                       ) -> IcmpMessage:
    """The ICMP message a router sends about ``quoted``, which left the gateway."""
    message = bytes(ICMP(type=icmp_type, code=code, **fields) / bytes(quoted))
    return IcmpMessage(ROUTER, IPv4Address(quoted.src), message)


def sent(out: Output) -> SendIcmp:
    [emit] = out.emits
    assert isinstance(emit, SendIcmp)
    return emit


def decoded(emit: SendIcmp) -> IP:
    """The emitted ICMP message in an IPv4 packet, as Scapy reads it back."""
    packet = IP(bytes(IP(src=str(emit.src_ip), dst=str(emit.dst_ip), proto=1) / Raw(emit.icmp)))
    return packet


def checksums_hold(packet: IP) -> None:
    """Every checksum Scapy can recompute over the emitted error verifies."""
    message = packet[ICMP]
    assert icmp.checksum(bytes(message)) == 0
    quoted = message.payload
    assert isinstance(quoted, IPerror)
    assert icmp.checksum(bytes(quoted)[: quoted.ihl * 4]) == 0


def test_port_unreachable_about_udp_reaches_the_inside_host_translated_back() -> None:
    gw = gateway()
    session = udp_session(gw)
    left = IP(src=str(PUBLIC), dst=str(SERVER), ttl=63) / UDP(
        sport=session.public_port, dport=53) / b"query"
    out = gw.handle(IN, error_from_outside(left), 1.0)
    emit = sent(out)
    assert (emit.direction, emit.src_ip, emit.dst_ip) == (IN, ROUTER, C1)
    packet = decoded(emit)
    checksums_hold(packet)
    assert (packet[ICMP].type, packet[ICMP].code) == (3, 3)
    quoted = packet[IPerror]
    assert (quoted.src, quoted.dst) == (str(C1), str(SERVER))
    assert (quoted[UDPerror].sport, quoted[UDPerror].dport) == (5000, 53)
    expected = IP(src=str(C1), dst=str(SERVER), ttl=63) / UDP(sport=5000, dport=53) / b"query"
    assert bytes(quoted) == bytes(IP(bytes(expected)))
    assert gw.counters.icmp_errors_translated == 1


def test_fragmentation_needed_about_tcp_keeps_the_mtu_and_fixes_the_tcp_checksum() -> None:
    gw = gateway()
    session = tcp_session(gw)
    segment = IP(src=str(PUBLIC), dst=str(SERVER), flags="DF") / TCP(
        sport=session.public_port, dport=80, seq=1001, flags="A") / (b"x" * 1400)
    out = gw.handle(IN, error_from_outside(segment, 3, 4, nexthopmtu=1280), 1.0)
    emit = sent(out)
    packet = decoded(emit)
    checksums_hold(packet)
    assert packet[ICMP].nexthopmtu == 1280
    quoted = IP(emit.icmp[8:])
    assert (quoted.src, quoted[TCP].sport, quoted[TCP].seq) == (str(C1), 40000, 1001)
    rebuilt = quoted.copy()
    del rebuilt.chksum, rebuilt[TCP].chksum
    assert IP(bytes(rebuilt))[TCP].chksum == quoted[TCP].chksum


def test_a_cut_quote_still_translates_what_it_holds() -> None:
    gw = gateway()
    session = tcp_session(gw)
    segment = IP(src=str(PUBLIC), dst=str(SERVER)) / TCP(sport=session.public_port, dport=80)
    quote = bytes(segment)[:28]
    message = bytes(ICMP(type=11, code=0) / quote)
    packet = decoded(sent(gw.handle(IN, IcmpMessage(ROUTER, PUBLIC, message), 1.0)))
    checksums_hold(packet)
    quoted = packet[IPerror]
    assert quoted.src == str(C1)
    assert quoted[TCPerror].sport == 40000


def test_an_error_about_an_echo_request_restores_the_identifier() -> None:
    gw = gateway()
    gw.handle(OUT, IcmpEcho(C1, SERVER, 77, True), 0.0)
    session = gw.nat.find(Proto.ICMP, C1, 77, SERVER, 0)
    assert session is not None
    request = IP(src=str(PUBLIC), dst=str(SERVER)) / ICMP(
        type=8, id=session.public_port, seq=3) / b"ping"
    packet = decoded(sent(gw.handle(IN, error_from_outside(request, 11, 0), 1.0)))
    checksums_hold(packet)
    inner = IP(bytes(packet[IPerror]))
    assert (inner.src, inner[ICMP].id, inner[ICMP].seq) == (str(C1), 77, 3)
    assert icmp.checksum(bytes(inner[ICMP])) == 0


def test_an_error_about_a_calls_gre_goes_to_the_client_of_that_call() -> None:
    gw = gateway()
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()
    l1.outgoing_call(5, 700)
    l2.outgoing_call(5, 701)
    gre = IP(src=str(PUBLIC), dst=str(SERVER), proto=47) / GreHeader(4, 701, 9).encode() / (
        b"\xff\x03\x00\x21")
    emit = sent(gw.handle(IN, error_from_outside(gre), 1.0))
    assert emit.dst_ip == C2
    packet = decoded(emit)
    checksums_hold(packet)
    assert IPv4Address(packet[IPerror].src) == C2
    unknown = IP(src=str(PUBLIC), dst=str(SERVER), proto=47) / GreHeader(0, 702).encode()
    assert gw.handle(IN, error_from_outside(unknown), 1.0).emits == []
    assert gw.counters.icmp_errors_unmatched == 1


def test_with_the_alg_off_an_error_about_gre_goes_to_the_bound_client() -> None:
    gw = gateway(alg_enabled=False)
    gw.handle(OUT, GrePacket(C1, SERVER, bytes(GRE(version=1, key_present=1))), 0.0)
    gre = IP(src=str(PUBLIC), dst=str(SERVER), proto=47) / GRE(version=1, key_present=1)
    assert sent(gw.handle(IN, error_from_outside(gre), 1.0)).dst_ip == C1


@pytest.mark.parametrize("quoted", [
    IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=1, dport=53),
    IP(src=str(PUBLIC), dst=str(SERVER), frag=100, proto=17) / (b"\x04\x00\x00\x35" * 4),
    IP(src=str(PUBLIC), dst=str(SERVER), proto=47) / (
        b"\xa0" + GreHeader(0, 5).encode()[1:]),  # C set: not enhanced GRE
    IP(src=str(PUBLIC), dst="198.51.100.1") / TCP(sport=1, dport=80),
    IP(src="203.0.113.77", dst=str(SERVER)) / UDP(sport=1, dport=53),
    IP(src=str(PUBLIC), dst=str(SERVER)) / ICMP(type=0, id=1),
    IP(src=str(PUBLIC), dst=str(SERVER), proto=50) / (b"\0" * 8),
])
def test_an_error_that_matches_no_binding_is_dropped_and_counted(quoted: IP) -> None:
    gw = gateway()
    udp_session(gw)
    ControlLink(gw, C1).start().outgoing_call(5, 5)
    message = IcmpMessage(ROUTER, PUBLIC, bytes(ICMP(type=3, code=1) / bytes(quoted)))
    out = gw.handle(IN, message, 1.0)
    assert out.emits == [] and out.drop_reason
    assert gw.counters.icmp_errors_unmatched == 1


@pytest.mark.parametrize("message", [
    bytes(ICMP(type=3, code=3)),
    bytes(ICMP(type=3, code=3) / bytes(IP(src=str(PUBLIC), dst=str(SERVER)))[:20]),
    bytes(ICMP(type=3, code=3) / (b"\x60" + b"\0" * 40)),
    bytes(ICMP(type=3, code=3) / (b"\x44" + b"\0" * 40)),
])
def test_a_malformed_error_is_dropped_and_counted(message: bytes) -> None:
    gw = gateway()
    out = gw.handle(IN, IcmpMessage(ROUTER, PUBLIC, message), 1.0)
    assert out.emits == []
    assert gw.counters.icmp_malformed == 1


@pytest.mark.parametrize("icmp_type", [4, 5, 13, 17])
def test_other_icmp_is_dropped_and_counted(icmp_type: int) -> None:
    gw = gateway()
    udp_session(gw)
    quoted = IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=1024, dport=53)
    message = IcmpMessage(ROUTER, PUBLIC, bytes(ICMP(type=icmp_type) / bytes(quoted)))
    assert gw.handle(IN, message, 1.0).emits == []
    assert gw.counters.icmp_unsupported == 1


def test_an_error_never_refreshes_the_session() -> None:
    gw = gateway()
    session = udp_session(gw)
    left = IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=session.public_port, dport=53)
    gw.handle(IN, error_from_outside(left), 50.0)
    assert session.last_seen == 0.0


def test_an_inside_hosts_port_unreachable_leaves_from_the_public_address() -> None:
    gw = gateway()
    session = udp_session(gw)
    reply = IP(src=str(SERVER), dst=str(C1)) / UDP(sport=53, dport=5000) / b"answer"
    message = IcmpMessage(C1, SERVER, bytes(ICMP(type=3, code=3) / bytes(reply)))
    emit = sent(gw.handle(OUT, message, 1.0))
    assert (emit.direction, emit.src_ip, emit.dst_ip) == (OUT, PUBLIC, SERVER)
    packet = decoded(emit)
    checksums_hold(packet)
    quoted = IP(bytes(packet[IPerror]))
    assert (quoted.dst, quoted[UDP].dport) == (str(PUBLIC), session.public_port)
    rebuilt = quoted.copy()
    del rebuilt[UDP].chksum
    assert IP(bytes(rebuilt))[UDP].chksum == quoted[UDP].chksum
    stray = IP(src=str(SERVER), dst=str(C1)) / UDP(sport=54, dport=5000)
    message = IcmpMessage(C1, SERVER, bytes(ICMP(type=3, code=3) / bytes(stray)))
    assert gw.handle(OUT, message, 1.0).emits == []
    forged = IcmpMessage(C2, SERVER, bytes(ICMP(type=3, code=3) / bytes(reply)))
    assert gw.handle(OUT, forged, 1.0).emits == []
    elsewhere = IcmpMessage(C1, IPv4Address("198.51.100.77"), bytes(
        ICMP(type=3, code=3) / bytes(reply)))
    assert gw.handle(OUT, elsewhere, 1.0).emits == []  # not to whom the quote came from
    assert gw.counters.icmp_errors_unmatched == 3


def test_a_clients_error_about_call_gre_gets_the_public_call_id_back() -> None:
    gw = gateway()
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()
    l1.outgoing_call(5, 700)
    b = l2.outgoing_call(5, 701)
    gre = IP(src=str(SERVER), dst=str(C2), proto=47) / GreHeader(0, 5).encode()
    emit = sent(gw.handle(OUT, IcmpMessage(C2, SERVER, bytes(
        ICMP(type=3, code=2) / bytes(gre))), 1.0))
    assert emit.src_ip == PUBLIC
    checksums_hold(decoded(emit))
    quoted = emit.icmp[8:]
    assert IPv4Address(quoted[16:20]) == PUBLIC
    assert parse_gre(quoted[20:]).call_id == b


def test_with_the_alg_off_a_clients_error_about_gre_leaves_from_its_public_address() -> None:
    gw = gateway(alg_enabled=False)
    gw.handle(OUT, GrePacket(C1, SERVER, bytes(GRE(version=1, key_present=1))), 0.0)
    gre = IP(src=str(SERVER), dst=str(C1), proto=47) / GRE(version=1, key_present=1)
    message = IcmpMessage(C1, SERVER, bytes(ICMP(type=3, code=2) / bytes(gre)))
    assert sent(gw.handle(OUT, message, 1.0)).src_ip == PUBLIC
    echo = IP(src=str(SERVER), dst=str(C1)) / ICMP(type=0)
    message = IcmpMessage(C1, SERVER, bytes(ICMP(type=3, code=2) / bytes(echo)))
    assert gw.handle(OUT, message, 1.0).emits == []


def test_time_exceeded_from_the_inside_address_quotes_the_packet() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    probe = IP(src=str(C1), dst=str(SERVER), ttl=1, id=7) / UDP(sport=40000, dport=33434) / (
        b"\0" * 32)
    out = gw.expired(OUT, UdpDatagram(C1, 40000, SERVER, 33434), bytes(probe), 0.0)
    emit = sent(out)
    assert (emit.direction, emit.src_ip, emit.dst_ip) == (IN, INSIDE_GW, C1)
    packet = decoded(emit)
    checksums_hold(packet)
    assert (packet[ICMP].type, packet[ICMP].code) == (11, 0)
    assert bytes(packet[IPerror]) == bytes(probe)
    assert len(gw.nat) == 0  # no state from an expired packet
    assert gw.counters.time_exceeded_sent == 1


def test_time_exceeded_quotes_at_most_what_fits_in_576_bytes() -> None:
    big = bytes(IP(src=str(C1), dst=str(SERVER), ttl=1) / UDP() / (b"x" * 1400))
    message = icmp.time_exceeded(big)
    assert 20 + len(message) == icmp.MAX_ERROR_LENGTH
    assert message[8:] == big[:icmp.QUOTE_LENGTH]


def test_without_an_inside_address_inside_hosts_get_no_time_exceeded() -> None:
    gw = gateway()
    out = gw.expired(OUT, UdpDatagram(C1, 1, SERVER, 2), bytes(IP(ttl=1) / UDP()), 0.0)
    assert out.emits == [] and out.drop_reason


def test_from_outside_only_packets_that_match_state_get_time_exceeded() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    session = udp_session(gw)
    matching = UdpDatagram(SERVER, 53, PUBLIC, session.public_port)
    raw = bytes(IP(src=str(SERVER), dst=str(PUBLIC), ttl=1) / UDP(
        sport=53, dport=session.public_port))
    emit = sent(gw.expired(IN, matching, raw, 0.0))
    assert (emit.direction, emit.src_ip, emit.dst_ip) == (OUT, PUBLIC, SERVER)
    for stray in (UdpDatagram(SERVER, 54, PUBLIC, session.public_port),
                  TcpSegment(SERVER, 80, PUBLIC, 1, 0, 0, 0x10, 0),
                  IcmpEcho(SERVER, PUBLIC, 1, False), GrePacket(SERVER, PUBLIC, b"\0" * 8)):
        assert gw.expired(IN, stray, raw, 0.0).emits == []


def test_no_time_exceeded_about_an_error_or_to_a_non_unicast_source() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    error = IcmpMessage(C1, SERVER, bytes(ICMP(type=3) / bytes(IP() / UDP())))
    assert gw.expired(OUT, error, b"", 0.0).emits == []
    for source in ("0.0.0.0", "224.0.0.1", "127.0.0.1", "255.255.255.255", "240.0.0.1"):
        packet = UdpDatagram(IPv4Address(source), 1, SERVER, 2)
        assert gw.expired(OUT, packet, b"", 0.0).emits == []
    assert gw.counters.time_exceeded_sent == 0


def test_time_exceeded_is_rate_limited_each_way() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    session = udp_session(gw)
    raw = bytes(IP(src=str(C1), dst=str(SERVER), ttl=1) / UDP())
    probe = UdpDatagram(C1, 1, SERVER, 2)
    sent_now = sum(len(gw.expired(OUT, probe, raw, 5.0).emits) for _ in range(150))
    assert sent_now == icmp.ERROR_BURST
    assert gw.counters.icmp_rate_limited == 50
    assert len(gw.expired(OUT, probe, raw, 5.5).emits) == 1  # refilled meanwhile
    from_outside = UdpDatagram(SERVER, 53, PUBLIC, session.public_port)
    assert len(gw.expired(IN, from_outside, raw, 5.5).emits) == 1  # its own budget


def test_a_call_gre_with_spent_ttl_from_the_server_gets_time_exceeded() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    link = ControlLink(gw, C1).start()
    b = link.outgoing_call(5, 700)
    gre = GreHeader(0, b).encode()
    raw = bytes(IP(src=str(SERVER), dst=str(PUBLIC), proto=47, ttl=1) / gre)
    assert sent(gw.expired(IN, GrePacket(SERVER, PUBLIC, gre), raw, 0.0)).src_ip == PUBLIC
    other = GreHeader(0, b + 1).encode()
    assert gw.expired(IN, GrePacket(SERVER, PUBLIC, other), raw, 0.0).emits == []


def test_parse_quote_refuses_what_is_not_a_quote() -> None:
    with pytest.raises(IcmpFormatError, match="quotes no IPv4 header"):
        icmp.parse_quote(b"\x03\x03\0\0\0\0\0\0")


@given(st.binary(min_size=0, max_size=80))
def test_any_bytes_give_a_counted_outcome_never_an_exception(data: bytes) -> None:
    gw = gateway()
    udp_session(gw)
    for direction in (IN, OUT):
        out = gw.handle(direction, IcmpMessage(ROUTER, PUBLIC, b"\x03\x00" + data), 1.0)
        assert out.emits or out.drop_reason
    counted = (gw.counters.icmp_errors_translated + gw.counters.icmp_errors_unmatched
               + gw.counters.icmp_malformed)
    assert counted == 2


@given(st.sampled_from([6, 17, 1, 47]), st.binary(min_size=0, max_size=40))
def test_any_cut_quote_of_a_flow_is_translated_or_dropped_never_an_exception(
    proto: int, tail: bytes
) -> None:
    gw = gateway()
    udp_session(gw)
    header = bytes(IP(src=str(PUBLIC), dst=str(SERVER), proto=proto))
    out = gw.handle(IN, IcmpMessage(ROUTER, PUBLIC, bytes(ICMP(type=3, code=3)) + header + tail),
                    1.0)
    if out.emits:
        packet = decoded(sent(out))
        checksums_hold(packet)
        assert IPv4Address(packet[IPerror].src) == C1
    else:
        assert out.drop_reason
    counters = gw.counters
    assert counters.icmp_errors_translated + counters.icmp_errors_unmatched + (
        counters.icmp_malformed) == 1


@given(st.binary(min_size=2, max_size=2), st.binary(min_size=2, max_size=2),
       st.binary(min_size=20, max_size=20))
def test_adjust_matches_a_full_recomputation(old: bytes, new: bytes, rest: bytes) -> None:
    before = old + rest
    after = new + rest
    assert icmp.adjust(icmp.checksum(before), old, new) in (
        icmp.checksum(after), 0xFFFF if icmp.checksum(after) == 0 else -1,
        0 if icmp.checksum(after) == 0xFFFF else -1)


MARTIANS = ["192.168.1.77", "192.168.1.254", "203.0.113.2", "127.0.0.1", "224.0.0.5",
            "255.255.255.255", "203.0.113.255", "0.1.2.3", "240.0.0.9"]


@pytest.mark.parametrize("source", MARTIANS)
def test_an_error_from_outside_sent_from_a_martian_is_dropped_and_counted(source: str
                                                                          ) -> None:
    """The attacker outside forges the source of a port unreachable about a live UDP
    session: an inside host, the gateway itself, loopback, multicast, a broadcast."""
    gw = Gateway(gateway().config, INSIDE_GW, IPv4Network("192.168.1.0/24"),
                 IPv4Network("203.0.113.0/24"))
    session = udp_session(gw)
    quoted = IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=session.public_port, dport=53)
    forged = IcmpMessage(IPv4Address(source), PUBLIC,
                         bytes(ICMP(type=3, code=3) / bytes(quoted)))
    out = gw.handle(IN, forged, 1.0)
    assert out.emits == [] and out.drop_reason
    assert gw.counters.icmp_martians == 1 and gw.counters.icmp_errors_translated == 0
    genuine = error_from_outside(quoted)
    assert sent(gw.handle(IN, genuine, 1.0)).dst_ip == C1


def test_without_the_subnets_the_gateways_own_and_special_sources_are_still_martians() -> None:
    gw = Gateway(gateway().config, INSIDE_GW)
    session = udp_session(gw)
    quoted = IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=session.public_port, dport=53)
    for source in (INSIDE_GW, PUBLIC, IPv4Address("127.0.0.1"), IPv4Address("224.0.0.1")):
        message = IcmpMessage(source, PUBLIC, bytes(ICMP(type=3, code=3) / bytes(quoted)))
        assert gw.handle(IN, message, 1.0).emits == []
    assert gw.counters.icmp_martians == 4


def test_one_hosts_probes_do_not_spend_another_hosts_time_exceeded_budget() -> None:
    """The attacker inside traceroutes (or floods spent-TTL packets) as fast as it can;
    another inside host's traceroute still gets every answer, and so does a server."""
    gw = Gateway(gateway().config, INSIDE_GW)
    session = udp_session(gw)
    raw = bytes(IP(src=str(C2), dst=str(SERVER), ttl=1) / UDP())
    flood = UdpDatagram(C2, 1, SERVER, 2)
    for tick in range(100):
        for _ in range(10):
            gw.expired(OUT, flood, raw, 5.0 + tick / 100)
    assert gw.counters.icmp_rate_limited > 0
    probe = UdpDatagram(C1, 40000, SERVER, 33434)
    answered = [len(gw.expired(OUT, probe, raw, 6.0).emits) for _ in range(30)]
    assert answered == [1] * 30
    from_outside = UdpDatagram(SERVER, 53, PUBLIC, session.public_port)
    assert len(gw.expired(IN, from_outside, raw, 6.0).emits) == 1


def test_the_budgets_are_a_bounded_table_that_forgets_full_ones() -> None:
    budgets = icmp.SourceBuckets(10.0, 2.0, cap=3)
    assert [budgets.take(n, 0.0) for n in range(3)] == [True, True, True]
    assert budgets.take(3, 0.0) is None  # full of budgets in use: no fourth
    assert budgets.take(0, 0.0) is True and budgets.take(0, 0.0) is False
    assert budgets.take(3, 0.1) is True  # 1 and 2 are full again: forgotten, 0 not
    assert len(budgets) == 2


def test_many_spoofed_sources_get_no_more_than_the_global_time_exceeded_budget() -> None:
    """The attacker sends spent-TTL packets from thousands of spoofed sources, one each:
    every source's own budget allows an error, the global one bounds them all; the
    other way keeps its own, and so does a host probing at its own rate afterwards."""
    gw = Gateway(gateway().config, INSIDE_GW)
    session = udp_session(gw)
    raw = bytes(IP(src=str(C1), dst=str(SERVER), ttl=1) / UDP())
    first = int(IPv4Address("10.1.0.1"))

    def flood(count: int, now: float, offset: int = 0) -> int:
        return sum(len(gw.expired(OUT, UdpDatagram(IPv4Address(first + offset + n), 1,
                                                   SERVER, 2), raw, now).emits)
                   for n in range(count))

    assert flood(3000, 5.0) == icmp.GLOBAL_ERROR_BURST
    assert gw.counters.icmp_rate_limited == 3000 - icmp.GLOBAL_ERROR_BURST
    half = icmp.GLOBAL_ERRORS_PER_SECOND / 2
    assert flood(3000, 5.5, offset=3000) == half  # refilled meanwhile, no more
    from_outside = UdpDatagram(SERVER, 53, PUBLIC, session.public_port)
    assert len(gw.expired(IN, from_outside, raw, 5.5).emits) == 1  # its own budget
    probe = UdpDatagram(C1, 40000, SERVER, 33434)
    answered = [len(gw.expired(OUT, probe, raw, 10.0).emits) for _ in range(30)]
    assert answered == [1] * 30
    assert gw.counters.time_exceeded_sent == (icmp.GLOBAL_ERROR_BURST + half + 1 + 30)
