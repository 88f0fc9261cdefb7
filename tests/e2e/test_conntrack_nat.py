"""Ordinary NAT in the datapath (``ordinary_nat = conntrack``): TCP and UDP of inside
hosts go through Open vSwitch's connection tracker, from entries per inside host; the
controller sees a host's first packet only."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from alg.events import EntryKind
from tests.e2e.gateway_lab import PUBLIC_IP, SERVER_IP, GatewayLab, log_records, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
PORT = 8000
SAME_PORT = 40000
N = 3
BLOCK = 512
PORT_MIN = 1024
CONNTRACK = {"ordinary_nat": "conntrack"}


def exchange(gw: GatewayLab, bind_port: int, tag: str) -> list[dict[str, Any]]:
    """One TCP and one UDP exchange from every client at once, from ``bind_port``."""
    procs = [gw.tool(gw.client(i), "napt-client", SERVER_IP, str(PORT), "--bind-port",
                     str(bind_port), "--tag", f"{tag}{i}", "--hold", "2", text=True)
             for i in range(1, N + 1)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        results.append(json.loads(out.splitlines()[0]))
    return results


def app_counters(gw: GatewayLab) -> dict[str, int]:
    body: dict[str, dict[str, int]] = gw.rest("/pptp-alg/counters")
    return body["app"]


def test_tcp_and_udp_of_several_hosts_go_through_the_tracker_within_their_blocks(
        gateway: Factory) -> None:
    gw = gateway(N, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")

    results = exchange(gw, SAME_PORT, "a")
    for i, result in enumerate(results, start=1):
        assert result["tcp"]["data"] == f"tcp-a{i}"
        assert result["udp"]["data"] == f"udp-a{i}"
    peers = [r[proto]["peer"] for r in results for proto in ("tcp", "udp")]
    assert {p.rsplit(":", 1)[0] for p in peers} == {PUBLIC_IP}
    # Each host's public ports are in a block of its own (RFC 7422).
    blocks = {}
    for i, result in enumerate(results, start=1):
        ports = {int(result[proto]["peer"].rsplit(":", 1)[1]) for proto in ("tcp", "udp")}
        [block] = {(p - PORT_MIN) // BLOCK for p in ports}
        blocks[i] = block
    assert len(set(blocks.values())) == N, blocks
    # No NAT session of the controller's; every host has its entries.
    assert gw.sessions() == []
    assert gw.flows(EntryKind.SESSION) == []
    assert len(gw.flows(EntryKind.HOST)) == 5 * N
    assert gw.counters()["hosts_bound"] == N

    # New connections of the bound hosts: not one packet reaches the controller.
    before = app_counters(gw)["packet_ins"]
    results = exchange(gw, SAME_PORT + 1, "b")
    for i, result in enumerate(results, start=1):
        assert result["tcp"]["data"] == f"tcp-b{i}"
        assert result["udp"]["data"] == f"udp-b{i}"
        port = int(result["tcp"]["peer"].rsplit(":", 1)[1])
        assert (port - PORT_MIN) // BLOCK == blocks[i]
    assert app_counters(gw)["packet_ins"] == before
    accepted = [r for r in log_records(gw) if r["event"] == "accept"]
    assert len(accepted) == 2 * N


def test_a_host_past_its_block_is_dropped_never_sent_from_its_private_address(
        gateway: Factory) -> None:
    gw = gateway(1, options={**CONNTRACK, "ct_ports_per_host": "2"})
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    procs = [gw.tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--bind-port",
                     str(SAME_PORT + k), "--tag", f"k{k}", "--hold", "4", "--timeout", "3",
                     text=True)
             for k in range(5)]
    codes = [proc.wait(timeout=40) for proc in procs]
    # Two ports in the block: two connections each way at most, the rest dropped.
    assert codes.count(0) == 2, codes
    peers = {r["peer"] for r in log_records(gw) if "peer" in r}
    assert peers and {p.rsplit(":", 1)[0] for p in peers} == {PUBLIC_IP}, peers
    assert {int(p.rsplit(":", 1)[1]) for p in peers} <= {PORT_MIN, PORT_MIN + 1}


LONG_CLIENT = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
def say(text):
    s.sendall(text.encode())
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(2048)
        if not chunk:
            break
        buf += chunk
    print(json.dumps(json.loads(buf)), flush=True)
say("before")
sys.stdin.readline()
say("after")
"""


