"""The connection tracker's limit on a zone, set beside the switch.

``max_sessions`` bounds the NAT sessions of the gateway; with ``ordinary_nat =
conntrack`` its sessions are the tracker's, in ``ct_zone``, and the tracker's bound on a
zone is set through ``ovs-appctl dpctl/ct-set-limits`` (not OpenFlow). A new connection
over it is not committed; the route table's ``+snat`` guard (``ryu_apps.ctflows``) then
drops it rather than send it untranslated. So the app sets the limit when its switch is
ready, which it can only do on the switch's host, as root; anywhere else it says so in
its log and counts it. The tracker has no per-source limit: a host's block of ports
(``alg.hostnat``) bounds its connections to one destination (address, port) only.
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
