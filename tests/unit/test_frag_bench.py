"""The fragmented-GRE bench's datagrams: two fragments within a 1500-byte link that put
together make one enhanced GRE datagram with the flow's key."""

from __future__ import annotations

from scapy.layers.inet import IP
from scapy.layers.l2 import GRE_PPTP

from alg.config import AlgConfig
from alg.counters import Counters
from alg.defrag import Reassembler
from alg.icmp import checksum
from bench.frag_rate import PAYLOAD, fragments


def test_the_benchs_fragments_make_one_gre_datagram() -> None:
    parts = fragments("203.0.113.1", "203.0.113.2", 4243, 77)
    assert len(parts) == 2 and all(len(p) <= 1500 for p in parts)
    assert all(checksum(p[:20]) == 0 for p in parts)
    defrag = Reassembler(AlgConfig(), Counters())
    assert defrag.add(parts[1], 0.0) is None
    whole = defrag.add(parts[0], 0.0)
    assert whole is not None
    gre = IP(whole)[GRE_PPTP]
    assert (gre.call_id, gre.payload_len, len(bytes(gre.payload))) == (4243, PAYLOAD, PAYLOAD)
    assert IP(whole).id == 77
