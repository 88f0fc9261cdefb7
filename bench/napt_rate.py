"""Figure 4: new TCP connections per second through the NAPT, on one path.

The server (``bench.tcp_peers``) runs in the path's server namespace, the client in its
client namespace; each connection is one byte each way, then closed.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.setup_latency import SetupResult
from bench.topologies import Path
from topo.netns import ns_argv

MODE = "tcp"


def measure_connections(path: Path, connections: int, parallel: int = 1,
                        timeout: float = 600) -> SetupResult:
    """Open ``connections`` TCP connections, ``parallel`` at a time, through ``path``."""
    server = subprocess.Popen(
        ns_argv(path.server, [sys.executable, "-m", "bench.tcp_peers", "server",
                              path.server_ip]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        run = subprocess.run(
            ns_argv(path.client, [sys.executable, "-m", "bench.tcp_peers", "client",
                                  path.server_ip, "--connections", str(connections),
                                  "--parallel", str(parallel)]),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        server.kill()
        server.wait()
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the TCP client on {path.name} said nothing: {run.stderr[-2000:]}")
    data = json.loads(lines[-1])
    return SetupResult(path.name, MODE, connections, parallel, float(data["seconds"]),
                       int(data["failed"]), [float(x) for x in data["latencies"]])
