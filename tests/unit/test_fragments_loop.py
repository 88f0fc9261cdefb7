"""Fragmented GRE and control segments through the app on the closed-loop fake switch:
the flow path passes fragments both ways, the controller path and the demux path
(whose fragments the switch steers to the controller) reassemble, translate and
fragment again for the MTU; DF set: ICMP fragmentation needed back to the sender."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import GRE_PPTP, Ether
from scapy.packet import Packet

from demux.table import Demux
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.app_env import GW_MAC, IN1, IN2, OUT, PUBLIC, SERVER
from tests.unit.fake_hosts import Host, gre_packet
from tests.unit.test_closed_loop import CLIENT1, CLIENT2, HOLD_DOWN, Lab, build_lab
from tests.unit.test_demux_loop import DMX, Program, beat
from tests.unit.test_demux_loop import pinned as pinned
from tests.unit.test_gre_demux import _bpf_works

BIG = bytes(range(256)) * 12  # 3072 bytes of PPP: three fragments at 1500


def clean(lab: Lab) -> None:
    """Nothing the switch refused; hosts refused only fragments (they do not reassemble)."""
    assert lab.switch.errors == []
    for host in (lab.client1, lab.client2, lab.server):
        assert {reason for reason, _frame in host.rejected} <= {"unexpected protocol"}


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    built = build_lab(monkeypatch)
    yield built
    clean(built)


def send_fragmented(host: Host, packet: Packet, size: int = 1480) -> int:
    """Send ``packet`` in fragments of ``size`` payload bytes, last fragment first
    (any order must do); how many."""
    if packet.id == 1:  # Scapy's default: each datagram gets its own identification
        send_fragmented.ident += 1  # type: ignore[attr-defined]
        packet.id = send_fragmented.ident  # type: ignore[attr-defined]
    parts: list[Packet] = fragment(packet, fragsize=size)  # type: ignore[no-untyped-call]
    for part in reversed(parts):
        host.send_ip(part)
    return len(parts)


send_fragmented.ident = 1000  # type: ignore[attr-defined]


def datagrams(lab: Lab, port: int) -> list[Packet]:
    """The IPv4 datagrams that left ``port``, fragments put together (by Scapy)."""
    whole: list[Packet] = []
    parts: dict[int, list[Packet]] = defaultdict(list)
    for frame in lab.switch.delivered[port]:
        ip = Ether(frame)[IP]
        if ip.flags.MF or ip.frag:
            assert len(frame) - 14 <= 1500
            parts[ip.id].append(ip)
        else:
            whole.append(ip)
    for pieces in parts.values():
        pieces.sort(key=lambda p: p.frag)
        data = b"".join(bytes(p.payload)[:p.len - p.ihl * 4] for p in pieces)
        assert [p.frag * 8 for p in pieces] == [
            sum(p.len - p.ihl * 4 for p in pieces[:i]) for i in range(len(pieces))]
        assert not pieces[-1].flags.MF
        first = pieces[0].copy()
        first.remove_payload()
        first.flags, first.len, first.chksum = 0, None, None
        whole.append(first / data)
    return [IP(bytes(p)) for p in whole]


def gre_of(packets: list[Packet]) -> list[tuple[str, str, int, bytes]]:
    return [(p.src, p.dst, p[GRE_PPTP].call_id, bytes(p[GRE_PPTP].payload))
            for p in packets if GRE_PPTP in p]


def fragments_in(lab: Lab, port: int) -> int:
    return sum(1 for f in lab.switch.delivered[port] if Ether(f)[IP].flags.MF or Ether(f)[IP].frag)


def test_the_flow_path_passes_fragments_both_ways_without_the_controller(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    lab.pac.send_gre(d.server_call, 1)  # the entries are in after the first packets
    lab.settle()
    lab.forget()
    assert send_fragmented(lab.server, gre_packet(SERVER, PUBLIC, 4242, 2, BIG)) == 3
    assert send_fragmented(lab.client1, gre_packet(CLIENT1, SERVER, d.call.server_call_id or 0,
                                                   3, BIG)) == 3
    lab.settle()
    assert lab.switch.packet_ins == []
    assert gre_of(datagrams(lab, IN1)) == [(str(SERVER), str(CLIENT1), 4242, BIG)]
    assert gre_of(datagrams(lab, OUT)) == [(str(PUBLIC), str(SERVER),
                                            d.call.server_call_id, BIG)]
    assert fragments_in(lab, IN1) == fragments_in(lab, OUT) == 3


def shared_pair(lab: Lab) -> tuple[Any, Any]:
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242, src_port=40001)
    assert d2.server_call.peer_call_id != 4242
    return d1, d2


def test_the_controller_path_reassembles_translates_and_fragments_again(lab: Lab) -> None:
    d1, d2 = shared_pair(lab)
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    lab.forget()
    for n, d in enumerate((d1, d2)):
        b = d.server_call.peer_call_id
        send_fragmented(lab.server, gre_packet(SERVER, PUBLIC, b, n, BIG))
    lab.settle()
    assert gre_of(datagrams(lab, IN1)) == [(str(SERVER), str(CLIENT1), 4242, BIG)]
    assert gre_of(datagrams(lab, IN2)) == [(str(SERVER), str(CLIENT2), 4242, BIG)]
    counters = lab.app.core.counters
    assert counters.fragments_received == 6 and counters.fragments_reassembled == 2
    assert counters.fragments_sent == 6


def test_client_fragments_on_the_controller_path_leave_reassembled_and_fragmented(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = build_lab(monkeypatch, gre_outbound_strict=True)
    d1, _d2 = shared_pair(lab)
    lab.forget()
    c = d1.call.server_call_id
    send_fragmented(lab.client1, gre_packet(CLIENT1, SERVER, c, 5, BIG), size=1000)
    lab.settle()
    assert gre_of(datagrams(lab, OUT)) == [(str(PUBLIC), str(SERVER), c, BIG)]
    assert fragments_in(lab, OUT) == 3  # the MTU's 1480 bytes a piece, not the sender's 1000
    clean(lab)


def test_control_segments_in_fragments_set_up_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = build_lab(monkeypatch)
    plain = lab.client1.send_ip

    def fragmenting(packet: Packet) -> None:
        if packet.haslayer("TCP") and len(packet) > 60:
            for part in fragment(packet, fragsize=16):  # type: ignore[no-untyped-call]
                plain(part)
        else:
            plain(packet)

    lab.client1.send_ip = fragmenting  # type: ignore[method-assign]
    d = lab.dial(lab.client1, 4242)
    assert d.call.result_code == 1
    counters = lab.app.core.counters
    assert counters.fragments_reassembled >= 2  # Start-Control-Connection, the call
    assert counters.calls_set_up == 1
    clean(lab)


def test_too_big_with_df_is_answered_with_fragmentation_needed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = build_lab(monkeypatch, mtu=1400)
    _d1, d2 = shared_pair(lab)
    lab.forget()
    b = d2.server_call.peer_call_id
    packet = gre_packet(SERVER, PUBLIC, b, 9, BIG[:1450])
    packet.flags = "DF"
    lab.server.send_ip(packet)
    lab.settle()
    assert datagrams(lab, IN2) == []
    [error] = [Ether(f)[IP] for f in lab.switch.delivered[OUT] if ICMP in Ether(f)]
    assert bytes(error[ICMP].payload)[:20] == bytes(packet)[:20]  # the packet as it came
    assert (error.src, error.dst, error[ICMP].type, error[ICMP].code) == (
        str(PUBLIC), str(SERVER), 3, 4)
    assert error[ICMP].nexthopmtu == 1400
    assert lab.app.core.counters.fragmentation_needed_sent == 1
    packet.flags = 0
    lab.server.send_ip(packet)
    lab.settle()
    assert gre_of(datagrams(lab, IN2)) == [(str(SERVER), str(CLIENT2), 4242, BIG[:1450])]
    assert fragments_in(lab, IN2) == 2
    clean(lab)


def test_fragments_of_other_protocols_are_still_dropped(lab: Lab) -> None:
    lab.dial(lab.client1, 4242)
    lab.forget()
    send_fragmented(lab.client1, IP(src=str(CLIENT1), dst=str(SERVER)) / UDP() / BIG)
    lab.settle()
    assert lab.app.counters.fragments_dropped == 3 and lab.switch.delivered[OUT] == []


@pytest.mark.skipif(_bpf_works() is not None, reason=str(_bpf_works()))
def test_the_demux_paths_fragments_reach_the_controller_and_every_client(
        monkeypatch: pytest.MonkeyPatch, pinned: str) -> None:
    lab = build_lab(monkeypatch, {"dmx": DMX}, gre_demux_port="dmx", gre_demux_dir=pinned)
    program = Program(lab, Demux.open(pinned))
    lab.switch.attach(DMX, program)
    try:
        beat(lab, 0.25)
        d1, d2 = shared_pair(lab)
        assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "demux"
        lab.forget()
        for round_ in range(3):
            for d in (d1, d2):
                b = d.server_call.peer_call_id
                send_fragmented(lab.server, gre_packet(SERVER, PUBLIC, b, round_, BIG))
                lab.pac.send_gre(d.server_call, 100 + round_)  # whole: the demultiplexer's
        lab.settle()
        for port, client in ((IN1, CLIENT1), (IN2, CLIENT2)):
            got = gre_of(datagrams(lab, port))
            assert sorted(p for *_x, p in got).count(BIG) == 3
            assert len(got) == 6 and {(s, d, k) for s, d, k, _p in got} == {
                (str(SERVER), str(client), 4242)}
        ins = [Ether(f)[IP] for _port, f in lab.switch.packet_ins if IP in Ether(f)]
        assert len(ins) == 18 and all(ip.flags.MF or ip.frag for ip in ins)  # fragments only
        assert lab.app.core.counters.fragments_reassembled == 6
        clean(lab)
    finally:
        program.demux.close()


def test_leaving_the_demux_path_takes_the_fragment_entry_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab = build_lab(monkeypatch, {"dmx": DMX}, gre_demux_port="dmx", gre_demux_dir="/nonexistent")
    lab.app.demux.port = DMX
    shared_pair(lab)
    dp = lab.app.datapath
    lab.app.apply(dp, lab.app.core.demux_available(True, lab.clock.now))
    lab.settle()
    steering = lab.switch.entries(ip_frag=(1, 1))
    assert len(steering) == 1 and steering[0].priority == 501
    lab.app.apply(dp, lab.app.core.demux_available(False, lab.clock.now))
    lab.settle()
    assert lab.switch.entries(ip_frag=(1, 1)) == []
    assert len(lab.switch.entries(ip_proto=47, ipv4_src=str(SERVER))) == 1


def test_the_fragment_entry_goes_when_the_demux_port_went_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The demultiplexer's port is deleted while a pair is on it: the pair moves to the
    controller path and its fragment entry goes though no port is left to name; when
    the pair is back on the flow path, its fragments pass by the switch alone."""
    lab = build_lab(monkeypatch, {"dmx": DMX}, gre_demux_port="dmx", gre_demux_dir="/nonexistent")
    lab.app.demux.port = DMX
    d1, d2 = shared_pair(lab)
    dp = lab.app.datapath
    lab.app.apply(dp, lab.app.core.demux_available(True, lab.clock.now))
    lab.settle()
    assert len(lab.switch.entries(ip_frag=(1, 1))) == 1
    desc = parser.OFPPort(DMX, "02:00:00:00:00:63", b"dmx", 0, 0, 0, 0, 0, 0, 0, 0)
    lab.switch._to_app(parser.OFPPortStatus(lab.switch, reason=ofp.OFPPR_DELETE, desc=desc))
    lab.settle()
    assert lab.app.demux.port is None
    lab.app.apply(dp, lab.app.core.demux_available(False, lab.clock.now))
    lab.settle()
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    assert lab.switch.entries(ip_frag=(1, 1)) == []
    d2.link.clear(d2.call)
    lab.settle()
    lab.wait(HOLD_DOWN + 5)
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    lab.forget()
    send_fragmented(lab.server, gre_packet(SERVER, PUBLIC, d1.server_call.peer_call_id, 7, BIG))
    lab.settle()
    assert lab.switch.packet_ins == []
    assert gre_of(datagrams(lab, IN1)) == [(str(SERVER), str(CLIENT1), 4242, BIG)]


