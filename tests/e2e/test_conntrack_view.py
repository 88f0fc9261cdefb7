"""The operator's view with ``ordinary_nat = conntrack``: REST and the display tool show
an inside host's TCP connection from the datapath's connection table, with the public
address and port the tracker gave it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, client_ip, wait_for
from topo import display

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
PORT = 8000
BIND_PORT = 40000
PORT_MIN = 1024
BLOCK = 1024
"""The first inside host's block of public ports (``ct_ports_per_host``, default)."""
CONNTRACK = {"ordinary_nat": "conntrack", "ct_zone": "4271"}


def test_rest_shows_a_tcp_connection_of_the_datapath_with_its_public_address(
        gateway: Factory) -> None:
    gw = gateway(1, options=CONNTRACK)
    log = gw.run_dir / "serve.log"
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(log))
    wait_for(lambda: log.exists() and log.read_text(), 5, "the listener in srv")
    client = gw.tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--bind-port",
                     str(BIND_PORT), "--tag", "v", "--hold", "30", text=True)
    assert client.stdout is not None
    result = json.loads(client.stdout.readline())
    peer_ip, peer_port = result["tcp"]["peer"].rsplit(":", 1)
    assert peer_ip == PUBLIC_IP

    inside = f"{client_ip(1)}:{BIND_PORT}"

    def shown() -> dict[str, Any] | None:
        sessions: list[dict[str, Any]] = gw.rest("/pptp-alg/sessions")
        mine = [s for s in sessions if s["by"] == "datapath" and s["proto"] == "tcp"
                and s["inside"] == inside]
        return mine[0] if mine else None

    session = wait_for(shown, 10, "the connection in REST")
    assert session["public"] == f"{PUBLIC_IP}:{peer_port}"
    assert session["remote"] == f"{SERVER_IP}:{PORT}"
    assert PORT_MIN <= int(peer_port) < PORT_MIN + BLOCK
    assert session["state"] == "ESTABLISHED" and session["left_seconds"] > 0
    assert gw.sessions() == []  # the controller has none of its own

    status = gw.rest("/pptp-alg/datapath")
    assert status["ordinary_nat"] == "conntrack"
    assert status["datapath"]["available"] is True and status["datapath"]["zone"] == 4271
    assert status["datapath"]["connections"] >= 2  # the TCP connection and the UDP one
    table = display.show(gw.state.rest_url, "session-table")
    assert (f"   tcp  VPN:public --> public {inside}[{PUBLIC_IP}:{peer_port}] --> "
            f"{SERVER_IP}:{PORT}") in table.splitlines()
    listed = display.show(gw.state.rest_url, "sessions").splitlines()
    assert any(line.split()[:4] == ["datapath", "tcp", inside, f"{PUBLIC_IP}:{peer_port}"]
               for line in listed), listed
