"""Cross-check ``alg.codec`` against Scapy's independent PPTP and enhanced-GRE layers.

Both directions for every control message and for GRE: Scapy encodes and our codec
decodes, our codec encodes and Scapy decodes, comparing field by field.

Scapy differences from RFC 2637 (Scapy 2.8, ``scapy/layers/pptp.py``, ``scapy/layers/l2.py``),
normalised or pinned down below:

* ``PPTPIncomingCallReply`` defaults to ``len=148`` although it serializes the RFC's 24
  bytes, so its default output has a wrong Length (our codec rejects it); set ``len=24``.
* ``PPTP.dispatch_hook`` picks the message class from byte 9 only, the low byte of the
  16-bit Control Message Type, so e.g. type 0x0105 decodes as an Echo-Request; RFC 2637
  types are 16 bits and our codec rejects it.
* Scapy validates nothing on decode: not the Magic Cookie, the Length, nor any reserved
  field (it exposes them as ``reserved_0``, ``reserved_1``, ...).
* Field names differ (``pkt_window_size`` for Packet Recv. Window Size, ``channel_id`` for
  Physical Channel ID, ``bearer_type`` for Incoming-Call-Request's Call Bearer Type,
  ``call_statistic``, ``time_out_errors``, ...); framing and bearer capabilities are
  ``FlagValue`` objects, compared as ``int``.
* ``StrFixedLenField`` pads a short value with NULs on build and keeps the padding on
  decode; our codec keeps the raw fixed-size bytes, so short Scapy values are padded here.
* Some Scapy defaults are not RFC defaults (Set-Link-Info ACCMs 0 rather than 0xFFFFFFFF,
  host name "linux"); every field is set explicitly here, so they do not matter.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from scapy.layers import pptp as sp
from scapy.layers.l2 import GRE, GRE_PPTP
from scapy.packet import Packet, Raw

from alg.codec import (
    MESSAGE_CLASSES,
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
    parse_gre,
    parse_message,
    rewrite_gre_call_id,
)
from alg.errors import BadLengthError, ReservedFieldError, UnknownControlTypeError

COOKIE = 0x1A2B3C4D

# ours -> (Scapy class, [(our field, Scapy field, kind, distinctive value)]).
# kind: "B"/"H"/"I" integer width, or the byte size of a fixed text field. Values given
# shorter than their size are padded by Scapy on build and normalised here.
Field = tuple[str, str, str | int, int | bytes]
TABLE: dict[type[ControlMessage], tuple[type[Packet], list[Field]]] = {
    StartControlConnectionRequest: (
        sp.PPTPStartControlConnectionRequest,
        [
            ("protocol_version", "protocol_version", "H", 0x0100),
            ("framing_capabilities", "framing_capabilities", "I", 0x00000003),
            ("bearer_capabilities", "bearer_capabilities", "I", 0x00000001),
            ("maximum_channels", "maximum_channels", "H", 0x1357),
            ("firmware_revision", "firmware_revision", "H", 0x2468),
            ("host_name", "host_name", 64, b"client.inside"),
            ("vendor_string", "vendor_string", 64, b"\xffvendor" * 8),
        ],
    ),
    StartControlConnectionReply: (
        sp.PPTPStartControlConnectionReply,
        [
            ("protocol_version", "protocol_version", "H", 0x0201),
            ("result_code", "result_code", "B", 5),
            ("error_code", "error_code", "B", 6),
            ("framing_capabilities", "framing_capabilities", "I", 0x00000002),
            ("bearer_capabilities", "bearer_capabilities", "I", 0x00000003),
            ("maximum_channels", "maximum_channels", "H", 7),
            ("firmware_revision", "firmware_revision", "H", 0xFEDC),
            ("host_name", "host_name", 64, b"server"),
            ("vendor_string", "vendor_string", 64, b"pptpd 1.4"),
        ],
    ),
    StopControlConnectionRequest: (
        sp.PPTPStopControlConnectionRequest,
        [
            ("reason", "reason", "B", 3),
        ],
    ),
    StopControlConnectionReply: (
        sp.PPTPStopControlConnectionReply,
        [
            ("result_code", "result_code", "B", 2),
            ("error_code", "error_code", "B", 4),
        ],
    ),
    EchoRequest: (
        sp.PPTPEchoRequest,
        [
            ("identifier", "identifier", "I", 0x89ABCDEF),
        ],
    ),
    EchoReply: (
        sp.PPTPEchoReply,
        [
            ("identifier", "identifier", "I", 0x89ABCDEF),
            ("result_code", "result_code", "B", 2),
            ("error_code", "error_code", "B", 5),
        ],
    ),
    OutgoingCallRequest: (
        sp.PPTPOutgoingCallRequest,
        [
            ("call_id", "call_id", "H", 0xA11C),
            ("call_serial_number", "call_serial_number", "H", 0x0BB0),
            ("minimum_bps", "minimum_bps", "I", 300),
            ("maximum_bps", "maximum_bps", "I", 0x7FFFFFFF),
            ("bearer_type", "bearer_type", "I", 1),
            ("framing_type", "framing_type", "I", 2),
            ("packet_recv_window", "pkt_window_size", "H", 0x0102),
            ("packet_processing_delay", "pkt_proc_delay", "H", 0x0304),
            ("phone_number_length", "phone_number_len", "H", 11),
            ("phone_number", "phone_number", 64, b"+1555123456"),
            ("subaddress", "subaddress", 64, b"room 42"),
        ],
    ),
    OutgoingCallReply: (
        sp.PPTPOutgoingCallReply,
        [
            ("call_id", "call_id", "H", 0xB0B0),
            ("peer_call_id", "peer_call_id", "H", 0xA11C),
            ("result_code", "result_code", "B", 7),
            ("error_code", "error_code", "B", 1),
            ("cause_code", "cause_code", "H", 0x0506),
            ("connect_speed", "connect_speed", "I", 0x12345678),
            ("packet_recv_window", "pkt_window_size", "H", 0x0708),
            ("packet_processing_delay", "pkt_proc_delay", "H", 0x090A),
            ("physical_channel_id", "channel_id", "I", 0xCAFEBABE),
        ],
    ),
    IncomingCallRequest: (
        sp.PPTPIncomingCallRequest,
        [
            ("call_id", "call_id", "H", 0xB0B1),
            ("call_serial_number", "call_serial_number", "H", 0x0C0D),
            ("call_bearer_type", "bearer_type", "I", 2),
            ("physical_channel_id", "channel_id", "I", 0x0E0F1011),
            ("dialed_number_length", "dialed_number_len", "H", 3),
            ("dialing_number_length", "dialing_number_len", "H", 4),
            ("dialed_number", "dialed_number", 64, b"911"),
            ("dialing_number", "dialing_number", 64, b"5550"),
            ("subaddress", "subaddress", 64, b"\x01\x02\x03" * 21 + b"\x04"),
        ],
    ),
    IncomingCallReply: (
        sp.PPTPIncomingCallReply,
        [
            ("call_id", "call_id", "H", 0xA11D),
            ("peer_call_id", "peer_call_id", "H", 0xB0B1),
            ("result_code", "result_code", "B", 3),
            ("error_code", "error_code", "B", 2),
            ("packet_recv_window", "pkt_window_size", "H", 0x1213),
            ("packet_transmit_delay", "pkt_transmit_delay", "H", 0x1415),
        ],
    ),
    IncomingCallConnected: (
        sp.PPTPIncomingCallConnected,
        [
            ("peer_call_id", "peer_call_id", "H", 0xA11D),
            ("connect_speed", "connect_speed", "I", 0x16171819),
            ("packet_recv_window", "pkt_window_size", "H", 0x1A1B),
            ("packet_transmit_delay", "pkt_transmit_delay", "H", 0x1C1D),
            ("framing_type", "framing_type", "I", 3),
        ],
    ),
    CallClearRequest: (
        sp.PPTPCallClearRequest,
        [
            ("call_id", "call_id", "H", 0xA11E),
        ],
    ),
    CallDisconnectNotify: (
        sp.PPTPCallDisconnectNotify,
        [
            ("call_id", "call_id", "H", 0xB0B2),
            ("result_code", "result_code", "B", 3),
            ("error_code", "error_code", "B", 6),
            ("cause_code", "cause_code", "H", 0x1E1F),
            ("call_statistics", "call_statistic", 128, b"bytes in 1234, out 5678"),
        ],
    ),
    WanErrorNotify: (
        sp.PPTPWANErrorNotify,
        [
            ("peer_call_id", "peer_call_id", "H", 0xA11F),
            ("crc_errors", "crc_errors", "I", 0x01010101),
            ("framing_errors", "framing_errors", "I", 0x02020202),
            ("hardware_overruns", "hardware_overruns", "I", 0x03030303),
            ("buffer_overruns", "buffer_overruns", "I", 0x04040404),
            ("timeout_errors", "time_out_errors", "I", 0x05050505),
            ("alignment_errors", "alignment_errors", "I", 0x06060606),
        ],
    ),
    SetLinkInfo: (
        sp.PPTPSetLinkInfo,
        [
            ("peer_call_id", "peer_call_id", "H", 0xB0B3),
            ("send_accm", "send_accm", "I", 0x000A0000),
            ("receive_accm", "receive_accm", "I", 0xFFFFFFFF),
        ],
    ),
}

# Scapy quirk: PPTPIncomingCallReply's len defaults to 148 but it serializes 24 bytes.
SCAPY_EXTRA: dict[type[ControlMessage], dict[str, int]] = {IncomingCallReply: {"len": 24}}


def _norm(kind: str | int, value: object) -> int | bytes:
    """Scapy's value as our codec holds it: int, or the NUL-padded fixed-size bytes."""
    if isinstance(kind, int):
        assert isinstance(value, bytes | str)
        raw = value.encode("latin-1") if isinstance(value, str) else value
        assert len(raw) <= kind
        return raw.ljust(kind, b"\0")
    assert value is not None
    return int(value)  # type: ignore[call-overload, no-any-return]


