"""A running lab lives through a restart of its controller, then of its switch.

``topo.lab.restart_controller`` stops the lab's ``ryu-manager`` and starts a new one with
the same configuration while the bridge keeps its flows (``fail-mode=secure``);
``topo.lab.restart_switch`` empties the lab's bridge alone (controller connection, flows,
meters) as a restart of ``ovs-vswitchd`` without saved flows would, and connects it
again. Both return when the switch is connected and the app's pipeline is back.

The lab has a name of its own and is removed at the end by the ``gateway`` fixture
(``tests/e2e/conftest.py``), whatever happens. A flow and a meter that the app does not
own mark what the switch kept: the controller's restart leaves them, the switch's removes
them.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from alg.events import EntryKind
from tests.e2e.gateway_lab import GatewayLab
from topo import lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS"),
]

Factory = Callable[..., GatewayLab]
#: A cookie and a meter that the gateway app never uses.
FOREIGN_COOKIE = 0xC0FFEE
FOREIGN_METER = 4000
VSWITCHD_PID = Path("/var/run/openvswitch/ovs-vswitchd.pid")
#: Seconds each restart may take (OVSDB reports a (re)connection within about 5 s).
RESTART_TIMEOUT = 20


def ofctl(command: str, bridge: str, *args: str) -> str:
    proc = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", command, bridge, *args],
                          capture_output=True, text=True, timeout=10, check=True)
    return proc.stdout


def meters(bridge: str) -> set[int]:
    """The meter IDs of ``bridge``."""
    return {int(m) for m in re.findall(r"^meter=(\d+)", ofctl("dump-meters", bridge), re.M)}


def durations(lines: list[str]) -> list[float]:
    """The ``duration`` of each flow line, in seconds."""
    return [float(d) for line in lines for d in re.findall(r"\bduration=([0-9.]+)s", line)]


def connected(bridge: str) -> bool:
    proc = subprocess.run(["ovs-vsctl", "get", "controller", bridge, "is_connected"],
                          capture_output=True, text=True, timeout=10)
    return proc.stdout.strip() == "true"


def controller_runs(pid: int, config_path: str) -> bool:
    """Whether ``pid`` is a live process started with the lab's configuration file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return config_path.encode() in cmdline and stat.rpartition(")")[2].split()[0] != "Z"


def vswitchd_pid() -> str:
    return VSWITCHD_PID.read_text().strip()


@pytest.mark.timeout(60)
def test_the_lab_lives_through_a_controller_restart_then_a_switch_restart(
    gateway: Factory,
) -> None:
    gw = gateway(1)
    state = gw.state
    bridge, name = state.bridge, state.name
    daemon = vswitchd_pid()
    app_meters = meters(bridge)
    pipeline = gw.flows(EntryKind.PIPELINE)
    assert pipeline and app_meters, (pipeline, app_meters)
    assert FOREIGN_METER not in app_meters
    ofctl("add-meter", bridge, f"meter={FOREIGN_METER},pktps,band=type=drop,rate=10")
    ofctl("add-flow", bridge, f"cookie={FOREIGN_COOKIE:#x},table=200,priority=1,actions=drop")
    foreign = f"cookie={FOREIGN_COOKIE:#x},"
    old_pid = state.controller_pid
    assert old_pid is not None

    # The controller: a new process, the same bridge.
    started = time.monotonic()
    restarted = lab.restart_controller(name=name, timeout=RESTART_TIMEOUT)
    took = time.monotonic() - started
    new_pid = restarted.controller_pid
    assert new_pid is not None and new_pid != old_pid
    assert not controller_runs(old_pid, state.config_path)
    assert controller_runs(new_pid, state.config_path)
    assert Path(state.pid_path).read_text().strip() == str(new_pid)
    recorded = lab.read_state(name)
    assert recorded is not None and recorded.controller_pid == new_pid
    assert recorded.phase == "up"
    assert (recorded.openflow_port, recorded.rest_port) == (state.openflow_port, state.rest_port)
    assert lab.status(name) == restarted
    assert connected(bridge)
    again = gw.flows(EntryKind.PIPELINE)
    assert len(again) == len(pipeline), (pipeline, again)
    # The new controller installed the pipeline again (it clears its own flows at connect).
    assert max(durations(again)) < took, again
    # What the app does not own shows that the bridge itself was left alone.
    assert [line for line in gw.flows() if foreign in line]
    assert meters(bridge) == app_meters | {FOREIGN_METER}
    assert gw.counters() is not None  # the new controller's REST answers

    # The switch: emptied, connected again, the pipeline back, the controller the same.
    started = time.monotonic()
    back = lab.restart_switch(name=name, timeout=RESTART_TIMEOUT)
    took = time.monotonic() - started
    flows = gw.flows()
    assert not [line for line in flows if foreign in line], flows
    assert max(durations(flows)) < took, flows  # every flow came after the emptying
    assert len(gw.flows(EntryKind.PIPELINE)) == len(pipeline), flows
    assert meters(bridge) == app_meters
    assert connected(bridge)
    assert back.controller_pid == new_pid and controller_runs(new_pid, state.config_path)
    assert back.phase == "up" and lab.status(name) == back
    # The shared daemon was not restarted.
    assert vswitchd_pid() == daemon
