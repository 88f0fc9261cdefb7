"""Small programs the gateway tests run inside the lab's namespaces.

Run from the repo root as ``ip netns exec NS python -m tests.e2e.gw_tools COMMAND ...``:

- ``serve --port P --log FILE``: a TCP and UDP listener on port P. Every TCP connection
  and every UDP datagram is answered with one JSON line ``{"peer": "IP:PORT", "data":
  ...}`` and recorded in FILE (JSON lines).
- ``napt-client SERVER PORT --bind-port B --tag T [--hold S]``: one TCP connection and one
  UDP exchange from local port B; prints one JSON line with both replies (``null`` where
  nothing came back), then keeps the sockets open for ``--hold`` seconds.
- ``gre-send DST --key K [--key K ...] [--count N] [--src IP]``: send enhanced GRE data
  packets from a raw socket (``--src`` binds a source address); prints a JSON summary.
- ``pac LISTEN_IP --log FILE [--cdn-after S]``: a minimal PPTP server (PAC) for one
  control connection: it answers Start-Control-Connection, Outgoing-Call and
  Stop-Control-Connection requests (its Call IDs count from 9001), sends a GRE frame
  tagged ``pac`` every 0.1 s on each live call, and ``--cdn-after`` seconds after the
  first call is connected ends it with a Call-Disconnect-Notify, which pptpd never does.
  Every message in and out is logged to FILE (JSON lines).
- ``repl SERVER``: a PPTP client (``topo.pns_driver.PnsDriver``) driven step by step by
  JSON commands on stdin, one a line, each answered by one JSON line on stdout (see
  :func:`repl`). It lets a test look at the gateway between two control messages.

Standard library, ``topo.pns_driver`` and ``topo.pptp_wire`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from topo.pns_driver import PnsDriver
from topo.pptp_wire import (
    CCRQ,
    CDN,
    OCRP,
    OCRQ,
    SCCRP,
    SCCRQ,
    STOPCCRP,
    STOPCCRQ,
    ControlStream,
    ProtocolError,
    build_ccrq,
    build_message,
    build_stopccrq,
    gre_encode,
    ppp_data,
    ppp_payload,
)


def _line(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


# ---------------------------------------------------------------------------- serve


def serve(port: int, log: Path) -> int:
    """Answer TCP connections and UDP datagrams on ``port`` until killed."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    conns: dict[socket.socket, str] = {}
    with log.open("a") as out:
        out.write(json.dumps({"event": "listening", "port": port}) + "\n")
        out.flush()
        while True:
            ready, _, _ = select.select([tcp, udp, *conns], [], [], 1.0)
            for sock in ready:
                if sock is tcp:
                    conn, peer = tcp.accept()
                    conns[conn] = f"{peer[0]}:{peer[1]}"
                    out.write(json.dumps({"event": "accept", "proto": "tcp",
                                          "peer": conns[conn]}) + "\n")
                elif sock is udp:
                    data, peer = udp.recvfrom(2048)
                    text = f"{peer[0]}:{peer[1]}"
                    reply = {"peer": text, "data": data.decode(errors="replace")}
                    udp.sendto(json.dumps(reply).encode(), peer)
                    out.write(json.dumps({"event": "datagram", "proto": "udp", **reply}) + "\n")
                else:
                    data = sock.recv(2048)
                    if not data:
                        conns.pop(sock)
                        sock.close()
                        continue
                    reply = {"peer": conns[sock], "data": data.decode(errors="replace")}
                    sock.sendall((json.dumps(reply) + "\n").encode())
                    out.write(json.dumps({"event": "data", "proto": "tcp", **reply}) + "\n")
                out.flush()


# ---------------------------------------------------------------------------- napt-client


