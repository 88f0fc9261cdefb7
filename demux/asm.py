"""A small eBPF assembler, from the standard library: what the GRE demultiplexer's
program (``demux.program``) is written with.

eBPF in brief, for reading that program (the kernel's ``Documentation/bpf/
standardization/instruction-set.rst`` has the rest):

* Eleven 64-bit registers. ``r0`` holds a helper's result and the program's return
  value; ``r1`` to ``r5`` carry a helper's arguments (the program's context, here the
  ``struct __sk_buff *``, arrives in ``r1``) and are lost across a call; ``r6`` to ``r9``
  survive calls; ``r10`` is the read-only frame pointer, the stack (512 bytes) lies
  below it, at negative offsets.
* An instruction is 8 bytes: the opcode, the destination and source registers (4 bits
  each), a signed 16-bit offset and a signed 32-bit immediate. A jump's offset counts
  instructions from the next one.
* Loads and stores are in the host's byte order, so a field in network byte order,
  loaded whole, reads swapped on a little-endian host: constants compared with such a
  load are written :func:`be16` (``htons`` in C); :meth:`Asm.ntohs` turns a loaded
  field into its value.

The opcodes are assembled from the names of ``linux/bpf.h`` and ``linux/bpf_common.h``
(stable kernel ABI). Each method of :class:`Asm` says in its docstring the C statement
its instruction is.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from enum import IntEnum


class Reg(IntEnum):
    """The registers."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10


R_RET = Reg.R0
"""A helper's result; the program's return value."""
R_ARG1, R_ARG2, R_ARG3, R_ARG4, R_ARG5 = Reg.R1, Reg.R2, Reg.R3, Reg.R4, Reg.R5
"""A helper's arguments (lost across a call)."""
R_CTX = Reg.R1
"""The program's context when it starts (for a TC program, the ``struct __sk_buff *``)."""
R_FP = Reg.R10
"""The frame pointer: the stack is below it."""


class Helper(IntEnum):
    """The kernel's helper functions the program calls (``enum bpf_func_id``)."""

    MAP_LOOKUP_ELEM = 1
    """``void *bpf_map_lookup_elem(map, const void *key)``: the value, or NULL."""
    SKB_STORE_BYTES = 9
    """``long bpf_skb_store_bytes(skb, u32 offset, const void *from, u32 len, u64 flags)``."""
    L3_CSUM_REPLACE = 10
    """``long bpf_l3_csum_replace(skb, u32 offset, u64 from, u64 to, u64 size)``."""
    REDIRECT = 23
    """``long bpf_redirect(u32 ifindex, u64 flags)``: TC_ACT_REDIRECT, or TC_ACT_SHOT."""


# instruction classes
_LD = 0x00
_LDX = 0x01
_ST = 0x02
_STX = 0x03
_ALU = 0x04
_JMP = 0x05
_ALU64 = 0x07
# the source of an ALU or jump operand: the immediate or the source register
_K = 0x00
_X = 0x08
# ALU operations
_ADD = 0x00
_SUB = 0x10
_LSH = 0x60
_RSH = 0x70
_AND = 0x50
_MOV = 0xB0
_END = 0xD0
_TO_BE = 0x08
# jump operations
_JEQ = 0x10
_JGT = 0x20
_JNE = 0x50
_JLT = 0xA0
_CALL = 0x80
_EXIT = 0x90
# memory access: mode and size
_IMM = 0x00
_MEM = 0x60
_ATOMIC = 0xC0
_SIZE = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
_JUMPS = {"==": _JEQ, ">": _JGT, "!=": _JNE, "<": _JLT}
_PSEUDO_MAP_FD = 1
"""The source register of a 64-bit immediate load whose immediate is a map's descriptor."""

_INSN = struct.Struct("<BBhi")


def be16(value: int) -> int:
    """The 16-bit ``value`` as a 2-byte load of it in network byte order reads it:
    ``htons(value)`` in C, the constant to compare such a load with."""
    return int.from_bytes(value.to_bytes(2, "big"), sys.byteorder)


@dataclass(frozen=True)
class _Jump:
    code: int
    reg: int
    value: int
    by_reg: bool
    target: str


_Insn = tuple[int, int, int, int, int]


