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


def tcp_table(results: Iterable[SetupResult]) -> str:
    """New TCP connections through each peer: connect-to-answer time and rate, medians
    over rounds, ratios to the best peer."""
    runs: dict[str, list[SetupResult]] = defaultdict(list)
    for r in results:
        if r.mode == "tcp":
            runs[r.peer].append(r)
    if not runs:
        return ""
    median = {p: statistics.median(r.median_us for r in rs) for p, rs in runs.items()}
    rate = {p: statistics.median(r.calls_per_second for r in rs) for p, rs in runs.items()}
    lines = [
        "| peer | connect to answer, median (us) | ratio to best | connections/s | "
        "ratio to best | failed |",
        "|---|---|---|---|---|---|",
    ]
    best_latency, best_rate = min(median.values()), max(rate.values())
    for p in sorted(runs, key=lambda p: median[p]):
        lines.append(
            f"| {p} | {median[p]:.0f} | {median[p] / best_latency:.2f} | {rate[p]:.0f} | "
            f"{rate[p] / best_rate:.2f} | {sum(r.failed for r in runs[p])} |")
    return "\n".join(lines)


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


def chart(results: Iterable[SetupResult], path: str | os.PathLike[str]) -> None:
    """A PNG: call setup latency (median, with p99 above it) and calls per second, per
    peer and kind of connection, medians over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[tuple[str, str], list[SetupResult]] = defaultdict(list)
    for r in results:
        rows[(r.mode, r.peer)].append(r)
    modes = [m for m in ("new", "existing") if any(k[0] == m for k in rows)]
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.2 * len(modes)), squeeze=False)
    for row, mode in enumerate(modes):
        peers = sorted((p for m, p in rows if m == mode),
                       key=lambda p: statistics.median(r.median_us for r in rows[(mode, p)]))
        median = [statistics.median(r.median_us for r in rows[(mode, p)]) / 1000 for p in peers]
        p99 = [statistics.median(r.p99_us for r in rows[(mode, p)]) / 1000 for p in peers]
        rate = [statistics.median(r.calls_per_second for r in rows[(mode, p)]) for p in peers]
        left, right = axes[row]
        left.barh(peers, p99, color="#d9d9d9", label="p99")
        left.barh(peers, median, color="#4c72b0", label="median")
        left.set_xlabel("call setup (ms)")
        left.set_title(f"calls on {mode} control connections")
        left.legend(loc="lower right")
        right.barh(peers, rate, color="#55a868")
        right.set_xlabel("calls per second")
        right.set_title(f"sustained, {mode} connections")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