def napt_client(server: str, port: int, bind_port: int, tag: str, hold: float,
                timeout: float) -> int:
    """One TCP and one UDP exchange from ``bind_port``; print the replies as JSON."""
    result: dict[str, Any] = {"tag": tag, "tcp": None, "udp": None, "errors": []}
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", bind_port))
    tcp.settimeout(timeout)
    try:
        tcp.connect((server, port))
        tcp.sendall(f"tcp-{tag}".encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = tcp.recv(2048)
            if not chunk:
                break
            buf += chunk
        result["tcp"] = json.loads(buf) if buf.strip() else None
    except OSError as exc:
        result["errors"].append(f"tcp: {type(exc).__name__}: {exc}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", bind_port))
    udp.settimeout(timeout / 3)
    for _ in range(3):  # a datagram may wait for ARP in the gateway: retry
        try:
            udp.sendto(f"udp-{tag}".encode(), (server, port))
            data, _ = udp.recvfrom(2048)
            result["udp"] = json.loads(data)
            break
        except OSError as exc:
            result["errors"].append(f"udp: {type(exc).__name__}: {exc}")
    _line(result)
    time.sleep(hold)
    tcp.close()
    udp.close()
    return 0 if result["tcp"] and result["udp"] else 1


# ---------------------------------------------------------------------------- gre-send


