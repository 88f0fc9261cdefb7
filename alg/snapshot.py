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

**Validation.** A store file is input like any other: every value of a record is checked
for its type and range before the core sees it (:func:`parse_row` for a store's rows,
:meth:`Snapshot.validated` for records however made). Integers must be integers (a
fractional port or Call ID is refused, not rounded), ports and Call IDs 16-bit, sequence
numbers 32-bit, ids from 1 to :data:`MAX_ID`, times finite, addresses IPv4. A record that
fails is left out and described in :attr:`Snapshot.rejected`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from ipaddress import AddressValueError, IPv4Address
from typing import Any, Literal

from alg.errors import RecordError

MAX_ID = (1 << 48) - 1
"""The highest id of a NAT session, call or server-map entry: ids fill the low 48 bits
of the switch's cookies, so a higher one would name another entry."""


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
    """A public Call ID in hold-down on its (public address, server) pair.

    Attributes:
        host: the inside host whose share of the pair's IDs it counts against (None:
            no host's).
    """

    public_ip: IPv4Address
    server_ip: IPv4Address
    call_id: int
    until: float
    host: IPv4Address | None = None


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


@dataclass(frozen=True, slots=True)
class HostRecord:
    """``ordinary_nat = conntrack``: an inside host's binding (``alg.hostnat``), its
    entries' id, public address and block of ports (by number)."""

    id: int
    inside_ip: IPv4Address
    public_ip: IPv4Address
    block: int


Record = SessionRecord | ConnectionRecord | CallRecord | HeldRecord | PlainGreRecord | HostRecord
Table = Literal["session", "connection", "call", "held", "plain", "host"]
Key = (int | tuple[IPv4Address, IPv4Address, int] | tuple[IPv4Address, IPv4Address]
       | IPv4Address)
"""A session's or call's id, a connection's session id, a held ID's (public address,
server, Call ID), an ALG-off binding's (client, server), or a host's address."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Remove a record. A session takes its connection and that connection's calls."""

    table: Table
    key: Key


Change = Record | Forget