def _extreme(kind: str | int) -> int | bytes:
    if isinstance(kind, int):
        return b"\xff" * kind
    return (1 << (8 * struct.calcsize("!" + kind))) - 1


VARIANTS = ["distinctive", "extreme", "zero"]


def _values(fields: list[Field], variant: str) -> list[tuple[str, str, str | int, int | bytes]]:
    if variant == "distinctive":
        return fields
    if variant == "extreme":
        return [(o, s, k, _extreme(k)) for o, s, k, _ in fields]
    return [(o, s, k, b"" if isinstance(k, int) else 0) for o, s, k, _ in fields]


CASES = [
    pytest.param(cls, variant, id=f"{cls.__name__}-{variant}")
    for cls in TABLE
    for variant in VARIANTS
]


def test_table_covers_every_message_and_field() -> None:
    assert set(TABLE) == set(MESSAGE_CLASSES.values())
    for cls, (scapy_cls, fields) in TABLE.items():
        ours = [f.name for f in dataclasses.fields(cls)]
        assert [o for o, _, _, _ in fields] == ours, cls.__name__
        scapy_names = {f.name for f in scapy_cls.fields_desc}
        header = {"len", "type", "magic_cookie", "ctrl_msg_type", "reserved_0"}
        reserved = {n for n in scapy_names if n.startswith("reserved_")} - {"reserved_0"}
        assert scapy_names - header - reserved == {s for _, s, _, _ in fields}, cls.__name__
        assert scapy_cls.ctrl_msg_type.default == cls.TYPE  # type: ignore[attr-defined]


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_scapy_encodes_ours_decodes(cls: type[ControlMessage], variant: str) -> None:
    scapy_cls, fields = TABLE[cls]
    values = _values(fields, variant)
    pkt = scapy_cls(**{s: v for _, s, _, v in values}, **SCAPY_EXTRA.get(cls, {}))
    raw = bytes(pkt)
    assert len(raw) == cls.LENGTH
    message = parse_message(raw)
    assert type(message) is cls
    for ours, _, kind, value in values:
        assert getattr(message, ours) == _norm(kind, value), ours
    assert message.encode() == raw


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_ours_encodes_scapy_decodes(cls: type[ControlMessage], variant: str) -> None:
    scapy_cls, fields = TABLE[cls]
    values = _values(fields, variant)
    message = cls(**{o: _norm(k, v) for o, _, k, v in values})  # type: ignore[arg-type]
    raw = message.encode()
    pkt = sp.PPTP(raw)
    assert type(pkt) is scapy_cls
    assert (pkt.len, pkt.type, pkt.magic_cookie) == (cls.LENGTH, 1, COOKIE)
    assert (pkt.ctrl_msg_type, pkt.reserved_0) == (cls.TYPE, 0)
    for name in (f.name for f in scapy_cls.fields_desc):
        if name.startswith("reserved_"):
            assert getattr(pkt, name) == 0, name
    for ours, theirs, kind, _ in values:
        assert _norm(kind, getattr(pkt, theirs)) == getattr(message, ours), ours
    assert not pkt.payload  # Scapy consumed exactly the message
    assert bytes(pkt) == raw


