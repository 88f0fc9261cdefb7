"""OpenFlow 1.3 messages built from the core's decisions: pure functions, no sending.

Every entry carries a cookie that names what it belongs to (``ryu_apps.switch``).

The table (table 0 only):

===========  =====================================================================
priority     entries
===========  =====================================================================
1000         ARP -> controller
900          TCP/1723 from inside ports and from the outside to a public address ->
             controller (ALG on)
500          NAT sessions (both directions), server-map GRE entries (those for
             packets from inside match the inside host's port); a (server, public
             address) pair on the controller path has a GRE_INBOUND entry whose action is
             output:CONTROLLER, so its GRE reaches the controller here
100          other IPv4 from inside ports, and from outside to a public address ->
             controller (first packets, ICMP echo, GRE that matches no server-map)
0            everything else: dropped
===========  =====================================================================

Every entry that outputs to the controller first passes the meter of its class
(``ryu_apps.switch``: ARP, each inside port, control segments from the outside, other
traffic from the outside, controller-path GRE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from typing import Any, assert_never

from alg.codec import PPTP_PORT
from alg.config import AlgConfig
from alg.events import (
    Decision,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    RemoveEntries,
    SessionEntries,
)
from alg.nat import Proto
from alg.neighbours import L2, Side
from ryu_apps.packets import ETH_TYPE_ARP, ETH_TYPE_IPV4
from ryu_apps.switch import (
    COOKIE_TAG,
    COOKIE_TAG_MASK,
    METER_ARP,
    METER_GRE,
    METER_INSIDE_PORT,
    METER_OUTSIDE_CONTROL,
    METER_OUTSIDE_NEW,
    PRIORITY_ARP,
    PRIORITY_CONTROL,
    PRIORITY_DROP,
    PRIORITY_PUNT,
    PRIORITY_SESSION,
    cookie,
)


def _flow(
    dp: Any, priority: int, match: Any, actions: Sequence[Any], kind: EntryKind,
    entry_id: int = 0, idle_timeout: float = 0, notify: bool = False,
    meter: int | None = None,
) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))]
    if meter is not None:
        instructions.insert(0, parser.OFPInstructionMeter(meter, ofp.OFPIT_METER))
    return parser.OFPFlowMod(
        datapath=dp,
        cookie=cookie(kind, entry_id),
        command=ofp.OFPFC_ADD,
        idle_timeout=min(int(idle_timeout), 65535),
        priority=priority,
        flags=ofp.OFPFF_SEND_FLOW_REM if notify else 0,
        match=match,
        instructions=instructions if actions else [],
    )


def _to_controller(dp: Any) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)


def _route(dp: Any, gateway_mac: str, hop: L2) -> list[Any]:
    parser = dp.ofproto_parser
    return [
        parser.OFPActionDecNwTtl(),
        parser.OFPActionSetField(eth_src=gateway_mac),
        parser.OFPActionSetField(eth_dst=hop.mac),
        parser.OFPActionOutput(hop.port),
    ]


def meters(dp: Any, rates: AlgConfig, inside_ports: Iterable[int]) -> list[Any]:
    """The meters of the punt classes (``ryu_apps.switch``), in packets per second.

    Each is sent as ADD then MODIFY: after a controller restart the ADD fails with
    "meter exists" (harmless) and the MODIFY sets the rate; deleting a meter would delete
    the entries that use it.
    """
    ofp, parser = dp.ofproto, dp.ofproto_parser
    classes = [
        (METER_ARP, rates.punt_rate_arp),
        (METER_OUTSIDE_CONTROL, rates.punt_rate_outside_control),
        (METER_OUTSIDE_NEW, rates.punt_rate_outside_new),
        (METER_GRE, rates.punt_rate_gre),
        *((METER_INSIDE_PORT + port, rates.punt_rate_inside_port) for port in inside_ports),
    ]
    mods = []
    for meter_id, rate in classes:
        band = parser.OFPMeterBandDrop(rate=rate, burst_size=max(1, rate // 2))
        for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY):
            mods.append(parser.OFPMeterMod(
                dp, command=command, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                meter_id=meter_id, bands=[band],
            ))
    return mods


def pipeline(
    dp: Any,
    inside_ports: Iterable[int],
    outside_port: int,
    public_ips: Iterable[IPv4Address],
    alg_enabled: bool,
) -> list[Any]:
    """The static entries: ARP and punts to the controller, each through the meter of its
    class (see :func:`meters`, which must be on the switch first), and drop for the rest."""
    parser = dp.ofproto_parser
    punt = [_to_controller(dp)]
    pipe = EntryKind.PIPELINE
    mods = [
        _flow(dp, PRIORITY_ARP, parser.OFPMatch(eth_type=ETH_TYPE_ARP), punt, pipe,
              meter=METER_ARP),
        _flow(dp, PRIORITY_DROP, parser.OFPMatch(), [], pipe),
    ]
    for port in inside_ports:
        meter = METER_INSIDE_PORT + port
        mods.append(_flow(
            dp, PRIORITY_PUNT, parser.OFPMatch(in_port=port, eth_type=ETH_TYPE_IPV4), punt,
            pipe, meter=meter,
        ))
        if alg_enabled:
            mods.append(_flow(
                dp, PRIORITY_CONTROL,
                parser.OFPMatch(
                    in_port=port, eth_type=ETH_TYPE_IPV4, ip_proto=Proto.TCP, tcp_dst=PPTP_PORT
                ),
                punt, pipe, meter=meter,
            ))
    for public_ip in public_ips:
        mods.append(_flow(
            dp, PRIORITY_PUNT,
            parser.OFPMatch(in_port=outside_port, eth_type=ETH_TYPE_IPV4, ipv4_dst=str(public_ip)),
            punt, pipe, meter=METER_OUTSIDE_NEW,
        ))
        if alg_enabled:
            mods.append(_flow(
                dp, PRIORITY_CONTROL,
                parser.OFPMatch(
                    in_port=outside_port, eth_type=ETH_TYPE_IPV4, ipv4_dst=str(public_ip),
                    ip_proto=Proto.TCP, tcp_src=PPTP_PORT,
                ),
                punt, pipe, meter=METER_OUTSIDE_CONTROL,
            ))
    return mods


def _l4_match(proto: Proto, src_port: int, dst_port: int) -> dict[str, int]:
    if proto is Proto.TCP:
        return {"ip_proto": int(proto), "tcp_src": src_port, "tcp_dst": dst_port}
    return {"ip_proto": int(proto), "udp_src": src_port, "udp_dst": dst_port}


def _l4_set(dp: Any, proto: Proto, field: str, port: int) -> Any:
    name = f"{'tcp' if proto is Proto.TCP else 'udp'}_{field}"
    return dp.ofproto_parser.OFPActionSetField(**{name: port})


def session_entries(
    dp: Any, decision: SessionEntries, inside: L2, outside: L2, gateway_mac: str
) -> list[Any]:
    """Both directions' rewrite entries of a TCP or UDP NAT session.

    Args:
        dp: the datapath (for its parser).
        decision: the session and its idle timeout.
        inside: the inside host's port and MAC; the outbound entry matches only packets
            from that port.
        outside: the next hop toward the remote end.
        gateway_mac: the MAC the gateway sends from.
    """
    parser = dp.ofproto_parser
    s = decision.session
    out_match = parser.OFPMatch(
        in_port=inside.port, eth_type=ETH_TYPE_IPV4, ipv4_src=str(s.inside_ip),
        ipv4_dst=str(s.remote_ip), **_l4_match(s.proto, s.inside_port, s.remote_port),
    )
    out_actions = [
        parser.OFPActionSetField(ipv4_src=str(s.public_ip)),
        _l4_set(dp, s.proto, "src", s.public_port),
        *_route(dp, gateway_mac, outside),
    ]
    in_match = parser.OFPMatch(
        in_port=outside.port, eth_type=ETH_TYPE_IPV4, ipv4_src=str(s.remote_ip),
        ipv4_dst=str(s.public_ip), **_l4_match(s.proto, s.remote_port, s.public_port),
    )
    in_actions = [
        parser.OFPActionSetField(ipv4_dst=str(s.inside_ip)),
        _l4_set(dp, s.proto, "dst", s.inside_port),
        *_route(dp, gateway_mac, inside),
    ]
    return [
        _flow(dp, PRIORITY_SESSION, m, a, EntryKind.SESSION, s.id, decision.idle_timeout, True)
        for m, a in ((out_match, out_actions), (in_match, in_actions))
    ]


def gre_outbound(
    dp: Any, decision: GreOutboundEntry, client: L2, outside: L2, gateway_mac: str
) -> Any:
    """The outbound server-map entry: client -> server GRE leaves from the public address.

    Args:
        client: the client's port and MAC; the entry matches only packets from that port.
        outside: the next hop toward the server.
    """
    parser = dp.ofproto_parser
    match = parser.OFPMatch(
        in_port=client.port, eth_type=ETH_TYPE_IPV4, ip_proto=Proto.GRE,
        ipv4_src=str(decision.client_ip), ipv4_dst=str(decision.server_ip),
    )
    actions = [
        parser.OFPActionSetField(ipv4_src=str(decision.public_ip)),
        *_route(dp, gateway_mac, outside),
    ]
    return _flow(
        dp, PRIORITY_SESSION, match, actions, EntryKind.GRE_OUTBOUND, decision.entry_id,
        decision.idle_timeout, True,
    )


def gre_inbound(
    dp: Any, decision: GreInboundEntry, outside_port: int, client: L2 | None, gateway_mac: str
) -> Any:
    """The inbound server-map entry of a (server, public address) pair: to the client or to
    the controller.

    Args:
        client: the client's port and MAC when the decision sends to a client (flow
            path); ignored when ``decision.client_ip`` is None (controller path).
    """
    parser = dp.ofproto_parser
    match = parser.OFPMatch(
        in_port=outside_port, eth_type=ETH_TYPE_IPV4, ip_proto=Proto.GRE,
        ipv4_src=str(decision.server_ip), ipv4_dst=str(decision.public_ip),
    )
    meter: int | None = None
    if decision.client_ip is not None and client is not None:
        actions = [
            parser.OFPActionSetField(ipv4_dst=str(decision.client_ip)),
            *_route(dp, gateway_mac, client),
        ]
    else:
        actions, meter = [_to_controller(dp)], METER_GRE
    return _flow(
        dp, PRIORITY_SESSION, match, actions, EntryKind.GRE_INBOUND, decision.entry_id,
        decision.idle_timeout, True, meter,
    )


def remove(dp: Any, decision: RemoveEntries) -> Any:
    """Delete every entry whose cookie names ``decision.kind`` and ``decision.entry_id``."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        datapath=dp,
        cookie=cookie(decision.kind, decision.entry_id),
        cookie_mask=0xFFFFFFFFFFFFFFFF,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


