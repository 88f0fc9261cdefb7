"""The real app on a closed-loop fake switch, with peers that answer as real ones do.

Two PPTP clients (PNS) on two inside ports and a PPTP server (PAC) on the outside port
talk through the :class:`~ryu_apps.nat_gateway.NatGateway` app and the flow entries it
installs on a :class:`~tests.unit.fake_switch.FakeSwitch`. Everything is driven by frames
into switch ports and by the passing of time (the switch's idle timeouts, the app's
periodic work); the tests assert on which frames leave which port, how many reached the
controller, and what the switch and the app told each other. The core is read only
through ``counters``, ``calls()``, ``inbound_gre_path()`` and ``connections()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import GRE_PPTP, Ether
from scapy.packet import Raw

from ryu_apps import nat_gateway
from ryu_apps.framework import hub
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.nat_gateway import NatGateway
from tests.unit.app_env import (
    CLIENT,
    CLIENT_MAC,
    GW_MAC,
    IN1,
    IN2,
    OTHER_MAC,
    OUT,
    PUBLIC,
    SERVER,
    SERVER_MAC,
)
from tests.unit.app_env import OPTIONS as BASE_OPTIONS
from tests.unit.fake_hosts import (
    ClientCall,
    ClientLink,
    Host,
    PptpServer,
    ServerCall,
    TcpConnection,
)
from tests.unit.fake_switch import FakeSwitch

CLIENT1, CLIENT1_MAC = CLIENT, CLIENT_MAC
CLIENT2, CLIENT2_MAC = IPv4Address("192.168.1.2"), OTHER_MAC
GRE_IDLE = 30
UDP_IDLE = 20
HOLD_DOWN = 10
OPTIONS: dict[str, Any] = {
    **BASE_OPTIONS,
    "gre_idle": float(GRE_IDLE),
    "udp_idle": float(UDP_IDLE),
    "call_id_hold_down": float(HOLD_DOWN),
}


class Clock:
    """The time for the app and the switch, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class GreFrame:
    """What a test looks at in a GRE frame."""

    eth_src: str
    eth_dst: str
    src: IPv4Address
    dst: IPv4Address
    call_id: int
    ttl: int


def gre_frames(frames: list[bytes]) -> list[GreFrame]:
    """The GRE frames among ``frames``, decoded."""
    out = []
    for frame in frames:
        ether = Ether(frame)
        if GRE_PPTP in ether:
            ip = ether[IP]
            out.append(GreFrame(ether.src, ether.dst, IPv4Address(ip.src), IPv4Address(ip.dst),
                                ether[GRE_PPTP].call_id, ip.ttl))
    return out


@dataclass
class Dialled:
    """A call set up end to end: the client's view, the server's view, its connection."""

    link: ClientLink
    call: ClientCall
    server_call: ServerCall


@dataclass
class Lab:
    """The app on the fake switch, two clients and a server."""

    clock: Clock
    switch: FakeSwitch
    app: NatGateway
    client1: Host
    client2: Host
    server: Host
    pac: PptpServer

    def settle(self) -> None:
        """Let every frame and message in flight arrive."""
        self.switch.run()

    def wait(self, seconds: int) -> None:
        """Let time pass second by second: switch timeouts, then the app's poller."""
        for _ in range(seconds):
            self.clock.now += 1
            self.switch.advance(self.clock.now)
            self.app.periodic(self.clock.now)
            self.switch.run()

    def forget(self) -> None:
        """Start counting frames and packet-ins afresh."""
        self.switch.delivered.clear()
        self.switch.packet_ins.clear()
        for host in (self.client1, self.client2, self.server):
            host.gre.clear()
            host.datagrams.clear()

    def open_control(self, client: Host, src_port: int = 40000) -> ClientLink:
        """A control connection and Start-Control-Connection."""
        link = ClientLink(client, SERVER, src_port)
        self.settle()
        assert link.conn.state == "established"
        link.start()
        self.settle()
        return link

    def dial(self, client: Host, call_id: int, src_port: int = 40000) -> Dialled:
        """Control connection, Start-Control-Connection and one outgoing call."""
        link = self.open_control(client, src_port)
        call = link.call(call_id)
        self.settle()
        assert call.result_code == 1 and call.server_call_id is not None
        return Dialled(link, call, self.pac.call(call.server_call_id))

    def gre_out_of(self, port: int) -> list[GreFrame]:
        """GRE frames the switch sent out of ``port``."""
        return gre_frames(self.switch.delivered[port])

    def gre_packet_ins(self) -> list[GreFrame]:
        """GRE frames that reached the controller."""
        return gre_frames([frame for _port, frame in self.switch.packet_ins])

    def packet_ins_of(self, proto: type) -> int:
        """How many frames carrying ``proto`` reached the controller."""
        return sum(1 for _port, frame in self.switch.packet_ins if proto in Ether(frame))

    def gre_cookies(self) -> set[int]:
        """Cookies of the server-map entries installed now."""
        return {e.cookie for e in self.switch.entries(ip_proto=47)}

    def removed(self, cookies: set[int]) -> list[Any]:
        """Flow-removed messages the app received for entries with ``cookies``."""
        return [m for m in self.switch.received(parser.OFPFlowRemoved) if m.cookie in cookies]


