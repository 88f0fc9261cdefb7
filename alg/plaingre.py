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


class PlainGreTable:
    """The address-only GRE bindings.

    Args:
        config: the GRE idle timeout and the policy.
        counters: the core's counters.
        pool: the public address pool (paired with the host's other sessions).
        ids: the core's entry id source.
    """

    def __init__(
        self, config: AlgConfig, counters: Counters, pool: AddressPool,
        ids: Iterator[int],
    ) -> None:
        self._config = config
        self._counters = counters
        self._pool = pool
        self._ids = ids
        self._outbound: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._inbound: dict[tuple[IPv4Address, IPv4Address], PlainGre] = {}
        self._by_id: dict[int, PlainGre] = {}

    def bindings(self) -> list[PlainGre]:
        """Every live binding."""
        return list(self._outbound.values())

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
        self._inbound[(dst_ip, binding.public_ip)] = binding
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
            out.decisions.append(RemoveEntries(EntryKind.GRE_OUTBOUND, binding.outbound_id))
            out.decisions.append(RemoveEntries(EntryKind.GRE_INBOUND, binding.inbound_id))
