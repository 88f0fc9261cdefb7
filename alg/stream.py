"""Reassembly of one direction of a PPTP control connection.

TCP cuts the control stream wherever it likes; RFC 2637 frames messages by their Length
field only. :class:`StreamDirection` follows one direction's byte stream by sequence
number, hands every message to a rewrite function as soon as the bytes that decide its
translation are in, and returns the segments to send on. Rewrites keep every length, so
sequence and acknowledgement numbers never move.

Policy (also in the README):

* A segment whose bytes were already forwarded (a retransmission) is answered with the
  bytes as they were forwarded the first time, rewrites included, whatever the
  retransmission carries: every forwarded byte is kept until the receiver acknowledges
  it. A retransmission of bytes already acknowledged is not forwarded (the caller
  repeats the acknowledgement to the sender instead).
* Every field the ALG reads or rewrites lies in a message's first 17 bytes (Call ID and
  Peer's Call ID at 12-15, the result code at 16; RFC 2637 section 2). Of a message, the
  validated 12-byte header may pass at once; bytes 12-16 are held until all of them are
  in, then translated and passed with whatever else has arrived; the rest of the body
  passes as it comes. So no Call ID ever leaves untranslated, and a sender that waits for
  acknowledgements keeps going; only a cut inside bytes 12-16 with the rest sent after
  the sender's retransmission timeout stalls (nobody may acknowledge those bytes).
  Runs are forwarded in segments no longer than the largest the sender has sent.
* The rest of a message is validated when its last byte arrives (reserved fields,
  Length): a failure there resets the connection like any other malformed message.
* Bytes beyond a gap are held (out of order) while everything held for this direction
  stays within ``max_buffer``; a segment that would exceed it is dropped and counted, and
  the sender's retransmission brings it again.
* A message that fails validation (any :class:`~alg.errors.CodecError`) stops the
  stream: :meth:`StreamDirection.feed` raises, nothing more of that message is forwarded,
  and the caller resets the connection (a stream cannot be resynchronised without
  Length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alg.codec import HEADER_LENGTH, parse_header, parse_message
from alg.errors import BufferLimitError

SEQ_MOD = 1 << 32
_HALF = 1 << 31
DECISION_LENGTH = 17
"""Bytes of a message that decide its translation: header, bytes 12-15, result code."""

Rewrite = Callable[[bytes], bytes]


@dataclass
class _Partial:
    """The message being forwarded: its length, the bytes taken so far, its decided prefix."""

    length: int
    original: bytearray
    prefix: bytes | None = None


@dataclass(frozen=True)
class OutSegment:
    """A run of bytes to forward.

    Attributes:
        seq: the TCP sequence number of the first byte, as on the wire.
        payload: the bytes, rewritten where needed.
        retransmission: True when these bytes were forwarded before.
    """

    seq: int
    payload: bytes
    retransmission: bool = False


@dataclass
class FeedResult:
    """What one segment's payload produced.

    Attributes:
        segments: runs to forward, in sequence order.
        dropped_bytes: bytes not kept because of the buffer limit.
        held: bytes held after this segment (an incomplete message or beyond a gap).
        stale: the segment held only bytes the receiver has already acknowledged.
    """

    segments: list[OutSegment]
    dropped_bytes: int = 0
    held: int = 0
    stale: bool = False


class StreamDirection:
    """One direction's byte stream, by stream offset (bytes since the SYN).

    Args:
        isn: the initial sequence number of the sender (from its SYN).
        max_buffer: most bytes held at once (incomplete message plus out-of-order data)
            and most forwarded bytes kept until acknowledged.
    """

    def __init__(self, isn: int, max_buffer: int) -> None:
        self._base = (isn + 1) % SEQ_MOD
        self._max_buffer = max_buffer
        self._forwarded = 0
        self._pending = bytearray()
        self._current: _Partial | None = None
        self._out_of_order: dict[int, bytes] = {}
        self._unacked = bytearray()
        self._acked = 0
        self._max_segment = 0

    @property
    def isn(self) -> int:
        """The sender's initial sequence number."""
        return (self._base - 1) % SEQ_MOD

    @property
    def forwarded(self) -> int:
        """Stream offset up to which bytes have been forwarded."""
        return self._forwarded

    @property
    def held(self) -> int:
        """Bytes held: the incomplete message plus out-of-order data."""
        return len(self._pending) + sum(len(b) for b in self._out_of_order.values())

    @property
    def idle(self) -> bool:
        """True when nothing is held: every byte received has been forwarded."""
        return not self._pending and not self._out_of_order and self._current is None

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

    @property
    def acked(self) -> int:
        """Stream offset up to which the receiver has acknowledged."""
        return self._acked

    def acknowledge(self, ack: int) -> None:
        """Forget forwarded bytes the receiver has acknowledged (``ack`` from the other side)."""
        offset = self.offset_of(ack)
        if self._acked < offset <= self._forwarded:
            del self._unacked[: offset - self._acked]
            self._acked = offset

    def feed(self, seq: int, payload: bytes, rewrite: Rewrite) -> FeedResult:
        """Take one segment's payload; return what to forward.

        Args:
            seq: the segment's sequence number.
            payload: its payload.
            rewrite: called once per message with its first bytes (at least
                ``DECISION_LENGTH``, or the whole message if shorter) padded with zeros to
                its length; returns the same-length rewrite, of which the first bytes are
                used. May raise :class:`~alg.errors.CodecError`, which propagates.

        Raises:
            CodecError: a message is invalid (nothing more of it is forwarded; runs
                before it in this call are lost with the connection).
            BufferLimitError: more forwarded bytes await acknowledgement than allowed.
        """
        result = FeedResult(segments=[])
        if not payload:
            return result
        self._max_segment = max(self._max_segment, len(payload))
        start = self.offset_of(seq)
        end = start + len(payload)
        if start < self._forwarded:
            old_end = min(end, self._forwarded)
            if old_end > self._acked:
                keep_from = max(start, self._acked)
                old = bytes(self._unacked[keep_from - self._acked : old_end - self._acked])
                result.segments.append(OutSegment(self.seq_of(keep_from), old, True))
            else:
                result.stale = end <= self._forwarded
            if end <= self._forwarded:
                result.held = self.held
                return result
            payload = payload[self._forwarded - start :]
            start = self._forwarded
        result.dropped_bytes = self._store(start, payload)
        self._pull_in_order()
        result.segments.extend(self._emit(rewrite))
        result.held = self.held
        return result

    def check_end(self, fin_seq: int) -> bool | None:
        """Decide whether a FIN at ``fin_seq`` may pass.

        Returns:
            True when every byte before it was forwarded, False when bytes before it are
            still missing (drop the FIN; the sender repeats it), None when the stream
            ends inside an incomplete message (a truncated message).
        """
        offset = self.offset_of(fin_seq)
        contiguous = self._forwarded + len(self._pending)
        unfinished = bool(self._pending) or self._current is not None
        if offset == self._forwarded and not unfinished:
            return True
        if offset == contiguous and unfinished:
            return None
        return False

    def _store(self, start: int, payload: bytes) -> int:
        contiguous = self._forwarded + len(self._pending)
        if start <= contiguous:
            self._pending += payload[contiguous - start :]
            return 0
        if start in self._out_of_order and len(self._out_of_order[start]) >= len(payload):
            return 0
        if self.held + len(payload) > self._max_buffer:
            return len(payload)
        self._out_of_order[start] = payload
        return 0

    def _take(self, msg: _Partial, count: int) -> bytes:
        """Move up to ``count`` pending bytes into ``msg``; return them."""
        taken = bytes(self._pending[: max(0, count)])
        del self._pending[: len(taken)]
        msg.original += taken
        return taken

    def _pull_in_order(self) -> None:
        while self._out_of_order:
            contiguous = self._forwarded + len(self._pending)
            ready = [o for o in self._out_of_order if o <= contiguous]
            if not ready:
                return
            for offset in sorted(ready):
                data = self._out_of_order.pop(offset)
                contiguous = self._forwarded + len(self._pending)
                if offset + len(data) > contiguous:
                    self._pending += data[contiguous - offset :]

    def _emit(self, rewrite: Rewrite) -> list[OutSegment]:
        out = bytearray()
        while self._pending:
            msg = self._current
            if msg is None:
                if len(self._pending) < HEADER_LENGTH:
                    break
                length, _ = parse_header(bytes(self._pending[:HEADER_LENGTH]))
                msg = self._current = _Partial(length, bytearray())
            need = min(DECISION_LENGTH, msg.length)
            if msg.prefix is None:
                if len(msg.original) + len(self._pending) < need:
                    out += self._take(msg, HEADER_LENGTH - len(msg.original))
                    break
                head = bytes(msg.original) + bytes(self._pending[: need - len(msg.original)])
                rewritten = rewrite(head + bytes(msg.length - need))
                if len(rewritten) != msg.length:
                    raise AssertionError("rewrite changed a message's length")
                msg.prefix = rewritten[:need]
            start = len(msg.original)
            chunk = bytearray(self._take(msg, msg.length - start))
            patched = msg.prefix[start : start + len(chunk)]
            chunk[: len(patched)] = patched
            out += chunk
            if len(msg.original) < msg.length:
                break
            parse_message(bytes(msg.original))
            self._current = None
        if not out:
            return []
        if len(self._unacked) + len(out) > self._max_buffer:
            raise BufferLimitError(
                f"more than {self._max_buffer} forwarded bytes await acknowledgement"
            )
        self._unacked += out
        first = self._forwarded
        self._forwarded += len(out)
        size = max(self._max_segment, HEADER_LENGTH)
        return [
            OutSegment(self.seq_of(first + i), bytes(out[i : i + size]))
            for i in range(0, len(out), size)
        ]
