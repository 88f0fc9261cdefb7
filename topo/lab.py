"""The lab: client and server namespaces around one OVS bridge that the gateway app drives.

Layout (see the design's "The lab" section):

- clients: network namespaces ``c1`` .. ``cN``, each with ``eth0`` at
  ``192.168.1.<i>/24`` and a default route via the gateway address ``192.168.1.254``;
- server: namespace ``srv`` with ``eth0`` at ``203.0.113.1/24`` (the outside subnet is
  on-link, so it needs no other route);
- the gateway: OVS bridge ``br-lab`` on the userspace datapath (``datapath_type=netdev``,
  ``fail-mode=secure``, OpenFlow 1.3, in-band control off), whose ports are the root-side
  ends of the veth pairs: ``lab-c<i>`` is OpenFlow port ``i`` and ``lab-srv`` is port 100;
- the controller: ``ryu-manager`` running the gateway app, listening for the switch on
  ``127.0.0.1:6653`` and serving REST on ``127.0.0.1:8080``.

Everything the lab writes goes to ``/run/pptp-alg-lab/``: ``gateway.conf`` (the app's
``[nat]`` options, oslo.config INI), ``lab.json`` (the ``LabState``, for tests and tools),
``ryu.pid``, ``ryu.log`` (the previous run's log is kept as ``ryu.log.1``) and a lock
file that serialises ``up`` and ``down``.

Command line, from the repo root, as root::

    .venv/bin/python -m topo.lab up --clients 3 [--policy open|strict] [--public-ips K]
                                    [--no-alg] [--app PATH] [--timeout SECONDS]
    .venv/bin/python -m topo.lab status     # exit 0 when the lab is up, 3 when not
    .venv/bin/python -m topo.lab down

The same from Python: ``up``, ``down`` and ``status``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alg.events import EntryKind
from ryu_apps import switch
from topo import display
from topo.netns import (
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
RUN_DIR = Path("/run/pptp-alg-lab")
STATE_PATH = RUN_DIR / "lab.json"
CONFIG_PATH = RUN_DIR / "gateway.conf"
LOG_PATH = RUN_DIR / "ryu.log"
PID_PATH = RUN_DIR / "ryu.pid"
LOCK_PATH = RUN_DIR / "lock"

BRIDGE = "br-lab"
#: The bridge's fixed datapath ID (otherwise OVS derives one from a random MAC).
DATAPATH_ID = 1
OFP_HOST = "127.0.0.1"
OFP_PORT = switch.OPENFLOW_PORT
REST_HOST = "127.0.0.1"
REST_PORT = switch.REST_PORT
CONTROLLER_TARGET = f"tcp:{OFP_HOST}:{OFP_PORT}"
REST_URL = f"http://{REST_HOST}:{REST_PORT}"
DEFAULT_APP = "ryu_apps/nat_gateway.py"

INSIDE_PREFIX = "192.168.1"
INSIDE_SUBNET = f"{INSIDE_PREFIX}.0/24"
INSIDE_GATEWAY = f"{INSIDE_PREFIX}.254"
OUTSIDE_PREFIX = "203.0.113"
OUTSIDE_SUBNET = f"{OUTSIDE_PREFIX}.0/24"
SERVER_IP = f"{OUTSIDE_PREFIX}.1"
SERVER_NS = "srv"
SERVER_OFPORT = 100
NS_IFNAME = "eth0"
PORT_PREFIX = "lab-"

MAX_CLIENTS = 64
MAX_PUBLIC_IPS = 253
POLICIES = ("open", "strict")


#: Exit status of ``status`` when the lab is not up.
EXIT_NOT_UP = 3

_LAB_NS = re.compile(rf"^(c[0-9]+|{SERVER_NS})$")
_LAB_PORT = re.compile(rf"^{PORT_PREFIX}(c[0-9]+|{SERVER_NS})$")
_children: dict[int, subprocess.Popen[bytes]] = {}


class LabError(RuntimeError):
    """The lab could not be built, started or torn down."""


@dataclass
class LabState:
    """What a lab is made of, as recorded in ``lab.json``.

    Attributes:
        clients: Number of client namespaces.
        policy: The gateway's security policy, ``open`` or ``strict``.
        alg: Whether the PPTP ALG is on.
        public_ips: The gateway's public addresses.
        namespaces: Every namespace of the lab (``c1`` .. ``cN``, then ``srv``).
        addresses: Namespace name -> its IPv4 address (without prefix length).
        namespace_ports: Namespace name -> the OVS port of its veth pair.
        ports: OVS port name -> OpenFlow port number.
        inside_ports: OVS port names on the inside, in client order.
        outside_port: OVS port name on the outside.
        bridge: The OVS bridge.
        controller: The bridge's controller target.
        controller_pid: PID of ``ryu-manager``, None before it was started.
        rest_url: Base URL of the app's REST API.
        app: Path of the Ryu application that runs.
        phase: ``building``, ``starting`` or ``up`` (how far ``up`` got).
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
    bridge: str = BRIDGE
    controller: str = CONTROLLER_TARGET
    controller_pid: int | None = None
    rest_url: str = REST_URL
    app: str = DEFAULT_APP
    phase: str = "building"
    created: float = 0.0
    run_dir: str = str(RUN_DIR)
    state_path: str = str(STATE_PATH)
    config_path: str = str(CONFIG_PATH)
    log_path: str = str(LOG_PATH)
    pid_path: str = str(PID_PATH)
    inside_subnet: str = INSIDE_SUBNET
    inside_gateway: str = INSIDE_GATEWAY
    outside_subnet: str = OUTSIDE_SUBNET
    ns_ifname: str = NS_IFNAME
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_namespaces(self) -> list[str]:
        """The client namespaces, ``c1`` .. ``cN``."""
        return [name for name in self.namespaces if name != SERVER_NS]

    @property
    def server_ip(self) -> str:
        """The server's address."""
        return self.addresses[SERVER_NS]

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


