"""A fake OpenFlow 1.3 switch: one table, real Ryu message classes, real frames.

Two levels, in the manner of Faucet's fake OpenFlow table:

* :class:`FakeDatapath` is enough of Ryu's ``Datapath`` for flow building. Flow-mods are
  applied to a table, and packets given as dicts of OXM field names run through it
  (:meth:`FakeDatapath.process`) without side effects, so a test asserts on which port
  a packet would leave by, with which header fields.
* :class:`FakeSwitch` closes the loop around a Ryu app. Ethernet frames (bytes) enter on
  ports, are parsed into OXM fields, matched (the highest priority wins, as in OpenFlow
  1.3 table 0) and their actions applied to the bytes, checksums updated as a switch
  updates them. Output to a port hands the frame to whatever is attached there and
  records it; output to the controller becomes a packet-in event for the app. Messages
  from the app take effect at once (flow-mods, packet-outs, statistics requests);
  messages to the app (packet-in, flow-removed, statistics and port replies) wait in a
  queue that :meth:`FakeSwitch.run` delivers one at a time, so the app's handlers never
  run inside each other, as under Ryu. Entries count packets and bytes and age by idle
  and hard timeouts on a clock the test moves (:meth:`FakeSwitch.advance`).
"""

from __future__ import annotations

import struct
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from ryu_apps import wire
from ryu_apps.framework import ofp_event, ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

Packet = dict[str, Any]

OFP = ofproto_v1_3
PARSER = ofproto_v1_3_parser
_HEADER = struct.Struct("!BBHI")
_PACKET_IN = struct.Struct("!IHBBQ")

ETH_HEADER = 14
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
IP_PROTO_ICMP = 1
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
IP_OFFSET_MASK = 0x1FFF

ARP_FIELDS = ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")
IPV4_FIELDS = ("ip_proto", "ipv4_src", "ipv4_dst", "ip_dscp", "ip_ecn", "ip_frag")
MASKABLE = frozenset({"ip_frag"})
"""Fields a match may hold under a mask (a ``(value, mask)`` pair)."""
PREREQUISITES: dict[str, tuple[str, int]] = {
    **{name: ("eth_type", ETH_TYPE_ARP) for name in ARP_FIELDS},
    **{name: ("eth_type", ETH_TYPE_IPV4) for name in IPV4_FIELDS},
    "tcp_src": ("ip_proto", IP_PROTO_TCP),
    "tcp_dst": ("ip_proto", IP_PROTO_TCP),
    "udp_src": ("ip_proto", IP_PROTO_UDP),
    "udp_dst": ("ip_proto", IP_PROTO_UDP),
    "icmpv4_type": ("ip_proto", IP_PROTO_ICMP),
    "icmpv4_code": ("ip_proto", IP_PROTO_ICMP),
}
"""OXM field -> the field and value it needs in the match (OpenFlow 1.3, table 12)."""

SETTABLE = frozenset({
    "eth_src", "eth_dst", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
})
NO_COOKIE = 0xFFFFFFFFFFFFFFFF


@dataclass(eq=False)
class Entry:
    """One installed flow entry and its counters.

    Attributes:
        last_used: when a packet last matched it (its install time until one does).
    """

    priority: int
    cookie: int
    match: dict[str, Any]
    actions: list[Any]
    idle_timeout: int
    flags: int
    hard_timeout: int = 0
    meter: int | None = None
    packet_count: int = 0
    byte_count: int = 0
    installed: float = 0.0
    last_used: float = 0.0


@dataclass
class Result:
    """What the table did with a packet.

    Attributes:
        expired: the packet as a TTL decrement found it spent (it goes to the
            controller with reason OFPR_INVALID_TTL, or is dropped); None if none did.
    """

    entry: Entry | None
    outputs: list[tuple[int, Packet]] = field(default_factory=list)
    expired: Packet | None = None

    @property
    def to_controller(self) -> bool:
        """True when the packet went to the controller."""
        return any(port == OFP.OFPP_CONTROLLER for port, _ in self.outputs)

    @property
    def dropped(self) -> bool:
        """True when nothing left the switch."""
        return not self.outputs


