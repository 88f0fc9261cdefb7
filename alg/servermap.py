"""The server-map: the GRE data channels of established calls, and the path each takes.

Each established call has two server-map entries (RFC 2637 section 4: GRE carries the
peer's Call ID in its key):

* outbound, client -> server: key ``c`` (the server's ID, never translated); one flow
  entry per (client, server) pair, shared by that pair's calls (reference-counted). It
  passes any key, so a client can send GRE with another client's ``c`` to the same
  server (as through Linux conntrack); with ``gre_outbound_strict`` there is no entry
  and the controller passes only the keys of the client's own calls;
* inbound, server -> client: key ``b`` (the public ID), restored to ``a``; one flow entry
  per (server, public address) pair. OVS can neither match nor rewrite the key, so the
  entry sends to the client (the *flow* path) only when the pair has one call whose
  Call ID was kept (``b == a``). Otherwise it sends to the GRE demultiplexer (the
  *demux* path, ``demux.program``) while one is configured and answers its
  heartbeat (:meth:`ServerMap.demux_available`), and to the controller (the *controller*
  path) when not; both demultiplex by key, the demultiplexer from a table of every
  established call (:class:`~alg.events.DemuxEntry`) and hands the packet back to the
  switch, which delivers it by one entry per client
  (:class:`~alg.events.DemuxReturnEntry`; both kept by :class:`~alg.demuxtable.DemuxTable`).
  A pair moves between the paths as calls come and go.

GRE that matches no server-map is dropped and counted, and creates no state. A released
``b`` is held down by the Call ID allocator, and its demultiplexer entry is deleted, so
late GRE of an ended call finds no call on either path, and a pair stays off the flow
path while any of its IDs is held down. A client's return entry has its address for id
(:func:`~alg.demuxtable.return_entry_id`), so a restarted controller finds it on the
switch as it finds the pairs' entries by the ids its store kept; a return entry the app
could not install (its client not resolved yet, as after a controller restart) keeps
the client's pairs off the demux path, on the controller path, whose packets make the
app resolve the client, until it is installed. A data channel idle for the server-map
idle timeout loses its flow entries, not its call: the call keeps its Call IDs while its
control connection lives, and its next GRE packet, punted to the controller, reinstalls
the entries.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from alg.callid import CallIdAllocator
from alg.callindex import GreCallIndex
from alg.calls import Call
from alg.codec import parse_gre, rewrite_gre_call_id
from alg.config import AlgConfig
from alg.counters import Counters
from alg.demuxtable import DemuxTable
from alg.errors import CodecError
from alg.events import (
    DemuxEntry,
    DemuxReturnEntry,
    Direction,
    EntryKind,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    SendGre,
)

FRAME_OVERHEAD = 14 + 20
"""Ethernet and IPv4 header bytes: what the switch counts beyond a GRE packet's bytes."""


class GrePath(enum.StrEnum):
    """How a call's GRE travels one way; a ``str``, so that JSON and displays show its
    value."""

    FLOW = "flow"
    """A flow entry forwards it."""
    DEMUX = "demux"
    """The GRE demultiplexer forwards it (server -> client only)."""
    CONTROLLER = "controller"
    """The controller forwards it."""


@dataclass(eq=False)
class GrePair:
    """The flow entry shared by the calls of one GRE address pair.

    Attributes:
        entry_id: the entry's id in cookies.
        calls: the established calls the entry carries.
        client: for an inbound pair, the client the entry sends to (the flow path) or
            None (the controller path).
        unreachable: for an inbound pair, a client the app could not send to by a flow
            entry (its address was not resolved): the pair stays on the controller path
            until the next change of the pair or :meth:`ServerMap.reconsider`.
        packets, bytes: the last counts the switch reported for the entry.
    """

    entry_id: int
    calls: list[Call] = field(default_factory=list)
    client: IPv4Address | None = None
    via_demux: bool = False
    unreachable: IPv4Address | None = None
    packets: int = 0
    bytes: int = 0


Counts = tuple[int, int]

