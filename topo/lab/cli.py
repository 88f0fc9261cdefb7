"""The lab: client and server namespaces around one OVS bridge that the gateway app drives.

The command line of ``python -m topo.lab`` (see ``topo.lab`` for its commands).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from alg.errors import ConfigError
from topo import display
from topo.lab import health, netns_backend, restarts, standbys
from topo.lab.names import (
    DEFAULT_APP,
    DEFAULT_FRAMEWORK,
    DEFAULT_NAME,
    EXIT_NOT_UP,
    FRAMEWORKS,
    MAX_BRIDGES,
    MAX_CLIENTS,
    MAX_CONTROLLERS,
    MAX_NAME_LENGTH,
    POLICIES,
    STORES,
    LabError,
    check_name,
    command,
    gateway_number,
    run_dir,
)
from topo.lab.state import labs, read_state
from topo.netns import CommandError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on failure, 3 when ``status`` finds no lab.
    """
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument(
        "--name", default=DEFAULT_NAME,
        help=f"the lab's name (default {DEFAULT_NAME}): 1 to {MAX_NAME_LENGTH} of a-z 0-9")
    one_gateway = argparse.ArgumentParser(add_help=False)
    one_gateway.add_argument(
        "--gateway", metavar=f"g1..g{MAX_BRIDGES}",
        help="one gateway of a lab of several bridges (g1 is the first)")
    parser = argparse.ArgumentParser(prog="python -m topo.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", parents=[named], help="build a lab and start its controller")
    p_up.add_argument("--clients", type=int, required=True,
                      help=f"1 .. {MAX_CLIENTS}, of each gateway")
    p_up.add_argument("--bridges", type=int, default=1,
                      help=f"1 .. {MAX_BRIDGES} bridges, each a gateway with the same "
                           f"addresses, one controller for all (default 1)")
    p_up.add_argument("--controllers", type=int, default=1,
                      help=f"1 .. {MAX_CONTROLLERS} controller processes, each connected to "
                           f"every bridge, one master of each (default 1; more need "
                           f"--store etcd)")
    p_up.add_argument("--store", choices=STORES, default="sqlite",
                      help="where the app's records go: a SQLite file per gateway (default), "
                           "or the lab's own etcd cluster of three members, which every "
                           "controller reaches through a proxy of its own")
    p_up.add_argument("--replace", action="store_true",
                      help="take the lab of this name down first (otherwise `up` refuses)")
    p_up.add_argument("--policy", choices=POLICIES, default="open")
    p_up.add_argument("--public-ips", type=int, default=1, help="number of public addresses")
    p_up.add_argument("--no-alg", action="store_true", help="turn the PPTP ALG off")
    p_up.add_argument("--no-gre-demux", action="store_true",
                      help="no GRE demultiplexer: shared pairs' GRE through the controller")
    p_up.add_argument("--framework", choices=FRAMEWORKS, default=DEFAULT_FRAMEWORK,
                      help=f"the framework pptp-alg-gateway runs the app on "
                           f"(default {DEFAULT_FRAMEWORK})")
    p_up.add_argument("--app", default=DEFAULT_APP,
                      help=f"the Ryu app (default {DEFAULT_APP}, relative to the repo root)")
    p_up.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the controller (default 30)")
    p_up.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                      help="one more [nat] option for the app, e.g. gre_idle=60, for every "
                           "gateway (repeatable)")
    p_down = sub.add_parser("down", parents=[named], help="remove a lab")
    p_down.add_argument("--purge", action="store_true",
                        help="also delete the lab's folder with its logs")
    p_restart_controller = sub.add_parser(
        "restart-controller", parents=[named],
        help="stop a running lab's pptp-alg-gateway and start it again with the same "
             "configuration; the bridge keeps its flows")
    p_restart_switch = sub.add_parser(
        "restart-switch", parents=[named, one_gateway],
        help="make a running lab's bridge (and no other; gateway 1's unless --gateway) look "
             "like an ovs-vswitchd restart without saved flows: drop its controller "
             "connection, flows and meters, then connect it again")
    for p_restart in (p_restart_controller, p_restart_switch):
        p_restart.add_argument(
            "--timeout", type=float, default=30.0,
            help="seconds to wait until the switch is connected and the pipeline is back "
                 "(default 30)")
    p_kill = sub.add_parser(
        "kill-controller", parents=[named, one_gateway],
        help="kill one controller of a lab on etcd with SIGKILL: --index I, or --master "
             "(of gateway g1, or of --gateway)")
    which = p_kill.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the controller's index (1 .. N)")
    which.add_argument("--master", action="store_true", help="the master of the gateway")
    p_start = sub.add_parser(
        "start-controller", parents=[named],
        help="start a controller of a lab on etcd that no longer runs (a standby when "
             "another is master); returns when it is connected to every bridge")
    p_start.add_argument("--index", type=int, required=True, help="the controller's index")
    p_start.add_argument("--timeout", type=float, default=30.0,
                         help="seconds to wait until it is connected (default 30)")
    for verb, what in (("cut-controller", "cut a controller of a lab on etcd from etcd (its "
                                          "proxy closes and refuses its connections); its "
                                          "switch connections stay"),
                       ("uncut-controller", "connect a controller that was cut to etcd "
                                            "again")):
        p_cut = sub.add_parser(verb, parents=[named], help=what)
        p_cut.add_argument("--index", type=int, required=True,
                           help="the controller's index")
    p_wait = sub.add_parser(
        "wait-master", parents=[named, one_gateway],
        help="wait until some controller of a lab on etcd is master of gateway g1 (or "
             "--gateway); print its index")
    p_wait.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait (default 30)")
    sub.add_parser("status", parents=[named, one_gateway],
                   help="show a lab (or one gateway); exit 0 when up, 3 when not")
    sub.add_parser("list", help="the labs that have a state file, and whether they are up")
    p_display = sub.add_parser("display", parents=[named],
                               help="the gateway's display commands, from a lab")
    display.add_arguments(p_display)
    args = parser.parse_args(argv)
    name = getattr(args, "name", DEFAULT_NAME)
    gateway: str | None = getattr(args, "gateway", None)
    try:
        check_name(name)
        if gateway is not None:
            gateway_number(gateway)
    except ValueError as exc:
        print(f"topo.lab: {exc}", file=sys.stderr)
        return 1
    if args.command == "display":
        state = read_state(name)
        if state is not None:
            rest = state.rest_url
            if state.controllers:
                try:
                    index = standbys.current_master(state, gateway)
                except ValueError as exc:
                    print(f"topo.lab: {exc}", file=sys.stderr)
                    return 1
                rest = state.controller_at(index or 1).rest_url
        elif name == DEFAULT_NAME and gateway is None:
            rest = display.DEFAULT_REST
        else:
            print(f"topo.lab: lab {name} has no state file: is it up? "
                  f"(`{command('status', name)}`)", file=sys.stderr)
            return 1
        flags = ["--verbose"] if args.verbose else []
        if gateway is not None and state is not None:
            try:
                several = state.gateway(gateway).rest_prefix != display.PREFIX
            except ValueError as exc:
                print(f"topo.lab: {exc}", file=sys.stderr)
                return 1
            flags += ["--gateway", gateway] if several else []
        return display.main(["--rest", rest, args.view, *flags])

    if os.geteuid() != 0:
        print("topo.lab: needs root (namespaces and OVS)", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            extra = dict(item.partition("=")[::2] for item in args.option)
            netns_backend.up(args.clients, args.policy, args.public_ips, not args.no_alg,
                             timeout=args.timeout, app=args.app, quiet=False, name=name,
                             replace=args.replace, options=extra,
                             gre_demux=not args.no_gre_demux, framework=args.framework,
                             bridges=args.bridges, controllers=args.controllers,
                             store=args.store)
            print(health.describe(name)[1])
            return 0
        if args.command == "down":
            netns_backend.down(quiet=False, name=name, purge=args.purge)
            print(f"lab: down (name {name})")
            return 0
        if args.command in ("restart-controller", "restart-switch"):
            if gateway is not None:
                restarts.restart_switch(name=name, timeout=args.timeout, quiet=False,
                                        gateway=gateway)
            else:
                restart = (restarts.restart_controller if args.command == "restart-controller"
                           else restarts.restart_switch)
                restart(name=name, timeout=args.timeout, quiet=False)
            print(health.describe(name)[1])
            return 0
        if args.command == "kill-controller":
            standbys.kill_controller(name, index=args.index, master=args.master,
                                     gateway=gateway, quiet=False)
            return 0
        if args.command == "start-controller":
            standbys.start_controller(name, args.index, timeout=args.timeout, quiet=False)
            print(health.describe(name)[1])
            return 0
        if args.command in ("cut-controller", "uncut-controller"):
            standbys.cut_controller(name, args.index, cut=args.command == "cut-controller",
                                    quiet=False)
            return 0
        if args.command == "wait-master":
            print(standbys.wait_master(name, gateway, timeout=args.timeout))
            return 0
        if args.command == "list":
            for other in labs():
                print(f"{other:<{MAX_NAME_LENGTH}}  {'up' if health.status(other) else 'down':<4}  "
                      f"{run_dir(other)}")
            return 0
        is_up, text = health.describe(name) if gateway is None else health.describe(
            name, gateway=gateway)
        print(text)
        return 0 if is_up else EXIT_NOT_UP
    except (LabError, CommandError, ConfigError, ValueError) as exc:
        print(f"topo.lab: {exc}", file=sys.stderr)
        return 1