def remove_all(dp: Any) -> Any:
    """Delete every entry this application installed (any kind), e.g. at connect."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        datapath=dp, cookie=COOKIE_TAG, cookie_mask=COOKIE_TAG_MASK, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


def stats_request(dp: Any) -> Any:
    """A flow statistics request for every entry of this application."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(
        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, COOKIE_TAG, COOKIE_TAG_MASK,
        parser.OFPMatch(),
    )


Lookup = Callable[[Side, IPv4Address], L2 | None]


def entry_mods(
    dp: Any, decision: Decision, lookup: Lookup, outside_port: int | None, gateway_mac: str
) -> list[Any] | None:
    """The flow-mods of any decision of the core.

    Args:
        lookup: where a neighbour is (``alg.neighbours.NeighbourTable.lookup``).
        outside_port: the outside port's number, None before the switch told it.

    Returns:
        The flow-mods, or None when the decision cannot be carried out (a neighbour it
        sends to, or the outside port, is not known): the caller reports it to the core.
    """
    match decision:
        case RemoveEntries():
            return [remove(dp, decision)]
        case SessionEntries(session=s):
            inside, outside = lookup(Side.INSIDE, s.inside_ip), lookup(Side.OUTSIDE, s.remote_ip)
            if inside is None or outside is None:
                return None
            return session_entries(dp, decision, inside, outside, gateway_mac)
        case GreOutboundEntry():
            client = lookup(Side.INSIDE, decision.client_ip)
            outside = lookup(Side.OUTSIDE, decision.server_ip)
            if client is None or outside is None:
                return None
            return [gre_outbound(dp, decision, client, outside, gateway_mac)]
        case GreInboundEntry():
            client = None
            if decision.client_ip is not None:
                client = lookup(Side.INSIDE, decision.client_ip)
                if client is None:
                    return None
            if outside_port is None:
                return None
            return [gre_inbound(dp, decision, outside_port, client, gateway_mac)]
        case _:
            assert_never(decision)
