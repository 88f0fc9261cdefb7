"""The TCP relay of one translated connection, protocol-neutral and sans-IO.

The gateway terminates nothing: it passes each segment on with its addresses and ports
translated, but it reads the payload in order (an application layer, here the PPTP
framer, may rewrite bytes in place without changing their number), so it follows each
direction's byte stream by sequence number. A :class:`TcpRelay` takes a segment in two
steps: :meth:`TcpRelay.receive` checks it and returns the new in-order bytes for the
application layer; :meth:`TcpRelay.forward` takes what that layer releases and returns
the segments to send.

Policy (also in docs/design.md):

* A segment far from what its sender's stream has reached is dropped whole, and an RST
  only passes at or just beyond the sequence number its receiver expects (RFC 5961
  section 3), so a blind guess rarely resets the connection or moves the
  acknowledgement the relay relies on.
* Bytes already forwarded and not yet acknowledged are kept: a retransmission is
  answered with them as first forwarded, rewrites included, whatever it carries. A
  retransmission of acknowledged bytes gets the receiver's acknowledgement repeated.
* Bytes beyond a gap are held while the direction holds at most ``max_buffer`` bytes in
  at most :data:`~alg.stream.MAX_GAP_PIECES` pieces; more is dropped for the sender to
  retransmit. More than ``max_buffer`` forwarded bytes awaiting acknowledgement stop the
  stream (:class:`~alg.errors.BufferLimitError`). Each direction's bytes are an
  ``alg.stream`` :class:`~alg.stream.StreamDirection`.
* The server's SYN-ACK must acknowledge the client's SYN; another is dropped and the
  real one still opens the connection.
* Data before the handshake is complete (on a SYN, or before a valid SYN-ACK) is not
  forwarded and not read: the application layer only ever sees an open connection; the
  peer's acknowledgement makes the sender repeat it.
* An RST passes only at exactly the sequence number its receiver expects (what the relay
  forwarded, or what it received, or what the receiver acknowledged). One elsewhere in
  the window is answered with a challenge ACK to its sender (RFC 5961 section 3.2), which
  a peer that really lost the connection answers with an exact RST.
* After a controller restart (:meth:`TcpRelay.restored`) the relay knows each
  direction's initial sequence number and where it stood at the last record, not the
  bytes in flight. Each direction takes its place again from its receiver's
  acknowledgement, carried by a segment whose own sequence number is plausible, and
  lying at most ``max_buffer`` bytes behind (bytes forwarded but lost at the restart:
  the sender repeats them and they are read again) or :data:`RESYNC_SPAN` bytes beyond
  the recorded place. Until then the direction's data, FIN and RST are dropped and its
  receiver is sent a probe: an ACK with a sequence number behind its window, which a TCP
  answers with its acknowledgement (RFC 793 section 3.9). Pure ACKs pass. An RST is not
  passed (its place cannot be checked): a peer that really lost the connection answers
  the next segment with an exact one. If the place is inside a message (the restart cut
  one), the application layer finds no valid message header there and the connection
  is reset: no rewrite is ever guessed.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from alg.events import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Direction, TcpSegment
from alg.nat import NatSession
from alg.snapshot import ConnectionRecord
from alg.stream import SEQ_MOD, Arrival, StreamDirection

WINDOW = 65535
RESYNC_SPAN = 1 << 20
"""How far beyond its recorded place a restored direction's receiver may have
acknowledged (a control stream between two records carries a few echo messages)."""


class Verdict(enum.Enum):
    """What :meth:`TcpRelay.receive` made of a segment."""

    OUT_OF_WINDOW = "segment outside the window"
    """Dropped whole."""
    RESET = "TCP RST"
    """A valid RST: it is passed on and the connection is over."""
    CHALLENGED = "RST not at the expected sequence number"
    """An RST in the window but not exact: dropped, a challenge ACK goes to its sender."""
    HANDSHAKE = "handshake"
    """SYN, SYN-ACK or a segment before the SYN-ACK, or a pure ACK while resynchronising:
    passed on without payload."""
    RESYNC = "resynchronising after a restart"
    """Data or FIN of a direction whose place is not known again yet: dropped, and a
    probe goes to its receiver (``sends``, in the segment's direction)."""
    DATA = "data"
    """The payload went to the stream: call :meth:`TcpRelay.forward`."""


@dataclass(slots=True)
class Received:
    """The outcome of :meth:`TcpRelay.receive`.

    Attributes:
        sends: segments to send now (RESET and HANDSHAKE).
        arrival: for DATA, what the payload brought.
    """

    verdict: Verdict
    sends: list[TcpSegment] = field(default_factory=list)
    arrival: Arrival = field(default_factory=Arrival)


@dataclass(slots=True)
class Forwarded:
    """The outcome of :meth:`TcpRelay.forward`.

    Attributes:
        sends: segments to send ``direction``, in order.
        repeat_ack: the acknowledgement to repeat the other way, sent before ``sends``.
        retransmissions: how many of them repeat forwarded bytes.
        half_closed: the segment's FIN passed: that direction is closed.
        truncated: the segment's FIN cut a message the application layer holds.
        drop_reason: why nothing was sent, when nothing was.
    """

    sends: list[TcpSegment] = field(default_factory=list)
    repeat_ack: TcpSegment | None = None
    retransmissions: int = 0
    half_closed: bool = False
    truncated: bool = False
    drop_reason: str | None = None


class TcpRelay:
    """Both directions of one relayed connection.

    Args:
        session: the NAT session whose endpoints translate the connection's segments.
        syn: the client's SYN (its sequence number starts the outbound stream).
        max_buffer: see :class:`StreamDirection`.
        min_segment: see :class:`StreamDirection`.
    """

    def __init__(
        self, session: NatSession, syn: TcpSegment, max_buffer: int, min_segment: int = 1
    ) -> None:
        self.session = session
        self._max_buffer = max_buffer
        self._min_segment = min_segment
        self.outbound = StreamDirection(syn.seq, max_buffer, min_segment)
        self.inbound: StreamDirection | None = None
        self.fin_sent: dict[Direction, bool] = {Direction.OUTBOUND: False, Direction.INBOUND: False}
        self.closing_since: float | None = None
        self._last_ack: dict[Direction, int] = {}
        self._last_window: dict[Direction, int] = {}

    @classmethod
    def restored(
        cls,
        session: NatSession,
        record: ConnectionRecord,
        max_buffer: int,
        min_segment: int = 1,
    ) -> TcpRelay:
        """The relay of a connection a store kept, to resynchronise (see the module)."""
        syn = TcpSegment(
            session.inside_ip, session.inside_port, session.remote_ip, session.remote_port,
            seq=record.client_isn % SEQ_MOD, ack=0, flags=TCP_SYN, window=0,
        )
        relay = cls(session, syn, max_buffer, min_segment)
        if record.server_isn is not None:
            relay.inbound = StreamDirection(record.server_isn % SEQ_MOD, max_buffer, min_segment)
            relay.outbound.resume(record.outbound_seq)
            inbound_seq = record.inbound_seq
            relay.inbound.resume(
                relay.inbound.seq_of(0) if inbound_seq is None else inbound_seq
            )
        return relay

    def record(self, session_id: int) -> ConnectionRecord:
        """What the store keeps of the connection: the initial sequence numbers and
        where each direction stands."""
        inbound = self.inbound
        return ConnectionRecord(
            session_id, self.outbound.isn, inbound.isn if inbound is not None else None,
            self.outbound.seq_of(self.outbound.forwarded),
            inbound.seq_of(inbound.forwarded) if inbound is not None else None,
        )

    def is_new_syn(self, seg: TcpSegment) -> bool:
        """A SYN that starts a new connection on the 4-tuple (not a retransmitted SYN)."""
        if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return False
        return seg.seq != self.outbound.isn

    def first_syn(self, seg: TcpSegment) -> TcpSegment:
        """The client's SYN as it leaves, without any data it carried."""
        return self.translate(Direction.OUTBOUND, seg, payload=b"")

    def stream(self, direction: Direction) -> StreamDirection | None:
        """The stream of the bytes travelling ``direction`` (inbound: None before SYN-ACK)."""
        return self.outbound if direction is Direction.OUTBOUND else self.inbound

    def receive(self, direction: Direction, seg: TcpSegment) -> Received:
        """Check a segment and take its payload into its stream."""
        if (
            direction is Direction.INBOUND and self.inbound is None
            and seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK
        ):
            if seg.ack != self.outbound.seq_of(0):
                return Received(Verdict.OUT_OF_WINDOW)
            self.inbound = StreamDirection(seg.seq, self._max_buffer, self._min_segment)
        stream = self.stream(direction)
        other = self.stream(_back(direction))
        if (stream is not None and not stream.synced) or (other is not None and not other.synced):
            early = self._resync(direction, seg, stream, other)
            if early is not None:
                return early
        if stream is not None and not self._in_window(stream, seg):
            return Received(Verdict.OUT_OF_WINDOW)
        if stream is None and seg.flags & TCP_RST and not (
            seg.flags & TCP_ACK and seg.ack == self.outbound.seq_of(0)
        ):
            return Received(Verdict.OUT_OF_WINDOW)
        if (
            seg.flags & TCP_RST and stream is not None and other is not None
            and not self._exact_reset(direction, stream, seg)
        ):
            return Received(Verdict.CHALLENGED, [self._challenge(direction, stream, other)])
        self._last_window[direction] = seg.window
        if seg.flags & TCP_RST:
            return Received(Verdict.RESET, [self.translate(direction, seg, payload=b"")])
        if seg.flags & TCP_SYN or stream is None or self.inbound is None:
            return Received(Verdict.HANDSHAKE, [self.translate(direction, seg, payload=b"")])
        if seg.flags & TCP_ACK and other is not None:
            other.acknowledge(seg.ack)
        return Received(Verdict.DATA, arrival=stream.receive(seg.seq, seg.payload))

    def forward(
        self,
        direction: Direction,
        seg: TcpSegment,
        arrival: Arrival,
        released: bytes,
        layer_idle: bool,
        now: float,
    ) -> Forwarded:
        """The segments that carry on what one DATA segment brought.

        Args:
            seg: the segment :meth:`receive` took.
            arrival: what :meth:`receive` returned for it.
            released: the bytes the application layer released (rewritten).
            layer_idle: the application layer holds nothing, at a message boundary.
            now: the time (a connection closing in both directions starts lingering).

        Raises:
            BufferLimitError: too many forwarded bytes await acknowledgement.
        """
        stream = self.stream(direction)
        other = self.stream(_back(direction))
        assert stream is not None
        runs = [*arrival.replays, *stream.forward(released)]
        data_flags = seg.flags & (TCP_ACK | TCP_PSH)
        sends = [
            self.translate(direction, seg, seq=r.seq, flags=data_flags, payload=r.payload)
            for r in runs
        ]
        result = Forwarded(retransmissions=sum(1 for r in runs if r.retransmission))
        if seg.flags & TCP_FIN:
            fin_seq = (seg.seq + len(seg.payload)) % SEQ_MOD
            verdict = stream.end_verdict(fin_seq, layer_idle)
            if verdict is None:
                result.sends, result.truncated = sends, True
                return result
            if verdict:
                last = sends[-1] if sends else None
                if last is not None and (last.seq + len(last.payload)) % SEQ_MOD == fin_seq:
                    sends[-1] = dataclasses.replace(last, flags=last.flags | TCP_FIN)
                else:
                    sends.append(self.translate(
                        direction, seg, seq=fin_seq, flags=data_flags | TCP_FIN, payload=b""
                    ))
                self.fin_sent[direction] = result.half_closed = True
                if all(self.fin_sent.values()) and self.closing_since is None:
                    self.closing_since = now
        if not sends and not seg.payload and seg.flags & (TCP_ACK | TCP_FIN) == TCP_ACK:
            sends.append(self.translate(direction, seg))
        elif not sends and seg.flags & TCP_ACK and self._last_ack.get(direction) != seg.ack:
            # A FIN this side sent took one sequence number after the last byte: an ACK
            # after it carries forwarded + 1, or the peer drops it as out of window.
            sends.append(self.translate(
                direction, seg, seq=self._next_seq(direction), flags=TCP_ACK, payload=b""
            ))
        if arrival.stale and other is not None:
            result.repeat_ack = self._repeat_ack(direction, stream, other)
        if sends:
            self._last_ack[direction] = seg.ack
        else:
            result.drop_reason = (
                "retransmission of acknowledged bytes" if arrival.stale else "control bytes held"
            )
        result.sends = sends
        return result

    def reset_segments(self) -> list[tuple[Direction, TcpSegment]]:
        """RST to both ends, each at the sequence number it expects next."""
        s = self.session
        rsts = [(Direction.OUTBOUND, TcpSegment(
            s.public_ip, s.public_port, s.remote_ip, s.remote_port,
            seq=self._next_seq(Direction.OUTBOUND), ack=0, flags=TCP_RST, window=0,
        ))]
        if self.inbound is not None:
            rsts.append((Direction.INBOUND, TcpSegment(
                s.remote_ip, s.remote_port, s.inside_ip, s.inside_port,
                seq=self._next_seq(Direction.INBOUND), ack=0, flags=TCP_RST, window=0,
            )))
        return rsts

    def translate(
        self,
        direction: Direction,
        seg: TcpSegment,
        *,
        seq: int | None = None,
        flags: int | None = None,
        payload: bytes | None = None,
    ) -> TcpSegment:
        """``seg`` with the endpoints it has on the far side of the gateway."""
        s = self.session
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

    def _resync(
        self,
        direction: Direction,
        seg: TcpSegment,
        stream: StreamDirection | None,
        other: StreamDirection | None,
    ) -> Received | None:
        """A segment while a direction's place is not known again (see the module);
        None to take it the usual way (its direction is synchronised).

        The segment's own sequence number is checked first, so that only a plausible
        segment's acknowledgement places the other direction.
        """
        if seg.flags & TCP_SYN:
            return Received(Verdict.OUT_OF_WINDOW)
        if stream is not None:
            if stream.synced:
                plausible = self._in_window(stream, seg)
            else:
                distance = stream.offset_of(seg.seq) - stream.forwarded
                plausible = -self._max_buffer <= distance <= RESYNC_SPAN
            if not plausible:
                return Received(Verdict.OUT_OF_WINDOW)
        if seg.flags & TCP_ACK and not seg.flags & TCP_RST and other is not None and (
            not other.synced
        ):
            offset = other.offset_of(seg.ack)
            if -self._max_buffer <= offset - other.forwarded <= RESYNC_SPAN:
                other.adopt(offset)
        if stream is None or stream.synced:
            return None
        if seg.payload or seg.flags & (TCP_FIN | TCP_RST):
            template = TcpSegment(
                self.session.inside_ip, 0, self.session.remote_ip, 0,
                seq=stream.seq_of(stream.forwarded - self._max_buffer - 1),
                ack=other.seq_of(other.forwarded) if other is not None else 0,
                flags=TCP_ACK, window=self._last_window.get(direction, seg.window),
            )
            return Received(Verdict.RESYNC, [self.translate(direction, template)])
        return Received(Verdict.HANDSHAKE, [self.translate(direction, seg, payload=b"")])

    def _next_seq(self, direction: Direction) -> int:
        stream = self.stream(direction)
        assert stream is not None
        return stream.seq_of(stream.forwarded + int(self.fin_sent[direction]))

    def _in_window(self, stream: StreamDirection, seg: TcpSegment) -> bool:
        """Whether a segment's sequence number is plausible for its sender (RFC 5961).

        An RST must fall between what the receiver acknowledged and a window beyond what
        was forwarded; other segments may also repeat up to a window of older bytes.
        """
        window = max(WINDOW, self._max_buffer)
        distance = stream.offset_of(seg.seq) - stream.forwarded
        low = stream.acked - stream.forwarded if seg.flags & TCP_RST else -window
        return low <= distance <= stream.held + window

    def _exact_reset(self, direction: Direction, stream: StreamDirection, seg: TcpSegment
                     ) -> bool:
        fin = int(self.fin_sent[direction])
        offset = stream.offset_of(seg.seq)
        return offset in (stream.forwarded + fin, stream.received + fin, stream.acked)

    def _challenge(
        self, direction: Direction, stream: StreamDirection, other: StreamDirection
    ) -> TcpSegment:
        """An ACK to the sender of an inexact RST, as from its peer: the sequence number
        its peer expects next from it, so that a real RST can answer exactly."""
        back = _back(direction)
        template = TcpSegment(
            self.session.inside_ip, 0, self.session.remote_ip, 0,
            seq=other.seq_of(other.forwarded + int(self.fin_sent[back])),
            ack=stream.seq_of(stream.forwarded + int(self.fin_sent[direction])),
            flags=TCP_ACK, window=self._last_window.get(back, 0),
        )
        return self.translate(back, template)

    def _repeat_ack(
        self, direction: Direction, stream: StreamDirection, other: StreamDirection
    ) -> TcpSegment:
        """The receiver's acknowledgement again, to a sender retransmitting acked bytes.

        The relay saw the receiver acknowledge those bytes and forgot them, so the ACK
        was lost after it; repeating it stops the retransmissions.
        """
        back = _back(direction)
        template = TcpSegment(
            self.session.inside_ip, 0, self.session.remote_ip, 0,
            seq=other.seq_of(other.forwarded + int(self.fin_sent[back])),
            ack=stream.seq_of(stream.acked), flags=TCP_ACK,
            window=self._last_window.get(back, 0),
        )
        return self.translate(back, template)


def _back(direction: Direction) -> Direction:
    return Direction.INBOUND if direction is Direction.OUTBOUND else Direction.OUTBOUND
