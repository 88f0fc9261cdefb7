"""What OVS connection tracking with NAT does on this machine's userspace datapath.

Ten checks, each printed as ``PASS``, ``FAIL`` or ``FACT`` lines with their numbers
(``docs/conntrack.md`` says what they showed and what they mean for the design):

1. ICMP echo identifiers: two inside hosts, the same identifier, one public address.
2. Address ranges: ``nat(src=A1-A2)`` and one inside host's flows; a per-host entry.
3. Port ranges: which public ports ``nat(src=A:20000-30000)`` picks; a range too small.
4. Zone limits (``dpctl/ct-set-limits``): how many new connections pass, from whom.
5. Two bridges: one connection table? The same zone and addresses on both.
6. Lost state (``dpctl/flush-conntrack`` of the probe's zone; ovs-vswitchd itself is
   not restarted): what an existing TCP connection does next.
7. Fragments: a 3,000-byte UDP datagram, and fragments smaller than ipf's minimum.
8. ICMP errors: port unreachable for a NATed UDP datagram (``ct_state=+rel``).
9. GRE (protocol 47) through ``ct(commit,nat)``.
10. New TCP connections per second through ct NAT and through plain forwarding; a
    public port used again once conntrack has forgotten it (the server in TIME-WAIT).

Checks 1, 3 and 4 also run with a guard: the commit recirculates, and only what it
translated (``ct_state=+snat``) goes out.

Everything lives in namespaces, two bridges and conntrack zones of the probe's own
(random names and zone numbers), removed in ``finally``. The probe starts no process but
the commands it waits for (``ip``, ``ss``, ``ovs-*``): its sockets are made inside the namespaces
(``setns`` on this thread around each socket's creation) and driven from this thread.

Run: ``python -m bench.ct_probe [--show-flows] [--checks 1,2,...]`` (as root).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType

from topo.netns import (
    NetnsGroup,
    address,
    del_link,
    link_up,
    ns_run,
    route,
    run,
    sysctl,
    tx_off,
    veth,
)

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IPPROTO_GRE = 47

GATEWAY_MAC = "02:00:00:00:00:fe"
INSIDE_GATEWAY = "192.168.1.254"
SERVER_IP = "203.0.113.1"
SERVER_EXTRA = [f"203.0.113.{n}" for n in range(11, 16)]
SERVER_ROUTER = "203.0.113.254"
PUBLIC = ["203.0.113.2", "203.0.113.3"]
SERVER_PORT = 100
UDP_PORT = 7000
TCP_PORT = 7001
CLOSED_PORT = 9
TIME_LIMIT = 600

ETHER = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
PORTS = struct.Struct("!HH")
ICMP = struct.Struct("!BBHHH")
GRE = struct.Struct("!HHHH")

COOKIES = {
    0x11: "out_new", 0x12: "out_est", 0x13: "out_rel", 0x14: "out_inv", 0x15: "out_other",
    0x16: "out_new_snat", 0x17: "out_guard_pass", 0x18: "out_guard_drop",
    0x21: "in_est", 0x22: "in_rel", 0x23: "in_new", 0x24: "in_inv", 0x25: "in_other",
}
_COOKIE = {name: value for value, name in COOKIES.items()}
_FLOW_LINE = re.compile(r"cookie=(0x[0-9a-f]+),.*?n_packets=(\d+)")
_IPF_LINE = re.compile(r"^\s*(v4 frags [a-z ]+):\s*(\d+)", re.M)

_LIBC = ctypes.CDLL(None, use_errno=True)


class ProbeTimeoutError(Exception):
    """The whole probe ran past :data:`TIME_LIMIT`."""


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Put this thread in namespace ``name`` for the block; sockets made there stay there.

    Args:
        name: A namespace made by ``ip netns add``.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, \
            open(f"/run/netns/{name}", "rb") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def checksum(data: bytes) -> int:
    """The Internet checksum of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


@dataclass(frozen=True)
class Seen:
    """One IPv4 packet as a sniffer or a raw socket saw it.

    Attributes:
        src: Source address.
        dst: Destination address.
        proto: IP protocol.
        length: IP total length.
        offset: Fragment offset in bytes.
        more: The more-fragments flag.
        sport: Source port, or the echo identifier of an ICMP echo.
        dport: Destination port.
        icmp_type: ICMP type, for ICMP.
        inner: An ICMP error's quoted (src, dst, sport, dport).
        gre_key: The key field of an enhanced GRE header.
    """

    src: str
    dst: str
    proto: int
    length: int
    offset: int = 0
    more: bool = False
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    inner: tuple[str, str, int, int] | None = None
    gre_key: int | None = None


def parse_ipv4(data: bytes) -> Seen | None:
    """Read an IPv4 packet (from its IP header on); None when it is not one."""
    if len(data) < IPV4.size or data[0] >> 4 != 4:
        return None
    _vihl, _tos, length, _ident, frag, _ttl, proto, _csum, src, dst = IPV4.unpack_from(data)
    start = (data[0] & 0x0F) * 4
    seen = Seen(socket.inet_ntoa(src), socket.inet_ntoa(dst), proto, length,
                (frag & 0x1FFF) * 8, bool(frag & 0x2000))
    if seen.offset:
        return seen
    body = data[start:]
    if proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP) and len(body) >= PORTS.size:
        sport, dport = PORTS.unpack_from(body)
        return replace(seen, sport=sport, dport=dport)
    if proto == socket.IPPROTO_ICMP and len(body) >= ICMP.size:
        kind, _code, _sum, ident, _seq = ICMP.unpack_from(body)
        if kind in (0, 8):
            return replace(seen, icmp_type=kind, sport=ident)
        quoted = parse_ipv4(body[ICMP.size:])
        inner = None
        if quoted is not None and quoted.sport is not None and quoted.dport is not None:
            inner = (quoted.src, quoted.dst, quoted.sport, quoted.dport)
        return replace(seen, icmp_type=kind, inner=inner)
    if proto == IPPROTO_GRE and len(body) >= GRE.size + 2:
        flags, _ptype, _plen, key = GRE.unpack_from(body)
        return replace(seen, gre_key=key if flags & 0x2000 else None)
    return seen


@dataclass
class Site:
    """One bridge with its inside hosts (OpenFlow ports 1..n) and its server (port 100)."""

    index: int
    bridge: str
    hosts: list[str]
    server: str

    @staticmethod
    def host_ip(i: int) -> str:
        """The address of host ``i`` (from 0)."""
        return f"192.168.1.{i + 1}"

    def host_mac(self, i: int) -> str:
        """The MAC address of host ``i``."""
        return f"02:00:00:00:{self.index:02x}:{i + 1:02x}"

    @property
    def server_mac(self) -> str:
        """The server's MAC address."""
        return f"02:00:00:00:{self.index:02x}:64"


