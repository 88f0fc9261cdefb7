"""The neighbour table, sans-IO: ARP answers, pins, queues and retries, without a switch."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg.config import AlgConfig, GatewayConfig, load
from alg.errors import ConfigError
from alg.neighbours import (
    ARP_REPLY,
    ARP_REQUEST,
    FORGET_SECONDS,
    L2,
    MAX_NEIGHBOURS,
    PIN_SECONDS,
    QUEUE_LIMIT,
    REACHABLE_SECONDS,
    RETRIES,
    ArpMessage,
    ArpReply,
    ArpRequest,
    Delivery,
    NeighbourTable,
    Route,
    Side,
)

IN1, IN2, OUT = 1, 2, 100
GATEWAY = IPv4Address("192.168.1.254")
CLIENT = IPv4Address("192.168.1.1")
SERVER = IPv4Address("203.0.113.1")
PUBLIC = IPv4Address("203.0.113.2")
FAR = IPv4Address("198.51.100.7")
HOP = IPv4Address("203.0.113.254")
MAC1, MAC2, SRV_MAC = "0a:00:00:00:00:01", "0a:00:00:00:00:02", "0a:00:00:00:00:64"


def config(next_hop: str = "", **options: object) -> GatewayConfig:
    return load({
        "inside_ports": ["in1", "in2"], "outside_port": "out",
        "inside_subnet": "192.168.1.0/24", "inside_gateway": str(GATEWAY),
        "outside_subnet": "203.0.113.0/24", "public_ips": [str(PUBLIC)], "next_hop": next_hop,
        **options,
    })


def table(next_hop: str = "", **options: object) -> NeighbourTable[str]:
    t: NeighbourTable[str] = NeighbourTable(config(next_hop, **options))
    t.set_ports([IN2, IN1], OUT)
    return t


def arp(op: int, mac: str, sender: IPv4Address, target: IPv4Address) -> ArpMessage:
    return ArpMessage(op, mac, sender, target)


def test_ports_have_sides() -> None:
    t = table()
    assert (t.side(IN1), t.side(IN2), t.side(OUT), t.side(7)) == (
        Side.INSIDE, Side.INSIDE, Side.OUTSIDE, None
    )
    assert t.inside_ports == (IN1, IN2) and t.outside_port == OUT
    assert t.arp(7, MAC1, arp(ARP_REQUEST, MAC1, CLIENT, GATEWAY), 0.0).replies == []


def test_the_gateway_answers_for_its_own_addresses_only_on_their_side() -> None:
    t = table()
    out = t.arp(IN1, MAC1, arp(ARP_REQUEST, MAC1, CLIENT, GATEWAY), 0.0)
    assert out.replies == [ArpReply(IN1, MAC1, GATEWAY, MAC1, CLIENT)]
    out = t.arp(OUT, SRV_MAC, arp(ARP_REQUEST, SRV_MAC, SERVER, PUBLIC), 0.0)
    assert out.replies == [ArpReply(OUT, SRV_MAC, PUBLIC, SRV_MAC, SERVER)]
    assert t.arp(OUT, SRV_MAC, arp(ARP_REQUEST, SRV_MAC, SERVER, GATEWAY), 0.0).replies == []
    assert t.arp(IN1, MAC1, arp(ARP_REQUEST, MAC1, CLIENT, PUBLIC), 0.0).replies == []
    assert t.arp(IN1, MAC1, arp(ARP_REPLY, MAC1, CLIENT, GATEWAY), 0.0).replies == []
    assert t.counters.arp_replies_sent == 2
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN1, MAC1)
    assert t.lookup(Side.OUTSIDE, SERVER) == L2(OUT, SRV_MAC)


def test_inside_addresses_are_pinned_to_their_first_port() -> None:
    t = table()
    assert t.admit_inside(IN1, MAC1, CLIENT, SERVER) is Route.OUTSIDE
    assert t.admit_inside(IN2, MAC2, CLIENT, SERVER) is Route.SPOOFED
    assert t.arp(IN2, MAC2, arp(ARP_REPLY, MAC2, CLIENT, GATEWAY), 0.0).replies == []
    assert t.arp(IN2, MAC2, arp(ARP_REQUEST, MAC2, CLIENT, GATEWAY), 0.0).replies == []
    assert t.counters.spoofed_drops == 3
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN1, MAC1)
    assert t.admit_inside(IN1, MAC2, CLIENT, SERVER) is Route.OUTSIDE  # IP: MAC kept
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN1, MAC1)
    t.arp(IN1, MAC2, arp(ARP_REPLY, MAC2, CLIENT, GATEWAY), 0.0)  # ARP: MAC changes
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN1, MAC2)


def test_an_address_pinned_by_arp_alone_goes_to_the_next_port_claiming_it() -> None:
    t = table()
    t.arp(IN1, MAC1, arp(ARP_REPLY, MAC1, CLIENT, CLIENT), 0.0)
    out = t.arp(IN2, MAC2, arp(ARP_REQUEST, MAC2, CLIENT, GATEWAY), 1.0)
    assert out.replies == [ArpReply(IN2, MAC2, GATEWAY, MAC2, CLIENT)]
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN2, MAC2)
    t.arp(IN1, MAC1, arp(ARP_REPLY, MAC1, CLIENT, CLIENT), 2.0)
    assert t.admit_inside(IN2, MAC2, CLIENT, SERVER, now=3.0) is Route.OUTSIDE  # IP holds it
    assert t.admit_inside(IN1, MAC1, CLIENT, SERVER, now=4.0) is Route.SPOOFED
    assert t.arp(IN1, MAC1, arp(ARP_REQUEST, MAC1, CLIENT, GATEWAY), 5.0).replies == []
    assert t.lookup(Side.INSIDE, CLIENT) == L2(IN2, MAC2)
    assert t.counters.spoofed_drops == 2 and t.counters.pins_refused == 0


def test_hosts_behind_one_port_up_to_its_pin_limit_all_work() -> None:
    t = table(max_pins_per_port=3)
    behind_switch = [IPv4Address(f"192.168.1.{i}") for i in (1, 2, 3)]
    for i, ip in enumerate(behind_switch):
        mac = f"0a:00:00:00:01:0{i}"
        out = t.arp(IN1, mac, arp(ARP_REQUEST, mac, ip, GATEWAY), 0.0)
        assert out.replies == [ArpReply(IN1, mac, GATEWAY, mac, ip)]
        assert t.admit_inside(IN1, mac, ip, SERVER, now=0.0) is Route.OUTSIDE
    own_port = IPv4Address("192.168.1.10")
    assert t.admit_inside(IN2, MAC2, own_port, SERVER, now=0.0) is Route.OUTSIDE
    fourth = IPv4Address("192.168.1.4")
    assert t.arp(IN1, MAC1, arp(ARP_REQUEST, MAC1, fourth, GATEWAY), 0.0).replies == []
    assert t.admit_inside(IN1, MAC1, fourth, SERVER, now=0.0) is Route.SPOOFED
    assert t.counters.pins_refused == 2 and fourth not in t.hosts(Side.INSIDE)
    for ip in behind_switch[1:]:
        t.admit_inside(IN1, MAC1, ip, SERVER, now=PIN_SECONDS)
    t.tick(PIN_SECONDS + 1.0)  # the first host went quiet: its pin ages, its room frees
    assert t.admit_inside(IN1, MAC1, fourth, SERVER, now=PIN_SECONDS + 2.0) is Route.OUTSIDE
    assert t.counters.spoofed_drops == 0 and t.counters.neighbours_refused == 0


def test_a_port_taking_over_an_address_frees_the_room_it_had() -> None:
    t = table(max_pins_per_port=1)
    t.arp(IN1, MAC1, arp(ARP_REPLY, MAC1, CLIENT, CLIENT), 0.0)
    t.arp(IN2, MAC2, arp(ARP_REPLY, MAC2, CLIENT, CLIENT), 1.0)
    assert t.admit_inside(IN1, MAC1, IPv4Address("192.168.1.2"), SERVER) is Route.OUTSIDE
    assert t.admit_inside(IN2, MAC2, IPv4Address("192.168.1.3"), SERVER) is Route.SPOOFED
    assert t.counters.pins_refused == 1


def test_the_pin_limit_is_a_checked_option() -> None:
    assert config().alg.max_pins_per_port == 64
    assert config(max_pins_per_port="2").alg.max_pins_per_port == 2
    with pytest.raises(ConfigError, match=r"^nat\.max_pins_per_port: "):
        config(max_pins_per_port=0)


@pytest.mark.parametrize(("src", "dst", "route"), [
    ("10.0.0.1", "203.0.113.1", Route.DROP),
    ("192.168.1.1", "224.0.0.251", Route.DROP),
    ("192.168.1.1", "255.255.255.255", Route.DROP),
    ("192.168.1.1", "192.168.1.255", Route.DROP),
    ("192.168.1.1", "192.168.1.2", Route.DROP),
    ("192.168.1.1", "192.168.1.254", Route.GATEWAY),
    ("192.168.1.1", "203.0.113.9", Route.OUTSIDE),
    ("192.168.1.1", "198.51.100.7", Route.NO_ROUTE),
])
def test_inside_packets_are_routed(src: str, dst: str, route: Route) -> None:
    assert table().admit_inside(IN1, MAC1, IPv4Address(src), IPv4Address(dst)) is route


def test_a_source_outside_the_inside_subnet_is_not_learnt() -> None:
    t = table()
    t.admit_inside(IN1, MAC1, IPv4Address("10.0.0.1"), SERVER)
    assert t.hosts(Side.INSIDE) == {}


def test_beyond_the_outside_subnet_goes_to_the_next_hop() -> None:
    t = table(next_hop=str(HOP))
    assert t.admit_inside(IN1, MAC1, CLIENT, FAR) is Route.OUTSIDE
    out = t.send(Side.OUTSIDE, FAR, "a", 0.0)
    assert out.requests == [ArpRequest((OUT,), PUBLIC, HOP)] and out.deliveries == []
    out = t.arp(OUT, SRV_MAC, arp(ARP_REPLY, SRV_MAC, HOP, PUBLIC), 0.1)
    assert out.deliveries == [Delivery(L2(OUT, SRV_MAC), "a")]
    assert t.lookup(Side.OUTSIDE, FAR) == L2(OUT, SRV_MAC)


def test_unroutable_items_are_dropped_at_once() -> None:
    out = table().send(Side.OUTSIDE, FAR, "a", 0.0)
    assert out.requests == [] and out.deliveries == []


def test_known_neighbours_get_items_at_once() -> None:
    t = table()
    t.admit_inside(IN2, MAC2, CLIENT, SERVER)
    assert t.send(Side.INSIDE, CLIENT, "x", 0.0).deliveries == [Delivery(L2(IN2, MAC2), "x")]


def test_a_queue_is_released_only_by_its_own_side() -> None:
    t = table()
    out = t.send(Side.INSIDE, CLIENT, "a", 0.0)
    assert out.requests == [ArpRequest((IN1, IN2), GATEWAY, CLIENT)]
    assert t.arp(OUT, SRV_MAC, arp(ARP_REPLY, SRV_MAC, CLIENT, PUBLIC), 0.1).deliveries == []
    assert t.waiting(CLIENT) == 1
    out = t.arp(IN2, MAC2, arp(ARP_REPLY, MAC2, CLIENT, GATEWAY), 0.2)
    assert out.deliveries == [Delivery(L2(IN2, MAC2), "a")] and t.waiting(CLIENT) is None


def test_queues_are_bounded_and_requests_retried_then_given_up() -> None:
    t = table()
    for i in range(QUEUE_LIMIT + 3):
        out = t.send(Side.OUTSIDE, SERVER, f"item{i}", 0.0)
        assert len(out.requests) == (1 if i == 0 else 0)  # one request a second at most
    assert t.waiting(SERVER) == QUEUE_LIMIT and t.counters.arp_queue_drops == 3
    assert t.tick(0.5).requests == []
    for second in range(1, RETRIES + 1):
        assert t.tick(float(second)).requests == [ArpRequest((OUT,), PUBLIC, SERVER)]
    assert t.counters.arp_requests_sent == 1 + RETRIES
    assert t.tick(RETRIES + 1.0).requests == []
    assert t.waiting(SERVER) is None
    assert t.counters.arp_queue_drops == 3 + QUEUE_LIMIT


def test_requests_before_the_ports_are_known_go_nowhere() -> None:
    t: NeighbourTable[str] = NeighbourTable(config())
    assert t.send(Side.OUTSIDE, SERVER, "a", 0.0).requests == [ArpRequest((), PUBLIC, SERVER)]


def test_the_config_describes_itself() -> None:
    text = config().describe()
    assert "inside 192.168.1.0/24 via 192.168.1.254" in text and "ALG on" in text
    assert GatewayConfig(
        AlgConfig(alg_enabled=False), ("a",), "b", config().inside_subnet, GATEWAY,
        config().outside_subnet,
    ).describe().endswith("ALG off")


EVIL_MAC = "0a:00:00:00:00:66"


def resolved_hop() -> NeighbourTable[str]:
    """A table that resolved its next hop at time 0, by a reply to its own request."""
    t = table(next_hop=str(HOP))
    assert t.send(Side.OUTSIDE, FAR, "a", 0.0).requests == [ArpRequest((OUT,), PUBLIC, HOP)]
    t.arp(OUT, SRV_MAC, arp(ARP_REPLY, SRV_MAC, HOP, PUBLIC), 0.0)
    assert t.lookup(Side.OUTSIDE, FAR) == L2(OUT, SRV_MAC)
    return t


@pytest.mark.parametrize("message", [
    arp(ARP_REPLY, EVIL_MAC, HOP, PUBLIC),  # an unsolicited reply
    arp(ARP_REQUEST, EVIL_MAC, HOP, PUBLIC),  # a request to the gateway
    arp(ARP_REQUEST, EVIL_MAC, HOP, HOP),  # gratuitous
    arp(ARP_REPLY, EVIL_MAC, HOP, HOP),  # gratuitous, as a reply
])
def test_unsolicited_arp_from_outside_never_moves_the_next_hop(message: ArpMessage) -> None:
    """The attacker on the outside link claims the next hop's address for its own MAC."""
    t = resolved_hop()
    t.arp(OUT, EVIL_MAC, message, 1.0)
    t.arp(OUT, EVIL_MAC, message, 2.0)
    assert t.lookup(Side.OUTSIDE, FAR) == L2(OUT, SRV_MAC)
    assert t.send(Side.OUTSIDE, FAR, "b", 2.0).deliveries == [Delivery(L2(OUT, SRV_MAC), "b")]
    assert t.counters.arp_unsolicited_ignored == 2


