"""Real PPTP peers through the reference NAT (Linux netfilter with the PPTP helper).

Proves the real-peer tooling of ``topo/`` end to end, and records how the reference
behaves on the lab's addresses: several clients behind one public address, each with its
own call to one pptpd, PPP frames both ways; the project's PNS driver with the same Call
ID in two clients at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from topo.netns import ns_argv, ping, unique_name
from topo.peers import PeerProcess, start_pptp_client, start_pptpd, stop_all, wait_for
from topo.pns_driver import parse_events
from topo.reference_nat import ReferenceNat, build_reference_nat

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and raw sockets"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
N_CLIENTS = 3


@pytest.fixture
def reference() -> Iterator[ReferenceNat]:
    topo = build_reference_nat(unique_name("rp"), N_CLIENTS)
    try:
        for client in topo.clients:
            assert ping(client, topo.server_ip, count=2), f"{client} cannot reach the server"
        yield topo
    finally:
        topo.cleanup()


def diagnostics(topo: ReferenceNat, peers: list[PeerProcess]) -> str:
    parts = [topo.conntrack(), topo.iptables_counters()]
    for peer in peers:
        parts += [f"--- {peer.name} output", peer.output(), f"--- {peer.name} syslog",
                  peer.syslog()[-3000:]]
    return "\n".join(parts)


def test_real_pptp_clients_pass_ppp_both_ways(reference: ReferenceNat, tmp_path: Path) -> None:
    topo = reference
    peers: list[PeerProcess] = []
    try:
        server = start_pptpd(topo.server, topo.server_ip, tmp_path / "srv")
        peers.append(server)
        clients = [
            start_pptp_client(netns, topo.server_ip, tmp_path / f"c{i}", tag=f"c{i}")
            for i, netns in enumerate(topo.clients, start=1)
        ]
        peers += clients

        def flowing() -> bool:
            standins = server.standins()
            return (
                len(standins) == N_CLIENTS
                and all(s["received"] >= 3 for s in standins)
                and all(sum(c.received_tags().values()) >= 3 for c in clients)
            )

        try:
            wait_for(flowing, timeout=20, what="PPP frames both ways on every call")
        except TimeoutError:
            pytest.fail(diagnostics(topo, peers))

        standins = server.standins()
        by_client_tag = {}
        for standin in standins:
            # pptpd passes the client's address as pppd's ipparam: the NAT's public one.
            assert standin["argv"][standin["argv"].index("ipparam") + 1] == topo.public_ip
            assert len(standin["received_tags"]) == 1, standin
            (client_tag,) = standin["received_tags"]
            by_client_tag[client_tag] = standin
        assert sorted(by_client_tag) == [c.tag for c in clients]
        for client in clients:
            status = client.status()
            assert status is not None and status["bad_fcs"] == 0
            # Every client hears exactly the stand-in of its own call, and vice versa.
            assert set(client.received_tags()) == {by_client_tag[client.tag]["tag"]}
        # One GRE conntrack entry per call, all towards the one public address, keyed
        # with the Call IDs pptp-linux drew (random) and pptpd gave (0, 128, 256, ...).
        gre = [line for line in topo.conntrack().splitlines() if " gre " in line]
        assert len(gre) == N_CLIENTS, topo.conntrack()
        assert all(f"dst={topo.public_ip}" in line for line in gre)
        for client, ip in zip(clients, topo.client_ips, strict=True):
            ((call_id, server_call_id),) = client.calls()
            assert server_call_id % 128 == 0
            original = f"src={ip} dst={topo.server_ip} srckey={call_id:#x} "
            assert any(original + f"dstkey={server_call_id:#x}" in line for line in gre), gre
    finally:
        stop_all(peers)


def run_driver(netns: str, server_ip: str, *args: str) -> subprocess.Popen[str]:
    argv = ns_argv(netns, [sys.executable, "-m", "topo.pns_driver", server_ip, *args])
    return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def summary_of(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out, err = proc.communicate(timeout=30)
    events = parse_events(out)
    assert events and events[-1]["event"] == "summary", (out, err)
    assert proc.returncode == 0, (out, err)
    return events[-1], events


def test_pns_driver_same_call_id_in_two_clients(reference: ReferenceNat, tmp_path: Path) -> None:
    """Two drivers, one Call ID (4242), one public address: the seed's collision case."""
    topo = reference
    peers: list[PeerProcess] = []
    procs: list[subprocess.Popen[str]] = []
    try:
        server = start_pptpd(topo.server, topo.server_ip, tmp_path / "srv")
        peers.append(server)
        common = ["--call-id", "4242", "--frames", "10", "--interval", "0.2", "--hold", "1"]
        for i, netns in enumerate(topo.clients[:2], start=1):
            procs.append(run_driver(netns, topo.server_ip, *common, "--tag", f"d{i}"))
        results = [summary_of(proc) for proc in procs]

        standins = server.standins()
        assert len(standins) == 2, diagnostics(topo, peers)
        by_driver_tag = {next(iter(s["received_tags"])): s for s in standins
                         if s["received_tags"]}
        assert sorted(by_driver_tag) == ["d1", "d2"], standins
        for i, (summary, events) in enumerate(results, start=1):
            call = summary["calls"]["4242"]
            assert call["result"] == 1
            # GRE came back keyed with the driver's own Call ID (the NAT restored it) ...
            assert set(summary["gre_received_by_key"]) == {"4242"}
            standin = by_driver_tag[f"d{i}"]
            # ... and carried the frames of this driver's call only.
            assert set(summary["received_tags"]) == {standin["tag"]}
            assert summary["received_tags"][standin["tag"]] >= 3
            assert standin["received_tags"][f"d{i}"] >= 8
            assert any(e["event"] == "recv" and e["type"] == 13 for e in events) or any(
                e["event"] == "closed_by_peer" for e in events)  # the call was cleared
        # pptpd gave each control connection its own Call ID range: they differ.
        server_ids = {summary["calls"]["4242"]["server_call_id"] for summary, _ in results}
        assert len(server_ids) == 2
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stop_all(peers)


