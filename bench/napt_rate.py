"""Figure 4: new TCP connections per second through the NAPT, on one path.

The server (``bench.tcp_peers``) runs in the path's server namespace, the client in its
client namespace; each connection is one byte each way, then closed.
"""

from __future__ import annotations

from bench.setup_latency import SetupResult, run_pair
from bench.topologies import Path

MODE = "tcp"


def measure_connections(path: Path, connections: int, parallel: int = 1,
                        timeout: float = 600) -> SetupResult:
    """Open ``connections`` TCP connections, ``parallel`` at a time, through ``path``."""
    data = run_pair(
        path, ["bench.tcp_peers", "server", path.server_ip],
        ["bench.tcp_peers", "client", path.server_ip, "--connections", str(connections),
         "--parallel", str(parallel)], timeout,
    )
    return SetupResult(path.name, MODE, connections, parallel, float(data["seconds"]),
                       int(data["failed"]), [float(x) for x in data["latencies"]])
