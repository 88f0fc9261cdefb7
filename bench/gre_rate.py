"""Figure 3: GRE packets per second through a path, each way, at two payload sizes.

``trafgen`` (netsniff-ng; a packet ring, one process) sends a bounded burst of enhanced
GRE packets (RFC 2637 section 4.1: key and sequence number present, version 1) of a call
held open by :mod:`bench.held`, with that call's addresses and key, as fast as it can; a
counter in each namespace (``python -m bench.gre_rate count``) reads its interface's
transmit or receive counter every few milliseconds. Offered is the rate at the sender's
interface, delivered the rate at the receiver's, each over the middle 90% of the burst
(:func:`rate`), so that neither the sender's start nor a stray packet bends them.

Client -> server packets carry the PAC's Call ID as their key and go to the server's
address; server -> client packets carry the PNS's Call ID as the server saw it and go to
the address the server saw (the public address behind a NAT).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path as FilePath
from typing import Any

from bench.held import INTERFACE, Pac, add_sources, hold, pac, primary_address
from bench.topologies import Path
from topo.netns import ns_argv, ns_run

SIZES = (64, 1400)
C2S = "client -> server"
S2C = "server -> client"
POLL = 0.005
QUIET = 0.5


@dataclass
class GreResult:
    """One burst through one path."""

    peer: str
    direction: str
    payload: int
    sent: int
    offered_pps: float
    delivered: int
    delivered_pps: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Flow:
    """One direction of a call: where its GRE goes from and to, and its key."""

    sender: str
    receiver: str
    src_ip: str
    dst_ip: str
    key: int


def mac_of(netns: str) -> str:
    """The MAC address of the namespace's interface."""
    data = json.loads(ns_run(netns, "ip", "-j", "link", "show", "dev", INTERFACE))
    mac: str = data[0]["address"]
    return mac


def next_hop_mac(netns: str, dst_ip: str) -> str:
    """The MAC the namespace sends ``dst_ip``'s packets to (its neighbour entry; the
    call's control connection has just used it)."""
    route = json.loads(ns_run(netns, "ip", "-j", "route", "get", dst_ip))[0]
    hop = route.get("gateway", dst_ip)
    for _ in range(2):
        for entry in json.loads(ns_run(netns, "ip", "-j", "neigh", "show", hop)):
            if entry.get("lladdr"):
                mac: str = entry["lladdr"]
                return mac
        ns_run(netns, "ping", "-c", "1", "-W", "1", hop, check=False)
    raise RuntimeError(f"{netns} has no neighbour entry for {hop}")


def trafgen_config(src_mac: str, dst_mac: str, flow: Flow, payload: int) -> str:
    """A trafgen packet: Ethernet, IPv4 (protocol 47), enhanced GRE, ``payload`` bytes."""
    return (
        f"{{ eth(da={dst_mac}, sa={src_mac}), "
        f"ipv4(saddr={flow.src_ip}, daddr={flow.dst_ip}, proto=47, ttl=64, df), "
        f"c16(0x3001), c16(0x880b), c16({payload}), c16({flow.key}), c32(1), "
        f"fill(0x55, {payload}) }}\n"
    )


