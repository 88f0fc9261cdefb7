"""What goes into the core (plain packet facts) and what comes out (packets, decisions).

The app decodes a packet once into one of the input types, calls the core, and turns the
returned :class:`Output` into packet-outs and flow-mods. Nothing here knows OpenFlow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from alg.nat import NatSession
from alg.snapshot import Change

if TYPE_CHECKING:
    from alg.hostnat import HostBinding

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


class Direction(enum.Enum):
    """Which way a packet travels through the gateway."""

    OUTBOUND = "outbound"
    """From an inside host toward the outside."""
    INBOUND = "inbound"
    """From the outside toward the public addresses."""


@dataclass(frozen=True)
class TcpSegment:
    """A TCP segment's facts, as the app decoded them (or as the core builds them).

    Attributes:
        options: the raw TCP option bytes, passed through unchanged.
    """

    src_ip: IPv4Address
    src_port: int
    dst_ip: IPv4Address
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    options: bytes = b""


@dataclass(frozen=True)
class UdpDatagram:
    """A UDP datagram's addresses and ports."""

    src_ip: IPv4Address
    src_port: int
    dst_ip: IPv4Address
    dst_port: int


@dataclass(frozen=True)
class IcmpEcho:
    """An ICMP echo request (``request``) or reply, by its identifier."""

    src_ip: IPv4Address
    dst_ip: IPv4Address
    identifier: int
    request: bool


@dataclass(frozen=True)
class GrePacket:
    """A GRE packet: its addresses, then the GRE header and payload as they came."""

    src_ip: IPv4Address
    dst_ip: IPv4Address
    gre: bytes


@dataclass(frozen=True)
class IcmpMessage:
    """An ICMP message other than echo: its addresses, then the ICMP header and body as
    they came (the core translates the errors, ``alg.icmp``, and drops the rest)."""

    src_ip: IPv4Address
    dst_ip: IPv4Address
    icmp: bytes


Packet = TcpSegment | UdpDatagram | IcmpEcho | GrePacket | IcmpMessage
"""What the app decodes an IPv4 packet into for :meth:`alg.engine.Gateway.handle`."""


@dataclass(frozen=True)
class Translation:
    """Header fields to set on a packet before it leaves.

    For ICMP echo the ports are the echo identifier (``src_port`` on requests,
    ``dst_port`` on replies carry the same identifier value).
    """

    src_ip: IPv4Address
    src_port: int
    dst_ip: IPv4Address
    dst_port: int


@dataclass(frozen=True)
class Forward:
    """Send the packet that came in, with its headers translated."""

    direction: Direction
    translation: Translation


@dataclass(frozen=True)
class SendTcp:
    """Send a TCP segment the core built (control connections are re-segmented)."""

    direction: Direction
    segment: TcpSegment


@dataclass(frozen=True)
class SendGre:
    """Send a GRE packet: IPv4 addresses plus the GRE header and payload."""

    direction: Direction
    src_ip: IPv4Address
    dst_ip: IPv4Address
    gre: bytes


@dataclass(frozen=True)
class SendIcmp:
    """Send an ICMP message the core built or translated: IPv4 addresses plus the ICMP
    header and body, checksum included."""

    direction: Direction
    src_ip: IPv4Address
    dst_ip: IPv4Address
    icmp: bytes


Emit = Forward | SendTcp | SendGre | SendIcmp


class EntryKind(enum.IntEnum):
    """What a flow entry belongs to; the app puts it in the cookie with the entry's id."""

    PIPELINE = 1
    SESSION = 2
    GRE_OUTBOUND = 3
    GRE_INBOUND = 4
    DEMUX_RETURN = 5
    CONTROL = 6
    HOST = 7
    ROUTE = 8


@dataclass(frozen=True)
class SessionEntries:
    """Install (or re-install) both directions' rewrite entries of a NAT session."""

    session: NatSession
    idle_timeout: float


@dataclass(frozen=True)
class ControlEntry:
    """The punt entry of one control connection: the server's segments to the
    connection's public address and port reach the controller through a meter of their
    own (of the client's inside port), apart from the shared, metered punt of every other
    segment from port 1723 outside, so that segments from the server's address to other
    public ports (a flood that looks like servers' segments) cannot take its share.

    Matches the server's address and port and the connection's public address and port
    exactly; its id is the connection's NAT session id. Removed with
    :class:`RemoveEntries` of kind ``CONTROL`` when the connection ends.
    """

    session: NatSession


@dataclass(frozen=True)
class RemoveEntries:
    """Delete every flow entry of ``kind`` and ``entry_id`` (by cookie)."""

    kind: EntryKind
    entry_id: int


