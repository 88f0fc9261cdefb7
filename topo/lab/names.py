"""The lab's names: of labs, bridges, ports, namespaces, folders; its fixed addresses.

Everything here is pure: no command runs and no file is read.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from alg import config as options
from ryu_apps.managers import MANAGERS
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

#: The default lab's fixed datapath ID (otherwise OVS derives one from a random MAC).
DEFAULT_DATAPATH_ID = 1
OFP_HOST = "127.0.0.1"
REST_HOST = "127.0.0.1"
DEFAULT_APP = "ryu_apps/nat_gateway.py"
#: The OpenFlow frameworks the lab runs the app on, and the manager command of each
#: (``ryu_apps.managers``).
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
_NAME_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_DATAPATH_ID_TAG = 0x50 << 56
_HOST = r"(c[0-9]+|srv)"


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


def command(verb: str, name: str = DEFAULT_NAME, *extra: str) -> str:
    """The command line of ``python -m topo.lab VERB`` for lab ``name``, for messages."""
    words = ["python -m topo.lab", verb]
    if name != DEFAULT_NAME:
        words += ["--name", name]
    return " ".join([*words, *extra])
