"""The operator's view on the live lab: display commands, REST JSON, and the demo."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.e2e.gateway_lab import (
    PUBLIC_IP,
    REPO,
    SERVER_IP,
    GatewayLab,
    client_ip,
    lab_name,
    wait_for,
)
from topo import display, lab
from topo.standin_ppp import StandinConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
CALL_ID = 4242
LEFT_TIME = re.compile(r"Left-Time: (\d\d):(\d\d):(\d\d)")


def seconds(text: str) -> list[int]:
    return [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in LEFT_TIME.findall(text)]


def lab_display(gw: GatewayLab, view: str, *extra: str) -> str:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "topo.lab", "display", "--name", gw.state.name,
         view, *extra],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_server_map_session_table_and_rest_follow_two_colliding_calls(gateway: Factory) -> None:
    gw = gateway(2)
    gw.pptpd(standin=StandinConfig(tag="srv{pid}", count=3, interval=0.05))
    repls = [gw.repl(gw.client(1)), gw.repl(gw.client(2))]
    server_ids = []
    for repl in repls:
        repl("start")
        reply = repl("call", call_id=CALL_ID)["fields"]
        assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
        server_ids.append(reply["call_id"])
    calls = gw.wait_established(2)
    public_ids = {c["client"]: c["public_call_id"] for c in calls}
    b1, b2 = public_ids[client_ip(1)], public_ids[client_ip(2)]
    assert b1 == CALL_ID and b2 != CALL_ID
    c1, c2 = server_ids
    time.sleep(1.0)  # the server's stand-ins have sent their few frames: the data idles

    server_map = lab_display(gw, "server-map")
    for client, b, c in ((client_ip(1), b1, c1), (client_ip(2), b2, c2)):
        assert (f"Type: ASPF, {SERVER_IP}:0 -> {PUBLIC_IP}:{b}[{client}:{CALL_ID}], Zone: ---"
                in server_map)
        assert f"Type: ASPF, {client}:0[{PUBLIC_IP}] -> {SERVER_IP}:{c}, Zone: ---" in server_map
    assert server_map.count("   Protocol: tcp(Appro: pptp-gre), Left-Time: ") == 4
    assert server_map.count("   VPN: public -> public") == 4
    first = seconds(server_map)
    assert all(0 < s <= 300 for s in first)

    verbose = lab_display(gw, "server-map", "--verbose")
    assert "Path: controller" in verbose and "Path: flow" in verbose
    assert re.search(r"Packets: \d+, Bytes: \d+", verbose)

    time.sleep(2.5)
    later = seconds(lab_display(gw, "server-map"))
    assert all(b < a for a, b in zip(first, later, strict=True)), (first, later)

    for repl, c in zip(repls, server_ids, strict=True):
        repl("gre", peer=c, count=3, tag="x", interval=0.05)
        repl("recv", seconds=0.5)
    table = wait_for(lambda: (t := lab_display(gw, "session-table")).count("pptp-gre") >= 3 and t,
                     10, "pptp-gre sessions")
    assert table.count(f"+-> {SERVER_IP}:1723") == 2
    assert (f"pptp-gre  VPN:public --> public {client_ip(1)}:0[{PUBLIC_IP}:0] --> "
            f"{SERVER_IP}:{c1}") in table

    rest_map = gw.rest("/pptp-alg/server-map")
    assert {(e["client"], e["direction"], e["public_call_id"], e["server_call_id"])
            for e in rest_map} == {
        (client_ip(1), "server-to-client", b1, c1), (client_ip(1), "client-to-server", b1, c1),
        (client_ip(2), "server-to-client", b2, c2), (client_ip(2), "client-to-server", b2, c2),
    }
    assert {e["client_call_id"] for e in rest_map} == {CALL_ID}
    assert display.show(gw.state.rest_url, "server-map") == server_map_now(gw)
    counters = lab_display(gw, "counters")
    assert re.search(r"calls_in_progress\s+2", counters)
    assert re.search(r"call_ids_changed\s+1", counters)

    repls[1]("clear", call_id=CALL_ID)
    wait_for(lambda: len(gw.established()) == 1, 10, "the cleared call to go")
    after = lab_display(gw, "server-map")
    assert f"[{client_ip(2)}:{CALL_ID}]" not in after and f"{client_ip(2)}:0[" not in after
    assert f"[{client_ip(1)}:{CALL_ID}]" in after
    assert [e["client"] for e in gw.rest("/pptp-alg/server-map")] == [client_ip(1)] * 2


def server_map_now(gw: GatewayLab) -> str:
    return display.show(gw.state.rest_url, "server-map")


def test_the_demo_runs_and_says_ok() -> None:
    name = lab_name()
    try:
        proc = subprocess.run(["make", "demo", f"LAB={name}"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    finally:
        lab.down(name=name, purge=True)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "--- display firewall server-map" in out, out
    assert "--- display firewall session-table" in out, out
    verdicts = [line for line in out.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1 and verdicts[0].startswith("verdict: OK"), out
    ids = re.findall(r"Outgoing-Call-Request from 203\.0\.113\.2:\d+  Call ID (\d+)", out)
    assert len(set(ids)) == 3, out
