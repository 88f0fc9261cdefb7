"""``ryu_apps.wire`` encodes exactly what Ryu's own message objects serialize to."""

from __future__ import annotations

from typing import Any

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_apps import wire
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
