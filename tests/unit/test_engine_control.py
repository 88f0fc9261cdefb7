"""The control connection through the gateway: reassembly, errors, resets, TCP details."""

from __future__ import annotations

import pytest

from alg.calls import CallState
from alg.codec import OutgoingCallRequest
from alg.events import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    ControlEntry,
    Direction,
    EntryKind,
    RemoveEntries,
    SendTcp,
    TcpSegment,
)
from alg.servermap import GrePath
from tests.unit.pptp_flows import (
    C1,
    C2,
    DATA,
    PUBLIC,
    SEQ_MOD,
    SERVER,
    ControlLink,
    ccrq,
    cdn,
    cuts,
    echo_request,
    flows,
    gateway,
    iccn,
    icrp,
    icrq,
    ocrp,
    ocrq,
    sccrp,
    sccrq,
    sent_tcp,
    sli,
    stopccrq,
    wen,
)

A = 5


def collided() -> tuple[ControlLink, ControlLink]:
    """C2 holds Call ID ``A`` on the pair; C1's connection is started, no call yet."""
    gw = gateway()
    other = ControlLink(gw, C2, 40001).start()
    other.outgoing_call(A, 700)
    return other, ControlLink(gw, C1).start()


def test_handshake_and_first_messages() -> None:
    gw = gateway()
    link = ControlLink(gw)
    syn = link.send(link.client, flags=TCP_SYN, ack=0)
    [emit] = syn.emits
    assert isinstance(emit, SendTcp) and emit.direction is Direction.OUTBOUND
    seg = emit.segment
    assert (seg.src_ip, seg.dst_ip, seg.dst_port, seg.seq, seg.flags) == (
        PUBLIC, SERVER, 1723, link.client.isn, TCP_SYN)
    # Control connections get no session flow, only their own punt entry.
    assert syn.decisions == [ControlEntry(gw.connections()[0].session)]
    assert gw.is_control_session(gw.connections()[0].session.id)
    link.send(link.server, flags=TCP_SYN | TCP_ACK, ack=link.client.isn + 1)
    assert link.client.segments[-1].flags == TCP_SYN | TCP_ACK
    ack = link.send(link.client, flags=TCP_ACK)
    assert sent_tcp(ack)[0].segment.flags == TCP_ACK
    link.client_send(sccrq())
    link.server_send(sccrp())
    assert link.server.stream == sccrq() and link.client.stream == sccrp()


def test_options_and_window_pass_through() -> None:
    gw = gateway()
    seg = TcpSegment(C1, 40000, SERVER, 1723, 1, 0, TCP_SYN, 1234, b"", b"\x02\x04\x05\xb4")
    [emit] = gw.handle_tcp(Direction.OUTBOUND, seg, 0.0).emits
    assert isinstance(emit, SendTcp)
    assert (emit.segment.window, emit.segment.options) == (1234, b"\x02\x04\x05\xb4")


def test_syn_payload_does_not_bypass_the_alg() -> None:
    """Data on a SYN (TCP Fast Open) would leave untranslated: it is not forwarded."""
    other, _ = collided()
    gw = other.gw
    link = ControlLink(gw, C1, 40007)
    out = link.send(link.client, ocrq(A), flags=TCP_SYN, ack=0)
    assert sent_tcp(out)[0].segment.payload == b""
    link.client.snd_nxt = link.client.isn + 1  # the data was not acknowledged: resent
    link.send(link.server, flags=TCP_SYN | TCP_ACK, ack=link.client.isn + 1)
    link.send(link.client, flags=TCP_ACK)
    link.client_send(ocrq(A))
    assert link.server.stream == ocrq(A + 1)


# Reassembly through the gateway.

def _c1_calls(link: ControlLink) -> list[object]:
    return [c for c in link.gw.calls() if c.conn.client_ip == C1]


