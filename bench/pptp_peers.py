"""PPTP peers for benchmarks: a PAC emulator and a PNS load generator (asyncio).

pptpd starts a process per call, which would measure pptpd; these peers answer at once
and hold thousands of control connections in one process. They speak RFC 2637 control
messages (encoded by ``alg.codec``) over real kernel TCP, with ``TCP_NODELAY``.

``pac LISTEN_IP``: answers Start-Control-Connection, Echo, Outgoing-Call-Request (Call
IDs counted per connection), Call-Clear-Request (with Call-Disconnect-Notify) and
Stop-Control-Connection; prints one JSON line when it listens.

``pns SERVER --calls N --mode new|existing [--connections K]``: sets up N calls, each on
a new control connection (``new``, as pptp-linux does) or on K connections kept open
(``existing``, the calls cleared again at once), and prints one JSON line: the
Outgoing-Call-Request -> Outgoing-Call-Reply latency of every call (seconds), the whole
run's duration, and failures.

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

async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _nodelay(writer)
    next_id = 0
    calls: dict[int, int] = {}
    try:
        while True:
            message = await read_message(reader)
            answer: ControlMessage | None = None
            if isinstance(message, StartControlConnectionRequest):
                answer = StartControlConnectionReply(host_name=b"bench-pac".ljust(64, b"\0"))
            elif isinstance(message, OutgoingCallRequest):
                next_id = (next_id + 1) % 65536
                calls[message.call_id] = next_id
                answer = OutgoingCallReply(call_id=next_id, peer_call_id=message.call_id,
                                           result_code=1)
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


async def pac(listen_ip: str) -> None:
    """Serve TCP/1723 on ``listen_ip`` until killed."""
    server = await asyncio.start_server(_serve, listen_ip, PPTP_PORT, backlog=4096)
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
    async def open(cls, server: str) -> Connection:
        reader, writer = await asyncio.open_connection(server, PPTP_PORT)
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
        started = time.perf_counter()
        reply = await self.ask(OutgoingCallRequest(call_id=call_id, call_serial_number=call_id))
        took = time.perf_counter() - started
        if not isinstance(reply, OutgoingCallReply) or reply.peer_call_id != call_id:
            raise ConnectionError(f"no Outgoing-Call-Reply for {call_id}: {reply!r}")
        return took

    async def clear(self, call_id: int) -> None:
        reply = await self.ask(CallClearRequest(call_id=call_id))
        if not isinstance(reply, CallDisconnectNotify):
            raise ConnectionError(f"no Call-Disconnect-Notify for {call_id}: {reply!r}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def pns(server: str, calls: int, mode: str, connections: int) -> dict[str, object]:
    """Set up ``calls`` calls; the latency of each and the run's duration."""
    latencies: list[float] = []
    failures: list[str] = []
    started = time.perf_counter()
    if mode == "new":
        for n in range(calls):
            try:
                conn = await Connection.open(server)
                latencies.append(await conn.call(1 + n % 65535))
                await conn.close()
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
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
    p = sub.add_parser("pns")
    p.add_argument("server")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--mode", choices=("new", "existing"), default="new")
    p.add_argument("--connections", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "pac":
        asyncio.run(pac(args.listen_ip))
        return 0
    result = asyncio.run(pns(args.server, args.calls, args.mode, args.connections))
    print(json.dumps(result), flush=True)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
