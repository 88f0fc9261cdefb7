"""PPTP calls and their index per control connection.

Roles follow RFC 2637 with the PNS (the client) inside: ``a`` is a call's Call ID as the
client chose it, ``b`` the one it carries on the public side, ``c`` the server's. Peers
scope Call IDs per control connection, so each connection indexes its calls by each of
the three IDs; a closed call stays findable by its IDs until its hold-down ends (late
control messages about it are still translated).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from alg.nat import NatSession
from alg.snapshot import CallRecord, ConnectionRecord, Journal


class CallState(enum.Enum):
    """Where a call is in its setup (RFC 2637 sections 2.7-2.13)."""

    REQUESTED = "requested"
    """Outgoing-Call-Request passed; the reply has not."""
    OFFERED = "offered"
    """Incoming-Call-Request passed; the client has not answered."""
    ANSWERED = "answered"
    """Incoming-Call-Reply passed; Incoming-Call-Connected has not."""
    ESTABLISHED = "established"
    """The data channel is open: the server-map entries are on the switch."""
    CLOSED = "closed"


IdName = Literal["client", "public", "server"]
"""Which of a call's three Call IDs: ``a``, ``b`` or ``c``."""


@dataclass(eq=False)
class Call:
    """One PPTP call and its two server-map entries.

    Attributes:
        index: unique within the gateway, for logs and displays.
        conn: the calls of the control connection the call belongs to.
        outgoing: True for a call the client asked for (Outgoing-Call-Request).
        client_call_id: ``a``, None until the client has named it (incoming calls).
        public_call_id: ``b``, None until allocated.
        server_call_id: ``c``, None until the server has named it.
        last_data: when the data channel last carried GRE (or when the call began).
        hold_until: for a closed call, until when late control messages are translated.
        outbound_packets, inbound_packets, outbound_bytes, inbound_bytes: GRE the
            controller carried for this call (the switch's counts are the server-map's).
        controller_path_packets: GRE packets of this call that went through the controller.
        data_idle: the data channel has been idle for the server-map idle timeout: its
            flow entries are gone until its next GRE packet (the call and its IDs stay).
        entry_ids: the ids of an established call's outbound and inbound server-map
            entries.
        reserved: the call has its public Call ID and is not established yet: its pair
            keeps off the flow path (``alg.servermap``).
        demux_packets, demux_bytes: the GRE demultiplexer's last counts for the call's
            table entry (already added to the inbound counts).
        requested: when its Outgoing-Call-Request or Incoming-Call-Request passed (None
            for a call made otherwise: restored, or answered for an unknown server Call
            ID); its reply's time less this is the call's setup time.
    """

    index: int
    conn: ConnectionCalls
    outgoing: bool
    state: CallState
    created: float
    last_data: float
    client_call_id: int | None = None
    public_call_id: int | None = None
    server_call_id: int | None = None
    call_serial_number: int | None = None
    hold_until: float = 0.0
    outbound_packets: int = 0
    inbound_packets: int = 0
    outbound_bytes: int = 0
    inbound_bytes: int = 0
    controller_path_packets: int = 0
    data_idle: bool = False
    end_reason: str = ""
    entry_ids: tuple[int, int] | None = None
    reserved: bool = False
    demux_packets: int = 0
    demux_bytes: int = 0
    requested: float | None = None

    @property
    def client_id(self) -> int:
        """``a``, for a call whose client has named it."""
        assert self.client_call_id is not None
        return self.client_call_id

    @property
    def public_id(self) -> int:
        """``b``, for a call that has one."""
        assert self.public_call_id is not None
        return self.public_call_id

    def call_id(self, name: IdName) -> int | None:
        """One of the call's three IDs."""
        if name == "client":
            return self.client_call_id
        if name == "public":
            return self.public_call_id
        return self.server_call_id

    def record(self) -> CallRecord:
        """What the store keeps of the call."""
        return CallRecord(
            self.index, self.conn.session.id, self.outgoing, self.state.value,
            self.client_call_id, self.public_call_id, self.server_call_id,
            self.call_serial_number, self.hold_until,
            *(self.entry_ids if self.entry_ids is not None else (None, None)),
        )


