"""The bench's pure parts: rates from counter samples, trafgen packets, tables."""

from __future__ import annotations

import pytest

from alg.codec import GRE_PROTOCOL_PPP
from bench.gre_rate import C2S, S2C, Flow, GreResult, rate, trafgen_config, watch
from bench.report import (
    first_table,
    gre_table,
    scale_table,
    sessions_goal,
    sessions_table,
    setup_table,
    tcp_table,
)
from bench.scale import ScaleResult
from bench.sessions import SessionResult
from bench.setup_latency import SetupResult


def test_rate_is_taken_over_the_middle_of_the_burst() -> None:
    stray = [(0.0, 1), (0.5, 2)]  # an ARP long before the burst
    burst = [(1.0 + i / 100, 2 + 1000 * i) for i in range(1, 101)]  # 100,000 packets/s
    assert rate(stray + burst) == pytest.approx(100_000, rel=0.01)
    assert rate([]) == 0.0
    assert rate([(1.0, 5)]) == 0.0


def test_trafgen_packets_are_enhanced_gre_with_the_calls_key() -> None:
    flow = Flow("c", "s", "192.168.1.1", "203.0.113.1", key=0x1234)
    config = trafgen_config("02:00:00:00:00:01", "02:00:00:00:00:02", flow, 64)
    assert config.startswith(
        "{ eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01), "
        "ipv4(saddr=192.168.1.1, daddr=203.0.113.1, proto=47, ttl=64, df), ")
    # key and sequence present, version 1, PPP, 64 bytes, the call's key (RFC 2637 4.1)
    assert config.endswith(
        f"c16(0x3001), c16({GRE_PROTOCOL_PPP:#06x}), c16(64), c16(4660), c32(1), "
        "fill(0x55, 64) }\n")


def test_gre_table_ranks_peers_by_delivered_rate() -> None:
    results = [
        GreResult("fast", S2C, 64, 1000, 200_000.0, 1000, 100_000.0),
        GreResult("slow", S2C, 64, 1000, 200_000.0, 100, 5_000.0),
        GreResult("slow", S2C, 64, 1000, 200_000.0, 100, 7_000.0),
        GreResult("slow", S2C, 64, 1000, 200_000.0, 100, 6_000.0),
        GreResult("fast", C2S, 1400, 1000, 90_000.0, 1000, 90_000.0),
    ]
    lines = gre_table(results).splitlines()
    assert lines[2] == "| client -> server | 1400 | fast | 90,000 | 90,000 | 1.00 | 100% |"
    assert lines[3] == "| server -> client | 64 | fast | 200,000 | 100,000 | 1.00 | 100% |"
    assert lines[4] == "| server -> client | 64 | slow | 200,000 | 6,000 | 0.06 | 10% |"
    assert gre_table([]) == ""


def test_scale_table_shows_costs_per_call_and_the_first_failure() -> None:
    held = ScaleResult("gateway", 1, 10_000, 100, 9_990, 10, 20.0, 1300.4, 0.0101, 2.08,
                       None, ["ConnectionResetError: gone"])
    linux = ScaleResult("linux", 1, 10_000, 100, 10_000, 0, 1.0, None, None, None, 0.01, [])
    text = scale_table([linux, held])
    assert "| gateway | 1 | 10,000 | 9,990 | 20.0 | 500 | 1,300 | 0.010 | 2.08 | - |" in text
    assert "| linux | 1 | 10,000 | 10,000 | 1.0 | 10,000 | - | - | - | 0.010 |" in text
    assert text.endswith(
        "First failure: gateway (1 public, 10000 calls): ConnectionResetError: gone")


def test_a_stray_packet_before_a_slow_burst_does_not_end_the_count() -> None:
    """Under load trafgen may start a second after the counter: a stray packet (ARP)
    before it used to open the quiet window that ended the count, so a burst could be
    counted as nothing."""
    clock = [0.0]

    def counter() -> int:
        t = clock[0]
        stray = 1 if t >= 0.1 else 0
        burst = min(1000, int((t - 2.0) * 10_000)) if t >= 2.0 else 0
        return 5 + stray + burst

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    samples = watch(counter, lambda: clock[0] >= 2.2, clock=lambda: clock[0], sleep=sleep)
    assert samples[-1][1] == 1001
    assert rate(samples) == pytest.approx(10_000, rel=0.1)


