"""Two controllers on etcd with real PPTP peers: the master killed mid-call, the master
cut from etcd, an etcd member down (``store = etcd``, ``ryu_apps.mastership``).

The lab runs two controllers of its bridge, a three-member etcd cluster and a proxy per
controller (``topo.lab up --controllers 2 --store etcd``), with the GRE demultiplexer (the
calls share a public address and server, so their inbound GRE goes through it, not
through a controller). ``c1`` runs pptp-linux, the others the project's PNS driver step by
step (``gw_tools repl``), against pptpd in ``srv``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.gateway_lab import OCRQ, GatewayLab, wait_for
from topo import etcd_cluster, lab
from topo.lab import standbys
from topo.peers import PptpClient
from topo.standin_ppp import StandinConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
    pytest.mark.skipif(etcd_cluster.etcd_binary() is None,
                       reason="no etcd binary (Debian's etcd-server)"),
]

Factory = Callable[..., GatewayLab]
FAILOVER_WITHIN = 10.0
"""Seconds from the master's SIGKILL until the standby is master: the lease (3 s), the
key read every 0.25 s, the switch's role reply, with room for a loaded machine."""
RETRANSMITTED_WITHIN = 20.0
"""Seconds for a control segment sent in the gap to be answered: the failover, then the
sender's next retransmission (TCP doubles its timeout each time: 0.2, 0.4 ... 6.4 s)."""
LONG_CALL = StandinConfig(count=600, interval=0.05)
"""pptp-linux's stand-in sends a frame every 50 ms for 30 s: through every failover."""


def two_controllers(gateway: Factory, clients: int) -> GatewayLab:
    return gateway(clients, controllers=2, store="etcd", gre_demux=True)


def pptp_linux_call(gw: GatewayLab) -> PptpClient:
    """pptpd in the server's namespace, and pptp-linux's call from ``c1`` to it."""
    server = gw.pptpd()
    wait_for(server.listening, 10, "pptpd listening")
    linux = gw.pptp_client(gw.client(1), "a", standin=LONG_CALL)
    wait_for(lambda: len(linux.calls()) == 1, 15, "pptp-linux's call")
    return linux


def server_ocrqs(gw: GatewayLab) -> int:
    """Outgoing-Call-Requests pptpd received, by its log."""
    return sum(1 for peer in gw.peers if peer.name.startswith("pptpd")
               for line in peer.syslog().splitlines()
               if f"Received PPTP Control Message (type: {OCRQ})" in line)


def role(gw: GatewayLab, index: int) -> str | None:
    """What controller ``index`` says its role is, None when it does not answer."""
    try:
        body = gw.rest("/pptp-alg/gateways", controller=index)
    except OSError:
        return None
    return str(body["gateways"][0]["role"])


def test_the_master_killed_mid_call_loses_nothing_a_user_would_notice(
        gateway: Factory) -> None:
    gw = two_controllers(gateway, 3)
    linux = pptp_linux_call(gw)
    pns = gw.repl(gw.client(2), timeout=RETRANSMITTED_WITHIN)
    pns("start")
    first = pns("call", call_id=4242)["fields"]
    assert first["result"] == 1
    before = {c["public_call_id"] for c in gw.wait_established(2)}
    master = lab.current_master(gw.state, gw.name)
    assert master is not None
    heard = linux.status()["received"]

    lab.kill_controller(gw.state.name, master=True)
    killed = time.monotonic()
    # A new call on the same control connection, sent while no controller is master.
    second = pns("call", timeout=RETRANSMITTED_WITHIN + 5, call_id=4243)["fields"]
    answered = time.monotonic() - killed
    new = lab.wait_master(gw.state.name, gw.name, FAILOVER_WITHIN, but=[master])

    assert second["result"] == 1 and answered < RETRANSMITTED_WITHIN
    log = Path(gw.state.controller_at(new).log_path).read_text()
    assert "restored 2 sessions, 2 control connections, 2 calls (from warm copy)" in log
    # GRE kept flowing: the flow entries and the demultiplexer carried it throughout.
    assert linux.status()["received"] > heard
    calls = gw.wait_established(3)
    public = [c["public_call_id"] for c in calls]
    assert len(set(public)) == 3 and before <= set(public)  # none handed out twice
    assert server_ocrqs(gw) == 3  # pptp-linux's, 4242's, and 4243's once, in the gap
    pns("gre", peer=second["call_id"], count=5, tag="late")
    packets = pns("recv", seconds=2.0)["packets"]
    assert 4243 in {p["call_id"] for p in packets}  # the server's frames come back

    # Teardown through the new master: pptpd ends the call, then the control connection
    # (it keeps one call per connection; 4243's request ended its side of 4242).
    pns("clear", call_id=4243)
    wait_for(lambda: pns("recv", seconds=0.2) is not None and pns("messages")["peer_closed"],
             10, "pptpd to close the control connection")
    wait_for(lambda: not {4242, 4243} & {c["client_call_id"] for c in gw.calls()}, 10,
             "the connection's calls closed on the new master")
    assert gw.counters()["unknown_call_ids"] == 0
    assert role(gw, new) == "master"
    restarted = lab.start_controller(gw.state.name, master)
    assert restarted.index == master
    wait_for(lambda: role(gw, master) == "standby", 15, "the old master back as a standby")


