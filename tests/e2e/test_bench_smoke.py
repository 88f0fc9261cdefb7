"""The bench still runs end to end (smoke runs: small counts; what it measures is not
checked here, only that every peer answered every call and every figure has its rows)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.__main__ import main
from topo.etcd_cluster import etcd_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]


def test_the_bench_runs_every_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--new", "20", "--pptpd", "5", "--existing", "40", "--tcp", "40", "--gre", "0",
                 "--scale", "",
                 "--rounds", "1", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "latest.json").read_text())["calls"]
    peers = {(r["mode"], r["peer"]) for r in results}
    every = ("no NAT", "linux", "plain OVS", "bare Ryu", "gateway")
    assert peers == {(m, p) for m in ("pptpd", "new", "new-parallel", "tcp") for p in every} | {
        ("existing", p) for p in every if p != "linux"}
    assert all(r["failed"] == 0 and r["median_us"] > 0 for r in results), results
    assert "| new connections, one at a time | gateway |" in table
    assert "| new connections, one at a time, real pptpd | gateway |" in table
    assert "| new connections, 8 at a time | linux |" in table
    assert "| existing connections, 8 at a time | bare Ryu |" in table
    assert "connections/s" in table
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "latest.md").read_text().strip().endswith(table.strip().splitlines()[-1])
    sessions = json.loads((tmp_path / "latest.json").read_text())["sessions"]
    figure6 = (*every, "ovs-conntrack", "gateway-conntrack")
    assert {(r["proto"], r["peer"], r["first"]) for r in sessions} == {
        (proto, p, False) for proto in ("tcp", "udp") for p in figure6} | {
        ("tcp", p, True) for p in figure6}
    assert all(r["failed"] == 0 and r["answered"] == r["sessions"] for r in sessions), sessions
    apps = {r["peer"] for r in sessions if r["packet_ins"] is not None}
    controllers = {r["peer"] for r in sessions if r["cpu_seconds"] is not None}
    assert apps == {"gateway", "gateway-conntrack"}
    assert controllers == {"gateway", "gateway-conntrack", "bare Ryu"}
    assert "| TCP | gateway-conntrack |" in table and "| UDP | ovs-conntrack | " in table
    assert "Goal: gateway-conntrack at least 0.90 times ovs-conntrack's" in table


def test_the_bench_measures_gre_and_scale_through_the_gateway(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--peers", "gateway", "--new", "5", "--pptpd", "0", "--existing", "5",
                 "--tcp", "5", "--gre", "3000", "--scale", "200", "--rounds", "1",
                 "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    data = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["peer"], r["direction"], r["payload"]) for r in data["packets"]}
    assert rows == {(peer, direction, size)
                    for peer in ("gateway, flow path", "gateway, shared pair")
                    for direction in ("client -> server", "server -> client")
                    for size in (64, 1400)}
    assert all(r["sent"] >= 3000 and r["delivered"] > 0 for r in data["packets"]), data
    assert [(r["peer"], r["public_ips"], r["held"], r["failed"]) for r in data["scale"]] == [
        ("gateway", 1, 200, 0), ("gateway", 4, 200, 0)]
    assert all(r["memory_per_call"] is not None and r["packet_ins_per_call"] > 0
               for r in data["scale"]), data["scale"]
    assert "| server -> client | 1400 | gateway, shared pair |" in table
    assert "| gateway | 4 | 200 | 200 |" in table


def test_the_two_bridges_bench_measures_each_way(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bridges

    assert bridges.main(["--calls", "10", "--rounds", "1", "--rate", "5000",
                         "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "bridges.json").read_text())
    assert set(result["ways"]) == {"quiet", "flood on g1", "flood on g1, through g1"}
    assert all(way["failed"] == 0 and way["median_us"] > 0 for way in result["ways"].values())
    assert result["ways"]["quiet"]["ratio_to_quiet"] == 1.0
    assert result["g1_packet_ins_per_second"] > 0
    assert "| flood on g1 |" in table
    assert (tmp_path / "bridges.md").read_text().strip() == table.strip()


@pytest.mark.skipif(etcd_binary() is None, reason="no etcd binary (Debian's etcd-server)")
def test_the_failover_bench_measures_both_stores_and_a_failover(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import failover

    assert failover.main(["--calls", "5", "--rounds", "1", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "failover.json").read_text())
    assert set(result["setup"]) == {"sqlite", "etcd"}
    assert all(s["failed"] == 0 and s["median_us"] > 0 for s in result["setup"].values())
    [one] = result["failovers"]
    assert one["result"] == 1 and 0 < one["new_master_s"] <= one["segment_passed_s"]
    assert result["failed_calls_in_gap"] == 0
    assert (tmp_path / "failover.md").read_text().strip() == table.strip()
