"""Where IPv4 neighbours are on the switch, and ARP for them, sans-IO.

The gateway's addresses sit on no interface: it answers ARP for its inside gateway
address (from inside ports) and its public addresses (from the outside port) itself, and
resolves inside hosts and outside next hops itself (the outside subnet is on-link,
anything beyond it goes to the configured next hop). Items waiting for an address are
queued here until its ARP reply comes from the side the address is on; the queue is
bounded and unanswered requests are retried, then given up.

Inside addresses are pinned to the inside port they are seen on, with these policies:

- Once its port has sent an IP packet from it, an address is held: a packet or ARP from
  another port claiming it is a spoof (dropped, counted in ``spoofed_drops``).
- Until then the pin rests on ARP alone, which any port can send for any address: the
  next port to claim the address, by ARP or IP, takes it over, so ARP from one port
  cannot lock other ports' hosts out of the gateway before they speak.
- One inside port pins at most ``max_pins_per_port`` addresses at once (a ``[nat]``
  option): a port at the limit claiming an address it does not pin is dropped
  (``pins_refused``) and the address stays free for the other ports, so even IP from
  spoofed sources holds at most that many addresses per port.
- ARP on the pinned port may change the MAC, IP packets do not.
- A pin ages after :data:`PIN_SECONDS` without a packet or ARP from its address, so a
  host that moved is found again; unless the table's ``keep`` says the address is in
  use where the controller does not see its packets (a host bound to the connection
  tracker, ``alg.hostnat``): then it stays pinned, held, and its MAC fixed, until
  ``keep`` no longer says so.
- The gateway's own inside address is never anybody's.
- Each side knows at most :data:`MAX_NEIGHBOURS` addresses (``neighbours_refused``
  beyond).

Outside neighbours (the next hop and on-link hosts) follow a router's policy against ARP
spoofing from the outside link:

- A known outside neighbour's MAC and port change only by an ARP reply to the gateway's
  own request. An unsolicited ARP (request, reply or gratuitous) that claims another MAC
  for it changes nothing and is counted (``arp_unsolicited_ignored``).
- The next hop is learnt only from a reply to the gateway's request; another on-link host
  may also be learnt from the first ARP it sends (it is about to talk to the gateway).
- Entries age (as Linux's stale entries do): :data:`REACHABLE_SECONDS` after its last
  confirmation (a reply to a request, or the ARP it was learnt from) an entry is stale,
  and the next item sent to it resolves it again; the entry stays in use meanwhile, and
  one whose neighbour does not answer the retries is forgotten, so that the next packet
  to it asks afresh. A neighbour that really changed its MAC is thus found by the first
  item sent to it after :data:`REACHABLE_SECONDS` (a new session's first packet goes
  through the controller). A stale entry nothing is sent to costs no ARP.
- An entry neither confirmed nor sent to for :data:`FORGET_SECONDS` is forgotten at the
  next tick (``neighbours_expired``), so hosts learnt from one unsolicited ARP and never
  used do not stay.
- The table's room is kept for the neighbours the gateway asks for: the next hop always
  has a slot of its own beyond :data:`MAX_NEIGHBOURS`, and a reply to the gateway's
  request finding the table full evicts the oldest entry learnt from an unsolicited ARP
  and not confirmed since (``neighbours_evicted``). A spoofer sending ARP from every
  address of a large outside subnet fills the table only with entries that give way.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Generic, TypeVar

from alg.config import GatewayConfig
from alg.counters import CounterSet, counter

ARP_REQUEST = 1
ARP_REPLY = 2
QUEUE_LIMIT = 64
"""Most items waiting for one address."""
RETRY_SECONDS = 1.0
RETRIES = 5
PIN_SECONDS = 300.0
"""How long an inside address stays pinned to its port without a packet or ARP from it."""
MAX_NEIGHBOURS = 4096
"""Most neighbours known per side; an address beyond it is not learnt (counted)."""
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
REACHABLE_SECONDS = 60.0
"""How long an outside neighbour's MAC stands after the reply that confirmed it."""
FORGET_SECONDS = 2 * REACHABLE_SECONDS
"""How long an outside neighbour is kept with neither a confirmation nor an item sent to
it (checked on tick)."""

