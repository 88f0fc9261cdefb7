"""What the app, the lab and the tests agree on about the switch; imports no Ryu.

**Cookies.** Every flow entry the app installs carries a cookie that names what it
belongs to: ``0x50`` ('P') in the top byte, the :class:`~alg.events.EntryKind` in the
next, the entry's id (a NAT session id or a server-map entry id from the core) in the
low 48 bits. So entries can be deleted by what they belong to, shown, and recognised
after a controller restart.

**Priorities** of table 0 (see ``ryu_apps.flowmods`` for what each holds), and the
controller's **TCP ports** by default (OpenFlow and REST).
"""

from __future__ import annotations

from alg.config import DEFAULT_REST_PORT
from alg.events import EntryKind

COOKIE_TAG = 0x50 << 56
COOKIE_TAG_MASK = 0xFF << 56
COOKIE_KIND_MASK = 0xFFFF << 48
COOKIE_ID_MASK = (1 << 48) - 1

TABLE_CLASSIFY = 0
TABLE_CT_OUT = 1
TABLE_ROUTE = 2
TABLE_CT_IN = 3
"""Tables (``ryu_apps.ctflows``); without ``ordinary_nat = conntrack`` only table 0."""

PRIORITY_ARP = 1000
PRIORITY_CONTROL_CONNECTION = 950
PRIORITY_CONTROL = 900
PRIORITY_FRAGMENTS = 501
PRIORITY_SESSION = 500
PRIORITY_PUNT = 100
PRIORITY_DROP = 0

METER_ARP = 1
"""Meters: every punt to the controller passes one, a class per kind of punt, so that a
flood of one kind cannot starve the others. ARP from any port."""
METER_OUTSIDE_CONTROL = 2
"""Control segments (TCP/1723) from the outside."""
METER_OUTSIDE_NEW = 3
"""Anything else from the outside to a public address (new or unknown traffic)."""
METER_GRE = 4
"""Server -> client GRE of pairs on the controller path."""
METER_INSIDE_PORT = 0x100
"""Plus the port number: what one inside port punts (control segments and new traffic)."""
METER_CONTROL_CONNECTIONS = 0x10000
"""Plus the port number: the servers' segments of the live control connections of the
hosts on one inside port (each connection's own entry; Open vSwitch port numbers are
below 0xff00, so these ids neither meet ``METER_INSIDE_PORT``'s nor pass the userspace
datapath's 262,144 meters)."""

OPENFLOW_PORT = 6653
"""The controller's OpenFlow listening port by default (IANA's)."""
REST_PORT = DEFAULT_REST_PORT
"""The HTTP API's port by default (``[nat] rest_port``)."""


def cookie(kind: EntryKind, entry_id: int = 0) -> int:
    """The cookie of an entry of ``kind`` with id ``entry_id``."""
    return COOKIE_TAG | (int(kind) << 48) | (entry_id & COOKIE_ID_MASK)


def decode_cookie(value: int) -> tuple[EntryKind, int] | None:
    """(kind, entry id) of one of our cookies; None for anybody else's."""
    if value & COOKIE_TAG_MASK != COOKIE_TAG:
        return None
    try:
        kind = EntryKind((value >> 48) & 0xFF)
    except ValueError:
        return None
    return kind, value & COOKIE_ID_MASK


def kind_filter(kind: EntryKind) -> str:
    """An ``ovs-ofctl`` cookie filter (``cookie=VALUE/MASK``) for every entry of ``kind``."""
    return f"cookie={cookie(kind):#x}/{COOKIE_KIND_MASK:#x}"
