"""The calls' GRE counted by path and direction (``ServerMap.traffic``), as the metrics
export it: the controller counts what it forwards, the switch's and the demultiplexer's
counts by their growth."""

from __future__ import annotations

from alg.events import EntryKind, GreInboundEntry, GreOutboundEntry
from alg.servermap import FRAME_OVERHEAD
from tests.unit.pptp_flows import C1, C2, PUBLIC, ControlLink, down_gre, gateway, gre


def test_each_path_counts_its_packets_and_bytes_once() -> None:
    gw = gateway(gre_demux=True)
    l1 = ControlLink(gw, C1).start()
    l1.outgoing_call(5, 700)
    decisions = [d for out in l1.outputs for d in out.decisions]
    up = next(d for d in decisions if isinstance(d, GreOutboundEntry)).entry_id
    down = next(d for d in decisions if isinstance(d, GreInboundEntry)).entry_id
    traffic = gw.server_map.traffic()
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 10, 1.0, 1000)
    gw.flow_stats(EntryKind.GRE_INBOUND, down, 4, 1.0, 400)
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 12, 2.0, 1200)
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 3, 3.0, 300)  # removed and installed again
    assert traffic[("flow", "outbound")] == [15, 1500]
    assert traffic[("flow", "inbound")] == [4, 400]

    l2 = ControlLink(gw, C2).start()
    b = l2.outgoing_call(5, 701)  # the pair is shared now: controller path
    gw.flow_stats(EntryKind.GRE_INBOUND, down, 9, 4.0, 900)  # what it punted
    assert traffic[("flow", "inbound")] == [4, 400]
    size = len(gre(b)) + FRAME_OVERHEAD
    down_gre(gw, PUBLIC, b, 4.0)
    down_gre(gw, PUBLIC, b, 4.0)
    assert traffic[("controller", "inbound")] == [2, 2 * size]

    gw.demux_available(True, 5.0)
    call = next(c for c in gw.calls() if c.public_call_id == b)
    gw.demux_counts(call, 7, 700, 6.0)
    gw.demux_counts(call, 9, 900, 7.0)
    assert traffic[("demux", "inbound")] == [9, 900]
    assert traffic[("controller", "outbound")] == [0, 0]


def test_an_entry_that_idles_out_is_counted_once_with_its_last_packets() -> None:
    gw = gateway()
    link = ControlLink(gw, C1).start()
    link.outgoing_call(5, 700)
    decisions = [d for out in link.outputs for d in out.decisions]
    up = next(d for d in decisions if isinstance(d, GreOutboundEntry)).entry_id
    traffic = gw.server_map.traffic()
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 10, 1.0, 1000)
    removed = gw.tick(1000.0).decisions
    assert any(getattr(d, "entry_id", None) == up for d in removed)  # idle: deleted
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 10, 1000.0, 1000)  # a reply already on its way
    assert traffic[("flow", "outbound")] == [10, 1000]
    gw.flow_removed(EntryKind.GRE_OUTBOUND, up, 12, 1200)  # its last counts
    assert traffic[("flow", "outbound")] == [12, 1200]
    gw.flow_stats(EntryKind.GRE_OUTBOUND, up, 3, 1010.0, 300)  # installed again
    assert traffic[("flow", "outbound")] == [15, 1500]