def build_lab(monkeypatch: pytest.MonkeyPatch, more_ports: dict[str, int] | None = None,
              **options: Any) -> Lab:
    """The app configured with OPTIONS and ``options``, connected, peers plugged in (on a
    switch with ``more_ports`` too)."""
    monkeypatch.setattr(nat_gateway, "CONF", SimpleNamespace(nat={**OPTIONS, **options}))
    monkeypatch.setattr(hub, "spawn", lambda *_a, **_k: None)
    clock = Clock()
    switch = FakeSwitch({"in1": IN1, "in2": IN2, "out": OUT, **(more_ports or {})}, clock)
    app = NatGateway()
    app.now = clock  # type: ignore[method-assign]
    switch.connect(app)
    client1 = Host(switch, IN1, CLIENT1_MAC, f"{CLIENT1}/24", "192.168.1.254")
    client2 = Host(switch, IN2, CLIENT2_MAC, f"{CLIENT2}/24", "192.168.1.254")
    server = Host(switch, OUT, SERVER_MAC, f"{SERVER}/24")
    return Lab(clock, switch, app, client1, client2, server, PptpServer(server))


def check_clean(lab: Lab) -> None:
    """Nothing the switch refused, no frame a host had to drop, no TTL expired."""
    assert lab.switch.errors == []
    for host in (lab.client1, lab.client2, lab.server):
        assert [reason for reason, _frame in host.rejected] == []
    assert lab.switch.ttl_drops == 0


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    built = build_lab(monkeypatch)
    yield built
    check_clean(built)


def test_the_pipeline_is_installed_from_the_port_description(lab: Lab) -> None:
    assert lab.switch.received(parser.OFPPortDescStatsReply)
    assert lab.switch.entries(eth_type=0x0806)
    assert lab.switch.entries(in_port=IN1, ip_proto=6, tcp_dst=1723)
    assert lab.switch.entries(in_port=OUT, ipv4_dst=str(PUBLIC), ip_proto=6, tcp_src=1723)


def test_a_switch_the_gateway_does_not_bind_gets_nothing_and_takes_nothing_over(
        lab: Lab) -> None:
    """Once any switch that connected became the gateway's datapath."""
    other = FakeSwitch({"in1": IN1, "in2": IN2, "out": OUT}, lab.clock, bridge="br-other",
                       datapath_id=2)
    other.connect(lab.app)
    assert [type(m).__name__ for m in other.sent] == ["OFPPortDescStatsRequest"]
    assert other.table == [] and other.meters == {}
    assert lab.app.process_counters.switches_refused == 1
    assert lab.app.datapath is lab.switch
    d = lab.dial(lab.client1, 4242)
    assert d.server_call.peer_call_id == 4242
    assert [type(m).__name__ for m in other.sent] == ["OFPPortDescStatsRequest"]


# a. The flow path.

def test_a_call_whose_id_is_kept_carries_gre_on_flow_entries_only(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    assert d.server_call.peer_call_id == 4242
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    c = d.server_call.call_id
    lab.forget()
    for seq in (1, 2, 3):
        lab.pac.send_gre(d.server_call, seq)
        d.link.send_gre(d.call, seq)
    lab.settle()
    assert lab.switch.packet_ins == []
    to_client = GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)
    to_server = GreFrame(GW_MAC, SERVER_MAC, PUBLIC, SERVER, c, 63)
    assert lab.gre_out_of(IN1) == [to_client] * 3
    assert lab.gre_out_of(OUT) == [to_server] * 3
    assert lab.gre_out_of(IN2) == []
    assert [(g.call_id, g.sequence) for g in lab.client1.gre] == [(4242, 1), (4242, 2), (4242, 3)]
    assert [(g.src, g.call_id, g.sequence) for g in lab.server.gre] == [
        (PUBLIC, c, 1), (PUBLIC, c, 2), (PUBLIC, c, 3)
    ]
    assert [e.packet_count for e in lab.switch.entries(ip_proto=47)] == [3, 3]


