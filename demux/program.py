"""The GRE demultiplexer: a kernel TC program that restores the client's address and
Call ID of a shared pair's server -> client GRE, in a table the controller keeps.

Open vSwitch can neither match nor set the GRE key (RFC 2637 section 4.1: the key's low
16 bits are the receiver's Call ID), so when two calls share a (server, public address)
pair, the switch cannot tell their packets from the server apart. The switch sends them
out of a veth port instead of to the controller; on the veth's other end, a BPF program
at TC ingress looks up (server, public address, Call ID) in :data:`TABLE`, rewrites the
destination address (fixing the IPv4 checksum; enhanced GRE has no checksum) and the
Call ID, counts the packet on its entry, and redirects it back out of the same end, so
that it re-enters the switch on the veth port, where ordinary flow entries deliver it.
Packets that are not enhanced GRE over IPv4, or whose key has no entry, are dropped and
counted. It accepts exactly the packets the controller path accepts (``alg.codec.
parse_gre`` on the IPv4 payload ``ryu_apps.packets`` decodes): IPv4 options, no
fragment, the IPv4 total length within the frame, the GRE flags and version RFC 2637
section 4.1 allows (no C, R, s or recursion bits, no reserved flag), the key, and the
sequence and acknowledgement numbers and the payload length within the packet.

The program is assembled here (:func:`program`), from the standard library: no compiler
is needed, and the kernel's verifier checks it when it is loaded. It works the same
under Open vSwitch's userspace and kernel datapaths: it only sees a veth.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.codec import GreHeader
from demux import bpf
from ryu_apps.packets import ETH_TYPE_IPV4, PROTO_GRE, build_ethernet, build_ipv4

TABLE_KEY = struct.Struct("!4s4sH2x")
"""(server, public address, Call ID on the public side): network byte order."""
TABLE_VALUE = struct.Struct("=4s2s2xQQ")
"""(client address, client's Call ID: network byte order; packets, bytes: host order)."""
TABLE_SIZE = 262144

DEMUXED = 0
UNKNOWN_KEY = 1
NOT_PPTP_GRE = 2
TRUNCATED = 3
HELPER_FAILED = 4
COUNTERS = ("demuxed", "unknown_key", "not_pptp_gre", "truncated", "helper_failed")

TC_ACT_SHOT = 2

# struct __sk_buff
_SKB_LEN = 0
_SKB_IFINDEX = 40
_SKB_DATA = 76
_SKB_DATA_END = 80

# helpers
_MAP_LOOKUP_ELEM = 1
_SKB_STORE_BYTES = 9
_L3_CSUM_REPLACE = 10
_REDIRECT = 23

# frame offsets: Ethernet (14), IPv4 (20 and its options), enhanced GRE (8 + ...)
_ETH = 14
_ETH_TYPE = 12
_IP_VER_IHL = 14
_IP_TOTAL = 16
_IP_FRAG = 20
_IP_PROTO = 23
_IP_CSUM = 24
_IP_SRC = 26
_IP_DST = 30
_IP_END = 34
# GRE offsets from the end of the IPv4 header
_GRE_FLAGS = 0  # C R K S s Recur (RFC 2637 section 4.1)
_GRE_VERSION = 1  # A Flags Ver
_GRE_PROTO = 2
_GRE_LENGTH = 4
_GRE_CALL_ID = 6
_GRE_BASE = 8
_GRE_MUST_BE_ZERO = 0xCF  # C R s Recur, in the first byte
_GRE_KEY = 0x20
_GRE_SEQUENCE = 0x10
_GRE_ACK = 0x80  # in the second byte
_GRE_FLAGS_VERSION = 0x7F  # Flags (zero) and Ver (1), in the second byte


@dataclass(frozen=True)
class _Jump:
    code: int
    reg: int
    value: int
    by_reg: bool
    target: str


_Insn = tuple[int, int, int, int, int]


class Asm:
    """A small eBPF assembler: one method per instruction kind, labels for jumps."""

    def __init__(self) -> None:
        self.code: list[_Insn | _Jump] = []
        self.labels: dict[str, int] = {}
        self.maps: dict[int, str] = {}
        self._fresh = 0

    def _emit(self, op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.code.append((op, dst, src, off, imm))

    def fresh(self, prefix: str) -> str:
        """A label name not used yet."""
        self._fresh += 1
        return f"{prefix}.{self._fresh}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def mov(self, dst: int, src: int) -> None:
        self._emit(0xBF, dst, src)

    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(0xB7, dst, imm=imm)

    def add_imm(self, dst: int, imm: int) -> None:
        self._emit(0x07, dst, imm=imm)

    def add(self, dst: int, src: int) -> None:
        self._emit(0x0F, dst, src)

    def sub(self, dst: int, src: int) -> None:
        self._emit(0x1F, dst, src)

    def lsh_imm(self, dst: int, imm: int) -> None:
        self._emit(0x67, dst, imm=imm)

    def rsh_imm(self, dst: int, imm: int) -> None:
        self._emit(0x77, dst, imm=imm)

    def be16(self, dst: int) -> None:
        """``dst`` = the low 16 bits of ``dst`` read as network byte order."""
        self._emit(0xDC, dst, imm=16)

    def and_imm(self, dst: int, imm: int) -> None:
        self._emit(0x57, dst, imm=imm)

    def load(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit({1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}[size], dst, src, off)

    def store(self, size: int, dst: int, off: int, src: int) -> None:
        self._emit({1: 0x73, 2: 0x6B, 4: 0x63, 8: 0x7B}[size], dst, src, off)

    def store_imm(self, size: int, dst: int, off: int, imm: int) -> None:
        self._emit({1: 0x72, 2: 0x6A, 4: 0x62, 8: 0x7A}[size], dst, off=off, imm=imm)

    def atomic_add(self, dst: int, off: int, src: int) -> None:
        """``lock *(u64 *)(dst + off) += src``."""
        self._emit(0xDB, dst, src, off, 0)

    def load_map(self, dst: int, name: str) -> None:
        """``dst = map`` (a 16-byte load of the map's file descriptor, set at assembly)."""
        self.maps[len(self.code)] = name
        self._emit(0x18, dst, 1)
        self._emit(0x00)

    def call(self, helper: int) -> None:
        self._emit(0x85, imm=helper)

    def exit(self) -> None:
        self._emit(0x95)

    def jump(self, op: str, reg: int, value: int, target: str, *, reg_value: bool = False
             ) -> None:
        """``if reg OP value goto target`` (``value`` a register with ``reg_value``)."""
        code = {"==": 0x15, ">": 0x25, "!=": 0x55, "<": 0xA5}[op] | (0x08 if reg_value else 0)
        self.code.append(_Jump(code, reg, value, reg_value, target))

    def assemble(self, map_fds: dict[str, int]) -> bytes:
        """The instructions, with the maps' file descriptors and the jumps' offsets."""
        out = bytearray()
        for at, ins in enumerate(self.code):
            if isinstance(ins, _Jump):
                offset = self.labels[ins.target] - at - 1
                if ins.by_reg:
                    out += _insn(ins.code, ins.reg, ins.value, offset, 0)
                else:
                    out += _insn(ins.code, ins.reg, 0, offset, ins.value)
                continue
            op, dst, src, off, imm = ins
            if at in self.maps:
                imm = map_fds[self.maps[at]]
            out += _insn(op, dst, src, off, imm)
        return bytes(out)


def _insn(op: int, dst: int, src: int, off: int, imm: int) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _count(asm: Asm, index_reg: int) -> None:
    """Add one to the per-CPU counter whose index is in ``index_reg``."""
    asm.store(4, 10, -28, index_reg)
    asm.load_map(1, "counters")
    asm.mov(2, 10)
    asm.add_imm(2, -28)
    asm.call(_MAP_LOOKUP_ELEM)
    done = asm.fresh("counted")
    asm.jump("==", 0, 0, done)
    asm.load(8, 1, 0, 0)
    asm.add_imm(1, 1)
    asm.store(8, 0, 0, 1)
    asm.label(done)


def program() -> Asm:
    """The demultiplexer (registers: r6 the packet's context, r7 the table entry or a
    counter's index, r8 the old destination, r9 the new one; while checking, r5 the
    IPv4 header's length, r4 the GRE header, r7 and r8 lengths)."""
    a = Asm()
    a.mov(6, 1)
    a.load(4, 2, 6, _SKB_DATA)
    a.load(4, 3, 6, _SKB_DATA_END)
    a.mov(4, 2)
    a.add_imm(4, _IP_END)
    a.jump(">", 4, 3, "truncated", reg_value=True)
    a.load(2, 5, 2, _ETH_TYPE)
    a.jump("!=", 5, 0x0008, "not_gre")  # 0x0800 as loaded little-endian
    a.load(1, 5, 2, _IP_VER_IHL)
    a.mov(0, 5)
    a.rsh_imm(0, 4)
    a.jump("!=", 0, 4, "not_gre")
    a.and_imm(5, 0x0F)
    a.jump("<", 5, 5, "not_gre")
    a.lsh_imm(5, 2)
    a.load(1, 0, 2, _IP_PROTO)
    a.jump("!=", 0, 47, "not_gre")
    a.load(2, 0, 2, _IP_FRAG)
    a.and_imm(0, 0xFF3F)  # more-fragments and the offset, little-endian
    a.jump("!=", 0, 0, "not_gre")
    a.load(2, 7, 2, _IP_TOTAL)
    a.be16(7)
    a.load(4, 0, 6, _SKB_LEN)
    a.add_imm(0, -_ETH)
    a.jump(">", 7, 0, "truncated", reg_value=True)  # the packet runs past the frame
    a.jump(">", 5, 7, "truncated", reg_value=True)
    a.mov(8, 7)
    a.sub(8, 5)
    a.jump("<", 8, _GRE_BASE, "truncated")
    a.mov(4, 2)
    a.add(4, 5)
    a.add_imm(4, _ETH)
    a.mov(0, 4)
    a.add_imm(0, _GRE_BASE)
    a.jump(">", 0, 3, "truncated", reg_value=True)
    a.load(1, 1, 4, _GRE_FLAGS)
    a.mov(0, 1)
    a.and_imm(0, _GRE_MUST_BE_ZERO)
    a.jump("!=", 0, 0, "not_gre")
    a.mov(0, 1)
    a.and_imm(0, _GRE_KEY)
    a.jump("==", 0, 0, "not_gre")
    a.load(1, 9, 4, _GRE_VERSION)
    a.mov(0, 9)
    a.and_imm(0, _GRE_FLAGS_VERSION)
    a.jump("!=", 0, 1, "not_gre")
    a.load(2, 0, 4, _GRE_PROTO)
    a.jump("!=", 0, 0x0B88, "not_gre")  # 0x880b (PPP) little-endian
    a.add_imm(8, -_GRE_BASE)  # r8: what follows the base header
    for reg, bit in ((1, _GRE_SEQUENCE), (9, _GRE_ACK)):
        absent = a.fresh("absent")
        a.and_imm(reg, bit)
        a.jump("==", reg, 0, absent)
        a.jump("<", 8, 4, "truncated")
        a.add_imm(8, -4)
        a.label(absent)
    a.load(2, 0, 4, _GRE_LENGTH)
    a.be16(0)
    a.jump(">", 0, 8, "truncated", reg_value=True)
    a.mov(0, 5)
    a.add_imm(0, _ETH + _GRE_CALL_ID)
    a.store(8, 10, -40, 0)
    a.load(2, 0, 4, _GRE_CALL_ID)
    a.store(2, 10, -8, 0)
    a.load(4, 0, 2, _IP_SRC)
    a.store(4, 10, -16, 0)
    a.load(4, 8, 2, _IP_DST)
    a.store(4, 10, -12, 8)
    a.store_imm(2, 10, -6, 0)
    a.load_map(1, "table")
    a.mov(2, 10)
    a.add_imm(2, -16)
    a.call(_MAP_LOOKUP_ELEM)
    a.jump("==", 0, 0, "unknown")
    a.mov(7, 0)
    a.mov_imm(1, 1)
    a.atomic_add(7, 8, 1)
    a.load(4, 1, 6, _SKB_LEN)
    a.atomic_add(7, 16, 1)
    a.load(4, 9, 7, 0)
    a.store(4, 10, -24, 9)
    a.load(2, 1, 7, 4)
    a.store(2, 10, -20, 1)
    a.mov(1, 6)
    a.mov_imm(2, _IP_CSUM)
    a.mov(3, 8)
    a.mov(4, 9)
    a.mov_imm(5, 4)
    a.call(_L3_CSUM_REPLACE)
    a.jump("!=", 0, 0, "failed")
    for offset, stack, size in ((_IP_DST, -24, 4), (None, -20, 2)):
        a.mov(1, 6)
        if offset is None:
            a.load(8, 2, 10, -40)  # the Call ID's offset
        else:
            a.mov_imm(2, offset)
        a.mov(3, 10)
        a.add_imm(3, stack)
        a.mov_imm(4, size)
        a.mov_imm(5, 0)
        a.call(_SKB_STORE_BYTES)
        a.jump("!=", 0, 0, "failed")
    a.mov_imm(7, DEMUXED)
    _count(a, 7)
    a.load(4, 1, 6, _SKB_IFINDEX)
    a.mov_imm(2, 0)
    a.call(_REDIRECT)
    a.exit()
    for name, index in (("truncated", TRUNCATED), ("not_gre", NOT_PPTP_GRE),
                        ("unknown", UNKNOWN_KEY), ("failed", HELPER_FAILED)):
        a.label(name)
        a.mov_imm(7, index)
        _count(a, 7)
        a.mov_imm(0, TC_ACT_SHOT)
        a.exit()
    return a


@dataclass
class Demux:
    """The loaded program and its two maps."""

    program: bpf.Fd
    table: bpf.Map
    counters: bpf.Map

    @classmethod
    def load(cls, table_size: int = TABLE_SIZE) -> Demux:
        """Create the maps and load the program (needs root)."""
        table = bpf.Map.create(bpf.MAP_TYPE_HASH, TABLE_KEY.size, TABLE_VALUE.size,
                               table_size, "pptp_demux")
        counters = bpf.Map.create(bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8, len(COUNTERS),
                                  "pptp_demux_cnt")
        code = program().assemble({"table": table.fd.fd, "counters": counters.fd.fd})
        return cls(bpf.load_program(code, name="pptp_gre_demux"), table, counters)

    def pin(self, directory: str) -> None:
        """Pin the program and maps in ``directory`` (a BPF filesystem)."""
        self.program.pin(f"{directory}/program")
        self.table.fd.pin(f"{directory}/table")
        self.counters.fd.pin(f"{directory}/counters")

    @classmethod
    def open(cls, directory: str) -> Demux:
        """The demultiplexer pinned in ``directory``."""
        return cls(bpf.open_pinned(f"{directory}/program"),
                   bpf.Map(bpf.open_pinned(f"{directory}/table"), TABLE_KEY.size,
                           TABLE_VALUE.size),
                   bpf.Map(bpf.open_pinned(f"{directory}/counters"), 4, 8, per_cpu=True))

    def set(self, server: IPv4Address, public: IPv4Address, public_call_id: int,
            client: IPv4Address, client_call_id: int) -> None:
        """Deliver (server, public, public_call_id) to (client, client_call_id)."""
        self.table.update(TABLE_KEY.pack(server.packed, public.packed, public_call_id),
                          TABLE_VALUE.pack(client.packed, struct.pack("!H", client_call_id),
                                           0, 0))

    def remove(self, server: IPv4Address, public: IPv4Address, public_call_id: int) -> bool:
        """Forget an entry: its packets are dropped (and counted) from now on."""
        return self.table.delete(TABLE_KEY.pack(server.packed, public.packed, public_call_id))

    def entry_counts(self, server: IPv4Address, public: IPv4Address, public_call_id: int
                     ) -> tuple[int, int] | None:
        """Packets and bytes an entry has carried; None without the entry."""
        raw = self.table.lookup(TABLE_KEY.pack(server.packed, public.packed, public_call_id))
        if raw is None:
            return None
        _client, _call_id, packets, octets = TABLE_VALUE.unpack(raw)
        return packets, octets

    def counts(self) -> dict[str, int]:
        """The program's counters, summed over CPUs."""
        return {name: self.counters.per_cpu_sum(struct.pack("=I", index))
                for index, name in enumerate(COUNTERS)}

    def close(self) -> None:
        for fd in (self.program, self.table.fd, self.counters.fd):
            fd.close()


def gre_frame(dst_mac: bytes, src_mac: bytes, src: IPv4Address, dst: IPv4Address,
              call_id: int, payload: bytes = b"", ttl: int = 64) -> bytes:
    """An Ethernet frame of enhanced GRE (key and sequence number) for tests and probes."""
    gre = GreHeader(len(payload), call_id, sequence=1).encode() + payload
    ip = build_ipv4(src, dst, PROTO_GRE, gre, ttl=ttl, dont_fragment=True)
    return build_ethernet(dst_mac, src_mac, ETH_TYPE_IPV4, ip)
