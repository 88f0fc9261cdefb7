"""The lab as a Mininet custom topology, for people at a keyboard.

.. warning::
   ``mn`` deletes **every** Open vSwitch bridge on the machine when it exits on an error
   or on Ctrl-C: it then runs the cleanup of ``mn -c``, which does ``ovs-vsctl del-br``
   on every bridge that ``ovs-vsctl list-br`` shows, deletes every link named like
   ``*-eth<N>``, removes ``/tmp/*.log`` and ``killall -9``'s processes by name (every
   ``ping`` and, in recent releases, every ``ryu-manager``). Never run it on a machine
   where anything else runs, and never from tests or CI: they use ``topo.lab``, which
   removes only what it made. ``mn`` and ``topo.lab`` use the same names (``br-lab``, ``lab-c1`` ..,
   ``lab-srv``) and the same controller port, so run ``python -m topo.lab down`` first.

The same layout as ``topo.lab``:

- hosts ``c1`` .. ``cN`` at ``192.168.1.<i>/24``, default route via ``192.168.1.254``;
- host ``srv`` at ``203.0.113.1/24`` (the outside subnet is on-link, no other route);
- one OVS switch ``br-lab`` (datapath ID 1) whose ports are named ``lab-c<i>`` (OpenFlow
  port ``i``) and ``lab-srv`` (OpenFlow port 100), so that the gateway app's
  ``[nat]`` options are the ones ``topo.lab`` writes;
- transmit checksum offload off on every host interface, IPv6 off in every host.

Unlike ``topo.lab``, Mininet's hosts live in unnamed namespaces (``ip netns`` does not
list them; use ``mnexec -a PID`` or the Mininet CLI) and their interfaces keep Mininet's
names (``c1-eth0``, ``srv-eth0``).

Usage, from the repo root, as root, with the gateway app already running (its
configuration written with ``topo.lab.render_config(topo.lab.plan(3))``)::

    mn --custom topo/mininet_lab.py --topo pptplab,3 \\
       --controller remote,ip=127.0.0.1,port=6653 \\
       --switch ovs,datapath=user,protocols=OpenFlow13

This module imports without Mininet installed (it then builds a plain description, which
is enough to check the layout).
"""

from __future__ import annotations

from typing import Any

try:  # Mininet is optional: only ``mn`` users have it.
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


BRIDGE = "br-lab"
DATAPATH_ID = "0000000000000001"
INSIDE_PREFIX = "192.168.1"
INSIDE_GATEWAY = f"{INSIDE_PREFIX}.254"
SERVER_NS = "srv"
SERVER_CIDR = "203.0.113.1/24"
SERVER_OFPORT = 100
MAX_CLIENTS = 64


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
    """Clients ``c1`` .. ``cN`` and server ``srv`` around switch ``br-lab``."""

    def build(self, clients: int = 3, **_opts: Any) -> None:
        """Build the layout.

        Args:
            clients: Number of clients (1 .. 64), ``--topo pptplab,N``.
            **_opts: Ignored.

        Raises:
            ValueError: When ``clients`` is out of range.
        """
        clients = int(clients)
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be 1 .. {MAX_CLIENTS}, not {clients}")
        switch = self.addSwitch(BRIDGE, dpid=DATAPATH_ID)
        for i in range(1, clients + 1):
            host = self.addHost(
                f"c{i}", cls=LabHost, ip=f"{INSIDE_PREFIX}.{i}/24",
                defaultRoute=f"via {INSIDE_GATEWAY}",
            )
            self.addLink(host, switch, port2=i, intfName2=f"lab-c{i}")
        server = self.addHost(SERVER_NS, cls=LabHost, ip=SERVER_CIDR)
        self.addLink(server, switch, port2=SERVER_OFPORT, intfName2=f"lab-{SERVER_NS}")


topos = {"pptplab": PptpLab}
