"""What the restart store costs per call setup: the core alone against the core with the
app's SQLite store, in the same run.

Each call is set up as pptp-linux does, on a new control connection (SYN, SYN-ACK, ACK,
Start-Control-Connection-Request and -Reply, Outgoing-Call-Request and -Reply: seven
segments through :meth:`alg.engine.Gateway.handle`), from 100 inside addresses to one
server through one public address. The *store* peer also writes each output's
``records`` to a :class:`ryu_apps.store.Store` (WAL mode, ``synchronous=NORMAL``), as the
app does before it sends anything. With ``--etcd``, the *etcd store* peer writes them to
a :class:`ryu_apps.etcd_store.EtcdStore` on the cluster of those client URLs instead (one
transaction per output, under a prefix of its own that it clears after each round). Each
peer runs ``--rounds`` times, alternating; the medians are reported with their ratio.
Nothing here touches a network but the etcd members named.

Run::

    .venv/bin/python -m bench.store_cost [--calls 2000] [--rounds 5] [--dir /tmp]
        [--etcd http://127.0.0.1:2379,...]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from alg.codec import (
    PPTP_PORT,
    OutgoingCallReply,
    OutgoingCallRequest,
    StartControlConnectionReply,
    StartControlConnectionRequest,
)
from alg.config import AlgConfig
from alg.engine import Gateway
from alg.events import TCP_ACK, TCP_PSH, TCP_SYN, Direction, Output, SendTcp, TcpSegment
from ryu_apps.etcd_store import EtcdStore
from ryu_apps.store import Store

SERVER = IPv4Address("203.0.113.1")
PUBLIC = IPv4Address("203.0.113.2")
SEQ_MOD = 1 << 32
SCCRQ = StartControlConnectionRequest(host_name=b"pns".ljust(64, b"\0")).encode()
SCCRP = StartControlConnectionReply(host_name=b"pac".ljust(64, b"\0")).encode()

Sink = Callable[[Output], None]


def _segment(src: IPv4Address, sport: int, dst: IPv4Address, dport: int, flags: int,
             seq: int, ack: int, payload: bytes = b"") -> TcpSegment:
    return TcpSegment(src, sport, dst, dport, seq % SEQ_MOD, ack % SEQ_MOD, flags, 65535,
                      payload)


def set_up_calls(gw: Gateway, calls: int, sink: Sink) -> None:
    """``calls`` calls, each on a new control connection, through ``gw``."""
    now = 1.0
    for n in range(calls):
        client = IPv4Address(int(IPv4Address("192.168.1.1")) + n % 100)
        port = 20000 + n // 100
        c_isn, s_isn = (1000 + 7919 * n) % SEQ_MOD, (900000 + 104729 * n) % SEQ_MOD
        call_id = n % 65536

        out = functools.partial(_segment, client, port, SERVER, PPTP_PORT)
        first = gw.handle(Direction.OUTBOUND, out(TCP_SYN, c_isn, 0), now)
        sink(first)
        [syn] = [e.segment for e in first.emits if isinstance(e, SendTcp)]
        back = functools.partial(_segment, SERVER, PPTP_PORT, PUBLIC, syn.src_port)
        c, s = c_isn + 1, s_isn + 1
        steps = [
            (Direction.INBOUND, back(TCP_SYN | TCP_ACK, s_isn, c)),
            (Direction.OUTBOUND, out(TCP_ACK, c, s)),
            (Direction.OUTBOUND, out(TCP_ACK | TCP_PSH, c, s, SCCRQ)),
            (Direction.INBOUND, back(TCP_ACK | TCP_PSH, s, c + len(SCCRQ), SCCRP)),
        ]
        c += len(SCCRQ)
        s += len(SCCRP)
        request = OutgoingCallRequest(call_id=call_id, call_serial_number=n % 65536).encode()
        steps.append((Direction.OUTBOUND, out(TCP_ACK | TCP_PSH, c, s, request)))
        reply = OutgoingCallReply(call_id=n % 65536, peer_call_id=call_id,
                                  result_code=1).encode()
        steps.append((Direction.INBOUND,
                      back(TCP_ACK | TCP_PSH, s, c + len(request), reply)))
        for direction, seg in steps:
            sink(gw.handle(direction, seg, now))
        now += 0.0001
    if gw.calls_in_progress != calls:
        raise RuntimeError(f"{gw.calls_in_progress} of {calls} calls set up")


def _config(calls: int) -> AlgConfig:
    """The core's options for ``calls`` calls from 100 clients (the bench's one inside
    network making calls by the thousand, as ``bench.topologies.BENCH_OPTIONS``)."""
    return AlgConfig(public_ips=(PUBLIC,), max_calls=calls + 1, max_calls_per_host=calls + 1,
                     max_call_ids_per_host=65536)


def run_core(calls: int) -> float:
    gw = Gateway(_config(calls))
    started = time.perf_counter()
    set_up_calls(gw, calls, lambda _out: None)
    return time.perf_counter() - started


def run_store(calls: int, folder: Path) -> tuple[float, int, int]:
    path = folder / f"bench-store-{os.getpid()}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(path)
    gw = Gateway(_config(calls))
    started = time.perf_counter()
    set_up_calls(gw, calls, lambda out: store.write(out.records))
    took = time.perf_counter() - started
    writes, records = store.writes, store.records_written
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return took, writes, records


def run_etcd(calls: int, endpoints: list[str]) -> float:
    store = EtcdStore(endpoints, "bench", f"store-cost-{os.getpid()}")
    store.clear()
    gw = Gateway(_config(calls))
    started = time.perf_counter()
    set_up_calls(gw, calls, lambda out: store.write(out.records))
    took = time.perf_counter() - started
    store.clear()
    store.close()
    return took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--etcd", default="", help="etcd client URLs, comma-separated")
    args = parser.parse_args(argv)
    endpoints = [e for e in args.etcd.split(",") if e]
    core: list[float] = []
    store: list[float] = []
    etcd: list[float] = []
    writes = records = 0
    for _ in range(args.rounds):
        core.append(run_core(args.calls))
        took, writes, records = run_store(args.calls, args.dir)
        store.append(took)
        if endpoints:
            etcd.append(run_etcd(args.calls, endpoints))
    per_core = statistics.median(core) / args.calls * 1e6
    per_store = statistics.median(store) / args.calls * 1e6
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}, SQLite in {args.dir}")
    print(f"{args.calls} call setups on new control connections, median of {args.rounds} "
          f"rounds")
    print("| peer | us per call setup | ratio to core alone |")
    print("|---|---|---|")
    print(f"| core alone | {per_core:.1f} | 1.00 |")
    print(f"| core + store | {per_store:.1f} | {per_store / per_core:.2f} |")
    if etcd:
        per_etcd = statistics.median(etcd) / args.calls * 1e6
        print(f"| core + etcd store ({len(endpoints)} members) | {per_etcd:.1f} | "
              f"{per_etcd / per_core:.2f} |")
    print(f"store: {writes / args.calls:.1f} transactions and {records / args.calls:.1f} "
          f"records per call setup; {per_store - per_core:.1f} us added per call setup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
