"""Run one command, record its PID, and when it ends, its exit status.

    python -m topo.watch PID_FILE EXIT_FILE -- COMMAND [ARG ...]

The lab starts each controller of a lab on etcd through it, so that ``status`` can say
how a controller that no longer runs ended (one that loses its mastership exits with
status 3) after the command that started it is gone. ``PID_FILE`` gets the command's PID
as soon as it runs, ``EXIT_FILE`` (removed at the start) its exit status when it ends, as
``subprocess`` reports it: negative for the signal that ended it. Both are written aside
and then moved over the old ones. SIGTERM, SIGINT and SIGHUP are passed on to the
command. The watcher ends when the command does: exit status 0, or 1 when the command
cannot be started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` aside, then move it over the old file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_exit(path: Path | str) -> int | None:
    """The exit status in ``path``, None when there is none (the command runs, or was
    never started through the watcher)."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def describe_exit(status: int) -> str:
    """``exited 3``, ``killed by SIGKILL`` ... for people."""
    if status >= 0:
        return f"exited {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def run(pid_path: Path, exit_path: Path, argv: Sequence[str]) -> int:
    """Run ``argv``, recording its PID and then its exit status.

    Returns:
        0 once it ended, 1 when it could not be started.
    """
    exit_path.unlink(missing_ok=True)
    try:
        child = subprocess.Popen(list(argv))
    except OSError as exc:
        print(f"topo.watch: {argv[0]}: {exc}", file=sys.stderr)
        return 1

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in PASSED_ON:
        signal.signal(signum, pass_on)
    write(pid_path, f"{child.pid}\n")
    status = child.wait()
    write(exit_path, f"{status}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``PID_FILE EXIT_FILE -- COMMAND [ARG ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[2] != "--":
        print("usage: python -m topo.watch PID_FILE EXIT_FILE -- COMMAND [ARG ...]",
              file=sys.stderr)
        return 2
    return run(Path(args[0]), Path(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main())