def test_an_incoming_call_whose_id_is_kept_is_on_the_flow_path(lab: Lab) -> None:
    link = lab.open_control(lab.client1)
    link.answer_with = 777
    offered = lab.pac.offer(lab.pac.links[0])
    lab.settle()
    assert offered.peer_call_id == 777
    assert link.calls[777].server_call_id == offered.call_id
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    lab.forget()
    lab.pac.send_gre(offered, 1)
    link.send_gre(link.calls[777], 1)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert lab.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 777, 63)]
    assert lab.gre_out_of(OUT) == [
        GreFrame(GW_MAC, SERVER_MAC, PUBLIC, SERVER, offered.call_id, 63)
    ]


def test_every_control_segment_goes_through_the_controller_from_the_public_address(
    lab: Lab,
) -> None:
    d = lab.dial(lab.client1, 4242)
    [server_link] = lab.pac.links
    assert server_link.conn.remote_ip == PUBLIC
    assert len(lab.app.core.connections()) == 1
    assert [type(m).__name__ for m in d.link.messages] == [
        "StartControlConnectionReply", "OutgoingCallReply"
    ]
    segments = len(d.link.conn.segments) + len(server_link.conn.segments)
    assert lab.packet_ins_of(TCP) == segments
    assert lab.switch.entries(ip_proto=6, ipv4_src=str(CLIENT1)) == []
    assert lab.switch.entries(ip_proto=6, ipv4_dst=str(CLIENT1)) == []
    assert lab.packet_ins_of(GRE_PPTP) == 0


# b. Switching between the flow path and the controller.

def test_a_second_call_with_the_same_id_moves_the_pair_to_the_controller_and_back(
    lab: Lab,
) -> None:
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    b1, b2 = d1.server_call.peer_call_id, d2.server_call.peer_call_id
    assert b1 == 4242 and b2 is not None and b2 != 4242
    assert lab.pac.links[0].public_ip == lab.pac.links[1].public_ip == PUBLIC
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"

    lab.forget()
    lab.pac.send_gre(d1.server_call, 1)
    lab.pac.send_gre(d2.server_call, 1)
    lab.settle()
    assert sorted(g.call_id for g in lab.gre_packet_ins()) == sorted([b1, b2])
    assert lab.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)]
    assert lab.gre_out_of(IN2) == [GreFrame(GW_MAC, CLIENT2_MAC, SERVER, CLIENT2, 4242, 63)]
    assert [(g.call_id, g.sequence) for g in lab.client1.gre] == [(4242, 1)]
    assert [(g.call_id, g.sequence) for g in lab.client2.gre] == [(4242, 1)]

    lab.forget()
    d2.link.send_gre(d2.call, 1)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert lab.gre_out_of(OUT) == [
        GreFrame(GW_MAC, SERVER_MAC, PUBLIC, SERVER, d2.server_call.call_id, 63)
    ]

    d2.link.clear(d2.call)
    lab.settle()
    assert d2.server_call.cleared and d2.call.disconnected
    # The pair returns to the flow path once d2's public Call ID is out of hold-down.
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    lab.wait(HOLD_DOWN + 5)  # the next tick after the hold-down
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    lab.forget()
    for seq in (2, 3):
        lab.pac.send_gre(d1.server_call, seq)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert lab.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)] * 2
    assert [g.sequence for g in lab.client1.gre] == [2, 3]


