"""The app's side of the GRE demultiplexer (``demux.program``): its table, its
heartbeat, its counters.

The controller stays the authority: it writes a table entry for every established call
and deletes it when the call ends (the core's :class:`~alg.events.DemuxEntry` and
:class:`~alg.events.DemuxForget`), and it decides whether shared pairs go to the
demultiplexer at all. Every :data:`HEARTBEAT` seconds it sends a probe out of the
demultiplexer's port: enhanced GRE from :data:`PROBE_SERVER` to :data:`PROBE_PUBLIC`
with :data:`PROBE_CALL_ID`, for which the table says :data:`PROBE_RETURN`. The program
rewrites it like any call's packet and sends it back into the switch, whose pipeline
entry (``flowmods.demux_probe``) returns it to the controller. So an answer proves the
whole path: port, program, table and return. When no answer came for :data:`DEAD_AFTER`
seconds, the demultiplexer is down and the core moves its pairs back to the controller
path; the first answer after that brings them back. The probe's addresses are in
0.0.0.0/8, which no packet on a network carries.

When the switch reports the port gone (deleted, or its link down) or back (added, its
link up again, or under another number; :meth:`DemuxLink.port_status`), the pinned
program and table are opened afresh at their next use: a demultiplexer detached
and attached again is a new program with a new, empty table, and writes to the old one
(whose descriptors this process still holds) would reach nothing. The port must then
answer a probe again before pairs go to it, and the table is written again when it
does. Any other change the switch reports of the port (its configuration, its speed, a
state other than the link's) changes nothing: closing the table would make the next
heartbeat find the demultiplexer down and move every shared pair to the controller path
and back.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from alg.config import GatewayConfig
from alg.counters import CounterSet, counter
from alg.errors import BpfError
from alg.events import Decision, DemuxEntry, DemuxForget
from demux.program import TABLE_KEY, gre_frame
from demux.table import Demux
from ryu_apps.packets import decode_frame, mac_bytes

LOG = logging.getLogger("pptp_alg.demux")

HEARTBEAT = 0.25
DEAD_AFTER = 1.0
PROBE_SERVER = IPv4Address("0.0.0.1")
PROBE_PUBLIC = IPv4Address("0.0.0.2")
PROBE_RETURN = IPv4Address("0.0.0.3")
PROBE_CALL_ID = 0xFFFF
_NONCE = struct.Struct("!Q")
LINK_DOWN = 1 << 0
"""OFPPS_LINK_DOWN in a port's state (OpenFlow 1.3 section 7.2.1): no physical link."""


@dataclass
class DemuxCounters(CounterSet):
    """What the app counts of the demultiplexer."""

    demux_probes_sent: int = counter("Heartbeat probes sent to the GRE demultiplexer")
    demux_probes_answered: int = counter("Heartbeat probes the GRE demultiplexer sent back")
    demux_up_events: int = counter(
        "Times the GRE demultiplexer started answering its heartbeat (shared pairs move to it)")
    demux_down_events: int = counter(
        "Times the GRE demultiplexer stopped answering its heartbeat (shared pairs move to the "
        "controller)")
    demux_table_writes: int = counter(
        "Entries written to or deleted from the GRE demultiplexer's table")
    demux_errors: int = counter(
        "Failures to open or use the GRE demultiplexer's pinned program or table")
    demux_unexpected_frames: int = counter(
        "Frames from the GRE demultiplexer's port that were not a heartbeat's answer")


