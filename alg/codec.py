"""Codec for the 15 PPTP control messages and the enhanced GRE header (RFC 2637).

Every control message has a fixed length (RFC 2637 section 2). Parsing validates the
header (Length, PPTP Message Type, Magic Cookie, Control Message Type, Reserved0) and
every reserved field of the body; serializing writes reserved fields as zero, so
``parse(m.encode()) == m`` and, for valid input, ``parse(b).encode() == b``. Text fields
(host name, vendor, phone numbers, statistics) are kept as the raw fixed-size bytes.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from alg.errors import (
    BadGreHeaderError,
    BadLengthError,
    BadMagicCookieError,
    BadMessageTypeError,
    CodecError,
    ReservedFieldError,
    TruncatedError,
    UnknownControlTypeError,
)

PPTP_PORT = 1723
"""The TCP port of PPTP control connections (RFC 2637 section 1.3)."""
MAGIC_COOKIE = 0x1A2B3C4D
PPTP_CONTROL_MESSAGE = 1
HEADER = struct.Struct("!HHIHH")
HEADER_LENGTH = HEADER.size


class ControlType(IntEnum):
    """Control Message Type (RFC 2637 section 2)."""

    START_CONTROL_CONNECTION_REQUEST = 1
    START_CONTROL_CONNECTION_REPLY = 2
    STOP_CONTROL_CONNECTION_REQUEST = 3
    STOP_CONTROL_CONNECTION_REPLY = 4
    ECHO_REQUEST = 5
    ECHO_REPLY = 6
    OUTGOING_CALL_REQUEST = 7
    OUTGOING_CALL_REPLY = 8
    INCOMING_CALL_REQUEST = 9
    INCOMING_CALL_REPLY = 10
    INCOMING_CALL_CONNECTED = 11
    CALL_CLEAR_REQUEST = 12
    CALL_DISCONNECT_NOTIFY = 13
    WAN_ERROR_NOTIFY = 14
    SET_LINK_INFO = 15


class OutgoingCallResult(IntEnum):
    """Result Code of an Outgoing-Call-Reply (RFC 2637 section 2.8)."""

    CONNECTED = 1
    GENERAL_ERROR = 2
    NO_CARRIER = 3
    BUSY = 4
    NO_DIAL_TONE = 5
    TIME_OUT = 6
    DO_NOT_ACCEPT = 7


_RESERVED = "_reserved"

M = TypeVar("M", bound="ControlMessage")


@dataclass(frozen=True)
class ControlMessage:
    """Base of the control messages: the 12-byte header plus a fixed-layout body.

    Subclasses declare ``TYPE`` and ``LAYOUT``: the body's fields in wire order as
    ``(name, struct code)``; a name of ``"_reserved"`` is an integer field that must be
    zero.
    """

    TYPE: ClassVar[ControlType]
    LAYOUT: ClassVar[tuple[tuple[str, str], ...]]
    BODY: ClassVar[struct.Struct]
    LENGTH: ClassVar[int]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.BODY = struct.Struct("!" + "".join(code for _, code in cls.LAYOUT))
        cls.LENGTH = HEADER_LENGTH + cls.BODY.size

    def encode(self) -> bytes:
        """Serialize the whole message, header included, reserved fields as zero."""
        values = [0 if name == _RESERVED else getattr(self, name) for name, _ in self.LAYOUT]
        for (name, code), value in zip(self.LAYOUT, values, strict=True):
            # struct's "Ns" would silently pad a short value and truncate a long one.
            if code.endswith("s") and (
                not isinstance(value, bytes | bytearray) or len(value) != int(code[:-1])
            ):
                raise CodecError(
                    f"cannot encode {type(self).__name__}: {name} is not {code[:-1]} bytes"
                )
        try:
            body = self.BODY.pack(*values)
        except struct.error as exc:
            raise CodecError(f"cannot encode {type(self).__name__}: {exc}") from exc
        header = HEADER.pack(self.LENGTH, PPTP_CONTROL_MESSAGE, MAGIC_COOKIE, self.TYPE, 0)
        return header + body

    @classmethod
    def decode_body(cls: type[M], data: bytes) -> M:
        """Build the message from a whole message whose header is already validated."""
        values = cls.BODY.unpack_from(data, HEADER_LENGTH)
        fields: dict[str, object] = {}
        for (name, _), value in zip(cls.LAYOUT, values, strict=True):
            if name == _RESERVED:
                if value != 0:
                    raise ReservedFieldError(f"{cls.__name__}: reserved field is not zero")
            else:
                fields[name] = value
        return cls(**fields)


@dataclass(frozen=True)
class StartControlConnectionRequest(ControlMessage):
    """Start-Control-Connection-Request (section 2.1)."""

    TYPE = ControlType.START_CONTROL_CONNECTION_REQUEST
    LAYOUT = (
        ("protocol_version", "H"), (_RESERVED, "H"), ("framing_capabilities", "I"),
        ("bearer_capabilities", "I"), ("maximum_channels", "H"), ("firmware_revision", "H"),
        ("host_name", "64s"), ("vendor_string", "64s"),
    )
    protocol_version: int = 0x0100
    framing_capabilities: int = 0
    bearer_capabilities: int = 0
    maximum_channels: int = 0
    firmware_revision: int = 0
    host_name: bytes = b"\0" * 64
    vendor_string: bytes = b"\0" * 64


@dataclass(frozen=True)
class StartControlConnectionReply(ControlMessage):
    """Start-Control-Connection-Reply (section 2.2)."""

    TYPE = ControlType.START_CONTROL_CONNECTION_REPLY
    LAYOUT = (
        ("protocol_version", "H"), ("result_code", "B"), ("error_code", "B"),
        ("framing_capabilities", "I"), ("bearer_capabilities", "I"),
        ("maximum_channels", "H"), ("firmware_revision", "H"),
        ("host_name", "64s"), ("vendor_string", "64s"),
    )
    protocol_version: int = 0x0100
    result_code: int = 1
    error_code: int = 0
    framing_capabilities: int = 0
    bearer_capabilities: int = 0
    maximum_channels: int = 0
    firmware_revision: int = 0
    host_name: bytes = b"\0" * 64
    vendor_string: bytes = b"\0" * 64


@dataclass(frozen=True)
class StopControlConnectionRequest(ControlMessage):
    """Stop-Control-Connection-Request (section 2.3)."""

    TYPE = ControlType.STOP_CONTROL_CONNECTION_REQUEST
    LAYOUT = (("reason", "B"), (_RESERVED, "B"), (_RESERVED, "H"))
    reason: int = 1


@dataclass(frozen=True)
class StopControlConnectionReply(ControlMessage):
    """Stop-Control-Connection-Reply (section 2.4)."""

    TYPE = ControlType.STOP_CONTROL_CONNECTION_REPLY
    LAYOUT = (("result_code", "B"), ("error_code", "B"), (_RESERVED, "H"))
    result_code: int = 1
    error_code: int = 0


@dataclass(frozen=True)
class EchoRequest(ControlMessage):
    """Echo-Request (section 2.5)."""

    TYPE = ControlType.ECHO_REQUEST
    LAYOUT = (("identifier", "I"),)
    identifier: int = 0


@dataclass(frozen=True)
class EchoReply(ControlMessage):
    """Echo-Reply (section 2.6)."""

    TYPE = ControlType.ECHO_REPLY
    LAYOUT = (("identifier", "I"), ("result_code", "B"), ("error_code", "B"), (_RESERVED, "H"))
    identifier: int = 0
    result_code: int = 1
    error_code: int = 0


@dataclass(frozen=True)
class OutgoingCallRequest(ControlMessage):
    """Outgoing-Call-Request (section 2.7), PNS to PAC; carries the PNS's Call ID."""

    TYPE = ControlType.OUTGOING_CALL_REQUEST
    LAYOUT = (
        ("call_id", "H"), ("call_serial_number", "H"), ("minimum_bps", "I"),
        ("maximum_bps", "I"), ("bearer_type", "I"), ("framing_type", "I"),
        ("packet_recv_window", "H"), ("packet_processing_delay", "H"),
        ("phone_number_length", "H"), (_RESERVED, "H"),
        ("phone_number", "64s"), ("subaddress", "64s"),
    )
    call_id: int = 0
    call_serial_number: int = 0
    minimum_bps: int = 0
    maximum_bps: int = 0
    bearer_type: int = 3
    framing_type: int = 3
    packet_recv_window: int = 0
    packet_processing_delay: int = 0
    phone_number_length: int = 0
    phone_number: bytes = b"\0" * 64
    subaddress: bytes = b"\0" * 64


