"""Whether a lab is up, and what it is made of, for people (``status``, ``describe``)."""

from __future__ import annotations

from topo import netns
from topo.lab import controller, ovs, ports
from topo.lab.names import (
    DEFAULT_NAME,
    LOG_FILE,
    MANAGER_COMMANDS,
    STATE_FILE,
    bridge_name,
    command,
    run_dir,
)
from topo.lab.state import LabState, read_state


def problems(state: LabState) -> list[str]:
    """What keeps lab ``state`` from being up (empty when it is up)."""
    found = []
    if not ovs.bridge_exists(state.bridge):
        found.append(f"bridge {state.bridge} does not exist")
    elif not ovs.is_connected(state.bridge):
        found.append(f"{state.bridge} is not connected to {state.controller}")
    pid = state.controller_pid
    if pid is None or not controller.is_controller(pid, state.config_path):
        found.append(f"ryu-manager (pid {pid}) is not running")
    if state.phase != "up":
        found.append(f"`up` or a restart did not finish (phase {state.phase})")
    return found


def status(name: str = DEFAULT_NAME) -> LabState | None:
    """Return the state of lab ``name`` when it is up, else None.

    Up means: a state file, the bridge, a live ``ryu-manager`` with the recorded PID, and
    the switch connected to it.
    """
    state = read_state(name)
    if state is None or problems(state):
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
        if ovs.bridge_exists(bridge):
            lines.append(f"  but bridge {bridge} exists: `{command('down', name)}` removes it")
        if (folder / LOG_FILE).exists():
            lines.append(f"last controller log: {folder / LOG_FILE}")
        return False, "\n".join(lines)
    wrong = problems(state)
    existing = netns.list_netns()
    lines = ["lab: up" if not wrong else "lab: down (" + "; ".join(wrong) + ")"]
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
    connected = ovs.is_connected(state.bridge) if ovs.bridge_exists(state.bridge) else False
    lines.append(f"  bridge {state.bridge} (datapath ID {state.datapath_id:#x}): controller "
                 f"{state.controller} {'connected' if connected else 'not connected'}, "
                 f"{ovs.pipeline_flows(state.bridge) if connected else 0} pipeline flow(s)")
    pid = state.controller_pid
    running = pid is not None and controller.is_controller(pid, state.config_path)
    manager = MANAGER_COMMANDS.get(state.framework, "controller")
    lines.append(f"  controller: {manager} pid {pid} {'running' if running else 'not running'}"
                 f", app {state.app}")
    lines.append(f"  REST: {state.rest_url} "
                 f"({'listening' if ports.listening(state.rest_port) else 'not listening'})")
    lines.append(f"  log: {state.log_path}")
    lines.append(f"  config: {state.config_path}")
    lines.append(f"  state: {state.state_path}")
    return not wrong, "\n".join(lines)
