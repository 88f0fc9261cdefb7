"""The lab: client and server namespaces around one OVS bridge that the gateway app drives.

Every lab has a name (``lab`` by default); labs of different names run side by side.
Layout of lab ``NAME`` (see the design's "The lab" section):

- clients: network namespaces ``c1`` .. ``cN`` (``NAME-c1`` .. ``NAME-cN`` when NAME is
  not ``lab``), each with ``eth0`` at ``192.168.1.<i>/24`` and a default route via the
  gateway address ``192.168.1.254``;
- server: namespace ``srv`` (``NAME-srv``) with ``eth0`` at ``203.0.113.1/24`` (the
  outside subnet is on-link, so it needs no other route);
- the gateway: OVS bridge ``br-NAME`` on the userspace datapath (``datapath_type=netdev``,
  ``fail-mode=secure``, OpenFlow 1.3, in-band control off), whose ports are the root-side
  ends of the veth pairs: ``NAME-c<i>`` is OpenFlow port ``i`` and ``NAME-srv`` is port
  100; its datapath ID is 1 for ``lab`` and derived from the name otherwise; with
  ``gre_demux``, the GRE demultiplexer's port ``NAME-dmx`` is port 99 (``topo.gre_demux``,
  its BPF filesystem in the lab's folder);
- the controller: ``ryu-manager`` running the gateway app, listening for the switch on
  ``127.0.0.1:6653`` and serving REST on ``127.0.0.1:8080`` for ``lab``; any other lab
  gets two free ports of 127.0.0.1, picked at ``up`` and recorded in its state.

The addresses are the same in every lab: each lab has its own namespaces and bridge.

Everything lab ``NAME`` writes goes to its folder, ``/run/pptp-alg-lab/`` for ``lab`` and
``/run/pptp-alg-lab-NAME/`` otherwise: ``gateway.conf`` (the app's ``[nat]`` options,
oslo.config INI), ``lab.json`` (the ``LabState``, for tests and tools), ``ryu.pid``,
``ryu.log`` (the previous run's log is kept as ``ryu.log.1``) and a lock file that
serialises ``up``, ``down`` and the restarts of that lab. ``/run/pptp-alg-lab.lock``
serialises the choice of ports between labs.

Two commands make a running lab live through what a gateway in service does:
``restart-controller`` stops the lab's ``ryu-manager`` and starts it again with the same
configuration (the bridge keeps its flows meanwhile: ``fail-mode=secure``);
``restart-switch`` makes the lab's bridge alone look like an ``ovs-vswitchd`` restart
without saved flows (its controller connection, every flow and every meter are removed,
then the controller is set again), leaving other bridges and the OVS daemons alone. Both
return when the switch is connected again and the app's pipeline is installed.

Command line, from the repo root, as root::

    .venv/bin/python -m topo.lab up --clients 3 [--name NAME] [--replace]
                                    [--policy open|strict] [--public-ips K]
                                    [--no-alg] [--app PATH] [--timeout SECONDS]
    .venv/bin/python -m topo.lab status [--name NAME]  # exit 0 when up, 3 when not
    .venv/bin/python -m topo.lab down [--name NAME] [--purge]
    .venv/bin/python -m topo.lab restart-controller [--name NAME] [--timeout SECONDS]
    .venv/bin/python -m topo.lab restart-switch [--name NAME] [--timeout SECONDS]
    .venv/bin/python -m topo.lab list

The same from Python: ``up``, ``down``, ``restart_controller``, ``restart_switch``,
``status``, ``describe``, ``read_state`` and ``labs``, each with the keyword ``name``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alg import config as options
from alg.errors import BpfError, ConfigError
from alg.events import EntryKind
from ryu_apps import switch
from topo import display
from topo import gre_demux as demux_component
from topo.netns import (
    IFNAMSIZ,
    CommandError,
    add_netns,
    address,
    del_netns,
    ns_run,
    route,
    run,
    tx_off,
    veth,
)

REPO = Path(__file__).resolve().parent.parent

DEFAULT_NAME = "lab"
MAX_NAME_LENGTH = 10
DEFAULT_RUN_DIR = Path("/run/pptp-alg-lab")
#: Held while a lab picks its TCP ports, so that two labs never pick the same.
PORTS_LOCK_PATH = Path("/run/pptp-alg-lab.lock")
STATE_FILE = "lab.json"
CONFIG_FILE = "gateway.conf"
LOG_FILE = "ryu.log"
PID_FILE = "ryu.pid"
LOCK_FILE = "lock"
#: The app's store (``[nat] state_file``): calls survive ``restart-controller``.
GATEWAY_STATE_FILE = "gateway-state.sqlite"
GATEWAY_STATE_FILES = (GATEWAY_STATE_FILE, f"{GATEWAY_STATE_FILE}-wal",
                       f"{GATEWAY_STATE_FILE}-shm")

#: The default lab's fixed datapath ID (otherwise OVS derives one from a random MAC).
DEFAULT_DATAPATH_ID = 1
OFP_HOST = "127.0.0.1"
REST_HOST = "127.0.0.1"
DEFAULT_APP = "ryu_apps/nat_gateway.py"
#: The OpenFlow frameworks the lab runs the app on, and the manager command of each (as
#: in ``ryu_apps.framework``, which is not imported here: importing it imports a framework).
MANAGERS = {"ryu": "ryu-manager", "os-ken": "osken-manager"}
FRAMEWORKS = tuple(MANAGERS)
DEFAULT_FRAMEWORK = "ryu"

INSIDE_PREFIX = "192.168.1"
INSIDE_SUBNET = f"{INSIDE_PREFIX}.0/24"
INSIDE_GATEWAY = f"{INSIDE_PREFIX}.254"
OUTSIDE_PREFIX = "203.0.113"
OUTSIDE_SUBNET = f"{OUTSIDE_PREFIX}.0/24"
SERVER_IP = f"{OUTSIDE_PREFIX}.1"
#: The server's host name; its namespace is ``srv`` in the default lab, ``NAME-srv`` else.
SERVER_HOST = "srv"
SERVER_OFPORT = 100
DEMUX_OFPORT = 99
DEMUX_HOST = "dmx"
NS_IFNAME = "eth0"

MAX_CLIENTS = 64
MAX_PUBLIC_IPS = 253
POLICIES = options.POLICIES

#: Exit status of ``status`` when the lab is not up.
EXIT_NOT_UP = 3

_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_LENGTH}}}")
_NAME_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_DATAPATH_ID_TAG = 0x50 << 56
_HOST = r"(c[0-9]+|srv)"
_DURATION = re.compile(r"\bduration=([0-9.]+)s")
_children: dict[int, subprocess.Popen[bytes]] = {}


class LabError(RuntimeError):
    """The lab could not be built, started or torn down, or is in the way."""


# ---------------------------------------------------------------------------- naming


def check_name(name: str) -> str:
    """Return ``name`` when it can name a lab.

    Args:
        name: The proposed lab name.

    Returns:
        The name.

    Raises:
        ValueError: When the name is not 1 to 10 characters of ``a-z`` and ``0-9``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"lab name {name!r} is not valid: use 1 to {MAX_NAME_LENGTH} characters of a-z "
            f"and 0-9 (it becomes part of interface names such as NAME-srv, which Linux "
            f"limits to {IFNAMSIZ} characters)")
    return name


