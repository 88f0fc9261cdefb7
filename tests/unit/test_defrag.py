"""The reassembler and the fragmenter of ``alg.defrag``: bounds, overlaps, time limits,
any order, attackers; the pieces checked with Scapy."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPOption_RR, IPOption_Security
from scapy.layers.l2 import GRE
from scapy.packet import Raw

from alg.config import AlgConfig
from alg.counters import Counters
from alg.defrag import (
    FRAGMENT_OVERHEAD,
    IPV4,
    Header,
    Reassembler,
    fragment,
    fragmentation_needed,
    is_fragment,
    parse_header,
)
from alg.events import Direction
from alg.icmp import checksum

SERVER, PUBLIC = "203.0.113.1", "203.0.113.2"
CONFIG = AlgConfig()


def datagram(size: int = 2000, ident: int = 7, src: str = SERVER, **fields: str) -> bytes:
    """A GRE datagram of ``size`` payload bytes (after the IPv4 header)."""
    body = random.Random(ident * 7919 + size).randbytes(size)
    ip = IP(src=src, dst=PUBLIC, id=ident, ttl=60, tos=8, proto=47)
    for name, value in fields.items():
        setattr(ip, name, value)
    return bytes(ip / body)


def pieces(packet: bytes, size: int = 1480) -> list[bytes]:
    """``packet`` cut at multiples of ``size`` payload bytes (a multiple of 8)."""
    ip = IP(packet)
    payload = bytes(ip.payload)
    out = []
    for at in range(0, len(payload), size):
        chunk = payload[at:at + size]
        more = at + size < len(payload)
        frag = ip.copy()
        frag.remove_payload()
        frag.flags = (ip.flags | "MF") if more else ip.flags
        frag.frag = at // 8
        frag.len = frag.chksum = None
        out.append(bytes(frag / Raw(chunk)))
    return out


def fragment_at(packet: bytes, offset: int, length: int, more: bool, ident: int | None = None
                ) -> bytes:
    """A fragment of ``packet``'s payload from ``offset``, ``length`` bytes long."""
    ip = IP(packet)
    payload = bytes(ip.payload)
    frag = ip.copy()
    frag.remove_payload()
    kept = ["DF"] if ip.flags.DF else []
    frag.flags = "+".join([*kept, "MF"] if more else kept) or 0
    frag.frag = offset // 8
    if ident is not None:
        frag.id = ident
    frag.len = frag.chksum = None
    return bytes(frag / Raw(payload[offset:offset + length]))


def raw_fragment(src: str, ident: int, offset: int, more: bool, payload: bytes,
                 options: bytes = b"") -> bytes:
    """A GRE fragment to the public address, built without Scapy (for floods); with
    ``options`` (a multiple of 4 bytes) after its fixed header; the payload cut to fit
    65,535 bytes."""
    length = 20 + len(options)
    payload = payload[:65535 - length]
    header = IPV4.pack(0x40 | length // 4, 0, length + len(payload), ident,
                       offset // 8 | (0x2000 if more else 0), 64, 47, 0,
                       IPv4Address(src).packed, IPv4Address(PUBLIC).packed) + options
    return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + payload


def same_datagram(whole: bytes | None, original: bytes) -> None:
    assert whole is not None
    got, want = IP(whole), IP(original)
    assert bytes(got.payload) == bytes(want.payload)
    assert (got.src, got.dst, got.proto, got.id, got.ttl, got.tos, got.frag) == (
        want.src, want.dst, want.proto, want.id, want.ttl, want.tos, 0)
    assert got.flags == want.flags and not got.flags.MF
    assert IP(bytes(got)).chksum == IP(whole).chksum  # the checksum Scapy would compute
    rebuilt = IP(whole)
    rebuilt.chksum = None
    assert IP(bytes(rebuilt)).chksum == got.chksum


def reassembler(**limits: object) -> tuple[Reassembler, Counters]:
    counters = Counters()
    return Reassembler(replace(CONFIG, **limits), counters), counters  # type: ignore[arg-type]


# In order, out of order, duplicates.

def test_in_order_fragments_make_the_datagram_and_free_their_memory() -> None:
    defrag, counters = reassembler()
    original = datagram(3000)
    parts = pieces(original)
    assert [defrag.add(p, 1.0) for p in parts[:-1]] == [None, None]
    same_datagram(defrag.add(parts[-1], 1.0), original)
    assert (len(defrag), defrag.memory, counters.fragments_reassembled) == (0, 0, 1)
    assert counters.fragments_received == 3