def test_reference_does_not_reassemble_a_split_outgoing_call_request(
    reference: ReferenceNat, tmp_path: Path
) -> None:
    """Documents the reference's limit: an OCRQ cut over TCP segments breaks the call.

    pptpd reassembles the message and connects the call, but Linux's helper never sees
    the Call ID, so the server's GRE finds no NAT mapping: the router answers it with
    ICMP errors and pptpd ends the call. The project's ALG must do better.
    """
    topo = reference
    peers: list[PeerProcess] = []
    proc = None
    try:
        server = start_pptpd(topo.server, topo.server_ip, tmp_path / "srv")
        peers.append(server)
        proc = run_driver(topo.clients[0], topo.server_ip, "--call-id", "4242", "--frames",
                          "5", "--interval", "0.2", "--split", "ocrq=1,12,100")
        out, err = proc.communicate(timeout=30)
        events = parse_events(out)
        summary = events[-1]
        assert summary["event"] == "summary", (out, err)
        sent_ocrq = next(e for e in events if e["event"] == "sent" and e["type"] == 7)
        assert sent_ocrq["segments"] == [1, 11, 88, 68]
        assert summary["calls"]["4242"]["result"] == 1  # pptpd put the pieces together
        assert "Incomplete ctrl packet" in server.syslog()
        assert summary["gre_received"] == 0
        assert summary["peer_closed"]
        assert proc.returncode == 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_all(peers)


def test_two_pptp_calls_on_one_control_connection(
    reference: ReferenceNat, tmp_path: Path
) -> None:
    """Two pptp-linux clients sharing one call manager: two calls, one control connection."""
    topo = reference
    peers: list[PeerProcess] = []
    try:
        server = start_pptpd(topo.server, topo.server_ip, tmp_path / "srv")
        peers.append(server)
        first = start_pptp_client(topo.clients[0], topo.server_ip, tmp_path / "a", tag="a")
        peers.append(first)
        wait_for(lambda: len(first.calls()) == 1, timeout=10, what="the first call")
        second = start_pptp_client(topo.clients[0], topo.server_ip, tmp_path / "b", tag="b",
                                   share_with=first)
        peers.append(second)
        calls = wait_for(lambda: first.calls() if len(first.calls()) == 2 else None,
                         timeout=10, what="the second call")
        assert server.syslog().count("control connection started") == 1
        # pptpd numbers the calls of one connection consecutively.
        assert [peer_id for _, peer_id in calls] == [calls[0][1], calls[0][1] + 1]
        # pptpd started a stand-in per call, and closed the first when the second came.
        wait_for(lambda: len(server.standins()) == 2, timeout=5, what="two stand-ins")
        wait_for(lambda: server.standins()[0]["state"].startswith("done"), timeout=5,
                 what="pptpd to close the first call's stand-in")
    finally:
        stop_all(peers)
