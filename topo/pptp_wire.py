"""The PPTP wire format the PNS driver speaks: control messages, enhanced GRE, raw PPP.

``build_*`` build control messages (RFC 2637) and ``parse_control`` decodes one;
``ControlStream`` cuts a TCP byte stream into messages and ``split_points`` cuts a
message into TCP segments. ``gre_encode`` and ``gre_decode`` handle enhanced GRE
(version 1) without the IP header, ``strip_ipv4`` the IPv4 header a raw socket reads,
``ppp_payload`` and ``ppp_data`` the raw PPP frames GRE carries (``FF 03 protocol data``,
no HDLC). Independent of the project's ``alg`` package, like ``topo.pns_driver``.
Standard library only.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAGIC_COOKIE = 0x1A2B3C4D
PPTP_PORT = 1723
IPPROTO_GRE = 47
GRE_PROTOCOL_PPP = 0x880B
GRE_FLAG_C = 0x8000
GRE_FLAG_R = 0x4000
GRE_FLAG_K = 0x2000
GRE_FLAG_S = 0x1000
GRE_FLAG_A = 0x0080
GRE_VERSION_MASK = 0x0007
PPP_IP = 0x0021
HEADER = struct.Struct("!HHIHH")

SCCRQ, SCCRP, STOPCCRQ, STOPCCRP, ECHORQ, ECHORP = 1, 2, 3, 4, 5, 6
OCRQ, OCRP, ICRQ, ICRP, ICCN, CCRQ, CDN, WEN, SLI = 7, 8, 9, 10, 11, 12, 13, 14, 15

MESSAGE_NAMES = {
    SCCRQ: "Start-Control-Connection-Request",
    SCCRP: "Start-Control-Connection-Reply",
    STOPCCRQ: "Stop-Control-Connection-Request",
    STOPCCRP: "Stop-Control-Connection-Reply",
    ECHORQ: "Echo-Request",
    ECHORP: "Echo-Reply",
    OCRQ: "Outgoing-Call-Request",
    OCRP: "Outgoing-Call-Reply",
    ICRQ: "Incoming-Call-Request",
    ICRP: "Incoming-Call-Reply",
    ICCN: "Incoming-Call-Connected",
    CCRQ: "Call-Clear-Request",
    CDN: "Call-Disconnect-Notify",
    WEN: "WAN-Error-Notify",
    SLI: "Set-Link-Info",
}
SHORT_NAMES = {
    "sccrq": SCCRQ, "sccrp": SCCRP, "stopccrq": STOPCCRQ, "stopccrp": STOPCCRP,
    "echorq": ECHORQ, "echorp": ECHORP, "ocrq": OCRQ, "ocrp": OCRP, "icrq": ICRQ,
    "icrp": ICRP, "iccn": ICCN, "ccrq": CCRQ, "cdn": CDN, "wen": WEN, "sli": SLI,
}
MESSAGE_LENGTHS = {
    SCCRQ: 156, SCCRP: 156, STOPCCRQ: 16, STOPCCRP: 16, ECHORQ: 16, ECHORP: 20,
    OCRQ: 168, OCRP: 32, ICRQ: 220, ICRP: 24, ICCN: 28, CCRQ: 16, CDN: 148, WEN: 40,
    SLI: 24,
}
# Body layouts (after the 12-byte header) of the messages whose fields are decoded;
# names starting with "_" are reserved or skipped.
_LAYOUTS: dict[int, tuple[str, tuple[str, ...]]] = {
    SCCRQ: ("!HHIIHH64s64s", ("version", "_r", "framing", "bearer", "max_channels",
                              "firmware", "hostname", "vendor")),
    SCCRP: ("!HBBIIHH64s64s", ("version", "result", "error", "framing", "bearer",
                               "max_channels", "firmware", "hostname", "vendor")),
    STOPCCRQ: ("!BBH", ("reason", "_r1", "_r2")),
    STOPCCRP: ("!BBH", ("result", "error", "_r")),
    ECHORQ: ("!I", ("identifier",)),
    ECHORP: ("!IBBH", ("identifier", "result", "error", "_r")),
    OCRQ: ("!HHIIIIHHHH64s64s", ("call_id", "serial", "min_bps", "max_bps", "bearer",
                                 "framing", "window", "delay", "phone_length", "_r",
                                 "phone", "subaddress")),
    OCRP: ("!HHBBHIHHI", ("call_id", "peer_call_id", "result", "error", "cause",
                          "speed", "window", "delay", "channel")),
    ICRQ: ("!HHIIH", ("call_id", "serial", "bearer", "channel", "dialed_length")),
    ICRP: ("!HHBBHH", ("call_id", "peer_call_id", "result", "error", "window", "delay")),
    ICCN: ("!HHIHHI", ("peer_call_id", "_r", "speed", "window", "delay", "framing")),
    CCRQ: ("!HH", ("call_id", "_r")),
    CDN: ("!HBBHH", ("call_id", "result", "error", "cause", "_r")),
    WEN: ("!HH", ("peer_call_id", "_r")),
    SLI: ("!HHII", ("peer_call_id", "_r", "send_accm", "recv_accm")),
}


class ProtocolError(Exception):
    """The peer sent something the driver cannot use (or nothing, in time)."""


# ---------------------------------------------------------------------------------------
# Control messages


def build_message(ctrl_type: int, body: bytes) -> bytes:
    """Prefix a body with the 12-byte control header.

    Args:
        ctrl_type: The Control Message Type.
        body: Everything after the header.

    Returns:
        The whole message (Length = 12 + len(body)).
    """
    return HEADER.pack(HEADER.size + len(body), 1, MAGIC_COOKIE, ctrl_type, 0) + body


def _text(value: str, size: int = 64) -> bytes:
    return value.encode()[:size].ljust(size, b"\0")


def build_sccrq(
    hostname: str = "pns-driver", vendor: str = "topo", version: int = 0x0100
) -> bytes:
    """Build a Start-Control-Connection-Request (156 bytes).

    Args:
        hostname: Host Name field.
        vendor: Vendor String field.
        version: Protocol Version (1.0 is 0x0100).

    Returns:
        The message.
    """
    body = struct.pack("!HHIIHH", version, 0, 3, 3, 0, 1) + _text(hostname) + _text(vendor)
    return build_message(SCCRQ, body)


def build_ocrq(
    call_id: int,
    serial: int = 0,
    *,
    min_bps: int = 300,
    max_bps: int = 100_000_000,
    window: int = 64,
    phone: str = "",
) -> bytes:
    """Build an Outgoing-Call-Request (168 bytes).

    Args:
        call_id: The PNS's Call ID.
        serial: Call Serial Number.
        min_bps: Minimum BPS.
        max_bps: Maximum BPS.
        window: Packet Receive Window Size.
        phone: Phone Number.

    Returns:
        The message.
    """
    body = struct.pack("!HHIIIIHHHH", call_id, serial, min_bps, max_bps, 3, 3, window, 0,
                       len(phone), 0) + _text(phone) + _text("")
    return build_message(OCRQ, body)


def build_ccrq(call_id: int) -> bytes:
    """Build a Call-Clear-Request (16 bytes) for the PNS's ``call_id``."""
    return build_message(CCRQ, struct.pack("!HH", call_id, 0))


