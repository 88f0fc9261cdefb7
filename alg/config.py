"""The gateway's configuration: every ``[nat]`` option, its default and its rule, once.

:data:`OPTIONS` lists the options (the app registers them with oslo.config, the lab
writes them); :func:`load` turns raw values into a :class:`GatewayConfig`. Each rule
lives in the ``__post_init__`` of the dataclass that holds the value, so a value is
checked the same way however the object is made; a bad or missing value raises
:class:`~alg.errors.ConfigError` naming the option (``nat.<name>`` from :func:`load`).
Each option states its rule in words too (:func:`rule`), from the same bounds;
``python -m alg.config --markdown`` renders the table as ``docs/options.md``
(:func:`markdown`), ``python -m alg.config --sample`` as ``etc/gateway.conf.sample``
(:func:`sample`).
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal

from alg.errors import ConfigError

GROUP = "nat"
GATEWAY_SECTION = "gateway:"
"""A gateway's section is ``[gateway:NAME]``."""
GATEWAY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_GATEWAY = "default"
"""The name of the one gateway of a file without ``[gateway:NAME]`` sections."""
PER_PROCESS = ("rest_host", "rest_port", "rest_token", "store", "etcd_endpoints",
               "etcd_cluster", "controller_id")
"""Options of the process (its HTTP API, its store, its name among the controllers), not
of a gateway: only in ``[nat]``."""
STORES = ("sqlite", "etcd")
"""Where the records go: one SQLite file per gateway (``state_file``), or an etcd cluster
shared by every controller of the same bridges (``ryu_apps.etcd_store``)."""
CONTROLLER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}/?")
POLICIES = ("open", "strict")
ORDINARY_NAT = ("controller", "conntrack")
"""Where TCP and UDP of inside hosts are translated: by the controller's sessions, or
by the datapath's connection tracker (``ryu_apps.ctflows``)."""
CT_ZONE_MAX = 65535
MTU_MIN, MTU_MAX = 68, 65535
"""The bounds of ``mtu`` in bytes (RFC 791)."""
MAX_BUFFER_MIN = 1024
"""The smallest ``max_buffer`` in bytes."""
PORT_MAX = 65535
_SECONDS = (
    "tcp_idle", "udp_idle", "icmp_idle", "gre_idle", "call_id_hold_down", "tcp_closing",
    "tcp_handshake", "fragment_timeout",
)
_COUNTS = (
    "max_calls_per_connection", "max_calls_per_host", "max_call_ids_per_host", "max_calls",
    "max_connections_per_host",
    "max_handshakes_per_host", "max_sessions_per_host", "max_sessions", "max_pins_per_port",
    "punt_rate_arp", "punt_rate_inside_port", "punt_rate_outside_control",
    "punt_rate_outside_new", "punt_rate_gre", "punt_rate_control_connections",
    "fragment_memory", "fragment_memory_per_source", "fragments_per_datagram",
    "ct_time_wait",
)


def check_public_ips(addresses: Sequence[IPv4Address]) -> None:
    """The rule of ``public_ips``: at least one address, all distinct.

    Raises:
        ConfigError: naming ``public_ips``.
    """
    if not addresses:
        raise ConfigError("public_ips", "missing (at least one public address)")
    if len(set(addresses)) != len(addresses):
        raise ConfigError("public_ips", "addresses must be distinct")


REST_TOKEN_MIN = 16
"""The shortest ``rest_token`` taken (characters)."""


def check_rest_token(token: str, host: str, port: int) -> None:
    """The rule of ``rest_token``: at least ``REST_TOKEN_MIN`` printable ASCII characters
    without spaces (it travels in an HTTP header), and required when the HTTP API listens
    on an address that is not a loopback one (an unauthenticated view of every session
    and call, open to the network, is refused).

    Raises:
        ConfigError: naming ``rest_token``.
    """
    if token and (len(token) < REST_TOKEN_MIN
                  or not all("!" <= ch <= "~" for ch in token)):
        raise ConfigError("rest_token", f"must be at least {REST_TOKEN_MIN} printable ASCII "
                          "characters without spaces")
    try:
        loopback = IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if port and not token and not loopback:
        raise ConfigError("rest_token", f"missing: the HTTP API on rest_host {host}, not a "
                          "loopback address, needs a bearer token")


def check_seconds(key: str, value: float) -> None:
    """The rule of every timeout: a positive number of seconds.

    Raises:
        ConfigError: naming ``key``.
    """
    if not value > 0:
        raise ConfigError(key, f"must be positive seconds, got {value!r}")


