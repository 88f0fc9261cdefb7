"""What a gateway in service lives through, on a running lab.

``restart_controller`` stops the lab's controller and starts it again with the same
configuration while the bridges keep their flows; ``restart_switch`` makes one bridge of
the lab alone look like an ``ovs-vswitchd`` restart without saved flows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from topo.lab import controller, health, ovs, standbys
from topo.lab.names import (
    DEFAULT_NAME,
    GATEWAY_COMMAND,
    LOCK_FILE,
    STATE_FILE,
    LabError,
    command,
    run_dir,
    say,
)
from topo.lab.state import LabState, controller_pids, locked, read_state, write_state
from topo.netns import CommandError


def _not_up(name: str, verb: str) -> LabError:
    """The refusal of ``verb`` (a restart) for lab ``name``, which is not up, with why."""
    recorded = read_state(name)
    why = (f"no state file {run_dir(name) / STATE_FILE}" if recorded is None
           else "; ".join(health.problems(recorded)))
    return LabError(
        f"lab {name} is not up ({why}), so there is nothing to {verb}: "
        f"`{command('status', name)}` shows it, `{command('up', name, '--replace', '...')}` "
        f"builds it")


@contextlib.contextmanager
def _restarting(name: str, verb: str) -> Iterator[LabState]:
    """Hold lab ``name``'s lock and give its state, or refuse when it is not up.

    A lab without a state file is refused before the lock is taken, so that no folder
    is made for a lab that does not exist. The state file records the phase
    ``restarting`` meanwhile, and ``up`` again when the block ends without an error
    (after one, the lab is left as it is).

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
    with locked(folder / LOCK_FILE):
        state = health.status(name)
        if state is None:
            raise _not_up(name, verb)
        state.phase = "restarting"
        write_state(state)
        yield state
        state.phase = "up"
        write_state(state)


def restart_controller(
    name: str = DEFAULT_NAME, timeout: float = 30, quiet: bool = True
) -> LabState:
    """Stop the controller of lab ``name`` and start it again with the same configuration.

    The bridges and their flows are left alone: with ``fail-mode=secure`` a switch keeps
    its flows while no controller is connected, and reconnects by itself (the controller
    target stays set, retried at least every second). The old ``pptp-alg-gateway`` is stopped
    by the PID the lab recorded, and only if that process is this lab's controller, as in
    ``down``. Returns when the new controller listens, the switch is connected to it (a
    TCP connection on the lab's OpenFlow port, since OVSDB reports the old connection as
    connected for up to about 5 s) and the pipeline flows were added by the new
    controller (the flows the switch kept do not count; OVS restarts a flow's
    ``duration`` when it is added again, even unchanged), on every bridge of the lab.

    Args:
        name: The lab's name.
        timeout: Seconds to wait for the new controller, from its start.
        quiet: Do not print progress on stderr.

    Returns:
        The lab's state, with the new controller's PID (also in ``lab.json``).

    Raises:
        ValueError: On a bad name.
        LabError: When the lab is not up or is on etcd (``kill-controller`` and
            ``start-controller`` restart one of its controllers), the old controller
            does not stop, or the new one dies or is not ready in time (the lab is then
            left as it is).
    """
    recorded = read_state(name)
    if recorded is not None and recorded.store == "etcd":
        raise LabError(
            f"lab {name} has {len(recorded.controllers)} controller(s) on etcd: "
            f"`{command('kill-controller', name, '--index I')}` and "
            f"`{command('start-controller', name, '--index I')}` restart one")
    with _restarting(name, "restart") as state:
        old = state.controller_pid
        bridges = [g.bridge for g in state.all_gateways]
        say(quiet, f"lab {name}: restarting {GATEWAY_COMMAND} (pid {old}); {', '.join(bridges)} "
                   f"{'keeps its' if len(bridges) == 1 else 'keep their'} flows")
        for pid in controller_pids(name, state):
            controller.stop(pid, state.config_path, quiet)
        state.controller_pid = None
        write_state(state)
        say(quiet, f"lab {name}: starting {GATEWAY_COMMAND} ({state.framework}) with "
                   f"{state.app}")
        started = time.monotonic()
        child = controller.start(state)
        state.controller_pid = child.pid
        write_state(state)
        deadline = started + timeout
        controller.wait_listening(state, child, deadline)
        controller.wait_ready(state, child, deadline, since=started)
    say(quiet, f"lab {name}: controller restarted (pid {old} -> {child.pid}, log "
               f"{state.log_path})")
    return state


