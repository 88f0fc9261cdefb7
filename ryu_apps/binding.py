"""Which gateway a switch that connects belongs to; no Ryu.

A gateway binds to one switch: by its datapath ID (``[nat] datapath_id``), or by its
bridge's name, which the switch reports as the name of its LOCAL port
(``[nat] bridge``); with both, both must match. A gateway that names neither binds to
the first switch that connects and keeps that datapath ID for the life of the process,
so that another switch never takes it over. A switch that no gateway claims gets
nothing installed (the app logs it and counts it in ``switches_refused``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OFPP_LOCAL = 0xFFFFFFFE
"""The OpenFlow 1.3 number of a switch's LOCAL port (Open vSwitch names it after the
bridge)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one gateway binds to.

    Attributes:
        name: the gateway's name.
        datapath_id: the switch's datapath ID, or None.
        bridge: the bridge's name, or empty.
    """

    name: str
    datapath_id: int | None = None
    bridge: str = ""

    def describe(self) -> str:
        """The switch it asks for, in words."""
        wanted = [f"datapath {self.datapath_id:016x}"] if self.datapath_id is not None else []
        wanted += [f"bridge {self.bridge}"] if self.bridge else []
        return " and ".join(wanted) or "the first switch that connects"


def bridge_name(ports: Mapping[str, int]) -> str | None:
    """The bridge's name: the name of the LOCAL port in a port description (name ->
    number), None when the switch reports none."""
    for name, number in ports.items():
        if number == OFPP_LOCAL:
            return name
    return None


def describe_switch(datapath_id: int, bridge: str | None) -> str:
    """A connecting switch, in words for the log."""
    return f"datapath {datapath_id:016x} (bridge {bridge or 'unnamed'})"


class Binder:
    """The gateways' claims, and the switch each one bound to.

    Args:
        claims: one per gateway.
    """

    def __init__(self, claims: Iterable[Claim]) -> None:
        self._claims = tuple(claims)
        self._first: dict[str, int] = {}

    @property
    def claims(self) -> tuple[Claim, ...]:
        """One per gateway."""
        return self._claims

    def bind(self, datapath_id: int, bridge: str | None) -> Claim | None:
        """The gateway a connecting switch belongs to, or None when no gateway claims it.

        Args:
            datapath_id: the switch's datapath ID (its features reply).
            bridge: its LOCAL port's name, None without one.
        """
        for claim in self._claims:
            named = claim.datapath_id is not None or bool(claim.bridge)
            if not named:
                continue
            if claim.datapath_id is not None and claim.datapath_id != datapath_id:
                continue
            if claim.bridge and claim.bridge != bridge:
                continue
            return claim
        for claim in self._claims:
            if claim.datapath_id is None and not claim.bridge:
                first = self._first.setdefault(claim.name, datapath_id)
                if first == datapath_id:
                    return claim
        return None