@pytest.mark.parametrize("cls", list(TABLE))
def test_same_values_same_bytes(cls: type[ControlMessage]) -> None:
    scapy_cls, fields = TABLE[cls]
    pkt = scapy_cls(**{s: v for _, s, _, v in fields}, **SCAPY_EXTRA.get(cls, {}))
    message = cls(**{o: _norm(k, v) for o, _, k, v in fields})  # type: ignore[arg-type]
    assert bytes(pkt) == message.encode()


def test_scapy_quirk_incoming_call_reply_default_length() -> None:
    pkt = sp.PPTPIncomingCallReply(call_id=0xA11D, peer_call_id=0xB0B1)
    raw = bytes(pkt)
    # Scapy writes 24 bytes but a Length of 148; RFC 2637 section 2.10 says 24.
    assert len(raw) == 24
    assert struct.unpack_from("!H", raw)[0] == 148
    with pytest.raises(BadLengthError):
        parse_message(raw)
    fixed = bytes(sp.PPTPIncomingCallReply(call_id=0xA11D, peer_call_id=0xB0B1, len=24))
    assert parse_message(fixed) == IncomingCallReply(
        call_id=0xA11D, peer_call_id=0xB0B1, packet_recv_window=64
    )


def test_scapy_quirk_dispatch_on_low_byte_of_control_type() -> None:
    raw = bytearray(EchoRequest(identifier=7).encode())
    raw[8] = 0x01  # Control Message Type 0x0105
    assert type(sp.PPTP(bytes(raw))) is sp.PPTPEchoRequest
    with pytest.raises(UnknownControlTypeError):
        parse_message(bytes(raw))