@dataclass(frozen=True)
class AlgConfig:
    """Configuration of the core. Times are seconds, sizes bytes.

    Attributes:
        public_ips: the public address pool, spread over inside hosts (paired pooling).
        tcp_idle: idle timeout of a TCP session, the PPTP control connection included.
        udp_idle: idle timeout of a UDP session.
        icmp_idle: idle timeout of an ICMP echo session.
        gre_idle: idle timeout of a server-map (a call's data channel).
        call_id_hold_down: how long a released Call ID stays unusable.
        max_buffer: bytes held at most per direction of a control connection.
        port_min: lowest public port handed out when the inside port is taken.
        port_max: highest public port handed out.
        alg_enabled: False gives address-only NAT for TCP/1723 and GRE.
        policy: ``open`` lets inside hosts start anything; ``strict`` only TCP to port
            1723. Outside hosts never start anything.
        tcp_closing: how long a control connection lingers after FIN from both sides
            (an RST ends it at once).
        tcp_handshake: how long a control connection may take to complete its TCP
            handshake before it is forgotten.
        max_calls_per_connection: most live calls of one control connection (RFC 2637
            sets no limit; by default as many as one host may have).
        max_calls_per_host: most live calls of one inside host over all its control
            connections. An inside port pins at most ``max_pins_per_port`` addresses, so
            by default one port holds at most 64 x 128 = 8,192 of the ``max_calls``.
        max_call_ids_per_host: the share of each (public address, server) pair's 65,536
            public Call IDs one inside host may hold, in use and held down together,
            counted over all its control connections until each hold-down ends
            (:mod:`alg.callid`). By default a pair serves 128 hosts at their full share,
            and one inside port (64 addresses) holds at most half of it.
        max_calls: most live calls in all.
        max_connections_per_host: most control connections of one inside host.
        max_handshakes_per_host: most control connections of one inside host whose
            handshake is not complete.
        max_sessions_per_host: most NAT sessions (control connections included) of one
            inside host.
        max_sessions: most NAT sessions in all.
        max_pins_per_port: most inside addresses pinned to one inside port at once (see
            :mod:`alg.neighbours`); a new address claimed from a port at it is dropped.
        punt_rate_arp, punt_rate_inside_port, punt_rate_outside_control,
            punt_rate_outside_new, punt_rate_gre: packets per second each class of punt
            to the controller may bring (an OpenFlow meter on the switch drops the rest).
        punt_rate_control_connections: packets per second the server's segments of the
            live control connections of one inside port's hosts may bring (their own
            entries and meter, apart from ``punt_rate_outside_control``).
        ordinary_nat: ``controller`` or ``conntrack``: who translates inside hosts' TCP
            and UDP.
        ct_zone: the connection tracker's zone of this gateway (``conntrack``).
        ct_ports_per_host: the size of each inside host's block of public ports
            (``conntrack``).
        ct_time_wait: seconds the tracker keeps a closed TCP connection, and so its
            public port from new connections (``conntrack``; the zone's timeout policy).
        gre_outbound_strict: client -> server GRE goes through the controller, which
            passes only the keys of the client's own calls (the switch cannot match the
            key; off, the flow entry passes any key, as Linux conntrack does).
        mtu: the MTU of the gateway's links (OpenFlow 1.3 port descriptions carry none):
            a datagram the controller sends is fragmented to it, or, with DF set,
            answered with ICMP fragmentation needed (``alg.defrag``).
        fragment_timeout: how long the fragments of a datagram are held at most for it
            to be reassembled (Linux's ``ipfrag_time``).
        fragment_memory: bytes held at most in all for datagrams being reassembled
            (Linux's ``ipfrag_high_thresh``).
        fragment_memory_per_source: bytes held at most for one source's datagrams.
        fragments_per_datagram: most fragments of one datagram.
        gre_demux: a GRE demultiplexer is configured (``gre_demux_port``): a shared
            pair's server -> client GRE goes to it rather than to the controller while it
            answers its heartbeat.
    """

    public_ips: tuple[IPv4Address, ...] = (IPv4Address("203.0.113.2"),)
    tcp_idle: float = 1200.0
    udp_idle: float = 120.0
    icmp_idle: float = 20.0
    gre_idle: float = 300.0
    call_id_hold_down: float = 60.0
    max_buffer: int = 65536
    port_min: int = 1024
    port_max: int = 65535
    alg_enabled: bool = True
    policy: str = "open"
    tcp_closing: float = 10.0
    tcp_handshake: float = 30.0
    max_calls_per_connection: int = 128
    max_calls_per_host: int = 128
    max_call_ids_per_host: int = 512
    max_calls: int = 20_000
    max_connections_per_host: int = 32
    max_handshakes_per_host: int = 16
    max_sessions_per_host: int = 4096
    max_sessions: int = 200_000
    max_pins_per_port: int = 64
    gre_outbound_strict: bool = False
    gre_demux: bool = False
    punt_rate_arp: int = 200
    punt_rate_inside_port: int = 2000
    punt_rate_outside_control: int = 2000
    punt_rate_outside_new: int = 1000
    punt_rate_gre: int = 8000
    punt_rate_control_connections: int = 2000
    mtu: int = 1500
    fragment_timeout: float = 30.0
    fragment_memory: int = 4 * 1024 * 1024
    fragment_memory_per_source: int = 256 * 1024
    fragments_per_datagram: int = 64
    ordinary_nat: str = "conntrack"
    ct_zone: int = 1
    ct_ports_per_host: int = 512
    ct_time_wait: int = 120

    def __post_init__(self) -> None:
        check_public_ips(self.public_ips)
        for name in _SECONDS:
            check_seconds(name, getattr(self, name))
        for name in _COUNTS:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.policy not in POLICIES:
            raise ConfigError("policy", f"must be one of {', '.join(POLICIES)}: {self.policy!r}")
        if not MTU_MIN <= self.mtu <= MTU_MAX:
            raise ConfigError("mtu", f"must be in {MTU_MIN}..{MTU_MAX} bytes (RFC 791), got "
                              f"{self.mtu}")
        if self.max_buffer < MAX_BUFFER_MIN:
            raise ConfigError("max_buffer", f"must be at least {MAX_BUFFER_MIN} bytes, got "
                              f"{self.max_buffer}")
        if not 1 <= self.port_min <= self.port_max <= PORT_MAX:
            raise ConfigError(
                "port_min",
                f"need 1 <= port_min <= port_max <= {PORT_MAX}, got "
                f"{self.port_min}..{self.port_max}",
            )
        if self.ordinary_nat not in ORDINARY_NAT:
            raise ConfigError("ordinary_nat", f"must be one of {', '.join(ORDINARY_NAT)}: "
                              f"{self.ordinary_nat!r}")
        if not 1 <= self.ct_zone <= CT_ZONE_MAX:
            raise ConfigError("ct_zone", f"must be in 1..{CT_ZONE_MAX}, got {self.ct_zone}")
        ports = self.port_max - self.port_min + 1
        if self.ordinary_nat == "conntrack" and not 1 <= self.ct_ports_per_host <= ports:
            raise ConfigError("ct_ports_per_host", f"must be in 1..{ports} (the ports of "
                              f"port_min..port_max), got {self.ct_ports_per_host}")


