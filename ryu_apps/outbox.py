"""Everything the app sends to the switch, one event at a time.

An event's messages are queued while it runs and sent when it ends, in the order they
were queued: the flow-mods and packet-outs (encoded by ``ryu_apps.wire``) of a run in
one write, the framework's own message objects (meters, the asynchronous
configuration, statistics and port description requests) each by the framework's
``send_msg`` in their place. Events nest (a packet released by an ARP reply is handled
inside the reply's event): only the outermost sends. An event that raised sends
nothing, and a switch that disconnected gets nothing of what was queued for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol

from ryu_apps import wire


class OutboxCounters(Protocol):
    """Where the outbox counts what it queued."""

    flows_installed: int
    packet_outs: int


class Outbox:
    """The queue of one switch's messages; a context manager per event.

    Args:
        counters: counts flow entries added and packet-outs.

    Attributes:
        datapath: the framework's datapath the messages go to, None while the switch is
            not connected.
    """

    __slots__ = ("_counters", "_depth", "_queue", "_xids", "datapath")

    def __init__(self, counters: OutboxCounters) -> None:
        self._counters = counters
        self._queue: list[Any] = []
        self._depth = 0
        self._xids = wire.Xids()
        self.datapath: Any = None

    def __enter__(self) -> None:
        self._depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth:
            return
        queue, self._queue = self._queue, []
        if exc_type is None and self.datapath is not None:
            self._send(self.datapath, queue)

    def connect(self, datapath: Any) -> None:
        """Send to ``datapath`` from now on (None: the switch is gone); what was queued
        for the switch before is dropped."""
        self.datapath = datapath
        self._queue = []

    def flow_mods(self, mods: Iterable[wire.Message]) -> None:
        """Queue flow-mods (and barriers)."""
        for mod in mods:
            self._queue.append(mod)
            if mod.command == wire.OFPFC_ADD:
                self._counters.flows_installed += 1

    def packet_out(self, port: int, frame: bytes) -> None:
        """Queue a PACKET_OUT of ``frame`` to ``port``."""
        self._queue.append(wire.packet_out(port, frame))
        self._counters.packet_outs += 1

    def resubmit(self, port: int, frame: bytes) -> None:
        """Queue a PACKET_OUT that sends ``frame`` through the switch's tables as if it
        had come in on ``port``."""
        self._queue.append(wire.packet_out(wire.OFPP_TABLE, frame, port))
        self._counters.packet_outs += 1

    def messages(self, messages: Iterable[wire.Message]) -> None:
        """Queue messages of the app's own encoding that are not flow-mods."""
        self._queue.extend(messages)

    def request(self, msg: Any) -> None:
        """Queue one of the framework's message objects."""
        self._queue.append(msg)

    def _send(self, dp: Any, queue: list[Any]) -> None:
        run: list[wire.Message] = []
        for item in queue:
            if isinstance(item, wire.Message):
                run.append(item)
                continue
            wire.send(dp, run, self._xids)
            run = []
            dp.send_msg(item)
        wire.send(dp, run, self._xids)
