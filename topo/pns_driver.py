"""The project's own PPTP client (PNS) driver: control over TCP, data as GRE on a raw socket.

pptp-linux draws random Call IDs and cannot split messages; this driver does what a
test needs: choose the Call ID (two drivers can use the same one), cut a message over
several TCP segments, put several calls on one control connection, and send and receive
enhanced GRE (RFC 2637) itself, in the wire format of ``topo.pptp_wire``. It is
independent of the project's ``alg`` package, so it checks the ALG rather than agreeing
with it. Standard library only.

Against pptpd with the ``topo.standin_ppp`` stand-in as its pppd, GRE from the driver
reaches the call's stand-in and the stand-in's frames come back as GRE (raw PPP frames,
``FF 03 protocol data``, no HDLC).

Command line (run it inside the client's namespace; JSON lines on stdout, one event a
line, the last one ``{"event": "summary", ...}``)::

    ip netns exec NS python -m topo.pns_driver SERVER [--call-id N ...] [--frames N]
        [--interval S] [--hold S] [--tag T] [--split MSG=OFF,OFF ...] [--split-pause S]
        [--set-link-info] [--no-clear] [--no-stop] [--wait-gre S]

Exit status 0 when every call was answered Connected and the server kept the control
connection open until the driver cleared the calls, 1 otherwise, 2 on an error (no
connection, no reply in time).
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
from collections.abc import Callable, Sequence
from typing import Any

from topo.pptp_wire import (
    CCRQ,
    CDN,
    ECHORQ,
    IPPROTO_GRE,
    MESSAGE_NAMES,
    OCRP,
    OCRQ,
    PPP_IP,
    PPTP_PORT,
    SCCRP,
    SCCRQ,
    SHORT_NAMES,
    SLI,
    STOPCCRP,
    STOPCCRQ,
    ControlMessage,
    ControlStream,
    GrePacket,
    ProtocolError,
    build_ccrq,
    build_echo_reply,
    build_ocrq,
    build_sccrq,
    build_sli,
    build_stopccrq,
    gre_decode,
    gre_encode,
    ppp_data,
    ppp_payload,
    split_points,
    strip_ipv4,
)

# ---------------------------------------------------------------------------------------
# The driver


Event = dict[str, Any]


class PnsDriver:
    """A PPTP client (PNS) with a TCP control connection and a raw GRE socket.

    Every action and every received message is appended to ``events`` (JSON-able) and
    handed to ``on_event``, if given. Echo-Requests are answered automatically.

    Args:
        server: The PAC's address.
        port: The control port.
        timeout: Default seconds to wait for a reply.
        on_event: Called with each event as it happens.
    """

    def __init__(self, server: str, port: int = PPTP_PORT, timeout: float = 5.0,
                 on_event: Callable[[Event], None] | None = None):
        self.server = server
        self.port = port
        self.timeout = timeout
        self.on_event = on_event
        self.events: list[Event] = []
        self.sock: socket.socket | None = None
        self.gre: socket.socket | None = None
        self.stream = ControlStream()
        self.pending: list[ControlMessage] = []
        self.received: list[ControlMessage] = []
        self.seq: dict[int, int] = {}
        self.last_rx_seq: dict[int, int] = {}
        self.peer_closed = False

    def event(self, kind: str, **data: Any) -> Event:
        """Record an event."""
        record: Event = {"event": kind, "t": round(time.time(), 6), **data}
        self.events.append(record)
        if self.on_event is not None:
            self.on_event(record)
        return record

    # control connection -----------------------------------------------------------

    def connect(self) -> tuple[str, int]:
        """Open the control connection (TCP_NODELAY); return the local address."""
        self.sock = socket.create_connection((self.server, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = self.sock.getsockname()
        self.event("connected", local=f"{local[0]}:{local[1]}",
                   server=f"{self.server}:{self.port}")
        return local[0], local[1]

    def send(self, message: bytes, split: Sequence[int] = (), pause: float = 0.05) -> None:
        """Send one or more messages, optionally cut into segments.

        Args:
            message: The bytes (one message, or several back to back).
            split: Offsets where a new TCP segment starts.
            pause: Seconds between two segments.
        """
        if self.sock is None:
            raise ProtocolError("not connected")
        if self.peer_closed:
            raise ProtocolError("control connection closed by the peer")
        pieces = split_points(message, split)
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(pause)
            self.sock.sendall(piece)
        ctrl_type = struct.unpack_from("!H", message, 8)[0] if len(message) >= 10 else None
        self.event("sent", type=ctrl_type, name=MESSAGE_NAMES.get(ctrl_type or 0, "?"),
                   length=len(message), segments=[len(p) for p in pieces])

    def _read(self, timeout: float) -> bool:
        if self.sock is None:
            raise ProtocolError("not connected")
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        data = self.sock.recv(65536)
        if not data:
            if not self.peer_closed:
                self.event("closed_by_peer")
            self.peer_closed = True
            raise ProtocolError("control connection closed by the peer")
        for message in self.stream.feed(data):
            self.received.append(message)
            self.event("recv", **message.to_json())
            if message.ctrl_type == ECHORQ:
                self.send(build_echo_reply(message.fields["identifier"]))
            else:
                self.pending.append(message)
        return True

    def expect(self, ctrl_type: int, timeout: float | None = None,
               match: Callable[[ControlMessage], bool] | None = None) -> ControlMessage:
        """Wait for a message of a type (others received meanwhile stay pending).

        Args:
            ctrl_type: The Control Message Type wanted.
            timeout: Seconds to wait (default: the driver's timeout).
            match: Extra condition on the message.

        Returns:
            The message.

        Raises:
            ProtocolError: On a timeout or when the connection closes.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for message in self.pending:
                if message.ctrl_type == ctrl_type and (match is None or match(message)):
                    self.pending.remove(message)
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no {MESSAGE_NAMES[ctrl_type]} within the timeout")
            self._read(left)

    def poll_control(self, timeout: float = 0.0) -> None:
        """Read whatever control messages arrive within ``timeout`` (answers echoes)."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass

    def start_control(self, split: Sequence[int] = (), pause: float = 0.05) -> ControlMessage:
        """Send a Start-Control-Connection-Request; return the Reply."""
        self.send(build_sccrq(), split, pause)
        return self.expect(SCCRP)

    def outgoing_call(self, call_id: int, serial: int = 0, split: Sequence[int] = (),
                      pause: float = 0.05) -> ControlMessage:
        """Send an Outgoing-Call-Request with ``call_id``; return the Reply.

        The reply's ``call_id`` is the PAC's Call ID (the key of GRE towards it), its
        ``peer_call_id`` should be ``call_id`` again, ``result`` 1 is Connected.
        """
        self.send(build_ocrq(call_id, serial), split, pause)
        reply = self.expect(OCRP, match=lambda m: m.fields["peer_call_id"] == call_id)
        self.event("call", call_id=call_id, peer_call_id=reply.fields["call_id"],
                   result=reply.fields["result"], error=reply.fields["error"])
        return reply

    def call_clear(self, call_id: int, wait: bool = True) -> ControlMessage | None:
        """Send a Call-Clear-Request; with ``wait``, return the Call-Disconnect-Notify."""
        self.send(build_ccrq(call_id))
        if not wait:
            return None
        with contextlib.suppress(ProtocolError):
            return self.expect(CDN)
        return None

    def stop_control(self, wait: bool = True) -> ControlMessage | None:
        """Send a Stop-Control-Connection-Request; with ``wait``, return the Reply."""
        self.send(build_stopccrq())
        if not wait:
            return None
        with contextlib.suppress(ProtocolError):
            return self.expect(STOPCCRP)
        return None

    def close(self) -> None:
        """Close the control connection and the GRE socket."""
        for sock in (self.sock, self.gre):
            if sock is not None:
                sock.close()
        self.sock = self.gre = None

    # GRE ---------------------------------------------------------------------------

    def open_gre(self) -> None:
        """Open the raw GRE socket (needs CAP_NET_RAW); it sees all GRE to this host."""
        self.gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)

    def send_gre(self, peer_call_id: int, payload: bytes, ack: bool = True) -> int:
        """Send one GRE data packet to the server; return its sequence number.

        Args:
            peer_call_id: The server's Call ID.
            payload: The PPP frame.
            ack: Acknowledge the last packet received from that call, if any.
        """
        if self.gre is None:
            self.open_gre()
        assert self.gre is not None
        seq = self.seq.get(peer_call_id, 0)
        self.seq[peer_call_id] = seq + 1
        ack_no = self.last_rx_seq.get(peer_call_id) if ack else None
        self.gre.sendto(gre_encode(peer_call_id, payload, seq, ack_no), (self.server, 0))
        protocol, data = ppp_data(payload)
        self.event("gre_sent", key_call_id=peer_call_id, seq=seq, ack=ack_no,
                   protocol=protocol, payload=data.decode("ascii", "replace"))
        return seq

    def recv_gre(self, timeout: float, calls: dict[int, int] | None = None) -> list[GrePacket]:
        """Receive GRE packets for ``timeout`` seconds (also serving the control socket).

        Args:
            timeout: Seconds to listen.
            calls: Map of our Call ID to the server's, to remember sequence numbers for
                acknowledgements; packets for other keys are still returned.

        Returns:
            The GRE packets received (from any source, any key).
        """
        if self.gre is None:
            self.open_gre()
        assert self.gre is not None
        out: list[GrePacket] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            control = self.sock if self.sock is not None and not self.peer_closed else None
            socks = [self.gre] + ([control] if control is not None else [])
            ready, _, _ = select.select(socks, [], [], left)
            if control is not None and control in ready:
                with contextlib.suppress(ProtocolError):  # closed: recorded, GRE goes on
                    self._read(0)
            if self.gre not in ready:
                continue
            packet = self.gre.recv(65536)
            try:
                source, gre = strip_ipv4(packet)
                decoded = gre_decode(gre)
            except ValueError as err:
                self.event("gre_bad", error=str(err), length=len(packet))
                continue
            if source == self.server and calls and decoded.seq is not None:
                server_id = calls.get(decoded.call_id)
                if server_id is not None:
                    self.last_rx_seq[server_id] = decoded.seq
            protocol, data = ppp_data(decoded.payload)
            text = data.decode("ascii", "replace")
            self.event("gre_recv", src=source, call_id=decoded.call_id, seq=decoded.seq,
                       ack=decoded.ack, length=len(decoded.payload), protocol=protocol,
                       payload=text, tag=text.partition(":")[0] if ":" in text else None)
            out.append(decoded)
        return out


# ---------------------------------------------------------------------------------------
# Command line


def _split_arg(text: str) -> tuple[int, list[int]]:
    name, sep, offsets = text.partition("=")
    if not sep or name.lower() not in SHORT_NAMES:
        raise argparse.ArgumentTypeError(f"expected MSG=OFF[,OFF...], MSG in {list(SHORT_NAMES)}")
    return SHORT_NAMES[name.lower()], [int(o) for o in offsets.split(",") if o]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m topo.pns_driver",
        description="Drive one PPTP control connection (and its calls' GRE) as a PNS.")
    parser.add_argument("server", help="the PAC's address")
    parser.add_argument("--port", type=int, default=PPTP_PORT)
    parser.add_argument("--call-id", type=int, action="append", dest="call_ids",
                        help="Call ID of an Outgoing-Call-Request (repeat for more calls on "
                             "the same connection; default 4242)")
    parser.add_argument("--frames", type=int, default=10, help="GRE frames to send per call")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between frames")
    parser.add_argument("--wait-gre", type=float, default=0.0,
                        help="seconds to wait for the server's first GRE before sending")
    parser.add_argument("--hold", type=float, default=1.0,
                        help="seconds to keep listening after the last frame")
    parser.add_argument("--tag", default="pns", help="tag of the frames sent (TAG:CALLID:N)")
    parser.add_argument("--protocol", type=lambda s: int(s, 0), default=PPP_IP,
                        help="PPP protocol of the frames")
    parser.add_argument("--split", type=_split_arg, action="append", default=[],
                        metavar="MSG=OFF,...",
                        help="cut a message (sccrq, ocrq, sli, ccrq, stopccrq) into TCP "
                             "segments at these offsets")
    parser.add_argument("--split-pause", type=float, default=0.05,
                        help="seconds between the segments of a cut message")
    parser.add_argument("--set-link-info", action="store_true",
                        help="send Set-Link-Info for each connected call")
    parser.add_argument("--no-clear", action="store_true", help="do not clear the calls")
    parser.add_argument("--no-stop", action="store_true",
                        help="do not send Stop-Control-Connection-Request (just close)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for replies")
    return parser


def run(args: argparse.Namespace, emit: Callable[[Event], None]) -> int:
    """Run the scenario of the command line; return the exit status.

    Args:
        args: Parsed command line.
        emit: Called with each event (the CLI prints them as JSON lines).

    Returns:
        0 when every call was Connected and the peer did not close the control
        connection before the driver cleared the calls, 1 otherwise.
    """
    splits: dict[int, list[int]] = dict(args.split)
    pause = args.split_pause
    call_ids = args.call_ids or [4242]
    driver = PnsDriver(args.server, args.port, args.timeout, on_event=emit)
    calls: dict[int, int] = {}
    results: dict[int, dict[str, Any]] = {}
    received: list[GrePacket] = []
    closed_early = False
    try:
        driver.open_gre()
        driver.connect()
        sccrp = driver.start_control(splits.get(SCCRQ, ()), pause)
        if sccrp.fields.get("result") != 1:
            raise ProtocolError(f"Start-Control-Connection-Reply result {sccrp.fields}")
        for serial, call_id in enumerate(call_ids):
            reply = driver.outgoing_call(call_id, serial, splits.get(OCRQ, ()), pause)
            results[call_id] = {"server_call_id": reply.fields["call_id"],
                                "result": reply.fields["result"]}
            if reply.fields["result"] == 1:
                calls[call_id] = reply.fields["call_id"]
        if args.set_link_info:
            for server_id in calls.values():
                driver.send(build_sli(server_id), splits.get(SLI, ()), pause)
        if args.wait_gre > 0 and calls:
            received += driver.recv_gre(args.wait_gre, calls)
        for n in range(1, args.frames + 1):
            for call_id, server_id in calls.items():
                text = f"{args.tag}:{call_id}:{n}".encode()
                driver.send_gre(server_id, ppp_payload(args.protocol, text))
            received += driver.recv_gre(args.interval, calls)
        received += driver.recv_gre(args.hold, calls)
        closed_early = driver.peer_closed
        if not args.no_clear:
            for call_id in calls:
                if driver.peer_closed:
                    break
                driver.send(build_ccrq(call_id), splits.get(CCRQ, ()), pause)
                with contextlib.suppress(ProtocolError):
                    driver.expect(CDN, timeout=2)
        if not args.no_stop and not driver.peer_closed:
            driver.send(build_stopccrq(), splits.get(STOPCCRQ, ()), pause)
            with contextlib.suppress(ProtocolError):
                driver.expect(STOPCCRP, timeout=2)
    finally:
        driver.close()
        tags: dict[str, int] = {}
        by_key: dict[int, int] = {}
        data_packets = [p for p in received if p.payload]
        for packet in data_packets:
            by_key[packet.call_id] = by_key.get(packet.call_id, 0) + 1
            _, data = ppp_data(packet.payload)
            tag = data.decode("ascii", "replace").partition(":")[0]
            tags[tag] = tags.get(tag, 0) + 1
        driver.event(
            "summary", server=args.server, calls=results,
            gre_sent=sum(driver.seq.values()), gre_received=len(data_packets),
            gre_acks_received=len(received) - len(data_packets),
            gre_received_by_key={str(k): v for k, v in by_key.items()},
            received_tags=tags, received_types=[m.ctrl_type for m in driver.received],
            peer_closed=driver.peer_closed)
    connected = bool(results) and all(r["result"] == 1 for r in results.values())
    return 0 if connected and not closed_early else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: print events as JSON lines.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)

    def emit(event: Event) -> None:
        print(json.dumps(event), flush=True)

    try:
        return run(args, emit)
    except (OSError, ProtocolError) as err:
        emit({"event": "error", "error": f"{type(err).__name__}: {err}"})
        return 2


def parse_events(text: str) -> list[Event]:
    """Parse the driver's JSON-lines output (as a test reads it)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


if __name__ == "__main__":
    sys.exit(main())
