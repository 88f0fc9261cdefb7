"""The GRE demultiplexer as the server-map sees it: its table and the return entries.

With ``gre_demux`` configured, every established call has an entry in the
demultiplexer's table (:class:`~alg.events.DemuxEntry`: server, public address and
public Call ID to client and client Call ID), written when the call is set up and
deleted when it ends, and every client with such a call has a return entry on the switch
(:class:`~alg.events.DemuxReturnEntry`), which delivers to it what the demultiplexer hands
back. A return entry has its client's address for id (:func:`return_entry_id`), so a
restarted controller finds it on the switch. One the app could not install (its client
not resolved yet) keeps that client's pairs off the demux path (:meth:`DemuxTable.holds`)
until it is tried again and not reported failed (:meth:`DemuxTable.forget_tried`,
:meth:`DemuxTable.retry`). Which path a pair takes is ``alg.servermap``'s.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from alg.calls import Call
from alg.events import (
    DemuxEntry,
    DemuxForget,
    DemuxReturnEntry,
    EntryKind,
    Output,
    RemoveEntries,
)


def return_entry_id(client: IPv4Address) -> int:
    """The id of ``client``'s return entry (:class:`~alg.events.DemuxReturnEntry`): its
    address. Return entries take no id from the core's id source, so that a restarted
    controller, which keeps no record of them, finds each on the switch by its client."""
    return int(client)


@dataclass(eq=False)
class ReturnEntry:
    """A client's return entry and the established calls that need it."""

    entry_id: int
    calls: list[Call] = field(default_factory=list)


class DemuxTable:
    """The demultiplexer's table entries and the clients' return entries.

    Args:
        enabled: a demultiplexer is configured (``gre_demux``); without one this holds
            nothing and decides nothing.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.up = False
        """The demultiplexer answers its heartbeat."""
        self._returns: dict[IPv4Address, ReturnEntry] = {}
        self._unreturned: dict[IPv4Address, bool] = {}
        """Clients whose return entry the app could not install, and whether it was
        tried again since."""

    @staticmethod
    def entry(call: Call) -> DemuxEntry:
        """An established call's table entry."""
        conn = call.conn
        return DemuxEntry(conn.server_ip, conn.public_ip, call.public_id, conn.client_ip,
                          call.client_id)

    def return_entries(self) -> list[DemuxReturnEntry]:
        """The return entry of every client with one."""
        return [DemuxReturnEntry(back.entry_id, client)
                for client, back in self._returns.items()]

    def open(self, call: Call, out: Output) -> None:
        """A call's table entry, and its client's return entry if it is the client's
        first call."""
        if not self.enabled:
            return
        call.demux_packets = call.demux_bytes = 0
        out.decisions.append(self.entry(call))
        client = call.conn.client_ip
        back = self._returns.get(client)
        if back is None:
            back = self._returns[client] = ReturnEntry(return_entry_id(client))
            out.decisions.append(DemuxReturnEntry(back.entry_id, client))
        back.calls.append(call)

    def close(self, call: Call, out: Output) -> None:
        """A call's table entry goes, and its client's return entry with its last call."""
        if not self.enabled:
            return
        conn = call.conn
        out.decisions.append(DemuxForget(conn.server_ip, conn.public_ip, call.public_id))
        back = self._returns.get(conn.client_ip)
        if back is None or call not in back.calls:
            return
        back.calls.remove(call)
        if not back.calls:
            del self._returns[conn.client_ip]
            self._unreturned.pop(conn.client_ip, None)
            out.decisions.append(RemoveEntries(EntryKind.DEMUX_RETURN, back.entry_id))

    def counts(self, call: Call, packets: int, byte_count: int, now: float) -> tuple[int, int]:
        """The counts of a call's table entry (which start at 0 each time the entry is
        written): the call's inbound counts grow by what they grew, and its idle clock
        restarts when they did.

        Returns:
            The packets and bytes they grew by (none for counts that fell).
        """
        restarted = packets < call.demux_packets
        more = packets if restarted else packets - call.demux_packets
        octets = byte_count if restarted else byte_count - call.demux_bytes
        if more > 0:
            call.last_data = now
            call.data_idle = False
        call.inbound_packets += more
        call.inbound_bytes += octets
        call.demux_packets, call.demux_bytes = packets, byte_count
        return max(more, 0), max(octets, 0)

    def return_failed(self, decision: DemuxReturnEntry) -> list[Call]:
        """The app could not install a client's return entry: the client's pairs must
        leave the demux path until it is tried again.

        Returns:
            The calls whose pairs must choose their path again (none when the entry is
            no longer the client's).
        """
        client = decision.client_ip
        back = self._returns.get(client)
        if back is None or back.entry_id != decision.entry_id:
            return []
        self._unreturned[client] = False
        return back.calls

    def holds(self, calls: Iterable[Call]) -> bool:
        """Whether a client of these calls waits for its return entry."""
        return bool(self._unreturned) and any(
            c.conn.client_ip in self._unreturned for c in calls)

    def forget_tried(self) -> None:
        """Return entries tried again and not reported failed since are installed: their
        clients wait no more."""
        for client in [c for c, tried in self._unreturned.items() if tried]:
            del self._unreturned[client]

    def retry(self, out: Output) -> None:
        """Try every failed return entry again."""
        for client in self._unreturned:
            self._unreturned[client] = True
            out.decisions.append(DemuxReturnEntry(self._returns[client].entry_id, client))

    def reinstall(self, installed: Container[tuple[EntryKind, int]], out: Output
                  ) -> set[tuple[EntryKind, int]]:
        """The return entries a switch lacks (``installed`` lists what it has).

        Returns:
            Every return entry, by kind and id.
        """
        owned: set[tuple[EntryKind, int]] = set()
        for client, back in self._returns.items():
            key = (EntryKind.DEMUX_RETURN, back.entry_id)
            owned.add(key)
            if key not in installed:
                out.decisions.append(DemuxReturnEntry(back.entry_id, client))
        return owned
