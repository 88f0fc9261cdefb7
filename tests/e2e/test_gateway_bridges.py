"""One controller, two bridges, the same addresses and Call IDs on both: real pptp-linux
and the project's PNS driver through each gateway, each real pptpd seeing only its own
gateway's calls through its own GRE demultiplexer, and one bridge restarting while the
other carries its calls."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import (
    OCRQ,
    PPTP_BPF,
    PUBLIC_IP,
    GatewayLab,
    client_ip,
    wait_for,
)
from topo import lab
from topo.peers import PptpClient, PptpServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
CALL_ID = 4242


def received(server: PptpServer, client: PptpClient) -> tuple[int, int]:
    """PPP frames the server's stand-ins and the pptp-linux client have heard so far."""
    return (sum(s["received"] for s in server.standins()),
            sum(client.received_tags().values()))


def test_two_bridges_with_the_same_addresses_and_call_ids_stay_apart(
        gateway: Factory) -> None:
    gw = gateway(2, bridges=2, gre_demux=True)
    g1, g2 = gw.gateways
    assert (g1.name, g2.name) == ("g1", "g2") and g1.bridge != g2.bridge
    captures = {g.name: g.capture(g.server, f"{g.name}srv", PPTP_BPF) for g in (g1, g2)}
    servers = {g.name: g.pptpd() for g in (g1, g2)}
    linux = {g.name: g.pptp_client(g.client(1), f"{g.name}c1") for g in (g1, g2)}
    drivers: dict[str, Any] = {}
    for g in (g1, g2):
        drivers[g.name] = g.repl(g.client(2))
        drivers[g.name]("start")
        assert drivers[g.name]("call", call_id=CALL_ID)["fields"]["result"] == 1

    def flowing() -> bool:
        return all(len(servers[g.name].standins()) == 2
                   and min(received(servers[g.name], linux[g.name])) >= 3 for g in (g1, g2))

    wait_for(flowing, 30, "PPP frames both ways through both gateways")

    for g in (g1, g2):
        calls = g.established()
        assert sorted(c["client"] for c in calls) == [client_ip(1), client_ip(2)]
        assert {c["public"] for c in calls} == {PUBLIC_IP}
        driven = next(c for c in calls if c["client"] == client_ip(2))
        # Each gateway is a NAT domain of its own: the other's 4242 takes nothing here.
        assert driven["client_call_id"] == driven["public_call_id"] == CALL_ID
        ((call_id, _peer),) = linux[g.name].calls()
        assert next(c for c in calls if c["client"] == client_ip(1))[
            "client_call_id"] == call_id
        # Two calls on one (server, public address) pair: each gateway's own
        # demultiplexer takes the server's GRE.
        assert {c["inbound_gre_path"] for c in calls} == {"demux"}, calls
        demux = g.rest("/pptp-alg/counters")["demux"]
        assert demux["up"] and demux["program"]["demuxed"] > 0, demux

    # Each real server saw its own gateway's calls and no other.
    public_ids = {g.name: sorted(c["public_call_id"] for c in g.calls()) for g in (g1, g2)}
    for g in (g1, g2):
        captures[g.name].stop()
        messages = captures[g.name].pptp_messages()
        assert sorted(m["call_id"] for m in messages if m["type"] == OCRQ) == public_ids[
            g.name]

    # Gateway 1's bridge restarts; gateway 2's calls go on through it all.
    before = received(servers["g2"], linux["g2"])
    lab.restart_switch(gw.state.name, timeout=30, gateway="g1")
    during = received(servers["g2"], linux["g2"])
    assert during[0] > before[0] and during[1] > before[1], (before, during)
    restarts = {g.name: g.rest("/pptp-alg/counters")["app"]["reconciliations"]
                for g in (g1, g2)}
    assert restarts == {"g1": 1, "g2": 0}
    again = received(servers["g1"], linux["g1"])
    wait_for(lambda: min(a - b for a, b in zip(received(servers["g1"], linux["g1"]),
                                              again, strict=True)) >= 3,
             20, "gateway 1's calls carrying frames again after its bridge's restart")
    assert gw.rest("/pptp-alg/gateways")["switches_refused"] == 0
