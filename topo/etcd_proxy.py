"""A TCP forwarder between one controller and the members of an etcd cluster, which can
be cut off by a signal while the controller keeps running.

One process listens on one port of 127.0.0.1 per member and forwards each connection it
accepts there to that member. SIGUSR1 cuts: every connection it holds is closed, and a
connection made while it is cut is accepted and closed at once. SIGUSR2 forwards again.
SIGTERM or SIGINT closes everything and ends the process (exit status 0). Its state
goes to a JSON file, written aside and then moved over the old one, when every port
listens and again after each cut and each restore: ``pid``, ``cut`` and ``forwards``
(each ``port`` and its ``target``, ``host:port``).

Command line::

    python -m topo.etcd_proxy --state FILE --forward PORT=HOST:PORT [--forward ...]

``PORT`` 0 takes a free port (the state file names it). One thread serves every
connection (``selectors``); the lab (``topo.lab.standbys``) runs one proxy per controller.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LISTEN_HOST = "127.0.0.1"
CONNECT_TIMEOUT = 1.0
"""Seconds a connection to a member may take to be made."""
CHUNK = 65536
"""Bytes read from a socket at once."""
HIGH_WATER = 1 << 20
"""Bytes waiting for one end above which the other end is not read."""
CUT, FORWARD = signal.SIGUSR1, signal.SIGUSR2
STOP = (signal.SIGTERM, signal.SIGINT)
_LINGER = struct.Struct("ii")
"""``struct linger``: on, and 0 s (a close sends an RST)."""

Target = tuple[str, int]


def parse_forward(text: str) -> tuple[int, Target]:
    """``PORT=HOST:PORT`` as the listening port and the target.

    Raises:
        ValueError: When ``text`` is not of that form or a port is out of range.
    """
    listen, sep, target = text.partition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not colon or not host or not listen.isdigit() or not port.isdigit():
        raise ValueError(f"not PORT=HOST:PORT: {text!r}")
    ports = int(listen), int(port)
    if not (0 <= ports[0] <= 65535 and 0 < ports[1] <= 65535):
        raise ValueError(f"a port out of range: {text!r}")
    return ports[0], (host, ports[1])


@dataclass(eq=False)
class Pipe:
    """One accepted connection and its connection to the member.

    Attributes:
        ends: The accepted socket and the member's.
        pending: Per socket, the bytes read from the other end not yet sent to it.
        ended: The sockets that sent their end of stream.
    """

    ends: tuple[socket.socket, socket.socket]
    pending: dict[socket.socket, bytearray] = field(default_factory=dict)
    ended: set[socket.socket] = field(default_factory=set)

    def other(self, sock: socket.socket) -> socket.socket:
        """The end that is not ``sock``."""
        return self.ends[1] if sock is self.ends[0] else self.ends[0]

    @property
    def done(self) -> bool:
        """Whether both ends sent their end of stream and everything was passed on."""
        return len(self.ended) == 2 and not any(self.pending.values())


class Proxy:
    """The forwarder: its listening sockets, its connections, and whether it is cut.

    Args:
        forwards: Each listening port (0: any free one) and its target.
        state_path: Where its state goes (None: nowhere).
    """

    def __init__(self, forwards: Sequence[tuple[int, Target]], state_path: Path | None = None):
        self.selector = selectors.DefaultSelector()
        self.state_path = state_path
        self.cut = False
        self.stopped = False
        self.pipes: set[Pipe] = set()
        self.listeners: list[tuple[socket.socket, Target]] = []
        self._wake_read, self._wake_write = socket.socketpair()
        for sock in (self._wake_read, self._wake_write):
            sock.setblocking(False)
        self.selector.register(self._wake_read, selectors.EVENT_READ, None)
        try:
            for port, target in forwards:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.listeners.append((listener, target))
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((LISTEN_HOST, port))
                listener.listen(64)
                listener.setblocking(False)
                self.selector.register(listener, selectors.EVENT_READ, target)
        except OSError:
            self.close()
            raise

    @property
    def wake_fd(self) -> int:
        """The socket ``signal.set_wakeup_fd`` writes the signals' numbers to."""
        return self._wake_write.fileno()

    @property
    def ports(self) -> list[int]:
        """The listening ports, in the order of ``forwards``."""
        return [int(sock.getsockname()[1]) for sock, _ in self.listeners]

    def request(self, signum: int) -> None:
        """Act on ``signum`` (``CUT``, ``FORWARD``, one of ``STOP``) in the serving loop."""
        with contextlib.suppress(BlockingIOError):
            self._wake_write.send(bytes([signum]))

    def state(self) -> dict[str, object]:
        """What the state file holds."""
        return {"pid": os.getpid(), "cut": self.cut,
                "forwards": [{"port": port, "target": f"{host}:{target_port}"}
                             for port, (_, (host, target_port))
                             in zip(self.ports, self.listeners, strict=True)]}

    def write_state(self) -> None:
        """Write the state file (aside, then moved over the old one)."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), sort_keys=True) + "\n")
        tmp.replace(self.state_path)

    def serve(self) -> None:
        """Forward until a stop signal; then close everything."""
        self.write_state()
        try:
            while not self.stopped:
                for key, events in self.selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_read:
                        self._signals()
                    elif isinstance(key.data, Pipe):
                        self._move(key.data, sock, events)
                    else:
                        self._accept(sock, key.data)
                    if self.stopped:
                        break
        finally:
            self.close()

    def close(self) -> None:
        """Close every connection and listening socket."""
        for pipe in list(self.pipes):
            self._drop(pipe, reset=True)
        for listener, _ in self.listeners:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(listener)
            listener.close()
        self.listeners = []
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self._wake_read)
        self._wake_read.close()
        self._wake_write.close()
        self.selector.close()

    def _signals(self) -> None:
        try:
            received = self._wake_read.recv(256)
        except BlockingIOError:
            return
        for signum in received:
            if signum in STOP:
                self.stopped = True
            elif signum in (CUT, FORWARD) and self.cut != (signum == CUT):
                self.cut = signum == CUT
                if self.cut:
                    for pipe in list(self.pipes):
                        self._drop(pipe, reset=True)
                self.write_state()

    def _accept(self, listener: socket.socket, target: Target) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self.cut:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
        except OSError:
            _reset(client)
            return
        pipe = Pipe((client, upstream))
        for sock in pipe.ends:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe.pending[sock] = bytearray()
        self.pipes.add(pipe)
        self._interest(pipe)

    def _move(self, pipe: Pipe, sock: socket.socket, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                self._send(pipe, sock)
            if events & selectors.EVENT_READ and pipe in self.pipes:
                data = sock.recv(CHUNK)
                other = pipe.other(sock)
                if data:
                    pipe.pending[other] += data
                    self._send(pipe, other)
                else:
                    pipe.ended.add(sock)
                    if not pipe.pending[other]:
                        other.shutdown(socket.SHUT_WR)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(pipe, reset=True)
            return
        if pipe in self.pipes:
            if pipe.done:
                self._drop(pipe, reset=False)
            else:
                self._interest(pipe)

    def _send(self, pipe: Pipe, sock: socket.socket) -> None:
        """Send what waits for ``sock``; pass on its peer's end of stream once all is sent."""
        waiting = pipe.pending[sock]
        if waiting:
            sent = sock.send(waiting)
            del waiting[:sent]
        if not waiting and pipe.other(sock) in pipe.ended:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    def _interest(self, pipe: Pipe) -> None:
        for sock in pipe.ends:
            events = 0
            if sock not in pipe.ended and len(pipe.pending[pipe.other(sock)]) < HIGH_WATER:
                events |= selectors.EVENT_READ
            if pipe.pending[sock]:
                events |= selectors.EVENT_WRITE
            registered = sock in self.selector.get_map()
            if events and registered:
                self.selector.modify(sock, events, pipe)
            elif events:
                self.selector.register(sock, events, pipe)
            elif registered:
                self.selector.unregister(sock)

    def _drop(self, pipe: Pipe, reset: bool) -> None:
        """Forget ``pipe`` and close its ends (with an RST when ``reset``)."""
        self.pipes.discard(pipe)
        for sock in pipe.ends:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` at once with an RST rather than a FIN: its peer's next read or
    write fails."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.pack(1, 0))
    sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGTERM or SIGINT.

    Returns:
        0 after a stop signal, 1 when a port cannot be bound or an argument is bad.
    """
    parser = argparse.ArgumentParser(prog="python -m topo.etcd_proxy",
                                     description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--state", type=Path, help="where the proxy's state goes (JSON)")
    parser.add_argument("--forward", action="append", required=True, metavar="PORT=HOST:PORT",
                        help="listen on PORT of 127.0.0.1 (0: a free one), forward to "
                             "HOST:PORT (repeatable)")
    args = parser.parse_args(argv)
    try:
        forwards = [parse_forward(text) for text in args.forward]
        proxy = Proxy(forwards, args.state)
    except (ValueError, OSError) as exc:
        print(f"topo.etcd_proxy: {exc}", file=sys.stderr)
        return 1
    for signum in (CUT, FORWARD, *STOP):
        signal.signal(signum, lambda *_: None)
    signal.set_wakeup_fd(proxy.wake_fd, warn_on_full_buffer=False)
    proxy.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