def test_scapy_does_not_check_reserved_fields() -> None:
    pkt = sp.PPTPCallClearRequest(call_id=0xA11E, reserved_1=0x0001)
    assert sp.PPTP(bytes(pkt)).reserved_1 == 1
    with pytest.raises(ReservedFieldError):
        parse_message(bytes(pkt))


# --- enhanced GRE ---------------------------------------------------------------------

GRE_CASES = [
    pytest.param(None, None, b"", id="plain-no-payload"),
    pytest.param(None, None, b"\xff\x03\x00\x21payload", id="plain"),
    pytest.param(0x01020304, None, b"\xff\x03ppp", id="seq"),
    pytest.param(None, 0xFEDCBA98, b"", id="ack-only"),
    pytest.param(None, 0, b"\x21x", id="ack-with-payload"),
    pytest.param(0xFFFFFFFF, 0x11223344, b"p" * 300, id="seq-ack"),
]


def _scapy_gre(call_id: int, seq: int | None, ack: int | None, payload: bytes) -> Packet:
    kwargs: dict[str, int] = {"call_id": call_id}
    if seq is not None:
        kwargs |= {"seqnum_present": 1, "sequence_number": seq}
    if ack is not None:
        kwargs |= {"acknum_present": 1, "ack_number": ack}
    pkt = GRE_PPTP(**kwargs)
    return pkt / Raw(payload) if payload else pkt


@pytest.mark.parametrize(("seq", "ack", "payload"), GRE_CASES)
def test_gre_scapy_encodes_ours_decodes(seq: int | None, ack: int | None, payload: bytes) -> None:
    raw = bytes(_scapy_gre(0xB0B0, seq, ack, payload))
    header = parse_gre(raw)
    assert header == GreHeader(len(payload), 0xB0B0, seq, ack)
    assert raw[header.length :] == payload
    assert header.encode() == raw[: header.length]


@pytest.mark.parametrize(("seq", "ack", "payload"), GRE_CASES)
def test_gre_ours_encodes_scapy_decodes(seq: int | None, ack: int | None, payload: bytes) -> None:
    raw = GreHeader(len(payload), 0xA11C, seq, ack).encode() + payload
    pkt = GRE(raw)
    assert type(pkt) is GRE_PPTP  # dispatched on protocol type 0x880B
    assert (pkt.chksum_present, pkt.routing_present, pkt.key_present) == (0, 0, 1)
    assert (pkt.strict_route_source, pkt.recursion_control, pkt.flags) == (0, 0, 0)
    assert (pkt.version, pkt.proto) == (1, 0x880B)
    assert (pkt.payload_len, pkt.call_id) == (len(payload), 0xA11C)
    assert pkt.seqnum_present == (seq is not None)
    assert pkt.acknum_present == (ack is not None)
    if seq is not None:
        assert pkt.sequence_number == seq
    if ack is not None:
        assert pkt.ack_number == ack
    assert bytes(pkt.payload) == payload
    assert bytes(pkt) == raw


@pytest.mark.parametrize(("seq", "ack", "payload"), GRE_CASES)
def test_gre_rewrite_seen_by_scapy(seq: int | None, ack: int | None, payload: bytes) -> None:
    raw = bytes(_scapy_gre(0xB0B0, seq, ack, payload))
    pkt = GRE(rewrite_gre_call_id(raw, 0x0102))
    expected = _scapy_gre(0x0102, seq, ack, payload)
    assert pkt.call_id == 0x0102
    assert bytes(pkt) == bytes(expected)
