"""What the core counts: every refusal and every translation, by name."""

from __future__ import annotations

from dataclasses import dataclass, fields


class CounterSet:
    """A dataclass of named counters."""

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


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
    gre_slow_path: int = 0
    policy_denied: int = 0
    no_session_drops: int = 0
    out_of_window_drops: int = 0
    challenge_acks: int = 0
    syns_on_open_connections: int = 0
    connections_reopened: int = 0
    refused_calls: int = 0
    refused_connections: int = 0
    refused_sessions: int = 0
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