def build_stopccrq(reason: int = 1) -> bytes:
    """Build a Stop-Control-Connection-Request (16 bytes); reason 1 is "General"."""
    return build_message(STOPCCRQ, struct.pack("!BBH", reason, 0, 0))


def build_echo_reply(identifier: int, result: int = 1) -> bytes:
    """Build an Echo-Reply (20 bytes) answering ``identifier``."""
    return build_message(ECHORP, struct.pack("!IBBH", identifier, result, 0, 0))


def build_sli(peer_call_id: int, send_accm: int = 0, recv_accm: int = 0) -> bytes:
    """Build a Set-Link-Info (24 bytes) for the receiver's Call ID ``peer_call_id``."""
    return build_message(SLI, struct.pack("!HHII", peer_call_id, 0, send_accm, recv_accm))


@dataclass(frozen=True)
class ControlMessage:
    """One control message as received.

    Attributes:
        ctrl_type: The Control Message Type.
        fields: The decoded body fields (text fields as str), empty for unknown types.
        raw: The whole message.
    """

    ctrl_type: int
    fields: dict[str, Any]
    raw: bytes

    @property
    def name(self) -> str:
        """The message's name, e.g. ``Outgoing-Call-Reply``."""
        return MESSAGE_NAMES.get(self.ctrl_type, f"type-{self.ctrl_type}")

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able description."""
        return {"type": self.ctrl_type, "name": self.name, "length": len(self.raw),
                **self.fields}


def parse_control(data: bytes) -> ControlMessage:
    """Decode one whole control message.

    Args:
        data: Exactly one message, header included.

    Returns:
        The message.

    Raises:
        ProtocolError: On a bad header (length, magic cookie, message type).
    """
    if len(data) < HEADER.size:
        raise ProtocolError(f"control message of {len(data)} bytes")
    length, msg_type, cookie, ctrl_type, _ = HEADER.unpack_from(data)
    if length != len(data) or msg_type != 1 or cookie != MAGIC_COOKIE:
        raise ProtocolError(f"bad control header {data[:12].hex()}")
    fields: dict[str, Any] = {}
    layout = _LAYOUTS.get(ctrl_type)
    if layout is not None:
        fmt, names = layout
        if len(data) < HEADER.size + struct.calcsize(fmt):
            raise ProtocolError(f"{MESSAGE_NAMES[ctrl_type]} of {len(data)} bytes")
        values = struct.unpack_from(fmt, data, HEADER.size)
        for name, value in zip(names, values, strict=True):
            if name.startswith("_"):
                continue
            if isinstance(value, bytes):
                value = value.split(b"\0", 1)[0].decode("ascii", "replace")
            fields[name] = value
    return ControlMessage(ctrl_type, fields, bytes(data))


@dataclass
class ControlStream:
    """Cut a TCP byte stream into control messages by their Length field."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[ControlMessage]:
        """Add received bytes; return the messages they complete.

        Raises:
            ProtocolError: On a Length below the header size.
        """
        self._buffer += data
        out = []
        while len(self._buffer) >= 2:
            length = struct.unpack_from("!H", self._buffer)[0]
            if length < HEADER.size:
                raise ProtocolError(f"control message Length {length}")
            if len(self._buffer) < length:
                break
            out.append(parse_control(bytes(self._buffer[:length])))
            del self._buffer[:length]
        return out


