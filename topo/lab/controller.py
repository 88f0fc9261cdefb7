"""The lab's controller: the gateway app under ``pptp-alg-gateway``, the command an
installation has (``ryu_apps.command``), on Ryu or os-ken (``PPTP_ALG_FRAMEWORK``).

``start`` runs the command with the lab's configuration (its log in the lab's folder, its
PID in the PID file); ``stop`` stops it by PID, and only when that process is the lab's
controller; the waits poll until the switch is connected and the app's pipeline is
installed, and fail with the log's tail when the controller dies or time is up.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from alg.events import EntryKind
from ryu_apps import switch
from ryu_apps.managers import ENV
from topo import process
from topo.lab import ovs, ports
from topo.lab.names import (
    DEFAULT_APP,
    GATEWAY_COMMAND,
    OFP_HOST,
    REPO,
    LabError,
    command,
    say,
)
from topo.lab.state import LabState

#: Seconds the controller gets to end after SIGTERM, and again after SIGKILL.
STOP_GRACE = 5.0

#: How a wait tells of a controller that died or a time that is up.
Failure = Callable[[LabState, str], Exception]

_children: dict[int, subprocess.Popen[bytes]] = {}


def gateway_command() -> Path:
    """``pptp-alg-gateway``: beside this Python, else in ``.venv`` (``scripts/setup.sh``
    installs it there)."""
    beside = Path(sys.executable).with_name(GATEWAY_COMMAND)
    if beside.exists():
        return beside
    return REPO / ".venv" / "bin" / GATEWAY_COMMAND


def child(pid: int) -> subprocess.Popen[bytes] | None:
    """The controller of PID ``pid`` when this process started it, else None."""
    return _children.get(pid)


def running(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not; a child of this process is reaped)."""
    started = _children.get(pid)
    if started is not None:
        return started.poll() is None
    return process.alive(pid)


def is_controller(pid: int, config_path: str) -> bool:
    """Tell whether ``pid`` is a live ``pptp-alg-gateway`` started with ``config_path``."""
    if not running(pid):
        return False
    argv = process.cmdline(pid)
    return any(Path(arg).name == GATEWAY_COMMAND for arg in argv) and config_path in argv


def log_tail(log_path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of the controller's log, or why there are none."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return "(no controller log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(the controller log is empty)"


def repo_environment() -> dict[str, str]:
    """This process's environment with the repo root first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def command_line(state: LabState, openflow_port: int, config_path: str) -> list[str]:
    """``pptp-alg-gateway`` listening for the switch on ``openflow_port`` with the
    configuration ``config_path`` (and the lab's app, when it is not the default)."""
    argv = [
        str(gateway_command()),
        "--ofp-listen-host", OFP_HOST, "--ofp-tcp-listen-port", str(openflow_port),
        "--config-file", config_path,
    ]
    if state.app != DEFAULT_APP:
        argv += ["--app", state.app]
    return argv


def environment(state: LabState) -> dict[str, str]:
    """The controller's environment: this tree's ``alg/``, ``demux/`` and ``ryu_apps/``
    whatever the command's environment has, the lab's framework, unbuffered output."""
    env = repo_environment()
    env[ENV] = state.framework  # the command runs this framework's manager
    env["PYTHONUNBUFFERED"] = "1"
    return env


def keep_previous_log(log_path: Path) -> None:
    """Move ``log_path`` to ``<log_path>.1`` (over the one before), if it exists."""
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))


def start(state: LabState) -> subprocess.Popen[bytes]:
    """Start the lab's controller; the log of its previous run is kept as ``ryu.log.1``.

    Returns:
        The manager's process (its PID also goes to the lab's PID file).
    """
    log_path = Path(state.log_path)
    keep_previous_log(log_path)
    argv = command_line(state, state.openflow_port, state.config_path)
    env = environment(state)
    with open(log_path, "wb") as log:
        started = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    _children[started.pid] = started
    Path(state.pid_path).write_text(f"{started.pid}\n")
    return started


