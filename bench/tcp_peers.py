"""TCP peers for figure 4: new connections per second through the NAPT (asyncio).

``server LISTEN_IP``: accepts on :data:`PORT`, answers each connection's one byte with
one byte, then closes; prints one JSON line when it listens.

``client SERVER --connections N [--parallel K]``: opens N connections, K at a time,
each sending one byte and waiting for the answer, then closing; prints one JSON line:
the connect-to-answer time of each connection (seconds), the run's duration, failures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

PORT = 5001


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.readexactly(1)
        writer.write(b"y")
        await writer.drain()
    writer.close()


async def server(listen_ip: str) -> None:
    """Serve :data:`PORT` on ``listen_ip`` until killed."""
    srv = await asyncio.start_server(_answer, listen_ip, PORT, backlog=4096)
    print(json.dumps({"listening": listen_ip}), flush=True)
    async with srv:
        await srv.serve_forever()


async def client(server_ip: str, connections: int, parallel: int) -> dict[str, object]:
    """Open ``connections`` connections, ``parallel`` at a time."""
    latencies: list[float] = []
    failures: list[str] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(server_ip, PORT)
            writer.write(b"x")
            await reader.readexactly(1)
            latencies.append(time.perf_counter() - started)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    seconds = await spread(lambda _i: one(), connections, parallel)
    return {"connections": connections, "latencies": latencies, "seconds": seconds,
            "failed": len(failures), "failures": failures[:10]}


async def spread(one: Callable[[int], Awaitable[None]], count: int, parallel: int) -> float:
    """Run ``one(i)`` for i in 0..count-1, ``parallel`` at a time, each worker taking
    every ``parallel``-th; return the seconds it took."""
    async def worker(share: range) -> None:
        for i in share:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(range(i, count, parallel)) for i in range(parallel)))
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tcp_peers")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("server")
    p.add_argument("listen_ip")
    p = sub.add_parser("client")
    p.add_argument("server")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "server":
        asyncio.run(server(args.listen_ip))
        return 0
    result = asyncio.run(client(args.server, args.connections, args.parallel))
    print(json.dumps(result), flush=True)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