def split_points(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (sorted, outside 1..len-1 ignored).

    Args:
        data: The bytes to cut.
        offsets: Where each new piece starts.

    Returns:
        The pieces, in order; joined they give ``data`` back.
    """
    cuts = sorted({o for o in offsets if 0 < o < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------
# Enhanced GRE


@dataclass(frozen=True)
class GrePacket:
    """One enhanced GRE packet (version 1).

    Attributes:
        call_id: The key's low half: the receiver's Call ID.
        payload: The PPP frame (empty for an ack alone).
        seq: The sequence number, or None.
        ack: The acknowledgement number, or None.
        flags: The first 16 bits (flags and version).
    """

    call_id: int
    payload: bytes = b""
    seq: int | None = None
    ack: int | None = None
    flags: int = GRE_FLAG_K | 1


def gre_encode(call_id: int, payload: bytes = b"", seq: int | None = None,
               ack: int | None = None) -> bytes:
    """Build an enhanced GRE packet (without the IP header).

    Args:
        call_id: The peer's Call ID (the key's low half).
        payload: The PPP frame (``FF 03 protocol data``).
        seq: Sequence number; required with a payload by RFC 2637 (None: no S bit).
        ack: Acknowledgement number (None: no A bit).

    Returns:
        The GRE header and payload.
    """
    flags = GRE_FLAG_K | 1
    tail = b""
    if seq is not None:
        flags |= GRE_FLAG_S
        tail += struct.pack("!I", seq & 0xFFFFFFFF)
    if ack is not None:
        flags |= GRE_FLAG_A
        tail += struct.pack("!I", ack & 0xFFFFFFFF)
    return struct.pack("!HHHH", flags, GRE_PROTOCOL_PPP, len(payload), call_id) + tail + payload


def gre_decode(data: bytes) -> GrePacket:
    """Decode an enhanced GRE packet (without the IP header).

    Args:
        data: The GRE header and payload.

    Returns:
        The packet.

    Raises:
        ValueError: When it is not enhanced GRE (version 1, K set, PPP) or is truncated.
    """
    if len(data) < 8:
        raise ValueError(f"GRE packet of {len(data)} bytes")
    flags, proto, length, call_id = struct.unpack_from("!HHHH", data)
    if flags & GRE_VERSION_MASK != 1 or not flags & GRE_FLAG_K or proto != GRE_PROTOCOL_PPP:
        raise ValueError(f"not enhanced GRE: flags {flags:#06x} protocol {proto:#06x}")
    if flags & (GRE_FLAG_C | GRE_FLAG_R):
        raise ValueError(f"C or R set in enhanced GRE: flags {flags:#06x}")
    offset = 8
    seq = ack = None
    if flags & GRE_FLAG_S:
        if len(data) < offset + 4:
            raise ValueError("GRE sequence number truncated")
        seq = struct.unpack_from("!I", data, offset)[0]
        offset += 4
    if flags & GRE_FLAG_A:
        if len(data) < offset + 4:
            raise ValueError("GRE acknowledgement number truncated")
        ack = struct.unpack_from("!I", data, offset)[0]
        offset += 4
    payload = data[offset:offset + length]
    if len(payload) != length:
        raise ValueError(f"GRE payload truncated: {len(payload)} of {length} bytes")
    return GrePacket(call_id, payload, seq, ack, flags)


def strip_ipv4(packet: bytes) -> tuple[str, bytes]:
    """Split an IPv4 packet (as a raw socket reads it) into source address and payload."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise ValueError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    return socket.inet_ntoa(packet[12:16]), packet[ihl:]


def ppp_payload(protocol: int, data: bytes) -> bytes:
    """Build the raw PPP frame GRE carries: ``FF 03``, protocol, data."""
    return b"\xff\x03" + struct.pack("!H", protocol) + data


def ppp_data(frame: bytes) -> tuple[int | None, bytes]:
    """Split a raw PPP frame into protocol and data (address/control optional)."""
    if frame.startswith(b"\xff\x03"):
        frame = frame[2:]
    if not frame:
        return None, b""
    if frame[0] & 1:
        return frame[0], frame[1:]
    if len(frame) < 2:
        return None, frame
    return struct.unpack_from("!H", frame)[0], frame[2:]