class FakeDatapath:
    """Enough of ``ryu.controller.controller.Datapath`` for flow building, plus a table.

    Attributes:
        table: the installed entries, in the order they were added.
        sent: every message the app sent, in order.
        errors: flow-mods the switch refused (a real switch answers them with an error
            message), one line each.
    """

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1

    def __init__(self) -> None:
        self.table: list[Entry] = []
        self.sent: list[Any] = []
        self.errors: list[str] = []
        self.meters: dict[int, int] = {}
        self.bursts: dict[int, int] = {}
        self._xid = 0
        self._wire_xids = wire.Xids()

    def now(self) -> float:
        """The switch's clock (a plain datapath has none: always 0)."""
        return 0.0

    def send(self, buf: bytes) -> bool:
        """Raw messages, as ``ryu_apps.wire`` sends them: each is parsed back with Ryu's
        own parser (so every test checks the encoding too) and taken as
        :meth:`send_msg` takes it."""
        offset = 0
        while offset < len(buf):
            version, msg_type, length, xid = struct.unpack_from("!BBHI", buf, offset)
            if length < 8 or offset + length > len(buf):
                raise AssertionError(f"bad OpenFlow message length {length} at {offset}")
            chunk = buf[offset:offset + length]
            if msg_type == OFP.OFPT_BARRIER_REQUEST:
                msg: Any = PARSER.OFPBarrierRequest(self)
            elif msg_type == OFP.OFPT_PACKET_OUT:  # Ryu 4.34 has no parser for it
                msg = self._packet_out_of(chunk)
            else:
                msg = ofproto_parser.msg(self, version, msg_type, length, xid, chunk)
            msg.xid = xid
            if msg_type != OFP.OFPT_BARRIER_REQUEST:
                reencoded = self._reencode(msg)
                if reencoded != chunk:
                    raise AssertionError(
                        f"Ryu reads type {msg_type} differently:\n{chunk.hex()}\n"
                        f"{reencoded.hex()}")
            self.send_msg(msg)
            offset += length
        return True

    def _packet_out_of(self, chunk: bytes) -> Any:
        buffer_id, in_port, actions_len = struct.unpack_from("!IIH", chunk, 8)
        actions, offset = [], 24
        while offset < 24 + actions_len:
            action = PARSER.OFPAction.parser(chunk, offset)
            actions.append(action)
            offset += action.len
        return PARSER.OFPPacketOut(self, buffer_id, in_port, actions, chunk[offset:])

    @staticmethod
    def _reencode(msg: Any) -> bytes:
        msg.buf = bytearray()
        msg.serialize()
        return bytes(msg.buf)

    def set_xid(self, msg: Any) -> int:
        """Give a message the next transaction id, as Ryu's datapath does."""
        self._xid += 1
        msg.set_xid(self._xid)
        return self._xid

    def send_msg(self, msg: Any) -> None:
        """Record a message; apply it when it is a flow-mod. A ``ryu_apps.wire`` message
        goes through :meth:`send`."""
        if isinstance(msg, wire.Message):
            self.send(wire.encode([msg], self._wire_xids))
            return
        self.sent.append(msg)
        if isinstance(msg, PARSER.OFPFlowMod):
            self.apply(msg)
        elif isinstance(msg, PARSER.OFPMeterMod):
            self.meter(msg)

    def meter(self, mod: Any) -> None:
        """Apply one meter-mod: ADD of an existing meter or MODIFY of an unknown one is
        refused (recorded in :attr:`errors`, as a switch answers with an error)."""
        [band] = mod.bands
        exists = mod.meter_id in self.meters
        if (mod.command == OFP.OFPMC_ADD) == exists:
            self.errors.append(f"meter-mod {mod.command} of meter {mod.meter_id} refused")
            return
        self.meters[mod.meter_id] = band.rate
        self.bursts[mod.meter_id] = band.burst_size

    def apply(self, mod: Any) -> None:
        """Apply one flow-mod to the table.

        ADD replaces an entry of identical match and priority, keeping its counters and
        idle clock as Open vSwitch does without ``OFPFF_RESET_COUNTS``; DELETE removes
        the entries whose cookie matches under the mask and whose match includes the
        given one (a non-strict delete), DELETE_STRICT only those whose priority and
        match are the given ones. A flow-mod whose match or set-field lacks its
        prerequisites is refused and recorded in :attr:`errors`.
        """
        match = dict(mod.match.items())
        if mod.command == OFP.OFPFC_ADD:
            actions: list[Any] = []
            meter: int | None = None
            for inst in mod.instructions:
                if isinstance(inst, PARSER.OFPInstructionMeter):
                    meter = inst.meter_id
                    continue
                if not isinstance(inst, PARSER.OFPInstructionActions) or (
                    inst.type != OFP.OFPIT_APPLY_ACTIONS
                ):
                    raise NotImplementedError(type(inst).__name__)
                actions.extend(inst.actions)
            if meter is not None and meter not in self.meters:
                self.errors.append(f"flow-mod cookie={mod.cookie:#x} refused: no meter {meter}")
                return
            problem = _inconsistency(match, actions)
            if problem is not None:
                self.errors.append(f"flow-mod cookie={mod.cookie:#x} refused: {problem}")
                return
            now = self.now()
            entry = Entry(
                mod.priority, mod.cookie, match, actions, mod.idle_timeout, mod.flags,
                mod.hard_timeout, meter, installed=now, last_used=now,
            )
            for old in self.table:
                if old.priority == entry.priority and old.match == entry.match:
                    self.table.remove(old)
                    if not mod.flags & OFP.OFPFF_RESET_COUNTS:
                        entry.packet_count, entry.byte_count = old.packet_count, old.byte_count
                        entry.last_used = old.last_used
                    break
            self.table.append(entry)
        elif mod.command in (OFP.OFPFC_DELETE, OFP.OFPFC_DELETE_STRICT):
            doomed = [e for e in self.table if _selected(e, mod.cookie, mod.cookie_mask, match)
                      and (mod.command == OFP.OFPFC_DELETE
                           or (e.priority, e.match) == (mod.priority, match))]
            self.table = [e for e in self.table if all(e is not d for d in doomed)]
            for entry in doomed:
                self.removed(entry, OFP.OFPRR_DELETE)
        else:
            raise NotImplementedError(mod.command)

    def removed(self, entry: Entry, reason: int) -> None:
        """Called for each entry that leaves the table other than by replacement."""

    def lookup(self, packet: Packet) -> Entry | None:
        """The entry a packet matches: the highest priority, the first installed of equals."""
        best: Entry | None = None
        for entry in self.table:
            if _matches(entry.match, packet) and (best is None or entry.priority > best.priority):
                best = entry
        return best

    def process(self, packet: Packet) -> Result:
        """Run ``packet`` through the table: highest-priority match, then its actions."""
        entry = self.lookup(packet)
        if entry is None:
            return Result(None)
        current = dict(packet)
        result = Result(entry)
        for action in entry.actions:
            if isinstance(action, PARSER.OFPActionSetField):
                current[action.key] = action.value
            elif isinstance(action, PARSER.OFPActionDecNwTtl):
                if current["ttl"] <= 1:
                    result.expired = dict(current)
                    break
                current["ttl"] = current["ttl"] - 1
            elif isinstance(action, PARSER.OFPActionOutput):
                result.outputs.append((action.port, dict(current)))
            else:
                raise NotImplementedError(type(action).__name__)
        return result