def test_an_unknown_next_hop_is_learnt_only_from_a_reply_to_the_gateways_request() -> None:
    t = table(next_hop=str(HOP))
    t.arp(OUT, EVIL_MAC, arp(ARP_REQUEST, EVIL_MAC, HOP, PUBLIC), 0.0)  # first, unasked
    t.arp(OUT, EVIL_MAC, arp(ARP_REPLY, EVIL_MAC, HOP, PUBLIC), 0.0)
    assert t.lookup(Side.OUTSIDE, FAR) is None
    assert t.send(Side.OUTSIDE, FAR, "a", 0.1).requests == [ArpRequest((OUT,), PUBLIC, HOP)]
    out = t.arp(OUT, SRV_MAC, arp(ARP_REPLY, SRV_MAC, HOP, PUBLIC), 0.2)
    assert out.deliveries == [Delivery(L2(OUT, SRV_MAC), "a")]
    assert t.lookup(Side.OUTSIDE, FAR) == L2(OUT, SRV_MAC)


def test_outside_entries_age_and_are_resolved_again_when_used() -> None:
    t = resolved_hop()
    assert t.send(Side.OUTSIDE, FAR, "b", REACHABLE_SECONDS - 1.0).requests == []
    assert t.tick(REACHABLE_SECONDS + 10.0).requests == []  # stale, unused: no ARP
    out = t.send(Side.OUTSIDE, FAR, "c", REACHABLE_SECONDS + 10.0)
    assert out.deliveries == [Delivery(L2(OUT, SRV_MAC), "c")]  # still in use meanwhile
    assert out.requests == [ArpRequest((OUT,), PUBLIC, HOP)]
    assert t.send(Side.OUTSIDE, FAR, "d", REACHABLE_SECONDS + 10.5).requests == []
    # The router really changed its MAC: the reply to the gateway's request says so.
    t.arp(OUT, MAC2, arp(ARP_REPLY, MAC2, HOP, PUBLIC), REACHABLE_SECONDS + 10.6)
    assert t.lookup(Side.OUTSIDE, FAR) == L2(OUT, MAC2)
    assert t.send(Side.OUTSIDE, FAR, "e", 2 * REACHABLE_SECONDS).requests == []
    assert t.send(Side.OUTSIDE, FAR, "f", 2 * REACHABLE_SECONDS + 11.0).requests == [
        ArpRequest((OUT,), PUBLIC, HOP)]


