"""The GRE demultiplexer loaded: its program (``demux.program``) and its two maps, the
table the controller writes and the program's counters, from the standard library
(``demux.bpf``).

:meth:`Demux.load` creates the maps and loads the program (the kernel's verifier checks
it then); :meth:`Demux.pin` leaves all three in a BPF filesystem, where ``tc`` attaches
the program and :meth:`Demux.open` finds them again from another process.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from demux import bpf
from demux.program import COUNTERS, COUNTERS_MAP, TABLE, TABLE_KEY, TABLE_SIZE, TABLE_VALUE, program

COUNTER_KEY = struct.Struct("=I")
"""A counter's index: the counters' map's key."""
COUNTER_SIZE = 8
"""A counter: the counters' map's value, one per CPU (host order)."""
_CALL_ID = struct.Struct("!H")


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
        counters = bpf.Map.create(bpf.MAP_TYPE_PERCPU_ARRAY, COUNTER_KEY.size, COUNTER_SIZE,
                                  len(COUNTERS), "pptp_demux_cnt")
        code = program().assemble({TABLE: table.fd.fd, COUNTERS_MAP: counters.fd.fd})
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
                   bpf.Map(bpf.open_pinned(f"{directory}/counters"), COUNTER_KEY.size,
                           COUNTER_SIZE, per_cpu=True))

    def set(self, server: IPv4Address, public: IPv4Address, public_call_id: int,
            client: IPv4Address, client_call_id: int) -> None:
        """Deliver (server, public, public_call_id) to (client, client_call_id)."""
        self.table.update(TABLE_KEY.pack(server.packed, public.packed, public_call_id),
                          TABLE_VALUE.pack(client.packed, _CALL_ID.pack(client_call_id),
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
        return {name: self.counters.per_cpu_sum(COUNTER_KEY.pack(index))
                for index, name in enumerate(COUNTERS)}

    def close(self) -> None:
        """Close the program's and the maps' descriptors (pinned ones stay)."""
        for fd in (self.program, self.table.fd, self.counters.fd):
            fd.close()
