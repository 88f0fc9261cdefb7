"""Ordinary NAT in the datapath: what each inside host may use (``ordinary_nat =
conntrack``).

With ``conntrack`` the datapath's connection tracker translates inside hosts' TCP and
UDP; no session reaches the controller. What the controller decides, on a host's first
packet, is what the tracker may hand out for that host:

* its **public address**: the pool's (``alg.nat.AddressPool``), shared with its control
  connections and GRE, so each host keeps one address (paired pooling, RFC 4787
  section 4.1). A range of addresses in one ``nat`` action would spread a host's
  connections over them (``docs/conntrack.md``), so each host gets entries of its own.
* a **block of public ports** of that address (RFC 7422): ``ct_ports_per_host`` ports,
  the host's alone. The tracker picks a port of the block for each new connection and
  never one outside it, so no host can take another's ports, and one host's connections
  to one destination are bounded by its block. When every block of the host's address is
  taken, the host is refused (``hosts_refused``).

The binding lives while its classifying entry sees packets; the switch reports the
entry idle (``flow_removed``) and the block and the address's reference go back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from alg.config import AlgConfig
from alg.counters import Counters
from alg.events import EntryKind, HostEntries, Output, RemoveEntries
from alg.nat import AddressPool
from alg.snapshot import HostRecord, Journal

HOST_ENTRIES = 5
"""A binding's entries on the switch (``ryu_apps.ctflows.host_entries``)."""
REDECIDE_AFTER = 1.0
"""Seconds after a binding's entries were decided during which its host's packets that
still reach the controller are not decided again: they go back through the switch's
tables, whose entries (sent before them, behind a barrier) take them."""
RESUBMITS = 64
"""Packets sent back through the tables at most per decision: should the entries not
take them, they come back, and beyond this they are dropped (no loop)."""


@dataclass(eq=False, slots=True)
class HostBinding:
    """One inside host's share of the public side.

    Attributes:
        id: the binding's entry id (its entries' cookie).
        inside_ip: the host.
        public_ip: its public address.
        ports: the first and last port of its block.
        decided_at: when its entries were last decided.
    """

    id: int
    inside_ip: IPv4Address
    public_ip: IPv4Address
    ports: tuple[int, int]
    decided_at: float
    block: int = field(repr=False, default=0)
    resubmits: int = field(repr=False, default=0)


