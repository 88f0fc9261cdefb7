"""The connection tracker's limit and timeout policy of a zone, set beside the switch.

``max_sessions`` bounds the NAT sessions of the gateway; with ``ordinary_nat =
conntrack`` its sessions are the tracker's, in ``ct_zone``, and the tracker's bound on a
zone is set through ``ovs-appctl dpctl/ct-set-limits`` (not OpenFlow). A new connection
over it is not committed; the route table's ``+snat`` guard (``ryu_apps.ctflows``) then
drops it rather than send it untranslated. So the app sets the limit when its switch is
ready, which it can only do on the switch's host, as root; anywhere else it says so in
its log and counts it. The tracker has no per-source limit: a host's block of ports
(``alg.hostnat``) bounds its connections to one destination (address, port) only.

The tracker forgets a closed TCP connection after 30 s by default, while the server may
still hold its end in TIME-WAIT (Linux: 60 s), and then hands the public port to a new
connection that the server refuses. So the zone gets a timeout policy (``ct_time_wait``,
ovs-vswitchd.conf.db(5), ``CT_Timeout_Policy``) through ``ovs-vsctl add-zone-tp`` on the
bridge's datapath type: ``tcp_time_wait`` is the kernel datapath's state after both FINs,
``tcp_close`` the userspace datapath's (it has no TIME-WAIT state of its own; measured:
with ``tcp_time_wait`` alone a closed connection still left after 30 s). The policy
lives in the database, on the datapath type's record (made when missing), until
:func:`clear_zone_timeouts`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

TIMEOUT = 5.0
"""Seconds ``ovs-appctl`` may take."""

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs a command: its exit status and output (stdout and stderr)."""


def run(argv: Sequence[str]) -> tuple[int, str]:
    """:data:`Runner` by ``subprocess``, within :data:`TIMEOUT` (once per switch
    connection; ``ovs-appctl`` answers in milliseconds)."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    return done.returncode, done.stdout + done.stderr


def set_zone_limit(zone: int, limit: int, runner: Runner = run) -> str | None:
    """Set the tracker's limit of ``zone`` to ``limit`` connections.

    Returns:
        None when it is set, else why not, in words.
    """
    argv = ["ovs-appctl", "dpctl/ct-set-limits", f"zone={zone},limit={limit}"]
    try:
        status, output = runner(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{' '.join(argv)}: {exc}"
    if status != 0:
        return f"{' '.join(argv)}: exit status {status}: {output.strip()}"
    return None


VSCTL = ("ovs-vsctl", "--timeout=5")


def _run(argv: Sequence[str], runner: Runner) -> tuple[int, str] | str:
    try:
        return runner(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{' '.join(argv)}: {exc}"


def _failed(argv: Sequence[str], answer: tuple[int, str] | str) -> str | None:
    if isinstance(answer, str):
        return answer
    status, output = answer
    if status != 0:
        return f"{' '.join(argv)}: exit status {status}: {output.strip()}"
    return None


def datapath_type(bridge: str, runner: Runner = run) -> str:
    """The datapath type of ``bridge`` (``system`` when the database says none).

    Raises:
        LookupError: why it cannot be read, in words.
    """
    argv = [*VSCTL, "get", "bridge", bridge, "datapath_type"]
    answer = _run(argv, runner)
    problem = _failed(argv, answer)
    if problem is not None:
        raise LookupError(problem)
    assert not isinstance(answer, str)
    return answer[1].strip().strip('"') or "system"


def set_zone_timeouts(bridge: str, zone: int, time_wait: int, runner: Runner = run
                      ) -> str | None:
    """Keep ``zone``'s closed TCP connections ``time_wait`` seconds (module docstring).

    Returns:
        None when the policy is in the database, else why not, in words.
    """
    try:
        kind = datapath_type(bridge, runner)
    except LookupError as exc:
        return str(exc)
    record = _run([*VSCTL, "--if-exists", "get", "Open_vSwitch", ".", f"datapaths:{kind}"],
                  runner)
    steps: list[list[str]] = []
    if isinstance(record, str) or record[0] != 0 or not record[1].strip():
        # Made only when missing: a record made anew replaces the one there, and the
        # zones' policies on it (measured, whatever ``add`` promises for maps).
        steps.append([*VSCTL, "--", "--id=@dp", "create", "Datapath",
                      "datapath_version=0", "--", "set", "Open_vSwitch", ".",
                      f"datapaths:{kind}=@dp"])
    steps += [
        [*VSCTL, "--if-exists", "del-zone-tp", kind, f"zone={zone}"],
        [*VSCTL, "add-zone-tp", kind, f"zone={zone}", f"tcp_time_wait={time_wait}",
         f"tcp_close={time_wait}"],
    ]
    for argv in steps:
        problem = _failed(argv, _run(argv, runner))
        if problem is not None:
            return problem
    listing = [*VSCTL, "list-zone-tp", kind]
    answer = _run(listing, runner)
    problem = _failed(listing, answer)
    if problem is not None:
        return problem
    assert not isinstance(answer, str)
    if f"Zone:{zone}," not in answer[1]:
        return (f"zone {zone}'s policy is not in {kind}'s record after it was added "
                "(another process made the record anew meanwhile?)")
    return None


def clear_zone_timeouts(bridge_type: str, zone: int, runner: Runner = run) -> str | None:
    """Remove ``zone``'s timeout policy from the datapath type's record (none: nothing).

    Returns:
        None when it is gone, else why not, in words.
    """
    argv = [*VSCTL, "--if-exists", "del-zone-tp", bridge_type, f"zone={zone}"]
    return _failed(argv, _run(argv, runner))
