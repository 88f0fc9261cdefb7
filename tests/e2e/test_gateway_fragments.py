"""GRE bigger than the link MTU through the real lab: the sender's kernel fragments it.

Two clients behind the one public address call the one server with the same Call ID
(the seed's shared pair, on the demux path as in the lab by default): every fragmented
datagram the server sends each client arrives whole (the switch steers the pair's
fragments to the controller, which reassembles, translates and fragments again), and
the clients' arrive at the server (their pair's flow entry passes fragments). One client
alone (the flow path): both ways without the controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, client_ip, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
COUNT = 40
SIZE = 3000  # GRE payload bytes: three fragments on a 1500-byte link


def counter(gw: GatewayLab, netns: str, seconds: float) -> subprocess.Popen[str]:
    """Count the big GRE datagrams that reach ``netns`` whole, per key."""
    proc = gw.popen(netns, [sys.executable, "-m", "tests.e2e.frag_tools", "count",
                            "--seconds", str(seconds), "--size", str(SIZE)], text=True)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


def send(gw: GatewayLab, netns: str, dst: str, keys: list[int]) -> None:
    proc = gw.popen(netns, [sys.executable, "-m", "tests.e2e.frag_tools", "send", dst,
                            "--count", str(COUNT), "--size", str(SIZE),
                            *(a for k in keys for a in ("--key", str(k)))], text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["sent"] == COUNT * len(keys)


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    counted: dict[str, Any] = json.loads(out.splitlines()[-1])
    return counted


def calls_up(gw: GatewayLab, clients: int) -> list[dict[str, Any]]:
    gw.pptpd()
    for i in range(1, clients + 1):
        gw.driver(gw.client(i), "--call-id", "4242", "--frames", "2", "--interval", "0.1",
                  "--hold", "40", "--tag", f"d{i}")
    return gw.wait_established(clients, 15)


def test_fragmented_gre_reaches_each_client_of_a_shared_pair_and_the_server(
        gateway: Factory) -> None:
    gw = gateway(2, gre_demux=True)
    wait_for(lambda: gw.rest("/pptp-alg/counters")["demux"]["up"], 10, "the demultiplexer")
    calls = calls_up(gw, 2)
    wait_for(lambda: {c["inbound_gre_path"] for c in gw.calls()} == {"demux"}, 5,
             "the shared pair on the demux path")
    clients = {gw.client(i): counter(gw, gw.client(i), 15) for i in (1, 2)}
    server = counter(gw, gw.server, 15)
    send(gw, gw.server, PUBLIC_IP, [c["public_call_id"] for c in calls])
    for call in calls:
        netns = next(gw.client(i) for i in (1, 2) if call["client"] == client_ip(i))
        send(gw, netns, SERVER_IP, [call["server_call_id"]])
    for netns, proc in clients.items():
        got = result(proc)
        assert got["by_key"].get("4242") == COUNT and got["damaged"] == 0, (netns, got)
    got = result(server)
    assert got["by_key"] == {str(c["server_call_id"]): COUNT for c in calls}, got
    counters = gw.counters()
    assert counters["fragments_reassembled"] >= 2 * COUNT, counters
    assert counters["fragments_overlapping"] == counters["fragments_timed_out"] == 0
    assert counters["fragments_sent"] >= 2 * COUNT * 3, counters


def test_fragmented_gre_takes_the_flow_path_both_ways(gateway: Factory) -> None:
    gw = gateway(1, gre_demux=True)
    (call,) = calls_up(gw, 1)
    wait_for(lambda: [c["inbound_gre_path"] for c in gw.calls()] == ["flow"], 5,
             "the pair on the flow path")
    client, server = counter(gw, gw.client(1), 12), counter(gw, gw.server, 12)
    send(gw, gw.server, PUBLIC_IP, [call["public_call_id"]])
    send(gw, gw.client(1), SERVER_IP, [call["server_call_id"]])
    assert result(client) == {"by_key": {"4242": COUNT}, "damaged": 0}
    assert result(server) == {"by_key": {str(call["server_call_id"]): COUNT}, "damaged": 0}
    counters = gw.counters()
    assert counters["fragments_received"] == 0, counters  # none reached the controller
