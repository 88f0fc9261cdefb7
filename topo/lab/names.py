"""The lab's names: of labs, bridges, ports, namespaces, folders; its fixed addresses.

Everything here is pure: no command runs and no file is read.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from alg import config as options
from ryu_apps.managers import COMMAND, MANAGERS
from topo.netns import IFNAMSIZ

REPO = Path(__file__).resolve().parents[2]

DEFAULT_NAME = "lab"
MAX_NAME_LENGTH = 10
DEFAULT_RUN_DIR = Path("/run/pptp-alg-lab")
#: The folders of the labs that ``topo.mininet_run`` runs on Mininet.
MININET_RUN_DIR = Path("/run/pptp-alg-mininet")
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
#: The most bridges (gateways) of one lab: a gateway's number is one digit of its names.
MAX_BRIDGES = 9
#: Where the app's records go (``[nat] store``): SQLite files, or the lab's etcd cluster.
STORES = options.STORES
#: The most controller processes of a lab on etcd.
MAX_CONTROLLERS = 9
#: The members of a lab's etcd cluster, and their folder in the lab's folder.
ETCD_MEMBERS = 3
ETCD_DIR = "etcd"

#: The default lab's fixed datapath ID (otherwise OVS derives one from a random MAC).
DEFAULT_DATAPATH_ID = 1
OFP_HOST = "127.0.0.1"
REST_HOST = "127.0.0.1"
DEFAULT_APP = "ryu_apps/nat_gateway.py"
#: The command the lab runs the app with: the one an installation has (``ryu_apps.command``).
GATEWAY_COMMAND = COMMAND
#: The OpenFlow frameworks the lab runs the app on (``PPTP_ALG_FRAMEWORK`` of the command),
#: and the manager command of each (``ryu_apps.managers``).
MANAGER_COMMANDS: dict[str, str] = dict(MANAGERS.items())
FRAMEWORKS = tuple(MANAGER_COMMANDS)
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

NAME_PATTERN = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_LENGTH}}}")
GATEWAY_PATTERN = re.compile(rf"g([1-{MAX_BRIDGES}])")
_NAME_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_DATAPATH_ID_TAG = 0x50
_HOST = r"(c[0-9]+|srv)"
_GATEWAY_DIGIT = rf"[2-{MAX_BRIDGES}]"


class LabError(RuntimeError):
    """The lab could not be built, started or torn down, or is in the way."""


def say(quiet: bool, message: str) -> None:
    """Print progress on stderr unless ``quiet``."""
    if not quiet:
        print(message, file=sys.stderr)


def check_name(name: str) -> str:
    """Return ``name`` when it can name a lab.

    Args:
        name: The proposed lab name.

    Returns:
        The name.

    Raises:
        ValueError: When the name is not 1 to 10 characters of ``a-z`` and ``0-9``.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"lab name {name!r} is not valid: use 1 to {MAX_NAME_LENGTH} characters of a-z "
            f"and 0-9 (it becomes part of interface names such as NAME-srv, which Linux "
            f"limits to {IFNAMSIZ} characters)")
    return name


def run_dir(name: str = DEFAULT_NAME, base: Path | None = None) -> Path:
    """The folder of lab ``name``: ``/run/pptp-alg-lab`` or ``/run/pptp-alg-lab-NAME``.

    Args:
        name: The lab's name.
        base: The default lab's folder, which the others' are named after (default
            ``DEFAULT_RUN_DIR``).
    """
    folder = DEFAULT_RUN_DIR if base is None else base
    if check_name(name) == DEFAULT_NAME:
        return folder
    return folder.with_name(f"{folder.name}-{name}")


def mininet_run_dir(name: str = DEFAULT_NAME) -> Path:
    """The folder of Mininet lab ``name``: ``/run/pptp-alg-mininet`` or ``...-NAME``."""
    return run_dir(name, MININET_RUN_DIR)


def check_gateway(gateway: int) -> int:
    """Return ``gateway`` when it can number a gateway of a lab (1 .. ``MAX_BRIDGES``).

    Raises:
        ValueError: When it cannot.
    """
    if isinstance(gateway, bool) or not isinstance(gateway, int) or not (
            1 <= gateway <= MAX_BRIDGES):
        raise ValueError(f"a lab's gateways are numbered 1 .. {MAX_BRIDGES}, not {gateway!r}")
    return gateway


def gateway_name(gateway: int) -> str:
    """The name of gateway ``gateway`` of a lab: ``g<gateway>``."""
    return f"g{check_gateway(gateway)}"


def gateway_number(gateway: str) -> int:
    """The number of the gateway called ``gateway`` (``g1`` .. ``g9``).

    Raises:
        ValueError: When ``gateway`` is not such a name.
    """
    found = GATEWAY_PATTERN.fullmatch(gateway) if isinstance(gateway, str) else None
    if found is None:
        raise ValueError(f"gateway {gateway!r} is not valid: a lab's gateways are g1 .. "
                         f"g{MAX_BRIDGES}")
    return int(found.group(1))


