"""``ryu_apps.wire`` encodes exactly what Ryu's own message objects serialize to, and
decodes PACKET_INs as Ryu's parser does."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alg.errors import WireError
from ryu_apps import packet_in, wire
from ryu_apps.framework import ofp_event, ofproto_parser
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.fake_switch import FakeDatapath

GW_MAC = "02:00:5e:00:01:fe"


def ryu_bytes(msg: Any, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def one(message: wire.Message) -> bytes:
    return wire.encode([message], wire.Xids())


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_a_session_entry_is_byte_for_byte_ryus(l4: str) -> None:
    dp = FakeDatapath()
    fields = {"in_port": 1, "eth_type": 0x800, "ipv4_src": "192.168.1.1",
              "ipv4_dst": "203.0.113.1", "ip_proto": 6 if l4 == "tcp" else 17,
              f"{l4}_src": 40000, f"{l4}_dst": 80}
    ours = wire.flow_mod(
        cookie=0x5002000000000007, priority=500, idle_timeout=1200,
        flags=wire.OFPFF_SEND_FLOW_REM, match_fields=fields,
        instructions=[wire.apply_actions([
            wire.set_field("ipv4_src", "203.0.113.2"), wire.set_field(f"{l4}_src", 1024),
            wire.dec_nw_ttl(), wire.set_field("eth_src", GW_MAC),
            wire.set_field("eth_dst", "0a:00:00:00:00:64"), wire.output(100)])],
    )
    theirs = parser.OFPFlowMod(
        datapath=dp, cookie=0x5002000000000007, priority=500, idle_timeout=1200,
        flags=ofp.OFPFF_SEND_FLOW_REM, match=parser.OFPMatch(**fields),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            parser.OFPActionSetField(ipv4_src="203.0.113.2"),
            parser.OFPActionSetField(**{f"{l4}_src": 1024}), parser.OFPActionDecNwTtl(),
            parser.OFPActionSetField(eth_src=GW_MAC),
            parser.OFPActionSetField(eth_dst="0a:00:00:00:00:64"),
            parser.OFPActionOutput(100)])],
    )
    assert one(ours) == ryu_bytes(theirs, 1)


def test_a_metered_punt_a_delete_a_packet_out_and_a_barrier_are_ryus() -> None:
    dp = FakeDatapath()
    punt = wire.flow_mod(
        cookie=0x5001000000000000, priority=100,
        match_fields={"in_port": 100, "eth_type": 0x800, "ipv4_dst": "203.0.113.2"},
        instructions=[wire.meter(3), wire.apply_actions([wire.output(wire.OFPP_CONTROLLER)])],
    )
    assert one(punt) == ryu_bytes(parser.OFPFlowMod(
        datapath=dp, cookie=0x5001000000000000, priority=100,
        match=parser.OFPMatch(in_port=100, eth_type=0x800, ipv4_dst="203.0.113.2"),
        instructions=[parser.OFPInstructionMeter(3, ofp.OFPIT_METER),
                      parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                          parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])],
    ), 1)
    delete = wire.flow_mod(cookie=7, cookie_mask=2**64 - 1, table_id=wire.OFPTT_ALL,
                           command=wire.OFPFC_DELETE, out_port=wire.OFPP_ANY,
                           out_group=wire.OFPG_ANY)
    assert one(delete) == ryu_bytes(parser.OFPFlowMod(
        datapath=dp, cookie=7, cookie_mask=2**64 - 1, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch()), 1)
    frame = bytes(range(60))
    assert one(wire.packet_out(3, frame)) == ryu_bytes(parser.OFPPacketOut(
        datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
        actions=[parser.OFPActionOutput(3)], data=frame), 1)
    assert one(wire.barrier()) == ryu_bytes(parser.OFPBarrierRequest(dp), 1)


def test_messages_share_one_buffer_each_with_its_own_transaction_id() -> None:
    xids = wire.Xids()
    buf = wire.encode([wire.barrier(), wire.barrier()], xids)
    assert buf[4:8] == (1).to_bytes(4, "big") and buf[12:16] == (2).to_bytes(4, "big")
    sent: list[bytes] = []
    wire.send(type("Dp", (), {"send": lambda _self, b: sent.append(b)})(), [], xids)
    assert sent == []


def packet_in_bytes(data: bytes, match: Any, total_len: int | None = None, xid: int = 7,
                    cookie: int = 0x5005000000000003, reason: int = 1) -> bytes:
    """A PACKET_IN as a switch sends it (Ryu can parse these but not build them)."""
    body = bytearray(struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER,
                                 len(data) if total_len is None else total_len, reason, 0,
                                 cookie))
    match.serialize(body, len(body))
    body += b"\0\0" + data
    return struct.pack("!BBHI", 4, ofp.OFPT_PACKET_IN, 8 + len(body), xid) + bytes(body)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), in_port=st.integers(1, 0xFFFFFF00),
       extra=st.sampled_from([{}, {"eth_type": 0x800},
                              {"tunnel_id": 5, "eth_dst": "02:00:00:00:00:09"}]),
       padding=st.integers(0, 7))
def test_packet_in_decoding_agrees_with_ryus_parser(
        data: bytes, in_port: int, extra: dict[str, Any], padding: int) -> None:
    buf = packet_in_bytes(data + b"\0" * padding, parser.OFPMatch(in_port=in_port, **extra),
                          total_len=len(data))
    ryu = packet_in._RYU_PACKET_IN_PARSER(None, 4, ofp.OFPT_PACKET_IN, len(buf), 7, buf)
    ours = packet_in.parse_packet_in(None, 4, ofp.OFPT_PACKET_IN, len(buf), 7, buf)
    assert type(ours) is type(ryu)
    for name in ("buffer_id", "total_len", "reason", "table_id", "cookie", "xid", "msg_len"):
        assert getattr(ours, name) == getattr(ryu, name), name
    assert bytes(ours.data) == bytes(ryu.data) == data
    assert ours.match["in_port"] == ryu.match["in_port"] == in_port
    for key in extra:
        assert ours.match[key] == ryu.match[key]
    assert ours.match.length == ryu.match.length
    assert wire.decode_packet_in(buf).in_port == in_port


def test_a_packet_in_without_in_port_asks_ryus_parser_for_its_fields() -> None:
    buf = packet_in_bytes(b"frame", parser.OFPMatch(eth_type=0x800))
    msg = packet_in.parse_packet_in(None, 4, ofp.OFPT_PACKET_IN, len(buf), 7, buf)
    assert wire.decode_packet_in(buf).in_port is None
    assert msg.match["eth_type"] == 0x800
    with pytest.raises(KeyError):
        msg.match["in_port"]


@pytest.mark.parametrize("cut", [8, 23, 26, 30, 33])
def test_truncated_or_inconsistent_packet_ins_are_refused_and_left_to_ryu(cut: int) -> None:
    whole = packet_in_bytes(b"x" * 20, parser.OFPMatch(in_port=3, eth_type=0x800))
    buf = whole[:cut]
    with pytest.raises(WireError):
        wire.decode_packet_in(buf)
    calls: list[bytes] = []

    def ryus(*args: Any) -> str:
        calls.append(args[-1])
        return "ryu's answer"

    original = packet_in._RYU_PACKET_IN_PARSER
    packet_in._RYU_PACKET_IN_PARSER = ryus
    try:
        assert packet_in.parse_packet_in(None, 4, 10, len(buf), 7, buf) == "ryu's answer"
    finally:
        packet_in._RYU_PACKET_IN_PARSER = original
    assert calls == [buf]


def test_a_match_longer_than_the_message_is_refused() -> None:
    buf = bytearray(packet_in_bytes(b"data", parser.OFPMatch(in_port=3)))
    struct.pack_into("!H", buf, 26, 200)
    with pytest.raises(WireError):
        wire.decode_packet_in(bytes(buf))
    struct.pack_into("!HH", buf, 24, 0, 16)  # OFPMT_STANDARD, not OXM
    with pytest.raises(WireError):
        wire.decode_packet_in(bytes(buf))


def test_the_app_makes_ryu_use_the_fast_packet_in_parser() -> None:
    buf = packet_in_bytes(b"frame", parser.OFPMatch(in_port=9))
    packet_in.use_fast_packet_in()
    msg = ofproto_parser.msg(None, 4, ofp.OFPT_PACKET_IN, len(buf), 7, buf)
    assert isinstance(msg.match, packet_in._LazyMatch)
    assert msg.match["in_port"] == 9 and bytes(msg.data) == b"frame"
    assert type(ofp_event.ofp_msg_to_ev(msg)) is ofp_event.EventOFPPacketIn


def test_conntrack_nat_actions_and_goto_are_byte_for_byte_ryus() -> None:
    dp = FakeDatapath()
    public = IPv4Address("203.0.113.2")
    ours = wire.flow_mod(
        cookie=0x5001000000000000, priority=400, table_id=0,
        match_fields={"in_port": 1, "eth_type": 0x800},
        instructions=[wire.apply_actions([
            wire.ct(commit=True, zone=7, table=1, actions=[
                wire.nat(addresses=(public, public), ports=(20000, 30000))]),
            wire.ct(zone=7, table=2, actions=[wire.nat()]),
            wire.ct(zone=3, actions=[wire.nat(src=False, addresses=(public, public))]),
            wire.output(3)]), wire.goto_table(4)],
    )
    theirs = parser.OFPFlowMod(
        datapath=dp, cookie=0x5001000000000000, priority=400, table_id=0,
        match=parser.OFPMatch(in_port=1, eth_type=0x800),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            parser.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=7, recirc_table=1, alg=0,
                              actions=[parser.NXActionNAT(
                                  flags=1, range_ipv4_min=str(public),
                                  range_ipv4_max=str(public), range_proto_min=20000,
                                  range_proto_max=30000)]),
            parser.NXActionCT(flags=0, zone_src="", zone_ofs_nbits=7, recirc_table=2, alg=0,
                              actions=[parser.NXActionNAT(flags=0)]),
            parser.NXActionCT(flags=0, zone_src="", zone_ofs_nbits=3, recirc_table=0xFF,
                              alg=0, actions=[parser.NXActionNAT(
                                  flags=2, range_ipv4_min=str(public),
                                  range_ipv4_max=str(public))]),
            parser.OFPActionOutput(3)]), parser.OFPInstructionGotoTable(4)],
    )
    assert one(ours) == ryu_bytes(theirs, 1)


@pytest.mark.parametrize("fields", [
    {"eth_type": 0x800, "ct_state": (wire.CT_TRACKED | wire.CT_NEW,
                                     wire.CT_TRACKED | wire.CT_NEW | wire.CT_INVALID)},
    {"in_port": 5, "eth_type": 0x800, "ct_state": wire.CT_TRACKED | wire.CT_ESTABLISHED,
     "ct_zone": 9, "ct_mark": (3, 0xF)},
    {"eth_type": 0x800, "ip_frag": (wire.IP_FRAG_ANY, wire.IP_FRAG_ANY), "ct_zone": 1},
])
def test_conntrack_fields_match_what_ryu_parses(fields: dict[str, Any]) -> None:
    encoded = wire.match(fields)
    ours = parser.OFPMatch.parser(encoded, 0)
    assert dict(ours.items()) == dict(parser.OFPMatch(**fields).items())
    nx = [n for n in fields if n.startswith(("ct_", "ip_frag"))]
    basic = [n for n in fields if n not in nx]
    assert [name for name, _ in ours.items()] == basic + nx  # prerequisites first