@dataclass(frozen=True)
class OutgoingCallReply(ControlMessage):
    """Outgoing-Call-Reply (section 2.8), PAC to PNS; Call ID is the PAC's."""

    TYPE = ControlType.OUTGOING_CALL_REPLY
    LAYOUT = (
        ("call_id", "H"), ("peer_call_id", "H"), ("result_code", "B"), ("error_code", "B"),
        ("cause_code", "H"), ("connect_speed", "I"), ("packet_recv_window", "H"),
        ("packet_processing_delay", "H"), ("physical_channel_id", "I"),
    )
    call_id: int = 0
    peer_call_id: int = 0
    result_code: int = OutgoingCallResult.CONNECTED
    error_code: int = 0
    cause_code: int = 0
    connect_speed: int = 0
    packet_recv_window: int = 0
    packet_processing_delay: int = 0
    physical_channel_id: int = 0


@dataclass(frozen=True)
class IncomingCallRequest(ControlMessage):
    """Incoming-Call-Request (section 2.9), PAC to PNS; Call ID is the PAC's."""

    TYPE = ControlType.INCOMING_CALL_REQUEST
    LAYOUT = (
        ("call_id", "H"), ("call_serial_number", "H"), ("call_bearer_type", "I"),
        ("physical_channel_id", "I"), ("dialed_number_length", "H"),
        ("dialing_number_length", "H"), ("dialed_number", "64s"), ("dialing_number", "64s"),
        ("subaddress", "64s"),
    )
    call_id: int = 0
    call_serial_number: int = 0
    call_bearer_type: int = 1
    physical_channel_id: int = 0
    dialed_number_length: int = 0
    dialing_number_length: int = 0
    dialed_number: bytes = b"\0" * 64
    dialing_number: bytes = b"\0" * 64
    subaddress: bytes = b"\0" * 64