@dataclass
class Snapshot:
    """Every record of a store, for :meth:`alg.engine.Gateway.restore`.

    Attributes:
        rejected: what of the store was left out for a value of the wrong type or out of
            range, one line each (the store has removed those rows).
    """

    sessions: list[SessionRecord] = field(default_factory=list)
    connections: list[ConnectionRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    held: list[HeldRecord] = field(default_factory=list)
    plain: list[PlainGreRecord] = field(default_factory=list)
    hosts: list[HostRecord] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def validated(self) -> Snapshot:
        """The records whose every value has its type and range (:func:`validated`);
        the others are described in ``rejected``, after those already there."""
        checked = Snapshot(rejected=list(self.rejected))
        records: list[Record] = [*self.sessions, *self.connections, *self.calls,
                                 *self.held, *self.plain, *self.hosts]
        for record in records:
            try:
                valid = validated(record)
            except RecordError as exc:
                checked.rejected.append(f"{type(record).__name__}: {exc}")
                continue
            match valid:
                case SessionRecord():
                    checked.sessions.append(valid)
                case ConnectionRecord():
                    checked.connections.append(valid)
                case CallRecord():
                    checked.calls.append(valid)
                case HeldRecord():
                    checked.held.append(valid)
                case PlainGreRecord():
                    checked.plain.append(valid)
                case HostRecord():
                    checked.hosts.append(valid)
        return checked

    def apply(self, changes: list[Change]) -> None:
        """Apply changes as a store would (for tests and for stores kept in memory)."""
        tables: dict[Table, dict[Key, Record]] = {
            "session": {r.id: r for r in self.sessions},
            "connection": {r.session_id: r for r in self.connections},
            "call": {r.index: r for r in self.calls},
            "held": {(r.public_ip, r.server_ip, r.call_id): r for r in self.held},
            "plain": {(r.client_ip, r.server_ip): r for r in self.plain},
            "host": {r.inside_ip: r for r in self.hosts},
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
        self.hosts = [r for r in tables["host"].values() if isinstance(r, HostRecord)]

    def __len__(self) -> int:
        return (len(self.sessions) + len(self.connections) + len(self.calls)
                + len(self.held) + len(self.plain) + len(self.hosts))


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
    if isinstance(record, HostRecord):
        return "host", record.inside_ip
    return "held", (record.public_ip, record.server_ip, record.call_id)


_Kind = Literal["id", "u8", "u16", "u32", "count", "ip", "flag", "text", "time"]
_RANGES: dict[_Kind, tuple[int, int]] = {
    "id": (1, MAX_ID), "u8": (0, 0xFF), "u16": (0, 0xFFFF), "u32": (0, 0xFFFF_FFFF),
    "count": (0, (1 << 63) - 1),
}
_MAX_TEXT = 32
_Column = tuple[_Kind, bool]
"""A value's kind, and whether it may be None."""
_COLUMNS: dict[type[Record], tuple[_Column, ...]] = {
    SessionRecord: (("id", False), ("u8", False), ("ip", False), ("u16", False),
                    ("ip", False), ("u16", False), ("ip", False), ("u16", False)),
    ConnectionRecord: (("id", False), ("u32", False), ("u32", True), ("u32", False),
                       ("u32", True)),
    CallRecord: (("id", False), ("id", False), ("flag", False), ("text", False),
                 ("u16", True), ("u16", True), ("u16", True), ("u16", True),
                 ("time", False), ("id", True), ("id", True)),
    HeldRecord: (("ip", False), ("ip", False), ("u16", False), ("time", False),
                 ("ip", True)),
    PlainGreRecord: (("ip", False), ("ip", False), ("ip", False), ("id", False),
                     ("id", False), ("count", False)),
    HostRecord: (("id", False), ("ip", False), ("ip", False), ("u16", False)),
}
ROW_TYPES: dict[Table, type[Record]] = {
    "session": SessionRecord, "connection": ConnectionRecord, "call": CallRecord,
    "held": HeldRecord, "plain": PlainGreRecord, "host": HostRecord,
}
"""The record type of each table."""


def _checked(kind: _Kind, optional: bool, value: object) -> object:
    """``value`` as a field of ``kind`` holds it (a flag from 0 or 1, a time as a float,
    an address from its text).

    Raises:
        RecordError: the value is of another type or out of range.
    """
    if value is None:
        if optional:
            return None
        raise RecordError("missing value")
    if kind in _RANGES:
        low, high = _RANGES[kind]
        if type(value) is not int or not low <= value <= high:
            raise RecordError(f"{value!r} is not an integer from {low} to {high}")
        return value
    if kind == "ip":
        if isinstance(value, IPv4Address):
            return value
        if isinstance(value, str):
            try:
                return IPv4Address(value)
            except AddressValueError as exc:
                raise RecordError(f"{value!r} is not an IPv4 address") from exc
        raise RecordError(f"{value!r} is not an IPv4 address")
    if kind == "flag":
        if type(value) is bool or (type(value) is int and value in (0, 1)):
            return bool(value)
        raise RecordError(f"{value!r} is not a flag (0 or 1)")
    if kind == "time":
        if type(value) in (int, float) and math.isfinite(value):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
        raise RecordError(f"{value!r} is not a finite time")
    if isinstance(value, str) and len(value) <= _MAX_TEXT:
        return value
    raise RecordError(f"{value!r} is not a name of at most {_MAX_TEXT} characters")


def _build(cls: type[Record], values: Sequence[object]) -> Record:
    columns = _COLUMNS[cls]
    names = fields(cls)
    if len(values) > len(columns) or any(
            f.default is MISSING for f in names[len(values):]):
        raise RecordError(f"{len(values)} values, not {len(columns)}")
    checked: list[Any] = []
    for (kind, optional), value, name in zip(columns, values, names, strict=False):
        try:
            checked.append(_checked(kind, optional, value))
        except RecordError as exc:
            raise RecordError(f"{name.name}: {exc}") from exc
    return cls(*checked)


def parse_row(table: Table, row: Sequence[object]) -> Record:
    """The record of ``table`` a store's row holds, its columns in the records' field
    order, every value checked for type and range.

    Raises:
        RecordError: a value of the wrong type or out of range (named), or a row of
            another length.
    """
    return _build(ROW_TYPES[table], row)


def validated(record: Record) -> Record:
    """``record`` with every value checked for type and range (a time made a float).

    Raises:
        RecordError: a value of the wrong type or out of range (named).
    """
    return _build(type(record), [getattr(record, f.name) for f in fields(record)])


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
