"""The GRE demultiplexer end to end: the seed's shared pair off the controller, the
component stopped mid-call, teardown and hold-down, with real pptpd and PNS drivers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, GatewayLab, client_ip, wait_for
from topo import gre_demux, lab
from topo.pns_driver import parse_events

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, OVS and BPF"),
]

Factory = Callable[..., GatewayLab]


def demux(gw: GatewayLab) -> dict[str, Any]:
    data: dict[str, Any] = gw.rest("/pptp-alg/counters")["demux"]
    return data


def summary_of(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    summaries = [e for e in parse_events(out) if e["event"] == "summary"]
    assert summaries, (out, err)
    assert proc.returncode == 0, summaries[-1]
    return summaries[-1]


def up(gw: GatewayLab) -> None:
    wait_for(lambda: demux(gw)["up"], 10, "the demultiplexer to answer its heartbeat")


def test_three_clients_with_the_same_call_id_pass_data_off_the_controller_path(
        gateway: Factory) -> None:
    gw = gateway(3, gre_demux=True)
    up(gw)
    server = gw.pptpd()
    procs = [gw.driver(gw.client(i), "--call-id", "4242", "--frames", "20", "--interval",
                       "0.1", "--hold", "1.5", "--tag", f"d{i}") for i in (1, 2, 3)]
    calls = gw.wait_established(3, 15)
    assert {c["public"] for c in calls} == {PUBLIC_IP}
    assert len({c["public_call_id"] for c in calls}) == 3
    wait_for(lambda: {c["inbound_gre_path"] for c in gw.calls()} == {"demux"}, 5,
             "the pair on the demux path")
    results = [summary_of(p) for p in procs]
    standins = {next(iter(s["received_tags"])): s for s in server.standins()
                if s["received_tags"]}
    for i, summary in enumerate(results, start=1):
        assert set(summary["gre_received_by_key"]) == {"4242"}, summary
        assert set(summary["received_tags"]) == {standins[f"d{i}"]["tag"]}, summary
        assert summary["received_tags"][standins[f"d{i}"]["tag"]] >= 3
        assert standins[f"d{i}"]["received_tags"][f"d{i}"] >= 15
    counters = gw.counters()
    assert counters["gre_controller_path"] == 0, counters
    program = demux(gw)["program"]
    assert program["demuxed"] >= 9 and program["unknown_key"] == 0, program
    assert program["not_seen"] == 0, program


def test_a_stopped_demultiplexer_hands_its_pairs_to_the_controller_mid_call(
        gateway: Factory) -> None:
    gw = gateway(2, gre_demux=True)
    up(gw)
    gw.pptpd()
    procs = [gw.driver(gw.client(i), "--call-id", "7", "--frames", "80", "--interval", "0.05",
                       "--hold", "2", "--tag", f"d{i}") for i in (1, 2)]
    gw.wait_established(2, 15)
    wait_for(lambda: demux(gw)["program"].get("demuxed", 0) >= 10, 10, "data through demux")
    gre_demux.stop_program(lab.demux_port_name(gw.state.name))
    stopped = time.monotonic()
    wait_for(lambda: not demux(gw)["up"], 5, "the app to notice")
    noticed = time.monotonic() - stopped
    wait_for(lambda: gw.counters()["gre_controller_path"] >= 4, 10, "data through the controller")
    assert {c["inbound_gre_path"] for c in gw.calls()} == {"controller"}
    results = [summary_of(p) for p in procs]
    assert all(set(r["gre_received_by_key"]) == {"7"} for r in results), results
    assert demux(gw)["demux_down_events"] == 1
    assert noticed < 3.0
    assert demux(gw)["program"]["not_seen"] > 0  # sent to the port while it was gone
    gre_demux.start_program(lab.demux_port_name(gw.state.name), lab.demux_dir(gw.state.name))
    wait_for(lambda: demux(gw)["up"], 5, "the demultiplexer back")


def test_a_released_call_ids_late_gre_is_dropped_by_the_demultiplexer(
        gateway: Factory) -> None:
    gw = gateway(2, gre_demux=True)
    up(gw)
    gw.pptpd()
    first = gw.driver(gw.client(1), "--call-id", "9", "--frames", "5", "--interval", "0.1",
                      "--hold", "8", "--tag", "d1")
    second = gw.driver(gw.client(2), "--call-id", "9", "--frames", "5", "--interval", "0.1",
                       "--hold", "1", "--tag", "d2")
    calls = gw.wait_established(2, 15)
    released = next(c["public_call_id"] for c in calls if c["client"] == client_ip(2))
    summary_of(second)
    wait_for(lambda: len(gw.established()) == 1, 10, "the second call to end")
    before = demux(gw)["program"]["unknown_key"]
    sent = gw.send_gre(gw.server, PUBLIC_IP, [released], count=5)
    wait_for(lambda: demux(gw)["program"]["unknown_key"] >= before + sent, 5,
             "the late packets dropped")
    assert gw.counters()["gre_controller_path"] == 0
    summary_of(first)
