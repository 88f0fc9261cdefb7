"""The GRE demultiplexer's program: a kernel TC program that restores the client's
address and Call ID of a shared pair's server -> client GRE, from a table the
controller keeps.

Open vSwitch can neither match nor set the GRE key (RFC 2637 section 4.1: the key's low
16 bits are the receiver's Call ID), so when two calls share a (server, public address)
pair, the switch cannot tell their packets from the server apart. The switch sends them
out of a veth port instead of to the controller; on the veth's other end, this program
at TC ingress looks up (server, public address, Call ID) in its table (:data:`TABLE_KEY`
to :data:`TABLE_VALUE`), rewrites the destination address (fixing the IPv4 checksum;
enhanced GRE has no checksum) and the Call ID, counts the packet on its entry, and
redirects it back out of the same end, so that it re-enters the switch on the veth port,
where ordinary flow entries deliver it. Packets that are not enhanced GRE over IPv4, or
whose key has no entry, are dropped and counted (:data:`COUNTERS`). It accepts exactly
the packets the controller path accepts (``alg.codec.parse_gre`` on the IPv4 payload
``ryu_apps.packets`` decodes): IPv4 options, no fragment, the IPv4 total length within
the frame, the GRE flags and version RFC 2637 section 4.1 allows (no C, R, s or
recursion bits, no reserved flag), the key, and the sequence and acknowledgement numbers
and the payload length within the packet.

:func:`program` assembles it (``demux.asm``), from the standard library: no compiler is
needed, and the kernel's verifier checks it when it is loaded (``demux.table``). Each
block of it carries the C it stands for. It works the same under Open vSwitch's
userspace and kernel datapaths: it only sees a veth.

The registers and the stack slots the program uses have names (``R_*``, ``SLOT_*``),
and so have the offsets it reads at; the constants it compares packet bytes with come
from ``alg.codec`` and ``ryu_apps.packets``, the values the controller path checks.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from alg.codec import (
    GRE_BASE,
    GRE_CALL_ID,
    GRE_CALL_ID_OFFSET,
    GRE_FLAG_A,
    GRE_FLAG_C,
    GRE_FLAG_K,
    GRE_FLAG_R,
    GRE_FLAG_S,
    GRE_FLAG_STRICT,
    GRE_FLAGS,
    GRE_PROTOCOL_PPP,
    GRE_RECUR,
    GRE_VERSION,
    GRE_WORD,
    GreHeader,
)
from demux.asm import (
    R_ARG1,
    R_ARG2,
    R_ARG3,
    R_ARG4,
    R_ARG5,
    R_CTX,
    R_FP,
    R_RET,
    Asm,
    Helper,
    Reg,
    be16,
)
from ryu_apps.packets import ETH_TYPE_IPV4, PROTO_GRE, build_ethernet, build_ipv4

TABLE = "table"
"""The name of the table's map in :meth:`~demux.asm.Asm.assemble`."""
TABLE_KEY = struct.Struct("!4s4sH2x")
"""(server, public address, Call ID on the public side): network byte order.
``struct key { __be32 server, public; __be16 call_id; __u16 pad; }``."""
KEY_SERVER, KEY_PUBLIC, KEY_CALL_ID, KEY_PAD = 0, 4, 8, 10
"""Where :data:`TABLE_KEY`'s fields are."""
TABLE_VALUE = struct.Struct("=4s2s2xQQ")
"""(client address, client's Call ID: network byte order; packets, bytes: host order).
``struct value { __be32 client; __be16 call_id; __u16 pad; __u64 packets, bytes; }``."""
VALUE_CLIENT, VALUE_CALL_ID, VALUE_PACKETS, VALUE_BYTES = 0, 4, 8, 16
"""Where :data:`TABLE_VALUE`'s fields are."""
TABLE_SIZE = 262144

COUNTERS_MAP = "counters"
"""The name of the counters' map (per CPU, a 64-bit count at each index)."""
DEMUXED = 0
UNKNOWN_KEY = 1
NOT_PPTP_GRE = 2
TRUNCATED = 3
HELPER_FAILED = 4
COUNTERS = ("demuxed", "unknown_key", "not_pptp_gre", "truncated", "helper_failed")
"""The counters by index; each way out but :data:`DEMUXED` is also the label of the
block that drops the packet."""

TC_ACT_SHOT = 2

