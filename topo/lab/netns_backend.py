"""The lab in named network namespaces: ``up`` builds it, ``down`` removes it.

Each client and the server of each gateway is a namespace (``ip netns``) with a veth
pair whose root-side end is a port of that gateway's bridge; see ``topo.lab`` for the
layout.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from alg.errors import BpfError
from topo import gre_demux as demux_component
from topo import netns
from topo.lab import controller, health, ovs, ports, standbys
from topo.lab.names import (
    CONFIG_FILE,
    DEFAULT_APP,
    DEFAULT_FRAMEWORK,
    DEFAULT_NAME,
    DEMUX_OFPORT,
    GATEWAY_COMMAND,
    LOCK_FILE,
    MAX_BRIDGES,
    PID_FILE,
    PORTS_LOCK_PATH,
    STATE_FILE,
    LabError,
    command,
    demux_dir,
    demux_port_name,
    gateway_state_files,
    run_dir,
    say,
)
from topo.lab.state import (
    LabState,
    clear_gateway_state,
    controller_pids,
    lab_bridges,
    locked,
    owned,
    plan,
    read_state,
    render_config,
    write_state,
    zones_of,
)
from topo.netns import CommandError


def _assign_ports(state: LabState) -> None:
    """Give the lab its TCP ports: the default's fixed ones, or free ones no lab recorded.

    Must run with ``PORTS_LOCK_PATH`` held until the state file records the ports. A lab
    on etcd, the default one too, gets free ports for everything (``use_etcd_ports``).

    Raises:
        LabError: When a port of the default lab is taken, or no free ones are found.
    """
    if state.store == "etcd":
        state.use_etcd_ports(ports.pick_ports(ports.taken_ports(but=state.name),
                                              state.etcd_port_count()))
        return
    if state.name == DEFAULT_NAME:
        ports.check_free(state)
        return
    openflow_port, rest_port = ports.pick_ports(ports.taken_ports(but=state.name))
    state.use_ports(openflow_port, rest_port)


def _build_namespaces(state: LabState) -> None:
    """Make the lab's namespaces (every gateway's), each with its veth pair, address and
    route.

    Raises:
        CommandError: When a command fails.
    """
    for gateway, ns in ((g, ns) for g in state.all_gateways for ns in g.namespaces):
        server = ns == gateway.server_namespace
        subnet = state.outside_subnet if server else state.inside_subnet
        port = gateway.namespace_ports[ns]
        netns.add_netns(ns)  # also brings lo up
        netns.veth(ns, state.ns_ifname, None, port)
        netns.tx_off(ns, state.ns_ifname)
        netns.address(ns, state.ns_ifname,
                      f"{gateway.addresses[ns]}/{subnet.split('/')[1]}")
        if not server:
            netns.route(ns, "default", state.inside_gateway)
        # Nothing in the lab speaks IPv6: keep router solicitations and MLD off the switch.
        netns.ns_run(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        netns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{port}.disable_ipv6=1"], check=False)


def _remains(name: str) -> list[str]:
    """What of lab ``name`` exists (what its ``down`` would remove), for people."""
    found = []
    state = read_state(name)
    if state is not None:
        found.append(f"its state file {state.state_path} (phase {state.phase})")
    config_path = str(run_dir(name) / CONFIG_FILE)
    found += [f"its controller (pid {pid})" for pid in controller_pids(name, state)
              if controller.is_controller(pid, config_path)]
    found += standbys.remains(name, state)
    bridges = [bridge for bridge in lab_bridges(name, state) if ovs.bridge_exists(bridge)]
    found += [f"its bridge {bridge}" for bridge in bridges]
    spaces, links = owned(name, state, bridges)
    existing = netns.list_netns()
    found += [f"namespace {ns}" for ns in spaces if ns in existing]
    found += [f"interface {link}" for link in links if netns.link_exists(link)]
    return found


def _in_the_way(state: LabState) -> list[str]:
    """What of the planned lab exists already although the lab is down."""
    existing = netns.list_netns()
    return ([f"namespace {ns}" for g in state.all_gateways for ns in g.namespaces
             if ns in existing] + ovs.existing(state))


def up(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    timeout: float = 30,
    app: str | os.PathLike[str] = DEFAULT_APP,
    quiet: bool = True,
    *,
    name: str = DEFAULT_NAME,
    replace: bool = False,
    options: dict[str, str] | None = None,
    gre_demux: bool = True,
    framework: str = DEFAULT_FRAMEWORK,
    bridges: int = 1,
    controllers: int = 1,
    store: str = "sqlite",
) -> LabState:
    """Build lab ``name``, start its controller and wait until it is ready.

    Ready means every switch reports the controller connected and has a flow with the
    app's pipeline cookie (kind 1). No other lab is touched. With ``store`` ``etcd``,
    the lab's etcd cluster, a proxy per controller and the ``controllers`` start
    (``topo.lab.standbys.start``), and ready means some controller is master of every
    gateway, every bridge has the pipeline and every controller is connected to every
    bridge.

    Args:
        clients: Number of client namespaces (1 .. 64) of each gateway.
        policy: ``open`` or ``strict``.
        public_ips: Number of public addresses (1 .. 253).
        alg: Whether the PPTP ALG is on.
        timeout: Seconds to wait for the controller, from its start.
        app: The Ryu application, absolute or relative to the repo root.
        quiet: Do not print progress on stderr.
        name: The lab's name.
        replace: Take lab ``name`` down first when anything of it exists; without it,
            ``up`` refuses.
        options: More ``[nat]`` options for the app (see :class:`LabState`).
        gre_demux: Attach the GRE demultiplexer (``topo.gre_demux``) as port
            ``NAME-dmx``, its BPF filesystem in the lab's folder (on by default: the bench
            measured it ten times the controller path for shared pairs); every gateway
            has its own (``NAME-<j>dmx``, ``bpf-g<j>``).
        framework: ``ryu`` or ``os-ken``.
        bridges: Number of bridges (1 .. 9), each a gateway of its own with the same
            addresses, all driven by the one controller (or by each of ``controllers``).
        controllers: Number of controller processes (1 .. 9); more than one needs
            ``store`` ``etcd``.
        store: ``sqlite`` or ``etcd``.

    Returns:
        The lab's state (also in ``lab.json``).

    Raises:
        ValueError: On an argument out of range or a bad name.
        LabError: When the lab exists and ``replace`` is not set, something else is in
            the way, the app is missing, a port is taken, a command fails, the
            controller dies or is not ready in time. What was built stays for ``down``.
    """
    state = plan(clients, policy, public_ips, alg, app, name=name, options=options,
                 gre_demux=gre_demux, framework=framework, bridges=bridges,
                 controllers=controllers, store=store)
    if not Path(state.app).is_file():
        raise LabError(f"the Ryu app {state.app} does not exist")
    if state.store == "etcd":
        standbys.check_etcd()
    with locked(Path(state.run_dir) / LOCK_FILE):
        if replace:
            _down_locked(name, quiet)
        else:
            running = health.status(name)
            found = _remains(name) if running is None else []
            if running is not None or found:
                pids = (", ".join(str(one.pid) for one in running.controllers)
                        if running is not None and running.controllers else
                        running.controller_pid if running is not None else None)
                what = (f"is up (bridge {running.bridge}, controller pid "
                        f"{pids})" if running is not None else
                        f"is not up, but parts of it exist ({'; '.join(found)})")
                raise LabError(
                    f"lab {name} {what}: `{command('down', name)}` removes it, or "
                    f"`{command('up', name, '--replace', '...')}` replaces it")
        blocking = _in_the_way(state)
        if blocking:
            raise LabError(
                f"lab {name} is down but {', '.join(blocking)} exist: the lab did not make "
                f"them, so it leaves them alone; remove them or choose another --name")
        with locked(PORTS_LOCK_PATH):
            _assign_ports(state)
            write_state(state)
        try:
            gateways = state.all_gateways
            say(quiet, f"lab {name}: building "
                       f"{sum(len(g.namespaces) for g in gateways)} namespaces and "
                       f"{', '.join(g.bridge for g in gateways)}")
            _build_namespaces(state)
            for gateway in gateways:
                ovs.build_bridge(gateway)
                if gateway.gre_demux_port:
                    demux_component.attach(gateway.bridge, gateway.gre_demux_port,
                                           gateway.gre_demux_dir, DEMUX_OFPORT)
            if state.store == "sqlite":
                Path(state.config_path).write_text(render_config(state))
            clear_gateway_state(Path(state.run_dir))
        except (CommandError, BpfError) as exc:
            raise LabError(f"building the lab failed: {exc}\n"
                           f"`{command('down', name)}` removes what was built") from exc
        if state.store == "etcd":
            standbys.start(state, timeout, quiet)
            state.phase = "up"
            write_state(state)
            say(quiet, f"lab {name}: up ({len(state.controllers)} controllers, "
                       f"`{command('status', name)}` shows them)")
            return state
        say(quiet, f"lab {name}: starting {GATEWAY_COMMAND} ({state.framework}) with "
                   f"{state.app}")
        started = controller.start(state)
        state.controller_pid = started.pid
        state.phase = "starting"
        write_state(state)
        deadline = time.monotonic() + timeout
        controller.wait_listening(state, started, deadline)
        for gateway in state.all_gateways:
            ovs.set_controller(state, gateway.bridge)
        controller.wait_ready(state, started, deadline)
        state.phase = "up"
        write_state(state)
        say(quiet, f"lab {name}: up (controller pid {started.pid}, log {state.log_path})")
        return state


def _down_locked(name: str, quiet: bool) -> None:
    """``down`` of lab ``name``, whose lock the caller holds."""
    folder = run_dir(name)
    state = read_state(name)
    for pid in controller_pids(name, state):
        controller.stop(pid, str(folder / CONFIG_FILE), quiet)
    standbys.stop(name, state, quiet)

    bridges = lab_bridges(name, state)
    found = [bridge for bridge in bridges if ovs.bridge_exists(bridge)]
    spaces, links = owned(name, state, found)
    for gateway, bridge in enumerate(bridges, start=1):
        demux_component.detach(bridge, demux_port_name(name, gateway), demux_dir(name, gateway))
        if bridge in found:
            say(quiet, f"lab {name}: deleting bridge {bridge}")
            ovs.delete_bridge(bridge)
    for link in links:
        netns.del_link(link)
    for zone in zones_of(name, state, found):
        ovs.forget_zone(zone)
    existing = netns.list_netns()
    for ns in spaces:
        if ns not in existing:
            continue
        left = netns.run(["ip", "netns", "pids", ns], check=False).split()
        if left:
            say(quiet, f"lab {name}: warning: processes {' '.join(left)} still run in "
                       f"namespace {ns}; the lab did not start them and leaves them alone")
        say(quiet, f"lab {name}: deleting namespace {ns}")
        netns.del_netns(ns)
    stores = [file for gateway in range(1, MAX_BRIDGES + 1)
              for file in gateway_state_files(gateway)]
    for file in (STATE_FILE, PID_FILE, CONFIG_FILE, *stores):
        (folder / file).unlink(missing_ok=True)


def down(quiet: bool = True, *, name: str = DEFAULT_NAME, purge: bool = False) -> None:
    """Remove the namespaces, the bridges and the controller of lab ``name``, nothing else.

    Works after a half-finished ``up`` and when there is nothing to remove. Only the
    bridges, namespaces and OVS ports that the state file records are deleted, or,
    without a state file, the lab's bridges of gateways 1 .. 9 that exist and the
    namespaces and ports of 64 clients of gateway 1 and of each gateway whose bridge
    existed; in both cases only names of the lab's own pattern (``c<digits>``/``srv``,
    ``g<j>c<digits>``/``g<j>srv`` in the default lab, the same after ``NAME-`` else). The
    zones' settings of every gateway are removed (``ovs.forget_zone``). The controller
    is killed by the PID in the PID file or the state, and only if that process is a
    ``pptp-alg-gateway`` started with this lab's configuration file. A lab on etcd's
    controllers, proxies and members are stopped likewise (``standbys.stop``, from the
    state file and their PID files), and the members' data removed.

    Args:
        quiet: Do not print progress on stderr.
        name: The lab's name.
        purge: Also delete the lab's folder with its logs (for throwaway labs).

    Raises:
        ValueError: On a bad name.
        LabError: When the controller does not stop.
        CommandError: When OVS cannot be reached.
    """
    folder = run_dir(name)
    with locked(folder / LOCK_FILE):
        _down_locked(name, quiet)
    if purge:
        shutil.rmtree(folder, ignore_errors=True)


