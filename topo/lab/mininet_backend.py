"""The lab on Mininet: ``MininetLab`` runs the app, the Mininet network and the peers.

The network is ``topo.mininet_lab.PptpLab``, built through Mininet's Python API (switch
``br-NAME``, and one more per gateway of a lab of several bridges, on the userspace
datapath, OpenFlow 1.3, the app as their remote controller);
the app is started and stopped as ``topo.lab`` starts and stops it
(``topo.lab.controller``). Peers run in the Mininet hosts through a helper
(``python -m topo.mininet_run peer``, ``topo.lab.mininet_cli.peer_main``) started with
``host.popen``: Mininet's hosts live in unnamed namespaces, which ``ip netns exec``
cannot enter. Mininet itself is imported only when the network is built.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ryu_apps import switch
from topo import mininet_lab, process
from topo.lab import controller, ovs
from topo.lab.names import (
    DEFAULT_NAME,
    GATEWAY_COMMAND,
    OFP_HOST,
    PORTS_LOCK_PATH,
    REPO,
    mininet_run_dir,
)
from topo.lab.ports import check_free, pick_ports, taken_ports
from topo.lab.state import LabState, clear_gateway_state, locked, render_config

#: The Python that Debian's ``mininet`` package is installed for.
SYSTEM_PYTHON = "/usr/bin/python3"
PEERS_DIR = "peers"
#: Seconds a peer helper gets to report that its peer runs.
PEER_READY_TIMEOUT = 30.0
#: Seconds a stopping process gets before the next, harder signal.
STOP_GRACE = 10.0

_PEER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class RunError(RuntimeError):
    """The Mininet lab could not be started, or a command for it failed."""


def place(state: LabState) -> LabState:
    """Give lab ``state`` (from ``topo.lab.plan``) the files of Mininet lab ``state.name``.

    They go to the Mininet lab's folder (``topo.lab.mininet_run_dir``), without a state
    file: ``topo.lab`` does not list these labs. The ports, bridge and addresses stay
    those ``topo.lab`` plans for the name; the namespaces it names do not exist
    (Mininet's hosts are unnamed). The TCP ports are the default lab's, or 0 until
    ``MininetLab.start`` picks them.

    Returns:
        The state.
    """
    state.place(mininet_run_dir(state.name))
    state.state_path = ""
    return state


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


def remote_controller(name: str, ip: str, port: int) -> Any:
    """Mininet's ``RemoteController`` for the app, without its check of the port.

    That check runs ``telnet`` in a shell of Mininet's and reads what it prints, which is
    the controller's OpenFlow HELLO: binary, with a random transaction ID that Mininet's
    UTF-8 decoding of the shell's output fails on when it is not UTF-8 (seen in CI:
    ``UnicodeDecodeError`` ... ``0xc6``). The check only warns, and the lab waits for the
    controller itself.
    """
    from mininet.node import RemoteController  # type: ignore[import-not-found]

    class Remote(RemoteController):  # type: ignore[misc]
        def checkListening(self) -> None:  # noqa: N802 (Mininet's name)
            """Nothing: see :func:`remote_controller`."""

    return Remote(name, ip=ip, port=port)


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
        """End of input tells the helper to stop its peer; signals if it does not.

        Then SIGKILL goes to whatever the helper had started below it and left.

        Raises:
            RunError: When the helper does not stop.
        """
        below = process.descendants(self.popen.pid)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_GRACE)
        if not process.terminate(self.popen.pid, STOP_GRACE, STOP_GRACE, popen=self.popen):
            raise RunError(f"peer {self.peer_id}: its helper (pid {self.popen.pid}) does not "
                           f"stop")
        for pid in below:
            if process.alive(pid):
                process.signal_pid(pid, signal.SIGKILL)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class MininetLab:
    """Mininet lab ``state.name``: the app, the Mininet network and the peers in it.

    Args:
        state: The lab, from ``topo.lab.plan`` and ``place``.
        ports: The app's OpenFlow and REST ports; None for the default lab's, or free ones
            for another lab.
        quiet: Do not print progress on stderr.
    """

    def __init__(self, state: LabState, ports: tuple[int, int] | None = None,
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

    def _use_ports(self) -> None:
        """Give the app its TCP ports; call with ``topo.lab.PORTS_LOCK_PATH`` held.

        Raises:
            LabError: When one of them is taken.
        """
        state = self.state
        if self._ports is not None:
            state.use_ports(*self._ports)
        elif state.name == DEFAULT_NAME:
            state.use_ports(switch.OPENFLOW_PORT, switch.REST_PORT)
        else:
            state.use_ports(*pick_ports(taken_ports()))
        check_free(state)

    def _build_net(self) -> None:
        from mininet.net import Mininet  # type: ignore[import-not-found]
        from mininet.node import OVSSwitch

        state = self.state

        def remote(name: str) -> Any:
            return remote_controller(name, OFP_HOST, state.openflow_port)

        # Mininet.init() would raise machine-wide limits (fs.file-max, kernel.pty.max, the
        # root namespace's TCP buffers) for every process on the machine; a lab of a few
        # hosts needs none of it, and root was checked by ``main``.
        Mininet.inited = True
        gateways = state.all_gateways
        topo = mininet_lab.PptpLab(state.clients, name=state.name,
                                   dpid=f"{state.datapath_id:016x}", bridges=len(gateways),
                                   dpids=[f"{g.datapath_id:016x}" for g in gateways[1:]])
        self.net = Mininet(topo=topo, switch=OVSSwitch, controller=remote, build=False,
                           cleanup=False, autoSetMacs=False, listenPort=None)
        self.net.build()
        for port in (port for g in gateways for port in g.ports):
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
            LabError: When a TCP port of the app is taken.
        """
        state = self.state
        if not Path(state.app).is_file():
            raise RunError(f"the Ryu app {state.app} does not exist")
        blocking = ovs.existing(state)
        if blocking:
            raise RunError(
                f"{', '.join(blocking)} exist(s): Mininet would delete a bridge of that name "
                f"and cannot make those interfaces; stop whatever uses lab name "
                f"{state.name} (`python -m topo.lab down --name {state.name}`, if it is a "
                f"topo.lab lab) or choose another --name")
        folder = Path(state.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        clear_gateway_state(folder)
        with locked(PORTS_LOCK_PATH):
            self._use_ports()
            Path(state.config_path).write_text(render_config(
                state, f"Written by topo.mininet_run for Mininet lab {state.name}."))
            self._say(f"starting {GATEWAY_COMMAND} with {state.app} (OpenFlow "
                      f"{state.openflow_port}, REST {state.rest_port})")
            deadline = time.monotonic() + timeout
            gateway = controller.gateway_command()
            if not gateway.exists():
                raise RunError(f"{gateway} does not exist: run `bash scripts/setup.sh` first")
            self.controller = controller.start(state)
            state.controller_pid = self.controller.pid
            controller.wait_listening(state, self.controller, deadline, _failure)
        gateways = state.all_gateways
        self._say(f"building {', '.join(g.bridge for g in gateways)} and "
                  f"{(state.clients + 1) * len(gateways)} hosts with Mininet")
        self._build_net()
        controller.wait_ready(state, self.controller, deadline, fail=_failure)
        state.phase = "up"
        self._say(f"up: REST {state.rest_url}, log {state.log_path}")

    # ------------------------------------------------------------------------- use

    def host(self, name: str) -> Any:
        """The Mininet host ``name`` (``c<i>`` or ``srv``; ``g<j>c<i>``, ``g<j>srv`` of
        gateway ``j`` >= 2).

        Raises:
            RunError: When there is no such host.
        """
        if self.net is None or name not in {h.name for h in self.net.hosts}:
            raise RunError(f"no host {name!r}")
        return self.net.get(name)

    def describe(self) -> dict[str, Any]:
        """What runs, where: for the caller of ``serve`` and for people.

        The keys name gateway 1's parts (``bridge``, ``ports`` ...); a lab of several
        bridges also has ``gateways``: each gateway's name, bridge, datapath ID, ports,
        hosts and REST prefix.
        """
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
            **({"gateways": [{
                "name": g.name, "bridge": g.bridge, "datapath_id": g.datapath_id,
                "ports": g.ports, "rest_prefix": g.rest_prefix,
                "hosts": [mininet_lab.host_name(host, g.number)
                          for host in [f"c{i}" for i in range(1, g.clients + 1)]
                          + [mininet_lab.SERVER_HOST]],
            } for g in state.gateways]} if state.gateways else {}),
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
        env = controller.repo_environment()
        argv = [sys.executable, "-m", "topo.mininet_run", "peer", kind, "--run-dir",
                str(folder), *args]
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
        remote-controller node, which ``net.stop()`` leaves), the app. Should a bridge
        or a port of the lab still exist, it is removed: the lab made sure none existed
        before it started. Then the settings of the gateways' zones are removed.

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
        app = self.controller
        if app is not None:
            self._say(f"stopping {GATEWAY_COMMAND} (pid {app.pid})")
            step(f"stopping {GATEWAY_COMMAND}",
                 lambda: controller.stop(app.pid, self.state.config_path, True))
            Path(self.state.pid_path).unlink(missing_ok=True)
        if net is not None or app is not None:
            for gateway in self.state.all_gateways:
                step(f"removing what is left of {gateway.bridge}",
                     functools.partial(ovs.remove, gateway.bridge, gateway.ports))
                step(f"forgetting the zone of {gateway.bridge} in the connection tracker",
                     functools.partial(ovs.forget_zone, gateway.ct_zone))
        return problems


def _failure(state: LabState, message: str) -> RunError:
    """The failure of a wait for the app in Mininet lab ``state``, with the log's tail."""
    return RunError(f"{message}\n--- {state.log_path} ---\n{controller.log_tail(state.log_path)}")
