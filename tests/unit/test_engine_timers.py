"""The clock: server-map idle, flow statistics, Call ID hold-down, calls never answered."""

from __future__ import annotations

from ipaddress import IPv4Address

from alg.calls import CallState
from alg.engine import Gateway
from alg.events import Direction, EntryKind, GreInboundEntry, GreOutboundEntry, RemoveEntries
from tests.unit.pptp_flows import (
    C1,
    C2,
    C3,
    PUBLIC,
    SERVER,
    ControlLink,
    ccrq,
    cdn,
    down_gre,
    gateway,
    icrq,
    ocrq,
    sent_gre,
    up_gre,
)

A = 5


def one_call(gw: Gateway, client: IPv4Address = C1, a: int = A, c: int = 700,
             port: int = 40000) -> tuple[ControlLink, GreOutboundEntry, GreInboundEntry]:
    link = ControlLink(gw, client, port).start()
    link.outgoing_call(a, c)
    up, down = link.outputs[-1].decisions
    assert isinstance(up, GreOutboundEntry) and isinstance(down, GreInboundEntry)
    return link, up, down


def test_server_map_ages_out_without_traffic() -> None:
    gw = gateway()
    _, up, down = one_call(gw)
    [call] = gw.calls()
    assert gw.tick(299.0).decisions == []
    out = gw.tick(300.0)
    assert set(out.decisions) == {RemoveEntries(EntryKind.GRE_OUTBOUND, up.entry_id),
                                  RemoveEntries(EntryKind.GRE_INBOUND, down.entry_id)}
    # Only the entries go: the call keeps its Call IDs while its connection lives.
    assert out.logs == [] and call.state is CallState.ESTABLISHED and call.data_idle
    assert gw.connections()  # the control connection lives on
    assert gw.tick(400.0).decisions == []  # aged once
    late = down_gre(gw, PUBLIC, A, 401.0)
    assert [g.dst_ip for g in sent_gre(late)] == [C1]
    assert set(late.decisions) == {up, down}  # the next packet reinstalls the entries
    assert gw.counters.gre_unknown_dropped == 0 and not call.data_idle


def test_flow_stats_growth_defers_ageing() -> None:
    gw = gateway()
    _, up, down = one_call(gw)
    gw.flow_stats(EntryKind.GRE_INBOUND, down.entry_id, 0, 100.0)  # zero: not traffic
    gw.flow_stats(EntryKind.GRE_INBOUND, down.entry_id, 7, 200.0)
    assert gw.tick(300.0).decisions == []
    gw.flow_stats(EntryKind.GRE_INBOUND, down.entry_id, 7, 400.0)  # no growth
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 3, 450.0)
    assert gw.tick(500.0).decisions == []
    [call] = gw.calls()
    assert gw.gre_flow_packets(call) == (3, 7)
    assert gw.tick(749.0).decisions == []
    assert set(gw.tick(750.0).decisions) == {RemoveEntries(EntryKind.GRE_OUTBOUND, up.entry_id),
                                             RemoveEntries(EntryKind.GRE_INBOUND, down.entry_id)}


def idle_clients(gw: Gateway) -> list[IPv4Address]:
    return [c.conn.client_ip for c in gw.calls() if c.data_idle]


def test_controller_path_traffic_keeps_its_call_alive() -> None:
    gw = gateway()
    up1 = one_call(gw, C1, port=40000)[1]
    one_call(gw, C2, port=40001)
    for t in range(50, 500, 50):
        down_gre(gw, PUBLIC, A + 1, float(t))  # only C2's call carries data
        up_gre(gw, C2, 700, float(t))
    out = gw.tick(500.0)
    # C1's data channel is idle: its own entry goes, the pair's it shares with C2 stays.
    assert out.decisions == [RemoveEntries(EntryKind.GRE_OUTBOUND, up1.entry_id)]
    assert idle_clients(gw) == [C1] and out.logs == []
    [call] = [c for c in gw.calls() if not c.data_idle]
    assert call.conn.client_ip == C2 and call.inbound_packets == 9


def test_controller_path_pair_counters_do_not_keep_an_idle_call_alive() -> None:
    """Both calls share the punt entry of the pair; only C2 carries data (via the controller)."""
    gw = gateway()
    one_call(gw, C1, port=40000)
    _, _, down2 = one_call(gw, C2, port=40001)
    for t in range(50, 500, 50):
        down_gre(gw, PUBLIC, A + 1, float(t))
        up_gre(gw, C2, 700, float(t))
        gw.flow_stats(EntryKind.GRE_INBOUND, down2.entry_id, t, float(t))
    gw.tick(500.0)
    assert idle_clients(gw) == [C1]


