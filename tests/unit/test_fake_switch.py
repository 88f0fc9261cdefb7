"""The closed-loop fake switch itself: what it does to frames and what it tells the app."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from ryu_apps.framework import MAIN_DISPATCHER, ofp_event, set_ev_cls
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.fake_switch import FakeSwitch, LoopError, parse_fields

IN, OUT = 1, 2
MAC_A, MAC_B = "0a:00:00:00:00:01", "0a:00:00:00:00:02"


class Recorder:
    """A minimal Ryu-style app: records the events it gets, may send a packet-out back."""

    def __init__(self, bounce_to: int | None = None) -> None:
        self.events: list[Any] = []
        self.bounce_to = bounce_to

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def packet_in(self, ev: Any) -> None:
        self.events.append(ev.msg)
        if self.bounce_to is not None:
            dp = ev.msg.datapath
            dp.send_msg(parser.OFPPacketOut(
                datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ev.msg.match["in_port"],
                actions=[parser.OFPActionOutput(self.bounce_to)], data=ev.msg.data,
            ))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def flow_removed(self, ev: Any) -> None:
        self.events.append(ev.msg)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def flow_stats(self, ev: Any) -> None:
        self.events.append(ev.msg)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def switch_with(app: Recorder | None = None) -> tuple[FakeSwitch, Clock]:
    clock = Clock()
    switch = FakeSwitch({"a": IN, "b": OUT}, clock)
    if app is not None:
        switch.connect(app)
    return switch, clock


def add(switch: FakeSwitch, priority: int, actions: list[Any], cookie: int = 0,
        idle: int = 0, notify: bool = False, **match: Any) -> None:
    switch.send_msg(parser.OFPFlowMod(
        datapath=switch, cookie=cookie, command=ofp.OFPFC_ADD, idle_timeout=idle,
        priority=priority, flags=ofp.OFPFF_SEND_FLOW_REM if notify else 0,
        match=parser.OFPMatch(**match),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
    ))


def frame(l4: Packet, ttl: int = 64) -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.1", dst="10.0.0.2", ttl=ttl) / l4)


def checksums_valid(data: bytes) -> bool:
    """True when Scapy, recomputing every checksum, gets the bytes as they are."""
    packet = Ether(data)
    del packet[IP].chksum
    for layer in (TCP, UDP):
        if layer in packet and not (layer is UDP and packet[UDP].chksum == 0):
            del packet[layer].chksum
    return bytes(packet) == data


NAT = [
    parser.OFPActionSetField(ipv4_src="192.0.2.9"),
    parser.OFPActionSetField(eth_dst="0A:00:00:00:00:09"),
    parser.OFPActionDecNwTtl(),
]


@pytest.mark.parametrize("l4", [TCP(sport=1000, dport=80, flags="S") / b"x",
                                UDP(sport=1000, dport=53) / b"query",
                                UDP(sport=1000, dport=53, chksum=0) / b"query"])
def test_set_field_and_ttl_rewrite_the_bytes_and_keep_the_checksums_valid(l4: Packet) -> None:
    switch, _ = switch_with()
    name = "tcp" if TCP in l4 else "udp"
    proto = 6 if TCP in l4 else 17
    actions = [*NAT, parser.OFPActionSetField(**{f"{name}_src": 4321}),
               parser.OFPActionOutput(OUT)]
    add(switch, 10, actions, in_port=IN, eth_type=0x0800, ip_proto=proto)
    switch.inject(IN, frame(l4))
    switch.run()
    [out] = switch.delivered[OUT]
    fields = parse_fields(out, OUT)
    assert (fields["ipv4_src"], fields["eth_dst"], fields["ttl"]) == ("192.0.2.9",
                                                                      "0a:00:00:00:00:09", 63)
    assert fields[f"{name}_src"] == 4321
    assert checksums_valid(out)
    if UDP in l4 and l4[UDP].chksum == 0:
        assert Ether(out)[UDP].chksum == 0


def test_a_ttl_that_would_reach_zero_drops_the_packet() -> None:
    switch, _ = switch_with()
    add(switch, 10, [*NAT, parser.OFPActionOutput(OUT)], eth_type=0x0800)
    switch.inject(IN, frame(UDP(), ttl=1))
    switch.run()
    assert switch.delivered[OUT] == [] and switch.ttl_drops == 1


def test_the_highest_priority_wins_and_counts_the_packet() -> None:
    switch, clock = switch_with()
    add(switch, 10, [parser.OFPActionOutput(OUT)], cookie=1, eth_type=0x0800)
    add(switch, 20, [], cookie=2, eth_type=0x0800, ip_proto=17)
    clock.now = 7.0
    switch.inject(IN, frame(UDP()))
    switch.inject(IN, frame(TCP()))
    switch.run()
    low, high = switch.table
    assert (high.packet_count, high.last_used) == (1, 7.0)
    assert low.packet_count == 1
    assert len(switch.delivered[OUT]) == 1 and TCP in Ether(switch.delivered[OUT][0])


def test_output_to_the_ingress_port_is_not_delivered_and_unknown_ports_are_errors() -> None:
    switch, _ = switch_with()
    add(switch, 10, [parser.OFPActionOutput(IN), parser.OFPActionOutput(99)])
    switch.inject(IN, frame(UDP()))
    switch.run()
    assert switch.delivered[IN] == []
    assert switch.errors == ["output to port 99, which the switch does not have"]


def test_a_flow_mod_without_its_prerequisites_is_refused() -> None:
    switch, _ = switch_with()
    add(switch, 10, [parser.OFPActionOutput(OUT)], ip_proto=17)
    add(switch, 10, [parser.OFPActionSetField(tcp_src=1)], eth_type=0x0800, ip_proto=17)
    assert switch.table == []
    assert len(switch.errors) == 2


def test_an_add_replacing_an_entry_keeps_its_counters_and_idle_clock() -> None:
    switch, clock = switch_with()
    add(switch, 10, [parser.OFPActionOutput(OUT)], cookie=1, idle=30, eth_type=0x0800)
    switch.inject(IN, frame(UDP()))
    switch.run()
    clock.now = 20.0
    add(switch, 10, [parser.OFPActionOutput(ofp.OFPP_CONTROLLER)], cookie=1, idle=30,
        eth_type=0x0800)
    [entry] = switch.table
    assert (entry.packet_count, entry.last_used) == (1, 0.0)
    assert isinstance(entry.actions[0], parser.OFPActionOutput)
    assert entry.actions[0].port == ofp.OFPP_CONTROLLER


def test_idle_entries_expire_and_only_flagged_ones_are_reported() -> None:
    app = Recorder()
    switch, clock = switch_with(app)
    add(switch, 10, [], cookie=1, idle=30, notify=True, in_port=IN)
    add(switch, 10, [], cookie=2, idle=30, in_port=OUT)
    clock.now = 20.0
    switch.inject(IN, frame(UDP()))
    switch.run()
    switch.advance(30.0)
    switch.run()
    assert [e.cookie for e in switch.table] == [1]
    assert app.events == []
    switch.advance(50.0)
    switch.run()
    assert switch.table == []
    [removed] = app.events
    assert (removed.cookie, removed.reason, removed.packet_count) == (
        1, ofp.OFPRR_IDLE_TIMEOUT, 1
    )


def test_delete_by_cookie_reports_flagged_entries_with_reason_delete() -> None:
    app = Recorder()
    switch, _ = switch_with(app)
    add(switch, 10, [], cookie=0x5002, notify=True, in_port=IN)
    add(switch, 10, [], cookie=0x5003, notify=True, in_port=OUT)
    switch.send_msg(parser.OFPFlowMod(
        datapath=switch, cookie=0x5002, cookie_mask=0xFFFF, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    ))
    switch.run()
    assert [e.cookie for e in switch.table] == [0x5003]
    assert [(m.cookie, m.reason) for m in app.events] == [(0x5002, ofp.OFPRR_DELETE)]


def test_flow_statistics_are_filtered_by_cookie_and_mask() -> None:
    app = Recorder()
    switch, _ = switch_with(app)
    add(switch, 10, [parser.OFPActionOutput(OUT)], cookie=0x5001, in_port=IN)
    add(switch, 10, [], cookie=0x4001, in_port=OUT)
    switch.inject(IN, frame(UDP()))
    switch.run()
    switch.send_msg(parser.OFPFlowStatsRequest(switch, cookie=0x5000, cookie_mask=0xFF00))
    switch.run()
    [reply] = app.events
    assert reply.flags == 0
    assert [(s.cookie, s.packet_count, s.byte_count) for s in reply.body] == [
        (0x5001, 1, len(frame(UDP())))
    ]


def test_packet_in_and_packet_out_close_the_loop() -> None:
    app = Recorder(bounce_to=OUT)
    switch, _ = switch_with(app)
    add(switch, 10, [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)],
        cookie=5)
    sent = frame(UDP())
    switch.inject(IN, sent)
    switch.run()
    [packet_in] = app.events
    assert (packet_in.match["in_port"], packet_in.cookie, bytes(packet_in.data)) == (
        IN, 5, sent
    )
    assert switch.packet_ins == [(IN, sent)]
    assert switch.delivered[OUT] == [sent] and switch.packet_outs == 1


def test_a_packet_out_back_into_the_table_that_punts_it_again_is_stopped() -> None:
    app = Recorder(bounce_to=ofp.OFPP_TABLE)
    switch, _ = switch_with(app)
    add(switch, 10, [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])
    switch.inject(IN, frame(UDP()))
    with pytest.raises(LoopError):
        switch.run()
    assert len(app.events) <= switch.max_hops
