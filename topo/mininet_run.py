"""Run the lab on Mininet (``topo.mininet_lab``) with the gateway app, through Mininet's API.

Run it with the system Python, which Debian's ``mininet`` package is installed for (the
project's ``.venv`` does not see it), from the repo root, as root::

    sudo /usr/bin/python3 -m topo.mininet_run --clients 3 [--name NAME] [--pptp]
        [--policy open|strict] [--public-ips K] [--no-alg] [--app PATH]
        [--option NAME=VALUE] [--openflow-port P --rest-port Q] [--timeout S] [--serve]

It writes the app's configuration for lab ``NAME`` (``topo.lab.render_config``: the
inside ports ``NAME-c<i>``, the outside port ``NAME-srv``), starts the app as
``topo.lab`` starts it (the ``.venv``'s ``ryu-manager``), builds
``topo.mininet_lab.PptpLab`` with Mininet (switch ``br-NAME`` on the userspace datapath,
OpenFlow 1.3, the app as its remote controller), and waits until the switch is
connected and the app's pipeline is installed. Then:

- by default it opens the Mininet CLI (``mininet> c1 ping -c 2 srv``); ``exit`` or the
  end of input ends the lab;
- with ``--serve`` it reads JSON commands on stdin, one a line, and answers each with one
  JSON line on stdout (for tests; see ``serve``);
- with ``--pptp`` it first starts pptpd (with the pppd stand-in) in ``srv`` and
  pptp-linux in every client, through the host objects (``host.popen``): Mininet's hosts
  live in unnamed namespaces, which ``ip netns exec`` cannot enter.

The default lab, ``lab``, uses ``topo.lab``'s default names and ports (``br-lab``,
``lab-c1`` .., OpenFlow on 127.0.0.1:6653, REST on 127.0.0.1:8080), so the commands of
docs/lab.md (``python -m topo.display server-map``) work unchanged; any other name gets
two free ports of 127.0.0.1, picked as ``topo.lab`` picks them. Nothing starts while the
bridge ``br-NAME``, a port name of the lab or a chosen TCP port is in use: Mininet
deletes an existing bridge of its switch's name before it makes its own.

The lab's files go to ``/run/pptp-alg-mininet/`` (``/run/pptp-alg-mininet-NAME/`` for
another name): ``gateway.conf``, ``ryu.log``, ``ryu.pid``, the app's store and, under
``peers/``, each peer's files. ``topo.lab`` does not list these labs.

On the way out (``exit``, end of input, ``stop``, SIGTERM, SIGHUP, an error) it stops
the peers it started (by PID), the network (``net.stop()``: this lab's bridge, links and
node shells only) and the app, and leaves the folder with its logs. It never calls
Mininet's cleanup (``mn -c``), which deletes every bridge on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from alg.errors import ConfigError
from ryu_apps import switch
from topo import lab, mininet_lab, peers
from topo.netns import CommandError
from topo.standin_ppp import StandinConfig

REPO = Path(__file__).resolve().parent.parent
#: The Python that Debian's ``mininet`` package is installed for.
SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_RUN_DIR = Path("/run/pptp-alg-mininet")
CONFIG_FILE = "gateway.conf"
LOG_FILE = "ryu.log"
PID_FILE = "ryu.pid"
PEERS_DIR = "peers"
SERVER_IP = lab.SERVER_IP
#: Seconds a peer helper gets to report that its peer runs.
PEER_READY_TIMEOUT = 30.0
#: Seconds a stopping process gets before the next, harder signal.
STOP_GRACE = 10.0

_PEER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class RunError(RuntimeError):
    """The Mininet lab could not be started, or a command for it failed."""


def run_dir(name: str = lab.DEFAULT_NAME) -> Path:
    """The folder of Mininet lab ``name``: ``/run/pptp-alg-mininet`` or ``...-NAME``."""
    if lab.check_name(name) == lab.DEFAULT_NAME:
        return DEFAULT_RUN_DIR
    return DEFAULT_RUN_DIR.with_name(f"{DEFAULT_RUN_DIR.name}-{name}")


def plan(
    clients: int,
    policy: str = "open",
    public_ips: int = 1,
    alg: bool = True,
    app: str | os.PathLike[str] = lab.DEFAULT_APP,
    *,
    name: str = lab.DEFAULT_NAME,
    options: dict[str, str] | None = None,
) -> lab.LabState:
    """Describe Mininet lab ``name`` as a ``topo.lab.LabState``, its files in its folder.

    The ports, bridge and addresses are those ``topo.lab`` plans for lab ``name``; the
    namespaces it names do not exist (Mininet's hosts are unnamed). The TCP ports are the
    default lab's, or 0 until ``MininetLab.start`` picks them.

    Raises:
        ValueError: On an argument out of range or a bad name.
    """
    state = lab.plan(clients, policy, public_ips, alg, app, name=name, options=options,
                     gre_demux=False)
    folder = run_dir(name)
    state.run_dir = str(folder)
    state.state_path = ""
    state.config_path = str(folder / CONFIG_FILE)
    state.log_path = str(folder / LOG_FILE)
    state.pid_path = str(folder / PID_FILE)
    return state


def _signal_pids(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _stop_process(proc: subprocess.Popen[Any], others: Sequence[int] = ()) -> None:
    """Stop ``proc`` (SIGTERM, then SIGKILL), then any of ``others`` still alive (SIGKILL).

    ``others`` are PIDs this module started below ``proc``, recorded before.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE)
    _signal_pids([pid for pid in others if lab._alive(pid)], signal.SIGKILL)


