"""Flow building: what the entries do to packets on a fake OpenFlow 1.3 table."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg.config import AlgConfig
from alg.events import (
    ControlEntry,
    DemuxEntry,
    DemuxForget,
    DemuxReturnEntry,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    RemoveEntries,
    SessionEntries,
)
from alg.nat import NatSession, Proto
from alg.neighbours import L2
from ryu_apps import flowmods, switch
from tests.unit.fake_switch import FakeDatapath, Packet, parsed

INSIDE_PORTS = (1, 2)
OUTSIDE_PORT = 100
DEMUX_PORT = 50
PUBLIC = IPv4Address("203.0.113.2")
SERVER = IPv4Address("203.0.113.1")
CLIENT = IPv4Address("192.168.1.1")
GW_MAC = "02:00:5e:00:01:fe"
CLIENT_L2 = L2(1, "0a:00:00:00:00:01")
SERVER_L2 = L2(OUTSIDE_PORT, "0a:00:00:00:00:64")
CONTROLLER = 0xFFFFFFFD


def ip_packet(in_port: int, src: str, dst: str, proto: int, **fields: object) -> Packet:
    packet: Packet = {
        "in_port": in_port, "eth_type": 0x0800, "ipv4_src": src, "ipv4_dst": dst,
        "ip_proto": proto, "ttl": 64, "eth_src": "0a:00:00:00:00:99", "eth_dst": GW_MAC,
    }
    packet.update(fields)
    return packet


def tcp(in_port: int, src: str, sport: int, dst: str, dport: int) -> Packet:
    return ip_packet(in_port, src, dst, 6, tcp_src=sport, tcp_dst=dport)


@pytest.fixture
def dp() -> FakeDatapath:
    datapath = FakeDatapath()
    for mod in flowmods.meters(datapath, AlgConfig(), INSIDE_PORTS):
        datapath.send_msg(mod)
    for mod in flowmods.pipeline(INSIDE_PORTS, OUTSIDE_PORT, [PUBLIC], True):
        datapath.send_msg(mod)
    assert datapath.errors == []
    return datapath


def test_cookies_round_trip_and_foreign_cookies_are_ignored() -> None:
    for kind in EntryKind:
        assert switch.decode_cookie(switch.cookie(kind, 12345)) == (kind, 12345)
    assert switch.decode_cookie(0) is None
    assert switch.decode_cookie(0x4901 << 48) is None
    assert switch.decode_cookie((0x50 << 56) | (0x7F << 48)) is None


def test_pipeline_punts_arp_and_first_packets_and_drops_the_rest(dp: FakeDatapath) -> None:
    arp = {"in_port": 1, "eth_type": 0x0806}
    assert dp.process(arp).to_controller
    assert dp.process(tcp(1, "192.168.1.1", 40000, "203.0.113.1", 80)).to_controller
    assert dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 80, "203.0.113.2", 40000)).to_controller
    assert dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 80, "203.0.113.9", 40000)).dropped
    assert dp.process(ip_packet(7, "10.0.0.1", "203.0.113.1", 17)).dropped
    assert all(switch.decode_cookie(e.cookie) == (EntryKind.PIPELINE, 0) for e in dp.table)


def test_control_connection_goes_to_the_controller_at_control_priority(dp: FakeDatapath) -> None:
    out = dp.process(tcp(2, "192.168.1.2", 40000, "203.0.113.1", 1723))
    back = dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 1723, "203.0.113.2", 40000))
    assert out.to_controller and back.to_controller
    assert out.entry is not None and out.entry.priority == switch.PRIORITY_CONTROL
    assert back.entry is not None and back.entry.priority == switch.PRIORITY_CONTROL


def test_alg_off_has_no_control_punt() -> None:
    dp = FakeDatapath()
    for mod in flowmods.meters(dp, AlgConfig(), INSIDE_PORTS):
        dp.send_msg(mod)
    for mod in flowmods.pipeline(INSIDE_PORTS, OUTSIDE_PORT, [PUBLIC], False):
        dp.send_msg(mod)
    result = dp.process(tcp(1, "192.168.1.1", 40000, "203.0.113.1", 1723))
    assert result.entry is not None and result.entry.priority == switch.PRIORITY_PUNT


def session(proto: Proto = Proto.TCP) -> NatSession:
    return NatSession(
        id=7, proto=proto, inside_ip=CLIENT, inside_port=40000, public_ip=PUBLIC,
        public_port=40001, remote_ip=SERVER, remote_port=80, created=0.0, last_seen=0.0,
    )


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.UDP])
def test_session_entries_translate_both_directions(dp: FakeDatapath, proto: Proto) -> None:
    decision = SessionEntries(session(proto), 120)
    for mod in flowmods.session_entries(decision, CLIENT_L2, SERVER_L2, GW_MAC):
        dp.send_msg(mod)
    l4 = "tcp" if proto is Proto.TCP else "udp"
    out = dp.process(ip_packet(1, "192.168.1.1", "203.0.113.1", int(proto),
                               **{f"{l4}_src": 40000, f"{l4}_dst": 80}))
    [(port, sent)] = out.outputs
    assert port == OUTSIDE_PORT
    assert (sent["ipv4_src"], sent[f"{l4}_src"]) == ("203.0.113.2", 40001)
    assert (sent["ipv4_dst"], sent[f"{l4}_dst"]) == ("203.0.113.1", 80)
    assert (sent["eth_src"], sent["eth_dst"], sent["ttl"]) == (GW_MAC, SERVER_L2.mac, 63)
    back = dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", int(proto),
                                **{f"{l4}_src": 80, f"{l4}_dst": 40001}))
    [(port, sent)] = back.outputs
    assert port == CLIENT_L2.port
    assert (sent["ipv4_dst"], sent[f"{l4}_dst"]) == ("192.168.1.1", 40000)
    assert sent["eth_dst"] == CLIENT_L2.mac
    assert out.entry is not None and out.entry.idle_timeout == 120
    assert out.entry.flags & dp.ofproto.OFPFF_SEND_FLOW_REM
    assert switch.decode_cookie(out.entry.cookie) == (EntryKind.SESSION, 7)


def test_session_inbound_from_another_remote_is_not_let_in(dp: FakeDatapath) -> None:
    for mod in flowmods.session_entries(SessionEntries(session(), 120), CLIENT_L2, SERVER_L2,
                                   GW_MAC):
        dp.send_msg(mod)
    stranger = dp.process(tcp(OUTSIDE_PORT, "203.0.113.7", 80, "203.0.113.2", 40001))
    assert stranger.to_controller
    wrong_port = dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 81, "203.0.113.2", 40001))
    assert wrong_port.to_controller


def test_session_outbound_matches_only_the_inside_hosts_port(dp: FakeDatapath) -> None:
    for mod in flowmods.session_entries(SessionEntries(session(), 120), CLIENT_L2, SERVER_L2,
                                   GW_MAC):
        dp.send_msg(mod)
    spoofed = dp.process(tcp(2, "192.168.1.1", 40000, "203.0.113.1", 80))
    assert spoofed.to_controller
    assert spoofed.entry is not None and spoofed.entry.priority == switch.PRIORITY_PUNT
    [(port, sent)] = dp.process(tcp(1, "192.168.1.1", 40000, "203.0.113.1", 80)).outputs
    assert (port, sent["ipv4_src"]) == (OUTSIDE_PORT, "203.0.113.2")


def test_every_forwarding_entry_hands_a_spent_ttl_over_before_any_rewrite(
    dp: FakeDatapath,
) -> None:
    for mod in flowmods.session_entries(SessionEntries(session(Proto.UDP), 120), CLIENT_L2,
                                        SERVER_L2, GW_MAC):
        dp.send_msg(mod)
    dp.send_msg(flowmods.gre_outbound(GreOutboundEntry(11, CLIENT, SERVER, PUBLIC, 300),
                                      CLIENT_L2, SERVER_L2, GW_MAC))
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, CLIENT, 300),
                                     OUTSIDE_PORT, CLIENT_L2, GW_MAC))
    packets = [
        ip_packet(1, "192.168.1.1", "203.0.113.1", 17, udp_src=40000, udp_dst=80, ttl=1),
        ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 17, udp_src=80,
                  udp_dst=40001, ttl=1),
        ip_packet(1, "192.168.1.1", "203.0.113.1", 47, ttl=1),
        ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47, ttl=0),
    ]
    for packet in packets:
        result = dp.process(packet)
        assert result.entry is not None and result.entry.priority == switch.PRIORITY_SESSION
        assert result.expired == packet and result.outputs == []
    dp.table.clear()
    dp.send_msg(flowmods.gre_inbound(
        GreInboundEntry(12, SERVER, PUBLIC, None, 300, via_demux=True),
        OUTSIDE_PORT, None, GW_MAC, DEMUX_PORT))
    spent = ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47, ttl=1)
    assert dp.process(spent).expired == spent


def test_the_switch_is_asked_for_packets_whose_ttl_is_spent(dp: FakeDatapath) -> None:
    msg = flowmods.async_config(dp)
    ofp = dp.ofproto
    master, slave = msg.packet_in_mask
    assert master == (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (
        1 << ofp.OFPR_INVALID_TTL)
    assert slave == 0
    assert msg.flow_removed_mask[0] & (1 << ofp.OFPRR_IDLE_TIMEOUT)
    assert msg.port_status_mask == [7, 7]


def test_gre_outbound_leaves_from_the_public_address(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_outbound(GreOutboundEntry(11, CLIENT, SERVER, PUBLIC, 300),
                                   CLIENT_L2, SERVER_L2, GW_MAC))
    [(port, sent)] = dp.process(ip_packet(1, "192.168.1.1", "203.0.113.1", 47)).outputs
    assert port == OUTSIDE_PORT
    assert (sent["ipv4_src"], sent["ipv4_dst"]) == ("203.0.113.2", "203.0.113.1")


def test_gre_outbound_matches_only_the_clients_port(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_outbound(GreOutboundEntry(11, CLIENT, SERVER, PUBLIC, 300),
                                   CLIENT_L2, SERVER_L2, GW_MAC))
    spoofed = dp.process(ip_packet(2, "192.168.1.1", "203.0.113.1", 47))
    assert spoofed.to_controller
    assert spoofed.entry is not None and spoofed.entry.priority == switch.PRIORITY_PUNT


def test_gre_inbound_flow_path_goes_to_the_client(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, CLIENT, 300),
                                     OUTSIDE_PORT, CLIENT_L2, GW_MAC))
    [(port, sent)] = dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47)).outputs
    assert port == CLIENT_L2.port
    assert sent["ipv4_dst"] == "192.168.1.1"


def test_gre_inbound_controller_path_goes_to_the_controller(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, None, 300),
                                     OUTSIDE_PORT, None, GW_MAC))
    result = dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47))
    assert result.to_controller
    assert result.entry is not None and result.entry.priority == switch.PRIORITY_SESSION


def test_path_change_replaces_the_entry(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, CLIENT, 300),
                                     OUTSIDE_PORT, CLIENT_L2, GW_MAC))
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, None, 300),
                                     OUTSIDE_PORT, None, GW_MAC))
    assert dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47)).to_controller
    assert sum(1 for e in dp.table if e.priority == switch.PRIORITY_SESSION) == 1


def test_remove_deletes_only_that_entry_group(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_outbound(GreOutboundEntry(11, CLIENT, SERVER, PUBLIC, 300),
                                   CLIENT_L2, SERVER_L2, GW_MAC))
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, CLIENT, 300),
                                     OUTSIDE_PORT, CLIENT_L2, GW_MAC))
    for mod in flowmods.session_entries(SessionEntries(session(), 120), CLIENT_L2, SERVER_L2,
                                   GW_MAC):
        dp.send_msg(mod)
    before = len(dp.table)
    dp.send_msg(flowmods.remove(RemoveEntries(EntryKind.SESSION, 7)))
    assert len(dp.table) == before - 2
    assert dp.process(tcp(1, "192.168.1.1", 40000, "203.0.113.1", 80)).to_controller
    assert not dp.process(ip_packet(1, "192.168.1.1", "203.0.113.1", 47)).to_controller
    dp.send_msg(flowmods.remove(RemoveEntries(EntryKind.GRE_OUTBOUND, 11)))
    assert dp.process(ip_packet(1, "192.168.1.1", "203.0.113.1", 47)).to_controller
    dp.send_msg(flowmods.remove(RemoveEntries(EntryKind.GRE_INBOUND, 12)))
    left = dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47)).entry
    assert left is not None and switch.decode_cookie(left.cookie) == (EntryKind.PIPELINE, 0)


def test_stats_request_asks_for_our_cookies_only() -> None:
    dp = FakeDatapath()
    request = flowmods.stats_request(dp)
    assert request.cookie == switch.COOKIE_TAG
    assert request.cookie_mask == switch.COOKIE_TAG_MASK


def test_idle_timeout_is_capped_to_the_openflow_field() -> None:
    mod = flowmods.gre_outbound(GreOutboundEntry(1, CLIENT, SERVER, PUBLIC, 1e9), CLIENT_L2,
                             SERVER_L2, GW_MAC)
    assert parsed(mod).idle_timeout == 65535


def test_every_punt_passes_the_meter_of_its_class(dp: FakeDatapath) -> None:
    punts = [e for e in dp.table if any(
        getattr(a, "port", None) == CONTROLLER for a in e.actions)]
    meters = {(e.match.get("in_port"), e.match.get("tcp_src"), e.match.get("tcp_dst"),
               e.match.get("eth_type")): e.meter for e in punts}
    assert meters == {
        (None, None, None, 0x0806): switch.METER_ARP,
        (1, None, None, 0x0800): switch.METER_INSIDE_PORT + 1,
        (1, None, 1723, 0x0800): switch.METER_INSIDE_PORT + 1,
        (2, None, None, 0x0800): switch.METER_INSIDE_PORT + 2,
        (2, None, 1723, 0x0800): switch.METER_INSIDE_PORT + 2,
        (OUTSIDE_PORT, None, None, 0x0800): switch.METER_OUTSIDE_NEW,
        (OUTSIDE_PORT, 1723, None, 0x0800): switch.METER_OUTSIDE_CONTROL,
    }
    rates = AlgConfig(punt_rate_arp=7, punt_rate_inside_port=9)
    fresh = FakeDatapath()
    for mod in flowmods.meters(fresh, rates, INSIDE_PORTS):
        fresh.send_msg(mod)
    assert fresh.meters[switch.METER_ARP] == 7 and fresh.meters[switch.METER_INSIDE_PORT + 2] == 9
    assert fresh.errors == []
    for mod in flowmods.meters(fresh, AlgConfig(), INSIDE_PORTS):
        fresh.send_msg(mod)  # after a controller restart each ADD is refused...
    assert len(fresh.errors) == len(fresh.meters)
    assert fresh.meters[switch.METER_ARP] == AlgConfig().punt_rate_arp  # ...MODIFY sets it


def test_the_controller_path_gre_entry_passes_the_gre_meter(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(GreInboundEntry(12, SERVER, PUBLIC, None, 300),
                                     OUTSIDE_PORT, None, GW_MAC))
    [entry] = [e for e in dp.table if e.match.get("ip_proto") == 47]
    assert entry.meter == switch.METER_GRE and dp.errors == []




def test_the_demux_path_sends_the_pair_to_the_demultiplexers_port(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(
        GreInboundEntry(12, SERVER, PUBLIC, None, 300, via_demux=True),
        OUTSIDE_PORT, None, GW_MAC, DEMUX_PORT))
    result = dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47))
    [(port, sent)] = result.outputs
    assert port == DEMUX_PORT and not result.to_controller
    assert sent["ipv4_dst"] == "203.0.113.2"  # the demultiplexer rewrites it
    assert sent["ttl"] == 63  # decremented on the way in, not again on the way back


def test_without_its_port_the_demux_path_is_the_controller_path(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.gre_inbound(
        GreInboundEntry(12, SERVER, PUBLIC, None, 300, via_demux=True),
        OUTSIDE_PORT, None, GW_MAC, None))
    assert dp.process(ip_packet(OUTSIDE_PORT, "203.0.113.1", "203.0.113.2", 47)).to_controller


def test_what_the_demultiplexer_sends_back_reaches_its_client(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.demux_return(DemuxReturnEntry(14, CLIENT), DEMUX_PORT, CLIENT_L2,
                                      GW_MAC))
    [(port, sent)] = dp.process(ip_packet(DEMUX_PORT, "203.0.113.1", "192.168.1.1", 47)).outputs
    assert port == CLIENT_L2.port
    assert (sent["eth_dst"], sent["eth_src"], sent["ttl"]) == (CLIENT_L2.mac, GW_MAC, 64)
    other = dp.process(ip_packet(DEMUX_PORT, "203.0.113.1", "192.168.1.2", 47))
    assert other.outputs == [] and not other.to_controller  # no entry: dropped
    spoofed = dp.process(ip_packet(2, "203.0.113.1", "192.168.1.1", 47))
    assert spoofed.to_controller  # only what comes from the demultiplexer's port


def test_the_heartbeat_comes_back_to_the_controller(dp: FakeDatapath) -> None:
    dp.send_msg(flowmods.demux_probe(DEMUX_PORT, IPv4Address("0.0.0.3")))
    assert dp.process(ip_packet(DEMUX_PORT, "0.0.0.1", "0.0.0.3", 47)).to_controller
    assert not dp.process(ip_packet(DEMUX_PORT, "0.0.0.1", "0.0.0.4", 47)).to_controller


def test_table_decisions_have_no_flow_mods_and_return_entries_need_the_port() -> None:
    def lookup(side: object, ip: IPv4Address) -> L2 | None:
        return CLIENT_L2 if ip == CLIENT else None

    assert flowmods.entry_mods(DemuxEntry(SERVER, PUBLIC, 6, CLIENT, 5), lookup, 100,
                               GW_MAC, DEMUX_PORT) == []
    assert flowmods.entry_mods(DemuxForget(SERVER, PUBLIC, 6), lookup, 100, GW_MAC,
                               DEMUX_PORT) == []
    assert flowmods.entry_mods(DemuxReturnEntry(3, CLIENT), lookup, 100, GW_MAC, None) == []
    assert flowmods.entry_mods(DemuxReturnEntry(3, IPv4Address("192.168.1.9")), lookup, 100,
                               GW_MAC, DEMUX_PORT) is None
    [mod] = flowmods.entry_mods(DemuxReturnEntry(3, CLIENT), lookup, 100, GW_MAC,
                                DEMUX_PORT) or []
    assert switch.decode_cookie(parsed(mod).cookie) == (EntryKind.DEMUX_RETURN, 3)


def control_session(public_port: int = 40001, client: IPv4Address = CLIENT) -> NatSession:
    return NatSession(
        id=9, proto=Proto.TCP, inside_ip=client, inside_port=40000, public_ip=PUBLIC,
        public_port=public_port, remote_ip=SERVER, remote_port=1723, created=0.0,
        last_seen=0.0,
    )


def test_a_control_connection_has_its_own_punt_entry_and_meter(dp: FakeDatapath) -> None:
    lookup = {CLIENT: CLIENT_L2}.get
    [mod] = flowmods.entry_mods(ControlEntry(control_session()),
                                lambda _side, ip: lookup(ip), OUTSIDE_PORT, GW_MAC) or []
    dp.send_msg(mod)
    assert dp.errors == []
    own = dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 1723, "203.0.113.2", 40001))
    assert own.to_controller and own.entry is not None
    assert own.entry.priority == switch.PRIORITY_CONTROL_CONNECTION > switch.PRIORITY_CONTROL
    assert own.entry.meter == switch.METER_CONTROL_CONNECTIONS + CLIENT_L2.port
    assert switch.decode_cookie(own.entry.cookie) == (EntryKind.CONTROL, 9)
    assert (own.entry.idle_timeout, own.entry.flags) == (0, 0)  # the core removes it
    for junk in (tcp(OUTSIDE_PORT, "203.0.113.1", 1723, "203.0.113.2", 40002),
                 tcp(OUTSIDE_PORT, "203.0.113.7", 1723, "203.0.113.2", 40001),
                 tcp(2, "203.0.113.1", 1723, "203.0.113.2", 40001)):
        result = dp.process(junk)
        assert result.entry is not None and result.entry.meter != own.entry.meter
    other_port = dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 1723, "203.0.113.2", 40002))
    assert other_port.entry is not None
    assert other_port.entry.meter == switch.METER_OUTSIDE_CONTROL
    dp.send_msg(flowmods.remove(RemoveEntries(EntryKind.CONTROL, 9)))
    back = dp.process(tcp(OUTSIDE_PORT, "203.0.113.1", 1723, "203.0.113.2", 40001))
    assert back.entry is not None and back.entry.meter == switch.METER_OUTSIDE_CONTROL


def test_a_control_entry_needs_the_clients_port_and_the_outside_port() -> None:
    decision = ControlEntry(control_session())
    assert flowmods.entry_mods(decision, lambda _side, _ip: None, OUTSIDE_PORT, GW_MAC) is None
    assert flowmods.entry_mods(decision, lambda _side, _ip: CLIENT_L2, None, GW_MAC) is None


def test_each_inside_port_has_a_meter_for_its_hosts_control_connections() -> None:
    fresh = FakeDatapath()
    for mod in flowmods.meters(fresh, AlgConfig(punt_rate_control_connections=11),
                               iter(INSIDE_PORTS)):
        fresh.send_msg(mod)
    assert fresh.errors == []
    for port in INSIDE_PORTS:
        assert fresh.meters[switch.METER_CONTROL_CONNECTIONS + port] == 11
        assert fresh.meters[switch.METER_INSIDE_PORT + port] == AlgConfig().punt_rate_inside_port
    highest_ovs_port = 0xFEFF
    ids = {switch.METER_ARP, switch.METER_OUTSIDE_CONTROL, switch.METER_OUTSIDE_NEW,
           switch.METER_GRE}
    assert switch.METER_INSIDE_PORT + highest_ovs_port < switch.METER_CONTROL_CONNECTIONS
    assert max(ids) < switch.METER_INSIDE_PORT
    assert switch.METER_CONTROL_CONNECTIONS + highest_ovs_port < 1 << 18
