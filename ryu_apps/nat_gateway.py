"""The NAT gateway with the PPTP ALG: a thin Ryu shim around the sans-IO core.

Run::

    ryu-manager --ofp-listen-host 127.0.0.1 --ofp-tcp-listen-port 6653 \\
        --config-file gateway.conf ryu_apps/nat_gateway.py

The HTTP API (REST views and Prometheus ``/metrics``, ``ryu_apps.rest``) listens on
``[nat] rest_host`` and ``rest_port`` (127.0.0.1:8080 by default), served by the app
itself (``ryu_apps.http``), not by the framework's WSGI module.

The app decodes each event once, hands the core (``alg.engine.Gateway`` and
``alg.neighbours.NeighbourTable``) plain facts with the time, and sends what comes back:
flow-mods built by ``ryu_apps.flowmods``, packets built by ``ryu_apps.packets``. A
decision it cannot carry out (a neighbour not resolved) goes back to the core, which then
knows the real path. Before the core sees a packet the app drops, and counts, what it
cannot decode (``undecodable_frames``), IP fragments other than of GRE and control
segments (``fragments_dropped``; those are reassembled, ``ryu_apps.fragments``) and packets
with a bad TCP, UDP or ICMP checksum (``bad_checksums``). A packet to forward whose TTL
is spent (``ttl_expired``), seen here or by a flow entry's TTL decrement
(``ttl_expired_on_flow``: the switch sends those with reason OFPR_INVALID_TTL), goes to
the core's :meth:`~alg.engine.Gateway.expired` instead, for a Time Exceeded.

**Restarts.** With ``[nat] state_file`` set, each event's state changes go to the store
(``ryu_apps.store``) before its flow-mods and packets. When the switch connects, the app
deletes nothing: it reads the switch's entries of its own (by cookie), gives them with
the store's records to the core (:meth:`~alg.engine.Gateway.restore` on the first
connection, :meth:`~alg.engine.Gateway.reconcile` on later ones, after a switch
restart), carries out what comes back, and only then handles packets; packet-ins before
that are dropped and counted (``packet_ins_before_ready``), for their senders to repeat.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from alg.config import load
from alg.counters import CounterSet
from alg.engine import Gateway
from alg.errors import ConfigError, StoreError, WireError
from alg.events import (
    Decision,
    DemuxEntry,
    DemuxForget,
    Direction,
    EntryKind,
    Output,
    RemoveEntries,
)
from alg.icmp import TokenBucket
from alg.neighbours import L2, NeighbourOutput, NeighbourTable, Route, Side
from alg.snapshot import Change, Snapshot
from demux.link import HEARTBEAT, PROBE_RETURN, DemuxLink
from ryu_apps import config as options
from ryu_apps import flowmods, http, packets, rest, switch, wire
from ryu_apps.fragments import FragmentPath
from ryu_apps.framework import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    App,
    cfg,
    hub,
    ofp_event,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    on,
)
from ryu_apps.store import Store

LOG = logging.getLogger("pptp_alg.gateway")
CONF = cfg.CONF
options.register(CONF)
POLL_SECONDS = 1.0
EXPIRED_PER_SECOND = 200.0
"""Packet-ins of packets whose TTL a flow entry found spent, taken each second at most
(burst as many): OpenFlow 1.3 cannot match the TTL, so no meter holds them on the
switch; beyond this the app drops them before decoding (``ttl_expired_dropped``)."""

Send = Callable[[L2], None]


@dataclass
class AppCounters(CounterSet):
    """What the shim counts (the core counts the rest)."""

    packet_ins: int = 0
    undecodable_frames: int = 0
    flows_installed: int = 0
    flows_removed: int = 0
    entries_not_installed: int = 0
    packet_outs: int = 0
    ttl_expired: int = 0
    ttl_expired_on_flow: int = 0
    ttl_expired_dropped: int = 0
    fragments_dropped: int = 0
    bad_checksums: int = 0
    packet_ins_before_ready: int = 0
    store_writes: int = 0
    store_errors: int = 0
    restores: int = 0
    reconciliations: int = 0


_RYU_PACKET_IN_PARSER = ofproto_v1_3_parser.OFPPacketIn.parser


class _LazyMatch:
    """A PACKET_IN's match that answers ``["in_port"]`` from :func:`wire.decode_packet_in`
    and parses the rest with Ryu's parser only when something asks for it."""

    __slots__ = ("_buf", "_full", "_in_port", "_offset")

    def __init__(self, buf: bytes, offset: int, in_port: int | None) -> None:
        self._buf = buf
        self._offset = offset
        self._in_port = in_port
        self._full: Any = None

    def _parsed(self) -> Any:
        if self._full is None:
            self._full = ofproto_v1_3_parser.OFPMatch.parser(self._buf, self._offset)
        return self._full

    def __getitem__(self, key: str) -> Any:
        if key == "in_port" and self._in_port is not None:
            return self._in_port
        return self._parsed()[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parsed(), name)

    def __str__(self) -> str:
        return str(self._parsed())


