"""Building PPTP control streams and driving them through :class:`alg.engine.Gateway`.

A tiny TCP model, no switch: :class:`ControlLink` plays a client (the PNS, inside) and a
server (the PAC, outside) talking over one TCP/1723 connection through the gateway. Each
end sends segments with proper sequence and acknowledgement numbers; the gateway's
``SendTcp`` emits are what the other end receives. Every receiver keeps the bytes it got by
stream offset and notes any byte that a later copy (a retransmission) contradicts, so a
test can check both the stream and that replays carry the same rewrites.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from itertools import pairwise

from alg.codec import (
    HEADER_LENGTH,
    PPTP_PORT,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    GreHeader,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    WanErrorNotify,
    parse_header,
    parse_message,
)
from alg.config import AlgConfig
from alg.engine import Gateway
from alg.events import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    CallLog,
    Decision,
    Direction,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    SendGre,
    SendTcp,
    TcpSegment,
)

SEQ_MOD = 1 << 32
DATA = TCP_ACK | TCP_PSH

C1 = IPv4Address("192.168.1.1")
C2 = IPv4Address("192.168.1.2")
C3 = IPv4Address("192.168.1.3")
SERVER = IPv4Address("203.0.113.1")
SERVER2 = IPv4Address("198.51.100.7")
PUBLIC = IPv4Address("203.0.113.2")
PUBLIC2 = IPv4Address("203.0.113.3")


def config(**changes: object) -> AlgConfig:
    """The default configuration with ``changes``, ordinary NAT by the controller unless
    ``changes`` says otherwise: the core's own sessions are what these tests exercise."""
    return AlgConfig(**{"ordinary_nat": "controller", **changes})  # type: ignore[arg-type]


def gateway(**changes: object) -> Gateway:
    """A gateway over :func:`config`."""
    return Gateway(config(**changes))


# Messages, as bytes.

def sccrq() -> bytes:
    return StartControlConnectionRequest(host_name=b"pns".ljust(64, b"\0")).encode()


def sccrp() -> bytes:
    return StartControlConnectionReply(host_name=b"pac".ljust(64, b"\0")).encode()


def stopccrq(reason: int = 1) -> bytes:
    return StopControlConnectionRequest(reason=reason).encode()


def stopccrp() -> bytes:
    return StopControlConnectionReply().encode()


def echo_request(identifier: int = 7) -> bytes:
    return EchoRequest(identifier=identifier).encode()


def echo_reply(identifier: int = 7) -> bytes:
    return EchoReply(identifier=identifier).encode()


def ocrq(call_id: int, serial: int = 1) -> bytes:
    return OutgoingCallRequest(call_id=call_id, call_serial_number=serial).encode()


def ocrp(call_id: int, peer_call_id: int, result: int = 1) -> bytes:
    message = OutgoingCallReply(call_id=call_id, peer_call_id=peer_call_id, result_code=result)
    return message.encode()


def icrq(call_id: int, serial: int = 1) -> bytes:
    return IncomingCallRequest(call_id=call_id, call_serial_number=serial).encode()


def icrp(call_id: int, peer_call_id: int, result: int = 1) -> bytes:
    message = IncomingCallReply(call_id=call_id, peer_call_id=peer_call_id, result_code=result)
    return message.encode()


def iccn(peer_call_id: int) -> bytes:
    return IncomingCallConnected(peer_call_id=peer_call_id).encode()


def ccrq(call_id: int) -> bytes:
    return CallClearRequest(call_id=call_id).encode()


def cdn(call_id: int) -> bytes:
    return CallDisconnectNotify(call_id=call_id, result_code=3).encode()


def wen(peer_call_id: int) -> bytes:
    return WanErrorNotify(peer_call_id=peer_call_id, crc_errors=5).encode()


def sli(peer_call_id: int) -> bytes:
    return SetLinkInfo(peer_call_id=peer_call_id, send_accm=0, receive_accm=0).encode()


