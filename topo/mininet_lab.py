"""The lab as a Mininet topology: the layout of ``topo.lab``, built by Mininet.

Use it through ``topo.mininet_run``, which builds this topology with Mininet's Python
API, runs the gateway app on it and removes only what it made::

    sudo /usr/bin/python3 -m topo.mininet_run --clients 3 [--name NAME] [--bridges K] [--pptp]

Run it with the system Python: Debian's ``mininet`` package installs Mininet for
``/usr/bin/python3`` only, not for the project's ``.venv``.

The layout of lab ``NAME`` (``lab`` by default), the same as ``topo.lab`` builds:

- hosts ``c1`` .. ``cN`` at ``192.168.1.<i>/24``, default route via ``192.168.1.254``;
- host ``srv`` at ``203.0.113.1/24`` (the outside subnet is on-link, no other route);
- one OVS switch ``br-NAME`` (userspace datapath, OpenFlow 1.3, ``fail-mode=secure``,
  in-band control off) whose ports are named ``NAME-c<i>`` (OpenFlow port ``i``) and
  ``NAME-srv`` (OpenFlow port 100), so that the gateway app's ``[nat]`` options are the
  ones ``topo.lab`` writes for lab ``NAME``;
- each host's interface is ``eth0``, as in ``topo.lab``; transmit checksum offload is off
  on it and IPv6 is off in every host;
- with ``bridges`` K >= 2, gateway ``j`` >= 2 has the same layout and addresses around a
  switch of its own: hosts ``g<j>c1`` .. ``g<j>cN`` and ``g<j>srv``, switch ``br-NAME-<j>``,
  ports ``NAME-<j>c<i>`` and ``NAME-<j>srv``, as ``topo.lab`` names gateway ``j``.

Unlike ``topo.lab``'s, Mininet's hosts live in unnamed namespaces: ``ip netns`` does not
list them and ``ip netns exec`` cannot enter them. Run commands through the host objects
(``host.cmd``, ``host.popen``), the Mininet CLI, or ``mnexec -a PID``.

.. warning::
   What is safe and what is not, as read in Mininet 2.3.0 (Debian 12):

   - Safe: ``Mininet.build``, ``start`` and ``stop``, which ``topo.mininet_run`` uses.
     They create and delete only this topology's bridge (``ovs-vsctl --if-exists del-br
     br-NAME``) and interfaces (``ip link del`` of each link's own two ends), and signal
     only the shells Mininet started for its nodes. They kill no process by name and
     delete no other bridge and no interface by pattern.
   - Not safe: a name that is in use. ``OVSSwitch.start`` first deletes any bridge called
     ``br-NAME``, whoever made it, so ``topo.mininet_run`` refuses to start while that
     bridge or a port name of the lab exists (``topo.lab``'s lab of the same name, for
     instance); the default name ``lab`` is also ``topo.lab``'s default (same bridge,
     ports and controller ports 6653 and 8723), so only one of them runs at a time. Give
     every lab that runs beside others a name of its own (``--name``).
   - Not safe: the ``mn`` command and ``mn -c``. ``mn`` runs the cleanup of ``mn -c``
     when it exits on an error or on Ctrl-C, and that cleanup deletes **every** OVS
     bridge on the machine (``ovs-vsctl del-br`` of all that ``list-br`` shows), deletes
     every interface named like ``*-eth<N>``, removes ``/tmp/*.log``, and kills processes
     by name machine-wide (every ``ping``, ``ryu-manager``, ``controller``, ``mnexec``
     and every Mininet host shell of anyone, ``pkill -f mininet:``). Never use ``mn`` or
     ``mininet.clean`` on a machine where anything else runs, nor from tests or CI.
   - Processes started in a host with ``host.popen`` are not stopped by ``net.stop()``
     (``mnexec -d`` puts them in a session of their own): stop them first, by PID, or
     they keep the host's namespace alive. ``net.stop()`` also leaves the shell of a
     ``RemoteController`` node running (its ``stop`` does nothing); end it with
     ``terminate()``. ``topo.mininet_run`` does both.
   - The first ``Mininet(...)`` of a process raises machine-wide limits for everyone
     (``Mininet.init``: ``fs.file-max``, ``kernel.pty.max``, ``net.core.[rw]mem_max``,
     the root namespace's ``tcp_rmem``/``tcp_wmem``, neighbour and route table sizes);
     ``topo.mininet_run`` skips that, a lab of a few hosts needs none of it.

``mn --custom topo/mininet_lab.py --topo pptplab,3`` loads this topology too (the module
imports nothing of the project), but ``mn`` stays unsafe for the reasons above.

This module imports without Mininet installed (it then builds a plain description, which
is enough to check the layout).
"""

from __future__ import annotations

import re
from typing import Any

try:  # Mininet is optional: it is installed for the system Python only.
    from mininet.node import Host  # type: ignore[import-not-found]
    from mininet.topo import Topo  # type: ignore[import-not-found]

    HAVE_MININET = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_MININET = False

    class Topo:  # type: ignore[no-redef]
        """A stand-in that records the layout when Mininet is not installed."""

        def __init__(self, *args: Any, **params: Any) -> None:
            self.nodes: dict[str, dict[str, Any]] = {}
            self.switch_names: list[str] = []
            self.links: list[tuple[str, str, dict[str, Any]]] = []
            self.build(*args, **params)

        def build(self, *args: Any, **params: Any) -> None:
            """Override this method to build your topology."""

        def addHost(self, name: str, **opts: Any) -> str:  # noqa: N802 - Mininet's API
            """Record a host."""
            self.nodes[name] = opts
            return name

        def addSwitch(self, name: str, **opts: Any) -> str:  # noqa: N802 - Mininet's API
            """Record a switch."""
            self.nodes[name] = opts
            self.switch_names.append(name)
            return name

        def addLink(self, node1: str, node2: str, **opts: Any) -> str:  # noqa: N802
            """Record a link."""
            self.links.append((node1, node2, opts))
            return f"{node1}<->{node2}"

    class Host:  # type: ignore[no-redef]
        """A stand-in for ``mininet.node.Host``."""


