"""The Ryu shim (``ryu_apps.nat_gateway``) on a fake datapath: frames in, messages out.

The app is built with a ``[nat]`` configuration of its own and no poller thread; frames
made with Scapy go in through ``handle_frame`` (what a packet-in does), and the test looks
at the flow-mods and packet-outs the fake datapath received, and at the counters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from alg.events import (
    Decision,
    Direction,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    SendGre,
    SendTcp,
    TcpSegment,
)
from alg.neighbours import L2, Side
from ryu_apps import flowmods, nat_gateway, packets, switch, unit
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import (
    CLIENT,
    CLIENT_MAC,
    GW_MAC,
    IN1,
    IN2,
    OPTIONS,
    OTHER_MAC,
    OUT,
    PORTS,
    PUBLIC,
    SERVER,
    SERVER_MAC,
)
from tests.unit.fake_switch import FakeDatapath, parsed
from tests.unit.pptp_flows import ControlLink


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dp() -> FakeDatapath:
    return FakeDatapath()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, dp: FakeDatapath, clock: Clock) -> NatGateway:
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(nat=dict(OPTIONS)))
    monkeypatch.setattr(nat_gateway.hub, "spawn", lambda *_a, **_k: None)
    gateway = NatGateway()
    gateway.now = clock  # type: ignore[method-assign]
    ports = [SimpleNamespace(name=name.encode(), port_no=no)
             for name, no in PORTS]
    gateway._switch_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    gateway._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=ports)))
    reply = SimpleNamespace(xid=gateway.switch.reconcile_xid, body=[], flags=0, datapath=dp)
    gateway._flow_stats(SimpleNamespace(msg=reply))
    dp.sent.clear()
    return gateway


# Frames.

def ether(src_mac: str, payload: Packet, dst_mac: str = GW_MAC) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / payload)


def arp(op: int, mac: str, sender: IPv4Address | str, target: IPv4Address | str) -> bytes:
    return ether(mac, ARP(op=op, hwsrc=mac, psrc=str(sender), pdst=str(target)),
                 dst_mac="ff:ff:ff:ff:ff:ff")


def udp_out(src: IPv4Address = CLIENT, dst: IPv4Address | str = SERVER, **ip: Any) -> Packet:
    return IP(src=str(src), dst=str(dst), **ip) / UDP(sport=5000, dport=53) / b"query"


def inside(app: NatGateway) -> dict[IPv4Address, L2]:
    return app.neighbours.hosts(Side.INSIDE)


def learn_server(app: NatGateway, dp: FakeDatapath) -> None:
    app.handle_frame(dp, OUT, arp(2, SERVER_MAC, SERVER, PUBLIC))


# What left the switch.

def packet_outs(dp: FakeDatapath) -> list[tuple[int, Ether]]:
    return [(m.actions[0].port, Ether(m.data)) for m in dp.sent
            if isinstance(m, parser.OFPPacketOut)]


def ip_outs(dp: FakeDatapath) -> list[tuple[int, IP]]:
    return [(port, frame[IP]) for port, frame in packet_outs(dp) if IP in frame]


def arp_requests(dp: FakeDatapath) -> list[tuple[int, str]]:
    return [(port, frame[ARP].pdst) for port, frame in packet_outs(dp)
            if ARP in frame and frame[ARP].op == 1]


def added_flows(dp: FakeDatapath) -> list[Any]:
    return [m for m in dp.sent
            if isinstance(m, parser.OFPFlowMod) and m.command == dp.ofproto.OFPFC_ADD]


def record(monkeypatch: pytest.MonkeyPatch, target: object, name: str,
           result: Callable[..., Any] = lambda *_a: Output()) -> list[tuple[Any, ...]]:
    """Replace ``target.name`` with a recorder of its calls that returns ``result(...)``."""
    calls: list[tuple[Any, ...]] = []

    def recorder(*args: Any) -> Any:
        calls.append(args)
        return result(*args)

    monkeypatch.setattr(target, name, recorder, raising=False)
    return calls


# 1. Inside addresses are pinned to their port; outbound entries match it.

def test_outbound_session_entry_matches_the_inside_hosts_port(
    app: NatGateway, dp: FakeDatapath
) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    out, back = added_flows(dp)
    assert dict(out.match.items())["in_port"] == IN1
    assert dict(back.match.items())["in_port"] == OUT
    [(port, sent)] = ip_outs(dp)
    assert (port, sent.src) == (OUT, str(PUBLIC))


def test_an_inside_address_from_another_port_is_dropped_and_counted(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    pinned = inside(app)[CLIENT]
    dp.sent.clear()
    calls = record(monkeypatch, app.core, "handle_udp")
    app.handle_frame(dp, IN2, ether(OTHER_MAC, udp_out()))
    app.handle_frame(dp, IN2, arp(2, OTHER_MAC, CLIENT, "192.168.1.254"))
    app.handle_frame(dp, IN2, arp(1, OTHER_MAC, CLIENT, "192.168.1.254"))
    assert calls == [] and dp.sent == []
    assert app.neighbours.counters.spoofed_drops == 3
    assert inside(app)[CLIENT] is pinned
    assert pinned == L2(IN1, CLIENT_MAC)


def test_a_pinned_hosts_mac_changes_by_arp_on_its_port_only(
    app: NatGateway, dp: FakeDatapath
) -> None:
    app.handle_frame(dp, IN1, arp(1, CLIENT_MAC, CLIENT, "192.168.1.254"))
    first = inside(app)[CLIENT]
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out(dst="192.168.1.254")))
    app.handle_frame(dp, IN1, ether(OTHER_MAC, udp_out(dst="192.168.1.254")))
    assert inside(app)[CLIENT] is first  # not rewritten by each IP packet
    app.handle_frame(dp, IN1, arp(1, CLIENT_MAC, CLIENT, "192.168.1.254"))
    assert inside(app)[CLIENT] is first
    app.handle_frame(dp, IN1, arp(2, OTHER_MAC, CLIENT, "192.168.1.254"))
    assert inside(app)[CLIENT] == L2(IN1, OTHER_MAC)
    assert app.neighbours.counters.spoofed_drops == 0


def entry_mods(app: NatGateway, dp: FakeDatapath, decision: Decision) -> list[Any] | None:
    mods = flowmods.entry_mods(
        decision, app.neighbours.lookup, app.neighbours.outside_port, GW_MAC
    )
    return None if mods is None else [parsed(m) for m in mods]


def test_gre_outbound_entry_needs_the_clients_port(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    learn_server(app, dp)
    decision = GreOutboundEntry(11, CLIENT, SERVER, PUBLIC, 300)
    assert entry_mods(app, dp, decision) is None  # client not known: cannot be installed
    failed = record(monkeypatch, app.core, "entry_failed")
    app.apply(dp, Output(decisions=[decision]))
    assert failed == [(decision, clock.now)] and added_flows(dp) == []  # reported only
    assert app.counters.entries_not_installed == 1
    app.handle_frame(dp, IN2, arp(1, CLIENT_MAC, CLIENT, "192.168.1.254"))
    [mod] = entry_mods(app, dp, decision)
    assert dict(mod.match.items())["in_port"] == IN2


def test_gre_inbound_to_an_unknown_client_goes_to_the_controller_and_the_core_knows(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    learn_server(app, dp)
    link = ControlLink(app.core, CLIENT, 40000, SERVER, now=clock.now).start()
    link.outgoing_call(5, 700)  # the client's ID is kept: the core picks the flow path
    out = link.outputs[-1]
    [inbound] = [d for d in out.decisions if isinstance(d, GreInboundEntry)]
    assert inbound.client_ip == CLIENT
    app.apply(dp, out)  # the app has never seen the client
    [mod] = [m for m in added_flows(dp)
             if switch.decode_cookie(m.cookie) == (EntryKind.GRE_INBOUND, inbound.entry_id)]
    [action] = mod.instructions[-1].actions
    assert action.port == dp.ofproto.OFPP_CONTROLLER
    assert mod.instructions[0].meter_id == switch.METER_GRE
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    # Once the client is known, the next tick offers the flow path again.
    app.handle_frame(dp, IN1, arp(1, CLIENT_MAC, CLIENT, "192.168.1.254"))
    dp.sent.clear()
    app.apply(dp, app.core.tick(clock.now + 5))
    [mod] = added_flows(dp)
    assert [type(a).__name__ for a in mod.instructions[0].actions][-1] == "OFPActionOutput"
    assert mod.instructions[0].actions[-1].port == IN1
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"


# 2. A pending ARP entry is resolved only from its own side.

def test_outside_pending_arp_is_flushed_only_by_the_outside(
    app: NatGateway, dp: FakeDatapath
) -> None:
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    assert arp_requests(dp) == [(OUT, str(SERVER))]
    app.handle_frame(dp, IN2, arp(2, OTHER_MAC, SERVER, "192.168.1.254"))
    assert app.neighbours.waiting(SERVER) == 1 and ip_outs(dp) == []
    assert SERVER not in app.neighbours.hosts(Side.OUTSIDE)
    app.handle_frame(dp, OUT, arp(2, SERVER_MAC, SERVER, PUBLIC))
    assert app.neighbours.waiting(SERVER) is None
    [(port, sent)] = ip_outs(dp)
    assert (port, sent.src, sent.dst) == (OUT, str(PUBLIC), str(SERVER))


def test_inside_pending_arp_is_flushed_only_by_the_inside(
    app: NatGateway, dp: FakeDatapath
) -> None:
    host = IPv4Address("192.168.1.9")
    gre = SendGre(Direction.INBOUND, SERVER, host, b"\x30\x01\x88\x0b\0\0\0\0")
    app.apply(dp, Output(emits=[gre]))
    assert arp_requests(dp) == [(IN1, str(host)), (IN2, str(host))]
    app.handle_frame(dp, OUT, arp(2, SERVER_MAC, host, PUBLIC))
    assert app.neighbours.waiting(host) == 1 and ip_outs(dp) == []
    app.handle_frame(dp, IN2, arp(2, OTHER_MAC, host, "192.168.1.254"))
    assert app.neighbours.waiting(host) is None
    [(port, sent)] = ip_outs(dp)
    assert (port, sent.dst) == (IN2, str(host))


# 3. Fragments are dropped and counted.

def test_fragments_are_dropped_and_counted(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    learn_server(app, dp)
    calls = record(monkeypatch, app.core, "handle_udp")
    first = IP(src=str(CLIENT), dst=str(SERVER), flags="MF", proto=17) / (b"\0" * 16)
    later = IP(src=str(CLIENT), dst=str(SERVER), frag=2, proto=17) / (b"\0" * 16)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, first))
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, later))
    back = IP(src=str(SERVER), dst=str(PUBLIC), flags="MF", proto=17) / (b"\0" * 16)
    app.handle_frame(dp, OUT, ether(SERVER_MAC, back))
    assert app.counters.fragments_dropped == 3
    assert calls == [] and ip_outs(dp) == []


# 4. Packets the controller builds keep the incoming packet's header fields.

def original(ttl: int = 30, df: bool = True) -> packets.Ipv4:
    return packets.Ipv4(SERVER, PUBLIC, packets.PROTO_GRE, ttl, 4321, 0x28, b"", b"",
                        dont_fragment=df)


def emits() -> Output:
    seg = TcpSegment(CLIENT, 40000, SERVER, 1723, 1, 2, 0x18, 512, b"data")
    return Output(emits=[
        SendTcp(Direction.OUTBOUND, seg),
        SendGre(Direction.OUTBOUND, PUBLIC, SERVER, b"\x30\x01\x88\x0b\0\0\0\0"),
    ])


@pytest.mark.parametrize("df", [True, False])
def test_built_packets_copy_ttl_ident_tos_and_df_of_the_original(
    app: NatGateway, dp: FakeDatapath, df: bool
) -> None:
    learn_server(app, dp)
    app.apply(dp, emits(), original(df=df))
    sent = [ip for _port, ip in ip_outs(dp)]
    assert [ip.proto for ip in sent] == [6, 47]
    for ip in sent:
        assert (ip.ttl, ip.id, ip.tos) == (29, 4321, 0x28)
        assert ip.flags == ("DF" if df else 0)


def test_built_packets_without_an_original_get_the_defaults(
    app: NatGateway, dp: FakeDatapath
) -> None:
    learn_server(app, dp)
    app.apply(dp, emits())
    for _port, ip in ip_outs(dp):
        assert (ip.ttl, ip.id, ip.tos, ip.flags) == (64, 0, 0, 0)


def test_built_packets_of_an_expiring_original_are_dropped_and_counted(
    app: NatGateway, dp: FakeDatapath
) -> None:
    learn_server(app, dp)
    app.apply(dp, emits(), original(ttl=1))
    assert ip_outs(dp) == []
    assert app.counters.ttl_expired == 2


def test_forwarded_packets_keep_dont_fragment(app: NatGateway, dp: FakeDatapath) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out(flags="DF", ttl=20, id=99, tos=8)))
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out(ttl=20, id=100)))
    [(_p1, with_df), (_p2, without)] = ip_outs(dp)
    assert (with_df.flags, with_df.ttl, with_df.id, with_df.tos) == ("DF", 19, 99, 8)
    assert (without.flags, without.id) == (0, 100)


# 5. Bad L4 checksums never reach the core.

def test_bad_checksums_are_dropped_before_the_core(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    learn_server(app, dp)
    udp_calls = record(monkeypatch, app.core, "handle_udp")
    tcp_calls = record(monkeypatch, app.core, "handle_tcp")
    bad_udp = IP(src=str(CLIENT), dst=str(SERVER)) / UDP(sport=1, dport=2, chksum=0x1234)
    bad_tcp = IP(src=str(SERVER), dst=str(PUBLIC)) / TCP(sport=1723, dport=40000, chksum=7)
    bad_ping = IP(src=str(CLIENT), dst="192.168.1.254") / ICMP(chksum=1)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, bad_udp / b"x"))
    app.handle_frame(dp, OUT, ether(SERVER_MAC, bad_tcp))
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, bad_ping))
    assert app.counters.bad_checksums == 3
    assert udp_calls == [] and tcp_calls == [] and packet_outs(dp) == []
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    assert len(udp_calls) == 1


# 6. Flow-removed messages reach the core.

def test_flow_removed_tells_the_core(app: NatGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record(monkeypatch, app.core, "flow_removed")

    def removed(cookie: int) -> None:
        app._flow_removed(SimpleNamespace(msg=SimpleNamespace(
            cookie=cookie, packet_count=3, byte_count=300, datapath=app.datapath,
        )))

    removed(switch.cookie(EntryKind.SESSION, 7))
    removed(switch.cookie(EntryKind.GRE_INBOUND, 12))
    removed(0x1234)
    assert calls == [(EntryKind.SESSION, 7, 3, 300), (EntryKind.GRE_INBOUND, 12, 3, 300)]
    assert app.counters.flows_removed == 3


# 7. The poller: ARP retries every second, statistics and ageing every stats_interval.

def test_arp_is_retried_each_second_and_given_up_after_five_retries(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    start = clock.now
    for second in range(1, 6):
        clock.now = start + second
        app.periodic(clock.now)
        assert len(arp_requests(dp)) == 1 + second
    clock.now = start + 6
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))  # no request beyond the retries
    assert len(arp_requests(dp)) == 6 and app.neighbours.waiting(SERVER) == 3
    app.periodic(clock.now)
    assert len(arp_requests(dp)) == 6
    assert app.neighbours.waiting(SERVER) is None
    assert app.neighbours.counters.arp_queue_drops == 3


def test_stats_and_ageing_run_every_stats_interval(
    app: NatGateway, dp: FakeDatapath, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = record(monkeypatch, app.core, "tick")
    start = clock.now
    for second in range(11):
        clock.now = start + second
        app.periodic(clock.now)
    requests = [m for m in dp.sent if isinstance(m, parser.OFPFlowStatsRequest)]
    assert len(requests) == 3
    assert [t[0] - start for t in ticks] == [0, 5, 10]


def test_spent_ttl_packet_ins_beyond_the_rate_are_dropped_before_decoding(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    learn_server(app, dp)
    expired = record(monkeypatch, app.core, "expired")
    frame = ether(CLIENT_MAC, udp_out(ttl=1))
    msg = SimpleNamespace(reason=dp.ofproto.OFPR_INVALID_TTL, datapath=dp,
                          match={"in_port": IN1}, data=frame, table_id=0)
    for _ in range(250):
        app._packet_in(SimpleNamespace(msg=msg))
    assert app.counters.ttl_expired_on_flow == 250
    assert app.counters.ttl_expired_dropped == 250 - unit.EXPIRED_PER_SECOND
    assert len(expired) == unit.EXPIRED_PER_SECOND


def test_the_stats_request_goes_after_the_ageings_deletions(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    clock.now += 10_000  # the UDP session ages out at this poll
    app.periodic(clock.now)
    kinds = [type(m).__name__ for m in dp.sent
             if isinstance(m, parser.OFPFlowStatsRequest) or (
                 isinstance(m, parser.OFPFlowMod) and m.command == dp.ofproto.OFPFC_DELETE
                 and switch.decode_cookie(m.cookie) == (EntryKind.SESSION, 1))]
    assert kinds == ["OFPFlowMod", "OFPFlowStatsRequest"]


def test_a_new_stats_request_forgets_a_cut_off_reply(
    app: NatGateway, dp: FakeDatapath, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = record(monkeypatch, app.core, "flow_stats")

    def reply(count: int, more: bool) -> None:
        body = [SimpleNamespace(cookie=switch.cookie(EntryKind.SESSION, 7), packet_count=count,
                                byte_count=count * 100)]
        flags = dp.ofproto.OFPMPF_REPLY_MORE if more else 0
        app._flow_stats(SimpleNamespace(msg=SimpleNamespace(xid=0, body=body, flags=flags,
                                                            datapath=dp)))

    app.periodic(clock.now)
    reply(40, more=True)  # the rest of this reply never comes
    clock.now += 5
    app.periodic(clock.now)
    reply(50, more=False)
    assert stats == [(EntryKind.SESSION, 7, 50, clock.now, 5000)]


# 8. Inside multicast and broadcast are not NATed out.

@pytest.mark.parametrize("dst", ["224.0.0.251", "239.255.255.250", "255.255.255.255",
                                 "192.168.1.255"])
def test_inside_multicast_and_broadcast_are_dropped_silently(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch, dst: str
) -> None:
    calls = record(monkeypatch, app.core, "handle_udp")
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out(dst=dst)))
    assert calls == [] and dp.sent == [] and app.neighbours.waiting(IPv4Address(dst)) is None
    counters = app.counters
    assert app.neighbours.counters.spoofed_drops == 0
    assert counters.bad_checksums == counters.fragments_dropped == 0


# 9. Cleanups.

def test_removed_leftovers_are_gone(app: NatGateway) -> None:
    assert not hasattr(flowmods, "COOKIE_KIND_MASK")
    assert not hasattr(app, "started")
    assert flowmods.ETH_TYPE_IPV4 is packets.ETH_TYPE_IPV4


# 10. REST views of the running app.

def get(app: NatGateway, path: str, query: str = "", method: str = "GET"
        ) -> tuple[str, dict[str, str], bytes]:
    """GET ``path`` of the app's HTTP API through its WSGI router: status, headers, body."""
    from ryu_apps import rest

    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(rest.router(app)({"REQUEST_METHOD": method, "PATH_INFO": path,
                                      "QUERY_STRING": query}, start_response))
    return answer["status"], answer["headers"], body


