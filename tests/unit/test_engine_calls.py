"""The PPTP ALG per message and direction (PPTP-WIRE.md), calls, collisions and teardown.

Every test drives a real TCP dialogue through ``Gateway.handle_tcp`` (see ``pptp_flows``)
and asserts the bytes the other end receives, the flow decisions, logs and counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from alg.calls import CallState
from alg.codec import parse_gre
from alg.engine import Gateway
from alg.events import (
    CallLog,
    Direction,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    SendGre,
)
from alg.servermap import GrePath
from tests.unit.pptp_flows import (
    C1,
    C2,
    C3,
    PUBLIC,
    PUBLIC2,
    SERVER,
    SERVER2,
    ControlLink,
    Peer,
    ccrq,
    cdn,
    down_gre,
    echo_reply,
    echo_request,
    flows,
    gateway,
    gre,
    iccn,
    icrp,
    icrq,
    ocrp,
    ocrq,
    sccrp,
    sccrq,
    sent_gre,
    sent_tcp,
    sli,
    stopccrp,
    stopccrq,
    up_gre,
    wen,
)

A = 5
C = 900
OTHER_C = 901


@dataclass
class Setup:
    gw: Gateway
    link: ControlLink
    a: int
    b: int
    c: int
    other: ControlLink | None = None


def outgoing(collide: bool, *, a: int = A, c: int = C) -> Setup:
    """An established outgoing call of C1; with ``collide``, C2 already holds ``a``."""
    gw = gateway()
    other = None
    if collide:
        other = ControlLink(gw, C2, 40001).start()
        assert other.outgoing_call(a, OTHER_C) == a
    link = ControlLink(gw, C1).start()
    b = link.outgoing_call(a, c)
    assert (b != a) == collide
    return Setup(gw, link, a, b, c, other)


def incoming(collide: bool, *, a: int = A, c: int = C) -> Setup:
    """An established incoming call of C1; with ``collide``, C2 already holds ``a``."""
    gw = gateway()
    other = None
    if collide:
        other = ControlLink(gw, C2, 40001).start()
        assert other.outgoing_call(a, OTHER_C) == a
    link = ControlLink(gw, C1).start()
    b = link.incoming_call(c, a)
    assert (b != a) == collide
    return Setup(gw, link, a, b, c, other)


def sender(link: ControlLink, who: str) -> Peer:
    return link.client if who == "client" else link.server


def receiver(link: ControlLink, who: str) -> Peer:
    return link.server if who == "client" else link.client


# The setup messages themselves.

def off_the_flow_path(collide: bool) -> list[GreInboundEntry]:
    """The decision a call sharing an established call's pair makes when it gets its
    public Call ID: the pair's inbound entry to the controller path (entry 3 is the
    first call's pair)."""
    if not collide:
        return []
    return [GreInboundEntry(3, SERVER, PUBLIC, None, 300.0)]


@pytest.mark.parametrize("collide", [False, True])
def test_outgoing_call_request_and_reply(collide: bool) -> None:
    gw = gateway()
    if collide:
        ControlLink(gw, C2, 40001).start().outgoing_call(A, OTHER_C)
    before = gw.counters.as_dict()
    link = ControlLink(gw, C1).start()
    request = link.client_send(ocrq(A, serial=42))
    b = A + 1 if collide else A
    assert link.server.stream[-168:] == ocrq(b, serial=42)
    # Sharing the pair, the new call takes it off the flow path before its request leaves.
    assert request.decisions == off_the_flow_path(collide) and request.logs == []
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    assert (call.state, call.client_call_id, call.public_call_id) == (CallState.REQUESTED, A, b)
    assert call.server_call_id is None and call.call_serial_number == 42

    reply = link.server_send(ocrp(C, b))
    assert link.client.stream[-32:] == ocrp(C, A)
    assert call.state is CallState.ESTABLISHED and call.server_call_id == C
    up, down = reply.decisions
    assert isinstance(up, GreOutboundEntry) and isinstance(down, GreInboundEntry)
    assert (up.client_ip, up.server_ip, up.public_ip, up.idle_timeout) == (C1, SERVER, PUBLIC, 300)
    assert (down.server_ip, down.public_ip, down.idle_timeout) == (SERVER, PUBLIC, 300)
    assert down.client_ip == (None if collide else C1)
    assert reply.logs == [CallLog("set up", call.index, C1, PUBLIC, SERVER, A, b, C)]
    after = gw.counters.as_dict()
    assert after["calls_set_up"] - before["calls_set_up"] == 1
    assert after["call_ids_translated"] - before["call_ids_translated"] == 2
    assert after["call_ids_changed"] - before["call_ids_changed"] == (1 if collide else 0)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is (GrePath.CONTROLLER if collide else GrePath.FLOW)
    assert gw.calls_in_progress == (2 if collide else 1)


