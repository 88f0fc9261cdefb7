"""Two bridges, one controller: does a flood on one bridge slow the other's call setup?

``python -m bench.bridges [--calls N] [--rate PPS] [--rounds R] [--out DIR]`` (as root,
about a minute): a lab of two bridges (``topo.lab up --bridges 2``), the PAC emulator
(``bench.pptp_peers``) in each gateway's server namespace. Each round measures call
setup (Outgoing-Call-Request to Outgoing-Call-Reply at the PNS, a new control connection
per call, one at a time) through gateway 2 three ways: quiet; while gateway 1's server
namespace floods gateway 1's public address with enhanced GRE of random Call IDs at
``--rate`` packets a second (what reaches the controller is held by gateway 1's outside
meter, ``punt_rate_outside_new``, at its default; the per-host bounds are opened as
``bench.topologies.BENCH_OPTIONS`` opens them, ordinary NAT is the datapath's); and, as
the peer, through gateway 1 itself during the same flood. Reported: medians and p99 per
way, the ratio of each to the quiet run, and gateway 1's packet-ins during the flood
(REST counters).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path as FilePath
from typing import Any

from alg.config import AlgConfig
from bench.setup_latency import SetupResult, measure_setup
from bench.topologies import BENCH_OPTIONS, Path
from topo import lab
from topo.netns import ns_argv

LAB = "benchbr"
FLOOD = """
import os, random, socket, struct, sys, time
public, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    for _ in range(100):
        sock.sendto(struct.pack("!HHHH", 0x2001, 0x880B, 0, random.randrange(65536)),
                    (public, 0))
    sent += 100
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(sent, flush=True)
"""
"""Enhanced GRE (key present, version 1, no payload) to the public address, paced."""


def _packet_ins(rest_url: str, gateway: str) -> int:
    url = f"{rest_url}/pptp-alg/gateways/{gateway}/counters"
    with urllib.request.urlopen(url, timeout=5) as answer:
        count: int = json.load(answer)["app"]["packet_ins"]
    return count


@contextmanager
def flooding(namespace: str, public_ip: str, rate: float, seconds: float
             ) -> Iterator[subprocess.Popen[str]]:
    """GRE to ``public_ip`` from ``namespace`` at ``rate`` a second for at most
    ``seconds`` (stopped when the block ends)."""
    proc = subprocess.Popen(ns_argv(namespace, [sys.executable, "-c", FLOOD, public_ip,
                                                str(rate), str(seconds)]),
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(calls: int, rate: float, rounds: int) -> dict[str, Any]:
    """Every round's three runs; see the module docstring."""
    options = {**BENCH_OPTIONS, "ordinary_nat": "conntrack",
               "punt_rate_gre": str(AlgConfig.punt_rate_gre)}
    state = lab.up(1, name=LAB, replace=True, bridges=2, options=options)
    try:
        g1, g2 = state.all_gateways
        paths = {g.name: Path(g.name, g.client(1), g.server_namespace, g.server_ip,
                              state.controller_pid, g.bridge, state.rest_url)
                 for g in (g1, g2)}
        runs: dict[str, list[SetupResult]] = {"quiet": [], "flood on g1": [],
                                              "flood on g1, through g1": []}
        punted: list[float] = []
        public = state.public_ips[0]
        for _ in range(rounds):
            runs["quiet"].append(measure_setup(paths["g2"], "new", calls))
            before, start = _packet_ins(state.rest_url, "g1"), time.monotonic()
            with flooding(g1.server_namespace, public, rate, 600):
                runs["flood on g1"].append(measure_setup(paths["g2"], "new", calls))
                runs["flood on g1, through g1"].append(
                    measure_setup(paths["g1"], "new", calls))
                punted.append((_packet_ins(state.rest_url, "g1") - before)
                              / (time.monotonic() - start))
    finally:
        lab.down(name=LAB, purge=True)
    quiet = statistics.median(r.median_us for r in runs["quiet"])
    return {
        "calls": calls, "rate": rate, "rounds": rounds,
        "g1_packet_ins_per_second": statistics.median(punted),
        "ways": {name: {
            "median_us": statistics.median(r.median_us for r in results),
            "p99_us": statistics.median(r.p99_us for r in results),
            "failed": sum(r.failed for r in results),
            "ratio_to_quiet": statistics.median(r.median_us for r in results) / quiet,
        } for name, results in runs.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    lines = [f"Call setup through gateway 2, {result['calls']} calls a run, "
             f"{result['rounds']} rounds; flood: GRE at {result['rate']:,.0f}/s to "
             f"gateway 1's public address, {result['g1_packet_ins_per_second']:,.0f} "
             "packet-ins a second on gateway 1.", "",
             "| way | median (us) | p99 (us) | failed | median / quiet |", "|---|---|---|---|---|"]
    for name, way in result["ways"].items():
        lines.append(f"| {name} | {way['median_us']:,.0f} | {way['p99_us']:,.0f} | "
                     f"{way['failed']} | {way['ratio_to_quiet']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print Markdown, write JSON and Markdown to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bridges", description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20000.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=FilePath, default=FilePath("bench/results"))
    args = parser.parse_args(argv)
    result = measure(args.calls, args.rate, args.rounds)
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bridges.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "bridges.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