def test_no_calls_on_existing_connections_leave_their_figures_empty() -> None:
    """``--existing 0``: every peer's run on existing connections asks for no call, so
    none sets one up and the best rate is zero, which the ratios used to divide by."""
    results = [SetupResult(peer, "new", 20, 1, 0.5, 0, [0.001] * 10 + [0.002] * 10)
               for peer in ("gateway", "no NAT")]
    results += [SetupResult(peer, "existing", 0, 8, 0.004, 0, [])
                for peer in ("gateway", "no NAT")]
    lines = setup_table(results).splitlines()
    assert lines[2:] == [
        "| new connections, one at a time | gateway | 1500 | 2000 | 1.00 | 40 | 1.00 | 0 |",
        "| new connections, one at a time | no NAT | 1500 | 2000 | 1.00 | 40 | 1.00 | 0 |",
        "| existing connections, 8 at a time | gateway | - | - | - | - | - | 0 |",
        "| existing connections, 8 at a time | no NAT | - | - | - | - | - | 0 |",
    ]


def test_a_peer_that_set_up_nothing_has_no_latency_and_does_not_spoil_the_best() -> None:
    failed = SetupResult("bare Ryu", "new", 10, 1, 2.0, 10, [])
    instant = SetupResult("linux", "new", 10, 1, 0.0, 0, [0.001] * 10)
    lines = setup_table([failed, SetupResult("gateway", "new", 10, 1, 1.0, 0, [0.002] * 10),
                         instant]).splitlines()
    assert lines[2:] == [
        "| new connections, one at a time | linux | 1000 | 1000 | 1.00 | - | - | 0 |",
        "| new connections, one at a time | gateway | 2000 | 2000 | 2.00 | 10 | 1.00 | 0 |",
        "| new connections, one at a time | bare Ryu | - | - | - | 0 | 0.00 | 10 |",
    ]


def test_tcp_table_with_no_connections_or_none_answered() -> None:
    assert tcp_table([SetupResult("gateway", "tcp", 0, 8, 0.003, 0, [])]).splitlines()[2:] == [
        "| gateway | - | - | - | - | 0 |"]
    refused = [SetupResult(p, "tcp", 5, 8, 0.5, 5, []) for p in ("gateway", "linux")]
    assert tcp_table(refused).splitlines()[2:] == [
        "| gateway | - | - | 0 | - | 5 |", "| linux | - | - | 0 | - | 5 |"]


def test_gre_table_with_nothing_delivered_or_sent() -> None:
    lines = gre_table([GreResult("gateway", S2C, 64, 1000, 200_000.0, 0, 0.0),
                       GreResult("linux", S2C, 64, 0, 0.0, 0, 0.0)]).splitlines()
    assert lines[2:] == ["| server -> client | 64 | gateway | 200,000 | 0 | - | 0% |",
                         "| server -> client | 64 | linux | 0 | 0 | - | - |"]


def test_scale_table_without_calls_or_time_has_no_rate() -> None:
    none = ScaleResult("gateway", 1, 0, 100, 0, 0, 0.2, None, None, None, None, [])
    instant = ScaleResult("linux", 1, 10, 100, 10, 0, 0.0, None, None, None, 0.5, [])
    text = scale_table([none, instant])
    assert "| gateway | 1 | 0 | 0 | 0.2 | - | - | - | - | - |" in text
    assert "| linux | 1 | 10 | 10 | 0.0 | - | - | - | - | 0.500 |" in text


def _run(peer: str, proto: str, sessions: int, seconds: float, latency: float,
         packet_ins: int | None = None, cpu: float | None = None, window: float = 1.0,
         failed: int = 0, first: bool = False) -> SessionResult:
    return SessionResult(peer, proto, sessions, 8, seconds, failed,
                         [latency] * (sessions - failed), window, packet_ins, cpu, first)


