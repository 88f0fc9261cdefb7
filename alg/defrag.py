"""IPv4 fragments, sans-IO: reassembly with bounds, fragmentation for a link's MTU.

The gateway handles a datagram on the controller path only whole: the ALG needs the GRE
key of a call's data (RFC 2637 section 4.1) and the TCP header and PPTP fields of a
control segment, which only the first fragment holds. :class:`Reassembler` collects the
fragments of each datagram (RFC 791 section 3.2, keyed by source, destination, protocol
and identification, and by the side they came from) within bounds in the manner of
Linux's defragmentation (``net.ipv4.ipfrag_high_thresh``, ``ipfrag_time``): bytes held
per source and in all, a time limit per datagram, fragments per datagram. A fragment
that overlaps another of its datagram, unless it is an exact duplicate, drops the whole
datagram and every fragment of it that comes later, until the time limit (as RFC 5722
asks of IPv6; Linux does the same for IPv4). :func:`fragment` splits a datagram again
for the egress link's MTU, and :func:`fragmentation_needed` builds the ICMP error a
router sends when the datagram may not be split (DF set; RFC 1191 section 4).

Everything the reassembler refuses is counted in the core's
:class:`~alg.counters.Counters` (the ``fragments_*`` counters).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from alg.config import AlgConfig
from alg.counters import Counters
from alg.events import Direction
from alg.icmp import DESTINATION_UNREACHABLE, IPV4, QUOTE_LENGTH, WORD, build, checksum

NEXT_HOP_MTU = struct.Struct("!HH")

IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF
MAX_DATAGRAM = 65535
MIN_MTU = 68
"""RFC 791: every internet module must be able to forward a datagram of 68 octets."""
FRAGMENTATION_NEEDED = 4
"""Code of Destination Unreachable: fragmentation needed and DF set (RFC 792, 1191)."""
FRAGMENT_OVERHEAD = 128
"""Bytes charged for each fragment held beyond its own, for the bookkeeping (Linux
charges a buffer's ``truesize``, about as much). A datagram dropped for an overlap keeps
this much until its time limit."""

_OPTION_END = 0
_OPTION_NOP = 1
_OPTION_COPIED = 0x80

Key = tuple[bytes, bytes, int, int, Direction]
"""(source, destination, protocol, identification) of a datagram, and the side its
fragments came from: fragments from the inside never join a datagram from the outside."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the fragment code needs of an IPv4 header.

    Attributes:
        length: the header's length in bytes (options included).
        total: the packet's total length.
        offset: the fragment offset in bytes.
        more: the MF flag.
        dont_fragment: the DF flag.
    """

    length: int
    total: int
    ident: int
    offset: int
    more: bool
    dont_fragment: bool
    proto: int
    src: bytes
    dst: bytes


def parse_header(packet: bytes) -> Header | None:
    """The header of an IPv4 packet; None when it is not one (too short, lengths that
    contradict each other or the buffer)."""
    if len(packet) < IPV4.size:
        return None
    ver_ihl, _tos, total, ident, flags, _ttl, proto, _csum, src, dst = IPV4.unpack_from(packet)
    length = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or length < IPV4.size or total < length or len(packet) < total:
        return None
    return Header(length, total, ident, (flags & IP_OFFSET_MASK) * 8, bool(flags & IP_MF),
                  bool(flags & IP_DF), proto, src, dst)


def is_fragment(header: Header) -> bool:
    """Part of a fragmented datagram: MF set or a non-zero offset."""
    return header.more or header.offset > 0


def _with_header(header: bytes, payload: bytes, flags: int) -> bytes:
    """``header`` (options included) over ``payload``, with its total length, flags and
    offset word and checksum set."""
    raw = (header[:2] + WORD.pack(len(header) + len(payload)) + header[4:6] + WORD.pack(flags)
           + header[8:10] + b"\0\0" + header[12:])
    return raw[:10] + WORD.pack(checksum(raw)) + raw[12:] + payload


@dataclass(eq=False)
class _Datagram:
    """One datagram being reassembled.

    Attributes:
        pieces: payload bytes by offset.
        header: the first fragment's header (options included), once it came.
        end: the payload's length, once the last fragment came.
        dead: dropped (an overlap or a bound): later fragments are dropped too.
        cost: bytes charged against the bounds.
    """

    source: bytes
    started: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    header: bytes | None = None
    end: int | None = None
    held: int = 0
    dead: bool = False
    cost: int = 0


class Reassembler:
    """Datagrams being put together from their fragments, within bounds.

    Args:
        config: the bounds (``fragment_*`` options).
        counters: the core's counters, where every refusal is counted.
    """

    def __init__(self, config: AlgConfig, counters: Counters) -> None:
        self._config = config
        self._counters = counters
        self._datagrams: OrderedDict[Key, _Datagram] = OrderedDict()
        self._by_source: dict[bytes, OrderedDict[Key, None]] = {}
        self._source_memory: dict[bytes, int] = {}
        self.memory = 0
        """Bytes charged for every datagram held."""

    def __len__(self) -> int:
        return len(self._datagrams)

    def source_memory(self, source: bytes) -> int:
        """Bytes charged for the datagrams of one source (4 address bytes)."""
        return self._source_memory.get(source, 0)

    def holds(self, header: Header, direction: Direction = Direction.INBOUND) -> bool:
        """Whether fragments of the datagram of ``header`` that came ``direction`` are
        held (not dropped)."""
        datagram = self._datagrams.get(_key(header, direction))
        return datagram is not None and not datagram.dead

    def add(self, packet: bytes, now: float, direction: Direction = Direction.INBOUND
            ) -> bytes | None:
        """Take one fragment (an IPv4 packet, from its header on).

        Args:
            packet: the fragment.
            now: the time.
            direction: where it came from (``INBOUND``: the outside; ``OUTBOUND``: an
                inside port): part of the datagram's key.

        Returns:
            The whole datagram when this fragment completes it: the first fragment's
            header (options, TTL, TOS and DF kept; MF and offset cleared, total length
            and checksum set) over the payload; None while it is incomplete or when the
            fragment was refused (counted).
        """
        self.expire(now)
        header = parse_header(packet)
        if header is None or not is_fragment(header):
            self._counters.fragments_malformed += 1
            return None
        payload = packet[header.length:header.total]
        start, stop = header.offset, header.offset + len(payload)
        if (not payload or (header.more and len(payload) % 8)
                or header.length + stop > MAX_DATAGRAM):
            self._counters.fragments_malformed += 1
            return None
        self._counters.fragments_received += 1
        key = _key(header, direction)
        datagram = self._datagrams.get(key)
        fresh = datagram is None
        if datagram is None:
            datagram = self._open(key, header.src, now)
        if datagram.dead:
            self._counters.fragments_of_dropped += 1
            return None
        refusal = self._refusal(datagram, header, start, stop, payload)
        if refusal is not None:
            if refusal:
                self._kill(datagram)
            return None
        if len(datagram.pieces) >= self._config.fragments_per_datagram:
            self._counters.fragments_too_many += 1
            self._kill(datagram)
            return None
        cost = (len(payload) + FRAGMENT_OVERHEAD * (2 if fresh else 1)
                + (header.length if start == 0 else 0))
        if not self._make_room(key, datagram, cost):
            self._counters.fragments_memory_drops += 1
            if fresh:
                self._forget(key, datagram)
            else:
                self._kill(datagram)
            return None
        datagram.pieces[start] = payload
        datagram.held += len(payload)
        self._charge(datagram, cost)
        if start == 0:
            datagram.header = packet[:header.length]
        if not header.more:
            datagram.end = stop
        if datagram.header is None or datagram.end is None or datagram.held != datagram.end:
            return None
        self._forget(key, datagram)
        self._counters.fragments_reassembled += 1
        whole = b"".join(datagram.pieces[offset] for offset in sorted(datagram.pieces))
        flags = IP_DF if WORD.unpack_from(datagram.header, 6)[0] & IP_DF else 0
        return _with_header(datagram.header, whole, flags)

    def _refusal(self, datagram: _Datagram, header: Header, start: int, stop: int,
                 payload: bytes) -> bool | None:
        """Why a fragment is refused: None if it is not; False for a duplicate (dropped
        alone); True when it drops the whole datagram (an overlap, an end that
        contradicts what came, or a datagram that would pass 65,535 bytes under the
        first fragment's header, which the whole datagram takes, options and all)."""
        end = datagram.end
        beyond = max((o + len(p) for o, p in datagram.pieces.items()), default=0)
        first = header.length if start == 0 else (
            len(datagram.header) if datagram.header is not None else IPV4.size)
        if (not header.more and ((end is not None and stop != end) or stop < beyond)) or (
                end is not None and stop > end) or first + max(stop, beyond) > MAX_DATAGRAM:
            self._counters.fragments_malformed += 1
            return True
        for offset, held in datagram.pieces.items():
            if offset < stop and start < offset + len(held):
                if offset == start and held == payload:
                    self._counters.fragments_duplicate += 1
                    return False
                self._counters.fragments_overlapping += 1
                return True
        return None

    def expire(self, now: float) -> None:
        """Drop every datagram older than the time limit (counted when incomplete, not
        when dropped before)."""
        limit = self._config.fragment_timeout
        while self._datagrams:
            key, datagram = next(iter(self._datagrams.items()))
            if now - datagram.started < limit:
                return
            if not datagram.dead:
                self._counters.fragments_timed_out += 1
            self._forget(key, datagram)

    def _open(self, key: Key, source: bytes, now: float) -> _Datagram:
        datagram = _Datagram(source, now)
        self._datagrams[key] = datagram
        self._by_source.setdefault(source, OrderedDict())[key] = None
        return datagram

    def _charge(self, datagram: _Datagram, cost: int) -> None:
        datagram.cost += cost
        self.memory += cost
        self._source_memory[datagram.source] = self.source_memory(datagram.source) + cost

    def _make_room(self, key: Key, datagram: _Datagram, cost: int) -> bool:
        """Drop the oldest datagrams of the source, then the oldest of all, until
        ``cost`` more bytes fit both bounds; False if they cannot (the datagram alone
        would be over a bound)."""
        source = datagram.source
        per_source, total = self._config.fragment_memory_per_source, self._config.fragment_memory
        while self.source_memory(source) + cost > per_source:
            if not self._evict(self._by_source[source], key):
                return False
        while self.memory + cost > total:
            if not self._evict(self._datagrams, key):
                return False
        return True

    def _evict(self, order: OrderedDict[Key, _Datagram] | OrderedDict[Key, None], keep: Key
               ) -> bool:
        """Drop the oldest datagram of ``order`` other than ``keep``; False if none."""
        victim = next((k for k in order if k != keep), None)
        if victim is None:
            return False
        datagram = self._datagrams[victim]
        if not datagram.dead:
            self._counters.fragments_evicted += 1
        self._forget(victim, datagram)
        return True

    def _kill(self, datagram: _Datagram) -> None:
        """Drop a datagram's fragments; keep the datagram, at its bookkeeping's cost, so
        that its later fragments are dropped too until its time limit."""
        datagram.dead = True
        datagram.pieces.clear()
        datagram.header = datagram.end = None
        datagram.held = 0
        self._charge(datagram, FRAGMENT_OVERHEAD - datagram.cost)

    def _forget(self, key: Key, datagram: _Datagram) -> None:
        del self._datagrams[key]
        keys = self._by_source[datagram.source]
        del keys[key]
        if not keys:
            del self._by_source[datagram.source]
        self.memory -= datagram.cost
        left = self._source_memory.pop(datagram.source, 0) - datagram.cost
        if left > 0:
            self._source_memory[datagram.source] = left


def _key(header: Header, direction: Direction) -> Key:
    return header.src, header.dst, header.proto, header.ident, direction


def _copied_options(options: bytes) -> bytes:
    """The options every fragment after the first carries: those with the copied flag
    (RFC 791 section 3.1), padded to a multiple of 4 bytes."""
    kept = b""
    at = 0
    while at < len(options):
        kind = options[at]
        if kind == _OPTION_END:
            break
        if kind == _OPTION_NOP:
            at += 1
            continue
        if at + 1 >= len(options) or options[at + 1] < 2:
            break
        size = options[at + 1]
        if kind & _OPTION_COPIED:
            kept += options[at:at + size]
        at += size
    return kept + b"\0" * (-len(kept) % 4)


def fragment(packet: bytes, mtu: int) -> list[bytes] | None:
    """``packet`` (an IPv4 packet) in pieces of at most ``mtu`` bytes (RFC 791 section
    3.2): the first with every option, the others with the copied ones.

    Returns:
        ``[packet]`` when it fits; the pieces; None when it does not fit and may not be
        split (DF set), or is not an IPv4 packet.
    """
    header = parse_header(packet)
    if header is None:
        return None
    if header.total <= mtu:
        return [packet[:header.total]]
    if header.dont_fragment:
        return None
    first = packet[:header.length]
    later = first[:IPV4.size] + _copied_options(first[IPV4.size:])
    later = bytes([0x40 | len(later) // 4]) + later[1:]
    payload = packet[header.length:header.total]
    pieces: list[bytes] = []
    at = 0
    while at < len(payload):
        head = first if at == 0 else later
        room = (mtu - len(head)) // 8 * 8
        if room < 8:
            return None
        chunk = payload[at:at + room]
        more = header.more or at + len(chunk) < len(payload)
        flags = (header.offset + at) // 8 | (IP_MF if more else 0)
        pieces.append(_with_header(head, chunk, flags))
        at += len(chunk)
    return pieces


def fragmentation_needed(packet: bytes, mtu: int) -> bytes:
    """The ICMP Destination Unreachable, fragmentation needed and DF set, about the IPv4
    ``packet`` too big for a link of ``mtu`` bytes (RFC 1191 section 4: the next-hop MTU
    in the low half of the unused word), quoting as much of it as fits in 576 bytes."""
    return build(DESTINATION_UNREACHABLE, FRAGMENTATION_NEEDED, NEXT_HOP_MTU.pack(0, mtu),
                 packet[:QUOTE_LENGTH])