def _taken_ports() -> set[int]:
    """The TCP ports of the default lab and of every lab ``topo.lab`` recorded."""
    taken = {switch.OPENFLOW_PORT, switch.REST_PORT}
    for other in lab.labs():
        recorded = lab.read_state(other)
        if recorded is not None:
            taken |= {recorded.openflow_port, recorded.rest_port}
    return taken


def _read_json_line(stream: IO[bytes], timeout: float) -> dict[str, Any] | None:
    """Read one JSON line from ``stream`` within ``timeout`` seconds (None: EOF or time up)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            return None
        line = stream.readline()
        if not line:
            return None
        if line.lstrip().startswith(b"{"):
            data: dict[str, Any] = json.loads(line)
            return data


@dataclass
class PeerHelper:
    """A ``peer`` helper running in a Mininet host, and the peer it started there.

    Attributes:
        peer_id: The name the caller gave it.
        kind: ``pptpd`` or ``pptp``.
        host: The Mininet host's name.
        popen: The helper (``python -m topo.mininet_run peer ...`` under ``mnexec``).
        info: What the helper reported when its peer ran (paths, PIDs).
    """

    peer_id: str
    kind: str
    host: str
    popen: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    def ask(self, timeout: float = 10.0) -> dict[str, Any]:
        """The peer's status, from the helper (see ``peer_status``)."""
        if self.popen.poll() is not None or self.popen.stdin is None:
            raise RunError(f"peer {self.peer_id}: its helper exited ({self.popen.returncode})")
        assert self.popen.stdout is not None
        self.popen.stdin.write(b"status\n")
        self.popen.stdin.flush()
        reply = _read_json_line(self.popen.stdout, timeout)
        if reply is None:
            raise RunError(f"peer {self.peer_id}: no status within {timeout} s")
        return reply

    def stop(self) -> None:
        """End of input tells the helper to stop its peer; signals if it does not."""
        below = peers.descendants(self.popen.pid)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_GRACE)
        _stop_process(self.popen, below)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class MininetLab:
    """Mininet lab ``state.name``: the app, the Mininet network and the peers in it.

    Args:
        state: The lab, from ``plan``.
        ports: The app's OpenFlow and REST ports; None for the default lab's, or free ones
            for another lab.
        quiet: Do not print progress on stderr.
    """

    def __init__(self, state: lab.LabState, ports: tuple[int, int] | None = None,
                 quiet: bool = True):
        self.state = state
        self.quiet = quiet
        self.net: Any = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.peers: dict[str, PeerHelper] = {}
        self._ports = ports

    # ------------------------------------------------------------------------- start

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(f"mininet lab {self.state.name}: {message}", file=sys.stderr, flush=True)

    def _in_the_way(self) -> list[str]:
        state = self.state
        found = []
        if lab._bridge_exists(state.bridge):
            found.append(f"bridge {state.bridge}")
        found += [f"interface {port}" for port in state.ports
                  if Path("/sys/class/net", port).exists()]
        return found

    def _use_ports(self) -> None:
        """Give the app its TCP ports; call with ``topo.lab.PORTS_LOCK_PATH`` held."""
        state = self.state
        if self._ports is not None:
            state.use_ports(*self._ports)
        elif state.name == lab.DEFAULT_NAME:
            state.use_ports(switch.OPENFLOW_PORT, switch.REST_PORT)
        else:
            state.use_ports(*lab.pick_ports(_taken_ports()))
        for port, what in ((state.openflow_port, "OpenFlow"), (state.rest_port, "REST")):
            if lab._listening(port):
                raise RunError(f"TCP port {port} ({what}) is taken (`ss -ltnp sport = :{port}` "
                               f"shows by what); another --name gets other ports")

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        child = self.controller
        log = self.state.log_path
        while True:
            if child is not None and child.poll() is not None:
                raise RunError(f"the controller exited with status {child.returncode} ({what})"
                               f"\n--- {log} ---\n{lab._log_tail(log)}")
            if ready():
                return
            if time.monotonic() >= deadline:
                raise RunError(f"timed out waiting for {what}\n--- {log} ---\n"
                               f"{lab._log_tail(log)}")
            time.sleep(0.2)

    def _build_net(self) -> None:
        from mininet.net import Mininet  # type: ignore[import-not-found]
        from mininet.node import OVSSwitch, RemoteController  # type: ignore[import-not-found]

        state = self.state

        def controller(name: str) -> Any:
            return RemoteController(name, ip=lab.OFP_HOST, port=state.openflow_port)

        # Mininet.init() would raise machine-wide limits (fs.file-max, kernel.pty.max, the
        # root namespace's TCP buffers) for every process on the machine; a lab of a few
        # hosts needs none of it, and root was checked by ``main``.
        Mininet.inited = True
        topo = mininet_lab.PptpLab(state.clients, name=state.name,
                                   dpid=f"{state.datapath_id:016x}")
        self.net = Mininet(topo=topo, switch=OVSSwitch, controller=controller, build=False,
                           cleanup=False, autoSetMacs=False, listenPort=None)
        self.net.build()
        for port in state.ports:
            subprocess.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{port}.disable_ipv6=1"],
                           capture_output=True, check=False, timeout=10)
        self.net.start()

    def start(self, timeout: float = 30.0) -> None:
        """Write the app's configuration, start the app, build and start the network.

        Returns when the switch is connected to the app and the app's pipeline is
        installed. On failure, whatever was started stays for ``stop``.

        Raises:
            RunError: When something is in the way, the app is missing, exits or is not
                ready in time.
        """
        state = self.state
        if not Path(state.app).is_file():
            raise RunError(f"the Ryu app {state.app} does not exist")
        blocking = self._in_the_way()
        if blocking:
            raise RunError(
                f"{', '.join(blocking)} exist(s): Mininet would delete a bridge of that name "
                f"and cannot make those interfaces; stop whatever uses lab name "
                f"{state.name} (`python -m topo.lab down --name {state.name}`, if it is a "
                f"topo.lab lab) or choose another --name")
        folder = Path(state.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for file in lab.GATEWAY_STATE_FILES:
            (folder / file).unlink(missing_ok=True)
        with lab._flocked(lab.PORTS_LOCK_PATH):
            self._use_ports()
            config = lab.render_config(state).split("\n", 1)[1]
            Path(state.config_path).write_text(
                f"# Written by topo.mininet_run for Mininet lab {state.name}.\n{config}")
            self._say(f"starting ryu-manager with {state.app} (OpenFlow "
                      f"{state.openflow_port}, REST {state.rest_port})")
            deadline = time.monotonic() + timeout
            if not lab._manager(state.framework).exists():
                raise RunError(f"{lab._manager(state.framework)} does not exist: run "
                               f"`bash scripts/setup.sh` first")
            self.controller = lab._start_controller(state)
            state.controller_pid = self.controller.pid
            self._wait(f"ryu-manager to listen on {lab.OFP_HOST}:{state.openflow_port}",
                       lambda: lab._listening(state.openflow_port), deadline)
        self._say(f"building {state.bridge} and {state.clients + 1} hosts with Mininet")
        self._build_net()
        self._wait("the switch to connect to the controller", lambda: lab._connected_to(state),
                   deadline)
        self._wait("the app's pipeline flows", lambda: lab._pipeline_installed(state.bridge, None),
                   deadline)
        state.phase = "up"
        self._say(f"up: REST {state.rest_url}, log {state.log_path}")

    # ------------------------------------------------------------------------- use

    def host(self, name: str) -> Any:
        """The Mininet host ``name`` (``c<i>`` or ``srv``).

        Raises:
            RunError: When there is no such host.
        """
        if self.net is None or name not in {h.name for h in self.net.hosts}:
            raise RunError(f"no host {name!r}")
        return self.net.get(name)

    def describe(self) -> dict[str, Any]:
        """What runs, where: for the caller of ``serve`` and for people."""
        state = self.state
        hosts = {}
        for host in (self.net.hosts if self.net is not None else []):
            intf = host.defaultIntf()
            hosts[host.name] = {"pid": host.pid, "intf": str(intf), "ip": host.IP(),
                                "mac": host.MAC()}
        return {
            "name": state.name, "bridge": state.bridge, "datapath_id": state.datapath_id,
            "ports": state.ports, "openflow_port": state.openflow_port,
            "rest_port": state.rest_port, "rest_url": state.rest_url,
            "controller_pid": state.controller_pid, "config_path": state.config_path,
            "log_path": state.log_path, "run_dir": state.run_dir,
            "public_ips": state.public_ips, "server_ip": state.server_ip, "hosts": hosts,
            "peers": {peer_id: {"kind": p.kind, "host": p.host, "helper_pid": p.popen.pid,
                                **p.info} for peer_id, p in self.peers.items()},
        }

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0) -> dict[str, Any]:
        """Run ``argv`` in ``host`` (``host.popen``) to its end.

        Returns:
            ``code``, ``stdout`` and ``stderr`` (``code`` is None when it timed out and
            was killed).
        """
        proc = self.host(host).popen(list(argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = None
        return {"code": code, "stdout": out.decode(errors="replace"),
                "stderr": err.decode(errors="replace")}

    def start_peer(self, kind: str, host: str, peer_id: str, args: Sequence[str]) -> dict[str, Any]:
        """Start a ``peer`` helper of ``kind`` in ``host``; return what it reported.

        Args:
            kind: ``pptpd`` or ``pptp``.
            host: The Mininet host.
            peer_id: A name for it (its files go to ``peers/<peer_id>``).
            args: More arguments of ``python -m topo.mininet_run peer KIND``.

        Raises:
            RunError: On a bad or used id, or when the peer does not start in time.
        """
        if not _PEER_ID.fullmatch(peer_id) or peer_id in self.peers:
            raise RunError(f"peer id {peer_id!r} is not valid or already used")
        node = self.host(host)
        folder = Path(self.state.run_dir) / PEERS_DIR / peer_id
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "topo.mininet_run", "peer", kind, "--run-dir", str(folder),
                *args]
        with open(folder / "helper.err", "wb") as err:
            popen = node.popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=err)
        helper = PeerHelper(peer_id, kind, host, popen)
        self.peers[peer_id] = helper
        assert popen.stdout is not None
        ready = _read_json_line(popen.stdout, PEER_READY_TIMEOUT)
        if ready is None:
            helper.stop()
            errors = (folder / "helper.err").read_text(errors="replace")[-3000:]
            raise RunError(f"peer {peer_id} ({kind} in {host}) did not start:\n{errors}")
        helper.info = ready
        self._say(f"{kind} runs in {host} (peer {peer_id}, files in {folder})")
        return ready

    def peer(self, peer_id: str) -> PeerHelper:
        """The peer helper called ``peer_id``.

        Raises:
            RunError: When there is none.
        """
        try:
            return self.peers[peer_id]
        except KeyError:
            raise RunError(f"no peer {peer_id!r}") from None

    # ------------------------------------------------------------------------- stop

    def stop(self) -> list[str]:
        """Stop everything this lab started, each step even when an earlier one failed.

        Order: the peers (by PID), the network (``net.stop()``, then the shell of its
        remote-controller node, which ``net.stop()`` leaves), the app. Should the bridge
        or a port of the lab still exist, it is removed: the lab made sure neither
        existed before it started.

        Returns:
            What failed, for people (empty when everything went).
        """
        problems: list[str] = []

        def step(what: str, action: Callable[[], None]) -> None:
            try:
                action()
            except Exception as exc:
                problems.append(f"{what}: {type(exc).__name__}: {exc}")

        for helper in list(self.peers.values()):
            step(f"stopping peer {helper.peer_id}", helper.stop)
        net = self.net
        if net is not None:
            self._say(f"stopping the network ({self.state.bridge})")
            step("net.stop()", net.stop)
            for node in net.controllers:
                step(f"ending controller node {node.name}", node.terminate)
            self.net = None
        controller = self.controller
        if controller is not None:
            self._say(f"stopping ryu-manager (pid {controller.pid})")
            step("stopping ryu-manager",
                 lambda: lab._stop_controller(controller.pid, self.state.config_path, True))
            Path(self.state.pid_path).unlink(missing_ok=True)
        if net is not None or controller is not None:
            step("removing what is left of the bridge", self._remove_leftovers)
        return problems

    def _remove_leftovers(self) -> None:
        state = self.state
        if lab._bridge_exists(state.bridge):
            lab._vsctl("--if-exists", "del-br", state.bridge)
        for port in state.ports:
            if Path("/sys/class/net", port).exists():
                subprocess.run(["ip", "link", "del", port], capture_output=True, timeout=10,
                               check=False)