@dataclass(frozen=True)
class IncomingCallReply(ControlMessage):
    """Incoming-Call-Reply (section 2.10), PNS to PAC; Call ID is the PNS's."""

    TYPE = ControlType.INCOMING_CALL_REPLY
    LAYOUT = (
        ("call_id", "H"), ("peer_call_id", "H"), ("result_code", "B"), ("error_code", "B"),
        ("packet_recv_window", "H"), ("packet_transmit_delay", "H"), (_RESERVED, "H"),
    )
    call_id: int = 0
    peer_call_id: int = 0
    result_code: int = 1
    error_code: int = 0
    packet_recv_window: int = 0
    packet_transmit_delay: int = 0


@dataclass(frozen=True)
class IncomingCallConnected(ControlMessage):
    """Incoming-Call-Connected (section 2.11), PAC to PNS; carries the PNS's Call ID."""

    TYPE = ControlType.INCOMING_CALL_CONNECTED
    LAYOUT = (
        ("peer_call_id", "H"), (_RESERVED, "H"), ("connect_speed", "I"),
        ("packet_recv_window", "H"), ("packet_transmit_delay", "H"), ("framing_type", "I"),
    )
    peer_call_id: int = 0
    connect_speed: int = 0
    packet_recv_window: int = 0
    packet_transmit_delay: int = 0
    framing_type: int = 3


@dataclass(frozen=True)
class CallClearRequest(ControlMessage):
    """Call-Clear-Request (section 2.12), PNS to PAC; Call ID is the PNS's."""

    TYPE = ControlType.CALL_CLEAR_REQUEST
    LAYOUT = (("call_id", "H"), (_RESERVED, "H"))
    call_id: int = 0


@dataclass(frozen=True)
class CallDisconnectNotify(ControlMessage):
    """Call-Disconnect-Notify (section 2.13), PAC to PNS.

    Implementations disagree on whose Call ID it carries; the engine accepts both.
    """

    TYPE = ControlType.CALL_DISCONNECT_NOTIFY
    LAYOUT = (
        ("call_id", "H"), ("result_code", "B"), ("error_code", "B"), ("cause_code", "H"),
        (_RESERVED, "H"), ("call_statistics", "128s"),
    )
    call_id: int = 0
    result_code: int = 1
    error_code: int = 0
    cause_code: int = 0
    call_statistics: bytes = b"\0" * 128