@dataclass
class Round:
    """UDP datagrams sent from one namespace and what came of them.

    Attributes:
        at_server: (payload, source address, source port) as the server got them.
        replies: How many of the client's sockets got their echo.
        sent: How many datagrams were sent.
    """

    at_server: list[tuple[str, str, int]] = field(default_factory=list)
    replies: int = 0
    sent: int = 0

    def sources(self) -> Counter[str]:
        """How many datagrams came from each source address."""
        return Counter(src for _tag, src, _port in self.at_server)


class Probe:
    """The probe's namespaces, bridges, zones and sockets, and its checks."""

    def __init__(self, show_flows: bool) -> None:
        self.show_flows = show_flows
        self.tag = uuid.uuid4().hex[:5]
        self.group = NetnsGroup()
        self.bridges: list[str] = []
        self.links: list[str] = []
        self.sockets: list[socket.socket] = []
        self.used_zones: set[int] = set()
        self.limited_zones: set[int] = set()
        self.zone_base = random.randrange(0xA000, 0xF000, 0x40)
        self.findings: list[tuple[int, str, str]] = []
        self.sites: list[Site] = []

    # -- plumbing -------------------------------------------------------------------

    def zone(self, n: int) -> int:
        """The probe's zone number ``n``, remembered for the final flush."""
        zone = self.zone_base + n
        self.used_zones.add(zone)
        return zone

    def say(self, check: int, verdict: str, text: str) -> None:
        """Print and keep one finding."""
        self.findings.append((check, verdict, text))
        print(f"{verdict} {check}: {text}", flush=True)

    def build(self) -> None:
        """Make two sites: bridge 1 with two inside hosts, bridge 2 with two more."""
        for index in (1, 2):
            self.sites.append(self.build_site(index, 2))

    def build_site(self, index: int, n_hosts: int) -> Site:
        """Make one bridge with ``n_hosts`` inside hosts and a server, all namespaces."""
        prefix = f"ctp{self.tag}{index}"
        bridge = f"br-{prefix}"
        hosts = [self.group.add(f"{prefix}h{i + 1}") for i in range(n_hosts)]
        server = self.group.add(f"{prefix}s")
        site = Site(index, bridge, hosts, server)
        ports: list[tuple[str, int]] = []
        for i, ns in enumerate(hosts):
            port = f"{prefix}-h{i + 1}"
            self._endpoint(ns, port, site.host_mac(i), f"{site.host_ip(i)}/24")
            ports.append((port, i + 1))
            route(ns, "default", INSIDE_GATEWAY)
            self._neighbour(ns, INSIDE_GATEWAY)
        port = f"{prefix}-s"
        self._endpoint(server, port, site.server_mac, f"{SERVER_IP}/24")
        ports.append((port, SERVER_PORT))
        for extra in SERVER_EXTRA:
            ns_run(server, "ip", "addr", "add", f"{extra}/32", "dev", "eth0")
        for neighbour in [*PUBLIC, SERVER_ROUTER]:
            self._neighbour(server, neighbour)
        route(server, "192.168.1.0/24", SERVER_ROUTER)
        argv = ["ovs-vsctl", "--timeout=10", "--", "add-br", bridge, "--", "set", "bridge",
                bridge, "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
                "other-config:disable-in-band=true"]
        for name, ofport in ports:
            argv += ["--", "add-port", bridge, name,
                     "--", "set", "interface", name, f"ofport_request={ofport}"]
        self.bridges.append(bridge)
        run(argv)
        return site

    def _endpoint(self, ns: str, port: str, mac: str, cidr: str) -> None:
        self.links.append(port)
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        veth(ns, "eth0", None, port, up=False)
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{port}.disable_ipv6=1"], check=False)
        ns_run(ns, "ip", "link", "set", "eth0", "address", mac)
        address(ns, "eth0", cidr)
        link_up(None, port)
        tx_off(ns, "eth0")
        tx_off(None, port)

    @staticmethod
    def _neighbour(ns: str, ip: str) -> None:
        ns_run(ns, "ip", "neigh", "replace", ip, "lladdr", GATEWAY_MAC, "dev", "eth0",
               "nud", "permanent")

    def cleanup(self) -> None:
        """Remove everything the probe made, whatever state it is in."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        for zone in sorted(self.limited_zones):
            appctl("dpctl/ct-del-limits", f"zone={zone}", check=False)
        for zone in sorted(self.used_zones):
            appctl("dpctl/flush-conntrack", f"zone={zone}", check=False)
        for bridge in self.bridges:
            run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge], check=False)
        for link in self.links:
            del_link(link)
        self.group.cleanup()

    def install(self, site: Site, flows: Sequence[str], label: str) -> None:
        """Replace the flows of ``site``'s bridge."""
        run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", site.bridge])
        if self.show_flows:
            print(f"# flows: {label} (bridge {site.index})")
        for flow in flows:
            if self.show_flows:
                print(f"#   {flow}")
            run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", site.bridge, flow])

    def sock(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket made inside namespace ``ns``, closed at cleanup at the latest."""
        with in_netns(ns):
            sock = socket.socket(family, kind, proto)
        self.sockets.append(sock)
        return sock

    def drop(self, socks: Sequence[socket.socket]) -> None:
        """Close ``socks`` now."""
        for sock in socks:
            sock.close()
            if sock in self.sockets:
                self.sockets.remove(sock)

    # -- traffic ----------------------------------------------------------------------

    def udp_server(self, ns: str, bind: str = "0.0.0.0", port: int = UDP_PORT
                   ) -> socket.socket:
        """A UDP socket of ``ns`` on ``bind``:``port``."""
        sock = self.sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.setblocking(False)
        return sock

    def udp_round(self, ns: str, servers: Sequence[socket.socket], targets: Sequence[str],
                  sports: Sequence[int], size: int = 0, dport: int = UDP_PORT) -> Round:
        """One datagram from each of ``sports`` (0: any) of ``ns`` to the targets in
        turn; the servers echo what they get; counted at both ends."""
        clients = []
        result = Round()
        for n, sport in enumerate(sports):
            sock = self.sock(ns, socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", sport))
            sock.setblocking(False)
            tag = f"{ns}:{sock.getsockname()[1]}".encode()
            sock.sendto(tag + b"." * max(0, size - len(tag)), (targets[n % len(targets)], dport))
            clients.append(sock)
            result.sent += 1
        result.at_server = serve_udp(servers)
        result.replies = count_replies(clients)
        self.drop(clients)
        return result

    def tcp_server(self, ns: str, port: int = TCP_PORT) -> socket.socket:
        """A listening TCP socket of ``ns``."""
        sock = self.sock(ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def tcp_connect(self, ns: str, sport: int = 0, dst: str = SERVER_IP,
                    timeout: float = 2.0) -> socket.socket | None:
        """A connected TCP socket from ``ns``, or None when the handshake failed."""
        sock = self.sock(ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", sport))
        sock.settimeout(timeout)
        try:
            sock.connect((dst, TCP_PORT))
        except OSError:
            self.drop([sock])
            return None
        return sock

    def accepted(self, listener: socket.socket, want: int = 1, limit: float = 1.0
                 ) -> list[tuple[socket.socket, tuple[str, int]]]:
        """The connections waiting on ``listener``, waiting up to ``limit`` for ``want``
        (a client's ``connect`` returns before the server has the handshake's last ACK)."""
        got: list[tuple[socket.socket, tuple[str, int]]] = []
        deadline = time.monotonic() + limit
        while True:
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                if len(got) >= want or time.monotonic() > deadline:
                    return got
                select.select([listener], [], [], 0.05)
                continue
            self.sockets.append(conn)
            got.append((conn, (str(peer[0]), int(peer[1]))))

    def sniffer(self, ns: str, ifname: str = "eth0") -> socket.socket:
        """A packet socket of ``ns`` on ``ifname``."""
        sock = self.sock(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((ifname, 0))
        sock.setblocking(False)
        return sock

    # -- flows ------------------------------------------------------------------------

    @staticmethod
    def to_server(site: Site) -> str:
        """Actions that send a packet to the server."""
        return (f"set_field:{GATEWAY_MAC}->eth_src,set_field:{site.server_mac}->eth_dst,"
                f"output:{SERVER_PORT}")

    @staticmethod
    def to_host(site: Site, i: int) -> str:
        """Actions that send a packet to host ``i``."""
        return (f"set_field:{GATEWAY_MAC}->eth_src,set_field:{site.host_mac(i)}->eth_dst,"
                f"output:{i + 1}")

    def nat_flows(self, site: Site, zone: int, snat: dict[int, str], *,
                  commit_all: bool = False, guard: bool = False) -> list[str]:
        """Source NAT of the hosts of ``snat`` (host -> ``nat(...)`` argument).

        Outbound ``ct(zone,nat,table=1)``; table 1 commits ``+new`` with the host's NAT
        and passes ``+est``, ``+rel`` and ``+new+snat`` (a committed connection that has
        seen no reply yet, translated by the first ct already). Inbound
        ``ct(zone,nat,table=2)``; table 2 passes ``+est`` and ``+rel`` to the host. Every
        other state is dropped by an entry of its own cookie (:data:`COOKIES`). With
        ``commit_all``, outbound is one step: ``ct(commit,zone,nat(...))`` and out,
        whatever the state. With ``guard``, the commit recirculates to table 3, which
        sends out only what has ``+snat`` (what the commit translated) and drops the rest.
        """
        c = _COOKIE
        flows = []
        for i, spec in snat.items():
            ip = site.host_ip(i)
            if commit_all:
                flows.append(f"table=0,priority=100,ip,in_port={i + 1},"
                             f"actions=ct(commit,zone={zone},nat({spec})),{self.to_server(site)}")
            else:
                flows.append(f"table=0,priority=100,ip,in_port={i + 1},"
                             f"actions=ct(zone={zone},nat,table=1)")
                after = ",table=3)" if guard else f"),{self.to_server(site)}"
                flows.append(f"cookie={c['out_new']:#x},table=1,priority=100,ct_state=+new+trk,"
                             f"ip,nw_src={ip},actions=ct(commit,zone={zone},nat({spec}){after}")
            for state in ("est", "rel"):
                flows.append(f"cookie={c['in_' + state]:#x},table=2,priority=100,"
                             f"ct_state=+{state}+trk,ip,nw_dst={ip},"
                             f"actions={self.to_host(site, i)}")
        flows.append(f"table=0,priority=100,ip,in_port={SERVER_PORT},"
                     f"actions=ct(zone={zone},nat,table=2)")
        flows.append("table=0,priority=0,actions=drop")
        if not commit_all:
            flows.append(f"cookie={c['out_new_snat']:#x},table=1,priority=110,"
                         f"ct_state=+new+snat+trk,ip,actions={self.to_server(site)}")
            for state in ("est", "rel"):
                flows.append(f"cookie={c['out_' + state]:#x},table=1,priority=100,"
                             f"ct_state=+{state}+trk,ip,actions={self.to_server(site)}")
            flows.append(f"cookie={c['out_inv']:#x},table=1,priority=10,ct_state=+inv+trk,"
                         "actions=drop")
            flows.append(f"cookie={c['out_other']:#x},table=1,priority=0,actions=drop")
        if guard:
            flows.append(f"cookie={c['out_guard_pass']:#x},table=3,priority=100,"
                         f"ct_state=+snat+trk,ip,actions={self.to_server(site)}")
            flows.append(f"cookie={c['out_guard_drop']:#x},table=3,priority=0,actions=drop")
        for state in ("new", "inv"):
            flows.append(f"cookie={c['in_' + state]:#x},table=2,priority=10,"
                         f"ct_state=+{state}+trk,actions=drop")
        flows.append(f"cookie={c['in_other']:#x},table=2,priority=0,actions=drop")
        return flows

    def plain_flows(self, site: Site) -> list[str]:
        """Plain forwarding between the hosts and the server, no conntrack."""
        flows = [f"table=0,priority=100,ip,in_port={i + 1},actions={self.to_server(site)}"
                 for i in range(len(site.hosts))]
        flows += [f"table=0,priority=100,ip,in_port={SERVER_PORT},nw_dst={site.host_ip(i)},"
                  f"actions={self.to_host(site, i)}" for i in range(len(site.hosts))]
        flows.append("table=0,priority=0,actions=drop")
        return flows

    # -- the checks -------------------------------------------------------------------

    def check_icmp_ids(self) -> None:
        """1. Two hosts ping one server with the same identifier through one address:
        interleaved, then host 1's pings first; with a port range; with the guard."""
        site = self.sites[0]
        single = f"src={PUBLIC[0]}"
        ranged = f"src={PUBLIC[0]}:20000-30000"
        for n, spec, interleaved, guard in ((1, single, True, False),
                                            (15, single, False, False),
                                            (16, ranged, True, False),
                                            (17, single, True, True)):
            zone = self.zone(n)
            label = f"icmp ids, nat({spec})" + (", guarded" if guard else "")
            self.install(site, self.nat_flows(site, zone, {0: spec, 1: spec}, guard=guard),
                         label)
            self._pings(site, zone, interleaved, label)

    def _pings(self, site: Site, zone: int, interleaved: bool, label: str) -> None:
        sniff = self.sniffer(site.server)
        raws = [self.sock(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                for ns in site.hosts]
        ident, count = 0x4242, 3
        before = flow_counts(site.bridge)
        order = ([(seq, raw) for seq in range(1, count + 1) for raw in raws] if interleaved
                 else [(seq, raw) for raw in raws for seq in range(1, count + 1)])
        for seq, raw in order:
            raw.sendto(echo_request(ident, seq), (SERVER_IP, 0))
            time.sleep(0.05)
        got = [0] * len(raws)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and sum(got) < count * len(raws):
            ready, _, _ = select.select(raws, [], [], 0.1)
            for raw in ready:
                seen = parse_ipv4(raw.recv(65535))
                if seen and seen.icmp_type == 0 and seen.sport == ident \
                        and seen.src == SERVER_IP:
                    got[raws.index(raw)] += 1
        counts = flow_counts(site.bridge) - before
        requests = [s for s in sniffed(sniff) if s.icmp_type == 8]
        ids = Counter((s.src, s.sport) for s in requests)
        shown = ", ".join(f"{src} id={ident_:#06x} x{n}" for (src, ident_), n in ids.items())
        entries = conntrack(zone, "icmp")
        both = all(n == count for n in got)
        how = "interleaved" if interleaved else "host 1's three, then host 2's"
        self.say(1, "PASS" if both else "FAIL",
                 f"{label}: same echo id {ident:#06x} from 2 hosts ({how}): replies "
                 f"{got[0]}/{count} and {got[1]}/{count}; the server saw {shown}; table 1 "
                 f"+new {counts['out_new']} +est {counts['out_est']}; guard pass "
                 f"{counts['out_guard_pass']} drop {counts['out_guard_drop']}; "
                 f"{len(entries)} icmp entries in the zone")
        for line in entries:
            self.say(1, "FACT", f"entry: {line}")
        self.drop([sniff, *raws])

    def check_address_range(self) -> None:
        """2. Does ``nat(src=A1-A2)`` spread one host over both addresses?"""
        site = self.sites[0]
        zone = self.zone(2)
        pool = f"src={PUBLIC[0]}-{PUBLIC[1]}"
        self.install(site, self.nat_flows(site, zone, {0: pool, 1: pool}), "address range")
        main = self.udp_server(site.server)
        extra = [self.udp_server(site.server, ip) for ip in SERVER_EXTRA]
        one = self.udp_round(site.hosts[0], [main], [SERVER_IP], [0] * 20)
        self.say(2, "FACT", f"nat({pool}), 20 UDP flows, one host, one server: public "
                            f"sources {dict(one.sources())}, {one.replies}/20 echoed")
        many = self.udp_round(site.hosts[0], extra, SERVER_EXTRA, [0] * 20)
        self.say(2, "FACT", f"nat({pool}), 20 UDP flows, one host, 5 server addresses: "
                            f"public sources {dict(many.sources())}, {many.replies}/20 echoed")
        listener = self.tcp_server(site.server)
        conns = [self.tcp_connect(site.hosts[0]) for _ in range(20)]
        peers = self.accepted(listener, sum(c is not None for c in conns))
        tcp = Counter(ip for _conn, (ip, _port) in peers)
        self.say(2, "FACT", f"nat({pool}), 20 TCP connections, one host, one server: "
                            f"{sum(c is not None for c in conns)} connected, public sources "
                            f"{dict(tcp)}")
        spread = len(one.sources()) > 1 or len(many.sources()) > 1 or len(tcp) > 1
        self.say(2, "FACT", "one host's flows " + ("ARE spread over both addresses"
                                                    if spread else "stayed on one address"))
        self.drop([c for c in conns if c is not None] + [conn for conn, _ in peers])
        self.install(site, self.nat_flows(site, zone, {0: f"src={PUBLIC[0]}",
                                                       1: f"src={PUBLIC[1]}"}),
                     "address per host")
        first = self.udp_round(site.hosts[0], [main], [SERVER_IP], [0] * 20)
        second = self.udp_round(site.hosts[1], [main], [SERVER_IP], [0] * 20)
        kept = (first.sources() == Counter({PUBLIC[0]: 20})
                and second.sources() == Counter({PUBLIC[1]: 20}))
        self.say(2, "PASS" if kept else "FAIL",
                 f"per-host entries (host 1 -> nat(src={PUBLIC[0]}), host 2 -> "
                 f"nat(src={PUBLIC[1]})), 20 UDP flows each: host 1 {dict(first.sources())}, "
                 f"host 2 {dict(second.sources())}; echoed {first.replies}/20, "
                 f"{second.replies}/20")
        self.drop([main, *extra, listener])

    def check_port_range(self) -> None:
        """3. Which ports ``nat(src=A:20000-30000)`` picks; a range too small."""
        site = self.sites[0]
        zone = self.zone(3)
        low, high = 20000, 30000
        spec = f"src={PUBLIC[0]}:{low}-{high}"
        self.install(site, self.nat_flows(site, zone, {0: spec, 1: spec}), "port range")
        server = self.udp_server(site.server)
        sports = [0] * 10 + list(range(1100, 1110)) + list(range(25000, 25010)) \
            + list(range(40000, 40010))
        first = self.udp_round(site.hosts[0], [server], [SERVER_IP], sports)
        mapping = {int(tag.split(":")[1]): port for tag, _src, port in first.at_server}
        ports = sorted(mapping.values())
        inside = sum(low <= p <= high for p in ports)
        kept = sum(1 for sport, port in mapping.items() if sport == port)
        kept_in_range = sum(1 for sport, port in mapping.items()
                            if low <= sport <= high and sport == port)
        self.say(3, "PASS" if ports and inside == len(ports) else "FAIL",
                 f"nat({spec}), 40 UDP flows (10 ephemeral, 10 from 1100-1109, 10 from "
                 f"25000-25009, 10 from 40000-40009): {len(ports)} arrived, {inside} public "
                 f"ports within {low}-{high}, lowest {min(ports, default=0)}, highest "
                 f"{max(ports, default=0)}; {kept} kept their inside port ({kept_in_range} "
                 f"of the 10 in range); {first.replies}/40 echoed")
        second = self.udp_round(site.hosts[1], [server], [SERVER_IP], list(range(25000, 25010)))
        taken = set(ports)
        other = [port for _tag, _src, port in second.at_server]
        self.say(3, "FACT", f"host 2 from the same 25000-25009 to the same server port: "
                            f"{len(other)} arrived, {sum(p in taken for p in other)} public "
                            f"ports collide with host 1's, all within range: "
                            f"{all(low <= p <= high for p in other)}; "
                            f"{second.replies}/10 echoed")
        listener = self.tcp_server(site.server)
        conns = [self.tcp_connect(site.hosts[0]) for _ in range(10)]
        peers = self.accepted(listener, sum(c is not None for c in conns))
        tcp_ports = sorted(port for _conn, (_ip, port) in peers)
        self.say(3, "PASS" if tcp_ports and all(low <= p <= high for p in tcp_ports)
                 else "FAIL",
                 f"10 TCP connections: {sum(c is not None for c in conns)} connected, "
                 f"{len(tcp_ports)} accepted, public ports "
                 f"{tcp_ports[:3]}...{tcp_ports[-2:]}, all within range: "
                 f"{all(low <= p <= high for p in tcp_ports)}")
        self.drop([c for c in conns if c is not None] + [conn for conn, _ in peers])
        small = f"src={PUBLIC[0]}:20000-20004"
        for n, guard in ((4, False), (18, True)):
            small_zone = self.zone(n)
            label = f"nat({small}) (5 ports)" + (", guarded" if guard else "")
            self.install(site, self.nat_flows(site, small_zone, {0: small}, guard=guard),
                         label)
            sniff = self.sniffer(site.server)
            before = flow_counts(site.bridge)
            tiny = self.udp_round(site.hosts[0], [server], [SERVER_IP], [0] * 10)
            counts = flow_counts(site.bridge) - before
            arrived = [s for s in sniffed(sniff) if s.dport == UDP_PORT]
            self.say(3, "FACT", f"{label}, 10 UDP flows to one server port: {len(arrived)} "
                                f"reached the server, sources "
                                f"{dict(Counter(s.src for s in arrived))}, ports "
                                f"{sorted(s.sport or 0 for s in arrived)}; {tiny.replies}/10 "
                                f"echoed; table 1 +new entry hit {counts['out_new']} times, "
                                f"guard pass {counts['out_guard_pass']} drop "
                                f"{counts['out_guard_drop']}; "
                                f"{len(conntrack(small_zone, 'udp'))} udp entries in the zone")
            self.drop([sniff])
        self.drop([server, listener])

    def check_zone_limit(self) -> None:
        """4. ``dpctl/ct-set-limits``: a zone of 10 and 20 new connections, without and
        with the guard."""
        site = self.sites[0]
        for n, guard in ((5, False), (19, True)):
            zone = self.zone(n)
            label = "zone limit 10" + (", guarded" if guard else "")
            self.install(site, self.nat_flows(site, zone, {0: f"src={PUBLIC[0]}",
                                                           1: f"src={PUBLIC[0]}"},
                                              guard=guard), label)
            self.limited_zones.add(zone)
            appctl("dpctl/ct-set-limits", f"zone={zone},limit=10")
            try:
                self._limited(site, zone, label)
            finally:
                appctl("dpctl/ct-del-limits", f"zone={zone}")
                self.limited_zones.discard(zone)

    def _limited(self, site: Site, zone: int, label: str) -> None:
        server = self.udp_server(site.server)
        sniff = self.sniffer(site.server)
        before = flow_counts(site.bridge)
        first = self.udp_round(site.hosts[0], [server], [SERVER_IP], [0] * 20)
        arrived = [s for s in sniffed(sniff) if s.dport == UDP_PORT]
        limits = appctl("dpctl/ct-get-limits", f"zone={zone}").strip().splitlines()
        counts = flow_counts(site.bridge) - before
        ok = len(arrived) == 10 and first.replies == 10
        self.say(4, "PASS" if ok else "FAIL",
                 f"{label}, 20 new UDP flows from host 1: {len(arrived)} reached the server "
                 f"(sources {dict(Counter(s.src for s in arrived))}), {first.replies} echoed; "
                 f"+new entry hit {counts['out_new']} times, guard pass "
                 f"{counts['out_guard_pass']} drop {counts['out_guard_drop']}; ct-get-limits: "
                 f"{limits[-1].strip() if limits else '?'}")
        second = self.udp_round(site.hosts[1], [server], [SERVER_IP], [0] * 5)
        later = [s for s in sniffed(sniff) if s.dport == UDP_PORT]
        self.say(4, "FACT", f"{label}, then 5 new UDP flows from host 2: {len(later)} reached "
                            f"the server (sources {dict(Counter(s.src for s in later))}), "
                            f"{second.replies} echoed: the limit is the zone's, shared by "
                            f"every source")
        listener = self.tcp_server(site.server)
        conn = self.tcp_connect(site.hosts[1], timeout=1.0)
        self.say(4, "FACT", f"{label}, a TCP connection from host 2 in the full zone: "
                            f"{'connected' if conn else 'failed (1 s)'}")
        self.drop([server, sniff, listener] + ([conn] if conn else []))

    def check_bridges(self) -> None:
        """5. Two userspace bridges: one connection table; zones and overlapping tuples."""
        one, two = self.sites
        netdev = [line for line in run(["ovs-vsctl", "--timeout=10", "--bare", "--columns=name",
                                        "find", "bridge", "datapath_type=netdev"]).split()
                  if line]
        dps = [line for line in appctl("dpctl/dump-dps").splitlines() if line.strip()]
        self.say(5, "FACT", f"{len(netdev)} netdev bridges (2 of them the probe's), "
                            f"dpctl/dump-dps lists {dps}: one datapath and one connection "
                            f"table for all; dump-conntrack takes a datapath, no bridge")
        zone = self.zone(6)
        spec = {0: f"src={PUBLIC[0]}", 1: f"src={PUBLIC[0]}"}
        for site in (one, two):
            self.install(site, self.nat_flows(site, zone, spec), "same zone on both bridges")
        servers = [self.udp_server(site.server) for site in (one, two)]
        same = [self.udp_round(site.hosts[0], [srv], [SERVER_IP], [40001])
                for site, srv in zip((one, two), servers, strict=True)]
        entries = [e for e in conntrack(zone, "udp") if "sport=40001" in e]
        self.say(5, "FACT", f"same zone, same tuple 192.168.1.1:40001 -> {SERVER_IP}:{UDP_PORT}"
                            f" on both bridges: public ports "
                            f"{[r.at_server[0][2] if r.at_server else None for r in same]}, "
                            f"echoed {[r.replies for r in same]}, {len(entries)} conntrack "
                            f"entry for both")
        other = [self.udp_round(site.hosts[i], [srv], [SERVER_IP], [40002])
                 for i, site, srv in zip((0, 1), (one, two), servers, strict=True)]
        self.say(5, "FACT", f"same zone, 192.168.1.1:40002 on bridge 1 and 192.168.1.2:40002 "
                            f"on bridge 2, both -> {PUBLIC[0]}: public ports "
                            f"{[r.at_server[0][2] if r.at_server else None for r in other]}, "
                            f"echoed {[r.replies for r in other]}")
        listeners = [self.tcp_server(site.server) for site in (one, two)]
        first = self.tcp_connect(one.hosts[0], sport=40003)
        second = self.tcp_connect(two.hosts[0], sport=40003)
        self.say(5, "FACT", f"same zone, TCP 192.168.1.1:40003 -> {SERVER_IP}:{TCP_PORT} on "
                            f"bridge 1 then bridge 2: bridge 1 "
                            f"{'connected' if first else 'failed'}, bridge 2 "
                            f"{'connected' if second else 'failed (2 s)'}")
        zone_two = self.zone(7)
        self.install(two, self.nat_flows(two, zone_two, spec), "bridge 2 in its own zone")
        split = [self.udp_round(site.hosts[0], [srv], [SERVER_IP], [40004])
                 for site, srv in zip((one, two), servers, strict=True)]
        counts = [len([e for e in conntrack(z, "udp") if "sport=40004" in e])
                  for z in (zone, zone_two)]
        ok = all(r.replies == 1 for r in split) and counts == [1, 1]
        self.say(5, "PASS" if ok else "FAIL",
                 f"one zone per bridge, same tuple 192.168.1.1:40004 on both: public ports "
                 f"{[r.at_server[0][2] if r.at_server else None for r in split]}, echoed "
                 f"{[r.replies for r in split]}, entries per zone {counts}")
        self.drop([*servers, *listeners] + [s for s in (first, second) if s])

    def check_lost_state(self) -> None:
        """6. A TCP connection whose conntrack entry is flushed."""
        self.say(6, "FACT", "ovs-vswitchd restart not run here: it would disturb other "
                            "bridges (userspace conntrack lives in ovs-vswitchd: see the doc)")
        site = self.sites[0]
        for n, spec in ((8, f"src={PUBLIC[0]}"), (9, f"src={PUBLIC[0]}:20000-30000")):
            zone = self.zone(n)
            self.install(site, self.nat_flows(site, zone, {0: spec}), f"flush, nat({spec})")
            self._flushed(site, zone, spec)

    def _flushed(self, site: Site, zone: int, spec: str) -> None:
        listener = self.tcp_server(site.server)
        client = self.tcp_connect(site.hosts[0])
        peers = self.accepted(listener)
        if client is None or not peers:
            self.say(6, "FAIL", f"nat({spec}): no connection to start with")
            self.drop([listener] + ([client] if client else []))
            return
        conn, (public, port) = peers[0]
        client.sendall(b"a")
        ok = recv_some(conn) == b"a"
        sniff = self.sniffer(site.server)
        appctl("dpctl/flush-conntrack", f"zone={zone}")
        before = flow_counts(site.bridge)
        conn.sendall(b"b")
        got_b = recv_some(client, 1.0)
        after_in = flow_counts(site.bridge) - before
        self.say(6, "FACT", f"nat({spec}), connection {public}:{port} (exchange before: "
                            f"{ok}), zone flushed; server -> host segment: "
                            f"+new {after_in['in_new']}, +inv {after_in['in_inv']}, "
                            f"+est {after_in['in_est']} in table 2; host got it: {got_b!r}")
        before = flow_counts(site.bridge)
        client.sendall(b"c")
        got_c = recv_some(conn, 1.5)
        later = recv_some(client, 3.0)
        after_out = flow_counts(site.bridge) - before
        ports = sorted({s.sport or 0 for s in sniffed(sniff)
                        if s.proto == socket.IPPROTO_TCP and s.dport == TCP_PORT})
        alive = "reset" if later is None else f"{later!r}"
        self.say(6, "FACT", f"nat({spec}), then host -> server segment: +new "
                            f"{after_out['out_new']}, +inv {after_out['out_inv']}, +est "
                            f"{after_out['out_est']} in table 1; public ports the server saw "
                            f"since the flush {ports} (before: {port}); server got it: "
                            f"{got_c!r}; host then read: {alive}; entries now "
                            f"{len(conntrack(zone, 'tcp'))}")
        self.drop([listener, client, conn, sniff])

    def check_fragments(self) -> None:
        """7. A fragmented UDP datagram through ct(nat), both ways."""
        site = self.sites[0]
        zone = self.zone(10)
        self.install(site, self.nat_flows(site, zone, {0: f"src={PUBLIC[0]}"}), "fragments")
        status = appctl("dpctl/ipf-get-status")
        enabled = re.search(r"v4 enabled:\s*(\d)", status)
        minimum = re.search(r"min v4 frag size:\s*(\d+)", status)
        self.say(7, "FACT", f"ipf: v4 enabled {enabled.group(1) if enabled else '?'}, "
                            f"min v4 frag size {minimum.group(1) if minimum else '?'}")
        ns_run(site.hosts[0], "ip", "route", "add", f"{SERVER_EXTRA[0]}/32", "via",
               INSIDE_GATEWAY, "mtu", "lock", "576")
        for size, target, note in ((3000, SERVER_IP, "link MTU 1500"),
                                   (1400, SERVER_EXTRA[0], "route MTU 576")):
            server = self.udp_server(site.server, target)
            sniff = self.sniffer(site.server)
            ipf = ipf_counts()
            got = self.udp_round(site.hosts[0], [server], [target], [0], size=size)
            delta = ipf_counts() - ipf
            frags = [s for s in sniffed(sniff) if s.proto == socket.IPPROTO_UDP]
            came = [(s.src, s.length, s.offset) for s in frags]
            whole = bool(got.at_server) and got.at_server[0][1] == PUBLIC[0]
            self.say(7, "PASS" if whole and got.replies == 1 else "FAIL",
                     f"{size}-byte UDP datagram ({note}): server got it from "
                     f"{got.at_server[0][1] if got.at_server else 'nothing'}, echo back to "
                     f"the host {got.replies}/1; fragments at the server (src, IP length, "
                     f"offset) {came}; ipf deltas {dict(delta)}")
            self.drop([sniff, server])

    def check_icmp_error(self) -> None:
        """8. Port unreachable for a NATed datagram: related, un-NATed?"""
        site = self.sites[0]
        zone = self.zone(11)
        self.install(site, self.nat_flows(site, zone, {0: f"src={PUBLIC[0]}:20000-30000"}),
                     "icmp error")
        sniff = self.sniffer(site.hosts[0])
        sock = self.sock(site.hosts[0], socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.5)
        sock.connect((SERVER_IP, CLOSED_PORT))
        sport = sock.getsockname()[1]
        before = flow_counts(site.bridge)
        sock.send(b"anyone?")
        try:
            sock.recv(100)
            answer = "a datagram"
        except ConnectionRefusedError:
            answer = "ECONNREFUSED"
        except TimeoutError:
            answer = "nothing"
        counts = flow_counts(site.bridge) - before
        errors = [s for s in sniffed(sniff) if s.icmp_type == 3]
        shown = [(s.src, s.dst, s.inner) for s in errors]
        ok = answer == "ECONNREFUSED" and any(
            s.dst == site.host_ip(0) and s.inner == (site.host_ip(0), SERVER_IP, sport,
                                                     CLOSED_PORT) for s in errors)
        self.say(8, "PASS" if ok else "FAIL",
                 f"UDP from host port {sport} to closed {SERVER_IP}:{CLOSED_PORT}: the host's "
                 f"socket got {answer}; ICMP errors at the host (src, dst, quoted "
                 f"src/dst/ports) {shown}; table 2 +rel {counts['in_rel']}, +new "
                 f"{counts['in_new']}, +inv {counts['in_inv']}")
        self.drop([sniff, sock])

    def check_gre(self) -> None:
        """9. GRE through ct(commit,nat): generic protocol? translated? shared?"""
        site = self.sites[0]
        spec = {0: f"src={PUBLIC[0]}", 1: f"src={PUBLIC[0]}"}
        for n, commit_all in ((12, False), (13, True)):
            zone = self.zone(n)
            label = ("ct(commit,nat) on every outbound packet" if commit_all
                     else "ct(nat,table=1), commit +new")
            self.install(site, self.nat_flows(site, zone, spec, commit_all=commit_all), label)
            sniff = self.sniffer(site.server)
            raws = [self.sock(ns, socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
                    for ns in site.hosts]
            server = self.sock(site.server, socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
            before = flow_counts(site.bridge)
            for key, raw in enumerate(raws, start=1):
                for _ in range(3):
                    raw.sendto(gre_packet(key), (SERVER_IP, 0))
                time.sleep(0.1)
            time.sleep(0.3)
            out = flow_counts(site.bridge) - before
            at_server = [s for s in sniffed(sniff) if s.proto == IPPROTO_GRE]
            seen = dict(Counter((s.src, s.gre_key) for s in at_server))
            entries = conntrack(zone, "47")
            self.say(9, "FACT", f"{label}: 3 GRE packets from each host (key 1 from host 1, "
                                f"key 2 from host 2): at the server (source, key) x n {seen}; "
                                f"table 1 +new {out['out_new']} +new+snat "
                                f"{out['out_new_snat']} +est {out['out_est']} +inv "
                                f"{out['out_inv']}; {len(entries)} proto-47 entries "
                                f"{entries[:2]}")
            before = flow_counts(site.bridge)
            for key in (1, 2):
                server.sendto(gre_packet(key), (PUBLIC[0], 0))
            time.sleep(0.3)
            back = flow_counts(site.bridge) - before
            got = [Counter(seen.gre_key for seen in drain_raw(raw)) for raw in raws]
            self.say(9, "FACT", f"{label}: server -> {PUBLIC[0]} GRE key 1 and key 2: host 1 "
                                f"got keys {dict(got[0])}, host 2 got keys {dict(got[1])}; "
                                f"table 2 +est {back['in_est']} +new {back['in_new']} +inv "
                                f"{back['in_inv']}")
            self.drop([sniff, server, *raws])

    def check_rate(self) -> None:
        """10. New TCP connections per second: ct NAT and plain forwarding, alternated."""
        site = self.sites[0]
        zone = self.zone(14)
        rates: dict[str, list[float]] = {"plain forwarding": [], "ct NAT": []}
        used: dict[str, list[int]] = {"plain forwarding": [], "ct NAT": []}
        for _round in range(3):
            for label, flows in (
                    ("plain forwarding", self.plain_flows(site)),
                    ("ct NAT", self.nat_flows(site, zone,
                                              {0: f"src={PUBLIC[0]}:20000-30000"}))):
                self.install(site, flows, label)
                before = flow_counts(site.bridge)
                history = used[label]
                rate, done, seconds, failed = self._connections(site, 500, 8.0, history)
                counts = flow_counts(site.bridge) - before
                rates[label].append(rate)
                text = (f"{label}: {done} sequential new TCP connections in {seconds:.2f} s "
                        f"= {rate:.0f}/s")
                if failed:
                    entries = [e for port, _ago in failed[:2] for e in conntrack(zone, "tcp")
                               if f"sport={port}," in e]
                    text += (f"; {len(failed)} handshakes failed (2 s each, not counted): "
                             f"(inside port, connections since that port's previous use) "
                             f"{failed[:5]}, their entries {entries}")
                if label == "ct NAT":
                    text += (f"; table 1 +new {counts['out_new']} +new+snat "
                             f"{counts['out_new_snat']} +inv {counts['out_inv']}, table 2 "
                             f"+new {counts['in_new']} +inv {counts['in_inv']}")
                self.say(10, "FACT", text)
        medians = {label: sorted(values)[len(values) // 2] for label, values in rates.items()}
        self.say(10, "FACT", "medians of 3 rounds: " + ", ".join(
            f"{label} {value:.0f}/s" for label, value in medians.items()))
        self._port_reuse(site)

    def _port_reuse(self, site: Site) -> None:
        """A public port used again once conntrack forgets it, while the server still
        holds the old connection in TIME-WAIT (the server closes first)."""
        zone = self.zone(20)
        spec = f"src={PUBLIC[0]}:20000-20000"
        self.install(site, self.nat_flows(site, zone, {0: spec, 1: spec}), "one public port")
        listener = self.tcp_server(site.server)
        first = self.tcp_connect(site.hosts[0])
        peers = self.accepted(listener)
        if first is None or not peers:
            self.say(10, "FAIL", f"nat({spec}): no first connection")
            return
        for conn, _peer in peers:
            conn.close()
        time.sleep(0.2)
        first.close()
        started = time.monotonic()
        while conntrack(zone, "tcp") and time.monotonic() - started < 40:
            time.sleep(1)
        lifetime = time.monotonic() - started
        waiting = ns_run(site.server, "ss", "-tan", "state", "time-wait",
                         "( dport = :20000 )")
        held = f"{PUBLIC[0]}:20000" in waiting
        results = []
        for i in (1, 0):
            before = flow_counts(site.bridge)
            again = self.tcp_connect(site.hosts[i], timeout=3.0)
            counts = flow_counts(site.bridge) - before
            results.append(f"host {i + 1} {'connected' if again else 'failed (3 s)'} "
                           f"(+inv out {counts['out_inv']}, in {counts['in_inv']})")
            for got, _peer in self.accepted(listener, 1, 0.3):
                got.close()
            if again is not None:
                again.close()
        self.say(10, "FACT", f"nat({spec}), the server closing first: the entry left the "
                             f"table {lifetime:.0f} s after the close; the server still held "
                             f"{PUBLIC[0]}:20000 in TIME-WAIT then: {held}; new connections "
                             f"on that port: " + ", ".join(results))

    def _connections(self, site: Site, count: int, limit: float, history: list[int]
                     ) -> tuple[float, int, float, list[tuple[int, int | None]]]:
        """``count`` sequential connections from host 1 (each closed by the server first,
        then the client), for at most ``limit`` seconds; their inside ports are added to
        ``history``. Returns the rate, how many connected, the seconds they took (failed
        handshakes' waits left out) and each failure's inside port with how many
        connections ago that port was last used (None: never in ``history``)."""
        listener = self.tcp_server(site.server)
        with in_netns(site.hosts[0]):
            clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
        self.sockets.extend(clients)
        done = 0
        failed: list[tuple[int, int | None]] = []
        waited = 0.0
        started = time.monotonic()
        for client in clients:
            if time.monotonic() - started > limit:
                break
            client.settimeout(2.0)
            tried = time.monotonic()
            try:
                client.connect((SERVER_IP, TCP_PORT))
            except OSError:
                port = client.getsockname()[1]
                ago = (len(history) - max(i for i, p in enumerate(history) if p == port)
                       if port in history else None)
                failed.append((port, ago))
                history.append(port)
                waited += time.monotonic() - tried
                client.close()
                continue
            history.append(client.getsockname()[1])
            for conn, _peer in self.accepted(listener, 1, 0.5):
                conn.close()
                self.sockets.remove(conn)
            client.close()
            done += 1
        seconds = time.monotonic() - started - waited
        self.drop([listener, *clients])
        return (done / seconds if seconds else 0.0), done, seconds, failed

    def run_all(self, only: set[int] | None = None) -> None:
        """Build, run the checks (all, or those of ``only``); one failing does not stop
        the others."""
        self.build()
        checks: list[tuple[int, Callable[[], None]]] = [
            (1, self.check_icmp_ids), (2, self.check_address_range),
            (3, self.check_port_range), (4, self.check_zone_limit),
            (5, self.check_bridges), (6, self.check_lost_state),
            (7, self.check_fragments), (8, self.check_icmp_error),
            (9, self.check_gre), (10, self.check_rate)]
        for number, check in checks:
            if only is not None and number not in only:
                continue
            try:
                check()
            except ProbeTimeoutError:
                raise
            except Exception as exc:
                self.say(number, "FAIL", f"error: {type(exc).__name__}: {exc}")
            finally:
                self.drop(list(self.sockets))

    def summary(self) -> str:
        """One line per check: its verdicts."""
        lines = []
        for number in sorted({n for n, _v, _t in self.findings}):
            verdicts = Counter(v for n, v, _t in self.findings if n == number)
            lines.append(f"check {number:2}: " + ", ".join(f"{v} x{c}"
                                                          for v, c in sorted(verdicts.items())))
        return "\n".join(lines)


def echo_request(ident: int, seq: int) -> bytes:
    """An ICMP echo request with ``ident`` and ``seq``."""
    payload = b"ct-probe" * 4
    header = ICMP.pack(8, 0, 0, ident, seq)
    return ICMP.pack(8, 0, checksum(header + payload), ident, seq) + payload


def gre_packet(key: int) -> bytes:
    """An enhanced GRE packet (RFC 2637) with Call ID ``key`` and a sequence number."""
    payload = b"ct-probe-gre"
    return struct.pack("!HHHHI", 0x3001, 0x880B, len(payload), key, 1) + payload


def serve_udp(servers: Sequence[socket.socket], quiet: float = 0.3, limit: float = 3.0
              ) -> list[tuple[str, str, int]]:
    """Echo every datagram the servers get until none came for ``quiet`` seconds."""
    got: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select(servers, [], [], quiet)
        if not ready:
            break
        for server in ready:
            while True:
                try:
                    data, peer = server.recvfrom(65535)
                except BlockingIOError:
                    break
                server.sendto(data, peer)
                got.append((data.split(b".")[0].decode(errors="replace"), str(peer[0]),
                            int(peer[1])))
    return got


def count_replies(clients: Sequence[socket.socket], limit: float = 1.0) -> int:
    """How many of ``clients`` get a datagram within ``limit`` seconds."""
    waiting = list(clients)
    deadline = time.monotonic() + limit
    answered = 0
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(waiting, [], [], 0.05)
        for sock in ready:
            try:
                sock.recv(65535)
            except OSError:
                continue
            answered += 1
            waiting.remove(sock)
    return answered


def recv_some(sock: socket.socket, limit: float = 1.0) -> bytes | None:
    """What ``sock`` reads within ``limit`` (b"" when nothing came, None on a reset)."""
    sock.settimeout(limit)
    try:
        return sock.recv(100)
    except TimeoutError:
        return b""
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return None
        raise


def sniffed(sniff: socket.socket) -> list[Seen]:
    """The IPv4 packets that arrived on ``sniff``'s interface so far."""
    found: list[Seen] = []
    while True:
        try:
            frame, info = sniff.recvfrom(65535)
        except BlockingIOError:
            return found
        if info[2] == PACKET_OUTGOING or len(frame) < ETHER.size:
            continue
        if ETHER.unpack_from(frame)[2] != 0x0800:
            continue
        seen = parse_ipv4(frame[ETHER.size:])
        if seen is not None:
            found.append(seen)


def drain_raw(raw: socket.socket, limit: float = 0.3) -> list[Seen]:
    """The packets waiting on a raw IP socket."""
    raw.setblocking(False)
    found: list[Seen] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            seen = parse_ipv4(raw.recv(65535))
        except BlockingIOError:
            select.select([raw], [], [], 0.05)
            continue
        if seen is not None:
            found.append(seen)
    return found


def appctl(*args: str, check: bool = True) -> str:
    """Run ``ovs-appctl`` with ``args``."""
    return run(["ovs-appctl", "--timeout=10", *args], check=check)


def conntrack(zone: int, proto: str) -> list[str]:
    """The datapath's conntrack entries of ``zone`` whose protocol is ``proto``."""
    out = appctl("dpctl/dump-conntrack", f"zone={zone}")
    return [line.strip() for line in out.splitlines() if line.startswith(f"{proto},")
            or (proto.isdigit() and f"proto={proto}" in line)]


def flow_counts(bridge: str) -> Counter[str]:
    """Packets per cookie name (:data:`COOKIES`) on ``bridge``, after a revalidator
    round (which credits the datapath's packets to the OpenFlow entries)."""
    counts: Counter[str] = Counter()
    appctl("revalidator/wait")
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge])
    for found in _FLOW_LINE.finditer(out):
        name = COOKIES.get(int(found.group(1), 16))
        if name is not None:
            counts[name] += int(found.group(2))
    return counts


def ipf_counts() -> Counter[str]:
    """The datapath's IPv4 fragment counters."""
    status = appctl("dpctl/ipf-get-status")
    return Counter({found.group(1): int(found.group(2)) for found in _IPF_LINE.finditer(status)})


def _timeout(_signum: int, _frame: FrameType | None) -> None:
    raise ProbeTimeoutError(f"the probe ran past {TIME_LIMIT} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ct_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show-flows", action="store_true", help="print each check's flows")
    parser.add_argument("--checks", help="comma-separated check numbers (default: all)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (namespaces, OVS)", file=sys.stderr)
        return 2
    probe = Probe(args.show_flows)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(TIME_LIMIT)
    print(f"# ct probe: bridges br-ctp{probe.tag}1/2, zones {probe.zone_base + 1}.."
          f"{probe.zone_base + 20}, {run(['ovs-vswitchd', '--version']).splitlines()[0]}",
          flush=True)
    try:
        probe.run_all({int(n) for n in args.checks.split(",")} if args.checks else None)
    finally:
        signal.alarm(0)
        probe.cleanup()
    print(probe.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
