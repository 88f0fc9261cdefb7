"""The peers' topologies: the same client and server namespaces, and one thing between.

Each is a context manager yielding a :class:`Path` (client namespace, server namespace,
server address) and removing everything it made, whatever happens:

* :func:`gateway`: the project's lab (``topo.lab``) under its own name, with the options
  of :data:`BENCH_OPTIONS`: the bench is one inside host making thousands of control
  connections and calls, which the hardening's per-host bounds and punt meters would
  otherwise refuse (they are what they are for; the bench measures speed, not them).
* :func:`reference`: the Linux netfilter PPTP NAT (``topo.reference_nat``).
* :func:`direct`: no NAT at all, the client on the server's subnet over one veth pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from topo import lab
from topo.netns import NetnsGroup, address, tx_off, veth
from topo.reference_nat import build_reference_nat

SERVER_IP = "203.0.113.1"
BENCH_OPTIONS = {
    "max_calls_per_connection": "16384",
    "max_calls": "200000",
    "max_connections_per_host": "100000",
    "max_handshakes_per_host": "4096",
    "max_sessions_per_host": "200000",
    "punt_rate_inside_port": "1000000",
    "punt_rate_outside_control": "1000000",
    "punt_rate_gre": "1000000",
}


@dataclass(frozen=True)
class Path:
    """Where a peer's client and server run."""

    name: str
    client: str
    server: str
    server_ip: str = SERVER_IP
    controller_pid: int | None = None


@contextmanager
def gateway(name: str = "bench", options: dict[str, str] | None = None) -> Iterator[Path]:
    """The project's gateway, lab ``name`` (replaced if it exists, removed after)."""
    state = lab.up(1, name=name, replace=True, options={**BENCH_OPTIONS, **(options or {})})
    try:
        yield Path("gateway", state.client(1), state.server_namespace,
                   controller_pid=state.controller_pid)
    finally:
        lab.down(name=name, purge=True)


@contextmanager
def reference(prefix: str = "bref") -> Iterator[Path]:
    """The Linux reference NAT."""
    topo = build_reference_nat(prefix, 1)
    try:
        yield Path("linux", topo.clients[0], topo.server, topo.server_ip)
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
