"""A controller restart: the core's records, its restore, and the reconciliation with the
switch (``alg.snapshot``, ``Gateway.restore``, ``Gateway.reconcile``, the relay's
resynchronisation).

Each test drives real control dialogues (``pptp_flows``) through one gateway, keeps what
the journal gave as a store would, builds a second gateway from it as a restarted
controller does, and goes on with the same peers.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

from alg.calls import CallState
from alg.codec import CallClearRequest, OutgoingCallRequest, StartControlConnectionRequest
from alg.engine import Gateway
from alg.events import (
    TCP_ACK,
    Direction,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    GrePacket,
    IcmpEcho,
    RemoveEntries,
    SessionEntries,
    UdpDatagram,
)
from alg.relay import RESYNC_SPAN
from alg.servermap import GrePath
from alg.snapshot import CallRecord, Forget, HeldRecord, SessionRecord, Snapshot
from tests.unit.pptp_flows import (
    C1,
    C2,
    DATA,
    PUBLIC,
    SERVER,
    ControlLink,
    ccrq,
    echo_request,
    gateway,
    gre,
    ocrq,
    sccrp,
    sccrq,
    sent_tcp,
)

REMOTE = IPv4Address("198.51.100.9")


def stored(gw: Gateway, snapshot: Snapshot | None = None) -> Snapshot:
    """What a store holds after writing every change the gateway noted so far."""
    snapshot = snapshot if snapshot is not None else Snapshot()
    snapshot.apply(gw.journal.drain())
    return snapshot


def restarted(snapshot: Snapshot, installed: dict[tuple[EntryKind, int], int] | None = None,
              now: float = 10.0) -> tuple[Gateway, list[object]]:
    gw = gateway()
    out = gw.restore(snapshot, installed or {}, now)
    return gw, list(out.decisions)


def call_then_restart(echoes: bool = False) -> tuple[ControlLink, Gateway]:
    """C1's call 5 (server 900), echoes both ways if asked, then a restart: the link
    goes on with the restored gateway."""
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    if echoes:
        link.client_send(echo_request())
        link.server_send(echo_request())
    new, _ = restarted(stored(gw))
    link.gw = new
    return link, new


def test_a_restored_call_keeps_its_ids_and_blocks_them_for_new_calls() -> None:
    gw = gateway()
    first = ControlLink(gw, C1, 40000).start()
    b = first.outgoing_call(5, 900)
    snapshot = stored(gw)
    assert [r.state for r in snapshot.calls] == ["established"]
    assert len(snapshot.connections) == 1 and len(snapshot.sessions) == 1

    new, decisions = restarted(snapshot)
    [call] = list(new.calls())
    assert (call.state, call.client_call_id, call.public_call_id, call.server_call_id) == (
        CallState.ESTABLISHED, 5, b, 900)
    assert new.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW
    assert any(isinstance(d, GreInboundEntry) and d.client_ip == C1 for d in decisions)
    assert any(isinstance(d, GreOutboundEntry) for d in decisions)

    second = ControlLink(new, C2, 40001).start()
    assert second.public_port != first.public_port
    assert second.outgoing_call(5, 901) != b
    assert new.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER


def test_teardown_after_a_restart_resynchronises_and_translates() -> None:
    link, new = call_then_restart(echoes=True)

    out = link.client_send(ccrq(5))
    assert out.drop_reason is not None and new.counters.resync_probes == 1
    [probe] = sent_tcp(out)
    assert probe.direction is Direction.OUTBOUND and not probe.segment.payload
    assert not isinstance(link.server.messages()[-1], CallClearRequest)
    # The server answers the probe with its acknowledgement; the client repeats.
    link.send(link.server)
    out = link.client_send(ccrq(5), seq=link.seq_at(link.client, link.sent(link.client) - 16))
    assert isinstance(link.server.messages()[-1], CallClearRequest)
    assert list(new.calls()) == []
    assert any(isinstance(d, RemoveEntries) for d in out.decisions)
    assert link.server.conflicts == [] and link.client.resets == []


def test_a_restart_inside_a_message_resets_and_never_leaks_an_id() -> None:
    link, new = call_then_restart()
    request = ocrq(6)
    # The server acknowledged the first 10 bytes of the request before the restart.
    sent = link.sent(link.client)
    link.client.snd_nxt = link.seq_at(link.client, sent + 10)
    link.server.received.update(
        {len(link.server.stream) + i: byte for i, byte in enumerate(request[:10])})
    link.send(link.server)
    out = link.client_send(request[10:])
    assert new.counters.connections_reset == 1 and link.client.resets
    assert all(not s.segment.payload for s in sent_tcp(out))
    assert list(new.calls()) == []


def test_a_spoofed_acknowledgement_far_away_is_not_adopted() -> None:
    link, new = call_then_restart()
    far = link.seq_at(link.client, link.sent(link.client) + RESYNC_SPAN + 1)
    link.send(link.server, ack=far)
    out = link.client_send(ccrq(5))
    assert out.drop_reason is not None and new.counters.resync_probes == 1


def test_hold_down_survives_a_restart() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    b = link.outgoing_call(5, 900)
    link.client_send(ccrq(5))
    snapshot = stored(gw)
    assert [r.call_id for r in snapshot.held] == [b]
    new, _ = restarted(snapshot, now=1.0)
    assert new.call_ids.held_down(PUBLIC, SERVER, b, 1.0)
    other = ControlLink(new, C2, 40001, now=1.0).start()
    assert other.outgoing_call(5, 901) != b


def test_closing_the_connection_forgets_its_records() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    link.rst(link.client)
    stored(gw, snapshot)
    assert snapshot.sessions == [] and snapshot.connections == [] and snapshot.calls == []
    assert len(snapshot.held) == 1


def test_records_contradicting_each_other_are_left_out_and_forgotten() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    [session] = snapshot.sessions
    clash = SessionRecord(99, 6, C2, 40000, session.public_ip, session.public_port,
                          session.remote_ip, session.remote_port)
    [call] = snapshot.calls
    orphan = CallRecord(77, 12345, True, "established", 1, 1, 1, None, 0.0)
    broken = CallRecord(78, session.id, True, "established", 2, None, 3, None, 0.0)
    snapshot.sessions.append(clash)
    snapshot.calls += [orphan, broken]
    new = gateway()
    out = new.restore(snapshot, {}, 10.0)
    assert Forget("session", 99) in out.records
    assert Forget("call", 77) in out.records and Forget("call", 78) in out.records
    assert new.counters.restore_skipped == 3
    assert [c.index for c in new.calls()] == [call.index]


def test_expired_hold_downs_are_dropped_and_far_ones_clamped() -> None:
    snapshot = Snapshot(held=[
        HeldRecord(PUBLIC, SERVER, 1, 5.0),
        HeldRecord(PUBLIC, SERVER, 2, 1e9),
    ])
    new = gateway()
    out = new.restore(snapshot, {}, 10.0)
    assert Forget("held", (PUBLIC, SERVER, 1)) in out.records
    assert new.call_ids.held_down(PUBLIC, SERVER, 2, 10.0)
    assert not new.call_ids.held_down(PUBLIC, SERVER, 2, 10.0 + new.config.call_id_hold_down)


def test_reconcile_installs_what_is_missing_then_removes_strangers() -> None:
    gw = gateway()
    out = gw.handle(Direction.OUTBOUND, UdpDatagram(C1, 5000, REMOTE, 53), 0.0)
    [entries] = [d for d in out.decisions if isinstance(d, SessionEntries)]
    sid = entries.session.id
    gw.handle(Direction.OUTBOUND, IcmpEcho(C1, REMOTE, 7, True), 0.0)
    installed = {(EntryKind.SESSION, sid): 2, (EntryKind.SESSION, 500): 2,
                 (EntryKind.GRE_INBOUND, 700): 1, (EntryKind.PIPELINE, 0): 9}
    out = gw.reconcile(installed)
    assert out.decisions == [RemoveEntries(EntryKind.SESSION, 500),
                             RemoveEntries(EntryKind.GRE_INBOUND, 700)]
    out = gw.reconcile({})
    assert [type(d) for d in out.decisions] == [SessionEntries]
    fresh = gw.handle(Direction.OUTBOUND, UdpDatagram(C1, 5001, REMOTE, 53), 0.0)
    [entries] = [d for d in fresh.decisions if isinstance(d, SessionEntries)]
    assert entries.session.id > 500


def test_an_intact_switch_gets_no_flow_mod_after_a_restart() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    out = gw.handle(Direction.OUTBOUND, UdpDatagram(C1, 5000, REMOTE, 53), 0.0)
    [session] = [d.session for d in out.decisions if isinstance(d, SessionEntries)]
    snapshot = Snapshot()
    snapshot.apply(out.records)
    [call] = snapshot.calls
    assert call.outbound_entry is not None and call.inbound_entry is not None
    on_switch = {(EntryKind.GRE_OUTBOUND, call.outbound_entry): 1,
                 (EntryKind.GRE_INBOUND, call.inbound_entry): 1,
                 (EntryKind.SESSION, session.id): 2, (EntryKind.PIPELINE, 0): 12,
                 (EntryKind.CONTROL, gw.connections()[0].session.id): 1}
    new, decisions = restarted(snapshot, on_switch)
    assert decisions == []
    assert new.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW


def test_a_restore_installs_what_is_missing_before_removing_strangers() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    strangers = {(EntryKind.GRE_OUTBOUND, 1000): 1, (EntryKind.GRE_INBOUND, 1001): 1}
    _, decisions = restarted(snapshot, strangers)
    kinds = [type(d) for d in decisions]
    assert kinds.index(RemoveEntries) > max(
        kinds.index(GreOutboundEntry), kinds.index(GreInboundEntry))
    assert {d.entry_id for d in decisions if isinstance(d, RemoveEntries)} == {1000, 1001}
    [call] = snapshot.calls
    assert {d.entry_id for d in decisions if isinstance(d, GreInboundEntry | GreOutboundEntry)
            } == {call.outbound_entry, call.inbound_entry}


def test_a_handshake_in_progress_completes_after_a_restart() -> None:
    gw = gateway()
    link = ControlLink(gw, C1)
    link.send(link.client, flags=0x02, ack=0)
    new, _ = restarted(stored(gw))
    link.gw = new
    link.send(link.server, flags=0x12, ack=(link.client.isn + 1) % (1 << 32))
    link.send(link.client, flags=0x10)
    link.client_send(sccrq())
    link.server_send(sccrp())
    assert link.outgoing_call(5, 900) == 5
    assert [type(m) for m in link.server.messages()] == [
        StartControlConnectionRequest, OutgoingCallRequest]
    assert new.counters.resync_probes == 0


def test_every_state_change_of_a_call_is_noted_not_every_segment() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    gw.journal.drain()
    link.client_send(echo_request())
    link.server_send(echo_request())
    assert len(gw.journal) == 0
    link.outgoing_call(5, 900)
    changes = gw.journal.drain()
    assert {type(c).__name__ for c in changes} == {"CallRecord", "ConnectionRecord"}


# Found by review: each failed before its fix.

def test_a_segment_lost_at_the_restart_is_read_again_from_the_retransmission() -> None:
    """The record is written before the packet-out: the segment that made it may never
    have left. The receiver's acknowledgement then lies behind the record."""
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    request = ocrq(6)
    seq = link.client.snd_nxt
    seg = link._segment(link.client, seq, link.client.rcv_nxt, DATA, request)
    gw.handle_tcp(Direction.OUTBOUND, seg, link.now)  # recorded, then lost
    link.client.snd_nxt = (seq + len(request)) % (1 << 32)
    new, _ = restarted(stored(gw))
    link.gw = new
    for _ in range(5):
        link.send(link.server, flags=TCP_ACK)
        link.client_send(request, seq=seq)
    requests = [m for m in link.server.messages() if isinstance(m, OutgoingCallRequest)]
    assert len(requests) == 2
    assert [c.public_call_id for c in new.calls()] == [5, 6]