def test_the_last_fragment_first_and_the_header_from_the_first() -> None:
    defrag, _ = reassembler()
    original = bytes(IP(src=SERVER, dst=PUBLIC, id=9, flags="DF", proto=47,
                        options=[IPOption_RR(routers=["10.0.0.1"])]) / (b"x" * 100))
    first = fragment_at(original, 0, 48, True)
    later = bytes(IP(src=SERVER, dst=PUBLIC, id=9, frag=6, proto=47) / (b"x" * 52))
    assert defrag.add(later, 0.0) is None
    whole = defrag.add(first, 0.0)
    assert whole is not None
    assert IP(whole).options == IP(original).options
    assert bytes(IP(whole).payload) == b"x" * 100 and IP(whole).flags == "DF"


def test_an_exact_duplicate_is_dropped_alone() -> None:
    defrag, counters = reassembler()
    original = datagram(3000)
    a, b, c = pieces(original)
    assert defrag.add(a, 0.0) is None
    assert defrag.add(a, 0.0) is None
    assert counters.fragments_duplicate == 1
    assert defrag.add(c, 0.0) is None
    same_datagram(defrag.add(b, 0.0), original)


# Overlaps (RFC 5722): the whole datagram goes, and its later fragments.

@pytest.mark.parametrize("overlap", [(0, 1488), (8, 16), (1472, 16), (1480, 8)])
def test_an_overlap_drops_the_whole_datagram_and_its_later_fragments(
    overlap: tuple[int, int]
) -> None:
    defrag, counters = reassembler()
    original = datagram(3000)
    a, b, c = pieces(original)
    assert defrag.add(a, 0.0) is None
    if overlap[0] == 0:
        assert defrag.add(fragment_at(original, *overlap, True), 0.0) is None
    else:
        assert defrag.add(b, 0.0) is None
        assert defrag.add(fragment_at(original, *overlap, True), 0.0) is None
    assert counters.fragments_overlapping == 1
    for part in (a, b, c):
        assert defrag.add(part, 1.0) is None
    assert counters.fragments_reassembled == 0 and counters.fragments_of_dropped == 3
    assert defrag.memory == FRAGMENT_OVERHEAD  # what remembers the drop
    defrag.expire(31.0)
    assert (len(defrag), defrag.memory) == (0, 0)
    for part in (a, b):  # the same identification after the time limit is a new datagram
        assert defrag.add(part, 32.0) is None
    same_datagram(defrag.add(c, 32.0), original)


def test_a_second_last_fragment_with_another_end_drops_the_datagram() -> None:
    defrag, counters = reassembler()
    original = datagram(3000)
    a, b, c = pieces(original)
    assert defrag.add(c, 0.0) is None
    assert defrag.add(fragment_at(original, 1480, 800, False), 0.0) is None
    assert counters.fragments_malformed == 1
    assert defrag.add(a, 0.0) is None and defrag.add(b, 0.0) is None
    assert counters.fragments_reassembled == 0


def test_a_fragment_beyond_the_end_drops_the_datagram() -> None:
    defrag, counters = reassembler()
    original = datagram(3000)
    a, _b, c = pieces(original)
    assert defrag.add(c, 0.0) is None
    beyond = bytes(IP(src=SERVER, dst=PUBLIC, id=7, frag=400, flags="MF", proto=47) / (b"y" * 8))
    assert defrag.add(beyond, 0.0) is None
    assert counters.fragments_malformed == 1 and defrag.add(a, 0.0) is None
    assert counters.fragments_of_dropped == 1


@pytest.mark.parametrize("bad", [
    IP(src=SERVER, dst=PUBLIC, flags="MF", proto=47) / (b"z" * 13),  # not a multiple of 8
    IP(src=SERVER, dst=PUBLIC, frag=8189, proto=47) / (b"z" * 16),  # past 65,535 bytes
    IP(src=SERVER, dst=PUBLIC, flags="MF", proto=47),  # empty
    IP(src=SERVER, dst=PUBLIC, proto=47) / (b"z" * 16),  # not a fragment
])
def test_malformed_fragments_are_refused(bad: IP) -> None:
    defrag, counters = reassembler()
    assert defrag.add(bytes(bad), 0.0) is None
    assert counters.fragments_malformed == 1 and len(defrag) == 0 and defrag.memory == 0


