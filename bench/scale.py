"""Figure 5: many concurrent calls through one path, and what each costs.

From ``sources`` inside addresses of the path's client namespace (one control connection
each, the calls shared out among them, each connection numbering its Call IDs from 1 as
pptp-linux does, so that nearly every call's ID collides on the (server, public address)
pair and must be translated), ``calls`` calls are set up to one PAC and held. Recorded:
the time until all stood, and, from before the first call to while all stand:

* the controller's resident-size growth per call (control connections included);
* flow entries per call (the bridge's aggregate flow count);
* packet-ins per call (the app's ``packet_ins`` counter, over REST);
* for the Linux reference, conntrack entries per call in its router namespace.

Where calls fail, the first failures' reasons are kept: that is where it breaks.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path as FilePath

from bench.held import add_sources, hold, pac
from bench.topologies import Path
from topo.netns import ns_run, run

SOURCES = 100


@dataclass
class ScaleResult:
    """One path holding ``calls`` calls from ``sources`` inside addresses."""

    peer: str
    public_ips: int
    calls: int
    sources: int
    held: int
    failed: int
    setup_seconds: float
    memory_per_call: float | None
    flow_entries_per_call: float | None
    packet_ins_per_call: float | None
    conntrack_per_call: float | None
    failures: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"figure": "scale", **asdict(self)}


def resident_bytes(pid: int) -> int:
    """A process's resident set size."""
    for line in FilePath(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


def flow_entries(bridge: str) -> int:
    """The bridge's flow entries, all tables."""
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-aggregate", bridge])
    return int(out.split("flow_count=")[1].split()[0])


def packet_ins(rest_url: str) -> int:
    """The gateway app's packet-in counter."""
    with urllib.request.urlopen(f"{rest_url}/pptp-alg/counters", timeout=10) as answer:
        count: int = json.load(answer)["app"]["packet_ins"]
        return count


def conntrack_entries(netns: str) -> int:
    """Connection-tracking entries in a namespace."""
    return int(ns_run(netns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"))


def _sample(path: Path) -> dict[str, int]:
    sample = {}
    if path.controller_pid is not None:
        sample["memory"] = resident_bytes(path.controller_pid)
    if path.bridge is not None:
        sample["flows"] = flow_entries(path.bridge)
    if path.rest_url is not None:
        sample["packet_ins"] = packet_ins(path.rest_url)
    if path.router is not None:
        sample["conntrack"] = conntrack_entries(path.router)
    return sample


def measure_scale(path: Path, calls: int, sources: int = SOURCES, public_ips: int = 1
                  ) -> ScaleResult:
    """Hold ``calls`` calls through ``path`` from ``sources`` inside addresses."""
    addresses = add_sources(path.client, sources)
    with pac(path):
        before = _sample(path)
        with hold(path, calls, addresses) as report:
            during = _sample(path)
    held = len(report["latencies"])

    def per_call(key: str) -> float | None:
        if key not in before or not held:
            return None
        return (during[key] - before[key]) / held

    return ScaleResult(
        path.name, public_ips, calls, sources, held, int(report["failed"]),
        float(report["seconds"]), per_call("memory"), per_call("flows"),
        per_call("packet_ins"), per_call("conntrack"), list(report["failures"]))