def test_rest_shows_counters_calls_sessions_and_displays(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    link = ControlLink(app.core, CLIENT, 40000, SERVER, now=clock.now).start()
    link.outgoing_call(5, 700)
    counters = json.loads(get(app, "/pptp-alg/counters")[2])
    assert counters["alg"]["calls_set_up"] == 1 and counters["alg"]["calls_in_progress"] == 1
    assert counters["app"]["packet_ins"] == 0 and counters["app"]["packet_outs"] >= 1
    assert counters["neighbours"]["arp_requests_sent"] == 0
    [call] = json.loads(get(app, "/pptp-alg/calls")[2])
    assert (call["client_call_id"], call["public_call_id"], call["server_call_id"]) == (5, 5, 700)
    assert call["inbound_gre_path"] == "flow" and call["direction"] == "outgoing"
    sessions = json.loads(get(app, "/pptp-alg/sessions")[2])
    assert sorted((s["proto"], s["pptp_control"]) for s in sessions) == [
        ("tcp", True), ("udp", False)
    ]
    assert len(json.loads(get(app, "/pptp-alg/server-map")[2])) == 2
    assert len(json.loads(get(app, "/pptp-alg/session-table")[2])) == 2
    status, headers, text = get(app, "/pptp-alg/display/server-map", "verbose=1")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain")
    assert "Type: ASPF, 203.0.113.1:0 -> 203.0.113.2:5[192.168.1.1:5]" in text.decode()
    assert "Path: flow" in text.decode()
    assert "Path: flow" not in get(app, "/pptp-alg/display/server-map")[2].decode()
    assert "+-> 203.0.113.1:1723" in get(app, "/pptp-alg/display/session-table")[2].decode()


def scrape(app: NatGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by prometheus_client's own parser: value by (sample name,
    labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = get(app, "/metrics")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def test_metrics_show_the_counters_and_gauges_of_the_running_app(
    app: NatGateway, dp: FakeDatapath, clock: Clock
) -> None:
    learn_server(app, dp)
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out() / b"x"))
    link = ControlLink(app.core, CLIENT, 40000, SERVER, now=clock.now).start()
    link.outgoing_call(5, 700)
    app.core.counters.malformed_messages = 3
    app.counters.bad_checksums = 2
    metrics = scrape(app)

    def g(*labels: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """The labels of a sample of the one gateway, ``default``."""
        return tuple(sorted((("gateway", "default"), *labels)))

    assert metrics[("pptp_alg_calls_in_progress", g())] == 1
    assert metrics[("pptp_alg_calls_set_up_total", g())] == 1
    assert metrics[("pptp_alg_call_ids_translated_total", g())] == (
        app.core.counters.call_ids_translated)
    assert metrics[("pptp_alg_errors_total", g(("kind", "malformed_messages")))] == 3
    assert metrics[("pptp_alg_errors_total", g(("kind", "bad_checksums")))] == 2
    assert metrics[("pptp_alg_packet_outs_total", g())] == app.counters.packet_outs
    assert metrics[("pptp_alg_nat_sessions", g(("proto", "tcp")))] == 1
    assert metrics[("pptp_alg_nat_sessions", g(("proto", "udp")))] == 1
    assert metrics[("pptp_alg_public_address_hosts", g(("public_ip", str(PUBLIC))))] == 1
    assert metrics[("pptp_alg_gre_demux_up", g())] == 0
    for path in ("flow", "demux", "controller"):
        for direction in ("outbound", "inbound"):
            labels = g(("direction", direction), ("path", path))
            assert metrics[("pptp_alg_gre_packets_total", labels)] == 0
    names = {name for name, _labels in metrics}
    every = {*app.core.counters.as_dict(), *app.counters.as_dict(),
             *app.neighbours.counters.as_dict(), *app.demux.counters.as_dict()}
    for name in every:
        assert f"pptp_alg_{name}_total" in names or (
            ("pptp_alg_errors_total", g(("kind", name))) in metrics), name


def test_the_http_api_answers_what_it_does_not_serve_with_an_error(app: NatGateway) -> None:
    status, _, body = get(app, "/pptp-alg/nothing")
    assert status == "404 Not Found" and "no such path" in json.loads(body)["error"]
    status, headers, _ = get(app, "/metrics", method="POST")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(app, "/metrics", method="HEAD")
    assert status == "200 OK" and body == b"" and int(headers["Content-Length"]) > 0


def test_a_view_that_fails_is_a_500_not_a_crash(
    app: NatGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ryu_apps import rest

    def broken(_app: NatGateway) -> dict[str, Any]:
        raise RuntimeError("broken view")

    monkeypatch.setattr(rest, "snapshot_counters", broken)
    status, _, body = get(app, "/pptp-alg/counters")
    assert status == "500 Internal Server Error" and json.loads(body) == {
        "error": "internal error"}


# 9. One write per event, to the switch connected now (found by review).

def reconnect(app: NatGateway, new: FakeDatapath) -> None:
    """The switch comes back as a new datapath object, up to ready."""
    app._switch_gone(SimpleNamespace(datapath=app.datapath))
    ports = [SimpleNamespace(name=n.encode(), port_no=no)
             for n, no in PORTS]
    app._switch_features(SimpleNamespace(msg=SimpleNamespace(datapath=new)))
    app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=new, body=ports)))
    reply = SimpleNamespace(xid=app.switch.reconcile_xid, body=[], flags=0, datapath=new)
    app._flow_stats(SimpleNamespace(msg=reply))