def test_a_truncated_header_is_refused() -> None:
    defrag, counters = reassembler()
    assert defrag.add(bytes(IP(flags="MF") / (b"z" * 8))[:12], 0.0) is None
    assert counters.fragments_malformed == 1


# Bounds: time, fragments per datagram, memory per source and in all.

def test_an_incomplete_datagram_times_out() -> None:
    defrag, counters = reassembler(fragment_timeout=5.0)
    original = datagram(3000)
    a, b, c = pieces(original)
    defrag.add(a, 0.0)
    defrag.add(b, 4.0)
    assert defrag.add(c, 5.0) is None  # the datagram started at 0: gone at 5
    assert counters.fragments_timed_out == 1
    defrag.expire(10.0)
    assert (len(defrag), defrag.memory, counters.fragments_timed_out) == (0, 0, 2)


def test_more_fragments_than_allowed_drop_the_datagram() -> None:
    defrag, counters = reassembler(fragments_per_datagram=4)
    original = datagram(800)
    parts = pieces(original, 160)
    assert len(parts) == 5
    assert all(defrag.add(p, 0.0) is None for p in parts)
    assert counters.fragments_too_many == 1 and counters.fragments_reassembled == 0
    defrag, counters = reassembler(fragments_per_datagram=5)
    results = [defrag.add(p, 0.0) for p in parts]
    same_datagram(results[-1], original)


def test_a_source_over_its_share_loses_its_own_oldest_datagrams_not_others() -> None:
    share = 20_000
    defrag, counters = reassembler(fragment_memory_per_source=share)
    victim = datagram(3000, ident=1, src="198.51.100.7")
    v1, v2, v3 = pieces(victim)
    defrag.add(v1, 0.0)
    attacker = bytes(int(p) for p in SERVER.split("."))
    for ident in range(100):  # first fragments that never complete
        defrag.add(pieces(datagram(3000, ident=1000 + ident))[0], 0.1)
        assert 0 < defrag.source_memory(attacker) <= share
    assert counters.fragments_evicted >= 80
    defrag.add(v2, 0.2)
    same_datagram(defrag.add(v3, 0.2), victim)


def test_a_flood_of_first_fragments_stays_within_memory_and_a_datagram_still_passes() -> None:
    """The attacker: first fragments from many sources, never completed, at the punt
    meter's whole rate for the whole time limit; a server's datagram sent among them
    still completes, and the memory never passes its bound."""
    limit = 256 * 1024
    defrag, counters = reassembler(fragment_memory=limit, fragment_memory_per_source=64 * 1024)
    rng = random.Random(5)
    victim = datagram(3000, ident=4242)
    v1, v2, v3 = pieces(victim)
    peak = 0
    for n in range(30_000):
        now = n / 1000.0
        src = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        defrag.add(raw_fragment(src, rng.randrange(65536), 0, True, b"a" * 1480), now)
        if n == 20_000:
            defrag.add(v1, now)
        if n == 20_005:
            defrag.add(v2, now)
        if n == 20_010:
            same_datagram(defrag.add(v3, now), victim)
        peak = max(peak, defrag.memory)
    assert peak <= limit
    assert counters.fragments_reassembled == 1 and counters.fragments_evicted > 25_000
    defrag.expire(1000.0)
    assert (len(defrag), defrag.memory) == (0, 0)


def under_options(end: int, options: int = 40, ident: int = 9) -> list[bytes]:
    """A datagram of ``end`` payload bytes in fragments of 1480 and a last one of what
    is left after the last multiple of 8: the first with ``options`` bytes of options
    (NOPs), the others with 20-byte headers."""
    tail = (end - 1) // 8 * 8
    bounds = [*range(0, tail, 1480), tail, end]
    return [raw_fragment(SERVER, ident, a, b < end, b"m" * (b - a),
                         options=b"\1" * options if a == 0 else b"")
            for a, b in pairwise(bounds)]


