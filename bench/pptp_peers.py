"""PPTP peers for benchmarks: a PAC emulator and a PNS load generator (asyncio).

pptpd starts a process per call, which would measure pptpd; these peers answer at once
and hold thousands of control connections in one process. They speak RFC 2637 control
messages (encoded by ``alg.codec``) over real kernel TCP, with ``TCP_NODELAY``.

``pac LISTEN_IP [--log]``: answers Start-Control-Connection, Echo, Outgoing-Call-Request
(Call IDs counted across connections), Call-Clear-Request (with Call-Disconnect-Notify) and
Stop-Control-Connection; prints one JSON line when it listens and, with ``--log``, one per
call: the PNS's address and Call ID as the PAC saw them, and the PAC's own Call ID (what
GRE toward the PNS and from it carries as its key, RFC 2637 section 4).

``pns SERVER --calls N --mode new|existing [--connections K]``: sets up N calls, each on
a new control connection (``new``, as pptp-linux does, K at a time) or on K connections
kept open (``existing``, the calls cleared again at once), and prints one JSON line: the
Outgoing-Call-Request -> Outgoing-Call-Reply latency of every call (seconds), the whole
run's duration, and failures. ``--mode hold`` sets up N calls on one control connection
per ``--sources`` address (the calls shared out among them, each connection numbering its
Call IDs from ``--first-id``), prints the same line with every held call, and keeps them
until its standard input closes.

Run in a namespace: ``ip netns exec NS .venv/bin/python -m bench.pptp_peers pac 203.0.113.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence

from alg.codec import (
    PPTP_PORT,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    EchoReply,
    EchoRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    parse_message,
)

_LENGTH = struct.Struct("!H")


async def read_message(reader: asyncio.StreamReader) -> ControlMessage:
    """The next control message of a stream (framed by its Length field)."""
    head = await reader.readexactly(_LENGTH.size)
    (length,) = _LENGTH.unpack(head)
    return parse_message(head + await reader.readexactly(length - _LENGTH.size))


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# The PAC.

class _Ids:
    """The PAC's Call IDs, one sequence for all its connections (as a real PAC's)."""

    last = 0

    @classmethod
    def next(cls) -> int:
        cls.last = cls.last % 65535 + 1
        return cls.last


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 log: bool = False) -> None:
    _nodelay(writer)
    peer_ip = writer.get_extra_info("peername")[0]
    calls: dict[int, int] = {}
    try:
        while True:
            message = await read_message(reader)
            answer: ControlMessage | None = None
            if isinstance(message, StartControlConnectionRequest):
                answer = StartControlConnectionReply(host_name=b"bench-pac".ljust(64, b"\0"))
            elif isinstance(message, OutgoingCallRequest):
                next_id = _Ids.next()
                calls[message.call_id] = next_id
                answer = OutgoingCallReply(call_id=next_id, peer_call_id=message.call_id,
                                           result_code=1)
                if log:
                    print(json.dumps({"peer_ip": peer_ip, "peer_call_id": message.call_id,
                                      "call_id": next_id}), flush=True)
            elif isinstance(message, CallClearRequest):
                ours = calls.pop(message.call_id, None)
                if ours is not None:
                    answer = CallDisconnectNotify(call_id=ours, result_code=3)
            elif isinstance(message, EchoRequest):
                answer = EchoReply(identifier=message.identifier)
            elif isinstance(message, StopControlConnectionRequest):
                writer.write(StopControlConnectionReply().encode())
                await writer.drain()
                break
            if answer is not None:
                writer.write(answer.encode())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def pac(listen_ip: str, log: bool = False) -> None:
    """Serve TCP/1723 on ``listen_ip`` until killed."""
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, log), listen_ip, PPTP_PORT, backlog=4096)
    print(json.dumps({"listening": listen_ip}), flush=True)
    async with server:
        await server.serve_forever()


# The PNS.

class Connection:
    """One control connection of the PNS."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: str, source: str | None = None) -> Connection:
        reader, writer = await asyncio.open_connection(
            server, PPTP_PORT, local_addr=(source, 0) if source else None)
        _nodelay(writer)
        conn = cls(reader, writer)
        reply = await conn.ask(StartControlConnectionRequest(
            host_name=b"bench-pns".ljust(64, b"\0")))
        if not isinstance(reply, StartControlConnectionReply) or reply.result_code != 1:
            raise ConnectionError(f"no Start-Control-Connection-Reply: {reply!r}")
        return conn

    async def ask(self, message: ControlMessage) -> ControlMessage:
        self.writer.write(message.encode())
        return await read_message(self.reader)

    async def call(self, call_id: int) -> float:
        """Outgoing-Call-Request to Outgoing-Call-Reply, in seconds."""
        return (await self.place(call_id))[0]

    async def place(self, call_id: int) -> tuple[float, int]:
        """Outgoing-Call-Request to Outgoing-Call-Reply: seconds, and the PAC's Call ID."""
        started = time.perf_counter()
        reply = await self.ask(OutgoingCallRequest(call_id=call_id, call_serial_number=call_id))
        took = time.perf_counter() - started
        if not isinstance(reply, OutgoingCallReply) or reply.peer_call_id != call_id:
            raise ConnectionError(f"no Outgoing-Call-Reply for {call_id}: {reply!r}")
        return took, reply.call_id

    async def clear(self, call_id: int) -> None:
        reply = await self.ask(CallClearRequest(call_id=call_id))
        if not isinstance(reply, CallDisconnectNotify):
            raise ConnectionError(f"no Call-Disconnect-Notify for {call_id}: {reply!r}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def hold(server: str, calls: int, sources: Sequence[str | None], first_id: int = 1
               ) -> dict[str, object]:
    """Set up ``calls`` calls on one connection per source, print them, hold them until
    standard input closes."""
    latencies: list[float] = []
    failures: list[str] = []
    held: list[dict[str, object]] = []
    started = time.perf_counter()

    async def worker(source: str | None, count: int) -> Connection | None:
        try:
            conn = await Connection.open(server, source)
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures.extend([f"{type(exc).__name__}: {exc}"] * count)
            return None
        for n in range(count):
            call_id = (first_id + n - 1) % 65535 + 1
            try:
                took, pac_id = await conn.place(call_id)
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.extend([f"{type(exc).__name__}: {exc}"] * (count - n))
                break
            latencies.append(took)
            held.append({"source": source, "call_id": call_id, "pac_call_id": pac_id})
        return conn

    shares = [calls // len(sources) + (i < calls % len(sources)) for i in range(len(sources))]
    conns = await asyncio.gather(*(worker(s, n) for s, n in zip(sources, shares, strict=True)))
    result: dict[str, object] = {
        "mode": "hold", "calls": calls, "latencies": latencies, "held": held,
        "seconds": time.perf_counter() - started, "failures": failures[:10],
        "failed": len(failures)}
    print(json.dumps(result), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for conn in conns:
        if conn is not None:
            await conn.close()
    return result


async def pns(server: str, calls: int, mode: str, connections: int) -> dict[str, object]:
    """Set up ``calls`` calls; the latency of each and the run's duration."""
    latencies: list[float] = []
    failures: list[str] = []
    started = time.perf_counter()
    if mode == "new":
        async def opener(share: range) -> None:
            for n in share:
                try:
                    conn = await Connection.open(server)
                    latencies.append(await conn.call(1 + n % 65535))
                    await conn.close()
                except (OSError, asyncio.IncompleteReadError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(opener(range(i, calls, connections))
                               for i in range(connections)))
    else:
        conns = [await Connection.open(server) for _ in range(connections)]

        async def worker(conn: Connection, share: range) -> None:
            for n in share:
                try:
                    latencies.append(await conn.call(1 + n % 65535))
                    await conn.clear(1 + n % 65535)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return

        await asyncio.gather(*(worker(c, range(i, calls, connections))
                               for i, c in enumerate(conns)))
        for conn in conns:
            await conn.close()
    return {"mode": mode, "calls": calls, "latencies": latencies,
            "seconds": time.perf_counter() - started, "failures": failures[:10],
            "failed": len(failures)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pptp_peers")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("pac")
    p.add_argument("listen_ip")
    p.add_argument("--log", action="store_true", help="one JSON line per call")
    p = sub.add_parser("pns")
    p.add_argument("server")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--mode", choices=("new", "existing", "hold"), default="new")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--sources", default="",
                   help="hold: comma-separated local addresses, one connection each")
    p.add_argument("--first-id", type=int, default=1, help="hold: each connection's first Call ID")
    args = parser.parse_args(argv)
    if args.role == "pac":
        asyncio.run(pac(args.listen_ip, args.log))
        return 0
    if args.mode == "hold":
        sources: list[str | None] = [s for s in args.sources.split(",") if s] or [None]
        result = asyncio.run(hold(args.server, args.calls, sources, args.first_id))
        return 0 if not result["failed"] else 1
    result = asyncio.run(pns(args.server, args.calls, args.mode, args.connections))
    print(json.dumps(result), flush=True)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