def test_a_controller_restart_keeps_connections_and_each_hosts_block(
        gateway: Factory) -> None:
    import subprocess
    import sys

    from topo import lab

    gw = gateway(1, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    client = gw.popen(gw.client(1), [sys.executable, "-c", LONG_CLIENT, SERVER_IP, str(PORT)],
                      stdin=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdin is not None
    before = json.loads(client.stdout.readline())
    assert before["data"] == "before"
    block = (int(before["peer"].rsplit(":", 1)[1]) - PORT_MIN) // BLOCK
    host_entries = sorted(line.split(" actions=")[0].split("priority=")[1]
                          for line in gw.flows(EntryKind.HOST))

    lab.restart_controller(gw.state.name, timeout=20)
    # The connection goes on through the tracker, from the same public port.
    client.stdin.write("go\n")
    client.stdin.flush()
    after = json.loads(client.stdout.readline())
    assert (after["data"], after["peer"]) == ("after", before["peer"])
    # The host keeps its block: its entries were not replaced, its next connection
    # takes a port of the same block.
    assert sorted(line.split(" actions=")[0].split("priority=")[1]
                  for line in gw.flows(EntryKind.HOST)) == host_entries
    [result] = exchange_one(gw)
    assert (int(result["tcp"]["peer"].rsplit(":", 1)[1]) - PORT_MIN) // BLOCK == block
    assert gw.counters()["hosts_bound"] == 0  # bound before the restart, not again


def exchange_one(gw: GatewayLab) -> list[dict[str, Any]]:
    proc = gw.tool(gw.client(1), "napt-client", SERVER_IP, str(PORT), "--tag", "n",
                   text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    return [json.loads(out.splitlines()[0])]


MANY_CONNECTIONS = """
import json, socket, sys
opened, refused = [], 0
for _ in range(int(sys.argv[3])):
    try:
        opened.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2))
    except OSError:
        refused += 1
print(json.dumps({"opened": len(opened), "failed": refused}), flush=True)
"""


def test_max_sessions_is_the_trackers_limit_of_the_gateways_zone(gateway: Factory) -> None:
    import subprocess
    import sys

    from topo.lab.state import lab_zone

    gw = gateway(1, options={**CONNTRACK, "max_sessions": "2"})
    zone = lab_zone(gw.state.name)
    limits = subprocess.run(["ovs-appctl", "dpctl/ct-get-limits", f"zone={zone}"],
                            capture_output=True, text=True, timeout=10, check=True).stdout
    assert f"zone={zone},limit=2," in limits, limits
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    proc = gw.popen(gw.client(1), [sys.executable, "-c", MANY_CONNECTIONS, SERVER_IP,
                                   str(PORT), "4"], text=True)
    out, err = proc.communicate(timeout=30)
    assert json.loads(out) == {"opened": 2, "failed": 2}, (out, err)
    peers = {r["peer"] for r in log_records(gw) if "peer" in r}
    assert len(peers) == 2 and {p.rsplit(":", 1)[0] for p in peers} == {PUBLIC_IP}
    assert app_counters(gw)["ct_limit_errors"] == 0


def test_pptp_stays_with_the_controller_and_each_host_keeps_one_address(
        gateway: Factory) -> None:
    """Two hosts on two public addresses: each one's PPTP call (the controller's control
    connection, the server-map's GRE) and its ordinary connections (the tracker's) leave
    from the same address, side by side."""
    gw = gateway(2, public_ips=2, options=CONNTRACK)
    server = gw.pptpd()
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    addresses = {}
    for i in (1, 2):
        repl = gw.repl(gw.client(i))
        repl("start")
        reply = repl("call", call_id=100 + i)["fields"]
        assert reply["result"] == 1
        repl("gre", peer=reply["call_id"], count=3, tag=f"c{i}", interval=0.05)
        [control] = [s for s in gw.sessions() if s["pptp_control"]
                     and s["inside"].startswith(f"192.168.1.{i}:")]
        proc = gw.tool(gw.client(i), "napt-client", SERVER_IP, str(PORT), "--tag", f"o{i}",
                       text=True)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        ordinary = json.loads(out.splitlines()[0])["tcp"]["peer"].rsplit(":", 1)[0]
        assert control["public"].rsplit(":", 1)[0] == ordinary
        addresses[i] = ordinary
    assert len(set(addresses.values())) == 2, addresses
    wait_for(lambda: len(server.standins()) == 2 and all(
        s["received_tags"] for s in server.standins()), 5, "both calls' GRE at the server")
    # The controller has the control connections only; the tracker the rest.
    assert all(s["pptp_control"] for s in gw.sessions())
    assert len(gw.established()) == 2 and gw.counters()["hosts_bound"] == 2


def test_a_flood_from_outside_never_reaches_the_controller_and_a_call_is_set_up(
        gateway: Factory) -> None:
    import time

    gw = gateway(1, options=CONNTRACK)
    gw.pptpd()
    before = app_counters(gw)["packet_ins"]
    entries_before = len(gw.flows())
    flood = gw.tool(gw.server, "udp-flood", PUBLIC_IP, "--seconds", "2", "--rate", "5000",
                    text=True)
    time.sleep(0.3)
    repl = gw.repl(gw.client(1))
    repl("start")
    assert repl("call", call_id=4242)["fields"]["result"] == 1
    out, _ = flood.communicate(timeout=30)
    sent = json.loads(out.splitlines()[-1])["sent"]
    assert sent > 1000
    gw.wait_established(1)
    # The call's control segments and first GRE reached the controller; not one
    # datagram of the flood did, and it made no entry.
    punted = app_counters(gw)["packet_ins"] - before
    assert punted < 100, punted
    assert gw.counters()["no_session_drops"] == 0
    assert len(gw.flows(EntryKind.SESSION)) == 0 and len(gw.flows()) <= entries_before + 8


def test_a_switch_restart_keeps_the_hosts_connections_and_entries(gateway: Factory) -> None:
    import subprocess
    import sys

    from topo import lab

    gw = gateway(1, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    client = gw.popen(gw.client(1), [sys.executable, "-c", LONG_CLIENT, SERVER_IP, str(PORT)],
                      stdin=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdin is not None
    before = json.loads(client.stdout.readline())
    lab.restart_switch(gw.state.name, timeout=20)
    wait_for(lambda: len(gw.flows(EntryKind.HOST)) == 5, 10, "the host's entries again")
    client.stdin.write("go\n")
    client.stdin.flush()
    after = json.loads(client.stdout.readline())
    assert (after["data"], after["peer"]) == ("after", before["peer"])
    assert gw.counters()["hosts_bound"] == 1


AT_ONCE = """
import json, socket, sys, threading
opened = []
def one():
    try:
        opened.append(socket.create_connection((sys.argv[1], int(sys.argv[2])),
                                               timeout=0.95))
    except OSError:
        pass
threads = [threading.Thread(target=one) for _ in range(int(sys.argv[3]))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"opened": len(opened)}), flush=True)
"""


def test_a_hosts_first_connections_at_once_need_no_retransmission(gateway: Factory) -> None:
    """Eight SYNs reach the controller while it binds the host: each goes back through
    the tables, none waits for its sender's 1 s retransmission."""
    import sys

    gw = gateway(1, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    proc = gw.popen(gw.client(1), [sys.executable, "-c", AT_ONCE, SERVER_IP, str(PORT), "8"],
                    text=True)
    out, err = proc.communicate(timeout=30)
    assert json.loads(out) == {"opened": 8}, (out, err)
    assert gw.counters()["hosts_bound"] == 1


UDP_WATCHER = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"open")
s.settimeout(5)
print(json.loads(s.recv(2048))["peer"], flush=True)
for line in sys.stdin:
    s.settimeout(float(line))
    try:
        s.recv(2048)
        print("data", flush=True)
    except ConnectionRefusedError:
        print("refused", flush=True)
    except socket.timeout:
        print("nothing", flush=True)
"""

PORT_UNREACHABLE = """
import socket, struct, sys
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
def ip(src, dst, proto, body):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 7, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + body
source, public, public_port, server, server_port = sys.argv[1:6]
quoted = ip(public, server, 17, struct.pack("!HHHH", int(public_port), int(server_port), 12, 0)
            + b"open")
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(ip(source, public, 1, icmp), (public, 0))
"""


def test_an_icmp_error_from_a_martian_source_never_reaches_the_tracked_host(
        gateway: Factory) -> None:
    """The tracker relates an ICMP error to a connection by its quote alone; sent from an
    inside address (a martian on the outside) it is dropped and counted, as the
    controller's NAT does; the same error from the server reaches the host."""
    import subprocess
    import sys

    gw = gateway(1, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    watcher = gw.popen(gw.client(1), [sys.executable, "-c", UDP_WATCHER, SERVER_IP,
                                      str(PORT)], stdin=subprocess.PIPE, text=True)
    assert watcher.stdout is not None and watcher.stdin is not None
    public, public_port = watcher.stdout.readline().strip().rsplit(":", 1)
    assert public == PUBLIC_IP

    def error_from(source: str) -> str:
        sender = gw.popen(gw.server, [sys.executable, "-c", PORT_UNREACHABLE, source, public,
                                      public_port, SERVER_IP, str(PORT)])
        assert sender.wait(timeout=10) == 0
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.write("1.5\n")
        watcher.stdin.flush()
        return watcher.stdout.readline().strip()

    before = gw.counters()["icmp_martians"]
    assert error_from("192.168.1.77") == "nothing"
    assert gw.counters()["icmp_martians"] == before + 1
    assert error_from(SERVER_IP) == "refused"
    watcher.stdin.close()
    watcher.wait(timeout=10)


def test_a_closed_connection_keeps_its_public_port_past_the_servers_time_wait(
        gateway: Factory) -> None:
    """The tracker's default would forget it after 30 s, while a Linux server holds its
    end 60 s in TIME-WAIT and refuses a new connection on that port."""
    import subprocess

    from topo.lab.state import lab_zone

    gw = gateway(1, options=CONNTRACK)
    gw.tool(gw.server, "serve", "--port", str(PORT), "--log", str(gw.run_dir / "serve.log"))
    wait_for(lambda: log_records(gw), 5, "the listener in srv")
    exchange_one(gw)
    zone = lab_zone(gw.state.name)

    def closed() -> list[int]:
        table = subprocess.run(["ovs-appctl", "dpctl/dump-conntrack", "-s", f"zone={zone}"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(line.split("timeout=")[1].split(",")[0]) for line in table.splitlines()
                if line.startswith("tcp,") and "TIME_WAIT" in line]

    timeouts = wait_for(closed, 10, "the closed connection in TIME_WAIT")
    assert all(100 < t <= 120 for t in timeouts), timeouts
    assert gw.rest("/pptp-alg/counters")["app"]["ct_policy_errors"] == 0
