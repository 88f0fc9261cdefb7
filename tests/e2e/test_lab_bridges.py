"""One controller, several bridges, with the real app: each bridge is a gateway of its own
behind the same addresses (inside 192.168.1.0/24, server 203.0.113.1, public
203.0.113.2), so the tenants' edges overlap and only their separation lets both work.

The ``gateway`` fixture builds the lab (``bridges=2``) under a name of its own and
removes it at the end; ``gw.gateway("g2")`` is gateway 2's handle (its namespaces,
bridge and REST paths under ``/pptp-alg/gateways/g2``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alg.events import EntryKind
from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, wait_for
from topo import lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

REPO = Path(__file__).resolve().parents[2]
Factory = Callable[..., GatewayLab]
PORT = 8000
SAME_PORT = 40000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "topo.lab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def records(gw: GatewayLab) -> list[dict[str, Any]]:
    path = gw.run_dir / "serve.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def exchange(gw: GatewayLab) -> dict[str, Any]:
    """One TCP and one UDP exchange from client 1 of ``gw`` to its server, from port
    40000 in every gateway; the result of ``gw_tools napt-client``."""
    (result,) = gw.run_tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--bind-port",
                            str(SAME_PORT), "--tag", gw.name, "--hold", "0", timeout=30)
    return result


def start_listener(gw: GatewayLab) -> None:
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: records(gw), 5, f"the listener in {gw.server}")


def check_separate_exchanges(gateways: list[GatewayLab]) -> None:
    """Each gateway's client reaches its own server from the public address, and each
    server hears only its own gateway's client."""
    for gw in gateways:
        result = exchange(gw)
        assert result["tcp"]["data"] == f"tcp-{gw.name}", result
        assert result["udp"]["data"] == f"udp-{gw.name}", result
        assert result["tcp"]["peer"].rsplit(":", 1)[0] == PUBLIC_IP, result
    for gw in gateways:
        heard = {r["data"] for r in records(gw) if r["event"] in ("data", "datagram")}
        assert heard == {f"tcp-{gw.name}", f"udp-{gw.name}"}, (gw.name, heard)


def test_two_gateways_with_the_same_addresses_each_carry_their_own_tcp(
    gateway: Factory,
) -> None:
    gw = gateway(1, bridges=2)
    g1, g2 = gw.gateways
    assert g1 is gw and g2 is gw.gateway("g2")
    assert (g1.bridge, g2.bridge) == (f"br-{gw.state.name}", f"br-{gw.state.name}-2")
    assert (g1.server, g2.server) == (f"{gw.state.name}-srv", f"{gw.state.name}-g2srv")
    assert g1.unit.ct_zone != g2.unit.ct_zone

    listed = g1.rest("/pptp-alg/gateways")["gateways"]
    assert [(g["name"], g["bridge"], g["connected"], g["ready"]) for g in listed] == [
        ("g1", g1.bridge, True, True), ("g2", g2.bridge, True, True)]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(gw.state.rest_url + "/pptp-alg/counters", timeout=5)
    assert refused.value.code == 404
    assert "several gateways" in json.loads(refused.value.read())["error"]

    for handle in (g1, g2):
        assert handle.flows(EntryKind.PIPELINE), handle.name
        start_listener(handle)
    check_separate_exchanges([g1, g2])
    # Each gateway's view holds its own connection alone (the datapath's, in its zone).
    for handle in (g1, g2):
        tcp = [s for s in handle.rest("/pptp-alg/sessions")
               if s["proto"] == "tcp" and s["remote"] == f"{SERVER_IP}:{PORT}"]
        assert [s["inside"] for s in tcp] == [f"192.168.1.1:{SAME_PORT}"], (handle.name, tcp)
        assert "alg" in handle.rest("/pptp-alg/counters")

    name = gw.state.name
    one = cli("status", "--name", name, "--gateway", "g2")
    assert one.returncode == 0, one.stdout + one.stderr
    assert f"bridge {g2.bridge} " in one.stdout and f"bridge {g1.bridge} " not in one.stdout
    both = cli("status", "--name", name)
    assert both.returncode == 0 and f"bridge {g2.bridge} " in both.stdout
    counters = cli("display", "--name", name, "--gateway", "g2", "counters")
    assert counters.returncode == 0, counters.stderr
    assert counters.stdout.startswith("alg:")
    unprefixed = cli("display", "--name", name, "counters")
    assert unprefixed.returncode == 1 and "404" in unprefixed.stderr


def test_restart_switch_of_gateway_2_leaves_gateway_1_alone(gateway: Factory) -> None:
    gw = gateway(1, bridges=2)
    g1, g2 = gw.gateways
    for handle in (g1, g2):
        start_listener(handle)
    before = {handle.name: handle.flows() for handle in (g1, g2)}
    state = lab.restart_switch(name=gw.state.name, gateway="g2", timeout=30)
    assert state.phase == "up"
    # Gateway 1's entries were not touched: the same lines, counters aside.
    assert len(g1.flows()) == len(before["g1"])
    assert g2.flows(EntryKind.PIPELINE)
    check_separate_exchanges([g1, g2])
    assert lab.status(name=gw.state.name, gateway="g2") is not None

    restarted = lab.restart_controller(name=gw.state.name, timeout=30)
    assert restarted.controller_pid != state.controller_pid
    for handle in (g1, g2):
        assert handle.flows(EntryKind.PIPELINE), handle.name