def _insn(op: int, dst: int, src: int, off: int, imm: int) -> bytes:
    return _INSN.pack(op, (src << 4) | dst, off, imm)


class Asm:
    """The instructions of one program: one method per instruction kind, labels for
    jumps, names for maps; :meth:`assemble` gives the bytes to load."""

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
        """``name:`` (the next instruction's)."""
        self.labels[name] = len(self.code)

    def mov(self, dst: Reg, src: Reg) -> None:
        """``dst = src``."""
        self._emit(_ALU64 | _MOV | _X, dst, src)

    def mov_imm(self, dst: Reg, imm: int) -> None:
        """``dst = imm``."""
        self._emit(_ALU64 | _MOV | _K, dst, imm=imm)

    def add_imm(self, dst: Reg, imm: int) -> None:
        """``dst += imm``."""
        self._emit(_ALU64 | _ADD | _K, dst, imm=imm)

    def add(self, dst: Reg, src: Reg) -> None:
        """``dst += src``."""
        self._emit(_ALU64 | _ADD | _X, dst, src)

    def sub(self, dst: Reg, src: Reg) -> None:
        """``dst -= src``."""
        self._emit(_ALU64 | _SUB | _X, dst, src)

    def lsh_imm(self, dst: Reg, imm: int) -> None:
        """``dst <<= imm``."""
        self._emit(_ALU64 | _LSH | _K, dst, imm=imm)

    def rsh_imm(self, dst: Reg, imm: int) -> None:
        """``dst >>= imm`` (unsigned)."""
        self._emit(_ALU64 | _RSH | _K, dst, imm=imm)

    def and_imm(self, dst: Reg, imm: int) -> None:
        """``dst &= imm``."""
        self._emit(_ALU64 | _AND | _K, dst, imm=imm)

    def ntohs(self, dst: Reg) -> None:
        """``dst = ntohs(dst)``: the low 16 bits of ``dst`` read as network byte order."""
        self._emit(_ALU | _END | _TO_BE, dst, imm=16)

    def load(self, size: int, dst: Reg, src: Reg, off: int) -> None:
        """``dst = *(u8/u16/u32/u64 *)(src + off)``, ``size`` bytes."""
        self._emit(_LDX | _MEM | _SIZE[size], dst, src, off)

    def store(self, size: int, dst: Reg, off: int, src: Reg) -> None:
        """``*(u8/u16/u32/u64 *)(dst + off) = src``, ``size`` bytes."""
        self._emit(_STX | _MEM | _SIZE[size], dst, src, off)

    def store_imm(self, size: int, dst: Reg, off: int, imm: int) -> None:
        """``*(u8/u16/u32/u64 *)(dst + off) = imm``, ``size`` bytes."""
        self._emit(_ST | _MEM | _SIZE[size], dst, off=off, imm=imm)

    def atomic_add(self, dst: Reg, off: int, src: Reg) -> None:
        """``__sync_fetch_and_add((u64 *)(dst + off), src)``."""
        self._emit(_STX | _ATOMIC | _SIZE[8], dst, src, off, _ADD)

    def load_map(self, dst: Reg, name: str) -> None:
        """``dst = &name`` (a 16-byte load of the map's file descriptor, set at
        assembly; the kernel puts the map's address in its place)."""
        self.maps[len(self.code)] = name
        self._emit(_LD | _IMM | _SIZE[8], dst, _PSEUDO_MAP_FD)
        self._emit(0)

    def call(self, helper: Helper) -> None:
        """``r0 = helper(r1, r2, r3, r4, r5)``; ``r1`` to ``r5`` are lost."""
        self._emit(_JMP | _CALL, imm=helper)

    def exit(self) -> None:
        """``return r0``."""
        self._emit(_JMP | _EXIT)

    def jump(self, op: str, reg: Reg, imm: int, target: str) -> None:
        """``if (reg OP imm) goto target`` (``op`` one of ``== != > <``, unsigned)."""
        self.code.append(_Jump(_JMP | _JUMPS[op] | _K, reg, imm, False, target))

    def jump_reg(self, op: str, reg: Reg, other: Reg, target: str) -> None:
        """``if (reg OP other) goto target`` (``op`` one of ``== != > <``, unsigned)."""
        self.code.append(_Jump(_JMP | _JUMPS[op] | _X, reg, other, True, target))

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