def test_a_master_cut_from_etcd_refuses_new_calls_keeps_its_calls_then_yields(
        gateway: Factory) -> None:
    gw = two_controllers(gateway, 3)
    linux = pptp_linux_call(gw)
    pns = gw.repl(gw.client(2))
    pns("start")
    master = lab.current_master(gw.state, gw.name)
    assert master is not None
    ocrqs = server_ocrqs(gw)

    lab.cut_controller(gw.state.name, master)
    wait_for(lambda: role(gw, master) == "master cut off", 5, "the master cut off")
    refused = pns("call", ok=False, call_id=4242)
    heard = linux.status()["received"]

    assert not refused["ok"]  # the control connection was reset, not answered
    assert server_ocrqs(gw) == ocrqs  # the request never reached the server
    new = lab.wait_master(gw.state.name, gw.name, FAILOVER_WITHIN, but=[master])
    wait_for(lambda: standbys.exit_status(gw.state.controller_at(master)) == 3, 10,
             "the cut master to end with status 3")
    wait_for(lambda: linux.status()["received"] > heard + 10, 10,
             "pptp-linux's call to go on")
    again = gw.repl(gw.client(3))
    again("start")
    assert again("call", call_id=4242)["fields"]["result"] == 1
    calls = gw.wait_established(2)
    assert len({c["public_call_id"] for c in calls}) == 2
    assert role(gw, new) == "master"


def test_one_etcd_member_down_changes_nothing(gateway: Factory) -> None:
    gw = two_controllers(gateway, 2)
    server = gw.pptpd()
    wait_for(server.listening, 10, "pptpd listening")
    master = lab.current_master(gw.state, gw.name)
    assert master is not None
    member = gw.state.etcd[0]
    assert member.pid is not None
    assert etcd_cluster.stop_pid(member.pid, member.data_dir)
    for index, client in ((1, gw.client(1)), (2, gw.client(2))):
        pns = gw.repl(client)
        pns("start")
        assert pns("call", call_id=4242)["fields"]["result"] == 1, index
    time.sleep(4.0)  # more than a lease: the master kept it alive through the others
    assert lab.current_master(gw.state, gw.name) == master
    assert len({c["public_call_id"] for c in gw.wait_established(2)}) == 2
    assert gw.rest("/pptp-alg/counters")["app"]["store_errors"] == 0


def test_a_master_cut_briefly_from_etcd_writes_what_it_deferred_and_sets_up_calls_again(
        gateway: Factory) -> None:
    """A control connection opened while the master is cut off is recorded when etcd
    answers again: the standby that later takes over knows it."""
    gw = two_controllers(gateway, 2)
    server = gw.pptpd()
    wait_for(server.listening, 10, "pptpd listening")
    master = lab.current_master(gw.state, gw.name)
    assert master is not None
    pns = gw.repl(gw.client(1), timeout=RETRANSMITTED_WITHIN)
    lab.cut_controller(gw.state.name, master)
    wait_for(lambda: role(gw, master) == "master cut off", 5, "the master cut off")
    pns("start")  # its session and connection records are deferred
    lab.cut_controller(gw.state.name, master, cut=False)
    wait_for(lambda: role(gw, master) == "master", 5, "etcd to answer the master again")
    counters = gw.rest("/pptp-alg/counters", controller=master)
    assert counters["app"]["store_writes_deferred"] >= 1
    assert counters["app"]["store_errors"] == 0

    lab.kill_controller(gw.state.name, master)
    lab.wait_master(gw.state.name, gw.name, FAILOVER_WITHIN, but=[master])
    assert pns("call", timeout=RETRANSMITTED_WITHIN + 5, call_id=4242)["fields"]["result"] == 1
    [call] = gw.wait_established(1)
    assert call["client_call_id"] == 4242


def test_two_bridges_fail_over_each_on_its_own(gateway: Factory) -> None:
    """Each gateway has its own election: killing one controller moves the mastership of
    the gateways it held, and only those; every gateway sets up calls after, with the
    same Call ID on both (their addresses overlap)."""
    gw = gateway(1, controllers=2, store="etcd", gre_demux=True, bridges=2)
    handles = gw.gateways
    masters = {h.name: lab.current_master(gw.state, h.name) for h in handles}
    assert None not in masters.values()
    for handle in handles:
        handle.pptpd()
    victim = masters["g1"]
    assert victim is not None
    lab.kill_controller(gw.state.name, victim)
    for handle in handles:
        now = lab.wait_master(gw.state.name, handle.name, FAILOVER_WITHIN, but=[victim])
        assert now != victim
        pns = handle.repl(handle.client(1))
        pns("start")
        assert pns("call", call_id=4242)["fields"]["result"] == 1, handle.name
        [call] = handle.wait_established(1)
        assert call["client_call_id"] == call["public_call_id"] == 4242
    survivor = next(c.index for c in gw.state.controllers if c.index != victim)
    served = gw.rest("/pptp-alg/gateways", controller=survivor)["gateways"]
    assert sorted((g["name"], g["role"]) for g in served) == [("g1", "master"),
                                                              ("g2", "master")]