@pytest.mark.parametrize("cut", range(1, 168))
def test_colliding_request_split_at_every_point(cut: int) -> None:
    _, link = collided()
    gw = link.gw
    request, translated = ocrq(A, serial=3), ocrq(A + 1, serial=3)
    before = len(link.server.stream)
    counted = gw.counters.call_ids_translated
    first = link.client_send(request[:cut])
    got = link.server.stream[before:]
    decided = cut >= 17
    if cut < 12:  # no header yet: nothing of it leaves
        assert got == b"" and all(not e.segment.payload for e in sent_tcp(first))
    elif not decided:  # the validated header alone; the Call ID waits for bytes 12-16
        assert got == request[:12]
    else:  # decided: all that arrived leaves, with the translated Call ID
        assert got == translated[:cut]
    # No decision before the decision bytes are in.
    assert len(_c1_calls(link)) == int(decided)
    assert gw.counters.call_ids_translated == counted + int(decided)
    assert [d.client_ip for d in first.decisions] == ([None] if decided else [])
    assert first.logs == []
    link.client_send(request[cut:])
    assert link.server.stream[before:] == translated
    assert gw.counters.call_ids_translated == counted + 1  # decided once
    assert len(_c1_calls(link)) == 1 and link.server.conflicts == []


def test_request_split_after_thirteen_bytes_lets_the_server_acknowledge_the_header() -> None:
    _, link = collided()
    gw = link.gw
    before = len(link.server.stream)
    first = link.client_send(ocrq(A)[:13])
    # The header leaves at once (so the server can acknowledge it), without a decision.
    [header] = [e.segment for e in sent_tcp(first) if e.segment.payload]
    assert header.payload == ocrq(A)[:12]
    assert header.seq == link.seq_at(link.client, link.sent(link.client) - 13)
    assert _c1_calls(link) == [] and first.drop_reason is None
    ack = link.send(link.server, flags=TCP_ACK)
    assert [e.segment.ack for e in sent_tcp(ack)] == [link.seq_at(link.client, before + 12)]
    [conn] = [c for c in gw.connections() if c.session.inside_ip == C1]
    assert conn.relay.outbound.acked == before + 12
    second = link.client_send(ocrq(A)[13:])
    # The translated Call ID leaves with the rest; the original one never did.
    assert b"".join(e.segment.payload for e in sent_tcp(second)) == ocrq(A + 1)[12:]
    assert link.server.stream[before:] == ocrq(A + 1) and link.server.conflicts == []
    assert len(_c1_calls(link)) == 1


def test_request_in_pieces_passes_the_header_then_the_translated_call_id() -> None:
    _, link = collided()
    gw = link.gw
    held = len(link.server.stream)
    base = link.sent(link.client)
    counted = gw.counters.call_ids_translated
    outs = []
    seen = []
    calls = []
    for offset, piece in cuts(ocrq(A), [8, 10, 14, 16, 110]):
        outs.append(link.client_send(piece, seq=link.seq_at(link.client, base + offset)))
        seen.append(link.server.stream[held:])
        calls.append(len(_c1_calls(link)))
        assert seen[-1][12:14] in (b"", ocrq(A + 1)[12:14])  # never the original Call ID
    assert seen == [
        b"", b"",  # no header yet
        ocrq(A)[:12], ocrq(A)[:12],  # the header alone; bytes 12-15 are held
        ocrq(A + 1)[:110],  # byte 16 is in: decided, and all that arrived leaves
        ocrq(A + 1),
    ]
    assert outs[0].drop_reason is None  # the new ack goes on as a pure ACK
    assert outs[1].drop_reason == "control bytes held"
    assert outs[2].drop_reason is None  # the header
    assert outs[3].drop_reason == "control bytes held"
    assert calls == [0, 0, 0, 0, 1, 1]  # no decision before the decision bytes are in
    assert gw.counters.call_ids_translated == counted + 1  # decided once
    # The call shares its pair: deciding takes the pair off the flow path, nothing more.
    assert [[d.client_ip for d in o.decisions] for o in outs] == [[], [], [], [], [None], []]
    assert all(o.logs == [] for o in outs)
    # Each piece's bytes leave as they come, in segments no longer than the client's
    # largest (its 156-byte SCCRQ).
    assert [len(s.payload) for s in link.server.data_segments()][-3:] == [12, 98, 58]
    reply = link.send_pieces(link.server, ocrp(701, A + 1), [3, 30])
    assert link.client.stream[-32:] == ocrp(701, A)
    # The reply's decision bytes arrive with its second piece: the call is set up then.
    assert reply[0].logs == [] and reply[2].logs == []
    assert [log.event for log in reply[1].logs] == ["set up"]
    assert link.client.conflicts == [] and link.server.conflicts == []