def _matches(match: dict[str, Any], packet: Packet) -> bool:
    return all(
        (packet.get(name, 0) & value[1]) == value[0] if isinstance(value, tuple)
        else packet.get(name) == value
        for name, value in match.items()
    )


def _selected(entry: Entry, cookie: int, mask: int, match: dict[str, Any]) -> bool:
    if (entry.cookie & mask) != (cookie & mask):
        return False
    return all(entry.match.get(k) == v for k, v in match.items())


def _inconsistency(match: dict[str, Any], actions: list[Any]) -> str | None:
    """Why a switch would refuse this match and these actions, or None."""
    for name, value in match.items():
        if isinstance(value, tuple) and name not in MASKABLE:
            raise NotImplementedError(f"masked match on {name}")
    for name in match:
        if not _prerequisites_met(name, match):
            return f"match on {name} without its prerequisite"
    for action in actions:
        if isinstance(action, PARSER.OFPActionSetField):
            if action.key not in SETTABLE:
                raise NotImplementedError(f"set_field {action.key}")
            if not _prerequisites_met(action.key, match):
                return f"set_field {action.key} inconsistent with the match"
        elif not isinstance(action, PARSER.OFPActionDecNwTtl | PARSER.OFPActionOutput):
            raise NotImplementedError(type(action).__name__)
    return None


