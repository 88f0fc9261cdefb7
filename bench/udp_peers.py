"""UDP peers for figure 6: new UDP sessions per second through the NAPT (asyncio).

``server LISTEN_IP``: answers each datagram to :data:`PORT` with one byte, from the same
socket; prints one JSON line when it listens.

``client SERVER --sessions N [--parallel K]``: N sessions, K at a time, each a socket of
its own bound to source port ``--first-port + i`` (so that every session is a new
5-tuple, never one whose state a NAT still holds), sending one byte and waiting up to
``--timeout`` seconds for the answer, then closed; prints one JSON line: the send-to-answer
time of each answered session (seconds), the run's duration, failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

from bench.tcp_peers import spread

PORT = 5002
FIRST_PORT = 20000
LAST_PORT = 65535


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(b"y", addr)


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Future[None]) -> None:
        self.answered = answered

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.answered.done():
            self.answered.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc)


async def server(listen_ip: str) -> None:
    """Answer datagrams to :data:`PORT` on ``listen_ip`` until killed."""
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(_Echo, local_addr=(listen_ip, PORT))
    echo.transport = transport
    print(json.dumps({"listening": listen_ip}), flush=True)
    await asyncio.Event().wait()


async def client(server_ip: str, sessions: int, parallel: int, first_port: int = FIRST_PORT,
                 timeout: float = 1.0) -> dict[str, object]:
    """Open ``sessions`` sessions from ports ``first_port`` on, ``parallel`` at a time."""
    if sessions < 0 or not 0 < first_port <= LAST_PORT - sessions + 1:
        raise ValueError(f"{sessions} sessions from port {first_port} pass {LAST_PORT}")
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures: list[str] = []

    async def one(port: int) -> None:
        answered: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Answer(answered), local_addr=("0.0.0.0", port),
                remote_addr=(server_ip, PORT))
        except OSError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return
        try:
            transport.sendto(b"x")
            await asyncio.wait_for(answered, timeout)
            latencies.append(time.perf_counter() - started)
        except (OSError, TimeoutError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            transport.close()

    seconds = await spread(lambda i: one(first_port + i), sessions, parallel)
    return {"sessions": sessions, "latencies": latencies, "seconds": seconds,
            "failed": len(failures), "failures": failures[:10]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.udp_peers")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("server")
    p.add_argument("listen_ip")
    p = sub.add_parser("client")
    p.add_argument("server")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--first-port", type=int, default=FIRST_PORT)
    p.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.role == "server":
        asyncio.run(server(args.listen_ip))
        return 0
    result = asyncio.run(client(args.server, args.sessions, args.parallel, args.first_port,
                                args.timeout))
    print(json.dumps(result), flush=True)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