@pytest.mark.parametrize("collide", [False, True])
def test_incoming_call_request_reply_connected(collide: bool) -> None:
    gw = gateway()
    if collide:
        ControlLink(gw, C2, 40001).start().outgoing_call(A, OTHER_C)
    link = ControlLink(gw, C1).start()
    offer = link.server_send(icrq(C, serial=9))
    assert link.client.stream[-220:] == icrq(C, serial=9)  # the server's ID: untouched
    assert offer.decisions == []
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    assert call.state.value == "offered" and call.call_serial_number == 9

    answer = link.client_send(icrp(A, C))
    b = A + 1 if collide else A
    assert link.server.stream[-24:] == icrp(b, C)
    assert answer.decisions == off_the_flow_path(collide)
    assert call.state is CallState.ANSWERED

    connected = link.server_send(iccn(b))
    assert link.client.stream[-28:] == iccn(A)
    assert call.state.value == "established"
    up, down = connected.decisions
    assert isinstance(up, GreOutboundEntry) and up.client_ip == C1
    assert isinstance(down, GreInboundEntry) and down.client_ip == (None if collide else C1)
    assert connected.logs[0].event == "set up" and connected.logs[0].public_call_id == b
    assert not call.outgoing


# The table: every other message, both directions, after the call is up.

Ids = Setup
Row = tuple[str, str, Callable[[Ids], bytes], Callable[[Ids], bytes]]

TABLE: list[Row] = [
    ("Outgoing-Call-Request again", "client", lambda s: ocrq(s.a), lambda s: ocrq(s.b)),
    ("Outgoing-Call-Reply again", "server", lambda s: ocrp(s.c, s.b), lambda s: ocrp(s.c, s.a)),
    ("Call-Clear-Request", "client", lambda s: ccrq(s.a), lambda s: ccrq(s.b)),
    ("Call-Disconnect-Notify with b", "server", lambda s: cdn(s.b), lambda s: cdn(s.a)),
    ("Call-Disconnect-Notify with c", "server", lambda s: cdn(s.c), lambda s: cdn(s.c)),
    ("WAN-Error-Notify", "server", lambda s: wen(s.b), lambda s: wen(s.a)),
    ("Set-Link-Info from the server", "server", lambda s: sli(s.b), lambda s: sli(s.a)),
    ("Set-Link-Info from the client", "client", lambda s: sli(s.c), lambda s: sli(s.c)),
    ("Stop-Control-Connection-Request out", "client", lambda s: stopccrq(), lambda s: stopccrq()),
    ("Stop-Control-Connection-Request in", "server", lambda s: stopccrq(), lambda s: stopccrq()),
    ("Stop-Control-Connection-Reply out", "client", lambda s: stopccrp(), lambda s: stopccrp()),
    ("Stop-Control-Connection-Reply in", "server", lambda s: stopccrp(), lambda s: stopccrp()),
    ("Echo-Request out", "client", lambda s: echo_request(3), lambda s: echo_request(3)),
    ("Echo-Request in", "server", lambda s: echo_request(4), lambda s: echo_request(4)),
    ("Echo-Reply out", "client", lambda s: echo_reply(4), lambda s: echo_reply(4)),
    ("Echo-Reply in", "server", lambda s: echo_reply(3), lambda s: echo_reply(3)),
    ("Start-Control-Connection-Request out", "client", lambda s: sccrq(), lambda s: sccrq()),
    ("Start-Control-Connection-Request in", "server", lambda s: sccrq(), lambda s: sccrq()),
    ("Start-Control-Connection-Reply out", "client", lambda s: sccrp(), lambda s: sccrp()),
    ("Start-Control-Connection-Reply in", "server", lambda s: sccrp(), lambda s: sccrp()),
]