def _prerequisites_met(name: str, match: Mapping[str, Any]) -> bool:
    while name in PREREQUISITES:
        needed, value = PREREQUISITES[name]
        if match.get(needed) != value:
            return False
        name = needed
    return True


# Frames.

def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _adjusted(checksum: int, old: bytes, new: bytes) -> int:
    """``checksum`` updated for ``old`` 16-bit words becoming ``new`` (RFC 1624, eqn. 3)."""
    total = ~checksum & 0xFFFF
    for i in range(0, len(old), 2):
        total += (~int.from_bytes(old[i : i + 2], "big") & 0xFFFF)
        total += int.from_bytes(new[i : i + 2], "big")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac_text(data: bytes | bytearray) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def parse_fields(frame: bytes, in_port: int) -> Packet:
    """The OXM fields a switch extracts from an Ethernet frame (no VLANs).

    Ports and ICMP type and code are extracted only from the first fragment of a
    datagram, as Open vSwitch does; ``ttl`` is kept too, though no OXM field holds it.
    """
    fields: Packet = {"in_port": in_port}
    if len(frame) < ETH_HEADER:
        return fields
    eth_type = int.from_bytes(frame[12:14], "big")
    fields.update(eth_dst=_mac_text(frame[0:6]), eth_src=_mac_text(frame[6:12]),
                  eth_type=eth_type)
    body = frame[ETH_HEADER:]
    if eth_type == ETH_TYPE_ARP and len(body) >= 28:
        op, sha, spa, tha, tpa = struct.unpack_from("!6xH6s4s6s4s", body)
        fields.update(arp_op=op, arp_sha=_mac_text(sha), arp_spa=str(IPv4Address(spa)),
                      arp_tha=_mac_text(tha), arp_tpa=str(IPv4Address(tpa)))
    elif eth_type == ETH_TYPE_IPV4 and len(body) >= 20 and body[0] >> 4 == 4:
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        fields.update(
            ip_dscp=body[1] >> 2, ip_ecn=body[1] & 3, ip_proto=proto, ttl=body[8],
            ipv4_src=str(IPv4Address(body[12:16])), ipv4_dst=str(IPv4Address(body[16:20])),
        )
        flags = int.from_bytes(body[6:8], "big")
        first = flags & IP_OFFSET_MASK == 0
        fields["ip_frag"] = 0 if flags & 0x3FFF == 0 else 1 if first else 3
        l4 = body[ihl:]
        if first and proto in (IP_PROTO_TCP, IP_PROTO_UDP) and len(l4) >= 4:
            name = "tcp" if proto == IP_PROTO_TCP else "udp"
            fields[f"{name}_src"], fields[f"{name}_dst"] = struct.unpack_from("!HH", l4)
        elif first and proto == IP_PROTO_ICMP and len(l4) >= 2:
            fields.update(icmpv4_type=l4[0], icmpv4_code=l4[1])
    return fields