# ---------------------------------------------------------------------------- naming


def client_namespace(index: int) -> str:
    """Name of client ``index`` (1-based): ``c<index>``."""
    return f"c{index}"


def port_name(namespace: str) -> str:
    """Name of the OVS port (root-side veth end) of a namespace: ``lab-<namespace>``."""
    return f"{PORT_PREFIX}{namespace}"


def client_address(index: int) -> str:
    """Address of client ``index``: ``192.168.1.<index>``."""
    return f"{INSIDE_PREFIX}.{index}"


def public_addresses(count: int) -> list[str]:
    """The gateway's public addresses: ``203.0.113.2`` .. ``203.0.113.(1+count)``."""
    return [f"{OUTSIDE_PREFIX}.{2 + k}" for k in range(count)]


def plan(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    app: str | os.PathLike[str] = DEFAULT_APP,
) -> LabState:
    """Describe a lab without building anything.

    Args:
        clients: Number of client namespaces (1 .. 64).
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        app: The Ryu application, absolute or relative to the repo root.

    Returns:
        The planned state (phase ``building``, no controller yet).

    Raises:
        ValueError: On an argument out of range.
    """
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1 .. {MAX_CLIENTS}, not {clients}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if not 1 <= public_ips <= MAX_PUBLIC_IPS:
        raise ValueError(f"public_ips must be 1 .. {MAX_PUBLIC_IPS}, not {public_ips}")
    app_path = Path(app)
    if not app_path.is_absolute():
        app_path = REPO / app_path
    names = [client_namespace(i) for i in range(1, clients + 1)]
    addresses = {name: client_address(i) for i, name in enumerate(names, start=1)}
    addresses[SERVER_NS] = SERVER_IP
    ports = {port_name(name): i for i, name in enumerate(names, start=1)}
    ports[port_name(SERVER_NS)] = SERVER_OFPORT
    return LabState(
        clients=clients,
        policy=policy,
        alg=alg,
        public_ips=public_addresses(public_ips),
        namespaces=[*names, SERVER_NS],
        addresses=addresses,
        namespace_ports={name: port_name(name) for name in [*names, SERVER_NS]},
        ports=ports,
        inside_ports=[port_name(name) for name in names],
        outside_port=port_name(SERVER_NS),
        app=str(app_path),
        created=time.time(),
    )