def test_bytes_released_together_go_in_segments_no_longer_than_the_senders_largest() -> None:
    _, link = collided()
    held = len(link.server.stream)
    base = link.sent(link.client)
    data = ocrq(A) + ocrq(6)
    link.client_send(data[:16], seq=link.seq_at(link.client, base))  # the header leaves
    for lo, hi in [(17, 120), (120, 220), (220, 336)]:  # beyond a gap: held
        out = link.client_send(data[lo:hi], seq=link.seq_at(link.client, base + lo))
        assert all(not e.segment.payload for e in sent_tcp(out))
    out = link.client_send(data[16:17], seq=link.seq_at(link.client, base + 16))
    # Bytes 12-335 leave at once, cut to the client's largest segment (its SCCRQ).
    assert [len(e.segment.payload) for e in sent_tcp(out)] == [156, 156, 12]
    assert link.server.stream[held:] == ocrq(A + 1) + ocrq(7)


def test_several_messages_in_one_segment() -> None:
    _, link = collided()
    link.client_send(ocrq(A) + ocrq(6) + echo_request())
    assert link.server.stream[-352:] == ocrq(A + 1) + ocrq(7) + echo_request()
    out = link.server_send(ocrp(1, A + 1) + ocrp(2, 7) + sli(7) + wen(A + 1))
    assert link.client.stream[-128:] == ocrp(1, A) + ocrp(2, 6) + sli(6) + wen(A)
    assert [log.client_call_id for log in out.logs] == [A, 6]
    out = link.client_send(ccrq(A) + sli(1) + ccrq(6))
    assert link.server.stream[-56:] == ccrq(A + 1) + sli(1) + ccrq(7)
    assert len(out.logs) == 2 and all(log.event == "torn down" for log in out.logs)


def test_overlapping_segments() -> None:
    _, link = collided()
    base = link.sent(link.client)
    data = ocrq(A) + echo_request()
    link.client_send(data[:100], seq=link.seq_at(link.client, base))
    link.client_send(data[50:170], seq=link.seq_at(link.client, base + 50))
    link.client_send(data[160:], seq=link.seq_at(link.client, base + 160))
    assert link.server.stream[-184:] == ocrq(A + 1) + echo_request()
    assert link.server.conflicts == []


def test_out_of_order_within_the_window() -> None:
    _, link = collided()
    base = link.sent(link.client)
    data = ocrq(A) + ccrq(A)
    late = link.client_send(data[120:], seq=link.seq_at(link.client, base + 120))
    assert all(not e.segment.payload for e in sent_tcp(late))
    link.client_send(data[:120], seq=link.seq_at(link.client, base))
    assert link.server.stream[-184:] == ocrq(A + 1) + ccrq(A + 1)


def test_out_of_order_beyond_max_buffer_is_dropped_and_counted() -> None:
    gw = gateway(max_buffer=1024)
    link = ControlLink(gw).start()
    base = link.sent(link.client)
    data = b"".join(echo_request(i) for i in range(100))
    link.client_send(data[16:1000], seq=link.seq_at(link.client, base + 16))
    assert gw.counters.buffer_limit_drops == 0
    out = link.client_send(data[1000:1200], seq=link.seq_at(link.client, base + 1000))
    assert gw.counters.buffer_limit_drops == 1 and not out.errors
    link.client_send(data[:16], seq=link.seq_at(link.client, base))
    link.server_send(b"", flags=TCP_ACK)
    link.client_send(data[1000:], seq=link.seq_at(link.client, base + 1000))
    assert link.server.stream.endswith(data)
    assert gw.connections()


