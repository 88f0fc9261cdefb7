"""The gateway's core, sans-IO: routes each packet to the part that decides about it.

:class:`Gateway` takes decoded packets and the time, and returns an
:class:`~alg.events.Output`: packets to send and decisions about flow entries. Its parts:

* ``alg.napt``: NAPT of TCP, UDP and ICMP echo over ``alg.nat``;
* ``alg.control``: PPTP control connections (TCP/1723), each a ``alg.relay`` TCP relay
  (one ``alg.stream`` per direction) whose bytes go through an ``alg.framer`` framer to
  the call state machine of ``alg.pptp``, which keeps its calls in ``alg.calls``;
* ``alg.servermap``: the established calls' GRE, on flow entries, through the GRE
  demultiplexer (``alg.demuxtable``) or through here;
* ``alg.plaingre``: GRE with the ALG off;
* ``alg.icmp``: ICMP errors about all of these, and Time Exceeded;
* ``alg.restore``: restarts: the store's records taken back, a switch's entries brought
  in line.

Time passes in as ``now`` on every call; :meth:`Gateway.tick` ages everything, and the
switch's reports (flow statistics, flow removal, entries it could not take) come back
through :meth:`Gateway.flow_stats`, :meth:`Gateway.flow_removed` and
:meth:`Gateway.entry_failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import assert_never

from alg import restore
from alg.callid import CallIdAllocator
from alg.calls import Call, CallState
from alg.codec import PPTP_PORT
from alg.config import AlgConfig
from alg.control import ControlConnection, ControlConnections
from alg.counters import Counters
from alg.events import (
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    ControlEntry,
    Decision,
    DemuxReturnEntry,
    Direction,
    EntryKind,
    GreInboundEntry,
    GrePacket,
    HostEntries,
    IcmpEcho,
    IcmpMessage,
    Output,
    Packet,
    RemoveEntries,
    SessionEntries,
    TcpSegment,
    UdpDatagram,
)
from alg.histogram import Histogram
from alg.hostnat import HostBindings
from alg.icmp import IcmpErrors, Martians
from alg.napt import Napt, SessionStats
from alg.nat import NatTable, Proto
from alg.plaingre import PlainGre, PlainGreTable
from alg.pptp import CallControl
from alg.servermap import Counts, GrePath, ServerMap
from alg.snapshot import Journal, Snapshot

Installed = Mapping[tuple[EntryKind, int], int]
"""What a switch holds of the core's entries: how many entries per (kind, id)."""
DemuxCounts = Callable[[IPv4Address, IPv4Address, int], tuple[int, int] | None]
"""The demultiplexer's table: (server, public address, public Call ID) -> its entry's
(packets, bytes), None when it has no such entry."""


class Ids(Iterator[int]):
    """The core's ids for calls and server-map entries: rising, never reused, and above
    every id a switch or a store still has after a restart."""

    def __init__(self) -> None:
        self._next = 1

    def __next__(self) -> int:
        value = self._next
        self._next += 1
        return value

    def skip(self, highest: int) -> None:
        """Hand out ids above ``highest`` from now on."""
        self._next = max(self._next, highest + 1)