def test_a_delivery_held_from_before_a_reconnect_sends_to_the_switch_of_now(
    app: NatGateway, dp: FakeDatapath
) -> None:
    app.handle_frame(dp, IN1, ether(CLIENT_MAC, udp_out()))  # waits for the server's MAC
    assert app.neighbours.waiting(SERVER) == 1
    new = FakeDatapath()
    reconnect(app, new)
    new.sent.clear()
    dp.sent.clear()
    app.handle_frame(new, OUT, arp(1, SERVER_MAC, SERVER, PUBLIC))
    replies = [port for port, frame in packet_outs(new)
               if ARP in frame and frame[ARP].op == 2]
    assert replies == [OUT] and dp.sent == []


def test_an_event_that_raises_sends_nothing_then_or_later(
    app: NatGateway, dp: FakeDatapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(nat_gateway.packets, "emit_packet", boom)
    gre = SendGre(Direction.INBOUND, SERVER, CLIENT, b"\x30\x01\x88\x0b\0\0\0\0")
    with pytest.raises(RuntimeError):
        app.apply(dp, Output(decisions=[RemoveEntries(EntryKind.SESSION, 7)], emits=[gre]))
    assert dp.sent == []
    new = FakeDatapath()
    reconnect(app, new)
    assert [m for m in new.sent if isinstance(m, parser.OFPFlowMod)
            and m.cookie == switch.cookie(EntryKind.SESSION, 7)] == []