def run_dir(name: str = DEFAULT_NAME) -> Path:
    """The folder of lab ``name``: ``/run/pptp-alg-lab`` or ``/run/pptp-alg-lab-NAME``."""
    if check_name(name) == DEFAULT_NAME:
        return DEFAULT_RUN_DIR
    return DEFAULT_RUN_DIR.with_name(f"{DEFAULT_RUN_DIR.name}-{name}")


def bridge_name(name: str = DEFAULT_NAME) -> str:
    """The OVS bridge of lab ``name``: ``br-NAME``."""
    return f"br-{check_name(name)}"


def namespace(host: str, name: str = DEFAULT_NAME) -> str:
    """The namespace of ``host`` (``c<i>`` or ``srv``) in lab ``name``.

    It is ``host`` itself in the default lab, ``NAME-<host>`` in any other.
    """
    return host if check_name(name) == DEFAULT_NAME else f"{name}-{host}"


def client_namespace(index: int, name: str = DEFAULT_NAME) -> str:
    """The namespace of client ``index`` (1-based): ``c<index>`` or ``NAME-c<index>``."""
    return namespace(f"c{index}", name)


def demux_port_name(name: str = DEFAULT_NAME) -> str:
    """The GRE demultiplexer's OVS port in lab ``name`` (``topo.gre_demux``)."""
    return port_name(DEMUX_HOST, name)


def demux_dir(name: str = DEFAULT_NAME) -> str:
    """Where lab ``name`` mounts a BPF filesystem for the demultiplexer."""
    return str(run_dir(name) / "bpf")


def port_name(host: str, name: str = DEFAULT_NAME) -> str:
    """The OVS port (root-side veth end) of ``host`` in lab ``name``: ``NAME-<host>``."""
    return f"{check_name(name)}-{host}"


def datapath_id(name: str = DEFAULT_NAME) -> int:
    """The bridge's datapath ID: 1 for the default lab, otherwise one that only ``name`` has.

    The name is read as a number in bijective base 37 (a = 1 .. 9 = 36), so different
    names give different numbers; ``0x50`` in the top byte keeps it apart from 1.
    """
    if check_name(name) == DEFAULT_NAME:
        return DEFAULT_DATAPATH_ID
    value = 0
    for char in name:
        value = value * (len(_NAME_DIGITS) + 1) + _NAME_DIGITS.index(char) + 1
    return _DATAPATH_ID_TAG | value


def namespace_pattern(name: str = DEFAULT_NAME) -> re.Pattern[str]:
    """What the namespaces of lab ``name`` look like; ``down`` deletes no other."""
    return re.compile(re.escape(namespace("", name)) + _HOST)


def port_pattern(name: str = DEFAULT_NAME) -> re.Pattern[str]:
    """What the OVS ports of lab ``name`` look like; ``down`` deletes no other."""
    return re.compile(re.escape(port_name("", name)) + _HOST)


def client_address(index: int) -> str:
    """Address of client ``index``: ``192.168.1.<index>``."""
    return f"{INSIDE_PREFIX}.{index}"


def public_addresses(count: int) -> list[str]:
    """The gateway's public addresses: ``203.0.113.2`` .. ``203.0.113.(1+count)``."""
    return [f"{OUTSIDE_PREFIX}.{2 + k}" for k in range(count)]


# ---------------------------------------------------------------------------- state


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
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in names}
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
    folder = run_dir(name)
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
        run_dir=str(folder),
        state_path=str(folder / STATE_FILE),
        config_path=str(folder / CONFIG_FILE),
        log_path=str(folder / LOG_FILE),
        pid_path=str(folder / PID_FILE),
        options=dict(options or {}),
        gre_demux=gre_demux,
    )
    render_config(state)  # refuses options the app would refuse, before anything is built
    if name == DEFAULT_NAME:
        state.use_ports(switch.OPENFLOW_PORT, switch.REST_PORT)
    else:
        state.openflow_port = state.rest_port = 0
        state.controller = state.rest_url = ""
    return state