INCOMING_TABLE: list[Row] = [
    ("Incoming-Call-Connected again", "server", lambda s: iccn(s.b), lambda s: iccn(s.a)),
    ("Call-Clear-Request", "client", lambda s: ccrq(s.a), lambda s: ccrq(s.b)),
    ("Call-Disconnect-Notify with b", "server", lambda s: cdn(s.b), lambda s: cdn(s.a)),
    ("Call-Disconnect-Notify with c", "server", lambda s: cdn(s.c), lambda s: cdn(s.c)),
    ("WAN-Error-Notify", "server", lambda s: wen(s.b), lambda s: wen(s.a)),
    ("Set-Link-Info from the server", "server", lambda s: sli(s.b), lambda s: sli(s.a)),
    ("Set-Link-Info from the client", "client", lambda s: sli(s.c), lambda s: sli(s.c)),
]


def _check_row(setup: Setup, who: str, sent: bytes, expected: bytes) -> Output:
    link = setup.link
    out = link.send(sender(link, who), sent)
    got = receiver(link, who).stream
    assert got[-len(expected):] == expected
    assert len(got) == link.sent(sender(link, who))  # nothing held, nothing lost
    return out


@pytest.mark.parametrize("collide", [False, True], ids=["b=a", "b!=a"])
@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_outgoing_call_table(row: Row, collide: bool) -> None:
    _, who, message, expected = row
    setup = outgoing(collide)
    _check_row(setup, who, message(setup), expected(setup))
    assert setup.gw.counters.unknown_call_ids == 0


@pytest.mark.parametrize("collide", [False, True], ids=["b=a", "b!=a"])
@pytest.mark.parametrize("row", INCOMING_TABLE, ids=[r[0] for r in INCOMING_TABLE])
def test_incoming_call_table(row: Row, collide: bool) -> None:
    _, who, message, expected = row
    setup = incoming(collide)
    _check_row(setup, who, message(setup), expected(setup))
    assert setup.gw.counters.unknown_call_ids == 0


CLOSING = {
    "Call-Clear-Request": "Call-Clear-Request",
    "Call-Disconnect-Notify with b": "Call-Disconnect-Notify",
    "Call-Disconnect-Notify with c": "Call-Disconnect-Notify",
    "Stop-Control-Connection-Request out": "Stop-Control-Connection",
    "Stop-Control-Connection-Request in": "Stop-Control-Connection",
    "Stop-Control-Connection-Reply out": "Stop-Control-Connection",
    "Stop-Control-Connection-Reply in": "Stop-Control-Connection",
}


@pytest.mark.parametrize("collide", [False, True], ids=["b=a", "b!=a"])
@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_which_messages_tear_the_call_down(row: Row, collide: bool) -> None:
    name, who, message, expected = row
    setup = outgoing(collide)
    gw = setup.gw
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    up_id = next(d.entry_id for d in setup.link.outputs[-1].decisions
                 if isinstance(d, GreOutboundEntry))
    down_id = next(d.entry_id for d in setup.link.outputs[-1].decisions
                   if isinstance(d, GreInboundEntry))
    out = _check_row(setup, who, message(setup), expected(setup))
    reason = CLOSING.get(name)
    if reason is None:
        assert out.decisions == [] and out.logs == []
        assert call.state is CallState.ESTABLISHED
        return
    assert call.state is CallState.CLOSED and call.end_reason == reason
    assert out.logs == [CallLog("torn down", call.index, C1, PUBLIC, SERVER, setup.a, setup.b,
                                setup.c, reason)]
    assert RemoveEntries(EntryKind.GRE_OUTBOUND, up_id) in out.decisions
    if collide:
        # C2's call keeps the pair, on the controller path while C1's b is held down.
        assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    else:
        assert RemoveEntries(EntryKind.GRE_INBOUND, down_id) in out.decisions
        assert gw.inbound_gre_path(SERVER, PUBLIC) is None
    assert gw.call_ids.held_down(PUBLIC, SERVER, setup.b, setup.link.now)
    # Late GRE for the closed call: dropped, counted, no state.
    late = down_gre(gw, PUBLIC, setup.b, setup.link.now + 1)
    assert late.emits == [] and late.decisions == [] and late.drop_reason
    assert gw.counters.gre_unknown_dropped == 1
    assert up_gre(gw, C1, setup.c, setup.link.now + 1).emits == []
    assert gw.counters.gre_unknown_dropped == 2
    if collide:
        # C2 kept its ID: the pair goes back to the flow path when the hold-down ends.
        back = gw.tick(setup.link.now + gw.config.call_id_hold_down)
        assert back.decisions[-1] == GreInboundEntry(down_id, SERVER, PUBLIC, C2, 300)
        assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW


def test_refused_outgoing_call_opens_nothing_and_releases_b() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.client_send(ocrq(A))
    out = link.server_send(ocrp(C, A, result=4))  # Busy
    assert link.client.stream[-32:] == ocrp(C, A, result=4)
    assert out.decisions == [] and out.logs == []
    assert list(gw.calls()) == [] and gw.counters.calls_set_up == 0
    assert gw.call_ids.held_down(PUBLIC, SERVER, A, link.now)
    # A late Call-Disconnect-Notify for it is still translated.
    link.server_send(cdn(A))
    assert link.client.stream[-148:] == cdn(A)


def test_refused_incoming_call_releases_b() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(icrq(C))
    out = link.client_send(icrp(A, C, result=3))
    assert link.server.stream[-24:] == icrp(A, C, result=3)
    assert out.decisions == [] and list(gw.calls()) == []
    assert gw.call_ids.held_down(PUBLIC, SERVER, A, link.now)


def test_incoming_call_reply_without_request_is_counted_but_translated() -> None:
    s = outgoing(True)
    link = ControlLink(s.gw, C3, 40003).start()
    link.client_send(icrp(A, 1234))
    assert s.gw.counters.unknown_call_ids == 1
    assert link.server.stream[-24:] == icrp(A + 2, 1234)  # 5 and 6 are taken


def test_duplicate_incoming_call_reply_keeps_the_same_b() -> None:
    s = incoming(True)
    in_use = s.gw.call_ids.count_in_use()
    s.link.client_send(icrp(s.a, s.c))
    assert s.link.server.stream[-24:] == icrp(s.b, s.c)
    assert s.gw.call_ids.count_in_use() == in_use
    assert len([c for c in s.gw.calls() if c.conn.client_ip == C1]) == 1
    assert s.gw.counters.unknown_call_ids == 0


def test_duplicate_incoming_call_request_makes_one_call() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(icrq(C))
    link.server_send(icrq(C))
    assert len(list(gw.calls())) == 1


# Unknown Call IDs: counted and passed unchanged.

UNKNOWN: list[tuple[str, str, bytes]] = [
    ("Call-Clear-Request", "client", ccrq(4444)),
    ("Outgoing-Call-Reply", "server", ocrp(C, 4444)),
    ("Incoming-Call-Connected", "server", iccn(4444)),
    ("Call-Disconnect-Notify", "server", cdn(4444)),
    ("WAN-Error-Notify", "server", wen(4444)),
    ("Set-Link-Info", "server", sli(4444)),
]


@pytest.mark.parametrize(("name", "who", "message"), UNKNOWN, ids=[u[0] for u in UNKNOWN])
def test_unknown_call_id_is_counted_and_passed(name: str, who: str, message: bytes) -> None:
    s = outgoing(True)
    out = s.link.send(sender(s.link, who), message)
    assert receiver(s.link, who).stream.endswith(message)
    assert out.decisions == [] and out.logs == []
    assert s.gw.counters.unknown_call_ids == 1
    assert s.gw.calls_in_progress == 2


def test_call_ids_are_scoped_per_control_connection() -> None:
    """C1 names C2's Call ID: unknown on C1's connection, C2's call is untouched."""
    gw = gateway()
    c2 = ControlLink(gw, C2, 40001).start()
    c2.outgoing_call(77, OTHER_C)
    c1 = ControlLink(gw, C1).start()
    c1.outgoing_call(A, C)
    c1.client_send(ccrq(77))
    c1.server_send(cdn(77))
    assert c1.server.stream.endswith(ccrq(77)) and c1.client.stream.endswith(cdn(77))
    assert gw.counters.unknown_call_ids == 2
    assert gw.calls_in_progress == 2


# Call-Disconnect-Notify ambiguity.

