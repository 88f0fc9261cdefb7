"""The peers' topologies: the same client and server namespaces, and one thing between.

Each is a context manager yielding a :class:`Path` (client namespace, server namespace,
server address) and removing everything it made, whatever happens:

* :func:`gateway`: the project's lab (``topo.lab``) under its own name, with the options
  of :data:`BENCH_OPTIONS`: the bench is one inside host making thousands of control
  connections and calls, which the hardening's per-host bounds and punt meters would
  otherwise refuse (they are what they are for; the bench measures speed, not them).
  Its ordinary NAT is the controller's (``ordinary_nat = controller``), so that the
  sessions' figures set it beside ``gateway-conntrack`` (the default); PPTP goes through
  the controller either way.
* :func:`reference`: the Linux netfilter PPTP NAT (``topo.reference_nat``).
* :func:`direct`: no NAT at all, the client on the server's subnet over one veth pair.
* :func:`plain_ovs`: no NAT, an OVS bridge of the lab's kind (userspace datapath)
  between client and server, one static flood entry, no controller: the limit of the
  data plane.
* :func:`ovs_conntrack`: NAT through the same kind of bridge with static flows that
  translate through Open vSwitch's connection tracker, no controller: the limit of the
  data plane for ordinary NAT (:func:`conntrack_flows`).
* :func:`gateway_conntrack`: the gateway with ``ordinary_nat = conntrack``.
* :func:`bare_ryu`: the same bridge with the bare Ryu app (``bench/bare_ryu.py``) as its
  controller, which floods every packet back out: the limit of any controller path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path as FilePath

from alg.config import AlgConfig
from topo import lab
from topo.netns import NetnsGroup, address, ns_run, run, tx_off, veth
from topo.reference_nat import build_reference_nat

REPO = FilePath(__file__).resolve().parent.parent

SERVER_IP = "203.0.113.1"
BENCH_OPTIONS = {
    "max_calls_per_connection": "16384",
    "max_call_ids_per_host": "65536",
    "max_calls_per_host": "200000",
    "max_calls": "200000",
    "max_connections_per_host": "100000",
    "max_handshakes_per_host": "4096",
    "max_sessions_per_host": "200000",
    "punt_rate_inside_port": "1000000",
    "punt_rate_outside_control": "1000000",
    "punt_rate_control_connections": "1000000",
    "punt_rate_gre": "1000000",
    "max_pins_per_port": "1024",
    "ordinary_nat": "controller",
}

OVS_CT_ZONE = 4310
"""The ``ovs-conntrack`` peer's zone of the connection tracker (one table for every
userspace bridge of the machine: each NAT needs a zone of its own)."""
GATEWAY_CT_ZONE = 4320
"""The ``gateway-conntrack`` peer's zone."""
CT_PORTS = (AlgConfig.port_min, AlgConfig.port_max)
"""Public ports that both conntrack peers' one inside host may be given: the gateway's."""
CONNTRACK_OPTIONS = {
    "ordinary_nat": "conntrack",
    "ct_zone": str(GATEWAY_CT_ZONE),
    "ct_ports_per_host": str(CT_PORTS[1] - CT_PORTS[0] + 1),
}
CLIENT_IP = "192.168.1.1"
INSIDE_GATEWAY = "192.168.1.254"
PUBLIC_IP = "203.0.113.2"
GATEWAY_MAC = "02:00:00:00:00:fe"
CLIENT_OFPORT, SERVER_OFPORT = 1, 2


@dataclass(frozen=True)
class Path:
    """Where a peer's client and server run."""

    name: str
    client: str
    server: str
    server_ip: str = SERVER_IP
    controller_pid: int | None = None
    bridge: str | None = None
    rest_url: str | None = None
    router: str | None = None


@contextmanager
def gateway(name: str = "bench", options: dict[str, str] | None = None, public_ips: int = 1,
            gre_demux: bool = False) -> Iterator[Path]:
    """The project's gateway, lab ``name`` (replaced if it exists, removed after); with
    ``gre_demux``, with the GRE demultiplexer attached and answering."""
    state = lab.up(1, name=name, replace=True, public_ips=public_ips,
                   options={**BENCH_OPTIONS, **(options or {})}, gre_demux=gre_demux)
    try:
        if gre_demux:
            _wait_demux(state.rest_url)
        yield Path("gateway, demux" if gre_demux else "gateway", state.client(1),
                   state.server_namespace, controller_pid=state.controller_pid,
                   bridge=state.bridge, rest_url=state.rest_url)
    finally:
        lab.down(name=name, purge=True)


