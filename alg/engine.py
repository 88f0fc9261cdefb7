"""The gateway's core: NAPT, the PPTP ALG and the server-maps, sans-IO.

:class:`Gateway` takes decoded packets and the time, and returns an :class:`Output`:
packets to send and flow decisions. Roles follow RFC 2637 with the PNS (the client)
inside: ``a`` is a call's Call ID as the client chose it, ``b`` the one it carries on the
public side (``a`` kept when free on the (public IP, server) pair), ``c`` the server's.

Policies (also in the README):

* Malformed control message, truncated message at FIN, or a valid message the ALG will
  not pass (a role RFC 2637 does not give that side): counted, the connection is reset
  (RST to both ends) and its calls end. Nothing more of that message leaves (what left
  before is its header and translated Call ID fields, see ``alg.stream``).
* Unknown Call ID in a control message: counted and passed unchanged; PPTP peers scope
  Call IDs per control connection, so it cannot reach another client's call.
* Call-Disconnect-Notify: its Call ID is taken as the server's (``c``, RFC 2637 section
  2.13) when a live or recently closed call of the connection has that ``c`` (the
  server's answer to a Call-Clear-Request comes after the call closed), else as the
  public-side ID ``b`` (rewritten to ``a``). So an ID that is one call's ``c`` and
  another's ``b`` ends the call whose ``c`` it is.
* Call ID exhaustion on a (public IP, server) pair: counted, the connection is reset.
* GRE that matches no server-map is dropped and counted, and creates no state.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address

from alg.callid import CallIdAllocator
from alg.codec import (
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    M,
    OutgoingCallReply,
    OutgoingCallRequest,
    OutgoingCallResult,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    WanErrorNotify,
    parse_gre,
    parse_message,
    replace,
    rewrite_gre_call_id,
)
from alg.config import AlgConfig
from alg.errors import (
    AllocationError,
    CodecError,
    ProtocolError,
    StreamError,
)
from alg.events import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    CallLog,
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
    TcpSegment,
    Translation,
)
from alg.nat import NatSession, NatTable, Proto
from alg.stream import StreamDirection

PPTP_PORT = 1723
INCOMING_CALL_ACCEPT = 1
WINDOW = 65535
FRAME_OVERHEAD = 14 + 20
"""Ethernet and IPv4 header bytes: what the switch counts beyond a GRE packet's bytes."""


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


@dataclass
class Counters:
    """What the core has counted since it started."""

    calls_set_up: int = 0
    call_ids_translated: int = 0
    call_ids_changed: int = 0
    allocation_failures: int = 0
    malformed_messages: int = 0
    truncated_messages: int = 0
    unexpected_messages: int = 0
    unknown_call_ids: int = 0
    connections_reset: int = 0
    retransmitted_segments: int = 0
    buffer_limit_drops: int = 0
    gre_unknown_dropped: int = 0
    gre_malformed: int = 0
    gre_slow_path: int = 0
    policy_denied: int = 0
    no_session_drops: int = 0
    out_of_window_drops: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(eq=False)
class Call:
    """One PPTP call and its two server-map entries.

    Attributes:
        index: unique within the gateway, for logs and displays.
        client_call_id: ``a``, None until the client has named it (incoming calls).
        public_call_id: ``b``, None until allocated.
        server_call_id: ``c``, None until the server has named it.
        last_data: when the data channel last carried GRE (or when the call began).
        hold_until: for a closed call, until when late control messages are translated.
    """

    index: int
    conn: ControlConnection
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
    slow_path_packets: int = 0
    end_reason: str = ""


@dataclass(eq=False)
class ControlConnection:
    """A TCP/1723 control connection, its NAT session and its calls."""

    session: NatSession
    upstream: StreamDirection
    downstream: StreamDirection | None = None
    calls: list[Call] = field(default_factory=list)
    closed_calls: list[Call] = field(default_factory=list)
    fin_up: bool = False
    fin_down: bool = False
    closing_since: float | None = None
    last_ack: dict[Direction, int] = field(default_factory=dict)
    last_window: dict[Direction, int] = field(default_factory=dict)

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

    def live(self, attribute: str, value: int) -> Call | None:
        """The live call whose ``attribute`` is ``value``."""
        return next((c for c in self.calls if getattr(c, attribute) == value), None)

    def recent(self, attribute: str, value: int) -> Call | None:
        """The live or recently closed call whose ``attribute`` is ``value``."""
        found = self.live(attribute, value)
        if found is None:
            found = next(
                (c for c in reversed(self.closed_calls) if getattr(c, attribute) == value), None
            )
        return found


@dataclass(eq=False)
class GrePair:
    """The flow entry shared by the calls of one GRE address pair.

    Attributes:
        entry_id: the entry's id in cookies.
        calls: the established calls the entry carries.
        mode: for server -> client pairs, the client the flow sends to (fast path) or
            None (slow path, through the controller).
        packets: the last packet count the switch reported for the entry.
    """

    entry_id: int
    calls: list[Call] = field(default_factory=list)
    mode: IPv4Address | None = None
    packets: int = 0
    bytes: int = 0


@dataclass(eq=False)
class PlainGre:
    """ALG off: address-only NAT of one client's GRE to one server."""

    client_ip: IPv4Address
    server_ip: IPv4Address
    public_ip: IPv4Address
    up_id: int
    down_id: int
    last_seen: float
    packets: int = 0
    down_packets: int = 0