@dataclass(frozen=True)
class GreOutboundEntry:
    """The outbound server-map entry: client -> server GRE leaves from the public address.

    Matches ``ip_proto=47, ipv4_src=client_ip, ipv4_dst=server_ip``; sets ``ipv4_src`` to
    ``public_ip``. Shared by every call of that (client, server) pair.
    """

    entry_id: int
    client_ip: IPv4Address
    server_ip: IPv4Address
    public_ip: IPv4Address
    idle_timeout: float


@dataclass(frozen=True)
class GreInboundEntry:
    """The inbound server-map entry of every call of one (server, public address) pair.

    Matches ``ip_proto=47, ipv4_src=server_ip, ipv4_dst=public_ip``. With ``client_ip``
    set, the pair belongs to one call whose Call ID was kept: set ``ipv4_dst`` and output
    (the flow path). With ``client_ip`` None, send to the GRE demultiplexer's port
    (``via_demux``, the demux path) or to the controller (the controller path), either of
    which demultiplexes by Call ID and rewrites it.
    """

    entry_id: int
    server_ip: IPv4Address
    public_ip: IPv4Address
    client_ip: IPv4Address | None
    idle_timeout: float
    via_demux: bool = False


@dataclass(frozen=True)
class DemuxEntry:
    """Write the GRE demultiplexer's table entry of one call: the server's GRE to
    ``public_ip`` with ``public_call_id`` goes to ``client_ip`` with ``client_call_id``."""

    server_ip: IPv4Address
    public_ip: IPv4Address
    public_call_id: int
    client_ip: IPv4Address
    client_call_id: int


@dataclass(frozen=True)
class DemuxForget:
    """Delete a call's entry from the GRE demultiplexer's table: its late GRE is dropped
    there from now on (and counted as an unknown key)."""

    server_ip: IPv4Address
    public_ip: IPv4Address
    public_call_id: int


@dataclass(frozen=True)
class DemuxReturnEntry:
    """The flow entry that delivers what the demultiplexer sends back for ``client_ip``:
    matches ``in_port=<demux port>, ip_proto=47, ipv4_dst=client_ip``, routes to the client.
    One per client with calls; removed with :class:`RemoveEntries` of its kind and id."""

    entry_id: int
    client_ip: IPv4Address


@dataclass(frozen=True)
class HostEntries:
    """Install an inside host's entries for the connection tracker (``alg.hostnat``):
    its packets go through the tracker, new connections take its address and block of
    ports, replies are delivered to it. The classifying entry goes idle after
    ``idle_timeout`` seconds without the host's packets, and the switch reports it."""

    binding: HostBinding
    idle_timeout: float
    zone: int


Decision = (SessionEntries | RemoveEntries | GreOutboundEntry | GreInboundEntry
            | DemuxEntry | DemuxForget | DemuxReturnEntry | ControlEntry | HostEntries)


@dataclass(frozen=True)
class CallLog:
    """A call set up or torn down, for the operator's log.

    Attributes:
        event: ``"set up"`` or ``"torn down"`` (with ``reason``).
    """

    event: str
    call_index: int
    client_ip: IPv4Address
    public_ip: IPv4Address
    server_ip: IPv4Address
    client_call_id: int
    public_call_id: int
    server_call_id: int | None
    reason: str = ""

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return (
            f"call {self.event}: client {self.client_ip} public {self.public_ip} server "
            f"{self.server_ip} call-id a={self.client_call_id} b={self.public_call_id} "
            f"c={self.server_call_id}{reason}"
        )


@dataclass
class Output:
    """Everything one event produced, in the order the app must act on it.

    Decisions come first: the app sends flow-mods before packet-outs, so the first
    packet of a data channel already finds its flow.

    Attributes:
        emits: packets to send.
        decisions: flow entries to install or delete.
        logs: calls set up or torn down.
        errors: one line per error the operator should see (malformed message, ...).
        drop_reason: why the input packet was dropped, when nothing was emitted for it.
        records: state changes for the store, to write before anything else
            (``alg.snapshot``).
        resubmit: the packet that came in goes back through the switch's tables, after
            the decisions' entries.
    """

    emits: list[Emit] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    logs: list[CallLog] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    drop_reason: str | None = None
    records: list[Change] = field(default_factory=list)
    resubmit: bool = False

    def extend(self, other: Output) -> None:
        """Append ``other``'s contents to this output."""
        self.emits.extend(other.emits)
        self.decisions.extend(other.decisions)
        self.logs.extend(other.logs)
        self.errors.extend(other.errors)
        self.records.extend(other.records)