def send_burst(flow: Flow, payload: int, count: int, timeout: float = 120) -> None:
    """Send ``count`` packets of ``flow``."""
    config = trafgen_config(mac_of(flow.sender), next_hop_mac(flow.sender, flow.dst_ip),
                            flow, payload)
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg:
        cfg.write(config)
        cfg.flush()
        run = subprocess.run(
            ns_argv(flow.sender, ["trafgen", "-o", INTERFACE, "-i", cfg.name, "-n", str(count),
                                  "-P", "1", "--no-sock-mem", "-C"]),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    if run.returncode != 0:
        raise RuntimeError(f"trafgen failed: {run.stderr[-2000:]}")


def flows(path: Path, pac: Pac, call: dict[str, Any]) -> dict[str, Flow]:
    """Both directions of a call that :func:`bench.held.hold` holds on ``path``."""
    seen = pac.call_for(int(call["pac_call_id"]))
    source = call["source"] or str(primary_address(path.client).ip)
    return {
        C2S: Flow(path.client, path.server, source, path.server_ip, int(call["pac_call_id"])),
        S2C: Flow(path.server, path.client, path.server_ip, seen["peer_ip"],
                  int(seen["peer_call_id"])),
    }


def _counter(netns: str, stat: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ns_argv(netns, [sys.executable, "-m", "bench.gre_rate", "count", "--stat", stat]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def _counted(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The counter's result, once told that the sender is done."""
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    data: dict[str, Any] = json.loads(line) if line else {"packets": 0, "pps": 0.0}
    return data


def measure(peer: str, direction: str, flow: Flow, payload: int, count: int) -> GreResult:
    """One burst of ``flow``: sent as counted at the sender's interface, delivered as
    counted at the receiver's."""
    sending = _counter(flow.sender, "tx_packets")
    receiving = _counter(flow.receiver, "rx_packets")
    try:
        send_burst(flow, payload, count)
    finally:
        offered, delivered = _counted(sending), _counted(receiving)
    return GreResult(peer, direction, payload, int(offered["packets"]), float(offered["pps"]),
                     int(delivered["packets"]), float(delivered["pps"]))


def _wait_logged(pac: Pac, pac_call_id: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not any(c["call_id"] == pac_call_id for c in pac.calls):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the PAC did not log call {pac_call_id}")
        time.sleep(0.01)


def measure_path(path: Path, count: int, shared: bool = False, alone: bool = True
                 ) -> list[GreResult]:
    """Every direction and size through ``path`` with one call held (unless not
    ``alone``); with ``shared``, again with a second call from another inside address on
    the same (server, public address) pair, as in the seed's case (the gateway can then
    no longer tell the server's packets apart by flow entries)."""
    name = "gateway, flow path" if path.name == "gateway" else path.name
    results = []
    with pac(path, log=True) as server, hold(path, 1) as first:
        call = first["held"][0]
        _wait_logged(server, int(call["pac_call_id"]))
        both = flows(path, server, call)
        if alone:
            results += [measure(name, d, both[d], size, count)
                        for d in (C2S, S2C) for size in SIZES]
        if shared:
            other = add_sources(path.client, 1, first_host=250)
            with hold(path, 1, other, first_id=int(call["call_id"])) as second:
                _wait_logged(server, int(second["held"][0]["pac_call_id"]))
                results += [measure(f"{path.name}, shared pair", d, both[d], size, count)
                            for d in (C2S, S2C) for size in SIZES]
    return results


def _packets(interface: str, stat: str) -> int:
    return int(FilePath(f"/sys/class/net/{interface}/statistics/{stat}").read_text())


def rate(samples: Sequence[tuple[float, int]], cut: float = 0.05) -> float:
    """Packets per second over a burst's middle: from the sample where ``cut`` of its
    packets had been counted to the one where ``1 - cut`` had (stray packets before or
    after the burst and the counter's polling then do not bend the figure)."""
    if not samples:
        return 0.0
    total = samples[-1][1]
    low = next(s for s in samples if s[1] >= cut * total)
    high = next(s for s in samples if s[1] >= (1 - cut) * total)
    if high[0] <= low[0]:
        return 0.0
    return (high[1] - low[1]) / (high[0] - low[0])


def watch(read: Callable[[], int], sender_done: Callable[[], bool],
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep, quiet: float = QUIET,
          timeout: float = 120) -> list[tuple[float, int]]:
    """Samples (time, packets since the start) of a counter, each time it changed,
    until the sender is done and no packet came for ``quiet`` seconds (or ``timeout``).
    Waiting for the sender matters: a stray packet before a slow-starting burst must not
    open the quiet window that ends the count."""
    base = read()
    samples: list[tuple[float, int]] = []
    started = last = clock()
    while True:
        sleep(POLL)
        now, seen = clock(), read() - base
        if seen != (samples[-1][1] if samples else 0):
            samples.append((now, seen))
            last = now
        elif (sender_done() and now - last > quiet) or now - started > timeout:
            return samples


def count(interface: str = INTERFACE, stat: str = "rx_packets", quiet: float = QUIET,
          timeout: float = 120) -> None:
    """Print one line when ready, then, after standard input closes (the sender is
    done) and no packet came for ``quiet`` seconds, one JSON line: the packets counted
    and their rate."""
    done = threading.Event()

    def wait_for_sender() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_sender, daemon=True).start()
    print(json.dumps({"counting": interface}), flush=True)
    samples = watch(lambda: _packets(interface, stat), done.is_set, quiet=quiet,
                    timeout=timeout)
    total = samples[-1][1] if samples else 0
    print(json.dumps({"packets": total, "pps": rate(samples)}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gre_rate")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("count", help="count packets arriving on the namespace's interface")
    p.add_argument("--interface", default=INTERFACE)
    p.add_argument("--stat", choices=("rx_packets", "tx_packets"), default="rx_packets")
    p.add_argument("--quiet", type=float, default=QUIET)
    args = parser.parse_args(argv)
    count(args.interface, args.stat, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