def messages(data: bytes) -> list[ControlMessage]:
    """Cut a stream into whole messages by Length (a trailing partial one is ignored)."""
    out: list[ControlMessage] = []
    offset = 0
    while len(data) - offset >= HEADER_LENGTH:
        length, _ = parse_header(data[offset:])
        if len(data) - offset < length:
            break
        out.append(parse_message(data[offset : offset + length]))
        offset += length
    return out


def gre(call_id: int, payload: bytes = b"\xff\x03\x00\x21ppp", seq: int | None = 1,
        ack: int | None = None) -> bytes:
    """An enhanced GRE packet (header and payload) whose key carries ``call_id``."""
    return GreHeader(len(payload), call_id, seq, ack).encode() + payload


def cuts(data: bytes, points: Iterable[int]) -> list[tuple[int, bytes]]:
    """``data`` cut at ``points`` into (offset, piece) runs, empty pieces left out."""
    bounds = sorted({0, len(data), *(p for p in points if 0 < p < len(data))})
    return [(lo, data[lo:hi]) for lo, hi in pairwise(bounds)]


# Outputs.

def all_decisions(outputs: Iterable[Output]) -> list[Decision]:
    return [d for o in outputs for d in o.decisions]


def all_logs(outputs: Iterable[Output]) -> list[CallLog]:
    return [g for o in outputs for g in o.logs]


def of_type(items: Iterable[object], cls: type) -> list:  # type: ignore[type-arg]
    return [i for i in items if isinstance(i, cls)]


def gre_decisions(out: Output) -> list[GreOutboundEntry | GreInboundEntry | RemoveEntries]:
    return [d for d in out.decisions
            if isinstance(d, GreOutboundEntry | GreInboundEntry | RemoveEntries)]


def flows(out: Output) -> tuple[GreOutboundEntry | None, GreInboundEntry]:
    """The server-map decisions of one output: (outbound or None, inbound)."""
    ups = [d for d in out.decisions if isinstance(d, GreOutboundEntry)]
    downs = [d for d in out.decisions if isinstance(d, GreInboundEntry)]
    assert len(ups) <= 1 and len(downs) == 1, out.decisions
    return (ups[0] if ups else None), downs[0]


def sent_gre(out: Output) -> list[SendGre]:
    return [e for e in out.emits if isinstance(e, SendGre)]


def sent_tcp(out: Output) -> list[SendTcp]:
    return [e for e in out.emits if isinstance(e, SendTcp)]


# The TCP model.

@dataclass
class Peer:
    """One end of the control connection: what it sends from, what it has received."""

    ip: IPv4Address
    port: int
    isn: int
    snd_nxt: int = 0
    irs: int | None = None
    received: dict[int, int] = field(default_factory=dict)
    segments: list[TcpSegment] = field(default_factory=list)
    resets: list[TcpSegment] = field(default_factory=list)
    fin_at: int | None = None
    conflicts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.snd_nxt = self.isn

    def receive(self, seg: TcpSegment) -> None:
        self.segments.append(seg)
        if seg.flags & TCP_RST:
            self.resets.append(seg)
            return
        if seg.flags & TCP_SYN:
            self.irs = seg.seq
            return
        assert self.irs is not None, "data before the SYN"
        offset = (seg.seq - self.irs - 1) % SEQ_MOD
        for i, byte in enumerate(seg.payload):
            old = self.received.setdefault(offset + i, byte)
            if old != byte:
                self.conflicts.append(offset + i)
        if seg.flags & TCP_FIN:
            self.fin_at = offset + len(seg.payload)

    @property
    def stream(self) -> bytes:
        """The contiguous bytes received from the start of the stream."""
        out = bytearray()
        while len(out) in self.received:
            out.append(self.received[len(out)])
        return bytes(out)

    @property
    def rcv_nxt(self) -> int:
        if self.irs is None:
            return 0
        return (self.irs + 1 + len(self.stream)) % SEQ_MOD

    def messages(self) -> list[ControlMessage]:
        return messages(self.stream)

    def data_segments(self) -> list[TcpSegment]:
        return [s for s in self.segments if s.payload]


