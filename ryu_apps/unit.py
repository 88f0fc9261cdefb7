"""One gateway of the process: its core, switch, store, demultiplexer and counters.

The process (``ryu_apps.nat_gateway``) binds each connecting switch to the gateway that
claims it (``ryu_apps.binding``) and hands that gateway's events to its
:class:`GatewayUnit`; nothing is shared between gateways but the process's clock and
HTTP server. What a unit does with an event is what the one-bridge app did: decode it,
call the core (``alg.engine.Gateway``, and ``alg.neighbours.NeighbourTable`` for
addresses) with plain facts and the time, and hand what comes back to
``ryu_apps.effects``, whose messages go out in one write through the switch's outbox.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from alg.config import GatewayConfig
from alg.election import Election
from alg.engine import Gateway
from alg.events import Output
from alg.histogram import Histogram
from alg.icmp import TokenBucket
from alg.neighbours import NeighbourTable, Side
from demux.link import DemuxLink
from ryu_apps import flowmods, ingress, packets, switch, wire
from ryu_apps.demux_side import DemuxSide
from ryu_apps.effects import AppCounters, Effects, Send
from ryu_apps.etcd_election import ElectionKey
from ryu_apps.fragments import FragmentPath
from ryu_apps.framework import ofproto_v1_3
from ryu_apps.lifecycle import Ports, Switch, port_name, resolve_ports
from ryu_apps.mastership import Mastership
from ryu_apps.recovery import recover
from ryu_apps.store import RecordStore
from ryu_apps.warm_copy import WarmCopy

LOG = logging.getLogger("pptp_alg.gateway")
EXPIRED_PER_SECOND = 200.0
"""Packet-ins of packets whose TTL a flow entry found spent, taken each second at most
(burst as many): OpenFlow 1.3 cannot match the TTL, so no meter holds them on the
switch; beyond this the app drops them before decoding (``ttl_expired_dropped``)."""
PACKET_IN_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                     0.05, 0.1, 0.25, 1.0)
"""Upper bounds (seconds) of the packet-in handling time's buckets."""