def test_sessions_table_ranks_peers_and_divides_by_the_conntrack_peer() -> None:
    results = [
        _run("gateway", "tcp", 1000, 2.0, 0.01, packet_ins=2500, cpu=1.5, window=2.5),
        _run("ovs-conntrack", "tcp", 1000, 0.5, 0.002),
        _run("gateway-conntrack", "tcp", 1000, 0.625, 0.003, packet_ins=0, cpu=0.05),
        _run("gateway-conntrack", "udp", 1000, 0.25, 0.001, packet_ins=0, cpu=0.0),
        _run("ovs-conntrack", "udp", 1000, 0.2, 0.001),
        # the host's first sessions are not in this table
        _run("gateway-conntrack", "tcp", 8, 1.0, 1.02, packet_ins=11, first=True),
    ]
    lines = sessions_table(results).splitlines()
    assert lines[0].startswith("| sessions | peer | sessions/s | ratio to ovs-conntrack |")
    assert lines[2:] == [
        "| TCP | ovs-conntrack | 2,000 | 1.00 | 2,000 | - | - | - | - | 0 |",
        "| TCP | gateway-conntrack | 1,600 | 0.80 | 3,000 | 0 | 0.0000 | 50 | 5% | 0 |",
        "| TCP | gateway | 500 | 0.25 | 10,000 | 2,500 | 2.5000 | 1,500 | 60% | 0 |",
        "| UDP | ovs-conntrack | 5,000 | 1.00 | 1,000 | - | - | - | - | 0 |",
        "| UDP | gateway-conntrack | 4,000 | 0.80 | 1,000 | 0 | 0.0000 | 0 | 0% | 0 |",
    ]
    assert sessions_goal(results) == (
        "Goal: gateway-conntrack at least 0.90 times ovs-conntrack's new sessions per "
        "second (median of the rounds' ratios): TCP 0.80 (not met), UDP 0.80 (not met).")


def test_sessions_figures_are_medians_over_rounds_and_the_goal_pairs_rounds() -> None:
    results = []
    for seconds, count, failed in ((0.5, 3, 10), (0.4, 0, 0), (1.0, 0, 0)):
        results += [_run("gateway-conntrack", "tcp", 1000, seconds, 0.002, packet_ins=count),
                    _run("ovs-conntrack", "tcp", 1000, 0.5, 0.002, failed=failed)]
    assert sessions_table(results).splitlines()[2:] == [
        "| TCP | gateway-conntrack | 2,000 | 1.00 | 2,000 | 3 | 0.0000 | - | - | 0 |",
        "| TCP | ovs-conntrack | 2,000 | 1.00 | 2,000 | - | - | - | - | 10 |",
    ]
    # rounds: 2000 / 1980, 2500 / 2000, 1000 / 2000
    assert sessions_goal(results).endswith("TCP 1.01 (met, rounds 0.50 to 1.25).")


def test_sessions_without_the_conntrack_peer_or_anything_answered() -> None:
    results = [_run("gateway", "udp", 100, 1.0, 0.001, failed=100),
               _run("linux", "udp", 0, 0.01, 0.001)]
    assert sessions_table(results).splitlines()[2:] == [
        "| UDP | gateway | 0 | - | - | - | - | - | - | 100 |",
        "| UDP | linux | - | - | - | - | - | - | - | 0 |",
    ]
    assert sessions_goal(results) == ""
    failed = [_run("gateway-conntrack", "udp", 100, 1.0, 0.001, failed=100),
              _run("ovs-conntrack", "udp", 100, 0.1, 0.001)]
    assert sessions_goal(failed).endswith("UDP 0.00 (not met).")
    assert sessions_goal([failed[1]]).endswith(": UDP not measured.")
    assert sessions_table([]) == ""


def test_first_table_shows_the_slowest_of_the_hosts_first_sessions() -> None:
    results = [
        SessionResult("gateway-conntrack", "tcp", 8, 8, 1.03, 0, [0.006] + [1.02] * 7,
                      1.2, 11, 0.01, True),
        _run("ovs-conntrack", "tcp", 8, 0.01, 0.003, first=True),
        _run("ovs-conntrack", "tcp", 1000, 0.5, 0.002),
        _run("gateway-conntrack", "tcp", 8, 0.03, 0.024, packet_ins=5, first=True),
        _run("ovs-conntrack", "tcp", 8, 1.0, 0.003, failed=8, first=True),
    ]
    assert first_table(results).splitlines()[2:] == [
        "| gateway-conntrack | TCP, 8 at once | 1,020,000 / 24,000 | 11 / 5 | 0 |",
        "| ovs-conntrack | TCP, 8 at once | 3,000 / - | - / - | 8 |",
    ]
    assert first_table(results[2:3]) == ""
