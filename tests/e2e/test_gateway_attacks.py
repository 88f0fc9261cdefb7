"""Attacks on the real lab from one inside host; another client's call must not notice.

Each test is bounded in count and time, and its traffic stays in the lab's namespaces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, wait_for

Factory = Callable[..., GatewayLab]
LIVENESS = 5.0
"""Seconds a victim's call may take to complete under attack (the liveness bound)."""


def test_a_syn_flood_to_1723_from_one_host_leaves_another_clients_call_working(
    gateway: Factory,
) -> None:
    gw = gateway(2)
    gw.pptpd()
    flood = gw.tool(gw.client(1), "syn-flood", SERVER_IP, "--count", "3000", "--rate", "1000",
                    text=True)
    wait_for(lambda: gw.counters()["refused_connections"] > 0, 5, "the flood to be refused")
    victim = gw.repl(gw.client(2))
    started = time.monotonic()
    victim("start")
    reply = victim("call", call_id=4242)["fields"]
    took = time.monotonic() - started
    assert reply["result"] == 1 and reply["peer_call_id"] == 4242
    assert took < LIVENESS, f"the victim's call took {took:.2f} s under the flood"
    [call] = gw.wait_established(1)
    assert call["client"].endswith(".2") and call["public_call_id"] == 4242
    out, _ = flood.communicate(timeout=30)
    assert flood.returncode == 0 and json.loads(out.splitlines()[-1])["sent"] == 3000
    counters = gw.counters()
    # At most max_handshakes_per_host (16) of the flood were unfinished at once; the
    # rest got an RST from the gateway, or were dropped by the inside port's meter.
    assert counters["refused_connections"] > 0
    print(f"victim call set up in {took:.3f} s during a 1,000 SYN/s flood from another "
          f"host; refused_connections={counters['refused_connections']}")


def test_a_flood_from_outside_is_metered_creates_nothing_and_inside_clients_work(
    gateway: Factory,
) -> None:
    rate, seconds = 1000, 3.0  # punt_rate_outside_new: what the meter lets through
    # The controller's NAT: with the datapath's, the flood never reaches the controller
    # (test_conntrack_nat.py).
    gw = gateway(2, options={"punt_rate_outside_new": str(rate), "ordinary_nat": "controller"})
    gw.pptpd()
    entries_before = len(gw.flows())
    dropped_before = gw.counters()["no_session_drops"]
    flood = gw.tool(gw.server, "udp-flood", PUBLIC_IP, "--seconds", str(seconds), text=True)
    time.sleep(0.5)
    victim = gw.repl(gw.client(2))
    started = time.monotonic()
    victim("start")
    reply = victim("call", call_id=4242)["fields"]
    took = time.monotonic() - started
    assert reply["result"] == 1 and took < LIVENESS, f"{took:.2f} s under the flood"
    out, _ = flood.communicate(timeout=30)
    sent = json.loads(out.splitlines()[-1])["sent"]
    [call] = gw.wait_established(1)
    assert call["public_call_id"] == 4242
    reached = gw.counters()["no_session_drops"] - dropped_before
    # The meter lets at most its rate (and a burst of half a second) reach the controller;
    # what reached it was dropped without an entry.
    assert 0 < reached <= rate * (seconds + 1.5), (reached, sent)
    assert sent > 3 * reached
    new_entries = len(gw.flows()) - entries_before
    # The victim's server-map entries and its control connection's punt entry only.
    assert new_entries - 1 == len(gw.gre_flows()) == 2
    print(f"outside flood: {sent} datagrams sent, {reached} reached the controller, "
          f"victim call set up in {took:.3f} s")


def test_one_host_asking_for_too_many_calls_loses_its_connection_not_the_others_calls(
    gateway: Factory,
) -> None:
    gw = gateway(2, options={"max_calls_per_connection": "4"})
    gw.pptpd()
    victim = gw.repl(gw.client(2))
    victim("start")
    assert victim("call", call_id=4242)["fields"]["result"] == 1
    attacker = gw.repl(gw.client(1))
    attacker("start")
    for call_id in range(1, 5):
        assert attacker("call", call_id=call_id)["fields"]["result"] == 1
    gw.wait_established(5)
    with pytest.raises(AssertionError, match="failed"):
        attacker("call", call_id=5, timeout=10)  # the gateway resets the connection
    counters = gw.counters()
    assert counters["refused_calls"] == 1 and counters["connections_reset"] == 1
    [call] = gw.wait_established(1)
    assert call["client"] == "192.168.1.2" and call["public_call_id"] == 4242
    started = time.monotonic()
    assert victim("call", call_id=4343)["fields"]["result"] == 1  # and it goes on calling
    assert time.monotonic() - started < LIVENESS


def test_gratuitous_arps_for_the_whole_subnet_from_one_port_lock_no_other_host_out(
    gateway: Factory,
) -> None:
    gw = gateway(2)
    gw.pptpd()
    (claimed,) = gw.run_tool(gw.client(1), "arp-claim", "192.168.1.2", "--count", "252",
                             "--rate", "200", timeout=30)
    assert claimed["sent"] == 252
    neighbours = gw.rest("/pptp-alg/counters")["neighbours"]
    assert neighbours["pins_refused"] > 0
    victim = gw.repl(gw.client(2))
    started = time.monotonic()
    victim("start")
    reply = victim("call", call_id=4242)["fields"]
    took = time.monotonic() - started
    assert reply["result"] == 1 and reply["peer_call_id"] == 4242
    assert took < LIVENESS, f"the victim's call took {took:.2f} s after the claims"
    [call] = gw.wait_established(1)
    assert call["client"].endswith(".2")
    # Now that the victim has spoken, the attacker's claim on its address is a spoof.
    spoofed = gw.rest("/pptp-alg/counters")["neighbours"]["spoofed_drops"]
    gw.run_tool(gw.client(1), "arp-claim", "192.168.1.2", "--count", "1")
    wait_for(lambda: gw.rest("/pptp-alg/counters")["neighbours"]["spoofed_drops"] > spoofed,
             5, "the repeated claim to be dropped as a spoof")
    victim("gre", peer=reply["call_id"], count=5, tag="after", interval=0.02)
    assert victim("recv", seconds=1.0)["packets"], "the victim's call still carries data"
    print(f"victim call set up in {took:.3f} s after 252 gratuitous ARPs from another port; "
          f"pins_refused={neighbours['pins_refused']}")
