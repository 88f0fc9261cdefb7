"""Control connections as real peers use them, through the real lab with real pptpd: many
calls on one connection, one host churning connections through a pair's Call IDs, and a
SYN with a new ISN on an open connection's own port. Each is bounded in count and time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.gateway_lab import SERVER_IP, GatewayLab, wait_for

Factory = Callable[..., GatewayLab]


def _control_port(gw: GatewayLab, client_ip: str) -> int:
    [session] = [s for s in gw.rest("/pptp-alg/sessions")
                 if s["pptp_control"] and s["inside"].startswith(client_ip + ":")]
    return int(session["inside"].rpartition(":")[2])


def test_thirty_calls_on_one_control_connection_all_get_their_replies(
    gateway: Factory,
) -> None:
    """RFC 2637 lets a control connection carry many calls; with the default options none
    is refused (before: the connection was reset at the 17th, its 16 calls with it)."""
    gw = gateway(1)
    gw.pptpd()
    pns = gw.repl(gw.client(1))
    pns("start")
    replies = [pns("call", call_id=100 + n)["fields"] for n in range(30)]
    assert [r["peer_call_id"] for r in replies] == [100 + n for n in range(30)]
    assert all(r["result"] == 1 for r in replies), replies
    calls = gw.wait_established(30)
    assert sorted(c["public_call_id"] for c in calls) == [100 + n for n in range(30)]
    counters = gw.counters()
    assert counters["refused_calls"] == 0 and counters["connections_reset"] == 0


def test_one_host_churning_connections_is_held_to_its_share_and_another_keeps_calling(
    gateway: Factory,
) -> None:
    """One host opens a connection, sets up a call, clears it and drops the connection,
    again and again: its held-down Call IDs count against its share of the pair across
    its connections, so it is refused at its share; the other client's calls to the same
    server are set up throughout."""
    share = 6
    gw = gateway(2, options={"max_call_ids_per_host": str(share)})
    gw.pptpd()
    victim = gw.repl(gw.client(2))
    victim("start")
    churner = gw.repl(gw.client(1))
    refused_at = None
    for n in range(share + 2):
        churner("start")
        try:
            churner("call", call_id=10 + n, timeout=8)
        except AssertionError:
            refused_at = n
            break
        churner("clear", call_id=10 + n)
        if n % 2 == 0:  # the victim's calls count against its own share
            reply = victim("call", call_id=4000 + n)["fields"]
            assert reply["result"] == 1 and reply["peer_call_id"] == 4000 + n
        churner("close")
    assert refused_at == share
    counters = gw.counters()
    assert counters["refused_calls"] == 1 and counters["connections_reset"] == 1
    assert victim("call", call_id=4242)["fields"]["result"] == 1
    assert sum(c["client"].endswith(".2") for c in gw.established()) == share // 2 + 1


@pytest.mark.parametrize("isn", [1, 900001])
def test_a_syn_with_a_new_isn_on_a_live_connections_port_ends_nothing(
    gateway: Factory, isn: int,
) -> None:
    """A SYN from the client's own address and port with another ISN reaches the real
    server, whose challenge ACK reaches the client (which still has the connection and
    ignores it): the connection and its call live on (before: both ended, 'reopened')."""
    gw = gateway(1)
    gw.pptpd()
    victim = gw.repl(gw.client(1))
    victim("start")
    reply = victim("call", call_id=4242)["fields"]
    assert reply["result"] == 1
    port = _control_port(gw, "192.168.1.1")
    (sent,) = gw.run_tool(gw.client(1), "syn-flood", SERVER_IP, "--count", "1",
                          "--sport", str(port), "--isn", str(isn))
    assert sent["sent"] == 1
    wait_for(lambda: gw.counters()["syns_on_open_connections"] == 1, 5,
             "the SYN to reach the controller")
    time.sleep(0.5)  # the server's answer to it
    counters = gw.counters()
    assert counters["connections_reopened"] == 0 and counters["connections_reset"] == 0
    [call] = gw.wait_established(1)
    assert call["public_call_id"] == 4242
    assert _control_port(gw, "192.168.1.1") == port
    assert victim("call", call_id=4343)["fields"]["result"] == 1  # control still flows
    victim("gre", peer=reply["call_id"], count=5, tag="after", interval=0.02)
    assert victim("recv", seconds=1.0)["packets"], "the call still carries data"
