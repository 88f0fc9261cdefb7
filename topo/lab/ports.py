"""The controller's TCP ports on 127.0.0.1: which listen, which are taken, free ones.

The default lab has fixed ports (``ryu_apps.switch``); any other lab gets two free
ports, picked while ``PORTS_LOCK_PATH`` is held and recorded in its state file, so that
two labs never pick the same.
"""

from __future__ import annotations

import contextlib
import socket

from ryu_apps import switch
from topo.lab import state as lab_state
from topo.lab.names import OFP_HOST, LabError
from topo.lab.state import LabState


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


def listening(port: int) -> bool:
    """Tell whether a TCP socket listens on ``port`` (any address) in this namespace."""
    return _tcp_socket(port, "0A")


def established(port: int) -> bool:
    """Tell whether a TCP connection to local ``port`` is established in this namespace.

    OVSDB may report a connection that just ended as connected for a moment; once the
    old controller is gone, an established socket on its port can only be a new one.
    """
    return _tcp_socket(port, "01")


def check_free(state: LabState) -> None:
    """Refuse the lab's OpenFlow and REST ports when something listens on either.

    Raises:
        LabError: When one of them is taken.
    """
    for port, what in ((state.openflow_port, "OpenFlow"), (state.rest_port, "REST")):
        if listening(port):
            raise LabError(
                f"TCP port {port} ({what}) is already taken by a process the lab did "
                f"not start (see `ss -ltnp sport = :{port}`); another lab name "
                f"(--name) gets other ports")


def taken_ports(but: str | None = None) -> set[int]:
    """The default lab's ports and those every lab recorded (but lab ``but``'s): its
    controllers', and with etcd its members' and proxies'."""
    taken = {switch.OPENFLOW_PORT, switch.REST_PORT}
    for other in lab_state.labs():
        recorded = lab_state.read_state(other)
        if other != but and recorded is not None:
            taken |= recorded.tcp_ports()
    return taken


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
            if port not in taken and not listening(port):
                picked.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return picked
