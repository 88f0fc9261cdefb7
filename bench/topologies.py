"""The peers' topologies: the same client and server namespaces, and one thing between.

Each is a context manager yielding a :class:`Path` (client namespace, server namespace,
server address) and removing everything it made, whatever happens:

* :func:`gateway`: the project's lab (``topo.lab``) under its own name, with the options
  of :data:`BENCH_OPTIONS`: the bench is one inside host making thousands of control
  connections and calls, which the hardening's per-host bounds and punt meters would
  otherwise refuse (they are what they are for; the bench measures speed, not them).
* :func:`reference`: the Linux netfilter PPTP NAT (``topo.reference_nat``).
* :func:`direct`: no NAT at all, the client on the server's subnet over one veth pair.
* :func:`plain_ovs`: no NAT, an OVS bridge of the lab's kind (userspace datapath)
  between client and server, one static flood entry, no controller: the limit of the
  data plane.
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
from dataclasses import dataclass
from pathlib import Path as FilePath

from topo import lab
from topo.netns import NetnsGroup, address, run, tx_off, veth
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
}


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
def _bridge(prefix: str) -> Iterator[tuple[str, str, str]]:
    """Client and server namespaces on one subnet, joined by a userspace OVS bridge in
    secure fail mode; yields (client, server, bridge)."""
    group = NetnsGroup()
    bridge = f"br-{prefix}"
    try:
        client, server = group.add(f"{prefix}c"), group.add(f"{prefix}s")
        ports = (f"{prefix}-c", f"{prefix}-s")
        for netns, port, ip in ((client, ports[0], "203.0.113.10/24"),
                                (server, ports[1], f"{SERVER_IP}/24")):
            veth(netns, "eth0", None, port)
            address(netns, "eth0", ip)
            tx_off(netns, "eth0")
            tx_off(None, port)
        run(["ovs-vsctl", "--", "add-br", bridge, "--", "set", "bridge", bridge,
             "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
             "other-config:disable-in-band=true",
             "--", "add-port", bridge, ports[0], "--", "add-port", bridge, ports[1]])
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