# ----------------------------------------------------------------------------- serve


def serve(mlab: MininetLab, inp: IO[str], out: IO[str]) -> None:
    """Answer JSON commands, one a line, until ``stop`` or the end of input.

    First writes ``{"event": "ready", ...}`` (``MininetLab.describe``). Each command is
    an object with ``op``; each answer has ``ok`` (and ``error`` when it is false):

    - ``{"op": "describe"}``: the ready message's fields again;
    - ``{"op": "run", "host": "c1", "argv": [...], "timeout": 30}``: run a command in a
      host to its end: ``code``, ``stdout``, ``stderr``;
    - ``{"op": "pptpd", "host": "srv", "id": "srv", "count": 40, "interval": 0.25,
      "echo": false}``: start pptpd with the pppd stand-in (listening on the server's
      address); answers with its files and PIDs;
    - ``{"op": "pptp", "host": "c1", "id": "c1", "server": "203.0.113.1", "tag": "c1",
      "count": 40, "interval": 0.25}``: start pptp-linux with its stand-in;
    - ``{"op": "peer", "id": "c1"}``: a peer's status (``topo.mininet_run peer``);
    - ``{"op": "stop-peer", "id": "c1"}``: stop a peer;
    - ``{"op": "stop"}``: answer, then end (the caller of ``serve`` stops the lab).

    Args:
        mlab: The running lab.
        inp: Where the commands come from.
        out: Where the answers go.
    """

    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    def standin_args(request: dict[str, Any]) -> list[str]:
        args = []
        for key in ("count", "interval"):
            if key in request:
                args += [f"--{key}", str(request[key])]
        return args

    def pptpd(request: dict[str, Any]) -> dict[str, Any]:
        args = ["--listen", str(request.get("listen", SERVER_IP)), *standin_args(request)]
        if request.get("echo"):
            args.append("--echo")
        host = str(request.get("host", lab.SERVER_HOST))
        return mlab.start_peer("pptpd", host, str(request.get("id", host)), args)

    def pptp(request: dict[str, Any]) -> dict[str, Any]:
        host = str(request["host"])
        args = ["--server", str(request.get("server", SERVER_IP)),
                "--tag", str(request.get("tag", host)), *standin_args(request)]
        return mlab.start_peer("pptp", host, str(request.get("id", host)), args)

    def stop_peer(request: dict[str, Any]) -> dict[str, Any]:
        helper = mlab.peer(str(request["id"]))
        helper.stop()
        del mlab.peers[helper.peer_id]
        return {"returncode": helper.popen.returncode}

    ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "describe": lambda request: mlab.describe(),
        "run": lambda request: mlab.run(str(request["host"]), [str(a) for a in request["argv"]],
                                        float(request.get("timeout", 30))),
        "pptpd": pptpd,
        "pptp": pptp,
        "peer": lambda request: mlab.peer(str(request["id"])).ask(),
        "stop-peer": stop_peer,
        "stop": lambda request: {},
    }
    emit({"event": "ready", **mlab.describe()})
    for line in inp:
        if not line.strip():
            continue
        op = None
        try:
            request = json.loads(line)
            op = request.get("op")
            if op not in ops:
                raise RunError(f"unknown op {op!r}; known: {', '.join(ops)}")
            emit({"ok": True, **ops[op](request)})
        except Exception as exc:
            emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        if op == "stop":
            return