def test_an_outside_entry_that_stops_answering_is_forgotten_and_asked_afresh() -> None:
    t = resolved_hop()
    start = REACHABLE_SECONDS
    assert len(t.send(Side.OUTSIDE, FAR, "b", start).requests) == 1
    requests = [len(t.tick(start + second).requests) for second in range(1, RETRIES + 2)]
    assert requests == [1] * RETRIES + [0]
    assert t.lookup(Side.OUTSIDE, FAR) is None
    assert t.send(Side.OUTSIDE, FAR, "a", start + 9).requests == [
        ArpRequest((OUT,), PUBLIC, HOP)]


BIG_HOP, BIG_PUBLIC = IPv4Address("10.0.255.254"), IPv4Address("10.0.255.2")


def big_link(next_hop: str = "") -> NeighbourTable[str]:
    """A table on a /16 outside link, room for many more hosts than the table holds."""
    return table(next_hop=next_hop, outside_subnet="10.0.0.0/16",
                 public_ips=[str(BIG_PUBLIC)])


def spoofer_fills_the_table(t: NeighbourTable[str], now: float) -> list[IPv4Address]:
    """The attacker on the outside link sends one unsolicited ARP from each of more than
    :data:`MAX_NEIGHBOURS` addresses, each a new neighbour."""
    first = int(IPv4Address("10.0.0.1"))
    spoofed = [IPv4Address(first + n) for n in range(MAX_NEIGHBOURS + 10)]
    for ip in spoofed:
        t.arp(OUT, EVIL_MAC, arp(ARP_REQUEST, EVIL_MAC, ip, BIG_PUBLIC), now)
    assert len(t.hosts(Side.OUTSIDE)) == MAX_NEIGHBOURS
    assert t.counters.neighbours_refused == 10
    return spoofed