def test_call_ids_are_held_down_after_release() -> None:
    gw = gateway()
    l1, _, _ = one_call(gw, C1)
    l1.now = 10.0
    l1.client_send(ccrq(A))
    l2 = ControlLink(gw, C2, 40001, now=40.0).start()
    l2.client_send(ocrq(A))
    assert l2.call_id_to_server() == A + 1
    l3 = ControlLink(gw, C3, 40002, now=69.0).start()
    l3.client_send(ocrq(A))
    assert l3.call_id_to_server() == A + 2
    gw.tick(70.0)
    l4 = ControlLink(gw, IPv4Address("192.168.1.4"), 40003, now=70.0).start()
    l4.client_send(ocrq(A))
    assert l4.call_id_to_server() == A  # hold-down over: the client's own ID again


def test_closed_calls_are_forgotten_after_hold_down() -> None:
    gw = gateway()
    link, _, _ = one_call(gw)
    link.now = 5.0
    link.client_send(ccrq(A))
    conn = gw.connections()[0]
    assert len(conn.calls.closed) == 1
    gw.tick(64.0)
    assert len(conn.calls.closed) == 1
    gw.tick(65.0)
    assert conn.calls.closed == []
    link.server_send(cdn(A))
    assert gw.counters.unknown_call_ids == 1


def test_unanswered_calls_age_out_without_flows() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.client_send(ocrq(A))
    link.server_send(icrq(9))
    out = gw.tick(300.0)
    assert out.decisions == [] and out.logs == []
    assert list(gw.calls()) == []
    assert gw.call_ids.held_down(PUBLIC, SERVER, A, 300.0)


def test_flow_removed_entries_reappear_when_traffic_is_punted() -> None:
    gw = gateway()
    _, up, down = one_call(gw)
    out = up_gre(gw, C1, 700, 10.0)
    assert out.decisions == [up]
    out = down_gre(gw, PUBLIC, A, 11.0)
    assert out.decisions == [down]
    [call] = gw.calls()
    assert call.last_data == 11.0 and call.controller_path_packets == 2


def test_flow_removed_forgets_the_count_so_a_reinstalled_entry_counts_afresh() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.outgoing_call(7, 70)
    up = next(d for out in link.outputs for d in out.decisions if isinstance(d, GreOutboundEntry))
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 50, now=10)
    [call] = gw.calls()
    assert call.last_data == 10
    gw.flow_removed(EntryKind.GRE_OUTBOUND, up.entry_id)
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 3, now=20)
    assert call.last_data == 20


def test_stats_of_a_session_that_is_gone_leave_no_state() -> None:
    gw = gateway()
    out = gw.handle_udp(Direction.OUTBOUND, C1, 5000, SERVER, 53, now=0)
    assert out.decisions
    gw.tick(now=10_000)
    gw.flow_stats(EntryKind.SESSION, 1, 5, now=10_001)
    assert gw.nat.get(1) is None and gw.session_counts(1) is None
    gw.flow_removed(EntryKind.SESSION, 1)


def test_controller_path_packets_are_not_counted_twice() -> None:
    gw = gateway()
    one = ControlLink(gw, C1, 40000).start()
    b1 = one.outgoing_call(7, 70)
    two = ControlLink(gw, C2, 40001).start()
    two.outgoing_call(7, 71)
    assert one.public_ip is not None
    down = next(d for out in two.outputs for d in out.decisions
                if isinstance(d, GreInboundEntry))
    for _ in range(3):
        down_gre(gw, one.public_ip, b1, now=1)
    gw.flow_stats(EntryKind.GRE_INBOUND, down.entry_id, 3, now=2)
    first = next(c for c in gw.calls() if c.conn.client_ip == C1)
    second = next(c for c in gw.calls() if c.conn.client_ip != C1)
    assert gw.gre_flow_packets(first)[1] + first.inbound_packets == 3
    assert gw.gre_flow_packets(second)[1] + second.inbound_packets == 0


def test_one_session_entry_going_is_no_traffic_of_the_session() -> None:
    # The app sums a session's two entries; one of them idling out must not look like
    # growth of the sum at the next poll (found by the closed-loop tests).
    gw = gateway(udp_idle=60)
    gw.handle_udp(Direction.OUTBOUND, C1, 5000, SERVER, 53, now=0)
    gw.flow_stats(EntryKind.SESSION, 1, 1 + 3, now=5, byte_count=400)  # out 1, in 3
    gw.flow_removed(EntryKind.SESSION, 1, packets=1, byte_count=100)  # the outbound one
    gw.flow_stats(EntryKind.SESSION, 1, 3, now=50, byte_count=300)  # the inbound, unchanged
    assert gw.session_counts(1) == (3, 300)
    out = gw.tick(66)
    assert out.decisions == [RemoveEntries(EntryKind.SESSION, 1)]  # aged from t=5