def test_too_many_unacknowledged_bytes_reset_the_connection() -> None:
    gw = gateway(max_buffer=1024)
    ControlLink(gw, C2, 40001).start().outgoing_call(A, 700)
    link = ControlLink(gw).start()
    for _ in range(6):  # 6 * 168 bytes of rewrites (A -> A+1) await acknowledgement
        link.client_send(ocrq(A))
    out = link.client_send(ocrq(A))
    assert gw.counters.buffer_limit_drops == 1 and gw.counters.connections_reset == 1
    assert out.errors and link.reset_received() == (True, True)


def test_sequence_numbers_wrap_around() -> None:
    gw = gateway()
    ControlLink(gw, C2, 40001).start().outgoing_call(A, 700)
    link = ControlLink(gw, client_isn=SEQ_MOD - 200, server_isn=SEQ_MOD - 60).start()
    # The client's stream crosses 2**32 inside its Outgoing-Call-Request.
    assert link.sent(link.client) == 156
    link.send_pieces(link.client, ocrq(A), [10, 40, 100])
    assert link.server.stream[-168:] == ocrq(A + 1)
    link.send_pieces(link.server, ocrp(9, A + 1), [7])
    assert link.client.stream[-32:] == ocrp(9, A)
    start = link.sent(link.client)
    link.client_send(ccrq(A) + echo_request())
    link.client_send(ccrq(A), seq=link.seq_at(link.client, start))  # replayed across the wrap
    assert link.server.conflicts == [] and link.server.stream.endswith(ccrq(A + 1) + echo_request())
    link.fin(link.client)
    assert link.server.fin_at == link.sent(link.client) - 1


# Errors: malformed, unexpected, truncated.

def _corrupt(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("bad magic cookie", _corrupt(ocrq(A), 4)),
        ("bad length", _corrupt(ocrq(A), 1)),
        ("unknown control type", _corrupt(echo_request(), 9)),
        ("management message type", _corrupt(echo_request(), 3)),
        ("reserved field set", _corrupt(ccrq(A), 15)),
        ("reserved0 set", _corrupt(ccrq(A), 11)),
    ],
)
@pytest.mark.parametrize("who", ["client", "server"])
def test_malformed_message_resets_only_its_connection(name: str, payload: bytes, who: str) -> None:
    other, link = collided()
    gw = link.gw
    link.outgoing_call(A, 701)
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    out = link.send(link.client if who == "client" else link.server, echo_request() + payload)
    assert gw.counters.malformed_messages == 1 and gw.counters.connections_reset == 1
    assert link.reset_received() == (True, True)
    assert link.resets_acceptable()
    assert out.errors and "reset" in out.errors[0] and out.drop_reason
    # Nothing of the bad segment left (the echo before it is lost with the connection).
    sender_stream = link.server.stream if who == "client" else link.client.stream
    assert not sender_stream.endswith(echo_request())
    assert call.state is CallState.CLOSED
    assert any(isinstance(d, RemoveEntries) and d.kind is EntryKind.GRE_OUTBOUND
               for d in out.decisions)
    assert out.logs[0].event == "torn down" and out.logs[0].reason == "connection reset"
    assert len(gw.connections()) == 1 and gw.calls_in_progress == 1
    # The other connection still works, and its pair is on the flow path again once the
    # reset call's Call ID is out of hold-down (its late GRE must not reach the other).
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    gw.tick(link.now + gw.config.call_id_hold_down)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW
    other.client_send(echo_request(55))
    assert other.server.stream.endswith(echo_request(55))
    # Late segments of the reset connection are dropped.
    later = link.client_send(echo_request())
    assert later.emits == [] and gw.counters.no_session_drops == 1
    later = link.server_send(echo_request())
    assert later.emits == [] and gw.counters.no_session_drops == 2