def interact(mlab: MininetLab) -> None:
    """Tell people where things are, then open the Mininet CLI until ``exit``."""
    from mininet.cli import CLI  # type: ignore[import-not-found]

    state = mlab.state
    display = (f".venv/bin/python -m topo.display --rest {state.rest_url}")
    print("\n".join([
        f"lab {state.name} is up on Mininet: switch {state.bridge}, hosts "
        f"{', '.join(h.name for h in mlab.net.hosts)}",
        f"  the gateway app: ryu-manager pid {state.controller_pid}, log {state.log_path}",
        f"  its display, from another shell: {display} server-map | session-table | counters",
        "  try: c1 ping -c 2 srv    (exit or Ctrl-D stops the lab)",
    ]), flush=True)
    CLI(mlab.net)


# ----------------------------------------------------------------------------- peer


def peer_status(peer: peers.PeerProcess) -> dict[str, Any]:
    """A peer's status: alive, PIDs, output and syslog tails, the stand-ins' counters."""
    status: dict[str, Any] = {
        "alive": peer.alive(), "pids": peer.pids(),
        "output": peer.output()[-4000:], "syslog": peer.syslog()[-4000:],
    }
    if isinstance(peer, peers.PptpServer):
        status["standins"] = peer.standins()
    if isinstance(peer, peers.PptpClient):
        status["status"] = peer.status()
        status["calls"] = peer.calls()
    return status


