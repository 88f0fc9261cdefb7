"""Table-driven unit tests of ``alg.codec`` against hand-built RFC 2637 byte strings.

The expected bytes are built here with :mod:`struct` from an RFC 2637 field table (``SPECS``)
written independently of the codec's ``LAYOUT``: every field in wire order with its struct
code and a distinctive value; a field named ``None`` is reserved (must be zero).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

import pytest

from alg import codec
from alg.codec import (
    MESSAGE_CLASSES,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    ControlType,
    EchoReply,
    EchoRequest,
    GreHeader,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
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
    parse_header,
    parse_message,
    rewrite_gre_call_id,
)
from alg.errors import (
    AlgError,
    BadGreHeaderError,
    BadLengthError,
    BadMagicCookieError,
    BadMessageTypeError,
    CodecError,
    ReservedFieldError,
    TruncatedError,
    UnknownControlTypeError,
)

COOKIE = 0x1A2B3C4D


def _text(value: bytes, size: int = 64) -> bytes:
    return value.ljust(size, b"\0")


@dataclass(frozen=True)
class Spec:
    """One control message as RFC 2637 section 2 lays it out."""

    cls: type[ControlMessage]
    ctype: int
    length: int
    body: tuple[tuple[str | None, str, int | bytes], ...]

    @property
    def id(self) -> str:
        return self.cls.__name__

    @property
    def expected(self) -> dict[str, int | bytes]:
        return {name: value for name, _, value in self.body if name is not None}

    def fields(self) -> list[tuple[str, str]]:
        return [(name, code) for name, code, _ in self.body if name is not None]

    def reserved(self) -> list[tuple[int, int, int]]:
        """(index in body, byte offset in message, size) of every reserved body field."""
        out = []
        offset = 12
        for index, (name, code, _) in enumerate(self.body):
            size = struct.calcsize("!" + code)
            if name is None:
                out.append((index, offset, size))
            offset += size
        return out


def build_header(
    length: int, ctype: int, *, pptp_type: int = 1, cookie: int = COOKIE, reserved0: int = 0
) -> bytes:
    return struct.pack("!HHIHH", length, pptp_type, cookie, ctype, reserved0)


def build_body(spec: Spec, reserved: dict[int, int] | None = None) -> bytes:
    reserved = reserved or {}
    fmt = "!" + "".join(code for _, code, _ in spec.body)
    values = [
        reserved.get(i, 0) if name is None else value
        for i, (name, _, value) in enumerate(spec.body)
    ]
    return struct.pack(fmt, *values)


def build(spec: Spec, **header: int) -> bytes:
    length = header.pop("length", spec.length)
    ctype = header.pop("ctype", spec.ctype)
    return build_header(length, ctype, **header) + build_body(spec)


SPECS: tuple[Spec, ...] = (
    Spec(
        StartControlConnectionRequest,
        1,
        156,
        (
            ("protocol_version", "H", 0x0100),
            (None, "H", 0),
            ("framing_capabilities", "I", 0x00000003),
            ("bearer_capabilities", "I", 0x00000002),
            ("maximum_channels", "H", 0xABCD),
            ("firmware_revision", "H", 0x1234),
            ("host_name", "64s", _text(b"pns.example")),
            ("vendor_string", "64s", _text(b"Vendor \xff" * 8)),
        ),
    ),
    Spec(
        StartControlConnectionReply,
        2,
        156,
        (
            ("protocol_version", "H", 0x0100),
            ("result_code", "B", 5),
            ("error_code", "B", 6),
            ("framing_capabilities", "I", 0x80000001),
            ("bearer_capabilities", "I", 0x00000003),
            ("maximum_channels", "H", 0x0102),
            ("firmware_revision", "H", 0xFFFF),
            ("host_name", "64s", b"H" * 64),
            ("vendor_string", "64s", _text(b"linux")),
        ),
    ),
    Spec(
        StopControlConnectionRequest,
        3,
        16,
        (
            ("reason", "B", 3),
            (None, "B", 0),
            (None, "H", 0),
        ),
    ),
    Spec(
        StopControlConnectionReply,
        4,
        16,
        (
            ("result_code", "B", 2),
            ("error_code", "B", 0xFE),
            (None, "H", 0),
        ),
    ),
    Spec(EchoRequest, 5, 16, (("identifier", "I", 0xDEADBEEF),)),
    Spec(
        EchoReply,
        6,
        20,
        (
            ("identifier", "I", 0x01020304),
            ("result_code", "B", 2),
            ("error_code", "B", 6),
            (None, "H", 0),
        ),
    ),
    Spec(
        OutgoingCallRequest,
        7,
        168,
        (
            ("call_id", "H", 0xC0DE),
            ("call_serial_number", "H", 0x0102),
            ("minimum_bps", "I", 2400),
            ("maximum_bps", "I", 0xFFFFFFFF),
            ("bearer_type", "I", 2),
            ("framing_type", "I", 1),
            ("packet_recv_window", "H", 64),
            ("packet_processing_delay", "H", 0x0A0B),
            ("phone_number_length", "H", 7),
            (None, "H", 0),
            ("phone_number", "64s", _text(b"5551234")),
            ("subaddress", "64s", _text(b"sub\x01")),
        ),
    ),
    Spec(
        OutgoingCallReply,
        8,
        32,
        (
            ("call_id", "H", 0xCAFE),
            ("peer_call_id", "H", 0xC0DE),
            ("result_code", "B", OutgoingCallResult.BUSY),
            ("error_code", "B", 3),
            ("cause_code", "H", 0x0F0E),
            ("connect_speed", "I", 64000),
            ("packet_recv_window", "H", 32),
            ("packet_processing_delay", "H", 0x0C0D),
            ("physical_channel_id", "I", 0x11223344),
        ),
    ),
    Spec(
        IncomingCallRequest,
        9,
        220,
        (
            ("call_id", "H", 0x4321),
            ("call_serial_number", "H", 0x8765),
            ("call_bearer_type", "I", 2),
            ("physical_channel_id", "I", 0x55667788),
            ("dialed_number_length", "H", 4),
            ("dialing_number_length", "H", 5),
            ("dialed_number", "64s", _text(b"1234")),
            ("dialing_number", "64s", _text(b"98765")),
            ("subaddress", "64s", b"\x01" * 64),
        ),
    ),
    Spec(
        IncomingCallReply,
        10,
        24,
        (
            ("call_id", "H", 0x1111),
            ("peer_call_id", "H", 0x4321),
            ("result_code", "B", 3),
            ("error_code", "B", 4),
            ("packet_recv_window", "H", 0x0040),
            ("packet_transmit_delay", "H", 0x0203),
            (None, "H", 0),
        ),
    ),
    Spec(
        IncomingCallConnected,
        11,
        28,
        (
            ("peer_call_id", "H", 0x1111),
            (None, "H", 0),
            ("connect_speed", "I", 0x05F5E100),
            ("packet_recv_window", "H", 0x0041),
            ("packet_transmit_delay", "H", 0x0304),
            ("framing_type", "I", 2),
        ),
    ),
    Spec(
        CallClearRequest,
        12,
        16,
        (
            ("call_id", "H", 0xFFFE),
            (None, "H", 0),
        ),
    ),
    Spec(
        CallDisconnectNotify,
        13,
        148,
        (
            ("call_id", "H", 0x00FF),
            ("result_code", "B", 4),
            ("error_code", "B", 1),
            ("cause_code", "H", 0x1357),
            (None, "H", 0),
            ("call_statistics", "128s", _text(b"rx=1 tx=2", 128)),
        ),
    ),
    Spec(
        WanErrorNotify,
        14,
        40,
        (
            ("peer_call_id", "H", 0x2468),
            (None, "H", 0),
            ("crc_errors", "I", 1),
            ("framing_errors", "I", 2),
            ("hardware_overruns", "I", 3),
            ("buffer_overruns", "I", 4),
            ("timeout_errors", "I", 5),
            ("alignment_errors", "I", 0xFFFFFFFE),
        ),
    ),
    Spec(
        SetLinkInfo,
        15,
        24,
        (
            ("peer_call_id", "H", 0x0001),
            (None, "H", 0),
            ("send_accm", "I", 0x000A0000),
            ("receive_accm", "I", 0xFFFF0000),
        ),
    ),
)

spec_params = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)

RESERVED_CASES = [
    pytest.param(spec, offset, size, value, id=f"{spec.id}-byte{offset}-{value:#x}")
    for spec in SPECS
    for _, offset, size in spec.reserved()
    for value in (1, (1 << (8 * size)) - 1, 1 << (8 * size - 1))
]


# --- the table itself -----------------------------------------------------------------


def test_table_covers_all_fifteen_types() -> None:
    assert [spec.ctype for spec in SPECS] == list(range(1, 16))
    assert {spec.cls for spec in SPECS} == set(MESSAGE_CLASSES.values())
    assert len(MESSAGE_CLASSES) == 15


@spec_params
def test_constants_match_rfc(spec: Spec) -> None:
    assert spec.ctype == spec.cls.TYPE
    assert spec.length == spec.cls.LENGTH
    assert MESSAGE_CLASSES[ControlType(spec.ctype)] is spec.cls
    assert len(build(spec)) == spec.length


@spec_params
def test_table_names_every_dataclass_field(spec: Spec) -> None:
    assert [f.name for f in fields(spec.cls)] == [name for name, _ in spec.fields()]


# --- valid messages -------------------------------------------------------------------


@spec_params
def test_parse_hand_built_bytes(spec: Spec) -> None:
    message = parse_message(build(spec))
    assert type(message) is spec.cls
    for name, value in spec.expected.items():
        assert getattr(message, name) == value, name
    assert message == spec.cls(**spec.expected)


@spec_params
def test_encode_gives_hand_built_bytes(spec: Spec) -> None:
    assert spec.cls(**spec.expected).encode() == build(spec)


@spec_params
def test_parse_encode_is_identity_on_bytes(spec: Spec) -> None:
    raw = build(spec)
    assert parse_message(raw).encode() == raw


@spec_params
def test_parse_accepts_bytearray_and_memoryview(spec: Spec) -> None:
    raw = build(spec)
    expected = spec.cls(**spec.expected)
    assert parse_message(bytearray(raw)) == expected
    assert parse_message(memoryview(raw)) == expected


@spec_params
def test_defaults_round_trip(spec: Spec) -> None:
    message = spec.cls()
    raw = message.encode()
    assert len(raw) == spec.length
    assert raw[:12] == build_header(spec.length, spec.ctype)
    assert parse_message(raw) == message


@spec_params
@pytest.mark.parametrize("extra", [0, 1, -1, "whole", "trailing"])
def test_parse_header_on_prefix(spec: Spec, extra: int | str) -> None:
    raw = build(spec)
    if extra == "whole":
        data = raw
    elif extra == "trailing":
        data = raw + build(SPECS[4])  # a next message may follow
    else:
        assert isinstance(extra, int)
        data = raw[: 12 + extra] if extra >= 0 else raw[:extra]
    length, ctype = parse_header(data)
    assert (length, ctype) == (spec.length, spec.ctype)
    assert isinstance(ctype, ControlType)


# Where PPTP-WIRE.md says the Call IDs sit (bytes 12-13 and 14-15).
CALL_ID_OFFSETS = [
    (OutgoingCallRequest, "call_id", 12),
    (OutgoingCallReply, "call_id", 12),
    (OutgoingCallReply, "peer_call_id", 14),
    (IncomingCallRequest, "call_id", 12),
    (IncomingCallReply, "call_id", 12),
    (IncomingCallReply, "peer_call_id", 14),
    (IncomingCallConnected, "peer_call_id", 12),
    (CallClearRequest, "call_id", 12),
    (CallDisconnectNotify, "call_id", 12),
    (WanErrorNotify, "peer_call_id", 12),
    (SetLinkInfo, "peer_call_id", 12),
]


@pytest.mark.parametrize(("cls", "name", "offset"), CALL_ID_OFFSETS)
def test_call_id_offsets(cls: type[ControlMessage], name: str, offset: int) -> None:
    raw = cls(**{name: 0xBEEF}).encode()  # type: ignore[arg-type]
    assert raw[offset : offset + 2] == b"\xbe\xef"
    assert raw.count(b"\xbe\xef") == 1


def test_replace_changes_only_the_named_field() -> None:
    spec = SPECS[7]  # Outgoing-Call-Reply
    original = parse_message(build(spec))
    assert isinstance(original, OutgoingCallReply)
    changed = codec.replace(original, peer_call_id=0x0102)
    assert type(changed) is OutgoingCallReply
    assert changed.peer_call_id == 0x0102
    assert codec.replace(changed, peer_call_id=original.peer_call_id) == original
    old, new = original.encode(), changed.encode()
    assert [i for i in range(len(old)) if old[i] != new[i]] == [14, 15]


def test_outgoing_call_result_codes() -> None:
    assert [r.value for r in OutgoingCallResult] == list(range(1, 8))
    assert OutgoingCallResult.CONNECTED == 1


# --- malformed messages ---------------------------------------------------------------


@spec_params
@pytest.mark.parametrize("size", range(12))
def test_short_header(spec: Spec, size: int) -> None:
    data = build(spec)[:size]
    with pytest.raises(TruncatedError):
        parse_header(data)
    with pytest.raises(TruncatedError):
        parse_message(data)


@spec_params
def test_body_shorter_than_length(spec: Spec) -> None:
    raw = build(spec)
    for size in sorted({12, 13, spec.length // 2 + 6, spec.length - 1}):
        with pytest.raises(TruncatedError):
            parse_message(raw[:size])


@spec_params
@pytest.mark.parametrize("extra", [b"\0", b"\x01" * 7, b"__next message__"])
def test_bytes_past_length(spec: Spec, extra: bytes) -> None:
    with pytest.raises(BadLengthError):
        parse_message(build(spec) + extra)


@spec_params
def test_length_not_matching_type(spec: Spec) -> None:
    others = {s.length for s in SPECS} - {spec.length}
    for length in sorted({0, 12, spec.length - 1, spec.length + 1, 0xFFFF} | others):
        raw = build(spec, length=length)
        with pytest.raises(BadLengthError):
            parse_header(raw)
        with pytest.raises(BadLengthError):
            parse_message(raw)
        if length >= 12:
            # A body sized to match the wrong Length is still wrong for the type.
            resized = raw[:length].ljust(length, b"\0")
            with pytest.raises(BadLengthError):
                parse_message(resized)


@spec_params
@pytest.mark.parametrize("cookie", [0, 0x4D3C2B1A, 0x1A2B3C4C, 0x9A2B3C4D, 0xFFFFFFFF])
def test_bad_magic_cookie(spec: Spec, cookie: int) -> None:
    raw = build(spec, cookie=cookie)
    with pytest.raises(BadMagicCookieError):
        parse_header(raw)
    with pytest.raises(BadMagicCookieError):
        parse_message(raw)


@spec_params
@pytest.mark.parametrize("pptp_type", [2, 0, 3, 0x0101, 0xFFFF])
def test_bad_pptp_message_type(spec: Spec, pptp_type: int) -> None:
    raw = build(spec, pptp_type=pptp_type)
    with pytest.raises(BadMessageTypeError):
        parse_header(raw)
    with pytest.raises(BadMessageTypeError):
        parse_message(raw)


@spec_params
@pytest.mark.parametrize("ctype", [0, 16, 17, 0x0100 + 1, 0xFF01, 0xFFFF])
def test_unknown_control_type(spec: Spec, ctype: int) -> None:
    # 0x0101 and 0xFF01 have a valid low byte: the type is 16 bits, not 8.
    raw = build(spec, ctype=ctype)
    with pytest.raises(UnknownControlTypeError):
        parse_header(raw)
    with pytest.raises(UnknownControlTypeError):
        parse_message(raw)


@spec_params
@pytest.mark.parametrize("reserved0", [1, 0x0100, 0x8000, 0xFFFF])
def test_nonzero_reserved0(spec: Spec, reserved0: int) -> None:
    raw = build(spec, reserved0=reserved0)
    with pytest.raises(ReservedFieldError):
        parse_header(raw)
    with pytest.raises(ReservedFieldError):
        parse_message(raw)


def test_every_type_with_reserved_fields_is_covered() -> None:
    with_reserved = {spec.cls for spec in SPECS if spec.reserved()}
    assert with_reserved == set(MESSAGE_CLASSES.values()) - {
        StartControlConnectionReply,
        EchoRequest,
        OutgoingCallReply,
        IncomingCallRequest,
    }
    assert sum(len(spec.reserved()) for spec in SPECS) == 12


@pytest.mark.parametrize(("spec", "offset", "size", "value"), RESERVED_CASES)
def test_nonzero_body_reserved_field(spec: Spec, offset: int, size: int, value: int) -> None:
    raw = bytearray(build(spec))
    assert raw[offset : offset + size] == bytes(size)
    raw[offset : offset + size] = value.to_bytes(size, "big")
    assert parse_header(bytes(raw)) == (spec.length, spec.ctype)  # header alone is fine
    with pytest.raises(ReservedFieldError):
        parse_message(bytes(raw))


@pytest.mark.parametrize(("spec", "offset", "size", "value"), RESERVED_CASES)
def test_body_reserved_field_via_independent_body(
    spec: Spec, offset: int, size: int, value: int
) -> None:
    index = next(i for i, o, _ in spec.reserved() if o == offset)
    raw = build_header(spec.length, spec.ctype) + build_body(spec, {index: value})
    with pytest.raises(ReservedFieldError):
        parse_message(raw)


# --- encoding out-of-range values -----------------------------------------------------


def _bad_values(code: str) -> list[object]:
    if code.endswith("s"):
        size = int(code[:-1])
        return [b"", b"x" * (size - 1), b"x" * (size + 1), "x" * size, None, 0]
    bits = 8 * struct.calcsize("!" + code)
    return [1 << bits, -1, None, 1.5, b"\0"]


ENCODE_BAD_CASES = [
    pytest.param(spec, name, bad, id=f"{spec.id}-{name}-{bad!r:.12}")
    for spec in SPECS
    for name, code in spec.fields()
    for bad in _bad_values(code)
]


@pytest.mark.parametrize(("spec", "name", "bad"), ENCODE_BAD_CASES)
def test_encode_out_of_range_raises_codec_error(spec: Spec, name: str, bad: object) -> None:
    message = spec.cls(**{**spec.expected, name: bad})  # type: ignore[arg-type]
    with pytest.raises(CodecError) as excinfo:
        message.encode()
    assert not isinstance(excinfo.value, struct.error)


def test_encode_call_id_70000() -> None:
    with pytest.raises(CodecError):
        OutgoingCallRequest(call_id=70000).encode()


@spec_params
def test_encode_accepts_bytearray_text(spec: Spec) -> None:
    kwargs = {
        name: bytearray(value) if isinstance(value, bytes) else value
        for name, value in spec.expected.items()
    }
    assert spec.cls(**kwargs).encode() == build(spec)  # type: ignore[arg-type]


def test_error_hierarchy() -> None:
    for error in (
        TruncatedError,
        BadLengthError,
        BadMagicCookieError,
        BadMessageTypeError,
        UnknownControlTypeError,
        ReservedFieldError,
        BadGreHeaderError,
    ):
        assert issubclass(error, CodecError)
    assert issubclass(CodecError, AlgError)


# --- enhanced GRE ---------------------------------------------------------------------

GRE_PPP = 0x880B


def gre(
    flags: int,
    payload_length: int,
    call_id: int,
    *words: int,
    protocol: int = GRE_PPP,
    payload: bytes | None = None,
) -> bytes:
    out = struct.pack("!HHHH", flags, protocol, payload_length, call_id)
    out += b"".join(struct.pack("!I", w) for w in words)
    return out + (bytes(range(payload_length)) if payload is None else payload)


# (flags, words, expected header); S = 0x1000, A = 0x0080, K = 0x2000, version 1.
GRE_VALID = [
    pytest.param(0x2001, (), GreHeader(0, 0x1234), id="plain-8-no-payload"),
    pytest.param(0x2001, (), GreHeader(5, 0x1234), id="plain-8"),
    pytest.param(0x3001, (0x01020304,), GreHeader(5, 0x1234, sequence=0x01020304), id="S-12"),
    pytest.param(0x2081, (0xFFFFFFFF,), GreHeader(0, 0x1234, ack=0xFFFFFFFF), id="A-only-12"),
    pytest.param(0x2081, (7,), GreHeader(3, 0x1234, ack=7), id="A-12-with-payload"),
    pytest.param(
        0x3081,
        (0xA0B0C0D0, 0x0A0B0C0D),
        GreHeader(200, 0x1234, sequence=0xA0B0C0D0, ack=0x0A0B0C0D),
        id="SA-16",
    ),
    pytest.param(0x3081, (0, 0), GreHeader(0, 0xFFFF, sequence=0, ack=0), id="SA-16-zeros"),
]


@pytest.mark.parametrize(("flags", "words", "expected"), GRE_VALID)
def test_gre_parse(flags: int, words: tuple[int, ...], expected: GreHeader) -> None:
    data = gre(flags, expected.payload_length, expected.call_id, *words)
    header = parse_gre(data)
    assert header == expected
    assert header.payload_length == expected.payload_length
    assert header.call_id == expected.call_id
    assert header.sequence == expected.sequence
    assert header.ack == expected.ack
    assert header.length == 8 + 4 * len(words)
    assert len(data) == header.length + header.payload_length


@pytest.mark.parametrize(("flags", "words", "expected"), GRE_VALID)
def test_gre_encode(flags: int, words: tuple[int, ...], expected: GreHeader) -> None:
    data = gre(flags, expected.payload_length, expected.call_id, *words, payload=b"")
    assert expected.encode() == data
    assert len(data) == expected.length


def test_gre_lengths() -> None:
    assert GreHeader(0, 1).length == 8
    assert GreHeader(0, 1, sequence=1).length == 12
    assert GreHeader(0, 1, ack=1).length == 12
    assert GreHeader(0, 1, sequence=1, ack=1).length == 16
    assert GreHeader(0, 1).encode()[:2] == b"\x20\x01"


def test_gre_payload_may_be_followed_by_more_bytes() -> None:
    # The header's payload length must *fit* in what follows (e.g. Ethernet padding).
    assert parse_gre(gre(0x2001, 2, 9) + b"\0\0") == GreHeader(2, 9)


@pytest.mark.parametrize(("flags", "words", "expected"), GRE_VALID)
@pytest.mark.parametrize("new_call_id", [0, 0x00FF, 0xABCD, 0xFFFF])
def test_rewrite_gre_call_id_changes_only_bytes_6_7(
    flags: int, words: tuple[int, ...], expected: GreHeader, new_call_id: int
) -> None:
    data = gre(flags, expected.payload_length, expected.call_id, *words)
    out = rewrite_gre_call_id(data, new_call_id)
    assert len(out) == len(data)
    assert out[:6] == data[:6]
    assert out[6:8] == struct.pack("!H", new_call_id)
    assert out[8:] == data[8:]
    assert parse_gre(out) == GreHeader(
        expected.payload_length, new_call_id, expected.sequence, expected.ack
    )


@pytest.mark.parametrize("call_id", [-1, 0x10000, 70000])
def test_rewrite_gre_call_id_out_of_range(call_id: int) -> None:
    with pytest.raises(CodecError) as excinfo:
        rewrite_gre_call_id(gre(0x2001, 0, 1), call_id)
    assert not isinstance(excinfo.value, struct.error)


def test_rewrite_gre_call_id_rejects_invalid_gre() -> None:
    with pytest.raises(BadGreHeaderError):
        rewrite_gre_call_id(gre(0x2000, 0, 1), 2)
    with pytest.raises(TruncatedError):
        rewrite_gre_call_id(gre(0x2001, 4, 1, payload=b"ab"), 2)


GRE_BAD_HEADER = [
    pytest.param(gre(0x2000, 0, 1), id="version-0"),
    *[pytest.param(gre(0x2000 | v, 0, 1), id=f"version-{v}") for v in range(2, 8)],
    pytest.param(gre(0x2001, 0, 1, protocol=0x0800), id="protocol-ipv4"),
    pytest.param(gre(0x2001, 0, 1, protocol=0x880A), id="protocol-880a"),
    pytest.param(gre(0x0001, 0, 1), id="K-clear"),
    pytest.param(gre(0x1081, 0, 1, 1, 1), id="K-clear-S-A"),
    pytest.param(gre(0xA001, 0, 1), id="C"),
    pytest.param(gre(0x6001, 0, 1), id="R"),
    pytest.param(gre(0x2801, 0, 1), id="strict-source-route"),
    *[pytest.param(gre(0x2001 | r, 0, 1), id=f"recur-{r:#06x}") for r in (0x100, 0x200, 0x400)],
    *[pytest.param(gre(0x2001 | f, 0, 1), id=f"flags-{f:#06x}") for f in (8, 0x10, 0x20, 0x40)],
    pytest.param(gre(0xFFFF, 0, 1, 1, 1), id="all-bits"),
    pytest.param(gre(0x3089, 0, 1, 1, 1), id="SA-plus-flag"),
]


@pytest.mark.parametrize("data", GRE_BAD_HEADER)
def test_gre_bad_header(data: bytes) -> None:
    with pytest.raises(BadGreHeaderError):
        parse_gre(data)


GRE_TRUNCATED = [
    *[pytest.param(gre(0x2001, 0, 1)[:n], id=f"base-{n}") for n in range(8)],
    *[pytest.param(gre(0x3001, 0, 1, 5)[:n], id=f"seq-{n}") for n in range(8, 12)],
    *[pytest.param(gre(0x2081, 0, 1, 5)[:n], id=f"ack-only-{n}") for n in range(8, 12)],
    *[pytest.param(gre(0x3081, 0, 1, 5, 6)[:n], id=f"seq-ack-{n}") for n in range(8, 16)],
    pytest.param(gre(0x2001, 1, 1, payload=b""), id="payload-1-of-0"),
    pytest.param(gre(0x2001, 0xFFFF, 1, payload=b"x" * 100), id="payload-short"),
    pytest.param(gre(0x3001, 4, 1, 9, payload=b"abc"), id="seq-payload-short"),
    pytest.param(gre(0x3081, 4, 1, 9, 9, payload=b"abc"), id="seq-ack-payload-short"),
    pytest.param(gre(0x2081, 1, 1, 9, payload=b""), id="ack-payload-short"),
]


@pytest.mark.parametrize("data", GRE_TRUNCATED)
def test_gre_truncated(data: bytes) -> None:
    with pytest.raises(TruncatedError):
        parse_gre(data)


@pytest.mark.parametrize(
    "header",
    [
        GreHeader(0x10000, 1),
        GreHeader(-1, 1),
        GreHeader(0, 0x10000),
        GreHeader(0, 70000),
        GreHeader(0, 1, sequence=1 << 32),
        GreHeader(0, 1, sequence=-1),
        GreHeader(0, 1, sequence=1, ack=1 << 32),
        GreHeader(0, 1, ack=-1),
    ],
)
def test_gre_encode_out_of_range(header: GreHeader) -> None:
    with pytest.raises(CodecError) as excinfo:
        header.encode()
    assert not isinstance(excinfo.value, struct.error)
