"""PPTP control connections: the TCP relay, the framer and the calls of each, together.

A control connection is a NAPT session to TCP port 1723 that the ALG reads. Each
segment goes through the connection's :class:`~alg.relay.TcpRelay`; the new in-order
bytes go through the direction's :class:`~alg.framer.PptpFramer`, whose messages
:class:`~alg.pptp.CallControl` translates; the relay sends on what the framer released.

Policy (also in docs/design.md): a malformed control message, a message a side may not send,
a message truncated by FIN, Call ID exhaustion, a call beyond its limits, or too many
bytes awaiting acknowledgement: counted, the connection is reset (RST to both ends, each
at the sequence number it expects) and its calls end. A new connection beyond
``max_connections_per_host``, ``max_handshakes_per_host`` or the NAT's session limits
gets an RST (``refused_connections``); one that has not completed its handshake within
``tcp_handshake`` is forgotten. Nothing more of that message leaves
(what left before is its header and translated Call ID fields).

A SYN with a new ISN from a connection's client endpoint does not end it (as Linux
conntrack, and RFC 5961 section 4): it is passed on, and the connection ends only when
the new one is proven, by the server's SYN-ACK to the new ISN (the calls end, a new
connection starts on the same public port) or by an exact RST. A host that can send from
one side only cannot end another's connection this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from alg.calls import ConnectionCalls
from alg.codec import HEADER_LENGTH
from alg.config import AlgConfig
from alg.counters import Counters
from alg.errors import AllocationError, CodecError, LimitError, ProtocolError, StreamError
from alg.events import (
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    ControlEntry,
    Direction,
    EntryKind,
    Output,
    RemoveEntries,
    SendTcp,
    TcpSegment,
)
from alg.framer import Decide, PptpFramer
from alg.nat import NatSession, NatTable, Proto
from alg.pptp import CallControl
from alg.relay import RESYNC_SPAN, TcpRelay, Verdict
from alg.snapshot import ConnectionRecord, Journal

_Key = tuple[IPv4Address, int, IPv4Address, int]


@dataclass(eq=False)
class ControlConnection:
    """A TCP/1723 control connection, its NAT session and its calls (whose
    ``client_ip``, ``public_ip`` and ``server_ip`` are the connection's)."""

    session: NatSession
    relay: TcpRelay
    calls: ConnectionCalls
    framers: dict[Direction, PptpFramer] = field(default_factory=lambda: {
        Direction.OUTBOUND: PptpFramer(), Direction.INBOUND: PptpFramer(),
    })
    recorded: dict[Direction, int] = field(default_factory=dict)
    """Stream offsets of each direction in the last record made."""
    new_syn: TcpSegment | None = None
    """The latest SYN from the client's endpoint with another ISN, passed on to the
    server: a new connection if the server's SYN-ACK acknowledges it."""

    def record(self) -> ConnectionRecord:
        """What the store keeps of the connection (noting the offsets it records)."""
        for direction in Direction:
            stream = self.relay.stream(direction)
            if stream is not None:
                self.recorded[direction] = stream.forwarded
        return self.relay.record(self.session.id)

    def moved_on(self, direction: Direction) -> bool:
        """Whether a direction's stream is half :data:`~alg.relay.RESYNC_SPAN` beyond
        its last record (so that the record is written again)."""
        stream = self.relay.stream(direction)
        return stream is not None and stream.synced and (
            stream.forwarded - self.recorded.get(direction, 0) > RESYNC_SPAN // 2
        )


class ControlConnections:
    """Every control connection, by its inside and its public 4-tuple.

    Args:
        config: limits and timeouts.
        counters: the core's counters.
        nat: the NAT table (a control connection is one of its TCP sessions).
        calls: the call state machine.
        journal: where connections and their calls are noted (``alg.snapshot``).
    """

    def __init__(
        self, config: AlgConfig, counters: Counters, nat: NatTable, calls: CallControl,
        journal: Journal | None = None,
    ) -> None:
        self._config = config
        self._journal = journal if journal is not None else Journal()
        self._counters = counters
        self._nat = nat
        self._calls = calls
        self._inside: dict[_Key, ControlConnection] = {}
        self._public: dict[_Key, ControlConnection] = {}
        self._by_session: dict[int, ControlConnection] = {}
        self._per_host: dict[IPv4Address, int] = {}
        self._handshakes: dict[IPv4Address, dict[int, ControlConnection]] = {}
        self._unplaced: dict[tuple[IPv4Address, int, IPv4Address], int] = {}
        """Connections whose entry the app could not place (the client's port not
        known), by their inside endpoint and server: offered again when the client
        speaks."""

    def connections(self) -> list[ControlConnection]:
        """The live control connections, oldest first."""
        return list(self._inside.values())

    def is_control(self, session_id: int) -> bool:
        """True when NAT session ``session_id`` is a control connection."""
        return session_id in self._by_session

    def handle(self, direction: Direction, seg: TcpSegment, now: float) -> Output:
        """A segment of a control connection (to or from TCP port 1723)."""
        if direction is Direction.OUTBOUND:
            conn = self._inside.get((seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port))
            if conn is None:
                return self._open(seg, now)
            if conn.relay.is_new_syn(seg):
                return self._new_syn(conn, seg)
        else:
            conn = self._public.get((seg.dst_ip, seg.dst_port, seg.src_ip, seg.src_port))
            if conn is None:
                self._counters.no_session_drops += 1
                return Output(drop_reason="no control connection for inbound segment")
            if conn.new_syn is not None and _proves(seg, conn.new_syn):
                out = self._reopen(conn, conn.new_syn, now)
                out.extend(self._segment(self._by_session[conn.session.id], direction, seg,
                                         now))
                return out
        self._nat.touch(conn.session.id, now)
        return self._segment(conn, direction, seg, now)

    def unplaced(self, session: NatSession) -> None:
        """The app could not place the entry of a connection (its client's port is not
        known): :meth:`place` offers it again when the client speaks."""
        self._unplaced[(session.inside_ip, session.inside_port, session.remote_ip)] = (
            session.id)

    def place(self, seg: TcpSegment, out: Output) -> None:
        """A client's segment: if its connection's entry was not placed, the app knows
        the client's port now, and the entry is offered again."""
        if not self._unplaced:
            return
        session_id = self._unplaced.pop((seg.src_ip, seg.src_port, seg.dst_ip), None)
        session = None if session_id is None else self._nat.get(session_id)
        if session is not None and self.is_control(session.id):
            out.decisions.append(ControlEntry(session))

    def _new_syn(self, conn: ControlConnection, seg: TcpSegment) -> Output:
        """A SYN with another ISN on an open connection's endpoints: passed on, the
        connection kept (RFC 5961 section 4).

        The server answers it: with a challenge ACK while it has the connection (a client
        that lost it answers that with an exact RST, which ends it), with a SYN-ACK for
        the new ISN when it lost it too (which :meth:`_reopen` takes).
        """
        self._counters.syns_on_open_connections += 1
        conn.new_syn = seg
        return Output(emits=[SendTcp(Direction.OUTBOUND, conn.relay.first_syn(seg))])

    def _reopen(self, conn: ControlConnection, syn: TcpSegment, now: float) -> Output:
        """The server acknowledged the new SYN: the old connection and its calls end, a
        new one starts on the same NAT session (the SYN-ACK came to its public port)."""
        self._counters.connections_reopened += 1
        out = Output()
        self._calls.close_all(conn.calls, now, "reopened", out)
        conn.calls.forget_closed()
        self._detach(conn)
        self._nat.touch(conn.session.id, now)
        self._add(conn.session, TcpRelay(conn.session, syn, self._config.max_buffer,
                                         HEADER_LENGTH))
        return out

    def session_expired(self, session_id: int, now: float, out: Output) -> bool:
        """The NAT aged a session out; end its connection if it is one (True)."""
        conn = self._by_session.get(session_id)
        if conn is None:
            return False
        self._close(conn, now, "control connection idle", out)
        return True

    def tick(self, now: float, out: Output) -> None:
        """End connections that lingered after both FINs or never completed their
        handshake; age their calls; forget unplaced entries of connections gone."""
        for waiting in list(self._handshakes.values()):
            for conn in list(waiting.values()):
                if now - conn.session.created >= self._config.tcp_handshake:
                    self._close(conn, now, "TCP handshake not completed", out)
        for conn in list(self._inside.values()):
            closing = conn.relay.closing_since
            if closing is not None and now - closing >= self._config.tcp_closing:
                self._close(conn, now, "TCP closed", out)
                continue
            self._calls.age(conn.calls, now, out)
        self._unplaced = {k: i for k, i in self._unplaced.items() if self.is_control(i)}

    def _open(self, seg: TcpSegment, now: float) -> Output:
        if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            self._counters.no_session_drops += 1
            return Output(drop_reason="no control connection and not a SYN")
        out = Output()
        host = seg.src_ip
        try:
            if self._per_host.get(host, 0) >= self._config.max_connections_per_host:
                raise LimitError("max_connections_per_host", f"{host} has too many "
                                 "control connections")
            if len(self._handshakes.get(host, {})) >= self._config.max_handshakes_per_host:
                raise LimitError("max_handshakes_per_host", f"{host} has too many "
                                 "unfinished handshakes")
            session = self._nat.outbound(
                Proto.TCP, seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port, now
            )
        except LimitError as exc:
            self._counters.refused_connections += 1
            out.errors.append(f"control connection refused: {exc}")
            out.emits.append(SendTcp(Direction.INBOUND, refusal(seg)))
            out.drop_reason = "limit reached"
            return out
        except AllocationError as exc:
            self._counters.allocation_failures += 1
            out.errors.append(f"NAT allocation failed: {exc}")
            out.drop_reason = "allocation failure"
            return out
        relay = TcpRelay(session, seg, self._config.max_buffer, HEADER_LENGTH)
        self._add(session, relay)
        out.decisions.append(ControlEntry(session))
        out.emits.append(SendTcp(Direction.OUTBOUND, relay.first_syn(seg)))
        return out

    def restore(self, session: NatSession, record: ConnectionRecord) -> ControlConnection:
        """Take back a connection a store kept, to resynchronise (``alg.relay``)."""
        relay = TcpRelay.restored(session, record, self._config.max_buffer, HEADER_LENGTH)
        conn = self._add(session, relay)
        if relay.inbound is not None:
            self._handshake_done(conn)
        return conn

    def _add(self, session: NatSession, relay: TcpRelay) -> ControlConnection:
        conn = ControlConnection(session, relay, ConnectionCalls(session, self._journal))
        conn.calls.connection = conn.record
        host = session.inside_ip
        self._inside[(host, session.inside_port, session.remote_ip, session.remote_port)] = conn
        self._public[(session.public_ip, session.public_port, session.remote_ip,
                      session.remote_port)] = conn
        self._by_session[session.id] = conn
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._handshakes.setdefault(host, {})[session.id] = conn
        self._journal.save("connection", session.id, conn.record)
        return conn

    def _segment(
        self, conn: ControlConnection, direction: Direction, seg: TcpSegment, now: float
    ) -> Output:
        received = conn.relay.receive(direction, seg)
        if conn.relay.inbound is not None and self._handshake_done(conn):
            self._journal.save("connection", conn.session.id, conn.record)
        if received.verdict is Verdict.RESYNC:
            self._counters.resync_probes += 1
            out = Output(drop_reason=received.verdict.value)
            out.emits.extend(SendTcp(direction, s) for s in received.sends)
            return out
        if received.verdict is Verdict.OUT_OF_WINDOW:
            self._counters.out_of_window_drops += 1
            return Output(drop_reason=received.verdict.value)
        if received.verdict is Verdict.CHALLENGED:
            self._counters.challenge_acks += 1
            out = Output(drop_reason=received.verdict.value)
            out.emits.extend(SendTcp(_back(direction), s) for s in received.sends)
            return out
        out = Output(emits=[SendTcp(direction, s) for s in received.sends])
        if received.verdict is Verdict.RESET:
            self._close(conn, now, "TCP RST", out)
            return out
        if received.verdict is Verdict.HANDSHAKE:
            return out
        framer = conn.framers[direction]
        released = bytearray()
        try:
            framer.feed(received.arrival.data)
            while (event := framer.next_event()) is not None:
                if isinstance(event, Decide):
                    framer.decided(
                        self._calls.translate(conn.calls, direction, event.head, now, out)
                    )
                else:
                    released += event.data
            result = conn.relay.forward(
                direction, seg, received.arrival, bytes(released), framer.idle, now
            )
        except (CodecError, ProtocolError, AllocationError, StreamError) as exc:
            self._count_error(exc)
            self._reset(conn, now, f"{type(exc).__name__}: {exc}", out)
            return out
        if received.arrival.dropped_bytes:
            self._counters.buffer_limit_drops += 1
        self._counters.retransmitted_segments += result.retransmissions
        if result.repeat_ack is not None:
            out.emits.append(SendTcp(_back(direction), result.repeat_ack))
        out.emits.extend(SendTcp(direction, s) for s in result.sends)
        if result.truncated:
            self._counters.truncated_messages += 1
            self._reset(conn, now, "control message truncated by FIN", out)
            return out
        if result.half_closed:
            self._calls.close_all(conn.calls, now, "TCP FIN", out)
        if conn.moved_on(direction):
            self._journal.save("connection", conn.session.id, conn.record)
        if out.drop_reason is None and not result.sends:
            out.drop_reason = result.drop_reason
        return out

    def _handshake_done(self, conn: ControlConnection) -> bool:
        """Take a connection out of the unfinished handshakes (True if it was in)."""
        waiting = self._handshakes.get(conn.session.inside_ip)
        if waiting is None or waiting.pop(conn.session.id, None) is None:
            return False
        if not waiting:
            del self._handshakes[conn.session.inside_ip]
        return True

    def _count_error(self, exc: Exception) -> None:
        if isinstance(exc, LimitError):
            self._counters.refused_calls += 1
        elif isinstance(exc, AllocationError):
            self._counters.allocation_failures += 1
        elif isinstance(exc, ProtocolError):
            self._counters.unexpected_messages += 1
        elif isinstance(exc, StreamError):
            self._counters.buffer_limit_drops += 1
        else:
            self._counters.malformed_messages += 1

    def _reset(self, conn: ControlConnection, now: float, reason: str, out: Output) -> None:
        self._counters.connections_reset += 1
        s = conn.session
        out.errors.append(
            f"control connection {s.inside_ip}:{s.inside_port} -> {s.remote_ip}:{s.remote_port}"
            f" reset: {reason}"
        )
        out.emits.extend(SendTcp(d, rst) for d, rst in conn.relay.reset_segments())
        out.drop_reason = reason
        self._close(conn, now, "connection reset", out)

    def _close(self, conn: ControlConnection, now: float, reason: str, out: Output) -> None:
        self._calls.close_all(conn.calls, now, reason, out)
        self._detach(conn)
        self._nat.remove(conn.session.id)
        out.decisions.append(RemoveEntries(EntryKind.CONTROL, conn.session.id))

    def _detach(self, conn: ControlConnection) -> None:
        """Take a connection out of every index (its NAT session stays)."""
        s = conn.session
        self._inside.pop((s.inside_ip, s.inside_port, s.remote_ip, s.remote_port), None)
        self._public.pop((s.public_ip, s.public_port, s.remote_ip, s.remote_port), None)
        if self._by_session.pop(s.id, None) is not None:
            self._handshake_done(conn)
            left = self._per_host[s.inside_ip] - 1
            if left:
                self._per_host[s.inside_ip] = left
            else:
                del self._per_host[s.inside_ip]


def _proves(seg: TcpSegment, syn: TcpSegment) -> bool:
    """Whether an inbound segment is the server's SYN-ACK to ``syn``."""
    return (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK
            and seg.ack == (syn.seq + 1) % (1 << 32))


def refusal(syn: TcpSegment) -> TcpSegment:
    """The RST that refuses a connection, to the client that sent ``syn`` (RFC 793)."""
    return TcpSegment(
        syn.dst_ip, syn.dst_port, syn.src_ip, syn.src_port, seq=0,
        ack=(syn.seq + 1 + len(syn.payload)) % (1 << 32), flags=TCP_RST | TCP_ACK, window=0,
    )


def _back(direction: Direction) -> Direction:
    return Direction.INBOUND if direction is Direction.OUTBOUND else Direction.OUTBOUND
