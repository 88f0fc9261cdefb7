"""The strict security policy: only TCP to port 1723 may start from inside.

PPTP still works (its GRE rides the server-map, not the policy); anything else the
clients start is dropped and counted; GRE from outside that matches no server-map reaches
no client and creates no state.
"""

from __future__ import annotations

import json
import os
import random
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
from topo.netns import ns_run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
PORT = 8000
#: A second outside host, as an extra address of ``srv``.
STRANGER_IP = "203.0.113.9"
GRE = ["ip", "proto", "47"]


def test_strict_policy(gateway: Factory) -> None:
    gw = gateway(2, policy="strict")
    rng = random.Random(1723)
    ns_run(gw.server, "ip", "addr", "add", f"{STRANGER_IP}/24", "dev", "eth0")
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")

    # 1. GRE from outside with keys nobody gave out, before any call.
    caps = [gw.capture(gw.client(i), f"unknown-c{i}", GRE) for i in (1, 2)]
    dropped = gw.counters()["gre_unknown_dropped"]
    sent = gw.send_gre(gw.server, PUBLIC_IP, rng.sample(range(1, 65536), 10), count=3)
    wait_for(lambda: gw.counters()["gre_unknown_dropped"] - dropped >= sent, 5,
             "the gateway to count the unknown GRE")
    for cap in caps:
        cap.stop()
        assert cap.gre_keys() == [], cap.netns
    assert gw.gre_flows() == []

    # 2. TCP and UDP to another port: dropped and counted, the connection fails.
    denied = gw.counters()["policy_denied"]
    proc = gw.tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--timeout", "3", text=True)
    out, err = proc.communicate(timeout=30)
    (result,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 1, (out, err)
    assert result["tcp"] is None and result["udp"] is None, result
    assert any("tcp" in e for e in result["errors"]), result
    assert gw.counters()["policy_denied"] - denied >= 2
    assert [r for r in log_records(gw) if r["event"] != "listening"] == []
    assert gw.flows(EntryKind.SESSION) == []

    # 3. PPTP works: its control connection is allowed, its GRE rides the server-map.
    server = gw.pptpd()
    client = gw.pptp_client(gw.client(1), "c1")

    def flowing() -> bool:
        standins = server.standins()
        return (len(standins) == 1 and standins[0]["received_tags"].get("c1", 0) >= 3
                and sum(client.received_tags().values()) >= 3)

    wait_for(flowing, 20, "PPP frames both ways")
    (call,) = gw.established()
    assert call["public"] == PUBLIC_IP
    assert set(client.received_tags()) == {server.standins()[0]["tag"]}
    assert len(gw.flows(EntryKind.GRE_OUTBOUND)) == 1 and len(gw.flows(EntryKind.GRE_INBOUND)) == 1

    # 4. While the call is up, GRE with unknown keys from another outside host reaches
    #    no client, is counted, and adds no entry.
    mine = {call["public_call_id"], call["client_call_id"]}
    keys = [k for k in rng.sample(range(1, 65536), 12) if k not in mine][:10]
    caps = [gw.capture(gw.client(i), f"stranger-c{i}", [*GRE, "and", "src", "host", STRANGER_IP])
            for i in (1, 2)]
    cap_c2_all = gw.capture(gw.client(2), "all-c2", GRE)
    dropped = gw.counters()["gre_unknown_dropped"]
    flows_before = sorted(line.split(",")[0] for line in gw.gre_flows())
    sent = gw.send_gre(gw.server, PUBLIC_IP, keys, count=3, src=STRANGER_IP)
    wait_for(lambda: gw.counters()["gre_unknown_dropped"] - dropped >= sent, 5,
             "the gateway to count the stranger's GRE")
    for cap in [*caps, cap_c2_all]:
        cap.stop()
        assert cap.gre_keys() == [], cap.path.name
    assert sorted(line.split(",")[0] for line in gw.gre_flows()) == flows_before
    # The call is still fine.
    before = sum(client.received_tags().values())
    wait_for(lambda: sum(client.received_tags().values()) > before, 5, "more PPP frames")
    assert gw.established() != []