DEFAULT_NAME = "lab"
MAX_NAME_LENGTH = 10
DATAPATH_ID = "0000000000000001"
INSIDE_PREFIX = "192.168.1"
INSIDE_GATEWAY = f"{INSIDE_PREFIX}.254"
SERVER_HOST = "srv"
SERVER_CIDR = "203.0.113.1/24"
SERVER_OFPORT = 100
HOST_IFNAME = "eth0"
MAX_CLIENTS = 64
MAX_BRIDGES = 9
#: For ``mn --custom`` users who knew the module before labs had names.
BRIDGE = f"br-{DEFAULT_NAME}"

_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_LENGTH}}}")


def check_name(name: str) -> str:
    """Return ``name`` when it can name a lab (the rule of ``topo.lab.check_name``).

    Raises:
        ValueError: When the name is not 1 to 10 characters of ``a-z`` and ``0-9``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"lab name {name!r} is not valid: use 1 to {MAX_NAME_LENGTH} "
                         f"characters of a-z and 0-9")
    return name


def bridge_name(name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The switch of gateway ``gateway`` of lab ``name``: ``br-NAME``, ``br-NAME-<j>``."""
    bridge = f"br-{check_name(name)}"
    return bridge if gateway == 1 else f"{bridge}-{gateway}"


def port_name(host: str, name: str = DEFAULT_NAME, gateway: int = 1) -> str:
    """The switch port (root-side veth end) of ``host`` of gateway ``gateway`` in lab
    ``name``: ``NAME-<host>``, ``NAME-<j><host>`` for gateway ``j`` >= 2."""
    return f"{check_name(name)}-{'' if gateway == 1 else gateway}{host}"


def host_name(host: str, gateway: int = 1) -> str:
    """The Mininet host of ``host`` (``c<i>``, ``srv``) of gateway ``gateway``:
    ``host``, ``g<j><host>`` for gateway ``j`` >= 2."""
    return host if gateway == 1 else f"g{gateway}{host}"


class LabHost(Host):  # type: ignore[misc]
    """A Mininet host with transmit checksum offload and IPv6 off.

    OVS (and the ALG behind it) must see finished checksums; nothing in the lab speaks
    IPv6.
    """

    def config(self, **params: Any) -> Any:
        """Configure the host as Mininet does, then turn offload and IPv6 off."""
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd("ethtool -K", intf.name, "tx off")
        self.cmd("sysctl -q -w net.ipv6.conf.all.disable_ipv6=1")
        return result


class PptpLab(Topo):  # type: ignore[misc]
    """Clients ``c1`` .. ``cN`` and server ``srv`` around switch ``br-NAME`` (and the same
    around each more switch, one per gateway)."""

    def build(self, clients: int = 3, name: str = DEFAULT_NAME, dpid: str = DATAPATH_ID,
              bridges: int = 1, dpids: list[str] | None = None, **_opts: Any) -> None:
        """Build the layout.

        Args:
            clients: Number of clients (1 .. 64) of each gateway, ``--topo pptplab,N``.
            name: The lab's name, in the switches' and their ports' names.
            dpid: The first switch's datapath ID (16 hex digits); ``topo.mininet_run``
                gives ``topo.lab.datapath_id(name)``.
            bridges: Number of switches (1 .. 9), each a gateway's.
            dpids: The datapath IDs of the switches after the first (``topo.mininet_run``
                gives ``topo.lab.datapath_id(name, j)``); by default ``dpid`` + 1, + 2 ...
            **_opts: Ignored.

        Raises:
            ValueError: When ``clients`` or ``bridges`` is out of range or ``name`` is
                not valid.
        """
        clients, bridges = int(clients), int(bridges)
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be 1 .. {MAX_CLIENTS}, not {clients}")
        if not 1 <= bridges <= MAX_BRIDGES:
            raise ValueError(f"bridges must be 1 .. {MAX_BRIDGES}, not {bridges}")
        more = list(dpids) if dpids is not None else [
            f"{int(dpid, 16) + j:016x}" for j in range(1, bridges)]
        if len(more) != bridges - 1:
            raise ValueError(f"{bridges} switches take {bridges - 1} more datapath IDs, "
                             f"not {len(more)}")
        for gateway, switch_dpid in enumerate([dpid, *more], start=1):
            switch = self.addSwitch(bridge_name(name, gateway), dpid=switch_dpid,
                                    datapath="user", protocols="OpenFlow13",
                                    failMode="secure", inband=False)
            for i in range(1, clients + 1):
                host = self.addHost(
                    host_name(f"c{i}", gateway), cls=LabHost, ip=f"{INSIDE_PREFIX}.{i}/24",
                    defaultRoute=f"via {INSIDE_GATEWAY}",
                )
                self.addLink(host, switch, port2=i, intfName1=HOST_IFNAME,
                             intfName2=port_name(f"c{i}", name, gateway))
            server = self.addHost(host_name(SERVER_HOST, gateway), cls=LabHost, ip=SERVER_CIDR)
            self.addLink(server, switch, port2=SERVER_OFPORT, intfName1=HOST_IFNAME,
                         intfName2=port_name(SERVER_HOST, name, gateway))


topos = {"pptplab": PptpLab}
