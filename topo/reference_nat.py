"""The reference PPTP NAT: the lab's addresses with a Linux router namespace as gateway.

Linux netfilter has a PPTP conntrack/NAT helper (``nf_conntrack_pptp``, ``nf_nat_pptp``)
built into these kernels, so the same real peers and traffic can run through it and
through the project's gateway, and be compared. The topology uses the lab's addresses
(see ARCHITECTURE.md, "The lab"), with veth pairs and a Linux bridge instead of OVS::

    client i (PREFIX c<i>): eth0 192.168.1.<i>/24, default via 192.168.1.254
        |  veth
    router (PREFIX r): bridge brin 192.168.1.254/24 (ports in<i>); out0 203.0.113.2/24
        |  veth                MASQUERADE out of out0, CT helper pptp on TCP 1723
    server (PREFIX s): eth0 203.0.113.1/24

Transmit offload is off on every veth end. ``build_reference_nat`` returns the names and
addresses; ``ReferenceNat.cleanup`` deletes the namespaces (everything else goes with
them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from topo.netns import NetnsGroup, address, bridge, ns_run, route, sysctl, tx_off, veth

INSIDE_PREFIX = "192.168.1."
INSIDE_LEN = 24
GATEWAY_INSIDE = "192.168.1.254"
GATEWAY_OUTSIDE = "203.0.113.2"
SERVER_IP = "203.0.113.1"
OUTSIDE_LEN = 24
ROUTER_OUTSIDE_IF = "out0"
ROUTER_BRIDGE = "brin"


@dataclass
class ReferenceNat:
    """A built reference topology.

    Attributes:
        clients: The client namespaces, client i first at index i-1.
        client_ips: Their addresses (``192.168.1.<i>``).
        router: The router namespace (the NAT).
        server: The server namespace.
        server_ip: The server's address.
        public_ip: The router's outside address (what the server sees).
        group: The namespaces, for cleanup.
    """

    clients: list[str]
    client_ips: list[str]
    router: str
    server: str
    server_ip: str = SERVER_IP
    public_ip: str = GATEWAY_OUTSIDE
    group: NetnsGroup = field(default_factory=NetnsGroup)

    def conntrack(self) -> str:
        """Return the router's connection-tracking table (``/proc/net/nf_conntrack``)."""
        return ns_run(self.router, "cat", "/proc/net/nf_conntrack", check=False)

    def iptables_counters(self) -> str:
        """Return the router's nat and raw tables with packet counters."""
        return "".join(
            ns_run(self.router, "iptables", "-t", table, "-L", "-n", "-v", "-x", check=False)
            for table in ("raw", "nat")
        )

    def cleanup(self) -> None:
        """Delete every namespace of the topology."""
        self.group.cleanup()

    def __enter__(self) -> ReferenceNat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def build_reference_nat(prefix: str, n_clients: int = 3, *, pptp_helper: bool = True
                        ) -> ReferenceNat:
    """Build the clients, the Linux NAT router and the server in fresh namespaces.

    Args:
        prefix: Start of every namespace name (make it unique, e.g. with
            ``topo.netns.unique_name("rp")``).
        n_clients: How many client namespaces (1 to 253).
        pptp_helper: Attach the PPTP conntrack helper to TCP port 1723 (without it the
            router is a plain MASQUERADE, which breaks PPTP for more than one client).

    Returns:
        The topology; on an error, whatever was built is deleted before the raise.
    """
    if not 1 <= n_clients <= 253:
        raise ValueError("n_clients must be between 1 and 253")
    group = NetnsGroup()
    try:
        router = group.add(f"{prefix}r")
        server = group.add(f"{prefix}s")
        clients = [group.add(f"{prefix}c{i}") for i in range(1, n_clients + 1)]
        client_ips = [f"{INSIDE_PREFIX}{i}" for i in range(1, n_clients + 1)]

        veth(router, ROUTER_OUTSIDE_IF, server, "eth0")
        address(router, ROUTER_OUTSIDE_IF, f"{GATEWAY_OUTSIDE}/{OUTSIDE_LEN}")
        address(server, "eth0", f"{SERVER_IP}/{OUTSIDE_LEN}")
        tx_off(router, ROUTER_OUTSIDE_IF)
        tx_off(server, "eth0")

        ports = []
        for i, (client, ip) in enumerate(zip(clients, client_ips, strict=True), start=1):
            port = f"in{i}"
            veth(client, "eth0", router, port)
            address(client, "eth0", f"{ip}/{INSIDE_LEN}")
            route(client, "default", GATEWAY_INSIDE)
            tx_off(client, "eth0")
            tx_off(router, port)
            ports.append(port)
        bridge(router, ROUTER_BRIDGE, ports)
        address(router, ROUTER_BRIDGE, f"{GATEWAY_INSIDE}/{INSIDE_LEN}")

        sysctl(router, "net.ipv4.ip_forward", "1")
        ns_run(router, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", ROUTER_OUTSIDE_IF,
               "-j", "MASQUERADE")
        if pptp_helper:
            ns_run(router, "iptables", "-t", "raw", "-A", "PREROUTING", "-p", "tcp",
                   "--dport", "1723", "-j", "CT", "--helper", "pptp")
    except BaseException:
        group.cleanup()
        raise
    return ReferenceNat(clients, client_ips, router, server, group=group)