def test_with_two_public_addresses_two_clients_with_one_call_id_both_keep_the_flow_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    second_public = IPv4Address("203.0.113.3")
    lab = build_lab(monkeypatch, public_ips=[str(PUBLIC), str(second_public)])
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    publics = {d1.server_call.link.public_ip, d2.server_call.link.public_ip}
    assert publics == {PUBLIC, second_public}
    assert d1.server_call.peer_call_id == d2.server_call.peer_call_id == 4242
    for public in publics:
        assert lab.app.core.inbound_gre_path(SERVER, public) == "flow"
    lab.forget()
    for d in (d1, d2):
        lab.pac.send_gre(d.server_call, 1)
        d.link.send_gre(d.call, 1)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert lab.gre_out_of(IN1) == [GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)]
    assert lab.gre_out_of(IN2) == [GreFrame(GW_MAC, CLIENT2_MAC, SERVER, CLIENT2, 4242, 63)]
    assert sorted((g.src, g.call_id) for g in lab.server.gre) == sorted(
        (d.server_call.link.public_ip, d.server_call.call_id) for d in (d1, d2)
    )
    check_clean(lab)


def test_the_pair_stays_on_the_controller_while_a_translated_call_remains(lab: Lab) -> None:
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    d1.link.clear(d1.call)
    lab.settle()
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"
    lab.forget()
    lab.pac.send_gre(d2.server_call, 5)
    lab.settle()
    assert [g.call_id for g in lab.gre_packet_ins()] == [d2.server_call.peer_call_id]
    assert [(g.call_id, g.sequence) for g in lab.client2.gre] == [(4242, 5)]
    assert lab.client1.gre == []


def test_late_gre_of_a_cleared_call_reaches_nobody_while_its_id_is_held_down(
    lab: Lab,
) -> None:
    lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    d2.link.clear(d2.call)
    lab.settle()
    dropped = lab.app.core.counters.gre_unknown_dropped
    lab.forget()
    lab.pac.send_gre(d2.server_call, 7)
    lab.settle()
    assert [g.call_id for g in lab.gre_packet_ins()] == [d2.server_call.peer_call_id]
    assert lab.client1.gre == lab.client2.gre == []
    assert lab.app.core.counters.gre_unknown_dropped == dropped + 1


def test_on_the_flow_path_the_switch_cannot_see_the_key(lab: Lab) -> None:
    """The documented limit, after the hold-down: a pair's one flow entry takes the
    server's GRE whatever its key."""
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    d2.link.clear(d2.call)
    lab.settle()
    lab.wait(HOLD_DOWN + 5)  # the next tick after the hold-down
    lab.forget()
    lab.pac.send_gre(d2.server_call, 7)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert [(g.call_id, g.sequence) for g in lab.client1.gre] == [
        (d2.server_call.peer_call_id, 7)
    ]
    assert lab.client2.gre == []
    assert d1.server_call.peer_call_id == 4242


# c. Teardown.

def end_by(lab: Lab, d: Dialled, how: str) -> None:
    if how == "call-clear":
        d.link.clear(d.call)
    elif how == "server-disconnect":
        lab.pac.disconnect(d.server_call)
    elif how == "stop-control-connection":
        d.link.stop()
    elif how == "fin":
        d.link.conn.close()
    elif how == "rst":
        d.link.conn.abort()
    else:
        d.server_call.link.conn.abort()
    lab.settle()


@pytest.mark.parametrize(
    "how", ["call-clear", "server-disconnect", "stop-control-connection", "fin", "rst",
            "server-rst"],
)
def test_a_call_that_ends_takes_its_entries_and_late_gre_is_dropped(lab: Lab, how: str) -> None:
    d = lab.dial(lab.client1, 4242)
    lab.pac.send_gre(d.server_call, 1)
    d.link.send_gre(d.call, 1)
    lab.settle()
    cookies = lab.gre_cookies()
    assert len(cookies) == 2

    end_by(lab, d, how)
    assert lab.switch.entries(ip_proto=47) == []
    removed = lab.removed(cookies)
    assert {m.cookie for m in removed} == cookies
    assert {m.reason for m in removed} == {ofp.OFPRR_DELETE}
    assert list(lab.app.core.calls()) == []
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) is None

    dropped = lab.app.core.counters.gre_unknown_dropped
    lab.forget()
    lab.pac.send_gre(d.server_call, 2)
    lab.settle()
    assert lab.app.core.counters.gre_unknown_dropped == dropped + 1
    assert len(lab.gre_packet_ins()) == 1
    assert lab.gre_out_of(IN1) == lab.gre_out_of(IN2) == []
    assert lab.client1.gre == lab.client2.gre == []


