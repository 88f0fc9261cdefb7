"""The entries of ordinary NAT in the datapath (``ordinary_nat = conntrack``): pure
functions from the core's decisions to flow-mods.

Four tables (numbers in ``ryu_apps.switch``)::

    0 CLASSIFY  PPTP, echo, ICMP from martian sources and what the controller keeps
                -> controller (as without conntrack); an inside host's packets (entry
                per host, ``in_port``, ``eth_src``, ``ipv4_src``) and packets to a
                public address ->
                dec_ttl, ct(zone, nat) -> CT_OUT or CT_IN
    1 CT_OUT    new TCP or UDP connection of host H -> ct(commit, zone,
                nat(src=A_H:block_H)) -> ROUTE; established, related, or new and
                translated -> ROUTE; ICMP the tracker does not relate -> controller;
                anything else (other protocols) dropped
    2 ROUTE     translated (+snat) to a known destination -> its next hop; translated
                to an unknown one -> controller (it resolves the next hop and adds a
                route entry); anything else (the tracker could not translate it:
                no port left, the zone full) is dropped, never sent with a private
                source address
    3 CT_IN     a reply (+est or +rel, un-NATed by the tracker) to host H -> H;
                ICMP the tracker knows nothing of -> controller (errors about the
                controller's own sessions); anything else dropped

GRE never goes through the tracker (it would translate only the address of the first
host, ``docs/conntrack.md``), nor do TCP/1723, ICMP echo, or traffic for the inside
subnet and the gateway itself: their static entries in CLASSIFY rank above the
tracker's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from alg.config import AlgConfig
from alg.events import EntryKind, HostEntries
from alg.nat import Proto
from alg.neighbours import L2
from ryu_apps import wire
from ryu_apps.switch import (
    METER_INSIDE_PORT,
    METER_OUTSIDE_NEW,
    TABLE_CLASSIFY,
    TABLE_CT_IN,
    TABLE_CT_OUT,
    TABLE_ROUTE,
    cookie,
)

PRIORITY_KEEP = 300
"""GRE and ICMP echo: to the controller, never through the tracker."""
PRIORITY_NOT_ROUTED = 250
"""From an inside port to the inside subnet, multicast or broadcast: to the controller."""
PRIORITY_TRACK = 200
"""Through the tracker: a host's packets, packets to a public address."""
PRIORITY_ICMP = 150
"""CT_OUT: ICMP the tracker relates to none of its connections (errors about the
controller's own traffic, other types than echo): to the controller."""
PRIORITY_PASS = 100
"""CT_OUT: connections the tracker knows (or has translated)."""
PRIORITY_ASK = 50
"""ROUTE and CT_IN: to the controller."""
ROUTE_SECONDS = 60
"""A route entry's hard timeout: the next hop is resolved again after it."""
MULTICAST = IPv4Network("224.0.0.0/4")
BROADCAST = IPv4Address("255.255.255.255")
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0

_TRK, _NEW, _EST, _REL, _INV = (wire.CT_TRACKED, wire.CT_NEW, wire.CT_ESTABLISHED,
                                wire.CT_RELATED, wire.CT_INVALID)
SNAT = 0x40
"""``ct_state`` bit ``+snat``: the tracker translated the packet's source."""
_IPV4: dict[str, wire.Value] = {"eth_type": 0x0800}
_TO_CONTROLLER = wire.output(wire.OFPP_CONTROLLER)


def _entry(table: int, priority: int, match: dict[str, wire.Value],
           instructions: Sequence[bytes], kind: EntryKind = EntryKind.PIPELINE,
           entry_id: int = 0, idle_timeout: float = 0, hard_timeout: int = 0,
           notify: bool = False) -> wire.Message:
    return wire.flow_mod(
        cookie=cookie(kind, entry_id), table_id=table, priority=priority,
        idle_timeout=min(max(int(idle_timeout), 1), 65535) if idle_timeout else 0,
        hard_timeout=hard_timeout,
        flags=wire.OFPFF_SEND_FLOW_REM if notify else 0, match_fields=match,
        instructions=instructions)


def _punt(meter: int) -> list[bytes]:
    return [wire.meter(meter), wire.apply_actions([_TO_CONTROLLER])]


def _to(table: int) -> list[bytes]:
    return [wire.goto_table(table)]


