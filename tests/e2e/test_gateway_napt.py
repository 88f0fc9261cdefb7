"""Ordinary NAPT by the controller (``ordinary_nat = controller``): TCP and UDP of several
clients to one listener, a NAT session per flow. The datapath's NAT (the default) has its
own tests in ``test_conntrack_nat.py``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from alg.events import EntryKind
from tests.e2e.gateway_lab import (
    PUBLIC_IP,
    SERVER_IP,
    GatewayLab,
    log_records,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
PORT = 8000
SAME_PORT = 40000
N = 3
CONTROLLER = {"ordinary_nat": "controller"}


def test_tcp_and_udp_from_several_clients_with_the_same_source_port(gateway: Factory) -> None:
    gw = gateway(N, options=CONTROLLER)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")

    # All clients at once, each from local port 40000, keeping their sockets open a while
    # so that the NAT has to tell them apart.
    procs = [gw.tool(gw.client(i), "napt-client", SERVER_IP, str(PORT), "--bind-port",
                     str(SAME_PORT), "--tag", f"c{i}", "--hold", "3", text=True)
             for i in range(1, N + 1)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        results.append(json.loads(out.splitlines()[0]))
    sessions = gw.sessions()

    tcp_peers = [r["tcp"]["peer"] for r in results]
    udp_peers = [r["udp"]["peer"] for r in results]
    for i, result in enumerate(results, start=1):
        # The reply came back to the right client, with what it sent.
        assert result["tcp"]["data"] == f"tcp-c{i}"
        assert result["udp"]["data"] == f"udp-c{i}"
    # The listener saw every client from the public address, each from its own port.
    assert {p.rsplit(":", 1)[0] for p in tcp_peers + udp_peers} == {PUBLIC_IP}
    assert len(set(tcp_peers)) == N, tcp_peers
    assert len(set(udp_peers)) == N, udp_peers
    # The gateway's sessions say the same.
    for proto, peers in (("tcp", tcp_peers), ("udp", udp_peers)):
        mine = [s for s in sessions if s["proto"] == proto
                and s["remote"] == f"{SERVER_IP}:{PORT}"]
        assert sorted(s["inside"] for s in mine) == [
            f"192.168.1.{i}:{SAME_PORT}" for i in range(1, N + 1)]
        assert sorted(s["public"] for s in mine) == sorted(peers)
        assert not any(s["pptp_control"] for s in mine)
    # Each session is carried by a pair of rewrite entries on the switch.
    assert len(gw.flows(EntryKind.SESSION)) == 2 * 2 * N
    accepted = [r["peer"] for r in log_records(gw) if r["event"] == "accept"]
    assert sorted(accepted) == sorted(tcp_peers)