def _raise_exit(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def peer_main(argv: Sequence[str]) -> int:
    """``python -m topo.mininet_run peer pptpd|pptp ...``: run one peer where it is started.

    The runner starts this in a Mininet host (``host.popen``), so the peer runs in the
    host's network namespace: ``topo.peers`` with no namespace name runs it right here.
    Writes one JSON line when the peer runs (its files and PIDs), one JSON status line
    (``peer_status``) for each ``status`` line read, and stops the peer at the end of
    input or on SIGTERM, SIGHUP or SIGINT.
    """
    parser = argparse.ArgumentParser(prog="python -m topo.mininet_run peer")
    parser.add_argument("kind", choices=("pptpd", "pptp"))
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--listen", default=SERVER_IP, help="pptpd: the address to listen on")
    parser.add_argument("--server", default=SERVER_IP, help="pptp: the server to call")
    parser.add_argument("--tag", default="c", help="pptp: the tag of its stand-in's frames")
    parser.add_argument("--count", type=int, default=40, help="frames each stand-in sends")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between frames")
    parser.add_argument("--echo", action="store_true",
                        help="pptpd: its stand-ins answer each tagged frame")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_exit)
    peer: peers.PeerProcess
    # No namespace name: ``topo.peers`` runs the peer in this process's namespace
    # (``topo.netns.ns_argv(None, ...)``), which is the Mininet host's.
    if args.kind == "pptpd":
        peer = peers.start_pptpd(None, args.listen, args.run_dir, standin=StandinConfig(
            tag="srv{pid}", count=args.count, interval=args.interval, echo=args.echo))
        paths = {"status_dir": str(peer.status_dir)}
    else:
        client = peers.start_pptp_client(None, args.server, args.run_dir, tag=args.tag,
                                         standin=StandinConfig(count=args.count,
                                                               interval=args.interval))
        peer = client
        paths = {"status_path": str(client.status_path)}
    try:
        print(json.dumps({"event": "ready", "kind": args.kind, "pid": peer.pid,
                          "output_path": str(peer.output_path),
                          "syslog_path": str(peer.syslog_path or ""), **paths}), flush=True)
        for line in sys.stdin:
            if line.strip() == "status":
                print(json.dumps(peer_status(peer)), flush=True)
    finally:
        peer.stop()
    return 0


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (see the module's documentation).

    Returns:
        0 when the lab ran and was stopped cleanly, 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["peer"]:
        return peer_main(argv[1:])
    parser = argparse.ArgumentParser(prog="/usr/bin/python3 -m topo.mininet_run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=3, help="1 .. 64 (default 3)")
    parser.add_argument("--name", default=lab.DEFAULT_NAME,
                        help=f"the lab's name (default {lab.DEFAULT_NAME}): 1 to "
                             f"{lab.MAX_NAME_LENGTH} of a-z 0-9")
    parser.add_argument("--policy", choices=lab.POLICIES, default="open")
    parser.add_argument("--public-ips", type=int, default=1, help="number of public addresses")
    parser.add_argument("--no-alg", action="store_true", help="turn the PPTP ALG off")
    parser.add_argument("--app", default=lab.DEFAULT_APP,
                        help=f"the Ryu app (default {lab.DEFAULT_APP}, relative to the repo)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="one more [nat] option for the app (repeatable)")
    parser.add_argument("--openflow-port", type=int, help="the app's OpenFlow port")
    parser.add_argument("--rest-port", type=int, help="the app's REST port")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the app and the switch (default 30)")
    parser.add_argument("--pptp", action="store_true",
                        help="start pptpd in srv and pptp-linux in every client")
    parser.add_argument("--serve", action="store_true",
                        help="JSON commands on stdin, answers on stdout, instead of the CLI")
    args = parser.parse_args(argv)
    if (args.openflow_port is None) != (args.rest_port is None):
        parser.error("give both --openflow-port and --rest-port, or neither")
    if os.geteuid() != 0:
        print("topo.mininet_run: needs root (Mininet and OVS)", file=sys.stderr)
        return 1
    if not mininet_lab.HAVE_MININET:
        print(f"topo.mininet_run: {sys.executable} cannot import mininet: install Debian's "
              f"mininet package (`bash scripts/setup.sh`) and run this with /usr/bin/python3",
              file=sys.stderr)
        return 1
    protocol_out = sys.stdout
    if args.serve:
        # Answers go to the real stdout alone; anything else written to fd 1 (Mininet,
        # the children) goes to stderr.
        protocol_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    try:
        state = plan(args.clients, args.policy, args.public_ips, not args.no_alg, args.app,
                     name=args.name, options=dict(o.partition("=")[::2] for o in args.option))
    except (ValueError, ConfigError) as exc:
        print(f"topo.mininet_run: {exc}", file=sys.stderr)
        return 1
    ports = None if args.openflow_port is None else (args.openflow_port, args.rest_port)
    mlab = MininetLab(state, ports, quiet=False)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    status = 0
    try:
        mlab.start(args.timeout)
        if args.pptp:
            mlab.start_peer("pptpd", lab.SERVER_HOST, lab.SERVER_HOST, ["--listen", SERVER_IP])
            for i in range(1, state.clients + 1):
                mlab.start_peer("pptp", f"c{i}", f"c{i}", ["--server", SERVER_IP,
                                                          "--tag", f"c{i}"])
        if args.serve:
            serve(mlab, sys.stdin, protocol_out)
        else:
            interact(mlab)
    except (RunError, lab.LabError, CommandError) as exc:
        print(f"topo.mininet_run: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("topo.mininet_run: interrupted", file=sys.stderr)
        status = 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        problems = mlab.stop()
        for problem in problems:
            print(f"topo.mininet_run: stopping: {problem}", file=sys.stderr)
        if problems:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