def test_a_table_full_of_spoofed_neighbours_still_learns_and_uses_the_next_hop() -> None:
    t = big_link(next_hop=str(BIG_HOP))
    spoofed = spoofer_fills_the_table(t, 0.0)
    out = t.send(Side.OUTSIDE, FAR, "a", 1.0)
    assert out.requests == [ArpRequest((OUT,), BIG_PUBLIC, BIG_HOP)]
    out = t.arp(OUT, SRV_MAC, arp(ARP_REPLY, SRV_MAC, BIG_HOP, BIG_PUBLIC), 1.1)
    assert out.deliveries == [Delivery(L2(OUT, SRV_MAC), "a")]
    assert t.send(Side.OUTSIDE, FAR, "b", 1.2).deliveries == [Delivery(L2(OUT, SRV_MAC), "b")]
    # An on-link server the gateway asks for gets room too: the oldest spoof gives way.
    server = spoofed[-1]
    assert server not in t.hosts(Side.OUTSIDE)
    assert t.send(Side.OUTSIDE, server, "c", 1.3).requests == [
        ArpRequest((OUT,), BIG_PUBLIC, server)]
    out = t.arp(OUT, MAC2, arp(ARP_REPLY, MAC2, server, BIG_PUBLIC), 1.4)
    assert out.deliveries == [Delivery(L2(OUT, MAC2), "c")]
    assert spoofed[0] not in t.hosts(Side.OUTSIDE)
    assert t.counters.neighbours_evicted == 1


