"""The switch's life as the app sees it, and the sums of its flow statistics.

A connected switch goes through these states (:class:`SwitchState`)::

    DISCONNECTED --features--> FEATURES --port description--> RECONCILE
        --its entries read, restored or reconciled, pipeline sent--> READY
    any state --disconnection--> DISCONNECTED

Only a READY switch's packet-ins are handled (the others are dropped and counted, for
their senders to repeat); in RECONCILE the app deletes nothing and reads the switch's
entries of its own (by cookie) for the core's restore or reconciliation. A
:class:`Switch` is the context of one datapath: its state, its ports, the outbox of its
messages and the sums of its statistics replies.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from alg.events import EntryKind
from ryu_apps import switch
from ryu_apps.outbox import Outbox, OutboxCounters

LOG = logging.getLogger("pptp_alg.gateway")

Key = tuple[EntryKind, int]
"""What an entry belongs to, from its cookie: (kind, id)."""


class SwitchState(enum.Enum):
    """Where a switch is in its life (module docstring)."""

    DISCONNECTED = "disconnected"
    FEATURES = "features"
    RECONCILE = "reconcile"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Ports:
    """The switch's numbers for the configured ports.

    Attributes:
        inside: the inside ports, lowest first.
        outside: the outside port.
        numbers: every port of the switch by name.
    """

    inside: list[int]
    outside: int
    numbers: Mapping[str, int]


def port_name(desc: Any) -> str:
    """A port description's name, as text."""
    name = desc.name
    return name.decode() if isinstance(name, bytes) else str(name)


def port_numbers(body: Iterable[Any]) -> dict[str, int]:
    """Port name -> number, from a port description reply's body."""
    return {port_name(p): p.port_no for p in body}


def resolve_ports(numbers: Mapping[str, int], inside: Iterable[str], outside: str
                  ) -> Ports | list[str]:
    """The configured ports' numbers, or the names the switch does not have."""
    inside = list(inside)
    missing = [name for name in (*inside, outside) if name not in numbers]
    if missing:
        return missing
    return Ports(sorted(numbers[n] for n in inside), numbers[outside], numbers)


class CookieSums:
    """Entries, packets and bytes per cookie of ours, summed over one multipart reply
    (a NAT session has two entries under one cookie)."""

    __slots__ = ("_sums", "entries")

    def __init__(self) -> None:
        self._sums: dict[Key, tuple[int, int, int]] = {}
        self.entries = 0

    def add(self, stats: Iterable[Any]) -> None:
        """One part of a flow statistics reply."""
        for stat in stats:
            key = switch.decode_cookie(stat.cookie)
            if key is None:
                continue
            self.entries += 1
            entries, count, octets = self._sums.get(key, (0, 0, 0))
            self._sums[key] = (entries + 1, count + stat.packet_count,
                               octets + stat.byte_count)

    def installed(self) -> dict[Key, int]:
        """How many entries each cookie has."""
        return {key: sums[0] for key, sums in self._sums.items()}

    def counts(self) -> dict[Key, tuple[int, int]]:
        """Packets and bytes per cookie."""
        return {key: (sums[1], sums[2]) for key, sums in self._sums.items()}

    def clear(self) -> None:
        """Start again (a new request)."""
        self._sums = {}
        self.entries = 0


class Switch:
    """One datapath's context.

    Args:
        counters: where its outbox counts what it sends.

    Attributes:
        state: where it is in its life.
        ports: its port numbers, once its port description is known.
        bridge: its bridge's name (its LOCAL port's), once its port description is
            known; None when it reports none.
        outbox: the queue of its messages.
        entries: the sums of the reply to the request made on connection (RECONCILE).
        stats: the sums of the periodic statistics request's reply.
    """

    def __init__(self, counters: OutboxCounters) -> None:
        self.state = SwitchState.DISCONNECTED
        self.ports: Ports | None = None
        self.bridge: str | None = None
        self.outbox = Outbox(counters)
        self.entries = CookieSums()
        self.stats = CookieSums()
        self.reconcile_xid: int | None = None

    @property
    def datapath(self) -> Any:
        """The framework's datapath, None while disconnected."""
        return self.outbox.datapath

    @property
    def ready(self) -> bool:
        """True when its packet-ins are handled."""
        return self.state is SwitchState.READY

    def connected(self, datapath: Any) -> None:
        """Its features reply came: a new connection (FEATURES)."""
        self.outbox.connect(datapath)
        self.state = SwitchState.FEATURES
        self.reconcile_xid = None

    def gone(self) -> None:
        """It disconnected (DISCONNECTED)."""
        self.outbox.connect(None)
        self.state = SwitchState.DISCONNECTED
        self.reconcile_xid = None

    def read_entries(self, ports: Ports, request: Any) -> None:
        """Its ports are known; ``request`` (a flow statistics request for every entry
        of ours) is queued to read its entries (RECONCILE)."""
        self.ports = ports
        self.datapath.set_xid(request)
        self.reconcile_xid = request.xid
        self.entries.clear()
        self.outbox.request(request)
        self.state = SwitchState.RECONCILE

    def is_entries_reply(self, xid: int) -> bool:
        """True for a part of the reply to :meth:`read_entries`' request."""
        return self.state is SwitchState.RECONCILE and xid == self.reconcile_xid

    def entries_read(self) -> dict[Key, int]:
        """The reply is complete: how many entries each cookie has."""
        installed = self.entries.installed()
        self.entries.clear()
        self.reconcile_xid = None
        return installed

    def became_ready(self) -> None:
        """Restored or reconciled, the pipeline sent (READY)."""
        self.state = SwitchState.READY
