"""The gateway's core, sans-IO: routes each packet to the part that decides about it.

:class:`Gateway` takes decoded packets and the time, and returns an
:class:`~alg.events.Output`: packets to send and decisions about flow entries. Its parts:

* ``alg.napt``: NAPT of TCP, UDP and ICMP echo over ``alg.nat``;
* ``alg.control``: PPTP control connections (TCP/1723), each a ``alg.relay`` TCP relay
  whose bytes go through an ``alg.framer`` framer to the call state machine of
  ``alg.pptp``, which keeps its calls in ``alg.calls``;
* ``alg.servermap``: the established calls' GRE, on flow entries or through here;
* ``alg.plaingre``: GRE with the ALG off;
* ``alg.icmp``: ICMP errors about all of these, and Time Exceeded.

Time passes in as ``now`` on every call; :meth:`Gateway.tick` ages everything, and the
switch's reports (flow statistics, flow removal, entries it could not take) come back
through :meth:`Gateway.flow_stats`, :meth:`Gateway.flow_removed` and
:meth:`Gateway.entry_failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import assert_never

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
    IcmpEcho,
    IcmpMessage,
    Output,
    Packet,
    RemoveEntries,
    SessionEntries,
    TcpSegment,
    UdpDatagram,
)
from alg.icmp import IcmpErrors, Martians
from alg.napt import Napt
from alg.nat import NatTable, Proto
from alg.plaingre import PlainGre, PlainGreTable
from alg.pptp import CallControl
from alg.servermap import Counts, GrePath, ServerMap
from alg.snapshot import Change, Forget, Journal, Snapshot

Installed = Mapping[tuple[EntryKind, int], int]
DemuxCounts = Callable[[IPv4Address, IPv4Address, int], tuple[int, int] | None]
"""The demultiplexer's table: (server, public address, public Call ID) -> its entry's
(packets, bytes), None when it has no such entry."""
"""What a switch holds of the core's entries: how many entries per (kind, id)."""

SESSION_KINDS = frozenset({EntryKind.SESSION, EntryKind.CONTROL})
"""Entries whose id is a NAT session's (the others' ids are the core's :class:`Ids`)."""