T = TypeVar("T")


class Side(enum.Enum):
    """Where a port, or an address, is."""

    INSIDE = "inside"
    OUTSIDE = "outside"


@dataclass(frozen=True, slots=True)
class L2:
    """Where an IPv4 neighbour is: the switch port and the MAC to send to."""

    port: int
    mac: str


@dataclass(frozen=True, slots=True)
class ArpMessage:
    """The fields of an ARP packet the table reads (MACs as ``aa:bb:..`` text)."""

    opcode: int
    sender_mac: str
    sender_ip: IPv4Address
    target_ip: IPv4Address


@dataclass(frozen=True, slots=True)
class ArpReply:
    """Answer an ARP request: ``sender_ip`` is at the gateway's MAC.

    Attributes:
        port: where to send it; ``dst_mac``: the requester's frame source.
        sender_ip: the gateway's address that was asked for.
        target_mac, target_ip: the requester.
    """

    port: int
    dst_mac: str
    sender_ip: IPv4Address
    target_mac: str
    target_ip: IPv4Address


@dataclass(frozen=True, slots=True)
class ArpRequest:
    """Ask, broadcast on ``ports``, where ``target_ip`` is (from ``sender_ip``)."""

    ports: tuple[int, ...]
    sender_ip: IPv4Address
    target_ip: IPv4Address


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """A queued item whose destination is now known."""

    l2: L2
    item: T


@dataclass
class NeighbourOutput(Generic[T]):
    """What one event of the table produced."""

    replies: list[ArpReply] = field(default_factory=list)
    requests: list[ArpRequest] = field(default_factory=list)
    deliveries: list[Delivery[T]] = field(default_factory=list)


class Route(enum.Enum):
    """What to do with an IPv4 packet from an inside host."""

    DROP = "drop"
    """Not ours to route: from outside the inside subnet, to it, or multicast/broadcast."""
    SPOOFED = "spoofed"
    """From an inside address held by another port (``spoofed_drops``), or from a new
    one when its port is at ``max_pins_per_port`` (``pins_refused``) or the table is full
    (``neighbours_refused``): dropped either way."""
    GATEWAY = "gateway"
    """To the gateway's inside address (it answers echo requests)."""
    OUTSIDE = "outside"
    """Through the NAT, to the outside."""
    NO_ROUTE = "no route"
    """Off the outside subnet with no next hop configured."""


@dataclass
class NeighbourCounters(CounterSet):
    """What the table counts."""

    arp_requests_sent: int = counter("ARP requests the gateway sent to resolve a neighbour")
    arp_replies_sent: int = counter("ARP replies the gateway sent for its own addresses")
    arp_queue_drops: int = counter(
        "Packets waiting for a neighbour's address dropped: the queue was full, or the address "
        "was never resolved")
    spoofed_drops: int = counter(
        "Packets and ARP from an inside address held by another port, or claiming the gateway's "
        "own, dropped")
    neighbours_refused: int = counter("Neighbours not learnt because the neighbour table was full")
    pins_refused: int = counter(
        "Inside addresses not learnt because their port holds max_pins_per_port addresses")
    arp_unsolicited_ignored: int = counter(
        "Unsolicited ARP from outside claiming another MAC or port for a known neighbour, "
        "ignored")
    """Unsolicited ARP from outside claiming another MAC or port for a known neighbour."""
    neighbours_expired: int = counter(
        "Outside neighbours forgotten after neither a confirmation nor a packet sent to them for "
        "a while")
    """Outside neighbours forgotten after :data:`FORGET_SECONDS` with neither a
    confirmation nor an item sent to them."""
    neighbours_evicted: int = counter(
        "Outside neighbours learnt from unsolicited ARP and never confirmed, forgotten to make "
        "room for one the gateway asked for")
    """Outside neighbours learnt from an unsolicited ARP and never confirmed, forgotten to
    make room for one the gateway asked for."""