class Gateway:
    """The whole core: NAT, control connections and calls, the server-map, ALG off.

    Args:
        config: timeouts, limits, the public pool, the policy and the ALG switch.
        inside_address: the gateway's address on the inside, from which it tells inside
            hosts that a packet's TTL ran out (None: it does not tell them).
        inside_subnet, outside_subnet: the inside subnet and the on-link outside subnet:
            an ICMP error from outside sent from an inside address or the outside
            subnet's broadcast address is a martian (``alg.icmp``).
        counters: where to count (a new set without): the core starting again keeps
            the set its users hold.
    """

    def __init__(self, config: AlgConfig, inside_address: IPv4Address | None = None,
                 inside_subnet: IPv4Network | None = None,
                 outside_subnet: IPv4Network | None = None,
                 counters: Counters | None = None) -> None:
        self.config = config
        self._inside_address = inside_address
        self._inside_subnet = inside_subnet
        self._outside_subnet = outside_subnet
        self.counters = Counters() if counters is None else counters
        self.journal = Journal()
        self.nat = NatTable(config, journal=self.journal)
        self.call_ids = CallIdAllocator(config.call_id_hold_down, self.journal)
        self.ids = ids = Ids()
        self.server_map = ServerMap(config, self.counters, self.call_ids, ids)
        self.call_control = CallControl(config, self.counters, self.call_ids, self.server_map, ids)
        self.control = ControlConnections(
            config, self.counters, self.nat, self.call_control, self.journal
        )
        self.napt = Napt(config, self.counters, self.nat)
        self.plain = PlainGreTable(config, self.counters, self.nat.pool, ids, self.journal)
        own = (*config.public_ips, *(() if inside_address is None else (inside_address,)))
        self.icmp = IcmpErrors(self.counters, self.nat, self.server_map, self.plain,
                               config.alg_enabled, inside_address,
                               Martians(own, inside_subnet, outside_subnet))
        self.session_stats = SessionStats(self.nat)
        self.hosts = HostBindings(config, self.counters, self.nat.pool, ids, self.journal)
        self.datapath_nat = config.ordinary_nat == "conntrack" and config.policy == "open"
        """Inside hosts' TCP and UDP go to the connection tracker (``alg.hostnat``); with
        the ``strict`` policy they stay with the controller, which lets only TCP/1723 by."""

    # Views for displays and tests.

    def connections(self) -> list[ControlConnection]:
        """The live control connections."""
        return self.control.connections()

    def calls(self) -> Iterator[Call]:
        """Every live call of every control connection."""
        for conn in self.control.connections():
            yield from conn.calls

    @property
    def calls_in_progress(self) -> int:
        """Calls whose data channel is open."""
        return sum(1 for c in self.calls() if c.state is CallState.ESTABLISHED)

    @property
    def call_setup_seconds(self) -> Mapping[str, Histogram]:
        """Call setup times by direction, ``outgoing`` and ``incoming``
        (:attr:`alg.pptp.CallControl.setup_seconds`)."""
        return self.call_control.setup_seconds

    def is_control_session(self, session_id: int) -> bool:
        """True when NAT session ``session_id`` is a PPTP control connection."""
        return self.control.is_control(session_id)

    def inbound_gre_path(self, server_ip: IPv4Address, public_ip: IPv4Address
                         ) -> GrePath | None:
        """How a pair's server -> client GRE travels, None if the pair is closed."""
        return self.server_map.path(server_ip, public_ip)

    def plain_gre(self) -> list[PlainGre]:
        """ALG off: the address-only GRE bindings."""
        return self.plain.bindings()

    def gre_counts(self, call: Call) -> tuple[Counts, Counts]:
        """(packets, bytes) the switch carried for a call, outbound and inbound."""
        return self.server_map.counts(call)

    def gre_flow_packets(self, call: Call) -> tuple[int, int]:
        """Packets the switch carried for a call: outbound, inbound."""
        (up, _), (down, _) = self.gre_counts(call)
        return up, down

    def session_counts(self, session_id: int) -> Counts | None:
        """(packets, bytes) the switch reported for a NAT session's entries, if any."""
        return self.session_stats.get(session_id)

    # Packets.

    def handle(self, direction: Direction, packet: Packet, now: float) -> Output:
        """A packet that reached the controller (no flow entry matched it).

        The output's ``records`` are the state changes the packet made, for the store.
        """
        match packet:
            case TcpSegment():
                out = self.handle_tcp(direction, packet, now)
            case UdpDatagram(src_ip=src, src_port=sport, dst_ip=dst, dst_port=dport):
                out = self.handle_udp(direction, src, sport, dst, dport, now)
            case IcmpEcho(src_ip=src, dst_ip=dst, identifier=ident, request=request):
                out = self.handle_icmp_echo(direction, src, dst, ident, request, now)
            case GrePacket(src_ip=src, dst_ip=dst, gre=gre):
                out = self.handle_gre(direction, src, dst, gre, now)
            case IcmpMessage():
                out = self.icmp.error(direction, packet)
            case _:
                assert_never(packet)
        return self._noted(out)

    def expired(self, direction: Direction, packet: Packet, raw: bytes, now: float
                ) -> Output:
        """A packet the gateway would forward, with a TTL of 1 or less: not handled, but
        answered with Time Exceeded where a router would (``alg.icmp``).

        Args:
            raw: the packet as it came, from its IPv4 header on.
        """
        return self.icmp.expired(direction, packet, raw, now)

    def _noted(self, out: Output) -> Output:
        out.records.extend(self.journal.drain())
        return out

    def handle_tcp(self, direction: Direction, seg: TcpSegment, now: float) -> Output:
        """A TCP segment that reached the controller (no flow entry matched it)."""
        port = seg.dst_port if direction is Direction.OUTBOUND else seg.src_port
        if self.config.alg_enabled and port == PPTP_PORT:
            out = self.control.handle(direction, seg, now)
            if direction is Direction.OUTBOUND:
                self.control.place(seg, out)
            return out
        if self.datapath_nat:
            return self._datapath_nat(direction, Proto.TCP, seg.src_ip, seg.dst_port, now)
        starts = seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        return self.napt.packet(
            direction, Proto.TCP, (seg.src_ip, seg.src_port), (seg.dst_ip, seg.dst_port),
            starts, now, seg if starts else None,
        )

    def handle_udp(
        self,
        direction: Direction,
        src_ip: IPv4Address,
        src_port: int,
        dst_ip: IPv4Address,
        dst_port: int,
        now: float,
    ) -> Output:
        """A UDP datagram that reached the controller."""
        if self.datapath_nat:
            return self._datapath_nat(direction, Proto.UDP, src_ip, dst_port, now)
        return self.napt.packet(
            direction, Proto.UDP, (src_ip, src_port), (dst_ip, dst_port), True, now
        )

    def _datapath_nat(self, direction: Direction, proto: Proto, src_ip: IPv4Address,
                      dst_port: int, now: float) -> Output:
        """TCP or UDP with ``ordinary_nat = conntrack``: an inside host's packet binds
        the host (``alg.hostnat``) and goes back through the switch; inbound, the
        tracker had no connection for it."""
        if direction is Direction.INBOUND:
            self.counters.no_session_drops += 1
            return Output(drop_reason=f"no {proto.name} connection for inbound packet")
        if not self.napt.allows(proto, dst_port):
            self.counters.policy_denied += 1
            return Output(drop_reason=f"policy {self.config.policy} denies {proto.name}")
        return self.hosts.outbound(src_ip, now)

    def handle_icmp_echo(
        self,
        direction: Direction,
        src_ip: IPv4Address,
        dst_ip: IPv4Address,
        identifier: int,
        request: bool,
        now: float,
    ) -> Output:
        """An ICMP echo request or reply; echo is NATed packet by packet by the controller.

        The translation's ports are the identifier the packet must carry: ``src_port``
        going out (requests), ``dst_port`` coming in (replies).
        """
        if request != (direction is Direction.OUTBOUND):
            self.counters.no_session_drops += 1
            return Output(drop_reason="icmp echo not started from inside")
        if request:
            return self.napt.packet(
                direction, Proto.ICMP, (src_ip, identifier), (dst_ip, 0), True, now
            )
        return self.napt.packet(
            direction, Proto.ICMP, (src_ip, 0), (dst_ip, identifier), False, now
        )

    def handle_gre(
        self, direction: Direction, src_ip: IPv4Address, dst_ip: IPv4Address, gre: bytes,
        now: float,
    ) -> Output:
        """A GRE packet that reached the controller (see ``alg.servermap``)."""
        if not self.config.alg_enabled:
            return self.plain.handle_gre(
                direction, src_ip, dst_ip, now, self.napt.allows(Proto.GRE, 0)
            )
        return self.server_map.handle_gre(direction, src_ip, dst_ip, gre, now)

    # The GRE demultiplexer.

    def demux_available(self, up: bool, now: float) -> Output:
        """The GRE demultiplexer answers its heartbeat, or stopped answering (see
        ``alg.servermap``)."""
        out = Output()
        self.server_map.demux_available(up, now, out)
        return self._noted(out)

    def demux_entries(self) -> Output:
        """Every table and return entry the demultiplexer should have (to write again
        after it was replaced)."""
        out = Output()
        out.decisions.extend(self.server_map.demux_entries())
        return out

    def demux_counts(self, call: Call, packets: int, byte_count: int, now: float) -> None:
        """The demultiplexer's counts of a call's table entry."""
        self.server_map.demux_counts(call, packets, byte_count, now)

    def read_demux_counts(self, table: DemuxCounts, now: float) -> None:
        """Every call whose pair is on the demux path takes its table entry's counts
        from ``table`` (server, public address, public Call ID -> packets, bytes, or None
        when the table has no such entry)."""
        for call in self.calls():
            conn = call.conn
            if call.public_call_id is None or call.server_call_id is None or \
                    self.server_map.path(conn.server_ip, conn.public_ip) is not GrePath.DEMUX:
                continue
            counts = table(conn.server_ip, conn.public_ip, call.public_call_id)
            if counts is not None:
                self.server_map.demux_counts(call, *counts, now)

    # The switch's reports and the clock.

    def entry_failed(self, decision: Decision, now: float) -> Output:
        """The app could not carry out ``decision``; the core adapts where it can.

        A server -> client entry to a client whose address the app cannot resolve moves
        its pair to the controller path (retried by :meth:`tick`); so does a client's
        return entry from the demultiplexer, for the pairs of its calls. A session's entries
        are decided again by its next packet; a control connection's entry by its
        client's next segment (meanwhile its server's segments take the shared punt of
        control segments from the outside). A host binding whose entries cannot go in
        (its host's address is not known) ends: its host binds again with its next
        packet. Other entries need nothing: their packets keep reaching the controller,
        which forwards them.
        """
        out = Output()
        if isinstance(decision, GreInboundEntry) and decision.client_ip is not None:
            self.server_map.unreachable(decision, now, out)
        elif isinstance(decision, DemuxReturnEntry):
            self.server_map.return_failed(decision, now, out)
        elif isinstance(decision, SessionEntries):
            decision.session.entries_sent = None
        elif isinstance(decision, ControlEntry):
            self.control.unplaced(decision.session)
        elif isinstance(decision, HostEntries):
            out.extend(self.hosts.removed(decision.binding.id))
        return self._noted(out)

    def flow_stats(
        self, kind: EntryKind, entry_id: int, packets: int, now: float, byte_count: int = 0
    ) -> None:
        """The switch's packet and byte counts for one flow entry (cumulative).

        A count that grew since the last report restarts the idle clock of what the entry
        belongs to, so Left-Time follows traffic the controller never sees. A control
        connection's entry punts: the controller saw each of its packets.
        """
        if kind is EntryKind.CONTROL:
            return
        if kind is EntryKind.SESSION:
            self.session_stats.reported(entry_id, packets, byte_count, now)
        elif not self.server_map.entry_stats(kind, entry_id, packets, byte_count, now):
            self.plain.entry_stats(entry_id, packets, now)

    def flow_removed(
        self, kind: EntryKind, entry_id: int, packets: int = 0, byte_count: int = 0
    ) -> Output:
        """The switch removed an entry (idle timeout, deletion, eviction) with these counts.

        A NAT session has two entries under one cookie, whose counts the app reports
        summed: the removed entry's counts leave the session's sum, so that the other
        entry's unchanged count is no growth. A server-map entry's counts start again
        from zero if it is installed again (the next packet of a live call is punted and
        re-installs it). Ageing itself is the core's, by :meth:`tick`.
        """
        if kind is EntryKind.HOST:
            return self._noted(self.hosts.removed(entry_id))
        if kind is EntryKind.SESSION:
            self.session_stats.removed(entry_id, packets, byte_count)
        elif kind is not EntryKind.CONTROL and not self.server_map.entry_removed(
                kind, entry_id, packets, byte_count):
            self.plain.entry_removed(entry_id)
        return Output()

    def tick(self, now: float) -> Output:
        """Age everything by the clock: sessions, connections, server-maps, hold-downs."""
        out = Output()
        for session in self.nat.expire(now):
            self.session_stats.forget(session.id)
            if not self.control.session_expired(session.id, now, out):
                out.decisions.append(RemoveEntries(EntryKind.SESSION, session.id))
        self.control.tick(now, out)
        self.plain.tick(now, out)
        self.call_ids.purge(now)
        self.server_map.reconsider(now, out)
        return self._noted(out)

    # Restarts.

    def restore(self, snapshot: Snapshot, installed: Installed, now: float) -> Output:
        """Take back what a store kept, then reconcile with the switch (after a restart
        of the controller; call it once, before any packet; see ``alg.restore``).

        Args:
            snapshot: the store's records.
            installed: what the switch holds of the core's entries.
            now: the time.
        """
        return restore.restore(self, snapshot, installed, now)

    def reconcile(self, installed: Installed) -> Output:
        """Bring a switch's entries in line with the core (on every connection of the
        switch: after a restart of either; see ``alg.restore``).

        Args:
            installed: what the switch holds of the core's entries (pipeline included).
        """
        return self._noted(restore.reconcile(self, installed))

    def stop_new_calls(self) -> None:
        """Refuse every new call until :meth:`resume_new_calls` (the store does not
        answer: nothing may be handed out that it has not recorded); the calls set up
        go on."""
        self.call_control.new_calls = False

    def resume_new_calls(self) -> None:
        """Set up new calls again."""
        self.call_control.new_calls = True

    def start_empty(self) -> None:
        """Forget everything and set every counter to zero (a restore that failed); the
        counters stay the same object (the app's fragment path counts in it too)."""
        self.counters.reset()
        Gateway.__init__(self, self.config, self._inside_address, self._inside_subnet,
                         self._outside_subnet, self.counters)
