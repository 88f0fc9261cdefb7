"""OpenFlow 1.3 messages built from the core's decisions: pure functions, no sending.

Every entry carries a cookie that names what it belongs to (``ryu_apps.switch``). The
entries and their removals are encoded by ``ryu_apps.wire`` (the packet-in path sends
them); meters and the flow statistics request, sent once per connection or poll, are
Ryu's message objects.

Every entry that forwards decrements the TTL first (:func:`async_config` has the switch
send a packet whose TTL is spent to the controller, which answers it, ``alg.icmp``).

The table (table 0 only):

===========  =====================================================================
priority     entries
===========  =====================================================================
1000         ARP -> controller
950          each control connection's segments from its server (exact match: server
             address and port 1723 -> public address and port) -> controller, through
             the meter of the client's inside port for control connections
900          TCP/1723 from inside ports and from the outside to a public address ->
             controller (ALG on)
501          a shared pair's GRE fragments (``ip_frag``, a Nicira field) -> controller,
             while the pair's GRE goes to the demultiplexer, which takes only whole
             packets (``ryu_apps.fragments`` reassembles them)
500          NAT sessions (both directions), server-map GRE entries (those for
             packets from inside match the inside host's port); a (server, public
             address) pair on the controller path has a GRE_INBOUND entry whose action is
             output:CONTROLLER, so its GRE reaches the controller here
100          other IPv4 from inside ports, and from outside to a public address ->
             controller (first packets, ICMP echo, GRE that matches no server-map)
0            everything else: dropped
===========  =====================================================================

Every entry that outputs to the controller first passes the meter of its class
(``ryu_apps.switch``: ARP, each inside port, control segments from the outside, the live
control connections of each inside port's hosts, other traffic from the outside,
controller-path GRE). A flood of segments from port 1723 outside to public ports that
no control connection holds meets only the shared meter of control segments from the
outside: the live connections' segments match their own entries first.

Packets whose TTL a forwarding entry finds spent reach the controller by the switch's
exception, not by an output action, and no OpenFlow 1.3 match holds the TTL: no meter can
take them, so the app caps them itself (``ryu_apps.nat_gateway.EXPIRED_PER_SECOND``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from typing import Any, assert_never

from alg.codec import PPTP_PORT
from alg.config import AlgConfig, GatewayConfig
from alg.events import (
    ControlEntry,
    Decision,
    DemuxEntry,
    DemuxForget,
    DemuxReturnEntry,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    HostEntries,
    RemoveEntries,
    SessionEntries,
)
from alg.icmp import Martians
from alg.nat import Proto
from alg.neighbours import L2, Side
from ryu_apps import ctflows, wire
from ryu_apps.packets import ETH_TYPE_ARP, ETH_TYPE_IPV4
from ryu_apps.switch import (
    COOKIE_TAG,
    COOKIE_TAG_MASK,
    METER_ARP,
    METER_CONTROL_CONNECTIONS,
    METER_GRE,
    METER_INSIDE_PORT,
    METER_OUTSIDE_CONTROL,
    METER_OUTSIDE_NEW,
    PRIORITY_ARP,
    PRIORITY_CONTROL,
    PRIORITY_CONTROL_CONNECTION,
    PRIORITY_DROP,
    PRIORITY_FRAGMENTS,
    PRIORITY_PUNT,
    PRIORITY_SESSION,
    cookie,
)


def _flow(
    priority: int, match: dict[str, wire.Value], actions: Sequence[bytes], kind: EntryKind,
    entry_id: int = 0, idle_timeout: float = 0, notify: bool = False,
    meter: int | None = None,
) -> wire.Message:
    instructions = [wire.apply_actions(actions)] if actions else []
    if meter is not None:
        instructions.insert(0, wire.meter(meter))
    return wire.flow_mod(
        cookie=cookie(kind, entry_id), priority=priority,
        idle_timeout=min(int(idle_timeout), 65535),
        flags=wire.OFPFF_SEND_FLOW_REM if notify else 0,
        match_fields=match, instructions=instructions,
    )


_TO_CONTROLLER = wire.output(wire.OFPP_CONTROLLER)
_DEC_TTL = wire.dec_nw_ttl()
"""First of every forwarding entry's actions: a packet whose TTL is spent goes to the
controller as it came (reason OFPR_INVALID_TTL, :func:`async_config`), before any
rewrite, for the Time Exceeded to quote it."""


def _route(gateway_mac: str, hop: L2) -> list[bytes]:
    return [
        wire.set_field("eth_src", gateway_mac),
        wire.set_field("eth_dst", hop.mac),
        wire.output(hop.port),
    ]


def meters(dp: Any, rates: AlgConfig, inside_ports: Iterable[int]) -> list[Any]:
    """The meters of the punt classes (``ryu_apps.switch``), in packets per second.

    Each is sent as ADD then MODIFY: after a controller restart the ADD fails with
    "meter exists" (expected, :func:`expected_error`) and the MODIFY sets the rate;
    deleting a meter would delete the entries that use it.
    """
    ofp, parser = dp.ofproto, dp.ofproto_parser
    inside_ports = list(inside_ports)
    classes = [
        (METER_ARP, rates.punt_rate_arp),
        (METER_OUTSIDE_CONTROL, rates.punt_rate_outside_control),
        (METER_OUTSIDE_NEW, rates.punt_rate_outside_new),
        (METER_GRE, rates.punt_rate_gre),
        *((METER_INSIDE_PORT + port, rates.punt_rate_inside_port) for port in inside_ports),
        *((METER_CONTROL_CONNECTIONS + port, rates.punt_rate_control_connections)
          for port in inside_ports),
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


OFPET_METER_MOD_FAILED = 12
OFPMMFC_METER_EXISTS = 1


def expected_error(err_type: int, code: int) -> bool:
    """Whether a switch's error message is the expected answer to a request of the app
    rather than a fault: "meter exists" answers each ADD of :func:`meters` when the
    meter is there already (on every connection after the first, a controller restart
    among them); nothing else of the app adds a meter (OpenFlow 1.3 section 7.4.4)."""
    return err_type == OFPET_METER_MOD_FAILED and code == OFPMMFC_METER_EXISTS


def switch_setup(dp: Any, rates: AlgConfig, inside_ports: Iterable[int]) -> list[Any]:
    """What a switch gets before its entries are read: the asynchronous configuration
    (:func:`async_config`) and the meters (:func:`meters`)."""
    return [async_config(dp), *meters(dp, rates, inside_ports)]


def async_config(dp: Any) -> Any:
    """OpenFlow 1.3's asynchronous configuration (section 7.3.10): the defaults of Open
    vSwitch (packet-ins of table misses and of output actions, every port status and
    flow removal) plus packet-ins of packets whose TTL a ``dec_nw_ttl`` found spent,
    which the switch otherwise drops silently. The same for a master as for an equal
    controller; none for a slave."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    packet_in = (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL)
    port_status = (1 << ofp.OFPPR_ADD) | (1 << ofp.OFPPR_DELETE) | (1 << ofp.OFPPR_MODIFY)
    flow_removed = ((1 << ofp.OFPRR_IDLE_TIMEOUT) | (1 << ofp.OFPRR_HARD_TIMEOUT)
                    | (1 << ofp.OFPRR_DELETE) | (1 << ofp.OFPRR_GROUP_DELETE))
    return parser.OFPSetAsync(dp, [packet_in, 0], [port_status, port_status],
                              [flow_removed, 0])