def render_config(state: LabState) -> str:
    """Return the app's configuration file (oslo.config INI, group ``[nat]``).

    ``next_hop`` is left out: in the lab the outside subnet is on-link.

    Args:
        state: The lab.

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
    }
    if state.gre_demux:
        values["gre_demux_port"] = demux_port_name(state.name)
        values["gre_demux_dir"] = demux_dir(state.name)
    unknown = sorted(set(state.options) - {o.name for o in options.OPTIONS})
    if unknown:
        raise ConfigError(f"{options.GROUP}.{unknown[0]}", "no such option")
    values.update(state.options)
    options.load(values)  # the app's own rules: a lab never writes a file the app refuses
    lines = ["# Written by topo.lab; rewritten on every `up`.", f"[{options.GROUP}]"]
    return "\n".join([*lines, *(f"{key} = {value}" for key, value in values.items())]) + "\n"


def command(verb: str, name: str = DEFAULT_NAME, *extra: str) -> str:
    """The command line of ``python -m topo.lab VERB`` for lab ``name``, for messages."""
    words = ["python -m topo.lab", verb]
    if name != DEFAULT_NAME:
        words += ["--name", name]
    return " ".join([*words, *extra])


# ---------------------------------------------------------------------------- helpers


def _vsctl(*args: str, check: bool = True) -> str:
    return run(["ovs-vsctl", "--timeout=10", *args], check=check).strip()


def _bridge_exists(bridge: str) -> bool:
    proc = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "br-exists", bridge], capture_output=True, timeout=30
    )
    return proc.returncode == 0


def _ofctl(*args: str, check: bool = True) -> str:
    return run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=check)


def _appctl(*args: str, check: bool = True) -> str:
    return run(["ovs-appctl", "--timeout=10", *args], check=check)


def _is_connected(bridge: str) -> bool:
    return _vsctl("get", "controller", bridge, "is_connected", check=False) == "true"


def _pipeline_ages(bridge: str) -> list[float]:
    """The age in seconds (``duration``) of each flow of ``bridge`` with the pipeline cookie."""
    out = _ofctl("dump-flows", bridge, switch.kind_filter(EntryKind.PIPELINE), check=False)
    return [float(found.group(1)) for line in out.splitlines() if "cookie=" in line
            for found in [_DURATION.search(line)] if found is not None]


def _pipeline_flows(bridge: str) -> int:
    return len(_pipeline_ages(bridge))


def _pipeline_installed(bridge: str, since: float | None) -> bool:
    """Tell whether ``bridge`` has pipeline flows, all added after ``since`` if given.

    Args:
        bridge: The bridge.
        since: A ``time.monotonic()`` value, or None for any pipeline flow. OVS resets a
            flow's duration when a controller adds it again, even unchanged.
    """
    ages = _pipeline_ages(bridge)
    return bool(ages) and (since is None or max(ages) < time.monotonic() - since)


def _flow_count(bridge: str) -> int:
    """The number of flows of ``bridge``, every table and cookie."""
    return sum(1 for line in _ofctl("dump-flows", bridge).splitlines() if "cookie=" in line)


def _meter_count(bridge: str) -> int:
    """The number of meters of ``bridge``."""
    return sum(1 for line in _ofctl("dump-meters", bridge).splitlines()
               if line.lstrip().startswith("meter="))


def _tcp_socket(port: int, tcp_state: str) -> bool:
    """Tell whether a TCP socket of local ``port`` is in ``tcp_state`` (kernel hex code)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if len(cols) > 3 and cols[3] == tcp_state and cols[1].endswith(wanted):
                    return True
    return False


def _listening(port: int) -> bool:
    """Tell whether a TCP socket listens on ``port`` (any address) in this namespace."""
    return _tcp_socket(port, "0A")


def _established(port: int) -> bool:
    """Tell whether a TCP connection to local ``port`` is established in this namespace.

    OVSDB may report a connection that just ended as connected for a moment; once the
    old controller is gone, an established socket on its port can only be a new one.
    """
    return _tcp_socket(port, "01")


def _connected_to(state: LabState) -> bool:
    """Tell whether the lab's bridge is connected to a controller on the lab's port."""
    return _established(state.openflow_port) and _is_connected(state.bridge)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _is_controller(pid: int, config_path: str) -> bool:
    """Tell whether ``pid`` is a live ``ryu-manager`` or ``osken-manager`` started with
    ``config_path``."""
    if not _alive(pid):
        return False
    argv = _cmdline(pid)
    managers = set(MANAGERS.values())
    return any(Path(arg).name in managers for arg in argv) and config_path in argv


def _manager(framework: str = DEFAULT_FRAMEWORK) -> Path:
    """The manager command of ``framework``: beside this Python, else in ``.venv``."""
    beside = Path(sys.executable).with_name(MANAGERS[framework])
    if beside.exists():
        return beside
    return REPO / ".venv" / "bin" / MANAGERS[framework]


def _log_tail(log_path: str, lines: int = 40) -> str:
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return "(no controller log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(the controller log is empty)"