def parse_packet_in(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int,
                    buf: bytes) -> Any:
    """Ryu's message parser for PACKET_IN, replaced (:func:`use_fast_packet_in`): the same
    ``OFPPacketIn`` with a lazily parsed match; a message the fast decoder refuses goes to
    Ryu's own parser."""
    try:
        fields = wire.decode_packet_in(buf)
    except WireError:
        return _RYU_PACKET_IN_PARSER(datapath, version, msg_type, msg_len, xid, buf)
    msg = ofproto_v1_3_parser.OFPPacketIn(
        datapath, fields.buffer_id, fields.total_len, fields.reason, fields.table_id,
        fields.cookie, _LazyMatch(buf, fields.match_offset, fields.in_port), fields.data)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    return msg


def use_fast_packet_in() -> None:
    """Make Ryu parse OpenFlow 1.3 PACKET_INs with :func:`parse_packet_in` (for every app
    in this process: the gateway runs alone in its ``ryu-manager``)."""
    parsers: dict[int, Any] = ofproto_v1_3_parser._MSG_PARSERS
    parsers[ofproto_v1_3.OFPT_PACKET_IN] = parse_packet_in


class _Batch:
    """The context of :meth:`NatGateway._event` (a class rather than a generator: it is
    entered two or three times for every packet-in)."""

    __slots__ = ("app",)

    def __init__(self, app: NatGateway) -> None:
        self.app = app

    def __enter__(self) -> None:
        self.app._depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        app = self.app
        app._depth -= 1
        if app._depth:
            return
        if exc_type is not None:
            app._outbox = []
        elif app._outbox:
            outbox, app._outbox = app._outbox, []
            if app.datapath is not None:
                wire.send(app.datapath, outbox, app._xids)