DEFAULT_REST_PORT = 8723
"""The HTTP API's port by default: not 8080, which Ryu's and os-ken's REST apps
(``ofctl_rest`` and others) take when they run in the same manager, nor one of the
9100-9999 that Prometheus has handed out to exporters."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs: the core's config plus the switch and L2 facts.

    Attributes:
        bridge: the OVS bridge this gateway binds to, by the name its LOCAL port
            reports; empty: by ``datapath_id``.
        datapath_id: the datapath ID of the switch this gateway binds to; None: by
            ``bridge`` (neither: the first switch that connects).
        inside_ports, outside_port: OVS port names.
        inside_subnet, inside_gateway: the inside subnet and the gateway's address in it.
        outside_subnet: the on-link outside subnet (the public addresses' neighbours).
        next_hop: the router for destinations off the outside subnet, if any.
        gateway_mac: the MAC the gateway answers ARP with and sends from.
        stats_interval: seconds between flow statistics polls (and ageing).
        state_file: the SQLite file that keeps calls, control connections, sessions
            and hold-downs across controller restarts; empty for none.
        gre_demux_port: the OVS port of the GRE demultiplexer (``demux.program``);
            empty for none.
        gre_demux_dir: the BPF filesystem directory where its program and table are
            pinned.
        rest_host, rest_port: where the HTTP API (REST and ``/metrics``) listens; port
            0 for no HTTP API.
        rest_token: the bearer token every HTTP request must carry (empty: none); a
            ``rest_host`` that is not a loopback address needs one.
        store: ``sqlite`` (``state_file``) or ``etcd`` (``etcd_endpoints``): see
            :data:`STORES`.
        etcd_endpoints: the etcd cluster's client URLs.
        etcd_cluster: the controllers' cluster name, the first part of their keys.
        controller_id: this process's name among the controllers (empty: the host's
            name and the process's ID).
    """

    alg: AlgConfig
    inside_ports: tuple[str, ...]
    outside_port: str
    inside_subnet: IPv4Network
    inside_gateway: IPv4Address
    outside_subnet: IPv4Network
    next_hop: IPv4Address | None = None
    gateway_mac: str = "02:00:5e:00:01:fe"
    bridge: str = ""
    datapath_id: int | None = None
    stats_interval: float = 5.0
    state_file: str = ""
    gre_demux_port: str = ""
    gre_demux_dir: str = ""
    rest_host: str = "127.0.0.1"
    rest_port: int = DEFAULT_REST_PORT
    rest_token: str = field(default="", repr=False)
    store: str = "sqlite"
    etcd_endpoints: tuple[str, ...] = ()
    etcd_cluster: str = "pptp-alg"
    controller_id: str = ""

    def __post_init__(self) -> None:
        if not self.inside_ports:
            raise ConfigError("inside_ports", "missing (at least one OVS port name)")
        if not self.outside_port:
            raise ConfigError("outside_port", "missing (the OVS port name on the outside)")
        if self.outside_port in self.inside_ports:
            raise ConfigError("outside_port", f"{self.outside_port} is also an inside port")
        if self.gre_demux_port in (*self.inside_ports, self.outside_port):
            raise ConfigError("gre_demux_port", f"{self.gre_demux_port} is already a port "
                              "of the gateway")
        if self.gre_demux_port and not self.gre_demux_dir:
            raise ConfigError("gre_demux_dir", "missing (where the demultiplexer is pinned)")
        if self.inside_gateway not in self.inside_subnet:
            raise ConfigError(
                "inside_gateway", f"{self.inside_gateway} is not in {self.inside_subnet}"
            )
        if self.inside_subnet.overlaps(self.outside_subnet):
            raise ConfigError("outside_subnet", "overlaps the inside subnet")
        for ip in self.alg.public_ips:
            if ip in self.inside_subnet:
                raise ConfigError("public_ips", f"{ip} is inside the inside subnet")
        if self.next_hop is not None and self.next_hop not in self.outside_subnet:
            raise ConfigError("next_hop", f"{self.next_hop} is not in {self.outside_subnet}")
        parts = self.gateway_mac.split(":")
        if len(parts) != 6 or not all(len(p) == 2 and _is_hex(p) for p in parts):
            raise ConfigError("gateway_mac", f"not a MAC address: {self.gateway_mac!r}")
        if not self.stats_interval > 0:
            raise ConfigError("stats_interval", "must be positive")
        if not 0 <= self.rest_port <= PORT_MAX:
            raise ConfigError("rest_port", f"must be in 0..{PORT_MAX} (0: no HTTP API), got "
                              f"{self.rest_port}")
        check_rest_token(self.rest_token, self.rest_host, self.rest_port)
        self._check_store()

    def _check_store(self) -> None:
        if self.store not in STORES:
            raise ConfigError("store", f"must be one of {', '.join(STORES)}, got "
                              f"{self.store!r}")
        for endpoint in self.etcd_endpoints:
            if not ENDPOINT.fullmatch(endpoint):
                raise ConfigError("etcd_endpoints", f"not a client URL "
                                  f"(http://host:port): {endpoint!r}")
        if not GATEWAY_NAME.fullmatch(self.etcd_cluster):
            raise ConfigError("etcd_cluster", "1 to 32 of a-z, 0-9, _ and -, starting with "
                              f"a letter or digit, got {self.etcd_cluster!r}")
        if self.controller_id and not CONTROLLER_ID.fullmatch(self.controller_id):
            raise ConfigError("controller_id", "1 to 64 of A-Z, a-z, 0-9, _, . and -, "
                              f"starting with a letter or digit, got {self.controller_id!r}")
        if self.store == "etcd":
            if not self.etcd_endpoints:
                raise ConfigError("etcd_endpoints", "missing (required with store = etcd)")
            if self.state_file:
                raise ConfigError("state_file", "must be empty with store = etcd (the "
                                  "records are in etcd)")

    def describe(self) -> str:
        """One line for the log: addresses, policy and the ALG switch."""
        public = ", ".join(str(ip) for ip in self.alg.public_ips)
        alg = "on" if self.alg.alg_enabled else "off"
        return (
            f"inside {self.inside_subnet} via {self.inside_gateway}, public {public}, "
            f"policy {self.alg.policy}, ALG {alg}"
        )