def render_config(state: LabState) -> str:
    """Return the app's configuration file (oslo.config INI, group ``[nat]``).

    ``next_hop`` is left out: in the lab the outside subnet is on-link.

    Args:
        state: The lab.

    Returns:
        The file's text.
    """
    lines = [
        "# Written by topo.lab; rewritten on every `up`.",
        "[nat]",
        f"inside_ports = {','.join(state.inside_ports)}",
        f"outside_port = {state.outside_port}",
        f"inside_subnet = {state.inside_subnet}",
        f"inside_gateway = {state.inside_gateway}",
        f"outside_subnet = {state.outside_subnet}",
        f"public_ips = {','.join(state.public_ips)}",
        f"policy = {state.policy}",
        f"alg = {'true' if state.alg else 'false'}",
        f"bridge = {state.bridge}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- helpers


def _vsctl(*args: str, check: bool = True) -> str:
    return run(["ovs-vsctl", "--timeout=10", *args], check=check).strip()


def _bridge_exists() -> bool:
    proc = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "br-exists", BRIDGE], capture_output=True, timeout=30
    )
    return proc.returncode == 0


def _is_connected() -> bool:
    return _vsctl("get", "controller", BRIDGE, "is_connected", check=False) == "true"


def _pipeline_flows() -> int:
    out = run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", BRIDGE,
         switch.kind_filter(EntryKind.PIPELINE)],
        check=False,
    )
    return sum(1 for line in out.splitlines() if "cookie=" in line)


