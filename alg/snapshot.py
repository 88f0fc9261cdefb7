"""What of the core's state outlives the controller process: records, and their journal.

The switch keeps its flow entries while the controller restarts (``fail-mode=secure``),
but not what the core knows beside them: the NAT sessions with their public ports, the
control connections with their initial sequence numbers, the calls with their three
Call IDs, and the Call IDs in hold-down. The core notes every change of those in a
:class:`Journal`; each event's :class:`~alg.events.Output` carries the changes as
:data:`Change` values in ``records``, which the app writes to its store before it sends
the event's flow-mods and packets. Changes are written when a session or connection is
made or ended and when a call is set up, changes state or ends, never per segment.

:class:`Snapshot` is what the store gives back on start, for
:meth:`alg.engine.Gateway.restore`. Times are the core's clock (the app's is
``CLOCK_MONOTONIC``, shared by every process of the machine); a restore clamps a
hold-down that lies further ahead than one hold-down, as after a reboot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Literal


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A NAT session (``proto`` is the IP protocol number; ICMP ports are echo ids)."""

    id: int
    proto: int
    inside_ip: IPv4Address
    inside_port: int
    public_ip: IPv4Address
    public_port: int
    remote_ip: IPv4Address
    remote_port: int


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """A control connection: the NAT session it is, and where each stream stood.

    Attributes:
        client_isn, server_isn: the initial sequence numbers (server: None before the
            SYN-ACK).
        outbound_seq, inbound_seq: the sequence number up to which each direction's
            bytes had been forwarded when the record was written. After a restart each
            direction takes its place again from its receiver's acknowledgement, which
            must lie at or shortly beyond this (``alg.relay``).
    """

    session_id: int
    client_isn: int
    server_isn: int | None
    outbound_seq: int
    inbound_seq: int | None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call of a control connection.

    Attributes:
        state: a :class:`~alg.calls.CallState` value.
        hold_until: for a closed call, until when late control messages are translated.
        outbound_entry, inbound_entry: the ids of an established call's server-map
            entries (shared with the other calls of their pairs), so that a restart
            finds them on the switch by their cookies.
    """

    index: int
    session_id: int
    outgoing: bool
    state: str
    client_call_id: int | None
    public_call_id: int | None
    server_call_id: int | None
    call_serial_number: int | None
    hold_until: float
    outbound_entry: int | None = None
    inbound_entry: int | None = None


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A public Call ID in hold-down on its (public address, server) pair."""

    public_ip: IPv4Address
    server_ip: IPv4Address
    call_id: int
    until: float


@dataclass(frozen=True, slots=True)
class PlainGreRecord:
    """ALG off: an address-only GRE binding and its two entries' ids.

    Attributes:
        claimed: when the binding last took its (server, public address) pair's inbound
            entry (a rising number): of the bindings of one pair, the latest holds it.
    """

    client_ip: IPv4Address
    server_ip: IPv4Address
    public_ip: IPv4Address
    outbound_id: int
    inbound_id: int
    claimed: int


Record = SessionRecord | ConnectionRecord | CallRecord | HeldRecord | PlainGreRecord
Table = Literal["session", "connection", "call", "held", "plain"]
Key = int | tuple[IPv4Address, IPv4Address, int] | tuple[IPv4Address, IPv4Address]
"""A session's or call's id, a connection's session id, a held ID's (public address,
server, Call ID), or an ALG-off binding's (client, server)."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Remove a record. A session takes its connection and that connection's calls."""

    table: Table
    key: Key


Change = Record | Forget


@dataclass
class Snapshot:
    """Every record of a store, for :meth:`alg.engine.Gateway.restore`."""

    sessions: list[SessionRecord] = field(default_factory=list)
    connections: list[ConnectionRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    held: list[HeldRecord] = field(default_factory=list)
    plain: list[PlainGreRecord] = field(default_factory=list)

    def apply(self, changes: list[Change]) -> None:
        """Apply changes as a store would (for tests and for stores kept in memory)."""
        tables: dict[Table, dict[Key, Record]] = {
            "session": {r.id: r for r in self.sessions},
            "connection": {r.session_id: r for r in self.connections},
            "call": {r.index: r for r in self.calls},
            "held": {(r.public_ip, r.server_ip, r.call_id): r for r in self.held},
            "plain": {(r.client_ip, r.server_ip): r for r in self.plain},
        }
        for change in changes:
            if isinstance(change, Forget):
                tables[change.table].pop(change.key, None)
                if change.table in ("session", "connection"):
                    tables["connection"].pop(change.key, None)
                    for index, call in list(tables["call"].items()):
                        if isinstance(call, CallRecord) and call.session_id == change.key:
                            del tables["call"][index]
            else:
                table, key = record_key(change)
                tables[table][key] = change
        self.sessions = [r for r in tables["session"].values() if isinstance(r, SessionRecord)]
        self.connections = [
            r for r in tables["connection"].values() if isinstance(r, ConnectionRecord)
        ]
        self.calls = [r for r in tables["call"].values() if isinstance(r, CallRecord)]
        self.held = [r for r in tables["held"].values() if isinstance(r, HeldRecord)]
        self.plain = [r for r in tables["plain"].values() if isinstance(r, PlainGreRecord)]

    def __len__(self) -> int:
        return (len(self.sessions) + len(self.connections) + len(self.calls)
                + len(self.held) + len(self.plain))


def record_key(record: Record) -> tuple[Table, Key]:
    """The table and key of a record."""
    if isinstance(record, SessionRecord):
        return "session", record.id
    if isinstance(record, ConnectionRecord):
        return "connection", record.session_id
    if isinstance(record, CallRecord):
        return "call", record.index
    if isinstance(record, PlainGreRecord):
        return "plain", (record.client_ip, record.server_ip)
    return "held", (record.public_ip, record.server_ip, record.call_id)


class Journal:
    """The records changed since the last :meth:`drain`, last change of each winning.

    A part of the core notes a change by giving a function that makes the record, called
    at the drain, so that several changes of one object in one event make one record.
    """

    def __init__(self) -> None:
        self._changed: dict[tuple[Table, Key], Callable[[], Record] | None] = {}

    def __len__(self) -> int:
        return len(self._changed)

    def save(self, table: Table, key: Key, make: Callable[[], Record]) -> None:
        """Note that the record ``key`` of ``table`` is now what ``make`` returns."""
        self._changed[(table, key)] = make

    def forget(self, table: Table, key: Key) -> None:
        """Note that the record ``key`` of ``table`` is gone."""
        self._changed[(table, key)] = None

    def drain(self) -> list[Change]:
        """The changes noted since the last drain: the records, then what is gone (so
        that a session forgotten takes the records of its calls written with it)."""
        changes: list[Change] = [
            make() for make in self._changed.values() if make is not None
        ]
        changes += [Forget(*key) for key, make in self._changed.items() if make is None]
        self._changed.clear()
        return changes