def test_outside_neighbours_never_used_are_forgotten() -> None:
    t = resolved_hop()
    t.arp(OUT, MAC1, arp(ARP_REQUEST, MAC1, SERVER, PUBLIC), 0.0)  # learnt, never used
    assert SERVER in t.hosts(Side.OUTSIDE)
    used = REACHABLE_SECONDS - 10.0
    assert t.send(Side.OUTSIDE, FAR, "b", used).requests == []  # the next hop is used
    t.tick(FORGET_SECONDS - 1.0)
    assert set(t.hosts(Side.OUTSIDE)) == {SERVER, HOP}
    t.tick(FORGET_SECONDS + 1.0)
    assert set(t.hosts(Side.OUTSIDE)) == {HOP}
    assert t.counters.neighbours_expired == 1
    t.tick(used + FORGET_SECONDS + 1.0)
    assert t.hosts(Side.OUTSIDE) == {} and t.counters.neighbours_expired == 2
    assert t.send(Side.OUTSIDE, FAR, "c", 2 * FORGET_SECONDS).requests == [
        ArpRequest((OUT,), PUBLIC, HOP)]


def test_spoofed_neighbours_age_out_and_the_table_learns_again() -> None:
    t = big_link()
    host = IPv4Address("10.0.255.1")
    spoofer_fills_the_table(t, 0.0)
    t.arp(OUT, MAC1, arp(ARP_REQUEST, MAC1, host, BIG_PUBLIC), 1.0)
    assert host not in t.hosts(Side.OUTSIDE) and t.counters.neighbours_refused == 11
    t.tick(FORGET_SECONDS + 1.0)
    assert t.hosts(Side.OUTSIDE) == {}
    assert t.counters.neighbours_expired == MAX_NEIGHBOURS
    t.arp(OUT, MAC1, arp(ARP_REQUEST, MAC1, host, BIG_PUBLIC), FORGET_SECONDS + 2.0)
    assert t.hosts(Side.OUTSIDE) == {host: L2(OUT, MAC1)}