# offsetof(struct __sk_buff, ...)
SKB_LEN = 0
SKB_IFINDEX = 40
SKB_DATA = 76
SKB_DATA_END = 80

# the frame: Ethernet, then IPv4 (20 bytes and its options), then enhanced GRE
ETH_HLEN = 14
ETH_PROTO = 12
IP_VER_IHL = ETH_HLEN + 0
IP_TOT_LEN = ETH_HLEN + 2
IP_FRAG_OFF = ETH_HLEN + 6
IP_PROTOCOL = ETH_HLEN + 9
IP_CHECK = ETH_HLEN + 10
IP_SADDR = ETH_HLEN + 12
IP_DADDR = ETH_HLEN + 16
IP_HLEN_MIN = 20
IPV4_ADDR_LEN = 4
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

# struct gre_base { __u8 flags, version; __be16 protocol, payload_length, call_id; }
# (RFC 2637 section 4.1), then the sequence and acknowledgement numbers when present
GRE_FLAGS_BYTE = 0
GRE_VERSION_BYTE = 1
GRE_PROTOCOL = 2
GRE_PAYLOAD_LENGTH = 4
# alg.codec's bits of the first 16 bits, in the byte they are in
FLAGS_MUST_BE_ZERO = (GRE_FLAG_C | GRE_FLAG_R | GRE_FLAG_STRICT | GRE_RECUR) >> 8
FLAGS_KEY = GRE_FLAG_K >> 8
FLAGS_SEQUENCE = GRE_FLAG_S >> 8
VERSION_ACK = GRE_FLAG_A
VERSION_FLAGS_VER = GRE_FLAGS | GRE_VERSION

# the stack, from the frame pointer
SLOT_KEY = -16
"""The lookup's key (:data:`TABLE_KEY`, 12 bytes)."""
SLOT_CLIENT = -24
"""The client's address from the entry (4 bytes), for ``bpf_skb_store_bytes``."""
SLOT_CLIENT_CALL_ID = -20
"""The client's Call ID from the entry (2 bytes), for ``bpf_skb_store_bytes``."""
SLOT_INDEX = -28
"""A counter's index (4 bytes), the key of its lookup."""
SLOT_CALL_ID_AT = -40
"""Where the GRE Call ID is in the frame (8 bytes)."""

# The registers by role (r1 to r5 are lost across a helper call; demux.asm).
R_SKB = Reg.R6  # struct __sk_buff *skb, all along
R_DATA = Reg.R2  # void *data: the frame's first byte, until the table lookup
R_DATA_END = Reg.R3  # void *data_end: one past its last byte, as long
R_H_PROTO = Reg.R5  # eth->h_proto, first;
R_IP_HLEN = Reg.R5  # then __u32 ip_hlen: the IPv4 header's length in bytes
R_IP_END = Reg.R4  # data + ETH_HLEN + sizeof(struct iphdr), first;
R_GRE = Reg.R4  # then struct gre_base *gre: the GRE header
R_IP_LEN = Reg.R7  # __u32 ip_len: the IPv4 total length, first;
R_ENTRY = Reg.R7  # then struct value *entry: the table's entry;
R_INDEX = Reg.R7  # then __u32 index: the counter to count the packet on
R_LEFT = Reg.R8  # __u32 left: the IPv4 payload's bytes not yet accounted for, first;
R_OLD_DST = Reg.R8  # then __be32 old_dst: the destination address before the rewrite
R_FLAGS = Reg.R1  # __u8 flags: the GRE header's first byte (C R K S s Recur), first;
R_TMP1 = Reg.R1  # then scratch, from the table lookup on
R_VERSION = Reg.R9  # __u8 version: the GRE header's second byte (A Flags Ver), first;
R_NEW_DST = Reg.R9  # then __be32 new_dst: the client's address
R_TMP = Reg.R0  # scratch, and a helper's result