def test_a_blind_acknowledgement_with_an_implausible_sequence_number_places_nothing() -> None:
    link, new = call_then_restart(echoes=True)
    bogus_seq = (link.server.snd_nxt + (1 << 31)) % (1 << 32)
    bogus_ack = link.seq_at(link.client, link.sent(link.client) + 4096)
    seg = link._segment(link.server, bogus_seq, bogus_ack, TCP_ACK, b"")
    link.deliver(new.handle_tcp(Direction.INBOUND, seg, 0.0))
    start = link.client.snd_nxt
    for _ in range(3):
        link.client_send(ccrq(5), seq=start)
        link.send(link.server, flags=TCP_ACK)
    assert any(isinstance(m, CallClearRequest) for m in link.server.messages())


def test_an_rst_while_resynchronising_is_not_passed() -> None:
    link, new = call_then_restart()
    out = link.rst(link.server)
    assert link.client.resets == [] and new.counters.resync_probes == 1
    assert [e.direction for e in sent_tcp(out)] == [Direction.INBOUND]
    assert len(new.connections()) == 1


def test_restored_closed_calls_end_their_hold_down_in_time() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    link.outgoing_call(6, 901)
    hold = gw.config.call_id_hold_down
    link.client_send(ccrq(6))
    link.now = hold / 2
    link.client_send(ccrq(5))
    snapshot = stored(gw)
    late, early = sorted(snapshot.calls, key=lambda r: r.index)
    assert early.hold_until < late.hold_until
    new = gateway()
    new.restore(snapshot, {}, hold / 2 + 1)
    out = new.tick(hold + 1)
    [conn] = new.connections()
    assert Forget("call", early.index) in out.records
    assert conn.calls.held == 1


