"""The Linux ``bpf(2)`` system call, from the standard library (ctypes).

What the GRE demultiplexer needs and no more: create maps, read, write, walk and delete
their elements, load a program, pin objects in a BPF filesystem and open them again, and
run a program on a test packet (``BPF_PROG_TEST_RUN``). Every failure is a
:class:`~alg.errors.BpfError` naming the command and the errno; file descriptors are
owned by :class:`Fd` (closed on ``close`` or garbage collection).

The attribute layouts are those of ``union bpf_attr`` in ``linux/bpf.h`` (stable kernel
ABI); the unused tail of the union is zero.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from collections.abc import Iterator
from pathlib import Path

from alg.errors import BpfError

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
OBJ_PIN = 6
OBJ_GET = 7
PROG_TEST_RUN = 10

MAP_TYPE_HASH = 1
MAP_TYPE_PERCPU_ARRAY = 6
PROG_TYPE_SCHED_CLS = 3

ANY = 0
NOEXIST = 1
EXIST = 2

_ATTR_SIZE = 128
_LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(command: int, attr: bytes, what: str) -> int:
    return _bpf_attr(command, attr, what)[0]


def _bpf_attr(command: int, attr: bytes, what: str) -> tuple[int, bytes]:
    """The call's result and the attributes as the kernel left them."""
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    result: int = _libc.syscall(SYS_BPF, command, buf, _ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(f"bpf {what}: {os.strerror(err)}", err)
    return result, buf.raw


def _address(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


class Fd:
    """A BPF object's file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        """Close the descriptor (once; a pinned object stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the object at ``path`` (in a BPF filesystem): it outlives this process."""
        name = ctypes.create_string_buffer(os.fsencode(path))
        _bpf(OBJ_PIN, struct.pack("=QII", _address(name), self.fd, 0), f"pin {path}")


def open_pinned(path: str | os.PathLike[str]) -> Fd:
    """Open an object pinned at ``path``."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    return Fd(_bpf(OBJ_GET, struct.pack("=QII", _address(name), 0, 0), f"open {path}"))


def possible_cpus() -> int:
    """The number of possible CPUs (what a per-CPU map holds a value for)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class Map:
    """A BPF map: fixed-size keys and values, as bytes."""

    def __init__(self, fd: Fd, key_size: int, value_size: int, per_cpu: bool = False) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.per_cpu = per_cpu
        self._stride = (value_size + 7) // 8 * 8 if per_cpu else value_size
        self._copies = possible_cpus() if per_cpu else 1

    @classmethod
    def create(cls, map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str = "") -> Map:
        """A new map of ``map_type`` (``name`` cut to 15 bytes)."""
        attr = struct.pack("=IIIIIII16s", map_type, key_size, value_size, max_entries, 0, 0, 0,
                           name.encode()[:15])
        fd = Fd(_bpf(MAP_CREATE, attr, f"create map {name!r}"))
        return cls(fd, key_size, value_size, per_cpu=map_type == MAP_TYPE_PERCPU_ARRAY)

    def _found(self, command: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None,
               what: str) -> bool:
        """Run an element command; False when the key is not in the map."""
        try:
            self._elem(command, key, value, 0, what)
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def _elem(self, command: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None,
              flags: int, what: str) -> int:
        if len(key) != self.key_size:
            raise BpfError(f"bpf {what}: key of {len(key)} bytes, map's are {self.key_size}",
                           errno.EINVAL)
        kbuf = ctypes.create_string_buffer(key, len(key))
        attr = struct.pack("=IIQQQ", self.fd.fd, 0, _address(kbuf),
                           _address(value) if value is not None else 0, flags)
        return _bpf(command, attr, what)

    def lookup(self, key: bytes) -> bytes | None:
        """The value at ``key`` (for a per-CPU map, every CPU's, one after the other,
        each padded to 8 bytes), None when there is none."""
        value = ctypes.create_string_buffer(self._stride * self._copies)
        return value.raw if self._found(MAP_LOOKUP_ELEM, key, value, "lookup") else None

    def update(self, key: bytes, value: bytes, flags: int = ANY) -> None:
        """Write ``value`` at ``key``."""
        expected = self._stride * self._copies
        if len(value) != expected:
            raise BpfError(f"bpf update: value of {len(value)} bytes, the map takes "
                           f"{expected}", errno.EINVAL)
        buf = ctypes.create_string_buffer(value, len(value))
        self._elem(MAP_UPDATE_ELEM, key, buf, flags, "update")

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False when it was not there."""
        return self._found(MAP_DELETE_ELEM, key, None, "delete")

    def all_keys(self) -> Iterator[bytes]:
        """Every key (a hash map's order; keys deleted meanwhile may be skipped)."""
        key: bytes | None = None
        while True:
            nxt = ctypes.create_string_buffer(self.key_size)
            kbuf = ctypes.create_string_buffer(key or b"\0" * self.key_size, self.key_size)
            attr = struct.pack("=IIQQ", self.fd.fd, 0, _address(kbuf) if key else 0,
                               _address(nxt))
            try:
                _bpf(MAP_GET_NEXT_KEY, attr, "next key")
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            key = nxt.raw
            yield key

    def per_cpu_sum(self, key: bytes) -> int:
        """The sum over CPUs of a per-CPU map's 64-bit value at ``key``."""
        raw = self.lookup(key)
        if raw is None:
            return 0
        return sum(struct.unpack_from("=Q", raw, i * self._stride)[0]
                   for i in range(self._copies))


def load_program(instructions: bytes, prog_type: int = PROG_TYPE_SCHED_CLS,
                 name: str = "", license_: str = "GPL") -> Fd:
    """Load a program; the verifier's log is in the error when it refuses it."""
    if len(instructions) % 8:
        raise BpfError("bpf load: instructions are 8 bytes each", errno.EINVAL)
    insns = ctypes.create_string_buffer(instructions, len(instructions))
    lic = ctypes.create_string_buffer(license_.encode())
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = struct.pack("=IIQQIIQII16s", prog_type, len(instructions) // 8, _address(insns),
                       _address(lic), 1, _LOG_SIZE, _address(log), 0, 0, name.encode()[:15])
    try:
        return Fd(_bpf(PROG_LOAD, attr, f"load program {name!r}"))
    except BpfError as exc:
        text = log.value.decode(errors="replace").strip()
        raise BpfError(f"{exc}\n{text[-4000:]}", exc.errno) from exc


def test_run(program: Fd, packet: bytes, repeat: int = 1) -> tuple[int, bytes]:
    """Run a program on ``packet`` in the kernel (``BPF_PROG_TEST_RUN``): its return
    value and the packet as it left it."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    attr = struct.pack("=IIIIQQII", program.fd, 0, len(packet), len(data_out),
                       _address(data_in), _address(data_out), repeat, 0)
    _, raw = _bpf_attr(PROG_TEST_RUN, attr, "test run")
    _fd, retval, _size_in, size_out = struct.unpack_from("=IIII", raw)
    return retval, data_out.raw[:size_out]
