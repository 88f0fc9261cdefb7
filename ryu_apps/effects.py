"""Carrying out what the core decided: the store, flow-mods, packets, ARP, log lines.

:meth:`Effects.apply` takes one :class:`~alg.events.Output` and, in this order, writes
its state changes to the store, queues the flow-mods of its decisions with a barrier,
queues its packets, and logs its lines. A decision it cannot carry out (the neighbour
of an entry is not resolved) goes back to the core (:meth:`~alg.engine.Gateway.
entry_failed`), whose answer is carried out in turn.

Entries go before the packets although the packets would leave sooner without waiting
for them: a packet answered before its entry is in reaches the controller, and Open
vSwitch's datapath keeps sending that flow to the controller until its revalidators run
(up to about half a second: 18 of a new call's first GRE packets measured, against none
with the entries first).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.config import GatewayConfig
from alg.counters import CounterSet, counter
from alg.engine import Gateway
from alg.errors import StoreError
from alg.events import Decision, DemuxEntry, DemuxForget, Direction, Output
from alg.neighbours import L2, NeighbourOutput, NeighbourTable, Side
from alg.snapshot import Change
from demux.link import DemuxLink
from ryu_apps import ctflows, ctlimits, flowmods, packets, wire
from ryu_apps.fragments import FragmentPath
from ryu_apps.outbox import Outbox
from ryu_apps.store import Store

LOG = logging.getLogger("pptp_alg.gateway")

Send = Callable[[L2], None]
"""What waits in the neighbour table for an address: sends a packet to it."""


@dataclass
class AppCounters(CounterSet):
    """What the shim counts (the core counts the rest)."""

    packet_ins: int = counter("Packet-ins the switch sent the gateway")
    undecodable_frames: int = counter(
        "TCP or UDP packets from the switch that could not be decoded, dropped")
    flows_installed: int = counter("Flow entries the gateway added to its switch")
    flows_removed: int = counter(
        "Flow entries the switch reported removed (idle or hard timeout, or deleted)")
    entries_not_installed: int = counter(
        "Flow entries not installed because their neighbour's address was not resolved (the core "
        "decides again)")
    packet_outs: int = counter("Packets the gateway sent out through its switch (packet-outs)")
    ttl_expired: int = counter("Packets the gateway did not forward because their TTL ran out")
    ttl_expired_on_flow: int = counter("Packet-ins of packets whose TTL a flow entry found spent")
    ttl_expired_dropped: int = counter(
        "Packet-ins of packets whose TTL a flow entry found spent, dropped past their rate limit "
        "(200 a second)")
    fragments_dropped: int = counter(
        "IP fragments dropped that are neither GRE nor PPTP control segments")
    bad_checksums: int = counter("Packets from the switch with a bad checksum, dropped")
    packet_ins_before_ready: int = counter(
        "Packet-ins dropped because they came before the gateway had restored or reconciled its "
        "switch's entries")
    store_writes: int = counter("Writes of state changes to the state file")
    store_errors: int = counter(
        "State file writes or clears that failed (the gateway goes on without the guarantee "
        "across a restart)")
    restores: int = counter("Restores from the state file (the first connection of the switch)")
    reconciliations: int = counter(
        "Reconciliations with the switch's entries (each reconnection of the switch)")
    ct_limit_errors: int = counter(
        "Failures to set the connection tracker's limit of the gateway's zone (max_sessions)")
    ct_policy_errors: int = counter(
        "Failures to set the connection tracker's timeout policy of the gateway's zone "
        "(ct_time_wait)")


class Effects:
    """The app's hands: everything the core's output and the neighbour table ask for.

    Args:
        core: the core (for decisions that fail).
        config: the gateway's configuration (its MAC address).
        outbox: where messages to the switch are queued.
        neighbours: resolves where packets and entries go; holds what waits for ARP.
        fragments: fragments what is bigger than the MTU.
        demux: the demultiplexer's link (its table entries are written there).
        store: the store of the core's records, None without one.
        counters: the app's counters.
        clock: the core's clock.
    """

    def __init__(self, core: Gateway, config: GatewayConfig, outbox: Outbox,
                 neighbours: NeighbourTable[Send], fragments: FragmentPath, demux: DemuxLink,
                 store: Store | None, counters: AppCounters, clock: Callable[[], float]
                 ) -> None:
        self.core = core
        self.config = config
        self.outbox = outbox
        self.neighbours = neighbours
        self.fragments = fragments
        self.demux = demux
        self.store = store
        self.counters = counters
        self.clock = clock

    def apply(self, output: Output, original: packets.Ipv4 | None = None,
              frame: tuple[int, bytes] | None = None) -> None:
        """Carry out one core output; ``original`` is the packet that caused it (its IP
        header is the one the emitted packets inherit), ``frame`` its port and frame,
        sent back through the switch's tables when the core asks (after the entries)."""
        with self.outbox:
            self.write(output.records)
            self._decide(output.decisions)
            self._emit(output, original)
            if output.resubmit and frame is not None:
                self.outbox.resubmit(*frame)
        for line in output.errors:
            LOG.error("%s", line)
        for log in output.logs:
            LOG.info("%s", log)

    def write(self, changes: list[Change]) -> None:
        """Write state changes to the store; a failure is logged and counted, and the
        gateway goes on (without the guarantee across a restart)."""
        if self.store is None or not changes:
            return
        try:
            self.store.write(changes)
        except StoreError as exc:
            self.counters.store_errors += 1
            LOG.error("nat.state_file: %s", exc)
            return
        self.counters.store_writes += 1

    def clear_store(self) -> None:
        """Remove every record from the store (they could not be read)."""
        assert self.store is not None
        try:
            self.store.clear()
        except StoreError as exc:
            self.counters.store_errors += 1
            LOG.error("nat.state_file: %s", exc)

    def limit_zone(self, bridge: str) -> None:
        """With ``ordinary_nat = conntrack``: the tracker's limit of the gateway's zone is
        ``max_sessions``, its closed TCP connections are kept ``ct_time_wait`` seconds
        (``ryu_apps.ctlimits``, on ``bridge``'s datapath); a failure is logged and
        counted."""
        alg = self.config.alg
        if alg.ordinary_nat != "conntrack":
            return
        problem = ctlimits.set_zone_limit(alg.ct_zone, alg.max_sessions)
        if problem is not None:
            self.counters.ct_limit_errors += 1
            LOG.error("the connection tracker's limit of zone %d (nat.max_sessions) cannot "
                      "be set here: %s", alg.ct_zone, problem)
        problem = (ctlimits.set_zone_timeouts(bridge, alg.ct_zone, alg.ct_time_wait)
                   if bridge else "the switch names no bridge (nat.bridge)")
        if problem is not None:
            self.counters.ct_policy_errors += 1
            LOG.error("the connection tracker's timeout policy of zone %d "
                      "(nat.ct_time_wait) cannot be set here: %s", alg.ct_zone, problem)

    def flow_mods(self, mods: list[wire.Message]) -> None:
        """Queue flow-mods of the app's own (the pipeline, the demultiplexer's probe)."""
        self.outbox.flow_mods(mods)

    def neighbour(self, out: NeighbourOutput[Send]) -> None:
        """Send the ARP the neighbour table asks for, and what it released."""
        gw_mac = self.config.gateway_mac
        with self.outbox:
            for reply in out.replies:
                self.outbox.packet_out(reply.port, packets.arp_reply_frame(reply, gw_mac))
            for request in out.requests:
                frame = packets.arp_request_frame(request, gw_mac)
                for port in request.ports:
                    self.outbox.packet_out(port, frame)
            for delivery in out.deliveries:
                delivery.item(delivery.l2)

    def frame_out(self, ip: bytes, where: L2) -> None:
        """Send an IP packet to a neighbour, fragmented for the MTU if it must be."""
        for piece in self.fragments.egress(ip):
            frame = packets.build_ethernet(
                packets.mac_bytes(where.mac), packets.mac_bytes(self.config.gateway_mac),
                packets.ETH_TYPE_IPV4, piece,
            )
            self.outbox.packet_out(where.port, frame)

    def route_out(self, destination: IPv4Address, ip: bytes, now: float) -> None:
        """A packet the connection tracker translated: to its next hop once resolved,
        with a route entry for the destination's next packets (``ryu_apps.ctflows``)."""
        def send(hop: L2) -> None:
            self.outbox.flow_mods([ctflows.route_entry(destination, hop,
                                                       self.config.gateway_mac)])
            self.frame_out(ip, hop)
        self.neighbour(self.neighbours.send(Side.OUTSIDE, destination, send, now))

    def _decide(self, decisions: list[Decision]) -> None:
        """Queue the flow-mods of ``decisions`` and a barrier; then report what cannot be
        (the core's answer corrects the decisions, so its flow-mods go after theirs)."""
        mods: list[wire.Message] = []
        failed: list[Decision] = []
        for decision in decisions:
            if isinstance(decision, DemuxEntry | DemuxForget):
                self.demux.write(decision)
                continue
            built = flowmods.entry_mods(
                decision, self.neighbours.lookup, self.neighbours.outside_port,
                self.config.gateway_mac, self.demux.port, self.demux.enabled,
            )
            if built is None:
                self.counters.entries_not_installed += 1
                failed.append(decision)
            else:
                mods.extend(built)
        if mods:
            self.outbox.flow_mods([*mods, wire.barrier()])
        for decision in failed:
            self.apply(self.core.entry_failed(decision, self.clock()))

    def _emit(self, output: Output, original: packets.Ipv4 | None) -> None:
        header = packets.inherited_header(original)
        if header is None:
            self.counters.ttl_expired += len(output.emits)
            return
        now = self.clock()
        for emit in output.emits:
            ip = packets.emit_packet(emit, original, header)
            if ip is not None and self.fragments.too_big(ip):
                self._emit(self.fragments.refuse(emit, original, now), None)
            elif ip is not None:
                side = Side.INSIDE if emit.direction is Direction.INBOUND else Side.OUTSIDE
                self.neighbour(self.neighbours.send(
                    side, packets.emit_destination(emit),
                    functools.partial(self.frame_out, ip), now,
                ))