def _highest_core_id(installed: Installed) -> int:
    """The highest id from the core's :class:`Ids` that a switch holds: not a session's
    (the NAT table's own ids) nor a return entry's (its client's address,
    ``alg.servermap.return_entry_id``)."""
    return max((i for k, i in installed
                if k not in SESSION_KINDS and k is not EntryKind.DEMUX_RETURN), default=0)


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
        self._session_counts: dict[int, Counts] = {}
        self._unplaced: dict[tuple[IPv4Address, int, IPv4Address], int] = {}
        """Control connections whose entry the app could not place (the client's port
        not known), by their inside endpoint and server: offered again when the client
        speaks."""

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
        return self._session_counts.get(session_id)

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
            if self._unplaced and direction is Direction.OUTBOUND:
                self._place(seg, out)
            return out
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
        return self.napt.packet(
            direction, Proto.UDP, (src_ip, src_port), (dst_ip, dst_port), True, now
        )

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
        control segments from the outside). Other entries need nothing: their packets
        keep reaching the controller, which forwards them.
        """
        out = Output()
        if isinstance(decision, GreInboundEntry) and decision.client_ip is not None:
            self.server_map.unreachable(decision, now, out)
        elif isinstance(decision, DemuxReturnEntry):
            self.server_map.return_failed(decision, now, out)
        elif isinstance(decision, SessionEntries):
            decision.session.entries_sent = None
        elif isinstance(decision, ControlEntry):
            s = decision.session
            self._unplaced[(s.inside_ip, s.inside_port, s.remote_ip)] = s.id
        return self._noted(out)

    def _place(self, seg: TcpSegment, out: Output) -> None:
        """The client of a control connection whose entry was not placed spoke (so the
        app knows its port now): offer the entry again."""
        session_id = self._unplaced.pop((seg.src_ip, seg.src_port, seg.dst_ip), None)
        session = None if session_id is None else self.nat.get(session_id)
        if session is not None and self.control.is_control(session.id):
            out.decisions.append(ControlEntry(session))

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
            if self.nat.get(entry_id) is None:
                return
            before, _ = self._session_counts.get(entry_id, (0, 0))
            self._session_counts[entry_id] = (packets, byte_count)
            if packets != before and packets > 0:
                self.nat.touch(entry_id, now)
        elif not self.server_map.entry_stats(kind, entry_id, packets, byte_count, now):
            self.plain.entry_stats(entry_id, packets, now)

    def flow_removed(
        self, kind: EntryKind, entry_id: int, packets: int = 0, byte_count: int = 0
    ) -> None:
        """The switch removed an entry (idle timeout, deletion, eviction) with these counts.

        A NAT session has two entries under one cookie, whose counts the app reports
        summed: the removed entry's counts leave the session's sum, so that the other
        entry's unchanged count is no growth. A server-map entry's counts start again
        from zero if it is installed again (the next packet of a live call is punted and
        re-installs it). Ageing itself is the core's, by :meth:`tick`.
        """
        if kind is EntryKind.CONTROL:
            return
        if kind is EntryKind.SESSION:
            last = self._session_counts.get(entry_id)
            if last is not None:
                self._session_counts[entry_id] = (
                    max(0, last[0] - packets), max(0, last[1] - byte_count)
                )
        elif not self.server_map.entry_removed(kind, entry_id, packets, byte_count):
            self.plain.entry_removed(entry_id)

    def tick(self, now: float) -> Output:
        """Age everything by the clock: sessions, connections, server-maps, hold-downs."""
        out = Output()
        for session in self.nat.expire(now):
            self._session_counts.pop(session.id, None)
            if not self.control.session_expired(session.id, now, out):
                out.decisions.append(RemoveEntries(EntryKind.SESSION, session.id))
        self.control.tick(now, out)
        self._unplaced = {k: i for k, i in self._unplaced.items() if self.control.is_control(i)}
        self.plain.tick(now, out)
        self.call_ids.purge(now)
        self.server_map.reconsider(now, out)
        return self._noted(out)

    # Restarts.

    def restore(self, snapshot: Snapshot, installed: Installed, now: float) -> Output:
        """Take back what a store kept, then reconcile with the switch (after a restart
        of the controller; call it once, before any packet).

        Sessions come back with their ids and public endpoints, control connections
        with their sequence numbers (each direction resynchronises, ``alg.relay``),
        calls with their Call IDs, hold-downs with their ends, ALG-off GRE bindings with
        their entries. A record that contradicts what came back before it, or the ALG
        switch as configured now (a control connection with the ALG off, a TCP/1723
        session that was not one with it on), is left out, counted
        (``restore_skipped``) and forgotten; what came back is written again as it
        stands now (an id or a hold-down may have changed).

        Every value of every record is checked for its type and range first
        (:meth:`~alg.snapshot.Snapshot.validated`): a record that fails is left out and
        counted with those the store already refused (``restore_records_rejected``). If
        the restore still fails, the core starts empty (``restore_failures``): the
        switch's entries are all removed and the store's records forgotten, and the
        output's ``errors`` say so.

        Args:
            snapshot: the store's records.
            installed: what the switch holds of the core's entries.
            now: the time.
        """
        checked = snapshot.validated()
        rejected = checked.rejected
        self.counters.restore_records_rejected += len(rejected)
        try:
            out = self._restore(checked, installed, now)
        except Exception as exc:
            self._start_empty()
            self.counters.restore_records_rejected = len(rejected)
            self.counters.restore_failures += 1
            out = self.reconcile(installed)
            out.records[:0] = _forget_all(checked)
            out.errors.append(f"restore failed ({type(exc).__name__}: {exc}): the gateway "
                              "starts without its saved state")
        if rejected:
            out.errors.insert(0, f"restore: {len(rejected)} records with a value of the "
                                 f"wrong type or out of range left out, the first: "
                                 f"{rejected[0]}")
        return out

    def _start_empty(self) -> None:
        """Everything forgotten and every counter zero; the counters stay the same
        object (the app's fragment path counts in it too)."""
        self.counters.reset()
        Gateway.__init__(self, self.config, self._inside_address, self._inside_subnet,
                         self._outside_subnet, self.counters)

    def _restore(self, snapshot: Snapshot, installed: Installed, now: float) -> Output:
        self.journal.drain()
        left_out: list[Change] = []
        alg = self.config.alg_enabled
        controls = {r.session_id for r in snapshot.connections} if alg else set()
        sessions = {}
        for session_record in sorted(snapshot.sessions, key=lambda r: r.id):
            control = alg and session_record.proto == Proto.TCP and (
                session_record.remote_port == PPTP_PORT)
            session = None
            if control == (session_record.id in controls):
                session = self.nat.adopt(session_record, now)
            if session is None:
                left_out.append(Forget("session", session_record.id))
            else:
                sessions[session.id] = session
        hold_down = self.config.call_id_hold_down
        for held in snapshot.held:
            until = min(held.until, now + hold_down)
            if until <= now or not self.call_ids.adopt(
                held.public_ip, held.server_ip, held.call_id, until, held.host
            ):
                left_out.append(Forget("held", (held.public_ip, held.server_ip, held.call_id)))
        self.ids.skip(max((max(r.index, r.outbound_entry or 0, r.inbound_entry or 0)
                           for r in snapshot.calls), default=0))
        self.ids.skip(max((max(r.outbound_id, r.inbound_id) for r in snapshot.plain),
                          default=0))
        self.ids.skip(_highest_core_id(installed))
        connections = {}
        for conn_record in snapshot.connections:
            session = sessions.get(conn_record.session_id)
            if not alg or session is None or self.control.is_control(session.id):
                left_out.append(Forget("connection", conn_record.session_id))
                continue
            connections[session.id] = self.control.restore(session, conn_record)
        closing_order = sorted(snapshot.calls, key=lambda r: (
            r.state == CallState.CLOSED.value, r.hold_until, r.index))
        for call_record in closing_order:
            conn = connections.get(call_record.session_id)
            if conn is None or not self.call_control.restore(conn.calls, call_record, now):
                left_out.append(Forget("call", call_record.index))
        plain_left = snapshot.plain if alg else self.plain.restore(snapshot.plain, now)
        left_out += [Forget("plain", (r.client_ip, r.server_ip)) for r in plain_left]
        self.counters.restore_skipped += len(left_out)
        out = self.reconcile(installed)
        out.records[:0] = left_out
        return out

    def reconcile(self, installed: Installed) -> Output:
        """Bring a switch's entries in line with the core (on every connection of the
        switch: after a restart of either).

        Missing entries of live sessions, control connections, server-map pairs and
        ALG-off bindings are installed, then entries the core does not own are removed
        (installs first: an entry with the same match under an old cookie is replaced
        before the old cookie's removal). After a controller restart the entries are
        found by the ids the store kept, so nothing is installed again; after a switch
        restart everything is. Ids continue above every id ``installed`` names.

        Args:
            installed: what the switch holds of the core's entries (pipeline included).
        """
        self.nat.skip_ids(max((i for k, i in installed if k in SESSION_KINDS), default=0))
        self.ids.skip(_highest_core_id(installed))
        out = Output()
        owned: set[tuple[EntryKind, int]] = set()
        for conn in self.control.connections():
            key = (EntryKind.CONTROL, conn.session.id)
            owned.add(key)
            if key not in installed:
                out.decisions.append(ControlEntry(conn.session))
        for session in self.nat.sessions():
            if session.proto is Proto.ICMP or self.control.is_control(session.id):
                continue
            key = (EntryKind.SESSION, session.id)
            owned.add(key)
            if installed.get(key, 0) < 2:
                self._session_counts.pop(session.id, None)
                out.decisions.append(
                    SessionEntries(session, self.nat.idle_timeout(session.proto))
                )
        owned |= self.server_map.reinstall(installed, out)
        owned |= self.plain.reinstall(installed, out)
        out.decisions.extend(
            RemoveEntries(kind, entry_id) for kind, entry_id in installed
            if kind is not EntryKind.PIPELINE and (kind, entry_id) not in owned
        )
        return self._noted(out)


def _forget_all(snapshot: Snapshot) -> list[Change]:
    """Forget every record of ``snapshot`` (a session takes its connection and calls)."""
    changes: list[Change] = [Forget("session", r.id) for r in snapshot.sessions]
    changes += [Forget("connection", r.session_id) for r in snapshot.connections]
    changes += [Forget("call", r.index) for r in snapshot.calls]
    changes += [Forget("held", (r.public_ip, r.server_ip, r.call_id)) for r in snapshot.held]
    changes += [Forget("plain", (r.client_ip, r.server_ip)) for r in snapshot.plain]
    return changes
