"""Calls live through a restart of the controller and a restart of the switch.

Real pptpd in ``srv``; two step-by-step PNS clients (``gw_tools repl``, real kernel TCP)
with the same Call ID behind one public address. The lab's app keeps its state in
``[nat] state_file`` (on in every lab). ``topo.lab.restart_controller`` replaces the
``ryu-manager`` process while the bridge keeps its flows; ``topo.lab.restart_switch``
empties the lab's bridge (flows, meters, controller connection) as an ``ovs-vswitchd``
restart without saved flows would. Data is sent both ways while each restart runs and
after it; the test prints how much got through and how long each restart took. Frames
sent while the bridge is empty are lost, and pptpd then holds later frames of that call
back for a while (its GRE reordering buffer), so the check after the switch restart
keeps sending until the server hears the call again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, GatewayLab, Repl, client_ip, wait_for
from topo import lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
CALL_ID = 777
RESTART_TIMEOUT = 20


def exchange(repl: Repl, server_id: int, tag: str, count: int = 10,
             interval: float = 0.02) -> tuple[int, list[dict[str, Any]]]:
    """Send ``count`` frames to the server, then collect what the server sent meanwhile."""
    repl("gre", peer=server_id, count=count, tag=tag, interval=interval)
    packets: list[dict[str, Any]] = repl("recv", seconds=0.5)["packets"]
    return count, packets


def run_while(action: Callable[[], object], repl: Repl, server_id: int, tag: str
              ) -> tuple[float, int, int]:
    """Run ``action`` in a thread while sending and receiving; (seconds, sent, received)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    worker = threading.Thread(target=target)
    started = time.monotonic()
    worker.start()
    sent = received = 0
    while worker.is_alive():
        n, packets = exchange(repl, server_id, tag, count=5, interval=0.02)
        sent += n
        received += len(packets)
    worker.join()
    if failure:
        raise failure[0]
    return time.monotonic() - started, sent, received


def test_calls_live_through_a_controller_restart_then_a_switch_restart(
    gateway: Factory,
) -> None:
    gw = gateway(2)
    server = gw.pptpd()
    name = gw.state.name
    first = gw.repl(gw.client(1))
    first("start")
    reply = first("call", call_id=CALL_ID)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
    first_c = reply["call_id"]
    (call,) = wait_for(gw.established, 5, "the call in REST")
    assert call["public_call_id"] == CALL_ID
    _, packets = exchange(first, first_c, "before")
    assert packets, "the server's stand-in sends to the client"

    def server_heard(tag: str) -> int:
        return sum(s["received_tags"].get(tag, 0) for s in server.standins())

    # 1. The controller restarts; the flow path carries the call meanwhile.
    took, sent, received = run_while(
        lambda: lab.restart_controller(name, timeout=RESTART_TIMEOUT), first, first_c,
        "controller")
    print(f"controller restart: {took:.1f} s; client sent {sent}, the server heard "
          f"{server_heard('controller')}; the client received {received}")
    assert server_heard("controller") >= sent // 2 and received > 0
    body = gw.rest("/pptp-alg/counters")
    assert body["app"]["restores"] == 1 and body["alg"]["restore_skipped"] == 0
    (call,) = gw.established()
    assert (call["client_call_id"], call["public_call_id"], call["server_call_id"]) == (
        CALL_ID, CALL_ID, first_c)

    # 2. A second client asks for the same Call ID: it is still taken on the pair.
    second = gw.repl(gw.client(2))
    second("start")
    reply = second("call", call_id=CALL_ID)["fields"]
    assert reply["result"] == 1 and reply["peer_call_id"] == CALL_ID
    second_c = reply["call_id"]
    calls = gw.wait_established(2)
    assert {c["public"] for c in calls} == {PUBLIC_IP}
    assert {c["public_call_id"] for c in calls} == {CALL_ID, CALL_ID + 1}
    for repl, c, tag in ((first, first_c, "shared1"), (second, second_c, "shared2")):
        _, packets = exchange(repl, c, tag)
        assert {p["call_id"] for p in packets} == {CALL_ID}
        wait_for(lambda tag=tag: server_heard(tag) >= 8, 5, f"the server to hear {tag}")

    # 3. The switch restarts without its flows: the app installs them again.
    took, sent, received = run_while(
        lambda: lab.restart_switch(name, timeout=RESTART_TIMEOUT), first, first_c, "switch")
    print(f"switch restart: {took:.1f} s; client sent {sent}, the server heard "
          f"{server_heard('switch')}; the client received {received}")
    assert gw.rest("/pptp-alg/counters")["app"]["reconciliations"] >= 1
    # pptpd holds GRE back after a gap in its sequence numbers (frames lost while the
    # bridge was empty) until later frames show the gap is old: keep sending.
    for repl, c, tag in ((first, first_c, "after1"), (second, second_c, "after2")):
        deadline = time.monotonic() + 10
        received: list[dict[str, Any]] = []
        while server_heard(tag) < 8 and time.monotonic() < deadline:
            _, packets = exchange(repl, c, tag, count=5, interval=0.05)
            received += packets
        assert server_heard(tag) >= 8, f"the server heard {server_heard(tag)} of {tag}"
        assert received and {p["call_id"] for p in received} == {CALL_ID}, tag
    assert len(gw.established()) == 2

    # 4. The first call ends after both restarts: its control stream resynchronises.
    first("clear", call_id=CALL_ID)
    wait_for(lambda: len(gw.established()) == 1, 10, "the first call to end")
    (left,) = gw.established()
    assert left["client"] == client_ip(2)
    assert left["public_call_id"] == CALL_ID + 1
    _, packets = exchange(second, second_c, "last")
    assert {p["call_id"] for p in packets} == {CALL_ID}
    counters = gw.counters()
    print(f"resync probes {counters['resync_probes']}, connections reset "
          f"{counters['connections_reset']}")
    assert counters["connections_reset"] == 0
