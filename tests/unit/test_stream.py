"""Unit and property tests of one direction's reassembly: ``alg.stream.StreamDirection``
(sequence space, gaps, retransmissions) and ``alg.framer.PptpFramer`` (message boundaries,
decision bytes) together, composed as ``alg.control`` composes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alg.codec import HEADER_LENGTH, OutgoingCallRequest, parse_header, parse_message, replace
from alg.errors import (
    BadMagicCookieError,
    BufferLimitError,
    CodecError,
    ReservedFieldError,
    TruncatedError,
)
from alg.framer import DECISION_LENGTH, Decide, PptpFramer
from alg.stream import SEQ_MOD, OutSegment
from alg.stream import StreamDirection as Relayed
from tests.unit.pptp_flows import (
    ccrq,
    cuts,
    echo_reply,
    echo_request,
    ocrq,
    sccrq,
    sli,
    stopccrq,
)

ISN = 5000
BASE = ISN + 1


@dataclass
class FeedResult:
    """What one segment's payload produced (see :meth:`StreamDirection.feed`)."""

    segments: list[OutSegment]
    dropped_bytes: int = 0
    held: int = 0
    stale: bool = False


class StreamDirection:
    """One direction's relay stream and framer, fed a segment at a time.

    ``rewrite`` answers the framer's decisions, as ``alg.pptp.CallControl`` does.
    """

    def __init__(self, isn: int, max_buffer: int) -> None:
        self.relayed = Relayed(isn, max_buffer, HEADER_LENGTH)
        self.framer = PptpFramer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.relayed, name)

    @property
    def held(self) -> int:
        return self.relayed.held

    @property
    def idle(self) -> bool:
        return self.relayed.held == 0 and self.framer.idle

    def feed(self, seq: int, payload: bytes, rewrite: Callable[[bytes], bytes]) -> FeedResult:
        arrival = self.relayed.receive(seq, payload)
        self.framer.feed(arrival.data)
        released = bytearray()
        while (event := self.framer.next_event()) is not None:
            if isinstance(event, Decide):
                self.framer.decided(rewrite(event.head))
            else:
                released += event.data
        segments = [*arrival.replays, *self.relayed.forward(bytes(released))]
        return FeedResult(segments, arrival.dropped_bytes, self.relayed.held, arrival.stale)

    def check_end(self, fin_seq: int) -> bool | None:
        return self.relayed.end_verdict(fin_seq, self.framer.idle)


