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
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.config import GatewayConfig
from alg.counters import CounterSet, counter
from alg.engine import Gateway
from alg.errors import StoreError
from alg.events import Decision, DemuxEntry, DemuxForget, Direction, Output
from alg.histogram import Histogram
from alg.neighbours import L2, NeighbourOutput, NeighbourTable, Side
from alg.snapshot import Change
from demux.link import DemuxLink
from ryu_apps import ctflows, ctlimits, flowmods, packets, wire
from ryu_apps.fragments import FragmentPath
from ryu_apps.outbox import Outbox
from ryu_apps.store import RecordStore

LOG = logging.getLogger("pptp_alg.gateway")

Send = Callable[[L2], None]
"""What waits in the neighbour table for an address: sends a packet to it."""
STORE_WRITE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                       0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the store write time's buckets."""


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
    store_writes: int = counter("Writes of state changes to the store")
    store_errors: int = counter(
        "Store writes or clears that failed (with the SQLite store the gateway goes on without "
        "the guarantee across a restart; with etcd the controller ends)")
    election_request_failures: int = counter(
        "Requests of the election to etcd (campaigns, keep-alives, resignations, reads of the "
        "key) that got no answer or an unusable one")
    store_writes_deferred: int = counter(
        "Events whose state changes were deferred because the master was cut off from etcd "
        "(written when it answers again)")
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

    Attributes:
        deferred: while the master is cut off from etcd, the changes not yet written, in
            order (None: writes go to the store at once).
        write_failed: called with the error when a write fails (None: logged and
            counted, and the gateway goes on).
        store_write_seconds: the time each write took.
    """

    def __init__(self, core: Gateway, config: GatewayConfig, outbox: Outbox,
                 neighbours: NeighbourTable[Send], fragments: FragmentPath, demux: DemuxLink,
                 store: RecordStore | None, counters: AppCounters, clock: Callable[[], float]
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
        self.deferred: list[Change] | None = None
        self.write_failed: Callable[[StoreError], None] | None = None
        self.store_write_seconds = Histogram(STORE_WRITE_BUCKETS)
        self.timer: Callable[[], float] = time.perf_counter

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
        """Write state changes to the store (or defer them, see :attr:`deferred`); a
        failure is logged and counted, then handed to :attr:`write_failed`, else the
        gateway goes on (without the guarantee across a restart)."""
        if self.store is None or not changes:
            return
        if self.deferred is not None:
            self.deferred.extend(changes)
            self.counters.store_writes_deferred += 1
            return
        started = self.timer()
        try:
            self.store.write(changes)
        except StoreError as exc:
            self.counters.store_errors += 1
            LOG.error("store %s: %s", self.store.path, exc)
            if self.write_failed is not None:
                self.write_failed(exc)
            return
        self.store_write_seconds.observe(self.timer() - started)
        self.counters.store_writes += 1

    def defer_writes(self) -> None:
        """Keep the changes from now on in :attr:`deferred` instead of writing them."""
        if self.deferred is None:
            self.deferred = []

    def write_deferred(self) -> bool:
        """Write what was deferred, in order, and write at once again: False (and still
        deferring, nothing lost) when the store does not take it."""
        if self.store is None:
            self.deferred = None
            return True
        while self.deferred:
            batch, self.deferred = self.deferred, []
            try:
                self.store.write(batch)
            except StoreError as exc:
                self.deferred = batch + self.deferred
                self.counters.store_errors += 1
                LOG.error("store %s: the deferred writes: %s", self.store.path, exc)
                return False
            self.counters.store_writes += 1
        self.deferred = None
        return True

    def store_unreadable(self, exc: StoreError) -> None:
        """The store's records could not be read at restore. A state file's are removed,
        and the gateway starts without them; with :attr:`write_failed` (etcd, shared by
        the controllers, which another may read) nothing is removed and the failure is
        handed on (the process ends)."""
        if self.write_failed is not None:
            self.counters.store_errors += 1
            self.write_failed(exc)
            return
        LOG.error("nat.state_file: %s; its records are removed and the gateway starts "
                  "without them", exc)
        self.clear_store()

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
