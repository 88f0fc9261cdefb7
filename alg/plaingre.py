"""ALG off: GRE NATed by address only, the broken behaviour the seed describes.

Without the ALG the gateway knows no Call IDs: a client's GRE to a server leaves from
its public address, and the server's GRE to that public address goes to whichever client
sent GRE to that server last. So one client per (server, public address) at a time.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.config import AlgConfig
from alg.counters import Counters
from alg.events import (
    Direction,
    EntryKind,
    Forward,
    GreInboundEntry,
    GreOutboundEntry,
    Output,
    RemoveEntries,
    Translation,
)
from alg.nat import AddressPool
from alg.snapshot import Journal, PlainGreRecord


@dataclass(eq=False)
class PlainGre:
    """One client's GRE to one server, address-only.

    Attributes:
        outbound_id, inbound_id: the ids of its two entries.
        outbound_packets, inbound_packets: the last counts the switch reported.
    """

    client_ip: IPv4Address
    server_ip: IPv4Address
    public_ip: IPv4Address
    outbound_id: int
    inbound_id: int
    last_seen: float
    outbound_packets: int = 0
    inbound_packets: int = 0
    claimed: int = 0

    def record(self) -> PlainGreRecord:
        """What the store keeps of the binding."""
        return PlainGreRecord(self.client_ip, self.server_ip, self.public_ip,
                              self.outbound_id, self.inbound_id, self.claimed)


class PlainGreTable:
    """The address-only GRE bindings.

    Args:
        config: the GRE idle timeout and the policy.
        counters: the core's counters.
        pool: the public address pool (paired with the host's other sessions).
        ids: the core's entry id source.
        journal: where bindings made, moved and ended are noted (``alg.snapshot``).
    """

    def __init__(
        self, config: AlgConfig, counters: Counters, pool: AddressPool,
        ids: Iterator[int], journal: Journal | None = None,
    ) -> None:
        self._config = config
        self._journal = journal if journal is not None else Journal()
        self._claims = 0
        self._counters = counters
        self._pool = pool
        self._ids = ids
        self._outbound: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._inbound: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._by_id: dict[int, PlainGre] = {}

    def bindings(self) -> list[PlainGre]:
        """Every live binding."""
        return list(self._outbound.values())

    def inbound(self, server_ip: IPv4Address, public_ip: IPv4Address) -> PlainGre | None:
        """The binding that takes the server's GRE to ``public_ip``, if any."""
        return self._inbound.get((server_ip, public_ip))

    def outbound(self, client_ip: IPv4Address, server_ip: IPv4Address) -> PlainGre | None:
        """The binding of a client's GRE to a server, if any."""
        return self._outbound.get((client_ip, server_ip))

    def handle_gre(
        self, direction: Direction, src_ip: IPv4Address, dst_ip: IPv4Address, now: float,
        allowed: bool,
    ) -> Output:
        """A GRE packet that reached the controller.

        Args:
            allowed: whether the policy lets an inside host start GRE.
        """
        out = Output()
        if direction is Direction.INBOUND:
            binding = self._inbound.get((src_ip, dst_ip))
            if binding is None:
                self._counters.gre_unknown_dropped += 1
                return Output(drop_reason="GRE matches no binding")
            binding.last_seen = now
            out.decisions.append(GreInboundEntry(
                binding.inbound_id, src_ip, dst_ip, binding.client_ip, self._config.gre_idle
            ))
            out.emits.append(Forward(direction, Translation(src_ip, 0, binding.client_ip, 0)))
            return out
        binding = self._outbound.get((src_ip, dst_ip))
        if binding is None:
            if not allowed:
                self._counters.policy_denied += 1
                return Output(drop_reason=f"policy {self._config.policy} denies GRE")
            public_ip = self._pool.acquire(src_ip)
            binding = PlainGre(src_ip, dst_ip, public_ip, next(self._ids), next(self._ids), now)
            self._outbound[(src_ip, dst_ip)] = binding
            self._by_id[binding.outbound_id] = self._by_id[binding.inbound_id] = binding
        binding.last_seen = now
        if self._inbound.get((dst_ip, binding.public_ip)) is not binding:
            self._claims += 1
            binding.claimed = self._claims
            self._inbound[(dst_ip, binding.public_ip)] = binding
            self._journal.save("plain", (src_ip, dst_ip), binding.record)
        out.decisions.append(GreOutboundEntry(
            binding.outbound_id, src_ip, dst_ip, binding.public_ip, self._config.gre_idle
        ))
        out.decisions.append(GreInboundEntry(
            binding.inbound_id, dst_ip, binding.public_ip, src_ip, self._config.gre_idle
        ))
        out.emits.append(Forward(direction, Translation(binding.public_ip, 0, dst_ip, 0)))
        return out

    def entry_stats(self, entry_id: int, packets: int, now: float) -> bool:
        """The switch's count for one entry of a binding; False if not one."""
        binding = self._by_id.get(entry_id)
        if binding is None:
            return False
        if packets > 0:
            outbound = entry_id == binding.outbound_id
            # Two entries, two counters: comparing one with the other is no growth.
            if packets != (binding.outbound_packets if outbound else binding.inbound_packets):
                binding.last_seen = now
            if outbound:
                binding.outbound_packets = packets
            else:
                binding.inbound_packets = packets
        return True

    def entry_removed(self, entry_id: int) -> bool:
        """The switch removed an entry of a binding; its count restarts."""
        binding = self._by_id.get(entry_id)
        if binding is None:
            return False
        if entry_id == binding.outbound_id:
            binding.outbound_packets = 0
        else:
            binding.inbound_packets = 0
        return True

    def restore(self, records: list[PlainGreRecord], now: float) -> list[PlainGreRecord]:
        """Take back the bindings a store kept; of those of one (server, public
        address) pair, the latest claim holds the inbound entry.

        Returns:
            The records left out: a binding already known, ids already taken, or a
            host pooled on another address.
        """
        left_out = []
        for r in sorted(records, key=lambda r: r.claimed):
            ids = {r.outbound_id, r.inbound_id}
            bound = self._pool.lookup(r.client_ip)
            if (
                (r.client_ip, r.server_ip) in self._outbound or len(ids) != 2
                or ids & self._by_id.keys() or r.public_ip not in self._pool.addresses
                or (bound is not None and bound != r.public_ip)
            ):
                left_out.append(r)
                continue
            self._pool.acquire(r.client_ip, r.public_ip)
            binding = PlainGre(r.client_ip, r.server_ip, r.public_ip, r.outbound_id,
                               r.inbound_id, now, claimed=r.claimed)
            self._outbound[(r.client_ip, r.server_ip)] = binding
            self._by_id[r.outbound_id] = self._by_id[r.inbound_id] = binding
            self._inbound[(r.server_ip, r.public_ip)] = binding
            self._claims = max(self._claims, r.claimed)
        return left_out

    def reinstall(self, installed: Container[tuple[EntryKind, int]], out: Output
                  ) -> set[tuple[EntryKind, int]]:
        """Both entries of every binding the switch lacks; every entry the table owns."""
        owned: set[tuple[EntryKind, int]] = set()
        for b in self._outbound.values():
            up = (EntryKind.GRE_OUTBOUND, b.outbound_id)
            down = (EntryKind.GRE_INBOUND, b.inbound_id)
            owned |= {up, down}
            if up not in installed:
                b.outbound_packets = 0
                out.decisions.append(GreOutboundEntry(
                    b.outbound_id, b.client_ip, b.server_ip, b.public_ip, self._config.gre_idle
                ))
            if down not in installed and self._inbound.get((b.server_ip, b.public_ip)) is b:
                b.inbound_packets = 0
                out.decisions.append(GreInboundEntry(
                    b.inbound_id, b.server_ip, b.public_ip, b.client_ip, self._config.gre_idle
                ))
        return owned

    def tick(self, now: float, out: Output) -> None:
        """Remove bindings idle for the GRE idle timeout."""
        for key, binding in list(self._outbound.items()):
            if now - binding.last_seen < self._config.gre_idle:
                continue
            del self._outbound[key]
            del self._by_id[binding.outbound_id], self._by_id[binding.inbound_id]
            if self._inbound.get((binding.server_ip, binding.public_ip)) is binding:
                del self._inbound[(binding.server_ip, binding.public_ip)]
            self._pool.release(binding.client_ip)
            self._journal.forget("plain", key)
            out.decisions.append(RemoveEntries(EntryKind.GRE_OUTBOUND, binding.outbound_id))
            out.decisions.append(RemoveEntries(EntryKind.GRE_INBOUND, binding.inbound_id))
