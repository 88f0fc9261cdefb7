"""What the core counts: every refusal and every translation, by name."""

from __future__ import annotations

from dataclasses import dataclass, fields


class CounterSet:
    """A dataclass of named counters."""

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

    calls_set_up: int = 0
    call_ids_translated: int = 0
    call_ids_changed: int = 0
    allocation_failures: int = 0
    malformed_messages: int = 0
    truncated_messages: int = 0
    unexpected_messages: int = 0
    unknown_call_ids: int = 0
    connections_reset: int = 0
    retransmitted_segments: int = 0
    buffer_limit_drops: int = 0
    gre_unknown_dropped: int = 0
    gre_malformed: int = 0
    gre_controller_path: int = 0
    policy_denied: int = 0
    no_session_drops: int = 0
    out_of_window_drops: int = 0
    challenge_acks: int = 0
    syns_on_open_connections: int = 0
    connections_reopened: int = 0
    refused_calls: int = 0
    refused_connections: int = 0
    refused_sessions: int = 0
    hosts_bound: int = 0
    """Inside hosts given an address and a block of ports for the connection tracker
    (``alg.hostnat``)."""
    hosts_refused: int = 0
    """Inside hosts refused for want of a free block of ports on their address."""
    resync_probes: int = 0
    restore_skipped: int = 0
    restore_records_rejected: int = 0
    """Stored records left out at a restore for a value of the wrong type or out of range
    (``alg.snapshot``); the store removes their rows."""
    restore_failures: int = 0
    """Restores that failed all the same: the gateway started without its saved state."""
    icmp_errors_translated: int = 0
    icmp_errors_unmatched: int = 0
    icmp_malformed: int = 0
    icmp_unsupported: int = 0
    icmp_rate_limited: int = 0
    icmp_martians: int = 0
    """ICMP errors from outside dropped for a source no outside router can have (an inside,
    loopback, multicast or broadcast address, or the gateway's own; ``alg.icmp``)."""
    icmp_sources_refused: int = 0
    """Time Exceeded not sent because the table of per-source budgets was full of budgets
    in use."""
    time_exceeded_sent: int = 0
    fragments_received: int = 0
    """IP fragments of GRE or of control segments taken for reassembly (``alg.defrag``)."""
    fragments_reassembled: int = 0
    """Datagrams put together whole from their fragments."""
    fragments_malformed: int = 0
    """Fragments refused: empty, not a multiple of 8 bytes before the last, beyond 65,535
    bytes, or an end that contradicts the datagram's (which drops the datagram)."""
    fragments_duplicate: int = 0
    """Fragments dropped as exact duplicates of one held (the datagram goes on)."""
    fragments_overlapping: int = 0
    """Datagrams dropped because two of their fragments overlapped (RFC 5722)."""
    fragments_of_dropped: int = 0
    """Fragments that came for a datagram already dropped, within its time limit."""
    fragments_too_many: int = 0
    """Datagrams dropped at more than ``fragments_per_datagram`` fragments."""
    fragments_timed_out: int = 0
    """Datagrams still incomplete at ``fragment_timeout``."""
    fragments_evicted: int = 0
    """Datagrams dropped, oldest first, to make room within ``fragment_memory`` or
    ``fragment_memory_per_source``."""
    fragments_memory_drops: int = 0
    """Fragments refused because their datagram alone would pass a memory bound."""
    fragments_sent: int = 0
    """Fragments the controller sent, of datagrams bigger than ``mtu``."""
    fragmentation_needed_sent: int = 0
    """ICMP fragmentation-needed errors sent about datagrams bigger than ``mtu`` with DF
    set (RFC 1191)."""