UNEXPECTED = [
    ("Outgoing-Call-Request from the server", "server", ocrq(A)),
    ("Incoming-Call-Reply from the server", "server", icrp(A, 1)),
    ("Call-Clear-Request from the server", "server", ccrq(A)),
    ("Outgoing-Call-Reply from the client", "client", ocrp(1, A)),
    ("Incoming-Call-Request from the client", "client", icrq(1)),
    ("Incoming-Call-Connected from the client", "client", iccn(A)),
    ("Call-Disconnect-Notify from the client", "client", cdn(A)),
    ("WAN-Error-Notify from the client", "client", wen(A)),
]


@pytest.mark.parametrize(("name", "who", "payload"), UNEXPECTED, ids=[u[0] for u in UNEXPECTED])
def test_message_from_the_wrong_side_resets(name: str, who: str, payload: bytes) -> None:
    _, link = collided()
    gw = link.gw
    before = len((link.client if who == "server" else link.server).stream)
    link.send(link.server if who == "server" else link.client, payload)
    assert gw.counters.unexpected_messages == 1 and gw.counters.malformed_messages == 0
    assert gw.counters.connections_reset == 1
    assert link.reset_received() == (True, True) and link.resets_acceptable()
    assert len((link.client if who == "server" else link.server).stream) == before
    assert len(gw.connections()) == 1


@pytest.mark.parametrize("cut", [5, 12, 14, 16, 17, 50, 167])
def test_fin_inside_an_incomplete_message_resets(cut: int) -> None:
    _, link = collided()
    link.outgoing_call(A, 701)
    gw = link.gw
    before = len(link.server.stream)
    out = link.send(link.client, echo_request() + ocrq(6)[:cut], flags=DATA | TCP_FIN)
    assert gw.counters.truncated_messages == 1 and gw.counters.connections_reset == 1
    assert link.reset_received() == (True, True)
    # The RSTs land where each end expects: for the server, after what left of the
    # truncated message (nothing, its header, or its decided part).
    assert link.resets_acceptable()
    if cut < 12:
        partial = b""
    elif cut < 17:
        partial = ocrq(6)[:12]
    else:  # decided: 6 is taken on the pair (C1's first call has b = 6), so b = 7
        partial = ocrq(7)[:cut]
    # Whole messages before it go on, then what the policy let leave of the truncated one.
    assert link.server.stream[before:] == echo_request() + partial
    [rst] = link.server.resets
    assert rst.seq == link.seq_at(link.client, before + 16 + len(partial))
    assert link.server.fin_at is None  # the FIN did not pass
    assert out.logs and out.logs[0].event == "torn down"
    assert len(gw.connections()) == 1


@pytest.mark.parametrize("cut", [13, 20, 39, 40, 100, 167])
def test_invalid_body_found_when_the_message_completes_resets(cut: int) -> None:
    """The reserved field after the decision bytes is judged when the last byte is in."""
    _, link = collided()
    gw = link.gw
    bad = bytearray(ocrq(A))
    bad[39] = 1  # Outgoing-Call-Request's Reserved field (bytes 38-39)
    left = bytearray(ocrq(A + 1))  # what the server gets: translated, the bytes as sent
    left[39] = 1
    before = len(link.server.stream)
    first = link.client_send(bytes(bad[:cut]))
    assert not first.errors and gw.counters.malformed_messages == 0
    assert link.server.stream[before:] == (bad[:12] if cut < 17 else left[:cut])
    assert len(_c1_calls(link)) == int(cut >= 17)  # decided from the decision bytes
    out = link.client_send(bytes(bad[cut:]))
    assert gw.counters.malformed_messages == 1 and gw.counters.connections_reset == 1
    assert out.errors and "ReservedFieldError" in out.errors[0] and out.drop_reason
    # Nothing more of it left; the Call ID that left (if any) was the translated one.
    assert link.server.stream[before:] == (bad[:12] if cut < 17 else left[:cut])
    assert link.reset_received() == (True, True) and link.resets_acceptable()
    assert _c1_calls(link) == [] and len(gw.connections()) == 1
    assert link.server.conflicts == []