def test_restore_keeps_every_call_the_live_core_had() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    link.incoming_call(700, 5)  # the client answers with Call ID 5 again
    before = sorted((c.index, c.state.value) for c in gw.calls())
    assert len(before) == 2
    new, _ = restarted(stored(gw))
    assert sorted((c.index, c.state.value) for c in new.calls()) == before
    assert new.counters.restore_skipped == 0


def test_alg_off_gre_bindings_survive_a_controller_restart() -> None:
    gw = gateway(alg_enabled=False)
    out = gw.handle(Direction.OUTBOUND, GrePacket(C1, SERVER, gre(5)), 0.0)
    ids = {(EntryKind.GRE_OUTBOUND, d.entry_id) for d in out.decisions
           if isinstance(d, GreOutboundEntry)}
    ids |= {(EntryKind.GRE_INBOUND, d.entry_id) for d in out.decisions
            if isinstance(d, GreInboundEntry)}
    snapshot = Snapshot()
    snapshot.apply(out.records)
    new = gateway(alg_enabled=False)
    restored = new.restore(snapshot, dict.fromkeys(ids, 1), 1.0)
    assert restored.decisions == []
    back = new.handle(Direction.INBOUND, GrePacket(SERVER, PUBLIC, gre(5)), 1.0)
    assert back.drop_reason is None