@dataclass(frozen=True)
class WanErrorNotify(ControlMessage):
    """WAN-Error-Notify (section 2.14), PAC to PNS; carries the PNS's Call ID."""

    TYPE = ControlType.WAN_ERROR_NOTIFY
    LAYOUT = (
        ("peer_call_id", "H"), (_RESERVED, "H"), ("crc_errors", "I"), ("framing_errors", "I"),
        ("hardware_overruns", "I"), ("buffer_overruns", "I"), ("timeout_errors", "I"),
        ("alignment_errors", "I"),
    )
    peer_call_id: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    hardware_overruns: int = 0
    buffer_overruns: int = 0
    timeout_errors: int = 0
    alignment_errors: int = 0


@dataclass(frozen=True)
class SetLinkInfo(ControlMessage):
    """Set-Link-Info (section 2.15), either way; carries the receiver's Call ID."""

    TYPE = ControlType.SET_LINK_INFO
    LAYOUT = (("peer_call_id", "H"), (_RESERVED, "H"), ("send_accm", "I"), ("receive_accm", "I"))
    peer_call_id: int = 0
    send_accm: int = 0xFFFFFFFF
    receive_accm: int = 0xFFFFFFFF


MESSAGE_CLASSES: dict[ControlType, type[ControlMessage]] = {
    cls.TYPE: cls
    for cls in (
        StartControlConnectionRequest, StartControlConnectionReply,
        StopControlConnectionRequest, StopControlConnectionReply, EchoRequest, EchoReply,
        OutgoingCallRequest, OutgoingCallReply, IncomingCallRequest, IncomingCallReply,
        IncomingCallConnected, CallClearRequest, CallDisconnectNotify, WanErrorNotify,
        SetLinkInfo,
    )
}


def parse_header(data: bytes) -> tuple[int, ControlType]:
    """Validate the 12-byte control message header at the start of ``data``.

    Args:
        data: at least the first 12 bytes of a message; more may follow.

    Returns:
        The message's Length and Control Message Type.

    Raises:
        TruncatedError: fewer than 12 bytes.
        BadMessageTypeError, BadMagicCookieError, UnknownControlTypeError,
        ReservedFieldError, BadLengthError: an invalid header.
    """
    if len(data) < HEADER_LENGTH:
        raise TruncatedError(f"control header needs {HEADER_LENGTH} bytes, got {len(data)}")
    length, pptp_type, cookie, ctype, reserved0 = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE:
        raise BadMagicCookieError(f"magic cookie {cookie:#010x}")
    if pptp_type != PPTP_CONTROL_MESSAGE:
        raise BadMessageTypeError(f"PPTP message type {pptp_type}")
    try:
        control_type = ControlType(ctype)
    except ValueError as exc:
        raise UnknownControlTypeError(f"control message type {ctype}") from exc
    if reserved0 != 0:
        raise ReservedFieldError(f"{control_type.name}: Reserved0 is {reserved0:#06x}")
    expected = MESSAGE_CLASSES[control_type].LENGTH
    if length != expected:
        raise BadLengthError(f"{control_type.name}: length {length}, expected {expected}")
    return length, control_type


def parse_message(data: bytes) -> ControlMessage:
    """Parse exactly one whole control message.

    Raises:
        CodecError: any subclass, for every malformed case; trailing bytes included.
    """
    length, control_type = parse_header(data)
    if len(data) < length:
        raise TruncatedError(f"{control_type.name}: {len(data)} of {length} bytes")
    if len(data) > length:
        raise BadLengthError(f"{control_type.name}: {len(data) - length} bytes past Length")
    return MESSAGE_CLASSES[control_type].decode_body(data)


def replace(message: M, **changes: int) -> M:
    """Return ``message`` with the given fields changed (a typed ``dataclasses.replace``)."""
    return dataclasses.replace(message, **changes)


# Enhanced GRE, RFC 2637 section 4.1.
GRE_FLAG_C = 0x8000
GRE_FLAG_R = 0x4000
GRE_FLAG_K = 0x2000
GRE_FLAG_S = 0x1000
GRE_FLAG_STRICT = 0x0800
GRE_RECUR = 0x0700
GRE_FLAG_A = 0x0080
GRE_FLAGS = 0x0078
GRE_VERSION = 0x0007
GRE_PROTOCOL_PPP = 0x880B
GRE_BASE = struct.Struct("!HHHH")
GRE_WORD = struct.Struct("!I")
GRE_CALL_ID = struct.Struct("!H")
GRE_CALL_ID_OFFSET = 6
_GRE_MUST_BE_ZERO = GRE_FLAG_C | GRE_FLAG_R | GRE_FLAG_STRICT | GRE_RECUR | GRE_FLAGS


