"""A fake OpenFlow 1.3 datapath: one table, real Ryu message classes, a tiny interpreter.

Flow-mods built by ``ryu_apps.flowmods`` are applied to a table; packets (dicts of OXM field
names) are run through it, and the test asserts on what comes out: which port, with which
header fields. No switch, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

Packet = dict[str, Any]


@dataclass
class Entry:
    """One installed flow entry."""

    priority: int
    cookie: int
    match: dict[str, Any]
    actions: list[Any]
    idle_timeout: int
    flags: int


@dataclass
class Result:
    """What the table did with a packet."""

    entry: Entry | None
    outputs: list[tuple[int, Packet]] = field(default_factory=list)

    @property
    def to_controller(self) -> bool:
        """True when the packet went to the controller."""
        return any(port == ofproto_v1_3.OFPP_CONTROLLER for port, _ in self.outputs)

    @property
    def dropped(self) -> bool:
        """True when nothing left the switch."""
        return not self.outputs


class FakeDatapath:
    """Enough of ``ryu.controller.controller.Datapath`` for flow building, plus a table."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1

    def __init__(self) -> None:
        self.table: list[Entry] = []
        self.sent: list[Any] = []

    def send_msg(self, msg: Any) -> None:
        """Record a message; apply it when it is a flow-mod."""
        self.sent.append(msg)
        if isinstance(msg, ofproto_v1_3_parser.OFPFlowMod):
            self.apply(msg)

    def apply(self, mod: Any) -> None:
        """Apply one flow-mod to the table (ADD replaces an identical match, DELETE by cookie)."""
        ofp = self.ofproto
        match = dict(mod.match.items())
        if mod.command == ofp.OFPFC_ADD:
            self.table = [
                e for e in self.table if not (e.priority == mod.priority and e.match == match)
            ]
            actions: list[Any] = []
            for inst in mod.instructions:
                actions.extend(inst.actions)
            self.table.append(
                Entry(mod.priority, mod.cookie, match, actions, mod.idle_timeout, mod.flags)
            )
        elif mod.command == ofp.OFPFC_DELETE:
            mask = mod.cookie_mask
            self.table = [
                e for e in self.table
                if not ((e.cookie & mask) == (mod.cookie & mask) and _covers(match, e.match))
            ]
        else:
            raise NotImplementedError(mod.command)

    def process(self, packet: Packet) -> Result:
        """Run ``packet`` through the table: highest-priority match, then its actions."""
        candidates = [e for e in self.table if _matches(e.match, packet)]
        if not candidates:
            return Result(None)
        entry = max(candidates, key=lambda e: e.priority)
        current = dict(packet)
        result = Result(entry)
        for action in entry.actions:
            if isinstance(action, ofproto_v1_3_parser.OFPActionSetField):
                current[action.key] = action.value
            elif isinstance(action, ofproto_v1_3_parser.OFPActionDecNwTtl):
                current["ttl"] = current["ttl"] - 1
            elif isinstance(action, ofproto_v1_3_parser.OFPActionOutput):
                result.outputs.append((action.port, dict(current)))
            else:
                raise NotImplementedError(type(action).__name__)
        return result


def _matches(match: dict[str, Any], packet: Packet) -> bool:
    return all(packet.get(name) == value for name, value in match.items())


def _covers(delete_match: dict[str, Any], entry_match: dict[str, Any]) -> bool:
    return all(entry_match.get(k) == v for k, v in delete_match.items())
