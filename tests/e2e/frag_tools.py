"""GRE bigger than the link MTU, for the fragment tests: run in a namespace as
``python -m tests.e2e.frag_tools send|count ...``; each prints one JSON line.

``send`` writes enhanced GRE datagrams of ``--size`` bytes from a raw socket with path-MTU
discovery off, so that the kernel fragments them for its link, as a sender's kernel
fragments PPP frames of a 1500-byte PPP MTU. ``count`` reads GRE from a raw socket (the
kernel hands it datagrams it put together) and counts, per key, the datagrams of the
sender's size whose payload arrived intact.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

from topo.pptp_wire import gre_encode, ppp_payload

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
MARK = b"frag:"


def payload(key: int, n: int, size: int) -> bytes:
    """The PPP frame of datagram ``n`` of ``key``: a marker, then a pattern to check."""
    head = MARK + struct.pack("!HI", key, n)
    body = bytes((key + n + i) & 0xFF for i in range(max(0, size - len(head) - 4)))
    return ppp_payload(0x0021, head + body)


def send(dst: str, keys: list[int], count: int, size: int, interval: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    sent = 0
    for n in range(count):
        for key in keys:
            sock.sendto(gre_encode(key, payload(key, n, size), seq=n + 1), (dst, 0))
            sent += 1
        time.sleep(interval)
    print(json.dumps({"sent": sent, "bytes": len(gre_encode(0, payload(0, 0, size), seq=1))}))


def count(seconds: float, size: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    print(json.dumps({"ready": True}), flush=True)
    intact: dict[int, set[int]] = {}
    damaged = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            continue
        data = sock.recv(70000)
        ihl = (data[0] & 0x0F) * 4
        gre = data[ihl:]
        if len(gre) < 8 or struct.unpack_from("!H", gre, 2)[0] != 0x880B:
            continue
        key = struct.unpack_from("!H", gre, 6)[0]
        header = 8 + (4 if gre[0] & 0x10 else 0) + (4 if gre[1] & 0x80 else 0)
        frame = gre[header:]
        at = frame.find(MARK)
        if at < 0:
            continue
        marked_key, n = struct.unpack_from("!HI", frame, at + len(MARK))
        if frame == payload(marked_key, n, size):
            intact.setdefault(key, set()).add(n)
        else:
            damaged += 1
    print(json.dumps({"by_key": {str(k): len(v) for k, v in intact.items()},
                      "damaged": damaged}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frag_tools")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send")
    s.add_argument("dst")
    s.add_argument("--key", type=int, action="append", required=True)
    s.add_argument("--count", type=int, default=40)
    s.add_argument("--size", type=int, default=3000)
    s.add_argument("--interval", type=float, default=0.02)
    c = sub.add_parser("count")
    c.add_argument("--seconds", type=float, default=10)
    c.add_argument("--size", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.command == "send":
        send(args.dst, args.key, args.count, args.size, args.interval)
    else:
        count(args.seconds, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