class HostBindings:
    """Every inside host's binding, and the free blocks of each public address.

    Args:
        config: ``port_min``, ``port_max``, ``ct_ports_per_host``, ``tcp_idle``.
        counters: the core's counters.
        pool: the public addresses, shared with the rest of the NAT.
        ids: the core's id source.
    """

    def __init__(self, config: AlgConfig, counters: Counters, pool: AddressPool,
                 ids: Iterator[int], journal: Journal | None = None) -> None:
        self._config = config
        self._journal = Journal() if journal is None else journal
        self._counters = counters
        self._pool = pool
        self._ids = ids
        size = config.ct_ports_per_host
        self._blocks = (config.port_max - config.port_min + 1) // size
        self._free: dict[IPv4Address, set[int]] = {
            a: set(range(self._blocks)) for a in pool.addresses}
        self._hosts: dict[IPv4Address, HostBinding] = {}
        self._by_id: dict[int, HostBinding] = {}

    @property
    def blocks_per_address(self) -> int:
        """How many hosts one public address serves."""
        return self._blocks

    def __len__(self) -> int:
        return len(self._hosts)

    def get(self, inside_ip: IPv4Address) -> HostBinding | None:
        """The host's binding, if it has one."""
        return self._hosts.get(inside_ip)

    def bindings(self) -> list[HostBinding]:
        """Every binding, oldest first."""
        return list(self._hosts.values())

    def outbound(self, inside_ip: IPv4Address, now: float) -> Output:
        """A host's packet reached the controller: bind the host (its entries, then the
        packet goes back through the switch's tables), or, bound already, decide its
        entries again unless that was just done (then the packet only goes back, at
        most :data:`RESUBMITS` times per decision)."""
        binding = self._hosts.get(inside_ip)
        if binding is not None:
            if now - binding.decided_at >= REDECIDE_AFTER:
                binding.decided_at = now
                return self._entries(binding)
            if binding.resubmits >= RESUBMITS:
                return Output(drop_reason="host entries decided just now")
            binding.resubmits += 1
            return Output(resubmit=True)
        public_ip = self._pool.acquire(inside_ip)
        free = self._free[public_ip]
        if not free:
            self._pool.release(inside_ip)
            self._counters.hosts_refused += 1
            return Output(drop_reason=f"no block of ports left on {public_ip}",
                          errors=[f"inside host {inside_ip} refused: every block of ports "
                                  f"of {public_ip} is taken"])
        block = min(free)
        free.discard(block)
        binding = HostBinding(next(self._ids), inside_ip, public_ip, self._ports(block),
                              now, block)
        self._add(binding)
        self._counters.hosts_bound += 1
        return self._entries(binding)

    def _ports(self, block: int) -> tuple[int, int]:
        """The first and last port of block number ``block``."""
        first = self._config.port_min + block * self._config.ct_ports_per_host
        return first, first + self._config.ct_ports_per_host - 1

    def _add(self, binding: HostBinding) -> None:
        self._hosts[binding.inside_ip] = binding
        self._by_id[binding.id] = binding
        self._journal.save("host", binding.inside_ip, lambda: HostRecord(
            binding.id, binding.inside_ip, binding.public_ip, binding.block))

    def restore(self, records: list[HostRecord]) -> list[HostRecord]:
        """Take back the bindings a store kept (after the NAT sessions, whose hosts hold
        their addresses already).

        Returns:
            The records left out: a host or an id already known, an address not in the
            pool, a block out of range or taken, or a host pooled on another address.
        """
        left_out = []
        for r in records:
            bound = self._pool.lookup(r.inside_ip)
            free = self._free.get(r.public_ip, set())
            if (r.inside_ip in self._hosts or r.id in self._by_id or r.block not in free
                    or (bound is not None and bound != r.public_ip)):
                left_out.append(r)
                continue
            self._pool.acquire(r.inside_ip, r.public_ip)
            free.discard(r.block)
            self._add(HostBinding(r.id, r.inside_ip, r.public_ip, self._ports(r.block),
                                  -REDECIDE_AFTER, r.block))
        return left_out

    def reinstall(self, installed: Mapping[tuple[EntryKind, int], int], out: Output
                  ) -> set[tuple[EntryKind, int]]:
        """The entries of every binding the switch lacks (some or all of its
        :data:`HOST_ENTRIES`); every entry the bindings own."""
        owned = set()
        for binding in self._hosts.values():
            key = (EntryKind.HOST, binding.id)
            owned.add(key)
            if installed.get(key, 0) < HOST_ENTRIES:
                out.decisions.append(HostEntries(binding, self._config.tcp_idle,
                                                 self._config.ct_zone))
        return owned

    def _entries(self, binding: HostBinding) -> Output:
        binding.resubmits = 0
        return Output(decisions=[HostEntries(binding, self._config.tcp_idle, self._config.ct_zone)],
                      resubmit=True)

    def removed(self, binding_id: int) -> Output:
        """The switch reports a binding's classifying entry gone (idle): the binding
        ends, its other entries go, its block and its address's reference come back."""
        binding = self._by_id.pop(binding_id, None)
        out = Output()
        if binding is None:
            return out
        del self._hosts[binding.inside_ip]
        self._journal.forget("host", binding.inside_ip)
        self._free[binding.public_ip].add(binding.block)
        self._pool.release(binding.inside_ip)
        out.decisions.append(RemoveEntries(EntryKind.HOST, binding.id))
        return out