def bridge_name(name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The OVS bridge of gateway ``gateway`` of lab ``name``: ``br-NAME``, ``br-NAME-<j>``."""
    bridge = f"br-{check_name(name)}"
    return bridge if check_gateway(gateway) == 1 else f"{bridge}-{gateway}"


def namespace(host: str, name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The namespace of ``host`` (``c<i>`` or ``srv``) of gateway ``gateway`` in lab ``name``.

    It is ``host`` itself in the default lab, ``NAME-<host>`` in any other; a gateway
    ``j`` >= 2 puts ``g<j>`` before the host (``g2c1``, ``NAME-g2srv``).
    """
    if check_gateway(gateway) != 1:
        host = f"{gateway_name(gateway)}{host}"
    return host if check_name(name) == DEFAULT_NAME else f"{name}-{host}"


def client_namespace(index: int, name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The namespace of client ``index`` (1-based): ``c<index>`` or ``NAME-c<index>``
    (``g<j>c<index>``, ``NAME-g<j>c<index>`` of gateway ``j`` >= 2)."""
    return namespace(f"c{index}", name, gateway)


def demux_port_name(name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The GRE demultiplexer's OVS port of gateway ``gateway`` in lab ``name``
    (``topo.gre_demux``)."""
    return port_name(DEMUX_HOST, name, gateway)


def demux_dir(name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """Where gateway ``gateway`` of lab ``name`` mounts a BPF filesystem for the
    demultiplexer: ``bpf`` in the lab's folder, ``bpf-g<j>`` for gateway ``j`` >= 2."""
    folder = "bpf" if check_gateway(gateway) == 1 else f"bpf-{gateway_name(gateway)}"
    return str(run_dir(name) / folder)


def gateway_state_file(gateway: int = 1) -> str:
    """The file name of gateway ``gateway``'s store in the lab's folder:
    ``gateway-state.sqlite``, ``gateway-state-g<j>.sqlite`` for gateway ``j`` >= 2."""
    if check_gateway(gateway) == 1:
        return GATEWAY_STATE_FILE
    return GATEWAY_STATE_FILE.replace(".sqlite", f"-{gateway_name(gateway)}.sqlite")


def gateway_state_files(gateway: int = 1) -> tuple[str, str, str]:
    """Gateway ``gateway``'s store and the two files SQLite keeps beside it."""
    store = gateway_state_file(gateway)
    return (store, f"{store}-wal", f"{store}-shm")


def controller_files(index: int) -> dict[str, str]:
    """The file names of controller ``index`` of a lab on etcd, in the lab's folder, by
    what each holds: ``config`` (``gateway-c<index>.conf``), ``log``, ``pid``, ``exit``
    (its exit status), and its etcd proxy's ``proxy_state``, ``proxy_log`` and
    ``proxy_pid``.

    Raises:
        ValueError: When ``index`` is not 1 .. ``MAX_CONTROLLERS``.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not (
            1 <= index <= MAX_CONTROLLERS):
        raise ValueError(f"a lab's controllers are numbered 1 .. {MAX_CONTROLLERS}, "
                         f"not {index!r}")
    stem, proxy = f"ryu-c{index}", f"etcd-proxy-c{index}"
    return {"config": CONFIG_FILE.replace(".conf", f"-c{index}.conf"),
            "log": f"{stem}.log", "pid": f"{stem}.pid", "exit": f"{stem}.exit",
            "proxy_state": f"{proxy}.json", "proxy_log": f"{proxy}.log",
            "proxy_pid": f"{proxy}.pid"}


def port_name(host: str, name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The OVS port (root-side veth end) of ``host`` of gateway ``gateway`` in lab ``name``:
    ``NAME-<host>``, and ``NAME-<j><host>`` for gateway ``j`` >= 2 (``NAME-2c1``,
    ``NAME-2srv``: at most 15 characters for every lab name and gateway)."""
    prefix = "" if check_gateway(gateway) == 1 else str(gateway)
    return f"{check_name(name)}-{prefix}{host}"


def datapath_id(name: str = DEFAULT_NAME, gateway: int = 1) -> int:
    """The bridge's datapath ID: 1 for the default lab's gateway 1, otherwise one that only
    ``name`` and ``gateway`` have.

    The name is read as a number in bijective base 37 (a = 1 .. 9 = 36), so different
    names give different numbers (at most 53 bits); the top byte is ``0x50`` for gateway
    1 and ``0x50 + j - 1`` for gateway ``j``, which keeps them apart from 1 and from each
    other.
    """
    if check_name(name) == DEFAULT_NAME and check_gateway(gateway) == 1:
        return DEFAULT_DATAPATH_ID
    value = 0
    for char in name:
        value = value * (len(_NAME_DIGITS) + 1) + _NAME_DIGITS.index(char) + 1
    return (_DATAPATH_ID_TAG + check_gateway(gateway) - 1) << 56 | value


def namespace_pattern(name: str = DEFAULT_NAME) -> re.Pattern[str]:
    """What the namespaces of lab ``name`` look like (every gateway's); ``down`` deletes
    no other."""
    return re.compile(re.escape(namespace("", name)) + rf"(g{_GATEWAY_DIGIT})?" + _HOST)


def port_pattern(name: str = DEFAULT_NAME) -> re.Pattern[str]:
    """What the OVS ports of lab ``name`` look like (every gateway's); ``down`` deletes no
    other."""
    return re.compile(re.escape(port_name("", name)) + rf"({_GATEWAY_DIGIT})?" + _HOST)


def client_address(index: int) -> str:
    """Address of client ``index``: ``192.168.1.<index>``."""
    return f"{INSIDE_PREFIX}.{index}"


def public_addresses(count: int) -> list[str]:
    """The gateway's public addresses: ``203.0.113.2`` .. ``203.0.113.(1+count)``."""
    return [f"{OUTSIDE_PREFIX}.{2 + k}" for k in range(count)]


def command(verb: str, name: str = DEFAULT_NAME, *extra: str) -> str:
    """The command line of ``python -m topo.lab VERB`` for lab ``name``, for messages."""
    words = ["python -m topo.lab", verb]
    if name != DEFAULT_NAME:
        words += ["--name", name]
    return " ".join([*words, *extra])
