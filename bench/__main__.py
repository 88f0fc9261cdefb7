"""``python -m bench [--quick]``: every figure, every peer, the same traffic, one run.

Figures so far:

1. call setup: Outgoing-Call-Request sent to Outgoing-Call-Reply received at the PNS,
   median and p99, on a new control connection per call (as pptp-linux does) and on
   existing ones, through the gateway, the Linux reference NAT and no NAT at all;
2. sustained calls per second, from the same runs (one call at a time on new
   connections; on existing connections, ``--connections`` of them in parallel);
4. new TCP connections per second through the NAPT (``bench.tcp_peers``), ``--connections``
   at a time, each one byte each way.

Peers (``bench.topologies``): no NAT, the Linux reference, plain OVS (no controller),
the bare Ryu app (every packet through a controller that only sends it back out), and
the gateway. A chart of both figures goes to ``latest.png`` beside the tables.

The PNS and the PAC are ``bench.pptp_peers`` (asyncio, real kernel TCP). Each figure is
the median of ``--rounds`` rounds; ratios are to the best peer of the same run. The
output is a Markdown table with the machine's description, also written as JSON and
Markdown to ``--out``. Needs root (namespaces, OVS).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import report
from bench.napt_rate import measure_connections
from bench.setup_latency import SetupResult, measure_setup
from bench.topologies import bare_ryu, direct, gateway, plain_ovs, reference

QUICK = {"new": 200, "existing": 1000, "tcp": 500, "rounds": 1}
FULL = {"new": 2000, "existing": 10000, "tcp": 5000, "rounds": 3}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--connections", type=int, default=8,
                        help="control connections in parallel for calls on existing ones")
    parser.add_argument("--new", type=int, help="calls on new connections (overrides the size)")
    parser.add_argument("--existing", type=int,
                        help="calls on existing connections (overrides the size)")
    parser.add_argument("--tcp", type=int,
                        help="new TCP connections through the NAPT (overrides the size)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides the size)")
    args = parser.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    for key in ("new", "existing", "tcp", "rounds"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    started = time.monotonic()
    results: list[SetupResult] = []
    tag = secrets.token_hex(2)  # names of this run's own, beside any lab or other run
    for rounds in range(size["rounds"]):
        for make in (direct, reference, plain_ovs, bare_ryu, gateway):
            with make(f"b{make.__name__[0]}{tag}") as path:
                results.append(measure_setup(path, "new", size["new"]))
                if path.name != "linux":  # one call per control connection only
                    results.append(measure_setup(path, "existing", size["existing"],
                                                 args.connections))
                results.append(measure_connections(path, size["tcp"], args.connections))
        print(f"round {rounds + 1} of {size['rounds']} done", file=sys.stderr)
    table = report.setup_table([r for r in results if r.mode != "tcp"])
    tcp = report.tcp_table(results)
    text = "\n".join([
        report.machine(), "",
        f"Run: {size['new']} calls on new connections and {size['existing']} on "
        f"existing ones per peer, {size['rounds']} round(s), "
        f"{time.monotonic() - started:.0f} s.",
        "", "Call setup (figures 1 and 2):", "", table,
        "", f"New TCP connections through the NAPT, {args.connections} at a time "
        "(figure 4):", "", tcp,
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text + "\n")
    (args.out / "latest.json").write_text(json.dumps(
        [r.as_dict() for r in results], indent=1) + "\n")
    report.chart([r for r in results if r.mode != "tcp"], args.out / "latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