def test_tcp_fragments_other_than_control_segments_are_never_held(lab: Lab) -> None:
    lab.dial(lab.client1, 4242)
    lab.forget()
    segment = IP(src=str(CLIENT1), dst=str(SERVER)) / TCP(sport=5555, dport=80) / BIG
    send_fragmented(lab.client1, segment)  # the later fragments come first
    first, *later = fragment(segment, fragsize=1480)  # type: ignore[no-untyped-call]
    for part in (first, *later):
        lab.client1.send_ip(part)
    lab.settle()
    assert lab.app.counters.fragments_dropped == 6
    assert lab.app.core.counters.fragments_received == 0
    assert lab.app.fragments.reassembler.memory == 0


def test_a_flood_of_first_fragments_leaves_the_calls_datagrams_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker outside sends first fragments that never complete, from many
    addresses, to the public address, among a shared pair's fragmented datagrams: every
    datagram of the calls arrives, and the memory held never passes its bound."""
    bound = 64 * 1024
    lab = build_lab(monkeypatch, fragment_memory=bound, fragment_memory_per_source=16 * 1024)
    _d1, d2 = shared_pair(lab)
    lab.forget()
    b = d2.server_call.peer_call_id
    server_mac = lab.server.mac
    peak = 0
    for n in range(600):
        junk = IP(src=f"198.51.100.{n % 200 + 1}", dst=str(PUBLIC), id=n, flags="MF",
                  proto=47) / (b"j" * 1000)
        lab.switch.inject(OUT, bytes(Ether(src=server_mac, dst=GW_MAC) / junk))
        if n % 50 == 25:
            send_fragmented(lab.server, gre_packet(SERVER, PUBLIC, b, n, BIG))
        lab.settle()
        peak = max(peak, lab.app.fragments.reassembler.memory)
    assert peak <= bound
    got = gre_of(datagrams(lab, IN2))
    assert len(got) == 12 and all(g == (str(SERVER), str(CLIENT2), 4242, BIG) for g in got)
    assert lab.app.core.counters.fragments_evicted > 500
    clean(lab)


def test_inside_fragments_claiming_the_server_cannot_drop_its_datagrams(lab: Lab) -> None:
    """The attacker inside sends fragments from the server's address to the public address
    with the IP IDs of the server's next datagrams (one predictable counter), overlapping
    them: dropped as any packet from inside whose source is not inside, never held, and
    the server's datagrams arrive whole."""
    _d1, d2 = shared_pair(lab)
    lab.forget()
    b = d2.server_call.peer_call_id
    idents = (4321, 4322)
    for ident in idents:
        lab.client1.send_ip(IP(src=str(SERVER), dst=str(PUBLIC), id=ident, flags="MF",
                               proto=47) / (b"x" * 1480))
    lab.settle()
    assert lab.app.fragments.reassembler.memory == 0
    for ident in idents:
        packet = gre_packet(SERVER, PUBLIC, b, ident, BIG)
        packet.id = ident
        send_fragmented(lab.server, packet)
    lab.settle()
    assert gre_of(datagrams(lab, IN2)) == [(str(SERVER), str(CLIENT2), 4242, BIG)] * 2
    counters = lab.app.core.counters
    assert counters.fragments_received == 6 and counters.fragments_reassembled == 2
    assert counters.fragments_overlapping == 0 and counters.fragments_of_dropped == 0


def test_inside_fragments_spoofing_another_client_cannot_drop_its_datagrams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker on another inside port sends fragments from a client's address (pinned
    to the client's port) with the IP ID of the client's next datagram: spoofs, counted
    and dropped before they are held; the client's datagram leaves whole."""
    lab = build_lab(monkeypatch, gre_outbound_strict=True)
    d1, _d2 = shared_pair(lab)
    lab.forget()
    c = d1.call.server_call_id
    spoofs = lab.app.neighbours.counters.spoofed_drops
    lab.client2.send_ip(IP(src=str(CLIENT1), dst=str(SERVER), id=777, flags="MF", proto=47)
                        / (b"x" * 1000))
    lab.settle()
    assert lab.app.neighbours.counters.spoofed_drops == spoofs + 1
    assert lab.app.fragments.reassembler.memory == 0
    packet = gre_packet(CLIENT1, SERVER, c, 5, BIG)
    packet.id = 777
    send_fragmented(lab.client1, packet, size=1000)
    lab.settle()
    assert gre_of(datagrams(lab, OUT)) == [(str(PUBLIC), str(SERVER), c, BIG)]
    assert lab.app.core.counters.fragments_overlapping == 0
    clean(lab)