def _network(net: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    return net.network_address, net.netmask


def static(inside_ports: Iterable[int], outside_port: int, config: AlgConfig,
           inside_subnet: IPv4Network, martians: Iterable[IPv4Network]
           ) -> list[wire.Message]:
    """The tables' static entries (kind PIPELINE), beside ``flowmods.pipeline``'s.
    ICMP from outside sent from a ``martians`` source goes to the controller, which drops
    and counts it (``icmp_martians``), before the tracker could relate it to a connection
    and deliver it."""
    zone = config.ct_zone
    mods: list[wire.Message] = [
        _entry(TABLE_CLASSIFY, PRIORITY_KEEP, {
            "in_port": outside_port, **_IPV4, "ip_proto": Proto.ICMP,
            "ipv4_src": _network(net)}, _punt(METER_OUTSIDE_NEW))
        for net in martians]
    for port in inside_ports:
        meter = METER_INSIDE_PORT + port
        here: dict[str, wire.Value] = {"in_port": port, **_IPV4}
        mods += [
            _entry(TABLE_CLASSIFY, PRIORITY_KEEP, {**here, "ip_proto": Proto.GRE},
                   _punt(meter)),
            _entry(TABLE_CLASSIFY, PRIORITY_KEEP, {
                **here, "ip_proto": Proto.ICMP, "icmpv4_type": ICMP_ECHO_REQUEST},
                _punt(meter)),
            *(_entry(TABLE_CLASSIFY, PRIORITY_NOT_ROUTED, {**here, "ipv4_dst": dst},
                     _punt(meter))
              for dst in (_network(inside_subnet), _network(MULTICAST), BROADCAST)),
        ]
    for public_ip in config.public_ips:
        there: dict[str, wire.Value] = {"in_port": outside_port, **_IPV4,
                                        "ipv4_dst": public_ip}
        mods += [
            _entry(TABLE_CLASSIFY, PRIORITY_KEEP, {**there, "ip_proto": Proto.GRE},
                   _punt(METER_OUTSIDE_NEW)),
            _entry(TABLE_CLASSIFY, PRIORITY_KEEP, {
                **there, "ip_proto": Proto.ICMP, "icmpv4_type": ICMP_ECHO_REPLY},
                _punt(METER_OUTSIDE_NEW)),
            _entry(TABLE_CLASSIFY, PRIORITY_TRACK, there, [wire.apply_actions([
                wire.dec_nw_ttl(), wire.ct(zone=zone, table=TABLE_CT_IN,
                                           actions=[wire.nat()])])]),
        ]
    for state in (_TRK | _EST, _TRK | _REL, _TRK | _NEW | SNAT):
        mods.append(_entry(TABLE_CT_OUT, PRIORITY_PASS,
                           {**_IPV4, "ct_state": (state, state | _INV)}, _to(TABLE_ROUTE)))
    for port in inside_ports:
        meter = METER_INSIDE_PORT + port
        mods += [
            _entry(TABLE_CT_OUT, PRIORITY_ICMP, {
                "in_port": port, **_IPV4, "ip_proto": Proto.ICMP,
                "ct_state": (_TRK, _TRK | _EST | _REL)}, _punt(meter)),
            _entry(TABLE_ROUTE, PRIORITY_ASK, {
                "in_port": port, **_IPV4, "ct_state": (_TRK | SNAT, _TRK | SNAT)},
                _punt(meter)),
        ]
    mods += [
        _entry(TABLE_CT_IN, PRIORITY_ASK, {**_IPV4, "ip_proto": Proto.ICMP},
               _punt(METER_OUTSIDE_NEW)),
    ]
    return mods


def host_entries(decision: HostEntries, host: L2, gateway_mac: str, zone: int
                 ) -> list[wire.Message]:
    """One inside host's entries (kind HOST, the binding's id): its packets into the
    tracker, its new connections translated to its address and block, replies to it.
    The classifying entry goes idle with the host and is reported (the binding ends)."""
    b = decision.binding
    kind = EntryKind.HOST
    deliver = [wire.apply_actions([
        wire.set_field("eth_src", gateway_mac), wire.set_field("eth_dst", host.mac),
        wire.output(host.port)])]
    return [
        _entry(TABLE_CLASSIFY, PRIORITY_TRACK, {
            "in_port": host.port, "eth_src": host.mac, **_IPV4, "ipv4_src": b.inside_ip},
            [wire.apply_actions([wire.dec_nw_ttl(), wire.ct(
                zone=zone, table=TABLE_CT_OUT, actions=[wire.nat()])])],
            kind, b.id, decision.idle_timeout, notify=True),
        *(_entry(TABLE_CT_OUT, PRIORITY_TRACK, {
            **_IPV4, "ipv4_src": b.inside_ip, "ip_proto": proto,
            "ct_state": (_TRK | _NEW, _TRK | _NEW | _INV | SNAT)},
            [wire.apply_actions([wire.ct(commit=True, zone=zone, table=TABLE_ROUTE, actions=[
                wire.nat(addresses=(b.public_ip, b.public_ip), ports=b.ports)])])],
            kind, b.id) for proto in (Proto.TCP, Proto.UDP)),
        *(_entry(TABLE_CT_IN, PRIORITY_TRACK, {
            **_IPV4, "ipv4_dst": b.inside_ip, "ct_state": (state, state | _INV)},
            deliver, kind, b.id) for state in (_TRK | _EST, _TRK | _REL)),
    ]


def route_entry(destination: IPv4Address, hop: L2, gateway_mac: str) -> wire.Message:
    """A translated packet's way to ``destination`` (kind ROUTE), for
    :data:`ROUTE_SECONDS`."""
    return _entry(TABLE_ROUTE, PRIORITY_TRACK, {
        **_IPV4, "ipv4_dst": destination, "ct_state": (_TRK | SNAT, _TRK | SNAT)},
        [wire.apply_actions([wire.set_field("eth_src", gateway_mac),
                             wire.set_field("eth_dst", hop.mac), wire.output(hop.port)])],
        EntryKind.ROUTE, hard_timeout=ROUTE_SECONDS)