def test_fin_after_a_gap_is_dropped_until_the_gap_fills() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    base = link.sent(link.client)
    data = echo_request(1) + echo_request(2)
    link.client_send(data[16:], seq=link.seq_at(link.client, base + 16), flags=DATA | TCP_FIN)
    assert link.server.fin_at is None
    link.client_send(data[:16], seq=link.seq_at(link.client, base))
    link.client_send(b"", seq=link.seq_at(link.client, base + 32), flags=TCP_ACK | TCP_FIN)
    assert link.server.fin_at == base + 32 and link.server.stream.endswith(data)


def test_fin_rides_on_the_last_data_segment() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    out = link.send(link.client, echo_request(), flags=DATA | TCP_FIN)
    [emit] = sent_tcp(out)
    assert emit.segment.flags & TCP_FIN and emit.segment.payload == echo_request()


def test_fin_completing_a_held_message_sends_a_separate_fin() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.client_send(echo_request()[:5])
    out = link.send(link.client, echo_request()[5:], flags=DATA | TCP_FIN)
    flags = [e.segment.flags & TCP_FIN for e in sent_tcp(out)]
    assert flags[-1] and link.server.stream.endswith(echo_request())


# Teardown by the TCP connection and by the clock.

@pytest.mark.parametrize("who", ["client", "server"])
def test_fin_closes_every_call_and_late_cdn_is_translated(who: str) -> None:
    _, link = collided()
    gw = link.gw
    link.outgoing_call(A, 701)
    link.outgoing_call(8, 702)
    out = link.fin(link.client if who == "client" else link.server)
    assert [g.reason for g in out.logs] == ["TCP FIN", "TCP FIN"]
    assert sum(isinstance(d, RemoveEntries) for d in out.decisions) >= 1
    assert [c for c in gw.calls() if c.conn.client_ip == C1] == []
    assert gw.call_ids.held_down(PUBLIC, SERVER, A + 1, link.now)
    if who == "client":
        link.server_send(cdn(A + 1))
        assert link.client.stream[-148:] == cdn(A)
    link.fin(link.server if who == "client" else link.client)
    assert len(gw.connections()) == 2  # lingers in closing
    gw.tick(link.now + 9)
    assert len(gw.connections()) == 2
    gw.tick(link.now + 10)
    assert len(gw.connections()) == 1


def test_repeated_fin_passes_again() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.fin(link.client)
    again = link.send(link.client, flags=TCP_FIN | TCP_ACK, seq=link.client.snd_nxt - 1)
    assert sent_tcp(again)[0].segment.flags & TCP_FIN


@pytest.mark.parametrize("who", ["client", "server"])
def test_rst_closes_the_connection_and_its_calls(who: str) -> None:
    _, link = collided()
    gw = link.gw
    link.outgoing_call(A, 701)
    out = link.rst(link.client if who == "client" else link.server)
    [emit] = sent_tcp(out)
    assert emit.segment.flags & TCP_RST
    receiver = link.server if who == "client" else link.client
    assert receiver.resets
    assert out.logs[0].reason == "TCP RST"
    assert len(gw.connections()) == 1 and gw.calls_in_progress == 1
    assert gw.counters.connections_reset == 0  # an RST is not the gateway's reset


def test_control_idle_timeout_closes_the_connection() -> None:
    _, link = collided()
    gw = link.gw
    link.outgoing_call(A, 701)
    [call] = [c for c in gw.calls() if c.conn.client_ip == C1]
    up, _ = flows(link.outputs[-1])
    assert up is not None
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up.entry_id, 10, 1000.0)
    # C2's data channel is idle: it keeps its call while its control connection lives.
    assert gw.tick(1100.0).logs == [] and gw.calls_in_progress == 2
    out = gw.tick(1200.5)
    assert call.state is CallState.CLOSED
    assert [g.reason for g in out.logs] == ["control connection idle"] * 2  # C1's and C2's
    assert gw.connections() == []
    assert not any(isinstance(d, RemoveEntries) and d.kind is EntryKind.SESSION
                   for d in out.decisions)


def test_pure_acks_pass_even_when_repeated() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(echo_request())
    first = link.send(link.client, flags=TCP_ACK)
    assert sent_tcp(first)[0].segment.ack == link.client.rcv_nxt
    repeat = link.send(link.client, flags=TCP_ACK)
    assert [e.segment.ack for e in sent_tcp(repeat)] == [link.client.rcv_nxt]


