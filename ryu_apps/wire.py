"""OpenFlow 1.3 messages of the packet-in path, encoded with precompiled structs.

Ryu's message objects convert every field through generic tables (addresses through
netaddr) and cost more per flow-mod than the rest of a packet-in; the app sends the
few shapes it needs (flow-mods of its entries, packet-outs, barriers) encoded here, in
one buffer per event (:func:`send`). Only what OpenFlow 1.3 (version 4) defines is used:
OXM matches (section 7.2.3), set-field, output and dec-nw-ttl actions (7.2.5),
apply-actions and meter instructions (7.2.4), FLOW_MOD (7.3.4.1), PACKET_OUT (7.3.7),
BARRIER_REQUEST (7.3.8), ROLE_REQUEST (7.3.9). The unit tests parse every message back
with Ryu's own parser.

The other way, :func:`decode_packet_in` reads what the app needs of a PACKET_IN
(7.4.1): Ryu's parser builds every OXM field of its match as objects, which cost more
than the ALG's whole handling of a GRE packet on the controller path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from alg.errors import WireError

VERSION = 4
OFPT_FLOW_MOD = 14
OFPT_PACKET_OUT = 13
OFPT_BARRIER_REQUEST = 20
OFPT_ROLE_REQUEST = 24
OFPT_ROLE_REPLY = 25
OFPCR_ROLE_NOCHANGE = 0
OFPCR_ROLE_EQUAL = 1
OFPCR_ROLE_MASTER = 2
OFPCR_ROLE_SLAVE = 3
OFPET_ROLE_REQUEST_FAILED = 11
"""The error type of a refused role request (its code OFPRRFC_STALE: a generation below
the highest the switch accepted)."""
OFPFC_ADD = 0
OFPFC_DELETE = 3
OFPFC_DELETE_STRICT = 4
OFPFF_SEND_FLOW_REM = 1
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_TABLE = 0xFFFFFFF9
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPTT_ALL = 0xFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF
OFPCML_MAX = 0xFFE5
OFP_DEFAULT_PRIORITY = 0x8000
MAX_XID = 0xFFFFFFFF

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_MATCH_HEADER = struct.Struct("!HH")
_OXM_HEADER = struct.Struct("!HBB")
_INSTRUCTION = struct.Struct("!HH")
_METER = struct.Struct("!HHI")
_APPLY = struct.Struct("!HH4x")
_OUTPUT = struct.Struct("!HHIH6x")
_DEC_NW_TTL = struct.Struct("!HH4x")
_SET_FIELD = struct.Struct("!HH")
_PACKET_OUT = struct.Struct("!IIH6x")
_ROLE = struct.Struct("!I4xQ")
_ROLE_MESSAGE = _HEADER.size + _ROLE.size
_PACKET_IN = struct.Struct("!IHBBQ")
_PACKET_IN_MATCH = _HEADER.size + _PACKET_IN.size
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_GOTO = struct.Struct("!HHB3x")
_NX_CT = struct.Struct("!HHIHHIHB3xH")
_NX_NAT = struct.Struct("!HHIH2xHH")
NX_VENDOR = 0x00002320
_NXAST_CT = 35
_NXAST_NAT = 36
NX_CT_F_COMMIT = 1
_NX_CT_RECIRC_NONE = 0xFF
_NX_NAT_F_SRC = 1
_NX_NAT_F_DST = 2
_NX_NAT_RANGE_IPV4_MIN = 1
_NX_NAT_RANGE_IPV4_MAX = 2
_NX_NAT_RANGE_PROTO_MIN = 16
_NX_NAT_RANGE_PROTO_MAX = 32
CT_NEW = 0x01
CT_ESTABLISHED = 0x02
CT_RELATED = 0x04
CT_REPLY = 0x08
CT_INVALID = 0x10
CT_TRACKED = 0x20
"""``ct_state`` bits (ovs-fields(7)): ``+new``, ``+est``, ``+rel``, ``+rpl``, ``+inv``,
``+trk``."""
OFPT_PACKET_IN = 10
OFPMT_OXM = 1

_OXM_CLASS = 0x8000
_FIELDS: dict[str, tuple[int, struct.Struct]] = {
    "in_port": (0, struct.Struct("!I")),
    "eth_dst": (3, struct.Struct("!6s")),
    "eth_src": (4, struct.Struct("!6s")),
    "eth_type": (5, struct.Struct("!H")),
    "ip_proto": (10, struct.Struct("!B")),
    "ipv4_src": (11, struct.Struct("!4s")),
    "ipv4_dst": (12, struct.Struct("!4s")),
    "tcp_src": (13, struct.Struct("!H")),
    "tcp_dst": (14, struct.Struct("!H")),
    "udp_src": (15, struct.Struct("!H")),
    "udp_dst": (16, struct.Struct("!H")),
    "icmpv4_type": (19, struct.Struct("!B")),
}
"""OXM fields (class OPENFLOW_BASIC): number and value format."""

_NXM_1 = 0x0001
_NXM_FIELDS: dict[str, tuple[int, struct.Struct, bool]] = {
    "ip_frag": (26, struct.Struct("!B"), True),
    "ct_state": (105, struct.Struct("!I"), False),
    "ct_zone": (106, struct.Struct("!H"), False),
    "ct_mark": (107, struct.Struct("!I"), False),
}
"""Nicira extension fields (class NXM_1, which Open vSwitch takes in OpenFlow 1.3
matches): number, value format, and whether it is always matched under a mask. They
follow the basic fields in a match, whose prerequisites (``eth_type``) come first.
``ip_frag`` (``NXM_NX_IP_FRAG``) has bit 0 set for any fragment, bit 1 for a fragment
other than the first. ``ct_state`` (``NXM_NX_CT_STATE``, the ``CT_*`` bits), ``ct_zone``
and ``ct_mark`` are the connection tracker's, set by a ``ct`` action with a table to go
on in (:func:`ct`); a ``(value, mask)`` pair matches under the mask."""
IP_FRAG_ANY = 1
"""``ip_frag`` value and mask of every fragment (Open vSwitch's ``ip_frag=yes``)."""

Value = int | str | IPv4Address | tuple[int, int] | tuple[IPv4Address, IPv4Address]


@dataclass(frozen=True, slots=True)
class Message:
    """One encoded message, its transaction id still zero (set by :func:`send`).

    Attributes:
        command: for a flow-mod, its command (to count installs).
    """

    buf: bytes
    command: int | None = None


def _value(name: str, value: Value) -> bytes:
    if name in _NXM_FIELDS:
        number, fmt, masked = _NXM_FIELDS[name]
        if isinstance(value, tuple) or masked:
            bits, mask = ((int(value[0]), int(value[1])) if isinstance(value, tuple)
                          else (int(str(value)), -1))
            body = fmt.pack(bits) + fmt.pack(mask & (1 << 8 * fmt.size) - 1)
            return _OXM_HEADER.pack(_NXM_1, number << 1 | 1, len(body)) + body
        return _OXM_HEADER.pack(_NXM_1, number << 1, fmt.size) + fmt.pack(int(str(value)))
    number, fmt = _FIELDS[name]
    if isinstance(value, tuple) and name.startswith("ipv4"):
        net, netmask = IPv4Address(value[0]), IPv4Address(value[1])
        return _OXM_HEADER.pack(_OXM_CLASS, number << 1 | 1, 8) + net.packed + netmask.packed
    if isinstance(value, IPv4Address):
        raw: Any = value.packed
    elif name.startswith("ipv4"):
        raw = IPv4Address(str(value)).packed
    elif name.startswith("eth_") and name != "eth_type":
        raw = bytes.fromhex(str(value).replace(":", ""))
    else:
        assert not isinstance(value, tuple)
        raw = int(value)
    packed = fmt.pack(raw)
    return _OXM_HEADER.pack(_OXM_CLASS, number << 1, len(packed)) + packed


def _pad8(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def match(fields: Mapping[str, Value]) -> bytes:
    """An OXM match, basic fields in ascending field number (prerequisites first), then
    Nicira extension fields."""
    oxm = b"".join(_value(name, fields[name]) for name in sorted(
        fields, key=lambda n: _FIELDS[n][0] if n in _FIELDS else 0x100 + _NXM_FIELDS[n][0]))
    return _pad8(_MATCH_HEADER.pack(1, _MATCH_HEADER.size + len(oxm)) + oxm)


def output(port: int) -> bytes:
    """Output action (to the controller: the whole packet)."""
    max_len = OFPCML_NO_BUFFER if port == OFPP_CONTROLLER else OFPCML_MAX
    return _OUTPUT.pack(0, _OUTPUT.size, port, max_len)


def set_field(name: str, value: Value) -> bytes:
    """Set-field action."""
    oxm = _value(name, value)
    body = _SET_FIELD.size + len(oxm)
    return _pad8(_SET_FIELD.pack(25, body + (-body % 8)) + oxm)


def dec_nw_ttl() -> bytes:
    """Decrement-IP-TTL action."""
    return _DEC_NW_TTL.pack(24, _DEC_NW_TTL.size)


def ct(*, commit: bool = False, zone: int = 0, table: int | None = None,
       actions: Sequence[bytes] = ()) -> bytes:
    """Open vSwitch's ``ct`` action (``NXAST_CT``, ovs-actions(7)): send the packet
    through the connection tracker in ``zone``.

    Args:
        commit: commit the connection (``CT_NEW`` ones become tracked).
        table: the table the packet goes on in afterwards, its ``ct_state`` set; None:
            the packet goes on with the next action, its ``ct_state`` not set.
        actions: nested actions: :func:`nat` (applied to a committed connection, or the
            translation a tracked connection has, with :func:`nat` and no range).
    """
    nested = b"".join(actions)
    return _NX_CT.pack(
        0xFFFF, _NX_CT.size + len(nested), NX_VENDOR, _NXAST_CT,
        NX_CT_F_COMMIT if commit else 0, 0, zone,
        _NX_CT_RECIRC_NONE if table is None else table, 0) + nested


def nat(*, src: bool = True, addresses: tuple[IPv4Address, IPv4Address] | None = None,
        ports: tuple[int, int] | None = None) -> bytes:
    """Open vSwitch's ``nat`` action (``NXAST_NAT``), nested in :func:`ct`.

    Args:
        src: source NAT (else destination NAT); without ``addresses`` it does neither:
            a tracked connection's own translation is applied (``nat`` alone).
        addresses: the first and last address to translate to.
        ports: the first and last port (TCP, UDP) to translate to.
    """
    flags = present = 0
    params = b""
    if addresses is not None:
        flags = _NX_NAT_F_SRC if src else _NX_NAT_F_DST
        present |= _NX_NAT_RANGE_IPV4_MIN | _NX_NAT_RANGE_IPV4_MAX
        params += addresses[0].packed + addresses[1].packed
        if ports is not None:
            present |= _NX_NAT_RANGE_PROTO_MIN | _NX_NAT_RANGE_PROTO_MAX
            params += _U16.pack(ports[0]) + _U16.pack(ports[1])
    body = _NX_NAT.size + len(params)
    return _pad8(_NX_NAT.pack(0xFFFF, body + (-body % 8), NX_VENDOR, _NXAST_NAT, flags,
                              present) + params)


def goto_table(table: int) -> bytes:
    """Goto-table instruction."""
    return _GOTO.pack(1, _GOTO.size, table)


def apply_actions(actions: Sequence[bytes]) -> bytes:
    """Apply-actions instruction."""
    body = b"".join(actions)
    return _APPLY.pack(4, _APPLY.size + len(body)) + body


def meter(meter_id: int) -> bytes:
    """Meter instruction."""
    return _METER.pack(6, _METER.size, meter_id)


def _header(msg_type: int, body: bytes) -> bytes:
    return _HEADER.pack(VERSION, msg_type, _HEADER.size + len(body), 0) + body


def flow_mod(
    *,
    cookie: int,
    command: int = OFPFC_ADD,
    cookie_mask: int = 0,
    table_id: int = 0,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    priority: int = OFP_DEFAULT_PRIORITY,
    flags: int = 0,
    match_fields: Mapping[str, Value] | None = None,
    instructions: Iterable[bytes] = (),
    out_port: int = 0,
    out_group: int = 0,
) -> Message:
    """A FLOW_MOD (``out_port`` and ``out_group`` matter to deletes only)."""
    body = _FLOW_MOD.pack(
        cookie, cookie_mask, table_id, command, idle_timeout, hard_timeout, priority,
        OFP_NO_BUFFER,
        out_port, out_group, flags,
    ) + match(match_fields or {}) + b"".join(instructions)
    return Message(_header(OFPT_FLOW_MOD, body), command)


def packet_out(port: int, data: bytes, in_port: int = OFPP_CONTROLLER) -> Message:
    """A PACKET_OUT of ``data`` to ``port``."""
    action = output(port)
    body = _PACKET_OUT.pack(OFP_NO_BUFFER, in_port, len(action)) + action + data
    return Message(_header(OFPT_PACKET_OUT, body))


def barrier() -> Message:
    """A BARRIER_REQUEST."""
    return Message(_header(OFPT_BARRIER_REQUEST, b""))


def role_request(role: int, generation_id: int) -> Message:
    """A ROLE_REQUEST (section 7.3.9): ``role`` one of ``OFPCR_ROLE_*``; the switch
    refuses a master or slave request whose ``generation_id`` is below the highest it
    accepted (``OFPRRFC_STALE``, section 6.3.5)."""
    return Message(_header(OFPT_ROLE_REQUEST, _ROLE.pack(role, generation_id)))


def decode_role(buf: bytes) -> tuple[int, int]:
    """The role and generation id of a ROLE_REPLY, or of the ROLE_REQUEST an error
    message quotes (both have one layout; header included in ``buf``).

    Raises:
        WireError: fewer bytes than a role message.
    """
    if len(buf) < _ROLE_MESSAGE:
        raise WireError(f"role message of {len(buf)} bytes")
    role, generation_id = _ROLE.unpack_from(buf, _HEADER.size)
    return role, generation_id


class Xids:
    """Transaction ids for the messages the app encodes (never 0)."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> int:
        self._next = self._next % MAX_XID + 1
        return self._next


def encode(messages: Iterable[Message], xids: Xids) -> bytes:
    """The messages in one buffer, each with its own transaction id."""
    parts = []
    for message in messages:
        buf = message.buf
        parts.append(buf[:4] + xids().to_bytes(4, "big") + buf[8:])
    return b"".join(parts)


def send(dp: Any, messages: Sequence[Message], xids: Xids) -> None:
    """Send ``messages`` to the switch in one write (Ryu's ``Datapath.send``)."""
    if messages:
        dp.send(encode(messages, xids))


@dataclass(frozen=True, slots=True)
class PacketIn:
    """What a PACKET_IN carries (OpenFlow 1.3 section 7.4.1).

    Attributes:
        in_port: the ``in_port`` OXM of its match, None without one.
        match_offset: where its match begins in the message.
        data: the frame (cut to ``total_len``).
    """

    buffer_id: int
    total_len: int
    reason: int
    table_id: int
    cookie: int
    in_port: int | None
    match_offset: int
    data: bytes


def decode_packet_in(buf: bytes) -> PacketIn:
    """The fields of a PACKET_IN message (header included in ``buf``).

    Raises:
        WireError: the message is shorter than a field or its match says, or its match
            is not an OXM match.
    """
    if len(buf) < _PACKET_IN_MATCH + _MATCH_HEADER.size:
        raise WireError(f"PACKET_IN of {len(buf)} bytes")
    buffer_id, total_len, reason, table_id, cookie = _PACKET_IN.unpack_from(buf, _HEADER.size)
    match_type, match_len = _MATCH_HEADER.unpack_from(buf, _PACKET_IN_MATCH)
    end = _PACKET_IN_MATCH + match_len
    if match_type != OFPMT_OXM or match_len < _MATCH_HEADER.size or end > len(buf):
        raise WireError(f"PACKET_IN match of type {match_type}, {match_len} bytes")
    in_port = None
    at = _PACKET_IN_MATCH + _MATCH_HEADER.size
    while at + _OXM_HEADER.size <= end:
        oxm_class, field_mask, length = _OXM_HEADER.unpack_from(buf, at)
        at += _OXM_HEADER.size
        if at + length > end:
            raise WireError(f"OXM field of {length} bytes past the match's end")
        if oxm_class == _OXM_CLASS and field_mask == 0 and length == _U32.size:
            (in_port,) = _U32.unpack_from(buf, at)
        at += length
    data_at = _PACKET_IN_MATCH + (match_len + 7) // 8 * 8 + 2
    if data_at > len(buf):
        raise WireError("PACKET_IN ends inside its match's padding")
    return PacketIn(buffer_id, total_len, reason, table_id, cookie, in_port,
                    _PACKET_IN_MATCH, bytes(buf[data_at:data_at + total_len]))