class NatGateway(App):  # type: ignore[misc]
    """Ryu or os-ken application: the OVS bridge as a NAT firewall with a PPTP ALG."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_fast_packet_in()
        try:
            self.config = load({name: CONF.nat[name] for name in CONF.nat})
        except ConfigError as exc:
            LOG.critical("refusing to start: configuration error: %s", exc)
            raise SystemExit(2) from exc
        self.store: Store | None = None
        if self.config.state_file:
            try:
                self.store = Store(self.config.state_file)
            except StoreError as exc:
                LOG.critical("refusing to start: nat.state_file: %s (move the file away to "
                             "start without the saved state)", exc)
                raise SystemExit(2) from exc
        self.core = Gateway(self.config.alg, self.config.inside_gateway,
                            self.config.inside_subnet, self.config.outside_subnet)
        self.demux = DemuxLink(self.config)
        self.neighbours: NeighbourTable[Send] = NeighbourTable(self.config)
        self.counters = AppCounters()
        self.fragments = FragmentPath(self.config, self.core.counters, self.counters)
        self.datapath: Any = None
        self._outbox: list[wire.Message] = []
        self._depth = 0
        self._batch = _Batch(self)
        self._xids = wire.Xids()
        self.ready = False
        self._restored = False
        self._reconcile_xid: int | None = None
        self._installed: dict[tuple[EntryKind, int], int] = {}
        self._ports: tuple[list[int], int] = ([], 0)
        self._stats_parts: dict[tuple[EntryKind, int], tuple[int, int]] = {}
        self._stats_entries = 0
        self._expired_packet_ins = TokenBucket(EXPIRED_PER_SECOND, EXPIRED_PER_SECOND)
        self.flow_entries = 0
        self._next_stats = 0.0
        self.http: socket.socket | None = None
        if self.config.rest_port:
            try:
                self.http = http.listen(self.config.rest_host, self.config.rest_port)
            except ConfigError as exc:
                LOG.critical("refusing to start: %s", exc)
                raise SystemExit(2) from exc
            self.threads.append(hub.spawn(http.serve, self.http, rest.router(self)))
        self.threads.append(hub.spawn(self._poll))
        if self.demux.enabled:
            self.threads.append(hub.spawn(self._heartbeat))
        LOG.info("gateway configured: %s", self.config.describe())

    @staticmethod
    def now() -> float:
        """The core's clock: seconds, monotonic."""
        return time.monotonic()

    # The switch.

    @on(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.datapath = dp
        self.ready = False
        self._outbox = []
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @on(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev: Any) -> None:
        if ev.datapath is self.datapath:
            LOG.warning("switch disconnected; the gateway waits for it to come back")
            self.datapath = None
            self.ready = False
            self._outbox = []

    @on(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        numbers = {
            p.name.decode() if isinstance(p.name, bytes) else p.name: p.port_no
            for p in ev.msg.body
        }
        wanted = (*self.config.inside_ports, self.config.outside_port)
        missing = [name for name in wanted if name not in numbers]
        if missing:
            LOG.error("switch has no port named %s; pipeline not installed", ", ".join(missing))
            return
        inside = sorted(numbers[n] for n in self.config.inside_ports)
        outside = numbers[self.config.outside_port]
        self.neighbours.set_ports(inside, outside)
        self._ports = (inside, outside)
        if self.demux.enabled:
            self.demux.port = numbers.get(self.demux.port_name)
            if self.demux.port is None:
                LOG.error("switch has no port named %s (nat.gre_demux_port): shared pairs "
                          "go through the controller", self.demux.port_name)
        dp.send_msg(flowmods.async_config(dp))
        for meter in flowmods.meters(dp, self.config.alg, inside):
            dp.send_msg(meter)
        request = flowmods.stats_request(dp)
        dp.set_xid(request)
        self._reconcile_xid = request.xid
        self._installed = {}
        dp.send_msg(request)

    def _reconcile(self, dp: Any) -> None:
        """The switch's entries are known: restore or reconcile, then the pipeline."""
        now = self.now()
        installed, self._installed, self._reconcile_xid = self._installed, {}, None
        if self._restored:
            self.counters.reconciliations += 1
            output = self.core.reconcile(installed)
        else:
            snapshot = Snapshot()
            if self.store is not None:
                try:
                    snapshot = self.store.load()
                except StoreError as exc:
                    LOG.error("nat.state_file: %s; its records are removed and the gateway "
                              "starts without them", exc)
                    self._clear_store()
            self.counters.restores += 1
            output = self.core.restore(snapshot, installed, now)
            self._restored = True
            LOG.info("restored %d sessions, %d control connections, %d calls; %d of the "
                     "switch's entries are the gateway's", len(self.core.nat),
                     len(self.core.connections()), len(list(self.core.calls())),
                     sum(installed.values()))
        inside, outside = self._ports
        with self._event():
            self._send_mods([flowmods.remove(RemoveEntries(EntryKind.PIPELINE, 0)),
                             *flowmods.pipeline(inside, outside, self.config.alg.public_ips,
                                                self.config.alg.alg_enabled)])
            if self.demux.port is not None:
                self._send_mods([flowmods.demux_probe(self.demux.port, PROBE_RETURN)])
            self.apply(dp, output)
        self.ready = True
        LOG.info("pipeline installed on datapath %016x", dp.id)

    @on(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        desc, name = ev.msg.desc, ev.msg.desc.name
        port = None if ev.msg.reason == ofproto_v1_3.OFPPR_DELETE else desc.port_no
        moved = self.demux.port_status(name.decode() if isinstance(name, bytes) else name, port,
                                       desc.state)
        if moved and self.ready and self.demux.port is not None:
            with self._event():
                self._send_mods([flowmods.demux_probe(self.demux.port, PROBE_RETURN)])
                self.apply(ev.msg.datapath, self.core.demux_entries())

    @on(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
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
        self.handle_frame(msg.datapath, msg.match["in_port"], bytes(msg.data), expired)

    @on(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        """Sum the counts per cookie (a session has two entries), then report them; or,
        for the request made on connection, count the entries for the reconciliation."""
        if ev.msg.xid == self._reconcile_xid and self._reconcile_xid is not None:
            for stat in ev.msg.body:
                decoded = switch.decode_cookie(stat.cookie)
                if decoded is not None:
                    self._installed[decoded] = self._installed.get(decoded, 0) + 1
            if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                self._reconcile(ev.msg.datapath)
            return
        for stat in ev.msg.body:
            decoded = switch.decode_cookie(stat.cookie)
            if decoded is not None:
                self._stats_entries += 1
                count, octets = self._stats_parts.get(decoded, (0, 0))
                self._stats_parts[decoded] = (count + stat.packet_count, octets + stat.byte_count)
        if ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self.flow_entries, self._stats_entries = self._stats_entries, 0
        now = self.now()
        for (kind, entry_id), (count, octets) in self._stats_parts.items():
            self.core.flow_stats(kind, entry_id, count, now, octets)
        self._stats_parts = {}

    @on(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev: Any) -> None:
        self.counters.flows_removed += 1
        decoded = switch.decode_cookie(ev.msg.cookie)
        if decoded is not None:
            self.core.flow_removed(*decoded, ev.msg.packet_count, ev.msg.byte_count)

    @on(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        expected = flowmods.expected_error(ev.msg.type, ev.msg.code)
        LOG.log(logging.DEBUG if expected else logging.ERROR,
                "switch reported error type=%s code=%s", ev.msg.type, ev.msg.code)

    # Frames.

    def handle_frame(self, dp: Any, in_port: int, data: bytes, expired: bool = False
                     ) -> None:
        """Decode one frame from the switch and act on it; send what it caused in one
        write.

        Args:
            expired: a flow entry found the packet's TTL spent (the switch says so).
        """
        with self._event():
            self._handle_frame(dp, in_port, data, expired)

    def _handle_frame(self, dp: Any, in_port: int, data: bytes, expired: bool) -> None:
        side = self.neighbours.side(in_port)
        if side is None:
            if in_port == self.demux.port:
                self._from_demux(dp, data)
            return
        frame = packets.decode_frame(data)
        if frame is None:
            self.counters.undecodable_frames += 1
            return
        now = self.now()
        if frame.arp is not None:
            self._neighbour(dp, self.neighbours.arp(in_port, frame.src_mac, frame.arp, now))
            return
        ip = frame.ip
        assert ip is not None
        if ip.fragment:
            if side is Side.INSIDE and self.neighbours.admit_inside(
                    in_port, frame.src_mac, ip.src, ip.dst, now) is not Route.OUTSIDE:
                return
            whole = self.fragments.ingress(data, ip, side, now)
            if whole is None:
                return
            data, ip = whole
        if not packets.l4_checksum_ok(ip):
            self.counters.bad_checksums += 1
            return
        direction = Direction.INBOUND
        if side is Side.INSIDE:
            route = self.neighbours.admit_inside(in_port, frame.src_mac, ip.src, ip.dst, now)
            if route is Route.GATEWAY and packets.is_echo_request(ip):
                self._frame_out(dp, packets.echo_reply(ip), L2(in_port, frame.src_mac))
            if route is not Route.OUTSIDE:
                return
            expired = expired or ip.ttl <= 1
            if not expired and self.neighbours.lookup(Side.OUTSIDE, ip.dst) is None:
                self._neighbour(dp, self.neighbours.send(
                    Side.OUTSIDE, ip.dst, lambda _l2: self.handle_frame(dp, in_port, data), now
                ))
                return
            direction = Direction.OUTBOUND
        packet = packets.decode_l4(ip)
        if packet is None:
            if ip.proto in (packets.PROTO_TCP, packets.PROTO_UDP):
                self.counters.undecodable_frames += 1
        elif expired or ip.ttl <= 1:
            self.counters.ttl_expired += 1
            self.apply(dp, self.core.expired(direction, packet, packets.ip_bytes(data), now))
        else:
            self.apply(dp, self.core.handle(direction, packet, now), ip)

    # The core's output.

    def apply(self, dp: Any, output: Output, original: packets.Ipv4 | None = None) -> None:
        """Carry out one core output (see :meth:`_carry_out`) and send it in one write."""
        with self._event():
            self._carry_out(dp, output, original)

    def _carry_out(self, dp: Any, output: Output, original: packets.Ipv4 | None) -> None:
        """In this order: the state changes go to the store; the flow-mods with a
        barrier; the packets; the log lines.

        Entries go before the packets although the packets would leave sooner without
        waiting for them: a packet answered before its entry is in reaches the
        controller, and Open vSwitch's datapath keeps sending that flow to the
        controller until its revalidators run (up to about half a second: 18 of a new
        call's first GRE packets measured, against none with the entries first).
        """
        self._write(output.records)
        self._decide(dp, output.decisions)
        self._emit(dp, output, original)
        for line in output.errors:
            LOG.error("%s", line)
        for log in output.logs:
            LOG.info("%s", log)

    def _decide(self, dp: Any, decisions: list[Decision]) -> None:
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
            self._send_mods([*mods, wire.barrier()])
        for decision in failed:
            self.apply(dp, self.core.entry_failed(decision, self.now()))

    def _emit(self, dp: Any, output: Output, original: packets.Ipv4 | None) -> None:
        header = packets.inherited_header(original)
        if header is None:
            self.counters.ttl_expired += len(output.emits)
            return
        now = self.now()
        for emit in output.emits:
            ip = packets.emit_packet(emit, original, header)
            if ip is not None and self.fragments.too_big(ip):
                self._emit(dp, self.fragments.refuse(emit, original, now), None)
            elif ip is not None:
                side = Side.INSIDE if emit.direction is Direction.INBOUND else Side.OUTSIDE
                self._neighbour(dp, self.neighbours.send(
                    side, packets.emit_destination(emit),
                    functools.partial(self._frame_out, dp, ip), now,
                ))

    def _clear_store(self) -> None:
        assert self.store is not None
        try:
            self.store.clear()
        except StoreError as exc:
            self.counters.store_errors += 1
            LOG.error("nat.state_file: %s", exc)

    def _write(self, changes: list[Change]) -> None:
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

    def _send_mods(self, mods: list[wire.Message]) -> None:
        self._outbox.extend(mods)
        self.counters.flows_installed += sum(1 for m in mods if m.command == wire.OFPFC_ADD)

    def _event(self) -> _Batch:
        """One event's messages: queued while it runs (events nest: a released packet is
        handled inside the ARP reply that released it), sent in one write to the switch
        connected now when the outermost ends, dropped if it raised."""
        return self._batch

    def _neighbour(self, dp: Any, out: NeighbourOutput[Send]) -> None:
        """Send the ARP the neighbour table asks for, and what it released."""
        gw_mac = self.config.gateway_mac
        with self._event():
            for reply in out.replies:
                self._packet_out(dp, reply.port, packets.arp_reply_frame(reply, gw_mac))
            for request in out.requests:
                frame = packets.arp_request_frame(request, gw_mac)
                for port in request.ports:
                    self._packet_out(dp, port, frame)
            for delivery in out.deliveries:
                delivery.item(delivery.l2)

    def _frame_out(self, dp: Any, ip: bytes, where: L2) -> None:
        for piece in self.fragments.egress(ip):
            frame = packets.build_ethernet(
                packets.mac_bytes(where.mac), packets.mac_bytes(self.config.gateway_mac),
                packets.ETH_TYPE_IPV4, piece,
            )
            self._packet_out(dp, where.port, frame)

    def _packet_out(self, dp: Any, port: int, frame: bytes) -> None:
        self._outbox.append(wire.packet_out(port, frame))
        self.counters.packet_outs += 1

    # The GRE demultiplexer.

    def _from_demux(self, dp: Any, data: bytes) -> None:
        """A packet from the demultiplexer's port: only its heartbeat comes here."""
        frame = packets.decode_frame(data)
        if frame is None or frame.ip is None or not self.demux.answered(frame.ip.dst,
                                                                         self.now()):
            self.demux.counters.demux_unexpected_frames += 1
            return
        self._demux_health(dp)

    def _demux_health(self, dp: Any) -> None:
        now = self.now()
        state = self.demux.health(now)
        if state is None:
            return
        output = self.core.demux_available(state, now)
        if state:
            self.demux.prune({(d.server_ip, d.public_ip, d.public_call_id)
                              for d in output.decisions if isinstance(d, DemuxEntry)})
        self.apply(dp, output)

    def _heartbeat(self) -> None:
        while True:
            hub.sleep(HEARTBEAT)
            try:
                self.heartbeat()
            except Exception:
                LOG.exception("GRE demultiplexer heartbeat failed")

    def heartbeat(self) -> None:
        """Send the demultiplexer its probe; act on a change of its health."""
        dp, port = self.datapath, self.demux.port
        if dp is None or not self.ready:
            return
        frame = self.demux.probe(self.now())
        with self._event():
            if frame is not None and port is not None:
                self._packet_out(dp, port, frame)
            self._demux_health(dp)

    # Time.

    def _poll(self) -> None:
        while True:
            hub.sleep(POLL_SECONDS)
            try:
                self.periodic(self.now())
            except Exception:
                LOG.exception("periodic work failed")

    def periodic(self, now: float) -> None:
        """One wake-up of the poller (every second): ARP retries; every ``stats_interval``
        seconds the core's ageing, then a flow statistics request.

        The request goes after the ageing's deletions: the switch answers in order, so
        its reply holds no entry the ageing deleted (whose final counts its flow-removed
        message brings) and no count is taken twice.
        """
        dp = self.datapath
        if dp is None or not self.ready:
            return
        self._neighbour(dp, self.neighbours.tick(now))
        self.fragments.reassembler.expire(now)
        if now >= self._next_stats:
            self._next_stats = now + self.config.stats_interval
            if self.demux.up:
                self.core.read_demux_counts(self.demux.entry_counts, now)
            self.apply(dp, self.core.tick(now))
            self._stats_parts = {}
            self._stats_entries = 0
            dp.send_msg(flowmods.stats_request(dp))