def stop(pid: int, config_path: str, quiet: bool) -> None:
    """Stop the controller ``pid`` (``process.terminate``) if it is the one of ``config_path``.

    Raises:
        LabError: When it does not stop.
    """
    started = _children.pop(pid, None)
    if not is_controller(pid, config_path):
        if started is not None:
            started.poll()
        return
    say(quiet, f"lab: stopping {GATEWAY_COMMAND} (pid {pid})")
    if not process.terminate(pid, STOP_GRACE, STOP_GRACE, popen=started):
        raise LabError(f"{GATEWAY_COMMAND} (pid {pid}) does not stop")


def connected_to(state: LabState, bridges: Sequence[str] | None = None) -> bool:
    """Tell whether the lab's bridges (or ``bridges``) are connected to a controller on the
    lab's port."""
    wanted = [g.bridge for g in state.all_gateways] if bridges is None else bridges
    return ports.established(state.openflow_port) and all(
        ovs.is_connected(bridge) for bridge in wanted)


def lab_failure(state: LabState, message: str) -> LabError:
    """The failure of a wait in lab ``state``: ``message``, the log's tail, how to clean up."""
    return LabError(
        f"{message}\n--- last lines of {state.log_path} ---\n{log_tail(state.log_path)}\n"
        f"--- the lab is left as it is; `{command('down', state.name)}` removes it ---"
    )


def wait_until(state: LabState, started: subprocess.Popen[bytes] | None, deadline: float,
               what: str, ready: Callable[[], bool], fail: Failure = lab_failure) -> None:
    """Poll ``ready`` until it holds; fail when the controller dies or at ``deadline``.

    Args:
        state: The lab.
        started: The controller, when this process started it; otherwise the process of
            ``state.controller_pid`` is checked.
        deadline: When to give up (``time.monotonic()``).
        what: What is awaited, for messages.
        ready: The condition.
        fail: Makes the error raised from the lab and a message.

    Raises:
        LabError: When the controller is gone or the time is up, with the log's tail (or
            what ``fail`` makes).
    """
    while True:
        if started is not None and started.poll() is not None:
            raise fail(state, f"{GATEWAY_COMMAND} exited with status {started.returncode} "
                              f"({what})")
        pid = state.controller_pid
        if started is None and (pid is None or not is_controller(pid, state.config_path)):
            raise fail(state, f"{GATEWAY_COMMAND} (pid {pid}) is not running ({what})")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise fail(state, f"timed out waiting for {what}")
        time.sleep(0.2)


def wait_listening(state: LabState, started: subprocess.Popen[bytes], deadline: float,
                   fail: Failure = lab_failure) -> None:
    """Wait until the controller listens for the switch."""
    wait_until(state, started, deadline,
               f"{GATEWAY_COMMAND} to listen on {OFP_HOST}:{state.openflow_port}",
               lambda: ports.listening(state.openflow_port), fail)


def wait_ready(state: LabState, started: subprocess.Popen[bytes] | None, deadline: float,
               since: float | None = None, fail: Failure = lab_failure,
               bridges: Sequence[str] | None = None) -> None:
    """Wait until the switches are connected to the controller and each has the pipeline.

    Args:
        state: The lab.
        started: The controller, when this process started it (see ``wait_until``).
        deadline: When to give up (``time.monotonic()``).
        since: When given (``time.monotonic()``), the pipeline flows must all have been
            added after it: flows that the switch kept from before do not count.
        fail: Makes the error raised (see ``wait_until``).
        bridges: The bridges to wait for (default: every bridge of the lab).

    Raises:
        LabError: When the controller is gone or the time is up.
    """
    wanted = [g.bridge for g in state.all_gateways] if bridges is None else list(bridges)
    which = "the switch" if len(wanted) == 1 else f"the switches ({', '.join(wanted)})"
    wait_until(state, started, deadline, f"{which} to connect to the controller",
               lambda: connected_to(state, wanted), fail)
    cookie = switch.cookie(EntryKind.PIPELINE)
    for bridge in wanted:
        wait_until(state, started, deadline,
                   f"a flow with the pipeline cookie {cookie:#018x}"
                   + ("" if len(wanted) == 1 else f" on {bridge}")
                   + ("" if since is None else " added by the controller just connected"),
                   functools.partial(ovs.pipeline_installed, bridge, since), fail)