_OUTBOUND_ONLY = (OutgoingCallRequest, IncomingCallReply, CallClearRequest)
_INBOUND_ONLY = (
    OutgoingCallReply, IncomingCallRequest, IncomingCallConnected, CallDisconnectNotify,
    WanErrorNotify,
)
_PASS_EITHER_WAY = (
    StartControlConnectionRequest, StartControlConnectionReply, EchoRequest, EchoReply,
)
_STOP = (StopControlConnectionRequest, StopControlConnectionReply)


class Gateway:
    """The whole core: NAT table, Call ID allocator, control connections and calls.

    Args:
        config: timeouts, limits, the public pool, the policy and the ALG switch.
    """

    def __init__(self, config: AlgConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.nat = NatTable(config)
        self.call_ids = CallIdAllocator(config.call_id_hold_down)
        self._ids = itertools.count(1)
        self._conns_inside: dict[tuple[IPv4Address, int, IPv4Address, int], ControlConnection] = {}
        self._conns_public: dict[tuple[IPv4Address, int, IPv4Address, int], ControlConnection] = {}
        self._conn_by_session: dict[int, ControlConnection] = {}
        self._down_calls: dict[tuple[IPv4Address, IPv4Address, int], Call] = {}
        self._up_calls: dict[tuple[IPv4Address, IPv4Address, int], Call] = {}
        self._up_pairs: dict[tuple[IPv4Address, IPv4Address], GrePair] = {}
        self._down_pairs: dict[tuple[IPv4Address, IPv4Address], GrePair] = {}
        self._plain_up: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._plain_down: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._session_packets: dict[int, int] = {}
        self._session_bytes: dict[int, int] = {}
        self._pairs_by_id: dict[int, GrePair] = {}
        self._plain_by_id: dict[int, PlainGre] = {}

    # Views for displays and tests.

    def connections(self) -> list[ControlConnection]:
        """The live control connections."""
        return list(self._conns_inside.values())

    def calls(self) -> Iterator[Call]:
        """Every live call of every control connection."""
        for conn in self._conns_inside.values():
            yield from conn.calls

    @property
    def calls_in_progress(self) -> int:
        """Calls whose data channel is open."""
        return sum(1 for c in self.calls() if c.state is CallState.ESTABLISHED)

    def is_control_session(self, session_id: int) -> bool:
        """True when NAT session ``session_id`` is a PPTP control connection."""
        return session_id in self._conn_by_session

    def inbound_gre_path(self, server_ip: IPv4Address, public_ip: IPv4Address) -> str | None:
        """``"flow"`` or ``"controller"`` for a pair's server -> client GRE, None if closed."""
        pair = self._down_pairs.get((server_ip, public_ip))
        if pair is None:
            return None
        return "flow" if pair.mode is not None else "controller"

    def plain_gre(self) -> list[PlainGre]:
        """ALG off: the address-only GRE bindings."""
        return list(self._plain_up.values())

    # Ordinary NAPT.

    def handle_tcp(self, direction: Direction, seg: TcpSegment, now: float) -> Output:
        """A TCP segment that reached the controller (no flow entry matched it)."""
        if self.config.alg_enabled and self._is_control(direction, seg):
            return self._control_segment(direction, seg, now)
        starts = seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        return self._napt(
            direction, Proto.TCP, seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port, starts, now
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
        return self._napt(direction, Proto.UDP, src_ip, src_port, dst_ip, dst_port, True, now)

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
            return self._drop("icmp echo not started from inside")
        if request:
            return self._napt(direction, Proto.ICMP, src_ip, identifier, dst_ip, 0, True, now)
        return self._napt(direction, Proto.ICMP, src_ip, 0, dst_ip, identifier, False, now)

    def _napt(
        self,
        direction: Direction,
        proto: Proto,
        src_ip: IPv4Address,
        src_port: int,
        dst_ip: IPv4Address,
        dst_port: int,
        starts: bool,
        now: float,
    ) -> Output:
        out = Output()
        if direction is Direction.INBOUND:
            session = self.nat.inbound(proto, dst_ip, dst_port, src_ip, src_port)
            if session is None:
                self.counters.no_session_drops += 1
                return self._drop(f"no {proto.name} session for inbound packet")
            self.nat.touch(session.id, now)
            translation = Translation(src_ip, src_port, session.inside_ip, session.inside_port)
        else:
            session = self.nat.find(proto, src_ip, src_port, dst_ip, dst_port)
            if session is None:
                if not starts:
                    self.counters.no_session_drops += 1
                    return self._drop(f"no {proto.name} session and not a start")
                if not self._policy_allows(proto, dst_port):
                    self.counters.policy_denied += 1
                    return self._drop(f"policy {self.config.policy} denies {proto.name}")
                try:
                    session = self.nat.outbound(proto, src_ip, src_port, dst_ip, dst_port, now)
                except AllocationError as exc:
                    self.counters.allocation_failures += 1
                    out.errors.append(f"NAT allocation failed: {exc}")
                    out.drop_reason = "allocation failure"
                    return out
            else:
                self.nat.touch(session.id, now)
            translation = Translation(session.public_ip, session.public_port, dst_ip, dst_port)
        if proto is not Proto.ICMP:
            out.decisions.append(SessionEntries(session, self.nat.idle_timeout(proto)))
        out.emits.append(Forward(direction, translation))
        return out

    def _policy_allows(self, proto: Proto, dst_port: int) -> bool:
        if self.config.policy == "open":
            return True
        return proto is Proto.TCP and dst_port == PPTP_PORT

    @staticmethod
    def _drop(reason: str) -> Output:
        return Output(drop_reason=reason)

    # The control connection.

    def _is_control(self, direction: Direction, seg: TcpSegment) -> bool:
        if direction is Direction.OUTBOUND:
            return seg.dst_port == PPTP_PORT
        return seg.src_port == PPTP_PORT

    def _control_segment(self, direction: Direction, seg: TcpSegment, now: float) -> Output:
        if direction is Direction.OUTBOUND:
            conn = self._conns_inside.get((seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port))
            if conn is not None and self._is_new_syn(conn, seg):
                out = Output()
                self._close_connection(conn, now, "reopened", out)
                out.extend(self._open_control(seg, now))
                return out
            if conn is None:
                return self._open_control(seg, now)
        else:
            conn = self._conns_public.get((seg.dst_ip, seg.dst_port, seg.src_ip, seg.src_port))
            if conn is None:
                self.counters.no_session_drops += 1
                return self._drop("no control connection for inbound segment")
            if seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and conn.downstream is None:
                conn.downstream = StreamDirection(seg.seq, self.config.max_buffer)
        self.nat.touch(conn.session.id, now)
        return self._relay(conn, direction, seg, now)

    @staticmethod
    def _is_new_syn(conn: ControlConnection, seg: TcpSegment) -> bool:
        """A SYN that starts a new connection on the 4-tuple (not a retransmitted SYN)."""
        if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return False
        return seg.seq != conn.upstream.isn

    def _open_control(self, seg: TcpSegment, now: float) -> Output:
        if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            self.counters.no_session_drops += 1
            return self._drop("no control connection and not a SYN")
        if not self._policy_allows(Proto.TCP, seg.dst_port):
            self.counters.policy_denied += 1
            return self._drop("policy denies")
        out = Output()
        try:
            session = self.nat.outbound(
                Proto.TCP, seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port, now
            )
        except AllocationError as exc:
            self.counters.allocation_failures += 1
            out.errors.append(f"NAT allocation failed: {exc}")
            out.drop_reason = "allocation failure"
            return out
        conn = ControlConnection(session, StreamDirection(seg.seq, self.config.max_buffer))
        self._conns_inside[(seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port)] = conn
        self._conns_public[
            (session.public_ip, session.public_port, seg.dst_ip, seg.dst_port)
        ] = conn
        self._conn_by_session[session.id] = conn
        # Data on a SYN (TCP Fast Open) would bypass the ALG: it is not forwarded, the
        # SYN-ACK does not acknowledge it, and the client sends it again.
        first = self._translate(conn, Direction.OUTBOUND, seg, payload=b"")
        out.emits.append(SendTcp(Direction.OUTBOUND, first))
        return out

    @staticmethod
    def _translate(
        conn: ControlConnection,
        direction: Direction,
        seg: TcpSegment,
        *,
        seq: int | None = None,
        flags: int | None = None,
        payload: bytes | None = None,
    ) -> TcpSegment:
        s = conn.session
        if direction is Direction.OUTBOUND:
            ends = (s.public_ip, s.public_port, s.remote_ip, s.remote_port)
        else:
            ends = (s.remote_ip, s.remote_port, s.inside_ip, s.inside_port)
        return TcpSegment(
            *ends,
            seq=seg.seq if seq is None else seq,
            ack=seg.ack,
            flags=seg.flags if flags is None else flags,
            window=seg.window,
            payload=seg.payload if payload is None else payload,
            options=seg.options,
        )

    def _relay(
        self, conn: ControlConnection, direction: Direction, seg: TcpSegment, now: float
    ) -> Output:
        out = Output()
        stream: StreamDirection | None
        other: StreamDirection | None
        if direction is Direction.OUTBOUND:
            stream, other = conn.upstream, conn.downstream
        else:
            stream, other = conn.downstream, conn.upstream
        if stream is not None and not self._in_window(stream, seg):
            self.counters.out_of_window_drops += 1
            return self._drop("segment outside the window")
        if stream is None and seg.flags & TCP_RST and not (
            seg.flags & TCP_ACK and seg.ack == conn.upstream.seq_of(0)
        ):
            self.counters.out_of_window_drops += 1
            return self._drop("RST that does not answer the SYN")
        conn.last_window[direction] = seg.window
        if seg.flags & TCP_RST:
            rst = self._translate(conn, direction, seg, payload=b"")
            out.emits.append(SendTcp(direction, rst))
            self._close_connection(conn, now, "TCP RST", out)
            return out
        if seg.flags & TCP_SYN or stream is None:
            # Never a payload: SYN data, or data before the SYN-ACK, would bypass the ALG.
            out.emits.append(SendTcp(direction, self._translate(conn, direction, seg, payload=b"")))
            return out
        if seg.flags & TCP_ACK and other is not None:
            other.acknowledge(seg.ack)

        def rewrite(message: bytes) -> bytes:
            return self._rewrite(conn, direction, message, now, out)

        try:
            result = stream.feed(seg.seq, seg.payload, rewrite)
        except (CodecError, ProtocolError, AllocationError, StreamError) as exc:
            self._count_error(exc)
            self._reset(conn, now, f"{type(exc).__name__}: {exc}", out)
            return out
        if result.dropped_bytes:
            self.counters.buffer_limit_drops += 1
        data_flags = seg.flags & (TCP_ACK | TCP_PSH)
        sends = [
            self._translate(conn, direction, seg, seq=s.seq, flags=data_flags, payload=s.payload)
            for s in result.segments
        ]
        self.counters.retransmitted_segments += sum(1 for s in result.segments if s.retransmission)
        if seg.flags & TCP_FIN:
            fin_seq = (seg.seq + len(seg.payload)) % (1 << 32)
            verdict = stream.check_end(fin_seq)
            if verdict is None:
                self.counters.truncated_messages += 1
                # The whole messages before it were counted as forwarded: send them, so
                # that the RST lands at the sequence number the receiver expects.
                out.emits.extend(SendTcp(direction, s) for s in sends)
                self._reset(conn, now, "control message truncated by FIN", out)
                return out
            if verdict:
                last_end = (sends[-1].seq + len(sends[-1].payload)) % (1 << 32) if sends else None
                if last_end == fin_seq:
                    sends[-1] = dataclasses.replace(sends[-1], flags=sends[-1].flags | TCP_FIN)
                else:
                    sends.append(
                        self._translate(
                            conn, direction, seg, seq=fin_seq, flags=data_flags | TCP_FIN,
                            payload=b"",
                        )
                    )
                self._half_close(conn, direction, now, out)
        if not sends and not seg.payload and seg.flags & (TCP_ACK | TCP_FIN) == TCP_ACK:
            sends.append(self._translate(conn, direction, seg))
        elif not sends and seg.flags & TCP_ACK and conn.last_ack.get(direction) != seg.ack:
            # A FIN this side sent took one sequence number after the last byte: an ACK
            # after it carries forwarded + 1, or the peer drops it as out of window.
            fin_sent = conn.fin_up if direction is Direction.OUTBOUND else conn.fin_down
            sends.append(
                self._translate(
                    conn, direction, seg, seq=stream.seq_of(stream.forwarded + int(fin_sent)),
                    flags=TCP_ACK, payload=b"",
                )
            )
        if result.stale and other is not None:
            out.emits.append(self._repeat_ack(conn, direction, stream, other))
        if sends:
            conn.last_ack[direction] = seg.ack
        elif out.drop_reason is None:
            out.drop_reason = "retransmission of acknowledged bytes" if result.stale else (
                "control bytes held"
            )
        out.emits.extend(SendTcp(direction, s) for s in sends)
        return out

    def _in_window(self, stream: StreamDirection, seg: TcpSegment) -> bool:
        """Whether a segment's sequence number is plausible for its sender (RFC 5961).

        An RST must fall between what was forwarded and a window beyond it; other
        segments may also repeat up to a window of older bytes. A segment outside is
        dropped whole, so a blind spoofer can neither reset a connection nor move the
        acknowledgement the gateway relies on for retransmissions.
        """
        window = max(WINDOW, self.config.max_buffer)
        distance = stream.offset_of(seg.seq) - stream.forwarded
        low = 0 if seg.flags & TCP_RST else -window
        return low <= distance <= stream.held + window

    def _repeat_ack(
        self,
        conn: ControlConnection,
        direction: Direction,
        stream: StreamDirection,
        other: StreamDirection,
    ) -> SendTcp:
        """The receiver's acknowledgement again, to a sender retransmitting acked bytes.

        The gateway saw the receiver acknowledge those bytes and forgot them, so the ACK
        was lost after it; repeating it stops the retransmissions.
        """
        back = Direction.INBOUND if direction is Direction.OUTBOUND else Direction.OUTBOUND
        fin_sent = conn.fin_down if back is Direction.INBOUND else conn.fin_up
        template = TcpSegment(
            conn.client_ip, 0, conn.server_ip, 0,
            seq=other.seq_of(other.forwarded + int(fin_sent)),
            ack=stream.seq_of(stream.acked), flags=TCP_ACK,
            window=conn.last_window.get(back, 0),
        )
        return SendTcp(back, self._translate(conn, back, template))

    def _half_close(
        self, conn: ControlConnection, direction: Direction, now: float, out: Output
    ) -> None:
        if direction is Direction.OUTBOUND:
            conn.fin_up = True
        else:
            conn.fin_down = True
        for call in list(conn.calls):
            self._close_call(call, now, "TCP FIN", out)
        if conn.fin_up and conn.fin_down and conn.closing_since is None:
            conn.closing_since = now

    def _count_error(self, exc: Exception) -> None:
        if isinstance(exc, AllocationError):
            self.counters.allocation_failures += 1
        elif isinstance(exc, ProtocolError):
            self.counters.unexpected_messages += 1
        elif isinstance(exc, StreamError):
            self.counters.buffer_limit_drops += 1
        else:
            self.counters.malformed_messages += 1

    def _reset(self, conn: ControlConnection, now: float, reason: str, out: Output) -> None:
        """Reset the connection: RST to both ends at the sequence each one expects."""
        self.counters.connections_reset += 1
        s = conn.session
        out.errors.append(
            f"control connection {s.inside_ip}:{s.inside_port} -> {s.remote_ip}:{s.remote_port}"
            f" reset: {reason}"
        )
        up = conn.upstream
        out.emits.append(SendTcp(Direction.OUTBOUND, TcpSegment(
            s.public_ip, s.public_port, s.remote_ip, s.remote_port,
            seq=up.seq_of(up.forwarded + int(conn.fin_up)), ack=0, flags=TCP_RST, window=0,
        )))
        down = conn.downstream
        if down is not None:
            out.emits.append(SendTcp(Direction.INBOUND, TcpSegment(
                s.remote_ip, s.remote_port, s.inside_ip, s.inside_port,
                seq=down.seq_of(down.forwarded + int(conn.fin_down)), ack=0, flags=TCP_RST,
                window=0,
            )))
        out.drop_reason = reason
        self._close_connection(conn, now, "connection reset", out)

    def _close_connection(
        self, conn: ControlConnection, now: float, reason: str, out: Output
    ) -> None:
        for call in list(conn.calls):
            self._close_call(call, now, reason, out)
        s = conn.session
        self._conns_inside.pop((s.inside_ip, s.inside_port, s.remote_ip, s.remote_port), None)
        self._conns_public.pop((s.public_ip, s.public_port, s.remote_ip, s.remote_port), None)
        self._conn_by_session.pop(s.id, None)
        self.nat.remove(s.id)

    # Control messages.

    def _rewrite(
        self,
        conn: ControlConnection,
        direction: Direction,
        data: bytes,
        now: float,
        out: Output,
    ) -> bytes:
        message = parse_message(data)
        if isinstance(message, _PASS_EITHER_WAY):
            return data
        if isinstance(message, _STOP):
            for call in list(conn.calls):
                self._close_call(call, now, "Stop-Control-Connection", out)
            return data
        if isinstance(message, SetLinkInfo):
            if direction is Direction.OUTBOUND:
                return data
            return self._restore_peer(conn, message, now).encode()
        allowed = _OUTBOUND_ONLY if direction is Direction.OUTBOUND else _INBOUND_ONLY
        if not isinstance(message, allowed):
            raise ProtocolError(
                f"{type(message).__name__} may not travel {direction.value} (RFC 2637 roles)"
            )
        rewritten = self._handle_message(conn, message, now, out)
        return rewritten.encode() if rewritten is not message else data

    def _handle_message(
        self, conn: ControlConnection, message: ControlMessage, now: float, out: Output
    ) -> ControlMessage:
        if isinstance(message, OutgoingCallRequest):
            call = conn.live("client_call_id", message.call_id)
            if call is None:
                call = self._new_call(conn, True, CallState.REQUESTED, now)
                call.client_call_id = message.call_id
                call.call_serial_number = message.call_serial_number
                self._allocate(call, now)
            return self._translated(replace(message, call_id=self._public_id(call)))
        if isinstance(message, IncomingCallReply):
            call = conn.live("server_call_id", message.peer_call_id)
            if call is not None and call.client_call_id == message.call_id:
                # A repeated reply (already answered): the same b, never a second one.
                return self._translated(replace(message, call_id=self._public_id(call)))
            if call is None or call.state is not CallState.OFFERED:
                self.counters.unknown_call_ids += 1
                call = self._new_call(conn, False, CallState.OFFERED, now)
                call.server_call_id = message.peer_call_id
            call.client_call_id = message.call_id
            call.state = CallState.ANSWERED
            self._allocate(call, now)
            translated = self._translated(replace(message, call_id=self._public_id(call)))
            if message.result_code != INCOMING_CALL_ACCEPT:
                self._close_call(call, now, "Incoming-Call-Reply refused", out)
            return translated
        if isinstance(message, CallClearRequest):
            call = conn.recent("client_call_id", message.call_id)
            if call is None:
                self.counters.unknown_call_ids += 1
                return message
            if call.state is not CallState.CLOSED:
                self._close_call(call, now, "Call-Clear-Request", out)
            return self._translated(replace(message, call_id=self._public_id(call)))
        if isinstance(message, OutgoingCallReply):
            call = conn.recent("public_call_id", message.peer_call_id)
            if call is None:
                self.counters.unknown_call_ids += 1
                return message
            reply = self._translated(replace(message, peer_call_id=self._client_id(call)))
            if call.state is CallState.REQUESTED:
                call.server_call_id = message.call_id
                if message.result_code == OutgoingCallResult.CONNECTED:
                    self._establish(call, now, out)
                else:
                    reason = f"Outgoing-Call-Reply result {message.result_code}"
                    self._close_call(call, now, reason, out)
            return reply
        if isinstance(message, IncomingCallRequest):
            if conn.live("server_call_id", message.call_id) is None:
                call = self._new_call(conn, False, CallState.OFFERED, now)
                call.server_call_id = message.call_id
                call.call_serial_number = message.call_serial_number
            return message
        if isinstance(message, IncomingCallConnected):
            call = conn.recent("public_call_id", message.peer_call_id)
            if call is None:
                self.counters.unknown_call_ids += 1
                return message
            if call.state is CallState.ANSWERED:
                self._establish(call, now, out)
            return self._translated(replace(message, peer_call_id=self._client_id(call)))
        if isinstance(message, CallDisconnectNotify):
            return self._disconnect(conn, message, now, out)
        assert isinstance(message, WanErrorNotify)
        return self._restore_peer(conn, message, now)

    def _disconnect(
        self, conn: ControlConnection, message: CallDisconnectNotify, now: float, out: Output
    ) -> ControlMessage:
        call = conn.recent("server_call_id", message.call_id)
        if call is not None:
            self._close_call(call, now, "Call-Disconnect-Notify", out)
            return message
        call = conn.recent("public_call_id", message.call_id)
        if call is None:
            self.counters.unknown_call_ids += 1
            return message
        if call.state is not CallState.CLOSED:
            self._close_call(call, now, "Call-Disconnect-Notify", out)
        return self._translated(replace(message, call_id=self._client_id(call)))

    def _restore_peer(
        self, conn: ControlConnection, message: WanErrorNotify | SetLinkInfo, now: float
    ) -> WanErrorNotify | SetLinkInfo:
        call = conn.recent("public_call_id", message.peer_call_id)
        if call is None:
            self.counters.unknown_call_ids += 1
            return message
        return self._translated(replace(message, peer_call_id=self._client_id(call)))

    def _translated(self, message: M) -> M:
        self.counters.call_ids_translated += 1
        return message

    @staticmethod
    def _public_id(call: Call) -> int:
        assert call.public_call_id is not None
        return call.public_call_id

    @staticmethod
    def _client_id(call: Call) -> int:
        assert call.client_call_id is not None
        return call.client_call_id

    def _new_call(
        self, conn: ControlConnection, outgoing: bool, state: CallState, now: float
    ) -> Call:
        call = Call(next(self._ids), conn, outgoing, state, created=now, last_data=now)
        conn.calls.append(call)
        return call

    def _allocate(self, call: Call, now: float) -> None:
        conn = call.conn
        assert call.client_call_id is not None
        try:
            public_id = self.call_ids.allocate(
                conn.public_ip, conn.server_ip, call.client_call_id, now
            )
        except AllocationError:
            conn.calls.remove(call)
            raise
        call.public_call_id = public_id
        if public_id != call.client_call_id:
            self.counters.call_ids_changed += 1

    # Calls and server-maps.

    def _establish(self, call: Call, now: float, out: Output) -> None:
        conn = call.conn
        assert call.public_call_id is not None and call.server_call_id is not None
        call.state = CallState.ESTABLISHED
        call.last_data = now
        self.counters.calls_set_up += 1
        self._down_calls[(conn.server_ip, conn.public_ip, call.public_call_id)] = call
        self._up_calls[(conn.client_ip, conn.server_ip, call.server_call_id)] = call
        up = self._up_pairs.get((conn.client_ip, conn.server_ip))
        if up is None:
            up = self._up_pairs[(conn.client_ip, conn.server_ip)] = self._new_pair()
            out.decisions.append(self._upstream_decision(conn, up))
        up.calls.append(call)
        down = self._down_pairs.get((conn.server_ip, conn.public_ip))
        if down is None:
            down = self._down_pairs[(conn.server_ip, conn.public_ip)] = self._new_pair()
        down.calls.append(call)
        self._update_downstream(conn.server_ip, conn.public_ip, down, out, force=True)
        out.logs.append(self._log("set up", call))

    def _new_pair(self) -> GrePair:
        pair = GrePair(next(self._ids))
        self._pairs_by_id[pair.entry_id] = pair
        return pair

    def _upstream_decision(self, conn: ControlConnection, pair: GrePair) -> GreOutboundEntry:
        return GreOutboundEntry(
            pair.entry_id, conn.client_ip, conn.server_ip, conn.public_ip, self.config.gre_idle
        )

    def _update_downstream(
        self,
        server_ip: IPv4Address,
        public_ip: IPv4Address,
        pair: GrePair,
        out: Output,
        force: bool = False,
    ) -> None:
        mode: IPv4Address | None = None
        if len(pair.calls) == 1:
            only = pair.calls[0]
            if only.public_call_id == only.client_call_id:
                mode = only.conn.client_ip
        if force or mode != pair.mode:
            pair.mode = mode
            out.decisions.append(
                GreInboundEntry(pair.entry_id, server_ip, public_ip, mode, self.config.gre_idle)
            )

    def _close_call(self, call: Call, now: float, reason: str, out: Output) -> None:
        conn = call.conn
        if call.state is CallState.CLOSED:
            return
        if call.state is CallState.ESTABLISHED:
            self._close_data_channel(call, out)
            out.logs.append(self._log("torn down", call, reason))
        call.state = CallState.CLOSED
        call.end_reason = reason
        if call in conn.calls:
            conn.calls.remove(call)
        if call.public_call_id is not None:
            self.call_ids.release(conn.public_ip, conn.server_ip, call.public_call_id, now)
            call.hold_until = now + self.config.call_id_hold_down
            conn.closed_calls.append(call)

    def _close_data_channel(self, call: Call, out: Output) -> None:
        conn = call.conn
        assert call.public_call_id is not None and call.server_call_id is not None
        down_key = (conn.server_ip, conn.public_ip, call.public_call_id)
        if self._down_calls.get(down_key) is call:
            del self._down_calls[down_key]
        up_key = (conn.client_ip, conn.server_ip, call.server_call_id)
        if self._up_calls.get(up_key) is call:
            del self._up_calls[up_key]
        up = self._up_pairs[(conn.client_ip, conn.server_ip)]
        up.calls.remove(call)
        if not up.calls:
            del self._up_pairs[(conn.client_ip, conn.server_ip)]
            del self._pairs_by_id[up.entry_id]
            out.decisions.append(RemoveEntries(EntryKind.GRE_OUTBOUND, up.entry_id))
        down = self._down_pairs[(conn.server_ip, conn.public_ip)]
        down.calls.remove(call)
        if not down.calls:
            del self._down_pairs[(conn.server_ip, conn.public_ip)]
            del self._pairs_by_id[down.entry_id]
            out.decisions.append(RemoveEntries(EntryKind.GRE_INBOUND, down.entry_id))
        else:
            self._update_downstream(conn.server_ip, conn.public_ip, down, out)

    @staticmethod
    def _log(event: str, call: Call, reason: str = "") -> CallLog:
        conn = call.conn
        return CallLog(
            event, call.index, conn.client_ip, conn.public_ip, conn.server_ip,
            Gateway._client_id(call), Gateway._public_id(call), call.server_call_id, reason,
        )

    # GRE.

    def handle_gre(
        self, direction: Direction, src_ip: IPv4Address, dst_ip: IPv4Address, gre: bytes,
        now: float,
    ) -> Output:
        """A GRE packet that reached the controller.

        Inbound, it is server -> client data of a pair on the slow path (or of a pair
        whose flow entry was lost); outbound, client -> server data whose entry was lost.
        """
        if not self.config.alg_enabled:
            return self._plain_gre(direction, src_ip, dst_ip, now)
        try:
            header = parse_gre(gre)
        except CodecError:
            self.counters.gre_malformed += 1
            return self._drop("malformed GRE")
        out = Output()
        if direction is Direction.INBOUND:
            call = self._down_calls.get((src_ip, dst_ip, header.call_id))
            if call is None:
                self.counters.gre_unknown_dropped += 1
                return self._drop("GRE matches no server-map")
            pair = self._down_pairs[(src_ip, dst_ip)]
            if pair.mode is not None:
                out.decisions.append(GreInboundEntry(
                    pair.entry_id, src_ip, dst_ip, pair.mode, self.config.gre_idle
                ))
            call.inbound_packets += 1
            call.inbound_bytes += len(gre) + FRAME_OVERHEAD
            out.emits.append(SendGre(
                direction, src_ip, call.conn.client_ip,
                rewrite_gre_call_id(gre, self._client_id(call)),
            ))
        else:
            call = self._up_calls.get((src_ip, dst_ip, header.call_id))
            if call is None:
                self.counters.gre_unknown_dropped += 1
                return self._drop("GRE matches no server-map")
            out.decisions.append(
                self._upstream_decision(call.conn, self._up_pairs[(src_ip, dst_ip)])
            )
            call.outbound_packets += 1
            call.outbound_bytes += len(gre) + FRAME_OVERHEAD
            out.emits.append(SendGre(direction, call.conn.public_ip, dst_ip, gre))
        call.last_data = now
        call.slow_path_packets += 1
        self.counters.gre_slow_path += 1
        return out

    def _plain_gre(
        self, direction: Direction, src_ip: IPv4Address, dst_ip: IPv4Address, now: float
    ) -> Output:
        """ALG off: address-only NAT, one client per (server, public address) at a time."""
        out = Output()
        if direction is Direction.INBOUND:
            binding = self._plain_down.get((src_ip, dst_ip))
            if binding is None:
                self.counters.gre_unknown_dropped += 1
                return self._drop("GRE matches no binding")
            binding.last_seen = now
            out.decisions.append(GreInboundEntry(
                binding.down_id, src_ip, dst_ip, binding.client_ip, self.config.gre_idle
            ))
            out.emits.append(Forward(direction, Translation(src_ip, 0, binding.client_ip, 0)))
            return out
        binding = self._plain_up.get((src_ip, dst_ip))
        if binding is None:
            if not self._policy_allows(Proto.GRE, 0):
                self.counters.policy_denied += 1
                return self._drop(f"policy {self.config.policy} denies GRE")
            public_ip = self.nat.pool.acquire(src_ip)
            binding = PlainGre(src_ip, dst_ip, public_ip, next(self._ids), next(self._ids), now)
            self._plain_up[(src_ip, dst_ip)] = binding
            self._plain_by_id[binding.up_id] = self._plain_by_id[binding.down_id] = binding
        binding.last_seen = now
        self._plain_down[(dst_ip, binding.public_ip)] = binding
        out.decisions.append(GreOutboundEntry(
            binding.up_id, src_ip, dst_ip, binding.public_ip, self.config.gre_idle
        ))
        out.decisions.append(GreInboundEntry(
            binding.down_id, dst_ip, binding.public_ip, src_ip, self.config.gre_idle
        ))
        out.emits.append(Forward(direction, Translation(binding.public_ip, 0, dst_ip, 0)))
        return out

    # Time and the switch's reports.

    def flow_stats(
        self, kind: EntryKind, entry_id: int, packets: int, now: float, byte_count: int = 0
    ) -> None:
        """The switch's packet and byte counts for one flow entry (cumulative).

        A count that grew since the last report restarts the idle clock of what the entry
        belongs to, so Left-Time follows traffic the controller never sees.
        """
        if kind is EntryKind.SESSION:
            if self.nat.get(entry_id) is None:
                return
            before = self._session_packets.get(entry_id, 0)
            self._session_packets[entry_id] = packets
            self._session_bytes[entry_id] = byte_count
            if packets != before and packets > 0:
                self.nat.touch(entry_id, now)
            return
        pair = self._pairs_by_id.get(entry_id)
        if pair is not None:
            grew = packets != pair.packets and packets > 0
            pair.packets = packets
            pair.bytes = byte_count
            # A slow-path entry counts what it punted: handle_gre saw each of those
            # packets and restarted only its own call's clock.
            slow = kind is EntryKind.GRE_INBOUND and pair.mode is None
            if grew and not slow:
                for call in pair.calls:
                    call.last_data = now
            return
        binding = self._plain_by_id.get(entry_id)
        if binding is not None and packets > 0:
            # Two entries, two counters: comparing one with the other is no growth.
            up = entry_id == binding.up_id
            if packets != (binding.packets if up else binding.down_packets):
                binding.last_seen = now
            if up:
                binding.packets = packets
            else:
                binding.down_packets = packets

    def flow_removed(self, kind: EntryKind, entry_id: int) -> None:
        """The switch removed an entry (idle timeout, deletion, eviction).

        Its packet count starts again from zero if the entry is installed again (the
        next packet of a live session or call is punted and re-installs it), so the last
        count is forgotten. Ageing itself is the core's, by :meth:`tick`.
        """
        if kind is EntryKind.SESSION:
            self._session_packets.pop(entry_id, None)
            self._session_bytes.pop(entry_id, None)
            return
        pair = self._pairs_by_id.get(entry_id)
        if pair is not None:
            pair.packets = pair.bytes = 0
            return
        binding = self._plain_by_id.get(entry_id)
        if binding is not None:
            if entry_id == binding.up_id:
                binding.packets = 0
            else:
                binding.down_packets = 0

    def gre_flow_packets(self, call: Call) -> tuple[int, int]:
        """Packets the switch carried for a call: client -> server, server -> client."""
        (up, _), (down, _) = self.gre_counts(call)
        return up, down

    def gre_counts(self, call: Call) -> tuple[tuple[int, int], tuple[int, int]]:
        """(packets, bytes) the switch carried for a call, each direction.

        The client -> server entry is shared by the calls of one (client, server) pair,
        so its counts are the pair's. The server -> client counts are the flow's only on
        the fast path (one call on the pair); on the slow path the controller counts each
        call's packets itself (``Call.inbound_packets``), so the punt entry adds nothing.
        """
        conn = call.conn
        up = self._up_pairs.get((conn.client_ip, conn.server_ip))
        down = self._down_pairs.get((conn.server_ip, conn.public_ip))
        up_counts = (up.packets, up.bytes) if up is not None else (0, 0)
        fast = down is not None and down.mode is not None
        down_counts = (down.packets, down.bytes) if down is not None and fast else (0, 0)
        return up_counts, down_counts

    def session_counts(self, session_id: int) -> tuple[int, int] | None:
        """(packets, bytes) the switch reported for a NAT session's entries, if any."""
        if session_id not in self._session_packets:
            return None
        return self._session_packets[session_id], self._session_bytes.get(session_id, 0)

    def tick(self, now: float) -> Output:
        """Age everything by the clock: sessions, connections, server-maps, hold-downs."""
        out = Output()
        for session in self.nat.expire(now):
            self._session_packets.pop(session.id, None)
            self._session_bytes.pop(session.id, None)
            conn = self._conn_by_session.get(session.id)
            if conn is not None:
                self._close_connection(conn, now, "control connection idle", out)
            else:
                out.decisions.append(RemoveEntries(EntryKind.SESSION, session.id))
        for conn in list(self._conns_inside.values()):
            closing = conn.closing_since
            if closing is not None and now - closing >= self.config.tcp_closing:
                self._close_connection(conn, now, "TCP closed", out)
                continue
            for call in list(conn.calls):
                if now - call.last_data >= self.config.gre_idle:
                    self._close_call(call, now, "server-map aged out", out)
            conn.closed_calls = [c for c in conn.closed_calls if c.hold_until > now]
        for key, binding in list(self._plain_up.items()):
            if now - binding.last_seen >= self.config.gre_idle:
                del self._plain_up[key]
                del self._plain_by_id[binding.up_id], self._plain_by_id[binding.down_id]
                if self._plain_down.get((binding.server_ip, binding.public_ip)) is binding:
                    del self._plain_down[(binding.server_ip, binding.public_ip)]
                self.nat.pool.release(binding.client_ip)
                out.decisions.append(RemoveEntries(EntryKind.GRE_OUTBOUND, binding.up_id))
                out.decisions.append(RemoveEntries(EntryKind.GRE_INBOUND, binding.down_id))
        self.call_ids.purge(now)
        return out

