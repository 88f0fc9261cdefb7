"""Processes by PID: whether one runs, its command line, its descendants, stopping it.

Every part of the lab tooling that stops a process it started (the lab's controller, the
Mininet runner's peer helpers, the real peers, the demo's capture) stops it with
``terminate``: SIGTERM, a grace period, then SIGKILL, always by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Seconds between two looks at a process that is being stopped.
POLL_INTERVAL = 0.1


def signal_pid(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``; a process that is gone already is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def process_children() -> dict[int, list[int]]:
    """Map every PID on the machine to the PIDs of its children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Return the PIDs below ``pid`` in the process tree, parents before children."""
    children = process_children()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def terminate(
    pid: int,
    grace: float = 5.0,
    kill_grace: float = 5.0,
    *,
    popen: subprocess.Popen[Any] | None = None,
    also: Iterable[int] = (),
) -> bool:
    """Stop ``pid``: SIGTERM, up to ``grace`` seconds, then SIGKILL, up to ``kill_grace``.

    Args:
        pid: The process.
        grace: Seconds it gets to end after SIGTERM.
        kill_grace: Seconds it gets to end after SIGKILL.
        popen: The process whose end is awaited, when this process started it: ``pid``
            itself (it is polled, so it does not stay a zombie) or a parent that ends
            with it. Without it, ``pid`` is awaited through /proc.
        also: More PIDs that get the SIGTERM (not the SIGKILL), after ``pid``.

    Returns:
        Whether the awaited process ended.
    """

    def ended() -> bool:
        return popen.poll() is not None if popen is not None else not alive(pid)

    for signum, wait, more in ((signal.SIGTERM, grace, also), (signal.SIGKILL, kill_grace, ())):
        if ended():
            return True
        for target in (pid, *more):
            signal_pid(target, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if ended():
                return True
            time.sleep(POLL_INTERVAL)
    return ended()
