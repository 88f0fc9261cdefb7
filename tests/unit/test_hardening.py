"""Attacks on the core, played as an attacker would; each failed before its fix.

Spoofed handshakes and resets, data before the handshake, finely cut streams, late GRE
on a pair that returns to the flow path, server-map ageing that handed a live call's
Call ID to another client, state that one inside host could fill, and inside addresses
that one inside port could claim.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from alg import display
from alg.callid import CALL_ID_SPACE
from alg.calls import CallState
from alg.events import (
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    Direction,
    GreInboundEntry,
    GreOutboundEntry,
    SendTcp,
    TcpSegment,
)
from alg.servermap import GrePath
from alg.snapshot import Snapshot
from alg.stream import MAX_GAP_PIECES
from tests.unit.pptp_flows import (
    C1,
    C2,
    C3,
    PUBLIC,
    SEQ_MOD,
    SERVER,
    ControlLink,
    ccrq,
    down_gre,
    echo_request,
    gateway,
    ocrp,
    ocrq,
    sccrp,
    sccrq,
    sent_gre,
    sent_tcp,
    up_gre,
)

A = 4242


def test_a_spoofed_syn_ack_is_dropped_and_the_real_one_still_opens() -> None:
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=TCP_SYN, ack=0)
    spoof = link.send(link.server, flags=TCP_SYN | TCP_ACK, seq=12345, ack=999)
    assert spoof.emits == [] and gw.counters.out_of_window_drops == 1
    real = link.send(link.server, flags=TCP_SYN | TCP_ACK, ack=link.client.isn + 1)
    assert [e.segment.seq for e in sent_tcp(real)] == [link.server.isn]
    link.send(link.client, flags=TCP_ACK)
    link.client_send(echo_request())
    assert link.server.stream == echo_request()
    link.server_send(echo_request(9))
    assert link.client.stream == echo_request(9)


def test_an_rst_in_the_window_but_not_exact_gets_a_challenge_ack() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.outgoing_call(A, 9)
    expected = link.server.snd_nxt
    guess = link.send(link.server, flags=TCP_RST, seq=expected + 1000, ack=0)
    [challenge] = sent_tcp(guess)
    assert challenge.direction is Direction.OUTBOUND  # back to the RST's sender, the server
    assert challenge.segment.flags == TCP_ACK
    assert challenge.segment.ack == expected  # where an exact RST must be
    assert (challenge.segment.src_ip, challenge.segment.dst_ip) == (PUBLIC, SERVER)
    assert link.client.resets == [] and gw.calls_in_progress == 1
    assert gw.counters.challenge_acks == 1
    exact = link.send(link.server, flags=TCP_RST, seq=challenge.segment.ack, ack=0)
    assert sent_tcp(exact) and gw.connections() == [] and gw.calls_in_progress == 0


def test_control_messages_before_the_handshake_completes_reach_no_call() -> None:
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=TCP_SYN, ack=0)
    early = link.client_send(ocrq(A) * 3)
    assert [e.segment.payload for e in sent_tcp(early)] == [b""]
    assert list(gw.calls()) == [] and gw.call_ids.count_in_use() == 0


def test_one_byte_pieces_beyond_a_gap_are_capped() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    start = link.sent(link.client)
    data = ocrq(A) * 3
    for offset in range(1, 2 * MAX_GAP_PIECES + 1):  # every byte but the first, one by one
        link.send(link.client, data[offset:offset + 1],
                  seq=link.seq_at(link.client, start + offset))
    assert gw.counters.buffer_limit_drops == MAX_GAP_PIECES
    [conn] = gw.connections()
    assert conn.relay.outbound.held == MAX_GAP_PIECES
    link.send(link.client, data[:1], seq=link.seq_at(link.client, start))
    assert conn.relay.outbound.received == start + 1 + MAX_GAP_PIECES  # the run joins up


def test_late_gre_of_a_released_id_never_reaches_the_client_left_on_the_pair() -> None:
    gw = gateway(call_id_hold_down=60)
    first = ControlLink(gw, C1, 40000).start()
    first.outgoing_call(A, 700)
    second = ControlLink(gw, C2, 40001).start()
    b2 = second.outgoing_call(A, 701)
    assert b2 != A and gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    second.now = 10.0
    out = second.client_send(ccrq(A))
    # The pair keeps the controller path while b2 is held down: its late GRE is dropped.
    assert [d.client_ip for d in out.decisions if isinstance(d, GreInboundEntry)] == []
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    late = down_gre(gw, PUBLIC, b2, 11.0)
    assert sent_gre(late) == [] and gw.counters.gre_unknown_dropped == 1
    assert [g.dst_ip for g in sent_gre(down_gre(gw, PUBLIC, A, 12.0))] == [C1]
    assert gw.tick(69.0).decisions == []
    back = gw.tick(70.0)  # hold-down over: the flow path again
    assert [d.client_ip for d in back.decisions if isinstance(d, GreInboundEntry)] == [C1]
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW


def test_an_idle_data_channel_keeps_its_call_and_call_id_while_the_connection_lives() -> None:
    gw = gateway(gre_idle=300)
    first = ControlLink(gw, C1, 40000).start()
    first.outgoing_call(A, 700)
    out = gw.tick(400.0)
    assert out.logs == [] and [c.state for c in gw.calls()] == [CallState.ESTABLISHED]
    second = ControlLink(gw, C2, 40001, now=401.0).start()
    assert second.outgoing_call(A, 701) != A  # A is still the first call's
    assert [e.public_call_id for e in display.server_map(gw, 401.0)] == [A + 1, A + 1]
    [gre] = sent_gre(down_gre(gw, PUBLIC, A, 402.0))
    assert gre.dst_ip == C1  # late data still reaches its own call
    assert sorted(e.public_call_id for e in display.server_map(gw, 402.0)) == [A, A, A + 1, A + 1]


def test_the_gateways_own_address_cannot_be_pinned() -> None:
    from alg.config import load
    from alg.neighbours import ARP_REPLY, ArpMessage, NeighbourTable, Route, Side

    config = load({
        "inside_ports": ["a", "b"], "outside_port": "c", "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254", "outside_subnet": "203.0.113.0/24",
        "public_ips": ["203.0.113.2"],
    })
    table: NeighbourTable[str] = NeighbourTable(config)
    table.set_ports([1, 2], 100)
    gateway_ip = IPv4Address("192.168.1.254")
    table.arp(1, "0a:00:00:00:00:09", ArpMessage(ARP_REPLY, "0a:00:00:00:00:09", gateway_ip,
                                                 gateway_ip), 0.0)
    assert gateway_ip not in table.hosts(Side.INSIDE)
    assert table.admit_inside(1, "0a:00:00:00:00:09", gateway_ip, SERVER) is Route.SPOOFED
    assert table.counters.spoofed_drops == 2
    assert table.admit_inside(2, "0a:00:00:00:00:01", C1, SERVER) is Route.OUTSIDE


def test_inside_pins_age_so_a_moved_host_is_found_again() -> None:
    from alg.config import load
    from alg.neighbours import PIN_SECONDS, NeighbourTable, Route

    config = load({
        "inside_ports": ["a", "b"], "outside_port": "c", "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254", "outside_subnet": "203.0.113.0/24",
        "public_ips": ["203.0.113.2"],
    })
    table: NeighbourTable[str] = NeighbourTable(config)
    table.set_ports([1, 2], 100)
    assert table.admit_inside(1, "0a:00:00:00:00:01", C1, SERVER, now=0.0) is Route.OUTSIDE
    assert table.admit_inside(2, "0a:00:00:00:00:01", C1, SERVER, now=10.0) is Route.SPOOFED
    table.tick(PIN_SECONDS + 1.0)
    assert table.admit_inside(2, "0a:00:00:00:00:01", C1, SERVER,
                              now=PIN_SECONDS + 2.0) is Route.OUTSIDE


def test_seq_arithmetic_of_the_challenge_wraps() -> None:
    gw = gateway()
    link = ControlLink(gw, server_isn=SEQ_MOD - 3).start()
    expected = link.server.snd_nxt
    assert expected < 1000  # the server's sequence numbers wrapped
    guess = link.send(link.server, flags=TCP_RST, seq=(expected + 7) % SEQ_MOD, ack=0)
    [challenge] = sent_tcp(guess)
    assert challenge.segment.ack == expected


# Bounds: one inside host cannot take what the others need.

def test_calls_per_control_connection_are_bounded() -> None:
    gw = gateway(max_calls_per_connection=3)
    link = ControlLink(gw, C1, 40000).start()
    for a in range(3):
        link.outgoing_call(100 + a, 700 + a)
    out = link.client_send(ocrq(200))
    assert gw.counters.refused_calls == 1 and gw.counters.connections_reset == 1
    assert any("max_calls_per_connection" in e for e in out.errors)
    assert gw.connections() == [] and gw.call_ids.count_in_use() == 0


def test_calls_set_up_and_cleared_in_a_loop_cannot_take_the_pairs_call_ids() -> None:
    share = 8
    gw = gateway(max_calls_per_connection=2, max_call_ids_per_host=share)
    link = ControlLink(gw, C1, 40000).start()
    for n in range(share):  # each ended call's b stays held down
        link.outgoing_call(n, 700 + n)
        link.client_send(ccrq(n))
    assert gw.call_ids.count_held_down() == share
    link.client_send(ocrq(99))
    assert gw.counters.refused_calls == 1 and gw.connections() == []
    assert gw.call_ids.count_held_down() == share  # no more than that


def test_one_host_churning_connections_cannot_take_the_pairs_call_ids() -> None:
    """One host opens a connection, sets up a call, clears it and resets the connection,
    again and again, with the default options: its held-down IDs count against its share
    across connections, so it is refused at its share and another host's new call to the
    same server is set up every time, never refused, never reset. Before the fix the
    bound was per connection and forgotten at the reset: the churner took the pair's
    65,536 IDs."""
    gw = gateway()
    share = gw.config.max_call_ids_per_host
    victim = ControlLink(gw, C2, 40000).start()
    refused_at = None
    for n in range(share + 1):
        churn = ControlLink(gw, C1, 10000 + n % 50000, client_isn=n * 7919).start()
        churn.client_send(ocrq(n % 65536))
        if gw.counters.refused_calls:
            refused_at = n
            break
        churn.server_send(ocrp(700, churn.call_id_to_server()))
        churn.client_send(ccrq(n % 65536))
        churn.rst(churn.client)
        if n % 256 == 0:
            assert victim.outgoing_call(n % 1000, 9000 + n) is not None
            victim.client_send(ccrq(n % 1000))
    assert refused_at == share
    assert gw.call_ids.held_by(PUBLIC, SERVER, C1) == share
    assert gw.counters.connections_reset == 1  # the churner's, at its refusal
    b = victim.outgoing_call(4242, 700)
    [call] = [c for c in gw.calls() if c.conn.client_ip == C2]
    assert call.state is CallState.ESTABLISHED and call.public_call_id == b


def test_one_host_asking_for_calls_to_many_servers_is_held_to_its_live_calls() -> None:
    """One host asks for calls on connections to many servers (each request takes a call
    and a Call ID before any reply): it is refused at ``max_calls_per_host``, and another
    host's call is set up (before, with 2,048 calls a connection, one host could take all
    of ``max_calls`` and the next host's request reset its connection)."""
    gw = gateway()
    limit = gw.config.max_calls_per_host
    servers = [IPv4Address(f"198.51.100.{n}") for n in range(1, 11)]
    asked = 0
    for server in servers:
        link = ControlLink(gw, C1, 40000 + asked, server).start()
        for _ in range(limit // 4):
            link.client_send(ocrq(asked % 65536))
            asked += 1
            if gw.counters.refused_calls:
                break
        if gw.counters.refused_calls:
            break
    assert asked == limit + 1 and len(list(gw.calls())) == limit  # the 129th asked alone
    victim = ControlLink(gw, C2, 40000).start()
    assert victim.outgoing_call(4242, 700) == 4242
    assert gw.counters.refused_calls == 1 and gw.counters.connections_reset == 1


def test_the_default_bounds_leave_half_of_each_scarce_resource_to_other_ports() -> None:
    """One inside port pins at most ``max_pins_per_port`` addresses (``alg.neighbours``),
    so with the defaults the hosts behind one port hold at most half of a pair's Call IDs
    and half of the live calls."""
    config = gateway().config
    pins = config.max_pins_per_port
    assert pins * config.max_call_ids_per_host <= CALL_ID_SPACE // 2
    assert pins * config.max_calls_per_host <= config.max_calls // 2
    assert config.max_calls_per_connection <= config.max_calls_per_host


def test_one_host_flooding_calls_leaves_call_ids_for_the_others() -> None:
    gw = gateway(max_calls_per_connection=4, max_connections_per_host=2)
    for port in (40000, 40001):
        flood = ControlLink(gw, C1, port).start()
        for a in range(4):
            flood.client_send(ocrq(a))  # calls the server never answers
    third = ControlLink(gw, C1, 40002)
    refused = third.send(third.client, flags=TCP_SYN, ack=0)
    [rst] = sent_tcp(refused)
    assert rst.direction is Direction.INBOUND and rst.segment.flags == TCP_RST | TCP_ACK
    assert rst.segment.ack == third.client.isn + 1
    assert gw.counters.refused_connections == 1
    assert gw.call_ids.count_in_use() == 8  # all that one host can hold
    victim = ControlLink(gw, C2, 40000).start()
    assert victim.outgoing_call(0, 900) == 8  # 0..7 are the flood's, the next is free


def test_calls_in_all_are_bounded() -> None:
    gw = gateway(max_calls=2)
    ControlLink(gw, C1, 40000).start().outgoing_call(1, 701)
    ControlLink(gw, C2, 40000).start().outgoing_call(2, 702)
    third = ControlLink(gw, C3, 40000).start()
    third.client_send(ocrq(3))
    assert gw.counters.refused_calls == 1 and gw.calls_in_progress == 2


def test_unfinished_handshakes_per_host_are_bounded_and_forgotten() -> None:
    gw = gateway(max_handshakes_per_host=2, tcp_handshake=30)
    for port in (40000, 40001):
        pending = ControlLink(gw, C1, port)
        pending.send(pending.client, flags=TCP_SYN, ack=0)
    late = ControlLink(gw, C1, 40002)
    assert sent_tcp(late.send(late.client, flags=TCP_SYN, ack=0))[0].segment.flags & TCP_RST
    assert gw.counters.refused_connections == 1
    ControlLink(gw, C2, 40000).start()  # another host is not affected
    gw.tick(30.0)
    assert [c.session.inside_ip for c in gw.connections()] == [C2]
    again = ControlLink(gw, C1, 40002, now=31.0)
    assert sent_tcp(again.send(again.client, flags=TCP_SYN, ack=0))[0].direction is (
        Direction.OUTBOUND
    )


def test_nat_sessions_per_host_and_in_all_are_bounded() -> None:
    gw = gateway(max_sessions_per_host=2, max_sessions=3)
    for port in (5000, 5001):
        assert gw.handle_udp(Direction.OUTBOUND, C1, port, SERVER, 53, 0.0).emits
    over = gw.handle_udp(Direction.OUTBOUND, C1, 5002, SERVER, 53, 0.0)
    assert over.emits == [] and over.drop_reason == "limit reached"
    syn = TcpSegment(C1, 33000, SERVER, 80, 1000, 0, TCP_SYN, 65535)
    [rst] = gw.handle_tcp(Direction.OUTBOUND, syn, 0.0).emits
    assert isinstance(rst, SendTcp) and rst.segment.flags == TCP_RST | TCP_ACK
    assert (rst.segment.dst_ip, rst.segment.dst_port, rst.segment.ack) == (C1, 33000, 1001)
    assert gw.handle_udp(Direction.OUTBOUND, C2, 5000, SERVER, 53, 0.0).emits
    full = gw.handle_udp(Direction.OUTBOUND, C2, 5001, SERVER, 53, 0.0)
    assert full.emits == [] and any("max_sessions" in e for e in full.errors)
    assert gw.counters.refused_sessions == 3


# Client -> server GRE and other clients' server Call IDs.

def test_by_default_the_outbound_entry_is_keyless_as_in_linux() -> None:
    gw = gateway()
    ControlLink(gw, C1, 40000).start().outgoing_call(1, 701)
    out = ControlLink(gw, C2, 40000).start()
    out.outgoing_call(2, 702)
    entries = [d for o in out.outputs for d in o.decisions if isinstance(d, GreOutboundEntry)]
    assert [(e.client_ip, e.server_ip) for e in entries] == [(C2, SERVER)]  # any key


def test_strict_outbound_gre_carries_only_the_clients_own_server_call_ids() -> None:
    gw = gateway(gre_outbound_strict=True)
    ControlLink(gw, C1, 40000).start().outgoing_call(1, 701)
    attacker = ControlLink(gw, C2, 40000).start()
    attacker.outgoing_call(2, 702)
    assert not any(isinstance(d, GreOutboundEntry)
                   for o in attacker.outputs for d in o.decisions)  # no entry: checked here
    own = up_gre(gw, C2, 702, 1.0)
    assert [(g.src_ip, g.dst_ip) for g in sent_gre(own)] == [(PUBLIC, SERVER)]
    assert own.decisions == []
    stolen = up_gre(gw, C2, 701, 1.0)  # C1's call at the server
    assert sent_gre(stolen) == [] and gw.counters.gre_unknown_dropped == 1
    [call] = [c for c in gw.calls() if c.conn.client_ip == C2]
    assert display.gre_paths(gw, call) == (GrePath.CONTROLLER, GrePath.CONTROLLER)


def test_neighbours_beyond_the_cap_are_refused_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alg import neighbours
    from alg.config import load

    monkeypatch.setattr(neighbours, "MAX_NEIGHBOURS", 2)
    table: neighbours.NeighbourTable[str] = neighbours.NeighbourTable(load({
        "inside_ports": ["a", "b"], "outside_port": "c", "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254", "outside_subnet": "203.0.113.0/24",
        "public_ips": ["203.0.113.2"],
    }))
    table.set_ports([1, 2], 100)
    mac = "0a:00:00:00:00:01"
    routes = [table.admit_inside(1, mac, IPv4Address(f"192.168.1.{i}"), SERVER)
              for i in (1, 2, 3)]
    assert routes == [neighbours.Route.OUTSIDE] * 2 + [neighbours.Route.SPOOFED]
    for i in (10, 11, 12):
        table.arp(100, mac, neighbours.ArpMessage(
            neighbours.ARP_REPLY, mac, IPv4Address(f"203.0.113.{i}"), PUBLIC), 0.0)
    assert len(table.hosts(neighbours.Side.OUTSIDE)) == 2
    assert table.counters.neighbours_refused == 2


def test_one_port_claiming_the_subnet_by_arp_locks_no_other_host_out() -> None:
    from alg.config import load
    from alg.neighbours import (
        ARP_REPLY,
        ARP_REQUEST,
        L2,
        ArpMessage,
        NeighbourTable,
        Route,
        Side,
    )

    table: NeighbourTable[str] = NeighbourTable(load({
        "inside_ports": ["a", "b"], "outside_port": "c", "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254", "outside_subnet": "203.0.113.0/24",
        "public_ips": ["203.0.113.2"],
    }))
    table.set_ports([1, 2], 100)
    gateway_ip, bad, good = IPv4Address("192.168.1.254"), "0a:00:00:00:00:66", "0a:00:00:00:00:02"
    for i in range(1, 254):  # gratuitous ARP for every address, the victim's included
        ip = IPv4Address(f"192.168.1.{i}")
        table.arp(1, bad, ArpMessage(ARP_REPLY, bad, ip, ip), 0.0)
    out = table.arp(2, good, ArpMessage(ARP_REQUEST, good, C2, gateway_ip), 1.0)
    assert [r.target_ip for r in out.replies] == [C2]
    table.arp(1, bad, ArpMessage(ARP_REPLY, bad, C2, C2), 1.5)  # ARP alone: taken again
    assert table.admit_inside(2, good, C2, SERVER, now=2.0) is Route.OUTSIDE
    assert table.lookup(Side.INSIDE, C2) == L2(2, good)
    table.arp(1, bad, ArpMessage(ARP_REPLY, bad, C2, C2), 3.0)  # C2 spoke: it holds
    assert table.admit_inside(1, bad, C2, SERVER, now=3.0) is Route.SPOOFED
    assert table.lookup(Side.INSIDE, C2) == L2(2, good)
    assert table.counters.spoofed_drops == 2


def test_one_port_sending_from_many_sources_pins_at_most_its_limit() -> None:
    from alg.config import AlgConfig, load
    from alg.neighbours import ARP_REQUEST, ArpMessage, NeighbourTable, Route

    table: NeighbourTable[str] = NeighbourTable(load({
        "inside_ports": ["a", "b"], "outside_port": "c", "inside_subnet": "192.168.1.0/24",
        "inside_gateway": "192.168.1.254", "outside_subnet": "203.0.113.0/24",
        "public_ips": ["203.0.113.2"],
    }))
    table.set_ports([1, 2], 100)
    limit, bad, good = AlgConfig().max_pins_per_port, "0a:00:00:00:00:66", "0a:00:00:00:00:02"
    routes = [table.admit_inside(1, bad, IPv4Address(f"192.168.1.{i}"), SERVER)
              for i in range(1, 254)]
    assert routes == [Route.OUTSIDE] * limit + [Route.SPOOFED] * (253 - limit)
    assert table.counters.pins_refused == 253 - limit
    victim = IPv4Address("192.168.1.200")
    out = table.arp(2, good, ArpMessage(ARP_REQUEST, good, victim, IPv4Address("192.168.1.254")),
                    1.0)
    assert [r.target_ip for r in out.replies] == [victim]
    assert table.admit_inside(2, good, victim, SERVER, now=1.0) is Route.OUTSIDE
    assert table.counters.spoofed_drops == 0 and table.counters.neighbours_refused == 0


def test_an_idle_data_channel_shows_no_pptp_gre_session() -> None:
    gw = gateway(gre_idle=300)
    ControlLink(gw, C1, 40000).start().outgoing_call(A, 700)
    down_gre(gw, PUBLIC, A, 10.0)  # data flowed: the session table shows it
    assert [e.protocol for e in display.session_table(gw, 20.0)].count("pptp-gre") == 1
    gw.tick(400.0)
    assert [e.protocol for e in display.session_table(gw, 400.0)].count("pptp-gre") == 0
    down_gre(gw, PUBLIC, A, 401.0)
    assert [e.protocol for e in display.session_table(gw, 401.0)].count("pptp-gre") == 1


def _victim_call() -> tuple[ControlLink, int]:
    gw = gateway()
    link = ControlLink(gw).start()
    b = link.outgoing_call(A, 700)
    return link, b


def _victim_unharmed(link: ControlLink, b: int) -> None:
    gw = link.gw
    [call] = gw.calls()
    assert call.state is CallState.ESTABLISHED and call.public_call_id == b
    [sent] = sent_gre(down_gre(gw, PUBLIC, b, link.now))
    assert sent.dst_ip == C1
    link.client_send(echo_request())
    assert link.server.stream.endswith(echo_request())


def test_a_syn_from_the_victims_own_endpoint_passes_and_ends_nothing() -> None:
    """A host on the victim's address and port sends a SYN with a new ISN (the SYN that
    failed ``make test``'s fuzz run): it reaches the server, the victim's connection and
    call live on."""
    link, b = _victim_call()
    gw = link.gw
    syn = TcpSegment(C1, 40000, SERVER, 1723, seq=1001, ack=0, flags=TCP_SYN, window=512)
    out = gw.handle_tcp(Direction.OUTBOUND, syn, 1.0)
    [passed] = sent_tcp(out)
    assert (passed.direction, passed.segment.flags, passed.segment.seq) == (
        Direction.OUTBOUND, TCP_SYN, 1001)
    assert gw.counters.syns_on_open_connections == 1 and gw.counters.connections_reopened == 0
    # The server still has the connection: its challenge ACK passes to the client.
    challenge = link.send(link.server, flags=TCP_ACK)
    assert sent_tcp(challenge) and link.client.segments[-1].flags == TCP_ACK
    _victim_unharmed(link, b)


def test_an_off_path_syn_ack_for_a_syn_never_sent_ends_nothing() -> None:
    """An outside host guessing a SYN-ACK to the victim's public port, with no SYN before
    it from the victim's endpoint."""
    link, b = _victim_call()
    gw = link.gw
    for ack in (0, 1, 1001, link.client.isn + 1, link.client.snd_nxt):
        link.send(link.server, flags=TCP_SYN | TCP_ACK, seq=5, ack=ack)
    assert gw.counters.connections_reopened == 0
    _victim_unharmed(link, b)


def test_a_syn_ack_for_another_isn_than_the_new_syns_ends_nothing() -> None:
    """Both sides forged but out of step: the SYN-ACK does not acknowledge the new SYN."""
    link, b = _victim_call()
    gw = link.gw
    gw.handle_tcp(Direction.OUTBOUND, TcpSegment(C1, 40000, SERVER, 1723, 77, 0, TCP_SYN, 512),
                  1.0)
    link.send(link.server, flags=TCP_SYN | TCP_ACK, seq=5, ack=79)
    assert gw.counters.connections_reopened == 0
    _victim_unharmed(link, b)


def test_a_new_connection_proven_by_the_servers_syn_ack_replaces_the_old_one() -> None:
    """Who controls both the victim's endpoint and the server's address can end the
    connection, as through any TCP middlebox: the server's SYN-ACK to the new ISN proves
    the new connection, the old one's calls end and the new one works."""
    link, b = _victim_call()
    gw = link.gw
    old_port = link.public_port
    fresh = ControlLink(gw, client_isn=5_000_000)
    fresh.public_ip, fresh.public_port = link.public_ip, link.public_port
    fresh.open()
    assert gw.counters.connections_reopened == 1
    assert [c.state for c in gw.calls()] == []
    [conn] = gw.connections()
    assert conn.session.public_port == old_port and conn.relay.outbound.isn == 5_000_000
    fresh.client_send(sccrq())
    fresh.server_send(sccrp())
    assert fresh.outgoing_call(A, 701) != b  # b is held down after the old call
    assert fresh.server.stream.startswith(sccrq())


def test_an_exact_rst_answering_the_challenge_ends_the_old_connection() -> None:
    """The client lost its connection and reconnects from the same port: the server's
    challenge ACK draws the client's RST at exactly the expected sequence number, which
    ends the old connection; the client's next SYN opens the new one."""
    link, _ = _victim_call()
    gw = link.gw
    gw.handle_tcp(Direction.OUTBOUND, TcpSegment(C1, 40000, SERVER, 1723, 77, 0, TCP_SYN, 512),
                  1.0)
    challenge = link.send(link.server, flags=TCP_ACK)
    [ack] = [e.segment for e in sent_tcp(challenge)]
    rst = TcpSegment(C1, 40000, SERVER, 1723, seq=ack.ack, ack=0, flags=TCP_RST, window=0)
    gw.handle_tcp(Direction.OUTBOUND, rst, 1.1)
    assert gw.connections() == [] and list(gw.calls()) == []
    again = ControlLink(gw, client_isn=77, now=2.0).start()
    assert again.outgoing_call(A, 702) != A  # A is held down after the old call


def test_a_reopened_connection_leaves_no_record_of_its_old_calls() -> None:
    """The old connection's calls end at the reopen; their records go with them (the
    session stays, so nothing else would remove them), their Call IDs stay held down."""
    link, b = _victim_call()
    gw = link.gw
    stored = Snapshot()
    stored.apply(gw.journal.drain())
    assert len(stored.calls) == 1
    fresh = ControlLink(gw, client_isn=5_000_000)
    fresh.public_ip, fresh.public_port = link.public_ip, link.public_port
    fresh.open()
    stored.apply(gw.journal.drain())
    assert gw.counters.connections_reopened == 1 and stored.calls == []
    assert gw.call_ids.held_down(PUBLIC, SERVER, b, 1.0)
    assert [c.session_id for c in stored.connections] == [gw.connections()[0].session.id]


def test_while_new_calls_are_stopped_a_new_call_is_refused_and_nothing_is_handed_out() -> None:
    gw = gateway()
    other = ControlLink(gw, C1, 40001).start()
    other.outgoing_call(100, 700)
    gw.stop_new_calls()
    link = ControlLink(gw, C1, 40000).start()
    out = link.client_send(ocrq(200))
    assert gw.counters.calls_refused_cut_off == 1 and gw.counters.refused_calls == 1
    assert any("new calls are stopped" in e for e in out.errors)
    assert [len(c.calls) for c in gw.connections()] == [1]  # the call set up stays
    assert gw.call_ids.count_in_use() == 1
    gw.resume_new_calls()
    again = ControlLink(gw, C1, 40002).start()
    again.outgoing_call(201, 701)
    assert gw.call_ids.count_in_use() == 2 and gw.counters.calls_refused_cut_off == 1
