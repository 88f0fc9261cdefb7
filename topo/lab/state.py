"""A lab's state (``LabState``, the file ``lab.json``), the app's configuration, the files.

``plan`` describes a lab without building anything; ``render_config`` writes the app's
options for it (``[nat]``, and a ``[gateway:g<j>]`` section per gateway of a lab of
several bridges; for each controller of a lab on etcd, its own file), refusing what the
app would refuse; ``write_state``, ``read_state``, ``read_pid`` and ``locked`` work on
the files in the lab's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alg import config as options
from alg.errors import ConfigError
from ryu_apps import switch
from topo.lab import names
from topo.lab.names import (
    CONFIG_FILE,
    DEFAULT_APP,
    DEFAULT_DATAPATH_ID,
    DEFAULT_FRAMEWORK,
    DEFAULT_NAME,
    DEFAULT_RUN_DIR,
    ETCD_DIR,
    ETCD_MEMBERS,
    FRAMEWORKS,
    INSIDE_GATEWAY,
    INSIDE_SUBNET,
    LOG_FILE,
    MAX_BRIDGES,
    MAX_CLIENTS,
    MAX_CONTROLLERS,
    MAX_PUBLIC_IPS,
    NAME_PATTERN,
    NS_IFNAME,
    OFP_HOST,
    OUTSIDE_SUBNET,
    PID_FILE,
    POLICIES,
    REPO,
    REST_HOST,
    SERVER_HOST,
    SERVER_IP,
    SERVER_OFPORT,
    STATE_FILE,
    STORES,
    bridge_name,
    check_name,
    client_address,
    controller_files,
    datapath_id,
    demux_dir,
    demux_port_name,
    gateway_name,
    gateway_number,
    gateway_state_file,
    gateway_state_files,
    namespace,
    namespace_pattern,
    port_name,
    port_pattern,
    public_addresses,
    run_dir,
)

#: The REST paths of the only gateway of a process; ``/pptp-alg/gateways/<name>`` with
#: several (``ryu_apps``).
REST_PREFIX = "/pptp-alg"
#: The options that the lab writes in each ``[gateway:g<j>]`` section (the others, common
#: to every gateway, go to ``[nat]``).
GATEWAY_OPTIONS = ("inside_ports", "outside_port", "bridge", "state_file", "ct_zone",
                   "gre_demux_port", "gre_demux_dir")
#: The options that the lab writes for each controller of a lab on etcd.
CONTROLLER_OPTIONS = ("rest_port", "state_file", "store", "etcd_endpoints", "etcd_cluster",
                      "controller_id")


@dataclass
class EtcdMemberState:
    """One member of a lab's etcd cluster (``topo.etcd_cluster``), on 127.0.0.1.

    Attributes:
        name: ``m1`` .. ``m3``.
        client_port: The port its clients (the controllers' proxies) connect to (0 until
            ``up`` picks it).
        peer_port: The port the other members connect to (likewise).
        data_dir: Its data folder, in the lab's folder.
        log_path: Its output.
        pid_path: Its PID file.
        pid: Its PID, None before it was started.
    """

    name: str
    client_port: int = 0
    peer_port: int = 0
    data_dir: str = ""
    log_path: str = ""
    pid_path: str = ""
    pid: int | None = None

    @property
    def client_url(self) -> str:
        """``http://127.0.0.1:<client_port>``."""
        return f"http://{OFP_HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """``http://127.0.0.1:<peer_port>``."""
        return f"http://{OFP_HOST}:{self.peer_port}"

    def place(self, folder: Path) -> None:
        """Put the member's files in ``folder``'s etcd folder."""
        self.data_dir = str(folder / ETCD_DIR / f"{self.name}.etcd")
        self.log_path = str(folder / ETCD_DIR / f"{self.name}.log")
        self.pid_path = str(folder / ETCD_DIR / f"{self.name}.pid")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EtcdMemberState:
        """Build a member from ``dataclasses.asdict`` output (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in _field_names(cls)})


@dataclass
class ControllerState:
    """One controller process of a lab on etcd, and its etcd proxy (``topo.etcd_proxy``).

    Attributes:
        index: 1 .. N.
        controller_id: Its ``controller_id``: ``c<index>``.
        openflow_port: Its OpenFlow port on 127.0.0.1 (0 until ``up`` picks it).
        rest_port: Its REST port on 127.0.0.1 (likewise).
        proxy_ports: Its proxy's ports on 127.0.0.1, one per etcd member in the members'
            order (likewise): its ``etcd_endpoints``.
        pid: Its PID, None before it was started.
        proxy_pid: Its proxy's PID, likewise.
        config_path: Its configuration file.
        log_path: Its stdout and stderr (the previous run's kept as ``.1``).
        pid_path: Its PID file.
        exit_path: Where its exit status goes when it ends (``topo.watch``).
        proxy_state_path: The proxy's state file (its ports, whether it is cut).
        proxy_log_path: The proxy's output.
        proxy_pid_path: The proxy's PID file.
    """

    index: int
    controller_id: str
    openflow_port: int = 0
    rest_port: int = 0
    proxy_ports: list[int] = field(default_factory=list)
    pid: int | None = None
    proxy_pid: int | None = None
    config_path: str = ""
    log_path: str = ""
    pid_path: str = ""
    exit_path: str = ""
    proxy_state_path: str = ""
    proxy_log_path: str = ""
    proxy_pid_path: str = ""

    @property
    def target(self) -> str:
        """The bridges' controller target for it: ``tcp:127.0.0.1:<openflow_port>``."""
        return f"tcp:{OFP_HOST}:{self.openflow_port}"

    @property
    def rest_url(self) -> str:
        """Base URL of its REST API."""
        return f"http://{REST_HOST}:{self.rest_port}"

    @property
    def etcd_endpoints(self) -> list[str]:
        """Its ``etcd_endpoints``: its proxy's ports."""
        return [f"http://{OFP_HOST}:{port}" for port in self.proxy_ports]

    def place(self, folder: Path) -> None:
        """Put the controller's and its proxy's files in ``folder``."""
        files = controller_files(self.index)
        self.config_path = str(folder / files["config"])
        self.log_path = str(folder / files["log"])
        self.pid_path = str(folder / files["pid"])
        self.exit_path = str(folder / files["exit"])
        self.proxy_state_path = str(folder / files["proxy_state"])
        self.proxy_log_path = str(folder / files["proxy_log"])
        self.proxy_pid_path = str(folder / files["proxy_pid"])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControllerState:
        """Build a controller from ``dataclasses.asdict`` output (unknown keys are
        ignored)."""
        known = {k: v for k, v in data.items() if k in _field_names(cls)}
        known["proxy_ports"] = [int(port) for port in known.get("proxy_ports") or []]
        return cls(**known)


def _field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass
class GatewayState:
    """One gateway of a lab: its bridge, its namespaces and ports, what the app keeps apart.

    Attributes:
        name: ``g1`` .. ``g9``.
        namespaces: Its namespaces (the clients in order, then the server).
        addresses: Namespace name -> its IPv4 address (the same in every gateway).
        namespace_ports: Namespace name -> the OVS port of its veth pair.
        ports: OVS port name -> OpenFlow port number.
        inside_ports: OVS port names on the inside, in client order.
        outside_port: OVS port name on the outside.
        server_namespace: The server's namespace.
        bridge: Its OVS bridge.
        datapath_id: The bridge's datapath ID.
        ct_zone: Its zone of the connection tracker (``ct_zone``).
        state_file: Its store (``state_file``).
        gre_demux_port: Its GRE demultiplexer's OVS port (empty without one).
        gre_demux_dir: Where its demultiplexer's BPF filesystem is (likewise).
        rest_prefix: The start of its REST paths: ``/pptp-alg`` for the only gateway of
            a lab, ``/pptp-alg/gateways/<name>`` with several.
    """

    name: str
    namespaces: list[str]
    addresses: dict[str, str]
    namespace_ports: dict[str, str]
    ports: dict[str, int]
    inside_ports: list[str]
    outside_port: str
    server_namespace: str
    bridge: str
    datapath_id: int
    ct_zone: int
    state_file: str
    gre_demux_port: str = ""
    gre_demux_dir: str = ""
    rest_prefix: str = REST_PREFIX

    @property
    def number(self) -> int:
        """The gateway's number (``j`` of ``g<j>``)."""
        return gateway_number(self.name)

    @property
    def client_namespaces(self) -> list[str]:
        """The client namespaces, in order."""
        return [ns for ns in self.namespaces if ns != self.server_namespace]

    @property
    def clients(self) -> int:
        """The number of client namespaces."""
        return len(self.client_namespaces)

    @property
    def server_ip(self) -> str:
        """The server's address."""
        return self.addresses[self.server_namespace]

    def client(self, index: int) -> str:
        """The namespace of client ``index`` (1-based).

        Raises:
            ValueError: When the gateway has no such client.
        """
        if not 1 <= index <= self.clients:
            raise ValueError(f"gateway {self.name} has clients 1 .. {self.clients}, "
                             f"not {index}")
        return self.client_namespaces[index - 1]

    def rest_path(self, path: str) -> str:
        """``path`` of the app's REST API (``/pptp-alg/...``) for this gateway; a path
        under ``/pptp-alg/gateways`` (the process's list, or a gateway's already) and one
        outside ``/pptp-alg`` stay as they are."""
        gateways = f"{REST_PREFIX}/gateways"
        if path == gateways or path.startswith(gateways + "/"):
            return path
        if path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
            return self.rest_prefix + path[len(REST_PREFIX):]
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatewayState:
        """Build a gateway from ``dataclasses.asdict`` output (unknown keys are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in fields}
        known["ports"] = {str(k): int(v) for k, v in known.get("ports", {}).items()}
        return cls(**known)


def _gateway_plan(name: str, gateway: int, clients: int, gre_demux: bool,
                  several: bool) -> GatewayState:
    """Gateway ``gateway`` of lab ``name`` as planned (its folder is the lab's)."""
    hosts = [f"c{i}" for i in range(1, clients + 1)] + [SERVER_HOST]
    spaces = [namespace(host, name, gateway) for host in hosts]
    addresses = {ns: client_address(i) for i, ns in enumerate(spaces[:-1], start=1)}
    addresses[spaces[-1]] = SERVER_IP
    ports = {port_name(host, name, gateway): i for i, host in enumerate(hosts[:-1], start=1)}
    ports[port_name(SERVER_HOST, name, gateway)] = SERVER_OFPORT
    return GatewayState(
        name=gateway_name(gateway),
        namespaces=spaces,
        addresses=addresses,
        namespace_ports={ns: port_name(host, name, gateway)
                         for ns, host in zip(spaces, hosts, strict=True)},
        ports=ports,
        inside_ports=[port_name(host, name, gateway) for host in hosts[:-1]],
        outside_port=port_name(SERVER_HOST, name, gateway),
        server_namespace=spaces[-1],
        bridge=bridge_name(name, gateway),
        datapath_id=datapath_id(name, gateway),
        ct_zone=gateway_zone(name, gateway),
        state_file=str(run_dir(name) / gateway_state_file(gateway)),
        gre_demux_port=demux_port_name(name, gateway) if gre_demux else "",
        gre_demux_dir=demux_dir(name, gateway) if gre_demux else "",
        rest_prefix=(f"{REST_PREFIX}/gateways/{gateway_name(gateway)}" if several
                     else REST_PREFIX),
    )


@dataclass
class LabState:
    """What a lab is made of, as recorded in ``lab.json``.

    Attributes:
        clients: Number of client namespaces.
        policy: The gateway's security policy, ``open`` or ``strict``.
        alg: Whether the PPTP ALG is on.
        public_ips: The gateway's public addresses.
        namespaces: Every namespace of the lab (the clients in order, then the server).
        addresses: Namespace name -> its IPv4 address (without prefix length).
        namespace_ports: Namespace name -> the OVS port of its veth pair.
        ports: OVS port name -> OpenFlow port number.
        inside_ports: OVS port names on the inside, in client order.
        outside_port: OVS port name on the outside.
        name: The lab's name.
        server_namespace: The server's namespace.
        bridge: The OVS bridge.
        datapath_id: The bridge's datapath ID.
        openflow_port: The controller's OpenFlow port on 127.0.0.1 (0 until ``up``
            picks it, in a lab other than the default).
        rest_port: The REST API's port on 127.0.0.1 (likewise).
        controller: The bridge's controller target (empty until the port is known).
        controller_pid: PID of ``pptp-alg-gateway``, None before it was started.
        rest_url: Base URL of the app's REST API (empty until the port is known).
        app: Path of the Ryu application that runs.
        framework: ``ryu`` or ``os-ken``: whose manager ``pptp-alg-gateway`` runs.
        phase: ``building``, ``starting`` or ``up`` (how far ``up`` got), or
            ``restarting`` while ``restart_controller`` or ``restart_switch`` runs.
        created: When ``up`` started (seconds since the epoch).
        run_dir: Directory of the lab's files.
        state_path: This state, as JSON.
        config_path: The app's configuration file.
        log_path: The controller's stdout and stderr.
        pid_path: The controller's PID file.
        inside_subnet: The inside subnet.
        inside_gateway: The gateway's inside address (the clients' default route).
        outside_subnet: The outside (on-link) subnet.
        ns_ifname: The interface name inside every namespace.
        options: More ``[nat]`` options for the app (name -> value as in the file),
            e.g. shorter timeouts for a test; with several bridges, for every gateway.
        gre_demux: Whether each gateway has a GRE demultiplexer.
        gateways: With several bridges, every gateway (``g1`` first), else empty. The
            fields above that name a gateway's part (``namespaces`` .. ``datapath_id``)
            are gateway 1's in every lab. ``to_dict`` leaves the key out when it is
            empty, so that the state file of a lab of one bridge has today's keys.
        store: ``sqlite`` (one controller, ``controller_pid`` and the files above) or
            ``etcd``: ``controllers`` and ``etcd`` then say what runs; the ports and
            ``rest_url`` above are controller 1's, ``controller`` every controller's
            target, and ``controller_pid`` stays None.
        controllers: With ``etcd``, every controller (index 1 first), else empty.
        etcd: With ``etcd``, the members of the lab's etcd cluster, else empty.
            ``to_dict`` leaves ``store``, ``controllers`` and ``etcd`` out with
            ``sqlite``.
        extra: Keys of the state file that this version does not know.
    """

    clients: int
    policy: str
    alg: bool
    public_ips: list[str]
    namespaces: list[str]
    addresses: dict[str, str]
    namespace_ports: dict[str, str]
    ports: dict[str, int]
    inside_ports: list[str]
    outside_port: str
    name: str = DEFAULT_NAME
    server_namespace: str = SERVER_HOST
    bridge: str = bridge_name()
    datapath_id: int = DEFAULT_DATAPATH_ID
    openflow_port: int = switch.OPENFLOW_PORT
    rest_port: int = switch.REST_PORT
    controller: str = f"tcp:{OFP_HOST}:{switch.OPENFLOW_PORT}"
    controller_pid: int | None = None
    rest_url: str = f"http://{REST_HOST}:{switch.REST_PORT}"
    app: str = DEFAULT_APP
    framework: str = DEFAULT_FRAMEWORK
    phase: str = "building"
    created: float = 0.0
    run_dir: str = str(DEFAULT_RUN_DIR)
    state_path: str = str(DEFAULT_RUN_DIR / STATE_FILE)
    config_path: str = str(DEFAULT_RUN_DIR / CONFIG_FILE)
    log_path: str = str(DEFAULT_RUN_DIR / LOG_FILE)
    pid_path: str = str(DEFAULT_RUN_DIR / PID_FILE)
    inside_subnet: str = INSIDE_SUBNET
    inside_gateway: str = INSIDE_GATEWAY
    outside_subnet: str = OUTSIDE_SUBNET
    ns_ifname: str = NS_IFNAME
    options: dict[str, str] = field(default_factory=dict)
    gre_demux: bool = False
    gateways: list[GatewayState] = field(default_factory=list)
    store: str = "sqlite"
    controllers: list[ControllerState] = field(default_factory=list)
    etcd: list[EtcdMemberState] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bridges(self) -> int:
        """The number of bridges (gateways) of the lab."""
        return max(1, len(self.gateways))

    @property
    def all_gateways(self) -> list[GatewayState]:
        """Every gateway of the lab, ``g1`` first (one for a lab of one bridge)."""
        if self.gateways:
            return list(self.gateways)
        return [GatewayState(
            name=gateway_name(1), namespaces=list(self.namespaces),
            addresses=dict(self.addresses), namespace_ports=dict(self.namespace_ports),
            ports=dict(self.ports), inside_ports=list(self.inside_ports),
            outside_port=self.outside_port, server_namespace=self.server_namespace,
            bridge=self.bridge, datapath_id=self.datapath_id,
            ct_zone=zone_of(self.name, self),
            state_file=str(Path(self.run_dir) / gateway_state_file(1)),
            gre_demux_port=demux_port_name(self.name) if self.gre_demux else "",
            gre_demux_dir=demux_dir(self.name) if self.gre_demux else "",
        )]

    def gateway(self, which: str | int = 1) -> GatewayState:
        """The gateway called ``which`` (``g<j>``) or numbered ``which``.

        Raises:
            ValueError: When the lab has no such gateway.
        """
        number = gateway_number(which) if isinstance(which, str) else which
        if not isinstance(number, int) or not 1 <= number <= self.bridges:
            raise ValueError(f"lab {self.name} has gateways g1 .. g{self.bridges}, "
                             f"not {which!r}")
        return self.all_gateways[number - 1]

    @property
    def client_namespaces(self) -> list[str]:
        """Gateway 1's client namespaces, in order."""
        return self.gateway(1).client_namespaces

    @property
    def server_ip(self) -> str:
        """Gateway 1's server's address."""
        return self.gateway(1).server_ip

    def client(self, index: int) -> str:
        """The namespace of gateway 1's client ``index`` (1-based).

        Raises:
            ValueError: When the gateway has no such client.
        """
        return self.gateway(1).client(index)

    def use_ports(self, openflow_port: int, rest_port: int) -> None:
        """Set the controller's TCP ports and what follows from them."""
        self.openflow_port = openflow_port
        self.rest_port = rest_port
        self.controller = f"tcp:{OFP_HOST}:{openflow_port}"
        self.rest_url = f"http://{REST_HOST}:{rest_port}"

    def use_etcd_ports(self, ports: list[int]) -> None:
        """Give a lab on etcd its TCP ports, in this order: each member's client and peer
        port, then each controller's OpenFlow and REST port and its proxy's, one per
        member; and set what follows from them (the lab's ports are controller 1's,
        ``controller`` every controller's target).

        Raises:
            ValueError: When ``ports`` is not :meth:`etcd_port_count` long.
        """
        if len(ports) != self.etcd_port_count():
            raise ValueError(f"a lab of {len(self.controllers)} controllers on etcd needs "
                             f"{self.etcd_port_count()} ports, not {len(ports)}")
        left = iter(ports)
        for member in self.etcd:
            member.client_port, member.peer_port = next(left), next(left)
        for one in self.controllers:
            one.openflow_port, one.rest_port = next(left), next(left)
            one.proxy_ports = [next(left) for _ in self.etcd]
        first = self.controllers[0]
        self.use_ports(first.openflow_port, first.rest_port)
        self.controller = " ".join(one.target for one in self.controllers)

    def etcd_port_count(self) -> int:
        """How many TCP ports a lab on etcd uses (none with ``sqlite``)."""
        return 2 * len(self.etcd) + len(self.controllers) * (2 + len(self.etcd))

    def tcp_ports(self) -> set[int]:
        """Every TCP port of 127.0.0.1 that the lab recorded (0 for those not picked)."""
        return ({self.openflow_port, self.rest_port}
                | {p for m in self.etcd for p in (m.client_port, m.peer_port)}
                | {p for c in self.controllers
                   for p in (c.openflow_port, c.rest_port, *c.proxy_ports)})

    def controller_at(self, index: int) -> ControllerState:
        """Controller ``index`` of a lab on etcd.

        Raises:
            ValueError: When the lab has no such controller.
        """
        if not self.controllers:
            raise ValueError(f"lab {self.name} has one controller, with store sqlite: "
                             f"`up --controllers N --store etcd` builds a lab of several")
        if isinstance(index, bool) or not isinstance(index, int) or not (
                1 <= index <= len(self.controllers)):
            raise ValueError(f"lab {self.name} has controllers 1 .. {len(self.controllers)}, "
                             f"not {index!r}")
        return self.controllers[index - 1]

    def place(self, folder: Path) -> None:
        """Put the lab's files (state, configuration, log, PID file, the gateways' stores)
        in ``folder``."""
        self.run_dir = str(folder)
        self.state_path = str(folder / STATE_FILE)
        self.config_path = str(folder / CONFIG_FILE)
        self.log_path = str(folder / LOG_FILE)
        self.pid_path = str(folder / PID_FILE)
        for gateway in self.gateways:
            gateway.state_file = str(folder / gateway_state_file(gateway.number))
        for one in self.controllers:
            one.place(folder)
        for member in self.etcd:
            member.place(folder)

    def to_dict(self) -> dict[str, Any]:
        """Return the state as plain JSON-able data (without ``gateways`` when empty, and
        without ``store``, ``controllers`` and ``etcd`` with ``sqlite``)."""
        data = dataclasses.asdict(self)
        if not self.gateways:
            del data["gateways"]
        if self.store == "sqlite" and not self.controllers and not self.etcd:
            for key in ("store", "controllers", "etcd"):
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        """Build a state from ``to_dict`` output; unknown keys go to ``extra``.

        Args:
            data: The decoded JSON object.

        Returns:
            The state.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in fields and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in fields}
        extra.update(data.get("extra") or {})
        known["ports"] = {str(k): int(v) for k, v in known.get("ports", {}).items()}
        known["gateways"] = [GatewayState.from_dict(g) for g in known.get("gateways") or []]
        known["controllers"] = [ControllerState.from_dict(c)
                                for c in known.get("controllers") or []]
        known["etcd"] = [EtcdMemberState.from_dict(m) for m in known.get("etcd") or []]
        return cls(**known, extra=extra)


def plan(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    app: str | os.PathLike[str] = DEFAULT_APP,
    *,
    name: str = DEFAULT_NAME,
    options: dict[str, str] | None = None,
    gre_demux: bool = False,
    framework: str = DEFAULT_FRAMEWORK,
    bridges: int = 1,
    controllers: int = 1,
    store: str = "sqlite",
) -> LabState:
    """Describe a lab without building anything.

    Args:
        clients: Number of client namespaces (1 .. 64), of each gateway.
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        app: The Ryu application, absolute or relative to the repo root.
        name: The lab's name.
        bridges: Number of bridges, each a gateway of its own (1 .. 9), all driven by
            the one controller (or by each of ``controllers``).
        controllers: Number of controller processes (1 .. 9); more than one needs
            ``store`` ``etcd``.
        store: ``sqlite`` (a file per gateway) or ``etcd`` (the lab's cluster of three
            members, each controller through a proxy of its own).

    Returns:
        The planned state (phase ``building``, no controller yet; the TCP ports of a lab
        other than the default, and of every lab on etcd, are 0 until ``up`` picks them).

    Raises:
        ValueError: On an argument out of range or a bad name.
    """
    check_name(name)
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1 .. {MAX_CLIENTS}, not {clients}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if not 1 <= public_ips <= MAX_PUBLIC_IPS:
        raise ValueError(f"public_ips must be 1 .. {MAX_PUBLIC_IPS}, not {public_ips}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, "
                         f"not {framework!r}")
    if isinstance(bridges, bool) or not isinstance(bridges, int) or not (
            1 <= bridges <= MAX_BRIDGES):
        raise ValueError(f"bridges must be 1 .. {MAX_BRIDGES}, not {bridges!r}")
    if store not in STORES:
        raise ValueError(f"store must be one of {', '.join(STORES)}, not {store!r}")
    if isinstance(controllers, bool) or not isinstance(controllers, int) or not (
            1 <= controllers <= MAX_CONTROLLERS):
        raise ValueError(f"controllers must be 1 .. {MAX_CONTROLLERS}, not {controllers!r}")
    if controllers > 1 and store != "etcd":
        raise ValueError(f"{controllers} controllers need store etcd (--store etcd): "
                         f"with sqlite each would keep records of its own")
    app_path = Path(app)
    if not app_path.is_absolute():
        app_path = REPO / app_path
    gateways = [_gateway_plan(name, j, clients, gre_demux, bridges > 1)
                for j in range(1, bridges + 1)]
    first = gateways[0]
    state = LabState(
        clients=clients,
        policy=policy,
        alg=alg,
        public_ips=public_addresses(public_ips),
        namespaces=first.namespaces,
        addresses=first.addresses,
        namespace_ports=first.namespace_ports,
        ports=first.ports,
        inside_ports=first.inside_ports,
        outside_port=first.outside_port,
        name=name,
        server_namespace=first.server_namespace,
        bridge=first.bridge,
        datapath_id=first.datapath_id,
        app=str(app_path),
        framework=framework,
        created=time.time(),
        options=dict(options or {}),
        gre_demux=gre_demux,
        gateways=gateways if bridges > 1 else [],
    )
    if store == "etcd":
        state.store = store
        state.controllers = [ControllerState(i, f"c{i}", proxy_ports=[0] * ETCD_MEMBERS)
                             for i in range(1, controllers + 1)]
        state.etcd = [EtcdMemberState(f"m{i}") for i in range(1, ETCD_MEMBERS + 1)]
    state.place(run_dir(name))
    render_config(state)  # refuses options the app would refuse, before anything is built
    if name == DEFAULT_NAME and store == "sqlite":
        state.use_ports(switch.OPENFLOW_PORT, switch.REST_PORT)
    else:
        state.openflow_port = state.rest_port = 0
        state.controller = state.rest_url = ""
    return state


def lab_zone(name: str) -> int:
    """The connection tracker's zone of lab ``name`` (``[nat] ct_zone``): every userspace
    bridge of the machine shares one table, and the labs use the same addresses, so each
    lab keeps to a zone of its own, from its name (1,000 to 60,999)."""
    return 1000 + zlib.crc32(name.encode()) % 60000


def gateway_zone(name: str, gateway: int = 1) -> int:
    """The zone of gateway ``gateway`` of lab ``name``: :func:`lab_zone` for gateway 1, the
    zones after it for the others (60,999 is followed by 1,000), so that the gateways of
    one lab never share one."""
    return 1000 + (lab_zone(name) - 1000 + gateway - 1) % 60000


def zone_of(name: str, state: LabState | None) -> int:
    """The zone lab ``name``'s app uses (gateway 1's): its ``ct_zone`` option, else
    :func:`lab_zone`."""
    if state is not None and str(state.options.get("ct_zone", "")).strip().isdigit():
        return int(state.options["ct_zone"])
    return lab_zone(name)


def zones_of(name: str, state: LabState | None, bridges: Collection[str] = ()) -> list[int]:
    """The zones of every gateway of lab ``name``: those ``state`` records, or without a
    state gateway 1's and those of the other gateways whose bridge ``bridges`` names."""
    if state is not None and state.gateways:
        return [gateway.ct_zone for gateway in state.gateways]
    return [zone_of(name, state)] + [gateway_zone(name, j) for j in range(2, MAX_BRIDGES + 1)
                                     if bridge_name(name, j) in bridges]


def _gateway_values(gateway: GatewayState, state_file: bool = True) -> dict[str, str]:
    """The options of ``gateway`` that the lab writes in its section (``state_file``
    only when ``state_file``)."""
    values = {
        "inside_ports": ",".join(gateway.inside_ports),
        "outside_port": gateway.outside_port,
        "bridge": gateway.bridge,
        "state_file": gateway.state_file,
        "ct_zone": str(gateway.ct_zone),
    }
    if not state_file:
        del values["state_file"]
    if gateway.gre_demux_port:
        values["gre_demux_port"] = gateway.gre_demux_port
        values["gre_demux_dir"] = gateway.gre_demux_dir
    return values


def _controller_values(state: LabState, controller: ControllerState) -> dict[str, str]:
    """The options of ``controller`` of a lab on etcd, the process's (``[nat]``)."""
    return {
        "store": "etcd",
        "etcd_endpoints": ",".join(controller.etcd_endpoints),
        "etcd_cluster": state.name,
        "controller_id": controller.controller_id,
    }


def render_config(
    state: LabState, header: str = "Written by topo.lab; rewritten on every `up`.",
    controller: ControllerState | None = None,
) -> str:
    """Return the app's configuration file (oslo.config INI).

    A lab of one bridge has group ``[nat]`` alone. A lab of several has ``[nat]`` with
    the options common to every gateway (the REST address, the addresses, the policy,
    ``options``) and one section ``[gateway:g<j>]`` per gateway with its own (its
    bridge, ports, store, zone and demultiplexer: ``GATEWAY_OPTIONS``, which
    ``options`` may then not give).
    ``next_hop`` is left out: in the lab the outside subnet is on-link.
    In a lab on etcd, each controller has a file of its own: ``rest_port`` is its own,
    ``[nat]`` also has ``store = etcd``, ``etcd_endpoints`` (its proxy's ports),
    ``etcd_cluster`` (the lab's name) and ``controller_id`` (``c<index>``), no gateway
    has a ``state_file``, and ``options`` may not give any of ``CONTROLLER_OPTIONS``.

    Args:
        state: The lab.
        header: The file's first line, a comment.
        controller: In a lab on etcd, whose file (default: controller 1's).

    Returns:
        The file's text.

    Raises:
        ConfigError: On an option the app would refuse (``alg.config.load``,
            ``load_gateways``), naming it.
    """
    common = {
        "inside_subnet": state.inside_subnet,
        "inside_gateway": state.inside_gateway,
        "outside_subnet": state.outside_subnet,
        "public_ips": ",".join(state.public_ips),
        "policy": state.policy,
        "alg": "true" if state.alg else "false",
        "rest_host": REST_HOST,
        "rest_port": str(state.rest_port),
    }
    unknown = sorted(set(state.options) - {o.name for o in options.OPTIONS})
    if unknown:
        raise ConfigError(f"{options.GROUP}.{unknown[0]}", "no such option")
    on_etcd = state.store == "etcd"
    if on_etcd:
        given = sorted(set(state.options) & set(CONTROLLER_OPTIONS))
        if given:
            raise ConfigError(f"{options.GROUP}.{given[0]}", "each controller of a lab on "
                              "etcd has its own, which the lab sets")
        chosen = state.controllers[0] if controller is None else controller
        common["rest_port"] = str(chosen.rest_port)
        common.update(_controller_values(state, chosen))
    if not state.gateways:
        (gateway,) = state.all_gateways
        values = {**common, **_gateway_values(gateway, state_file=not on_etcd)}
        order = ("inside_ports", "outside_port", "inside_subnet", "inside_gateway",
                 "outside_subnet", "public_ips", "policy", "alg", "bridge", "state_file",
                 "rest_host", "rest_port", "ct_zone", "gre_demux_port", "gre_demux_dir",
                 "store", "etcd_endpoints", "etcd_cluster", "controller_id")
        values = {key: values[key] for key in order if key in values}
        values.update(state.options)
        options.load(values)  # the app's own rules: a lab never writes a file the app refuses
        groups = {options.GROUP: values}
    else:
        given = sorted(set(state.options) & set(GATEWAY_OPTIONS))
        if given:
            raise ConfigError(f"{options.GROUP}.{given[0]}", "each gateway of a lab of "
                              "several bridges has its own, which the lab sets")
        nat = {**common, **state.options}
        sections = {gateway.name: _gateway_values(gateway, state_file=not on_etcd)
                    for gateway in state.gateways}
        options.load_gateways(nat, sections)  # the app's own rules, those between gateways too
        groups = {options.GROUP: nat} | {
            f"{options.GATEWAY_SECTION}{gateway}": values
            for gateway, values in sections.items()}
    lines = [f"# {header}"]
    for group, values in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def write_state(state: LabState) -> None:
    """Record ``state`` in its state file (written aside, then moved over the old one)."""
    path = Path(state.state_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_state(name: str = DEFAULT_NAME) -> LabState | None:
    """Return lab ``name`` as recorded, or None when there is no (readable) state file."""
    try:
        data = json.loads((run_dir(name) / STATE_FILE).read_text())
        return LabState.from_dict(data)
    except (OSError, ValueError, TypeError):
        return None


def labs() -> list[str]:
    """The names of the labs that have a state file, the default lab first."""
    base = names.DEFAULT_RUN_DIR
    found = [DEFAULT_NAME] if (base / STATE_FILE).exists() else []
    prefix = f"{base.name}-"
    for path in sorted(base.parent.glob(f"{prefix}*/{STATE_FILE}")):
        name = path.parent.name[len(prefix):]
        if NAME_PATTERN.fullmatch(name) and name != DEFAULT_NAME:
            found.append(name)
    return found


def read_pid(name: str = DEFAULT_NAME) -> int | None:
    """The PID in lab ``name``'s PID file, or None when there is no (readable) one."""
    try:
        return int((run_dir(name) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made with its folder if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def owned(name: str, state: LabState | None, bridges: Collection[str] = ()
          ) -> tuple[list[str], list[str]]:
    """The namespaces and OVS ports that ``down`` of lab ``name`` may delete.

    Args:
        name: The lab's name.
        state: Its recorded state, or None when there is no state file.
        bridges: Without a state, the bridges of the lab that exist.

    Returns:
        The namespaces and the ports of every gateway that ``state`` records, or without
        a state those of gateway 1 of a lab of ``MAX_CLIENTS`` clients, then those of
        the other gateways whose bridge ``bridges`` names; in all cases only names of the
        lab's own pattern (``namespace_pattern``, ``port_pattern``).
    """
    if state is not None:
        gateways = state.all_gateways
    else:
        found = plan(MAX_CLIENTS, name=name, bridges=MAX_BRIDGES).all_gateways
        gateways = found[:1] + [g for g in found[1:] if g.bridge in bridges]
    spaces, ports = namespace_pattern(name), port_pattern(name)
    return ([ns for g in gateways for ns in g.namespaces if spaces.fullmatch(ns)],
            [p for g in gateways for p in g.namespace_ports.values() if ports.fullmatch(p)])


def lab_bridges(name: str, state: LabState | None) -> list[str]:
    """The bridges of lab ``name``: those ``state`` records, or without a state every
    name its gateways 1 .. ``MAX_BRIDGES`` would have."""
    if state is not None:
        return [g.bridge for g in state.all_gateways]
    return [bridge_name(name, j) for j in range(1, MAX_BRIDGES + 1)]




def controller_pids(name: str, state: LabState | None) -> list[int]:
    """The controller PIDs lab ``name`` recorded: in its PID file and in ``state``."""
    pids = {read_pid(name), state.controller_pid if state is not None else None}
    return sorted(pid for pid in pids if pid is not None)


def clear_gateway_state(folder: Path) -> None:
    """Delete the app's stores (of every gateway) in ``folder``, so that the next app
    starts afresh."""
    for gateway in range(1, MAX_BRIDGES + 1):
        for file in gateway_state_files(gateway):
            (folder / file).unlink(missing_ok=True)
