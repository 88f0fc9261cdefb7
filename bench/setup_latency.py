"""Figures 1 and 2: call setup latency and sustained calls per second, on one path.

The PAC runs in the path's server namespace, the PNS in its client namespace (both
``bench.pptp_peers``); the PNS reports every call's Outgoing-Call-Request ->
Outgoing-Call-Reply latency and the run's duration.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path as Path_
from typing import Any

from bench.topologies import Path
from topo.netns import ns_argv
from topo.peers import start_pptpd
from topo.standin_ppp import StandinConfig


@dataclass
class SetupResult:
    """One run of one mode on one path.

    Attributes:
        latencies: seconds, one per call that was set up.
        seconds: the whole run (connections included).
    """

    peer: str
    mode: str
    calls: int
    connections: int
    seconds: float
    failed: int
    latencies: list[float] = field(repr=False)

    @property
    def median_us(self) -> float:
        return statistics.median(self.latencies) * 1e6 if self.latencies else float("nan")

    @property
    def p99_us(self) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6

    @property
    def calls_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["latencies"]
        data.update(median_us=self.median_us, p99_us=self.p99_us,
                    calls_per_second=self.calls_per_second)
        return data


def run_pair(path: Path, server: list[str], client: list[str], timeout: float = 600,
             ready: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start ``python -m SERVER...`` in the path's server namespace (it prints one line
    when it listens), call ``ready`` (if any), run ``python -m CLIENT...`` in its client
    namespace, stop the server; the client's last JSON line."""
    proc = subprocess.Popen(
        ns_argv(path.server, [sys.executable, "-m", *server]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        if ready is not None:
            ready()
        run = subprocess.run(
            ns_argv(path.client, [sys.executable, "-m", *client]),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        proc.kill()
        proc.wait()
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{client[0]} on {path.name} said nothing: {run.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


MODES = ("pptpd", "new", "new-parallel", "existing")
"""A call per new control connection to a real pptpd, one at a time (the sanity run); the
same to the PAC emulator; the same, ``connections`` at a time (under load); calls on
``connections`` control connections kept open."""


def mode_label(mode: str, connections: int) -> str:
    """How the tables name a mode."""
    return {"pptpd": "new connections, one at a time, real pptpd",
            "new": "new connections, one at a time",
            "new-parallel": f"new connections, {connections} at a time",
            "existing": f"existing connections, {connections} at a time"}.get(mode, mode)


def measure_setup(path: Path, mode: str, calls: int, connections: int = 1,
                  timeout: float = 600) -> SetupResult:
    """Set up ``calls`` calls from the path's client to a PAC in its server namespace,
    in one of :data:`MODES`."""
    if mode == "new":
        connections = 1
    data = run_pair(
        path, ["bench.pptp_peers", "pac", path.server_ip],
        ["bench.pptp_peers", "pns", path.server_ip, "--calls", str(calls), "--mode",
         "existing" if mode == "existing" else "new", "--connections", str(connections)],
        timeout,
    )
    return SetupResult(path.name, mode, calls, connections, float(data["seconds"]),
                       int(data["failed"]), [float(x) for x in data["latencies"]])


def measure_pptpd(path: Path, calls: int, timeout: float = 300) -> SetupResult:
    """Set up ``calls`` calls, one at a time on new control connections, from the PNS to a
    real pptpd in the path's server namespace (its pppd the project's stand-in, which
    sends no frames here): the sanity run beside the PAC emulator's figures."""
    with tempfile.TemporaryDirectory(prefix="bench-pptpd-") as run_dir:
        server = start_pptpd(path.server, path.server_ip, Path_(run_dir), syslog=False,
                             debug=False, standin=StandinConfig(count=0),
                             extra_conf=[f"connections {max(100, calls)}"])
        try:
            run = subprocess.run(
                ns_argv(path.client, [sys.executable, "-m", "bench.pptp_peers", "pns",
                                      path.server_ip, "--calls", str(calls), "--mode", "new"]),
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        finally:
            server.stop()
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the PNS on {path.name} said nothing: {run.stderr[-2000:]}")
    data = json.loads(lines[-1])
    return SetupResult(path.name, "pptpd", calls, 1, float(data["seconds"]),
                       int(data["failed"]), [float(x) for x in data["latencies"]])
