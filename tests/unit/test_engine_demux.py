"""The demux path of the server-map: a shared pair's server -> client GRE goes to the GRE
demultiplexer while it answers its heartbeat, with a table entry per call and a return
entry per client; back to the controller when it stops; hold-down by deletion."""

from __future__ import annotations

from alg.engine import Gateway
from alg.events import (
    DemuxEntry,
    DemuxForget,
    DemuxReturnEntry,
    EntryKind,
    GreInboundEntry,
    Output,
    RemoveEntries,
)
from alg.servermap import GrePath
from tests.unit.pptp_flows import C1, C2, PUBLIC, SERVER, ControlLink, ccrq, down_gre, gateway

A = 5


def of(kind: type, outputs: list[Output]) -> list[object]:
    return [d for out in outputs for d in out.decisions if isinstance(d, kind)]


def shared(gw: Gateway) -> tuple[ControlLink, ControlLink, int]:
    """C1 and C2 both call with Call ID A; C2's becomes b."""
    l1 = ControlLink(gw, C1).start()
    l2 = ControlLink(gw, C2).start()
    l1.outgoing_call(A, 700)
    b = l2.outgoing_call(A, 701)
    assert b != A
    return l1, l2, b


def test_without_a_demultiplexer_nothing_changes() -> None:
    gw = gateway()
    l1, l2, _ = shared(gw)
    assert not of(DemuxEntry, l1.outputs + l2.outputs)
    assert gw.demux_available(True, 0.0).decisions == []
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER


def test_every_call_gets_a_table_entry_and_every_client_a_return_entry() -> None:
    gw = gateway(gre_demux=True)
    l1, l2, b = shared(gw)
    assert of(DemuxEntry, l1.outputs + l2.outputs) == [
        DemuxEntry(SERVER, PUBLIC, A, C1, A), DemuxEntry(SERVER, PUBLIC, b, C2, A)]
    returns = of(DemuxReturnEntry, l1.outputs + l2.outputs)
    assert [r.client_ip for r in returns] == [C1, C2]  # type: ignore[attr-defined]
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER  # not answering yet


def test_the_pair_moves_to_the_demultiplexer_when_it_answers_and_back_when_it_stops() -> None:
    gw = gateway(gre_demux=True)
    l1, _, b = shared(gw)
    pair = of(GreInboundEntry, l1.outputs)[0].entry_id  # type: ignore[attr-defined]
    up = gw.demux_available(True, 1.0)
    assert GreInboundEntry(pair, SERVER, PUBLIC, None, 300.0, via_demux=True) in up.decisions
    assert DemuxEntry(SERVER, PUBLIC, b, C2, A) in up.decisions  # the table again
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.DEMUX
    assert gw.demux_available(True, 1.5).decisions == []
    down = gw.demux_available(False, 2.0)
    assert down.decisions == [GreInboundEntry(pair, SERVER, PUBLIC, None, 300.0)]
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    # the controller path carries the calls meanwhile
    [send] = [e for e in down_gre(gw, PUBLIC, b, 2.5).emits]
    assert send.dst_ip == C2  # type: ignore[union-attr]


def test_a_lone_call_keeps_the_flow_path() -> None:
    gw = gateway(gre_demux=True)
    link = ControlLink(gw, C1).start()
    link.outgoing_call(A, 700)
    gw.demux_available(True, 1.0)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.FLOW


def test_an_ended_call_leaves_the_table_and_its_client_the_return_entry() -> None:
    gw = gateway(gre_demux=True)
    _, l2, b = shared(gw)
    gw.demux_available(True, 1.0)
    back = of(DemuxReturnEntry, l2.outputs)[0].entry_id  # type: ignore[attr-defined]
    out = l2.client_send(ccrq(A))
    assert DemuxForget(SERVER, PUBLIC, b) in out.decisions
    assert RemoveEntries(EntryKind.DEMUX_RETURN, back) in out.decisions
    # a late packet of the released b reaching the controller finds no call either
    late = down_gre(gw, PUBLIC, b, 2.0)
    assert late.emits == [] and gw.counters.gre_unknown_dropped == 1
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.DEMUX  # b is held down


def test_two_calls_of_one_client_share_its_return_entry() -> None:
    gw = gateway(gre_demux=True)
    l1, _, _ = shared(gw)
    l1.outgoing_call(A + 10, 702)
    assert len(of(DemuxReturnEntry, l1.outputs)) == 1
    out = l1.client_send(ccrq(A + 10))
    assert not any(isinstance(d, RemoveEntries) and d.kind is EntryKind.DEMUX_RETURN
                   for d in out.decisions)


def test_the_demultiplexers_counts_become_the_calls_and_keep_it_alive() -> None:
    gw = gateway(gre_demux=True)
    _, _, b = shared(gw)
    call = next(c for c in gw.calls() if c.public_call_id == b)
    before = call.last_data
    gw.demux_counts(call, 10, 1000, before + 50)
    gw.demux_counts(call, 12, 1200, before + 60)
    assert (call.inbound_packets, call.inbound_bytes) == (12, 1200)
    assert call.last_data == before + 60
    gw.demux_counts(call, 12, 1200, before + 70)
    assert call.last_data == before + 60
    gw.demux_counts(call, 3, 300, before + 80)  # the entry was written again: from 0
    assert (call.inbound_packets, call.inbound_bytes) == (15, 1500)