GreTraffic = dict[tuple[GrePath, str], list[int]]
"""Packets and bytes of the calls' GRE since the start, by (path, direction value)."""


class ServerMap:
    """The GRE pairs of every established call, and GRE through the controller.

    Args:
        config: the server-map idle timeout.
        counters: the core's counters.
        ids: the core's entry id source (shared with the NAT, for distinct cookies).
    """

    def __init__(
        self, config: AlgConfig, counters: Counters, call_ids: CallIdAllocator,
        ids: Iterator[int],
    ) -> None:
        self._config = config
        self._counters = counters
        self._call_ids = call_ids
        self._ids = ids
        self._waiting: set[tuple[IPv4Address, IPv4Address]] = set()
        self._pending: dict[tuple[IPv4Address, IPv4Address], int] = {}
        self._inbound_calls: dict[tuple[IPv4Address, IPv4Address, int], Call] = {}
        self._outbound_calls: dict[tuple[IPv4Address, IPv4Address, int], Call] = {}
        self._outbound: dict[tuple[IPv4Address, IPv4Address], GrePair] = {}
        self._inbound: dict[tuple[IPv4Address, IPv4Address], GrePair] = {}
        self._by_id: dict[int, GrePair] = {}
        self._gre_keys = GreCallIndex()
        self._demux = DemuxTable(config.gre_demux)
        self._traffic: GreTraffic = {
            (path, direction.value): [0, 0]
            for path in GrePath for direction in Direction
        }

    def traffic(self) -> GreTraffic:
        """The calls' GRE since the start: [packets, bytes] by (path, direction value).

        The controller path counts as the controller forwards; the flow path by the
        growth of the switch's counts of the server-map entries (as of its last report),
        the demux path by the growth of the demultiplexer's table counts. Bytes are
        frame bytes, Ethernet and IPv4 headers included. When a pair changes path, what
        its entry carried between the switch's last report and the change is counted on
        the path the report finds (at most one statistics interval's packets).
        """
        return self._traffic

    def _count(self, path: GrePath, direction: Direction, packets: int, byte_count: int) -> None:
        totals = self._traffic[(path, direction.value)]
        totals[0] += packets
        totals[1] += byte_count

    def path(self, server_ip: IPv4Address, public_ip: IPv4Address) -> GrePath | None:
        """How a pair's server -> client GRE travels, None if the pair is closed."""
        pair = self._inbound.get((server_ip, public_ip))
        if pair is None:
            return None
        if pair.client is not None:
            return GrePath.FLOW
        return GrePath.DEMUX if pair.via_demux else GrePath.CONTROLLER

    def demux_available(self, up: bool, now: float, out: Output) -> None:
        """The GRE demultiplexer answers its heartbeat (``up``) or stopped answering:
        every pair off the flow path moves to it or back to the controller. When it comes
        up, its whole table is written again (it may have been replaced meanwhile); the
        return entries are the switch's, brought in line by each reconciliation."""
        if not self._demux.enabled or up == self._demux.up:
            return
        self._demux.up = up
        if up:
            out.decisions.extend(self._demux.entry(c) for c in self._inbound_calls.values())
        for (server_ip, public_ip), pair in self._inbound.items():
            self._choose_path(server_ip, public_ip, pair, now, out)

    def demux_entries(self) -> list[DemuxEntry | DemuxReturnEntry]:
        """The demultiplexer's table entry of every established call and the return entry
        of every client with one."""
        entries: list[DemuxEntry | DemuxReturnEntry] = [
            self._demux.entry(call) for call in self._inbound_calls.values()]
        entries += self._demux.return_entries()
        return entries

    def demux_counts(self, call: Call, packets: int, byte_count: int, now: float) -> None:
        """What the demultiplexer carried for a call (its table entry's counts, which
        start at 0 each time the entry is written): the call's inbound counts, and its
        idle clock restarts when they grew."""
        more, octets = self._demux.counts(call, packets, byte_count, now)
        self._count(GrePath.DEMUX, Direction.INBOUND, more, octets)

    def return_failed(self, decision: DemuxReturnEntry, now: float, out: Output) -> None:
        """The app could not install a client's return entry (the client is not resolved):
        the client's pairs leave the demux path, where its GRE would find no way back,
        for the controller path, and the entry is tried again by :meth:`reconsider`."""
        calls = self._demux.return_failed(decision)
        for key in {(c.conn.server_ip, c.conn.public_ip) for c in calls}:
            pair = self._inbound.get(key)
            if pair is not None:
                self._choose_path(*key, pair, now, out)

    def open(self, call: Call, now: float, out: Output,
             entry_ids: tuple[int | None, int | None] = (None, None)) -> None:
        """Add an established call's two entries (with its ``b`` and ``c``).

        Args:
            entry_ids: the ids a new pair takes instead of fresh ones (a restore gives
                the ids its entries have on the switch).
        """
        conn = call.conn
        assert call.server_call_id is not None
        self._inbound_calls[(conn.server_ip, conn.public_ip, call.public_id)] = call
        self._outbound_calls[(conn.client_ip, conn.server_ip, call.server_call_id)] = call
        self._gre_keys.add(call)
        up = self._outbound.get((conn.client_ip, conn.server_ip))
        if up is None:
            up = self._outbound[(conn.client_ip, conn.server_ip)] = self._new_pair(entry_ids[0])
            if not self._config.gre_outbound_strict:
                out.decisions.append(self._outbound_entry(call, up))
        up.calls.append(call)
        down = self._inbound.get((conn.server_ip, conn.public_ip))
        if down is None:
            down = self._inbound[(conn.server_ip, conn.public_ip)] = self._new_pair(entry_ids[1])
        down.calls.append(call)
        call.entry_ids = (up.entry_id, down.entry_id)
        down.unreachable = None
        self._demux.open(call, out)
        self._choose_path(conn.server_ip, conn.public_ip, down, now, out, force=True)

    def reserve(self, call: Call, now: float, out: Output) -> None:
        """A call got its public Call ID ``b`` and is not established yet.

        The server may send GRE with ``b`` as soon as the message carrying it reaches
        it, before the controller has seen the server's answer: the switch cannot see
        the key, so the pair's flow-path entry would hand that GRE to the pair's other
        client. So the pair leaves the flow path now (the decision goes before the
        message) until the call is established or released.
        """
        if call.reserved:
            return
        call.reserved = True
        key = (call.conn.server_ip, call.conn.public_ip)
        self._pending[key] = self._pending.get(key, 0) + 1
        pair = self._inbound.get(key)
        if pair is not None:
            self._choose_path(*key, pair, now, out)

    def release(self, call: Call, now: float, out: Output, choose: bool = True) -> None:
        """A reserved call is established or ended (see :meth:`reserve`).

        Args:
            choose: choose the pair's path again (not when :meth:`open` follows, which
                chooses it).
        """
        if not call.reserved:
            return
        call.reserved = False
        key = (call.conn.server_ip, call.conn.public_ip)
        left = self._pending[key] - 1
        if left:
            self._pending[key] = left
        else:
            del self._pending[key]
        pair = self._inbound.get(key)
        if pair is not None and choose:
            self._choose_path(*key, pair, now, out)

    def close(self, call: Call, now: float, out: Output) -> None:
        """Remove an established call's entries; a pair's entry goes with its last call."""
        conn = call.conn
        assert call.server_call_id is not None
        inbound_key = (conn.server_ip, conn.public_ip, call.public_id)
        if self._inbound_calls.get(inbound_key) is call:
            del self._inbound_calls[inbound_key]
        outbound_key = (conn.client_ip, conn.server_ip, call.server_call_id)
        if self._outbound_calls.get(outbound_key) is call:
            del self._outbound_calls[outbound_key]
        self._gre_keys.remove(call)
        self._demux.close(call, out)
        up = self._outbound[(conn.client_ip, conn.server_ip)]
        up.calls.remove(call)
        if not up.calls:
            del self._outbound[(conn.client_ip, conn.server_ip)]
            del self._by_id[up.entry_id]
            out.decisions.append(RemoveEntries(EntryKind.GRE_OUTBOUND, up.entry_id))
        down = self._inbound[(conn.server_ip, conn.public_ip)]
        down.calls.remove(call)
        down.unreachable = None
        if not down.calls:
            del self._inbound[(conn.server_ip, conn.public_ip)]
            del self._by_id[down.entry_id]
            self._waiting.discard((conn.server_ip, conn.public_ip))
            out.decisions.append(RemoveEntries(EntryKind.GRE_INBOUND, down.entry_id))
        else:
            self._choose_path(conn.server_ip, conn.public_ip, down, now, out)

    def unreachable(self, entry: GreInboundEntry, now: float, out: Output) -> None:
        """The app cannot send to ``entry.client`` by a flow entry: use the controller."""
        pair = self._by_id.get(entry.entry_id)
        if pair is None or entry.client_ip is None or pair.client != entry.client_ip:
            return
        pair.unreachable = entry.client_ip
        self._choose_path(entry.server_ip, entry.public_ip, pair, now, out)

    def idle(self, call: Call, out: Output) -> None:
        """A call's data channel aged out: remove each entry none of whose calls is busy."""
        call.data_idle = True
        conn = call.conn
        for kind, pair in (
            (EntryKind.GRE_OUTBOUND, self._outbound[(conn.client_ip, conn.server_ip)]),
            (EntryKind.GRE_INBOUND, self._inbound[(conn.server_ip, conn.public_ip)]),
        ):
            if all(c.data_idle for c in pair.calls):
                out.decisions.append(RemoveEntries(kind, pair.entry_id))

    def reconsider(self, now: float, out: Output) -> None:
        """Offer the flow path again to pairs kept off it by a hold-down or an unknown
        client, and the demux path to pairs kept off it by a return entry not installed.

        A return entry that failed is tried again here; the app reports a failure while
        it carries out the output that holds the entry, so one not reported by the next
        call is installed, and its client's pairs may take the demux path from then on
        (not in the same output: a pair on the demux path before its client's return
        entry is in would lose its packets).
        """
        self._demux.forget_tried()
        for key in list(self._waiting):
            pair = self._inbound[key]
            pair.unreachable = None
            self._choose_path(*key, pair, now, out)
        self._demux.retry(out)

    def reinstall(self, installed: Container[tuple[EntryKind, int]], out: Output
                  ) -> set[tuple[EntryKind, int]]:
        """The entries of every pair whose data channel is not idle that a switch lacks
        (``installed`` lists what it has). An inbound entry found on another path than
        the pair's corrects itself: its next packet through the controller reinstalls
        it (:meth:`handle_gre`).

        Returns:
            Every entry the server-map owns, by kind and id.
        """
        owned: set[tuple[EntryKind, int]] = set()
        for pair in self._outbound.values():
            key = (EntryKind.GRE_OUTBOUND, pair.entry_id)
            owned.add(key)
            busy = not all(c.data_idle for c in pair.calls)
            if busy and not self._config.gre_outbound_strict and key not in installed:
                pair.packets = pair.bytes = 0
                out.decisions.append(self._outbound_entry(pair.calls[0], pair))
        for (server_ip, public_ip), pair in self._inbound.items():
            key = (EntryKind.GRE_INBOUND, pair.entry_id)
            owned.add(key)
            if key not in installed and not all(c.data_idle for c in pair.calls):
                pair.packets = pair.bytes = 0
                out.decisions.append(self._inbound_entry(server_ip, public_ip, pair))
        return owned | self._demux.reinstall(installed, out)

    def handle_gre(
        self, direction: Direction, src_ip: IPv4Address, dst_ip: IPv4Address, gre: bytes,
        now: float,
    ) -> Output:
        """A GRE packet that reached the controller.

        Inbound, it is server -> client data of a pair on the controller path (or of a
        pair whose flow entry was lost); outbound, client -> server data whose entry was
        lost.
        """
        try:
            header = parse_gre(gre)
        except CodecError:
            self._counters.gre_malformed += 1
            return Output(drop_reason="malformed GRE")
        out = Output()
        if direction is Direction.INBOUND:
            call = self._inbound_calls.get((src_ip, dst_ip, header.call_id))
            if call is None:
                self._counters.gre_unknown_dropped += 1
                return Output(drop_reason="GRE matches no server-map")
            pair = self._inbound[(src_ip, dst_ip)]
            if pair.client is not None or call.data_idle:
                out.decisions.append(self._inbound_entry(src_ip, dst_ip, pair))
            call.inbound_packets += 1
            call.inbound_bytes += len(gre) + FRAME_OVERHEAD
            out.emits.append(SendGre(
                direction, src_ip, call.conn.client_ip, rewrite_gre_call_id(gre, call.client_id),
            ))
        else:
            call = self._outbound_calls.get((src_ip, dst_ip, header.call_id))
            if call is None:
                self._counters.gre_unknown_dropped += 1
                return Output(drop_reason="GRE matches no server-map")
            if not self._config.gre_outbound_strict:
                out.decisions.append(self._outbound_entry(call, self._outbound[(src_ip, dst_ip)]))
            if call.data_idle:
                conn = call.conn
                pair = self._inbound[(conn.server_ip, conn.public_ip)]
                out.decisions.append(self._inbound_entry(conn.server_ip, conn.public_ip, pair))
            call.outbound_packets += 1
            call.outbound_bytes += len(gre) + FRAME_OVERHEAD
            out.emits.append(SendGre(direction, call.conn.public_ip, dst_ip, gre))
        strict = self._config.gre_outbound_strict
        if call.data_idle and direction is Direction.INBOUND and not strict:
            conn = call.conn
            pair = self._outbound[(conn.client_ip, conn.server_ip)]
            out.decisions.append(self._outbound_entry(call, pair))
        call.data_idle = False
        call.last_data = now
        call.controller_path_packets += 1
        self._counters.gre_controller_path += 1
        self._count(GrePath.CONTROLLER, direction, 1, len(gre) + FRAME_OVERHEAD)
        return out

    def has_inbound(self, server_ip: IPv4Address, public_ip: IPv4Address, call_id: int
                    ) -> bool:
        """Whether server -> client GRE to ``public_ip`` with key ``call_id`` belongs to an
        established call."""
        return (server_ip, public_ip, call_id) in self._inbound_calls

    def call_sent(self, public_ip: IPv4Address, server_ip: IPv4Address, server_call_id: int
                  ) -> Call | None:
        """The established call whose client -> server GRE leaves ``public_ip`` with key
        ``server_call_id`` (an ICMP error quotes it); None when no call or more than one
        of the pair's calls has that key (two clients' servers chose the same ID). One
        lookup (``alg.callindex``), however many calls the pair has."""
        found = self._gre_keys.sent(server_ip, public_ip, server_call_id)
        return found[0] if len(found) == 1 else None

    def call_received(self, client_ip: IPv4Address, server_ip: IPv4Address,
                      client_call_id: int) -> Call | None:
        """The established call whose server -> client GRE reached ``client_ip`` with key
        ``client_call_id`` (the client's ICMP error quotes it)."""
        found = self._gre_keys.received(client_ip, server_ip, client_call_id)
        return found[0] if found else None

    def entry_stats(self, kind: EntryKind, entry_id: int, packets: int, byte_count: int,
                    now: float) -> bool:
        """The switch's counts for one of the server-map's entries; False if not one.

        Growth restarts the idle clock of the entry's calls. An inbound entry on the
        controller path counts what it punted: :meth:`handle_gre` saw each of those
        packets and restarted only its own call's clock.
        """
        pair = self._by_id.get(entry_id)
        if pair is None:
            return False
        grew = packets != pair.packets and packets > 0
        punted = self._counted(kind, pair, packets, byte_count)
        if grew and not punted:
            for call in pair.calls:
                call.last_data = now
        return True

    def entry_removed(self, kind: EntryKind, entry_id: int, packets: int, byte_count: int
                      ) -> bool:
        """The switch removed an entry, with its last counts; the counts restart. False if
        not one of ours."""
        pair = self._by_id.get(entry_id)
        if pair is None:
            return False
        self._counted(kind, pair, packets, byte_count)
        pair.packets = pair.bytes = 0
        return True

    def _counted(self, kind: EntryKind, pair: GrePair, packets: int, byte_count: int) -> bool:
        """Take an entry's cumulative counts: what they grew by goes to the flow path's
        traffic unless the entry punts (controller path) or feeds the demultiplexer,
        which count their packets themselves (True then). Counts below the last ones
        are those of an entry installed again."""
        restarted = packets < pair.packets
        more = packets if restarted else packets - pair.packets
        octets = byte_count if restarted else byte_count - pair.bytes
        pair.packets, pair.bytes = packets, byte_count
        punted = kind is EntryKind.GRE_INBOUND and pair.client is None
        if not punted:
            direction = Direction.OUTBOUND if kind is EntryKind.GRE_OUTBOUND else (
                Direction.INBOUND)
            self._count(GrePath.FLOW, direction, more, max(octets, 0))
        return punted

    def counts(self, call: Call) -> tuple[Counts, Counts]:
        """(packets, bytes) the switch carried for a call, outbound and inbound.

        The outbound entry is shared by the calls of one (client, server) pair, so its
        counts are the pair's. The inbound counts are the entry's only on the flow path
        (one call on the pair); on the controller path the controller counts each call's
        packets itself (``Call.inbound_packets``), so the punting entry adds nothing.
        """
        conn = call.conn
        up = self._outbound.get((conn.client_ip, conn.server_ip))
        down = self._inbound.get((conn.server_ip, conn.public_ip))
        up_counts = (up.packets, up.bytes) if up is not None else (0, 0)
        flow = down is not None and down.client is not None
        down_counts = (down.packets, down.bytes) if down is not None and flow else (0, 0)
        return up_counts, down_counts

    def _new_pair(self, entry_id: int | None = None) -> GrePair:
        if entry_id is None or entry_id in self._by_id:
            entry_id = next(self._ids)
        pair = GrePair(entry_id)
        self._by_id[pair.entry_id] = pair
        return pair

    def _outbound_entry(self, call: Call, pair: GrePair) -> GreOutboundEntry:
        conn = call.conn
        return GreOutboundEntry(
            pair.entry_id, conn.client_ip, conn.server_ip, conn.public_ip, self._config.gre_idle
        )

    def _inbound_entry(
        self, server_ip: IPv4Address, public_ip: IPv4Address, pair: GrePair
    ) -> GreInboundEntry:
        return GreInboundEntry(
            pair.entry_id, server_ip, public_ip, pair.client, self._config.gre_idle,
            via_demux=pair.via_demux,
        )

    def _choose_path(
        self, server_ip: IPv4Address, public_ip: IPv4Address, pair: GrePair, now: float,
        out: Output, force: bool = False,
    ) -> None:
        """The flow path when the pair has one call whose Call ID was kept, its client is
        reachable, no other Call ID of the pair is held down (the switch cannot see the
        key: late GRE of a released ID would reach the client) and no call of the pair
        is being set up (its early GRE would, :meth:`reserve`). Off the flow path, the
        demux path while the demultiplexer answers and every client of the pair has its
        return entry (:meth:`return_failed`)."""
        client: IPv4Address | None = None
        if len(pair.calls) == 1:
            only = pair.calls[0]
            if only.public_call_id == only.client_call_id:
                client = only.conn.client_ip
        key = (server_ip, public_ip)
        waiting = client is not None and (
            client == pair.unreachable or self._call_ids.holds(public_ip, server_ip, now)
            or key in self._pending
        )
        if waiting:
            client = None
        via_demux = client is None and self._demux.up
        if via_demux and self._demux.holds(pair.calls):
            via_demux, waiting = False, True
        if waiting:
            self._waiting.add(key)
        else:
            self._waiting.discard(key)
        if force or client != pair.client or via_demux != pair.via_demux:
            pair.client, pair.via_demux = client, via_demux
            out.decisions.append(self._inbound_entry(server_ip, public_ip, pair))
