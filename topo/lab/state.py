"""A lab's state (``LabState``, the file ``lab.json``), the app's configuration, the files.

``plan`` describes a lab without building anything; ``render_config`` writes the app's
``[nat]`` options for it, refusing what the app would refuse; ``write_state``,
``read_state``, ``read_pid`` and ``locked`` work on the files in the lab's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
import zlib
from collections.abc import Iterator
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
    FRAMEWORKS,
    GATEWAY_STATE_FILE,
    GATEWAY_STATE_FILES,
    INSIDE_GATEWAY,
    INSIDE_SUBNET,
    LOG_FILE,
    MAX_CLIENTS,
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
    bridge_name,
    check_name,
    client_address,
    datapath_id,
    demux_dir,
    demux_port_name,
    namespace,
    namespace_pattern,
    port_name,
    port_pattern,
    public_addresses,
    run_dir,
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
        controller_pid: PID of ``ryu-manager``, None before it was started.
        rest_url: Base URL of the app's REST API (empty until the port is known).
        app: Path of the Ryu application that runs.
        framework: ``ryu`` or ``os-ken``: which manager runs the app.
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
            e.g. shorter timeouts for a test.
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_namespaces(self) -> list[str]:
        """The client namespaces, in order."""
        return [ns for ns in self.namespaces if ns != self.server_namespace]

    @property
    def server_ip(self) -> str:
        """The server's address."""
        return self.addresses[self.server_namespace]

    def client(self, index: int) -> str:
        """The namespace of client ``index`` (1-based).

        Raises:
            ValueError: When the lab has no such client.
        """
        if not 1 <= index <= self.clients:
            raise ValueError(f"lab {self.name} has clients 1 .. {self.clients}, not {index}")
        return self.client_namespaces[index - 1]

    def use_ports(self, openflow_port: int, rest_port: int) -> None:
        """Set the controller's TCP ports and what follows from them."""
        self.openflow_port = openflow_port
        self.rest_port = rest_port
        self.controller = f"tcp:{OFP_HOST}:{openflow_port}"
        self.rest_url = f"http://{REST_HOST}:{rest_port}"

    def place(self, folder: Path) -> None:
        """Put the lab's files (state, configuration, log, PID file) in ``folder``."""
        self.run_dir = str(folder)
        self.state_path = str(folder / STATE_FILE)
        self.config_path = str(folder / CONFIG_FILE)
        self.log_path = str(folder / LOG_FILE)
        self.pid_path = str(folder / PID_FILE)

    def to_dict(self) -> dict[str, Any]:
        """Return the state as plain JSON-able data."""
        return dataclasses.asdict(self)

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
) -> LabState:
    """Describe a lab without building anything.

    Args:
        clients: Number of client namespaces (1 .. 64).
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        app: The Ryu application, absolute or relative to the repo root.
        name: The lab's name.

    Returns:
        The planned state (phase ``building``, no controller yet; the TCP ports of a lab
        other than the default are 0 until ``up`` picks them).

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
    app_path = Path(app)
    if not app_path.is_absolute():
        app_path = REPO / app_path
    hosts = [f"c{i}" for i in range(1, clients + 1)] + [SERVER_HOST]
    spaces = [namespace(host, name) for host in hosts]
    addresses = {ns: client_address(i) for i, ns in enumerate(spaces[:-1], start=1)}
    addresses[spaces[-1]] = SERVER_IP
    ports = {port_name(host, name): i for i, host in enumerate(hosts[:-1], start=1)}
    ports[port_name(SERVER_HOST, name)] = SERVER_OFPORT
    state = LabState(
        clients=clients,
        policy=policy,
        alg=alg,
        public_ips=public_addresses(public_ips),
        namespaces=spaces,
        addresses=addresses,
        namespace_ports={ns: port_name(host, name) for ns, host in zip(spaces, hosts,
                                                                        strict=True)},
        ports=ports,
        inside_ports=[port_name(host, name) for host in hosts[:-1]],
        outside_port=port_name(SERVER_HOST, name),
        name=name,
        server_namespace=spaces[-1],
        bridge=bridge_name(name),
        datapath_id=datapath_id(name),
        app=str(app_path),
        framework=framework,
        created=time.time(),
        options=dict(options or {}),
        gre_demux=gre_demux,
    )
    state.place(run_dir(name))
    render_config(state)  # refuses options the app would refuse, before anything is built
    if name == DEFAULT_NAME:
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


def zone_of(name: str, state: LabState | None) -> int:
    """The zone lab ``name``'s app uses: its ``ct_zone`` option, else :func:`lab_zone`."""
    if state is not None and str(state.options.get("ct_zone", "")).strip().isdigit():
        return int(state.options["ct_zone"])
    return lab_zone(name)


def render_config(
    state: LabState, header: str = "Written by topo.lab; rewritten on every `up`."
) -> str:
    """Return the app's configuration file (oslo.config INI, group ``[nat]``).

    ``next_hop`` is left out: in the lab the outside subnet is on-link.

    Args:
        state: The lab.
        header: The file's first line, a comment.

    Returns:
        The file's text.
    """
    values = {
        "inside_ports": ",".join(state.inside_ports),
        "outside_port": state.outside_port,
        "inside_subnet": state.inside_subnet,
        "inside_gateway": state.inside_gateway,
        "outside_subnet": state.outside_subnet,
        "public_ips": ",".join(state.public_ips),
        "policy": state.policy,
        "alg": "true" if state.alg else "false",
        "bridge": state.bridge,
        "state_file": str(Path(state.run_dir) / GATEWAY_STATE_FILE),
        "rest_host": REST_HOST,
        "rest_port": str(state.rest_port),
        "ct_zone": str(lab_zone(state.name)),
    }
    if state.gre_demux:
        values["gre_demux_port"] = demux_port_name(state.name)
        values["gre_demux_dir"] = demux_dir(state.name)
    unknown = sorted(set(state.options) - {o.name for o in options.OPTIONS})
    if unknown:
        raise ConfigError(f"{options.GROUP}.{unknown[0]}", "no such option")
    values.update(state.options)
    options.load(values)  # the app's own rules: a lab never writes a file the app refuses
    lines = [f"# {header}", f"[{options.GROUP}]"]
    return "\n".join([*lines, *(f"{key} = {value}" for key, value in values.items())]) + "\n"


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


def owned(name: str, state: LabState | None) -> tuple[list[str], list[str]]:
    """The namespaces and OVS ports that ``down`` of lab ``name`` may delete.

    Args:
        name: The lab's name.
        state: Its recorded state, or None when there is no state file.

    Returns:
        The namespaces and the ports that ``state`` records, or without a state those of
        a lab of ``MAX_CLIENTS`` clients; in both cases only names of the lab's own
        pattern (``namespace_pattern``, ``port_pattern``).
    """
    recorded = state if state is not None else plan(MAX_CLIENTS, name=name)
    spaces, ports = namespace_pattern(name), port_pattern(name)
    return ([ns for ns in recorded.namespaces if spaces.fullmatch(ns)],
            [p for p in recorded.namespace_ports.values() if ports.fullmatch(p)])




def controller_pids(name: str, state: LabState | None) -> list[int]:
    """The controller PIDs lab ``name`` recorded: in its PID file and in ``state``."""
    pids = {read_pid(name), state.controller_pid if state is not None else None}
    return sorted(pid for pid in pids if pid is not None)


def clear_gateway_state(folder: Path) -> None:
    """Delete the app's store in ``folder``, so that the next app starts afresh."""
    for file in GATEWAY_STATE_FILES:
        (folder / file).unlink(missing_ok=True)