def _write_state(state: LabState) -> None:
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
    found = [DEFAULT_NAME] if (DEFAULT_RUN_DIR / STATE_FILE).exists() else []
    prefix = f"{DEFAULT_RUN_DIR.name}-"
    for path in sorted(DEFAULT_RUN_DIR.parent.glob(f"{prefix}*/{STATE_FILE}")):
        name = path.parent.name[len(prefix):]
        if _NAME.fullmatch(name) and name != DEFAULT_NAME:
            found.append(name)
    return found


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _existing_namespaces() -> set[str]:
    listing = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def _pid_file(name: str) -> int | None:
    try:
        return int((run_dir(name) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


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


# ---------------------------------------------------------------------------- ports


def pick_ports(taken: set[int], count: int = 2) -> list[int]:
    """Pick ``count`` different free TCP ports of 127.0.0.1, none of them in ``taken``.

    Args:
        taken: Ports not to use (those other labs recorded, the default lab's).
        count: How many ports.

    Returns:
        The ports.

    Raises:
        LabError: When the kernel keeps offering ports that are taken.
    """
    sockets: list[socket.socket] = []
    picked: list[int] = []
    try:
        while len(picked) < count:
            if len(sockets) >= 100:
                raise LabError("found no free TCP ports on 127.0.0.1")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((OFP_HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in taken and not _listening(port):
                picked.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return picked


def _assign_ports(state: LabState) -> None:
    """Give the lab its TCP ports: the default's fixed ones, or free ones no lab recorded.

    Must run with ``PORTS_LOCK_PATH`` held until the state file records the ports.
    """
    if state.name == DEFAULT_NAME:
        for port, what in ((state.openflow_port, "OpenFlow"), (state.rest_port, "REST")):
            if _listening(port):
                raise LabError(
                    f"TCP port {port} ({what}) is already taken by a process the lab did "
                    f"not start (see `ss -ltnp sport = :{port}`); another lab name "
                    f"(--name) gets other ports")
        return
    taken = {switch.OPENFLOW_PORT, switch.REST_PORT}
    for other in labs():
        recorded = read_state(other)
        if other != state.name and recorded is not None:
            taken |= {recorded.openflow_port, recorded.rest_port}
    openflow_port, rest_port = pick_ports(taken)
    state.use_ports(openflow_port, rest_port)


# ---------------------------------------------------------------------------- build


def _build_namespaces(state: LabState) -> None:
    for ns in state.namespaces:
        server = ns == state.server_namespace
        subnet = state.outside_subnet if server else state.inside_subnet
        port = state.namespace_ports[ns]
        add_netns(ns)  # also brings lo up
        veth(ns, state.ns_ifname, None, port)
        tx_off(ns, state.ns_ifname)
        address(ns, state.ns_ifname, f"{state.addresses[ns]}/{subnet.split('/')[1]}")
        if not server:
            route(ns, "default", state.inside_gateway)
        # Nothing in the lab speaks IPv6: keep router solicitations and MLD off the switch.
        ns_run(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{port}.disable_ipv6=1"], check=False)


def _build_bridge(state: LabState) -> None:
    bridge = state.bridge
    argv = [
        "--", "add-br", bridge,
        "--", "set", "bridge", bridge, "datapath_type=netdev", "fail_mode=secure",
        "protocols=OpenFlow13", "other-config:disable-in-band=true",
        f"other-config:datapath-id={state.datapath_id:016x}",
    ]
    for port, ofport in state.ports.items():
        argv += ["--", "add-port", bridge, port,
                 "--", "set", "interface", port, f"ofport_request={ofport}"]
    _vsctl(*argv)
    for port, ofport in state.ports.items():
        got = _vsctl("get", "interface", port, "ofport", check=False)
        if got != str(ofport):
            error = _vsctl("get", "interface", port, "error", check=False)
            raise LabError(f"OVS gave {port} OpenFlow port {got}, not {ofport}: {error}")


def _start_controller(state: LabState) -> subprocess.Popen[bytes]:
    log_path = Path(state.log_path)
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    argv = [
        str(_manager(state.framework)),
        "--ofp-listen-host", OFP_HOST, "--ofp-tcp-listen-port", str(state.openflow_port),
        "--config-file", state.config_path,
        state.app,
    ]
    env = dict(os.environ)
    env["PPTP_ALG_FRAMEWORK"] = state.framework  # ryu_apps.framework: as the manager
    # ryu-manager loads the app from its file: the app's own imports need the repo root.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    _children[child.pid] = child
    Path(state.pid_path).write_text(f"{child.pid}\n")
    return child


def _fail(state: LabState, message: str) -> LabError:
    return LabError(
        f"{message}\n--- last lines of {state.log_path} ---\n{_log_tail(state.log_path)}\n"
        f"--- the lab is left as it is; `{command('down', state.name)}` removes it ---"
    )


def _wait_until(state: LabState, child: subprocess.Popen[bytes] | None, deadline: float,
                what: str, ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it holds; fail when the controller dies or at ``deadline``.

    Args:
        state: The lab.
        child: The controller, when this process started it; otherwise the process of
            ``state.controller_pid`` is checked.
        deadline: When to give up (``time.monotonic()``).
        what: What is awaited, for messages.
        ready: The condition.

    Raises:
        LabError: When the controller is gone or the time is up, with the log's tail.
    """
    while True:
        if child is not None and child.poll() is not None:
            raise _fail(state, f"ryu-manager exited with status {child.returncode} ({what})")
        pid = state.controller_pid
        if child is None and (pid is None or not _is_controller(pid, state.config_path)):
            raise _fail(state, f"ryu-manager (pid {pid}) is not running ({what})")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise _fail(state, f"timed out waiting for {what}")
        time.sleep(0.2)


def _wait_listening(state: LabState, child: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until the controller listens for the switch."""
    _wait_until(state, child, deadline,
                f"ryu-manager to listen on {OFP_HOST}:{state.openflow_port}",
                lambda: _listening(state.openflow_port))


def _set_controller(state: LabState) -> None:
    """Point the bridge at the lab's controller: out-of-band, retried at least every second.

    Raises:
        CommandError: When OVS refuses.
    """
    _vsctl("set-controller", state.bridge, state.controller,
           "--", "set", "controller", state.bridge, "connection_mode=out-of-band",
           "max_backoff=1000")


def _wait_ready(state: LabState, child: subprocess.Popen[bytes] | None, deadline: float,
                since: float | None = None) -> None:
    """Wait until the switch is connected to the controller and the pipeline is installed.

    Args:
        state: The lab.
        child: The controller, when this process started it (see ``_wait_until``).
        deadline: When to give up (``time.monotonic()``).
        since: When given (``time.monotonic()``), the pipeline flows must all have been
            added after it: flows that the switch kept from before do not count.

    Raises:
        LabError: When the controller is gone or the time is up.
    """
    _wait_until(state, child, deadline, "the switch to connect to the controller",
                lambda: _connected_to(state))
    _wait_until(state, child, deadline,
                f"a flow with the pipeline cookie {switch.cookie(EntryKind.PIPELINE):#018x}"
                + ("" if since is None else " added by the controller just connected"),
                lambda: _pipeline_installed(state.bridge, since))


def _remains(name: str) -> list[str]:
    """What of lab ``name`` exists (what its ``down`` would remove), for people."""
    found = []
    state = read_state(name)
    if state is not None:
        found.append(f"its state file {state.state_path} (phase {state.phase})")
    config_path = str(run_dir(name) / CONFIG_FILE)
    pids = {_pid_file(name), state.controller_pid if state is not None else None}
    found += [f"its controller (pid {pid})" for pid in sorted(p for p in pids if p is not None)
              if _is_controller(pid, config_path)]
    bridge = bridge_name(name)
    if _bridge_exists(bridge):
        found.append(f"its bridge {bridge}")
    spaces, ports = owned(name, state)
    existing = _existing_namespaces()
    found += [f"namespace {ns}" for ns in spaces if ns in existing]
    found += [f"interface {p}" for p in ports if Path("/sys/class/net", p).exists()]
    return found


def _in_the_way(state: LabState) -> list[str]:
    """What of the planned lab exists already although the lab is down."""
    existing = _existing_namespaces()
    found = [f"namespace {ns}" for ns in state.namespaces if ns in existing]
    found += [f"interface {p}" for p in state.ports if Path("/sys/class/net", p).exists()]
    if _bridge_exists(state.bridge):
        found.append(f"bridge {state.bridge}")
    return found


def up(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    timeout: float = 30,
    app: str | os.PathLike[str] = DEFAULT_APP,
    quiet: bool = True,
    *,
    name: str = DEFAULT_NAME,
    replace: bool = False,
    options: dict[str, str] | None = None,
    gre_demux: bool = True,
    framework: str = DEFAULT_FRAMEWORK,
) -> LabState:
    """Build lab ``name``, start its controller and wait until it is ready.

    Ready means the switch reports the controller connected and a flow with the app's
    pipeline cookie (kind 1) is installed. No other lab is touched.

    Args:
        clients: Number of client namespaces (1 .. 64).
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        timeout: Seconds to wait for the controller, from its start.
        app: The Ryu application, absolute or relative to the repo root.
        quiet: Do not print progress on stderr.
        name: The lab's name.
        replace: Take lab ``name`` down first when anything of it exists; without it,
            ``up`` refuses.
        options: More ``[nat]`` options for the app (see :class:`LabState`).
        gre_demux: Attach the GRE demultiplexer (``topo.gre_demux``) as port
            ``NAME-dmx``, its BPF filesystem in the lab's folder (on by default: the bench
            measured it ten times the controller path for shared pairs).

    Returns:
        The lab's state (also in ``lab.json``).

    Raises:
        ValueError: On an argument out of range or a bad name.
        LabError: When the lab exists and ``replace`` is not set, something else is in
            the way, the app is missing, a port is taken, a command fails, the
            controller dies or is not ready in time. What was built stays for ``down``.
    """
    state = plan(clients, policy, public_ips, alg, app, name=name, options=options,
                 gre_demux=gre_demux, framework=framework)
    if not Path(state.app).is_file():
        raise LabError(f"the Ryu app {state.app} does not exist")
    with _flocked(Path(state.run_dir) / LOCK_FILE):
        if replace:
            _down_locked(name, quiet)
        else:
            running = status(name)
            found = _remains(name) if running is None else []
            if running is not None or found:
                what = (f"is up (bridge {running.bridge}, controller pid "
                        f"{running.controller_pid})" if running is not None else
                        f"is not up, but parts of it exist ({'; '.join(found)})")
                raise LabError(
                    f"lab {name} {what}: `{command('down', name)}` removes it, or "
                    f"`{command('up', name, '--replace', '...')}` replaces it")
        blocking = _in_the_way(state)
        if blocking:
            raise LabError(
                f"lab {name} is down but {', '.join(blocking)} exist: the lab did not make "
                f"them, so it leaves them alone; remove them or choose another --name")
        with _flocked(PORTS_LOCK_PATH):
            _assign_ports(state)
            _write_state(state)
        try:
            _say(quiet, f"lab {name}: building {len(state.namespaces)} namespaces and "
                        f"{state.bridge}")
            _build_namespaces(state)
            _build_bridge(state)
            if state.gre_demux:
                demux_component.attach(state.bridge, demux_port_name(name), demux_dir(name),
                                 DEMUX_OFPORT)
            Path(state.config_path).write_text(render_config(state))
            for file in GATEWAY_STATE_FILES:
                (Path(state.run_dir) / file).unlink(missing_ok=True)
        except (CommandError, BpfError) as exc:
            raise LabError(f"building the lab failed: {exc}\n"
                           f"`{command('down', name)}` removes what was built") from exc
        _say(quiet, f"lab {name}: starting {MANAGERS[state.framework]} with {state.app}")
        child = _start_controller(state)
        state.controller_pid = child.pid
        state.phase = "starting"
        _write_state(state)
        deadline = time.monotonic() + timeout
        _wait_listening(state, child, deadline)
        _set_controller(state)
        _wait_ready(state, child, deadline)
        state.phase = "up"
        _write_state(state)
        _say(quiet, f"lab {name}: up (controller pid {child.pid}, log {state.log_path})")
        return state


# ---------------------------------------------------------------------------- down


def _stop_controller(pid: int, config_path: str, quiet: bool) -> None:
    child = _children.pop(pid, None)
    if not _is_controller(pid, config_path):
        if child is not None:
            child.poll()
        return
    _say(quiet, f"lab: stopping ryu-manager (pid {pid})")
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return
            elif not _alive(pid):
                return
            time.sleep(0.1)
    raise LabError(f"ryu-manager (pid {pid}) does not stop")


def _down_locked(name: str, quiet: bool) -> None:
    folder = run_dir(name)
    state = read_state(name)
    pids = {_pid_file(name), state.controller_pid if state is not None else None}
    for pid in sorted(p for p in pids if p is not None):
        _stop_controller(pid, str(folder / CONFIG_FILE), quiet)

    bridge = bridge_name(name)
    demux_component.detach(bridge, demux_port_name(name), demux_dir(name))
    if _bridge_exists(bridge):
        _say(quiet, f"lab {name}: deleting bridge {bridge}")
    _vsctl("--if-exists", "del-br", bridge)

    namespaces, ports = owned(name, state)
    for port in ports:
        if Path("/sys/class/net", port).exists():
            run(["ip", "link", "del", port], check=False)
    existing = _existing_namespaces()
    for ns in namespaces:
        if ns not in existing:
            continue
        left = run(["ip", "netns", "pids", ns], check=False).split()
        if left:
            _say(quiet, f"lab {name}: warning: processes {' '.join(left)} still run in "
                        f"namespace {ns}; the lab did not start them and leaves them alone")
        _say(quiet, f"lab {name}: deleting namespace {ns}")
        del_netns(ns)
    for file in (STATE_FILE, PID_FILE, CONFIG_FILE, *GATEWAY_STATE_FILES):
        (folder / file).unlink(missing_ok=True)


def down(quiet: bool = True, *, name: str = DEFAULT_NAME, purge: bool = False) -> None:
    """Remove the namespaces, the bridge and the controller of lab ``name``, nothing else.

    Works after a half-finished ``up`` and when there is nothing to remove. Only the
    namespaces and OVS ports that the state file records are deleted, or, without a state
    file, those of a lab of 64 clients that exist; in both cases only names of the lab's
    own pattern (``c<digits>``/``srv`` in the default lab, ``NAME-c<digits>``/``NAME-srv``
    else). The controller is killed by the PID in the PID file or the state, and only if
    that process is a ``ryu-manager`` started with this lab's configuration file.

    Args:
        quiet: Do not print progress on stderr.
        name: The lab's name.
        purge: Also delete the lab's folder with its logs (for throwaway labs).

    Raises:
        ValueError: On a bad name.
        LabError: When the controller does not stop.
        CommandError: When OVS cannot be reached.
    """
    folder = run_dir(name)
    with _flocked(folder / LOCK_FILE):
        _down_locked(name, quiet)
    if purge:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- status


def _problems(state: LabState) -> list[str]:
    problems = []
    if not _bridge_exists(state.bridge):
        problems.append(f"bridge {state.bridge} does not exist")
    elif not _is_connected(state.bridge):
        problems.append(f"{state.bridge} is not connected to {state.controller}")
    pid = state.controller_pid
    if pid is None or not _is_controller(pid, state.config_path):
        problems.append(f"ryu-manager (pid {pid}) is not running")
    if state.phase != "up":
        problems.append(f"`up` or a restart did not finish (phase {state.phase})")
    return problems


def status(name: str = DEFAULT_NAME) -> LabState | None:
    """Return the state of lab ``name`` when it is up, else None.

    Up means: a state file, the bridge, a live ``ryu-manager`` with the recorded PID, and
    the switch connected to it.
    """
    state = read_state(name)
    if state is None or _problems(state):
        return None
    return state


def describe(name: str = DEFAULT_NAME) -> tuple[bool, str]:
    """Describe lab ``name`` for people: what runs, where, and where the logs are.

    Returns:
        Whether the lab is up, and the text.
    """
    state = read_state(name)
    folder = run_dir(name)
    if state is None:
        lines = [f"lab: down (no state file {folder / STATE_FILE})", f"  name {name}"]
        bridge = bridge_name(name)
        if _bridge_exists(bridge):
            lines.append(f"  but bridge {bridge} exists: `{command('down', name)}` removes it")
        if (folder / LOG_FILE).exists():
            lines.append(f"last controller log: {folder / LOG_FILE}")
        return False, "\n".join(lines)
    problems = _problems(state)
    existing = _existing_namespaces()
    lines = ["lab: up" if not problems else "lab: down (" + "; ".join(problems) + ")"]
    lines.append(f"  name {state.name}, folder {state.run_dir}")
    lines.append(f"  policy {state.policy}, ALG {'on' if state.alg else 'off'}, "
                 f"public IPs {', '.join(state.public_ips)}")
    width = max(len(ns) for ns in state.namespaces)
    for ns in state.namespaces:
        port = state.namespace_ports[ns]
        role = "server" if ns == state.server_namespace else "client"
        lines.append(
            f"  {role} {ns:<{width}} {state.addresses[ns]:<15} {state.ns_ifname} <-> "
            f"{port} (OpenFlow port {state.ports[port]})"
            + ("" if ns in existing else "  [namespace missing]"))
    connected = _is_connected(state.bridge) if _bridge_exists(state.bridge) else False
    lines.append(f"  bridge {state.bridge} (datapath ID {state.datapath_id:#x}): controller "
                 f"{state.controller} {'connected' if connected else 'not connected'}, "
                 f"{_pipeline_flows(state.bridge) if connected else 0} pipeline flow(s)")
    pid = state.controller_pid
    running = pid is not None and _is_controller(pid, state.config_path)
    manager = MANAGERS.get(state.framework, "controller")
    lines.append(f"  controller: {manager} pid {pid} {'running' if running else 'not running'}"
                 f", app {state.app}")
    lines.append(f"  REST: {state.rest_url} "
                 f"({'listening' if _listening(state.rest_port) else 'not listening'})")
    lines.append(f"  log: {state.log_path}")
    lines.append(f"  config: {state.config_path}")
    lines.append(f"  state: {state.state_path}")
    return not problems, "\n".join(lines)


# ---------------------------------------------------------------------------- restarts


def _not_up(name: str, verb: str) -> LabError:
    """The refusal of ``verb`` (a restart) for lab ``name``, which is not up, with why."""
    recorded = read_state(name)
    why = (f"no state file {run_dir(name) / STATE_FILE}" if recorded is None
           else "; ".join(_problems(recorded)))
    return LabError(
        f"lab {name} is not up ({why}), so there is nothing to {verb}: "
        f"`{command('status', name)}` shows it, `{command('up', name, '--replace', '...')}` "
        f"builds it")


@contextlib.contextmanager
def _while_up(name: str, verb: str) -> Iterator[LabState]:
    """Hold lab ``name``'s lock and give its state, or refuse when it is not up.

    A lab without a state file is refused before the lock is taken, so that no folder
    is made for a lab that does not exist.

    Args:
        name: The lab's name.
        verb: What is about to happen, for the refusal.

    Yields:
        The state of the lab, which is up.

    Raises:
        ValueError: On a bad name.
        LabError: When the lab is not up.
    """
    folder = run_dir(name)
    if not (folder / STATE_FILE).exists():
        raise _not_up(name, verb)
    with _flocked(folder / LOCK_FILE):
        state = status(name)
        if state is None:
            raise _not_up(name, verb)
        yield state


def restart_controller(
    name: str = DEFAULT_NAME, timeout: float = 30, quiet: bool = True
) -> LabState:
    """Stop the controller of lab ``name`` and start it again with the same configuration.

    The bridge and its flows are left alone: with ``fail-mode=secure`` the switch keeps
    its flows while no controller is connected, and reconnects by itself (the controller
    target stays set, retried at least every second). The old ``ryu-manager`` is stopped
    by the PID the lab recorded, and only if that process is this lab's controller, as in
    ``down``. Returns when the new controller listens, the switch is connected to it (a
    TCP connection on the lab's OpenFlow port, since OVSDB reports the old connection as
    connected for up to about 5 s) and the pipeline flows were added by the new
    controller (the flows the switch kept do not count; OVS restarts a flow's
    ``duration`` when it is added again, even unchanged).

    Args:
        name: The lab's name.
        timeout: Seconds to wait for the new controller, from its start.
        quiet: Do not print progress on stderr.

    Returns:
        The lab's state, with the new controller's PID (also in ``lab.json``).

    Raises:
        ValueError: On a bad name.
        LabError: When the lab is not up, the old controller does not stop, or the new
            one dies or is not ready in time (the lab is then left as it is).
    """
    with _while_up(name, "restart") as state:
        old = state.controller_pid
        _say(quiet, f"lab {name}: restarting ryu-manager (pid {old}); {state.bridge} keeps "
                    f"its flows")
        state.phase = "restarting"
        _write_state(state)
        for pid in sorted(p for p in {_pid_file(name), old} if p is not None):
            _stop_controller(pid, state.config_path, quiet)
        state.controller_pid = None
        _write_state(state)
        _say(quiet, f"lab {name}: starting {MANAGERS[state.framework]} with {state.app}")
        started = time.monotonic()
        child = _start_controller(state)
        state.controller_pid = child.pid
        _write_state(state)
        deadline = started + timeout
        _wait_listening(state, child, deadline)
        _wait_ready(state, child, deadline, since=started)
        state.phase = "up"
        _write_state(state)
        _say(quiet, f"lab {name}: controller restarted (pid {old} -> {child.pid}, log "
                    f"{state.log_path})")
        return state


def restart_switch(
    name: str = DEFAULT_NAME, timeout: float = 30, quiet: bool = True
) -> LabState:
    """Make the bridge of lab ``name`` look like an ``ovs-vswitchd`` restart without flows.

    Only the lab's bridge is touched, never another bridge or the OVS daemons: its
    controller connection is removed (``ovs-vsctl del-controller``), then every flow and
    every meter (``ovs-ofctl del-flows``, ``del-meters``), and the controller is set again
    as ``up`` sets it. The running controller sees the switch leave and come back empty,
    and installs its pipeline again. Returns when the switch is connected and a flow with
    the pipeline cookie is installed again (OVSDB reports the new connection about 5 s
    after it is made, at worst).

    Args:
        name: The lab's name.
        timeout: Seconds to wait for the switch to come back, from when its emptying
            starts.
        quiet: Do not print progress on stderr.

    Returns:
        The lab's state (unchanged but for the phase, which is ``up`` again).

    Raises:
        ValueError: On a bad name.
        LabError: When the lab is not up, an OVS command fails, flows or meters are left,
            or the controller dies or does not reinstall its pipeline in time (the lab
            is then left as it is).
    """
    with _while_up(name, "restart the switch of") as state:
        bridge = state.bridge
        _say(quiet, f"lab {name}: emptying {bridge} as a restart of ovs-vswitchd without "
                    f"saved flows would (controller connection, flows, meters)")
        state.phase = "restarting"
        _write_state(state)
        emptied = time.monotonic()
        try:
            _vsctl("del-controller", bridge)
            _ofctl("del-flows", bridge)
            _ofctl("del-meters", bridge)
            left = (_flow_count(bridge), _meter_count(bridge))
            if left != (0, 0):
                raise LabError(f"{bridge} still has {left[0]} flow(s) and {left[1]} meter(s) "
                               f"after del-flows and del-meters")
            _say(quiet, f"lab {name}: {bridge} is empty; connecting it to "
                        f"{state.controller} again")
            _set_controller(state)
        except CommandError as exc:
            raise LabError(f"emptying {bridge} failed: {exc}\nthe lab is left as it is; "
                           f"`{command('down', name)}` removes it") from exc
        pid = state.controller_pid
        _wait_ready(state, _children.get(pid) if pid is not None else None,
                    emptied + timeout, since=emptied)
        # Packets that arrived while the bridge was empty left datapath flows that drop;
        # a restarted ovs-vswitchd would have none. Wait (read-only) for the revalidators
        # to bring them in line with the entries the app put back.
        _appctl("revalidator/wait", check=False)
        state.phase = "up"
        _write_state(state)
        _say(quiet, f"lab {name}: {bridge} is connected again and has its pipeline")
        return state


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on failure, 3 when ``status`` finds no lab.
    """
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument(
        "--name", default=DEFAULT_NAME,
        help=f"the lab's name (default {DEFAULT_NAME}): 1 to {MAX_NAME_LENGTH} of a-z 0-9")
    parser = argparse.ArgumentParser(prog="python -m topo.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", parents=[named], help="build a lab and start its controller")
    p_up.add_argument("--clients", type=int, required=True, help=f"1 .. {MAX_CLIENTS}")
    p_up.add_argument("--replace", action="store_true",
                      help="take the lab of this name down first (otherwise `up` refuses)")
    p_up.add_argument("--policy", choices=POLICIES, default="open")
    p_up.add_argument("--public-ips", type=int, default=1, help="number of public addresses")
    p_up.add_argument("--no-alg", action="store_true", help="turn the PPTP ALG off")
    p_up.add_argument("--no-gre-demux", action="store_true",
                      help="no GRE demultiplexer: shared pairs' GRE through the controller")
    p_up.add_argument("--framework", choices=FRAMEWORKS, default=DEFAULT_FRAMEWORK,
                      help=f"run the app under ryu-manager or osken-manager "
                           f"(default {DEFAULT_FRAMEWORK})")
    p_up.add_argument("--app", default=DEFAULT_APP,
                      help=f"the Ryu app (default {DEFAULT_APP}, relative to the repo root)")
    p_up.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the controller (default 30)")
    p_up.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                      help="one more [nat] option for the app, e.g. gre_idle=60 (repeatable)")
    p_down = sub.add_parser("down", parents=[named], help="remove a lab")
    p_down.add_argument("--purge", action="store_true",
                        help="also delete the lab's folder with its logs")
    p_restart_controller = sub.add_parser(
        "restart-controller", parents=[named],
        help="stop a running lab's ryu-manager and start it again with the same "
             "configuration; the bridge keeps its flows")
    p_restart_switch = sub.add_parser(
        "restart-switch", parents=[named],
        help="make a running lab's bridge (and no other) look like an ovs-vswitchd restart "
             "without saved flows: drop its controller connection, flows and meters, then "
             "connect it again")
    for p_restart in (p_restart_controller, p_restart_switch):
        p_restart.add_argument(
            "--timeout", type=float, default=30.0,
            help="seconds to wait until the switch is connected and the pipeline is back "
                 "(default 30)")
    sub.add_parser("status", parents=[named], help="show a lab; exit 0 when up, 3 when not")
    sub.add_parser("list", help="the labs that have a state file, and whether they are up")
    p_display = sub.add_parser("display", parents=[named],
                               help="the gateway's display commands, from a lab")
    display.add_arguments(p_display)
    args = parser.parse_args(argv)
    name = getattr(args, "name", DEFAULT_NAME)
    try:
        check_name(name)
    except ValueError as exc:
        print(f"topo.lab: {exc}", file=sys.stderr)
        return 1
    if args.command == "display":
        state = read_state(name)
        if state is not None:
            rest = state.rest_url
        elif name == DEFAULT_NAME:
            rest = display.DEFAULT_REST
        else:
            print(f"topo.lab: lab {name} has no state file: is it up? "
                  f"(`{command('status', name)}`)", file=sys.stderr)
            return 1
        return display.main(["--rest", rest, args.view, *(["--verbose"] if args.verbose else [])])

    if os.geteuid() != 0:
        print("topo.lab: needs root (namespaces and OVS)", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            extra = dict(item.partition("=")[::2] for item in args.option)
            up(args.clients, args.policy, args.public_ips, not args.no_alg,
               timeout=args.timeout, app=args.app, quiet=False, name=name,
               replace=args.replace, options=extra, gre_demux=not args.no_gre_demux,
               framework=args.framework)
            print(describe(name)[1])
            return 0
        if args.command == "down":
            down(quiet=False, name=name, purge=args.purge)
            print(f"lab: down (name {name})")
            return 0
        if args.command in ("restart-controller", "restart-switch"):
            restart = restart_controller if args.command == "restart-controller" else restart_switch
            restart(name=name, timeout=args.timeout, quiet=False)
            print(describe(name)[1])
            return 0
        if args.command == "list":
            for other in labs():
                print(f"{other:<{MAX_NAME_LENGTH}}  {'up' if status(other) else 'down':<4}  "
                      f"{run_dir(other)}")
            return 0
        is_up, text = describe(name)
        print(text)
        return 0 if is_up else EXIT_NOT_UP
    except (LabError, CommandError, ConfigError, ValueError) as exc:
        print(f"topo.lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `status | head -1`
        sys.exit(1)