class _Frame:
    """A frame being modified by actions: its bytes and where its headers are."""

    def __init__(self, data: bytes, fields: Packet) -> None:
        self.data = bytearray(data)
        self.fields = fields
        self.ip = ETH_HEADER
        self.l4 = ETH_HEADER + (self.data[ETH_HEADER] & 0x0F) * 4 if "ip_proto" in fields else 0

    def _l4_checksum_at(self) -> int | None:
        """Offset of the TCP or UDP checksum to keep up to date, if any."""
        proto = self.fields.get("ip_proto")
        if proto == IP_PROTO_TCP and "tcp_src" in self.fields and len(self.data) >= self.l4 + 18:
            return self.l4 + 16
        if proto == IP_PROTO_UDP and "udp_src" in self.fields and len(self.data) >= self.l4 + 8:
            at = self.l4 + 6
            return None if self.data[at : at + 2] == b"\0\0" else at
        return None

    def _replace(self, at: int, new: bytes, in_ip_header: bool, in_pseudo_header: bool) -> None:
        old = bytes(self.data[at : at + len(new)])
        self.data[at : at + len(new)] = new
        if in_ip_header:
            csum_at = self.ip + 10
            csum = int.from_bytes(self.data[csum_at : csum_at + 2], "big")
            self.data[csum_at : csum_at + 2] = _adjusted(csum, old, new).to_bytes(2, "big")
        l4_at = self._l4_checksum_at() if in_pseudo_header else None
        if l4_at is not None:
            csum = _adjusted(int.from_bytes(self.data[l4_at : l4_at + 2], "big"), old, new)
            if self.fields.get("ip_proto") == IP_PROTO_UDP and csum == 0:
                csum = 0xFFFF
            self.data[l4_at : l4_at + 2] = csum.to_bytes(2, "big")

    def set_field(self, name: str, value: Any) -> None:
        """Set one field in the bytes, updating the checksums that cover it."""
        if name in ("eth_dst", "eth_src"):
            at = 0 if name == "eth_dst" else 6
            self.data[at : at + 6] = _mac_bytes(str(value))
            self.fields[name] = _mac_text(self.data[at : at + 6])
        elif name in ("ipv4_src", "ipv4_dst"):
            at = self.ip + (12 if name == "ipv4_src" else 16)
            self._replace(at, IPv4Address(value).packed, True, True)
            self.fields[name] = str(IPv4Address(value))
        else:
            if name not in self.fields:
                raise AssertionError(f"set_field {name} on a packet without it")
            at = self.l4 + (0 if name.endswith("_src") else 2)
            self._replace(at, int(value).to_bytes(2, "big"), False, True)
            self.fields[name] = int(value)

    def decrement_ttl(self) -> bool:
        """Decrement the IPv4 TTL; False (the packet is dropped) when it would reach 0."""
        if "ip_proto" not in self.fields:
            return True
        ttl = self.data[self.ip + 8]
        if ttl <= 1:
            return False
        at = self.ip + 8
        self._replace(at, bytes([ttl - 1, self.data[at + 1]]), True, False)
        self.fields["ttl"] = ttl - 1
        return True


# The closed loop.

class Station(Protocol):
    """Whatever is plugged into a switch port: it is handed each frame sent out there."""

    def receive(self, frame: bytes) -> None:
        """Take one frame from the wire."""


class LoopError(AssertionError):
    """Packets or messages kept causing each other beyond the switch's bounds."""


@dataclass
class Removal:
    """A flow-removed message the switch sent: the entry and the OpenFlow reason."""

    entry: Entry
    reason: int


