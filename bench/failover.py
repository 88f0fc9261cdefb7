"""Two controllers on etcd: what the store costs a call, and what a failover costs.

``python -m bench.failover [--calls N] [--rounds R] [--out DIR]`` (as root, a few
minutes). Two labs, one after the other, each with one bridge and the PAC emulator
(``bench.pptp_peers``) in its server namespace:

* **sqlite**: one controller with its SQLite file (the default lab);
* **etcd**: two controllers on the lab's three-member etcd cluster
  (``topo.lab up --controllers 2 --store etcd``).

Call setup, the same way in both (Outgoing-Call-Request to Outgoing-Call-Reply at the
PNS, a new control connection per call, one at a time, ``--calls`` a round): medians and
p99 of each, and the ratio etcd / sqlite.

Failover, ``--rounds`` times in the etcd lab: the PNS (``topo.pns_driver``) holds one
call on a control connection; the master is killed (SIGKILL), and at once the PNS sends
an Outgoing-Call-Request on the same connection. Measured from the kill: until a
standby says it is master (its REST view, read every 0.05 s), and until the PNS has the
reply, the first control segment the new master passed (the segment sent in the gap is
repeated by the PNS's TCP, whose timeout doubles with each try). The killed controller
is started again (a standby) before the next round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path as FilePath
from typing import Any

from bench.setup_latency import SetupResult, measure_setup
from bench.topologies import BENCH_OPTIONS, Path
from topo import lab
from topo.netns import ns_argv

LAB = "benchfo"
DRIVER = """
import json, sys, time
from topo.pns_driver import PnsDriver
driver = PnsDriver(sys.argv[1], timeout=60.0)
driver.connect()
driver.start_control()
assert driver.outgoing_call(1, 1).fields["result"] == 1
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
reply = driver.outgoing_call(2, 2)
print(json.dumps({"seconds": time.monotonic() - start, "result": reply.fields["result"]}),
      flush=True)
"""
"""A PNS with one call that sends a second Outgoing-Call-Request when told."""


def _role(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/pptp-alg/gateways", timeout=1) as answer:
            return str(json.load(answer)["gateways"][0]["role"])
    except OSError:
        return None


def _setup(path: Path, calls: int, rounds: int) -> list[SetupResult]:
    return [measure_setup(path, "new", calls) for _ in range(rounds)]


def _summary(results: list[SetupResult]) -> dict[str, Any]:
    return {"median_us": statistics.median(r.median_us for r in results),
            "p99_us": statistics.median(r.p99_us for r in results),
            "failed": sum(r.failed for r in results)}


def _path(state: lab.LabState, rest_url: str, pid: int | None) -> Path:
    unit = state.gateway(1)
    return Path(state.store, unit.client(1), unit.server_namespace, unit.server_ip, pid,
                unit.bridge, rest_url)


def one_failover(state: lab.LabState, path: Path) -> dict[str, float]:
    """Kill the master with a call held and a request sent in the gap; the times."""
    master = lab.wait_master(state.name, state.gateway(1).name, 30)
    others = [c for c in state.controllers if c.index != master]
    out: dict[str, float] = {}

    def gap() -> None:
        driver = subprocess.Popen(ns_argv(path.client, [sys.executable, "-c", DRIVER,
                                                        path.server_ip]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert driver.stdin is not None and driver.stdout is not None
            if driver.stdout.readline().strip() != "ready":
                raise RuntimeError("the PNS did not set up its first call")
            killed = time.monotonic()
            lab.kill_controller(state.name, master)
            driver.stdin.write("go\n")
            driver.stdin.flush()
            while not any(_role(c.rest_url) == "master" for c in others):
                if time.monotonic() - killed > 30:
                    raise RuntimeError("no standby became master within 30 s")
                time.sleep(0.05)
            out["new_master_s"] = time.monotonic() - killed
            reply = json.loads(driver.stdout.readline())
            out["segment_passed_s"] = time.monotonic() - killed
            out["result"] = reply["result"]
        finally:
            driver.kill()
            driver.wait()

    server = subprocess.Popen(ns_argv(path.server, [sys.executable, "-m", "bench.pptp_peers",
                                                    "pac", path.server_ip]),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        gap()
    finally:
        server.kill()
        server.wait()
    lab.start_controller(state.name, master)
    while _role(state.controller_at(master).rest_url) != "standby":
        time.sleep(0.1)
    return out


def measure(calls: int, rounds: int) -> dict[str, Any]:
    """Both labs' call setup, and the failovers; see the module docstring."""
    setup: dict[str, dict[str, Any]] = {}
    state = lab.up(1, name=LAB, replace=True, options=dict(BENCH_OPTIONS), gre_demux=False)
    try:
        setup["sqlite"] = _summary(_setup(_path(state, state.rest_url, state.controller_pid),
                                          calls, rounds))
    finally:
        lab.down(name=LAB, purge=True)
    state = lab.up(1, name=LAB, replace=True, options=dict(BENCH_OPTIONS), gre_demux=False,
                   controllers=2, store="etcd")
    failovers: list[dict[str, float]] = []
    try:
        master = lab.wait_master(state.name, state.gateway(1).name, 30)
        one = state.controller_at(master)
        setup["etcd"] = _summary(_setup(_path(state, one.rest_url, one.pid), calls, rounds))
        for n in range(rounds):
            failovers.append(one_failover(state, _path(state, "", None)))
            print(f"failover {n + 1}: {failovers[-1]}", file=sys.stderr, flush=True)
    finally:
        lab.down(name=LAB, purge=True)
    return {
        "calls": calls, "rounds": rounds, "setup": setup,
        "setup_ratio_etcd_to_sqlite": setup["etcd"]["median_us"] / setup["sqlite"]["median_us"],
        "failovers": failovers,
        "new_master_s": statistics.median(f["new_master_s"] for f in failovers),
        "segment_passed_s": statistics.median(f["segment_passed_s"] for f in failovers),
        "failed_calls_in_gap": sum(1 for f in failovers if f["result"] != 1),
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown tables."""
    lines = [f"Call setup, {result['calls']} calls a round on new control connections, "
             f"{result['rounds']} rounds (medians of the rounds):", "",
             "| store | median (us) | p99 (us) | failed |", "|---|---|---|---|"]
    for name, way in result["setup"].items():
        lines.append(f"| {name} | {way['median_us']:,.0f} | {way['p99_us']:,.0f} | "
                     f"{way['failed']} |")
    lines += ["", f"etcd / sqlite: {result['setup_ratio_etcd_to_sqlite']:.2f}", "",
              f"Failover, {len(result['failovers'])} rounds (master SIGKILLed):", "",
              "| | median (s) | each (s) |", "|---|---|---|",
              f"| a standby is master | {result['new_master_s']:.2f} | "
              + ", ".join(f"{f['new_master_s']:.2f}" for f in result["failovers"]) + " |",
              f"| the request sent in the gap answered | {result['segment_passed_s']:.2f} | "
              + ", ".join(f"{f['segment_passed_s']:.2f}" for f in result["failovers"]) + " |",
              "", f"Calls requested in the gap and refused: {result['failed_calls_in_gap']}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print Markdown, write JSON and Markdown to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=FilePath, default=FilePath("bench/results"))
    args = parser.parse_args(argv)
    result = measure(args.calls, args.rounds)
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "failover.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