@pytest.mark.parametrize("first_last", [False, True])
def test_a_datagram_past_65535_bytes_under_its_first_header_is_refused(first_last: bool
                                                                         ) -> None:
    """The last fragment ends at 65,515 bytes: 65,535 under its own 20-byte header, 40
    more under the first fragment's, which the whole datagram would take. Whichever of
    the two comes last drops the datagram; nothing is built, nothing raises."""
    defrag, counters = reassembler()
    first, *later = under_options(65515)
    assert len(later[-1]) == 20 + 65515 - 65512 and IP(later[-1]).frag * 8 == 65512
    for part in [*later, first] if first_last else [first, *later]:
        assert defrag.add(part, 0.0) is None
    assert counters.fragments_malformed == 1 and counters.fragments_reassembled == 0
    assert counters.fragments_received == len(later) + 1
    assert not defrag.holds(Header(60, 1540, 9, 0, True, False, 47,
                                   IPv4Address(SERVER).packed, IPv4Address(PUBLIC).packed))


def test_a_datagram_of_exactly_65535_bytes_under_its_first_header_is_made() -> None:
    defrag, counters = reassembler()
    *parts, last = under_options(65535 - 60)
    assert [defrag.add(p, 0.0) for p in parts] == [None] * len(parts)
    whole = defrag.add(last, 0.0)
    assert whole is not None and len(whole) == 65535 and IP(whole).len == 65535
    assert counters.fragments_malformed == 0 and counters.fragments_reassembled == 1


def test_fragments_from_each_side_make_their_own_datagram() -> None:
    """The same source, destination, protocol and identification from the inside and
    from the outside: two datagrams, neither drops the other (an overlap would)."""
    defrag, counters = reassembler()
    outside, inside = datagram(3000), datagram(2900)
    assert IP(outside).id == IP(inside).id and bytes(IP(outside).payload) != bytes(
        IP(inside).payload)
    out_parts, in_parts = pieces(outside), pieces(inside, 1000)
    assert defrag.add(out_parts[0], 0.0) is None
    header = parse_header(in_parts[1])
    assert header is not None and defrag.holds(header)
    assert not defrag.holds(header, Direction.OUTBOUND)
    assert defrag.add(in_parts[0], 0.0, Direction.OUTBOUND) is None
    assert defrag.add(in_parts[1], 0.0, Direction.OUTBOUND) is None
    assert defrag.add(in_parts[2], 0.0, Direction.OUTBOUND) is not None
    for part in out_parts[1:-1]:
        assert defrag.add(part, 0.0) is None
    same_datagram(defrag.add(out_parts[-1], 0.0), outside)
    assert counters.fragments_overlapping == 0 and counters.fragments_reassembled == 2


def test_a_datagram_larger_than_a_bound_is_refused_without_harm() -> None:
    defrag, counters = reassembler(fragment_memory_per_source=2000)
    original = datagram(3000)
    a, b, _c = pieces(original)
    defrag.add(a, 0.0)
    defrag.add(b, 0.0)
    assert counters.fragments_memory_drops == 1
    assert defrag.memory <= 2000


# Properties.

