"""The shim's parts without the shim: the ingress rules (``ryu_apps.ingress``), the outbox
(``ryu_apps.outbox``) and the switch's life (``ryu_apps.lifecycle``)."""

from __future__ import annotations

from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, GRE, Ether
from scapy.packet import Packet

from alg.config import load
from alg.counters import Counters
from alg.events import Direction, EntryKind, UdpDatagram
from alg.neighbours import L2, NeighbourTable, Side
from ryu_apps import ingress, packets, switch, wire
from ryu_apps.effects import AppCounters
from ryu_apps.fragments import FragmentPath
from ryu_apps.lifecycle import CookieSums, Switch, SwitchState, resolve_ports
from ryu_apps.outbox import Outbox
from tests.unit.app_env import (
    CLIENT,
    CLIENT_MAC,
    GW_MAC,
    IN1,
    IN2,
    OPTIONS,
    OUT,
    PUBLIC,
    SERVER,
    SERVER_MAC,
)
from tests.unit.fake_switch import FakeDatapath

DEMUX = 7
GATEWAY = "192.168.1.254"


class Tables:
    """A neighbour table and a reassembler as the app has them, ports set."""

    def __init__(self) -> None:
        config = load(dict(OPTIONS))
        self.neighbours: NeighbourTable[Any] = NeighbourTable(config)
        self.neighbours.set_ports([IN1, IN2], OUT)
        self.app_counters = AppCounters()
        self.fragments = FragmentPath(config, Counters(), self.app_counters)

    def classify(self, port: int, frame: Packet | bytes, expired: bool = False
                 ) -> ingress.Verdict:
        return ingress.classify(port, bytes(frame), expired, self.neighbours, self.fragments,
                                DEMUX, 1.0)

    def know_next_hop(self) -> None:
        self.neighbours.send(Side.OUTSIDE, SERVER, None, 1.0)
        reply = packets.decode_frame(bytes(
            Ether(src=SERVER_MAC, dst=GW_MAC)
            / ARP(op=2, hwsrc=SERVER_MAC, psrc=str(SERVER), pdst=str(PUBLIC))))
        assert reply is not None and reply.arp is not None
        self.neighbours.arp(OUT, SERVER_MAC, reply.arp, 1.0)
        assert self.neighbours.lookup(Side.OUTSIDE, SERVER) == L2(OUT, SERVER_MAC)


def from_client(payload: Packet) -> Ether:
    return Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src=str(CLIENT), dst=str(SERVER)) / payload


@pytest.fixture
def tables() -> Tables:
    return Tables()


def test_a_port_the_gateway_does_not_use_is_ignored_unless_it_is_the_demultiplexers(
        tables: Tables) -> None:
    frame = bytes(from_client(UDP()))
    assert tables.classify(DEMUX, frame) == ingress.FromDemux(frame)
    assert tables.classify(99, frame) is ingress.IGNORE


def test_what_does_not_decode_is_counted(tables: Tables) -> None:
    assert tables.classify(OUT, b"\x00" * 10) == ingress.Count("undecodable_frames")
    tcp = Ether(dst=GW_MAC) / IP(src=str(SERVER), dst=str(PUBLIC)) / TCP(dataofs=15)
    assert tables.classify(OUT, tcp) == ingress.Count("undecodable_frames")
    other = Ether(dst=GW_MAC) / IP(src=str(SERVER), dst=str(PUBLIC), proto=99) / b"ab"
    assert tables.classify(OUT, other) is ingress.IGNORE


def test_arp_goes_to_the_neighbour_table(tables: Tables) -> None:
    frame = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=CLIENT_MAC, psrc=str(CLIENT), pdst=GATEWAY)
    verdict = tables.classify(IN1, frame)
    assert isinstance(verdict, ingress.Arp)
    assert (verdict.port, verdict.mac, verdict.arp.target_ip) == (
        IN1, CLIENT_MAC, IPv4Address(GATEWAY))


