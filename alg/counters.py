"""What the core counts: every refusal and every translation, by name, each counter with
its help text (what it counts, as ``/metrics`` says it)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

HELP = "help"
"""The key of a counter's help text in its field's metadata."""


def counter(text: str) -> int:
    """A counter of a :class:`CounterSet` dataclass: zero at first, ``text`` its help."""
    return field(default=0, metadata={HELP: text})


class CounterSet:
    """A dataclass of named counters, each declared with :func:`counter`."""

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each counter's help text by name (empty for one declared without)."""
        return {f.name: f.metadata.get(HELP, "")
                for f in fields(cls)}  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def reset(self) -> None:
        """Every counter back to zero, in place: whoever holds this set sees it."""
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, 0)


@dataclass
class Counters(CounterSet):
    """What the core has counted since it started."""

    calls_set_up: int = counter(
        "PPTP calls whose data channel opened: Outgoing-Call-Reply connected, or "
        "Incoming-Call-Connected passed")
    call_ids_translated: int = counter("PPTP control messages whose Call ID the gateway rewrote")
    call_ids_changed: int = counter(
        "PPTP calls given a public Call ID other than the client's own (another call of the pair "
        "had it)")
    allocation_failures: int = counter(
        "New NAT sessions, control connections and calls refused because no public port or no "
        "public Call ID was free (a call's control connection is reset)")
    malformed_messages: int = counter(
        "PPTP control connections reset for a control message that could not be parsed")
    truncated_messages: int = counter(
        "PPTP control connections reset for a control message cut short by a FIN")
    unexpected_messages: int = counter(
        "PPTP control connections reset for a message that its side may not send (RFC 2637 "
        "roles)")
    unknown_call_ids: int = counter(
        "PPTP control messages naming a Call ID of no call of their control connection")
    connections_reset: int = counter(
        "PPTP control connections the gateway reset (a message it could not follow, a refused "
        "call, an allocation failure)")
    retransmitted_segments: int = counter(
        "Retransmissions passed on PPTP control connections: segment parts repeating bytes "
        "already forwarded")
    buffer_limit_drops: int = counter(
        "PPTP control segments whose bytes would pass max_buffer (the bytes dropped, or the "
        "connection reset)")
    gre_unknown_dropped: int = counter(
        "GRE packets at the controller that match no call and no ALG-off binding, dropped")
    gre_malformed: int = counter(
        "GRE packets at the controller whose header could not be parsed, dropped")
    gre_controller_path: int = counter(
        "GRE packets of PPTP calls translated by the controller (the controller path)")
    policy_denied: int = counter(
        "Packets from inside dropped because the policy forbids the session they would start")
    no_session_drops: int = counter(
        "Packets dropped for want of a session: from outside with none, or from inside neither "
        "in one nor starting one")
    out_of_window_drops: int = counter("PPTP control segments outside the TCP window, dropped")
    challenge_acks: int = counter(
        "Challenge ACKs sent for a reset on a PPTP control connection that was in the window but "
        "not exact (RFC 5961)")
    syns_on_open_connections: int = counter(
        "SYNs with a new sequence number on a live PPTP control connection's endpoints, passed "
        "on with the connection kept (RFC 5961)")
    connections_reopened: int = counter(
        "PPTP control connections ended because the server acknowledged the client's new SYN (a "
        "new connection on the same NAT session)")
    refused_calls: int = counter(
        "PPTP calls refused at a limit (max_calls, max_calls_per_host, max_calls_per_connection, "
        "a host's share of the Call IDs); the control connection is reset")
    calls_refused_cut_off: int = counter(
        "PPTP calls refused because new calls are stopped: the controller is master but "
        "its store (etcd) does not answer, so nothing may be handed out unrecorded; the "
        "control connection is reset")
    refused_connections: int = counter(
        "PPTP control connections refused at a limit (per host, unfinished handshakes, NAT "
        "sessions)")
    refused_sessions: int = counter(
        "NAT sessions refused at a limit (max_sessions, max_sessions_per_host)")
    hosts_bound: int = counter(
        "Inside hosts given a public address and a block of ports for the connection tracker")
    """Inside hosts given an address and a block of ports for the connection tracker
    (``alg.hostnat``)."""
    hosts_refused: int = counter(
        "Inside hosts refused for want of a free block of ports on their public address")
    """Inside hosts refused for want of a free block of ports on their address."""
    resync_probes: int = counter(
        "Probes sent on PPTP control connections restored after a restart, until their place in "
        "the stream is known again (their data dropped meanwhile)")
    restore_skipped: int = counter(
        "Stored records left out at a restore: not a state this gateway could have made, or of a "
        "session or connection left out")
    restore_records_rejected: int = counter(
        "Stored records left out at a restore for a value of the wrong type or out of range "
        "(their rows removed)")
    """Stored records left out at a restore for a value of the wrong type or out of range
    (``alg.snapshot``); the store removes their rows."""
    restore_failures: int = counter(
        "Restores that failed: the gateway started without its saved state")
    """Restores that failed all the same: the gateway started without its saved state."""
    icmp_errors_translated: int = counter(
        "ICMP errors about a flow of the gateway, translated and sent on")
    icmp_errors_unmatched: int = counter("ICMP errors quoting no flow of the gateway, dropped")
    icmp_malformed: int = counter("ICMP errors whose quoted packet could not be parsed, dropped")
    icmp_unsupported: int = counter(
        "ICMP messages of a type the gateway does not translate, dropped")
    icmp_rate_limited: int = counter(
        "ICMP errors (Time Exceeded, fragmentation needed) not sent for their rate limit")
    icmp_martians: int = counter(
        "ICMP errors from outside dropped for a source no outside router can have (inside, "
        "loopback, multicast, broadcast or the gateway's own address)")
    """ICMP errors from outside dropped for a source no outside router can have (an inside,
    loopback, multicast or broadcast address, or the gateway's own; ``alg.icmp``)."""
    icmp_sources_refused: int = counter(
        "Time Exceeded errors not sent because the table of per-source budgets was full")
    """Time Exceeded not sent because the table of per-source budgets was full of budgets
    in use."""
    time_exceeded_sent: int = counter(
        "ICMP Time Exceeded errors sent about packets whose TTL ran out")
    fragments_received: int = counter(
        "IP fragments of GRE or of PPTP control segments taken for reassembly")
    """IP fragments of GRE or of control segments taken for reassembly (``alg.defrag``)."""
    fragments_reassembled: int = counter("Datagrams put together whole from their fragments")
    """Datagrams put together whole from their fragments."""
    fragments_malformed: int = counter(
        "IP fragments refused as malformed (empty, misaligned, beyond 65,535 bytes, or "
        "contradicting their datagram's end)")
    """Fragments refused: empty, not a multiple of 8 bytes before the last, beyond 65,535
    bytes, or an end that contradicts the datagram's (which drops the datagram)."""
    fragments_duplicate: int = counter("IP fragments dropped as exact duplicates of one held")
    """Fragments dropped as exact duplicates of one held (the datagram goes on)."""
    fragments_overlapping: int = counter(
        "Datagrams dropped because two of their fragments overlapped (RFC 5722)")
    """Datagrams dropped because two of their fragments overlapped (RFC 5722)."""
    fragments_of_dropped: int = counter("IP fragments of a datagram already dropped, dropped")
    """Fragments that came for a datagram already dropped, within its time limit."""
    fragments_too_many: int = counter(
        "Datagrams dropped at more than fragments_per_datagram fragments")
    """Datagrams dropped at more than ``fragments_per_datagram`` fragments."""
    fragments_timed_out: int = counter("Datagrams dropped still incomplete at fragment_timeout")
    """Datagrams still incomplete at ``fragment_timeout``."""
    fragments_evicted: int = counter(
        "Datagrams dropped, oldest first, to stay within fragment_memory or "
        "fragment_memory_per_source")
    """Datagrams dropped, oldest first, to make room within ``fragment_memory`` or
    ``fragment_memory_per_source``."""
    fragments_memory_drops: int = counter(
        "IP fragments refused because their datagram alone would pass a memory bound")
    """Fragments refused because their datagram alone would pass a memory bound."""
    fragments_sent: int = counter(
        "IP fragments the controller sent, of datagrams bigger than the MTU")
    """Fragments the controller sent, of datagrams bigger than ``mtu``."""
    fragmentation_needed_sent: int = counter(
        "ICMP fragmentation-needed errors sent about datagrams bigger than the MTU with DF set "
        "(RFC 1191)")
    """ICMP fragmentation-needed errors sent about datagrams bigger than ``mtu`` with DF
    set (RFC 1191)."""
