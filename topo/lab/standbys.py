"""A lab of several controllers on etcd (``up --controllers N --store etcd``).

``start`` runs after ``up`` built the bridges: the lab's etcd cluster of three members
on 127.0.0.1 (``topo.etcd_cluster``, data and logs in ``etcd/`` of the lab's folder),
one etcd proxy per controller (``topo.etcd_proxy``: ``etcd-proxy-c<I>.*``), and the
controllers, each ``pptp-alg-gateway`` with a file of its own (``gateway-c<I>.conf``:
its ports, ``store = etcd``, ``etcd_endpoints`` its proxy's ports, ``etcd_cluster`` the
lab's name, ``controller_id`` ``c<I>``), started through ``topo.watch`` so that its exit
status is recorded (``ryu-c<I>.exit``). Every bridge gets every controller as a target.
``start`` returns when some controller is master of every gateway, every bridge has the
pipeline, and every controller reports every gateway connected.

On a running lab, under the lab's lock: ``kill_controller`` sends SIGKILL to one
controller (by index, or the master of a gateway); ``start_controller`` starts one that
no longer runs with the same configuration; ``cut_controller`` makes its proxy close
and refuse its etcd connections (SIGUSR1), or forward them again (SIGUSR2). ``roles``,
``current_master`` and ``wait_master`` read the controllers' ``GET /pptp-alg/gateways``;
``problems`` and ``describe`` serve ``topo.lab.health``; ``stop`` (``down``) stops the
controllers, the proxies and the members by PID, each only if it is the lab's, and
removes the members' data.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from alg import config as options
from topo import etcd_cluster, process, watch
from topo.lab import controller, ovs, ports
from topo.lab.names import (
    DEFAULT_NAME,
    ETCD_DIR,
    ETCD_MEMBERS,
    GATEWAY_COMMAND,
    LOCK_FILE,
    MAX_CONTROLLERS,
    OFP_HOST,
    REPO,
    STATE_FILE,
    LabError,
    command,
    run_dir,
    say,
)
from topo.lab.state import (
    ControllerState,
    EtcdMemberState,
    GatewayState,
    LabState,
    locked,
    read_state,
    render_config,
    write_state,
)

#: Seconds a REST request to a controller may take.
REST_TIMEOUT = 1.0
#: Seconds a proxy or the watcher of a controller has to write its file after its start.
STARTED_WITHIN = 10.0
#: Seconds between two looks while waiting.
POLL = 0.2

_watchers: dict[int, subprocess.Popen[bytes]] = {}
"""The watchers (``topo.watch``) this process started, by their controller's PID."""
_proxies: dict[int, subprocess.Popen[bytes]] = {}
"""The proxies this process started, by PID."""


# ------------------------------------------------------------------ processes


