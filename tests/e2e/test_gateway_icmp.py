"""ICMP through the gateway, end to end: traceroute from a client, and path-MTU discovery
through a router with a smaller MTU on the outside path (RFC 5508, RFC 1191)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.gateway_lab import SERVER_IP, GatewayLab
from tests.e2e.netns import ns, sh

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
INSIDE_GATEWAY = "192.168.1.254"
HOP = re.compile(r"^\s*(\d+)\s+(\S+)", re.MULTILINE)
FAR_IP = "198.18.0.2"
ROUTER_FAR_IP = "198.18.0.1"
SMALL_MTU = 1280
PORT = 5001
SIZE = 300_000


def traceroute(gw: GatewayLab) -> dict[int, str]:
    """A UDP traceroute from c1 to the server, one probe per hop, every probe from one
    source port to one destination port (so that the later ones share a NAT session)."""
    out = ns(gw.client(1), "traceroute", "-n", "-U", "-p", "5000", "--sport=40000", "-q", "1",
             "-w", "3", "-m", "4", SERVER_IP, timeout=40)
    return {int(hop): address for hop, address in HOP.findall(out)}


def app_counters(gw: GatewayLab) -> dict[str, int]:
    counters: dict[str, int] = gw.rest("/pptp-alg/counters")["app"]
    return counters


@pytest.mark.parametrize("ordinary_nat", ["controller", "conntrack"])
def test_traceroute_shows_the_gateway_then_the_server_on_either_path(
        gateway: Factory, ordinary_nat: str) -> None:
    """With the datapath's NAT the server's port unreachable is the tracker's (related to
    the probe's connection), not the controller's to translate."""
    gw = gateway(1, options={"ordinary_nat": ordinary_nat})
    by_controller = int(ordinary_nat == "controller")
    assert traceroute(gw) == {1: INSIDE_GATEWAY, 2: SERVER_IP}
    first = gw.counters()
    assert first["time_exceeded_sent"] == 1  # the first probe, on the controller path
    assert first["icmp_errors_translated"] == by_controller  # the port unreachable
    assert app_counters(gw)["ttl_expired_on_flow"] == 0

    # Again: the session (or the host's entries) of the second probe now carries the
    # first on entries whose TTL decrement hands the spent probe to the controller.
    assert traceroute(gw) == {1: INSIDE_GATEWAY, 2: SERVER_IP}
    assert app_counters(gw)["ttl_expired_on_flow"] == 1
    second = gw.counters()
    assert second["time_exceeded_sent"] == 2
    assert second["icmp_errors_translated"] == 2 * by_controller
    assert second["icmp_errors_unmatched"] == 0


@contextlib.contextmanager
def far_network(gw: GatewayLab) -> Iterator[str]:
    """The server's namespace as a router to a far host behind a link whose MTU is
    :data:`SMALL_MTU` toward the far host; yields the far host's namespace."""
    tag = gw.state.name
    far, router_end, far_end = f"{tag}-far", f"{tag}-rt", f"{tag}-fh"
    sh(["ip", "netns", "add", far])
    try:
        sh(["ip", "link", "add", router_end, "netns", gw.server, "type", "veth", "peer",
            "name", far_end, "netns", far])
        ns(gw.server, "ip", "link", "set", router_end, "mtu", str(SMALL_MTU), "up")
        ns(gw.server, "ip", "address", "add", f"{ROUTER_FAR_IP}/24", "dev", router_end)
        ns(gw.server, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        ns(far, "ip", "link", "set", "lo", "up")
        ns(far, "ip", "link", "set", far_end, "up")
        ns(far, "ip", "address", "add", f"{FAR_IP}/24", "dev", far_end)
        ns(far, "ip", "route", "add", "default", "via", ROUTER_FAR_IP)
        for space, device in ((gw.server, router_end), (far, far_end)):
            ns(space, "ethtool", "-K", device, "tx", "off", check=False)
        yield far
    finally:
        sh(["ip", "netns", "del", far], check=False)


@pytest.mark.parametrize("ordinary_nat", ["controller", "conntrack"])
def test_fragmentation_needed_from_a_router_outside_makes_tcp_shrink_its_segments(
    gateway: Factory, tmp_path: Path, ordinary_nat: str
) -> None:
    """Path-MTU discovery through either NAT: the controller translates the router's
    error, or the tracker relates it to the connection and un-NATs it."""
    gw = gateway(1, options={"next_hop": SERVER_IP, "ordinary_nat": ordinary_nat})
    with far_network(gw) as far:
        received = tmp_path / "received"
        sink = subprocess.Popen(
            ["ip", "netns", "exec", far, "socat", "-u", f"TCP-LISTEN:{PORT},reuseaddr",
             f"CREATE:{received}"], stderr=subprocess.PIPE)
        try:
            sent = tmp_path / "sent"
            sent.write_bytes(os.urandom(SIZE))
            ns(gw.client(1), "sh", "-c", f"sleep 0.5; socat -u FILE:{sent} "
               f"TCP:{FAR_IP}:{PORT}", timeout=30)
            sink.wait(timeout=10)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        assert received.read_bytes() == sent.read_bytes()
        route = ns(gw.client(1), "ip", "route", "get", FAR_IP)
        assert f"mtu {SMALL_MTU}" in route, route
    counters = gw.counters()
    if ordinary_nat == "controller":
        assert counters["icmp_errors_translated"] >= 1
    else:
        assert counters["icmp_errors_translated"] == 0
    assert counters["icmp_errors_unmatched"] == 0
