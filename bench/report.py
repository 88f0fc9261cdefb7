"""The bench's output: the machine's description and the tables, in Markdown."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Iterable

from bench.setup_latency import SetupResult


def machine() -> str:
    """Cores, memory, kernel, OVS and Python versions."""
    memory = "?"
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        ovs = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        ovs = "ovs-vswitchd ?"
    return (f"Machine: {os.cpu_count()} cores, {memory}, Linux {platform.release()}, "
            f"{ovs}, Python {platform.python_version()}.")


def setup_table(results: Iterable[SetupResult]) -> str:
    """Call setup per mode and peer: medians over rounds, ratios to the best peer."""
    rows: dict[tuple[str, str], list[SetupResult]] = defaultdict(list)
    for r in results:
        rows[(r.mode, r.peer)].append(r)
    lines = [
        "| calls on | peer | setup median (us) | p99 (us) | ratio to best | calls/s | "
        "ratio to best | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("new", "existing"):
        peers = {peer: runs for (m, peer), runs in rows.items() if m == mode}
        if not peers:
            continue
        median = {p: statistics.median(r.median_us for r in runs) for p, runs in peers.items()}
        p99 = {p: statistics.median(r.p99_us for r in runs) for p, runs in peers.items()}
        rate = {p: statistics.median(r.calls_per_second for r in runs)
                for p, runs in peers.items()}
        best_latency = min(median.values())
        best_rate = max(rate.values())
        for p in sorted(peers, key=lambda p: median[p]):
            failed = sum(r.failed for r in peers[p])
            lines.append(
                f"| {mode} connections | {p} | {median[p]:.0f} | {p99[p]:.0f} | "
                f"{median[p] / best_latency:.2f} | {rate[p]:.0f} | "
                f"{rate[p] / best_rate:.2f} | {failed} |")
    return "\n".join(lines)
