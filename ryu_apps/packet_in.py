"""A faster PACKET_IN parser for the framework.

The framework's parser builds every OXM field of a packet-in's match as objects, which
costs more than the ALG's whole handling of a GRE packet on the controller path. The
parser here (:func:`parse_packet_in`) gives the same ``OFPPacketIn`` with a match parsed
only when something asks for more than its ``in_port`` (``ryu_apps.wire`` reads that).
"""

from __future__ import annotations

from typing import Any

from alg.errors import WireError
from ryu_apps import wire
from ryu_apps.framework import ofproto_v1_3, ofproto_v1_3_parser

_RYU_PACKET_IN_PARSER = ofproto_v1_3_parser.OFPPacketIn.parser


class _LazyMatch:
    """A PACKET_IN's match that answers ``["in_port"]`` from :func:`wire.decode_packet_in`
    and parses the rest with Ryu's parser only when something asks for it."""

    __slots__ = ("_buf", "_full", "_in_port", "_offset")

    def __init__(self, buf: bytes, offset: int, in_port: int | None) -> None:
        self._buf = buf
        self._offset = offset
        self._in_port = in_port
        self._full: Any = None

    def _parsed(self) -> Any:
        if self._full is None:
            self._full = ofproto_v1_3_parser.OFPMatch.parser(self._buf, self._offset)
        return self._full

    def __getitem__(self, key: str) -> Any:
        if key == "in_port" and self._in_port is not None:
            return self._in_port
        return self._parsed()[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parsed(), name)

    def __str__(self) -> str:
        return str(self._parsed())


def parse_packet_in(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int,
                    buf: bytes) -> Any:
    """Ryu's message parser for PACKET_IN, replaced (:func:`use_fast_packet_in`): the same
    ``OFPPacketIn`` with a lazily parsed match; a message the fast decoder refuses goes to
    Ryu's own parser."""
    try:
        fields = wire.decode_packet_in(buf)
    except WireError:
        return _RYU_PACKET_IN_PARSER(datapath, version, msg_type, msg_len, xid, buf)
    msg = ofproto_v1_3_parser.OFPPacketIn(
        datapath, fields.buffer_id, fields.total_len, fields.reason, fields.table_id,
        fields.cookie, _LazyMatch(buf, fields.match_offset, fields.in_port), fields.data)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    return msg


def use_fast_packet_in() -> None:
    """Make Ryu parse OpenFlow 1.3 PACKET_INs with :func:`parse_packet_in` (for every app
    in this process: the gateway runs alone in its ``ryu-manager``)."""
    parsers: dict[int, Any] = ofproto_v1_3_parser._MSG_PARSERS
    parsers[ofproto_v1_3.OFPT_PACKET_IN] = parse_packet_in