def pipeline_again(inside_ports: Sequence[int], outside_port: int, config: GatewayConfig
                   ) -> list[wire.Message]:
    """The static entries of :func:`pipeline` (and, with ``ordinary_nat = conntrack``,
    of ``ryu_apps.ctflows``) after deleting whatever static entries the switch has (an
    earlier version's, or another configuration's)."""
    alg = config.alg
    mods = [remove(RemoveEntries(EntryKind.PIPELINE, 0)),
            *pipeline(inside_ports, outside_port, alg.public_ips, alg.alg_enabled)]
    if alg.ordinary_nat == "conntrack":
        own = (*alg.public_ips, config.inside_gateway)
        martians = Martians(own, config.inside_subnet, config.outside_subnet)
        mods += ctflows.static(inside_ports, outside_port, alg, config.inside_subnet,
                               martians.networks())
    return mods


def pipeline(
    inside_ports: Iterable[int],
    outside_port: int,
    public_ips: Iterable[IPv4Address],
    alg_enabled: bool,
) -> list[wire.Message]:
    """The static entries: ARP and punts to the controller, each through the meter of its
    class (see :func:`meters`, which must be on the switch first), and drop for the rest."""
    punt = [_TO_CONTROLLER]
    pipe = EntryKind.PIPELINE
    ipv4: dict[str, wire.Value] = {"eth_type": ETH_TYPE_IPV4}
    mods = [
        _flow(PRIORITY_ARP, {"eth_type": ETH_TYPE_ARP}, punt, pipe, meter=METER_ARP),
        _flow(PRIORITY_DROP, {}, [], pipe),
    ]
    for port in inside_ports:
        meter = METER_INSIDE_PORT + port
        mods.append(_flow(PRIORITY_PUNT, {"in_port": port, **ipv4}, punt, pipe, meter=meter))
        if alg_enabled:
            mods.append(_flow(
                PRIORITY_CONTROL,
                {"in_port": port, **ipv4, "ip_proto": Proto.TCP, "tcp_dst": PPTP_PORT},
                punt, pipe, meter=meter,
            ))
    for public_ip in public_ips:
        to_public: dict[str, wire.Value] = {"in_port": outside_port, **ipv4, "ipv4_dst": public_ip}
        mods.append(_flow(PRIORITY_PUNT, to_public, punt, pipe, meter=METER_OUTSIDE_NEW))
        if alg_enabled:
            mods.append(_flow(
                PRIORITY_CONTROL, {**to_public, "ip_proto": Proto.TCP, "tcp_src": PPTP_PORT},
                punt, pipe, meter=METER_OUTSIDE_CONTROL,
            ))
    return mods