def restart_switch(
    name: str = DEFAULT_NAME, timeout: float = 30, quiet: bool = True,
    gateway: str | None = None,
) -> LabState:
    """Make a bridge of lab ``name`` look like an ``ovs-vswitchd`` restart without flows.

    Only that bridge is touched (gateway ``gateway``'s, by default gateway 1's), never
    another bridge, of this lab or another, or the OVS daemons: its
    controller connection is removed (``ovs-vsctl del-controller``), then every flow and
    every meter (``ovs-ofctl del-flows``, ``del-meters``), and the controller is set again
    as ``up`` sets it. The running controller sees the switch leave and come back empty,
    and installs its pipeline again (in a lab on etcd, the bridge gets every controller
    again, and the master installs it). Returns when the switch is connected and a flow with
    the pipeline cookie is installed again (OVSDB reports the new connection about 5 s
    after it is made, at worst).

    Args:
        name: The lab's name.
        timeout: Seconds to wait for the switch to come back, from when its emptying
            starts.
        quiet: Do not print progress on stderr.
        gateway: The gateway (``g<j>``) whose bridge restarts; None for gateway 1's.

    Returns:
        The lab's state (unchanged but for the phase, which is ``up`` again).

    Raises:
        ValueError: On a bad name, or a gateway the lab does not have.
        LabError: When the lab is not up, an OVS command fails, flows or meters are left,
            or the controller dies or does not reinstall its pipeline in time (the lab
            is then left as it is).
    """
    recorded = read_state(name)
    if recorded is not None and gateway is not None:
        recorded.gateway(gateway)
    with _restarting(name, "restart the switch of") as state:
        bridge = state.gateway(gateway or 1).bridge
        say(quiet, f"lab {name}: emptying {bridge} as a restart of ovs-vswitchd without "
                   f"saved flows would (controller connection, flows, meters)")
        emptied = time.monotonic()
        try:
            ovs.vsctl("del-controller", bridge)
            ovs.ofctl("del-flows", bridge)
            ovs.ofctl("del-meters", bridge)
            left = (ovs.flow_count(bridge), ovs.meter_count(bridge))
            if left != (0, 0):
                raise LabError(f"{bridge} still has {left[0]} flow(s) and {left[1]} meter(s) "
                               f"after del-flows and del-meters")
            say(quiet, f"lab {name}: {bridge} is empty; connecting it to "
                       f"{state.controller} again")
            if state.store == "etcd":
                ovs.set_controllers(bridge, [one.target for one in state.controllers])
            else:
                ovs.set_controller(state, bridge)
        except CommandError as exc:
            raise LabError(f"emptying {bridge} failed: {exc}\nthe lab is left as it is; "
                           f"`{command('down', name)}` removes it") from exc
        pid = state.controller_pid
        if state.store == "etcd":
            standbys.wait_pipeline(state, bridge, emptied, emptied + timeout)
        else:
            controller.wait_ready(state, controller.child(pid) if pid is not None else None,
                                  emptied + timeout, since=emptied, bridges=[bridge])
        # Packets that arrived while the bridge was empty left datapath flows that drop;
        # a restarted ovs-vswitchd would have none. Wait (read-only) for the revalidators
        # to bring them in line with the entries the app put back.
        ovs.appctl("revalidator/wait", check=False)
    say(quiet, f"lab {name}: {bridge} is connected again and has its pipeline")
    return state


