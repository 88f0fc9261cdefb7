"""One direction's byte stream of a relayed TCP connection, by stream offset.

:class:`StreamDirection` follows what its sender sent, in order, by sequence number: new
in-order bytes go to the application layer (:attr:`Arrival.data`), bytes beyond a gap are
held (at most ``max_buffer`` bytes in at most :data:`MAX_GAP_PIECES` pieces; more is
dropped for the sender to retransmit), and bytes forwarded are kept until the receiver
acknowledges them, so that a retransmission is answered with them as first forwarded
(:attr:`Arrival.replays`). ``alg.relay`` holds one per direction.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from alg.errors import BufferLimitError

SEQ_MOD = 1 << 32
_HALF = 1 << 31
MAX_GAP_PIECES = 64
"""Most pieces held beyond gaps per direction: a segment that would add one more is
dropped (for its sender to retransmit), so the cost of a segment does not grow with how
finely a peer cuts its stream."""


@dataclass(frozen=True, slots=True)
class OutSegment:
    """A run of bytes to forward.

    Attributes:
        seq: the sequence number of the first byte, as on the wire.
        payload: the bytes, rewritten where needed.
        retransmission: True when these bytes were forwarded before.
    """

    seq: int
    payload: bytes
    retransmission: bool = False


@dataclass(slots=True)
class Arrival:
    """What one segment's payload brought to its direction's stream.

    Attributes:
        replays: forwarded bytes the segment repeated, to send again as first sent.
        data: new in-order bytes for the application layer.
        dropped_bytes: bytes not kept because of the buffer limit.
        stale: the segment held only bytes the receiver has already acknowledged.
    """

    replays: list[OutSegment] = field(default_factory=list)
    data: bytes = b""
    dropped_bytes: int = 0
    stale: bool = False


class StreamDirection:
    """One direction's byte stream, by stream offset (bytes since the SYN).

    Offsets: ``acked <= forwarded <= received``; bytes between ``forwarded`` and
    ``received`` are with the application layer; bytes beyond ``received`` wait for a
    gap to fill.

    Args:
        isn: the sender's initial sequence number (from its SYN).
        max_buffer: most bytes held at once (with the application layer or beyond a gap)
            and most forwarded bytes kept until acknowledged.
        min_segment: the smallest segment size the relay cuts runs into.
    """

    def __init__(self, isn: int, max_buffer: int, min_segment: int = 1) -> None:
        self._base = (isn + 1) % SEQ_MOD
        self._max_buffer = max_buffer
        self._min_segment = min_segment
        self._forwarded = 0
        self._received = 0
        self._gap_starts: list[int] = []
        self._gap_data: dict[int, bytes] = {}
        self._gap_bytes = 0
        self._unacked = bytearray()
        self._acked = 0
        self._max_segment = 0
        self.synced = True

    def resume(self, seq: int) -> None:
        """Stand at sequence number ``seq`` (a recorded place, after a restart), not
        synchronised until :meth:`adopt`."""
        self._forwarded = self._received = self._acked = (seq - self._base) % SEQ_MOD
        self.synced = False

    def adopt(self, offset: int) -> None:
        """Stand at stream offset ``offset``, what the receiver has acknowledged, with
        nothing held: the direction is synchronised again."""
        self._forwarded = self._received = self._acked = offset
        self._unacked.clear()
        self._gap_starts.clear()
        self._gap_data.clear()
        self._gap_bytes = 0
        self.synced = True

    @property
    def isn(self) -> int:
        """The sender's initial sequence number."""
        return (self._base - 1) % SEQ_MOD

    @property
    def forwarded(self) -> int:
        """Stream offset up to which bytes have been forwarded."""
        return self._forwarded

    @property
    def received(self) -> int:
        """Stream offset up to which bytes have arrived in order."""
        return self._received

    @property
    def acked(self) -> int:
        """Stream offset up to which the receiver has acknowledged."""
        return self._acked

    @property
    def held(self) -> int:
        """Bytes received and not forwarded: in order, and beyond a gap."""
        return self._received - self._forwarded + self._gap_bytes

    def seq_of(self, offset: int) -> int:
        """The wire sequence number of stream offset ``offset``."""
        return (self._base + offset) % SEQ_MOD

    def offset_of(self, seq: int) -> int:
        """The stream offset of wire sequence number ``seq``, nearest to what was seen."""
        reference = self._forwarded
        delta = (seq - self.seq_of(reference)) % SEQ_MOD
        if delta >= _HALF:
            delta -= SEQ_MOD
        return reference + delta

    def acknowledge(self, ack: int) -> None:
        """Forget forwarded bytes the receiver acknowledged (``ack`` from the other side)."""
        offset = self.offset_of(ack)
        if self._acked < offset <= self._forwarded:
            del self._unacked[: offset - self._acked]
            self._acked = offset

    def receive(self, seq: int, payload: bytes) -> Arrival:
        """Take one segment's payload: replays of forwarded bytes, new in-order bytes."""
        arrival = Arrival()
        if not payload:
            return arrival
        self._max_segment = max(self._max_segment, len(payload))
        start = self.offset_of(seq)
        end = start + len(payload)
        if start < self._forwarded:
            old_end = min(end, self._forwarded)
            if old_end > self._acked:
                keep_from = max(start, self._acked)
                old = bytes(self._unacked[keep_from - self._acked : old_end - self._acked])
                arrival.replays.append(OutSegment(self.seq_of(keep_from), old, True))
            else:
                arrival.stale = end <= self._forwarded
            if end <= self._forwarded:
                return arrival
            payload = payload[self._forwarded - start :]
            start = self._forwarded
        if start <= self._received:
            fresh = bytearray(payload[self._received - start :])
        else:
            arrival.dropped_bytes = self._hold(start, payload)
            return arrival
        self._received += len(fresh)
        while self._gap_starts and self._gap_starts[0] <= self._received:
            offset = self._gap_starts.pop(0)
            data = self._gap_data.pop(offset)
            self._gap_bytes -= len(data)
            if offset + len(data) > self._received:
                fresh += data[self._received - offset :]
                self._received = offset + len(data)
        arrival.data = bytes(fresh)
        return arrival

    def forward(self, data: bytes) -> list[OutSegment]:
        """Bytes the application layer released: keep them until acknowledged, cut them.

        Raises:
            BufferLimitError: more forwarded bytes would await acknowledgement than
                allowed.
        """
        if not data:
            return []
        if len(self._unacked) + len(data) > self._max_buffer:
            raise BufferLimitError(
                f"more than {self._max_buffer} forwarded bytes await acknowledgement"
            )
        self._unacked += data
        first = self._forwarded
        self._forwarded += len(data)
        size = max(self._max_segment, self._min_segment)
        return [
            OutSegment(self.seq_of(first + i), bytes(data[i : i + size]))
            for i in range(0, len(data), size)
        ]

    def end_verdict(self, fin_seq: int, layer_idle: bool) -> bool | None:
        """Whether a FIN at ``fin_seq`` may pass.

        Args:
            layer_idle: the application layer is at a message boundary, holding nothing.

        Returns:
            True when every byte before it was forwarded, False when bytes before it are
            missing (drop the FIN; the sender repeats it), None when the stream ends in
            the middle of what the application layer holds (a truncated message).
        """
        offset = self.offset_of(fin_seq)
        if offset == self._forwarded and layer_idle:
            return True
        if offset == self._received and not layer_idle:
            return None
        return False

    def _hold(self, start: int, payload: bytes) -> int:
        known = self._gap_data.get(start)
        if known is not None and len(known) >= len(payload):
            return 0
        if self.held + len(payload) - (len(known) if known else 0) > self._max_buffer:
            return len(payload)
        if known is None and len(self._gap_starts) >= MAX_GAP_PIECES:
            return len(payload)
        if known is None:
            bisect.insort(self._gap_starts, start)
        else:
            self._gap_bytes -= len(known)
        self._gap_data[start] = payload
        self._gap_bytes += len(payload)
        return 0
