"""Fragmented GRE replies per second: the server's datagrams bigger than the link MTU,
fragmented as its kernel would, through each peer in one run.

A call is held open (:mod:`bench.held`) and, on the gateway, a second one from another
inside address with the same Call ID makes the (server, public address) pair shared, as
in the seed's case. The server then sends a bounded burst of enhanced GRE datagrams of
:data:`PAYLOAD` bytes, each in two fragments (a raw ``AF_PACKET`` socket, frames built
once, identification rising), as fast as it can; the client's interface counts what
arrives (``bench.gre_rate``'s counter): delivered datagrams are its packets over the
fragments each datagram arrives in. The gateway's shared pair takes the controller path
(fragments reassembled in the core, translated, fragmented again), with or without the
GRE demultiplexer (with it, the switch steers the pair's fragments to the controller by
an ``ip_frag`` entry; whole packets keep the demux path: measured too, at 1400 bytes).

Run: ``python -m bench.frag_rate [--count N]`` (as root); prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from bench import topologies
from bench.gre_rate import S2C, Flow, _counted, _counter, flows, mac_of, measure, next_hop_mac
from bench.held import INTERFACE, add_sources, hold, pac
from bench.topologies import Path
from topo.netns import ns_argv

PAYLOAD = 2000
"""GRE payload bytes: 2036-byte datagrams, two fragments on a 1500-byte link."""
FRAGMENT = 1480
IPV4 = struct.Struct("!BBHHHBBH4s4s")


@dataclass
class FragResult:
    """One burst of fragmented datagrams through one path."""

    peer: str
    datagrams_sent: int
    sent_pps: float
    datagrams_delivered: float
    delivered_pps: float
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def fragments(src: str, dst: str, key: int, ident: int, payload: int = PAYLOAD
              ) -> list[bytes]:
    """The IPv4 fragments of one enhanced GRE datagram (key and sequence number)."""
    gre = struct.pack("!HHHHI", 0x3001, 0x880B, payload, key, ident) + b"\x55" * payload
    out = []
    for at in range(0, len(gre), FRAGMENT):
        chunk = gre[at:at + FRAGMENT]
        flags = at // 8 | (0x2000 if at + FRAGMENT < len(gre) else 0)
        header = IPV4.pack(0x45, 0, 20 + len(chunk), ident, flags, 64, 47, 0,
                           socket.inet_aton(src), socket.inet_aton(dst))
        out.append(header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + chunk)
    return out


def send(src_mac: str, dst_mac: str, src: str, dst: str, key: int, count: int) -> None:
    """Send ``count`` fragmented datagrams out of the namespace's interface; print what
    was sent and how long it took."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((INTERFACE, 0))
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) \
        + b"\x08\x00"
    frames = [[eth + f for f in fragments(src, dst, key, ident)] for ident in range(1, 65536)]
    started = time.monotonic()
    for n in range(count):
        for frame in frames[n % len(frames)]:
            sock.send(frame)
    seconds = time.monotonic() - started
    print(json.dumps({"sent": count, "seconds": seconds}), flush=True)


def burst(peer: str, flow: Flow, count: int) -> FragResult:
    """``count`` fragmented datagrams of ``flow``, counted at the receiver."""
    receiving = _counter(flow.receiver, "rx_packets")
    argv = [sys.executable, "-m", "bench.frag_rate", "send", mac_of(flow.sender),
            next_hop_mac(flow.sender, flow.dst_ip), flow.src_ip, flow.dst_ip, str(flow.key),
            str(count)]
    try:
        run = subprocess.run(ns_argv(flow.sender, argv), capture_output=True, text=True,
                             timeout=300, check=True)
    finally:
        delivered = _counted(receiving)
    sent = json.loads(run.stdout)
    per = len(fragments(flow.src_ip, flow.dst_ip, flow.key, 1))
    return FragResult(peer, count, round(count / sent["seconds"], 1),
                      int(delivered["packets"]) / per, round(float(delivered["pps"]) / per, 1),
                      round(sent["seconds"], 3))


def measure_path(path: Path, count: int, shared: bool, alone: bool = True
                 ) -> list[dict[str, object]]:
    """The server's fragmented datagrams to the held call (unless not ``alone``); with
    ``shared``, again once a second call shares the pair (and a burst of whole 1400-byte
    packets on it)."""
    results: list[dict[str, object]] = []
    with pac(path, log=True) as server, hold(path, 1) as first:
        call = first["held"][0]
        _wait(lambda: any(c["call_id"] == int(call["pac_call_id"]) for c in server.calls))
        flow = flows(path, server, call)[S2C]
        if alone:
            name = "gateway, flow path" if path.name == "gateway" else path.name
            results.append(burst(name, flow, count).as_dict())
        if not shared:
            return results
        other = add_sources(path.client, 1, first_host=250)
        with hold(path, 1, other, first_id=int(call["call_id"])) as second:
            pac_id = int(second["held"][0]["pac_call_id"])
            _wait(lambda: any(c["call_id"] == pac_id for c in server.calls))
            results.append(burst(f"{path.name}, shared pair", flow, count).as_dict())
            whole = measure(f"{path.name}, shared pair", S2C, flow, 1400, count)
            results.append({**whole.as_dict(), "whole_packets": True})
    return results


def _wait(done: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the PAC did not log the call")
        time.sleep(0.01)


Peer = tuple[Callable[[], AbstractContextManager[Path]], bool, bool]


def peers() -> Iterator[Peer]:
    """Each peer's topology, whether its pair is shared then (the gateway's), and whether
    its call is measured alone first."""
    yield lambda: topologies.gateway("bfrag"), True, True
    yield lambda: topologies.gateway("bfragd", gre_demux=True), True, False
    yield lambda: topologies.reference("bfref"), False, True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.frag_rate")
    sub = parser.add_subparsers(dest="role")
    s = sub.add_parser("send", help="send fragmented GRE (in the sender's namespace)")
    for name in ("src_mac", "dst_mac", "src", "dst"):
        s.add_argument(name)
    s.add_argument("key", type=int)
    s.add_argument("count", type=int)
    parser.add_argument("--count", type=int, default=20000, help="datagrams per burst")
    args = parser.parse_args(argv)
    if args.role == "send":
        send(args.src_mac, args.dst_mac, args.src, args.dst, args.key, args.count)
        return 0
    for make, shared, alone in peers():
        with make() as path:
            for result in measure_path(path, args.count, shared, alone):
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