def test_a_reconnected_switch_gets_the_return_entries_again() -> None:
    gw = gateway(gre_demux=True)
    shared(gw)
    out = gw.reconcile({})
    assert {d.client_ip for d in out.decisions  # type: ignore[union-attr]
            if isinstance(d, DemuxReturnEntry)} == {C1, C2}
    kept = {(EntryKind.DEMUX_RETURN, d.entry_id) for d in out.decisions  # type: ignore[union-attr]
            if isinstance(d, DemuxReturnEntry)}
    again = gw.reconcile(dict.fromkeys(kept, 1))
    assert not any(isinstance(d, RemoveEntries) and d.kind is EntryKind.DEMUX_RETURN
                   for d in again.decisions)


def test_the_option_turns_the_core_on() -> None:
    from alg.config import load
    base = {"inside_ports": "c1", "outside_port": "out", "inside_gateway": "192.168.1.254",
            "inside_subnet": "192.168.1.0/24", "outside_subnet": "203.0.113.0/24",
            "public_ips": "203.0.113.2"}
    assert not load(base).alg.gre_demux
    on = load({**base, "gre_demux_port": "dmx", "gre_demux_dir": "/sys/fs/bpf/x"})
    assert on.alg.gre_demux and on.gre_demux_port == "dmx"
    for bad, key in (({"gre_demux_port": "dmx"}, "nat.gre_demux_dir"),
                     ({"gre_demux_port": "out", "gre_demux_dir": "/d"}, "nat.gre_demux_port")):
        try:
            load({**base, **bad})
        except Exception as exc:
            assert key in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")



def test_return_entries_are_named_by_their_clients_so_a_restart_finds_them() -> None:
    gw = gateway(gre_demux=True)
    shared(gw)
    out = gw.reconcile({})
    assert {(d.entry_id, d.client_ip) for d in out.decisions  # type: ignore[union-attr]
            if isinstance(d, DemuxReturnEntry)} == {(int(C1), C1), (int(C2), C2)}
    again = gw.reconcile({(EntryKind.DEMUX_RETURN, int(C1)): 1})
    assert [d.client_ip for d in again.decisions  # type: ignore[union-attr]
            if isinstance(d, DemuxReturnEntry)] == [C2]
    assert not any(isinstance(d, RemoveEntries) for d in again.decisions)
    assert next(gw.ids) < 100  # the core's own ids do not jump above the addresses


def test_a_return_entry_not_installed_keeps_its_clients_pairs_off_the_demux_path() -> None:
    """A restarted controller may not have resolved a client yet: the pair takes the
    controller path (which resolves it) until the return entry is in, then the demux
    path, never the demux path before (its GRE would find no way back)."""
    gw = gateway(gre_demux=True)
    shared(gw)
    gw.demux_available(True, 1.0)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.DEMUX
    failed = gw.entry_failed(DemuxReturnEntry(int(C1), C1), 1.5)
    assert [d for d in failed.decisions if isinstance(d, GreInboundEntry)] == [
        GreInboundEntry(of(GreInboundEntry, [failed])[0].entry_id,  # type: ignore[attr-defined]
                        SERVER, PUBLIC, None, 300.0)]
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    assert [e.dst_ip for e in down_gre(gw, PUBLIC, A, 2.0).emits] == [C1]  # type: ignore[union-attr]
    retry = gw.tick(10.0)
    assert DemuxReturnEntry(int(C1), C1) in retry.decisions
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER  # not before it is in
    gw.entry_failed(DemuxReturnEntry(int(C1), C1), 10.0)  # still not resolved
    gw.tick(20.0)
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.CONTROLLER
    gw.tick(30.0)  # the retry of 20.0 was not reported failed: it is in
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.DEMUX
    assert not of(DemuxReturnEntry, [gw.tick(40.0)])
    # a stale report (another id) changes nothing
    assert gw.entry_failed(DemuxReturnEntry(7, C1), 41.0).decisions == []
    assert gw.inbound_gre_path(SERVER, PUBLIC) is GrePath.DEMUX


def test_the_calls_on_the_demux_path_read_their_table_entries() -> None:
    gw = gateway(gre_demux=True)
    _, _, b = shared(gw)
    asked: list[tuple[object, object, int]] = []

    def table(server: object, public: object, call_id: int) -> tuple[int, int] | None:
        asked.append((server, public, call_id))
        return (4, 400) if call_id == b else None

    gw.read_demux_counts(table, 1.0)
    assert asked == []  # the pair is on the controller path: no entry to read
    gw.demux_available(True, 2.0)
    gw.read_demux_counts(table, 3.0)
    assert sorted(a[2] for a in asked) == sorted([A, b])
    assert all(a[:2] == (SERVER, PUBLIC) for a in asked)
    counts = {c.public_call_id: (c.inbound_packets, c.inbound_bytes) for c in gw.calls()}
    assert counts == {A: (0, 0), b: (4, 400)}