def _l4(proto: Proto, field: str) -> str:
    return f"{'tcp' if proto is Proto.TCP else 'udp'}_{field}"


def session_entries(
    decision: SessionEntries, inside: L2, outside: L2, gateway_mac: str
) -> list[wire.Message]:
    """Both directions' rewrite entries of a TCP or UDP NAT session.

    Args:
        decision: the session and its idle timeout.
        inside: the inside host's port and MAC; the outbound entry matches only packets
            from that port.
        outside: the next hop toward the remote end.
        gateway_mac: the MAC the gateway sends from.
    """
    s = decision.session
    out_match: dict[str, wire.Value] = {
        "in_port": inside.port, "eth_type": ETH_TYPE_IPV4, "ipv4_src": s.inside_ip,
        "ipv4_dst": s.remote_ip, "ip_proto": int(s.proto), _l4(s.proto, "src"): s.inside_port,
        _l4(s.proto, "dst"): s.remote_port,
    }
    out_actions = [
        _DEC_TTL,
        wire.set_field("ipv4_src", s.public_ip),
        wire.set_field(_l4(s.proto, "src"), s.public_port),
        *_route(gateway_mac, outside),
    ]
    in_match: dict[str, wire.Value] = {
        "in_port": outside.port, "eth_type": ETH_TYPE_IPV4, "ipv4_src": s.remote_ip,
        "ipv4_dst": s.public_ip, "ip_proto": int(s.proto), _l4(s.proto, "src"): s.remote_port,
        _l4(s.proto, "dst"): s.public_port,
    }
    in_actions = [
        _DEC_TTL,
        wire.set_field("ipv4_dst", s.inside_ip),
        wire.set_field(_l4(s.proto, "dst"), s.inside_port),
        *_route(gateway_mac, inside),
    ]
    return [
        _flow(PRIORITY_SESSION, m, a, EntryKind.SESSION, s.id, decision.idle_timeout, True)
        for m, a in ((out_match, out_actions), (in_match, in_actions))
    ]


def gre_outbound(
    decision: GreOutboundEntry, client: L2, outside: L2, gateway_mac: str
) -> wire.Message:
    """The outbound server-map entry: client -> server GRE leaves from the public address.

    Args:
        client: the client's port and MAC; the entry matches only packets from that port.
        outside: the next hop toward the server.
    """
    match: dict[str, wire.Value] = {
        "in_port": client.port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.GRE),
        "ipv4_src": decision.client_ip, "ipv4_dst": decision.server_ip,
    }
    actions = [_DEC_TTL, wire.set_field("ipv4_src", decision.public_ip),
               *_route(gateway_mac, outside)]
    return _flow(
        PRIORITY_SESSION, match, actions, EntryKind.GRE_OUTBOUND, decision.entry_id,
        decision.idle_timeout, True,
    )


