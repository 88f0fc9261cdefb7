"""The NAT gateway with the PPTP ALG: a thin Ryu shim around the sans-IO core.

Run::

    ryu-manager --ofp-listen-host 127.0.0.1 --ofp-tcp-listen-port 6653 \\
        --config-file gateway.conf ryu_apps/nat_gateway.py

The HTTP API (REST views and Prometheus ``/metrics``, ``ryu_apps.rest``) listens on
``[nat] rest_host`` and ``rest_port`` (127.0.0.1:8080 by default), served by the app
itself (``ryu_apps.http``), not by the framework's WSGI module.

Each handler decodes its event, calls the core (``alg.engine.Gateway``, and
``alg.neighbours.NeighbourTable`` for addresses) with plain facts and the time, and
hands what comes back to ``ryu_apps.effects``, which writes the store and queues the
flow-mods (``ryu_apps.flowmods``) and packets (``ryu_apps.packets``) in the switch's
outbox (``ryu_apps.outbox``), sent in one write when the event ends. What the app does
with a frame before the core sees it is ``ryu_apps.ingress``; the switch's life
(features, ports, reconcile, ready) is ``ryu_apps.lifecycle``; restore and
reconciliation are ``ryu_apps.recovery``; the demultiplexer's side is ``demux.link`` and
``ryu_apps.demux_side``.

**Restarts.** With ``[nat] state_file`` set, each event's state changes go to the store
(``ryu_apps.store``) before its flow-mods and packets. When the switch connects, the app
deletes nothing: it reads the switch's entries of its own (by cookie), gives them with
the store's records to the core, carries out what comes back, and only then handles
packets; packet-ins before that are dropped and counted (``packet_ins_before_ready``),
for their senders to repeat.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, ClassVar

from alg.config import load
from alg.engine import Gateway
from alg.errors import ConfigError, StoreError
from alg.events import Output
from alg.icmp import TokenBucket
from alg.neighbours import NeighbourTable, Side
from demux.link import HEARTBEAT, DemuxLink
from ryu_apps import config as options
from ryu_apps import flowmods, http, ingress, packets, rest, switch
from ryu_apps.binding import Binder, Claim, bridge_name, describe_switch
from ryu_apps.demux_side import DemuxSide
from ryu_apps.effects import AppCounters, Effects, Send
from ryu_apps.fragments import FragmentPath
from ryu_apps.framework import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    App,
    cfg,
    every,
    hub,
    ofp_event,
    ofproto_v1_3,
    on,
)
from ryu_apps.lifecycle import Switch, port_name, port_numbers, resolve_ports
from ryu_apps.outbox import Outbox
from ryu_apps.packet_in import use_fast_packet_in
from ryu_apps.recovery import recover
from ryu_apps.store import Store

LOG = logging.getLogger("pptp_alg.gateway")
CONF = cfg.CONF
options.register(CONF)
POLL_SECONDS = 1.0
EXPIRED_PER_SECOND = 200.0
"""Packet-ins of packets whose TTL a flow entry found spent, taken each second at most
(burst as many): OpenFlow 1.3 cannot match the TTL, so no meter holds them on the
switch; beyond this the app drops them before decoding (``ttl_expired_dropped``)."""


def _refuse(message: str, *args: object) -> SystemExit:
    LOG.critical("refusing to start: " + message, *args)
    return SystemExit(2)


class NatGateway(App):  # type: ignore[misc]
    """Ryu or os-ken application: the OVS bridge as a NAT firewall with a PPTP ALG."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_fast_packet_in()
        try:
            self.config = load({name: CONF.nat[name] for name in CONF.nat})
        except ConfigError as exc:
            raise _refuse("configuration error: %s", exc) from exc
        store = None
        if self.config.state_file:
            try:
                store = Store(self.config.state_file)
            except StoreError as exc:
                raise _refuse("nat.state_file: %s (move the file away to start without "
                              "the saved state)", exc) from exc
        self.core = Gateway(self.config.alg, self.config.inside_gateway,
                            self.config.inside_subnet, self.config.outside_subnet)
        self.demux = DemuxLink(self.config)
        self.neighbours: NeighbourTable[Send] = NeighbourTable(
            self.config, lambda ip: self.core.hosts.get(ip) is not None)
        self.counters = AppCounters()
        self.fragments = FragmentPath(self.config, self.core.counters, self.counters)
        self.switch = Switch(self.counters)
        self.binder = Binder([Claim("gateway", self.config.datapath_id,
                                    self.config.bridge)])
        self.effects = Effects(self.core, self.config, self.switch.outbox, self.neighbours,
                               self.fragments, self.demux, store, self.counters,
                               lambda: self.now())
        self.demux_side = DemuxSide(self.demux, self.core, self.effects)
        self._restored = False
        self._expired_packet_ins = TokenBucket(EXPIRED_PER_SECOND, EXPIRED_PER_SECOND)
        self.flow_entries = 0
        self._next_stats = 0.0
        self.http: socket.socket | None = None
        if self.config.rest_port:
            try:
                self.http = http.listen(self.config.rest_host, self.config.rest_port)
            except ConfigError as exc:
                raise _refuse("%s", exc) from exc
            self.threads.append(hub.spawn(http.serve, self.http, rest.router(self)))
        self.threads.append(hub.spawn(every, POLL_SECONDS, "periodic work",
                                      lambda: self.periodic(self.now())))
        if self.demux.enabled:
            self.threads.append(hub.spawn(every, HEARTBEAT, "GRE demultiplexer heartbeat",
                                          self.heartbeat))
        LOG.info("gateway configured: %s; binds to %s", self.config.describe(),
                 self.binder.claims[0].describe())

    @staticmethod
    def now() -> float:
        """The core's clock: seconds, monotonic."""
        return time.monotonic()

    @property
    def store(self) -> Store | None:
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

    def _ours(self, dp: Any) -> bool:
        """True for the datapath the gateway is bound to (``ryu_apps.binding``)."""
        return dp is not None and dp is self.datapath

    @on(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev: Any) -> None:
        """Any switch: its port description names its bridge, which binds it."""
        dp = ev.msg.datapath
        outbox = Outbox(self.counters)
        outbox.connect(dp)
        with outbox:
            outbox.request(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @on(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev: Any) -> None:
        if ev.datapath is self.datapath:
            LOG.warning("switch disconnected; the gateway waits for it to come back")
            self.switch.gone()

    @on(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        numbers = port_numbers(ev.msg.body)
        bridge = bridge_name(numbers)
        if self.binder.bind(dp.id, bridge) is None:
            self.counters.switches_refused += 1
            LOG.error("%s connected, but the gateway binds to %s: nothing installed",
                      describe_switch(dp.id, bridge), self.binder.claims[0].describe())
            return
        self.switch.connected(dp)
        self.switch.bridge = bridge
        ports = resolve_ports(numbers, self.config.inside_ports, self.config.outside_port)
        if isinstance(ports, list):
            LOG.error("switch has no port named %s; pipeline not installed", ", ".join(ports))
            return
        self.neighbours.set_ports(ports.inside, ports.outside)
        self.demux.find_port(ports.numbers)
        with self.switch.outbox:
            for msg in flowmods.switch_setup(dp, self.config.alg, ports.inside):
                self.switch.outbox.request(msg)
            self.switch.read_entries(ports, flowmods.stats_request(dp))

    def _reconcile(self, dp: Any) -> None:
        """The switch's entries are known: restore or reconcile, then the pipeline."""
        output = recover(self.core, self.effects, self.switch.entries_read(),
                         self._restored, self.now())
        self._restored = True
        ports = self.switch.ports
        assert ports is not None
        with self.switch.outbox:
            self.effects.flow_mods(flowmods.pipeline_again(ports.inside, ports.outside,
                                                           self.config))
            self.demux_side.probe_entry()
            self.effects.apply(output)
        self.effects.limit_zone(self.switch.bridge or self.config.bridge)
        self.switch.became_ready()
        LOG.info("pipeline installed on datapath %016x", dp.id)

    @on(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        if not self._ours(ev.msg.datapath):
            return
        desc = ev.msg.desc
        port = None if ev.msg.reason == ofproto_v1_3.OFPPR_DELETE else desc.port_no
        moved = self.demux.port_status(port_name(desc), port, desc.state)
        if moved and self.ready and self.demux.port is not None:
            with self.switch.outbox:
                self.demux_side.port_moved()

    @on(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        if not self._ours(ev.msg.datapath):
            return
        self.counters.packet_ins += 1
        if not self.ready:
            self.counters.packet_ins_before_ready += 1
            return
        msg = ev.msg
        expired = msg.reason == ofproto_v1_3.OFPR_INVALID_TTL
        if expired:
            self.counters.ttl_expired_on_flow += 1
            if not self._expired_packet_ins.take(self.now()):
                self.counters.ttl_expired_dropped += 1
                return
        self.handle_frame(msg.datapath, msg.match["in_port"], bytes(msg.data), expired,
                          msg.table_id)

    @on(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        """The entries read on connection (then the reconciliation), or the periodic
        counts, summed per cookie over the reply's parts, then reported to the core."""
        msg = ev.msg
        if not self._ours(msg.datapath):
            return
        reading = self.switch.is_entries_reply(msg.xid)
        sums = self.switch.entries if reading else self.switch.stats
        sums.add(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        if reading:
            self._reconcile(msg.datapath)
            return
        self.flow_entries = sums.entries
        now = self.now()
        for (kind, entry_id), (count, octets) in sums.counts().items():
            self.core.flow_stats(kind, entry_id, count, now, octets)
        sums.clear()

    @on(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev: Any) -> None:
        if not self._ours(ev.msg.datapath):
            return
        self.counters.flows_removed += 1
        decoded = switch.decode_cookie(ev.msg.cookie)
        if decoded is not None:
            self.effects.apply(self.core.flow_removed(*decoded, ev.msg.packet_count,
                                                      ev.msg.byte_count))

    @on(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        expected = flowmods.expected_error(ev.msg.type, ev.msg.code)
        LOG.log(logging.DEBUG if expected else logging.ERROR,
                "switch reported error type=%s code=%s", ev.msg.type, ev.msg.code)

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

    def apply(self, dp: Any, output: Output, original: packets.Ipv4 | None = None) -> None:
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
            if now < self._next_stats:
                return
            self._next_stats = now + self.config.stats_interval
            if self.demux.up:
                self.core.read_demux_counts(self.demux.entry_counts, now)
            self.effects.apply(self.core.tick(now))
            self.switch.stats.clear()
            self.switch.outbox.request(flowmods.stats_request(dp))
