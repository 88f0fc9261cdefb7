"""The app's part of the GRE demultiplexer's life: its probe entry, its heartbeat and
what a change of its health means for the core.

``demux.link`` talks to the program and its table; this module ties it to the core
(:meth:`~alg.engine.Gateway.demux_available`) and to the switch (the probe's return
entry, the probe's packet-out), through the app's effects.
"""

from __future__ import annotations

from alg.engine import Gateway
from demux.link import PROBE_RETURN, DemuxLink
from ryu_apps import flowmods
from ryu_apps.effects import Effects


class DemuxSide:
    """The demultiplexer as one of the app's parts.

    Args:
        link: the demultiplexer's link.
        core: the core, told when the demultiplexer comes and goes.
        effects: where entries and packets go.
    """

    def __init__(self, link: DemuxLink, core: Gateway, effects: Effects) -> None:
        self.link = link
        self.core = core
        self.effects = effects

    def probe_entry(self) -> None:
        """The entry that returns the probe from the demultiplexer's port (none without
        a port)."""
        if self.link.port is not None:
            self.effects.flow_mods([flowmods.demux_probe(self.link.port, PROBE_RETURN)])

    def port_moved(self) -> None:
        """The demultiplexer's port has a new number: the entries that name it again."""
        self.probe_entry()
        self.effects.apply(self.core.demux_entries())

    def health(self, now: float) -> None:
        """Act on a change of the demultiplexer's health: the core moves shared pairs to
        it or away from it; when it came back, its table keeps only the core's entries."""
        state = self.link.health(now)
        if state is not None:
            output = self.core.demux_available(state, now)
            if state:
                self.link.keep_only(output.decisions)
            self.effects.apply(output)

    def beat(self, now: float) -> None:
        """One heartbeat: the probe out of the demultiplexer's port, then its health."""
        frame = self.link.probe(now)
        if frame is not None and self.link.port is not None:
            self.effects.outbox.packet_out(self.link.port, frame)
        self.health(now)