def test_segment_without_ack_or_data_is_dropped() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    out = link.send(link.client, flags=0)
    assert out.emits == []


def test_inbound_segment_without_connection_is_dropped() -> None:
    gw = gateway()
    seg = TcpSegment(SERVER, 1723, PUBLIC, 40000, 1, 0, TCP_SYN, 100)
    out = gw.handle_tcp(Direction.INBOUND, seg, 0.0)
    assert out.emits == [] and gw.counters.no_session_drops == 1
    seg = TcpSegment(C1, 40000, SERVER, 1723, 1, 0, TCP_ACK, 100, echo_request())
    out = gw.handle_tcp(Direction.OUTBOUND, seg, 0.0)
    assert out.emits == [] and gw.counters.no_session_drops == 2


def test_server_data_before_syn_ack_is_not_passed_raw() -> None:
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=TCP_SYN, ack=0)
    link.client.irs = link.server.isn  # pretend: the client saw the SYN-ACK elsewhere
    out = link.send(link.server, ocrp(1, A), seq=link.server.isn + 1)
    [emit] = sent_tcp(out)
    assert emit.segment.payload == b""


def test_exhausted_call_ids_reset_the_connection() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    # Fill the pair's Call ID space from outside the engine.
    for i in range(65536):
        gw.call_ids.allocate(PUBLIC, SERVER, i, 0.0)
    out = link.client_send(ocrq(A))
    assert gw.counters.allocation_failures == 1 and gw.counters.connections_reset == 1
    assert out.errors and link.reset_received() == (True, True)
    assert list(gw.calls()) == []


def test_exhausted_call_ids_on_incoming_reply() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(icrq(3))
    for i in range(65536):
        gw.call_ids.allocate(PUBLIC, SERVER, i, 0.0)
    link.client_send(icrp(A, 3))
    assert gw.counters.allocation_failures == 1 and list(gw.calls()) == []


def test_messages_stay_whole_when_parsed() -> None:
    link = collided()[1]
    link.client_send(ocrq(A))
    msg = link.last_to_server()
    assert isinstance(msg, OutgoingCallRequest) and msg.call_id == A + 1
    link.client_send(stopccrq())
    assert link.server.stream.endswith(stopccrq())


def test_client_data_before_the_syn_ack_is_not_read() -> None:
    # Nothing of the ALG runs before the handshake is complete (it used to read this data
    # and reset the connection on a malformed message).
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=TCP_SYN, ack=0)
    out = link.send(link.client, _corrupt(echo_request(), 4), flags=TCP_ACK)
    assert gw.counters.connections_reset == 0 and gw.counters.malformed_messages == 0
    [seg] = sent_tcp(out)  # the header goes on without the payload
    assert seg.direction is Direction.OUTBOUND and seg.segment.payload == b""
    assert len(gw.connections()) == 1


def test_server_reusing_its_call_id_across_connections_of_one_client() -> None:
    """Two connections of C1 to one server; the server gives both calls c = 700."""
    gw = gateway()
    first = ControlLink(gw, C1, 40000).start()
    second = ControlLink(gw, C1, 40002).start()
    first.outgoing_call(1, 700)
    second.outgoing_call(2, 700)
    first.client_send(ccrq(1))
    assert gw.calls_in_progress == 1
    second.client_send(ccrq(2))
    assert gw.calls_in_progress == 0 and gw.inbound_gre_path(SERVER, PUBLIC) is None


def test_tcp_keepalive_and_window_update_pass() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.server_send(echo_request())
    link.send(link.client, flags=TCP_ACK)
    keepalive = link.send(link.client, flags=TCP_ACK, seq=link.client.snd_nxt - 1)
    assert [e.segment.seq for e in sent_tcp(keepalive)] == [link.client.snd_nxt - 1]
    seg = TcpSegment(C1, 40000, SERVER, 1723, link.client.snd_nxt, link.client.rcv_nxt,
                     TCP_ACK, 9999)
    [update] = sent_tcp(gw.handle_tcp(Direction.OUTBOUND, seg, 0.0))
    assert update.segment.window == 9999