def _two_calls_ambiguous() -> tuple[Gateway, ControlLink, int, int]:
    """One connection, two calls: call 2's server ID is call 1's public ID."""
    gw = gateway()
    ControlLink(gw, C2, 40001).start().outgoing_call(10, 500)  # C2 holds 10 on the pair
    link = ControlLink(gw, C1).start()
    b1 = link.outgoing_call(10, 600)  # a1=10 -> b1=11, c1=600
    assert b1 == 11
    b2 = link.outgoing_call(20, b1)  # a2=20=b2, c2=11 = b1
    assert b2 == 20
    return gw, link, b1, b2


def test_cdn_with_an_id_that_is_one_calls_c_and_anothers_b_ends_the_c_call() -> None:
    gw, link, b1, _ = _two_calls_ambiguous()
    out = link.server_send(cdn(b1))
    assert link.client.stream[-148:] == cdn(b1)  # taken as call 2's c: unchanged
    [log] = out.logs
    assert (log.event, log.client_call_id, log.server_call_id) == ("torn down", 20, b1)
    live = [c.client_call_id for c in gw.calls() if c.conn.client_ip == C1]
    assert live == [10]


def test_cdn_for_the_other_reading_ends_the_b_call() -> None:
    gw, link, _, b2 = _two_calls_ambiguous()
    link.server_send(cdn(b2))  # b2=20 is nobody's c: call 2 by its public ID
    assert link.client.stream[-148:] == cdn(20)
    live = [c.client_call_id for c in gw.calls() if c.conn.client_ip == C1]
    assert live == [10]
    link.server_send(cdn(600))  # call 1 by its c
    assert [c for c in gw.calls() if c.conn.client_ip == C1] == []


def test_late_cdn_with_a_closed_calls_c_does_not_end_another_call() -> None:
    gw = gateway()
    ControlLink(gw, C2, 40001).start().outgoing_call(10, 500)
    link = ControlLink(gw, C1).start()
    b1 = link.outgoing_call(10, 600)  # b1 = 11
    link.outgoing_call(600, 700)  # a2 = b2 = 600: the same value as c1
    link.client_send(ccrq(10))  # the client clears call 1 ...
    link.server_send(cdn(600))  # ... and the server confirms with its own ID (RFC 2637 2.13)
    assert b1 == 11
    assert [c.client_call_id for c in gw.calls() if c.conn.client_ip == C1] == [600]


def test_late_cdn_within_hold_down_is_translated_then_forgotten() -> None:
    s = outgoing(True)
    s.link.client_send(ccrq(s.a))
    s.link.now = 30
    out = s.link.server_send(cdn(s.b))
    assert s.link.client.stream[-148:] == cdn(s.a)
    assert out.decisions == [] and out.logs == []
    s.link.server_send(cdn(s.c))  # the closed call's c: known, passed, not counted
    assert s.link.client.stream[-148:] == cdn(s.c)
    assert s.gw.counters.unknown_call_ids == 0
    s.link.now = 61
    s.gw.tick(61)
    s.link.server_send(cdn(s.b))
    assert s.link.client.stream[-148:] == cdn(s.b)
    assert s.gw.counters.unknown_call_ids == 1


def test_late_messages_for_a_closed_call_are_translated_in_hold_down() -> None:
    s = outgoing(True)
    s.link.client_send(ccrq(s.a))
    s.link.client_send(ccrq(s.a))  # repeated: still b
    assert s.link.server.stream[-16:] == ccrq(s.b)
    s.link.server_send(wen(s.b))
    assert s.link.client.stream[-40:] == wen(s.a)
    s.link.server_send(sli(s.b))
    assert s.link.client.stream[-24:] == sli(s.a)
    s.link.server_send(ocrp(s.c, s.b))  # a late reply opens nothing
    assert s.link.client.stream[-32:] == ocrp(s.c, s.a)
    assert s.link.outputs[-1].decisions == []
    assert s.gw.counters.unknown_call_ids == 0


# Collisions: two clients, one public address, the same Call ID, one server.