Kind = Literal["str", "list", "bool", "float", "int"]


@dataclass(frozen=True)
class Option:
    """One ``[nat]`` option: its name, type, default and help text; a ``secret`` one is
    never logged. ``rule`` says in words what the checks take, where :func:`rule` does
    not derive it from the option's kind and bounds."""

    name: str
    kind: Kind
    default: Any
    help: str
    secret: bool = False
    rule: str = ""


_ALG = AlgConfig()
OPTIONS: tuple[Option, ...] = (
    Option("bridge", "str", "", "the OVS bridge this gateway binds to, by the name its "
           "LOCAL port reports (empty: by datapath_id; both empty: the first switch that "
           "connects)"),
    Option("datapath_id", "str", "", "the datapath ID of the switch this gateway binds "
           "to, in hex as ovs-vsctl shows it (empty: by bridge)",
           rule="1 to 16 hex digits, 0x allowed, or empty"),
    Option("inside_ports", "list", [], "OVS port names on the inside",
           rule="at least one"),
    Option("outside_port", "str", "", "OVS port name on the outside",
           rule="required; not an inside port"),
    Option("inside_subnet", "str", "", "inside subnet, e.g. 192.168.1.0/24",
           rule="required; an IPv4 subnet"),
    Option("inside_gateway", "str", "", "the gateway's inside address",
           rule="required; an IPv4 address in inside_subnet"),
    Option("outside_subnet", "str", "", "on-link outside subnet",
           rule="required; an IPv4 subnet that does not overlap inside_subnet"),
    Option("public_ips", "list", [], "the public address pool",
           rule="at least one IPv4 address; all distinct; none in inside_subnet"),
    Option("next_hop", "str", "", "router for destinations off the outside subnet "
           "(empty: only the outside subnet is reachable)",
           rule="empty, or an IPv4 address in outside_subnet"),
    Option("policy", "str", _ALG.policy, "open | strict",
           rule=f"one of {', '.join(POLICIES)}"),
    Option("alg", "bool", _ALG.alg_enabled, "PPTP ALG on (false: address-only NAT)"),
    Option("gateway_mac", "str", "02:00:5e:00:01:fe", "MAC address the gateway answers ARP with",
           rule="a MAC address: six pairs of hex digits separated by colons"),
    Option("tcp_idle", "float", _ALG.tcp_idle, "TCP session idle timeout (seconds)"),
    Option("udp_idle", "float", _ALG.udp_idle, "UDP session idle timeout (seconds)"),
    Option("icmp_idle", "float", _ALG.icmp_idle, "ICMP echo session idle timeout (seconds)"),
    Option("gre_idle", "float", _ALG.gre_idle, "server-map idle timeout (seconds)"),
    Option("call_id_hold_down", "float", _ALG.call_id_hold_down,
           "seconds a released Call ID stays unusable"),
    Option("max_buffer", "int", _ALG.max_buffer,
           "bytes held at most per direction of a control connection",
           rule=f"at least {MAX_BUFFER_MIN}"),
    Option("tcp_closing", "float", _ALG.tcp_closing,
           "seconds a control connection lingers after both FINs"),
    Option("port_min", "int", _ALG.port_min,
           "lowest public port handed out when the inside port is taken",
           rule="1..port_max"),
    Option("port_max", "int", _ALG.port_max, "highest public port handed out",
           rule=f"port_min..{PORT_MAX}"),
    Option("tcp_handshake", "float", _ALG.tcp_handshake,
           "seconds a control connection may take to complete its TCP handshake"),
    Option("max_calls_per_connection", "int", _ALG.max_calls_per_connection,
           "most live calls of one control connection"),
    Option("max_calls_per_host", "int", _ALG.max_calls_per_host,
           "most live calls of one inside host over all its control connections"),
    Option("max_call_ids_per_host", "int", _ALG.max_call_ids_per_host,
           "most public Call IDs of one (public address, server) pair one inside host "
           "may hold, in use and held down together"),
    Option("max_calls", "int", _ALG.max_calls, "most live calls in all"),
    Option("max_connections_per_host", "int", _ALG.max_connections_per_host,
           "most control connections of one inside host"),
    Option("max_handshakes_per_host", "int", _ALG.max_handshakes_per_host,
           "most unfinished TCP handshakes of control connections of one inside host"),
    Option("max_sessions_per_host", "int", _ALG.max_sessions_per_host,
           "most NAT sessions of one inside host"),
    Option("max_sessions", "int", _ALG.max_sessions, "most NAT sessions in all"),
    Option("max_pins_per_port", "int", _ALG.max_pins_per_port,
           "most inside addresses pinned to one inside port at once"),
    Option("punt_rate_arp", "int", _ALG.punt_rate_arp, "ARP punts per second"),
    Option("punt_rate_inside_port", "int", _ALG.punt_rate_inside_port,
           "punts per second from each inside port"),
    Option("punt_rate_outside_control", "int", _ALG.punt_rate_outside_control,
           "control segments per second from the outside"),
    Option("punt_rate_outside_new", "int", _ALG.punt_rate_outside_new,
           "other punts per second from the outside (new or unknown traffic)"),
    Option("punt_rate_gre", "int", _ALG.punt_rate_gre,
           "controller-path GRE packets per second"),
    Option("punt_rate_control_connections", "int", _ALG.punt_rate_control_connections,
           "servers' segments per second on the live control connections of each inside "
           "port's hosts (each connection has its own entry; other segments from port "
           "1723 outside share punt_rate_outside_control)"),
    Option("mtu", "int", _ALG.mtu, "MTU of the gateway's links in bytes: what the "
           "controller sends is fragmented to it (DF set: ICMP fragmentation needed)",
           rule=f"{MTU_MIN}..{MTU_MAX}"),
    Option("fragment_timeout", "float", _ALG.fragment_timeout,
           "seconds the fragments of a datagram are held at most for reassembly"),
    Option("fragment_memory", "int", _ALG.fragment_memory,
           "bytes held at most in all for datagrams being reassembled"),
    Option("fragment_memory_per_source", "int", _ALG.fragment_memory_per_source,
           "bytes held at most for the datagrams of one source being reassembled"),
    Option("fragments_per_datagram", "int", _ALG.fragments_per_datagram,
           "most fragments of one datagram being reassembled"),
    Option("ordinary_nat", "str", _ALG.ordinary_nat, "where inside hosts' TCP and UDP "
           "are translated: controller (a session per flow, decided by the controller) or "
           "conntrack (the datapath's connection tracker, from entries per inside host)",
           rule=f"one of {', '.join(ORDINARY_NAT)}"),
    Option("ct_zone", "int", _ALG.ct_zone, "the connection tracker's zone of this "
           "gateway's sessions (ordinary_nat = conntrack; every userspace bridge shares "
           "one table, so each gateway needs its own zone)", rule=f"1..{CT_ZONE_MAX}"),
    Option("ct_ports_per_host", "int", _ALG.ct_ports_per_host, "public ports of each "
           "inside host's block (ordinary_nat = conntrack, RFC 7422): an address of the "
           "pool serves (port_max - port_min + 1) / ct_ports_per_host hosts",
           rule="1..port_max - port_min + 1 (checked with ordinary_nat = conntrack)"),
    Option("ct_time_wait", "int", _ALG.ct_time_wait, "seconds the connection tracker "
           "keeps a closed TCP connection, and so its public port from new ones "
           "(ordinary_nat = conntrack; the zone's timeout policy): at least the servers' "
           "TIME-WAIT (Linux: 60 s), or a new connection drawing that port is refused",
           rule="at least 1"),
    Option("gre_outbound_strict", "bool", _ALG.gre_outbound_strict,
           "client -> server GRE through the controller, only the client's own keys"),
    Option("stats_interval", "float", 5.0, "seconds between flow statistics polls",
           rule="positive"),
    Option("state_file", "str", "", "SQLite file in which calls, control connections and "
           "sessions survive a controller restart (empty: none)"),
    Option("gre_demux_port", "str", "", "OVS port of the GRE demultiplexer (empty: none; "
           "shared pairs' GRE then goes through the controller)",
           rule="empty, or a port that is neither an inside port nor the outside port"),
    Option("gre_demux_dir", "str", "", "BPF filesystem directory of the GRE "
           "demultiplexer's pinned program and table",
           rule="required with gre_demux_port"),
    Option("rest_host", "str", "127.0.0.1", "IPv4 address the HTTP API (REST and "
           "/metrics) listens on", rule="an IPv4 address"),
    Option("rest_port", "int", DEFAULT_REST_PORT, "TCP port of the HTTP API (0: none)",
           rule=f"0..{PORT_MAX}"),
    Option("rest_token", "str", "", "bearer token every HTTP API request must carry "
           f"(Authorization: Bearer ...; at least {REST_TOKEN_MIN} printable characters; "
           "empty: none, allowed only on a loopback rest_host)", secret=True,
           rule=f"empty, or at least {REST_TOKEN_MIN} printable ASCII characters without "
           "spaces; required when rest_host is not a loopback address and rest_port is "
           "not 0"),
    Option("store", "str", "sqlite", "where the records that outlive the controller go: "
           "sqlite (state_file, one controller) or etcd (etcd_endpoints, shared by every "
           "controller of the same bridges; one is master of each bridge, the others "
           "standbys)", rule="sqlite or etcd"),
    Option("etcd_endpoints", "list", "", "client URLs of the etcd cluster's members, "
           "comma separated (store = etcd)",
           rule="http://host:port URLs; required with store = etcd"),
    Option("etcd_cluster", "str", "pptp-alg", "name of the controllers' cluster, the "
           "first part of their keys in etcd: the same for every controller of the same "
           "bridges", rule="1 to 32 of a-z, 0-9, _ and -"),
    Option("controller_id", "str", "", "this controller's name among the controllers "
           "(empty: the host's name and the process's ID)",
           rule="empty, or 1 to 64 of A-Z, a-z, 0-9, _, . and -"),
)


