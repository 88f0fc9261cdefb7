"""A call's end on the gateway: its flows go, late GRE is dropped, a new call works.

The client is the step-by-step PNS of ``tests.e2e.gw_tools repl``, so the test can look
at the switch between two control messages. The call ends by Call-Clear-Request, by
Stop-Control-Connection-Request, or by the client closing the TCP connection (FIN).
pptpd never sends Call-Disconnect-Notify: a tiny PAC of our own (``gw_tools pac``) does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from alg.events import EntryKind
from tests.e2e.gateway_lab import (
    CDN,
    OCRQ,
    PUBLIC_IP,
    SERVER_IP,
    GatewayLab,
    wait_for,
)
from topo.netns import ns_argv
from topo.pns_driver import parse_events

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
CALL_ID = 777
GRE_ONLY = ["ip", "proto", "47"]


def tcp_states(netns: str) -> list[str]:
    """The states of the namespace's TCP sockets to or from port 1723 (TIME-WAIT aside)."""
    out = subprocess.run(ns_argv(netns, ["ss", "-Htan", "( sport = :1723 or dport = :1723 )"]),
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split() and line.split()[0] not in ("TIME-WAIT", "LISTEN")]


@pytest.mark.parametrize("ending", ["call-clear", "stop-control", "fin"])
def test_call_teardown_removes_flows_and_drops_late_gre(gateway: Factory, ending: str) -> None:
    gw = gateway(1)
    server = gw.pptpd()
    repl = gw.repl(gw.client(1))
    repl("start")
    reply = repl("call", call_id=CALL_ID)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
    server_id = reply["call_id"]
    (call,) = wait_for(gw.established, 5, "the call in REST")
    public_id = call["public_call_id"]
    assert call["client_call_id"] == CALL_ID and call["server_call_id"] == server_id

    # Data both ways, on the call's two server-map entries.
    assert len(gw.flows(EntryKind.GRE_OUTBOUND)) == 1 and len(gw.flows(EntryKind.GRE_INBOUND)) == 1
    repl("gre", peer=server_id, count=5, tag="pns", interval=0.05)
    packets = repl("recv", seconds=1.0)["packets"]
    assert {p["call_id"] for p in packets if p["tag"]} == {CALL_ID}, packets
    wait_for(lambda: server.standins() and server.standins()[0]["received_tags"].get("pns"), 5,
             "the server's stand-in to hear the client")

    if ending == "call-clear":
        repl("clear", call_id=CALL_ID)
    elif ending == "stop-control":
        assert repl("stop")["reply"] is not None  # pptpd answered, through the gateway
    else:
        repl("close")
    wait_for(lambda: not gw.gre_flows(), 5, "the call's GRE flows to go")
    assert gw.established() == []
    repl("recv", seconds=0.5)  # drain what was on its way before the flows went

    # Late GRE for the call, from both sides, is dropped and counted, and installs nothing.
    dropped = gw.counters()["gre_unknown_dropped"]
    cap_c1 = gw.capture(gw.client(1), "late-c1", [*GRE_ONLY, "and", "src", "host", SERVER_IP])
    cap_srv = gw.capture(gw.server, "late-srv", [*GRE_ONLY, "and", "src", "host", PUBLIC_IP])
    sent = gw.send_gre(gw.server, PUBLIC_IP, [public_id, CALL_ID], count=5)
    repl("gre", peer=server_id, count=5, tag="late", interval=0.02)
    sent += 5
    late = repl("recv", seconds=1.0)["packets"]
    cap_c1.stop()
    cap_srv.stop()
    assert late == [], late
    assert cap_c1.gre_keys() == []
    assert cap_srv.gre_keys() == []
    assert gw.counters()["gre_unknown_dropped"] - dropped >= sent
    assert gw.gre_flows() == []

    # The control connection ends cleanly at both ends: every FIN is acknowledged through
    # the gateway (pptpd itself closes the connection after Call-Clear-Request).
    repl("close")
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: tcp_states(gw.client(1)) == [] and tcp_states(gw.server) == [], 5,
                 "both ends of the control connection to close")
    assert (tcp_states(gw.client(1)), tcp_states(gw.server)) == ([], [])

    # A new call, on a new control connection, works.
    cap = gw.capture(gw.server, "new-srv", ["tcp", "port", "1723"])
    proc = gw.driver(gw.client(1), "--call-id", str(CALL_ID), "--frames", "5", "--interval", "0.1",
                     "--hold", "1", "--tag", "new")
    out, err = proc.communicate(timeout=30)
    cap.stop()
    events = parse_events(out)
    summary = events[-1]
    assert proc.returncode == 0, (out, err)
    assert summary["calls"][str(CALL_ID)]["result"] == 1
    assert set(summary["gre_received_by_key"]) == {str(CALL_ID)}
    assert summary["gre_received"] >= 3
    new_standin = server.standins()[-1]
    assert new_standin["received_tags"].get("new", 0) >= 3, server.standins()
    # The old public Call ID is held down: the new call leaves with another one.
    (ocrq,) = [m for m in cap.pptp_messages() if m["type"] == OCRQ]
    assert ocrq["src"] == PUBLIC_IP and ocrq["dst"] == SERVER_IP
    assert ocrq["call_id"] != public_id


def test_call_disconnect_notify_from_the_server(gateway: Factory) -> None:
    """A tiny PAC in srv ends the call with Call-Disconnect-Notify (pptpd never does)."""
    gw = gateway(1)
    log = gw.run_dir / "pac.log"
    gw.tool(gw.server, "pac", SERVER_IP, "--log", str(log), "--cdn-after", "1.5")
    wait_for(log.exists, 5, "the PAC to listen")
    repl = gw.repl(gw.client(1))
    repl("start")
    reply = repl("call", call_id=CALL_ID)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
    server_id = reply["call_id"]
    (call,) = wait_for(gw.established, 5, "the call in REST")
    public_id = call["public_call_id"]
    packets = repl("recv", seconds=0.5)["packets"]
    assert packets and {p["call_id"] for p in packets} == {CALL_ID}
    assert {p["tag"] for p in packets} == {"pac"}

    def cdn() -> dict[str, Any] | None:
        repl("recv", seconds=0.2)
        return next((m for m in repl("messages")["messages"] if m["type"] == CDN), None)

    notify = wait_for(cdn, 5, "the Call-Disconnect-Notify")
    # The CDN names the server's own Call ID, which the ALG leaves alone.
    assert notify["call_id"] == server_id
    wait_for(lambda: not gw.gre_flows(), 5, "the call's GRE flows to go")
    assert gw.established() == []
    repl("recv", seconds=0.3)

    dropped = gw.counters()["gre_unknown_dropped"]
    sent = gw.send_gre(gw.server, PUBLIC_IP, [public_id], count=5)
    assert repl("recv", seconds=0.5)["packets"] == []
    wait_for(lambda: gw.counters()["gre_unknown_dropped"] - dropped >= sent, 5,
             "the late GRE to be counted")
    assert gw.gre_flows() == []

    # The control connection lives on: a new call on it works.
    reply = repl("call", call_id=CALL_ID + 1)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID + 1
    wait_for(lambda: len(gw.gre_flows()) == 2, 5, "the new call's flows")
    packets = repl("recv", seconds=0.5)["packets"]
    assert packets and {p["call_id"] for p in packets} == {CALL_ID + 1}
    repl("stop")
