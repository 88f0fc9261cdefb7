"""Ordinary NAPT through the gateway (TCP, UDP, ICMP echo), the policy, and ALG off."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg.events import (
    TCP_ACK,
    TCP_SYN,
    Direction,
    EntryKind,
    Forward,
    GreInboundEntry,
    GreOutboundEntry,
    RemoveEntries,
    SendTcp,
    SessionEntries,
    TcpSegment,
    Translation,
)
from alg.nat import Proto
from tests.unit.pptp_flows import C1, C2, PUBLIC, PUBLIC2, SERVER, SERVER2, gateway, gre

WEB = IPv4Address("198.51.100.80")


def tcp(src: IPv4Address, sport: int, dst: IPv4Address, dport: int, flags: int) -> TcpSegment:
    return TcpSegment(src, sport, dst, dport, 100, 0, flags, 1000)


def test_tcp_session_both_ways() -> None:
    gw = gateway()
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_SYN), 0.0)
    [decision] = out.decisions
    assert isinstance(decision, SessionEntries) and decision.idle_timeout == 1200
    session = decision.session
    assert (session.proto, session.inside_ip, session.public_ip) == (Proto.TCP, C1, PUBLIC)
    assert out.emits == [Forward(Direction.OUTBOUND, Translation(PUBLIC, 5000, WEB, 80))]
    back = gw.handle_tcp(
        Direction.INBOUND, tcp(WEB, 80, PUBLIC, 5000, TCP_SYN | TCP_ACK), 1.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(WEB, 80, C1, 5000))]
    assert back.decisions == [SessionEntries(session, 1200)]
    again = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_ACK), 2.0)
    assert again.decisions == [SessionEntries(session, 1200)]
    assert not gw.is_control_session(session.id)


def test_colliding_ports_get_distinct_public_ports() -> None:
    gw = gateway()
    first = gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0)
    second = gw.handle_udp(Direction.OUTBOUND, C2, 5000, WEB, 53, 0.0)
    t1, t2 = first.emits[0].translation, second.emits[0].translation  # type: ignore[union-attr]
    assert t1.src_port == 5000 and t2.src_port != 5000 and t2.src_ip == PUBLIC
    back = gw.handle_udp(Direction.INBOUND, WEB, 53, PUBLIC, t2.src_port, 1.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(WEB, 53, C2, 5000))]
    assert first.decisions[0].idle_timeout == 120  # type: ignore[union-attr]


def test_tcp_without_session_must_start_with_syn() -> None:
    gw = gateway()
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_ACK), 0.0)
    assert out.emits == [] and out.drop_reason and gw.counters.no_session_drops == 1
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_SYN | TCP_ACK), 0.0)
    assert out.emits == [] and gw.counters.no_session_drops == 2


def test_icmp_echo_is_translated_packet_by_packet() -> None:
    gw = gateway()
    out = gw.handle_icmp_echo(Direction.OUTBOUND, C1, WEB, 77, True, 0.0)
    assert out.decisions == []  # no flow: the controller does every echo
    assert out.emits == [Forward(Direction.OUTBOUND, Translation(PUBLIC, 77, WEB, 0))]
    out2 = gw.handle_icmp_echo(Direction.OUTBOUND, C2, WEB, 77, True, 0.0)
    ident2 = out2.emits[0].translation.src_port  # type: ignore[union-attr]
    assert ident2 != 77
    back = gw.handle_icmp_echo(Direction.INBOUND, WEB, PUBLIC, ident2, False, 1.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(WEB, 0, C2, 77))]
    stray = gw.handle_icmp_echo(Direction.INBOUND, WEB, PUBLIC, 999, False, 1.0)
    assert stray.emits == [] and gw.counters.no_session_drops == 1


@pytest.mark.parametrize(("direction", "is_request"),
                         [(Direction.INBOUND, True), (Direction.OUTBOUND, False)])
def test_icmp_echo_not_started_from_inside_is_dropped_and_counted(
    direction: Direction, is_request: bool
) -> None:
    gw = gateway()
    src, dst = (WEB, PUBLIC) if direction is Direction.INBOUND else (C1, WEB)
    out = gw.handle_icmp_echo(direction, src, dst, 5, is_request, 0.0)
    assert out.emits == [] and out.drop_reason
    assert gw.counters.no_session_drops == 1
    assert len(gw.nat) == 0


@pytest.mark.parametrize("policy", ["open", "strict"])
def test_inbound_never_starts_anything(policy: str) -> None:
    gw = gateway(policy=policy)
    assert gw.handle_tcp(Direction.INBOUND, tcp(WEB, 80, PUBLIC, 5000, TCP_SYN), 0).emits == []
    assert gw.handle_tcp(Direction.INBOUND, tcp(WEB, 5, PUBLIC, 1723, TCP_SYN), 0).emits == []
    assert gw.handle_udp(Direction.INBOUND, WEB, 53, PUBLIC, 5000, 0.0).emits == []
    assert gw.counters.no_session_drops == 3 and len(gw.nat) == 0


def test_strict_policy_lets_only_tcp_to_1723_start() -> None:
    gw = gateway(policy="strict")
    assert gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_SYN), 0).emits == []
    assert gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0).emits == []
    assert gw.handle_icmp_echo(Direction.OUTBOUND, C1, WEB, 1, True, 0.0).emits == []
    assert gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 1723, WEB, 80, TCP_SYN), 0).emits == []
    assert gw.counters.policy_denied == 4 and len(gw.nat) == 0
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, SERVER, 1723, TCP_SYN), 0.0)
    assert isinstance(out.emits[0], SendTcp) and len(gw.connections()) == 1


def test_strict_policy_with_alg_off_lets_tcp_1723_start_as_plain_napt() -> None:
    gw = gateway(policy="strict", alg_enabled=False)
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, SERVER, 1723, TCP_SYN), 0.0)
    assert isinstance(out.decisions[0], SessionEntries)
    assert gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0).emits == []
    assert gw.counters.policy_denied == 1


def test_open_policy_starts_anything_from_inside() -> None:
    gw = gateway(policy="open")
    assert gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_SYN), 0).emits
    assert gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0).emits
    assert gw.handle_icmp_echo(Direction.OUTBOUND, C1, WEB, 1, True, 0.0).emits
    assert gw.counters.policy_denied == 0


def test_idle_sessions_expire_by_tick() -> None:
    gw = gateway()
    udp = gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0).decisions[0]
    tcp_ = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 6000, WEB, 80, TCP_SYN), 0.0).decisions[0]
    gw.handle_icmp_echo(Direction.OUTBOUND, C1, WEB, 9, True, 0.0)
    assert isinstance(udp, SessionEntries) and isinstance(tcp_, SessionEntries)
    assert gw.tick(20.0).decisions == []
    assert gw.tick(20.5).decisions == [RemoveEntries(EntryKind.SESSION, 3)]  # ICMP: no flows
    assert gw.tick(120.0).decisions == []
    assert gw.tick(120.5).decisions == [RemoveEntries(EntryKind.SESSION, udp.session.id)]
    # The switch's counters keep a session alive: growth restarts its clock.
    gw.flow_stats(EntryKind.SESSION, tcp_.session.id, 10, 1000.0)
    gw.flow_stats(EntryKind.SESSION, tcp_.session.id, 10, 1100.0)  # no growth
    gw.flow_stats(EntryKind.SESSION, 999, 10, 1100.0)  # unknown: ignored
    assert gw.tick(2200.0).decisions == []
    assert gw.tick(2200.5).decisions == [RemoveEntries(EntryKind.SESSION, tcp_.session.id)]
    assert len(gw.nat) == 0


def test_napt_allocation_failure_is_counted() -> None:
    gw = gateway(port_min=2000, port_max=2000)
    gw.handle_udp(Direction.OUTBOUND, C1, 5000, WEB, 53, 0.0)
    gw.handle_udp(Direction.OUTBOUND, C2, 5000, WEB, 53, 0.0)  # takes 2000
    out = gw.handle_udp(Direction.OUTBOUND, IPv4Address("192.168.1.9"), 5000, WEB, 53, 0.0)
    assert out.emits == [] and out.errors and out.drop_reason == "allocation failure"
    assert gw.counters.allocation_failures == 1
    seg = tcp(IPv4Address("192.168.1.9"), 5000, SERVER, 1723, TCP_SYN)
    gw.handle_udp(Direction.OUTBOUND, C1, 5000, SERVER, 1723, 0.0)
    gw.handle_tcp(Direction.OUTBOUND, tcp(C2, 5000, WEB, 80, TCP_SYN), 0.0)
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 81, TCP_SYN), 0.0)
    out = gw.handle_tcp(Direction.OUTBOUND, seg, 0.0)
    assert out.emits == [] and out.errors and gw.connections() == []


# ALG off: TCP/1723 is ordinary NAPT and GRE is NATed by address only.

def test_alg_off_control_connection_is_ordinary_napt() -> None:
    gw = gateway(alg_enabled=False)
    out = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, SERVER, 1723, TCP_SYN), 0.0)
    assert isinstance(out.decisions[0], SessionEntries)
    assert out.emits == [Forward(Direction.OUTBOUND, Translation(PUBLIC, 5000, SERVER, 1723))]
    assert gw.connections() == []
    seg = TcpSegment(SERVER, 1723, PUBLIC, 5000, 1, 101, TCP_ACK, 1000, b"\x00\x20" + b"x" * 30)
    back = gw.handle_tcp(Direction.INBOUND, seg, 1.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(SERVER, 1723, C1, 5000))]


def test_alg_off_gre_second_client_steals_the_inbound_binding() -> None:
    gw = gateway(alg_enabled=False)
    out = gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 0.0)
    up1, down1 = out.decisions
    assert isinstance(up1, GreOutboundEntry) and isinstance(down1, GreInboundEntry)
    assert (up1.client_ip, up1.server_ip, up1.public_ip) == (C1, SERVER, PUBLIC)
    assert (down1.server_ip, down1.public_ip, down1.client_ip) == (SERVER, PUBLIC, C1)
    assert out.emits == [Forward(Direction.OUTBOUND, Translation(PUBLIC, 0, SERVER, 0))]
    back = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(5), 1.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(SERVER, 0, C1, 0))]
    assert back.decisions == [down1]

    out = gw.handle_gre(Direction.OUTBOUND, C2, SERVER, gre(701), 2.0)
    _, down2 = out.decisions
    assert down2.client_ip == C2 and down2.entry_id != down1.entry_id  # type: ignore[union-attr]
    # Whatever Call ID the server uses, everything now goes to C2: C1's call is broken.
    for key in (5, 6):
        back = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(key), 3.0)
        assert back.emits == [Forward(Direction.INBOUND, Translation(SERVER, 0, C2, 0))]
    assert {b.client_ip for b in gw.plain_gre()} == {C1, C2}
    # C1 sending again takes it back.
    gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 4.0)
    back = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(5), 5.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(SERVER, 0, C1, 0))]


def test_alg_off_gre_from_an_unknown_server_is_dropped() -> None:
    gw = gateway(alg_enabled=False)
    out = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(5), 0.0)
    assert out.emits == [] and gw.counters.gre_unknown_dropped == 1
    assert gw.plain_gre() == []


def test_alg_off_gre_under_strict_policy_is_denied() -> None:
    """Current behaviour (see the report): strict + ALG off lets no GRE start at all."""
    gw = gateway(alg_enabled=False, policy="strict")
    out = gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 0.0)
    assert out.emits == [] and gw.counters.policy_denied == 1


def test_alg_off_gre_bindings_age_out() -> None:
    gw = gateway(alg_enabled=False, public_ips=(PUBLIC, PUBLIC2))
    out = gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 0.0)
    up, down = out.decisions
    up2, down2 = gw.handle_gre(Direction.OUTBOUND, C2, SERVER2, gre(700), 0.0).decisions
    assert gw.nat.pool.lookup(C1) == PUBLIC
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 0, 100.0)  # type: ignore[union-attr]
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 12, 200.0)  # type: ignore[union-attr]
    aged = gw.tick(300.0)
    assert set(aged.decisions) == {
        RemoveEntries(EntryKind.GRE_OUTBOUND, up2.entry_id),  # type: ignore[union-attr]
        RemoveEntries(EntryKind.GRE_INBOUND, down2.entry_id),  # type: ignore[union-attr]
    }
    assert [b.client_ip for b in gw.plain_gre()] == [C1]
    out = gw.tick(500.0)
    assert set(out.decisions) == {
        RemoveEntries(EntryKind.GRE_OUTBOUND, up.entry_id),  # type: ignore[union-attr]
        RemoveEntries(EntryKind.GRE_INBOUND, down.entry_id),  # type: ignore[union-attr]
    }
    assert gw.plain_gre() == [] and gw.nat.pool.lookup(C1) is None
    assert gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(5), 501.0).emits == []


def test_alg_off_gre_idle_binding_ages_out_although_the_switch_reports_both_entries() -> None:
    """The up and down entries report different counts; no growth is no growth."""
    gw = gateway(alg_enabled=False)
    up, down = gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 0.0).decisions
    for t in range(10, 400, 10):
        gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 50, float(t))  # type: ignore[union-attr]
        gw.flow_stats(EntryKind.GRE_INBOUND, down.entry_id, 40, float(t))  # type: ignore[union-attr]
    assert gw.tick(400.0).decisions != []


def test_alg_off_stolen_binding_ageing_keeps_the_thief() -> None:
    gw = gateway(alg_enabled=False)
    gw.handle_gre(Direction.OUTBOUND, C1, SERVER, gre(700), 0.0)
    gw.handle_gre(Direction.OUTBOUND, C2, SERVER, gre(701), 200.0)
    gw.tick(300.0)  # C1's binding ages out; the inbound binding belongs to C2
    back = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(5), 301.0)
    assert back.emits == [Forward(Direction.INBOUND, Translation(SERVER, 0, C2, 0))]


def test_flow_stats_for_pipeline_and_unknown_entries_are_ignored() -> None:
    gw = gateway()
    gw.flow_stats(EntryKind.PIPELINE, 0, 100, 1.0)
    gw.flow_stats(EntryKind.GRE_OUTBOUND, 42, 100, 1.0)
    gw.flow_stats(EntryKind.GRE_INBOUND, 42, 100, 1.0)
    assert gw.tick(2.0).decisions == []


def test_packets_punted_just_after_a_session_began_do_not_install_its_entries_again() -> None:
    """The switch's datapath still punts a new session's next packets until it
    re-evaluates its cached flows; each would otherwise send the two entries again."""
    gw = gateway()
    first = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_SYN), 0.0)
    [entries] = first.decisions
    again = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_ACK), 0.5)
    back = gw.handle_tcp(Direction.INBOUND, tcp(WEB, 80, PUBLIC, 5000, TCP_ACK), 0.9)
    assert again.decisions == [] and back.decisions == []
    assert [type(e) for e in again.emits + back.emits] == [Forward, Forward]
    later = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_ACK), 1.5)
    assert later.decisions == [entries]
    gw.entry_failed(entries, 1.6)
    retry = gw.handle_tcp(Direction.OUTBOUND, tcp(C1, 5000, WEB, 80, TCP_ACK), 1.7)
    assert retry.decisions == [entries]