def rule(option: Option) -> str:
    """What a value of ``option`` must be, in words: its own ``rule``, else what its
    kind and the checks' bounds say (timeouts positive, counts and rates at least 1)."""
    if option.rule:
        return option.rule
    if option.name in _SECONDS:
        return "positive"
    if option.name in _COUNTS:
        return "at least 1"
    if option.kind == "bool":
        return "true or false"
    return ""


def markdown() -> str:
    """``docs/options.md``: every option with its default, its rule and what it does."""
    lines = [
        "# Options",
        "",
        f"The `[{GROUP}]` options of the app's configuration file. This page is generated "
        "from the",
        "option table in `alg/config.py`: "
        "`.venv/bin/python -m alg.config --markdown > docs/options.md`.",
        "",
        "A bad or missing value stops the app's start with a message naming the option, "
        "for example",
        f"`{GROUP}.public_ips: missing (at least one public address)`. Timeouts are in "
        "seconds, sizes in",
        "bytes, rates in packets per second. Lists are comma-separated; booleans are "
        "`true` or `false`",
        "(`yes`/`no`, `on`/`off` and `1`/`0` too).",
        "",
        "**Several gateways.** One process serves one gateway per `[gateway:NAME]` "
        "section (NAME:",
        "1 to 32 of a-z, 0-9, `_` and `-`), each bound to its own bridge; an option a "
        "section does not",
        f"set takes `[{GROUP}]`'s value. {', '.join(f'`{n}`' for n in PER_PROCESS)} are "
        "the process's (its HTTP API, its store, its name among the controllers)",
        f"and only in `[{GROUP}]`. Without a `[gateway:NAME]` section, `[{GROUP}]` alone "
        f"is the one gateway, named",
        f"`{DEFAULT_GATEWAY}`. Two gateways sharing a bridge or datapath ID, a port, a "
        "state file, a demultiplexer",
        "or (with `ordinary_nat = conntrack`) a zone stop the start, naming the section "
        "and the key, for",
        "example `gateway:edge2.bridge: br-edge is gateway edge1's bridge too`.",
        "",
        "| option | default | rule | what |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{o.name}` | {_shown(o.default)} | {_cell(rule(o) or '-')} "
              f"| {_cell(o.help)} |" for o in OPTIONS]
    return "\n".join(lines) + "\n"