def test_after_fin_both_ways_the_control_connection_goes_too(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    d.link.conn.close()
    lab.settle()
    assert d.link.conn.fin_received and lab.pac.links[0].conn.fin_received
    assert list(lab.app.core.calls()) == []
    lab.wait(15)
    assert lab.app.core.connections() == []


def test_after_rst_the_control_connection_is_gone_and_the_server_was_reset(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    d.link.conn.abort()
    lab.settle()
    assert lab.pac.links[0].conn.reset
    assert lab.app.core.connections() == []


def test_two_calls_of_one_client_share_the_client_to_server_entry_until_the_last_ends(
    lab: Lab,
) -> None:
    first = lab.dial(lab.client1, 1)
    second_call = first.link.call(2)
    lab.settle()
    assert second_call.server_call_id is not None
    second = Dialled(first.link, second_call, lab.pac.call(second_call.server_call_id))
    assert (first.server_call.peer_call_id, second.server_call.peer_call_id) == (1, 2)
    [shared] = lab.switch.entries(ip_proto=47, in_port=IN1)
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"

    lab.forget()
    for d in (first, second):
        lab.pac.send_gre(d.server_call, 1)
        d.link.send_gre(d.call, 1)
    lab.settle()
    assert sorted(g.call_id for g in lab.gre_packet_ins()) == [1, 2]
    assert sorted(g.call_id for g in lab.client1.gre) == [1, 2]
    assert sorted(g.call_id for g in lab.server.gre) == sorted(
        [first.server_call.call_id, second.server_call.call_id]
    )
    assert shared.packet_count == 2

    first.link.clear(first.call)
    lab.settle()
    assert lab.switch.entries(ip_proto=47, in_port=IN1) == [shared]
    lab.wait(HOLD_DOWN + 5)  # the first call's ID leaves hold-down
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    lab.forget()
    lab.pac.send_gre(second.server_call, 2)
    second.link.send_gre(second.call, 2)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert [(g.call_id, g.sequence) for g in lab.client1.gre] == [(2, 2)]

    second.link.clear(second.call)
    lab.settle()
    assert lab.switch.entries(ip_proto=47) == []
    assert [m.reason for m in lab.removed({shared.cookie})] == [ofp.OFPRR_DELETE]


# d. Ageing.

def test_a_call_without_gre_loses_its_entries_not_its_call(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    cookies = lab.gre_cookies()
    lab.wait(GRE_IDLE - 2)
    assert lab.gre_cookies() == cookies
    assert len(list(lab.app.core.calls())) == 1

    lab.wait(GRE_IDLE)
    assert lab.switch.entries(ip_proto=47) == []
    removed = lab.removed(cookies)
    assert {m.cookie for m in removed} == cookies
    assert {m.reason for m in removed} == {ofp.OFPRR_IDLE_TIMEOUT}
    [call] = lab.app.core.calls()  # the call and its Call IDs stay with its connection
    assert call.data_idle and call.public_call_id == 4242

    dropped = lab.app.core.counters.gre_unknown_dropped
    lab.forget()
    lab.pac.send_gre(d.server_call, 1)
    d.link.send_gre(d.call, 1)
    lab.settle()
    assert lab.app.core.counters.gre_unknown_dropped == dropped
    assert [g.call_id for g in lab.client1.gre] == [4242]
    assert [g.call_id for g in lab.server.gre] == [d.server_call.call_id]
    assert lab.gre_cookies() == cookies  # the next packet put the entries back
    lab.forget()
    lab.pac.send_gre(d.server_call, 2)
    d.link.send_gre(d.call, 2)
    lab.settle()
    assert lab.switch.packet_ins == [] and len(lab.client1.gre) == len(lab.server.gre) == 1


@pytest.mark.parametrize("direction", ["both", "server to client", "client to server"])
def test_gre_on_flow_entries_keeps_the_call_alive_past_the_idle_timeout(
    lab: Lab, direction: str
) -> None:
    d = lab.dial(lab.client1, 4242)
    lab.forget()
    rounds = 4 * GRE_IDLE // 10
    for seq in range(1, rounds + 1):
        lab.wait(10)
        if direction != "client to server":
            lab.pac.send_gre(d.server_call, seq)
        if direction != "server to client":
            d.link.send_gre(d.call, seq)
        lab.settle()
    assert lab.gre_packet_ins() == []
    assert len(list(lab.app.core.calls())) == 1
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "flow"
    sent_down = direction != "client to server"
    sent_up = direction != "server to client"
    assert len(lab.client1.gre) == (rounds if sent_down else 0)
    assert len(lab.server.gre) == (rounds if sent_up else 0)

    lab.wait(GRE_IDLE + 2 * 5)
    assert [c.data_idle for c in lab.app.core.calls()] == [True]
    assert lab.switch.entries(ip_proto=47) == []


def test_gre_on_the_controller_keeps_its_call_alive_and_the_silent_call_ages(lab: Lab) -> None:
    d1 = lab.dial(lab.client1, 4242)
    d2 = lab.dial(lab.client2, 4242)
    lab.forget()
    rounds = 4 * GRE_IDLE // 10
    for seq in range(1, rounds + 1):
        lab.wait(10)
        lab.pac.send_gre(d2.server_call, seq)
        lab.settle()
    assert len(lab.gre_packet_ins()) == rounds
    assert [g.sequence for g in lab.client2.gre] == list(range(1, rounds + 1))
    idle = {c.conn.client_ip: c.data_idle for c in lab.app.core.calls()}
    assert idle == {CLIENT1: True, CLIENT2: False}
    assert lab.app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"

    dropped = lab.app.core.counters.gre_unknown_dropped
    lab.forget()
    lab.pac.send_gre(d1.server_call, 1)  # the silent call is still there
    lab.settle()
    assert lab.app.core.counters.gre_unknown_dropped == dropped
    assert [g.call_id for g in lab.client1.gre] == [4242]


@pytest.mark.parametrize("idle_side", ["client to server", "server to client"])
def test_an_entry_idle_on_the_switch_while_its_call_lives_comes_back_with_the_next_packet(
    lab: Lab, idle_side: str,
) -> None:
    d = lab.dial(lab.client1, 4242)
    upstream = idle_side == "client to server"
    in_port = IN1 if upstream else OUT
    [entry] = lab.switch.entries(ip_proto=47, in_port=in_port)

    def send(sender_is_client: bool, seq: int) -> None:
        if sender_is_client:
            d.link.send_gre(d.call, seq)
        else:
            lab.pac.send_gre(d.server_call, seq)

    for seq in range(1, 5):
        lab.wait(10)
        send(not upstream, seq)
        lab.settle()
    assert lab.switch.entries(ip_proto=47, in_port=in_port) == []
    [idle] = lab.removed({entry.cookie})
    assert idle.reason == ofp.OFPRR_IDLE_TIMEOUT
    assert len(list(lab.app.core.calls())) == 1

    lab.forget()
    send(upstream, 1)
    lab.settle()
    send(upstream, 2)
    lab.settle()
    assert len(lab.gre_packet_ins()) == 1
    if upstream:
        expected = GreFrame(GW_MAC, SERVER_MAC, PUBLIC, SERVER, d.server_call.call_id, 63)
        assert lab.gre_out_of(OUT) == [expected] * 2
    else:
        expected = GreFrame(GW_MAC, CLIENT1_MAC, SERVER, CLIENT1, 4242, 63)
        assert lab.gre_out_of(IN1) == [expected] * 2
    [again] = lab.switch.entries(ip_proto=47, in_port=in_port)
    assert (again.cookie, again.packet_count) == (entry.cookie, 1)


@pytest.mark.parametrize("echo", [False, True])
def test_an_idle_control_connection_ends_its_calls_unless_echo_keeps_it(
    monkeypatch: pytest.MonkeyPatch, echo: bool,
) -> None:
    lab = build_lab(monkeypatch, tcp_idle=60.0, gre_idle=300.0)
    d = lab.dial(lab.client1, 4242)
    cookies = lab.gre_cookies()
    for seq in range(1, 13):
        lab.wait(10)
        lab.pac.send_gre(d.server_call, seq)
        d.link.send_gre(d.call, seq)
        if echo and seq % 3 == 0:
            d.link.echo(seq)
        lab.settle()
    if echo:
        assert len(list(lab.app.core.calls())) == 1
        assert lab.gre_cookies() == cookies
        assert [type(m).__name__ for m in d.link.messages[-4:]] == ["EchoReply"] * 4
        assert lab.gre_packet_ins() == []
    else:
        assert list(lab.app.core.calls()) == []
        assert lab.app.core.connections() == []
        assert {m.reason for m in lab.removed(cookies)} == {ofp.OFPRR_DELETE}
        assert lab.app.core.counters.gre_unknown_dropped > 0
    check_clean(lab)


# NAPT.

def test_a_udp_session_gets_two_entries_then_passes_by_them_then_idles_out(lab: Lab) -> None:
    lab.client1.send_udp(SERVER, 5000, 53, b"query 1")
    lab.settle()
    assert lab.packet_ins_of(UDP) == 1
    [first] = lab.server.datagrams
    assert (first.src, first.dst_port, first.payload) == (PUBLIC, 53, b"query 1")
    public_port = first.src_port
    entries = lab.switch.entries(ip_proto=17)
    assert len(entries) == 2 and len({e.cookie for e in entries}) == 1
    cookie = entries[0].cookie

    lab.forget()
    lab.server.send_udp(PUBLIC, 53, public_port, b"answer 1")
    lab.client1.send_udp(SERVER, 5000, 53, b"query 2")
    lab.server.send_udp(PUBLIC, 53, public_port, b"answer 2")
    lab.settle()
    assert lab.switch.packet_ins == []
    assert [(d.src, d.src_port, d.dst_port, d.payload) for d in lab.client1.datagrams] == [
        (SERVER, 53, 5000, b"answer 1"), (SERVER, 53, 5000, b"answer 2")
    ]
    assert [(d.src, d.src_port, d.payload) for d in lab.server.datagrams] == [
        (PUBLIC, public_port, b"query 2")
    ]
    assert sorted(e.packet_count for e in entries) == [1, 2]

    lab.wait(UDP_IDLE + 15)
    assert lab.switch.entries(ip_proto=17) == []
    removed = lab.removed({cookie})
    assert len(removed) == 2
    assert {m.reason for m in removed} == {ofp.OFPRR_IDLE_TIMEOUT}
    assert sorted(m.packet_count for m in removed) == [1, 2]

    drops = lab.app.core.counters.no_session_drops
    lab.forget()
    lab.server.send_udp(PUBLIC, 53, public_port, b"late")
    lab.settle()
    assert lab.client1.datagrams == []
    assert lab.app.core.counters.no_session_drops == drops + 1


def test_one_way_udp_on_its_entry_keeps_the_session_past_the_idle_timeout(lab: Lab) -> None:
    lab.client1.send_udp(SERVER, 5000, 53, b"query")
    lab.settle()
    public_port = lab.server.datagrams[0].src_port
    cookie = lab.switch.entries(ip_proto=17)[0].cookie
    lab.forget()
    rounds = 4 * UDP_IDLE // 10
    for _ in range(rounds):
        lab.wait(10)
        lab.server.send_udp(PUBLIC, 53, public_port, b"stream")
    lab.settle()
    assert lab.switch.packet_ins == []
    assert len(lab.client1.datagrams) == rounds
    [inbound] = lab.switch.entries(ip_proto=17)
    assert (inbound.cookie, inbound.match["in_port"]) == (cookie, OUT)
    [idle] = lab.removed({cookie})
    assert (idle.match["in_port"], idle.reason) == (IN1, ofp.OFPRR_IDLE_TIMEOUT)

    lab.forget()
    lab.client1.send_udp(SERVER, 5000, 53, b"again")
    lab.settle()
    assert lab.packet_ins_of(UDP) == 1
    assert [(d.src_port, d.payload) for d in lab.server.datagrams] == [(public_port, b"again")]
    assert {e.cookie for e in lab.switch.entries(ip_proto=17)} == {cookie}
    assert len(lab.switch.entries(ip_proto=17)) == 2


def test_a_session_entry_idling_out_does_not_refresh_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = build_lab(monkeypatch, udp_idle=60.0)
    lab.client1.send_udp(SERVER, 5000, 53, b"query")
    lab.settle()
    public_port = lab.server.datagrams[0].src_port
    for _ in range(3):
        lab.wait(2)
        lab.server.send_udp(PUBLIC, 53, public_port, b"answer")
        lab.settle()
    lab.wait(60 + 2 * 5 + 9)
    assert lab.switch.entries(ip_proto=17) == []
    drops = lab.app.core.counters.no_session_drops
    lab.forget()
    lab.server.send_udp(PUBLIC, 53, public_port, b"late")
    lab.settle()
    assert lab.client1.datagrams == []
    assert lab.app.core.counters.no_session_drops == drops + 1


def test_a_tcp_session_gets_its_entries_on_the_syn_and_data_passes_by_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = build_lab(monkeypatch, tcp_idle=40.0)
    accepted: list[TcpConnection] = []
    lab.server.listen(8080, accepted.append)
    conn = lab.client1.connect(SERVER, 8080, 33000, lambda _c, _d: None)
    lab.settle()
    assert conn.state == "established"
    [server_side] = accepted
    assert server_side.remote_ip == PUBLIC
    assert lab.packet_ins_of(TCP) == 1
    entries = lab.switch.entries(ip_proto=6, tcp_dst=server_side.remote_port)
    entries += lab.switch.entries(ip_proto=6, tcp_src=33000)
    assert len(entries) == 2 and len({e.cookie for e in entries}) == 1

    lab.forget()
    conn.send(b"hello")
    lab.settle()
    server_side.send(b"world")
    lab.settle()
    assert lab.switch.packet_ins == []
    assert bytes(server_side.received) == b"hello" and bytes(conn.received) == b"world"

    lab.wait(40 + 15)
    assert lab.switch.entries(ip_proto=6, tcp_src=33000) == []
    assert len(lab.removed({entries[0].cookie})) == 2
    check_clean(lab)


# ICMP (RFC 5508) and Time Exceeded.

INSIDE_GATEWAY = IPv4Address("192.168.1.254")


def probe(ttl: int) -> Any:
    return IP(src=str(CLIENT1), dst=str(SERVER), ttl=ttl) / UDP(sport=5000, dport=33434) / Raw(
        b"probe")


def test_a_spent_ttl_is_answered_by_the_gateway_on_the_controller_and_the_flow_path(
    lab: Lab,
) -> None:
    lab.client1.send_ip(probe(1))
    lab.settle()
    [answer] = lab.client1.icmp
    assert (IPv4Address(answer.src), answer[ICMP].type, answer[ICMP].code) == (
        INSIDE_GATEWAY, 11, 0)
    assert bytes(answer[ICMP].payload) == bytes(IP(bytes(probe(1))))
    assert lab.server.datagrams == [] and len(lab.app.core.nat) == 0

    lab.client1.send_ip(probe(64))
    lab.settle()
    assert len(lab.server.datagrams) == 1
    lab.forget()
    lab.client1.icmp.clear()
    lab.client1.send_ip(probe(1))
    lab.settle()
    assert lab.server.datagrams == []
    [answer] = lab.client1.icmp
    assert IPv4Address(answer[ICMP].payload.src) == CLIENT1  # quoted before any rewrite
    assert lab.app.counters.ttl_expired_on_flow == 1
    assert lab.app.core.counters.time_exceeded_sent == 2


def test_the_servers_port_unreachable_reaches_the_client_translated_back(lab: Lab) -> None:
    lab.client1.send_udp(SERVER, 5000, 53, b"query")
    lab.settle()
    [datagram] = lab.server.datagrams
    as_received = IP(src=str(PUBLIC), dst=str(SERVER), ttl=63) / UDP(
        sport=datagram.src_port, dport=53) / Raw(b"query")
    lab.server.send_ip(IP(src=str(SERVER), dst=str(PUBLIC)) / ICMP(type=3, code=3)
                       / Raw(bytes(as_received)))
    lab.settle()
    [error] = lab.client1.icmp
    assert (error[ICMP].type, error[ICMP].code, IPv4Address(error.src)) == (3, 3, SERVER)
    quoted = IP(bytes(error[ICMP].payload))
    assert (quoted.src, quoted[UDP].sport, quoted[UDP].dport) == (str(CLIENT1), 5000, 53)
    assert lab.app.core.counters.icmp_errors_translated == 1


def test_an_error_about_nothing_of_the_gateways_reaches_nobody(lab: Lab) -> None:
    stray = IP(src=str(PUBLIC), dst=str(SERVER)) / UDP(sport=1, dport=53)
    lab.server.send_ip(IP(src=str(SERVER), dst=str(PUBLIC)) / ICMP(type=3, code=3)
                       / Raw(bytes(stray)))
    lab.settle()
    assert lab.client1.icmp == [] and lab.client2.icmp == []
    assert lab.app.core.counters.icmp_errors_unmatched == 1
