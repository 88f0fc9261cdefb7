"""Restarts with the GRE demultiplexer attached (the lab's default), end to end.

Real pptpd in ``srv`` whose stand-in answers every frame it gets (``echo``); two
step-by-step PNS clients (``gw_tools repl``) with the same Call ID behind one public
address, so that the second client's call moves the pair to the demux path. Each client
sends numbered frames and counts the server's answers: every answer crosses the
gateway as server -> client GRE, on the flow path or through the demultiplexer.

Before the fix, a restarted controller replaced the clients' return entries from the
demultiplexer's port, which it could not do for a client it had not heard from yet: the
first call, restored, got 54 of 138 answers once its pair had moved to the demux path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, GatewayLab, PptpServer, Repl, wait_for
from topo import gre_demux, lab
from topo.standin_ppp import StandinConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, OVS and BPF"),
]

Factory = Callable[..., GatewayLab]
CALL_ID = 777
FRAMES = 40
RESTART_TIMEOUT = 20


def demux(gw: GatewayLab) -> dict[str, Any]:
    data: dict[str, Any] = gw.rest("/pptp-alg/counters")["demux"]
    return data


def path(gw: GatewayLab) -> set[str]:
    return {c["inbound_gre_path"] for c in gw.calls()}


def answers(repl: Repl, server_id: int, tag: str, count: int = FRAMES) -> int:
    """Send ``count`` frames tagged ``tag``; how many of the server's answers came back
    (the stand-in answers each with its own tag, ``TAG:echo:...``)."""
    repl("recv", seconds=0.05)  # whatever came before
    repl("gre", peer=server_id, count=count, tag=tag, interval=0.02)
    got = 0
    deadline = time.monotonic() + 3
    while got < count and time.monotonic() < deadline:
        packets: list[dict[str, Any]] = repl("recv", seconds=0.3)["packets"]
        got += sum(1 for p in packets if p["call_id"] == CALL_ID)
    return got


def call(gw: GatewayLab, index: int) -> tuple[Repl, int]:
    repl = gw.repl(gw.client(index))
    repl("start")
    reply = repl("call", call_id=CALL_ID)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
    server_id: int = reply["call_id"]
    repl("gre", peer=server_id, count=1, tag="hello")  # pptpd's stand-in speaks first
    return repl, server_id


def both_answered(gw: GatewayLab, calls: list[tuple[Repl, int]], tag: str,
                  server: PptpServer) -> list[int]:
    """Each call's answers to FRAMES frames (after pptpd's reordering buffer let the
    first through: a gap in a call's sequence numbers holds later frames back)."""
    got = []
    for n, (repl, server_id) in enumerate(calls, start=1):
        wait_for(lambda r=repl, s=server_id, t=f"{tag}{n}warm": answers(r, s, t, 5) >= 1, 15,
                 f"call {n} to be answered ({tag})")
        got.append(answers(repl, server_id, f"{tag}{n}"))
    print(f"{tag}: answers {got} of {FRAMES} each; paths {path(gw)}; "
          f"stand-ins {[s['received'] for s in server.standins()]}")
    return got


def test_restarts_with_the_demultiplexer_lose_no_answer(gateway: Factory) -> None:
    gw = gateway(2, gre_demux=True)
    name = gw.state.name
    wait_for(lambda: demux(gw)["up"], 10, "the demultiplexer to answer its heartbeat")
    server = gw.pptpd(standin=StandinConfig(count=1, interval=0.25, echo=True))
    first = call(gw, 1)
    wait_for(lambda: path(gw) == {"flow"}, 5, "the lone call on the flow path")
    assert both_answered(gw, [first], "before", server) == [FRAMES]

    # 1. The controller restarts; then a second client with the same Call ID moves the
    #    pair to the demux path (the case).
    lab.restart_controller(name, timeout=RESTART_TIMEOUT)
    wait_for(lambda: demux(gw)["up"], 10, "the demultiplexer to answer the new controller")
    second = call(gw, 2)
    calls = gw.wait_established(2)
    assert {c["public"] for c in calls} == {PUBLIC_IP}
    assert {c["public_call_id"] for c in calls} == {CALL_ID, CALL_ID + 1}
    wait_for(lambda: path(gw) == {"demux"}, 5, "the shared pair on the demux path")
    assert both_answered(gw, [first, second], "moved", server) == [FRAMES, FRAMES]

    # 2. The controller restarts with both calls on the demux path.
    lab.restart_controller(name, timeout=RESTART_TIMEOUT)
    wait_for(lambda: demux(gw)["up"], 10, "the demultiplexer to answer the new controller")
    wait_for(lambda: path(gw) == {"demux"}, 5, "the pair back on the demux path")
    assert both_answered(gw, [first, second], "restarted", server) == [FRAMES, FRAMES]
    assert gw.rest("/pptp-alg/counters")["app"]["entries_not_installed"] == 0

    # 3. The switch restarts without its flows, the clients unheard by this controller:
    #    their return entries wait for them on the controller path, then the demux path.
    lab.restart_switch(name, timeout=RESTART_TIMEOUT)
    both_answered(gw, [first, second], "switch", server)
    wait_for(lambda: path(gw) == {"demux"}, 20, "the pair back on the demux path")
    assert both_answered(gw, [first, second], "after", server) == [FRAMES, FRAMES]
    assert gw.counters()["connections_reset"] == 0

    log = (lab.run_dir(name) / lab.LOG_FILE).read_text()
    assert "switch reported error" not in log, "an expected answer logged as an error"


def test_a_reattached_demultiplexer_takes_its_pairs_back(gateway: Factory) -> None:
    """``topo.gre_demux detach`` then ``attach``: a new program and an empty table behind
    the same port. Before the fix the app kept writing to the old table (its descriptors
    still open): the heartbeat never came back and the pair stayed on the controller
    path for good. Now the port's return reopens the table."""
    gw = gateway(2, gre_demux=True)
    name, bridge = gw.state.name, gw.state.bridge
    port, directory = lab.demux_port_name(name), lab.demux_dir(name)
    wait_for(lambda: demux(gw)["up"], 10, "the demultiplexer to answer its heartbeat")
    server = gw.pptpd(standin=StandinConfig(count=1, interval=0.25, echo=True))
    calls = [call(gw, 1), call(gw, 2)]
    wait_for(lambda: path(gw) == {"demux"}, 5, "the shared pair on the demux path")
    assert both_answered(gw, calls, "attached", server) == [FRAMES, FRAMES]
    gre_demux.detach(bridge, port, directory)
    wait_for(lambda: not demux(gw)["up"], 5, "the app to see it gone")
    assert path(gw) == {"controller"}
    assert both_answered(gw, calls, "detached", server) == [FRAMES, FRAMES]
    gre_demux.attach(bridge, port, directory, lab.DEMUX_OFPORT)
    wait_for(lambda: demux(gw)["up"], 10, "the re-attached demultiplexer to answer")
    wait_for(lambda: path(gw) == {"demux"}, 5, "the pair back on the demux path")
    assert both_answered(gw, calls, "reattached", server) == [FRAMES, FRAMES]
    program = demux(gw)["program"]
    assert program["demuxed"] >= 2 * FRAMES and program["unknown_key"] == 0, program