@st.composite
def cut(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A datagram in two or more pieces, in any order, some sent twice."""
    step = draw(st.integers(1, 200)) * 8
    size = draw(st.integers(step + 1, max(step + 1, 9000)))
    original = datagram(size, ident=draw(st.integers(0, 65535)))
    parts = pieces(original, step)
    *sequence, last = [parts[i] for i in draw(st.permutations(range(len(parts))))]
    for _ in range(draw(st.integers(0, 3))):
        sequence.insert(draw(st.integers(0, len(sequence))),
                        sequence[draw(st.integers(0, len(sequence) - 1))])
    return original, [*sequence, last]


@settings(max_examples=100, deadline=None)
@given(cut())
def test_any_order_with_duplicates_makes_the_datagram_once(case: tuple[bytes, list[bytes]]
                                                           ) -> None:
    original, sequence = case
    defrag, counters = reassembler(fragments_per_datagram=2000)
    results = [defrag.add(p, 0.0) for p in sequence]
    *before, complete = results
    assert before == [None] * len(before)
    same_datagram(complete, original)
    assert counters.fragments_overlapping == 0
    assert counters.fragments_duplicate == len(sequence) - len(set(sequence))
    assert (len(defrag), defrag.memory) == (0, 0)


@st.composite
def arbitrary_fragments(draw: st.DrawFn) -> list[bytes]:
    """Fragments of one datagram cut anywhere, each with its own options (up to 40
    bytes), some datagrams near the 65,535-byte bound, with stray fragments of the same
    key at any offset and length, in any order."""
    end = draw(st.one_of(st.integers(1, 65535), st.integers(65400, 65535)))
    cuts = sorted({c * 8 for c in draw(st.lists(st.integers(1, max(1, (end - 1) // 8)),
                                                max_size=6)) if c * 8 < end})
    bounds = [0, *cuts, end]
    parts = [raw_fragment(SERVER, 5, a, b < end, b"p" * (b - a),
                          options=b"\1" * 4 * draw(st.integers(0, 10)))
             for a, b in pairwise(bounds)]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(raw_fragment(
            SERVER, 5, draw(st.integers(0, 8191)) * 8, draw(st.booleans()),
            b"s" * draw(st.integers(0, 3000)), options=b"\1" * 4 * draw(st.integers(0, 10))))
    return [parts[i] for i in draw(st.permutations(range(len(parts))))]


@settings(max_examples=200, deadline=None)
@given(arbitrary_fragments())
def test_nothing_raises_on_arbitrary_fragments(parts: list[bytes]) -> None:
    defrag, counters = reassembler()
    for part in parts:
        whole = defrag.add(part, 0.0)
        if whole is not None:
            header = parse_header(whole)
            assert header is not None and header.total == len(whole) <= 65535
            assert not is_fragment(header)
    assert counters.fragments_reassembled <= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7), st.integers(0, 40),
                          st.integers(1, 60), st.booleans(), st.floats(0, 2)),
                max_size=80))
def test_memory_never_passes_its_bounds_whatever_comes(
    arrivals: list[tuple[int, int, int, int, bool, float]]
) -> None:
    total, share = 12_000, 5_000
    defrag, _ = reassembler(fragment_memory=total, fragment_memory_per_source=share,
                            fragments_per_datagram=8, fragment_timeout=3.0)
    now = 0.0
    sources = {}
    for source, ident, offset, blocks, more, step in arrivals:
        now += step
        src = f"198.51.100.{source + 1}"
        sources[src] = bytes(int(p) for p in src.split("."))
        payload = b"q" * (blocks * 8)
        frag = IP(src=src, dst=PUBLIC, id=ident, frag=offset, flags="MF" if more else 0,
                  proto=47) / payload
        if offset == 0 and not more:
            continue
        defrag.add(bytes(frag), now)
        assert defrag.memory <= total
        assert all(defrag.source_memory(s) <= share for s in sources.values())
        assert defrag.memory == sum(defrag.source_memory(s) for s in sources.values())
    defrag.expire(now + 3.5)
    assert defrag.memory == 0


# Fragmenting again, and the error when it may not.

@pytest.mark.parametrize("mtu", [68, 576, 1400, 1500])
def test_fragment_splits_within_the_mtu_and_reassembles(mtu: int) -> None:
    original = bytes(IP(src=SERVER, dst=PUBLIC, id=77, proto=47, ttl=9,
                        options=[IPOption_Security(length=11), IPOption_RR(routers=["1.2.3.4"])])
                     / GRE() / (b"p" * 3000))
    parts = fragment(original, mtu)
    assert parts is not None and len(parts) > 1
    assert all(len(p) <= mtu for p in parts)
    first, *later = (IP(p) for p in parts)
    assert first.options == IP(original).options
    for piece in later:  # the security option only (copied), padded
        assert [o.option for o in piece.options if o.option] == [2]
    defrag, _ = reassembler(fragments_per_datagram=200)
    results = [defrag.add(p, 0.0) for p in reversed(parts)]
    assert results[-1] is not None
    same = IP(results[-1])
    assert bytes(same.payload) == bytes(IP(original).payload)


def test_fragment_leaves_a_packet_that_fits_and_refuses_df() -> None:
    small = datagram(1480)
    assert fragment(small, 1500) == [small]
    big = datagram(1481, flags="DF")
    assert fragment(big, 1500) is None
    assert fragment(b"\x45\x00", 1500) is None


def test_fragmentation_needed_carries_the_mtu_and_quotes_the_packet() -> None:
    big = datagram(3000, flags="DF")
    raw = fragmentation_needed(big, 1400)
    icmp = ICMP(raw)
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 1400)
    assert raw[8:] == big[:548] and len(raw) + 20 == 576
    again = ICMP(bytes(icmp))
    again.chksum = None
    assert ICMP(bytes(again)).chksum == icmp.chksum