def _listening(port: int) -> bool:
    """Tell whether a TCP socket listens on ``port`` (any address) in this namespace."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if len(cols) > 3 and cols[3] == "0A" and cols[1].endswith(wanted):
                    return True
    return False


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


def _is_controller(pid: int) -> bool:
    """Tell whether ``pid`` is a live ``ryu-manager``."""
    return _alive(pid) and any(Path(arg).name == "ryu-manager" for arg in _cmdline(pid))


def _ryu_manager() -> Path:
    beside = Path(sys.executable).with_name("ryu-manager")
    if beside.exists():
        return beside
    return REPO / ".venv" / "bin" / "ryu-manager"


def _log_tail(lines: int = 40) -> str:
    try:
        text = LOG_PATH.read_text(errors="replace")
    except OSError:
        return "(no controller log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(the controller log is empty)"


def _write_state(state: LabState) -> None:
    tmp = STATE_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(STATE_PATH)


def read_state() -> LabState | None:
    """Return the recorded lab, or None when there is no (readable) state file."""
    try:
        return LabState.from_dict(json.loads(STATE_PATH.read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# ---------------------------------------------------------------------------- build


def _build_namespaces(state: LabState) -> None:
    for name in state.namespaces:
        subnet = state.outside_subnet if name == SERVER_NS else state.inside_subnet
        port = state.namespace_ports[name]
        add_netns(name)  # also brings lo up
        veth(name, state.ns_ifname, None, port)
        tx_off(name, state.ns_ifname)
        address(name, state.ns_ifname, f"{state.addresses[name]}/{subnet.split('/')[1]}")
        if name != SERVER_NS:
            route(name, "default", state.inside_gateway)
        # Nothing in the lab speaks IPv6: keep router solicitations and MLD off the switch.
        ns_run(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        run(["sysctl", "-q", "-w", f"net.ipv6.conf.{port}.disable_ipv6=1"], check=False)


def _build_bridge(state: LabState) -> None:
    argv = [
        "--", "add-br", BRIDGE,
        "--", "set", "bridge", BRIDGE, "datapath_type=netdev", "fail_mode=secure",
        "protocols=OpenFlow13", "other-config:disable-in-band=true",
        f"other-config:datapath-id={DATAPATH_ID:016x}",
    ]
    for port, ofport in state.ports.items():
        argv += ["--", "add-port", BRIDGE, port,
                 "--", "set", "interface", port, f"ofport_request={ofport}"]
    _vsctl(*argv)
    for port, ofport in state.ports.items():
        got = _vsctl("get", "interface", port, "ofport", check=False)
        if got != str(ofport):
            error = _vsctl("get", "interface", port, "error", check=False)
            raise LabError(f"OVS gave {port} OpenFlow port {got}, not {ofport}: {error}")


def _start_controller(state: LabState) -> subprocess.Popen[bytes]:
    if LOG_PATH.exists():
        LOG_PATH.replace(LOG_PATH.with_name(LOG_PATH.name + ".1"))
    argv = [
        str(_ryu_manager()),
        "--ofp-listen-host", OFP_HOST, "--ofp-tcp-listen-port", str(OFP_PORT),
        "--wsapi-host", REST_HOST, "--wsapi-port", str(REST_PORT),
        "--config-file", state.config_path,
        state.app,
    ]
    env = dict(os.environ)
    # ryu-manager loads the app from its file: the app's own imports need the repo root.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(LOG_PATH, "wb") as log:
        child = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    _children[child.pid] = child
    PID_PATH.write_text(f"{child.pid}\n")
    return child


def _fail(message: str) -> LabError:
    return LabError(
        f"{message}\n--- last lines of {LOG_PATH} ---\n{_log_tail()}\n"
        f"--- the lab is left as it is; `python -m topo.lab down` removes it ---"
    )


def _wait_until(child: subprocess.Popen[bytes], deadline: float, what: str,
                ready: Callable[[], bool]) -> None:
    while True:
        if child.poll() is not None:
            raise _fail(f"ryu-manager exited with status {child.returncode} ({what})")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise _fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def up(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    timeout: float = 30,
    app: str | os.PathLike[str] = DEFAULT_APP,
    quiet: bool = True,
) -> LabState:
    """Remove any lab, build a new one, start the controller and wait until it is ready.

    Ready means the switch reports the controller connected and a flow with the app's
    pipeline cookie (kind 1) is installed.

    Args:
        clients: Number of client namespaces (1 .. 64).
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        timeout: Seconds to wait for the controller, from its start.
        app: The Ryu application, absolute or relative to the repo root.
        quiet: Do not print progress on stderr.

    Returns:
        The lab's state (also in ``lab.json``).

    Raises:
        ValueError: On an argument out of range.
        LabError: When the app is missing, a port is taken, a command fails, the
            controller dies or is not ready in time. What was built stays for ``down``.
    """
    state = plan(clients, policy, public_ips, alg, app)
    if not Path(state.app).is_file():
        raise LabError(f"the Ryu app {state.app} does not exist")
    with _locked():
        _down_locked(quiet)
        for port, what in ((OFP_PORT, "OpenFlow"), (REST_PORT, "REST")):
            if _listening(port):
                raise LabError(
                    f"TCP port {port} ({what}) is already taken by a process the lab did "
                    f"not start (see `ss -ltnp sport = :{port}`)")
        _write_state(state)
        try:
            _say(quiet, f"lab: building {len(state.namespaces)} namespaces and {BRIDGE}")
            _build_namespaces(state)
            _build_bridge(state)
            CONFIG_PATH.write_text(render_config(state))
        except CommandError as exc:
            raise LabError(f"building the lab failed: {exc}") from exc
        _say(quiet, f"lab: starting ryu-manager with {state.app}")
        child = _start_controller(state)
        state.controller_pid = child.pid
        state.phase = "starting"
        _write_state(state)
        deadline = time.monotonic() + timeout
        _wait_until(child, deadline, f"ryu-manager to listen on {OFP_HOST}:{OFP_PORT}",
                    lambda: _listening(OFP_PORT))
        _vsctl("set-controller", BRIDGE, CONTROLLER_TARGET,
               "--", "set", "controller", BRIDGE, "connection_mode=out-of-band",
               "max_backoff=1000")
        _wait_until(child, deadline, "the switch to connect to the controller", _is_connected)
        _wait_until(child, deadline,
                    f"a flow with the pipeline cookie {switch.cookie(EntryKind.PIPELINE):#018x}",
                    lambda: _pipeline_flows() > 0)
        state.phase = "up"
        _write_state(state)
        _say(quiet, f"lab: up (controller pid {child.pid}, log {LOG_PATH})")
        return state


# ---------------------------------------------------------------------------- down


def _stop_controller(pid: int, quiet: bool) -> None:
    child = _children.pop(pid, None)
    if not _is_controller(pid):
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


def _existing_namespaces() -> set[str]:
    listing = run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def _down_locked(quiet: bool) -> None:
    state = read_state()
    pids: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        pids.add(int(PID_PATH.read_text().strip()))
    if state is not None and state.controller_pid is not None:
        pids.add(state.controller_pid)
    for pid in sorted(pids):
        _stop_controller(pid, quiet)

    if _bridge_exists():
        _say(quiet, f"lab: deleting bridge {BRIDGE}")
    _vsctl("--if-exists", "del-br", BRIDGE)

    if state is not None:
        namespaces = [n for n in state.namespaces if _LAB_NS.match(n)]
        ports = [p for p in state.namespace_ports.values() if _LAB_PORT.match(p)]
    else:
        namespaces = [client_namespace(i) for i in range(1, MAX_CLIENTS + 1)] + [SERVER_NS]
        ports = [port_name(n) for n in namespaces]
    for port in ports:
        if Path("/sys/class/net", port).exists():
            run(["ip", "link", "del", port], check=False)
    existing = _existing_namespaces()
    for name in namespaces:
        if name not in existing:
            continue
        left = run(["ip", "netns", "pids", name], check=False).split()
        if left:
            _say(quiet, f"lab: warning: processes {' '.join(left)} still run in namespace "
                        f"{name}; the lab did not start them and leaves them alone")
        _say(quiet, f"lab: deleting namespace {name}")
        del_netns(name)
    for path in (STATE_PATH, PID_PATH, CONFIG_PATH):
        path.unlink(missing_ok=True)


def down(quiet: bool = True) -> None:
    """Remove every namespace, the bridge and the controller of the lab.

    Works after a half-finished ``up`` and when there is nothing to remove. Only the
    namespaces named ``c<digits>`` and ``srv`` that the state file records are deleted, or,
    without a state file, those of ``c1`` .. ``c64`` and ``srv`` that exist. The controller
    is killed by the PID in the PID file, and only if that process is ``ryu-manager``.

    Args:
        quiet: Do not print progress on stderr.

    Raises:
        LabError: When the controller does not stop.
        CommandError: When OVS cannot be reached.
    """
    with _locked():
        _down_locked(quiet)


# ---------------------------------------------------------------------------- status


def _problems(state: LabState) -> list[str]:
    problems = []
    if not _bridge_exists():
        problems.append(f"bridge {BRIDGE} does not exist")
    elif not _is_connected():
        problems.append(f"{BRIDGE} is not connected to {CONTROLLER_TARGET}")
    pid = state.controller_pid
    if pid is None or not _is_controller(pid):
        problems.append(f"ryu-manager (pid {pid}) is not running")
    if state.phase != "up":
        problems.append(f"`up` did not finish (phase {state.phase})")
    return problems


def status() -> LabState | None:
    """Return the lab's state when it is up, else None.

    Up means: a state file, the bridge, a live ``ryu-manager`` with the recorded PID, and
    the switch connected to it.
    """
    state = read_state()
    if state is None or _problems(state):
        return None
    return state


def describe() -> tuple[bool, str]:
    """Describe the lab for people: what runs, where, and where the logs are.

    Returns:
        Whether the lab is up, and the text.
    """
    state = read_state()
    if state is None:
        lines = [f"lab: down (no state file {STATE_PATH})"]
        if _bridge_exists():
            lines.append(f"  but bridge {BRIDGE} exists: `python -m topo.lab down` removes it")
        if LOG_PATH.exists():
            lines.append(f"last controller log: {LOG_PATH}")
        return False, "\n".join(lines)
    problems = _problems(state)
    existing = _existing_namespaces()
    lines = ["lab: up" if not problems else "lab: down (" + "; ".join(problems) + ")"]
    lines.append(f"  policy {state.policy}, ALG {'on' if state.alg else 'off'}, "
                 f"public IPs {', '.join(state.public_ips)}")
    for name in state.namespaces:
        port = state.namespace_ports[name]
        role = "server" if name == SERVER_NS else "client"
        lines.append(
            f"  {role} {name:<4} {state.addresses[name]:<15} {state.ns_ifname} <-> "
            f"{port} (OpenFlow port {state.ports[port]})"
            + ("" if name in existing else "  [namespace missing]"))
    connected = _is_connected() if _bridge_exists() else False
    lines.append(f"  bridge {BRIDGE}: controller {state.controller} "
                 f"{'connected' if connected else 'not connected'}, "
                 f"{_pipeline_flows() if connected else 0} pipeline flow(s)")
    pid = state.controller_pid
    running = pid is not None and _is_controller(pid)
    lines.append(f"  controller: ryu-manager pid {pid} {'running' if running else 'not running'}"
                 f", app {state.app}")
    lines.append(f"  REST: {state.rest_url} "
                 f"({'listening' if _listening(REST_PORT) else 'not listening'})")
    lines.append(f"  log: {state.log_path}")
    lines.append(f"  config: {state.config_path}")
    lines.append(f"  state: {state.state_path}")
    return not problems, "\n".join(lines)


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on failure, 3 when ``status`` finds no lab.
    """
    parser = argparse.ArgumentParser(prog="python -m topo.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="(re)build the lab and start the controller")
    p_up.add_argument("--clients", type=int, required=True, help=f"1 .. {MAX_CLIENTS}")
    p_up.add_argument("--policy", choices=POLICIES, default="open")
    p_up.add_argument("--public-ips", type=int, default=1, help="number of public addresses")
    p_up.add_argument("--no-alg", action="store_true", help="turn the PPTP ALG off")
    p_up.add_argument("--app", default=DEFAULT_APP,
                      help=f"the Ryu app (default {DEFAULT_APP}, relative to the repo root)")
    p_up.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the controller (default 30)")
    sub.add_parser("down", help="remove the lab")
    sub.add_parser("status", help="show the lab; exit 0 when up, 3 when not")
    p_display = sub.add_parser("display", help="the gateway's display commands, from the lab")
    display.add_arguments(p_display)
    args = parser.parse_args(argv)
    if args.command == "display":
        state = read_state()
        rest = state.rest_url if state is not None else display.DEFAULT_REST
        return display.main(["--rest", rest, args.view, *(["--verbose"] if args.verbose else [])])

    if os.geteuid() != 0:
        print("topo.lab: needs root (namespaces and OVS)", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            up(args.clients, args.policy, args.public_ips, not args.no_alg,
               timeout=args.timeout, app=args.app, quiet=False)
            print(describe()[1])
            return 0
        if args.command == "down":
            down(quiet=False)
            print("lab: down")
            return 0
        is_up, text = describe()
        print(text)
        return 0 if is_up else EXIT_NOT_UP
    except (LabError, CommandError, ValueError) as exc:
        print(f"topo.lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `status | head -1`
        sys.exit(1)