def gre_send(dst: str, keys: Sequence[int], count: int, src: str | None,
             interval: float) -> int:
    """Send ``count`` GRE data packets for each key to ``dst``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    if src:
        sock.bind((src, 0))
    sent = 0
    for n in range(count):
        for key in keys:
            frame = ppp_payload(0x0021, f"late:{key}:{n}".encode())
            sock.sendto(gre_encode(key, frame, seq=1000 + n), (dst, 0))
            sent += 1
        if interval:
            time.sleep(interval)
    _line({"sent": sent, "keys": list(keys), "dst": dst, "src": src})
    return 0


def syn_flood(dst: str, port: int, count: int, rate: float, sport: int | None = None,
              isn: int = 7000) -> int:
    """Send ``count`` TCP SYNs to ``dst:port`` from new source ports (or all from
    ``sport``), ``rate`` a second, with sequence numbers from ``isn`` up, through a raw
    socket (the namespace's own TCP knows none of them and resets what answers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    src = _source_address(dst)
    started = time.monotonic()
    for n in range(count):
        source = 20000 + n % 40000 if sport is None else sport
        header = struct.pack("!HHIIBBHHH", source, port, (isn + n) % (1 << 32), 0, 5 << 4, 0x02,
                             65535, 0, 0)
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
        header = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
        sock.sendto(header, (dst, 0))
        delay = started + (n + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _line({"sent": count, "seconds": round(time.monotonic() - started, 3)})
    return 0


def udp_flood(dst: str, seconds: float, rate: float) -> int:
    """Send UDP datagrams to ``dst`` on changing ports for ``seconds``, ``rate`` a second
    at most (as fast as the socket goes when that is less)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        if sent >= elapsed * rate:
            time.sleep(0.001)
            continue
        sock.sendto(b"flood", (dst, 1024 + sent % 60000))
        sent += 1
    _line({"sent": sent, "seconds": round(time.monotonic() - started, 3)})
    return 0


def _source_address(dst: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((dst, 9))
    address: str = probe.getsockname()[0]
    probe.close()
    return address


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------------------- pac


def pac(listen_ip: str, log: Path, cdn_after: float) -> int:
    """Serve one PPTP control connection as a minimal PAC (see the module docstring)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((listen_ip, 1723))
    server.listen(1)
    gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    out = log.open("a")

    def record(**fields: Any) -> None:
        out.write(json.dumps({"t": round(time.time(), 3), **fields}) + "\n")
        out.flush()

    record(event="listening")
    conn, peer = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    record(event="accept", peer=f"{peer[0]}:{peer[1]}")
    stream = ControlStream()
    calls: dict[int, int] = {}  # our Call ID -> the peer's
    next_id = 9001
    cdn_at: float | None = None
    seq = 0
    next_gre = time.monotonic()
    while True:
        now = time.monotonic()
        if cdn_at is not None and now >= cdn_at and calls:
            ours = min(calls)
            conn.sendall(build_message(CDN, struct.pack("!HBBHH", ours, 1, 0, 0, 0)
                                       + bytes(128)))
            record(event="sent", type=CDN, call_id=ours)
            del calls[ours]
            cdn_at = None
        if now >= next_gre:
            for ours, theirs in calls.items():
                frame = ppp_payload(0x0021, f"pac:{ours}:{seq}".encode())
                gre.sendto(gre_encode(theirs, frame, seq=seq), (peer[0], 0))
            seq += 1
            next_gre = now + 0.1
        ready, _, _ = select.select([conn], [], [], 0.05)
        if not ready:
            continue
        data = conn.recv(4096)
        if not data:
            record(event="closed")
            break
        for message in stream.feed(data):
            record(event="recv", type=message.ctrl_type, **message.fields)
            if message.ctrl_type == SCCRQ:
                body = struct.pack("!HBBIIHH", 0x0100, 1, 0, 3, 3, 1, 1) + bytes(128)
                conn.sendall(build_message(SCCRP, body))
            elif message.ctrl_type == OCRQ:
                ours, theirs = next_id, message.fields["call_id"]
                next_id += 1
                conn.sendall(build_message(OCRP, struct.pack(
                    "!HHBBHIHHI", ours, theirs, 1, 0, 0, 10_000_000, 64, 0, 0)))
                record(event="sent", type=OCRP, call_id=ours, peer_call_id=theirs)
                calls[ours] = theirs
                if cdn_at is None and cdn_after > 0 and ours == 9001:
                    cdn_at = time.monotonic() + cdn_after
            elif message.ctrl_type == CCRQ:
                for ours, theirs in list(calls.items()):
                    if theirs == message.fields["call_id"]:
                        del calls[ours]
            elif message.ctrl_type == STOPCCRQ:
                conn.sendall(build_message(STOPCCRP, struct.pack("!BBH", 1, 0, 0)))
                calls.clear()
    conn.close()
    return 0


# ---------------------------------------------------------------------------- repl


def repl(server: str, timeout: float) -> int:
    """Drive a PPTP client with JSON commands from stdin.

    Commands (``op`` and its arguments), each answered by ``{"ok": true, ...}`` or
    ``{"ok": false, "error": ...}``:

    - ``start``: connect and exchange Start-Control-Connection-Request/Reply.
    - ``call`` ``call_id`` [``split``]: Outgoing-Call-Request; answers with the reply's
      fields (``call_id`` is the server's, ``peer_call_id`` ours, ``result``).
    - ``gre`` ``peer`` ``count`` [``tag``, ``interval``]: send GRE data frames to the
      server's Call ID ``peer``.
    - ``recv`` ``seconds``: the GRE packets received meanwhile (``call_id``, ``tag``,
      ``src``), control messages answered or queued.
    - ``clear`` ``call_id``: Call-Clear-Request (does not wait for a reply).
    - ``stop``: Stop-Control-Connection-Request, waits up to 2 s for the reply.
    - ``close``: close the control connection (FIN); the GRE socket stays open.
    - ``messages``: the control messages received so far (type, fields).
    - ``quit``.
    """
    driver = PnsDriver(server, timeout=timeout)
    driver.open_gre()
    for raw in sys.stdin:
        if not raw.strip():
            continue
        cmd = json.loads(raw)
        op = cmd.get("op")
        try:
            reply: dict[str, Any] = {"ok": True, "op": op}
            if op == "start":
                driver.connect()
                reply["fields"] = driver.start_control().fields
            elif op == "call":
                message = driver.outgoing_call(int(cmd["call_id"]), int(cmd.get("serial", 0)),
                                               cmd.get("split", ()))
                reply["fields"] = message.fields
            elif op == "gre":
                for n in range(int(cmd.get("count", 1))):
                    text = f"{cmd.get('tag', 'pns')}:{cmd['peer']}:{n}".encode()
                    driver.send_gre(int(cmd["peer"]), ppp_payload(0x0021, text))
                    if cmd.get("interval"):
                        time.sleep(float(cmd["interval"]))
            elif op == "recv":
                packets = []
                for packet in driver.recv_gre(float(cmd.get("seconds", 1.0))):
                    _, data = ppp_data(packet.payload)
                    text = data.decode("ascii", "replace")
                    packets.append({"call_id": packet.call_id, "seq": packet.seq,
                                    "tag": text.partition(":")[0] if packet.payload else None})
                reply["packets"] = packets
            elif op == "clear":
                driver.send(build_ccrq(int(cmd["call_id"])))
            elif op == "stop":
                driver.send(build_stopccrq())
                stop = None
                with contextlib.suppress(ProtocolError):
                    stop = driver.expect(STOPCCRP, timeout=2)
                reply["reply"] = None if stop is None else stop.fields
            elif op == "close":
                if driver.sock is not None:
                    driver.sock.close()
                    driver.sock = None
            elif op == "messages":
                reply["messages"] = [{"type": m.ctrl_type, **m.fields} for m in driver.received]
                reply["peer_closed"] = driver.peer_closed
            elif op == "quit":
                _line(reply)
                break
            else:
                raise ValueError(f"unknown op {op!r}")
        except (OSError, ProtocolError, ValueError, KeyError) as exc:
            reply = {"ok": False, "op": op, "error": f"{type(exc).__name__}: {exc}"}
        _line(reply)
    driver.close()
    return 0


def arp_claim(interface: str, first: str, count: int, rate: float) -> int:
    """Send a gratuitous ARP (an unasked reply from the address to itself) for ``count``
    addresses from ``first`` up, from this host's MAC on ``interface``, ``rate`` a
    second: an inside host claiming its neighbours' addresses before they speak."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((interface, 0))
    mac = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    own = bytes.fromhex(mac.replace(":", ""))
    start = struct.unpack("!I", socket.inet_aton(first))[0]
    started = time.monotonic()
    for n in range(count):
        ip = struct.pack("!I", start + n)
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, own, ip, b"\xff" * 6, ip)
        sock.send(b"\xff" * 6 + own + struct.pack("!H", 0x0806) + arp)
        delay = started + (n + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _line({"sent": count, "seconds": round(time.monotonic() - started, 3)})
    return 0


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.gw_tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", type=Path, required=True)
    p = sub.add_parser("napt-client")
    p.add_argument("server")
    p.add_argument("port", type=int)
    p.add_argument("--bind-port", type=int, default=0)
    p.add_argument("--tag", default="x")
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=6.0)
    p = sub.add_parser("gre-send")
    p.add_argument("dst")
    p.add_argument("--key", type=int, action="append", dest="keys", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--src")
    p.add_argument("--interval", type=float, default=0.0)
    p = sub.add_parser("syn-flood")
    p.add_argument("dst")
    p.add_argument("--port", type=int, default=1723)
    p.add_argument("--sport", type=int, default=None)
    p.add_argument("--isn", type=int, default=7000)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0)
    p = sub.add_parser("udp-flood")
    p.add_argument("dst")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=20000.0)
    p = sub.add_parser("arp-claim")
    p.add_argument("first")
    p.add_argument("--interface", default="eth0")
    p.add_argument("--count", type=int, default=253)
    p.add_argument("--rate", type=float, default=100.0)
    p = sub.add_parser("pac")
    p.add_argument("listen_ip")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--cdn-after", type=float, default=0.0)
    p = sub.add_parser("repl")
    p.add_argument("server")
    p.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.port, args.log)
    if args.command == "napt-client":
        return napt_client(args.server, args.port, args.bind_port, args.tag, args.hold,
                           args.timeout)
    if args.command == "gre-send":
        return gre_send(args.dst, args.keys, args.count, args.src, args.interval)
    if args.command == "syn-flood":
        return syn_flood(args.dst, args.port, args.count, args.rate, args.sport, args.isn)
    if args.command == "udp-flood":
        return udp_flood(args.dst, args.seconds, args.rate)
    if args.command == "arp-claim":
        return arp_claim(args.interface, args.first, args.count, args.rate)
    if args.command == "pac":
        return pac(args.listen_ip, args.log, args.cdn_after)
    return repl(args.server, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
