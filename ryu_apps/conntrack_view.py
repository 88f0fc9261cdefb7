"""The datapath's connection table of the gateway's zone (``ordinary_nat = conntrack``),
for the operator's view: the ordinary sessions that Open vSwitch's connection tracker
translates and the controller never sees.

The table is read with ``ovs-appctl dpctl/dump-conntrack -s netdev@ovs-netdev zone=Z``
(the userspace datapath: one connection table for every netdev bridge of the machine,
the zone the only separation, ``docs/conntrack.md``), so the controller must run beside
the switch. Open vSwitch 3.1 prints one connection a line::

    tcp,orig=(src=192.168.1.1,dst=203.0.113.1,sport=40000,dport=8000),\
reply=(src=203.0.113.1,dst=203.0.113.2,sport=8000,dport=2037),zone=5173,timeout=86395,\
protoinfo=(state=ESTABLISHED)
    udp,orig=(...),reply=(...),zone=5173,timeout=25

The gateway commits connections in its zone from the inside only (``ryu_apps.ctflows``):
the original direction's source is the inside host, its destination the remote end, and
the reply direction's destination the public address and port the tracker chose.

:func:`parse` is pure: it never raises; a line it cannot read is counted and skipped.
:func:`read` runs ``ovs-appctl`` with a deadline and reads at most ``limit`` lines; when
the command is missing, fails or gives no answer in time, the :class:`Table` says why
(:attr:`Table.notice`). Standard library only: the caller passes eventlet's green
``Popen`` and ``select`` so that the wait yields to the other green threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import IO, Any, Protocol

APPCTL = "ovs-appctl"
DATAPATH = "netdev@ovs-netdev"
"""The userspace datapath, the one the gateway's bridges use."""
LIMIT = 20000
"""Lines of the table read at most (the rest is left unread, :attr:`Table.truncated`)."""
TIMEOUT = 2.0
"""Seconds ``ovs-appctl`` has to answer."""
MAX_LINE = 2048
"""A longer line is malformed (a connection's line is about 250 bytes)."""
MAX_ERROR = 1024
"""Bytes of ``ovs-appctl``'s standard error kept for the reason."""
ZONE_MAX = 65535
PROTOCOLS = ("tcp", "udp")
UNREADABLE = "the datapath's connection table cannot be read here"

_FIELD = re.compile(r"([a-z0-9_]+)=(\([^()]*\)|[^,()]*)(?:,|$)")
_WORD = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class Connection:
    """One translated connection of the table.

    Attributes:
        proto: ``tcp`` or ``udp``.
        inside_ip, inside_port: the inside host's end.
        public_ip, public_port: what the tracker translated it to.
        remote_ip, remote_port: the remote end.
        state: the TCP state (``ESTABLISHED``, ``TIME_WAIT``...), None for UDP.
        left_seconds: seconds before the entry expires when idle, None if not shown.
    """

    proto: str
    inside_ip: IPv4Address
    inside_port: int
    public_ip: IPv4Address
    public_port: int
    remote_ip: IPv4Address
    remote_port: int
    state: str | None = None
    left_seconds: int | None = None

    @property
    def order(self) -> tuple[int, int, str, int, int]:
        """The sort key of the views: by inside host and port, then the rest."""
        return (int(self.inside_ip), self.inside_port, self.proto, int(self.remote_ip),
                self.remote_port)


@dataclass(frozen=True)
class Table:
    """What one reading of the zone gave.

    Attributes:
        zone: the zone read.
        connections: its TCP and UDP connections, in :attr:`Connection.order`.
        malformed: lines that could not be read (skipped).
        ignored: well-formed lines of another protocol or zone (skipped).
        truncated: the table had more than the lines read.
        reason: why the table could not be read, None when it was.
    """

    zone: int
    connections: tuple[Connection, ...] = ()
    malformed: int = 0
    ignored: int = 0
    truncated: bool = False
    reason: str | None = None

    @property
    def available(self) -> bool:
        """True when the table was read."""
        return self.reason is None

    @property
    def notice(self) -> str | None:
        """What the operator should know about this reading, in words; None if nothing."""
        if self.reason is not None:
            return f"{UNREADABLE}: {self.reason}"
        said = []
        if self.truncated:
            said.append(f"the datapath's connection table has more entries than were "
                        f"read; {len(self.connections)} shown")
        if self.malformed:
            said.append(f"{self.malformed} line(s) of the datapath's connection table "
                        f"could not be read")
        return "; ".join(said) or None

    def as_dict(self) -> dict[str, Any]:
        """The reading's summary, for REST."""
        return {"zone": self.zone, "available": self.available, "reason": self.reason,
                "connections": len(self.connections), "malformed": self.malformed,
                "ignored": self.ignored, "truncated": self.truncated,
                "notice": self.notice}