class FakeSwitch(FakeDatapath):
    """A closed-loop OpenFlow 1.3 switch around one Ryu app.

    Args:
        ports: the switch's ports, name -> number (the port description it reports).
        clock: the time, in seconds; entries note when they were installed and last
            matched by it.
        max_hops: how long a chain of causes may get (a frame causing a packet-in
            causing a packet-out causing a frame...) before :class:`LoopError`.
        max_events: how many queued events one :meth:`run` may deliver.
        bridge: the name of its LOCAL port, which Open vSwitch gives the bridge's.
        datapath_id: its datapath ID.

    Attributes:
        delivered: frames sent out of each port, by port number, in order.
        packet_ins: (in_port, frame) of each packet-in delivered to the app.
        packet_outs: how many packet-outs the app sent.
        removals: every flow-removed message sent to the app.
        delivered_to_app: every message the app had a handler for, in delivery order.
        ttl_drops: packets dropped because a TTL decrement would have reached zero
            (sent to the app instead, with reason OFPR_INVALID_TTL, once its asynchronous
            configuration asks for them, as Open vSwitch does).
        packet_in_mask: the packet-in reasons the app's asynchronous configuration asks
            for as master (Open vSwitch's default until it sets one).
        metering: entries' meters drop what exceeds their rate (a token bucket of the
            meter's burst size, refilled at its rate on the switch's clock), as Open
            vSwitch's userspace datapath does; off, meters are only checked to exist.
        meter_drops: packets each meter dropped, by meter id.
    """

    def __init__(
        self,
        ports: Mapping[str, int],
        clock: Callable[[], float],
        max_hops: int = 32,
        max_events: int = 10_000,
        bridge: str = "br-test",
        datapath_id: int = 1,
    ) -> None:
        super().__init__()
        self.id = datapath_id
        self.bridge = bridge
        self.ports = dict(ports)
        self.clock = clock
        self.max_hops = max_hops
        self.max_events = max_events
        self.stations: dict[int, Station] = {}
        self.delivered: defaultdict[int, list[bytes]] = defaultdict(list)
        self.packet_ins: list[tuple[int, bytes]] = []
        self.packet_outs = 0
        self.removals: list[Removal] = []
        self.delivered_to_app: list[Any] = []
        self.ttl_drops = 0
        self.packet_in_mask = (1 << OFP.OFPR_NO_MATCH) | (1 << OFP.OFPR_ACTION)
        self.metering = False
        self.meter_drops: defaultdict[int, int] = defaultdict(int)
        self._buckets: dict[int, tuple[float, float]] = {}
        self._handlers: dict[type, list[Callable[[Any], None]]] = {}
        self._queue: deque[tuple[int, Callable[[], None]]] = deque()
        self._depth: int | None = None
        self._running = False

    def now(self) -> float:
        """The switch's clock."""
        return self.clock()

    # Wiring.

    def attach(self, port: int, station: Station) -> None:
        """Plug ``station`` into ``port``."""
        if port not in self.ports.values():
            raise ValueError(f"no port {port}")
        self.stations[port] = station

    def connect(self, app: Any) -> None:
        """Connect to ``app`` (features, then the port description it asks for) and run.

        The app's handlers are found as Ryu finds them, by the event classes its
        ``set_ev_cls`` decorators name.
        """
        self._handlers = {}
        for name in dir(type(app)):
            method = getattr(type(app), name, None)
            for ev_cls in getattr(method, "callers", {}):
                self._handlers.setdefault(ev_cls, []).append(getattr(app, name))
        self._to_app(PARSER.OFPSwitchFeatures(
            self, datapath_id=self.id, n_buffers=0, n_tables=1, auxiliary_id=0,
            capabilities=OFP.OFPC_FLOW_STATS,
        ))
        self.run()

    def inject(self, port: int, frame: bytes) -> None:
        """A frame arrives on ``port`` (taken up by the next :meth:`run`)."""
        data = bytes(frame)
        self._enqueue(lambda: self._ingress(port, data))

    def run(self) -> None:
        """Deliver queued frames and messages until none is left."""
        if self._running:
            return
        self._running = True
        try:
            delivered = 0
            while self._queue:
                delivered += 1
                if delivered > self.max_events:
                    raise LoopError(f"more than {self.max_events} events in one run")
                self._depth, work = self._queue.popleft()
                work()
        finally:
            self._running = False
            self._depth = None

    def advance(self, now: float) -> None:
        """Expire the entries whose idle or hard timeout has passed at ``now``.

        Those flagged ``OFPFF_SEND_FLOW_REM`` are reported to the app by the next
        :meth:`run`.
        """
        for entry in list(self.table):
            if entry.idle_timeout and now - entry.last_used >= entry.idle_timeout:
                reason = OFP.OFPRR_IDLE_TIMEOUT
            elif entry.hard_timeout and now - entry.installed >= entry.hard_timeout:
                reason = OFP.OFPRR_HARD_TIMEOUT
            else:
                continue
            self.table.remove(entry)
            self.removed(entry, reason)

    # Views.

    def entries(self, **fields: Any) -> list[Entry]:
        """The installed entries whose match has each of ``fields`` with that value."""
        return [e for e in self.table if all(e.match.get(k) == v for k, v in fields.items())]

    def received(self, msg_type: type) -> list[Any]:
        """Messages of ``msg_type`` delivered to the app's handlers."""
        return [m for m in self.delivered_to_app if isinstance(m, msg_type)]

    # Messages from the app.

    def send_msg(self, msg: Any) -> None:
        """Act on one message from the app at once."""
        super().send_msg(msg)
        if isinstance(msg, PARSER.OFPPacketOut):
            self._packet_out(msg)
        elif isinstance(msg, PARSER.OFPFlowStatsRequest):
            reply = PARSER.OFPFlowStatsReply(self, body=self._flow_stats(msg), flags=0)
            reply.xid = msg.xid
            self._to_app(reply)
        elif isinstance(msg, PARSER.OFPPortDescStatsRequest):
            body = [
                PARSER.OFPPort(number, f"02:00:00:00:00:{number & 0xFF:02x}", name.encode(),
                               0, 0, 0, 0, 0, 0, 0, 0)
                for name, number in (*self.ports.items(), (self.bridge, OFP.OFPP_LOCAL))
            ]
            self._to_app(PARSER.OFPPortDescStatsReply(self, body=body, flags=0))
        elif isinstance(msg, PARSER.OFPSetAsync):
            self.packet_in_mask = msg.packet_in_mask[0]
        elif not isinstance(msg, PARSER.OFPFlowMod | PARSER.OFPMeterMod
                            | PARSER.OFPBarrierRequest):
            raise NotImplementedError(type(msg).__name__)

    def removed(self, entry: Entry, reason: int) -> None:
        """Report the removal to the app when the entry asked for it."""
        if not entry.flags & OFP.OFPFF_SEND_FLOW_REM:
            return
        self.removals.append(Removal(entry, reason))
        elapsed = max(0.0, self.now() - entry.installed)
        self._to_app(PARSER.OFPFlowRemoved(
            self, cookie=entry.cookie, priority=entry.priority, reason=reason, table_id=0,
            duration_sec=int(elapsed), duration_nsec=int(elapsed % 1 * 1e9),
            idle_timeout=entry.idle_timeout, hard_timeout=entry.hard_timeout,
            packet_count=entry.packet_count, byte_count=entry.byte_count,
            match=PARSER.OFPMatch(**entry.match),
        ))

    def _flow_stats(self, request: Any) -> list[Any]:
        if request.table_id not in (0, OFP.OFPTT_ALL):
            return []
        match = dict(request.match.items())
        now = self.now()
        return [
            PARSER.OFPFlowStats(
                table_id=0, duration_sec=int(now - e.installed), duration_nsec=0,
                priority=e.priority, idle_timeout=e.idle_timeout, hard_timeout=e.hard_timeout,
                flags=e.flags, cookie=e.cookie, packet_count=e.packet_count,
                byte_count=e.byte_count, match=PARSER.OFPMatch(**e.match),
                instructions=[PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS, e.actions)],
            )
            for e in self.table
            if _selected(e, request.cookie, request.cookie_mask, match)
            and _outputs_to(e, request.out_port)
        ]

    def _packet_out(self, msg: Any) -> None:
        self.packet_outs += 1
        data = bytes(msg.data)
        with self._at(self._current() + 1):
            frame = _Frame(data, parse_fields(data, msg.in_port))
            self._execute(frame, msg.actions, msg.in_port, None)

    # The datapath.

    def _current(self) -> int:
        return 0 if self._depth is None else self._depth

    @contextmanager
    def _at(self, depth: int) -> Iterator[None]:
        """Work done inside the block is ``depth`` steps down its chain of causes."""
        if depth > self.max_hops:
            raise LoopError(f"a chain of more than {self.max_hops} packets and messages")
        saved = self._depth
        self._depth = depth
        try:
            yield
        finally:
            self._depth = saved

    def _enqueue(self, work: Callable[[], None]) -> None:
        depth = 0 if self._depth is None else self._depth + 1
        if depth > self.max_hops:
            raise LoopError(f"a chain of more than {self.max_hops} packets and messages")
        self._queue.append((depth, work))

    def _ingress(self, port: int, data: bytes) -> None:
        fields = parse_fields(data, port)
        entry = self.lookup(fields)
        if entry is None:
            return
        entry.packet_count += 1
        entry.byte_count += len(data)
        entry.last_used = self.now()
        if entry.meter is not None and not self._metered(entry.meter):
            self.meter_drops[entry.meter] += 1
            return
        self._execute(_Frame(data, fields), entry.actions, port, entry)

    def _execute(
        self, frame: _Frame, actions: Iterable[Any], in_port: int, entry: Entry | None
    ) -> None:
        for action in actions:
            if isinstance(action, PARSER.OFPActionSetField):
                frame.set_field(action.key, action.value)
            elif isinstance(action, PARSER.OFPActionDecNwTtl):
                if not frame.decrement_ttl():
                    if self.packet_in_mask & (1 << OFP.OFPR_INVALID_TTL):
                        cookie = NO_COOKIE if entry is None else entry.cookie
                        self._to_app(self._packet_in(in_port, cookie, bytes(frame.data),
                                                     OFP.OFPR_INVALID_TTL))
                    else:
                        self.ttl_drops += 1
                    return
            elif isinstance(action, PARSER.OFPActionOutput):
                self._output(bytes(frame.data), action.port, in_port, entry)
            else:
                raise NotImplementedError(type(action).__name__)

    def _output(self, data: bytes, port: int, in_port: int, entry: Entry | None) -> None:
        if port == OFP.OFPP_CONTROLLER:
            cookie = NO_COOKIE if entry is None else entry.cookie
            self._to_app(self._packet_in(in_port, cookie, data))
        elif port == OFP.OFPP_TABLE:
            with self._at(self._current() + 1):
                self._ingress(in_port, data)
        elif port in (OFP.OFPP_FLOOD, OFP.OFPP_ALL):
            for number in sorted(self.ports.values()):
                if number != in_port:
                    self._deliver(number, data)
        elif port == OFP.OFPP_IN_PORT:
            self._deliver(in_port, data)
        elif port == in_port:
            return
        elif port in self.ports.values():
            self._deliver(port, data)
        else:
            self.errors.append(f"output to port {port}, which the switch does not have")

    def _packet_in(self, in_port: int, cookie: int, data: bytes,
                   reason: int = OFP.OFPR_ACTION) -> Any:
        """A PACKET_IN as the switch sends it, read by Ryu's message parser (which the
        gateway app replaces with its own for PACKET_IN)."""
        body = bytearray(_PACKET_IN.pack(OFP.OFP_NO_BUFFER, len(data), reason, 0, cookie))
        PARSER.OFPMatch(in_port=in_port).serialize(body, len(body))
        body += b"\0\0" + data
        length = OFP.OFP_HEADER_SIZE + len(body)
        buf = _HEADER.pack(OFP.OFP_VERSION, OFP.OFPT_PACKET_IN, length, 0) + bytes(body)
        return ofproto_parser.msg(self, OFP.OFP_VERSION, OFP.OFPT_PACKET_IN, length, 0, buf)

    def _deliver(self, port: int, data: bytes) -> None:
        self.delivered[port].append(data)
        station = self.stations.get(port)
        if station is not None:
            with self._at(self._current()):
                station.receive(data)

    def _metered(self, meter: int) -> bool:
        """Whether ``meter`` lets one more packet pass now (always, unless
        :attr:`metering`)."""
        if not self.metering:
            return True
        burst = max(1, self.bursts.get(meter, 1))
        now = self.now()
        tokens, since = self._buckets.get(meter, (float(burst), now))
        tokens = min(float(burst), tokens + (now - since) * self.meters.get(meter, 0))
        if tokens < 1:
            self._buckets[meter] = (tokens, now)
            return False
        self._buckets[meter] = (tokens - 1, now)
        return True

    def _to_app(self, msg: Any) -> None:
        self._enqueue(lambda: self._dispatch(msg))

    def _dispatch(self, msg: Any) -> None:
        ev = ofp_event.ofp_msg_to_ev(msg)
        handlers = self._handlers.get(type(ev), [])
        if not handlers:
            return
        self.delivered_to_app.append(msg)
        if isinstance(msg, PARSER.OFPPacketIn):
            self.packet_ins.append((msg.match["in_port"], bytes(msg.data)))
        for handler in handlers:
            handler(ev)


def _outputs_to(entry: Entry, port: int) -> bool:
    if port == OFP.OFPP_ANY:
        return True
    return any(isinstance(a, PARSER.OFPActionOutput) and a.port == port for a in entry.actions)


def parsed(message: wire.Message) -> Any:
    """A ``ryu_apps.wire`` message as Ryu reads it (the encoding checked on the way)."""
    dp = FakeDatapath()
    dp.send(wire.encode([message], wire.Xids()))
    return dp.sent[-1]
