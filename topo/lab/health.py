"""Whether a lab is up, and what it is made of, for people (``status``, ``describe``)."""

from __future__ import annotations

from collections.abc import Collection

from topo import netns
from topo.lab import controller, ovs, ports, standbys
from topo.lab.names import (
    DEFAULT_NAME,
    GATEWAY_COMMAND,
    LOG_FILE,
    STATE_FILE,
    bridge_name,
    command,
    run_dir,
)
from topo.lab.state import GatewayState, LabState, read_state


def _chosen(state: LabState, gateway: str | None) -> list[GatewayState]:
    """The gateways of ``state`` that ``gateway`` names: all of them when None.

    Raises:
        ValueError: When the lab has no gateway ``gateway``.
    """
    return state.all_gateways if gateway is None else [state.gateway(gateway)]


def problems(state: LabState, gateway: str | None = None) -> list[str]:
    """What keeps lab ``state`` (or its gateway ``gateway``) from being up (empty when it
    is up).

    Raises:
        ValueError: When the lab has no gateway ``gateway``.
    """
    found = []
    if state.store == "etcd":
        found += standbys.problems(state, _chosen(state, gateway))
    else:
        for chosen in _chosen(state, gateway):
            if not ovs.bridge_exists(chosen.bridge):
                found.append(f"bridge {chosen.bridge} does not exist")
            elif not ovs.is_connected(chosen.bridge):
                found.append(f"{chosen.bridge} is not connected to {state.controller}")
        pid = state.controller_pid
        if pid is None or not controller.is_controller(pid, state.config_path):
            found.append(f"{GATEWAY_COMMAND} (pid {pid}) is not running")
    if state.phase != "up":
        found.append(f"`up` or a restart did not finish (phase {state.phase})")
    return found


def status(name: str = DEFAULT_NAME, gateway: str | None = None) -> LabState | None:
    """Return the state of lab ``name`` when it is up, else None.

    Up means: a state file, every bridge (or gateway ``gateway``'s alone), a live
    ``pptp-alg-gateway`` with the recorded PID, and the switches connected to it.

    Raises:
        ValueError: When the lab has no gateway ``gateway``.
    """
    state = read_state(name)
    if state is None or problems(state, gateway):
        return None
    return state


def _gateway_lines(state: LabState, gateway: GatewayState, existing: Collection[str]
                   ) -> list[str]:
    """What ``describe`` says of one gateway."""
    lines = []
    if state.gateways:
        store = gateway.state_file if state.store != "etcd" else "etcd"
        lines.append(f"  gateway {gateway.name}: REST {state.rest_url}{gateway.rest_prefix}/, "
                     f"zone {gateway.ct_zone}, store {store}")
    width = max(len(ns) for ns in gateway.namespaces)
    for ns in gateway.namespaces:
        port = gateway.namespace_ports[ns]
        role = "server" if ns == gateway.server_namespace else "client"
        lines.append(
            f"  {role} {ns:<{width}} {gateway.addresses[ns]:<15} {state.ns_ifname} <-> "
            f"{port} (OpenFlow port {gateway.ports[port]})"
            + ("" if ns in existing else "  [namespace missing]"))
    if state.store == "etcd":
        lines.append(standbys.bridge_line(state, gateway.bridge, gateway.datapath_id))
        return lines
    connected = ovs.is_connected(gateway.bridge) if ovs.bridge_exists(gateway.bridge) else False
    lines.append(f"  bridge {gateway.bridge} (datapath ID {gateway.datapath_id:#x}): "
                 f"controller {state.controller} "
                 f"{'connected' if connected else 'not connected'}, "
                 f"{ovs.pipeline_flows(gateway.bridge) if connected else 0} pipeline flow(s)")
    return lines


def describe(name: str = DEFAULT_NAME, gateway: str | None = None) -> tuple[bool, str]:
    """Describe lab ``name`` (or its gateway ``gateway`` alone) for people: what runs,
    where, and where the logs are.

    Returns:
        Whether the lab (or that gateway) is up, and the text.

    Raises:
        ValueError: When the lab has no gateway ``gateway``.
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
    chosen = _chosen(state, gateway)
    wrong = problems(state, gateway)
    existing = netns.list_netns()
    what = "lab" if gateway is None else f"lab gateway {gateway}"
    lines = [f"{what}: up" if not wrong else f"{what}: down (" + "; ".join(wrong) + ")"]
    lines.append(f"  name {state.name}, folder {state.run_dir}"
                 + (f", {state.bridges} bridges" if state.gateways else ""))
    lines.append(f"  policy {state.policy}, ALG {'on' if state.alg else 'off'}, "
                 f"public IPs {', '.join(state.public_ips)}")
    for one in chosen:
        lines += _gateway_lines(state, one, existing)
    if state.store == "etcd":
        lines.append(f"  controllers: {len(state.controllers)} {GATEWAY_COMMAND} "
                     f"({state.framework}), app {state.app}, store etcd (etcd_cluster "
                     f"{state.name})")
        lines += standbys.describe(state)
        lines.append(f"  state: {state.state_path}")
        return not wrong, "\n".join(lines)
    pid = state.controller_pid
    running = pid is not None and controller.is_controller(pid, state.config_path)
    lines.append(f"  controller: {GATEWAY_COMMAND} ({state.framework}) pid {pid} "
                 f"{'running' if running else 'not running'}, app {state.app}")
    lines.append(f"  REST: {state.rest_url} "
                 f"({'listening' if ports.listening(state.rest_port) else 'not listening'})")
    lines.append(f"  log: {state.log_path}")
    lines.append(f"  config: {state.config_path}")
    lines.append(f"  state: {state.state_path}")
    return not wrong, "\n".join(lines)