def test_a_bad_checksum_is_counted(tables: Tables) -> None:
    frame = Ether(dst=GW_MAC) / IP(src=str(SERVER), dst=str(PUBLIC)) / UDP(chksum=0x1234)
    assert tables.classify(OUT, frame) == ingress.Count("bad_checksums")


def test_the_gateways_own_echo_is_answered_to_the_sender(tables: Tables) -> None:
    frame = Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src=str(CLIENT), dst=GATEWAY) / ICMP()
    verdict = tables.classify(IN1, frame)
    assert isinstance(verdict, ingress.EchoReply)
    assert verdict.to == L2(IN1, CLIENT_MAC)
    assert IP(verdict.reply)[ICMP].type == 0


def test_inside_packets_not_routed_outside_are_ignored(tables: Tables) -> None:
    spoofed = Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src="10.0.0.1", dst=str(SERVER)) / UDP()
    assert tables.classify(IN1, spoofed) is ingress.IGNORE
    inside = Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src=str(CLIENT), dst="192.168.1.9") / UDP()
    assert tables.classify(IN1, inside) is ingress.IGNORE


def test_an_inside_packet_waits_for_the_next_hop_then_is_translated(tables: Tables) -> None:
    frame = from_client(UDP(sport=4000, dport=53) / b"q")
    assert tables.classify(IN1, frame) == ingress.Resolve(SERVER, IN1, bytes(frame))
    tables.know_next_hop()
    verdict = tables.classify(IN1, frame)
    assert isinstance(verdict, ingress.Translate)
    assert verdict.direction is Direction.OUTBOUND
    assert verdict.packet == UdpDatagram(CLIENT, 4000, SERVER, 53)


def test_a_spent_ttl_is_expired_from_either_side_and_when_the_switch_says_so(
        tables: Tables) -> None:
    tables.know_next_hop()
    verdict = tables.classify(IN1, from_client(UDP(sport=4000, dport=53)) / b"")
    assert isinstance(verdict, ingress.Translate)
    low = Ether(src=CLIENT_MAC, dst=GW_MAC) / IP(src=str(CLIENT), dst=str(SERVER), ttl=1) / UDP()
    verdict = tables.classify(IN1, low)
    assert isinstance(verdict, ingress.Expire) and verdict.direction is Direction.OUTBOUND
    assert verdict.raw == bytes(low[IP])
    inbound = Ether(dst=GW_MAC) / IP(src=str(SERVER), dst=str(PUBLIC), ttl=30) / UDP()
    assert isinstance(tables.classify(OUT, inbound), ingress.Translate)
    verdict = tables.classify(OUT, inbound, expired=True)
    assert isinstance(verdict, ingress.Expire) and verdict.direction is Direction.INBOUND


def test_fragments_are_held_until_whole_and_only_from_admitted_sources(
        tables: Tables) -> None:
    tables.know_next_hop()
    datagram = IP(src=str(CLIENT), dst=str(SERVER), proto=47) / GRE() / (b"x" * 3000)
    pieces = [Ether(src=CLIENT_MAC, dst=GW_MAC) / p for p in fragment(datagram, 1400)]
    spoofed = pieces[0].copy()
    spoofed[IP].src = "10.0.0.1"
    assert tables.classify(IN1, spoofed) is ingress.IGNORE
    verdicts = [tables.classify(IN1, p) for p in pieces]
    assert verdicts[:-1] == [ingress.IGNORE] * (len(pieces) - 1)
    assert isinstance(verdicts[-1], ingress.Translate)
    assert len(verdicts[-1].ip.payload) == len(bytes(datagram[GRE]))
    tcp = fragment(IP(src=str(SERVER), dst=str(PUBLIC)) / TCP(dport=80) / (b"y" * 3000), 1400)
    assert tables.classify(OUT, Ether(dst=GW_MAC) / tcp[0]) is ingress.IGNORE
    assert tables.app_counters.fragments_dropped == 1


