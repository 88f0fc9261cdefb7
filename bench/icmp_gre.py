"""What an ICMP error from outside that quotes a call's GRE costs the core, with many
calls on one (server, public address) pair.

``--calls`` calls are set up as in ``bench.store_cost`` (each on its own control
connection, from 100 inside addresses to one server through one public address), then
``--errors`` Destination Unreachable messages from a router, each quoting the
client -> server GRE of one of the calls (its server Call ID in the key), go through
:meth:`alg.engine.Gateway.handle`; every one must reach its call's client. The median of
``--rounds`` rounds is reported. Nothing here touches a network.

Run::

    .venv/bin/python -m bench.icmp_gre [--calls 20000] [--errors 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

from alg.config import AlgConfig
from alg.engine import Gateway
from alg.events import Direction, IcmpMessage, SendIcmp
from alg.icmp import DESTINATION_UNREACHABLE, build, checksum
from bench.store_cost import PUBLIC, SERVER, set_up_calls

ROUTER = IPv4Address("198.51.100.9")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_GRE = struct.Struct("!HHHH")


def gre_error(server_call_id: int) -> IcmpMessage:
    """A router's port unreachable about client -> server GRE with key ``server_call_id``."""
    gre = _GRE.pack(0x2001, 0x880B, 0, server_call_id)
    header = _IPV4.pack(0x45, 0, _IPV4.size + len(gre), 1, 0, 64, 47, 0, PUBLIC.packed,
                        SERVER.packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return IcmpMessage(ROUTER, PUBLIC, build(DESTINATION_UNREACHABLE, 3, bytes(4),
                                             header + gre))


def run(calls: int, errors: int) -> float:
    """Seconds per error, with ``calls`` calls on the pair."""
    gw = Gateway(AlgConfig(public_ips=(PUBLIC,), max_calls=calls + 1,
                           max_calls_per_host=calls + 1, max_call_ids_per_host=65536,
                           max_connections_per_host=calls, max_handshakes_per_host=calls,
                           max_sessions_per_host=calls + 1, max_sessions=2 * calls + 1))
    set_up_calls(gw, calls, lambda _out: None)
    messages = [gre_error((n * 7919) % calls) for n in range(errors)]
    started = time.perf_counter()
    for message in messages:
        out = gw.handle(Direction.INBOUND, message, 2.0)
        if not (out.emits and isinstance(out.emits[0], SendIcmp)):
            raise RuntimeError(f"an error found no call: {out.drop_reason}")
    return (time.perf_counter() - started) / errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.icmp_gre")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--errors", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    took = statistics.median(run(args.calls, args.errors) for _ in range(args.rounds))
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}")
    print(f"{args.calls} calls on one (server, public address) pair, {args.errors} ICMP "
          f"errors quoting their GRE, median of {args.rounds} rounds: "
          f"{took * 1e6:.1f} us per error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
