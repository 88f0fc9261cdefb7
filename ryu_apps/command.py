"""The ``pptp-alg-gateway`` command: the gateway app under its framework's own manager.

::

    pptp-alg-gateway --config-file /etc/pptp-alg/gateway.conf
    pptp-alg-gateway --help | --version | --manager-help

It chooses the framework (``ryu_apps.managers.choose``: ``PPTP_ALG_FRAMEWORK``, else Ryu
when it is installed, else os-ken) and runs that framework's application manager in this
process with the app ``ryu_apps.nat_gateway`` and every other argument as it is
(``--config-file``, ``--ofp-listen-host``, ``--ofp-tcp-listen-port``, ``--pid-file``,
``--log-file``..., and more applications to run beside the gateway): the ``main`` of
``ryu.cmd.manager`` or ``os_ken.cmd.manager``, what ``ryu-manager`` and
``osken-manager`` run. os-ken 4.x has neither the module nor the command: there
:func:`run_apps` does what that ``main`` did, around the framework's
``AppManager.run_apps``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ryu_apps.managers import (
    COMMAND,
    MANAGER_MODULES,
    PACKAGES,
    FrameworkError,
    Name,
    choose,
)

DISTRIBUTION = "pptp-alg-ovs"
"""The name this project is installed under."""
APP = "ryu_apps.nat_gateway"
"""The application the command runs by default."""
_DISTRIBUTIONS: dict[Name, str] = {"ryu": "ryu", "os-ken": "os-ken"}
HUB_TYPE = "OSKEN_HUB_TYPE"
"""os-ken's choice of green threads (``eventlet``) or native ones; the command sets
``eventlet`` unless the environment says otherwise."""

DESCRIPTION = f"""\
Run the PPTP ALG NAT gateway ({APP}) under the application manager of its
OpenFlow framework: os-ken, or Ryu when it is installed (PPTP_ALG_FRAMEWORK=ryu|os-ken
chooses when both are). Every argument but those below goes to the manager as it is.
The manager's own options, among them:

  --config-file FILE         the configuration file ([nat], [gateway:NAME]; see
                             gateway.conf.sample); repeatable
  --ofp-listen-host ADDRESS  where the switches connect (default: every address)
  --ofp-tcp-listen-port PORT the OpenFlow port (default 6653)
  --pid-file FILE            write the process's ID there
  --log-file FILE            log there instead of to stderr
  APP ...                    more applications beside the gateway (e.g.
                             ryu.app.ofctl_rest, os_ken.app.ofctl_rest)

{COMMAND} --manager-help lists all of them.
"""


@dataclass(frozen=True)
class Plan:
    """What the command runs: the framework, its manager's module and its arguments."""

    framework: Name
    module: str
    args: list[str]


def version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``not installed``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def version_line(framework: Name) -> str:
    """``pptp-alg-gateway X.Y.Z (FRAMEWORK A.B.C)``."""
    return (f"{COMMAND} {version(DISTRIBUTION)} "
            f"({framework} {version(_DISTRIBUTIONS[framework])})")


def parser() -> argparse.ArgumentParser:
    """The command's own options; the rest is the manager's."""
    parse = argparse.ArgumentParser(
        prog=COMMAND, description=DESCRIPTION, add_help=False, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{COMMAND} [--config-file FILE] [MANAGER OPTIONS] [APP ...]")
    parse.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parse.add_argument("--version", action="store_true",
                       help="show the version of the gateway and of its framework, and exit")
    parse.add_argument("--manager-help", action="store_true",
                       help="show the help of the framework's manager, and exit")
    parse.add_argument("--app", default=APP, metavar="MODULE|FILE",
                       help=f"the application run as the gateway (default {APP})")
    return parse


def plan(argv: Sequence[str], framework: Name, app: str = APP) -> Plan:
    """The manager's module and arguments for ``argv`` (the manager's arguments)."""
    return Plan(framework, MANAGER_MODULES[framework], [*argv, app])


def run_apps(framework: Name, args: Sequence[str]) -> None:
    """What the framework's manager command does, for a release without its module (os-ken
    4.x): parse the options, start logging, monkey-patch, write the PID file, then run the
    applications with the framework's ``AppManager.run_apps``."""
    package = PACKAGES[framework]
    hub = importlib.import_module(f"{package}.lib.hub")
    hub.patch(thread=False)
    cfg = importlib.import_module(f"{package}.cfg")
    log = importlib.import_module(f"{package}.log")
    log.early_init_log(logging.DEBUG)
    importlib.import_module(f"{package}.flags")
    app_manager = importlib.import_module(f"{package}.base.app_manager")
    importlib.import_module(f"{package}.controller.controller")  # the --ofp-* options
    conf = cfg.CONF
    conf.register_cli_opts([
        cfg.MultiStrOpt("app", positional=True, default=[], help="applications to run"),
        cfg.StrOpt("pid-file", default=None, help="the file to write the process's ID to"),
    ])
    conf(args=list(args), prog=COMMAND, project=package, version=version_line(framework))
    log.init_log()
    hub.patch(thread=True)
    if conf.pid_file:
        Path(conf.pid_file).write_text(str(os.getpid()))
    app_manager.AppManager.run_apps(list(conf.app))


def manager_module(framework: Name) -> ModuleType | None:
    """The framework's manager module (importing it monkey-patches), or None when this
    release has none."""
    name = MANAGER_MODULES[framework]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (0 when the manager returns)."""
    args, rest = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.help:
        parser().print_help()
        return 0
    try:
        framework = choose()
    except FrameworkError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    if args.version:
        print(version_line(framework))
        return 0
    # os-ken 4.x runs its hub on native threads unless told otherwise; the app's HTTP
    # API and green threads are eventlet's.
    os.environ.setdefault(HUB_TYPE, "eventlet")
    chosen = plan(rest, framework, args.app)
    manager = manager_module(framework)
    how = chosen.module if manager is not None else f"{PACKAGES[framework]}.base.app_manager"
    if args.manager_help:
        chosen = Plan(framework, chosen.module, ["--help"])
    else:
        print(f"{version_line(framework)}: {how}, app {args.app}", file=sys.stderr,
              flush=True)
    if manager is not None:
        manager.main(args=chosen.args, prog=COMMAND)
    else:
        run_apps(framework, chosen.args)
    return 0


__all__ = ["APP", "DISTRIBUTION", "Plan", "main", "plan", "version_line"]


if __name__ == "__main__":
    sys.exit(main())