def _wait_demux(rest_url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{rest_url}/pptp-alg/counters", timeout=5) as answer:
            if json.load(answer)["demux"]["up"]:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the GRE demultiplexer did not answer its heartbeat")
        time.sleep(0.1)


@contextmanager
def gateway_conntrack(name: str = "bench") -> Iterator[Path]:
    """The gateway with ``ordinary_nat = conntrack`` in zone :data:`GATEWAY_CT_ZONE`, the
    one inside host's block of ports the whole of ``port_min..port_max`` (the bench is one
    host opening thousands of connections; conntrack keeps a closed one 30 s)."""
    flush_zone(GATEWAY_CT_ZONE)
    try:
        with gateway(name, options=CONNTRACK_OPTIONS) as path:
            yield replace(path, name="gateway-conntrack")
    finally:
        flush_zone(GATEWAY_CT_ZONE)


@contextmanager
def gateway_demux(name: str = "bench") -> Iterator[Path]:
    """The gateway with the GRE demultiplexer."""
    with gateway(name, gre_demux=True) as path:
        yield path


@contextmanager
def reference(prefix: str = "bref") -> Iterator[Path]:
    """The Linux reference NAT."""
    topo = build_reference_nat(prefix, 1)
    try:
        yield Path("linux", topo.clients[0], topo.server, topo.server_ip, router=topo.router)
    finally:
        topo.cleanup()


@contextmanager
def direct(prefix: str = "bdir") -> Iterator[Path]:
    """No NAT: client and server on one subnet, one veth pair between them."""
    group = NetnsGroup()
    try:
        client, server = group.add(f"{prefix}c"), group.add(f"{prefix}s")
        veth(client, "eth0", server, "eth0")
        address(client, "eth0", "203.0.113.10/24")
        address(server, "eth0", f"{SERVER_IP}/24")
        tx_off(client, "eth0")
        tx_off(server, "eth0")
        yield Path("no NAT", client, server)
    finally:
        group.cleanup()


@contextmanager
def _bridge(prefix: str, client_cidr: str = "203.0.113.10/24"
            ) -> Iterator[tuple[str, str, str]]:
    """Client (at ``client_cidr``) and server namespaces, joined by a userspace OVS
    bridge in secure fail mode, the client on OpenFlow port :data:`CLIENT_OFPORT` and the
    server on :data:`SERVER_OFPORT`; yields (client, server, bridge)."""
    group = NetnsGroup()
    bridge = f"br-{prefix}"
    try:
        client, server = group.add(f"{prefix}c"), group.add(f"{prefix}s")
        ports = (f"{prefix}-c", f"{prefix}-s")
        for netns, port, ip in ((client, ports[0], client_cidr),
                                (server, ports[1], f"{SERVER_IP}/24")):
            veth(netns, "eth0", None, port)
            address(netns, "eth0", ip)
            tx_off(netns, "eth0")
            tx_off(None, port)
        run(["ovs-vsctl", "--", "add-br", bridge, "--", "set", "bridge", bridge,
             "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
             "other-config:disable-in-band=true",
             "--", "add-port", bridge, ports[0], "--", "set", "interface", ports[0],
             f"ofport_request={CLIENT_OFPORT}",
             "--", "add-port", bridge, ports[1], "--", "set", "interface", ports[1],
             f"ofport_request={SERVER_OFPORT}"])
        yield client, server, bridge
    finally:
        run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
        group.cleanup()


@contextmanager
def plain_ovs(prefix: str = "bovs") -> Iterator[Path]:
    """No NAT through OVS: one static flood entry, no controller."""
    with _bridge(prefix) as (client, server, bridge):
        run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", bridge, "priority=0,actions=flood"])
        yield Path("plain OVS", client, server, bridge=bridge)


def _mac(netns: str) -> str:
    mac: str = json.loads(ns_run(netns, "ip", "-j", "link", "show", "eth0"))[0]["address"]
    return mac


def conntrack_flows(zone: int, client_ip: str, client_mac: str, server_mac: str,
                    public_ip: str = PUBLIC_IP, ports: tuple[int, int] = CT_PORTS
                    ) -> list[str]:
    """The ``ovs-conntrack`` peer's flows (``ovs-ofctl`` syntax): the tables of the
    gateway's ``ordinary_nat = conntrack`` pipeline for one inside host, static.

    0: the host's packets, and packets to the public address: ``dec_ttl``, then the
    tracker (``nat``: un-NAT what it knows) -> 1 or 3. 1: a new connection of the host is
    committed with ``nat(src=PUBLIC:PORTS)`` -> 2; established, related, or new and
    already translated -> 2. 2: only what the tracker translated (``+snat``) leaves, to
    the server. 3: replies (established or related) go to the host. Anything else is
    dropped.
    """
    out = (f"set_field:{GATEWAY_MAC}->eth_src,set_field:{server_mac}->eth_dst,"
           f"output:{SERVER_OFPORT}")
    back = (f"set_field:{GATEWAY_MAC}->eth_src,set_field:{client_mac}->eth_dst,"
            f"output:{CLIENT_OFPORT}")
    low, high = ports
    return [
        f"table=0,priority=100,ip,in_port={CLIENT_OFPORT},dl_src={client_mac},"
        f"nw_src={client_ip},actions=dec_ttl,ct(zone={zone},nat,table=1)",
        f"table=0,priority=100,ip,in_port={SERVER_OFPORT},nw_dst={public_ip},"
        f"actions=dec_ttl,ct(zone={zone},nat,table=3)",
        "table=0,priority=0,actions=drop",
        f"table=1,priority=200,ct_state=+trk+new-inv-snat,ip,nw_src={client_ip},"
        f"actions=ct(commit,zone={zone},nat(src={public_ip}:{low}-{high}),table=2)",
        *(f"table=1,priority=100,ct_state={state},ip,actions=goto_table:2"
          for state in ("+trk+est-inv", "+trk+rel-inv", "+trk+new+snat-inv")),
        "table=1,priority=0,actions=drop",
        f"table=2,priority=200,ct_state=+trk+snat,ip,nw_dst={SERVER_IP},actions={out}",
        "table=2,priority=0,actions=drop",
        *(f"table=3,priority=200,ct_state={state},ip,nw_dst={client_ip},actions={back}"
          for state in ("+trk+est-inv", "+trk+rel-inv")),
        "table=3,priority=0,actions=drop",
    ]


def flush_zone(zone: int) -> None:
    """Forget the connections of the tracker's ``zone`` (nothing when no userspace
    datapath is left)."""
    run(["ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}"], check=False)


@contextmanager
def ovs_conntrack(prefix: str = "bovct") -> Iterator[Path]:
    """NAT through OVS conntrack, no controller: the client at ``192.168.1.1`` behind the
    public address ``203.0.113.2``, static neighbour entries for the gateway's MAC in both
    namespaces, :func:`conntrack_flows` in zone :data:`OVS_CT_ZONE`."""
    with _bridge(prefix, f"{CLIENT_IP}/24") as (client, server, bridge):
        flush_zone(OVS_CT_ZONE)
        try:
            ns_run(client, "ip", "route", "add", "default", "via", INSIDE_GATEWAY)
            ns_run(client, "ip", "neigh", "replace", INSIDE_GATEWAY, "lladdr", GATEWAY_MAC,
                   "dev", "eth0")
            ns_run(server, "ip", "neigh", "replace", PUBLIC_IP, "lladdr", GATEWAY_MAC,
                   "dev", "eth0")
            for flow in conntrack_flows(OVS_CT_ZONE, CLIENT_IP, _mac(client), _mac(server)):
                run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", bridge, flow])
            yield Path("ovs-conntrack", client, server, bridge=bridge)
        finally:
            flush_zone(OVS_CT_ZONE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def bare_ryu(prefix: str = "bbare") -> Iterator[Path]:
    """No NAT through OVS and the bare Ryu app, which floods every packet-in."""
    port = _free_port()
    with _bridge(prefix) as (client, server, bridge):
        # ryu_apps.framework follows the manager: never a PPTP_ALG_FRAMEWORK of the caller's
        env = dict(os.environ, PYTHONPATH=str(REPO), PPTP_ALG_FRAMEWORK="ryu")
        ryu = FilePath(sys.executable).with_name("ryu-manager")
        proc = subprocess.Popen(
            [str(ryu), "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
             str(port), str(REPO / "bench" / "bare_ryu.py")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            run(["ovs-vsctl", "set-controller", bridge, f"tcp:127.0.0.1:{port}",
                 "--", "set", "controller", bridge, "connection_mode=out-of-band",
                 "max_backoff=1000"])
            while "CONTROLLER" not in run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                                           bridge]):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the bare Ryu app did not install its entry")
                time.sleep(0.2)
            yield Path("bare Ryu", client, server, controller_pid=proc.pid, bridge=bridge)
        finally:
            proc.kill()
            proc.wait()