class ConnectionCalls:
    """The calls of one control connection, by each Call ID.

    Args:
        session: the control connection's NAT session (client, public and server
            addresses).
        journal: where changes of calls are noted, with the connection's record
            (``connection``) if it has one, for the stream positions (``alg.snapshot``).
    """

    def __init__(
        self,
        session: NatSession,
        journal: Journal | None = None,
        connection: Callable[[], ConnectionRecord] | None = None,
    ) -> None:
        self.session = session
        self._journal = journal if journal is not None else Journal()
        self.connection = connection
        self._live: dict[int, Call] = {}
        self._by: dict[IdName, dict[int, list[Call]]] = {
            "client": {}, "public": {}, "server": {},
        }
        self._closed_by: dict[IdName, dict[int, Call]] = {
            "client": {}, "public": {}, "server": {},
        }
        self._closed: deque[Call] = deque()

    @property
    def client_ip(self) -> IPv4Address:
        """The inside client (the PNS)."""
        return self.session.inside_ip

    @property
    def server_ip(self) -> IPv4Address:
        """The outside server (the PAC)."""
        return self.session.remote_ip

    @property
    def public_ip(self) -> IPv4Address:
        """The public address the client's traffic leaves from."""
        return self.session.public_ip

    def __iter__(self) -> Iterator[Call]:
        """The live calls, oldest first."""
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    @property
    def closed(self) -> list[Call]:
        """Closed calls still in hold-down, oldest first."""
        return list(self._closed)

    @property
    def held(self) -> int:
        """How many closed calls are still in hold-down."""
        return len(self._closed)

    def add(self, call: Call) -> None:
        """Take a new live call, indexed by whichever IDs it has."""
        self._live[call.index] = call
        for name in self._by:
            self.name_id(call, name)
        self.changed(call)

    def name_id(self, call: Call, name: IdName) -> None:
        """Index a live call by an ID it has just been given."""
        value = call.call_id(name)
        if value is not None:
            self._by[name].setdefault(value, []).append(call)
            self.changed(call)

    def changed(self, call: Call) -> None:
        """Note a change of a call (and the connection's stream positions) for the store."""
        self._journal.save("call", call.index, call.record)
        if self.connection is not None:
            self._journal.save("connection", self.session.id, self.connection)

    def live(self, name: IdName, value: int) -> Call | None:
        """The oldest live call whose ID ``name`` is ``value``."""
        found = self._by[name].get(value)
        return found[0] if found else None

    def recent(self, name: IdName, value: int) -> Call | None:
        """The live call, else the last closed one in hold-down, whose ID is ``value``."""
        found = self.live(name, value)
        return found if found is not None else self._closed_by[name].get(value)

    def remove(self, call: Call, keep: bool) -> None:
        """Take a call out of the live ones; ``keep`` it findable until its hold-down ends."""
        if self._live.pop(call.index, None) is None:
            return
        for name, live in self._by.items():
            value = call.call_id(name)
            if value is None:
                continue
            calls = live.get(value)
            if calls is not None and call in calls:
                calls.remove(call)
                if not calls:
                    del live[value]
        if keep:
            self._closed.append(call)
            for name, closed in self._closed_by.items():
                value = call.call_id(name)
                if value is not None:
                    closed[value] = call
            self.changed(call)
        else:
            self._journal.forget("call", call.index)

    def forget_closed(self) -> None:
        """Forget every closed call now, hold-down or not (the connection is replaced by a
        new one on its endpoints; the allocator still holds their Call IDs down)."""
        for call in self._closed:
            self._journal.forget("call", call.index)
        self._closed.clear()
        for index in self._closed_by.values():
            index.clear()

    def forget(self, now: float) -> None:
        """Forget closed calls whose hold-down is over."""
        while self._closed and self._closed[0].hold_until <= now:
            call = self._closed.popleft()
            self._journal.forget("call", call.index)
            for name, index in self._closed_by.items():
                value = call.call_id(name)
                if value is not None and index.get(value) is call:
                    del index[value]