def test_a_restart_with_the_alg_switched_leaves_out_what_no_longer_fits() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    off = gateway(alg_enabled=False)
    out = off.restore(snapshot, {}, 1.0)
    assert list(off.calls()) == [] and off.connections() == []
    assert [s.remote_port for s in off.nat.sessions()] == [1723]
    assert Forget("connection", snapshot.connections[0].session_id) in out.records
    snapshot.connections.clear()
    snapshot.calls.clear()
    on = gateway()
    out = on.restore(snapshot, {}, 1.0)
    assert len(on.nat) == 0 and on.counters.restore_skipped == 1


def test_what_a_restore_changed_is_written_back() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    [call] = snapshot.calls
    snapshot.calls = [dataclasses.replace(call, inbound_entry=call.outbound_entry)]
    new = gateway()
    out = new.restore(snapshot, {}, 1.0)
    [written] = [r for r in out.records if isinstance(r, CallRecord)]
    assert written.outbound_entry == call.outbound_entry
    assert written.inbound_entry not in (None, call.outbound_entry)


def test_records_with_values_of_the_wrong_type_or_range_never_reach_the_core() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 900)
    snapshot = stored(gw)
    [session], [call] = snapshot.sessions, snapshot.calls
    bad = [
        dataclasses.replace(call, index=call.index + 1, public_call_id=6.0),  # fractional
        dataclasses.replace(call, index=call.index + 2, public_call_id=7,
                            inbound_entry=(1 << 48) + call.inbound_entry),  # aliases
        dataclasses.replace(call, index=1 << 48, public_call_id=8),  # beyond the cookie
    ]
    snapshot.calls += bad
    snapshot.sessions.append(dataclasses.replace(session, id=99, inside_port=40001.5))
    snapshot.held += [HeldRecord(PUBLIC, SERVER, 9, float("nan")),
                      HeldRecord(PUBLIC, SERVER, 10, float("inf")),
                      HeldRecord(PUBLIC, SERVER, 11.0, 12.0)]
    new = gateway()
    out = new.restore(snapshot, {}, 10.0)
    assert new.counters.restore_records_rejected == 7
    assert new.counters.restore_failures == 0
    assert [c.index for c in new.calls()] == [call.index]
    assert [s.id for s in new.nat.sessions()] == [session.id]
    for call_id in (9, 10):  # a NaN or endless hold-down is not adopted
        assert not new.call_ids.held_down(PUBLIC, SERVER, call_id, 10.0)
    assert len(out.errors) == 1 and "7 records" in out.errors[0]
    assert next(new.ids) < 1 << 48  # the id beyond the cookie raised nothing


def test_a_hosts_held_down_ids_still_count_against_its_share_after_a_restart() -> None:
    """A host that churned up to its share of a pair's Call IDs before a restart is still
    refused after it, and another host is not."""
    gw = gateway(max_call_ids_per_host=3)
    link = ControlLink(gw, C1, 40000).start()
    for n in range(3):
        link.outgoing_call(n, 700 + n)
        link.client_send(ccrq(n))
    link.rst(link.client)
    saved = Snapshot()
    saved.apply(gw.journal.drain())
    assert {r.host for r in saved.held} == {C1}
    again = gateway(max_call_ids_per_host=3)
    again.restore(saved, {}, 1.0)
    churner = ControlLink(again, C1, 40001, now=1.0).start()
    churner.client_send(ocrq(9))
    assert again.counters.refused_calls == 1
    other = ControlLink(again, C2, 40000, now=1.0).start()
    assert other.outgoing_call(9, 709) == 9