@dataclass
class _Pending(Generic[T]):
    side: Side
    sent_at: float = float("-inf")
    requests: int = 0
    items: deque[T] = field(default_factory=deque)
    refresh: bool = False
    """An outside entry being resolved again (it stays in use meanwhile)."""


class NeighbourTable(Generic[T]):
    """Inside hosts and outside next hops by address, and what waits for them.

    Args:
        config: the subnets, the gateway's addresses and the next hop.
    """

    def __init__(self, config: GatewayConfig,
                 keep: Callable[[IPv4Address], bool] = lambda _ip: False) -> None:
        self._config = config
        self._keep_pinned = keep
        self.counters = NeighbourCounters()
        self._inside_ports: tuple[int, ...] = ()
        self._outside_port: int | None = None
        self._hosts: dict[Side, dict[IPv4Address, L2]] = {Side.INSIDE: {}, Side.OUTSIDE: {}}
        self._pinned_at: dict[IPv4Address, float] = {}
        self._held: set[IPv4Address] = set()
        self._pins: Counter[int] = Counter()
        self._pending: dict[IPv4Address, _Pending[T]] = {}
        self._confirmed: dict[IPv4Address, float] = {}
        """Outside neighbours by when they were last confirmed."""
        self._kept: dict[IPv4Address, float] = {}
        """Outside neighbours by when they were last confirmed or sent to, oldest first."""
        self._unsolicited: dict[IPv4Address, float] = {}
        """Outside neighbours learnt from an unsolicited ARP and not confirmed since, by
        when, oldest first."""

    def set_ports(self, inside: Iterable[int], outside: int) -> None:
        """The switch's port numbers for the configured inside and outside ports."""
        self._inside_ports = tuple(sorted(inside))
        self._outside_port = outside

    @property
    def outside_port(self) -> int | None:
        """The outside port's number, once known."""
        return self._outside_port

    @property
    def inside_ports(self) -> tuple[int, ...]:
        """The inside ports' numbers, lowest first."""
        return self._inside_ports

    def side(self, port: int) -> Side | None:
        """Which side a port is on, None for a port the gateway does not use."""
        if port in self._inside_ports:
            return Side.INSIDE
        if port == self._outside_port:
            return Side.OUTSIDE
        return None

    def hosts(self, side: Side) -> dict[IPv4Address, L2]:
        """The known neighbours of one side, by address."""
        return dict(self._hosts[side])

    def waiting(self, target: IPv4Address) -> int | None:
        """How many items wait for ``target``, None when nothing does."""
        pending = self._pending.get(target)
        return None if pending is None else len(pending.items)

    def hop(self, dst: IPv4Address) -> IPv4Address | None:
        """The outside neighbour a packet to ``dst`` goes to (None: no route)."""
        if dst in self._config.outside_subnet:
            return dst
        return self._config.next_hop

    def lookup(self, side: Side, ip: IPv4Address) -> L2 | None:
        """Where to send a packet for ``ip`` (outside: through its next hop), if known."""
        if side is Side.OUTSIDE:
            hop = self.hop(ip)
            return None if hop is None else self._hosts[Side.OUTSIDE].get(hop)
        return self._hosts[Side.INSIDE].get(ip)

    def admit_inside(
        self, port: int, mac: str, src: IPv4Address, dst: IPv4Address, now: float = 0.0
    ) -> Route:
        """Where an IPv4 packet from an inside port goes; its source is learnt on the way.

        A source outside the inside subnet is not learnt; a source held by another port
        is a spoof (counted); a source pinned by ARP alone is taken over, and held.
        """
        subnet = self._config.inside_subnet
        if src not in subnet:
            return Route.DROP
        if self._learn_inside(src, port, mac, False, now) is None:
            return Route.SPOOFED
        if dst.is_multicast or dst in (LIMITED_BROADCAST, subnet.broadcast_address):
            return Route.DROP
        if dst == self._config.inside_gateway:
            return Route.GATEWAY
        if dst in subnet:
            return Route.DROP
        return Route.OUTSIDE if self.hop(dst) is not None else Route.NO_ROUTE

    def arp(self, port: int, frame_src: str, arp: ArpMessage, now: float) -> NeighbourOutput[T]:
        """An ARP packet from ``port``: learn its sender, answer it if it asks for us."""
        out: NeighbourOutput[T] = NeighbourOutput()
        side = self.side(port)
        if side is None:
            return out
        learned: L2 | None = None
        if side is Side.INSIDE:
            if arp.sender_ip in self._config.inside_subnet:
                learned = self._learn_inside(arp.sender_ip, port, arp.sender_mac, True, now)
                if learned is None:
                    return out
            ours = arp.target_ip == self._config.inside_gateway
        else:
            ours = arp.target_ip in self._config.alg.public_ips
            learned = self._learn_outside(port, arp, ours, now)
        if arp.opcode == ARP_REQUEST and ours:
            out.replies.append(ArpReply(
                port, frame_src, arp.target_ip, arp.sender_mac, arp.sender_ip
            ))
            self.counters.arp_replies_sent += 1
        pending = self._pending.get(arp.sender_ip)
        if pending is not None and learned is not None and pending.side is side:
            del self._pending[arp.sender_ip]
            out.deliveries.extend(Delivery(learned, item) for item in pending.items)
        return out

    def send(self, side: Side, ip: IPv4Address, item: T, now: float) -> NeighbourOutput[T]:
        """Deliver ``item`` to ``ip`` (outside: its next hop): now, or once resolved (a
        stale outside neighbour gets it now and is resolved again).

        An item for an unroutable address is dropped (nothing comes back).
        """
        out: NeighbourOutput[T] = NeighbourOutput()
        target = ip if side is Side.INSIDE else self.hop(ip)
        if target is None:
            return out
        known = self._hosts[side].get(target)
        if known is not None:
            out.deliveries.append(Delivery(known, item))
            if side is Side.OUTSIDE:
                self._keep(target, now)
                self._refresh(target, now, out)
            return out
        pending = self._pending.get(target)
        if pending is None:
            pending = self._pending[target] = _Pending(side)
        if len(pending.items) >= QUEUE_LIMIT:
            self.counters.arp_queue_drops += 1
        else:
            pending.items.append(item)
        if now - pending.sent_at >= RETRY_SECONDS and pending.requests <= RETRIES:
            out.requests.append(self._request(target, pending, now))
        return out

    def tick(self, now: float) -> NeighbourOutput[T]:
        """Retry unanswered requests, one a second; a second after the last retry, give up;
        unpin inside addresses not seen for :data:`PIN_SECONDS`; forget outside
        neighbours neither confirmed nor sent to for :data:`FORGET_SECONDS`.

        The items of an address given up are dropped (counted in ``arp_queue_drops``);
        an outside entry being resolved again that does not answer is forgotten.
        """
        out: NeighbourOutput[T] = NeighbourOutput()
        for ip, seen in list(self._pinned_at.items()):
            if now - seen > PIN_SECONDS and not self._keep_pinned(ip):
                self._unpin(ip)
        expired = []
        for ip, kept in self._kept.items():
            if now - kept <= FORGET_SECONDS:
                break
            if ip not in self._pending:
                expired.append(ip)
        for ip in expired:
            self._forget_outside(ip)
            self.counters.neighbours_expired += 1
        for target, pending in list(self._pending.items()):
            if now - pending.sent_at < RETRY_SECONDS:
                continue
            if pending.requests > RETRIES:
                self.counters.arp_queue_drops += len(pending.items)
                del self._pending[target]
                if pending.refresh:
                    self._forget_outside(target)
            else:
                out.requests.append(self._request(target, pending, now))
        return out

    def _learn_outside(self, port: int, arp: ArpMessage, ours: bool, now: float
                       ) -> L2 | None:
        """The outside neighbour an ARP packet teaches, if it may (see the module's
        policy); None when it teaches nothing."""
        ip = arp.sender_ip
        if ip not in self._config.outside_subnet:
            return None
        hosts = self._hosts[Side.OUTSIDE]
        known = hosts.get(ip)
        pending = self._pending.get(ip)
        answer = (arp.opcode == ARP_REPLY and ours and pending is not None
                  and pending.side is Side.OUTSIDE)
        if not answer:
            if known is not None:
                if known != L2(port, arp.sender_mac):
                    self.counters.arp_unsolicited_ignored += 1
                return None
            if ip == self._config.next_hop:
                return None
        if not self._outside_room(ip, answer):
            return None
        learned = hosts[ip] = L2(port, arp.sender_mac)
        self._confirmed[ip] = now
        self._keep(ip, now)
        if answer:
            self._unsolicited.pop(ip, None)
        else:
            self._unsolicited[ip] = now
        return learned

    def _keep(self, ip: IPv4Address, now: float) -> None:
        """Note that an outside entry was confirmed or used at ``now``."""
        self._kept.pop(ip, None)
        self._kept[ip] = now

    def _forget_outside(self, ip: IPv4Address) -> None:
        self._hosts[Side.OUTSIDE].pop(ip, None)
        self._confirmed.pop(ip, None)
        self._kept.pop(ip, None)
        self._unsolicited.pop(ip, None)

    def _outside_room(self, ip: IPv4Address, answer: bool) -> bool:
        """Whether outside neighbour ``ip`` may be learnt: the next hop always may, and a
        reply to the gateway's request evicts the oldest unconfirmed entry when full."""
        if ip == self._config.next_hop or len(self._hosts[Side.OUTSIDE]) < MAX_NEIGHBOURS:
            return True
        if ip in self._hosts[Side.OUTSIDE]:
            return True
        if answer and self._unsolicited:
            self._forget_outside(next(iter(self._unsolicited)))
            self.counters.neighbours_evicted += 1
            return True
        self.counters.neighbours_refused += 1
        return False

    def _refresh(self, ip: IPv4Address, now: float, out: NeighbourOutput[T]) -> None:
        """Resolve a stale outside entry again (it stays in use meanwhile)."""
        confirmed = self._confirmed.get(ip)
        if confirmed is None or now - confirmed < REACHABLE_SECONDS or ip in self._pending:
            return
        pending = self._pending[ip] = _Pending(Side.OUTSIDE, refresh=True)
        out.requests.append(self._request(ip, pending, now))

    def _request(self, target: IPv4Address, pending: _Pending[T], now: float) -> ArpRequest:
        pending.sent_at = now
        pending.requests += 1
        self.counters.arp_requests_sent += 1
        if pending.side is Side.INSIDE:
            return ArpRequest(self._inside_ports, self._config.inside_gateway, target)
        ports = () if self._outside_port is None else (self._outside_port,)
        return ArpRequest(ports, self._config.alg.public_ips[0], target)

    def _learn_inside(
        self, ip: IPv4Address, port: int, mac: str, from_arp: bool, now: float
    ) -> L2 | None:
        hosts = self._hosts[Side.INSIDE]
        known = hosts.get(ip)
        moving = known is not None and known.port != port
        kept = known is not None and self._keep_pinned(ip)
        if ip == self._config.inside_gateway or (moving and (ip in self._held or kept)):
            self.counters.spoofed_drops += 1
            return None
        if known is None or moving:
            if not (self._pin_room(port) and self._room(Side.INSIDE, ip)):
                return None
            if known is not None:
                self._unpin(ip)
            self._pins[port] += 1
            known = hosts[ip] = L2(port, mac)
        elif from_arp and mac != known.mac and not kept:
            known = hosts[ip] = L2(port, mac)
        if not from_arp:
            self._held.add(ip)
        self._pinned_at[ip] = now
        return known

    def _unpin(self, ip: IPv4Address) -> None:
        del self._pinned_at[ip]
        self._pins[self._hosts[Side.INSIDE].pop(ip).port] -= 1
        self._held.discard(ip)

    def _pin_room(self, port: int) -> bool:
        if self._pins[port] < self._config.alg.max_pins_per_port:
            return True
        self.counters.pins_refused += 1
        return False

    def _room(self, side: Side, ip: IPv4Address) -> bool:
        hosts = self._hosts[side]
        if ip in hosts or len(hosts) < MAX_NEIGHBOURS:
            return True
        self.counters.neighbours_refused += 1
        return False