class DemuxLink:
    """The demultiplexer as the app sees it.

    Args:
        config: ``gre_demux_port`` and ``gre_demux_dir``; without a port, nothing here
            does anything.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.enabled = bool(config.gre_demux_port)
        self.port_name = config.gre_demux_port
        self.directory = config.gre_demux_dir
        self.gateway_mac = mac_bytes(config.gateway_mac)
        self.port: int | None = None
        self.up = False
        self.counters = DemuxCounters()
        self._demux: Demux | None = None
        self._open_failed: str | None = None
        self._sent = 0
        self._answered_at: float | None = None

    def _table(self) -> Demux | None:
        """The pinned program and table, opened on first use, and again after an error or
        a change of the port (the component may have been replaced). A failure to open
        is counted each time and logged once until it changes or an open succeeds."""
        if self._demux is None and self.enabled:
            try:
                self._demux = Demux.open(self.directory)
            except BpfError as exc:
                self.counters.demux_errors += 1
                if str(exc) != self._open_failed:
                    LOG.error("nat.gre_demux_dir %s: %s", self.directory, exc)
                self._open_failed = str(exc)
            else:
                self._open_failed = None
        return self._demux

    def find_port(self, numbers: Mapping[str, int]) -> None:
        """The switch's ports by name are known: the demultiplexer's port is among them
        (logged when it is not: shared pairs then go through the controller)."""
        if not self.enabled:
            return
        self.port = numbers.get(self.port_name)
        if self.port is None:
            LOG.error("switch has no port named %s (nat.gre_demux_port): shared pairs go "
                      "through the controller", self.port_name)

    def heard(self, frame: bytes, now: float) -> bool:
        """A frame from the demultiplexer's port: True when it is a heartbeat's answer;
        anything else is counted (``demux_unexpected_frames``)."""
        decoded = decode_frame(frame)
        if decoded is None or decoded.ip is None or not self.answered(decoded.ip.dst, now):
            self.counters.demux_unexpected_frames += 1
            return False
        return True

    def port_status(self, name: str, port: int | None, state: int = 0) -> bool:
        """The switch reported port ``name`` added or changed (its number ``port``, its
        OpenFlow ``state`` bits) or deleted (None). When the demultiplexer's port is gone
        (deleted, or its link down) or back (added, its link up again, or under another
        number), the table is opened again at its next use and the port must answer a
        probe again; any other change of it changes nothing.

        Returns:
            True when the demultiplexer's port has a new number: the entries that name
            the port (the probe's return, the clients' return entries) must be
            installed again.
        """
        if not self.enabled or name != self.port_name:
            return False
        if state & LINK_DOWN:
            port = None
        if port == self.port:
            return False
        if self._demux is not None:
            self._demux.close()
            self._demux = None
        self._answered_at = None
        LOG.info("GRE demultiplexer port %s is %s", name,
                 "gone" if port is None else f"port {port}")
        self.port = port
        return port is not None

    def _failed(self, exc: BpfError) -> None:
        self.counters.demux_errors += 1
        LOG.error("GRE demultiplexer table: %s", exc)
        if self._demux is not None:
            self._demux.close()
        self._demux = None

    def write(self, decision: DemuxEntry | DemuxForget) -> None:
        """Carry out a table decision of the core (an error is logged and counted; the
        heartbeat then finds the demultiplexer broken or not)."""
        demux = self._table()
        if demux is None:
            return
        try:
            if isinstance(decision, DemuxEntry):
                demux.set(decision.server_ip, decision.public_ip, decision.public_call_id,
                          decision.client_ip, decision.client_call_id)
            else:
                demux.remove(decision.server_ip, decision.public_ip, decision.public_call_id)
        except BpfError as exc:
            self._failed(exc)
            return
        self.counters.demux_table_writes += 1

    def prune(self, keep: set[tuple[IPv4Address, IPv4Address, int]]) -> int:
        """Delete every table entry but the probe's and those in ``keep`` (server, public
        address, public Call ID): when the demultiplexer comes back, entries whose calls
        ended while a deletion could not be written must not deliver late GRE. Returns
        how many were deleted."""
        demux = self._table()
        if demux is None:
            return 0
        wanted = {TABLE_KEY.pack(server.packed, public.packed, call_id)
                  for server, public, call_id in keep}
        wanted.add(TABLE_KEY.pack(PROBE_SERVER.packed, PROBE_PUBLIC.packed, PROBE_CALL_ID))
        deleted = 0
        try:
            for key in [k for k in demux.table.all_keys() if k not in wanted]:
                deleted += demux.table.delete(key)
        except BpfError as exc:
            self._failed(exc)
        return deleted

    def keep_only(self, decisions: Iterable[Decision]) -> int:
        """:meth:`prune` to the table entries that ``decisions`` write (the core's
        entries for the demultiplexer that came back)."""
        return self.prune({(d.server_ip, d.public_ip, d.public_call_id)
                           for d in decisions if isinstance(d, DemuxEntry)})

    def probe(self, now: float) -> bytes | None:
        """The next heartbeat's frame, to send out of :attr:`port`; None without a port.
        The probe's table entry is written each time (a new component starts empty)."""
        if self.port is None:
            return None
        demux = self._table()
        if demux is not None:
            try:
                demux.set(PROBE_SERVER, PROBE_PUBLIC, PROBE_CALL_ID, PROBE_RETURN, PROBE_CALL_ID)
            except BpfError as exc:
                self._failed(exc)
        self._sent += 1
        self.counters.demux_probes_sent += 1
        return gre_frame(b"\xff" * 6, self.gateway_mac, PROBE_SERVER, PROBE_PUBLIC,
                         PROBE_CALL_ID, _NONCE.pack(self._sent))

    def answered(self, ip_dst: IPv4Address, now: float) -> bool:
        """Whether a packet from the demultiplexer's port to ``ip_dst`` is a heartbeat's
        answer (then noted)."""
        if ip_dst != PROBE_RETURN:
            return False
        self._answered_at = now
        self.counters.demux_probes_answered += 1
        return True

    def health(self, now: float) -> bool | None:
        """The demultiplexer's new state when it changed (True: it answers again, False:
        it stopped answering), else None."""
        answered = self._answered_at
        alive = answered is not None and now - answered <= DEAD_AFTER
        if alive == self.up:
            return None
        self.up = alive
        if alive:
            self.counters.demux_up_events += 1
            LOG.info("GRE demultiplexer on port %s answers: shared pairs go to it",
                     self.port_name)
        else:
            self.counters.demux_down_events += 1
            LOG.warning("GRE demultiplexer on port %s stopped answering: shared pairs go "
                        "through the controller", self.port_name)
        return alive

    def entry_counts(self, server: IPv4Address, public: IPv4Address, public_call_id: int
                     ) -> tuple[int, int] | None:
        """Packets and bytes of a call's table entry; None without it."""
        demux = self._table()
        if demux is None:
            return None
        try:
            return demux.entry_counts(server, public, public_call_id)
        except BpfError as exc:
            self._failed(exc)
            return None

    def program_counts(self) -> dict[str, int]:
        """The program's own counters (delivered, and dropped by reason), and
        ``not_seen``: packets the switch sent out of the demultiplexer's port that the
        program never saw (lost while it was missing or stuck: the port's transmit count
        less everything the program counted; from the start of the current program's
        maps)."""
        demux = self._table()
        if demux is None:
            return {}
        try:
            counts = demux.counts()
        except BpfError as exc:
            self._failed(exc)
            return {}
        sent = port_transmitted(self.port_name)
        if sent is not None:
            counts["not_seen"] = max(0, sent - sum(counts.values()))
        return counts


def port_transmitted(port: str) -> int | None:
    """Packets sent out of a network device of this namespace (the switch's side of the
    demultiplexer's veth), None when there is no such device."""
    try:
        with open(f"/sys/class/net/{port}/statistics/tx_packets") as stats:
            return int(stats.read())
    except (OSError, ValueError):
        return None