# The outbox.

def test_the_outbox_sends_when_the_outermost_event_ends_in_order() -> None:
    dp = FakeDatapath()
    counters = AppCounters()
    outbox = Outbox(counters)
    outbox.connect(dp)
    request = SimpleNamespace(name="a framework message")
    with outbox:
        outbox.packet_out(1, b"frame-1")
        with outbox:
            outbox.request(request)
            outbox.flow_mods([wire.barrier()])
        assert dp.sent == []
    kinds = [type(m).__name__ for m in dp.sent]
    assert kinds == ["OFPPacketOut", "SimpleNamespace", "OFPBarrierRequest"]
    assert counters.packet_outs == 1


def test_an_event_that_raised_sends_nothing_and_nor_does_a_gone_switch() -> None:
    dp = FakeDatapath()
    outbox = Outbox(AppCounters())
    outbox.connect(dp)
    with pytest.raises(RuntimeError), outbox:
        outbox.packet_out(1, b"frame")
        raise RuntimeError("boom")
    with outbox:
        outbox.packet_out(1, b"frame")
        outbox.connect(None)
    with outbox:
        outbox.packet_out(1, b"frame")
    assert dp.sent == []


# The switch's life.

def test_a_switch_goes_from_features_through_reconcile_to_ready() -> None:
    dp = FakeDatapath()
    life = Switch(AppCounters())
    assert life.state is SwitchState.DISCONNECTED and not life.ready
    life.connected(dp)
    assert life.state is SwitchState.FEATURES and life.datapath is dp
    ports = resolve_ports({"in1": IN1, "in2": IN2, "out": OUT}, ["in2", "in1"], "out")
    assert not isinstance(ports, list)
    assert (ports.inside, ports.outside) == ([IN1, IN2], OUT)
    with life.outbox:
        life.read_entries(ports, dp.ofproto_parser.OFPFlowStatsRequest(dp))
    assert life.state is SwitchState.RECONCILE
    assert life.is_entries_reply(life.reconcile_xid or 0)
    assert not life.is_entries_reply((life.reconcile_xid or 0) + 1)
    cookie = switch.cookie(EntryKind.SESSION, 9)
    life.entries.add([SimpleNamespace(cookie=cookie, packet_count=1, byte_count=2)] * 2)
    assert life.entries_read() == {(EntryKind.SESSION, 9): 2}
    life.became_ready()
    assert life.ready and not life.is_entries_reply(0)
    life.gone()
    assert life.state is SwitchState.DISCONNECTED and life.datapath is None


def test_missing_ports_are_named() -> None:
    assert resolve_ports({"in1": IN1}, ["in1", "in2"], "out") == ["in2", "out"]


def test_statistics_are_summed_per_cookie_and_others_entries_ignored() -> None:
    sums = CookieSums()
    one = switch.cookie(EntryKind.SESSION, 1)
    sums.add([SimpleNamespace(cookie=one, packet_count=3, byte_count=300),
              SimpleNamespace(cookie=0x1234, packet_count=9, byte_count=9)])
    sums.add([SimpleNamespace(cookie=one, packet_count=4, byte_count=400)])
    assert sums.counts() == {(EntryKind.SESSION, 1): (7, 700)}
    assert sums.installed() == {(EntryKind.SESSION, 1): 2} and sums.entries == 2
    sums.clear()
    assert sums.counts() == {} and sums.entries == 0


def test_a_packet_from_the_route_table_goes_on_as_the_tracker_translated_it(
        tables: Tables) -> None:
    frame = Ether(dst=GW_MAC) / IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=1500)
    verdict = ingress.classify(IN1, bytes(frame), False, tables.neighbours,
                               tables.fragments, DEMUX, 1.0, switch.TABLE_ROUTE)
    assert verdict == ingress.RouteOut(SERVER, bytes(frame[IP]))
