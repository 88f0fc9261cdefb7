"""The bare Ryu peer: every packet reaches the controller, which sends it straight back
out (flooded, as a hub does). The limit of any controller path on this switch: no
decoding, no state, one packet-in and one packet-out per packet.

Run: ``ryu-manager --ofp-tcp-listen-port PORT bench/bare_ryu.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ryu_apps.framework import (
    CONFIG_DISPATCHER,
    MAIN_DISPATCHER,
    App,
    ofp_event,
    ofproto_v1_3,
    set_ev_cls,
)


class BareRyu(App):  # type: ignore[misc]
    """Table-miss to the controller; each packet-in flooded back out."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[untyped-decorator]
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        dp.send_msg(parser.OFPFlowMod(
            datapath=dp, priority=0, match=parser.OFPMatch(),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
        ))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPPacketOut(
            datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=msg.match["in_port"],
            actions=[parser.OFPActionOutput(ofp.OFPP_FLOOD)], data=msg.data,
        ))