def _ipv4(a: Asm) -> None:
    """The frame holds an IPv4 header of GRE, not a fragment, within the frame."""
    # struct __sk_buff *skb = ctx;
    a.mov(R_SKB, R_CTX)
    # void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
    a.load(4, R_DATA, R_SKB, SKB_DATA)
    a.load(4, R_DATA_END, R_SKB, SKB_DATA_END)
    # if (data + ETH_HLEN + sizeof(struct iphdr) > data_end) goto truncated;
    a.mov(R_IP_END, R_DATA)
    a.add_imm(R_IP_END, ETH_HLEN + IP_HLEN_MIN)
    a.jump_reg(">", R_IP_END, R_DATA_END, "truncated")
    # if (eth->h_proto != htons(ETH_P_IP)) goto not_pptp_gre;
    a.load(2, R_H_PROTO, R_DATA, ETH_PROTO)
    a.jump("!=", R_H_PROTO, be16(ETH_TYPE_IPV4), "not_pptp_gre")
    # if (ip->version != 4 || ip->ihl < 5) goto not_pptp_gre;
    a.load(1, R_IP_HLEN, R_DATA, IP_VER_IHL)
    a.mov(R_TMP, R_IP_HLEN)
    a.rsh_imm(R_TMP, 4)
    a.jump("!=", R_TMP, 4, "not_pptp_gre")
    a.and_imm(R_IP_HLEN, 0x0F)
    a.jump("<", R_IP_HLEN, IP_HLEN_MIN // 4, "not_pptp_gre")
    # __u32 ip_hlen = ip->ihl * 4;
    a.lsh_imm(R_IP_HLEN, 2)
    # if (ip->protocol != IPPROTO_GRE) goto not_pptp_gre;
    a.load(1, R_TMP, R_DATA, IP_PROTOCOL)
    a.jump("!=", R_TMP, PROTO_GRE, "not_pptp_gre")
    # if (ip->frag_off & htons(IP_MF | IP_OFFSET)) goto not_pptp_gre;
    a.load(2, R_TMP, R_DATA, IP_FRAG_OFF)
    a.and_imm(R_TMP, be16(IP_MF | IP_OFFSET))
    a.jump("!=", R_TMP, 0, "not_pptp_gre")


def _lengths(a: Asm) -> None:
    """The IPv4 packet lies within the frame, and its payload holds a GRE header."""
    # __u32 ip_len = ntohs(ip->tot_len);
    a.load(2, R_IP_LEN, R_DATA, IP_TOT_LEN)
    a.ntohs(R_IP_LEN)
    # if (ip_len > skb->len - ETH_HLEN || ip_hlen > ip_len) goto truncated;
    a.load(4, R_TMP, R_SKB, SKB_LEN)
    a.add_imm(R_TMP, -ETH_HLEN)
    a.jump_reg(">", R_IP_LEN, R_TMP, "truncated")
    a.jump_reg(">", R_IP_HLEN, R_IP_LEN, "truncated")
    # __u32 left = ip_len - ip_hlen; if (left < sizeof(struct gre_base)) goto truncated;
    a.mov(R_LEFT, R_IP_LEN)
    a.sub(R_LEFT, R_IP_HLEN)
    a.jump("<", R_LEFT, GRE_BASE.size, "truncated")
    # struct gre_base *gre = data + ETH_HLEN + ip_hlen;
    a.mov(R_GRE, R_DATA)
    a.add(R_GRE, R_IP_HLEN)
    a.add_imm(R_GRE, ETH_HLEN)
    # if ((void *)gre + sizeof(struct gre_base) > data_end) goto truncated;
    a.mov(R_TMP, R_GRE)
    a.add_imm(R_TMP, GRE_BASE.size)
    a.jump_reg(">", R_TMP, R_DATA_END, "truncated")


def _enhanced_gre(a: Asm) -> None:
    """The GRE header is enhanced GRE (``alg.codec.parse_gre``'s checks)."""
    # __u8 flags = gre->flags;      /* C R K S s Recur */
    a.load(1, R_FLAGS, R_GRE, GRE_FLAGS_BYTE)
    # if (flags & (C | R | s | Recur)) goto not_pptp_gre;
    a.mov(R_TMP, R_FLAGS)
    a.and_imm(R_TMP, FLAGS_MUST_BE_ZERO)
    a.jump("!=", R_TMP, 0, "not_pptp_gre")
    # if (!(flags & K)) goto not_pptp_gre;
    a.mov(R_TMP, R_FLAGS)
    a.and_imm(R_TMP, FLAGS_KEY)
    a.jump("==", R_TMP, 0, "not_pptp_gre")
    # __u8 version = gre->version;  /* A Flags Ver */
    a.load(1, R_VERSION, R_GRE, GRE_VERSION_BYTE)
    # if ((version & (Flags | Ver)) != 1) goto not_pptp_gre;
    a.mov(R_TMP, R_VERSION)
    a.and_imm(R_TMP, VERSION_FLAGS_VER)
    a.jump("!=", R_TMP, 1, "not_pptp_gre")
    # if (gre->protocol != htons(GRE_PROTOCOL_PPP)) goto not_pptp_gre;
    a.load(2, R_TMP, R_GRE, GRE_PROTOCOL)
    a.jump("!=", R_TMP, be16(GRE_PROTOCOL_PPP), "not_pptp_gre")


def _gre_lengths(a: Asm) -> None:
    """The sequence and acknowledgement numbers, when present, and the payload length
    fit in the IPv4 payload."""
    # left -= sizeof(struct gre_base);
    a.add_imm(R_LEFT, -GRE_BASE.size)
    # if (flags & S) { if (left < 4) goto truncated; left -= 4; }
    # if (version & A) { if (left < 4) goto truncated; left -= 4; }
    for reg, bit in ((R_FLAGS, FLAGS_SEQUENCE), (R_VERSION, VERSION_ACK)):
        absent = a.fresh("absent")
        a.and_imm(reg, bit)
        a.jump("==", reg, 0, absent)
        a.jump("<", R_LEFT, GRE_WORD.size, "truncated")
        a.add_imm(R_LEFT, -GRE_WORD.size)
        a.label(absent)
    # if (ntohs(gre->payload_length) > left) goto truncated;
    a.load(2, R_TMP, R_GRE, GRE_PAYLOAD_LENGTH)
    a.ntohs(R_TMP)
    a.jump_reg(">", R_TMP, R_LEFT, "truncated")


def _lookup(a: Asm) -> None:
    """The table's entry for the packet; its counts."""
    # __u64 call_id_at = ETH_HLEN + ip_hlen + offsetof(struct gre_base, call_id);
    a.mov(R_TMP, R_IP_HLEN)
    a.add_imm(R_TMP, ETH_HLEN + GRE_CALL_ID_OFFSET)
    a.store(8, R_FP, SLOT_CALL_ID_AT, R_TMP)
    # struct key key = {ip->saddr, ip->daddr, gre->call_id, 0};
    # __be32 old_dst = ip->daddr;
    a.load(2, R_TMP, R_GRE, GRE_CALL_ID_OFFSET)
    a.store(2, R_FP, SLOT_KEY + KEY_CALL_ID, R_TMP)
    a.load(4, R_TMP, R_DATA, IP_SADDR)
    a.store(4, R_FP, SLOT_KEY + KEY_SERVER, R_TMP)
    a.load(4, R_OLD_DST, R_DATA, IP_DADDR)
    a.store(4, R_FP, SLOT_KEY + KEY_PUBLIC, R_OLD_DST)
    a.store_imm(2, R_FP, SLOT_KEY + KEY_PAD, 0)
    # struct value *entry = bpf_map_lookup_elem(&table, &key);
    a.load_map(R_ARG1, TABLE)
    a.mov(R_ARG2, R_FP)
    a.add_imm(R_ARG2, SLOT_KEY)
    a.call(Helper.MAP_LOOKUP_ELEM)
    # if (!entry) goto unknown_key;
    a.jump("==", R_RET, 0, "unknown_key")
    a.mov(R_ENTRY, R_RET)
    # __sync_fetch_and_add(&entry->packets, 1);
    a.mov_imm(R_TMP1, 1)
    a.atomic_add(R_ENTRY, VALUE_PACKETS, R_TMP1)
    # __sync_fetch_and_add(&entry->bytes, skb->len);
    a.load(4, R_TMP1, R_SKB, SKB_LEN)
    a.atomic_add(R_ENTRY, VALUE_BYTES, R_TMP1)
    # __be32 new_dst = entry->client; __be16 new_call_id = entry->call_id;
    a.load(4, R_NEW_DST, R_ENTRY, VALUE_CLIENT)
    a.store(4, R_FP, SLOT_CLIENT, R_NEW_DST)
    a.load(2, R_TMP1, R_ENTRY, VALUE_CALL_ID)
    a.store(2, R_FP, SLOT_CLIENT_CALL_ID, R_TMP1)


def _rewrite(a: Asm) -> None:
    """The destination address and the Call ID become the client's."""
    # if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check),
    #                         old_dst, new_dst, sizeof(new_dst))) goto helper_failed;
    a.mov(R_ARG1, R_SKB)
    a.mov_imm(R_ARG2, IP_CHECK)
    a.mov(R_ARG3, R_OLD_DST)
    a.mov(R_ARG4, R_NEW_DST)
    a.mov_imm(R_ARG5, IPV4_ADDR_LEN)
    a.call(Helper.L3_CSUM_REPLACE)
    a.jump("!=", R_RET, 0, "helper_failed")
    # if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr),
    #                         &new_dst, sizeof(new_dst), 0)) goto helper_failed;
    a.mov(R_ARG1, R_SKB)
    a.mov_imm(R_ARG2, IP_DADDR)
    a.mov(R_ARG3, R_FP)
    a.add_imm(R_ARG3, SLOT_CLIENT)
    a.mov_imm(R_ARG4, IPV4_ADDR_LEN)
    a.mov_imm(R_ARG5, 0)
    a.call(Helper.SKB_STORE_BYTES)
    a.jump("!=", R_RET, 0, "helper_failed")
    # if (bpf_skb_store_bytes(skb, call_id_at, &new_call_id, sizeof(new_call_id), 0))
    #     goto helper_failed;
    a.mov(R_ARG1, R_SKB)
    a.load(8, R_ARG2, R_FP, SLOT_CALL_ID_AT)
    a.mov(R_ARG3, R_FP)
    a.add_imm(R_ARG3, SLOT_CLIENT_CALL_ID)
    a.mov_imm(R_ARG4, GRE_CALL_ID.size)
    a.mov_imm(R_ARG5, 0)
    a.call(Helper.SKB_STORE_BYTES)
    a.jump("!=", R_RET, 0, "helper_failed")


def _count(a: Asm) -> None:
    """The counter whose index is in :data:`R_INDEX` counts one more packet."""
    # __u64 *n = bpf_map_lookup_elem(&counters, &index); if (n) *n += 1;
    a.store(4, R_FP, SLOT_INDEX, R_INDEX)
    a.load_map(R_ARG1, COUNTERS_MAP)
    a.mov(R_ARG2, R_FP)
    a.add_imm(R_ARG2, SLOT_INDEX)
    a.call(Helper.MAP_LOOKUP_ELEM)
    done = a.fresh("counted")
    a.jump("==", R_RET, 0, done)
    a.load(8, R_TMP1, R_RET, 0)
    a.add_imm(R_TMP1, 1)
    a.store(8, R_RET, 0, R_TMP1)
    a.label(done)


def _ways_out(a: Asm) -> None:
    """The packet, counted, goes back out of the veth end it came in by; or any of the
    labels ``truncated``, ``not_pptp_gre``, ``unknown_key``, ``helper_failed`` counts it
    and drops it."""
    # count(DEMUXED); return bpf_redirect(skb->ifindex, 0);
    a.mov_imm(R_INDEX, DEMUXED)
    _count(a)
    a.load(4, R_ARG1, R_SKB, SKB_IFINDEX)
    a.mov_imm(R_ARG2, 0)
    a.call(Helper.REDIRECT)
    a.exit()
    # truncated: count(TRUNCATED); return TC_ACT_SHOT;  (and so on)
    for index in (TRUNCATED, NOT_PPTP_GRE, UNKNOWN_KEY, HELPER_FAILED):
        a.label(COUNTERS[index])
        a.mov_imm(R_INDEX, index)
        _count(a)
        a.mov_imm(R_RET, TC_ACT_SHOT)
        a.exit()


def program() -> Asm:
    """The demultiplexer, ready to :meth:`~demux.asm.Asm.assemble` with the file
    descriptors of its maps, :data:`TABLE` and :data:`COUNTERS_MAP`."""
    a = Asm()
    _ipv4(a)
    _lengths(a)
    _enhanced_gre(a)
    _gre_lengths(a)
    _lookup(a)
    _rewrite(a)
    _ways_out(a)
    return a


def gre_frame(dst_mac: bytes, src_mac: bytes, src: IPv4Address, dst: IPv4Address,
              call_id: int, payload: bytes = b"", ttl: int = 64) -> bytes:
    """An Ethernet frame of enhanced GRE (key and sequence number), as the program takes
    it, for tests and probes."""
    gre = GreHeader(len(payload), call_id, sequence=1).encode() + payload
    ip = build_ipv4(src, dst, PROTO_GRE, gre, ttl=ttl, dont_fragment=True)
    return build_ethernet(dst_mac, src_mac, ETH_TYPE_IPV4, ip)