def read_pid_file(path: str | Path) -> int | None:
    """The PID in ``path``, None when there is no (readable) one."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def running(one: ControllerState) -> bool:
    """Whether controller ``one`` runs (its recorded PID is a live ``pptp-alg-gateway``
    started with its configuration file)."""
    return one.pid is not None and controller.is_controller(one.pid, one.config_path)


def exit_status(one: ControllerState) -> int | None:
    """How controller ``one`` ended, as ``topo.watch`` recorded it (None: no record)."""
    return watch.read_exit(one.exit_path)


def is_proxy(pid: int, state_path: str) -> bool:
    """Whether ``pid`` is a live ``topo.etcd_proxy`` writing its state to ``state_path``."""
    if not process.alive(pid):
        return False
    argv = process.cmdline(pid)
    return "topo.etcd_proxy" in argv and state_path in argv


def proxy_state(one: ControllerState) -> dict[str, Any]:
    """What controller ``one``'s proxy last wrote (empty when nothing)."""
    try:
        data = json.loads(Path(one.proxy_state_path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_cut(one: ControllerState) -> bool:
    """Whether controller ``one``'s proxy is cut (it closes every etcd connection)."""
    return proxy_state(one).get("cut") is True


def member_runs(member: EtcdMemberState) -> bool:
    """Whether ``member`` runs (its recorded PID is the ``etcd`` of its data folder)."""
    return member.pid is not None and etcd_cluster.is_member(member.pid, member.data_dir)


def _reap(pid: int | None) -> None:
    """Poll the watcher or proxy of ``pid`` if this process started it (no zombie)."""
    for started in (_watchers.get(pid or -1), _proxies.get(pid or -1)):
        if started is not None:
            started.poll()


# ------------------------------------------------------------------ REST


def app_gateway(state: LabState, gateway: str | None = None) -> str:
    """The app's name of the lab's gateway ``gateway`` (``g<j>``; None: ``g1``):
    ``default`` in a lab of one bridge, else ``g<j>`` itself.

    Raises:
        ValueError: When the lab has no such gateway.
    """
    state.gateway(gateway or "g1")
    return (gateway or "g1") if state.gateways else options.DEFAULT_GATEWAY


def rest_gateways(state: LabState, one: ControllerState) -> list[dict[str, Any]] | None:
    """The gateways controller ``one`` reports (``GET /pptp-alg/gateways``), None when it
    does not answer."""
    request = urllib.request.Request(f"{one.rest_url}/pptp-alg/gateways")
    token = state.options.get("rest_token", "")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=REST_TIMEOUT) as answer:
            data = json.load(answer)
    except (OSError, ValueError):
        return None
    found = data.get("gateways") if isinstance(data, dict) else None
    return [g for g in found if isinstance(g, dict)] if isinstance(found, list) else None


def roles(state: LabState, one: ControllerState) -> dict[str, str] | None:
    """Gateway name -> the role controller ``one`` reports (``master``, ``standby`` ...;
    ``?`` when it reports none); None when it does not answer."""
    found = rest_gateways(state, one)
    if found is None:
        return None
    return {str(g.get("name")): str(g.get("role") or "?") for g in found}


def current_master(state: LabState, gateway: str | None = None) -> int | None:
    """The index of the controller that is master of ``gateway`` (``g<j>``; None:
    ``g1``), None when none is.

    A running controller that says ``master`` is it; when two say so (a deposed one may
    not know yet), the one the switch reports as its master.

    Raises:
        ValueError: When the lab has no such gateway.
    """
    name = app_gateway(state, gateway)
    claims = [one for one in state.controllers if running(one)
              and (roles(state, one) or {}).get(name) == "master"]
    if len(claims) <= 1:
        return claims[0].index if claims else None
    bridge = state.gateway(gateway or "g1").bridge
    switch_masters = {link.target for link in ovs.controller_links(bridge)
                      if link.role == "master"}
    chosen = [one for one in claims if one.target in switch_masters]
    return chosen[0].index if len(chosen) == 1 else None


def controller_line(state: LabState, one: ControllerState) -> str:
    """``controller 1 (pid 1234, c1): default master`` (with several gateways, each
    with its role); one that does not run says ``not running`` and how it ended."""
    cut = ", cut from etcd" if is_cut(one) else ""
    head = f"controller {one.index} (pid {one.pid}, {one.controller_id}{cut})"
    if not running(one):
        status = exit_status(one)
        return (f"{head}: not running" if status is None
                else f"{head}: not running ({watch.describe_exit(status)})")
    found = roles(state, one)
    if found is None:
        return f"{head}: running, REST {one.rest_url} not answering"
    return f"{head}: " + ", ".join(f"{name} {role}" for name, role in found.items())


# ------------------------------------------------------------------ waits


def _failure(state: LabState, message: str, ones: Collection[ControllerState] = ()
             ) -> LabError:
    """A failed wait: ``message``, the log's tail of each of ``ones``, how to clean up."""
    tails = "".join(f"\n--- last lines of {one.log_path} ---\n"
                    f"{controller.log_tail(one.log_path, 20)}" for one in ones)
    return LabError(f"{message}{tails}\n--- the lab is left as it is; "
                    f"`{command('down', state.name)}` removes it ---")


def _gone(one: ControllerState) -> str:
    status = exit_status(one)
    return (f"{GATEWAY_COMMAND} of controller {one.index} (pid {one.pid}) is not running"
            + ("" if status is None else f" ({watch.describe_exit(status)})"))


def _wait(state: LabState, ones: Collection[ControllerState], deadline: float, what: str,
          ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it holds; fail when one of ``ones`` stops or at ``deadline``.

    Raises:
        LabError: With the logs' tails of ``ones``.
    """
    while True:
        for one in ones:
            _reap(one.pid)
            if not running(one):
                raise _failure(state, f"{_gone(one)} ({what})", [one])
        if ready():
            return
        if time.monotonic() >= deadline:
            raise _failure(state, f"timed out waiting for {what}", ones)
        time.sleep(POLL)


def _serves_every_gateway(state: LabState, one: ControllerState) -> bool:
    """Whether ``one`` answers and reports every gateway connected to its switch."""
    found = rest_gateways(state, one)
    return found is not None and len(found) == state.bridges and all(
        g.get("connected") is True for g in found)


def switch_connected(bridge: str) -> bool:
    """Whether OVSDB reports ``bridge`` connected to one of its controllers (it reports
    a new connection within about 5 s)."""
    return any(link.connected for link in ovs.controller_links(bridge))


def ready(state: LabState) -> bool:
    """Whether some controller is master of every gateway, every bridge has the
    pipeline and is connected as OVSDB reports it, and every running controller reports
    every gateway connected."""
    return (all(current_master(state, g.name) is not None for g in state.all_gateways)
            and all(ovs.pipeline_installed(g.bridge, None) and switch_connected(g.bridge)
                    for g in state.all_gateways)
            and all(_serves_every_gateway(state, one)
                    for one in state.controllers if running(one)))


def wait_pipeline(state: LabState, bridge: str, since: float, deadline: float) -> None:
    """Wait until ``bridge`` has pipeline flows all added after ``since``
    (``time.monotonic()``), by whichever controller is master, and OVSDB reports it
    connected.

    Raises:
        LabError: At ``deadline``, with the logs' tails of the running controllers.
    """
    while not (ovs.pipeline_installed(bridge, since) and switch_connected(bridge)):
        if time.monotonic() >= deadline:
            raise _failure(state, f"timed out waiting for the pipeline on {bridge}, added "
                                  f"by the master",
                           [one for one in state.controllers if running(one)])
        time.sleep(POLL)


def wait_master(name: str = DEFAULT_NAME, gateway: str | None = None, timeout: float = 30.0,
                but: Collection[int] = ()) -> int:
    """Wait until some controller of lab ``name`` (none of ``but``) is master of gateway
    ``gateway`` (``g<j>``; None: ``g1``).

    Returns:
        Its index.

    Raises:
        ValueError: On a bad name, or a gateway the lab does not have.
        LabError: When the lab is not on etcd, or at ``timeout`` (with each
            controller's line).
    """
    deadline = time.monotonic() + timeout
    while True:
        state = _etcd_state(name)
        found = current_master(state, gateway)
        if found is not None and found not in but:
            return found
        if time.monotonic() >= deadline:
            lines = "\n".join(controller_line(state, one) for one in state.controllers)
            raise LabError(f"no controller of lab {name}"
                           + (f" but {', '.join(map(str, sorted(but)))}" if but else "")
                           + f" is master of gateway {app_gateway(state, gateway)} after "
                             f"{timeout:g} s:\n{lines}")
        time.sleep(POLL)


# ------------------------------------------------------------------ starting


def check_etcd() -> str:
    """The ``etcd`` binary.

    Raises:
        LabError: When it is not installed.
    """
    binary = etcd_cluster.etcd_binary()
    if binary is None:
        raise LabError("no etcd binary: a lab on etcd needs Debian's etcd-server "
                       "(scripts/setup.sh installs it)")
    return binary


def start_etcd(state: LabState, quiet: bool) -> None:
    """Start the lab's members afresh (their data folders emptied) and wait until every
    one is healthy; their PIDs go to ``state`` (and its file) as they start.

    Raises:
        LabError: When one ends or is not healthy within ``HEALTHY_WITHIN`` seconds.
    """
    check_etcd()
    folder = Path(state.run_dir) / ETCD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    members = [etcd_cluster.Member(m.name, m.client_url, m.peer_url, Path(m.data_dir),
                                   Path(m.log_path), pid_file=Path(m.pid_path))
               for m in state.etcd]
    for member in members:
        shutil.rmtree(member.data_dir, ignore_errors=True)
    cluster = etcd_cluster.Cluster(members, folder, token=f"pptp-alg-lab-{state.name}-"
                                   f"{int(state.created)}", own_session=True)
    say(quiet, f"lab {state.name}: starting etcd ({', '.join(m.client_url for m in members)})")
    for member, recorded in zip(members, state.etcd, strict=True):
        cluster.start(member)
        assert member.process is not None
        recorded.pid = member.process.pid
    write_state(state)
    try:
        cluster.wait_healthy()
    except RuntimeError as exc:
        raise _failure(state, f"the lab's etcd cluster did not start: {exc}") from exc


def start_proxy(state: LabState, one: ControllerState) -> None:
    """Start controller ``one``'s etcd proxy and wait until it listens.

    Raises:
        LabError: When it ends or does not record its state in time.
    """
    argv = [sys.executable, "-m", "topo.etcd_proxy", "--state", one.proxy_state_path]
    for port, member in zip(one.proxy_ports, state.etcd, strict=True):
        argv += ["--forward", f"{port}={OFP_HOST}:{member.client_port}"]
    Path(one.proxy_state_path).unlink(missing_ok=True)
    with open(one.proxy_log_path, "ab") as log:
        started = subprocess.Popen(
            argv, cwd=REPO, env=controller.repo_environment(), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _proxies[started.pid] = started
    one.proxy_pid = started.pid
    Path(one.proxy_pid_path).write_text(f"{started.pid}\n")
    deadline = time.monotonic() + STARTED_WITHIN
    while proxy_state(one).get("pid") != started.pid:
        if started.poll() is not None or time.monotonic() >= deadline:
            raise _failure(state, f"the etcd proxy of controller {one.index} (pid "
                                  f"{started.pid}) did not start:\n"
                                  f"{controller.log_tail(one.proxy_log_path, 10)}")
        time.sleep(0.05)


def start_process(state: LabState, one: ControllerState) -> None:
    """Start controller ``one`` (through ``topo.watch``) with its configuration file; the
    log of its previous run is kept as ``.1``. Its PID goes to ``one.pid``.

    Raises:
        LabError: When the watcher does not record the PID in time.
    """
    log_path = Path(one.log_path)
    controller.keep_previous_log(log_path)
    Path(one.pid_path).unlink(missing_ok=True)
    Path(one.exit_path).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "topo.watch", one.pid_path, one.exit_path, "--",
            *controller.command_line(state, one.openflow_port, one.config_path)]
    with open(log_path, "wb") as log:
        watcher = subprocess.Popen(
            argv, cwd=REPO, env=controller.environment(state), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + STARTED_WITHIN
    while (pid := read_pid_file(one.pid_path)) is None:
        if watcher.poll() is not None or time.monotonic() >= deadline:
            raise _failure(state, f"controller {one.index} did not start", [one])
        time.sleep(0.05)
    _watchers[pid] = watcher
    one.pid = pid


def _wait_listening(state: LabState, one: ControllerState, deadline: float) -> None:
    _wait(state, [one], deadline,
          f"controller {one.index} to listen on {OFP_HOST}:{one.openflow_port}",
          lambda: ports.listening(one.openflow_port))


def start(state: LabState, timeout: float, quiet: bool) -> None:
    """Start the lab's etcd cluster, proxies and controllers, point every bridge at every
    controller, and wait until the lab is ready (``ready``). ``state`` (and its file)
    records every PID as it is known; the phase is ``starting`` meanwhile.

    Args:
        state: The lab, its ports picked and its bridges built.
        timeout: Seconds the controllers get, from their start, to be ready.
        quiet: Do not print progress on stderr.

    Raises:
        LabError: When something does not start or is not ready in time (the lab is
            then left for ``down``).
    """
    state.phase = "starting"
    start_etcd(state, quiet)
    for one in state.controllers:
        Path(one.config_path).write_text(render_config(state, controller=one))
        start_proxy(state, one)
    write_state(state)
    say(quiet, f"lab {state.name}: starting {len(state.controllers)} {GATEWAY_COMMAND} "
               f"({state.framework}) with {state.app}")
    started = time.monotonic()
    for one in state.controllers:
        start_process(state, one)
        write_state(state)
    deadline = started + timeout
    for one in state.controllers:
        _wait_listening(state, one, deadline)
    targets = [one.target for one in state.controllers]
    for gateway in state.all_gateways:
        ovs.set_controllers(gateway.bridge, targets)
    _wait(state, state.controllers, deadline,
          "a master of every gateway, its pipeline on every bridge, and every controller "
          "connected to every bridge", lambda: ready(state))


# ------------------------------------------------------------------ commands


def _etcd_state(name: str) -> LabState:
    """The state of lab ``name``, which must be a lab on etcd.

    Raises:
        ValueError: On a bad name.
        LabError: When there is no state file or the lab is not on etcd.
    """
    state = read_state(name)
    if state is None:
        raise LabError(f"lab {name} has no state file {run_dir(name) / STATE_FILE}: is it "
                       f"up? (`{command('status', name)}`)")
    if state.store != "etcd" or not state.controllers:
        again = command("up", name, "--replace", "--controllers N", "--store etcd", "...")
        raise LabError(f"lab {name} has one controller on sqlite: `{again}` builds a lab "
                       f"of several on etcd")
    return state


def kill_controller(name: str = DEFAULT_NAME, index: int | None = None, master: bool = False,
                    gateway: str | None = None, quiet: bool = True) -> ControllerState:
    """Kill one controller of lab ``name`` with SIGKILL: ``index``, or with ``master``
    the master of ``gateway`` (``g<j>``; None: ``g1``).

    Returns:
        The controller killed (as recorded; it no longer runs).

    Raises:
        ValueError: On a bad name, index or gateway.
        LabError: When the lab is not on etcd, no controller is master, or the
            controller does not run or does not end.
    """
    if (index is None) != master:
        raise ValueError("name one controller: by its index, or as the master")
    _etcd_state(name)  # refused before the lock, which would make the lab's folder
    with locked(run_dir(name) / LOCK_FILE):
        state = _etcd_state(name)
        if index is None:
            found = current_master(state, gateway)
            if found is None:
                raise LabError(f"no controller of lab {name} is master of gateway "
                               f"{app_gateway(state, gateway)} now")
            index = found
        one = state.controller_at(index)
        if not running(one):
            raise LabError(_gone(one))
        assert one.pid is not None
        process.signal_pid(one.pid, signal.SIGKILL)
        deadline = time.monotonic() + controller.STOP_GRACE
        while process.alive(one.pid):
            _reap(one.pid)
            if time.monotonic() >= deadline:
                raise LabError(f"controller {one.index} (pid {one.pid}) does not end after "
                               f"SIGKILL")
            time.sleep(0.05)
        _reap(one.pid)
    say(quiet, f"lab {name}: killed controller {one.index} (pid {one.pid}, "
               f"{one.controller_id}) with SIGKILL")
    return one


def start_controller(name: str = DEFAULT_NAME, index: int = 1, timeout: float = 30.0,
                     quiet: bool = True) -> ControllerState:
    """Start controller ``index`` of lab ``name``, which no longer runs, with its
    configuration; it comes up as a standby when another is master.

    Returns when it listens and reports every gateway connected to its switch.

    Returns:
        The controller, with its new PID (also in the state file).

    Raises:
        ValueError: On a bad name or index.
        LabError: When the lab is not on etcd or not up, the controller runs, or it dies
            or is not connected in time.
    """
    _etcd_state(name)
    with locked(run_dir(name) / LOCK_FILE):
        state = _etcd_state(name)
        one = state.controller_at(index)
        if running(one):
            raise LabError(f"controller {index} of lab {name} runs (pid {one.pid}): "
                           f"`{command('kill-controller', name, f'--index {index}')}` "
                           f"stops it")
        if state.phase != "up":
            raise LabError(f"lab {name} is not up (phase {state.phase})")
        Path(one.config_path).write_text(render_config(state, controller=one))
        say(quiet, f"lab {name}: starting controller {index} ({one.controller_id})")
        started = time.monotonic()
        start_process(state, one)
        write_state(state)
        deadline = started + timeout
        _wait_listening(state, one, deadline)
        _wait(state, [one], deadline, f"controller {index} to report every gateway "
                                      f"connected", lambda: _serves_every_gateway(state, one))
    say(quiet, f"lab {name}: controller {index} runs (pid {one.pid}, log {one.log_path})")
    return one


def cut_controller(name: str = DEFAULT_NAME, index: int = 1, cut: bool = True,
                   quiet: bool = True, timeout: float = 5.0) -> ControllerState:
    """Cut controller ``index`` of lab ``name`` from etcd (its proxy closes its
    connections and refuses new ones), or with ``cut`` False connect it again; its
    switch connections stay.

    Raises:
        ValueError: On a bad name or index.
        LabError: When the lab is not on etcd, or the proxy does not run or does not
            answer within ``timeout`` seconds.
    """
    _etcd_state(name)
    with locked(run_dir(name) / LOCK_FILE):
        state = _etcd_state(name)
        one = state.controller_at(index)
        pid = one.proxy_pid
        if pid is None or not is_proxy(pid, one.proxy_state_path):
            raise LabError(f"the etcd proxy of controller {index} (pid {pid}) is not running")
        process.signal_pid(pid, signal.SIGUSR1 if cut else signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while is_cut(one) != cut:
            if time.monotonic() >= deadline:
                raise LabError(f"the etcd proxy of controller {index} (pid {pid}) did not "
                               f"{'cut' if cut else 'restore'} within {timeout:g} s")
            time.sleep(0.05)
    say(quiet, f"lab {name}: controller {index} ({one.controller_id}) is "
               + ("cut from etcd" if cut else "connected to etcd again"))
    return one


# ------------------------------------------------------------------ status, down


def problems(state: LabState, gateways: Sequence[GatewayState] | None = None) -> list[str]:
    """What keeps lab ``state`` on etcd from being up (its phase aside): a bridge of
    ``gateways`` (default: all) missing or connected to none of its controllers, no
    controller running, fewer than a majority of the members running."""
    found = []
    for gateway in state.all_gateways if gateways is None else gateways:
        if not ovs.bridge_exists(gateway.bridge):
            found.append(f"bridge {gateway.bridge} does not exist")
        elif not switch_connected(gateway.bridge):
            found.append(f"{gateway.bridge} is not connected to any of {state.controller}")
    if not any(running(one) for one in state.controllers):
        found.append(f"no {GATEWAY_COMMAND} of the lab is running")
    alive = sum(member_runs(member) for member in state.etcd)
    if alive <= len(state.etcd) // 2:
        found.append(f"etcd has no majority: {alive} of {len(state.etcd)} members run")
    return found


def bridge_line(state: LabState, gateway_bridge: str, datapath_id: int) -> str:
    """What ``describe`` says of one bridge of a lab on etcd: each target as the switch
    reports it."""
    links = ovs.controller_links(gateway_bridge) if ovs.bridge_exists(gateway_bridge) else []
    shown = ", ".join(f"{link.target} " + (f"connected, {link.role or '?'}" if link.connected
                                           else "not connected") for link in links)
    connected = any(link.connected for link in links)
    return (f"  bridge {gateway_bridge} (datapath ID {datapath_id:#x}): controllers "
            f"{shown or 'none'}; "
            f"{ovs.pipeline_flows(gateway_bridge) if connected else 0} pipeline flow(s)")


def describe(state: LabState) -> list[str]:
    """The lines of ``status`` on the etcd members and the controllers of lab ``state``."""
    lines = []
    for member in state.etcd:
        how = "running" if member_runs(member) else "not running"
        lines.append(f"  etcd {member.name} (pid {member.pid}) {member.client_url}: {how}, "
                     f"log {member.log_path}")
    for one in state.controllers:
        lines.append(f"  {controller_line(state, one)}")
        lines.append(f"    OpenFlow {OFP_HOST}:{one.openflow_port}, REST {one.rest_url}, "
                     f"etcd through its proxy (pid {one.proxy_pid}) on "
                     f"{','.join(map(str, one.proxy_ports))}; log {one.log_path}, "
                     f"config {one.config_path}")
    return lines


def _skeleton(name: str, state: LabState | None) -> LabState | None:
    """The controllers and members whose files ``stop`` looks at: those ``state``
    records, or without a state those of the most controllers a lab has (their PID
    files alone then say what runs); None for a lab on sqlite."""
    if state is not None:
        return state if state.store == "etcd" else None
    folder = run_dir(name)
    skeleton = LabState(clients=0, policy="open", alg=True, public_ips=[], namespaces=[],
                        addresses={}, namespace_ports={}, ports={}, inside_ports=[],
                        outside_port="", name=name, store="etcd")
    skeleton.controllers = [ControllerState(i, f"c{i}") for i in range(1, MAX_CONTROLLERS + 1)]
    skeleton.etcd = [EtcdMemberState(f"m{i}") for i in range(1, ETCD_MEMBERS + 1)]
    skeleton.place(folder)
    return skeleton


def _pids(recorded: int | None, pid_path: str) -> list[int]:
    return sorted({pid for pid in (recorded, read_pid_file(pid_path)) if pid is not None})


def remains(name: str, state: LabState | None) -> list[str]:
    """What of lab ``name``'s controllers, proxies and etcd members runs, for people."""
    lab = _skeleton(name, state)
    if lab is None:
        return []
    found = [f"its controller {one.index} (pid {pid})" for one in lab.controllers
             for pid in _pids(one.pid, one.pid_path)
             if controller.is_controller(pid, one.config_path)]
    found += [f"the etcd proxy of its controller {one.index} (pid {pid})"
              for one in lab.controllers for pid in _pids(one.proxy_pid, one.proxy_pid_path)
              if is_proxy(pid, one.proxy_state_path)]
    found += [f"its etcd member {m.name} (pid {pid})" for m in lab.etcd
              for pid in _pids(m.pid, m.pid_path) if etcd_cluster.is_member(pid, m.data_dir)]
    return found


def stop(name: str, state: LabState | None, quiet: bool) -> None:
    """Stop lab ``name``'s controllers, then their proxies, then the etcd members, each
    by PID (in ``state`` and in its PID file) and only if that process is the lab's;
    remove their configuration, PID, exit and state files and the members' data.

    Raises:
        LabError: When one does not stop.
    """
    lab = _skeleton(name, state)
    if lab is None:
        return
    stuck: list[str] = []
    for one in lab.controllers:
        for pid in _pids(one.pid, one.pid_path):
            if controller.is_controller(pid, one.config_path):
                say(quiet, f"lab {name}: stopping controller {one.index} (pid {pid})")
                if not process.terminate(pid, controller.STOP_GRACE, controller.STOP_GRACE):
                    stuck.append(f"controller {one.index} (pid {pid})")
            watcher = _watchers.pop(pid, None)
            if watcher is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watcher.wait(controller.STOP_GRACE)
    for one in lab.controllers:
        for pid in _pids(one.proxy_pid, one.proxy_pid_path):
            if is_proxy(pid, one.proxy_state_path):
                say(quiet, f"lab {name}: stopping the etcd proxy of controller {one.index} "
                           f"(pid {pid})")
                if not process.terminate(pid, controller.STOP_GRACE, controller.STOP_GRACE,
                                         popen=_proxies.pop(pid, None)):
                    stuck.append(f"the etcd proxy of controller {one.index} (pid {pid})")
    for member in lab.etcd:
        for pid in _pids(member.pid, member.pid_path):
            if etcd_cluster.is_member(pid, member.data_dir):
                say(quiet, f"lab {name}: stopping etcd {member.name} (pid {pid})")
            if not etcd_cluster.stop_pid(pid, member.data_dir):
                stuck.append(f"etcd {member.name} (pid {pid})")
    if stuck:
        raise LabError(f"lab {name}: {', '.join(stuck)} does not stop")
    for one in lab.controllers:
        for path in (one.config_path, one.pid_path, one.exit_path, one.proxy_state_path,
                     one.proxy_pid_path):
            Path(path).unlink(missing_ok=True)
    for member in lab.etcd:
        shutil.rmtree(member.data_dir, ignore_errors=True)
        Path(member.pid_path).unlink(missing_ok=True)
