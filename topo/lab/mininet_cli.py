"""Run the lab on Mininet (``topo.mininet_lab``) with the gateway app, through Mininet's API.

Run it with the system Python, which Debian's ``mininet`` package is installed for (the
project's ``.venv`` does not see it), from the repo root, as root::

    sudo /usr/bin/python3 -m topo.mininet_run --clients 3 [--name NAME] [--bridges K]
        [--pptp] [--policy open|strict] [--public-ips K] [--no-alg] [--app PATH]
        [--option NAME=VALUE] [--openflow-port P --rest-port Q] [--timeout S] [--serve]

It writes the app's configuration for lab ``NAME`` (``topo.lab.render_config``: the
inside ports ``NAME-c<i>``, the outside port ``NAME-srv``), starts the app as
``topo.lab`` starts it (the ``.venv``'s ``pptp-alg-gateway``), builds
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

With ``--bridges K`` (2 .. 9) there are K switches, one gateway each, all driven by the
one app: gateway ``j`` >= 2 has hosts ``g<j>c1`` .. ``g<j>cN`` and ``g<j>srv`` with the
same addresses, switch ``br-NAME-<j>`` and ports ``NAME-<j>c<i>``, ``NAME-<j>srv``, as
``topo.lab`` names them; ``--pptp`` starts the peers of every gateway.

The default lab, ``lab``, uses ``topo.lab``'s default names and ports (``br-lab``,
``lab-c1`` .., OpenFlow on 127.0.0.1:6653, REST on 127.0.0.1:8723), so the commands of
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
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from alg.errors import ConfigError
from topo import mininet_lab, peers
from topo.lab.mininet_backend import MininetLab, RunError, place
from topo.lab.names import (
    DEFAULT_APP,
    DEFAULT_NAME,
    GATEWAY_COMMAND,
    MAX_BRIDGES,
    MAX_NAME_LENGTH,
    POLICIES,
    SERVER_HOST,
    SERVER_IP,
    LabError,
)
from topo.lab.state import plan
from topo.netns import CommandError
from topo.standin_ppp import StandinConfig


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
        host = str(request.get("host", SERVER_HOST))
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
    bridges = [g.bridge for g in state.all_gateways]
    views = "server-map | session-table | counters"
    if state.gateways:
        views += f" --gateway g1 .. g{len(bridges)}"
    print("\n".join([
        f"lab {state.name} is up on Mininet: switch{'es' if len(bridges) > 1 else ''} "
        f"{', '.join(bridges)}, hosts {', '.join(h.name for h in mlab.net.hosts)}",
        f"  the gateway app: {GATEWAY_COMMAND} pid {state.controller_pid}, log "
        f"{state.log_path}",
        f"  its display, from another shell: {display} {views}",
        "  try: c1 ping -c 2 srv    (exit or Ctrl-D stops the lab)",
    ]), flush=True)
    CLI(mlab.net)


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
    parser.add_argument("--clients", type=int, default=3,
                        help="1 .. 64, of each gateway (default 3)")
    parser.add_argument("--bridges", type=int, default=1,
                        help=f"1 .. {MAX_BRIDGES} switches, each a gateway with the same "
                             f"addresses, one app for all (default 1)")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"the lab's name (default {DEFAULT_NAME}): 1 to "
                             f"{MAX_NAME_LENGTH} of a-z 0-9")
    parser.add_argument("--policy", choices=POLICIES, default="open")
    parser.add_argument("--public-ips", type=int, default=1, help="number of public addresses")
    parser.add_argument("--no-alg", action="store_true", help="turn the PPTP ALG off")
    parser.add_argument("--app", default=DEFAULT_APP,
                        help=f"the Ryu app (default {DEFAULT_APP}, relative to the repo)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="one more [nat] option for the app (repeatable)")
    parser.add_argument("--openflow-port", type=int, help="the app's OpenFlow port")
    parser.add_argument("--rest-port", type=int, help="the app's REST port")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the app and the switch (default 30)")
    parser.add_argument("--pptp", action="store_true",
                        help="start pptpd in srv and pptp-linux in every client (of every "
                             "gateway)")
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
        state = place(plan(args.clients, args.policy, args.public_ips, not args.no_alg,
                           args.app, name=args.name,
                           options=dict(o.partition("=")[::2] for o in args.option),
                           bridges=args.bridges))
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
            for gateway in state.all_gateways:
                server = mininet_lab.host_name(SERVER_HOST, gateway.number)
                mlab.start_peer("pptpd", server, server, ["--listen", SERVER_IP])
                for i in range(1, state.clients + 1):
                    client = mininet_lab.host_name(f"c{i}", gateway.number)
                    mlab.start_peer("pptp", client, client, ["--server", SERVER_IP,
                                                            "--tag", client])
        if args.serve:
            serve(mlab, sys.stdin, protocol_out)
        else:
            interact(mlab)
    except (RunError, LabError, CommandError) as exc:
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