SAMPLE_WIDTH = 88
"""The width the sample configuration's comments are wrapped to."""


def sample() -> str:
    """``etc/gateway.conf.sample``: a ``[nat]`` section with every option commented out at
    its default, each after its help text and its rule."""
    lines = [
        "# pptp-alg-gateway's configuration: one gateway, the [nat] section alone.",
        "# Generated from the option table in alg/config.py:",
        "#   python -m alg.config --sample > etc/gateway.conf.sample",
        "# Every option is commented out at its default, after what it does and its rule.",
        "# Set the required ones (inside_ports, outside_port, inside_subnet,",
        "# inside_gateway, outside_subnet, public_ips) and the bridge to bind to (bridge",
        "# or datapath_id); a bad or missing value stops the start, naming the option.",
        "# Several gateways in one process: [gateway:NAME] sections (docs/options.md).",
        "",
        f"[{GROUP}]",
    ]
    for option in OPTIONS:
        text = option.help + (f". Rule: {rule(option)}." if rule(option) else ".")
        lines += ["", *textwrap.wrap(text, SAMPLE_WIDTH - 2, initial_indent="# ",
                                     subsequent_indent="# ")]
        value = _sample_value(option.default)
        lines.append(f"#{option.name} = {value}" if value else f"#{option.name} =")
    return "\n".join(lines) + "\n"


