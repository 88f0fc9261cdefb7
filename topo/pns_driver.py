"""The project's own PPTP client (PNS) driver: control over TCP, data as GRE on a raw socket.

pptp-linux draws random Call IDs and cannot split messages; this driver does what a
test needs: choose the Call ID (two drivers can use the same one), cut a message over
several TCP segments, put several calls on one control connection, and send and receive
enhanced GRE (RFC 2637) itself. It is independent of the project's ``alg`` package, so
it checks the ALG rather than agreeing with it. Standard library only.

Against pptpd with the ``topo.standin_ppp`` stand-in as its pppd, GRE from the driver
reaches the call's stand-in and the stand-in's frames come back as GRE (raw PPP frames,
``FF 03 protocol data``, no HDLC).

Command line (run it inside the client's namespace; JSON lines on stdout, one event a
line, the last one ``{"event": "summary", ...}``)::

    ip netns exec NS python -m topo.pns_driver SERVER [--call-id N ...] [--frames N]
        [--interval S] [--hold S] [--tag T] [--split MSG=OFF,OFF ...] [--split-pause S]
        [--set-link-info] [--no-clear] [--no-stop] [--wait-gre S]

Exit status 0 when every call was answered Connected and the server kept the control
connection open until the driver cleared the calls, 1 otherwise, 2 on an error (no
connection, no reply in time).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
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


# ---------------------------------------------------------------------------------------
# The driver


Event = dict[str, Any]


class PnsDriver:
    """A PPTP client (PNS) with a TCP control connection and a raw GRE socket.

    Every action and every received message is appended to ``events`` (JSON-able) and
    handed to ``on_event``, if given. Echo-Requests are answered automatically.

    Args:
        server: The PAC's address.
        port: The control port.
        timeout: Default seconds to wait for a reply.
        on_event: Called with each event as it happens.
    """

    def __init__(self, server: str, port: int = PPTP_PORT, timeout: float = 5.0,
                 on_event: Callable[[Event], None] | None = None):
        self.server = server
        self.port = port
        self.timeout = timeout
        self.on_event = on_event
        self.events: list[Event] = []
        self.sock: socket.socket | None = None
        self.gre: socket.socket | None = None
        self.stream = ControlStream()
        self.pending: list[ControlMessage] = []
        self.received: list[ControlMessage] = []
        self.seq: dict[int, int] = {}
        self.last_rx_seq: dict[int, int] = {}
        self.peer_closed = False

    def event(self, kind: str, **data: Any) -> Event:
        """Record an event."""
        record: Event = {"event": kind, "t": round(time.time(), 6), **data}
        self.events.append(record)
        if self.on_event is not None:
            self.on_event(record)
        return record

    # control connection -----------------------------------------------------------

    def connect(self) -> tuple[str, int]:
        """Open the control connection (TCP_NODELAY); return the local address."""
        self.sock = socket.create_connection((self.server, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = self.sock.getsockname()
        self.event("connected", local=f"{local[0]}:{local[1]}",
                   server=f"{self.server}:{self.port}")
        return local[0], local[1]

    def send(self, message: bytes, split: Sequence[int] = (), pause: float = 0.05) -> None:
        """Send one or more messages, optionally cut into segments.

        Args:
            message: The bytes (one message, or several back to back).
            split: Offsets where a new TCP segment starts.
            pause: Seconds between two segments.
        """
        if self.sock is None:
            raise ProtocolError("not connected")
        if self.peer_closed:
            raise ProtocolError("control connection closed by the peer")
        pieces = split_points(message, split)
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(pause)
            self.sock.sendall(piece)
        ctrl_type = struct.unpack_from("!H", message, 8)[0] if len(message) >= 10 else None
        self.event("sent", type=ctrl_type, name=MESSAGE_NAMES.get(ctrl_type or 0, "?"),
                   length=len(message), segments=[len(p) for p in pieces])

    def _read(self, timeout: float) -> bool:
        if self.sock is None:
            raise ProtocolError("not connected")
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        data = self.sock.recv(65536)
        if not data:
            if not self.peer_closed:
                self.event("closed_by_peer")
            self.peer_closed = True
            raise ProtocolError("control connection closed by the peer")
        for message in self.stream.feed(data):
            self.received.append(message)
            self.event("recv", **message.to_json())
            if message.ctrl_type == ECHORQ:
                self.send(build_echo_reply(message.fields["identifier"]))
            else:
                self.pending.append(message)
        return True

    def expect(self, ctrl_type: int, timeout: float | None = None,
               match: Callable[[ControlMessage], bool] | None = None) -> ControlMessage:
        """Wait for a message of a type (others received meanwhile stay pending).

        Args:
            ctrl_type: The Control Message Type wanted.
            timeout: Seconds to wait (default: the driver's timeout).
            match: Extra condition on the message.

        Returns:
            The message.

        Raises:
            ProtocolError: On a timeout or when the connection closes.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for message in self.pending:
                if message.ctrl_type == ctrl_type and (match is None or match(message)):
                    self.pending.remove(message)
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no {MESSAGE_NAMES[ctrl_type]} within the timeout")
            self._read(left)

    def poll_control(self, timeout: float = 0.0) -> None:
        """Read whatever control messages arrive within ``timeout`` (answers echoes)."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass

    def start_control(self, split: Sequence[int] = (), pause: float = 0.05) -> ControlMessage:
        """Send a Start-Control-Connection-Request; return the Reply."""
        self.send(build_sccrq(), split, pause)
        return self.expect(SCCRP)

    def outgoing_call(self, call_id: int, serial: int = 0, split: Sequence[int] = (),
                      pause: float = 0.05) -> ControlMessage:
        """Send an Outgoing-Call-Request with ``call_id``; return the Reply.

        The reply's ``call_id`` is the PAC's Call ID (the key of GRE towards it), its
        ``peer_call_id`` should be ``call_id`` again, ``result`` 1 is Connected.
        """
        self.send(build_ocrq(call_id, serial), split, pause)
        reply = self.expect(OCRP, match=lambda m: m.fields["peer_call_id"] == call_id)
        self.event("call", call_id=call_id, peer_call_id=reply.fields["call_id"],
                   result=reply.fields["result"], error=reply.fields["error"])
        return reply

    def call_clear(self, call_id: int, wait: bool = True) -> ControlMessage | None:
        """Send a Call-Clear-Request; with ``wait``, return the Call-Disconnect-Notify."""
        self.send(build_ccrq(call_id))
        if not wait:
            return None
        with contextlib.suppress(ProtocolError):
            return self.expect(CDN)
        return None

    def stop_control(self, wait: bool = True) -> ControlMessage | None:
        """Send a Stop-Control-Connection-Request; with ``wait``, return the Reply."""
        self.send(build_stopccrq())
        if not wait:
            return None
        with contextlib.suppress(ProtocolError):
            return self.expect(STOPCCRP)
        return None

    def close(self) -> None:
        """Close the control connection and the GRE socket."""
        for sock in (self.sock, self.gre):
            if sock is not None:
                sock.close()
        self.sock = self.gre = None

    # GRE ---------------------------------------------------------------------------

    def open_gre(self) -> None:
        """Open the raw GRE socket (needs CAP_NET_RAW); it sees all GRE to this host."""
        self.gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)

    def send_gre(self, peer_call_id: int, payload: bytes, ack: bool = True) -> int:
        """Send one GRE data packet to the server; return its sequence number.

        Args:
            peer_call_id: The server's Call ID.
            payload: The PPP frame.
            ack: Acknowledge the last packet received from that call, if any.
        """
        if self.gre is None:
            self.open_gre()
        assert self.gre is not None
        seq = self.seq.get(peer_call_id, 0)
        self.seq[peer_call_id] = seq + 1
        ack_no = self.last_rx_seq.get(peer_call_id) if ack else None
        self.gre.sendto(gre_encode(peer_call_id, payload, seq, ack_no), (self.server, 0))
        protocol, data = ppp_data(payload)
        self.event("gre_sent", key_call_id=peer_call_id, seq=seq, ack=ack_no,
                   protocol=protocol, payload=data.decode("ascii", "replace"))
        return seq

    def recv_gre(self, timeout: float, calls: dict[int, int] | None = None) -> list[GrePacket]:
        """Receive GRE packets for ``timeout`` seconds (also serving the control socket).

        Args:
            timeout: Seconds to listen.
            calls: Map of our Call ID to the server's, to remember sequence numbers for
                acknowledgements; packets for other keys are still returned.

        Returns:
            The GRE packets received (from any source, any key).
        """
        if self.gre is None:
            self.open_gre()
        assert self.gre is not None
        out: list[GrePacket] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            control = self.sock if self.sock is not None and not self.peer_closed else None
            socks = [self.gre] + ([control] if control is not None else [])
            ready, _, _ = select.select(socks, [], [], left)
            if control is not None and control in ready:
                with contextlib.suppress(ProtocolError):  # closed: recorded, GRE goes on
                    self._read(0)
            if self.gre not in ready:
                continue
            packet = self.gre.recv(65536)
            try:
                source, gre = strip_ipv4(packet)
                decoded = gre_decode(gre)
            except ValueError as err:
                self.event("gre_bad", error=str(err), length=len(packet))
                continue
            if source == self.server and calls and decoded.seq is not None:
                server_id = calls.get(decoded.call_id)
                if server_id is not None:
                    self.last_rx_seq[server_id] = decoded.seq
            protocol, data = ppp_data(decoded.payload)
            text = data.decode("ascii", "replace")
            self.event("gre_recv", src=source, call_id=decoded.call_id, seq=decoded.seq,
                       ack=decoded.ack, length=len(decoded.payload), protocol=protocol,
                       payload=text, tag=text.partition(":")[0] if ":" in text else None)
            out.append(decoded)
        return out


# ---------------------------------------------------------------------------------------
# Command line


def _split_arg(text: str) -> tuple[int, list[int]]:
    name, sep, offsets = text.partition("=")
    if not sep or name.lower() not in SHORT_NAMES:
        raise argparse.ArgumentTypeError(f"expected MSG=OFF[,OFF...], MSG in {list(SHORT_NAMES)}")
    return SHORT_NAMES[name.lower()], [int(o) for o in offsets.split(",") if o]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m topo.pns_driver",
        description="Drive one PPTP control connection (and its calls' GRE) as a PNS.")
    parser.add_argument("server", help="the PAC's address")
    parser.add_argument("--port", type=int, default=PPTP_PORT)
    parser.add_argument("--call-id", type=int, action="append", dest="call_ids",
                        help="Call ID of an Outgoing-Call-Request (repeat for more calls on "
                             "the same connection; default 4242)")
    parser.add_argument("--frames", type=int, default=10, help="GRE frames to send per call")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between frames")
    parser.add_argument("--wait-gre", type=float, default=0.0,
                        help="seconds to wait for the server's first GRE before sending")
    parser.add_argument("--hold", type=float, default=1.0,
                        help="seconds to keep listening after the last frame")
    parser.add_argument("--tag", default="pns", help="tag of the frames sent (TAG:CALLID:N)")
    parser.add_argument("--protocol", type=lambda s: int(s, 0), default=PPP_IP,
                        help="PPP protocol of the frames")
    parser.add_argument("--split", type=_split_arg, action="append", default=[],
                        metavar="MSG=OFF,...",
                        help="cut a message (sccrq, ocrq, sli, ccrq, stopccrq) into TCP "
                             "segments at these offsets")
    parser.add_argument("--split-pause", type=float, default=0.05,
                        help="seconds between the segments of a cut message")
    parser.add_argument("--set-link-info", action="store_true",
                        help="send Set-Link-Info for each connected call")
    parser.add_argument("--no-clear", action="store_true", help="do not clear the calls")
    parser.add_argument("--no-stop", action="store_true",
                        help="do not send Stop-Control-Connection-Request (just close)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for replies")
    return parser


def run(args: argparse.Namespace, emit: Callable[[Event], None]) -> int:
    """Run the scenario of the command line; return the exit status.

    Args:
        args: Parsed command line.
        emit: Called with each event (the CLI prints them as JSON lines).

    Returns:
        0 when every call was Connected and the peer did not close the control
        connection before the driver cleared the calls, 1 otherwise.
    """
    splits: dict[int, list[int]] = dict(args.split)
    pause = args.split_pause
    call_ids = args.call_ids or [4242]
    driver = PnsDriver(args.server, args.port, args.timeout, on_event=emit)
    calls: dict[int, int] = {}
    results: dict[int, dict[str, Any]] = {}
    received: list[GrePacket] = []
    closed_early = False
    try:
        driver.open_gre()
        driver.connect()
        sccrp = driver.start_control(splits.get(SCCRQ, ()), pause)
        if sccrp.fields.get("result") != 1:
            raise ProtocolError(f"Start-Control-Connection-Reply result {sccrp.fields}")
        for serial, call_id in enumerate(call_ids):
            reply = driver.outgoing_call(call_id, serial, splits.get(OCRQ, ()), pause)
            results[call_id] = {"server_call_id": reply.fields["call_id"],
                                "result": reply.fields["result"]}
            if reply.fields["result"] == 1:
                calls[call_id] = reply.fields["call_id"]
        if args.set_link_info:
            for server_id in calls.values():
                driver.send(build_sli(server_id), splits.get(SLI, ()), pause)
        if args.wait_gre > 0 and calls:
            received += driver.recv_gre(args.wait_gre, calls)
        for n in range(1, args.frames + 1):
            for call_id, server_id in calls.items():
                text = f"{args.tag}:{call_id}:{n}".encode()
                driver.send_gre(server_id, ppp_payload(args.protocol, text))
            received += driver.recv_gre(args.interval, calls)
        received += driver.recv_gre(args.hold, calls)
        closed_early = driver.peer_closed
        if not args.no_clear:
            for call_id in calls:
                if driver.peer_closed:
                    break
                driver.send(build_ccrq(call_id), splits.get(CCRQ, ()), pause)
                with contextlib.suppress(ProtocolError):
                    driver.expect(CDN, timeout=2)
        if not args.no_stop and not driver.peer_closed:
            driver.send(build_stopccrq(), splits.get(STOPCCRQ, ()), pause)
            with contextlib.suppress(ProtocolError):
                driver.expect(STOPCCRP, timeout=2)
    finally:
        driver.close()
        tags: dict[str, int] = {}
        by_key: dict[int, int] = {}
        data_packets = [p for p in received if p.payload]
        for packet in data_packets:
            by_key[packet.call_id] = by_key.get(packet.call_id, 0) + 1
            _, data = ppp_data(packet.payload)
            tag = data.decode("ascii", "replace").partition(":")[0]
            tags[tag] = tags.get(tag, 0) + 1
        driver.event(
            "summary", server=args.server, calls=results,
            gre_sent=sum(driver.seq.values()), gre_received=len(data_packets),
            gre_acks_received=len(received) - len(data_packets),
            gre_received_by_key={str(k): v for k, v in by_key.items()},
            received_tags=tags, received_types=[m.ctrl_type for m in driver.received],
            peer_closed=driver.peer_closed)
    connected = bool(results) and all(r["result"] == 1 for r in results.values())
    return 0 if connected and not closed_early else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: print events as JSON lines.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)

    def emit(event: Event) -> None:
        print(json.dumps(event), flush=True)

    try:
        return run(args, emit)
    except (OSError, ProtocolError) as err:
        emit({"event": "error", "error": f"{type(err).__name__}: {err}"})
        return 2


def parse_events(text: str) -> list[Event]:
    """Parse the driver's JSON-lines output (as a test reads it)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


if __name__ == "__main__":
    sys.exit(main())
