"""The NAT gateway with the PPTP ALG: a thin Ryu shim around ``alg.engine.Gateway``.

Run::

    ryu-manager --ofp-listen-host 127.0.0.1 --ofp-tcp-listen-port 6653 \\
        --wsapi-host 127.0.0.1 --wsapi-port 8080 \\
        --config-file gateway.conf ryu_apps/nat_gateway.py

The app decodes each packet-in once, hands the core a plain event with the time, and turns
the core's output into flow-mods (``ryu_apps.flowmods``) and packet-outs
(``ryu_apps.packets``). It owns only L2 facts: which port and MAC an address is behind,
and answering and resolving ARP. Every PPTP and NAT decision is the core's.

Before the core sees a packet the app drops, and counts: IP fragments
(``fragments_dropped``), packets with a bad TCP, UDP or ICMP checksum (``bad_checksums``),
and packets or ARP from an inside port claiming an inside address first seen on another
port (``spoofed_drops``: each inside address is pinned to the port it was first seen on,
its MAC may change by ARP on that port). Inside multicast and broadcast is dropped
silently, never NATed out.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, ClassVar

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3

from alg.engine import Gateway
from alg.errors import ConfigError
from alg.events import (
    Direction,
    EntryKind,
    Forward,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    SendGre,
    SendTcp,
    SessionEntries,
)
from ryu_apps import config as gwconfig
from ryu_apps import flowmods, packets, switch
from ryu_apps.flowmods import L2

LOG = logging.getLogger("pptp_alg.gateway")
CONF = cfg.CONF
gwconfig.register(CONF)

ARP_QUEUE_LIMIT = 64
ARP_RETRY_SECONDS = 1.0
ARP_RETRIES = 5
LIMITED_BROADCAST = IPv4Address("255.255.255.255")


@dataclass
class AppCounters:
    """What the shim counts (the core counts the rest)."""

    packet_ins: int = 0
    undecodable_frames: int = 0
    flows_installed: int = 0
    flows_removed: int = 0
    packet_outs: int = 0
    arp_requests_sent: int = 0
    arp_replies_sent: int = 0
    arp_queue_drops: int = 0
    ttl_expired: int = 0
    spoofed_drops: int = 0
    fragments_dropped: int = 0
    bad_checksums: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(self.__dict__)


@dataclass
class PendingArp:
    """Frames waiting for an address to be resolved.

    Attributes:
        side: ``"inside"`` or ``"outside"``: where the address is, and the only side
            whose ARP resolves it.
        sent_at: when the last request went out.
        requests: how many requests went out (the first and its retries).
    """

    side: str
    sent_at: float
    frames: deque[Callable[[L2], None]] = field(default_factory=deque)
    requests: int = 0


class NatGateway(app_manager.RyuApp):  # type: ignore[misc]
    """Ryu application: the OVS bridge as a NAT firewall with a PPTP ALG."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS: ClassVar[dict[str, Any]] = {"wsgi": WSGIApplication}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.config = gwconfig.load({name: CONF.nat[name] for name in CONF.nat})
        except ConfigError as exc:
            LOG.critical("refusing to start: configuration error: %s", exc)
            raise SystemExit(2) from exc
        self.core = Gateway(self.config.alg)
        self.counters = AppCounters()
        self.datapath: Any = None
        self.port_numbers: dict[str, int] = {}
        self.inside_ports: set[int] = set()
        self.outside_port: int | None = None
        self.inside_hosts: dict[IPv4Address, L2] = {}
        self.outside_hosts: dict[IPv4Address, L2] = {}
        self.pending_arp: dict[IPv4Address, PendingArp] = {}
        self._stats_parts: dict[tuple[EntryKind, int], tuple[int, int]] = {}
        self._next_stats = 0.0
        wsgi = kwargs.get("wsgi")
        if wsgi is not None:
            from ryu_apps.rest import register_rest

            register_rest(wsgi, self)
        self.threads.append(hub.spawn(self._poll))
        LOG.info(
            "gateway configured: inside %s via %s, public %s, policy %s, ALG %s",
            self.config.inside_subnet, self.config.inside_gateway,
            ", ".join(str(ip) for ip in self.config.alg.public_ips), self.config.alg.policy,
            "on" if self.config.alg.alg_enabled else "off",
        )

    @staticmethod
    def now() -> float:
        """The core's clock: seconds, monotonic."""
        return time.monotonic()

    # Switch connection and pipeline.

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[misc]
    def _switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.datapath = dp
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        for port in ev.msg.body:
            name = port.name.decode() if isinstance(port.name, bytes) else port.name
            self.port_numbers[name] = port.port_no
        missing = [
            n for n in (*self.config.inside_ports, self.config.outside_port)
            if n not in self.port_numbers
        ]
        if missing:
            LOG.error("switch has no port named %s; pipeline not installed", ", ".join(missing))
            return
        self.inside_ports = {self.port_numbers[n] for n in self.config.inside_ports}
        self.outside_port = self.port_numbers[self.config.outside_port]
        dp.send_msg(flowmods.remove_all(dp))
        self._send_mods(dp, flowmods.pipeline(
            dp, sorted(self.inside_ports), self.outside_port, self.config.alg.public_ips,
            self.config.alg.alg_enabled,
        ))
        LOG.info("pipeline installed on datapath %016x", dp.id)

    def _send_mods(self, dp: Any, mods: list[Any]) -> None:
        for mod in mods:
            dp.send_msg(mod)
        self.counters.flows_installed += sum(
            1 for m in mods if m.command == dp.ofproto.OFPFC_ADD
        )

    # Packet-in.

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[misc]
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        self.counters.packet_ins += 1
        in_port = msg.match["in_port"]
        self.handle_frame(msg.datapath, in_port, bytes(msg.data))

    def handle_frame(self, dp: Any, in_port: int, data: bytes) -> None:
        """Decode one frame from the switch and act on it."""
        frame = packets.decode_frame(data)
        if in_port in self.inside_ports:
            side = "inside"
        elif in_port == self.outside_port:
            side = "outside"
        else:
            return
        if frame is None:
            self.counters.undecodable_frames += 1
            return
        if frame.arp is not None:
            self._handle_arp(dp, side, in_port, frame.src_mac, frame.arp)
            return
        ip = frame.ip
        assert ip is not None
        if ip.fragment:
            self.counters.fragments_dropped += 1
            return
        if not packets.l4_checksum_ok(ip):
            self.counters.bad_checksums += 1
            return
        if side == "inside":
            if ip.src not in self.config.inside_subnet:
                return
            if self._learn_inside(ip.src, in_port, frame.src_mac, from_arp=False) is None:
                return
            if (
                ip.dst.is_multicast or ip.dst == LIMITED_BROADCAST
                or ip.dst == self.config.inside_subnet.broadcast_address
            ):
                return
            if ip.dst == self.config.inside_gateway:
                self._answer_gateway_ping(dp, in_port, frame.src_mac, ip)
                return
            if ip.dst in self.config.inside_subnet:
                return
            hop = self._outside_hop(ip.dst)
            if hop is None:
                return
            if hop not in self.outside_hosts:
                self._queue_for(
                    dp, "outside", hop, lambda _l2: self.handle_frame(dp, in_port, data)
                )
                return
            direction = Direction.OUTBOUND
        else:
            direction = Direction.INBOUND
        self._dispatch(dp, direction, data, ip)

    def _dispatch(self, dp: Any, direction: Direction, data: bytes, ip: packets.Ipv4) -> None:
        now = self.now()
        output: Output
        if ip.proto == packets.PROTO_TCP:
            seg = packets.decode_tcp(ip)
            if seg is None:
                self.counters.undecodable_frames += 1
                return
            output = self.core.handle_tcp(direction, seg, now)
        elif ip.proto == packets.PROTO_UDP:
            ports = packets.decode_ports(ip)
            if ports is None:
                self.counters.undecodable_frames += 1
                return
            output = self.core.handle_udp(direction, ip.src, ports[0], ip.dst, ports[1], now)
        elif ip.proto == packets.PROTO_ICMP:
            echo = packets.decode_icmp_echo(ip)
            if echo is None:
                return
            output = self.core.handle_icmp_echo(
                direction, ip.src, ip.dst, echo[1], echo[0] == packets.ICMP_ECHO_REQUEST, now
            )
        elif ip.proto == packets.PROTO_GRE:
            output = self.core.handle_gre(direction, ip.src, ip.dst, ip.payload, now)
        else:
            return
        self.apply(dp, output, ip)

    # Acting on the core's output.

    def apply(self, dp: Any, output: Output, original: packets.Ipv4 | None = None) -> None:
        """Send the flow-mods, then the packets, of one core output."""
        for line in output.errors:
            LOG.error("%s", line)
        for log in output.logs:
            LOG.info(
                "call %s: client %s public %s server %s call-id a=%d b=%d c=%s%s",
                log.event, log.client_ip, log.public_ip, log.server_ip, log.client_call_id,
                log.public_call_id, log.server_call_id,
                f" ({log.reason})" if log.reason else "",
            )
        mods = []
        for decision in output.decisions:
            mods.extend(self._flow_mods(dp, decision))
        if mods:
            self._send_mods(dp, mods)
            dp.send_msg(dp.ofproto_parser.OFPBarrierRequest(dp))
        for emit in output.emits:
            if isinstance(emit, Forward):
                if original is not None:
                    self._forward(dp, emit, original)
                continue
            header = self._header_from(original)
            if header is None:
                continue
            if isinstance(emit, SendTcp):
                seg = emit.segment
                ip = packets.build_ipv4(
                    seg.src_ip, seg.dst_ip, packets.PROTO_TCP, packets.build_tcp(seg), **header
                )
                self._send_ip(dp, emit.direction, seg.dst_ip, ip)
            elif isinstance(emit, SendGre):
                ip = packets.build_ipv4(
                    emit.src_ip, emit.dst_ip, packets.PROTO_GRE, emit.gre, **header
                )
                self._send_ip(dp, emit.direction, emit.dst_ip, ip)

    def _header_from(self, original: packets.Ipv4 | None) -> dict[str, Any] | None:
        """IPv4 header fields for a packet sent on behalf of ``original``.

        The incoming packet's TTL less one, identification, TOS and DF; the defaults
        without one; None (counted in ``ttl_expired``) when its TTL is spent.
        """
        if original is None:
            return {}
        if original.ttl <= 1:
            self.counters.ttl_expired += 1
            return None
        return {
            "ttl": original.ttl - 1, "ident": original.ident, "tos": original.tos,
            "dont_fragment": original.dont_fragment,
        }

    def _flow_mods(self, dp: Any, decision: object) -> list[Any]:
        gw_mac = self.config.gateway_mac
        if isinstance(decision, RemoveEntries):
            return [flowmods.remove(dp, decision)]
        if isinstance(decision, SessionEntries):
            s = decision.session
            inside = self.inside_hosts.get(s.inside_ip)
            outside = self._outside_l2(s.remote_ip)
            if inside is None or outside is None:
                return []
            return flowmods.session_flows(dp, decision, inside, outside, gw_mac)
        if isinstance(decision, GreOutboundEntry):
            client = self.inside_hosts.get(decision.client_ip)
            outside = self._outside_l2(decision.server_ip)
            if client is None or outside is None:
                return []
            return [flowmods.gre_outbound(dp, decision, client, outside, gw_mac)]
        if isinstance(decision, GreInboundEntry):
            assert self.outside_port is not None
            client = None
            if decision.client_ip is not None:
                client = self.inside_hosts.get(decision.client_ip)
                if client is None:
                    decision = dataclasses.replace(decision, client_ip=None)
            return [flowmods.gre_inbound(dp, decision, self.outside_port, client, gw_mac)]
        return []

    def _forward(self, dp: Any, emit: Forward, original: packets.Ipv4) -> None:
        header = self._header_from(original)
        if header is None:
            return
        t = emit.translation
        outbound = emit.direction is Direction.OUTBOUND
        l4 = packets.translate_l4(
            original.proto, original.payload, t.src_port, t.dst_port, outbound
        )
        l4 = packets.fix_l4(t.src_ip, t.dst_ip, original.proto, l4)
        ip = packets.build_ipv4(
            t.src_ip, t.dst_ip, original.proto, l4, options=original.options, **header
        )
        self._send_ip(dp, emit.direction, t.dst_ip, ip)

    def _send_ip(self, dp: Any, direction: Direction, dst_ip: IPv4Address, ip: bytes) -> None:
        if direction is Direction.INBOUND:
            l2 = self.inside_hosts.get(dst_ip)
            side, target = "inside", dst_ip
        else:
            hop = self._outside_hop(dst_ip)
            if hop is None:
                return
            l2 = self.outside_hosts.get(hop)
            side, target = "outside", hop

        def send(where: L2) -> None:
            frame = packets.build_ethernet(
                packets.mac_bytes(where.mac), packets.mac_bytes(self.config.gateway_mac),
                packets.ETH_TYPE_IPV4, ip,
            )
            self._packet_out(dp, where.port, frame)

        if l2 is None:
            self._queue_for(dp, side, target, send)
        else:
            send(l2)

    def _packet_out(self, dp: Any, port: int, frame: bytes) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPPacketOut(
            datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(port)], data=frame,
        ))
        self.counters.packet_outs += 1

    # L2: where addresses are.

    def _outside_hop(self, dst: IPv4Address) -> IPv4Address | None:
        if dst in self.config.outside_subnet:
            return dst
        return self.config.next_hop

    def _outside_l2(self, dst: IPv4Address) -> L2 | None:
        hop = self._outside_hop(dst)
        return None if hop is None else self.outside_hosts.get(hop)

    def _learn_inside(
        self, ip: IPv4Address, port: int, mac: bytes, from_arp: bool
    ) -> L2 | None:
        """Where inside address ``ip`` is, learnt from a packet or ARP from ``port``.

        The address is pinned to the port it was first seen on: from another port it is a
        spoof (None, counted). ARP on that port may change the MAC; IP packets do not.
        """
        known = self.inside_hosts.get(ip)
        if known is None:
            known = self.inside_hosts[ip] = L2(port, packets.mac_text(mac))
        elif known.port != port:
            self.counters.spoofed_drops += 1
            return None
        elif from_arp:
            text = packets.mac_text(mac)
            if text != known.mac:
                known = self.inside_hosts[ip] = L2(port, text)
        return known

    def _handle_arp(
        self, dp: Any, side: str, in_port: int, src_mac: bytes, arp: packets.Arp
    ) -> None:
        learned: L2 | None = None
        if side == "inside":
            if arp.sender_ip in self.config.inside_subnet:
                learned = self._learn_inside(arp.sender_ip, in_port, arp.sender_mac, True)
                if learned is None:
                    return
            ours = arp.target_ip == self.config.inside_gateway
        else:
            if arp.sender_ip in self.config.outside_subnet:
                learned = L2(in_port, packets.mac_text(arp.sender_mac))
                if self.outside_hosts.get(arp.sender_ip) != learned:
                    self.outside_hosts[arp.sender_ip] = learned
            ours = arp.target_ip in self.config.alg.public_ips
        if arp.opcode == packets.ARP_REQUEST and ours:
            gw_mac = packets.mac_bytes(self.config.gateway_mac)
            body = packets.build_arp(
                packets.ARP_REPLY, gw_mac, arp.target_ip, arp.sender_mac, arp.sender_ip
            )
            self._packet_out(
                dp, in_port, packets.build_ethernet(src_mac, gw_mac, packets.ETH_TYPE_ARP, body)
            )
            self.counters.arp_replies_sent += 1
        pending = self.pending_arp.get(arp.sender_ip)
        if pending is not None and learned is not None and pending.side == side:
            del self.pending_arp[arp.sender_ip]
            while pending.frames:
                pending.frames.popleft()(learned)

    def _queue_for(
        self, dp: Any, side: str, target: IPv4Address, action: Callable[[L2], None]
    ) -> None:
        now = self.now()
        pending = self.pending_arp.get(target)
        if pending is None:
            pending = self.pending_arp[target] = PendingArp(side, sent_at=0.0)
        if len(pending.frames) >= ARP_QUEUE_LIMIT:
            self.counters.arp_queue_drops += 1
        else:
            pending.frames.append(action)
        if now - pending.sent_at >= ARP_RETRY_SECONDS and pending.requests <= ARP_RETRIES:
            self._request(dp, target, pending, now)

    def _request(self, dp: Any, target: IPv4Address, pending: PendingArp, now: float) -> None:
        pending.sent_at = now
        pending.requests += 1
        self._send_arp_request(dp, pending.side, target)

    def _send_arp_request(self, dp: Any, side: str, target: IPv4Address) -> None:
        gw_mac = packets.mac_bytes(self.config.gateway_mac)
        if side == "inside":
            sender = self.config.inside_gateway
            ports = sorted(self.inside_ports)
        else:
            sender = self.config.alg.public_ips[0]
            ports = [] if self.outside_port is None else [self.outside_port]
        body = packets.build_arp(packets.ARP_REQUEST, gw_mac, sender, b"\0" * 6, target)
        frame = packets.build_ethernet(packets.BROADCAST, gw_mac, packets.ETH_TYPE_ARP, body)
        for port in ports:
            self._packet_out(dp, port, frame)
        self.counters.arp_requests_sent += 1

    def _answer_gateway_ping(
        self, dp: Any, in_port: int, src_mac: bytes, ip: packets.Ipv4
    ) -> None:
        echo = packets.decode_icmp_echo(ip)
        if ip.proto != packets.PROTO_ICMP or echo is None:
            return
        if echo[0] != packets.ICMP_ECHO_REQUEST:
            return
        reply = bytes([packets.ICMP_ECHO_REPLY]) + ip.payload[1:]
        reply = packets.fix_l4(ip.dst, ip.src, packets.PROTO_ICMP, reply)
        gw_mac = packets.mac_bytes(self.config.gateway_mac)
        frame = packets.build_ethernet(
            src_mac, gw_mac, packets.ETH_TYPE_IPV4,
            packets.build_ipv4(ip.dst, ip.src, packets.PROTO_ICMP, reply),
        )
        self._packet_out(dp, in_port, frame)

    # Time: flow statistics and ageing.

    def _poll(self) -> None:
        while True:
            hub.sleep(ARP_RETRY_SECONDS)
            try:
                self.periodic(self.now())
            except Exception:
                LOG.exception("periodic work failed")

    def periodic(self, now: float) -> None:
        """One wake-up of the poller (every second).

        ARP retries each time; a flow statistics request and the core's ageing every
        ``stats_interval`` seconds.
        """
        dp = self.datapath
        if dp is None or self.outside_port is None:
            return
        self._retry_arp(dp)
        if now >= self._next_stats:
            self._next_stats = now + self.config.stats_interval
            self._stats_parts = {}
            dp.send_msg(flowmods.stats_request(dp))
            self.apply(dp, self.core.tick(now))

    def _retry_arp(self, dp: Any) -> None:
        """Re-send unanswered ARP requests, one a second.

        A second after the last of ``ARP_RETRIES`` retries went unanswered, the waiting
        frames are dropped (counted in ``arp_queue_drops``).
        """
        now = self.now()
        for target, pending in list(self.pending_arp.items()):
            if now - pending.sent_at < ARP_RETRY_SECONDS:
                continue
            if pending.requests > ARP_RETRIES:
                self.counters.arp_queue_drops += len(pending.frames)
                del self.pending_arp[target]
            else:
                self._request(dp, target, pending, now)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[misc]
    def _flow_stats(self, ev: Any) -> None:
        """Sum the counts per cookie (a session has two entries), then report."""
        for stat in ev.msg.body:
            decoded = switch.decode_cookie(stat.cookie)
            if decoded is not None:
                packets, octets = self._stats_parts.get(decoded, (0, 0))
                self._stats_parts[decoded] = (
                    packets + stat.packet_count, octets + stat.byte_count
                )
        if ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        now = self.now()
        for (kind, entry_id), (packets, octets) in self._stats_parts.items():
            self.core.flow_stats(kind, entry_id, packets, now, octets)
        self._stats_parts = {}

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)  # type: ignore[misc]
    def _flow_removed(self, ev: Any) -> None:
        """Count the removal and tell the core which of its entries is gone."""
        self.counters.flows_removed += 1
        decoded = switch.decode_cookie(ev.msg.cookie)
        if decoded is not None:
            kind, entry_id = decoded
            self.core.flow_removed(kind, entry_id)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)  # type: ignore[misc]
    def _error(self, ev: Any) -> None:
        LOG.error("switch reported error type=%s code=%s", ev.msg.type, ev.msg.code)
