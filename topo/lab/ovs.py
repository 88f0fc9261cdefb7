"""The lab's OVS bridges, through ``ovs-vsctl``, ``ovs-ofctl`` and ``ovs-appctl``.

Whatever changes something names a bridge of the lab: no other bridge and neither OVS
daemon is touched.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alg.events import EntryKind
from ryu_apps import switch
from topo import netns
from topo.lab.names import LabError

if TYPE_CHECKING:
    from topo.lab.state import GatewayState, LabState

_DURATION = re.compile(r"\bduration=([0-9.]+)s")


def vsctl(*args: str, check: bool = True) -> str:
    """Run ``ovs-vsctl`` with ``args``; return its output, stripped.

    Raises:
        CommandError: When it fails and ``check`` is set.
    """
    return netns.run(["ovs-vsctl", "--timeout=10", *args], check=check).strip()


def bridge_exists(bridge: str) -> bool:
    """Tell whether OVS has a bridge called ``bridge``."""
    proc = subprocess.run(
        ["ovs-vsctl", "--timeout=10", "br-exists", bridge], capture_output=True, timeout=30
    )
    return proc.returncode == 0


def ofctl(*args: str, check: bool = True) -> str:
    """Run ``ovs-ofctl`` (OpenFlow 1.3) with ``args``; return its output.

    Raises:
        CommandError: When it fails and ``check`` is set.
    """
    return netns.run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=check)


def appctl(*args: str, check: bool = True) -> str:
    """Run ``ovs-appctl`` with ``args``; return its output.

    Raises:
        CommandError: When it fails and ``check`` is set.
    """
    return netns.run(["ovs-appctl", "--timeout=10", *args], check=check)


def is_connected(bridge: str) -> bool:
    """Tell whether OVSDB reports ``bridge`` connected to its controller."""
    return vsctl("get", "controller", bridge, "is_connected", check=False) == "true"


def pipeline_ages(bridge: str) -> list[float]:
    """The age in seconds (``duration``) of each flow of ``bridge`` with the pipeline cookie."""
    out = ofctl("dump-flows", bridge, switch.kind_filter(EntryKind.PIPELINE), check=False)
    return [float(found.group(1)) for line in out.splitlines() if "cookie=" in line
            for found in [_DURATION.search(line)] if found is not None]


def pipeline_flows(bridge: str) -> int:
    """The number of flows of ``bridge`` with the pipeline cookie."""
    return len(pipeline_ages(bridge))


def pipeline_installed(bridge: str, since: float | None) -> bool:
    """Tell whether ``bridge`` has pipeline flows, all added after ``since`` if given.

    Args:
        bridge: The bridge.
        since: A ``time.monotonic()`` value, or None for any pipeline flow. OVS resets a
            flow's duration when a controller adds it again, even unchanged.
    """
    ages = pipeline_ages(bridge)
    return bool(ages) and (since is None or max(ages) < time.monotonic() - since)


def flow_count(bridge: str) -> int:
    """The number of flows of ``bridge``, every table and cookie."""
    return sum(1 for line in ofctl("dump-flows", bridge).splitlines() if "cookie=" in line)


def meter_count(bridge: str) -> int:
    """The number of meters of ``bridge``."""
    return sum(1 for line in ofctl("dump-meters", bridge).splitlines()
               if line.lstrip().startswith("meter="))


def build_bridge(gateway: GatewayState) -> None:
    """Make a gateway's bridge with its ports, each at its OpenFlow port number.

    Raises:
        CommandError: When OVS refuses.
        LabError: When OVS gives a port another number.
    """
    bridge = gateway.bridge
    argv = [
        "--", "add-br", bridge,
        "--", "set", "bridge", bridge, "datapath_type=netdev", "fail_mode=secure",
        "protocols=OpenFlow13", "other-config:disable-in-band=true",
        f"other-config:datapath-id={gateway.datapath_id:016x}",
    ]
    for port, ofport in gateway.ports.items():
        argv += ["--", "add-port", bridge, port,
                 "--", "set", "interface", port, f"ofport_request={ofport}"]
    vsctl(*argv)
    for port, ofport in gateway.ports.items():
        got = vsctl("get", "interface", port, "ofport", check=False)
        if got != str(ofport):
            error = vsctl("get", "interface", port, "error", check=False)
            raise LabError(f"OVS gave {port} OpenFlow port {got}, not {ofport}: {error}")


def set_controller(state: LabState, bridge: str | None = None) -> None:
    """Point ``bridge`` (gateway 1's by default) at the lab's controller: out-of-band,
    retried at least every second.

    Raises:
        CommandError: When OVS refuses.
    """
    bridge = state.bridge if bridge is None else bridge
    vsctl("set-controller", bridge, state.controller,
          "--", "set", "controller", bridge, "connection_mode=out-of-band",
          "max_backoff=1000")


def set_controllers(bridge: str, targets: Sequence[str]) -> None:
    """Point ``bridge`` at every one of ``targets`` (a lab's several controllers), each
    out-of-band and retried at least every second, in one OVSDB transaction.

    Raises:
        CommandError: When OVS refuses.
    """
    argv: list[str] = []
    for number, target in enumerate(targets):
        argv += ["--", f"--id=@c{number}", "create", "controller", f'target="{target}"',
                 "connection_mode=out-of-band", "max_backoff=1000"]
    refs = ",".join(f"@c{number}" for number in range(len(targets)))
    vsctl(*argv, "--", "set", "bridge", bridge, f"controller=[{refs}]")


@dataclass(frozen=True)
class ControllerLink:
    """One controller target of a bridge as OVSDB reports it (updated by
    ``ovs-vswitchd`` every few seconds).

    Attributes:
        target: E.g. ``tcp:127.0.0.1:6653``.
        connected: Whether the switch is connected to it.
        role: ``master``, ``slave`` or ``other`` as the switch sees it; empty when not
            connected.
    """

    target: str
    connected: bool
    role: str


def controller_links(bridge: str) -> list[ControllerLink]:
    """The controller targets of ``bridge``, with their connection and role (empty when
    the bridge has none or OVS cannot be asked)."""
    uuids = vsctl("get", "bridge", bridge, "controller", check=False)
    ids = uuids.strip().strip("[]").replace(",", " ").split()
    if not ids:
        return []
    out = vsctl("--format=json", "--columns=target,is_connected,role", "list", "controller",
                *ids, check=False)
    try:
        rows = json.loads(out)["data"]
    except (ValueError, KeyError, TypeError):
        return []
    return [ControllerLink(str(target), connected is True,
                           role if isinstance(role, str) else "")
            for target, connected, role in rows]


def delete_bridge(bridge: str) -> None:
    """Delete ``bridge`` with its ports, if it exists."""
    vsctl("--if-exists", "del-br", bridge)


def forget_zone(zone: int) -> None:
    """Remove what the app set on the lab's zone of the connection tracker: its limit and
    its timeout policy (``ryu_apps.ctlimits``; on a machine without them, nothing)."""
    appctl("dpctl/ct-del-limits", f"zone={zone}", check=False)
    vsctl("--if-exists", "del-zone-tp", "netdev", f"zone={zone}", check=False)


def existing(state: LabState) -> list[str]:
    """The lab's ports (interfaces) and bridges that exist (every gateway's), for people."""
    found = []
    for gateway in state.all_gateways:
        found += [f"interface {port}" for port in gateway.ports if netns.link_exists(port)]
        if bridge_exists(gateway.bridge):
            found.append(f"bridge {gateway.bridge}")
    return found


def remove(bridge: str, ports: Iterable[str]) -> None:
    """Delete ``bridge`` if it exists, then each of ``ports`` left as an interface."""
    delete_bridge(bridge)
    for port in ports:
        netns.del_link(port)
