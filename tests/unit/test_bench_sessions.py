"""Figure 6's pure parts: the controller's CPU time from /proc, a run's figures, the UDP
client's ports, the conntrack peer's flows."""

from __future__ import annotations

import asyncio

import pytest

from bench import udp_peers
from bench.sessions import SessionResult, cpu_seconds
from bench.setup_latency import SetupResult
from bench.topologies import conntrack_flows

STAT = ("4242 (ryu manager) S 1 4242 4242 0 -1 4194560 9157 0 0 0 1234 567 0 0 20 0 1 0 "
        "123 456 789")


def test_cpu_time_is_utime_and_stime_whatever_the_command_name() -> None:
    assert cpu_seconds(STAT, 100) == pytest.approx(18.01)
    assert cpu_seconds(STAT.replace("(ryu manager)", "(a) b (c))"), 100) == pytest.approx(18.01)
    with pytest.raises(ValueError, match="too few fields"):
        cpu_seconds("4242 (ryu) S 1 2", 100)


def test_a_runs_figures_per_session_and_as_figure_4() -> None:
    run = SessionResult("gateway", "tcp", 100, 8, 0.5, 2, [0.001] * 97 + [0.004], 0.8,
                        250, 0.2)
    assert run.answered == 98
    assert run.per_second == pytest.approx(196)
    assert run.median_us == pytest.approx(1000)
    assert run.slowest_us == pytest.approx(4000)
    assert run.packet_ins_per_session == pytest.approx(2.5)
    assert run.cpu_us_per_session == pytest.approx(2000)
    assert run.cpu_share == pytest.approx(0.25)
    assert run.as_setup() == SetupResult("gateway", "tcp", 100, 8, 0.5, 2, run.latencies)
    data = run.as_dict()
    assert "latencies" not in data
    assert data["figure"] == "sessions" and data["first"] is False
    none = SessionResult("ovs-conntrack", "udp", 0, 8, 0.0, 0, [])
    assert (none.per_second, none.median_us, none.slowest_us, none.packet_ins_per_session,
            none.cpu_us_per_session, none.cpu_share) == (None,) * 6


def test_the_udp_client_never_passes_the_last_port() -> None:
    last = udp_peers.LAST_PORT - udp_peers.FIRST_PORT + 1
    with pytest.raises(ValueError, match="pass 65535"):
        asyncio.run(udp_peers.client("192.0.2.1", last + 1, 8))
    with pytest.raises(ValueError):
        asyncio.run(udp_peers.client("192.0.2.1", -1, 8))


def test_the_conntrack_peer_sends_out_only_what_the_tracker_translated() -> None:
    flows = conntrack_flows(77, "192.168.1.1", "02:00:00:00:01:01", "02:00:00:00:01:64")
    commit = [f for f in flows if "commit" in f]
    assert commit == ["table=1,priority=200,ct_state=+trk+new-inv-snat,ip,nw_src=192.168.1.1,"
                      "actions=ct(commit,zone=77,nat(src=203.0.113.2:1024-65535),table=2)"]
    # a new connection already translated (a second datagram before the answer) passes
    assert "table=1,priority=100,ct_state=+trk+new+snat-inv,ip,actions=goto_table:2" in flows
    out = [f for f in flows if "output:2" in f]
    assert len(out) == 1 and "table=2," in out[0] and "ct_state=+trk+snat," in out[0]
    assert all("zone=77" in f for f in flows if "ct(" in f)
    assert {f.split(",")[0] for f in flows if f.endswith("actions=drop")} == {
        "table=0", "table=1", "table=2", "table=3"}
