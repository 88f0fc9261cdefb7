"""Unit and property tests of ``alg.stream.StreamDirection`` (reassembly of one direction)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alg.codec import OutgoingCallRequest, parse_message, replace
from alg.errors import BadMagicCookieError, BufferLimitError, CodecError, TruncatedError
from alg.stream import SEQ_MOD, OutSegment, StreamDirection
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
    assert rec.seen == [ocrq(5)]
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
    assert rec.seen == [sccrq(), ocrq(1), echo_request(), ocrq(2), stopccrq()]


def test_segment_ending_inside_a_message_forwards_complete_ones_and_holds_the_rest() -> None:
    data = echo_request() + ocrq(9)
    s = StreamDirection(ISN, 4096)
    result = s.feed(BASE, data[:100], Recorder())
    assert joined(result.segments) == echo_request()
    assert result.held == 84 and s.held == 84 and not s.idle
    result = s.feed(BASE + 100, data[100:], Recorder())
    assert joined(result.segments) == ocrq(1009)
    assert [len(x.payload) for x in result.segments] == [100, 68]  # the sender's largest
    assert contiguous(result.segments, BASE + 16) and s.idle


@pytest.mark.parametrize("cut", range(1, 168))
def test_message_split_at_every_point_is_held_until_complete(cut: int) -> None:
    s = StreamDirection(ISN, 4096)
    rec = Recorder()
    first = s.feed(BASE, ocrq(77)[:cut], rec)
    assert first.segments == [] and first.held == cut and rec.seen == []
    second = s.feed(BASE + cut, ocrq(77)[cut:], rec)
    assert joined(second.segments) == ocrq(1077)
    assert contiguous(second.segments, BASE)
    assert rec.seen == [ocrq(77)]


def test_complete_message_is_resegmented_to_the_senders_largest_segment() -> None:
    s = StreamDirection(ISN, 4096)
    out: list[OutSegment] = []
    for offset, piece in cuts(ocrq(3), [40, 80, 120]):
        out += s.feed(BASE + offset, piece, Recorder()).segments
    assert [len(x.payload) for x in out] == [48, 48, 48, 24]
    assert contiguous(out, BASE) and joined(out) == ocrq(1003)


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
    s = StreamDirection(ISN, 4096)
    out = s.feed(BASE, data[:100], Recorder()).segments
    out += s.feed(BASE + 50, data[50:150], Recorder()).segments
    out += s.feed(BASE + 140, data[140:], Recorder()).segments
    assert joined(out) == ocrq(1001) + echo_request()
    assert contiguous(out, BASE)


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
    assert s.check_end(BASE + 50) is None  # the stream would end inside a message
    assert s.check_end(BASE + 60) is False  # bytes before it are missing
    s.feed(BASE + 50, ocrq(1)[50:], Recorder())
    assert s.check_end(BASE + 168) is True
    assert s.check_end(BASE + 200) is False
    s.feed(BASE + 200, echo_request(), Recorder())  # beyond a gap
    assert s.check_end(BASE + 216) is False


def test_sequence_numbers_wrap_around() -> None:
    isn = SEQ_MOD - 100
    data = sccrq() + ocrq(1) + sli(3)
    s = StreamDirection(isn, 4096)
    assert s.seq_of(0) == SEQ_MOD - 99
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delivery(), st.integers(0, SEQ_MOD - 1))
def test_any_segmentation_and_order_reassembles_to_the_same_output(
    sent: list[tuple[int, bytes]], isn: int
) -> None:
    s = StreamDirection(isn, 65536)
    rec = Recorder()
    first_copy: dict[int, int] = {}
    new: list[OutSegment] = []
    for offset, piece in sent:
        result = s.feed(s.seq_of(offset), piece, rec)
        assert result.dropped_bytes == 0
        for seg in result.segments:
            start = (seg.seq - s.seq_of(0)) % SEQ_MOD
            for i, byte in enumerate(seg.payload):
                # A replay carries exactly the bytes first sent at that offset.
                assert first_copy.setdefault(start + i, byte) == byte
            if not seg.retransmission:
                new.append(seg)
    assert joined(new) == EXPECTED
    assert contiguous(new, s.seq_of(0))
    assert rec.seen == [bytes(m) for m in _split(DIALOGUE)]
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
    out: list[OutSegment] = []
    for offset, piece in pieces:
        out += s.feed(s.seq_of(offset), piece, Recorder()).segments
    assert joined(out) == EXPECTED
    assert contiguous(out, BASE)
    # A message leaves only whole: every segment run ends on a message boundary.
    assert s.idle


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 399), max_size=8))
def test_arbitrary_bytes_either_pass_whole_messages_or_raise_codec_error(
    junk: bytes, points: list[int]
) -> None:
    s = StreamDirection(ISN, 4096)
    data = echo_request() + junk
    out: list[OutSegment] = []
    try:
        for offset, piece in cuts(data, points):
            out += s.feed(s.seq_of(offset), piece, Recorder()).segments
    except CodecError:
        pass
    forwarded = joined(out)
    assert forwarded[:16] == echo_request() or forwarded == b""
    assert _split(forwarded) == [m for m in _split(forwarded) if len(m) >= 12]
    assert len(forwarded) == s.forwarded