def _sample_value(default: object) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, list | tuple):
        return ",".join(str(item) for item in default)
    return str(default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if default in ("", []):
        return "(empty)"
    return f"`{default}`"



def _datapath_id(value: object) -> int | None:
    text = str(value or "").strip().lower()
    if not text:
        return None
    digits = text.removeprefix("0x")
    if not 1 <= len(digits) <= 16 or any(c not in "0123456789abcdef" for c in digits):
        raise ConfigError("datapath_id", f"must be 1 to 16 hex digits (0x allowed), got "
                          f"{value!r}")
    return int(digits, 16)


def load(values: Mapping[str, Any], section: str = GROUP) -> GatewayConfig:
    """Validate raw option values (by option name) into a :class:`GatewayConfig`.

    Raises:
        ConfigError: naming ``<section>.<option>`` for the first bad or missing value.
    """
    try:
        return _load(values)
    except ConfigError as exc:
        raise ConfigError(f"{section}.{exc.key}", exc.reason) from exc


def load_gateways(nat: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, GatewayConfig]:
    """The gateways of one process, by name, in the file's order.

    Without a ``[gateway:NAME]`` section, ``[nat]`` alone is the one gateway, named
    :data:`DEFAULT_GATEWAY`. Otherwise each section is a gateway, whose options default
    to ``[nat]``'s; the options of :data:`PER_PROCESS` are the process's and only in
    ``[nat]``.

    Args:
        nat: the ``[nat]`` values by option name.
        sections: each gateway's name -> the values its section sets (None or absent:
            not set).

    Raises:
        ConfigError: naming ``gateway:NAME.<option>`` (or ``nat.<option>``) for the
            first bad value, or two gateways that would share a switch, a port, a zone
            of the connection tracker, a state file or a demultiplexer.
    """
    if not sections:
        return {DEFAULT_GATEWAY: load(nat)}
    gateways: dict[str, GatewayConfig] = {}
    for name, values in sections.items():
        section = f"{GATEWAY_SECTION}{name}"
        if not GATEWAY_NAME.fullmatch(name):
            raise ConfigError(section, "a gateway's name is 1 to 32 of a-z, 0-9, _ and -, "
                              "starting with a letter or digit")
        for key, value in values.items():
            if key in PER_PROCESS and value is not None:
                raise ConfigError(f"{section}.{key}", "is the process's: set it in "
                                  f"[{GROUP}]")
        gateways[name] = load({**nat, **{key: value for key, value in values.items()
                                         if value is not None}}, section)
    _apart(gateways)
    return gateways


def _apart(gateways: Mapping[str, GatewayConfig]) -> None:
    """Refuse what two gateways of one process would share."""
    seen: dict[tuple[str, object], str] = {}

    def claim(name: str, key: str, value: object, what: str) -> None:
        other = seen.setdefault((what, value), name)
        if other != name:
            raise ConfigError(f"{GATEWAY_SECTION}{name}.{key}", f"{value} is gateway "
                              f"{other}'s {what} too")

    for name, config in gateways.items():
        if config.datapath_id is None and not config.bridge:
            raise ConfigError(f"{GATEWAY_SECTION}{name}.bridge", "missing: with several "
                              "gateways, each binds its switch by bridge or datapath_id")
        if config.bridge:
            claim(name, "bridge", config.bridge, "bridge")
        if config.datapath_id is not None:
            claim(name, "datapath_id", f"{config.datapath_id:016x}", "datapath")
        for port in config.inside_ports:
            claim(name, "inside_ports", port, "port")
        claim(name, "outside_port", config.outside_port, "port")
        if config.gre_demux_port:
            claim(name, "gre_demux_port", config.gre_demux_port, "port")
            claim(name, "gre_demux_dir", config.gre_demux_dir, "demultiplexer folder")
        if config.state_file:
            claim(name, "state_file", config.state_file, "state file")
        if config.alg.ordinary_nat == "conntrack":
            claim(name, "ct_zone", config.alg.ct_zone, "zone of the connection tracker")


def _load(values: Mapping[str, Any]) -> GatewayConfig:
    raw = {o.name: values.get(o.name, o.default) for o in OPTIONS}
    alg_names = {f.name for f in fields(AlgConfig)}
    numbers = {
        o.name: _number(o, raw[o.name]) for o in OPTIONS
        if o.kind in ("float", "int") and o.name in alg_names
    }
    alg = AlgConfig(
        public_ips=tuple(_address("public_ips", p) for p in _list(raw["public_ips"])),
        alg_enabled=_bool("alg", raw["alg"]),
        gre_outbound_strict=_bool("gre_outbound_strict", raw["gre_outbound_strict"]),
        gre_demux=bool(str(raw["gre_demux_port"] or "").strip()),
        policy=str(raw["policy"] or "open"),
        ordinary_nat=str(raw["ordinary_nat"] or "conntrack"),
        **numbers,
    )
    if not raw["inside_gateway"]:
        raise ConfigError("inside_gateway", "missing (the gateway's inside address)")
    return GatewayConfig(
        alg=alg,
        inside_ports=tuple(_list(raw["inside_ports"])),
        outside_port=str(raw["outside_port"] or "").strip(),
        inside_subnet=_network("inside_subnet", raw["inside_subnet"]),
        inside_gateway=_address("inside_gateway", raw["inside_gateway"]),
        outside_subnet=_network("outside_subnet", raw["outside_subnet"]),
        next_hop=_address("next_hop", raw["next_hop"]) if raw["next_hop"] else None,
        gateway_mac=str(raw["gateway_mac"] or "").lower(),
        bridge=str(raw["bridge"] or "").strip(),
        datapath_id=_datapath_id(raw["datapath_id"]),
        stats_interval=_number(_option("stats_interval"), raw["stats_interval"]),
        state_file=str(raw["state_file"] or "").strip(),
        gre_demux_port=str(raw["gre_demux_port"] or "").strip(),
        gre_demux_dir=str(raw["gre_demux_dir"] or "").strip(),
        rest_host=str(_address("rest_host", raw["rest_host"] or "127.0.0.1")),
        rest_port=_number(_option("rest_port"), raw["rest_port"]),
        rest_token=str(raw["rest_token"] or "").strip(),
        store=str(raw["store"] or "sqlite").strip(),
        etcd_endpoints=tuple(_list(raw["etcd_endpoints"])),
        etcd_cluster=str(raw["etcd_cluster"] or "pptp-alg").strip(),
        controller_id=str(raw["controller_id"] or "").strip(),
    )


def _option(name: str) -> Option:
    return next(o for o in OPTIONS if o.name == name)


def _list(value: object) -> list[str]:
    items = value if isinstance(value, list | tuple) else str(value or "").split(",")
    return [str(p).strip() for p in items if str(p).strip()]


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(key, f"not true or false: {value!r}")


def _number(option: Option, value: object) -> Any:
    try:
        return int(str(value)) if option.kind == "int" else float(str(value))
    except ValueError as exc:
        raise ConfigError(option.name, f"not a number: {value!r}") from exc


def _address(key: str, value: object) -> IPv4Address:
    try:
        return IPv4Address(str(value).strip())
    except ValueError as exc:
        raise ConfigError(key, f"not an IPv4 address: {value!r}") from exc


def _network(key: str, value: object) -> IPv4Network:
    if not value:
        raise ConfigError(key, "missing (an IPv4 subnet such as 192.168.1.0/24)")
    try:
        return IPv4Network(str(value).strip())
    except ValueError as exc:
        raise ConfigError(key, f"not an IPv4 subnet: {value!r}") from exc


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
    elif sys.argv[1:] == ["--sample"]:
        sys.stdout.write(sample())
    else:
        sys.exit("usage: python -m alg.config --markdown > docs/options.md\n"
                 "       python -m alg.config --sample > etc/gateway.conf.sample")