class MalformedLineError(ValueError):
    """A line of the table that is not one connection as Open vSwitch prints it."""


def _fields(text: str) -> dict[str, str]:
    """``key=value`` fields, separated by commas; a value may be ``(...)``, one level."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        found = _FIELD.match(text, pos)
        if found is None or found.end() == pos:
            raise MalformedLineError(f"cannot read {text[pos:pos + 40]!r}")
        key, value = found.groups()
        if key in out:
            raise MalformedLineError(f"{key} twice")
        out[key] = value
        pos = found.end()
    return out


def _tuple(text: str | None, name: str) -> tuple[IPv4Address, int, IPv4Address, int]:
    if text is None or not (text.startswith("(") and text.endswith(")")):
        raise MalformedLineError(f"no {name} tuple")
    parts = _fields(text[1:-1])
    try:
        src, dst = IPv4Address(parts["src"]), IPv4Address(parts["dst"])
        sport, dport = _port(parts["sport"]), _port(parts["dport"])
    except (KeyError, ValueError) as exc:
        raise MalformedLineError(f"{name}: {exc}") from None
    return src, sport, dst, dport


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise MalformedLineError(f"not a port: {text[:10]!r}")
    return int(text)


def parse_line(line: str, zone: int) -> Connection | None:
    """One line of ``dpctl/dump-conntrack`` as a :class:`Connection`.

    Returns:
        None for a well-formed line of another protocol (``icmp``, ``tcp6``...), of
        another zone, or whose reply does not come from the original destination (not
        a connection the gateway translated).

    Raises:
        MalformedLineError: the line is not a connection as Open vSwitch prints it.
    """
    text = line.strip()
    proto, comma, rest = text.partition(",")
    if not comma or not _WORD.fullmatch(proto):
        raise MalformedLineError("no protocol")
    fields = _fields(rest)
    if "orig" not in fields or "reply" not in fields:
        raise MalformedLineError("no orig or reply")
    line_zone = fields.get("zone", "0")
    if not line_zone.isdigit():
        raise MalformedLineError(f"zone {line_zone[:10]!r}")
    if proto not in PROTOCOLS or int(line_zone) != zone:
        return None
    inside_ip, inside_port, remote_ip, remote_port = _tuple(fields["orig"], "orig")
    reply_src, reply_sport, public_ip, public_port = _tuple(fields["reply"], "reply")
    state = None
    if "protoinfo" in fields:
        info = fields["protoinfo"]
        if not (info.startswith("(") and info.endswith(")")):
            raise MalformedLineError("protoinfo")
        state = _fields(info[1:-1]).get("state")
    timeout = fields.get("timeout")
    if timeout is not None and not timeout.isdigit():
        raise MalformedLineError(f"timeout {timeout[:10]!r}")
    if (reply_src, reply_sport) != (remote_ip, remote_port):
        return None
    return Connection(proto, inside_ip, inside_port, public_ip, public_port, remote_ip,
                      remote_port, state, None if timeout is None else int(timeout))


def parse(lines: Iterable[str], zone: int, truncated: bool = False) -> Table:
    """The table of ``zone`` from the lines ``ovs-appctl`` printed; never raises.

    Args:
        lines: the lines (blank ones are skipped).
        zone: the zone asked for; lines of another zone are ignored.
        truncated: the lines are not all of the table.
    """
    connections = []
    malformed = ignored = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            connection = parse_line(line, zone)
        except MalformedLineError:
            malformed += 1
            continue
        if connection is None:
            ignored += 1
        else:
            connections.append(connection)
    connections.sort(key=lambda c: c.order)
    return Table(zone, tuple(connections), malformed, ignored, truncated)


def command(zone: int, timeout: float = TIMEOUT, appctl: str = APPCTL,
            datapath: str = DATAPATH) -> list[str]:
    """The ``ovs-appctl`` command line that dumps ``zone`` (with each entry's timeout)."""
    if not 0 <= zone <= ZONE_MAX:
        raise ValueError(f"zone must be in 0..{ZONE_MAX}, got {zone}")
    return [appctl, f"--timeout={max(1, math.ceil(timeout))}", "dpctl/dump-conntrack", "-s",
            datapath, f"zone={zone}"]


class Process(Protocol):
    """What :func:`read` uses of a ``subprocess.Popen``."""

    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


Popen = Callable[..., Process]
Wait = Callable[[Sequence[int], float], Sequence[int]]
"""Waits at most the seconds given for some of the descriptors to be readable; returns
those that are."""


def wait_readable(fds: Sequence[int], seconds: float) -> list[int]:
    """The standard library's :data:`Wait` (blocks the calling thread)."""
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return [key.fd for key, _ in selector.select(max(0.0, seconds))]


@dataclass
class _Lines:
    """Complete lines from chunks of output, at most ``limit`` of them."""

    limit: int
    lines: list[str] = field(default_factory=list)
    partial: bytes = b""
    skipping: bool = False
    oversize: int = 0

    @property
    def full(self) -> bool:
        return len(self.lines) >= self.limit

    def feed(self, chunk: bytes) -> None:
        """Take one chunk; a line longer than :data:`MAX_LINE` is counted, not kept."""
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        for raw in complete:
            if self.skipping:
                self.skipping = False
            elif len(raw) > MAX_LINE:
                self.oversize += 1
            elif not self.full:
                self.lines.append(raw.decode("utf-8", "replace"))
        if len(self.partial) > MAX_LINE:
            if not self.skipping:
                self.oversize += 1
            self.partial, self.skipping = b"", True

    def end(self) -> None:
        """The output ended: keep the unterminated last line."""
        if self.partial and not self.skipping and not self.full:
            self.lines.append(self.partial.decode("utf-8", "replace"))
        self.partial = b""


def read(zone: int, limit: int = LIMIT, timeout: float = TIMEOUT, *,
         popen: Popen = subprocess.Popen, wait: Wait = wait_readable,
         appctl: str = APPCTL, datapath: str = DATAPATH) -> Table:
    """Read the connection table of ``zone``; never raises for what the command does.

    Args:
        zone: the gateway's ``ct_zone``.
        limit: lines read at most; with more, the table is :attr:`Table.truncated`.
        timeout: seconds for the whole reading.
        popen: starts the command (``subprocess.Popen`` or eventlet's green one).
        wait: waits for output (:func:`wait_readable` or a green one).
        appctl: the ``ovs-appctl`` program.
        datapath: the datapath's name.

    Returns:
        The table, or one with :attr:`Table.reason` set when it could not be read.
    """
    argv = command(zone, timeout, appctl, datapath)
    deadline = time.monotonic() + timeout
    try:
        proc = popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, close_fds=True)
    except FileNotFoundError:
        return Table(zone, reason=f"{appctl} is not installed")
    except OSError as exc:
        return Table(zone, reason=f"{appctl} cannot be run: {exc.strerror or exc}")
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Lines(limit + 1), bytearray()
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    try:
        while streams and not out.full:
            left = deadline - time.monotonic()
            if left <= 0:
                return Table(zone, reason=f"{appctl} gave no answer in {timeout:g} s")
            for fd in wait(list(streams), left):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    del streams[fd]
                elif streams[fd] == "out":
                    out.feed(chunk)
                elif len(err) < MAX_ERROR:
                    err += chunk[:MAX_ERROR - len(err)]
        code = 0
        if not out.full:
            out.end()
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return Table(zone, reason=f"{appctl} did not end in {timeout:g} s")
    finally:
        _stop(proc)
    if code != 0:
        said = "; ".join(line.strip() for line in bytes(err).decode("utf-8", "replace")
                         .splitlines() if line.strip())
        return Table(zone, reason=f"{appctl} failed (exit status {code})"
                                  + (f": {said}" if said else ""))
    table = parse(out.lines[:limit], zone, truncated=len(out.lines) > limit)
    return replace(table, malformed=table.malformed + out.oversize)


def _stop(proc: Process) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Cached:
    """The last reading, taken again when older than ``fresh`` seconds: the pages of a
    view fetched one after another show one reading, and requests that come within
    ``fresh`` seconds of a reading start no ``ovs-appctl`` of their own.

    Args:
        reader: takes one reading.
        fresh: seconds a reading is kept.
        clock: the monotonic clock.
    """

    def __init__(self, reader: Callable[[], Table], fresh: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._fresh = fresh
        self._clock = clock
        self._last: tuple[float, Table] | None = None

    def __call__(self) -> Table:
        now = self._clock()
        if self._last is None or now - self._last[0] >= self._fresh:
            table = self._reader()
            self._last = (self._clock(), table)
        return self._last[1]