class Recorder:
    """A rewrite that turns every Outgoing-Call-Request's Call ID into ID + 1000."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, message: bytes) -> bytes:
        self.seen.append(message)
        parsed = parse_message(message)
        if isinstance(parsed, OutgoingCallRequest):
            return replace(parsed, call_id=(parsed.call_id + 1000) % 65536).encode()
        return message


def padded(message: bytes) -> bytes:
    """What the rewrite is shown of the whole ``message``: its decision bytes, then zeros."""
    need = min(DECISION_LENGTH, len(message))
    return message[:need] + bytes(len(message) - need)


def policy_output(data: bytes, received: int) -> bytes:
    """What may have left of the valid stream ``data`` once its first ``received`` bytes are in.

    Whole messages, rewritten as :class:`Recorder` does; of the next message nothing before
    its 12-byte header is in, the header alone until its decision bytes (17, or all of a
    shorter message) are in, then everything that has arrived, with the decided prefix.
    """
    out = bytearray()
    offset = 0
    while received - offset >= HEADER_LENGTH:
        length = int.from_bytes(data[offset : offset + 2], "big")
        need = min(DECISION_LENGTH, length)
        got = min(received - offset, length)
        if got < need:
            out += data[offset : offset + HEADER_LENGTH]
            break
        prefix = Recorder()(data[offset : offset + need] + bytes(length - need))[:need]
        out += (prefix + data[offset + need : offset + length])[:got]
        offset += length
    return bytes(out)


def decided(data: bytes, received: int) -> list[bytes]:
    """What the rewrite must have been shown once the first ``received`` bytes are in."""
    out = []
    offset = 0
    while received - offset >= HEADER_LENGTH:
        length = int.from_bytes(data[offset : offset + 2], "big")
        need = min(DECISION_LENGTH, length)
        if received - offset < need:
            break
        out.append(data[offset : offset + need] + bytes(length - need))
        offset += length
    return out


def invalid_by(data: bytes, received: int) -> bool:
    """True when the first ``received`` bytes of ``data`` show an invalid message.

    A bad header once its 12 bytes are in, bad decision bytes (as the rewrite is shown
    them) once they are in, a bad whole message once its last byte is in.
    """
    offset = 0
    try:
        while received - offset >= HEADER_LENGTH:
            length, _ = parse_header(data[offset : offset + HEADER_LENGTH])
            need = min(DECISION_LENGTH, length)
            if received - offset < need:
                return False
            parse_message(data[offset : offset + need] + bytes(length - need))
            if received - offset < length:
                return False
            parse_message(data[offset : offset + length])
            offset += length
    except CodecError:
        return True
    return False


def rewritten(data: bytes) -> bytes:
    """What :class:`Recorder` makes of a whole stream."""
    rec = Recorder()
    out = StreamDirection(0, 1 << 20).feed(1, data, rec)
    return b"".join(s.payload for s in out.segments)


def joined(segments: list[OutSegment]) -> bytes:
    return b"".join(s.payload for s in segments)


def contiguous(segments: list[OutSegment], start_seq: int) -> bool:
    seq = start_seq
    for s in segments:
        if s.seq != seq:
            return False
        seq = (seq + len(s.payload)) % SEQ_MOD
    return True


def test_empty_payload_does_nothing() -> None:
    s = StreamDirection(ISN, 4096)
    result = s.feed(BASE, b"", Recorder())
    assert result.segments == [] and result.held == 0 and result.dropped_bytes == 0
    assert s.idle and s.forwarded == 0


def test_whole_message_is_rewritten_and_forwarded_at_its_sequence() -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    result = s.feed(BASE, ocrq(5), rec)
    assert result.segments == [OutSegment(BASE, ocrq(1005))]
    # Decided once, from the first 17 bytes; the rest of what the rewrite saw is zeros.
    assert rec.seen == [ocrq(5)[:17] + bytes(168 - 17)]
    assert s.forwarded == 168 and s.idle and result.held == 0


def test_unchanged_message_passes_as_is() -> None:
    s = StreamDirection(ISN, 4096)
    result = s.feed(BASE, sccrq(), Recorder())
    assert joined(result.segments) == sccrq()


def test_several_messages_in_one_segment() -> None:
    data = sccrq() + ocrq(1) + echo_request() + ocrq(2) + stopccrq()
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    result = s.feed(BASE, data, rec)
    expected = sccrq() + ocrq(1001) + echo_request() + ocrq(1002) + stopccrq()
    assert joined(result.segments) == expected
    assert len(result.segments) == 1
    # Each message decided once, in order; the 16-byte ones are shown whole.
    assert rec.seen == [
        sccrq()[:17] + bytes(156 - 17), ocrq(1)[:17] + bytes(151), echo_request(),
        ocrq(2)[:17] + bytes(151), stopccrq(),
    ]


def test_segment_ending_inside_a_message_forwards_complete_ones_and_the_decided_part() -> None:
    data = echo_request() + ocrq(9)
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    result = s.feed(BASE, data[:100], rec)
    # The OCRQ's decision bytes are in: its first 84 bytes go on, Call ID translated.
    assert result.segments == [OutSegment(BASE, echo_request() + ocrq(1009)[:84])]
    assert result.held == 0 and s.held == 0 and not s.idle  # the message is unfinished
    assert rec.seen == [echo_request(), ocrq(9)[:17] + bytes(151)]
    result = s.feed(BASE + 100, data[100:], rec)
    assert result.segments == [OutSegment(BASE + 100, ocrq(1009)[84:])]
    assert len(rec.seen) == 2 and s.idle  # not decided again


def test_segment_ending_inside_the_decision_bytes_forwards_the_header_only() -> None:
    data = echo_request() + ocrq(9)
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    result = s.feed(BASE, data[:30], rec)  # the OCRQ's bytes 0-13: Call ID in, byte 16 not
    assert result.segments == [OutSegment(BASE, echo_request() + ocrq(9)[:12])]
    assert result.held == 2 and s.held == 2 and not s.idle
    assert rec.seen == [echo_request()]
    result = s.feed(BASE + 30, data[30:100], rec)
    # Bytes 12-83 leave, cut to the sender's largest segment (70 bytes).
    assert result.segments == [
        OutSegment(BASE + 28, ocrq(1009)[12:82]), OutSegment(BASE + 98, ocrq(1009)[82:84])
    ]
    assert result.held == 0 and rec.seen == [echo_request(), ocrq(9)[:17] + bytes(151)]
    result = s.feed(BASE + 100, data[100:], rec)
    assert result.segments == [OutSegment(BASE + 100, ocrq(1009)[84:])]
    assert len(rec.seen) == 2 and s.idle


@pytest.mark.parametrize("cut", range(1, 16))
def test_message_shorter_than_the_decision_bytes_is_decided_whole(cut: int) -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    first = s.feed(BASE, echo_request()[:cut], rec)
    header = [OutSegment(BASE, echo_request()[:12])] if cut >= HEADER_LENGTH else []
    assert first.segments == header and rec.seen == []
    second = s.feed(BASE + cut, echo_request()[cut:], rec)
    assert joined(first.segments + second.segments) == echo_request()
    assert rec.seen == [echo_request()] and s.idle  # shown whole: no padding


@pytest.mark.parametrize("cut", range(1, 168))
def test_message_split_at_every_point_leaves_no_untranslated_call_id(cut: int) -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    shown = ocrq(77)[:17] + bytes(151)
    first = s.feed(BASE, ocrq(77)[:cut], rec)
    if cut < HEADER_LENGTH:  # no header yet: nothing leaves
        assert first.segments == [] and first.held == cut
    elif cut < DECISION_LENGTH:  # the header alone; bytes 12-16 held, nothing decided
        assert first.segments == [OutSegment(BASE, ocrq(77)[:12])]
        assert first.held == cut - 12
    else:  # decided: all that arrived leaves, with the translated Call ID
        assert first.segments == [OutSegment(BASE, ocrq(1077)[:cut])]
        assert first.held == 0
    assert rec.seen == ([shown] if cut >= DECISION_LENGTH else [])
    assert s.forwarded == len(joined(first.segments)) and not s.idle
    second = s.feed(BASE + cut, ocrq(77)[cut:], rec)
    out = first.segments + second.segments
    assert joined(out) == ocrq(1077) and contiguous(out, BASE)
    assert second.held == 0 and s.idle
    assert rec.seen == [shown]  # decided once
    assert ocrq(77)[12:14] not in joined(out)  # the original Call ID never left


def test_bytes_released_at_once_are_resegmented_to_the_senders_largest_segment() -> None:
    s = StreamDirection(ISN, 4096)
    pieces = cuts(ocrq(3), [40, 80, 120])
    for offset, piece in pieces[1:]:  # beyond a gap: held
        assert s.feed(BASE + offset, piece, Recorder()).segments == []
    out = s.feed(BASE, pieces[0][1], Recorder()).segments  # fills the gap: all 168 go
    assert [len(x.payload) for x in out] == [48, 48, 48, 24]
    assert contiguous(out, BASE) and joined(out) == ocrq(1003)


def test_decision_bytes_release_what_waited_behind_them_in_the_senders_largest() -> None:
    s = StreamDirection(ISN, 4096)
    first = s.feed(BASE, ocrq(3)[:14], Recorder())
    assert first.segments == [OutSegment(BASE, ocrq(3)[:12])]
    assert s.feed(BASE + 17, ocrq(3)[17:60], Recorder()).segments == []  # beyond a gap
    out = s.feed(BASE + 14, ocrq(3)[14:17], Recorder()).segments
    assert [len(x.payload) for x in out] == [43, 5]  # bytes 12-59, cut at 43
    assert contiguous(out, BASE + 12) and joined(out) == ocrq(1003)[12:60]


def test_header_shorter_than_twelve_bytes_is_held() -> None:
    s = StreamDirection(ISN, 4096)
    assert s.feed(BASE, ocrq(1)[:5], Recorder()).segments == []
    assert s.feed(BASE + 5, ocrq(1)[5:11], Recorder()).segments == []
    assert joined(s.feed(BASE + 11, ocrq(1)[11:], Recorder()).segments) == ocrq(1001)


def test_out_of_order_segments_are_held_then_pulled_in() -> None:
    data = ocrq(1) + ocrq(2)
    s = StreamDirection(ISN, 4096)
    late = s.feed(BASE + 200, data[200:], Recorder())
    assert late.segments == [] and late.held == 136
    mid = s.feed(BASE + 100, data[100:200], Recorder())
    assert mid.segments == [] and mid.held == 236
    first = s.feed(BASE, data[:100], Recorder())
    assert joined(first.segments) == ocrq(1001) + ocrq(1002)
    assert contiguous(first.segments, BASE) and s.idle


def test_overlapping_segments_take_each_byte_once() -> None:
    data = ocrq(1) + echo_request()
    expected = ocrq(1001) + echo_request()
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    out = s.feed(BASE, data[:100], rec).segments
    out += s.feed(BASE + 50, data[50:150], rec).segments
    out += s.feed(BASE + 140, data[140:], rec).segments
    new = [x for x in out if not x.retransmission]
    assert joined(new) == expected and contiguous(new, BASE)
    # The overlaps had already left: they are replayed as first forwarded.
    replays = [x for x in out if x.retransmission]
    assert replays == [
        OutSegment(BASE + 50, expected[50:100], True),
        OutSegment(BASE + 140, expected[140:150], True),
    ]
    assert rec.seen == [ocrq(1)[:17] + bytes(151), echo_request()]


def test_overlapping_out_of_order_segments() -> None:
    data = ocrq(1) + ocrq(2) + echo_request()
    s = StreamDirection(ISN, 4096)
    out: list[OutSegment] = []
    for lo, hi in [(300, 352), (250, 320), (250, 260), (250, 310), (120, 280), (0, 130)]:
        out += s.feed(BASE + lo, data[lo:hi], Recorder()).segments
    assert joined(out) == ocrq(1001) + ocrq(1002) + echo_request()
    assert contiguous(out, BASE) and s.idle


def test_out_of_order_segment_covered_by_another_is_absorbed() -> None:
    data = ocrq(1) + echo_request()
    s = StreamDirection(ISN, 4096)
    s.feed(BASE + 100, data[100:184], Recorder())
    s.feed(BASE + 120, data[120:130], Recorder())
    s.feed(BASE + 140, data[140:170], Recorder())
    out = s.feed(BASE, data[:100], Recorder()).segments
    assert joined(out) == ocrq(1001) + echo_request() and s.idle


def test_out_of_order_beyond_max_buffer_is_dropped_and_retransmission_recovers() -> None:
    data = b"".join(echo_request(i) for i in range(105))  # 1680 bytes
    s = StreamDirection(ISN, 1024)
    held = s.feed(BASE + 160, data[160:1008], Recorder())
    assert held.dropped_bytes == 0 and held.held == 848
    over = s.feed(BASE + 1008, data[1008:1344], Recorder())
    assert over.dropped_bytes == 336 and over.segments == [] and s.held == 848
    first = s.feed(BASE, data[:160], Recorder())
    assert joined(first.segments) == data[:1008]
    s.acknowledge(BASE + 1008)
    again = s.feed(BASE + 1008, data[1008:], Recorder())
    assert joined(again.segments) == data[1008:]
    assert s.idle


def test_duplicate_out_of_order_segment_keeps_the_longer_copy() -> None:
    data = echo_request() + ocrq(4)
    s = StreamDirection(ISN, 4096)
    s.feed(BASE + 16, data[16:60], Recorder())
    s.feed(BASE + 16, data[16:30], Recorder())  # shorter copy: ignored
    assert s.held == 44
    s.feed(BASE + 16, data[16:100], Recorder())  # longer copy replaces it
    assert s.held == 84
    out = s.feed(BASE, data[:16], Recorder()).segments
    out += s.feed(BASE + 100, data[100:], Recorder()).segments
    assert joined(out) == echo_request() + ocrq(1004)


def test_retransmission_is_replayed_with_the_same_rewrite() -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    s.feed(BASE, ocrq(5), rec)
    again = s.feed(BASE, ocrq(5), rec)
    assert again.segments == [OutSegment(BASE, ocrq(1005), True)]
    assert len(rec.seen) == 1  # not handled twice


def test_partial_retransmission_inside_a_rewritten_message() -> None:
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, echo_request() + ocrq(5), Recorder())
    again = s.feed(BASE + 10, (echo_request() + ocrq(5))[10:40], Recorder())
    assert again.segments == [OutSegment(BASE + 10, (echo_request() + ocrq(1005))[10:40], True)]


def test_retransmission_straddling_new_data() -> None:
    data = ocrq(5) + ocrq(6)
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, data[:168], Recorder())
    result = s.feed(BASE + 100, data[100:], Recorder())
    assert result.segments[0] == OutSegment(BASE + 100, ocrq(1005)[100:], True)
    assert joined(result.segments[1:]) == ocrq(1006)
    assert not any(x.retransmission for x in result.segments[1:])


def test_acknowledged_bytes_are_not_replayed() -> None:
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, ocrq(5) + ocrq(6), Recorder())
    s.acknowledge(BASE + 168)
    whole = s.feed(BASE, ocrq(5) + ocrq(6), Recorder())
    assert whole.segments == [OutSegment(BASE + 168, ocrq(1006), True)]
    s.acknowledge(BASE + 336)
    assert s.feed(BASE, ocrq(5) + ocrq(6), Recorder()).segments == []


def test_acknowledge_ignores_old_and_future_acks() -> None:
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, ocrq(5), Recorder())
    s.acknowledge(BASE + 500)  # beyond what was forwarded
    assert s.feed(BASE, ocrq(5), Recorder()).segments[0].payload == ocrq(1005)
    s.acknowledge(BASE + 100)
    s.acknowledge(BASE + 50)  # older than the last: ignored
    replay = s.feed(BASE, ocrq(5), Recorder()).segments
    assert replay == [OutSegment(BASE + 100, ocrq(1005)[100:], True)]


def test_rewrites_awaiting_ack_are_bounded() -> None:
    s = StreamDirection(ISN, 1024)
    for i in range(6):  # 6 * 168 = 1008 bytes of rewrites
        s.feed(BASE + 168 * i, ocrq(i), Recorder())
    with pytest.raises(BufferLimitError):
        s.feed(BASE + 168 * 6, ocrq(6), Recorder())


def test_acks_release_remembered_rewrites() -> None:
    s = StreamDirection(ISN, 1024)
    for i in range(30):
        s.feed(BASE + 168 * i, ocrq(i), Recorder())
        s.acknowledge(BASE + 168 * (i + 1))
    assert s.forwarded == 30 * 168


def test_acknowledged_bytes_free_their_memory() -> None:
    s = StreamDirection(ISN, 1024)
    for i in range(100):
        s.feed(BASE + 16 * i, echo_request(i), Recorder())
        s.acknowledge(BASE + 16 * (i + 1))
    assert s.forwarded == 1600 and s.acked == 1600


def test_unacknowledged_bytes_are_bounded() -> None:
    s = StreamDirection(ISN, 1024)
    for i in range(64):
        s.feed(BASE + 16 * i, echo_request(i), Recorder())
    with pytest.raises(BufferLimitError):
        s.feed(BASE + 1024, echo_request(64), Recorder())


def test_codec_error_propagates_and_nothing_of_the_message_is_forwarded() -> None:
    s = StreamDirection(ISN, 4096)
    bad = bytearray(ocrq(1))
    bad[4] ^= 0xFF
    with pytest.raises(BadMagicCookieError):
        s.feed(BASE, echo_request() + bytes(bad), Recorder())
    assert s.forwarded == 0


def test_bad_header_is_detected_before_the_message_is_complete() -> None:
    s = StreamDirection(ISN, 4096)
    bad = bytearray(ocrq(1))
    bad[4] ^= 0xFF
    with pytest.raises(CodecError):
        s.feed(BASE, bytes(bad[:12]), Recorder())


def _bad_reserved_ocrq(call_id: int) -> bytes:
    """An Outgoing-Call-Request whose Reserved field (bytes 38-39) is not zero."""
    bad = bytearray(ocrq(call_id))
    bad[39] = 1
    return bytes(bad)


@pytest.mark.parametrize("cut", [13, 17, 39, 40, 100, 167])
def test_invalid_body_raises_when_the_message_completes(cut: int) -> None:
    bad = _bad_reserved_ocrq(77)
    left = bytearray(ocrq(1077))  # what leaves: translated Call ID, the bytes as sent
    left[39] = 1
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    first = s.feed(BASE, bad[:cut], rec)  # the bad field is not judged yet
    assert joined(first.segments) == (bad[:12] if cut < DECISION_LENGTH else left[:cut])
    with pytest.raises(ReservedFieldError):
        s.feed(BASE + cut, bad[cut:], rec)
    assert s.forwarded == len(joined(first.segments))  # nothing more of it left
    # Decided once, from its (valid) decision bytes; the Call ID that left is translated.
    assert rec.seen == [bad[:17] + bytes(151)]
    assert ocrq(77)[12:14] not in joined(first.segments)


def test_invalid_body_in_one_segment_forwards_nothing_of_it() -> None:
    s = StreamDirection(ISN, 4096)
    with pytest.raises(ReservedFieldError):
        s.feed(BASE, echo_request() + _bad_reserved_ocrq(77), Recorder())
    assert s.forwarded == 0


def test_invalid_decision_bytes_raise_before_any_body_byte_leaves() -> None:
    s = StreamDirection(ISN, 4096)
    bad = bytearray(ccrq(1))
    bad[15] = 1  # Call-Clear-Request's Reserved field, within the decision bytes
    first = s.feed(BASE, bytes(bad[:13]), Recorder())
    assert joined(first.segments) == bad[:12]
    with pytest.raises(ReservedFieldError):
        s.feed(BASE + 13, bytes(bad[13:]), Recorder())
    assert s.forwarded == 12


def test_header_leaves_at_once_and_can_be_acknowledged_before_the_call_id() -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    first = s.feed(BASE, ocrq(77)[:13], rec)
    assert first.segments == [OutSegment(BASE, ocrq(77)[:12])]
    assert first.held == 1 and rec.seen == []
    s.acknowledge(BASE + 12)  # the receiver acknowledges the header
    assert s.acked == 12
    second = s.feed(BASE + 13, ocrq(77)[13:], rec)
    assert joined(second.segments) == ocrq(1077)[12:]  # the held byte 12 with the rest
    assert contiguous(second.segments, BASE + 12)
    assert rec.seen == [ocrq(77)[:17] + bytes(151)] and s.idle
    # A retransmission of the whole message replays only the unacknowledged part.
    again = s.feed(BASE, ocrq(77), rec)
    assert again.segments == [OutSegment(BASE + 12, ocrq(1077)[12:], True)]


def test_rewrite_error_propagates() -> None:
    def refuse(message: bytes) -> bytes:
        raise TruncatedError("no")

    s = StreamDirection(ISN, 4096)
    with pytest.raises(TruncatedError):
        s.feed(BASE, ccrq(1), refuse)


def test_rewrite_must_keep_the_length() -> None:
    s = StreamDirection(ISN, 4096)
    with pytest.raises(AssertionError):
        s.feed(BASE, ccrq(1), lambda m: m + b"x")


def test_check_end() -> None:
    s = StreamDirection(ISN, 4096)
    assert s.check_end(BASE) is True
    s.feed(BASE, ocrq(1)[:50], Recorder())
    assert s.forwarded == 50  # partly forwarded, nothing held
    assert s.check_end(BASE + 50) is None  # the stream would end inside a message
    assert s.check_end(BASE + 60) is False  # bytes before it are missing
    s.feed(BASE + 50, ocrq(1)[50:], Recorder())
    assert s.check_end(BASE + 168) is True
    assert s.check_end(BASE + 200) is False
    s.feed(BASE + 200, echo_request(), Recorder())  # beyond a gap
    assert s.check_end(BASE + 216) is False


@pytest.mark.parametrize(
    ("cut", "forwarded"), [(5, 0), (12, 12), (14, 12), (17, 17), (100, 100), (167, 167)]
)
def test_check_end_inside_a_message_at_every_stage(cut: int, forwarded: int) -> None:
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, echo_request() + ocrq(1)[:cut], Recorder())
    assert s.forwarded == 16 + forwarded
    assert s.check_end(BASE + 16 + cut) is None  # truncated, however much of it left
    assert s.check_end(BASE + 16 + forwarded - 1) is False
    assert s.check_end(BASE + 16 + cut + 1) is False


def test_sequence_numbers_wrap_around() -> None:
    isn = SEQ_MOD - 100
    data = sccrq() + ocrq(1) + sli(3)
    s = StreamDirection(isn, 4096)
    assert s.isn == isn and s.seq_of(0) == SEQ_MOD - 99
    assert s.offset_of(5) == 104
    out: list[OutSegment] = []
    for offset, piece in cuts(data, [70, 150, 250]):
        out += s.feed(s.seq_of(offset), piece, Recorder()).segments
    assert joined(out) == sccrq() + ocrq(1001) + sli(3)
    assert contiguous(out, SEQ_MOD - 99)
    assert any(x.seq < 1000 for x in out) and any(x.seq > 1000 for x in out)
    replay = s.feed(s.seq_of(156), ocrq(1), Recorder()).segments
    assert replay == [OutSegment(s.seq_of(156), ocrq(1001), True)]
    s.acknowledge(s.seq_of(len(data)))
    assert s.check_end(s.seq_of(len(data))) is True


def test_isn_at_the_top_of_sequence_space() -> None:
    s = StreamDirection(SEQ_MOD - 1, 4096)
    assert s.seq_of(0) == 0
    assert joined(s.feed(0, ocrq(2), Recorder()).segments) == ocrq(1002)


def test_offset_of_reads_old_sequence_numbers_as_negative() -> None:
    s = StreamDirection(ISN, 4096)
    s.feed(BASE, echo_request(), Recorder())
    assert s.offset_of(BASE) == 0
    assert s.offset_of(BASE - 10) == -10
    assert s.offset_of((s.seq_of(16) + (1 << 31) - 1) % SEQ_MOD) == 16 + (1 << 31) - 1
    assert s.offset_of((s.seq_of(16) + (1 << 31)) % SEQ_MOD) == 16 - (1 << 31)


# Properties.

DIALOGUE = (
    sccrq() + echo_request(1) + ocrq(1) + ocrq(65535) + sli(9) + echo_reply(2)
    + ccrq(1) + ocrq(300) + stopccrq()
)
EXPECTED = rewritten(DIALOGUE)


def test_the_dialogue_fed_whole_is_rewritten_as_expected() -> None:
    """The reference for the properties below, spelled out."""
    whole = (
        sccrq() + echo_request(1) + ocrq(1001) + ocrq(999) + sli(9) + echo_reply(2)
        + ccrq(1) + ocrq(1300) + stopccrq()
    )
    assert whole == EXPECTED
    assert policy_output(DIALOGUE, len(DIALOGUE)) == EXPECTED
    assert decided(DIALOGUE, len(DIALOGUE)) == [padded(m) for m in _split(DIALOGUE)]


@st.composite
def delivery(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """``DIALOGUE`` cut anywhere, shuffled a little, with some segments duplicated."""
    points = draw(st.lists(st.integers(1, len(DIALOGUE) - 1), max_size=25))
    pieces = cuts(DIALOGUE, points)
    order = list(range(len(pieces)))
    # Local permutations: swap neighbours at random positions.
    for i in draw(st.lists(st.integers(0, max(0, len(order) - 2)), max_size=10)):
        if i + 1 < len(order):
            order[i], order[i + 1] = order[i + 1], order[i]
    sent = [pieces[i] for i in order]
    for i in draw(st.lists(st.integers(0, len(sent) - 1), max_size=5)):
        sent.insert(draw(st.integers(i, len(sent))), sent[i])
    return sent


def _received(have: bytearray) -> int:
    """Bytes in from the start of the stream, by a map of the offsets received."""
    gap = have.find(0)
    return len(have) if gap < 0 else gap


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery(), st.integers(0, SEQ_MOD - 1))
def test_any_segmentation_and_order_reassembles_to_the_same_output(
    sent: list[tuple[int, bytes]], isn: int
) -> None:
    s = StreamDirection(isn, 65536)
    rec = Recorder()
    have = bytearray(len(DIALOGUE))
    new: list[OutSegment] = []
    for offset, piece in sent:
        result = s.feed(s.seq_of(offset), piece, rec)
        assert result.dropped_bytes == 0
        have[offset : offset + len(piece)] = b"\x01" * len(piece)
        received = _received(have)
        for seg in result.segments:
            start = (seg.seq - s.seq_of(0)) % SEQ_MOD
            # Every byte that leaves, first time or replayed, is the byte the stream fed
            # whole gives there: no Call ID ever leaves untranslated, whatever the cuts.
            assert seg.payload == EXPECTED[start : start + len(seg.payload)]
            if not seg.retransmission:
                new.append(seg)
        # Exactly what the policy allows for the bytes in so far has left, and exactly
        # the messages whose decision bytes are in have been decided, once each.
        assert joined(new) == policy_output(DIALOGUE, received)
        assert s.forwarded == len(joined(new))
        assert rec.seen == decided(DIALOGUE, received)
    assert joined(new) == EXPECTED
    assert contiguous(new, s.seq_of(0))
    assert rec.seen == [padded(m) for m in _split(DIALOGUE)]
    assert s.idle and s.forwarded == len(DIALOGUE)


def _split(data: bytes) -> list[bytes]:
    out = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 2], "big")
        out.append(data[offset : offset + length])
        offset += length
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(DIALOGUE) - 1), max_size=30), st.randoms())
def test_any_permutation_within_max_buffer(points: list[int], rnd: object) -> None:
    pieces = cuts(DIALOGUE, points)
    rnd.shuffle(pieces)  # type: ignore[attr-defined]
    s = StreamDirection(ISN, 65536)
    rec = Recorder()
    have = bytearray(len(DIALOGUE))
    out: list[OutSegment] = []
    for offset, piece in pieces:
        out += s.feed(s.seq_of(offset), piece, rec).segments
        have[offset : offset + len(piece)] = b"\x01" * len(piece)
        # What has left is what the policy allows for the bytes in from the start: a
        # message's header alone, then its translated decision bytes and what follows.
        assert joined(out) == policy_output(DIALOGUE, _received(have))
        assert rec.seen == decided(DIALOGUE, _received(have))
    assert joined(out) == EXPECTED
    assert contiguous(out, BASE)
    assert s.idle


MESSAGES = [
    sccrq(), ocrq(3), echo_request(), sli(4), ccrq(2), stopccrq(), echo_reply(),
    _bad_reserved_ocrq(3),  # invalid after its decision bytes: found at its last byte
]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A few messages (one maybe invalid) with up to two bytes overwritten anywhere."""
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(0, 2))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), damaged()), st.lists(st.integers(1, 700), max_size=8))
def test_arbitrary_bytes_pass_as_the_policy_says_or_raise_codec_error(
    junk: bytes, points: list[int]
) -> None:
    s = StreamDirection(ISN, 4096)
    data = echo_request() + junk
    out: list[OutSegment] = []
    done = 0
    failed_at = None
    for offset, piece in cuts(data, points):
        try:
            out += s.feed(s.seq_of(offset), piece, Recorder()).segments
        except CodecError:
            failed_at = offset + len(piece)
            break
        done = offset + len(piece)
    # CodecError exactly when, and as soon as, the bytes in show an invalid message.
    assert not invalid_by(data, done)
    if failed_at is None:
        assert done == len(data)
    else:
        assert invalid_by(data, failed_at)
    forwarded = joined(out)
    assert forwarded == policy_output(data, done)  # the feed that raised sent nothing
    assert forwarded.startswith(echo_request()) or forwarded in (b"", echo_request()[:12])
    assert len(forwarded) == s.forwarded