def test_colliding_call_ids_are_demultiplexed_by_b() -> None:
    gw = gateway()
    l1 = ControlLink(gw, C1, 40000).start()
    l2 = ControlLink(gw, C2, 40000).start()
    assert l1.public_ip == l2.public_ip == PUBLIC
    b1 = l1.outgoing_call(A, 700)
    _, first_down = flows(l1.outputs[-1])
    assert first_down == GreInboundEntry(first_down.entry_id, SERVER, PUBLIC, C1, 300)
    b2 = l2.outgoing_call(A, 701)
    assert (b1, b2) == (A, A + 1)
    up2, down2 = flows(l2.outputs[-1])
    assert up2 is not None
    assert up2 == GreOutboundEntry(up2.entry_id, C2, SERVER, PUBLIC, 300)
    assert down2 == GreInboundEntry(first_down.entry_id, SERVER, PUBLIC, None, 300)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER

    packet = gre(b2, payload=b"\xff\x03abcdef", seq=77, ack=12)
    out = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, packet, 5.0)
    [send] = sent_gre(out)
    assert (send.direction, send.src_ip, send.dst_ip) == (Direction.INBOUND, SERVER, C2)
    header = parse_gre(send.gre)
    assert (header.call_id, header.sequence, header.ack) == (A, 77, 12)
    assert send.gre[8:] == packet[8:] and send.gre[:6] == packet[:6]
    assert out.decisions == []  # controller path: nothing to re-install

    [send] = sent_gre(down_gre(gw, PUBLIC, b1, 6.0))
    assert send.dst_ip == C1 and parse_gre(send.gre).call_id == A
    assert gw.counters.gre_controller_path == 2

    # A pure ack (no sequence, no payload) is demultiplexed too.
    [send] = sent_gre(gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC,
                                    gre(b2, payload=b"", seq=None, ack=5), 7.0))
    assert send.dst_ip == C2 and parse_gre(send.gre) == parse_gre(gre(A, b"", None, 5))

    # The client's GRE carries the server's ID and only changes address.
    out = up_gre(gw, C2, 701, 8.0)
    [send] = sent_gre(out)
    assert (send.src_ip, send.dst_ip, send.gre) == (PUBLIC, SERVER, gre(701))
    assert out.decisions == [up2]

    calls = {c.conn.client_ip: c for c in gw.calls()}
    assert calls[C2].inbound_packets == 2 and calls[C2].outbound_packets == 1
    assert calls[C1].inbound_packets == 1 and calls[C2].controller_path_packets == 3


def test_pair_returns_to_the_flow_path_when_the_colliding_call_ends() -> None:
    gw = gateway()
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()
    l1.outgoing_call(A, 700)
    down_id = flows(l1.outputs[-1])[1].entry_id
    l2.outgoing_call(A, 701)
    out = l2.client_send(ccrq(A))
    assert l2.server.stream[-16:] == ccrq(A + 1)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER  # A + 1 is held down
    out = gw.tick(gw.config.call_id_hold_down)
    assert out.decisions[-1] == GreInboundEntry(down_id, SERVER, PUBLIC, C1, 300)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW
    # Flow path: a punted packet (lost flow) re-installs the flow entry.
    out = down_gre(gw, PUBLIC, A, 1.0)
    assert out.decisions == [GreInboundEntry(down_id, SERVER, PUBLIC, C1, 300)]
    assert sent_gre(out)[0].dst_ip == C1


def test_pair_stays_on_the_controller_path_when_the_remaining_call_changed_its_id() -> None:
    gw = gateway()
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()
    l1.outgoing_call(A, 700)
    l2.outgoing_call(A, 701)
    out = l1.client_send(ccrq(A))
    assert not any(isinstance(d, GreInboundEntry) for d in out.decisions)
    assert not any(isinstance(d, RemoveEntries) and d.kind is EntryKind.GRE_INBOUND
                   for d in out.decisions)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    [send] = sent_gre(down_gre(gw, PUBLIC, A + 1, 1.0))
    assert send.dst_ip == C2 and parse_gre(send.gre).call_id == A


def test_two_calls_of_one_client_share_the_outbound_entry() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.outgoing_call(1, 100)
    first_up = flows(link.outputs[-1])[0]
    assert first_up is not None
    link.outgoing_call(2, 101)
    assert not any(isinstance(d, GreOutboundEntry) for d in link.outputs[-1].decisions)
    assert flows(link.outputs[-1])[1].client_ip is None  # two calls on the pair: controller path
    out = link.client_send(ccrq(1))
    assert not any(isinstance(d, RemoveEntries) for d in out.decisions)
    out = link.client_send(ccrq(2))
    assert RemoveEntries(EntryKind.GRE_OUTBOUND, first_up.entry_id) in out.decisions