@dataclass(frozen=True)
class GreHeader:
    """The enhanced GRE header: 8 bytes, plus sequence and acknowledgement when present.

    Attributes:
        payload_length: the Key's high half, bytes of payload after the header.
        call_id: the Key's low half, the *receiver's* Call ID.
        sequence: the sequence number, or None when S is clear.
        ack: the acknowledgement number, or None when A is clear.
    """

    payload_length: int
    call_id: int
    sequence: int | None = None
    ack: int | None = None

    @property
    def length(self) -> int:
        """Header length in bytes: 8, 12 or 16."""
        return 8 + (4 if self.sequence is not None else 0) + (4 if self.ack is not None else 0)

    def encode(self) -> bytes:
        """Serialize the header (no payload)."""
        flags = GRE_FLAG_K | 1
        if self.sequence is not None:
            flags |= GRE_FLAG_S
        if self.ack is not None:
            flags |= GRE_FLAG_A
        try:
            out = GRE_BASE.pack(flags, GRE_PROTOCOL_PPP, self.payload_length, self.call_id)
            if self.sequence is not None:
                out += GRE_WORD.pack(self.sequence)
            if self.ack is not None:
                out += GRE_WORD.pack(self.ack)
        except struct.error as exc:
            raise CodecError(f"cannot encode GRE header: {exc}") from exc
        return out


def parse_gre(data: bytes) -> GreHeader:
    """Parse and validate the enhanced GRE header at the start of ``data``.

    ``data`` is the IP payload; the header's payload length must fit in what follows.

    Raises:
        TruncatedError: fewer bytes than the header or its payload length needs.
        BadGreHeaderError: a version, protocol or flag that enhanced GRE forbids.
    """
    if len(data) < GRE_BASE.size:
        raise TruncatedError(f"GRE header needs 8 bytes, got {len(data)}")
    flags, protocol, payload_length, call_id = GRE_BASE.unpack_from(data)
    if flags & GRE_VERSION != 1:
        raise BadGreHeaderError(f"GRE version {flags & GRE_VERSION}, expected 1")
    if protocol != GRE_PROTOCOL_PPP:
        raise BadGreHeaderError(f"GRE protocol type {protocol:#06x}, expected 0x880b")
    if not flags & GRE_FLAG_K:
        raise BadGreHeaderError("GRE key bit is clear")
    if flags & _GRE_MUST_BE_ZERO:
        raise BadGreHeaderError(f"GRE flags {flags:#06x} set bits that must be zero")
    offset = GRE_BASE.size
    sequence = ack = None
    if flags & GRE_FLAG_S:
        if len(data) < offset + 4:
            raise TruncatedError("GRE sequence number missing")
        (sequence,) = GRE_WORD.unpack_from(data, offset)
        offset += 4
    if flags & GRE_FLAG_A:
        if len(data) < offset + 4:
            raise TruncatedError("GRE acknowledgement number missing")
        (ack,) = GRE_WORD.unpack_from(data, offset)
        offset += 4
    if len(data) - offset < payload_length:
        raise TruncatedError(f"GRE payload {len(data) - offset} of {payload_length} bytes")
    return GreHeader(payload_length, call_id, sequence, ack)


def rewrite_gre_call_id(data: bytes, call_id: int) -> bytes:
    """Return the GRE packet ``data`` with the Key's Call ID set to ``call_id``.

    Sequence and acknowledgement numbers and the payload pass through untouched.

    Raises:
        CodecError: ``data`` is not valid enhanced GRE, or ``call_id`` is not 0..65535.
    """
    parse_gre(data)
    try:
        packed = GRE_CALL_ID.pack(call_id)
    except struct.error as exc:
        raise CodecError(f"cannot encode GRE Call ID: {exc}") from exc
    return data[:GRE_CALL_ID_OFFSET] + packed + data[GRE_CALL_ID_OFFSET + 2 :]
