"""Unit tests of alg.nat."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from alg.config import AlgConfig
from alg.errors import AllocationError, ConfigError, PortExhaustedError
from alg.nat import AddressPool, NatSession, NatTable, Proto

P1 = IPv4Address("203.0.113.2")
P2 = IPv4Address("203.0.113.3")
P3 = IPv4Address("203.0.113.4")
C1 = IPv4Address("192.168.1.1")
C2 = IPv4Address("192.168.1.2")
C3 = IPv4Address("192.168.1.3")
C4 = IPv4Address("192.168.1.4")
SRV = IPv4Address("203.0.113.1")
R2 = IPv4Address("198.51.100.9")


def table(*public_ips: IPv4Address, **overrides: Any) -> NatTable:
    config = AlgConfig(public_ips=public_ips or (P1,),
                       **{"ordinary_nat": "controller", **overrides})
    return NatTable(config)


# --- AddressPool ---------------------------------------------------------------------------


def test_proto_numbers() -> None:
    assert [int(proto) for proto in (Proto.ICMP, Proto.TCP, Proto.UDP, Proto.GRE)] == [
        1,
        6,
        17,
        47,
    ]


def test_pool_pairs_host_with_one_address() -> None:
    pool = AddressPool([P1, P2])
    first = pool.acquire(C1)
    assert pool.acquire(C2) != first
    assert pool.acquire(C1) == first
    assert pool.acquire(C1) == first
    assert pool.lookup(C1) == first
    assert pool.refcount(C1) == 3
    assert pool.hosts_on(first) == 1


@pytest.mark.parametrize(
    ("addresses", "hosts", "expected"),
    [
        ([P1], [C1, C2, C3], [P1, P1, P1]),
        ([P1, P2], [C1, C2, C3, C4], [P1, P2, P1, P2]),
        ([P3, P2, P1], [C1, C2, C3, C4], [P1, P2, P3, P1]),
    ],
)
def test_pool_spreads_least_loaded_lowest_first(
    addresses: list[IPv4Address], hosts: list[IPv4Address], expected: list[IPv4Address]
) -> None:
    pool = AddressPool(addresses)
    assert [pool.acquire(host) for host in hosts] == expected
    assert pool.addresses == tuple(sorted(addresses))


def test_pool_refills_the_address_that_lost_a_host() -> None:
    pool = AddressPool([P1, P2, P3])
    for host in (C1, C2, C3):
        pool.acquire(host)
    pool.acquire(C1)
    pool.release(C2)
    assert pool.hosts_on(P2) == 0
    assert pool.acquire(C4) == P2
    assert [pool.hosts_on(address) for address in (P1, P2, P3)] == [1, 1, 1]


def test_pool_release_to_zero_unbinds() -> None:
    pool = AddressPool([P1, P2])
    pool.acquire(C1)
    pool.acquire(C1)
    pool.release(C1)
    assert pool.refcount(C1) == 1
    assert pool.lookup(C1) == P1
    pool.release(C1)
    assert pool.refcount(C1) == 0
    assert pool.lookup(C1) is None
    assert pool.hosts_on(P1) == 0
    pool.release(C1)
    pool.release(C2)
    assert pool.hosts_on(P1) == 0
    assert pool.hosts_on(IPv4Address("10.0.0.1")) == 0


@pytest.mark.parametrize(
    ("addresses", "match"),
    [([], "at least one"), ([P1, P1], "distinct")],
)
def test_pool_rejects_bad_addresses(addresses: list[IPv4Address], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        AddressPool(addresses)
    assert info.value.key == "public_ips"


# --- NatTable: mapping ---------------------------------------------------------------------


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.UDP, Proto.ICMP])
def test_outbound_creates_session_preserving_port(proto: Proto) -> None:
    nat = table()
    remote_port = 0 if proto is Proto.ICMP else 80
    session = nat.outbound(proto, C1, 40000, SRV, remote_port, 5.0)
    assert isinstance(session, NatSession)
    assert (session.proto, session.inside_ip, session.inside_port) == (proto, C1, 40000)
    assert (session.public_ip, session.public_port) == (P1, 40000)
    assert (session.remote_ip, session.remote_port) == (SRV, remote_port)
    assert session.created == session.last_seen == 5.0
    assert len(nat) == 1
    assert nat.sessions() == [session]
    assert nat.get(session.id) is session
    assert nat.mapping(proto, C1, 40000) == (P1, 40000)


def test_find_looks_up_outbound_without_creating_or_refreshing() -> None:
    nat = table()
    assert nat.find(Proto.TCP, C1, 40000, SRV, 1723) is None
    assert len(nat) == 0
    assert nat.pool.refcount(C1) == 0
    session = nat.outbound(Proto.TCP, C1, 40000, SRV, 1723, 1.0)
    assert nat.find(Proto.TCP, C1, 40000, SRV, 1723) is session
    assert nat.find(Proto.TCP, C1, 40000, SRV, 1724) is None
    assert nat.find(Proto.UDP, C1, 40000, SRV, 1723) is None
    assert session.last_seen == 1.0
    nat.remove(session.id)
    assert nat.find(Proto.TCP, C1, 40000, SRV, 1723) is None


def test_outbound_existing_flow_refreshes_last_seen() -> None:
    nat = table()
    first = nat.outbound(Proto.TCP, C1, 40000, SRV, 1723, 1.0)
    again = nat.outbound(Proto.TCP, C1, 40000, SRV, 1723, 9.0)
    assert again is first
    assert first.last_seen == 9.0
    assert first.created == 1.0
    assert nat.outbound(Proto.TCP, C1, 40000, SRV, 1723, 3.0).last_seen == 9.0
    assert len(nat) == 1
    assert nat.pool.refcount(C1) == 1


def test_collision_between_hosts_gets_a_different_port() -> None:
    nat = table()
    first = nat.outbound(Proto.UDP, C1, 5000, SRV, 53, 0.0)
    second = nat.outbound(Proto.UDP, C2, 5000, SRV, 53, 0.0)
    assert first.public_ip == second.public_ip == P1
    assert first.public_port == 5000
    assert second.public_port != 5000
    assert 1024 <= second.public_port <= 65535
    assert nat.inbound(Proto.UDP, P1, 5000, SRV, 53) is first
    assert nat.inbound(Proto.UDP, P1, second.public_port, SRV, 53) is second


def test_same_port_on_different_public_ips_is_preserved() -> None:
    nat = table(P1, P2)
    first = nat.outbound(Proto.TCP, C1, 5000, SRV, 80, 0.0)
    second = nat.outbound(Proto.TCP, C2, 5000, SRV, 80, 0.0)
    assert (first.public_ip, first.public_port) == (P1, 5000)
    assert (second.public_ip, second.public_port) == (P2, 5000)


def test_same_port_in_other_protocol_is_preserved() -> None:
    nat = table()
    tcp = nat.outbound(Proto.TCP, C1, 5000, SRV, 80, 0.0)
    udp = nat.outbound(Proto.UDP, C2, 5000, SRV, 80, 0.0)
    icmp = nat.outbound(Proto.ICMP, C2, 5000, SRV, 0, 0.0)
    assert tcp.public_port == udp.public_port == icmp.public_port == 5000


def test_low_inside_port_is_preserved_when_free() -> None:
    nat = table()
    assert nat.outbound(Proto.UDP, C1, 123, SRV, 123, 0.0).public_port == 123
    assert nat.outbound(Proto.UDP, C2, 123, SRV, 123, 0.0).public_port >= 1024


def test_endpoint_independent_mapping_shares_public_port() -> None:
    nat = table(P1, P2)
    nat.outbound(Proto.UDP, C2, 7000, SRV, 53, 0.0)
    to_srv = nat.outbound(Proto.UDP, C1, 7000, SRV, 53, 0.0)
    to_r2 = nat.outbound(Proto.UDP, C1, 7000, R2, 9999, 1.0)
    assert to_srv is not to_r2
    assert to_srv.id != to_r2.id
    assert (to_srv.public_ip, to_srv.public_port) == (to_r2.public_ip, to_r2.public_port)
    assert nat.pool.refcount(C1) == 2
    nat.remove(to_srv.id)
    to_srv_again = nat.outbound(Proto.UDP, C1, 7000, SRV, 53, 2.0)
    assert (to_srv_again.public_ip, to_srv_again.public_port) == (
        to_r2.public_ip,
        to_r2.public_port,
    )


def test_mapping_goes_with_last_session_and_port_is_freed() -> None:
    nat = table()
    first = nat.outbound(Proto.UDP, C1, 7000, SRV, 53, 0.0)
    second = nat.outbound(Proto.UDP, C1, 7000, R2, 53, 0.0)
    nat.remove(first.id)
    assert nat.mapping(Proto.UDP, C1, 7000) == (P1, 7000)
    nat.remove(second.id)
    assert nat.mapping(Proto.UDP, C1, 7000) is None
    assert nat.outbound(Proto.UDP, C2, 7000, SRV, 53, 0.0).public_port == 7000


def test_paired_pooling_across_sessions_and_protocols() -> None:
    nat = table(P1, P2, P3)
    c1 = [
        nat.outbound(Proto.TCP, C1, 40000, SRV, 1723, 0.0),
        nat.outbound(Proto.UDP, C1, 5353, R2, 53, 0.0),
        nat.outbound(Proto.ICMP, C1, 77, R2, 0, 0.0),
    ]
    c2 = nat.outbound(Proto.TCP, C2, 40000, SRV, 1723, 0.0)
    c3 = nat.outbound(Proto.UDP, C3, 1, SRV, 1, 0.0)
    assert {session.public_ip for session in c1} == {P1}
    assert (c2.public_ip, c3.public_ip) == (P2, P3)
    assert nat.pool.refcount(C1) == 3
    assert [nat.pool.hosts_on(address) for address in (P1, P2, P3)] == [1, 1, 1]
    for session in c1:
        nat.remove(session.id)
    assert nat.pool.lookup(C1) is None
    assert nat.pool.hosts_on(P1) == 0


def test_shared_pool_references_keep_the_address() -> None:
    pool = AddressPool([P1, P2])
    nat = NatTable(AlgConfig(public_ips=(P1, P2)), pool)
    assert nat.pool is pool
    assert pool.acquire(C1) == P1
    session = nat.outbound(Proto.TCP, C1, 1000, SRV, 1723, 0.0)
    assert session.public_ip == P1
    nat.remove(session.id)
    assert pool.refcount(C1) == 1
    assert pool.lookup(C1) == P1


def test_pool_built_from_config() -> None:
    nat = table(P2, P1)
    assert nat.pool.addresses == (P1, P2)


# --- NatTable: inbound filtering -----------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "public_ip", "public_port", "remote_ip", "remote_port", "found"),
    [
        (Proto.UDP, P1, 6000, SRV, 53, True),
        (Proto.UDP, P1, 6000, SRV, 54, False),
        (Proto.UDP, P1, 6000, R2, 53, False),
        (Proto.UDP, P1, 6001, SRV, 53, False),
        (Proto.UDP, P2, 6000, SRV, 53, False),
        (Proto.TCP, P1, 6000, SRV, 53, False),
    ],
)
def test_inbound_matches_only_exact_remote(
    proto: Proto,
    public_ip: IPv4Address,
    public_port: int,
    remote_ip: IPv4Address,
    remote_port: int,
    found: bool,
) -> None:
    nat = table(P1, P2)
    session = nat.outbound(Proto.UDP, C1, 6000, SRV, 53, 0.0)
    result = nat.inbound(proto, public_ip, public_port, remote_ip, remote_port)
    assert (result is session) if found else (result is None)


def test_inbound_does_not_refresh() -> None:
    nat = table()
    session = nat.outbound(Proto.UDP, C1, 6000, SRV, 53, 0.0)
    nat.inbound(Proto.UDP, P1, 6000, SRV, 53)
    assert session.last_seen == 0.0


def test_inbound_after_remove_finds_nothing() -> None:
    nat = table()
    session = nat.outbound(Proto.UDP, C1, 6000, SRV, 53, 0.0)
    nat.remove(session.id)
    assert nat.inbound(Proto.UDP, P1, 6000, SRV, 53) is None


# --- NatTable: ICMP ------------------------------------------------------------------------


def test_icmp_identifiers() -> None:
    nat = table(port_min=30000, port_max=30000)
    first = nat.outbound(Proto.ICMP, C1, 0, SRV, 0, 0.0)
    second = nat.outbound(Proto.ICMP, C2, 0, SRV, 0, 0.0)
    third = nat.outbound(Proto.ICMP, C3, 0, SRV, 0, 0.0)
    assert first.public_port == 0
    assert len({first.public_port, second.public_port, third.public_port}) == 3
    assert all(0 <= s.public_port <= 65535 for s in (second, third))
    assert nat.inbound(Proto.ICMP, P1, second.public_port, SRV, 0) is second
    assert nat.inbound(Proto.ICMP, P1, second.public_port, R2, 0) is None


def test_icmp_identifier_wraps_over_whole_range() -> None:
    nat = table()
    first = nat.outbound(Proto.ICMP, C1, 65535, SRV, 0, 0.0)
    second = nat.outbound(Proto.ICMP, C2, 65535, SRV, 0, 0.0)
    assert first.public_port == 65535
    assert second.public_port == 0


# --- NatTable: expiry ----------------------------------------------------------------------


def test_idle_timeouts_follow_config() -> None:
    nat = table(tcp_idle=100.0, udp_idle=10.0, icmp_idle=2.0, gre_idle=50.0)
    expected = {Proto.TCP: 100.0, Proto.UDP: 10.0, Proto.ICMP: 2.0, Proto.GRE: 50.0}
    assert {proto: nat.idle_timeout(proto) for proto in Proto} == expected


@pytest.mark.parametrize(
    ("proto", "timeout"),
    [(Proto.TCP, 100.0), (Proto.UDP, 10.0), (Proto.ICMP, 2.0)],
)
def test_expire_per_protocol_timeout(proto: Proto, timeout: float) -> None:
    nat = table(tcp_idle=100.0, udp_idle=10.0, icmp_idle=2.0)
    session = nat.outbound(proto, C1, 1000, SRV, 0, 5.0)
    assert nat.expire(5.0 + timeout) == []
    assert nat.get(session.id) is session
    assert nat.expire(5.0 + timeout + 0.5) == [session]
    assert nat.get(session.id) is None
    assert len(nat) == 0
    assert nat.pool.refcount(C1) == 0
    assert nat.mapping(proto, C1, 1000) is None


def test_expire_mixed_protocols() -> None:
    nat = table(tcp_idle=100.0, udp_idle=10.0, icmp_idle=2.0)
    tcp = nat.outbound(Proto.TCP, C1, 1000, SRV, 1723, 0.0)
    udp = nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 0.0)
    icmp = nat.outbound(Proto.ICMP, C1, 1000, SRV, 0, 0.0)
    assert nat.expire(5.0) == [icmp]
    assert nat.expire(50.0) == [udp]
    assert nat.sessions() == [tcp]
    assert nat.pool.refcount(C1) == 1
    assert nat.expire(200.0) == [tcp]
    assert nat.pool.lookup(C1) is None


def test_touch_defers_expiry() -> None:
    nat = table(udp_idle=10.0)
    kept = nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 0.0)
    gone = nat.outbound(Proto.UDP, C2, 1000, SRV, 53, 0.0)
    assert nat.touch(kept.id, 8.0) is kept
    assert kept.last_seen == 8.0
    assert nat.touch(kept.id, 4.0) is kept
    assert kept.last_seen == 8.0
    assert nat.expire(15.0) == [gone]
    assert nat.expire(18.5) == [kept]


def test_touch_unknown_id_is_ignored() -> None:
    nat = table()
    assert nat.touch(99, 1.0) is None


def test_expire_ignores_time_order_of_creation() -> None:
    nat = table(udp_idle=10.0)
    late = nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 100.0)
    early = nat.outbound(Proto.UDP, C2, 1000, SRV, 53, 50.0)
    assert nat.expire(105.0) == [early]
    assert nat.sessions() == [late]


# --- NatTable: remove and ids --------------------------------------------------------------


def test_remove_is_idempotent() -> None:
    nat = table()
    session = nat.outbound(Proto.TCP, C1, 1000, SRV, 80, 0.0)
    assert nat.remove(session.id) is session
    assert nat.remove(session.id) is None
    assert nat.remove(12345) is None
    assert len(nat) == 0
    assert nat.pool.refcount(C1) == 0


def test_ids_unique_monotonic_never_reused() -> None:
    nat = table()
    ids = []
    for port in range(1000, 1010):
        session = nat.outbound(Proto.UDP, C1, port, SRV, 53, 0.0)
        ids.append(session.id)
        nat.remove(session.id)
    ids.append(nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 0.0).id)
    assert ids == list(range(1, 12))


def test_sessions_compare_by_identity() -> None:
    nat = table()
    first = nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 0.0)
    nat.remove(first.id)
    second = nat.outbound(Proto.UDP, C1, 1000, SRV, 53, 0.0)
    assert first != second
    assert len({first, second}) == 2


# --- NatTable: exhaustion and validation ---------------------------------------------------


@pytest.mark.parametrize("proto", [Proto.TCP, Proto.UDP])
def test_port_exhaustion_leaks_no_pool_reference(proto: Proto) -> None:
    nat = table(port_min=2000, port_max=2000)
    holder = nat.outbound(proto, C1, 2000, SRV, 80, 0.0)
    low = nat.outbound(proto, C2, 1500, SRV, 80, 0.0)
    assert low.public_port == 1500
    with pytest.raises(PortExhaustedError) as info:
        nat.outbound(proto, C3, 2000, SRV, 80, 0.0)
    assert isinstance(info.value, AllocationError)
    assert "2000..2000" in str(info.value)
    assert str(P1) in str(info.value)
    assert nat.pool.refcount(C3) == 0
    assert nat.pool.lookup(C3) is None
    assert nat.pool.hosts_on(P1) == 2
    assert len(nat) == 2
    nat.remove(holder.id)
    retry = nat.outbound(proto, C3, 2000, SRV, 80, 0.0)
    assert retry.public_port == 2000


def test_port_exhaustion_keeps_existing_host_references() -> None:
    nat = table(port_min=2000, port_max=2000)
    nat.outbound(Proto.UDP, C1, 2000, SRV, 80, 0.0)
    nat.outbound(Proto.UDP, C2, 3000, SRV, 80, 0.0)
    with pytest.raises(PortExhaustedError):
        nat.outbound(Proto.UDP, C2, 2000, SRV, 80, 0.0)
    assert nat.pool.refcount(C2) == 1
    assert nat.pool.lookup(C2) == P1


def test_freed_range_port_is_handed_out_again() -> None:
    nat = table(port_min=2000, port_max=2001)
    nat.outbound(Proto.UDP, C1, 5000, SRV, 80, 0.0)
    a = nat.outbound(Proto.UDP, C2, 5000, SRV, 80, 0.0)
    b = nat.outbound(Proto.UDP, C3, 5000, SRV, 80, 0.0)
    assert {a.public_port, b.public_port} == {2000, 2001}
    with pytest.raises(PortExhaustedError):
        nat.outbound(Proto.UDP, C4, 5000, SRV, 80, 0.0)
    nat.remove(a.id)
    assert nat.outbound(Proto.UDP, C4, 5000, SRV, 80, 0.0).public_port == a.public_port


def test_outbound_rejects_gre() -> None:
    nat = table()
    with pytest.raises(ValueError, match="GRE"):
        nat.outbound(Proto.GRE, C1, 0, SRV, 0, 0.0)
    assert nat.pool.refcount(C1) == 0


@pytest.mark.parametrize(
    ("inside_port", "remote_port", "name"),
    [(-1, 80, "inside_port"), (65536, 80, "inside_port"), (1000, 70000, "remote_port")],
)
def test_outbound_rejects_bad_ports(inside_port: int, remote_port: int, name: str) -> None:
    nat = table()
    with pytest.raises(ValueError, match=name):
        nat.outbound(Proto.TCP, C1, inside_port, SRV, remote_port, 0.0)
    assert nat.pool.refcount(C1) == 0
