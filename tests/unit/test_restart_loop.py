"""Restarts of the controller and of the switch, closed loop: the real app with its store
on the fake switch, peers that answer as real ones do.

A controller restart is a new :class:`~ryu_apps.nat_gateway.NatGateway` on the same
state file connecting to the same switch, whose entries stayed (``fail-mode=secure``); a
switch restart is the same app seeing the switch come back with no entries and no
meters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alg.calls import CallState
from alg.codec import CallClearRequest, CallDisconnectNotify
from alg.events import EntryKind
from ryu_apps import switch
from ryu_apps.framework import ofproto_v1_3_parser as parser
from ryu_apps.lifecycle import SwitchState
from ryu_apps.nat_gateway import NatGateway
from ryu_apps.store import Store
from tests.unit.app_env import PUBLIC, SERVER
from tests.unit.test_closed_loop import CLIENT1, CLIENT2, Dialled, Lab, build_lab, check_clean

SEQ_MOD = 1 << 32


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    return build_lab(monkeypatch, state_file=str(tmp_path / "state.sqlite"))


def restart_controller(lab: Lab) -> NatGateway:
    """A new app process on the same store; the switch keeps its entries."""
    assert lab.app.store is not None
    lab.app.store.close()
    app = NatGateway()
    app.now = lab.clock  # type: ignore[method-assign]
    lab.app = app
    lab.switch.connect(app)
    lab.settle()
    # The meters exist: their ADDs are refused (harmless, see flowmods.meters).
    assert all(e.startswith("meter-mod 0 of meter") for e in lab.switch.errors)
    lab.switch.errors.clear()
    return app


def restart_switch(lab: Lab) -> None:
    """The switch comes back empty (ovs-vswitchd restarted without saved flows)."""
    lab.switch.table.clear()
    lab.switch.meters.clear()
    lab.switch.connect(lab.app)
    lab.settle()


def flow_adds(lab: Lab, kinds: set[EntryKind]) -> list[object]:
    return [m for m in lab.switch.sent if isinstance(m, parser.OFPFlowMod)
            and m.command == 0 and (switch.decode_cookie(m.cookie) or (None,))[0] in kinds]


def gre_both_ways_on_flow_entries(lab: Lab, d: Dialled) -> None:
    lab.forget()
    lab.pac.send_gre(d.server_call, 1)
    d.link.send_gre(d.call, 1)
    lab.settle()
    assert lab.switch.packet_ins == []
    assert [g.call_id for g in lab.client1.gre] == [d.call.call_id]
    assert [g.sequence for g in lab.server.gre] == [1]


def retransmit(conn: object, data: bytes) -> None:
    """The client's TCP repeats its last segment (the fake peers have no timers)."""
    conn.snd_nxt = (conn.snd_nxt - len(data)) % SEQ_MOD  # type: ignore[attr-defined]
    conn.send(data)  # type: ignore[attr-defined]


def test_a_call_lives_through_a_controller_restart(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    gre_cookies = lab.gre_cookies()
    lab.switch.sent.clear()
    app = restart_controller(lab)

    assert flow_adds(lab, {EntryKind.SESSION, EntryKind.GRE_INBOUND, EntryKind.GRE_OUTBOUND}
                     ) == []
    assert lab.gre_cookies() == gre_cookies
    [call] = list(app.core.calls())
    assert (call.state, call.client_call_id, call.public_call_id) == (
        CallState.ESTABLISHED, 4242, 4242)
    assert app.counters.restores == 1 and app.core.counters.restore_skipped == 0

    gre_both_ways_on_flow_entries(lab, d)

    # A second client with the same Call ID gets another one: 4242 is still taken.
    other = lab.dial(lab.client2, 4242, src_port=40001)
    assert other.server_call.peer_call_id != 4242
    assert app.core.inbound_gre_path(SERVER, PUBLIC) == "controller"

    # The first call's teardown: its direction resynchronises, then it is translated.
    clear = CallClearRequest(call_id=4242).encode()
    d.link.clear(d.call)
    lab.settle()
    assert app.core.counters.resync_probes == 1
    retransmit(d.link.conn, clear)
    lab.settle()
    assert d.server_call.cleared and d.call.disconnected
    assert isinstance(d.link.messages[-1], CallDisconnectNotify)
    assert [c.client_call_id for c in app.core.calls()] == [4242]
    assert app.core.counters.connections_reset == 0
    check_clean(lab)


def test_new_entries_after_a_restart_take_ids_above_the_switchs(lab: Lab) -> None:
    lab.dial(lab.client1, 4242)
    lab.client1.send_udp(SERVER, 5000, 53, b"q")
    lab.settle()
    before = {e.cookie for e in lab.switch.table}
    restart_controller(lab)
    lab.client2.send_udp(SERVER, 5001, 53, b"q")
    lab.dial(lab.client2, 7, src_port=40001)
    lab.settle()
    after = {e.cookie for e in lab.switch.table} - before
    assert after
    decoded = [switch.decode_cookie(c) for c in before]
    highest = {kind: max(i for k, i in filter(None, decoded) if k is kind)
               for kind in (EntryKind.SESSION, EntryKind.GRE_INBOUND)}
    for cookie in after:
        found = switch.decode_cookie(cookie)
        assert found is not None and found[0] is not EntryKind.PIPELINE
        kind, entry_id = found
        assert entry_id > highest[EntryKind.SESSION if kind is EntryKind.SESSION
                                  else EntryKind.GRE_INBOUND]
    assert before <= {e.cookie for e in lab.switch.table}
    check_clean(lab)


def test_a_call_lives_through_a_switch_restart(lab: Lab) -> None:
    d = lab.dial(lab.client1, 4242)
    lab.client1.send_udp(SERVER, 5000, 53, b"q")
    lab.settle()
    cookies = {e.cookie for e in lab.switch.table}
    restart_switch(lab)
    assert {e.cookie for e in lab.switch.table} == cookies
    assert lab.app.counters.reconciliations == 1
    gre_both_ways_on_flow_entries(lab, d)
    check_clean(lab)


def test_packet_ins_before_the_reconciliation_are_dropped_and_counted(lab: Lab) -> None:
    lab.dial(lab.client1, 4242)
    app = lab.app
    app.switch.state = SwitchState.RECONCILE
    lab.client1.send_udp(SERVER, 5000, 53, b"q")
    lab.settle()
    assert app.counters.packet_ins_before_ready == 1
    assert lab.server.datagrams == []


def test_the_store_holds_what_the_core_noted(lab: Lab, tmp_path: Path) -> None:
    lab.dial(lab.client1, 4242)
    lab.dial(lab.client2, 4242, src_port=40001)
    snapshot = Store(tmp_path / "state.sqlite").load()
    assert sorted((c.client_call_id, c.public_call_id) for c in snapshot.calls) == [
        (4242, 4242), (4242, 4243)]
    assert {s.inside_ip for s in snapshot.sessions} == {CLIENT1, CLIENT2}
    assert len(snapshot.connections) == 2 and all(
        c.server_isn is not None for c in snapshot.connections)