def test_different_servers_and_public_addresses_do_not_collide() -> None:
    gw = gateway(public_ips=(PUBLIC, PUBLIC2))
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()  # paired pooling: C2 goes to the other address
    l3 = ControlLink(gw, C3, server_ip=SERVER2).start()
    assert {l1.public_ip, l2.public_ip} == {PUBLIC, PUBLIC2}
    assert l1.public_ip is not None and l2.public_ip is not None
    assert l1.outgoing_call(A, 1) == A
    assert l2.outgoing_call(A, 1) == A
    assert l3.outgoing_call(A, 1) == A
    assert gw.inbound_gre_path(SERVER, l1.public_ip) is GrePath.FLOW
    assert gw.inbound_gre_path(SERVER, l2.public_ip) is GrePath.FLOW
    assert gw.counters.call_ids_changed == 0


def test_unknown_and_malformed_gre_are_dropped_without_state() -> None:
    s = outgoing(False)
    gw = s.gw
    assert down_gre(gw, PUBLIC, 999, 1.0).drop_reason
    assert down_gre(gw, PUBLIC2, s.b, 1.0).drop_reason
    assert up_gre(gw, C2, s.c, 1.0).drop_reason
    assert gw.counters.gre_unknown_dropped == 3
    out = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, b"\x20\x01\x88", 1.0)
    assert out.drop_reason and gw.counters.gre_malformed == 1
    out = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, b"\x30\x00" + gre(s.b)[2:], 1.0)
    assert out.drop_reason and gw.counters.gre_malformed == 2
    assert gw.calls_in_progress == 1 and gw.counters.gre_controller_path == 0


# Retransmissions.

@pytest.mark.parametrize("collide", [False, True])
def test_repeated_outgoing_call_request_maps_to_the_same_call(collide: bool) -> None:
    gw = gateway()
    if collide:
        ControlLink(gw, C2, 40001).start().outgoing_call(A, OTHER_C)
    link = ControlLink(gw, C1).start()
    link.client_send(ocrq(A))
    in_use = gw.call_ids.count_in_use()
    b = link.call_id_to_server()
    link.client_send(ocrq(A, serial=2))  # new TCP bytes, same Call ID
    assert link.server.stream[-168:] == ocrq(b, serial=2)
    assert gw.call_ids.count_in_use() == in_use
    assert len([c for c in gw.calls() if c.conn.client_ip == C1]) == 1
    link.server_send(ocrp(C, b))
    assert gw.calls_in_progress == (2 if collide else 1)


def test_tcp_retransmission_is_replayed_with_the_same_rewrite() -> None:
    s = outgoing(True)
    link = s.link
    start = link.sent(link.client)
    link.client_send(echo_request(1) + ocrq(6) + sli(C))
    b = 7  # 5 and 6 are taken on the pair
    assert link.server.stream[-208:] == echo_request(1) + ocrq(b) + sli(C)
    decisions = len([d for o in link.outputs for d in o.decisions])
    # The same segment again, then a piece of it, then a piece straddling new bytes.
    out = link.client_send(echo_request(1) + ocrq(6) + sli(C), seq=link.seq_at(link.client, start))
    out2 = link.client_send(ocrq(6)[100:150], seq=link.seq_at(link.client, start + 116))
    link.client_send((ocrq(6) + sli(C))[150:] + ccrq(6),
                     seq=link.seq_at(link.client, start + 166))
    assert link.server.stream[-16:] == ccrq(b)
    assert link.server.conflicts == []  # every replayed byte equals the first copy
    assert len([d for o in link.outputs for d in o.decisions]) == decisions  # never set up
    assert s.gw.counters.retransmitted_segments == 3
    assert all(e.segment.payload for e in sent_tcp(out) + sent_tcp(out2))
    # The client's real Call ID never left: every copy of the OCRQ's Call ID field says b.
    base = (link.server.irs or 0) + 1
    for seg in link.server.data_segments():
        offset = (seg.seq - base) % (1 << 32)
        field = start + 16 + 12  # stream offset of the OCRQ's Call ID
        if offset <= field and field + 2 <= offset + len(seg.payload):
            assert seg.payload[field - offset: field - offset + 2] == b.to_bytes(2, "big")