# Retransmissions, lost ACKs, RST checks, reuse of a 4-tuple.

def test_a_retransmission_is_answered_with_the_bytes_first_forwarded() -> None:
    _, link = collided()
    start = link.sent(link.client)
    link.client_send(echo_request(1))
    forged = ocrq(A)[:16]  # a "retransmission" whose bytes differ from what passed
    out = link.client_send(forged, seq=link.seq_at(link.client, start))
    [replay] = sent_tcp(out)
    assert replay.segment.payload == echo_request(1)
    assert link.gw.counters.retransmitted_segments == 1


def test_a_retransmission_of_acknowledged_bytes_repeats_the_ack() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    start = link.sent(link.client)
    link.client_send(echo_request(1))
    link.send(link.server, flags=TCP_ACK)
    out = link.client_send(echo_request(1), seq=link.seq_at(link.client, start))
    [ack] = sent_tcp(out)
    assert ack.direction is Direction.INBOUND
    assert (ack.segment.src_ip, ack.segment.dst_ip) == (SERVER, C1)
    assert ack.segment.ack == link.seq_at(link.client, start + 16)
    assert ack.segment.flags == TCP_ACK


def test_an_rst_outside_the_window_is_dropped() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.outgoing_call(A, 9)
    in_window = link.server.snd_nxt
    out = link.send(link.server, flags=TCP_RST, seq=in_window + 200000, ack=0)
    assert out.emits == [] and gw.counters.out_of_window_drops == 1
    assert gw.calls_in_progress == 1
    link.send(link.server, flags=TCP_RST, seq=in_window, ack=0)
    assert gw.calls_in_progress == 0 and gw.connections() == []


def test_a_new_syn_on_the_same_four_tuple_starts_a_new_connection() -> None:
    gw = gateway()
    old = ControlLink(gw).start()
    old.outgoing_call(A, 9)
    new = ControlLink(gw, client_isn=77777).start()
    assert gw.calls_in_progress == 0 and len(gw.connections()) == 1
    assert new.outgoing_call(A + 3, 10) == A + 3
    retransmitted_syn = new.send(new.client, flags=TCP_SYN, seq=77777, ack=0)
    assert sent_tcp(retransmitted_syn) and gw.calls_in_progress == 1


def test_a_blind_segment_outside_the_window_moves_nothing() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    start = link.sent(link.client)
    link.client_send(echo_request(1))
    far = link.server.snd_nxt + (1 << 30)
    spoof = link.send(link.server, flags=TCP_ACK, seq=far,
                      ack=link.seq_at(link.client, start + 16))
    assert spoof.emits == [] and gw.counters.out_of_window_drops == 1
    replay = link.client_send(echo_request(1), seq=link.seq_at(link.client, start))
    [again] = sent_tcp(replay)
    assert again.direction is Direction.OUTBOUND and again.segment.payload == echo_request(1)


def test_an_rst_before_the_syn_ack_must_answer_the_syn() -> None:
    gw = gateway()
    link = ControlLink(gw)
    link.send(link.client, flags=TCP_SYN, ack=0)
    blind = link.send(link.server, flags=TCP_RST, ack=0)
    assert blind.emits == [] and gw.connections()
    answer = link.send(link.server, flags=TCP_RST | TCP_ACK, ack=link.client.isn + 1)
    assert sent_tcp(answer) and gw.connections() == []


def test_the_reset_after_a_fin_lands_after_the_fin() -> None:
    gw = gateway()
    link = ControlLink(gw).start()
    link.fin(link.server)
    fin_end = link.server.snd_nxt
    out = link.client_send(ocrq(A)[:20] + b"\xff" * 148)
    resets = [e.segment for e in sent_tcp(out) if e.segment.flags & TCP_RST]
    to_client = [r for r in resets if r.dst_ip == C1]
    assert [r.seq for r in to_client] == [fin_end]
