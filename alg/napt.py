"""NAPT of TCP, UDP and ICMP echo: the first packet decides, flow entries carry the rest.

The first packet of an inside host's flow (a SYN for TCP) creates a session when the
policy allows it; the session's two rewrite entries go to the switch, which carries
the rest. A later packet of the session that reaches the controller is forwarded, and
puts the entries back unless they went out within :data:`REINSTALL_AFTER`. ICMP echo
has no entries (OpenFlow can neither match nor set the echo identifier): the controller
translates every echo packet. Outside never starts a session. :class:`SessionStats`
keeps what the switch reports of the sessions' entries.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from alg.codec import PPTP_PORT
from alg.config import AlgConfig
from alg.control import refusal
from alg.counters import Counters
from alg.errors import AllocationError, LimitError
from alg.events import Direction, Forward, Output, SendTcp, SessionEntries, TcpSegment, Translation
from alg.nat import NatTable, Proto

REINSTALL_AFTER = 1.0
"""Seconds after a session's entries were decided during which its packets that still
reach the controller do not decide them again: the switch has them, its datapath had
not re-evaluated its cached flows yet (which Open vSwitch does within about half a
second). Sending them again would only make it re-evaluate again."""


class Napt:
    """The NAPT decisions over a :class:`~alg.nat.NatTable`.

    Args:
        config: the policy.
        counters: the core's counters.
        nat: the table of sessions.
    """

    def __init__(self, config: AlgConfig, counters: Counters, nat: NatTable) -> None:
        self._config = config
        self._counters = counters
        self._nat = nat

    def allows(self, proto: Proto, dst_port: int) -> bool:
        """Whether the policy lets an inside host start this (``strict``: TCP/1723 only)."""
        if self._config.policy == "open":
            return True
        return proto is Proto.TCP and dst_port == PPTP_PORT

    def packet(
        self,
        direction: Direction,
        proto: Proto,
        src: tuple[IPv4Address, int],
        dst: tuple[IPv4Address, int],
        starts: bool,
        now: float,
        syn: TcpSegment | None = None,
    ) -> Output:
        """One packet that reached the controller: forward it translated, or drop it.

        Over a session limit a TCP SYN gets an RST, anything else is dropped; both are
        counted (``refused_sessions``) and logged.

        Args:
            src, dst: its addresses and ports (ICMP: the echo identifier, or 0).
            starts: it may start a session (a TCP SYN, any UDP, an echo request).
            syn: the TCP SYN, to refuse with an RST.
        """
        (src_ip, src_port), (dst_ip, dst_port) = src, dst
        out = Output()
        if direction is Direction.INBOUND:
            session = self._nat.inbound(proto, dst_ip, dst_port, src_ip, src_port)
            if session is None:
                self._counters.no_session_drops += 1
                return Output(drop_reason=f"no {proto.name} session for inbound packet")
            self._nat.touch(session.id, now)
            translation = Translation(src_ip, src_port, session.inside_ip, session.inside_port)
        else:
            session = self._nat.find(proto, src_ip, src_port, dst_ip, dst_port)
            if session is None:
                if not starts:
                    self._counters.no_session_drops += 1
                    return Output(drop_reason=f"no {proto.name} session and not a start")
                if not self.allows(proto, dst_port):
                    self._counters.policy_denied += 1
                    return Output(drop_reason=f"policy {self._config.policy} denies {proto.name}")
                try:
                    session = self._nat.outbound(proto, src_ip, src_port, dst_ip, dst_port, now)
                except LimitError as exc:
                    self._counters.refused_sessions += 1
                    out.errors.append(f"NAT session refused: {exc}")
                    out.drop_reason = "limit reached"
                    if syn is not None:
                        out.emits.append(SendTcp(Direction.INBOUND, refusal(syn)))
                    return out
                except AllocationError as exc:
                    self._counters.allocation_failures += 1
                    out.errors.append(f"NAT allocation failed: {exc}")
                    out.drop_reason = "allocation failure"
                    return out
            else:
                self._nat.touch(session.id, now)
            translation = Translation(session.public_ip, session.public_port, dst_ip, dst_port)
        if proto is not Proto.ICMP and (
            session.entries_sent is None or now - session.entries_sent >= REINSTALL_AFTER
        ):
            session.entries_sent = now
            out.decisions.append(SessionEntries(session, self._nat.idle_timeout(proto)))
        out.emits.append(Forward(direction, translation))
        return out


class SessionStats:
    """The switch's (packets, bytes) for each NAT session's entries.

    A session has two entries under one cookie, whose counts the app reports summed.

    Args:
        nat: the table of sessions, whose idle clocks the counts restart.
    """

    def __init__(self, nat: NatTable) -> None:
        self._nat = nat
        self._counts: dict[int, tuple[int, int]] = {}

    def get(self, session_id: int) -> tuple[int, int] | None:
        """(packets, bytes) the switch reported for a session's entries, if any."""
        return self._counts.get(session_id)

    def reported(self, session_id: int, packets: int, byte_count: int, now: float) -> None:
        """The switch's cumulative counts of a live session's entries: a packet count
        that grew since the last report restarts the session's idle clock."""
        if self._nat.get(session_id) is None:
            return
        before, _ = self._counts.get(session_id, (0, 0))
        self._counts[session_id] = (packets, byte_count)
        if packets != before and packets > 0:
            self._nat.touch(session_id, now)

    def removed(self, session_id: int, packets: int, byte_count: int) -> None:
        """The switch removed one of a session's entries with these counts: they leave
        the session's sum, so that the other entry's unchanged count is no growth."""
        last = self._counts.get(session_id)
        if last is not None:
            self._counts[session_id] = (max(0, last[0] - packets), max(0, last[1] - byte_count))

    def forget(self, session_id: int) -> None:
        """The session ended, or its entries go to the switch afresh."""
        self._counts.pop(session_id, None)