def test_acknowledged_retransmission_is_not_replayed() -> None:
    s = outgoing(True)
    link = s.link
    start = link.sent(link.client)
    link.client_send(ocrq(6))
    link.server_send(echo_request(9))  # acknowledges the request
    before = len(link.server.data_segments())
    link.client_send(ocrq(6), seq=link.seq_at(link.client, start))
    assert len(link.server.data_segments()) == before  # its rewrite is forgotten: not replayed
    assert link.server.segments[-1].payload == b""  # only the client's new ack goes on
    before = len(link.server.segments)
    out = link.client_send(ocrq(6), seq=link.seq_at(link.client, start))
    assert len(link.server.segments) == before and out.drop_reason
    assert link.server.conflicts == []


def test_retransmitted_reply_is_replayed_with_the_same_rewrite() -> None:
    s = outgoing(True)
    link = s.link
    link.client_send(ocrq(6))
    start = link.sent(link.server)
    link.server_send(ocrp(800, 7))
    link.server_send(ocrp(800, 7), seq=link.seq_at(link.server, start))
    assert link.client.stream[-32:] == ocrp(800, 6)
    assert link.client.conflicts == [] and len(link.client.data_segments()) >= 2
    assert s.gw.counters.calls_set_up == 3


def test_retransmitted_syn_and_syn_ack_pass() -> None:
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=0x02, ack=0)
    again = link.send(link.client, flags=0x02, ack=0, seq=link.client.isn)
    assert len(again.emits) == 1 and len(gw.connections()) == 1
    link.send(link.server, flags=0x12, ack=link.client.isn + 1)
    link.send(link.server, flags=0x12, ack=link.client.isn + 1, seq=link.server.isn)
    assert len(link.client.segments) == 2
    link.send(link.client, flags=0x10)
    link.client_send(sccrq())
    assert link.server.stream == sccrq()


def test_counters_as_dict_lists_every_counter() -> None:
    gw = gateway()
    d = gw.counters.as_dict()
    assert d["calls_set_up"] == 0 and "gre_unknown_dropped" in d and all(v == 0 for v in d.values())


def test_views() -> None:
    s = outgoing(True)
    gw = s.gw
    assert len(gw.connections()) == 2
    assert all(gw.is_control_session(c.session.id) for c in gw.connections())
    assert not gw.is_control_session(999)
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    assert gw.gre_flow_packets(call) == (0, 0)
    assert call.conn.client_ip == C1 and call.conn.server_ip == SERVER
    assert call.conn.public_ip == PUBLIC


def test_output_extend_keeps_the_order() -> None:
    first = Output(decisions=[RemoveEntries(EntryKind.SESSION, 1)], errors=["x"])
    second = Output(
        emits=[SendGre(Direction.INBOUND, SERVER, C1, gre(1))],
        decisions=[RemoveEntries(EntryKind.SESSION, 2)],
        logs=[CallLog("set up", 1, C1, PUBLIC, SERVER, 1, 1, 2)], errors=["y"],
    )
    first.extend(second)
    assert first.decisions == [
        RemoveEntries(EntryKind.SESSION, 1), RemoveEntries(EntryKind.SESSION, 2)
    ]
    assert first.errors == ["x", "y"] and len(first.emits) == 1 and len(first.logs) == 1


def test_cdn_withdrawing_an_unanswered_incoming_call() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(icrq(C))
    out = link.server_send(cdn(C))
    assert link.client.stream[-148:] == cdn(C)
    assert out.decisions == [] and out.logs == [] and list(gw.calls()) == []
    assert gw.call_ids.count_in_use() == 0 and gw.counters.unknown_call_ids == 0


@pytest.mark.parametrize("incoming", [False, True])
def test_the_servers_first_gre_for_a_new_call_never_reaches_the_pairs_other_client(
    incoming: bool,
) -> None:
    """The server may send GRE with a new call's ``b`` as soon as it has the request (or
    the reply): before the controller sees its answer. The pair's flow-path entry would
    hand it to the pair's established client, so the pair leaves the flow path first."""
    first = outgoing(collide=False)
    gw = first.gw
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW
    link = ControlLink(gw, C2, 40001).start()
    if incoming:
        link.server_send(icrq(OTHER_C))
        link.client_send(icrp(A, OTHER_C))
    else:
        link.client_send(ocrq(A))
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    early = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(A + 1), 0.0)
    assert early.emits == [] and early.drop_reason == "GRE matches no server-map"
    own = gw.handle_gre(Direction.INBOUND, SERVER, PUBLIC, gre(A), 0.0)
    assert [e.dst_ip for e in sent_gre(own)] == [C1]
