"""Property-based tests of ``alg.codec`` (hypothesis).

Field ranges come from the RFC 2637 table in ``test_codec.SPECS`` (struct code per field),
not from the codec's own ``LAYOUT``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alg.codec import (
    MESSAGE_CLASSES,
    ControlMessage,
    GreHeader,
    parse_gre,
    parse_header,
    parse_message,
    rewrite_gre_call_id,
)
from alg.errors import CodecError
from tests.unit.test_codec import SPECS, Spec, build

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_TYPE = settings(max_examples=60, deadline=None)


def _field_strategy(code: str) -> st.SearchStrategy[int | bytes]:
    if code.endswith("s"):
        size = int(code[:-1])
        return st.binary(min_size=size, max_size=size)
    return st.integers(0, (1 << (8 * struct.calcsize("!" + code))) - 1)


def message_strategy(spec: Spec) -> st.SearchStrategy[ControlMessage]:
    return st.builds(spec.cls, **{name: _field_strategy(code) for name, code in spec.fields()})


ANY_MESSAGE = st.one_of([message_strategy(spec) for spec in SPECS])
spec_params = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)


def _header_like() -> st.SearchStrategy[bytes]:
    """Bytes that get past the cheap checks more often than uniform noise does."""
    lengths = st.sampled_from(sorted({s.length for s in SPECS} | {0, 12, 0xFFFF}))
    return st.builds(
        lambda length, ptype, cookie, ctype, res, body: (
            struct.pack("!HHIHH", length, ptype, cookie, ctype, res) + body
        ),
        lengths,
        st.sampled_from([1, 1, 1, 2]),
        st.sampled_from([0x1A2B3C4D, 0x1A2B3C4D, 0x1A2B3C4D, 0]),
        st.integers(0, 17),
        st.sampled_from([0, 0, 0, 1]),
        st.binary(max_size=230),
    )


def _gre_like() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda flags, proto, rest: struct.pack("!HH", flags, proto) + rest,
        st.one_of(st.sampled_from([0x2001, 0x3001, 0x2081, 0x3081]), st.integers(0, 0xFFFF)),
        st.sampled_from([0x880B, 0x880B, 0x0800]),
        st.binary(max_size=40),
    )


# (a) Arbitrary input raises nothing but CodecError subclasses.


@FAST
@given(st.one_of(st.binary(max_size=300), _header_like()))
def test_arbitrary_bytes_parse_message(data: bytes) -> None:
    try:
        message = parse_message(data)
    except CodecError:
        return
    assert message.encode() == data


@FAST
@given(st.one_of(st.binary(max_size=64), _header_like()))
def test_arbitrary_bytes_parse_header(data: bytes) -> None:
    try:
        length, ctype = parse_header(data)
    except CodecError:
        return
    assert length == MESSAGE_CLASSES[ctype].LENGTH
    assert struct.unpack_from("!H", data)[0] == length


@FAST
@given(st.one_of(st.binary(max_size=64), _gre_like()), st.integers(0, 0xFFFF))
def test_arbitrary_bytes_parse_gre(data: bytes, call_id: int) -> None:
    try:
        header = parse_gre(data)
    except CodecError:
        return
    assert header.encode() == data[: header.length]
    assert len(data) >= header.length + header.payload_length
    out = rewrite_gre_call_id(data, call_id)
    assert out[:6] + out[8:] == data[:6] + data[8:]
    assert parse_gre(out) == GreHeader(header.payload_length, call_id, header.sequence, header.ack)


# (b) Every message class round-trips for all in-range field values.


@spec_params
def test_message_round_trip(spec: Spec) -> None:
    @PER_TYPE
    @given(message_strategy(spec))
    def check(message: ControlMessage) -> None:
        raw = message.encode()
        assert len(raw) == message.LENGTH == spec.length
        assert parse_message(raw) == message
        assert parse_header(raw) == (spec.length, spec.ctype)

    check()


# (c) A single mutated byte either still parses (and re-encodes to itself) or is rejected.


@FAST
@given(ANY_MESSAGE, st.data())
def test_single_byte_mutation(message: ControlMessage, data: st.DataObject) -> None:
    raw = bytearray(message.encode())
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    value = data.draw(st.integers(0, 255), label="value")
    assume(raw[index] != value)
    raw[index] = value
    mutated = bytes(raw)
    try:
        parsed = parse_message(mutated)
    except CodecError:
        assert index < 12 or _in_reserved(type(message), index)
        return
    assert parsed.encode() == mutated
    if index < 12:
        # Only the low byte of the type may change, into another type of the same length
        # (e.g. Echo-Request -> Stop-Control-Connection-Request with a zero "reserved").
        assert index == 9
        assert type(parsed) is not type(message)
        assert parsed.LENGTH == message.LENGTH
    else:
        assert type(parsed) is type(message)


def _in_reserved(cls: type[ControlMessage], index: int) -> bool:
    spec = next(spec for spec in SPECS if spec.cls is cls)
    return any(offset <= index < offset + size for _, offset, size in spec.reserved())


@spec_params
def test_every_single_byte_mutation_of_table_message(spec: Spec) -> None:
    """Exhaustive over positions and a few values, for the hand-built message."""
    raw = build(spec)
    for index in range(len(raw)):
        for value in sorted({0, 1, 0x80, 0xFF, raw[index] ^ 0x10} - {raw[index]}):
            mutated = raw[:index] + bytes([value]) + raw[index + 1 :]
            if index == 9:  # may become another type of the same length, or not
                try:
                    parsed = parse_message(mutated)
                except CodecError:
                    continue
                assert parsed.encode() == mutated
            elif index < 12 or _in_reserved(spec.cls, index):
                with pytest.raises(CodecError):
                    parse_message(mutated)
            else:
                parsed = parse_message(mutated)
                assert type(parsed) is spec.cls
                assert parsed.encode() == mutated


def test_type_byte_mutation_can_yield_another_valid_message() -> None:
    """Echo-Request and Stop-Control-Connection-Request are both 16 bytes long."""
    raw = bytearray(build(SPECS[4]))  # Echo-Request
    raw[9] = 3
    raw[12:16] = b"\x02\0\0\0"
    parsed = parse_message(bytes(raw))
    assert parsed.TYPE == 3
    assert parsed.encode() == bytes(raw)


# (d) The GRE header round-trips.

GRE_HEADERS = st.builds(
    GreHeader,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.none() | st.integers(0, 0xFFFFFFFF),
    st.none() | st.integers(0, 0xFFFFFFFF),
)


@FAST
@given(GRE_HEADERS, st.binary(max_size=8))
def test_gre_round_trip(header: GreHeader, trailer: bytes) -> None:
    encoded = header.encode()
    assert len(encoded) == header.length
    data = encoded + bytes(header.payload_length) + trailer
    assert parse_gre(data) == header
    assert parse_gre(data).encode() == encoded
    if header.payload_length:
        with pytest.raises(CodecError):
            parse_gre(encoded + bytes(header.payload_length - 1))