class GatewayUnit:
    """One gateway: everything of it, and what it does with its switch's events.

    Args:
        name: the gateway's name (its section, or ``default``).
        config: its configuration.
        store: its store, None without one.
        now: the process's clock.
        election: with ``store = etcd``, its switch's election key (the gateway takes
            its switch over only once elected master, ``ryu_apps.mastership``); None:
            it takes it over when it connects.
        end: ends the process (fail-stop) with a status and a reason.
    """

    def __init__(self, name: str, config: GatewayConfig, store: RecordStore | None,
                 now: Callable[[], float], election: ElectionKey | None = None,
                 end: Callable[[int, str], None] | None = None) -> None:
        self.name = name
        self.config = config
        self.now = now
        self.core = Gateway(config.alg, config.inside_gateway, config.inside_subnet,
                            config.outside_subnet)
        self.demux = DemuxLink(config)
        self.neighbours: NeighbourTable[Send] = NeighbourTable(
            config, lambda ip: self.core.hosts.get(ip) is not None)
        self.counters = AppCounters()
        self.fragments = FragmentPath(config, self.core.counters, self.counters)
        self.switch = Switch(self.counters)
        self.effects = Effects(self.core, config, self.switch.outbox, self.neighbours,
                               self.fragments, self.demux, store, self.counters, now)
        self.demux_side = DemuxSide(self.demux, self.core, self.effects)
        self.restored = False
        self.expired_packet_ins = TokenBucket(EXPIRED_PER_SECOND, EXPIRED_PER_SECOND)
        self.flow_entries = 0
        self.next_stats = 0.0
        self.packet_in_seconds = Histogram(PACKET_IN_BUCKETS)
        """The time each packet-in took (:meth:`packet_in`), by :attr:`timer`."""
        self.timer: Callable[[], float] = time.perf_counter
        """A monotonic clock of the host's, for :attr:`packet_in_seconds`."""
        self.ports: Ports | None = None
        self.warm_copy: WarmCopy | None = None
        """With an election, the records kept by a watch (``ryu_apps.warm_copy``; the
        process follows it), which the store takes at promotion."""
        self.mastership: Mastership | None = None
        if election is not None:
            assert end is not None
            self.mastership = Mastership(Election(election.controller_id), election, self,
                                         now, end, self.counters)
            self.effects.write_failed = self.mastership.write_failed

    @property
    def role(self) -> str:
        """Its controller's role for its switch: the election's state (``master``,
        ``standby``...), ``single`` without an election."""
        return self.mastership.role if self.mastership is not None else "single"

    @property
    def standing_by(self) -> bool:
        """True while its controller is a standby the switch made slave."""
        return self.mastership is not None and self.mastership.standing_by

    @property
    def store_write_seconds(self) -> Histogram:
        """The time each write of an event's records took."""
        return self.effects.store_write_seconds

    def lease_age(self) -> float | None:
        """Seconds since its etcd lease was last kept alive, None while it holds none."""
        return None if self.mastership is None else self.mastership.lease_age(self.now())

    @property
    def store(self) -> RecordStore | None:
        """The store of the core's records, None without one."""
        return self.effects.store

    @property
    def datapath(self) -> Any:
        """The switch's datapath, None while it is not connected."""
        return self.switch.datapath

    @property
    def ready(self) -> bool:
        """True when the switch's packet-ins are handled (``ryu_apps.lifecycle``)."""
        return self.switch.ready

    # The switch.

    def connected(self, dp: Any, numbers: dict[str, int], bridge: str | None) -> None:
        """Its switch connected and described its ports: take it over (read its entries
        of ours), or with an election ask for slave first."""
        self.switch.connected(dp)
        self.switch.bridge = bridge
        ports = resolve_ports(numbers, self.config.inside_ports, self.config.outside_port)
        if isinstance(ports, list):
            LOG.error("gateway %s: the switch has no port named %s; pipeline not "
                      "installed", self.name, ", ".join(ports))
            return
        self.ports = ports
        self.neighbours.set_ports(ports.inside, ports.outside)
        self.demux.find_port(ports.numbers)
        if self.mastership is None:
            self.take_over()
        else:
            self.mastership.switch_connected()

    def take_over(self) -> None:
        """Set the switch up and read its entries of ours (then :meth:`reconcile`)."""
        dp, ports = self.datapath, self.ports
        if dp is None or ports is None:
            return
        with self.switch.outbox:
            for msg in flowmods.switch_setup(dp, self.config.alg, ports.inside):
                self.switch.outbox.request(msg)
            self.switch.read_entries(ports, flowmods.stats_request(dp))

    def gone(self) -> None:
        """Its switch disconnected."""
        LOG.warning("gateway %s: switch disconnected; waiting for it to come back",
                    self.name)
        self.switch.gone()
        if self.mastership is not None:
            self.mastership.switch_disconnected()

    # The election (``ryu_apps.mastership``).

    def send_roles(self, messages: list[wire.Message]) -> None:
        """Send the switch role requests."""
        with self.switch.outbox:
            self.switch.outbox.messages(messages)

    def role_reply(self, buf: bytes) -> None:
        """The switch granted a role request."""
        if self.mastership is not None:
            self.mastership.role_reply(buf)

    def role_refused(self, request: bytes) -> None:
        """The switch refused a role request (its error quotes the request)."""
        if self.mastership is not None:
            self.mastership.role_refused(request)

    def stop_new_calls(self) -> None:
        """Refuse new calls and defer the records' writes (cut off from the store)."""
        self.core.stop_new_calls()
        self.effects.defer_writes()

    def resume_new_calls(self) -> bool:
        """Write the deferred records; if the store took them, set up new calls again."""
        if not self.effects.write_deferred():
            return False
        self.core.resume_new_calls()
        return True

    def reconcile(self, dp: Any) -> None:
        """The switch's entries are known: restore or reconcile, then the pipeline."""
        output = recover(self.core, self.effects, self.switch.entries_read(),
                         self.restored, self.now())
        self.restored = True
        ports = self.switch.ports
        assert ports is not None
        with self.switch.outbox:
            self.effects.flow_mods(flowmods.pipeline_again(ports.inside, ports.outside,
                                                           self.config))
            self.demux_side.probe_entry()
            self.effects.apply(output)
        self.effects.limit_zone(self.switch.bridge or self.config.bridge)
        self.switch.became_ready()
        LOG.info("gateway %s: pipeline installed on datapath %016x", self.name, dp.id)

    def port_status(self, msg: Any) -> None:
        """A port of its switch was added, deleted or changed."""
        desc = msg.desc
        port = None if msg.reason == ofproto_v1_3.OFPPR_DELETE else desc.port_no
        moved = self.demux.port_status(port_name(desc), port, desc.state)
        if moved and self.ready and self.demux.port is not None:
            with self.switch.outbox:
                self.demux_side.port_moved()

    def packet_in(self, msg: Any) -> None:
        """A packet-in of its switch; the time it takes goes into
        :attr:`packet_in_seconds`."""
        started = self.timer()
        try:
            self._packet_in(msg)
        finally:
            self.packet_in_seconds.observe(self.timer() - started)

    def _packet_in(self, msg: Any) -> None:
        self.counters.packet_ins += 1
        if not self.ready:
            self.counters.packet_ins_before_ready += 1
            return
        expired = msg.reason == ofproto_v1_3.OFPR_INVALID_TTL
        if expired:
            self.counters.ttl_expired_on_flow += 1
            if not self.expired_packet_ins.take(self.now()):
                self.counters.ttl_expired_dropped += 1
                return
        self.handle_frame(msg.datapath, msg.match["in_port"], bytes(msg.data), expired,
                          msg.table_id)

    def flow_stats(self, msg: Any) -> None:
        """One part of a flow statistics reply: the entries read on connection (then
        the reconciliation), or the periodic counts, summed per cookie over the reply's
        parts, then reported to the core."""
        reading = self.switch.is_entries_reply(msg.xid)
        sums = self.switch.entries if reading else self.switch.stats
        sums.add(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        if reading:
            self.reconcile(msg.datapath)
            return
        self.flow_entries = sums.entries
        now = self.now()
        for (kind, entry_id), (count, octets) in sums.counts().items():
            self.core.flow_stats(kind, entry_id, count, now, octets)
        sums.clear()

    def flow_removed(self, msg: Any) -> None:
        """The switch removed an entry that asked to be reported."""
        self.counters.flows_removed += 1
        decoded = switch.decode_cookie(msg.cookie)
        if decoded is not None:
            self.effects.apply(self.core.flow_removed(*decoded, msg.packet_count,
                                                      msg.byte_count))

    # Frames.

    def handle_frame(self, dp: Any, in_port: int, data: bytes, expired: bool = False,
                     table: int = 0) -> None:
        """Act on one frame from the switch (``ryu_apps.ingress``); send what it caused in
        one write.

        Args:
            expired: a flow entry found the packet's TTL spent (the switch says so).
            table: the table of the entry that sent it.
        """
        now = self.now()
        verdict = ingress.classify(in_port, data, expired, self.neighbours, self.fragments,
                                   self.demux.port, now, table)
        with self.switch.outbox:
            match verdict:
                case ingress.Translate(direction, packet, ip, port, frame):
                    self.effects.apply(self.core.handle(direction, packet, now), ip,
                                       (port, frame))
                case ingress.RouteOut(destination, ip_packet):
                    self.effects.route_out(destination, ip_packet, now)
                case ingress.Count(counter):
                    setattr(self.counters, counter, getattr(self.counters, counter) + 1)
                case ingress.Arp(port, mac, arp):
                    self.effects.neighbour(self.neighbours.arp(port, mac, arp, now))
                case ingress.Resolve(destination, port, frame):
                    self.effects.neighbour(self.neighbours.send(
                        Side.OUTSIDE, destination,
                        lambda _l2: self.handle_frame(dp, port, frame), now))
                case ingress.EchoReply(reply, to):
                    self.effects.frame_out(reply, to)
                case ingress.Expire(direction, packet, raw):
                    self.counters.ttl_expired += 1
                    self.effects.apply(self.core.expired(direction, packet, raw, now))
                case ingress.FromDemux(frame) if self.demux.heard(frame, now):
                    self.demux_side.health(now)

    def apply(self, output: Output, original: packets.Ipv4 | None = None) -> None:
        """Carry out one core output (``ryu_apps.effects``) and send it in one write."""
        self.effects.apply(output, original)

    # The GRE demultiplexer.

    def heartbeat(self) -> None:
        """Send the demultiplexer its probe; act on a change of its health."""
        if self.ready:
            with self.switch.outbox:
                self.demux_side.beat(self.now())

    # Time.

    def periodic(self, now: float) -> None:
        """One wake-up of the poller (every second): ARP retries; every ``stats_interval``
        seconds the core's ageing, then a flow statistics request.

        The request goes after the ageing's deletions: the switch answers in order, so
        its reply holds no entry the ageing deleted (whose final counts its flow-removed
        message brings) and no count is taken twice.
        """
        dp = self.datapath
        if not self.ready:
            return
        with self.switch.outbox:
            self.effects.neighbour(self.neighbours.tick(now))
            self.fragments.reassembler.expire(now)
            if now < self.next_stats:
                return
            self.next_stats = now + self.config.stats_interval
            if self.demux.up:
                self.core.read_demux_counts(self.demux.entry_counts, now)
            self.effects.apply(self.core.tick(now))
            self.switch.stats.clear()
            self.switch.outbox.request(flowmods.stats_request(dp))


class FirstGateway:
    """The first gateway's parts, by the names of the one-bridge app (its HTTP views of
    one gateway, its tests): a mixin of the process, whose ``gateways`` it reads."""

    gateways: dict[str, GatewayUnit]

    @property
    def unit(self) -> GatewayUnit:
        """The first gateway (the only one of a one-bridge process)."""
        return next(iter(self.gateways.values()))

    @property
    def config(self) -> GatewayConfig:
        """The first gateway's configuration."""
        return self.unit.config

    @property
    def core(self) -> Gateway:
        """The first gateway's core."""
        return self.unit.core

    @property
    def switch(self) -> Switch:
        """The first gateway's switch."""
        return self.unit.switch

    @property
    def counters(self) -> AppCounters:
        """The first gateway's counters."""
        return self.unit.counters

    @property
    def neighbours(self) -> NeighbourTable[Send]:
        """The first gateway's neighbour table."""
        return self.unit.neighbours

    @property
    def demux(self) -> DemuxLink:
        """The first gateway's demultiplexer link."""
        return self.unit.demux

    @property
    def fragments(self) -> FragmentPath:
        """The first gateway's fragment path."""
        return self.unit.fragments

    @property
    def effects(self) -> Effects:
        """The first gateway's effects."""
        return self.unit.effects

    @property
    def store(self) -> RecordStore | None:
        """The first gateway's store, None without one."""
        return self.unit.store

    @property
    def datapath(self) -> Any:
        """The first gateway's datapath, None while it is not connected."""
        return self.unit.datapath

    @property
    def ready(self) -> bool:
        """True when the first gateway's switch is ready."""
        return self.unit.ready

    @property
    def flow_entries(self) -> int:
        """The first gateway's entries at its switch's last report."""
        return self.unit.flow_entries