def gre_inbound(
    decision: GreInboundEntry, outside_port: int, client: L2 | None, gateway_mac: str,
    demux_port: int | None = None,
) -> wire.Message:
    """The inbound server-map entry of a (server, public address) pair: to the client, to
    the GRE demultiplexer, or to the controller.

    Args:
        client: the client's port and MAC when the decision sends to a client (flow
            path); ignored when ``decision.client_ip`` is None.
        demux_port: the demultiplexer's port, for a decision ``via_demux`` (without it,
            the controller path).
    """
    match: dict[str, wire.Value] = {
        "in_port": outside_port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.GRE),
        "ipv4_src": decision.server_ip, "ipv4_dst": decision.public_ip,
    }
    meter: int | None = None
    if decision.client_ip is not None and client is not None:
        actions = [_DEC_TTL, wire.set_field("ipv4_dst", decision.client_ip),
                   *_route(gateway_mac, client)]
    elif decision.via_demux and demux_port is not None:
        actions = [_DEC_TTL, wire.output(demux_port)]
    else:
        actions, meter = [_TO_CONTROLLER], METER_GRE
    return _flow(
        PRIORITY_SESSION, match, actions, EntryKind.GRE_INBOUND, decision.entry_id,
        decision.idle_timeout, True, meter,
    )


def control_entry(decision: ControlEntry, outside_port: int, client: L2) -> wire.Message:
    """A control connection's own punt entry: its server's segments to its public address
    and port go to the controller through the meter of the client's inside port
    (``METER_CONTROL_CONNECTIONS``), above the shared punt of segments from port 1723.

    Args:
        outside_port: the outside port's number.
        client: the client's port (which names the meter).
    """
    s = decision.session
    match: dict[str, wire.Value] = {
        "in_port": outside_port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.TCP),
        "ipv4_src": s.remote_ip, "ipv4_dst": s.public_ip, "tcp_src": s.remote_port,
        "tcp_dst": s.public_port,
    }
    return _flow(PRIORITY_CONTROL_CONNECTION, match, [_TO_CONTROLLER], EntryKind.CONTROL,
                 s.id, meter=METER_CONTROL_CONNECTIONS + client.port)


def gre_inbound_fragments(decision: GreInboundEntry, outside_port: int, steer: bool = True
                          ) -> wire.Message:
    """The fragments of a pair's GRE go to the controller while the pair's GRE goes to the
    demultiplexer (which passes only whole packets); on another path the entry goes.

    The entry carries the pair's cookie, so a removal of the pair's entries takes it too;
    it has no idle timeout and sends no flow-removed message (the pair's own entry
    does). On the flow path fragments need no entry of their own: the pair's address
    rewrite applies to them as to whole packets.

    Args:
        steer: the demultiplexer's port is there (without it a pair ``via_demux`` goes
            to the controller, and so does its entry).
    """
    match: dict[str, wire.Value] = {
        "in_port": outside_port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.GRE),
        "ipv4_src": decision.server_ip, "ipv4_dst": decision.public_ip,
        "ip_frag": (wire.IP_FRAG_ANY, wire.IP_FRAG_ANY),
    }
    if decision.via_demux and steer:
        return _flow(PRIORITY_FRAGMENTS, match, [_TO_CONTROLLER], EntryKind.GRE_INBOUND,
                     decision.entry_id, meter=METER_GRE)
    return wire.flow_mod(
        cookie=cookie(EntryKind.GRE_INBOUND, decision.entry_id),
        cookie_mask=0xFFFFFFFFFFFFFFFF, command=wire.OFPFC_DELETE_STRICT,
        priority=PRIORITY_FRAGMENTS, match_fields=match, out_port=wire.OFPP_ANY,
        out_group=wire.OFPG_ANY,
    )