class ControlLink:
    """A client and a server on one TCP/1723 connection through ``gw``.

    Attributes:
        now: the time passed to the gateway; tests move it.
        outputs: every Output the gateway returned for this link, in order.
    """

    def __init__(
        self,
        gw: Gateway,
        client_ip: IPv4Address = C1,
        client_port: int = 40000,
        server_ip: IPv4Address = SERVER,
        client_isn: int = 1000,
        server_isn: int = 900000,
        now: float = 0.0,
    ) -> None:
        self.gw = gw
        self.client = Peer(client_ip, client_port, client_isn)
        self.server = Peer(server_ip, PPTP_PORT, server_isn)
        self.public_ip: IPv4Address | None = None
        self.public_port: int | None = None
        self.now = now
        self.outputs: list[Output] = []

    # Routing the gateway's answers.

    def deliver(self, out: Output) -> Output:
        for emit in out.emits:
            assert isinstance(emit, SendTcp), emit
            seg = emit.segment
            if emit.direction is Direction.OUTBOUND:
                assert (seg.dst_ip, seg.dst_port) == (self.server.ip, self.server.port)
                if self.public_ip is None:
                    self.public_ip, self.public_port = seg.src_ip, seg.src_port
                assert (seg.src_ip, seg.src_port) == (self.public_ip, self.public_port)
                self.server.receive(seg)
            else:
                assert (seg.src_ip, seg.src_port) == (self.server.ip, self.server.port)
                assert (seg.dst_ip, seg.dst_port) == (self.client.ip, self.client.port)
                self.client.receive(seg)
        self.outputs.append(out)
        return out

    def _segment(self, sender: Peer, seq: int, ack: int, flags: int, payload: bytes) -> TcpSegment:
        if sender is self.client:
            return TcpSegment(
                self.client.ip, self.client.port, self.server.ip, self.server.port,
                seq % SEQ_MOD, ack, flags, 65535, payload,
            )
        assert self.public_ip is not None and self.public_port is not None
        return TcpSegment(
            self.server.ip, self.server.port, self.public_ip, self.public_port,
            seq % SEQ_MOD, ack, flags, 65535, payload,
        )

    def send(
        self,
        sender: Peer,
        payload: bytes = b"",
        *,
        flags: int = DATA,
        seq: int | None = None,
        ack: int | None = None,
    ) -> Output:
        """``sender`` sends one segment; by default the next bytes of its stream."""
        if seq is None:
            seq = sender.snd_nxt
        if ack is None:
            ack = sender.rcv_nxt if flags & TCP_ACK else 0
        seg = self._segment(sender, seq, ack, flags, payload)
        end = (seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) % SEQ_MOD
        # Advance only when the segment reaches past what was sent (not for replays).
        ahead = (end - sender.snd_nxt) % SEQ_MOD
        if 0 < ahead < 1 << 31:
            sender.snd_nxt = end
        direction = Direction.OUTBOUND if sender is self.client else Direction.INBOUND
        return self.deliver(self.gw.handle_tcp(direction, seg, self.now))

    def seq_at(self, sender: Peer, offset: int) -> int:
        """The sequence number of stream offset ``offset`` of ``sender``'s data."""
        return (sender.isn + 1 + offset) % SEQ_MOD

    def sent(self, sender: Peer) -> int:
        """Data bytes ``sender`` has sent so far (its stream offset)."""
        return (sender.snd_nxt - sender.isn - 1) % SEQ_MOD

    def client_send(self, payload: bytes, **kwargs: int) -> Output:
        return self.send(self.client, payload, **kwargs)

    def server_send(self, payload: bytes, **kwargs: int) -> Output:
        return self.send(self.server, payload, **kwargs)

    def send_pieces(self, sender: Peer, data: bytes, points: Sequence[int]) -> list[Output]:
        """Send ``data`` as consecutive segments cut at ``points``."""
        base = self.sent(sender)
        outs = []
        for offset, piece in cuts(data, points):
            outs.append(self.send(sender, piece, seq=self.seq_at(sender, base + offset)))
        return outs

    # The connection's life.

    def open(self) -> ControlLink:
        """The three-way handshake through the gateway."""
        syn = self.send(self.client, flags=TCP_SYN, ack=0)
        assert sent_tcp(syn), syn
        self.send(self.server, flags=TCP_SYN | TCP_ACK, ack=(self.client.isn + 1) % SEQ_MOD)
        self.send(self.client, flags=TCP_ACK)
        return self

    def start(self) -> ControlLink:
        """Open, then Start-Control-Connection-Request and -Reply."""
        self.open()
        self.client_send(sccrq())
        self.server_send(sccrp())
        return self

    def fin(self, sender: Peer) -> Output:
        return self.send(sender, flags=TCP_FIN | TCP_ACK)

    def rst(self, sender: Peer) -> Output:
        return self.send(sender, flags=TCP_RST | TCP_ACK)

    # Calls.

    def outgoing_call(self, a: int, c: int, serial: int = 1, result: int = 1) -> int:
        """Outgoing-Call-Request ``a`` and the server's reply ``c``; returns ``b``."""
        self.client_send(ocrq(a, serial))
        request = self.server.messages()[-1]
        assert isinstance(request, OutgoingCallRequest)
        b = request.call_id
        self.server_send(ocrp(c, b, result))
        reply = self.client.messages()[-1]
        assert isinstance(reply, OutgoingCallReply)
        assert reply.peer_call_id == a
        return b

    def incoming_call(self, c: int, a: int) -> int:
        """Incoming-Call-Request ``c``, the client's reply ``a``, connected; returns ``b``."""
        self.server_send(icrq(c))
        self.client_send(icrp(a, c))
        reply = self.server.messages()[-1]
        assert isinstance(reply, IncomingCallReply)
        b = reply.call_id
        self.server_send(iccn(b))
        return b

    def call_id_to_server(self) -> int:
        """The Call ID of the last message the server received (one that has it)."""
        value = getattr(self.last_to_server(), "call_id", None)
        assert isinstance(value, int)
        return value

    def last_to_server(self) -> ControlMessage:
        return self.server.messages()[-1]

    def last_to_client(self) -> ControlMessage:
        return self.client.messages()[-1]

    def reset_received(self) -> tuple[bool, bool]:
        """(client got an RST, server got an RST)."""
        return bool(self.client.resets), bool(self.server.resets)

    def resets_acceptable(self) -> bool:
        """Every RST sent lands exactly at the receiver's next expected sequence number."""
        ok = all(r.seq == self.server.rcv_nxt for r in self.server.resets)
        return ok and all(r.seq == self.client.rcv_nxt for r in self.client.resets)


def down_gre(gw: Gateway, public_ip: IPv4Address, call_id: int, now: float,
             server_ip: IPv4Address = SERVER, **kwargs: object) -> Output:
    """The server sends GRE to ``public_ip`` with key ``call_id``; the gateway's answer."""
    return gw.handle_gre(Direction.INBOUND, server_ip, public_ip,
                         gre(call_id, **kwargs), now)  # type: ignore[arg-type]


def up_gre(gw: Gateway, client_ip: IPv4Address, call_id: int, now: float,
           server_ip: IPv4Address = SERVER) -> Output:
    """The client sends GRE to the server with key ``call_id`` (the server's Call ID)."""
    return gw.handle_gre(Direction.OUTBOUND, client_ip, server_ip, gre(call_id), now)

