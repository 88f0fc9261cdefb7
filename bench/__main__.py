"""``python -m bench [--quick]``: every figure, every peer, the same traffic, one run.

The figures:

1. call setup: Outgoing-Call-Request sent to Outgoing-Call-Reply received at the PNS,
   median and p99, on a new control connection per call (as pptp-linux does), one at a
   time and ``--connections`` at a time (under load), and on ``--connections`` existing
   ones; and, as a sanity run, one at a time to a real pptpd (``--pptpd`` calls);
2. sustained calls per second, from the same runs;
3. GRE packets per second each way, 64- and 1,400-byte payloads, per path
   (``bench.gre_rate``, sent by trafgen), on a call held alone on its (server, public
   address) pair and, through the gateway and Linux, with a second call on the pair;
4. new TCP connections per second through the NAPT (``bench.tcp_peers``), ``--connections``
   at a time, each one byte each way;
5. scale (``bench.scale``, once per run, not per round): ``--scale`` calls held at once
   from 100 inside addresses through the gateway with one and with four public
   addresses, and through Linux: time to set them up, controller memory, flow entries
   and packet-ins per call;
6. ordinary NAT (``bench.sessions``): new TCP sessions (the runs of figure 4) and new UDP
   sessions (``bench.udp_peers``, ``--udp`` of them, one datagram each way) per second,
   ``--connections`` at a time, with the app's packet-ins per session and the
   controller's CPU time during each run; ratios to the ``ovs-conntrack`` peer. Before
   them, apart, the inside host's first ``--connections`` TCP connections, all at once
   (what a host's first packets cost: the gateway binds the host then).

Peers (``bench.topologies``): no NAT, the Linux reference, plain OVS (no controller),
the bare Ryu app (every packet through a controller that only sends it back out), and
the gateway; for figure 6 alone, OVS conntrack NAT with static flows (``ovs-conntrack``,
no controller) and the gateway with ``ordinary_nat = conntrack`` (``gateway-conntrack``).
A chart of figures 1 to 3 goes to ``latest.png`` beside the tables.

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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from bench import report
from bench.gre_rate import GreResult, measure_path
from bench.scale import SOURCES, ScaleResult, measure_scale
from bench.sessions import SessionResult, measure_sessions
from bench.setup_latency import SetupResult, measure_pptpd, measure_setup
from bench.topologies import Path as PeerPath
from bench.topologies import (
    bare_ryu,
    direct,
    gateway,
    gateway_conntrack,
    gateway_demux,
    ovs_conntrack,
    plain_ovs,
    reference,
)


@dataclass(frozen=True)
class Size:
    """How much of each figure a run measures."""

    new: int
    pptpd: int
    existing: int
    tcp: int
    gre: int
    scale: tuple[int, ...]
    rounds: int


QUICK = Size(new=200, pptpd=10, existing=1000, tcp=500, gre=50000, scale=(1000,), rounds=1)
FULL = Size(new=2000, pptpd=50, existing=10000, tcp=5000, gre=300000, scale=(1000, 10000), rounds=3)
SCALE_PEERS = (("gateway", 1), ("gateway", 4), ("linux", 1))
SHARED = ("linux", "gateway", "demux")
PEERS: dict[str, Callable[[str], AbstractContextManager[PeerPath]]] = {
    "direct": direct, "linux": reference, "ovs": plain_ovs, "bare": bare_ryu,
    "gateway": gateway, "ovs-conntrack": ovs_conntrack, "gateway-conntrack": gateway_conntrack,
    "demux": gateway_demux}
"""In the order each round runs them (the two conntrack peers one after the other)."""
SESSIONS_ONLY = ("ovs-conntrack", "gateway-conntrack")
SHORT = {"ovs-conntrack": "oc", "gateway-conntrack": "gc"}
"""Peers' names in their namespaces' and bridges' names (else their first two letters)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--connections", type=int, default=8,
                        help="control connections in parallel for calls on existing ones")
    parser.add_argument("--new", type=int, help="calls on new connections (overrides the size)")
    parser.add_argument("--pptpd", type=int,
                        help="calls to a real pptpd, 0 for none (overrides the size)")
    parser.add_argument("--existing", type=int,
                        help="calls on existing connections (overrides the size)")
    parser.add_argument("--tcp", type=int,
                        help="new TCP connections through the NAPT (overrides the size)")
    parser.add_argument("--udp", type=int,
                        help="new UDP sessions through the NAPT (default: as many as TCP)")
    parser.add_argument("--gre", type=int,
                        help="GRE packets per burst, 0 for none (overrides the size)")
    parser.add_argument("--scale", type=lambda v: tuple(int(n) for n in v.split(",") if n),
                        help="calls held at once, comma-separated, empty for none "
                             "(overrides the size)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides the size)")
    parser.add_argument("--peers", type=lambda v: set(v.split(",")), default=set(PEERS),
                        help=f"comma-separated, of {','.join(PEERS)} (default: all)")
    args = parser.parse_args(argv)
    size = replace(QUICK if args.quick else FULL, **{
        key: getattr(args, key)
        for key in ("new", "pptpd", "existing", "tcp", "gre", "scale", "rounds")
        if getattr(args, key) is not None})
    unknown = args.peers - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    udp = size.tcp if args.udp is None else args.udp
    started = time.monotonic()
    results: list[SetupResult] = []
    sessions: list[SessionResult] = []
    packets: list[GreResult] = []
    tag = secrets.token_hex(2)  # names of this run's own, beside any lab or other run
    for rounds in range(size.rounds):
        for peer in (p for p in PEERS if p in args.peers):
            with PEERS[peer](f"b{SHORT.get(peer, peer[:2])}{tag}") as path:
                if peer in SESSIONS_ONLY:
                    sessions += _sessions(path, size.tcp, udp, args.connections)
                    continue
                if size.gre:  # first: calls cleared before would hold their IDs down
                    packets += measure_path(path, size.gre, shared=peer in SHARED,
                                            alone=peer != "demux")
                if peer == "demux":  # the same gateway as "gateway" for the rest
                    continue
                if size.pptpd:
                    results.append(measure_pptpd(path, size.pptpd))
                results.append(measure_setup(path, "new", size.new))
                results.append(measure_setup(path, "new-parallel", size.new, args.connections))
                if path.name != "linux":  # one call per control connection only
                    results.append(measure_setup(path, "existing", size.existing,
                                                 args.connections))
                figure = _sessions(path, size.tcp, udp, args.connections)
                results += [s.as_setup() for s in figure if s.proto == "tcp" and not s.first]
                sessions += figure
        print(f"round {rounds + 1} of {size.rounds} done", file=sys.stderr)
    held: list[ScaleResult] = []
    for calls in size.scale:
        for peer, public_ips in (p for p in SCALE_PEERS if p[0] in args.peers):
            name = f"b{peer[0]}{tag}"
            with (gateway(name, public_ips=public_ips) if peer == "gateway"
                  else reference(name)) as path:
                held.append(measure_scale(path, calls, public_ips=public_ips))
    table = report.setup_table([r for r in results if r.mode != "tcp"])
    tcp = report.tcp_table(results)
    text = "\n".join([
        report.machine(), "",
        f"Run: {size.new} calls on new connections and {size.existing} on "
        f"existing ones per peer, {size.rounds} round(s), "
        f"{time.monotonic() - started:.0f} s.",
        "", "Call setup (figures 1 and 2):", "", table,
        "", f"New TCP connections through the NAPT, {args.connections} at a time "
        "(figure 4):", "", tcp,
        "", f"New ordinary sessions through the NAPT, {args.connections} at a time, "
        f"{size.tcp} TCP and {udp} UDP per peer and round (figure 6):", "",
        report.sessions_table(sessions),
        "", report.sessions_goal(sessions),
        "", f"The inside host's first {args.connections} TCP connections through each peer, "
        "all at once, before the runs above (figure 6):", "",
        report.first_table(sessions),
        "", f"GRE packets per second, bursts of {size.gre} (figure 3):", "",
        report.gre_table(packets),
        "", f"Calls held at once from {SOURCES} inside addresses (figure 5):", "",
        report.scale_table(held),
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text + "\n")
    (args.out / "latest.json").write_text(json.dumps({
        "calls": [r.as_dict() for r in results], "packets": [p.as_dict() for p in packets],
        "scale": [h.as_dict() for h in held],
        "sessions": [s.as_dict() for s in sessions]}, indent=1) + "\n")
    report.chart([r for r in results if r.mode != "tcp"], args.out / "latest.png", packets)
    return 0


def _sessions(path: PeerPath, tcp: int, udp: int, parallel: int) -> list[SessionResult]:
    """Figure 6 on one path: the inside host's first ``parallel`` TCP connections at once,
    then ``tcp`` new TCP sessions and ``udp`` new UDP sessions."""
    return [measure_sessions(path, "tcp", parallel, parallel, first=True),
            measure_sessions(path, "tcp", tcp, parallel),
            measure_sessions(path, "udp", udp, parallel)]


if __name__ == "__main__":
    sys.exit(main())