def demux_return(decision: DemuxReturnEntry, demux_port: int, client: L2, gateway_mac: str
                 ) -> wire.Message:
    """Deliver what the GRE demultiplexer sends back for one client (its address and
    Call ID already restored) by the client's route."""
    match: dict[str, wire.Value] = {
        "in_port": demux_port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.GRE),
        "ipv4_dst": decision.client_ip,
    }
    return _flow(PRIORITY_SESSION, match, _route(gateway_mac, client),
                 EntryKind.DEMUX_RETURN, decision.entry_id)


def demux_probe(demux_port: int, probe_ip: IPv4Address) -> wire.Message:
    """The demultiplexer's heartbeat comes back to the controller (a pipeline entry)."""
    match: dict[str, wire.Value] = {
        "in_port": demux_port, "eth_type": ETH_TYPE_IPV4, "ip_proto": int(Proto.GRE),
        "ipv4_dst": probe_ip,
    }
    return _flow(PRIORITY_CONTROL, match, [_TO_CONTROLLER], EntryKind.PIPELINE)


def remove(decision: RemoveEntries) -> wire.Message:
    """Delete every entry whose cookie names ``decision.kind`` and ``decision.entry_id``."""
    return wire.flow_mod(
        cookie=cookie(decision.kind, decision.entry_id), cookie_mask=0xFFFFFFFFFFFFFFFF,
        table_id=wire.OFPTT_ALL, command=wire.OFPFC_DELETE, out_port=wire.OFPP_ANY,
        out_group=wire.OFPG_ANY,
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
    decision: Decision, lookup: Lookup, outside_port: int | None, gateway_mac: str,
    demux_port: int | None = None, gre_demux: bool = False,
) -> list[wire.Message] | None:
    """The flow-mods of any decision of the core (the demultiplexer's table entries have
    none: the app writes them).

    Args:
        lookup: where a neighbour is (``alg.neighbours.NeighbourTable.lookup``).
        outside_port: the outside port's number, None before the switch told it.
        demux_port: the GRE demultiplexer's port, None without one (or while the switch
            has none of its name).
        gre_demux: a demultiplexer is configured: a pair's inbound entry comes with its
            fragment entry (:func:`gre_inbound_fragments`), or the entry's removal
            whatever the port now, as one may be left from a time the port was there.

    Returns:
        The flow-mods, or None when the decision cannot be carried out (a neighbour it
        sends to, or the outside port, is not known): the caller reports it to the core.
    """
    match decision:
        case RemoveEntries():
            return [remove(decision)]
        case SessionEntries(session=s):
            inside, outside = lookup(Side.INSIDE, s.inside_ip), lookup(Side.OUTSIDE, s.remote_ip)
            if inside is None or outside is None:
                return None
            return session_entries(decision, inside, outside, gateway_mac)
        case GreOutboundEntry():
            client = lookup(Side.INSIDE, decision.client_ip)
            outside = lookup(Side.OUTSIDE, decision.server_ip)
            if client is None or outside is None:
                return None
            return [gre_outbound(decision, client, outside, gateway_mac)]
        case GreInboundEntry():
            client = None
            if decision.client_ip is not None:
                client = lookup(Side.INSIDE, decision.client_ip)
                if client is None:
                    return None
            if outside_port is None:
                return None
            mods = [gre_inbound(decision, outside_port, client, gateway_mac, demux_port)]
            if gre_demux or demux_port is not None:
                mods.append(gre_inbound_fragments(decision, outside_port,
                                                  demux_port is not None))
            return mods
        case HostEntries():
            host = lookup(Side.INSIDE, decision.binding.inside_ip)
            if host is None:
                return None
            return ctflows.host_entries(decision, host, gateway_mac, decision.zone)
        case DemuxReturnEntry():
            if demux_port is None:
                return []
            client = lookup(Side.INSIDE, decision.client_ip)
            if client is None:
                return None
            return [demux_return(decision, demux_port, client, gateway_mac)]
        case ControlEntry(session=s):
            client = lookup(Side.INSIDE, s.inside_ip)
            if client is None or outside_port is None:
                return None
            return [control_entry(decision, outside_port, client)]
        case DemuxEntry() | DemuxForget():
            return []
        case _:
            assert_never(decision)
